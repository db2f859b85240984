"""On-device profiling over a serial link, without a board: every bundled example and zoo model in int8, its device
firmware run on QEMU boards whose UART is a host pseudo-terminal (``-serial pty``), driven exactly as
``edgekit profile OUT --device PORT`` drives a board.

Per model: whether it built (or the one-line refusal), whether the outputs that came back over the link equal the
host reference bit for bit, the link time per test input (115200-baud framing over a pty: no line timing, so this
is protocol + emulation speed, not a board's), and on ``virt-rv32imc-icount`` (mcycle counts instructions there) how
far the device's cycles per kernel call are from the instruction counter's (the whole cycle path: counter, markers,
u64 sums over the link, per-layer figures). Writes bench/results/device.md.

    .venv/bin/python bench/device.py                 # all examples and zoo models (~15 min)
    .venv/bin/python bench/device.py --only digits --samples 8
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

from edgekit import api
from edgekit.errors import EdgekitError
from edgekit.runtimes import board as board_runtime
from edgekit.runtimes.qemu import serve_pty
from edgekit.targets.mcu.platforms import get_platform

RESULTS = Path(__file__).resolve().parent / "results" / "device.md"
BOARDS = (("cortex-m7", "mps2-an500"), ("esp32-c3", "virt-rv32imc-icount"))


def run_one(name: str, target: str, board: str, tmp: Path, samples: int) -> dict:
    row = {"model": name, "board": board}
    out = tmp / f"{name}-{target}"
    try:
        art = api.compile(name, target, out, quantize="int8", force=True)
        rep = art.report
        platform = get_platform(rep["build"]["platform"])
        info = platform.device_board(board)
        elf = board_runtime.device_firmware(out, rep, board)
        api.profile(out)  # the emulated figures first (profile --device would do it), outside the link's timing
        with serve_pty(elf, info["layout"], platform, count_instructions=True,
                       extra_args=info.get("qemu_args", ())) as qemu:
            t = time.perf_counter()
            art = api.profile(out, device=qemu.port, board=board, flash_method="none", samples=samples)
            row["seconds"] = time.perf_counter() - t
    except EdgekitError as e:
        row["error"] = " ".join(str(e).split())[:140]
        return row
    dev = art.report["measured"]["devices"][board]
    row.update(match=dev["outputs_match"], inputs=dev["test_inputs"], stack=dev["stack_bytes"],
               cycles=dev["cycles"], cpi=dev.get("cycles_per_instruction"),
               sqnr=(dev.get("fidelity") or {}).get("sqnr_db"))
    K = len(art.report["build"]["step_layers"])
    streaming = art.report["build"].get("streaming") is not None
    if dev["cycles"] is not None and not streaming:
        # the first inference: device cycles per call vs the plugin's instructions per call of the same run
        counts = qemu.marker_counts
        plugin = [b - a for a, b in zip(counts[:K], counts[1:K + 1])]
        row["max_call_gap"] = max(abs(c - p) for c, p in zip(_first_run_calls(dev, art.report), plugin)) \
            if samples == 1 else None
    shutil.rmtree(out, ignore_errors=True)
    return row


def _first_run_calls(dev: dict, report: dict) -> list[int]:
    """Per call cycles of a one-input run, in call order (layers with one call each keep their order)."""
    by_layer = {row["name"]: row["cycles"] for row in dev["layers"]}
    seen, calls = set(), []
    for layer in report["build"]["step_layers"]:
        calls.append(by_layer[layer] if layer not in seen else 0)
        seen.add(layer)
    return calls


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", help="substring of the model names to run")
    ap.add_argument("--samples", type=int, default=8, help="test inputs sent over the link per model")
    args = ap.parse_args()
    from edgekit.zoo import EXAMPLES

    names = [n for n in EXAMPLES if not args.only or args.only in n]
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgekit-device-") as tmp:
        for name in names:
            for target, board in BOARDS:
                samples = 1 if board.endswith("icount") else args.samples
                r = run_one(name, target, board, Path(tmp), samples)
                rows.append(r)
                print(r, file=sys.stderr, flush=True)
    lines = ["# On-device profiling against QEMU pseudo-terminal boards", "",
             f"`.venv/bin/python bench/device.py` (int8; {args.samples} test inputs over the link on mps2-an500, one "
             "on virt-rv32imc-icount, where mcycle counts instructions). `match`: outputs that came back over the "
             "link equal the host reference bit for bit. `gap`: largest |device cycles − plugin instructions| per "
             "kernel call on the icount board (the marker's own instructions; models where a layer makes several "
             "calls are summed per layer and show more). Refusals are the compiler's, not the link's.", "",
             "| model | board | match | inputs | s/input | stack B | cycles | cycles/instr | gap | SQNR dB |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['board']} | refused: {r['error'][:70]} | | | | | | | |")
            continue
        cyc = f"{r['cycles']:,}" if r.get("cycles") else "n/a"
        cpi = f"{r['cpi']:.4f}" if r.get("cpi") else ""
        gap = "" if r.get("max_call_gap") is None else str(r["max_call_gap"])
        sq = f"{r['sqnr']:.1f}" if r.get("sqnr") is not None else ""
        lines.append(f"| {r['model']} | {r['board']} | {'yes' if r['match'] else 'NO'} | {r['inputs']} | "
                     f"{r['seconds'] / max(r['inputs'], 1):.2f} | {r['stack']:,} | {cyc} | {cpi} | {gap} | {sq} |")
    ok = [r for r in rows if "error" not in r]
    lines += ["", f"{sum(r['match'] for r in ok)} of {len(ok)} runs bit-exact over the link; "
                  f"{len(rows) - len(ok)} refused at compile time."]
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
