"""Compressed storage of pruned int8 weights for the Cortex-M target (``kernels/ek_sparse_s8.c``), and the per-layer
decision whether it pays.

Where it sits: ``targets/mcu`` (Model -> Artifact), beside :mod:`kernel_pack` (the dense layouts). A pruned model
(``edgekit.converters.prune``) reaches the target as ordinary weights with many exact zeros; for each int8 conv
(groups = 1) and linear layer, ``ek_kernels.py`` asks :func:`sparse_pays` and, when the compressed form is smaller,
packs the layer here and emits a call to the sparse kernel instead of the dense one (``ek_kernels.sparse_layers``
also moves a model's few remaining layers of a family when that drops the dense kernel's code from the firmware).

Format (CSR with byte deltas; ``ek_sparse_s8.h`` has the C side). The weights are a matrix ``W[out][K]``: one row per
output channel, ``K = kh * kw * C_in`` columns in (ky, kx, ci) order for a convolution (the NHWC order of an input
window), ``K = in_features`` for a linear layer. Per row, in increasing column order, one entry per non-zero weight:

* ``counts[c]`` (int16): entries of row c;
* ``pairs`` (uint8, two bytes per entry): the column delta to the previous entry of the row (the first counts from
  column 0) and the weight as a two's-complement byte.

A gap of more than 255 columns is bridged by filler entries (delta 255, weight 0) that the kernel multiplies like
any other, so its inner loop has no escape test. Stored bytes: ``2 * entries + 2 * out``, against ``K * out`` (plus
the dense kernels' padding) for the dense layout — smaller below ~45 % density. Bias and requantization table are
stored as for the dense kernels (``kernel_pack.requant_table``); a linear layer's bias also absorbs the input zero
point (``bias - x_zp * sum(w)``), so the kernel reads raw inputs.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from edgekit import intref
from edgekit.errors import UnsupportedError, UsageError
from edgekit.targets.mcu import kernel_pack

__all__ = ["SparseLayer", "SCONV_FIELDS", "SFC_FIELDS", "TILE_PIXELS", "MAX_DELTA", "PAYS_RATIO", "encode_rows",
           "decode_rows", "stored_weight_bytes", "dense_weight_bytes", "sparse_pays", "pack_sparse_conv2d",
           "pack_sparse_fully_connected", "sparse_conv2d_scratch_bytes"]

# Mirrors ek_sparse_s8.h.
SCONV_FIELDS = ("in_h", "in_w", "in_c", "in_row_stride", "out_h", "out_w", "out_c", "out_row_stride",
                "kernel_h", "kernel_w", "stride_h", "stride_w", "dilation_h", "dilation_w",
                "pad_top", "pad_bottom", "pad_left", "pad_right", "input_offset", "output_offset",
                "act_min", "act_max", "entries", "flags")
SFC_FIELDS = ("batch", "in_features", "out_features", "in_row_stride", "out_row_stride",
              "input_offset", "output_offset", "act_min", "act_max", "entries", "flags")
TILE_PIXELS = 8          # EK_SPARSE_TILE_PIXELS
MAX_DELTA = 255          # a byte
MAX_ROW_ENTRIES = 32767  # counts are int16
# The compressed weights must be at most this fraction of the dense bytes: a margin for what the byte count leaves out
# (the sparse kernel's own code, ~1 KB once per firmware, and its lower speed at moderate sparsity).
PAYS_RATIO = 0.9


@dataclass(frozen=True)
class SparseLayer:
    """What one sparse kernel call needs: ``params`` are the struct's int32 fields in declaration order; the pointer
    fields come from ``counts``, ``pairs``, ``bias`` (None: NULL) and ``requant``."""

    kind: str  # "sparse_conv2d" | "sparse_fully_connected"
    params: dict[str, int]
    counts: np.ndarray  # int16 [out]
    pairs: np.ndarray  # uint8 [entries * 2]
    bias: np.ndarray | None  # int32 [out]
    requant: np.ndarray  # int32 [ceil4(out), 4]
    scratch_bytes: int
    nonzero: int  # non-zero weights
    dense_weight_bytes: int  # the dense kernel's weight array for the same layer
    notes: dict = field(default_factory=dict)

    @property
    def entries(self) -> int:
        return int(self.counts.astype(np.int64).sum())

    @property
    def stored_weight_bytes(self) -> int:
        return int(self.counts.nbytes + self.pairs.nbytes)

    def param_words(self) -> np.ndarray:
        return np.array(list(self.params.values()), dtype=np.int32)


def encode_rows(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(counts int16 [rows], pairs uint8 [2 * entries])`` of an int8 matrix ``[rows, K]`` (format above)."""
    m = np.asarray(matrix)
    if m.ndim != 2:
        raise UsageError(f"encode_rows: need a 2-D weight matrix, got shape {m.shape}")
    rows, cols = np.nonzero(m)  # row-major: rows ascending, columns ascending within a row
    values = m[rows, cols].astype(np.int64)
    first = np.ones(rows.size, dtype=bool)
    first[1:] = rows[1:] != rows[:-1]
    prev = np.where(first, 0, np.roll(cols, 1))
    gap = cols - prev
    fillers = np.maximum(0, (gap - 1) // MAX_DELTA)  # entries of delta 255 before this one
    last = gap - fillers * MAX_DELTA
    n_out = fillers + 1
    total = int(n_out.sum())
    deltas = np.full(total, MAX_DELTA, dtype=np.int64)
    vals = np.zeros(total, dtype=np.int64)
    ends = np.cumsum(n_out) - 1  # position of each real entry, after its fillers
    deltas[ends] = last
    vals[ends] = values
    counts = np.bincount(rows, weights=n_out, minlength=m.shape[0]).astype(np.int64)
    if counts.size and counts.max() > MAX_ROW_ENTRIES:
        raise UnsupportedError(f"a row needs {int(counts.max())} entries; the sparse format holds at most "
                               f"{MAX_ROW_ENTRIES} per output channel")
    pairs = np.empty(2 * total, dtype=np.uint8)
    pairs[0::2] = deltas
    pairs[1::2] = vals.astype(np.int8).view(np.uint8)
    return counts.astype(np.int16), pairs


def decode_rows(counts: np.ndarray, pairs: np.ndarray, columns: int) -> np.ndarray:
    """The int8 matrix ``[len(counts), columns]`` that :func:`encode_rows` encoded (checks every column is in range)."""
    counts = np.asarray(counts, dtype=np.int64)
    pairs = np.asarray(pairs, dtype=np.uint8)
    if pairs.size != 2 * counts.sum():
        raise UsageError(f"decode_rows: {pairs.size} pair bytes for {int(counts.sum())} entries")
    out = np.zeros((counts.size, columns), dtype=np.int8)
    deltas = pairs[0::2].astype(np.int64)
    vals = pairs[1::2].view(np.int8)
    start = 0
    for r, n in enumerate(counts):
        cols = np.cumsum(deltas[start:start + n])
        if n and cols[-1] >= columns:
            raise UsageError(f"decode_rows: row {r} reaches column {int(cols[-1])} of {columns}")
        out[r, cols] += vals[start:start + n]  # fillers add 0
        start += n
    return out


def stored_weight_bytes(weights: np.ndarray) -> int:
    """Bytes of the compressed form of ``weights`` (``[out, in]``, ``[out, in, kh, kw]`` or an ``[out, K]`` matrix):
    counts plus two bytes per entry (fillers included)."""
    m = _matrix(weights)
    rows, cols = np.nonzero(m)
    first = np.ones(rows.size, dtype=bool)
    first[1:] = rows[1:] != rows[:-1]
    gap = cols - np.where(first, 0, np.roll(cols, 1))
    entries = int((np.maximum(0, (gap - 1) // MAX_DELTA) + 1).sum())
    return 2 * m.shape[0] + 2 * entries


def dense_weight_bytes(weights: np.ndarray, dilation_w: int = 1, conv_fc: bool = False) -> int:
    """Bytes of the dense kernels' weight array (``kernel_pack``) for int8 ``weights`` ``[out, in]`` (linear: inputs
    padded to a multiple of 4) or ``[out, in, kh, kw]`` (conv: its int16 pairs, kernel_pack.conv_k_pairs: odd runs
    pad or pair their last bytes; ``conv_fc``: the FC rows' layout, FLAG_CONV_FC, the window padded to 4 bytes)."""
    w = np.asarray(weights)
    if w.ndim == 2 or conv_fc:
        return -(-int(np.prod(w.shape[1:])) // 4) * 4 * w.shape[0]
    cout, cin, kh, kw = w.shape
    k_pairs = kernel_pack.conv_k_pairs({"kernel_h": kh, "kernel_w": kw, "in_c": cin, "dilation_w": dilation_w})
    return 2 * k_pairs * cout


def _matrix(weights: np.ndarray) -> np.ndarray:
    """``[out, K]`` in the kernel's column order: (ky, kx, ci) for convolutions."""
    w = np.asarray(weights)
    return w if w.ndim == 2 else w.transpose(0, 2, 3, 1).reshape(w.shape[0], -1)


def sparse_pays(weights: np.ndarray, dense_bytes: int | None = None) -> bool:
    """Whether storing int8 ``weights`` (``[out, in]`` or ``[out, in, kh, kw]``) compressed takes at most
    ``PAYS_RATIO`` of the dense bytes (``dense_bytes``, default :func:`dense_weight_bytes`)."""
    w = np.asarray(weights)
    dense = dense_weight_bytes(w) if dense_bytes is None else int(dense_bytes)
    return stored_weight_bytes(w) <= PAYS_RATIO * dense


def _check_weights(w: np.ndarray, ndim: int, what: str) -> np.ndarray:
    w = np.asarray(w)
    if w.dtype != np.int8:
        raise UsageError(f"{what}: weights must be int8, got {w.dtype}")
    if w.ndim != ndim:
        raise UsageError(f"{what}: weights must have {ndim} dimensions, got shape {w.shape}")
    return w


def sparse_conv2d_scratch_bytes(params: dict) -> int:
    """Scratch bytes of ek_sparse_conv2d_s8 (ek_sparse_conv2d_s8_scratch_bytes): one [K][8] int16 im2col tile and a
    kernel row of zero-point bytes (what a pixel reads where its window leaves the input)."""
    zp_run = -(-params["kernel_w"] * params["in_c"] // 4) * 4
    return params["kernel_h"] * params["kernel_w"] * params["in_c"] * TILE_PIXELS * 2 + zp_run


def pack_sparse_conv2d(weights: np.ndarray, bias: np.ndarray | None, mult, shift, *, input_shape, x_zp: int,
                       out_zp: int, act_min: int = -128, act_max: int = 127, stride=1, dilation=1, padding=0,
                       in_row_stride: int | None = None, out_row_stride: int | None = None) -> SparseLayer:
    """Pack a groups=1 convolution for ``ek_sparse_conv2d_s8``; arguments as ``kernel_pack.pack_conv2d``."""
    w = _check_weights(weights, 4, "sparse_conv2d")
    cout, cin, kh, kw = w.shape
    if int(input_shape[2]) != cin:
        raise UsageError(f"sparse_conv2d: input has {input_shape[2]} channels, weights expect {cin} (groups=1 only)")
    g = kernel_pack._conv_geometry(input_shape, (kh, kw), stride, dilation, padding)
    mult, shift = kernel_pack._check_quant(mult, shift, cout, out_zp, act_min, act_max, "sparse_conv2d")
    table, fast = kernel_pack.requant_table(mult, shift, out_zp, act_min, act_max)
    counts, pairs = encode_rows(_matrix(w))
    params = dict(in_h=g["in_h"], in_w=g["in_w"], in_c=cin,
                  in_row_stride=int(in_row_stride if in_row_stride is not None else g["in_w"] * cin),
                  out_h=g["out_h"], out_w=g["out_w"], out_c=cout,
                  out_row_stride=int(out_row_stride if out_row_stride is not None else g["out_w"] * cout),
                  kernel_h=kh, kernel_w=kw, stride_h=g["stride_h"], stride_w=g["stride_w"],
                  dilation_h=g["dilation_h"], dilation_w=g["dilation_w"], pad_top=g["pad_top"],
                  pad_bottom=g["pad_bottom"], pad_left=g["pad_left"], pad_right=g["pad_right"],
                  input_offset=-int(x_zp), output_offset=int(out_zp), act_min=int(act_min), act_max=int(act_max),
                  entries=int(counts.astype(np.int64).sum()), flags=kernel_pack.FLAG_FAST_REQUANT if fast else 0)
    kernel_pack._check_strides(params, "sparse_conv2d")
    return SparseLayer(kind="sparse_conv2d", params=params, counts=counts, pairs=pairs,
                       bias=None if bias is None else np.asarray(bias, dtype=np.int32).copy(), requant=table,
                       scratch_bytes=sparse_conv2d_scratch_bytes(params), nonzero=int(np.count_nonzero(w)),
                       dense_weight_bytes=dense_weight_bytes(w, g["dilation_w"]), notes=dict(fast_requant=fast))


def pack_sparse_fully_connected(weights: np.ndarray, bias: np.ndarray | None, mult, shift, *, x_zp: int, out_zp: int,
                                act_min: int = -128, act_max: int = 127, batch: int = 1,
                                in_row_stride: int | None = None, out_row_stride: int | None = None) -> SparseLayer:
    """Pack a linear layer (``weights`` int8 ``[out, in]``) for ``ek_sparse_fully_connected_s8``. The packed bias
    (always present) is ``bias - x_zp * sum(w)``, wrapped to int32 as the kernel's accumulator wraps."""
    w = _check_weights(weights, 2, "sparse_fully_connected")
    out, inp = w.shape
    mult, shift = kernel_pack._check_quant(mult, shift, out, out_zp, act_min, act_max, "sparse_fully_connected")
    table, fast = kernel_pack.requant_table(mult, shift, out_zp, act_min, act_max)
    counts, pairs = encode_rows(w)
    b = np.zeros(out, dtype=np.int64) if bias is None else np.asarray(bias, dtype=np.int64).copy()
    b -= int(x_zp) * w.astype(np.int64).sum(axis=1)
    params = dict(batch=int(batch), in_features=inp, out_features=out,
                  in_row_stride=int(in_row_stride if in_row_stride is not None else inp),
                  out_row_stride=int(out_row_stride if out_row_stride is not None else out),
                  input_offset=-int(x_zp), output_offset=int(out_zp), act_min=int(act_min), act_max=int(act_max),
                  entries=int(counts.astype(np.int64).sum()), flags=kernel_pack.FLAG_FAST_REQUANT if fast else 0)
    if params["in_row_stride"] < inp or params["out_row_stride"] < out or batch < 1:
        raise UsageError(f"sparse_fully_connected: need batch >= 1 and row strides of at least a row, got {params}")
    return SparseLayer(kind="sparse_fully_connected", params=params, counts=counts, pairs=pairs,
                       bias=intref.wrap_int32(b).astype(np.int32), requant=table, scratch_bytes=0,
                       nonzero=int(np.count_nonzero(w)), dense_weight_bytes=dense_weight_bytes(w),
                       notes=dict(fast_requant=fast))
