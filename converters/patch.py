"""MCUNetV2-style patch-based inference scheduling, decided per model.

Where it sits: a converter-side analysis of the deployment graph (it changes no weights). Targets that execute
layer by layer (the Cortex-M target) ask :func:`schedule` whether running the first layers of a CNN patch by patch
lowers peak SRAM, and if so take the returned :class:`PatchSchedule` and run exactly those regions.

Idea (Lin et al., "MCUNetV2: Memory-Efficient Patch-based Inference for Tiny Deep Learning", NeurIPS 2021): the
leading layers hold the largest activations. Split the output of a layer ``split_after`` into an n×n grid of tiles and
compute each tile from the input through all layers up to ``split_after`` before the next tile; only one tile's
intermediate tensors are live at a time, next to the full input and the full stage output. Tiles overlap in their
receptive fields (halos), which are recomputed: that is the MAC overhead.

The halo of every layer is exact. For an output row range [o0, o1) of a conv/pool with kernel k, stride s, padding p
and dilation d, the input rows needed are [o0·s − p, (o1 − 1)·s − p + (k − 1)·d + 1), clipped to the tensor; the
clipped part becomes explicit zero padding of that tile's call. Layers with several readers inside the stage get the
union of what the readers need.

The decision: every valid split point (a prefix of spatial layers whose only tensor leaving the prefix is the split
layer's output) and grid n = 2..8 is planned with edgekit/memplan.py; the schedule with the lowest peak whose MAC
overhead stays within the limit wins — and only if its peak is lower than layer-by-layer execution. Otherwise the
answer is "no patching", with the reason.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from edgekit.analysis import macs_of
from edgekit.graph import Graph, Node
from edgekit.memplan import Buffer, graph_buffers, plan_arena

SPATIAL_OPS = ("conv2d", "maxpool2d", "avgpool2d", "add", "mul", "relu", "relu6", "hardswish", "sigmoid", "tanh",
               "concat")
MAX_GRID = 8


@dataclass(frozen=True)
class Region:
    """Rows [r0, r1) and columns [c0, c1) of a 4-D tensor."""

    r0: int
    r1: int
    c0: int
    c1: int

    @property
    def h(self) -> int:
        return self.r1 - self.r0

    @property
    def w(self) -> int:
        return self.c1 - self.c0

    def union(self, o: "Region") -> "Region":
        return Region(min(self.r0, o.r0), max(self.r1, o.r1), min(self.c0, o.c0), max(self.c1, o.c1))


@dataclass(frozen=True)
class TileCall:
    """One layer's work for one tile: it writes ``out`` (its own coordinates) reading, from each input, the window
    ``reads[i]`` (input coordinates, before padding) with explicit padding ``pads`` (top, bottom, left, right)."""

    layer: str
    out: Region
    reads: tuple[Region, ...]
    pads: tuple[int, int, int, int]
    macs: int


@dataclass
class PatchSchedule:
    split_after: str
    grid: int
    stage: list[str]                          # layers run per tile, in order
    tiles: list[list[TileCall]]               # per tile, the calls in order
    regions: list[dict[str, Region]]          # per tile, the region each stage layer computes (its buffer)
    mac_overhead: float                       # extra MACs / MACs of the whole model
    peak_bytes: int                           # planned peak of the whole model under this schedule
    per_layer_peak_bytes: int                 # planned peak without patching
    timeline: list[int] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        return self.per_layer_peak_bytes / max(self.peak_bytes, 1)

    def to_json(self) -> dict:
        return {"split_after": self.split_after, "grid": self.grid, "mac_overhead": self.mac_overhead}


@dataclass
class Decision:
    """What :func:`schedule` decided, and why (printed into the report)."""

    schedule: PatchSchedule | None
    reason: str
    per_layer_peak_bytes: int
    candidates: int
    per_layer_timeline: list[int] = field(default_factory=list)


def _window(n: Node, out: Region, in_h: int, in_w: int) -> tuple[Region, tuple[int, int, int, int]]:
    """Input window (clipped) and padding a conv/pool needs to produce ``out``."""
    if n.op in ("conv2d", "maxpool2d", "avgpool2d"):
        a = n.attrs
        kh, kw = a["kernel_size"]
        sh, sw = a["stride"]
        ph, pw = a["padding"]
        dh, dw = a.get("dilation", [1, 1])
        lo_r = out.r0 * sh - ph
        hi_r = (out.r1 - 1) * sh - ph + (kh - 1) * dh + 1
        lo_c = out.c0 * sw - pw
        hi_c = (out.c1 - 1) * sw - pw + (kw - 1) * dw + 1
        pads = (max(0, -lo_r), max(0, hi_r - in_h), max(0, -lo_c), max(0, hi_c - in_w))
        return Region(max(lo_r, 0), min(hi_r, in_h), max(lo_c, 0), min(hi_c, in_w)), pads
    return out, (0, 0, 0, 0)


def valid_splits(graph: Graph) -> list[int]:
    """Indices k (into graph.nodes) such that nodes 1..k form a spatial prefix with one tensor leaving it."""
    nodes = graph.nodes
    out = []
    prefix: set[str] = set()
    for k, n in enumerate(nodes):
        if n.op == "input":
            if k != 0 or len(n.shape) != 4:
                return out
            continue
        if n.op not in SPATIAL_OPS or len(n.shape) != 4:
            break
        prefix.add(n.name)
        leaving = {i for m in nodes if m.name not in prefix and m.op != "input" for i in m.inputs if i in prefix}
        if leaving == {n.name} and n.shape[2] >= 2 and n.name not in graph.outputs:
            out.append(k)
    return out


def _spans(size: int, n: int) -> list[tuple[int, int]]:
    edges = [round(i * size / n) for i in range(n + 1)]
    return [(edges[i], edges[i + 1]) for i in range(n) if edges[i + 1] > edges[i]]


def plan_tiles(graph: Graph, k: int, grid: int) -> tuple[list[list[TileCall]], list[dict[str, Region]], list[str]]:
    stage_nodes = [n for n in graph.nodes[1:k + 1]]
    stage = [n.name for n in stage_nodes]
    split = graph.nodes[k]
    H, W = split.shape[2], split.shape[3]
    per_out = {n.name: macs_of(n, graph) // max(n.elements, 1) for n in stage_nodes}
    tiles, regions = [], []
    for r0, r1 in _spans(H, grid):
        for c0, c1 in _spans(W, grid):
            need: dict[str, Region] = {split.name: Region(r0, r1, c0, c1)}
            calls: dict[str, TileCall] = {}
            for n in reversed(stage_nodes):
                if n.name not in need:
                    continue  # nothing downstream in this tile needs it (cannot happen in a valid prefix)
                out = need[n.name]
                reads, pads = [], (0, 0, 0, 0)
                for i in n.inputs:
                    src = graph[i]
                    win, pads = _window(n, out, src.shape[2], src.shape[3])
                    reads.append(win)
                    if i in stage:
                        need[i] = need[i].union(win) if i in need else win
                calls[n.name] = TileCall(n.name, out, tuple(reads), pads,
                                         per_out[n.name] * out.h * out.w * n.shape[1])
            tiles.append([calls[name] for name in stage if name in calls])
            regions.append({name: need[name] for name in stage if name in need})
    return tiles, regions, stage


def stage_buffers(graph: Graph, k: int, tiles, regions, bytes_per_element: int,
                  scratch: Callable[[Node, TileCall], int] | None = None) -> tuple[list[Buffer], int]:
    """Buffers of the whole model under the patch schedule, in execution steps; returns them and the step count.

    Steps: every tile call, then a copy of the tile into the full split output, then the remaining layers.
    """
    split = graph.nodes[k]
    inp = graph.nodes[0]
    buffers: list[Buffer] = []
    step = 0
    stage_start = 0
    for t, calls in enumerate(tiles):
        first: dict[str, int] = {}
        last: dict[str, int] = {}
        for call in calls:
            first[call.layer] = step
            last[call.layer] = step
            node = graph[call.layer]
            for i in node.inputs:
                if i in first:
                    last[i] = step
            if scratch is not None:
                sb = scratch(node, call)
                if sb:
                    buffers.append(Buffer(f"{call.layer}#scratch@{t}", sb, step, step))
            step += 1
        last[split.name] = step  # the copy into the full output
        step += 1
        for name, reg in regions[t].items():
            n = graph[name]
            buffers.append(Buffer(f"{name}@{t}", reg.h * reg.w * n.shape[1] * bytes_per_element, first[name],
                                  last[name]))
    stage_end = step - 1
    # The model input lives through the stage; the split output from the stage's start to its last reader.
    buffers.append(Buffer(inp.name, inp.elements * bytes_per_element, 0, stage_end))
    rest_nodes = graph.nodes[k + 1:]
    last_reader = stage_end
    for j, n in enumerate(rest_nodes):
        if split.name in n.inputs:
            last_reader = stage_end + 1 + j
    sub_buffers = _rest_buffers(graph, k, bytes_per_element, stage_end + 1)
    buffers.append(Buffer(split.name, split.elements * bytes_per_element, stage_start,
                          max(last_reader, stage_end + (1 if split.name in graph.outputs else 0))))
    buffers.extend(sub_buffers)
    return buffers, stage_end + 1 + len(rest_nodes)


def _rest_buffers(graph: Graph, k: int, bpe: int, offset: int) -> list[Buffer]:
    """Layer-by-layer buffers of the layers after the split, shifted to start at step ``offset``."""
    split = graph.nodes[k]
    head = Node(split.name, "input", [], split.shape)
    rest = Graph([head] + [n for n in graph.nodes[k + 1:]], list(graph.outputs), graph.name)
    bufs, _ = graph_buffers(rest, bpe)
    return [Buffer(b.name, b.size, b.first + offset, b.last + offset) for b in bufs if b.name != split.name]


def _live_peak(buffers: list[Buffer]) -> int:
    """The most bytes live at one step: a lower bound of any arena plan (cheap to compute)."""
    events: dict[int, int] = {}
    for b in buffers:
        events[b.first] = events.get(b.first, 0) + b.size
        events[b.last + 1] = events.get(b.last + 1, 0) - b.size
    live = peak = 0
    for step in sorted(events):
        live += events[step]
        peak = max(peak, live)
    return peak


def evaluate(graph: Graph, k: int, grid: int, bytes_per_element: int, total_macs: int,
             scratch=None, bound: int | None = None) -> tuple[PatchSchedule | None, list[Buffer]]:
    """Plan one candidate. With ``bound``, a candidate whose lower bound is not below it is not planned (None)."""
    tiles, regions, stage = plan_tiles(graph, k, grid)
    stage_macs = sum(macs_of(graph[n], graph) for n in stage)
    tile_macs = sum(c.macs for calls in tiles for c in calls)
    buffers, _ = stage_buffers(graph, k, tiles, regions, bytes_per_element, scratch)
    if bound is not None and _live_peak(buffers) >= bound:
        return None, buffers
    plan = plan_arena(buffers)
    sched = PatchSchedule(graph.nodes[k].name, grid, stage, tiles, regions,
                          (tile_macs - stage_macs) / max(total_macs, 1), plan.arena_bytes, 0, list(plan.live_bytes))
    return sched, buffers


def schedule(graph: Graph, bytes_per_element: int, max_overhead: float = 0.20, grid: int | None = None,
             scratch=None, per_layer_peak: int | None = None) -> Decision:
    """Choose the patch schedule with the lowest planned peak within ``max_overhead`` extra MACs (or the given
    ``grid``), or none if layer-by-layer execution is as good. ``per_layer_peak`` lets a target pass its own plan."""
    total = sum(macs_of(n, graph) for n in graph.nodes)
    base_bufs, _ = graph_buffers(graph, bytes_per_element)
    base_plan = plan_arena(base_bufs)
    base = per_layer_peak if per_layer_peak is not None else base_plan.arena_bytes
    splits = valid_splits(graph)
    if not splits:
        return Decision(None, "no patching: the model does not start with spatial layers that can run per patch",
                        base, 0, list(base_plan.live_bytes))
    best: PatchSchedule | None = None
    tried = 0
    over_limit = 0
    grids = [grid] if grid else list(range(2, MAX_GRID + 1))
    for k in splits:
        h = graph.nodes[k].shape[2]
        for n in grids:
            if n > h:
                continue
            tried += 1
            tiles, _, stage = plan_tiles(graph, k, n)
            extra = (sum(c.macs for calls in tiles for c in calls)
                     - sum(macs_of(graph[x], graph) for x in stage)) / max(total, 1)
            if grid is None and extra > max_overhead:
                over_limit += 1
                continue
            sched, _ = evaluate(graph, k, n, bytes_per_element, total, scratch,
                                bound=best.peak_bytes if best is not None else None)
            if sched is None:
                continue
            if best is None or (sched.peak_bytes, sched.mac_overhead) < (best.peak_bytes, best.mac_overhead):
                best = sched
    if best is None:
        return Decision(None, f"no patching: all {tried} schedules tried cost more than {max_overhead:.0%} extra "
                              "MACs", base, tried, list(base_plan.live_bytes))
    best.per_layer_peak_bytes = base
    if best.peak_bytes >= base and grid is None:
        return Decision(None, f"no patching: the best of {tried} schedules (split after '{best.split_after}', "
                              f"{best.grid}x{best.grid}) would need {best.peak_bytes:,} B, not less than "
                              f"{base:,} B layer by layer", base, tried, list(base_plan.live_bytes))
    return Decision(best, f"patching the first {len(best.stage)} layers as {best.grid}x{best.grid} tiles "
                          f"(split after '{best.split_after}') lowers the planned peak from {base:,} B to "
                          f"{best.peak_bytes:,} B ({base / best.peak_bytes:.2f}x) for "
                          f"{best.mac_overhead:.1%} extra MACs; best of {tried} schedules", base, tried,
                    list(base_plan.live_bytes))
