"""The model handle and the layer graph: imports are faithful, deployment passes keep the function, analysis counts."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

from edgekit.errors import DataError, ShapeError, UnsupportedError
from edgekit.graph import deployment_graph
from edgekit.graph_exec import run_graph
from edgekit.importers.torch_fx import import_module
from edgekit.model import Model

from conftest import make_tiny


def test_import_and_deploy_graph_compute_what_the_module_computes(tiny):
    x = np.random.default_rng(1).random((5, 1, 8, 8), dtype=np.float32)
    ref = tiny.module(torch.from_numpy(x)).detach().numpy()
    for g in (tiny.graph, tiny.deploy_graph):
        out = run_graph(g, [x])[g.outputs[0]]
        np.testing.assert_allclose(out, ref, atol=1e-5)
    ops = [n.op for n in tiny.deploy_graph]
    assert "batchnorm" not in ops  # folded
    c1 = tiny.deploy_graph["c1"]
    assert c1.attrs["activation"] == "relu" and "b1" in c1.fused


def test_analysis_counts_macs_and_params(tiny):
    a = tiny.analyze()
    rows = {r.name: r for r in a.layers}
    assert rows["c1"].macs == 8 * 8 * 8 * 9          # out elements x (cin/groups) x k*k
    assert rows["c2"].macs == 8 * 8 * 8 * 9          # depthwise: cin/groups = 1
    assert rows["c3"].macs == 16 * 8 * 8 * 8
    assert rows["fc"].macs == 10 * 256
    assert a.macs == sum(r.macs for r in a.layers)
    # BatchNorm folded: params are those of the deployed layers (conv weights+bias ... no BN stats).
    assert a.params == sum(p.numel() for n, p in tiny.module.named_parameters() if not n.startswith("b1"))


def test_recurrent_layers_import_with_h_n_and_last_step():
    class R(nn.Module):
        def __init__(self):
            super().__init__()
            self.gru = nn.GRU(1, 8, batch_first=True)
            self.lstm = nn.LSTM(8, 6, batch_first=True)
            self.fc = nn.Linear(8, 4)
            self.fc2 = nn.Linear(6, 4)

        def forward(self, x):
            o, h = self.gru(x)
            o2, _ = self.lstm(o)
            return self.fc(h[-1]) + self.fc2(o2[:, -1])

    m = R().eval()
    x = torch.randn(3, 12, 1)
    g = import_module(m, (x[:1],))
    out = run_graph(g, [x.numpy()])[g.outputs[0]]
    np.testing.assert_allclose(out, m(x).detach().numpy(), atol=1e-5)
    assert [n.op for n in deployment_graph(g) if n.op in ("gru", "lstm")] == ["gru", "lstm"]
    rows = {r.op: r for r in Model.from_module(m, x[:1]).analyze().layers}
    assert rows["gru"].macs == 12 * 3 * 8 * (1 + 8)
    assert rows["lstm"].macs == 12 * 4 * 6 * (8 + 6)


def test_unsupported_layers_are_all_named_at_once():
    class Bad(nn.Module):
        def __init__(self):
            super().__init__()
            self.up = nn.Upsample(scale_factor=2)
            self.pad = nn.ZeroPad2d(1)

        def forward(self, x):
            return self.pad(self.up(x))

    with pytest.raises(UnsupportedError) as e:
        Model.from_module(Bad(), torch.zeros(1, 1, 4, 4)).graph
    assert "'up'" in str(e.value) and "'pad'" in str(e.value) and "\n" not in str(e.value)


def test_data_checks_name_the_problem(tiny):
    with pytest.raises(ShapeError, match=r"\(N, 1, 8, 8\)"):
        tiny.check_input(np.zeros((3, 8, 8), np.float32), "calibration")
    with pytest.raises(DataError, match="empty"):
        tiny.check_input(np.zeros((0, 1, 8, 8), np.float32), "calibration")
    bad = np.zeros((2, 1, 8, 8), np.float32)
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(DataError, match="NaN"):
        tiny.check_input(bad, "test")
    with pytest.raises(ShapeError):
        Model.from_module(make_tiny().module, torch.zeros(1, 3, 8, 8)).graph
