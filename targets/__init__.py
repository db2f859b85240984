"""Targets: Model -> Artifact, every one behind the one :class:`Target` interface.

Where it sits: after the converters, before the runtimes. The core (edgekit/api.py, cli.py, sweep.py) never asks
what kind of target a profile is; it looks the target up in :data:`TARGETS` by the profile's ``backend`` and talks to
the :class:`Target` protocol:

* ``mcu/``           microcontrollers: one ISA-neutral core (program, step programs, memory plan, patch schedule,
                     TVM kernels, code generation, firmware build) with the architectures as platforms
                     (``mcu/platforms/cortex_m``, ``mcu/platforms/riscv``)
* ``phone/``         phones: ONNX + ONNX Runtime (ORT format, reduced-build operator config)
* ``neuromorphic/``  Loihi 2 / SpiNNaker 2: NIR graphs of spiking networks, integer networks for Lava

A target plans (:meth:`Target.plan`: everything needed to estimate without building, computed once), builds from
that plan (:meth:`Target.build` -> :class:`BuildResult`, a typed record) and names the runtime that measures what it
built (:attr:`Target.runtime`, a module path: a target never imports a runtime). The numbers of a device live in
``profiles/*.toml`` (see profiles.py); docs/architecture.md says what a new target or platform needs.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from edgekit.errors import UnsupportedError, UsageError
from edgekit.targets.profiles import TargetProfile, all_profiles, get_profile

if TYPE_CHECKING:  # pragma: no cover - typing only
    from edgekit.analysis import Analysis
    from edgekit.estimate import Estimate
    from edgekit.model import Model

# backend (a profile's ``backend`` field) -> the module whose ``TARGET`` serves it. The whole registry.
TARGETS = {
    "mcu": "edgekit.targets.mcu",
    "phone": "edgekit.targets.phone",
    "neuromorphic": "edgekit.targets.neuromorphic",
}


@dataclass(frozen=True)
class CompileOptions:
    """What the user asked for beyond model and target."""

    quantize: str | None = None          # None (float32) or "int8"
    calib: str | None = None             # a .npy/.npz file of calibration inputs (else the model's own)
    prune: float | None = None           # target sparsity, 0..1
    qat: bool = False                    # quantization-aware fine-tuning instead of PTQ
    observer: str = "minmax"             # int8 activation ranges: "minmax" | "percentile" | "mse"
    patch: str = "auto"                  # "auto" (fastest that fits) | "min-memory" | "off" | "N" (grid)
    kernels: str = "auto"                # MCU: "auto" (edgekit's kernels, Helium on M55) | "dsp" (no Helium) | "tvm"
    max_patch_overhead: float = 0.20     # limit on extra MACs from patch halos
    sram_budget: int | None = None       # bytes of SRAM the model may use (default: the target's SRAM)
    run_firmware: bool = True            # build the emulator image as well
    allow_oversize: bool = False         # build even when the estimate does not fit the device (report says so)
    spiking: str | None = None           # convert to a spiking network first: "auto" | "rate" | "lmuformer" | "l2mu"
    streaming: bool = False              # a conv model over time: one step per new frame, caches kept (convstream.py)
    int8_layers: str = "auto"            # phone int8: "auto" (int8 where it pays on the core, measured) | "all"
    input_format: str = "float"          # phone int8: "float" | "quantized" (the input's int8 codes, channels last)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Capabilities:
    """What a target can take, for the core's checks and the user's error messages."""

    dtypes: tuple[str, ...]                  # what its artifacts compute in: "float32", "int8", "spiking"
    spiking: bool = False                    # runs spiking networks: ``--spiking`` converts an ANN for it
    streaming: bool = False                  # runs recurrent models step by step with explicit state
    patching: bool = False                   # takes a patch-based schedule (--patch, --max-patch-overhead)
    memories: tuple[str, ...] = ("sram", "flash")   # the profile's memories a model must fit
    profile_options: tuple[str, ...] = ()    # keyword options its runtime's ``profile`` understands

    def describe(self) -> str:
        return ", ".join(self.dtypes) + (", spiking" if self.spiking else "") + \
            (", streaming" if self.streaming else "")


@dataclass
class BuildResult:
    """What a target wrote into OUT and what it learned while building; the report is rendered from it.

    ``info`` is the target's own typed record (with ``to_json()``): it becomes ``report["build"]``, the part of the
    report its runtime reads back."""

    files: list[str]
    dtype: str
    estimate: "Estimate | None"          # None only for a phone model built straight from its export (no graph)
    analysis: "Analysis | None"
    info: Any
    notes: list[str] = field(default_factory=list)
    schedule: dict | None = None          # how the execution schedule was chosen (MCU)
    patch: dict | None = None             # the patch-based schedule, when one runs
    energy_breakdown: dict[str, float] | None = None
    quant_debug: dict | None = None       # int8: per-layer SQNR against float (edgekit/quantdebug.py)


@runtime_checkable
class Plan(Protocol):
    """What :meth:`Target.plan` decided: at least the estimate; a target keeps whatever its build reuses."""

    estimate: "Estimate"


@runtime_checkable
class Target(Protocol):
    """The interface every target implements (one object per backend, in its module's ``TARGET``)."""

    backend: str
    runtime: str            # module path of the runtime that measures its artifacts (edgekit.runtimes.*)

    def capabilities(self, profile: TargetProfile) -> Capabilities:
        """What this target takes on ``profile``."""

    def dtype(self, options: CompileOptions) -> str:
        """The dtype its artifact computes in for ``options`` ("float32", "int8", "spiking")."""

    def plan(self, model: "Model", profile: TargetProfile, options: CompileOptions) -> Plan:
        """Everything decided before building (schedules, memory plans, the estimate); nothing is written."""

    def build(self, plan: Plan, out: Path) -> BuildResult:
        """Write the artifact for ``plan`` into the existing, empty folder ``out``."""

    def fit_advice(self, plan: Plan) -> list[str]:
        """Options that would help a model that does not fit (each with an estimate where cheap)."""


def get_target(profile: TargetProfile) -> Target:
    """The target that serves ``profile`` (by its ``backend``)."""
    name = TARGETS.get(profile.backend)
    if name is None:
        raise UsageError(f"target '{profile.name}': no target serves backend '{profile.backend}' (known: "
                         f"{', '.join(TARGETS)}); fix targets/profiles/{profile.name}.toml")
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as e:
        if e.name != name:
            raise
        raise UnsupportedError(f"target '{profile.name}': {name} is not part of this edgekit installation; pick "
                               "another target (edgekit targets lists them)") from e
    return module.TARGET


__all__ = ["TARGETS", "BuildResult", "Capabilities", "CompileOptions", "Plan", "Target", "TargetProfile",
           "all_profiles", "get_profile", "get_target"]
