"""Patch-based inference benchmark: peak SRAM layer by layer vs the scheduler's choice, measured on the emulated M7.

For each CNN: compile int8 for cortex-m7 with --patch off and --patch min-memory (MAC overhead limit 15 %; --patch
auto would keep these models layer by layer on the M7's 512 KB), run both under
QEMU (outputs checked bit-exact against the host reference), and print: the arena in the ELF for both schedules, the
ratio, the MAC overhead, instructions per inference for both, and what the scheduler chose.

    .venv/bin/python bench/patch.py                   # mbv2-w035, a VGG-style net, digits-cnn, a late peak
    .venv/bin/python bench/patch.py --zoo             # the zoo's CNNs instead (bench/results/patch_zoo.txt)

Also printed: the instruction overhead over the MAC overhead (issue 14's goal: at most 1.5) and the flash beyond
the model's constants for both schedules.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from rich.console import Console
from rich.table import Table

from edgekit import api
from edgekit.model import Model


def vgg_like() -> Model:
    """A plain VGG-style CNN at 64x64: big early activations, no residuals (patching should pay)."""
    torch.manual_seed(1)
    layers, c = [], 3
    for out, pool in ((16, False), (16, True), (32, False), (32, True), (64, True), (64, True)):
        layers += [nn.Conv2d(c, out, 3, padding=1), nn.ReLU()] + ([nn.MaxPool2d(2)] if pool else [])
        c = out
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, 10)]
    x = np.random.default_rng(1).standard_normal((4, 3, 64, 64)).astype(np.float32)
    return Model.from_module(nn.Sequential(*layers).eval(), torch.from_numpy(x[:1]), name="vgg-64",
                             calib=x, test_x=x[:2])


def late_peak() -> Model:
    """The largest tensor is the last spatial layer's output, which the first non-spatial layer (flatten + linear)
    needs whole: no patch stage can lower the peak, so the scheduler should not patch."""
    torch.manual_seed(2)
    layers = [nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 64, 1), nn.ReLU(), nn.Flatten(),
              nn.Linear(64 * 16 * 16, 10)]
    x = np.random.default_rng(2).standard_normal((4, 3, 16, 16)).astype(np.float32)
    return Model.from_module(nn.Sequential(*layers).eval(), torch.from_numpy(x[:1]), name="late-peak",
                             calib=x, test_x=x[:2])


def run(models, max_overhead=0.15):
    rows = []
    work = Path(tempfile.mkdtemp(prefix="ek-patch-"))
    try:
        for m in models:
            res = {}
            for mode in ("off", "min-memory"):
                out = work / f"{m.name if isinstance(m, Model) else m}-{mode}"
                art = api.compile(m, "cortex-m7", out, quantize="int8", patch=mode, max_patch_overhead=max_overhead)
                meas = api.profile(out).measured
                res[mode] = (art.report, meas)
            rep_off, m_off = res["off"]
            rep_on, m_on = res["min-memory"]
            patch = rep_on.get("patch")
            rows.append({
                "model": rep_on["model"]["name"], "macs": rep_on["model"]["macs"],
                "arena_off": m_off["arena_bytes"], "arena_on": m_on["arena_bytes"],
                "ratio": m_off["arena_bytes"] / m_on["arena_bytes"],
                "overhead": patch["mac_overhead"] if patch else 0.0,
                "instr_off": m_off["instructions"], "instr_on": m_on["instructions"],
                "code_off": m_off["flash_bytes"] - rep_off["build"]["weight_bytes"],
                "code_on": m_on["flash_bytes"] - rep_on["build"]["weight_bytes"],
                "match": m_off["outputs_match"] and m_on["outputs_match"],
                "choice": (f"{len(patch['stages'])} stage(s): first {'x'.join(map(str, patch['stages'][0]['grid']))}"
                           f" up to {patch['split_after']}" if patch else "no patching"),
                "reason": (rep_on.get("schedule") or {}).get("reason", ""),
            })
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return rows


ZOO_CNNS = ["zoo-dscnn-kws", "zoo-mobilenet-v1-025", "zoo-mobilenet-v2-035", "zoo-mobilenet-v3-small",
            "zoo-resnet8", "zoo-resnet20", "zoo-squeezenet", "zoo-shufflenet", "zoo-efficientnet-lite",
            "zoo-efficientnet-b0", "zoo-unet"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--zoo", action="store_true", help="the zoo's CNNs (writes bench/results/patch_zoo.txt)")
    args = ap.parse_args(argv)
    rows = run(ZOO_CNNS if args.zoo else ["mbv2-w035", vgg_like(), "digits-cnn", late_peak()])
    t = Table(title="Patch-based inference on the emulated Cortex-M7 (int8, MAC overhead limit 15 %)")
    for col in ("model", "MACs", "arena layer-by-layer", "arena scheduled", "ratio", "MAC overhead",
                "instructions off", "instructions scheduled", "instr. / MAC overhead", "flash beyond constants",
                "outputs", "scheduler's choice"):
        t.add_column(col, justify="left" if col in ("model", "outputs", "scheduler's choice") else "right")
    for r in rows:
        extra = r["instr_on"] / r["instr_off"] - 1
        t.add_row(r["model"], f"{r['macs']:,}", f"{r['arena_off']:,}", f"{r['arena_on']:,}", f"{r['ratio']:.2f}x",
                  f"{r['overhead']:.1%}", f"{r['instr_off']:,}", f"{r['instr_on']:,} ({extra:+.1%})",
                  f"{extra / r['overhead']:.2f}" if r["overhead"] > 0 else "–",
                  f"{r['code_off']:,} -> {r['code_on']:,}", "bit-exact" if r["match"] else "DIFFER", r["choice"])
    console = Console(record=True, width=260)
    console.print(t)
    for r in rows:
        console.print(f"[bold]{r['model']}[/]: {r['reason']}")
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / ("patch_zoo.txt" if args.zoo else "patch.txt")).write_text(console.export_text())
    return 0 if all(r["match"] and r["arena_on"] <= r["arena_off"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
