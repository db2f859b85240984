"""The phone target end to end: compile to ONNX / ORT format (float32 and int8), profile with ONNX Runtime, through the
Python API and the ``edgekit`` command.

What a user relies on: OUT holds a single-file model.onnx, model.ort, the reduced-build operator config and the test
data; ``profile`` reports accuracy, error against the float model and latency; int8 keeps accuracy within 2 points;
mistakes (OUT exists, wrong calibration data, no calibration data, operators ONNX cannot express) end in one line that
says what to do, with the documented exit code, and leave nothing half-written. Latency is measured but never asserted.
"""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
import torch

from edgekit import api
from edgekit.cli import main as cli_main
from edgekit.errors import DataError, MismatchError, UnsupportedError
from edgekit.model import Model
from edgekit.targets import CompileOptions, get_profile

from conftest import make_tiny

TARGET = "phone-arm64"
FILES = ("model.onnx", "model.ort", "required_operators.config", "testdata.npz", "report.json", "report.html")


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """digits-cnn compiled float and int8 through the API, both profiled."""
    root = tmp_path_factory.mktemp("phone")
    arts = {}
    for dtype, quantize in (("float32", None), ("int8", "int8")):
        out = root / dtype
        api.compile("digits-cnn", TARGET, out, quantize=quantize)
        arts[dtype] = api.profile(out, repeat=10)
    return arts


@pytest.mark.parametrize("dtype", ["float32", "int8"])
def test_compile_writes_deployable_files_and_profile_measures(digits, dtype):
    art = digits[dtype]
    out = art.path
    for f in FILES:
        assert (out / f).is_file(), f
    assert not list(out.glob("*.data")) and not list(out.glob(".*")), "model.onnx must be one file, OUT clean"
    proto = onnx.load(str(out / "model.onnx"))
    onnx.checker.check_model(proto)
    rep = json.loads((out / "report.json").read_text())
    assert rep["target"] == TARGET and rep["dtype"] == dtype
    fid = rep["measured"]["fidelity"]  # ONNX Runtime's outputs against the float PyTorch model's
    assert fid["ok"] and fid["top1_agreement"] >= (0.97 if dtype == "int8" else 1.0)
    assert dtype == "int8" or fid["max_abs_err"] < 1e-4
    build = rep["build"]
    assert build["quantized"] == (dtype == "int8")
    assert build["onnx_bytes"] == (out / "model.onnx").stat().st_size
    assert build["ort_bytes"] == (out / "model.ort").stat().st_size
    assert build["opset"] >= 13 and "Conv" in build["ops"]
    config = (out / "required_operators.config").read_text()
    assert ("QLinearConv" if dtype == "int8" else "Conv") in config

    m = rep["measured"]
    assert m == art.measured
    assert m["accuracy"] is not None and m["reference_accuracy"] is not None
    assert m["latency_ms"] > 0 and m["host_latency_p90_ms"] >= m["host_latency_ms"] > 0
    assert m["flash_bytes"] == build["onnx_bytes"]
    assert m["ort_format_max_abs_diff"] is not None
    if dtype == "float32" or "ort_format_note" not in m:
        assert m["ort_format_max_abs_diff"] < 1e-4
    else:  # this host's int8 kernels saturate: model.ort is checked on the emulated Arm core instead
        assert m["arm"]["artifact"] == "model.ort" and m["arm"]["top1_agreement_vs_host"] == 1.0
    if dtype == "float32":
        assert m["max_abs_err"] < 1e-4
        assert m["accuracy"] == m["reference_accuracy"]
    # The per-operator profile names edgekit's layers (the first conv owns its fused BatchNorm and ReLU).
    layers = {row["layer"] for row in m["layers"]}
    assert {"features.0.0", "classifier"} <= layers, layers


def test_int8_is_quantized_per_channel_and_keeps_accuracy(digits):
    f32, i8 = digits["float32"].measured, digits["int8"].measured
    assert abs(i8["accuracy"] - f32["accuracy"]) <= 0.02, (i8["accuracy"], f32["accuracy"])
    assert i8["accuracy"] > 0.9
    proto = onnx.load(str(digits["int8"].path / "model.onnx"))
    inits = {i.name: i for i in proto.graph.initializer}
    weight_dq = [n for n in proto.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits
                 and inits[n.input[0]].data_type == onnx.TensorProto.INT8 and len(inits[n.input[0]].dims) == 4]
    assert weight_dq, "conv weights are stored as int8"
    for n in weight_dq:  # one scale per output channel
        scale = inits[n.input[1]]
        assert scale.dims and scale.dims[0] == inits[n.input[0]].dims[0]
    assert i8["flash_bytes"] < 0.5 * f32["flash_bytes"]


def test_cli_compile_int8_with_calibration_file_then_profile(tmp_path):
    x = Model.load("digits-cnn").calib[:64]
    np.save(tmp_path / "calib.npy", x)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "edgekit.cli"]
    r = subprocess.run(cmd + ["compile", "digits-cnn", "--target", TARGET, "--quantize", "int8", "--calib",
                              str(tmp_path / "calib.npy"), "-o", str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    r = subprocess.run(cmd + ["profile", str(out), "--repeat", "5"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "accuracy" in r.stdout
    rep = json.loads((out / "report.json").read_text())
    assert rep["options"]["calib"] == str(tmp_path / "calib.npy")
    assert rep["build"]["quantization"]["calibration_samples"] == 64
    for key in ("accuracy", "max_abs_err", "latency_ms"):
        assert isinstance(rep["measured"][key], float), key


def _one_line_error(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("edgekit: error: "), lines[0]
    return lines[0]


def test_cli_refuses_existing_out_without_force(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    code = cli_main(["compile", "digits-cnn", "--target", TARGET, "-o", str(out)])
    assert code == 2
    assert "--force" in _one_line_error(capsys.readouterr().err)
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]


def test_cli_bad_calibration_shape_is_one_line_and_leaves_no_out(tmp_path, capsys):
    np.save(tmp_path / "calib.npy", np.zeros((16, 64), np.float32))  # flattened images, the model takes 1x8x8
    out = tmp_path / "out"
    code = cli_main(["compile", "digits-cnn", "--target", TARGET, "--quantize", "int8", "--calib",
                     str(tmp_path / "calib.npy"), "-o", str(out)])
    assert code == 4  # ShapeError
    line = _one_line_error(capsys.readouterr().err)
    assert "calib" in line and "(16, 64)" in line
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["calib.npy"]  # no partial folder either


def test_int8_without_calibration_data_is_refused(tmp_path):
    m = make_tiny()
    m = Model.from_module(m.module, m.example_inputs, name="tiny", test_x=m.test_x, test_y=m.test_y)
    with pytest.raises(DataError, match="--calib"):
        api.compile(m, TARGET, tmp_path / "out", quantize="int8")
    assert not (tmp_path / "out").exists()


def test_functional_layers_are_mapped_in_the_profile(tmp_path):
    art = api.profile(api.compile(make_tiny(), TARGET, tmp_path / "out").path, repeat=3)
    assert art.measured["max_abs_err"] < 1e-4
    layers = {row["layer"] for row in art.measured["layers"]}
    assert {"c1", "c2", "c3", "fc"} <= layers, layers


class _Untranslatable(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 4)

    def forward(self, x):
        return torch.special.i1e(torch.special.bessel_j0(self.fc(x)))


def test_every_untranslatable_operator_is_reported_at_once(tmp_path):
    from edgekit.targets.phone.export import export_module

    with pytest.raises(UnsupportedError) as e:
        export_module(_Untranslatable().eval(), (torch.randn(1, 4),), tmp_path / "m.onnx")
    assert "bessel_j0" in str(e.value) and "i1e" in str(e.value)
    assert len(str(e.value).splitlines()) == 1


class _Branchy(torch.nn.Module):
    """A data-dependent branch: torch.export refuses it, TorchScript tracing freezes one side."""

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 3)

    def forward(self, x):
        if x.sum() > 0:
            return self.fc(x)
        return -self.fc(x)


def test_torchscript_fallback_is_checked_against_torch(tmp_path):
    from edgekit.targets import phone

    x = np.abs(np.random.default_rng(0).standard_normal((8, 4))).astype(np.float32)
    profile = get_profile(TARGET)
    ok = Model(_Branchy().eval(), (torch.from_numpy(x[:1]),), "branchy", test_x=x)
    (tmp_path / "a").mkdir()
    result = phone.build(ok, profile, tmp_path / "a", CompileOptions())
    assert result.info.exporter == "torchscript"
    assert any("TorchScript" in n for n in result.notes)
    frozen = Model(_Branchy().eval(), (torch.from_numpy(x[:1]),), "branchy", test_x=-x)  # takes the other branch
    (tmp_path / "b").mkdir()
    with pytest.raises(MismatchError, match="froze"):
        phone.build(frozen, profile, tmp_path / "b", CompileOptions())


def test_compile_from_onnx_file_with_calibration(digits, tmp_path):
    pytest.importorskip("edgekit.importers.onnx_import")
    source = digits["float32"].path / "model.onnx"
    np.save(tmp_path / "calib.npy", Model.load("digits-cnn").calib)
    art = api.profile(api.compile(str(source), TARGET, tmp_path / "out", quantize="int8",
                                  calib=str(tmp_path / "calib.npy")).path, repeat=3)
    assert art.report["build"]["exporter"] == "file" and art.report["build"]["quantized"]
    assert art.measured["top1_agreement"] >= 0.95  # int8 against the file's float outputs, on the calibration set


def test_int8_build_leaves_nothing_in_the_working_folder(tmp_path, monkeypatch):
    """ONNX Runtime's quantization pre-processing used to leave sym_shape_infer_temp.onnx and <uuid>.data files in
    the working folder when its symbolic shape inference failed (it does on the zoo's U-Net)."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    api.compile("zoo-unet", TARGET, tmp_path / "out", quantize="int8", int8_layers="all")
    assert list(work.iterdir()) == []


def test_depthwise_terms_count_a_conv1d_as_one_row_per_channel():
    """The phone cost model prices a depthwise layer per channel, channel row and pixel: a Conv1d's [N, C, L] output is
    C rows of L pixels (priced as C x L rows before, its float32 estimate was +90 % off on zoo MatchboxNet), a 2-D
    one's [N, C, H, W] C x H rows of H x W pixels."""
    from edgekit.model import Model
    from edgekit.targets.phone.cost import arm_layer_terms

    g = Model.load("zoo-matchboxnet").deploy_graph
    n = g["blocks.0.0"]
    c, length = n.shape[1], n.shape[2]
    assert arm_layer_terms(n, g)["dw_row"] == c and arm_layer_terms(n, g)["dw_pixel"] == length
    g2 = Model.load("zoo-dscnn-kws").deploy_graph
    n2 = next(x for x in g2.nodes if x.op == "conv2d" and x.attrs.get("groups", 1) == x.shape[1] > 1)
    t = arm_layer_terms(n2, g2)
    assert t["dw_row"] == n2.shape[1] * n2.shape[2] and t["dw_pixel"] == n2.shape[2] * n2.shape[3]
