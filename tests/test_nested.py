"""Nested operating points (edgekit.converters.nested, ``edgekit convert --budgets``): what a user relies on.

The full network computes what it computed before (BatchNorm folding and channel sorting are exact up to float
rounding, 1e-4 on the logits); every operating point is an ordinary dense model whose parameters are exact prefixes of
the full model's (a target stores the weights once); it computes what the training computed for it; a .pt2 round trip
gives the same operating points back. Fine-tuning runs one epoch on part of the training split: accuracy is
bench/budgets.py's business.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn as nn

from edgekit.cli import main
from edgekit.converters.finetune import TrainSettings
from edgekit.converters.nested import (Schedule, check_budgets, nest, operating_point, operating_points,
                                       subnetwork_forward, train_separately, width)
from edgekit.errors import DataError, UnsupportedError, UsageError
from edgekit.loaders import save_pt2
from edgekit.model import Model

from conftest import make_tiny

ONE_EPOCH = TrainSettings(epochs=1, batch_size=64)


def subset(model: Model, n: int) -> Model:
    return model.with_module(model.module, train_x=model.train_x[:n], train_y=model.train_y[:n])


@pytest.fixture(scope="module")
def cnn() -> Model:
    return Model.load("digits-cnn")


@pytest.fixture(scope="module")
def nested_cnn(cnn) -> Model:
    return nest(subset(cnn, 400), settings=ONE_EPOCH, progress=False)


@pytest.fixture(scope="module")
def nested_gru() -> Model:
    return nest(subset(Model.load("digits-gru"), 128), (0.25, 0.5, 1.0), settings=ONE_EPOCH, progress=False)


def assert_prefix(small: torch.Tensor, full: torch.Tensor, gates: int = 1) -> None:
    """``small`` is exactly the first rows/columns of ``full`` (in each of ``gates`` row blocks)."""
    if gates == 1:
        assert torch.equal(small, full[tuple(slice(0, s) for s in small.shape)])
        return
    rows, full_rows = small.shape[0] // gates, full.shape[0] // gates
    for g in range(gates):
        block = full[g * full_rows:g * full_rows + rows]
        assert torch.equal(small[g * rows:(g + 1) * rows], block[(slice(None),) + tuple(slice(0, s) for s in
                                                                                      small.shape[1:])])


def assert_points_are_prefixes(nested: Model) -> None:
    """Every operating point's parameters are the full model's prefixes — plus the point's own bias offsets where
    it has them (``private``: layer -> {"shift"}; a recurrent layer's go to ``bias_ih_l0``)."""
    full = dict(nested.module.named_parameters())
    points = operating_points(nested)
    facts = nested.meta["nested"]["operating_points"]
    assert [p.meta["operating_point"]["budget"] for p in points] == nested.meta["nested"]["budgets"]
    for p, f in zip(points, facts):
        private = f.get("private", {})
        shifted = set()
        for name, t in p.module.named_parameters():
            gates = 3 if name.startswith("gru.") and "_l0" in name else 1
            layer, pname = name.rsplit(".", 1)
            t = t.detach()
            if layer in private and pname in ("bias", "bias_ih_l0"):
                t = t - torch.tensor(private[layer]["shift"])
                assert_prefix_close(t, full[name].detach(), gates)
                shifted.add(layer)
                continue
            assert_prefix(t, full[name].detach(), gates)
        assert shifted == set(private)


def assert_prefix_close(small: torch.Tensor, full: torch.Tensor, gates: int) -> None:
    """``small`` is the first rows of ``full`` up to float rounding (in each of ``gates`` row blocks)."""
    rows, full_rows = small.shape[0] // gates, full.shape[0] // gates
    want = torch.cat([full[g * full_rows:g * full_rows + rows] for g in range(gates)])
    assert torch.allclose(small, want, atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", ["tiny", "digits-cnn", "digits-gru"])
def test_folding_and_sorting_keep_the_function(name):
    # tiny: BatchNorm, a depthwise conv in a residual add, a flatten into the classifier (conftest.TinyCNN)
    model = make_tiny() if name == "tiny" else Model.load(name)
    prepared = nest(model, (0.5, 1.0), settings=TrainSettings(epochs=0), progress=False)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in prepared.module.modules())
    x = model.test_x[:64]
    assert np.abs(prepared.predict(x) - model.predict(x)).max() < 1e-4
    # sorting really permuted something (importance order), and the full point is the model itself
    groups = prepared.meta["nested"]["groups"]
    assert groups and all(g["channels"] >= 4 for g in groups.values())
    full = operating_point(prepared, -1)
    assert np.array_equal(full.predict(x), prepared.predict(x))


def test_width_groups_follow_ties():
    tiny = nest(make_tiny(), (0.5, 1.0), settings=TrainSettings(epochs=0), progress=False).meta["nested"]
    # c1's outputs, the depthwise c2 of the residual branch and c3's inputs are one group; fc reads c3 flattened
    assert tiny["groups"]["c1"]["channels"] == 8
    assert sorted(tiny["groups"]["c1"]["members"]) == [["c1", "out"], ["c2", "depthwise"], ["c3", "in"]]
    assert tiny["layers"]["fc"] == {"kind": "linear", "out": None, "in": "c3", "block": 16, "gates": 1,
                                    "depthwise": False}
    assert tiny["operating_points"][0]["widths"] == {"c1": 4, "c3": 8}
    json.dumps(tiny)


def test_widths_are_multiples_of_four_and_never_more_than_the_channels():
    assert [width(b, 64) for b in (0.25, 0.5, 0.75, 1.0)] == [16, 32, 48, 64]
    assert width(0.5, 10) == 4 and width(0.75, 10) == 8 and width(1.0, 10) == 10
    assert width(0.05, 64) == 4 and width(0.25, 2) == 2 and width(1.0, 9) == 9


def test_operating_points_are_dense_prefixes_of_the_full_model(nested_cnn, cnn):
    facts = nested_cnn.meta["nested"]
    assert facts["budgets"] == [0.25, 0.5, 0.75, 1.0] and facts["epochs"] == 1
    json.dumps(facts)
    assert_points_are_prefixes(nested_cnn)
    points = operating_points(nested_cnn)
    small = points[0]
    assert small.name == "digits-cnn@0.25"
    assert small.meta["operating_point"] == {"index": 0, "budget": 0.25, "of": 4,
                                             "widths": facts["operating_points"][0]["widths"]}
    assert "nested" not in small.meta
    assert small.module.features[0][0].out_channels == 4 and small.module.classifier.in_features == 8
    assert small.test_x is cnn.test_x and small.train_x is not None
    params = [p["params"] for p in facts["operating_points"]]
    assert params == sorted(params) and params[-1] == nested_cnn.analyze().params
    assert all(0.0 <= p["float_accuracy"] <= 1.0 for p in facts["operating_points"])


def test_a_subnetwork_computes_what_training_computed(nested_cnn):
    x = torch.from_numpy(nested_cnn.test_x[:32])
    for i in range(3):
        with torch.no_grad():
            trained = subnetwork_forward(nested_cnn, i, x)
            deployed = operating_point(nested_cnn, i).module(x)
        assert torch.allclose(trained, deployed, atol=1e-6, rtol=0)


def test_gru_hidden_width(nested_gru):
    facts = nested_gru.meta["nested"]
    assert facts["groups"]["gru"]["channels"] == 64
    assert [p["widths"]["gru"] for p in facts["operating_points"]] == [16, 32, 64]
    small = operating_point(nested_gru, 0)
    assert small.module.gru.hidden_size == 16 and small.module.classifier.in_features == 16
    assert_points_are_prefixes(nested_gru)
    x = torch.from_numpy(nested_gru.test_x[:16])
    with torch.no_grad():
        assert torch.allclose(subnetwork_forward(nested_gru, 0, x), small.module(x), atol=1e-6, rtol=0)


def test_save_and_load_give_the_same_operating_points(nested_cnn, tmp_path):
    path = save_pt2(nested_cnn, tmp_path / "nested.pt2")
    loaded = Model.load(path)
    assert loaded.meta["nested"] == json.loads(json.dumps(nested_cnn.meta["nested"]))
    x = nested_cnn.test_x[:40]
    before, after = operating_points(nested_cnn), operating_points(loaded)
    assert len(after) == 4
    for a, b in zip(before, after):
        sa, sb = a.module.state_dict(), b.module.state_dict()
        assert set(sa) <= set(sb)
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
        assert np.abs(a.predict(x) - b.predict(x)).max() < 1e-5
        assert b.meta["operating_point"] == a.meta["operating_point"] and b.name == f"nested@{a.name.split('@')[1]}"
    # the operating points of the loaded file share their layer names (what a nested image pairs up)
    names = [{n.name for n in p.deploy_graph.nodes if n.op in ("conv2d", "linear")} for p in after]
    assert all(n == names[-1] for n in names)


def test_operating_points_of_a_cached_graph_only_model(nested_cnn, tmp_path, monkeypatch):
    # edgekit estimate reads a graph-only Model from edgekit/modelcache.py: no module, no example inputs
    from edgekit import modelcache

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    path = save_pt2(nested_cnn, tmp_path / "nested.pt2")
    modelcache.store(str(path), Model.load(path))
    cached = modelcache.load(str(path))
    assert cached is not None and cached.module is None
    points = operating_points(cached)
    assert [p.deploy_graph.param_count for p in points] == \
        [p.deploy_graph.param_count for p in operating_points(nested_cnn)]


def test_separately_trained_baseline_has_the_operating_points_widths(nested_cnn, cnn):
    alone = train_separately(subset(cnn, 200), 0.5, ONE_EPOCH, progress=False)
    point = operating_point(nested_cnn, 1)
    shapes = {k: tuple(v.shape) for k, v in alone.module.state_dict().items()}
    assert shapes == {k: tuple(v.shape) for k, v in point.module.state_dict().items()}
    assert alone.meta["separately_trained"]["epochs"] == 1 and alone.name == "digits-cnn@0.5-alone"


@pytest.mark.parametrize("budgets", [(0.5, 0.9), (0.0, 1.0), (0.5, 0.5, 1.0), (1.0,), (1.5, 1.0), ("a", 1.0),
                                     (float("nan"), 1.0), (-0.25, 1.0)])
def test_bad_budgets_are_usage_errors(cnn, budgets):
    with pytest.raises(UsageError):
        check_budgets(budgets)
    with pytest.raises(UsageError):
        nest(cnn, budgets, settings=TrainSettings(epochs=0))


def test_models_without_training_data_or_sliceable_layers_are_refused(cnn):
    no_data = cnn.with_module(cnn.module, train_x=None, train_y=None)
    with pytest.raises(DataError, match="no training data"):
        nest(no_data)
    x = torch.zeros(1, 6)
    only_output = Model.from_module(nn.Sequential(nn.Linear(6, 3)), x, name="linear")
    with pytest.raises(UnsupportedError, match="model output"):
        nest(only_output, settings=TrainSettings(epochs=0))


def test_deps_schedule_warms_up_the_full_network_then_shrinks():
    s = Schedule((0.25, 0.5, 0.75, 1.0), steps=100, warmup=0.1, shrink=0.3, ramp=0.1)
    assert s.weights(0) == {} and s.weights(9) == {}  # full network alone
    assert s.smallest_width(10) == 1.0 and s.smallest_width(40) == pytest.approx(0.25)
    joins = [s.joins(i) for i in range(3)]
    assert joins == sorted(joins, reverse=True) and joins[0] == 40  # wider points join first, the smallest last
    assert all(s.smallest_width(t) <= b < s.smallest_width(t - 1) for t, b in zip(joins, (0.25, 0.5, 0.75)))
    w = s.weights(joins[2])
    assert list(w) == [2] and 0 < w[2] < 1
    assert s.weights(99) == {0: 1.0, 1: 1.0, 2: 1.0}


def test_convert_cli_writes_a_nested_pt2(tmp_path, capsys):
    out = tmp_path / "nested.pt2"
    assert main(["convert", "digits-cnn", "--budgets", "0.5,1.0", "--epochs", "1", "-o", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "operating points" in shown and "0.5" in shown and "MACs" in shown
    loaded = Model.load(out)
    assert loaded.meta["nested"]["budgets"] == [0.5, 1.0]
    assert operating_point(loaded, 0).module(torch.zeros(2, 1, 8, 8)).shape == (2, 10)
    for bad, code in ((["digits-cnn", "--budgets", "0.5,0.9"], UsageError.exit_code),
                      (["digits-cnn", "--budgets", "half,1"], UsageError.exit_code),
                      (["mbv2-w035", "--budgets", "0.5,1"], DataError.exit_code)):
        assert main(["convert", *bad, "-o", str(tmp_path / "bad.pt2")]) == code
        assert len(capsys.readouterr().err.strip().splitlines()) == 1
        assert not (tmp_path / "bad.pt2").exists()


def test_narrower_points_train_their_own_bias_offsets(nested_cnn, cnn):
    facts = nested_cnn.meta["nested"]
    assert "own bias offsets" in facts["method"]
    assert "private" not in facts["operating_points"][-1]  # the full network has none
    layers = set(facts["layers"])
    for k, f in enumerate(facts["operating_points"][:-1]):
        private = f["private"]
        assert set(private) == layers and all(set(d) == {"shift"} for d in private.values())
        point = operating_point(nested_cnn, k)
        first = point.module.features[0][0]
        assert len(private["features.0.0"]["shift"]) == first.out_channels
        assert any(v != 0.0 for d in private.values() for v in d["shift"])  # trained, not left at 0
    # "affine": also a per-channel scale of the weight rows (the shared prefix times it), "none": nothing own
    affine = nest(subset(cnn, 200), (0.5, 1.0), settings=ONE_EPOCH, progress=False, private="affine")
    scale = torch.tensor(affine.meta["nested"]["operating_points"][0]["private"]["features.0.0"]["scale"])
    w_full = affine.module.features[0][0].weight.detach()
    w_point = operating_point(affine, 0).module.features[0][0].weight.detach()
    assert torch.allclose(w_point, w_full[:len(scale)] * scale.reshape(-1, 1, 1, 1), atol=1e-7, rtol=0)
    assert not torch.allclose(scale, torch.ones_like(scale))
    x = torch.from_numpy(cnn.test_x[:16])
    with torch.no_grad():
        assert torch.allclose(subnetwork_forward(affine, 0, x), operating_point(affine, 0).module(x), atol=1e-6,
                              rtol=0)
    plain = nest(subset(cnn, 200), (0.5, 1.0), settings=ONE_EPOCH, progress=False, private="none")
    assert "private" not in plain.meta["nested"]["operating_points"][0]
    assert_points_are_prefixes(plain)
    with pytest.raises(UsageError, match="private"):
        nest(cnn, (0.5, 1.0), settings=ONE_EPOCH, private="per-channel")
