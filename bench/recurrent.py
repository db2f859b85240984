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
    if name == "digits-egru" and egru_weights is not None:  # weights written by examples/train_egru.py elsewhere
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
        "event_flips": m.get("event_flips", 0),
        "cell_ips": sum(r["instructions_per_step"] for r in rec), "layers": m["layers"],
        "steps": art.report["build"]["step_layers"], "step_macs": art.report["build"]["step_macs"],
        "cells": art.report["build"]["streaming"]["cells"], "build_s": t1 - t0, "run_s": time.time() - t1,
        "cost_terms": art.report["build"]["step_cost_terms"], "kernels": art.report["build"]["step_kernels"],
        "call_instructions": m["step_instructions"],
        "call_estimates": art.report["build"]["step_estimated_instructions"],
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


def kernel_rows(rows: list[dict]) -> list[dict]:
    """Per recurrent kernel call: its work terms, the instructions measured (mean per call over every step run) and
    the estimate (targets/mcu/cost.py: call_instructions with DEFAULT_CELL_COSTS)."""
    out = []
    for r in rows:
        for terms, kernel, measured, estimated in zip(r["cost_terms"], r["kernels"], r["call_instructions"],
                                                      r["call_estimates"]):
            key, macs, units, acts, _ = terms
            if key.startswith("rnn_"):
                name = kernel.split("ek_tvm_")[-1].rsplit("_", 1)[0]
                out.append({"model": r["model"], "dtype": r["dtype"], "kernel": name, "macs": macs, "units": units, "acts": acts, "measured": measured, "estimated": estimated,
                            "sparsity": r["sparsity"]})
    return out


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
    console = Console(record=True, width=240)
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
    for c in ("model", "dtype", "sequences", "outputs", "accuracy host (360)", "accuracy emulated",
              "instr/step (median)", "instr/step min..max", "instr/sequence", "estimate instr/step", "state B",
              "arena B", "flash B", "SRAM B", "zero events"):
        t.add_column(c, justify="left" if c in ("model", "dtype", "outputs") else "right",
                     no_wrap=c in ("model", "outputs", "instr/step min..max"))
    for r in rows + [s[1] for s in sweep]:
        flips = f" ({r['event_flips']} event flip{'s' if r['event_flips'] != 1 else ''})" if r["event_flips"] else ""
        t.add_row(r["model"], r["dtype"], str(r["sequences"]),
                  (("bit-exact" if r["dtype"] == "int8" else "match") + flips) if r["match"] else "DIFFER",
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

    goals = Table(title="Goals of the issue")
    for c in ("goal", "measured", "met"):
        goals.add_column(c, justify="left")
    for dtype in args.dtypes:
        gru, egru = by.get(("digits-gru", dtype)), by.get(("digits-egru", dtype))
        if gru and egru:
            loss = gru["host_acc_all"] - egru["host_acc_all"]
            goals.add_row(f"EGRU >= 80 % zero events at <= 1 point loss vs the GRU ({dtype})",
                          f"{egru['sparsity']:.1%} zero events, {100 * loss:+.2f} points "
                          f"({_pct(egru['host_acc_all'])} vs {_pct(gru['host_acc_all'])})",
                          "yes" if egru["sparsity"] >= 0.8 and loss <= 0.01 + 1e-9 else "no")
            goals.add_row(f"EGRU instructions per step fall with activity ({dtype})",
                          f"{egru['ips']:,} vs GRU {gru['ips']:,} ({gru['ips'] / egru['ips']:.2f}x fewer); "
                          f"recurrent product only on the {1 - egru['sparsity']:.0%} active units",
                          "yes" if egru["ips"] < gru["ips"] else "no")
    lmu_f, lmu_q = by.get(("digits-lmu", "float32")), by.get(("digits-lmu", "int8"))
    if lmu_f and lmu_q:
        loss = lmu_f["host_acc_all"] - lmu_q["host_acc_all"]
        goals.add_row("LMU int8 within 1 point of float", f"{_pct(lmu_q['host_acc_all'])} vs "
                      f"{_pct(lmu_f['host_acc_all'])} ({100 * loss:+.2f} points)", "yes" if loss <= 0.01 + 1e-9
                      else "no")
    console.print(goals)

    k = Table(title="Recurrent kernels: instructions per call, measured (mean over all steps) and estimated "
                    "(targets/mcu/cost.py DEFAULT_CELL_COSTS; EGRU product: dense upper bound)")
    for c in ("model", "dtype", "kernel", "MACs", "units", "sigmoid/tanh", "measured", "estimated", "error"):
        k.add_column(c, justify="left" if c in ("model", "dtype", "kernel") else "right")
    for kr in kernel_rows(rows):
        k.add_row(kr["model"], kr["dtype"], kr["kernel"], f"{kr['macs']:,}", str(kr["units"]), str(kr["acts"]),
                  f"{kr['measured']:,.0f}", f"{kr['estimated']:,.0f}",
                  f"{(kr['estimated'] - kr['measured']) / kr['measured']:+.0%}")
    console.print(k)
    notes = [
        "Instructions are QEMU's executed instructions (TCG plugin, exact), not cycles. One step = one call of "
        "edgekit_model_step (cells, head, state copies); per sequence = the sum over its 64 steps.",
        "float32 outputs are checked against PyTorch within 1e-4 + 1e-4·|y|; int8 against edgekit/qrecurrent.py, bit "
        "for bit. An event flip: a float32 EGRU sequence in which a unit's state came within 1e-5 of its threshold, "
        "so float rounding decides the event (runtimes/mcu.py). Emulated accuracy is over the "
        "sequences run; host accuracy over all 360.",
        "digits-egru-thr1.25/-thr1.5: digits-egru with every threshold scaled up (no retraining): fewer events, fewer "
        "instructions, lower accuracy.",
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
