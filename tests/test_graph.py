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
            self.up = nn.Upsample(scale_factor=2, mode="bicubic")  # nearest and bilinear import; bicubic does not
            self.pad = nn.ReflectionPad2d(1)  # (zero pads import)

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


def test_arena_plan_is_first_fit_without_overlaps():
    """plan_arena on random lifetimes: no two live-together buffers overlap, the live bytes are the per-step sums,
    and every buffer sits at the lowest offset free of the larger ones placed before it (greedy by size)."""
    import random

    from edgekit.memplan import Buffer, align, plan_arena

    rng = random.Random(3)
    for _ in range(200):
        bufs = []
        for i in range(rng.randint(1, 40)):
            first = rng.randint(0, 20)
            bufs.append(Buffer(f"b{i}", rng.choice([0, 1, 8, 24, 100, 1000]), first, first + rng.randint(0, 8)))
        plan = plan_arena(bufs)
        steps = max(b.last for b in bufs) + 1
        assert list(plan.live_bytes) == [sum(align(b.size) for b in bufs if b.first <= s <= b.last)
                                         for s in range(steps)]
        order = sorted(bufs, key=lambda b: (-align(b.size), b.first, b.name))
        for k, b in enumerate(order):
            if not b.size:
                continue
            size, off = align(b.size), plan.offsets[b.name]
            earlier = [(plan.offsets[o.name], plan.offsets[o.name] + align(o.size)) for o in order[:k]
                       if o.size and not (o.last < b.first or b.last < o.first)]
            assert all(off + size <= s or e <= off for s, e in earlier), (b, earlier)
            # lowest such offset: 0 or right at the end of a clashing buffer
            lower = [x for x in [0] + [e for _, e in earlier] if x < off]
            assert all(any(not (x + size <= s or e <= x) for s, e in earlier) for x in lower)
            assert off + size <= plan.arena_bytes
        assert plan.arena_bytes >= plan.lower_bound
