"""Calls of edgekit's own int8 micro-kernels (kernels/ek_nn_s8.c) in a Cortex-M program.

Where it sits: program.py asks for a step for an int8 conv / depthwise conv / linear layer (a whole layer or one tile
of a patch schedule); kernel_pack.py packs the weights and fills the parameter struct; codegen.py prints the call
with :func:`render_call`. TVM generates every other kernel; these replace TVM's scalar loops where the DSP
extension (SMLAD on int16 pairs) pays, and on Helium cores (the M55: builder.ek_isa == "mve") run the layers packed
for kernels/ek_nn_s8_mve.c. Residual int8 adds run ek_add_s8 on every core ('ek_add'); pooling runs ek_pool_s8 on
Helium cores and, 4 channels a word, on DSP cores ('ek_pool'); int8 elementwise layers given as a table run
ek_lut_s8 ('ek_lut'), concatenations along channels ek_concat_s8 ('ek_concat'), int8 layout moves (a channel
shuffle, NHWC to torch order, a Conv1d's [C, L] <-> [L, C]) ek_transpose_s8 ('ek_transpose'). A pruned conv
(groups = 1) or linear layer whose compressed weights are smaller (sparse_pack.sparse_pays) runs the sparse kernels of kernels/ek_sparse_s8.c instead ('ek_sconv', 'ek_sfc').
"""
from __future__ import annotations

import contextlib
import functools
import math

from edgekit import intref
from edgekit.errors import UnsupportedError, UsageError
from edgekit.targets.mcu import kernel_pack, sparse_pack

# Scratch (im2col tiles, widened weights) each conv call may use at most: speed against arena bytes.
CONV_SCRATCH_LIMIT_BYTES = 8 * 1024
DEFAULT_CONV_SCRATCH_LIMIT_BYTES = CONV_SCRATCH_LIMIT_BYTES
# Nested images (targets/mcu/nested.py): layer name -> its channel count at the widest operating point, while one is
# being built. Conv layers then pack one reduction run per tap and depthwise layers take the widest point's layout,
# so that every narrower point's packed weights are a prefix of the widest one's (kernel_pack.nested_view).
NESTED_FULL_CHANNELS: dict[str, int] | None = None
NESTED_TAP_RUN_LAYERS: frozenset[str] = frozenset()  # conv layers whose input channels differ between the points
# Nested images: depthwise layer name -> its channels at every operating point; a 3x3 layer on the DSP cores takes the
# layout whose estimated instructions summed over the points are the fewest (the layouts nest alike).
NESTED_POINT_CHANNELS: dict[str, tuple[int, ...]] = {}
# sparse_layers moves a family's unpruned layers to the sparse kernel (to drop the dense kernel's code) only when they
# do at most this share of the model's conv/linear MACs: on dense weights the sparse kernel is ~2.5x slower.
MOVED_MACS_FRACTION = 0.1


def _requant_args(qn) -> dict:
    q = qn.q
    return dict(x_zp=int(q["in_zp"]), out_zp=int(qn.out_zp), act_min=int(q["act_min"]), act_max=int(q["act_max"]))


def conv_step(builder, node, qn, depthwise: bool, pads, macs: int, x: str, out: str, window=None):
    """A step running ``node`` (or one tile: ``window`` = (row, col, h, w) of the input buffer) with
    ek_conv2d_s8 / ek_depthwise_conv2d_s8; None when even the smallest conv tile needs more scratch than
    CONV_SCRATCH_LIMIT_BYTES (the caller uses TVM's kernel for that layer)."""
    from edgekit.targets.mcu.program import Step

    buf = builder.tensors[x].shape  # (1, H, W, C) physical
    _, H, W, C = buf
    r, c, h, w = window if window is not None else (0, 0, H, W)
    a = node.attrs
    common = dict(input_shape=(h, w, C), stride=tuple(a["stride"]), dilation=tuple(a["dilation"]),
                  padding=tuple(pads), in_row_stride=W * C, **_requant_args(qn))
    if depthwise:
        layout = "auto"  # a patch tile's narrower window may take the other layout (Program.const keeps both)
        top, _, left, _ = intref.padding4(common["padding"])
        kernel, out_hw, geometry = tuple(qn.q["weight"].shape[2:]), tuple(builder.tensors[out].shape[1:3]), \
            (h, w, top, left)
        if NESTED_FULL_CHANNELS is not None and node.name in NESTED_FULL_CHANNELS:
            layout = _nested_depthwise_layout(node.name, kernel, tuple(common["stride"]), tuple(common["dilation"]),
                                              out_hw, builder.ek_isa, geometry)
        packed = kernel_pack.pack_depthwise_conv2d(qn.q["weight"], qn.q["bias"], qn.q["mult"], qn.q["shift"],
                                                   isa=builder.ek_isa, layout=layout, **common)
        if layout == "auto" and packed.notes.get("layout") == "channels" and builder.ek_isa == "dsp":
            # channels-last stores 2 bytes a weight (int16): within the flash the target can spare for widened
            # weights (shared with the convs'), else the fastest other layout; a layer's tiles count once
            if node.name not in builder.dw_wide_layers:
                if _flash_to_spare(builder, packed.weight_padding_bytes):
                    builder.wide_extra_bytes += packed.weight_padding_bytes
                    builder.dw_wide_layers.add(node.name)
                else:
                    packed = kernel_pack.pack_depthwise_conv2d(
                        qn.q["weight"], qn.q["bias"], qn.q["mult"], qn.q["shift"], isa=builder.ek_isa,
                        layout=_depthwise_layout_but_channels(kernel, common, out_hw, geometry), **common)
        kind, wname = "ek_dw", f"{node.name}.dw"
    else:
        step = _sparse_conv_step(builder, node, qn, common, macs, x, out, (r * W + c) * C)
        if step is not None:
            return step
        # A program may grant a layer more scratch where its arena has room at that step (pipeline._with_slack_scratch,
        # which checks the arena after): the widened weights may then take all of it.
        granted = getattr(builder, "scratch_limits", {}).get(node.name)
        limit = max(CONV_SCRATCH_LIMIT_BYTES, granted or 0)
        # A layer's tiles keep the layout of its first call where it fits (FLAG_CONV_FC or the tile GEMM: their
        # weights differ, so mixing them would store the layer's weights twice).
        first = builder.conv_fc_layers.get(node.name)
        # Weights stored widened (FLAG_WIDE_WEIGHTS) where they pay, within the flash the target can spare; a
        # layer's tiles keep its first call's choice (one weights array). Not in nested images (prefixes of int8).
        wide = builder.wide_layers.get(node.name)
        if wide is None:
            fits = _flash_to_spare(builder, qn.q["weight"].size)
            wide = None if fits and NESTED_FULL_CHANNELS is None else False
        # Within a grant the first call's widened layout may take all of it, the later tiles what the first took.
        wide_room = None if granted is None else granted if wide is None else builder.wide_rooms.get(node.name, granted)
        if NESTED_FULL_CHANNELS is not None:  # a nested image: its points read prefixes of the tile GEMM's layout
            tries = [False]
        else:
            tries = [first, None] if first is not None else [None]
        packed = None
        for conv_fc in tries:
            try:
                packed = kernel_pack.pack_conv2d(qn.q["weight"], qn.q["bias"], qn.q["mult"], qn.q["shift"],
                                                 scratch_limit_bytes=limit, isa=builder.ek_isa,
                                                 tap_runs=node.name in NESTED_TAP_RUN_LAYERS, conv_fc=conv_fc,
                                                 wide_weights=wide, layer_pixels=math.prod(node.shape[2:4]),
                                                 wide_room=wide_room,
                                                 conv_c1=False if NESTED_FULL_CHANNELS is not None else None, **common)
                break
            except kernel_pack.ScratchLimitError:
                continue
        if packed is None:
            return None
        builder.conv_fc_layers.setdefault(node.name, bool(packed.params["flags"] & kernel_pack.FLAG_CONV_FC))
        if node.name not in builder.wide_layers:
            is_wide = bool(packed.params["flags"] & kernel_pack.FLAG_WIDE_WEIGHTS)
            builder.wide_layers[node.name] = is_wide
            builder.wide_extra_bytes += int(qn.q["weight"].size) if is_wide else 0
            if is_wide and granted is not None:
                builder.wide_rooms[node.name] = packed.scratch_bytes
        kind, wname = "ek_conv", f"{node.name}.ekw"
    out_shape = builder.tensors[out].shape
    planned = tuple(out_shape[1:3])
    # (a Kx1 conv down one column may be packed as the 1xK one along a row: kernel_pack.pack_conv2d)
    if (packed.params["out_h"], packed.params["out_w"]) not in (planned, planned[::-1]):
        raise AssertionError(f"layer '{node.name}': packed output {packed.params['out_h']}x{packed.params['out_w']}"
                             f" differs from the planned {out_shape[1]}x{out_shape[2]}")
    consts = [builder.const(wname, packed.weights),
              builder.const(f"{node.name}.ekb", packed.bias) if packed.bias is not None else None,
              builder.const(f"{node.name}.ekrq", packed.requant)]
    return Step(node.name, kind, [x], [cname for cname in consts if cname], out, params=dict(packed.params),
                macs=macs, scratch_bytes=packed.scratch_bytes, in_offset=(r * W + c) * C,
                dense_weight_bytes=int(packed.weights.nbytes), stored_weight_bytes=int(packed.weights.nbytes))


def fc_step(builder, node, qn, macs: int):
    from edgekit.targets.mcu.program import Step

    x = node.inputs[0]
    rows = builder.tensors[x].shape[0]
    w = qn.q["weight"]
    if node.name in sparse_layers(builder):
        try:
            sparse = sparse_pack.pack_sparse_fully_connected(w, qn.q["bias"], qn.q["mult"], qn.q["shift"],
                                                             batch=rows, **_requant_args(qn))
        except UnsupportedError:
            sparse = None
        if sparse is not None:
            return _sparse_step(builder, node, sparse, "ek_sfc", [x], node.name, macs, 0, sparse.entries * rows)
    cout, cin = qn.q["weight"].shape[:2]  # channel pairs where they pay and the target's flash can spare them
    rv_pairs = kernel_pack.rv_fc_pairs_apply(cin, cout, getattr(builder, "fc_pairs_max_extra", None))
    packed = kernel_pack.pack_fully_connected(qn.q["weight"], qn.q["bias"], qn.q["mult"], qn.q["shift"],
                                              batch=rows, isa=builder.ek_isa, rv_pairs=rv_pairs, **_requant_args(qn))
    consts = [builder.const(f"{node.name}.ekw", packed.weights), builder.const(f"{node.name}.ekb", packed.bias),
              builder.const(f"{node.name}.ekrq", packed.requant)]
    return Step(node.name, "ek_fc", [x], consts, node.name, params=dict(packed.params), macs=macs,
                scratch_bytes=packed.scratch_bytes, dense_weight_bytes=int(packed.weights.nbytes),
                stored_weight_bytes=int(packed.weights.nbytes))


def grouped_1x1_steps(builder, node, qn, macs: int, x: str, out: str) -> list:
    """A grouped 1x1 conv (stride 1, no padding) as one ek_conv2d_s8 call a group: the map's pixels as rows of one
    pixel, so that the row strides are the pixel strides — the group's input channels read from the input (from
    its first channel, Step.in_offset) and its outputs written into the output (Step.out_offset) at the pixels'
    stride: no copies, the group's own MACs and weights. Zoo ShuffleNet's 1x1 convs (4 groups of 8 channels, 16x16
    pixels) on the emulated M7: 4 x ~32.6 k instructions a layer against 258.6 k for the dense kernel on
    block-diagonal weights; on the rv32imc core the whole model 5.72 M -> 3.61 M (TVM's grouped kernel before).
    [] where it does not apply: another kernel shape, a nested image, a group whose tile needs more scratch than
    the limit, Helium (its layout takes a pixel at a time: ShuffleNet on the M55 0.90 M -> 1.78 M, so the M55 keeps
    the block-diagonal weights)."""
    from edgekit.targets.mcu.program import Step

    a = node.attrs
    groups, cin, cout = a["groups"], a["in_channels"], a["out_channels"]
    cg, og = cin // groups, cout // groups
    if tuple(a["kernel_size"]) != (1, 1) or tuple(a["stride"]) != (1, 1) or any(a["padding"]) or \
            builder.ek_isa not in ("dsp", "rv32") or NESTED_FULL_CHANNELS is not None:
        return []
    _, h, w, c = builder.tensors[x].shape
    if c != cin or tuple(builder.tensors[out].shape[1:]) != (h, w, cout):
        return []
    q = qn.q
    steps = []
    for k in range(groups):
        rows = slice(k * og, (k + 1) * og)
        try:
            packed = kernel_pack.pack_conv2d(q["weight"][rows], q["bias"][rows], q["mult"][rows], q["shift"][rows],
                                             input_shape=(h * w, 1, cg), in_row_stride=cin, out_row_stride=cout,
                                             scratch_limit_bytes=CONV_SCRATCH_LIMIT_BYTES, isa=builder.ek_isa,
                                             **_requant_args(qn))
        except UnsupportedError:
            return []
        consts = [builder.const(f"{node.name}.g{k}.ekw", packed.weights),
                  builder.const(f"{node.name}.g{k}.ekb", packed.bias),
                  builder.const(f"{node.name}.g{k}.ekrq", packed.requant)]
        steps.append(Step(node.name, "ek_conv", [x], consts, out, params=dict(packed.params), macs=macs // groups,
                          scratch_bytes=packed.scratch_bytes, dense_weight_bytes=int(packed.weights.nbytes),
                          stored_weight_bytes=int(packed.weights.nbytes), in_offset=k * cg, out_offset=k * og))
    return steps


def add_step(builder, node, qn, ins: list[str], out: str, windows=None):
    """A step running an int8 add with ek_add_s8 (Helium on the M55): of two same-shape tensors, or of a patch
    tile's same-size ``windows`` (row, col, h, w) of two maps (one row of the window at a time, each contiguous)."""
    from edgekit.targets.mcu.program import Step

    q = qn.q
    shape = builder.tensors[out].shape
    whole = windows is None or all(tuple(win) == (0, 0, *builder.tensors[x].shape[1:3])
                                   for x, win in zip(ins, windows))
    if whole:  # one run of every element
        n, rows, strides, offsets = math.prod(int(d) for d in shape), 1, None, [0, 0]
    else:  # a tile's windows: a run per window row
        _, h, w, c = shape
        widths = [builder.tensors[x].shape[2] for x in ins]
        n, rows, strides = w * c, h, (widths[0] * c, widths[1] * c, w * c)
        offsets = [(r * wd + col) * c for (r, col, _, _), wd in zip(windows, widths)]
    packed = kernel_pack.pack_add(n, a_zp=int(q["a_zp"]), b_zp=int(q["b_zp"]), a_mult=int(q["a_mult"]),
                                  b_mult=int(q["b_mult"]), shift=int(q["shift"]), out_zp=int(qn.out_zp),
                                  act_min=int(q["act_min"]), act_max=int(q["act_max"]), isa=builder.ek_isa,
                                  rows=rows, row_strides=strides)
    return Step(node.name, "ek_add", list(ins), [], out, params=dict(packed.params), in_offset=offsets[0],
                in2_offset=offsets[1])


def pool_step(builder, node, x: str, out: str, mode: str, kernel, stride, pad_top: int, pad_left: int):
    """A step running an int8 max / average (or global average) pool with ek_pool_s8: its Helium path, or on the
    DSP cores its SIMD path (4 channels a word: SSUB8/SEL for max, SXTAB16 sums and SMLAWB requantization for
    average), which needs channels in fours and, for an average, int16 sums and 17 <= shift <= 38. None where
    neither applies: TVM's kernel beats ek_pool_s8's scalar loop (measured on the M7), so the caller keeps it —
    except in a nested image, where one ek_pool_s8 serves every operating point instead of a TVM kernel per point
    and shape.

    Measured on the emulated M7, instructions per output element (bench/elementwise.py): global average pool
    5x5x1280 34.4 (TVM 196); max 2x2 s2 6.8, 3x3 s2 p1 13.5, average 2x2 12.5 (TVM 20.2 / 131 / 26.7)."""
    nested = NESTED_FULL_CHANNELS is not None  # a nested image: one pooling function for every point, not a TVM
    _, h, w, c = builder.tensors[x].shape       # kernel per point and shape (flash; the speed is the same)
    q = {}
    if mode == "avg":
        qn = builder.q(node.name)
        q = dict(x_zp=int(qn.q["in_zp"]), out_zp=int(qn.out_zp), mult=int(qn.q["mult"]), shift=int(qn.q["shift"]))
    simd = builder.ek_isa == "dsp" and c % 4 == 0 and (  # ek_pool_s8's condition for its SIMD path
        mode == "max" or kernel_pack.pool_simd_sums(kernel, q["x_zp"], q["shift"]))
    simd = simd or builder.ek_isa == "dsp" and kernel_pack.pool_global_chunks(mode, (h, w, c), kernel, pad_top,
                                                                              pad_left, q.get("x_zp", 0),
                                                                              q.get("shift", 1))
    if builder.ek_isa != "mve" and not nested and not simd:
        return None
    from edgekit.targets.mcu.program import Step

    _, oh, ow, _ = builder.tensors[out].shape
    packed = kernel_pack.pack_pool(mode, in_hwc=(h, w, c), out_hw=(oh, ow), kernel=kernel, stride=stride,
                                   pad_top=pad_top, pad_left=pad_left, isa=builder.ek_isa, **q)
    if not packed.params["flags"] & kernel_pack.FLAG_MVE and not nested and not simd:
        return None
    return Step(node.name, "ek_pool", [x], [], out, params=dict(packed.params))


def lut_step(builder, node, x: str, out: str, lut):
    """A step running an int8 elementwise layer given as the host reference's 256-entry table (hardswish, sigmoid,
    tanh, a ReLU not fused into a conv, ...) with ek_lut_s8; None in a nested image (one TVM kernel serves there)
    and on the scalar cores (their TVM kernel is kept: the cost model has no figures for ek_lut_s8 there).
    Measured on the emulated M7 (bench/elementwise.py): 3.75 instructions per element."""
    if NESTED_FULL_CHANNELS is not None or builder.ek_isa not in ("dsp", "mve"):
        return None
    from edgekit.targets.mcu.program import Step

    n = 1
    for d in builder.tensors[out].shape:
        n *= int(d)
    packed = kernel_pack.pack_lut(lut, n)
    table = builder.const(f"{node.name}.eklut", packed.weights)
    return Step(node.name, "ek_lut", [x], [table], out, params=dict(packed.params))


def bilinear_step(builder, layer: str, x: str, out: str, in_hwc, scale):
    """A step upsampling an int8 NHWC map bilinearly with ek_bilinear_s8 (the taps of a pixel once, then the
    channels: 23-28 instructions an output element on the M7 where TVM's kernel takes 40-44), or None (a nested
    image, the scalar cores, fewer than 4 channels: TVM's kernel)."""
    if NESTED_FULL_CHANNELS is not None or builder.ek_isa not in ("dsp", "mve") or builder.dtype != "int8" or \
            in_hwc[2] < 4:  # (1-3 channels: the per-pixel taps dominate, TVM's kernel is as fast)
        return None
    from edgekit.targets.mcu.program import Step

    return Step(layer, "ek_bilinear", [x], [], out, params=dict(kernel_pack.pack_bilinear(in_hwc, scale).params))


# Per-channel tables take channels x 256 bytes of flash: beyond this, the layer stays on TVM's kernel.
LUTC_MAX_BYTES = 16384


def lut_channels_step(builder, node, x: str, out: str, tables):
    """A step running an int8 per-channel elementwise layer (a PReLU with a slope per channel) as one 256-entry table
    per channel with ek_lut_channels_s8, channels last; None in a nested image, on the scalar cores, or when the
    tables would take more than LUTC_MAX_BYTES of flash (TVM's kernel: ~36 instructions an element on the M7)."""
    shape = builder.tensors[out].shape
    if NESTED_FULL_CHANNELS is not None or builder.ek_isa not in ("dsp", "mve") or len(shape) not in (2, 4) or \
            tables.shape[0] != shape[-1] or tables.size > LUTC_MAX_BYTES:
        return None
    from edgekit.targets.mcu.program import Step

    packed = kernel_pack.pack_lut_channels(tables, math.prod(shape) // shape[-1])
    const = builder.const(f"{node.name}.eklutc", packed.weights)
    return Step(node.name, "ek_lutc", [x], [const], out, params=dict(packed.params))


def mul_step(builder, node, qn, ins: list[str], out: str):
    """A step running an int8 elementwise product with ek_mul_s8: two tensors of one shape, or an NHWC map and a
    per-channel gate ([1, 1, 1, C] or [1, C]: squeeze-excite), either input; None when the shapes are neither, in a
    nested image and on the scalar cores (TVM's kernel is kept there). Measured on the emulated M7 (zoo
    MobileNetV3-small's gates): TVM's broadcasting kernel 27-31 instructions per output element."""
    if NESTED_FULL_CHANNELS is not None or builder.ek_isa not in ("dsp", "mve"):
        return None
    from edgekit.targets.mcu.program import Step

    q = qn.q
    shape = tuple(builder.tensors[out].shape)
    shapes = [tuple(builder.tensors[x].shape) for x in ins]
    zps = [int(q["a_zp"]), int(q["b_zp"])]
    if len(ins) != 2 or not shape:
        return None
    channels, elements = int(shape[-1]), math.prod(int(d) for d in shape)
    gate = [math.prod(int(d) for d in sh) == channels and sh[-1] == channels for sh in shapes]
    if shapes[0] == shapes[1] == shape:
        per_channel = False
    elif shapes[0] == shape and gate[1]:
        per_channel = True
    elif shapes[1] == shape and gate[0]:  # the gate first: the product commutes
        per_channel, ins, zps = True, ins[::-1], zps[::-1]
    else:
        return None
    packed = kernel_pack.pack_mul(elements // channels, channels, b_per_channel=per_channel, a_zp=zps[0],
                                  b_zp=zps[1], mult=int(q["mult"]), shift=int(q["shift"]), out_zp=int(qn.out_zp),
                                  act_min=int(q["act_min"]), act_max=int(q["act_max"]))
    return Step(node.name, "ek_mul", list(ins), [], out, params=dict(packed.params))


def concat_step(builder, node, ins: list[str], out: str, parts, out_zp: int):
    """A step running an int8 concatenation along the last axis with ek_concat_s8: each part copied, or requantized
    through its table; None in a nested image. Measured on the emulated M7 (bench/elementwise.py --layers):
    18x18x(16+16) with both parts requantized 3.9 instructions per output element, TVM's kernel 14.8; its portable C
    on the scalar cores too (the parts copied word by word: zoo U-Net's skip concatenation on the esp32-c3, TVM's
    kernel 20 instructions an element)."""
    if NESTED_FULL_CHANNELS is not None or builder.ek_isa not in ("dsp", "mve", "rv32"):
        return None
    from edgekit.targets.mcu.program import Step

    shape = builder.tensors[out].shape
    part_c = [int(builder.tensors[x].shape[-1]) for x in ins]
    rows = 1
    for d in shape[:-1]:
        rows *= int(d)
    packed = kernel_pack.pack_concat(part_c, parts, out_zp, rows)
    info = builder.const(f"{node.name}.ekparts", packed.bias)
    consts = [info] + ([builder.const(f"{node.name}.ektables", packed.weights)] if packed.notes["tables"] else [])
    params = dict(packed.params, table_elements=sum(c for c, t in zip(part_c, packed.bias[1::2]) if t >= 0) * rows)
    return Step(node.name, "ek_concat", list(ins), consts, out, params=params)


def transpose_step(builder, layer: str, x: str, out: str, batches: int, rows: int, cols: int):
    """A step moving an int8 tensor's layout with ek_transpose_s8: ``batches`` matrices of ``rows`` x ``cols``
    bytes written transposed (a channel shuffle: a pixel's [g, C/g] channels; NHWC to torch order before a flatten;
    a Conv1d's [C, L] and [L, C]). None in a nested image (its call tables keep TVM's gather) and off the DSP cores.
    Measured on the emulated M7 (bench/elementwise.py): 2.26 instructions an element on a shuffle of 4 groups (its
    own loop, 29 a 4x4 block), 2.22 moving a 12x12x16 map to torch order, 3.08 on a small [10, 49]; TVM's gather
    4.5-7."""
    if NESTED_FULL_CHANNELS is not None or builder.ek_isa not in ("dsp", "mve") or builder.dtype != "int8":
        return None
    from edgekit.targets.mcu.program import Step

    packed = kernel_pack.pack_transpose(batches, rows, cols)
    return Step(layer, "ek_transpose", [x], [], out, params=dict(packed.params))


def upsample_step(builder, layer: str, x: str, out: str, in_hwc, scale):
    """A step upsampling an int8 NHWC map with ek_upsample_s8 (nearest neighbour by integer factors: U-Net's
    decoder) whose channels are a multiple of 4 (its word paths), or None (TVM's kernel: off the DSP cores, in a
    nested image, other channel counts, where its byte loop is no faster). Measured on the emulated M7
    (bench/elementwise.py): U-Net's 16x16x16 by 2 0.25 instructions an output element (TVM's gather 4.64), 32 and
    64 channels 0.4-0.5, 8 channels by 3 1.0."""
    if NESTED_FULL_CHANNELS is not None or builder.ek_isa not in ("dsp", "mve") or builder.dtype != "int8" or \
            in_hwc[2] % 4:
        return None
    from edgekit.targets.mcu.program import Step

    packed = kernel_pack.pack_upsample(in_hwc, scale)
    return Step(layer, "ek_upsample", [x], [], out, params=dict(packed.params))


def sparse_layers(builder) -> set[str]:
    """The int8 conv (groups = 1) and linear layers of the program that store their weights compressed.

    Per layer: those whose compressed weights pay (sparse_pack.sparse_pays) and whose im2col tile fits
    CONV_SCRATCH_LIMIT_BYTES. Once a model has such layers (it was pruned), each family (conv, linear) whose layers can
    all run sparse goes sparse as a whole when that needs less flash, counting the kernels' code (the dense kernel's
    code then drops out of the firmware: the platform's CodeSizeModel.ek_kernel_bytes), and when the layers it
    moves do at most MOVED_MACS_FRACTION of the model's conv/linear MACs (on a dense layer the sparse kernel is slower).
    digits-cnn at 90 %: its barely pruned 144-weight first conv and 320-weight classifier cost ~300 B more compressed
    and drop ~8 KB of dense kernel code. An unpruned model is left as it is. Decided once per program.
    """
    plan = getattr(builder, "ek_sparse_layers", None)
    if plan is not None:
        return plan
    from edgekit.analysis import macs_of
    kernel_bytes = builder.platform.code_size.ek_kernel_bytes

    families, macs, total_macs = {}, {}, 0
    for family, dense_kind, sparse_kind in (("conv2d", "ek_conv", "ek_sconv"), ("linear", "ek_fc", "ek_sfc")):
        pays, rest, extra, must_stay_dense = [], [], 0, False
        for n in builder.g.nodes:
            if n.op != family or (family == "conv2d" and n.attrs["groups"] != 1) or builder.q(n.name) is None:
                continue
            w = builder.q(n.name).q["weight"]
            macs[n.name] = macs_of(n, builder.g)
            total_macs += macs[n.name]
            dense = sparse_pack.dense_weight_bytes(w, n.attrs["dilation"][1] if family == "conv2d" else 1)
            stored = sparse_pack.stored_weight_bytes(w)
            # Storage is a flash decision: judged against the default scratch limit, also in patch-based programs
            # (whose tighter limit only shapes the dense kernels' tiles).
            if family == "conv2d" and sparse_pack.sparse_conv2d_scratch_bytes(
                    dict(kernel_h=w.shape[2], kernel_w=w.shape[3], in_c=w.shape[1])) > DEFAULT_CONV_SCRATCH_LIMIT_BYTES:
                must_stay_dense = True
                if stored <= sparse_pack.PAYS_RATIO * dense:
                    builder.notes.append(f"layer '{n.name}': stored dense although compressed weights would be "
                                         f"smaller (the sparse kernel's im2col tile needs more than "
                                         f"{DEFAULT_CONV_SCRATCH_LIMIT_BYTES:,} B of scratch)")
            elif stored <= sparse_pack.PAYS_RATIO * dense:
                pays.append(n.name)
            else:
                rest.append(n.name)
                extra += stored - dense
        # flash of "the rest sparse too" against "the rest dense", beyond what both options share
        all_sparse = extra + (0 if pays else kernel_bytes[sparse_kind])
        families[family] = (pays, rest, not must_stay_dense and all_sparse < kernel_bytes[dense_kind])
    plan = set()
    pruned = any(pays for pays, _, _ in families.values())
    for pays, rest, whole in families.values():
        plan.update(pays)
        if pruned and rest and whole and sum(macs[r] for r in rest) <= MOVED_MACS_FRACTION * total_macs:
            plan.update(rest)
    builder.ek_sparse_layers = plan
    return plan


def _sparse_conv_step(builder, node, qn, common: dict, macs: int, x: str, out: str, in_offset: int):
    """The sparse conv step for ``node`` if it is one of :func:`sparse_layers`, else None (the dense kernel runs it)."""
    if node.name not in sparse_layers(builder):
        return None
    try:
        sparse = sparse_pack.pack_sparse_conv2d(qn.q["weight"], qn.q["bias"], qn.q["mult"], qn.q["shift"], **common)
    except UnsupportedError:
        return None
    out_shape = builder.tensors[out].shape
    if (sparse.params["out_h"], sparse.params["out_w"]) != tuple(out_shape[1:3]):
        raise AssertionError(f"layer '{node.name}': packed output {sparse.params['out_h']}x{sparse.params['out_w']}"
                             f" differs from the planned {out_shape[1]}x{out_shape[2]}")
    nz_macs = sparse.entries * sparse.params["out_h"] * sparse.params["out_w"]
    return _sparse_step(builder, node, sparse, "ek_sconv", [x], out, macs, in_offset, nz_macs)


def _sparse_step(builder, node, sparse, kind: str, inputs: list[str], out: str, macs: int, in_offset: int,
                 nz_macs: int):
    from edgekit.targets.mcu.program import Step

    consts = [builder.const(f"{node.name}.scnt", sparse.counts), builder.const(f"{node.name}.spairs", sparse.pairs),
              builder.const(f"{node.name}.ekb", sparse.bias) if sparse.bias is not None else None,
              builder.const(f"{node.name}.ekrq", sparse.requant)]
    return Step(node.name, kind, inputs, [cname for cname in consts if cname], out, params=dict(sparse.params),
                macs=macs, scratch_bytes=sparse.scratch_bytes, in_offset=in_offset, nz_macs=nz_macs,
                dense_weight_bytes=sparse.dense_weight_bytes, stored_weight_bytes=sparse.stored_weight_bytes)


FUNCTIONS = {"ek_conv": ("ek_conv2d_s8", "ek_conv_params_t", kernel_pack.CONV_FIELDS),
             "ek_dw": ("ek_depthwise_conv2d_s8", "ek_conv_params_t", kernel_pack.CONV_FIELDS),
             "ek_fc": ("ek_fully_connected_s8", "ek_fc_params_t", kernel_pack.FC_FIELDS),
             "ek_sconv": ("ek_sparse_conv2d_s8", "ek_sconv_params_t", sparse_pack.SCONV_FIELDS),
             "ek_sfc": ("ek_sparse_fully_connected_s8", "ek_sfc_params_t", sparse_pack.SFC_FIELDS),
             "ek_add": ("ek_add_s8", "ek_add_params_t", kernel_pack.ADD_FIELDS),
             "ek_pool": ("ek_pool_s8", "ek_pool_params_t", kernel_pack.POOL_FIELDS),
             "ek_lut": ("ek_lut_s8", "ek_lut_params_t", kernel_pack.LUT_FIELDS),
             "ek_lutc": ("ek_lut_channels_s8", "ek_lut_channels_params_t", kernel_pack.LUTC_FIELDS),
             "ek_bilinear": ("ek_bilinear_s8", "ek_bilinear_params_t", kernel_pack.BILINEAR_FIELDS),
             "ek_concat": ("ek_concat_s8", "ek_concat_params_t", kernel_pack.CONCAT_FIELDS),
             "ek_mul": ("ek_mul_s8", "ek_mul_params_t", kernel_pack.MUL_FIELDS),
             "ek_transpose": ("ek_transpose_s8", "ek_transpose_params_t", kernel_pack.TRANSPOSE_FIELDS),
             "ek_upsample": ("ek_upsample_s8", "ek_upsample_params_t", kernel_pack.UPSAMPLE_FIELDS)}
# their scalar paths are in every build (a table lookup or concatenation: its tables)
ELEMENTWISE_KINDS = ("ek_add", "ek_pool", "ek_lut", "ek_lutc", "ek_concat", "ek_mul", "ek_transpose", "ek_upsample",
                     "ek_bilinear")
SPARSE_KINDS = ("ek_sconv", "ek_sfc")


def struct_key(step) -> tuple:
    """What a micro-kernel step's parameter struct holds (its fields and constant arrays): steps with equal keys —
    the interior tiles of one layer in a patch-based schedule — share one const struct in flash."""
    fields = FUNCTIONS[step.kind][2]
    return step.kind, tuple(int(step.params[f]) for f in fields), tuple(step.consts)


def render_calls(prog, cnames: dict[str, str]) -> dict[int, tuple[str, dict | None]]:
    """Per micro-kernel step index: (C call, its struct to emit, or None when it uses an earlier identical one)."""
    out, first = {}, {}
    for i, s in enumerate(prog.steps):
        if s.kind not in FUNCTIONS:
            continue
        owner = first.setdefault(struct_key(s), i)
        call, struct_type, init = render_call(prog, s, i, cnames, params_index=owner)
        out[i] = (call, None if owner != i else
                  {"index": i, "layer": s.layer, "struct_type": struct_type, "struct_init": init})
    return out


def render_call(prog, step, index: int, cnames: dict[str, str], params_index: int | None = None
                ) -> tuple[str, str, str]:
    """(C call, struct type, struct initialiser) for one micro-kernel step; the call passes the struct
    ``ek_params_<params_index>`` (default: its own)."""
    fn, struct_type, fields = FUNCTIONS[step.kind]
    ints = ", ".join(str(int(step.params[f])) for f in fields)
    own = index if params_index is None else params_index
    if step.kind in ("ek_pool", "ek_transpose", "ek_upsample", "ek_bilinear"):  # no constant arrays, no scratch
        out_ptr = f"(int8_t *)(ek_arena + {prog.tensors[step.output].offset})"
        return (f"if ({fn}(&ek_params_{own}, {_input_ptr(prog, step.inputs[0], 0)}, {out_ptr}) != 0) "
                f"return {index + 1}", struct_type, ints)
    if step.kind in ("ek_lut", "ek_lutc"):  # its table(s), no scratch
        out_ptr = f"(int8_t *)(ek_arena + {prog.tensors[step.output].offset})"
        return (f"if ({fn}(&ek_params_{own}, {_input_ptr(prog, step.inputs[0], 0)}, {out_ptr}) != 0) "
                f"return {index + 1}", struct_type, f"{ints}, {cnames[step.consts[0]]}")
    if step.kind == "ek_concat":  # its inputs as an array of pointers, its part table and requantization tables
        ins = ", ".join(_input_ptr(prog, x, 0) for x in step.inputs)
        out_ptr = f"(int8_t *)(ek_arena + {prog.tensors[step.output].offset})"
        tables = cnames[step.consts[1]] if len(step.consts) > 1 else "0"
        return (f"{{ const int8_t *const ek_in[] = {{{ins}}}; if ({fn}(&ek_params_{own}, ek_in, {out_ptr}) != 0) "
                f"return {index + 1}; }}", struct_type, f"{ints}, {cnames[step.consts[0]]}, {tables}")
    if step.kind in ("ek_add", "ek_mul"):  # two inputs, no constant arrays
        a, b = (_input_ptr(prog, x, off) for x, off in zip(step.inputs, (step.in_offset, step.in2_offset)))
        out_ptr = f"(int8_t *)(ek_arena + {prog.tensors[step.output].offset})"
        return f"if ({fn}(&ek_params_{own}, {a}, {b}, {out_ptr}) != 0) return {index + 1}", struct_type, ints
    by_suffix = {c.rsplit(".", 1)[1]: cnames[c] for c in step.consts}
    weights = by_suffix.get("ekw") or by_suffix.get("dw")
    bias = by_suffix.get("ekb", "0")
    init = f"{ints}, {weights}, {bias}, {by_suffix['ekrq']}"
    if step.kind in SPARSE_KINDS:
        init = f"{ints}, {by_suffix['scnt']}, {by_suffix['spairs']}, {bias}, {by_suffix['ekrq']}"
    in_ptr = _input_ptr(prog, step.inputs[0], step.in_offset)
    out_ptr = f"(int8_t *)(ek_arena + {prog.tensors[step.output].offset + step.out_offset})"
    scratch = "0"
    if step.scratch_bytes:
        scratch = f"ek_arena + {prog.plan.offsets[f'{step.layer}#scratch{index}']}"
    call = f"if ({fn}(&ek_params_{own}, {in_ptr}, {out_ptr}, {scratch}) != 0) return {index + 1}"
    return call, struct_type, init



def _input_ptr(prog, name: str, offset: int) -> str:
    """C expression of an int8 input buffer of a micro-kernel call, ``offset`` bytes in."""
    src = prog.tensors[name]
    if src.external:  # the model input, read in place
        return f"(const int8_t *)ek_input_ptr + {offset}"
    if src.state_offset is not None:  # a conv stream's cache, read in place in ek_state
        return f"(const int8_t *)(ek_state + {src.state_offset + offset})"
    return f"(const int8_t *)(ek_arena + {src.offset + offset})"


def scratch_estimate(node, call=None, isa: str = "dsp") -> int:
    """Scratch bytes edgekit's micro-kernel (``isa`` layouts) takes for ``node`` (or one tile call of it); see
    _scratch_estimate."""
    if node.op == "conv1d":  # run as a Kx1 conv2d (program.as_image)
        from edgekit.targets.mcu.program import as_image

        node = as_image(node, node.inputs)
    if node.op not in ("conv2d", "linear"):
        return 0
    a = node.attrs
    out = (call.out.h, call.out.w) if call is not None else tuple(node.shape[2:4]) if node.op == "conv2d" else (1, 1)
    if node.op == "linear":
        return _scratch_estimate("linear", (a["in_features"],), out, isa)
    key = (tuple(a["kernel_size"]), a["in_channels"], a["out_channels"], a["groups"], tuple(a["dilation"]),
           tuple(a["stride"]), tuple(a["padding"]))
    return _scratch_estimate("conv2d", key, out, isa)


@functools.lru_cache(maxsize=4096)
def _scratch_estimate(op: str, key: tuple, out: tuple[int, int], isa: str = "dsp") -> int:
    """Scratch bytes edgekit's int8 micro-kernel for ``node`` (or one tile call of it) will take — what the patch
    scheduler needs to plan the same arena the program will have. 0 for layers that run on TVM kernels."""
    mve = isa == "mve"
    if op == "linear":
        flags = kernel_pack.FLAG_MVE if mve else kernel_pack.FLAG_RV if isa == "rv32" else 0
        return kernel_pack.fully_connected_scratch_bytes({"in_features": key[0], "flags": flags})
    (kh, kw), cin, cout, groups, dilation, stride, padding = key
    out_h, out_w = out
    depthwise = groups == cin and groups > 1 and cout == cin
    if groups != 1 and not depthwise:
        return 0
    p = {"kernel_h": kh, "kernel_w": kw, "in_c": cin, "out_c": cout, "dilation_h": dilation[0],
         "dilation_w": dilation[1], "stride_w": stride[1], "out_w": out_w, "stride_h": stride[0], "out_h": out_h,
         "flags": 0}
    if mve and (not depthwise or kernel_pack.mve_depthwise_applies(kh * kw, cin)):  # as pack_* choose (isa="mve")
        p["flags"] = kernel_pack.FLAG_MVE
        if depthwise:
            return kernel_pack.depthwise_conv2d_scratch_bytes(p)
        ph, pw = padding
        return kernel_pack.mve_conv2d_scratch_bytes({**p, "pad_top": ph, "pad_bottom": ph, "pad_left": pw,
                                                     "pad_right": pw}, CONV_SCRATCH_LIMIT_BYTES)
    if isa == "rv32":  # as pack_* choose (isa="rv32"): one 4-pixel im2col tile, depthwise 3x3 none
        if not depthwise:
            size = kernel_pack.conv2d_scratch_bytes({**p, "flags": kernel_pack.FLAG_RV})
            return size if size <= CONV_SCRATCH_LIMIT_BYTES else 0
        if kernel_pack.rv_depthwise_applies(kh, kw, stride[1], dilation[0], dilation[1], out_w):
            return 0
    if depthwise:
        layout = kernel_pack.depthwise_layout(kh, kw, stride[1], dilation[0], dilation[1], out_w, cin,
                                              stride_h=stride[0], isa=isa, out_h=out_h)
        if layout == "channels":
            return 0
        if layout.startswith("pairs"):
            p["flags"] = kernel_pack.FLAG_DW_PAIRS
        if layout.endswith("_t"):
            p["flags"] |= kernel_pack.FLAG_DW_TRANSPOSED
        return kernel_pack.depthwise_conv2d_scratch_bytes(p)
    if NESTED_FULL_CHANNELS is None and kernel_pack.conv_c1_applies(kh, kw, cin, isa, dilation=dilation):  # C1
        return 0
    ph, pw = padding  # as pack_conv2d chooses: the tile GEMM's tile and weight cache, or FLAG_CONV_FC
    p.update(pad_top=ph, pad_bottom=ph, pad_left=pw, pad_right=pw, tile_pixels=0,
             in_h=(out_h - 1) * stride[0] + (kh - 1) * dilation[0] + 1 - 2 * ph,
             in_w=(out_w - 1) * stride[1] + (kw - 1) * dilation[1] + 1 - 2 * pw)
    chosen = kernel_pack.conv2d_layout(p, CONV_SCRATCH_LIMIT_BYTES)
    return 0 if chosen is None else kernel_pack.conv2d_scratch_bytes(chosen)  # None: TVM's kernel, no scratch


def smallest_conv_scratch(node, isa: str = "dsp") -> int:
    """The least scratch with which ek_conv2d_s8 runs ``node`` (a groups=1 conv2d; DSP layout): its smallest im2col
    tile (2 pixels), one block's widened weights and biases — below it the layer falls back to TVM's kernel."""
    a = node.attrs
    (kh, kw), cin, cout = tuple(a["kernel_size"]), a["in_channels"], a["out_channels"]
    p = {"kernel_h": kh, "kernel_w": kw, "in_c": cin, "out_c": cout, "dilation_h": a["dilation"][0],
         "dilation_w": a["dilation"][1], "stride_w": a["stride"][1], "out_w": node.shape[3], "stride_h": a["stride"][0],
         "out_h": node.shape[2], "tile_pixels": 2, "flags": kernel_pack.FLAG_BIAS_PER_BLOCK}
    return kernel_pack.conv2d_scratch_bytes(p)


# Patch-based schedules are chosen to save memory: their conv calls take at most this much scratch (smaller im2col
# tiles: a few % more instructions, a smaller arena).
PATCHED_CONV_SCRATCH_LIMIT_BYTES = 4 * 1024


@contextlib.contextmanager
def conv_scratch_limit(limit: int):
    """Temporarily change CONV_SCRATCH_LIMIT_BYTES (for building one program)."""
    global CONV_SCRATCH_LIMIT_BYTES
    old = CONV_SCRATCH_LIMIT_BYTES
    CONV_SCRATCH_LIMIT_BYTES = limit
    _scratch_estimate.cache_clear()
    try:
        yield
    finally:
        CONV_SCRATCH_LIMIT_BYTES = old
        _scratch_estimate.cache_clear()


def _flash_to_spare(builder, extra_bytes: int) -> bool:
    """Whether the flash the target can spare for widened weights (``builder.wide_weights_max_extra``, None: no
    limit) still holds ``extra_bytes`` more than the widened weights already take."""
    spare = getattr(builder, "wide_weights_max_extra", None)
    return spare is None or extra_bytes <= spare - builder.wide_extra_bytes


def _depthwise_layout_but_channels(kernel: tuple[int, int], common: dict, out_hw, geometry) -> str:
    """The fastest depthwise layout other than channels-last (whose weights take 2 bytes each): for 3x3 (stride_w 1
    or 2, no dilation) rows or pairs by their estimated instructions, else the row kernels."""
    (sh, sw), (out_h, out_w) = common["stride"], out_hw
    if kernel == (3, 3) and tuple(common["dilation"]) == (1, 1) and sw in (1, 2):
        cost = kernel_pack.depthwise3x3_layer_instructions(sh, sw, out_h, out_w, int(common["input_shape"][2]),
                                                           geometry)
        cost.pop("channels")
        return min(cost, key=cost.get)
    return "rows"


def _nested_depthwise_layout(name: str, kernel: tuple[int, int], stride: tuple[int, int],
                             dilation: tuple[int, int], out_hw: tuple[int, int], isa: str,
                             geometry: tuple[int, int, int, int]) -> str:
    """The one depthwise layout of a nested image's layer ``name`` (``geometry``: in_h, in_w, pad_top, pad_left):
    for 3x3 on the DSP cores the fewest estimated instructions summed over the operating points
    (NESTED_POINT_CHANNELS), else the widest point's choice."""
    (out_h, out_w), widths = out_hw, NESTED_POINT_CHANNELS.get(name)
    if widths and isa == "dsp" and kernel == (3, 3) and dilation == (1, 1) and stride[1] in (1, 2):
        costs = [kernel_pack.depthwise3x3_layer_instructions(stride[0], stride[1], out_h, out_w, c, geometry)
                 for c in widths]
        return min(costs[-1], key=lambda layout: sum(c[layout] for c in costs))
    return kernel_pack.depthwise_layout(*kernel, stride[1], *dilation, out_w, NESTED_FULL_CHANNELS[name],
                                        stride_h=stride[0], isa=isa, out_h=out_h, geometry=geometry)


@contextlib.contextmanager
def nested_packing(full_channels: dict[str, int], tap_run_layers: set[str],
                   point_channels: dict[str, tuple[int, ...]] | None = None):
    """Pack for a nested image while building one of its programs (see NESTED_FULL_CHANNELS): ``tap_run_layers``
    are the conv layers whose input channels differ between the operating points (one run per kernel tap, so each
    point's weights are a prefix of every run; the others keep kernel-row runs, which are faster);
    ``point_channels`` the depthwise layers' channels at every point (NESTED_POINT_CHANNELS)."""
    global NESTED_FULL_CHANNELS, NESTED_TAP_RUN_LAYERS, NESTED_POINT_CHANNELS
    old = NESTED_FULL_CHANNELS, NESTED_TAP_RUN_LAYERS, NESTED_POINT_CHANNELS
    NESTED_FULL_CHANNELS, NESTED_TAP_RUN_LAYERS = dict(full_channels), frozenset(tap_run_layers)
    NESTED_POINT_CHANNELS = dict(point_channels or {})
    _scratch_estimate.cache_clear()
    try:
        yield
    finally:
        NESTED_FULL_CHANNELS, NESTED_TAP_RUN_LAYERS, NESTED_POINT_CHANNELS = old
        _scratch_estimate.cache_clear()
