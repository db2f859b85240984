"""The Cortex-M platform of the MCU target: Arm Cortex-M4/M7/M33/M55 on QEMU's MPS2/MPS3 boards.

Where it sits: a :class:`~edgekit.targets.mcu.platforms.Platform` record the MCU core (targets/mcu) reads. Here:

* ``boards.toml``  the boards QEMU 7.2 emulates (machine, CPU, GCC flags, memory regions, with their sources)
* ``board/``       bare-metal board support: vector table and reset handler (FPU/MVE on), one-line fault reports,
                   link.ld.j2; and the ISA-neutral files RISC-V shares: ek_crt.c (stack painting, .data/.bss,
                   main, ``ek_marker()`` for the instruction counter), semihosting I/O, memcpy/memset, ek_board.h
* ``kernels/``     edgekit's int8 kernels: ``ek_nn_s8`` (register-blocked SMLAD micro-kernels on cores with the DSP
                   extension, a portable C path elsewhere; ``ek_nn_s8_mve.c`` its Helium paths for the M55, chosen
                   by the board's ``kernel_isa``) and ``ek_sparse_s8`` (compressed weights)

Toolchain: Debian's arm-none-eabi-gcc 12 with newlib (no start files: the board files provide them).
"""
from __future__ import annotations

import re
from pathlib import Path

from edgekit.targets.mcu.platforms import CodeSizeModel, Platform

HERE = Path(__file__).resolve().parent

# Names of the Configurable Fault Status Register bits (Armv7-M/Armv8-M ARM, CFSR = MMFSR | BFSR << 8 | UFSR << 16).
_CFSR_BITS = {
    0: "IACCVIOL: instruction fetch from a no-execute region", 1: "DACCVIOL: data access violation",
    3: "MUNSTKERR", 4: "MSTKERR", 5: "MLSPERR", 8: "IBUSERR: instruction fetch bus error",
    9: "PRECISERR: data bus error", 10: "IMPRECISERR: imprecise data bus error", 11: "UNSTKERR",
    12: "STKERR: bus error while stacking", 13: "LSPERR", 16: "UNDEFINSTR: undefined instruction",
    17: "INVSTATE: invalid execution state (e.g. a branch to an ARM-mode address)",
    18: "INVPC: invalid exception return", 19: "NOCP: coprocessor (FPU/MVE) disabled or absent",
    20: "STKOF: stack overflow (stack pointer went below the stack limit)", 24: "UNALIGNED: unaligned access",
    25: "DIVBYZERO: integer division by zero",
}
_HFSR_BITS = {1: "VECTTBL: bus fault reading the vector table", 30: "FORCED: escalated from a configurable fault"}


def _qemu_option_value(path: Path) -> str:
    return str(path).replace(",", ",,")  # QEMU's option syntax escapes a comma by doubling it


class CortexM(Platform):
    def link_flags(self, linker_script) -> list[str]:
        """No start files or default libraries (the board files provide start-up code and memcpy/memset), the
        rendered linker script, unused sections dropped, then newlib's libm/libc (math functions such as expf) and
        libgcc (soft double arithmetic on single-precision FPUs) as needed."""
        return ["-nostdlib", f"-T{linker_script}", "-Wl,--gc-sections",
                "-Wl,--start-group", "-lm", "-lc", "-lgcc", "-Wl,--end-group"]

    def emulator_command(self, board: str, elf: Path, semihost_file: Path | None = None) -> list[str]:
        info = self.board_info(board)
        cmd = [self.emulator, "-M", info["qemu_machine"]]
        if info.get("qemu_cpu"):
            cmd += ["-cpu", info["qemu_cpu"]]
        if semihost_file is None:  # output on the terminal
            return cmd + ["-nographic", "-monitor", "none", "-serial", "none",
                          "-semihosting-config", "enable=on,target=native", "-kernel", str(elf)]
        return cmd + ["-nographic", "-monitor", "none",
                      "-chardev", f"file,id=semihost,path={_qemu_option_value(semihost_file)}",
                      "-semihosting-config", "enable=on,target=native,chardev=semihost", "-kernel", str(elf)]

    def serial_command(self, board: str, elf: Path) -> list[str]:
        info = self.board_info(board)
        return [self.emulator, "-M", info["qemu_machine"]] + (["-cpu", info["qemu_cpu"]] if info.get("qemu_cpu")
                                                              else []) + \
            ["-nographic", "-monitor", "none", "-serial", "pty", "-kernel", str(elf)]

    def fault_message(self, fault_line: str, function_at) -> str:
        """``EK_FAULT <name> pc=... cfsr=... hfsr=...`` (ek_startup.c) with the fault status bits spelled out."""
        fields = dict(re.findall(r"(\w+)=(\S+)", fault_line))
        name = fault_line.split()[1] if len(fault_line.split()) > 1 else "fault"
        where = ""
        if fields.get("pc", "unknown") != "unknown":
            pc = int(fields["pc"], 16)
            function = function_at(pc)
            where = f" at pc=0x{pc:08x}" + (f" in {function}()" if function else "")
        elif "sp" in fields:
            where = f" with the stack pointer at {fields['sp']}, outside RAM (a stack overflow?)"
        cfsr = int(fields.get("cfsr", "0"), 16)
        hfsr = int(fields.get("hfsr", "0"), 16)
        reasons = [text for bit, text in _CFSR_BITS.items() if cfsr >> bit & 1]
        reasons += [text for bit, text in _HFSR_BITS.items() if hfsr >> bit & 1]
        if cfsr >> 15 & 1 and "bfar" in fields:
            reasons.append(f"bus fault address {fields['bfar']}")
        if cfsr >> 7 & 1 and "mmfar" in fields:
            reasons.append(f"memory-manage fault address {fields['mmfar']}")
        if int(fields.get("sfsr", "0"), 16):
            reasons.append(f"sfsr={fields['sfsr']}")
        detail = f"cfsr={fields.get('cfsr', '?')} hfsr={fields.get('hfsr', '?')}"
        if reasons:
            detail += ": " + "; ".join(reasons)
        return f"{name}{where} ({detail})"

    def tvm_target(self, cpu: str) -> dict:
        return {"kind": "c", "mcpu": cpu}


PLATFORM = CortexM(
    name="cortex_m",
    description="Arm Cortex-M",
    compiler="arm-none-eabi-gcc", size_tool="arm-none-eabi-size", nm_tool="arm-none-eabi-nm",
    emulator="qemu-system-arm",
    install_hint="install it with: sudo apt-get install -y gcc-arm-none-eabi libnewlib-arm-none-eabi "
                 "binutils-arm-none-eabi qemu-system-arm (or run scripts/setup.sh)",
    board_dir=HERE / "board", boards_toml=HERE / "boards.toml",
    board_sources=("ek_startup.c", "ek_crt.c", "ek_semihost.c", "ek_mem.c"),
    board_headers=("ek_board.h", "ek_semihost.h"),
    kernel_sources={"ek_nn_s8": (HERE / "kernels" / "ek_nn_s8.h", HERE / "kernels" / "ek_nn_s8.c",
                                 HERE / "kernels" / "ek_nn_s8_mve.c"),
                    "ek_sparse_s8": (HERE / "kernels" / "ek_sparse_s8.h", HERE / "kernels" / "ek_sparse_s8.c")},
    libc="newlib",
    # Thumb-2 at -O2, fitted by `bench/estimators.py --fit-code` (non-negative least squares, relative error) to 13
    # cortex-m7 ELFs (digits-cnn, mbv2-w035 and four synthetic CNNs; int8 and float32; edgekit and TVM kernels;
    # patched and not): max error 4.8 %. edgekit's kernels by kind: arm-none-eabi-size of ek_nn_s8.o /
    # ek_sparse_s8.o per function group (-O2, gc-sections keeps only the kinds a model uses); a TVM recurrent cell
    # ~600 B (bench/recurrent.py ELFs).
    code_size=CodeSizeModel(
        base=2299, per_step=45, per_dltensor=64, per_dim=0, per_tvm_conv=456, per_tvm_kernel=150, per_tvm_cell=600,
        # (ek_conv: 4,500 before the 1x1 record stream and the rows9 im2col paths, 7,734 B with them: arm-none-eabi-nm
        # of digits-cnn's M7 ELF; ek_dw: 4,400 before the unrolled channels-last 3x3 kernel, which added 2,588 B: 7,000; the 1x3 / 3x1 /
        # 5x5 row kernels, the group-per-call row loop and the no-clamp stores added 4,652 B: 11,650, of which a
        # firmware links only the parts its calls run (pipeline.firmware_cflags; .text of mbv2-w035's M7 ELF built
        # with each EK_NN_NO_DW* define: the row kernels 3x3 2,752 B, 1x3 / 3x1 1,240 B, 5x5 1,616 B, the unrolled
        # channels-last 3x3 pixel 3,120 B; the entry point and the generic paths 2,922 B; the pairs layout's C driver,
        # fallback and plane builder 1,920 B and each of its asm functions ~600 B: arm-none-eabi-size of ek_nn_s8.o;
        # a conv's FC-rows path (FLAG_CONV_FC, left out unless a call takes it) 922 B of ek_conv2d_s8, plus the FC code;
        # a row's last 1-3 outputs as one more step inside the row kernels: 3x3 +1,528 B, 1x3 +976 B, arm-none-eabi-nm
        # of ek_nn_s8.o before and after; the stride-2 5x5 row kernels +1,052 B, the 5x5 kernels' last 1-3 outputs in
        # the call +1,260 B; weights stored widened, FLAG_WIDE_WEIGHTS, +128 B of ek_conv2d_s8 and its geometry;
        # the channels-last pixel kernels in asm for the border pixels too (3x2, 2x3, 2x2 taps inside the map) and
        # for 5x5 kernels on maps at most 3 wide: 3x3 8 functions 2,862 B + their tables and dispatch 188 B (the C
        # unrolled border pixels 2 KB gone), 5x5 8 functions 2,918 B + 32 B, arm-none-eabi-nm of ek_nn_s8.o; the
        # conv's small-window im2col (3x3 rows of 1-channel inputs, border windows gathered) +1,210 B, the add's
        # one-SMLAD loops +256 B; ek_pool_s8's global average in int32-widened chunks +456 B, the M7 ELFs of the zoo;
        # then each asm function a firmware's calls may not run left out apart (pipeline.firmware_cflags), so these
        # parts come off their kind: the 3x3 row kernels per stride and clamp (758 / 652 no-clamp at stride 1, 794 /
        # 688 at stride 2), the channels-last 3x3 pixel kernels with the clamp 1,464 + 94 B of table, without 1,398 +
        # 94 (5x5: half of 2,950 each), the conv's block kernels (with the clamp 618, without 590, raw 450 — left
        # out, the portable loop inlined instead, +344), the FC's raw block 1,080, the add's four SMLAD loops (154,
        # 174 with the clamp, 120 / 136 with short multipliers), the chunked global pool 412: arm-none-eabi-nm of
        # patched mbv2-w035's M7 ELF, 47.6 -> 41.0 KB of code; then the channels-last layout's C path left out when no
        # call is channels-last (EK_NN_NO_DW_CHANNELS) and the generic ring path when every call takes a fast one
        # (EK_NN_NO_DW_RING): the entry point alone 188 B, with the channels-last path 2,442 B (mbv2-w035), with the
        # ring path 2,860 B (ShuffleNet), with both 4,454 B: arm-none-eabi-nm of the M7 ELFs; the one-channel 3x3
        # path, FLAG_CONV_C1: its C driver 1,556 B + 20 B of ek_conv2d_s8's dispatch, its asm pixel and row loops
        # with the clamp 232 + 340 B, without 68 + 184 B: arm-none-eabi-size of ek_nn_s8.o, -ffunction-sections; the
        # 1xK depthwise row kernel: its driver 784 B + its asm with the clamp 352 B and without 312 B,
        # arm-none-eabi-nm of the M7 kernel bench)
        ek_kernel_bytes={"ek_conv": 7754, "ek_gemm_fast": 618, "ek_gemm_fast_nc": 590, "ek_gemm_raw": 106,
                         "ek_conv_fc": 922, "ek_conv_c1_path": 1576, "ek_conv_c1": 572, "ek_conv_c1_nc": 252,
                         "ek_dw": 190, "ek_dw_channels": 2250, "ek_dw_ring": 2300, "ek_dw_rows": 1388, "ek_dw_rows_s1": 758,
                         "ek_dw_rows_s1_nc": 652, "ek_dw_rows_s2": 794, "ek_dw_rows_s2_nc": 688, "ek_dw_1x3": 2216,
                         "ek_dw_1xk": 1448,
                         "ek_dw_5x5": 3940, "ek_dw_ch3x3": 1558, "ek_dw_ch3x3_nc": 1492, "ek_dw_ch5x5": 1475,
                         "ek_dw_ch5x5_nc": 1475, "ek_dw_chk1": 400, "ek_dw_pairs": 1920, "ek_dw_pairs_s1": 600,
                         "ek_dw_pairs_s1_nc": 584, "ek_dw_pairs_s2": 612, "ek_dw_pairs_s2_nc": 596,
                         "ek_fc": 2720, "ek_fc_raw": 1080, "ek_sconv": 3800, "ek_sfc": 600,
                         # Helium (ek_nn_s8_mve.c, arm-none-eabi-nm of M55 firmware: digits-cnn, kws-dscnn): the
                         # entry point and its set-up per kind, the GEMM and its two block kernels shared by conv/FC;
                         # the block kernels for a last block of 1-3 channels (predicated stores) and their call 674
                         # B more, where the C loop they replaced took 442 B of the GEMM (arm-none-eabi-nm, -O2)
                         "ek_conv_mve": 1940, "ek_dw_mve": 2140, "ek_fc_mve": 162, "ek_gemm_mve": 1740,
                         "ek_mve_part": 674,
                         # the int8 add and pooling: their scalar paths (always linked), the Helium loops; the
                         # add's SMLAD loops (2 x ~160 B asm) and the SIMD pooling loops (arm-none-eabi-nm, M7 -O2:
                         # ek_add_s8 + ek__add4{,_clamp} 932 B, ek_pool_s8 1,634 B, 680 B more with the 2x2 / 3x3
                         # max pools' row driver and asm kernels, ek__maxpool_rows, ek__max{2x2,3x3}_row),
                         # ek_lut_s8 + its row 150 B,
                         # ek_concat_s8 306 B, 520 B with its LDM/STM rows)
                         "ek_add": 604, "ek_add4": 154, "ek_add4_clamp": 174, "ek_add4s": 120, "ek_add4s_clamp": 136,
                         "ek_add_mve": 306, "ek_pool": 1678, "ek_maxrows": 680, "ek_gap": 412, "ek_pool_mve": 744,
                         "ek_lut": 150, "ek_lutc": 218, "ek_bilinear": 548,
                         "ek_concat": 520, "ek_mul": 922,  # ek_mul_s8 782 B + its column loop 140 B
                         "ek_transpose": 644,  # ek_transpose_s8 with its 4- and 2-row loops, arm-none-eabi-nm of the M7 ELF
                         "ek_upsample": 1072},  # ek_upsample_s8 and its word copies (arm-none-eabi-nm, U-Net's M7)
        ek_struct_bytes={"ek_conv": 108, "ek_dw": 108, "ek_fc": 52, "ek_sconv": 112, "ek_sfc": 60},
        board_ram_bytes=512,          # the fault handler's own stack (board/ek_startup.c)
        stack_estimate_bytes=600,     # harness + driver + kernel frames, as the firmware's painted stack reports
        libc_reent_bytes=1068),       # newlib's impure_data (1,064 B) + _impure_ptr, linked with libm's errno
)
