"""Host integer reference for edgekit's int8 operators: the ground truth that firmware kernels must match bit for bit.

Where it sits: beside :mod:`edgekit.qmath` (the arithmetic contract). Targets compile layers into integer kernels
(``targets/mcu/platforms/cortex_m/kernels/ek_nn_s8.c``); tests and the compile step run the same integers through this module and
compare byte for byte. Everything is vectorised numpy, so whole test sets go through in one call.

Conventions (see :mod:`edgekit.qmath`): activations NHWC int8 with zero point ``x_zp``; weights int8 in PyTorch
layout (``[out, in/groups, kh, kw]`` for convolutions, ``[out, in]`` for fully connected); bias int32 (or None);
``acc = bias[c] + sum((x - x_zp) * w)`` wraps like an int32 register; then
``out = clamp(out_zp + rshift_round(acc * mult[c], shift[c]), act_min, act_max)``.
Padded positions hold the input zero point, so they contribute nothing to ``acc``.
"""
from __future__ import annotations

import numpy as np

from edgekit import qmath

__all__ = ["conv2d", "depthwise_conv2d", "fully_connected", "conv2d_output_size", "wrap_int32", "padding4",
           "pair2"]


def wrap_int32(v: np.ndarray) -> np.ndarray:
    """Reduce int64 values modulo 2**32 into int32 range, as a 32-bit accumulator register does."""
    v = np.asarray(v, dtype=np.int64)
    return ((v + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)


def pair2(v, name: str = "value") -> tuple[int, int]:
    """int or (h, w) -> (h, w)."""
    if np.isscalar(v):
        return int(v), int(v)
    if len(v) != 2:
        raise ValueError(f"{name} must be an int or a pair (h, w), got {v}")
    a, b = v
    return int(a), int(b)


def padding4(padding) -> tuple[int, int, int, int]:
    """int, (h, w) or (top, bottom, left, right) -> (top, bottom, left, right)."""
    if np.isscalar(padding):
        p = int(padding)
        return p, p, p, p
    padding = tuple(int(p) for p in padding)
    if len(padding) == 2:
        return padding[0], padding[0], padding[1], padding[1]
    if len(padding) == 4:
        return padding  # type: ignore[return-value]
    raise ValueError(f"padding must be an int, (h, w) or (top, bottom, left, right), got {padding}")


def conv2d_output_size(in_size: int, kernel: int, stride: int, dilation: int, pad_before: int, pad_after: int) -> int:
    """Output length of a convolution along one axis (floor mode, as PyTorch)."""
    span = dilation * (kernel - 1) + 1
    return (in_size + pad_before + pad_after - span) // stride + 1


def _requant(acc: np.ndarray, mult, shift, out_zp: int, act_min: int, act_max: int) -> np.ndarray:
    mult = np.asarray(mult, dtype=np.int64)
    shift = np.asarray(shift, dtype=np.int64)
    if np.any(shift < 1) or np.any(shift > 62) or np.any(mult < 0) or np.any(mult >= (1 << 31)):
        raise ValueError("mult must be in [0, 2**31) and shift in [1, 62] (see edgekit.qmath)")
    return qmath.requantize(acc, mult, shift, out_zp, act_min, act_max)


def conv2d(x: np.ndarray, w: np.ndarray, bias: np.ndarray | None, *, x_zp: int, mult, shift, out_zp: int,
           act_min: int = qmath.INT8_MIN, act_max: int = qmath.INT8_MAX, stride=1, dilation=1, padding=0,
           groups: int = 1) -> np.ndarray:
    """int8 2-D convolution on NHWC activations.

    ``x``: int8 ``[N, H, W, C_in]`` (or ``[H, W, C_in]``); ``w``: int8 ``[C_out, C_in/groups, KH, KW]``;
    ``bias``: int32 ``[C_out]`` or None; ``mult``/``shift``: per output channel (or scalars); ``stride``/``dilation``:
    int or (h, w); ``padding``: int, (h, w) or (top, bottom, left, right), filled with ``x_zp``. ``groups == C_in
    == C_out`` is a depthwise convolution. Returns int8 ``[N, OH, OW, C_out]`` (no batch axis if ``x`` had none).
    """
    x = np.asarray(x)
    squeeze = x.ndim == 3
    if squeeze:
        x = x[None]
    if x.ndim != 4:
        raise ValueError(f"conv2d input must be [N, H, W, C] or [H, W, C], got shape {x.shape}")
    w = np.asarray(w)
    n, h, wd, cin = x.shape
    cout, cin_g, kh, kw = w.shape
    if cin % groups or cout % groups or cin // groups != cin_g:
        raise ValueError(f"weights {w.shape} do not fit {cin} input channels in {groups} groups")
    sh, sw = pair2(stride, "stride")
    dh, dw = pair2(dilation, "dilation")
    pt, pb, pl, pr = padding4(padding)
    oh = conv2d_output_size(h, kh, sh, dh, pt, pb)
    ow = conv2d_output_size(wd, kw, sw, dw, pl, pr)
    if oh < 1 or ow < 1:
        raise ValueError(f"conv2d output would be empty: input {h}x{wd}, kernel {kh}x{kw}, padding {padding}")

    # float64 holds every partial sum exactly (|sum| < 2**53 for any realistic reduction length) and uses BLAS.
    xs = x.astype(np.float64) - float(x_zp)
    xp = np.zeros((n, h + pt + pb, wd + pl + pr, cin), dtype=np.float64)
    xp[:, pt:pt + h, pl:pl + wd, :] = xs
    cout_g = cout // groups
    wg = w.astype(np.float64).reshape(groups, cout_g, cin_g, kh, kw)
    acc = np.zeros((n, oh, ow, groups, cout_g), dtype=np.float64)
    for ky in range(kh):  # loop over kernel taps only; each step is one batched matrix product over all pixels
        for kx in range(kw):
            y0, x0 = ky * dh, kx * dw
            patch = xp[:, y0:y0 + (oh - 1) * sh + 1:sh, x0:x0 + (ow - 1) * sw + 1:sw, :]
            patch = patch.reshape(n, oh, ow, groups, cin_g)
            acc += np.einsum("nhwgi,goi->nhwgo", patch, wg[:, :, :, ky, kx], optimize=True)
    acc = acc.reshape(n, oh, ow, cout).astype(np.int64)
    if bias is not None:
        acc += np.asarray(bias, dtype=np.int64)
    out = _requant(wrap_int32(acc), mult, shift, out_zp, act_min, act_max)
    return out[0] if squeeze else out


def depthwise_conv2d(x: np.ndarray, w: np.ndarray, bias: np.ndarray | None, **kwargs) -> np.ndarray:
    """Depthwise convolution (channel multiplier 1): :func:`conv2d` with ``groups = C``; ``w`` is ``[C, 1, KH, KW]``."""
    return conv2d(x, w, bias, groups=np.asarray(x).shape[-1], **kwargs)


def fully_connected(x: np.ndarray, w: np.ndarray, bias: np.ndarray | None, *, x_zp: int, mult, shift, out_zp: int,
                    act_min: int = qmath.INT8_MIN, act_max: int = qmath.INT8_MAX) -> np.ndarray:
    """int8 fully connected layer: ``x`` int8 ``[..., in]``, ``w`` int8 ``[out, in]`` -> int8 ``[..., out]``."""
    x = np.asarray(x)
    w = np.asarray(w)
    if x.shape[-1] != w.shape[1]:
        raise ValueError(f"fully connected input has {x.shape[-1]} features, weights expect {w.shape[1]}")
    acc = ((x.astype(np.float64) - float(x_zp)) @ w.astype(np.float64).T).astype(np.int64)
    if bias is not None:
        acc += np.asarray(bias, dtype=np.int64)
    return _requant(wrap_int32(acc), mult, shift, out_zp, act_min, act_max)
