"""1-D pooling (MaxPool1d / AvgPool1d, ONNX MaxPool over [N, C, L]) and products with constants (a layer scale
gamma * conv(x), x * c, a per-channel constant) on every target: imported, folded where they go, bit-exact on the
M7; what cannot run is refused by name."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from edgekit import api
from edgekit.errors import UnsupportedError
from edgekit.graph_exec import run_graph as _run_graph
from edgekit.model import Model


def _audio_cnn() -> nn.Module:
    """A 1-D CNN over raw samples: Conv1d, BatchNorm1d, MaxPool1d (2 and 3 taps, one padded), AvgPool1d, a
    depthwise Conv1d, a global average."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv1d(1, 16, 9, stride=2, padding=4), nn.BatchNorm1d(16), nn.ReLU(), nn.MaxPool1d(2),
                         nn.Conv1d(16, 32, 5, padding=2), nn.ReLU(), nn.MaxPool1d(3, 2, padding=1),
                         nn.Conv1d(32, 32, 3, padding=1, groups=32), nn.Conv1d(32, 32, 1), nn.ReLU(),
                         nn.AvgPool1d(2), nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(32, 8)).eval()


class _LayerScale(nn.Module):
    """gamma * conv (a layer scale: folds into the conv), relu * h (per channel after an activation: a depthwise 1x1
    conv), * tensor(0.5) (a number: folds into that conv), g2 * linear (folds into the linear)."""

    def __init__(self):
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(3, 16, 3, padding=1), nn.Conv2d(16, 16, 3, padding=1)
        self.g = nn.Parameter(torch.linspace(0.1, 1.0, 16).reshape(16, 1, 1))
        self.register_buffer("h", torch.linspace(-1.0, 2.0, 16).reshape(1, 16, 1, 1))
        self.register_buffer("halved", torch.tensor(0.5))
        self.fc = nn.Linear(16, 10)
        self.g2 = nn.Parameter(torch.linspace(0.5, 1.5, 10))

    def forward(self, x):
        a = F.relu(self.c1(x))
        b = F.relu(a + self.g * self.c2(a)) * self.h * self.halved
        return self.g2 * self.fc(F.adaptive_avg_pool2d(b, 1).flatten(1))


def run_graph(graph, x: np.ndarray) -> np.ndarray:
    """The graph's one output on input ``x``."""
    return _run_graph(graph, [x])[graph.outputs[0]]


def _model(module: nn.Module, shape, name: str) -> Model:
    x = np.random.default_rng(0).standard_normal((4,) + shape).astype(np.float32)
    module.train()
    with torch.no_grad():  # BatchNorm statistics of the data
        module(torch.from_numpy(x))
    module.eval()
    return Model.from_module(module, torch.from_numpy(x[:1]), name=name, calib=x, test_x=x[:2])


def test_1d_pools_import_as_views_of_2d_pools():
    m = _model(_audio_cnn(), (1, 256), "audio-cnn")
    pools = [n for n in m.graph.nodes if n.op in ("maxpool2d", "avgpool2d")]
    assert [n.attrs["kernel_size"] for n in pools] == [[2, 1], [3, 1], [2, 1]]
    assert all(m.graph[n.inputs[0]].op == "reshape" for n in pools)
    x = m.test_x[:1]
    want = m.module(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(run_graph(m.deploy_graph, x), want, rtol=1e-4, atol=1e-5)


def test_1d_pools_run_bit_exact_on_the_m7_without_copies(tmp_path):
    m = _model(_audio_cnn(), (1, 256), "audio-cnn")
    api.compile(m, "cortex-m7", tmp_path / "m7", quantize="int8")
    meas = api.profile(tmp_path / "m7").measured
    assert meas["outputs_match"]
    layers = {entry["name"]: entry for entry in meas["layers"]}
    # the pools read and write the channels-last maps the Conv1d layers use: no transpose or gather around them
    assert layers["3"]["kernels"] == ["ek_pool"] and layers["6"]["kernels"] == ["ek_pool"]
    # the one-row max loop: a 2-tap window of 16 channels at under 5 instructions an output (15.5 on the 2-D loops)
    assert layers["3"]["instructions"] < 5 * 16 * 64


def test_onnx_1d_pooling_imports(tmp_path):
    module = _audio_cnn()
    path = tmp_path / "audio.onnx"
    x = torch.randn(1, 1, 256)
    torch.onnx.export(module, x, str(path), opset_version=17, dynamo=False)
    m = Model.load(path)
    assert sum(1 for n in m.graph.nodes if n.op == "maxpool2d") == 2
    np.testing.assert_allclose(run_graph(m.deploy_graph, x.numpy()), module(x).detach().numpy(), rtol=1e-4,
                               atol=1e-5)


def test_constant_products_fold_and_build_bit_exact(tmp_path):
    m = _model(_LayerScale(), (3, 12, 12), "layer-scale")
    assert sum(1 for n in m.graph.nodes if n.op == "mul_const") == 4
    g = m.deploy_graph
    assert not [n.name for n in g.nodes if n.op in ("mul_const", "scale", "mul")]
    assert "mul" in g["c2"].fused and "mul_3" in g["fc"].fused  # gamma into c2, g2 into fc
    assert g["mul_1"].op == "conv2d" and g["mul_1"].attrs["groups"] == 16 and "mul_2" in g["mul_1"].fused
    x = m.test_x[:1]
    np.testing.assert_allclose(run_graph(g, x), m.module(torch.from_numpy(x)).detach().numpy(), rtol=1e-4,
                               atol=1e-5)
    api.compile(m, "cortex-m7", tmp_path / "m7", quantize="int8")
    assert api.profile(tmp_path / "m7").measured["outputs_match"]


def test_a_constant_that_is_not_per_channel_is_refused_by_name(tmp_path):
    class Spatial(nn.Module):
        def __init__(self):
            super().__init__()
            self.c = nn.Conv2d(3, 8, 3, padding=1)
            self.register_buffer("mask", torch.linspace(0.0, 1.0, 64).reshape(1, 1, 8, 8))

        def forward(self, x):
            return F.relu(self.c(x)) * self.mask

    m = _model(Spatial(), (3, 8, 8), "spatial-mask")
    assert [n.op for n in m.deploy_graph.nodes if n.name == "mul"] == ["mul_const"]
    with pytest.raises(UnsupportedError, match="'mul'"):
        api.compile(m, "cortex-m7", tmp_path / "m7", quantize="int8")
    assert not (tmp_path / "m7").exists()


def test_a_conv1d_stream_with_a_1d_max_pool(tmp_path):
    """The pool's two views keep the time axis: the step program caches the pool's window like a conv's."""
    torch.manual_seed(0)
    module = nn.Sequential(nn.Conv1d(8, 16, 3), nn.ReLU(), nn.MaxPool1d(2), nn.Conv1d(16, 16, 3), nn.ReLU(),
                           nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(16, 4)).eval()
    m = _model(module, (8, 40), "stream-pool1d")
    art = api.compile(m, "cortex-m7", tmp_path / "m7", quantize="int8", streaming=True)
    assert art.report["build"]["streaming"]["steps_per_sequence"] == 40
    assert api.profile(tmp_path / "m7").measured["outputs_match"]


def test_a_number_after_a_pool_becomes_a_depthwise_conv(tmp_path):
    """x * 0.25 after a max pool (nothing to fold into): a depthwise 1x1 conv every target runs."""
    torch.manual_seed(0)
    module = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)).eval()

    class Scaled(nn.Module):
        def __init__(self):
            super().__init__()
            self.body, self.fc = module, nn.Linear(8 * 4 * 4, 5)

        def forward(self, x):
            return self.fc((self.body(x) * 0.25).flatten(1))

    m = _model(Scaled(), (3, 8, 8), "scaled-pool")
    g = m.deploy_graph
    assert [n.op for n in g.nodes if n.name == "mul"] == ["conv2d"] and g["mul"].attrs["groups"] == 8
    api.compile(m, "cortex-m7", tmp_path / "m7", quantize="int8")
    assert api.profile(tmp_path / "m7").measured["outputs_match"]
