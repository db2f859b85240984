"""Executed instructions of ek_depthwise_conv2d_s8's 1xK row kernel (ek__dw1xk_row: 1xK depthwise at stride 1, and
Kx1 — a depthwise Conv1d over [L, 1, C] — on the transposed map) on the emulated Cortex-M7 (QEMU mps2-an500, the
DSP build, exact counts), against the same layers packed channels-last, and the non-negative least-squares fit
behind kernel_pack.DW1XK_COST (what the estimator prices). Every output is checked against edgekit.intref.

    .venv/bin/python bench/dw1xk_fit.py          # bench/results/dw1xk_fit.txt

Shapes: 15 Conv1d layers (K 4-32, 4-64 channels, 22-98 steps long, no padding, ReLU or none) and 4 1xK layers on
3-8 rows of 13-30 outputs.
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
from scipy.optimize import nnls

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import kernels as bench_kernels  # noqa: E402
from kernel_harness import run_on_qemu  # noqa: E402

from edgekit.targets.mcu import kernel_pack as kp  # noqa: E402

CONV1D = [(4, 40, 16, "none"), (5, 40, 16, "relu"), (6, 33, 8, "none"), (7, 50, 12, "none"), (9, 98, 64, "none"),
          (9, 30, 32, "relu"), (11, 61, 16, "none"), (13, 98, 24, "none"), (15, 45, 8, "relu"), (17, 98, 16, "none"),
          (25, 98, 64, "none"), (29, 70, 8, "none"), (32, 64, 8, "none"), (8, 22, 20, "none"), (12, 35, 4, "relu")]
ROWS = [(5, 6, 24, 16, "none"), (7, 4, 20, 8, "relu"), (4, 8, 13, 12, "none"), (9, 3, 30, 8, "none")]
TERMS = ("step", "turn", "pair", "tap", "clamp", "row", "tail", "weight", "call")


def shapes() -> list:
    out = [bench_kernels.Shape(f"Conv1d {k}x1 {n}x1x{c} {act}", "dw", n, 1, c, c, (k, 1), act=act)
           for k, n, c, act in CONV1D]
    return out + [bench_kernels.Shape(f"1x{k} {h}x{w}x{c} {act}", "dw", h, w, c, c, (1, k), act=act)
                  for k, h, w, c, act in ROWS]


def measure(layout: str | None) -> list[tuple]:
    """(shape, params, instructions, MACs, bit-exact) per shape, packed by ``layout`` (None: as kernel_pack picks)."""
    rng = np.random.default_rng(0)
    pick = kp.depthwise_layout
    if layout:
        kp.depthwise_layout = lambda *a, **k: layout
    try:
        built = [bench_kernels._case(s, rng, "dsp") for s in shapes()]
    finally:
        kp.depthwise_layout = pick
    with tempfile.TemporaryDirectory() as d:
        res = run_on_qemu([c for c, _, _ in built], "mps2-an500", Path(d))
    return [(s, c.layer.params, r.instructions, macs, bool(np.array_equal(r.output, e)))
            for s, (c, e, macs), r in zip(shapes(), built, res)]


def terms(p: dict) -> list[float]:
    """The counts behind DW1XK_COST (TERMS order) of one call, in the kernel's view."""
    v = kp.dw_view(p)
    k, ow, oh, c = v["kernel_w"], v["out_w"], v["out_h"], v["in_c"]
    steps = oh * c * -(-ow // 4)
    clamp = (p["act_min"], p["act_max"]) != (-128, 127)
    return [steps, steps * (k // 4), steps * ((k // 2) & 1), steps * (k & 1), steps * clamp, oh * c,
            oh * c * bool(ow % 4), c * k, 1]


def main() -> int:
    rows, chan = measure(None), measure("channels")
    x = np.array([terms(p) for _, p, _, _, _ in rows], float)
    y = np.array([n for _, _, n, _, _ in rows], float)
    coef, _ = nnls(x, y)
    print("1xK / Kx1 depthwise on the emulated M7 (instructions per MAC; the 1xK row kernel against channels-last)")
    print(f"{'layer':34s} {'MACs':>8s} {'row kernel':>10s} {'channels':>9s} {'estimate':>9s} {'error':>7s}  bit-exact")
    worst = 0.0
    for (s, p, n, macs, ok), (_, _, nc, _, okc), est in zip(rows, chan, x @ coef):
        worst = max(worst, abs(est - n) / n)
        print(f"{s.name:34s} {macs:8d} {n / macs:10.3f} {nc / macs:9.3f} {est / macs:9.3f} {100 * (est - n) / n:+6.1f}%"
              f"  {'yes' if ok and okc else 'NO'}")
    print("DW1XK_COST = dict(" + ", ".join(f"{t}={v:.2f}" for t, v in zip(TERMS, coef)) + ")")
    print(f"max estimate error {100 * worst:.1f} % (kernel_pack.DW1XK_COST now: "
          + ", ".join(f"{t}={kp.DW1XK_COST[t]}" for t in TERMS) + ")")
    return 0 if all(ok for *_, ok in rows + chan) else 1


if __name__ == "__main__":
    sys.exit(main())
