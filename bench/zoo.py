"""The zoo of public architectures (edgekit/zoo/public.py) on every target: edgekit's standing test.

    .venv/bin/python bench/zoo.py                    # every model x target, writes bench/results/zoo.md
    .venv/bin/python bench/zoo.py --only resnet8     # models whose name contains the text (their rows replace
                                                     # the same rows of bench/results/zoo.md)
    .venv/bin/python bench/zoo.py --configs cortex-m7:int8   # run these configurations again and replace their
                                                     # rows in bench/results/zoo.md (the other rows stay)

For each model and configuration (cortex-m7 int8 and float32 on the emulated board; phone-arm64 int8 and float32 in
ONNX Runtime; esp32-c3, an rv32imc RISC-V core, int8 on its emulated board): compile, profile, and record whether
it compiled (or the one-line refusal), whether the artifact is bit-exact to its reference (``outputs_match``), its
fidelity to the float model (SQNR, top-1 agreement, ``measured.fidelity``), flash, peak SRAM, instructions and
instructions per MAC (microcontrollers), the estimate's errors and the compile time.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

CONFIGS = [("cortex-m7", "int8"), ("cortex-m7", None), ("phone-arm64", "int8"), ("phone-arm64", None),
           ("esp32-c3", "int8")]  # the RISC-V microcontroller (rv32imc) beside the Arm one


def _pct(v):
    return "" if v is None else f"{v:+.1%}"


def run_one(name: str, target: str, quantize: str | None, tmp: Path) -> dict:
    from edgekit import api
    from edgekit.errors import EdgekitError

    row = {"model": name.removeprefix("zoo-"), "target": target, "dtype": quantize or "float32"}
    out = tmp / f"{name}-{target}-{row['dtype']}"
    t = time.perf_counter()
    try:
        art = api.compile(name, target, out, quantize=quantize, force=True)
    except EdgekitError as e:
        row.update(compiled="no: " + " ".join(str(e).split())[:160], compile_s=time.perf_counter() - t)
        return row
    row["compile_s"] = time.perf_counter() - t
    row["compiled"] = "yes"
    try:
        m = api.profile(out, repeat=5).report
    except EdgekitError as e:
        row["profile"] = "failed: " + " ".join(str(e).split())[:160]
        return row
    meas, err = m["measured"], m.get("errors") or {}
    fid = meas.get("fidelity") or {}
    row.update(bit_exact=meas.get("outputs_match"), sqnr=fid.get("sqnr_db"), identical=fid.get("identical"),
               top1=fid.get("top1_agreement"), acc=fid.get("accuracy"), float_acc=fid.get("float_accuracy"), fid_ok=fid.get("ok"), flash=meas.get("flash_bytes"),
               sram=meas.get("sram_bytes"), instructions=meas.get("instructions"),
               ipm=meas.get("instructions_per_mac"), err_instr=err.get("instructions"),
               err_flash=err.get("flash_bytes"), err_sram=err.get("peak_sram_bytes"))
    return row


def table(rows: list[dict]) -> str:
    head = ["model", "target", "dtype", "compiled", "bit-exact", "SQNR dB", "top-1 agr.", "accuracy (float)", "flash B", "peak SRAM B",
            "instructions", "instr/MAC", "est. err instr", "est. err flash", "est. err SRAM", "compile s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        ok = r.get("compiled") == "yes"
        sqnr = "exact" if r.get("identical") else ("" if r.get("sqnr") is None else f"{r['sqnr']:.1f}")
        cells = [r["model"], r["target"], r["dtype"], r.get("compiled", ""),
                 "" if not ok else r.get("profile", {True: "yes", False: "NO", None: "n/a"}[r.get("bit_exact")]),
                 sqnr + ("" if r.get("fid_ok", True) else " LOW"),
                 "" if r.get("top1") is None else f"{r['top1']:.0%}",
                 "" if r.get("acc") is None else f"{r['acc']:.0%} ({r['float_acc']:.0%})",
                 "" if r.get("flash") is None else f"{r['flash']:,}", "" if r.get("sram") is None else f"{r['sram']:,}",
                 "" if r.get("instructions") is None else f"{r['instructions']:,}",
                 "" if r.get("ipm") is None else f"{r['ipm']:.2f}", _pct(r.get("err_instr")),
                 _pct(r.get("err_flash")), _pct(r.get("err_sram")), f"{r.get('compile_s', 0):.1f}"]
        lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from edgekit.zoo import EXAMPLES

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default=None)
    ap.add_argument("--configs", nargs="+", default=None, metavar="TARGET:DTYPE",
                    help="only these of " + ", ".join(f"{t}:{q or 'float32'}" for t, q in CONFIGS) +
                         "; their rows replace the same rows of bench/results/zoo.md")
    args = ap.parse_args(argv)
    names = [n for n in EXAMPLES if n.startswith("zoo-") and (args.only is None or args.only in n)]
    configs = CONFIGS
    if args.configs:
        known = {f"{t}:{q or 'float32'}": (t, q) for t, q in CONFIGS}
        bad = [c for c in args.configs if c not in known]
        if bad:
            ap.error(f"unknown configuration {bad[0]!r}: choose from {', '.join(known)}")
        configs = [known[c] for c in args.configs]
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgekit-zoo-") as tmp:
        for name in names:
            for target, q in configs:
                rows.append(run_one(name, target, q, Path(tmp)))
                r = rows[-1]
                print(f"{r['model']:28s} {r['target']:12s} {r['dtype']:8s} {r.get('compiled', '')[:90]} "
                      f"bit-exact={r.get('bit_exact')} sqnr={r.get('sqnr')} top1={r.get('top1')}", flush=True)
    text = table(rows)
    print(text)
    out = Path(__file__).parent / "results" / "zoo.md"
    if (args.configs or args.only is not None) and out.exists():  # replace those rows, keep the others
        fresh = {tuple(c.strip() for c in line.split("|")[1:4]): line for line in text.splitlines()[2:]}
        lines = out.read_text().splitlines()
        for i, line in enumerate(lines):
            key = tuple(c.strip() for c in line.split("|")[1:4])
            if line.startswith("| ") and key in fresh:
                lines[i] = fresh.pop(key)
        out.write_text("\n".join(lines + list(fresh.values())) + "\n")
    elif args.only is None:
        out.write_text("# The zoo on every target (bench/zoo.py)\n\nThe image classifiers briefly trained on the "
                       "digits (accuracy on 32 test digits, the float model's in brackets), the others random weights "
                       "with BatchNorm re-estimated (edgekit/zoo/public.py); fidelity is against the float PyTorch model on the same test "
                       "inputs; bit-exact is against each target's own reference (int8: the host integer "
                       "reference; float32: PyTorch within tolerance).\n\n" + text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
