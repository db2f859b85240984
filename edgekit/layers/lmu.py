"""The Legendre Memory Unit (LMU) as a PyTorch layer and an edgekit graph operator ``"lmu"``.

Voelker, Kajić, Eliasmith, "Legendre Memory Units: Continuous-Time Representation in Recurrent Neural Networks",
NeurIPS 2019.

The memory is a linear time-invariant system that keeps a sliding window of length θ of a scalar signal u as the
coefficients of its first d Legendre polynomials (the "LegT" construction, paper eq. 1-2)::

    θ ṁ(t) = A m(t) + B u(t)
    A[i, j] = (2i + 1) · (−1            if i < j
                          (−1)^(i−j+1)  if i ≥ j)
    B[i]    = (2i + 1) · (−1)^i                                   i, j = 0 .. d−1

It is discretised once, with a zero-order hold over the step dt (exact for an input held constant during a step)::

    Ā = exp(A·dt/θ)          B̄ = (A/θ)⁻¹ (Ā − I) (B/θ)

computed as the matrix exponential of the block matrix [[A, B], [0, 0]]·dt/θ, whose top row is [Ā, B̄]. Ā and B̄ are
fixed buffers, never trained. One time step (paper eq. 3-4, with a bias on the hidden update)::

    u_t = e_x · x_t + e_h · h_{t−1} + e_m · m_{t−1}                  scalar input to the memory
    m_t = Ā m_{t−1} + B̄ u_t                                          d memory coefficients
    h_t = f(W_x x_t + W_h h_{t−1} + W_m m_t + b)                     f = tanh by default

State per sequence: h (hidden_size) and m (memory_size). Cost per step: (I + H + d) MACs for u, d² + d for the
memory, H·(I + H + d) for h.
"""
from __future__ import annotations

import math

import numpy as np
import scipy.linalg
import torch
from torch import nn

ACTIVATIONS = {"tanh": torch.tanh, "relu": torch.relu}


def legendre_delay_system(order: int) -> tuple[np.ndarray, np.ndarray]:
    """The continuous-time (A, B) of the LegT memory of ``order`` d (float64; the 1/θ is applied by the caller)."""
    i = np.arange(order)[:, None]
    j = np.arange(order)[None, :]
    sign = np.where(i < j, -1.0, (-1.0) ** (i - j + 1))
    a = (2 * i + 1) * sign
    b = (2 * np.arange(order) + 1) * (-1.0) ** np.arange(order)
    return a.astype(np.float64), b.astype(np.float64)


def zoh_discretize(a: np.ndarray, b: np.ndarray, dt: float) -> tuple[np.ndarray, np.ndarray]:
    """Zero-order-hold discretisation of ẋ = a x + b u over a step ``dt``: (exp(a·dt), a⁻¹(exp(a·dt) − I) b).

    Uses the block-matrix exponential, so ``a`` need not be invertible. Returns float64 (Ā [d, d], B̄ [d]).
    """
    d = a.shape[0]
    block = np.zeros((d + 1, d + 1))
    block[:d, :d] = a
    block[:d, d] = b
    e = scipy.linalg.expm(block * dt)
    return e[:d, :d], e[:d, d]


class LMU(nn.Module):
    """Legendre Memory Unit layer over a sequence (equations in the module docstring).

    ``LMU(input_size, hidden_size, memory_size, theta, dt=1.0, activation="tanh", batch_first=True)``: ``memory_size``
    is the order d of the Legendre memory and ``theta`` the window it remembers, in steps of ``dt``.

    ``forward(x, state=None)`` takes x [N, T, I] (batch_first) or [T, N, I] and an optional initial ``(h_0, m_0)``
    shaped [1, N, H] and [1, N, d] (as ``torch.nn.LSTM``), and returns ``(outputs, (h_n, m_n))``: every step's h
    ([N, T, H] or [T, N, H]) and the final state, shaped like the initial one. ``step(x_t, (h, m))`` advances one step
    from state tensors [N, H], [N, d] and returns ``(h_t, (h_t, m_t))``.

    Initialisation follows the paper: e_x LeCun-uniform, e_h = e_m = 0, W_x, W_m Xavier-normal, W_h orthogonal, b = 0.
    """

    def __init__(self, input_size: int, hidden_size: int, memory_size: int, theta: float, dt: float = 1.0,
                 activation: str = "tanh", batch_first: bool = True):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"LMU activation {activation!r} is not one of {', '.join(ACTIVATIONS)}")
        if theta <= 0 or dt <= 0:
            raise ValueError(f"LMU needs theta > 0 and dt > 0 (got theta={theta}, dt={dt})")
        self.input_size, self.hidden_size, self.memory_size = int(input_size), int(hidden_size), int(memory_size)
        self.theta, self.dt, self.activation, self.batch_first = float(theta), float(dt), activation, batch_first

        self.encoder_x = nn.Parameter(torch.empty(self.input_size))
        self.encoder_h = nn.Parameter(torch.zeros(self.hidden_size))
        self.encoder_m = nn.Parameter(torch.zeros(self.memory_size))
        self.weight_x = nn.Parameter(torch.empty(self.hidden_size, self.input_size))
        self.weight_h = nn.Parameter(torch.empty(self.hidden_size, self.hidden_size))
        self.weight_m = nn.Parameter(torch.empty(self.hidden_size, self.memory_size))
        self.bias = nn.Parameter(torch.zeros(self.hidden_size))

        a, b = legendre_delay_system(self.memory_size)
        a_bar, b_bar = zoh_discretize(a / self.theta, b / self.theta, self.dt)
        self.register_buffer("A_bar", torch.from_numpy(a_bar.astype(np.float32)))
        self.register_buffer("B_bar", torch.from_numpy(b_bar.astype(np.float32)))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = math.sqrt(3.0 / self.input_size)
        with torch.no_grad():
            self.encoder_x.uniform_(-bound, bound)
            self.encoder_h.zero_()
            self.encoder_m.zero_()
            nn.init.xavier_normal_(self.weight_x)
            nn.init.orthogonal_(self.weight_h)
            nn.init.xavier_normal_(self.weight_m)
            self.bias.zero_()

    def extra_repr(self) -> str:
        return (f"{self.input_size}, {self.hidden_size}, memory_size={self.memory_size}, theta={self.theta:g}, "
                f"dt={self.dt:g}, activation={self.activation!r}, batch_first={self.batch_first}")

    def initial_state(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Zero (h, m) for ``batch_size`` sequences: [N, H], [N, d]."""
        like = self.bias
        return (like.new_zeros(batch_size, self.hidden_size), like.new_zeros(batch_size, self.memory_size))

    def step(self, x_t: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]) \
            -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """One time step: x_t [N, I], state (h [N, H], m [N, d]) -> (h_t, (h_t, m_t))."""
        h, m = state
        u = x_t @ self.encoder_x + h @ self.encoder_h + m @ self.encoder_m            # [N]
        m = m @ self.A_bar.T + u[:, None] * self.B_bar                                 # [N, d]
        h = ACTIVATIONS[self.activation](x_t @ self.weight_x.T + h @ self.weight_h.T + m @ self.weight_m.T + self.bias)
        return h, (h, m)

    def forward(self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None = None):
        if not self.batch_first:
            x = x.transpose(0, 1)
        if state is None:
            h, m = self.initial_state(x.shape[0])
        else:
            h, m = state[0][0], state[1][0]
        outputs = []
        for t in range(x.shape[1]):
            out, (h, m) = self.step(x[:, t], (h, m))
            outputs.append(out)
        y = torch.stack(outputs, 1)
        if not self.batch_first:
            y = y.transpose(0, 1)
        return y, (h.unsqueeze(0), m.unsqueeze(0))


# --- edgekit registration: graph node, float semantics, MACs ---------------------------------------------------------


def _lmu_node(m: LMU) -> tuple[str, dict, dict]:
    attrs = {"input_size": m.input_size, "hidden_size": m.hidden_size, "memory_size": m.memory_size,
             "theta": m.theta, "dt": m.dt, "hidden_activation": m.activation, "batch_first": bool(m.batch_first)}
    params = {name: t.detach().cpu().numpy().astype(np.float32).copy()
              for name, t in list(m.named_parameters()) + list(m.named_buffers())}
    return "lmu", attrs, params


def run_lmu_node(node, xs: list[torch.Tensor]) -> torch.Tensor:
    """Float semantics of an ``"lmu"`` node from its stored parameters: the whole output sequence h_1..h_T."""
    p = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in node.params.items()}
    a = node.attrs
    x = xs[0] if a["batch_first"] else xs[0].transpose(0, 1)
    n, steps = x.shape[0], x.shape[1]
    f = ACTIVATIONS[a["hidden_activation"]]
    h = torch.zeros(n, a["hidden_size"])
    m = torch.zeros(n, a["memory_size"])
    outs = []
    for t in range(steps):
        xt = x[:, t]
        u = xt @ p["encoder_x"] + h @ p["encoder_h"] + m @ p["encoder_m"]
        m = m @ p["A_bar"].T + u[:, None] * p["B_bar"]
        h = f(xt @ p["weight_x"].T + h @ p["weight_h"].T + m @ p["weight_m"].T + p["bias"])
        outs.append(h)
    y = torch.stack(outs, 1)
    return y if a["batch_first"] else y.transpose(0, 1)


def lmu_macs(node, graph) -> int:
    a = node.attrs
    steps = node.shape[1] if a["batch_first"] else node.shape[0]
    i, h, d = a["input_size"], a["hidden_size"], a["memory_size"]
    return steps * ((i + h + d) + (d * d + d) + h * (i + h + d))


def _register() -> None:
    from edgekit import analysis, estimate, graph_exec
    from edgekit.importers import torch_fx

    torch_fx.register_module(LMU, _lmu_node, recurrent=True)
    graph_exec.EXTRA_OPS["lmu"] = run_lmu_node
    analysis.MAC_COUNTERS["lmu"] = lmu_macs
    estimate.RECURRENT_OPS.add("lmu")


_register()
