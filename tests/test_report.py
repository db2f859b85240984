"""report.json / report.html: the contract fields, and the page rendered by a real headless browser (Chromium)."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from edgekit import api
from edgekit.cli import main as cli_main

from conftest import make_tiny

ARTIFACTS = Path(__file__).resolve().parent.parent / "build" / "test-artifacts"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars"]


def _chromium(args: list[str], tmp: Path) -> subprocess.CompletedProcess:
    assert CHROMIUM, "chromium is installed by scripts/setup.sh"
    return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={tmp / 'profile'}", *args], capture_output=True,
                          text=True, timeout=120)


@pytest.fixture(scope="module")
def profiled(tmp_path_factory):
    out = tmp_path_factory.mktemp("rep") / "out"
    api.compile(make_tiny(n=4), "cortex-m7", out, quantize="int8", patch="2")
    api.profile(out)
    return out


def test_report_json_holds_the_contract(profiled):
    rep = json.loads((profiled / "report.json").read_text())
    for key in ("edgekit_version", "target", "model", "estimate", "fits", "fit_reasons", "measured", "errors"):
        assert key in rep
    for key in ("name", "params", "macs", "layers"):
        assert key in rep["model"]
    for key in ("flash_bytes", "peak_sram_bytes", "latency_ms", "energy_uj"):
        assert isinstance(rep["estimate"][key], (int, float))
    assert rep["patch"]["grid"] == 2 and rep["measured"]["arena_bytes"] > 0
    m = rep["measured"]
    for key, val in rep["errors"].items():
        est = {"peak_sram_bytes": rep["estimate"]["peak_sram_bytes"]}.get(key, rep["estimate"].get(key))
        meas = {"peak_sram_bytes": m["sram_bytes"]}.get(key, m.get(key))
        assert val == pytest.approx((est - meas) / meas)


def test_report_html_renders_in_chromium(profiled, tmp_path):
    page = profiled / "report.html"
    dom = _chromium(["--dump-dom", page.as_uri()], tmp_path)
    assert dom.returncode == 0, dom.stderr[-500:]
    assert 'id="summary"' in dom.stdout and 'id="layers"' in dom.stdout and "<svg" in dom.stdout
    assert "Uncaught" not in dom.stderr  # no script errors in the console
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "report.png"
    res = _chromium([f"--screenshot={shot}", "--window-size=1280,2000", page.as_uri()], tmp_path)
    assert res.returncode == 0 and shot.stat().st_size > 10_000


def test_report_and_compare_commands(profiled, tmp_path, capsys):
    assert cli_main(["report", str(profiled)]) == 0
    other = tmp_path / "float"
    api.compile(make_tiny(n=4), "cortex-m7", other)
    html = tmp_path / "cmp.html"
    assert cli_main(["compare", str(profiled), str(other), "--html", str(html)]) == 0
    text = capsys.readouterr().out
    assert "peak SRAM" in text and "int8" in text and "float32" in text
    dom = _chromium(["--dump-dom", html.as_uri()], tmp_path)
    assert 'id="compare"' in dom.stdout


def test_analyze_prints_full_names_and_totals_when_piped():
    """Piped output (here: captured) is not cut at 80 columns: every layer name and the totals are whole."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "edgekit.cli", "analyze", "mbv2-w035"], capture_output=True,
                         text=True, check=True).stdout
    assert "features.16.block.2.0" in out or "features.16" in out
    total = next(line for line in out.splitlines() if "total" in line)
    assert "26,660,752" in total and "1,670,088" in total
    assert "…" not in out
