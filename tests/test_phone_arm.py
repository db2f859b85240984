"""The phone target on emulated Arm cores (targets/phone/arm64.py and mixed.py): exact instruction counts of
ONNX Runtime's aarch64 build under qemu-aarch64, int8 only where it pays, the profile's Arm figures.

Needs qemu-user and the arm64 userland, which scripts/setup.sh installs (so these run in CI)."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnx
import pytest

from edgekit import api
from edgekit.errors import ToolchainError
from edgekit.targets.phone import arm64
from edgekit.targets.phone import mixed
from edgekit.targets.profiles import get_profile

TARGET = "phone-arm64"


def _conv_model(path, channels=16, size=16):
    """A float conv net (two 3x3 convs with ReLU) as ONNX."""
    rng = np.random.default_rng(0)
    w1 = onnx.numpy_helper.from_array(rng.standard_normal((channels, 3, 3, 3)).astype(np.float32) * 0.2, "w1")
    w2 = onnx.numpy_helper.from_array(rng.standard_normal((channels, channels, 3, 3)).astype(np.float32) * 0.1, "w2")
    nodes = [onnx.helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]),
             onnx.helper.make_node("Relu", ["c1"], ["r1"]),
             onnx.helper.make_node("Conv", ["r1", "w2"], ["y"], pads=[1, 1, 1, 1])]
    g = onnx.helper.make_graph(nodes, "convnet",
                               [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 3, size, size])],
                               [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT,
                                                                   [1, channels, size, size])], [w1, w2])
    onnx.save(onnx.helper.make_model(g, opset_imports=[onnx.helper.make_opsetid("", 17)]), str(path))
    return path


def test_set_up_made_the_userland():
    assert arm64.available(), "scripts/setup.sh makes the emulated arm64 userland; run it"


def test_marks_count_instructions_and_the_count_grows_with_the_work(tmp_path):
    core = arm64.ArmCore.of(get_profile(TARGET))
    script = """
from ekmark import mark
total = 0
for n in (1000, 10000):
    mark(1)
    for i in range(n):
        total += i
    mark(2)
print(total)
"""
    run = arm64.run_python(core, script, [], tmp_path)
    assert run.stdout.strip() == str(sum(range(1000)) + sum(range(10000)))
    small, large = run.between(1, 2)
    assert 0 < small < large and 5 < large / small < 20   # ten times the loop, ten times the instructions (roughly)
    assert run.total > large


def test_int8_kernels_differ_by_core_and_float_does_not(tmp_path):
    """ONNX Runtime picks its int8 kernels by core (SMULL/SMLAL on the A53, UDOT on the A76); float32 runs the same
    NEON kernels on both: the emulated cores must show that."""
    from edgekit.targets.phone.quantize import quantize_int8

    f32 = _conv_model(tmp_path / "f.onnx")
    i8 = tmp_path / "q.onnx"
    quantize_int8(f32, i8, "x", np.random.default_rng(1).standard_normal((8, 3, 16, 16)).astype(np.float32), 1)
    counts = {}
    for core in ("phone-arm64", "phone-a53"):
        work = tmp_path / core
        work.mkdir()
        counts[core] = mixed.count_models(arm64.ArmCore.of(get_profile(core)), [(f32, None), (i8, None)], work)
    (a76_f, a76_q), (a53_f, a53_q) = counts["phone-arm64"], counts["phone-a53"]
    assert abs(a76_f - a53_f) / a76_f < 0.05
    assert a76_q < 0.8 * a53_q           # dot-product kernels on the A76
    assert a76_q < a76_f                 # int8 pays on this conv net


def test_compile_keeps_int8_only_where_it_pays_and_profile_counts_the_shipped_model(tmp_path):
    art = api.compile("digits-cnn", TARGET, tmp_path / "out", quantize="int8")
    q = art.report["build"]["quantization"]
    choice = q["mixed"]
    assert choice["core"] == TARGET and choice["layers"]
    for row in choice["layers"]:
        assert row["int8"] > 0 and row["float32"] > 0
        pays = mixed.clearly_fewer(row["float32"], row["int8"]) and row["op"] not in mixed.INT8_ANYWAY
        assert row["dtype"] == ("float32" if pays else "int8")
        assert 0 < row["edges"] <= row["float32"]  # the Q/DQ a float layer adds, counted alone (a tiny pool: ~all)
    # a MaxPool is never kept float: ONNX Runtime would drop the equal-scale Q/DQ pair around it and run it int8
    assert any(r["op"] == "MaxPool" and r["dtype"] == "int8" for r in choice["layers"])
    assert set(choice["excluded"]) == {r["node"] for r in choice["layers"] if r["dtype"] == "float32"}
    whole = choice["whole"]
    assert whole[choice["shipped"]] <= whole["float32"]       # never more instructions than float32
    assert whole[choice["shipped"]] <= min(whole.values()) / (1 - mixed.MARGIN)
    assert any("int8 where it pays" in n for n in art.report["notes"])

    m = api.profile(art.path, repeat=3).measured
    arm = m["arm"]
    profile = get_profile(TARGET)
    assert m["instructions"] == arm["instructions"] > 0
    assert m["latency_ms"] == pytest.approx(arm["instructions"] * profile.number("cost", "cpi") /
                                            profile.clock_hz.value * 1e3)
    assert m["host_latency_ms"] > 0                             # the host's wall clock stays, as a second figure
    # the shipped model.ort on the emulated A76 computes what x86 ONNX Runtime computes
    assert arm["artifact"] == "model.ort" and arm["top1_agreement_vs_host"] == 1.0
    assert arm["top1_agreement"] >= 0.95
    # the count of the shipped artifact is close to what the compile measured for the chosen model
    assert abs(arm["instructions"] - whole[choice["shipped"]]) / whole[choice["shipped"]] < 0.15


def test_int8_layers_all_quantizes_everything(tmp_path):
    art = api.compile("digits-cnn", TARGET, tmp_path / "out", quantize="int8", int8_layers="all")
    assert art.report["build"]["quantization"]["mixed"] is None
    assert art.report["build"]["quantized"]


def test_cli_int8_layers_takes_auto_or_all(tmp_path):
    r = subprocess.run([sys.executable, "-m", "edgekit.cli", "compile", "digits-cnn", "-t", TARGET, "--quantize",
                        "int8", "--int8-layers", "some", "-o", str(tmp_path / "out")], capture_output=True, text=True)
    assert r.returncode != 0 and "--int8-layers some: give auto or all" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "out").exists()


def test_a_core_without_emulator_settings_is_refused_in_one_line():
    with pytest.raises(ToolchainError, match="cortex-m7.*no \\[board\\] qemu_cpu"):
        arm64.ArmCore.of(get_profile("cortex-m7"))


def test_failing_guest_script_is_one_error_line(tmp_path):
    core = arm64.ArmCore.of(get_profile(TARGET))
    with pytest.raises(ToolchainError, match="emulated phone-arm64 .* run failed: .*ZeroDivisionError"):
        arm64.run_python(core, "1 / 0\n", [], tmp_path, count=False)


def test_fidelity_rounds_keep_the_worst_layers_float_and_never_ship_a_slower_model_for_nothing(tmp_path,
                                                                                                 monkeypatch):
    """Bounds no int8 model can meet: the rounds rank the layers by their loss and try them float, and when no round
    brings the model within the bounds the fastest int8 model stays (the note says so)."""
    from edgekit import fidelity

    calls = []
    real = mixed.damage

    def spy(*a, **k):
        calls.append(real(*a, **k))
        return calls[-1]

    monkeypatch.setattr(fidelity, "MIN_SQNR_DB", 500.0)
    monkeypatch.setattr(mixed, "damage", spy)
    art = api.compile("digits-cnn", TARGET, tmp_path / "out", quantize="int8")
    assert calls and all(isinstance(v, float) for v in calls[0].values())
    choice = art.report["build"]["quantization"]["mixed"]
    assert not any(k.startswith("fidelity") for k in choice["whole"])     # no slower model was counted or shipped
    assert choice["whole"][choice["shipped"]] <= choice["whole"]["float32"]
    assert any("stays outside the bounds" in n for n in art.report["notes"])


def test_compacted_int8_file_is_smaller_and_runs_the_same_kernels(tmp_path):
    """The shipped int8 file loses long names, bias zero points and the stored bias scales (a Mul of the scales
    it holds anyway), not speed or a bit of any output: on a depthwise model (whose symmetric int8 kernels ONNX
    Runtime takes only with the weights' zero points) the A76 count stays within 1 %."""
    import onnxruntime as ort
    from onnxruntime.tools.ort_format_model.ort_flatbuffers_py.fbs import InferenceSession

    from edgekit.targets.phone import _write_ort_format
    from edgekit.targets.phone.export import compact_names, derived_bias_scales
    from edgekit.targets.phone.quantize import quantize_int8

    rng = np.random.default_rng(0)
    c = 32
    inits = [onnx.numpy_helper.from_array(rng.standard_normal((c, 3, 3, 3)).astype(np.float32) * 0.2, "w1"),
             onnx.numpy_helper.from_array(rng.standard_normal((c, 1, 3, 3)).astype(np.float32) * 0.3, "dw"),
             onnx.numpy_helper.from_array(rng.standard_normal(c).astype(np.float32) * 0.1, "b")]
    nodes = [onnx.helper.make_node("Conv", ["x", "w1", "b"], ["c1"], pads=[1, 1, 1, 1]),
             onnx.helper.make_node("Relu", ["c1"], ["r1"]),
             onnx.helper.make_node("Conv", ["r1", "dw", "b"], ["y"], pads=[1, 1, 1, 1], group=c)]
    g = onnx.helper.make_graph(nodes, "dwnet",
                               [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 3, 24, 24])],
                               [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, c, 24, 24])], inits)
    f32 = tmp_path / "f.onnx"
    onnx.save(onnx.helper.make_model(g, opset_imports=[onnx.helper.make_opsetid("", 17)]), str(f32))
    q = tmp_path / "q.onnx"
    quantize_int8(f32, q, "x", rng.standard_normal((8, 3, 24, 24)).astype(np.float32), 1, activations="int8")
    small = tmp_path / "c.onnx"
    proto = compact_names(onnx.load(str(q)), set())
    zero_points = [t for t in proto.graph.initializer if t.data_type == onnx.TensorProto.INT8 and list(t.dims) == [c]
                   and not onnx.numpy_helper.to_array(t).any()]
    assert len(zero_points) == 1  # the two layers' all-zero weight zero points, stored once
    assert derived_bias_scales(proto) >= 4 * c  # a bias scale that is x scale times the weight scales, bit for bit
    onnx.save(proto, str(small))
    assert small.stat().st_size < q.stat().st_size
    x = rng.standard_normal((1, 3, 24, 24)).astype(np.float32)
    for level in (ort.GraphOptimizationLevel.ORT_DISABLE_ALL, ort.GraphOptimizationLevel.ORT_ENABLE_ALL):
        so = ort.SessionOptions()
        so.graph_optimization_level = level
        a, b = (ort.InferenceSession(str(f), so, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
                for f in (q, small))
        assert np.array_equal(a, b)
    work = tmp_path / "w"
    work.mkdir()
    full, compact = mixed.count_models(arm64.ArmCore.of(get_profile(TARGET)), [(q, None), (small, None)], work)
    assert abs(compact - full) / full < 0.01
    # model.ort is written from the optimized graph: every NodeArg it keeps is a tensor of that graph
    out = tmp_path / "ort"
    out.mkdir()
    _write_ort_format(small, out, tmp_path / "conv")
    graph = InferenceSession.InferenceSession.GetRootAsInferenceSession((out / "model.ort").read_bytes(), 0).Model() \
        .Graph()
    nodes = [graph.Nodes(i) for i in range(graph.NodesLength())]
    used = {n.Inputs(j) for n in nodes for j in range(n.InputsLength())} | \
        {n.Outputs(j) for n in nodes for j in range(n.OutputsLength())}
    assert {graph.NodeArgs(i).Name() for i in range(graph.NodeArgsLength())} <= used


def test_phone_estimate_counts_arm_instructions_and_latency_follows_from_them():
    """phone-arm64 carries an Arm instruction model fitted to its emulated core (bench/phone.py --calibrate):
    the estimate gives instructions per layer and in total, and latency = instructions x CPI / clock."""
    profile = get_profile(TARGET)
    for quantize in (None, "int8"):
        est, _, _ = api.estimate("digits-cnn", TARGET, quantize=quantize)
        assert est.instructions and est.instructions > 0
        assert sum(lay["instructions"] for lay in est.layers) <= est.instructions
        assert est.latency_ms == pytest.approx(est.instructions * profile.number("cost", "cpi")
                                               / profile.clock_hz.value * 1e3)
    f32, _, _ = api.estimate("mbv2-w035", TARGET)
    i8, _, _ = api.estimate("mbv2-w035", TARGET, quantize="int8")
    assert i8.instructions < f32.instructions / 1.5   # int8 convs on the A76 (UDOT) against NEON FMLA


def test_quantized_input_takes_int8_codes_channels_last_and_computes_the_same(tmp_path):
    """--input-format quantized: the shipped model takes its first QuantizeLinear's codes, channels last (its
    QuantizeLinear gone, a Transpose ONNX Runtime cancels against its own layout move); the profile feeds the test
    inputs encoded the same way, so the outputs are those of the float-input build, and the emulated core runs fewer
    instructions; the app snippets fill a byte tensor."""
    plain = api.compile("digits-cnn", TARGET, tmp_path / "float", quantize="int8", int8_layers="all")
    art = api.compile("digits-cnn", TARGET, tmp_path / "codes", quantize="int8", int8_layers="all",
                      input_format="quantized")
    enc = art.report["build"]["input_encoding"]
    assert enc["layout"] == "NHWC" and enc["dtype"] in ("int8", "uint8") and enc["scale"] > 0
    m = onnx.load(str(tmp_path / "codes" / "model.onnx"))
    x = m.graph.input[0].type.tensor_type
    assert x.elem_type == onnx.helper.np_dtype_to_tensor_dtype(np.dtype(enc["dtype"]))
    assert [d.dim_value for d in x.shape.dim][1:] == [8, 8, 1]            # digits: 1x8x8 as NHWC
    readers = [n.op_type for n in m.graph.node if m.graph.input[0].name in n.input]
    assert readers == ["Transpose"]                                       # no QuantizeLinear of the input left
    assert "ByteBuffer.wrap(codes)" in art.report["build"]["app"]["Android (Kotlin, com.microsoft.onnxruntime:"
                                                                   "onnxruntime-android)"]
    a, b = api.profile(tmp_path / "float").measured, api.profile(tmp_path / "codes").measured
    assert b["max_abs_err"] == pytest.approx(a["max_abs_err"], abs=1e-6)   # the same codes, the same outputs
    assert b["top1_agreement"] == a["top1_agreement"]
    assert b["arm"]["instructions"] < a["arm"]["instructions"]


def test_quantized_input_is_refused_where_it_cannot_apply(tmp_path):
    with pytest.raises(Exception, match="only an int8 build takes its input quantized"):
        api.compile("digits-cnn", TARGET, tmp_path / "a", input_format="quantized")
    with pytest.raises(Exception, match="the phone targets take a quantized input"):
        api.compile("digits-cnn", "cortex-m7", tmp_path / "b", quantize="int8", input_format="quantized")
    r = subprocess.run([sys.executable, "-m", "edgekit.cli", "compile", "digits-cnn", "-t", TARGET, "--quantize",
                        "int8", "--input-format", "bytes", "-o", str(tmp_path / "c")], capture_output=True, text=True)
    assert r.returncode != 0 and "--input-format bytes: give float or quantized" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "c").exists()


def test_transposed_convs_ship_as_int8_phase_convs_where_that_pays(tmp_path):
    """A transposed conv's int8 model is built both ways, as ONNX Runtime's QDQ ConvTranspose and as edgekit's phase
    convs (Conv, DepthToSpace, Slice), and the one with fewer instructions on the emulated A76 ships: for zoo DCGAN's
    4x4 / stride-2 generator the phase convs, fewer instructions than the float32 export (which keeps its
    ConvTranspose: as phase convs it would cost more in float32)."""
    art = api.compile("zoo-dcgan", TARGET, tmp_path / "out", quantize="int8")
    ops = {n.op_type for n in onnx.load(str(tmp_path / "out" / "model.onnx")).graph.node}
    assert "ConvTranspose" not in ops and {"DepthToSpace", "Slice"} <= ops
    assert any(n.startswith("transposed convs as phase convs") for n in art.report["notes"])
    meas = api.profile(tmp_path / "out").measured
    assert meas["fidelity"]["ok"]
    f32 = api.compile("zoo-dcgan", TARGET, tmp_path / "f32")
    assert {n.op_type for n in onnx.load(str(tmp_path / "f32" / "model.onnx")).graph.node} >= {"ConvTranspose"}
    assert meas["instructions"] < api.profile(tmp_path / "f32").measured["instructions"]
