"""Builds are reproducible: the same model, options and edgekit give the same OUT, byte for byte.

What a user relies on: compiling twice (another day, another process, another OUT folder name) writes identical C
sources, firmware ELF, model.onnx / model.ort, report.json and report.html, so that a build can be checked against a
published one and a diff of two OUT folders shows only what changed. The two builds here run as separate processes
with different Python hash seeds, so set and dict orders that depend on string hashing would show up.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import TinyCNN

EDGEKIT = Path(sys.executable).with_name("edgekit")
HAVE_ARM = all(shutil.which(t) for t in ("arm-none-eabi-gcc", "arm-none-eabi-nm", "arm-none-eabi-size"))

# target -> files that must exist (and match) in OUT
CASES = {
    "cortex-m7": ["src/edgekit_model.c", "src/edgekit_model.h", "src/edgekit_weights.c", "src/edgekit_kernels.c",
                  "firmware/main.c", "firmware/Makefile", "firmware/firmware.elf", "reference.npz", "report.json",
                  "report.html"],
    "phone-arm64": ["model.onnx", "model.ort", "required_operators.config", "testdata.npz", "report.json",
                    "report.html"],
}


@pytest.fixture(scope="module")
def model_files(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("repro")
    torch.manual_seed(0)
    torch.export.save(torch.export.export(TinyCNN().eval(), (torch.rand(1, 1, 8, 8),)), str(d / "tiny.pt2"))
    np.save(d / "calib.npy", np.random.default_rng(0).random((16, 1, 8, 8), dtype=np.float32))
    return d


def _contents(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("target", sorted(CASES))
def test_same_model_and_options_give_identical_files(target, model_files):
    if target.startswith("cortex") and not HAVE_ARM:
        pytest.skip("needs the Arm cross-compiler to build the firmware")
    procs = []
    for run, seed in (("one", "1"), ("two", "2")):
        procs.append(subprocess.Popen(
            [str(EDGEKIT), "compile", "tiny.pt2", "-t", target, "--quantize", "int8", "--calib", "calib.npy",
             "-o", f"{target}/{run}/out"],
            cwd=model_files, env={**os.environ, "PYTHONHASHSEED": seed}, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True))
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    one, two = (_contents(model_files / target / run / "out") for run in ("one", "two"))
    for f in CASES[target]:
        assert f in one, f
    assert sorted(one) == sorted(two)
    if target.startswith("phone"):
        # The phone build measures each layer on the emulated Arm core; those counts vary by about 1 % from run to
        # run (ONNX Runtime's own variation), the choices made from them do not: compare the report without them.
        for contents in (one, two):
            rep = json.loads(contents.pop("report.json"))
            for row in rep["build"]["quantization"]["mixed"]["layers"]:
                row.pop("int8"), row.pop("float32")
            rep["build"]["quantization"]["mixed"].pop("whole")
            rep["notes"] = [n.split("; whole model")[0] for n in rep["notes"]]
            contents["report.json (without the Arm counts)"] = json.dumps(rep, sort_keys=True).encode()
            contents.pop("report.html")  # it shows the counts
    differ = [f for f in one if one[f] != two[f]]
    assert differ == [], f"{target}: these files differ between two identical builds: {differ}"
