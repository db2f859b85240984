"""Streaming keyword spotting on the emulated Cortex-M7: a conv model with caches against recomputing its window, and
the recurrent models, one new 20 ms MFCC frame at a time.

For kws-dscnn (causal DS-CNN), kws-gru, kws-lmu, kws-ssm (two S4D layers) and kws-selective (two selective
scans), each in int8 and float32: built for cortex-m7, the test clips
(voices unseen in training; as many as the firmware's test-data budget holds) run frame by frame on QEMU
(mps2-an500), outputs checked against the host reference after each clip's last frame — for the conv stream the
*windowed* model's (int8: its integer reference, bit for bit). kws-dscnn is also built as a one-shot (windowed)
program: with a one-frame hop a windowed deployment recomputes the whole 49-frame window for every new frame, so its
instructions per new frame are its instructions per inference. Per row: accuracy on the device, instructions per new
frame (exact; the mean over a clip's frames), state and arena bytes, flash, and the duty cycle at the M7's clock
(instructions per second of audio at 50 frames/s ÷ 480 MHz, one instruction per cycle). The zoo's public DS-CNN
(random weights: its accuracy means nothing) runs both ways too: it looks 12 frames ahead, and its firmware ends each
window with a flush; so does the zoo's dilated TCN (Conv1d layers over [1, C, T], random weights, 15 frames ahead).

    .venv/bin/python bench/streaming.py              # writes bench/results/streaming.md
    .venv/bin/python bench/streaming.py --no-write --dtypes int8
    .venv/bin/python bench/streaming.py --only tcn   # the zoo TCN only; its rows replace those in streaming.md
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edgekit import api  # noqa: E402
from edgekit.speech import HOP_SAMPLES, SAMPLE_RATE  # noqa: E402
from edgekit.targets.profiles import get_profile  # noqa: E402

TARGET = "cortex-m7"
# (example, build mode): "stream" = a step program per new frame, "window" = the whole window per inference
RUNS = (("kws-dscnn", "window"), ("kws-dscnn", "stream"), ("kws-gru", "stream"), ("kws-lmu", "stream"),
        ("kws-ssm", "stream"), ("kws-selective", "stream"),
        # the zoo's public DS-CNN ('same' padding: looks 12 frames ahead; a flush ends each window; random weights)
        ("zoo-dscnn-kws", "window"), ("zoo-dscnn-kws", "stream"),
        # the zoo's dilated TCN (Conv1d over [1, C, T]; looks 15 frames ahead; random weights)
        ("zoo-tcn", "window"), ("zoo-tcn", "stream"))


def measure(name: str, mode: str, dtype: str, work: Path) -> dict:
    out = work / f"{name}-{mode}-{dtype}"
    started = time.monotonic()
    art = api.compile(name, TARGET, out, quantize="int8" if dtype == "int8" else None,
                      streaming=mode == "stream", patch="off")
    rep = api.profile(out).report
    m, est = rep["measured"], rep["estimate"]
    per_frame = m["instructions_per_step_mean"] if mode == "stream" else m["instructions"]
    # the estimate prices a conv stream's steady state: against the steps after every layer has fired once
    steady = m.get("instructions_per_step_steady", per_frame) if mode == "stream" else per_frame
    estimated = est["instructions_per_step"] if mode == "stream" else est["instructions"]
    return {"model": name, "mode": mode, "dtype": dtype, "params": int(rep["model"]["params"]),
            "clips": m["test_inputs"], "accuracy": m.get("accuracy"), "all_clips": m.get("reference_accuracy"),
            "float_accuracy": m.get("float_accuracy", m.get("reference_accuracy")),
            "match": m.get("outputs_match"), "per_frame": float(per_frame), "steady_per_frame": float(steady),
            "estimated_per_frame": float(estimated),
            "state_bytes": int(art.report["build"].get("state_bytes") or 0), "arena_bytes": int(m["arena_bytes"]),
            "flash_bytes": int(m["flash_bytes"]), "sram_bytes": int(m["sram_bytes"]),
            "seconds": time.monotonic() - started}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dtypes", nargs="+", default=["int8", "float32"])
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--only", default=None, help="only the examples whose name contains this text; their rows "
                    "replace the same rows of bench/results/streaming.md (the others stay)")
    args = ap.parse_args(argv)
    clock = get_profile(TARGET).clock_hz.value
    frames_per_s = SAMPLE_RATE / HOP_SAMPLES
    rows = []
    with tempfile.TemporaryDirectory(prefix="ek-streaming-") as tmp:
        for dtype in args.dtypes:
            for name, mode in RUNS:
                if args.only is not None and args.only not in name:
                    continue
                rows.append(measure(name, mode, dtype, Path(tmp)))
                print(f"  {name} {mode} {dtype}: {rows[-1]['per_frame']:,.0f} instructions per new frame "
                      f"({rows[-1]['seconds']:.0f} s)", flush=True)
    window = {(r["model"], r["dtype"]): r["per_frame"] for r in rows if r["mode"] == "window"}
    table = Table(title=f"Streaming keyword spotting on the emulated {TARGET} (QEMU mps2-an500, exact instruction "
                        f"counts; {frames_per_s:g} frames/s, {clock / 1e6:g} MHz)")
    for col in ("model", "build", "dtype", "params", "clips", "accuracy (device)", "all 1,120 clips", "float acc.", "outputs = reference",
                "instr. / new frame", "estimate", "vs window", "state B", "arena B", "flash B", "duty cycle"):
        table.add_column(col, justify="left" if col in ("model", "build", "dtype") else "right")
    lines = []
    for r in rows:
        speedup = window[(r["model"], r["dtype"])] / r["per_frame"] if (r["model"], r["dtype"]) in window else None
        duty = r["per_frame"] * frames_per_s / clock
        err = (r["estimated_per_frame"] - r["steady_per_frame"]) / r["steady_per_frame"]
        cells = [r["model"], "windowed (recompute)" if r["mode"] == "window" else "streaming step", r["dtype"],
                 f"{r['params']:,}", str(r["clips"]), f"{r['accuracy']:.2%}" if r["accuracy"] is not None else "-",
                 f"{r['all_clips']:.2%}" if r["all_clips"] is not None else "-",
                 f"{r['float_accuracy']:.2%}" if r["float_accuracy"] is not None else "-",
                 "yes" if r["match"] else "NO", f"{r['per_frame']:,.0f}", f"{err:+.0%}",
                 f"{speedup:.1f}x" if speedup else "-", f"{r['state_bytes']:,}", f"{r['arena_bytes']:,}",
                 f"{r['flash_bytes']:,}", f"{duty:.2%}"]
        table.add_row(*cells)
        lines.append("| " + " | ".join(cells) + " |")
    Console(width=200).print(table)
    if args.no_write:
        return
    header = ["model", "build", "dtype", "params", "clips", "accuracy (device)", "all 1,120 clips", "float acc.", "outputs = reference",
              "instr. / new frame", "estimate error", "vs window", "state B", "arena B", "flash B", "duty cycle"]
    text = [f"# {table.title}", "",
            "Generated by `bench/streaming.py`. 'accuracy (device)': on the clips the firmware ran (as many as its "
            "test-data and emulator budget allow); 'all 1,120 clips': the same arithmetic on the whole test split on "
            "the host (int8: the integer reference the firmware equals bit for bit; float32: PyTorch). "
            "'outputs = reference': after each clip's last frame the firmware's "
            "output equals the host reference (int8: bit for bit; for the conv stream, the *windowed* model's "
            "integer reference). 'vs window': instructions of recomputing the 49-frame window (the windowed build's "
            "instructions per inference, which a one-frame hop pays for every frame) over the stream's instructions "
            "per new frame. 'estimate error': the estimate per step against the steady state, the mean over the "
            "steps after every layer has fired once (a conv stream's deeper layers wait for their caches to fill "
            "after a reset, measured `instructions_per_step_steady`; 'instr. / new frame' is the mean over the whole "
            "clip). Duty cycle: instructions per second of audio / clock.", "",
            "State-space models and the LMU: an LMU is a state-space layer with a *fixed* A (the Legendre delay "
            "system, d×d, shared by one scalar input) feeding a nonlinear hidden state; kws-ssm's S4D layers learn a "
            "*diagonal* A per channel (64 channels × 16 decay rates) on a 64-wide input projection, with no "
            "recurrence through a nonlinearity: cheaper per step than the GRU, but time-invariant (no gate decides "
            "what to keep), which a last-frame readout of a 1-s clip exposes.", "",
            "| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + lines
    out = ROOT / "bench" / "results" / "streaming.md"
    if args.only is not None and out.exists():  # replace those rows, keep the others (and the text around them)
        key = lambda line: tuple(c.strip() for c in line.split("|")[1:4])  # noqa: E731 - model, build, dtype
        fresh = {key(line): line for line in lines}
        old_lines = out.read_text().splitlines()
        for i, line in enumerate(old_lines):
            if line.startswith("| ") and key(line) in fresh:
                old_lines[i] = fresh.pop(key(line))
        last = max(i for i, line in enumerate(old_lines) if line.startswith("| "))
        text = old_lines[:last + 1] + list(fresh.values()) + old_lines[last + 1:]
    out.write_text("\n".join(text) + "\n")


if __name__ == "__main__":
    main()
