"""Recurrent layers (LMU, EGRU) and the recurrent converters (to_egru, to_streaming) do what users rely on.

* the LMU's discretised memory is the zero-order hold of the Legendre delay system, and it really remembers its window;
* LMU and EGRU import into edgekit's graph as one node each, whose float semantics equal the PyTorch module;
* the streaming step function, run over a sequence, gives the whole-sequence model's output (GRU, LSTM, LMU, EGRU)
  and exports with torch.export and to ONNX;
* EGRU activity sparsity counts exactly the unit-steps without an event;
* the shipped digits-lmu and digits-egru examples reach the accuracies (and sparsity) they are shipped with.
"""
from __future__ import annotations

import numpy as np
import pytest
import scipy.signal
import torch
from scipy.special import eval_sh_legendre
from torch import nn

from edgekit import Model
from edgekit.analysis import analyze
from edgekit.converters.recurrent import activity_sparsity, to_egru, to_streaming
from edgekit.graph_exec import run_graph
from edgekit.errors import UsageError
from edgekit.layers import EGRU, LMU, S4D, EventTrace, SelectiveSSM

ATOL = 1e-5


class LastStepClassifier(nn.Module):
    """A recurrent layer and a linear head on its last output step (or on every step with ``per_step``)."""

    def __init__(self, rnn: nn.Module, hidden: int, per_step: bool = False):
        super().__init__()
        self.rnn, self.head, self.per_step = rnn, nn.Linear(hidden, 10), per_step

    def forward(self, x):
        outputs, _ = self.rnn(x)
        return self.head(outputs) if self.per_step else self.head(outputs[:, -1])


class FinalStateClassifier(nn.Module):
    """A head on ``h_n`` as torch.nn.GRU returns it ([1, N, H])."""

    def __init__(self, rnn: nn.Module, hidden: int):
        super().__init__()
        self.rnn, self.head = rnn, nn.Linear(hidden, 10)

    def forward(self, x):
        return self.head(self.rnn(x)[1][0])


def _sequences(n: int = 6, steps: int = 24, features: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, steps, features), dtype=np.float32)


def _egru(features: int = 3, hidden: int = 12) -> EGRU:
    # Small thresholds and a positive n-gate bias so that units fire often, and both branches of H are exercised.
    torch.manual_seed(1)
    egru = EGRU(features, hidden, threshold=np.linspace(0.02, 0.3, hidden))
    with torch.no_grad():
        egru.bias_ih[2 * hidden:] += 0.3
    return egru


# --- LMU memory -------------------------------------------------------------------------------------------------------


def test_lmu_memory_is_the_zero_order_hold_of_the_legendre_system():
    order, theta, dt = 7, 15.0, 0.5
    a = np.zeros((order, order))
    for i in range(order):
        for j in range(order):
            a[i, j] = (2 * i + 1) * (-1.0 if i < j else (-1.0) ** (i - j + 1))
    b = np.array([(2 * i + 1) * (-1.0) ** i for i in range(order)])
    a_bar, b_bar, *_ = scipy.signal.cont2discrete((a / theta, b[:, None] / theta, np.eye(order), 0), dt, method="zoh")
    lmu = LMU(2, 5, order, theta, dt=dt)
    np.testing.assert_allclose(lmu.A_bar.numpy(), a_bar, atol=1e-6)
    np.testing.assert_allclose(lmu.B_bar.numpy(), b_bar[:, 0], atol=1e-6)


def test_lmu_memory_holds_its_window():
    # u(t − r·θ) ≈ Σ_i P_i(2r − 1) m_i(t) (shifted Legendre polynomials), for any 0 ≤ r ≤ 1.
    order, theta, steps = 12, 20.0, 200
    lmu = LMU(1, 1, order, theta)
    u = np.sin(2 * np.pi * np.arange(steps) / 50)
    m, memory = np.zeros(order), []
    for k in range(steps):
        m = lmu.A_bar.double().numpy() @ m + lmu.B_bar.double().numpy() * u[k]
        memory.append(m)
    memory = np.array(memory)
    for r in (0.0, 0.5, 1.0):
        decoded = memory @ np.array([eval_sh_legendre(i, r) for i in range(order)])
        lag = int(round(r * theta))
        assert np.abs(decoded[100:] - u[100 - lag:steps - lag]).max() < 0.1, r


# --- import into the graph --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("layer", ["lmu", "lmu-time-first", "egru"])
def test_graph_semantics_match_the_module(layer):
    torch.manual_seed(0)
    x = _sequences()
    if layer == "egru":
        module = LastStepClassifier(_egru(), 12)
    else:
        rnn = LMU(3, 10, 6, theta=12.0, batch_first=layer == "lmu")
        with torch.no_grad():  # non-zero e_h, e_m so every term of u_t is exercised
            rnn.encoder_h.normal_(0, 0.3)
            rnn.encoder_m.normal_(0, 0.3)
        module = LastStepClassifier(rnn, 10) if rnn.batch_first else _TimeFirst(rnn)
        if not rnn.batch_first:
            x = np.ascontiguousarray(x.transpose(1, 0, 2))
    model = Model.from_module(module, x[:1] if layer != "lmu-time-first" else x[:, :1])
    graph = model.graph
    op = "egru" if layer == "egru" else "lmu"
    assert [n.op for n in graph].count(op) == 1
    with torch.no_grad():
        expected = module.eval()(torch.from_numpy(x)).numpy()
    got = run_graph(graph, [x])[graph.outputs[0]]
    np.testing.assert_allclose(got, expected, atol=ATOL)
    if layer == "egru":
        outputs = module.rnn(torch.from_numpy(x))[0]
        assert 0 < float((outputs != 0).float().mean()) < 1  # both firing and silent units were compared


class _TimeFirst(nn.Module):
    def __init__(self, rnn):
        super().__init__()
        self.rnn, self.head = rnn, nn.Linear(rnn.hidden_size, 10)

    def forward(self, x):
        return self.head(self.rnn(x)[0][-1])


def test_macs_of_recurrent_layers():
    x = _sequences(1)
    lmu_model = Model.from_module(LastStepClassifier(LMU(3, 10, 6, theta=12.0), 10), x)
    egru_model = Model.from_module(LastStepClassifier(_egru(), 12), x)
    steps = x.shape[1]
    lmu_macs = next(r.macs for r in analyze(lmu_model.graph).layers if r.name == "rnn")
    egru_macs = next(r.macs for r in analyze(egru_model.graph).layers if r.name == "rnn")
    assert lmu_macs == steps * ((3 + 10 + 6) + (6 * 6 + 6) + 10 * (3 + 10 + 6))
    assert egru_macs == steps * 3 * 12 * (3 + 12)


# --- streaming --------------------------------------------------------------------------------------------------------


def _recurrent(kind: str) -> tuple[nn.Module, int]:
    torch.manual_seed(0)
    return {"gru": (nn.GRU(3, 12, batch_first=True), 12), "lstm": (nn.LSTM(3, 12, batch_first=True), 12),
            "lmu": (LMU(3, 12, 8, theta=24.0), 12), "egru": (_egru(), 12), "s4d": (S4D(3, 12, 4), 12),
            "selective": (SelectiveSSM(3, 12, 4), 12)}[kind]


@pytest.mark.parametrize("kind", ["gru", "lstm", "lmu", "egru", "s4d", "selective"])
def test_streaming_step_equals_the_sequence_model(kind):
    rnn, hidden = _recurrent(kind)
    x = _sequences()
    model = Model.from_module(LastStepClassifier(rnn, hidden), x[:1], test_x=x)
    stream = to_streaming(model)
    assert stream.max_abs_error <= ATOL
    names = {"gru": ["h"], "lstm": ["h", "c"], "lmu": ["h", "m"], "egru": ["y", "c"], "s4d": ["h", "s"],
             "selective": ["h", "s"]}[kind]
    assert list(stream.state_shapes) == [f"rnn.{n}" for n in names]
    # The user's loop: feed one step at a time, carry the state.
    state = stream.initial_state(len(x))
    with torch.no_grad():
        for t in range(x.shape[1]):
            y, *state = stream(torch.from_numpy(x[:, t]), *state)
        expected = model.module(torch.from_numpy(x))
    np.testing.assert_allclose(y.numpy(), expected.numpy(), atol=ATOL)


def test_streaming_per_step_head_and_final_state_head():
    x = _sequences()
    rnn, hidden = _recurrent("gru")
    per_step = to_streaming(Model.from_module(LastStepClassifier(rnn, hidden, per_step=True), x[:1], test_x=x))
    assert per_step.output_time_axis == 1 and per_step.max_abs_error <= ATOL
    assert tuple(per_step(torch.zeros(2, 3), *per_step.initial_state(2))[0].shape) == (2, 10)
    rnn, hidden = _recurrent("egru")
    final = to_streaming(Model.from_module(FinalStateClassifier(rnn, hidden), x[:1], test_x=x))
    assert final.output_time_axis is None and final.max_abs_error <= ATOL


def test_streaming_step_exports(tmp_path):
    x = _sequences()
    rnn, hidden = _recurrent("lmu")
    stream = to_streaming(Model.from_module(LastStepClassifier(rnn, hidden), x[:1], test_x=x))
    inputs = (torch.from_numpy(x[:1, 0]),) + tuple(torch.rand(s.shape)[None] for s in stream.states)
    with torch.no_grad():
        expected = [t.numpy() for t in stream(*inputs)]
    program = torch.export.load(str(stream.export(tmp_path / "step.pt2")))
    got = [t.detach().numpy() for t in program.module()(*inputs)]
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e, atol=ATOL)

    import onnxruntime as ort

    for kind in ("egru", "s4d", "selective"):  # the state-space layers' steps export like the RNNs'
        rnn, hidden = _recurrent(kind)
        stream = to_streaming(Model.from_module(LastStepClassifier(rnn, hidden), x[:1], test_x=x))
        inputs = (torch.from_numpy(x[:1, 0]),) + tuple(torch.rand(s.shape)[None] for s in stream.states)
        with torch.no_grad():
            expected = [t.numpy() for t in stream(*inputs)]
        session = ort.InferenceSession(str(stream.export(tmp_path / f"{kind}.onnx")))
        got = session.run(None, {i.name: t.numpy() for i, t in zip(session.get_inputs(), inputs)})
        for g, e in zip(got, expected):
            np.testing.assert_allclose(g, e, atol=ATOL)


# --- EGRU events ------------------------------------------------------------------------------------------------------


def test_activity_sparsity_counts_unit_steps_without_events():
    # Two units, update gate shut (z ≈ 0) and no recurrence, so ĉ_t = tanh(x_t) for unit 0 and tanh(0) = 0 for unit 1.
    egru = EGRU(1, 2, threshold=0.5)
    with torch.no_grad():
        for p in egru.parameters():
            p.zero_()
        egru.threshold.fill_(0.5)
        egru.bias_ih[2:4] = -100.0        # z gate → 0
        egru.weight_ih[4, 0] = 1.0        # unit 0's candidate reads x
    x = np.array([[1.0, 0.0, 1.0, 1.0, 0.0], [0.2, 0.9, 0.0, 0.0, 0.0]], np.float32)[:, :, None]
    # tanh(1) = 0.76 and tanh(0.9) = 0.72 cross 0.5; tanh(0.2) = 0.20 does not: 3 + 1 events in 2·5·2 unit-steps.
    assert activity_sparsity(LastStepClassifier(egru, 2), x) == pytest.approx(1 - 4 / 20)
    outputs = egru(torch.from_numpy(x))[0]
    np.testing.assert_allclose(outputs[0, :, 0].detach().numpy(), np.tanh([1, 0, 1, 1, 0]) * [1, 0, 1, 1, 0],
                               atol=1e-6)


def test_to_egru_copies_the_gru_and_reports():
    torch.manual_seed(0)
    x = _sequences(32)
    y = np.arange(32) % 10
    gru_model = Model.from_module(FinalStateClassifier(nn.GRU(3, 12, batch_first=True), 12), x[:1],
                                  test_x=x, test_y=y, train_x=x, train_y=y)
    copied = to_egru(gru_model, thresholds=0.05, fine_tune_epochs=0).module
    gru = gru_model.module.rnn
    for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
        torch.testing.assert_close(getattr(copied.rnn, name), getattr(gru, f"{name}_l0"), atol=0, rtol=0)
    torch.testing.assert_close(copied.rnn.threshold, torch.full((12,), 0.05))

    converted = to_egru(gru_model, thresholds=0.05, fine_tune_epochs=1, blend_epochs=0.5, batch_size=16)
    egru = converted.module.rnn
    assert type(egru) is EGRU
    info = converted.meta["egru"]
    assert info["activity_sparsity"] == pytest.approx(activity_sparsity(converted, x))
    assert info["accuracy"] == pytest.approx(converted.accuracy())
    assert info["source_accuracy"] == pytest.approx(gru_model.accuracy())
    assert float(egru.threshold.detach().min()) >= 0.01


def test_event_trace_is_a_low_pass_of_the_events():
    trace = EventTrace(2, decay=0.5)
    x = torch.tensor([[[1.0, 0.0], [0.0, 0.0], [1.0, 2.0]]])
    out, last = trace(x)
    np.testing.assert_allclose(out[0].numpy(), [[0.5, 0.0], [0.25, 0.0], [0.625, 1.0]])
    torch.testing.assert_close(last[0], out[:, -1])


def test_to_egru_trains_for_a_sparsity_budget_through_a_trace():
    """target_sparsity turns the activity weight into a multiplier that grows while the network is over budget;
    output_trace makes the head read the events' trace (also in the streaming step and the graph)."""
    torch.manual_seed(0)
    x = _sequences(48)
    y = np.arange(48) % 10
    gru_model = Model.from_module(FinalStateClassifier(nn.GRU(3, 12, batch_first=True), 12), x[:1],
                                  test_x=x, test_y=y, train_x=x, train_y=y)
    before = 1.0 - activity_sparsity(to_egru(gru_model, thresholds=0.05, fine_tune_epochs=0), x)
    m = to_egru(gru_model, thresholds=0.05, fine_tune_epochs=2, blend_epochs=0, target_sparsity=0.95,
                activity_weight=0.0, multiplier_rate=5.0, output_trace=0.8, distill=True, batch_size=16)
    info = m.meta["egru"]
    assert before > 0.05  # the start is over the budget, so the multiplier must have grown
    assert info["final_multiplier"] > 0.0 and info["target_sparsity"] == 0.95 and info["distilled"]
    assert [n.op for n in m.graph].count("trace") == 1 and info["output_trace"] == 0.8
    assert any(isinstance(mod, EventTrace) for mod in m.module.modules())
    step = to_streaming(m)  # the trace is a state of the step function, and the step equals the sequence model
    assert any(s.op == "trace" for s in step.states)
    np.testing.assert_allclose(step.run(x[:4]).numpy(), m.predict(x[:4]), atol=1e-5)
    scratch = to_egru(gru_model, fine_tune_epochs=1, init="scratch", batch_size=16)
    assert not torch.equal(scratch.module.rnn.weight_ih, gru_model.module.rnn.weight_ih_l0)
    with pytest.raises(UsageError, match="target_sparsity"):
        to_egru(gru_model, target_sparsity=1.5)
    with pytest.raises(UsageError, match="init"):
        to_egru(gru_model, init="random")


# --- shipped examples -------------------------------------------------------------------------------------------------


def test_shipped_lmu_example_reaches_its_accuracy():
    model = Model.load("digits-lmu")
    assert [n.op for n in model.graph].count("lmu") == 1
    assert model.accuracy() >= 0.90


def test_shipped_egru_example_is_sparse_and_accurate():
    gru, egru = Model.load("digits-gru"), Model.load("digits-egru")
    assert [n.op for n in egru.graph].count("egru") == 1
    assert egru.accuracy() >= gru.accuracy() - EGRU_MAX_ACCURACY_LOSS
    assert activity_sparsity(egru, egru.test_x) >= EGRU_MIN_SPARSITY


# examples/train_egru.py reaches 95.83 % (the GRU: 98.06 %) at 80.2 % activity sparsity (the goal of >= 80 %
# sparsity within 1 point is not reached); these guard against regressions.
EGRU_MAX_ACCURACY_LOSS = 0.025
EGRU_MIN_SPARSITY = 0.80
