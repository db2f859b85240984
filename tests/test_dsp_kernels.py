"""edgekit's int8 Cortex-M kernels (targets/mcu/platforms/cortex_m/kernels/ek_nn_s8.c) match the host integer reference
(edgekit.intref) bit for bit, on every core they build for, and the reference matches float convolution.

One firmware per core runs all cases (tests/kernel_harness.py): Cortex-M7 (QEMU mps2-an500), Cortex-M4 (an386) and
Cortex-M55 (an547) through the DSP path, the M7 again with the portable C path forced (-DEK_NN_PORTABLE), and the
portable path built with the host compiler. The same cases packed for Helium (kernel_pack isa="mve") run on the M55
(ek_nn_s8_mve.c: the check that QEMU's mps3-an547 executes MVE as the host reference computes), and a build
without MVE refuses a Helium-packed layer. Output buffers are pre-filled with a sentinel so a write outside the
output window fails the comparison too.
"""
from __future__ import annotations

import dataclasses
import functools
import shutil

import numpy as np
import pytest

from edgekit import intref, qmath
from edgekit.errors import UnsupportedError, UsageError
from edgekit.targets.mcu import kernel_pack as kp
from kernel_harness import Case, expected_buffer, place_rows, run_on_host, run_on_qemu

HAVE_ARM = shutil.which("arm-none-eabi-gcc") is not None and shutil.which("qemu-system-arm") is not None
needs_arm = pytest.mark.skipif(not HAVE_ARM, reason="arm-none-eabi-gcc and qemu-system-arm are not installed")


def _quant(rng, channels: int, fan_in: int, shift_lo: int | None = None):
    """Random zero points and per-channel (mult, shift) of a typical layer (real multiplier ~ 1/(128 sqrt(fan_in)))."""
    x_zp = int(rng.integers(-128, 128))
    out_zp = int(rng.integers(-100, 100))
    real = rng.uniform(0.3, 1.5, channels) / (np.sqrt(fan_in) * 128)
    if shift_lo is not None:  # multipliers >= 0.25: shift <= 32, the 64-bit requantisation path
        real = rng.uniform(0.26, 0.9, channels)
    mult, shift = qmath.quantize_multipliers(real)
    return x_zp, out_zp, mult, shift


def _act(kind: str, out_zp: int) -> tuple[int, int]:
    if kind == "relu":
        return out_zp, 127
    if kind == "relu6":
        return out_zp, min(127, out_zp + 90)
    return -128, 127


def _conv_case(rng, name, h, w, cin, cout, k, *, stride=1, dilation=1, padding=0, in_extra=0, out_extra=0,
               act="none", depthwise=False, bias=True, big_mult=False, zero_channel=False, isa="dsp", **pack_kw):
    kh, kw = (k, k) if np.isscalar(k) else k
    x = rng.integers(-128, 128, (h, w, cin), dtype=np.int8)
    wt = rng.integers(-127, 128, (cout, 1 if depthwise else cin, kh, kw), dtype=np.int8)
    b = rng.integers(-20000, 20000, cout).astype(np.int32) if bias else None
    fan = (1 if depthwise else cin) * kh * kw
    x_zp, out_zp, mult, shift = _quant(rng, cout, fan, shift_lo=1 if big_mult else None)
    if zero_channel:
        mult[0], shift[0] = 0, 1
    act_min, act_max = _act(act, out_zp)
    common = dict(x_zp=x_zp, out_zp=out_zp, act_min=act_min, act_max=act_max, stride=stride, dilation=dilation,
                  padding=padding)
    ref = intref.conv2d(x, wt, b, mult=mult, shift=shift, groups=cin if depthwise else 1, **common)
    in_rs = w * cin + in_extra
    out_rs = ref.shape[1] * cout + out_extra
    pack = kp.pack_depthwise_conv2d if depthwise else kp.pack_conv2d
    if isa == "mve":  # the DSP layouts' choices do not apply; a scratch limit and a tile size do
        pack_kw = {k: v for k, v in pack_kw.items() if k in ("scratch_limit_bytes", "tile_pixels")}
    if isa == "rv32":  # the scalar kernels: a scratch limit applies (and a depthwise layout where they do not)
        pack_kw = {k: v for k, v in pack_kw.items() if k in ("scratch_limit_bytes", "layout")}
    layer = pack(wt, b, mult, shift, input_shape=(h, w, cin), in_row_stride=in_rs, out_row_stride=out_rs,
                 isa=isa, **common, **pack_kw)
    out_bytes = out_rs * ref.shape[0]
    return Case(name, layer, place_rows(x, in_rs, in_rs * h, fill=7), out_bytes), expected_buffer(ref, out_rs,
                                                                                                   out_bytes)


def _fc_case(rng, name, n_in, n_out, batch=1, act="none", big_mult=False, isa="dsp"):
    x = rng.integers(-128, 128, (batch, n_in), dtype=np.int8)
    wt = rng.integers(-127, 128, (n_out, n_in), dtype=np.int8)
    b = rng.integers(-20000, 20000, n_out).astype(np.int32)
    x_zp, out_zp, mult, shift = _quant(rng, n_out, n_in, shift_lo=1 if big_mult else None)
    act_min, act_max = _act(act, out_zp)
    ref = intref.fully_connected(x, wt, b, x_zp=x_zp, mult=mult, shift=shift, out_zp=out_zp, act_min=act_min,
                                 act_max=act_max)
    layer = kp.pack_fully_connected(wt, b, mult, shift, x_zp=x_zp, out_zp=out_zp, act_min=act_min,
                                    act_max=act_max, batch=batch, isa=isa)
    return Case(name, layer, x.reshape(-1), ref.size), ref.reshape(-1)


def _fc_extreme_case(rng, name, n_in, n_out, batch=1, act="none", isa="dsp", **pack_kw):
    """Inputs only -128 and 127 and weights only -127 and 127, signed so that each two inputs' products are both
    +16256 or both -16256 (alternating along the row, the phase per channel): the paired scalar kernel's 16-bit lanes
    meet both ends of their range. The bias cancels the sum (rows repeat one input row), and the gain is 1/8, so an
    accumulator off by one unit shows in the output."""
    x = np.tile(rng.choice(np.array([-128, 127], dtype=np.int8), n_in), (batch, 1))
    sign = np.where(x[0] < 0, -1, 1)
    run = np.where(np.arange(n_in) // 2 % 2 == 0, 1, -1)
    wt = np.stack([127 * sign * run * (1 if c % 2 == 0 else -1) if c % 3 < 2 else 127 * sign * -run[::-1]
                   for c in range(n_out)]).astype(np.int8)
    x_zp = int(rng.integers(-128, 128))
    acc = (x[0].astype(np.int64) - x_zp) @ wt.T.astype(np.int64)
    b = (-acc + rng.integers(-600, 600, n_out)).astype(np.int32)
    mult, shift = np.full(n_out, 1 << 30), np.full(n_out, 33)
    out_zp = int(rng.integers(-20, 20))
    act_min, act_max = _act(act, out_zp)
    ref = intref.fully_connected(x, wt, b, x_zp=x_zp, mult=mult, shift=shift, out_zp=out_zp, act_min=act_min,
                                 act_max=act_max)
    layer = kp.pack_fully_connected(wt, b, mult, shift, x_zp=x_zp, out_zp=out_zp, act_min=act_min,
                                    act_max=act_max, batch=batch, isa=isa, **pack_kw)
    return Case(name, layer, x.reshape(-1), ref.size), ref.reshape(-1)


def _probe_data(rng, shape, zp, extremes):
    """Inputs near the zero point, a fraction ``extremes`` of them -128 or 127: accumulators stay small enough to
    be seen unclamped, and the encodings still meet the ends of the int8 range."""
    x = zp + rng.integers(-3, 4, shape)
    x = np.where(rng.random(shape) < extremes, rng.choice([-128, 127], shape), x)
    return np.clip(x, -128, 127).astype(np.int8)


def _probe_weights(rng, shape, extremes):
    w = rng.integers(-2, 3, shape)
    w = np.where(rng.random(shape) < extremes, rng.choice([-127, 127], shape), w)
    return w.astype(np.int8)


def _exact_case(rng, name, kind, gain_shift, extremes=0.03, isa="dsp", **geom):
    """A layer with gain 1/2 (shift 31, the 64-bit requant path) or 1/8 (shift 33, the SMMLA path), so that an
    error of one accumulator unit shows in many outputs instead of hiding behind a typical requantisation."""
    mult_v = 1 << 30
    if kind == "fc":
        n_in, n_out, batch = geom["n_in"], geom["n_out"], geom["batch"]
        x_zp = int(rng.integers(-20, 20))
        x = _probe_data(rng, (batch, n_in), x_zp, extremes)
        wt = _probe_weights(rng, (n_out, n_in), extremes)
        b = rng.integers(-40, 40, n_out).astype(np.int32)
        mult, shift = np.full(n_out, mult_v), np.full(n_out, gain_shift)
        ref = intref.fully_connected(x, wt, b, x_zp=x_zp, mult=mult, shift=shift, out_zp=3)
        layer = kp.pack_fully_connected(wt, b, mult, shift, x_zp=x_zp, out_zp=3, batch=batch, isa=isa)
        return Case(name, layer, x.reshape(-1), ref.size), ref.reshape(-1)
    h, w, cin, cout, k = geom["h"], geom["w"], geom["cin"], geom["cout"], geom["k"]
    kh, kw = (k, k) if np.isscalar(k) else k
    depthwise = kind == "dw"
    x_zp = int(rng.integers(-20, 20))
    x = _probe_data(rng, (h, w, cin), x_zp, extremes)
    wt = _probe_weights(rng, (cout, 1 if depthwise else cin, kh, kw), extremes)
    b = rng.integers(-40, 40, cout).astype(np.int32)
    mult, shift = np.full(cout, mult_v), np.full(cout, gain_shift)
    common = dict(x_zp=x_zp, out_zp=-5, stride=geom.get("stride", 1), padding=geom.get("padding", 0))
    ref = intref.conv2d(x, wt, b, mult=mult, shift=shift, groups=cin if depthwise else 1, **common)
    pack = kp.pack_depthwise_conv2d if depthwise else kp.pack_conv2d
    layer = pack(wt, b, mult, shift, input_shape=(h, w, cin), isa=isa, **common)
    return Case(name, layer, x.reshape(-1), ref.size), ref.reshape(-1)


def _all_cases(isa: str = "dsp"):
    rng = np.random.default_rng(20240611)
    c = []
    _conv_case = functools.partial(_conv_case_isa, isa=isa)
    _fc_case = functools.partial(_fc_case_isa, isa=isa)
    _exact_case = functools.partial(_exact_case_isa, isa=isa)
    # convolutions
    c.append(_conv_case(rng, "conv3x3 16x16x16->32 pad1", 16, 16, 16, 32, 3, padding=1))
    c.append(_conv_case(rng, "conv3x3 odd channels 7->5 s2 asym pad", 9, 11, 7, 5, 3, stride=2,
                        padding=(1, 0, 2, 1), act="relu"))
    c.append(_conv_case(rng, "conv3x3 3->16 s2 (first layer)", 21, 20, 3, 16, 3, stride=2, padding=(0, 1, 0, 1),
                        act="relu6"))
    c.append(_conv_case(rng, "conv1x1 32->64", 8, 8, 32, 64, 1))
    c.append(_conv_case(rng, "conv1x1 13->22 row strides", 5, 7, 13, 22, 1, in_extra=9, out_extra=6, act="relu"))
    c.append(_conv_case(rng, "conv1x1 s2 24->10", 9, 9, 24, 10, 1, stride=2))
    c.append(_conv_case(rng, "conv5x5 6->9 pad2", 10, 9, 6, 9, 5, padding=2, cache_all_weights=False))
    c.append(_conv_case(rng, "conv3x3 dil2 8->12", 11, 10, 8, 12, 3, dilation=2, padding=2, tile_pixels=4))
    c.append(_conv_case(rng, "conv3x5 dil(2,3) s(2,1) 5->7", 13, 14, 5, 7, (3, 5), dilation=(2, 3),
                        stride=(2, 1), padding=(2, 1, 3, 4), in_extra=3, act="relu", conv_fc=False))
    c.append(_conv_case(rng, "conv3x3 no bias 4->4", 6, 6, 4, 4, 3, padding=1, bias=False, tile_pixels=2))
    # a Conv1d over [L, 1, C]: one output pixel a row (Helium: tiles across the rows), dilated, padded; with row
    # strides (a row at a time)
    c.append(_conv_case(rng, "conv 3x1 dil2 Conv1d 21x1x12->20", 21, 1, 12, 20, (3, 1), dilation=(2, 1),
                        padding=(2, 2, 0, 0), act="relu"))
    c.append(_conv_case(rng, "conv 5x1 s2 Conv1d 19x1x8->8 row strides", 19, 1, 8, 8, (5, 1), stride=(2, 1),
                        padding=(2, 2, 0, 0), in_extra=3, out_extra=4))
    # small windows (1-3 channel first layers): 3x3x1 rows of 3 bytes, windows gathered at the border
    c.append(_conv_case(rng, "conv3x3 1->16 pad1 (grey first layer)", 8, 8, 1, 16, 3, padding=1, act="relu",
                        conv_fc=False))
    c.append(_conv_case(rng, "conv3x3 1->6 s2 asym pad row strides", 9, 7, 1, 6, 3, stride=2, padding=(1, 0, 2, 1),
                        in_extra=3, out_extra=2, conv_fc=False))
    c.append(_conv_case(rng, "conv3x3 1->4 odd width pad2 tile 6", 5, 7, 1, 4, 3, padding=2, tile_pixels=6,
                        conv_fc=False))
    c.append(_conv_case(rng, "conv3x3 3->8 pad1 border windows", 7, 6, 3, 8, 3, padding=1, act="relu6",
                        conv_fc=False))
    c.append(_conv_case(rng, "conv5x5 1->8 pad2", 7, 9, 1, 8, 5, padding=2, conv_fc=False))
    c.append(_conv_case(rng, "conv3x3 2->8 pad1", 6, 5, 2, 8, 3, padding=(1, 1, 0, 2), conv_fc=False))
    c.append(_conv_case(rng, "conv5x3 1->4 pad (2,1)", 9, 8, 1, 4, (5, 3), padding=(2, 2, 1, 1), conv_fc=False))
    # one input channel, 3x3 (FLAG_CONV_C1, the cases above with 1 channel too): the rows padded on the stack (small
    # maps), a wide map's inside runs in asm and its border pixels one by one, stride 2, row strides, the clamp 4
    # channels a turn and in C (channels not in fours, or rows not in words), no bias, no fast requantization; and
    # the tile GEMM's gathered border windows for such a layer still, asked for
    c.append(_conv_case(rng, "conv3x3 1->8 c1 70 wide s2 row strides relu", 9, 70, 1, 8, 3, stride=2, padding=1,
                        in_extra=5, out_extra=4, act="relu"))
    c.append(_conv_case(rng, "conv3x3 1->12 c1 66 wide relu6", 6, 66, 1, 12, 3, padding=1, act="relu6"))
    c.append(_conv_case(rng, "conv3x3 1->7 c1 pad (0,2,2,0) relu6", 7, 9, 1, 7, 3, padding=(0, 2, 2, 0), act="relu6"))
    c.append(_conv_case(rng, "conv3x3 1->8 c1 no bias", 5, 5, 1, 8, 3, padding=1, bias=False))
    c.append(_conv_case(rng, "conv3x3 1->8 c1 64-bit requant", 6, 6, 1, 8, 3, padding=1, big_mult=True))
    c.append(_conv_case(rng, "conv3x3 1->16 pad1 tile GEMM", 8, 8, 1, 16, 3, padding=1, act="relu", conv_fc=False,
                        conv_c1=False))
    # FLAG_CONV_FC (each output pixel's window as one FC row): channels in fours (prepared straight from the input,
    # per tap at the edges and with dilation) and not (gathered as bytes), a last block of 1-3 channels, row strides,
    # no bias, the 64-bit requantization (the FC kernel's raw path), the clamp, a 10x4 first layer, a 1x1
    rf = np.random.default_rng(91)
    for name, geom, k, kw in (
            ("3x3 8x8x16->20 relu", (8, 8, 16, 20), 3, dict(padding=1, act="relu")),
            ("3x3 s2 9x11x7->5 pad (1,0,2,1)", (9, 11, 7, 5), 3, dict(stride=2, padding=(1, 0, 2, 1))),
            ("3x5 dil(2,3) s(2,1) 13x14x8->12 row strides", (13, 14, 8, 12), (3, 5),
             dict(dilation=(2, 3), stride=(2, 1), padding=(2, 1, 3, 4), in_extra=4, out_extra=3, act="relu6")),
            ("3x3 6x6x12->8 64-bit requant", (6, 6, 12, 8), 3, dict(padding=1, big_mult=True)),
            ("10x4 s2 25x10x1->16 first layer", (25, 10, 1, 16), (10, 4), dict(stride=2, padding=(5, 1))),
            ("1x1 5x7x24->38", (5, 7, 24, 38), 1, dict()),
            ("3x3 6x6x4->4 no bias", (6, 6, 4, 4), 3, dict(padding=1, bias=False))):
        h, w, cin, cout = geom
        c.append(_conv_case(rf, f"conv fc {name}", h, w, cin, cout, k, conv_fc=True, **kw))
    # scratch too small for every block's biases at once (patched programs): one block's at a time, tail block of 2
    c.append(_conv_case(rng, "conv1x1 24->46 biases per block", 5, 3, 24, 46, 1, scratch_limit_bytes=500,
                        conv_fc=False))
    c.append(_conv_case(rng, "conv3x3 64-bit requant 8->6", 7, 6, 8, 6, 3, padding=1, big_mult=True))
    # weights stored widened (FLAG_WIDE_WEIGHTS): a last block of 2 channels, the first layer's paired run tails,
    # the 64-bit requantization (raw path), biases per block, a clamp, one-pixel tiles; their own generator
    rw = np.random.default_rng(23)
    for name, geom, k, kw in (
            ("3x3 9x8x16->22 pad1 relu", (9, 8, 16, 22), 3, dict(padding=1, act="relu", tile_pixels=6)),
            ("3x3 s2 21x20x3->16 first layer", (21, 20, 3, 16), 3, dict(stride=2, padding=(0, 1, 0, 1))),
            ("3x3 7x6x8->6 64-bit requant", (7, 6, 8, 6), 3, dict(padding=1, big_mult=True)),
            ("1x1 5x3x24->46 biases per block", (5, 3, 24, 46), 1, dict(scratch_limit_bytes=500)),
            ("1x1 2x2x64->64 (a patch tile)", (2, 2, 64, 64), 1, dict(in_extra=64, out_extra=128))):
        h, w, cin, cout = geom
        c.append(_conv_case(rw, f"conv wide {name}", h, w, cin, cout, k, wide_weights=True, conv_fc=False, **kw))
    c.append(_conv_case(rng, "conv2x2 zero-mult channel 16->8", 6, 7, 16, 8, 2, zero_channel=True))
    c.append(_conv_case(rng, "conv7x1 1->3 tall", 12, 3, 1, 3, (7, 1), padding=(3, 3, 0, 0), conv_fc=False))
    # 1x1 with 8 or 16 input channels: the record stream (FLAG_1X1_STREAM) — every remainder of its 8-channel
    # unroll, no bias, a zero multiplier, stride 2, row strides; first layers' 3x3 x 3 channel runs (ek__cvt_rows9)
    # with row strides and a dilated height. Their own generator, so the other cases keep their data.
    r14 = np.random.default_rng(14)
    for cin, cout in ((8, 48), (16, 8), (8, 1), (16, 3), (8, 13), (16, 22), (8, 7), (16, 17)):
        c.append(_conv_case(r14, f"conv1x1 stream {cin}->{cout}", 5, 7, cin, cout, 1))
    c.append(_conv_case(r14, "conv1x1 stream 16->13 row strides no bias", 4, 6, 16, 13, 1, in_extra=5, out_extra=3,
                        bias=False))
    # rows of one pixel (a grouped 1x1's call: one group's channels of every pixel), run as one pass of pixels
    for cin, cout, extra in ((8, 8, (24, 24)), (16, 5, (3, 11)), (8, 11, (0, 0))):
        c.append(_conv_case(r14, f"conv1x1 stream {cin}->{cout} rows of one pixel", 9, 1, cin, cout, 1,
                            in_extra=extra[0], out_extra=extra[1]))
    c.append(_conv_case(r14, "conv1x1 stream s2 8->10 zero-mult channel", 7, 9, 8, 10, 1, stride=2,
                        zero_channel=True))
    c.append(_conv_case(r14, "conv1x1 8->12 relu6 (clamped: the tile GEMM)", 5, 5, 8, 12, 1, act="relu6"))
    c.append(_conv_case(r14, "conv3x3 3->8 s2 pad 1 row strides (first layer)", 19, 22, 3, 8, 3, stride=2, padding=1,
                        in_extra=7, out_extra=2, act="relu6"))
    c.append(_conv_case(r14, "conv3x3 3->5 dil (2,1) s1 (first layer runs)", 11, 12, 3, 5, 3, dilation=(2, 1),
                        padding=(2, 2, 1, 1)))
    for gain_shift in (31, 33):
        c.append(_exact_case(r14, f"exact conv1x1 stream 8->11 shift {gain_shift}", "conv", gain_shift, h=6, w=5,
                             cin=8, cout=11, k=1))
        c.append(_exact_case(r14, f"exact conv1x1 stream 16->9 shift {gain_shift}", "conv", gain_shift, h=5, w=4,
                             cin=16, cout=9, k=1))
        c.append(_exact_case(r14, f"exact conv3x3 3->8 s2 first layer shift {gain_shift}", "conv", gain_shift, h=13,
                             w=11, cin=3, cout=8, k=3, stride=2, padding=1))
    # depthwise
    c.append(_conv_case(rng, "dw3x3 16x16x32 pad1", 16, 16, 32, 32, 3, padding=1, depthwise=True))
    c.append(_conv_case(rng, "dw3x3 13ch s2 asym pad row strides", 17, 15, 13, 13, 3, stride=2,
                        padding=(1, 1, 0, 2), in_extra=3, out_extra=5, act="relu6", depthwise=True))
    c.append(_conv_case(rng, "dw3x3 7ch odd width", 9, 9, 7, 7, 3, padding=(0, 2, 1, 0), depthwise=True))
    c.append(_conv_case(rng, "dw3x3 12ch width 6 pad odd", 5, 6, 12, 12, 3, padding=(1, 1, 1, 2), depthwise=True,
                        act="relu"))
    c.append(_conv_case(rng, "dw5x5 dil2 6ch", 12, 11, 6, 6, 5, dilation=2, padding=3, depthwise=True))
    # channels-last depthwise (small maps, other kernels): odd channel counts, strides, dilation, row strides
    c.append(_conv_case(rng, "dw3x3 ch-last 3x3x37", 3, 3, 37, 37, 3, padding=1, depthwise=True, layout="channels"))
    c.append(_conv_case(rng, "dw3x3 ch-last s2 6x7x12 asym pad", 6, 7, 12, 12, 3, stride=2, padding=(0, 1, 1, 0),
                        depthwise=True, layout="channels", act="relu6"))
    c.append(_conv_case(rng, "dw3x3 ch-last 7x6x44 row strides relu6 (unrolled interior)", 7, 6, 44, 44, 3,
                        padding=1, depthwise=True, layout="channels", in_extra=4, out_extra=8, act="relu6"))
    # the border pixels' asm (3x2, 2x3, 2x2 taps inside the map; the clamp and no-clamp stores), and without biases
    # (the C loop)
    c.append(_conv_case(rng, "dw3x3 ch-last 2x2x20 corners relu", 2, 2, 20, 20, 3, padding=1, depthwise=True,
                        layout="channels", act="relu"))
    c.append(_conv_case(rng, "dw3x3 ch-last 3x5x16 pad (1,1,2,0) relu6", 3, 5, 16, 16, 3, padding=(1, 1, 2, 0),
                        depthwise=True, layout="channels", act="relu6"))
    c.append(_conv_case(rng, "dw3x3 ch-last 4x5x12 no bias", 4, 5, 12, 12, 3, padding=1, depthwise=True,
                        layout="channels", bias=False))
    # 5x5 channels-last on maps at most 3 wide: the asm pixel kernels where 2-3 taps a side lie inside the map, the C
    # loop elsewhere (stride 2: 3-5 a side)
    c.append(_conv_case(rng, "dw5x5 ch-last 3x3x40 relu6 (asm)", 3, 3, 40, 40, 5, padding=2, depthwise=True,
                        layout="channels", act="relu6"))
    c.append(_conv_case(rng, "dw5x5 ch-last 3x2x22 pad (2,2,1,2) relu (asm, 2 channels beyond)", 3, 2, 22, 22, 5,
                        padding=(2, 2, 1, 2), depthwise=True, layout="channels", act="relu"))
    c.append(_conv_case(rng, "dw5x5 ch-last s2 6x6x24 (asm and C)", 6, 6, 24, 24, 5, stride=2, padding=2,
                        depthwise=True, layout="channels"))
    c.append(_conv_case(rng, "dw3x3 ch-last s2 9x9x36 (auto layout)", 9, 9, 36, 36, 3, stride=2, padding=1,
                        depthwise=True))
    # the layout chosen by kernel_pack's measured cost (depthwise3x3_row_instructions): wide stride 2 -> rows, a
    # narrow map with few channels and a 13-wide one -> channels-last
    c.append(_conv_case(rng, "dw3x3 s2 8x56x36 (auto: rows)", 8, 56, 36, 36, 3, stride=2, padding=1, depthwise=True,
                        act="relu6"))
    c.append(_conv_case(rng, "dw3x3 9x9x16 (auto: channels)", 9, 9, 16, 16, 3, padding=1, depthwise=True))
    c.append(_conv_case(rng, "dw3x3 5x13x42 (auto: channels)", 5, 13, 42, 42, 3, padding=1, depthwise=True,
                        act="relu"))
    # the pairs layout (a padded plane of column pairs per 4 channels, 2 outputs x 2 channels a step): strides 1 and
    # 2 and (2, 1), odd widths, 1-3 channels beyond a group of 4 (an odd one runs the C loop), one and two outputs a
    # row, padding 0 / 2 / asymmetric, row strides, no bias, the clamp and no-clamp stores, 64-bit requantization
    rp = np.random.default_rng(77)
    for name, geom, kw in (
            ("6x6x16 relu6", (6, 6, 16), dict(padding=1, act="relu6")),
            ("7x5x38 relu row strides", (7, 5, 38), dict(padding=1, act="relu", in_extra=4, out_extra=6)),
            ("s2 9x10x13 pad (0,1,1,0) relu", (9, 10, 13), dict(stride=2, padding=(0, 1, 1, 0), act="relu")),
            ("s2 12x12x20 relu6", (12, 12, 20), dict(stride=2, padding=1, act="relu6")),
            ("5x2x39 no bias", (5, 2, 39), dict(padding=1, bias=False)),
            ("4x1x8 one output a row", (4, 1, 8), dict(padding=1)),
            ("s(2,1) 8x9x12 valid", (8, 9, 12), dict(stride=(2, 1), padding=0, act="relu")),
            ("6x7x10 pad (2,0,2,0)", (6, 7, 10), dict(padding=(2, 0, 2, 0))),
            ("6x6x8 64-bit requant", (6, 6, 8), dict(padding=1, big_mult=True))):
        h, w, ch = geom
        c.append(_conv_case(rp, f"dw3x3 pairs {name}", h, w, ch, ch, 3, depthwise=True, layout="pairs", **kw))
    # the transposed map (FLAG_DW_TRANSPOSED: rows / pairs run down the columns of a tall, narrow map, kernels stored
    # transposed): a keyword CNN's 25x5 (auto), strides (2, 1) / (1, 2) / 2, asymmetric padding, 1-3 channels past a
    # group of 4, row strides, no bias, the clamp and no-clamp stores, 64-bit requantization
    rt = np.random.default_rng(78)
    for name, geom, kw in (
            ("25x5x64 relu (auto)", (25, 5, 64), dict(padding=1, act="relu")),
            ("pairs_t 13x4x22 row strides", (13, 4, 22), dict(padding=1, layout="pairs_t", in_extra=4, out_extra=2)),
            ("pairs_t s(2,1) 14x5x12 relu6", (14, 5, 12), dict(stride=(2, 1), padding=(1, 1, 1, 0),
                                                            layout="pairs_t", act="relu6")),
            ("pairs_t s(1,2) 11x6x9 no bias", (11, 6, 9), dict(stride=(1, 2), padding=1, layout="pairs_t",
                                                             bias=False)),
            ("pairs_t 9x3x8 64-bit requant", (9, 3, 8), dict(padding=1, layout="pairs_t", big_mult=True)),
            ("rows_t 22x6x13 relu", (22, 6, 13), dict(padding=1, layout="rows_t", act="relu")),
            ("rows_t s2 17x7x20 relu6 row strides", (17, 7, 20), dict(stride=2, padding=(1, 0, 1, 1), layout="rows_t",
                                                                    act="relu6", in_extra=3, out_extra=5)),
            ("rows_t 10x1x8 one column", (10, 1, 8), dict(padding=1, layout="rows_t"))):
        h, w, ch = geom
        c.append(_conv_case(rt, f"dw3x3 transposed {name}", h, w, ch, ch, 3, depthwise=True, **kw))
    c.append(_conv_case(rng, "dw5x5 ch-last dil2 10x9x6", 10, 9, 6, 6, 5, dilation=2, padding=3, depthwise=True,
                        layout="channels", in_extra=5, out_extra=3))
    c.append(_conv_case(rng, "dw3x1 ch-last 8x8x9", 8, 8, 9, 9, (3, 1), padding=(1, 1, 0, 0), depthwise=True,
                        layout="channels", bias=False))
    c.append(_conv_case(rng, "dw3x3 64-bit requant no bias", 8, 8, 8, 8, 3, padding=1, depthwise=True,
                        big_mult=True, bias=False))
    c.append(_conv_case(rng, "dw1x1 5ch", 4, 4, 5, 5, 1, depthwise=True))
    # the row kernels: every channel of a group in one call, 1x3 / 3x1 (a 1x3 down the columns) / 5x5, a row's last
    # 1-3 outputs, maps one output wide, the clamp and no-clamp stores
    c.append(_conv_case(rng, "dw1x3 s1 9x11x7 pad (0,1)", 9, 11, 7, 7, (1, 3), padding=(0, 0, 1, 1), depthwise=True))
    c.append(_conv_case(rng, "dw1x3 s2 6x13x5 relu", 6, 13, 5, 5, (1, 3), stride=2, padding=(0, 0, 1, 0),
                        depthwise=True, act="relu"))
    c.append(_conv_case(rng, "dw3x1 s1 11x6x9 row strides relu6", 11, 6, 9, 9, (3, 1), padding=(1, 1, 0, 0),
                        in_extra=5, out_extra=3, depthwise=True, act="relu6"))
    c.append(_conv_case(rng, "dw3x1 s(2,1) 13x5x4 no bias", 13, 5, 4, 4, (3, 1), stride=(2, 1), padding=(1, 0, 0, 0),
                        depthwise=True, bias=False))
    c.append(_conv_case(rng, "dw3x1 s1 7x1x6 one column", 7, 1, 6, 6, (3, 1), padding=(1, 1, 0, 0), depthwise=True))
    c.append(_conv_case(rng, "dw5x5 s1 12x13x6 pad 2", 12, 13, 6, 6, 5, padding=2, depthwise=True))
    c.append(_conv_case(rng, "dw5x5 s1 7x6x5 asym pad relu row strides", 7, 6, 5, 5, 5, padding=(2, 1, 2, 3),
                        in_extra=2, out_extra=7, depthwise=True, act="relu"))
    c.append(_conv_case(rng, "dw5x5 s1 5x5x9 no bias", 5, 5, 9, 9, 5, padding=2, depthwise=True, bias=False))
    c.append(_conv_case(rng, "dw3x3 rows 9x1x8 one output wide", 9, 1, 8, 8, 3, padding=1, depthwise=True))
    c.append(_conv_case(rng, "dw3x3 rows s2 8x2x11 one output wide relu6", 8, 2, 11, 11, 3, stride=2, padding=1,
                        depthwise=True, act="relu6", layout="rows"))
    c.append(_conv_case(rng, "dw3x3 rows 3x3x256", 3, 3, 256, 256, 3, padding=1, depthwise=True, layout="rows"))
    c.append(_conv_case(rng, "dw3x3 rows s1 6x10x13 (groups of 4 + 1)", 6, 10, 13, 13, 3, padding=1,
                        depthwise=True, layout="rows", act="relu"))
    # a row's last 1-3 outputs inside the row call (2-output step for 1-2, 4-output for 3), clamped or not
    c.append(_conv_case(rng, "dw3x3 rows s1 4x5x8 (last 1)", 4, 5, 8, 8, 3, padding=1, depthwise=True,
                        layout="rows"))
    c.append(_conv_case(rng, "dw3x3 rows s2 9x13x12 (last 3) relu6", 9, 13, 12, 12, 3, stride=2, padding=1,
                        depthwise=True, layout="rows", act="relu6", in_extra=3, out_extra=5))
    c.append(_conv_case(rng, "dw1x3 rows s2 3x11x8 (last 2) relu", 3, 11, 8, 8, (1, 3), stride=2,
                        padding=(0, 0, 1, 1), depthwise=True, layout="rows", act="relu"))
    c.append(_conv_case(rng, "dw5x5 rows 5x5x9 (last 1)", 5, 5, 9, 9, 5, padding=2, depthwise=True, layout="rows"))
    # the 1xK row kernel (ek__dw1xk_row): K even and odd, K/2 even and odd (the turns of two tap pairs, one more
    # pair, the last tap), a row's last 1-3 outputs, the clamp and no-clamp stores, groups of 4 + 1-3 channels;
    # Kx1 (a depthwise Conv1d) on the transposed map, picked by shape
    for name, (h, w, ch), k, kw in (
            ("1x4 s1 3x12x8 (rows of 3 steps)", (3, 12, 8), (1, 4), dict(padding=(0, 0, 1, 2))),
            ("1x5 s(2,1) 5x13x6 relu (last 1)", (5, 13, 6), (1, 5), dict(stride=(2, 1), padding=(0, 0, 2, 2),
                                                                          act="relu")),
            ("1x6 s1 2x11x5 (last 3) no bias", (2, 11, 5), (1, 6), dict(padding=(0, 0, 3, 2), bias=False)),
            ("1x7 s1 4x10x9 relu6 row strides (last 3)", (4, 10, 9), (1, 7), dict(padding=(0, 0, 3, 4),
                                                                                   act="relu6", in_extra=3,
                                                                                   out_extra=5)),
            ("1x32 s1 1x40x4 (last 1)", (1, 40, 4), (1, 32), dict(padding=(0, 0, 15, 9))),
            ("9x1 Conv1d 37x1x12", (37, 1, 12), (9, 1), dict(padding=(4, 4, 0, 0))),
            ("25x1 Conv1d 30x1x7 relu", (30, 1, 7), (25, 1), dict(padding=(12, 12, 0, 0), act="relu")),
            ("8x1 s(1,2) 19x5x4 (last 3)", (19, 5, 4), (8, 1), dict(stride=(1, 2), padding=(3, 4, 1, 0))),
            ("13x1 13x2x5 (last 1) row strides", (13, 2, 5), (13, 1), dict(padding=(6, 6, 0, 0), in_extra=2,
                                                                             out_extra=3, layout="rows_t"))):
        kw.setdefault("layout", "rows" if k[0] == 1 else "rows_t")
        c.append(_conv_case(rng, f"dw{k[0]}x{k[1]} {name}", h, w, ch, ch, k, depthwise=True, **kw))
    # 5x5 stride 2: the row kernels (ek__dw5x5s2_row), clamped or not, a last group of 1-3; channels-last on small maps
    c.append(_conv_case(rng, "dw5x5 s2 rows 13x11x20 relu6", 13, 11, 20, 20, 5, stride=2, padding=2, depthwise=True,
                        layout="rows", act="relu6", in_extra=4, out_extra=3))
    c.append(_conv_case(rng, "dw5x5 s2 24x24x12 (auto: rows)", 24, 24, 12, 12, 5, stride=2, padding=2,
                        depthwise=True))
    c.append(_conv_case(rng, "dw5x5 s2 6x6x10 (auto: channels) relu", 6, 6, 10, 10, 5, stride=2, padding=2,
                        depthwise=True, act="relu"))
    # 5x5 rows with a last 3 (two 2-output steps in the call), either stride, clamped or not
    c.append(_conv_case(rng, "dw5x5 rows s1 7x7x8 (last 3)", 7, 7, 8, 8, 5, padding=2, depthwise=True,
                        layout="rows"))
    c.append(_conv_case(rng, "dw5x5 rows s2 14x14x6 (last 3) relu6", 14, 14, 6, 6, 5, stride=2, padding=2,
                        depthwise=True, layout="rows", act="relu6", out_extra=2))
    # fully connected
    c.append(_fc_case(rng, "fc 256->64", 256, 64))
    c.append(_fc_case(rng, "fc 1000->13 batch 3 relu", 1000, 13, batch=3, act="relu"))
    c.append(_fc_case(rng, "fc 7->5", 7, 5))
    c.append(_fc_case(rng, "fc 3->1", 3, 1))
    c.append(_fc_case(rng, "fc 333->9 64-bit requant", 333, 9, big_mult=True))
    c.append(_fc_case(rng, "fc 4100->4 (many chunks)", 4100, 4, batch=2))
    # accumulator-exact probes (see _exact_case)
    for gain_shift in (31, 33):
        tag = f"shift {gain_shift}"
        c.append(_exact_case(rng, f"exact fc 37->13 {tag}", "fc", gain_shift, n_in=37, n_out=13, batch=40))
        c.append(_exact_case(rng, f"exact fc 300->8 {tag}", "fc", gain_shift, n_in=300, n_out=8, batch=6,
                             extremes=0.0))
        c.append(_exact_case(rng, f"exact conv3x3 5->8 s2 {tag}", "conv", gain_shift, h=11, w=9, cin=5, cout=8,
                             k=3, stride=2, padding=1))
        c.append(_exact_case(rng, f"exact conv1x1 12->8 {tag}", "conv", gain_shift, h=6, w=5, cin=12, cout=8, k=1))
        c.append(_exact_case(rng, f"exact dw3x3 8ch {tag}", "dw", gain_shift, h=9, w=10, cin=8, cout=8, k=3,
                             padding=1))
        c.append(_exact_case(rng, f"exact dw3x3 s2 8ch {tag}", "dw", gain_shift, h=9, w=10, cin=8, cout=8, k=3,
                             stride=2, padding=1))
        c.append(_exact_case(rng, f"exact dw3x3 ch-last 36ch {tag}", "dw", gain_shift, h=6, w=5, cin=36, cout=36,
                             k=3, padding=1))
        # the row kernels pair taps in SMLAD (one wrong pairing is off by one unit in many outputs)
        c.append(_exact_case(rng, f"exact dw5x5 7ch {tag}", "dw", gain_shift, h=9, w=11, cin=7, cout=7, k=5,
                             padding=2))
        c.append(_exact_case(rng, f"exact dw1x3 6ch {tag}", "dw", gain_shift, h=5, w=10, cin=6, cout=6, k=(1, 3),
                             padding=(0, 1)))
        c.append(_exact_case(rng, f"exact dw3x1 6ch {tag}", "dw", gain_shift, h=10, w=5, cin=6, cout=6, k=(3, 1),
                             padding=(1, 0)))
    if isa == "mve":  # shapes the Helium kernels treat apart: K = 16 exactly, a channel group of 16 and a tail
        c.append(_conv_case(rng, "conv1x1 16->20 (K = 16)", 5, 6, 16, 20, 1, act="relu"))
        c.append(_conv_case(rng, "conv3x3 s1 33->7 (K % 16 = 9) tile 3", 6, 7, 33, 7, 3, padding=1, tile_pixels=3))
        c.append(_conv_case(rng, "dw3x3 s1 5x5x48 (three groups)", 5, 5, 48, 48, 3, padding=1, depthwise=True,
                            act="relu6"))
        c.append(_conv_case(rng, "dw3x3 s2 6x6x20 (group + tail)", 6, 6, 20, 20, 3, stride=2, padding=1,
                            depthwise=True))
        c.append(_conv_case(rng, "dw9x9 (81 taps: the dsp layout)", 10, 10, 4, 4, 9, padding=4, depthwise=True))
        c.append(_fc_case(rng, "fc 16->6 (K = 16)", 16, 6, batch=2))
        # a last block of 1-3 channels: the block kernels' predicated store (ek__mve_blk4_part, _k16_part), or the
        # C loop without the vector requantization; the sentinel around the output catches a lane stored too many
        c.append(_conv_case(rng, "conv1x1 8->2 (a last block of 2, K <= 16)", 6, 7, 8, 2, 1, act="relu"))
        c.append(_conv_case(rng, "conv3x3 24->9 (K % 16 = 8, a last block of 1) tile 5", 7, 6, 24, 9, 3, padding=1,
                            tile_pixels=5))
        c.append(_conv_case(rng, "conv3x3 64-bit requant 5->7 (C loop, last block of 3)", 6, 5, 5, 7, 3, padding=1,
                            big_mult=True))
        c.append(_fc_case(rng, "fc 40->11 (a last block of 3) batch 2", 40, 11, batch=2, act="relu6"))
    if isa == "rv32":  # what the scalar kernels treat apart: channel blocks and tails, pixel groups of 4, the
        # depthwise column stream's padding on either side and its stride-2 ends
        c.append(_conv_case(rng, "conv3x3 s2 5x7 -> 3x3 pixels (group tail 1) 9->3", 5, 7, 9, 3, 3, stride=2,
                            padding=(0, 1, 1, 2), act="relu"))
        c.append(_conv_case(rng, "conv1x1 2x3 pixels 6->6 (tail 2)", 2, 3, 6, 6, 1))
        c.append(_conv_case(rng, "conv3x3 pad 2 7->1", 4, 5, 7, 1, 3, padding=2, act="relu6"))
        c.append(_conv_case(rng, "conv2x2 dil(1,2) 11->7 (taps one by one)", 7, 9, 11, 7, 2, dilation=(1, 2),
                            padding=(1, 0, 2, 1)))
        c.append(_conv_case(rng, "conv3x3 64-bit requant tail 3 5->7", 6, 5, 5, 7, 3, padding=1, big_mult=True))
        c.append(_conv_case(rng, "dw3x3 s1 pad 2 both sides 9x11x5", 9, 11, 5, 5, 3, padding=2, depthwise=True))
        c.append(_conv_case(rng, "dw3x3 s1 pad (0,1,2,0) 7x8x3 row strides", 7, 8, 3, 3, 3,
                            padding=(0, 1, 2, 0), in_extra=5, out_extra=3, depthwise=True, act="relu"))
        c.append(_conv_case(rng, "dw3x3 s2 odd width 9x13x6 pad (1,0,0,1)", 9, 13, 6, 6, 3, stride=2,
                            padding=(1, 0, 0, 1), depthwise=True, act="relu6"))
        c.append(_conv_case(rng, "dw3x3 s2 even width 8x10x4 pad 1 no bias", 8, 10, 4, 4, 3, stride=(1, 2),
                            padding=1, depthwise=True, bias=False))
        c.append(_conv_case(rng, "dw3x3 s1 1 row 1x6x4 pad 1", 1, 6, 4, 4, 3, padding=1, depthwise=True))
        c.append(_conv_case(rng, "dw3x3 s2 64-bit requant 7x9x5", 7, 9, 5, 5, 3, stride=2, padding=1,
                            depthwise=True, big_mult=True))
        c.append(_fc_case(rng, "fc 1280->10 (blocks 8 + 2)", 1280, 10))
        c.append(_fc_case(rng, "fc 23->15 (blocks 8 + 4 + 3) batch 2", 23, 15, batch=2, act="relu"))
        c.append(_fc_case(rng, "fc 9->17 64-bit requant (8 + 8 + 1)", 9, 17, big_mult=True))
        # the paired layout (two channels per weight word, FLAG_RV_PAIRS): K odd and even, K = 1, pair blocks of
        # 8/4/2/1 and an odd last channel, lanes at both ends of their range, zero points, clamps
        for n_in, n_out, batch, act in ((1, 2, 1, "none"), (2, 1, 3, "relu"), (1, 33, 2, "relu6"),
                                        (7, 3, 2, "relu"), (64, 15, 1, "relu6"), (65, 16, 2, "none"),
                                        (128, 17, 1, "relu"), (33, 33, 3, "none"), (300, 2, 1, "none")):
            c.append(_fc_extreme_case(rng, f"fc extremes {n_in}->{n_out} batch {batch} {act}", n_in, n_out,
                                      batch=batch, act=act, isa=isa, rv_pairs=n_out > 1))
        c.append(_fc_case(rng, "fc 255->33 relu6 (pairs 8 + 8 + 1)", 255, 33, act="relu6"))
        c.append(_exact_case(rng, "exact fc 31->7 pairs shift 33", "fc", 33, extremes=0.3, n_in=31, n_out=7,
                             batch=5))
    return c


_conv_case_isa, _fc_case_isa, _exact_case_isa = _conv_case, _fc_case, _exact_case
CASES = _all_cases()
MVE_CASES = _all_cases("mve")
RV_CASES = _all_cases("rv32")
HAVE_RISCV = shutil.which("riscv64-unknown-elf-gcc") is not None and shutil.which("qemu-system-riscv32") is not None
needs_riscv = pytest.mark.skipif(not HAVE_RISCV, reason="riscv64-unknown-elf-gcc and qemu-system-riscv32 are not "
                                                        "installed")


def _check(results, cases=CASES):
    bad = []
    for (case, expected), result in zip(cases, results):
        if result.rc != 0:
            bad.append(f"{case.name}: returned {result.rc}")
        elif not np.array_equal(result.output, expected):
            diff = np.nonzero(result.output != expected)[0]
            bad.append(f"{case.name}: {diff.size} bytes differ, first at {diff[0]}")
    assert not bad, "; ".join(bad)


def test_portable_c_on_host_matches_reference(tmp_path):
    _check(run_on_host([case for case, _ in CASES], tmp_path))


@needs_arm
@pytest.mark.parametrize("board, cflags", [
    ("mps2-an500", ()),                       # Cortex-M7, DSP path
    ("mps2-an386", ()),                       # Cortex-M4, DSP path
    ("mps3-an547", ()),                       # Cortex-M55, DSP path
    ("mps2-an500", ("-DEK_NN_PORTABLE",)),    # Cortex-M7, portable C path
    # the depthwise variants a firmware leaves out when no call runs them: their calls fall back, same outputs
    ("mps2-an500", ("-DEK_NN_NO_DW_ROWS=1", "-DEK_NN_NO_DW_CH3X3=1", "-DEK_NN_NO_DW1X3=1", "-DEK_NN_NO_DW5X5=1",
                    "-DEK_NN_NO_DW_PAIRS=1", "-DEK_NN_NO_DW1XK=1")),
    # the pairs layout with only its stride-1 clamp function: the other calls take it or the C loop
    ("mps2-an500", ("-DEK_NN_NO_DWP_S1_NC=1", "-DEK_NN_NO_DWP_S2=1", "-DEK_NN_NO_DWP_S2_NC=1")),
    # no-clamp functions left out (their calls take the clamp ones), both of a pair left out (the C loops), the
    # conv's raw block left out (the portable loop), the FC's raw block left out (its C block loop)
    ("mps2-an500", ("-DEK_NN_NO_DWR_S1_NC=1", "-DEK_NN_NO_DWR_S2=1", "-DEK_NN_NO_DWR_S2_NC=1",
                    "-DEK_NN_NO_DW_CH3X3_NC=1", "-DEK_NN_NO_DW_CH5X5=1", "-DEK_NN_NO_DW_CH5X5_NC=1",
                    "-DEK_NN_NO_GEMM_FAST_NC=1", "-DEK_NN_NO_GEMM_RAW=1", "-DEK_NN_NO_FC_RAW=1",
                    "-DEK_NN_NO_CONV_C1_NC=1")),
    # the clamp functions left out instead, and the conv's fast blocks: raw accumulators, C requantization
    ("mps2-an500", ("-DEK_NN_NO_DWR_S1=1", "-DEK_NN_NO_DW_CH3X3=1", "-DEK_NN_NO_GEMM_FAST=1",
                    "-DEK_NN_NO_GEMM_FAST_NC=1", "-DEK_NN_NO_CONV_C1=1")),
    # the one-channel path's asm loops both left out: its C loop
    ("mps2-an500", ("-DEK_NN_NO_CONV_C1=1", "-DEK_NN_NO_CONV_C1_NC=1")),
], ids=["m7", "m4", "m55", "m7-portable", "m7-dw-variants-left-out", "m7-dw-pairs-functions-left-out",
        "m7-no-clamp-functions-left-out", "m7-clamp-functions-left-out", "m7-c1-asm-left-out"])
def test_firmware_matches_reference(tmp_path, board, cflags):
    _check(run_on_qemu([case for case, _ in CASES], board, tmp_path, extra_cflags=cflags,
                       count_instructions=False))


@needs_arm
def test_helium_kernels_match_reference_on_the_m55(tmp_path):
    # every case again, packed for Helium: conv (im2col and 1x1 in place), depthwise, FC, the vector and the 64-bit
    # requantization, K below, at and beyond 16, channel tails; all bit for bit
    for case, _ in MVE_CASES:  # Helium wherever it applies (depthwise: >= 9 channels, <= 64 taps)
        p = case.layer.params
        applies = case.layer.kind != "depthwise_conv2d" or \
            kp.mve_depthwise_applies(p["kernel_h"] * p["kernel_w"], p["in_c"])
        assert bool(p["flags"] & kp.FLAG_MVE) == applies, case.name
    _check(run_on_qemu([case for case, _ in MVE_CASES], "mps3-an547", tmp_path, count_instructions=False),
           MVE_CASES)


@needs_arm
def test_helium_layout_is_refused_without_mve(tmp_path):
    # a layer packed for Helium handed to a core without MVE (or the portable build) returns EK_NN_ERR_ARG (-2)
    first_fc = next(i for i, (case, _) in enumerate(MVE_CASES) if case.layer.kind == "fully_connected")
    first_dw = next(i for i, (case, _) in enumerate(MVE_CASES) if case.layer.kind == "depthwise_conv2d")
    cases = [case for case, _ in MVE_CASES[:1] + MVE_CASES[first_dw:first_dw + 1] + MVE_CASES[first_fc:first_fc + 1]]
    assert [c.layer.kind for c in cases] == ["conv2d", "depthwise_conv2d", "fully_connected"]
    results = run_on_qemu(cases, "mps2-an500", tmp_path / "m7", count_instructions=False)
    assert [r.rc for r in results] == [-2, -2, -2]
    assert [r.rc for r in run_on_host(cases, tmp_path / "host")] == [-2, -2, -2]


def test_widened_weights_are_refused_where_the_int8_layout_is_read(tmp_path):
    # FLAG_WIDE_WEIGHTS with the 1x1 record stream or nested prefixes (which read the int8 layout) returns
    # EK_NN_ERR_ARG (-2) on the M7 and in the portable build, before it writes anything
    base = next(c for c, _ in CASES if c.name == "conv wide 1x1 2x2x64->64 (a patch tile)")
    stream = dict(base.layer.params, flags=base.layer.params["flags"] | kp.FLAG_1X1_STREAM)
    nested = dict(base.layer.params, weight_block_bytes=64 * 16)
    cases = [dataclasses.replace(base, layer=dataclasses.replace(base.layer, params=p,
                                                                 scratch_bytes=kp.conv2d_scratch_bytes(p)))
             for p in (stream, nested)]
    assert [r.rc for r in run_on_qemu(cases, "mps2-an500", tmp_path / "m7", count_instructions=False)] == [-2, -2]
    assert [r.rc for r in run_on_host(cases, tmp_path / "host")] == [-2, -2]


def _rv_packed(case) -> bool:
    p = case.layer.params
    if case.layer.kind != "depthwise_conv2d":
        return True
    return kp.rv_depthwise_applies(p["kernel_h"], p["kernel_w"], p["stride_w"], p["dilation_h"], p["dilation_w"],
                                   p["out_w"])


def test_scalar_kernels_match_reference_on_host(tmp_path):
    # every case packed for the scalar kernels (isa="rv32": conv, FC, depthwise 3x3 on rows of more than 3 outputs;
    # the other depthwise layers keep the dsp layouts), built with the host compiler
    for case, _ in RV_CASES:
        assert bool(case.layer.params["flags"] & kp.FLAG_RV) == _rv_packed(case), case.name
    _check(run_on_host([case for case, _ in RV_CASES], tmp_path), RV_CASES)


@needs_riscv
def test_scalar_kernels_match_reference_on_rv32imc(tmp_path):
    # the same on the emulated ESP32-C3-class core: the code RISC-V firmware runs, bit for bit
    _check(run_on_qemu([case for case, _ in RV_CASES], "virt-rv32imc", tmp_path, count_instructions=False),
           RV_CASES)


@needs_arm
def test_scalar_layout_is_refused_with_dsp(tmp_path):
    # a layer packed for the scalar kernels handed to a DSP build returns EK_NN_ERR_ARG (-2): its code is not there
    cases = [next(c for c, _ in RV_CASES if c.layer.kind == kind and c.layer.params["flags"] & kp.FLAG_RV)
             for kind in ("conv2d", "depthwise_conv2d", "fully_connected")]
    assert [r.rc for r in run_on_qemu(cases, "mps2-an500", tmp_path, count_instructions=False)] == [-2, -2, -2]


def test_scalar_packing_keeps_one_byte_per_weight_but_paired_fc_and_its_scratch_limit():
    for case, _ in RV_CASES:
        layer = case.layer
        if layer.params["flags"] & kp.FLAG_RV_PAIRS:  # 4 bytes per input and channel pair
            p = layer.params
            assert layer.weights.size == 4 * p["in_features"] * -(-p["out_features"] // 2), case.name
            assert layer.weight_padding_bytes == layer.weights.size - _real_weights(layer), case.name
        elif layer.params["flags"] & kp.FLAG_RV:
            assert layer.weight_padding_bytes == 0 and layer.weights.size == _real_weights(layer), case.name
    w = np.ones((8, 300, 3, 3), dtype=np.int8)  # a 4-pixel tile of 3x3x300 is 10,800 bytes
    with pytest.raises(kp.ScratchLimitError, match="10800"):
        kp.pack_conv2d(w, None, [1 << 30] * 8, [40] * 8, input_shape=(5, 5, 300), x_zp=0, out_zp=0, isa="rv32",
                       scratch_limit_bytes=8192)


def test_scalar_fc_channel_pairs_where_they_pay():
    # two channels per weight word (twice the flash) from 2 channels and RV_FC_PAIRS_MIN_IN inputs on, up to
    # RV_FC_PAIRS_MAX_BYTES paired (mbv2-w035's 1280 -> 1000 classifier keeps one byte per weight)
    def pack(k, n):
        return kp.pack_fully_connected(np.ones((n, k), np.int8), None, [1 << 30] * n, [40] * n, x_zp=0, out_zp=0,
                                       isa="rv32")
    paired = pack(kp.RV_FC_PAIRS_MIN_IN, 33)
    assert paired.params["flags"] & kp.FLAG_RV_PAIRS and paired.scratch_bytes == 0
    assert paired.weights.size == 4 * kp.RV_FC_PAIRS_MIN_IN * 17
    assert paired.weight_padding_bytes == paired.weights.size - kp.RV_FC_PAIRS_MIN_IN * 33
    for k, n in ((kp.RV_FC_PAIRS_MIN_IN - 1, 64), (256, 1)):
        layer = pack(k, n)
        assert not layer.params["flags"] & kp.FLAG_RV_PAIRS and layer.weight_padding_bytes == 0, (k, n)
    assert not kp.rv_fc_pairs_apply(1280, 1000) and kp.rv_fc_pairs_apply(1280, 10)


def _real_weights(layer) -> int:
    p = layer.params
    if layer.kind == "fully_connected":
        return p["in_features"] * p["out_features"]
    if layer.kind == "conv2d":
        return p["out_c"] * p["in_c"] * p["kernel_h"] * p["kernel_w"]
    return p["in_c"] * p["kernel_h"] * p["kernel_w"]


def test_helium_packing_stays_one_byte_per_weight():
    # one byte a weight; a last block of 1-3 channels padded with zero rows to a full block (its kernels' loads)
    for case, _ in MVE_CASES:
        layer, p = case.layer, case.layer.params
        if layer.kind != "depthwise_conv2d" and p["flags"] & kp.FLAG_MVE:
            cout, k = (p["out_c"], p["in_c"] * p["kernel_h"] * p["kernel_w"]) if layer.kind == "conv2d" else \
                (p["out_features"], p["in_features"])
            assert layer.weights.dtype == np.int8 and layer.weights.size == -(-cout // 4) * 4 * k, case.name
            assert layer.weight_padding_bytes == -cout % 4 * k, case.name


def test_accumulator_probes_are_mostly_unclamped():
    # the exactness probes only mean something if most outputs are not clamped
    for case, expected in CASES:
        if case.name.startswith("exact"):
            inside = np.mean((expected > -128) & (expected < 127))
            assert inside > 0.4, f"{case.name}: only {inside:.0%} of outputs unclamped"


def _c_struct_int_fields(struct_name: str) -> list[str]:
    import re
    from kernel_harness import KERNEL_DIR
    header = (KERNEL_DIR / "ek_nn_s8.h").read_text()
    body = re.search(r"typedef struct \{((?:(?!typedef).)*?)\} " + struct_name + ";", header, re.S).group(1)
    fields = []
    for line in body.splitlines():
        line = line.split("/*")[0].strip()
        if line.startswith("int32_t "):
            fields += [f.strip() for f in line[len("int32_t "):].rstrip(";").split(",")]
    return fields


def test_param_fields_match_the_c_structs():
    assert list(kp.CONV_FIELDS) == _c_struct_int_fields("ek_conv_params_t")
    assert list(kp.FC_FIELDS) == _c_struct_int_fields("ek_fc_params_t")
    for case, _ in CASES:
        fields = kp.FC_FIELDS if case.layer.kind == "fully_connected" else kp.CONV_FIELDS
        assert tuple(case.layer.params) == fields


def test_channels_asm_covers_the_pixels_it_runs():
    """dw_channels_asm_covers (the estimate's choice of the asm pixel kernels' cost) as the C dispatch: 3x3 or 5x5
    with 2-3 taps a side inside the map at every pixel, fast requantization, 4 channels or more."""
    rng = np.random.default_rng(5)

    def covers(h, w, c, k, **kw):
        case, _ = _conv_case(rng, "v", h, w, c, c, k, depthwise=True, layout="channels", **kw)
        return kp.dw_channels_asm_covers(case.layer.params)

    assert covers(3, 3, 256, 3, padding=1) and covers(6, 6, 8, 3, stride=2, padding=1)
    assert covers(3, 3, 576, 5, padding=2) and covers(2, 2, 16, 5, padding=2)
    assert not covers(6, 6, 24, 5, stride=2, padding=2)   # 3-5 taps a side: the C loop
    assert not covers(1, 4, 16, 3, padding=1)             # a 1-row map: 1 tap a column (the C loop)
    assert not covers(4, 4, 3, 3, padding=1)              # fewer than 4 channels
    assert not covers(6, 6, 8, 3, padding=2, dilation=2)
    # its estimate (kernel_pack.dw_channels_instructions) follows the taps inside the map: a 3x3 map's border
    # pixels (49 of its 81 taps inside) cost less than its interior
    full = kp.dw_channels_instructions(1, 1, 3, 3, 256, 5, 5, 0, 0)
    padded = kp.dw_channels_instructions(1, 1, 3, 3, 256, 3, 3, 1, 1)
    assert padded < full and kp.dw_channels_terms(1, 1, 3, 3, 256, 3, 3, 1, 1)[2] == 64 * 49


def test_depthwise_layout_follows_the_measured_cost():
    """The DSP cores pick the 3x3 depthwise layout with the lowest measured instruction count (M7,
    bench/dw_layout_fit.py): rows on wide maps (also at stride 2 from 72x72x48: 2.90 against 3.23 per MAC), pairs on
    mid-sized maps at stride 1 (9x9x144: 2.67 against 2.75 channels-last), channels-last on the small ones, whose
    border pixels run only their taps inside the map (6x6x128: 2.65 against 2.67 pairs; 3x3x256 2.27 against 4.31),
    and on most stride-2 ones; tall, narrow maps on their transposed view."""
    def layout(h_out_w, c, s=1, isa="dsp", out_h=None):
        return kp.depthwise_layout(3, 3, s, 1, 1, h_out_w, c, stride_h=s, isa=isa, out_h=out_h)
    assert layout(36, 48, s=2) == "rows"
    assert layout(24, 96) == "rows" and layout(72, 8) == "rows" and layout(48, 8, s=2) == "rows"
    assert layout(9, 16) == "pairs" and layout(13, 144) == "pairs" and layout(9, 144) == "pairs"
    # the keyword CNN's 25x5x64: pairs on the transposed map (2.39 per MAC against 2.84 channels-last)
    assert layout(6, 128) == "channels" and layout(5, 64, out_h=25) == "pairs_t"
    assert layout(25, 64, out_h=5) == "pairs"    # the same map lying down: its own orientation
    assert layout(3, 256) == "channels" and layout(5, 336, s=2) == "channels" and layout(3, 128, s=2) == "channels"
    # 5x5: rows, but channels-last on maps of at most 3 (most taps in the padding: 3x3x576 2.60 against 4.84 per MAC)
    assert kp.depthwise_layout(5, 5, 1, 1, 1, 3, 576) == "channels" and kp.depthwise_layout(5, 5, 1, 1, 1, 5, 96) == \
        "rows"
    assert kp.depthwise_layout(5, 5, 1, 1, 1, 6, 144) == "rows" and kp.depthwise_layout(5, 5, 1, 1, 1, 12, 72) == "rows"
    assert kp.depthwise_layout(5, 5, 2, 1, 1, 6, 288, stride_h=2) == "rows"  # 2.00-3.5 against 4.3-4.7
    assert kp.depthwise_layout(5, 5, 2, 1, 1, 3, 240, stride_h=2) == "channels"
    # every DSP-layout choice is the cheapest of the estimates, and pairs only where its plane fits its cap
    for w in range(1, 40):
        for c in (4, 8, 16, 37, 48, 96, 144):
            for s in (1, 2):
                cost = kp.depthwise3x3_layer_instructions(s, s, w, w, c)
                assert layout(w, c, s) == min(cost, key=cost.get)
                assert ("pairs" in cost) == (w >= 2 and kp.dw_pairs_plane_bytes(w, w, s, s) <= kp.DW_PAIRS_MAX_SCRATCH)
    # the other cores keep the fixed thresholds (no measurements of these kernels there)
    assert layout(36, 48, s=2, isa="mve") == "channels" and layout(9, 16, isa="mve") == "rows"
    assert layout(6, 128, isa="rv32") == "channels"


def test_scratch_formula_matches_c():
    # the runner refuses to run a case whose scratch size differs from the C formula; check the Python side is
    # exact for a few sizes by hand-computed values too
    layer = CASES[0][0].layer  # 3x3, 16 -> 32, tile 32, weights cached
    k_pairs = 3 * (3 * 16 // 2)
    expected = 16 * (k_pairs + 1) * 8 + 8 * k_pairs * 16 + 16 * 32 + 32 * 8 + 3 * 48
    assert kp.scratch_bytes(layer) == layer.scratch_bytes == expected


def test_small_1x1_runs_as_a_record_stream_where_it_applies():
    # the DSP packing picks the record stream for 1x1 with 8 or 16 input channels, the fast requant form and the
    # full int8 range (so the cases above exercise it), and the tile GEMM otherwise
    stream = {c.name: bool(c.layer.params["flags"] & kp.FLAG_1X1_STREAM) for c, _ in CASES if c.layer.kind == "conv2d"}
    assert stream["conv1x1 stream 8->48"] and stream["conv1x1 stream 16->13 row strides no bias"]
    assert stream["conv1x1 stream s2 8->10 zero-mult channel"] and stream["exact conv1x1 stream 8->11 shift 33"]
    assert not stream["conv1x1 8->12 relu6 (clamped: the tile GEMM)"]
    assert not stream["exact conv1x1 stream 16->9 shift 31"]  # the 64-bit requant form
    assert not stream["conv1x1 32->64"] and not stream["conv3x3 3->8 s2 pad 1 row strides (first layer)"]
    # one record per channel and one widened block, within the scratch the tile layout would take (plans size the
    # arena before the scales decide the stream)
    layer = next(c.layer for c, _ in CASES if c.name == "conv1x1 stream 16->22")
    tiles = kp.conv2d_scratch_bytes(dict(layer.params, flags=layer.params["flags"] & ~kp.FLAG_1X1_STREAM))
    assert 22 * (8 + 4) * 4 + 8 * 16 <= layer.scratch_bytes == tiles
    assert not any(c.layer.params["flags"] & kp.FLAG_1X1_STREAM for c, _ in MVE_CASES + RV_CASES
                   if c.layer.kind == "conv2d")


def test_conv_as_fc_rows_where_the_tile_gemm_is_slow_or_does_not_fit():
    """FLAG_CONV_FC is packed with int8 weights in the FC layout and taken by default where the fitted M7 costs say
    it is cheaper (bench/conv_fc_fit.py: a 4x4x128 conv whose GEMM gets a 2-pixel tile in 16 KiB, 0.93 against
    1.24 instructions per MAC) or where no im2col tile fits the scratch limit."""
    fc_cases = [c.layer for c, _ in CASES if c.name.startswith("conv fc ")]
    assert len(fc_cases) == 7 and all(layer.params["flags"] & kp.FLAG_CONV_FC for layer in fc_cases)
    for layer in fc_cases:
        p = layer.params
        assert layer.scratch_bytes == 3 * kp._ceil(p["kernel_h"] * p["kernel_w"] * p["in_c"], 4)
    rng = np.random.default_rng(5)

    def pack(h, cin, cout, limit):
        w = rng.integers(-127, 128, (cout, cin, 3, 3), dtype=np.int8)
        return kp.pack_conv2d(w, None, [1 << 30] * cout, [40] * cout, input_shape=(h, h, cin), x_zp=3, out_zp=0,
                              padding=1, scratch_limit_bytes=limit)

    assert pack(4, 128, 128, 16 * 1024).params["flags"] & kp.FLAG_CONV_FC            # the GEMM: 2-pixel tiles
    assert not pack(16, 16, 16, 16 * 1024).params["flags"] & kp.FLAG_CONV_FC          # the GEMM: 32-pixel tiles
    assert pack(8, 64, 64, 4096).params["flags"] & kp.FLAG_CONV_FC                    # no im2col tile fits 4 KiB
    with pytest.raises(kp.ScratchLimitError):
        pack(8, 64, 64, 1000)                                                          # nor one window
    # the planners' scratch estimate follows the same choice
    from edgekit.targets.mcu import ek_kernels

    with ek_kernels.conv_scratch_limit(4096):
        assert ek_kernels._scratch_estimate("conv2d", ((3, 3), 64, 64, 1, (1, 1), (1, 1), (1, 1)), (8, 8),
                                            "dsp") == 3 * 576


def test_wide_weights_where_they_pay():
    """FLAG_WIDE_WEIGHTS stores the tile GEMM's weights as the weight cache's int16 pairs (the cases above run them
    bit-exact): no cache in scratch and nothing widened per call. Taken by default (wide_weights=None) where each
    weight would otherwise be widened WIDE_WEIGHTS_MIN_SAVED times an inference or more (per im2col tile, or per call
    of a patch tile), within WIDE_WEIGHTS_MAX_BYTES and never in more scratch than the int8 layout's choice; not for
    the record stream or nested tap runs."""
    wide = [c.layer for c, _ in CASES if c.name.startswith("conv wide ")]
    assert len(wide) == 5 and all(layer.params["flags"] & kp.FLAG_WIDE_WEIGHTS for layer in wide)
    rng = np.random.default_rng(8)
    weights = {}

    def pack(h, w, cin, cout, k, **kw):
        wt = weights.setdefault((cin, cout, k), rng.integers(-127, 128, (cout, cin, k, k), dtype=np.int8))
        return kp.pack_conv2d(wt, None, [1 << 30] * cout, [40] * cout, input_shape=(h, w, cin), x_zp=3, out_zp=0,
                              padding=k // 2, **kw)

    plain = pack(6, 5, 16, 10, 3, wide_weights=False, tile_pixels=4, cache_all_weights=False)
    forced = pack(6, 5, 16, 10, 3, wide_weights=True, tile_pixels=4)
    # the widened layout: per block of 4 channels and reduction pair, channel c's (k0, k1) as one int16 pair; the
    # last block's missing channels are zeros (what ek__widen4 / ek__widen_partial make of the int8 layout)
    k_pairs = kp.conv_k_pairs(plain.params)
    w16 = forced.weights.view("<i2").reshape(3, k_pairs, 4, 2)
    i8 = plain.weights
    full = i8[:2 * k_pairs * 8].reshape(2, k_pairs, 2, 2, 2)  # [block][pair][c_hi][k][c_lo]
    assert np.array_equal(w16[:2], full.transpose(0, 1, 2, 4, 3).reshape(2, k_pairs, 4, 2))
    tail = i8[2 * k_pairs * 8:].reshape(k_pairs, 2, 2)  # [pair][c][k]: channels 8, 9
    assert np.array_equal(w16[2, :, :2], tail) and not w16[2, :, 2:].any()
    assert forced.scratch_bytes == plain.scratch_bytes - k_pairs * 16 and forced.weights.size == 3 * k_pairs * 16
    # by default: a 2x2 patch tile's 1x1 of a 12x12 map (36 calls, each widening all 4096 weights) takes it in no
    # more scratch, not the same call as a whole 2x2 map (widened once); nor a whole map with its weights cached, a
    # layer beyond WIDE_WEIGHTS_MAX_BYTES, the record stream
    tile = pack(2, 2, 64, 64, 1, wide_weights=None, scratch_limit_bytes=4096, layer_pixels=144)
    assert tile.params["flags"] & kp.FLAG_WIDE_WEIGHTS
    assert not pack(2, 2, 64, 64, 1, wide_weights=None, scratch_limit_bytes=4096).params["flags"] & \
        kp.FLAG_WIDE_WEIGHTS
    assert tile.scratch_bytes <= pack(2, 2, 64, 64, 1, wide_weights=False, scratch_limit_bytes=4096).scratch_bytes
    assert not pack(16, 16, 16, 16, 3, wide_weights=None, scratch_limit_bytes=16384).params["flags"] & \
        kp.FLAG_WIDE_WEIGHTS
    assert not pack(4, 4, 64, 64, 3, wide_weights=None, scratch_limit_bytes=4096, layer_pixels=1024).params[
        "flags"] & kp.FLAG_WIDE_WEIGHTS  # 36,864 weights
    assert not pack(8, 8, 16, 8, 1, wide_weights=None, scratch_limit_bytes=4096).params["flags"] & \
        kp.FLAG_WIDE_WEIGHTS  # the record stream
    with pytest.raises(UsageError, match="tap runs"):
        pack(6, 6, 8, 8, 3, wide_weights=True, tap_runs=True)
    # a planner's grant (wide_room, checked against its arena after packing): a 32-channel 3x3 row tile runs as FC
    # rows in the int8 layouts' 4 KB (one pixel's window, 864 B) and takes the widened GEMM in 2,712 B, no more
    fc = pack(6, 4, 32, 32, 3, wide_weights=None, scratch_limit_bytes=4096, layer_pixels=256)
    assert fc.params["flags"] & kp.FLAG_CONV_FC and fc.scratch_bytes == 3 * 288
    granted = pack(6, 4, 32, 32, 3, wide_weights=None, scratch_limit_bytes=4096, layer_pixels=256, wide_room=2712)
    assert granted.params["flags"] & kp.FLAG_WIDE_WEIGHTS and not granted.params["flags"] & kp.FLAG_CONV_FC
    assert 2 * 288 * 2 <= granted.scratch_bytes <= 2712
    assert kp.conv2d_tile_instructions(granted.params) < kp.conv2d_fc_instructions(fc.params)
    forced = pack(6, 4, 32, 32, 3, wide_weights=True, conv_fc=False, scratch_limit_bytes=4096, wide_room=2712)
    assert forced.scratch_bytes <= 2712  # a later tile that keeps the first one's layout stays within the grant too


def test_fc_rows_are_offered_the_scratch_where_the_gemm_beats_them():
    """conv2d_gemm_scratch: the least scratch with which the default layout is the tile GEMM, not FC rows (a 576-deep
    3x3 conv: the GEMM's smallest tile re-widens each weight every 2 pixels and loses to FC rows)."""
    rng = np.random.default_rng(9)
    w = rng.integers(-127, 128, (64, 64, 3, 3), dtype=np.int8)
    fc = kp.pack_conv2d(w, None, [1 << 30] * 64, [40] * 64, input_shape=(8, 8, 64), x_zp=3, out_zp=0, padding=1,
                        scratch_limit_bytes=4096)
    assert fc.params["flags"] & kp.FLAG_CONV_FC
    need = kp.conv2d_gemm_scratch(fc.params, 32 * 1024)
    smallest = kp.conv2d_scratch_bytes(dict(fc.params, tile_pixels=2, flags=kp.FLAG_BIAS_PER_BLOCK))
    assert need is not None and need > smallest
    assert not kp.conv2d_layout(dict(fc.params, tile_pixels=0, flags=0), need)["flags"] & kp.FLAG_CONV_FC
    assert kp.conv2d_layout(dict(fc.params, tile_pixels=0, flags=0), need - 1)["flags"] & kp.FLAG_CONV_FC
    assert kp.conv2d_gemm_scratch(fc.params, need - 1) is None


def test_biases_per_block_when_scratch_is_short():
    layer = next(c.layer for c, _ in CASES if c.name == "conv1x1 24->46 biases per block")
    assert layer.params["flags"] & kp.FLAG_BIAS_PER_BLOCK and layer.scratch_bytes <= 500
    full = kp.conv2d_scratch_bytes(dict(layer.params, flags=layer.params["flags"] & ~kp.FLAG_BIAS_PER_BLOCK))
    assert full - layer.scratch_bytes == 32 * (12 - 1)  # 12 blocks of 4 channels, one slot kept


def test_packed_weights_stay_one_byte_each():
    for case, _ in CASES:
        layer = case.layer
        assert layer.weights.dtype == np.int8
        assert layer.weight_padding_bytes >= 0
        p = layer.params
        if layer.kind == "fully_connected":
            real = p["in_features"] * p["out_features"]
        elif layer.kind == "conv2d":
            real = p["out_c"] * p["in_c"] * p["kernel_h"] * p["kernel_w"]
        else:
            real = p["in_c"] * p["kernel_h"] * p["kernel_w"]
        assert layer.weights.size == real + layer.weight_padding_bytes


def test_packer_rejects_what_the_kernels_cannot_do():
    w = np.zeros((4, 4, 3, 3), dtype=np.int8)
    w[0, 0, 0, 0] = -128
    with pytest.raises(UnsupportedError, match="-128"):
        kp.pack_conv2d(w, None, [1 << 30] * 4, [40] * 4, input_shape=(5, 5, 4), x_zp=0, out_zp=0)
    with pytest.raises(UsageError, match="shift"):
        kp.pack_fully_connected(np.zeros((2, 3), np.int8), None, [1 << 30] * 2, [63] * 2, x_zp=0, out_zp=0)
    with pytest.raises(UnsupportedError, match="multiplier 1"):
        kp.pack_depthwise_conv2d(np.zeros((4, 2, 3, 3), np.int8), None, 1 << 30, 40, input_shape=(5, 5, 4),
                                 x_zp=0, out_zp=0)


def _torch_conv_requant(x_q, x_scale, x_zp, w_q, w_scale, b_q, out_scale, out_zp, stride, dilation, padding, groups):
    torch = pytest.importorskip("torch")
    xf = torch.tensor((x_q.astype(np.float64) - x_zp) * x_scale).permute(0, 3, 1, 2)
    wf = torch.tensor(w_q.astype(np.float64) * w_scale[:, None, None, None])
    bf = torch.tensor(b_q.astype(np.float64) * x_scale * w_scale)
    pt, pb, pl, pr = padding
    xf = torch.nn.functional.pad(xf, (pl, pr, pt, pb))  # padding of zeros = the zero point
    y = torch.nn.functional.conv2d(xf, wf, bf, stride=stride, dilation=dilation, groups=groups)
    q = np.round(y.permute(0, 2, 3, 1).numpy() / out_scale) + out_zp
    return np.clip(q, -128, 127).astype(np.int8)


@pytest.mark.parametrize("groups_kind", ["dense", "depthwise"])
def test_reference_conv_matches_float_conv_within_one_lsb(groups_kind):
    rng = np.random.default_rng(7)
    n, h, w, cin = 2, 13, 11, 6
    cout = cin if groups_kind == "depthwise" else 10
    groups = cin if groups_kind == "depthwise" else 1
    kh, kw = 3, 3
    x_q = rng.integers(-128, 128, (n, h, w, cin), dtype=np.int8)
    w_q = rng.integers(-127, 128, (cout, cin // groups, kh, kw), dtype=np.int8)
    x_scale, x_zp = 0.02, 5
    w_scale = rng.uniform(0.002, 0.01, cout)
    b_q = rng.integers(-3000, 3000, cout).astype(np.int32)
    out_scale, out_zp = 0.05, -7
    stride, dilation, padding = (2, 1), (1, 2), (1, 2, 2, 0)
    mult, shift = qmath.quantize_multipliers(x_scale * w_scale / out_scale)
    got = intref.conv2d(x_q, w_q, b_q, x_zp=x_zp, mult=mult, shift=shift, out_zp=out_zp, stride=stride,
                        dilation=dilation, padding=padding, groups=groups)
    want = _torch_conv_requant(x_q, x_scale, x_zp, w_q, w_scale, b_q, out_scale, out_zp, stride, dilation, padding,
                               groups)
    assert got.shape == want.shape
    assert np.abs(got.astype(int) - want.astype(int)).max() <= 1


def test_reference_fully_connected_matches_float_within_one_lsb():
    rng = np.random.default_rng(8)
    x_q = rng.integers(-128, 128, (5, 40), dtype=np.int8)
    w_q = rng.integers(-127, 128, (12, 40), dtype=np.int8)
    w_scale = rng.uniform(0.002, 0.01, 12)
    b_q = rng.integers(-3000, 3000, 12).astype(np.int32)
    x_scale, x_zp, out_scale, out_zp = 0.03, -3, 0.08, 11
    mult, shift = qmath.quantize_multipliers(x_scale * w_scale / out_scale)
    got = intref.fully_connected(x_q, w_q, b_q, x_zp=x_zp, mult=mult, shift=shift, out_zp=out_zp)
    y = ((x_q.astype(np.float64) - x_zp) * x_scale) @ (w_q * w_scale[:, None]).T + b_q * x_scale * w_scale
    want = np.clip(np.round(y / out_scale) + out_zp, -128, 127)
    assert np.abs(got.astype(int) - want).max() <= 1


# ---- nested weights: a narrower operating point reads a prefix of the wider layer's packed weights ----------------

def _nested_case(rng, name, kind, full_out, full_in, sub_out, sub_in, k=3, h=6, w=5, padding=1, stride=1,
                 layout="auto"):
    """The narrow layer's call with its struct pointing into the wide layer's packed weights (kernel_pack.nested_view),
    and what edgekit.intref computes for the narrow layer alone."""
    mult_full = np.asarray(qmath.quantize_multipliers(rng.uniform(0.3, 1.5, full_out) / 2000)[0])
    shift_full = np.asarray(qmath.quantize_multipliers(rng.uniform(0.3, 1.5, full_out) / 2000)[1])
    x_zp, out_zp = int(rng.integers(-20, 20)), int(rng.integers(-20, 20))
    if kind == "fc":
        wt = rng.integers(-127, 128, (full_out, full_in), dtype=np.int8)
        b = rng.integers(-2000, 2000, full_out).astype(np.int32)
        x = rng.integers(-128, 128, (1, sub_in), dtype=np.int8)
        pack = functools.partial(kp.pack_fully_connected, x_zp=x_zp, out_zp=out_zp)
        full = pack(wt, b, mult_full, shift_full)
        sub = pack(wt[:sub_out, :sub_in], b[:sub_out], mult_full[:sub_out], shift_full[:sub_out])
        ref = intref.fully_connected(x, wt[:sub_out, :sub_in], b[:sub_out], x_zp=x_zp, mult=mult_full[:sub_out],
                                     shift=shift_full[:sub_out], out_zp=out_zp)
    else:
        dw = kind == "dw"
        wt = rng.integers(-127, 128, (full_out, 1 if dw else full_in, k, k), dtype=np.int8)
        b = rng.integers(-2000, 2000, full_out).astype(np.int32)
        x = rng.integers(-128, 128, (h, w, sub_in), dtype=np.int8)
        common = dict(x_zp=x_zp, out_zp=out_zp, stride=stride, padding=padding)
        if dw:
            pack = functools.partial(kp.pack_depthwise_conv2d, layout=layout, **common)
            sub_w = wt[:sub_out]
        else:
            pack = functools.partial(kp.pack_conv2d, tap_runs=True, **common)
            sub_w = wt[:sub_out, :sub_in]
        full = pack(wt, b, mult_full, shift_full, input_shape=(h, w, full_in))
        sub = pack(sub_w, b[:sub_out], mult_full[:sub_out], shift_full[:sub_out], input_shape=(h, w, sub_in))
        ref = intref.conv2d(x, sub_w, b[:sub_out], mult=mult_full[:sub_out], shift=shift_full[:sub_out],
                            groups=sub_in if dw else 1, **common)
    view = kp.nested_view(full, sub)
    assert view is not None, name
    layer = dataclasses.replace(sub, params={**sub.params, **view}, weights=full.weights)
    return Case(name, layer, x.reshape(-1), ref.size), ref.reshape(-1)


def _nested_cases():
    rng = np.random.default_rng(18)
    return [
        _nested_case(rng, "nested conv3x3 32x16 -> 16x8", "conv", 32, 16, 16, 8),
        _nested_case(rng, "nested conv3x3 24x12 -> 8x4 s2", "conv", 24, 12, 8, 4, stride=2, h=7, w=7),
        _nested_case(rng, "nested conv3x3 10 out (compact block) 16 -> 8 in", "conv", 10, 16, 10, 8),
        _nested_case(rng, "nested conv1x1 64x32 -> 32x16", "conv", 64, 32, 32, 16, k=1, padding=0),
        _nested_case(rng, "nested conv 10x4 first layer 1 ch, 64 -> 16 out", "conv", 64, 1, 16, 1, k=3, h=9, w=6),
        _nested_case(rng, "nested fc 12x64 -> 12x32", "fc", 12, 64, 12, 32),
        _nested_case(rng, "nested fc 10x64 -> 10x16 (compact block)", "fc", 10, 64, 10, 16),
        _nested_case(rng, "nested fc 64x128 -> 32x64", "fc", 64, 128, 32, 64),
        _nested_case(rng, "nested dw rows 32 -> 8", "dw", 32, 32, 8, 8, h=12, w=14, layout="rows"),
        _nested_case(rng, "nested dw channels 64 -> 16", "dw", 64, 64, 16, 16, h=5, w=5, layout="channels"),
        _nested_case(rng, "nested dw pairs_t 64 -> 16 (25x5)", "dw", 64, 64, 16, 16, h=25, w=5, layout="pairs_t"),
        _nested_case(rng, "nested dw rows_t 32 -> 12 (20x6)", "dw", 32, 32, 12, 12, h=20, w=6, layout="rows_t"),
    ]


NESTED_CASES = _nested_cases()


def test_nested_weights_on_host_match_reference(tmp_path):
    assert all(c.layer.params.get("weight_block_bytes", 0) for c, _ in NESTED_CASES[:8])  # strided, not copies
    _check(run_on_host([case for case, _ in NESTED_CASES], tmp_path), NESTED_CASES)


@needs_arm
def test_nested_weights_on_m7_match_reference(tmp_path):
    _check(run_on_qemu([case for case, _ in NESTED_CASES], "mps2-an500", tmp_path, count_instructions=False),
           NESTED_CASES)


def test_depthwise_code_variants_follow_the_packing():
    """Which parts of the depthwise code a call runs (what firmware_cflags keeps): as the C dispatch decides."""
    rng = np.random.default_rng(3)

    def variants(h, w, c, k, **kw):
        case, _ = _conv_case(rng, "v", h, w, c, c, k, depthwise=True, **kw)
        return kp.depthwise_code_variants(case.layer.params)

    assert variants(16, 16, 8, 3, padding=1, layout="rows") == {"rows", "rows_s1_nc"}
    assert variants(16, 16, 8, 3, padding=1, layout="rows", stride=2, act="relu") == {"rows", "rows_s2"}
    assert variants(16, 16, 8, 3, padding=1, layout="channels") == {"channels", "ch3x3_nc"}
    assert variants(16, 16, 8, 3, padding=1, layout="channels", act="relu") == {"channels", "ch3x3"}
    assert variants(3, 3, 8, 5, padding=2, layout="channels") == {"channels", "ch5x5_nc"}
    # channels-last without its asm (dilated, 64-bit requantization): its C path, which nothing else replaces
    assert variants(10, 9, 6, 5, dilation=2, padding=4, layout="channels") == {"channels"}
    assert variants(8, 8, 8, 3, padding=1, layout="channels", big_mult=True) == {"channels"}
    # the rows layout where no row kernel applies: the generic ring path (what -DEK_NN_NO_DW_RING would leave out)
    assert variants(8, 8, 8, 3, padding=1, layout="rows", big_mult=True) == {"ring"}
    assert variants(12, 11, 6, 3, dilation=2, padding=2, layout="rows") == {"ring"}
    assert variants(9, 9, 8, (3, 5), padding=(1, 1, 2, 2), layout="rows") == {"ring"}
    assert variants(6, 6, 8, 3, padding=1, layout="pairs") == {"pairs", "pairs_s1_nc"}
    assert variants(6, 6, 8, 3, padding=1, layout="pairs", stride=2, act="relu") == {"pairs", "pairs_s2"}
    assert variants(6, 1, 8, 3, padding=1, layout="pairs") == {"pairs"}        # one output a row: the C loop
    assert variants(13, 4, 8, 3, padding=1, layout="pairs_t") == {"pairs", "pairs_s1_nc"}
    assert variants(14, 5, 8, 3, padding=1, layout="pairs_t", stride=(2, 1)) == {"pairs", "pairs_s2_nc"}
    assert variants(14, 5, 8, 3, padding=1, layout="rows_t", stride=(2, 1), act="relu") == {"rows", "rows_s2"}
    assert variants(9, 11, 7, (1, 3), padding=(0, 0, 1, 1)) == {"rows", "1x3"}
    assert variants(8, 8, 9, (3, 1), padding=(1, 1, 0, 0)) == {"rows", "1x3"}
    assert variants(12, 13, 6, 5, padding=2) == {"rows", "5x5"}
    assert variants(30, 1, 8, (9, 1), padding=(4, 4, 0, 0)) == {"rows", "1xk"}      # a Conv1d: Kx1 transposed
    assert variants(3, 12, 8, (1, 4), padding=(0, 0, 1, 2)) == {"rows", "1xk"}
    assert variants(3, 12, 8, (1, 4), padding=(0, 0, 1, 2), layout="channels") == {"channels"}
    assert variants(12, 11, 6, 5, dilation=2, padding=4) == {"channels"}   # dilated: channels-last, its C loop
    assert variants(9, 9, 16, 3, padding=1, isa="mve") == set()                 # Helium: its own code


def test_tall_maps_run_depthwise_on_the_transposed_map():
    """A keyword CNN's 25x5 depthwise is priced and packed on the transposed map (5x25: rows of 25 outputs), its
    kernels stored transposed; a square map keeps its own orientation; ``transposed=False`` prices only the map's own
    orientation."""
    rng = np.random.default_rng(5)
    case, _ = _conv_case(rng, "kws", 25, 5, 64, 64, 3, padding=1, depthwise=True, act="relu")
    p = case.layer.params
    assert case.layer.notes["layout"] == "pairs_t" and p["flags"] & kp.FLAG_DW_TRANSPOSED
    assert (p["in_h"], p["in_w"], p["out_h"], p["out_w"]) == (25, 5, 25, 5)          # the layer's own geometry
    view = kp.dw_view(p)
    assert (view["in_h"], view["in_w"], view["pad_top"], view["pad_left"]) == (5, 25, 1, 1)
    assert kp.depthwise_conv2d_scratch_bytes(p) == kp.dw_pairs_plane_bytes(5, 25, 1, 1)
    cost = kp.depthwise3x3_layer_instructions(1, 1, 25, 5, 64, (25, 5, 1, 1))
    assert cost["pairs_t"] < min(cost["channels"], cost["pairs"], cost["rows"])
    square, _ = _conv_case(rng, "sq", 12, 12, 64, 64, 3, padding=1, depthwise=True)
    assert not square.layer.params["flags"] & kp.FLAG_DW_TRANSPOSED
    assert "pairs_t" not in kp.depthwise3x3_layer_instructions(1, 1, 25, 5, 64, transposed=False)


def test_one_channel_3x3_convs_take_the_c1_path():
    """A 3x3 conv of one input channel runs the one-channel path on the DSP cores (a 9-word record per output
    channel, no scratch, the packed layer's scratch as the planner's estimate); fewer taps, dilation, more channels,
    an explicit tile, the other ISAs keep their layouts."""
    from edgekit.targets.mcu import ek_kernels

    rng = np.random.default_rng(5)

    def flags(h, w, cin, k, **kw):
        case, _ = _conv_case(rng, "c", h, w, cin, 8, k, padding=1, **kw)
        return case.layer

    c1 = flags(8, 8, 1, 3)
    assert c1.params["flags"] & kp.FLAG_CONV_C1 and c1.scratch_bytes == 0 and c1.bias is None
    assert c1.weights.size == 8 * kp.C1_RECORD_WORDS * 4
    assert kp.gemm_code_variants("ek_conv", c1.params) == {"conv_c1_path", "conv_c1_nc"}
    assert kp.gemm_code_variants("ek_conv", flags(8, 8, 1, 3, act="relu").params) == {"conv_c1_path", "conv_c1"}
    assert kp.gemm_code_variants("ek_conv", flags(8, 8, 1, 3, big_mult=True).params) == {"conv_c1_path"}
    for layer in (flags(8, 8, 1, (1, 3)), flags(8, 8, 1, 3, dilation=2), flags(8, 8, 2, 3),
                  flags(8, 8, 1, 3, tile_pixels=4), flags(8, 8, 1, 3, isa="rv32"), flags(8, 8, 1, 3, isa="mve")):
        assert not layer.params["flags"] & kp.FLAG_CONV_C1
    with pytest.raises(UsageError, match="conv_c1 applies to one input channel"):
        flags(8, 8, 2, 3, conv_c1=True)
    node = type("N", (), {"op": "conv2d", "shape": (1, 8, 8, 8), "attrs": dict(
        kernel_size=(3, 3), in_channels=1, out_channels=8, groups=1, dilation=(1, 1), stride=(1, 1),
        padding=(1, 1))})()
    assert ek_kernels.scratch_estimate(node) == 0


def test_block_kernel_and_loop_variants_follow_the_packing():
    """Which of the conv's and FC's asm block kernels and of the add's and pool's optional loops a call may run (what
    firmware_cflags keeps): as the C dispatch decides."""
    rng = np.random.default_rng(4)

    def conv(cout, **kw):
        case, _ = _conv_case(rng, "v", 8, 8, 8, cout, 3, padding=1, **kw)
        return kp.gemm_code_variants("ek_conv", case.layer.params)

    def fc(**kw):
        case, _ = _fc_case(rng, "v", 32, 8, **kw)
        return kp.gemm_code_variants("ek_fc", case.layer.params)

    assert conv(8) == {"gemm_fast_nc"}
    assert conv(8, act="relu6") == {"gemm_fast"}
    assert conv(6) == {"gemm_fast_nc", "gemm_raw"}            # a last block of 2 channels: raw accumulators
    assert conv(8, big_mult=True) == {"gemm_raw"}             # no fast requantization
    assert conv(8, isa="mve") == set()                        # Helium: its own code,
    assert conv(6, isa="mve") == {"mve_part"}                 # its kernels of a last block of 2 channels
    assert conv(6, isa="mve", big_mult=True) == set()         # (no vector requantization: the C loop)
    assert fc() == set() and fc(big_mult=True) == {"fc_raw"}

    def add(a_mult, b_mult, act_min=-128):
        layer = kp.pack_add(64, a_zp=3, b_zp=-5, a_mult=a_mult, b_mult=b_mult, shift=30, out_zp=1, act_min=act_min)
        return kp.elementwise_code_variants("ek_add", layer.params)

    assert add(3 << 24, 5 << 23) == {"add4s"}                 # low 16 bits 0: one SMLAD an element
    assert add((3 << 24) + 7, 5 << 23, act_min=1) == {"add4_clamp"}

    def pool(h, c):
        layer = kp.pack_pool("avg", in_hwc=(h, h, c), out_hw=(1, 1), kernel=(h, h), stride=(1, 1), x_zp=-3,
                             out_zp=2, mult=1 << 20, shift=20 + int(np.ceil(np.log2(h * h))))
        return kp.elementwise_code_variants("ek_pool", layer.params)

    assert pool(16, 32) == {"gap"} and pool(3, 32) == set()   # (the SIMD sums hold 3x3, not 16x16)

    def maxpool(k, c):
        layer = kp.pack_pool("max", in_hwc=(9, 9, c), out_hw=(4, 4), kernel=(k, k), stride=(2, 2))
        return kp.elementwise_code_variants("ek_pool", layer.params)

    assert maxpool(2, 16) == maxpool(3, 8) == {"maxrows"}    # the max pools' asm row kernels
    assert maxpool(2, 6) == set()                              # (channels not in fours: the C loop)


@needs_arm
def test_a_depthwise_conv1d_model_runs_the_1xk_row_kernel_bit_exact(tmp_path):
    """A separable Conv1d keyword net (MatchboxNet-style: 9- and 13-tap depthwise Conv1d over 49 frames) compiles for
    the M7 with its depthwise layers on the transposed map's 1xK row kernel, runs bit-exact on the emulated board and
    its instruction estimate is within 10 % of the count."""
    torch = pytest.importorskip("torch")
    from torch import nn

    from edgekit import api
    from edgekit.model import Model

    torch.manual_seed(0)

    def sep(c, k):
        return [nn.Conv1d(c, c, k, padding=k // 2, groups=c), nn.BatchNorm1d(c), nn.Conv1d(c, c, 1),
                nn.BatchNorm1d(c), nn.ReLU()]

    net = nn.Sequential(nn.Conv1d(10, 32, 3, padding=1), nn.BatchNorm1d(32), nn.ReLU(), *sep(32, 9), *sep(32, 13),
                        nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(32, 10)).eval()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm1d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
    x = np.random.default_rng(0).standard_normal((16, 10, 49)).astype(np.float32)
    model = Model.from_module(net, torch.from_numpy(x[:1]), name="conv1d-kws", calib=x, test_x=x[:4])
    art = api.compile(model, "cortex-m7", tmp_path / "out", quantize="int8", patch="off")
    plan = art.report["build"]
    assert plan["step_kernels"].count("ek_dw") == 2
    meas = api.profile(tmp_path / "out").measured
    assert meas["outputs_match"] and meas["max_abs_err_lsb"] == 0
    est = art.report["estimate"]["instructions"]
    assert abs(est - meas["instructions"]) / meas["instructions"] < 0.10
    # the packing behind it: Kx1 on the transposed map, the 1xK code variant
    rng = np.random.default_rng(1)
    case, _ = _conv_case(rng, "c1d", 49, 1, 32, 32, (9, 1), padding=(4, 4, 0, 0), depthwise=True)
    assert case.layer.params["flags"] & kp.FLAG_DW_TRANSPOSED
    assert kp.depthwise_code_variants(case.layer.params) == {"rows", "1xk"}
