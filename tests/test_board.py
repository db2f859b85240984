"""On-device profiling without a board: the device firmware and its framed serial protocol against QEMU boards whose
UART is a host pseudo-terminal (``-serial pty``), bad links, the wrong model on the board, the report, and the
flashing step as far as it goes without hardware (its commands, and the error when no probe is connected).

Nothing here depends on timing: every wait has a limit far above what the step needs, and the tests of a silent link
wait for nothing that could come.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

from edgekit import api
from edgekit.errors import DeviceError, ToolchainError, UsageError
from edgekit.runtimes import board as board_runtime
from edgekit.runtimes import devlink
from edgekit.runtimes.qemu import serve_pty
from edgekit.targets.mcu.platforms import get_platform

from conftest import make_tiny

EDGEKIT = str(Path(sys.executable).with_name("edgekit"))


@pytest.fixture(scope="module")
def m7_build(tmp_path_factory):
    """A tiny int8 CNN for cortex-m7, profiled on the emulated board (the figures the device's sit beside)."""
    out = tmp_path_factory.mktemp("board") / "m7"
    api.compile(make_tiny(), "cortex-m7", out, quantize="int8")
    api.profile(out)
    return out


def _serve(out: Path, board: str, count_instructions: bool = False):
    rep = json.loads((out / "report.json").read_text())
    platform = get_platform(rep["build"]["platform"])
    info = platform.device_board(board)
    elf = board_runtime.device_firmware(out, rep, board)
    return serve_pty(elf, info["layout"], platform, count_instructions=count_instructions,
                     extra_args=info.get("qemu_args", ()))


# ---- the protocol, against a scripted port -------------------------------------------------------------------------

class ScriptedPort:
    """A serial port whose device answers each frame written to it with ``answer(frame) -> bytes``."""

    name = "scripted"

    def __init__(self, answer):
        self.answer = answer
        self.pending = b""

    def write(self, data: bytes) -> None:
        kind, seq, length = devlink._HEADER.unpack_from(data, 2)
        self.pending += self.answer(devlink.Frame(chr(kind), seq, data[2 + devlink._HEADER.size:-4]))

    def read(self, n: int) -> bytes:
        out, self.pending = self.pending[:n], self.pending[n:]
        return out

    def close(self) -> None:
        pass


def _info_payload(model_id=0x1234, calls=3):
    return devlink._INFO.pack(b"EKDV", 1, devlink.FLAG_CYCLES, calls, 64, 10, model_id, 1000, 25_000_000, 1) + b"x"


def test_frames_carry_the_zlib_crc_and_round_trip():
    frame = devlink.encode("H", 7, b"abc")
    assert frame[:2] == devlink.SYNC
    assert int.from_bytes(frame[-4:], "little") == zlib.crc32(frame[2:-4])
    stale = devlink.encode("I", 6, _info_payload(model_id=1))  # an answer to an earlier hello is skipped
    port = ScriptedPort(lambda f: b"\x00\xe5junk" + stale + devlink.encode("I", f.seq, _info_payload()))
    info = devlink.Link(port).hello(timeout_s=5)
    assert (info.model_id, info.calls, info.has_cycles, info.board) == (0x1234, 3, True, "x")


def _corrupt_last(frame: bytes) -> bytes:
    """The frame with its last CRC byte inverted: wrong whatever the sequence number made it (setting it to zero
    left it right once in 256 runs)."""
    return frame[:-1] + bytes([frame[-1] ^ 0xFF])


@pytest.mark.parametrize("answer, message", [
    (lambda f: _corrupt_last(devlink.encode("I", f.seq, _info_payload())), "checksum mismatch"),
    (lambda f: b"\x55" * 300, "not edgekit frames"),
    (lambda f: b"", "no answer"),
    (lambda f: devlink.encode("E", f.seq, b"unknown request"), "refused the request: unknown request"),
    (lambda f: devlink.encode("T", 0, b"EK_FAULT HardFault pc=0x00000100\n"), "faulted: EK_FAULT HardFault"),
    (lambda f: devlink.encode("Z", 0, (3).to_bytes(4, "little")), "stopped \\(status 3\\)"),
    (lambda f: devlink.encode("I", f.seq, b"MBED" + bytes(40)), "runs other firmware"),
])
def test_a_bad_link_is_one_clear_error_never_a_figure(answer, message):
    # the corrupted frame has its last CRC byte inverted; a silent or garbled link waits out a short limit
    port = ScriptedPort(answer)
    with pytest.raises(DeviceError, match=message):
        devlink.Link(port).hello(timeout_s=0.5)


def test_a_run_answer_of_the_wrong_length_is_refused():
    info = devlink.DeviceInfo.parse(_info_payload(calls=2))
    short = devlink._RESULT.pack(0, 0, 100, 0, 2) + bytes(8 * 3 + 9)  # one output byte missing
    port = ScriptedPort(lambda f: devlink.encode("O", f.seq, short))
    with pytest.raises(DeviceError, match="expected"):
        devlink.Link(port).run(bytes(64), info, timeout_s=5)


# ---- the same over a real pseudo-terminal, with nothing or noise behind it ------------------------------------------

@pytest.mark.parametrize("written, message", [
    (b"", "no answer from /dev/pts/"),
    (bytes(range(256)) * 4, "not edgekit frames"),
    (devlink.encode("I", 1, _info_payload())[:-2] + b"\xff\xff", "checksum mismatch"),
])
def test_bad_links_over_a_pseudo_terminal(written, message):
    master, slave = os.openpty()
    try:
        with devlink.Link(os.ttyname(slave)) as link:  # (opening it drops stale input)
            os.write(master, written)  # already waiting when the host reads: nothing depends on timing
            with pytest.raises(DeviceError, match=message):
                link.hello(timeout_s=1.0)
    finally:
        os.close(master)
        os.close(slave)


# ---- the device firmware on emulated boards ------------------------------------------------------------------------

def test_cli_profiles_the_device_over_qemus_pty(m7_build):
    """The command a user runs, against QEMU's mps2-an500 behind a pseudo-terminal: outputs bit-exact, cycles
    reported as unavailable (QEMU has no DWT), the emulated figures kept, the instructions per kernel call of the
    device firmware (counted by the plugin) those of the emulated test firmware."""
    out = m7_build
    before = json.loads((out / "report.json").read_text())["measured"]
    with _serve(out, "mps2-an500", count_instructions=True) as qemu:
        proc = subprocess.run([EDGEKIT, "profile", str(out), "--device", qemu.port, "--board", "mps2-an500",
                               "--flash", "none"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert f"on mps2-an500 over {qemu.port}" in " ".join(proc.stdout.split())
    rep = json.loads((out / "report.json").read_text())
    dev = rep["measured"]["devices"]["mps2-an500"]
    assert dev["outputs_match"] and dev["max_abs_err_lsb"] == 0 and dev["test_inputs"] == 24
    assert dev["cycles"] is None and dev["cycles_available"] is False and "DWT" in dev["cycles_note"]
    assert dev["fidelity"]["inputs"] == 24 and dev["accuracy"] == pytest.approx(before["accuracy"])
    assert rep["measured"]["instructions"] == before["instructions"]  # beside, not instead of
    assert [row["name"] for row in dev["layers"]] == [row["name"] for row in before["layers"]]
    assert [row["instructions"] for row in dev["layers"]] == [row["instructions"] for row in before["layers"]]
    assert 0 < dev["stack_bytes"] < 8192
    K = len(rep["build"]["step_layers"])
    counts = qemu.marker_counts
    assert len(counts) == 24 * (K + 2)  # the markers of every inference over the link
    device_calls = [b - a for a, b in zip(counts[:K], counts[1:K + 1])]
    emulated_calls = [round(v) for v in _emulated_calls(out, K)]
    assert all(abs(d - e) <= 32 for d, e in zip(device_calls, emulated_calls)), (device_calls, emulated_calls)
    html = (out / "report.html").read_text()
    assert "On the device" in html and "Cycles unavailable" in html
    cmp = subprocess.run([EDGEKIT, "compare", str(out), str(out), "--html", str(out / "compare.html")],
                         capture_output=True, text=True, timeout=300)
    assert cmp.returncode == 0, cmp.stderr
    page = (out / "compare.html").read_text()
    assert "tiny@m7:mps2-an500" in page and "emulated board behind a pseudo-terminal" in page  # a column per board


def _emulated_calls(out: Path, K: int) -> list[float]:
    """Instructions per kernel call of the emulated test firmware's first inference (runtimes/mcu.py's markers)."""
    from edgekit.runtimes.qemu import run_elf

    rep = json.loads((out / "report.json").read_text())
    run = run_elf(out / "firmware" / "firmware.elf", rep["build"]["board"])
    counts = run.marker_counts[:K + 2]
    return [b - a for a, b in zip(counts[:K], counts[1:K + 1])]


@pytest.mark.parametrize("target, board", [("cortex-m4", "mps2-an386"), ("cortex-m33", "mps2-an505"),
                                           ("cortex-m55", "mps3-an547")])
def test_other_cores_over_the_link(tmp_path, target, board):
    """Every emulated Cortex-M board runs the device firmware (the M55's with its Helium kernels), bit-exact."""
    out = tmp_path / target
    api.compile(make_tiny(n=6), target, out, quantize="int8")
    with _serve(out, board) as qemu:
        art = api.profile(out, device=qemu.port, board=board, flash_method="none")
    dev = art.report["measured"]["devices"][board]
    assert dev["outputs_match"] and dev["max_abs_err_lsb"] == 0 and dev["test_inputs"] == 6
    assert dev["cycles"] is None and not dev["cycles_available"]


def test_cycle_path_on_riscv_where_mcycle_counts_instructions(tmp_path):
    """QEMU virt with -icount shift=0: mcycle advances one per instruction, so the device's cycles per kernel call
    must equal the plugin's instruction counts of the same run (up to the marker's own few instructions)."""
    out = tmp_path / "rv"
    api.compile(make_tiny(), "esp32-c3", out, quantize="int8")
    with _serve(out, "virt-rv32imc-icount", count_instructions=True) as qemu:
        art = api.profile(out, device=qemu.port, board="virt-rv32imc-icount", flash_method="none", samples=1)
    rep = art.report
    dev = rep["measured"]["devices"]["virt-rv32imc-icount"]
    assert dev["outputs_match"] and dev["cycles_available"] and dev["test_inputs"] == 1
    K = len(rep["build"]["step_layers"])
    plugin = [b - a for a, b in zip(qemu.marker_counts[:K], qemu.marker_counts[1:K + 1])]
    layer_cycles = [row["cycles"] for row in dev["layers"]]
    assert len(layer_cycles) == K  # one call per layer in this model
    assert all(abs(c - p) <= 32 for c, p in zip(layer_cycles, plugin)), (layer_cycles, plugin)
    assert dev["cycles_per_instruction"] == pytest.approx(1.0, rel=0.01)
    assert dev["latency_ms"] == pytest.approx(dev["cycles"] / 160e6 * 1e3)
    assert "cycles" in dev["estimate_error"]
    assert all(row.get("cycles_per_instruction") == pytest.approx(1.0, rel=0.05) for row in dev["layers"])


def test_step_program_over_the_link(tmp_path):
    """A recurrent step program: one request carries a whole test sequence; the device resets, runs every step and
    answers with the output after the last one and the cycles summed over the steps."""
    from test_recurrent_mcu import Classifier, _layers, _model

    layers, final_state = _layers("gru")
    out = tmp_path / "gru"
    api.compile(_model(Classifier(layers, final_state), "gru"), "cortex-m7", out, quantize="int8")
    with _serve(out, "mps2-an500") as qemu:
        art = api.profile(out, device=qemu.port, board="mps2-an500", flash_method="none")
    dev = art.report["measured"]["devices"]["mps2-an500"]
    assert dev["outputs_match"] and dev["max_abs_err_lsb"] == 0 and dev["test_inputs"] == 6
    assert art.report["measured"]["instructions"]  # the emulated figures were measured first


def test_device_refuses_bad_requests_and_stays_in_step(m7_build):
    """The firmware's side of a bad link: a corrupted request, one too long and one of the wrong size are each
    refused with a reason, and the next request is answered as if nothing had happened. (The too-long request's
    payload is zeros: the firmware hunts through it for the next sync, which zeros never contain.)"""
    x = np.load(m7_build / "reference.npz")["x_device"]
    good = x[0].tobytes()
    with _serve(m7_build, "mps2-an500") as qemu, devlink.Link(qemu.port) as link:
        info = link.hello(timeout_s=60)
        frame = bytearray(devlink.encode("R", 99, good))
        frame[-1] ^= 0xFF  # the CRC no longer matches
        for raw, reason in ((bytes(frame), "bad checksum"),
                            (devlink.encode("R", 98, bytes(len(good) + 200)), "longer than the model's input"),
                            (devlink.encode("R", 97, good[:-1]), "wrong size")):
            link._port.write(raw)
            with pytest.raises(DeviceError, match=reason):
                link.answer(0, timeout_s=60)
        first = link.run(good, info, timeout_s=60)
        again = link.run(good, info, timeout_s=60)
    assert first.status == 0 and first.output == again.output


def test_baud_rate_is_compiled_into_the_firmware(m7_build):
    rep = json.loads((m7_build / "report.json").read_text())
    default = board_runtime.device_firmware(m7_build, rep, "mps2-an500")
    assert "-DEK_UART_BAUD=115200u" in (default.parent / "build.txt").read_text()
    fast = board_runtime.device_firmware(m7_build, rep, "mps2-an500", baud=921600)  # rebuilt in place
    assert fast == default and "-DEK_UART_BAUD=921600u" in (fast.parent / "build.txt").read_text()
    with serve_pty(fast, "mps2-an500") as qemu:
        art = api.profile(m7_build, device=qemu.port, board="mps2-an500", flash_method="none", baud=921600,
                          samples=2)
    dev = art.report["measured"]["devices"]["mps2-an500"]
    assert dev["baud"] == 921600 and dev["outputs_match"] and dev["test_inputs"] == 2
    assert "-DEK_UART_BAUD=921600u" in (m7_build / dev["firmware"]).with_name("build.txt").read_text()


def test_the_wrong_model_on_the_board_is_caught(m7_build, tmp_path):
    other = tmp_path / "other"
    api.compile(make_tiny(seed=1), "cortex-m7", other, quantize="int8")
    with _serve(other, "mps2-an500") as qemu:  # the board runs `other`; the user profiles m7_build
        proc = subprocess.run([EDGEKIT, "profile", str(m7_build), "--device", qemu.port, "--board", "mps2-an500",
                               "--flash", "none"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == DeviceError.exit_code
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "runs another model" in lines[0] and "--flash auto" in lines[0]


# ---- flashing, boards and arguments --------------------------------------------------------------------------------

def test_flash_commands_for_each_tool():
    cortex_m, riscv = get_platform("cortex_m"), get_platform("riscv")
    h7 = cortex_m.device_board("nucleo-h743zi2")
    elf = Path("/x/firmware.elf")
    cmd = board_runtime.flash_command("pyocd", h7, elf)
    assert cmd[1:] == ["flash", "-W", "-t", "stm32h743zitx", "--format", "elf", "/x/firmware.elf"]
    assert board_runtime.flash_command("openocd", h7, elf) == [
        "openocd", "-f", "board/st_nucleo_h743zi.cfg", "-c", "program /x/firmware.elf verify reset exit"]
    nano = riscv.device_board("longan-nano")
    assert board_runtime.flash_command("dfu-util", nano, elf) == [
        "dfu-util", "-a", "0", "-s", "0x08000000:leave", "-D", "/x/firmware.bin"]
    with pytest.raises(UsageError, match="no pyOCD target"):
        board_runtime.flash_command("pyocd", nano, elf)
    an500 = cortex_m.device_board("mps2-an500")
    assert board_runtime.choose_flash("auto", an500) == "none"
    with pytest.raises(UsageError, match="emulated"):
        board_runtime.choose_flash("pyocd", an500)
    assert board_runtime.choose_flash("auto", h7) == "pyocd"  # installed by the set-up
    with pytest.raises(UsageError, match="--flash jlink"):
        board_runtime.choose_flash("jlink", h7)


def test_flashing_without_a_probe_is_a_clear_error(tmp_path):
    elf = tmp_path / "firmware.elf"
    elf.write_bytes(b"\x7fELF")
    h7 = get_platform("cortex_m").device_board("nucleo-h743zi2")
    with pytest.raises(DeviceError, match="pyocd found no ST-LINK/V3 .* for nucleo-h743zi2: connect the board"):
        board_runtime.flash("pyocd", h7, elf, timeout_s=120)


def test_device_firmware_for_each_development_board_builds(m7_build):
    """The real boards' firmware (UART, DWT, caches, linker regions) compiles and links with the model's flags;
    running it needs the board."""
    rep = json.loads((m7_build / "report.json").read_text())
    elf = board_runtime.device_firmware(m7_build, rep, "nucleo-h743zi2")
    assert elf.is_file() and elf.with_suffix(".hex").is_file() and elf.with_suffix(".bin").is_file()
    assert "0x08000000" in (elf.parent / "link.ld").read_text().lower()
    built = elf.stat().st_mtime_ns
    assert board_runtime.device_firmware(m7_build, rep, "nucleo-h743zi2") == elf
    assert elf.stat().st_mtime_ns == built  # up to date: not rebuilt
    with pytest.raises(UsageError, match="has a cortex-m4 core"):
        board_runtime.device_firmware(m7_build, rep, "nucleo-l476rg")
    assert not (m7_build / "device" / "nucleo-l476rg").exists()
    assert not [p for p in (m7_build / "device").iterdir() if p.name.startswith(".")]  # no half-written folder


def test_longan_nano_firmware_builds(tmp_path):
    out = tmp_path / "gd"
    art = api.compile(make_tiny(n=4), "gd32vf103", out, quantize="int8", run_firmware=False)
    elf = board_runtime.device_firmware(out, art.report, None)  # the profile's development board
    assert elf.parent.name == "longan-nano" and elf.with_suffix(".bin").is_file()


@pytest.mark.parametrize("args, code, message", [
    (["--board", "mps2-an500"], UsageError.exit_code, "go with --device"),
    (["--device", "/dev/edgekit-no-such-port", "--board", "mps2-an500"], DeviceError.exit_code,
     "cannot open /dev/edgekit-no-such-port"),
    (["--device", "/dev/null", "--board", "no-such-board"], UsageError.exit_code, "unknown board 'no-such-board'"),
    (["--device", "/dev/null", "--board", "mps2-an500", "--flash", "pyocd"], UsageError.exit_code, "is emulated"),
    (["--device", "/dev/null", "--board", "mps2-an500", "--baud", "4000000"], UsageError.exit_code,
     "takes at most 1,562,500 baud"),
])
def test_profile_device_argument_errors(m7_build, args, code, message):
    proc = subprocess.run([EDGEKIT, "profile", str(m7_build), *args], capture_output=True, text=True, timeout=300)
    assert proc.returncode == code, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0]


def test_firmware_too_large_for_the_board_leaves_nothing(tmp_path, monkeypatch):
    out = tmp_path / "gd"
    art = api.compile(make_tiny(n=4), "gd32vf103", out, quantize="int8", run_firmware=False)
    riscv = get_platform("riscv")
    real = riscv.device_board("longan-nano")
    monkeypatch.setattr(type(riscv), "device_board", lambda self, name: {**real, "ram_size": 0x400})
    with pytest.raises(ToolchainError, match="device firmware for longan-nano: .* too large for the board's RAM"):
        board_runtime.device_firmware(out, art.report, "longan-nano")
    assert not (out / "device" / "longan-nano").exists()
    assert not list((out / "device").iterdir())
