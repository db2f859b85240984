"""Helium (MVE) on the Cortex-M55 end to end: ``--kernels auto`` on cortex-m55 packs conv, depthwise and linear
layers for edgekit's Helium kernels (targets/mcu/platforms/cortex_m/kernels/ek_nn_s8_mve.c) and the firmware, run on
QEMU's mps3-an547, matches the host integer reference bit for bit — a whole model, a patch-based schedule and a
recurrent step program's head. The kernels themselves are checked shape by shape in tests/test_dsp_kernels.py.

Needs the cross-compiler and QEMU (scripts/setup.sh installs them); runs in CI.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

from edgekit import api
from edgekit.errors import UsageError
from edgekit.model import Model
from edgekit.targets.mcu import kernel_pack

from conftest import make_tiny


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 24, 3, stride=2, padding=1), nn.ReLU6())
        self.block = nn.Sequential(nn.Conv2d(24, 24, 3, padding=1, groups=24), nn.ReLU6(), nn.Conv2d(24, 24, 1))
        self.tail = nn.Sequential(
            nn.Conv2d(24, 8, 1), nn.ReLU(),
            nn.Conv2d(8, 40, 1), nn.ReLU6(),
            nn.Conv2d(40, 40, 5, stride=2, padding=2, groups=40), nn.ReLU(),
            nn.MaxPool2d(2, ceil_mode=True), nn.AvgPool2d(3, stride=1, padding=1),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(40, 10))

    def forward(self, x):
        x = self.stem(x)
        return self.tail(x + self.block(x))


def _depthwise_model(seed: int = 0) -> Model:
    """conv 3x3, a depthwise-separable block with a residual add, a 1x1 with few inputs (K < 16), max, average and
    global average pooling and a classifier: every Helium kernel path in one small model."""
    torch.manual_seed(seed)
    module = _Net().eval()
    x = np.random.default_rng(seed).standard_normal((16, 3, 20, 20)).astype(np.float32)
    y = module(torch.from_numpy(x)).argmax(-1).numpy()
    return Model.from_module(module, torch.from_numpy(x[:1]), name="dw-helium", calib=x, test_x=x[:6], test_y=y[:6])


def _helium_steps(report) -> list[str]:
    return [k for k in report["build"]["step_kernels"] if k in ("ek_conv", "ek_dw", "ek_fc")]


def test_cortex_m55_runs_helium_kernels_bit_exact_and_faster_than_dsp(tmp_path):
    m = _depthwise_model()
    art = api.compile(m, "cortex-m55", tmp_path / "mve", quantize="int8")
    build = art.report["build"]
    assert "Helium" in build["kernels"] and "-DEK_NN_MVE_ONLY=1" in build["cflags"]
    assert set(_helium_steps(art.report)) == {"ek_conv", "ek_dw", "ek_fc"}
    assert build["step_kernels"].count("ek_pool") == 3 and "ek_add" in build["step_kernels"]
    mve = api.profile(tmp_path / "mve").measured
    assert mve["outputs_match"] and mve["max_abs_err_lsb"] == 0
    # the same model on the same core with the SMLAD kernels: same integers, more instructions
    art_dsp = api.compile(m, "cortex-m55", tmp_path / "dsp", quantize="int8", kernels="dsp")
    assert "DSP" in art_dsp.report["build"]["kernels"] and "EK_NN_MVE_ONLY" not in art_dsp.report["build"]["cflags"]
    assert "ek_pool" in art_dsp.report["build"]["step_kernels"]  # pooling: ek_pool_s8's SIMD path without Helium
    assert "-DEK_NN_NO_MVE=1" in art_dsp.report["build"]["cflags"]  # no Helium call: its code is left out
    dsp = api.profile(tmp_path / "dsp").measured
    assert dsp["outputs_match"] and dsp["max_abs_err_lsb"] == 0
    assert mve["instructions"] * 1.5 < dsp["instructions"]
    # the estimate says which figure is instructions and which is an estimate of cycles
    est = art.report["estimate"]
    assert est["cycles"] > est["instructions"] and "cycles per instruction" in est["formulas"]["cycles"]
    assert "Helium kernels" in est["formulas"]["cycles"]


def test_helium_patch_schedule_is_bit_exact(tmp_path):
    art = api.compile(_depthwise_model(1), "cortex-m55", tmp_path / "p", quantize="int8", patch="min-memory",
                      max_patch_overhead=0.5)
    assert art.report.get("patch"), "expected a patch-based schedule"  # (report["schedule"] exists either way)
    meas = api.profile(tmp_path / "p").measured
    assert meas["outputs_match"] and meas["max_abs_err_lsb"] == 0
    assert meas["arena_bytes"] == art.report["build"]["arena_bytes"]


def test_helium_is_chosen_only_where_the_core_has_it(tmp_path):
    m = make_tiny(n=4)
    art = api.compile(m, "cortex-m7", tmp_path / "m7", quantize="int8")
    assert "DSP" in art.report["build"]["kernels"]
    with pytest.raises(UsageError, match="--kernels must be auto, dsp or tvm"):
        api.compile(m, "cortex-m55", tmp_path / "bad", quantize="int8", kernels="helium")
    assert not (tmp_path / "bad").exists()


def test_add_split_form_is_exact():
    # the 32-bit form of the int8 add (ek_add_s8 with FLAG_ADD_SPLIT, scalar and Helium) against the 64-bit contract
    rng = np.random.default_rng(4)
    from edgekit import qmath
    for _ in range(200):
        shift = int(rng.integers(16, 47))
        am, bm = (int(v) for v in rng.integers(0, 1 << 31, 2))
        za, zb, zo = (int(v) for v in rng.integers(-128, 128, 3))
        p = kernel_pack.pack_add(64, a_zp=za, b_zp=zb, a_mult=am, b_mult=bm, shift=shift, out_zp=zo,
                                 isa="mve").params
        assert p["flags"] & kernel_pack.FLAG_ADD_SPLIT and p["flags"] & kernel_pack.FLAG_MVE
        a = rng.integers(-128, 128, 64)
        b = rng.integers(-128, 128, 64)
        h = a * p["a_mult_hi"] + b * p["b_mult_hi"] + p["h_const"]
        lo = a * p["a_mult_lo"] + b * p["b_mult_lo"] + p["l_const"]
        assert np.abs(h).max() < 2**31 and np.abs(lo).max() < 2**31  # int32 lanes
        got = qmath.rshift_round(h + (lo >> 15), shift - 15) + zo
        want = qmath.rshift_round((a - za) * am + (b - zb) * bm, shift) + zo
        assert np.array_equal(got, want)
    assert not kernel_pack.pack_add(4, a_zp=0, b_zp=0, a_mult=1, b_mult=1, shift=50, out_zp=0).params["flags"]


def test_helium_requant_table_vector_form_is_exact():
    # the vector form floor((floor(acc*mult / 2^32) + a) / 2^b) equals the contract for random accumulators
    rng = np.random.default_rng(3)
    from edgekit import qmath
    real = rng.uniform(1e-4, 0.2, 64)
    mult, shift = qmath.quantize_multipliers(real)
    out_zp = -7
    table, fast = kernel_pack.mve_requant_table(mult, shift, out_zp, -128, 127)
    assert fast and table.shape == (16, 3, 4)
    acc = rng.integers(-2**31, 2**31, (1000, 64), dtype=np.int64)
    m, a, nb = (table[:, i, :].reshape(-1).astype(np.int64) for i in range(3))
    got = ((acc * m) >> 32) + a >> -nb
    want = qmath.rshift_round(acc * mult.astype(np.int64), shift.astype(np.int64)) + out_zp
    assert np.array_equal(got, want)
