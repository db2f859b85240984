"""Microcontroller architectures as platforms of the one MCU target (targets/mcu).

Where it sits: the MCU core (program, step programs, memory plan, patch schedule, TVM kernels, code generation, the
build pipeline) is the same for every architecture; what differs is a :class:`Platform` record, one per folder here:

* ``cortex_m/``  Arm Cortex-M (M4, M7, M33, M55): arm-none-eabi-gcc + newlib, QEMU's MPS2/MPS3 boards, edgekit's
                 DSP (SMLAD) int8 kernels
* ``riscv/``     RV32 microcontrollers (when installed): riscv64-unknown-elf-gcc + picolibc, QEMU's ``virt`` board

A platform says how to compile and link (toolchain and flags per board), what board support a firmware needs
(startup code, linker script, semihosting I/O, the ``ek_marker`` the instruction counter watches), how to run it
under an emulator and read its faults, which C files implement edgekit's int8 kernel API (``ek_nn_s8.h``), which
TVM ``c`` target its cores take, and its code-size constants. A target profile names its platform
(``[board] platform = "cortex_m"``) and board (``qemu_board``). The registry is :data:`PLATFORMS`.
"""
from __future__ import annotations

import functools
import importlib
import shutil
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import jinja2

from edgekit.errors import ToolchainError, UsageError

# platform name -> module whose ``PLATFORM`` is its record. The whole registry.
PLATFORMS = {
    "cortex_m": "edgekit.targets.mcu.platforms.cortex_m",
    "riscv": "edgekit.targets.mcu.platforms.riscv",
}

# Code generation that must hold for every file of a firmware, the board files included: GCC must not turn
# copy/zero loops into memcpy/memset calls inside memcpy/memset themselves; sections per function/object let the
# linker drop unused code (--gc-sections).
COMMON_CFLAGS = ("-ffunction-sections", "-fdata-sections", "-fno-tree-loop-distribute-patterns")
DEFAULT_STACK_BYTES = 16 * 1024
# A device firmware's own board files (edgekit profile --device: runtimes/board.py), ISA-neutral
DEVICE_BOARD_DIR = Path(__file__).resolve().parent / "cortex_m" / "board"
DEVICE_BOARD_FILES = ("ek_device.c", "ek_link.c", "ek_device.h", "ek_link.h")


@dataclass(frozen=True)
class CodeSizeModel:
    """Bytes of machine code a build adds beyond its constant arrays, at -O2 (fitted per platform by
    ``bench/estimators.py --fit-code`` to built ELFs): board support + harness, the driver's cost per call and per
    tensor descriptor, each distinct TVM kernel, edgekit's kernels by kind (only the kinds a model uses are linked)
    and the parameter struct each micro-kernel call keeps in flash; a program run from a call table
    (codegen.uses_call_table) pays a row per call and the driver loop instead of the per-call code."""

    base: int
    per_step: int
    per_dltensor: int
    per_dim: int
    per_tvm_conv: int
    per_tvm_kernel: int
    per_tvm_cell: int
    ek_kernel_bytes: dict[str, int] = field(default_factory=dict)
    ek_struct_bytes: dict[str, int] = field(default_factory=dict)
    table_driver_bytes: int = 630     # the call-table driver loop, ek_run (templates/call_table.c.j2; M7 ELFs:
    #                                   kws-dscnn 632 B, mbv2-w035 patched 676 B, unpatched 352 B)
    board_ram_bytes: int = 0          # RAM the board support keeps for itself (fault handler's stack)
    stack_estimate_bytes: int = 600   # deepest stack of harness + driver + kernel frames
    libc_reent_bytes: int = 0         # C library data linked when float kernels call libm (errno)


@dataclass(frozen=True)
class BoardSupport:
    """The board files written for one firmware build: compile ``sources`` with ``-I include_dir`` and link with
    ``Platform.link_flags(linker_script)``."""

    board: str
    linker_script: Path
    sources: tuple[Path, ...]
    include_dir: Path
    stack_bytes: int


@dataclass(frozen=True)
class Platform:
    """One microcontroller architecture: the data the MCU core needs, and the few steps that differ (the methods a
    platform overrides: :meth:`emulator_command`, :meth:`fault_message`, :meth:`tvm_target`)."""

    name: str
    description: str
    compiler: str                        # the cross-compiler (gcc driver)
    size_tool: str
    nm_tool: str
    emulator: str                        # the QEMU system emulator
    install_hint: str                    # how to get the toolchain and emulator (one line)
    board_dir: Path                      # board support files and link.ld.j2
    boards_toml: Path                    # the boards this platform emulates (regions, flags, QEMU machine)
    board_sources: tuple[str | Path, ...]  # names in board_dir, or paths of files shared with another platform
    board_headers: tuple[str | Path, ...]
    # edgekit's int8 kernel libraries: API header stem (what the driver includes: "ek_nn_s8", "ek_sparse_s8") ->
    # the files that implement it on this platform (headers and C, copied into OUT/src)
    kernel_sources: dict[str, tuple[Path, ...]]
    libc: str                            # the C library the firmware links ("newlib", "picolibc")
    code_size: CodeSizeModel
    fault_exit_code: int = 0xFA          # the firmware's exit status after it reported a fault

    # ---- boards --------------------------------------------------------------------------------------------------
    def boards(self) -> dict[str, dict]:
        return _read_toml(self.boards_toml)

    def board_info(self, board: str) -> dict:
        """Everything the boards file says about ``board`` (QEMU machine, CPU, flags, memory regions)."""
        boards = self.boards()
        if board not in boards:
            raise UsageError(f"unknown board {board!r} for {self.name}; known boards: {', '.join(boards)} "
                             f"({self.boards_toml})")
        info = dict(boards[board])
        info["name"] = board
        info["gcc_flags"] = list(info["gcc_flags"])
        return info

    # ---- toolchain -------------------------------------------------------------------------------------------------
    def tools(self) -> tuple[str, ...]:
        return self.compiler, self.size_tool, self.nm_tool

    def have_toolchain(self) -> bool:
        return all(shutil.which(t) for t in self.tools())

    def require_toolchain(self) -> None:
        missing = [t for t in self.tools() if not shutil.which(t)]
        if missing:
            raise ToolchainError(f"{', '.join(missing)} not found; the C sources were written, but the firmware "
                                 f"needs the {self.description} cross-compiler: {self.install_hint}")

    def cflags(self, board: str) -> list[str]:
        """Flags every compile and the link of a firmware for ``board`` need: CPU/ISA, float ABI, FPU, plus the
        code-generation flags the board files rely on. The optimisation level is the caller's."""
        return self.board_info(board)["gcc_flags"] + list(COMMON_CFLAGS)

    def link_flags(self, linker_script: str | Path) -> list[str]:
        raise NotImplementedError(f"platform {self.name} must say how it links")  # every platform overrides it

    def kernel_isa(self, board: str) -> str:
        """Which layouts of edgekit's int8 kernels ``board``'s core runs fastest (kernel_pack.ISAS): the boards
        file's ``kernel_isa`` (``mve`` for Helium cores), else ``dsp`` (the SMLAD kernels, or their portable C twin
        on cores without the DSP extension)."""
        return str(self.board_info(board).get("kernel_isa", "dsp"))

    def kernel_defines(self, board: str) -> list[str]:
        """Preprocessor definitions that select the kernel library's code path for ``board``'s core."""
        return []

    # ---- board support ---------------------------------------------------------------------------------------------
    def linker_context(self, info: dict) -> dict:
        """Variables of link.ld.j2 beyond board, cpu and stack size."""
        return {k: info.get(k) for k in ("boot_origin", "boot_size", "code_origin", "code_size", "ram_origin",
                                         "ram_size")}

    def render_linker_script(self, board: str, stack_bytes: int = DEFAULT_STACK_BYTES,
                             info: dict | None = None) -> str:
        """link.ld for ``board`` (an emulated board of boards.toml, or with ``info`` a device board's record)."""
        info = info or self.board_info(board)
        if stack_bytes <= 0 or stack_bytes % 8:
            raise UsageError(f"stack size must be a positive multiple of 8 bytes, got {stack_bytes}")
        if stack_bytes >= info["ram_size"]:
            raise UsageError(f"a {stack_bytes}-byte stack does not fit the {info['ram_size']}-byte RAM of {board}")
        env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(self.board_dir)),
                                 undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
        return env.get_template("link.ld.j2").render(board=board, cpu=info["cpu"], stack_bytes=stack_bytes,
                                                     **self.linker_context(info))

    def board_files(self, device: bool = False) -> list[Path]:
        """The board support files a firmware is built with (sources and headers); with ``device`` also the UART,
        cycle counter and serial protocol of a device firmware (shared by every platform, in cortex_m/board)."""
        files = [name if isinstance(name, Path) else self.board_dir / name  # a name in board_dir, or a shared path
                 for name in self.board_sources + self.board_headers]
        return files + ([DEVICE_BOARD_DIR / name for name in DEVICE_BOARD_FILES] if device else [])

    def write_board_support(self, board: str, out_dir: str | Path, stack_bytes: int = DEFAULT_STACK_BYTES,
                            device: dict | None = None) -> BoardSupport:
        """Write the linker script for ``board`` and copy the board's C sources and headers into ``out_dir``, so
        the firmware folder builds on its own. ``device``: a device board's record (:meth:`device_board`), whose
        regions the linker script takes and whose firmware needs the device files too."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        script = out / "link.ld"
        script.write_text(self.render_linker_script(board, stack_bytes, info=device))
        files = self.board_files(device=device is not None)
        for src in files:
            shutil.copyfile(src, out / src.name)
        return BoardSupport(board=board, linker_script=script,
                            sources=tuple(out / f.name for f in files if f.suffix == ".c"),
                            include_dir=out, stack_bytes=stack_bytes)

    # ---- device boards (a board behind a serial port: runtimes/board.py) -------------------------------------------
    def device_boards(self) -> dict[str, dict]:
        """The boards of ``devboards.toml`` beside ``boards.toml`` (development boards, and emulated boards with
        their UART on a host pseudo-terminal)."""
        path = self.boards_toml.parent / "devboards.toml"
        return _read_toml(path) if path.exists() else {}

    def device_board(self, board: str) -> dict:
        """Everything about device board ``board``: its own keys, and for an emulated board also the CPU, flags and
        memory regions of the boards.toml entry it runs on (``layout``)."""
        boards = self.device_boards()
        if board not in boards:
            raise UsageError(f"unknown board {board!r} for {self.name}; boards: {', '.join(boards)} "
                             f"(edgekit boards lists them)")
        info = dict(boards[board])
        if info.get("emulated"):
            info = {**self.board_info(info["layout"]), **info}
        info["name"] = board
        info["gcc_flags"] = list(info["gcc_flags"])
        return info

    def device_defines(self, info: dict) -> list[str]:
        """The -D flags that select a device board's UART, cycle counter and set-up in board/ek_device.c."""
        flags = ["-DEK_DEVICE=1", f"-DEK_UART_{info['uart'].upper()}=1", f"-DEK_UART_BASE=0x{info['uart_base']:x}u",
                 f"-DEK_UART_CLOCK_HZ={int(figure(info['uart_clock_hz']))}u", f"-DEK_UART_BAUD={int(info['baud'])}u",
                 f"-DEK_CYCLES_{info['cycle_counter'].upper()}=1"]
        if not info.get("emulated"):
            flags.append("-DEK_BOARD_" + info["name"].upper().replace("-", "_") + "=1")
        for key, define in (("dwt_unlock", "EK_DWT_UNLOCK"), ("caches", "EK_ENABLE_CACHES"),
                            ("mcountinhibit", "EK_MCOUNTINHIBIT"), ("boot_alias", "EK_BOOT_ALIAS")):
            if info.get(key):
                flags.append(f"-D{define}=1")
        return flags

    @property
    def objcopy_tool(self) -> str:
        return self.compiler[: -len("gcc")] + "objcopy"

    # ---- running it ------------------------------------------------------------------------------------------------
    def emulator_command(self, board: str, elf: Path, semihost_file: Path | None = None) -> list[str]:
        """The QEMU command line that boots ``elf`` on ``board`` with semihosting output into ``semihost_file``
        (None: on the terminal, as the generated Makefile's ``make run``); the runtime appends the
        instruction-count plugin."""
        raise NotImplementedError(f"platform {self.name} must say how it runs")  # every platform overrides it

    def serial_command(self, board: str, elf: Path) -> list[str]:
        """The QEMU command line that boots a device firmware (runtimes/board.py) on ``board`` with its first UART
        on a new host pseudo-terminal (``-serial pty``) and no semihosting."""
        raise NotImplementedError(f"platform {self.name} must say how it runs")  # every platform overrides it

    def fault_message(self, fault_line: str, function_at) -> str:
        """One line for a fault the firmware reported (``EK_FAULT ...``); ``function_at(address)`` names code."""
        return fault_line

    def tvm_target(self, cpu: str) -> dict:
        """The TVM ``c`` target (dict form) for ``cpu``."""
        return {"kind": "c", "mcpu": cpu}


def figure(value) -> float:
    """The number of a board figure, written ``{ value, source }`` or bare."""
    return value["value"] if isinstance(value, dict) else value


@functools.cache
def _read_toml(path: Path) -> dict:
    with open(path, "rb") as f:
        return tomllib.load(f)


def get_platform(name: str | None) -> Platform:
    """The platform record called ``name`` (a profile's ``platform``)."""
    module = PLATFORMS.get(name or "")
    if module is None:
        raise UsageError(f"unknown microcontroller platform {name!r}; platforms: {', '.join(PLATFORMS)} "
                         "(set [board] platform in the target profile)")
    try:
        return importlib.import_module(module).PLATFORM
    except ModuleNotFoundError as e:
        if e.name != module:
            raise
        raise UsageError(f"platform {name!r} is not part of this edgekit installation") from e


def platform_of(profile) -> Platform:
    return get_platform(profile.platform)
