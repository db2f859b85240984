"""The bundled examples load, run on their own data, reach their stated accuracy and trace with torch.fx."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.fx

from edgekit.datasets import as_sequence, digits
from edgekit.errors import UsageError
from edgekit.zoo import EXAMPLES, load_example

# How far below its stated reference_accuracy an example may land: float differences between machines can flip a
# borderline test image or two (1 of 360 = 0.0028), retrained or damaged weights lose more.
ACCURACY_MARGIN = 0.01


@pytest.fixture(scope="module", params=sorted(EXAMPLES))
def example(request):
    model, spec = load_example(request.param)
    return model, spec, spec.data()


def predict(model: torch.nn.Module, x: np.ndarray) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.from_numpy(x))


def test_example_runs_on_its_test_inputs(example):
    model, spec, (x_calib, x_test, y_test) = example
    assert not model.training
    assert x_calib.shape[1:] == spec.input_shape and x_calib.dtype == np.float32 and len(x_calib) > 0
    assert x_test.shape[1:] == spec.input_shape and x_test.dtype == np.float32 and len(x_test) > 0
    if y_test is not None:
        assert y_test.shape == (len(x_test),) and y_test.dtype == np.int64
    logits = predict(model, x_test)
    if spec.num_classes:  # classifiers (the zoo's segmenter and autoencoder have other outputs)
        assert logits.shape == (len(x_test), spec.num_classes)
    assert len(logits) == len(x_test) and torch.isfinite(logits).all()


class _EdgekitLayersAsLeaves(torch.fx.Tracer):
    """Keeps edgekit's own layers (edgekit/layers) whole, as torch.fx keeps nn.GRU; edgekit's importer does the same."""

    def is_leaf_module(self, m: torch.nn.Module, qualname: str) -> bool:
        return type(m).__module__.startswith("edgekit.layers") or super().is_leaf_module(m, qualname)


def test_example_traces_with_torch_fx(example):
    model, spec, (_, x_test, _) = example
    if spec.name.startswith("zoo-"):
        # public architectures as users write them (x.shape unpacked in forward, ...): edgekit imports them through
        # torch.export where symbolic tracing cannot follow; bench/zoo.py and tests/test_fidelity.py compile them
        return
    uses_edgekit_layers = any(type(m).__module__.startswith("edgekit.layers") for m in model.modules())
    if uses_edgekit_layers:
        traced = torch.fx.GraphModule(model, _EdgekitLayersAsLeaves().trace(model))
    else:
        traced = torch.fx.symbolic_trace(model)
    x = x_test[:8]
    torch.testing.assert_close(predict(traced, x), predict(model, x), rtol=0, atol=0)


@pytest.mark.parametrize("name", sorted(n for n, spec in EXAMPLES.items() if spec.reference_accuracy is not None))
def test_trained_example_reaches_its_reference_accuracy(name):
    model, spec = load_example(name)
    _, x_test, y_test = spec.data()
    accuracy = float((predict(model, x_test).argmax(dim=1).numpy() == y_test).mean())
    assert accuracy >= spec.reference_accuracy - ACCURACY_MARGIN, f"{name}: test accuracy {accuracy:.4f}"


def test_the_digits_examples_meet_their_targets():
    assert EXAMPLES["digits-cnn"].reference_accuracy >= 0.97
    assert EXAMPLES["digits-gru"].reference_accuracy >= 0.90


def test_every_trained_example_states_its_accuracy():
    unstated = [name for name, spec in EXAMPLES.items()
                if spec.weights_file is not None and spec.reference_accuracy is None]
    assert not unstated, f"set reference_accuracy for {unstated} in edgekit/zoo/__init__.py"


def test_training_data_matches_the_example_inputs():
    for name, spec in EXAMPLES.items():
        if spec.train_data is None:
            continue
        x_train, y_train = spec.train_data()
        assert x_train.shape[1:] == spec.input_shape and x_train.dtype == np.float32, name
        assert y_train.shape == (len(x_train),) and y_train.dtype == np.int64, name
        assert set(np.unique(y_train)) == set(range(spec.num_classes)), name


def test_untrained_mobilenet_is_deterministic_and_not_degenerate():
    first, spec = load_example("mbv2-w035")
    second, _ = load_example("mbv2-w035")
    for (key, a), b in zip(first.state_dict().items(), second.state_dict().values()):
        assert torch.equal(a, b), key
    x_calib, x_test, y_test = spec.data()
    again = spec.data()
    assert y_test is None and again[2] is None
    np.testing.assert_array_equal(x_calib, again[0])
    np.testing.assert_array_equal(x_test, again[1])
    assert x_calib.shape == (32, 3, 144, 144) and x_test.shape == (16, 3, 144, 144)
    logits = predict(first, x_test)
    assert len(set(logits.argmax(dim=1).tolist())) > len(x_test) // 2  # the prediction depends on the input
    assert logits.std(dim=0).mean() > 0.5


def test_unknown_example_names_the_known_ones():
    with pytest.raises(UsageError, match="unknown example 'nope'; try one of: .*digits-cnn"):
        load_example("nope")


def test_digits_split_is_fixed_and_stratified():
    split = digits()
    assert split.x_train.shape == (1437, 1, 8, 8) and split.x_test.shape == (360, 1, 8, 8)
    assert split.x_train.min() == 0.0 and split.x_train.max() == 1.0
    np.testing.assert_array_equal(digits().x_test, split.x_test)
    assert np.bincount(split.y_test).min() >= 35  # every digit is in the test split, about 36 of each


def test_as_sequence_reads_pixels_row_major():
    x = digits().x_test[:3]
    sequence = as_sequence(x)
    assert sequence.shape == (3, 64, 1)
    row, column = 5, 2
    np.testing.assert_array_equal(sequence[:, row * 8 + column, 0], x[:, 0, row, column])
