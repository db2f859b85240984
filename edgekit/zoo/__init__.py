"""edgekit's bundled examples ("the zoo"): small, real models that carry their own data.

Each example pairs an architecture (:mod:`edgekit.zoo.models`) with shipped weights and with calibration, test and
training data, so ``edgekit`` commands can quantize, measure accuracy and fine-tune without the user supplying files.
The zoo sits before the flow (model -> edgekit.Model -> converters -> targets -> runtimes): it only produces
``torch.nn.Module`` s and numpy arrays, and imports nothing from the rest of edgekit but errors, datasets and the
layers (edgekit/layers) its recurrent examples are built from.

``EXAMPLES`` is the whole registry, in one place: to add an example, add an :class:`ExampleSpec` to the tuple at the
bottom. Weights of trained examples live in ``weights/`` and are produced by ``examples/train_digits.py`` (digits-lmu and
digits-egru by ``examples/train_digits_lmu.py`` and ``examples/train_egru.py``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache, partial
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
from torch import nn

from edgekit.datasets import as_sequence, digits
from edgekit.errors import ModelLoadError, UsageError
from edgekit.zoo.models import (DigitsCNN, DigitsEGRU, DigitsGRU, DigitsLMU, KwsDSCNN, KwsEGRU, KwsGRU, KwsLMU,
                                KwsSelective, KwsSSM, MobileNetV2)

WEIGHTS_DIR = Path(__file__).parent / "weights"
TASKS = ("classification", "segmentation", "reconstruction")

# How many training images the digits examples hand out for calibration (quantization ranges, BN re-estimation).
DIGITS_CALIBRATION_SAMPLES = 256

ExampleData = tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]


@dataclass(frozen=True)
class ExampleSpec:
    """One bundled example.

    - ``build()`` returns the architecture with its initial weights (random for trained examples; deterministic for
      examples that ship no weights file, whose build *is* the model).
    - ``weights_file`` is a ``state_dict`` saved with ``torch.save``, loaded over ``build()`` by :func:`load_example`;
      ``None`` when the example has no trained weights.
    - ``input_shape`` is one sample's shape, without the batch dimension.
    - ``data()`` returns ``(x_calib, x_test, y_test)``: calibration inputs taken from the training split, held-out test
      inputs, and their int64 labels (``None`` when the example has no labels).
    - ``train_data()`` returns ``(x_train, y_train)`` for fine-tuning; ``None`` when the example has no training set.
    - ``reference_accuracy`` is the test-split accuracy of the shipped weights (as its training script prints it), for
      reports to compare against and for tests to hold the weights to; ``None`` without labels or weights.
    - ``meta`` is what the converter that made the weights measured and the estimators read (e.g. an EGRU's activity
      sparsity, which prices its event-driven product); it goes into ``Model.meta``.
    """

    name: str
    description: str
    build: Callable[[], nn.Module]
    weights_file: Optional[Path]
    input_shape: tuple[int, ...]
    num_classes: int
    data: Callable[[], ExampleData]
    train_data: Optional[Callable[[], tuple[np.ndarray, np.ndarray]]] = None
    reference_accuracy: Optional[float] = None
    task: str = "classification"
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.task not in TASKS:
            raise ValueError(f"example {self.name!r}: task {self.task!r} is not one of {TASKS}")


# --- digits (scikit-learn's 8x8 handwritten digits, see edgekit.datasets) ---------------------------------------------

def _digits_inputs(x: np.ndarray, sequence: bool) -> np.ndarray:
    return as_sequence(x) if sequence else x


def digits_data(sequence: bool = False) -> ExampleData:
    """``(x_calib, x_test, y_test)`` for a digits example: the first 256 training images and the held-out split.

    ``sequence=True`` gives the 64-step pixel sequences [N, 64, 1] recurrent examples read, instead of images.
    """
    split = digits()
    x_calib = split.x_train[:DIGITS_CALIBRATION_SAMPLES].copy()
    return _digits_inputs(x_calib, sequence), _digits_inputs(split.x_test, sequence), split.y_test


def digits_train_data(sequence: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """``(x_train, y_train)``: the whole training split, as images or (``sequence=True``) pixel sequences."""
    split = digits()
    return _digits_inputs(split.x_train, sequence), split.y_train


# --- MobileNetV2 0.35 at 144x144: shipped untrained, built deterministically -----------------------------------------

MBV2_SEED = 0
MBV2_INPUT_SHAPE = (3, 144, 144)
MBV2_CALIBRATION_SAMPLES = 32
MBV2_TEST_SAMPLES = 16
MBV2_BN_STATISTICS_SAMPLES = 8  # enough for per-channel statistics; float64 convolutions are slow
MBV2_LOGIT_STD = 2.0  # typical spread of a trained ImageNet classifier's logits


def random_images(count: int, shape: tuple[int, int, int], seed: int) -> np.ndarray:
    """Seeded float32 images [count, C, H, W], roughly zero-mean and unit-variance like ImageNet-normalised photos.

    A smooth field (normal noise on a grid 16x coarser, bilinearly upsampled) plus fine normal noise, so that the
    images have spatial structure for the early convolutions to respond to rather than pure white noise. Generated in
    float64 and rounded once, so every machine gets the same bits.
    """
    channels, height, width = shape
    rng = np.random.default_rng(seed)
    coarse = rng.standard_normal((count, channels, max(1, height // 16), max(1, width // 16)))
    smooth = nn.functional.interpolate(torch.from_numpy(coarse), size=(height, width), mode="bilinear",
                                       align_corners=False).numpy()
    fine = rng.standard_normal((count, channels, height, width))
    images = (0.9 * smooth + 0.45 * fine) / np.sqrt(0.9 ** 2 * 0.5 + 0.45 ** 2)  # ~unit variance
    return images.astype(np.float32)


@lru_cache(maxsize=1)
def _mbv2_state() -> dict[str, torch.Tensor]:
    """Deterministic, untrained but non-degenerate MobileNetV2-0.35 weights.

    Convolutions use He-normal initialisation (fan-out per group), the classifier N(0, 0.01^2), from a seeded
    generator. BatchNorm affine parameters are drawn per channel (gamma ~ U(0.5, 1.5), beta ~ N(0, 0.1^2)) so folded
    per-channel scales differ as in a trained network, and running statistics are measured on seeded random images
    (in float64, rounded once) so activations stay well-scaled through all 17 blocks in eval mode. The classifier
    is then centred and scaled on the same images so its logits vary with the input by about ``MBV2_LOGIT_STD``.
    """
    generator = torch.Generator().manual_seed(MBV2_SEED)
    model = MobileNetV2(width=0.35, num_classes=1000)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Conv2d):
                fan_out = module.out_channels * module.kernel_size[0] * module.kernel_size[1] // module.groups
                module.weight.normal_(0.0, (2.0 / fan_out) ** 0.5, generator=generator)
            elif isinstance(module, nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5, generator=generator)
                module.bias.normal_(0.0, 0.1, generator=generator)
            elif isinstance(module, nn.Linear):
                module.weight.normal_(0.0, 0.01, generator=generator)
                module.bias.zero_()
        model.double()
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.reset_running_stats()
                module.momentum = None  # running statistics := this batch's statistics
        model.train()
        images = torch.from_numpy(random_images(MBV2_BN_STATISTICS_SAMPLES, MBV2_INPUT_SHAPE, seed=MBV2_SEED + 1))
        model(images.double())
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.momentum = 0.1
        # Pooled features of random images are mostly a per-channel constant, which would make every logit the same
        # offset plus a tiny input-dependent part. Centre and scale the classifier so logits vary with the input.
        model.eval()
        features = model.features(images.double())
        logits = model.classifier(features)
        offset = logits.mean(dim=0)
        scale = MBV2_LOGIT_STD / logits.std(dim=0).mean()
        model.classifier.bias.copy_((model.classifier.bias - offset) * scale)
        model.classifier.weight.mul_(scale)
        model.float()
    return {name: tensor.clone() for name, tensor in model.state_dict().items()}


def build_mbv2_w035() -> nn.Module:
    """MobileNetV2 width 0.35, 1000 classes, with the deterministic weights of :func:`_mbv2_state`."""
    model = MobileNetV2(width=0.35, num_classes=1000)
    model.load_state_dict(_mbv2_state())
    return model


def mbv2_data() -> ExampleData:
    """32 calibration and 16 test images from :func:`random_images` (different seeds); no labels."""
    x_calib = random_images(MBV2_CALIBRATION_SAMPLES, MBV2_INPUT_SHAPE, seed=MBV2_SEED + 2)
    x_test = random_images(MBV2_TEST_SAMPLES, MBV2_INPUT_SHAPE, seed=MBV2_SEED + 3)
    return x_calib, x_test, None


# --- spoken keywords (edgekit.speech: espeak-ng voices + noise, MFCC frames) -----------------------------------------

KWS_CALIBRATION_SAMPLES = 256


def kws_data(image: bool = False, size: str = "full") -> ExampleData:
    """``(x_calib, x_test, y_test)`` of a keyword example: 256 training clips and the test split (unseen voices).

    Features are [N, 49, 10] (frames, coefficients), what the recurrent examples read one frame per step;
    ``image=True`` gives [N, 1, 49, 10] for the convolutional example."""
    from edgekit.speech import kws

    data = kws(size=size)
    shape = (lambda x: x[:, None]) if image else (lambda x: x)
    return shape(data.x_train[:KWS_CALIBRATION_SAMPLES]).copy(), shape(data.x_test).copy(), data.y_test.copy()


def kws_train_data(image: bool = False, size: str = "full") -> tuple[np.ndarray, np.ndarray]:
    from edgekit.speech import kws

    data = kws(size=size)
    return (data.x_train[:, None] if image else data.x_train).copy(), data.y_train.copy()


# --- the registry ------------------------------------------------------------------------------------------------------

# The keyword examples that read the 49 MFCC frames as a sequence ([49, 10] per clip, 12 classes).
_kws_sequence = partial(ExampleSpec, input_shape=(49, 10), num_classes=12, data=kws_data, train_data=kws_train_data)

EXAMPLES: dict[str, ExampleSpec] = {spec.name: spec for spec in (
    ExampleSpec(
        name="digits-cnn",
        description="3-conv CNN on 8x8 handwritten digits (scikit-learn digits), trained",
        build=DigitsCNN,
        weights_file=WEIGHTS_DIR / "digits-cnn.pt",
        input_shape=(1, 8, 8),
        num_classes=10,
        data=digits_data,
        train_data=digits_train_data,
        reference_accuracy=0.9889,  # 356 / 360
    ),
    ExampleSpec(
        name="digits-gru",
        description="GRU (hidden 64) reading 8x8 digits pixel by pixel, 64 steps, trained",
        build=DigitsGRU,
        weights_file=WEIGHTS_DIR / "digits-gru.pt",
        input_shape=(64, 1),
        num_classes=10,
        data=partial(digits_data, sequence=True),
        train_data=partial(digits_train_data, sequence=True),
        reference_accuracy=0.9806,  # 353 / 360
    ),
    ExampleSpec(
        name="digits-lmu",
        description="Legendre Memory Unit (hidden 64, memory order 32, window 64 steps) reading 8x8 digits pixel by "
                    "pixel, trained",
        build=DigitsLMU,
        weights_file=WEIGHTS_DIR / "digits-lmu.pt",
        input_shape=(64, 1),
        num_classes=10,
        data=partial(digits_data, sequence=True),
        train_data=partial(digits_train_data, sequence=True),
        reference_accuracy=0.9556,  # 344 / 360
    ),
    ExampleSpec(
        name="digits-egru",
        description="event-based GRU (hidden 64) made from digits-gru by to_egru for a sparsity budget of 80 % silent "
                    "unit-steps; the classifier reads the output trace of the events, trained",
        build=DigitsEGRU,
        weights_file=WEIGHTS_DIR / "digits-egru.pt",
        input_shape=(64, 1),
        num_classes=10,
        data=partial(digits_data, sequence=True),
        train_data=partial(digits_train_data, sequence=True),
        reference_accuracy=0.9583,  # 345 / 360 at 80.2 % activity sparsity (digits-gru: 98.06 %)
        meta={"egru": {"activity_sparsity": 0.8017, "accuracy": 0.9583,
                       "source": "measured on the test split by examples/train_egru.py (to_egru)"}},
    ),
    ExampleSpec(
        name="kws-dscnn",
        description="causal depthwise-separable CNN (DS-CNN-S shape) spotting 10 spoken keywords in 49x10 MFCC "
                    "frames (edgekit.speech, espeak-ng voices), trained; streams frame by frame with --streaming",
        build=KwsDSCNN,
        weights_file=WEIGHTS_DIR / "kws-dscnn.pt",
        input_shape=(1, 49, 10),
        num_classes=12,
        data=partial(kws_data, image=True),
        train_data=partial(kws_train_data, image=True),
        reference_accuracy=0.9304,  # 1,042 / 1,120 test clips (voices unseen in training), examples/train_kws.py
    ),
    _kws_sequence(
        name="kws-gru",
        description="GRU (hidden 64) spotting 10 spoken keywords, one 20 ms MFCC frame per step (49 steps), trained",
        build=KwsGRU,
        weights_file=WEIGHTS_DIR / "kws-gru.pt",
        reference_accuracy=0.8920,  # 999 / 1,120
    ),
    _kws_sequence(
        name="kws-egru",
        description="event-based GRU (hidden 64) made from kws-gru by to_egru for a sparsity budget of 80 % silent "
                    "unit-steps; the classifier reads the output trace of the events, trained",
        build=KwsEGRU,
        weights_file=WEIGHTS_DIR / "kws-egru.pt",
        reference_accuracy=0.8482,  # 950 / 1,120 at 79.8 % activity sparsity (kws-gru: 89.20 %)
        meta={"egru": {"activity_sparsity": 0.7982, "accuracy": 0.8482,
                       "source": "measured on the test split by examples/train_egru.py (to_egru)"}},
    ),
    _kws_sequence(
        name="kws-lmu",
        description="Legendre Memory Unit (hidden 64, order 16, window 49 frames) spotting 10 spoken keywords, one "
                    "MFCC frame per step, trained",
        build=KwsLMU,
        weights_file=WEIGHTS_DIR / "kws-lmu.pt",
        # 709 / 1,120: the LMU's one-dimensional memory (one encoder for 10 MFCC features) is the bottleneck
        reference_accuracy=0.6330,
    ),
    _kws_sequence(
        name="kws-ssm",
        description="two diagonal state-space layers (S4D, 64 channels x 16 states) spotting 10 spoken keywords, one "
                    "MFCC frame per step, trained",
        build=KwsSSM,
        weights_file=WEIGHTS_DIR / "kws-ssm.pt",
        reference_accuracy=0.7268,  # 814 / 1,120
    ),
    _kws_sequence(
        name="kws-selective",
        description="two selective state-space layers (Mamba's scan, 64 channels x 16 states) spotting 10 spoken "
                    "keywords, one MFCC frame per step, trained",
        build=KwsSelective,
        weights_file=WEIGHTS_DIR / "kws-selective.pt",
        reference_accuracy=0.7714,  # 864 / 1,120
    ),
    ExampleSpec(
        name="mbv2-w035",
        description="MobileNetV2 width 0.35 at 144x144x3, 1000 classes; untrained, deterministic weights",
        build=build_mbv2_w035,
        weights_file=None,
        input_shape=MBV2_INPUT_SHAPE,
        num_classes=1000,
        data=mbv2_data,
    ),
)}


def _public_examples() -> dict[str, ExampleSpec]:
    """The zoo of public architectures (edgekit/zoo/public.py) as examples named ``zoo-<architecture>``."""
    from edgekit.zoo import public

    descriptions = {line.split("|")[1].strip(): line.split("|")[2].strip() + ": " + line.split("|")[3].strip()
                    for line in public.__doc__.splitlines() if line.startswith("| ") and "---" not in line
                    and not line.startswith("| name")}
    return {f"zoo-{n}": ExampleSpec(
        name=f"zoo-{n}",
        description=f"public architecture (random weights{', BN re-estimated' if cal else ', untrained'}): "
                    + descriptions.get(n.removesuffix("-untrained"), n),
        build=partial(public.build, n), weights_file=None, input_shape=shape, num_classes=public.CLASSES[n],
        task=public.TASKS.get(n, "classification"),
        data=partial(public.data, n)) for n, (_, shape, cal) in public.ARCHITECTURES.items()}


EXAMPLES.update(_public_examples())


def load_example(name: str) -> tuple[nn.Module, ExampleSpec]:
    """The example's module (in eval mode, shipped weights loaded) and its :class:`ExampleSpec`."""
    spec = EXAMPLES.get(name)
    if spec is None:
        raise UsageError(f"unknown example {name!r}; try one of: {', '.join(EXAMPLES)}")
    model = spec.build()
    if spec.weights_file is not None:
        if not spec.weights_file.is_file():
            raise ModelLoadError(f"example {name!r}: weights file {spec.weights_file} is missing; "
                                 "re-create it with its examples/train_digits*.py script or reinstall edgekit")
        try:
            state = torch.load(spec.weights_file, map_location="cpu", weights_only=True)
            model.load_state_dict(state)
        except Exception as exc:  # corrupt file or a state_dict from another architecture
            raise ModelLoadError(f"example {name!r}: cannot load weights {spec.weights_file}: {exc}; "
                                 "re-create them with its examples/train_digits*.py script") from exc
    return model.eval(), spec
