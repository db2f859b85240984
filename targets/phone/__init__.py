"""Phone target: a model as ONNX for ONNX Runtime on an ARM64 phone CPU (float32, or int8 in QDQ format).

Where it sits: targets/ (Model -> Artifact). ``build`` writes into OUT:

* ``model.onnx``    the deployable model, one self-contained file (float32, or QDQ int8: int8 weights with one scale
                    per output channel, uint8 activations; ONNX Runtime runs integer kernels for the Q/DQ pairs)
* ``model.ort``     the same model in ORT format for ONNX Runtime Mobile, optimized for ARM ("Fixed" style)
* ``required_operators.config``  the operators (per domain and opset) a reduced-size ORT build must include
                    (``build.py --minimal_build --include_ops_by_config required_operators.config``)
* ``testdata.npz``  ``x`` test inputs, ``y`` labels (when the model has them), ``reference`` float outputs of the
                    source model on ``x`` (what runtimes/onnxruntime.py compares against)

Steps: export (export.py) -> onnxslim -> onnx.checker -> every node checked against ONNX Runtime's CPU kernels (all
missing ones reported at once) -> float outputs checked against the source model -> optional int8 quantization
(quantize.py) -> ORT format conversion. A model loaded from an ``.onnx`` file skips the export.
"""
from __future__ import annotations

import dataclasses

import contextlib
import io
import json
import logging
import shutil
import tempfile
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import onnx

from edgekit.analysis import param_bytes_of
from edgekit.errors import MismatchError, ModelLoadError, UnsupportedError, UsageError
from edgekit.estimate import Estimate
from edgekit.targets import BuildResult, Capabilities, CompileOptions
from edgekit.targets.phone.cost import phone_estimate
from edgekit.targets.phone import export as _export
from edgekit.targets.phone.ort_format import canonical_ort
from edgekit.targets.phone.quantize import check_calibration, qdq_session, quantize_int8
from edgekit.targets.profiles import TargetProfile

FILES = ["model.onnx", "model.ort", "required_operators.config", "testdata.npz"]

# At most this many test inputs travel in testdata.npz (keeps OUT small for large test sets).
MAX_TEST_SAMPLES = 1024
# Float ONNX vs source model on the same inputs: exporters reproduce torch to ~1e-6; anything past this tolerance
# means the export changed the computation (e.g. TorchScript tracing froze an if/else).
FLOAT_TOLERANCE = 1e-3
FLOAT_CHECK_SAMPLES = 64


# The int8 models see transposed convs as phase convs (export.phase_conv_transposes), which ONNX Runtime's int8 conv
# kernels run; the float32 model keeps ConvTranspose (zoo DCGAN on the A76: float32 1.19 M instructions as
# ConvTranspose, 1.59 M as phase convs; int8 2.18 M as QDQ ConvTranspose, 0.89 M as phase convs). Tried the same way
# and not kept: grouped convs as dense ones with block-diagonal weights (one GEMM instead of one per group): zoo
# ShuffleNet's 4 groups of 8 channels, 91.7 k -> 81.6 k int8 instructions a layer on the A76, the model 1.08x ->
# 1.18x its float32 count, for a 1.28x larger file (the zeros) and its cost estimate +3 -> +12 %.
PHASE_CONV_TRANSPOSES = True

# Layers ONNX Runtime's static QDQ quantizer leaves in float32 (no QDQ int8 kernel): their weights stay 4 bytes.
FLOAT_IN_INT8 = {"gru", "lstm"}


def estimate(model, profile: TargetProfile, options: CompileOptions) -> Estimate:
    """The phone cost model (cost.py) on the deployment graph; for int8, recurrent layers keep float32 weights (see
    ``FLOAT_IN_INT8``)."""
    graph = model.deploy_graph
    if not options.quantize:
        return phone_estimate(graph, profile, "float32")
    float_weights = {n.name: param_bytes_of(n, 4) for n in graph.nodes if n.op in FLOAT_IN_INT8}
    return phone_estimate(graph, profile, "int8", weight_bytes=float_weights)


@dataclass
class PhoneBuild:
    """What a phone build learned (``report["build"]``); runtimes/onnxruntime.py reads it back with from_json."""

    onnx_bytes: int
    ort_bytes: int
    opset: int
    ops: list[str]
    quantized: bool
    quantization: dict | None
    exporter: str
    input_name: str
    output_name: str
    fixed_batch: int | None
    float_export_max_abs_err: float
    test_samples: int
    node_layers: dict[str, str] = field(default_factory=dict)
    stream: dict | None = None      # a conv model's streaming step (--streaming): the plan and the state inputs
    # A nested model (edgekit convert --budgets): the widest operating point is OUT's own model; each narrower one is
    # a separate model in OUT/op<k>/ (index, budget, folder, onnx_bytes, ort_bytes, estimate), narrowest first.
    operating_points: list[dict] | None = None
    app: dict[str, str] | None = None   # session creation in an app, per platform (the measured configuration)
    # --input-format quantized: the input as int8 codes (dtype, layout, shape, scale, zero_point); None: float
    input_encoding: dict | None = None

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> "PhoneBuild":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


@dataclass
class PhonePlan:
    model: object
    profile: TargetProfile
    options: CompileOptions
    estimate: Estimate


class PhoneTarget:
    """Phones: ONNX for ONNX Runtime (see the module docstring); measured by runtimes/onnxruntime.py."""

    backend = "phone"
    runtime = "edgekit.runtimes.onnxruntime"

    def capabilities(self, profile: TargetProfile) -> Capabilities:
        return Capabilities(dtypes=("float32", "int8"), streaming=True, memories=("sram", "flash"),
                            profile_options=("repeat",))

    def dtype(self, options: CompileOptions) -> str:
        return "int8" if options.quantize == "int8" else "float32"

    def plan(self, model, profile: TargetProfile, options: CompileOptions) -> PhonePlan:
        return PhonePlan(model, profile, options, estimate(model, profile, options))

    def build(self, plan: PhonePlan, out: Path) -> BuildResult:
        if plan.model.meta.get("nested"):
            return build_nested(plan.model, plan.profile, out, plan.options, plan.estimate)
        return build(plan.model, plan.profile, out, plan.options, plan.estimate)

    def fit_advice(self, plan: PhonePlan) -> list[str]:
        return [] if plan.options.quantize else ["--quantize int8 (int8 weights: about a quarter of the file)"]


TARGET = PhoneTarget()


def build(model, profile: TargetProfile, out: Path, options: CompileOptions, est: Estimate | None = None
          ) -> BuildResult:
    """Write the files listed in the module docstring into ``out`` (an existing, empty folder)."""
    if model.meta.get("conv_streaming") is not None:  # --streaming: the conv model's step function
        if options.input_format != "float":
            raise UsageError("--input-format quantized: a streaming step takes its frames and state as floats; "
                             "drop one of --streaming and --input-format")
        return build_stream(model, profile, out, options, est)
    out = Path(out)
    if len(model.example_inputs) != 1:
        raise UnsupportedError(f"model '{model.name}' has {len(model.example_inputs)} inputs; the phone target "
                               "(calibration, test data, profiling) handles models with one input")
    if options.quantize == "int8":
        check_calibration(model.calib)  # before the (slow) export
    notes: list[str] = []
    graph = _deploy_graph(model)
    with tempfile.TemporaryDirectory(prefix=".export.", dir=out) as tmp:
        tmp = Path(tmp)
        if model.module is not None:
            exporter, export_notes = _export.export_module(model.module, model.example_inputs, tmp / "raw.onnx")
            notes += export_notes
            proto = onnx.load(str(tmp / "raw.onnx"))
        else:
            source = Path(str(model.meta.get("source", "")))
            if source.suffix.lower() != ".onnx" or not source.is_file():
                raise ModelLoadError(f"model '{model.name}' has no torch module and no .onnx source file "
                                     f"('{source}'); load it with edgekit.Model.load(path)")
            exporter = "file"
            proto = _export.load_onnx_file(source)
        layers = _export.node_layers(proto, _export.layer_index(graph))
        _export.strip_metadata(proto)
        proto, slim_notes = _export.simplify(proto)
        notes += slim_notes
        _check(proto, layers)
        input_name, fixed_batch = _input(proto)

        float_path = tmp / "float.onnx"
        onnx.save(proto, str(float_path))
        x, y, data_notes = _test_data(model)
        notes += data_notes
        reference, ref_notes = _reference(model, x, float_path, input_name, fixed_batch)
        notes += ref_notes
        float_err = _float_check(float_path, input_name, fixed_batch, x, reference, exporter)

        final = float_path
        float_ops: list[str] = []
        mixed_choice = None
        if options.quantize == "int8":
            def int8_from(source: Path, work: Path):
                """The int8 model to ship when the int8 models quantize ``source``: (path, choice, notes)."""
                work.mkdir()
                qdq = work / "int8.onnx"
                q_notes = quantize_int8(source, qdq, input_name, model.calib, fixed_batch, keep_pre=work / "pre.onnx")
                path, choice, m_notes = _int8_where_it_pays(model, profile, options, float_path, qdq, work,
                                                            input_name, fixed_batch, x, reference, layers,
                                                            source=source)
                return path, choice, q_notes + m_notes

            final, mixed_choice, mixed_notes = int8_from(float_path, tmp / "q")
            phased, phase_notes = _export.phase_conv_transposes(onnx.load(str(float_path)), layers) \
                if PHASE_CONV_TRANSPOSES else (None, [])
            if phase_notes:  # transposed convs: int8 as phase convs too, and the model with fewer instructions ships
                onnx.save(phased, str(tmp / "phases.onnx"))
                alt = int8_from(tmp / "phases.onnx", tmp / "qp")
                counts = [c.whole[c.shipped] if c is not None else None for c in (mixed_choice, alt[1])]
                if None in counts or counts[1] < counts[0]:
                    final, mixed_choice, mixed_notes = alt
                    mixed_notes = phase_notes + mixed_notes
                else:
                    mixed_notes.append(f"transposed convs kept as ConvTranspose: as phase convs the int8 model "
                                       f"measured {counts[1]:,} instructions against {counts[0]:,}")
            notes += mixed_notes
            qproto = onnx.load(str(final))
            onnx.checker.check_model(qproto)
            float_ops = _float_ops(qproto)
            if float_ops:
                notes.append("int8: these operators run in float32 (no int8 kernel in ONNX Runtime's QDQ form, or "
                             f"kept float because int8 does not pay on the core): {', '.join(float_ops)}")
        encoding = None
        if options.input_format == "quantized" and final == float_path:
            raise UnsupportedError(f"--input-format quantized: model '{model.name}' ships in float32 (no int8 model "
                                   f"costs fewer instructions on {profile.core}); pass --int8-layers all to ship int8")
        if final != float_path:  # an int8 model: its many Q/DQ names are worth shortening (the float one is the export)
            shipped = _export.compact_names(onnx.load(str(final)), set(layers))
            _export.derived_bias_scales(shipped)
            if options.input_format == "quantized":
                shipped, encoding = quantized_input(shipped, model.name)
            onnx.checker.check_model(shipped)
            onnx.save(shipped, str(out / "model.onnx"))
        else:
            shutil.copyfile(final, out / "model.onnx")
        _write_ort_format(out / "model.onnx", out, tmp / "ort")

    data = {"x": x, "reference": reference}
    if y is not None:
        data["y"] = y
    np.savez_compressed(out / "testdata.npz", **data)

    deployed = onnx.load(str(out / "model.onnx"))
    info = PhoneBuild(
        onnx_bytes=(out / "model.onnx").stat().st_size,
        ort_bytes=(out / "model.ort").stat().st_size,
        opset=_opset(deployed),
        ops=sorted({n.op_type for n in deployed.graph.node}),
        quantized=options.quantize == "int8" and final != float_path,
        quantization=({"format": "QDQ", "weights": "int8, symmetric, per output channel",
                       "activations": "uint8, asymmetric, min/max over the calibration inputs",
                       "calibration_samples": int(len(model.calib)), "float_ops": float_ops,
                       "mixed": mixed_choice.to_json() if mixed_choice else None}
                      if options.quantize == "int8" else None),
        exporter=exporter,
        input_name=input_name,
        output_name=deployed.graph.output[0].name,
        fixed_batch=fixed_batch,
        float_export_max_abs_err=float_err,
        test_samples=int(len(x)),
        node_layers=layers,
        app=app_snippets(input_name, encoding),
        input_encoding=encoding,
    )
    dtype = "int8" if info.quantized else "float32"
    if graph is not None:
        if options.quantize == "int8" and not info.quantized:  # int8 did not pay: the estimate of what is shipped
            est = estimate(model, profile, dataclasses.replace(options, quantize=None))
            notes.append("the estimate is the float32 model's: float32 is shipped (int8 does not pay on this core)")
        est, analysis = est or estimate(model, profile, options), model.analyze()
    else:  # built straight from its ONNX export (edgekit.compile plans, and so refuses, such a model before)
        analysis = None
    return BuildResult(files=list(FILES), dtype=dtype, estimate=est, analysis=analysis, info=info, notes=notes)


def quantized_input(proto: onnx.ModelProto, name: str) -> tuple[onnx.ModelProto, dict]:
    """``proto`` (a QDQ model) taking its input as the codes of its first QuantizeLinear (--input-format quantized):
    that QuantizeLinear removed, the graph input of its output type, and a 4-D (image) input channels last, the
    Transpose to the model's NCHW put in its place — ONNX Runtime's int8 kernels run channels last, so its layout pass
    cancels that Transpose against its own. An app fills the input from camera bytes with the scale and zero point
    returned (code = round(x / scale) + zero_point, clipped), instead of floats the model quantizes again."""
    from onnx import helper, numpy_helper

    g = proto.graph
    inits = {t.name for t in g.initializer}
    inp = next(i for i in g.input if i.name not in inits)
    readers = [n for n in g.node if inp.name in n.input]
    if len(readers) != 1 or readers[0].op_type != "QuantizeLinear":
        raise UnsupportedError(f"--input-format quantized: model '{name}''s first layer runs in float32 (int8 does not "
                               "pay there on this core); pass --int8-layers all to quantize it")
    q = readers[0]
    consts = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    scale, zp = consts.get(q.input[1]), consts.get(q.input[2]) if len(q.input) > 2 else None
    if scale is None or zp is None or scale.size != 1 or zp.size != 1:
        raise UnsupportedError(f"--input-format quantized: model '{name}''s input quantization is not one constant "
                               "scale and zero point")
    dims = [d.dim_value if d.HasField("dim_value") else None for d in inp.type.tensor_type.shape.dim]
    nhwc = len(dims) == 4
    nodes = []
    for n in g.node:
        if n.op_type == "QuantizeLinear" and list(n.output) == list(q.output):
            if nhwc:
                nodes.append(helper.make_node("Transpose", [inp.name], [q.output[0]], name=f"{inp.name}_to_nchw",
                                              perm=[0, 3, 1, 2]))
            continue
        kept = onnx.NodeProto()
        kept.CopyFrom(n)
        nodes.append(kept)
    if not nhwc:  # the input feeds the dequantization directly: rename its readers' edge
        for n in nodes:
            for k, x in enumerate(n.input):
                if x == q.output[0]:
                    n.input[k] = inp.name
    del g.node[:]
    g.node.extend(nodes)
    elem = helper.np_dtype_to_tensor_dtype(zp.dtype)
    inp.type.tensor_type.elem_type = elem
    if nhwc:
        shape = inp.type.tensor_type.shape
        old = [onnx.TensorShapeProto.Dimension() for _ in shape.dim]
        for o, d in zip(old, shape.dim):
            o.CopyFrom(d)
        del shape.dim[:]
        for k in (0, 2, 3, 1):
            shape.dim.add().CopyFrom(old[k])
        dims = [dims[k] for k in (0, 2, 3, 1)]
    onnx.checker.check_model(proto)
    return proto, {"dtype": str(zp.dtype), "layout": "NHWC" if nhwc else "as the model's", "shape": dims,
                   "scale": float(scale.reshape(-1)[0]), "zero_point": int(zp.reshape(-1)[0])}


def encode_input(encoding: dict | None, x: np.ndarray) -> np.ndarray:
    """Float model inputs ``x`` (NCHW for images) as a --input-format quantized model takes them: the codes of its
    first QuantizeLinear (float32 division, rounding half to even, as ONNX Runtime's), channels last; ``x`` itself
    when the model takes floats."""
    if not encoding:
        return x
    dtype = np.dtype(encoding["dtype"])
    info = np.iinfo(dtype)
    q = np.rint(np.asarray(x, np.float32) / np.float32(encoding["scale"])) + encoding["zero_point"]
    q = np.clip(q, info.min, info.max).astype(dtype)
    return np.ascontiguousarray(q.transpose(0, 2, 3, 1) if encoding["layout"] == "NHWC" else q)


def app_snippets(input_name: str, encoding: dict | None = None) -> dict[str, str]:
    """Creating the session in an Android (Kotlin) and an iOS (Swift) app with the options edgekit measured: the ORT
    format model, one intra-op thread, sequential execution, all graph optimizations (what runtimes/onnxruntime.py
    and the emulated Arm core run); with a quantized input (``encoding``), the input tensor as bytes."""
    if encoding:
        info = np.iinfo(np.dtype(encoding["dtype"]))
        shape = ", ".join("N" if d is None else str(d) for d in encoding["shape"])
        fill = (f"// codes: one byte per input element (code = clamp(round(x / {encoding['scale']:.9g}) + "
                f"{encoding['zero_point']}, {info.min}, {info.max}), {encoding['dtype']}, {encoding['layout']}), "
                f"shape [{shape}] with N = 1\n")
        int8 = encoding["dtype"] == "int8"
        kotlin = fill + f"val input = OnnxTensor.createTensor(env, ByteBuffer.wrap(codes), shape, " \
                        f"OnnxJavaType.{'INT8' if int8 else 'UINT8'})"
        swift = fill + f"let input = try ORTValue(tensorData: NSMutableData(data: codes), elementType: " \
                       f"{'.int8' if int8 else '.uInt8'}, shape: shape)"
    else:
        kotlin = ("val input = OnnxTensor.createTensor(env, FloatBuffer.wrap(features), shape)   // shape: the "
                  "model's input, batch 1")
        swift = "let input = try ORTValue(tensorData: NSMutableData(data: features), elementType: .float, shape: shape)"
    return {
        "Android (Kotlin, com.microsoft.onnxruntime:onnxruntime-android)": f"""val env = OrtEnvironment.getEnvironment()
val options = OrtSession.SessionOptions().apply {{
    setIntraOpNumThreads(1)
    setExecutionMode(OrtSession.SessionOptions.ExecutionMode.SEQUENTIAL)
    setOptimizationLevel(OrtSession.SessionOptions.OptLevel.ALL_OPT)
}}
val bytes = context.assets.open("model.ort").readBytes()
val session = env.createSession(bytes, options)
{kotlin}
session.run(mapOf("{input_name}" to input)).use {{ result ->
    val scores = (result[0].value as Array<FloatArray>)[0]
}}""",
        "iOS (Swift, onnxruntime-objc pod)": f"""let env = try ORTEnv(loggingLevel: .warning)
let options = try ORTSessionOptions()
try options.setIntraOpNumThreads(1)
try options.setGraphOptimizationLevel(.all)
let path = Bundle.main.path(forResource: "model", ofType: "ort")!
let session = try ORTSession(env: env, modelPath: path, sessionOptions: options)
{swift}
let outputs = try session.run(withInputs: ["{input_name}": input], outputNames: [outputName], runOptions: nil)""",
    }


def _int8_where_it_pays(model, profile: TargetProfile, options: CompileOptions, float_path: Path, qdq: Path,
                        tmp: Path, input_name: str, fixed_batch: int | None, x: np.ndarray, reference: np.ndarray,
                        node_layers: dict, source: Path | None = None
                        ) -> tuple[Path, "mixed.MixedChoice | None", list[str]]:
    """The int8 model to ship (targets/phone/mixed.py), measured on the profile's emulated core: the activation type
    whose int8 kernels are cheaper there (uint8 or int8), the layers where int8 does not pay kept float32, then the
    layers that lose most kept float32 while the model's fidelity is outside the bounds (edgekit.fidelity), and
    float32 shipped if no int8 model costs fewer instructions. The int8 models quantize ``source`` (the export with
    its transposed convs as phase convs, export.phase_conv_transposes), the float32 candidate is ``float_path``."""
    source = source or float_path
    from edgekit import fidelity
    from edgekit.targets.phone import arm64
    from edgekit.targets.phone import mixed

    if options.int8_layers == "all":
        return qdq, None, []
    if "qemu_cpu" not in profile.board or not arm64.available():
        return qdq, None, [f"int8 everywhere: which layers pay in int8 is measured on the emulated {profile.core}, "
                           "which is not set up here (scripts/setup.sh makes it)"]
    core = arm64.ArmCore.of(profile)
    tmp = tmp.resolve()  # the emulated runs get absolute paths
    work = tmp / "mixed"
    work.mkdir()
    x1 = x[:fixed_batch or 1]

    def quantize(name: str, act: str, exclude: list[str]) -> Path:
        path = tmp / f"{name}.onnx"
        quantize_int8(source, path, input_name, model.calib, fixed_batch, exclude=exclude, activations=act,
                      keep_pre=tmp / "pre.onnx")
        return path

    candidates = {"float32": float_path, "int8": qdq, "int8-s8": quantize("int8_s8", "int8", [])}
    whole = mixed.whole_counts(core, candidates, x1, input_name, work)
    act_key = "int8-s8" if mixed.clearly_fewer(whole["int8-s8"], whole["int8"]) else "int8"
    act = "int8" if act_key != "int8" else "uint8"
    rows, excluded = mixed.choose(tmp / "pre.onnx", candidates[act_key], core, node_layers, work)
    best = act_key
    if excluded:
        candidates["mixed"] = quantize("mixed", act, excluded)
        whole.update(mixed.whole_counts(core, {"mixed": candidates["mixed"]}, x1, input_name, work))
        best = "mixed" if mixed.clearly_fewer(whole["mixed"], whole[act_key]) else act_key

    # Fidelity on the host (the QDQ model as written: what an Arm core's integer kernels compute, up to rounding).
    n = fixed_batch or min(len(x), 128)
    xs, ref = x[:n], reference[:n]
    classifier = model.meta.get("task") == "classification" if model.meta.get("task") else None

    def fid(path: Path) -> dict:
        return fidelity.measure(qdq_session(path).run(None, {input_name: xs})[0], ref, None, classifier)

    notes = []
    base_excluded = list(excluded) if best == "mixed" else []
    kept_float = list(base_excluded)
    f = fid(candidates[best])
    if not f["ok"]:
        # Keep the layers that lose most float, a tenth of them per round, until the model is within the bounds;
        # if it never is, the fastest int8 model stays (the profile flags its fidelity) rather than a slower one.
        current, within = best, False
        op_of = {r.node: r.op for r in rows}
        for rounds in range(1, FIDELITY_ROUNDS + 1):
            loss = mixed.damage(tmp / "pre.onnx", candidates[current], input_name, xs)
            worst = sorted((k for k in loss if k not in kept_float and op_of.get(k) not in mixed.INT8_ANYWAY),
                           key=loss.get, reverse=True)
            if not worst:
                break
            kept_float += worst[:max(1, len(loss) // 10)]
            current = f"fidelity{rounds}"
            candidates[current] = quantize(current, act, kept_float)
            f_new = fid(candidates[current])
            if f_new["ok"]:
                whole.update(mixed.whole_counts(core, {current: candidates[current]}, x1, input_name, work))
                notes.append(f"int8 fidelity: {len(kept_float) - len(base_excluded)} more layers kept float32 "
                             f"({rounds} round(s)) to bring the model within the bounds ({f_new['summary']})")
                best, f, within = current, f_new, True
                break
        if not within:
            kept_float = base_excluded
            notes.append(f"int8 fidelity stays outside the bounds ({f['summary']}) even with "
                         f"{FIDELITY_ROUNDS} tenths of the layers kept float32; the fastest int8 model is shipped")
    shipped = best if mixed.clearly_fewer(whole[best], whole["float32"]) else "float32"
    kept = set(kept_float if best != act_key else [])
    if shipped == "float32":  # every layer float, whatever each one measured alone
        kept = {r.node for r in rows}
    for r in rows:
        r.dtype = "float32" if r.node in kept else "int8"
    choice = mixed.MixedChoice(profile.name, rows, sorted(kept), whole, shipped, act)
    note = (f"int8 where it pays on the emulated {profile.core}: {act} activations; "
            f"{len(rows) - len(kept)} of {len(rows)} layers int8"
            + (f", {len(kept)} kept float32 ({', '.join(r.layer or r.node for r in rows if r.dtype == 'float32')})"
               if kept else "")
            + "; whole model " + ", ".join(f"{k} {v:,}" for k, v in whole.items()) + f" instructions: shipped {shipped}")
    if shipped == "float32":
        note += " (no int8 model costs fewer instructions than float32 on this core; --int8-layers all forces int8)"
    return candidates[shipped], choice, [note] + notes


FIDELITY_ROUNDS = 3  # at most this many rounds of keeping the worst tenth of the layers float


# ONNX Runtime shares initializers between sessions only as whole tensors; a narrower point's weights are not one.
SHARING_NOTE = ("phone: each operating point is its own ONNX/ORT model (OUT/op<k>/, the widest in OUT/); ONNX "
                "Runtime shares initializers between sessions only as whole tensors (SessionOptions.add_initializer, "
                "external data), and a narrower point's weights are the first rows and columns of each tensor, not a "
                "contiguous piece, so the files repeat the shared weights; an app keeps one session per point it "
                "uses")


def build_nested(model, profile: TargetProfile, out: Path, options: CompileOptions, est: Estimate) -> BuildResult:
    """A nested model: the widest operating point as OUT's model (profiled as usual; ``est`` is its estimate), every
    narrower one as its own model in OUT/op<k>/ with its own test data and build.json (what runtimes/onnxruntime.py
    reads); report["build"]["operating_points"] lists them."""
    from edgekit.converters.nested import operating_points

    out = Path(out)
    points = operating_points(model)
    rows, files = [], []
    for k, pt in enumerate(points):
        widest = k == len(points) - 1
        folder = out if widest else out / f"op{k}"
        folder.mkdir(exist_ok=True)
        point_est = est if widest else estimate(pt, profile, options)
        result = build(pt, profile, folder, options, point_est)
        if not widest:
            (folder / "build.json").write_text(json.dumps(result.info.to_json()))
            files += [f"op{k}/{f}" for f in result.files + ["build.json"]]
        rows.append({"index": k, "budget": float(pt.meta["operating_point"]["budget"]),
                     "folder": "." if widest else f"op{k}", "onnx_bytes": result.info.onnx_bytes,
                     "ort_bytes": result.info.ort_bytes, "macs": int(point_est.macs),
                     "estimate": point_est.to_json() | {"layers": None, "memory_timeline": None}})
    result.info.operating_points = rows
    result.files = list(result.files) + files
    result.notes.append(SHARING_NOTE)
    return result


def build_stream(model, profile: TargetProfile, out: Path, options: CompileOptions, est: Estimate) -> BuildResult:
    """A conv model over time as its streaming step (``--streaming``): model.onnx takes one frame and the caches,
    countdowns and pooling ring as inputs and returns the output and the new state (edgekit.converters.streaming);
    testdata.npz holds the test windows, the windowed model's outputs and the initial state."""
    from edgekit.converters.streaming import to_conv_streaming

    if options.quantize == "int8":
        raise UsageError("--streaming on phone-arm64 builds the step function in float32 (ONNX Runtime's int8 "
                         "quantizer does not calibrate state inputs); drop --quantize, or build the windowed model "
                         "in int8 without --streaming")
    out = Path(out)
    step = to_conv_streaming(model)
    x, y, notes = _test_data(model)
    with tempfile.TemporaryDirectory(prefix=".export.", dir=out) as tmp:
        tmp = Path(tmp)
        proto = onnx.load(str(step.export(tmp / "raw.onnx")))
        _export.strip_metadata(proto)
        proto, slim_notes = _export.simplify(proto)
        notes += slim_notes
        _check(proto, {})
        onnx.save(proto, str(out / "model.onnx"))
        _write_ort_format(out / "model.onnx", out, tmp / "ort")
    state = {f"state_{i}": t.numpy() for i, t in enumerate(step.initial_state(1))}
    data = {"x": x, "reference": model.predict(x), **state}
    if y is not None:
        data["y"] = y
    np.savez_compressed(out / "testdata.npz", **data)
    deployed = onnx.load(str(out / "model.onnx"))
    info = PhoneBuild(
        onnx_bytes=(out / "model.onnx").stat().st_size, ort_bytes=(out / "model.ort").stat().st_size,
        opset=_opset(deployed), ops=sorted({n.op_type for n in deployed.graph.node}), quantized=False,
        quantization=None, exporter="torch.onnx (dynamo), the streaming step", input_name="frame", output_name="y",
        fixed_batch=1, float_export_max_abs_err=float(step.max_abs_error), test_samples=int(len(x)),
        stream={**step.plan.to_json(), "state_names": step.state_names, "state_bytes": step.state_bytes,
                "flush_steps": step.flush_steps() if step.flushable else None})
    notes.append(f"streaming step: one frame in, {len(step.state_names)} state tensors ({step.state_bytes:,} B) in "
                 f"and out; an output every {step.plan.hop_frames} frame(s)" + (
                     f"; it looks {step.plan.lookahead_frames} frame(s) ahead: the input pad_into (-1 for a frame, k "
                     f"for a padding row into cache k) runs the {len(step.flush_steps())}-step flush that ends a window"
                     if step.flushable else ""))
    return BuildResult(files=list(FILES), dtype="float32", estimate=est, analysis=model.analyze(), info=info,
                       notes=notes)


# ---- steps ----------------------------------------------------------------------------------------------------------


def _deploy_graph(model):
    # The graph gives the layer map (per-layer profile names) and the estimate; ONNX export does not need it, so a
    # model edgekit cannot import still builds here (edgekit.compile reports the import problem itself).
    try:
        return model.deploy_graph
    except Exception:  # noqa: BLE001
        return None


def _opset(proto: onnx.ModelProto) -> int:
    return next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)


def _input(proto: onnx.ModelProto) -> tuple[str, int | None]:
    """Name of the one real input (old files list initializers as inputs too) and its fixed batch size, if any."""
    inits = {i.name for i in proto.graph.initializer}
    inputs = [i for i in proto.graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise UnsupportedError(f"the ONNX model has {len(inputs)} inputs; the phone target handles one")
    dims = inputs[0].type.tensor_type.shape.dim
    fixed = dims[0].dim_value if dims and dims[0].HasField("dim_value") else None
    return inputs[0].name, fixed


def _check(proto: onnx.ModelProto, layers: dict[str, str]) -> None:
    """onnx.checker, then every node against ONNX Runtime's CPU kernels; all unsupported nodes in one error."""
    try:
        onnx.checker.check_model(proto, full_check=True)
    except Exception as e:  # noqa: BLE001
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise UnsupportedError(f"the exported ONNX model is invalid ({first}); re-export it or report the model") \
            from e
    missing = unsupported_nodes(proto)
    if missing:
        items = [f"layer '{layers.get(n.name, n.name)}': {n.domain + '.' if n.domain else ''}{n.op_type}"
                 for n in missing]
        raise UnsupportedError(f"ONNX Runtime's CPU provider has no kernel for {len(missing)} node(s): "
                               + "; ".join(items) + ". Replace those layers or export at another opset")


def unsupported_nodes(proto: onnx.ModelProto) -> list[onnx.NodeProto]:
    """Nodes whose (domain, op, opset) has no CPUExecutionProvider kernel in this onnxruntime.

    ORT registers a kernel per op for a range of opset versions ending before the op's next schema change, so a node
    runs when the model's opset for its domain falls in one of the ranges. Nodes of local functions are skipped.
    """
    from onnxruntime.capi import _pybind_state as C

    kernels: dict[tuple[str, str], list[tuple[int, int]]] = {}
    for k in C.get_all_opkernel_def():
        if k.provider == "CPUExecutionProvider":
            kernels.setdefault((k.domain, k.op_name), []).append(tuple(k.version_range))
    opsets = {("" if o.domain == "ai.onnx" else o.domain): o.version for o in proto.opset_import}
    functions = {(f.domain, f.name) for f in proto.functions}
    missing = []
    for node in proto.graph.node:
        domain = "" if node.domain == "ai.onnx" else node.domain
        if (domain, node.op_type) in functions:
            continue
        version = opsets.get(domain, 1)
        ranges = kernels.get((domain, node.op_type), [])
        if not any(lo <= version <= hi for lo, hi in ranges) and not _expands_to_function(node, domain, version):
            missing.append(node)
    return missing


def _expands_to_function(node: onnx.NodeProto, domain: str, version: int) -> bool:
    """ONNX ops defined by a function body (HardSwish = x · HardSigmoid(x), ...): ORT inlines the body when it has
    no kernel of its own, so they run."""
    try:
        schema = onnx.defs.get_schema(node.op_type, version, domain)
    except Exception:  # noqa: BLE001 - not an ONNX op: no body to expand
        return False
    return bool(schema.has_function or schema.has_context_dependent_function)


def _test_data(model) -> tuple[np.ndarray, np.ndarray | None, list[str]]:
    """Test inputs (the model's test set, else its calibration inputs, else the example input) and labels."""
    notes = []
    y = None
    if model.test_x is not None and len(model.test_x):
        x, y = model.test_x, model.test_y
    elif model.calib is not None and len(model.calib):
        x = model.calib
        notes.append("the model has no test set; testdata.npz holds its calibration inputs")
    else:
        x = model.example_inputs[0].numpy()
        notes.append("the model has no test or calibration data; testdata.npz holds its one example input")
    if len(x) > MAX_TEST_SAMPLES:
        notes.append(f"testdata.npz keeps the first {MAX_TEST_SAMPLES} of {len(x)} test inputs")
        x = x[:MAX_TEST_SAMPLES]
        y = y[:MAX_TEST_SAMPLES] if y is not None else None
    x = np.ascontiguousarray(x, dtype=np.float32)
    return x, (np.asarray(y) if y is not None else None), notes


def _reference(model, x: np.ndarray, float_path: Path, input_name: str, fixed_batch: int | None
               ) -> tuple[np.ndarray, list[str]]:
    """The source model's float outputs on ``x``: torch (model.predict); for a model read from an .onnx file that
    edgekit cannot execute itself, ONNX Runtime on the file (as simplified)."""
    try:
        return np.asarray(model.predict(x), dtype=np.float32), []
    except Exception:  # noqa: BLE001
        if model.module is not None:
            raise
    return _run_float(float_path, input_name, fixed_batch, x), [
        "reference outputs come from ONNX Runtime on the source .onnx file (edgekit cannot execute it itself)"]


def _run_float(path: Path, input_name: str, fixed_batch: int | None, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    batch = fixed_batch or max(1, min(len(x), 256))
    outs = []
    for i in range(0, len(x), batch):
        chunk = x[i:i + batch]
        pad = batch - len(chunk)
        if pad:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], pad, 0)], 0)
        outs.append(sess.run(None, {input_name: chunk})[0][:batch - pad])
    return np.concatenate(outs, 0)


def _float_check(path: Path, input_name: str, fixed_batch: int | None, x: np.ndarray, reference: np.ndarray,
                 exporter: str) -> float:
    """Max abs difference between ONNX Runtime on the float model and the source model; MismatchError past the
    tolerance."""
    n = min(len(x), FLOAT_CHECK_SAMPLES)
    got = _run_float(path, input_name, fixed_batch, x[:n])
    if got.shape != reference[:n].shape:
        raise MismatchError(f"on {n} inputs the ONNX model's output has shape {got.shape} but the source model's "
                            f"has {reference[:n].shape} (exported with {exporter}); check the model's outputs")
    err = float(np.max(np.abs(got - reference[:n])))
    scale = float(np.max(np.abs(reference[:n]))) + 1.0
    if not err <= FLOAT_TOLERANCE * scale:
        how = {"torchscript": "the TorchScript exporter froze Python control flow of the model",
               "dynamo": "the export changed the computation", "file": "the .onnx file and edgekit's reading of "
               "it disagree"}[exporter]
        raise MismatchError(f"float ONNX outputs differ from the source model by up to {err:.3g} on the test "
                            f"inputs (tolerance {FLOAT_TOLERANCE * scale:.2g}): {how}; make the forward pass "
                            "free of data-dependent branches and compile again")
    return err


def _float_ops(proto: onnx.ModelProto) -> list[str]:
    """Operators with weights or real work that kept no DequantizeLinear input (they run in float32)."""
    produced_by = {o: n.op_type for n in proto.graph.node for o in n.output}
    skip = {"QuantizeLinear", "DequantizeLinear", "Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze",
            "Shape", "Gather", "Concat", "Slice", "Expand", "Identity", "Constant"}
    out = set()
    for n in proto.graph.node:
        if n.op_type in skip:
            continue
        if not any(produced_by.get(i) == "DequantizeLinear" for i in n.input):
            out.add(n.op_type)
    return sorted(out)


def _write_ort_format(model_path: Path, out: Path, work: Path) -> None:
    """model.ort (ORT format, optimizations fixed for ARM) and required_operators.config, with ORT's own converter."""
    from onnxruntime.tools.convert_onnx_models_to_ort import OptimizationStyle, convert_onnx_models_to_ort

    import onnxruntime as ort

    work.mkdir()
    logger = logging.getLogger("ort_format_model.utils")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        # The model optimized as the converter would (all levels, no x86-only NCHWc layouts, int8 QDQ fused into
        # int8 kernels as on ARM) and saved as ONNX first: converted straight, the ORT file keeps a typed, shaped
        # NodeArg for every tensor of the unfused graph (zoo MobileNetV2-0.35 int8: 787 where 392 remain, 58 KB of
        # 618 KB); the converter then finds nothing left to change.
        so = ort.SessionOptions()
        so.optimized_model_filepath = str(work / "model.onnx")
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.add_session_config_entry("session.qdqisint8allowed", "1")
        so.log_severity_level = 3
        ort.InferenceSession(str(model_path), sess_options=so, providers=["CPUExecutionProvider"],
                             disabled_optimizers=["NchwcTransformer"])
        # target_platform="arm": no x86-only NCHWc layouts, and int8 QDQ fused into int8 kernels as on ARM.
        with contextlib.redirect_stdout(io.StringIO()):
            convert_onnx_models_to_ort(work / "model.onnx", output_dir=work,
                                       optimization_styles=[OptimizationStyle.Fixed], target_platform="arm")
    except Exception as e:  # noqa: BLE001
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise UnsupportedError(f"ONNX Runtime could not convert model.onnx to ORT format ({first})") from e
    finally:
        logger.setLevel(level)
    # The converter writes one table in hash order; canonical_ort makes two builds of one model byte-identical.
    (out / "model.ort").write_bytes(canonical_ort((work / "model.ort").read_bytes()))
    config = work / "model.required_operators.config"
    # The converter names the (temporary) files it read in comments; name the shipped file instead.
    lines = ["# - model.ort" if ln.startswith("# - ") else ln for ln in config.read_text().splitlines()]
    (out / "required_operators.config").write_text("\n".join(lines) + "\n")
