"""Microcontroller benchmark: the bundled examples on every Cortex-M and RISC-V core, built and run on the emulated
board (Arm and RISC-V side by side).

Prints (and writes to bench/results/cortex_m_KERNELS.txt) one row per example, core and dtype: MACs, executed
instructions per inference (exact, QEMU plugin; recurrent models: per test sequence, and per step), instructions per MAC, model
flash (ELF minus test data), the model's constants in it (weights, biases, requantization tables) and the rest (code:
kernels, driver, startup, harness), SRAM (static RAM incl. arena + measured stack), arena, outputs checked, accuracy,
compile+build seconds.

    .venv/bin/python bench/cortex_m.py                          # digits-cnn, digits-gru, mbv2-w035: all cores,
                                                                # int8 + float
    .venv/bin/python bench/cortex_m.py --models digits-cnn --cores cortex-m7 --dtypes int8
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from edgekit import api
from edgekit.errors import EdgekitError

CORES = ["cortex-m4", "cortex-m7", "cortex-m33", "cortex-m55", "esp32-c3", "gd32vf103", "ch32v307"]


def run(models, cores, dtypes, kernels="auto", patch="auto"):
    rows = []
    work = Path(tempfile.mkdtemp(prefix="ek-bench-"))
    try:
        for model in models:
            for core in cores:
                for dtype in dtypes:
                    out = work / f"{model}-{core}-{dtype}"
                    t0 = time.time()
                    try:
                        art = api.compile(model, core, out, quantize=None if dtype == "float32" else dtype,
                                          kernels=kernels, patch=patch, allow_oversize=True)
                        build_s = time.time() - t0
                        m = api.profile(out).measured
                    except EdgekitError as e:
                        rows.append({"model": model, "core": core, "dtype": dtype, "error": str(e)[:90]})
                        continue
                    rep = art.report
                    rows.append({
                        "model": model, "core": core, "dtype": dtype, "macs": rep["model"]["macs"],
                        "instructions": m["instructions"], "ipm": m["instructions_per_mac"],
                        "flash": m["flash_bytes"], "sram": m["sram_bytes"], "arena": m["arena_bytes"],
                        "stack": m["stack_bytes"], "match": m["outputs_match"], "acc": m.get("accuracy"),
                        "ref_acc": m.get("reference_accuracy"), "fits": m["fits_measured"], "build_s": build_s,
                        "patch": (rep.get("patch") or {}).get("grid"),
                        "constants": rep["build"].get("weight_bytes"),
                        "per_step": m.get("instructions_per_step"),
                    })
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return rows


def table(rows, title) -> Table:
    t = Table(title=title)
    for col in ("model", "core", "dtype", "MACs", "instructions", "instr/MAC", "flash B", "constants B",
                "flash beyond constants B", "SRAM B", "arena B", "stack B", "outputs", "accuracy (host)", "fits",
                "build s"):
        t.add_column(col, justify="left" if col in ("model", "core", "dtype", "outputs") else "right")
    for r in rows:
        if "error" in r:
            t.add_row(r["model"], r["core"], r["dtype"], *[""] * 9, r["error"], "", "", "")
            continue
        acc = "" if r["acc"] is None else f"{r['acc']:.2%} ({r['ref_acc']:.2%})"
        instr = f"{r['instructions']:,}" + (f" ({r['per_step']:,.0f}/step)" if r.get("per_step") else "")
        ipm = "–" if r["ipm"] is None else f"{r['ipm']:.2f}"
        const = r.get("constants")
        t.add_row(r["model"], r["core"], r["dtype"], f"{r['macs']:,}", instr, ipm,
                  f"{r['flash']:,}", "–" if const is None else f"{const:,}",
                  "–" if const is None else f"{r['flash'] - const:,}", f"{r['sram']:,}", f"{r['arena']:,}",
                  f"{r['stack']:,}",
                  "match" if r["match"] else "DIFFER", acc, "yes" if r["fits"] else "no", f"{r['build_s']:.1f}")
    return t


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["digits-cnn", "digits-gru", "mbv2-w035"])
    ap.add_argument("--cores", nargs="+", default=CORES)
    ap.add_argument("--dtypes", nargs="+", default=["int8", "float32"])
    ap.add_argument("--kernels", default="auto", help="auto (edgekit DSP kernels for int8) or tvm")
    ap.add_argument("--patch", default="auto")
    args = ap.parse_args(argv)
    rows = run(args.models, args.cores, args.dtypes, args.kernels, args.patch)
    console = Console(record=True, width=200)
    console.print(table(rows, f"Cortex-M and RISC-V on QEMU (kernels={args.kernels}, patch={args.patch})"))
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / f"cortex_m_{args.kernels}.txt").write_text(console.export_text())
    return 0 if all("error" not in r and r["match"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
