"""edgekit's integer arithmetic: the one definition every int8 kernel follows (host reference, TVM kernels, DSP kernels).

Where it sits: converters/quantize produces scales; targets turn them into the integers defined here; the host
reference (edgekit.intref) and the firmware must then agree bit for bit.

Conventions (TFLite/CMSIS-NN style, with single rounding):

* activations: int8, asymmetric, ``real = scale * (q - zero_point)``
* weights: int8, symmetric per output channel, ``real = w_scale[c] * q`` with ``q`` in [-127, 127]
* bias: int32 with scale ``in_scale * w_scale[c]`` and zero point 0
* accumulate: ``acc = bias[c] + sum((x - x_zp) * w)`` in int32
* requantize: ``out = clamp(out_zp + rshift_round(acc * mult[c], shift[c]), act_min, act_max)``
  where ``rshift_round(v, s) = (v + 2**(s-1)) >> s`` on int64 (arithmetic shift, so halves round up),
  ``mult`` in [2**30, 2**31) and ``shift`` in [1, 62]; ``acc * mult`` always fits in int64.
"""
from __future__ import annotations

import math

import numpy as np

INT8_MIN, INT8_MAX = -128, 127


def quantize_multiplier(real: float) -> tuple[int, int]:
    """Return (mult, shift) with real ≈ mult * 2**-shift, mult in [2**30, 2**31), shift in [1, 62].

    A real multiplier of 0 gives (0, 1). Multipliers too large or too small for that range raise ValueError.
    """
    if real < 0 or not math.isfinite(real):
        raise ValueError(f"requantization multiplier must be finite and >= 0, got {real}")
    if real == 0.0:
        return 0, 1
    m, e = math.frexp(real)  # real = m * 2**e, m in [0.5, 1)
    mult = int(round(m * (1 << 31)))
    if mult == (1 << 31):
        mult //= 2
        e += 1
    shift = 31 - e
    if shift > 62:  # underflows to zero output: keep the numbers representable
        return 0, 1
    if shift < 1:
        raise ValueError(f"requantization multiplier {real} is too large (>= 2**30)")
    return mult, shift


# An int8 add's multipliers keep ADD_MULT_BITS significant bits: the low 16 bits of each are zero (where the shift
# allows), so the DSP kernels compute an element with one SMLAD (ek_nn_s8.c, ek__add4s). What that costs: each ratio
# off by at most 2**-16 of the larger one, under 0.004 output steps per unit of that ratio for int8 inputs.
ADD_MULT_BITS = 15


def add_multipliers(ratio_a: float, ratio_b: float) -> tuple[int, int, int]:
    """``(a_mult, b_mult, shift)`` of an int8 add out = (a - za)·ratio_a + (b - zb)·ratio_b (+ zo): one shift from
    the larger ratio (:func:`quantize_multiplier`), both multipliers below 2**31 and, where the shift is at least
    17, multiples of 2**16 (ADD_MULT_BITS significant bits)."""
    _, shift = quantize_multiplier(max(ratio_a, ratio_b))
    unit = 1 << 16 if shift >= 17 else 1
    top = ((1 << 31) - 1) // unit
    a, b = (min(int(round(r * 2.0 ** shift / unit)), top) * unit for r in (ratio_a, ratio_b))
    return a, b, shift


def quantize_multipliers(real: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Vectorised :func:`quantize_multiplier`: int32 multipliers and int32 shifts (same results, element-wise)."""
    r = np.asarray(real, dtype=np.float64)
    if np.any(r < 0) or not np.all(np.isfinite(r)):
        raise ValueError("requantization multipliers must be finite and >= 0")
    m, e = np.frexp(r)
    mult = np.round(m * float(1 << 31)).astype(np.int64)
    carry = mult == (1 << 31)
    mult = np.where(carry, mult // 2, mult)
    e = np.where(carry, e + 1, e)
    shift = 31 - e.astype(np.int64)
    zero = (r == 0) | (shift > 62)
    if np.any(~zero & (shift < 1)):
        raise ValueError("a requantization multiplier is too large (>= 2**30)")
    mult = np.where(zero, 0, mult)
    shift = np.where(zero, 1, shift)
    return mult.astype(np.int32), shift.astype(np.int32)


def rshift_round(v: np.ndarray, shift: np.ndarray | int) -> np.ndarray:
    """(v + 2**(shift-1)) >> shift on int64, broadcasting shift."""
    v = np.asarray(v, dtype=np.int64)
    s = np.asarray(shift, dtype=np.int64)
    return (v + (np.int64(1) << (s - 1))) >> s


def requantize(acc: np.ndarray, mult: np.ndarray | int, shift: np.ndarray | int, out_zp: int,
               act_min: int = INT8_MIN, act_max: int = INT8_MAX) -> np.ndarray:
    """int32 accumulators -> int8 with the convention above (channel is the last axis for per-channel arrays)."""
    acc = np.asarray(acc, dtype=np.int64)
    scaled = rshift_round(acc * np.asarray(mult, dtype=np.int64), shift)
    return np.clip(scaled + out_zp, act_min, act_max).astype(np.int8)


def activation_range(kind: str | None, scale: float, zero_point: int) -> tuple[int, int]:
    """Clamp bounds in the int8 domain for a fused activation (None, 'relu', 'relu6')."""
    if kind is None:
        return INT8_MIN, INT8_MAX
    lo = max(INT8_MIN, zero_point)
    if kind == "relu":
        return lo, INT8_MAX
    if kind == "relu6":
        return lo, min(INT8_MAX, zero_point + int(round(6.0 / scale)))
    raise ValueError(f"no int8 clamp for activation {kind!r}")


def bilinear_taps(size: int, scale: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Bilinear upsampling of one axis of ``size`` samples by an integer ``scale`` (PyTorch's align_corners=False,
    ONNX's half_pixel): for every output sample its two source indices (clamped to the axis: the border replicates)
    and integer weights summing to 2·scale. Output o reads source (o + 0.5) / s − 0.5 = m + F / (2s) with m = o // s
    and F = 2·(o % s) + 1 − s: between m − 1 and m when F < 0 (weights −F and 2s + F), else between m and m + 1
    (2s − F and F). (lo, hi, w_lo, w_hi) as int64 arrays."""
    o = np.arange(size * scale)
    f = 2 * (o % scale) + 1 - scale
    lo = o // scale - (f < 0)
    w_hi = np.where(f < 0, 2 * scale + f, f)
    return np.clip(lo, 0, size - 1), np.clip(lo + 1, 0, size - 1), 2 * scale - w_hi, w_hi


def bilinear_upsample(x: np.ndarray, scale) -> np.ndarray:
    """The int8 reference of bilinear upsampling of [N, C, H, W] codes by integer factors: the four neighbours'
    codes times integer weights (products of :func:`bilinear_taps`' pairs, summing to 4·s_h·s_w), rounded half up.
    The weights sum to one, so the zero point passes through and the output keeps the input's quantization."""
    (sh, sw), (h, w) = scale, x.shape[2:]
    lh, hh, wlh, whh = bilinear_taps(h, sh)
    lw, hw, wlw, whw = bilinear_taps(w, sw)
    v = x.astype(np.int64)
    top, bottom = v[:, :, lh], v[:, :, hh]
    acc = (wlh[:, None] * (top[..., lw] * wlw + top[..., hw] * whw)
           + whh[:, None] * (bottom[..., lw] * wlw + bottom[..., hw] * whw))
    d = 4 * sh * sw
    return np.floor_divide(acc + d // 2, d).astype(np.int8)
