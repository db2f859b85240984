"""Target profiles: what a device offers (memories, clock, energy constants, cost model), read from data files.

Where it sits: every target has a TOML file under targets/profiles/ in which each number carries its source
(``clock_hz = { value = 480000000, source = "..." }``). Estimators and targets read the frozen
:class:`TargetProfile`; the report shows the sources next to the numbers they produced.
"""
from __future__ import annotations

import functools
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgekit.errors import UsageError

PROFILE_DIR = Path(__file__).parent / "profiles"


@dataclass(frozen=True)
class Sourced:
    """A number and where it comes from (datasheet, paper, or 'estimate: why')."""

    value: float
    source: str


@dataclass(frozen=True)
class TargetProfile:
    name: str
    backend: str                     # which target serves it (targets.TARGETS): "mcu", "phone", "neuromorphic"
    description: str
    core: str
    device: str
    clock_hz: Sourced
    sram_bytes: Sourced
    flash_bytes: Sourced
    energy: dict[str, Sourced] = field(default_factory=dict)
    cost: dict[str, Sourced] = field(default_factory=dict)
    runtime: dict[str, Sourced] = field(default_factory=dict)
    board: dict[str, Any] = field(default_factory=dict)
    neuromorphic: dict[str, Sourced] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    platform: str | None = None      # microcontrollers: the architecture (targets/mcu/platforms: cortex_m, riscv)

    def number(self, section: str, key: str, default: float | None = None) -> float:
        table = getattr(self, section)
        if key not in table:
            if default is None:
                raise KeyError(f"profile '{self.name}' has no [{section}] {key}")
            return default
        v = table[key]  # [extra] keeps its raw {value, source} tables
        return float(v["value"] if isinstance(v, dict) else v.value)

    def summary(self) -> dict:
        """The key figures (what ``edgekit targets --json`` prints)."""
        # "kind" repeats the backend under the name reports and scripts used before targets had backends
        return {"name": self.name, "backend": self.backend, "kind": self.backend, "platform": self.platform,
                "core": self.core, "device": self.device, "description": self.description, "sram_bytes": int(self.sram_bytes.value),
                "flash_bytes": int(self.flash_bytes.value), "clock_hz": int(self.clock_hz.value),
                "qemu_board": self.board.get("qemu_board"), "dev_board": self.board.get("dev_board")}

    def sources(self) -> dict[str, str]:
        """Every sourced number as 'section.key' -> 'value (source)'."""
        out = {f"{k}": f"{getattr(self, k).value:g} ({getattr(self, k).source})"
               for k in ("clock_hz", "sram_bytes", "flash_bytes")}
        for section in ("energy", "cost", "runtime", "neuromorphic"):
            for k, v in getattr(self, section).items():
                out[f"{section}.{k}"] = f"{v.value:g} ({v.source})"
        return out


def _sourced(name: str, key: str, raw) -> Sourced:
    if isinstance(raw, dict) and "value" in raw:
        return Sourced(float(raw["value"]), str(raw.get("source", "")))
    raise ValueError(f"profile '{name}': '{key}' must be {{ value = ..., source = \"...\" }}")


def _section(name: str, raw: dict) -> dict[str, Sourced]:
    return {k: _sourced(name, k, v) for k, v in raw.items() if isinstance(v, dict) and "value" in v}


def read_profile(path: Path) -> TargetProfile:
    raw = tomllib.loads(path.read_text())
    name = raw["name"]
    # A calibrated cost model (written by bench/estimators.py --calibrate) overrides the profile's initial [cost].
    calibrated = path.parent / "cost" / f"{name}.toml"
    if calibrated.is_file():
        raw.setdefault("cost", {}).update(tomllib.loads(calibrated.read_text()).get("cost", {}))
    return TargetProfile(
        name=name, backend=raw.get("backend") or raw["kind"], description=raw.get("description", ""),
        core=raw.get("core", ""),
        device=raw.get("device", ""), clock_hz=_sourced(name, "clock_hz", raw["clock_hz"]),
        sram_bytes=_sourced(name, "sram_bytes", raw["sram_bytes"]),
        flash_bytes=_sourced(name, "flash_bytes", raw["flash_bytes"]),
        energy=_section(name, raw.get("energy", {})), cost=_section(name, raw.get("cost", {})),
        runtime=_section(name, raw.get("runtime", {})), board=dict(raw.get("board", {})),
        neuromorphic=_section(name, raw.get("neuromorphic", {})), extra=dict(raw.get("extra", {})),
        platform=raw.get("platform") or raw.get("board", {}).get("platform"))


@functools.lru_cache(maxsize=1)
def all_profiles() -> dict[str, TargetProfile]:
    profiles = {}
    for path in sorted(PROFILE_DIR.glob("*.toml")):
        p = read_profile(path)
        profiles[p.name] = p
    return profiles


def get_profile(name: str) -> TargetProfile:
    profiles = all_profiles()
    if name not in profiles:
        raise UsageError(f"unknown target '{name}'; targets: {', '.join(profiles)} (edgekit targets lists them)")
    return profiles[name]
