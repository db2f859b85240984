"""Conv1d models on microcontrollers: a Conv1d runs as a conv2d with a Kx1 kernel over channels-last [1, L, 1, C]
tensors (targets/mcu/program.py, ``channels_last_1d``), one-shot and as a streaming step program.

Firmware built with the cross-compilers and run under QEMU (scripts/setup.sh installs them); they run in CI.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

from edgekit import api
from edgekit.model import Model
from edgekit.targets.mcu.program import channels_last_1d


class Mixed1d(nn.Module):
    """The layouts meeting: a residual add with the (torch-order) input, a depthwise and a pointwise Conv1d with a
    BatchNorm, a strided Conv1d, then one of: flatten into a Linear, a select of the last frame, or the [N, C, L]
    sequence itself through a sigmoid as the output."""

    def __init__(self, tail: str):
        super().__init__()
        self.tail = tail
        self.c0 = nn.Conv1d(8, 8, 3, padding=1)
        self.dw = nn.Conv1d(8, 8, 5, padding=2, groups=8)
        self.bn = nn.BatchNorm1d(8)
        self.pw = nn.Conv1d(8, 16, 1)
        self.s2 = nn.Conv1d(16, 16, 3, stride=2, padding=1, dilation=1)
        self.fc = nn.Linear(16 * 10, 6)

    def forward(self, x):
        y = torch.relu(self.c0(x)) + x
        y = torch.relu(self.bn(self.dw(y)))
        z = self.s2(torch.relu(self.pw(y)))
        if self.tail == "flatten":
            return self.fc(torch.flatten(z, 1))
        if self.tail == "select":
            return z[:, :, -1]
        return torch.sigmoid(z)


def _model(tail: str) -> Model:
    torch.manual_seed(0)
    m = Mixed1d(tail).eval()
    with torch.no_grad():
        m.bn.running_mean.uniform_(-0.2, 0.2)
        m.bn.running_var.uniform_(0.5, 2.0)
    x = np.random.default_rng(0).standard_normal((48, 8, 20)).astype(np.float32)
    return Model.from_module(m, torch.from_numpy(x[:1]), name=f"mixed1d-{tail}", calib=x[:32], test_x=x[32:])


@pytest.mark.parametrize("tail,quantize", [("flatten", "int8"), ("select", "int8"), ("sequence", "int8"),
                                           ("flatten", None)])
def test_conv1d_layouts_run_on_the_m7_and_match(tmp_path, tail, quantize):
    model = _model(tail)
    # the convs and the sigmoid on their output stay channels last; the add reads the torch-order input
    kept = channels_last_1d(model.deploy_graph)
    assert {"c0", "dw", "pw", "s2"} <= kept and not any(n.op == "add" and n.name in kept
                                                         for n in model.deploy_graph.nodes)
    api.compile(model, "cortex-m7", tmp_path / "o", quantize=quantize)
    meas = api.profile(tmp_path / "o").measured
    assert meas["outputs_match"], meas
    if quantize == "int8":
        assert meas["max_abs_err_lsb"] == 0
    else:
        assert meas["max_abs_err"] < 1e-4


def test_zoo_tcn_runs_on_microcontrollers_one_shot_and_streaming(tmp_path):
    from edgekit import loaders

    tcn = loaders.load_model("zoo-tcn")
    for target, streaming in (("cortex-m7", False), ("esp32-c3", False), ("cortex-m7", True)):
        out = tmp_path / f"{target}-{streaming}"
        api.compile(tcn, target, out, quantize="int8", streaming=streaming)
        meas = api.profile(out).measured
        assert meas["outputs_match"] and meas["max_abs_err_lsb"] == 0, (target, streaming, meas)
        if not streaming:  # the dilated convs run edgekit's conv kernel (TVM's only moves the input once)
            kernels = {layer["name"]: layer["kernels"] for layer in meas["layers"]}
            assert kernels["features.9"] == ["ek_conv"] and "ek_conv" in kernels["features.0"], kernels


@pytest.mark.parametrize("kernel,dilation,variant,most", [(9, 1, "DW1XK", 3.5), (5, 3, "DW_CHK1", 6)])
def test_depthwise_conv1d_runs_its_kernels_bit_exact(tmp_path, kernel, dilation, variant, most):
    """A depthwise Conv1d (separable 1-D nets: MatchboxNet, TC-ResNet) runs as a Kx1 kernel: undilated, the 1xK row
    kernel on the transposed map (ek__dw1xk_row: 4 SMLAD per 2 taps of 4 outputs; 49 outputs of 32 channels and 9
    taps, 3.0 instructions per MAC); dilated, channels last, the asm loop over its taps inside the map
    (ek__dw_chk1_px; taps a row stride apart; under 6 instructions per MAC, the C tap loop took 9-10). Bit-exact and
    linked (no -DEK_NN_NO_<variant>)."""
    torch.manual_seed(0)

    class Separable(nn.Module):
        def __init__(self):
            super().__init__()
            self.c0 = nn.Conv1d(10, 32, 3, padding=1)
            self.dw = nn.Conv1d(32, 32, kernel, padding=dilation * (kernel // 2), dilation=dilation, groups=32)
            self.pw = nn.Conv1d(32, 16, 1)
            self.fc = nn.Linear(16, 4)

        def forward(self, x):
            y = torch.relu(self.dw(torch.relu(self.c0(x))))
            return self.fc(torch.relu(self.pw(y)).mean(-1))

    x = np.random.default_rng(0).standard_normal((40, 10, 49)).astype(np.float32)
    model = Model.from_module(Separable().eval(), torch.from_numpy(x[:1]), name="separable1d", calib=x[:32],
                              test_x=x[32:])
    art = api.compile(model, "cortex-m7", tmp_path / "o", quantize="int8")
    assert f"EK_NN_NO_{variant}" not in art.report["build"]["cflags"]
    meas = api.profile(tmp_path / "o").measured
    assert meas["outputs_match"] and meas["max_abs_err_lsb"] == 0
    dw = next(layer for layer in meas["layers"] if layer["name"] == "dw")
    assert dw["kernels"] == ["ek_dw"] and dw["instructions"] < most * dw["macs"], dw
