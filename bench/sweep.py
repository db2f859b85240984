"""Design-space sweep benchmark: digits-cnn over 12 configurations on cortex-m7 and phone-arm64, on Ray.

    .venv/bin/python bench/sweep.py [--work DIR] [--repeat 20] [--rounds 2]

The grid: prune {0, 0.5} x quantize {none, int8} x patch {auto, off} on cortex-m7 (8 trials) and prune x quantize on
phone-arm64 (4 trials; patching is Cortex-M only), budget sram=256KB, flash=1MB, latency=5ms. It runs

1. on a local Ray started by the sweep (2 workers);
2. on a Ray cluster started separately on this machine (``ray start --head --block`` on 127.0.0.1, 2 CPUs), joined
   with ``address=`` — the same figures per configuration are expected (the phone's latency is a wall-clock timing
   on this host and is compared with a tolerance, everything else exactly);
3. again on the folder of run 1: the resume check, 0 trials;
4. for the wall time with 1 and 2 workers: on one local Ray started beforehand (no run pays for starting it),
   ``--rounds`` rounds of (1 worker, 2 workers) in alternating order; the medians are compared. Other work on the
   machine slows every run alike only roughly, so the table shows the load average after each run.

Ray listens on the loopback interface only (edgekit/sweep.py; the cluster is started with the same setting). The
cluster is stopped by terminating its ``ray start --block`` process, which stops the processes it started — not with
``ray stop``, which stops every Ray on the machine. Prints the tables and writes them to bench/results/sweep.md.
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from edgekit.report import fmt_budget
from edgekit.sweep import import_ray, sweep

RESULTS = Path(__file__).parent / "results" / "sweep.md"
GRID = dict(model="digits-cnn", targets=["cortex-m7", "phone-arm64"], prune=[0, 0.5], quantize=["none", "int8"],
            patch=["auto", "off"], budget="sram=256KB,flash=1MB,latency=5ms")
TIMED_LATENCY_TOLERANCE = 0.5   # the phone's latency is timed on a shared 2-core host: allow ±50 % between runs
console = Console(width=170)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalCluster:
    """``ray start --head`` on 127.0.0.1 in its own session; stopped by terminating that process (and its group)."""

    def __init__(self, cpus: int = 2):
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",
                   RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="0")
        ray_cli = Path(sys.executable).with_name("ray")
        self.log = tempfile.NamedTemporaryFile("w+", prefix="ray-head-", suffix=".log", delete=False)
        self.proc = subprocess.Popen(
            [str(ray_cli), "start", "--head", "--node-ip-address=127.0.0.1", f"--port={self.port}",
             f"--num-cpus={cpus}", "--include-dashboard=false", "--disable-usage-stats", "--block"],
            env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        self._wait_ready()

    def _wait_ready(self, timeout_s: float = 120.0) -> None:
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ray start exited with {self.proc.returncode}; see {self.log.name}")
            if "Ray runtime started" in Path(self.log.name).read_text():
                return
            time.sleep(0.5)
        raise RuntimeError(f"the Ray head did not start within {timeout_s:.0f} s; see {self.log.name}")

    def listening(self) -> list[str]:
        """Addresses the cluster's processes listen on (from ss), to show they are all loopback."""
        out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True).stdout
        pids = set(subprocess.run(["pgrep", "-g", str(self.proc.pid)], capture_output=True,
                                  text=True).stdout.split())
        return sorted({line.split()[3].rsplit(":", 1)[0] for line in out.splitlines()
                       if any(f"pid={p}," in line for p in pids)})

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()  # ray start --block stops the processes it started on SIGTERM
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # anything of this cluster's session still running
        except ProcessLookupError:
            pass
        self.proc.wait()
        os.unlink(self.log.name)
        # `ray start` recorded this cluster as the machine's current one; a later ray.init() would look for it.
        current = Path(tempfile.gettempdir()) / "ray" / "ray_current_cluster"
        if current.is_file() and current.read_text().strip() == self.address:
            current.unlink()


def run(label: str, out: Path, **kw) -> dict:
    t0 = time.time()
    result = sweep(out=out, **GRID, **kw)
    wall = time.time() - t0
    load = os.getloadavg()[0]
    console.print(f"{label}: {result.ran} trials in {wall:.1f} s on {result.workers or '-'} workers")
    # Every run but the resume check starts from an empty folder, so all its trials ran in this call.
    return {"label": label, "result": result, "wall_s": wall, "load": load,
            "trial_s": sum(t.get("seconds") or 0 for t in result.trials) if result.ran else 0.0}


def compare(a, b) -> tuple[int, list[str], float]:
    """Configurations with identical figures, differences found, the largest relative gap in timed phone latency."""
    other = {t["key"]: t for t in b.trials}
    same, diffs, worst_timed = 0, [], 0.0
    for t in a.trials:
        u = other.get(t["key"])
        if u is None:
            diffs.append(f"{t['key']}: missing in the second run")
            continue
        ok = t["status"] == u["status"]
        for k, v in t["metrics"].items():
            w = u["metrics"].get(k)
            if k == "latency_ms" and t["config"]["target"] == "phone-arm64" and v and w:
                gap = abs(v - w) / max(v, w)
                worst_timed = max(worst_timed, gap)
                ok = ok and gap <= TIMED_LATENCY_TOLERANCE
            elif v != w:
                ok = False
                diffs.append(f"{t['key']}: {k} {v} vs {w}")
        same += ok
    return same, diffs, worst_timed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=None, help="Where the sweeps write (default: a temporary folder).")
    ap.add_argument("--repeat", type=int, default=20, help="Phone: timed runs per configuration.")
    ap.add_argument("--rounds", type=int, default=2, help="Timing: rounds of (1 worker, 2 workers), order alternating.")
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="edgekit-bench-sweep-"))
    common = dict(repeat=args.repeat, resume=False)

    runs = [run("local Ray started by the sweep, 2 workers", work / "local", workers=2, **common)]
    cluster = LocalCluster(cpus=2)
    try:
        listening = cluster.listening()
        runs.append(run(f"Ray cluster at {cluster.address}", work / "cluster", address=cluster.address, **common))
    finally:
        cluster.stop()
    runs.append(run("resume (same folder as the first run)", work / "local", workers=2, repeat=args.repeat))
    # Timing: one local Ray for all rounds (so no run pays for starting it), 1 and 2 workers in alternating order
    # to share out the load of whatever else runs on the machine.
    ray = import_ray()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        timing = {1: [], 2: []}
        for r in range(args.rounds):
            for w in ((1, 2) if r % 2 == 0 else (2, 1)):
                timing[w].append(run(f"timing round {r + 1}, {w} worker{'s' if w > 1 else ''}",
                                     work / f"timing-{r}-{w}", workers=w, **common))
    finally:
        ray.shutdown()
    runs += [x for r in range(args.rounds) for x in (timing[1][r], timing[2][r])]

    local, clustered, resumed = (r["result"] for r in runs[:3])
    console.print(local.table(f"digits-cnn: {len(local.trials)} configurations, "
                              f"budget {fmt_budget(local.budget.to_json())}"))
    same, diffs, worst_timed = compare(local, clustered)
    t = Table(title="runs")
    for col in ("run", "trials run", "skipped", "workers", "wall s", "Σ trial s", "load avg"):
        t.add_column(col, justify="left" if col == "run" else "right")
    for r in runs:
        res = r["result"]
        t.add_row(r["label"], str(res.ran), str(res.skipped), str(res.workers or "-"), f"{r['wall_s']:.1f}",
                  f"{r['trial_s']:.0f}", f"{r['load']:.1f}")
    console.print(t)
    one = statistics.median(x["wall_s"] for x in timing[1])
    two = statistics.median(x["wall_s"] for x in timing[2])
    facts = [
        f"local vs cluster: {same}/{len(local.trials)} configurations with the same figures"
        f" (phone latency is timed: largest gap {worst_timed:.0%}, tolerance {TIMED_LATENCY_TOLERANCE:.0%})",
        *[f"  differs: {d}" for d in diffs],
        f"resume: {resumed.ran} trials run, {resumed.skipped} skipped",
        f"wall time, median of {args.rounds}: 1 worker {one:.0f} s, 2 workers {two:.0f} s ({one / two:.2f}x); "
        f"machine load average during the runs {min(r['load'] for r in runs):.1f}-{max(r['load'] for r in runs):.1f} "
        f"on {os.cpu_count()} cores",
        f"the cluster's processes listened on: {', '.join(listening) or '?'}",
        f"best under the budget: {local.best['key'] if local.best else 'none'}",
    ]
    for f in facts:
        console.print(f)
    write_markdown(local, runs, facts)
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)


def write_markdown(result, runs, facts) -> None:
    from edgekit.report import fmt_metric
    from edgekit.sweep import METRICS

    lines = ["# Sweep benchmark (bench/sweep.py)", "",
             f"digits-cnn, {len(result.trials)} configurations, budget {fmt_budget(result.budget.to_json())}. "
             "* estimate, † measured instructions × pJ/cycle, ★ best under the budget, ◆ Pareto front.", "",
             "| | target | prune | quantize | patch | accuracy | flash | peak SRAM | instructions | latency ms | "
             "energy µJ | budget |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    best = result.best["key"] if result.best else None
    for t in result.trials:
        c = t["config"]
        mark = ("★" if t["key"] == best else "") + ("◆" if t["key"] in result.pareto else "")
        cells = [fmt_metric(t["metrics"].get(k), k, t["sources"].get(k)) for k in METRICS] if t["status"] == "ok" \
            else [t["status"], t["error"] or "", "", "", "", ""]
        verdict = "meets" if t["key"] in result.within_budget else "; ".join(result.budget_violations[t["key"]])
        lines.append(f"| {mark} | {c['target']} | {c['prune']:g} | {c['quantize'] or 'none'} | {c['patch'] or '–'} | "
                     + " | ".join(cells) + f" | {verdict} |")
    lines += ["", "| run | trials run | skipped | workers | wall s | Σ trial s | load avg |",
              "|---|---|---|---|---|---|---|"]
    for r in runs:
        res = r["result"]
        lines.append(f"| {r['label']} | {res.ran} | {res.skipped} | {res.workers or '-'} | {r['wall_s']:.1f} | "
                     f"{r['trial_s']:.0f} | {r['load']:.1f} |")
    lines += [""] + [f"- {f.strip()}" for f in facts] + [""]
    RESULTS.write_text("\n".join(lines))
    console.print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
