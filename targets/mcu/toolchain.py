"""The cross-compiler: compile the firmware, read its sizes and stack usage.

Where it sits: the last step of the MCU pipeline; the platform record (targets/mcu/platforms) names the compiler and
binutils (arm-none-eabi-*, riscv64-unknown-elf-*). Every object is compiled on its own (so ``-fstack-usage`` writes
one .su file per source) and linked with the board's linker script. Sizes come from ``size -A`` and ``nm``; stack
from the .su files (per function; the report shows the deepest kernel + driver chain).
"""
from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from edgekit.errors import ToolchainError

OPT_FLAGS = ["-O2", "-std=c11", "-g0", "-Wall", "-Wno-unused-variable", "-Wno-unused-but-set-variable",
             "-Wno-unused-function", "-fno-common", "-ffile-prefix-map=/=/"]


def _run(cmd: list[str], cwd: Path, what: str) -> str:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        over = re.search(r"region `(\w+)' overflowed by (\d+) bytes", proc.stderr)
        if over:
            raise ToolchainError(f"{what}: the firmware is {int(over[2]):,} B too large for the board's "
                                 f"{over[1]} memory; quantize (--quantize int8) or shrink the model")
        lines = proc.stderr.splitlines()
        first = next((ln for ln in lines if "undefined reference" in ln or "multiple definition" in ln), None) or \
            next((ln for ln in lines if "error" in ln and "collect2" not in ln), None) or \
            next((ln for ln in lines if "error" in ln), proc.stderr.strip()[:300])
        raise ToolchainError(f"{what} failed in {cwd}: {first.strip()}")
    return proc.stdout


@dataclass
class ElfSizes:
    text: int
    rodata: int
    data: int
    bss: int
    symbols: dict[str, int] = field(default_factory=dict)  # name -> size, for the largest objects

    @property
    def flash(self) -> int:
        return self.text + self.rodata + self.data

    @property
    def ram(self) -> int:
        return self.data + self.bss


def compile_firmware(platform, sources: list[Path], include_dirs: list[Path], cflags: list[str],
                     ldflags: list[str], build_dir: Path, elf: Path) -> None:
    platform.require_toolchain()
    build_dir, elf = build_dir.resolve(), elf.resolve()
    sources = [Path(s).resolve() for s in sources]
    include_dirs = [Path(d).resolve() for d in include_dirs]
    ldflags = [f"-T{Path(f[2:]).resolve()}" if f.startswith("-T") else f for f in ldflags]
    objdir = build_dir / "obj"
    objdir.mkdir(parents=True, exist_ok=True)
    objects = []
    incs = [f"-I{d}" for d in include_dirs]
    stems = [src.stem for src in sources]
    for src in sources:  # a nested image has one edgekit_model.c per operating point (src/op0/, src/op1/ ...)
        obj = objdir / ((src.stem if stems.count(src.stem) == 1 else f"{src.parent.name}_{src.stem}") + ".o")
        _run([platform.compiler, *cflags, *OPT_FLAGS, "-fstack-usage", "-fcallgraph-info=su", *incs, "-c",
              str(src), "-o", str(obj)],
             build_dir, f"compiling {src.name}")
        objects.append(str(obj))
    _run([platform.compiler, *cflags, *objects, *ldflags, "-o", str(elf)], build_dir, "linking the firmware")


def elf_sizes(elf: Path, platform) -> ElfSizes:
    elf = Path(elf).resolve()
    out = _run([platform.size_tool, "-A", str(elf)], elf.parent, platform.size_tool)
    sec = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].startswith(".") and parts[1].isdigit():
            sec[parts[0]] = int(parts[1])
    text = sum(v for k, v in sec.items() if k in (".text", ".vectors", ".isr_vector") or k.startswith(".text"))
    rodata = sum(v for k, v in sec.items() if k.startswith(".rodata"))
    data = sum(v for k, v in sec.items() if k.startswith(".data"))
    bss = sum(v for k, v in sec.items() if k.startswith(".bss"))  # the .stack reservation is reported apart
    nm = _run([platform.nm_tool, "-S", "--size-sort", str(elf)], elf.parent, platform.nm_tool)
    symbols = {}
    for line in nm.splitlines():
        parts = line.split()
        if len(parts) == 4:
            symbols[parts[3]] = int(parts[1], 16)
    return ElfSizes(text, rodata, data, bss, symbols)


def section_table(elf: Path, platform) -> dict[str, int]:
    elf = Path(elf).resolve()
    out = _run([platform.size_tool, "-A", str(elf)], elf.parent, platform.size_tool)
    table = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].startswith(".") and parts[1].isdigit() and int(parts[1]):
            table[parts[0]] = int(parts[1])
    return table


_SU = re.compile(r"^(?P<loc>.+?):(?P<fn>[^:\s]+)\s+(?P<bytes>\d+)\s+(?P<kind>\S+)")


_CI_NODE = re.compile(r'node: \{ title: "(?P<fn>[^"]+)" label: "[^"]*?\\n(?P<bytes>\d+) bytes')
_CI_EDGE = re.compile(r'edge: \{ sourcename: "(?P<src>[^"]+)" targetname: "(?P<dst>[^"]+)"')


def deepest_stack(build_dir: Path, root: str = "main") -> tuple[int, list[str]]:
    """The deepest call chain from ``root`` and its stack bytes, from the call graphs GCC wrote beside the objects
    (``-fcallgraph-info=su``: each function's frame and the functions it calls directly). Functions without a
    frame in the graph (the C library's) count 0; a recursive call is not followed. (0, []) without the graphs."""
    frames: dict[str, int] = {}
    calls: dict[str, set[str]] = {}
    for ci in sorted((build_dir / "obj").glob("*.ci")):
        text = ci.read_text(errors="replace")
        for m in _CI_NODE.finditer(text):
            frames[m["fn"]] = max(frames.get(m["fn"], 0), int(m["bytes"]))
        for m in _CI_EDGE.finditer(text):
            calls.setdefault(m["src"], set()).add(m["dst"])
    if root not in frames:
        return 0, []
    best: dict[str, tuple[int, list[str]]] = {}

    def walk(fn: str, path: frozenset) -> tuple[int, list[str]]:
        if fn in best:
            return best[fn]
        deepest = (0, [])
        for callee in sorted(calls.get(fn, ())):
            if callee not in path:
                deepest = max(deepest, walk(callee, path | {callee}), key=lambda t: t[0])
        best[fn] = (frames.get(fn, 0) + deepest[0], [fn.rsplit(":", 1)[-1], *deepest[1]])  # (static: "file:fn")
        return best[fn]

    return walk(root, frozenset({root}))


def stack_usage(build_dir: Path) -> dict[str, int]:
    """Function -> bytes of its own frame, from the .su files GCC wrote."""
    out = {}
    for su in sorted((build_dir / "obj").glob("*.su")):
        for line in su.read_text().splitlines():
            m = _SU.match(line.strip())
            if m:
                out[m["fn"]] = max(out.get(m["fn"], 0), int(m["bytes"]))
    return out
