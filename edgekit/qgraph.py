"""The integer-only int8 graph and its host reference.

Where it sits: after ``converters.quantize`` has chosen scales, :func:`lower` turns the deployment graph into
integers — int8 weights, int32 biases, fixed-point multipliers and shifts, clamp bounds, lookup tables — exactly as
an int8 kernel consumes them (edgekit/qmath.py defines the arithmetic). :func:`run_int8` executes that description on
the host with numpy; every int8 target (the Cortex-M firmware above all) must reproduce its outputs bit for bit.

Per operator (x, y: int8 codes; z: zero points; s: scales):

* conv/linear: acc = b_q + Σ (x − z_x)·w_q; y = clamp(z_y + rshift_round(acc·M, sh)), M·2^-sh ≈ s_x·s_w/s_y
* add: y = clamp(z_y + rshift_round((a − z_a)·M_a + (b − z_b)·M_b, sh))
* avg pools: y = requantize(Σ (x − z_x)) with M ≈ s_x / (s_y · count)
* max pool, reshape, select: int8 values moved as they are (same scale)
* concat: each input requantized to the output's scale
* relu/relu6 alone: a clamp;  sigmoid/tanh/hardswish/silu/gelu/leaky_relu/elu/hardtanh/mish: a 256-entry lookup
  table built from the float function
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgekit import qmath
from edgekit.errors import UnsupportedError
from edgekit.graph import ACTIVATIONS, Graph, Node

INT8_OPS = ("input", "conv2d", "conv1d", "linear", "add", "maxpool2d", "avgpool2d", "global_avgpool", "reshape",
            "flatten", "select", "concat", "mul", "upsample", "transpose", "depth_to_space", "prelu", "pad", *ACTIVATIONS)
LUT_FUNCS = {
    "sigmoid": lambda v: 1.0 / (1.0 + np.exp(-v)),
    "tanh": np.tanh,
    "hardswish": lambda v: v * np.clip(v + 3.0, 0.0, 6.0) / 6.0,
    "hardsigmoid": lambda v: np.clip(v + 3.0, 0.0, 6.0) / 6.0,
    "relu": lambda v: np.maximum(v, 0.0),
    "relu6": lambda v: np.clip(v, 0.0, 6.0),
    "silu": lambda v: v / (1.0 + np.exp(-v)),
    "gelu": lambda v: 0.5 * v * (1.0 + np.frompyfunc(math.erf, 1, 1)(v / math.sqrt(2.0)).astype(np.float64)),
    "gelu_tanh": lambda v: 0.5 * v * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (v + 0.044715 * v ** 3))),
    "mish": lambda v: v * np.tanh(np.logaddexp(0.0, v)),
}


PARAM_LUT_OPS = ("leaky_relu", "elu", "hardtanh")  # tables whose function takes the layer's attributes


def lut_function(n: Node):
    """The float function an int8 table layer tabulates (GELU by its ``approximate`` attribute)."""
    a = n.attrs
    if n.op == "gelu" and a.get("approximate", "none") == "tanh":
        return LUT_FUNCS["gelu_tanh"]
    if n.op == "leaky_relu":
        return lambda v: np.where(v > 0, v, a["negative_slope"] * v)
    if n.op == "elu":
        return lambda v: np.where(v > 0, v, a["alpha"] * np.expm1(np.minimum(v, 0.0)))
    if n.op == "hardtanh":
        return lambda v: np.clip(v, a["min_val"], a["max_val"])
    return LUT_FUNCS[n.op]


@dataclass
class QNode:
    """A node with its integer parameters. ``q`` holds arrays/ints named as the kernels name them."""

    node: Node
    out_scale: float
    out_zp: int
    q: dict[str, Any] = field(default_factory=dict)


@dataclass
class QGraph:
    graph: Graph
    nodes: dict[str, QNode]
    notes: list[str] = field(default_factory=list)  # what the lowering had to change, one line per layer

    @property
    def input(self) -> QNode:
        return self.nodes[self.graph.inputs[0].name]

    def output(self, i: int = 0) -> QNode:
        return self.nodes[self.graph.outputs[i]]

    def quantize_input(self, x: np.ndarray) -> np.ndarray:
        qi = self.input
        return np.clip(np.round(x / qi.out_scale) + qi.out_zp, -128, 127).astype(np.int8)

    def dequantize_output(self, y: np.ndarray, i: int = 0) -> np.ndarray:
        qo = self.output(i)
        return (y.astype(np.float32) - qo.out_zp) * qo.out_scale


INT32_MAX = 2**31 - 1


def fit_bias(layer: str, w: np.ndarray, b: np.ndarray, in_scale: float, ws: np.ndarray):
    """int8 weights and int32 biases of a conv/linear layer whose int32 accumulator cannot overflow.

    The accumulator is ``bias_q + sum((x - x_zp) * w_q)`` with ``|x - x_zp| <= 255``, so it stays in int32 as long as
    ``|bias_q[c]| <= 2**31 - 1 - 255 * sum|w_q[c]|``. A bias that is large next to ``in_scale * w_scale`` (a layer
    whose input has almost died, as in an untrained network) would break that: it would clip and then wrap where
    kernels fold the zero point into it. Then, as TensorFlow Lite's converter does, the channel's weight scale is
    raised until its bias fits in half of int32 (the weights lose precision in that channel, the bias is exact).
    Returns (weight scales, int8 weights, int32 biases, channels raised). Raises UnsupportedError when even that
    cannot make the layer fit (a fan-in beyond ~33,000 inputs of full-range weights)."""
    bshape = (-1,) + (1,) * (w.ndim - 1)
    ws = np.asarray(ws, dtype=np.float64).copy()
    raised = np.zeros(len(ws), dtype=bool)
    for _ in range(3):
        w_q = np.clip(np.round(w / ws.reshape(bshape)), -127, 127)
        b_real = b / (in_scale * ws)
        room = INT32_MAX - 255.0 * np.abs(w_q).reshape(len(ws), -1).sum(axis=1)
        over = np.abs(b_real) > room
        if not over.any():
            return ws, w_q.astype(np.int8), np.round(b_real).astype(np.int32), int(raised.sum())
        ws = np.where(over, np.maximum(ws, np.abs(b) / (in_scale * 2.0**30)), ws)
        raised |= over
    raise UnsupportedError(f"layer '{layer}': its int32 accumulator could overflow even with raised weight scales "
                           f"(bias up to {np.abs(b).max():.3g} at input scale {in_scale:.3g}); keep this layer in "
                           "float32 (omit --quantize) or recalibrate with data that keeps its input alive")


def unsupported_int8(graph: Graph) -> list[str]:
    return [f"'{n.name}' ({n.op})" for n in graph.nodes if n.op not in INT8_OPS]


def lower(graph: Graph, quant) -> QGraph:
    """Integer parameters for every node of ``graph`` from the QuantParams ``quant``."""
    bad = unsupported_int8(graph)
    if bad:
        raise UnsupportedError(f"{len(bad)} layer(s) have no int8 implementation: {', '.join(bad)}; "
                               "compile them in float32 (omit --quantize)")
    acts = quant.activations
    out: dict[str, QNode] = {}
    notes: list[str] = []
    for n in graph.nodes:
        a = acts[n.name]
        qn = QNode(n, float(a.scale), int(a.zero_point))
        out[n.name] = qn
        if n.op == "input":
            continue
        ins = [out[i] for i in n.inputs]
        if n.op in ("conv2d", "conv1d", "linear"):
            x = ins[0]
            w = n.params["weight"].astype(np.float64)
            b = n.params.get("bias", np.zeros(w.shape[0], np.float32)).astype(np.float64)
            ws, w_q, b_q, raised = fit_bias(n.name, w, b, x.out_scale,
                                            np.asarray(quant.weight_scales[n.name], dtype=np.float64))
            if raised:
                notes.append(f"layer '{n.name}': the bias of {raised} channel(s) does not fit int32 at input scale "
                             f"{x.out_scale:.3g}; their weight scales were raised so it does (as TFLite's converter "
                             "does), which costs those channels weight precision")
            real = x.out_scale * ws / qn.out_scale
            mult, shift = qmath.quantize_multipliers(real)
            lo, hi = qmath.activation_range(n.attrs.get("activation"), qn.out_scale, qn.out_zp)
            qn.q.update(weight=w_q, bias=b_q, mult=mult, shift=shift, in_zp=x.out_zp, act_min=lo, act_max=hi,
                        w_scale=ws)
        elif n.op == "add":
            # A common shift keeps both multipliers below 2**31, so (x − z)·M stays far inside int64; 15
            # significant bits each (qmath.add_multipliers: one SMLAD an element on the DSP cores)
            ma, mb, sh = qmath.add_multipliers(ins[0].out_scale / qn.out_scale, ins[1].out_scale / qn.out_scale)
            lo, hi = qmath.activation_range(n.attrs.get("activation"), qn.out_scale, qn.out_zp)
            qn.q.update(a_zp=ins[0].out_zp, b_zp=ins[1].out_zp, a_mult=ma, b_mult=mb, shift=sh, act_min=lo,
                        act_max=hi)
        elif n.op == "mul":  # elementwise product; the second input may be per channel ([N, C, 1, 1], a gate)
            m, sh = qmath.quantize_multiplier(ins[0].out_scale * ins[1].out_scale / qn.out_scale)
            lo, hi = qmath.activation_range(n.attrs.get("activation"), qn.out_scale, qn.out_zp)
            qn.q.update(a_zp=ins[0].out_zp, b_zp=ins[1].out_zp, mult=m, shift=sh, act_min=lo, act_max=hi)
        elif n.op in ("avgpool2d", "global_avgpool"):
            if n.op == "avgpool2d":
                if any(p != 0 for p in n.attrs["padding"]) and not n.attrs.get("count_include_pad", True):
                    raise UnsupportedError(f"layer '{n.name}': int8 average pooling with padding and "
                                           "count_include_pad=False")
                count = int(np.prod(n.attrs["kernel_size"]))
            else:
                count = int(np.prod(graph[n.inputs[0]].shape[2:]))
            mult, shift = qmath.quantize_multiplier(ins[0].out_scale / (qn.out_scale * count))
            qn.q.update(in_zp=ins[0].out_zp, mult=mult, shift=shift, count=count)
        elif n.op == "concat":
            parts = []
            for x in ins:
                m, s = qmath.quantize_multiplier(x.out_scale / qn.out_scale)
                parts.append((x.out_zp, m, s))
            qn.q.update(parts=parts)
        elif n.op == "prelu":  # (x - zp) times s_in / s_out, or a_c · s_in / s_out below zero: signed multipliers
            x = ins[0]
            pos_mult, pos_shift = qmath.quantize_multiplier(x.out_scale / qn.out_scale)
            real = n.params["weight"].astype(np.float64) * x.out_scale / qn.out_scale
            mult, shift = qmath.quantize_multipliers(np.abs(real))
            qn.q.update(in_zp=int(x.out_zp), pos_mult=int(pos_mult), pos_shift=int(pos_shift),
                        neg_mult=(np.sign(real) * mult).astype(np.int32), neg_shift=shift.astype(np.int32))
        elif n.op in LUT_FUNCS or n.op in PARAM_LUT_OPS:
            x = ins[0]
            codes = np.arange(-128, 128, dtype=np.float64)
            real = lut_function(n)((codes - x.out_zp) * x.out_scale)
            lut = np.clip(np.round(real / qn.out_scale) + qn.out_zp, -128, 127).astype(np.int8)
            qn.q.update(lut=lut)
        elif n.op in ("maxpool2d", "reshape", "flatten", "select", "transpose", "depth_to_space", "pad"):
            pass
    return QGraph(graph, out, notes)


# ---- host reference ---------------------------------------------------------------------------------------------


def _conv_acc(x: np.ndarray, qn: QNode) -> np.ndarray:
    """int32 accumulators of a conv/linear, computed exactly (float64 holds these integer sums exactly). A grouped
    conv (depthwise) whose every partial sum stays below 2^24 — at most 513 products of a (x − z_x) in [−255, 255] and
    an int8 weight — runs in float32, exact too and some 40x faster in torch than its float64 grouped conv; the bias is
    then added in integers (a 16x96x48x48 3x3 depthwise conv 1.46 s -> 0.04 s; zoo EfficientNet-B0's compile for the
    M7, which runs the reference three times, 9.0 s -> 8.0 s)."""
    import torch  # the host reference runs on torch's kernels; planning and estimates never get here
    import torch.nn.functional as F

    n = qn.node
    a = n.attrs
    weight = qn.q["weight"]
    if n.op != "linear" and a["groups"] > 1 and int(np.prod(weight.shape[1:])) * 255 * 128 < 2 ** 24:
        conv = F.conv2d if n.op == "conv2d" else F.conv1d
        xs = torch.from_numpy((x.astype(np.int32) - qn.q["in_zp"]).astype(np.float32))
        acc = conv(xs, torch.from_numpy(weight.astype(np.float32)), None, a["stride"], a["padding"], a["dilation"],
                   a["groups"]).numpy().astype(np.int64)
        return acc + qn.q["bias"].astype(np.int64).reshape((-1,) + (1,) * (acc.ndim - 2))
    xs = torch.from_numpy(x.astype(np.float64) - qn.q["in_zp"])
    w = torch.from_numpy(weight.astype(np.float64))
    b = torch.from_numpy(qn.q["bias"].astype(np.float64))
    if n.op == "linear":
        acc = F.linear(xs, w, b)
    else:
        conv = F.conv2d if n.op == "conv2d" else F.conv1d
        acc = conv(xs, w, b, a["stride"], a["padding"], a["dilation"], a["groups"])
    return acc.numpy().astype(np.int64)


def _requant_channels(acc: np.ndarray, qn: QNode, channel_axis: int) -> np.ndarray:
    acc = np.moveaxis(acc, channel_axis, -1)
    y = qmath.requantize(acc, qn.q["mult"], qn.q["shift"], qn.out_zp, qn.q["act_min"], qn.q["act_max"])
    return np.moveaxis(y, -1, channel_axis)


def run_node_int8(qn: QNode, xs: list[np.ndarray], graph: Graph) -> np.ndarray:
    import torch
    import torch.nn.functional as F

    from edgekit.importers.torch_fx import index_tuple

    n, q = qn.node, qn.q
    if n.op in ("conv2d", "conv1d"):
        return _requant_channels(_conv_acc(xs[0], qn), qn, 1)
    if n.op == "linear":
        return _requant_channels(_conv_acc(xs[0], qn), qn, -1)
    if n.op == "add":
        acc = (xs[0].astype(np.int64) - q["a_zp"]) * q["a_mult"] + (xs[1].astype(np.int64) - q["b_zp"]) * q["b_mult"]
        y = qmath.rshift_round(acc, q["shift"]) + qn.out_zp
        return np.clip(y, q["act_min"], q["act_max"]).astype(np.int8)
    if n.op == "mul":
        acc = (xs[0].astype(np.int64) - q["a_zp"]) * (xs[1].astype(np.int64) - q["b_zp"])  # numpy broadcasts
        return qmath.requantize(acc, q["mult"], q["shift"], qn.out_zp, q["act_min"], q["act_max"])
    if n.op == "maxpool2d":
        a = n.attrs
        t = torch.from_numpy(xs[0].astype(np.float32))
        # Padding never wins a max: pad with the smallest code.
        if any(a["padding"]):
            p = a["padding"]
            t = F.pad(t, (p[1], p[1], p[0], p[0]), value=-128.0)
        y = F.max_pool2d(t, a["kernel_size"], a["stride"], 0, ceil_mode=a.get("ceil_mode", False))
        return y.numpy().astype(np.int8)
    if n.op in ("avgpool2d", "global_avgpool"):
        xc = torch.from_numpy(xs[0].astype(np.float64) - q["in_zp"])
        if n.op == "global_avgpool":
            acc = xc.sum(dim=tuple(range(2, xc.dim())), keepdim=True)
        else:
            a = n.attrs
            acc = F.avg_pool2d(xc, a["kernel_size"], a["stride"], a["padding"], ceil_mode=a.get("ceil_mode", False),
                               count_include_pad=True, divisor_override=1)
        return qmath.requantize(np.round(acc.numpy()).astype(np.int64), q["mult"], q["shift"], qn.out_zp)
    if n.op == "concat":
        parts = []
        for x, (zp, m, s) in zip(xs, q["parts"]):
            parts.append(qmath.requantize(x.astype(np.int64) - zp, m, s, qn.out_zp))
        return np.concatenate(parts, axis=n.attrs["dim"])
    if n.op == "upsample":
        if n.attrs.get("mode", "nearest") == "bilinear":
            return qmath.bilinear_upsample(xs[0], n.attrs["scale"])
        return xs[0].repeat(n.attrs["scale"][0], axis=2).repeat(n.attrs["scale"][1], axis=3)
    if n.op in ("reshape", "flatten"):
        return xs[0].reshape((xs[0].shape[0],) + tuple(n.shape[1:]))
    if n.op == "select":
        return xs[0][index_tuple(n.attrs["index"])]
    if n.op == "transpose":
        return np.ascontiguousarray(xs[0].transpose(n.attrs["perm"]))
    if n.op == "pad":  # the zero point is real 0 (a pad keeps its input's quantization)
        p = n.attrs["pads"]
        width = [(0, 0), (0, 0)] + ([(p[0], p[1]), (p[2], p[3])] if len(p) == 4 else [(p[0], p[1])])
        return np.pad(xs[0], width, constant_values=qn.out_zp)
    if n.op == "prelu":
        v = xs[0].astype(np.int64) - q["in_zp"]
        per = (1, -1) + (1,) * (v.ndim - 2)
        pos = qmath.rshift_round(v * q["pos_mult"], q["pos_shift"])
        neg = qmath.rshift_round(v * q["neg_mult"].astype(np.int64).reshape(per), q["neg_shift"].reshape(per))
        return np.clip(np.where(v >= 0, pos, neg) + qn.out_zp, -128, 127).astype(np.int8)
    if n.op == "depth_to_space" and xs[0].ndim == 3:  # along a sequence
        (s,), (b, c, length) = n.attrs["block"], xs[0].shape
        y = xs[0].reshape(b, s, c // s, length).transpose(0, 2, 3, 1) if n.attrs["mode"] == "DCR" else \
            xs[0].reshape(b, c // s, s, length).transpose(0, 1, 3, 2)
        return np.ascontiguousarray(y.reshape(b, c // s, length * s))
    if n.op == "depth_to_space":
        (rh, rw), (b, c, h, w) = n.attrs["block"], xs[0].shape
        c //= rh * rw
        y = xs[0].reshape(b, rh, rw, c, h, w).transpose(0, 3, 4, 1, 5, 2) if n.attrs["mode"] == "DCR" else \
            xs[0].reshape(b, c, rh, rw, h, w).transpose(0, 1, 4, 2, 5, 3)
        return np.ascontiguousarray(y.reshape(b, c, h * rh, w * rw))
    if n.op in LUT_FUNCS or n.op in PARAM_LUT_OPS:
        return q["lut"][xs[0].astype(np.int16) + 128]
    raise UnsupportedError(f"layer '{n.name}': no int8 reference for '{n.op}'")


def prelu_tables(qn: QNode) -> np.ndarray:
    """A per-channel PReLU's int8 outputs for every input code (-128..127) of every channel, [C, 256]: the reference
    below applied to all codes (a kernel indexing these tables is bit-exact by construction)."""
    c = int(qn.node.params["weight"].size)
    codes = np.tile(np.arange(-128, 128, dtype=np.int8), (1, c, 1))  # [1, C, 256]: a sequence of 256 codes a channel
    return run_node_int8(qn, [codes], None)[0]


def run_int8(qg: QGraph, x_int8: np.ndarray, keep_all: bool = False) -> dict[str, np.ndarray]:
    """Execute the integer graph on int8 inputs (batch first). Returns output name -> int8 array."""
    values = {qg.graph.inputs[0].name: np.asarray(x_int8, dtype=np.int8)}
    for n in qg.graph.nodes:
        if n.op == "input":
            continue
        values[n.name] = run_node_int8(qg.nodes[n.name], [values[i] for i in n.inputs], qg.graph)
    keep = values.keys() if keep_all else qg.graph.outputs
    return {k: values[k] for k in keep}


def predict_int8(qg: QGraph, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Float in, float out through the integer graph (quantize input, run, dequantize output)."""
    outs = []
    for i in range(0, len(x), batch_size):
        y = run_int8(qg, qg.quantize_input(x[i:i + batch_size]))[qg.graph.outputs[0]]
        outs.append(qg.dequantize_output(y))
    return np.concatenate(outs, 0)
