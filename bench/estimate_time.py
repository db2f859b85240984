"""How long `edgekit estimate` takes from the command line (issue 14: mbv2-w035 on cortex-m7, int8, in <= 1 s).

    .venv/bin/python bench/estimate_time.py        # prints the table, writes bench/results/estimate_time.md

Each row runs the real CLI in a fresh process (Python start, imports, plan, print) with a private cache folder:
once cold (the first estimate of a model imports torch, builds the example and traces it, then caches the layer
graph) and then warm, five times (median and max). Wall-clock on this machine (2 cores, shared).
"""
from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

CASES = [("mbv2-w035", "cortex-m7", "int8"), ("mbv2-w035", "cortex-m7", None), ("digits-cnn", "cortex-m7", "int8"),
         ("digits-gru", "cortex-m7", "int8"), ("digits-cnn", "phone-arm64", "int8")]
EDGEKIT = Path(sys.executable).with_name("edgekit")


def _run(model, target, quantize, env) -> float:
    cmd = [str(EDGEKIT), "estimate", model, "-t", target] + (["--quantize", quantize] if quantize else [])
    t = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t


def main() -> int:
    table = Table(title="edgekit estimate, wall-clock from the command line (s)")
    for col in ("model", "target", "dtype", "cold (first run)", "warm median", "warm max"):
        table.add_column(col, justify="left" if col in ("model", "target", "dtype") else "right")
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "XDG_CACHE_HOME": cache}
        for model, target, quantize in CASES:
            cold = _run(model, target, quantize, env)
            warm = [_run(model, target, quantize, env) for _ in range(5)]
            table.add_row(model, target, quantize or "float32", f"{cold:.2f}", f"{statistics.median(warm):.2f}",
                          f"{max(warm):.2f}")
    console = Console(record=True, width=120)
    console.print(table)
    out = Path(__file__).parent / "results" / "estimate_time.md"
    out.write_text("```\n" + console.export_text() + "```\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
