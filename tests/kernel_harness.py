"""Build and run edgekit's int8 Cortex-M kernels on test cases: under QEMU (through runtimes/qemu.py and the board
files of targets/mcu/platforms/cortex_m/board) or natively with the host compiler (the portable C path).

Used by tests/test_dsp_kernels.py (bit-exactness against edgekit.intref) and bench/kernels.py (instruction counts).
A case is a packed layer (targets/mcu/kernel_pack.py), an input buffer and the size of the output buffer; all
cases go into one binary blob that tests/firmware/nn_kernels_main.c walks, so one firmware build covers many shapes.
"""
from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgekit.targets.mcu.kernel_pack import PackedLayer

REPO = Path(__file__).resolve().parents[1]
KERNEL_DIR = REPO / "targets" / "mcu" / "platforms" / "cortex_m" / "kernels"
FIRMWARE_DIR = Path(__file__).resolve().parent / "firmware"
SENTINEL = 0x5A  # what the runner fills output buffers with before each call
_OPS = {"conv2d": 0, "depthwise_conv2d": 1, "fully_connected": 2, "add": 3, "pool": 4, "lut": 5, "mul": 6,
        "transpose": 7, "upsample": 8}


@dataclass
class Case:
    """One kernel call: ``input`` is the whole input buffer (int8, rows at the layer's row stride; an add's two
    operands one after the other)."""

    name: str
    layer: PackedLayer
    input: np.ndarray
    output_bytes: int


@dataclass
class CaseResult:
    rc: int
    output: np.ndarray  # int8, the whole output buffer
    instructions: int | None  # executed between the markers around the call (QEMU only)


def _align(blob: bytearray, n: int = 8) -> None:
    blob.extend(b"\0" * (-len(blob) % n))


def build_blob(cases: list[Case]) -> bytes:
    """The binary case table nn_kernels_main.c reads (format in its header comment)."""
    header_words = 4 + 12 * len(cases)
    blob = bytearray(4 * header_words)
    table = []
    for case in cases:
        def put(data: np.ndarray | None) -> int:
            if data is None:
                return -1
            _align(blob)
            offset = len(blob)
            blob.extend(np.ascontiguousarray(data).tobytes())
            return offset
        layer = case.layer
        entry = [_OPS[layer.kind], len(layer.params), put(layer.param_words()), put(layer.weights),
                 put(layer.bias), put(layer.requant), put(case.input.astype(np.int8)), case.output_bytes,
                 layer.scratch_bytes, 0, 0, 0]
        table.append(entry)
    max_scratch = max([c.layer.scratch_bytes for c in cases] + [0])
    max_out = max([c.output_bytes for c in cases] + [0])
    words = [0x4E4E4B45, len(cases), max_scratch, max_out] + [w for e in table for w in e]
    blob[: 4 * header_words] = np.array(words, dtype=np.int32).tobytes()
    _align(blob)
    return bytes(blob)


def _parse(output: str, cases: list[Case], counts: tuple[int, ...] | None) -> list[CaseResult]:
    results = []
    lines = [line for line in output.splitlines() if line.startswith("case ")]
    if len(lines) != len(cases) or "done" not in output:
        raise RuntimeError(f"runner printed {len(lines)} of {len(cases)} cases; output tail: {output[-500:]}")
    for i, (line, case) in enumerate(zip(lines, cases)):
        parts = line.split()
        hexdata = parts[5] if len(parts) > 5 else ""
        out = np.frombuffer(bytes.fromhex(hexdata), dtype=np.int8)
        instructions = None
        if counts:
            instructions = counts[2 * i]
        results.append(CaseResult(rc=int(parts[3]), output=out, instructions=instructions))
    return results


def run_on_qemu(cases: list[Case], board: str, build_dir: Path, opt: str = "-O2",
                extra_cflags: tuple[str, ...] = (), count_instructions: bool = True,
                timeout_s: float = 120.0) -> list[CaseResult]:
    """Build the runner with the kernels for ``board`` and run all cases under QEMU."""
    from edgekit.runtimes.qemu import run_elf
    from edgekit.targets.mcu.platforms import get_platform

    # an Arm board (boards of platforms/cortex_m) or an RV32 one (platforms/riscv: the kernels' portable path)
    PLATFORM = get_platform("riscv" if board.startswith("virt-") else "cortex_m")
    build_dir = Path(build_dir)
    support = PLATFORM.write_board_support(board, build_dir, stack_bytes=16 * 1024)
    (build_dir / "cases.bin").write_bytes(build_blob(cases))
    elf = build_dir / "nn_kernels.elf"
    cmd = [PLATFORM.compiler, *PLATFORM.cflags(board), opt, "-std=c11", "-Wall", "-Wextra", "-Werror",
           *extra_cflags, f"-I{support.include_dir}", f"-I{KERNEL_DIR}", f"-Wa,-I{build_dir}",
           str(FIRMWARE_DIR / "nn_kernels_main.c"), str(FIRMWARE_DIR / "cases_blob.S"),
           str(KERNEL_DIR / "ek_nn_s8.c"), str(KERNEL_DIR / "ek_nn_s8_mve.c"), *map(str, support.sources), *PLATFORM.link_flags(support.linker_script),
           "-o", str(elf)]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    run = run_elf(elf, board, timeout_s=timeout_s, count_instructions=count_instructions, platform=PLATFORM)
    counts = run.between_markers() if count_instructions else None
    return _parse(run.output, cases, counts)


def run_on_host(cases: list[Case], build_dir: Path, extra_cflags: tuple[str, ...] = ()) -> list[CaseResult]:
    """Build the runner with the host compiler (portable C kernels) and run all cases natively."""
    build_dir = Path(build_dir)
    build_dir.mkdir(parents=True, exist_ok=True)
    blob = build_dir / "cases.bin"
    blob.write_bytes(build_blob(cases))
    exe = build_dir / "nn_kernels_host"
    cmd = ["gcc", "-O2", "-std=c11", "-Wall", "-Wextra", "-Werror", "-DEK_HOST", *extra_cflags,
           f"-I{KERNEL_DIR}", str(FIRMWARE_DIR / "nn_kernels_main.c"), str(KERNEL_DIR / "ek_nn_s8.c"),
           str(KERNEL_DIR / "ek_nn_s8_mve.c"), "-o", str(exe)]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    result = subprocess.run([str(exe), str(blob)], capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise RuntimeError(f"host runner exited {result.returncode}: {result.stdout[-500:]} {result.stderr[-500:]}")
    return _parse(result.stdout, cases, None)


def expected_buffer(window: np.ndarray, row_stride: int, total_bytes: int) -> np.ndarray:
    """The output buffer a kernel should leave: ``window`` ([rows, cols...] int8) at ``row_stride``, sentinel
    bytes everywhere else."""
    buf = np.full(total_bytes, SENTINEL, dtype=np.uint8).view(np.int8)
    rows = window.reshape(window.shape[0], -1)
    for r in range(rows.shape[0]):
        buf[r * row_stride: r * row_stride + rows.shape[1]] = rows[r]
    return buf


def place_rows(window: np.ndarray, row_stride: int, total_bytes: int, fill: int = 0) -> np.ndarray:
    """An input buffer with ``window`` rows at ``row_stride`` (other bytes ``fill``)."""
    buf = np.full(total_bytes, fill, dtype=np.int8)
    rows = window.reshape(window.shape[0], -1)
    for r in range(rows.shape[0]):
        buf[r * row_stride: r * row_stride + rows.shape[1]] = rows[r]
    return buf
