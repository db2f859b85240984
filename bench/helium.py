"""Helium on the Cortex-M55: every bundled example and zoo model in int8 on the emulated M7 (edgekit's SMLAD kernels)
and the emulated M55 (its Helium kernels, ``--kernels auto``), side by side; optionally the M55 with the SMLAD
kernels too (``--dsp-on-m55``).

Per model and core: whether it built (or the one-line refusal), whether the firmware's outputs equal the host
integer reference bit for bit, executed instructions per inference (QEMU, exact; recurrent models per test sequence),
instructions per MAC, the estimate's cycles (instructions x the profile's cycles per instruction: an estimate),
model flash, and the instruction estimate's error. Writes bench/results/helium.md.

    .venv/bin/python bench/helium.py                       # all examples and zoo models (~20 min)
    .venv/bin/python bench/helium.py --only mbv2 --dsp-on-m55
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

from edgekit import api
from edgekit.errors import EdgekitError

RESULTS = Path(__file__).resolve().parent / "results" / "helium.md"


def examples() -> list[str]:
    from edgekit.zoo import EXAMPLES

    return list(EXAMPLES)


def run_one(name: str, target: str, kernels: str, tmp: Path) -> dict:
    row = {"model": name, "core": target, "kernels": kernels}
    out = tmp / f"{name}-{target}-{kernels}"
    t = time.perf_counter()
    try:
        art = api.compile(name, target, out, quantize="int8", kernels=kernels, force=True)
        m = api.profile(out).measured
    except EdgekitError as e:
        row["error"] = " ".join(str(e).split())[:140]
        return row
    rep = art.report
    est = rep["estimate"]
    row.update(build_s=time.perf_counter() - t, macs=rep["model"]["macs"], instructions=m["instructions"],
               ipm=m.get("instructions_per_mac"), match=m["outputs_match"], flash=m.get("flash_bytes"),
               cycles=est.get("cycles"), kernel_set=rep["build"]["kernels"],
               est_err=(est["instructions"] - m["instructions"]) / m["instructions"] if m["instructions"] else None,
               per_step=m.get("instructions_per_step"))
    shutil.rmtree(out, ignore_errors=True)
    return row


def _cell(r: dict | None) -> tuple[str, ...]:
    if r is None:
        return ("", "", "", "", "")
    if "error" in r:
        return ("refused", r["error"][:60], "", "", "")
    ins = f"{r['instructions']:,}" + (f" ({r['per_step']:,}/step)" if r.get("per_step") else "")
    ipm = f"{r['ipm']:.2f}" if r.get("ipm") else ""
    err = f"{r['est_err']:+.1%}" if r.get("est_err") is not None else ""
    return ("yes" if r["match"] else "**NO**", ins, ipm, f"{r['flash']:,}" if r.get("flash") else "", err)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default=None, help="models whose name contains this text")
    ap.add_argument("--dsp-on-m55", action="store_true", help="also the M55 with the SMLAD kernels")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    names = [n for n in examples() if args.only is None or args.only in n]
    configs = [("cortex-m7", "auto"), ("cortex-m55", "auto")] + ([("cortex-m55", "dsp")] if args.dsp_on_m55 else [])
    rows: dict[tuple, dict] = {}
    with tempfile.TemporaryDirectory(prefix="ek-helium-") as tmp:
        for name in names:
            for target, kernels in configs:
                r = run_one(name, target, kernels, Path(tmp))
                rows[(name, target, kernels)] = r
                status = r.get("error") or f"{r['instructions']:,} instructions, match={r['match']}"
                print(f"{name:32s} {target:10s} {kernels:5s} {status}", flush=True)
    titles = {("cortex-m7", "auto"): "M7 DSP", ("cortex-m55", "auto"): "M55 Helium", ("cortex-m55", "dsp"): "M55 DSP"}
    head = "| model | " + " | ".join(f"{titles[c]}: bit-exact | instructions | instr/MAC | flash B | est. error"
                                     for c in configs) + " | M7 / M55 Helium |"
    lines = ["# Helium (MVE) kernels on the emulated Cortex-M55 beside the DSP kernels on the M7",
             "",
             "int8, `--kernels auto` (the M7: edgekit's SMLAD kernels; the M55: its Helium kernels, ek_nn_s8_mve.c), "
             "built and run on QEMU (mps2-an500 / mps3-an547); instructions are exact counts (not cycles: most M55 "
             "vector instructions take two beats — the estimate's cycles use the profile's cycles per instruction). "
             "Recurrent models: instructions per test sequence and per step. `.venv/bin/python bench/helium.py`.",
             "", head, "|" + "---|" * (2 + 5 * len(configs))]
    for name in names:
        cells = []
        for c in configs:
            cells += _cell(rows.get((name, *c)))
        a, b = rows.get((name, "cortex-m7", "auto")), rows.get((name, "cortex-m55", "auto"))
        ratio = f"{a['instructions'] / b['instructions']:.2f}x" if a and b and "error" not in a and \
            "error" not in b and b["instructions"] else ""
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {ratio} |")
    bad = [k for k, r in rows.items() if "error" not in r and not r["match"]]
    lines += ["", f"Not bit-exact: {', '.join('/'.join(k) for k in bad) if bad else 'none'}."]
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.no_write and args.only is None:
        RESULTS.write_text(text)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
