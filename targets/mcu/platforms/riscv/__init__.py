"""The RISC-V platform of the MCU target: RV32 microcontroller cores (rv32imc, rv32imac, rv32imafc) on QEMU's virt.

Where it sits: a :class:`~edgekit.targets.mcu.platforms.Platform` record the MCU core (targets/mcu) reads, as
``cortex_m/`` is. Here:

* ``boards.toml``  the emulated cores (``virt`` with the extensions of each part; regions in its DRAM)
* ``board/``       bare-metal start-up (reset entry at the start of DRAM, trap reports from mcause/mepc/mtval, FPU
                   on for F cores), link.ld.j2; the rest is shared with Cortex-M (``cortex_m/board``): ek_crt.c
                   (stack painting, .data/.bss, main, ``ek_marker``), semihosting I/O (an ``#if`` for each ISA's
                   trap sequence), memcpy/memset, ek_board.h
* kernels          edgekit's int8 kernels (``cortex_m/kernels``): their scalar kernels for cores without SIMD
                   (kernel_pack isa="rv32", boards.toml's kernel_isa), the portable C path for other layouts

Toolchain: Debian's riscv64-unknown-elf-gcc 12 with picolibc (Debian's newlib has no RISC-V build); emulator:
qemu-system-riscv32 from qemu-system-misc. Recipe and pitfalls: shared/FIELD_NOTES.md ("RISC-V microcontrollers").
"""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from edgekit.targets.mcu.platforms import Platform
from edgekit.targets.mcu.platforms.cortex_m import PLATFORM as CORTEX_M

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent / "cortex_m"

# mcause exception codes (RISC-V privileged specification, table "Machine cause register values", interrupt = 0).
_MCAUSE = {0: "instruction address misaligned", 1: "instruction access fault", 2: "illegal instruction",
           3: "breakpoint", 4: "load address misaligned", 5: "load access fault", 6: "store address misaligned",
           7: "store access fault", 8: "environment call from U-mode", 11: "environment call from M-mode"}


def _qemu_option_value(path: Path) -> str:
    return str(path).replace(",", ",,")


class RiscV(Platform):
    def cflags(self, board: str) -> list[str]:
        """The board's -march/-mabi, picolibc's specs (its headers and, at the link, the multilib's libraries; GCC's
        own stdint.h includes the C library's) and the common code-generation flags."""
        return super().cflags(board) + ["--specs=picolibc.specs"]

    def link_flags(self, linker_script) -> list[str]:
        """No start files (the board files provide the reset entry), the rendered linker script, unused sections
        dropped, then picolibc's libm/libc and libgcc (soft float on cores without F)."""
        return ["-nostartfiles", f"-T{linker_script}", "-Wl,--gc-sections",
                "-Wl,--start-group", "-lm", "-lc", "-lgcc", "-Wl,--end-group"]

    def emulator_command(self, board: str, elf: Path, semihost_file: Path | None = None) -> list[str]:
        info = self.board_info(board)
        cmd = [self.emulator, "-M", info["qemu_machine"], "-cpu", info["qemu_cpu"], "-bios", "none",
               "-display", "none", "-monitor", "none", "-serial", "none"]
        if semihost_file is None:  # output on the terminal
            return cmd + ["-chardev", "stdio,id=semihost", "-semihosting-config",
                          "enable=on,target=native,chardev=semihost", "-kernel", str(elf)]
        return cmd + ["-chardev", f"file,id=semihost,path={_qemu_option_value(semihost_file)}",
                      "-semihosting-config", "enable=on,target=native,chardev=semihost", "-kernel", str(elf)]

    def serial_command(self, board: str, elf: Path) -> list[str]:
        info = self.board_info(board)
        return [self.emulator, "-M", info["qemu_machine"], "-cpu", info["qemu_cpu"], "-bios", "none", "-display",
                "none", "-monitor", "none", "-serial", "pty", "-kernel", str(elf)]

    def fault_message(self, fault_line: str, function_at) -> str:
        """``EK_FAULT Trap pc=... mcause=... mtval=...`` (board/ek_startup.c) with the cause spelled out."""
        fields = dict(re.findall(r"(\w+)=(\S+)", fault_line))
        pc = int(fields.get("pc", "0"), 16)
        function = function_at(pc)
        cause = int(fields.get("mcause", "0"), 16)
        what = _MCAUSE.get(cause, f"mcause {cause}")
        where = f" at pc=0x{pc:08x}" + (f" in {function}()" if function else "")
        return f"trap{where} ({what}, mtval={fields.get('mtval', '?')})"

    def tvm_target(self, cpu: str) -> dict:
        return {"kind": "c", "keys": ["riscv_cpu", "cpu"], "mcpu": cpu}  # FIELD_NOTES: TVM 0.27's dict form


PLATFORM = RiscV(
    name="riscv",
    description="RISC-V RV32",
    compiler="riscv64-unknown-elf-gcc", size_tool="riscv64-unknown-elf-size", nm_tool="riscv64-unknown-elf-nm",
    emulator="qemu-system-riscv32",
    install_hint="install it with: sudo apt-get install -y gcc-riscv64-unknown-elf picolibc-riscv64-unknown-elf "
                 "qemu-system-misc (or run scripts/setup.sh)",
    board_dir=HERE / "board", boards_toml=HERE / "boards.toml",
    board_sources=("ek_startup.c", SHARED / "board" / "ek_crt.c", SHARED / "board" / "ek_semihost.c",
                   SHARED / "board" / "ek_mem.c"),
    board_headers=(SHARED / "board" / "ek_board.h", SHARED / "board" / "ek_semihost.h"),
    kernel_sources={lib: (SHARED / "kernels" / f"{lib}.h", SHARED / "kernels" / f"{lib}.c")
                    for lib in ("ek_nn_s8", "ek_sparse_s8")},
    libc="picolibc",
    # edgekit's kernels by kind: riscv64-unknown-elf-nm sizes in ek_nn_s8.o / ek_sparse_s8.o per function group
    # (rv32imc, -O2). Portable path of the dsp layouts: conv 4,028 B (ek_conv2d_s8 2,272 + im2col and weight
    # helpers), depthwise 6,054 B (+ the shared checks), FC 1,966 B, sparse conv 1,754 B, sparse FC 464 B. Scalar
    # kernels (built with -DEK_NN_SCALAR_ONLY, the entry points included): conv 6,820 B (ek_conv2d_s8 with the im2col
    # 1,208, the 4x4 GEMM 3,198, its 1-3 channel tails 2,254, the 64-bit requantisation 160), depthwise 6,966 B (the
    # stride-1 and stride-2 row loops 1,968 + 1,700, the asm row loop 402, the 64-bit form's copy 2,684, the entry 212),
    # FC 4,448 B (the blocks of 16/8/4/2/1 4,166, the entry 282), FC in channel pairs 2,714 B (the blocks of 8/4/2/1
    # pairs 2,246, their requantisation loop 144, the entry 324; a firmware with both layouts links both, their sum
    # is 170 B more than it). The driver and TVM-kernel terms are not fitted to RV32 ELFs yet: Cortex-M's
    # (platforms/cortex_m), without newlib's reentrancy data (picolibc keeps errno elsewhere); `edgekit profile`
    # measures the real size. The call-table driver loop: 796 B (esp32-c3 ELF of kws-dscnn); ek_concat_s8 452 B
    # (zoo U-Net's esp32-c3 ELF).
    code_size=dataclasses.replace(
        CORTEX_M.code_size, libc_reent_bytes=0, table_driver_bytes=800,
        ek_kernel_bytes={"ek_conv": 4030, "ek_dw": 6480, "ek_fc": 1970, "ek_sconv": 1760, "ek_sfc": 470,
                         "ek_conv_rv": 6820, "ek_dw_rv": 6970, "ek_fc_rv": 4450,
                         "ek_fc_rv_pairs": 2710, "ek_concat": 452}),
)
