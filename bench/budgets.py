"""Nested operating points (edgekit.converters.nest, issue 18): accuracy of each width against the same width trained
alone.

For every example: ``nest`` with budgets 0.25, 0.5, 0.75, 1.0 for a stated number of epochs, then ``train_separately``
at each budget for the same epochs and learning rate (initialised, like the nested point, from the importance-sorted
slice of the BatchNorm-folded pretrained network; fine-tuned with cross-entropy alone). Prints one table — model,
budget, channels, params, MACs, nested accuracy, separately trained accuracy, difference in points — and writes it to
bench/results/budgets.md.

    .venv/bin/python bench/budgets.py                        # digits-cnn, kws-dscnn, digits-gru (~13 min, one core)
    .venv/bin/python bench/budgets.py --models digits-cnn --epochs 10

Accuracy is on the held-out split: 360 digits (one digit = 0.28 points) or 1,120 keyword clips (0.09 points). The
firmware columns (instructions, SRAM, flash of one nested image against separate images) come later: build rows with
:func:`accuracy_rows` and add columns to them.
"""
from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from edgekit.converters.finetune import TrainSettings
from edgekit.converters.nested import nest, train_separately
from edgekit.model import Model

RESULTS = Path(__file__).parent / "results" / "budgets.md"
BUDGETS = (0.25, 0.5, 0.75, 1.0)
MODELS = ("digits-cnn", "kws-dscnn", "digits-gru")


@dataclass(frozen=True)
class Budget:
    """The fine-tuning one example gets, nested and separately alike."""

    epochs: int
    lr: float


# Epochs per example: what fits the ~15 minute budget on one core (kws-dscnn: 6,160 clips, ~21 s per epoch nested
# and ~25 s for the four networks trained alone). Learning rates: the better of 3e-3 and 1e-2 for the nested run
# (digits-cnn's narrow points need 1e-2; 1e-2 costs the GRU's full width 4 points); the baselines get the same.
SETTINGS = {"digits-cnn": Budget(30, 1e-2), "kws-dscnn": Budget(12, 3e-3), "digits-gru": Budget(20, 3e-3)}
DEFAULT = Budget(10, 3e-3)


def accuracy_rows(name: str, budgets=BUDGETS, epochs: int | None = None, lr: float | None = None,
                  console: Console | None = None) -> list[dict]:
    """One row per budget: the nested operating point and the separately trained network of the same widths."""
    base = Model.load(name)
    budget = SETTINGS.get(name, DEFAULT)
    settings = TrainSettings(epochs=budget.epochs if epochs is None else epochs, lr=budget.lr if lr is None else lr)
    t = time.time()
    nested = nest(base, budgets, settings=settings, progress=False)
    nest_s = time.time() - t
    facts = nested.meta["nested"]
    full_channels = sum(g["channels"] for g in facts["groups"].values())
    rows = []
    for point in facts["operating_points"]:
        t = time.time()
        alone = train_separately(base, point["budget"], settings, progress=False)
        rows.append({"model": name, "budget": point["budget"], "channels": sum(point["widths"].values()),
                     "full_channels": full_channels, "params": point["params"], "macs": point["macs"],
                     "nested_accuracy": point["float_accuracy"], "separate_accuracy": alone.accuracy(),
                     "epochs": settings.epochs, "lr": settings.lr, "nest_s": nest_s, "separate_s": time.time() - t,
                     "method": facts["method"]})
        if console is not None:
            r = rows[-1]
            console.print(f"  {name} @ {r['budget']:g}: nested {r['nested_accuracy']:.2%}, alone "
                          f"{r['separate_accuracy']:.2%} ({r['separate_s']:.0f} s; nest took {nest_s:.0f} s)")
    return rows


def difference(row: dict) -> float | None:
    """Nested minus separately trained accuracy, in points."""
    if row["nested_accuracy"] is None or row["separate_accuracy"] is None:
        return None
    return 100.0 * (row["nested_accuracy"] - row["separate_accuracy"])


COLUMNS = ("model", "budget", "channels", "params", "MACs", "nested", "alone", "Δ points")


def cells(row: dict) -> list[str]:
    d = difference(row)
    pct = lambda v: "–" if v is None else f"{100 * v:.2f} %"  # noqa: E731
    return [row["model"], f"{row['budget']:g}", f"{row['channels']} / {row['full_channels']}", f"{row['params']:,}",
            f"{row['macs']:,}", pct(row["nested_accuracy"]), pct(row["separate_accuracy"]),
            "–" if d is None else f"{d:+.2f}"]


def markdown(rows: list[dict]) -> str:
    lines = ["# Nested operating points against separately trained networks", "",
             "`bench/budgets.py`: `edgekit.converters.nest` (budgets "
             f"{', '.join(f'{b:g}' for b in BUDGETS)}) against `train_separately` at each budget, same epochs and "
             "learning rate. Accuracy on the held-out split; Δ = nested − alone, in points (goal: ≥ −1).", ""]
    for name in dict.fromkeys(r["model"] for r in rows):
        r = next(r for r in rows if r["model"] == name)
        lines.append(f"- {name}: {r['epochs']} epochs, lr {r['lr']:g}; nest {r['nest_s']:.0f} s")
    lines += ["", f"Method: {rows[0]['method']}." if rows else "", "",
              "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(cells(r)) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated example names")
    parser.add_argument("--epochs", type=int, default=None, help="epochs for every model (default: per model)")
    parser.add_argument("--lr", type=float, default=None, help="learning rate for every model (default: per model)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where to write the markdown table")
    args = parser.parse_args(argv)
    console = Console(highlight=False, width=140)
    rows = []
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        rows += accuracy_rows(name, BUDGETS, args.epochs, args.lr, console)
    table = Table(title="nested operating points vs. the same widths trained alone")
    for col in COLUMNS:
        table.add_column(col, justify="left" if col == "model" else "right")
    for r in rows:
        table.add_row(*cells(r))
    console.print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(markdown(rows))
    console.print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
