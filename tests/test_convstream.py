"""Conv models over a time axis streamed frame by frame with per-layer caches (edgekit/convstream.py,
converters/streaming.py, targets/mcu/convstep.py).

What a user relies on:

* a causal conv model (time padding kernel - 1 and a crop keeping the first frames, time strides, dilation, depthwise,
  a residual add, max pooling over time, a global pool) steps frame by frame from the initial state to the windowed
  model's output after the window's last frame: float within 1e-4, int8 bit for bit (host integer reference)
* the step function exports to ONNX with the caches as inputs and outputs, and ONNX Runtime gives the same outputs;
  ``--streaming`` on phone-arm64 builds that ONNX (float32) and the runtime steps every test window through it
* on the emulated Cortex-M7 (``--streaming``) the step program's outputs after each window's last frame equal the
  *windowed* model's integer reference bit for bit (int8) and PyTorch's (float32); caches are state, reset works
* a model that looks ahead ('same' time padding) streams with that latency, and edgekit_model_flush() (the host's
  StreamRunner.flush) ends a window as the windowed model does: the same outputs, int8 bit for bit, on the M7
* a model that mixes time steps, crops a look-ahead, or has no pool over time is refused with the layer named

The firmware tests need the cross-compiler and QEMU (scripts/setup.sh installs them); they run in CI.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from edgekit import Model, api, convstream
from edgekit.converters import to_streaming
from edgekit.converters.quantize import quantize
from edgekit.errors import UnsupportedError, UsageError
from edgekit.qgraph import lower, run_int8

FRAMES, BINS, CHANNELS = 16, 6, 2


class CausalNet(nn.Module):
    """Causal in time: conv 3x3 (pad 2, crop), depthwise with time stride 2 (pad 2, crop), 1x1, a dilated causal
    branch added back, max pool over 2 frames (stride 2), global average pool, linear."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(CHANNELS, 8, 3, padding=(2, 1))
        self.dw = nn.Conv2d(8, 8, 3, stride=(2, 1), padding=(2, 1), groups=8)
        self.bn = nn.BatchNorm2d(8)
        self.pw = nn.Conv2d(8, 8, 1)
        self.dil = nn.Conv2d(8, 8, (3, 1), padding=(4, 0), dilation=(2, 1))
        self.pool = nn.MaxPool2d((2, 1), stride=(2, 1))
        self.head = nn.Linear(8, 5)

    def forward(self, x):
        y = torch.relu(self.c1(x))[:, :, :FRAMES]
        y = torch.relu(self.bn(self.dw(y)))[:, :, :FRAMES // 2]
        y = torch.relu(self.pw(y))
        y = y + torch.relu(self.dil(y))[:, :, :FRAMES // 2]
        y = nn.functional.adaptive_avg_pool2d(self.pool(y), 1).flatten(1)
        return self.head(y)


def _model(n: int = 12) -> Model:
    torch.manual_seed(0)
    module = CausalNet().eval()
    with torch.no_grad():
        module.bn.running_mean.uniform_(-0.3, 0.3)
        module.bn.running_var.uniform_(0.5, 1.5)
    x = np.random.default_rng(0).standard_normal((n, CHANNELS, FRAMES, BINS)).astype(np.float32)
    return Model.from_module(module, torch.from_numpy(x[:1]), name="causalnet", calib=x, test_x=x)


@pytest.fixture(scope="module")
def model() -> Model:
    return _model()


def test_plan_caches_strides_and_fire_frame(model):
    sp = convstream.plan(model.deploy_graph)
    rows = {c.layer: (c.rows, c.period, c.wait) for c in sp.caches.values()}
    assert rows == {"c1": (3, 1, 0), "dw": (3, 2, 0), "dil": (5, 1, 0), "pool": (2, 2, 1)}
    assert sp.causal and sp.hop_frames == 4
    assert sp.fire_frame == 14  # the last pooled row: frames 12 .. 15 of the dw rows 6, 7 -> complete at frame 14


def test_float_and_onnx_steps_equal_the_windowed_model(model, tmp_path):
    import onnxruntime as ort

    stream = to_streaming(model)
    assert stream.max_abs_error <= 1e-4
    x = model.test_x[:4]
    sess = ort.InferenceSession(str(stream.export(tmp_path / "step.onnx")))
    names = [i.name for i in sess.get_inputs()]
    assert names == ["frame"] + stream.state_names
    ys = []
    for one in x[:, None]:  # the exported step takes one stream (batch 1), as a phone runs it
        state = [t.numpy() for t in stream.initial_state(1)]
        for t in range(FRAMES):
            y, *state = sess.run(None, dict(zip(names, [one[:, :, t:t + 1]] + state)))
        ys.append(y[0])
    np.testing.assert_allclose(np.stack(ys), model.predict(x), atol=1e-4)


def test_int8_steps_equal_the_windowed_integer_reference(model):
    qm = quantize(model)
    qg = lower(qm.deploy_graph, qm.meta["quant"])
    xq = qg.quantize_input(model.test_x)
    expected = run_int8(qg, xq)[qg.graph.outputs[0]]
    got = convstream.StreamRunner(convstream.plan(qm.deploy_graph), qg).run(xq)
    assert np.array_equal(got, expected)


def _ahead() -> Model:
    """'same' padding in time (each conv sees a frame ahead), a time stride, no crop: streams with a look-ahead."""
    torch.manual_seed(0)
    same = nn.Sequential(nn.Conv2d(CHANNELS, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=(2, 1), padding=1,
                                                                                   groups=8),
                         nn.ReLU(), nn.Conv2d(8, 8, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5))
    x = np.random.default_rng(2).standard_normal((8, CHANNELS, FRAMES, BINS)).astype(np.float32)
    return Model.from_module(same.eval(), torch.from_numpy(x[:1]), name="ahead", calib=x, test_x=x)


@pytest.mark.parametrize("quantize", ["int8", None])
def test_a_model_that_looks_ahead_streams_and_its_flush_ends_the_window(tmp_path, quantize):
    ahead = _ahead()
    sp = convstream.plan(ahead.deploy_graph)
    assert sp.lookahead_frames == 1 and not sp.causal  # the last row of the strided conv needs frame 16
    assert to_streaming(ahead).max_abs_error <= 1e-4  # host: the frames, then the flush
    out = tmp_path / "m7"
    art = api.compile(ahead, "cortex-m7", out, quantize=quantize, streaming=True)
    assert "edgekit_model_flush" in (out / "src/edgekit_model.h").read_text()
    assert any("looks 1 frame(s) ahead" in n for n in art.report["notes"])
    measured = api.profile(out).report["measured"]
    assert measured["outputs_match"]  # the windowed model's outputs (int8: bit for bit) after frames + flush
    if quantize is None:  # the phone's step takes pad_into: the flush ends each window there too
        art = api.compile(ahead, "phone-arm64", tmp_path / "phone", streaming=True)
        assert art.report["build"]["stream"]["flush_steps"] == [0, 1]
        assert api.profile(tmp_path / "phone", repeat=3).report["measured"]["max_abs_err"] <= 1e-4


def test_time_mixing_and_lookahead_with_a_crop_are_refused_with_the_layer_named(model):
    class AheadCrop(nn.Module):
        def __init__(self):
            super().__init__()
            self.c = nn.Conv2d(CHANNELS, 4, 3, padding=1)
            self.d = nn.Conv2d(4, 4, 3, padding=2)

        def forward(self, x):
            y = torch.relu(self.d(torch.relu(self.c(x))))[:, :, :FRAMES]
            return nn.functional.adaptive_avg_pool2d(y, 1).flatten(1)

    torch.manual_seed(0)
    crop = Model.from_module(AheadCrop().eval(), torch.zeros(1, CHANNELS, FRAMES, BINS))
    with pytest.raises(UnsupportedError, match=r"looks 1 frame\(s\) ahead and crops time at 'getitem'"):
        to_streaming(crop)

    class Flat(nn.Module):
        def __init__(self):
            super().__init__()
            self.c = nn.Conv2d(1, 4, (3, 1), padding=(2, 0))
            self.fc = nn.Linear(4 * 8 * 3, 2)

        def forward(self, x):
            return self.fc(torch.relu(self.c(x))[:, :, :8].flatten(1))

    flat = Model.from_module(Flat().eval(), torch.zeros(1, 1, 8, 3))
    with pytest.raises(UnsupportedError, match=r"layer 'flatten' \(reshape\) reads .* across time"):
        to_streaming(flat)


def test_phone_builds_the_step_with_explicit_state_and_runs_it_frame_by_frame(model, tmp_path):
    out = tmp_path / "phone"
    art = api.compile(model, "phone-arm64", out, streaming=True)
    assert art.report["build"]["stream"]["hop_frames"] == 4 and art.report["build"]["input_name"] == "frame"
    measured = api.profile(out, repeat=3).report["measured"]
    assert measured["max_abs_err"] <= 1e-4 and measured["top1_agreement"] == 1.0  # the windowed model's outputs
    assert measured["frames"] == FRAMES and measured["latency_per_frame_ms"] > 0
    with pytest.raises(UsageError, match="--streaming on phone-arm64 builds the step function in float32"):
        api.compile(model, "phone-arm64", tmp_path / "int8", quantize="int8", streaming=True)
    assert not (tmp_path / "int8").exists()


def test_streaming_is_refused_for_a_target_without_step_programs(model, tmp_path):
    with pytest.raises(UsageError, match="--streaming builds step programs for .*cortex-m7"):
        api.compile(model, "loihi2", tmp_path / "out", streaming=True)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("dtype", ["int8", "float32"])
def test_firmware_streams_to_the_windowed_outputs(model, tmp_path, dtype):
    out = tmp_path / dtype
    art = api.compile(model, "cortex-m7", out, quantize="int8" if dtype == "int8" else None, streaming=True)
    build = art.report["build"]
    assert build["streaming"]["conv_stream"]["hop_frames"] == 4
    assert build["state_bytes"] == art.report["estimate"]["state_bytes"] > 0
    measured = api.profile(out).report["measured"]
    assert measured["outputs_match"], measured.get("mismatched_outputs")
    assert measured["state_bytes"] == build["state_bytes"]
    assert measured["steps_per_sequence"] == FRAMES
    # guarded layers run on a fraction of the frames: the cheapest step is well below the dearest
    assert measured["instructions_per_step_min"] * 2 < measured["instructions_per_step_max"]
    if dtype == "int8":
        assert measured["fidelity"]["top1_agreement"] >= 0.9


def test_firmware_runs_a_long_stream_like_the_host_reference(model, tmp_path):
    """Past the first window the caches hold real history: the firmware over a 3-window stream, one reset, gives
    after every frame what the host's integer step reference gives (bit for bit)."""
    from edgekit.runtimes import mcu

    out = tmp_path / "int8"
    api.compile(model, "cortex-m7", out, quantize="int8", streaming=True)
    rng = np.random.default_rng(5)
    frames = rng.standard_normal((3 * FRAMES, CHANNELS, BINS)).astype(np.float32)
    run = mcu.stream(out, frames)
    assert run["outputs"].shape == (3 * FRAMES, 5) and len(run["instructions"]) == 3 * FRAMES

    qm = quantize(model)
    qg = lower(qm.deploy_graph, qm.meta["quant"])
    ref = np.load(out / "reference.npz")
    runner = convstream.StreamRunner(convstream.plan(qm.deploy_graph), qg)
    runner.reset(1)
    expected = []
    for f in frames:
        runner.step(qg.quantize_input(f[None, :, None, :]))
        last = runner.output if runner.output is not None else np.zeros((1, 5), np.int8)  # (the harness's buffer)
        expected.append((last[0].astype(np.float32) - float(ref["out_zp"])) * float(ref["out_scale"]))
    np.testing.assert_array_equal(run["outputs"], np.stack(expected))


def test_stream_features_are_the_clip_front_end():
    from edgekit import speech

    clip = np.random.default_rng(0).standard_normal(speech.CLIP_SAMPLES).astype(np.float32) * 0.1
    np.testing.assert_allclose(speech.stream_features(clip), speech.features(clip[None])[0], atol=1e-5)
    wave, script = speech.make_stream(6.0, seed=1)
    again, script2 = speech.make_stream(6.0, seed=1)
    assert np.array_equal(wave, again) and script == script2 and len(script) >= 1
    assert all(0 <= w.start_s < w.end_s <= 6.0 for w in script)
    assert speech.stream_features(wave).shape == (1 + (len(wave) - speech.FRAME_SAMPLES) // speech.HOP_SAMPLES, 10)


class _PaddedTCN(nn.Module):
    """A causal TCN as sequence models often write it: F.pad(x, ((k - 1)·d, 0)) before each Conv1d without padding,
    and one pad on both sides (1, 2) — a look-ahead of two frames."""

    def __init__(self):
        super().__init__()
        self.c1, self.c2 = nn.Conv1d(6, 8, 3), nn.Conv1d(8, 8, 3, dilation=2)
        self.c3, self.head = nn.Conv1d(8, 8, 4), nn.Linear(8, 5)

    def forward(self, x):
        y = torch.relu(self.c1(nn.functional.pad(x, (2, 0))))
        y = torch.relu(self.c2(nn.functional.pad(y, (4, 0))))
        y = torch.relu(self.c3(nn.functional.pad(y, (1, 2))))
        return self.head(y.mean(-1))


def test_zero_pads_before_time_convs_stream_as_their_caches(tmp_path):
    """A zero pad of the time axis before a conv is folded into that conv's cache (left frames as its initial rows,
    right ones pushed by the flush): float steps equal the windowed model, int8 steps its integer reference bit for
    bit, and on the emulated M7 the step program's outputs equal the windowed reference."""
    torch.manual_seed(3)
    x = np.random.default_rng(3).standard_normal((8, 6, 24)).astype(np.float32)
    m = Model.from_module(_PaddedTCN().eval(), torch.from_numpy(x[:1]), name="padded-tcn", calib=x, test_x=x)
    sp = convstream.plan(m.deploy_graph)
    assert {c.layer: (c.wait, c.flush_rows) for c in sp.caches.values()} == {"c1": (0, 0), "c2": (0, 0),
                                                                            "c3": (2, 2)}
    assert to_streaming(m).max_abs_error <= 1e-4
    qm = quantize(m)
    qg = lower(qm.deploy_graph, qm.meta["quant"])
    xq = qg.quantize_input(m.test_x)
    runner = convstream.StreamRunner(convstream.plan(qm.deploy_graph), qg)
    assert np.array_equal(runner.run(xq), run_int8(qg, xq)[qg.graph.outputs[0]])
    api.compile(m, "cortex-m7", tmp_path / "out", quantize="int8", streaming=True)
    meas = api.profile(tmp_path / "out").measured
    assert meas["outputs_match"] and meas["max_abs_err_lsb"] == 0


def test_conv_stream_steady_state_starts_when_every_call_has_run():
    """runtimes/mcu._steady_from: the first step by which every call that ever runs has run, over whole 4-step
    spans; a call its guard skips costs a few instructions."""
    from edgekit.runtimes.mcu import SKIPPED_CALL_INSTRUCTIONS, _steady_from

    n, T = 2, 15
    per_call = np.full((n, T, 3), 5)
    per_call[:, :, 0] = 400                  # a cache push, every step
    per_call[:, 3::2, 1] = 9000              # a layer after a time stride, from step 3
    per_call[1, 6::2, 2] = 7000              # a deeper one, from step 6 (seen in the second sequence only)
    assert SKIPPED_CALL_INSTRUCTIONS > 5
    assert _steady_from(per_call) == (6, 14)
    assert _steady_from(per_call[:, :9]) is None  # 3 steps left: no whole span
