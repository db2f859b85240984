"""Executed instructions per output element of edgekit's int8 elementwise and pooling kernels on the emulated
Cortex-M7 (QEMU mps2-an500, exact counts from the ek_icount plugin; instructions, not cycles): the residual add
(ek_add_s8), max / average / global average pooling (ek_pool_s8) and a table lookup for unary layers (ek_lut_s8:
hardswish, sigmoid, ...), each checked bit for bit against a numpy rendering of the host integer reference
(edgekit/qgraph.py's contracts), so a fast wrong kernel cannot show up here.

"before" is what ran these layers until now: ek_add_s8's one-element-at-a-time 32-bit path (the same kernel with
FLAG_ADD_PAIRS cleared, measured here) and TVM's C kernels for pooling and unary layers (per-layer figures of
`edgekit profile` on the emulated M7, quoted: mbv2-w035's global average pool, and the fitted cost-model
coefficients of TVM's int8 pool / unary kernels in targets/profiles/cost/cortex-m7.toml).

``--layers`` also builds a small model holding these layers and a channel concat (ek_concat_s8) twice for the emulated M7 and prints each layer's measured instructions per output element: as this branch's base
routed them (TVM's pooling, unary and concat kernels, the add's one-element path: ek_kernels.pool_step / lut_step /
concat_step and kernel_pack._add_pairs_exact switched off for that build) and as they run now.

    .venv/bin/python bench/elementwise.py --layers > bench/results/elementwise.txt
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
    add("add 18x18x16", 18 * 18 * 16, "25.0 (old path, below)", **q)
    old = kp.pack_add(18 * 18 * 16, **q)
    old.params["flags"] &= ~kp.FLAG_ADD_PAIRS  # the one-element-at-a-time path, measured as "before"
    out.append(("add 18x18x16 (old path)", Case("old", old, out[-1][1].input, out[-1][1].output_bytes),
                out[-1][2], ""))
    add("add 18x18x16, ReLU clamp", 18 * 18 * 16, "", **q | dict(act_min=-4))
    # the multipliers edgekit/qgraph.py gives an add (qmath.add_multipliers: 15 significant bits, one SMLAD each)
    ma, mb, sh = qmath.add_multipliers(q["a_mult"] / 2.0 ** q["shift"], q["b_mult"] / 2.0 ** q["shift"])
    qs = q | dict(a_mult=ma, b_mult=mb, shift=sh)
    add("add 18x18x16, 15-bit mults", 18 * 18 * 16, "8.53 (full mults, above)", **qs)
    add("add 18x18x16, 15-bit, ReLU clamp", 18 * 18 * 16, "9.78", **qs | dict(act_min=-4))

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

    pool("max pool 2x2 s2 18x18x16", "max", (18, 18, 16), (2, 2), (2, 2), before="20.2 (TVM, --layers)")
    pool("max pool 3x3 s2 p1 18x18x16", "max", (18, 18, 16), (3, 3), (2, 2), (1, 1), before="51.4 (TVM, --layers)")
    pool("avg pool 2x2 s2 18x18x16", "avg", (18, 18, 16), (2, 2), (2, 2), before="26.7 (TVM, --layers)")
    pool("global avg pool 5x5x1280", "avg", (5, 5, 1280), (5, 5), (1, 1), before="196 (TVM, mbv2-w035)")
    pool("global avg pool 16x16x32", "avg", (16, 16, 32), (16, 16), (1, 1), before="1366 (TVM, zoo ShuffleNet)")
    # 1-D max pools (MaxPool1d over [N, C, L]: a Kx1 window down the [L, 1, C] map, run as one row)
    pool("max pool 1-D 2 s2 512x16", "max", (512, 1, 16), (2, 1), (2, 1), before="15.5 (2-D loops, in a model)")
    pool("max pool 1-D 2 s2 256x32", "max", (256, 1, 32), (2, 1), (2, 1))
    pool("max pool 1-D 3 s2 p1 256x16", "max", (256, 1, 16), (3, 1), (2, 1), (1, 0))
    pool("max pool 1-D 3 s1 512x8", "max", (512, 1, 8), (3, 1), (1, 1))

    def gate(name, rows, c, real, before=""):  # a squeeze-excite product: an NHWC map by one value per channel
        mult, shift = qmath.quantize_multiplier(real)
        q = dict(a_zp=-3, b_zp=-128, mult=int(mult), shift=int(shift), out_zp=5)
        a = rng.integers(-128, 128, (rows, c)).astype(np.int8)
        b = rng.integers(-128, 128, (1, c)).astype(np.int8)
        ref = qmath.requantize((a.astype(np.int64) + 3) * (b.astype(np.int64) + 128), mult, shift, 5, -128, 127)
        layer = kp.pack_mul(rows, c, b_per_channel=True, **q)
        out.append((name, Case(name, layer, np.concatenate([a.reshape(-1), b.reshape(-1)]), ref.size),
                    ref.reshape(-1), before))

    gate("SE gate 12x12x96 (shift > 32)", 144, 96, 0.004, before="11.0 (a column at a time)")
    gate("SE gate 24x24x16 (shift 17..32)", 576, 16, 0.3)

    def transpose(name, b, r, c, before=""):
        x = rng.integers(-128, 128, (b, r, c)).astype(np.int8)
        out.append((name, Case(name, kp.pack_transpose(b, r, c), x.reshape(-1), x.size),
                    x.transpose(0, 2, 1).reshape(-1), before))

    transpose("shuffle 16x16 px, 4 groups of 8", 256, 4, 8, before="6.96 (TVM, zoo ShuffleNet)")
    transpose("shuffle 16x16 px, 2 groups of 16", 256, 2, 16, before="6.94 (bytes, before its loop)")
    transpose("NHWC -> NCHW 12x12x16", 1, 144, 16)
    transpose("Conv1d [10, 49] -> [49, 10]", 1, 10, 49)

    def upsample(name, hwc, scale, before=""):
        x = rng.integers(-128, 128, hwc).astype(np.int8)
        ref = x.repeat(scale[0], 0).repeat(scale[1], 1)
        out.append((name, Case(name, kp.pack_upsample(hwc, scale), x.reshape(-1), ref.size), ref.reshape(-1),
                    before))

    upsample("upsample x2 16x16x16 (U-Net)", (16, 16, 16), (2, 2), before="4.64 (TVM, zoo U-Net)")
    upsample("upsample x2 8x8x32", (8, 8, 32), (2, 2))
    upsample("upsample x2 6x6x64", (6, 6, 64), (2, 2))
    upsample("upsample x3 8x8x8", (8, 8, 8), (3, 3))
    upsample("upsample x2 16x16x8", (16, 16, 8), (2, 2))

    for fn in ("hardswish", "sigmoid"):
        x = rng.integers(-128, 128, 18 * 18 * 16).astype(np.int8)
        lut = lut_of(fn, out_scale=(1.0 / 255 if fn == "sigmoid" else 6.0 / 127), out_zp=-128 if fn == "sigmoid" else 0)
        layer = kp.pack_lut(lut, x.size)
        out.append((f"{fn} 18x18x16 (table)", Case(fn, layer, x, x.size), lut[x.astype(np.int16) + 128],
                    "4.29 (TVM, --layers)"))
    return out


def _layers_model():
    import torch
    import torch.nn as nn

    from edgekit.model import Model

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.c0, self.c1 = nn.Conv2d(3, 16, 3, padding=1), nn.Conv2d(16, 16, 3, padding=1)
            self.c2 = nn.Conv2d(16, 16, 1)
            self.hardswish, self.sigmoid = nn.Hardswish(), nn.Sigmoid()
            self.max2x2, self.max3x3_s2, self.avg2x2 = nn.MaxPool2d(2), nn.MaxPool2d(3, 2, padding=1), nn.AvgPool2d(2)
            self.head = nn.Linear(64 * 9 * 9, 5)

        def forward(self, x):
            a = self.c0(x)
            s = a + self.c1(a)                                    # add 18x18x16
            h = self.hardswish(s)                                 # 18x18x16
            g = self.sigmoid(self.c2(h))                          # 18x18x16
            cat = torch.cat([h, g], 1)                            # concat 18x18x(16 + 16)
            p = torch.cat([self.max2x2(cat), self.max3x3_s2(g), self.avg2x2(h)], 1)
            return self.head(p.flatten(1))

    torch.manual_seed(0)
    module = Net().eval()
    x = np.random.default_rng(0).standard_normal((8, 3, 18, 18)).astype(np.float32)
    y = module(torch.from_numpy(x)).argmax(-1).numpy()
    return Model.from_module(module, torch.from_numpy(x[:1]), name="elementwise-layers", calib=x, test_x=x[:2],
                             test_y=y[:2])


def _measure_layers(tmp: Path, base_routing: bool) -> tuple[dict[str, tuple[int, int, str]], bool]:
    """{layer: (instructions, output elements, kernel)} of the layers model built for the emulated M7."""
    import math

    from edgekit import api
    from edgekit.targets.mcu import ek_kernels

    saved = (ek_kernels.pool_step, ek_kernels.lut_step, ek_kernels.concat_step, kp._add_pairs_exact)
    if base_routing:
        pool_step = ek_kernels.pool_step
        ek_kernels.pool_step = lambda b, *a, **k: None if b.ek_isa == "dsp" else pool_step(b, *a, **k)
        ek_kernels.lut_step = ek_kernels.concat_step = lambda *a, **k: None
        kp._add_pairs_exact = lambda *a, **k: False
    try:
        model = _layers_model()
        out = tmp / ("base" if base_routing else "now")
        api.compile(model, "cortex-m7", out, quantize="int8", patch="off", force=True)
        meas = api.profile(out).measured
    finally:
        ek_kernels.pool_step, ek_kernels.lut_step, ek_kernels.concat_step, kp._add_pairs_exact = saved
    shapes = {n.name: n.shape for n in model.graph.nodes}
    layers = {l["name"]: (l["instructions"], math.prod(shapes[l["name"]][1:]), ",".join(l["kernels"]))
              for l in meas["layers"]}
    return layers, bool(meas["outputs_match"] and meas["max_abs_err_lsb"] == 0)


def print_layers() -> bool:
    with tempfile.TemporaryDirectory(prefix="edgekit-bench-elementwise-") as tmp:
        base, ok_base = _measure_layers(Path(tmp), True)
        now, ok_now = _measure_layers(Path(tmp), False)
    print("\nThe same layers in a model on the emulated M7 (edgekit compile + profile, measured per layer), "
          "instructions per output element:\n")
    head = f"{'layer':28s} {'outputs':>8s} {'base':>8s} {'kernel (base)':>26s} {'now':>8s} {'kernel (now)':>14s}"
    print(head)
    print("-" * len(head))
    names = {"add": "add 18x18x16", "hardswish": "hardswish 18x18x16", "sigmoid": "sigmoid 18x18x16",
             "cat": "concat 18x18x(16+16)", "max2x2": "max pool 2x2 s2 18x18x32", "max3x3_s2": "max pool 3x3 s2 p1",
             "avg2x2": "avg pool 2x2 s2 18x18x16"}
    for key, title in names.items():
        (bi, n, bk), (ni, _, nk) = base[key], now[key]
        print(f"{title:28s} {n:8d} {bi / n:8.2f} {bk:>26s} {ni / n:8.2f} {nk:>14s}")
    total_b, total_n = sum(v[0] for v in base.values()), sum(v[0] for v in now.values())
    print(f"{'whole model':28s} {'':8s} {total_b:8d} {'':>26s} {total_n:8d}   bit-exact: "
          f"{'yes' if ok_base and ok_now else 'NO'}")
    return ok_base and ok_now


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--board", default="mps2-an500")
    parser.add_argument("--only", default=None, help="only cases whose name contains this text")
    parser.add_argument("--layers", action="store_true", help="also measure the layers in a model, base vs now (M7)")
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
    print("\nbefore: TVM figures are per-layer measurements of `edgekit profile` on the emulated M7: mbv2-w035's "
          "global average pool,\nthe others the layers model of --layers (max 2x2 there has 32 channels).")
    if args.layers:
        ok_all &= print_layers()
    return 0 if ok_all else 1


if __name__ == "__main__":
    raise SystemExit(main())
