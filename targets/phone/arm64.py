"""Emulated 64-bit Arm phone cores: ONNX Runtime's own aarch64 build under ``qemu-aarch64``, with exact counts.

Where it sits: the phone target's cores (targets/phone). targets/phone/mixed.py (which layers pay in int8, at build
time) and runtimes/onnxruntime.py (``edgekit profile``) run Python scripts here on the profile's core and read back
the number of Arm instructions executed between marks.

How (measured on this kind of machine, see ../shared/FIELD_NOTES.md):

* a userland: Debian's arm64 packages of the C library and Python 3.11 (fetched with ``apt-get download`` under a
  private APT configuration: nothing is installed system-wide, no foreign architecture is added) unpacked into a
  sysroot, plus the aarch64 wheels of onnxruntime (the host's version) and numpy from the package registry;
* one overlay root per core: links to the sysroot and a one-CPU ``/proc/cpuinfo`` and ``/sys/devices/system/cpu``
  with that core's MIDR (``qemu-aarch64 -L`` redirects those paths; ONNX Runtime's CPU detection otherwise reads the
  x86 host's files and crashes, and a MIDR that does not match ``-cpu`` turns on instructions the core lacks);
* ``edgekit/qemu_plugin/ek_icount.c`` (built by edgekit/icount.py) with ``syscall=4095``: the script marks a point with the unused system call
  4095 (``mark(tag)``), the plugin records the instructions executed so far.

Everything lives in ``$XDG_CACHE_HOME/edgekit/arm64/`` and is made once by :func:`ensure_userland` (the set-up runs it:
``python -m edgekit.targets.phone.arm64``); a stamp file names what it holds, so a new onnxruntime version rebuilds it.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from edgekit.errors import ToolchainError
from edgekit.icount import build_plugin

MARK_SYSCALL = 4095
DEBIAN_PACKAGES = ("libc6", "libgcc-s1", "libstdc++6", "python3.11-minimal", "libpython3.11-minimal",
                   "libpython3.11-stdlib", "zlib1g", "libexpat1", "libssl3", "libffi8", "libbz2-1.0", "liblzma5",
                   "libcrypt1", "libuuid1")
WHEEL_PLATFORMS = ("manylinux_2_28_aarch64", "manylinux2014_aarch64", "manylinux_2_17_aarch64")
GUEST_PYTHON = "usr/bin/python3.11"
SITE = "usr/local/lib/python3.11/dist-packages"
INSTALL_HINT = "run scripts/setup.sh (it installs qemu-user and the emulated Arm userland)"


@dataclass(frozen=True)
class ArmCore:
    """One emulated core: QEMU's ``-cpu`` value and what its /proc/cpuinfo says (from the target profile's [board])."""

    name: str            # profile name, e.g. phone-arm64
    qemu_cpu: str        # e.g. cortex-a76, or max,sme=off,sve-default-vector-length=16
    midr: int            # MIDR_EL1 of the core the fake /proc/cpuinfo describes
    features: str        # the cpuinfo "Features" line (the ISA extensions the core has)

    @classmethod
    def of(cls, profile) -> "ArmCore":
        b = profile.board
        missing = [k for k in ("qemu_cpu", "midr", "features") if k not in b]
        if missing:
            raise ToolchainError(f"profile '{profile.name}' has no [board] {', '.join(missing)}: it cannot run on an "
                                 "emulated Arm core")
        return cls(profile.name, str(b["qemu_cpu"]), int(str(b["midr"]), 0), str(b["features"]))


def cache_root() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "edgekit" / "arm64"


def _host_versions() -> dict[str, str]:
    import numpy
    import onnxruntime

    return {"onnxruntime": onnxruntime.__version__, "numpy": numpy.__version__}


def _stamp_text() -> str:
    return json.dumps({"packages": DEBIAN_PACKAGES, "wheels": _host_versions()}, sort_keys=True)


def userland_dir() -> Path:
    digest = hashlib.sha256(_stamp_text().encode()).hexdigest()[:12]
    return cache_root() / f"userland-{digest}"


def available() -> bool:
    """qemu-aarch64 on PATH and the userland made (by the set-up)."""
    return shutil.which("qemu-aarch64") is not None and (userland_dir() / "stamp.json").is_file()


def _run(cmd: list[str], what: str, **kw) -> None:
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if r.returncode != 0:
        tail = (r.stderr.strip() or r.stdout.strip()).splitlines()[-3:]
        raise ToolchainError(f"{what} failed ({' / '.join(tail)}); {INSTALL_HINT}")


def ensure_userland(log=print) -> Path:
    """The arm64 sysroot with Python, onnxruntime and numpy; made once (13–25 s), then reused. Built in a temporary
    folder and moved into place whole, so an interrupted set-up leaves nothing half made."""
    final = userland_dir()
    if (final / "stamp.json").is_file():
        return final
    for tool in ("apt-get", "dpkg"):
        if not shutil.which(tool):
            raise ToolchainError(f"{tool} not found: the emulated Arm userland is made from Debian packages")
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    versions = _host_versions()
    log(f"edgekit: making the emulated arm64 userland (onnxruntime {versions['onnxruntime']}) in {final}")
    with tempfile.TemporaryDirectory(dir=root, prefix=".making-") as tmp:
        work = Path(tmp)
        state, cache = work / "apt" / "state", work / "apt" / "cache"
        (state / "lists" / "partial").mkdir(parents=True)
        (cache / "archives" / "partial").mkdir(parents=True)
        (state / "status").touch()
        conf = work / "apt.conf"
        # The system's own package sources, read for arm64 into private state: nothing is installed or added.
        conf.write_text('APT::Architecture "arm64";\nAPT::Architectures { "arm64"; };\n'
                        f'Dir::State "{state}";\nDir::State::status "{state / "status"}";\nDir::Cache "{cache}";\n'
                        # as root, apt would hand downloads to its _apt user, who cannot write this private folder
                        + ('APT::Sandbox::User "root";\n' if os.geteuid() == 0 else ''))
        env = {**os.environ, "APT_CONFIG": str(conf)}
        _run(["apt-get", "update", "-qq"], "apt-get update (arm64 package lists)", env=env)
        debs = work / "debs"
        debs.mkdir()
        _run(["apt-get", "download", "-qq", *DEBIAN_PACKAGES], "apt-get download (arm64 packages)", env=env,
             cwd=debs)
        sysroot = work / "sysroot"
        for deb in sorted(debs.glob("*.deb")):
            _run(["dpkg", "-x", str(deb), str(sysroot)], f"dpkg -x {deb.name}")
        wheels = work / "wheels"
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
               "--python-version", "3.11", "-d", str(wheels)]
        for plat in WHEEL_PLATFORMS:
            cmd += ["--platform", plat]
        _run(cmd + [f"{k}=={v}" for k, v in versions.items()], "pip download (aarch64 wheels)")
        site = sysroot / SITE
        site.mkdir(parents=True, exist_ok=True)
        for whl in sorted(wheels.glob("*.whl")):
            with zipfile.ZipFile(whl) as z:
                z.extractall(site)
        for so in site.rglob("*.so*"):  # zipfile drops the execute bits the loader does not need, but keep them
            so.chmod(0o755)
        if not (sysroot / GUEST_PYTHON).is_file():
            raise ToolchainError(f"the arm64 userland has no {GUEST_PYTHON}; {INSTALL_HINT}")
        shutil.rmtree(debs)
        shutil.rmtree(wheels)
        shutil.rmtree(work / "apt")
        (sysroot / "stamp.json").write_text(_stamp_text())
        if final.exists():
            shutil.rmtree(final)
        os.replace(sysroot, final)
    return final


def overlay_root(core: ArmCore) -> Path:
    """The ``-L`` root of one core: the sysroot's folders plus that core's /proc/cpuinfo and /sys cpu files."""
    sysroot = ensure_userland()
    cpuinfo = ("processor\t: 0\nBogoMIPS\t: 50.00\n"
               f"Features\t: {core.features}\n"
               f"CPU implementer\t: 0x{core.midr >> 24 & 0xFF:02x}\nCPU architecture: 8\n"
               f"CPU variant\t: 0x{core.midr >> 20 & 0xF:x}\nCPU part\t: 0x{core.midr >> 4 & 0xFFF:03x}\n"
               f"CPU revision\t: {core.midr & 0xF}\n\n")
    digest = hashlib.sha256((str(sysroot) + cpuinfo).encode()).hexdigest()[:10]
    root = cache_root() / "roots" / f"{core.name}-{digest}"
    if (root / "proc" / "cpuinfo").is_file():
        return root
    with tempfile.TemporaryDirectory(dir=cache_root(), prefix=".root-") as tmp:
        t = Path(tmp) / "root"
        (t / "proc").mkdir(parents=True)
        cpu = t / "sys" / "devices" / "system" / "cpu"
        cpu.mkdir(parents=True)
        for entry in sysroot.iterdir():
            if entry.name not in ("proc", "sys"):
                (t / entry.name).symlink_to(entry)
        (t / "proc" / "cpuinfo").write_text(cpuinfo)
        for f in ("kernel_max", "possible", "present", "online"):
            (cpu / f).write_text("0\n")
        root.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(t, root)
        except OSError:  # made by a concurrent run meanwhile
            pass
    return root


@dataclass
class ArmRun:
    """One emulated run: the script's standard output and the instruction count at each ``mark(tag)``."""

    stdout: str
    marks: list[tuple[int, int]]   # (tag, instructions executed before the mark), in order
    total: int

    def between(self, start_tag: int, end_tag: int) -> list[int]:
        """Instructions between each ``start_tag`` mark and the ``end_tag`` mark that follows it."""
        out, start = [], None
        for tag, count in self.marks:
            if tag == start_tag:
                start = count
            elif tag == end_tag and start is not None:
                out.append(count - start)
                start = None
        return out


# What a guest script imports to mark points: ``from ekmark import mark``.
MARK_MODULE = f'''import ctypes
_syscall = ctypes.CDLL(None).syscall
_syscall.argtypes = [ctypes.c_long, ctypes.c_long]


def mark(tag):
    """Record the instructions executed so far (qemu-aarch64's ek_icount plugin, syscall={MARK_SYSCALL})."""
    _syscall({MARK_SYSCALL}, tag)
'''


def run_python(core: ArmCore, script: str, args: list[str], workdir: Path, count: bool = True,
               timeout: float = 1800) -> ArmRun:
    """Run ``script`` (Python source) with the arm64 Python on ``core``; with ``count`` the instruction counts at its
    marks. ``workdir`` is where the script and its inputs/outputs live (the guest sees host paths unchanged)."""
    if shutil.which("qemu-aarch64") is None:
        raise ToolchainError(f"qemu-aarch64 not found on PATH; {INSTALL_HINT}")
    root = overlay_root(core)
    workdir = Path(workdir).resolve()  # the guest runs there: paths in its arguments must not be relative
    (workdir / "ekmark.py").write_text(MARK_MODULE)
    path = workdir / "ek_guest.py"
    path.write_text(script)
    counts = workdir / "ek_counts.txt"
    counts.unlink(missing_ok=True)
    cmd = ["qemu-aarch64", "-L", str(root), "-cpu", core.qemu_cpu]
    if count:
        cmd += ["-plugin", f"{build_plugin()},syscall={MARK_SYSCALL},out={counts}"]
    cmd += [str(root / GUEST_PYTHON), "-B", str(path), *args]
    # A clean environment (an inherited PYTHONDONTWRITEBYTECODE or PYTHONPATH changes what the guest does) and no
    # address-space randomisation: the counts repeat.
    env = {"PATH": "/usr/bin:/bin", "PYTHONHASHSEED": "0", "HOME": str(workdir), "PYTHONPATH": str(workdir),
           "OMP_NUM_THREADS": "1"}
    if shutil.which("setarch"):
        cmd = ["setarch", os.uname().machine, "-R", *cmd]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=workdir, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise ToolchainError(f"the emulated {core.name} run did not finish within {timeout:.0f} s") from e
    if r.returncode != 0:
        tail = (r.stderr.strip() or r.stdout.strip()).splitlines()[-1:] or [f"exit {r.returncode}"]
        raise ToolchainError(f"the emulated {core.name} ({core.qemu_cpu}) run failed: {tail[0][:300]}")
    marks, total = [], 0
    if count:
        if not counts.is_file():
            raise ToolchainError(f"the instruction-count plugin wrote no counts for the emulated {core.name} run")
        for line in counts.read_text().splitlines():
            parts = line.split()
            if parts[0] == "total":
                total = int(parts[1])
            elif parts[0] == "syscall":
                marks.append((int(parts[2]), int(parts[1])))
    return ArmRun(r.stdout, marks, total)


if __name__ == "__main__":  # the set-up: python -m edgekit.targets.phone.arm64
    try:
        print(f"edgekit: emulated arm64 userland ready in {ensure_userland()}")
    except ToolchainError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
