"""Targets: Model -> Artifact. One folder per target kind, holding everything target-specific.

* ``cortex_m/``      microcontrollers: Apache TVM kernels + edgekit's own AOT C driver and firmware (issue: Cortex-M)
* ``phone/``         phones: ONNX + ONNX Runtime (ORT format, reduced-build operator config)
* ``neuromorphic/``  Loihi 2 / SpiNNaker 2: NIR graphs of spiking networks

Each target module exposes ``build(model, profile, out, options) -> BuildResult``. Which module serves a profile is a
plain dict on its ``kind``; the numbers live in ``profiles/*.toml`` (see profiles.py).
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgekit.errors import UnsupportedError
from edgekit.targets.profiles import TargetProfile, all_profiles, get_profile

TARGET_MODULES = {
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
    patch: str = "auto"                  # "auto" | "off" | "N" (grid)
    kernels: str = "auto"                # Cortex-M: "auto" (edgekit DSP kernels where they apply) | "tvm"
    max_patch_overhead: float = 0.20     # limit on extra MACs from patch halos
    run_firmware: bool = True            # build the emulator image as well
    allow_oversize: bool = False         # build even when the estimate does not fit the device (report says so)
    spiking: str | None = None           # convert to a spiking network first: "auto" | "rate" | "lmuformer" | "l2mu"
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class BuildResult:
    """What a target wrote into OUT and what it learned while building (sizes, layouts...)."""

    files: list[str]
    build: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def target_module(profile: TargetProfile):
    name = TARGET_MODULES[profile.kind]
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as e:
        if e.name != name:
            raise
        raise UnsupportedError(f"target '{profile.name}': {name} is not part of this edgekit installation; pick "
                               "another target (edgekit targets lists them)") from e


__all__ = ["BuildResult", "CompileOptions", "TargetProfile", "all_profiles", "get_profile", "target_module"]
