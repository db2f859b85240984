"""Converters benchmark: pruning and int8 quantization on the bundled digits examples.

Prints (and writes to bench/results/converters.md) one table per example — accuracy on the held-out split for float,
int8 PTQ, int8 QAT, 50/80/90/95 % sparse (gradual magnitude pruning, global and layer-wise at 90 %) and a small dense
model (structured pruning) with about as many weights as the 90 % sparse one — with non-zero parameters and the
Cortex-M7 int8 flash estimate. A second table simulates int8 recurrent layers (digits-gru): int8 weights with an int8
or int16 hidden state.

    .venv/bin/python bench/converters.py                       # both examples (~10 min on 2 cores)
    .venv/bin/python bench/converters.py --models digits-cnn

Accuracy is measured on 360 test digits: one digit is 0.28 points. int8 accuracy is the integer-only graph's
(edgekit.qgraph.predict_int8); digits-gru has no int8 graph yet (recurrent kernels come with the recurrent issue), so
its int8 column is the fake-quantization simulation below (int8 weights and inputs, int16 hidden state) and it has no
PTQ/QAT rows.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from edgekit import api
from edgekit.converters import prune, quantize
from edgekit.converters.prune import weight_counts
from edgekit.converters.quantize import int8_accuracy
from edgekit.errors import EdgekitError
from edgekit.model import Model

RESULTS = Path(__file__).parent / "results" / "converters.md"
SPARSITIES = (0.5, 0.8, 0.9, 0.95)
# Fine-tuning per example: the GRU needs longer and a higher learning rate to recover (it was trained for 120 epochs).
PRUNE_SETTINGS = {"digits-cnn": {"epochs": 20, "lr": 3e-3}, "digits-gru": {"epochs": 60, "lr": 1e-2}}
QAT_SETTINGS = {"epochs": 5, "lr": 1e-4}


def flash_bytes(model: Model) -> int | None:
    """Cortex-M7 int8 flash estimate (sparse weights count as dense until the target stores them sparsely)."""
    try:
        est, _, _ = api.estimate(model, "cortex-m7", quantize="int8")
        return int(est.flash_bytes)
    except EdgekitError:
        return None


def row(label: str, model: Model, int8: float | None, seconds: float) -> dict:
    counts = weight_counts(model.module)
    return {"variant": label, "accuracy": model.accuracy(), "int8_accuracy": int8,
            "nonzero_params": counts["nonzero_params"], "nonzero_weights": counts["nonzero_weights"],
            "flash_bytes": flash_bytes(model), "seconds": seconds}


def bench_model(name: str, console: Console) -> list[dict]:
    base = Model.load(name)
    settings = PRUNE_SETTINGS.get(name, {})
    rows = []

    def timed(label, make, quantized=False):
        t0 = time.time()
        try:
            m = make()
        except EdgekitError as e:
            console.print(f"  {name}: {label:<34} not applicable: {e}")
            return None
        int8 = int8_accuracy(m if quantized else quantize(m)) if base.calib is not None else None
        if int8 is None and isinstance(getattr(m.module, "gru", None), torch.nn.GRU):
            int8 = simulated_int8_accuracy(m)  # no int8 GRU kernel yet: the simulation below
        rows.append(row(label, m, int8, time.time() - t0))
        r = rows[-1]
        console.print(f"  {name}: {label:<34} acc {r['accuracy']:.4f}  int8 {_pct(r['int8_accuracy'])}  "
                      f"non-zero {r['nonzero_params']:,}  ({r['seconds']:.0f} s)")
        return m

    timed("float", lambda: base)
    if int8_accuracy(quantize(base)) is not None:  # PTQ and QAT rows only where an int8 graph exists
        timed("int8 PTQ (minmax)", lambda: quantize(base), quantized=True)
        timed("int8 QAT", lambda: quantize(base, mode="qat", **QAT_SETTINGS), quantized=True)
    for s in SPARSITIES:
        timed(f"{s:.0%} sparse (global)", lambda s=s: prune(base, s, scope="global", **settings))
    timed("90% sparse (layer-wise)", lambda: prune(base, 0.9, scope="layer", **settings))
    timed("small dense (structured, ~90%)", lambda: prune(base, 0.9, structured=True, **settings))
    return rows


# ---- recurrent int8: a fake-quantization simulation of the GRU --------------------------------------------------


def _fq_sym(w: torch.Tensor, bits: int, axis_rows: bool = True) -> torch.Tensor:
    qmax = 2 ** (bits - 1) - 1
    m = w.abs().amax(dim=1, keepdim=True) if axis_rows else w.abs().max()
    scale = torch.where(m > 0, m / qmax, torch.ones_like(m))
    return torch.clamp(torch.round(w / scale), -qmax, qmax) * scale


def _fq_range(x: torch.Tensor, lo: float, hi: float, bits: int) -> torch.Tensor:
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    levels = 2 ** bits - 1
    scale = (hi - lo) / levels
    zp = round(-lo / scale)
    return (torch.clamp(torch.round(x / scale) + zp, 0, levels) - zp) * scale


def gru_int8(model: Model, weights: int | None, state: int | None, gates: int | None) -> np.ndarray:
    """Logits of the digits GRU on the test inputs with weights, hidden state and gate outputs rounded to the given
    bit widths (None: float). Inputs are int8 (range from the calibration data); the hidden state is symmetric with
    the range seen on the calibration data; gate outputs (sigmoid in [0, 1], tanh in [−1, 1]) use their fixed ranges,
    as a lookup table would produce them."""
    gru, fc = model.module.gru, model.module.classifier
    w = {k: getattr(gru, k).detach() for k in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")}
    w_fc, b_fc = fc.weight.detach(), fc.bias.detach()
    if weights:
        w["weight_ih_l0"], w["weight_hh_l0"] = _fq_sym(w["weight_ih_l0"], weights), _fq_sym(w["weight_hh_l0"], weights)
        w_fc = _fq_sym(w_fc, weights)
    with torch.no_grad():
        calib_states = gru(torch.from_numpy(model.calib))[0]
    h_max = float(calib_states.abs().max())
    lo, hi = float(model.calib.min()), float(model.calib.max())
    x = torch.from_numpy(model.test_x)
    x = _fq_range(x, lo, hi, 8)
    h = torch.zeros(len(x), gru.hidden_size)

    def g(v, lo_, hi_):
        return _fq_range(v, lo_, hi_, gates) if gates else v

    with torch.no_grad():
        for t in range(x.shape[1]):
            gi = x[:, t] @ w["weight_ih_l0"].T + w["bias_ih_l0"]
            gh = h @ w["weight_hh_l0"].T + w["bias_hh_l0"]
            ir, iz, inn = gi.chunk(3, 1)
            hr, hz, hn = gh.chunk(3, 1)
            r = g(torch.sigmoid(ir + hr), 0.0, 1.0)
            z = g(torch.sigmoid(iz + hz), 0.0, 1.0)
            n = g(torch.tanh(inn + r * hn), -1.0, 1.0)
            h = (1 - z) * n + z * h
            if state:
                qmax = 2 ** (state - 1) - 1
                h = torch.clamp(torch.round(h / (h_max / qmax)), -qmax, qmax) * (h_max / qmax)
        logits = h @ w_fc.T + b_fc
    return logits.numpy()


def simulated_int8_accuracy(model: Model) -> float:
    """int8 weights, int16 hidden state (the variant recurrent kernels are planned with)."""
    return float((gru_int8(model, 8, 16, None).argmax(-1) == model.test_y).mean())


RECURRENT_VARIANTS = (
    ("float", None, None, None),
    ("int8 weights, float state", 8, None, None),
    ("int8 weights, int16 state", 8, 16, None),
    ("int8 weights, int8 state", 8, 8, None),
    ("int8 weights, int16 state, int8 gates", 8, 16, 8),
    ("int8 weights, int8 state, int8 gates", 8, 8, 8),
)


def bench_recurrent(name: str = "digits-gru") -> list[dict]:
    """Accuracy, agreement of the predictions with float, and the largest logit error, per variant."""
    m = Model.load(name)
    ref = gru_int8(m, None, None, None)
    rows = []
    for label, wb, sb, gb in RECURRENT_VARIANTS:
        logits = gru_int8(m, wb, sb, gb)
        rows.append({"variant": label, "accuracy": float((logits.argmax(-1) == m.test_y).mean()),
                     "agreement": float((logits.argmax(-1) == ref.argmax(-1)).mean()),
                     "max_logit_error": float(np.abs(logits - ref).max())})
    return rows


# ---- output ---------------------------------------------------------------------------------------------------------


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{v:.2%}"


def _table(name: str, rows: list[dict]) -> tuple[Table, str]:
    cols = ("variant", "accuracy", "int8 accuracy", "non-zero params", "non-zero weights", "flash int8 M7", "time")
    t = Table(title=f"{name}: held-out accuracy")
    for c in cols:
        t.add_column(c, justify="left" if c == "variant" else "right")
    md = [f"### {name}", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        cells = [r["variant"], _pct(r["accuracy"]), _pct(r["int8_accuracy"]), f"{r['nonzero_params']:,}",
                 f"{r['nonzero_weights']:,}", "–" if r["flash_bytes"] is None else f"{r['flash_bytes']:,} B",
                 f"{r['seconds']:.0f} s"]
        t.add_row(*cells)
        md.append("| " + " | ".join(cells) + " |")
    return t, "\n".join(md) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=["digits-cnn", "digits-gru"])
    parser.add_argument("--no-write", action="store_true", help=f"do not write {RESULTS}")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    console = Console(width=150)
    parts = ["# Converters benchmark (bench/converters.py)", "",
             "Held-out split of scikit-learn digits (360 samples; 1 sample = 0.28 points). Pruning: gradual "
             "magnitude pruning, cubic schedule, fine-tuned on the training split "
             f"({', '.join(f'{k}: {v}' for k, v in PRUNE_SETTINGS.items())}); QAT: {QAT_SETTINGS}. "
             "Flash: Cortex-M7 int8 estimate (dense weight storage until the target stores sparse weights). "
             "digits-gru's int8 column is simulated (int8 weights, int16 hidden state; see the last table).", ""]
    for name in args.models:
        rows = bench_model(name, console)
        t, md = _table(name, rows)
        console.print(t)
        parts.append(md)
    if "digits-gru" in args.models:
        rec = bench_recurrent()
        t = Table(title="digits-gru: int8 recurrent layer (fake-quantization simulation)")
        cols = ("variant", "accuracy", "same prediction as float", "max logit error")
        for c in cols:
            t.add_column(c, justify="left" if c == "variant" else "right")
        md = ["### digits-gru, int8 recurrent simulation", "", "| " + " | ".join(cols) + " |", "|---|---|---|---|"]
        for r in rec:
            cells = [r["variant"], _pct(r["accuracy"]), _pct(r["agreement"]), f"{r['max_logit_error']:.3f}"]
            t.add_row(*cells)
            md.append("| " + " | ".join(cells) + " |")
        console.print(t)
        parts.append("\n".join(md) + "\n")
    if not args.no_write:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text("\n".join(parts))
        console.print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
