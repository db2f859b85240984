"""Bare-metal board support for edgekit's Cortex-M firmware: the boards in ``targets/mcu/platforms/cortex_m/boards.toml`` and the
C and linker templates in this folder.

Sits in ``targets/`` (Model -> Artifact): the Cortex-M target writes these files next to the generated model code and
builds one ELF with ``arm-none-eabi-gcc``; ``edgekit.runtimes.qemu`` runs that ELF. What a program gets
(``ek_board.h``, ``ek_semihost.h``): ``main`` is called after reset with the FPU on, its return value becomes QEMU's
exit status, text and hex dumps go out over semihosting, faults are reported on one line, ``ek_marker()`` marks
points for the instruction counter and ``ek_stack_high_water()`` measures the stack.

Typical build (what ``tests/test_qemu_runtime.py`` does)::

    support = write_board_support("mps2-an500", build_dir, stack_bytes=8192)
    arm-none-eabi-gcc <gcc_flags(board)> -O2 -I<support.include_dir> main.c <support.sources>
                      <link_flags(support.linker_script)> -o fw.elf
"""
from __future__ import annotations

import functools
import shutil
import tomllib
from dataclasses import dataclass
from pathlib import Path

import jinja2

from edgekit.errors import UsageError

BOARD_DIR = Path(__file__).resolve().parent
BOARDS_TOML = BOARD_DIR.parent / "boards.toml"
SOURCES = ("ek_startup.c", "ek_semihost.c", "ek_mem.c")
HEADERS = ("ek_board.h", "ek_semihost.h")
DEFAULT_STACK_BYTES = 16 * 1024

# Code generation that must hold for every file in the firmware, the board files included:
# -fno-tree-loop-distribute-patterns stops GCC from turning copy/zero loops into memcpy/memset calls inside
# memcpy/memset themselves; sections per function/object let the linker drop unused code (--gc-sections).
_COMMON_CFLAGS = ("-ffunction-sections", "-fdata-sections", "-fno-tree-loop-distribute-patterns")


@dataclass(frozen=True)
class BoardSupport:
    """The board files written for one firmware build: compile ``sources`` with ``-I include_dir`` and link with
    ``link_flags(linker_script)``."""

    board: str
    linker_script: Path
    sources: tuple[Path, ...]
    include_dir: Path
    stack_bytes: int


@functools.cache
def _boards() -> dict[str, dict]:
    with BOARDS_TOML.open("rb") as f:
        return tomllib.load(f)


def board_names() -> tuple[str, ...]:
    """The boards edgekit can build firmware for and run under QEMU."""
    return tuple(_boards())


def board_info(board: str) -> dict:
    """Everything ``boards.toml`` says about ``board`` (QEMU machine, CPU, GCC flags, memory regions), as a new dict."""
    boards = _boards()
    if board not in boards:
        raise UsageError(f"unknown board {board!r}; known boards: {', '.join(boards)} (targets/mcu/platforms/cortex_m/boards.toml)")
    info = dict(boards[board])
    info["name"] = board
    info["gcc_flags"] = list(info["gcc_flags"])
    return info


def gcc_flags(board: str) -> list[str]:
    """Flags every compile and the link step of a firmware for ``board`` need: CPU, instruction set, float ABI and
    FPU, plus the code-generation flags the board files rely on. Optimisation level is the caller's choice."""
    return board_info(board)["gcc_flags"] + list(_COMMON_CFLAGS)


def link_flags(linker_script: str | Path) -> list[str]:
    """Link flags for a firmware: no start files or default libraries (the board files provide the start-up code and
    memcpy/memset), the rendered linker script, unused sections dropped, then newlib's libm/libc (for math functions
    such as expf) and libgcc (for soft double arithmetic on single-precision FPUs) as needed."""
    return ["-nostdlib", f"-T{linker_script}", "-Wl,--gc-sections",
            "-Wl,--start-group", "-lm", "-lc", "-lgcc", "-Wl,--end-group"]


def render_linker_script(board: str, stack_bytes: int = DEFAULT_STACK_BYTES) -> str:
    """The linker script for ``board`` with a stack of ``stack_bytes`` at the bottom of RAM."""
    info = board_info(board)
    if stack_bytes <= 0 or stack_bytes % 8:
        raise UsageError(f"stack size must be a positive multiple of 8 bytes, got {stack_bytes}")
    if stack_bytes >= info["ram_size"]:
        raise UsageError(f"a {stack_bytes}-byte stack does not fit the {info['ram_size']}-byte RAM of {board}")
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(BOARD_DIR), undefined=jinja2.StrictUndefined,
                             keep_trailing_newline=True)
    return env.get_template("link.ld.j2").render(
        board=board, cpu=info["cpu"], stack_bytes=stack_bytes,
        boot_origin=info.get("boot_origin"), boot_size=info.get("boot_size"),
        code_origin=info["code_origin"], code_size=info["code_size"],
        ram_origin=info["ram_origin"], ram_size=info["ram_size"])


def write_board_support(board: str, out_dir: str | Path, stack_bytes: int = DEFAULT_STACK_BYTES) -> BoardSupport:
    """Write the linker script for ``board`` and copy the board's C sources and headers into ``out_dir``, so the
    firmware folder builds on its own."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    script = out / "link.ld"
    script.write_text(render_linker_script(board, stack_bytes))
    for name in SOURCES + HEADERS:
        shutil.copyfile(BOARD_DIR / name, out / name)
    return BoardSupport(board=board, linker_script=script, sources=tuple(out / name for name in SOURCES),
                        include_dir=out, stack_bytes=stack_bytes)
