"""Recurrent models on Cortex-M as streaming step programs, built with arm-none-eabi-gcc and run under QEMU (M7).

What a user relies on:

* GRU, LSTM, LMU, EGRU (alone and read through its output trace), the state-space layers (S4D, the selective scan) and stacked layers build for cortex-m7 in float32 and int8 as ``edgekit_model_reset()`` +
  ``edgekit_model_step(x_t, y_t)``; run step by step over test sequences, the firmware's outputs equal the host
  reference (int8: bit for bit, edgekit/qrecurrent.py; float32: PyTorch within 1e-4 + 1e-4·|y|)
* the state is reported on its own (estimate, build, header, ELF and the running firmware agree) and reset works: the
  same sequence gives the same output wherever it comes in the test set
* the EGRU runs event-driven: the same weights with a higher threshold send fewer events and execute fewer
  instructions per step (measured), and the events counted on the device are the host reference's (int8)
* a model that mixes time steps in any other way is refused with the layer named

These tests need the cross-compiler and QEMU (scripts/setup.sh installs them); they run in CI.
"""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from torch import nn

from edgekit import Model, api
from edgekit.errors import UnsupportedError
from edgekit.layers import EGRU, LMU, S4D, EventTrace, SelectiveSSM
from edgekit.runtimes.mcu import parse_outputs
from edgekit.runtimes.qemu import run_elf

FEATURES, HIDDEN, STEPS, CLASSES, MEMORY, SSM_STATES = 3, 16, 16, 5, 6, 4


class Classifier(nn.Module):
    """Recurrent layers (stacked: each reads the previous one's outputs) and a linear head on the last step."""

    def __init__(self, rnns: list[nn.Module], final_state: bool = False):
        super().__init__()
        self.rnns = nn.ModuleList(rnns)
        self.head = nn.Linear(HIDDEN, CLASSES)
        self.final_state = final_state

    def forward(self, x):
        for rnn in self.rnns[:-1]:
            x = rnn(x)[0]
        if self.final_state:  # h_n, as nn.GRU returns it
            return self.head(self.rnns[-1](x)[1][0])
        return self.head(self.rnns[-1](x)[0][:, -1])


def _egru(threshold) -> EGRU:
    torch.manual_seed(1)
    egru = EGRU(FEATURES, HIDDEN, threshold=threshold)
    with torch.no_grad():  # a positive n-gate bias: units fire often at a low threshold
        egru.bias_ih[2 * HIDDEN:] += 0.3
    return egru


def _layers(kind: str) -> tuple[list[nn.Module], bool]:
    torch.manual_seed(0)
    if kind == "gru":
        return [nn.GRU(FEATURES, HIDDEN, batch_first=True)], True
    if kind == "lstm":
        return [nn.LSTM(FEATURES, HIDDEN, batch_first=True)], False
    if kind == "lmu":
        lmu = LMU(FEATURES, HIDDEN, MEMORY, theta=float(STEPS))
        with torch.no_grad():  # non-zero e_h, e_m: every term of u_t is used
            lmu.encoder_h.normal_(0, 0.3)
            lmu.encoder_m.normal_(0, 0.3)
        return [lmu], False
    if kind == "egru":
        return [_egru(np.linspace(0.02, 0.3, HIDDEN))], False
    if kind == "egru_trace":  # the head reads the low-pass trace of the events (EGRU classifiers' readout)
        return [_egru(np.linspace(0.02, 0.3, HIDDEN)), EventTrace(HIDDEN, 0.8)], True
    if kind == "s4d":
        return [S4D(FEATURES, HIDDEN, SSM_STATES)], False
    if kind == "selective":
        return [SelectiveSSM(FEATURES, HIDDEN, SSM_STATES)], False
    if kind == "stacked":
        return [nn.GRU(FEATURES, HIDDEN, batch_first=True), nn.LSTM(HIDDEN, HIDDEN, batch_first=True)], False
    raise ValueError(kind)


def _sequences(n: int = 6) -> np.ndarray:
    """``n`` random sequences; the last repeats the first, so reset is checked wherever a sequence comes."""
    x = np.random.default_rng(0).random((n, STEPS, FEATURES), dtype=np.float32)
    x[-1] = x[0]
    return x


def _model(module: nn.Module, name: str) -> Model:
    module = module.eval()
    x = _sequences()
    calib = np.random.default_rng(1).random((32, STEPS, FEATURES), dtype=np.float32)
    with torch.no_grad():
        y = module(torch.from_numpy(x)).argmax(-1).numpy()
    return Model.from_module(module, torch.from_numpy(x[:1]), name=name, calib=calib, test_x=x, test_y=y)


STATE_ELEMENTS = {"gru": HIDDEN, "lstm": 2 * HIDDEN, "lmu": HIDDEN + MEMORY, "egru": 2 * HIDDEN,
                  "egru_trace": 3 * HIDDEN,
                  "stacked": 3 * HIDDEN, "s4d": HIDDEN * (1 + SSM_STATES), "selective": HIDDEN * (1 + SSM_STATES)}
CASES = [(k, q) for k in ("gru", "lstm", "lmu", "egru", "egru_trace", "stacked", "s4d", "selective")
         for q in (None, "int8")]


@pytest.mark.parametrize("kind,quantize", CASES)
def test_step_program_runs_on_emulated_m7_and_matches_reference(tmp_path, kind, quantize):
    model = _model(Classifier(*_layers(kind)), kind)
    out = tmp_path / "out"
    art = api.compile(model, "cortex-m7", out, quantize=quantize)
    header = (out / "src/edgekit_model.h").read_text()
    assert "edgekit_model_reset(void)" in header and "edgekit_model_step(const edgekit_elem_t *x_t" in header
    state_bytes = STATE_ELEMENTS[kind] * (4 if quantize is None else 2)  # float32, or int16 state
    assert art.report["build"]["state_bytes"] == state_bytes
    assert art.report["estimate"]["state_bytes"] == state_bytes
    assert int(re.search(r"EDGEKIT_STATE_BYTES (\d+)u", header)[1]) == state_bytes
    assert art.report["build"]["elf_state_bytes"] == state_bytes  # ek_state in the ELF, outside the arena
    assert art.report["estimate"]["instructions_per_step"] > 0

    meas = api.profile(out).measured
    assert meas["outputs_match"], meas
    if quantize == "int8":
        assert meas["max_abs_err_lsb"] == 0
    else:
        assert meas["max_abs_err"] < 1e-4
    assert meas["accuracy"] == pytest.approx(meas["reference_accuracy"])
    assert meas["state_bytes"] == state_bytes
    assert meas["steps_per_sequence"] == STEPS
    assert meas["instructions_per_step_min"] <= meas["instructions_per_step"] <= meas["instructions_per_step_max"]
    assert meas["instructions"] >= STEPS * meas["instructions_per_step_min"]
    if kind.startswith("egru"):
        assert 0.0 < meas["activity_sparsity"] < 1.0
        if quantize == "int8":
            assert meas["events_match"]  # the device's events are the integer reference's
    else:
        assert "activity_sparsity" not in meas

    # Reset: the firmware resets before each sequence; the repeated first sequence, run last, gives the same bytes.
    run = run_elf(out / "firmware/firmware.elf", art.report["build"]["board"], count_instructions=False)
    got = parse_outputs(run.output, len(model.test_x), art.report["dtype"], (1, CLASSES))
    assert np.array_equal(got[0], got[-1])
    assert not np.array_equal(got[0], got[1])


@pytest.mark.parametrize("quantize", [None, "int8"])
def test_egru_instructions_per_step_fall_with_activity_sparsity(tmp_path, quantize):
    """Same weights, a higher threshold: fewer events, and the event-driven recurrent product does less work."""
    measured = {}
    for threshold in (0.02, 0.4):
        model = _model(Classifier([_egru(threshold)]), f"egru-{threshold}")
        out = tmp_path / f"egru-{threshold}"
        api.compile(model, "cortex-m7", out, quantize=quantize)
        measured[threshold] = api.profile(out).measured
        assert measured[threshold]["outputs_match"]
    low, high = measured[0.02], measured[0.4]
    assert high["activity_sparsity"] > low["activity_sparsity"] + 0.2
    assert high["instructions_per_step"] < low["instructions_per_step"]
    rec = {t: next(r for r in m["layers"] if r["name"] == "rnns.0") for t, m in measured.items()}
    assert rec[0.4]["instructions_per_step"] < rec[0.02]["instructions_per_step"]


def test_estimate_reports_state_and_instructions_per_step_without_building():
    model = _model(Classifier(*_layers("lstm")), "lstm")
    for quantize, bpe in ((None, 4), ("int8", 2)):
        est, fits, _ = api.estimate(model, "cortex-m4", quantize=quantize)
        assert est.state_bytes == 2 * HIDDEN * bpe
        assert est.instructions == STEPS * est.instructions_per_step
        assert est.peak_sram_bytes > est.arena_bytes + est.state_bytes and fits


class _FlattenAll(nn.Module):
    """A classifier on all steps at once: mixes time steps, so it is no step function."""

    def __init__(self):
        super().__init__()
        self.gru = nn.GRU(FEATURES, HIDDEN, batch_first=True)
        self.head = nn.Linear(HIDDEN * STEPS, CLASSES)

    def forward(self, x):
        return self.head(torch.flatten(self.gru(x)[0], 1))


class _PerStep(nn.Module):
    """A head on every step: the output is a sequence."""

    def __init__(self):
        super().__init__()
        self.gru = nn.GRU(FEATURES, HIDDEN, batch_first=True)
        self.head = nn.Linear(HIDDEN, CLASSES)

    def forward(self, x):
        return self.head(self.gru(x)[0])


@pytest.mark.parametrize("module, layer", [(_FlattenAll, "flatten"), (_PerStep, "head")])
def test_models_mixing_time_steps_are_refused_naming_the_layer(tmp_path, module, layer):
    torch.manual_seed(0)
    model = Model.from_module(module(), torch.zeros(1, STEPS, FEATURES), name=layer)
    with pytest.raises(UnsupportedError) as e:
        api.compile(model, "cortex-m7", tmp_path / "o")
    assert f"'{layer}" in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "o").exists()
