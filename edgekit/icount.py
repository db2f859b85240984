"""The ek_icount QEMU TCG plugin (qemu_plugin/ek_icount.c): built once with the host gcc, shared by everything that
counts instructions under QEMU — runtimes/qemu.py (microcontroller firmware, ``ek_marker()`` hits) and the phone
target's emulated Arm cores (targets/phone/arm64.py, user mode, marks by system call)."""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from edgekit.errors import ToolchainError

PLUGIN_SOURCE = Path(__file__).resolve().parent / "qemu_plugin" / "ek_icount.c"


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    folder = Path(base) / "edgekit" / "qemu_plugin"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:  # read-only or missing home: fall back to a per-user temporary folder
        folder = Path(tempfile.gettempdir()) / f"edgekit-{os.getuid()}" / "qemu_plugin"
        folder.mkdir(parents=True, exist_ok=True)
    return folder


def build_plugin(source: Path = PLUGIN_SOURCE) -> Path:
    """The compiled plugin, built with the host gcc on first use and again whenever its source changes (the file name
    carries a hash of the source)."""
    digest = hashlib.sha256(Path(source).read_bytes()).hexdigest()[:16]
    folder = _cache_dir()
    plugin = folder / f"ek_icount-{digest}.so"
    if plugin.exists():
        return plugin
    if shutil.which("gcc") is None:
        raise ToolchainError("gcc not found on PATH; install it with: sudo apt-get install -y gcc (or run "
                             "scripts/setup.sh)")
    partial = folder / f".ek_icount-{digest}.{os.getpid()}.so"
    cmd = ["gcc", "-shared", "-fPIC", "-O2", "-fvisibility=hidden", "-Wall", "-o", str(partial), str(source)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        partial.unlink(missing_ok=True)
        raise ToolchainError(f"could not build the QEMU instruction-count plugin {source}: "
                             f"{result.stderr.strip() or result.stdout.strip()}")
    os.replace(partial, plugin)  # atomic: a concurrent run sees the old file or the complete new one
    for stale in folder.glob("ek_icount-*.so"):
        if stale != plugin:
            stale.unlink(missing_ok=True)
    return plugin
