"""The firmware edgekit generates compiles without a compiler warning (-Wall): an implicit declaration or a
type-punned pointer is a latent miscompile the bit-exactness tests need not catch."""
from __future__ import annotations

import subprocess

import pytest

from edgekit import api
from edgekit.targets.mcu import toolchain


@pytest.mark.parametrize("name, kernels", [
    ("digits-cnn", "auto"),   # edgekit's kernels, a layer-by-layer program that copies its input into the arena
    ("digits-gru", "auto"),   # a step program with TVM's int8 GRU cell (its buffers reused across dtypes)
    ("digits-cnn", "tvm"),    # TVM's kernels alone
])
def test_generated_firmware_compiles_without_warnings(tmp_path, monkeypatch, name, kernels):
    run = subprocess.run
    warnings: list[str] = []

    def spy(cmd, *args, **kwargs):
        proc = run(cmd, *args, **kwargs)
        if isinstance(cmd, list) and "-c" in cmd and proc.stderr:
            warnings.extend(ln for ln in proc.stderr.splitlines() if "warning:" in ln)
        return proc

    monkeypatch.setattr(toolchain.subprocess, "run", spy)
    api.compile(name, "cortex-m7", tmp_path / "out", quantize="int8", patch="off", kernels=kernels)
    assert warnings == []
