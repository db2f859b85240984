"""The tile GEMM's instruction terms (targets/profiles/cost/cortex-m*.toml ``conv2d_int8_ek*``) fitted to whole models.

    .venv/bin/python bench/conv_tile_fit.py                # fit and print; --write puts the terms in the profiles
    .venv/bin/python bench/conv_tile_fit.py --write > bench/results/conv_tile_fit.txt

Every model below is compiled for the emulated Cortex-M7 (int8, edgekit's kernels) layer by layer (``--patch off``)
and patch-based (``--patch min-memory``, 15 % MAC limit) and run under QEMU (outputs checked bit for bit). Each layer
whose calls all run ek_conv2d_s8's tile GEMM is one data point: its measured instructions against the sum over its
calls of cost.conv_tile_terms' (units, outputs, inputs) and the number of calls. A patch tile is a call of its own,
so the fit prices what a tile costs beyond its MACs — the per-call term fitted on whole layers alone (one call each)
had absorbed per-layer work and over-priced small patch tiles (digits-cnn patched: +16 % on a 16-tile conv).
Non-negative least squares on relative errors; the table shows the current and the fitted terms' errors.
"""
from __future__ import annotations

import argparse
import re
import sys
import tempfile
from pathlib import Path

import numpy as np
from scipy.optimize import nnls

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edgekit import api  # noqa: E402
from edgekit.targets.profiles import get_profile  # noqa: E402

MODELS = ("digits-cnn", "mbv2-w035", "zoo-resnet8", "zoo-resnet20", "zoo-mobilenet-v1-025", "zoo-mobilenet-v2-035",
          "zoo-mobilenet-v3-small", "zoo-squeezenet", "zoo-efficientnet-lite")
KEY = "conv2d_int8_ek"
TERMS = ("", "_per_output", "_per_input", "_per_call")
PROFILES = ("cortex-m7", "cortex-m4", "cortex-m33", "cortex-m55")  # the same DSP kernels: the M7's counts


def layer_points(report: dict) -> list[tuple[str, list[float], int]]:
    """(layer, [units, outputs, inputs, calls], measured instructions) of every layer run wholly on the tile GEMM."""
    b, measured = report["build"], {x["name"]: x["instructions"] for x in report["measured"]["layers"]}
    sums: dict[str, list[float] | None] = {}
    for layer, terms in zip(b["step_layers"], b["step_cost_terms"]):
        if terms[0] != KEY:
            sums[layer] = None  # (a layer with another kernel in some call is not a clean point)
            continue
        if layer in sums and sums[layer] is None:
            continue
        s = sums.setdefault(layer, [0.0, 0.0, 0.0, 0.0])
        for k in range(3):
            s[k] += terms[k + 1]
        s[3] += 1
    return [(layer, s, measured[layer]) for layer, s in sums.items() if s is not None and layer in measured]


def measure(models, work: Path) -> list[tuple[str, str, list[float], int]]:
    rows = []
    for name in models:
        for mode in ("off", "min-memory"):
            out = work / f"{name}-{mode}"
            api.compile(name, "cortex-m7", out, quantize="int8", patch=mode, max_patch_overhead=0.15, force=True)
            prof = api.profile(out)
            if not prof.measured.get("outputs_match"):
                raise SystemExit(f"{name} ({mode}): firmware outputs differ from the reference")
            rows += [(f"{name} {mode}", layer, s, m) for layer, s, m in layer_points(prof.report)]
            print(f"  {name} {mode}: {prof.measured['instructions']:,} instructions", file=sys.stderr, flush=True)
    return rows


def errors(x: np.ndarray, y: np.ndarray, coef: np.ndarray) -> np.ndarray:
    return x @ coef / y - 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--write", action="store_true", help="write the fitted terms into the Cortex-M cost profiles")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="ek-conv-tile-fit-") as tmp:
        rows = measure(args.models.split(","), Path(tmp))
    x = np.array([r[2] for r in rows], float)
    y = np.array([r[3] for r in rows], float)
    profile = get_profile("cortex-m7")
    current = np.array([profile.number("cost", KEY + t, 0.0) for t in TERMS])
    w = 1.0 / y
    fitted, _ = nnls(x * w[:, None], y * w)
    patched = np.array([r[0].endswith("min-memory") and r[2][3] > 1 for r in rows])
    print(f"{len(rows)} layers on the tile GEMM ({int(patched.sum())} of them in patch tiles) from "
          f"{len(set(r[0] for r in rows))} builds of {args.models}")
    print(f"{'terms':10s} {'units':>8s} {'outputs':>8s} {'inputs':>8s} {'call':>8s}   max err  median  patch tiles max")
    for name, c in (("current", current), ("fitted", fitted)):
        e = np.abs(errors(x, y, c))
        print(f"{name:10s} {c[0]:8.4f} {c[1]:8.2f} {c[2]:8.3f} {c[3]:8.0f}   {e.max():7.1%} {np.median(e):7.1%} "
              f"{e[patched].max() if patched.any() else 0:10.1%}")
    e = errors(x, y, fitted)
    print("largest errors of the fitted terms:")
    for i in np.argsort(-np.abs(e))[:8]:
        print(f"  {rows[i][0]:34s} {rows[i][1]:26s} calls {int(rows[i][2][3]):3d} {e[i]:+.1%}")
    if args.write:
        src = (f"fitted by bench/conv_tile_fit.py on the emulated M7 over {len(rows)} ek_conv2d_s8 tile-GEMM layers "
               f"({int(patched.sum())} in patch tiles) of the bundled and zoo CNNs, layer by layer and patched, in "
               f"cost.conv_tile_terms' terms (max error {np.abs(e).max():.1%})")
        for name in PROFILES:
            path = ROOT / "targets" / "profiles" / "cost" / f"{name}.toml"
            text = path.read_text()
            for t, v in zip(TERMS, fitted):
                line = f'{KEY}{t} = {{ value = {v:.4g}, source = "{src}" }}'
                text, n = re.subn(rf"^{KEY}{t} = .*$", line, text, flags=re.M)
                if n != 1:
                    raise SystemExit(f"{path}: no single {KEY}{t} line to replace")
            path.write_text(text)
        print(f"wrote the {KEY} terms into {', '.join(PROFILES)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
