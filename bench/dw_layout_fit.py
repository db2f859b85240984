"""Executed instructions of ek_depthwise_conv2d_s8's two 3x3 layouts on the emulated Cortex-M7 (QEMU mps2-an500, the
DSP build, exact counts), and the least-squares fits behind kernel_pack.DW_ROWS_COST, DW_CHANNELS_COST and
DW_CHANNELS_TAIL (what kernel_pack.depthwise_layout compares). Every output is checked against edgekit.intref.

    .venv/bin/python bench/dw_layout_fit.py

Shapes: 9 output rows (padding 1, ReLU6), 4-20 outputs wide, 16 / 48 / 144 channels, stride 1 and 2, packed as
``rows``; 3 / 5 / 9 output rows, 2-20 wide, the same channels and strides packed as ``channels`` and as ``pairs``;
then 13 / 38 / 39 channels (the last 1-3 channels beyond the groups of 4). Rows are fitted per channel and output
row (base + per_out * ceil4(out_w) + tail[out_w % 4] + per_group_row / C), channels-last and pairs per layer in the
terms of kernel_pack.dw_channels_terms / dw_pairs_terms, the 1-3 extra channels as what is left per pixel.
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import kernels as bench_kernels  # noqa: E402
from kernel_harness import run_on_qemu  # noqa: E402

from edgekit.targets.mcu import kernel_pack as kp  # noqa: E402

WIDTHS = (4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 18, 20)
CHANNELS = (16, 48, 144)
TAIL_CHANNELS = (13, 38, 39)
TAIL_WIDTHS = (5, 9, 10, 13, 16)


def _measure(points: list[tuple[str, int, int, int]], heights: list[int] | None = None) -> dict:
    """instructions per MAC for each (layout, stride, channels, out_w) (9 output rows), or (layout, stride,
    channels, out_w, out_h) with ``heights``"""
    layout_of = kp.depthwise_layout
    rng = np.random.default_rng(2)
    cases, meta = [], []
    try:
        for i, (layout, stride, c, w) in enumerate(points):
            h = heights[i] if heights else 9
            kp.depthwise_layout = lambda *a, _layout=layout, **k: _layout  # the packer's "auto" picks this one
            shape = bench_kernels.Shape(f"{layout} s{stride} c{c} w{w} h{h}", "dw", h * stride, w * stride, c, c, 3,
                                        stride=stride, padding=1, act="relu6")
            case, ref, macs = bench_kernels._case(shape, rng)
            cases.append(case)
            meta.append((layout, stride, c, w, macs, ref) + ((h,) if heights else ()))
    finally:
        kp.depthwise_layout = layout_of
    with tempfile.TemporaryDirectory() as tmp:
        results = run_on_qemu(cases, "mps2-an500", Path(tmp))
    out = {}
    for (layout, stride, c, w, macs, ref, *h), r in zip(meta, results):
        if not np.array_equal(r.output[:ref.size], ref):
            raise SystemExit(f"{layout} s{stride} c{c} w{w}: output differs from edgekit.intref")
        out[(layout, stride, c, w, *h)] = r.instructions / macs
    return out


def main() -> int:
    points = [("rows", s, c, w) for s in (1, 2) for c in CHANNELS for w in WIDTHS]
    per_mac = _measure(points)
    print("instructions/MAC, 3x3 depthwise rows layout, 9 output rows (columns: out_w " + " ".join(map(str, WIDTHS))
          + ")")
    for s in (1, 2):
        for c in CHANNELS:
            row = " ".join(f"{per_mac[('rows', s, c, w)]:5.2f}" for w in WIDTHS)
            print(f"  s{s} C{c:<4d} rows     {row}")
    for s in (1, 2):
        keys = [(c, w) for c in CHANNELS for w in WIDTHS]
        x = np.array([[1, -(-w // 4) * 4, w % 4 == 1, w % 4 == 2, w % 4 == 3, 1 / c] for c, w in keys], float)
        y = np.array([per_mac[("rows", s, c, w)] * 9 * w for c, w in keys])
        coef, *_ = np.linalg.lstsq(x, y, rcond=None)
        err = np.abs(x @ coef / y - 1).max()
        print(f"rows s{s}: base {coef[0]:.1f} per_out {coef[1]:.2f} tail {np.round(coef[2:5], 1).tolist()} "
              f"per_group_row {coef[5]:.1f} (max error {err:.1%})")
    layer_fit("channels", CHANNELS_HEIGHTS, CHANNELS_WIDTHS, 9)
    layer_fit("pairs", PAIRS_HEIGHTS, PAIRS_WIDTHS, 5)
    return 0


CHANNELS_HEIGHTS = (3, 5, 9)
CHANNELS_WIDTHS = (2, 3, 4, 5, 6, 7, 9, 12, 16, 20)
PAIRS_HEIGHTS = (3, 5, 9)
PAIRS_WIDTHS = (2, 3, 4, 5, 6, 7, 9, 12, 16)
# per layout: the terms function, their names, the estimate, how many terms the fit solves for (the channels-last
# layout's C-loop terms are measured apart: every pixel of these maps runs the asm) and whether it weighs relative
# error (channels-last: a model with a per-pixel term fits small maps better that way)
LAYER_MODELS = {"channels": (kp.dw_channels_terms, kp.DW_CHANNELS_TERMS, kp.dw_channels_instructions, 5, True),
                "pairs": (kp.dw_pairs_terms, kp.DW_PAIRS_TERMS, kp.dw_pairs_instructions, None, False)}


def layer_fit(layout: str, heights, widths, tail_h: int) -> None:
    """A layer-level layout (``channels``: ek__dw_ch3x3_px and its border variants; ``pairs``: ek__dw_pairs):
    kernel_pack's DW_CHANNELS_COST / DW_PAIRS_COST terms fitted to ``heights`` x ``widths`` outputs, 16 / 48 / 144
    channels, strides 1 and 2; then the 1-3 channels beyond the last group of 4 (13, 38, 39 channels,
    ``tail_h`` rows)."""
    terms, names, estimate, solved, relative = LAYER_MODELS[layout]
    pts = [(layout, s, c, w, h) for s in (1, 2) for h in heights for w in widths for c in CHANNELS]
    tails = [(layout, 1, c, w, tail_h) for c in TAIL_CHANNELS for w in TAIL_WIDTHS]
    per_mac = _measure([p[:4] for p in pts + tails], heights=[p[4] for p in pts + tails])
    for s in (1, 2):
        keys = [(c, w, h) for h in heights for w in widths for c in CHANNELS]
        x = np.array([terms(s, s, h, w, c, h * s, w * s, 1, 1)[:solved] for c, w, h in keys], float)
        y = np.array([per_mac[(layout, s, c, w, h)] * 9 * w * h * c for c, w, h in keys])
        if relative:
            coef, *_ = np.linalg.lstsq(x / y[:, None], np.ones(len(y)), rcond=None)
        else:
            coef, *_ = np.linalg.lstsq(x, y, rcond=None)
        err = np.abs(x @ coef / y - 1).max()
        print(f"{layout} s{s}: " + ", ".join(f"{k}={v:.2f}" for k, v in zip(names, coef)) +
              f" (max error {err:.1%})")
        for w in widths:
            print(f"  s{s} 5x{w}x48: {layout} {per_mac[(layout, s, 48, w, 5)]:.2f} instructions/MAC")
    for c in TAIL_CHANNELS:
        left = [per_mac[(layout, 1, c, w, tail_h)] * 9 * c * w * tail_h -
                estimate(1, 1, tail_h, w, c, tail_h, w, 1, 1, tail=False) for w in TAIL_WIDTHS]
        per_pixel = np.mean([extra / (tail_h * w) for extra, w in zip(left, TAIL_WIDTHS)])
        print(f"{layout} s1 C{c}: {c % 4} channel(s) beyond the groups of 4 cost {per_pixel:.0f} an output pixel")


if __name__ == "__main__":
    sys.exit(main())
