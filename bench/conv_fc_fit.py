"""ek_conv2d_s8's two layouts on the emulated Cortex-M7 (QEMU mps2-an500, the DSP build, exact counts): the tile
GEMM at its smallest tile (2 pixels: what a small scratch grant leaves), at the largest tile that fits 16 KiB, and
FLAG_CONV_FC (each output pixel's window as one fully connected row, int8 weights); the least-squares fit behind
kernel_pack.CONV_FC_COST and how kernel_pack.conv2d_fc_pays would choose. Every output is checked against
edgekit.intref.

    .venv/bin/python bench/conv_fc_fit.py > bench/results/conv_fc_fit.txt

Shapes: the convolutions of patch tiles and small maps in the zoo (ResNet-8/20 blocks, MobileNet and DS-CNN first
layers, SqueezeNet's expand 3x3), channels in fours (the FC row prepared straight from the input) and not (the window
gathered as bytes first). The fit: instructions = a * pixels * ceil4(K) * ceil4(C_out) + b * pixels * ceil4(C_out) / 4
+ (c + d * [C_in % 4 != 0]) * pixels * ceil4(K) + e * pixels, K = kernel_h * kernel_w * C_in.
"""
from __future__ import annotations

import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from kernel_harness import Case, expected_buffer, run_on_qemu  # noqa: E402

from edgekit import intref, qmath  # noqa: E402
from edgekit.targets.mcu import kernel_pack as kp  # noqa: E402


@dataclass
class Conv:
    name: str
    h: int
    w: int
    cin: int
    cout: int
    k: int | tuple[int, int]
    stride: int = 1
    padding: int | tuple = 1


SHAPES = [
    Conv("ResNet-8 block 8x8x64 -> 64", 8, 8, 64, 64, 3),
    Conv("ResNet-8 block 16x16x32 -> 32", 16, 16, 32, 32, 3),
    Conv("ResNet-8 row tile 6x5x32 -> 32", 6, 5, 32, 32, 3, padding=(0, 0, 1, 1)),
    Conv("ResNet block 10x10x16 -> 16", 10, 10, 16, 16, 3),
    Conv("patch tile 12x12x16 -> 16", 12, 12, 16, 16, 3, padding=0),
    Conv("3x3 s2 12x12x32 -> 64", 12, 12, 32, 64, 3, stride=2),
    Conv("4x4x128 -> 128", 4, 4, 128, 128, 3),
    Conv("16x16x8 -> 16", 16, 16, 8, 16, 3),
    Conv("1x1 9x9x24 -> 38", 9, 9, 24, 38, 1, padding=0),
    Conv("1x1 6x6x64 -> 128", 6, 6, 64, 128, 1, padding=0),
    Conv("first layer 3x3 s2 7x7x3 -> 16", 7, 7, 3, 16, 3, stride=2),
    Conv("first layer 3x3 s2 15x15x3 -> 32", 15, 15, 3, 32, 3, stride=2),
    Conv("first layer 10x4 s2 25x10x1 -> 64", 25, 10, 1, 64, (10, 4), stride=2, padding=(5, 1)),
    Conv("3x3 9x9x6 -> 24", 9, 9, 6, 24, 3),
]


def _pack(c: Conv, rng) -> tuple[list[tuple[str, object]], np.ndarray, np.ndarray, int]:
    kh, kw = (c.k, c.k) if np.isscalar(c.k) else c.k
    q = dict(x_zp=3, out_zp=-4, act_min=-128, act_max=127)
    mult, shift = qmath.quantize_multipliers(rng.uniform(0.5, 1.2, c.cout) / (np.sqrt(c.cin * kh * kw) * 100))
    bias = rng.integers(-3000, 3000, c.cout).astype(np.int32)
    x = rng.integers(-128, 128, (c.h, c.w, c.cin), dtype=np.int8)
    w = rng.integers(-127, 128, (c.cout, c.cin, kh, kw), dtype=np.int8)
    geom = dict(stride=c.stride, padding=c.padding)
    ref = intref.conv2d(x, w, bias, mult=mult, shift=shift, groups=1, **q, **geom)
    layers = [("tile 2", kp.pack_conv2d(w, bias, mult, shift, input_shape=x.shape, conv_fc=False, tile_pixels=2,
                                        **q, **geom)),
              ("tile max", kp.pack_conv2d(w, bias, mult, shift, input_shape=x.shape, conv_fc=False,
                                          scratch_limit_bytes=16 * 1024, **q, **geom)),
              ("fc", kp.pack_conv2d(w, bias, mult, shift, input_shape=x.shape, conv_fc=True, **q, **geom))]
    return layers, x, ref, ref.size * c.cin * kh * kw


def main() -> int:
    rng = np.random.default_rng(11)
    cases, meta = [], []
    for c in SHAPES:
        layers, x, ref, macs = _pack(c, rng)
        for mode, layer in layers:
            cases.append(Case(f"{c.name} {mode}", layer, x.reshape(-1), ref.size))
            meta.append((c, mode, layer, expected_buffer(ref, ref.shape[1] * c.cout, ref.size), macs))
    with tempfile.TemporaryDirectory() as tmp:
        results = run_on_qemu(cases, "mps2-an500", Path(tmp))
    rows, fit_rows, fit_y = {}, [], []
    exact = True
    for r, (c, mode, layer, ref, macs) in zip(results, meta):
        ok = np.array_equal(np.asarray(r.output, dtype=np.int8), ref.astype(np.int8))
        exact &= ok
        rows.setdefault(c.name, {})[mode] = (r.instructions, layer, macs, ok)
        if mode == "fc":
            p = layer.params
            pixels, k4, c4 = p["out_h"] * p["out_w"], kp._ceil(p["kernel_h"] * p["kernel_w"] * p["in_c"], 4), \
                kp._ceil(p["out_c"], 4)
            fit_rows.append([pixels * k4 * c4, pixels * c4 / 4, pixels * k4, pixels * k4 * (p["in_c"] % 4 != 0),
                             pixels])
            fit_y.append(r.instructions)
    a, y = np.array(fit_rows, float), np.array(fit_y, float)
    coef = np.linalg.lstsq(a / y[:, None], np.ones_like(y), rcond=None)[0]  # relative errors
    err = (a @ coef - y) / y * 100

    print("ek_conv2d_s8 on mps2-an500 (Cortex-M7, -O2): executed instructions per MAC (QEMU instruction count)\n")
    print(f"{'layer':40s} {'tile 2':>8s} {'tile max':>12s} {'FC rows':>8s} {'FC scratch':>10s} {'model':>7s} "
          f"{'default':>8s} bit-exact")
    for (name, modes), e in zip(rows.items(), err):
        t2, tm, fc = modes["tile 2"], modes["tile max"], modes["fc"]
        limit = 16 * 1024
        auto = "fc" if kp.conv2d_fc_pays(dict(fc[1].params, flags=tm[1].params["flags"] & kp.FLAG_FAST_REQUANT),
                                         kp.conv2d_tile_choice(dict(tm[1].params, tile_pixels=0, flags=tm[1].params[
                                             "flags"] & kp.FLAG_FAST_REQUANT), limit), limit) else "tile"
        print(f"{name:40s} {t2[0] / t2[2]:8.3f} {tm[0] / tm[2]:6.3f} ({tm[1].params['tile_pixels']:2d} px) "
              f"{fc[0] / fc[2]:8.3f} {fc[1].scratch_bytes:8,} B {e:+6.1f}% {auto:>8s} "
              f"{'yes' if all(m[3] for m in modes.values()) else 'NO'}")
    print(f"\nFC rows fit (kernel_pack.CONV_FC_COST): per MAC {coef[0]:.3f}, per pixel-block {coef[1]:.1f}, per window "
          f"byte {coef[2]:.2f} (+{coef[3]:.2f} when gathered as bytes), per pixel {coef[4]:.0f}; max error "
          f"{np.abs(err).max():.1f} %")
    print(f"in use: {kp.CONV_FC_COST}")
    print("default: the layout pack_conv2d picks with a 16 KiB scratch limit (tile max); with a small grant the GEMM "
          "drops towards 'tile 2'")
    return 0 if exact else 1


if __name__ == "__main__":
    sys.exit(main())
