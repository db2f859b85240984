"""A nested model's operating points in one Cortex-M image (targets/mcu/nested.py), built and run under QEMU.

Checks what a user of ``edgekit compile NESTED.pt2 --target cortex-m7 --quantize int8`` relies on: every operating
point's outputs equal its own host integer reference bit for bit in the one firmware that switches between them with
edgekit_model_set_budget(); the narrower points read their weights out of the widest point's arrays (stored once);
one arena serves all points; the report and the CLI list the points. The cross-compiler and QEMU are installed by the
set-up (scripts/setup.sh), so nothing here is skipped in CI.
"""
from __future__ import annotations

import json
import re

import numpy as np
import pytest

from edgekit import api
from edgekit.converters.finetune import TrainSettings
from edgekit.errors import UnsupportedError, UsageError
from edgekit.model import Model

BUDGETS = (0.25, 0.5, 1.0)


@pytest.fixture(scope="module")
def nested_cnn():
    from edgekit.converters.nested import nest

    m = Model.load("digits-cnn")
    # a short fine-tuning on part of the training split: these tests check the image, not the accuracy
    m = m.with_module(m.module, train_x=m.train_x[:400], train_y=m.train_y[:400])
    return nest(m, BUDGETS, settings=TrainSettings(epochs=1, batch_size=64), progress=False)


@pytest.fixture(scope="module")
def image(nested_cnn, tmp_path_factory):
    out = tmp_path_factory.mktemp("nested") / "img"
    api.compile(nested_cnn, "cortex-m7", out, quantize="int8", extra={"test_inputs": 24})
    return out, api.profile(out).report


def test_every_operating_point_is_bit_exact_in_one_firmware(image):
    out, rep = image
    points = rep["measured"]["operating_points"]
    assert [p["budget"] for p in points] == list(BUDGETS)
    for p in points:
        assert p["outputs_match"] and p["max_abs_err_lsb"] == 0, p["budget"]
        assert p["test_inputs"] == 24 and p["instructions"] > 0
    # narrower points do less work, measured
    instr = [p["instructions"] for p in points]
    assert instr == sorted(instr) and instr[0] < instr[-1] / 2
    # one firmware: a single ELF, one switch
    assert (out / "firmware" / "firmware.elf").exists()
    header = (out / "src" / "edgekit_model.h").read_text()
    assert "int edgekit_model_set_budget(uint32_t k);" in header
    assert f"#define EDGEKIT_OPERATING_POINTS {len(BUDGETS)}u" in header


def test_weights_are_stored_once(image):
    out, rep = image
    build = rep["build"]
    points = build["operating_points"]
    # every conv / linear layer of the narrower points reads the widest point's packed weights
    for p in points[:-1]:
        assert p["copied_layers"] == [] and p["own_weight_bytes"] == 0 and p["shared_weight_bytes"] > 0
        # shared activation scales (the default): the requant tables too; the biases are the point's own (its
        # trained offsets: 4 bytes a channel against the requant tables' 16)
        assert p["shared_table_bytes"] > 3 * p["own_table_bytes"] > 0
    for k in range(len(points) - 1):
        weights_c = (out / "src" / f"op{k}" / "edgekit_weights.c").read_text()
        assert not re.search(r"_ekw\[\d+\]", weights_c), f"operating point {k} defines its own weight array"
    # one arena, sized for the largest point's plan
    assert build["arena_bytes"] == max(p["arena_bytes"] for p in points) == build["elf_arena_bytes"]


def test_report_and_cli_list_the_operating_points(image, capsys):
    out, rep = image
    html = (out / "report.html").read_text()
    assert 'id="operating-points"' in html and "edgekit_model_set_budget" in html
    from edgekit import cli

    assert cli.main(["report", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "operating points" in shown and shown.count("bit-exact") >= len(BUDGETS)


def test_nested_image_needs_int8(nested_cnn, tmp_path):
    with pytest.raises(UsageError, match="--quantize int8"):
        api.compile(nested_cnn, "cortex-m7", tmp_path / "f32")
    assert not (tmp_path / "f32").exists()


def test_nested_step_programs_are_refused_with_a_way_out(tmp_path):
    from edgekit.converters.nested import nest

    m = Model.load("digits-gru")
    m = m.with_module(m.module, train_x=m.train_x[:64], train_y=m.train_y[:64])
    nested = nest(m, (0.5, 1.0), settings=TrainSettings(epochs=1, batch_size=64), progress=False)
    with pytest.raises(UnsupportedError, match="operating point on its own"):
        api.compile(nested, "cortex-m7", tmp_path / "gru", quantize="int8")
    assert not (tmp_path / "gru").exists()


def test_sweep_takes_the_operating_points_as_an_axis(nested_cnn, tmp_path):
    from edgekit import loaders, sweep

    assert sweep.budget_axis(nested_cnn, None) == list(BUDGETS)
    space = sweep.design_space(["cortex-m7"], quantize=["int8"], patch=["off"],
                               budgets=sweep.budget_axis(nested_cnn, "0.25,1"))
    assert [c.budget for c in space] == [0.25, 1.0] and "budget=0.25" in space[0].key
    with pytest.raises(UsageError, match="operating points 0.25, 0.5, 1"):
        sweep.budget_axis(nested_cnn, "0.3")
    with pytest.raises(UsageError, match="no operating points"):
        sweep.budget_axis(Model.load("digits-cnn"), "0.5")
    # one trial as a Ray worker runs it, from the .pt2 a user would sweep: the point built alone, measured
    path = loaders.save_pt2(nested_cnn, tmp_path / "nested.pt2")
    record = sweep.run_trial(str(path), space[0], str(tmp_path / "trial"))
    assert record["status"] == "ok", record["error"]
    assert record["metrics"]["accuracy"] is not None and record["sources"]["instructions"] == "measured"


def test_a_converted_example_keeps_its_data(nested_cnn, tmp_path):
    from edgekit import loaders

    loaded = Model.load(loaders.save_pt2(nested_cnn, tmp_path / "n.pt2"))
    example = Model.load("digits-cnn")
    assert loaded.meta["data_from"] == "example:digits-cnn"
    assert np.array_equal(loaded.calib, example.calib) and np.array_equal(loaded.test_y, example.test_y)


def test_extra_points_cost_little_flash(nested_cnn, image, tmp_path):
    """The narrower points are tables of calls over the widest point's weights and parameter structs: the image
    stays within 10 % of the flash of the widest point built alone (issue 18's goal)."""
    from edgekit.converters.nested import operating_point

    out, rep = image
    alone = tmp_path / "alone"
    api.compile(operating_point(nested_cnn, -1), "cortex-m7", alone, quantize="int8", extra={"test_inputs": 24})
    alone_flash = json.loads((alone / "report.json").read_text())["build"]["model_flash_bytes"]
    assert rep["build"]["model_flash_bytes"] <= 1.10 * alone_flash


def test_residual_adds_and_depthwise_layers_run_bit_exact(tmp_path):
    import torch
    from torch import nn

    from edgekit.converters.nested import nest

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU())
            self.dw = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1, groups=16), nn.ReLU(), nn.Conv2d(16, 16, 1))
            self.fc = nn.Linear(16, 5)

        def forward(self, x):
            y = self.stem(x)
            y = y + self.dw(y)
            return self.fc(y.mean((2, 3)))

    torch.manual_seed(0)
    calib = np.random.RandomState(0).randn(32, 3, 12, 12).astype(np.float32)
    m = Model.from_module(Block().eval(), torch.randn(1, 3, 12, 12), calib=calib)
    # the narrower point with its own per-channel weight scales and bias offsets ("affine"): the same int8 weights
    # with its own weight scales, so its conv, depthwise and linear calls still read the widest point's arrays
    labels = np.random.RandomState(1).randint(0, 5, len(calib))
    nested = nest(m, (0.5, 1.0), settings=TrainSettings(epochs=2, batch_size=8, lr=1e-2), dataset=(calib, labels),
                  progress=False, private="affine")
    assert "scale" in nested.meta["nested"]["operating_points"][0]["private"]["dw.0"]
    out = tmp_path / "res"
    api.compile(nested, "cortex-m7", out, quantize="int8", extra={"test_inputs": 4})
    rep = api.profile(out).report
    points = rep["measured"]["operating_points"]
    assert [p["budget"] for p in points] == [0.5, 1.0]
    assert all(p["outputs_match"] and p["max_abs_err_lsb"] == 0 for p in points)
    narrow = rep["build"]["operating_points"][0]
    assert narrow["copied_layers"] == [] and narrow["shared_weight_bytes"] > 0
