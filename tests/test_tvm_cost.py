"""TVM's kernels: compiled with the loop pragma, and priced by the loops they run (targets/mcu/cost.tvm_conv_terms)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

from edgekit.model import Model
from edgekit.targets import CompileOptions, get_profile
from edgekit.targets.mcu import cost, tvm_kernels
from edgekit.targets.mcu.pipeline import plan as mcu_plan


@pytest.fixture(scope="module")
def small_cnn():
    """Padded 3x3 convs at strides 1 and 2 over 3 and 24 channels (a peeled and a looped reduction), a 1x1 and a
    depthwise conv."""
    torch.manual_seed(0)
    module = nn.Sequential(nn.Conv2d(3, 24, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(24, 24, 3, padding=1),
                           nn.ReLU(), nn.Conv2d(24, 24, 3, padding=1, groups=24), nn.ReLU(), nn.Conv2d(24, 8, 1),
                           nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4)).eval()
    x = np.random.default_rng(0).standard_normal((4, 3, 9, 7)).astype(np.float32)
    return Model.from_module(module, torch.from_numpy(x[:1]), name="tvm-cost", calib=x, test_x=x[:1])


def _inside_taps(spec, h, w, oh, ow):
    """Taps of every output pixel that land inside the h x w input, counted one by one."""
    kh, kw = spec.attr("kernel")
    sh, sw = spec.attr("stride")
    pt, _, pl, _ = spec.attr("pads")
    return sum(1 for i in range(oh) for j in range(ow) for ky in range(kh) for kx in range(kw)
               if 0 <= i * sh - pt + ky < h and 0 <= j * sw - pl + kx < w)


@pytest.mark.parametrize("dtype", ["int8", "float32"])
def test_conv_terms_follow_the_loops(small_cnn, dtype):
    p = mcu_plan(small_cnn, get_profile("cortex-m7"),
                 CompileOptions(quantize=dtype if dtype == "int8" else None, kernels="tvm", patch="off"))
    prog = p.program
    convs = [s for s in prog.steps if s.spec is not None and s.spec.op == "conv2d"]
    assert len(convs) == 4
    for s in convs:
        key, units, outs, ins = cost.step_cost_terms(prog, s)
        n, h, w, c = prog.tensors[s.inputs[0]].shape
        _, oh, ow, cout = prog.tensors[s.output].shape
        groups = s.spec.attr("groups") or 1
        cin = c // groups
        depthwise = groups > 1
        kh, kw = s.spec.attr("kernel")
        assert key.endswith(dtype) and outs == oh * ow * cout
        taps = _inside_taps(s.spec, h, w, oh, ow) if dtype == "int8" else oh * ow * kh * kw
        weight = cost.TVM_PEELED if not depthwise and cin <= cost.TVM_PEEL_MAX else 1.0
        assert units == round(taps * cout * cin * weight), s.layer
        sides = sum(1 for pad in s.spec.attr("pads") if pad)
        assert ins == oh * ow * cout * kh * kw * sides
    # int8 skips the padding's taps (the first layer's border pixels read fewer than all 9), float32 runs them all
    first_units = cost.step_cost_terms(prog, convs[0])[1]
    assert (first_units < round(convs[0].macs * cost.TVM_PEELED)) == (dtype == "int8")


def test_tvm_source_carries_the_loop_pragma(small_cnn):
    from edgekit.targets.mcu.pipeline import tvm_kernels_of

    p = mcu_plan(small_cnn, get_profile("cortex-m7"), CompileOptions(kernels="tvm", patch="off"))
    code = tvm_kernels_of([p.program], p.platform, p.cpu)[0]
    assert code.startswith(tvm_kernels.TVM_C_PRAGMA)
    assert "unswitch-loops" in tvm_kernels.TVM_C_PRAGMA and "fp-contract=fast" in tvm_kernels.TVM_C_PRAGMA

