"""Converters: gradual magnitude pruning (unstructured and structured, also recurrent layers), int8 PTQ/QAT and
``edgekit convert``. Fine-tuning runs only a few epochs here; bench/converters.py measures the real accuracies."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

from edgekit import api
from edgekit.cli import main
from edgekit.converters import prune, quantize
from edgekit.converters.prune import cubic_sparsity, prunable_weights, weight_counts
from edgekit.converters.quantize import int8_accuracy
from edgekit.errors import UsageError
from edgekit.model import Model

from conftest import make_tiny


@pytest.fixture(scope="module")
def cnn() -> Model:
    return Model.load("digits-cnn")


class TinyGRU(nn.Module):
    def __init__(self, hidden: int = 16):
        super().__init__()
        self.gru = nn.GRU(3, hidden, batch_first=True)
        self.fc = nn.Linear(hidden, 4)

    def forward(self, x):
        _, h = self.gru(x)
        return self.fc(h[-1])


def tiny_gru(n: int = 96) -> Model:
    torch.manual_seed(0)
    x = np.random.default_rng(0).standard_normal((n, 10, 3)).astype(np.float32)
    y = (x[:, :, 0].sum(1) > 0).astype(np.int64) + 2 * (x[:, -1, 1] > 0)
    return Model.from_module(TinyGRU(), torch.from_numpy(x[:1]), name="tiny-gru", calib=x, test_x=x, test_y=y,
                             train_x=x, train_y=y)


def test_cubic_schedule_follows_zhu_and_gupta():
    # s_t = s_f + (s_i - s_f)(1 - (t - t0)/(n Δt))^3, n Δt = 100, Δt = 10
    assert cubic_sparsity(0, 0.9, ramp_steps=100, frequency=10) == 0.0
    assert cubic_sparsity(50, 0.9, ramp_steps=100, frequency=10) == pytest.approx(0.9 * (1 - 0.5 ** 3))
    assert cubic_sparsity(20, 0.8, initial=0.2, ramp_steps=100, frequency=10) == \
        pytest.approx(0.8 + (0.2 - 0.8) * 0.8 ** 3)
    # held between pruning steps, final from t0 + nΔt on
    assert cubic_sparsity(57, 0.9, ramp_steps=100, frequency=10) == cubic_sparsity(50, 0.9, ramp_steps=100,
                                                                                     frequency=10)
    assert cubic_sparsity(100, 0.9, ramp_steps=100, frequency=10) == pytest.approx(0.9)
    assert cubic_sparsity(500, 0.9, ramp_steps=100, frequency=10) == pytest.approx(0.9)
    values = [cubic_sparsity(t, 0.9, ramp_steps=100, frequency=10) for t in range(0, 101, 10)]
    steps = np.diff(values)
    assert np.all(steps > 0) and np.all(np.diff(steps) < 0)  # rises fast first, then slowly


def test_masks_hold_pruned_weights_at_zero_and_become_permanent(cnn):
    seen: list[float] = []

    def train_fn(module, step_callback):
        opt = torch.optim.Adam(module.parameters(), 1e-2)
        x, y = torch.from_numpy(np.array(cnn.train_x[:128])), torch.from_numpy(np.array(cnn.train_y[:128]))
        pruned_before: dict[str, torch.Tensor] = {}
        for _ in range(30):
            opt.zero_grad()
            nn.functional.cross_entropy(module(x), y).backward()
            opt.step()
            step_callback()
            module(x)  # forward recomputes weight = weight_orig * weight_mask
            for name, m, p in prunable_weights(module):
                mask = getattr(m, p + "_mask")
                assert torch.all(getattr(m, p)[mask == 0] == 0), name
                zero = mask == 0
                if name in pruned_before:  # once pruned, always pruned
                    assert torch.all(zero[pruned_before[name]])
                pruned_before[name] = zero
            seen.append(weight_counts(module)["weight_sparsity"])

    out = prune(cnn, 0.8, scope="layer", train_fn=train_fn, steps=20, frequency=5)
    assert seen[-1] == pytest.approx(0.8, abs=0.01)
    assert seen[3] < seen[8] < seen[-1]  # gradual
    # permanent: plain parameters with the original names, no pruning hooks, the zeros still there
    assert set(out.module.state_dict()) == set(cnn.module.state_dict())
    assert all(not m._forward_pre_hooks for m in out.module.modules())
    assert out.meta["pruning"]["weight_sparsity"] == pytest.approx(0.8, abs=0.01)
    assert cnn.module.features[0][0].weight.count_nonzero() == cnn.module.features[0][0].weight.numel()  # untouched


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_achieved_sparsity_per_layer_and_overall(cnn, scope):
    out = prune(cnn, 0.9, scope=scope, epochs=1)
    facts = out.meta["pruning"]
    assert facts["weight_sparsity"] == pytest.approx(0.9, abs=0.01)
    for name, m, p in prunable_weights(out.module):
        w = getattr(m, p)
        layer = facts["layers"][name]
        assert layer["nonzero"] == int(w.count_nonzero())
        if scope == "layer":
            assert layer["sparsity"] == pytest.approx(0.9, abs=0.01), name
    if scope == "global":  # one threshold: the layers end up with different sparsities
        assert np.ptp([v["sparsity"] for v in facts["layers"].values()]) > 0.1
        assert out.accuracy() > 0.5  # one epoch only; bench/converters.py measures real accuracies


def test_gru_input_and_recurrent_matrices_are_pruned_separately():
    m = tiny_gru()
    out = prune(m, 0.75, scope="layer", epochs=2)
    layers = out.meta["pruning"]["layers"]
    assert {"gru.weight_ih_l0", "gru.weight_hh_l0", "fc.weight"} <= set(layers)
    gru = out.module.gru
    for name in ("weight_ih_l0", "weight_hh_l0"):
        w = getattr(gru, name)
        assert 1 - w.count_nonzero().item() / w.numel() == pytest.approx(0.75, abs=0.01), name
        assert layers[f"gru.{name}"]["sparsity"] == pytest.approx(0.75, abs=0.01)
    x = torch.from_numpy(m.test_x)
    with torch.no_grad():
        y = out.module(x)
        # the GRU really computes with the sparse matrices (its flat weights are the pruned parameters)
        ref = nn.GRU(3, 16, batch_first=True)
        ref.load_state_dict(gru.state_dict())
        np.testing.assert_allclose(out.module.fc(ref(x)[1][-1]).numpy(), y.numpy(), atol=1e-6)


def test_structured_pruning_gives_a_smaller_dense_model(cnn):
    out = prune(cnn, 0.75, structured=True, epochs=1)
    facts = out.meta["pruning"]
    units = {k: v["after"] for k, v in facts["units"].items()}
    c1, c2, c3 = units["features.0.0"], units["features.1.0"], units["features.3.0"]
    assert c1 < 16 and c2 < 32 and c3 < 32
    # conv (no bias) + BatchNorm γ, β per kept channel; the classifier keeps its 10 outputs
    expected = 9 * c1 + 2 * c1 + 9 * c1 * c2 + 2 * c2 + 9 * c2 * c3 + 2 * c3 + 10 * c3 + 10
    assert sum(p.numel() for p in out.module.parameters()) == expected == facts["params"]
    assert facts["nonzero_weights"] == pytest.approx(0.25 * 14288, rel=0.1)
    assert out.module.features[1][0].weight.shape == (c2, c1, 3, 3)
    assert out.predict(cnn.test_x[:7]).shape == (7, 10)
    assert out.accuracy() > 0.5
    int8 = quantize(out)  # an ordinary dense model for every converter after it
    assert int8_accuracy(int8) > 0.5


@pytest.mark.parametrize("name", ["digits-cnn", "digits-gru"])
def test_removing_masked_units_changes_nothing(name):
    m = Model.load(name)
    x = torch.from_numpy(np.array(m.test_x[:32]))
    seen = {}

    def train_fn(module, step_callback):
        step_callback()  # the one pruning step: all units masked that will be removed
        with torch.no_grad():
            seen["masked"] = module.eval()(x)

    out = prune(m, 0.8, structured=True, train_fn=train_fn, steps=1, frequency=1)
    with torch.no_grad():
        np.testing.assert_allclose(out.module(x).numpy(), seen["masked"].numpy(), atol=1e-5)


def test_structured_pruning_of_gru_hidden_units_and_blocked_layers():
    m = tiny_gru()
    out = prune(m, 0.5, structured=True, epochs=2)
    h = out.meta["pruning"]["units"]["gru"]["after"]
    gru = out.module.gru
    assert h < 16 and gru.hidden_size == h
    assert gru.weight_ih_l0.shape == (3 * h, 3) and gru.weight_hh_l0.shape == (3 * h, h)
    assert out.module.fc.weight.shape == (4, h)
    assert out.predict(m.test_x).shape == (len(m.test_x), 4)
    # a residual add and a depthwise conv keep their channels; the conv before flatten -> linear shrinks
    tiny = make_tiny(48)
    out = prune(tiny, 0.5, structured=True, epochs=1, dataset=(tiny.test_x, tiny.test_y))
    facts = out.meta["pruning"]
    assert set(facts["units"]) == {"c3"}
    assert any("'c1'" in n for n in facts["notes"])
    c3 = facts["units"]["c3"]["after"]
    assert out.module.fc.in_features == c3 * 16
    assert out.predict(tiny.test_x).shape == (48, 10)


def test_qat_int8_accuracy_at_least_ptq(cnn):
    ptq = int8_accuracy(quantize(cnn))
    qat = quantize(cnn, mode="qat", epochs=2)
    assert qat.meta["quant_mode"] == "qat" and len(qat.meta["qat"]["loss_per_epoch"]) == 2
    assert int8_accuracy(qat) >= ptq - 0.01


def test_qat_keeps_pruned_weights_at_zero(cnn):
    pruned = prune(cnn, 0.8, epochs=1)
    q = quantize(pruned, mode="qat", epochs=1)
    assert weight_counts(q.module)["nonzero_weights"] <= weight_counts(pruned.module)["nonzero_weights"]


def test_convert_round_trip_keeps_predictions_and_quant_params(cnn, tmp_path):
    path = tmp_path / "cnn.pt2"
    m = api.convert(cnn, path, prune=0.5, quantize="int8", prune_options={"epochs": 1})
    back = Model.load(path)
    x = cnn.test_x[:50]
    np.testing.assert_allclose(back.predict(x), m.predict(x), atol=1e-5)
    q, q2 = m.meta["quant"], back.meta["quant"]
    assert q2.activations == q.activations
    assert set(q2.weight_scales) == set(q.weight_scales)
    for k in q.weight_scales:
        np.testing.assert_array_equal(q2.weight_scales[k], q.weight_scales[k])
    assert back.meta["pruning"]["weight_sparsity"] == pytest.approx(0.5, abs=0.01)
    # the reloaded program's integer graph is the same: same int8 predictions
    assert set(q2.activations) == {n.name for n in back.deploy_graph.nodes}
    back = Model.load(path)
    back.test_x, back.test_y = cnn.test_x, cnn.test_y
    assert int8_accuracy(back) == int8_accuracy(m)


def test_convert_cli(tmp_path, capsys):
    out = tmp_path / "gru.pt2"
    assert main(["convert", "digits-cnn", "--prune", "0.5", "--structured", "-o", str(out)]) == 0
    assert "non-zero" in capsys.readouterr().out
    back = Model.load(out)
    assert back.meta["pruning"]["structured"]
    assert main(["convert", "digits-cnn", "--qat", "-o", str(tmp_path / "x.pt2")]) == UsageError.exit_code
    assert main(["convert", "digits-cnn", "--prune", "1.5", "-o", str(tmp_path / "x.pt2")]) == UsageError.exit_code
    assert main(["convert", "digits-cnn", "--prune", "0.5", "-o", str(out)]) == UsageError.exit_code  # exists


def test_prune_rejects_bad_arguments(cnn):
    with pytest.raises(UsageError):
        prune(cnn, 1.0)
    with pytest.raises(UsageError):
        prune(cnn, 0.5, schedule="linear")
    with pytest.raises(UsageError):
        prune(cnn, 0.5, train_fn=lambda m, cb: None)  # steps needed
