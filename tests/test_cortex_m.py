"""The Cortex-M target end to end: C sources, firmware built with arm-none-eabi-gcc, run under QEMU, checked.

These tests need the cross-compiler and QEMU (scripts/setup.sh installs them); they run in CI.
"""
from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from edgekit import api
from edgekit.errors import UnsupportedError, UsageError
from edgekit.targets.mcu.program import build_program

from conftest import make_tiny


@pytest.mark.parametrize("quantize", [None, "int8"])
def test_tiny_model_runs_on_emulated_m7_and_matches_reference(tmp_path, quantize):
    m = make_tiny()
    out = tmp_path / "out"
    art = api.compile(m, "cortex-m7", out, quantize=quantize)
    for f in ("src/edgekit_model.h", "src/edgekit_model.c", "src/edgekit_weights.c", "src/edgekit_kernels.c",
              "firmware/firmware.elf", "firmware/Makefile", "report.json", "report.html"):
        assert (out / f).is_file(), f
    header = (out / "src/edgekit_model.h").read_text()
    arena = int(re.search(r"EDGEKIT_ARENA_BYTES (\d+)u", header)[1])
    assert arena == art.report["build"]["arena_bytes"] == art.report["estimate"]["arena_bytes"]
    assert art.report["build"]["elf_arena_bytes"] == arena  # the ELF holds exactly the planned arena
    art = api.profile(out)
    meas = art.measured
    assert meas["outputs_match"], meas
    if quantize == "int8":
        assert meas["max_abs_err_lsb"] == 0
    else:
        assert meas["max_abs_err"] < 1e-4
    assert meas["instructions"] > m.analyze().macs  # at least one instruction per MAC
    assert meas["arena_bytes"] == arena
    # Labels are the float model's own predictions: float firmware gets all, int8 exactly what the host int8 gets.
    assert meas["accuracy"] == pytest.approx(1.0 if quantize is None else meas["reference_accuracy"])
    rep = json.loads((out / "report.json").read_text())
    assert set(rep["errors"]) >= {"flash_bytes", "peak_sram_bytes", "instructions"}


@pytest.mark.parametrize("target", ["cortex-m4", "cortex-m33", "cortex-m55"])
def test_other_cores_build_and_match(tmp_path, target):
    art = api.compile(make_tiny(n=4), target, tmp_path / target, quantize="int8")
    assert target.split("-")[1] in art.report["build"]["cflags"]
    meas = api.profile(tmp_path / target).measured
    assert meas["outputs_match"] and meas["max_abs_err_lsb"] == 0


def test_planned_arena_never_overlaps_live_tensors():
    m = make_tiny()
    prog = build_program(m.deploy_graph, "float32")
    from edgekit.targets.mcu.program import program_buffers

    bufs = program_buffers(prog)
    for i, a in enumerate(bufs):
        for b in bufs[i + 1:]:
            if a.last < b.first or b.last < a.first:
                continue
            oa, ob = prog.plan.offsets[a.name], prog.plan.offsets[b.name]
            assert oa + a.size <= ob or ob + b.size <= oa, (a, b)
    assert prog.arena_bytes >= prog.plan.lower_bound


def test_unsupported_layers_are_named(tmp_path):
    import torch
    import torch.nn as nn

    from edgekit.model import Model

    class Gate(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(4, 4)
            self.b = nn.Linear(4, 4)

        def forward(self, x):
            return torch.softmax(self.a(x) * torch.sigmoid(self.b(x)), dim=-1)

    m = Model.from_module(Gate(), torch.zeros(1, 4), calib=np.random.rand(8, 4).astype(np.float32))
    with pytest.raises(UnsupportedError) as e:
        api.compile(m, "cortex-m7", tmp_path / "o", quantize="int8")
    msg = str(e.value)
    assert "softmax" in msg and "'mul'" not in msg and "\n" not in msg  # int8 multiplies run since the zoo
    assert not (tmp_path / "o").exists()


def test_existing_output_is_refused_without_force(tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    with pytest.raises(UsageError, match="--force"):
        api.compile(make_tiny(n=2), "cortex-m7", out)


@pytest.mark.parametrize("quantize", [None, "int8"])
def test_patch_based_build_gives_identical_outputs_in_a_smaller_arena(tmp_path, quantize):
    m = make_tiny(n=6)
    plain = api.compile(m, "cortex-m7", tmp_path / "plain", quantize=quantize, patch="off")
    patched = api.compile(m, "cortex-m7", tmp_path / "patched", quantize=quantize, patch="2")
    assert plain.report["patch"] is None
    p = patched.report["patch"]
    assert p["grid"] == 2 and p["split_after"] == "pool" and 0 < p["mac_overhead"] < 0.5
    assert patched.report["build"]["arena_bytes"] < plain.report["build"]["arena_bytes"]
    meas = api.profile(tmp_path / "patched").measured
    assert meas["outputs_match"]  # against the same host reference as the unpatched build
    assert meas["arena_bytes"] == patched.report["build"]["arena_bytes"]
    if quantize == "int8":
        assert meas["max_abs_err_lsb"] == 0


def test_patched_program_runs_from_a_call_table_in_less_flash(tmp_path, monkeypatch):
    """A patch-based program's calls are data (templates/call_table.c.j2): one row per tile call and the fields in
    which a tile's struct differs, walked by one loop — the same outputs, bit for bit, in less flash than a function
    with a call and a full struct per tile; the flash estimate follows."""
    from edgekit.model import Model
    from edgekit.targets.mcu import codegen

    m = Model.load("digits-cnn")
    table = api.compile(m, "cortex-m7", tmp_path / "table", quantize="int8", patch="min-memory")
    source = (tmp_path / "table" / "src" / "edgekit_model.c").read_text()
    assert "ek_steps_0[" in source and "EK_FROM_INPUT" in source  # the first stage reads the input in place
    monkeypatch.setattr(codegen, "uses_call_table", lambda prog: False)
    calls = api.compile(m, "cortex-m7", tmp_path / "calls", quantize="int8", patch="min-memory")
    assert "ek_steps_0[" not in (tmp_path / "calls" / "src" / "edgekit_model.c").read_text()
    assert table.report["patch"] == calls.report["patch"]
    reports = {k: api.profile(tmp_path / k).report for k in ("table", "calls")}
    meas = {k: r["measured"] for k, r in reports.items()}
    assert meas["table"]["outputs_match"] and meas["calls"]["outputs_match"]
    assert meas["table"]["max_abs_err_lsb"] == 0
    assert meas["table"]["flash_bytes"] < meas["calls"]["flash_bytes"] - 1000
    assert abs(reports["table"]["errors"]["flash_bytes"]) < 0.05  # the estimators goal (bench/estimators.py)


def test_program_constants_of_one_name_keep_their_bytes():
    """Tile calls of a layer share its constants by name; a call packed differently gets its own array instead of
    overwriting the one the other calls read (the cause of the MobileNetV1 case below)."""
    from types import SimpleNamespace

    from edgekit.targets.mcu.program import _Builder

    b = SimpleNamespace(consts={})
    a, c = np.arange(8, dtype=np.int8), np.arange(8, dtype=np.int8)[::-1]
    assert _Builder.const(b, "f.3.dw", a) == "f.3.dw"
    assert _Builder.const(b, "f.3.dw", a.copy()) == "f.3.dw"          # same bytes: stored once
    assert _Builder.const(b, "f.3.dw", c) == "f.3_v2.dw"              # other bytes: a second array, suffix kept
    assert _Builder.const(b, "f.3.dw", c.copy()) == "f.3_v2.dw"
    assert _Builder.const(b, "f.3.dw", a.astype(np.int16)) == "f.3_v3.dw"
    assert np.array_equal(b.consts["f.3.dw"].data, a) and np.array_equal(b.consts["f.3_v2.dw"].data, c)


def test_patched_depthwise_tiles_stay_bit_exact(tmp_path):
    """The zoo's MobileNetV1-0.25 patched for the smallest arena: its depthwise layers run tile by tile, and tiles of
    one layer take different layouts (8 output columns: rows, 9: channels-last). Both packings of the layer's
    weights are kept (Program.const); when they shared one name every tile read the last one packed and the outputs
    differed from the reference."""
    art = api.compile("zoo-mobilenet-v1-025", "cortex-m7", tmp_path / "o", quantize="int8", patch="min-memory",
                      max_patch_overhead=0.15)
    assert art.report["patch"] is not None
    # its depthwise calls run the 3x3 row and channels-last kernels only: the 1x3 and 5x5 code is left out
    flags = art.report["build"]["cflags"]
    assert all(f"-DEK_NN_NO_{v}=1" in flags for v in ("DW1X3", "DW1XK", "DW5X5"))
    assert "NO_DW_ROWS" not in flags and not ("NO_DW_CH3X3=" in flags and "NO_DW_CH3X3_NC=" in flags)
    weights = (tmp_path / "o" / "src" / "edgekit_weights.c").read_text()
    assert "_v2_dw" in weights  # some layer's tiles run both layouts: the case this guards
    meas = api.profile(tmp_path / "o").measured
    assert meas["outputs_match"] and meas["max_abs_err_lsb"] == 0


def test_channels_last_depthwise_stays_within_the_flash_to_spare(tmp_path, monkeypatch):
    """The channels-last depthwise layout stores 2 bytes a weight (int16): a layer takes it where the flash the
    target can spare for widened weights (a sixteenth, shared with the convs') holds the extra bytes, else the fastest
    other layout — still bit-exact on the emulated M7."""
    import torch
    from torch import nn

    from edgekit.model import Model
    from edgekit.targets import CompileOptions, get_profile
    from edgekit.targets.mcu import kernel_pack as kp
    from edgekit.targets.mcu import program as mcu_program
    from edgekit.targets.mcu.pipeline import plan as mcu_plan

    torch.manual_seed(0)
    module = nn.Sequential(nn.Conv2d(8, 64, 3, stride=2, padding=1), nn.ReLU(),
                           nn.Conv2d(64, 64, 3, padding=1, groups=64), nn.ReLU(),
                           nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10)).eval()
    x = np.random.default_rng(0).standard_normal((16, 8, 6, 6)).astype(np.float32)
    model = Model.from_module(module, torch.from_numpy(x[:1]), name="dw3x3", calib=x, test_x=x[:4])

    def dw_flags():
        p = mcu_plan(model, get_profile("cortex-m7"), CompileOptions(quantize="int8"))
        return [s.params["flags"] for s in p.program.steps if s.kind == "ek_dw"]

    assert all(f & kp.FLAG_DW_CHANNELS for f in dw_flags())        # a 3x3x64 map: channels-last is fastest
    monkeypatch.setattr(mcu_program, "fc_pairs_budget", lambda target: 500)  # less than its 576 extra bytes
    assert not any(f & kp.FLAG_DW_CHANNELS for f in dw_flags())
    api.compile(model, "cortex-m7", tmp_path / "m7", quantize="int8")
    meas = api.profile(tmp_path / "m7").measured
    assert meas["outputs_match"] and meas["max_abs_err_lsb"] == 0


@pytest.mark.parametrize("target", ["cortex-m7", "esp32-c3"])
def test_grouped_1x1_convs_run_a_call_per_group_bit_exact(tmp_path, target):
    """A grouped 1x1 conv runs as one conv call a group, its pixels as rows of one pixel so that the row strides
    select the group's channels in place (ek_kernels.grouped_1x1_steps; offsets into the input and the output); a
    grouped 3x3 conv keeps the dense kernel on block-diagonal weights on the M7 (TVM's kernel on the RISC-V core).
    Same integers as the reference on the M7 and on the rv32imc core."""
    import torch
    import torch.nn as nn

    from edgekit.model import Model

    class Grouped(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(3, 16, 3, padding=1)
            self.g4 = nn.Conv2d(16, 32, 1, groups=4)
            self.g2 = nn.Conv2d(32, 16, 1, groups=2)
            self.g3x3 = nn.Conv2d(16, 16, 3, padding=1, groups=2)
            self.fc = nn.Linear(16, 5)

        def forward(self, x):
            y = torch.relu(self.g2(torch.relu(self.g4(torch.relu(self.stem(x))))))
            return self.fc(self.g3x3(y).mean((2, 3)))

    torch.manual_seed(0)
    x = np.random.default_rng(0).standard_normal((40, 3, 10, 12)).astype(np.float32)
    m = Model.from_module(Grouped().eval(), torch.from_numpy(x[:1]), calib=x[:32], test_x=x[32:])
    art = api.compile(m, target, tmp_path / "o", quantize="int8")
    calls = {}
    for layer, kind in zip(art.report["build"]["step_layers"], art.report["build"]["step_kernels"]):
        calls.setdefault(layer, []).append(kind)
    assert calls["g4"] == ["ek_conv"] * 4 and calls["g2"] == ["ek_conv"] * 2
    assert (calls["g3x3"] == ["ek_conv"]) == (target == "cortex-m7")
    meas = api.profile(tmp_path / "o").measured
    assert meas["outputs_match"] and meas["max_abs_err_lsb"] == 0


class _Crops(torch.nn.Module):
    """A causal crop of the time axis (KwsDSCNN's CausalCrop: a prefix of the rows) and a centre crop of rows and
    columns, each read by a conv."""

    def __init__(self):
        super().__init__()
        self.c1 = torch.nn.Conv2d(1, 8, 3, padding=(2, 1))
        self.c2 = torch.nn.Conv2d(8, 12, 3, padding=1)
        self.fc = torch.nn.Linear(12 * 4 * 5, 5)

    def forward(self, x):
        a = torch.relu(self.c1(x))[:, :, :10]           # [N, 8, 12, 9] -> the first 10 rows
        b = torch.relu(self.c2(a))[:, :, 3:7, 2:7]       # a window inside
        return self.fc(b.flatten(1))


@pytest.mark.parametrize("quantize", [None, "int8"])
def test_crops_run_as_copies_of_rows(tmp_path, quantize):
    """A slice of rows and columns that keeps every channel is a window of contiguous rows in NHWC: the program
    copies it (a "copy" step, ek_copy_window) instead of a TVM gather, with the same outputs."""
    from edgekit.model import Model

    torch.manual_seed(3)
    x = np.random.default_rng(3).random((6, 1, 10, 9), dtype=np.float32)
    m = Model.from_module(_Crops().eval(), torch.from_numpy(x[:1]), name="crops", calib=x, test_x=x)
    prog = build_program(m.deploy_graph, "float32")
    crops = [s for s in prog.steps if s.kind == "copy"]
    assert [s.params for s in crops] == [{"crop_row": 0, "crop_col": 0}, {"crop_row": 3, "crop_col": 2}]
    assert not any(s.kind == "tvm" for s in prog.steps if s.layer.startswith("getitem"))
    api.compile(m, "cortex-m7", tmp_path / "out", quantize=quantize)
    meas = api.profile(tmp_path / "out").measured
    assert meas["outputs_match"], meas
    if quantize == "int8":
        assert meas["max_abs_err_lsb"] == 0


class _ShuffleFlatten(torch.nn.Module):
    """A channel shuffle of 3 groups (5 channels each: matrices with edges beyond the 4x4 blocks) and a flatten of an
    NHWC map (torch order: a 35 x 4 transpose) — the layout moves ek_transpose_s8 runs."""

    def __init__(self):
        super().__init__()
        self.c1 = torch.nn.Conv2d(3, 15, 1)
        self.c2 = torch.nn.Conv2d(15, 4, 3, padding=1)
        self.fc = torch.nn.Linear(4 * 5 * 7, 6)

    def forward(self, x):
        y = torch.relu(self.c1(x))
        n, c, h, w = y.shape
        y = y.view(n, 3, c // 3, h, w).transpose(1, 2).reshape(n, c, h, w)
        return self.fc(torch.relu(self.c2(y)).flatten(1))


class _UpCat(torch.nn.Module):
    """A small U-Net step: conv, max-pool, conv, nearest upsample by 2, concat with the skip, conv (``cat``; else
    conv, pool, conv, pool, upsample, conv)."""

    def __init__(self, cat: bool = True):
        super().__init__()
        self.cat = cat
        self.c1 = torch.nn.Conv2d(1, 8, 3, padding=1)
        self.c2 = torch.nn.Conv2d(8, 16, 3, padding=1)
        self.c3 = torch.nn.Conv2d(24 if cat else 16, 2, 1)
        self.up = torch.nn.Upsample(scale_factor=2, mode="nearest")
        self.pool = torch.nn.MaxPool2d(2)

    def forward(self, x):
        a = torch.relu(self.c1(x))
        b = torch.relu(self.c2(self.pool(a)))
        if self.cat:
            return self.c3(torch.cat([self.up(b), a], 1))
        return self.c3(self.up(self.pool(b)))  # (the large first map alone: a patch stage lowers the peak)


@pytest.mark.parametrize("cat, patch", [(True, "off"), (False, "min-memory")])
def test_upsampling_runs_on_its_kernel(tmp_path, cat, patch):
    """An int8 nearest upsample runs on ek_upsample_s8 (not TVM's gather) with the host reference's outputs, bit for
    bit; in a patch-based program too (a row of its call table)."""
    from edgekit.model import Model

    torch.manual_seed(6)
    x = np.random.default_rng(6).random((6, 1, 40, 36), dtype=np.float32)
    m = Model.from_module(_UpCat(cat).eval(), torch.from_numpy(x[:1]), name="upcat", calib=x, test_x=x)
    art = api.compile(m, "cortex-m7", tmp_path / "out", quantize="int8", patch=patch, max_patch_overhead=0.5)
    assert "ek_upsample" in art.report["build"]["step_kernels"]
    if patch != "off":  # patched: every call a row of the call table, the upsample's too
        assert art.report["patch"] is not None
        assert "EK_STEP_UPSAMPLE" in (tmp_path / "out" / "src" / "edgekit_model.c").read_text()
    assert not any("upsample" in k for k in art.report["build"]["step_kernels"] if k.startswith("ek_tvm"))
    meas = api.profile(tmp_path / "out").measured
    assert meas["outputs_match"] and meas["max_abs_err_lsb"] == 0


class _UpConv(torch.nn.Module):
    """Decoder layers: U-Net's 2x2 up-convolution into a skip concat, a 3x3 one with output_padding (a crop after
    its phases), a grouped 4x4 one (CRD phases), a PixelShuffle and a bilinear upsampling (x3 rows, x2 columns)."""

    def __init__(self):
        super().__init__()
        self.c1 = torch.nn.Conv2d(1, 8, 3, padding=1)
        self.c2 = torch.nn.Conv2d(8, 16, 3, padding=1)
        self.pool = torch.nn.MaxPool2d(2)
        self.up = torch.nn.ConvTranspose2d(16, 8, 2, stride=2)
        self.up2 = torch.nn.ConvTranspose2d(8, 8, 3, stride=2, padding=1, output_padding=1)
        self.up3 = torch.nn.ConvTranspose2d(8, 8, 4, stride=2, padding=1, groups=8)
        self.c3 = torch.nn.Conv2d(16, 4, 1)
        self.ps = torch.nn.PixelShuffle(2)
        self.bilinear = torch.nn.Upsample(scale_factor=(3, 2), mode="bilinear")

    def forward(self, x):
        a = torch.relu(self.c1(x))
        y = self.c3(torch.cat([torch.relu(self.up(torch.relu(self.c2(self.pool(a))))), a], 1))
        z = self.up3(torch.relu(self.up2(self.pool(self.pool(a)))))
        return self.bilinear(self.ps(torch.cat([y, z], 1)))


@pytest.mark.parametrize("quantize", ["int8", None])
def test_transposed_convs_and_pixel_shuffle_run_exactly(tmp_path, quantize):
    """Transposed convs (as phase convs, interleaved by block copies or TVM's gather, cropped), a PixelShuffle and a
    bilinear upsampling give the host reference's outputs on the emulated M7: int8 bit for bit, float32 to
    rounding."""
    from edgekit.model import Model

    torch.manual_seed(8)
    x = np.random.default_rng(8).random((6, 1, 16, 12), dtype=np.float32)
    m = Model.from_module(_UpConv().eval(), torch.from_numpy(x[:1]), name="upconv", calib=x, test_x=x)
    art = api.compile(m, "cortex-m7", tmp_path / "out", quantize=quantize)
    kernels = art.report["build"]["step_kernels"]
    assert kernels.count("copy_blocks") == 2 and sum("depth_to_space" in k for k in kernels) == 2
    assert sum("upsample" in k for k in kernels) == 1
    meas = api.profile(tmp_path / "out").measured
    assert meas["outputs_match"]
    if quantize:
        assert meas["max_abs_err_lsb"] == 0
    else:
        assert meas["max_abs_err"] < 1e-5


def test_transposed_conv1d_runs_exactly_on_the_channels_last_sequence(tmp_path):
    """ConvTranspose1d layers run as phase Conv1d layers on the channels-last sequence, whose interleave is the same
    bytes (no step) and whose crop a window of rows: bit-exact in int8 on the emulated M7."""
    from edgekit.model import Model
    from test_importers import AudioDecoder

    torch.manual_seed(10)
    x = np.random.default_rng(10).standard_normal((6, 4, 64)).astype(np.float32)
    m = Model.from_module(AudioDecoder().eval(), torch.from_numpy(x[:1]), name="audio", calib=x, test_x=x)
    art = api.compile(m, "cortex-m7", tmp_path / "out", quantize="int8")
    kernels = art.report["build"]["step_kernels"]
    assert kernels.count("ek_conv") == 4 and kernels.count("copy") == 1 and not any("depth" in k for k in kernels)
    meas = api.profile(tmp_path / "out").measured
    assert meas["outputs_match"] and meas["max_abs_err_lsb"] == 0
    grouped = torch.nn.Sequential(torch.nn.Conv1d(4, 8, 3), torch.nn.ConvTranspose1d(8, 8, 4, 2, 1, groups=4)).eval()
    g = Model.from_module(grouped, torch.from_numpy(x[:1]), name="grouped", calib=x, test_x=x)
    with pytest.raises(UnsupportedError, match=r"'1.interleave' \(depth_to_space: the channel-major interleave of a "
                                               r"grouped ConvTranspose1d; use groups=1"):
        api.compile(g, "cortex-m7", tmp_path / "grouped", quantize="int8")
    assert not (tmp_path / "grouped").exists()


class _Bilinear(torch.nn.Module):
    """Bilinear upsampling by 2 (6 channels: ek_bilinear_s8's shift) and by (3, 2) (4 channels: its division)."""

    def __init__(self):
        super().__init__()
        self.c, self.c2 = torch.nn.Conv2d(1, 6, 3, padding=1), torch.nn.Conv2d(6, 4, 3, padding=1)
        self.up = torch.nn.Upsample(scale_factor=(3, 2), mode="bilinear")

    def forward(self, x):
        y = torch.nn.functional.interpolate(torch.relu(self.c(x)), scale_factor=2, mode="bilinear")
        return self.up(self.c2(y))


def test_bilinear_upsampling_runs_on_its_kernel(tmp_path):
    """int8 bilinear upsampling of 4 or more channels runs on ek_bilinear_s8 (factors whose weights divide by a
    power of two and by another number), bit-exact to the host reference on the emulated M7."""
    from edgekit.model import Model

    torch.manual_seed(11)
    x = np.random.default_rng(11).random((6, 1, 10, 8), dtype=np.float32)
    m = Model.from_module(_Bilinear().eval(), torch.from_numpy(x[:1]), name="bilinear", calib=x, test_x=x)
    art = api.compile(m, "cortex-m7", tmp_path / "out", quantize="int8")
    assert art.report["build"]["step_kernels"].count("ek_bilinear") == 2
    meas = api.profile(tmp_path / "out").measured
    assert meas["outputs_match"] and meas["max_abs_err_lsb"] == 0


def test_zero_pads_run_exactly(tmp_path):
    """Asymmetric 'same' padding before a stride-2 conv and causal pads of Conv1d layers (on the channels-last
    sequence) run as fills and row copies, bit-exact in int8 on the emulated M7."""
    from edgekit.model import Model
    from test_importers import Padded

    torch.manual_seed(9)
    x = np.random.default_rng(9).standard_normal((6, 3, 12, 12)).astype(np.float32)
    m = Model.from_module(Padded().eval(), torch.from_numpy(x[:1]), name="padded", calib=x, test_x=x)
    art = api.compile(m, "cortex-m7", tmp_path / "out", quantize="int8")
    assert "pad" in art.report["build"]["step_kernels"]
    meas = api.profile(tmp_path / "out").measured
    assert meas["outputs_match"] and meas["max_abs_err_lsb"] == 0


@pytest.mark.parametrize("target", ["cortex-m7", "cortex-m55"])
def test_layout_moves_run_on_the_transpose_kernel(tmp_path, target):
    """int8 layout moves (a channel shuffle, NHWC to torch order before a flatten) run on ek_transpose_s8 with the
    host reference's outputs, bit for bit."""
    from edgekit.model import Model

    torch.manual_seed(5)
    x = np.random.default_rng(5).random((6, 3, 5, 7), dtype=np.float32)
    m = Model.from_module(_ShuffleFlatten().eval(), torch.from_numpy(x[:1]), name="moves", calib=x, test_x=x)
    art = api.compile(m, target, tmp_path / "out", quantize="int8")
    assert art.report["build"]["step_kernels"].count("ek_transpose") == 2
    meas = api.profile(tmp_path / "out").measured
    assert meas["outputs_match"] and meas["max_abs_err_lsb"] == 0


class _TallShuffle(torch.nn.Module):
    """A keyword CNN's tall, narrow map (25x5): a depthwise 3x3 the layout cost runs on the transposed map, then a
    channel shuffle of 2 groups and one of 4 (the transpose kernel's 2- and 4-row loops)."""

    def __init__(self):
        super().__init__()
        self.c1 = torch.nn.Conv2d(1, 16, (10, 4), stride=2, padding=(5, 1))
        self.dw = torch.nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.pw = torch.nn.Conv2d(16, 16, 1)
        self.fc = torch.nn.Linear(16, 4)

    def forward(self, x):
        y = torch.relu(self.dw(torch.relu(self.c1(x))))
        n, c, h, w = y.shape
        y = y.view(n, 2, c // 2, h, w).transpose(1, 2).reshape(n, c, h, w)
        y = torch.relu(self.pw(y)).view(n, 4, c // 4, h, w).transpose(1, 2).reshape(n, c, h, w)
        return self.fc(y.mean((2, 3)))


def test_tall_depthwise_and_shuffles_leave_the_channels_last_code_out(tmp_path):
    """The 25x5 depthwise runs the row kernels on its transposed map, so no call is channels-last and the firmware
    leaves that path out (-DEK_NN_NO_DW_CHANNELS), and the generic ring path too (-DEK_NN_NO_DW_RING); the shuffles
    run on their asm loops; bit for bit the reference."""
    from edgekit.model import Model

    torch.manual_seed(7)
    x = np.random.default_rng(7).standard_normal((6, 1, 49, 10)).astype(np.float32)
    m = Model.from_module(_TallShuffle().eval(), torch.from_numpy(x[:1]), name="tall", calib=x, test_x=x[:3])
    art = api.compile(m, "cortex-m7", tmp_path / "out", quantize="int8")
    flags = art.report["build"]["cflags"]
    assert "-DEK_NN_NO_DW_CHANNELS=1" in flags  # (16 channels: the rows layout on the transposed map)
    assert "-DEK_NN_NO_DW_RING=1" in flags      # every depthwise call on a fast path: the generic one left out
    assert "-DEK_NN_NO_DW_ROWS=1" not in flags
    assert art.report["build"]["step_kernels"].count("ek_transpose") == 2
    meas = api.profile(tmp_path / "out").measured
    assert meas["outputs_match"] and meas["max_abs_err_lsb"] == 0
