"""Layer kernels through Apache TVM: tensor expressions -> TIR -> a microcontroller schedule -> C.

Where it sits: the Cortex-M target (targets/mcu) describes each layer as a :class:`KernelSpec` (operator, NHWC
shapes, dtype, baked-in constants such as zero points). This module writes the computation as a TVM tensor
expression, schedules it for a microcontroller (padding and elementwise epilogues inlined so that no intermediate
tensor is allocated: no heap, no workspace), and compiles all kernels of a model into one C file with TVM's ``c``
target for the chosen core. Identical specs share one kernel.

The generated functions use TVM's packed calling convention (``int32_t fn(void*, TVMFFIAny*, int32_t, void*)``
with ``DLTensor`` arguments); edgekit's driver (templates/model.c.j2) builds those arguments statically. Assertions
are compiled out (``tirx.disable_assert``): shapes are fixed at build time.

The int8 arithmetic is edgekit/qmath.py's, bit for bit.
"""
from __future__ import annotations

import contextlib

import tvm
from tvm import s_tir, te

from edgekit.targets.mcu.kernel_spec import KernelSpec  # noqa: F401  (re-exported)

INT8 = "int8"


def _clip(v, lo, hi):
    return te.max(te.min(v, hi), lo)


def _requant(acc, mult, shift, zp, lo, hi):
    """edgekit/qmath.py: clamp(zp + ((acc·mult + 2^(shift−1)) >> shift)) on int64."""
    one = tvm.tirx.const(1, "int64")
    s64 = shift.astype("int64")
    v = acc.astype("int64") * mult.astype("int64") + (one << (s64 - one))
    v = (v >> s64) + tvm.tirx.const(zp, "int64")
    return _clip(v, tvm.tirx.const(lo, "int64"), tvm.tirx.const(hi, "int64")).astype(INT8)


def _float_act(v, act):
    if act == "relu":
        return te.max(v, tvm.tirx.const(0.0, "float32"))
    if act == "relu6":
        return te.min(te.max(v, tvm.tirx.const(0.0, "float32")), tvm.tirx.const(6.0, "float32"))
    return v


def _padded(x, pads, value, dtype):
    """x[n, h, w, c] with (top, bottom, left, right) padding filled with ``value``."""
    n, h, w, c = x.shape
    pt, pb, pl, pr = pads
    if not any(pads):
        return x
    return te.compute(
        (n, h + pt + pb, w + pl + pr, c),
        lambda i, y, z, k: tvm.tirx.if_then_else(
            tvm.tirx.all(y >= pt, y < h + pt, z >= pl, z < w + pl), x[i, y - pt, z - pl, k],
            tvm.tirx.const(value, dtype)), name="pad")


def _input(spec: KernelSpec, k: int, name: str):
    """The k-th input: (placeholder on the buffer's shape, the view the computation reads).

    With ``attrs['windows'][k] = (row, col, h, w)`` the layer reads only that window of a larger 4-D buffer (a tile
    of a patch-based schedule); otherwise the whole buffer.
    """
    x = te.placeholder(spec.in_shapes[k], spec.dtype, name)
    windows = spec.attr("windows")
    if not windows or windows[k] is None:
        return x, x
    r, c, h, w = windows[k]
    n, _, _, ch = spec.in_shapes[k]
    if (r, c, h, w) == (0, 0, spec.in_shapes[k][1], spec.in_shapes[k][2]):
        return x, x
    view = te.compute((n, h, w, ch), lambda i, y, z, q: x[i, y + r, z + c, q], name=f"{name}_window")
    return x, view


def _conv(spec: KernelSpec):
    x, xv = _input(spec, 0, "x")
    _, H, W, C = (int(d) for d in xv.shape)
    _, OH, OW, O = spec.out_shape
    kh, kw = spec.attr("kernel")
    sh, sw = spec.attr("stride")
    dh, dw = spec.attr("dilation")
    g = spec.attr("groups")
    cin_g, cout_g = C // g, O // g
    int8 = spec.dtype == INT8
    w = te.placeholder((O, kh, kw, cin_g), spec.dtype, "w")
    b = te.placeholder((O,), "int32" if int8 else "float32", "bias")
    zp = spec.attr("in_zp", 0)
    xp = _padded(xv, spec.attr("pads"), zp if int8 else 0.0, spec.dtype)
    ry, rx, rc = te.reduce_axis((0, kh), "ry"), te.reduce_axis((0, kw), "rx"), te.reduce_axis((0, cin_g), "rc")

    def in_ch(o):
        return rc if g == 1 else (o // cout_g) * cin_g + rc

    if int8:
        acc = te.compute((1, OH, OW, O), lambda n, i, j, o: te.sum(
            (xp[n, i * sh + ry * dh, j * sw + rx * dw, in_ch(o)].astype("int32") - zp)
            * w[o, ry, rx, rc].astype("int32"), axis=[ry, rx, rc]), name="acc")
        mult = te.placeholder((O,), "int32", "mult")
        shift = te.placeholder((O,), "int32", "shift")
        y = te.compute((1, OH, OW, O), lambda n, i, j, o: _requant(
            acc[n, i, j, o] + b[o], mult[o], shift[o], spec.attr("out_zp"), spec.attr("act_min"),
            spec.attr("act_max")), name="out")
        return [x, w, b, mult, shift, y]
    acc = te.compute((1, OH, OW, O), lambda n, i, j, o: te.sum(
        xp[n, i * sh + ry * dh, j * sw + rx * dw, in_ch(o)] * w[o, ry, rx, rc], axis=[ry, rx, rc]), name="acc")
    y = te.compute((1, OH, OW, O), lambda n, i, j, o: _float_act(acc[n, i, j, o] + b[o], spec.attr("act")),
                   name="out")
    return [x, w, b, y]


def _linear(spec: KernelSpec):
    (shape,) = spec.in_shapes
    rows, K = shape
    N = spec.out_shape[-1]
    x = te.placeholder(shape, spec.dtype, "x")
    w = te.placeholder((N, K), spec.dtype, "w")
    k = te.reduce_axis((0, K), "k")
    if spec.dtype == INT8:
        zp = spec.attr("in_zp")
        b = te.placeholder((N,), "int32", "bias")
        acc = te.compute((rows, N), lambda r, n: te.sum((x[r, k].astype("int32") - zp) * w[n, k].astype("int32"),
                                                         axis=k), name="acc")
        mult = te.placeholder((N,), "int32", "mult")
        shift = te.placeholder((N,), "int32", "shift")
        y = te.compute((rows, N), lambda r, n: _requant(acc[r, n] + b[n], mult[n], shift[n], spec.attr("out_zp"),
                                                         spec.attr("act_min"), spec.attr("act_max")), name="out")
        return [x, w, b, mult, shift, y]
    b = te.placeholder((N,), "float32", "bias")
    acc = te.compute((rows, N), lambda r, n: te.sum(x[r, k] * w[n, k], axis=k), name="acc")
    y = te.compute((rows, N), lambda r, n: _float_act(acc[r, n] + b[n], spec.attr("act")), name="out")
    return [x, w, b, y]


def _pool(spec: KernelSpec):
    _, OH, OW, C = spec.out_shape
    kh, kw = spec.attr("kernel")
    sh, sw = spec.attr("stride")
    x, xv = _input(spec, 0, "x")
    ry, rx = te.reduce_axis((0, kh), "ry"), te.reduce_axis((0, kw), "rx")
    int8 = spec.dtype == INT8
    if spec.op == "maxpool2d":
        low = -128 if int8 else -3.0e38
        xp = _padded(xv, spec.attr("pads"), low, spec.dtype)
        y = te.compute(spec.out_shape, lambda n, i, j, c: te.max(xp[n, i * sh + ry, j * sw + rx, c], axis=[ry, rx]),
                       name="out")
        return [x, y]
    if int8:
        zp = spec.attr("in_zp")
        xp = _padded(xv, spec.attr("pads"), zp, spec.dtype)
        acc = te.compute(spec.out_shape, lambda n, i, j, c: te.sum(
            xp[n, i * sh + ry, j * sw + rx, c].astype("int32") - zp, axis=[ry, rx]), name="acc")
        y = te.compute(spec.out_shape, lambda n, i, j, c: _requant(
            acc[n, i, j, c], tvm.tirx.const(spec.attr("mult"), "int32"), tvm.tirx.const(spec.attr("shift"), "int32"),
            spec.attr("out_zp"), -128, 127), name="out")
        return [x, y]
    xp = _padded(xv, spec.attr("pads"), 0.0, spec.dtype)
    acc = te.compute(spec.out_shape, lambda n, i, j, c: te.sum(xp[n, i * sh + ry, j * sw + rx, c], axis=[ry, rx]),
                     name="acc")
    y = te.compute(spec.out_shape, lambda n, i, j, c: acc[n, i, j, c] * tvm.tirx.const(1.0 / (kh * kw), "float32"),
                   name="out")
    return [x, y]


def _global_avgpool(spec: KernelSpec):
    (shape,) = spec.in_shapes
    _, H, W, C = shape
    x = te.placeholder(shape, spec.dtype, "x")
    ry, rx = te.reduce_axis((0, H), "ry"), te.reduce_axis((0, W), "rx")
    if spec.dtype == INT8:
        zp = spec.attr("in_zp")
        acc = te.compute((1, 1, 1, C), lambda n, i, j, c: te.sum(x[n, ry, rx, c].astype("int32") - zp, axis=[ry, rx]),
                         name="acc")
        y = te.compute((1, 1, 1, C), lambda n, i, j, c: _requant(
            acc[n, i, j, c], tvm.tirx.const(spec.attr("mult"), "int32"), tvm.tirx.const(spec.attr("shift"), "int32"),
            spec.attr("out_zp"), -128, 127), name="out")
        return [x, y]
    acc = te.compute((1, 1, 1, C), lambda n, i, j, c: te.sum(x[n, ry, rx, c], axis=[ry, rx]), name="acc")
    y = te.compute((1, 1, 1, C), lambda n, i, j, c: acc[n, i, j, c] * tvm.tirx.const(1.0 / (H * W), "float32"),
                   name="out")
    return [x, y]


def _elementwise_binary(spec: KernelSpec):
    a_buf, a = _input(spec, 0, "a")
    b_buf, b_full = _input(spec, 1, "b")
    rank = len(spec.out_shape)
    b_shape = tuple(int(d) for d in b_full.shape)
    if b_shape != tuple(spec.out_shape):  # broadcast (a per-channel gate [1, 1, 1, C]): size-1 axes read index 0
        def b(*i):
            return b_full(*[0 if d == 1 else ix for ix, d in zip(i, b_shape)])
    else:
        b = b_full
    if spec.dtype == INT8 and spec.op == "mul":
        sh = spec.attr("shift")

        def f(*i):
            v = (a(*i).astype("int64") - spec.attr("a_zp")) * (b(*i).astype("int64") - spec.attr("b_zp")) \
                * spec.attr("mult")
            v = (v + (tvm.tirx.const(1, "int64") << (sh - 1))) >> sh
            v = v + spec.attr("out_zp")
            return _clip(v, tvm.tirx.const(spec.attr("act_min"), "int64"),
                         tvm.tirx.const(spec.attr("act_max"), "int64")).astype(INT8)
    elif spec.dtype == INT8:
        sh = spec.attr("shift")

        def f(*i):
            v = (a(*i).astype("int64") - spec.attr("a_zp")) * spec.attr("a_mult") \
                + (b(*i).astype("int64") - spec.attr("b_zp")) * spec.attr("b_mult")
            v = (v + (tvm.tirx.const(1, "int64") << (sh - 1))) >> sh
            v = v + spec.attr("out_zp")
            return _clip(v, tvm.tirx.const(spec.attr("act_min"), "int64"),
                         tvm.tirx.const(spec.attr("act_max"), "int64")).astype(INT8)
    elif spec.op == "add":
        def f(*i):
            return _float_act(a(*i) + b(*i), spec.attr("act"))
    else:
        def f(*i):
            return a(*i) * b(*i)
    y = te.compute(spec.out_shape, f, name="out")
    assert rank == len(spec.in_shapes[0])
    return [a_buf, b_buf, y]


def _upsample(spec: KernelSpec):
    """Upsampling of an NHWC tensor by integer factors: nearest neighbour (int8 codes pass through unchanged) or
    bilinear (edgekit/qmath.bilinear_taps per axis: two clamped source indices, integer weights summing to 2·s; int8
    rounds the sum of the four weighted codes half up over 4·s_h·s_w, as the host reference)."""
    x, xv = _input(spec, 0, "x")
    sh, sw = spec.attr("scale")
    if spec.attr("mode") != "bilinear":
        y = te.compute(spec.out_shape, lambda n, i, j, c: xv[n, i // sh, j // sw, c], name="out")
        return [x, y]
    _, h, w, _ = spec.in_shapes[0]

    def taps(o, s, size):  # (lo, hi, w_lo, w_hi) of output o, as bilinear_taps
        f = 2 * (o % s) + 1 - s
        lo = o // s - tvm.tirx.Select(f < 0, 1, 0)
        w_hi = tvm.tirx.Select(f < 0, 2 * s + f, f)
        return te.max(lo, 0), te.min(lo + 1, size - 1), 2 * s - w_hi, w_hi

    d = 4 * sh * sw

    def f(n, i, j, c):
        r0, r1, a0, a1 = taps(i, sh, h)
        c0, c1, b0, b1 = taps(j, sw, w)
        vals = [(xv[n, r, q, c], wa * wb) for r, wa in ((r0, a0), (r1, a1)) for q, wb in ((c0, b0), (c1, b1))]
        if spec.dtype == INT8:
            acc = sum(v.astype("int32") * wt for v, wt in vals)
            return ((acc + (128 * d + d // 2)) // d - 128).astype(INT8)  # (non-negative: floor = truncation)
        return sum(v * wt.astype("float32") for v, wt in vals) * tvm.tirx.const(1.0 / d, "float32")

    return [x, te.compute(spec.out_shape, f, name="out")]


def _prelu(spec: KernelSpec):
    """PReLU with a slope per channel (on axis ``attrs['axis']``): float32 x or a_c·x; int8 (x − zp) times the
    positive multiplier or the channel's signed negative one, rounded half up, + out zp, clamped (edgekit/qgraph.py)."""
    x, xv = _input(spec, 0, "x")
    axis = spec.attr("axis")
    channels = spec.out_shape[axis]
    if spec.dtype == INT8:
        negm = te.placeholder((channels,), "int32", "negm")
        negs = te.placeholder((channels,), "int32", "negs")
        one = tvm.tirx.const(1, "int64")

        def f(*i):
            v = xv(*i).astype("int64") - spec.attr("in_zp")
            ps = tvm.tirx.const(spec.attr("pos_shift"), "int64")
            pos = (v * spec.attr("pos_mult") + (one << (ps - one))) >> ps
            ns = negs[i[axis]].astype("int64")
            neg = (v * negm[i[axis]].astype("int64") + (one << (ns - one))) >> ns
            r = tvm.tirx.Select(v >= 0, pos, neg) + spec.attr("out_zp")
            return _clip(r, tvm.tirx.const(-128, "int64"), tvm.tirx.const(127, "int64")).astype(INT8)

        return [x, negm, negs, te.compute(spec.out_shape, f, name="out")]
    slope = te.placeholder((channels,), "float32", "slope")

    def g(*i):
        v = xv(*i)
        return tvm.tirx.Select(v > tvm.tirx.const(0.0, "float32"), v, v * slope[i[axis]])

    return [x, slope, te.compute(spec.out_shape, g, name="out")]


def _depth_to_space(spec: KernelSpec):
    """NHWC depth_to_space: output pixel (y, x) channel c from input pixel (y // r_h, x // r_w), channel
    c·r_h·r_w + phase (CRD) or phase·C + c (DCR), phase = (y % r_h)·r_w + x % r_w."""
    x, xv = _input(spec, 0, "x")
    rh, rw = spec.attr("block")
    C = spec.out_shape[3]
    if spec.attr("mode") == "CRD":
        def f(n, i, j, c):
            return xv[n, i // rh, j // rw, c * (rh * rw) + (i % rh) * rw + j % rw]
    else:
        def f(n, i, j, c):
            return xv[n, i // rh, j // rw, ((i % rh) * rw + j % rw) * C + c]
    return [x, te.compute(spec.out_shape, f, name="out")]


def _unary(spec: KernelSpec):
    x, xv = _input(spec, 0, "x")
    if spec.dtype == INT8:
        lut = te.placeholder((256,), INT8, "lut")
        y = te.compute(spec.out_shape, lambda *i: lut[xv(*i).astype("int32") + 128], name="out")
        return [x, lut, y]
    zero, six, three, half = (tvm.tirx.const(v, "float32") for v in (0.0, 6.0, 3.0, 0.5))
    fns = {
        "relu": lambda v: te.max(v, zero),
        "relu6": lambda v: te.min(te.max(v, zero), six),
        "sigmoid": lambda v: tvm.tirx.const(1.0, "float32") / (tvm.tirx.const(1.0, "float32") + te.exp(-v)),
        "tanh": te.tanh,
        "hardswish": lambda v: v * te.min(te.max(v + three, zero), six) / six,
        "hardsigmoid": lambda v: te.min(te.max(v + three, zero), six) / six,
        "silu": lambda v: v / (tvm.tirx.const(1.0, "float32") + te.exp(-v)),
        "gelu": lambda v: half * v * (tvm.tirx.const(1.0, "float32")
                                      + te.erf(v * tvm.tirx.const(0.5 ** 0.5, "float32"))),
    }
    one = tvm.tirx.const(1.0, "float32")
    fns["mish"] = lambda v: v * te.tanh(te.log(one + te.exp(v)))
    if spec.op == "leaky_relu":
        slope = tvm.tirx.const(spec.attr("negative_slope"), "float32")
        fns["leaky_relu"] = lambda v: tvm.tirx.Select(v > zero, v, v * slope)
    if spec.op == "elu":
        alpha = tvm.tirx.const(spec.attr("alpha"), "float32")
        fns["elu"] = lambda v: tvm.tirx.Select(v > zero, v, alpha * (te.exp(te.min(v, zero)) - one))
    if spec.op == "hardtanh":
        lo, hi = (tvm.tirx.const(spec.attr(k), "float32") for k in ("min_val", "max_val"))
        fns["hardtanh"] = lambda v: te.min(te.max(v, lo), hi)
    if spec.op == "gelu" and spec.attr("approximate") == "tanh":
        c0, c1 = tvm.tirx.const((2.0 / 3.141592653589793) ** 0.5, "float32"), tvm.tirx.const(0.044715, "float32")
        fns["gelu"] = lambda v: half * v * (tvm.tirx.const(1.0, "float32") + te.tanh(c0 * (v + c1 * v * v * v)))
    y = te.compute(spec.out_shape, lambda *i: fns[spec.op](xv(*i)), name="out")
    return [x, y]


def _concat(spec: KernelSpec):
    """Concatenate along the last (channel) axis of NHWC tensors, requantizing int8 inputs to the output scale."""
    bufs_views = [_input(spec, k, f"x{k}") for k in range(len(spec.in_shapes))]
    bufs = [bv[0] for bv in bufs_views]
    xs = [bv[1] for bv in bufs_views]
    axis = spec.attr("axis")
    parts = spec.attr("parts")  # int8: ((zp, mult, shift), ...)
    bounds = []
    start = 0
    for x in xs:
        size = int(x.shape[axis])
        bounds.append((start, start + size))
        start += size

    def value(k, idx):
        v = xs[k](*idx)
        if spec.dtype != INT8:
            return v
        zp, m, s = parts[k]
        one = tvm.tirx.const(1, "int64")
        r = ((v.astype("int64") - zp) * m + (one << (s - 1))) >> s
        return _clip(r + spec.attr("out_zp"), tvm.tirx.const(-128, "int64"), tvm.tirx.const(127, "int64")).astype(INT8)

    def f(*i):
        out = None
        for k in reversed(range(len(xs))):
            lo, hi = bounds[k]
            idx = list(i)
            idx[axis] = i[axis] - lo
            v = value(k, idx)
            out = v if out is None else tvm.tirx.if_then_else(i[axis] < hi, v, out)
        return out

    y = te.compute(spec.out_shape, f, name="out")
    return bufs + [y]


def _gather(spec: KernelSpec):
    """A pure data movement: out[i] = x[index_map(i)], given as (strides-free) affine source indices per output axis.

    ``attrs['map']`` gives, for each output axis, (source axis, offset, step) or None; source axes not produced by
    any output axis are fixed at ``attrs['fixed']`` values. Covers transposes (NHWC->NCHW for flatten) and selects.
    """
    (shape,) = spec.in_shapes
    x = te.placeholder(shape, spec.dtype, "x")
    amap = spec.attr("map")
    fixed = dict(spec.attr("fixed"))

    def f(*i):
        src = [None] * len(shape)
        for out_axis, m in enumerate(amap):
            if m is not None:
                ax, off, step = m
                src[ax] = i[out_axis] * step + off
        for ax, v in fixed.items():
            src[ax] = tvm.tirx.const(v, "int32")
        return x(*src)

    y = te.compute(spec.out_shape, f, name="out")
    return [x, y]


BUILDERS = {"conv2d": _conv, "linear": _linear, "maxpool2d": _pool, "avgpool2d": _pool,
            "global_avgpool": _global_avgpool, "upsample": _upsample, "depth_to_space": _depth_to_space, "prelu": _prelu, "add": _elementwise_binary, "mul": _elementwise_binary,
            "relu": _unary, "relu6": _unary, "sigmoid": _unary, "tanh": _unary, "hardswish": _unary,
            "hardsigmoid": _unary, "silu": _unary, "gelu": _unary, "leaky_relu": _unary, "elu": _unary,
            "hardtanh": _unary, "mish": _unary, "concat": _concat, "gather": _gather}


def schedule_for_mcu(func: tvm.tirx.PrimFunc) -> tvm.tirx.PrimFunc:
    """Inline padding and elementwise stages, compute epilogues per output element, hoist reduction inits.

    The result allocates at most one scalar accumulator per kernel (on the stack), so the firmware needs no heap
    or TVM workspace.
    """
    sch = s_tir.Schedule(func)
    root = sch.get_sblock("root")
    blocks = sch.get_child_blocks(root)
    names = [sch.get(b).name_hint for b in blocks]
    for b, name in zip(blocks, names):
        blk = sch.get(b)
        if name == "out" or any(iv.iter_type == 2 for iv in blk.iter_vars):
            continue
        with contextlib.suppress(Exception):
            sch.compute_inline(b)
    for b in sch.get_child_blocks(sch.get_sblock("root")):
        blk = sch.get(b)
        n_spatial = sum(1 for iv in blk.iter_vars if iv.iter_type == 0)
        if n_spatial == len(blk.iter_vars):
            continue
        loops = sch.get_loops(b)
        for consumer in sch.get_consumers(b):
            sch.reverse_compute_at(consumer, loops[n_spatial - 1])
        sch.decompose_reduction(b, loops[n_spatial])
    return sch.mod["main"]


def build_kernel(spec: KernelSpec, symbol: str) -> tuple[tvm.tirx.PrimFunc, list[str]]:
    """The scheduled PrimFunc for ``spec`` and its argument names in order."""
    tensors = BUILDERS[spec.op](spec)
    func = te.create_prim_func(tensors)
    func = schedule_for_mcu(func)
    return func.with_attr("global_symbol", symbol), [t.op.name for t in tensors]


def target_for(cpu: str | dict) -> tvm.target.Target:
    """TVM's ``c`` target: a platform's dict (``Platform.tvm_target``) or, for short, an Arm core name."""
    return tvm.target.Target(cpu if isinstance(cpu, dict) else {"kind": "c", "mcpu": cpu})


# GCC's loop unswitching, peeling and floating-point contraction for TVM's C alone (the firmware builds at -O2 with
# -std=c11, where none of them runs): TVM's loops test the padding per multiply-accumulate (``if (1 <= i + ry) ...``
# inside the reduction over the input channels, invariant in it) and run reductions of 1-5 iterations (a 5x5 window
# over one channel); ISO C keeps a float ``acc + x * w`` as a multiply and an add. Unswitched, the innermost loop is
# the plain load-multiply-add; peeled, the short ones are straight code; contracted, each multiply-add one VFMA (one
# rounding instead of two: float outputs stay within the tolerance against PyTorch, ESPCN's max error 6.6e-7).
# Measured on the emulated M7: float32 digits-cnn 4.92 M -> 2.39 M instructions by the first two (+752 B of code),
# zoo U-Net 23.8 M -> 14.5 M, ESPCN 226 M -> 161 M -> 137 M with the contraction; TVM's int8 digits-cnn
# 4.88 M -> 2.15 M (+408 B). And no strict aliasing: TVM's storage rewrite lets one local buffer serve several
# dtypes (a GRU cell's int32[3] sums written through an int64 pointer), which -O2's type-based alias analysis may
# reorder; GCC warned of it. Counts: digits-gru int8 3,332,800 and digits-cnn float32 1,940,883 either way,
# kws-ssm's S4D step 124,167 -> 127,363 (+2.6 %, the price of not assuming it). edgekit's own kernels (separate
# files) keep their flags.
TVM_C_PRAGMA = '#pragma GCC optimize ("unswitch-loops", "peel-loops", "fp-contract=fast", "no-strict-aliasing")\n'


def compile_kernels(funcs: dict[str, tvm.tirx.PrimFunc], target: str | dict) -> str:
    """All kernels in one C source for ``target`` (a platform's TVM target dict, or a core such as 'cortex-m7'),
    with TVM_C_PRAGMA in front."""
    mod = tvm.IRModule(funcs)
    with tvm.transform.PassContext(opt_level=3, config={"tirx.disable_assert": True}):
        ex = tvm.compile(mod, target=target_for(target))
    return TVM_C_PRAGMA + ex.mod.inspect_source()
