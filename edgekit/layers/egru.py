"""The event-based GRU (EGRU) as a PyTorch layer and an edgekit graph operator ``"egru"``.

Subramoney, Nazeer, Schöne, Mayr, Kappel, "Efficient recurrent architectures through activity sparsity and sparse
back-propagation through time", ICLR 2023.

A GRU whose units keep an internal state c and communicate only through events: a unit emits its state when it
crosses a threshold ϑ > 0, and is silent (outputs exactly 0) otherwise. The recurrent matrix products read the event
output y, so a silent unit costs no multiply in the next step, nor in any layer reading y. Gates follow PyTorch's
``nn.GRU`` (gate order r, z, n; same parameter names and shapes), so a trained GRU's weights drop in unchanged::

    r_t = σ(W_ir x_t + b_ir + W_hr y_{t−1} + b_hr)
    z_t = σ(W_iz x_t + b_iz + W_hz y_{t−1} + b_hz)
    n_t = tanh(W_in x_t + b_in + r_t ⊙ (W_hn y_{t−1} + b_hn))
    ĉ_t = (1 − z_t) ⊙ n_t + z_t ⊙ c_{t−1}                     the GRU update, on the internal state
    e_t = H(ĉ_t − ϑ)                                          event: 1 where the state exceeds the threshold
    y_t = ĉ_t ⊙ e_t                                           output: the state's value, only at events
    c_t = ĉ_t − ϑ ⊙ e_t                                       reset by subtraction after an event

H(v) = 1 for v > 0, else 0. An event's value is ĉ_t > ϑ > 0, so the events are exactly the non-zero outputs.
For training, H's derivative is replaced by the pseudo-derivative γ · max(0, 1 − |ĉ − ϑ| / ε) (a triangle of height
γ = ``dampening`` and half-width ε = ``pseudo_derivative_width`` around the threshold).

State per sequence: y and c (hidden_size each). Cost per step, dense: 3H·(I + H) MACs; event-driven: 3H·I plus 3H per
event of the previous step.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn


class _HeavisidePseudoGrad(torch.autograd.Function):
    """H(v) forward; γ · max(0, 1 − |v| / ε) as its derivative backward."""

    @staticmethod
    def forward(ctx, v: torch.Tensor, width: float, dampening: float) -> torch.Tensor:
        ctx.save_for_backward(v)
        ctx.width, ctx.dampening = width, dampening
        return (v > 0).to(v.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (v,) = ctx.saved_tensors
        pseudo = ctx.dampening * torch.clamp(1.0 - v.abs() / ctx.width, min=0.0)
        return grad * pseudo, None, None


class EGRU(nn.Module):
    """Event-based GRU layer over a sequence (equations in the module docstring).

    ``EGRU(input_size, hidden_size, threshold=0.1, batch_first=True, bias=True, pseudo_derivative_width=0.5,
    dampening=0.3, trainable_threshold=True)``. ``threshold`` is a float or one value per unit.

    ``forward(x, state=None)`` behaves like ``torch.nn.GRU``: x [N, T, I] (batch_first) or [T, N, I], returns
    ``(outputs, y_n)`` — every step's event output y and the last one, [1, N, H] — so it can replace a GRU in a model.
    ``state`` is an optional initial ``(y_0, c_0)``, each [1, N, H]. ``step(x_t, (y, c))`` advances one step from
    state tensors [N, H] and returns ``(y_t, (y_t, c_t))``.

    While ``record_events`` is True, ``forward`` keeps the event indicators e of the last call in ``last_events``
    ([N, T, H], carrying the pseudo-derivative), for activity regularisation during training.
    """

    def __init__(self, input_size: int, hidden_size: int, threshold: float | np.ndarray | torch.Tensor = 0.1,
                 batch_first: bool = True, bias: bool = True, pseudo_derivative_width: float = 0.5,
                 dampening: float = 0.3, trainable_threshold: bool = True):
        super().__init__()
        self.input_size, self.hidden_size, self.batch_first = int(input_size), int(hidden_size), batch_first
        self.pseudo_derivative_width, self.dampening = float(pseudo_derivative_width), float(dampening)
        self.weight_ih = nn.Parameter(torch.empty(3 * self.hidden_size, self.input_size))
        self.weight_hh = nn.Parameter(torch.empty(3 * self.hidden_size, self.hidden_size))
        self.bias_ih = nn.Parameter(torch.empty(3 * self.hidden_size)) if bias else None
        self.bias_hh = nn.Parameter(torch.empty(3 * self.hidden_size)) if bias else None
        thr = torch.as_tensor(np.asarray(threshold, np.float32)).expand(self.hidden_size).clone()
        if not bool((thr > 0).all()):
            raise ValueError(f"EGRU thresholds must be > 0 (got min {float(thr.min()):g}): events are the non-zero "
                             "outputs only when every threshold is positive")
        self.threshold = nn.Parameter(thr, requires_grad=trainable_threshold)
        self.record_events = False
        self.last_events: torch.Tensor | None = None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """As ``torch.nn.GRU``: every weight and bias U(−1/√H, 1/√H)."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in (self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh):
            if p is not None:
                nn.init.uniform_(p, -bound, bound)

    def extra_repr(self) -> str:
        return (f"{self.input_size}, {self.hidden_size}, batch_first={self.batch_first}, "
                f"pseudo_derivative_width={self.pseudo_derivative_width:g}, dampening={self.dampening:g}")

    @classmethod
    def from_gru(cls, gru: nn.GRU, threshold: float | np.ndarray = 0.1, **kw) -> "EGRU":
        """An EGRU with ``gru``'s weights (single layer, unidirectional) and the given thresholds."""
        if gru.num_layers != 1 or gru.bidirectional:
            raise ValueError("EGRU.from_gru needs a single-layer, unidirectional nn.GRU")
        egru = cls(gru.input_size, gru.hidden_size, threshold, batch_first=gru.batch_first, bias=gru.bias, **kw)
        with torch.no_grad():
            egru.weight_ih.copy_(gru.weight_ih_l0)
            egru.weight_hh.copy_(gru.weight_hh_l0)
            if gru.bias:
                egru.bias_ih.copy_(gru.bias_ih_l0)
                egru.bias_hh.copy_(gru.bias_hh_l0)
        return egru.to(gru.weight_ih_l0.device)

    def initial_state(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Zero (y, c) for ``batch_size`` sequences: [N, H] each."""
        zeros = self.weight_hh.new_zeros(batch_size, self.hidden_size)
        return zeros, zeros.clone()

    def _input_gates(self, x: torch.Tensor) -> torch.Tensor:
        gi = x @ self.weight_ih.T
        return gi + self.bias_ih if self.bias_ih is not None else gi

    def _gru_update(self, gi, y, c):
        """ĉ_t: the GRU update of the internal state, reading the previous step's events y."""
        gh = y @ self.weight_hh.T
        if self.bias_hh is not None:
            gh = gh + self.bias_hh
        i_r, i_z, i_n = gi.chunk(3, 1)
        h_r, h_z, h_n = gh.chunk(3, 1)
        r = torch.sigmoid(i_r + h_r)
        z = torch.sigmoid(i_z + h_z)
        n = torch.tanh(i_n + r * h_n)
        return (1 - z) * n + z * c

    def _step(self, gi, y, c):
        """One step from the input's gate pre-activations ``gi`` = W_i x_t + b_i (computed for all steps at once).
        Returns (y_t, c_t, e_t)."""
        c_hat = self._gru_update(gi, y, c)
        e = self._event(c_hat - self.threshold)
        return c_hat * e, c_hat - self.threshold * e, e

    def _event(self, v: torch.Tensor) -> torch.Tensor:
        """H(v), with the pseudo-derivative when training."""
        if self.training and torch.is_grad_enabled():
            return _HeavisidePseudoGrad.apply(v, self.pseudo_derivative_width, self.dampening)
        return (v > 0).to(v.dtype)

    def step(self, x_t: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]) \
            -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """One time step: x_t [N, I], state (y [N, H], c [N, H]) -> (y_t, (y_t, c_t))."""
        y, c, _ = self._step(self._input_gates(x_t), *state)
        return y, (y, c)

    def forward(self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None = None):
        if not self.batch_first:
            x = x.transpose(0, 1)
        if state is None:
            y, c = self.initial_state(x.shape[0])
        else:
            y, c = state[0][0], state[1][0]
        gi = self._input_gates(x)
        outputs, events = [], []
        for t in range(x.shape[1]):
            y, c, e = self._step(gi[:, t], y, c)
            outputs.append(y)
            events.append(e)
        out = torch.stack(outputs, 1)
        self.last_events = torch.stack(events, 1) if self.record_events else None
        if not self.batch_first:
            out = out.transpose(0, 1)
        return out, y.unsqueeze(0)


class EventTrace(nn.Module):
    """The EGRU's output trace: a low-pass filter of a layer's event outputs, the readout of a classifier.

    ``tr_t = α · tr_{t−1} + (1 − α) · y_t`` per unit (α = ``decay``), tr_0 = 0. A classifier that reads only the
    last step's events sees only the units that happen to fire at that step; reading the trace, it sees every event
    of the last ~1/(1 − α) steps, which is what lets an EGRU classifier stay accurate at 80–90 % activity sparsity.
    This is the output trace of the EGRU authors' implementation (EvNN, ``use_output_trace``, α = 0.9). On a device
    it is one multiply-add per unit and step (a recurrent layer of its own, op ``"trace"``: one state vector).

    ``forward(x, state=None)`` like ``nn.GRU``: x [N, T, H] -> (traces [N, T, H], tr_T [1, N, H]).
    ``step(x_t, (tr,))`` -> (tr_t, (tr_t,)).
    """

    def __init__(self, size: int, decay: float = 0.9, batch_first: bool = True):
        super().__init__()
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EventTrace decay must be in [0, 1) (got {decay})")
        self.input_size = self.hidden_size = int(size)
        self.decay, self.batch_first = float(decay), batch_first

    def extra_repr(self) -> str:
        return f"{self.hidden_size}, decay={self.decay:g}, batch_first={self.batch_first}"

    def step(self, x_t: torch.Tensor, state: tuple[torch.Tensor]) -> tuple[torch.Tensor, tuple[torch.Tensor]]:
        tr = self.decay * state[0] + (1.0 - self.decay) * x_t
        return tr, (tr,)

    def forward(self, x: torch.Tensor, state: tuple[torch.Tensor] | None = None):
        if not self.batch_first:
            x = x.transpose(0, 1)
        tr = x.new_zeros(x.shape[0], self.hidden_size) if state is None else state[0][0]
        outs = []
        for t in range(x.shape[1]):
            tr, _ = self.step(x[:, t], (tr,))
            outs.append(tr)
        out = torch.stack(outs, 1)
        return (out if self.batch_first else out.transpose(0, 1)), tr.unsqueeze(0)


# --- edgekit registration: graph node, float semantics, MACs ---------------------------------------------------------


def _egru_node(m: EGRU) -> tuple[str, dict, dict]:
    attrs = {"input_size": m.input_size, "hidden_size": m.hidden_size, "batch_first": bool(m.batch_first)}
    params = {name: t.detach().cpu().numpy().astype(np.float32).copy() for name, t in m.named_parameters()}
    return "egru", attrs, params


def run_egru_node(node, xs: list[torch.Tensor]) -> torch.Tensor:
    """Float semantics of an ``"egru"`` node from its stored parameters: the event outputs y_1..y_T."""
    p = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in node.params.items()}
    a = node.attrs
    x = xs[0] if a["batch_first"] else xs[0].transpose(0, 1)
    hs = a["hidden_size"]
    y = torch.zeros(x.shape[0], hs)
    c = torch.zeros(x.shape[0], hs)
    b_ih = p.get("bias_ih", torch.zeros(3 * hs))
    b_hh = p.get("bias_hh", torch.zeros(3 * hs))
    thr = p["threshold"]
    outs = []
    for t in range(x.shape[1]):
        gi = x[:, t] @ p["weight_ih"].T + b_ih
        gh = y @ p["weight_hh"].T + b_hh
        r = torch.sigmoid(gi[:, :hs] + gh[:, :hs])
        z = torch.sigmoid(gi[:, hs:2 * hs] + gh[:, hs:2 * hs])
        n = torch.tanh(gi[:, 2 * hs:] + r * gh[:, 2 * hs:])
        c_hat = (1 - z) * n + z * c
        fired = c_hat > thr
        y = torch.where(fired, c_hat, torch.zeros_like(c_hat))
        c = torch.where(fired, c_hat - thr, c_hat)
        outs.append(y)
    out = torch.stack(outs, 1)
    return out if a["batch_first"] else out.transpose(0, 1)


def _trace_node(m: EventTrace) -> tuple[str, dict, dict]:
    attrs = {"input_size": m.hidden_size, "hidden_size": m.hidden_size, "decay": m.decay,
             "batch_first": bool(m.batch_first)}
    return "trace", attrs, {}


def run_trace_node(node, xs: list[torch.Tensor]) -> torch.Tensor:
    """Float semantics of a ``"trace"`` node: the traces tr_1..tr_T."""
    a = node.attrs
    m = EventTrace(a["hidden_size"], a["decay"], a["batch_first"])
    return m(xs[0])[0]


def trace_macs(node, graph) -> int:
    a = node.attrs
    return (node.shape[1] if a["batch_first"] else node.shape[0]) * a["hidden_size"]


def egru_macs(node, graph) -> int:
    """Dense count, as for a GRU (an upper bound: the recurrent products skip silent units)."""
    a = node.attrs
    steps = node.shape[1] if a["batch_first"] else node.shape[0]
    return steps * 3 * a["hidden_size"] * (a["input_size"] + a["hidden_size"])


def _register() -> None:
    from edgekit import analysis, estimate, graph_exec
    from edgekit.importers import torch_fx

    torch_fx.register_module(EGRU, _egru_node, recurrent=True)
    graph_exec.EXTRA_OPS["egru"] = run_egru_node
    analysis.MAC_COUNTERS["egru"] = egru_macs
    estimate.RECURRENT_OPS.add("egru")
    torch_fx.register_module(EventTrace, _trace_node, recurrent=True)
    graph_exec.EXTRA_OPS["trace"] = run_trace_node
    analysis.MAC_COUNTERS["trace"] = trace_macs
    estimate.RECURRENT_OPS.add("trace")


_register()
