"""Fidelity to the float model on every target's profile, and the int8 regression that once passed silently: an
untrained MobileNetV1-0.25 whose activations die out (issue: int8 you can trust)."""
import numpy as np
import pytest
import torch
from torch import nn

from edgekit import fidelity


def test_measure_figures():
    ref = np.array([[1.0, -1.0, 0.5], [0.2, 0.8, -0.4]])
    same = fidelity.measure(ref, ref, labels=np.array([0, 1]))
    assert same["sqnr_db"] is None and same["identical"] and same["top1_agreement"] == 1.0 and same["ok"]
    assert same["accuracy"] == same["float_accuracy"] == 1.0 and same["cosine"] == pytest.approx(1.0)
    noisy = fidelity.measure(ref + 0.01, ref)
    assert 30 < noisy["sqnr_db"] < 50 and noisy["max_abs_err"] == pytest.approx(0.01)
    assert noisy["max_abs_err_rel"] == pytest.approx(0.01 / 2.0)  # of the float outputs' range, -1 .. 1
    flat = fidelity.measure(np.zeros_like(ref), ref)  # every output at zero: the silent failure of the issue
    assert not flat["ok"] and "LOW FIDELITY" in flat["summary"] and flat["sqnr_db"] == pytest.approx(0.0)
    # top-1 agreement is for classifiers: an autoencoder's reconstruction is judged by SQNR alone
    recon = fidelity.measure(ref + 0.01, ref, classifier=fidelity.classifies({"model": {"task": "reconstruction"}}))
    assert "top1_agreement" not in recon and recon["ok"]
    assert fidelity.classifies({"model": {"task": "classification"}}) and fidelity.classifies({}) is None


def test_converted_scores_are_compared_without_their_scale_and_shift():
    """A spiking readout trained anew has its own scale and a shift per input: neither is disagreement; a changed
    class is."""
    rng = np.random.default_rng(0)
    ann = rng.normal(size=(50, 10))
    converted = 3.0 * ann + rng.normal(size=(50, 1)) + 0.01 * rng.normal(size=(50, 10))
    raw = fidelity.measure(converted, ann)
    free = fidelity.measure(converted, ann, scale_free=True)
    assert not raw["ok"] and free["ok"]
    assert free["gain"] == pytest.approx(1 / 3, rel=0.02) and free["sqnr_db"] > 30
    assert free["top1_agreement"] == 1.0
    wrong = converted.copy()
    wrong[:10] = wrong[:10, ::-1]  # ten inputs get other classes
    bad = fidelity.measure(wrong, ann, scale_free=True)
    assert not bad["ok"] and "top-1 agreement" in bad["summary"] and "fine-tune the conversion" in bad["summary"]


def test_untrained_mobilenet_v1_is_right_on_the_emulated_m7(tmp_path):
    """Before: every int8 output was the zero point while profile said 'outputs match'. Now the int8 build keeps the
    float outputs (bias-dominated logits) and the profile measures that it does."""
    import edgekit

    from edgekit.zoo.public import MobileNetV1  # as a user writes it; PyTorch's default initialisation, BN unestimated

    torch.manual_seed(0)
    module = MobileNetV1().eval()
    x = np.random.default_rng(0).standard_normal((24, 3, 96, 96)).astype(np.float32)
    model = edgekit.Model.from_module(module, torch.from_numpy(x[:1]), name="mbv1-random", calib=x[:16],
                                      test_x=x[16:])
    edgekit.compile(model, "cortex-m7", tmp_path / "out", quantize="int8")
    m = edgekit.profile(tmp_path / "out").report["measured"]
    assert m["outputs_match"]
    fid = m["fidelity"]
    assert fid["ok"] and fid["sqnr_db"] > 30 and fid["top1_agreement"] == 1.0, fid
    assert fid["max_abs_err_rel"] < 0.01


def test_profile_exits_non_zero_on_low_fidelity(tmp_path):
    """Calibration data 1000x the real inputs: the int8 input scale swallows the digits, the firmware still matches
    its integer reference bit for bit, but it is no longer the model — profile says so and exits 11."""
    from edgekit.cli import main

    calib = np.full((8, 1, 8, 8), 1000.0, np.float32)
    calib[:, :, ::2] = -1000.0
    np.save(tmp_path / "calib.npy", calib)
    out = tmp_path / "out"
    assert main(["compile", "digits-cnn", "-t", "cortex-m7", "--quantize", "int8", "--calib",
                 str(tmp_path / "calib.npy"), "-o", str(out)]) == 0
    assert main(["profile", str(out)]) == 11
    import json

    rep = json.loads((out / "report.json").read_text())
    assert rep["measured"]["outputs_match"] and not rep["measured"]["fidelity"]["ok"]
    assert main(["profile", str(out), "--accept-low-fidelity"]) == 0


class _SqueezeExcite(nn.Module):
    """MobileNetV3's squeeze-excite: x * hardsigmoid(conv(relu(conv(avgpool(x))))) — a per-channel broadcast multiply."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.BatchNorm2d(16), nn.Hardswish())
        self.pool, self.fc1, self.fc2 = nn.AdaptiveAvgPool2d(1), nn.Conv2d(16, 8, 1), nn.Conv2d(8, 16, 1)
        self.gate = nn.Hardsigmoid()
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 5))

    def forward(self, x):
        y = self.stem(x)
        return self.head(y * self.gate(self.fc2(torch.relu(self.fc1(self.pool(y))))))


@pytest.mark.parametrize("quantize", ["int8", None])
def test_squeeze_excite_runs_bit_exact_on_the_m7(tmp_path, quantize):
    """hardsigmoid and the per-channel multiply (MobileNetV3) in int8 and float32 on the emulated M7."""
    import edgekit

    torch.manual_seed(1)
    x = np.random.default_rng(1).standard_normal((24, 3, 16, 16)).astype(np.float32)
    model = edgekit.Model.from_module(_SqueezeExcite().eval(), torch.from_numpy(x[:1]), calib=x[:16], test_x=x[16:])
    edgekit.compile(model, "cortex-m7", tmp_path / "out", quantize=quantize)
    m = edgekit.profile(tmp_path / "out").report["measured"]
    assert m["outputs_match"] and m["fidelity"]["ok"], m["fidelity"]
    assert m["fidelity"]["sqnr_db"] is None or m["fidelity"]["sqnr_db"] > 25


def test_unet_upsample_and_concat_run_bit_exact_on_the_m7(tmp_path):
    """The zoo's U-Net: nearest upsampling (a new operator) and the skip concat, int8 on the emulated M7."""
    import edgekit
    from edgekit.zoo import load_example

    module, spec = load_example("zoo-unet")
    x_calib, x_test, _ = spec.data()
    model = edgekit.Model.from_module(module, torch.from_numpy(x_calib[:1]), calib=x_calib, test_x=x_test[:4])
    edgekit.compile(model, "cortex-m7", tmp_path / "out", quantize="int8")
    m = edgekit.profile(tmp_path / "out").report["measured"]
    assert m["outputs_match"] and m["fidelity"]["sqnr_db"] > 25, m["fidelity"]


def test_attention_block_runs_on_the_phone_and_is_refused_in_one_line_on_the_m7(tmp_path):
    """The zoo's transformer block (LayerNorm, MatMul, Softmax, GELU, transposes): ONNX Runtime runs it in int8 within
    the fidelity bounds; the Cortex-M target refuses it in one line that names the layers and the target that runs
    them (never a traceback)."""
    import edgekit
    from edgekit.errors import UnsupportedError

    edgekit.compile("zoo-attention", "phone-arm64", tmp_path / "phone", quantize="int8", int8_layers="all")
    fid = edgekit.profile(tmp_path / "phone").report["measured"]["fidelity"]
    assert fid["ok"] and fid["sqnr_db"] > 15 and fid["top1_agreement"] >= 0.9, fid
    with pytest.raises(UnsupportedError) as e:
        edgekit.compile("zoo-attention", "cortex-m7", tmp_path / "m7")
    msg = str(e.value)
    assert "'norm1' (layernorm)" in msg and "(matmul)" in msg and "phone-arm64" in msg and "\n" not in msg
    assert not (tmp_path / "m7").exists()


@pytest.mark.parametrize("quantize", ["int8", None])
def test_channel_shuffle_runs_bit_exact_on_the_m7(quantize, tmp_path):
    """ShuffleNet's channel shuffle (view, transpose(1, 2), reshape) and grouped 1x1 convs on the emulated M7: one
    gather on NHWC data, bit-exact to the integer reference (int8) or to PyTorch (float32)."""
    import edgekit

    art = edgekit.compile("zoo-shufflenet", "cortex-m7", tmp_path / "out", quantize=quantize)
    m = edgekit.profile(tmp_path / "out").report["measured"]
    assert m["outputs_match"] and m["fidelity"]["ok"], m["fidelity"]
    if quantize == "int8":  # the grouped 1x1 convs on edgekit's dense kernel (block-diagonal weights)
        kernels = dict(zip(art.report["build"]["step_layers"], art.report["build"]["step_kernels"]))
        assert kernels["features.1.g1.0"] == "ek_conv" and kernels["features.2.g2.0"] == "ek_conv"
    assert m["fidelity"]["top1_agreement"] >= 0.9
