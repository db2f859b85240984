"""report.json (the stable contract, documented in docs/report.md) and report.html (the page a person reads).

Where it sits: the end of the flow. ``edgekit compile`` writes both from the analysis and the estimate; ``edgekit
profile`` adds ``measured`` and ``errors`` and renders again; ``edgekit report OUT`` only renders.
"""
from __future__ import annotations

import html
import io
import json
from pathlib import Path
from typing import Any

import jinja2

from edgekit import __version__

REPORT_VERSION = 1
REQUIRED_KEYS = ("report_version", "target", "target_kind", "target_profile", "options", "dtype", "model", "estimate",
                 "fits", "fit_reasons", "build")
TEMPLATES = Path(__file__).parent / "templates"

# Figures compared between estimate and measurement: report key -> (estimate key, measured key).
COMPARED = {
    "flash_bytes": ("flash_bytes", "flash_bytes"),
    "peak_sram_bytes": ("peak_sram_bytes", "sram_bytes"),
    "arena_bytes": ("arena_bytes", "arena_bytes"),
    "instructions": ("instructions", "instructions"),
    "latency_ms": ("latency_ms", "latency_ms"),
    "energy_uj": ("energy_uj", "energy_uj"),   # measured where a run counts the events (Lava's spikes)
}
# Compared only where the build has them: recurrent models' step programs (targets/mcu/streaming.py).
COMPARED_RECURRENT = {
    "instructions_per_step": ("instructions_per_step", "instructions_per_step"),
    "state_bytes": ("state_bytes", "state_bytes"),
}


def relative_errors(estimate: dict, measured: dict) -> dict[str, float]:
    """(estimate − measured) / measured for every figure both sides have."""
    out = {}
    for name, (ek, mk) in {**COMPARED, **COMPARED_RECURRENT}.items():
        e, m = estimate.get(ek), measured.get(mk)
        if isinstance(e, (int, float)) and isinstance(m, (int, float)) and m:
            out[name] = (float(e) - float(m)) / float(m)
    return out


def read_report(out: Path) -> dict:
    from edgekit.errors import UsageError

    path = Path(out) / "report.json"
    if not path.is_file():
        raise UsageError(f"{out}: no report.json here; give a folder written by edgekit compile")
    try:
        report = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise UsageError(f"{path}: not valid JSON ({e.msg} at line {e.lineno}); compile again") from e
    except (UnicodeDecodeError, OSError) as e:
        raise UsageError(f"{path}: cannot be read ({type(e).__name__}); compile again") from e
    # The fields every command reads (docs/report.md); a hand-edited or foreign file stops here, not deep inside.
    objects = ("target_profile", "options", "model", "estimate", "build")
    missing = [k for k in REQUIRED_KEYS if not isinstance(report, dict) or k not in report]
    wrong = [] if missing else [k for k in objects if not isinstance(report[k], dict)] + \
        [k for k in ("target", "target_kind", "dtype") if not isinstance(report[k], str)]
    if missing or wrong or report.get("report_version") != REPORT_VERSION:
        what = (f"lacks {', '.join(missing)}" if missing else f"has a wrong type for {', '.join(wrong)}" if wrong
                else f"has report_version {report.get('report_version')!r}, not {REPORT_VERSION}")
        raise UsageError(f"{path}: not an edgekit {REPORT_VERSION} report (it {what}); compile again")
    return report


def write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=False, default=_jsonable) + "\n")


def _jsonable(o):
    import numpy as np

    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


# ---- charts: matplotlib to inline SVG (the page stays one self-contained file) ------------------------------------


def _svg(fig) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})  # reproducible
    text = buf.getvalue()
    return text[text.index("<svg"):]


def _charts(report: dict) -> dict[str, str]:
    import matplotlib
    from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global state

    def subplots(figsize):
        fig = Figure(figsize=figsize)
        return fig, fig.add_subplot()

    matplotlib.rcParams["svg.hashsalt"] = "edgekit"  # reproducible SVG ids
    matplotlib.rcParams["svg.fonttype"] = "none"
    charts = {}
    layers = report["model"]["layers"]
    if layers:
        names = [lay["name"] for lay in layers]
        x = range(len(names))
        fig, ax1 = subplots(figsize=(max(6, len(names) * 0.28), 3.2))
        ax1.bar(x, [lay["macs"] for lay in layers], color="#4c78a8", label="MACs")
        ax1.set_ylabel("MACs")
        ax2 = ax1.twinx()
        ax2.plot(x, [lay["activation_bytes"] for lay in layers], color="#f58518", marker="o", ms=3,
                 label="activation bytes")
        ax2.set_ylabel("output activation bytes")
        ax1.set_xticks(list(x))
        ax1.set_xticklabels(names, rotation=70, ha="right", fontsize=7)
        fig.legend(loc="upper right", fontsize=8)
        ax1.set_title("Work and memory per layer")
        charts["layers"] = _svg(fig)
    est = report.get("estimate", {})
    timeline = est.get("memory_timeline") or []
    schedule = report.get("schedule") or {}
    sram = report.get("target_profile", {}).get("sram_bytes", 0)
    budget = schedule.get("sram_budget_bytes") or sram
    if timeline:
        # Layer by layer and as scheduled have different steps (a patch stage runs every layer once per tile): each
        # gets its own panel and x axis, with the arena each plans.
        unpatched = schedule.get("unpatched_timeline")
        panels = [("layer by layer", unpatched, "#999"), ("as scheduled", timeline, "#54a24b")] if unpatched \
            else [("live activations, layer by layer", timeline, "#54a24b")]
        top = max(max(v) for _, v, _ in panels) / 1024 * 1.25 + 1
        fig = Figure(figsize=(max(6, min(16, sum(len(v) for _, v, _ in panels) * 0.12)), 3.0))
        for i, (title, values, color) in enumerate(panels):
            ax = fig.add_subplot(1, len(panels), i + 1)
            ax.step(range(len(values)), [v / 1024 for v in values], where="mid", color=color)
            ax.fill_between(range(len(values)), [v / 1024 for v in values], step="mid", color=color, alpha=0.25)
            if budget and budget / 1024 < top * 1.5:  # a budget far above would squash the curve
                ax.axhline(budget / 1024, color="#e45756", lw=1, ls="--", label="SRAM budget")
                ax.legend(fontsize=8, loc="upper right")
            ax.set_ylim(0, top)
            ax.set_ylabel("KiB live")
            ax.set_xlabel("execution step")
            ax.set_title(f"{title}: arena peak {max(values) / 1024:,.1f} KiB", fontsize=9)
        fig.tight_layout()
        charts["memory"] = _svg(fig)
    considered = schedule.get("considered") or []
    if len(considered) > 1:
        fig, ax = subplots(figsize=(6, 3.0))
        chosen = (report.get("estimate") or {}).get("instructions")
        for c in considered:
            ax.scatter([c["peak_sram_bytes"] / 1024], [c["instructions"] / 1e6], s=60 if c["fits"] else 30,
                       color="#54a24b" if c["fits"] else "#999", edgecolors="#f58518" if c["instructions"] == chosen
                       else "none", linewidths=2, zorder=3)
            ax.annotate(c["schedule"].split(",")[0], (c["peak_sram_bytes"] / 1024, c["instructions"] / 1e6),
                        fontsize=7, xytext=(4, 4), textcoords="offset points")
        if budget:
            ax.axvline(budget / 1024, color="#e45756", lw=1, ls="--", label="SRAM budget")
            ax.legend(fontsize=8)
        ax.set_xlabel("peak SRAM (KiB)")
        ax.set_ylabel("instructions (M, estimated)")
        ax.set_title("Schedules considered (chosen: orange ring)", fontsize=9)
        ax.grid(alpha=0.3)
        charts["schedules"] = _svg(fig)
    measured_layers = [row for row in (report.get("measured") or {}).get("layers") or []
                       if row.get("instructions") is not None and row.get("macs") is not None]
    if measured_layers:
        # Hot spots: each layer's share of the measured instructions next to its share of the MACs.
        total_i = sum(row["instructions"] for row in measured_layers) or 1
        total_m = sum(row["macs"] for row in measured_layers) or 1
        names = [row["name"] for row in measured_layers]
        x = list(range(len(names)))
        fig, ax = subplots(figsize=(max(6, len(names) * 0.28), 3.2))
        ax.bar([i - 0.2 for i in x], [100 * row["instructions"] / total_i for row in measured_layers], width=0.4,
               color="#e45756", label="% of instructions (measured)")
        ax.bar([i + 0.2 for i in x], [100 * row["macs"] / total_m for row in measured_layers], width=0.4,
               color="#4c78a8", label="% of MACs")
        ax.set_xticks(x)
        ax.set_xticklabels(names, rotation=70, ha="right", fontsize=7)
        ax.set_ylabel("% of the model")
        ax.legend(fontsize=8)
        ax.set_title("Instructions and MACs per layer")
        charts["hotspots"] = _svg(fig)
    points = (report.get("build") or {}).get("operating_points") if isinstance(report.get("build"), dict) else None
    if points:
        # A nested image: accuracy against instructions and SRAM, one marker per operating point.
        measured_points = (report.get("measured") or {}).get("operating_points") or []
        fig = Figure(figsize=(9, 3.0))
        ax1, ax2 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
        for k, p in enumerate(points):
            m = measured_points[k] if k < len(measured_points) else {}
            instr = m.get("instructions") or p["estimate"].get("instructions") or 0
            acc = m.get("accuracy", p.get("reference_accuracy"))
            acc = 100 * acc if acc is not None else None
            for ax, x in ((ax1, instr / 1e6), (ax2, (p["estimate"].get("peak_sram_bytes") or 0) / 1024)):
                if acc is not None:
                    ax.scatter([x], [acc], s=50, color="#4c78a8", zorder=3)
                    ax.annotate(f"{p['budget']:g}", (x, acc), fontsize=8, xytext=(4, 4), textcoords="offset points")
        ax1.set_xlabel("instructions per inference (M" + (", measured)" if measured_points else ", estimated)"))
        ax2.set_xlabel("peak SRAM (KiB, estimated)")
        for ax in (ax1, ax2):
            ax.set_ylabel("accuracy (%)")
            ax.grid(alpha=0.3)
        ax1.set_title("Operating points: accuracy vs instructions", fontsize=9)
        ax2.set_title("accuracy vs SRAM (labels: width)", fontsize=9)
        fig.tight_layout()
        charts["points"] = _svg(fig)
    energy = report.get("energy_breakdown") or {}
    if energy:
        fig, ax = subplots(figsize=(6, 2.6))
        keys = list(energy)
        ax.barh(keys, [energy[k] for k in keys], color="#b279a2")
        ax.set_xlabel("µJ per inference")
        ax.set_title("Energy")
        charts["energy"] = _svg(fig)
    return charts


def _fmt_bytes(n) -> str:
    if n is None:
        return "–"
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
    return str(n)


def _fmt_num(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return f"{v:,.4g}"
    return html.escape(str(v))


def render_html(report: dict) -> str:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), autoescape=True,
                             undefined=jinja2.StrictUndefined)
    env.filters["bytes"] = _fmt_bytes
    env.filters["num"] = _fmt_num
    rows = []
    est, meas, errs = report.get("estimate", {}), report.get("measured") or {}, report.get("errors") or {}
    recurrent = {k: v for k, v in COMPARED_RECURRENT.items() if meas.get(v[1]) is not None}
    for name, (ek, mk) in {**COMPARED, **recurrent}.items():
        if ek in est or mk in meas:
            rows.append({"name": name, "estimate": est.get(ek), "measured": meas.get(mk), "error": errs.get(name),
                         "is_bytes": name.endswith("bytes")})
    return env.get_template("report.html.j2").render(r=report, charts=_charts(report), compare=rows)


def write_report(out: Path, report: dict) -> None:
    """Write report.json and report.html into ``out`` (a folder that already exists)."""
    out = Path(out)
    write_json(out / "report.json", report)
    (out / "report.html").write_text(render_html(report))


def base_report(model, profile, analysis, estimate, fits: bool, reasons: list[str], options: dict[str, Any],
                dtype: str) -> dict:
    return {
        "report_version": REPORT_VERSION,
        "edgekit_version": __version__,
        "target": profile.name,
        "target_kind": profile.backend,
        "target_profile": profile.summary(),
        "profile_sources": profile.sources(),
        "options": options,
        "dtype": dtype,
        "model": {"name": model.name, "source": model.meta.get("source", "module"),
                  "task": model.meta.get("task"), "params": analysis.params, "macs": analysis.macs,
                  "input_shapes": [list(s) for s in model.input_shapes], "layers": [r.to_json() for r in analysis.layers]},
        "estimate": estimate.to_json(),
        "fits": fits,
        "fit_reasons": reasons,
        "schedule": None,
        "patch": None,
        "files": [],
        "build": {},
        "notes": [],
        "measured": None,
        "errors": None,
    }


# ---- comparing several builds -------------------------------------------------------------------------------------

# (label, getter, format, lower is better?)
COMPARE_FIGURES = [
    ("target", lambda r: r["target"], str, None),
    ("dtype", lambda r: r["dtype"], str, None),
    ("accuracy", lambda r: (r.get("measured") or {}).get("accuracy"), lambda v: f"{v:.2%}", False),
    ("flash / storage", lambda r: _pick(r, "flash_bytes", "flash_bytes"), _fmt_bytes, True),
    ("peak SRAM", lambda r: _pick(r, "sram_bytes", "peak_sram_bytes"), _fmt_bytes, True),
    ("latency (ms)", lambda r: _pick(r, "latency_ms", "latency_ms"), lambda v: f"{v:.4g}", True),
    ("energy (µJ, est.)", lambda r: r["estimate"].get("energy_uj"), lambda v: f"{v:.4g}", True),
    ("instructions", lambda r: (r.get("measured") or {}).get("instructions"), lambda v: f"{int(v):,}", True),
    ("device cycles", lambda r: _device(r, "cycles"), lambda v: f"{int(v):,}", True),
    ("device latency (ms)", lambda r: _device(r, "latency_ms"), lambda v: f"{v:.4g}", True),
    ("device", lambda r: _device(r, "where"), str, None),
    ("MACs", lambda r: r["model"]["macs"], lambda v: f"{int(v):,}", None),
    ("params", lambda r: r["model"]["params"], lambda v: f"{int(v):,}", None),
    ("fits", lambda r: r["fits"], lambda v: "yes" if v else "no", None),
]


def _device(report: dict, key: str):
    """A figure measured on a board (profile --device): the first board with it, by board name."""
    devices = (report.get("measured") or {}).get("devices") or {}
    return next((d[key] for _, d in sorted(devices.items()) if d.get(key) is not None), None)


def _pick(report: dict, measured_key: str, estimate_key: str):
    m = report.get("measured") or {}
    return m.get(measured_key) if m.get(measured_key) is not None else report["estimate"].get(estimate_key)


def compare_entries(outs: list[Path]) -> list[tuple[str, dict]]:
    """(label, report) per build to compare; a build measured on several boards (profile --device) gives one entry
    per board, so that boards stand side by side."""
    entries = []
    for out in outs:
        rep = read_report(Path(out))
        label = f"{rep['model']['name']}@{Path(out).name}"
        devices = (rep.get("measured") or {}).get("devices") or {}
        if len(devices) <= 1:
            entries.append((label + (f":{next(iter(devices))}" if devices else ""), rep))
            continue
        for board, found in sorted(devices.items()):
            one = {**rep, "measured": {**rep["measured"], "devices": {board: found}}}
            entries.append((f"{label}:{board}", one))
    return entries


def compare_rows(reports: list[tuple[str, dict]]) -> list[dict]:
    """One entry per figure: its values across builds, the best marked where lower/higher is better."""
    out = []
    for name, get, fmt, lower in COMPARE_FIGURES:
        vals = [get(r) for _, r in reports]
        nums = [v for v in vals if isinstance(v, (int, float)) and not isinstance(v, bool)]
        best = None
        if lower is not None and len(nums) > 1:
            best = min(nums) if lower else max(nums)
        out.append({"name": name, "values": [
            {"raw": v, "text": "–" if v is None else fmt(v), "best": best is not None and v == best} for v in vals]})
    return out


def render_compare(reports: list[tuple[str, dict]]) -> str:
    import matplotlib
    from matplotlib.figure import Figure

    matplotlib.rcParams["svg.hashsalt"] = "edgekit"
    matplotlib.rcParams["svg.fonttype"] = "none"
    labels = [label for label, _ in reports]
    fig = Figure(figsize=(max(6, len(reports) * 1.6), 3.0))
    ax1, ax2 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    ax1.bar(labels, [(_pick(r, "sram_bytes", "peak_sram_bytes") or 0) / 1024 for _, r in reports], color="#54a24b")
    ax1.set_title("peak SRAM (KiB)")
    ax2.bar(labels, [_pick(r, "latency_ms", "latency_ms") or 0 for _, r in reports], color="#4c78a8")
    ax2.set_title("latency (ms)")
    for ax in (ax1, ax2):
        ax.tick_params(axis="x", labelrotation=30, labelsize=7)
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), autoescape=True)
    return env.get_template("compare.html.j2").render(
        rows=[{"label": label} for label in labels], figures=compare_rows(reports), chart=_svg(fig))


# ---- a design-space sweep (edgekit sweep) -------------------------------------------------------------------------

_TARGET_MARKERS = "osD^vP*X"
_FRONT_AXES = {"sram": ("peak_sram_bytes", "peak SRAM (KiB)", 1 / 1024, "sram_bytes"),
               "latency": ("latency_ms", "latency (ms)", 1.0, "latency_ms"),
               "energy": ("energy_uj", "energy per inference (µJ)", 1.0, "energy_uj")}


def _sweep_charts(summary: dict) -> str:
    """Accuracy against SRAM, latency and energy: every trial, the 2-D Pareto front as a line, the trials meeting
    the budget filled green, the budget's limit as a dashed line, the best configuration as a star."""
    import matplotlib
    from matplotlib.figure import Figure

    matplotlib.rcParams["svg.hashsalt"] = "edgekit"
    matplotlib.rcParams["svg.fonttype"] = "none"
    ok = [t for t in summary["trials"] if t["status"] == "ok" and t["metrics"].get("accuracy") is not None]
    if not ok:
        return ""
    within = set(summary["within_budget"])
    best = (summary.get("best") or {}).get("key")
    targets = list(dict.fromkeys(t["config"]["target"] for t in ok))
    fig = Figure(figsize=(13, 3.8))
    for i, (name, (metric, label, scale, budget_key)) in enumerate(_FRONT_AXES.items()):
        ax = fig.add_subplot(1, 3, i + 1)
        pts = [t for t in ok if t["metrics"].get(metric) is not None]
        for j, target in enumerate(targets):
            for meets in (False, True):
                sel = [t for t in pts if t["config"]["target"] == target and (t["key"] in within) == meets]
                if sel:
                    ax.scatter([t["metrics"][metric] * scale for t in sel], [t["metrics"]["accuracy"] for t in sel],
                               marker=_TARGET_MARKERS[j % len(_TARGET_MARKERS)], s=42, zorder=3,
                               facecolors="#54a24b" if meets else "none", edgecolors="#2a7d3b" if meets else "#888",
                               label=f"{target}{' (meets budget)' if meets else ''}")
        front = sorted((t for t in pts if t["key"] in set(summary["fronts"][name])),
                       key=lambda t: t["metrics"][metric])
        if front:
            ax.step([t["metrics"][metric] * scale for t in front], [t["metrics"]["accuracy"] for t in front],
                    where="post", color="#4c78a8", lw=1.2, zorder=2, label="Pareto front")
        for t in pts:
            if t["key"] == best:
                ax.scatter([t["metrics"][metric] * scale], [t["metrics"]["accuracy"]], marker="*", s=220,
                           color="#f58518", zorder=4, label="best under budget")
        values = [t["metrics"][metric] * scale for t in pts if t["metrics"][metric] > 0]
        limit = summary["budget"].get(budget_key)
        title = f"accuracy vs {name}"
        if limit is not None and values and limit * scale > 3 * max(values):
            title += f" (limit {limit * scale:,.4g} →)"  # far right of every point: a line would squash them
        elif limit is not None:
            ax.axvline(limit * scale, color="#e45756", ls="--", lw=1, label="budget")
        if values and max(values) / min(values) > 20:
            ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel("accuracy")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    handles = {}
    for ax in fig.axes:  # one legend under the three charts, each label once
        for h, lab in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(lab, h)
    fig.legend(handles.values(), handles.keys(), loc="lower center", ncol=min(6, len(handles)), fontsize=8,
               frameon=False, bbox_to_anchor=(0.5, -0.06))
    fig.tight_layout()
    return _svg(fig)


SOURCE_MARKS = {"estimate": "*", "derived": "†"}  # how a sweep's tables mark figures that were not measured


def fmt_metric(value, key: str, source: str | None = None) -> str:
    """A trial's figure as the sweep tables show it, marked * (estimate) or † (derived) when not measured."""
    if value is None:
        return "–"
    if key == "accuracy":
        text = f"{value:.2%}"
    elif key.endswith("_bytes"):
        text = _fmt_bytes(value)
    elif key == "instructions":
        text = f"{int(value):,}"
    else:
        text = f"{value:.4g}"
    return text + SOURCE_MARKS.get(source or "", "")


def fmt_budget(budget: dict) -> str:
    """``{"sram_bytes": 262144, "latency_ms": 50}`` -> ``sram ≤ 256.0 KiB, latency ≤ 50 ms``."""
    parts = []
    for k, v in budget.items():
        parts.append(f"{k[:-6]} ≤ {_fmt_bytes(v)}" if k.endswith("_bytes") else
                     f"latency ≤ {v:g} ms" if k == "latency_ms" else f"energy ≤ {v:g} µJ")
    return ", ".join(parts) or "none"


def render_sweep(summary: dict) -> str:
    """sweep.html from sweep.json: the fronts (inline SVG, one self-contained file) and every trial."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), autoescape=True,
                             undefined=jinja2.StrictUndefined)
    best = (summary.get("best") or {}).get("key")
    rows = []
    for t in summary["trials"]:
        metrics, sources = t.get("metrics") or {}, t.get("sources") or {}
        rows.append({"t": t, "cells": [fmt_metric(metrics.get(k), k, sources.get(k)) for k in summary["metrics"]],
                     "meets": t["key"] in summary["within_budget"], "pareto": t["key"] in summary["pareto"],
                     "best": t["key"] == best, "why": "; ".join(summary["budget_violations"].get(t["key"], []))})
    return env.get_template("sweep.html.j2").render(s=summary, rows=rows, chart=_sweep_charts(summary),
                                                    budget=fmt_budget(summary["budget"]), version=__version__)
