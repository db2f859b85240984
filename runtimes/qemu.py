"""Run bare-metal microcontroller firmware under QEMU and count the instructions it executes, exactly.

Sits in ``runtimes/`` (Artifact -> Measured). The ELF is built with a platform's board files
(``targets/mcu/platforms/<platform>/board``: start-up, semihosting I/O, ``ek_marker``); :func:`run_elf` boots it on
the platform's emulated board (the platform record gives the QEMU command line), collects what it wrote over
semihosting and its exit status, and, through the ``ek_icount`` TCG plugin (``edgekit/qemu_plugin/``, built by edgekit/icount.py), the number of
guest instructions executed in total and up to each ``ek_marker()`` call. Counts are instructions, not cycles: QEMU models no pipeline, cache or wait
states. They are exact and repeatable: the same ELF gives the same counts on every run.
"""
from __future__ import annotations

import contextlib
import os
import re
import select
import time
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from edgekit.errors import FirmwareError, ToolchainError
from edgekit.icount import PLUGIN_SOURCE, build_plugin
from edgekit.targets.mcu.platforms import Platform, get_platform

__all__ = ["QemuRun", "PtyBoard", "check_tools", "run_elf", "plugin_path", "serve_pty"]



@dataclass(frozen=True)
class QemuRun:
    """The outcome of one firmware run that exited normally (status 0; anything else raises FirmwareError).

    ``output`` is everything the firmware wrote over semihosting (ek_write, ek_puts, ...). ``marker_counts[i]`` is the number of instructions executed before the i-th call of ``ek_marker()`` began;
    ``total_instructions`` counts the whole run, reset to exit. Both are 0/empty when counting was off.
    """

    exit_code: int
    output: str
    marker_counts: tuple[int, ...]
    total_instructions: int

    def between_markers(self) -> tuple[int, ...]:
        """Instructions executed between successive ``ek_marker()`` calls: the region between two markers plus a
        fixed overhead for the call (the same for every pair of call sites that look alike)."""
        counts = self.marker_counts
        return tuple(later - earlier for earlier, later in zip(counts, counts[1:]))


def _require(tools: list[str], hint: str) -> None:
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        raise ToolchainError(f"{', '.join(missing)} not found on PATH; {hint}")


def _platform(platform: Platform | str) -> Platform:
    return get_platform(platform) if isinstance(platform, str) else platform


def check_tools(need_qemu: bool = True, platform: Platform | str = "cortex_m") -> None:
    """Raise ToolchainError naming every missing tool and how to install it: the platform's cross compiler and
    binutils, and with ``need_qemu`` also its QEMU and the host gcc (which builds the counting plugin)."""
    plat = _platform(platform)
    _require(list(plat.tools()) + ([plat.emulator, "gcc"] if need_qemu else []), plat.install_hint)


def plugin_path() -> Path:
    """The compiled ek_icount plugin (edgekit/icount.py builds it on first use and when its source changes)."""
    return build_plugin(PLUGIN_SOURCE)


def _symbols(elf: Path, nm: str) -> list[tuple[int, int, str]]:
    """(address, size, name) of the defined code symbols of ``elf``, Thumb bit cleared."""
    result = subprocess.run([nm, "-S", "--defined-only", str(elf)], capture_output=True, text=True)
    if result.returncode != 0:
        raise FirmwareError(f"cannot read the symbols of {elf}: {result.stderr.strip()}")
    symbols = []
    for line in result.stdout.splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[2] in "TtWw":
            symbols.append((int(parts[0], 16) & ~1, int(parts[1], 16), parts[3]))
        elif len(parts) == 3 and parts[1] in "TtWw":
            symbols.append((int(parts[0], 16) & ~1, 0, parts[2]))
    return symbols


def _function_at(symbols: list[tuple[int, int, str]], address: int) -> str | None:
    for start, size, name in symbols:
        if start <= address < start + size:
            return name
    return None


def _qemu_option_value(path: Path) -> str:
    return str(path).replace(",", ",,")  # QEMU's option syntax escapes a comma by doubling it


def _last_lines(text: str, n: int = 3) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return " | ".join(lines[-n:]) if lines else "(no output)"


def run_elf(elf: str | Path, board: str, timeout_s: float = 60.0, count_instructions: bool = True,
            platform: Platform | str = "cortex_m") -> QemuRun:
    """Boot ``elf`` on the emulated ``board`` of ``platform`` and run it to its exit.

    Raises FirmwareError when the firmware does not finish within ``timeout_s`` seconds (QEMU and everything it
    started are killed), when it faults (the message names the fault, the PC and the function), or when it exits with
    a non-zero status; ToolchainError when a tool is missing or QEMU cannot start.
    """
    elf = Path(elf)
    plat = _platform(platform)
    plat.board_info(board)  # an unknown board is a UsageError naming the known ones
    _require([plat.emulator, plat.nm_tool] + (["gcc"] if count_instructions else []), plat.install_hint)
    if not elf.is_file():
        raise FirmwareError(f"firmware {elf} does not exist")
    symbols = _symbols(elf, plat.nm_tool)
    marker = next((address for address, _, name in symbols if name == "ek_marker"), 0)

    with tempfile.TemporaryDirectory(prefix="edgekit-qemu-") as tmp:
        tmp_dir = Path(tmp)
        semihost_file = tmp_dir / "semihosting.txt"
        counts_file = tmp_dir / "icount.txt"
        cmd = plat.emulator_command(board, elf, semihost_file)
        if count_instructions:
            cmd += ["-plugin", f"{_qemu_option_value(plugin_path())},marker=0x{marker:x},"
                               f"out={_qemu_option_value(counts_file)}"]
        with open(tmp_dir / "stdout.txt", "wb") as stdout, open(tmp_dir / "stderr.txt", "wb") as stderr:
            # Own session, so a hung run can be killed with everything it started.
            process = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr,
                                       start_new_session=True)
            timed_out = False
            try:
                process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                timed_out = True
            finally:  # also on Ctrl-C: never leave QEMU running
                if process.poll() is None:
                    try:
                        os.killpg(process.pid, signal.SIGKILL)
                    except ProcessLookupError:  # it ended just now
                        pass
                    process.wait()
        output = semihost_file.read_text(errors="replace") if semihost_file.exists() else ""
        uart = (tmp_dir / "stdout.txt").read_text(errors="replace")
        qemu_errors = (tmp_dir / "stderr.txt").read_text(errors="replace")
        counts_text = counts_file.read_text() if counts_file.exists() else None

    where = f"on {board} ({elf})"
    if timed_out:
        raise FirmwareError(f"firmware did not finish within {timeout_s:g} s {where}: it hangs or needs a longer "
                            f"time limit; last output: {_last_lines(output + uart)}")
    code = process.returncode
    fault_line = next((line for line in output.splitlines() if line.startswith("EK_FAULT ")), None)
    if fault_line is not None:
        message = plat.fault_message(fault_line, lambda address: _function_at(symbols, address))
        raise FirmwareError(f"firmware faulted {where}: {message}")
    lockup = next((line for line in qemu_errors.splitlines() if "Lockup" in line), None)
    if lockup is not None:  # a fault the core cannot escalate (e.g. inside the HardFault handler): QEMU aborts
        raise FirmwareError(f"firmware locked up {where}, a fault while handling a fault: {lockup.strip()}; "
                            f"last output: {_last_lines(output + uart)}")
    if code < 0:
        raise FirmwareError(f"QEMU was killed by signal {-code} {where}; last output: {_last_lines(output + uart)}")
    qemu_messages = [line for line in qemu_errors.splitlines() if line.startswith(f"{plat.emulator}:")
                     and "warning" not in line]
    if code != 0 and not output and qemu_messages:
        raise ToolchainError(f"{plat.emulator} could not run {elf} on {board}: {qemu_messages[0]}")
    if code != 0:
        raise FirmwareError(f"firmware exited with status {code} {where}; last output: {_last_lines(output + uart)}")

    marker_counts: list[int] = []
    total = 0
    if count_instructions:
        if counts_text is None:
            raise ToolchainError(f"the instruction-count plugin wrote no counts for {elf} on {board}: "
                                 f"{_last_lines(qemu_errors)}")
        for line in counts_text.splitlines():
            key, value = line.split()
            if key == "total":
                total = int(value)
            elif key == "marker":
                marker_counts.append(int(value))
    return QemuRun(exit_code=code, output=output, marker_counts=tuple(marker_counts), total_instructions=total)


@dataclass
class PtyBoard:
    """An emulated board whose UART is a host pseudo-terminal (QEMU ``-serial pty``): ``port`` is its path, for
    ``edgekit profile OUT --device PORT`` (runtimes/board.py). With instruction counting on, ``marker_counts`` is
    filled when the board is stopped (as :class:`QemuRun`'s)."""

    port: str
    process: subprocess.Popen
    marker_counts: tuple[int, ...] = ()


_PTY = re.compile(r"char device redirected to (/dev/pts/\d+)")


@contextlib.contextmanager
def serve_pty(elf: str | Path, board: str, platform: Platform | str = "cortex_m", count_instructions: bool = False,
              start_timeout_s: float = 60.0, extra_args: list[str] | tuple[str, ...] = ()):
    """Boot ``elf`` (a device firmware: runtimes/board.py) on the emulated ``board`` with its first UART on a new
    pseudo-terminal (``extra_args``: a device board's ``qemu_args``); yields a :class:`PtyBoard` and stops QEMU (SIGTERM: the counting plugin writes its counts at
    exit) when the block ends. ToolchainError when QEMU cannot start or names no pseudo-terminal."""
    elf = Path(elf)
    plat = _platform(platform)
    _require([plat.emulator, plat.nm_tool] + (["gcc"] if count_instructions else []), plat.install_hint)
    with tempfile.TemporaryDirectory(prefix="edgekit-pty-") as tmp:
        counts_file = Path(tmp) / "icount.txt"
        cmd = plat.serial_command(board, elf) + list(extra_args)
        if count_instructions:
            marker = next((a for a, _, name in _symbols(elf, plat.nm_tool) if name == "ek_marker"), 0)
            cmd += ["-plugin", f"{_qemu_option_value(plugin_path())},marker=0x{marker:x},"
                               f"out={_qemu_option_value(counts_file)}"]
        process = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        try:
            seen, port = b"", None
            deadline = time.monotonic() + start_timeout_s
            while port is None and time.monotonic() < deadline and process.poll() is None:
                ready, _, _ = select.select([process.stdout], [], [], 0.5)
                if ready:
                    seen += os.read(process.stdout.fileno(), 4096)
                    m = _PTY.search(seen.decode(errors="replace"))
                    port = m[1] if m else None
            if port is None:
                raise ToolchainError(f"{plat.emulator} named no pseudo-terminal for {elf} on {board}: "
                                     f"{_last_lines(seen.decode(errors='replace'))}")
            served = PtyBoard(port, process)
            yield served
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()
            process.stdout.close()
        if count_instructions and counts_file.exists():
            served.marker_counts = tuple(int(line.split()[1]) for line in counts_file.read_text().splitlines()
                                         if line.startswith("marker "))
