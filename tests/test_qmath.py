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


# ---- no silent wrap, clip or underflow in the integer conversion (issue: int8 you can trust) ------------------------

def _layer_cases():
    """Random and degenerate linear layers: (name, weight [O, I], bias [O], inputs [N, I])."""
    rng = np.random.default_rng(7)
    w = rng.standard_normal((6, 20)) * 0.1
    b = rng.standard_normal(6) * 0.1
    x = rng.standard_normal((32, 20))
    zero_ch = w.copy()
    zero_ch[2] = 0.0
    yield "random", w, b, x
    yield "inputs of 1e-12 (a dying layer)", w, b, x * 1e-12
    yield "an all-zero weight channel", zero_ch, b, x
    yield "huge biases", w, b * 1e6, x
    yield "constant inputs", w, b, np.full_like(x, 0.37)
    yield "zero inputs and biases only", w, b, np.zeros_like(x)
    yield "weights of 1e-9", w * 1e-9, b, x


@pytest.mark.parametrize("case", list(_layer_cases()), ids=lambda c: c[0])
def test_int8_linear_stays_within_its_error_bound(case):
    """Quantize one linear layer the way edgekit does (observer, weight scales, lowering, integer reference) and
    compare with float64: the error stays within the bound the scales imply — never a wrapped or clipped bias."""
    import torch

    from edgekit.converters.quantize import quantize
    from edgekit.model import Model
    from edgekit.qgraph import lower, run_int8

    name, w, b, x = case
    lin = torch.nn.Linear(w.shape[1], w.shape[0])
    with torch.no_grad():
        lin.weight.copy_(torch.from_numpy(w))
        lin.bias.copy_(torch.from_numpy(b))
    x32 = x.astype(np.float32)
    model = quantize(Model.from_module(torch.nn.Sequential(lin), torch.from_numpy(x32[:1]), calib=x32))
    qg = lower(model.deploy_graph, model.meta["quant"])
    y_q = run_int8(qg, qg.quantize_input(x32))[qg.graph.outputs[0]]
    got = qg.dequantize_output(y_q).astype(np.float64)
    exact = x32.astype(np.float64) @ w.T.astype(np.float32).astype(np.float64) + b.astype(np.float32)
    qn = qg.nodes[qg.graph.outputs[0]]
    xs, ws = qg.input.out_scale, qn.q["w_scale"]
    # rounding of the output, of the inputs (through the weights), of the weights (through the inputs), of the bias
    bound = (qn.out_scale * 1.01 + 0.5 * xs * np.abs(w).sum(1) + 0.5 * ws * np.abs(x32).sum(1, keepdims=True)
             + 0.5 * xs * ws + 1e-6 * np.abs(exact))
    assert np.all(np.abs(got - exact) <= bound), name


def test_fit_bias_keeps_the_accumulator_in_int32():
    from edgekit.qgraph import INT32_MAX, fit_bias

    rng = np.random.default_rng(3)
    for trial in range(200):
        cout, fan_in = int(rng.integers(1, 9)), int(rng.integers(1, 3000))
        w = rng.standard_normal((cout, fan_in)) * 10.0 ** rng.uniform(-6, 1)
        b = rng.standard_normal(cout) * 10.0 ** rng.uniform(-3, 7)
        in_scale = 10.0 ** rng.uniform(-9, 0)
        ws0 = np.where(np.abs(w).max(1) > 0, np.abs(w).max(1) / 127, 1.0)
        ws, w_q, b_q, raised = fit_bias("fc", w, b, in_scale, ws0)
        worst = np.abs(b_q.astype(np.int64)) + 255 * np.abs(w_q.astype(np.int64)).sum(1)
        assert np.all(worst <= INT32_MAX)
        assert np.all(ws >= ws0) and raised == int((ws > ws0).sum())
        # the bias is represented exactly to within half a step of its scale
        assert np.allclose(b_q * in_scale * ws, b, rtol=0, atol=0.5 * in_scale * ws.max() * 1.0001)


def test_multiplier_underflow_is_harmless():
    """A requantization multiplier below 2**-32 becomes 0: with an int32 accumulator its product is under 0.5."""
    real = 2.0 ** -33
    m, s = qmath.quantize_multiplier(real)
    assert (m, s) == (0, 1)
    assert abs((2**31 - 1) * real) < 0.5


def test_activation_scale_has_a_floor():
    from edgekit.converters.quantize import MIN_SCALE, qparams_from_range

    q = qparams_from_range(-1e-12, 1e-12)
    assert q.scale >= MIN_SCALE and -128 <= q.zero_point <= 127
    with pytest.raises(Exception, match="not finite"):
        qparams_from_range(0.0, float("inf"))


@pytest.mark.parametrize("channels,kernel,dilation,per_group", [(48, (3, 3), 1, 1), (16, (5, 5), 2, 1),
                                                                 (24, (9, 1), 1, 1), (12, (3, 3), 1, 4),
                                                                 (8, (11, 1), 1, 8), (128, (3, 3), 1, 64)])
def test_grouped_conv_reference_in_float32_is_exact(channels, kernel, dilation, per_group):
    """The host reference runs a grouped conv in float32 (exact while each partial sum stays below 2^24), the bias
    added in integers: equal to the float64 sums on extreme codes and biases near int32's limits; a group fan-in
    beyond 513 keeps float64."""
    import torch
    import torch.nn.functional as F

    from edgekit.qgraph import _conv_acc

    rng = np.random.default_rng(channels)
    kh, kw = kernel
    x = rng.integers(-128, 128, (3, channels, 13, 11), dtype=np.int8)
    x[0], x[1] = -128, 127
    w = rng.integers(-128, 128, (channels, per_group, kh, kw), dtype=np.int8)
    w[: channels // 2] = -128
    bias = rng.integers(-2 ** 30, 2 ** 30, channels).astype(np.int32)
    pad = (dilation * (kh // 2), dilation * (kw // 2))
    groups = channels // per_group

    class _Node:
        op, attrs = "conv2d", dict(stride=(1, 1), padding=pad, dilation=(dilation, dilation), groups=groups)

    class _QNode:
        node, q = _Node, dict(in_zp=127, weight=w, bias=bias)

    got = _conv_acc(x, _QNode)
    want = F.conv2d(torch.from_numpy(x.astype(np.float64) - 127), torch.from_numpy(w.astype(np.float64)),
                    torch.from_numpy(bias.astype(np.float64)), (1, 1), pad, (dilation, dilation), groups)
    assert got.dtype == np.int64 and np.array_equal(got, want.numpy().astype(np.int64))


@pytest.mark.parametrize("scale", [(1, 2), (2, 2), (3, 2), (4, 3)])
def test_bilinear_reference_is_torch_on_the_codes_rounded(scale):
    """The int8 bilinear upsampling (integer weights, one rounding) is PyTorch's bilinear interpolation
    (align_corners=False) of the codes, rounded half up: within half a step everywhere, the border replicated."""
    import torch
    import torch.nn.functional as F

    x = np.random.default_rng(sum(scale)).integers(-128, 128, (2, 3, 5, 7)).astype(np.int8)
    want = F.interpolate(torch.from_numpy(x.astype(np.float64)), scale_factor=scale, mode="bilinear",
                         align_corners=False).numpy()
    got = qmath.bilinear_upsample(x, scale)
    assert got.shape == want.shape and np.all(np.abs(got - want) <= 0.5 + 1e-9)
    np.testing.assert_array_equal(got, np.floor(want + 0.5 + 1e-9).astype(np.int8))  # (ties: float64's 1/6)
