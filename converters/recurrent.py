"""Recurrent-model converters: a GRU made event-based (EGRU), and any supported RNN classifier as a streaming step.

Where it sits: converters/ (Model -> Model, and Model -> StreamingModel). Nothing here builds for a target; the
Cortex-M and phone targets take the streaming step function as the thing a device runs once per input sample.

* :func:`to_egru` swaps every ``nn.GRU`` of a trained model for an :class:`edgekit.layers.EGRU` with the same weights
  and per-unit thresholds, fine-tunes it with the EGRU's pseudo-derivative and an activity regulariser, and records
  accuracy and activity sparsity in ``meta['egru']``.
* :func:`to_streaming` rewrites a model over whole sequences (``nn.GRU``, ``nn.LSTM``, ``LMU`` or ``EGRU`` followed by
  a head on the last hidden state, or on every step) into ``step(x_t, *state) -> (y_t, *new_state)``: the state is an
  explicit input and output, as in cache-based streaming inference, so a device keeps it between samples. The step
  function is checked against the sequence model and exports with ``torch.export`` (``.pt2``) and to ``.onnx``.
"""
from __future__ import annotations

import copy
import math
import operator
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.fx import GraphModule, Tracer

from edgekit.errors import DataError, UnsupportedError, UsageError
from edgekit.layers import EGRU, LMU, S4D, EventTrace, SelectiveSSM
from edgekit.model import Model

RECURRENT_LAYERS = (nn.GRU, nn.LSTM, LMU, EGRU, S4D, SelectiveSSM, EventTrace)
DISTILL_TEMPERATURE = 2.0
STREAMING_ATOL = 1e-5

# ---------------------------------------------------------------------------------------------------------------------
# EGRU: activity sparsity and the GRU -> EGRU conversion


def _egru_layers(module: nn.Module) -> list[tuple[str, EGRU]]:
    return [(name, m) for name, m in module.named_modules() if isinstance(m, EGRU)]


def event_counts(module: nn.Module, x: np.ndarray, batch_size: int = 256) -> tuple[int, int]:
    """(events, unit-steps) of every EGRU layer in ``module`` over the sequences ``x``.

    An event is a non-zero output (an EGRU's events carry a value above a positive threshold); unit-steps count every
    (sequence, step, unit) of every EGRU layer, i.e. every place an event could have been.
    """
    layers = _egru_layers(module)
    if not layers:
        raise UsageError(f"model '{type(module).__name__}' has no EGRU layer to count events of; convert it with "
                         "edgekit.converters.recurrent.to_egru first")
    counts = [0, 0]

    def count(_module, _inputs, outputs):
        y = outputs[0]
        counts[0] += int(torch.count_nonzero(y))
        counts[1] += y.numel()

    hooks = [m.register_forward_hook(count) for _, m in layers]
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            for i in range(0, len(x), batch_size):
                module(torch.from_numpy(np.ascontiguousarray(x[i:i + batch_size], np.float32)))
    finally:
        for h in hooks:
            h.remove()
        module.train(was_training)
    return counts[0], counts[1]


def activity_sparsity(module: "nn.Module | Model", x: np.ndarray, batch_size: int = 256) -> float:
    """Fraction of unit-steps without an event (zero output) of the EGRU layers over the sequences ``x``:
    1 − events / unit-steps."""
    module = module.module if isinstance(module, Model) else module
    events, slots = event_counts(module, x, batch_size)
    return 1.0 - events / slots


def _accuracy(module: nn.Module, x: np.ndarray | None, y: np.ndarray | None, batch_size: int = 256) -> float | None:
    if x is None or y is None:
        return None
    was_training = module.training
    module.eval()
    with torch.no_grad():
        logits = torch.cat([module(torch.from_numpy(np.ascontiguousarray(x[i:i + batch_size], np.float32)))
                            for i in range(0, len(x), batch_size)])
    module.train(was_training)
    return float((logits.argmax(-1).numpy() == y).mean())


class _BlendedEGRU(EGRU):
    """An EGRU that, while fine-tuning, moves from the GRU it was made from to the EGRU: with ``blend`` = b, the
    threshold slides from −1 to ϑ and the reset grows from 0 to ϑ,

        e_t = H(ĉ_t − (b·ϑ − (1 − b)))      y_t = ĉ_t ⊙ e_t      c_t = ĉ_t − b·ϑ ⊙ e_t

    b = 0 is exactly the GRU (ĉ > −1 always fires, nothing is reset: y = c = h), b = 1 exactly the EGRU. Every
    intermediate point is an event-based network whose events the regulariser counts, and ramping b up lets
    fine-tuning follow the network from the trained GRU instead of restarting from the EGRU's first, much worse point
    (copying alone drops every negative GRU state)."""

    blend = 1.0

    def _step(self, gi, y, c):
        if self.blend >= 1.0:
            return super()._step(gi, y, c)
        b = self.blend
        c_hat = self._gru_update(gi, y, c)
        e = self._event(c_hat - (b * self.threshold - (1.0 - b)))
        return c_hat * e, c_hat - b * self.threshold * e, e


def _swap_grus(module: nn.Module, thresholds, cls: type = EGRU, **egru_options) -> list[str]:
    """Replace every nn.GRU in ``module`` (in place) by an EGRU with its weights; returns their names."""
    swapped = []
    for name, child in list(module.named_modules()):
        if not isinstance(child, nn.GRU):
            continue
        if child.num_layers != 1 or child.bidirectional:
            raise UnsupportedError(f"layer '{name}': to_egru converts single-layer unidirectional GRUs (this one has "
                                   f"num_layers={child.num_layers}, bidirectional={child.bidirectional}); stack "
                                   "single-layer nn.GRU modules instead")
        thr = np.asarray(thresholds, np.float32)
        if thr.ndim and thr.shape != (child.hidden_size,):
            raise UsageError(f"layer '{name}': thresholds has shape {thr.shape}; give one float or "
                             f"{child.hidden_size} values (one per unit)")
        egru = cls.from_gru(child, thr, **egru_options)
        parent_name, _, attr = name.rpartition(".")
        setattr(module.get_submodule(parent_name) if parent_name else module, attr, egru)
        swapped.append(name)
    return swapped


def _with_traces(module: nn.Module, layers: list[str], decay: float) -> nn.Module:
    """``module`` as a GraphModule in which whatever read each EGRU in ``layers`` reads an EventTrace of its events
    (the trace returns (outputs, last) like the EGRU, so the head is unchanged)."""
    tracer = _RecurrentLeafTracer()
    graph = tracer.trace(module)
    gm = GraphModule(module, graph, type(module).__name__)
    for layer in layers:
        nodes = [n for n in graph.nodes if n.op == "call_module" and n.target == layer]
        if len(nodes) != 1:
            raise UnsupportedError(f"layer '{layer}' is called {len(nodes)} times in the model; output_trace needs "
                                   "each EGRU called once")
        node = nodes[0]
        egru = gm.get_submodule(layer)
        name = f"{layer.replace('.', '_')}_trace"
        gm.add_submodule(name, EventTrace(egru.hidden_size, decay, egru.batch_first))
        with graph.inserting_after(node):
            events = graph.call_function(operator.getitem, (node, 0))
        with graph.inserting_after(events):
            trace = graph.call_module(name, (events,))
        node.replace_all_uses_with(trace)
        events.replace_input_with(trace, node)  # the one use that must stay on the EGRU
    gm.recompile()
    return gm


def _unblend(module: nn.Module) -> None:
    """Replace every _BlendedEGRU in ``module`` (in place) by a plain EGRU with the same parameters."""
    for name, child in list(module.named_modules()):
        if isinstance(child, _BlendedEGRU):
            plain = EGRU(child.input_size, child.hidden_size, child.threshold.detach(), batch_first=child.batch_first,
                         bias=child.bias_ih is not None, pseudo_derivative_width=child.pseudo_derivative_width,
                         dampening=child.dampening, trainable_threshold=child.threshold.requires_grad)
            plain.load_state_dict(child.state_dict())
            parent_name, _, attr = name.rpartition(".")
            setattr(module.get_submodule(parent_name) if parent_name else module, attr, plain)


def to_egru(model: Model, thresholds: float | Sequence[float] | np.ndarray = 0.1, fine_tune_epochs: int = 40,
            learning_rate: float = 1e-2, batch_size: int = 64, activity_weight: float = 3.0,
            blend_epochs: float = 15.0, train_thresholds: bool = True, min_threshold: float = 0.01,
            pseudo_derivative_width: float = 0.5, dampening: float = 0.3, clip_grad_norm: float = 1.0,
            augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
            seed: int = 0, log: Callable[[str], None] | None = None, *, target_sparsity: float | None = None,
            distill: bool = False, init: str = "gru", multiplier_rate: float = 1.0,
            output_trace: float | None = None) -> Model:
    """A trained GRU model as an event-based GRU model (Subramoney et al., ICLR 2023), fine-tuned for sparse activity.

    Every single-layer ``nn.GRU`` in ``model.module`` becomes an :class:`~edgekit.layers.EGRU` with the same weights and
    ``thresholds`` (one float, or one per unit). The EGRU is then fine-tuned for ``fine_tune_epochs`` on
    ``model.train_x``/``train_y`` (AdamW, cosine-decayed ``learning_rate``) with the loss

        cross-entropy + activity_weight · (mean event rate of the EGRU layers)

    where events get gradients through the pseudo-derivative; with ``train_thresholds`` the thresholds are trained too
    (kept ≥ ``min_threshold``).
    With ``blend_epochs`` > 0 the layer starts as the GRU and becomes the EGRU linearly over that many epochs (see
    :class:`_BlendedEGRU`), which keeps fine-tuning near the trained GRU; the result is always a plain EGRU. (Copying
    the weights alone is not enough: the events drop every negative GRU state, and digits-gru falls to chance.)
    ``activity_weight`` trades accuracy for sparsity; see examples/train_egru.py for the examples' settings.
    ``augment(x_batch, generator)`` may transform each training batch (e.g. random shifts). Deterministic for a
    ``seed`` on one thread.

    Training for a sparsity goal (the EGRU paper trains for sparsity; these options make it a target, not a knob):

    * ``target_sparsity`` (e.g. 0.85): the activity weight becomes a Lagrange multiplier λ of the constraint
      "event rate ≤ 1 − target_sparsity" and is adapted by dual ascent after every optimizer step once the blend is
      over, λ ← max(0, λ + ``multiplier_rate`` · (rate − (1 − target_sparsity))), starting from ``activity_weight``.
      The loss is then CE + λ · max(0, rate − (1 − target)): units are pushed to silence only while the network is
      above the budget, so the accuracy lost is what the budget costs rather than what a fixed weight happens to cost.
    * ``distill``: knowledge distillation from the source model (the GRU): loss += T² · KL(softmax(z_GRU / T) ‖
      softmax(z_EGRU / T)), T = 2, on the same (augmented) batch.
    * ``output_trace`` (e.g. 0.9): what read the GRU (the head on its last hidden state) reads an
      :class:`~edgekit.layers.EventTrace` of the EGRU's events instead, tr_t = α·tr_{t−1} + (1 − α)·y_t — the output
      trace of the EGRU authors' implementation. A head on the last step's events sees only the units that fire at
      that step; on the trace it sees the recent events of every unit, which is what keeps a classifier accurate when
      most units are silent.
    * ``init="scratch"``: train from scratch instead of fine-tuning — every parameter of the model is initialised
      anew (PyTorch's defaults; thresholds at ``thresholds``), there is no blend from the GRU and ``blend_epochs``
      is a warm-up before the sparsity budget applies; with ``distill`` the trained GRU still teaches.
      ``init="gru"`` (default) fine-tunes from the GRU's weights.

    ``meta['egru']`` of the returned model holds the source GRU's test accuracy, the EGRU's before and after
    fine-tuning, and the activity sparsity on the test sequences (fraction of unit-steps without an event).
    """
    if model.module is None:
        raise UsageError(f"model '{model.name}' has no PyTorch module (loaded from .onnx?); to_egru needs the "
                         "trained torch model")
    if fine_tune_epochs > 0 and (model.train_x is None or model.train_y is None):
        raise DataError(f"model '{model.name}' carries no training data; give train_x/train_y to fine-tune, or pass "
                        "fine_tune_epochs=0 to convert without fine-tuning")
    if init not in ("gru", "scratch"):
        raise UsageError(f"init={init!r}: choose 'gru' (fine-tune from the GRU's weights) or 'scratch'")
    if target_sparsity is not None and not 0.0 < target_sparsity < 1.0:
        raise UsageError(f"target_sparsity={target_sparsity}: give the fraction of unit-steps without an event, "
                         "strictly between 0 and 1 (e.g. 0.85)")
    if init == "scratch" and fine_tune_epochs <= 0:
        raise UsageError("init='scratch' trains the EGRU from new weights: give fine_tune_epochs > 0")
    log = log or (lambda message: None)
    torch.manual_seed(seed)
    module = copy.deepcopy(model.module).eval()
    blends = init == "gru" and fine_tune_epochs > 0 and blend_epochs > 0
    swapped = _swap_grus(module, thresholds, cls=_BlendedEGRU if blends else EGRU,
                         pseudo_derivative_width=pseudo_derivative_width, dampening=dampening,
                         trainable_threshold=train_thresholds)
    if not swapped:
        raise UsageError(f"model '{model.name}' has no nn.GRU layer to convert to an EGRU")
    layers = [m for _, m in _egru_layers(module)]
    if output_trace is not None:
        module = _with_traces(module, swapped, float(output_trace))
    if init == "scratch":
        with torch.no_grad():
            for sub in module.modules():
                if hasattr(sub, "reset_parameters"):
                    sub.reset_parameters()
    teacher = copy.deepcopy(model.module).eval() if distill and fine_tune_epochs > 0 else None
    multiplier = float(activity_weight)
    budget = None if target_sparsity is None else 1.0 - float(target_sparsity)

    def sparsity(x):
        return None if x is None else activity_sparsity(module, x)

    source_accuracy = _accuracy(model.module, model.test_x, model.test_y)
    accuracy_before, sparsity_before = _accuracy(module, model.test_x, model.test_y), sparsity(model.test_x)
    log(f"GRU test accuracy {source_accuracy}; as EGRU before fine-tuning: accuracy {accuracy_before}, "
        f"activity sparsity {sparsity_before}")

    started = time.monotonic()
    if fine_tune_epochs > 0:
        inputs = torch.from_numpy(np.ascontiguousarray(model.train_x, np.float32))
        targets = torch.from_numpy(np.asarray(model.train_y, np.int64))
        optimizer = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=learning_rate,
                                      weight_decay=0.0)
        steps = fine_tune_epochs * math.ceil(len(inputs) / batch_size)
        warmup_steps = blend_epochs * math.ceil(len(inputs) / batch_size)  # the blend, or scratch's warm-up
        blend_steps = warmup_steps if blends else 0
        step = 0
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
        shuffle = torch.Generator().manual_seed(seed)
        for layer in layers:
            layer.record_events = True
        try:
            for epoch in range(1, fine_tune_epochs + 1):
                module.train()
                total_loss = total_rate = 0.0
                for batch in torch.randperm(len(inputs), generator=shuffle).split(batch_size):
                    x = inputs[batch] if augment is None else augment(inputs[batch], shuffle)
                    for layer in layers:
                        layer.blend = min(1.0, step / blend_steps) if blend_steps > 0 else 1.0
                    step += 1
                    optimizer.zero_grad()
                    logits = module(x)
                    rate = torch.stack([layer.last_events.mean() for layer in layers]).mean()
                    loss = F.cross_entropy(logits, targets[batch])
                    if budget is None:
                        loss = loss + activity_weight * rate
                    else:
                        loss = loss + multiplier * torch.relu(rate - budget)
                    if teacher is not None:
                        with torch.no_grad():
                            soft = torch.softmax(teacher(x) / DISTILL_TEMPERATURE, -1)
                        loss = loss + DISTILL_TEMPERATURE ** 2 * F.kl_div(
                            torch.log_softmax(logits / DISTILL_TEMPERATURE, -1), soft, reduction="batchmean")
                    loss.backward()
                    nn.utils.clip_grad_norm_(module.parameters(), clip_grad_norm)
                    optimizer.step()
                    schedule.step()
                    if budget is not None and step >= warmup_steps:
                        multiplier = max(0.0, multiplier + multiplier_rate * (rate.item() - budget))
                    with torch.no_grad():
                        for layer in layers:
                            layer.threshold.clamp_(min=min_threshold)
                    total_loss += loss.item() * len(batch)
                    total_rate += rate.item() * len(batch)
                if epoch % 5 == 0 or epoch == fine_tune_epochs:
                    log(f"  epoch {epoch:3d}/{fine_tune_epochs}  loss {total_loss / len(inputs):.4f}  "
                        f"event rate {total_rate / len(inputs):.3f}  λ {multiplier:.2f}  test accuracy "
                        f"{_accuracy(module, model.test_x, model.test_y)}  ({time.monotonic() - started:.0f} s)")
        finally:
            for layer in layers:
                layer.record_events = False
                layer.last_events = None
                layer.blend = 1.0
        _unblend(module)
        layers = [m for _, m in _egru_layers(module)]
    module.eval()

    accuracy, sparsity_after = _accuracy(module, model.test_x, model.test_y), sparsity(model.test_x)
    info = {
        "layers": swapped,
        "initial_thresholds": np.asarray(thresholds, np.float32).tolist(),
        "mean_threshold": float(torch.cat([m.threshold.detach() for m in layers]).mean()),
        "fine_tune_epochs": fine_tune_epochs, "blend_epochs": blend_epochs, "learning_rate": learning_rate,
        "activity_weight": activity_weight, "target_sparsity": target_sparsity, "final_multiplier": multiplier,
        "distilled": teacher is not None, "init": init, "output_trace": output_trace,
        "pseudo_derivative": {"width": pseudo_derivative_width, "dampening": dampening},
        "source_accuracy": source_accuracy,
        "accuracy_before_fine_tune": accuracy_before, "activity_sparsity_before_fine_tune": sparsity_before,
        "accuracy": accuracy, "activity_sparsity": sparsity_after,
        "note": "activity_sparsity = fraction of (sequence, step, unit) of the EGRU layers without an event, over "
                "the test sequences",
    }
    log(f"EGRU after fine-tuning: test accuracy {accuracy}, activity sparsity {sparsity_after}")
    return model.with_module(module, name=f"{model.name}-egru", meta={"egru": info})


# ---------------------------------------------------------------------------------------------------------------------
# Streaming: the one-step function with explicit state


@dataclass(frozen=True)
class StateSpec:
    """One state tensor a streaming step reads and writes: ``layer``'s ``kind`` state, ``shape`` per sequence."""

    name: str
    layer: str
    op: str
    kind: str
    shape: tuple[int, ...]


def _state_kinds(rnn: nn.Module) -> tuple[str, tuple[str, ...], int, int]:
    """(edgekit op, state kinds, state size, time axis of its input) of a supported recurrent layer."""
    if isinstance(rnn, (nn.GRU, nn.LSTM)):
        if rnn.num_layers != 1 or rnn.bidirectional or getattr(rnn, "proj_size", 0):
            raise UnsupportedError(f"{type(rnn).__name__} with num_layers={rnn.num_layers}, bidirectional="
                                   f"{rnn.bidirectional} (streaming needs single-layer, unidirectional layers; stack "
                                   "single-layer modules)")
        return ("gru", ("h",), rnn.hidden_size, 1 if rnn.batch_first else 0) if isinstance(rnn, nn.GRU) else \
            ("lstm", ("h", "c"), rnn.hidden_size, 1 if rnn.batch_first else 0)
    if isinstance(rnn, LMU):
        return "lmu", ("h", "m"), -1, 1 if rnn.batch_first else 0
    if isinstance(rnn, EGRU):
        return "egru", ("y", "c"), rnn.hidden_size, 1 if rnn.batch_first else 0
    if isinstance(rnn, EventTrace):
        return "trace", ("h",), rnn.hidden_size, 1 if rnn.batch_first else 0
    if isinstance(rnn, (S4D, SelectiveSSM)):
        return ("s4d" if isinstance(rnn, S4D) else "selective_ssm"), ("h", "s"), -1, 1 if rnn.batch_first else 0
    raise UnsupportedError(f"{type(rnn).__name__} is not a recurrent layer edgekit can stream")


class _StepCell(nn.Module):
    """One time step of a recurrent layer, returning what the layer's ``forward`` returns for a one-step sequence
    (so the model's head reads it unchanged) together with the new state tensors.

    GRU:  r, z, n = σ(..), σ(..), tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn));  h' = (1 − z) ⊙ n + z ⊙ h
    LSTM: i, f, g, o = σ(..), σ(..), tanh(..), σ(..);  c' = f ⊙ c + i ⊙ g;  h' = o ⊙ tanh(c')
    LMU, EGRU: their own ``step`` (equations in edgekit/layers).
    """

    def __init__(self, rnn: nn.Module):
        super().__init__()
        self.rnn = rnn
        self.op, _, _, self.time_axis = _state_kinds(rnn)

    def forward(self, x: torch.Tensor, *state: torch.Tensor):
        rnn, ax = self.rnn, self.time_axis
        x_t = x.select(ax, 0)
        if self.op in ("gru", "lstm"):
            gi = F.linear(x_t, rnn.weight_ih_l0, rnn.bias_ih_l0 if rnn.bias else None)
            gh = F.linear(state[0], rnn.weight_hh_l0, rnn.bias_hh_l0 if rnn.bias else None)
            if self.op == "gru":
                i_r, i_z, i_n = gi.chunk(3, 1)
                h_r, h_z, h_n = gh.chunk(3, 1)
                r, z = torch.sigmoid(i_r + h_r), torch.sigmoid(i_z + h_z)
                n = torch.tanh(i_n + r * h_n)
                h = (1 - z) * n + z * state[0]
                return (h.unsqueeze(ax), h.unsqueeze(0)), (h,)
            i, f, g, o = (gi + gh).chunk(4, 1)
            c = torch.sigmoid(f) * state[1] + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            return (h.unsqueeze(ax), (h.unsqueeze(0), c.unsqueeze(0))), (h, c)
        out, new = rnn.step(x_t, tuple(state))
        if self.op in ("lmu", "s4d", "selective_ssm"):
            return (out.unsqueeze(ax), (new[0].unsqueeze(0), new[1].unsqueeze(0))), tuple(new)
        return (out.unsqueeze(ax), out.unsqueeze(0)), tuple(new)  # EGRU: like nn.GRU, (outputs, y_n)


class _RecurrentLeafTracer(Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, RECURRENT_LAYERS) or super().is_leaf_module(m, qualname)


class StreamingModel(nn.Module):
    """A sequence model as its one-step function: ``forward(x_t, *state) -> (y_t, *new_state)``.

    ``x_t`` is one step of the model's input ([N, features]); ``state`` are the tensors listed in :attr:`states`
    (each [N, *shape]), zeros at the start of a sequence (:meth:`initial_state`). ``y_t`` is what the model outputs
    after that step: for a head on the last hidden state, the prediction for the sequence so far (the sequence model's
    output after its last step); for a per-step head, this step's output (without the time axis).
    """

    def __init__(self, step_graph: GraphModule, states: list[StateSpec], input_features: tuple[int, ...],
                 input_time_axis: int, output_time_axis: int | None, name: str):
        super().__init__()
        self.step_graph = step_graph
        self.input_features = tuple(input_features)
        self.states = states
        self.input_time_axis = input_time_axis
        self.output_time_axis = output_time_axis
        self.name = name
        self.max_abs_error: float | None = None

    @property
    def state_shapes(self) -> dict[str, tuple[int, ...]]:
        """State name -> shape per sequence (without the batch axis), in argument order."""
        return {s.name: s.shape for s in self.states}

    @property
    def state_bytes(self) -> int:
        """Float32 bytes of state one sequence keeps between steps."""
        return sum(4 * int(np.prod(s.shape)) for s in self.states)

    def initial_state(self, batch_size: int = 1) -> tuple[torch.Tensor, ...]:
        return tuple(torch.zeros((batch_size,) + s.shape) for s in self.states)

    def forward(self, x_t: torch.Tensor, *state: torch.Tensor):
        y, *new_state = self.step_graph(x_t.unsqueeze(self.input_time_axis), *state)
        if self.output_time_axis is not None:
            y = y.squeeze(self.output_time_axis)
        return (y, *new_state)

    def run(self, x: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Step through whole sequences ``x`` (the sequence model's input layout) from the zero state; returns the last
        step's output, or every step's output stacked on the time axis for a per-step head."""
        x = torch.as_tensor(np.asarray(x, np.float32)) if isinstance(x, np.ndarray) else x
        ax = self.input_time_axis
        state = self.initial_state(x.shape[1 - ax])
        outputs = []
        with torch.no_grad():
            for t in range(x.shape[ax]):
                y, *state = self(x.select(ax, t), *state)
                outputs.append(y)
        return outputs[-1] if self.output_time_axis is None else torch.stack(outputs, self.output_time_axis)

    def example_inputs(self, batch_size: int = 1) -> tuple[torch.Tensor, ...]:
        return (torch.zeros((batch_size,) + self.input_features),) + self.initial_state(batch_size)

    def export(self, path: str | Path) -> Path:
        """Write the step function to ``path``: ``.pt2`` (torch.export) or ``.onnx`` (ONNX, weights inline). Inputs are
        ``x_t`` and the states in :attr:`states` order; outputs ``y_t`` and the new states in the same order."""
        return export_step(self, path, "x_t", "y_t", [s.name.replace(".", "_") for s in self.states])


def export_step(step: nn.Module, path: str | Path, input_name: str, output_name: str, states: list[str],
                extra_inputs: tuple[str, ...] = ()) -> Path:
    """Write a streaming step module (``forward(x, *state, *extra) -> (y, *new_state)``, ``example_inputs()``) to
    ``path``: ``.pt2`` (torch.export) or ``.onnx`` (weights inline; the new states named ``<state>_new``)."""
    path = Path(path)
    step.eval()
    example = step.example_inputs()
    if path.suffix == ".pt2":
        torch.export.save(torch.export.export(step, example), str(path))
    elif path.suffix == ".onnx":
        torch.onnx.export(step, example, str(path), dynamo=True, external_data=False, verbose=False,
                          input_names=[input_name] + states + list(extra_inputs),
                          output_names=[output_name] + [f"{n}_new" for n in states])
    else:
        raise UsageError(f"cannot export a streaming step to '{path.name}'; use a .pt2 or .onnx file name")
    return path


def _streaming_graph(module: nn.Module) -> tuple[GraphModule, list[StateSpec], int]:
    """Trace ``module`` and replace each recurrent layer by its one-step cell with state placeholders and outputs."""
    try:
        graph = _RecurrentLeafTracer().trace(module)
    except Exception as e:  # tracing errors carry their own context
        raise UnsupportedError(f"model '{type(module).__name__}' cannot be traced by torch.fx: "
                               f"{str(e).splitlines()[0]} (avoid Python control flow on tensor values)") from e
    gm = GraphModule(module, graph)
    graph = gm.graph
    placeholders = [n for n in graph.nodes if n.op == "placeholder"]
    if len(placeholders) != 1:
        raise UnsupportedError(f"model '{type(module).__name__}' takes {len(placeholders)} inputs; streaming needs "
                               "one input sequence")
    output = next(n for n in graph.nodes if n.op == "output")
    if not isinstance(output.args[0], torch.fx.Node):
        raise UnsupportedError(f"model '{type(module).__name__}' returns several values; streaming needs one output")
    states: list[StateSpec] = []
    new_state_nodes = []
    last_placeholder = placeholders[-1]
    time_axis = None
    for node in list(graph.nodes):
        if node.op != "call_module" or not isinstance(gm.get_submodule(node.target), RECURRENT_LAYERS):
            continue
        layer = str(node.target)
        rnn = gm.get_submodule(layer)
        op, kinds, size, ax = _state_kinds(rnn)
        if len(node.args) != 1 or node.kwargs:
            raise UnsupportedError(f"layer '{layer}' is given an initial state; streaming owns the state, call the "
                                   "layer on the sequence alone")
        time_axis = ax if time_axis is None else time_axis
        specs = []
        for kind in kinds:
            shape = (rnn.memory_size,) if (op, kind) == ("lmu", "m") else \
                (rnn.hidden_size * rnn.state_size,) if kind == "s" else (rnn.hidden_size,)
            specs.append(StateSpec(f"{layer}.{kind}", layer, op, kind, shape))
        cell_name = f"{layer.replace('.', '_')}_step"
        gm.add_submodule(cell_name, _StepCell(rnn))
        state_inputs = []
        for spec in specs:
            with graph.inserting_after(last_placeholder):
                last_placeholder = graph.placeholder(spec.name.replace(".", "_"))
            state_inputs.append(last_placeholder)
        with graph.inserting_after(node):
            cell = graph.call_module(cell_name, (node.args[0], *state_inputs))
        with graph.inserting_after(cell):
            result = graph.call_function(operator.getitem, (cell, 0))
        with graph.inserting_after(result):
            new_states = graph.call_function(operator.getitem, (cell, 1))
        node.replace_all_uses_with(result)
        graph.erase_node(node)
        for k in range(len(specs)):
            with graph.inserting_before(output):
                new_state_nodes.append(graph.call_function(operator.getitem, (new_states, k)))
        states += specs
    if not states:
        raise UnsupportedError(f"model '{type(module).__name__}' has no recurrent layer edgekit can stream "
                               f"(supported: {', '.join(c.__name__ for c in RECURRENT_LAYERS)})")
    output.args = ((output.args[0], *new_state_nodes),)
    graph.lint()
    gm.recompile()
    gm.delete_all_unused_submodules()
    return gm, states, time_axis


def to_streaming(model: Model, atol: float = STREAMING_ATOL, check_samples: int = 16) -> StreamingModel:
    """The model's one-step function with explicit state (see :class:`StreamingModel`). A model without recurrent
    layers whose convolutions run over a time axis gets a step function with per-layer caches instead
    (converters/streaming.py, :class:`~edgekit.converters.streaming.ConvStreamingModel`).

    The model must read one sequence (batch first or as its first recurrent layer's ``batch_first`` says) whose steps
    go straight to its recurrent layers, and may apply any head to their outputs or final states. The step function
    is run over up to ``check_samples`` test sequences (or the example input) and must reproduce the sequence model's
    output within ``atol``; otherwise an UnsupportedError says by how much it differs.
    """
    from edgekit.stepgraph import is_recurrent

    if not is_recurrent(model.deploy_graph):  # a conv model over a time axis: per-layer caches (converters/streaming.py)
        from edgekit.converters.streaming import to_conv_streaming

        return to_conv_streaming(model, check_samples=check_samples)
    if model.module is None:
        raise UsageError(f"model '{model.name}' has no PyTorch module (loaded from .onnx?); to_streaming needs it")
    module = copy.deepcopy(model.module).eval()
    step_graph, states, time_axis = _streaming_graph(module)
    x = model.test_x[:check_samples] if model.test_x is not None else model.example_inputs[0].numpy()
    x = torch.from_numpy(np.ascontiguousarray(x, np.float32))
    if x.ndim != 3:
        raise UnsupportedError(f"model '{model.name}' reads inputs of shape {tuple(x.shape[1:])}; streaming needs a "
                               "sequence [N, T, features] that goes straight into the recurrent layer")
    with torch.no_grad():
        reference = module(x)
        steps = x.shape[time_axis]
        one = step_graph(x.narrow(time_axis, 0, 1), *(torch.zeros((x.shape[1 - time_axis],) + s.shape)
                                                        for s in states))[0]
    output_axis = None
    if reference.shape != one.shape:
        axes = [k for k in range(one.ndim) if one.ndim == reference.ndim and one.shape[k] == 1
                and reference.shape[k] == steps
                and one.shape[:k] + one.shape[k + 1:] == reference.shape[:k] + reference.shape[k + 1:]]
        if not axes:
            raise UnsupportedError(f"model '{model.name}': one step gives an output of shape {tuple(one.shape)}, the "
                                   f"whole sequence {tuple(reference.shape)}; streaming supports heads on the final "
                                   "state or on every step")
        output_axis = axes[0]
    streaming = StreamingModel(step_graph, states, tuple(x.shape[2:]), time_axis, output_axis, model.name).eval()
    error = float((streaming.run(x) - reference).abs().max())
    if not error <= atol:
        raise UnsupportedError(f"model '{model.name}': stepping through the sequence differs from the whole-sequence "
                               f"model by {error:.3g} (> {atol:g}); the layers before the recurrent layer must work "
                               "step by step")
    streaming.max_abs_error = error
    return streaming
