"""edgekit's integer arithmetic: the definitions every int8 kernel follows."""
from __future__ import annotations

import numpy as np
import pytest

from edgekit import qmath


def test_multiplier_represents_the_real_scale():
    for real in (1e-9, 0.0123, 0.25, 0.5, 0.75, 0.999999):
        mult, shift = qmath.quantize_multiplier(real)
        assert 2 ** 30 <= mult < 2 ** 31 and 1 <= shift <= 62
        assert mult * 2.0 ** -shift == pytest.approx(real, rel=1e-9)
    assert qmath.quantize_multiplier(0.0) == (0, 1)
    with pytest.raises(ValueError):
        qmath.quantize_multiplier(2.0 ** 31)


def test_vectorised_multipliers_equal_the_scalar_definition():
    rng = np.random.default_rng(0)
    real = np.concatenate([rng.random(500) * 10.0 ** rng.uniform(-14, 0, 500), [0.0, 0.5, 1 - 1e-12, 1e-30]])
    mult, shift = qmath.quantize_multipliers(real)
    for r, m, s in zip(real, mult, shift):
        assert (int(m), int(s)) == qmath.quantize_multiplier(float(r))


def test_requantize_rounds_half_up_and_clamps():
    # 2**30 * 2**-31 = 0.5: values x.5 round up (towards +inf), as (v + 2**(s-1)) >> s does.
    acc = np.array([3, -3, 1, -1, 1000])
    out = qmath.requantize(acc, 1 << 30, 31, 0)
    assert out.tolist() == [2, -1, 1, 0, 127]
    assert qmath.requantize(np.array([-1000]), 1 << 30, 31, 10).tolist() == [-128]


def test_activation_ranges():
    assert qmath.activation_range(None, 0.1, 3) == (-128, 127)
    assert qmath.activation_range("relu", 0.1, -20) == (-20, 127)
    assert qmath.activation_range("relu6", 0.1, -128) == (-128, -68)
