"""Model files as users hand them over: ``.pt2`` (torch.export.save) and ``.onnx`` (torch.onnx.export).

What a user relies on: a file of a model edgekit supports loads into the same layer graph the ``nn.Module`` gives
(outputs equal within a stated tolerance, same MAC and parameter totals, layer names from the model for ``.pt2``);
a bad file (truncated, empty, not a model, missing, a folder) or a model with operators edgekit lacks ends in one
line that names the file (and every offending node at once), with the documented error class.
"""
from __future__ import annotations

import copy

import numpy as np
import onnx
import pytest
import torch
import torch.nn as nn
from onnx import TensorProto, helper, numpy_helper

from edgekit.errors import ModelLoadError, ShapeError, UnsupportedError
from edgekit.graph_exec import run_graph
from edgekit.model import Model
from edgekit.zoo.models import DigitsCNN, DigitsGRU, MobileNetV2


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """The models here are tiny: one thread runs them faster than several competing for the cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class Mixed(nn.Module):
    """Concat, depthwise conv + BN + in-place ReLU in a residual branch, sigmoid gate, average pool, a 1-D conv over
    the flattened image, a batch-first LSTM read through its output and h_n, softmax."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(4, 8, 3, padding=1)
        self.b = nn.Conv2d(4, 8, 1)
        self.dw = nn.Conv2d(16, 16, 3, padding=1, groups=16, bias=False)
        self.bn = nn.BatchNorm2d(16)
        self.act = nn.ReLU(inplace=True)
        self.pool = nn.AvgPool2d(2)
        self.fc = nn.Linear(16 * 4 * 4, 5)
        self.c1 = nn.Conv1d(16, 4, 3, padding=1)
        self.lstm = nn.LSTM(64, 6, batch_first=True)
        self.head = nn.Linear(6, 3)

    def forward(self, x):
        y = torch.cat([self.a(x), self.b(x)], 1)
        y = self.act(self.bn(self.dw(y))) + y
        y = torch.sigmoid(y) * y
        seq, (h, _) = self.lstm(self.c1(torch.flatten(y, 2)))  # [1, 4 steps, 64]
        return torch.softmax(self.fc(self.pool(y).flatten(1)), -1), self.head(seq[:, -1]) + self.head(h[0])


class Temporal(nn.Module):
    """Dilated Conv1d layers with both global pools over time a .pt2 keeps: AdaptiveAvgPool1d(1) and x.mean(-1)."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv1d(10, 16, 3, padding=2, dilation=2)
        self.bn = nn.BatchNorm1d(16)
        self.c2 = nn.Conv1d(16, 16, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool1d(1)
        self.fc = nn.Linear(16, 5)

    def forward(self, x):
        y = torch.relu(self.bn(self.c1(x)))
        return self.fc(self.pool(torch.relu(self.c2(y))).flatten(1) + y.mean(-1))


def _seeded(build, seed: int) -> nn.Module:
    """Seeded weights, and BatchNorm statistics that are not the identity so that folding has something to fold."""
    torch.manual_seed(seed)
    module = build(width=0.35, num_classes=10) if build is MobileNetV2 else build()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5, generator=g)
                m.running_var.uniform_(0.5, 2.0, generator=g)
                m.weight.uniform_(0.5, 1.5, generator=g)
                m.bias.uniform_(-0.5, 0.5, generator=g)
    return module.eval()


class Activations(nn.Module):
    """The activations beyond ReLU that public models use: LeakyReLU (YOLO-tiny), ELU, a Hardtanh clamp, Mish
    (YOLOv4), SiLU (EfficientNet), GELU (ConvMixer, transformers), a one-slope PReLU, a PReLU per channel."""

    def __init__(self):
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)
        self.acts = nn.Sequential(nn.LeakyReLU(0.1), nn.ELU(0.7), nn.Hardtanh(-1.5, 2.0), nn.Mish())
        self.tail = nn.Sequential(nn.SiLU(), nn.GELU(), nn.PReLU(), nn.PReLU(8))
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        y = self.tail(self.c2(self.acts(self.c1(x))))
        return self.fc(torch.nn.functional.leaky_relu(y, 0.2).mean((2, 3)))


class Decoder(nn.Module):
    """The upsampling layers of decoders and super-resolution nets: U-Net's 2x2 up-convolution (with BatchNorm and
    ReLU after it), a 3x3 one with output_padding, a grouped 4x4 one (padding 1: DCGAN's), a sub-pixel conv's
    PixelShuffle as a module and as a function, F.interpolate bilinear (align_corners=False) and nearest to a size."""

    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(3, 8, 3, padding=1)
        self.up = nn.ConvTranspose2d(8, 8, 2, stride=2)
        self.bn = nn.BatchNorm2d(8)
        self.up2 = nn.ConvTranspose2d(8, 4, 3, stride=2, padding=1, output_padding=1)
        self.up3 = nn.ConvTranspose2d(4, 8, 4, stride=2, padding=1, groups=4, bias=False)
        self.ps = nn.PixelShuffle(2)

    def forward(self, x):
        y = torch.relu(self.up2(torch.relu(self.bn(self.up(self.c(x))))))
        y = self.ps(self.up3(y))
        y = torch.nn.functional.interpolate(y, scale_factor=2, mode="bilinear", align_corners=False)
        z = torch.nn.functional.interpolate(y, size=(y.shape[2] * 3, y.shape[3] * 3))  # nearest, from a size
        return torch.nn.functional.pixel_shuffle(torch.cat([z, z], 1), 2)


class Padded(nn.Module):
    """Zero padding as models ported from TensorFlow and causal sequence models write it: F.pad before a stride-2 conv
    ('same', asymmetric), a ZeroPad2d before a conv without padding (folded into it), causal pads of Conv1d layers."""

    def __init__(self):
        super().__init__()
        self.c, self.z, self.c2 = nn.Conv2d(3, 8, 3, stride=2), nn.ZeroPad2d(1), nn.Conv2d(8, 8, 3)
        self.c3, self.c4, self.fc = nn.Conv1d(8, 6, 3, dilation=2), nn.Conv1d(6, 6, 3), nn.Linear(6, 4)
        self.causal = nn.ConstantPad1d((2, 0), 0.0)

    def forward(self, x):
        y = torch.relu(self.c2(self.z(torch.relu(self.c(torch.nn.functional.pad(x, (0, 1, 0, 1)))))))
        y = torch.relu(self.c3(torch.nn.functional.pad(y.flatten(2), (4, 0))))
        return self.fc(self.c4(self.causal(y)).mean(-1))


class AudioDecoder(nn.Module):
    """A strided Conv1d encoder and ConvTranspose1d layers back up (8 taps / stride 4 / padding 2 with BatchNorm and
    ReLU after it, 2 taps / stride 2), as audio decoders and vocoders write them."""

    def __init__(self):
        super().__init__()
        self.enc = nn.Conv1d(4, 16, 8, stride=4, padding=2)
        self.up, self.bn = nn.ConvTranspose1d(16, 8, 8, stride=4, padding=2), nn.BatchNorm1d(8)
        self.up2, self.c = nn.ConvTranspose1d(8, 4, 2, stride=2), nn.Conv1d(4, 2, 3, padding=1)

    def forward(self, x):
        y = torch.relu(self.bn(self.up(torch.relu(self.enc(x)))))
        return self.c(torch.relu(self.up2(y)))


# name -> (architecture, one sample's shape). The zoo's architectures (digits-cnn, digits-gru, mbv2 at a smaller
# input) with seeded weights, so the test does not depend on trained weight files.
MODELS = {
    "digits-cnn": (DigitsCNN, (1, 8, 8)),
    "digits-gru": (DigitsGRU, (64, 1)),
    "mbv2-w035": (MobileNetV2, (3, 64, 64)),
    "mixed": (Mixed, (4, 8, 8)),
    "temporal": (Temporal, (10, 20)),
    "activations": (Activations, (3, 8, 8)),
    "decoder": (Decoder, (3, 5, 4)),
    "padded": (Padded, (3, 12, 12)),
    "audio-decoder": (AudioDecoder, (4, 64)),
}


@pytest.fixture(scope="module", params=sorted(MODELS))
def case(request):
    build, shape = MODELS[request.param]
    module = _seeded(build, seed=len(request.param))
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((1,) + shape, dtype=np.float32))
    return request.param, module, x


def _outputs(module, x) -> list[np.ndarray]:
    with torch.no_grad():
        y = module(x)
    return [t.numpy() for t in (y if isinstance(y, tuple) else (y,))]


def _totals(model: Model) -> tuple[int, int]:
    a = model.analyze()
    return a.macs, a.params


def test_pt2_round_trip(case, tmp_path):
    name, module, x = case
    path = tmp_path / f"{name}.pt2"
    torch.export.save(torch.export.export(module, (x,)), str(path))
    loaded = Model.load(path)
    assert loaded.meta["source"] == str(path)
    got = run_graph(loaded.graph, [x.numpy()])
    for out, want in zip(loaded.graph.outputs, _outputs(module, x)):
        np.testing.assert_allclose(got[out], want, rtol=0, atol=1e-5)
    assert _totals(loaded) == _totals(Model.from_module(module, x))
    # Layer names are the module paths, as in the nn.Module import.
    weighted = {n.name for n in Model.from_module(module, x).graph if n.params}
    assert weighted == {n.name for n in loaded.graph if n.params}
    if name == "temporal":  # both pools over time import as the global pool the targets run
        assert [n.op for n in loaded.graph if "pool" in n.op or "mean" in n.op] == ["global_avgpool"] * 2
    # A program exported at batch 1 still predicts whole batches (and so does a converter's copy of it).
    xb = np.random.default_rng(1).standard_normal((3,) + tuple(x.shape[1:]), dtype=np.float32)
    want = _outputs(module, torch.from_numpy(xb))[0]
    np.testing.assert_allclose(loaded.predict(xb), want, rtol=0, atol=1e-5)
    np.testing.assert_allclose(loaded.with_module(copy.deepcopy(loaded.module)).predict(xb), want, rtol=0, atol=1e-5)


def test_onnx_round_trip(case, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    name, module, x = case
    path = tmp_path / f"{name}.onnx"
    torch.onnx.export(module, (x,), str(path), dynamo=True, external_data=False, verbose=False)
    loaded = Model.load(path)
    assert loaded.module is None and loaded.meta["source"] == str(path)
    got = run_graph(loaded.graph, [x.numpy()])
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    from_file = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    for out, want, in_file in zip(loaded.graph.outputs, _outputs(module, x), from_file):
        scale = max(1.0, float(np.abs(want).max()))  # float sums in another order: relative to the output size
        np.testing.assert_allclose(got[out], in_file, rtol=0, atol=1e-5 * scale)
        np.testing.assert_allclose(got[out], want, rtol=0, atol=1e-5 * scale)
    assert _totals(loaded) == _totals(Model.from_module(module, x))
    xb = np.random.default_rng(1).standard_normal((3,) + tuple(x.shape[1:]), dtype=np.float32)
    want = _outputs(module, torch.from_numpy(xb))[0]
    np.testing.assert_allclose(loaded.predict(xb), want, rtol=0, atol=1e-5 * max(1.0, float(np.abs(want).max())))


def _sequence_first_gru():
    class SequenceFirst(nn.Module):  # ONNX-style layout inside a PyTorch model: transposes around the GRU
        def __init__(self):
            super().__init__()
            self.gru = nn.GRU(4, 6)
            self.fc = nn.Linear(6, 5)

        def forward(self, x):
            y, h = self.gru(x.transpose(0, 1))
            return torch.softmax(self.fc(y), -1)[-1], h

    torch.manual_seed(0)
    return SequenceFirst().eval()


def test_onnx_sequence_first_layout_and_dynamic_batch(tmp_path):
    """Exporters wrap recurrent layers in transposes and shape arithmetic; with batch 1 edgekit reads through them."""
    module, x = _sequence_first_gru(), torch.randn(2, 7, 4)
    path = tmp_path / "seq.onnx"
    torch.onnx.export(module, (x,), str(path), dynamo=True, external_data=False, verbose=False,
                      dynamic_shapes={"x": {0: torch.export.Dim("batch")}})
    loaded = Model.load(path)
    assert loaded.input_shapes == [(1, 7, 4)]
    got = run_graph(loaded.graph, [x[:1].numpy()])
    for out, want in zip(loaded.graph.outputs, _outputs(module, x[:1])):
        np.testing.assert_allclose(got[out].reshape(want.shape), want, rtol=0, atol=1e-5)
    np.testing.assert_allclose(loaded.predict(x.numpy()), _outputs(module, x)[0], rtol=0, atol=1e-5)


# ---- bad files ------------------------------------------------------------------------------------------------------

def _onnx_file(path, nodes, inits=(), x_shape=(1, 4), y_shape=None):
    graph = helper.make_graph(list(nodes), "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape or x_shape)],
                              list(inits))
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


@pytest.fixture(scope="module")
def good_files(tmp_path_factory):
    """A small model saved both ways, to damage."""
    root = tmp_path_factory.mktemp("good")
    module, x = _seeded(DigitsCNN, seed=0), torch.rand(1, 1, 8, 8)
    torch.export.save(torch.export.export(module, (x,)), str(root / "m.pt2"))
    _onnx_file(root / "m.onnx", [helper.make_node("Relu", ["x"], ["y"], name="relu")])
    return root


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


def _cut(src, dst, keep: float):
    data = src.read_bytes()
    return _write(dst, data[:int(len(data) * keep)])


def _torch_save(path):
    torch.save({"weight": torch.ones(2)}, path)  # also a zip file, but not an exported program
    return path


def _folder(path):
    path.mkdir()
    return path


# kind -> (folder of good files, tmp_path) -> the bad path
BAD = {
    "truncated .pt2 (half)": lambda g, t: _cut(g / "m.pt2", t / "half.pt2", 0.5),
    "truncated .pt2 (zip directory kept)": lambda g, t: _cut(g / "m.pt2", t / "tail.pt2", 0.98),
    "truncated .onnx": lambda g, t: _cut(g / "m.onnx", t / "half.onnx", 0.5),
    "text renamed .onnx": lambda g, t: _write(t / "notes.onnx", b"not a model\n"),
    "text renamed .pt2": lambda g, t: _write(t / "notes.pt2", b"not a model\n"),
    "torch.save archive as .pt2": lambda g, t: _torch_save(t / "state.pt2"),
    "empty .onnx": lambda g, t: _write(t / "empty.onnx", b""),
    "empty .pt2": lambda g, t: _write(t / "empty.pt2", b""),
    "missing path": lambda g, t: t / "nowhere" / "model.onnx",
    "folder": lambda g, t: _folder(t / "model.onnx"),
}


@pytest.mark.parametrize("kind", sorted(BAD))
def test_bad_file_is_one_line_naming_it(kind, good_files, tmp_path, capfd):
    path = BAD[kind](good_files, tmp_path)
    with pytest.raises(ModelLoadError) as err:
        Model.load(path)
    message = str(err.value)
    assert str(path) in message and "\n" not in message, message
    assert "Traceback" not in capfd.readouterr().err  # torch.export.load's logged traceback stays off the terminal


def test_every_unsupported_onnx_node_is_named_at_once(tmp_path):
    path = _onnx_file(tmp_path / "ops.onnx", [helper.make_node("Erf", ["x"], ["a"], name="erf_1"),
                                              helper.make_node("Relu", ["a"], ["b"], name="fine"),
                                              helper.make_node("Selu", ["b"], ["y"], name="selu")])
    with pytest.raises(UnsupportedError) as err:
        Model.load(path)
    message = str(err.value)
    assert str(path) in message and "\n" not in message
    assert "'erf_1' (Erf)" in message and "'selu' (Selu)" in message and "'fine'" not in message


def test_onnx_layer_limits_are_named_together(tmp_path):
    """Known operators used beyond what edgekit's layers express: each offending node with its limit."""
    weight = numpy_helper.from_array(np.ones((3, 3, 3, 3), np.float32), "w")
    bounds = [numpy_helper.from_array(np.array(v, np.float32), n) for n, v in (("lo", -1), ("hi", 1))]
    path = _onnx_file(tmp_path / "limits.onnx",
                      [helper.make_node("ConvTranspose", ["x", "w"], ["c"], name="conv_tf", output_shape=[8, 8],
                                        pads=[1, 1, 1, 1]),
                       helper.make_node("Clip", ["x", "lo"], ["k"], name="clip"),
                       helper.make_node("Add", ["c", "k"], ["y"], name="add")],
                      [weight, *bounds], x_shape=(1, 3, 8, 8))
    with pytest.raises(UnsupportedError) as err:
        Model.load(path)
    message = str(err.value)
    assert str(path) in message and "\n" not in message
    assert "'conv_tf' (ConvTranspose: ConvTranspose with auto_pad or output_shape" in message
    assert "'clip' (Clip: Clip to [-1.0, None]" in message
    assert "'add'" not in message  # it only reads the refused layers


def test_onnx_dynamic_dimension_needs_input_shape(tmp_path):
    path = _onnx_file(tmp_path / "dyn.onnx", [helper.make_node("Relu", ["x"], ["y"], name="r")],
                      x_shape=("N", "steps", 3))
    with pytest.raises(UnsupportedError, match=r"dynamic dimension 'steps'.*--input-shape"):
        Model.load(path)
    assert Model.load(path, input_shape=(5, 3)).input_shapes == [(1, 5, 3)]
    with pytest.raises(ShapeError, match="does not fit"):
        Model.load(path, input_shape=(5, 4))


def test_onnx_missing_external_weights(tmp_path):
    module, x = DigitsCNN().eval(), torch.rand(1, 1, 8, 8)
    path = tmp_path / "ext.onnx"
    torch.onnx.export(module, (x,), str(path), dynamo=True, external_data=True, verbose=False)
    for data in tmp_path.glob("*.data"):
        data.unlink()
    with pytest.raises(ModelLoadError, match="missing; copy that file alongside or re-export"):
        Model.load(path)


@pytest.mark.parametrize("name", ["attention", "shufflenet"])
@pytest.mark.parametrize("source", ["module", "pt2", "onnx"])
def test_transformer_and_shuffle_layers_import_exactly(name, source, tmp_path):
    """LayerNorm, q @ k^T / sqrt(d) (the divisor computed from x.shape), chunk, multi-head transposes, GELU and a mean
    over the sequence (a transformer block), and ShuffleNet's channel shuffle (view, transpose, reshape) import into
    graph operators whose float execution equals the module's, as nn.Module, as a .pt2 program and as ONNX."""
    from edgekit.zoo.public import ARCHITECTURES

    build, shape, _ = ARCHITECTURES[name]
    torch.manual_seed(3)
    module = build().eval()
    x = torch.randn((1,) + shape)
    if source == "pt2":
        path = tmp_path / f"{name}.pt2"
        torch.export.save(torch.export.export(module, (x,)), str(path))
        model = Model.load(path)
    elif source == "onnx":
        path = tmp_path / f"{name}.onnx"
        torch.onnx.export(module, (x,), str(path), dynamo=False)
        model = Model.load(path)
    else:
        model = Model.from_module(module, x)
    ops = {n.op for n in model.graph}
    assert ({"layernorm", "matmul", "scale", "gelu", "transpose", "reduce_mean"} <= ops if name == "attention"
            else "transpose" in ops)
    xb = np.random.default_rng(4).standard_normal((1,) + shape).astype(np.float32)
    got = run_graph(model.graph, [xb])[model.graph.outputs[0]]
    np.testing.assert_allclose(got, _outputs(module, torch.from_numpy(xb))[0], rtol=0, atol=1e-5)


def test_transposed_convs_deploy_as_phase_convs():
    """Every transposed conv deploys as a stride-1 conv computing its output phases, a depth_to_space and (when the
    padding cuts the borders) a crop, computing what the module computes; U-Net's 2x2 up-convolution with no more
    MACs than the transposed conv has; BatchNorm and ReLU after it folded into the phase conv; a layer called with
    output_size= imports at the size it produced; dilation is refused in one line naming the layer."""
    from edgekit.analysis import macs_of
    from edgekit.errors import UnsupportedError

    module = _seeded(Decoder, seed=7)
    x = torch.from_numpy(np.random.default_rng(2).standard_normal((1, 3, 5, 4), dtype=np.float32))
    model = Model.from_module(module, x)
    dep = model.deploy_graph
    assert "conv_transpose2d" not in {n.op for n in dep} and "batchnorm" not in {n.op for n in dep}
    assert dep["up.phases"].attrs["kernel_size"] == [1, 1] and dep["up.phases"].attrs["activation"] == "relu"
    assert macs_of(dep["up.phases"], dep) == macs_of(model.graph["up"], model.graph)
    assert [dep[n].attrs["mode"] for n in ("up", "up2.interleave", "up3.interleave")] == ["DCR", "DCR", "CRD"]
    assert dep["up2"].op == "select" and dep["up3"].op == "select"
    got = run_graph(dep, [x.numpy()])[dep.outputs[0]]
    np.testing.assert_allclose(got, _outputs(module, x)[0], rtol=0, atol=1e-5)

    class Sized(nn.Module):
        def __init__(self, dilation=1):
            super().__init__()
            self.up = nn.ConvTranspose2d(2, 3, 3, stride=2, padding=1, dilation=dilation)

        def forward(self, y):
            return self.up(y, output_size=[10, 8]) if self.up.dilation == (1, 1) else self.up(y)

    y = torch.randn(1, 2, 5, 4)
    sized = Sized().eval()
    m = Model.from_module(sized, y)
    assert m.graph["up"].shape == (1, 3, 10, 8)
    np.testing.assert_allclose(run_graph(m.deploy_graph, [y.numpy()])["up"], _outputs(sized, y)[0], rtol=0, atol=1e-5)
    with pytest.raises(UnsupportedError, match=r"'up' \(transposed convolution with dilation \(2, 2\)"):
        _ = Model.from_module(Sized(dilation=2).eval(), y).graph


def test_transposed_conv_phases_match_torch_on_every_shape():
    """conv_transpose_phases against torch's conv_transpose2d (and conv_transpose1d) over seeded random layers:
    kernels 1-5, strides 1-3, every padding and output_padding, groups, maps down to one pixel (a generator's 1x1
    latent)."""
    import torch.nn.functional as F

    from edgekit.graph import Graph, Node, lower_conv_transpose

    rng = np.random.default_rng(11)
    checked = 0
    while checked < 120:
        g = int(rng.choice([1, 1, 2, 3]))
        cin, cpg = g * int(rng.integers(1, 3)), int(rng.integers(1, 3))
        k, s = [int(v) for v in rng.integers(1, 6, 2)], [int(v) for v in rng.integers(1, 4, 2)]
        p = [int(rng.integers(0, kk)) for kk in k]
        op = [int(rng.integers(0, ss)) for ss in s]
        hw = [int(v) for v in rng.integers(1, 6, 2)]
        w = rng.standard_normal((cin, cpg, *k)).astype(np.float32)
        b = rng.standard_normal(cpg * g).astype(np.float32)
        x = torch.from_numpy(rng.standard_normal((1, cin, *hw)).astype(np.float32))
        try:
            want = F.conv_transpose2d(x, torch.from_numpy(w), torch.from_numpy(b), s, p, op, g)
        except RuntimeError:  # output_padding beyond what torch allows for these sizes
            continue
        if min(want.shape[2:]) < 1:
            continue
        attrs = {"in_channels": cin, "out_channels": cpg * g, "kernel_size": k, "stride": s, "padding": p,
                 "output_padding": op, "dilation": [1, 1], "groups": g}
        graph = Graph([Node("x", "input", [], tuple(x.shape)),
                       Node("up", "conv_transpose2d", ["x"], tuple(want.shape), attrs, {"weight": w, "bias": b})],
                      ["up"])
        low = lower_conv_transpose(graph)
        got = run_graph(low, [x.numpy()])["up"]
        np.testing.assert_allclose(got, want.numpy(), rtol=0, atol=1e-4, err_msg=str(attrs))
        checked += 1
        # the same along a sequence (ConvTranspose1d): the first axis's kernel, stride, padding
        want1 = F.conv_transpose1d(x[..., 0], torch.from_numpy(w[..., 0]), torch.from_numpy(b), s[0], p[0],
                                   op[0] if op[0] < s[0] else 0, g)
        a1 = {**attrs, "kernel_size": k[:1], "stride": s[:1], "padding": p[:1], "output_padding": op[:1],
              "dilation": [1]}
        graph1 = Graph([Node("x", "input", [], tuple(x.shape[:3])),
                        Node("up", "conv_transpose1d", ["x"], tuple(want1.shape), a1,
                             {"weight": w[..., 0].copy(), "bias": b})], ["up"])
        got1 = run_graph(lower_conv_transpose(graph1), [x.numpy()[..., 0]])["up"]
        np.testing.assert_allclose(got1, want1.numpy(), rtol=0, atol=1e-4, err_msg=str(a1))


@pytest.mark.parametrize("how, why", [
    ("corners", "bilinear with align_corners=True"), ("bicubic", "mode 'bicubic'"),
    ("fraction", "edgekit upsamples by integer factors")])
def test_upsampling_edgekit_cannot_run_is_refused_in_one_line(how, why):
    from edgekit.errors import UnsupportedError

    class Up(nn.Module):
        def forward(self, x):
            if how == "corners":
                return torch.nn.functional.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
            if how == "bicubic":
                return torch.nn.functional.interpolate(x, scale_factor=2, mode="bicubic")
            return torch.nn.functional.interpolate(x, scale_factor=1.5)

    with pytest.raises(UnsupportedError, match=why) as e:
        _ = Model.from_module(Up(), torch.randn(1, 2, 4, 4)).graph
    assert "\n" not in str(e.value)


def test_zero_pads_import_fold_and_refuse_what_edgekit_cannot_pad():
    """A symmetric zero pad before a conv folds into its padding; an asymmetric one stays a pad layer; reflection
    and non-zero constants are refused in one line naming the layer."""
    from edgekit.errors import UnsupportedError

    m = Model.from_module(_seeded(Padded, 3), torch.randn(1, 3, 12, 12))
    dep = m.deploy_graph
    assert "z" not in dep and dep["c2"].attrs["padding"] == [1, 1] and "z" in dep["c2"].fused
    assert [n.attrs["pads"] for n in dep if n.op == "pad"] == [[0, 1, 0, 1], [4, 0], [2, 0]]
    assert dep["causal"].op == "pad"

    class Reflect(nn.Module):
        def forward(self, x):
            return torch.nn.functional.pad(x, (1, 1), mode="reflect")

    with pytest.raises(UnsupportedError, match=r"padding mode 'reflect': edgekit pads with zeros") as e:
        _ = Model.from_module(Reflect(), torch.randn(1, 2, 5)).graph
    assert "\n" not in str(e.value)
    with pytest.raises(UnsupportedError, match=r"with value 1.0"):
        _ = Model.from_module(nn.Sequential(nn.ConstantPad2d(1, 1.0)), torch.randn(1, 2, 4, 4)).graph


def test_onnx_asymmetric_conv_padding_imports_as_a_pad_layer(tmp_path):
    """A Conv whose pads differ at the two ends (TensorFlow's 'same' padding of a stride-2 conv, or F.pad folded in
    by the exporter) imports as a zero pad layer of the difference and the conv with the common part."""
    rng = np.random.default_rng(5)
    weight = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    path = _onnx_file(tmp_path / "same.onnx",
                      [helper.make_node("Conv", ["x", "w"], ["y"], name="conv_tf", pads=[0, 1, 1, 2], strides=[2, 2])],
                      [weight], x_shape=(1, 3, 8, 8), y_shape=(1, 4, 4, 5))
    m = Model.load(path)
    assert [n.op for n in m.graph][1:] == ["pad", "conv2d"] and m.graph["conv_tf"].attrs["padding"] == [0, 1]
    x = rng.standard_normal((1, 3, 8, 8)).astype(np.float32)
    ort = pytest.importorskip("onnxruntime")
    want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(run_graph(m.graph, [x])["conv_tf"], want, rtol=0, atol=1e-5)
