"""Integer-only recurrent cells (GRU, LSTM, LMU, EGRU) for step programs, and their host reference.

Where it sits: beside edgekit/qgraph.py (the integer graph of feed-forward layers), for the recurrent models that
targets run one input sample at a time (edgekit/stepgraph.py). :func:`lower` turns a recurrent deployment graph and
its calibration into integers; :func:`run` executes them on the host with numpy, and the Cortex-M step program
(targets/mcu/streaming.py) must reproduce its outputs bit for bit. The head after the recurrent layers is
ordinary int8 (qgraph.lower / run_int8).

The scheme (chosen by measurement, see bench/recurrent.py and bench/results/recurrent.txt):

* weights int8, symmetric, one scale per row (per gate row); biases int32 in the accumulator's scale. The LMU's fixed
  memory matrix Ā is int16 (scale 2^-fa) with an int64 accumulator: it is applied to the memory every step, and int8
  entries lose 0.8 points on digits-lmu where int16 loses 0.3 (bench/results/recurrent.txt)
* input samples int8 (the model input's asymmetric scale); a stacked layer reads the previous layer's int16 output
* accumulation in int32: ``acc = b + Σ (x − x_zp)·w``; each accumulator is rescaled to a common fixed-point format
  with edgekit/qmath.py's rounding, ``rq(acc) = (acc·M_r + 2^(sh−1)) >> sh`` on int64, one multiplier per row and
  one shift per matrix (:func:`common_multipliers`)
* state int16: the hidden state h (GRU, LSTM, LMU) and the EGRU's y and c in Q15 (value = q / 2^15, they stay in
  (−1, 1)); the LSTM cell c and the LMU memory m and its input u in Qf with f fraction bits chosen from the
  calibration range (f = floor(log2(32767 / (1.5·max|v|))), 0 ≤ f ≤ 15)
* gate pre-activations in Q4.11 (int16, ±16), sigmoid and tanh from 513-entry int16 tables over [−16, 16]
  (step 1/16) with linear interpolation, results in Q15::

      u = v + 32768;  i = u >> 7;  φ = u & 127;  f(v) = T[i] + (((T[i+1] − T[i])·φ + 64) >> 7)

* products of two Q15 values: ``(a·b + 2^14) >> 15``; saturation to int16 where a value is stored

Per cell (Q15 values r, z, n, i, f, g, o; ``sat`` = clamp to int16; ``px``/``ph`` = the x and h accumulators
rescaled to Q11):

* GRU:  r = σ(sat(px_r + ph_r)), z = σ(sat(px_z + ph_z)), n = tanh(sat(px_n + r·ph_n));  h' = n + z·(h − n)
* EGRU: the GRU update on the internal state c, ĉ = n + z·(c − n) with ph from the previous events y; an event where
  ĉ > ϑ (ϑ in Q15): y' = ĉ, c' = ĉ − ϑ, else y' = 0, c' = ĉ. Silent units (y = 0) add nothing to ph, exactly.
* LSTM: c' = f·c + i·g (in Qf), h' = o·tanh(c')
* LMU:  u = e_x·x + e_h·h + e_m·m (in Qf_u);  m' = Ā m + B̄ u (in Qf_m);  h' = tanh(W_x x + W_h h + W_m m' + b)
* S4D:  u = W_in x + b (in Qf_u);  s' = ā ⊙ s + b̄ ⊙ u (ā in Q15, s in Qf_s);  h' = tanh(Σ_n C s' + D u) (sum in Q11)
* selective scan: Δ = softplus(W_Δ u + b_Δ) and exp(Δ·A) from tables (softplus to Q11, exp to Q15); B_t, C_t, Δ·u
  in calibrated Qf formats; s' = exp(Δ·A) ⊙ s + (Δ·u) B_t;  h' = tanh(C_t·s' + D u) (see _lower_selective)

The head reads the last layer's output requantized to its int8 input scale.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgekit import qmath
from edgekit.errors import DataError, UnsupportedError
from edgekit.graph import Node
from edgekit.stepgraph import STATE_KINDS, StepGraph, state_size

Q_STATE = 15        # fraction bits of h, y, EGRU c
Q_GATE = 11         # fraction bits of gate pre-activations (int16: ±16)
LUT_SIZE = 513      # sigmoid/tanh table entries over [-16, 16]
LUT_FRAC_BITS = 7   # interpolation bits: 2^16 codes / 512 intervals
INT16_MIN, INT16_MAX = -32768, 32767
STATE_MAX = 32767   # Q15 states are kept in [-32767, 32767]
RANGE_MARGIN = 1.5  # headroom over the calibration maximum for Qf formats


def activation_table(kind: str) -> np.ndarray:
    """The int16 table T[i] = round(2^q · f(−16 + i/16)), clipped to [−32767, 32767], of sigmoid, tanh or exp
    (q = 15: values in (−1, 1]) or softplus (q = 11: values in [0, 16))."""
    v = -16.0 + np.arange(LUT_SIZE, dtype=np.float64) / 16.0
    f = {"sigmoid": lambda: 1.0 / (1.0 + np.exp(-v)), "tanh": lambda: np.tanh(v),
         "exp": lambda: np.exp(np.minimum(v, 0.0)), "softplus": lambda: np.logaddexp(0.0, v)}[kind]()
    q = Q_GATE if kind == "softplus" else Q_STATE
    return np.clip(np.round(f * 2.0 ** q), -STATE_MAX, STATE_MAX).astype(np.int16)


SIGMOID_TABLE = activation_table("sigmoid")
TANH_TABLE = activation_table("tanh")
EXP_TABLE = activation_table("exp")            # exp(v) for v <= 0, Q15 (the selective scan's decay)
SOFTPLUS_TABLE = activation_table("softplus")  # softplus(v), Q11 (the selective scan's step size)


def sat16(v: np.ndarray) -> np.ndarray:
    return np.clip(v, INT16_MIN, INT16_MAX)


def lut(v: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Interpolated table lookup of Q4.11 values ``v`` (already in int16 range); Q15 results as int64."""
    u = np.asarray(v, np.int64) + 32768
    i = u >> LUT_FRAC_BITS
    phi = u & ((1 << LUT_FRAC_BITS) - 1)
    t = table.astype(np.int64)
    t0, t1 = t[i], t[np.minimum(i + 1, LUT_SIZE - 1)]
    return t0 + (((t1 - t0) * phi + (1 << (LUT_FRAC_BITS - 1))) >> LUT_FRAC_BITS)


def mul_q15(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return qmath.rshift_round(np.asarray(a, np.int64) * np.asarray(b, np.int64), Q_STATE)


def rq(acc: np.ndarray, mult: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """qmath's rounding rescale of int32 accumulators, kept in int64 (no clamp)."""
    return qmath.rshift_round(np.asarray(acc, np.int64) * np.asarray(mult, np.int64), shift)


def frac_bits(max_abs: float) -> int:
    """Fraction bits of an int16 fixed-point format holding ±RANGE_MARGIN·max_abs."""
    if not math.isfinite(max_abs) or max_abs <= 0:
        return Q_STATE
    return int(np.clip(math.floor(math.log2(INT16_MAX / (RANGE_MARGIN * max_abs))), 0, Q_STATE))


def per_row_int8(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(int8 weights, float64 scales): symmetric, one scale per row (max|w_row| / 127; 1 for an all-zero row)."""
    w = np.asarray(w, np.float64)
    w2 = w.reshape(w.shape[0], -1)
    m = np.abs(w2).max(axis=1)
    s = np.where(m > 0, m / 127.0, 1.0)
    q = np.clip(np.round(w2 / s[:, None]), -127, 127).astype(np.int8).reshape(w.shape)
    return q, s


def _multipliers(real: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return qmath.quantize_multipliers(np.asarray(real, np.float64))


def common_multipliers(real: np.ndarray) -> tuple[np.ndarray, int]:
    """int32 multipliers M_r and one shift sh for a whole matrix: real_r ≈ M_r · 2^−sh, the largest M_r in
    [2^30, 2^31). A constant shift lets the kernels rescale each accumulator with one 32×32→64 multiply and fixed
    shifts; rows with smaller multipliers keep 31 − log2(max/real_r) bits of precision."""
    real = np.asarray(real, np.float64)
    top = float(real.max()) if real.size else 0.0
    if top <= 0.0:
        return np.zeros(real.shape, np.int32), 1
    _, shift = qmath.quantize_multiplier(top)
    return np.round(real * 2.0 ** shift).astype(np.int64).clip(0, 2 ** 31 - 1).astype(np.int32), int(shift)


def _bias(b: np.ndarray | None, scale: np.ndarray, rows: int) -> np.ndarray:
    b = np.zeros(rows) if b is None else np.asarray(b, np.float64)
    return np.clip(np.round(b / scale), -2 ** 31, 2 ** 31 - 1).astype(np.int32)


# ---- float cells (float64), for calibration and as the reading of each operator ----------------------------------


def _sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def float_step(node: Node, x: np.ndarray, state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """One step of ``node`` on x [N, I] from ``state`` (kind -> [N, size]); returns the new state (first kind = the
    output). Same equations as edgekit/graph_exec.py and edgekit/layers, in float64."""
    p = {k: np.asarray(v, np.float64) for k, v in node.params.items()}
    op = node.op
    if op in ("gru", "egru", "lstm"):
        rows = p["weight_ih"].shape[0]
        gi = x @ p["weight_ih"].T + p.get("bias_ih", np.zeros(rows))
        prev = state["y"] if op == "egru" else state["h"]
        gh = prev @ p["weight_hh"].T + p.get("bias_hh", np.zeros(rows))
        if op == "lstm":
            i, f, g, o = np.split(gi + gh, 4, axis=1)
            c = _sigmoid(f) * state["c"] + _sigmoid(i) * np.tanh(g)
            return {"h": _sigmoid(o) * np.tanh(c), "c": c}
        ir, iz, inn = np.split(gi, 3, axis=1)
        hr, hz, hn = np.split(gh, 3, axis=1)
        r, z = _sigmoid(ir + hr), _sigmoid(iz + hz)
        n = np.tanh(inn + r * hn)
        if op == "gru":
            return {"h": (1 - z) * n + z * state["h"]}
        c_hat = (1 - z) * n + z * state["c"]
        fired = c_hat > p["threshold"]
        return {"y": np.where(fired, c_hat, 0.0), "c": np.where(fired, c_hat - p["threshold"], c_hat),
                "margin": np.abs(c_hat - p["threshold"])}
    if op == "lmu":
        h, m = state["h"], state["m"]
        u = x @ p["encoder_x"] + h @ p["encoder_h"] + m @ p["encoder_m"]
        m = m @ p["A_bar"].T + u[:, None] * p["B_bar"]
        pre = x @ p["weight_x"].T + h @ p["weight_h"].T + m @ p["weight_m"].T + p["bias"]
        h = np.tanh(pre) if node.attrs.get("hidden_activation", "tanh") == "tanh" else np.maximum(pre, 0.0)
        return {"h": h, "m": m, "u": u}
    if op == "trace":
        a = float(node.attrs["decay"])
        return {"h": a * state["h"] + (1.0 - a) * x}
    if op in ("s4d", "selective_ssm"):
        H, N = int(node.attrs["hidden_size"]), int(node.attrs["state_size"])
        u = x @ p["w_in"].T + p["b_in"]
        s = state["s"].reshape(-1, H, N)
        if op == "s4d":
            s = s * p["a_bar"] + p["b_bar"] * u[:, :, None]
            y = (s * p["C"]).sum(-1) + p["D"] * u
        else:
            dt = np.logaddexp(0.0, u @ p["w_dt"].T + p["b_dt"])
            a = np.exp(dt[:, :, None] * -np.exp(p["A_log"]))
            bt, ct = u @ p["w_b"].T, u @ p["w_c"].T
            s = s * a + (dt * u)[:, :, None] * bt[:, None, :]
            y = (s * ct[:, None, :]).sum(-1) + p["D"] * u
            return {"h": np.tanh(y), "s": s.reshape(len(s), -1), "u": u, "bt": bt, "ct": ct, "g": dt * u}
        return {"h": np.tanh(y), "s": s.reshape(len(s), -1), "u": u, "y": y}
    raise UnsupportedError(f"layer '{node.name}': '{op}' is not a recurrent operator")


def zero_state(node: Node, n: int, dtype=np.float64) -> dict[str, np.ndarray]:
    return {k: np.zeros((n, state_size(node, k)), dtype) for k in STATE_KINDS[node.op]}


def event_margins(sg: StepGraph, x: np.ndarray) -> np.ndarray:
    """Per sequence of ``x``: the smallest |ĉ − ϑ| any EGRU unit came to its threshold (float64 run). Where it is
    within float32 rounding, whether that unit fired is decided by the rounding of the implementation."""
    x = np.asarray(x, np.float64)
    states = [zero_state(c, len(x)) for c in sg.cells]
    margin = np.full(len(x), np.inf)
    for t in range(sg.steps):
        v = x[:, t]
        for k, cell in enumerate(sg.cells):
            new = float_step(cell, v, states[k])
            if "margin" in new:
                margin = np.minimum(margin, new["margin"].min(axis=1))
            states[k] = {kind: new[kind] for kind in STATE_KINDS[cell.op]}
            v = new[STATE_KINDS[cell.op][0]]
    return margin


def internal_ranges(sg: StepGraph, calib: np.ndarray) -> dict[str, dict[str, float]]:
    """max |value| per layer of the values that get a calibrated format: LSTM c, LMU m and u (float, calib data)."""
    x = np.asarray(calib, np.float64)
    states = [zero_state(c, len(x)) for c in sg.cells]
    ranges = {c.name: {} for c in sg.cells}
    for t in range(sg.steps):
        v = x[:, t]
        for k, cell in enumerate(sg.cells):
            new = float_step(cell, v, states[k])
            for kind in ("c", "m", "u", "s", "bt", "ct", "g"):
                if kind in new and not (cell.op == "egru" and kind == "c"):
                    ranges[cell.name][kind] = max(ranges[cell.name].get(kind, 0.0), float(np.abs(new[kind]).max()))
            states[k] = {kind: new[kind] for kind in STATE_KINDS[cell.op]}
            v = new[STATE_KINDS[cell.op][0]]
    return ranges


# ---- lowering ------------------------------------------------------------------------------------------------------


@dataclass
class QCell:
    """Integer parameters of one recurrent layer. ``x_dtype``/``x_zp``/``x_scale`` describe what it reads (the int8
    model input, or the previous layer's Q15 output as int16); ``frac`` gives the fraction bits of each int16 state
    vector (and of the LMU's u); ``q`` holds the arrays the kernels take, named as they name them."""

    node: Node
    x_dtype: str
    x_zp: int
    x_scale: float
    frac: dict[str, int]
    q: dict[str, Any] = field(default_factory=dict)

    @property
    def op(self) -> str:
        return self.node.op

    @property
    def hidden(self) -> int:
        return int(self.node.attrs["hidden_size"])


@dataclass
class QStream:
    """A recurrent step function in integers: cells, then the head's int8 input (the last layer's Q15 output
    requantized: ``head_in`` = (mult, shift, zero point)) and the int8 head (qgraph.QGraph)."""

    step_graph: StepGraph
    cells: list[QCell]
    head: Any
    head_in: tuple[int, int, int]
    input_q: tuple[float, int]

    def quantize_input(self, x: np.ndarray) -> np.ndarray:
        s, z = self.input_q
        return np.clip(np.round(np.asarray(x, np.float64) / s) + z, -128, 127).astype(np.int8)


def _check_accumulator(cell: Node, name: str, w_q: np.ndarray, b_q: np.ndarray | None, x_max: int) -> None:
    bound = int(np.abs(w_q.astype(np.int64)).sum(axis=1).max()) * x_max
    bound += 0 if b_q is None else int(np.abs(b_q.astype(np.int64)).max())
    if bound >= 2 ** 31:
        raise UnsupportedError(f"layer '{cell.name}' ({cell.op}): the int32 accumulator of {name} could overflow "
                               f"({cell.attrs.get('hidden_size')} units); compile it in float32 (omit --quantize)")


def _rescaled(cell: Node, w: np.ndarray, b: np.ndarray | None, in_scale: float, in_max: int, out_frac: int, tag: str):
    """int8 rows of ``w`` (one scale each), int32 bias, and multipliers taking the accumulator to Q``out_frac``."""
    w_q, s = per_row_int8(np.asarray(w, np.float64))
    b_q = _bias(b, in_scale * s, w.shape[0])
    mult, shift = common_multipliers(in_scale * s * 2.0 ** out_frac)
    _check_accumulator(cell, tag, w_q, b_q, in_max)
    return w_q, b_q, mult, shift


def _gates(cell: Node, qc: QCell, w: np.ndarray, b: np.ndarray | None, x_scale: float, x_max: int, tag: str) -> None:
    """int8 weights, int32 bias and Q11 multipliers of one gate matrix product (``tag`` 'x' or 'h')."""
    w_q, b_q, mult, shift = _rescaled(cell, w, b, x_scale, x_max, Q_GATE, f"W_{tag}")
    qc.q.update({f"w_{tag}": w_q, f"b_{tag}": b_q, f"mult_{tag}": mult, f"shift_{tag}": shift})


def _lower_cell(cell: Node, x_dtype: str, x_zp: int, x_scale: float, ranges: dict[str, float]) -> QCell:
    p = cell.params
    x_max = 255 if x_dtype == "int8" else STATE_MAX
    qc = QCell(cell, x_dtype, int(x_zp), float(x_scale), {k: Q_STATE for k in STATE_KINDS[cell.op]})
    h_scale = 2.0 ** -Q_STATE
    if cell.op in ("gru", "egru", "lstm"):
        _gates(cell, qc, p["weight_ih"], p.get("bias_ih"), x_scale, x_max, "x")
        _gates(cell, qc, p["weight_hh"], p.get("bias_hh"), h_scale, STATE_MAX, "h")
        if cell.op == "lstm":
            qc.frac["c"] = frac_bits(ranges.get("c", 1.0))
        if cell.op == "egru":
            thr = np.asarray(p["threshold"], np.float64)
            qc.q["thr"] = np.clip(np.round(thr * 2.0 ** Q_STATE), 1, STATE_MAX).astype(np.int16)
        return qc
    if cell.op == "trace":
        if x_dtype != "int16":
            raise UnsupportedError(f"layer '{cell.name}' (trace): int8 traces the Q15 output of a recurrent layer; "
                                   "this one reads the model input — compile it in float32 (omit --quantize)")
        qc.q["k"] = int(np.clip(np.round((1.0 - float(cell.attrs["decay"])) * 2.0 ** Q_STATE), 0, STATE_MAX))
        return qc
    if cell.op == "s4d":
        return _lower_s4d(cell, qc, x_scale, x_max, ranges)
    if cell.op == "selective_ssm":
        return _lower_selective(cell, qc, x_scale, x_max, ranges)
    if cell.op != "lmu":
        raise UnsupportedError(f"layer '{cell.name}' ({cell.op}): no int8 kernel for this layer; compile it in float32 "
                               "(omit --quantize)")
    if cell.attrs.get("hidden_activation", "tanh") != "tanh":
        raise UnsupportedError(f"layer '{cell.name}' (lmu): int8 supports the tanh hidden activation only (this one "
                               f"is {cell.attrs['hidden_activation']}); compile it in float32 (omit --quantize)")
    fu, fm = frac_bits(ranges.get("u", 1.0)), frac_bits(ranges.get("m", 1.0))
    qc.frac.update(u=fu, m=fm)
    # u = e_x·x + e_h·h + e_m·m, each product rescaled to Qfu.
    for tag, vec, in_scale, in_max in (("ex", p["encoder_x"], x_scale, x_max),
                                       ("eh", p["encoder_h"], h_scale, STATE_MAX),
                                       ("em", p["encoder_m"], 2.0 ** -fm, STATE_MAX)):
        e_q, s = per_row_int8(np.asarray(vec, np.float64)[None, :])
        mult, shift = _multipliers(in_scale * s * 2.0 ** fu)
        _check_accumulator(cell, f"encoder {tag}", e_q, None, in_max)
        qc.q.update({f"e_{tag[1]}": e_q[0], f"mult_u{tag[1]}": int(mult[0]), f"shift_u{tag[1]}": int(shift[0])})
    # m' = Ā m + B̄ u in Qfm. Ā is int16 with a power-of-two scale 2^-fa: the memory feeds back through it every
    # step, and int8 entries cost digits-lmu 0.8 points (bench/results/recurrent.txt); Σ Ā m accumulates in int64.
    a = np.asarray(p["A_bar"], np.float64)
    fa = int(np.clip(math.floor(math.log2(INT16_MAX / max(float(np.abs(a).max()), 1e-12))), 0, 30))
    qc.q.update(a=np.clip(np.round(a * 2.0 ** fa), -INT16_MAX, INT16_MAX).astype(np.int16), a_frac=fa)
    b_q, s_b = per_row_int8(np.asarray(p["B_bar"], np.float64)[:, None])
    mult, shift = common_multipliers(s_b * 2.0 ** (fm - fu))
    qc.q.update(bm=b_q[:, 0], mult_b=mult, shift_b=shift)
    # h' = tanh(W_x x + b + W_h h + W_m m') in Q11.
    _gates(cell, qc, p["weight_x"], p["bias"], x_scale, x_max, "x")
    _gates(cell, qc, p["weight_h"], None, h_scale, STATE_MAX, "h")
    _gates(cell, qc, p["weight_m"], None, 2.0 ** -fm, STATE_MAX, "m")
    return qc


def _lower_s4d(cell: Node, qc: QCell, x_scale: float, x_max: int, ranges: dict[str, float]) -> QCell:
    """S4D: u = W_in x + b in Qfu; s' = ā·s (ā in Q15) + b̄·u in Qfs; h = tanh(C·s' + D·u) with the sum in Q11."""
    p = cell.params
    fu, fs = frac_bits(ranges.get("u", 1.0)), frac_bits(ranges.get("s", 1.0))
    qc.frac.update(u=fu, s=fs)
    w, b, mult, shift = _rescaled(cell, p["w_in"], p["b_in"], x_scale, x_max, fu, "W_in")
    qc.q.update(w_in=w, b_in=b, mult_u=mult, shift_u=shift)
    a = np.asarray(p["a_bar"], np.float64)
    qc.q["a"] = np.clip(np.round(a * 2.0 ** Q_STATE), 0, STATE_MAX).astype(np.int16)
    b_q, s_b = per_row_int8(np.asarray(p["b_bar"], np.float64))
    mult_b, shift_b = common_multipliers(s_b * 2.0 ** (fs - fu))
    c_q, s_c = per_row_int8(np.asarray(p["C"], np.float64))
    mult_c, shift_c = common_multipliers(s_c * 2.0 ** (Q_GATE - fs))
    _check_accumulator(cell, "C", c_q, None, STATE_MAX)
    d_q, s_d = per_row_int8(np.asarray(p["D"], np.float64)[:, None])
    mult_d, shift_d = common_multipliers(s_d * 2.0 ** (Q_GATE - fu))
    qc.q.update(b=b_q, mult_b=mult_b, shift_b=shift_b, c=c_q, mult_c=mult_c, shift_c=shift_c, d=d_q[:, 0],
                mult_d=mult_d, shift_d=shift_d)
    return qc


def shift_round(v: np.ndarray, k: int) -> np.ndarray:
    """v · 2^−k with qmath's rounding for k > 0, exact for k <= 0 (int64)."""
    v = np.asarray(v, np.int64)
    return qmath.rshift_round(v, k) if k > 0 else v << -k


def _lower_selective(cell: Node, qc: QCell, x_scale: float, x_max: int, ranges: dict[str, float]) -> QCell:
    """The selective scan in integers: u in Qfu; z = W_Δ u + b_Δ in Q11 and Δ = softplus(z) from a table (Q11);
    B_t, C_t in Qf_b, Qf_c; g = Δ·u in Qf_g; the decay exp(Δ·A) from a table of exp over Q11 arguments (Q15), A in
    Qf_a; s' = exp(Δ·A)·s + g·B_t in Qf_s; h = tanh(C_t·s' + D u) with the sum in Q11."""
    p = cell.params
    f = {k: frac_bits(ranges.get(k, 1.0)) for k in ("u", "s", "bt", "ct", "g")}
    qc.frac.update(f)
    fu = f["u"]
    w, b, mult, shift = _rescaled(cell, p["w_in"], p["b_in"], x_scale, x_max, fu, "W_in")
    qc.q.update(w_in=w, b_in=b, mult_u=mult, shift_u=shift)
    w, b, mult, shift = _rescaled(cell, p["w_dt"], p["b_dt"], 2.0 ** -fu, STATE_MAX, Q_GATE, "W_dt")
    qc.q.update(w_dt=w, b_dt=b, mult_dt=mult, shift_dt=shift)
    for tag, name in (("bt", "w_b"), ("ct", "w_c")):
        w, b, mult, shift = _rescaled(cell, p[name], None, 2.0 ** -fu, STATE_MAX, f[tag], name)
        qc.q.update({name: w, f"mult_{tag}": mult, f"shift_{tag}": shift})
    neg_a = -np.exp(np.asarray(p["A_log"], np.float64))
    fa = int(np.clip(math.floor(math.log2(INT16_MAX / max(float(np.abs(neg_a).max()), 1e-12))), 0, 15))
    qc.q.update(neg_a=np.clip(np.round(neg_a * 2.0 ** fa), -INT16_MAX, 0).astype(np.int16), a_frac=fa)
    d_q, s_d = per_row_int8(np.asarray(p["D"], np.float64)[:, None])
    mult_d, shift_d = common_multipliers(s_d * 2.0 ** (Q_GATE - fu))
    qc.q.update(d=d_q[:, 0], mult_d=mult_d, shift_d=shift_d)
    return qc


def _selective_step(qc: QCell, x: np.ndarray, state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    q, f = qc.q, qc.frac
    H, N = qc.hidden, int(qc.node.attrs["state_size"])
    u = sat16(rq(_matvec(x, q["w_in"], qc.x_zp, q["b_in"]), q["mult_u"], q["shift_u"]))             # [n, H] Qfu
    dt = lut(sat16(rq(_matvec(u, q["w_dt"], 0, q["b_dt"]), q["mult_dt"], q["shift_dt"])), SOFTPLUS_TABLE)  # Q11
    bt = sat16(rq(_matvec(u, q["w_b"]), q["mult_bt"], q["shift_bt"]))                                 # [n, N]
    ct = sat16(rq(_matvec(u, q["w_c"]), q["mult_ct"], q["shift_ct"]))
    g = sat16(shift_round(dt * u, Q_GATE + f["u"] - f["g"]))                                         # Qfg
    arg = sat16(shift_round(dt[:, :, None] * q["neg_a"].astype(np.int64)[None], q["a_frac"]))       # Q11, <= 0
    decay = lut(arg, EXP_TABLE)                                                                       # Q15
    s = state["s"].reshape(-1, H, N).astype(np.int64)
    s = sat16(qmath.rshift_round(decay * s, Q_STATE)
              + shift_round(g[:, :, None] * bt[:, None, :], f["g"] + f["bt"] - f["s"]))
    y = shift_round((s * ct[:, None, :]).sum(-1), f["ct"] + f["s"] - Q_GATE)
    pre = sat16(y + rq(u * q["d"].astype(np.int64), q["mult_d"], q["shift_d"]))
    return {"h": lut(pre, TANH_TABLE), "s": s.reshape(len(s), -1)}


def _s4d_step(qc: QCell, x: np.ndarray, state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    q = qc.q
    H, N = qc.hidden, int(qc.node.attrs["state_size"])
    u = sat16(rq(_matvec(x, q["w_in"], qc.x_zp, q["b_in"]), q["mult_u"], q["shift_u"]))            # [n, H] Qfu
    s = state["s"].reshape(-1, H, N).astype(np.int64)
    bu = rq(q["b"].astype(np.int64)[None] * u[:, :, None], q["mult_b"][None, :, None], q["shift_b"])
    s = sat16(qmath.rshift_round(q["a"].astype(np.int64)[None] * s, Q_STATE) + bu)                     # Qfs
    acc = (s * q["c"].astype(np.int64)[None]).sum(-1)                                                  # int32 range
    pre = sat16(rq(acc, q["mult_c"], q["shift_c"]) + rq(u * q["d"].astype(np.int64), q["mult_d"], q["shift_d"]))
    return {"h": lut(pre, TANH_TABLE), "s": s.reshape(len(s), -1)}


def lower(sg: StepGraph, quant, calib: np.ndarray | None) -> QStream:
    """Integer step function of ``sg`` from the int8 QuantParams ``quant`` (converters.quantize: the input's and the
    head's scales) and calibration sequences (the formats of the LSTM cell and the LMU memory). ``calib=None`` gives
    placeholder formats: the shapes and byte counts are right, the numbers are not (for plans and estimates)."""
    from edgekit.qgraph import lower as lower_head

    if calib is not None and len(calib) == 0:
        raise DataError(f"model '{sg.graph.name}': the calibration data holds no sequence")
    ranges = internal_ranges(sg, calib) if calib is not None else {c.name: {} for c in sg.cells}
    acts = quant.activations
    xq = acts[sg.input.name]
    cells = []
    x_dtype, x_zp, x_scale = "int8", int(xq.zero_point), float(xq.scale)
    for cell in sg.cells:
        cells.append(_lower_cell(cell, x_dtype, x_zp, x_scale, ranges[cell.name]))
        x_dtype, x_zp, x_scale = "int16", 0, 2.0 ** -Q_STATE
    head = lower_head(sg.head, quant)
    sq = acts[sg.select.name]
    mult, shift = qmath.quantize_multiplier(2.0 ** -Q_STATE / sq.scale)
    return QStream(sg, cells, head, (int(mult), int(shift), int(sq.zero_point)), (float(xq.scale), int(xq.zero_point)))


# ---- host reference ------------------------------------------------------------------------------------------------


def _matvec(x: np.ndarray, w: np.ndarray, zp: int = 0, bias: np.ndarray | None = None) -> np.ndarray:
    """int32 accumulators b + Σ (x − zp)·w (exact: float64 holds these sums; then wrapped like an int32 register)."""
    from edgekit.intref import wrap_int32

    acc = (np.asarray(x, np.float64) - zp) @ np.asarray(w, np.float64).reshape(w.shape[0], -1).T
    acc = acc.astype(np.int64)
    if bias is not None:
        acc = acc + bias.astype(np.int64)
    return wrap_int32(acc)


def cell_step(qc: QCell, x: np.ndarray, state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """One integer step of a layer on x [N, I] (int8 or int16 codes) from int16 ``state``; returns the new state
    (int64 arrays holding int16 values), first kind = the output."""
    q = qc.q
    H = qc.hidden
    if qc.op == "s4d":
        return _s4d_step(qc, x, state)
    if qc.op == "selective_ssm":
        return _selective_step(qc, x, state)
    if qc.op == "trace":  # tr + (1 − α)·(x − tr) in Q15, x the Q15 output of the layer below
        h = state["h"].astype(np.int64)
        return {"h": np.clip(h + mul_q15(np.int64(q["k"]), x.astype(np.int64) - h), -STATE_MAX, STATE_MAX)}
    if qc.op in ("gru", "egru", "lstm"):
        px = rq(_matvec(x, q["w_x"], qc.x_zp, q["b_x"]), q["mult_x"], q["shift_x"])
        prev = state["y" if qc.op == "egru" else "h"]
        ph = rq(_matvec(prev, q["w_h"], 0, q["b_h"]), q["mult_h"], q["shift_h"])
        if qc.op == "lstm":
            pre = sat16(px + ph)
            i, f, g, o = (pre[:, k * H:(k + 1) * H] for k in range(4))
            i, f, o = lut(i, SIGMOID_TABLE), lut(f, SIGMOID_TABLE), lut(o, SIGMOID_TABLE)
            g = lut(g, TANH_TABLE)
            fc = qc.frac["c"]
            c = sat16(mul_q15(f, state["c"]) + qmath.rshift_round(i * g, 2 * Q_STATE - fc))
            c11 = qmath.rshift_round(c, fc - Q_GATE) if fc > Q_GATE else c << (Q_GATE - fc)
            h = mul_q15(o, lut(sat16(c11), TANH_TABLE))
            return {"h": h, "c": c}
        r = lut(sat16(px[:, :H] + ph[:, :H]), SIGMOID_TABLE)
        z = lut(sat16(px[:, H:2 * H] + ph[:, H:2 * H]), SIGMOID_TABLE)
        n = lut(sat16(px[:, 2 * H:] + mul_q15(r, ph[:, 2 * H:])), TANH_TABLE)
        old = state["h" if qc.op == "gru" else "c"]
        new = np.clip(n + mul_q15(z, old - n), -STATE_MAX, STATE_MAX)
        if qc.op == "gru":
            return {"h": new}
        thr = q["thr"].astype(np.int64)
        fired = new > thr
        return {"y": np.where(fired, new, 0), "c": np.where(fired, new - thr, new)}
    # LMU
    h, m = state["h"], state["m"]
    u = rq(_matvec(x, q["e_x"][None, :], qc.x_zp), q["mult_ux"], q["shift_ux"])
    u = u + rq(_matvec(h, q["e_h"][None, :]), q["mult_uh"], q["shift_uh"])
    u = sat16(u + rq(_matvec(m, q["e_m"][None, :]), q["mult_um"], q["shift_um"]))      # [N, 1]
    am = m.astype(np.int64) @ q["a"].astype(np.int64).T                                 # int64, exact
    m_new = sat16(qmath.rshift_round(am, q["a_frac"]) + rq(u * q["bm"].astype(np.int64)[None, :], q["mult_b"],
                                                          q["shift_b"]))
    pre = rq(_matvec(x, q["w_x"], qc.x_zp, q["b_x"]), q["mult_x"], q["shift_x"])
    pre = pre + rq(_matvec(h, q["w_h"], 0, q["b_h"]), q["mult_h"], q["shift_h"])
    pre = pre + rq(_matvec(m_new, q["w_m"], 0, q["b_m"]), q["mult_m"], q["shift_m"])
    return {"h": lut(sat16(pre), TANH_TABLE), "m": m_new}


def head_input(qs: QStream, h: np.ndarray) -> np.ndarray:
    mult, shift, zp = qs.head_in
    return np.clip(rq(h, mult, shift) + zp, -128, 127).astype(np.int8)


def run(qs: QStream, x_q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Step through int8 sequences ``x_q`` [N, T, I] from the zero state. Returns the head's int8 output after the
    last step [N, ...] and the number of EGRU events (non-zero outputs) per sequence [N]."""
    from edgekit.qgraph import run_int8

    x_q = np.asarray(x_q, np.int8)
    n = len(x_q)
    states = [{k: np.zeros((n, state_size(c.node, k)), np.int64) for k in STATE_KINDS[c.op]} for c in qs.cells]
    events = np.zeros(n, np.int64)
    for t in range(x_q.shape[1]):
        v = x_q[:, t].astype(np.int64)
        for k, qc in enumerate(qs.cells):
            new = cell_step(qc, v, states[k])
            states[k] = {kind: new[kind] for kind in STATE_KINDS[qc.op]}
            v = new[STATE_KINDS[qc.op][0]]
            if qc.op == "egru":
                events += np.count_nonzero(v, axis=1)
    last = next(k for k, c in enumerate(qs.cells) if c.node.name == qs.step_graph.select.inputs[0])
    h = states[last][STATE_KINDS[qs.cells[last].op][0]]
    y = run_int8(qs.head, head_input(qs, h))[qs.head.graph.outputs[0]]
    return y, events


def predict(qs: QStream, x: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """Float sequences in, dequantized head outputs out, through the integer step function."""
    outs = []
    for i in range(0, len(x), batch_size):
        y, _ = run(qs, qs.quantize_input(x[i:i + batch_size]))
        outs.append(qs.head.dequantize_output(y))
    return np.concatenate(outs, 0)
