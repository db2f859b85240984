"""Run every benchmark in bench/ one after the other; each prints its table and writes bench/results/.

    .venv/bin/python bench/run_all.py            # all (about an hour on 2 cores)
    .venv/bin/python bench/run_all.py patch phone
"""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

BENCHES = ["kernels", "cortex_m", "patch", "sparse", "converters", "recurrent", "neuromorphic", "phone",
           "estimators", "estimate_time", "zoo", "sweep", "helium", "device", "budgets"]


def main(argv: list[str]) -> int:
    here = Path(__file__).resolve().parent
    names = argv or BENCHES
    failed = []
    for name in names:
        script = here / f"{name}.py"
        if not script.exists():
            print(f"== {name}: no such benchmark", flush=True)
            failed.append(name)
            continue
        print(f"== {name}", flush=True)
        t = time.time()
        rc = subprocess.call([sys.executable, str(script)])
        print(f"== {name}: exit {rc} after {time.time() - t:.0f} s", flush=True)
        if rc:
            failed.append(name)
    if failed:
        print("failed: " + ", ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
