"""The RISC-V platform (targets/mcu/platforms/riscv): RV32 firmware built with riscv64-unknown-elf-gcc + picolibc runs
on QEMU's virt machine for every core the platform emulates, reports its output, exit status and traps, and the
MCU target builds real models for the RISC-V profiles bit-exact to the same references as on Cortex-M.

Everything here runs the real cross-compiler and qemu-system-riscv32 (scripts/setup.sh installs them).
"""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

import edgekit
from edgekit.errors import DoesNotFitError, FirmwareError
from edgekit.runtimes.qemu import run_elf
from edgekit.targets.mcu.platforms.riscv import PLATFORM

BOARDS = ("virt-rv32imc", "virt-rv32imac", "virt-rv32imafc")
PROFILES = {"esp32-c3": "virt-rv32imc", "gd32vf103": "virt-rv32imac", "ch32v307": "virt-rv32imafc"}

PROGRAM = r"""
#include "ek_board.h"
#include "ek_semihost.h"

/* Exactly two instructions per iteration: addi, bnez. */
#define SPIN(n) do { unsigned k_ = (n); __asm__ volatile("1: addi %0, %0, -1\n\tbnez %0, 1b\n" : "+r"(k_)); } while (0)

static volatile float a = 1.5f, b = 2.25f;
static int initialised = 42;      /* .data */
static unsigned char zeroed[1000];  /* .bss */
volatile unsigned sink;

int main(void)
{
    ek_print("float*1000=");
    ek_print_i32((int)((a * b + 0.5f) * 1000.0f));   /* 3875: FPU or soft float */
    ek_print(" data=");
    ek_print_u32((unsigned)initialised);
    ek_print(" bss=");
    ek_print_u32(zeroed[999]);
    ek_print(" stack=");
    ek_print_u32(ek_stack_size());
    ek_puts("");
#if TRAP
    __asm__ volatile(".word 0");  /* an illegal instruction */
#endif
    ek_marker();
    SPIN(N);
    ek_marker();
    SPIN(2 * N);
    ek_marker();
    return EXIT_STATUS;
}
"""


def _build(board: str, folder: Path, trap: bool, status: int = 0) -> Path:
    support = PLATFORM.write_board_support(board, folder / "board", stack_bytes=4096)
    main = folder / "main.c"
    main.write_text(PROGRAM)
    elf = folder / "fw.elf"
    cmd = [PLATFORM.compiler, *PLATFORM.cflags(board), "-O2", "-g", "-Wall", "-Werror", f"-DTRAP={int(trap)}",
           f"-DEXIT_STATUS={status}", "-DN=1000",
           f"-I{support.include_dir}", str(main), *map(str, support.sources), *PLATFORM.link_flags(support.linker_script),
           "-o", str(elf)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return elf


@pytest.mark.parametrize("board", BOARDS)
def test_firmware_runs_and_reports_traps(board, tmp_path):
    run = run_elf(_build(board, tmp_path, trap=False), board, timeout_s=30, count_instructions=True,
                  platform=PLATFORM)
    assert run.exit_code == 0, run.output
    assert "float*1000=3875 data=42 bss=0 stack=4096" in run.output
    first, second = run.between_markers()
    assert second - first == 2 * 1000  # exact counts: 1000 more iterations of 2 instructions
    (tmp_path / "status").mkdir()
    with pytest.raises(FirmwareError, match=rf"exited with status 7 on {board}"):
        run_elf(_build(board, tmp_path / "status", trap=False, status=7), board, timeout_s=30, platform=PLATFORM)
    (tmp_path / "trap").mkdir()
    with pytest.raises(FirmwareError, match=rf"on {board} .*trap at pc=0x[0-9a-f]{{8}} in main\(\) "
                                            r"\(illegal instruction"):
        run_elf(_build(board, tmp_path / "trap", trap=True), board, timeout_s=30, platform=PLATFORM)


@pytest.mark.parametrize("target, quantize", [("esp32-c3", "int8"), ("ch32v307", None), ("gd32vf103", "int8")])
def test_models_run_bit_exact_on_risc_v(target, quantize, tmp_path):
    """digits-cnn in int8 on the rv32imc and rv32imac cores (edgekit's kernels on their portable path) and in float32
    on the rv32imafc core (its FPU): outputs equal the host references, accuracy and fidelity as on Cortex-M."""
    art = edgekit.compile("digits-cnn", target, tmp_path / "out", quantize=quantize)
    assert art.report["build"]["platform"] == "riscv" and art.report["build"]["board"] == PROFILES[target]
    m = edgekit.profile(tmp_path / "out").report["measured"]
    assert m["outputs_match"] and m["fidelity"]["ok"] and m["accuracy"] >= 0.98, m["fidelity"]
    assert m["instructions"] > 0 and m["fits_measured"]


def test_recurrent_step_program_on_risc_v(tmp_path):
    edgekit.compile("digits-gru", "esp32-c3", tmp_path / "out", quantize="int8")
    rep = edgekit.profile(tmp_path / "out").report
    m = rep["measured"]
    assert m["outputs_match"] and m["accuracy"] >= 0.97
    # a 1.3 KB SRAM model: the stack is most of what is not the arena, so it comes from the firmware's call graph
    b = rep["build"]
    assert b["stack_static_chain"][0] == "main" and b["stack_static_bytes"] > 0
    assert "deepest call chain" in rep["estimate"]["formulas"]["peak_sram_bytes"]
    assert abs(rep["estimate"]["peak_sram_bytes"] - m["sram_bytes"]) <= 0.05 * m["sram_bytes"]


def test_too_big_for_the_32_kb_part_is_one_line(tmp_path):
    with pytest.raises(DoesNotFitError) as e:
        edgekit.compile("mbv2-w035", "gd32vf103", tmp_path / "out", quantize="int8")
    assert "does not fit gd32vf103" in str(e.value) and "try" in str(e.value) and "\n" not in str(e.value)
    # the parts that hold what this build needs are named, the one it does not fit is not
    msg = str(e.value)
    assert "a part with more memory" in msg and "-t esp32-c3 (4 MiB flash" in msg and "-t gd32vf103" not in msg
    assert "-t ch32v307" not in msg                          # 256 KB of flash: too small for 1.8 MB
    assert not (tmp_path / "out").exists()


def test_every_board_has_a_profile():
    assert set(PLATFORM.boards()) == set(BOARDS) == set(PROFILES.values())


def test_grouped_convs_are_priced_as_convs_on_risc_v(tmp_path):
    # ShuffleNet's 1x1 convs in 4 groups run edgekit's scalar conv kernel once a group (ek_kernels.grouped_1x1_steps;
    # TVM's conv loops per group before, which priced as depthwise were +28 % off): priced by the conv's own terms
    edgekit.compile("zoo-shufflenet", "esp32-c3", tmp_path / "out", quantize="int8")
    rep = edgekit.profile(tmp_path / "out").report
    m = rep["measured"]
    assert m["outputs_match"]
    terms = [t for layer, t in zip(rep["build"]["step_layers"], rep["build"]["step_cost_terms"])
             if layer == "features.1.g1.0"]
    assert [t[0] for t in terms] == ["conv2d_int8_rv"] * 4
    assert abs(rep["estimate"]["instructions"] - m["instructions"]) <= 0.10 * m["instructions"]


def test_fc_channel_pairs_only_where_the_part_has_flash_to_spare(tmp_path):
    # a 256 -> 200 layer: 51 KB in one byte a weight, 102 KB in channel pairs; the gd32vf103 has 128 KB of flash
    import torch
    import torch.nn as nn

    from edgekit.model import Model
    from edgekit.targets.mcu import kernel_pack

    torch.manual_seed(0)
    module = nn.Sequential(nn.Linear(256, 200), nn.ReLU(), nn.Linear(200, 10)).eval()
    x = torch.randn(16, 256)
    model = Model.from_module(module, x[:1], name="mlp", calib=x.numpy(), test_x=x[:2].numpy())
    small = edgekit.compile(model, "gd32vf103", tmp_path / "small", quantize="int8")
    big = edgekit.compile(model, "esp32-c3", tmp_path / "big", quantize="int8")
    # esp32-c3 (4 MB) takes the pairs' 51 KB more; the gd32vf103 keeps one byte a weight
    assert big.report["build"]["model_flash_bytes"] > small.report["build"]["model_flash_bytes"] + 40_000
    assert small.report["build"]["model_flash_bytes"] < 100 * 1024
    assert kernel_pack.rv_fc_pairs_apply(256, 200)                   # the rule alone would pair it
    m = edgekit.profile(tmp_path / "small").report["measured"]
    assert m["outputs_match"]
