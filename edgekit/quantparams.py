"""The int8 quantization records every int8 target consumes: per-tensor (scale, zero point) and per-channel weight
scales, as plain data.

converters/quantize.py produces them (calibration, observers, QAT); the integer lowering (edgekit/qgraph.py,
edgekit/qrecurrent.py), the MCU planner and the phone's QDQ export read them. They live in the core, apart from the
converter, so that planning and estimates can use placeholder parameters without importing the training code (and
torch).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class TensorQ:
    """real = scale · (q − zero_point), q in [−128, 127]."""

    scale: float
    zero_point: int


@dataclass
class QuantParams:
    """Per-layer output quantization and per-layer weight scales (per output channel)."""

    activations: dict[str, TensorQ]
    weight_scales: dict[str, np.ndarray]
    observer: str = "minmax"
    per_channel: bool = True
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        """Plain JSON data (what ``edgekit convert`` stores inside the .pt2); :meth:`from_json` reads it back."""
        return {"activations": {k: [float(q.scale), int(q.zero_point)] for k, q in self.activations.items()},
                "weight_scales": {k: [float(v) for v in np.asarray(s).ravel()] for k, s in self.weight_scales.items()},
                "observer": self.observer, "per_channel": bool(self.per_channel), "notes": list(self.notes)}

    @classmethod
    def from_json(cls, data: dict) -> "QuantParams":
        return cls({k: TensorQ(float(s), int(z)) for k, (s, z) in data["activations"].items()},
                   {k: np.asarray(v, dtype=np.float64) for k, v in data["weight_scales"].items()},
                   data.get("observer", "minmax"), bool(data.get("per_channel", True)), list(data.get("notes", [])))


def weight_scales(w: np.ndarray, per_channel: bool = True) -> np.ndarray:
    """Symmetric int8 scales: max|w| / 127 per output channel (axis 0), or one for the tensor."""
    if per_channel:
        m = np.abs(w.reshape(w.shape[0], -1)).max(axis=1)
    else:
        m = np.full(w.shape[0], np.abs(w).max())
    return np.where(m > 0, m / 127.0, 1.0).astype(np.float64)
