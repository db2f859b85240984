"""int8 quantization: Model -> Model with quantization parameters every int8 target consumes.

Where it sits: a converter. It calibrates the deployment graph (BatchNorm folded, activations fused) on calibration
inputs and records, per layer output, an asymmetric int8 (scale, zero point), and per weight tensor symmetric
per-channel scales. The result is stored in ``model.meta['quant']`` as plain data (:class:`QuantParams`), so the
Cortex-M integer-only build (edgekit/qgraph.py) and the phone QDQ export read the same numbers.

Observers (how an activation range is chosen from calibration values):

* ``minmax``: [min, max] of everything seen
* ``percentile``: the 0.01 / 99.99 percentiles (robust to rare outliers)
* ``mse``: the clipping range (a fraction of min/max) that minimises the quantization mean squared error

The range always includes 0 so that zero (padding, ReLU) is exact.

Quantization-aware training (``mode='qat'``, converters/qat.py) fine-tunes the float weights through the same int8
rounding first, then calibrates as above.

Recurrent layers
----------------
``edgekit.qgraph`` lowers conv, linear, pools, add, concat and lookup-table activations; recurrent layers (GRU, LSTM,
LMU, EGRU) lower through ``edgekit.qrecurrent`` (int8 weights, int16 state, the Cortex-M step programs' arithmetic),
which reads the input's and the head's scales from here. Before those kernels existed, int8 was measured on digits-gru
(hidden 64, 64 steps, 360 held-out digits) with a fake-quantization simulation (bench/converters.py,
``bench_recurrent``): int8 per-row symmetric weights, int8 inputs, the hidden state rounded after every step to a
symmetric int16 or int8 grid over the range seen on the calibration data, gate outputs optionally int8 (as a lookup
table gives them):

==========================================  ========  =======================  ================
variant                                     accuracy  same prediction as float  max logit error
==========================================  ========  =======================  ================
float                                       98.06 %   100 %                     0
int8 weights, float state                   98.06 %   100 %                     0.28
int8 weights, int16 state                   98.06 %   100 %                     0.28
int8 weights, int8 state                    98.06 %   100 %                     0.98
int8 weights, int16 state, int8 gates       98.06 %   100 %                     0.55
int8 weights, int8 state, int8 gates        98.06 %   100 %                     1.23
==========================================  ========  =======================  ================

So on this task int8 weights with an int8 hidden state lose nothing measurable, but the int8 state's rounding, fed
back 64 times, gives 3.5× the logit error of an int16 state (which is as good as float); accuracy first drops with a
5-bit state (96.7 %) or 4-bit weights (97.2 %). An int16 state costs 2 bytes per hidden unit — 128 bytes here — so
it is the safer default for recurrent kernels; int8 state is an option once a model's own accuracy is checked.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from edgekit.errors import DataError, UsageError
from edgekit.graph import Graph
from edgekit.graph_exec import run_graph
from edgekit.model import Model
from edgekit.quantparams import QuantParams, TensorQ, weight_scales  # noqa: F401  (the records, re-exported)

OBSERVERS = ("minmax", "percentile", "mse")
# Layers whose output reuses the input's quantization (they only move or pick int8 values).
PASS_THROUGH = ("reshape", "flatten", "select", "maxpool2d", "upsample", "depth_to_space", "pad")


# The smallest activation scale: float32's machine epsilon, the floor PyTorch's observers put on scales. A range
# narrower than 255 of these (an all-zero or dying layer) is widened to it; its values then quantize to the zero
# point, which is exact to within 1.2e-7 — and the scales downstream stay representable.
MIN_SCALE = float(np.finfo(np.float32).eps)


def qparams_from_range(lo: float, hi: float) -> TensorQ:
    """Asymmetric int8 (scale, zero point) for [lo, hi] widened to hold 0, with a scale of at least MIN_SCALE."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise DataError(f"activation range [{lo}, {hi}] is not finite; check the calibration data and the model")
    if hi - lo < 255.0 * MIN_SCALE:
        hi = lo + 255.0 * MIN_SCALE
    scale = (hi - lo) / 255.0
    zp = int(round(-128 - lo / scale))
    return TensorQ(scale, int(np.clip(zp, -128, 127)))


def _fake_quant_error(x: np.ndarray, lo: float, hi: float) -> float:
    q = qparams_from_range(lo, hi)
    xq = np.clip(np.round(x / q.scale) + q.zero_point, -128, 127)
    return float(np.mean((x - (xq - q.zero_point) * q.scale) ** 2))


def observe(values: np.ndarray, observer: str) -> tuple[float, float]:
    v = values.ravel().astype(np.float64)
    if observer == "minmax":
        return float(v.min()), float(v.max())
    if observer == "percentile":
        return float(np.percentile(v, 0.01)), float(np.percentile(v, 99.99))
    if observer == "mse":
        lo, hi = float(v.min()), float(v.max())
        sample = v if v.size <= 200_000 else v[np.random.default_rng(0).choice(v.size, 200_000, replace=False)]
        best = min(np.linspace(0.3, 1.0, 36), key=lambda r: _fake_quant_error(sample, lo * r, hi * r))
        return lo * float(best), hi * float(best)
    raise UsageError(f"unknown observer '{observer}'; choose one of {', '.join(OBSERVERS)}")


# A concatenation's inputs take its output's quantization where they can (as TensorFlow Lite's converter does): then
# each part is a plain copy instead of a requantization through a table (the int8 kernels: ~0.9 instructions an
# element instead of ~3.8 on the M7), for the resolution the narrower inputs lose to the union's range.
SHARE_CONCAT_SCALES = True


def concat_shared_ranges(graph: Graph, lows: dict[str, float], highs: dict[str, float]
                         ) -> dict[str, tuple[float, float]]:
    """The calibration range each concatenation's input producers take: the concatenation's own (the union of
    its inputs'). An input is followed back through layers that reuse their input's quantization (PASS_THROUGH) to
    the layer that chooses it; that layer keeps its own range when it is the model input, another concatenation,
    or the input of two concatenations (one of them then requantizes it, as before)."""
    by_name = {n.name: n for n in graph.nodes}

    def producer(name: str) -> str:
        while by_name[name].op in PASS_THROUGH:
            name = by_name[name].inputs[0]
        return name

    wanted: dict[str, set[str]] = {}
    for n in graph.nodes:
        if n.op == "concat":
            for x in n.inputs:
                wanted.setdefault(producer(x), set()).add(n.name)
    return {name: (lows[next(iter(cats))], highs[next(iter(cats))]) for name, cats in wanted.items()
            if len(cats) == 1 and by_name[name].op not in ("input", "concat")}


def calibrate(graph: Graph, calib: np.ndarray, observer: str = "minmax", per_channel: bool = True,
              batch_size: int = 64) -> QuantParams:
    """Run ``graph`` on the calibration inputs and choose int8 parameters for every layer output."""
    if calib is None or len(calib) == 0:
        raise DataError("int8 quantization needs calibration inputs; give --calib FILE (a .npy of model inputs)")
    if not np.all(np.isfinite(calib)):
        raise DataError("calibration data holds NaN or Inf values; clean it before quantizing")
    lows: dict[str, float] = {}
    highs: dict[str, float] = {}
    collected: dict[str, list[np.ndarray]] = {}
    for i in range(0, len(calib), batch_size):
        vals = run_graph(graph, [calib[i:i + batch_size]], keep_all=True)
        for k, v in vals.items():
            if observer == "minmax":
                lows[k] = min(lows.get(k, np.inf), float(v.min()))
                highs[k] = max(highs.get(k, -np.inf), float(v.max()))
            else:
                collected.setdefault(k, []).append(v.ravel())
    if observer != "minmax":
        for k, parts in collected.items():
            lows[k], highs[k] = observe(np.concatenate(parts), observer)
    shared = concat_shared_ranges(graph, lows, highs) if SHARE_CONCAT_SCALES else {}
    acts: dict[str, TensorQ] = {}
    for n in graph.nodes:
        if n.op in PASS_THROUGH:
            acts[n.name] = acts[n.inputs[0]]
        else:
            acts[n.name] = qparams_from_range(*shared.get(n.name, (lows[n.name], highs[n.name])))
    ws = {n.name: weight_scales(n.params["weight"], per_channel) for n in graph.nodes if "weight" in n.params
          and n.op in ("conv1d", "conv2d", "linear")}
    return QuantParams(acts, ws, observer, per_channel)


def quantize(model: Model, calib: np.ndarray | None = None, scheme: str = "int8", per_channel: bool = True,
             observer: str = "minmax", mode: str = "ptq", **qat_options) -> Model:
    """int8 post-training quantization (``mode='ptq'``) or quantization-aware fine-tuning (``mode='qat'``).

    Returns a new Model whose ``meta['quant']`` holds the :class:`QuantParams`; its module stays float (QAT
    fine-tunes it with fake quantization first).
    """
    if scheme != "int8":
        raise UsageError(f"quantization scheme '{scheme}' is not supported; edgekit quantizes to int8")
    calib = model.calib if calib is None else np.asarray(calib, dtype=np.float32)
    if calib is None:
        raise DataError(f"model '{model.name}' has no calibration data; pass calib=... (CLI: --calib FILE)")
    model.check_input(calib, "calibration")
    if mode == "qat":
        from edgekit.converters.qat import fine_tune_qat

        model = fine_tune_qat(model, calib, per_channel=per_channel, observer=observer, **qat_options)
    elif mode != "ptq":
        raise UsageError(f"quantization mode '{mode}': use 'ptq' or 'qat'")
    q = calibrate(model.deploy_graph, calib, observer, per_channel)
    new = model.with_module(model.module, meta={"quant": q, "quant_mode": mode}) if model.module is not None \
        else dataclasses.replace(model, meta={**model.meta, "quant": q, "quant_mode": mode})
    if model.module is None:
        new._graph = model.graph
    return new


def int8_accuracy(model: Model, x: np.ndarray | None = None, y: np.ndarray | None = None) -> float | None:
    """Accuracy of the integer-only int8 graph (``edgekit.qgraph.predict_int8``) of a quantized ``model``.

    None when the model has no labelled test data, no quantization parameters, or layers without an int8 kernel.
    """
    from edgekit.errors import UnsupportedError
    from edgekit.qgraph import lower, predict_int8

    x = model.test_x if x is None else x
    y = model.test_y if y is None else y
    q = model.meta.get("quant")
    if x is None or y is None or q is None:
        return None
    try:
        qg = lower(model.deploy_graph, q)
    except UnsupportedError:
        return None
    return float((predict_int8(qg, np.asarray(x, np.float32)).argmax(-1) == np.asarray(y)).mean())
