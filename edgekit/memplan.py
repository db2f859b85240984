"""Static memory planning: where each activation tensor lives in one arena.

Where it sits: the Cortex-M target lays out its arena with :func:`plan_arena`, and the estimators call the same
function to predict peak SRAM before anything is built (planning is arithmetic on sizes and lifetimes; it runs
nothing). A tensor is live from the step that writes it to the last step that reads it. Layers that only reinterpret
their input (reshape/flatten) share their input's buffer.

The algorithm is the greedy-by-size placement microcontroller runtimes use (largest tensor first, each at the lowest
offset that does not overlap any tensor whose lifetime intersects its own), with every buffer aligned.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Buffer:
    """One tensor to place: ``size`` bytes, live over steps [first, last] (inclusive)."""

    name: str
    size: int
    first: int
    last: int


@dataclass(frozen=True)
class ArenaPlan:
    offsets: dict[str, int]
    arena_bytes: int
    # Bytes live at each step when every buffer is counted once (the lower bound any plan can reach).
    live_bytes: tuple[int, ...]

    @property
    def lower_bound(self) -> int:
        return max(self.live_bytes, default=0)


def align(n: int, a: int = 8) -> int:
    return (n + a - 1) // a * a


def plan_arena(buffers: list[Buffer], alignment: int = 8) -> ArenaPlan:
    """Greedy-by-size placement (see the module docstring), vectorised over the buffers already placed: for each
    buffer the clashing ones (overlapping lifetimes) sorted by offset, and the first gap that holds it."""
    steps = max((b.last for b in buffers), default=-1) + 1
    sizes = np.array([align(b.size, alignment) for b in buffers], dtype=np.int64)
    firsts = np.array([b.first for b in buffers], dtype=np.int64)
    lasts = np.array([b.last for b in buffers], dtype=np.int64)
    # live bytes per step: +size at first, -size after last
    delta = np.zeros(steps + 1, dtype=np.int64)
    np.add.at(delta, firsts, sizes)
    np.add.at(delta, lasts + 1, -sizes)
    live = np.cumsum(delta)[:steps]
    # Largest first; ties broken by earlier start then name so that plans are reproducible.
    order = sorted(range(len(buffers)), key=lambda i: (-int(sizes[i]), buffers[i].first, buffers[i].name))
    offsets: dict[str, int] = {}
    placed = np.zeros(len(buffers), dtype=bool)
    offs = np.zeros(len(buffers), dtype=np.int64)
    arena = 0
    for i in order:
        b, size = buffers[i], int(sizes[i])
        if size == 0:
            offsets[b.name] = 0
            continue
        clash = np.flatnonzero(placed & (lasts >= b.first) & (firsts <= b.last))
        offset = 0
        if clash.size:
            starts = offs[clash]
            by_start = np.argsort(starts, kind="stable")
            starts = starts[by_start]
            ends = starts + sizes[clash][by_start]
            # the lowest offset below clash k is the highest end among the clashes before it
            before = np.concatenate(([0], np.maximum.accumulate(ends)[:-1]))
            fits = np.flatnonzero(before + size <= starts)
            offset = int(before[fits[0]]) if fits.size else int(max(before[-1], ends.max()))
        offsets[b.name] = offset
        offs[i] = offset
        placed[i] = True
        arena = max(arena, offset + size)
    return ArenaPlan(offsets, arena, tuple(int(v) for v in live))


ALIAS_OPS = ("reshape", "flatten")


def graph_buffers(graph, bytes_per_element: dict[str, int] | int = 4, scratch: dict[str, int] | None = None,
                  persistent: set[str] | None = None) -> tuple[list[Buffer], dict[str, str]]:
    """Buffers of a graph's activations under sequential execution (step i runs the i-th non-input layer).

    Returns the buffers and an alias map (layer -> the layer whose buffer it shares). ``bytes_per_element`` may give
    a per-layer element size. ``scratch`` adds a per-layer temporary that lives only during that layer's step.
    Graph inputs are live from step 0; graph outputs until the last step. ``persistent`` layers live throughout.
    """
    steps = [n for n in graph.nodes if n.op != "input"]
    step_of = {n.name: i for i, n in enumerate(steps)}
    last = len(steps) - 1
    alias: dict[str, str] = {}
    for n in steps:
        if n.op in ALIAS_OPS:
            src = n.inputs[0]
            alias[n.name] = alias.get(src, src)
    first_use: dict[str, int] = {}
    last_use: dict[str, int] = {}
    for n in graph.nodes:
        root = alias.get(n.name, n.name)
        s = step_of.get(n.name, 0)
        first_use.setdefault(root, s)
        last_use[root] = max(last_use.get(root, s), s)
        for i in n.inputs:
            r = alias.get(i, i)
            last_use[r] = max(last_use.get(r, 0), step_of[n.name])
    for o in graph.outputs:
        last_use[alias.get(o, o)] = last
    for p in persistent or ():
        first_use[p], last_use[p] = 0, last
    buffers = []
    for n in graph.nodes:
        if n.name in alias:
            continue
        bpe = bytes_per_element if isinstance(bytes_per_element, int) else bytes_per_element.get(n.name, 4)
        buffers.append(Buffer(n.name, n.elements * bpe, first_use[n.name], last_use[n.name]))
    for name, size in (scratch or {}).items():
        if size > 0:
            buffers.append(Buffer(f"{name}#scratch", size, step_of[name], step_of[name]))
    return buffers, alias
