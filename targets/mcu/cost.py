"""The MCU target's cost model: flash, SRAM, instructions, latency and energy of a planned program.

Where it sits: targets/mcu, read by the pipeline's plan (pipeline.py) before anything is compiled; the shared
per-layer table comes from edgekit/estimate.py. Everything is computed from the same planned program the code
generator prints, so the arena in the estimate is the arena in the ELF. Formulas (shown in the report):

* instructions of one kernel call = key·units + key_per_output·outputs + key_per_input·inputs + key_per_call, with
  ``key`` the call's cost family (:func:`step_cost_terms`) and the coefficients from the profile's ``[cost]``
  (fitted to emulated runs by ``bench/estimators.py --calibrate``: targets/profiles/cost/<target>.toml); recurrent
  cells: per MAC, per gate input, per unit, per sigmoid/tanh and per call (:data:`DEFAULT_CELL_COSTS`)
* a streaming program's instructions per sequence = steps × instructions per step
* flash = constant arrays + code (the platform's :class:`~edgekit.targets.mcu.platforms.CodeSizeModel`)
* peak SRAM = arena + state + the board's fault stack + the deepest stack + what the C library adds
* cycles = Σ instructions · CPI, the profile's cycles per instruction ([extra] cycles_per_instruction; Helium calls
  cycles_per_instruction_helium): an estimate, not a measurement (QEMU counts instructions, not cycles)
* latency = cycles / clock; energy = cycles · I_run/MHz · V
"""
from __future__ import annotations

import math

from edgekit.estimate import Estimate, layer_table
from edgekit.targets.mcu import kernel_pack
from edgekit.targets.mcu.program import DTYPE_BYTES, Program, Step
from edgekit.targets.profiles import TargetProfile

COST_TERMS = ("", "_per_output", "_per_input", "_per_call")
# float32 elementwise layers that evaluate newlib's expf / tanhf per element (~80-160 instructions on the M7, by the
# input's magnitude): their own cost key (unary_libm_float32), not the cheap unary ops' (ReLU, hardswish: a few)
LIBM_UNARY_OPS = ("sigmoid", "tanh", "silu", "gelu", "elu", "mish")
# float32 kernels that call libm's exponentials (newlib links its reentrancy data for errno)
LIBM_OPS = ("sigmoid", "tanh", "silu", "gelu", "elu", "mish", "softmax", "gru", "lstm", "lmu", "egru", "s4d",
            "selective_ssm")


# ---- one-shot layers: the cost family of a kernel call ----------------------------------------------------------------

def step_cost_terms(prog: Program, step: Step) -> tuple[str, int, int, int]:
    """(cost-model key, work units, output elements, input elements read) of one kernel call.

    Work units are MACs for conv/linear kernels and elements (times the window for pooling) for the rest. The
    profile's ``[cost]`` gives instructions per unit (``key``), per output element (``key_per_output``), per input
    element (``key_per_input``) and per call (``key_per_call``).
    """
    out = math.prod(prog.tensors[step.output].shape)
    if step.kind == "ek_conv":  # its outputs (a grouped 1x1 conv's call writes one group's channels of the tensor)
        out = step.params["out_h"] * step.params["out_w"] * step.params["out_c"]
    if step.kind == "ek_pool":  # units = window taps read per output element; outputs = pixel-groups of 16
        p = step.params
        units, inputs = out * p["kernel_h"] * p["kernel_w"], p["in_h"] * p["in_w"] * p["channels"]
        pixels = p["out_h"] * p["out_w"]
        if p["flags"] & kernel_pack.FLAG_MVE:  # per pixel-group of 16 channels
            return "pool_int8_mve", units, pixels * -(-p["channels"] // 16), inputs
        if kernel_pack.pool_runs_1row(p):  # the one-row max: per output pixel, its window's set-up
            key = "maxpool_1row_int8_ek" if p["kernel_w"] <= 4 else "maxpool_1row_loop_int8_ek"
            return key, units, pixels, inputs
        if p["mode"] == kernel_pack.POOL_MAX:
            return "pool_int8_ek", units, out, inputs
        chunks = kernel_pack.pool_global_chunks("avg", (p["in_h"], p["in_w"], p["channels"]),
                                                (p["kernel_h"], p["kernel_w"]), p["pad_top"], p["pad_left"],
                                                -p["input_offset"], p["shift"])
        return ("gap_int8_ek" if chunks else "avgpool_int8_ek"), units, out, inputs
    if step.kind == "ek_add":  # per element: the Helium path 4 at a time, the SMLAD one 4 at a time (and the last
        flags = step.params["flags"]  # n % 4 one by one), the scalar one a 64-bit product each
        if flags & kernel_pack.FLAG_ADD_PAIRS:  # (a clamp narrower than int8: SSUB8/SEL twice per word more)
            clamp = step.params["act_min"] > -128 or step.params["act_max"] < 127
            tail = step.params["n"] % 4 * step.params.get("rows", 1)  # each row's last n % 4
            # multipliers with zero low halves (qmath.add_multipliers): one SMLAD an element, not two
            short = step.params["a_mult"] % (1 << 16) == 0 and step.params["b_mult"] % (1 << 16) == 0
            return (f"add_int8_pairs{'_short' if short else ''}{'_clamp' if clamp else ''}_ek", out - tail, tail,
                    2 * out)
        return ("add_int8_mve" if flags & kernel_pack.FLAG_MVE else "add_int8_ek"), out, out, 2 * out
    if step.kind == "ek_mul":  # per element: a product and its requantization; per channel (a gate's column)
        p = step.params
        if getattr(prog, "ek_isa", "dsp") != "rv32" and kernel_pack.mul_runs_gate4(p):
            # a gate over all of int8, four channels a word (ek__mul_gate4_*): per element of the groups of 4, per
            # group (its asm call), per element of the last 1-3 channels (their columns)
            fast = p["rows"] * (p["channels"] // 4) * 4
            return "mul_gate4_int8_ek", fast, p["channels"] // 4, out - fast
        return "mul_int8_ek", out, p["channels"], 0
    if step.kind == "ek_transpose":  # per edge element (a byte at a time), per 4x4 block of bytes, per row of blocks
        p = step.params
        if p["rows"] == 2 and p["cols"] % 4 == 0:  # its 2-row loop (ek__shuffle2): per turn of 4 columns, per pixel
            return "transpose2_int8_ek", 0, p["batches"] * p["cols"] // 4, p["batches"]
        blocks = (p["rows"] // 4) * (p["cols"] // 4) * p["batches"]
        key = "transpose4_int8_ek" if p["rows"] == 4 and p["cols"] % 4 == 0 else "transpose_int8_ek"  # (its loop)
        return key, out - 16 * blocks, blocks, p["batches"] * -(-p["rows"] // 4)
    if step.kind == "ek_upsample":  # per pixel stored, per byte of the rows built pixel by pixel, per byte copied
        p = step.params  # (by its path: streaming LDM/STM, 16 channels a copy, words)
        built = p["in_h"] * p["in_w"] * p["scale_w"] * p["channels"]
        c, sw = p["channels"], p["scale_w"]
        key = "upsample_int8_ek" if (c in (8, 16) and sw == 2) or sw == 1 else \
            "upsample16_int8_ek" if c % 16 == 0 and sw == 2 else "upsample4_int8_ek"
        return key, p["in_h"] * p["in_w"] * p["scale_w"], built, out - built
    if step.kind == "ek_lut":  # per element: a table load (4 a word)
        return "lut_int8_ek", out, out % 4, out
    if step.kind == "ek_bilinear":  # per output element (4 loads, 4 multiplies, the rounding) and per output pixel
        p = step.params  # (its taps and weights)
        return "bilinear_int8_ek", out, out // p["channels"], 0
    if step.kind == "ek_lutc":  # per element: a load, a table load and a store; per pixel: the channel loop
        return "lutc_int8_ek", out, step.params["pixels"], out
    if step.kind == "ek_concat":  # per element through a table, per element copied, per row of a part
        p = step.params
        return "concat_int8_ek", p["table_elements"], out - p["table_elements"], p["rows"] * p["parts"]
    if step.spec is not None and step.spec.attr("windows"):
        inp = sum(w[2] * w[3] * prog.tensors[x].shape[3] for w, x in zip(step.spec.attr("windows"), step.inputs))
    elif step.is_micro_kernel and step.kind not in ("ek_fc", "ek_sfc"):
        inp = step.params["in_h"] * step.params["in_w"] * step.params["in_c"]
    else:
        inp = sum(math.prod(prog.tensors[x].shape) for x in step.inputs)
    if step.is_micro_kernel:
        family = {"ek_conv": "conv2d", "ek_dw": "depthwise", "ek_fc": "linear"}.get(step.kind, step.kind[3:])
        if step.params.get("flags", 0) & kernel_pack.FLAG_MVE:
            return _helium_terms(step, family, out)
        if step.params.get("flags", 0) & kernel_pack.FLAG_RV:
            return _scalar_terms(step, family)
        if step.kind == "ek_dw":
            return _depthwise_terms(step, getattr(prog, "ek_isa", "dsp"))
        if step.kind in ("ek_sconv", "ek_sfc"):  # compressed weights: the work is the stored entries' MACs
            if step.kind == "ek_sfc":
                return "linear_sparse_int8_ek", step.nz_macs, out, inp
            p = step.params  # inputs read: the im2col tile, built once per output pixel
            inp = p["out_h"] * p["out_w"] * p["kernel_h"] * p["kernel_w"] * p["in_c"]
            return "conv2d_sparse_int8_ek", step.nz_macs, out, inp
        if step.kind == "ek_conv" and step.params.get("flags", 0) & kernel_pack.FLAG_1X1_STREAM:
            # 1x1 record stream: per MAC (SMLADs and record LDMs), per output (requantization, store), per input
            # element of the output pixels (widened once into registers)
            p = step.params
            return "conv2d_1x1s_int8_ek", step.macs, out, p["out_h"] * p["out_w"] * p["in_c"]
        if step.kind == "ek_conv" and step.params.get("flags", 0) & kernel_pack.FLAG_CONV_C1:
            # one input channel: units are the M7's instructions by the path's own model
            return "conv2d_c1_int8_ek", round(kernel_pack.conv2d_c1_instructions(step.params)), 0, 0
        if step.kind == "ek_conv" and step.params.get("flags", 0) & kernel_pack.FLAG_CONV_FC:
            # one FC row per output pixel: units are the M7's instructions by the kernel's own model
            return "conv2d_fc_int8_ek", round(kernel_pack.conv2d_fc_instructions(step.params)), 0, 0
        if step.kind == "ek_conv":
            return (f"{family}_int8_ek", *conv_tile_terms(step.params))
        return f"{family}_int8_ek", step.macs, out, inp
    if step.kind == "copy":  # a tile into its place: a word loop when everything is aligned
        from edgekit.targets.mcu.codegen import copy_window

        dst_off, dst_row, src_off, src_row, rows, row_bytes = copy_window(prog, step)
        words = not (dst_off | dst_row | src_off | src_row | row_bytes) & 3
        if dst_row == row_bytes == src_row:  # contiguous rows: copied as one
            rows, row_bytes = 1, rows * row_bytes
        return ("copy_words" if words else "copy_bytes"), rows * row_bytes, rows, 0
    if step.kind == "pad":  # the fill (bytes, a word at a time), the rows copied in (copy_window's terms)
        from edgekit.targets.mcu.codegen import pad_window

        dst_off, dst_row, src_off, src_row, rows, row_bytes = pad_window(prog, step)
        fill = math.prod(prog.tensors[step.output].shape) * DTYPE_BYTES[prog.dtype]
        words = not (dst_off | dst_row | src_off | src_row | row_bytes) & 3
        if dst_row == row_bytes == src_row:
            rows, row_bytes = 1, rows * row_bytes
        return ("pad_words" if words else "pad_bytes"), rows * row_bytes, rows, fill
    if step.kind == "copy_blocks":  # depth_to_space: a copy call per output row, a block of r_w·C values a row
        src = prog.tensors[step.inputs[0]].shape
        rh, rw = step.params["block"]
        blk = src[3] // rh * DTYPE_BYTES[prog.dtype]
        words = not (blk & 3) and not (prog.tensors[step.inputs[0]].offset | prog.tensors[step.output].offset) & 3
        return ("copy_words" if words else "copy_bytes"), src[1] * src[2] * src[3] * DTYPE_BYTES[prog.dtype], \
            src[1] * rh * src[2], src[1] * rh
    spec = step.spec
    dt = prog.dtype
    if spec.op == "conv2d":
        # TVM's 1x1 convolutions run a plain GEMM loop; k x k ones pay for the window per MAC. A grouped conv with
        # several input channels per group (ShuffleNet's) runs the same loops per group: a dense conv's cost per
        # MAC, not a depthwise one's (measured on esp32-c3: 14.3 instructions/MAC, priced 20.5 as depthwise)
        groups = spec.attr("groups") or 1
        depthwise = groups > 1 and prog.tensors[step.inputs[0]].shape[-1] == groups
        family = "depthwise" if depthwise else \
            "conv2d_1x1" if tuple(spec.attr("kernel") or ()) == (1, 1) else "conv2d"
        return f"{family}_{dt}", *tvm_conv_terms(prog, step, out, depthwise)
    if spec.op == "linear":
        return f"linear_{dt}", step.macs, out, inp
    if spec.op in ("maxpool2d", "avgpool2d"):
        return f"pool_{dt}", out * math.prod(spec.attr("kernel")), out, inp
    if spec.op == "global_avgpool":
        return f"gpool_{dt}", inp, out, inp
    if spec.op in ("add", "mul"):
        return f"add_{dt}", out, out, inp
    if spec.op in ("gather", "concat"):
        return f"{spec.op}_{dt}", out, out, inp
    if spec.op == "prelu":  # per element: the sign's select and one of two requantizations (int8)
        return f"prelu_{dt}", out, out, inp
    if spec.op == "upsample" and spec.attr("mode") == "bilinear":  # per output element: four weighted taps and
        # their indices, which TVM's loop recomputes for every channel
        return f"resize_bilinear_{dt}", out, out, inp
    if spec.op in ("depth_to_space", "upsample"):  # TVM's index arithmetic per element moved (nearest upsampling)
        return f"{spec.op}_{dt}", out, out, inp
    if dt == "float32" and spec.op in LIBM_UNARY_OPS:
        return "unary_libm_float32", out, out, inp
    return f"unary_{dt}", out, out, inp


# TVM's convolutions (tvm_kernels._conv, built with tvm_kernels.TVM_C_PRAGMA): per output element a loop over the
# window's taps, per tap a test of each padded side of the input (unswitched out of the reduction over the group's
# input channels) and that reduction — a loop, or straight code when it has at most TVM_PEEL_MAX iterations (GCC
# peels it completely: per MAC on the emulated M7 3.7 instructions against 5.0 looped in float32, 4.9 against 6.5
# in int8). int8 skips a tap in the padding (its (x - zero point) is 0 there, and GCC drops the products), float32
# multiplies by 0.0 all the same. TVM_PEELED: a peeled reduction's per-MAC cost relative to a looped one, fitted to
# the M7's calls (tiles of patch-based schedules among them; per call, max error: k x k float32 108 calls 18 %, int8
# 20 calls 11 %; 1x1 float32 112 calls 20 %, int8 49 calls 6 %; depthwise float32 65 calls 30 %, int8 43 calls
# 40 % — small 5x5 maps; per MAC alone, before: 29-112 %).
TVM_PEEL_MAX = 16
TVM_PEELED = 0.75


def tvm_conv_terms(prog: Program, step: Step, out: int, depthwise: bool) -> tuple[int, int, int]:
    """TVM's conv or depthwise conv in the terms the fit takes: units = the MACs it executes (int8: of the taps
    inside the input), a peeled reduction's weighted TVM_PEELED (conv: at most TVM_PEEL_MAX input channels a group;
    depthwise: unweighted); outputs = output elements; inputs = taps times padded sides (each tap of an output
    element tests every padded side of the input)."""
    spec = step.spec
    kh, kw = spec.attr("kernel")
    sh, sw = spec.attr("stride")
    dh, dw = spec.attr("dilation") or (1, 1)
    pt, pb, pl, pr = spec.attr("pads") or (0, 0, 0, 0)
    shape = prog.tensors[step.inputs[0]].shape
    window = (spec.attr("windows") or [None])[0]
    h, w = (window[2], window[3]) if window else (shape[1], shape[2])
    oh, ow, cout = prog.tensors[step.output].shape[1:4]
    cin = shape[-1] // (spec.attr("groups") or 1)
    if prog.dtype == "int8":  # taps inside the input: per output row, and per output column
        rows = sum(kernel_pack._taps_inside(oh, sh, h, pt, kh, dh))
        cols = sum(kernel_pack._taps_inside(ow, sw, w, pl, kw, dw))
        macs = rows * cols * cout * cin
    else:
        macs = step.macs
    peeled = not depthwise and cin <= TVM_PEEL_MAX
    sides = sum(1 for pad in (pt, pb, pl, pr) if pad)
    return round(macs * (TVM_PEELED if peeled else 1.0)), out, out * kh * kw * sides


def border_pixels(p: dict) -> int:
    """Output pixels of a conv / depthwise call (its struct fields) whose kernel window leaves the input."""
    def inside(n: int, stride: int, pad: int, size: int, k: int, dilation: int) -> int:
        return sum(1 for o in range(n) if 0 <= o * stride - pad <= size - 1 - (k - 1) * dilation)

    rows = inside(p["out_h"], p["stride_h"], p["pad_top"], p["in_h"], p["kernel_h"], p["dilation_h"])
    cols = inside(p["out_w"], p["stride_w"], p["pad_left"], p["in_w"], p["kernel_w"], p["dilation_w"])
    return p["out_h"] * p["out_w"] - rows * cols


def conv_tile_terms(p: dict) -> tuple[int, int, int]:
    """ek_conv2d_s8's tile GEMM (kernels/ek_nn_s8.c) in its own terms: (units, "outputs", "inputs").

    Output pixels go in pairs through a 2 pixel x 4 channel GEMM over k_pairs int16 pairs of the reduction axis
    (kernel rows or taps, each padded to even length, or odd rows' last bytes paired after them, see
    kernel_pack.conv_k_pairs): units = the MACs it executes, padding included (pairs x blocks x 16 x k_pairs: 11
    instructions per 16); "outputs" = pair-blocks (accumulator set-up, 8 requantizations, packing and two word
    stores) plus one per call of the block kernel (tiles x blocks: about as much again);
    "inputs" = im2col work in bytes: two pixels' windows per pair, 4 per run of a pair (a conversion call each), 120
    per run of a pixel whose window leaves the input (copied with the zero point through runbuf). Fitted on the M7
    over 18 layers from 1x1 to 10x4 kernels, maps 4x4 to 144x144: within 5 %. A window of at most
    kernel_pack.SMALL_WINDOW bytes leaving the input is gathered whole instead (first layers: ek__im2col_pair_gathered):
    112.9 + 38.2 per run + 3.71 per window byte, fitted on 10 first layers (3x3 x 1-4 channels, 5x5 x 1, 10x4 x 1,
    strides 1 and 2; whole layers within 13 %, 8 of 10 within 6 %)."""
    runs, run_len = kernel_pack._conv_runs(p["kernel_h"], p["kernel_w"], p["in_c"], p["dilation_w"],
                                           bool(p["flags"] & kernel_pack.FLAG_TAP_RUNS))
    k_pairs = kernel_pack.conv_k_pairs(p)
    npix = p["out_h"] * p["out_w"]
    pairs, blocks = (npix + 1) // 2, -(-p["out_c"] // 4)
    border = border_pixels(p)
    tiles = -(-npix // max(p["tile_pixels"], 2))
    window = runs * run_len
    units = pairs * blocks * 16 * k_pairs
    # a block's weights widened again for every tile (about 1 instruction a weight, in units of 11/16), or all of
    # them once per call when cached (a patch tile's call of one im2col tile pays it as much as an uncached one);
    # none when they are stored widened (FLAG_WIDE_WEIGHTS)
    widened = 0 if p["flags"] & kernel_pack.FLAG_WIDE_WEIGHTS else \
        blocks * (1 if p["flags"] & kernel_pack.FLAG_CACHE_ALL_WEIGHTS else tiles)
    units += round(widened * 8 * k_pairs * 16 / 11)
    small = p["dilation_w"] == 1 and not p["flags"] & kernel_pack.FLAG_TAP_RUNS and window <= kernel_pack.SMALL_WINDOW
    edge = border * (112.9 + 38.2 * runs + 3.71 * window) if small else 120 * border * runs
    return units, pairs * blocks + tiles * blocks, round(2 * pairs * window + 4 * pairs * runs + edge)


# The Helium conv and FC as counted from their code (kernels/ek_nn_s8_mve.c), in instructions: the block kernels'
# loop per input vector — 23 when K <= 16 (weights in registers), else 17 + 10 per 16 reduction elements + 18 for a
# predicated K % 16 tail, + 2 (3 for K <= 16) in the loop of a last block of 1-3 channels (its predicated store) —
# and, per call of a block kernel (a block of 4 channels over a tile), HELIUM_BLOCK_CALL; the im2col copies per
# pixel copied, per kernel-row run and per 16-byte vector of it, inside the map and (ek__mve_im2col: fill and copy
# calls) at its border. The constants: a least-squares fit to 281 conv layers (the synthetic CNNs of
# bench/estimators.py, the examples and the zoo; 46 FC layers gave the same block call, 69.3) on the emulated M55
# beside the loop counts (whose coefficient came out 0.998): max error 2.9 %, median 0.2 % (the model per MAC before:
# max 54 %: U-Net's 3x3 over 24 channels +52 %, 1x1 convs with K = 24 +24 %, a last block of 1-3 channels -73 %).
HELIUM_BLOCK_CALL = 69.4
HELIUM_COPY = {"pixel": 51.9, "run": 10.85, "vector": 4.55, "border_run": 95.2, "border_vector": 8.73}


def _helium_terms(step: Step, family: str, out: int) -> tuple[str, int, int, int]:
    """The Helium kernels (kernels/ek_nn_s8_mve.c) priced by their structure, in the terms the fit takes.

    conv and linear — units = the GEMM's instructions counted from its loops (HELIUM_BLOCK_CALL and the loop counts
    above: n input vectors times blocks of 4 output channels, per call of the block kernel), inputs = the im2col
    copies' instructions (HELIUM_COPY), outputs 0: the profile's coefficients scale them (about 1). Depthwise —
    pixel-groups of 16 channels: units = taps of all pixel-groups (4 loads, 2 widening multiplies and the widening
    accumulation per tap), "outputs" = pixel-groups (bias, requantization, narrows, store), "inputs" = output pixels
    plus 2 per tap of a pixel at the border (its tap pointers are computed one by one)."""
    p = step.params
    if step.kind == "ek_dw":
        pixels = p["out_h"] * p["out_w"]
        groups = -(-p["in_c"] // 16)
        taps = p["kernel_h"] * p["kernel_w"]
        border = border_pixels(p)
        return "depthwise_int8_mve", pixels * groups * taps, pixels * groups, pixels + 2 * border * taps
    inside = border = vectors = 0
    if step.kind == "ek_fc":
        k, cout, pixels, calls = p["in_features"], p["out_features"], p["batch"], 1
    else:
        k, cout = p["kernel_h"] * p["kernel_w"] * p["in_c"], p["out_c"]
        pixels = p["out_h"] * p["out_w"]
        tp = max(p["tile_pixels"], 1)
        if kernel_pack.mve_direct(p):  # a call per output row, or one for a map over whole rows: read in place
            calls = 1 if kernel_pack.mve_contiguous(p) else p["out_h"]
        else:  # one pixel a row: tiles across the rows; else tiles of an output row
            calls = -(-p["out_h"] // tp) if kernel_pack.mve_column(p) else p["out_h"] * -(-p["out_w"] // tp)
            border = border_pixels(p)
            inside, run = pixels - border, p["kernel_w"] * p["in_c"]
            vectors = p["kernel_h"] * (-(-run // 16))  # 16-byte vectors of a pixel's window
    blocks, part = -(-cout // 4), cout % 4 != 0
    per_vector = 23 if k <= 16 else 17 + 10 * (k // 16) + (18 if k % 16 else 0)
    units = pixels * (blocks * per_vector + (3 if k <= 16 else 2) * part) + HELIUM_BLOCK_CALL * calls * blocks
    c = HELIUM_COPY
    copied = 0 if step.kind == "ek_fc" else (
        c["pixel"] * (inside + border) + c["run"] * inside * p["kernel_h"] + c["vector"] * inside * vectors
        + c["border_run"] * border * p["kernel_h"] + c["border_vector"] * border * vectors)
    return f"{family}_int8_mve", round(units), 0, round(copied)


def _scalar_terms(step: Step, family: str) -> tuple[str, int, int, int]:
    """The scalar kernels of cores without SIMD (EK_NN_FLAG_RV, kernels/ek_nn_s8.c) priced by their structure.

    conv — 4-pixel x 4-channel GEMM blocks: units = MACs of the pixel groups (pixels rounded up to 4), "outputs" =
    blocks (pixel groups x channel blocks: accumulators set up, 16 requantisations and stores), "inputs" = bytes of
    the im2col tiles. Fully connected — blocks of 16 (then 8, 4, 2, 1) channels: units = MACs, "outputs" = output
    elements, "inputs" = input bytes loaded (once per block and row); in channel pairs (FLAG_RV_PAIRS, key
    linear_pairs_int8_rv) blocks of 8 (then 4, 2, 1) pairs: units = MACs of the pairs (an odd layer's zero channel
    too), "inputs" = input bytes per pair block and row. Depthwise 3x3 — one channel and output row at
    a time: units = MACs, "outputs" = rows (their set-up and edge columns), "inputs" = rows with a kernel row in the
    padding (C loops, not the asm row loop); stride 2 has its own key (two columns per output)."""
    p = step.params
    if step.kind == "ek_conv":
        npix = p["out_h"] * p["out_w"]
        groups = -(-npix // 4)
        k = p["kernel_h"] * p["kernel_w"] * p["in_c"]
        return (f"{family}_int8_rv", groups * 4 * k * p["out_c"], groups * -(-p["out_c"] // 4), groups * 4 * k)
    if step.kind == "ek_fc" and p["flags"] & kernel_pack.FLAG_RV_PAIRS:  # an odd layer's zero channel computed too
        blocks = len(kernel_pack.rv_fc_pair_blocks(p["out_features"]))
        return (f"{family}_pairs_int8_rv", p["batch"] * p["in_features"] * -(-p["out_features"] // 2) * 2,
                p["batch"] * p["out_features"], p["batch"] * p["in_features"] * blocks)
    if step.kind == "ek_fc":
        blocks = len(kernel_pack.rv_fc_blocks(p["out_features"]))
        return (f"{family}_int8_rv", step.macs, p["batch"] * p["out_features"],
                p["batch"] * p["in_features"] * blocks)
    rows = p["out_h"] * p["in_c"]
    inside = sum(1 for oy in range(p["out_h"])
                 if 0 <= oy * p["stride_h"] - p["pad_top"] <= p["in_h"] - p["kernel_h"])
    key = "depthwise_s2_int8_rv" if p["stride_w"] > 1 else "depthwise_int8_rv"
    return key, step.macs, rows, (p["out_h"] - inside) * p["in_c"]


def _depthwise_terms(step: Step, isa: str = "dsp") -> tuple[str, int, int, int]:
    """ek_depthwise_conv2d_s8's cost follows its structure (kernels/ek_nn_s8.c), not one constant per MAC.

    Rows layout: each group of 4 channels' padded input rows are widened once into a ring (ek__dw_build4: about 2
    instructions per element), then one asm call per group and output row runs every channel of the group, 4
    outputs per step with SMLAD pairing the taps (a row's last 1-3 outputs in the same call: 3x3 and 1x3 one more
    step of 2 outputs, or 4 for 3 of them; 5x5 steps of 2). 3x1 runs as 1x3 on the transposed map (rows are
    columns). Terms, in the kernel's view: units = MACs of the computed outputs (out_h · C · kh · kw · the outputs
    computed a row: the per-step requantization and store scale with them for a given kernel, hence a key per kernel:
    3x3 s1, 3x3 s2, 1x3/3x1, 5x5 s1, 5x5 s2, and _kxk for the other kernels' portable row loop), "outputs" = channel
    rows (4 for a row narrower than 4 outputs: a call of its own per channel), "inputs" = ring words built
    (ceil(C/4) · plane rows · row words). The channels-last layout (EK_NN_FLAG_DW_CHANNELS, small maps): units =
    MACs, "outputs" = pixel-groups of 4 channels, "inputs" = output pixels; its asm pixel kernels (DSP builds, 3x3
    and 5x5 on maps at most 3 wide, fast requantization, at least 4 channels: kernel_pack.dw_channels_asm_covers)
    run only the taps inside the map: units = the M7 instructions of
    kernel_pack.dw_channels_instructions (per pixel, pixel-group and group-tap inside the map, fitted by
    bench/dw_layout_fit.py). The pairs layout (EK_NN_FLAG_DW_PAIRS): units = the M7 instructions of
    kernel_pack.dw_pairs_instructions (its per-step, per-row, per-channel-pair and plane-building terms, fitted by
    bench/dw_layout_fit.py). The 1xK row kernel (1xK at stride 1, K 4-32, and Kx1 on the transposed view): units =
    the M7 instructions of kernel_pack.dw1xk_instructions (per 4-output step by the tap pairs, per channel row, per
    weight). A call packed for the transposed map (FLAG_DW_TRANSPOSED) is priced in that view."""
    p = kernel_pack.dw_view(step.params)
    kh, kw, C = p["kernel_h"], p["kernel_w"], p["in_c"]
    if p.get("flags", 0) & kernel_pack.FLAG_DW_PAIRS:  # units: the M7's instructions by the kernel's own model
        key = "depthwise_pairs_s2_int8_ek" if p["stride_w"] == 2 else "depthwise_pairs_int8_ek"
        units = kernel_pack.dw_pairs_instructions(p["stride_h"], p["stride_w"], p["out_h"], p["out_w"], C,
                                                  p["in_h"], p["in_w"], p["pad_top"], p["pad_left"])
        return key, round(units), 0, 0
    if p.get("flags", 0) & kernel_pack.FLAG_DW_CHANNELS:  # per valid tap 4 channels; per pixel and group a requant
        groups = p["out_h"] * p["out_w"] * -(-C // 4)
        if isa != "rv32" and kernel_pack.dw_channels_asm_covers(p):  # the asm pixel kernels, every pixel
            units = kernel_pack.dw_channels_instructions(p["stride_h"], p["stride_w"], p["out_h"], p["out_w"], C,
                                                         p["in_h"], p["in_w"], p["pad_top"], p["pad_left"], k=kh)
            return "depthwise_channels3x3_asm_int8_ek", round(units), 0, 0
        if isa != "rv32" and kw == 1 and kh > 1 and C >= 4 and p["flags"] & kernel_pack.FLAG_FAST_REQUANT:
            # a Kx1 kernel's asm loop (ek__dw_chk1_px): per MAC of the taps inside the map (11 instructions a tap
            # of 4 channels), per pixel-group (bias, requantization, store), per pixel (the C loop's tap bounds)
            inside = sum(1 for o in range(p["out_h"]) for k in range(kh)
                         if 0 <= o * p["stride_h"] - p["pad_top"] + k * p["dilation_h"] < p["in_h"])
            return "depthwise_channels_kx1_int8_ek", inside * p["out_w"] * (C // 4) * 4, groups, \
                p["out_h"] * p["out_w"]
        if (kh, kw) == (3, 3) and p["dilation_h"] == p["dilation_w"] == 1:  # the unrolled 3x3 pixel kernel
            return "depthwise_channels3x3_int8_ek", step.macs, groups, p["out_h"] * p["out_w"]
        # the tap loops: per MAC, per kernel row of a pixel-group (loop set-up), per pixel-group (bias, requant)
        return "depthwise_channels_int8_ek", step.macs, groups * kh, groups
    out_h, out_w, sh, sw = p["out_h"], p["out_w"], p.get("stride_h", 1), p.get("stride_w", 1)
    dh, dw = p["dilation_h"], p["dilation_w"]
    if isa != "rv32" and kernel_pack.dw1xk_runs(p):  # the 1xK row kernel (a Kx1 one transposed)
        clamp = (p["act_min"], p["act_max"]) != (-128, 127)
        return "depthwise_1xk_int8_ek", round(kernel_pack.dw1xk_instructions(out_h, out_w, C, kw, clamp)), 0, 0
    if kernel_pack.depthwise_runs_columns(p):  # the transposed view
        kh, kw, out_h, out_w, sh, sw = kw, kh, out_w, out_h, sw, sh
    out_w4 = -(-out_w // 4) * 4
    plane_w = (out_w4 - 1) * sw + (kw - 1) * dw + 1
    plane_rows = (out_h - 1) * sh + (kh - 1) * dh + 1
    rows = out_h * C
    ring = -(-C // 4) * plane_rows * ((plane_w + 3) // 2)
    if dh == dw == 1 and (kh, kw) == (3, 3) and sw in (1, 2):
        family = "depthwise_s2" if sw == 2 else "depthwise"
    elif dh == dw == 1 and (kh, kw) == (1, 3) and sw in (1, 2):
        family = "depthwise_1x3"
    elif dh == dw == 1 and (kh, kw) == (5, 5) and sw in (1, 2):
        family = "depthwise_5x5_s2" if sw == 2 else "depthwise_5x5"
    else:  # the portable row loop: per MAC and per channel row
        family = "depthwise_s2_kxk" if sw > 1 else "depthwise_kxk"
        return f"{family}_int8_ek", out_h * out_w4 * C * kh * kw, rows, ring
    if out_w < 4:  # a group of 4 in a call of its own per channel, byte copies
        return f"{family}_int8_ek", out_h * 4 * C * kh * kw, rows * 4, ring
    # the last 1-3 outputs in the same call: 3x3 and 1x3 a 2-output step for 1-2 of them, a 4-output one for 3;
    # 5x5 2-output steps
    computed = out_w // 4 * 4 + (0, 2, 2, 4)[out_w % 4]
    return f"{family}_int8_ek", out_h * computed * C * kh * kw, rows, ring


# A patch tile's copy into the full tensor, per byte, per row and per call, where the profile's [cost] has no fitted
# value: the word loops of ek_copy_rows / ek_copy_window (templates: 32 bytes a turn, an LDM and an STM of 8
# registers and the loop: 4 instructions; a row's last 1-7 words one by one; contiguous rows as one) or their byte
# loops for unaligned rows (about 5 per byte), from the M7's disassembly; kws-dscnn's 8,000-byte crops measured
# 1,009 instructions each (estimate 1,028).
DEFAULT_COPY_COSTS = {"copy_words": (0.125, 16.0, 12.0), "copy_bytes": (5.0, 8.0, 30.0)}
# A pad's fill, per output byte: a word store loop (measured on the emulated M7: 0.76 an output byte).
PAD_FILL_PER_BYTE = 0.76


def layer_call_instructions(prog: Program, step: Step, profile: TargetProfile) -> float:
    """Estimated instructions of one (non-recurrent) kernel call."""
    key, units, outs, ins = step_cost_terms(prog, step)
    if key in ("pad_words", "pad_bytes"):  # the rows copied in as a copy, and the fill
        copy = "copy_words" if key == "pad_words" else "copy_bytes"
        d = DEFAULT_COPY_COSTS[copy]
        return profile.number("cost", copy, d[0]) * units + profile.number("cost", copy + "_per_output", d[1]) * outs \
            + profile.number("cost", copy + "_per_call", d[2]) + profile.number("cost", "pad_fill", PAD_FILL_PER_BYTE) * ins
    if key in DEFAULT_COPY_COSTS:
        d = DEFAULT_COPY_COSTS[key]
        return profile.number("cost", key, d[0]) * units + profile.number("cost", key + "_per_output", d[1]) * outs \
            + profile.number("cost", key + "_per_call", d[2]) * max(ins, 1)  # (ins: copy calls of a copy_blocks)
    if key not in profile.cost:  # a profile calibrated before 1x1 convs (or libm's functions) had their own key
        key = key.replace("conv2d_1x1", "conv2d").replace("unary_libm_", "unary_")
        if key.startswith(("depth_to_space_", "upsample_")) and not key.endswith("_ek"):  # (priced as unary before)
            key = "unary_" + key.rsplit("_", 1)[1]
    coef = [profile.number("cost", key, profile.number("cost", "default_per_unit", 8.0))]
    coef += [profile.number("cost", key + suffix, 0.0) for suffix in COST_TERMS[1:]]
    return coef[0] * units + coef[1] * outs + coef[2] * ins + coef[3]


# ---- recurrent cells (streaming programs) -------------------------------------------------------------------------------

# Instructions of the recurrent kernels on the emulated Cortex-M7 (QEMU, exact counts), set from the per-call
# measurements of bench/recurrent.py (digits-gru, -lstm, -lmu, -egru; the bench prints estimate against measurement):
# per multiply-accumulate, plus per input element loaded once for the gates fused in a pass (MACs / gates), per unit
# (rescaling, gate arithmetic, state update), per sigmoid/tanh (newlib's expf/tanhf in float32, an interpolated table
# in int8) and per call (argument unpacking). The EGRU's event-driven product: per multiply-accumulate of an active
# column and per unit checked. Used where the target profile's [cost] has no fitted value.
DEFAULT_CELL_COSTS = {
    "float32": {"per_mac": 3.25, "per_gate_input": 2.25, "per_unit": 140.0, "per_activation": 25.0,
                "per_call": 150.0, "per_event_mac": 6.0, "per_event_unit": 8.0},
    "int8": {"per_mac": 2.15, "per_gate_input": 2.45, "per_unit": 100.0, "per_activation": 30.0,
             "per_call": 150.0, "per_event_mac": 4.8, "per_event_unit": 8.0, "per_requant": 14.0},
}
# Conv streams (convstep.py): (per unit, per output, per call) instructions of a cache push (per byte moved: four
# words per turn when rows are whole words, else a byte loop) and a running pool (per element of the new row; per
# channel — int8: the running total and its requantization — or, float32, per ring entry summed), where the profile's
# [cost] has no fitted value. Measured on the emulated M7 (kws-dscnn's stream: pushes of 100 B byte-wise, 475
# instructions, and of 960 B word-wise, 723; its pool, 3,293 int8 and 10,621 float32); bench/streaming.py prints the
# estimate against QEMU.
DEFAULT_STREAM_COSTS = {"cache_push": (0.69, 0.0, 60.0), "cache_push_bytes": (4.2, 0.0, 60.0),
                        "running_pool_int8": (5.0, 25.5, 60.0), "running_pool_float32": (5.0, 5.6, 60.0)}
STREAM_KINDS = ("cache_push", "running_pool")
# State-space kernels (tvm_cells.py: S4D and the selective scan, state update and output), instructions on the
# emulated M7 per input MAC of the input projection (H·I), per state element (H·N), per channel (H), per call and per
# H² (the selective scan's Δ projection). Non-negative least squares over three layer sizes and the kws-ssm /
# kws-selective layers (24 kernel calls per dtype, measured with QEMU's exact counts; within 0.9 % on the kws layers,
# 17 % on the smallest, a 16-channel toy). bench/streaming.py prints estimate against measurement. Other cores: these
# instructions times the profile's ``ssm_<op>_<dtype>_scale`` (bench/estimators.py --calibrate-cells, on kws-ssm and
# kws-selective; the Cortex-M55 runs the same C about 10 % leaner).
SSM_CELL_COSTS = {
    ("s4d_state", "int8"): (5.07, 25.27, 40.29, 0.0, 0.0), ("s4d_state", "float32"): (5.96, 9.32, 15.9, 0.0, 0.0),
    ("s4d_out", "int8"): (4.81, 5.39, 82.81, 0.0, 0.0), ("s4d_out", "float32"): (6.18, 7.16, 94.29, 0.0, 0.0),
    ("selective_state", "int8"): (4.77, 0.0, 130.21, 0.0, 19.44),
    ("selective_state", "float32"): (5.94, 0.0, 122.13, 0.0, 19.68),
    ("selective_out", "int8"): (4.75, 11.91, 105.18, 0.0, 0.0),
    ("selective_out", "float32"): (5.69, 12.07, 123.81, 0.0, 0.0),
}
# The EGRU's output trace (tvm_cells._trace): instructions per unit and per call, from bench/recurrent.py on the
# emulated M7 (digits-egru, 64 units: 608 float32, 1,512 int8 per call; the call overhead as the other cells').
TRACE_CELL_COSTS = {"float32": (9.0, 32.0), "int8": (23.1, 32.0)}
# Per recurrent kernel: gate rows computed in one pass over the inputs, sigmoid/tanh evaluations per unit.
GATES_PER_PASS = {"gru_cell": 3, "egru_cell": 3, "lstm_cell": 3, "lstm_out": 1, "lmu_hidden": 1, "lmu_memory": 1}
ACTIVATIONS_PER_UNIT = {"gru_cell": 3, "egru_cell": 3, "lstm_cell": 3, "lstm_out": 2, "lmu_hidden": 1,
                        "lmu_memory": 0, "egru_recurrent": 0, "requant_q15": 0, "s4d_state": 0, "s4d_out": 1,
                        "selective_state": 2, "selective_out": 1, "trace_cell": 0}


def step_instruction_terms(prog: Program, s: Step, activity: float | None = None) -> tuple:
    """(cost key, MACs (or work units), units (or outputs), sigmoid/tanh evaluations, calls) of one call of a
    streaming program. For the EGRU's event-driven product (key ``rnn_event_<dtype>``) the MACs are those of the
    active columns: ``activity`` events per unit and step, dense when unknown (an upper bound)."""
    from edgekit.targets.mcu.streaming import CELL_KIND, COMMIT_KIND

    if s.kind == COMMIT_KIND:
        return "copy", s.params["bytes"], 0, 0, 1
    if s.kind == "cache_push":  # bytes moved: the cache shifted by a row, the new row appended
        key = "cache_push" if s.params["row_bytes"] % 4 == 0 else "cache_push_bytes"
        return key, s.params["rows"] * s.params["row_bytes"], 0, 0, 1
    if s.kind == "running_pool":  # row elements summed; int8: a running total per channel, float32: the ring summed
        p = s.params
        ring = p["channels"] * (1 if prog.dtype == "int8" else p["rows"])
        return f"running_pool_{prog.dtype}", p["inner"] * p["channels"], ring, 0, 1
    if s.kind != CELL_KIND:
        key, units, outs, _ = step_cost_terms(prog, s)
        return key, units, outs, 0, 1
    op = s.spec.op
    H = s.spec.attr("hidden")
    if op == "egru_recurrent":
        macs = s.macs if activity is None else int(round(s.macs * activity))
        return f"rnn_event_{prog.dtype}", macs, H, 0, 1
    if op == "requant_q15":
        return "requant_int8", 0, H, 0, 1
    if (op, prog.dtype) in SSM_CELL_COSTS:  # the M7's fitted instructions, scaled per core (ssm_<op>_<dtype>_scale)
        c = SSM_CELL_COSTS[(op, prog.dtype)]
        I, N = s.spec.attr("inputs"), s.spec.attr("state")
        return f"ssm_{op}_{prog.dtype}", c[0] * H * I + c[1] * H * N + c[2] * H + c[3] + c[4] * H * H, 0, 0, 1
    units = s.spec.attr("memory") if op == "lmu_memory" else H
    return f"rnn_{prog.dtype}", s.macs, units, units * ACTIVATIONS_PER_UNIT[op], 1


def call_instructions(prog: Program, s: Step, profile: TargetProfile, activity: float | None = None) -> float:
    """Estimated instructions of one call of step ``s`` (any program)."""
    from edgekit.targets.mcu.streaming import CELL_KIND, COMMIT_KIND

    if s.kind == COMMIT_KIND:
        return 1.0 * s.params["bytes"] + 10.0   # a byte loop: ~1 instruction per byte (measured 261 for 256 B)
    if s.kind in STREAM_KINDS:
        key, units, outs, _, calls = step_instruction_terms(prog, s, activity)
        d = DEFAULT_STREAM_COSTS[key]
        return profile.number("cost", key, d[0]) * units + profile.number("cost", key + "_per_output", d[1]) * outs \
            + profile.number("cost", key + "_per_call", d[2]) * calls
    if s.kind != CELL_KIND:
        return layer_call_instructions(prog, s, profile)
    defaults = DEFAULT_CELL_COSTS[prog.dtype]
    key, units, outs, acts, calls = step_instruction_terms(prog, s, activity)

    def cost(name: str, default: float) -> float:
        return profile.number("cost", name, default)

    if s.spec.op == "trace_cell":  # the EGRU's output trace: one multiply-add per unit, no gates
        per_unit, per_call = TRACE_CELL_COSTS[prog.dtype]
        return cost(f"trace_{prog.dtype}", per_unit) * s.spec.attr("hidden") + \
            cost(f"trace_{prog.dtype}_per_call", per_call)
    if key.startswith("ssm_"):  # (bench/estimators.py --calibrate-cells fits the scale of cores other than the M7)
        return cost(f"{key}_scale", 1.0) * units
    if key == "requant_int8":
        return cost(f"{key}_step_per_unit", defaults["per_requant"]) * outs + \
            cost(f"{key}_step_per_call", defaults["per_call"]) * calls
    if key.startswith("rnn_event_"):
        return cost(f"{key}_step", defaults["per_event_mac"]) * units + \
            cost(f"{key}_step_per_unit", defaults["per_event_unit"]) * outs + \
            cost(f"{key}_step_per_call", defaults["per_call"]) * calls
    inputs = units / GATES_PER_PASS.get(s.spec.op, 1)
    return cost(f"{key}_step", defaults["per_mac"]) * units + \
        cost(f"{key}_step_per_gate_input", defaults["per_gate_input"]) * inputs + \
        cost(f"{key}_step_per_unit", defaults["per_unit"]) * outs + \
        cost(f"{key}_step_per_activation", defaults["per_activation"]) * acts + \
        cost(f"{key}_step_per_call", defaults["per_call"]) * calls


def step_cpi(profile: TargetProfile, step: Step) -> float:
    """Cycles per instruction the profile gives one kernel call: Helium calls (micro-kernels packed with FLAG_MVE:
    most of their instructions are two-beat vector instructions) ``[extra] cycles_per_instruction_helium``, all
    others ``[extra] cycles_per_instruction`` (1.0 where a profile has none)."""
    base = profile.number("extra", "cycles_per_instruction", 1.0)
    if step.is_micro_kernel and step.params.get("flags", 0) & kernel_pack.FLAG_MVE:
        return profile.number("extra", "cycles_per_instruction_helium", base)
    return base


def program_cycles(prog: Program, profile: TargetProfile, activity: float | None = None) -> dict[str, float]:
    """Estimated cycles of one run of the program's call list, per layer (instructions · :func:`step_cpi`)."""
    out: dict[str, float] = {}
    for s in prog.steps:
        out[s.layer] = out.get(s.layer, 0.0) + call_instructions(prog, s, profile, activity) * s.rate * \
            step_cpi(profile, s)
    return out


def program_instructions(prog: Program, profile: TargetProfile, activity: float | None = None) -> dict[str, float]:
    """Estimated instructions of one run of the program's call list (an inference, or one step), per layer."""
    out: dict[str, float] = {}
    for s in prog.steps:  # (a conv stream's guarded calls run on a fraction of the steps: their rate)
        out[s.layer] = out.get(s.layer, 0.0) + call_instructions(prog, s, profile, activity) * s.rate
    return out


# ---- code size and SRAM -----------------------------------------------------------------------------------------------

def helium_only(prog: Program) -> bool:
    """Whether every call of ek_nn_s8 in the program is packed for Helium (the firmware then leaves the DSP code
    out: -DEK_NN_MVE_ONLY)."""
    from edgekit.targets.mcu.ek_kernels import ELEMENTWISE_KINDS, SPARSE_KINDS

    calls = [s for s in prog.steps if s.is_micro_kernel and s.kind not in SPARSE_KINDS + ELEMENTWISE_KINDS]
    return bool(calls) and all(s.params.get("flags", 0) & kernel_pack.FLAG_MVE for s in calls)


def scalar_only(prog: Program) -> bool:
    """Whether every call of ek_nn_s8's conv, depthwise and FC kernels is packed for the scalar kernels of cores
    without SIMD (the firmware then leaves the other layouts' portable code out: -DEK_NN_SCALAR_ONLY)."""
    calls = [s for s in prog.steps if s.kind in ("ek_conv", "ek_dw", "ek_fc")]
    return bool(calls) and all(s.params.get("flags", 0) & kernel_pack.FLAG_RV for s in calls)


def _code_kinds(prog: Program) -> list[str]:
    """The kernel code a firmware links, by kind: a Helium call links its ``<kind>_mve`` code, and its entry
    point's DSP code too unless every call is Helium (:func:`helium_only`); a depthwise call the parts of the DSP
    code it runs (``ek_dw_rows``, ``ek_dw_1x3``, ... : kernel_pack.depthwise_code_variants), a conv, FC, add or pool
    call the block kernels and loops it may run (``ek_gemm_fast``, ``ek_fc_raw``, ``ek_add4s``, ``ek_gap``, ...:
    kernel_pack.gemm_code_variants, elementwise_code_variants); a call of the scalar kernels its
    ``<kind>_rv`` code, and the entry point's portable code for the other layouts too unless every call is scalar
    (:func:`scalar_only`)."""
    from edgekit.targets.mcu.ek_kernels import ELEMENTWISE_KINDS, FUNCTIONS

    only, only_rv = helium_only(prog), scalar_only(prog)
    kinds = set()
    for s in prog.steps:
        if s.kind not in FUNCTIONS:
            continue
        if s.params.get("flags", 0) & kernel_pack.FLAG_MVE:
            kinds.add(s.kind + "_mve")
            if s.kind in ("ek_conv", "ek_fc"):  # (ek_mve_part: the block loops of a last block of 1-3 channels)
                kinds.update(f"ek_{v}" for v in kernel_pack.gemm_code_variants(s.kind, s.params))
            if only and s.kind not in ELEMENTWISE_KINDS:  # (these keep their scalar paths in every build)
                continue
        if s.params.get("flags", 0) & kernel_pack.FLAG_RV:  # (the FC's two layouts: pipeline.firmware_cflags)
            kinds.add(s.kind + ("_rv_pairs" if s.params["flags"] & kernel_pack.FLAG_RV_PAIRS else "_rv"))
            if only_rv:
                continue
        kinds.add(s.kind)
        if s.kind == "ek_conv" and s.params.get("flags", 0) & kernel_pack.FLAG_CONV_FC:  # its path and the FC code
            kinds.update(("ek_conv_fc", "ek_fc"))
        if s.kind == "ek_dw":  # the depthwise code's parts a firmware links only when a call runs them
            kinds.update(f"ek_dw_{v}" for v in kernel_pack.depthwise_code_variants(s.params))
        elif s.kind in ("ek_conv", "ek_fc"):  # the block kernels, likewise (pipeline.firmware_cflags)
            kinds.update(f"ek_{v}" for v in kernel_pack.gemm_code_variants(s.kind, s.params))
        elif s.kind in ("ek_add", "ek_pool"):  # the optional SMLAD / chunked loops
            kinds.update(f"ek_{v}" for v in kernel_pack.elementwise_code_variants(s.kind, s.params))
    if kinds & {"ek_conv_mve", "ek_fc_mve"}:
        kinds.add("ek_gemm_mve")
    return sorted(kinds)


def code_features(prog: Program) -> dict[str, float]:
    """What the code-size model counts in a program: driver steps, tensor descriptors and their dimensions, distinct
    TVM kernels by operator (recurrent cells apart), edgekit kernel kinds and their parameter structs."""
    from edgekit.targets.mcu.ek_kernels import FUNCTIONS, struct_key
    from edgekit.targets.mcu.streaming import CELL_KIND

    from edgekit.targets.mcu.codegen import uses_call_table

    table = uses_call_table(prog)
    specs = {s.spec for s in prog.steps if s.kind == "tvm"}
    descriptors = set()
    for s in prog.steps:  # a call table shares one descriptor among tensors at the same place (a tile's buffer)
        if s.kind == "tvm":
            descriptors.update((prog.tensors[x].offset if table else x, prog.tensors[x].shape)
                               for x in s.inputs + [s.output])
            descriptors.update((c, prog.consts[c].data.shape) for c in s.consts)
    f = {"steps": len(prog.steps), "descriptors": len(descriptors),
         "ndims": sum(len(shape) for _, shape in descriptors),
         "tvm_conv": sum(1 for spec in specs if spec.op in ("conv2d", "conv1d")),
         "tvm_other": sum(1 for spec in specs if spec.op not in ("conv2d", "conv1d")),
         "tvm_cells": len({s.spec for s in prog.steps if s.kind == CELL_KIND})}
    f["ek_kinds"] = _code_kinds(prog)
    f["ek_structs"] = sorted({struct_key(s): s.kind for s in prog.steps if s.kind in FUNCTIONS}.values())
    f["call_table"] = table
    return f


def _call_bytes(prog: Program, platform, f: dict, table: bool) -> float:
    """The code-size model's flash of the calls: a row per call, the driver loop, the base structs and the fields
    the other calls change when run from a call table, else the per-call code and each distinct struct."""
    m = platform.code_size
    if table:
        from edgekit.targets.mcu.nested import TABLE_STEP_BYTES, table_struct_bytes

        return TABLE_STEP_BYTES * f["steps"] + m.table_driver_bytes + table_struct_bytes(prog, m.ek_struct_bytes)
    return m.per_step * f["steps"] + sum(m.ek_struct_bytes.get(k, 0) for k in f["ek_structs"])


def call_table_pays(prog: Program, platform) -> bool:
    """Whether an unpatched program's calls take less flash as a call table than as one call per step (by the
    code-size model: mbv2-w035 on the M7 36.7 -> 31.9 KB beyond its constants with the bases chosen by flash,
    31.397 M -> 31.411 M instructions; digits-cnn's 9 calls stay unrolled). Only programs every call of which can be
    a row."""
    from edgekit.targets.mcu.nested import _tabulable

    if not _tabulable(prog):
        return False
    f = code_features(prog)
    return _call_bytes(prog, platform, f, True) < _call_bytes(prog, platform, f, False)


def code_bytes(prog: Program, platform) -> int:
    """Estimated flash of everything but the constant arrays (the platform's code-size model)."""
    m = platform.code_size
    f = code_features(prog)
    calls = _call_bytes(prog, platform, f, f["call_table"])
    return int(m.base + calls + m.per_dltensor * f["descriptors"] + m.per_dim * f["ndims"]
               + m.per_tvm_conv * f["tvm_conv"] + m.per_tvm_kernel * f["tvm_other"] + m.per_tvm_cell * f["tvm_cells"]
               + sum(m.ek_kernel_bytes.get(k, 0) for k in f["ek_kinds"]))


def libc_ram_bytes(graph, dtype: str, platform) -> int:
    """RAM the C library adds: its reentrancy data when float32 kernels call libm's exponentials."""
    uses_libm = dtype == "float32" and any(n.op in LIBM_OPS for n in graph.nodes)
    return platform.code_size.libc_reent_bytes if uses_libm else 0


def sram_estimate(model, prog: Program, platform, stack: tuple[int, str] | None = None) -> tuple[int, str]:
    """Peak SRAM of a build and its formula: arena + state + the fault handler's stack + the deepest stack + what
    the C library adds. ``stack``: (bytes, where they come from) once the firmware's call graph is known, else the
    platform's guess."""
    m = platform.code_size
    libc = libc_ram_bytes(model.deploy_graph, prog.dtype, platform)
    stack_bytes, stack_note = stack if stack is not None else (m.stack_estimate_bytes, "")
    total = prog.arena_bytes + prog.state_bytes + m.board_ram_bytes + stack_bytes + libc
    formula = (f"arena {prog.arena_bytes:,} B{' (one step)' if prog.streaming else ''} + state "
               f"{prog.state_bytes:,} B + board {m.board_ram_bytes} B (fault stack) + stack "
               f"{stack_bytes} B" + (f" ({stack_note})" if stack_note else "")
               + (f" + C library {libc} B (reentrancy data for libm)" if libc else ""))
    return total, formula


# ---- the estimate -----------------------------------------------------------------------------------------------------

def program_estimate(model, profile: TargetProfile, prog: Program, platform) -> Estimate:
    """Flash, SRAM, instructions, latency and energy of a planned program (built, not compiled or run). A streaming
    program's instructions count a whole sequence (``instructions_per_step`` one step)."""
    table = layer_table(model.deploy_graph, prog.dtype, weight_bytes=prog.const_bytes_by_layer())
    # The EGRU's event-driven product scales with the events: the activity to_egru measured, when the model carries
    # it (meta['egru']); otherwise dense, an upper bound.
    sparsity = (model.meta.get("egru") or {}).get("activity_sparsity") if prog.event_states else None
    activity = None if sparsity is None else 1.0 - float(sparsity)
    per_run = program_instructions(prog, profile, activity)
    cycles_run = program_cycles(prog, profile, activity)
    runs = prog.steps_per_sequence if prog.streaming else 1
    clock = profile.clock_hz.value
    pj = profile.number("energy", "run_current_ua_per_mhz") * profile.number("energy", "supply_v")
    for lay in table.layers:
        lay["instructions"] = int(per_run.get(lay["name"], 0) * runs)
        if prog.streaming:
            lay["instructions_per_step"] = int(per_run.get(lay["name"], 0))
        cyc = cycles_run.get(lay["name"], 0) * runs
        lay["latency_ms"] = cyc / clock * 1e3
        lay["energy_uj"] = cyc * pj * 1e-6
    run_total = int(sum(per_run.values()))
    total = run_total * runs
    cycles = int(sum(cycles_run.values()) * runs)
    cpi = profile.number("extra", "cycles_per_instruction", 1.0)
    cpi_h = profile.number("extra", "cycles_per_instruction_helium", cpi)
    cpi_text = f"CPI {cpi:g}" + (f", Helium kernels {cpi_h:g}" if any(
        s.is_micro_kernel and s.params.get("flags", 0) & kernel_pack.FLAG_MVE for s in prog.steps) else "")
    code = code_bytes(prog, platform)
    sram, sram_formula = sram_estimate(model, prog, platform)
    n_tvm = len({s.spec for s in prog.steps if s.kind == "tvm"})
    formulas = {
        "flash_bytes": f"constants {prog.const_bytes:,} B (weights, biases, requantization) + code {code:,} B "
                       f"(board support {platform.code_size.base} B, driver, {n_tvm} distinct TVM kernels)",
        "peak_sram_bytes": sram_formula,
        "cycles": f"{cycles:,} = {total:,} instructions × cycles per instruction ({cpi_text}; the profile's "
                  f"estimate — QEMU counts instructions, not cycles)",
        "latency_ms": f"{cycles:,} cycles (estimate) / {clock / 1e6:g} MHz",
        "energy_uj": f"{cycles:,} cycles · {profile.number('energy', 'run_current_ua_per_mhz'):g} uA/MHz · "
                     f"{profile.number('energy', 'supply_v'):g} V = {pj:.1f} pJ/cycle",
    }
    if prog.streaming:
        events = "" if not prog.event_states else (
            f"; EGRU product at {activity:.0%} activity (to_egru's measurement)" if activity is not None
            else "; EGRU product dense (an upper bound: no measured activity)")
        formulas["instructions"] = (f"{runs} steps x {run_total:,} instructions per step (cells: MACs, units, "
                                    f"sigmoid/tanh and calls at cost.DEFAULT_CELL_COSTS; head every step{events})")
        formulas["energy_uj"] += f", per sequence of {runs} steps"
    else:
        formulas["instructions"] = ("Σ kernel calls: key·units + key_per_output·outputs + key_per_input·inputs + "
                                    "key_per_call (the profile's fitted [cost])")
    return Estimate(flash_bytes=prog.const_bytes + code, peak_sram_bytes=sram, arena_bytes=prog.arena_bytes,
                    state_bytes=prog.state_bytes, latency_ms=cycles / clock * 1e3, energy_uj=cycles * pj * 1e-6,
                    instructions=total, cycles=cycles, macs=table.macs, layers=table.layers,
                    memory_timeline=list(prog.plan.live_bytes), formulas=formulas,
                    instructions_per_step=run_total if prog.streaming else None)
