"""The quantization debugger: where does int8 lose the model, why, and what would help.

For every layer of the deployment graph (BatchNorm folded, activations fused) it compares edgekit's integer
reference (edgekit/qgraph.py, the arithmetic the firmware runs bit for bit) with the float graph on the same inputs:

* **alone**: the layer fed with the float model's own inputs, quantized (so only this layer's quantization shows);
* **accumulated**: the whole int8 network up to this layer (what the device computes).

Both as SQNR in dB (10·log10 of float power over error power). The first layer whose accumulated SQNR falls below
``COLLAPSE_DB`` is where the network collapses; the likely cause is read off that layer's numbers:

* ``dead range``: its activation range hit the scale floor (values ~0: dying activations; re-estimate BatchNorm
  statistics on calibration data or check the model);
* ``range too wide``: its values use fewer than 8 of the 256 codes (calibrated on data far wider than these inputs);
* ``saturation``: more than ``SATURATION_LIMIT`` of its float values fall beyond the int8 grid's ends (the observer
  clipped the range: use ``--observer minmax``);
* ``outlier channel``: one output channel spans far more than the median channel (per-tensor activation scales
  squeeze the others: equalise channels, or QAT ``--qat``);
* ``raised weight scale``: a bias too large for int32 forced coarser weights (notes of edgekit/qgraph.py);
* ``accumulated error``: the layer alone is fine but error built up upstream (QAT ``--qat`` or ``--observer mse``).

Keeping a layer in float is not offered: edgekit's Cortex-M int8 builds are integer end to end (the phone target
keeps any operator ONNX Runtime lacks in float on its own).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

COLLAPSE_DB = 10.0
SATURATION_LIMIT = 0.01
OUTLIER_RATIO = 8.0


@dataclass
class LayerQuality:
    layer: str
    op: str
    sqnr_alone_db: float | None
    sqnr_accumulated_db: float
    scale: float
    zero_point: int
    saturated: float          # fraction of float values beyond the int8 grid (clipped)
    channel_spread: float     # widest channel's range over the median channel's (1 = even)
    flags: list[str] = field(default_factory=list)


@dataclass
class QuantDebug:
    layers: list[LayerQuality]
    collapse: str | None      # first layer below COLLAPSE_DB accumulated, None if none
    cause: str | None
    advice: str | None
    output_sqnr_db: float
    inputs: int

    def to_json(self) -> dict:
        layers = [{**asdict(r), "sqnr_alone_db": _finite(r.sqnr_alone_db),
                   "sqnr_accumulated_db": _finite(r.sqnr_accumulated_db),
                   "channel_spread": _finite(r.channel_spread)} for r in self.layers]
        return {"layers": layers, "collapse_layer": self.collapse, "cause": self.cause,
                "advice": self.advice, "output_sqnr_db": _finite(self.output_sqnr_db), "inputs": self.inputs,
                "collapse_below_db": COLLAPSE_DB}


def _finite(v):
    """JSON has no infinity: ±999 dB stands for exact / no signal."""
    return None if v is None else (v if math.isfinite(v) else (999.0 if v > 0 else -999.0))


def sqnr_db(ref: np.ndarray, got: np.ndarray) -> float:
    ref, got = np.asarray(ref, np.float64), np.asarray(got, np.float64)
    noise = float(np.sum((got - ref) ** 2))
    signal = float(np.sum(ref ** 2))
    if noise == 0:
        return math.inf
    return 10 * math.log10(signal / noise) if signal > 0 else -math.inf


def _deq(qn, codes: np.ndarray) -> np.ndarray:
    return (codes.astype(np.float64) - qn.out_zp) * qn.out_scale


def _q(qn, x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(np.asarray(x, np.float64) / qn.out_scale) + qn.out_zp, -128, 127).astype(np.int8)


def debug(model, x: np.ndarray, quantized=None) -> QuantDebug:
    """Per-layer int8-vs-float quality of ``model`` on inputs ``x`` (quantizing it first unless ``quantized``, a
    Model with ``meta['quant']``, is given)."""
    from edgekit.converters.quantize import MIN_SCALE, quantize
    from edgekit.graph_exec import run_graph
    from edgekit.qgraph import lower, run_int8, run_node_int8

    qm = quantized if quantized is not None else quantize(model)
    graph = qm.deploy_graph
    qg = lower(graph, qm.meta["quant"])
    x = np.ascontiguousarray(x, np.float32)
    floats = run_graph(graph, [x], keep_all=True)
    ints = run_int8(qg, qg.quantize_input(x), keep_all=True)
    raised = {line.split("'")[1] for line in qg.notes if line.startswith("layer '")}
    floats[graph.inputs[0].name] = x
    rows: list[LayerQuality] = []
    for n in [graph.inputs[0]] + [n for n in graph.nodes if n.op != "input"]:
        qn = qg.nodes[n.name]
        ref = np.asarray(floats[n.name], np.float64)
        acc = sqnr_db(ref, _deq(qn, ints[n.name]))
        if n.op == "input":
            alone = acc
        else:
            try:
                alone_codes = run_node_int8(qn, [_q(qg.nodes[i], floats[i]) for i in n.inputs], graph)
                alone = sqnr_db(ref, _deq(qn, alone_codes))
            except Exception:  # noqa: BLE001 — a layer without a stand-alone reference is reported as unknown
                alone = None
        codes = ints[n.name]
        # clipped: float values beyond the int8 grid's ends (the zero point itself, e.g. ReLU's 0, is no clipping)
        lo, hi = (-128 - qn.out_zp - 0.5) * qn.out_scale, (127 - qn.out_zp + 0.5) * qn.out_scale
        saturated = float(np.mean((ref < lo) | (ref > hi))) if ref.size else 0.0
        span = float(ref.max() - ref.min()) if ref.size else 0.0
        spread = 1.0
        if ref.ndim >= 2 and ref.shape[1] > 1:
            per = np.moveaxis(ref, 1, 0).reshape(ref.shape[1], -1)
            widths = per.max(1) - per.min(1)
            med = float(np.median(widths))
            spread = float(widths.max() / med) if med > 0 else (math.inf if widths.max() > 0 else 1.0)
        flags = []
        if qn.out_scale <= MIN_SCALE * 1.0001:
            flags.append("dead range")
        elif 0 < span < 8 * qn.out_scale:
            flags.append("range too wide")
        if saturated > SATURATION_LIMIT:
            flags.append("saturation")
        if spread > OUTLIER_RATIO:
            flags.append("outlier channel")
        if n.name in raised:
            flags.append("raised weight scale")
        rows.append(LayerQuality(n.name, n.op, alone, acc, float(qn.out_scale), int(qn.out_zp), saturated, spread,
                                 flags))
    collapse = next((r for r in rows if r.sqnr_accumulated_db < COLLAPSE_DB), None)
    cause = advice = None
    if collapse is not None:
        cause, advice = _diagnose(collapse, rows)
    out_sqnr = rows[-1].sqnr_accumulated_db if rows else math.inf
    return QuantDebug(rows, collapse.layer if collapse else None, cause, advice, out_sqnr, int(len(x)))


_ADVICE = {
    "dead range": "its activations are ~0 (a dying layer): re-estimate BatchNorm statistics on calibration data, "
                  "or check the weights",
    "range too wide": "its values use fewer than 8 of the 256 int8 codes: the calibration data spans far more than "
                      "these inputs — calibrate on data like them (--calib) or with --observer percentile",
    "saturation": "the observer clipped its range: calibrate with --observer minmax or on more representative data",
    "outlier channel": "one channel spans far more than the others and squeezes them on the per-tensor scale: "
                       "fine-tune with --qat, or equalise the channels' ranges before quantizing",
    "raised weight scale": "a bias too large for int32 coarsened its weights: recalibrate with data that keeps its "
                           "input alive",
}


def _diagnose(bad: LayerQuality, rows: list[LayerQuality]) -> tuple[str, str]:
    for flag in ("dead range", "range too wide", "saturation", "outlier channel", "raised weight scale"):
        if flag in bad.flags:
            return flag, _ADVICE[flag]
    if bad.sqnr_alone_db is not None and bad.sqnr_alone_db >= COLLAPSE_DB:
        return ("accumulated error", "the layer alone is fine; error built up upstream: fine-tune with --qat or "
                                     "calibrate with --observer mse")
    upstream = [r for r in rows[:rows.index(bad)] if r.flags]
    if upstream:
        flag = upstream[-1].flags[0]
        return f"{flag} upstream at '{upstream[-1].layer}'", _ADVICE[flag]
    return "int8 resolution", "8 bits are too coarse for this layer: fine-tune with --qat"
