"""Executed instructions per int8 MAC of edgekit's Cortex-M kernels (targets/mcu/platforms/cortex_m/kernels/ek_nn_s8.c) on the
emulated Cortex-M7 (QEMU mps2-an500: the DSP kernels), Cortex-M55 (mps3-an547: the Helium kernels of
ek_nn_s8_mve.c, and the DSP ones) and an rv32imc RISC-V core (virt: the scalar kernels), exact counts from the
ek_icount plugin; instructions, not cycles.

Shapes: the kernel table of shared/FIELD_NOTES.md ("Kernel speed on the emulated Cortex-M7", whose CMSIS-NN, naive
C and TVM 0.27 numbers are printed beside ours) plus typical MobileNetV2 layers. Every output is also checked against
edgekit.intref, so a fast wrong kernel cannot show up here.

    .venv/bin/python bench/kernels.py > bench/results/kernels.txt      # all four columns
    .venv/bin/python bench/kernels.py [--columns m7:dsp m55:mve m55:dsp rv32imc m4:dsp] [--opt -O2] [--only TEXT]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from kernel_harness import Case, expected_buffer, run_on_qemu  # noqa: E402

from edgekit import intref, qmath  # noqa: E402
from edgekit.targets.mcu import kernel_pack as kp  # noqa: E402


@dataclass
class Shape:
    name: str
    kind: str  # conv | dw | fc
    h: int = 1
    w: int = 1
    cin: int = 1
    cout: int = 1
    k: int | tuple[int, int] = 1
    stride: int = 1
    padding: int | tuple[int, int] = 0
    act: str = "none"  # none | relu6 (scale 6/255, zero point -128: all of int8) | relu (clamp at the zero point)
    field_notes: tuple[str, str, str] = ("", "", "")  # CMSIS-NN, naive C, TVM 0.27 (instructions/MAC)
    scratch_limit: int | None = None  # bytes (kernel_pack picks tile and weight cache within it)


SHAPES = [
    Shape("3x3 conv 16x16x16 -> 32", "conv", 16, 16, 16, 32, 3, padding=1,
          field_notes=("2.15", "6.60", "10.19")),
    Shape("depthwise 3x3 16x16x32", "dw", 16, 16, 32, 32, 3, padding=1, field_notes=("8.07", "18.5", "")),
    Shape("fully connected 256 -> 64", "fc", cin=256, cout=64, field_notes=("2.08", "6.11", "")),
    Shape("1x1 conv 16x16x32 -> 64", "conv", 16, 16, 32, 64, 1, field_notes=("2.67", "7.20", "")),
    Shape("3x3 conv 16x16x16 -> 32, ReLU clamp", "conv", 16, 16, 16, 32, 3, padding=1, act="relu"),
    Shape("3x3 conv 16x16x16 -> 32, scratch <= 8 KiB", "conv", 16, 16, 16, 32, 3, padding=1, scratch_limit=8192),
    Shape("3x3 conv 16x16x16 -> 32, scratch <= 2.5 KiB", "conv", 16, 16, 16, 32, 3, padding=1, scratch_limit=2560),
    Shape("1x1 conv 16x16x32 -> 64, ReLU clamp", "conv", 16, 16, 32, 64, 1, act="relu"),
    Shape("MobileNetV2 first: 3x3 s2 144x144x3 -> 16, ReLU6", "conv", 144, 144, 3, 16, 3, stride=2, padding=1,
          act="relu6"),
    Shape("1x1 expand 24x24x16 -> 96, ReLU6", "conv", 24, 24, 16, 96, 1, act="relu6"),
    Shape("depthwise 3x3 s1 24x24x96, ReLU6", "dw", 24, 24, 96, 96, 3, padding=1, act="relu6"),
    Shape("depthwise 3x3 s2 24x24x96, ReLU6", "dw", 24, 24, 96, 96, 3, stride=2, padding=1, act="relu6"),
    Shape("1x1 project 12x12x96 -> 24", "conv", 12, 12, 96, 24, 1),
    Shape("fully connected 1280 -> 10", "fc", cin=1280, cout=10),
    # depthwise on every map size (issue: fast on every layer shape; goal <= 2.0 instructions/MAC)
    Shape("depthwise 3x3 s1 96x96x8", "dw", 96, 96, 8, 8, 3, padding=1),
    Shape("depthwise 3x3 s2 96x96x8", "dw", 96, 96, 8, 8, 3, stride=2, padding=1),
    Shape("depthwise 3x3 s1 48x48x16", "dw", 48, 48, 16, 16, 3, padding=1),
    Shape("depthwise 3x3 s1 12x12x64", "dw", 12, 12, 64, 64, 3, padding=1),
    Shape("depthwise 3x3 s1 6x6x128", "dw", 6, 6, 128, 128, 3, padding=1),
    Shape("depthwise 3x3 s2 6x6x128 -> 3x3", "dw", 6, 6, 128, 128, 3, stride=2, padding=1),
    Shape("depthwise 3x3 s1 3x3x256", "dw", 3, 3, 256, 256, 3, padding=1),
    Shape("depthwise 3x3 s1 25x5x64 (keyword CNN)", "dw", 25, 5, 64, 64, 3, padding=1),
    Shape("depthwise 3x3 s1 10x10x36 (channels not x4)", "dw", 10, 10, 36 + 2, 36 + 2, 3, padding=1),
    Shape("depthwise 5x5 s1 12x12x32", "dw", 12, 12, 32, 32, 5, padding=2),
    Shape("depthwise 5x5 s2 24x24x72 -> 12, ReLU6", "dw", 24, 24, 72, 72, 5, stride=2, padding=2, act="relu6"),
    Shape("depthwise 5x5 s1 3x3x576 (MobileNetV3)", "dw", 3, 3, 576, 576, 5, padding=2),
    Shape("depthwise 3x3 s1 14x14x96 (rows, last 2 of a row)", "dw", 14, 14, 96, 96, 3, padding=1),
    Shape("depthwise 3x1 s1 24x24x32", "dw", 24, 24, 32, 32, (3, 1), padding=(1, 0)),
    Shape("depthwise 1x3 s1 24x24x32", "dw", 24, 24, 32, 32, (1, 3), padding=(0, 1)),
    # depthwise Conv1d (separable 1-D nets: MatchboxNet, TC-ResNet): a Kx1 kernel over [L, 1, C] channels last
    Shape("depthwise 9x1 s1 98x1x64 (Conv1d)", "dw", 98, 1, 64, 64, (9, 1), padding=(4, 0)),
    Shape("depthwise 25x1 s1 98x1x64 (Conv1d)", "dw", 98, 1, 64, 64, (25, 1), padding=(12, 0)),
    Shape("first layer 10x4 s2 49x10x1 -> 64 (keyword CNN)", "conv", 49, 10, 1, 64, (10, 4), stride=2,
          padding=(5, 1)),
    Shape("first layer 3x3 s2 96x96x3 -> 8", "conv", 96, 96, 3, 8, 3, stride=2, padding=1),
    Shape("first layer 3x3 8x8x1 -> 16, ReLU (digits-cnn)", "conv", 8, 8, 1, 16, 3, padding=1, act="relu"),
    Shape("first layer 3x3 32x32x3 -> 16, ReLU (ResNet-8)", "conv", 32, 32, 3, 16, 3, padding=1, act="relu"),
    # one input channel, at most 10 taps: the one-channel path (kernel_pack.conv_c1_applies)
    Shape("first layer 3x3 8x8x1 -> 16, all of int8 (digits-cnn)", "conv", 8, 8, 1, 16, 3, padding=1,
          act="relu6"),
    Shape("first layer 3x3 32x32x1 -> 8, all of int8 (U-Net)", "conv", 32, 32, 1, 8, 3, padding=1, act="relu6"),
    Shape("first layer 3x3 28x28x1 -> 32, ReLU (MNIST)", "conv", 28, 28, 1, 32, 3, padding=1, act="relu"),
    Shape("first layer 3x3 s2 96x96x1 -> 8", "conv", 96, 96, 1, 8, 3, stride=2, padding=1),
    Shape("first layer 3x3 64x64x1 -> 16, all of int8", "conv", 64, 64, 1, 16, 3, padding=1, act="relu6"),
    Shape("first layer 3x3 s2 49x10x1 -> 12 (not x4), ReLU", "conv", 49, 10, 1, 12 + 2, 3, stride=2, padding=1,
          act="relu"),
    # 1x1 with few input channels (mbv2-w035's largest layers)
    Shape("1x1 expand 72x72x8 -> 48, ReLU6", "conv", 72, 72, 8, 48, 1, act="relu6"),
    Shape("1x1 project 72x72x16 -> 8", "conv", 72, 72, 16, 8, 1),
    Shape("1x1 expand 36x36x8 -> 48, ReLU6", "conv", 36, 36, 8, 48, 1, act="relu6"),
    Shape("1x1 expand 18x18x16 -> 96, ReLU6", "conv", 18, 18, 16, 96, 1, act="relu6"),
    # mbv2-w035 (144x144) depthwise layers and its patch tiles (channels-last, two pixels per step)
    Shape("depthwise 3x3 s1 9x9x144, ReLU6", "dw", 9, 9, 144, 144, 3, padding=1, act="relu6"),
    Shape("depthwise 3x3 s1 5x5x336, ReLU6", "dw", 5, 5, 336, 336, 3, padding=1, act="relu6"),
    Shape("depthwise 3x3 s2 72x72x48 -> 36, ReLU6", "dw", 72, 72, 48, 48, 3, stride=2, padding=1, act="relu6"),
    Shape("depthwise 3x3 s2 9x9x192 -> 5, ReLU6", "dw", 9, 9, 192, 192, 3, stride=2, padding=1, act="relu6"),
    Shape("depthwise 3x3 s1 11x9x96 (patch tile), ReLU6", "dw", 11, 9, 96, 96, 3, padding=(0, 1), act="relu6"),
    Shape("depthwise 3x3 s1 9x9x16 (patch tile)", "dw", 9, 9, 16, 16, 3, padding=1),
]


COLUMNS = {"m7:dsp": ("mps2-an500", "dsp", "M7 DSP"), "m55:mve": ("mps3-an547", "mve", "M55 Helium"),
           "m55:dsp": ("mps3-an547", "dsp", "M55 DSP"), "m4:dsp": ("mps2-an386", "dsp", "M4 DSP"),
           "rv32imc": ("virt-rv32imc", "rv32", "RV32IMC")}  # the scalar kernels on an ESP32-C3-class core


def _case(shape: Shape, rng, isa: str = "dsp") -> tuple[Case, np.ndarray, int]:
    kh, kw = (shape.k, shape.k) if np.isscalar(shape.k) else shape.k
    x_zp = -128 if shape.act == "relu6" else 3
    out_zp = {"relu6": -128, "relu": -20}.get(shape.act, -4)
    act_min, act_max = (out_zp, 127) if shape.act == "relu" else (-128, 127)
    fan = shape.cin * kh * kw if shape.kind != "dw" else kh * kw
    mult, shift = qmath.quantize_multipliers(rng.uniform(0.5, 1.2, shape.cout) / (np.sqrt(fan) * 100))
    q = dict(x_zp=x_zp, out_zp=out_zp, act_min=act_min, act_max=act_max)
    bias = rng.integers(-3000, 3000, shape.cout).astype(np.int32)
    if shape.kind == "fc":
        x = rng.integers(-128, 128, (1, shape.cin), dtype=np.int8)
        w = rng.integers(-127, 128, (shape.cout, shape.cin), dtype=np.int8)
        ref = intref.fully_connected(x, w, bias, mult=mult, shift=shift, **q)
        layer = kp.pack_fully_connected(w, bias, mult, shift, isa=isa, **q)
        return Case(shape.name, layer, x.reshape(-1), ref.size), ref.reshape(-1), shape.cin * shape.cout
    x = rng.integers(-128, 128, (shape.h, shape.w, shape.cin), dtype=np.int8)
    dw = shape.kind == "dw"
    w = rng.integers(-127, 128, (shape.cout, 1 if dw else shape.cin, kh, kw), dtype=np.int8)
    geom = dict(stride=shape.stride, padding=shape.padding)
    ref = intref.conv2d(x, w, bias, mult=mult, shift=shift, groups=shape.cin if dw else 1, **q, **geom)
    pack = kp.pack_depthwise_conv2d if dw else kp.pack_conv2d
    extra = {} if dw or shape.scratch_limit is None else {"scratch_limit_bytes": shape.scratch_limit}
    layer = pack(w, bias, mult, shift, input_shape=x.shape, isa=isa, **q, **geom, **extra)
    macs = ref.size * (1 if dw else shape.cin) * kh * kw
    out_bytes = ref.size
    return Case(shape.name, layer, x.reshape(-1), out_bytes), expected_buffer(ref, ref.shape[1] * shape.cout,
                                                                              out_bytes), macs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--columns", nargs="+", default=["m7:dsp", "m55:mve", "m55:dsp", "rv32imc"], choices=sorted(COLUMNS),
                        help="core:kernels to measure, side by side")
    parser.add_argument("--opt", default="-O2")
    parser.add_argument("--only", default=None, help="only shapes whose name contains this text")
    args = parser.parse_args(argv)
    shapes = [s for s in SHAPES if args.only is None or args.only in s.name]
    columns = []
    for col in args.columns:
        board, isa, title = COLUMNS[col]
        rng = np.random.default_rng(0)  # the same layers in every column
        built = [_case(shape, rng, isa) for shape in shapes]
        with tempfile.TemporaryDirectory(prefix="edgekit-bench-kernels-") as tmp:
            results = run_on_qemu([c for c, _, _ in built], board, Path(tmp), opt=args.opt)
        columns.append((title, board, built, results))
    boards = ", ".join(f"{title} on {board}" for title, board, _, _ in columns)
    print(f"edgekit int8 kernels ({boards}; {args.opt}), executed instructions per MAC "
          f"(QEMU instruction count, not cycles)\n")
    head = f"{'shape':50s} {'MACs':>10s}"
    for title, *_ in columns:
        head += f" {title:>12s}"
    head += f"  {'CMSIS-NN':>8s} {'naive C':>8s} {'TVM 0.27':>8s}"
    for title, *_ in columns:
        head += f"  {title + ' scratch/pad B':>26s}"
    head += "  bit-exact"
    print(head)
    print("-" * len(head))
    ok_all = True
    for i, shape in enumerate(shapes):
        macs = columns[0][2][i][2]
        line = f"{shape.name:50s} {macs:10d}"
        oks = []
        for _, _, built, results in columns:
            case, expected, _ = built[i]
            res = results[i]
            oks.append(res.rc == 0 and np.array_equal(res.output, expected))
            line += f" {res.instructions / macs:12.3f}"
        cm, naive, tvm = shape.field_notes
        line += f"  {cm:>8s} {naive:>8s} {tvm:>8s}"
        for _, _, built, _ in columns:
            layer = built[i][0].layer
            line += f"  {f'{layer.scratch_bytes} / {layer.weight_padding_bytes}':>26s}"
        ok_all &= all(oks)
        print(line + ("  yes" if all(oks) else "  NO"))
    print("\nCMSIS-NN / naive C / TVM columns: shared/FIELD_NOTES.md, measured on the M7 with the same counting.")
    print("scratch B: scratch buffer the call needs; pad B: packed weight bytes beyond one per weight.")
    print("Helium: most M55 vector instructions take two beats; these are instructions, not cycles. Depthwise layers "
          "with 8 channels or fewer keep the SMLAD kernels on the M55 (kernel_pack.MVE_DW_MIN_CHANNELS): their M55 "
          "Helium column is that choice.")
    return 0 if ok_all else 1


if __name__ == "__main__":
    raise SystemExit(main())
