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
    steps = max((b.last for b in buffers), default=-1) + 1
    live = [0] * steps
    for b in buffers:
        for s in range(b.first, b.last + 1):
            live[s] += align(b.size, alignment)
    placed: list[tuple[Buffer, int]] = []
    offsets: dict[str, int] = {}
    # Largest first; ties broken by earlier start then name so that plans are reproducible.
    for b in sorted(buffers, key=lambda b: (-align(b.size, alignment), b.first, b.name)):
        size = align(b.size, alignment)
        if size == 0:
            offsets[b.name] = 0
            continue
        clashes = sorted((off, off + align(o.size, alignment)) for o, off in placed
                         if not (o.last < b.first or b.last < o.first))
        offset = 0
        for start, end in clashes:
            if offset + size <= start:
                break
            offset = max(offset, end)
        offsets[b.name] = offset
        placed.append((b, offset))
    arena = max((off + align(b.size, alignment) for b, off in placed), default=0)
    return ArenaPlan(offsets, arena, tuple(live))


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
