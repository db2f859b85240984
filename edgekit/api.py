"""The public entry points: estimate, compile, profile, report, compare.

Where it sits: the only place that joins the arrows of the flow (model -> converters -> target -> runtime -> report).
The CLI (edgekit/cli.py) is a thin layer over these functions.

``compile`` never leaves a half-written OUT: it builds in a temporary sibling folder and moves it into place only
when everything succeeded (also on Ctrl-C the temporary folder is removed).
"""
from __future__ import annotations

import contextlib
import dataclasses
import importlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from edgekit import modelcache
from edgekit import report as reporting
from edgekit.errors import (DataError, DoesNotFitError, EdgekitError, InterruptedError_, ShapeError,
                            UnsupportedError, UsageError)
from edgekit.estimate import Estimate, fit_check
from edgekit.model import Model
from edgekit.targets import CompileOptions, get_profile, get_target


@dataclass
class Artifact:
    """A compiled model on disk: the folder and its report."""

    path: Path
    report: dict[str, Any]

    @property
    def target(self) -> str:
        return self.report["target"]

    @property
    def measured(self) -> dict | None:
        return self.report.get("measured")


def _options(options: CompileOptions | None, **kw) -> CompileOptions:
    options = options or CompileOptions()
    kw = {k: v for k, v in kw.items() if v is not None}
    opts = dataclasses.replace(options, **kw) if kw else options
    if opts.quantize not in (None, "int8", "none", "float32"):
        raise UsageError(f"--quantize {opts.quantize}: edgekit quantizes to int8 (or none)")
    if opts.quantize in ("none", "float32"):
        opts = dataclasses.replace(opts, quantize=None)
    if opts.prune is not None and not (0.0 <= opts.prune < 1.0):
        raise UsageError(f"--prune {opts.prune}: sparsity must be in [0, 1)")
    if opts.int8_layers not in ("auto", "all"):
        raise UsageError(f"--int8-layers {opts.int8_layers}: give auto or all")
    if opts.input_format not in ("float", "quantized"):
        raise UsageError(f"--input-format {opts.input_format}: give float or quantized")
    if opts.input_format == "quantized" and opts.quantize != "int8":
        raise UsageError("--input-format quantized: only an int8 build takes its input quantized; add --quantize int8")
    if opts.observer not in ("minmax", "percentile", "mse"):
        raise UsageError(f"--observer {opts.observer}: choose one of minmax, percentile, mse")
    if str(opts.patch) not in ("auto", "min-memory", "off") and not str(opts.patch).isdigit():
        raise UsageError(f"--patch {opts.patch}: use auto, min-memory, off or a grid size such as 4")
    if opts.sram_budget is not None and opts.sram_budget <= 0:
        raise UsageError(f"--sram-budget {opts.sram_budget}: give a positive number of bytes, such as 256KB")
    return opts


def load_calibration(path: str | Path, model: Model) -> np.ndarray:
    """Calibration inputs from a .npy file or an .npz with an array 'x' (or its only array)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such calibration file; give a .npy or .npz of model inputs")
    try:
        data = np.load(path, allow_pickle=False)
        if isinstance(data, np.lib.npyio.NpzFile):
            keys = list(data.keys())
            if not keys:
                raise DataError(f"{path}: the archive holds no arrays; save the inputs as 'x'")
            x = data["x"] if "x" in keys else data[keys[0]]
        else:
            x = data
    except EdgekitError:
        raise
    except Exception as e:
        raise DataError(f"{path}: cannot read calibration data ({type(e).__name__}: "
                        f"{str(e).splitlines()[0][:120] if str(e) else 'corrupt file'}); save it with numpy.save") from e
    x = np.asarray(x)
    model.check_input(x, f"calibration ({path.name})")
    return x.astype(np.float32)


def prepare(model, options: CompileOptions) -> Model:
    """Load the model and apply the converters the options ask for (pruning, then spiking conversion; quantization
    is target-specific)."""
    m = Model.load(model)
    if options.calib:
        m = dataclasses.replace(m, calib=load_calibration(options.calib, m))
    if options.prune:
        from edgekit.converters import prune as _prune

        m = _prune(m, sparsity=options.prune)
    if options.spiking:
        from edgekit.converters import to_spiking

        m = to_spiking(m, kind=options.spiking)
    return m


def _streamed(m: Model, opts: CompileOptions, profile, tgt) -> Model:
    """With ``--streaming``: a conv model over time marked to build as a step program (recurrent models always do)."""
    if not opts.streaming:
        return m
    from edgekit.stepgraph import is_recurrent

    if not tgt.capabilities(profile).streaming:
        where = ", ".join(p.name for p in _profiles_where(lambda c: c.streaming))
        raise UsageError(f"--streaming builds step programs for {where}; {profile.name} runs the windowed model — "
                         "drop --streaming")
    if is_recurrent(m.deploy_graph):
        return m
    from edgekit.converters.streaming import streaming_model

    return streaming_model(m)


def convert(model, out: str | Path, *, prune: float | None = None, structured: bool = False,
            quantize: str | None = None, qat: bool = False, observer: str = "minmax", calib: str | None = None,
            force: bool = False, prune_options: dict | None = None, qat_options: dict | None = None,
            budgets=None, epochs: int | None = None, nest_options: dict | None = None) -> Model:
    """Prune and/or choose int8 parameters, or make nested operating points, then save the result as a ``.pt2``
    (``edgekit convert``).

    Pruning runs first (``converters.prune``), then quantization (``converters.quantize``, PTQ or QAT). The file is
    a torch.export program; quantization parameters and pruning facts travel inside it (see
    ``edgekit.loaders.save_pt2``) and ``Model.load(out)`` gives them back. Returns the converted Model.

    ``budgets`` (width fractions, the largest 1.0) instead fine-tunes nested sub-networks (``converters.nest``,
    ``epochs`` of fine-tuning); the file then holds every operating point (``converters.nested.operating_point``).
    Nesting does not combine with pruning or quantization here: quantize when compiling the nested model.
    """
    from edgekit.converters.quantize import OBSERVERS
    from edgekit.loaders import save_pt2

    out = Path(out)
    if out.suffix.lower() != ".pt2":
        raise UsageError(f"-o {out}: edgekit convert writes a torch.export program; name it *.pt2")
    if out.exists() and not force:
        raise UsageError(f"{out}: already exists; pass --force to replace it or choose another -o")
    if quantize in ("none", "float32"):
        quantize = None
    if quantize not in (None, "int8"):
        raise UsageError(f"--quantize {quantize}: edgekit quantizes to int8 (or none)")
    if qat and quantize is None:
        raise UsageError("--qat fine-tunes for int8 quantization; add --quantize int8")
    if observer not in OBSERVERS:
        raise UsageError(f"--observer {observer}: choose one of {', '.join(OBSERVERS)}")
    if prune is not None and not (0.0 <= prune < 1.0):
        raise UsageError(f"--prune {prune}: sparsity must be in [0, 1)")
    if structured and prune is None:
        raise UsageError("--structured says how to prune; add --prune SPARSITY")
    if epochs is not None and budgets is None:
        raise UsageError("--epochs sets how long --budgets fine-tunes the nested widths; add --budgets")
    if budgets is not None:
        from edgekit.converters.nested import check_budgets

        budgets = check_budgets(budgets)
        if prune is not None or quantize or qat:
            raise UsageError("--budgets makes nested operating points of the float model; convert with --budgets "
                             "alone and quantize when compiling (edgekit compile OUT.pt2 --quantize int8)")
        if epochs is not None and epochs < 0:
            raise UsageError(f"--epochs {epochs}: give 0 or more")
    m = Model.load(model)
    if calib:
        m = dataclasses.replace(m, calib=load_calibration(calib, m))
    if budgets is not None:
        from edgekit.converters.nested import SETTINGS, nest

        options = dict(nest_options or {})
        settings = options.pop("settings", None) or SETTINGS
        if epochs is not None:
            settings = dataclasses.replace(settings, epochs=epochs)
        m = nest(m, budgets, settings=settings, **options)
    if prune is not None:
        from edgekit.converters.prune import prune as _prune

        m = _prune(m, prune, structured=structured, **(prune_options or {}))
    if quantize:
        from edgekit.converters.quantize import quantize as _quantize

        m = _quantize(m, observer=observer, mode="qat" if qat else "ptq", **(qat_options or {}))
    tmp = out.parent / f".{out.stem}.partial.pt2"
    try:
        save_pt2(m, tmp)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return m


def estimate(model, target: str, options: CompileOptions | None = None, **kw) -> tuple[Estimate, bool, list[str]]:
    """Estimate flash, SRAM, latency and energy of ``model`` on ``target`` without building anything."""
    opts = _options(options, **kw)
    profile = get_profile(target)
    tgt = get_target(profile)
    est = tgt.plan(_streamed(modelcache.load_graph_only(model), opts, profile, tgt), profile, opts).estimate
    fits, reasons = fit_check(est, profile, tgt.capabilities(profile).memories, opts.sram_budget)
    return est, fits, reasons


@contextlib.contextmanager
def staged_output(out: Path, force: bool) -> Iterator[Path]:
    """A temporary folder next to ``out`` that becomes ``out`` only if the block finishes."""
    out = Path(out)
    if out.exists() and not force:
        raise UsageError(f"{out}: already exists; pass --force to replace it or choose another -o")
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out}: exists and is not a folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        umask = os.umask(0o022)
        os.umask(umask)
        tmp.chmod(0o777 & ~umask)  # mkdtemp makes it private (0700); OUT gets the permissions of any new folder
        yield tmp
        if out.exists():
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except KeyboardInterrupt:
        shutil.rmtree(tmp, ignore_errors=True)
        raise InterruptedError_(f"interrupted; {out} was not written") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# Tests of Ctrl-C set this to a file name: the compile creates it once OUT's files are written into the temporary
# folder, then waits there (at most HOLD_LIMIT_S) for the signal. Without it, a test that signals "mid-build" races
# the build: on a loaded machine the tiny model is done, and the process already exiting, when the signal lands.
HOLD_ENV = "EDGEKIT_TEST_HOLD_BEFORE_COMMIT"
HOLD_LIMIT_S = 120.0


def _hold_for_tests(tmp: Path) -> None:
    flag = os.environ.get(HOLD_ENV)
    if not flag:
        return
    import time

    Path(flag).write_text(str(tmp))
    deadline = time.monotonic() + HOLD_LIMIT_S
    while time.monotonic() < deadline:
        time.sleep(0.05)
    raise UsageError(f"{HOLD_ENV} is set but no signal came within {HOLD_LIMIT_S:.0f} s; unset it")


def fit_advice(model, plan, target) -> str:
    """What would help a model that does not fit: the target's own advice (with estimates where cheap), then what
    helps on any target."""
    tips = list(target.fit_advice(plan))
    if getattr(model, "module", None) is not None:
        # Unstructured zeros are still stored densely; removing whole channels shrinks weights and activations.
        source = str(model.meta.get("source", model.name)).removeprefix("example:")
        tips.append(f"structured pruning (edgekit convert {source} --prune 0.5 --structured -o small.pt2, then "
                    "compile small.pt2)")
    tips.append("--allow-oversize to build anyway")
    return "; try " + " or ".join(tips)


def compile(model, target: str, out: str | Path, options: CompileOptions | None = None, *, force: bool = False,
            **kw) -> Artifact:
    """Build ``model`` for ``target`` into the folder ``out``; returns the Artifact (report included).

    The target plans once (schedules, memory plan, estimate) and builds from that plan. A model whose estimate does
    not fit the device's memories raises DoesNotFitError before anything is built (unless ``allow_oversize``)."""
    opts = _options(options, **kw)
    profile = get_profile(target)
    out = Path(out)
    if out.exists() and not force:
        raise UsageError(f"{out}: already exists; pass --force to replace it or choose another -o")
    tgt = get_target(profile)
    caps = tgt.capabilities(profile)
    if opts.input_format != "float" and tgt.backend != "phone":
        raise UsageError(f"--input-format {opts.input_format}: the phone targets take a quantized input; "
                         f"{profile.name} takes the model's own (drop --input-format)")
    if opts.spiking and not caps.spiking:
        spiking = ", ".join(p.name for p in _profiles_where(lambda c: c.spiking))
        raise UsageError(f"--spiking converts for neuromorphic chips ({spiking}); {profile.name} runs the ANN as it "
                         "is — drop --spiking")
    m = _streamed(prepare(model, opts), opts, profile, tgt)
    plan = tgt.plan(m, profile, opts)
    fits, reasons = fit_check(plan.estimate, profile, caps.memories, opts.sram_budget)
    if not fits and not opts.allow_oversize:
        over = [r for r in reasons if "over" in r]
        raise DoesNotFitError(f"model '{m.name}' does not fit {profile.name}: " + "; ".join(over)
                              + fit_advice(m, plan, tgt))
    with staged_output(out, force) as tmp:
        result = tgt.build(plan, tmp)
        _hold_for_tests(tmp)
        fits, reasons = fit_check(result.estimate, profile, caps.memories, opts.sram_budget)
        rep = reporting.base_report(m, profile, result.analysis, result.estimate, fits, reasons, _options_json(opts),
                                    result.dtype)
        rep["files"] = sorted(result.files + ["report.json", "report.html"])
        rep["build"] = result.info.to_json()
        rep["notes"] = result.notes
        if result.quant_debug is not None:
            rep["quant_debug"] = result.quant_debug
        rep["schedule"] = result.schedule
        rep["patch"] = result.patch
        if result.energy_breakdown is not None:
            rep["energy_breakdown"] = result.energy_breakdown
        reporting.write_report(tmp, rep)
    return Artifact(out, rep)


def _profiles_where(test) -> list:
    from edgekit.targets import all_profiles

    return [p for p in all_profiles().values() if test(get_target(p).capabilities(p))]


def _options_json(opts: CompileOptions) -> dict:
    d = dataclasses.asdict(opts)
    d.pop("extra", None)
    return d


def profile(out: str | Path, **kw) -> Artifact:
    """Run a compiled artifact on its runtime, add ``measured`` and ``errors`` to its report, render again."""
    out = Path(out)
    rep = reporting.read_report(out)
    try:
        prof = get_profile(rep["target"])
        target = get_target(prof)
    except UsageError:
        raise UsageError(f"{out}/report.json: unknown target '{rep['target']}'; compile again") from None
    module = target.runtime
    if kw.get("device") is not None and "device" not in target.capabilities(prof).profile_options:
        raise UsageError(f"--device runs microcontroller builds on a board; {out} is for {rep['target']}")
    try:
        runtime = importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name != module:
            raise
        raise UnsupportedError(f"{out}: {module} is not part of this edgekit installation, so {rep['target']} "
                               "builds cannot be profiled here") from e
    measured = runtime.profile(out, rep, **kw)
    rep["measured"] = measured
    rep["errors"] = reporting.relative_errors(rep["estimate"], measured)
    if "fits_measured" in measured:
        rep["fits"] = measured["fits_measured"]
        rep["fit_reasons"] = measured.get("fit_reasons", rep["fit_reasons"])
    tmp = out / ".report.json.partial"
    reporting.write_json(tmp, rep)
    (out / ".report.html.partial").write_text(reporting.render_html(rep))
    os.replace(tmp, out / "report.json")
    os.replace(out / ".report.html.partial", out / "report.html")
    return Artifact(out, rep)


def render(out: str | Path) -> Path:
    """Render report.html again from report.json."""
    out = Path(out)
    rep = reporting.read_report(out)
    (out / "report.html").write_text(reporting.render_html(rep))
    return out / "report.html"
