"""Typed records an MCU build hands on: to the report (``report["build"]``, docs/report.md) and to the runtime
(runtimes/mcu.py reads them back with :meth:`McuBuild.from_json`).

Where it sits: targets/mcu, between the pipeline (pipeline.py) and the runtime. The JSON form keeps the flat keys
report.json has always had (``board``, ``arena_bytes``, ``elf_*_bytes``, ``model_flash_bytes``, ``streaming``, ...).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any


@dataclass
class StreamingInfo:
    """A streaming step program: what the firmware runs per step and keeps between steps."""

    steps_per_sequence: int
    input_shape: list[int]
    state_bytes: int
    states: list[dict[str, Any]]      # name, layer, kind, elements, dtype, bytes
    event_units: int                  # EGRU units (their events are counted per step)
    cells: list[dict[str, Any]]       # layer, op, hidden
    int8_scheme: dict | None = None
    conv_stream: dict | None = None   # a conv model streamed frame by frame: edgekit/convstream.py's plan


@dataclass
class ElfFacts:
    """What the built ELF says: section sizes, model flash (the firmware minus test data and harness), static RAM,
    the deepest stack frames."""

    firmware: str
    elf_sections: dict[str, int]
    elf_text_bytes: int
    elf_rodata_bytes: int
    elf_data_bytes: int
    elf_bss_bytes: int
    test_data_bytes: int
    model_flash_bytes: int
    elf_arena_bytes: int
    static_ram_bytes: int
    stack_frames: dict[str, int]
    elf_state_bytes: int = 0
    stack_static_bytes: int = 0          # the deepest call chain from main (GCC's call graph and frames)
    stack_static_chain: list[str] = field(default_factory=list)


@dataclass
class McuBuild:
    """What an MCU build learned: where it runs, its kernel calls (one entry per call, in order — the runtime pairs
    them with the instruction counter's markers), memory and, once compiled, the ELF's facts."""

    platform: str
    board: str
    qemu_machine: str
    cpu: str
    dtype: str
    kernels: str
    tvm_kernels: int
    steps: int
    arena_bytes: int
    state_bytes: int
    step_layers: list[str]
    step_macs: list[int]
    step_kernels: list[str]
    step_cost_terms: list[list]
    step_estimated_instructions: list[float]
    weight_bytes: int
    layer_weights: list[dict[str, Any]]
    stack_reserved_bytes: int
    test_inputs: int
    cflags: str
    streaming: StreamingInfo | None = None
    elf: ElfFacts | None = None
    # A nested image (targets/mcu/nested.py): per operating point, narrowest first — width, its kernel calls (as
    # step_layers etc. above, which describe the widest), arena, shared and own weight bytes, estimate, accuracy.
    operating_points: list[dict[str, Any]] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("streaming", "elf", "extra")}
        d["streaming"] = asdict(self.streaming) if self.streaming is not None else None
        if self.elf is not None:
            d.update(asdict(self.elf))
        else:
            d["firmware"] = None
        d.update(self.extra)
        return d

    @classmethod
    def from_json(cls, d: dict) -> "McuBuild":
        own = {f.name for f in fields(cls)} - {"streaming", "elf", "extra"}
        elf_keys = {f.name for f in fields(ElfFacts)}
        kw = {k: d[k] for k in own if k in d}
        stream = d.get("streaming")
        kw["streaming"] = StreamingInfo(**stream) if stream else None
        kw["elf"] = ElfFacts(**{k: d[k] for k in elf_keys if k in d}) if d.get("firmware") else None
        kw["extra"] = {k: v for k, v in d.items() if k not in own | elf_keys | {"streaming"}}
        return cls(**kw)
