"""Recurrent cell kernels through Apache TVM: one step of a GRU, LSTM, LMU, EGRU (and its output trace) or
state-space layer as C for the MCU.

Where it sits: next to tvm_kernels.py (the feed-forward layers) in the Cortex-M target. streaming.py describes each
cell step as a :class:`KernelSpec`; this module writes it as a TVM tensor expression, schedules it so that one loop
over the hidden units computes each unit's gate products, nonlinearities and new state (accumulators on the stack,
no intermediate tensor in RAM; one pass over the inputs feeds all gates of a unit, accumulators in registers), and
hands the PrimFuncs to tvm_kernels.compile_kernels (TVM's ``c`` target). The LSTM is two calls, c' from the i, f, g
rows and then h' = σ(o)·tanh(c') from the o rows (TIR's compute-at cannot place two outputs that both read the gate
products and each other in one loop).

The EGRU's recurrent product is event-driven: it touches only the weight columns of the units that sent an event at
the previous step (``if y[k] != 0``: accumulate column k), so its cost falls with activity sparsity. A tensor
expression always visits every (row, column) pair, so that kernel is written directly in TIR (TVMScript) with one
``if`` per unit; the rest of the EGRU step (input gates, update, events) is a tensor expression again.

Float32 kernels follow PyTorch's equations (edgekit/graph_exec.py, edgekit/layers); int8 kernels follow
edgekit/qrecurrent.py bit for bit (int8 weights, int32 accumulators, Q15 int16 state, table sigmoid/tanh).
"""
from __future__ import annotations

import tvm
from tvm import s_tir, te
from tvm.script import tirx as T

from edgekit.qrecurrent import LUT_FRAC_BITS, LUT_SIZE, Q_GATE, Q_STATE, STATE_MAX
from edgekit.targets.mcu.kernel_spec import KernelSpec

F32, I8, I16, I32, I64 = "float32", "int8", "int16", "int32", "int64"


def _c(v, dtype):
    return tvm.tirx.const(v, dtype)


# ---- integer helpers (edgekit/qrecurrent.py) ------------------------------------------------------------------------


def _rq(acc, mult, shift: int):
    """(acc·mult + 2^(shift−1)) >> shift on int64, with the matrix's constant shift."""
    return (acc.astype(I64) * mult.astype(I64) + _c(1 << (shift - 1), I64)) >> _c(shift, I64)


def _rshift_round(v, s: int):
    return (v.astype(I64) + _c(1 << (s - 1), I64)) >> _c(s, I64) if s > 0 else v.astype(I64)


def _rshift_round32(v, s: int):
    """(v + 2^(s−1)) >> s on int32: for products of two int16 values (|v| <= 2^30), where it cannot overflow."""
    return ((v + _c(1 << (s - 1), I32)) >> _c(s, I32)).astype(I64)


def _sat16(v):
    return te.max(te.min(v.astype(I64), _c(32767, I64)), _c(-32768, I64))


def _clip_state(v):
    return te.max(te.min(v, _c(STATE_MAX, I64)), _c(-STATE_MAX, I64))


def _lut(v, table):
    """Interpolated table lookup of a Q4.11 value already in int16 range; Q15 result as int64."""
    u = v.astype(I32) + _c(32768, I32)
    i = u >> _c(LUT_FRAC_BITS, I32)
    phi = u & _c((1 << LUT_FRAC_BITS) - 1, I32)
    t0 = table[i].astype(I32)
    t1 = table[i + 1].astype(I32)
    return (t0 + (((t1 - t0) * phi + _c(1 << (LUT_FRAC_BITS - 1), I32)) >> _c(LUT_FRAC_BITS, I32))).astype(I64)


def _mul_q15(a, b):
    return _rshift_round(a.astype(I64) * b.astype(I64), Q_STATE)


def _sigmoid(v):
    return _c(1.0, F32) / (_c(1.0, F32) + te.exp(-v))


# ---- shared pieces --------------------------------------------------------------------------------------------------


def _gate_products(spec: KernelSpec, x, w, gates: int, hidden: int, name: str, zp: int = 0, bias=None):
    """acc[j, g] = b[g·H + j] + Σ_k x[k]·w[g·H + j, k]: the matrix product of ``gates`` gate blocks, unit-major so
    that the schedule computes each unit's gates inside the unit loop (int: int32 products of (x − zp) and int8
    weights). The bias is added in a block of its own: an int32 sum that the rescale then widens once."""
    n_in = int(x.shape[0])
    k = te.reduce_axis((0, n_in), f"k_{name}")
    sum_name = name if bias is None else f"{name}_sum"
    if spec.dtype == F32:
        acc = te.compute((hidden, gates), lambda j, g: te.sum(x[k] * w[g * hidden + j, k], axis=k), name=sum_name)
    else:
        acc = te.compute((hidden, gates), lambda j, g: te.sum(
            (x[k].astype(I32) - zp) * w[g * hidden + j, k].astype(I32), axis=k), name=sum_name)
    if bias is None:
        return acc
    return te.compute((hidden, gates), lambda j, g: acc[j, g] + bias[g * hidden + j], name=name)


def _x_placeholder(spec: KernelSpec, n_in: int):
    return te.placeholder((n_in,), spec.attr("x_dtype", spec.dtype), "x")


def _int_gates(spec, acc, mult, shift: int, H, gates, name):
    """rq(acc) per gate row (the accumulators hold their bias), as one [H, gates] int64 block (Q11)."""
    return te.compute((H, gates), lambda j, g: _rq(acc[j, g], mult[g * H + j], shift), name=name)


# ---- GRU ------------------------------------------------------------------------------------------------------------


def _gru(spec: KernelSpec):
    H, I = spec.attr("hidden"), spec.attr("inputs")
    x, h = _x_placeholder(spec, I), te.placeholder((H,), spec.dtype if spec.dtype == F32 else I16, "h")
    if spec.dtype == F32:
        w_ih, w_hh = te.placeholder((3 * H, I), F32, "w_ih"), te.placeholder((3 * H, H), F32, "w_hh")
        b_ih, b_hh = te.placeholder((3 * H,), F32, "b_ih"), te.placeholder((3 * H,), F32, "b_hh")
        gi = _gate_products(spec, x, w_ih, 3, H, "gi", bias=b_ih)
        gh = _gate_products(spec, h, w_hh, 3, H, "gh", bias=b_hh)
        r = te.compute((H,), lambda j: _sigmoid(gi[j, 0] + gh[j, 0]), name="r")
        z = te.compute((H,), lambda j: _sigmoid(gi[j, 1] + gh[j, 1]), name="z")
        n = te.compute((H,), lambda j: te.tanh(gi[j, 2] + r[j] * gh[j, 2]), name="n")
        out = te.compute((H,), lambda j: n[j] + z[j] * (h[j] - n[j]), name="h_new")
        return [x, h, w_ih, w_hh, b_ih, b_hh, out], "h_new", []
    args, px, ph, sig, tanh = _int_gru_gates(spec, x, h, H, I)
    z, n = _int_gru_zn(spec, px, ph, sig, tanh, H)
    out = te.compute((H,), lambda j: _clip_state(n[j] + _mul_q15(z[j], h[j].astype(I64) - n[j])).astype(I16),
                     name="h_new")
    return [x, h] + args + [out], "h_new", []


def _int_gru_gates(spec, x, h, H, I, acc_h=None):
    """int8 GRU/EGRU gate pre-activations in Q11: px from x, ph from h (or from the event-driven accumulators)."""
    w_x, b_x = te.placeholder((3 * H, I), I8, "w_x"), te.placeholder((3 * H,), I32, "b_x")
    mult_x, mult_h = te.placeholder((3 * H,), I32, "mult_x"), te.placeholder((3 * H,), I32, "mult_h")
    sig, tanh = te.placeholder((LUT_SIZE,), I16, "sigmoid_lut"), te.placeholder((LUT_SIZE,), I16, "tanh_lut")
    ax = _gate_products(spec, x, w_x, 3, H, "ax", spec.attr("x_zp", 0), bias=b_x)
    px = _int_gates(spec, ax, mult_x, spec.attr("shift_x"), H, 3, "px")
    if acc_h is None:
        w_h, b_h = te.placeholder((3 * H, H), I8, "w_h"), te.placeholder((3 * H,), I32, "b_h")
        ah = _gate_products(spec, h, w_h, 3, H, "ah", bias=b_h)
        ph = _int_gates(spec, ah, mult_h, spec.attr("shift_h"), H, 3, "ph")
        args = [w_x, b_x, mult_x, w_h, b_h, mult_h, sig, tanh]
    else:   # EGRU: b_h is already in the accumulators
        ph = te.compute((H, 3), lambda j, g: _rq(acc_h[g * H + j], mult_h[g * H + j], spec.attr("shift_h")),
                        name="ph")
        args = [w_x, b_x, mult_x, mult_h, sig, tanh]
    return args, px, ph, sig, tanh


def _int_gru_zn(spec, px, ph, sig, tanh, H):
    r = te.compute((H,), lambda j: _lut(_sat16(px[j, 0] + ph[j, 0]), sig), name="r")
    z = te.compute((H,), lambda j: _lut(_sat16(px[j, 1] + ph[j, 1]), sig), name="z")
    n = te.compute((H,), lambda j: _lut(_sat16(px[j, 2] + _mul_q15(r[j], ph[j, 2])), tanh), name="n")
    return z, n


# ---- EGRU -----------------------------------------------------------------------------------------------------------


def _egru_recurrent(spec: KernelSpec):
    """acc = b_hh + Σ_{k: y[k] ≠ 0} y[k] · W_hhᵀ[k, :] — one column of the transposed recurrent weights per event."""
    H = spec.attr("hidden")
    G = 3 * H
    f32 = spec.dtype == F32
    ydt, wdt, adt = (F32, F32, F32) if f32 else (I16, I8, I32)
    U = 4 if G % 4 == 0 else (2 if G % 2 == 0 else 1)   # column elements per loop iteration (unrolled)

    @T.prim_func(private=True)
    def egru_recurrent(y: T.Buffer((H,), ydt), w_hh_t: T.Buffer((H, G), wdt), b_hh: T.Buffer((G,), adt),
                       acc: T.Buffer((G,), adt)):
        T.func_attr({"tirx.noalias": True})
        for r in range(G):
            acc[r] = b_hh[r]
        for k in range(H):
            if y[k] != T.Cast(ydt, 0):
                yk: T.let = T.Cast(adt, y[k])  # once per column: acc and y may alias in C
                for ro in range(G // U):
                    for ri in T.unroll(U):
                        acc[ro * U + ri] = acc[ro * U + ri] + T.Cast(adt, w_hh_t[k, ro * U + ri]) * yk

    return egru_recurrent


def _egru(spec: KernelSpec):
    """The EGRU step after the recurrent accumulators: input gates, GRU update of c, events, reset by subtraction."""
    H, I = spec.attr("hidden"), spec.attr("inputs")
    x = _x_placeholder(spec, I)
    sdt = F32 if spec.dtype == F32 else I16
    c = te.placeholder((H,), sdt, "c")
    acc = te.placeholder((3 * H,), F32 if spec.dtype == F32 else I32, "acc_h")
    if spec.dtype == F32:
        w_ih, b_ih = te.placeholder((3 * H, I), F32, "w_ih"), te.placeholder((3 * H,), F32, "b_ih")
        thr = te.placeholder((H,), F32, "threshold")
        gi = _gate_products(spec, x, w_ih, 3, H, "gi", bias=b_ih)
        r = te.compute((H,), lambda j: _sigmoid(gi[j, 0] + acc[j]), name="r")
        z = te.compute((H,), lambda j: _sigmoid(gi[j, 1] + acc[H + j]), name="z")
        n = te.compute((H,), lambda j: te.tanh(gi[j, 2] + r[j] * acc[2 * H + j]), name="n")
        # (1 − z)·n + z·c, as edgekit/layers/egru.py writes it: the same rounding as the reference where it matters
        # most, at the threshold
        c_hat = te.compute((H,), lambda j: (_c(1.0, F32) - z[j]) * n[j] + z[j] * c[j], name="c_hat")
        zero = _c(0.0, F32)
        y_new = te.compute((H,), lambda j: tvm.tirx.if_then_else(c_hat[j] > thr[j], c_hat[j], zero), name="y_new")
        # An event's value is above a positive threshold, so "fired" is "y' != 0".
        c_new = te.compute((H,), lambda j: tvm.tirx.if_then_else(y_new[j] != zero, c_hat[j] - thr[j], c_hat[j]),
                           name="c_new")
        return [x, c, acc, w_ih, b_ih, thr, y_new, c_new], "c_hat", ["y_new", "c_new"]
    args, px, ph, sig, tanh = _int_gru_gates(spec, x, None, H, I, acc_h=acc)
    thr = te.placeholder((H,), I16, "threshold")
    z, n = _int_gru_zn(spec, px, ph, sig, tanh, H)
    c_hat = te.compute((H,), lambda j: _clip_state(n[j] + _mul_q15(z[j], c[j].astype(I64) - n[j])),
                       name="c_hat")
    y_new = te.compute((H,), lambda j: tvm.tirx.if_then_else(
        c_hat[j] > thr[j].astype(I64), c_hat[j], _c(0, I64)).astype(I16), name="y_new")
    c_new = te.compute((H,), lambda j: tvm.tirx.if_then_else(
        y_new[j] != _c(0, I16), c_hat[j] - thr[j].astype(I64), c_hat[j]).astype(I16), name="c_new")
    return [x, c, acc] + args + [thr, y_new, c_new], "c_hat", ["y_new", "c_new"]


# ---- LSTM -----------------------------------------------------------------------------------------------------------


def _lstm_gates(spec: KernelSpec, gates: int):
    """Placeholders and per-unit gate pre-activations of ``gates`` LSTM gate blocks: float sums, or Q11 int16 values
    (sat(px + ph)) for int8."""
    H, I = spec.attr("hidden"), spec.attr("inputs")
    G = gates * H
    x = _x_placeholder(spec, I)
    sdt = F32 if spec.dtype == F32 else I16
    h = te.placeholder((H,), sdt, "h")
    if spec.dtype == F32:
        w_ih, w_hh = te.placeholder((G, I), F32, "w_ih"), te.placeholder((G, H), F32, "w_hh")
        b_ih, b_hh = te.placeholder((G,), F32, "b_ih"), te.placeholder((G,), F32, "b_hh")
        gi = _gate_products(spec, x, w_ih, gates, H, "gi", bias=b_ih)
        gh = _gate_products(spec, h, w_hh, gates, H, "gh", bias=b_hh)
        pre = te.compute((H, gates), lambda j, g: gi[j, g] + gh[j, g], name="pre")
        return [x, h], [w_ih, w_hh, b_ih, b_hh], pre
    w_x, b_x, mult_x = (te.placeholder((G, I), I8, "w_x"), te.placeholder((G,), I32, "b_x"),
                        te.placeholder((G,), I32, "mult_x"))
    w_h, b_h, mult_h = (te.placeholder((G, H), I8, "w_h"), te.placeholder((G,), I32, "b_h"),
                        te.placeholder((G,), I32, "mult_h"))
    ax = _gate_products(spec, x, w_x, gates, H, "ax", spec.attr("x_zp", 0), bias=b_x)
    ah = _gate_products(spec, h, w_h, gates, H, "ah", bias=b_h)
    px = _int_gates(spec, ax, mult_x, spec.attr("shift_x"), H, gates, "px")
    ph = _int_gates(spec, ah, mult_h, spec.attr("shift_h"), H, gates, "ph")
    pre = te.compute((H, gates), lambda j, g: _sat16(px[j, g] + ph[j, g]), name="pre")
    return [x, h], [w_x, b_x, mult_x, w_h, b_h, mult_h], pre


def _lstm_cell(spec: KernelSpec):
    """c' = σ(f)·c + σ(i)·tanh(g) from the i, f, g gate rows (the first 3H rows of PyTorch's i, f, g, o)."""
    H = spec.attr("hidden")
    ins, args, pre = _lstm_gates(spec, 3)
    if spec.dtype == F32:
        c = te.placeholder((H,), F32, "c")
        c_new = te.compute((H,), lambda j: _sigmoid(pre[j, 1]) * c[j] + _sigmoid(pre[j, 0]) * te.tanh(pre[j, 2]),
                           name="c_new")
        return ins + [c] + args + [c_new], "c_new", []
    c = te.placeholder((H,), I16, "c")
    sig, tanh = te.placeholder((LUT_SIZE,), I16, "sigmoid_lut"), te.placeholder((LUT_SIZE,), I16, "tanh_lut")
    act = te.compute((H, 3), lambda j, g: tvm.tirx.if_then_else(g == 2, _lut(pre[j, g], tanh), _lut(pre[j, g], sig)),
                     name="act")
    fc = spec.attr("c_frac")
    c_new = te.compute((H,), lambda j: _sat16(_mul_q15(act[j, 1], c[j]) +
                                             _rshift_round(act[j, 0] * act[j, 2], 2 * Q_STATE - fc)).astype(I16),
                       name="c_new")
    return ins + [c] + args + [sig, tanh, c_new], "c_new", []


def _lstm_out(spec: KernelSpec):
    """h' = σ(o)·tanh(c') from the o gate rows (the last H rows) and the new cell state."""
    H = spec.attr("hidden")
    ins, args, pre = _lstm_gates(spec, 1)
    if spec.dtype == F32:
        c_new = te.placeholder((H,), F32, "c_new")
        h_new = te.compute((H,), lambda j: _sigmoid(pre[j, 0]) * te.tanh(c_new[j]), name="h_new")
        return ins + [c_new] + args + [h_new], "h_new", []
    c_new = te.placeholder((H,), I16, "c_new")
    sig, tanh = te.placeholder((LUT_SIZE,), I16, "sigmoid_lut"), te.placeholder((LUT_SIZE,), I16, "tanh_lut")
    fc = spec.attr("c_frac")

    def to_q11(v):
        if fc > Q_GATE:
            return _rshift_round(v, fc - Q_GATE)
        return v.astype(I64) << _c(Q_GATE - fc, I64)

    h_new = te.compute((H,), lambda j: _mul_q15(_lut(pre[j, 0], sig), _lut(_sat16(to_q11(c_new[j])), tanh)).astype(I16),
                       name="h_new")
    return ins + [c_new] + args + [sig, tanh, h_new], "h_new", []


# ---- LMU ------------------------------------------------------------------------------------------------------------


def _scalar_product(spec, v, e, name, zp=0):
    n = int(v.shape[0])
    k = te.reduce_axis((0, n), f"k_{name}")
    if spec.dtype == F32:
        return te.compute((1,), lambda i: te.sum(v[k] * e[k], axis=k), name=name)
    return te.compute((1,), lambda i: te.sum((v[k].astype(I32) - zp) * e[k].astype(I32), axis=k), name=name)


def _lmu_memory(spec: KernelSpec):
    """u = e_x·x + e_h·h + e_m·m (once), then m' = Ā m + B̄ u per memory coefficient."""
    H, I, d = spec.attr("hidden"), spec.attr("inputs"), spec.attr("memory")
    x = _x_placeholder(spec, I)
    sdt = F32 if spec.dtype == F32 else I16
    h, m = te.placeholder((H,), sdt, "h"), te.placeholder((d,), sdt, "m")
    wdt = F32 if spec.dtype == F32 else I8
    e_x, e_h, e_m = (te.placeholder((n,), wdt, name) for n, name in ((I, "e_x"), (H, "e_h"), (d, "e_m")))
    ux = _scalar_product(spec, x, e_x, "ux", spec.attr("x_zp", 0))
    uh, um = _scalar_product(spec, h, e_h, "uh"), _scalar_product(spec, m, e_m, "um")
    j = te.reduce_axis((0, d), "j")
    if spec.dtype == F32:
        a, b = te.placeholder((d, d), F32, "A_bar"), te.placeholder((d,), F32, "B_bar")
        u = te.compute((1,), lambda i: ux[i] + uh[i] + um[i], name="u")
        am = te.compute((d,), lambda i: te.sum(a[i, j] * m[j], axis=j), name="am")
        out = te.compute((d,), lambda i: am[i] + b[i] * u[0], name="m_new")
        return [x, h, m, e_x, e_h, e_m, a, b, out], "m_new", [], {"ux", "uh", "um", "u"}
    a, bm = te.placeholder((d, d), I16, "A_bar"), te.placeholder((d,), I8, "B_bar")
    mult_b = te.placeholder((d,), I32, "mult_b")

    def part(acc, tag):
        return _rq(acc, _c(spec.attr(f"mult_u{tag}"), I32), spec.attr(f"shift_u{tag}"))

    u = te.compute((1,), lambda i: _sat16(part(ux[i], "x") + part(uh[i], "h") + part(um[i], "m")), name="u")
    am = te.compute((d,), lambda i: te.sum(a[i, j].astype(I64) * m[j].astype(I64), axis=j), name="am")
    out = te.compute((d,), lambda i: _sat16(_rshift_round(am[i], spec.attr("a_frac"))
                                                 + _rq(u[0] * bm[i].astype(I64), mult_b[i], spec.attr("shift_b"))
                                                 ).astype(I16), name="m_new")
    return [x, h, m, e_x, e_h, e_m, a, bm, mult_b, out], "m_new", [], {"ux", "uh", "um", "u"}


def _lmu_hidden(spec: KernelSpec):
    """h' = f(W_x x + W_h h + W_m m' + b) per hidden unit."""
    H, I, d = spec.attr("hidden"), spec.attr("inputs"), spec.attr("memory")
    x = _x_placeholder(spec, I)
    sdt = F32 if spec.dtype == F32 else I16
    h, m = te.placeholder((H,), sdt, "h"), te.placeholder((d,), sdt, "m_new")
    if spec.dtype == F32:
        w_x, w_h = te.placeholder((H, I), F32, "w_x"), te.placeholder((H, H), F32, "w_h")
        w_m, b = te.placeholder((H, d), F32, "w_m"), te.placeholder((H,), F32, "bias")
        px = _gate_products(spec, x, w_x, 1, H, "px", bias=b)
        ph, pm = _gate_products(spec, h, w_h, 1, H, "ph"), _gate_products(spec, m, w_m, 1, H, "pm")
        act = te.tanh if spec.attr("activation") == "tanh" else (lambda v: te.max(v, _c(0.0, F32)))
        out = te.compute((H,), lambda j: act(px[j, 0] + ph[j, 0] + pm[j, 0]), name="h_new")
        return [x, h, m, w_x, w_h, w_m, b, out], "h_new", []
    tanh = te.placeholder((LUT_SIZE,), I16, "tanh_lut")
    args, parts = [], []
    for v, tag, n_in, zp in ((x, "x", I, spec.attr("x_zp", 0)), (h, "h", H, 0), (m, "m", d, 0)):
        w, b = te.placeholder((H, n_in), I8, f"w_{tag}"), te.placeholder((H,), I32, f"b_{tag}")
        mult = te.placeholder((H,), I32, f"mult_{tag}")
        acc = _gate_products(spec, v, w, 1, H, f"a{tag}", zp, bias=b)
        parts.append(_int_gates(spec, acc, mult, spec.attr(f"shift_{tag}"), H, 1, f"p{tag}"))
        args += [w, b, mult]
    px, ph, pm = parts
    out = te.compute((H,), lambda j: _lut(_sat16(px[j, 0] + ph[j, 0] + pm[j, 0]), tanh).astype(I16),
                     name="h_new")
    return [x, h, m] + args + [tanh, out], "h_new", []


# ---- state-space layers (edgekit/layers/ssm.py) ---------------------------------------------------------------------
# Two kernels per layer, as the LSTM has: the state update (one loop over channels, u_j computed inside it) and the
# output (u recomputed: H·I MACs, so that each kernel has one output and one channel loop).


def _s4d_u(spec: KernelSpec, x):
    """u = W_in x + b per channel (int8: rescaled to Qfu and saturated), and the kernel's parameters for it."""
    H, I = spec.attr("hidden"), spec.attr("inputs")
    if spec.dtype == F32:
        w_in, b_in = te.placeholder((H, I), F32, "w_in"), te.placeholder((H,), F32, "b_in")
        u = _gate_products(spec, x, w_in, 1, H, "u2", bias=b_in)
        return te.compute((H,), lambda j: u[j, 0], name="u"), [w_in, b_in]
    w_in, b_in = te.placeholder((H, I), I8, "w_in"), te.placeholder((H,), I32, "b_in")
    mult_u = te.placeholder((H,), I32, "mult_u")
    acc = _gate_products(spec, x, w_in, 1, H, "au", spec.attr("x_zp", 0), bias=b_in)
    return te.compute((H,), lambda j: _sat16(_rq(acc[j, 0], mult_u[j], spec.attr("shift_u"))), name="u"), \
        [w_in, b_in, mult_u]


def _s4d_state(spec: KernelSpec):
    """S4D state update: s'[j, :] = ā[j, :] ⊙ s[j, :] + b̄[j, :] u_j (int8: ā in Q15, s in Qfs)."""
    H, I, N = spec.attr("hidden"), spec.attr("inputs"), spec.attr("state")
    x = _x_placeholder(spec, I)
    sdt = F32 if spec.dtype == F32 else I16
    s = te.placeholder((H, N), sdt, "s")
    u, args = _s4d_u(spec, x)
    if spec.dtype == F32:
        a, b = te.placeholder((H, N), F32, "a_bar"), te.placeholder((H, N), F32, "b_bar")
        s_new = te.compute((H, N), lambda j, i: a[j, i] * s[j, i] + b[j, i] * u[j], name="s_new")
        return [x, s] + args + [a, b, s_new], ("s_new", 0), []
    a, b = te.placeholder((H, N), I16, "a_bar"), te.placeholder((H, N), I8, "b_bar")
    mult_b = te.placeholder((H,), I32, "mult_b")
    # (products of two int16 values in int32, widened once: Cortex-M's 32x32->64 multiply, not a 64-bit one)
    s_new = te.compute((H, N), lambda j, i: _sat16(
        _rshift_round32(a[j, i].astype(I32) * s[j, i].astype(I32), Q_STATE)
        + _rq(b[j, i].astype(I32) * u[j].astype(I32), mult_b[j], spec.attr("shift_b"))).astype(I16), name="s_new")
    return [x, s] + args + [a, b, mult_b, s_new], ("s_new", 0), []


def _s4d_out(spec: KernelSpec):
    """S4D output: h'_j = tanh(Σ_n C[j, n] s'[j, n] + D_j u_j) (int8: the sum in Q11, tanh from the table)."""
    H, I, N = spec.attr("hidden"), spec.attr("inputs"), spec.attr("state")
    x = _x_placeholder(spec, I)
    n = te.reduce_axis((0, N), "n")
    u, args = _s4d_u(spec, x)
    if spec.dtype == F32:
        s = te.placeholder((H, N), F32, "s_new")
        c, d = te.placeholder((H, N), F32, "C"), te.placeholder((H,), F32, "D")
        y = te.compute((H,), lambda j: te.sum(c[j, n] * s[j, n], axis=n), name="y")
        h_new = te.compute((H,), lambda j: te.tanh(y[j] + d[j] * u[j]), name="h_new")
        return [x, s] + args + [c, d, h_new], "h_new", []
    s = te.placeholder((H, N), I16, "s_new")
    c, mult_c = te.placeholder((H, N), I8, "C"), te.placeholder((H,), I32, "mult_c")
    d, mult_d = te.placeholder((H,), I8, "D"), te.placeholder((H,), I32, "mult_d")
    tanh = te.placeholder((LUT_SIZE,), I16, "tanh_lut")
    y = te.compute((H,), lambda j: te.sum(c[j, n].astype(I32) * s[j, n].astype(I32), axis=n), name="y")
    h_new = te.compute((H,), lambda j: _lut(_sat16(
        _rq(y[j], mult_c[j], spec.attr("shift_c"))
        + _rq(u[j].astype(I32) * d[j].astype(I32), mult_d[j], spec.attr("shift_d"))), tanh).astype(I16), name="h_new")
    return [x, s] + args + [c, mult_c, d, mult_d, tanh, h_new], "h_new", []


def _selective_u(spec, x):
    """u, B_t and C_t (float32), computed once per step before the channel loop."""
    H, I, N = spec.attr("hidden"), spec.attr("inputs"), spec.attr("state")
    w_in, b_in = te.placeholder((H, I), F32, "w_in"), te.placeholder((H,), F32, "b_in")
    k = te.reduce_axis((0, I), "k")
    u_sum = te.compute((H,), lambda j: te.sum(x[k] * w_in[j, k], axis=k), name="u_sum")
    u = te.compute((H,), lambda j: u_sum[j] + b_in[j], name="u")
    return u, [w_in, b_in], {"u_sum", "u"}


def _shift_round(v, k: int):
    """v · 2^−k: qmath's rounding right shift for k > 0, an exact left shift for k <= 0 (int64)."""
    return _rshift_round(v, k) if k > 0 else v.astype(I64) * _c(1 << -k, I64)


def _selective_state_int(spec: KernelSpec):
    """Selective scan, state (int8 weights, int16 values; edgekit/qrecurrent.py's _selective_step)."""
    H, I, N = spec.attr("hidden"), spec.attr("inputs"), spec.attr("state")
    x = _x_placeholder(spec, I)
    s = te.placeholder((H, N), I16, "s")
    u, args = _s4d_u(spec, x)
    w_dt, b_dt, mult_dt = (te.placeholder((H, H), I8, "w_dt"), te.placeholder((H,), I32, "b_dt"),
                           te.placeholder((H,), I32, "mult_dt"))
    w_b, mult_bt = te.placeholder((N, H), I8, "w_b"), te.placeholder((N,), I32, "mult_bt")
    neg_a = te.placeholder((H, N), I16, "neg_a")
    softplus, exp = te.placeholder((LUT_SIZE,), I16, "softplus_lut"), te.placeholder((LUT_SIZE,), I16, "exp_lut")
    kb, kd = te.reduce_axis((0, H), "kb"), te.reduce_axis((0, H), "kd")
    bt_sum = te.compute((N,), lambda i: te.sum(u[kb].astype(I32) * w_b[i, kb].astype(I32), axis=kb), name="bt_sum")
    bt = te.compute((N,), lambda i: _sat16(_rq(bt_sum[i], mult_bt[i], spec.attr("shift_bt"))), name="bt")
    z_sum = te.compute((H,), lambda j: te.sum(u[kd].astype(I32) * w_dt[j, kd].astype(I32), axis=kd), name="z_sum")
    dt = te.compute((H,), lambda j: _lut(_sat16(_rq(z_sum[j] + b_dt[j], mult_dt[j], spec.attr("shift_dt"))),
                                         softplus), name="dt")
    g = te.compute((H,), lambda j: _sat16(_shift_round(dt[j].astype(I32) * u[j].astype(I32), spec.attr("shift_g"))),
                   name="g")
    s_new = te.compute((H, N), lambda j, i: _sat16(
        _rshift_round32(_lut(_sat16(_shift_round(dt[j].astype(I32) * neg_a[j, i].astype(I32), spec.attr("a_frac"))),
                             exp).astype(I32) * s[j, i].astype(I32), Q_STATE)
        + _shift_round(g[j].astype(I32) * bt[i].astype(I32), spec.attr("shift_s"))).astype(I16), name="s_new")
    tensors = [x, s] + args + [w_dt, b_dt, mult_dt, w_b, mult_bt, neg_a, softplus, exp, s_new]
    return tensors, ("s_new", 0), [], {"au_sum", "au", "u", "bt_sum", "bt"}


def _selective_out_int(spec: KernelSpec):
    """Selective scan, output (int8 weights, int16 values): C_t in Qf_c; h' = tanh(C_t·s' (to Q11) + D u)."""
    H, I, N = spec.attr("hidden"), spec.attr("inputs"), spec.attr("state")
    x = _x_placeholder(spec, I)
    s = te.placeholder((H, N), I16, "s_new")
    u, args = _s4d_u(spec, x)
    w_c, mult_ct = te.placeholder((N, H), I8, "w_c"), te.placeholder((N,), I32, "mult_ct")
    d, mult_d = te.placeholder((H,), I8, "D"), te.placeholder((H,), I32, "mult_d")
    tanh = te.placeholder((LUT_SIZE,), I16, "tanh_lut")
    kc, n = te.reduce_axis((0, H), "kc"), te.reduce_axis((0, N), "n")
    ct_sum = te.compute((N,), lambda i: te.sum(u[kc].astype(I32) * w_c[i, kc].astype(I32), axis=kc), name="ct_sum")
    ct = te.compute((N,), lambda i: _sat16(_rq(ct_sum[i], mult_ct[i], spec.attr("shift_ct"))), name="ct")
    y = te.compute((H,), lambda j: te.sum((ct[n].astype(I32) * s[j, n].astype(I32)).astype(I64), axis=n), name="y")
    h_new = te.compute((H,), lambda j: _lut(_sat16(
        _shift_round(y[j], spec.attr("shift_y"))
        + _rq(u[j].astype(I32) * d[j].astype(I32), mult_d[j], spec.attr("shift_d"))), tanh).astype(I16), name="h_new")
    return [x, s] + args + [w_c, mult_ct, d, mult_d, tanh, h_new], "h_new", [], {"au_sum", "au", "u", "ct_sum", "ct"}


def _selective_state(spec: KernelSpec):
    """Selective scan, state (float32): Δ = softplus(W_Δ u + b_Δ); B_t = W_B u;
    s'[j, i] = exp(Δ_j A_ji) s[j, i] + Δ_j B_t[i] u_j."""
    if spec.dtype != F32:
        return _selective_state_int(spec)
    H, I, N = spec.attr("hidden"), spec.attr("inputs"), spec.attr("state")
    x = _x_placeholder(spec, I)
    s = te.placeholder((H, N), F32, "s")
    u, args, root = _selective_u(spec, x)
    w_dt, b_dt = te.placeholder((H, H), F32, "w_dt"), te.placeholder((H,), F32, "b_dt")
    w_b, neg_a = te.placeholder((N, H), F32, "w_b"), te.placeholder((H, N), F32, "neg_a")
    kb, kd = te.reduce_axis((0, H), "kb"), te.reduce_axis((0, H), "kd")
    bt = te.compute((N,), lambda i: te.sum(w_b[i, kb] * u[kb], axis=kb), name="bt")
    z_sum = te.compute((H,), lambda j: te.sum(w_dt[j, kd] * u[kd], axis=kd), name="z_sum")
    # softplus(z) = max(z, 0) + log(1 + exp(-|z|)), stable for any z (-|z| as min(z, -z): no fabs in TVM's C)
    z = te.compute((H,), lambda j: z_sum[j] + b_dt[j], name="z")
    dt = te.compute((H,), lambda j: te.max(z[j], _c(0.0, F32)) + te.log(_c(1.0, F32) + te.exp(te.min(z[j], -z[j]))),
                    name="dt")
    s_new = te.compute((H, N), lambda j, i: te.exp(dt[j] * neg_a[j, i]) * s[j, i] + dt[j] * bt[i] * u[j],
                       name="s_new")
    return [x, s] + args + [w_dt, b_dt, w_b, neg_a, s_new], ("s_new", 0), [], root | {"bt"}


def _selective_out(spec: KernelSpec):
    """Selective scan, output (float32): C_t = W_C u;  h'_j = tanh(Σ_i C_t[i] s'[j, i] + D_j u_j)."""
    if spec.dtype != F32:
        return _selective_out_int(spec)
    H, I, N = spec.attr("hidden"), spec.attr("inputs"), spec.attr("state")
    x = _x_placeholder(spec, I)
    s = te.placeholder((H, N), F32, "s_new")
    u, args, root = _selective_u(spec, x)
    w_c, d = te.placeholder((N, H), F32, "w_c"), te.placeholder((H,), F32, "D")
    kc, n = te.reduce_axis((0, H), "kc"), te.reduce_axis((0, N), "n")
    ct = te.compute((N,), lambda i: te.sum(w_c[i, kc] * u[kc], axis=kc), name="ct")
    y = te.compute((H,), lambda j: te.sum(ct[n] * s[j, n], axis=n), name="y")
    h_new = te.compute((H,), lambda j: te.tanh(y[j] + d[j] * u[j]), name="h_new")
    return [x, s] + args + [w_c, d, h_new], "h_new", [], root | {"ct"}


# ---- the head's int8 input ------------------------------------------------------------------------------------------


def _requant_q15(spec: KernelSpec):
    """int16 Q15 output of a layer -> the head's int8 input: clamp(zp + rq(h, M, sh))."""
    H = spec.attr("hidden")
    h = te.placeholder((H,), I16, "h")
    out = te.compute((H,), lambda j: te.max(te.min(
        _rq(h[j], _c(spec.attr("mult"), I32), spec.attr("shift")) + _c(spec.attr("zp"), I64),
        _c(127, I64)), _c(-128, I64)).astype(I8), name="out")
    return [h, out], "out", []


def _trace(spec: KernelSpec):
    """The EGRU's output trace (edgekit/layers/egru.py EventTrace): tr' = α·tr + (1 − α)·x in float32; in int8
    tr' = tr + mul_q15(k, x − tr) on Q15 values, k = round((1 − α)·2^15) (edgekit/qrecurrent.py)."""
    H = spec.attr("hidden")
    if spec.dtype == F32:
        x, h = te.placeholder((H,), F32, "x"), te.placeholder((H,), F32, "h")
        a = spec.attr("decay")
        out = te.compute((H,), lambda j: _c(a, F32) * h[j] + _c(1.0 - a, F32) * x[j], name="h_new")
        return [x, h, out], "h_new", []
    x, h = te.placeholder((H,), I16, "x"), te.placeholder((H,), I16, "h")
    out = te.compute((H,), lambda j: _clip_state(
        h[j].astype(I64) + _mul_q15(_c(spec.attr("k"), I64), x[j].astype(I64) - h[j].astype(I64))).astype(I16),
                     name="h_new")
    return [x, h, out], "h_new", []


BUILDERS = {"gru_cell": _gru, "trace_cell": _trace, "lstm_cell": _lstm_cell, "lstm_out": _lstm_out, "egru_cell": _egru,
            "lmu_memory": _lmu_memory, "lmu_hidden": _lmu_hidden, "requant_q15": _requant_q15,
            "s4d_state": _s4d_state, "s4d_out": _s4d_out, "selective_state": _selective_state,
            "selective_out": _selective_out}


def schedule_cell(func: tvm.tirx.PrimFunc, anchor: str | tuple[str, int], after: list[str],
                  at_root: set[str] = frozenset()) -> tvm.tirx.PrimFunc:
    """One loop over the units, so that each unit's gate products, gate values and new state are computed together
    with accumulators on the stack. The loop is the unit loop of ``anchor`` (its last loop, or ``(name, index)``);
    the ``after`` blocks (outputs reading the anchor, each other and inputs) move under it in order, every other block
    is computed inside it, and reductions get their init right before their own loop. Blocks in ``at_root``
    (per-step scalars such as the LMU's u) stay before that loop."""
    sch = s_tir.Schedule(func)
    anchor, index = anchor if isinstance(anchor, tuple) else (anchor, -1)
    unit = sch.get_loops(sch.get_sblock(anchor))[index]
    for name in after:
        sch.reverse_compute_at(sch.get_sblock(name), unit)
    names = [sch.get(b).name_hint for b in sch.get_child_blocks(sch.get_sblock("root"))]
    for name in reversed(names):
        if name != anchor and name not in after and name not in at_root:
            sch.compute_at(sch.get_sblock(name), unit)
    for name in names:
        block = sch.get_sblock(name)
        reductions = sum(1 for iv in sch.get(block).iter_vars if iv.iter_type == 2)
        if not reductions:
            continue
        loops = sch.get_loops(block)
        red = loops[-reductions]
        gate = loops[-reductions - 1] if len(loops) > reductions else None
        gates = sch.get(gate).extent if gate is not None else None
        if gate is not None and not sch.get(gate).same_as(sch.get(unit)) and isinstance(gates, tvm.tirx.IntImm) \
                and 1 < int(gates) <= MAX_UNROLLED_GATES:
            # Register blocking: one pass over the inputs accumulates all gates of the unit (each input read once),
            # and the unrolled gate loop keeps the accumulators in registers.
            sch.reorder(red, gate)
            sch.decompose_reduction(block, red)
            sch.unroll(gate)
        else:
            sch.decompose_reduction(block, red)
    # The other short per-gate loops inside the unit loop (accumulator inits, rescaling, gate values) are unrolled
    # too: with constant indices only, GCC keeps the small per-unit arrays in registers.
    for block in _blocks_under(sch, unit):
        for loop in sch.get_loops(block):
            extent = sch.get(loop).extent
            if isinstance(extent, tvm.tirx.IntImm) and 1 < int(extent) <= MAX_UNROLLED_GATES and \
                    _is_inside(sch, loop, unit):
                sch.unroll(loop)
    return sch.mod["main"]


def _blocks_under(sch, loop) -> list:
    """The blocks nested in ``loop``."""
    return [b for b in sch.get_child_blocks(sch.get_sblock("root"))
            if any(sch.get(lp).same_as(sch.get(loop)) for lp in sch.get_loops(b))]


def _is_inside(sch, loop, unit) -> bool:
    """Whether ``loop`` is strictly inside ``unit``."""
    node = sch.get_sref(loop).parent
    target = sch.get_sref(unit)
    while node is not None:
        if node.same_as(target):
            return True
        node = node.parent
    return False


MAX_UNROLLED_GATES = 4


def build_kernel(spec: KernelSpec, symbol: str) -> tvm.tirx.PrimFunc:
    """The scheduled PrimFunc of a recurrent kernel ``spec`` (op in BUILDERS, or 'egru_recurrent')."""
    if spec.op == "egru_recurrent":
        func = _egru_recurrent(spec)
    else:
        tensors, anchor, after, *at_root = BUILDERS[spec.op](spec)
        func = schedule_cell(te.create_prim_func(tensors), anchor, after, *at_root)
    return func.with_attr("global_symbol", symbol)


def argument_names(spec: KernelSpec) -> list[str]:
    """The kernel's parameters in call order (placeholders, then outputs)."""
    func = build_kernel(spec, "probe")
    return [p.name for p in func.params]
