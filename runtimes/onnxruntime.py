"""ONNX Runtime: runs a phone artifact (OUT/model.onnx) on this machine's CPU and measures it.

Where it sits: runtimes/ (Artifact -> Measured). ``edgekit profile OUT`` calls :func:`profile` for phone targets; it
reads what targets/phone wrote (model.onnx, model.ort, testdata.npz, report['build']) and changes none of it.

What the numbers mean: ONNX Runtime's CPU execution provider with one intra-op thread, so latency stands for one phone
core; it is measured on *this* host's CPU (``measured['host']``), not on a phone. ``latency_ms`` uses the graph
optimizations ONNX Runtime applies on ARM: the x86-only NCHWc blocked layout (``NchwcTransformer``, which ORT's own
ORT-format converter also turns off for ARM) is disabled. ``latency_host_ms`` is the same model with every optimization
this host supports; on x86 that layout speeds float convolutions up several times while int8 kernels gain little, so
the two figures can rank float and int8 differently. Accuracy and errors compare with the source model's float outputs
saved at compile time (testdata.npz ``reference``).
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from edgekit import fidelity

from edgekit.errors import ModelLoadError, UsageError
from edgekit.runtimes.progress import progress_bar
from edgekit.targets.phone.quantize import qdq_session

BATCH = 64              # test inputs per run when checking outputs
THREADS = 1             # intra-op threads: one core, as a phone app's inference thread would typically get
PROFILED_RUNS = 20      # batch-1 runs traced for the per-operator profile
X86_ONLY_OPTIMIZERS = ["NchwcTransformer"]


def session(path: Path, threads: int = THREADS, profile_prefix: str | None = None, arm_like: bool = True):
    """An InferenceSession on the CPU provider with ``threads`` intra-op threads and all graph optimizations (but
    the x86-only ones when ``arm_like``)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    if profile_prefix:
        so.enable_profiling = True
        so.profile_file_prefix = profile_prefix
    try:
        return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"],
                                    disabled_optimizers=X86_ONLY_OPTIMIZERS if arm_like else None)
    except Exception as e:  # noqa: BLE001
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise ModelLoadError(f"{path}: ONNX Runtime cannot load it ({first}); compile again") from e


def host_int8_saturates() -> bool:
    """True on an x86-64 host without VNNI (AVX2 only): ONNX Runtime's u8×s8 int8 kernels there use VPMADDUBSW,
    whose int16 sum of two products saturates (ORT's quantization docs, "saturation issues"), so int8 outputs
    differ from what the QDQ model means — and from an Arm core's, whose int8 kernels (SMLAL, UDOT) do not
    saturate. Measured here on digits-cnn: top-1 agreement with float 96.1 % with the host's int8 kernels, 99.7 %
    with the QDQ semantics."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return not any(f in flags.split() for f in ("avx512_vnni", "avx_vnni", "amx_int8"))


def run_batched(sess, input_name: str, x: np.ndarray, batch: int = BATCH, fixed_batch: int | None = None,
                step=None) -> np.ndarray:
    """First output of ``sess`` on all of ``x``, ``batch`` inputs per run (a fixed-batch model gets padded chunks)."""
    batch = fixed_batch or batch
    outs = []
    for i in range(0, len(x), batch):
        chunk = x[i:i + batch]
        pad = batch - len(chunk) if fixed_batch else 0
        if pad:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], pad, 0)], 0)
        y = sess.run(None, {input_name: chunk})[0]
        outs.append(y[:len(y) - pad])
        if step:
            step(len(chunk) - pad)
    return np.concatenate(outs, 0)


def time_runs(fn, repeat: int, warmup: int, step=None) -> np.ndarray:
    """Wall-clock milliseconds of ``repeat`` calls of ``fn`` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = np.empty(repeat)
    for i in range(repeat):
        t0 = time.perf_counter()
        fn()
        times[i] = (time.perf_counter() - t0) * 1e3
        if step:
            step(1)
    return times


def profile(out: Path, report: dict, repeat: int = 50, **kw) -> dict:
    """Run OUT/model.onnx on the test inputs and time it; returns report['measured']."""
    out = Path(out)
    if repeat < 1:
        raise UsageError(f"--repeat {repeat}: give at least 1 timed run")
    for name in ("model.onnx", "testdata.npz"):
        if not (out / name).is_file():
            raise UsageError(f"{out}: {name} is missing; compile again for the phone target")
    from edgekit.targets.phone import PhoneBuild, encode_input

    build = PhoneBuild.from_json(report.get("build") or {})
    data = np.load(out / "testdata.npz")
    x, reference = data["x"], data["reference"]
    # (--input-format quantized: the test inputs as the model takes them, int8 codes, channels last)
    x = encode_input(build.input_encoding, x)
    y = data["y"] if "y" in data.files else None
    fixed = build.fixed_batch
    warmup = max(5, repeat // 10)

    if build.stream is not None:
        return _profile_stream(out, report, build, data, repeat, warmup)
    if build.operating_points:  # a nested model: every operating point's own model, the widest in OUT itself
        rows, measured = [], {}
        for point in build.operating_points:
            folder = out / point["folder"]
            own = (json.loads((folder / "build.json").read_text()) if point["folder"] != "."
                   else {**report["build"], "operating_points": None})
            m = profile(folder, {**report, "build": own}, repeat=repeat)
            rows.append({"index": point["index"], "budget": point["budget"], "macs": point["macs"], **{
                k: m.get(k) for k in ("accuracy", "reference_accuracy", "latency_ms", "latency_host_ms", "flash_bytes",
                                      "ort_bytes", "top1_agreement", "max_abs_err", "fidelity")}})
            measured = m  # the widest comes last: the report's main figures
        measured["operating_points"] = rows
        return measured
    with progress_bar() as progress:
        sess = session(out / "model.onnx")
        input_name = sess.get_inputs()[0].name
        task = progress("outputs", len(x))
        outputs = run_batched(sess, input_name, x, fixed_batch=fixed, step=task)
        x1 = x[:fixed or 1]
        feed = {input_name: np.ascontiguousarray(x1)}
        task = progress("latency", repeat)
        times = time_runs(lambda: sess.run(None, feed), repeat, warmup, step=task)
        host_sess = session(out / "model.onnx", arm_like=False)
        task = progress("latency (host optimizations)", repeat)
        host_times = time_runs(lambda: host_sess.run(None, feed), repeat, warmup, step=task)
        task = progress("operators", PROFILED_RUNS)
        layers = _operator_profile(out / "model.onnx", feed, build.node_layers, task)
        ort_diff = None
        if (out / "model.ort").is_file():
            ort_sess = session(out / "model.ort")
            n = min(len(x), BATCH)
            ort_diff = float(np.max(np.abs(run_batched(ort_sess, input_name, x[:n], fixed_batch=fixed)
                                           - outputs[:n])))

    measured = {
        "runtime": f"onnxruntime {_ort_version()} CPUExecutionProvider, {THREADS} intra-op thread, "
                   f"graph optimizations: all but {', '.join(X86_ONLY_OPTIMIZERS)} (as on ARM)",
        "host": f"{platform.machine()} {_cpu_name()}",
        "note": "latency_ms is measured on this host's CPU with one thread (standing in for one phone core), "
                "not on a phone: the emulated Arm core is not set up (scripts/setup.sh makes it)",
        "samples": int(len(x)),
        "max_abs_err": float(np.max(np.abs(outputs - reference))),
        "mean_abs_err": float(np.mean(np.abs(outputs - reference))),
        "top1_agreement": float(np.mean(outputs.argmax(-1) == reference.argmax(-1))),
        "accuracy": None,
        "reference_accuracy": None,
        "latency_ms": float(np.median(times)),
        "host_latency_ms": float(np.median(times)),
        "host_latency_p90_ms": float(np.percentile(times, 90)),
        "host_latency_min_ms": float(np.min(times)),
        "latency_host_ms": float(np.median(host_times)),
        "latency_batch": int(len(x1)),
        "latency_runs": int(repeat),
        "threads": THREADS,
        "flash_bytes": (out / "model.onnx").stat().st_size,
        "ort_bytes": (out / "model.ort").stat().st_size if (out / "model.ort").is_file() else None,
        "ort_format_max_abs_diff": ort_diff,
        "layers": layers,
    }
    if build.quantized and host_int8_saturates():
        # This host's int8 kernels saturate where a phone's do not: the outputs that stand for the phone are the QDQ
        # model's own semantics; the host kernels' agreement is kept beside them, labelled.
        host_outputs = outputs
        outputs = run_batched(qdq_session(out / "model.onnx"), input_name, x, fixed_batch=fixed)
        measured.update(max_abs_err=float(np.max(np.abs(outputs - reference))),
                        mean_abs_err=float(np.mean(np.abs(outputs - reference))),
                        top1_agreement=float(np.mean(outputs.argmax(-1) == reference.argmax(-1))))
        measured["host_int8_top1_agreement"] = float(np.mean(host_outputs.argmax(-1) == reference.argmax(-1)))
        measured["ort_format_note"] = ("ort_format_max_abs_diff compares model.ort with model.onnx on this host's "
                                       "saturating int8 kernels, which fuse the two differently; model.ort is "
                                       "checked on the emulated Arm core (arm.max_abs_diff_vs_host)")
        measured["outputs_note"] = (
            "outputs, accuracy and fidelity: the QDQ model run as written (ONNX Runtime, graph optimizations off), "
            "because this x86 host has no VNNI and ONNX Runtime's int8 kernels here saturate pairs of u8×s8 "
            "products (VPMADDUBSW), which an Arm core's int8 kernels do not; with this host's int8 kernels the "
            f"top-1 agreement with float is {measured['host_int8_top1_agreement']:.1%}")
    if y is not None:
        measured["accuracy"] = float(np.mean(outputs.argmax(-1) == y))
        measured["reference_accuracy"] = float(np.mean(reference.argmax(-1) == y))
    # reference: the float PyTorch model's outputs
    measured["fidelity"] = fidelity.measure(outputs, reference, y, fidelity.classifies(report))
    arm = _arm_measure(out, report, build, x, reference, y, outputs)
    if arm is not None:
        measured["arm"] = arm
        measured["instructions"] = arm["instructions"]
        measured["latency_ms"] = arm["latency_ms"]
        measured["note"] = (f"instructions: ONNX Runtime's aarch64 build on an emulated {arm['core']} (qemu-aarch64 "
                            f"-cpu {arm['qemu_cpu']}), exact counts; latency_ms = instructions x {arm['cpi']:g} "
                            f"cycles per instruction / {arm['clock_hz'] / 1e9:g} GHz (the profile's figures and their "
                            "sources); host_latency_ms is this host's CPU, one thread, a second figure")
    return measured


# Test inputs run on the emulated core (the host runs them all): enough for agreement figures, few enough that
# mbv2-w035 profiles within a minute.
ARM_SAMPLES = 32
ARM_MACS_BUDGET = 2e8


ARM_GUEST = """
import sys
import numpy as np, onnxruntime as ort
from ekmark import mark

model, empty, feeds, samples, dst, runs, batch = sys.argv[1:8]
runs, batch = int(runs), int(batch)
so = ort.SessionOptions()
so.intra_op_num_threads = 1
so.inter_op_num_threads = 1
so.log_severity_level = 3
sess = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
nothing = ort.InferenceSession(empty, so, providers=["CPUExecutionProvider"])
name = sess.get_inputs()[0].name
x1 = np.load(feeds)["x"]
for tag, s, feed in ((1, nothing, {"x": np.zeros((1, 1), np.float32)}), (3, sess, {name: x1})):
    s.run(None, feed)
    for _ in range(runs):
        mark(tag)
        s.run(None, feed)
        mark(tag + 1)
xs = np.load(samples)["x"]
outs = []
for i in range(0, len(xs), batch):
    chunk = xs[i:i + batch]
    pad = batch - len(chunk)
    if pad:
        chunk = np.concatenate([chunk, np.repeat(chunk[-1:], pad, 0)], 0)
    y = sess.run(None, {name: chunk})[0]
    outs.append(y[:len(y) - pad])
np.save(dst, np.concatenate(outs, 0))
"""


def _arm_measure(out: Path, report: dict, build, x, reference, y, host_outputs) -> dict | None:
    """The artifact (model.ort, what the app ships) on the profile's emulated Arm core: instructions per batch-1
    inference (median of 5 runs after a warm-up, minus an empty model's session.run), outputs on the first test
    inputs against the float model and against this host's ONNX Runtime."""
    from edgekit.targets.phone import arm64
    from edgekit.targets.phone.mixed import empty_model
    from edgekit.targets.profiles import get_profile

    profile = get_profile(report["target"])
    if "qemu_cpu" not in profile.board or not arm64.available():
        return None
    import onnx

    core = arm64.ArmCore.of(profile)
    artifact = out / "model.ort" if (out / "model.ort").is_file() else out / "model.onnx"
    macs = (report.get("estimate") or {}).get("macs") or 0
    n = int(min(len(x), ARM_SAMPLES, max(4, ARM_MACS_BUDGET // max(macs, 1))))
    fixed = build.fixed_batch
    batch = fixed or min(n, 8)
    runs = 5
    # The run depends only on the artifact, the inputs, the core and the userland: kept on disk (a second profile
    # of the same build, or of an identical one, does not emulate it again).
    h = hashlib.sha256(f"{core.qemu_cpu} {core.midr} {arm64.userland_dir().name} {runs} {batch}".encode())
    h.update(artifact.read_bytes())
    h.update(np.ascontiguousarray(x[:max(n, fixed or 1)]).tobytes())
    cached = arm64.cache_root() / "profiles" / f"{h.hexdigest()[:24]}.npz"
    try:
        with np.load(cached) as c:
            empty, counts, arm_outputs = list(c["empty"]), list(c["counts"]), c["outputs"]
    except (OSError, ValueError, KeyError):
        with tempfile.TemporaryDirectory(prefix="edgekit-arm.") as tmp:
            tmp = Path(tmp)
            onnx.save(empty_model(), str(tmp / "empty.onnx"))
            np.savez(tmp / "feeds.npz", x=np.ascontiguousarray(x[:fixed or 1]))
            np.savez(tmp / "samples.npz", x=np.ascontiguousarray(x[:n]))
            run = arm64.run_python(core, ARM_GUEST, [str(artifact), str(tmp / "empty.onnx"), str(tmp / "feeds.npz"),
                                                     str(tmp / "samples.npz"), str(tmp / "outputs.npy"), str(runs),
                                                     str(batch)], tmp)
            arm_outputs = np.load(tmp / "outputs.npy")
        empty, counts = run.between(1, 2), run.between(3, 4)
        cached.parent.mkdir(parents=True, exist_ok=True)
        partial = cached.with_name(f".{cached.stem}.{os.getpid()}.npz")
        np.savez(partial, empty=np.array(empty), counts=np.array(counts), outputs=arm_outputs)
        os.replace(partial, cached)
    instructions = int(np.median(counts)) - int(np.median(empty))
    cpi, clock = profile.number("cost", "cpi", 1.0), profile.clock_hz.value
    ref = reference[:n]
    return {
        "core": profile.core, "profile": profile.name, "qemu_cpu": core.qemu_cpu, "artifact": artifact.name,
        "instructions": instructions, "instructions_runs": [c - int(np.median(empty)) for c in counts],
        "session_run_instructions": int(np.median(empty)),
        "cpi": cpi, "cpi_source": profile.cost["cpi"].source if "cpi" in profile.cost else "none: 1 assumed",
        "clock_hz": clock, "latency_ms": instructions * cpi / clock * 1e3,
        "samples": n,
        "max_abs_diff_vs_host": float(np.max(np.abs(arm_outputs - host_outputs[:n]))),
        "top1_agreement_vs_host": float(np.mean(arm_outputs.argmax(-1) == host_outputs[:n].argmax(-1))),
        "max_abs_err": float(np.max(np.abs(arm_outputs - ref))),
        "top1_agreement": float(np.mean(arm_outputs.argmax(-1) == ref.argmax(-1))),
        "accuracy": float(np.mean(arm_outputs.argmax(-1) == y[:n])) if y is not None else None,
        "note": "instructions exclude Python's session.run itself (an empty model's run, measured in the same "
                "process); the app calls ONNX Runtime from Kotlin/Swift/C++",
    }


def _profile_stream(out: Path, report: dict, build, data, repeat: int, warmup: int) -> dict:
    """A streaming step (``--streaming``): every test window stepped frame by frame from the initial state, the
    output after its last frame compared with the windowed model's; latency per new frame."""
    x, reference = data["x"], data["reference"]
    y = data["y"] if "y" in data.files else None
    init = [data[f"state_{i}"] for i in range(len(build.stream["state_names"]))]
    frames = x.shape[2]
    flush = build.stream.get("flush_steps")  # a model that looks ahead: its step takes pad_into too
    frame_mode = [np.array([-1.0], np.float32)] if flush is not None else []
    with progress_bar() as progress:
        sess = session(out / "model.onnx")
        names = [i.name for i in sess.get_inputs()]
        task = progress("windows, frame by frame", len(x))
        outputs = []
        for window in x:
            state = init
            for t in range(frames):
                y_t, *state = sess.run(None, dict(zip(names, [window[None, :, t:t + 1]] + state + frame_mode)))
            for k in flush or []:  # end the window as the windowed model does
                pad = [np.zeros_like(window[None, :, :1]), *state, np.array([float(k)], np.float32)]
                y_t, *state = sess.run(None, dict(zip(names, pad)))
            outputs.append(y_t[0])
            task(1)
        outputs = np.stack(outputs)
        feed = dict(zip(names, [x[:1, :, :1]] + init + frame_mode))
        task = progress("latency per frame", repeat)
        times = time_runs(lambda: sess.run(None, feed), repeat, warmup, step=task)
    measured = {
        "runtime": f"onnxruntime {_ort_version()} CPUExecutionProvider, {THREADS} intra-op thread, the streaming step",
        "host": f"{platform.machine()} {_cpu_name()}",
        "note": "latency_per_frame_ms is one step (one new frame) on this host's CPU with one thread, not on a "
                "phone; latency_window_ms is a whole window's frames, stepped (the estimate is for the windowed model, "
                "so no latency error is given)",
        "samples": int(len(x)), "frames": int(frames), "state_bytes": int(build.stream["state_bytes"]),
        "max_abs_err": float(np.max(np.abs(outputs - reference))),
        "mean_abs_err": float(np.mean(np.abs(outputs - reference))),
        "top1_agreement": float(np.mean(outputs.argmax(-1) == reference.argmax(-1))),
        "accuracy": float(np.mean(outputs.argmax(-1) == y)) if y is not None else None,
        "reference_accuracy": float(np.mean(reference.argmax(-1) == y)) if y is not None else None,
        "latency_per_frame_ms": float(np.median(times)), "latency_p90_ms": float(np.percentile(times, 90)),
        "latency_min_ms": float(np.min(times)), "latency_window_ms": float(np.median(times)) * frames,
        "latency_batch": 1, "latency_runs": int(repeat), "threads": THREADS,
        "flash_bytes": (out / "model.onnx").stat().st_size, "ort_bytes": (out / "model.ort").stat().st_size,
        "layers": [],
    }
    measured["fidelity"] = fidelity.measure(outputs, reference, y, fidelity.classifies(report))
    return measured


# ---- the per-operator profile -------------------------------------------------------------------------------------


def _operator_profile(path: Path, feed: dict, node_layers: dict[str, str], step=None) -> list[dict]:
    """ORT's own trace of ``PROFILED_RUNS`` runs (after one untraced-in-the-average warm-up run), per layer.

    Returns rows {layer, op_type, time_us, nodes} in execution order — ``layer`` is the edgekit layer when the ONNX
    node's name (or the prefix ORT keeps when it fuses nodes: ``node_Conv_810_token_1``) is in the compile-time map,
    else the ORT node name. Times are averages per run, in microseconds.
    """
    with tempfile.TemporaryDirectory() as tmp:
        sess = session(path, profile_prefix=os.path.join(tmp, "ort"))
        for _ in range(PROFILED_RUNS + 1):
            sess.run(None, feed)
            if step:
                step(1)
        trace = json.loads(Path(sess.end_profiling()).read_text())
    runs = sorted((e for e in trace if e.get("cat") == "Session" and e.get("name") == "model_run"),
                  key=lambda e: e["ts"])
    if not runs:
        return []
    first_end = runs[0]["ts"] + runs[0]["dur"]
    timed = len(runs) - 1 or 1
    rows: dict[str, dict] = {}
    keys = sorted(node_layers, key=len, reverse=True)
    for e in trace:
        if e.get("cat") != "Node" or not e["name"].endswith("_kernel_time"):
            continue
        args = e.get("args", {})
        node = e["name"][: -len("_kernel_time")]
        if e["ts"] < first_end and len(runs) > 1:
            continue  # the first run warms caches up
        layer = _layer_of(node, node_layers, keys)
        row = rows.setdefault(layer or node, {"layer": layer or node, "op_type": [], "time_us": 0.0, "nodes": [],
                                              "mapped": layer is not None})
        op = args.get("op_name", "")
        if op and op not in row["op_type"]:
            row["op_type"].append(op)
        if node not in row["nodes"]:
            row["nodes"].append(node)
        row["time_us"] += float(e.get("dur", 0)) / timed
    for row in rows.values():
        row["op_type"] = "+".join(row["op_type"])
        row["time_us"] = round(row["time_us"], 2)
    return list(rows.values())


def _layer_of(node: str, node_layers: dict[str, str], keys: list[str]) -> str | None:
    if node in node_layers:
        return node_layers[node]
    for k in keys:  # longest first: ORT names fused or rewritten nodes '<original>_<suffix>'
        if node.startswith(k) and node[len(k)] == "_":
            return node_layers[k]
    return None


# ---- small helpers ------------------------------------------------------------------------------------------------


def _ort_version() -> str:
    import onnxruntime as ort

    return ort.__version__


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "CPU"


