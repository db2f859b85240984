"""Offline packing for edgekit's hand-written Cortex-M int8 kernels (``targets/mcu/platforms/cortex_m/kernels/ek_nn_s8.c``).

Where it sits: ``targets/mcu`` (Model -> Artifact). The code generator takes a layer's integer description
(int8 weights in PyTorch layout, int32 bias, per-channel ``mult``/``shift`` from :mod:`edgekit.qmath`, zero points,
padding/stride/dilation) and calls one ``pack_*`` function here; the returned :class:`PackedLayer` holds exactly the
arrays the C kernel reads (weights reordered for its inner loops, still one byte per weight) and the integer fields of
its parameter struct, in the struct's order. :func:`scratch_bytes` is the scratch buffer the call needs (the C
functions ``ek_*_scratch_bytes`` compute the same number). The host reference is :mod:`edgekit.intref`.

Layouts (the C file explains why):

* conv2d: the reduction axis runs over "runs" of contiguous input bytes (a kernel row, ``kernel_w * in_c`` bytes,
  when ``dilation_w == 1``; else one tap, ``in_c`` bytes), each padded to even length, groups of 4 stored in the
  order (0, 2, 1, 3); output channels in blocks of 4; per block and per pair of reduction elements 8 bytes
  ``c0k0 c1k0 c0k1 c1k1 c2k0 c3k0 c2k1 c3k1``; a last block of 1-3 channels stores ``c0k0 c0k1 c1k0 c1k1 ...``.
  Padding: one zero byte per odd-length run per output channel (``runs * out_c`` bytes at most), nothing else.
* depthwise: ``[C][kh * kw]`` as in PyTorch (no reordering, no padding).
* fully connected: inputs padded to a multiple of 4 (at most 3 zero bytes per output channel); per block of 4
  output channels and per 4 inputs 4 words (one per channel; a last block of 1-3 channels has 1-3 words) holding
  bytes ``w0, w1 - [w0 < 0], w2, w3 - [w2 < 0]``, so that the word read as two int16 is ``(256*w1 + w0,
  256*w3 + w2)``; the packed bias (``[ceil4(out)]``) adds ``127 * sum(w[odd k]) - x_zp * sum(w)``.
* requant table (all): ``[ceil4(C)][4]`` int32 ``{mult, a, b, shift}``; ``a``/``b`` hold the single-instruction
  (SMMLA) form when every channel allows it (flag ``FAST_REQUANT``), else 0.

Helium (``isa="mve"``, flag ``MVE``; ``ek_nn_s8_mve.c`` explains why), all with the input zero point folded into the
bias (``bias - x_zp * sum(w)``, so the kernels multiply raw int8 values):

* conv2d and fully connected: the reduction axis K in the order (ky, kx, c); per block of 4 output channels and per
  16 reduction elements ``[4][16]`` bytes, then ``[4][K % 16]``; a last block of 1-3 channels ``[nc][K]``. No
  padding. Bias ``[ceil4(C)]``; requant ``[ceil4(C) / 4][3][4]``: per block ``mult[4], a[4], -b[4]`` (the vector
  form: ``a = 2**(b-1) + out_zp * 2**b``, ``shift = 32 + b``) or ``mult[4], shift[4], 0[4]`` without ``FAST_REQUANT``.
* depthwise: ``[ceil16(C) / 16][kh * kw][16]`` (channels zero-padded to 16); bias ``[ceil16(C)]`` and requant
  ``[ceil16(C) / 16][4][2][4]`` (``mult, -b`` per vector) with each group's channels in the order of
  :data:`MVE_DW_LANES` (the order the widening multiplies leave them in).

Scalar kernels for cores without SIMD (``isa="rv32"``, flag ``RV``; RV32IM: one MUL and one ADD per MAC, every operand
one byte load — ek_nn_s8.c explains why), all int8 weights stored as they are:

* conv2d: the reduction axis K in the order (ky, kx, c); per block of 4 output channels ``[K][4]`` bytes, a last
  block of 1-3 channels ``[K][nc]``. Bias ``[ceil4(C)]`` with the input zero point folded in (``bias - x_zp *
  sum(w)``, required).
* fully connected: blocks of 16 output channels ``[K][16]``, then one block ``[K][n]`` for each of n = 8, 4, 2, 1
  that the number of channels left has; bias as conv2d. Or, where :func:`rv_fc_pairs_apply` (at least 2 channels and
  RV_FC_PAIRS_MIN_IN inputs, at most RV_FC_PAIRS_MAX_BYTES paired), flag ``RV_PAIRS``: channels 2j, 2j + 1 share one
  int32 word ``w0 + 65536 * w1`` per input (two MACs per MUL in 16-bit lanes: ek__rv_fc_pairs), blocks of 8 pairs
  ``[K][8]`` words, then one block of each of 4, 2, 1 pairs left; an odd layer's last pair has a zero channel.
  ``4 * K * ceil(C / 2)`` bytes; ``weight_padding_bytes`` = that - K * C (the flash beyond one byte per weight).
* depthwise 3x3 (dilation 1, stride_w 1 or 2): ``[C][9]`` as in PyTorch, bias as given (the kernel folds the zero
  point per row); other depthwise geometries keep the dsp layouts.
* requant (all): ``[ceil4(C)][4]`` int32 ``{mult, a, b, shift}`` with ``a = 2**(b-1) + out_zp * 2**b`` (the clamp
  comes after) and flag ``FAST_REQUANT`` when ``b = shift - 32`` is in [1, 30] and ``|a| < 2**30`` for every channel.

Arrays must be placed 4-byte aligned in the firmware. ``PackedLayer.weight_padding_bytes`` counts the padding.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from edgekit import intref
from edgekit.errors import UnsupportedError, UsageError

__all__ = ["PackedLayer", "CONV_FIELDS", "FC_FIELDS", "FLAG_FAST_REQUANT", "FLAG_CACHE_ALL_WEIGHTS", "FLAG_BIAS_PER_BLOCK",
           "FLAG_MVE", "FLAG_RV", "FLAG_RV_PAIRS", "FLAG_ADD_PAIRS", "FLAG_WIDE_WEIGHTS", "ISAS", "mve_requant_table",
           "pack_conv2d", "pack_depthwise_conv2d", "depthwise_code_variants", "gemm_code_variants",
           "elementwise_code_variants", "pack_fully_connected", "pack_add",
           "ADD_FIELDS", "pack_pool",
           "pack_lut", "LUT_FIELDS", "pack_lut_channels", "LUTC_FIELDS", "pack_bilinear", "BILINEAR_FIELDS", "pack_mul", "MUL_FIELDS", "pack_concat", "CONCAT_FIELDS",
           "pack_transpose", "TRANSPOSE_FIELDS", "pack_upsample", "UPSAMPLE_FIELDS",
           "POOL_FIELDS",
           "requant_table", "scratch_bytes",
           "conv2d_scratch_bytes", "depthwise_conv2d_scratch_bytes", "fully_connected_scratch_bytes"]

# Mirrors ek_nn_s8.h.
# ek_conv2d_s8 gathers a border pixel's whole window (zero point where it leaves the input) when it has at most this
# many bytes (ek_nn_s8.c: EK__SMALL_WINDOW; first layers of 1-4 channels)
SMALL_WINDOW = 48
FLAG_FAST_REQUANT = 1
FLAG_CACHE_ALL_WEIGHTS = 2
FLAG_BIAS_PER_BLOCK = 4
FLAG_DW_CHANNELS = 8
FLAG_MVE = 16
FLAG_ADD_SPLIT = 32
FLAG_TAP_RUNS = 64
FLAG_RV = 128
FLAG_RV_PAIRS = 256  # scalar fully connected: two output channels per 32-bit weight word
FLAG_1X1_STREAM = 4096  # conv: 1x1 with 8 or 16 input channels as a per-channel record stream (s1x1_stream)
FLAG_DW_PAIRS = 1024  # depthwise 3x3: column pairs of a padded plane per 4 channels, 2 outputs x 2 channels a step
FLAG_ADD_PAIRS = 512  # add: SMLAD on (a, b) int16 pairs, 4 elements a turn (cores with the DSP extension)
FLAG_CONV_FC = 2048  # conv: each output pixel's window as one fully connected row, int8 weights in the FC layout
FLAG_WIDE_WEIGHTS = 8192  # conv (tile GEMM): weights stored widened (int16 pairs, the weight cache's layout)
FLAG_DW_TRANSPOSED = 16384  # depthwise 3x3, rows or pairs layout: runs on the transposed map, weights [C][kw][kh]
FLAG_CONV_C1 = 32768  # conv: one input channel, 3x3: a record of C1_RECORD_WORDS words per output channel
C1_RECORD_WORDS = 9  # the one-channel path's record: bias, 5 weight pairs, mult, a, b
C1_PADDED_ROW = 64  # EK_CONV_C1_ROW: padded input rows up to this wide are laid out on the stack
# dsp: the SMLAD kernels (and their portable C twin); mve: Helium (ek_nn_s8_mve.c); rv32: the scalar kernels of cores
# without SIMD (RV32IM), in ek_nn_s8.c's builds without the DSP extension
ISAS = ("dsp", "mve", "rv32")
RV_FC_BLOCK = 16  # output channels per block of the scalar fully connected kernel (then 8, 4, 2, 1)
# The paired FC layout doubles a layer's weight flash; above this many paired bytes a layer keeps one byte per weight.
# mbv2-w035's 1280 -> 1000 classifier paired: esp32-c3 flash 1,852,640 -> 3,131,040 B (+69 %) for 1.0 % fewer
# instructions (94.41 -> 93.44 M, bit-exact): it does not pay, so it stays bytes.
RV_FC_PAIRS_MAX_BYTES = 1024 * 1024
RV_FC_PAIRS_MIN_IN = 24  # fewer inputs: the byte layout is as fast or faster (bench/rv_fc_fit.py)
# The scalar depthwise 3x3 kernel against the dsp layouts' portable path on the emulated rv32imc core (bench/kernels.py):
# 3x3x256 9.1 against 7.4 instructions/MAC (channels-last), 6x6x128 6.2 against 8.7: rows of 3 outputs keep the dsp
# layouts
RV_DW_MIN_OUT_W = 3
MVE_TILE_PIXELS = 8  # Helium conv: output pixels per im2col tile (kernel_pack picks fewer when scratch is short)
MVE_DW_MAX_TAPS = 64  # EK_MVE_DW_MAX_TAPS: larger depthwise kernels keep the dsp layout
# Helium depthwise runs 16 channels per vector: with 8 or fewer the SMLAD kernels are faster (bench/kernels.py on the
# M55: 96x96x8 3.2 instructions/MAC with Helium, ~2.3 with them), so such layers keep the dsp layout
MVE_DW_MIN_CHANNELS = 9


def mve_depthwise_applies(taps: int, channels: int) -> bool:
    """Whether ``pack_depthwise_conv2d(isa="mve")`` packs a layer for Helium (else the dsp layouts)."""
    return taps <= MVE_DW_MAX_TAPS and channels >= MVE_DW_MIN_CHANNELS
# Channel of each lane of the four accumulator vectors of the Helium depthwise kernel, per group of 16 channels:
# VMULLB/VMULLT split even and odd channels, VMOVLB/VMOVLT split those again.
MVE_DW_LANES = (0, 4, 8, 12, 2, 6, 10, 14, 1, 5, 9, 13, 3, 7, 11, 15)
# Depthwise 3x3 layout (bench/kernels.py, instructions/MAC on the emulated M7): the row kernels win at stride 1 on
# maps at least DW_ROWS_MIN_OUT_W wide (1.9-2.6) and whenever there are fewer than DW_CHANNELS_MIN_C channels (the
# channels-last kernel's per-pixel set-up is shared by C/4 groups); channels-last wins on small maps (2.3-2.9
# against 4.0-6.3 rows for 6x6, 25x5 and 3x3 maps) and at stride 2 (3.0 against 3.8 on 24x24x96). The cores without
# these kernels' measurements (isa other than dsp) keep these thresholds; the DSP cores choose by DW_ROWS_COST and
# DW_CHANNELS_COST.
DW_ROWS_MIN_OUT_W = 12
# 5x5, padding 2 (emulated M7, instructions/MAC, rows -> channels-last, by output width; bench/dw5_fit.py): stride 1
# 3x3x576 4.84 -> 2.60, 5x5x96 3.08 -> 3.51, 6x6x144 2.51 -> 3.73; stride 2 (the inputs) 6x6x240 5.18 -> 3.72,
# 7x7x64 3.46 -> 3.78, 10x10x48 3.38 -> 4.31: channels-last on outputs at most this wide
DW5_CHANNELS_MAX_OUT_W = 3
# 1xK (and Kx1 on the transposed map) depthwise row kernel (ek_nn_s8.c ek__dw_rows_k): stride 1 along the kernel,
# no dilation, 4 <= K <= EK_DW1XK_MAX_TAPS (1x3 / 3x1 have their own asm row kernel), at least DW1XK_MIN_OUT
# outputs along it (4 a step: shorter rows keep channels-last)
DW1XK_MAX_TAPS = 32
DW1XK_MIN_OUT = 4
# Its M7 instructions (dw1xk_instructions): per 4-output step, per turn of two tap pairs, one more pair (K/2 odd),
# the last tap (K odd), the clamp; per channel row (the call), a row's last 1-3 outputs (a step into a scratch
# word and byte copies), per channel tap (weight pairs built), per call; fitted on the emulated M7 to 15 Conv1d and
# 4 1xK layers (K 4-32, 4-64 channels, rows of 13-98 outputs; each within 6 %, most within 1.5 %: bench/dw1xk_fit.py,
# bench/results/dw1xk_fit.txt)
DW1XK_COST = dict(step=53.06, turn=12.48, pair=7.9, tap=1.89, clamp=10.91, row=63.93, tail=25.95, weight=13.28,
                  call=983.6)


def dw1xk_applies(kh: int, kw: int, stride_w: int, dilation_w: int, out_w: int) -> bool:
    """Whether a depthwise call (in its kernels' view: a Kx1 one transposed) runs the 1xK row kernel."""
    return kh == 1 and 4 <= kw <= DW1XK_MAX_TAPS and stride_w == 1 and dilation_w == 1 and \
        out_w >= DW1XK_MIN_OUT


def dw1xk_runs(p: dict) -> bool:
    """Whether ek_depthwise_conv2d_s8's DSP dispatch runs a call on the 1xK row kernel (ek__dw1xk_applies; ``p`` in
    the kernels' view, :func:`dw_view`, fast requantization), whatever its row length."""
    return p["kernel_h"] == 1 and 4 <= p["kernel_w"] <= DW1XK_MAX_TAPS and p["stride_w"] == 1 and \
        p["dilation_h"] == p["dilation_w"] == 1 and bool(p.get("flags", 0) & FLAG_FAST_REQUANT)


def dw1xk_instructions(out_h: int, out_w: int, channels: int, k: int, clamp: bool) -> float:
    """Estimated M7 instructions of one call of the 1xK row kernel (in its view: out_h rows of out_w outputs, a
    1xk kernel; DW1XK_COST)."""
    c = DW1XK_COST
    steps = out_h * channels * -(-out_w // 4)
    per_step = c["step"] + c["turn"] * (k // 4) + c["pair"] * ((k // 2) & 1) + c["tap"] * (k & 1) + \
        c["clamp"] * bool(clamp)
    rows = out_h * channels
    return steps * per_step + rows * (c["row"] + c["tail"] * bool(out_w % 4)) + c["weight"] * channels * k + c["call"]
DW_CHANNELS_MIN_C = 32
# Executed instructions of ek_depthwise_conv2d_s8's 3x3 row layout on the emulated M7 (DSP build), fitted by
# bench/dw_layout_fit.py to 39 shapes per stride (9 output rows, out_w 4-20, 16 / 48 / 144 channels, ReLU6; max
# error 0.5 %). Per channel and output row: base + per_out * ceil4(out_w) + tail[out_w % 4] (the last 1-3 outputs in
# the same call: a 2-output step for 1-2 of them, a 4-output step for 3, only they stored; the tail is what that
# saves against a full step) + per_group_row / C.
DW_ROWS_COST = {1: dict(base=85.4, per_out=16.77, tail=(0.0, -31.8, -25.9, -1.9), per_group_row=82.1),
                2: dict(base=97.9, per_out=23.95, tail=(0.0, -48.5, -38.7, -5.8), per_group_row=106.1)}
# The channels-last 3x3 layout (EK_NN_FLAG_DW_CHANNELS with fast requantization: ek__dw_ch3x3_px and its border
# variants, one asm call per output pixel for all its full groups of 4 channels, only the taps inside the map), per
# layer: the terms of dw_channels_terms (output pixels, pixel-groups of 4 channels, group-taps inside the map, output
# rows, one call) times DW_CHANNELS_COST, fitted by bench/dw_layout_fit.py (3 / 5 / 9 output rows, 2-20 wide,
# 16 / 48 / 144 channels, ReLU6); plus DW_CHANNELS_TAIL[C % 4] per output pixel for the 1-3 channels beyond the
# last group of 4 (their byte-wise tap loop; fitted to 13, 38 and 39 channels, 5-16 wide).
# The pixels the asm does not run (1 tap row or column inside the map, or more than 3) take the C loop: per
# pixel-group 91, per kernel row 12 and per tap 13 (c_*: measured on the emulated M7, 1x1 / 1x16 / 16x1 maps of 48
# and 96 channels, padding 1).
DW_CHANNELS_TERMS = ("pixel", "group", "group_tap", "row", "call", "c_group", "c_group_row", "c_group_tap")
DW_C_LOOP = dict(c_group=91.0, c_group_row=12.0, c_group_tap=13.0)
DW_CHANNELS_COST = {1: dict(pixel=79.41, group=38.67, group_tap=7.45, row=117.94, call=281.68, **DW_C_LOOP),
                    2: dict(pixel=80.72, group=38.99, group_tap=7.43, row=93.72, call=312.04, **DW_C_LOOP)}
DW_CHANNELS_TAIL = (0.0, 232.0, 353.0, 427.0)
# The pairs layout (EK_NN_FLAG_DW_PAIRS, ek__dw_pairs: 3x3 on small and mid-sized maps), per layer: the terms of
# dw_pairs_terms (2-output steps of a channel pair, its output rows, channel pairs, widened input rows and column
# pairs of each group of 4 channels, their edge pairs, plane words zeroed, one call) times DW_PAIRS_COST,
# fitted by bench/dw_layout_fit.py to 162 shapes per stride (3-9 output rows, 2-16 wide, 16 / 48 / 144 channels,
# ReLU6); DW_PAIRS_TAIL: per output pixel, the 1-3 channels beyond the last group of 4 (their byte-wise plane rows
# and, for an odd channel, the C loop).
DW_PAIRS_TERMS = ("step", "channel_row", "channel_pair", "build_row", "build_pair", "edge", "plane_word", "call")
DW_PAIRS_COST = {1: dict(step=67.6, channel_row=30.2, channel_pair=143.4, build_row=15.1, build_pair=18.7, edge=1.7,
                         plane_word=6.0, call=305.2),
                 2: dict(step=81.0, channel_row=8.5, channel_pair=144.5, build_row=8.5, build_pair=10.0, edge=17.0,
                         plane_word=6.0, call=308.0)}
DW_PAIRS_TAIL = (0.0, 121.0, 44.0, 148.0)
DW_PAIRS_MAX_SCRATCH = 4096  # bytes: larger planes (maps wider or taller than ~20) keep the other layouts
# The one-channel conv path (FLAG_CONV_C1, conv2d_c1_instructions), M7 instructions: per call, per output row (its
# three rows set up, the asm row call), per input row laid out padded on the stack (small maps) and per byte copied
# there, per output pixel of the asm row loop (its taps built: counted from the asm), per pixel run one by one (a wider
# map's border: its taps checked in C), per output (an output channel of a pixel: two LDMs, 5 SMLAD, the
# requantization, the store; counted from the asm, with the clamp as without), per output clamped in C afterwards
# (the clamp when out_c is not a multiple of 4), per output of the C loop (no fast requantization, not fitted: the
# C requantization's ~25 and the 5 pair products). output = 13 counted from the asm, call = 100 from the C
# prologue; the others fitted (NNLS, relative error) to bench/kernels.py's seven one-channel 3x3 shapes (8x8 to
# 96x96, 8 to 32 channels, strides 1 and 2, with and without the clamp): every one within 0.1 %.
CONV_C1_COST = dict(call=100.0, row=128.9, built_row=91.6, copied=4.05, asm_pixel=33.96, c_pixel=202.8, output=13.0,
                    fixup=7.41, c_output=40.0)
CONV_FIELDS = ("in_h", "in_w", "in_c", "in_row_stride", "out_h", "out_w", "out_c", "out_row_stride",
               "kernel_h", "kernel_w", "stride_h", "stride_w", "dilation_h", "dilation_w",
               "pad_top", "pad_bottom", "pad_left", "pad_right", "input_offset", "output_offset",
               "act_min", "act_max", "tile_pixels", "flags", "weight_block_bytes", "weight_run_pairs")
FC_FIELDS = ("batch", "in_features", "out_features", "in_row_stride", "out_row_stride",
             "input_offset", "output_offset", "act_min", "act_max", "flags", "weight_block_bytes")
POOL_FIELDS = ("in_h", "in_w", "channels", "out_h", "out_w", "kernel_h", "kernel_w", "stride_h", "stride_w",
               "pad_top", "pad_left", "mode", "input_offset", "output_offset", "mult", "shift", "flags")
POOL_MAX, POOL_AVG = 0, 1
LUT_FIELDS = ("n", "flags")
LUTC_FIELDS = ("pixels", "channels", "flags")
BILINEAR_FIELDS = ("in_h", "in_w", "channels", "scale_h", "scale_w", "flags")
MUL_FIELDS = ("rows", "channels", "b_per_channel", "a_offset", "b_offset", "out_offset", "act_min", "act_max", "mult",
              "shift", "flags")
CONCAT_FIELDS = ("rows", "out_c", "parts", "flags")
TRANSPOSE_FIELDS = ("batches", "rows", "cols", "flags")
UPSAMPLE_FIELDS = ("in_h", "in_w", "channels", "scale_h", "scale_w", "flags")
ADD_FIELDS = ("n", "a_offset", "b_offset", "out_offset", "act_min", "act_max", "a_mult", "b_mult", "shift", "flags",
              "a_mult_hi", "a_mult_lo", "b_mult_hi", "b_mult_lo", "h_const", "l_const", "rows", "a_row_stride",
              "b_row_stride", "out_row_stride")
CONV_UNROLL = 8  # EK_CONV_UNROLL: only affects code, listed for reference
FC_CHUNK = 64  # EK_FC_CHUNK
DEFAULT_TILE_PIXELS = 32
DEFAULT_WEIGHT_CACHE_LIMIT_BYTES = 16 * 1024
# Weights stored widened (FLAG_WIDE_WEIGHTS, one more flash byte a weight) by default only for layers of at most
# this many int8 weights, and where they save at least WIDE_WEIGHTS_MIN_SAVED instructions per inference per extra
# flash byte — where each weight would otherwise be widened (1 instruction) that many times an inference: a patch
# tile's call widens all its weights again, a call with little scratch once per im2col tile.
WIDE_WEIGHTS_MAX_BYTES = 16 * 1024
WIDE_WEIGHTS_MIN_SAVED = 8.0


class ScratchLimitError(UsageError):
    """No tile of an ek_conv2d_s8 call fits the scratch bytes it may use (program.py then runs TVM's kernel)."""


@dataclass(frozen=True)
class PackedLayer:
    """What one C kernel call needs: ``params`` are the struct's int32 fields in declaration order (the pointer fields
    ``weights``, ``bias``, ``requant`` come from the arrays here; ``bias`` None means pass NULL)."""

    kind: str  # "conv2d" | "depthwise_conv2d" | "fully_connected" | "add"
    params: dict[str, int]
    weights: np.ndarray  # int8, kernel layout
    bias: np.ndarray | None  # int32
    requant: np.ndarray  # int32 [ceil4(C), 4]
    scratch_bytes: int
    weight_padding_bytes: int  # weight bytes beyond one per real weight (alignment and zero padding)
    notes: dict = field(default_factory=dict)

    def param_words(self) -> np.ndarray:
        """The int32 fields as an array, in struct order."""
        return np.array(list(self.params.values()), dtype=np.int32)


def _ceil(v: int, m: int) -> int:
    return -(-v // m) * m


def _check_int8_weights(w: np.ndarray, what: str) -> np.ndarray:
    w = np.asarray(w)
    if w.dtype != np.int8:
        raise UsageError(f"{what}: weights must be int8, got {w.dtype}")
    if np.any(w == -128):
        raise UnsupportedError(f"{what}: weight -128 found; edgekit's weights are symmetric in [-127, 127] "
                               f"(edgekit.qmath): requantize the layer")
    return w


def _check_quant(mult, shift, channels: int, out_zp: int, act_min: int, act_max: int, what: str):
    mult = np.broadcast_to(np.asarray(mult, dtype=np.int64), (channels,))
    shift = np.broadcast_to(np.asarray(shift, dtype=np.int64), (channels,))
    if np.any(mult < 0) or np.any(mult >= 1 << 31) or np.any(shift < 1) or np.any(shift > 62):
        raise UsageError(f"{what}: mult must be in [0, 2**31) and shift in [1, 62] (edgekit.qmath)")
    if not (-128 <= out_zp <= 127 and -128 <= act_min <= act_max <= 127):
        raise UsageError(f"{what}: need -128 <= out_zp <= 127 and -128 <= act_min <= act_max <= 127, got "
                         f"out_zp={out_zp}, act_min={act_min}, act_max={act_max}")
    return mult, shift


def requant_table(mult, shift, out_zp: int, act_min: int, act_max: int,
                  clamp_after: bool = False) -> tuple[np.ndarray, bool]:
    """The ``[ceil4(C)][4]`` int32 table ``{mult, a, b, shift}`` and whether the fast (SMMLA) form holds for all.

    Fast form (see ek_nn_s8.c): ``b = shift - 32`` in [1, 30] (b = 1 for mult = 0) and
    ``a = 2**(b-1) + (out_zp - act_min - 128) * 2**b`` with ``|a| < 2**30``; ``clamp_after`` (the scalar kernels,
    which clamp to [act_min, act_max] afterwards): ``a = 2**(b-1) + out_zp * 2**b``.
    """
    mult = np.asarray(mult, dtype=np.int64).ravel()
    shift = np.asarray(shift, dtype=np.int64).ravel()
    c = mult.size
    off = int(out_zp) if clamp_after else int(out_zp) - int(act_min) - 128
    b = np.where(mult == 0, 1, shift - 32)
    ok_b = (b >= 1) & (b <= 30)
    bb = np.clip(b, 1, 30)
    a = (np.int64(1) << (bb - 1)) + off * (np.int64(1) << bb)
    fast = bool(np.all(ok_b & (np.abs(a) < (1 << 30))))
    table = np.zeros((_ceil(c, 4), 4), dtype=np.int64)
    table[:, 3] = 1  # padding channels: mult 0, shift 1
    if fast:
        table[:, 1] = 1 + 2 * off  # padding channels in the fast form: b = 1
        table[:, 2] = 1
    table[:c, 0] = mult
    table[:c, 3] = shift
    if fast:
        table[:c, 1] = a
        table[:c, 2] = b
    return table.astype(np.int32), fast


def mve_requant_table(mult, shift, out_zp: int, act_min: int, act_max: int, lanes: int = 4,
                      order=None) -> tuple[np.ndarray, bool]:
    """Helium requantization table and whether the vector form holds for every channel (``b = shift - 32`` in
    [1, 30], 1 for mult = 0, and ``a = 2**(b-1) + out_zp * 2**b`` with ``|a| < 2**30``).

    Per vector of 4 channels: conv/FC (``lanes`` 4) ``mult[4], a[4], -b[4]`` (else ``mult[4], shift[4], 0[4]``,
    the kernel's scalar 64-bit path), ``[ceil4(C) / 4][3][4]``; depthwise (``lanes`` 16, ``order`` the channel of
    each lane within a group) ``mult[4], -b[4]`` (it rounds with VRSHL and adds out_zp itself; else ``mult[4],
    shift[4]``), ``[ceil16(C) / 4][2][4]``."""
    mult = np.asarray(mult, dtype=np.int64).ravel()
    shift = np.asarray(shift, dtype=np.int64).ravel()
    c = mult.size
    n = _ceil(c, lanes)
    b = np.where(mult == 0, 1, shift - 32)
    bb = np.clip(b, 1, 30)
    a = (np.int64(1) << (bb - 1)) + int(out_zp) * (np.int64(1) << bb)
    fast = bool(np.all((b >= 1) & (b <= 30) & (np.abs(a) < (1 << 30))))
    m_all, s1, s2 = np.zeros(n, np.int64), np.zeros(n, np.int64), np.zeros(n, np.int64)
    m_all[:c] = mult
    if fast:
        s1[:] = 1 + 2 * int(out_zp)  # padding channels: mult 0, b = 1
        s2[:] = -1
        s1[:c], s2[:c] = a, -bb
    else:
        s1[:] = 1
        s1[:c] = shift
    rows = [m_all, s1, s2] if lanes == 4 else [m_all, s2 if fast else s1]
    if order is not None:
        rows = [v.reshape(-1, lanes)[:, list(order)].reshape(-1) for v in rows]
    table = np.stack([r.reshape(-1, 4) for r in rows], axis=1)
    return table.astype(np.int32), fast


def _mve_bias(bias, w_flat: np.ndarray, x_zp: int, n: int) -> np.ndarray:
    """``[n]`` int64: bias - x_zp * sum(w) per channel (zeros beyond), the Helium kernels' accumulator start."""
    b = np.zeros(n, dtype=np.int64)
    c = w_flat.shape[0]
    if bias is not None:
        b[:c] = np.asarray(bias, dtype=np.int64)
    b[:c] -= int(x_zp) * w_flat.astype(np.int64).sum(axis=1)
    return intref.wrap_int32(b)


def _mve_gemv_weights(flat: np.ndarray) -> np.ndarray:
    """``[C][K]`` int8 -> the Helium conv/FC layout (blocks of 4 channels, 16 reduction elements at a time; a last
    block of 1-3 channels padded with zero rows to a full one, which the block kernels run with a predicated store)."""
    cout, k = flat.shape
    chunks = k // 16
    flat = np.concatenate([flat, np.zeros((-cout % 4, k), flat.dtype)])
    parts = []
    for b0 in range(0, flat.shape[0], 4):
        blk = flat[b0:b0 + 4]
        parts.append(blk[:, :16 * chunks].reshape(4, chunks, 16).transpose(1, 0, 2).reshape(-1))
        parts.append(blk[:, 16 * chunks:].reshape(-1))
    return np.concatenate(parts).astype(np.int8)


def mve_direct(p: dict) -> bool:
    """A Helium 1x1 convolution without padding reads its pixels in place (no im2col, no scratch)."""
    return p["kernel_h"] == p["kernel_w"] == 1 and not any(p.get(k, 0) for k in
                                                          ("pad_top", "pad_bottom", "pad_left", "pad_right"))


def mve_column(p: dict) -> bool:
    """An im2col Helium conv with one output pixel a row, rows contiguous (ek__mve_conv_column): tiles of pixels
    across the rows."""
    return not mve_direct(p) and p["out_w"] == 1 and p.get("out_row_stride", p["out_c"]) == p["out_c"]


def mve_contiguous(p: dict) -> bool:
    """A direct Helium 1x1 at stride 1 over whole rows (ek__mve_conv_contiguous): the map is one GEMM call."""
    return mve_direct(p) and p["stride_h"] == p["stride_w"] == 1 and p["in_row_stride"] == p["in_w"] * p["in_c"] \
        and p["out_row_stride"] == p["out_w"] * p["out_c"] and p["out_w"] == p["in_w"]


def _mve_tile(params: dict, scratch_limit_bytes: int | None, tile_pixels: int | None = None) -> int:
    """Output pixels per im2col tile of a Helium conv (one output row at most, or rows of one pixel each: a Conv1d's
    column, :func:`mve_column`): the block's weights, bias and requantization vectors are loaded once per tile, and
    beyond MVE_TILE_PIXELS that saves little; the largest that fits ``scratch_limit_bytes``."""
    span = params["out_h"] if mve_column(params) else params["out_w"]
    tiles = [tile_pixels] if tile_pixels is not None else range(min(MVE_TILE_PIXELS, span), 0, -1)
    for t in tiles:
        trial = dict(params, tile_pixels=int(t), flags=params.get("flags", 0) | FLAG_MVE)
        if mve_direct(trial) or scratch_limit_bytes is None or conv2d_scratch_bytes(trial) <= scratch_limit_bytes:
            return int(t)
    raise ScratchLimitError(f"conv2d: one pixel's window needs "
                            f"{_ceil(params['kernel_h'] * params['kernel_w'] * params['in_c'], 4)} scratch bytes, "
                            f"more than {scratch_limit_bytes}")


def mve_conv2d_scratch_bytes(params: dict, scratch_limit_bytes: int | None) -> int:
    """Scratch bytes :func:`pack_conv2d` with ``isa="mve"`` gives a layer of this geometry (``kernel_h/w``,
    ``in_c``, ``out_w`` and the ``pad_*`` fields); 0 when even one pixel's window does not fit (TVM runs it)."""
    try:
        tile = _mve_tile(params, scratch_limit_bytes)
    except ScratchLimitError:
        return 0
    return conv2d_scratch_bytes(dict(params, tile_pixels=tile, flags=FLAG_MVE))


def _folded_bias(bias, w_flat: np.ndarray, x_zp: int, n: int) -> np.ndarray:
    """``[n]`` int32: bias - x_zp * sum(w) per channel (zeros beyond), wrapping as the kernels' int32 sums."""
    return _mve_bias(bias, w_flat, x_zp, n).astype(np.int32)


def _rv_blocks(flat: np.ndarray, sizes) -> np.ndarray:
    """``[C][K]`` int8 -> consecutive blocks of ``sizes`` output channels, each ``[K][n]`` (the scalar kernels read
    the n weights of one reduction step with one immediate offset each)."""
    parts, c0 = [], 0
    for n in sizes:
        parts.append(flat[c0:c0 + n].T.reshape(-1))
        c0 += n
    return np.concatenate(parts).astype(np.int8) if parts else np.zeros(0, np.int8)


def rv_fc_blocks(out_features: int) -> list[int]:
    """Output channels per block of the scalar fully connected kernel: RV_FC_BLOCKs, then one block of each of 8,
    4, 2 and 1 that the channels left have (their binary digits)."""
    full, rest = divmod(out_features, RV_FC_BLOCK)
    return [RV_FC_BLOCK] * full + [n for n in (8, 4, 2, 1) if rest & n]


def rv_fc_pair_blocks(out_features: int) -> list[int]:
    """Channel pairs per block of the paired scalar fully connected kernel (FLAG_RV_PAIRS): blocks of 8 pairs, then
    one block of each of 4, 2 and 1 pairs that the ceil(out / 2) pairs left have (an odd layer's last pair holds one
    channel and a zero one)."""
    full, rest = divmod(-(-out_features // 2), RV_FC_BLOCK // 2)
    return [RV_FC_BLOCK // 2] * full + [n for n in (4, 2, 1) if rest & n]


def rv_fc_pairs_apply(in_features: int, out_features: int, max_extra_bytes: int | None = None) -> bool:
    """Whether ``pack_fully_connected(isa="rv32")`` packs a layer in channel pairs by default (FLAG_RV_PAIRS: 4 bytes
    per two weights, twice the flash; on the emulated rv32imc core 2.25 instructions per MAC + 26 per output + 1.8 per
    input and block of 8 pairs, against 3.0 + 7.6 + 2.3 per input and block of 16 channels: bench/rv_fc_fit.py):
    from 2 output channels and RV_FC_PAIRS_MIN_IN inputs on (below, the per-output work of the pairs' requantisation
    loop outweighs the MACs saved), while the paired weights take at most RV_FC_PAIRS_MAX_BYTES (a larger layer keeps
    one byte per weight) and add at most ``max_extra_bytes`` over the one-byte layout (what the target can spare)."""
    paired = rv_fc_weight_bytes(in_features, out_features, True)
    extra = paired - rv_fc_weight_bytes(in_features, out_features, False)
    return (out_features >= 2 and in_features >= RV_FC_PAIRS_MIN_IN and paired <= RV_FC_PAIRS_MAX_BYTES
            and (max_extra_bytes is None or extra <= max_extra_bytes))


def rv_fc_weight_bytes(in_features: int, out_features: int, pairs: bool) -> int:
    """Packed weight bytes of a scalar fully connected layer: one per weight, or 4 per input and channel pair."""
    return 4 * in_features * -(-out_features // 2) if pairs else in_features * out_features


def _rv_pair_words(flat: np.ndarray) -> np.ndarray:
    """``[C][K]`` int8 -> the paired layout as bytes: per block of :func:`rv_fc_pair_blocks` pairs ``[K][pairs]``
    little-endian int32 words ``w0 + 65536 * w1`` (channels 2j, 2j + 1; zero beyond the last channel)."""
    out, k = flat.shape
    w = np.zeros((_ceil(out, 2), k), dtype=np.int64)
    w[:out] = flat
    words = w[0::2] + 65536 * w[1::2]  # [pairs][K], in [-2**31, 2**31): |w| <= 127
    parts, j0 = [], 0
    for n in rv_fc_pair_blocks(out):
        parts.append(words[j0:j0 + n].T.reshape(-1))
        j0 += n
    return np.concatenate(parts).astype("<i4").view(np.int8)


def rv_depthwise_applies(kh: int, kw: int, stride_w: int, dilation_h: int, dilation_w: int, out_w: int) -> bool:
    """Whether ``pack_depthwise_conv2d(isa="rv32")`` packs a layer for the scalar 3x3 kernel (else the dsp layouts):
    its set-up per channel and output row does not pay on rows of RV_DW_MIN_OUT_W outputs or fewer."""
    return (kh, kw) == (3, 3) and dilation_h == dilation_w == 1 and stride_w in (1, 2) and out_w > RV_DW_MIN_OUT_W


def _check_isa(isa: str) -> None:
    if isa not in ISAS:
        raise UsageError(f"kernel isa must be one of {', '.join(ISAS)}, got {isa!r}")


def _padding4(padding) -> tuple[int, int, int, int]:
    return intref.padding4(padding)


def _conv_geometry(in_hwc, kernel, stride, dilation, padding):
    h, w, c = (int(v) for v in in_hwc)
    kh, kw = kernel
    sh, sw = intref.pair2(stride, "stride")
    dh, dw = intref.pair2(dilation, "dilation")
    pt, pb, pl, pr = _padding4(padding)
    if min(sh, sw, dh, dw) < 1 or min(pt, pb, pl, pr) < 0:
        raise UsageError(f"stride and dilation must be >= 1 and padding >= 0, got stride={stride}, "
                         f"dilation={dilation}, padding={padding}")
    oh = intref.conv2d_output_size(h, kh, sh, dh, pt, pb)
    ow = intref.conv2d_output_size(w, kw, sw, dw, pl, pr)
    if oh < 1 or ow < 1:
        raise UsageError(f"convolution output would be empty: input {h}x{w}, kernel {kh}x{kw}, padding {padding}")
    return dict(in_h=h, in_w=w, in_c=c, out_h=oh, out_w=ow, kernel_h=kh, kernel_w=kw, stride_h=sh, stride_w=sw,
                dilation_h=dh, dilation_w=dw, pad_top=pt, pad_bottom=pb, pad_left=pl, pad_right=pr)


def _conv_runs(kh: int, kw: int, cin: int, dilation_w: int, tap_runs: bool = False) -> tuple[int, int]:
    """(runs per pixel, bytes per run) of the conv reduction axis: kernel rows, or taps (dilated, or FLAG_TAP_RUNS:
    then a run is one pixel's channels, and a layer with fewer input channels reads a prefix of each run)."""
    return (kh, kw * cin) if dilation_w == 1 and not tap_runs else (kh * kw, cin)


def _conv_merged_tails(kh: int, kw: int, cin: int, dilation_w: int, tap_runs: bool = False) -> bool:
    """Whether odd kernel-row runs (several of them) give their last bytes to shared pairs after all runs instead
    of one zero-padded pair each (3x3 x 3 channels: 14 pairs, not 15)."""
    runs, run_len = _conv_runs(kh, kw, cin, dilation_w, tap_runs)
    return dilation_w == 1 and not tap_runs and runs >= 2 and run_len % 2 == 1


def conv_k_pairs(params: dict) -> int:
    """int16 pairs of ek_conv2d_s8's reduction axis per pixel (its tile GEMM; ek__conv_geom)."""
    p = params
    args = (p["kernel_h"], p["kernel_w"], p["in_c"], p["dilation_w"], bool(p.get("flags", 0) & FLAG_TAP_RUNS))
    runs, run_len = _conv_runs(*args)
    if _conv_merged_tails(*args):
        return runs * ((run_len - 1) // 2) + (runs + 1) // 2
    return runs * ((run_len + 1) // 2)


def _conv_k_order(kh: int, kw: int, cin: int, dilation_w: int, tap_runs: bool = False) -> np.ndarray:
    """Index into the [kh, kw, cin]-flattened weights for each packed reduction position; -1 = zero padding."""
    runs, run_len = _conv_runs(kh, kw, cin, dilation_w, tap_runs)
    merged = _conv_merged_tails(kh, kw, cin, dilation_w, tap_runs)
    order, tails = [], []
    for r in range(runs):
        base = r * run_len
        e = list(range(base, base + run_len))
        if merged:
            tails.append(e.pop())
        run = []
        full = len(e) // 4 * 4
        for g in range(0, full, 4):
            run += [e[g], e[g + 2], e[g + 1], e[g + 3]]
        run += e[full:]
        if len(run) % 2:
            run.append(-1)
        order += run
    if len(tails) % 2:
        tails.append(-1)
    return np.array(order + tails, dtype=np.int64)


def s1x1_stream(params: dict) -> bool:
    """Whether ek_conv2d_s8 can run this DSP-packed conv as a 1x1 record stream (FLAG_1X1_STREAM): 1x1, no
    padding, 8 or 16 input channels, the fast requant form and the full int8 output range (SSAT is the clamp).
    Each pixel's inputs stay in registers and one record per output channel (weights, bias, requant) is read with
    LDMs: ~1.1 instructions per MAC at 8 channels instead of ~1.6 for the tile GEMM."""
    p = params
    return (p["kernel_h"] == p["kernel_w"] == 1 and p["in_c"] in (8, 16)
            and not (p["pad_top"] or p["pad_bottom"] or p["pad_left"] or p["pad_right"])
            and bool(p["flags"] & FLAG_FAST_REQUANT) and not p["flags"] & (FLAG_MVE | FLAG_RV | FLAG_TAP_RUNS)
            and p["act_min"] == -128 and p["act_max"] == 127)


def conv_c1_applies(kernel_h: int, kernel_w: int, in_c: int, isa: str = "dsp", tap_runs: bool = False,
                    dilation: tuple[int, int] = (1, 1)) -> bool:
    """Whether pack_conv2d packs a conv for ek_conv2d_s8's one-channel path (FLAG_CONV_C1): the DSP layout, one
    input channel, 3x3, no dilation, no tap runs. Each output pixel's 9 taps stay in registers and each output
    channel is one record of 9 words read with two LDMs (13 instructions a channel, ~34 a pixel; no scratch):
    digits-cnn's first layer 2.89 -> 1.93 instructions a MAC, U-Net's 2.69 -> 2.07 (bench/kernels.py). By shape
    alone (not by the scales), so that a plan's scratch is the packed layer's. Fewer taps (1x3, 5x1) keep the tile
    GEMM, whose per-output cost is lower there (measured: 1x3 on 49x10 5.45 against 8.13)."""
    return isa == "dsp" and in_c == 1 and (kernel_h, kernel_w) == (3, 3) and tuple(dilation) == (1, 1) \
        and not tap_runs


def conv2d_c1_terms(p: dict) -> dict[str, int]:
    """The counts behind CONV_C1_COST for one call of the one-channel path (its struct fields), as ek__conv_c1 runs it:
    the rows padded on the stack when the padded width is at most C1_PADDED_ROW (each input row once, kept while the
    next output rows read it), else the inside windows of each row in asm and the others one by one."""
    out_h, out_w, out_c, sh, sw = p["out_h"], p["out_w"], p["out_c"], p["stride_h"], p["stride_w"]
    pw = p["in_w"] + p["pad_left"] + p["pad_right"]
    fast = bool(p["flags"] & FLAG_FAST_REQUANT)
    full = (p["act_min"], p["act_max"]) == (-128, 127)
    clamp4 = out_c % 4 == 0 and p["out_row_stride"] % 4 == 0
    t = dict(call=1, row=out_h, built_row=0, copied=0, asm_pixel=0, c_pixel=0, output=0, fixup=0, c_output=0)
    if pw <= C1_PADDED_ROW:
        rows = {oy * sh - p["pad_top"] + k for oy in range(out_h) for k in range(3)}
        t["built_row"] = len(rows)
        t["copied"] = sum(p["in_w"] for r in rows if 0 <= r < p["in_h"])
        inside = out_h * out_w
    else:
        inside_rows = sum(1 for oy in range(out_h) if 0 <= oy * sh - p["pad_top"] and
                          oy * sh - p["pad_top"] + 2 < p["in_h"])
        lo = -(-p["pad_left"] // sw)
        hi = min(out_w, (p["in_w"] - 3 + p["pad_left"]) // sw + 1) if p["in_w"] - 3 + p["pad_left"] >= 0 else 0
        inside = inside_rows * max(0, hi - min(lo, out_w))
    npix = out_h * out_w
    if fast:
        t["asm_pixel"], t["c_pixel"] = inside, npix - inside
        t["output"] = npix * out_c
        t["fixup"] = 0 if full or clamp4 else npix * out_c
    else:
        t["c_pixel"], t["c_output"] = npix, npix * out_c
    return t



def conv2d_c1_instructions(p: dict) -> float:
    """Estimated M7 instructions of one ek_conv2d_s8 call of the one-channel path (CONV_C1_COST by
    :func:`conv2d_c1_terms`)."""
    return sum(CONV_C1_COST[k] * v for k, v in conv2d_c1_terms(p).items())


def conv2d_scratch_bytes(params: dict) -> int:
    """Scratch bytes of ek_conv2d_s8 for these struct fields (ek_conv2d_s8_scratch_bytes)."""
    p = params
    if p.get("flags", 0) & FLAG_CONV_C1:  # taps in registers, records in flash
        return 0
    if p.get("flags", 0) & FLAG_MVE:  # tile_pixels windows, unless a 1x1 without padding reads in place
        return 0 if mve_direct(p) else _ceil(p["tile_pixels"] * p["kernel_h"] * p["kernel_w"] * p["in_c"], 4)
    if p.get("flags", 0) & FLAG_RV:  # one 4-pixel im2col tile
        return _ceil(4 * p["kernel_h"] * p["kernel_w"] * p["in_c"], 4)
    if p.get("flags", 0) & FLAG_CONV_FC:  # one window (int8) and the FC kernel's prepared row
        return 3 * _ceil(p["kernel_h"] * p["kernel_w"] * p["in_c"], 4)
    runs, run_len = _conv_runs(p["kernel_h"], p["kernel_w"], p["in_c"], p["dilation_w"],
                               bool(p["flags"] & FLAG_TAP_RUNS))
    k_pairs = conv_k_pairs(p)
    blocks = _ceil(p["out_c"], 4) // 4
    t = p["tile_pixels"]
    tile = t // 2 * (k_pairs + 1) * 8
    wcache = 0 if p["flags"] & FLAG_WIDE_WEIGHTS else \
        (blocks if p["flags"] & FLAG_CACHE_ALL_WEIGHTS else 1) * k_pairs * 16
    accbuf = t // 2 * 32
    runbuf = 3 * _ceil(run_len, 4)  # two pixels' edge runs and one all-padding run
    bias8 = 32 * (1 if p["flags"] & FLAG_BIAS_PER_BLOCK else blocks)  # each block's 4 biases, twice
    if p["flags"] & FLAG_1X1_STREAM:  # the records fit the tile layout's scratch (pack_conv2d checks)
        return max(s1x1_records_bytes(p), tile + wcache + accbuf + bias8 + runbuf)
    return tile + wcache + accbuf + bias8 + runbuf


def s1x1_records_bytes(params: dict) -> int:
    """Scratch of the 1x1 record stream: per output channel bias, in_c / 2 weight pairs and 3 requant words, and
    one block of 4 channels' widened weights while the records are built."""
    return params["out_c"] * (params["in_c"] // 2 + 4) * 4 + params["in_c"] // 2 * 16


def pack_conv2d(weights: np.ndarray, bias: np.ndarray | None, mult, shift, *, input_shape, x_zp: int, out_zp: int,
                act_min: int = -128, act_max: int = 127, stride=1, dilation=1, padding=0,
                in_row_stride: int | None = None, out_row_stride: int | None = None,
                tile_pixels: int | None = None, cache_all_weights: bool | None = None,
                scratch_limit_bytes: int | None = None, isa: str = "dsp", tap_runs: bool = False,
                conv_fc: bool | None = None, wide_weights: bool | None = False,
                layer_pixels: int | None = None, wide_room: int | None = None,
                conv_c1: bool | None = None) -> PackedLayer:
    """Pack a groups=1 convolution for ``ek_conv2d_s8``.

    ``weights`` int8 ``[C_out, C_in, KH, KW]``; ``input_shape`` (H, W, C_in) of the input window; ``padding`` int,
    (h, w) or (top, bottom, left, right). Row strides default to dense rows. ``tile_pixels`` (even) and
    ``cache_all_weights`` trade scratch for speed; by default the largest tile up to 32 pixels and the weight cache
    (when it is at most 16 KiB) that fit ``scratch_limit_bytes`` (no limit if None), picked by an estimate of the
    instructions they add. ``isa="mve"``: the Helium layout (one pixel's window of scratch; tiles do not apply).
    ``tap_runs``: one reduction run per kernel tap (FLAG_TAP_RUNS), so that a narrower layer's weights are a prefix
    of every run (nested operating points, :func:`nested_view`). ``conv_fc``: each output pixel's window as one
    fully connected row (FLAG_CONV_FC: weights in the FC layout, nothing widened, scratch 3 bytes per window
    element); by default taken where :func:`conv2d_fc_pays` says so (dsp layout, no tap runs). ``wide_weights``:
    the tile GEMM's weights stored widened to int16 pairs (FLAG_WIDE_WEIGHTS: twice the bytes, no weight cache in
    scratch, nothing widened at run time; never more scratch than the int8 layout would take); None: where
    :func:`conv2d_wide_pays` says so for ``layer_pixels`` output pixels an inference (the whole layer's, when this
    call is one patch tile of it; default: this call's). ``wide_room``: scratch the widened layout may take (up to
    ``scratch_limit_bytes``) — for a planner that checks its arena after packing: where the layout is chosen
    (``wide_weights=None``) at least what the int8 layout's choice would take, where it is forced at most that.
    ``conv_c1``: the one-channel path (FLAG_CONV_C1, see :func:`conv_c1_applies`: a record per output channel, no
    scratch); None: wherever it applies and no other layout was asked for.
    """
    _check_isa(isa)
    w = _check_int8_weights(weights, "conv2d")
    if w.ndim != 4:
        raise UsageError(f"conv2d weights must be [C_out, C_in, KH, KW], got shape {w.shape}")
    cout, cin, kh, kw = w.shape
    if int(input_shape[2]) != cin:
        raise UsageError(f"conv2d: input has {input_shape[2]} channels, weights expect {cin} (groups=1 only)")
    g = _conv_geometry(input_shape, (kh, kw), stride, dilation, padding)
    if g["in_w"] == 1 and kw == 1 and kh > 1 and cin <= 4 and not tap_runs and g["out_w"] == 1 and \
            g["dilation_h"] == 1 and g["pad_left"] == g["pad_right"] == 0 and in_row_stride in (None, cin) and \
            out_row_stride in (None, cout):
        # an undilated Kx1 conv of 1-4 channels down a one-pixel-wide column (a Conv1d over its [L, 1, C] view) is
        # the same bytes as a 1xK one along one row, whose window is one run of K * C bytes instead of K runs of C
        # (with more channels the runs are long already, and a stream's one-pixel step lost: kws-ssm +2.6 %; zoo M5's
        # raw-audio first layer, 1 channel and 80 taps: the model 10.47 M -> 7.03 M instructions on the M7, 5.96 M
        # -> 2.26 M on the M55, 28.1 M -> 24.0 M on the esp32-c3); the weights' tap order is the same
        w = np.ascontiguousarray(w.transpose(0, 1, 3, 2))
        kh, kw = 1, kh
        input_shape = (1, g["in_h"], cin)
        stride, dilation = (1, g["stride_h"]), (1, g["dilation_h"])
        padding = (0, 0, g["pad_top"], g["pad_bottom"])
        in_row_stride = out_row_stride = None
        g = _conv_geometry(input_shape, (kh, kw), stride, dilation, padding)
    mult, shift = _check_quant(mult, shift, cout, out_zp, act_min, act_max, "conv2d")
    table, fast = requant_table(mult, shift, out_zp, act_min, act_max)

    tap_runs = bool(tap_runs) and kh * kw > 1 and g["dilation_w"] == 1
    order = _conv_k_order(kh, kw, cin, g["dilation_w"], tap_runs)
    flat = w.transpose(0, 2, 3, 1).reshape(cout, kh * kw * cin).astype(np.int8)
    kvec = np.where(order >= 0, flat[:, np.maximum(order, 0)], 0).astype(np.int8)
    cout4 = _ceil(cout, 4)
    kp = kvec.shape[1]
    nfull = cout // 4 * 4
    packed = kvec[:nfull].reshape(nfull // 4, 2, 2, kp // 2, 2).transpose(0, 3, 1, 4, 2).reshape(-1)
    if cout > nfull:  # last block of 1-3 channels, compact: per pair of reduction positions c0k0 c0k1 c1k0 ...
        tail = kvec[nfull:].reshape(cout - nfull, kp // 2, 2).transpose(1, 0, 2).reshape(-1)
        packed = np.concatenate([packed, tail])

    params = dict(in_h=g["in_h"], in_w=g["in_w"], in_c=cin,
                  in_row_stride=int(in_row_stride if in_row_stride is not None else g["in_w"] * cin),
                  out_h=g["out_h"], out_w=g["out_w"], out_c=cout,
                  out_row_stride=int(out_row_stride if out_row_stride is not None else g["out_w"] * cout),
                  kernel_h=kh, kernel_w=kw, stride_h=g["stride_h"], stride_w=g["stride_w"],
                  dilation_h=g["dilation_h"], dilation_w=g["dilation_w"], pad_top=g["pad_top"],
                  pad_bottom=g["pad_bottom"], pad_left=g["pad_left"], pad_right=g["pad_right"],
                  input_offset=-int(x_zp), output_offset=int(out_zp), act_min=int(act_min), act_max=int(act_max),
                  tile_pixels=0, flags=(FLAG_FAST_REQUANT if fast else 0) | (FLAG_TAP_RUNS if tap_runs else 0),
                  weight_block_bytes=0, weight_run_pairs=0)
    _check_strides(params, "conv2d")
    if isa == "mve":
        flat = w.transpose(0, 2, 3, 1).reshape(cout, kh * kw * cin)
        table, fast = mve_requant_table(mult, shift, out_zp, act_min, act_max)
        params["flags"] = FLAG_MVE | (FLAG_FAST_REQUANT if fast else 0)
        params["tile_pixels"] = _mve_tile(params, scratch_limit_bytes, tile_pixels)
        if tap_runs:
            raise UsageError("conv2d: tap_runs (nested weights) applies to the dsp layout only")
        scratch = conv2d_scratch_bytes(params)
        return PackedLayer(kind="conv2d", params=params, weights=_mve_gemv_weights(flat),
                           bias=_mve_bias(bias, flat, x_zp, _ceil(cout, 4)).astype(np.int32), requant=table,
                           scratch_bytes=scratch, weight_padding_bytes=int(-cout % 4 * flat.shape[1]),
                           notes=dict(fast_requant=fast, isa="mve"))
    if isa == "rv32":
        if tap_runs:
            raise UsageError("conv2d: tap_runs (nested weights) applies to the dsp layout only")
        flat = w.transpose(0, 2, 3, 1).reshape(cout, kh * kw * cin)
        table, fast = requant_table(mult, shift, out_zp, act_min, act_max, clamp_after=True)
        params["flags"] = FLAG_RV | (FLAG_FAST_REQUANT if fast else 0)
        scratch = conv2d_scratch_bytes(params)
        if scratch_limit_bytes is not None and scratch > scratch_limit_bytes:
            raise ScratchLimitError(f"conv2d: the 4-pixel im2col tile needs {scratch} scratch bytes, more than "
                                    f"{scratch_limit_bytes}")
        sizes = [4] * (cout // 4) + ([cout % 4] if cout % 4 else [])
        return PackedLayer(kind="conv2d", params=params, weights=_rv_blocks(flat, sizes),
                           bias=_folded_bias(bias, flat, x_zp, _ceil(cout, 4)), requant=table,
                           scratch_bytes=scratch, weight_padding_bytes=0, notes=dict(fast_requant=fast, isa="rv32"))
    explicit = tile_pixels is not None or cache_all_weights is not None
    c1 = conv_c1_applies(kh, kw, cin, isa, tap_runs, (g["dilation_h"], g["dilation_w"]))
    if conv_c1 is None:
        conv_c1 = c1 and not explicit and not conv_fc and not wide_weights
    if conv_c1:
        if not c1:
            raise UsageError(f"conv2d: conv_c1 applies to one input channel and a 3x3 kernel without dilation (dsp "
                             f"layout, no tap runs), got {cin} channel(s) and {kh}x{kw}")
        return _pack_conv_c1(w, bias, table, fast, params)
    if wide_weights and tap_runs:
        raise UsageError("conv2d: wide_weights does not apply to tap runs (nested weights)")
    chosen = None if conv_fc else conv2d_tile_choice(params, scratch_limit_bytes, tile_pixels, cache_all_weights)
    if wide_weights is not False and not conv_fc and not tap_runs:  # in no more scratch than without (SRAM first)
        room = scratch_limit_bytes if chosen is None else conv2d_scratch_bytes(chosen)
        if conv_fc is None and not explicit and conv2d_fc_pays(params, chosen, scratch_limit_bytes):
            room = conv2d_scratch_bytes(dict(params, tile_pixels=0, flags=FLAG_CONV_FC))
        if wide_room is not None:  # a planner's grant, checked after packing: up to all of it; a forced call, no more
            cap = wide_room if scratch_limit_bytes is None else min(wide_room, scratch_limit_bytes)
            room = min(room, cap) if wide_weights and room is not None else max(room or 0, cap)
        wide = conv2d_tile_choice(params, room, tile_pixels, wide=True)
        if wide_weights or conv2d_wide_pays(params, chosen, wide, layer_pixels):
            chosen = wide
    if conv_fc is None:  # by default where it is the only layout that fits or costs fewer instructions
        conv_fc = not tap_runs and not explicit and conv2d_fc_pays(params, chosen, scratch_limit_bytes)
    if conv_fc:
        if tap_runs:
            raise UsageError("conv2d: conv_fc does not apply to tap runs (nested weights)")
        fc = pack_fully_connected(w.transpose(0, 2, 3, 1).reshape(cout, kh * kw * cin), bias, mult, shift,
                                  x_zp=x_zp, out_zp=out_zp, act_min=act_min, act_max=act_max)
        chosen = dict(params, flags=FLAG_CONV_FC | (fc.params["flags"] & FLAG_FAST_REQUANT))
        scratch = conv2d_scratch_bytes(chosen)
        if scratch_limit_bytes is not None and scratch > scratch_limit_bytes:
            raise ScratchLimitError(f"conv2d: the window of one pixel needs {scratch} scratch bytes, more than "
                                    f"{scratch_limit_bytes}")
        return PackedLayer(kind="conv2d", params=chosen, weights=fc.weights, bias=fc.bias, requant=fc.requant,
                           scratch_bytes=scratch, weight_padding_bytes=fc.weight_padding_bytes,
                           notes=dict(fast_requant=bool(fc.notes["fast_requant"]), conv_fc=True))
    if chosen is None:
        raise ScratchLimitError(f"conv2d: no tile fits {scratch_limit_bytes} scratch bytes (the smallest needs "
                                f"{conv2d_scratch_bytes(dict(params, tile_pixels=2, flags=FLAG_BIAS_PER_BLOCK))})")
    if chosen["flags"] & FLAG_WIDE_WEIGHTS:  # per block and reduction pair 4 words, channel c's (k0, k1) int16 pair
        kv = np.zeros((cout4, kp), dtype=np.int16)
        kv[:cout] = kvec
        packed = kv.reshape(cout4 // 4, 4, kp // 2, 2).transpose(0, 2, 1, 3).astype("<i2").reshape(-1).view(np.int8)
    return PackedLayer(kind="conv2d", params=chosen, weights=packed,
                       bias=None if bias is None else np.asarray(bias, dtype=np.int32).copy(),
                       requant=table, scratch_bytes=conv2d_scratch_bytes(chosen),
                       weight_padding_bytes=int(packed.size - w.size),
                       notes=dict(k_pairs=kp // 2, fast_requant=fast))


def _pack_conv_c1(w: np.ndarray, bias, table: np.ndarray, fast: bool, params: dict) -> PackedLayer:
    """The one-channel path's records: per output channel {bias, the taps' weights as 5 int16 pairs (tap t =
    ky * kernel_w + kx, the pairs (t, t+1); taps past the kernel 0), mult, a, b} (the fast requantization's words;
    the generic form reads the requant table, kept as the struct's)."""
    cout = w.shape[0]
    taps = np.zeros((cout, 2 * 5), dtype=np.int64)
    taps[:, :w[0].size] = w.reshape(cout, -1)
    rec = np.zeros((cout, C1_RECORD_WORDS), dtype=np.int64)
    if bias is not None:
        rec[:, 0] = np.asarray(bias, dtype=np.int64).ravel()
    rec[:, 1:6] = (taps[:, 0::2] & 0xFFFF) | ((taps[:, 1::2] & 0xFFFF) << 16)
    rec[:, 6:9] = table[:cout, 0:3]
    words = (rec & 0xFFFFFFFF).astype("<u4").view(np.int8).reshape(-1)
    chosen = dict(params, tile_pixels=0, flags=FLAG_CONV_C1 | (FLAG_FAST_REQUANT if fast else 0))
    return PackedLayer(kind="conv2d", params=chosen, weights=words, bias=None, requant=table, scratch_bytes=0,
                       weight_padding_bytes=int(words.size - w.size), notes=dict(conv_c1=True, fast_requant=fast))


def conv2d_tile_choice(params: dict, scratch_limit_bytes: int | None, tile_pixels: int | None = None,
                       cache_all_weights: bool | None = None, wide: bool = False) -> dict | None:
    """The tile GEMM's struct fields for a dsp conv (``params``: :func:`pack_conv2d`'s, tile_pixels 0): the im2col
    tile, weight cache and bias layout that fit ``scratch_limit_bytes`` with the fewest extra instructions (the 1x1
    record stream where it applies); None if nothing fits. ``wide``: with the weights stored widened
    (FLAG_WIDE_WEIGHTS: no weight cache, nothing widened; never the record stream)."""
    npix_even = _ceil(params["out_h"] * params["out_w"], 2)
    tiles = [tile_pixels] if tile_pixels is not None else list(range(2, min(DEFAULT_TILE_PIXELS, npix_even) + 1, 2))
    if any(t < 2 or t % 2 for t in tiles):
        raise UsageError(f"conv2d: tile_pixels must be even and >= 2, got {tile_pixels}")
    kp = conv_k_pairs(params) * 2
    blocks = _ceil(params["out_c"], 4) // 4
    cache_options = [False] if wide else [cache_all_weights] if cache_all_weights is not None else \
        ([True, False] if blocks * (kp // 2) * 16 <= DEFAULT_WEIGHT_CACHE_LIMIT_BYTES else [False])
    chosen, best = None, None
    for per_block in (False, True):
        for cache in cache_options:
            for t in tiles:
                flags = params["flags"] | (FLAG_CACHE_ALL_WEIGHTS if cache else 0) | \
                    (FLAG_BIAS_PER_BLOCK if per_block else 0) | (FLAG_WIDE_WEIGHTS if wide else 0)
                trial = dict(params, tile_pixels=t, flags=flags)
                if scratch_limit_bytes is not None and conv2d_scratch_bytes(trial) > scratch_limit_bytes:
                    continue
                cost = conv2d_tile_cost(trial)
                if best is None or cost < best - 1e-12:  # ties: all blocks' biases at once (tried first)
                    chosen, best = trial, cost
    # the record stream where it applies, in the tile layout's scratch: a program's plan sizes the arena before
    # the scales (hence FLAG_FAST_REQUANT) are known, so the scratch must not depend on the choice
    if not wide and chosen is not None and s1x1_stream(chosen) and \
            s1x1_records_bytes(chosen) <= conv2d_scratch_bytes(chosen):
        chosen = dict(chosen, flags=chosen["flags"] | FLAG_1X1_STREAM)
    return chosen


def conv2d_widen_cost(npix: int, tile_pixels: int, cache: bool, wide: bool) -> float:
    """Instructions per MAC a tile-GEMM call spends widening its weights (1 a weight each time): once per im2col tile
    of ``tile_pixels``, once per call of ``npix`` output pixels when cached, never when stored widened."""
    return 0.0 if wide else 1.0 / max(npix, 1) if cache else 1.0 / tile_pixels


def conv2d_tile_cost(choice: dict) -> float:
    """Extra instructions per MAC of a tile-GEMM choice (measured on the M7): widening the weights (8 per 8 weights)
    once per im2col tile, once per call when cached (a patch tile's call pays it again), never when stored widened;
    ~60 per kernel call (one per tile and block of 4 channels), and ~12 per call to lay out the block's biases when
    only one block's fit in scratch."""
    p = choice
    kp = conv_k_pairs(p) * 2
    t = p["tile_pixels"]
    return conv2d_widen_cost(p["out_h"] * p["out_w"], t, bool(p["flags"] & FLAG_CACHE_ALL_WEIGHTS),
                             bool(p["flags"] & FLAG_WIDE_WEIGHTS)) + \
        (60.0 + (12.0 if p["flags"] & FLAG_BIAS_PER_BLOCK else 0.0)) / (t * 4 * kp)


def conv2d_wide_pays(params: dict, plain: dict | None, wide: dict | None, layer_pixels: int | None = None) -> bool:
    """Whether storing a dsp conv's weights widened (``wide``, :func:`conv2d_tile_choice` with wide=True) is worth one
    more flash byte a weight against ``plain`` (the same without): at most WIDE_WEIGHTS_MAX_BYTES int8 weights and
    at least WIDE_WEIGHTS_MIN_SAVED instructions saved an inference per extra byte — the per-MAC saving times the
    MACs of ``layer_pixels`` output pixels (a conv does one MAC per weight and pixel) over the weights — or the only
    tile GEMM that fits (the record stream and nested layouts keep int8 weights)."""
    if wide is None or params["flags"] & (FLAG_MVE | FLAG_RV | FLAG_TAP_RUNS):
        return False
    weights = params["out_c"] * params["kernel_h"] * params["kernel_w"] * params["in_c"]
    if weights > WIDE_WEIGHTS_MAX_BYTES:
        return False
    if plain is None:
        return True
    if plain["flags"] & FLAG_1X1_STREAM:
        return False
    pixels = layer_pixels if layer_pixels is not None else params["out_h"] * params["out_w"]
    return (conv2d_tile_cost(plain) - conv2d_tile_cost(wide)) * pixels >= WIDE_WEIGHTS_MIN_SAVED


# Instructions of the two conv layouts on the emulated M7, for choosing between them. Tile GEMM: per unit, output and
# input of cost.conv_tile_terms, as fitted over 22 whole layers (the cost profiles' terms are refitted with patch tiles
# by bench/conv_tile_fit.py; these stay, because the FC rows' cost below was fitted against them: with the refit's
# terms kws-dscnn's 10x4 first layer at width 0.5 went to FC rows, 295 k -> 390 k instructions). FLAG_CONV_FC,
# fitted by bench/conv_fc_fit.py on the emulated M7: per MAC of the padded window (K rounded up to 4) and channels (to
# 4), per pixel and block of 4 channels (the FC kernel's set-up, folds and requantization), per pixel and window byte
# (preparing the FC row; channels not in fours: gathering the bytes first, the last term), per pixel.
CONV_TILE_COST = (0.7091, 51.24, 1.436)
CONV_FC_COST = (0.904, 64.1, 1.68, 288.0, 5.69)


def conv2d_fc_instructions(params: dict) -> float:
    """Estimated instructions of one FLAG_CONV_FC call (:data:`CONV_FC_COST`)."""
    p = params
    pixels = p["out_h"] * p["out_w"]
    k4, c4 = _ceil(p["kernel_h"] * p["kernel_w"] * p["in_c"], 4), _ceil(p["out_c"], 4)
    a, per_block, per_byte, per_pixel, gather = CONV_FC_COST
    return pixels * (a * k4 * c4 + per_block * c4 / 4 + (per_byte + (gather if p["in_c"] % 4 else 0.0)) * k4
                     + per_pixel)


def conv2d_tile_instructions(params: dict) -> float:
    """Estimated instructions of one tile-GEMM call (:data:`CONV_TILE_COST` in cost.conv_tile_terms' terms)."""
    from edgekit.targets.mcu.cost import conv_tile_terms

    return float(np.dot(CONV_TILE_COST, conv_tile_terms(params)))


def conv2d_fc_pays(params: dict, tile_choice: dict | None, scratch_limit_bytes: int | None) -> bool:
    """Whether FLAG_CONV_FC runs this dsp conv (``params``: :func:`pack_conv2d`'s, geometry and flags) in fewer
    instructions than ``tile_choice`` (:func:`conv2d_tile_choice`), or is the only layout that fits
    ``scratch_limit_bytes``. Pays where the GEMM's tile is small (little scratch: its weights widened again every
    few pixels) and the window and channels large; never instead of the 1x1 record stream."""
    if params["flags"] & (FLAG_MVE | FLAG_RV | FLAG_TAP_RUNS):
        return False
    fc = dict(params, tile_pixels=0, flags=FLAG_CONV_FC)
    if scratch_limit_bytes is not None and conv2d_scratch_bytes(fc) > scratch_limit_bytes:
        return False
    if tile_choice is None:
        return True
    if tile_choice["flags"] & FLAG_1X1_STREAM:
        return False
    return conv2d_fc_instructions(params) < conv2d_tile_instructions(tile_choice)


def conv2d_layout(params: dict, scratch_limit_bytes: int | None) -> dict | None:
    """The struct fields :func:`pack_conv2d` chooses by default for a dsp conv (the tile GEMM's or FLAG_CONV_FC);
    None if nothing fits the scratch limit. For planners that size scratch before packing."""
    tile = conv2d_tile_choice(params, scratch_limit_bytes)
    if conv2d_fc_pays(params, tile, scratch_limit_bytes):
        return dict(params, tile_pixels=0, flags=FLAG_CONV_FC)
    return tile


def conv2d_gemm_scratch(params: dict, most: int) -> int | None:
    """The least scratch, at most ``most`` bytes, with which :func:`conv2d_layout` runs a dsp conv (``params``: a
    packed call's fields, e.g. one on FLAG_CONV_FC) on the tile GEMM rather than as FC rows; None if none does. A
    planner granting scratch offers it: below it the GEMM's tile is too small to beat the FC rows."""
    if params["flags"] & FLAG_CONV_C1:  # no scratch to grant: the one-channel path needs none
        return None
    base = dict(params, tile_pixels=0, flags=params["flags"] & (FLAG_FAST_REQUANT | FLAG_TAP_RUNS))
    sizes = sorted({conv2d_scratch_bytes(dict(base, tile_pixels=t, flags=base["flags"] | extra))
                    for t in range(2, DEFAULT_TILE_PIXELS + 1, 2)
                    for extra in (0, FLAG_BIAS_PER_BLOCK, FLAG_CACHE_ALL_WEIGHTS,
                                  FLAG_CACHE_ALL_WEIGHTS | FLAG_BIAS_PER_BLOCK)})
    for size in (s for s in sizes if s <= most):
        chosen = conv2d_layout(base, size)
        if chosen is not None and not chosen["flags"] & FLAG_CONV_FC:
            return size
    return None


def _check_strides(params: dict, what: str) -> None:
    if params["in_row_stride"] < params["in_w"] * params["in_c"]:
        raise UsageError(f"{what}: in_row_stride {params['in_row_stride']} is shorter than a row "
                         f"({params['in_w']} x {params['in_c']} bytes)")
    if params["out_row_stride"] < params["out_w"] * params["out_c"]:
        raise UsageError(f"{what}: out_row_stride {params['out_row_stride']} is shorter than a row "
                         f"({params['out_w']} x {params['out_c']} bytes)")


def dw_view(params: dict) -> dict:
    """A depthwise call's parameters as its kernels see them: for FLAG_DW_TRANSPOSED (a tall, narrow map run as a
    short, wide one: ek_depthwise_conv2d_s8's ek__dw_transpose) heights and widths, strides, dilations and paddings
    swapped; otherwise ``params`` itself."""
    if not params.get("flags", 0) & FLAG_DW_TRANSPOSED:
        return params
    v = dict(params)
    for a, b in (("in_h", "in_w"), ("out_h", "out_w"), ("kernel_h", "kernel_w"), ("stride_h", "stride_w"),
                 ("dilation_h", "dilation_w"), ("pad_top", "pad_left"), ("pad_bottom", "pad_right")):
        if a in params and b in params:
            v[a], v[b] = params[b], params[a]
    return v


def depthwise_conv2d_scratch_bytes(params: dict) -> int:
    """Scratch bytes of ek_depthwise_conv2d_s8 (ek_depthwise_conv2d_s8_scratch_bytes): 4 channels x a ring of
    ``(kernel_h - 1) * dilation_h + 1`` int16 rows of the padded width (+ slack), wide enough for the outputs rounded
    up to 4 (the row kernels' group); the pairs layout: the larger of its plane (:func:`dw_pairs_plane_bytes`) and
    that ring. Helium: a row of the input zero point, ``ceil16(C)`` bytes."""
    p = params
    if p.get("flags", 0) & FLAG_MVE:
        return _ceil(p["in_c"], 16)
    if p.get("flags", 0) & (FLAG_DW_CHANNELS | FLAG_RV):
        return 0
    p = dw_view(p)

    def ring(out_w, stride_w, kernel_w, dilation_w, kernel_h, dilation_h):
        out_w4 = (out_w + 3) // 4 * 4
        plane_w = (out_w4 - 1) * stride_w + (kernel_w - 1) * dilation_w + 1
        return 4 * ((kernel_h - 1) * dilation_h + 1) * ((plane_w + 3) // 2) * 4

    size = ring(p["out_w"], p["stride_w"], p["kernel_w"], p["dilation_w"], p["kernel_h"], p["dilation_h"])
    if depthwise_runs_columns(p):  # the DSP build runs a 3x1 as a 1x3 down the columns: the larger ring
        size = max(size, ring(p["out_h"], p["stride_h"], 3, 1, 1, 1))
    if p.get("flags", 0) & FLAG_DW_PAIRS:  # the pairs plane, or a ring where a firmware leaves the pairs code out
        size = max(size, dw_pairs_plane_bytes(p["out_h"], p["out_w"], p["stride_h"], p["stride_w"]))
    return size


def dw_pairs_plane_bytes(out_h: int, out_w: int, stride_h: int, stride_w: int) -> int:
    """Scratch of the ``pairs`` layout (ek__dw_pairs): one group of 4 channels' padded plane, 16 bytes per column
    pair, as many column pairs as the output pairs read and the kernel rows the output rows read."""
    npo = (out_w + 1) // 2
    pw = 2 * npo + 1 if stride_w == 2 else npo + 1
    return ((out_h - 1) * stride_h + 3) * pw * 16


def dw_pairs_terms(stride_h: int, stride_w: int, out_h: int, out_w: int, channels: int, in_h: int, in_w: int,
                   pad_top: int, pad_left: int) -> list[int]:
    """The counts behind DW_PAIRS_COST (DW_PAIRS_TERMS order) for one call of the pairs layout."""
    npo = (out_w + 1) // 2
    pw = 2 * npo + 1 if stride_w == 2 else npo + 1
    ph = (out_h - 1) * stride_h + 3
    chp, g4 = channels // 2, channels // 4
    in_rows = max(min(pad_top + in_h, ph) - max(pad_top, 0), 0)
    j_lo, j_hi = (pad_left + 1) // 2, min((pad_left + in_w) // 2, pw)
    edges = int(bool(pad_left & 1) and j_lo - 1 < pw) + int(bool((pad_left + in_w) & 1) and j_hi < pw)
    return [chp * out_h * npo, chp * out_h, chp, g4 * in_rows, g4 * in_rows * max(j_hi - j_lo, 0),
            g4 * in_rows * edges, ph * pw * 4, 1]


def dw_pairs_instructions(stride_h: int, stride_w: int, out_h: int, out_w: int, channels: int, in_h: int, in_w: int,
                          pad_top: int, pad_left: int, tail: bool = True) -> float:
    """Estimated M7 instructions of one call of the pairs layout (DW_PAIRS_COST, DW_PAIRS_TAIL)."""
    cost = DW_PAIRS_COST[stride_w]
    terms = dw_pairs_terms(stride_h, stride_w, out_h, out_w, channels, in_h, in_w, pad_top, pad_left)
    total = sum(cost[k] * v for k, v in zip(DW_PAIRS_TERMS, terms))
    return total + (DW_PAIRS_TAIL[channels % 4] * out_h * out_w if tail else 0.0)


def depthwise_code_variants(p: dict) -> set[str]:
    """The parts of ek_depthwise_conv2d_s8's DSP code a call packed with ``p`` runs (as the C dispatch decides):
    ``rows`` (the row kernels over a ring), within them ``1x3`` (1x3, and 3x1 on the transposed view), ``1xk`` (the
    1xK row kernel: other 1xK kernels at stride 1, and Kx1 on the transposed view) and ``5x5``,
    within the 3x3 ones one of ``rows_s1``, ``rows_s1_nc``, ``rows_s2``, ``rows_s2_nc`` (the row kernel per stride,
    with the clamp or without: "_nc" when the activation range is all of int8), ``ch3x3`` / ``ch3x3_nc`` (the
    channels-last 3x3 pixel kernels), ``ch5x5`` / ``ch5x5_nc`` (their 5x5 variants), ``chk1`` (their Kx1 loop, a
    Conv1d's), ``channels`` (the channels-last layout's C path and dispatch: every channels-last call; unlike the
    others it has no fallback, its weights being int16 pairs), ``ring`` (the generic ring path: the rows layout's
    calls no row kernel runs — no fast requantization, dilation, other kernels — and the fallback of the parts
    above; left out only when no call comes to it, DSP builds alone), ``pairs`` (the pairs layout)
    and within it one of ``pairs_s1``, ``pairs_s1_nc``, ``pairs_s2``, ``pairs_s2_nc`` (its asm per stride, with the
    clamp or without). A firmware leaves out the parts none of its calls runs (EK_NN_NO_DW_ROWS, EK_NN_NO_DW1X3,
    EK_NN_NO_DW1XK,
    EK_NN_NO_DW5X5, EK_NN_NO_DWR_S1, EK_NN_NO_DW_CH3X3, EK_NN_NO_DW_CH3X3_NC, ..., EK_NN_NO_DW_PAIRS,
    EK_NN_NO_DWP_S1, ..., EK_NN_NO_DW_CHANNELS, EK_NN_NO_DW_RING: pipeline.firmware_cflags). The optional parts
    fall back (to the generic ring path; a call whose no-clamp function is left out runs the clamp one), so leaving
    them out never changes a result; ``channels`` and ``ring`` have no fallback and go only when no call runs them
    (a call that would reach them is refused, EK_NN_ERR_ARG)."""
    flags = p.get("flags", 0)
    if flags & (FLAG_MVE | FLAG_RV):
        return set()
    if not flags & FLAG_FAST_REQUANT:  # the generic paths (channels-last: its C loop; else the ring path)
        return {"channels"} if flags & FLAG_DW_CHANNELS else {"ring"}
    p = dw_view(p)
    kh, kw, sw = p["kernel_h"], p["kernel_w"], p["stride_w"]
    if flags & FLAG_DW_CHANNELS and kw == 1 and kh > 1:  # a Kx1 kernel's asm loop (dilated too)
        return {"channels", "chk1"}
    if (p["dilation_h"], p["dilation_w"]) != (1, 1):
        return {"channels"} if flags & FLAG_DW_CHANNELS else {"ring"}
    nc = "_nc" if (p["act_min"], p["act_max"]) == (-128, 127) else ""
    if flags & FLAG_DW_CHANNELS:
        return {"channels"} | ({"ch3x3" + nc} if (kh, kw) == (3, 3) else {"ch5x5" + nc} if (kh, kw) == (5, 5) else
                               set())
    if flags & FLAG_DW_PAIRS:  # its C driver, and one of its 4 asm functions
        if p["out_w"] < 2:
            return {"pairs"}
        return {"pairs", f"pairs_s{p['stride_w']}" + nc}
    if dw1xk_runs(p):
        return {"rows", "1xk"}
    if kw == 3 and kh in (1, 3) and sw in (1, 2):
        return {"rows", "1x3"} if kh == 1 else {"rows", f"rows_s{sw}{nc}"}
    if (kh, kw) == (5, 5) and sw in (1, 2):
        return {"rows", "5x5"}
    if depthwise_runs_columns(p):
        return {"rows", "1x3"}
    return {"ring"}  # other kernels: the generic ring path


def gemm_code_variants(kind: str, p: dict) -> set[str]:
    """The asm block kernels of ek_conv2d_s8's and ek_fully_connected_s8's DSP code a call packed with ``p`` may run:
    ``gemm_fast`` / ``gemm_fast_nc`` (a conv's 4-channel blocks requantized in asm, with the clamp or without: "_nc"
    when the activation range is all of int8), ``gemm_raw`` (its raw accumulators: no fast requantization, or a last
    block of 1-3 channels), ``fc_raw`` (the FC's raw block: no fast requantization; a conv's FC-rows path too),
    ``conv_c1_path`` with ``conv_c1`` / ``conv_c1_nc`` (the one-channel path, FLAG_CONV_C1, and its asm loop);
    Helium calls: ``mve_part`` (ek__mve_blk4's loops for a last block of 1-3 channels: EK_NN_NO_MVE_PART). A
    firmware leaves out the ones none of its calls may run (EK_NN_NO_GEMM_FAST, ..., EK_NN_NO_FC_RAW:
    pipeline.firmware_cflags); each has an exact fallback (the clamp kernel, raw accumulators and C requantization,
    the portable loop), so that never changes a result."""
    flags = p.get("flags", 0)
    fast = bool(flags & FLAG_FAST_REQUANT)
    if flags & FLAG_MVE:  # the Helium block kernels' loops with the predicated store of a last block of 1-3 channels
        return {"mve_part"} if fast and p["out_c" if kind == "ek_conv" else "out_features"] % 4 else set()
    if flags & FLAG_RV:
        return set()
    if kind == "ek_conv" and flags & FLAG_CONV_C1:  # the one-channel path and its asm loop (C alone when not fast):
        # no clamp; the clamp 4 channels a turn; or (out_c not a multiple of 4) no clamp and the clamp in C
        clamp4 = (p["act_min"], p["act_max"]) != (-128, 127) and p["out_c"] % 4 == 0 and p["out_row_stride"] % 4 == 0
        return {"conv_c1_path"} | ({"conv_c1" if clamp4 else "conv_c1_nc"} if fast else set())
    if kind == "ek_fc":
        return set() if fast else {"fc_raw"}
    if kind != "ek_conv":
        return set()
    out = set()
    if fast:
        out.add("gemm_fast_nc" if (p["act_min"], p["act_max"]) == (-128, 127) else "gemm_fast")
    if not fast or p["out_c"] % 4:
        out.add("gemm_raw")
    if flags & FLAG_CONV_FC and not fast:
        out.add("fc_raw")
    return out


def elementwise_code_variants(kind: str, p: dict) -> set[str]:
    """The optional DSP loops of ek_add_s8 and ek_pool_s8 a call packed with ``p`` may run: ``add4``, ``add4_clamp``,
    ``add4s``, ``add4s_clamp`` (the add's SMLAD loop: "s" for short multipliers, whose low 16 bits are 0, one SMLAD an
    element; with the clamp when the activation range is not all of int8), ``gap`` (the pool's global average in
    chunks of int16 sums), ``maxrows`` (2x2 and 3x3 max pooling's asm row kernels), ``maxrow1`` (the one-row max loop
    of a 1-D max pool, :func:`pool_runs_1row`). A firmware leaves out the ones none of its calls may run
    (EK_NN_NO_ADD4, ..., EK_NN_NO_GAP, EK_NN_NO_MAXROWS, EK_NN_NO_MAXROW1: pipeline.firmware_cflags); the C loops
    stay, so that never changes a result."""
    flags = p.get("flags", 0)
    if flags & FLAG_RV:
        return set()
    if kind == "ek_add" and flags & FLAG_ADD_PAIRS:
        short = p["a_mult"] % 65536 == 0 and p["b_mult"] % 65536 == 0
        clamp = p["act_min"] > -128 or p["act_max"] < 127
        return {"add4" + ("s" if short else "") + ("_clamp" if clamp else "")}
    if kind == "ek_pool" and p["mode"] == POOL_AVG and (p["out_h"], p["out_w"]) == (1, 1) and pool_global_chunks(
            "avg", (p["in_h"], p["in_w"], p["channels"]), (p["kernel_h"], p["kernel_w"]), p["pad_top"], p["pad_left"],
            -p["input_offset"], p["shift"]):
        return {"gap"}
    if kind == "ek_pool" and p["mode"] == POOL_MAX and p["kernel_h"] == p["kernel_w"] and p["kernel_h"] in (2, 3) \
            and p["channels"] % 4 == 0 and not flags & FLAG_MVE:
        return {"maxrows"}
    if kind == "ek_pool" and pool_runs_1row(p):
        return {"maxrow1"}
    return set()


def depthwise_runs_columns(p: dict) -> bool:
    """A 3x1 depthwise kernel that ek_nn_s8.c runs as a 1x3 on the transposed map (ek__dw_columns)."""
    return (p["kernel_h"], p["kernel_w"], p["dilation_h"], p["dilation_w"]) == (3, 1, 1, 1) and \
        p.get("stride_h", 1) in (1, 2)


def depthwise_layout(kh: int, kw: int, stride_w: int, dilation_h: int, dilation_w: int, out_w: int,
                     channels: int, stride_h: int = 1, isa: str = "dsp", out_h: int | None = None,
                     geometry: tuple[int, int, int, int] | None = None, transposed: bool = True) -> str:
    """``rows``, ``channels`` or ``pairs`` (or, with ``transposed`` on the DSP cores, ``rows_t`` / ``pairs_t``: the
    same on the transposed map) for a depthwise layer of this geometry (see :func:`pack_depthwise_conv2d`),
    also for each patch tile's window: on the DSP cores by the measured cost of each
    (:func:`depthwise3x3_layer_instructions`; ``out_h`` None: a square map; ``geometry`` (in_h, in_w, pad_top,
    pad_left), None: padding 1 and the input the outputs read), elsewhere by fixed thresholds (rows or channels)."""
    if dilation_h != 1 or dilation_w != 1:
        return "channels"
    if isa != "rv32" and dw1xk_applies(kh, kw, stride_w, dilation_w, out_w):  # a 1xK row: the 1xK row kernel
        return "rows"
    if isa != "rv32" and out_h is not None and dw1xk_applies(kw, kh, stride_h, dilation_h, out_h):  # Kx1 (Conv1d)
        return "rows_t"
    # 1x3, 3x1 (a 1x3 down the columns) and 5x5 have DSP row kernels and nothing faster channels-last (cores
    # without SIMD would run the portable row loop: they keep channels-last) — but for 5x5 on maps at most
    # DW5_CHANNELS_MAX_OUT_W wide, where most taps fall in the padding, which channels-last skips
    if isa != "rv32" and (kh, kw) == (5, 5) and stride_w in (1, 2):
        return "channels" if out_w <= DW5_CHANNELS_MAX_OUT_W else "rows"
    if isa != "rv32" and (((kh, kw) == (1, 3) and stride_w in (1, 2)) or ((kh, kw) == (3, 1) and stride_h in (1, 2))):
        return "rows"
    rows_ok = (kh, kw) == (3, 3) and stride_w in (1, 2)
    if not rows_ok:
        return "channels"
    if isa != "dsp":
        wins = channels < DW_CHANNELS_MIN_C or (stride_w == 1 and out_w >= DW_ROWS_MIN_OUT_W)
        return "rows" if wins else "channels"
    cost = depthwise3x3_layer_instructions(stride_h, stride_w, out_h or out_w, out_w, channels, geometry,
                                           transposed=transposed)
    return min(cost, key=cost.get)


def depthwise3x3_layer_instructions(stride_h: int, stride_w: int, out_h: int, out_w: int, channels: int,
                                    geometry: tuple[int, int, int, int] | None = None,
                                    transposed: bool = True) -> dict[str, float]:
    """Estimated M7 instructions of a 3x3 depthwise layer (stride_w 1 or 2; ``geometry`` (in_h, in_w, pad_top,
    pad_left), None: padding 1 and the input as large as the outputs read) per layout: ``rows``
    (:func:`depthwise3x3_row_instructions` per output row), ``channels`` (:func:`dw_channels_instructions`) and
    ``pairs`` (:func:`dw_pairs_instructions`, where its plane fits DW_PAIRS_MAX_SCRATCH and there are 2 outputs a
    row); with ``transposed`` also ``rows_t`` and ``pairs_t``, the same on the transposed map (FLAG_DW_TRANSPOSED:
    rows of outputs are the map's columns, so a tall, narrow map such as a keyword CNN's 25x5 runs as a 5x25 one),
    where stride_h is 1 or 2."""
    in_h, in_w, pad_top, pad_left = geometry or (out_h * stride_h, out_w * stride_w, 1, 1)
    cost = {"rows": depthwise3x3_row_instructions(stride_w, out_w, channels) * out_h,
            "channels": dw_channels_instructions(stride_h, stride_w, out_h, out_w, channels, in_h, in_w, pad_top,
                                                 pad_left)}
    if out_w >= 2 and dw_pairs_plane_bytes(out_h, out_w, stride_h, stride_w) <= DW_PAIRS_MAX_SCRATCH:
        cost["pairs"] = dw_pairs_instructions(stride_h, stride_w, out_h, out_w, channels, in_h, in_w, pad_top,
                                              pad_left)
    if transposed and stride_h in (1, 2):
        view = depthwise3x3_layer_instructions(stride_w, stride_h, out_w, out_h, channels,
                                               (in_w, in_h, pad_left, pad_top), transposed=False)
        cost.update({f"{k}_t": v for k, v in view.items() if k != "channels"})
    return cost


def depthwise3x3_row_instructions(stride_w: int, out_w: int, channels: int) -> float:
    """Estimated M7 instructions of one output row of a 3x3 depthwise layer (stride 1 or 2) in the ``rows`` layout
    (DW_ROWS_COST): what :func:`depthwise_layout` compares, also for a patch tile's narrower maps."""
    r = DW_ROWS_COST[stride_w]
    return channels * (r["base"] + r["per_out"] * -(-out_w // 4) * 4 + r["tail"][out_w % 4]) + \
        r["per_group_row"] * -(-channels // 4)


def _taps_inside(out: int, stride: int, size: int, pad: int, k: int = 3, dilation: int = 1) -> list[int]:
    """Kernel taps (of ``k``) inside the input along one axis, for each of the ``out`` outputs."""
    if dilation != 1:
        return [sum(1 for t in range(k) if 0 <= o * stride - pad + t * dilation < size) for o in range(out)]
    return [max(0, min(k, size + pad - o * stride) - max(0, pad - o * stride)) for o in range(out)]


def _asm_taps(n: int) -> bool:
    """Whether a pixel with ``n`` taps inside the map along an axis runs the asm pixel kernels (2 or 3)."""
    return 2 <= n <= 3


def dw_channels_terms(stride_h: int, stride_w: int, out_h: int, out_w: int, channels: int, in_h: int, in_w: int,
                      pad_top: int, pad_left: int, k: int = 3) -> list[int]:
    """The counts behind DW_CHANNELS_COST (DW_CHANNELS_TERMS order) for one call of the channels-last layout with
    its asm pixel kernels (a ``k`` x ``k`` kernel, fast requantization): a pixel's taps inside the map are its rows
    inside times its columns inside. The asm runs the pixels with 2-3 of each inside, the C loop the others (a map's
    border rows or columns with padding 2, 1-wide maps): their pixel-groups, pixel-group kernel rows and taps."""
    rows, cols = _taps_inside(out_h, stride_h, in_h, pad_top, k), _taps_inside(out_w, stride_w, in_w, pad_left, k)
    asm_rows, asm_cols = [n for n in rows if _asm_taps(n)], [n for n in cols if _asm_taps(n)]
    groups, pixels = channels // 4, out_h * out_w
    asm_pixels = len(asm_rows) * len(asm_cols)
    asm_taps = sum(asm_rows) * sum(asm_cols)
    c_rows = sum(rows) * out_w - sum(asm_rows) * len(asm_cols)  # kernel rows of the C loop's pixels
    c_taps = sum(rows) * sum(cols) - asm_taps
    return [pixels, asm_pixels * groups, groups * asm_taps, out_h, 1, (pixels - asm_pixels) * groups, groups * c_rows,
            groups * c_taps]


def dw_channels_instructions(stride_h: int, stride_w: int, out_h: int, out_w: int, channels: int, in_h: int,
                             in_w: int, pad_top: int, pad_left: int, tail: bool = True, k: int = 3) -> float:
    """Estimated M7 instructions of one call of the channels-last layout's asm pixel kernels (DW_CHANNELS_COST,
    DW_CHANNELS_TAIL; stride_w beyond 2 priced as 2; a 5x5 kernel, where :func:`dw_channels_asm_covers`, as its
    taps inside the map)."""
    cost = DW_CHANNELS_COST[1 if stride_w == 1 else 2]
    terms = dw_channels_terms(stride_h, stride_w, out_h, out_w, channels, in_h, in_w, pad_top, pad_left, k)
    total = sum(cost[key] * v for key, v in zip(DW_CHANNELS_TERMS, terms))
    return total + (DW_CHANNELS_TAIL[channels % 4] * out_h * out_w if tail else 0.0)


def dw_channels_asm_covers(p: dict) -> bool:
    """Whether every output pixel of a channels-last depthwise call runs the DSP asm pixel kernels (ek_nn_s8.c:
    ek__dw_ch3x3_px and its variants): 3x3, or 5x5 with 2 or 3 taps a side inside the map; no dilation, fast
    requantization, at least 4 channels (a pixel with 1 tap row or column inside the map runs the C loop)."""
    kh, kw = p["kernel_h"], p["kernel_w"]
    if (kh, kw) not in ((3, 3), (5, 5)) or (p["dilation_h"], p["dilation_w"]) != (1, 1) or \
            not p.get("flags", 0) & FLAG_FAST_REQUANT or p["in_c"] < 4:
        return False
    return all(_asm_taps(n) for n in _taps_inside(p["out_h"], p["stride_h"], p["in_h"], p["pad_top"], kh) +
               _taps_inside(p["out_w"], p["stride_w"], p["in_w"], p["pad_left"], kh))


def pack_depthwise_conv2d(weights: np.ndarray, bias: np.ndarray | None, mult, shift, *, input_shape, x_zp: int,
                          out_zp: int, act_min: int = -128, act_max: int = 127, stride=1, dilation=1, padding=0,
                          in_row_stride: int | None = None, out_row_stride: int | None = None,
                          layout: str = "auto", isa: str = "dsp") -> PackedLayer:
    """Pack a depthwise convolution (channel multiplier 1) for ``ek_depthwise_conv2d_s8``.

    ``weights`` int8 ``[C, 1, KH, KW]``; other arguments as :func:`pack_conv2d`. ``layout``: ``rows`` (the row
    kernels over a ring of widened rows; weights kept in PyTorch layout), ``channels`` (4 channels per pixel at once,
    weights as int16 pairs per tap and group of 4 channels: (w0|w2, w1|w3), 2 bytes per weight), ``pairs`` (3x3,
    stride_w 1 or 2: a padded plane of column pairs per 4 channels; weights in PyTorch layout), ``rows_t`` /
    ``pairs_t`` (3x3, stride_h 1 or 2: rows / pairs on the transposed map, FLAG_DW_TRANSPOSED, each kernel stored
    transposed; params stay the layer's own) or ``auto``: rows
    or pairs for 3x3 (stride 1 or 2, no dilation) where they are faster and always for 1x3, 3x1 and 5x5 (stride 1
    or 2; 5x5 on outputs at most DW5_CHANNELS_MAX_OUT_W wide channels-last) (:func:`depthwise_layout`), else
    channels (geometry only, so planning with placeholder scales picks the same). ``isa="mve"``: the Helium layout
    where it pays (:func:`mve_depthwise_applies`: up to MVE_DW_MAX_TAPS taps and at least MVE_DW_MIN_CHANNELS
    channels; the others keep the dsp layouts).
    """
    _check_isa(isa)
    w = _check_int8_weights(weights, "depthwise_conv2d")
    if w.ndim != 4 or w.shape[1] != 1:
        raise UnsupportedError(f"depthwise_conv2d weights must be [C, 1, KH, KW] (channel multiplier 1), "
                               f"got shape {w.shape}")
    c, _, kh, kw = w.shape
    if int(input_shape[2]) != c:
        raise UsageError(f"depthwise_conv2d: input has {input_shape[2]} channels, weights have {c}")
    g = _conv_geometry(input_shape, (kh, kw), stride, dilation, padding)
    mult, shift = _check_quant(mult, shift, c, out_zp, act_min, act_max, "depthwise_conv2d")
    table, fast = requant_table(mult, shift, out_zp, act_min, act_max)
    params = dict(in_h=g["in_h"], in_w=g["in_w"], in_c=c,
                  in_row_stride=int(in_row_stride if in_row_stride is not None else g["in_w"] * c),
                  out_h=g["out_h"], out_w=g["out_w"], out_c=c,
                  out_row_stride=int(out_row_stride if out_row_stride is not None else g["out_w"] * c),
                  kernel_h=kh, kernel_w=kw, stride_h=g["stride_h"], stride_w=g["stride_w"],
                  dilation_h=g["dilation_h"], dilation_w=g["dilation_w"], pad_top=g["pad_top"],
                  pad_bottom=g["pad_bottom"], pad_left=g["pad_left"], pad_right=g["pad_right"],
                  input_offset=-int(x_zp), output_offset=int(out_zp), act_min=int(act_min), act_max=int(act_max),
                  tile_pixels=0, flags=FLAG_FAST_REQUANT if fast else 0, weight_block_bytes=0, weight_run_pairs=0)
    _check_strides(params, "depthwise_conv2d")
    if isa == "mve" and mve_depthwise_applies(kh * kw, c):
        groups = _ceil(c, 16) // 16
        flat = w.reshape(c, kh * kw)
        w16 = np.zeros((groups * 16, kh * kw), dtype=np.int8)
        w16[:c] = flat
        packed = w16.reshape(groups, 16, kh * kw).transpose(0, 2, 1).reshape(-1)
        lanes = list(MVE_DW_LANES)
        b16 = _mve_bias(bias, flat, x_zp, groups * 16).reshape(groups, 16)[:, lanes].reshape(-1)
        table, fast = mve_requant_table(mult, shift, out_zp, act_min, act_max, lanes=16, order=lanes)
        params["flags"] = FLAG_MVE | (FLAG_FAST_REQUANT if fast else 0)
        return PackedLayer(kind="depthwise_conv2d", params=params, weights=packed, bias=b16.astype(np.int32),
                           requant=table, scratch_bytes=depthwise_conv2d_scratch_bytes(params),
                           weight_padding_bytes=int(packed.size - w.size),
                           notes=dict(fast_requant=fast, layout="mve", isa="mve"))
    if isa == "rv32" and rv_depthwise_applies(kh, kw, g["stride_w"], g["dilation_h"], g["dilation_w"], g["out_w"]):
        table, fast = requant_table(mult, shift, out_zp, act_min, act_max, clamp_after=True)
        params["flags"] = FLAG_RV | (FLAG_FAST_REQUANT if fast else 0)
        return PackedLayer(kind="depthwise_conv2d", params=params, weights=w.reshape(-1).astype(np.int8),
                           bias=None if bias is None else np.asarray(bias, dtype=np.int32).copy(),
                           requant=table, scratch_bytes=0, weight_padding_bytes=0,
                           notes=dict(fast_requant=fast, isa="rv32"))
    if layout == "auto":
        layout = depthwise_layout(kh, kw, g["stride_w"], g["dilation_h"], g["dilation_w"], g["out_w"], c,
                                  stride_h=g["stride_h"], isa=isa, out_h=g["out_h"],
                                  geometry=(g["in_h"], g["in_w"], g["pad_top"], g["pad_left"]))
    if layout not in ("rows", "channels", "pairs", "rows_t", "pairs_t"):
        raise UsageError(f"depthwise_conv2d: layout must be rows, channels, pairs, rows_t, pairs_t or auto, got "
                         f"{layout!r}")
    if layout.endswith("_t"):  # the transposed map: the kernel transposed too, the same code on the view
        kx1 = layout == "rows_t" and dw1xk_applies(kw, kh, g["stride_h"], g["dilation_h"], g["out_h"])
        if not kx1 and ((kh, kw, g["dilation_h"], g["dilation_w"]) != (3, 3, 1, 1) or g["stride_h"] not in (1, 2)):
            raise UsageError(f"depthwise_conv2d: the {layout} layout takes 3x3 kernels, dilation 1, stride_h 1 or 2"
                             + (" (rows_t also Kx1 kernels, stride_h 1)" if layout == "rows_t" else ""))
        params["flags"] |= FLAG_DW_TRANSPOSED
        w = np.ascontiguousarray(w.transpose(0, 1, 3, 2))
        layout = layout[:-2]
        if layout == "rows":
            return PackedLayer(kind="depthwise_conv2d", params=params, weights=w.reshape(-1).astype(np.int8),
                               bias=None if bias is None else np.asarray(bias, dtype=np.int32).copy(),
                               requant=table, scratch_bytes=depthwise_conv2d_scratch_bytes(params),
                               weight_padding_bytes=0, notes=dict(fast_requant=fast, layout="rows_t"))
    if layout == "pairs":
        view = dw_view(params)
        if (kh, kw, g["dilation_h"], g["dilation_w"]) != (3, 3, 1, 1) or view["stride_w"] not in (1, 2):
            raise UsageError("depthwise_conv2d: the pairs layout takes 3x3 kernels, dilation 1, stride_w 1 or 2")
        params["flags"] |= FLAG_DW_PAIRS
        return PackedLayer(kind="depthwise_conv2d", params=params, weights=w.reshape(-1).astype(np.int8),
                           bias=None if bias is None else np.asarray(bias, dtype=np.int32).copy(),
                           requant=table, scratch_bytes=depthwise_conv2d_scratch_bytes(params),
                           weight_padding_bytes=0,
                           notes=dict(fast_requant=fast, layout="pairs_t" if view is not params else "pairs"))
    if layout == "channels":
        params["flags"] |= FLAG_DW_CHANNELS
        groups = _ceil(c, 4) // 4
        w4 = np.zeros((groups * 4, kh * kw), dtype=np.int16)
        w4[:c] = w.reshape(c, kh * kw)
        pairs = w4.reshape(groups, 4, kh * kw)[:, [0, 2, 1, 3], :].transpose(0, 2, 1)  # [g, tap, (c0 c2 c1 c3)]
        packed = np.ascontiguousarray(pairs).astype("<i2").view(np.int8).reshape(-1)
        return PackedLayer(kind="depthwise_conv2d", params=params, weights=packed,
                           bias=None if bias is None else np.asarray(bias, dtype=np.int32).copy(),
                           requant=table, scratch_bytes=0, weight_padding_bytes=int(packed.size - w.size),
                           notes=dict(fast_requant=fast, layout="channels"))
    packed = w.reshape(-1).astype(np.int8)
    return PackedLayer(kind="depthwise_conv2d", params=params, weights=packed,
                       bias=None if bias is None else np.asarray(bias, dtype=np.int32).copy(),
                       requant=table, scratch_bytes=depthwise_conv2d_scratch_bytes(params),
                       weight_padding_bytes=0, notes=dict(fast_requant=fast))


def fully_connected_scratch_bytes(params: dict) -> int:
    """Scratch bytes of ek_fully_connected_s8 (ek_fully_connected_s8_scratch_bytes): one prepared input row,
    8 bytes per 4 inputs (Helium and the scalar kernels: none)."""
    if params.get("flags", 0) & (FLAG_MVE | FLAG_RV):
        return 0
    return _ceil(params["in_features"], 4) // 4 * 8


def pack_fully_connected(weights: np.ndarray, bias: np.ndarray | None, mult, shift, *, x_zp: int, out_zp: int,
                         act_min: int = -128, act_max: int = 127, batch: int = 1, in_row_stride: int | None = None,
                         out_row_stride: int | None = None, isa: str = "dsp",
                         rv_pairs: bool | None = None) -> PackedLayer:
    """Pack a fully connected layer for ``ek_fully_connected_s8``: ``weights`` int8 ``[out, in]``.

    The packed bias is required by the kernel (it carries the zero-point and -127 terms of the encoding).
    ``isa="mve"``: the Helium layout. ``isa="rv32"``: channel pairs (FLAG_RV_PAIRS) where :func:`rv_fc_pairs_apply`
    says so, unless ``rv_pairs`` decides."""
    _check_isa(isa)
    w = _check_int8_weights(weights, "fully_connected")
    if w.ndim != 2:
        raise UsageError(f"fully_connected weights must be [out, in], got shape {w.shape}")
    out, inp = w.shape
    mult, shift = _check_quant(mult, shift, out, out_zp, act_min, act_max, "fully_connected")
    if isa == "mve":
        table, fast = mve_requant_table(mult, shift, out_zp, act_min, act_max)
        params = dict(batch=int(batch), in_features=inp, out_features=out,
                      in_row_stride=int(in_row_stride if in_row_stride is not None else inp),
                      out_row_stride=int(out_row_stride if out_row_stride is not None else out),
                      input_offset=-int(x_zp), output_offset=int(out_zp), act_min=int(act_min), act_max=int(act_max),
                      flags=FLAG_MVE | (FLAG_FAST_REQUANT if fast else 0), weight_block_bytes=0)
        if params["in_row_stride"] < inp or params["out_row_stride"] < out or batch < 1:
            raise UsageError(f"fully_connected: need batch >= 1 and row strides of at least a row, got {params}")
        return PackedLayer(kind="fully_connected", params=params, weights=_mve_gemv_weights(w),
                           bias=_mve_bias(bias, w, x_zp, _ceil(out, 4)).astype(np.int32), requant=table,
                           scratch_bytes=0, weight_padding_bytes=int(-out % 4 * w.shape[1]),
                           notes=dict(fast_requant=fast, isa="mve"))
    if isa == "rv32":
        table, fast = requant_table(mult, shift, out_zp, act_min, act_max, clamp_after=True)
        params = dict(batch=int(batch), in_features=inp, out_features=out,
                      in_row_stride=int(in_row_stride if in_row_stride is not None else inp),
                      out_row_stride=int(out_row_stride if out_row_stride is not None else out),
                      input_offset=-int(x_zp), output_offset=int(out_zp), act_min=int(act_min), act_max=int(act_max),
                      flags=FLAG_RV | (FLAG_FAST_REQUANT if fast else 0), weight_block_bytes=0)
        if params["in_row_stride"] < inp or params["out_row_stride"] < out or batch < 1:
            raise UsageError(f"fully_connected: need batch >= 1 and row strides of at least a row, got {params}")
        pairs = rv_fc_pairs_apply(inp, out) if rv_pairs is None else bool(rv_pairs)
        params["flags"] |= FLAG_RV_PAIRS if pairs else 0
        packed = _rv_pair_words(w) if pairs else _rv_blocks(w, rv_fc_blocks(out))
        return PackedLayer(kind="fully_connected", params=params, weights=packed,
                           bias=_folded_bias(bias, w, x_zp, _ceil(out, 4)), requant=table, scratch_bytes=0,
                           weight_padding_bytes=int(packed.size - w.size),
                           notes=dict(fast_requant=fast, isa="rv32", pairs=pairs))
    table, fast = requant_table(mult, shift, out_zp, act_min, act_max)
    in4, out4 = _ceil(inp, 4), _ceil(out, 4)
    full = np.zeros((out4, in4), dtype=np.int64)
    full[:out, :inp] = w
    enc = full.copy()
    enc[:, 1::4] -= full[:, 0::4] < 0  # byte 1 = w1 - [w0 < 0]: the word's low int16 is then 256*w1 + w0
    enc[:, 3::4] -= full[:, 2::4] < 0
    nfull = out // 4 * 4
    packed = enc[:nfull].reshape(nfull // 4, 4, in4 // 4, 4).transpose(0, 2, 1, 3).reshape(-1)
    if out > nfull:  # last block of 1-3 channels: per 4 inputs one word per channel
        packed = np.concatenate([packed, enc[nfull:out].reshape(out - nfull, in4 // 4, 4).transpose(1, 0, 2)
                                 .reshape(-1)])
    packed = packed.astype(np.int8)
    b = np.zeros(out4, dtype=np.int64)
    if bias is not None:
        b[:out] = np.asarray(bias, dtype=np.int64)
    b += 127 * full[:, 1::2].sum(axis=1) - int(x_zp) * full.sum(axis=1)
    params = dict(batch=int(batch), in_features=inp, out_features=out,
                  in_row_stride=int(in_row_stride if in_row_stride is not None else inp),
                  out_row_stride=int(out_row_stride if out_row_stride is not None else out),
                  input_offset=-int(x_zp), output_offset=int(out_zp), act_min=int(act_min), act_max=int(act_max),
                  flags=FLAG_FAST_REQUANT if fast else 0, weight_block_bytes=0)
    if params["in_row_stride"] < inp or params["out_row_stride"] < out or batch < 1:
        raise UsageError(f"fully_connected: need batch >= 1 and row strides of at least a row, got {params}")
    return PackedLayer(kind="fully_connected", params=params, weights=packed,
                       bias=intref.wrap_int32(b).astype(np.int32), requant=table,
                       scratch_bytes=fully_connected_scratch_bytes(params),
                       weight_padding_bytes=int(packed.size - w.size), notes=dict(fast_requant=fast))


def pack_add(n: int, *, a_zp: int, b_zp: int, a_mult: int, b_mult: int, shift: int, out_zp: int,
             act_min: int = -128, act_max: int = 127, isa: str = "dsp", rows: int = 1,
             row_strides: tuple[int, int, int] | None = None) -> PackedLayer:
    """The parameter struct of ``ek_add_s8`` for ``n`` elements (edgekit/qgraph.py's int8 add: 64-bit
    ``(a - a_zp) * a_mult + (b - b_zp) * b_mult``, rounded right shift, + out_zp, clamp). When 16 <= shift <= 46
    (FLAG_ADD_SPLIT) the kernels compute it in 32-bit arithmetic from the multipliers split at 2**15 with the zero
    points folded into two constants (ek_nn_s8_mve.c shows why that is exact) — 4 lanes at a time with
    ``isa="mve"`` (FLAG_MVE), 4 at a time with SMLAD on the DSP cores where :func:`_add_pairs_exact` holds
    (FLAG_ADD_PAIRS; the last ``n % 4`` one at a time), one element at a time elsewhere; otherwise on 64 bits.
    ``rows`` rows of ``n`` elements, ``row_strides`` = bytes between rows in (a, b, out) (default ``n``): a patch
    tile's windows of larger maps."""
    _check_isa(isa)
    strides = tuple(int(v) for v in (row_strides or (n, n, n)))
    if rows < 1 or len(strides) != 3 or min(strides) < n:
        raise UsageError(f"add: need rows >= 1 and row strides of at least a row ({n}), got {rows}, {strides}")
    if not (0 <= a_mult < 1 << 31 and 0 <= b_mult < 1 << 31 and 1 <= shift <= 62):
        raise UsageError(f"add: multipliers must be in [0, 2**31) and shift in [1, 62], got {a_mult}, {b_mult}, "
                         f"{shift}")
    if not (-128 <= out_zp <= 127 and -128 <= act_min <= act_max <= 127 and -128 <= a_zp <= 127
            and -128 <= b_zp <= 127):
        raise UsageError("add: zero points and the clamp must be int8 values")
    split = 16 <= shift <= 46
    mve = isa == "mve" and split
    pairs = isa != "rv32" and not mve and _add_pairs_exact(a_zp, b_zp, a_mult, b_mult, shift, out_zp)
    ah, al, bh, bl = a_mult >> 15, a_mult & 0x7FFF, b_mult >> 15, b_mult & 0x7FFF
    params = dict(n=int(n), a_offset=-int(a_zp), b_offset=-int(b_zp), out_offset=int(out_zp), act_min=int(act_min),
                  act_max=int(act_max), a_mult=int(a_mult), b_mult=int(b_mult), shift=int(shift),
                  flags=(FLAG_ADD_SPLIT if split else 0) | (FLAG_MVE if mve else 0) | (FLAG_ADD_PAIRS if pairs else 0),
                  a_mult_hi=ah, a_mult_lo=al,
                  b_mult_hi=bh, b_mult_lo=bl,
                  h_const=-(a_zp * ah + b_zp * bh), l_const=-(a_zp * al + b_zp * bl), rows=int(rows),
                  a_row_stride=strides[0], b_row_stride=strides[1], out_row_stride=strides[2])
    empty = np.zeros(0, dtype=np.int8)
    return PackedLayer(kind="add", params=params, weights=empty, bias=None, requant=np.zeros(0, np.int32),
                       scratch_bytes=0, weight_padding_bytes=0, notes=dict(isa="mve" if mve else "dsp"))


def _add_pairs_exact(a_zp: int, b_zp: int, a_mult: int, b_mult: int, shift: int, out_zp: int) -> bool:
    """Whether ek_add_s8's SMLAD path (EK_NN_FLAG_ADD_PAIRS, ek_nn_s8.c) computes the add exactly: the multipliers
    split at 2**16 into int16 halves (``m = h * 2**16 + l``, ``l`` in [-2**15, 2**15), ``h`` <= 2**15 - 1), and the
    high sum ``a*ah + b*bh`` plus its folded constant (zero points, rounding, ``out_zp * 2**(shift-16)``) stays
    inside int32 for every int8 ``a``, ``b``. The identity itself holds for any shift >= 17."""
    if shift < 17:
        return False
    rs = shift - 16
    ah, bh = (a_mult + 0x8000) >> 16, (b_mult + 0x8000) >> 16
    if max(ah, bh) > 0x7FFF:
        return False
    parts = (a_zp * ah, b_zp * bh, 1 << (rs - 1), out_zp * (1 << rs))
    limit = (1 << 31) - (1 << 10)  # (+ L >> 16, |L| < 2**25)
    return all(abs(v) < 1 << 30 for v in parts) and 128 * (ah + bh) + sum(abs(v) for v in parts) < limit


def pool_simd_sums(kernel, x_zp: int, shift: int) -> bool:
    """Whether ek_pool_s8's SIMD average (DSP cores) applies: the window's sums from the zero-point offset fit int16
    and SMLAWB/SMLAWT requantize them (17 <= shift <= 38)."""
    return kernel[0] * kernel[1] * (128 + abs(x_zp)) < 1 << 15 and 17 <= shift <= 38


def pool_global_chunks(mode: str, in_hwc, kernel, pad_top: int, pad_left: int, x_zp: int, shift: int) -> bool:
    """Whether ek_pool_s8 on the DSP cores runs this pool as a global average in chunks of int16 sums widened to
    int32 (ek__gap_s8_dsp: a map of more pixels than the SIMD path's int16 sums hold — ShuffleNet's 16x16, an
    SE block's squeeze — with 8 channels a turn), as its dispatch decides."""
    h, w, c = in_hwc
    return mode == "avg" and not pool_simd_sums(kernel, x_zp, shift) and c % 8 == 0 and tuple(kernel) == (h, w) and pad_top == 0 and pad_left == 0


def pack_pool(mode: str, *, in_hwc, out_hw, kernel, stride, pad_top: int = 0, pad_left: int = 0, x_zp: int = 0,
              out_zp: int = 0, mult: int = 0, shift: int = 1, isa: str = "dsp") -> PackedLayer:
    """The parameter struct of ``ek_pool_s8``: ``mode`` "max" or "avg" (a global average pool is an "avg" whose
    window is the whole map) over an NHWC map ``in_hwc``; the window may hang over the map (padding, ceil mode).
    ``isa="mve"`` sets the Helium flag where its vector requantization is exact (max always; avg when shift >= 32)."""
    _check_isa(isa)
    if mode not in ("max", "avg"):
        raise UsageError(f"pool mode must be max or avg, got {mode!r}")
    if mode == "avg" and not (0 <= mult < 1 << 31 and 1 <= shift <= 62):
        raise UsageError(f"avg pool: mult must be in [0, 2**31) and shift in [1, 62], got {mult}, {shift}")
    h, w, c = (int(v) for v in in_hwc)
    out_hw, kernel, stride = [int(v) for v in out_hw], [int(v) for v in kernel], [int(v) for v in stride]
    if w == 1 and out_hw[1] == 1 and kernel[1] == 1 and pad_left == 0 and h > 1:
        # a pool down one column (a 1-D pool over [N, C, L] as a Kx1 window): the same bytes as one row, which
        # the row loops run with one set-up instead of one per output (a 2x1 max over 512x1x16: 15.5 -> 1.9
        # instructions an output on the M7)
        h, w, out_hw, kernel, stride = 1, h, out_hw[::-1], kernel[::-1], stride[::-1]
        pad_top, pad_left = 0, pad_top
    mve = isa == "mve" and (mode == "max" or shift >= 32)
    params = dict(in_h=h, in_w=w, channels=c, out_h=int(out_hw[0]), out_w=int(out_hw[1]), kernel_h=int(kernel[0]),
                  kernel_w=int(kernel[1]), stride_h=int(stride[0]), stride_w=int(stride[1]), pad_top=int(pad_top),
                  pad_left=int(pad_left), mode=POOL_MAX if mode == "max" else POOL_AVG, input_offset=-int(x_zp),
                  output_offset=int(out_zp), mult=int(mult), shift=int(shift), flags=FLAG_MVE if mve else 0)
    return PackedLayer(kind="pool", params=params, weights=np.zeros(0, np.int8), bias=None,
                       requant=np.zeros(0, np.int32), scratch_bytes=0, weight_padding_bytes=0,
                       notes=dict(isa="mve" if mve else "dsp"))


def mul_runs_gate4(p: dict) -> bool:
    """Whether an ek_mul_s8 call runs the four-channel gate loops of the DSP build (ek__mul_gate4_rs / _k): a gate per
    channel, the clamp all of int8, 17 <= shift <= 54, at least 4 channels."""
    return bool(p["b_per_channel"]) and (p["act_min"], p["act_max"]) == (-128, 127) and p["rows"] > 0 and \
        17 <= p["shift"] <= 54 and p["channels"] >= 4


def pool_runs_1row(p: dict) -> bool:
    """Whether an ek_pool_s8 call runs the one-row max loop of the DSP build (ek__maxpool_1row: a window of 2-8 taps
    along one row of a multiple of 4 channels; pack_pool turns a Kx1 window down one column, a 1-D max pool's, into
    one)."""
    return p["mode"] == POOL_MAX and not p.get("flags", 0) & (FLAG_MVE | FLAG_RV) and p["channels"] % 4 == 0 and \
        p["in_h"] == p["out_h"] == p["kernel_h"] == 1 and p["pad_top"] == 0 and 2 <= p["kernel_w"] <= 8


def pack_lut(lut, n: int) -> PackedLayer:
    """The parameter struct and table of ``ek_lut_s8`` for ``n`` elements: ``lut`` is the host reference's int8 table
    of an elementwise layer (edgekit/qgraph.py: out = lut[x + 128]); the kernel indexes by the input byte read as
    unsigned, so its table is the reference's rotated by 128 (bit-exact by construction)."""
    lut = np.asarray(lut)
    if lut.shape != (256,) or lut.min() < -128 or lut.max() > 127:
        raise UsageError(f"lut: expected 256 int8 values, got shape {lut.shape}")
    table = np.concatenate([lut[128:], lut[:128]]).astype(np.int8)  # table[x & 0xFF] = lut[x + 128]
    return PackedLayer(kind="lut", params=dict(n=int(n), flags=0), weights=table, bias=None,
                       requant=np.zeros(0, np.int32), scratch_bytes=0, weight_padding_bytes=0, notes=dict(isa="dsp"))


def pack_bilinear(in_hwc, scale) -> PackedLayer:
    """The parameter struct of ``ek_bilinear_s8``: an ``in_hwc`` int8 map upsampled bilinearly by ``scale``."""
    return pack_upsample(in_hwc, scale, kind="bilinear")


def pack_lut_channels(tables, pixels: int) -> PackedLayer:
    """The parameter struct and tables of ``ek_lut_channels_s8``: ``tables`` [C, 256] are the host reference's int8
    outputs per channel for the input codes -128..127 (a per-channel PReLU), rotated by 128 like pack_lut's."""
    tables = np.asarray(tables)
    if tables.ndim != 2 or tables.shape[1] != 256 or tables.min() < -128 or tables.max() > 127:
        raise UsageError(f"lut_channels: expected [C, 256] int8 values, got shape {tables.shape}")
    rotated = np.concatenate([tables[:, 128:], tables[:, :128]], axis=1).astype(np.int8)
    return PackedLayer(kind="lut_channels", params=dict(pixels=int(pixels), channels=int(tables.shape[0]), flags=0),
                       weights=rotated.reshape(-1), bias=None, requant=np.zeros(0, np.int32), scratch_bytes=0,
                       weight_padding_bytes=0, notes=dict(isa="dsp"))


def pack_mul(rows: int, channels: int, *, b_per_channel: bool, a_zp: int, b_zp: int, mult: int, shift: int,
             out_zp: int, act_min: int = -128, act_max: int = 127) -> PackedLayer:
    """The parameter struct of ``ek_mul_s8``: edgekit/qgraph.py's int8 product of ``a`` (``rows`` x ``channels``)
    and ``b`` (the same, or one row of ``channels`` broadcast over the rows: a squeeze-excite gate)."""
    if not (0 <= mult < 1 << 31 and 1 <= shift <= 62) or rows < 0 or channels < 1:
        raise UsageError(f"mul: need mult in [0, 2**31), shift in [1, 62], rows >= 0, channels >= 1; got {mult}, "
                         f"{shift}, {rows}, {channels}")
    if not all(-128 <= v <= 127 for v in (a_zp, b_zp, out_zp, act_min, act_max)) or act_min > act_max:
        raise UsageError("mul: zero points and the clamp must be int8 values")
    params = dict(rows=int(rows), channels=int(channels), b_per_channel=int(bool(b_per_channel)),
                  a_offset=-int(a_zp), b_offset=-int(b_zp), out_offset=int(out_zp), act_min=int(act_min),
                  act_max=int(act_max), mult=int(mult), shift=int(shift), flags=0)
    return PackedLayer(kind="mul", params=params, weights=np.zeros(0, np.int8), bias=None,
                       requant=np.zeros(0, np.int32), scratch_bytes=0, weight_padding_bytes=0, notes=dict(isa="dsp"))


def pack_concat(part_channels, parts, out_zp: int, rows: int) -> PackedLayer:
    """The parameter struct and arrays of ``ek_concat_s8``: a concatenation along the last axis of inputs with
    ``part_channels`` each (``rows`` rows), each part requantized as edgekit/qgraph.py does — ``parts`` its
    ``(zp, mult, shift)`` — out = clamp(requantize(x - zp, mult, shift) + out_zp). That is a function of the int8 x,
    tabulated here with the reference's own qmath.requantize (so bit-exact by construction) and rotated for the
    kernel's unsigned-byte index; a part whose table is the identity is copied. ``weights`` holds the tables;
    ``bias`` the [parts][2] (row length, table index or -1)."""
    from edgekit import qmath

    codes = np.arange(-128, 128, dtype=np.int64)
    info, tables = [], []
    for c, (zp, mult, shift) in zip(part_channels, parts):
        lut = qmath.requantize(codes - int(zp), int(mult), int(shift), int(out_zp))
        if np.array_equal(lut, codes):
            info += [int(c), -1]
        else:
            info += [int(c), len(tables)]
            tables.append(np.concatenate([lut[128:], lut[:128]]).astype(np.int8))
    params = dict(rows=int(rows), out_c=int(sum(part_channels)), parts=len(info) // 2, flags=0)
    weights = np.concatenate(tables) if tables else np.zeros(0, np.int8)
    return PackedLayer(kind="concat", params=params, weights=weights, bias=np.array(info, np.int32),
                       requant=np.zeros(0, np.int32), scratch_bytes=0, weight_padding_bytes=0,
                       notes=dict(isa="dsp", tables=len(tables)))


def pack_transpose(batches: int, rows: int, cols: int) -> PackedLayer:
    """The parameter struct of ``ek_transpose_s8``: ``batches`` matrices of ``rows`` x ``cols`` int8 elements, each
    written transposed (output[b][c][r] = input[b][r][c])."""
    if min(batches, rows, cols) < 1:
        raise UsageError(f"transpose: need at least one batch, row and column, got {batches}, {rows}, {cols}")
    params = dict(batches=int(batches), rows=int(rows), cols=int(cols), flags=0)
    return PackedLayer(kind="transpose", params=params, weights=np.zeros(0, np.int8), bias=None,
                       requant=np.zeros(0, np.int32), scratch_bytes=0, weight_padding_bytes=0, notes=dict(isa="dsp"))


def pack_upsample(in_hwc, scale, kind: str = "upsample") -> PackedLayer:
    """The parameter struct of ``ek_upsample_s8``: an ``in_hwc`` int8 map repeated ``scale`` = (rows, columns) times
    along each spatial axis (nearest neighbour; the codes keep their quantization); ``ek_bilinear_s8``'s has the same
    fields (``kind`` "bilinear")."""
    (h, w, c), (sh, sw) = in_hwc, scale
    if min(h, w, c) < 1 or min(sh, sw) < 1:
        raise UsageError(f"{kind}: need a non-empty map and factors >= 1, got {tuple(in_hwc)} x {tuple(scale)}")
    params = dict(in_h=int(h), in_w=int(w), channels=int(c), scale_h=int(sh), scale_w=int(sw), flags=0)
    return PackedLayer(kind=kind, params=params, weights=np.zeros(0, np.int8), bias=None,
                       requant=np.zeros(0, np.int32), scratch_bytes=0, weight_padding_bytes=0, notes=dict(isa="dsp"))


def scratch_bytes(layer: PackedLayer) -> int:
    """Scratch bytes the C call for ``layer`` needs (0: pass NULL)."""
    if layer.kind == "conv2d":
        return conv2d_scratch_bytes(layer.params)
    if layer.kind == "depthwise_conv2d":
        return depthwise_conv2d_scratch_bytes(layer.params)
    if layer.kind == "fully_connected":
        return fully_connected_scratch_bytes(layer.params)
    if layer.kind in ("add", "pool", "lut", "concat"):
        return 0
    raise UsageError(f"unknown packed layer kind {layer.kind!r}")


def nested_view(full: PackedLayer, sub: PackedLayer) -> dict[str, int] | None:
    """The struct fields with which ``sub`` (a narrower operating point of the same layer: fewer output channels
    and/or inputs, the same int8 weights on the ones it keeps) reads its weights straight out of ``full``'s packed
    array, or None when its packed bytes are not such a prefix (then it keeps its own copy).

    Layouts that nest (dsp only): conv2d with FLAG_TAP_RUNS or one run (1x1; a first layer with the same input
    channels) — per block of 4 output channels, each run's first pairs; fully connected — per block, the first
    ``in/4`` words; depthwise (rows or channels layout) — the first channels. Checked byte for byte here, so a
    shared array is never a guess: ``weight_block_bytes`` / ``weight_run_pairs`` are what the kernel strides by.
    """
    if full.kind != sub.kind or (full.params.get("flags", 0) | sub.params.get("flags", 0)) & (FLAG_MVE | FLAG_RV):
        return None
    fw, sw = full.weights.view(np.uint8), sub.weights.view(np.uint8)
    dense = {k: 0 for k in ("weight_block_bytes", "weight_run_pairs") if k in sub.params}
    if full.kind == "depthwise_conv2d":
        same_layout = (full.params["flags"] ^ sub.params["flags"]) & FLAG_DW_CHANNELS == 0
        return dense if same_layout and sw.size <= fw.size and np.array_equal(fw[:sw.size], sw) else None
    if fw.size == sw.size and np.array_equal(fw, sw):
        return dense  # the same layer at both operating points
    if full.kind == "fully_connected":
        f_words, s_words = _ceil(full.params["in_features"], 4) // 4, _ceil(sub.params["in_features"], 4) // 4
        fields = {"weight_block_bytes": 16 * f_words}
        block_bytes, pieces = 16 * f_words, [(0, 16 * s_words)]
        sub_out, full_out = sub.params["out_features"], full.params["out_features"]
    elif full.kind == "conv2d":
        fp, sp = full.params, sub.params
        if (fp["kernel_h"], fp["kernel_w"], fp["dilation_w"]) != (sp["kernel_h"], sp["kernel_w"], sp["dilation_w"]):
            return None
        if any(_conv_merged_tails(q["kernel_h"], q["kernel_w"], q["in_c"], q["dilation_w"],
                                  bool(q["flags"] & FLAG_TAP_RUNS)) for q in (fp, sp)):
            # the tails of all runs follow the runs: no per-run prefix; but with the same inputs (a first layer)
            # the narrower point's blocks of 4 output channels are the full point's first blocks, byte for byte
            same_inputs = fp["in_c"] == sp["in_c"] and sp["out_c"] % 4 == 0
            return dense if same_inputs and sw.size <= fw.size and np.array_equal(fw[:sw.size], sw) else None
        f_runs, f_len = _conv_runs(fp["kernel_h"], fp["kernel_w"], fp["in_c"], fp["dilation_w"],
                                   bool(fp["flags"] & FLAG_TAP_RUNS))
        s_runs, s_len = _conv_runs(sp["kernel_h"], sp["kernel_w"], sp["in_c"], sp["dilation_w"],
                                   bool(sp["flags"] & FLAG_TAP_RUNS))
        if f_runs != s_runs:
            return None
        f_pairs, s_pairs = (f_len + 1) // 2, (s_len + 1) // 2
        fields = {"weight_block_bytes": f_runs * f_pairs * 8, "weight_run_pairs": f_pairs}
        block_bytes, pieces = f_runs * f_pairs * 8, [(r * f_pairs * 8, s_pairs * 8) for r in range(s_runs)]
        sub_out, full_out = sp["out_c"], fp["out_c"]
    else:
        return None
    # A compact last block of 1-3 channels (stored with nc/4 of a block's bytes per pair or word group) nests when
    # both operating points have it: the same channels, fewer reduction elements.
    tail = sub_out % 4
    if sub_out > full_out or (tail and sub_out != full_out):
        return None
    gathered = [fw[b * block_bytes + off: b * block_bytes + off + length]
                for b in range(sub_out // 4) for off, length in pieces]
    if tail:
        start = (sub_out // 4) * block_bytes
        gathered += [fw[start + off * tail // 4: start + (off + length) * tail // 4] for off, length in pieces]
    if not gathered or not np.array_equal(np.concatenate(gathered), sw):
        return None
    return fields
