"""The MCU runtime: run a compiled artifact's firmware on its platform's emulated board and measure it.

Where it sits: Artifact -> measurements for the ``mcu`` targets, any platform (Cortex-M, RISC-V): the build's
record (targets/mcu/records.py: ``McuBuild``, read back from report.json) names the platform and board. Runs
OUT/firmware/firmware.elf under QEMU (runtimes/qemu.py), reads every output the firmware printed, checks it against
the host reference the target saved (OUT/reference.npz: int8 codes of edgekit's integer reference, or PyTorch's
float outputs), and records exact instruction counts — per inference, or for a streaming step program per step and
per sequence — sizes from the ELF, the stack high-water mark and accuracy.

Markers: a one-shot firmware calls ``ek_marker()`` before each inference, after every kernel call
(EDGEKIT_PROFILE_STEPS) and after the inference: K + 2 markers for K calls. A streaming firmware resets the model
before each test sequence and brackets every step the same way: K + 2 markers per step, T steps per sequence.

Tolerances: int8 outputs must equal the host reference exactly (same integer arithmetic, edgekit/qmath.py);
float32 outputs must match PyTorch within 1e-4 absolute + 1e-4 relative (different summation order and libm).
"""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np

from edgekit import fidelity
from edgekit.errors import FirmwareError, ToolchainError
from edgekit.runtimes.qemu import run_elf
from edgekit.targets.mcu.platforms import get_platform
from edgekit.targets.mcu.records import McuBuild

FLOAT_ATOL = 1e-4
FLOAT_RTOL = 1e-4
_OUT = re.compile(r"^EK_OUT (\d+) ([0-9a-f]*)$")
_EVENTS = re.compile(r"^EK_EVENTS (\d+) (\d+)$")
# An EGRU unit whose state comes this close to its threshold fires or not depending on float32 rounding (summation
# order, expf/tanhf): a float32 build may then differ from PyTorch from that step on, and that is not a defect.
EVENT_MARGIN = 1e-5


def parse_outputs(text: str, n: int, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    rows = {}
    for line in text.splitlines():
        m = _OUT.match(line.strip())
        if m:
            rows[int(m[1])] = bytes.fromhex(m[2])
    if len(rows) != n:
        last = text.strip().splitlines()[-1] if text.strip() else "(no output)"
        raise FirmwareError(f"the firmware printed {len(rows)} of {n} outputs; last line: {last[:200]}")
    np_dtype = np.int8 if dtype == "int8" else np.float32
    return np.stack([np.frombuffer(rows[i], dtype=np_dtype).reshape(shape) for i in range(n)])


def _inference_measurements(run, build: McuBuild, n: int, where: str, macs: int) -> dict:
    """Instructions per inference and per layer from the markers of a one-shot model's firmware."""
    # Markers: one before each inference, one after every step (EDGEKIT_PROFILE_STEPS), one after the inference.
    steps = len(build.step_layers)
    counts = run.marker_counts
    per_marker = steps + 2
    if len(counts) != n * per_marker:
        raise FirmwareError(f"expected {n * per_marker} instruction markers from {n} inferences, got {len(counts)}")
    per_inference = [counts[i * per_marker + per_marker - 1] - counts[i * per_marker] for i in range(n)]
    first = counts[:per_marker]
    step_instr = [b - a for a, b in zip(first[:-2], first[1:-1])]
    instructions = int(np.median(per_inference)) if per_inference else None
    measured: dict = {"runtime": f"QEMU {where} (instruction-exact TCG plugin)", "test_inputs": n,
                      "instructions": instructions,
                      "instructions_min": int(min(per_inference)) if per_inference else None,
                      "instructions_max": int(max(per_inference)) if per_inference else None,
                      "instructions_per_mac": (instructions / macs) if instructions and macs else None}
    layers: dict[str, dict] = {}
    for name, instr, macs_s, kernel in zip(build.step_layers, step_instr, build.step_macs, build.step_kernels):
        row = layers.setdefault(name, {"name": name, "instructions": 0, "macs": 0, "kernels": []})
        row["instructions"] += int(instr)
        row["macs"] += int(macs_s)
        if kernel not in row["kernels"]:
            row["kernels"].append(kernel)
    for row in layers.values():
        row["instructions_per_mac"] = row["instructions"] / row["macs"] if row["macs"] else None
    measured["layers"] = list(layers.values())
    measured["step_instructions"] = [int(v) for v in step_instr]  # the first inference's, as build['step_layers']
    return measured


def _step_measurements(run, build: McuBuild, n: int, where: str, macs: int, ref=None) -> dict:
    """Measured figures of a step program's run: instructions per step and per sequence, per layer, and the EGRU's
    activity sparsity; ``ref`` (reference.npz) may hold the host reference's event counts."""
    stream = build.streaming
    T = int(stream.steps_per_sequence)
    layers_of = build.step_layers
    K = len(layers_of)
    per = K + 2
    counts = np.asarray(run.marker_counts, np.int64)
    if len(counts) != n * T * per:
        raise FirmwareError(f"expected {n * T * per} instruction markers from {n} sequences of {T} steps, got "
                            f"{len(counts)}")
    counts = counts.reshape(n, T, per)
    per_step = counts[:, :, -1] - counts[:, :, 0]                  # [n, T]
    per_call = np.diff(counts[:, :, :-1], axis=2)                   # [n, T, K]: each call (the first with the copy-in)
    per_sequence = per_step.sum(axis=1)
    instructions = int(np.median(per_sequence))
    measured: dict = {
        "runtime": f"QEMU {where} (instruction-exact TCG plugin)", "test_inputs": n, "steps_per_sequence": T,
        "instructions": instructions,
        "instructions_note": "per test sequence (sum of its steps); instructions_per_step: one call of "
                             "edgekit_model_step",
        "instructions_min": int(per_sequence.min()), "instructions_max": int(per_sequence.max()),
        # a conv stream's steps differ by design (layers after a time stride run on some frames only): its figure
        # per step is the mean, instructions per new frame; a recurrent step's the median
        "instructions_per_step": int(round(per_step.mean())) if stream.conv_stream else int(np.median(per_step)),
        "instructions_per_step_min": int(per_step.min()), "instructions_per_step_max": int(per_step.max()),
        "instructions_per_step_mean": float(per_step.mean()),
        "instructions_per_mac": instructions / macs if macs else None,
    }
    if stream.conv_stream:  # after every layer has fired once: the steady state a device streaming on runs in
        steady = _steady_from(per_call)
        if steady is not None:
            measured["instructions_per_step_steady"] = float(per_step[:, steady[0]:steady[1]].mean())
            measured["steady_from_step"] = steady[0]
    layers: dict[str, dict] = {}
    mean_call = per_call.mean(axis=(0, 1))
    for k, (name, macs_s, kernel) in enumerate(zip(layers_of, build.step_macs, build.step_kernels)):
        row = layers.setdefault(name, {"name": name, "instructions": 0, "instructions_per_step": 0.0, "macs": 0,
                                       "kernels": []})
        row["instructions_per_step"] += float(mean_call[k])
        row["macs"] += int(macs_s) * T
        if kernel not in row["kernels"]:
            row["kernels"].append(kernel)
    for row in layers.values():
        row["instructions"] = int(round(row["instructions_per_step"] * T))
        row["instructions_per_mac"] = row["instructions"] / row["macs"] if row["macs"] else None
    measured["layers"] = list(layers.values())
    measured["step_instructions"] = [round(float(v), 1) for v in mean_call]  # mean per call, as build['step_layers']
    for line in run.output.splitlines():
        if line.startswith("EK_STATE "):
            measured["state_bytes"] = int(line.split()[1])
    units = int(stream.event_units or 0)
    if units:
        events = _parse_events(run.output, n)
        measured["events"] = int(events.sum())
        measured["event_slots"] = int(n * T * units)
        measured["activity_sparsity"] = 1.0 - float(events.sum()) / (n * T * units)
        measured["activity_sparsity_note"] = ("fraction of (sequence, step, event-based unit) without an event, over "
                                              "the test sequences, counted on the device")
        measured["events_per_sequence"] = [int(e) for e in events]
        if ref is not None and "events" in ref.files:  # int8: the host reference computes the same events
            measured["events_match"] = bool(np.array_equal(np.asarray(ref["events"]), events))
    return measured


# A call of a conv stream whose guard does not fire costs the driver's test alone, a few instructions; one that runs,
# hundreds (a cache push of a row) or more.
SKIPPED_CALL_INSTRUCTIONS = 64


def _steady_from(per_call: np.ndarray) -> tuple[int, int] | None:
    """Steps [t0, t1) of a conv stream's test sequences in the steady state: from the first step by which every
    call that ever runs has run once (the deeper layers wait for their caches to fill after a reset), over a whole
    number of 4 steps (the time strides' periods: 1, 2 or 4); None when fewer than 4 steps are left."""
    ran = per_call > SKIPPED_CALL_INSTRUCTIONS                       # [n, T, K]
    any_ran = ran.any(axis=0)                                        # [T, K]
    firsts = [int(np.argmax(any_ran[:, k])) for k in range(any_ran.shape[1]) if any_ran[:, k].any()]
    t0 = max(firsts, default=0)
    length = (per_call.shape[1] - t0) // 4 * 4
    return (t0, t0 + length) if length >= 4 else None


def _parse_events(text: str, n: int) -> np.ndarray:
    rows = {}
    for line in text.splitlines():
        m = _EVENTS.match(line.strip())
        if m:
            rows[int(m[1])] = int(m[2])
    if len(rows) != n:
        raise FirmwareError(f"the firmware printed event counts for {len(rows)} of {n} sequences")
    return np.array([rows[i] for i in range(n)], np.int64)


def _float_event_check(got: np.ndarray, expected: np.ndarray, margin: np.ndarray, atol: float, rtol: float) -> dict:
    """float32 EGRU outputs against PyTorch: within atol + rtol·|y|, except sequences in which some unit's state came
    within EVENT_MARGIN of its threshold (an event decided by rounding); those are counted as ``event_flips``."""
    n = len(expected)
    ok = (np.abs(got - expected) <= atol + rtol * np.abs(expected)).reshape(n, -1).all(axis=1)
    flips = ~ok & (np.asarray(margin) < EVENT_MARGIN)
    return {"outputs_match": bool(np.all(ok | flips)), "event_flips": int(flips.sum()),
            "tolerance": f"|device - torch| <= {atol} + {rtol}·|torch|, except sequences where an EGRU state came "
                         f"within {EVENT_MARGIN:g} of its threshold (event decided by float rounding; counted in "
                         "event_flips)"}


def check_outputs(got: np.ndarray, ref, n: int, report: dict) -> dict:
    """The firmware's outputs for the first ``n`` test inputs against the host reference (OUT/reference.npz: int8
    bit for bit, float32 within the tolerance) and against the float model (fidelity), and the accuracy."""
    expected = ref["expected"][:n]
    dtype = report["dtype"]
    measured: dict = {}
    if dtype == "int8":
        diff = np.abs(got.astype(np.int32) - expected.astype(np.int32))
        measured["outputs_match"] = bool(diff.max() == 0)
        measured["max_abs_err_lsb"] = int(diff.max())
        measured["mismatched_outputs"] = int((diff.reshape(n, -1).max(axis=1) > 0).sum())
        scores = (got.astype(np.float32) - float(ref["out_zp"])) * float(ref["out_scale"])
    else:
        err = np.abs(got - expected)
        measured["outputs_match"] = bool(np.all(err <= FLOAT_ATOL + FLOAT_RTOL * np.abs(expected)))
        measured["max_abs_err"] = float(err.max())
        measured["tolerance"] = f"|device - torch| <= {FLOAT_ATOL} + {FLOAT_RTOL}·|torch|"
        if "event_margin" in ref.files:  # EGRU: events decided by float rounding
            measured.update(_float_event_check(got, expected, ref["event_margin"][:n], FLOAT_ATOL, FLOAT_RTOL))
        scores = got
    float_expected = ref["float_expected"][:n] if "float_expected" in ref.files else expected
    y = ref["y"][:n] if "y" in ref.files else None
    measured["fidelity"] = fidelity.measure(scores.reshape(n, -1), float_expected.reshape(n, -1), y,
                                            fidelity.classifies(report))
    if y is not None:
        measured["accuracy"] = float((scores.reshape(n, -1).argmax(-1) == y).mean())
        if "reference_accuracy" in ref.files:
            measured["reference_accuracy"] = float(ref["reference_accuracy"])
        if "float_accuracy" in ref.files:
            measured["float_accuracy"] = float(ref["float_accuracy"])
    return measured


def profile(out: Path, report: dict, timeout_s: float | None = None, device=None, board: str | None = None,
            flash_method: str = "auto", baud: int | None = None, samples: int | None = None, **_) -> dict:
    """Run OUT's firmware on the emulated board and measure it; returns report['measured'], keeping the figures
    measured on boards earlier (``devices``). With ``device`` (a serial port; ``board``, ``flash_method``, ``baud``
    and ``samples`` as in runtimes/board.py) the board is measured and its figures added under
    ``devices.<board>``, beside the emulated ones — measured first when the report has none and the emulator is
    installed (cycles per instruction need them)."""
    out = Path(out)
    build = McuBuild.from_json(report.get("build") or {})
    platform = get_platform(build.platform)
    earlier = report.get("measured") or {}
    if device is not None:
        from edgekit.runtimes import board as board_runtime

        measured = earlier
        if measured.get("instructions") is None and shutil.which(platform.emulator):
            measured = profile(out, report, timeout_s=timeout_s)
        found = board_runtime.profile(out, {**report, "measured": measured}, device, board=board,
                                      flash_method=flash_method, baud=baud, samples=samples, timeout_s=timeout_s)
        return {**measured, "devices": {**(measured.get("devices") or {}), found["board"]: found}}
    elf = out / "firmware" / "firmware.elf"
    if not elf.exists():
        raise ToolchainError(f"{elf}: no firmware was built (the cross-compiler was missing at compile time); "
                             f"{platform.install_hint}, then compile again")
    ref = np.load(out / "reference.npz")
    expected = ref["expected"]
    n = len(expected)
    dtype = report["dtype"]
    macs = int(report["model"]["macs"])
    points = build.operating_points or []
    # A generous limit: ~20 instructions per MAC at a slow emulator speed, plus start-up (a nested image runs
    # every test input at every operating point).
    run_macs = sum(int(p["macs"]) for p in points) if points else macs
    limit = timeout_s or max(60.0, n * (run_macs * 20) / 20e6 + 30)
    run = run_elf(elf, build.board, timeout_s=limit, count_instructions=True, platform=platform)
    where = build.qemu_machine
    if points:
        rows = _operating_point_measurements(run, build, out, report, n, where)
        measured = {k: v for k, v in rows[-1].items() if k not in ("index", "budget")}  # the widest: the main figures
        measured["operating_points"] = rows
    elif build.streaming is not None:  # a step program: markers around every step of every test sequence
        got = parse_outputs(run.output, n, dtype, expected.shape[1:])
        measured = _step_measurements(run, build, n, where, macs, ref)
        measured.update(check_outputs(got, ref, n, report))
    else:
        got = parse_outputs(run.output, n, dtype, expected.shape[1:])
        measured = _inference_measurements(run, build, n, where, macs)
        measured.update(check_outputs(got, ref, n, report))
    stack = None
    arena = None
    for line in run.output.splitlines():
        if line.startswith("EK_STACK "):
            stack = int(line.split()[1])
        if line.startswith("EK_ARENA "):
            arena = int(line.split()[1])
    measured["stack_bytes"] = stack
    measured["arena_bytes"] = arena if arena is not None else (build.elf.elf_arena_bytes if build.elf else None)
    measured["flash_bytes"] = build.elf.model_flash_bytes if build.elf else None
    static_ram = build.elf.static_ram_bytes if build.elf else 0
    measured["sram_bytes"] = static_ram + (stack or 0)
    clock = report["target_profile"]["clock_hz"]
    instructions = measured["instructions"]
    if instructions:
        est = report.get("estimate") or {}
        cpi = est["cycles"] / est["instructions"] if est.get("cycles") and est.get("instructions") else 1.0
        measured["cycles_estimate"] = int(round(instructions * cpi))
        measured["latency_ms"] = instructions * cpi / clock * 1e3
        measured["latency_note"] = (f"measured instructions × {cpi:.3g} cycles per instruction (the profile's "
                                    f"estimate, per kind of kernel) / clock: QEMU counts instructions, not cycles")
    # Fit against the device, with what was measured.
    prof = report["target_profile"]
    reasons, fits = [], True
    for what, need, have in (("SRAM", measured["sram_bytes"], prof["sram_bytes"]),
                             ("flash", measured["flash_bytes"], prof["flash_bytes"])):
        if need is None:
            continue
        if need > have:
            fits = False
            reasons.append(f"{what}: needs {need:,} B of {have:,} B ({need - have:,} B over) — measured")
        else:
            reasons.append(f"{what}: {need:,} B of {have:,} B ({need / have:.0%}) — measured")
    measured["fits_measured"] = fits
    measured["fit_reasons"] = reasons
    for row in measured.get("operating_points", []):  # each point's latency and energy from its instructions
        est = row.pop("estimate", {})
        if row.get("instructions") and est.get("instructions"):
            scale = row["instructions"] / est["instructions"]
            row["latency_ms"] = est["latency_ms"] * scale
            row["energy_uj"] = est["energy_uj"] * scale
            row["energy_note"] = "the point's estimated energy scaled by its measured instructions"
        row["estimated_instructions"] = est.get("instructions")
        row["sram_bytes"] = measured["sram_bytes"]
    if not measured["outputs_match"] or not all(r["outputs_match"] for r in measured.get("operating_points", [])):
        measured["warning"] = "firmware outputs differ from the host reference"
    if earlier.get("devices"):
        measured["devices"] = earlier["devices"]
    return measured


def _operating_point_measurements(run, build: McuBuild, out: Path, report: dict, n: int, where: str) -> list[dict]:
    """Per operating point of a nested image: instructions (per inference and per layer) from its stretch of the
    markers, its outputs against its own host reference (reference_op<k>.npz: bit for bit) and the float model."""
    import dataclasses
    from types import SimpleNamespace

    points = build.operating_points
    counts = list(run.marker_counts)
    ref0 = np.load(out / points[-1]["reference"])
    got = parse_outputs(run.output, n * len(points), report["dtype"], ref0["expected"].shape[1:])
    rows, pos = [], 0
    for k, point in enumerate(points):
        per = len(point["step_layers"]) + 2
        seg = counts[pos:pos + n * per]
        pos += n * per
        view = dataclasses.replace(build, step_layers=point["step_layers"], step_macs=point["step_macs"],
                                   step_kernels=point["step_kernels"])
        row = _inference_measurements(SimpleNamespace(marker_counts=seg), view, n, where, int(point["macs"]))
        row.update(check_outputs(got[k * n:(k + 1) * n], np.load(out / point["reference"]), n, report))
        row.update(index=k, budget=point["budget"], macs=int(point["macs"]), arena_bytes=int(point["arena_bytes"]),
                   estimate=point.get("estimate") or {})
        rows.append(row)
    if pos != len(counts):
        raise FirmwareError(f"expected {pos} instruction markers from {len(points)} operating points x {n} inferences,"
                            f" got {len(counts)}")
    return rows


_STEP = re.compile(r"^EK_STEP (\d+) ([0-9a-f]*)$")


def stream(out: Path, frames: np.ndarray, timeout_s: float | None = None) -> dict:
    """Run OUT's streaming step program over one long stream ``frames`` [T, ...] (one step's input per row, the
    model's layout: a conv stream's [T, C, F] frames or a recurrent model's [T, features]; float values) on the
    emulated board, from one reset, and return every step's output and instruction count.

    The firmware is OUT's own (same model sources and flags) with another harness: the stream as its one test sequence
    and the output printed after every step. Returns ``outputs`` [T, ...] (float: dequantized for int8),
    ``instructions`` [T] (per step, exact), ``frames`` and the board."""
    import json
    import tempfile

    from edgekit.targets.mcu import codegen, toolchain

    out = Path(out)
    report = json.loads((out / "report.json").read_text())
    build = McuBuild.from_json(report.get("build") or {})
    if build.streaming is None:
        raise FirmwareError(f"{out}: not a streaming build; compile it with --streaming (conv models over time) or "
                            "compile a recurrent model")
    platform = get_platform(build.platform)
    ref = np.load(out / "reference.npz")
    frames = np.asarray(frames, np.float32)
    step_shape = tuple(int(d) for d in build.streaming.input_shape)
    per_step = int(np.prod(step_shape))
    if frames.ndim < 2 or int(np.prod(frames.shape[1:])) != per_step:
        raise FirmwareError(f"stream of shape {frames.shape}: each row must be one step's input "
                            f"({per_step} values, the model's step input {step_shape})")
    if frames.ndim == 3:  # [T, C, F] -> the device's [T, F, C]
        frames = np.ascontiguousarray(frames.transpose(0, 2, 1))
    x = frames.reshape(1, len(frames), per_step)
    if build.dtype == "int8":
        if "in_scale" not in ref.files:
            raise FirmwareError(f"{out}: reference.npz lacks the input quantization; compile it again")
        x = np.clip(np.round(x / float(ref["in_scale"])) + int(ref["in_zp"]), -128, 127).astype(np.int8)
    with tempfile.TemporaryDirectory(prefix="ek-stream-") as tmp:
        fw = Path(tmp) / "firmware"
        shutil.copytree(out / "firmware", fw, ignore=shutil.ignore_patterns("*.elf", "obj", "edgekit_testdata.*",
                                                                            "main.c"))
        codegen.write_harness(fw, report["model"]["name"], build.dtype, True, x, build.board,
                              int(build.streaming.event_units or 0), print_steps=True)
        src = out / "src"
        sources = sorted(src.glob("*.c")) + sorted(p for p in fw.glob("*.c"))
        elf = fw / "stream.elf"
        toolchain.compile_firmware(platform, sources, [src, src / "include", fw], build.cflags.split(),
                                   platform.link_flags(fw / "link.ld"), fw, elf)
        limit = timeout_s or max(120.0, len(frames) * 0.05 + 60)
        run = run_elf(elf, build.board, timeout_s=limit, count_instructions=True, platform=platform)
    rows = {}
    for line in run.output.splitlines():
        m = _STEP.match(line.strip())
        if m:
            rows[int(m[1])] = bytes.fromhex(m[2])
    if len(rows) != len(frames):
        raise FirmwareError(f"the firmware printed {len(rows)} of {len(frames)} step outputs")
    dt = np.int8 if build.dtype == "int8" else np.float32
    outputs = np.stack([np.frombuffer(rows[t], dtype=dt) for t in range(len(frames))]).astype(np.float32)
    if build.dtype == "int8":
        outputs = (outputs - float(ref["out_zp"])) * float(ref["out_scale"])
    counts = np.asarray(run.marker_counts, np.int64).reshape(len(frames), len(build.step_layers) + 2)
    return {"outputs": outputs, "instructions": counts[:, -1] - counts[:, 0], "frames": len(frames),
            "board": build.qemu_machine, "clock_hz": report["target_profile"]["clock_hz"]}
