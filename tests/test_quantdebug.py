"""The quantization debugger: per-layer SQNR alone and accumulated, the collapse layer, its cause and advice."""
import json

import numpy as np
import torch
from torch import nn

import edgekit
from edgekit import quantdebug


def test_healthy_model_does_not_collapse():
    m = edgekit.Model.load("digits-cnn")
    d = quantdebug.debug(m, m.test_x[:64])
    assert d.collapse is None and d.output_sqnr_db > 25
    assert [r.layer for r in d.layers][0] == "x" and d.layers[-1].layer == "classifier"
    assert all(r.sqnr_alone_db is not None and r.sqnr_alone_db > 25 for r in d.layers)


def test_dying_layer_is_found_with_its_cause():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                        nn.Flatten(), nn.Linear(8 * 8 * 8, 4))
    with torch.no_grad():  # the second conv's output dies: weights and bias ~1e-12
        net[2].weight.mul_(1e-12)
        net[2].bias.mul_(1e-12)
    x = np.random.default_rng(0).random((32, 1, 8, 8)).astype(np.float32)
    m = edgekit.Model.from_module(net, torch.from_numpy(x[:1]), calib=x)
    d = quantdebug.debug(m, x)
    bad = next(r for r in d.layers if r.layer == d.collapse)
    assert "dead range" in bad.flags and d.cause == "dead range" and "BatchNorm" in d.advice


def test_cli_points_at_the_input_when_calibration_is_far_too_wide(tmp_path, capsys):
    from edgekit.cli import main

    calib = np.full((8, 1, 8, 8), 1000.0, np.float32)
    np.save(tmp_path / "calib.npy", calib)
    assert main(["analyze", "digits-cnn", "--quantize", "int8", "--calib", str(tmp_path / "calib.npy"),
                 "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["collapse_layer"] == "x" and d["cause"] == "range too wide"
    assert main(["analyze", "digits-cnn", "--quantize", "int4"]) == 2
