"""State-space layers: a diagonal SSM (S4D) and a selective one (Mamba-style), as recurrent layers with explicit state.

Where it sits: edgekit.layers, beside LMU and EGRU; importing it registers op ``"s4d"`` and ``"selective_ssm"`` with the
torch.fx importer, the float graph executor and the MAC counter, so the step machinery (edgekit/stepgraph.py,
to_streaming, the Cortex-M step programs) sees them like ``nn.GRU``.

:class:`S4D` — S4D-Real (Gu, Gupta, Goel, Ré, "On the Parameterization and Initialization of Diagonal State Space
Models", NeurIPS 2022), one single-input single-output SSM per channel after an input projection::

    u_t      = W_in x_t + b_in                                        [H]
    s_t[h,n] = ā[h,n] s_{t-1}[h,n] + b̄[h,n] u_t[h]                   ā = exp(Δ_h A_hn), b̄ = (ā − 1)/A_hn · B_hn  (ZOH)
    y_t[h]   = tanh(Σ_n C[h,n] s_t[h,n] + D[h] u_t[h])

with A = −exp(A_log) initialised to −(n + 1) (S4D-Real), Δ = exp(log_dt), log_dt uniform in [log 0.01, log 0.5]
(frames, not seconds: 49 frames span a keyword). The LMU is the same form with a *fixed* dense A (the Legendre delay
system) and one shared input; S4D learns a diagonal A per channel — N·H decay rates instead of one d×d matrix.

:class:`SelectiveSSM` — the selective scan of Mamba (Gu & Dao 2023, "S6"), without the convolution and gating of a
full Mamba block: the step size and the input/output maps depend on the input::

    u_t      = W_in x_t + b_in;   Δ_t = softplus(W_Δ u_t + b_Δ) [H];   B_t = W_B u_t [N];   C_t = W_C u_t [N]
    s_t[h,n] = exp(Δ_t[h] A[h,n]) s_{t-1}[h,n] + Δ_t[h] B_t[n] u_t[h]      (Mamba's discretisation)
    y_t[h]   = tanh(Σ_n C_t[n] s_t[h,n] + D[h] u_t[h])

Both return (outputs [N, T, H], (h_T, s_T)) like ``nn.GRU`` (batch first), and ``step(x_t, (h, s))``.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class _Scan(nn.Module):
    """What both layers share: sizes, the zero state, and the loop of :meth:`step` over a sequence."""

    def __init__(self, input_size: int, hidden_size: int, state_size: int, batch_first: bool):
        super().__init__()
        self.input_size, self.hidden_size, self.state_size = input_size, hidden_size, state_size
        self.batch_first = batch_first

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}, state_size={self.state_size}, batch_first={self.batch_first}"

    def initial_state(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        like = self.b_in
        return like.new_zeros(batch_size, self.hidden_size), like.new_zeros(batch_size, self.hidden_size * self.state_size)

    def _constants(self) -> dict:
        """What :meth:`step` may compute once per sequence rather than per step."""
        return {}

    def forward(self, x: torch.Tensor, state=None):
        if not self.batch_first:
            x = x.transpose(0, 1)
        st = self.initial_state(x.shape[0]) if state is None else (state[0][0], state[1][0])
        constants = self._constants()
        outs = []
        for t in range(x.shape[1]):
            h, st = self.step(x[:, t], st, **constants)
            outs.append(h)
        y = torch.stack(outs, 1)
        if not self.batch_first:
            y = y.transpose(0, 1)
        return y, (st[0].unsqueeze(0), st[1].unsqueeze(0))


class S4D(_Scan):
    def __init__(self, input_size: int, hidden_size: int, state_size: int = 16, batch_first: bool = True,
                 dt_min: float = 0.01, dt_max: float = 0.5):
        super().__init__(input_size, hidden_size, state_size, batch_first)
        self.w_in = nn.Parameter(torch.empty(hidden_size, input_size))
        self.b_in = nn.Parameter(torch.zeros(hidden_size))
        self.log_dt = nn.Parameter(torch.empty(hidden_size))
        self.A_log = nn.Parameter(torch.log(torch.arange(1, state_size + 1, dtype=torch.float32)).repeat(hidden_size, 1))
        self.B = nn.Parameter(torch.ones(hidden_size, state_size))
        self.C = nn.Parameter(torch.empty(hidden_size, state_size))
        self.D = nn.Parameter(torch.ones(hidden_size))
        with torch.no_grad():
            nn.init.xavier_uniform_(self.w_in)
            self.log_dt.uniform_(math.log(dt_min), math.log(dt_max))
            self.C.normal_(0.0, 1.0 / math.sqrt(state_size))

    def discretized(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(ā, b̄) [H, N] of the zero-order hold."""
        A = -torch.exp(self.A_log)
        dtA = torch.exp(self.log_dt)[:, None] * A
        a = torch.exp(dtA)
        return a, (a - 1.0) / A * self.B

    def _constants(self) -> dict:
        return {"ab": self.discretized()}

    def step(self, x_t: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor], ab=None):
        """One step: x_t [N, I], state (h [N, H], s [N, H·N]) -> (h_t, (h_t, s_t))."""
        a, b = ab if ab is not None else self.discretized()
        u = x_t @ self.w_in.T + self.b_in
        s = state[1].reshape(-1, self.hidden_size, self.state_size) * a + b * u[:, :, None]
        h = torch.tanh((s * self.C).sum(-1) + self.D * u)
        return h, (h, s.reshape(len(s), -1))


class SelectiveSSM(_Scan):
    def __init__(self, input_size: int, hidden_size: int, state_size: int = 16, batch_first: bool = True):
        super().__init__(input_size, hidden_size, state_size, batch_first)
        self.w_in = nn.Parameter(torch.empty(hidden_size, input_size))
        self.b_in = nn.Parameter(torch.zeros(hidden_size))
        self.w_dt = nn.Parameter(torch.empty(hidden_size, hidden_size))
        self.b_dt = nn.Parameter(torch.empty(hidden_size))
        self.w_b = nn.Parameter(torch.empty(state_size, hidden_size))
        self.w_c = nn.Parameter(torch.empty(state_size, hidden_size))
        self.A_log = nn.Parameter(torch.log(torch.arange(1, state_size + 1, dtype=torch.float32)).repeat(hidden_size, 1))
        self.D = nn.Parameter(torch.ones(hidden_size))
        with torch.no_grad():
            for w in (self.w_in, self.w_b, self.w_c):
                nn.init.xavier_uniform_(w)
            nn.init.normal_(self.w_dt, 0.0, 0.1 / math.sqrt(hidden_size))
            dt = torch.exp(torch.empty(hidden_size).uniform_(math.log(0.01), math.log(0.5)))
            self.b_dt.copy_(dt + torch.log(-torch.expm1(-dt)))  # softplus^-1(dt), as Mamba initialises it

    def step(self, x_t: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]):
        """One step: x_t [N, I], state (h [N, H], s [N, H·N]) -> (h_t, (h_t, s_t))."""
        u = x_t @ self.w_in.T + self.b_in                                     # [N, H]
        dt = F.softplus(u @ self.w_dt.T + self.b_dt)                          # [N, H]
        bt, ct = u @ self.w_b.T, u @ self.w_c.T                               # [N, N_s]
        a = torch.exp(dt[:, :, None] * -torch.exp(self.A_log))                # [N, H, N_s]
        s = state[1].reshape(-1, self.hidden_size, self.state_size) * a + (dt * u)[:, :, None] * bt[:, None, :]
        h = torch.tanh((s * ct[:, None, :]).sum(-1) + self.D * u)
        return h, (h, s.reshape(len(s), -1))


# --- edgekit registration: graph node, float semantics, MACs ---------------------------------------------------------

def _node(op: str):
    def make(m) -> tuple[str, dict, dict]:
        attrs = {"input_size": m.input_size, "hidden_size": m.hidden_size, "state_size": m.state_size,
                 "batch_first": bool(m.batch_first)}
        params = {name: t.detach().cpu().numpy().astype(np.float32).copy() for name, t in m.named_parameters()}
        if op == "s4d":  # the discretized system, as a device uses it
            with torch.no_grad():
                a, b = m.discretized()
            params.update(a_bar=a.numpy().astype(np.float32), b_bar=b.numpy().astype(np.float32))
        return op, attrs, params
    return make


def module_of(node) -> nn.Module:
    """The layer of a graph node, rebuilt from its stored parameters (float semantics, the integer lowering)."""
    a = node.attrs
    cls = S4D if node.op == "s4d" else SelectiveSSM
    m = cls(a["input_size"], a["hidden_size"], a["state_size"], batch_first=True)
    with torch.no_grad():
        for name, p in m.named_parameters():
            p.copy_(torch.from_numpy(np.ascontiguousarray(node.params[name])))
    return m.eval()


def run_ssm_node(node, xs: list[torch.Tensor]) -> torch.Tensor:
    x = xs[0] if node.attrs["batch_first"] else xs[0].transpose(0, 1)
    with torch.no_grad():
        y = module_of(node)(x)[0]
    return y if node.attrs["batch_first"] else y.transpose(0, 1)


def ssm_step_macs(node) -> int:
    a = node.attrs
    i, h, n = a["input_size"], a["hidden_size"], a["state_size"]
    macs = h * i + 3 * h * n + h          # input projection; state update (ā·s, b̄·u) and C·s; D·u
    if node.op == "selective_ssm":
        macs += h * h + 2 * n * h + h * n  # Δ, B_t, C_t projections; Δ·B_t·u
    return macs


def ssm_macs(node, graph) -> int:
    steps = node.shape[1] if node.attrs["batch_first"] else node.shape[0]
    return steps * ssm_step_macs(node)


def _register() -> None:
    from edgekit import analysis, estimate, graph_exec
    from edgekit.importers import torch_fx

    for cls, op in ((S4D, "s4d"), (SelectiveSSM, "selective_ssm")):
        torch_fx.register_module(cls, _node(op), recurrent=True)
        graph_exec.EXTRA_OPS[op] = run_ssm_node
        analysis.MAC_COUNTERS[op] = ssm_macs
        estimate.RECURRENT_OPS.add(op)


_register()
