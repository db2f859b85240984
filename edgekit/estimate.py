"""Estimators, the part every target shares: the per-layer table, the activation arena plan and the fit check.

Where it sits: reads the deployment graph (edgekit/graph.py) and a target profile (targets/profiles/*.toml); runs
nothing. Each target turns these into its own estimate with its own cost model, next to its code:

* microcontrollers: ``targets/mcu/cost.py`` (instructions per kernel call from the planned program, code size,
  SRAM = arena + state + stack + C library)
* phones: ``targets/phone/cost.py`` (ONNX Runtime's per-operator costs, file size)
* neuromorphic chips: ``targets/neuromorphic/cost.py`` (energy from synaptic ops and neuron updates)

``edgekit estimate`` prints the result, ``edgekit compile`` puts it in report.json next to what was measured; every
figure carries its formula with the constants that went in (``Estimate.formulas``).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from edgekit.analysis import DTYPE_BYTES, macs_of, param_bytes_of
from edgekit.graph import Graph, Node
from edgekit.memplan import ArenaPlan, graph_buffers, plan_arena
from edgekit.targets.profiles import TargetProfile


@dataclass
class Estimate:
    flash_bytes: int
    peak_sram_bytes: int
    arena_bytes: int
    state_bytes: int
    latency_ms: float
    energy_uj: float
    instructions: int | None = None
    macs: int = 0
    layers: list[dict[str, Any]] = field(default_factory=list)
    memory_timeline: list[int] = field(default_factory=list)
    formulas: dict[str, str] = field(default_factory=dict)
    # Recurrent models run as step programs (one call per input sample): instructions of one step; ``instructions``
    # then counts a whole sequence, and ``state_bytes`` is the state kept between steps.
    instructions_per_step: int | None = None
    # Microcontrollers: an estimate of clock cycles (instructions x the profile's cycles per instruction, per kind of
    # kernel); latency and energy follow from it. Instruction counts are exact under QEMU, cycles are not measured.
    cycles: int | None = None

    def to_json(self) -> dict:
        return asdict(self)


def layer_family(node: Node) -> str:
    """The cost-model family of a layer: conv2d, depthwise, linear, rnn or elementwise."""
    if node.op in ("conv2d", "conv1d"):
        a = node.attrs
        return "depthwise" if a["groups"] == a["in_channels"] and a["groups"] > 1 else "conv2d"
    if node.op in ("linear", "matmul"):
        return "linear"
    if node.op in ("gru", "lstm") or node.op in RECURRENT_OPS:
        return "rnn"
    return "elementwise"


# Recurrent layers registered by other parts of edgekit (LMU, EGRU) share the rnn cost family.
RECURRENT_OPS: set[str] = set()


def weight_bytes_per_param(dtype: str) -> int:
    return 1 if dtype == "int8" else 4


@dataclass
class LayerTable:
    """Per layer of a graph: MACs, stored weight bytes and activation bytes (no target costs yet)."""

    layers: list[dict[str, Any]]
    stored_bytes: int          # Σ stored weights (+ per-layer code bytes where a target passed them)
    macs: int


def layer_table(graph: Graph, dtype: str, weight_bytes: dict[str, int] | None = None,
                code_bytes: dict[str, int] | None = None) -> LayerTable:
    """The per-layer rows every estimate starts from. Targets that know better pass the stored ``weight_bytes``
    per layer (sparse storage, packed layouts) and ``code_bytes`` per layer."""
    wb = weight_bytes_per_param(dtype)
    act = DTYPE_BYTES[dtype]
    layers, stored_total, total_macs = [], 0, 0
    for n in graph.nodes:
        if n.op == "input":
            continue
        stored = (weight_bytes or {}).get(n.name, param_bytes_of(n, wb))
        macs = macs_of(n, graph)
        total_macs += macs
        stored_total += stored + (code_bytes or {}).get(n.name, 0)
        layers.append({"name": n.name, "op": n.op, "macs": macs, "weight_bytes": stored,
                       "activation_bytes": n.elements * act, "instructions": 0})
    return LayerTable(layers, stored_total, total_macs)


def activation_plan(graph: Graph, dtype: str, scratch: dict[str, int] | None = None) -> ArenaPlan:
    """edgekit's static arena plan of the graph's activations, layer by layer (edgekit/memplan.py)."""
    buffers, _ = graph_buffers(graph, DTYPE_BYTES[dtype], scratch)
    return plan_arena(buffers)


def fit_check(est: Estimate, profile: TargetProfile, memories: tuple[str, ...] = ("sram", "flash"),
              sram_budget: int | None = None) -> tuple[bool, list[str]]:
    """Whether the estimate fits the profile's ``memories`` (a target's ``Capabilities.memories``), one reason
    per memory; ``sram_budget`` (bytes the application leaves the model) replaces the device's SRAM when smaller."""
    sram, what_sram = int(profile.sram_bytes.value), "SRAM"
    if sram_budget is not None and sram_budget < sram:
        sram, what_sram = int(sram_budget), "SRAM (budget)"
    table = {"sram": (what_sram, est.peak_sram_bytes, sram),
             "flash": ("flash", est.flash_bytes, int(profile.flash_bytes.value))}
    reasons, ok = [], True
    for what, need, have in (table[m] for m in memories):
        if need > have:
            ok = False
            reasons.append(f"{what}: needs {need:,} B of {have:,} B ({need - have:,} B over)")
        else:
            reasons.append(f"{what}: {need:,} B of {have:,} B ({need / have:.0%})")
    return ok, reasons
