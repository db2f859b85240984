"""Fidelity to the float model: is the deployed artifact still the user's model?

Every target's profile compares what the artifact computed on the test inputs (firmware, ONNX Runtime, Lava) with
what the float PyTorch model computes on the same inputs, and reports it under ``measured.fidelity`` (docs/report.md):

* ``max_abs_err``: the largest |artifact - float| in output units, and ``max_abs_err_rel``: the same divided by the
  float outputs' range (max - min);
* ``sqnr_db``: 10·log10(Σ float² / Σ (artifact - float)²), the signal-to-quantization-noise ratio (null, with
  ``identical`` true, when the outputs are equal);
* ``cosine``: cosine similarity of the flattened outputs;
* ``top1_agreement``: for classifiers, the fraction of inputs whose arg-max class is the float model's;
* ``accuracy`` / ``float_accuracy`` where labels exist.

``outputs_match`` stays what it was (the artifact equals its own reference bit for bit, or within float tolerance);
fidelity is the other question. Below the bounds (``MIN_TOP1_AGREEMENT``, ``MIN_SQNR_DB``) the verdict says so in
one line and ``edgekit profile`` exits non-zero unless ``--accept-low-fidelity`` is given. Why these bounds: int8
post-training quantization of a healthy network typically keeps 20-40 dB SQNR at the logits and ≥ 97 % top-1
agreement; under 10 dB the noise is a third of the signal, and under 90 % agreement one input in ten changes class.
A spiking network converted from a classifier is a new network trained to the ANN's classes (its readout has its own
scale, and distillation matches softmax outputs, not logits): its scores are compared after centring and a
least-squares gain (``scale_free``), and only top-1 agreement decides its verdict.
"""
from __future__ import annotations

import math

import numpy as np

MIN_TOP1_AGREEMENT = 0.90
MIN_SQNR_DB = 10.0


def classifies(report: dict) -> bool | None:
    """Whether a build's model classifies (top-1 agreement applies), from its report's ``model.task``; None when
    unknown (then :func:`measure` treats [N, K > 1] outputs as class scores)."""
    task = (report.get("model") or {}).get("task")
    return None if task is None else task == "classification"


def measure(outputs: np.ndarray, float_outputs: np.ndarray, labels: np.ndarray | None = None,
            classifier: bool | None = None, scale_free: bool = False) -> dict:
    """Fidelity figures of ``outputs`` (the artifact's, dequantized, [N, ...]) against ``float_outputs``.
    ``classifier``: whether top-1 agreement applies (None: guess from the shape). ``scale_free``: the outputs are a
    converted network's scores on a scale of their own (a spiking readout trained anew, e.g. by distillation, which
    matches softmax outputs — invariant to a shift per input — not logits): class scores are centred per input and
    the outputs multiplied by the least-squares gain g = <out, float> / <out, out> (reported as ``gain``), so SQNR and
    errors measure the disagreement, not the scale."""
    got = np.asarray(outputs, dtype=np.float64)
    ref = np.asarray(float_outputs, dtype=np.float64)
    n = min(len(got), len(ref))
    got, ref = got[:n].reshape(n, -1), ref[:n].reshape(n, -1)
    gain = None
    if scale_free:
        if got.shape[1] > 1:  # class scores: softmax ignores a shift per input, so both are centred first
            got = got - got.mean(1, keepdims=True)
            ref = ref - ref.mean(1, keepdims=True)
        energy = float(np.sum(got * got))
        gain = float(np.sum(got * ref) / energy) if energy > 0 else 1.0
        got = got * gain
    err = got - ref
    signal, noise = float(np.sum(ref ** 2)), float(np.sum(err ** 2))
    span = float(ref.max() - ref.min()) if ref.size else 0.0
    norm = float(np.linalg.norm(got) * np.linalg.norm(ref))
    out = {
        "inputs": int(n),
        "max_abs_err": float(np.abs(err).max()) if err.size else 0.0,
        "max_abs_err_rel": float(np.abs(err).max() / span) if span > 0 else (0.0 if noise == 0 else math.inf),
        # JSON has no infinity: identical outputs give sqnr_db None and identical True
        "sqnr_db": (None if noise == 0 else (10 * math.log10(signal / noise) if signal > 0 else -999.0)),
        "identical": noise == 0,
        "cosine": float(np.sum(got * ref) / norm) if norm > 0 else (1.0 if noise == 0 else 0.0),
    }
    if gain is not None:
        out["gain"] = gain
    if classifier is None:
        classifier = ref.shape[1] > 1
    if classifier:
        out["top1_agreement"] = float(np.mean(got.argmax(1) == ref.argmax(1)))
    if labels is not None:
        y = np.asarray(labels)[:n]
        out["accuracy"] = float(np.mean(got.argmax(1) == y))
        out["float_accuracy"] = float(np.mean(ref.argmax(1) == y))
    out.update(verdict(out, CONVERSION_HINT if scale_free else QUANTIZATION_HINT,
                       gate_sqnr=not (scale_free and "top1_agreement" in out)))
    return out


QUANTIZATION_HINT = "try `edgekit analyze MODEL --quantize int8` to find the layer that loses it"
CONVERSION_HINT = "the converted network disagrees with the ANN: fine-tune the conversion longer (to_spiking's " \
                  "fine_tune_epochs) or on more data"


def verdict(fid: dict, hint: str = QUANTIZATION_HINT, gate_sqnr: bool = True) -> dict:
    """``{"ok": bool, "summary": one line}`` for fidelity figures, against the documented bounds. ``gate_sqnr``
    False: SQNR is reported but only top-1 agreement decides (a converted classifier, see :func:`measure`)."""
    problems = []
    agree = fid.get("top1_agreement")
    if agree is not None and agree < MIN_TOP1_AGREEMENT:
        problems.append(f"top-1 agreement with the float model {agree:.1%} < {MIN_TOP1_AGREEMENT:.0%}")
    sqnr = fid.get("sqnr_db")
    if gate_sqnr and sqnr is not None and sqnr < MIN_SQNR_DB:
        problems.append(f"SQNR {sqnr:.1f} dB < {MIN_SQNR_DB:.0f} dB")
    if problems:
        return {"ok": False, "summary": "LOW FIDELITY to the float model: " + "; ".join(problems) + " — " + hint}
    parts = [f"SQNR {_db(sqnr)}"] + ([f"top-1 agreement {agree:.1%}"] if agree is not None else [])
    return {"ok": True, "summary": "fidelity to the float model: " + ", ".join(parts)}


def _db(v: float | None) -> str:
    return "exact (identical outputs)" if v is None else f"{v:.1f} dB"
