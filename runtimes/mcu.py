"""Cortex-M runtime: run a compiled artifact's firmware on the emulated board and measure it.

Where it sits: Artifact -> measurements for the ``mcu`` targets. Runs OUT/firmware/firmware.elf under QEMU
(runtimes/qemu.py), reads every output the firmware printed, checks it against the host reference the target saved
(OUT/reference.npz: int8 codes of edgekit's integer reference, or PyTorch's float outputs), and records exact
instruction counts, sizes from the ELF, the stack high-water mark and accuracy.

Tolerances: int8 outputs must equal the host reference exactly (same integer arithmetic, edgekit/qmath.py);
float32 outputs must match PyTorch within 1e-4 absolute + 1e-4 relative (different summation order and libm).
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from edgekit.errors import FirmwareError, MismatchError
from edgekit.runtimes.qemu import run_elf

FLOAT_ATOL = 1e-4
FLOAT_RTOL = 1e-4
_OUT = re.compile(r"^EK_OUT (\d+) ([0-9a-f]*)$")


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


def _inference_measurements(run, build: dict, n: int, board: str, macs: int) -> dict:
    """Instructions per inference and per layer from the markers of a one-shot model's firmware."""
    # Markers: one before each inference, one after every step (EDGEKIT_PROFILE_STEPS), one after the inference.
    steps = len(build.get("step_layers", []))
    counts = run.marker_counts
    per_marker = steps + 2
    if len(counts) != n * per_marker:
        raise FirmwareError(f"expected {n * per_marker} instruction markers from {n} inferences, got {len(counts)}")
    per_inference = [counts[i * per_marker + per_marker - 1] - counts[i * per_marker] for i in range(n)]
    first = counts[:per_marker]
    step_instr = [b - a for a, b in zip(first[:-2], first[1:-1])]
    instructions = int(np.median(per_inference)) if per_inference else None
    measured: dict = {"runtime": f"QEMU {board} (instruction-exact TCG plugin)", "test_inputs": n,
                      "instructions": instructions,
                      "instructions_min": int(min(per_inference)) if per_inference else None,
                      "instructions_max": int(max(per_inference)) if per_inference else None,
                      "instructions_per_mac": (instructions / macs) if instructions and macs else None}
    layers: dict[str, dict] = {}
    for name, instr, macs_s, kernel in zip(build.get("step_layers", []), step_instr, build.get("step_macs", []),
                                           build.get("step_kernels", [])):
        row = layers.setdefault(name, {"name": name, "instructions": 0, "macs": 0, "kernels": []})
        row["instructions"] += int(instr)
        row["macs"] += int(macs_s)
        if kernel not in row["kernels"]:
            row["kernels"].append(kernel)
    for row in layers.values():
        row["instructions_per_mac"] = row["instructions"] / row["macs"] if row["macs"] else None
    measured["layers"] = list(layers.values())
    return measured


def profile(out: Path, report: dict, timeout_s: float | None = None, **_) -> dict:
    out = Path(out)
    build = report.get("build", {})
    elf = out / "firmware" / "firmware.elf"
    if not elf.exists():
        from edgekit.errors import ToolchainError
        from edgekit.targets.mcu.toolchain import INSTALL_HINT

        raise ToolchainError(f"{elf}: no firmware was built (the cross-compiler was missing at compile time); "
                             f"{INSTALL_HINT}, then compile again")
    ref = np.load(out / "reference.npz")
    expected = ref["expected"]
    n = len(expected)
    dtype = report["dtype"]
    board = build["qemu_machine"]
    macs = int(report["model"]["macs"])
    # A generous limit: ~20 instructions per MAC at a slow emulator speed, plus start-up.
    limit = timeout_s or max(60.0, n * (macs * 20) / 20e6 + 30)
    run = run_elf(elf, board, timeout_s=limit, count_instructions=True)
    got = parse_outputs(run.output, n, dtype, expected.shape[1:])
    stream = build.get("streaming")
    if stream:  # a recurrent model's step program: markers around every step of every test sequence
        from edgekit.runtimes.cortex_m_streaming import step_measurements

        measured = step_measurements(run, build, n, board, macs, ref)
    else:
        measured = _inference_measurements(run, build, n, board, macs)
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
        if "event_margin" in ref.files:  # EGRU: events decided by float rounding (runtimes/cortex_m_streaming.py)
            from edgekit.runtimes.cortex_m_streaming import float_event_check

            measured.update(float_event_check(got, expected, ref["event_margin"], FLOAT_ATOL, FLOAT_RTOL))
        scores = got
    if "y" in ref.files:
        y = ref["y"]
        measured["accuracy"] = float((scores.reshape(n, -1).argmax(-1) == y).mean())
        if "reference_accuracy" in ref.files:
            measured["reference_accuracy"] = float(ref["reference_accuracy"])
        if "float_accuracy" in ref.files:
            measured["float_accuracy"] = float(ref["float_accuracy"])
    stack = None
    arena = None
    for line in run.output.splitlines():
        if line.startswith("EK_STACK "):
            stack = int(line.split()[1])
        if line.startswith("EK_ARENA "):
            arena = int(line.split()[1])
    measured["stack_bytes"] = stack
    measured["arena_bytes"] = arena if arena is not None else build.get("elf_arena_bytes")
    measured["flash_bytes"] = build.get("model_flash_bytes")
    static_ram = build.get("static_ram_bytes", 0)
    measured["sram_bytes"] = static_ram + (stack or 0)
    clock = report["target_profile"]["clock_hz"]
    instructions = measured["instructions"]
    if instructions:
        measured["latency_ms"] = instructions / clock * 1e3
        measured["latency_note"] = "instructions / clock at 1 instruction per cycle (QEMU counts instructions)"
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
    if not measured["outputs_match"]:
        measured["warning"] = "firmware outputs differ from the host reference"
    return measured
