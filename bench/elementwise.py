"""Executed instructions per output element of edgekit's int8 elementwise and pooling kernels on the emulated
Cortex-M7 (QEMU mps2-an500, exact counts from the ek_icount plugin; instructions, not cycles): the residual add
(ek_add_s8), max / average / global average pooling (ek_pool_s8) and a table lookup for unary layers (ek_lut_s8:
hardswish, sigmoid, ...), each checked bit for bit against a numpy rendering of the host integer reference
(edgekit/qgraph.py's contracts), so a fast wrong kernel cannot show up here.

"before" is what ran these layers until now: ek_add_s8's one-element-at-a-time 32-bit path (the same kernel with
FLAG_ADD_PAIRS cleared, measured here) and TVM's C kernels for pooling and unary layers (per-layer figures of
`edgekit profile` on the emulated M7, quoted: mbv2-w035's global average pool, and the fitted cost-model
coefficients of TVM's int8 pool / unary kernels in targets/profiles/cost/cortex-m7.toml).

    .venv/bin/python bench/elementwise.py > bench/results/elementwise.txt
    .venv/bin/python bench/elementwise.py [--board mps2-an500|mps2-an386|mps3-an547] [--only TEXT]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from kernel_harness import Case, run_on_qemu  # noqa: E402

from edgekit import qmath  # noqa: E402
from edgekit.qgraph import LUT_FUNCS  # noqa: E402
from edgekit.targets.mcu import kernel_pack as kp  # noqa: E402


def ref_add(a, b, *, a_zp, b_zp, a_mult, b_mult, shift, out_zp, act_min=-128, act_max=127):
    acc = (a.astype(np.int64) - a_zp) * a_mult + (b.astype(np.int64) - b_zp) * b_mult
    return np.clip(qmath.rshift_round(acc, shift) + out_zp, act_min, act_max).astype(np.int8)


def ref_pool(x, mode, kernel, stride, pads, out_hw, x_zp=0, mult=0, shift=1, out_zp=0):
    """qgraph's pooling contract on an HWC map: max over the taps inside the map; average: sum of (x - x_zp) over
    them (padding adds 0), requantized."""
    h, w, c = x.shape
    acc = np.zeros(out_hw + (c,), np.int64)
    for oy in range(out_hw[0]):
        for ox in range(out_hw[1]):
            y0, x0 = oy * stride[0] - pads[0], ox * stride[1] - pads[1]
            win = x[max(y0, 0):min(y0 + kernel[0], h), max(x0, 0):min(x0 + kernel[1], w)].astype(np.int64)
            acc[oy, ox] = win.max((0, 1)) if mode == "max" else (win - x_zp).sum((0, 1))
    return acc.astype(np.int8) if mode == "max" else qmath.requantize(acc, mult, shift, out_zp)


def lut_of(fn: str, x_scale: float = 6.0 / 127, x_zp: int = 0, out_scale: float = 6.0 / 127,
           out_zp: int = 0) -> np.ndarray:
    """The int8 table edgekit/qgraph.py builds for an elementwise layer (the same formula)."""
    codes = np.arange(-128, 128, dtype=np.float64)
    real = LUT_FUNCS[fn]((codes - x_zp) * x_scale)
    return np.clip(np.round(real / out_scale) + out_zp, -128, 127).astype(np.int8)


def cases(rng) -> list[tuple[str, Case, np.ndarray, str]]:
    """(name, case, expected output, "before" figure and where it comes from)."""
    out = []

    def add(name, n, before, **q):
        a = rng.integers(-128, 128, n).astype(np.int8)
        b = rng.integers(-128, 128, n).astype(np.int8)
        layer = kp.pack_add(n, **q)
        out.append((name, Case(name, layer, np.concatenate([a, b]), n), ref_add(a, b, **q), before))
        return layer

    q = dict(a_zp=3, b_zp=-7, a_mult=(1 << 30) - 12345, b_mult=987654321, shift=31, out_zp=-4)
    layer = add("add 18x18x16", 18 * 18 * 16, "", **q)
    old = kp.pack_add(18 * 18 * 16, **q)
    old.params["flags"] &= ~kp.FLAG_ADD_PAIRS  # the one-element-at-a-time path, measured as "before"
    out.append(("add 18x18x16 (old path)", Case("old", old, out[-1][1].input, out[-1][1].output_bytes),
                out[-1][2], ""))
    add("add 18x18x16, ReLU clamp", 18 * 18 * 16, "", **q | dict(act_min=-4))

    def pool(name, mode, hwc, kernel, stride, pads=(0, 0), before=""):
        h, w, c = hwc
        oh = (h + 2 * pads[0] - kernel[0]) // stride[0] + 1
        ow = (w + 2 * pads[1] - kernel[1]) // stride[1] + 1
        x = rng.integers(-128, 128, hwc).astype(np.int8)
        q = {}
        if mode == "avg":
            mult, shift = qmath.quantize_multiplier(0.9 / (kernel[0] * kernel[1]))
            q = dict(x_zp=5, out_zp=-3, mult=int(mult), shift=int(shift))
        layer = kp.pack_pool(mode, in_hwc=hwc, out_hw=(oh, ow), kernel=kernel, stride=stride, pad_top=pads[0],
                             pad_left=pads[1], **q)
        ref = ref_pool(x, mode, kernel, stride, pads, (oh, ow), q.get("x_zp", 0), q.get("mult", 0),
                       q.get("shift", 1), q.get("out_zp", 0))
        out.append((name, Case(name, layer, x.reshape(-1), ref.size), ref.reshape(-1), before))

    pool("max pool 2x2 s2 18x18x16", "max", (18, 18, 16), (2, 2), (2, 2), before="25.0 (TVM, 6.25/tap)")
    pool("max pool 3x3 s2 p1 18x18x16", "max", (18, 18, 16), (3, 3), (2, 2), (1, 1), before="56.2 (TVM, 6.25/tap)")
    pool("avg pool 2x2 s2 18x18x16", "avg", (18, 18, 16), (2, 2), (2, 2), before="25.0 (TVM, 6.25/tap)")
    pool("global avg pool 5x5x1280", "avg", (5, 5, 1280), (5, 5), (1, 1), before="196 (TVM, mbv2-w035)")

    for fn in ("hardswish", "sigmoid"):
        x = rng.integers(-128, 128, 18 * 18 * 16).astype(np.int8)
        lut = lut_of(fn, out_scale=(1.0 / 255 if fn == "sigmoid" else 6.0 / 127), out_zp=-128 if fn == "sigmoid" else 0)
        layer = kp.pack_lut(lut, x.size)
        out.append((f"{fn} 18x18x16 (table)", Case(fn, layer, x, x.size), lut[x.astype(np.int16) + 128], ""))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--board", default="mps2-an500")
    parser.add_argument("--only", default=None, help="only cases whose name contains this text")
    args = parser.parse_args(argv)
    built = [c for c in cases(np.random.default_rng(0)) if args.only is None or args.only in c[0]]
    with tempfile.TemporaryDirectory(prefix="edgekit-bench-elementwise-") as tmp:
        results = run_on_qemu([c for _, c, _, _ in built], args.board, Path(tmp))
    print(f"edgekit int8 elementwise kernels on {args.board} (-O2): executed instructions per output element "
          "(QEMU instruction count, not cycles)\n")
    head = f"{'layer':36s} {'outputs':>8s} {'instr/out':>10s}  {'before':>24s}  bit-exact"
    print(head)
    print("-" * len(head))
    ok_all = True
    for (name, case, expected, before), res in zip(built, results):
        ok = res.rc == 0 and np.array_equal(res.output, expected)
        ok_all &= ok
        print(f"{name:36s} {expected.size:8d} {res.instructions / expected.size:10.2f}  {before:>24s}  "
              f"{'yes' if ok else 'NO'}")
    print("\nbefore: TVM figures are per-layer measurements of `edgekit profile` on the emulated M7 (mbv2-w035's "
          "global average pool)\nor the fitted per-tap cost of TVM's int8 pooling (targets/profiles/cost/cortex-m7.toml).")
    return 0 if ok_all else 1


if __name__ == "__main__":
    raise SystemExit(main())
