"""What decides a generated kernel's code (kept free of TVM so that estimates need not import it)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class KernelSpec:
    """Everything that decides a kernel's code. Arrays (weights, multipliers) are arguments, not part of the spec."""

    op: str
    dtype: str
    in_shapes: tuple[tuple[int, ...], ...]
    out_shape: tuple[int, ...]
    attrs: tuple[tuple[str, Any], ...] = ()

    def attr(self, key, default=None):
        return dict(self.attrs).get(key, default)
