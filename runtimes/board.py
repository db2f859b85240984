"""On-device profiling: build a board's device firmware, flash it, run the test inputs over the serial link and
read back outputs and cycles per layer (``edgekit profile OUT --device PORT [--board B] [--flash ...]``).

Where it sits: Artifact -> measurements for the ``mcu`` targets on real hardware, beside the emulated figures of
runtimes/mcu.py. The device firmware is OUT's model (OUT/src, compiled with the build's own flags) with another
harness (targets/mcu/templates/device_main.c.j2) and board support (UART, cycle counter: board/ek_device.c, the
framed protocol: board/ek_link.c, host side runtimes/devlink.py), linked for the board of devboards.toml into
OUT/device/<board>/ (firmware.elf, .hex, .bin). Emulated boards there (mps2-an500, virt-rv32imc, ...) put the
same firmware behind QEMU's ``-serial pty``: everything but the flashing runs in the test suite without hardware.

Figures go to ``report["measured"]["devices"][<board>]``, labelled by where they were measured: outputs checked
against the host reference (int8 bit for bit) and the float model (fidelity), cycles per inference and per layer
from the board's counter (DWT CYCCNT, RISC-V mcycle; "unavailable" where there is none, e.g. under QEMU), cycles
per emulated instruction per layer, the stack high-water mark, and the estimate's error against the device.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

import numpy as np

from edgekit import __version__
from edgekit.errors import DeviceError, ToolchainError, UsageError
from edgekit.targets.mcu.platforms import Platform, figure, get_platform
from edgekit.targets.mcu.records import McuBuild

FLASH_METHODS = ("auto", "pyocd", "openocd", "dfu-util", "none")
DEVICE_STACK_BYTES = 8 * 1024


def model_id(out: Path) -> int:
    """CRC-32 of the model's C sources (OUT/src): the device firmware reports it, so a board running another model
    (or an older build of this one) is caught before any figure is taken."""
    crc = 0
    src = Path(out) / "src"
    for path in sorted(p for p in _model_files(src) if p.suffix in (".c", ".h")):
        crc = zlib.crc32(str(path.relative_to(src)).encode(), crc)
        crc = zlib.crc32(path.read_bytes(), crc)
    return crc


def _model_files(src: Path) -> list[Path]:
    """OUT/src's own files and, in a nested image, each operating point's (src/op<k>/; the device firmware runs the
    image's default point, the widest)."""
    return sorted(src.glob("*")) + sorted(src.glob("op[0-9]*/*"))


def board_for(report: dict, board: str | None) -> tuple[Platform, dict, McuBuild]:
    """The device board ``board`` (default: the target profile's development board) and the build's record;
    UsageError when the board's core is not the one OUT was compiled for."""
    build = McuBuild.from_json(report.get("build") or {})
    platform = get_platform(build.platform)
    if board is None:
        from edgekit.targets.profiles import get_profile

        board = (report.get("target_profile") or {}).get("dev_board") or get_profile(report["target"]).board.get(
            "dev_board")
        if not board:
            raise UsageError(f"target {report['target']} names no development board: give --board (one of "
                             f"{', '.join(platform.device_boards())})")
    info = platform.device_board(board)
    if info["cpu"] != build.cpu or info["gcc_flags"] != platform.board_info(build.board)["gcc_flags"]:
        raise UsageError(f"board {board} has a {info['cpu']} core ({' '.join(info['gcc_flags'])}), but this build "
                         f"is for {build.cpu}: compile for the target with that core, or pick a {build.cpu} board")
    return platform, info, build


def _stamp(out: Path, info: dict, platform: Platform) -> str:
    """What a device firmware depends on besides OUT/src's sources: edgekit's version, the board record, the board
    files and the harness template."""
    from edgekit.targets.mcu.codegen import TEMPLATES

    text = repr((__version__, model_id(out), sorted((k, repr(v)) for k, v in info.items())))
    for path in platform.board_files(device=True) + [TEMPLATES / "device_main.c.j2"]:
        text += hashlib.sha256(path.read_bytes()).hexdigest()
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def device_firmware(out: Path, report: dict, board: str | None = None, baud: int | None = None) -> Path:
    """OUT/device/<board>/firmware.elf (with .hex and .bin), built when missing or stale (another model, board
    file or ``baud``: the UART's rate is compiled in); returns the ELF. Built in a temporary folder and moved into
    place whole: a failed build leaves nothing half-written."""
    from edgekit.targets.mcu import codegen, toolchain

    out = Path(out)
    platform, info, build = board_for(report, board)
    if baud is not None:
        info = {**info, "baud": int(baud)}
    uart_clock = figure(info["uart_clock_hz"])
    if not 0 < info["baud"] <= uart_clock / 16:  # the UARTs here divide their clock by at least 16
        raise UsageError(f"--baud {info['baud']}: {info['name']}'s UART runs from {uart_clock / 1e6:g} MHz and takes "
                         f"at most {int(uart_clock // 16):,} baud")
    folder = out / "device" / info["name"]
    stamp = _stamp(out, info, platform)
    elf = folder / "firmware.elf"
    if elf.exists() and (folder / ".stamp").exists() and (folder / ".stamp").read_text() == stamp:
        return elf
    platform.require_toolchain()
    src_dir = "src"
    model_sources = [p for p in _model_files(out / src_dir) if p.suffix == ".c"]
    if not model_sources:
        raise DeviceError(f"{out}/src holds no model sources: compile the model again")
    stream = build.streaming
    clock = int(figure(info["clock_hz"]))
    (out / "device").mkdir(exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{info['name']}-", dir=out / "device"))
    try:
        support = platform.write_board_support(info["name"], tmp, min(DEVICE_STACK_BYTES, int(info["ram_size"]) // 4),
                                               device=info)
        main_c = codegen.write_device_harness(
            tmp, model_name=report["model"]["name"], board=info["name"], dtype=build.dtype, model_id=model_id(out),
            calls=len(build.step_layers), clock_hz=clock, streaming=stream is not None,
            steps=int(stream.steps_per_sequence) if stream is not None else 1,
            event_units=int(stream.event_units or 0) if stream is not None else 0,
            flush="edgekit_model_flush" in (out / "src" / "edgekit_model.h").read_text())
        opt = set(toolchain.OPT_FLAGS)
        cflags = [f for f in build.cflags.split() if f not in opt] + platform.device_defines(info)
        sources = model_sources + [main_c] + list(support.sources)
        tmp_elf = tmp / "firmware.elf"
        try:
            toolchain.compile_firmware(platform, sources, [out / "src", out / "src" / "include", tmp], cflags,
                                       platform.link_flags(support.linker_script), tmp, tmp_elf)
        except ToolchainError as e:
            raise ToolchainError(f"device firmware for {info['name']}: {e}") from None
        shutil.rmtree(tmp / "obj", ignore_errors=True)
        for fmt, suffix in (("binary", ".bin"), ("ihex", ".hex")):
            subprocess.run([platform.objcopy_tool, "-O", fmt, str(tmp_elf), str(tmp / f"firmware{suffix}")],
                           check=True, capture_output=True)
        (tmp / "build.txt").write_text(  # how it was built, for the user (and to rebuild it by hand)
            f"{platform.compiler} {' '.join(cflags + toolchain.OPT_FLAGS)} -I../../src -I../../src/include -I. "
            f"{' '.join(f'../../src/{p.relative_to(out / src_dir)}' for p in model_sources)} "
            f"{' '.join(p.name for p in support.sources)} main.c "
            f"{' '.join(str(f) for f in platform.link_flags('link.ld'))} -o firmware.elf\n")
        (tmp / ".stamp").write_text(stamp)
        tmp.chmod(0o755)  # mkdtemp's folder is private; OUT's other folders are not
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return elf


# ---- flashing ------------------------------------------------------------------------------------------------------

def _pyocd() -> list[str] | None:
    exe = Path(sys.executable).with_name("pyocd")
    if exe.exists():
        return [str(exe)]
    found = shutil.which("pyocd")
    return [found] if found else None


def flash_command(method: str, info: dict, elf: Path) -> list[str]:
    """The command that writes ``elf`` (or its .bin) to the board with ``method`` (pyocd, openocd, dfu-util)."""
    elf = Path(elf)
    if method == "pyocd":
        if not info.get("pyocd_target"):
            raise UsageError(f"board {info['name']} has no pyOCD target; use --flash openocd or dfu-util")
        tool = _pyocd() or ["pyocd"]
        # -W: fail at once when no probe is connected (pyocd waits for one by default)
        return tool + ["flash", "-W", "-t", info["pyocd_target"], "--format", "elf", str(elf)]
    if method == "openocd":
        if not info.get("openocd_config"):
            raise UsageError(f"board {info['name']} has no OpenOCD configuration; use another --flash method")
        cmd = ["openocd"]
        for cfg in info["openocd_config"]:
            cmd += ["-f", cfg]
        return cmd + ["-c", f"program {elf.as_posix()} verify reset exit"]
    if method == "dfu-util":
        if "dfu_address" not in info:
            raise UsageError(f"board {info['name']} has no DFU bootloader address; use another --flash method")
        return ["dfu-util", "-a", "0", "-s", f"0x{int(info['dfu_address']):08x}:leave", "-D",
                str(elf.with_suffix(".bin"))]
    raise UsageError(f"--flash {method}: choose one of {', '.join(FLASH_METHODS)}")


def choose_flash(method: str, info: dict) -> str:
    """What ``--flash auto`` means for this board: none for an emulated board (QEMU loads the ELF), else the first
    tool that is installed and that the board supports: pyocd, openocd, dfu-util."""
    if method not in FLASH_METHODS:
        raise UsageError(f"--flash {method}: choose one of {', '.join(FLASH_METHODS)}")
    if info.get("emulated"):
        if method not in ("auto", "none"):
            raise UsageError(f"board {info['name']} is emulated: start QEMU with its firmware and -serial pty "
                             "(README: Run it on your board) and pass --flash none")
        return "none"
    if method != "auto":
        return method
    if info.get("pyocd_target") and _pyocd():
        return "pyocd"
    if info.get("openocd_config") and shutil.which("openocd"):
        return "openocd"
    if "dfu_address" in info and shutil.which("dfu-util"):
        return "dfu-util"
    raise DeviceError(f"no flashing tool for {info['name']} is installed (pyocd, openocd or dfu-util): install one, "
                      f"or flash OUT/device/{info['name']}/firmware.hex yourself and pass --flash none")


def flash(method: str, info: dict, elf: Path, timeout_s: float = 300.0) -> str:
    """Write the firmware with ``method`` (after choose_flash); returns what was done, for the report."""
    if method == "none":
        return "not flashed by edgekit (--flash none)" if not info.get("emulated") else \
            "emulated board: QEMU loaded the ELF"
    cmd = flash_command(method, info, elf)
    if shutil.which(cmd[0]) is None and not Path(cmd[0]).exists():
        raise DeviceError(f"{cmd[0]} is not installed: install it, or flash {elf} yourself and pass --flash none")
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise DeviceError(f"{method} did not finish flashing {elf} within {timeout_s:g} s") from None
    text = (proc.stdout + proc.stderr).strip()
    if proc.returncode != 0:
        lower = text.lower()
        if "no connected debug probe" in lower or "no available debug probe" in lower or \
                "no device found" in lower or "no dfu capable usb device" in lower or "open failed" in lower:
            raise DeviceError(f"{method} found no {info.get('probe', 'debug probe')} for {info['name']}: connect "
                              f"the board over USB (and close other debuggers), or flash {elf.name} yourself and "
                              "pass --flash none")
        last = text.splitlines()[-1] if text else f"exit status {proc.returncode}"
        raise DeviceError(f"flashing {elf} with {method} failed: {last}")
    return f"flashed with {method}: {' '.join(cmd)}"


# ---- measuring -----------------------------------------------------------------------------------------------------

def _link_timeout(info_bytes: int, baud: int, cycles_guess: float, clock: float) -> float:
    """Seconds to wait for one answer: its bytes at 10 bits each over the link, the inference at a pessimistic
    guess of its cycles, and a margin for a busy host."""
    return 10.0 + 3 * info_bytes * 10 / baud + 20 * cycles_guess / clock


def profile(out: Path, report: dict, port, board: str | None = None, flash_method: str = "auto",
            baud: int | None = None, samples: int | None = None, timeout_s: float | None = None,
            hello_timeout_s: float = 15.0) -> dict:
    """Flash OUT's device firmware (``flash_method``), run the test inputs on the board at ``port`` and return its
    measurements (``report["measured"]["devices"][board]``). DeviceError on a link that fails, a fault, or a board
    that runs another model."""
    from edgekit.runtimes import devlink
    from edgekit.runtimes.mcu import check_outputs

    out = Path(out)
    platform, info, build = board_for(report, board)
    method = choose_flash(flash_method, info)
    baud = int(baud or info["baud"])
    elf = device_firmware(out, report, info["name"], baud)
    flashed = flash(method, info, elf)
    ref = np.load(out / "reference.npz")
    x = ref["x_device"]
    expected = ref["expected"]
    n = len(expected) if samples is None else min(samples, len(expected))
    dtype = report["dtype"]
    est = report.get("estimate") or {}
    clock = float(figure(info["clock_hz"]))
    with devlink.Link(port, baud) as link:
        dev = link.hello(hello_timeout_s)
        want = model_id(out)
        if dev.model_id != want:
            raise DeviceError(f"the board at {link.name} runs another model (id {dev.model_id:08x}, board "
                              f"{dev.board!r}); {out} is {want:08x}: flash {elf} (--flash auto)")
        if dev.calls != len(build.step_layers) or dev.request_bytes != x[0].nbytes:
            raise DeviceError(f"the board at {link.name} reports {dev.calls} kernel calls and {dev.request_bytes}-"
                              f"byte inputs; {out} has {len(build.step_layers)} and {x[0].nbytes}: flash {elf}")
        runs = []
        for i in range(n):
            limit = timeout_s or _link_timeout(dev.request_bytes + dev.output_bytes + 8 * dev.calls, baud,
                                               float(est.get("cycles") or est.get("instructions") or 1e6), clock)
            r = link.run(np.ascontiguousarray(x[i]).tobytes(), dev, limit)
            if r.status != 0:
                raise DeviceError(f"a kernel on the board returned {r.status} on test input {i} (an edgekit kernel "
                                  "error code, see ek_nn_s8.h)")
            if r.wrong_markers:
                raise DeviceError(f"the board saw {r.wrong_markers} markers in an inference, not "
                                  f"{dev.calls + 2}: its firmware does not match {out}; flash {elf}")
            runs.append(r)
    np_dtype = np.int8 if dtype == "int8" else np.float32
    got = np.stack([np.frombuffer(r.output, np_dtype).reshape(expected.shape[1:]) for r in runs])
    measured: dict = {"where": f"{info['name']} over {link.name}"
                      + (" (QEMU, emulated board behind a pseudo-terminal)" if info.get("emulated") else ""),
                      "board": info["name"], "port": link.name, "emulated": bool(info.get("emulated")),
                      "description": info["description"], "flash": flashed,
                      "firmware": str(elf.relative_to(out)), "model_id": f"{want:08x}", "test_inputs": n,
                      "baud": baud, "clock_hz": clock, "clock_source": _source(info["clock_hz"])}
    if "flash_wait_states" in info:
        measured["flash_wait_states"] = figure(info["flash_wait_states"])
        measured["flash_wait_states_source"] = _source(info["flash_wait_states"])
    measured.update(check_outputs(got, ref, n, report))
    measured["stack_bytes"] = max(r.stack_bytes for r in runs)
    measured["cycles_available"] = dev.has_cycles
    if build.streaming is not None and build.streaming.event_units:
        measured["events"] = int(sum(r.events for r in runs))
    emulated = report.get("measured") or {}
    emulated_layers = {row["name"]: row for row in emulated.get("layers") or []}
    if dev.has_cycles:
        totals = np.array([r.total_cycles for r in runs], np.float64)
        measured["cycles"] = int(np.median(totals))
        measured["cycles_min"], measured["cycles_max"] = int(totals.min()), int(totals.max())
        measured["latency_ms"] = measured["cycles"] / clock * 1e3
        measured["cycles_note"] = (f"{'DWT CYCCNT' if info['cycle_counter'] == 'dwt' else 'mcycle'} at "
                                   f"{clock / 1e6:g} MHz" + (f", {measured['flash_wait_states']:g} flash wait states"
                                                             if "flash_wait_states" in measured else "")
                                   + ("" if build.streaming is None else "; per test sequence (all its steps)"))
        if emulated.get("instructions"):
            measured["cycles_per_instruction"] = measured["cycles"] / emulated["instructions"]
        if est.get("cycles"):
            measured["estimate_error"] = {"cycles": (est["cycles"] - measured["cycles"]) / measured["cycles"]}
    else:
        measured["cycles"] = None
        measured["cycles_note"] = ("no cycle counter: QEMU models no DWT (CYCCNT reads 0) and an emulated board's "
                                   "mcycle counts host time; the emulated instruction counts are in measured"
                                   if info.get("emulated") else
                                   "the cycle counter did not advance on this board: cycles unavailable")
    per_call = np.median(np.array([r.call_cycles for r in runs], np.float64), axis=0) if dev.has_cycles else None
    layers: dict[str, dict] = {}
    for k, (name, kernel) in enumerate(zip(build.step_layers, build.step_kernels)):
        row = layers.setdefault(name, {"name": name, "cycles": 0 if dev.has_cycles else None, "kernels": []})
        if per_call is not None:
            row["cycles"] += int(per_call[k])
        if kernel not in row["kernels"]:
            row["kernels"].append(kernel)
    est_layers = {row["name"]: row for row in est.get("layers") or []}
    est_cpi = est["cycles"] / est["instructions"] if est.get("cycles") and est.get("instructions") else None
    for row in layers.values():
        emu = emulated_layers.get(row["name"]) or {}
        row["instructions"] = emu.get("instructions")
        if row["cycles"] is not None and row["instructions"]:
            row["cycles_per_instruction"] = row["cycles"] / row["instructions"]
        est_instr = (est_layers.get(row["name"]) or {}).get("instructions")
        est_cycles = est_instr * est_cpi if est_instr and est_cpi else None
        if est_cycles and row["cycles"]:
            row["estimated_cycles"] = est_cycles
            row["estimate_error"] = (est_cycles - row["cycles"]) / row["cycles"]
    measured["layers"] = list(layers.values())
    return measured


def _source(value) -> str:
    return value.get("source", "") if isinstance(value, dict) else ""
