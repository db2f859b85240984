"""What a recurrent model's step program measures on the emulated board: instructions per step and per sequence,
per layer, and the EGRU's activity sparsity.

Where it sits: runtimes/ (Artifact -> Measured), called by runtimes/mcu.py for builds whose report carries
``build['streaming']`` (targets/mcu/streaming.py). The test firmware (templates/streaming/main.c.j2) resets the
model before each test sequence and calls ``ek_marker()`` before and after every step; the driver adds one after every
kernel call. Per step that is K + 2 markers for K calls, for T steps of each of n sequences.
"""
from __future__ import annotations

import re

import numpy as np

from edgekit.errors import FirmwareError

_EVENTS = re.compile(r"^EK_EVENTS (\d+) (\d+)$")
# An EGRU unit whose state comes this close to its threshold fires or not depending on float32 rounding (summation
# order, expf/tanhf): a float32 build may then differ from PyTorch from that step on, and that is not a defect.
EVENT_MARGIN = 1e-5


def step_measurements(run, build: dict, n: int, board: str, macs: int, ref=None) -> dict:
    """Measured figures of a step program's run; ``ref`` (reference.npz) may hold the host reference's event counts."""
    stream = build["streaming"]
    T = int(stream["steps_per_sequence"])
    layers_of = build.get("step_layers", [])
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
        "runtime": f"QEMU {board} (instruction-exact TCG plugin)", "test_inputs": n, "steps_per_sequence": T,
        "instructions": instructions,
        "instructions_note": "per test sequence (sum of its steps); instructions_per_step: one call of "
                             "edgekit_model_step",
        "instructions_min": int(per_sequence.min()), "instructions_max": int(per_sequence.max()),
        "instructions_per_step": int(np.median(per_step)),
        "instructions_per_step_min": int(per_step.min()), "instructions_per_step_max": int(per_step.max()),
        "instructions_per_step_mean": float(per_step.mean()),
        "instructions_per_mac": instructions / macs if macs else None,
    }
    layers: dict[str, dict] = {}
    mean_call = per_call.mean(axis=(0, 1))
    for k, (name, macs_s, kernel) in enumerate(zip(layers_of, build.get("step_macs", []),
                                                    build.get("step_kernels", []))):
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
    units = int(stream.get("event_units") or 0)
    if units:
        events = parse_events(run.output, n)
        measured["events"] = int(events.sum())
        measured["event_slots"] = int(n * T * units)
        measured["activity_sparsity"] = 1.0 - float(events.sum()) / (n * T * units)
        measured["activity_sparsity_note"] = ("fraction of (sequence, step, event-based unit) without an event, over "
                                              "the test sequences, counted on the device")
        measured["events_per_sequence"] = [int(e) for e in events]
        if ref is not None and "events" in ref.files:  # int8: the host reference computes the same events
            measured["events_match"] = bool(np.array_equal(np.asarray(ref["events"]), events))
    return measured


def parse_events(text: str, n: int) -> np.ndarray:
    rows = {}
    for line in text.splitlines():
        m = _EVENTS.match(line.strip())
        if m:
            rows[int(m[1])] = int(m[2])
    if len(rows) != n:
        raise FirmwareError(f"the firmware printed event counts for {len(rows)} of {n} sequences")
    return np.array([rows[i] for i in range(n)], np.int64)


def float_event_check(got: np.ndarray, expected: np.ndarray, margin: np.ndarray, atol: float, rtol: float) -> dict:
    """float32 EGRU outputs against PyTorch: within atol + rtol·|y|, except sequences in which some unit's state came
    within EVENT_MARGIN of its threshold (an event decided by rounding); those are counted as ``event_flips``."""
    n = len(expected)
    ok = (np.abs(got - expected) <= atol + rtol * np.abs(expected)).reshape(n, -1).all(axis=1)
    flips = ~ok & (np.asarray(margin) < EVENT_MARGIN)
    return {"outputs_match": bool(np.all(ok | flips)), "event_flips": int(flips.sum()),
            "tolerance": f"|device - torch| <= {atol} + {rtol}·|torch|, except sequences where an EGRU state came "
                         f"within {EVENT_MARGIN:g} of its threshold (event decided by float rounding; counted in "
                         "event_flips)"}
