"""Firmware built with the Cortex-M board files (targets/mcu/platforms/cortex_m/board) runs on every emulated board, and
edgekit.runtimes.qemu reports its output, exit status, faults, hangs and exact instruction counts.

Each test compiles a small C program with the real arm-none-eabi-gcc and runs it in qemu-system-arm.
"""
from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest

from edgekit.errors import FirmwareError, ToolchainError
from edgekit.runtimes import qemu
from edgekit.runtimes.qemu import QemuRun, check_tools, run_elf
from edgekit.targets.mcu.platforms.cortex_m import PLATFORM

BOARDS = ("mps2-an500", "mps2-an386", "mps2-an505", "mps3-an547")
STACK_BYTES = 8192

pytestmark = pytest.mark.skipif(
    any(shutil.which(tool) is None for tool in ("arm-none-eabi-gcc", "arm-none-eabi-nm", "qemu-system-arm", "gcc")),
    reason="needs gcc-arm-none-eabi, libnewlib-arm-none-eabi, binutils-arm-none-eabi, qemu-system-arm and gcc")


@pytest.fixture(scope="module")
def board_objects(tmp_path_factory):
    """Board files compiled once per board: {board: (include_dir, linker_script, [object files])}."""
    built = {}
    for board in BOARDS:
        support = PLATFORM.write_board_support(board, tmp_path_factory.mktemp(board), stack_bytes=STACK_BYTES)
        objects = []
        for source in support.sources:
            obj = source.with_suffix(".o")
            _gcc(board, ["-c", f"-I{support.include_dir}", str(source), "-o", str(obj)])
            objects.append(str(obj))
        built[board] = (support.include_dir, support.linker_script, objects)
    return built


def _gcc(board: str, args: list[str]) -> None:
    cmd = ["arm-none-eabi-gcc", *PLATFORM.cflags(board), "-O2", "-g", "-Wall", "-Wextra", "-Werror", *args]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        pytest.fail(f"compile failed: {' '.join(cmd)}\n{result.stderr}")


def build(board_objects, board: str, folder: Path, source: str, *defines: str) -> Path:
    include_dir, linker_script, objects = board_objects[board]
    main = folder / "main.c"
    main.write_text(source)
    elf = folder / f"{board}.elf"
    _gcc(board, [*(f"-D{d}" for d in defines), f"-I{include_dir}", str(main), *objects,
                 *PLATFORM.link_flags(linker_script), "-o", str(elf)])
    return elf


HELLO = r"""
#include "ek_board.h"
#include "ek_semihost.h"

static volatile float a = 1.5f, b = 2.25f;
static volatile double c = 0.1;
static int initialised = 42;      /* .data */
static uint8_t zeroed[300000];    /* .bss */

__attribute__((noinline)) static uint32_t use_stack(void)
{
    volatile uint8_t local[2048];
    for (uint32_t i = 0; i < sizeof local; i++) local[i] = (uint8_t)i;
    return local[100];
}

int main(void)
{
    ek_puts("hello from " BOARD);
    float product = a * b + 0.5f;                  /* 3.875 on the FPU */
    ek_print("float*1000=");
    ek_print_i32((int32_t)(product * 1000.0f));
    ek_print(" double*1e6=");
    ek_print_i32((int32_t)(c * 3.0 * 1e6 + 0.5));  /* 300000 */
    ek_print(" negative=");
    ek_print_i32(-2147483647 - 1);
    ek_puts("");
    ek_print("data=");
    ek_print_u32((uint32_t)initialised);
    ek_print(" bss=");
    ek_print_u32(zeroed[sizeof zeroed - 1]);
    ek_puts("");
    static const uint8_t bytes[] = {0x00, 0xff, 0x10, 0xab};
    ek_print("hex=");
    ek_print_hex(bytes, sizeof bytes);
    ek_puts("");
    ek_write("nul:a\0b\n", 8);
    uint32_t before = ek_stack_high_water();
    use_stack();
    uint32_t after = ek_stack_high_water();
    ek_print("stack_before=");
    ek_print_u32(before);
    ek_print(" stack_after=");
    ek_print_u32(after);
    ek_print(" stack_size=");
    ek_print_u32(ek_stack_size());
    ek_puts("");
    return EXIT_STATUS;
}
"""


def _fields(output: str) -> dict[str, int]:
    fields = {}
    for token in output.split():
        key, _, value = token.partition("=")
        if value.lstrip("-").isdigit():
            fields[key] = int(value)
    return fields


@pytest.mark.parametrize("board", BOARDS)
def test_output_float_and_exit_status(board_objects, board, tmp_path):
    elf = build(board_objects, board, tmp_path, HELLO, f'BOARD="{board}"', "EXIT_STATUS=0")
    run = run_elf(elf, board, timeout_s=30)
    assert run.exit_code == 0
    assert run.output.startswith(f"hello from {board}\n")
    fields = _fields(run.output)
    assert fields["float*1000"] == 3875          # hard-float code ran, so the FPU is on
    assert fields["double*1e6"] == 300000
    assert fields["negative"] == -2147483648
    assert fields["data"] == 42 and fields["bss"] == 0
    assert "hex=00ff10ab\n" in run.output
    assert "nul:a\0b\n" in run.output
    assert fields["stack_size"] == STACK_BYTES
    # The high-water mark is the deepest point since reset: it grows by the 2 KiB local array, and stays in the stack.
    assert 0 < fields["stack_before"] < fields["stack_after"] < STACK_BYTES
    assert fields["stack_after"] >= 2048
    assert run.total_instructions > 0 and run.marker_counts == ()

    failing = build(board_objects, board, tmp_path, HELLO, f'BOARD="{board}"', "EXIT_STATUS=3")
    with pytest.raises(FirmwareError, match=rf"exited with status 3 on {board} \(.*\); last output: .*stack_after="):
        run_elf(failing, board, timeout_s=30)


COUNTS = r"""
#include "ek_board.h"

/* Exactly two instructions per iteration: subs, bne. */
static inline void spin(uint32_t n)
{
    __asm__ volatile("1: subs %0, %0, #1\n\tbne 1b\n" : "+r"(n) : : "cc");
}

int main(void)
{
    ek_marker();
    spin(N);
    ek_marker();
    spin(2 * N);
    ek_marker();
    spin(3 * N);
    ek_marker();
    return 0;
}
"""


@pytest.mark.parametrize("board", BOARDS)
def test_instruction_counts_are_exact_and_repeatable(board_objects, board, tmp_path):
    n = 1000
    elf = build(board_objects, board, tmp_path, COUNTS, f"N={n}")
    first = run_elf(elf, board, timeout_s=30)
    assert len(first.marker_counts) == 4
    between = first.between_markers()
    # Each region is the loop plus the same call overhead: bx lr (ek_marker), the mov that loads the
    # iteration count, and bl to the next marker -- 3 instructions in the disassembly on every board.
    assert between == (2 * n + 3, 4 * n + 3, 6 * n + 3)
    assert first.total_instructions > first.marker_counts[-1]
    again = run_elf(elf, board, timeout_s=30)
    assert again == first


# A load from an unmapped address raises a BusFault in the middle of a translation block; the handler skips the
# load and returns. Counting per block would also count the instructions after the load in the abandoned block.
EARLY_EXIT = r"""
#include "ek_board.h"

void BusFault_Handler(void) __attribute__((naked));
void BusFault_Handler(void)
{
    __asm__ volatile("ldr r0, [sp, #24]\n"     /* stacked pc: the 16-bit ldr.n below */
                     "adds r0, r0, #2\n"
                     "str r0, [sp, #24]\n"
                     "bx lr\n");
}

#define FAULTING_LOAD_THEN(adds) \
    __asm__ volatile("mov r1, #0xF0000000\n ldr.n r0, [r1]\n .rept " #adds "\n adds r0, r0, #1\n .endr\n" \
                     : : : "r0", "r1", "cc", "memory")

int main(void)
{
    ek_marker();
    FAULTING_LOAD_THEN(8);
    ek_marker();
    FAULTING_LOAD_THEN(24);
    ek_marker();
    return 0;
}
"""


@pytest.mark.parametrize("board", BOARDS)
def test_block_left_early_is_not_over_counted(board_objects, board, tmp_path):
    elf = build(board_objects, board, tmp_path, EARLY_EXIT)
    run = run_elf(elf, board, timeout_s=30)
    # bx lr (ek_marker), mov, the faulting ldr, the handler's 4 instructions, the adds, bl to the next marker.
    # (Counting per block gives (26, 58): the abandoned block's 9 or 25 remaining instructions counted twice.)
    assert run.between_markers() == (1 + 1 + 1 + 4 + 8 + 1, 1 + 1 + 1 + 4 + 24 + 1)


FAULTS = r"""
#include "ek_board.h"
#include "ek_semihost.h"

volatile uint32_t sink;

int main(void)
{
    ek_puts("about to fault");
#if KIND == 0
    __asm__ volatile("udf #0");
#else
    sink = *(volatile uint32_t *)0xF0000000u;   /* unmapped on all four boards */
#endif
    return 0;
}
"""


@pytest.mark.parametrize("board", BOARDS)
def test_faults_are_reported(board_objects, board, tmp_path):
    (tmp_path / "udf").mkdir()
    elf = build(board_objects, board, tmp_path / "udf", FAULTS, "KIND=0")
    with pytest.raises(FirmwareError, match=rf"faulted on {board} .*: UsageFault at pc=0x[0-9a-f]{{8}} in main\(\) "
                                            r".*UNDEFINSTR"):
        run_elf(elf, board, timeout_s=30)

    (tmp_path / "bus").mkdir()
    elf = build(board_objects, board, tmp_path / "bus", FAULTS, "KIND=1")
    with pytest.raises(FirmwareError, match=r"BusFault at pc=0x[0-9a-f]{8} in main\(\) .*PRECISERR.*"
                                            r"bus fault address 0xf0000000"):
        run_elf(elf, board, timeout_s=30)


HANG = r"""
#include "ek_semihost.h"

int main(void)
{
    ek_puts("spinning");
    for (;;) {
        __asm__ volatile("");
    }
}
"""


@pytest.mark.parametrize("board", BOARDS)
def test_hang_hits_the_time_limit(board_objects, board, tmp_path):
    elf = build(board_objects, board, tmp_path, HANG)
    start = time.monotonic()
    with pytest.raises(FirmwareError, match=rf"did not finish within 1 s on {board} \(.*\).*spinning"):
        run_elf(elf, board, timeout_s=1.0)
    assert time.monotonic() - start < 20  # QEMU was killed, not waited for


def test_missing_tools_name_the_package(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(ToolchainError, match=r"qemu-system-arm.*apt-get install .*qemu-system-arm"):
        check_tools()
    with pytest.raises(ToolchainError, match=r"arm-none-eabi-gcc.*gcc-arm-none-eabi"):
        check_tools(need_qemu=False)


def test_plugin_is_rebuilt_when_its_source_changes(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    source = tmp_path / "ek_icount.c"
    source.write_text(qemu.PLUGIN_SOURCE.read_text())
    monkeypatch.setattr(qemu, "PLUGIN_SOURCE", source)
    first = qemu.plugin_path()
    assert first.is_file() and qemu.plugin_path() == first
    source.write_text(source.read_text() + "\n/* changed */\n")
    second = qemu.plugin_path()
    assert second.is_file() and second != first and not first.exists()


def test_every_board_is_tested():
    assert set(PLATFORM.boards()) == set(BOARDS)
    assert QemuRun(0, "", (10, 15, 40), 50).between_markers() == (5, 25)
