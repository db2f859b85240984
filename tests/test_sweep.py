"""edgekit sweep: a design-space search (targets x pruning x quantization x patching) under a device budget, on Ray.

What a user relies on: every configuration is compiled and profiled and lands in OUT/results.jsonl as it finishes;
OUT/sweep.json names the Pareto front and the best configuration meeting the budget, OUT/sweep.html draws the fronts,
OUT/best/ holds the best build; a failing or hung trial is recorded with a one-line error and the sweep goes on;
running the same sweep again runs only what is missing; an Optuna search evaluates no more configurations than asked.

Ray runs locally with 2 CPUs for the whole module (started once, shut down at the end); the sweeps join it. The grids
are small (digits-cnn, int8) to keep the module near a minute.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from edgekit.cli import main as cli_main
from edgekit.errors import UsageError
from edgekit.model import Model
from edgekit.sweep import Budget, import_ray, parse_budget, pareto_front, summarize, sweep

TARGETS = ["cortex-m7", "phone-arm64"]
QUICK = {"repeat": 5, "progress": False}


@pytest.fixture(scope="module")
def ray_local():
    ray = import_ray()  # sets Ray up for the loopback interface before it is imported
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def lines(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# ---- no Ray needed -----------------------------------------------------------------------------------------------


def rec(key, accuracy=None, sram=None, latency=None, energy=None, flash=1000, status="ok", fits=True):
    return {"key": key, "config": {"target": "t", "prune": 0.0, "quantize": None, "patch": None}, "status": status,
            "fits_device": fits, "metrics": {"accuracy": accuracy, "peak_sram_bytes": sram, "latency_ms": latency,
                                             "energy_uj": energy, "flash_bytes": flash}}


def test_pareto_front_on_a_hand_made_set():
    records = [
        rec("a", 0.99, 100, 10.0, 5.0),   # most accurate
        rec("b", 0.95, 50, 5.0, 2.0),     # cheaper on everything
        rec("c", 0.95, 60, 6.0, 3.0),     # dominated by b
        rec("d", 0.90, 50, 5.0, 2.0),     # dominated by b (same costs, less accurate)
        rec("e", 0.80, 10, 20.0, 9.0),    # least SRAM
        rec("f", 0.95, 50, 5.0, 2.0),     # equal to b: both stay
        rec("g", None, 1, 1.0, 1.0, status="failed"),
        rec("h", 0.99, 100, None, 5.0),   # latency unknown: not compared
    ]
    keys = [records[i]["key"] for i in pareto_front(records)]
    assert sorted(keys) == ["a", "b", "e", "f"]
    two_d = [records[i]["key"] for i in pareto_front(records, [("accuracy", "max"), ("latency_ms", "min")])]
    assert sorted(two_d) == ["a", "b", "f"]
    # A model without labels: accuracy drops out of the objectives instead of emptying the front.
    unlabeled = [rec("x", None, 10, 2.0, 1.0), rec("y", None, 20, 1.0, 1.0), rec("z", None, 20, 2.0, 1.0)]
    assert sorted(unlabeled[i]["key"] for i in pareto_front(unlabeled)) == ["x", "y"]


def test_budget_parsing_and_one_line_errors(capsys):
    assert parse_budget("sram=256KB,flash=1MB,latency=50ms") == Budget(256 * 1024, 1024 ** 2, 50.0)
    assert parse_budget({"sram": 262144, "latency_ms": 0.5}) == Budget(sram_bytes=262144, latency_ms=0.5)
    assert parse_budget("latency=0.2s,energy=2mJ") == Budget(latency_ms=200.0, energy_uj=2000.0)
    for bad in ("sram=256XB", "sram256KB", "speed=3", "latency=fast", "flash=0"):
        with pytest.raises(UsageError):
            parse_budget(bad)
        assert cli_main(["sweep", "digits-cnn", "-t", "cortex-m7", "--budget", bad]) == 2
        err = capsys.readouterr().err
        assert err.startswith("edgekit: error:") and len(err.strip().splitlines()) == 1, err
    assert cli_main(["sweep", "digits-cnn", "-t", "cortex-m7", "--prune", "1.5"]) == 2
    assert "--prune" in capsys.readouterr().err


def test_budget_filtering_and_the_best_configuration():
    records = [rec("fast-big", 0.99, 300_000, 2.0, 5.0), rec("slow-small", 0.97, 100_000, 40.0, 5.0),
               rec("accurate-but-slow", 0.995, 100_000, 80.0, 5.0), rec("small-no-fit", 0.999, 1, 1.0, 1.0, fits=False),
               rec("broken", status="failed")]
    s = summarize(records, parse_budget("sram=256KB,latency=50ms"))
    assert s["within_budget"] == ["slow-small"]
    assert s["best"]["key"] == "slow-small"
    assert any("latency_ms" in v for v in s["budget_violations"]["accurate-but-slow"])
    assert "does not fit the device" in s["budget_violations"]["small-no-fit"]
    # No budget: the most accurate configuration that fits the device wins.
    assert summarize(records, Budget())["best"]["key"] == "accurate-but-slow"
    assert summarize(records, parse_budget("sram=1KB"))["best"] is None


# ---- sweeps on Ray -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def grid(ray_local, tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep") / "grid"
    args = dict(model="digits-cnn", targets=TARGETS, prune=[0], quantize=["int8"], patch=["off"],
                budget="sram=256KB,flash=1MB,latency=50ms", out=out, **QUICK)
    return args, sweep(**args)


def test_grid_sweep_writes_results_summary_page_and_best_build(grid):
    args, result = grid
    out = result.out
    assert result.ran == 2 and result.skipped == 0 and not result.failed
    records = lines(out / "results.jsonl")
    assert sorted(r["key"] for r in records) == sorted(t["key"] for t in result.trials)
    assert {r["config"]["target"] for r in records} == set(TARGETS)
    assert all(r["model"] == "digits-cnn" and r["status"] == "ok" for r in records)
    by_target = {r["config"]["target"]: r for r in records}
    m7, phone = by_target["cortex-m7"], by_target["phone-arm64"]
    # The emulated board measures instructions; energy follows from them; the phone measures latency only.
    assert m7["sources"]["instructions"] == "measured" and m7["metrics"]["instructions"] > 0
    assert m7["sources"]["energy_uj"] == "derived" and m7["sources"]["peak_sram_bytes"] == "measured"
    assert phone["sources"]["latency_ms"] == "measured" and phone["sources"]["peak_sram_bytes"] == "estimate"
    for r in records:
        assert r["metrics"]["accuracy"] > 0.9 and r["fits_device"]

    summary = json.loads((out / "sweep.json").read_text())
    assert len(summary["trials"]) == 2 and summary["pareto"] and summary["best"]["key"] in summary["within_budget"]
    assert summary["budget"] == {"sram_bytes": 262144, "flash_bytes": 1048576, "latency_ms": 50.0}
    page = (out / "sweep.html").read_text()
    assert "<svg" in page and summary["best"]["key"] in page
    assert "<script src" not in page and "<link" not in page  # one self-contained file
    best = json.loads((out / "best" / "report.json").read_text())
    assert best["target"] == summary["best"]["config"]["target"] and best["measured"] is not None
    assert not (out / "builds").exists()  # the other builds are deleted

    # Budget filtering on the figures just measured: a flash limit only the smallest build meets.
    smallest = min(result.trials, key=lambda t: t["metrics"]["flash_bytes"])
    s = summarize(result.trials, Budget(flash_bytes=smallest["metrics"]["flash_bytes"]))
    assert s["within_budget"] == [smallest["key"]] and s["best"]["key"] == smallest["key"]


def test_cli_prints_the_table(grid, capsys):
    args, _ = grid
    code = cli_main(["sweep", "digits-cnn", "-t", "cortex-m7,phone-arm64", "--prune", "0", "--quantize", "int8",
                     "--patch", "off", "--budget", "sram=256KB,flash=1MB,latency=50ms", "-o", str(args["out"])])
    text = capsys.readouterr().out
    assert code == 0, text
    assert "ran 0 trials" in text and "best under the budget" in text and "phone-arm64" in text


def test_resume_runs_only_missing_trials(grid):
    args, first = grid
    results = first.out / "results.jsonl"
    before = results.read_text()
    again = sweep(**args)
    assert again.ran == 0 and again.skipped == 2
    assert results.read_text() == before
    # Forget one finished trial (as if the sweep had been stopped before it): only that one runs again.
    kept, dropped = before.splitlines()
    results.write_text(kept + "\n")
    third = sweep(**args)
    assert third.ran == 1 and third.skipped == 1
    after = results.read_text().splitlines()
    assert after[0] == kept and json.loads(after[1])["key"] == json.loads(dropped)["key"]


def test_failing_trial_is_recorded_and_the_sweep_completes(ray_local, tmp_path):
    # A wide MLP: 2.4 MB of float32 weights, more than the Cortex-M7's 2 MB flash; fine on a phone.
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 9000), torch.nn.ReLU(),
                                 torch.nn.Linear(9000, 10))
    x = np.random.default_rng(0).random((16, 1, 8, 8), dtype=np.float32)
    y = module(torch.from_numpy(x)).argmax(-1).numpy()
    model = Model.from_module(module, torch.from_numpy(x[:1]), name="wide-mlp", calib=x, test_x=x, test_y=y)
    result = sweep(model, TARGETS, quantize=["none"], patch=["off"], out=tmp_path / "fail", **QUICK)
    by_target = {t["config"]["target"]: t for t in result.trials}
    failed = by_target["cortex-m7"]
    assert failed["status"] == "failed" and failed["error"].startswith("DoesNotFitError: ")
    assert "\n" not in failed["error"] and "flash" in failed["error"]
    assert by_target["phone-arm64"]["status"] == "ok"
    assert result.best["config"]["target"] == "phone-arm64"
    assert len(lines(tmp_path / "fail" / "results.jsonl")) == 2
    assert "DoesNotFitError" in (tmp_path / "fail" / "sweep.html").read_text()


def test_optuna_search_respects_the_trial_budget(ray_local, tmp_path):
    args = dict(model="digits-cnn", targets=["phone-arm64"], prune=[0, 0.5], quantize=["none", "int8"],
                search="optuna", trials=2, out=tmp_path / "optuna", **QUICK)
    result = sweep(**args)  # 4 configurations, 2 evaluated
    records = lines(tmp_path / "optuna" / "results.jsonl")
    assert result.ran == 2 and len(records) == 2 and len({r["key"] for r in records}) == 2
    assert json.loads((tmp_path / "optuna" / "sweep.json").read_text())["search"] == "optuna"
    # The budget counts evaluations already on disk: the same search again runs nothing.
    assert sweep(**args).ran == 0


def test_trial_time_limit_stops_a_hung_trial(ray_local, tmp_path):
    # float32 with patching takes ~20 s to build and run; one second is not enough.
    result = sweep("digits-cnn", ["cortex-m7"], quantize=["none"], patch=["auto"], trial_timeout_s=1.0,
                   out=tmp_path / "slow", **QUICK)
    (trial,) = result.trials
    assert trial["status"] == "timeout" and "time limit" in trial["error"]
    assert result.best is None and not (tmp_path / "slow" / "best").exists()
    assert (tmp_path / "slow" / "sweep.json").is_file()


def test_design_space_collapses_axes_a_target_does_not_have():
    """Patch only on Cortex-M; quantize not on neuromorphic chips (to_spiking puts the weights on their grid)."""
    from edgekit.sweep import design_space

    keys = [c.key for c in design_space(["cortex-m7", "phone-arm64", "loihi2"], prune="0,0.5",
                                        quantize="none,int8", patch="auto,off")]
    assert len(keys) == len(set(keys)) == 2 * 2 * 2 + 2 * 2 + 2
    assert [k for k in keys if k.startswith("loihi2")] == ["loihi2 prune=0 quantize=none patch=-",
                                                           "loihi2 prune=0.5 quantize=none patch=-"]
