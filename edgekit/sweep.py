"""Design-space search: which target, pruning, quantization and patch schedule serve a model best under a device
budget, on one machine or a Ray cluster.

Where it sits: above the whole flow. Every configuration is one *trial* that runs model -> converters -> target ->
runtime through :mod:`edgekit.api` (``compile`` then ``profile``: the emulated board on Cortex-M, ONNX Runtime on a
phone, Lava on a neuromorphic chip) and keeps the figures of its report. Trials are independent Ray tasks
(``num_cpus=1``); ``ray.init()`` starts a local Ray with no set-up, ``address=`` joins an existing cluster.

* ``search="grid"`` tries every configuration; ``search="optuna"`` lets a multi-objective sampler (NSGA-II, Deb et
  al. 2002, with the budget as constraints) pick ``trials`` of them when the grid is too large.
* Results are appended to ``OUT/results.jsonl`` as each trial finishes; running the same sweep again skips the
  configurations already there (resume after Ctrl-C, a crash, or a grid that grew).
* ``OUT/sweep.json`` holds every trial, the Pareto front and the best configuration under the budget;
  ``OUT/sweep.html`` draws the fronts; ``OUT/best/`` is the best configuration's build folder.

Figures of a trial and where they come from (``sources`` in every record): accuracy, flash, peak SRAM, instructions
and latency are *measured* when the runtime measures them, else the *estimate*; energy is measured only where a
runtime measures it (Lava), *derived* on Cortex-M (measured instructions x the profile's pJ per cycle, the estimate's
own formula with the emulator's count), and the estimate otherwise.
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import os
import re
import shutil
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from edgekit.errors import InterruptedError_, UsageError

# Figures of a trial: (key, better). Objectives of the Pareto front and of the Optuna search, in this order.
OBJECTIVES = (("accuracy", "max"), ("peak_sram_bytes", "min"), ("latency_ms", "min"), ("energy_uj", "min"))
METRICS = ("accuracy", "flash_bytes", "peak_sram_bytes", "instructions", "latency_ms", "energy_uj")
# The two-dimensional fronts drawn in sweep.html: accuracy against each cost.
FRONTS = {"sram": "peak_sram_bytes", "latency": "latency_ms", "energy": "energy_uj"}
RESULTS = "results.jsonl"
DEFAULT_TIMEOUT_S = 900.0
_RANK_NONE = float("inf")


# ---- what a trial is ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    """One point of the design space. ``patch`` is None for targets without a patch schedule (all but Cortex-M);
    ``budget`` the width of one operating point of a nested model (edgekit convert --budgets), built alone; None for
    an ordinary model."""

    target: str
    prune: float = 0.0
    quantize: str | None = None
    patch: str | None = None
    budget: float | None = None

    @property
    def key(self) -> str:
        """The configuration's identity in results.jsonl (stable across runs)."""
        return (f"{self.target} prune={self.prune:g} quantize={self.quantize or 'none'} "
                f"patch={self.patch or '-'}" + (f" budget={self.budget:g}" if self.budget is not None else ""))

    @property
    def slug(self) -> str:
        return re.sub(r"[^A-Za-z0-9.]+", "_", self.key.replace("=", "")).strip("_")

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> "Config":
        budget = d.get("budget")
        return cls(d["target"], float(d.get("prune") or 0.0), d.get("quantize"), d.get("patch"),
                   None if budget is None else float(budget))


@dataclass(frozen=True)
class Budget:
    """What the device allows: peak SRAM and flash in bytes, latency in ms, energy in µJ per inference (None: no
    limit). A trial meets the budget when it ran, fits the device, and every limited figure is known and within."""

    sram_bytes: int | None = None
    flash_bytes: int | None = None
    latency_ms: float | None = None
    energy_uj: float | None = None

    LIMITS = {"sram_bytes": "peak_sram_bytes", "flash_bytes": "flash_bytes", "latency_ms": "latency_ms",
              "energy_uj": "energy_uj"}

    def items(self) -> Iterator[tuple[str, str, float]]:
        """(budget field, metric key, limit) for every limit that is set."""
        for name, metric in self.LIMITS.items():
            limit = getattr(self, name)
            if limit is not None:
                yield name, metric, limit

    def violations(self, record: dict) -> list[str]:
        """Why a trial misses the budget (empty: it meets it)."""
        if record.get("status") != "ok":
            return ["did not run"]
        out = [] if record.get("fits_device", True) else ["does not fit the device"]
        metrics = record.get("metrics") or {}
        for name, metric, limit in self.items():
            value = metrics.get(metric)
            if value is None:
                out.append(f"{metric} unknown")
            elif value > limit:
                out.append(f"{metric} {value:,.4g} > {limit:,.4g}")
        return out

    def constraints(self, record: dict) -> dict[str, float]:
        """Optuna constraint values (<= 0 is feasible): 1 if it does not fit, the relative excess over each limit."""
        metrics = record.get("metrics") or {}
        out = {"fits_device": 0.0 if record.get("fits_device", True) else 1.0}
        for name, metric, limit in self.items():
            value = metrics.get(metric)
            out[name] = 1.0 if value is None else (value - limit) / max(limit, 1e-12)
        return out

    def to_json(self) -> dict:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


# ---- parsing what people type -------------------------------------------------------------------------------------

_SIZE_UNITS = {"": 1, "b": 1, "k": 1024, "kb": 1024, "kib": 1024, "m": 1024 ** 2, "mb": 1024 ** 2,
               "mib": 1024 ** 2, "g": 1024 ** 3, "gb": 1024 ** 3, "gib": 1024 ** 3}
_TIME_UNITS_MS = {"": 1.0, "ms": 1.0, "s": 1e3, "us": 1e-3, "µs": 1e-3, "ns": 1e-6}
_ENERGY_UNITS_UJ = {"": 1.0, "uj": 1.0, "µj": 1.0, "mj": 1e3, "j": 1e6, "nj": 1e-3}
_NUMBER = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([a-zµ]*)\s*$", re.IGNORECASE)


def _quantity(text, units: dict[str, float], what: str, example: str) -> float:
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return float(text)
    m = _NUMBER.match(str(text))
    if not m or m[2].lower() not in units:
        raise UsageError(f"{what} {text!r}: give a number with a unit, such as {example}")
    return float(m[1]) * units[m[2].lower()]


def parse_size(text) -> int:
    """Bytes from ``256KB``, ``1MB``, ``512KiB``, ``4096`` (KB = 1024 bytes, as device memories are counted)."""
    return int(round(_quantity(text, _SIZE_UNITS, "size", "256KB or 1MB")))


def parse_time_ms(text) -> float:
    """Milliseconds from ``50ms``, ``0.2s``, ``800us`` or a bare number of ms."""
    return _quantity(text, _TIME_UNITS_MS, "time", "50ms or 0.2s")


def parse_energy_uj(text) -> float:
    """Microjoules from ``500uJ``, ``2mJ`` or a bare number of µJ."""
    return _quantity(text, _ENERGY_UNITS_UJ, "energy", "500uJ or 2mJ")


_BUDGET_KEYS = {"sram": ("sram_bytes", parse_size), "sram_bytes": ("sram_bytes", parse_size),
                "flash": ("flash_bytes", parse_size), "flash_bytes": ("flash_bytes", parse_size),
                "latency": ("latency_ms", parse_time_ms), "latency_ms": ("latency_ms", parse_time_ms),
                "energy": ("energy_uj", parse_energy_uj), "energy_uj": ("energy_uj", parse_energy_uj)}


def parse_budget(spec: "str | dict | Budget | None") -> Budget:
    """A Budget from ``"sram=256KB,flash=1MB,latency=50ms"`` or ``{"sram": 262144, "latency_ms": 50}``."""
    if spec is None or isinstance(spec, Budget):
        return spec or Budget()
    if isinstance(spec, str):
        pairs = []
        for part in (p.strip() for p in spec.split(",")):
            if not part:
                continue
            if "=" not in part:
                raise UsageError(f"--budget {spec}: write key=value pairs such as sram=256KB,flash=1MB,latency=50ms")
            k, v = part.split("=", 1)
            pairs.append((k.strip(), v.strip()))
    elif isinstance(spec, dict):
        pairs = list(spec.items())
    else:
        raise UsageError(f"budget {spec!r}: give a dict or a string such as sram=256KB,flash=1MB,latency=50ms")
    values: dict[str, float] = {}
    for k, v in pairs:
        if k.lower() not in _BUDGET_KEYS:
            raise UsageError(f"budget key {k!r}: use sram, flash, latency or energy (e.g. sram=256KB,latency=50ms)")
        name, parse = _BUDGET_KEYS[k.lower()]
        try:
            value = parse(v)
        except UsageError as e:
            raise UsageError(f"budget {k}={v}: {str(e).split(': ', 1)[-1]}") from None
        if value <= 0:
            raise UsageError(f"budget {k}={v}: a limit must be positive")
        values[name] = value
    return Budget(**values)


def _list(value, what: str) -> list:
    if value is None:
        return [None]
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(value, (int, float)):
        return [value]
    items = list(value)
    if not items:
        raise UsageError(f"{what}: give at least one value")
    return items


PATCH_MODES = ("auto", "min-memory", "off")  # and a grid size N


def _capabilities(target: str):
    from edgekit.targets import get_profile, get_target

    profile = get_profile(target)
    return get_target(profile).capabilities(profile)


def design_space(targets, prune=(0.0,), quantize=(None, "int8"), patch=("auto", "off"),
                 budgets=(None,)) -> list[Config]:
    """Every configuration of the grid, checked before anything runs (a typo should not cost a cluster run).

    The patch axis only exists for targets that take patch-based schedules (microcontrollers); on the others each
    (prune, quantize) pair is one trial. ``budgets``: the operating points of a nested model to try (their widths),
    or (None,) for an ordinary model."""
    targets = _list(targets, "--target")
    if targets == [None]:
        raise UsageError("sweep: give at least one --target (edgekit targets lists them)")
    caps = {t: _capabilities(t) for t in targets}  # an unknown name is a UsageError listing the targets
    prunes = []
    for p in _list(prune, "--prune"):
        try:
            p = 0.0 if p in (None, "", "none") else float(p)
        except (TypeError, ValueError):
            raise UsageError(f"--prune {p}: give sparsities between 0 and 1, such as 0,0.5,0.9") from None
        if not 0.0 <= p < 1.0:
            raise UsageError(f"--prune {p:g}: sparsity must be in [0, 1)")
        prunes.append(p)
    quants = []
    for q in _list(quantize, "--quantize"):
        q = None if q in (None, "none", "float32", "fp32") else str(q)
        if q not in (None, "int8"):
            raise UsageError(f"--quantize {q}: edgekit quantizes to int8 (or none)")
        quants.append(q)
    patches = []
    for p in _list(patch, "--patch"):
        p = "auto" if p is None else str(p)
        if p not in PATCH_MODES and not p.isdigit():
            raise UsageError(f"--patch {p}: use auto, min-memory, off or a grid size such as 4")
        patches.append(p)
    space: list[Config] = []
    for t in dict.fromkeys(targets):
        axis = list(dict.fromkeys(patches)) if caps[t].patching else [None]
        # a spiking target's trial converts the model to a spiking network, which holds the chip's own 8-bit weights
        qaxis = [None] if caps[t].spiking else dict.fromkeys(quants)
        for b, p, q, pa in itertools.product(dict.fromkeys(budgets), dict.fromkeys(prunes), qaxis, axis):
            space.append(Config(t, p, q, pa, b))
    return space


def budget_axis(model, budgets) -> list[float | None]:
    """The operating points a sweep of ``model`` tries: ``budgets`` (widths, a list or comma-separated string; "all"
    or None: every point of a nested model), checked against the model's own; (None,) for an ordinary model."""
    nested = (model.meta.get("nested") or {}).get("budgets") if model is not None else None
    if not nested:
        if budgets not in (None, "", "all"):
            raise UsageError(f"--budgets {budgets}: model '{model.name}' has no operating points; make them with "
                             "edgekit convert MODEL --budgets 0.25,0.5,1 -o nested.pt2")
        return [None]
    if budgets in (None, "", "all"):
        return [float(b) for b in nested]
    chosen = []
    for b in _list(budgets, "--budgets"):
        try:
            b = float(b)
        except (TypeError, ValueError):
            raise UsageError(f"--budgets {b}: give widths such as 0.25,0.5,1 or all") from None
        if not any(abs(b - n) < 1e-9 for n in nested):
            raise UsageError(f"--budgets {b:g}: model '{model.name}' has operating points "
                             f"{', '.join(f'{n:g}' for n in nested)}")
        chosen.append(b)
    return chosen


# ---- one trial (runs inside a Ray worker) -------------------------------------------------------------------------


def metrics_from_report(report: dict) -> tuple[dict, dict]:
    """The trial's figures from a profiled report, and where each comes from (measured / estimate / derived)."""
    est = report.get("estimate") or {}
    meas = report.get("measured") or {}
    metrics, sources = {}, {}

    def take(key, measured_key, estimate_key):
        if meas.get(measured_key) is not None:
            metrics[key], sources[key] = meas[measured_key], "measured"
        elif estimate_key and est.get(estimate_key) is not None:
            metrics[key], sources[key] = est[estimate_key], "estimate"
        else:
            metrics[key], sources[key] = None, None

    take("accuracy", "accuracy", None)
    take("flash_bytes", "flash_bytes", "flash_bytes")
    take("peak_sram_bytes", "sram_bytes", "peak_sram_bytes")
    take("instructions", "instructions", "instructions")
    take("latency_ms", "latency_ms", "latency_ms")
    take("energy_uj", "energy_uj", "energy_uj")
    if sources["energy_uj"] == "estimate" and sources["instructions"] == "measured" and est.get("instructions"):
        # The Cortex-M estimate is cycles x pJ/cycle (edgekit/estimate.py); the emulator counts the cycles.
        metrics["energy_uj"] = est["energy_uj"] * metrics["instructions"] / est["instructions"]
        sources["energy_uj"] = "derived"
    return metrics, sources


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    text = f"{type(e).__name__}: {text}" if text else type(e).__name__
    return text if len(text) <= 400 else text[:397] + "..."


def run_trial(model, config: Config, build_dir: str, options=None, repeat: int = 50) -> dict:
    """Compile and profile one configuration into ``build_dir``; never raises: a failure is a record with its error.

    This is the body of the Ray task (and of the local rebuild of the best configuration)."""
    from edgekit import api
    from edgekit.targets import CompileOptions

    start = time.time()
    record: dict[str, Any] = {"key": config.key, "config": config.to_json(), "status": "ok", "error": None,
                              "metrics": {}, "sources": {}, "fits_device": None, "runtime": None,
                              "host": socket.gethostname(), "pid": os.getpid()}
    try:
        base = options or CompileOptions()
        if config.budget is not None:  # one operating point of a nested model, built on its own
            from edgekit.converters.nested import operating_point
            from edgekit.model import Model

            loaded = Model.load(model)
            widths = [float(b) for b in loaded.meta["nested"]["budgets"]]
            model = operating_point(loaded, min(range(len(widths)), key=lambda i: abs(widths[i] - config.budget)))
        opts = dataclasses.replace(base, prune=config.prune or None, quantize=config.quantize,
                                   patch=config.patch or base.patch)
        caps = _capabilities(config.target)
        if caps.spiking:  # converted by to_spiking (pruned first), weights on the chip's grid
            opts = dataclasses.replace(opts, quantize=None, spiking=base.spiking or "auto")
        art = api.compile(model, config.target, build_dir, opts, force=True)
        record["compile_s"] = round(time.time() - start, 3)
        art = api.profile(art.path, **({"repeat": repeat} if "repeat" in caps.profile_options else {}))
        record["metrics"], record["sources"] = metrics_from_report(art.report)
        record["fits_device"] = bool(art.report.get("fits"))
        record["runtime"] = (art.report.get("measured") or {}).get("runtime")
    except BaseException as e:  # noqa: BLE001 - a trial must report, whatever went wrong
        if isinstance(e, KeyboardInterrupt):
            raise
        record["status"] = "failed"
        record["error"] = _one_line(e)
    record["seconds"] = round(time.time() - start, 3)
    return record


# ---- Pareto fronts, the budget and the best configuration ---------------------------------------------------------


def pareto_front(records: list[dict], objectives: Iterable[tuple[str, str]] = OBJECTIVES) -> list[int]:
    """Indices of the records no other record dominates (at least as good on every objective, better on one).

    Only successful records with every objective known take part; an objective no record has (accuracy of a model
    without labels) is left out. Equal records are all kept."""
    objectives = [(k, s) for k, s in objectives
                  if any((r.get("metrics") or {}).get(k) is not None for r in records if r.get("status") == "ok")]
    if not objectives:
        return []
    points = {}
    for i, r in enumerate(records):
        m = r.get("metrics") or {}
        if r.get("status") == "ok" and all(m.get(k) is not None for k, _ in objectives):
            points[i] = [(-m[k] if s == "max" else m[k]) for k, s in objectives]  # all minimised
    front = []
    for i, p in points.items():
        dominated = any(all(a <= b for a, b in zip(q, p)) and any(a < b for a, b in zip(q, p))
                        for j, q in points.items() if j != i)
        if not dominated:
            front.append(i)
    return front


def _rank(record: dict) -> tuple:
    """Best first: the most accurate, then the fastest, the least energy, the least SRAM, the least flash."""
    m = record.get("metrics") or {}
    acc = m.get("accuracy")

    def low(k):
        return m[k] if m.get(k) is not None else _RANK_NONE

    return (-acc if acc is not None else 0.0, low("latency_ms"), low("energy_uj"), low("peak_sram_bytes"),
            low("flash_bytes"), record["key"])


def summarize(records: list[dict], budget: Budget) -> dict:
    """Budget verdicts, the Pareto front (all objectives and accuracy against each cost) and the best configuration
    meeting the budget (None when none does). Records are not changed; verdicts are returned beside them."""
    verdicts = {r["key"]: budget.violations(r) for r in records}
    front = [records[i]["key"] for i in pareto_front(records)]
    fronts = {name: [records[i]["key"] for i in pareto_front(records, [("accuracy", "max"), (metric, "min")])]
              for name, metric in FRONTS.items()}
    within = [r for r in records if not verdicts[r["key"]]]
    best = min(within, key=_rank) if within else None
    return {"within_budget": [r["key"] for r in within], "budget_violations": verdicts, "pareto": front,
            "fronts": fronts, "best": best}


# ---- the search strategies ----------------------------------------------------------------------------------------


class _Grid:
    """Every configuration not yet in results.jsonl, in order."""

    def __init__(self, space: list[Config], done: dict[str, dict]):
        self.todo = [c for c in space if c.key not in done]
        self.total = len(self.todo)

    def next(self) -> Config | None:
        return self.todo.pop(0) if self.todo else None

    def finished(self, config: Config, record: dict) -> None:
        pass


class _Optuna:
    """Ask-and-tell NSGA-II over the categorical axes; ``trials`` counts configurations evaluated in total (those
    already in results.jsonl included), so a rerun continues the same study instead of starting a new one.

    Samplers propose a configuration twice now and then; a repeat is told the known values and costs no trial."""

    def __init__(self, space: list[Config], done: dict[str, dict], trials: int, budget: Budget, seed: int):
        import warnings

        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
        self.optuna = optuna
        self.space = {c.key: c for c in space}
        self.budget = budget
        self.targets = list(dict.fromkeys(c.target for c in space))
        self.prunes = list(dict.fromkeys(c.prune for c in space))
        self.quants = list(dict.fromkeys(c.quantize for c in space))
        self.patches = {t: list(dict.fromkeys(c.patch for c in space if c.target == t)) for t in self.targets}
        self.budgets = list(dict.fromkeys(c.budget for c in space))
        population = max(4, min(50, trials // 3))
        sampler = optuna.samplers.NSGAIISampler(population_size=population, seed=seed)  # reads trial constraints
        self.study = optuna.create_study(directions=[("maximize" if s == "max" else "minimize")
                                                     for _, s in OBJECTIVES], sampler=sampler)
        self.evaluated = {k for k in done if k in self.space}
        self.limit = min(trials, len(self.space))
        self.total = max(0, self.limit - len(self.evaluated))
        self.waiting: dict[str, list] = {}  # key -> optuna trials waiting for that configuration's result
        self.asks = 0
        for key in self.evaluated:
            rec = done[key]
            c = self.space[key]
            state = (optuna.trial.TrialState.COMPLETE if rec["status"] == "ok" else optuna.trial.TrialState.FAIL)
            self.study.add_trial(optuna.trial.create_trial(
                params=self._params(c), distributions=self._distributions(c), state=state,
                values=self._values(rec) if rec["status"] == "ok" else None,
                constraints=budget.constraints(rec)))
        self.done = {k: done[k] for k in self.evaluated}

    def _distributions(self, c: Config) -> dict:
        D = self.optuna.distributions.CategoricalDistribution
        d = {"target": D(self.targets), "prune": D(self.prunes), "quantize": D(self.quants)}
        if c.patch is not None:
            d["patch"] = D(self.patches[c.target])
        if c.budget is not None:
            d["budget"] = D(self.budgets)
        return d

    @staticmethod
    def _params(c: Config) -> dict:
        p = {"target": c.target, "prune": c.prune, "quantize": c.quantize}
        if c.patch is not None:
            p["patch"] = c.patch
        if c.budget is not None:
            p["budget"] = c.budget
        return p

    @staticmethod
    def _values(rec: dict) -> list[float]:
        m = rec.get("metrics") or {}
        out = []
        for k, s in OBJECTIVES:
            v = m.get(k)
            out.append(float(v) if v is not None else (0.0 if s == "max" else 1e30))
        return out

    def _tell(self, trial, rec: dict) -> None:
        for name, value in self.budget.constraints(rec).items():
            trial.set_constraint(name, value)
        if rec["status"] == "ok":
            self.study.tell(trial, self._values(rec))
        else:
            self.study.tell(trial, state=self.optuna.trial.TrialState.FAIL)

    def next(self) -> Config | None:
        # Cap the asks: in a small space a sampler may keep proposing configurations it already knows.
        while (len(self.evaluated) + len(self.waiting) < self.limit
               and self.asks < 20 * self.limit + len(self.space)):
            self.asks += 1
            trial = self.study.ask()
            target = trial.suggest_categorical("target", self.targets)
            prune = trial.suggest_categorical("prune", self.prunes)
            quantize = trial.suggest_categorical("quantize", self.quants)
            patch = trial.suggest_categorical("patch", self.patches[target]) if self.patches[target] != [None] \
                else None
            budget = trial.suggest_categorical("budget", self.budgets) if self.budgets != [None] else None
            c = Config(target, prune, quantize, patch, budget)
            if c.key in self.done:
                self._tell(trial, self.done[c.key])
            elif c.key in self.waiting:
                self.waiting[c.key].append(trial)
            else:
                self.waiting[c.key] = [trial]
                return c
        return None

    def finished(self, config: Config, record: dict) -> None:
        self.evaluated.add(config.key)
        self.done[config.key] = record
        for trial in self.waiting.pop(config.key, []):
            self._tell(trial, record)


# ---- results on disk ----------------------------------------------------------------------------------------------


def read_results(path: Path, model_name: str) -> dict[str, dict]:
    """Finished trials by key. A line cut short by a crash is ignored (that trial runs again)."""
    done: dict[str, dict] = {}
    if not path.is_file():
        return done
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(rec, dict) or "key" not in rec:
            continue
        if rec.get("model") != model_name:
            raise UsageError(f"{path}: holds results for model '{rec.get('model')}', not '{model_name}'; "
                             f"choose another -o or start over with --restart")
        done[rec["key"]] = rec
    return done


def _append(path: Path, record: dict) -> None:
    from edgekit.report import _jsonable

    with open(path, "a") as f:
        f.write(json.dumps(record, default=_jsonable) + "\n")
        f.flush()
        os.fsync(f.fileno())


# ---- the result -----------------------------------------------------------------------------------------------


@dataclass
class SweepResult:
    """What a sweep found: every trial of the design space that has run (this time or before), the Pareto front,
    and the best configuration under the budget (``best`` is its record, None if nothing met the budget)."""

    out: Path
    model: str
    search: str
    budget: Budget
    trials: list[dict]
    pareto: list[str]
    fronts: dict[str, list[str]]
    within_budget: list[str]
    budget_violations: dict[str, list[str]]
    best: dict | None
    ran: int = 0                 # trials run by this call
    skipped: int = 0             # trials found in results.jsonl and not run again
    seconds: float = 0.0         # wall time of this call
    workers: int = 0
    ray_address: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def failed(self) -> list[dict]:
        return [t for t in self.trials if t["status"] != "ok"]

    def to_json(self) -> dict:
        return {"model": self.model, "search": self.search, "budget": self.budget.to_json(),
                "objectives": [{"metric": k, "better": s} for k, s in OBJECTIVES], "metrics": list(METRICS),
                "trials": self.trials, "pareto": self.pareto, "fronts": self.fronts,
                "within_budget": self.within_budget, "budget_violations": self.budget_violations,
                "best": self.best, "ran": self.ran, "skipped": self.skipped, "seconds": round(self.seconds, 3),
                "workers": self.workers, "ray_address": self.ray_address, "notes": self.notes}

    def table(self, title: str | None = None):
        return trial_table(self.trials, self.budget, set(self.pareto), set(self.within_budget),
                           self.best["key"] if self.best else None,
                           title or f"{self.model}: {len(self.trials)} configurations ({self.search})")


def trial_table(trials: list[dict], budget: Budget, pareto: set[str], within: set[str], best: str | None,
                title: str, running: Iterable[Config] = ()):
    """The terminal table: one row per configuration; ★ best under the budget, ◆ on the Pareto front."""
    from rich.markup import escape
    from rich.table import Table

    from edgekit.report import fmt_metric

    t = Table(title=title, caption="* estimate   † measured instructions × pJ/cycle   ★ best under the budget   "
                                   "◆ Pareto front", caption_justify="left")
    running = list(running)
    # a nested model's operating points: their width as a column of its own
    widths = any(r["config"].get("budget") is not None for r in trials) or any(c.budget is not None
                                                                                for c in running)
    for col, just in (("", "left"), ("target", "left"), ("prune", "right"), ("quantize", "left"),
                      ("patch", "left")) + ((("width", "right"),) if widths else ()) + (
                      ("accuracy", "right"), ("flash", "right"), ("peak SRAM", "right"),
                      ("instructions", "right"), ("latency ms", "right"), ("energy µJ", "right"),
                      ("budget", "left"), ("s", "right")):
        t.add_column(col, justify=just)
    for r in trials:
        c = r["config"]
        mark = ("★" if r["key"] == best else "") + ("◆" if r["key"] in pareto else "")
        cells = [mark, c["target"], f"{c['prune']:g}", c["quantize"] or "none", c["patch"] or "–"]
        if widths:
            cells.append("–" if c.get("budget") is None else f"{c['budget']:g}")
        if r["status"] == "ok":
            m, s = r["metrics"], r.get("sources") or {}
            cells += [fmt_metric(m.get(k), k, s.get(k)) for k in METRICS]
            ok = r["key"] in within
            cells.append("[green]meets[/]" if ok else "[red]over[/]" if budget.to_json() or not
                         r.get("fits_device", True) else "")
        else:
            cells += [f"[red]{r['status']}[/]", f"[red]{escape(r['error'] or '')}[/]", "", "", "", "", ""]
        cells.append(f"{r.get('seconds') or 0:.0f}")
        t.add_row(*cells)
    for c in running:
        t.add_row("", c.target, f"{c.prune:g}", c.quantize or "none", c.patch or "–",
                  *([f"{c.budget:g}" if c.budget is not None else "–"] if widths else []), "[yellow]running[/]",
                  *[""] * 7)
    return t


# ---- Ray -------------------------------------------------------------------------------------------------------


def _is_loopback(address: str) -> bool:
    host = address.split("://")[-1].rsplit(":", 1)[0].strip("[]")
    return host in ("127.0.0.1", "localhost", "::1")


def import_ray(address: str | None = None):
    """Import Ray set up for this use: no usage reporting; a local or loopback cluster on the loopback interface."""
    if "ray" not in sys.modules:
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        if address is None or _is_loopback(address):
            # Ray treats clusters as local-only when this is 0 (its default on macOS/Windows): the node address is
            # 127.0.0.1 and its servers listen on the loopback interface only, not on every interface.
            os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    try:
        import ray
    except ImportError as e:
        raise UsageError("edgekit sweep runs trials on Ray, which is not installed; run scripts/setup.sh "
                         "(or pip install -r requirements.txt)") from e
    return ray


class _Ray:
    """Starts (or joins) Ray, runs trial tasks with a time limit each, and shuts down what it started."""

    def __init__(self, address: str | None, workers: int | None):
        import logging

        self.ray = ray = import_ray(address)
        self.started = False
        if not ray.is_initialized():
            kw: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.WARNING}
            try:
                if address is None:  # "local": a new instance even if `ray start` ran on this machine before
                    ray.init(address="local", num_cpus=workers, include_dashboard=False, **kw)
                else:
                    ray.init(address=address, **kw)
            except Exception as e:  # connection refused, bad address, version mismatch ...
                where = f"the Ray cluster at {address}" if address else "a local Ray instance"
                raise UsageError(f"cannot start or join {where}: {_one_line(e)}") from e
            self.started = True
        cpus = int(ray.cluster_resources().get("CPU", 1))
        self.workers = max(1, min(workers or cpus, cpus))
        self.address = address or "local"
        self.task = ray.remote(num_cpus=1, max_retries=0)(run_trial)

    def submit(self, *args):
        return self.task.remote(*args)

    def wait(self, refs: list, timeout: float):
        return self.ray.wait(refs, num_returns=1, timeout=timeout)[0]

    def result(self, ref, config: Config) -> dict:
        try:
            return self.ray.get(ref)
        except Exception as e:  # the worker died (out of memory, killed) — the task itself never raises
            return {"key": config.key, "config": config.to_json(), "status": "failed",
                    "error": f"worker lost: {_one_line(e)}", "metrics": {}, "sources": {}, "fits_device": None,
                    "seconds": None}

    def cancel(self, ref) -> None:
        try:
            self.ray.cancel(ref, force=True)  # kills the worker process and the tools it started
        except Exception:
            pass

    def put(self, obj):
        return self.ray.put(obj)

    def close(self) -> None:
        if self.started:
            self.ray.shutdown()


# ---- the sweep ------------------------------------------------------------------------------------------------


def _model_ref(model) -> tuple[Any, str, Any]:
    """(what a trial loads, the name results.jsonl knows it by, the Model) — checked here, before Ray starts."""
    from edgekit.model import Model

    if isinstance(model, (str, Path)) and Path(model).exists():
        model = str(Path(model).resolve())
    m = Model.load(model)
    if isinstance(model, (str, Path)):
        return str(model), str(model) if Path(str(model)).exists() else m.name, m
    m = dataclasses.replace(m, _graph=None)  # the imported graph is rebuilt where it is needed
    return m, m.name, m


def sweep(model, targets, *, prune=(0.0,), quantize=(None, "int8"), patch=("auto", "off"), budget=None,
          budgets=None,
          out: str | Path = "sweep-out", search: str = "grid", trials: int = 20, address: str | None = None,
          workers: int | None = None, trial_timeout_s: float = DEFAULT_TIMEOUT_S, resume: bool = True,
          keep_builds: bool = False, options=None, repeat: int = 50, seed: int = 0,
          progress: bool = True) -> SweepResult:
    """Try configurations of ``model`` on ``targets`` and find the best one that meets ``budget``.

    ``prune``, ``quantize`` and ``patch`` are the values to try on each axis (lists, or comma-separated strings);
    ``budget`` a :class:`Budget`, a dict or a string such as ``"sram=256KB,flash=1MB,latency=50ms"``.
    ``search="grid"`` runs every configuration; ``"optuna"`` runs ``trials`` of them chosen by NSGA-II.
    ``address`` joins an existing Ray cluster (else a local Ray starts and stops here); ``workers`` caps the trials
    running at once (default: the cluster's CPUs). A trial running longer than ``trial_timeout_s`` is stopped and
    recorded as timed out. ``options`` (CompileOptions) apply to every trial (kernels, observer, allow_oversize...);
    ``repeat`` is the number of timed runs on the phone runtime. ``resume=False`` forgets earlier results in OUT.
    ``keep_builds`` keeps every trial's build folder in OUT/builds/ (else only OUT/best/ remains). A nested model
    (edgekit convert --budgets) adds its operating points as an axis (``budgets``: widths, default all of them),
    each built alone, so the Pareto front shows them beside pruning and quantization.

    On a multi-machine cluster OUT should be on a shared file system, and a file MODEL reachable at the same path
    on every machine; a best build made on another machine is built again here.
    """
    started = time.time()
    if search not in ("grid", "optuna"):
        raise UsageError(f"--search {search}: choose grid or optuna")
    if search == "optuna" and trials < 1:
        raise UsageError(f"--trials {trials}: give at least 1")
    if workers is not None and workers < 1:
        raise UsageError(f"--workers {workers}: give at least 1")
    if trial_timeout_s <= 0:
        raise UsageError(f"--trial-timeout {trial_timeout_s}: give a positive number of seconds")
    budget = parse_budget(budget)
    if budget.sram_bytes is not None:
        # the patch schedule of every trial decides for the budget's SRAM, as `edgekit compile --sram-budget` does
        from edgekit.targets import CompileOptions

        options = dataclasses.replace(options or CompileOptions(), sram_budget=(options.sram_budget if options and
                                      options.sram_budget else budget.sram_bytes))
    model_arg, model_name, model_obj = _model_ref(model)
    space = design_space(targets, prune, quantize, patch, budget_axis(model_obj, budgets))
    out = Path(out).resolve()
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out}: exists and is not a folder")
    results = out / RESULTS
    if not resume:
        for stale in (results, out / "sweep.json", out / "sweep.html"):
            stale.unlink(missing_ok=True)
        for stale in (out / "builds", out / "best"):
            shutil.rmtree(stale, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    done_all = read_results(results, model_name)
    in_space = {c.key for c in space}
    done = {k: r for k, r in done_all.items() if k in in_space}
    strategy = _Grid(space, done) if search == "grid" else _Optuna(space, done, trials, budget, seed)
    records: dict[str, dict] = dict(done)
    ran = 0

    if strategy.total:
        runner = _Ray(address, workers)
        builds = out / "builds"
        builds.mkdir(exist_ok=True)
        model_for_tasks = runner.put(model_arg) if not isinstance(model_arg, str) else model_arg
        kept = _Builds(out, budget, keep_builds, records)
        display = _Display(model_name, strategy.total, len(done), budget, progress)
        pending: dict[Any, tuple[Config, float]] = {}
        try:
            with display:
                while True:
                    while len(pending) < runner.workers:
                        c = strategy.next()
                        if c is None:
                            break
                        ref = runner.submit(model_for_tasks, c, str(builds / c.slug), options, repeat)
                        pending[ref] = (c, time.monotonic())
                    if not pending:
                        break
                    display.update(records.values(), [c for c, _ in pending.values()])
                    now = time.monotonic()
                    soonest = min(t0 + trial_timeout_s for _, t0 in pending.values())
                    finished = runner.wait(list(pending), timeout=max(0.05, min(1.0, soonest - now)))
                    now = time.monotonic()
                    for ref in list(pending):
                        c, t0 = pending[ref]
                        if ref in finished:
                            rec = runner.result(ref, c)
                        elif now - t0 >= trial_timeout_s:
                            runner.cancel(ref)
                            rec = {"key": c.key, "config": c.to_json(), "status": "timeout",
                                   "error": f"stopped after the trial time limit of {trial_timeout_s:g} s",
                                   "metrics": {}, "sources": {}, "fits_device": None,
                                   "seconds": round(now - t0, 3)}
                        else:
                            continue
                        del pending[ref]
                        rec["model"] = model_name
                        rec["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%S")
                        _append(results, rec)
                        records[c.key] = rec
                        strategy.finished(c, rec)
                        kept.finished(rec)
                        ran += 1
                        display.finished(rec)
                display.update(records.values(), [])
        except BaseException as e:  # Ctrl-C (or the CLI's own interrupt type): stop the trials still running
            for ref in pending:
                runner.cancel(ref)
            if isinstance(e, KeyboardInterrupt):
                raise InterruptedError_(f"interrupted; the {ran} trials that finished are in {results}, "
                                        f"run the same sweep again to go on") from None
            raise
        finally:
            runner.close()
        workers_used, ray_address = runner.workers, runner.address
    else:
        workers_used, ray_address = 0, None

    order = {c.key: i for i, c in enumerate(space)}
    trials_done = sorted(records.values(), key=lambda r: order[r["key"]])
    s = summarize(trials_done, budget)
    result = SweepResult(out=out, model=model_name, search=search, budget=budget, trials=trials_done,
                         pareto=s["pareto"], fronts=s["fronts"], within_budget=s["within_budget"],
                         budget_violations=s["budget_violations"], best=s["best"], ran=ran,
                         skipped=len(done), workers=workers_used, ray_address=ray_address)
    _keep_best(result, model_obj if not isinstance(model_arg, str) else model_arg, options, repeat, keep_builds)
    result.seconds = time.time() - started
    _write_outputs(result)
    return result


class _Builds:
    """Deletes a finished trial's build folder unless it is the best under the budget so far (or --keep-builds)."""

    def __init__(self, out: Path, budget: Budget, keep_all: bool, records: dict[str, dict]):
        self.out, self.budget, self.keep_all = out, budget, keep_all
        within = [r for r in records.values() if not budget.violations(r)]
        self.best = min(within, key=_rank) if within else None

    def finished(self, record: dict) -> None:
        if self.keep_all:
            return
        drop = record
        if not self.budget.violations(record) and (self.best is None or _rank(record) < _rank(self.best)):
            drop, self.best = self.best, record
        if drop is not None:
            shutil.rmtree(self.out / "builds" / Config.from_json(drop["config"]).slug, ignore_errors=True)


def _keep_best(result: SweepResult, model, options, repeat: int, keep_builds: bool) -> None:
    """Leave the best configuration's build in OUT/best (building it here if its folder is gone or elsewhere)."""
    out = result.out
    best_dir, builds = out / "best", out / "builds"
    marker = best_dir / "trial.json"
    if result.best is None:
        shutil.rmtree(best_dir, ignore_errors=True)
        if result.trials:
            result.notes.append("no configuration meets the budget; OUT/best/ is not written")
    else:
        config = Config.from_json(result.best["config"])
        have = json.loads(marker.read_text()).get("key") if marker.is_file() else None
        if have != config.key:
            src = builds / config.slug
            if not (src / "report.json").is_file():
                src.parent.mkdir(parents=True, exist_ok=True)
                rebuilt = run_trial(model, config, str(src), options, repeat)
                if rebuilt["status"] != "ok":
                    result.notes.append(f"could not rebuild the best configuration here: {rebuilt['error']}")
                    src = None
                else:
                    result.notes.append("the best configuration was built again here (its trial ran elsewhere "
                                        "or in an earlier run); OUT/best/report.json holds this build's figures")
            if src is not None:
                shutil.rmtree(best_dir, ignore_errors=True)
                if keep_builds:
                    shutil.copytree(src, best_dir)
                else:
                    shutil.move(str(src), str(best_dir))
                marker.write_text(json.dumps(result.best, indent=2) + "\n")
    if not keep_builds:
        shutil.rmtree(builds, ignore_errors=True)
    elif builds.is_dir():
        for partial in builds.glob(".*.partial"):  # left by trials stopped at the time limit
            shutil.rmtree(partial, ignore_errors=True)


def _write_outputs(result: SweepResult) -> None:
    from edgekit.report import render_sweep, write_json

    summary = result.to_json()
    tmp = result.out / ".sweep.json.partial"
    write_json(tmp, summary)
    os.replace(tmp, result.out / "sweep.json")
    tmp = result.out / ".sweep.html.partial"
    tmp.write_text(render_sweep(summary))
    os.replace(tmp, result.out / "sweep.html")


class _Display:
    """Progress while the sweep runs: a live table on a terminal (stderr), one line per finished trial otherwise."""

    def __init__(self, model: str, total: int, skipped: int, budget: Budget, enabled: bool):
        from rich.console import Console

        self.console = Console(stderr=True, highlight=False)
        self.model, self.total, self.skipped, self.budget = model, total, skipped, budget
        self.enabled = enabled
        self.live = None
        self.count = 0
        self.t0 = time.time()

    def __enter__(self):
        if self.enabled and self.console.is_terminal:
            from rich.live import Live

            self.live = Live(console=self.console, refresh_per_second=2, transient=True)
            self.live.__enter__()
        elif self.enabled:
            self.console.print(f"sweep {self.model}: {self.total} trials to run"
                               + (f", {self.skipped} already in results.jsonl" if self.skipped else ""))
        return self

    def __exit__(self, *exc):
        if self.live is not None:
            self.live.__exit__(*exc)

    def update(self, records: Iterable[dict], running: list[Config]) -> None:
        if self.live is None:
            return
        recent = list(records)[-25:]
        within = {r["key"] for r in recent if not self.budget.violations(r)}
        elapsed = time.time() - self.t0
        title = (f"sweep {self.model}: {self.count}/{self.total} trials done, {len(running)} running, "
                 f"{elapsed:.0f} s" + (f" ({self.skipped} from an earlier run)" if self.skipped else ""))
        self.live.update(trial_table(recent, self.budget, set(), within, None, title, running))

    def finished(self, record: dict) -> None:
        self.count += 1
        if self.live is None and self.enabled:
            from edgekit.report import fmt_metric

            m = record.get("metrics") or {}
            what = (f"accuracy {fmt_metric(m.get('accuracy'), 'accuracy')}, latency "
                    f"{fmt_metric(m.get('latency_ms'), 'latency_ms')} ms" if record["status"] == "ok"
                    else f"{record['status']}: {record['error']}")
            self.console.print(f"  [{self.count}/{self.total}] {record['key']}: {what} "
                               f"({record.get('seconds') or 0:.0f} s)", markup=False, soft_wrap=True)


__all__ = ["Budget", "Config", "SweepResult", "design_space", "metrics_from_report", "pareto_front",
           "parse_budget", "parse_size", "parse_time_ms", "run_trial", "summarize", "sweep"]


class _CallableModule(type(sys)):
    """``edgekit.sweep`` is both this module and the function: importing the module makes it the package attribute,
    so the module itself answers ``edgekit.sweep(model, targets, ...)``."""

    def __call__(self, *args, **kw) -> SweepResult:
        return sweep(*args, **kw)


sys.modules[__name__].__class__ = _CallableModule
