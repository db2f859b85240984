"""Float execution of an edgekit Graph with torch operators.

Where it sits: the check that an import is faithful (graph outputs equal the module's), and the float reference for
graphs that were not built from a torch module (``.onnx`` files). Targets compare their own runs against it.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from edgekit.graph import Graph, Node
from edgekit.importers.torch_fx import index_tuple

_UNARY = {"relu": torch.relu, "relu6": lambda x: F.relu6(x), "hardswish": F.hardswish, "sigmoid": torch.sigmoid,
          "tanh": torch.tanh, "hardsigmoid": F.hardsigmoid, "silu": F.silu}


def _t(a: np.ndarray | None) -> torch.Tensor | None:
    return None if a is None else torch.from_numpy(np.require(a, requirements=["C", "W"]))  # (a copy if read-only)


def _activation(node: Node, y: torch.Tensor) -> torch.Tensor:
    act = node.attrs.get("activation")
    return _UNARY[act](y) if act else y


def _rnn(node: Node, x: torch.Tensor) -> torch.Tensor:
    p = {k: _t(v) for k, v in node.params.items()}
    hs = node.attrs["hidden_size"]
    if not node.attrs.get("batch_first", False):
        x = x.transpose(0, 1)
    b, steps, _ = x.shape
    h = torch.zeros(b, hs)
    c = torch.zeros(b, hs)
    outs = []
    bih = p.get("bias_ih", torch.zeros(p["weight_ih"].shape[0]))
    bhh = p.get("bias_hh", torch.zeros(p["weight_hh"].shape[0]))
    for t in range(steps):
        gi = x[:, t] @ p["weight_ih"].T + bih
        gh = h @ p["weight_hh"].T + bhh
        if node.op == "gru":
            ir, iz, inn = gi.chunk(3, 1)
            hr, hz, hn = gh.chunk(3, 1)
            r = torch.sigmoid(ir + hr)
            z = torch.sigmoid(iz + hz)
            n = torch.tanh(inn + r * hn)
            h = (1 - z) * n + z * h
        else:
            g = gi + gh
            i, f, gg, o = g.chunk(4, 1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(gg)
            h = torch.sigmoid(o) * torch.tanh(c)
        outs.append(h)
    y = torch.stack(outs, 1)
    return y if node.attrs.get("batch_first", False) else y.transpose(0, 1)


# Operators added by other parts of edgekit (recurrent layers, spiking layers) register their float semantics here.
EXTRA_OPS: dict = {}


def run_node(node: Node, xs: list[torch.Tensor]) -> torch.Tensor:
    a = node.attrs
    p = {k: _t(v) for k, v in node.params.items()}
    op = node.op
    if op == "conv2d" or op == "conv1d":
        conv = F.conv2d if op == "conv2d" else F.conv1d
        y = conv(xs[0], p["weight"], p.get("bias"), a["stride"], a["padding"], a["dilation"], a["groups"])
        return _activation(node, y)
    if op in ("conv_transpose2d", "conv_transpose1d"):
        k, st, pad = a["kernel_size"], a["stride"], a["padding"]
        out_pad = list(a.get("output_padding", [0] * len(k)))
        if len(node.shape) == len(k) + 2:  # the traced output size (a ConvTranspose called with output_size=)
            out_pad = [o - ((i - 1) * s_ - 2 * p_ + k_) for o, i, s_, p_, k_ in
                       zip(node.shape[2:], xs[0].shape[2:], st, pad, k)]
        conv_t = F.conv_transpose2d if op == "conv_transpose2d" else F.conv_transpose1d
        y = conv_t(xs[0], p["weight"], p.get("bias"), st, pad, out_pad, a["groups"])
        return _activation(node, y)
    if op == "depth_to_space" and xs[0].dim() == 3:  # along a sequence: [N, s·C, L] -> [N, C, s·L]
        x, (s,) = xs[0], a["block"]
        n_, c, length = x.shape
        y = x.reshape(n_, s, c // s, length).permute(0, 2, 3, 1) if a["mode"] == "DCR" else \
            x.reshape(n_, c // s, s, length).permute(0, 1, 3, 2)
        return y.reshape(n_, c // s, length * s)
    if op == "depth_to_space":
        x, (rh, rw) = xs[0], a["block"]
        n_, c, h, w = x.shape
        c //= rh * rw
        y = x.reshape(n_, rh, rw, c, h, w).permute(0, 3, 4, 1, 5, 2) if a["mode"] == "DCR" else \
            x.reshape(n_, c, rh, rw, h, w).permute(0, 1, 4, 2, 5, 3)
        return y.reshape(n_, c, h * rh, w * rw)
    if op == "linear":
        return _activation(node, F.linear(xs[0], p["weight"], p.get("bias")))
    if op == "upsample":
        if a.get("mode", "nearest") == "bilinear":
            return F.interpolate(xs[0], scale_factor=tuple(float(s) for s in a["scale"]), mode="bilinear",
                                 align_corners=False)
        return xs[0].repeat_interleave(a["scale"][0], dim=2).repeat_interleave(a["scale"][1], dim=3)
    if op == "batchnorm":
        return F.batch_norm(xs[0], p["running_mean"], p["running_var"], p["weight"], p["bias"], False, 0.0,
                            a.get("eps", 1e-5))
    if op in _UNARY:
        return _UNARY[op](xs[0])
    if op == "maxpool2d":
        return F.max_pool2d(xs[0], a["kernel_size"], a["stride"], a["padding"], ceil_mode=a.get("ceil_mode", False))
    if op == "avgpool2d":
        return F.avg_pool2d(xs[0], a["kernel_size"], a["stride"], a["padding"], ceil_mode=a.get("ceil_mode", False),
                            count_include_pad=a.get("count_include_pad", True))
    if op == "global_avgpool":
        return xs[0].mean(dim=tuple(range(2, xs[0].dim())), keepdim=True)  # [N, C, L] or [N, C, H, W]
    if op == "add":
        return _activation(node, xs[0] + xs[1])
    if op == "mul":
        return xs[0] * xs[1]
    if op == "concat":
        return torch.cat(xs, dim=a["dim"])
    if op in ("reshape", "flatten"):
        return xs[0].reshape(node.shape)
    if op == "select":
        return xs[0][index_tuple(a["index"])]
    if op == "softmax":
        return torch.softmax(xs[0], dim=a["dim"])
    if op == "transpose":
        return xs[0].permute(*a["perm"])
    if op == "matmul":
        return torch.matmul(xs[0], xs[1])
    if op == "scale":
        return xs[0] * a["factor"]
    if op == "mul_const":
        return xs[0] * torch.from_numpy(np.asarray(node.params["value"], dtype=np.float32))
    if op == "gelu":
        return F.gelu(xs[0], approximate=a.get("approximate", "none"))
    if op == "pad":
        p = a["pads"]
        return F.pad(xs[0], (p[2], p[3], p[0], p[1]) if len(p) == 4 else tuple(p))
    if op == "prelu":
        return F.prelu(xs[0], p["weight"])
    if op == "leaky_relu":
        return F.leaky_relu(xs[0], a["negative_slope"])
    if op == "elu":
        return F.elu(xs[0], a["alpha"])
    if op == "hardtanh":
        return F.hardtanh(xs[0], a["min_val"], a["max_val"])
    if op == "mish":
        return F.mish(xs[0])
    if op == "layernorm":
        return F.layer_norm(xs[0], a["normalized_shape"], p.get("weight"), p.get("bias"), a["eps"])
    if op == "reduce_mean":
        return xs[0].mean(dim=a["dims"], keepdim=a["keepdim"])
    if op in ("gru", "lstm"):
        return _rnn(node, xs[0])
    if op in EXTRA_OPS:
        return EXTRA_OPS[op](node, xs)
    raise NotImplementedError(f"no float semantics for operator '{op}' (layer '{node.name}')")


def run_graph(graph: Graph, inputs: list[np.ndarray], keep_all: bool = False) -> dict[str, np.ndarray]:
    """Execute ``graph`` on ``inputs`` (one array per graph input, batch first). Returns output name -> array
    (every node's value when ``keep_all``)."""
    values: dict[str, torch.Tensor] = {}
    ins = graph.inputs
    with torch.no_grad():
        for node, x in zip(ins, inputs):
            values[node.name] = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        batch = int(values[ins[0].name].shape[0]) if ins else 1
        for node in graph.nodes:
            if node.op == "input":
                continue
            xs = [values[i] for i in node.inputs]
            if node.op in ("reshape", "flatten"):
                values[node.name] = xs[0].reshape((batch,) + tuple(node.shape[1:]))
            else:
                values[node.name] = run_node(node, xs)
    keep = values.keys() if keep_all else graph.outputs
    return {k: values[k].numpy() for k in keep}
