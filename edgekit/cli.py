"""The ``edgekit`` command: parses, calls edgekit.api, prints.

Errors: every edgekit error becomes one line on stderr (``edgekit: error: ...``) and its class's exit code
(docs/errors.md); ``--debug`` shows the traceback instead.
"""
from __future__ import annotations

import json
import signal
import sys
import threading
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from edgekit import __version__
from edgekit.errors import EdgekitError, LowFidelityError, UsageError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Take a trained neural network and make it run on microcontrollers, phones and "
                       "neuromorphic chips. MODEL is a bundled example name (edgekit examples), a .pt2 file "
                       "(torch.export) or an .onnx file.")
# Piped or redirected output gets no 80-column limit: tables keep full layer names and their totals (a table is only
# as wide as its content).
out_console = Console(highlight=False, width=None if sys.stdout.isatty() else 1000)
err_console = Console(stderr=True, highlight=False)
_state = {"debug": False}


def _version(value: bool):
    if value:
        print(f"edgekit {__version__}")
        raise typer.Exit()


@app.callback()
def _main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit."),
          debug: bool = typer.Option(False, "--debug", help="Show tracebacks for errors.")):
    _state["debug"] = debug


def _fmt_bytes(n: float | None) -> str:
    from edgekit.report import _fmt_bytes as f

    return f(n)


def _shape(s: str | None) -> tuple[int, ...] | None:
    if not s:
        return None
    try:
        shape = tuple(int(v) for v in s.replace("x", ",").split(",") if v)
    except ValueError:
        shape = ()
    if not shape or min(shape) < 1 or max(shape) > 1 << 20:
        raise UsageError(f"--input-shape {s}: give positive sizes like 1,8,8 (without the batch)")
    return shape


@app.command()
def analyze(model: str = typer.Argument(..., help="Example name, .pt2 or .onnx file."),
            as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
            input_shape: Optional[str] = typer.Option(None, help="Input shape without batch, e.g. 1,8,8 "
                                                                  "(for files that carry none)."),
            quantize: Optional[str] = typer.Option(None, help="int8: the quantization debugger — per-layer SQNR "
                                                              "of int8 against float, where it collapses and why."),
            calib: Optional[Path] = typer.Option(None, help="Calibration inputs (.npy, N first) for --quantize."),
            observer: str = typer.Option("minmax", help="Observer for --quantize: minmax, percentile or mse.")):
    """Print the per-layer table (params, MACs, activation bytes) and totals; with --quantize int8, the quantization
    debugger instead."""
    from edgekit.model import Model

    m = Model.load(model, _shape(input_shape))
    if quantize is not None:
        _quant_debug(m, quantize, calib, observer, as_json)
        return
    a = m.analyze()
    if as_json:
        print(json.dumps({"model": m.name, **a.to_json()}, indent=2))
        return
    t = Table(title=f"{m.name}: {len(a.layers)} layers (BatchNorm folded, activations fused)")
    for col, just in (("layer", "left"), ("operator", "left"), ("input", "left"), ("output", "left"),
                      ("params", "right"), ("param bytes", "right"), ("MACs", "right"), ("activation", "right")):
        t.add_column(col, justify=just)
    for r in a.layers:
        t.add_row(r.name, r.label, ", ".join("x".join(map(str, s)) for s in r.input_shapes),
                  "x".join(map(str, r.output_shape)), f"{r.params:,}", f"{r.param_bytes:,}", f"{r.macs:,}",
                  _fmt_bytes(r.activation_bytes))
    t.add_section()
    t.add_row("total", "", "", "", f"{a.params:,}", f"{a.param_bytes:,}", f"{a.macs:,}", "")
    out_console.print(t)


def _quant_debug(m, quantize: str, calib: Path | None, observer: str, as_json: bool) -> None:
    import dataclasses
    import math

    from edgekit import quantdebug
    from edgekit.api import load_calibration
    from edgekit.converters.quantize import quantize as _quantize

    if quantize != "int8":
        raise UsageError(f"--quantize {quantize}: the debugger checks int8")
    if calib is not None:
        m = dataclasses.replace(m, calib=load_calibration(str(calib), m))
    x = m.test_x if m.test_x is not None else (m.calib if m.calib is not None else None)
    if x is None:
        raise UsageError(f"model '{m.name}' carries no data to compare on; give --calib inputs.npy")
    d = quantdebug.debug(m, x[:256], _quantize(m, observer=observer))
    if as_json:
        print(json.dumps({"model": m.name, **d.to_json()}, indent=2))
        return
    db = lambda v: "–" if v is None else ("exact" if math.isinf(v) and v > 0 else f"{v:.1f}")  # noqa: E731
    t = Table(title=f"{m.name}: int8 against float, per layer (SQNR in dB, {d.inputs} inputs)")
    for col, just in (("layer", "left"), ("operator", "left"), ("alone", "right"), ("accumulated", "right"),
                      ("scale", "right"), ("saturated", "right"), ("channel spread", "right"), ("flags", "left")):
        t.add_column(col, justify=just)
    for r in d.layers:
        style = "bold red" if r.layer == d.collapse else None
        t.add_row(r.layer, r.op, db(r.sqnr_alone_db), db(r.sqnr_accumulated_db), f"{r.scale:.3g}",
                  f"{r.saturated:.1%}", f"{r.channel_spread:.1f}", ", ".join(r.flags), style=style)
    out_console.print(t)
    if d.collapse is None:
        out_console.print(f"  no collapse: the output keeps {db(d.output_sqnr_db)} dB SQNR (bound "
                          f"{quantdebug.COLLAPSE_DB:.0f} dB)")
    else:
        out_console.print(f"  collapses at '{d.collapse}' ({d.cause}): {d.advice}")


@app.command()
def targets(as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table.")):
    """List the targets and their key figures."""
    from edgekit.targets import all_profiles

    profiles = [p.summary() for p in all_profiles().values()]
    if as_json:
        print(json.dumps(profiles, indent=2))
        return
    t = Table(title="edgekit targets")
    for col in ("name", "backend", "device", "clock", "SRAM", "flash"):
        t.add_column(col, justify="right" if col in ("clock", "SRAM", "flash") else "left")
    for p in profiles:
        clock = f"{p['clock_hz'] / 1e6:g} MHz" if p["clock_hz"] else "async"
        backend = p["backend"] + (f" ({p['platform']})" if p["platform"] else "")
        t.add_row(p["name"], backend, p["device"], clock, _fmt_bytes(p["sram_bytes"]), _fmt_bytes(p["flash_bytes"]))
    out_console.print(t)


@app.command()
def boards(as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table.")):
    """List the boards `edgekit profile OUT --device PORT --board NAME` runs on (and how each is flashed)."""
    from edgekit.targets.mcu.platforms import PLATFORMS, figure, get_platform

    rows = []
    for name in PLATFORMS:
        platform = get_platform(name)
        for board in platform.device_boards():
            info = platform.device_board(board)
            rows.append({"name": board, "platform": name, "cpu": info["cpu"], "emulated": bool(info.get("emulated")),
                         "description": info["description"], "clock_hz": figure(info["clock_hz"]),
                         "uart": info["uart"], "baud": info["baud"], "cycle_counter": info["cycle_counter"],
                         "probe": info.get("probe", "QEMU -serial pty" if info.get("emulated") else ""),
                         "port": info.get("usb_port", "the pseudo-terminal QEMU prints")})
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    t = Table(title="edgekit boards (profile --device)")
    for col in ("name", "cpu", "board", "clock", "cycles", "flashed through"):
        t.add_column(col)
    for r in rows:
        t.add_row(r["name"], r["cpu"], r["description"], f"{r['clock_hz'] / 1e6:g} MHz", r["cycle_counter"],
                  r["probe"])
    out_console.print(t)


@app.command()
def examples(as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table.")):
    """List the bundled example models (any MODEL argument accepts their names)."""
    from edgekit.zoo import EXAMPLES

    rows = [{"name": s.name, "description": s.description, "input_shape": list(s.input_shape)}
            for s in EXAMPLES.values()]
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    t = Table(title="bundled examples")
    t.add_column("name")
    t.add_column("input")
    t.add_column("description")
    for r in rows:
        t.add_row(r["name"], "x".join(map(str, r["input_shape"])), r["description"])
    out_console.print(t)


@app.command()
def data(name: str = typer.Argument(..., help="Data set: kws (spoken keywords, made with espeak-ng)."),
         out: Optional[Path] = typer.Option(None, "-o", "--out", help="Also write the arrays to this .npz file."),
         seed: int = typer.Option(0, "--seed", help="Data set seed: the same seed gives the same bytes."),
         size: str = typer.Option("full", "--size", help="full (8,400 clips, the examples') or small (tests)."),
         stats: bool = typer.Option(False, "--stats", help="Print the raw MFCC mean/std of the training split.")):
    """Make (or read from the cache) a data set the bundled examples use, and summarise it."""
    import numpy as np

    from edgekit import speech

    if name != "kws":
        raise UsageError(f"unknown data set '{name}'; the one made on this machine is: kws")
    d = speech.kws(seed, size)
    t = Table(title=f"kws (seed {seed}, {size}): 1-s clips at 16 kHz -> {speech.FRAMES}x{speech.MFCC_COEFFS} MFCC")
    t.add_column("split")
    t.add_column("clips", justify="right")
    t.add_column("voices", justify="right")
    for c in speech.CLASSES:
        t.add_column(c, justify="right")
    for split in ("train", "val", "test"):
        x, y = d.split(split)
        t.add_row(split, f"{len(y):,}", str(len(set(getattr(d, f"speakers_{split}")))),
                  *[str(int(n)) for n in np.bincount(y, minlength=len(speech.CLASSES))])
    out_console.print(t)
    if stats:
        raw = d.x_train.astype(np.float64) * speech.FEATURE_STD + speech.FEATURE_MEAN
        out_console.print(f"raw MFCC mean {np.round(raw.mean((0, 1)), 2).tolist()}")
        out_console.print(f"raw MFCC std  {np.round(raw.std((0, 1)), 2).tolist()}")
    if out is not None:
        if out.suffix != ".npz":
            raise UsageError(f"{out}: give a .npz file name")
        arrays = {k: (np.array(v) if k.startswith("speakers") else v) for k, v in d.__dict__.items()}
        arrays["classes"] = np.array(speech.CLASSES)
        tmp = out.with_name(f".{out.name}.partial.npz")
        np.savez_compressed(tmp, **arrays)
        tmp.replace(out)
        out_console.print(f"wrote {out}")


def _compile_options(quantize, calib, prune, qat, patch, kernels, max_patch_overhead, observer="minmax",
                     sram_budget=None, streaming=False):
    from edgekit.targets import CompileOptions

    budget = None
    if sram_budget is not None:
        from edgekit.sweep import parse_size

        budget = parse_size(sram_budget)
    return CompileOptions(quantize=quantize, calib=calib, prune=prune, qat=qat, patch=patch, kernels=kernels,
                          max_patch_overhead=max_patch_overhead, observer=observer, sram_budget=budget,
                          streaming=streaming)


PATCH_HELP = ("MCU execution schedule: auto (the fastest that fits the SRAM budget: layer by layer when that fits, "
              "else patch-based), min-memory (the smallest arena within --max-patch-overhead), off, or a grid size N.")
STREAMING_HELP = ("A conv model over time (e.g. kws-dscnn) as a step function: one call per new frame, per-layer "
                  "caches instead of recomputing the window; same outputs for causal models. MCU: a step program "
                  "(recurrent models always are one); phone: the step as ONNX with the caches as inputs/outputs.")
INPUT_FORMAT_HELP = ("Phone --quantize int8: float (the model's float input) or quantized (the input as the int8 "
                     "codes of the model's first quantization, channels last for images: what an app makes from "
                     "camera bytes; the scale and zero point are in the report).")
INT8_LAYERS_HELP = ("Phone --quantize int8: auto (each layer int8 only where it costs fewer instructions than float32 "
                    "on the target's emulated Arm core, and float32 shipped if no int8 model is cheaper) or all.")
SRAM_BUDGET_HELP = "MCU: SRAM the model may use, e.g. 256KB (default: the target's SRAM); --patch auto fits it."


def _print_estimate(est, fits, reasons, target):
    t = Table(title=f"estimate on {target}", show_header=False)
    t.add_column("figure")
    t.add_column("value", justify="right")
    t.add_row("flash", _fmt_bytes(est.flash_bytes))
    t.add_row("peak SRAM", _fmt_bytes(est.peak_sram_bytes))
    t.add_row("  of which arena", _fmt_bytes(est.arena_bytes))
    if est.state_bytes:
        t.add_row("  of which state", _fmt_bytes(est.state_bytes))
    t.add_row("MACs", f"{est.macs:,}")
    if est.instructions is not None:
        t.add_row("instructions", f"{est.instructions:,}")
    t.add_row("latency", f"{est.latency_ms:.4g} ms")
    t.add_row("energy", f"{est.energy_uj:.4g} µJ")
    t.add_row("fits", "[green]yes[/]" if fits else "[red]no[/]")
    out_console.print(t)
    for r in reasons:
        out_console.print(f"  {r}")


QUANT_HELP = "int8 for an integer-only int8 build; none (default) keeps float32."


@app.command()
def estimate(model: str = typer.Argument(..., help="Example name, .pt2 or .onnx file."),
             target: str = typer.Option(..., "--target", "-t", help="Target name (edgekit targets)."),
             quantize: Optional[str] = typer.Option(None, help=QUANT_HELP),
             patch: str = typer.Option("auto", help=PATCH_HELP),
             sram_budget: Optional[str] = typer.Option(None, help=SRAM_BUDGET_HELP),
             max_patch_overhead: float = typer.Option(0.20, help="MCU: largest extra MAC fraction patching may "
                                                                 "cost."),
             streaming: bool = typer.Option(False, "--streaming", help=STREAMING_HELP),
             as_json: bool = typer.Option(False, "--json", help="Print JSON.")):
    """Will it fit? Flash, peak SRAM, latency and energy without building anything."""
    from edgekit import api

    opts = _compile_options(quantize, None, None, False, patch, "auto", max_patch_overhead, sram_budget=sram_budget,
                            streaming=streaming)
    est, fits, reasons = api.estimate(model, target, opts)
    if as_json:
        print(json.dumps({"target": target, "estimate": est.to_json(), "fits": fits, "fit_reasons": reasons},
                         indent=2))
        return
    _print_estimate(est, fits, reasons, target)


@app.command()
def compile(model: str = typer.Argument(..., help="Example name, .pt2 or .onnx file."),
            target: str = typer.Option(..., "--target", "-t", help="Target name (edgekit targets)."),
            out: Path = typer.Option(None, "-o", "--out", help="Output folder (default: build/MODEL-TARGET)."),
            quantize: Optional[str] = typer.Option(None, help=QUANT_HELP),
            calib: Optional[str] = typer.Option(None, help="Calibration inputs (.npy, or .npz with 'x'); "
                                                          "default: the example's own."),
            prune: Optional[float] = typer.Option(None, help="Prune to this sparsity (0..1) before compiling."),
            qat: bool = typer.Option(False, "--qat", help="Quantization-aware fine-tuning instead of PTQ."),
            observer: str = typer.Option("minmax", help="int8 activation ranges: minmax, percentile or mse."),
            patch: str = typer.Option("auto", help=PATCH_HELP),
            sram_budget: Optional[str] = typer.Option(None, help=SRAM_BUDGET_HELP),
            kernels: str = typer.Option("auto", help="MCU kernels: auto (edgekit's int8 kernels for "
                                                     "conv/linear; Helium on cortex-m55), dsp (edgekit's "
                                                     "SMLAD kernels even on a Helium core) or tvm (TVM's C "
                                                     "kernels only)."),
            max_patch_overhead: float = typer.Option(0.20, help="MCU: largest extra MAC fraction patching "
                                                                "may cost."),
            allow_oversize: bool = typer.Option(False, "--allow-oversize", help="Build even if the model does not "
                                                "fit the device (the report says by how much)."),
            spiking: Optional[str] = typer.Option(None, help="loihi2/spinnaker2: convert to a spiking network first "
                                                             "(auto, rate, lmuformer or l2mu; fine-tuned on the "
                                                             "example's data)."),
            streaming: bool = typer.Option(False, "--streaming", help=STREAMING_HELP),
            int8_layers: str = typer.Option("auto", "--int8-layers", help=INT8_LAYERS_HELP),
            input_format: str = typer.Option("float", "--input-format", help=INPUT_FORMAT_HELP),
            board: Optional[str] = typer.Option(None, "--board", help="MCU: also build the device firmware for "
                                                                      "this board (edgekit boards) into "
                                                                      "OUT/device/BOARD/, for profile --device."),
            force: bool = typer.Option(False, "--force", help="Replace OUT if it exists.")):
    """Build MODEL for a target into OUT (sources, binaries, report.json, report.html)."""
    import dataclasses

    from edgekit import api

    out = out or Path("build") / f"{Path(model).stem}-{target}"
    opts = _compile_options(quantize, calib, prune, qat, patch, kernels, max_patch_overhead, observer, sram_budget,
                            streaming)
    opts = dataclasses.replace(opts, allow_oversize=allow_oversize, spiking=spiking, int8_layers=int8_layers,
                               input_format=input_format)
    art = api.compile(model, target, out, opts, force=force)
    if board is not None:
        from edgekit.runtimes.board import device_firmware

        elf = device_firmware(out, art.report, board)
        out_console.print(f"  device firmware for {board}: {elf}")
    est = art.report["estimate"]
    out_console.print(f"[bold]{art.report['model']['name']}[/] → [bold]{target}[/] ({art.report['dtype']}): "
                      f"wrote {out}")
    out_console.print(f"  estimate: flash {_fmt_bytes(est['flash_bytes'])}, peak SRAM "
                      f"{_fmt_bytes(est['peak_sram_bytes'])}, latency {est['latency_ms']:.4g} ms, "
                      f"energy {est['energy_uj']:.4g} µJ")
    out_console.print(f"  fits: {'yes' if art.report['fits'] else 'no'} — " + "; ".join(art.report["fit_reasons"]))
    for n in art.report.get("notes", []):
        out_console.print(f"  note: {n}")


@app.command()
def convert(model: str = typer.Argument(..., help="Example name or .pt2 file."),
            out: Path = typer.Option(..., "-o", "--out", help="The converted model, a .pt2 file."),
            prune: Optional[float] = typer.Option(None, help="Prune to this sparsity (0..1): the fraction of "
                                                              "conv/linear/recurrent weights set to zero."),
            structured: bool = typer.Option(False, "--structured", help="With --prune: remove whole channels and "
                                                                        "units instead (a smaller dense model)."),
            quantize: Optional[str] = typer.Option(None, help="int8: choose int8 quantization parameters."),
            qat: bool = typer.Option(False, "--qat", help="Quantization-aware fine-tuning instead of PTQ."),
            observer: str = typer.Option("minmax", help="Activation ranges: minmax, percentile or mse."),
            calib: Optional[str] = typer.Option(None, help="Calibration inputs (.npy, or .npz with 'x'); "
                                                          "default: the example's own."),
            force: bool = typer.Option(False, "--force", help="Replace OUT if it exists."),
            budgets: Optional[str] = typer.Option(None, help="Nested operating points: width fractions such as "
                                                             "0.25,0.5,0.75,1.0 (the largest 1.0); fine-tunes "
                                                             "sub-networks that share the full network's weights."),
            epochs: Optional[int] = typer.Option(None, help="With --budgets: fine-tuning epochs (default 10).")):
    """Prune and/or quantize MODEL, or make nested operating points of it (--budgets), and save it as a .pt2
    (quantization parameters, pruning facts and operating points inside)."""
    from edgekit import api
    from edgekit.converters.quantize import int8_accuracy
    from edgekit.model import Model

    widths = _budgets(budgets)
    before = Model.load(model)
    m = api.convert(before, out, prune=prune, structured=structured, quantize=quantize, qat=qat,
                    observer=observer, calib=calib, force=force, budgets=widths, epochs=epochs)
    out_console.print(f"[bold]{m.name}[/] → wrote {out}")
    if "nested" in m.meta:
        _print_nested(m.meta["nested"])
    acc = before.accuracy()
    if acc is not None:
        out_console.print(f"  float accuracy {acc:.2%} before, {m.accuracy():.2%} after")
    facts = m.meta.get("pruning")
    if facts:
        kind = "structured, " if facts["structured"] else ""
        out_console.print(f"  pruned ({kind}{facts['scope']}): {facts['nonzero_weights']:,} of "
                          f"{facts['weights']:,} weights non-zero ({facts['weight_sparsity']:.1%} sparse), "
                          f"{facts['nonzero_params']:,} non-zero parameters")
        for n in facts.get("notes", []):
            out_console.print(f"  note: {n}")
    if "quant" in m.meta:
        q = m.meta["quant"]
        acc8 = int8_accuracy(m)
        out_console.print(f"  int8 ({m.meta.get('quant_mode', 'ptq')}, {q.observer} observer): parameters for "
                          f"{len(q.activations)} tensors" + (f", int8 accuracy {acc8:.2%}" if acc8 is not None
                                                              else ""))


def _budgets(text: str | None) -> list[float] | None:
    """--budgets 0.25,0.5,0.75,1.0 as numbers (their range is checked by the converter)."""
    if text is None:
        return None
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise UsageError(f"--budgets {text}: give width fractions separated by commas, e.g. 0.25,0.5,0.75,1.0") \
            from None


def _print_nested(facts: dict) -> None:
    groups = facts["groups"]
    full = sum(g["channels"] for g in groups.values())
    out_console.print(f"  nested: {len(facts['operating_points'])} operating points over {len(groups)} width "
                      f"groups ({full:,} channels at width 1), fine-tuned {facts['epochs']} epochs")
    t = Table(title="operating points")
    for col in ("budget", "channels", "params", "MACs", "float accuracy"):
        t.add_column(col, justify="right")
    for p in facts["operating_points"]:
        acc = p.get("float_accuracy")
        t.add_row(f"{p['budget']:g}", f"{sum(p['widths'].values()):,} / {full:,}", f"{p['params']:,}",
                  f"{p['macs']:,}", "–" if acc is None else f"{acc:.2%}")
    out_console.print(t)
    for n in facts.get("notes", []):
        out_console.print(f"  note: {n}")


@app.command()
def profile(out: Path = typer.Argument(..., help="A folder written by edgekit compile."),
            repeat: int = typer.Option(50, help="Phone: timed runs for the median latency."),
            time_limit: Optional[float] = typer.Option(None, help="Cortex-M: seconds the emulated firmware may run "
                                                                  "before it counts as hung (default: from the MACs)."),
            samples: Optional[int] = typer.Option(None, help="loihi2: run only the first N test inputs in Lava "
                                                             "(default: all; Lava simulates ~10-100 ms per step)."),
            accept_low_fidelity: bool = typer.Option(False, "--accept-low-fidelity",
                                                     help="Exit 0 even when the artifact's outputs stray from the "
                                                          "float model's (top-1 agreement < 90 % or SQNR < 10 dB)."),
            device: Optional[str] = typer.Option(None, "--device", help="MCU: run on a board at this serial port "
                                                                        "(/dev/ttyACM0, COM4, a QEMU -serial pty): "
                                                                        "outputs and cycles per layer, kept beside "
                                                                        "the emulated figures."),
            board: Optional[str] = typer.Option(None, "--board", help="With --device: the board (edgekit boards; "
                                                                      "default: the target's development board)."),
            flash: str = typer.Option("auto", "--flash", help="With --device: auto (pyocd, openocd or dfu-util, "
                                                              "whichever the board takes and is installed), pyocd, "
                                                              "openocd, dfu-util, or none (already flashed)."),
            baud: Optional[int] = typer.Option(None, "--baud", help="With --device: the link's baud rate (default: "
                                                                    "the board's, 115200).")):
    """Run OUT on its runtime (QEMU, ONNX Runtime, Lava; with --device on a board over its serial port), compare
    with the reference and with the float model, update the report. Exits 11 when fidelity to the float model is
    below the documented bounds (docs/report.md) unless --accept-low-fidelity, 12 when the board cannot be reached
    or flashed."""
    from edgekit import api

    if time_limit is not None and not 0 < time_limit <= 86400:
        raise UsageError(f"--time-limit {time_limit}: give a number of seconds between 0 and 86400")
    if samples is not None and samples < 1:
        raise UsageError(f"--samples {samples}: give a positive number of test inputs")
    kw = {"timeout_s": time_limit} if time_limit else {}
    if samples is not None:
        kw["samples"] = samples
    if device is None and (board is not None or flash != "auto" or baud is not None):
        raise UsageError("--board, --flash and --baud go with --device PORT (the board's serial port)")
    if baud is not None and baud <= 0:
        raise UsageError(f"--baud {baud}: give a positive baud rate, e.g. 115200")
    if device is not None:
        kw.update(device=device, flash_method=flash, **({"board": board} if board else {}),
                  **({"baud": baud} if baud else {}))
    art = api.profile(out, repeat=repeat, **kw)
    print_summary(art.report)
    fid = (art.report.get("measured") or {}).get("fidelity") or {}
    if device is not None:  # the board's own outputs decide
        found = next(iter(d for d in ((art.report.get("measured") or {}).get("devices") or {}).values()
                          if d.get("port") == device), {})
        fid = found.get("fidelity") or fid
    if fid and not fid.get("ok", True) and not accept_low_fidelity:
        raise LowFidelityError(f"{out}: {fid['summary']}; pass --accept-low-fidelity to accept it")


def print_summary(rep: dict) -> None:
    m = rep.get("measured") or {}
    est = rep["estimate"]
    errs = rep.get("errors") or {}
    t = Table(title=f"{rep['model']['name']} on {rep['target']} ({rep['dtype']})")
    t.add_column("figure")
    t.add_column("estimate", justify="right")
    t.add_column("measured", justify="right")
    t.add_column("error", justify="right")

    def row(label, ek, mk, name, fmt):
        e, v = est.get(ek), m.get(mk)
        if not e and v is None:  # neither estimated (0 where the target has no such memory) nor measured
            return
        err = errs.get(name)
        t.add_row(label, fmt(e) if e is not None else "–", fmt(v) if v is not None else "–",
                  f"{err:+.1%}" if err is not None else "")

    row("flash", "flash_bytes", "flash_bytes", "flash_bytes", _fmt_bytes)
    row("SRAM", "peak_sram_bytes", "sram_bytes", "peak_sram_bytes", _fmt_bytes)
    row("arena", "arena_bytes", "arena_bytes", "arena_bytes", _fmt_bytes)
    row("instructions", "instructions", "instructions", "instructions", lambda v: f"{int(v):,}")
    if est.get("instructions_per_step") is not None:  # a recurrent model's step program
        row("instructions / step", "instructions_per_step", "instructions_per_step", "instructions_per_step",
            lambda v: f"{int(v):,}")
        row("state", "state_bytes", "state_bytes", "state_bytes", _fmt_bytes)
    row("latency (ms)", "latency_ms", "latency_ms", "latency_ms", lambda v: f"{v:.4g}")
    if m.get("energy_uj") is not None:  # measured energy (neuromorphic: from the simulator's spike counts)
        row("energy (µJ)", "energy_uj", "energy_uj", "energy_uj", lambda v: f"{v:.4g}")
    out_console.print(t)
    facts = []
    if m.get("accuracy") is not None:
        ref = m.get("reference_accuracy")
        facts.append(f"accuracy {m['accuracy']:.2%}" + (f" (reference {ref:.2%})" if ref is not None else ""))
    if m.get("instructions_per_mac") is not None:
        facts.append(f"{m['instructions_per_mac']:.2f} instructions/MAC")
    if m.get("lava_agreement") is not None:
        facts.append(f"Lava's class = torch's on {m['lava_agreement']:.1%} of {m['samples']} inputs, identical spike "
                     f"counts on {m['identical_spike_counts']:.1%}")
    if m.get("spikes_per_inference") is not None:
        facts.append(f"{m['spikes_per_inference']:,.0f} spikes and {m['synaptic_ops']:,.0f} synaptic ops per inference")
    if m.get("activity_sparsity") is not None:
        facts.append(f"activity sparsity {m['activity_sparsity']:.1%} (EGRU units without an event)")
    if m.get("latency_per_frame_ms") is not None:  # a phone streaming step
        facts.append(f"{m['latency_per_frame_ms']:.3g} ms per new frame on this host ({m['frames']} frames: "
                     f"{m['latency_window_ms']:.3g} ms), state {m['state_bytes']:,} B")
    if m.get("outputs_match") is not None:
        facts.append("outputs match the reference" if m["outputs_match"] else "OUTPUTS DIFFER from the reference")
    if m.get("max_abs_err") is not None:
        facts.append(f"max abs error {m['max_abs_err']:.3g}")
    facts.append(f"fits: {'yes' if rep['fits'] else 'no'}")
    out_console.print("  " + "; ".join(facts))
    fid = m.get("fidelity")
    if fid:
        out_console.print(f"  {fid['summary']} (max abs error {fid['max_abs_err']:.3g}, "
                          f"{fid['max_abs_err_rel']:.1%} of the output range, cosine {fid['cosine']:.4f}, "
                          f"{fid['inputs']} inputs)")
    for r in rep.get("fit_reasons", []):
        out_console.print(f"    {r}")
    arm = m.get("arm")
    if arm:  # a phone build on its emulated Arm core
        out_console.print(f"  on the emulated {arm['core']} (qemu-aarch64 -cpu {arm['qemu_cpu']}): "
                          f"{arm['instructions']:,} instructions per inference of {arm['artifact']}, latency "
                          f"{arm['latency_ms']:.4g} ms at {arm['cpi']:g} cycles/instruction and "
                          f"{arm['clock_hz'] / 1e9:g} GHz; top-1 agreement {arm['top1_agreement']:.1%} with float, "
                          f"{arm['top1_agreement_vs_host']:.1%} with this host's ONNX Runtime ({arm['samples']} "
                          f"inputs); host wall clock {m['host_latency_ms']:.4g} ms")
    for dev in (m.get("devices") or {}).values():
        _print_device(dev)
    points = (rep.get("build") or {}).get("operating_points") if isinstance(rep.get("build"), dict) else None
    if points:
        _print_points(points, m.get("operating_points") or [])


def _print_points(points: list[dict], measured: list[dict]) -> None:
    """A nested image's operating points: one row each (measured where profiled)."""
    t = Table(title="operating points (edgekit_model_set_budget(k))")
    for col in ("k", "width", "MACs", "instructions", "arena", "accuracy", "outputs", "weights shared"):
        t.add_column(col, justify="right")
    for k, p in enumerate(points):
        m = measured[k] if k < len(measured) else {}
        instr = m.get("instructions") or p["estimate"]["instructions"]
        acc = m.get("accuracy", p.get("reference_accuracy"))
        t.add_row(str(k), f"{p['budget']:g}", f"{p['macs']:,}", f"{instr:,}" + ("" if m else " (est.)"),
                  _fmt_bytes(p["arena_bytes"]), f"{acc:.2%}" if acc is not None else "–",
                  ("bit-exact" if m["outputs_match"] else "DIFFER") if m else "–",
                  _fmt_bytes(p["shared_weight_bytes"]))
    out_console.print(t)


def _print_device(dev: dict) -> None:
    t = Table(title=f"on {dev['where']}")
    for col in ("layer", "kernels", "instructions (emulated)", "cycles (device)", "cycles / instruction"):
        t.add_column(col, justify="left" if col in ("layer", "kernels") else "right")
    for row in dev["layers"]:
        t.add_row(row["name"], ", ".join(row["kernels"]),
                  f"{row['instructions']:,}" if row.get("instructions") else "–",
                  f"{row['cycles']:,}" if row.get("cycles") is not None else "–",
                  f"{row['cycles_per_instruction']:.2f}" if row.get("cycles_per_instruction") else "–")
    out_console.print(t)
    facts = [f"{dev['test_inputs']} test inputs over the link",
             "outputs match the reference" if dev["outputs_match"] else "OUTPUTS DIFFER from the reference"]
    if dev.get("cycles"):
        facts.append(f"{dev['cycles']:,} cycles = {dev['latency_ms']:.4g} ms ({dev['cycles_note']})")
    else:
        facts.append(f"cycles unavailable ({dev['cycles_note']})")
    if dev.get("accuracy") is not None:
        facts.append(f"accuracy {dev['accuracy']:.2%}")
    facts.append(f"stack {dev['stack_bytes']:,} B")
    out_console.print("  " + "; ".join(facts))
    if dev.get("fidelity"):
        out_console.print(f"  {dev['fidelity']['summary']}")
    out_console.print(f"  {dev['flash']}")


@app.command()
def report(out: Path = typer.Argument(..., help="A folder written by edgekit compile.")):
    """Render OUT/report.html again from OUT/report.json and print the summary."""
    from edgekit import api
    from edgekit.report import read_report

    path = api.render(out)
    print_summary(read_report(out))
    out_console.print(f"  wrote {path}")


@app.command()
def compare(outs: list[Path] = typer.Argument(..., help="Two or more folders written by edgekit compile."),
            html: Path = typer.Option(Path("compare.html"), "--html", help="Where to write the side-by-side page.")):
    """Put several builds side by side (e.g. one model on cortex-m7, phone-arm64 and loihi2, or float vs int8); a
    build profiled on several boards (profile --device) gives a column per board."""
    from edgekit.report import compare_entries, compare_rows, render_compare

    reports = compare_entries(outs)
    t = Table(title=f"{len(reports)} builds")
    t.add_column("figure")
    for label, _ in reports:
        t.add_column(label, justify="right")
    for row in compare_rows(reports):
        t.add_row(row["name"], *[f"[bold green]{v['text']}[/]" if v["best"] else v["text"] for v in row["values"]])
    out_console.print(t)
    html.write_text(render_compare(reports))
    out_console.print(f"  wrote {html}")


@app.command()
def sweep(model: str = typer.Argument(..., help="Example name, .pt2 or .onnx file."),
          target: list[str] = typer.Option(..., "--target", "-t", help="Target name; repeat or comma-separate "
                                                                         "for several."),
          prune: str = typer.Option("0", help="Sparsities to try, e.g. 0,0.5,0.9."),
          quantize: str = typer.Option("none,int8", help="Precisions to try: none, int8."),
          patch: str = typer.Option("auto,off", help="MCU schedules to try: auto, min-memory, off, N (auto fits "
                                                     "the budget's sram)."),
          budget: Optional[str] = typer.Option(None, help="Device budget, e.g. sram=256KB,flash=1MB,latency=50ms "
                                                          "(energy=500uJ too)."),
          budgets: Optional[str] = typer.Option(None, help="A nested model's operating points to try, e.g. "
                                                           "0.25,0.5,1 (default: all of them)."),
          search: str = typer.Option("grid", help="grid (every configuration) or optuna (NSGA-II, --trials)."),
          trials: int = typer.Option(20, help="optuna: configurations to evaluate in total."),
          address: Optional[str] = typer.Option(None, help="Join a running Ray cluster (HOST:PORT); default: a "
                                                           "local Ray for this sweep."),
          workers: Optional[int] = typer.Option(None, help="Trials at once (default: the cluster's CPUs)."),
          out: Path = typer.Option(Path("sweep-out"), "-o", "--out", help="Output folder (results.jsonl, "
                                                                          "sweep.json, sweep.html, best/)."),
          trial_timeout: float = typer.Option(900.0, help="Stop a trial after this many seconds."),
          repeat: int = typer.Option(50, help="Phone: timed runs per configuration."),
          keep_builds: bool = typer.Option(False, "--keep-builds", help="Keep every trial's build in OUT/builds/."),
          resume: bool = typer.Option(True, "--resume/--restart", help="Skip configurations already in "
                                                                       "OUT/results.jsonl, or start over.")):
    """Try pruning x quantization x patching x targets (x a nested model's operating points); find the best
    configuration that meets a device budget."""
    from edgekit import sweep as sweeping  # the module (also callable)
    from edgekit.report import fmt_budget

    targets_ = [t.strip() for spec in target for t in spec.split(",") if t.strip()]
    result = sweeping.sweep(model, targets_, prune=prune, quantize=quantize, patch=patch,
                            budget=sweeping.parse_budget(budget), budgets=budgets, out=out, search=search, trials=trials,
                            address=address, workers=workers, trial_timeout_s=trial_timeout, resume=resume,
                            keep_builds=keep_builds, repeat=repeat)
    out_console.print(result.table())
    ran = f"ran {result.ran} trials" + (f" on {result.workers} workers" if result.ran else "")
    out_console.print(f"  {ran}, {result.skipped} already in {out / 'results.jsonl'}; "
                      f"{len(result.failed)} failed; budget: {fmt_budget(result.budget.to_json())}")
    if result.best:
        out_console.print(f"  best under the budget: [bold]{result.best['key']}[/] (build in {out / 'best'})")
    for n in result.notes:
        out_console.print(f"  note: {n}")
    out_console.print(f"  wrote {out / 'sweep.json'} and {out / 'sweep.html'}")


class _CtrlC(BaseException):
    """Ctrl-C during a command. Click turns KeyboardInterrupt into Abort (a blank stderr line and exit 1); this type
    passes through it, and through edgekit's cleanup (staged_output removes its temporary folder on any exception)."""


def _raise_ctrl_c(signum, frame):
    raise _CtrlC()


def _error_line(text: str) -> None:
    """One line on stderr, whatever the message holds (newlines, markup-like brackets, :emoji: codes)."""
    err_console.print(" ".join(text.split()), markup=False, emoji=False, soft_wrap=True)


def main(argv: list[str] | None = None) -> int:
    previous = signal.getsignal(signal.SIGINT)
    # Only where Ctrl-C would raise KeyboardInterrupt anyway (not where it is ignored, e.g. a background job).
    handle_ctrl_c = threading.current_thread() is threading.main_thread() and previous is signal.default_int_handler
    if handle_ctrl_c:
        signal.signal(signal.SIGINT, _raise_ctrl_c)
    _state["debug"] = False  # set by --debug (the callback) for this call only
    try:
        app(args=argv, standalone_mode=False)
        return 0
    except EdgekitError as e:
        if _state["debug"]:
            raise
        _error_line(f"edgekit: error: {e}")
        return e.exit_code
    except (KeyboardInterrupt, _CtrlC):
        if _state["debug"]:
            raise
        _error_line("edgekit: error: interrupted (Ctrl-C); nothing was written")
        return 130
    except typer.Exit as e:
        return e.exit_code
    except typer.Abort:
        return 1
    except OSError as e:  # the file system refused: a name too long, no permission, a full disk
        if _state["debug"]:
            raise
        _error_line(f"edgekit: error: {str(e.filename) + ': ' if e.filename else ''}{e.strerror or e} "
                    "(a file system error; check the path and its permissions)")
        return 1
    except Exception as e:  # command-line usage errors and the like
        if hasattr(e, "format_message") and hasattr(e, "exit_code"):  # typer's (click's) usage errors
            _error_line(f"edgekit: error: {e.format_message()}")
            return 2
        if _state["debug"]:
            raise
        _error_line(f"edgekit: internal error: {type(e).__name__}: {e} (rerun with --debug and report it)")
        return 70
    finally:
        if handle_ctrl_c:
            signal.signal(signal.SIGINT, previous)


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
