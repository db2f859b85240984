"""Estimator accuracy: estimate vs measured for every bundled example and target, and the cost-model fit.

    .venv/bin/python bench/estimators.py              # error table (flash, SRAM, instructions, latency) for all
    .venv/bin/python bench/estimators.py --fit        # also fit the Cortex-M cost model to the emulated runs and
                                                      # print the [cost] lines for targets/profiles/*.toml

The Cortex-M cost model: instructions of a step = a·units + b·outputs + c (units: MACs for conv/linear kernels,
elements for the rest; see targets/cortex_m.step_cost_terms). ``--fit`` solves for (a, b, c) per kernel family by
non-negative least squares over every measured layer (relative error weighted) and prints them.
Goals (issue "cost models"): flash and peak SRAM within 5 %, instructions within 25 % of the emulated M7.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from edgekit import api
from edgekit.errors import EdgekitError

CONFIGS = [
    ("digits-cnn", "cortex-m7", "int8", "auto"), ("digits-cnn", "cortex-m7", None, "auto"),
    ("digits-cnn", "cortex-m7", "int8", "tvm"),
    ("mbv2-w035", "cortex-m7", "int8", "auto"), ("mbv2-w035", "cortex-m7", "int8", "tvm"),
    ("digits-cnn", "cortex-m4", "int8", "auto"), ("digits-cnn", "cortex-m33", "int8", "auto"),
    ("digits-cnn", "cortex-m55", "int8", "auto"),
    ("digits-cnn", "phone-arm64", "int8", "auto"), ("digits-cnn", "phone-arm64", None, "auto"),
    ("digits-gru", "phone-arm64", None, "auto"), ("mbv2-w035", "phone-arm64", "int8", "auto"),
]


def run(configs):
    work = Path(tempfile.mkdtemp(prefix="ek-est-"))
    results = []
    try:
        for i, (model, target, q, kernels) in enumerate(configs):
            out = work / str(i)
            try:
                api.compile(model, target, out, quantize=q, kernels=kernels, allow_oversize=True)
                rep = api.profile(out, repeat=20).report
            except EdgekitError as e:
                results.append({"model": model, "target": target, "q": q or "float32", "kernels": kernels,
                                "error": str(e)[:100]})
                continue
            results.append({"model": model, "target": target, "q": q or "float32", "kernels": kernels, "rep": rep})
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return results


def error_table(results) -> Table:
    t = Table(title="estimate vs measured: (estimate − measured) / measured")
    for col in ("model", "target", "dtype", "kernels", "flash", "peak SRAM", "arena", "instructions", "latency"):
        t.add_column(col, justify="left" if col in ("model", "target", "dtype", "kernels") else "right")
    for r in results:
        if "error" in r:
            t.add_row(r["model"], r["target"], r["q"], r["kernels"], r["error"], "", "", "", "")
            continue
        e = r["rep"]["errors"] or {}
        f = lambda k: "–" if k not in e else f"{e[k]:+.1%}"  # noqa: E731
        t.add_row(r["model"], r["target"], r["q"], r["kernels"], f("flash_bytes"), f("peak_sram_bytes"),
                  f("arena_bytes"), f("instructions"), f("latency_ms"))
    return t


def fit(results):
    """Per core and cost key: NNLS fit of instructions = a·units + b·outputs + c·calls over measured layers."""
    from scipy.optimize import nnls

    rows = defaultdict(list)
    for r in results:
        rep = r.get("rep")
        if not rep or rep["target_kind"] != "mcu":
            continue
        b = rep["build"]
        layer_terms = defaultdict(lambda: defaultdict(lambda: np.zeros(3)))
        for layer, (key, units, outs) in zip(b["step_layers"], b["step_cost_terms"]):
            layer_terms[layer][key] += np.array([units, outs, 1.0])
        for m in rep["measured"]["layers"]:
            terms = layer_terms[m["name"]]
            if len(terms) == 1:  # a layer whose steps share one kernel family
                (key, vec), = terms.items()
                rows[(rep["target"], key)].append((vec, m["instructions"]))
    fitted = {}
    for (core, key), data in sorted(rows.items()):
        A = np.array([d[0] for d in data])
        y = np.array([d[1] for d in data], dtype=float)
        w = 1.0 / np.maximum(y, 1.0)  # relative error
        cols = [0, 1, 2] if len(data) >= 3 else [0]
        coef, _ = nnls(A[:, cols] * w[:, None], y * w)
        full = np.zeros(3)
        full[cols] = coef
        pred = A @ full
        err = np.max(np.abs(pred - y) / np.maximum(y, 1)) if len(y) else 0
        fitted[(core, key)] = (full, len(data), err)
    return fitted


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fit", action="store_true")
    ap.add_argument("--quick", action="store_true", help="digits-cnn on cortex-m7 only")
    args = ap.parse_args(argv)
    configs = CONFIGS[:3] if args.quick else CONFIGS
    results = run(configs)
    console = Console(record=True, width=160)
    console.print(error_table(results))
    if args.fit:
        fitted = fit(results)
        t = Table(title="Cortex-M cost model fit: instructions = a·units + b·outputs + c")
        for col in ("core", "key", "a / unit", "b / output", "c / call", "layers", "max rel. error"):
            t.add_column(col)
        for (core, key), (coef, n, err) in fitted.items():
            t.add_row(core, key, f"{coef[0]:.3f}", f"{coef[1]:.2f}", f"{coef[2]:.0f}", str(n), f"{err:.1%}")
        console.print(t)
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "estimators.txt").write_text(console.export_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
