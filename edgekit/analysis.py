"""Per-layer analysis: what each layer of the deployment graph costs in parameters, MACs and activation memory.

Where it sits: reads an edgekit Graph (after BatchNorm folding and activation fusion, i.e. what a target builds) and
produces a table of :class:`LayerRecord` plus totals. The estimators, the reports and ``edgekit analyze`` read it.

MAC conventions (one multiply-accumulate = 1):

* conv:    out_elements · (C_in / groups) · Π kernel
* linear:  out_elements · in_features
* GRU:     steps · 3 · H · (I + H);  LSTM: steps · 4 · H · (I + H)   (gate matrix products only)
* pooling, elementwise, reshapes: 0 MACs (their work shows in the latency model as per-element cost)
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from edgekit.graph import Graph, Node

DTYPE_BYTES = {"float32": 4, "int8": 1, "int16": 2, "int32": 4, "uint8": 1}


def _conv_macs(n: Node, g: Graph) -> int:
    cin = n.attrs["in_channels"] // n.attrs["groups"]
    return n.elements * cin * int(np.prod(n.attrs["kernel_size"]))


def _conv_transpose_macs(n: Node, g: Graph) -> int:
    """Every input element times the taps and output channels of its group (what ONNX Runtime's col2im computes)."""
    return math.prod(g[n.inputs[0]].shape) * (n.attrs["out_channels"] // n.attrs["groups"]) \
        * math.prod(n.attrs["kernel_size"])


def _linear_macs(n: Node, g: Graph) -> int:
    return n.elements * n.attrs["in_features"]


def _matmul_macs(n: Node, g: Graph) -> int:
    return n.elements * g[n.inputs[0]].shape[-1]


def _rnn_macs(n: Node, g: Graph) -> int:
    steps = n.shape[1] if n.attrs.get("batch_first") else n.shape[0]
    gates = 3 if n.op == "gru" else 4
    h, i = n.attrs["hidden_size"], n.attrs["input_size"]
    return steps * gates * h * (i + h)


# Operators whose MACs are not zero. Other parts of edgekit register their own layers here.
MAC_COUNTERS: dict[str, Callable[[Node, Graph], int]] = {
    "conv1d": _conv_macs, "conv2d": _conv_macs, "conv_transpose2d": _conv_transpose_macs,
    "conv_transpose1d": _conv_transpose_macs, "linear": _linear_macs, "gru": _rnn_macs, "lstm": _rnn_macs,
    "matmul": _matmul_macs,
}


def macs_of(node: Node, graph: Graph) -> int:
    f = MAC_COUNTERS.get(node.op)
    return int(f(node, graph)) if f else 0


def op_label(node: Node) -> str:
    """A short human label: 'conv2d 3x3/2 dw', 'linear', 'gru'..."""
    a = node.attrs
    if node.op in ("conv2d", "conv1d"):
        k = "x".join(str(v) for v in a["kernel_size"])
        s = a["stride"][0]
        label = f"{node.op} {k}" + (f"/{s}" if s != 1 else "")
        if a["groups"] == a["in_channels"] and a["groups"] > 1:
            label += " dw"
        elif a["groups"] > 1:
            label += f" g{a['groups']}"
    else:
        label = node.op
    if a.get("activation"):
        label += f"+{a['activation']}"
    return label


@dataclass(frozen=True)
class LayerRecord:
    """One row of the analysis table."""

    name: str
    op: str
    label: str
    input_shapes: tuple[tuple[int, ...], ...]
    output_shape: tuple[int, ...]
    params: int
    param_bytes: int
    macs: int
    activation_bytes: int
    fused: tuple[str, ...]

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        d["input_shapes"] = [list(s) for s in self.input_shapes]
        d["output_shape"] = list(self.output_shape)
        d["fused"] = list(self.fused)
        return d


@dataclass(frozen=True)
class Analysis:
    layers: tuple[LayerRecord, ...]
    params: int
    param_bytes: int
    macs: int
    input_bytes: int
    output_bytes: int

    def to_json(self) -> dict:
        return {"params": self.params, "param_bytes": self.param_bytes, "macs": self.macs,
                "input_bytes": self.input_bytes, "output_bytes": self.output_bytes,
                "layers": [r.to_json() for r in self.layers]}


def param_bytes_of(node: Node, weight_bytes: int = 4) -> int:
    """Stored bytes of a node's parameters: weights at ``weight_bytes`` each, biases as 4-byte values."""
    total = 0
    for k, v in node.params.items():
        total += int(v.size) * (4 if k.startswith("bias") else weight_bytes)
    return total


def analyze(graph: Graph, act_dtype: str = "float32", weight_bytes: int = 4) -> Analysis:
    """The per-layer table of ``graph`` (use the deployment graph: that is what runs)."""
    ab = DTYPE_BYTES[act_dtype]
    rows = []
    for n in graph.nodes:
        if n.op == "input":
            continue
        params = sum(int(p.size) for p in n.params.values())
        rows.append(LayerRecord(
            name=n.name, op=n.op, label=op_label(n), input_shapes=tuple(tuple(s) for s in graph.in_shapes(n)),
            output_shape=tuple(n.shape), params=params, param_bytes=param_bytes_of(n, weight_bytes),
            macs=macs_of(n, graph), activation_bytes=n.elements * ab, fused=tuple(n.fused)))
    return Analysis(
        layers=tuple(rows), params=sum(r.params for r in rows), param_bytes=sum(r.param_bytes for r in rows),
        macs=sum(r.macs for r in rows), input_bytes=sum(n.elements * ab for n in graph.inputs),
        output_bytes=sum(graph[o].elements * ab for o in graph.outputs))
