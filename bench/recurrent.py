"""Recurrent models on the emulated Cortex-M7 as streaming step programs: accuracy, instructions per step, memory.

For digits-gru, digits-lstm (trained here once, examples/train_digits_lstm.py), digits-lmu and digits-egru, each in
float32 and int8: built for cortex-m7, every held-out test sequence (360 digits, 64 pixels each) run step by step on
QEMU (mps2-an500), outputs checked against the host reference, accuracy on the host and emulated, executed
instructions per step (exact, median) and per sequence, state bytes, flash and SRAM from the ELF. Then:

* the int8 scheme: what int8 weights with int16 state cost in accuracy and logit error against float, next to the
  alternatives measured with the same integer arithmetic (int8 state; int8 entries of the LMU's memory matrix)
* the EGRU against the dense GRU: activity sparsity measured on the device, instructions per step, and the same
  EGRU with its thresholds scaled up (fewer events, fewer instructions)
* the estimate of instructions per step against the measurement, and a fit of the recurrent cost terms

    .venv/bin/python bench/recurrent.py                       # everything; writes bench/results/recurrent.txt
    .venv/bin/python bench/recurrent.py --models digits-gru --sequences 60 --no-write
"""
from __future__ import annotations

import argparse
import copy
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "examples"))

from edgekit import Model, api, qrecurrent  # noqa: E402
from edgekit.converters.quantize import calibrate  # noqa: E402
from edgekit.stepgraph import split  # noqa: E402
from edgekit.targets import CompileOptions  # noqa: E402

MODELS = ("digits-gru", "digits-lstm", "digits-lmu", "digits-egru")
TARGET = "cortex-m7"
RESULTS = ROOT / "bench" / "results" / "recurrent.txt"
THRESHOLD_SCALES = (1.0, 1.25, 1.5)


def load(name: str, egru_weights: Path | None = None) -> Model:
    if name == "digits-egru" and egru_weights is not None:  # weights from examples/train_digits_egru.py --out-dir
        from edgekit.zoo import EXAMPLES

        spec = EXAMPLES[name]
        module = spec.build()
        module.load_state_dict(torch.load(egru_weights, map_location="cpu", weights_only=True))
        calib, x_test, y_test = spec.data()
        return Model.from_module(module.eval(), torch.from_numpy(x_test[:1]), name=name, calib=calib, test_x=x_test,
                                 test_y=y_test)
    if name != "digits-lstm":
        return Model.load(name)
    from train_digits_lstm import load_or_train

    from edgekit.zoo import digits_data

    module = load_or_train(log=lambda line: print(line, flush=True))
    calib, x_test, y_test = digits_data(sequence=True)
    return Model.from_module(module, torch.from_numpy(x_test[:1]), name=name, calib=calib, test_x=x_test,
                             test_y=y_test)


def measure(model: Model, dtype: str, work: Path, sequences: int | None) -> dict:
    out = work / f"{model.name}-{dtype}"
    t0 = time.time()
    opts = CompileOptions(quantize=None if dtype == "float32" else "int8",
                          extra={} if sequences is None else {"test_sequences": sequences})
    art = api.compile(model, TARGET, out, opts, force=True)
    t1 = time.time()
    m = api.profile(out).measured
    est = art.report["estimate"]
    rec = [r for r in m["layers"] if r["name"] in {c["layer"] for c in art.report["build"]["streaming"]["cells"]}]
    return {
        "model": model.name, "dtype": dtype, "sequences": m["test_inputs"], "match": m["outputs_match"],
        "host_acc_all": m.get("reference_accuracy"), "float_acc": m.get("float_accuracy", m.get("reference_accuracy")),
        "emulated_acc": m.get("accuracy"),
        "ips": m["instructions_per_step"], "ips_min": m["instructions_per_step_min"],
        "ips_max": m["instructions_per_step_max"], "per_sequence": m["instructions"],
        "est_ips": est["instructions_per_step"], "state": m["state_bytes"], "arena": m["arena_bytes"],
        "flash": m["flash_bytes"], "sram": m["sram_bytes"], "stack": m["stack_bytes"],
        "sparsity": m.get("activity_sparsity"), "events_match": m.get("events_match"),
        "cell_ips": sum(r["instructions_per_step"] for r in rec), "layers": m["layers"],
        "steps": art.report["build"]["step_layers"], "step_macs": art.report["build"]["step_macs"],
        "cells": art.report["build"]["streaming"]["cells"], "build_s": t1 - t0, "run_s": time.time() - t1,
        "cost_terms": art.report["build"]["step_cost_terms"], "kernels": art.report["build"]["step_kernels"],
        "call_instructions": m["step_instructions"],
    }


# ---- the int8 scheme, on the host (the integer reference is what the firmware computes, bit for bit) ----------------


def _int8_state(step):
    """A cell step whose int16 states are rounded to 8 bits after every step (an int8 state in the same scale)."""
    def wrapped(qc, x, state):
        new = step(qc, x, state)
        return {k: np.clip(((v + 128) >> 8) << 8, -32768, 32767) for k, v in new.items()}
    return wrapped


def _int8_memory_matrix(qs):
    """The LMU's Ā with int8 entries (per-row scales), expressed in its int16 format."""
    for qc in qs.cells:
        if qc.op == "lmu":
            a = qc.node.params["A_bar"].astype(np.float64)
            q8, s = qrecurrent.per_row_int8(a)
            qc.q["a"] = np.clip(np.round(q8 * s[:, None] * 2.0 ** qc.q["a_frac"]), -32767, 32767).astype(np.int16)
    return qs


def int8_variants(model: Model) -> list[dict]:
    sg = split(model.deploy_graph, TARGET)
    quant = calibrate(model.deploy_graph, model.calib)
    ref = model.predict(model.test_x)
    rows = [{"variant": "float32", "acc": float((ref.argmax(-1) == model.test_y).mean()), "agree": 1.0,
             "max_err": 0.0}]
    variants = [("int8 weights, int16 state (built)", lambda qs: qs, None),
                ("int8 weights, int8 state", lambda qs: qs, _int8_state)]
    if any(c.op == "lmu" for c in sg.cells):
        variants.append(("int8 weights incl. LMU memory matrix, int16 state", _int8_memory_matrix, None))
    step = qrecurrent.cell_step
    for label, change, wrap in variants:
        qs = change(qrecurrent.lower(sg, quant, model.calib))
        qrecurrent.cell_step = wrap(step) if wrap else step
        try:
            y = qrecurrent.predict(qs, model.test_x)
        finally:
            qrecurrent.cell_step = step
        rows.append({"variant": label, "acc": float((y.argmax(-1) == model.test_y).mean()),
                     "agree": float((y.argmax(-1) == ref.argmax(-1)).mean()), "max_err": float(np.abs(y - ref).max())})
    return rows


def scaled_thresholds(model: Model, scale: float) -> Model:
    module = copy.deepcopy(model.module)
    with torch.no_grad():
        for m in module.modules():
            if hasattr(m, "threshold") and isinstance(m.threshold, torch.nn.Parameter):
                m.threshold.mul_(scale)
    return model.with_module(module, name=f"{model.name}-thr{scale:g}")


def fit_costs(rows: list[dict]) -> dict[str, dict]:
    """Least-squares fits per dtype over the cell kernel calls measured (mean instructions per call), in the terms of
    streaming.step_instruction_terms: dense calls = a·MACs + b·units + t·(sigmoid/tanh evaluations) + c; the EGRU's
    event-driven product = e·(MACs of active columns) + u·units + c, its active columns from the measured sparsity."""
    fits = {}
    for dtype in ("float32", "int8"):
        dense, event = [], []
        for r in rows:
            if r["dtype"] != dtype:
                continue
            for terms, kernel, instr in zip(r["cost_terms"], r["kernels"], r["call_instructions"]):
                key, macs, units, acts, calls = terms
                if key.startswith("rnn_event_"):
                    event.append(((1.0 - r["sparsity"]) * macs, units, calls, instr))
                elif key.startswith("rnn_") and "requant" not in kernel:
                    dense.append((macs, units, acts, calls, instr))
        out = {}
        for name, data, cols in (("dense", dense, ("per_mac", "per_unit", "per_activation", "per_call")),
                                 ("event", event, ("per_event_mac", "per_event_unit", "per_call"))):
            if len(data) < len(cols):
                continue
            a = np.array([d[:-1] for d in data], float)
            b = np.array([d[-1] for d in data], float)
            coef, *_ = np.linalg.lstsq(a, b, rcond=None)
            out[name] = {"coef": dict(zip(cols, (float(c) for c in coef))),
                         "worst": float(np.max(np.abs(a @ coef - b) / b)), "calls": len(data)}
        fits[dtype] = out
    return fits


def _pct(v) -> str:
    return "–" if v is None else f"{100 * v:.2f} %"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=list(MODELS))
    ap.add_argument("--dtypes", nargs="+", default=["float32", "int8"])
    ap.add_argument("--sequences", type=int, default=None, help="test sequences run on the emulator (default all)")
    ap.add_argument("--egru-weights", type=Path, default=None,
                    help="digits-egru weights to use instead of the zoo's (a state_dict .pt)")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    console = Console(record=True, width=190)
    work = Path(tempfile.mkdtemp(prefix="ek-bench-recurrent-"))
    models = {name: load(name, args.egru_weights) for name in args.models}
    rows = []
    try:
        for name, model in models.items():
            for dtype in args.dtypes:
                rows.append(measure(model, dtype, work, args.sequences))
                r = rows[-1]
                print(f"{name} {dtype}: {r['ips']:,} instructions/step, match {r['match']}, "
                      f"{r['build_s']:.0f} s build, {r['run_s']:.0f} s emulated", flush=True)
        sweep = []
        if "digits-egru" in models:
            for scale in THRESHOLD_SCALES[1:]:
                for dtype in args.dtypes:
                    sweep.append((scale, measure(scaled_thresholds(models["digits-egru"], scale), dtype, work,
                                                 args.sequences)))
        variants = {name: int8_variants(m) for name, m in models.items()}
    finally:
        shutil.rmtree(work, ignore_errors=True)

    t = Table(title=f"Recurrent models as step programs on the emulated {TARGET} (QEMU mps2-an500)")
    for c in ("model", "dtype", "sequences", "outputs", "accuracy host (all 360)", "accuracy emulated",
              "instr/step (median)", "instr/step min..max", "instr/sequence", "estimate instr/step", "state B",
              "arena B", "flash B", "SRAM B", "zero events"):
        t.add_column(c, justify="left" if c in ("model", "dtype", "outputs") else "right")
    for r in rows + [s[1] for s in sweep]:
        t.add_row(r["model"], r["dtype"], str(r["sequences"]),
                  ("bit-exact" if r["dtype"] == "int8" else "match") if r["match"] else "DIFFER",
                  _pct(r["host_acc_all"]), _pct(r["emulated_acc"]), f"{r['ips']:,}",
                  f"{r['ips_min']:,}..{r['ips_max']:,}", f"{r['per_sequence']:,}", f"{r['est_ips']:,}",
                  f"{r['state']:,}", f"{r['arena']:,}", f"{r['flash']:,}", f"{r['sram']:,}", _pct(r["sparsity"]))
    console.print(t)

    v = Table(title="int8 scheme: integer step functions on the host (= the firmware, bit for bit), 360 test digits")
    for c in ("model", "variant", "accuracy", "same prediction as float", "max logit error"):
        v.add_column(c, justify="left" if c in ("model", "variant") else "right")
    for name, vrows in variants.items():
        for vr in vrows:
            v.add_row(name, vr["variant"], _pct(vr["acc"]), _pct(vr["agree"]), f"{vr['max_err']:.3f}")
    console.print(v)

    by = {(r["model"], r["dtype"]): r for r in rows}
    if "digits-egru" in models and "digits-gru" in models:
        e = Table(title="EGRU vs dense GRU (same task; instructions per step measured; zero events on the device)")
        for c in ("dtype", "model", "thresholds", "zero events", "accuracy host", "instr/step", "recurrent layer "
                  "instr/step", "vs GRU"):
            e.add_column(c, justify="left" if c in ("dtype", "model") else "right")
        for dtype in args.dtypes:
            gru = by.get(("digits-gru", dtype))
            cands = [(1.0, by.get(("digits-egru", dtype)))] + [(s, r) for s, r in sweep if r["dtype"] == dtype]
            if gru:
                e.add_row(dtype, "digits-gru", "–", "0 %", _pct(gru["host_acc_all"]), f"{gru['ips']:,}",
                          f"{gru['cell_ips']:,.0f}", "1.00x")
            for scale, r in cands:
                if r is None:
                    continue
                e.add_row(dtype, "digits-egru", f"x{scale:g}", _pct(r["sparsity"]), _pct(r["host_acc_all"]),
                          f"{r['ips']:,}", f"{r['cell_ips']:,.0f}",
                          f"{gru['ips'] / r['ips']:.2f}x fewer" if gru else "")
        console.print(e)

    fits = fit_costs(rows)
    if fits:
        f = Table(title="Recurrent kernel cost terms fitted to the measured calls (streaming.DEFAULT_CELL_COSTS)")
        for c in ("dtype", "kernels", "coefficients (instructions)", "worst error", "calls"):
            f.add_column(c, justify="left" if c in ("kernels", "coefficients (instructions)") else "right")
        for dtype, parts in fits.items():
            for name, fit in parts.items():
                f.add_row(dtype, name, ", ".join(f"{k} {v:.3g}" for k, v in fit["coef"].items()),
                          f"{fit['worst']:.1%}", str(fit["calls"]))
        console.print(f)
    notes = [
        "Instructions are QEMU's executed instructions (TCG plugin, exact), not cycles. One step = one call of "
        "edgekit_model_step (cells, head, state copies); per sequence = the sum over its 64 steps.",
        "float32 outputs are checked against PyTorch within 1e-4 + 1e-4·|y|; int8 against edgekit/qrecurrent.py, bit "
        "for bit. Emulated accuracy is over the sequences run; host accuracy over all 360.",
        "State B: the ek_state area (persistent between steps), outside the arena; SRAM B = .data + .bss (arena, "
        "state, ...) + measured stack; flash B = ELF minus test data.",
    ]
    for n in notes:
        console.print(n)
    if not args.no_write:
        RESULTS.parent.mkdir(exist_ok=True)
        RESULTS.write_text(console.export_text())
        print(f"wrote {RESULTS}")
    return 0 if all(r["match"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
