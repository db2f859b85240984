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

Beyond the first stage, the same machinery runs any later *segment* of spatial layers that reads one tensor and
leaves one tensor (an inverted-residual block: expand → depthwise → project (+ add)) tile by tile, so that its
expanded tensor is never materialised whole — the block-wise execution TinyEngine uses, without changing the network.

The decision is greedy and planned, not guessed: starting from layer-by-layer execution, find the step where the
planned arena (edgekit/memplan.py) peaks, try every stage that covers it (prefix splits with n×n grids from the input,
segments with row tiles elsewhere, n = 2..8), keep the one that lowers the planned peak most within the remaining MAC
budget, and repeat until nothing helps; then revisit each stage's grid while that lowers the peak, and give each stage
the fewest tiles that keep the planned peak (tiles cost instructions the MAC budget does not see). The result is never
worse than layer by layer; when no stage helps the answer is "no patching", with the reason.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from edgekit.analysis import macs_of
from edgekit.graph import ACTIVATIONS, Graph, Node
from edgekit.memplan import ALIAS_OPS, Buffer, plan_arena

SPATIAL_OPS = ("conv2d", "maxpool2d", "avgpool2d", "add", "mul", *ACTIVATIONS, "concat")
MAX_GRID = 8
# The grids a stage's refinement and coarsening try: rows and columns within one of each other, or row tiles
REFINE_GRIDS = tuple((n, m) for n in range(1, MAX_GRID + 1) for m in range(1, MAX_GRID + 1)
                     if (abs(n - m) <= 1 or m == 1) and (n, m) != (1, 1))


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
class Stage:
    """Layers ``layers`` (graph order, ending with the split layer) run tile by tile over a rows×cols grid of the
    split layer's output, reading only ``source`` (the graph input or an earlier layer's output)."""

    layers: list[str]
    source: str
    grid: tuple[int, int]
    tiles: list[list[TileCall]]
    regions: list[dict[str, Region]]
    extra_macs: int

    @property
    def split_after(self) -> str:
        return self.layers[-1]

    def to_json(self) -> dict:
        return {"first_layer": self.layers[0], "split_after": self.split_after, "grid": list(self.grid),
                "layers": len(self.layers), "tiles": len(self.tiles), "extra_macs": self.extra_macs}


@dataclass
class PatchSchedule:
    stages: list[Stage]
    mac_overhead: float                       # extra MACs / MACs of the whole model
    peak_bytes: int                           # planned peak of the whole model under this schedule
    per_layer_peak_bytes: int                 # planned peak without patching
    timeline: list[int] = field(default_factory=list)

    # The first stage, as MCUNetV2 describes a schedule (report.json 'patch').
    @property
    def split_after(self) -> str:
        return self.stages[0].split_after

    @property
    def grid(self) -> int:
        return self.stages[0].grid[0]

    @property
    def ratio(self) -> float:
        return self.per_layer_peak_bytes / max(self.peak_bytes, 1)

    def to_json(self) -> dict:
        return {"split_after": self.split_after, "grid": self.grid, "mac_overhead": self.mac_overhead,
                "stages": [st.to_json() for st in self.stages]}


@dataclass
class Decision:
    """What :func:`schedule` decided, and why (printed into the report)."""

    schedule: PatchSchedule | None
    reason: str
    per_layer_peak_bytes: int
    candidates: int
    per_layer_timeline: list[int] = field(default_factory=list)
    # The greedy's schedules in order (each one stage more, each a lower planned peak for more MACs); the last one
    # is ``schedule`` unless the refinement improved on it.
    path: list[PatchSchedule] = field(default_factory=list)


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


def valid_segments(graph: Graph, max_len: int = 10) -> list[tuple[int, int, str]]:
    """(first, last, source) index ranges of spatial layers that read one outside tensor and leave one tensor."""
    nodes = graph.nodes
    out = []
    readers: dict[str, list[int]] = {}
    for j, n in enumerate(nodes):
        for i in n.inputs:
            readers.setdefault(i, []).append(j)
    for a in range(1, len(nodes)):
        names: set[str] = set()
        sources: set[str] = set()
        for b in range(a, min(len(nodes), a + max_len)):
            n = nodes[b]
            if n.op not in SPATIAL_OPS or len(n.shape) != 4:
                break
            names.add(n.name)
            sources.update(i for i in n.inputs if i not in names)
            if len(sources) != 1:
                break
            src = next(iter(sources))
            if len(graph[src].shape) != 4:
                break
            leaving = {x for x in names for r in readers.get(x, []) if r > b} | \
                      {x for x in names if x in graph.outputs}
            if leaving == {n.name} and n.shape[2] >= 2 and n.name not in graph.outputs:
                out.append((a, b, src))
    return out


def valid_splits(graph: Graph) -> list[int]:
    """Indices k such that layers 1..k form a spatial prefix reading the graph input with one tensor leaving it."""
    if not graph.nodes or graph.nodes[0].op != "input" or len(graph.nodes[0].shape) != 4:
        return []
    return [b for a, b, src in valid_segments(graph, max_len=len(graph.nodes)) if a == 1 and
            src == graph.nodes[0].name]


def _spans(size: int, n: int) -> list[tuple[int, int]]:
    edges = [round(i * size / n) for i in range(n + 1)]
    return [(edges[i], edges[i + 1]) for i in range(n) if edges[i + 1] > edges[i]]


def plan_tiles(graph: Graph, first: int, last: int, grid: tuple[int, int]) -> Stage:
    """The tiles of layers first..last (indices into graph.nodes) over a rows×cols grid of the last one's output."""
    stage_nodes = graph.nodes[first:last + 1]
    stage = [n.name for n in stage_nodes]
    inside = set(stage)
    sources = {i for n in stage_nodes for i in n.inputs if i not in inside}
    split = graph.nodes[last]
    H, W = split.shape[2], split.shape[3]
    per_out = {n.name: macs_of(n, graph) // max(n.elements, 1) for n in stage_nodes}
    tiles, regions = [], []
    tile_macs = 0
    for r0, r1 in _spans(H, grid[0]):
        for c0, c1 in _spans(W, grid[1]):
            need: dict[str, Region] = {split.name: Region(r0, r1, c0, c1)}
            calls: dict[str, TileCall] = {}
            for n in reversed(stage_nodes):
                if n.name not in need:
                    continue
                out = need[n.name]
                reads, pads = [], (0, 0, 0, 0)
                for i in n.inputs:
                    src = graph[i]
                    win, pads = _window(n, out, src.shape[2], src.shape[3])
                    reads.append(win)
                    if i in inside:
                        need[i] = need[i].union(win) if i in need else win
                calls[n.name] = TileCall(n.name, out, tuple(reads), pads,
                                         per_out[n.name] * out.h * out.w * n.shape[1])
                tile_macs += calls[n.name].macs
            tiles.append([calls[name] for name in stage if name in calls])
            regions.append({name: need[name] for name in stage if name in need})
    base = sum(macs_of(n, graph) for n in stage_nodes)
    return Stage(stage, next(iter(sources)), grid, tiles, regions, tile_macs - base)


def input_in_place(graph: Graph, stages: list[Stage]) -> bool:
    """Whether the model input is read in place (not copied into the arena): when only stages read it, each tile
    reads its window straight from wherever the application keeps the input (flash, a camera buffer)."""
    name = graph.nodes[0].name
    readers = [n for n in graph.nodes if name in n.inputs]
    in_stage = {x for st in stages for x in st.layers}
    return bool(readers) and all(n.name in in_stage for n in readers)


def schedule_buffers(graph: Graph, stages: list[Stage], bytes_per_element: int,
                     scratch: Callable[[Node, TileCall | None], int] | None = None) -> list[Buffer]:
    """Buffers of the whole model when ``stages`` run tile by tile and everything else layer by layer.

    Steps in order: the input (step 0), then per layer one step, except that a stage contributes one step per tile
    call plus one step copying each finished tile into the split layer's full output.
    """
    bpe = bytes_per_element
    alias: dict[str, str] = {}
    for n in graph.nodes:
        if n.op in ALIAS_OPS:
            alias[n.name] = alias.get(n.inputs[0], n.inputs[0])
    stage_of_last = {st.split_after: st for st in stages}
    in_stage = {name for st in stages for name in st.layers}
    sizes: dict[str, int] = {}
    first: dict[str, int] = {}
    last: dict[str, int] = {}
    scratch_bufs: list[Buffer] = []
    step = 0
    # (inlined for speed: the patch scheduler calls this for every candidate schedule) a write records size and
    # first step once; every touch moves the last step forward
    for n in graph.nodes:
        if n.op == "input":
            sizes[n.name], first[n.name], last[n.name] = n.elements * bpe, 0, 0
            continue
        if n.name in in_stage:
            st = stage_of_last.get(n.name)
            if st is None:
                continue
            for t, calls in enumerate(st.tiles):
                reg = st.regions[t]
                for call in calls:
                    node = graph[call.layer]
                    for i in node.inputs:
                        key = f"{i}@{t}" if i in reg else alias.get(i, i)
                        last[key] = step if last.get(key, step) <= step else last[key]
                    key = f"{call.layer}@{t}"
                    if key not in sizes:
                        sizes[key], first[key] = call.out.h * call.out.w * node.shape[1] * bpe, step
                    last[key] = step if last.get(key, step) <= step else last[key]
                    if scratch is not None:
                        sb = scratch(node, call)
                        if sb:
                            scratch_bufs.append(Buffer(f"{call.layer}#scratch@{t}", sb, step, step))
                    step += 1
                key = f"{st.split_after}@{t}"
                last[key] = step if last.get(key, step) <= step else last[key]
                key = st.split_after
                if key not in sizes:
                    sizes[key], first[key] = split_size(graph, st, bpe), step
                last[key] = step if last.get(key, step) <= step else last[key]
                step += 1
            continue
        for i in n.inputs:
            key = alias.get(i, i)
            last[key] = step if last.get(key, step) <= step else last[key]
        if n.name not in alias:
            if n.name not in sizes:
                sizes[n.name], first[n.name] = n.elements * bpe, step
            last[n.name] = step if last.get(n.name, step) <= step else last[n.name]
            if scratch is not None:
                sb = scratch(n, None)
                if sb:
                    scratch_bufs.append(Buffer(f"{n.name}#scratch", sb, step, step))
        step += 1
    end = max(step - 1, 0)
    for o in graph.outputs:
        last[alias.get(o, o)] = end
    if input_in_place(graph, stages):
        sizes.pop(graph.nodes[0].name)
    return [Buffer(name, sizes[name], first[name], max(last[name], first[name])) for name in sizes] + scratch_bufs


def split_size(graph: Graph, st: Stage, bpe: int) -> int:
    return graph[st.split_after].elements * bpe


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


def plan_schedule(graph: Graph, stages: list[Stage], bpe: int, scratch=None, bound: int | None = None):
    """Planned arena of the whole model with ``stages`` (None when its lower bound is not below ``bound``)."""
    bufs = schedule_buffers(graph, stages, bpe, scratch)
    if bound is not None and _live_peak(bufs) >= bound:
        return None
    return plan_arena(bufs)


def _peak_step_layer(graph: Graph, stages: list[Stage], plan) -> int:
    """Index (into graph.nodes) of a layer executing where the planned arena is fullest."""
    live = list(plan.live_bytes)
    peak_step = max(range(len(live)), key=lambda i: live[i]) if live else 0
    in_stage = {name for st in stages for name in st.layers}
    stage_of_last = {st.split_after: st for st in stages}
    step = 0
    for idx, n in enumerate(graph.nodes):
        if n.op == "input":
            continue
        if n.name in in_stage:
            st = stage_of_last.get(n.name)
            if st is None:
                continue
            width = sum(len(c) + 1 for c in st.tiles)
            if step <= peak_step < step + width:
                return graph.nodes.index(graph[st.layers[0]])
            step += width
            continue
        if step >= peak_step:
            return idx
        step += 1
    return len(graph.nodes) - 1


def schedule(graph: Graph, bytes_per_element: int, max_overhead: float = 0.20, grid: int | None = None,
             scratch=None, per_layer_peak: int | None = None, max_stages: int = 12,
             fits_bytes: int | None = None) -> Decision:
    """Choose stages that lower the planned peak within ``max_overhead`` extra MACs (``grid``: only a first stage
    from the input, with that n×n grid), or none if layer-by-layer execution is as good. ``per_layer_peak`` lets a
    target pass its own plan of layer-by-layer execution. With ``fits_bytes`` the search stops at the first
    schedule of the greedy whose planned peak is at most that (the fewest stages, so the fewest extra MACs, that fit
    a memory budget); without it, it goes on to the lowest peak it can find."""
    bpe = bytes_per_element
    if scratch is not None:  # asked once per layer and tile size, not once per candidate schedule
        inner, memo = scratch, {}

        def scratch(node, call):
            key = (node.name, None if call is None else (call.out.h, call.out.w))
            if key not in memo:
                memo[key] = inner(node, call)
            return memo[key]
    total = sum(macs_of(n, graph) for n in graph.nodes)
    base_plan = plan_schedule(graph, [], bpe, scratch)
    base = per_layer_peak if per_layer_peak is not None else base_plan.arena_bytes
    splits = valid_splits(graph)
    segments = valid_segments(graph)
    if not splits and not segments:
        return Decision(None, "no patching: the model has no spatial layers that can run per patch", base, 0,
                        list(base_plan.live_bytes))
    budget = max_overhead * total
    tried = 0

    def as_schedule(stages: list[Stage], plan) -> PatchSchedule:
        return PatchSchedule(list(stages), sum(st.extra_macs for st in stages) / max(total, 1), plan.arena_bytes, base,
                             list(plan.live_bytes))

    path: list[PatchSchedule] = []
    if grid is not None:
        best, best_plan = None, None
        for k in splits:
            if grid > graph.nodes[k].shape[2]:
                continue
            st = plan_tiles(graph, 1, k, (grid, grid))
            plan = plan_schedule(graph, [st], bpe, scratch)
            tried += 1
            if best_plan is None or (plan.arena_bytes, st.extra_macs) < (best_plan.arena_bytes, best[0].extra_macs):
                best, best_plan = [st], plan
        if best is None:
            return Decision(None, f"no patching: no layer before the first non-spatial one has {grid} rows",
                            base, tried, list(base_plan.live_bytes))
        chosen, plan = best, best_plan
    else:
        chosen, plan = [], base_plan
        stages: dict = {}  # (first, last, grid) -> Stage: the greedy and the refinement revisit the same ones

        def tiles(a: int, b: int, g: tuple[int, int]) -> Stage:
            if (a, b, g) not in stages:
                stages[(a, b, g)] = plan_tiles(graph, a, b, g)
            return stages[(a, b, g)]

        index = {n.name: j for j, n in enumerate(graph.nodes)}
        span = lambda st: (index[st.layers[0]], index[st.layers[-1]])  # noqa: E731
        for _ in range(max_stages):
            where = _peak_step_layer(graph, chosen, plan)
            # The stage holding the peak may be replaced (other grid or extent); others must not be overlapped.
            holder = next((st for st in chosen if span(st)[0] <= where <= span(st)[1]), None)
            others = [st for st in chosen if st is not holder]
            blocked = {j for st in others for j in range(span(st)[0], span(st)[1] + 1)}
            used = sum(st.extra_macs for st in others)
            cands = []
            for a, b, src in segments:
                covers = a <= where <= b or (holder is not None and not (b < span(holder)[0] or a > span(holder)[1]))
                if not covers or any(j in blocked for j in range(a, b + 1)):
                    continue
                rows = graph.nodes[b].shape[2]
                from_input = src == graph.nodes[0].name and a == 1
                grids = [(n, n) for n in range(2, MAX_GRID + 1)] if from_input else \
                    [(n, 1) for n in range(2, MAX_GRID + 1)] + [(n, n) for n in (2, 3, 4)]
                cands += [(a, b, g) for g in grids if g[0] <= rows and g[1] <= graph.nodes[b].shape[3]]
            best, best_plan = None, None
            for a, b, g in cands:
                if holder is not None and (a, b) == span(holder) and g == holder.grid:
                    continue
                st = tiles(a, b, g)
                if used + st.extra_macs > budget:
                    continue
                tried += 1
                bound = min(plan.arena_bytes, best_plan.arena_bytes if best_plan else plan.arena_bytes)
                trial = plan_schedule(graph, others + [st], bpe, scratch, bound=bound)
                if trial is None:
                    continue
                if best_plan is None or (trial.arena_bytes, st.extra_macs, len(st.tiles)) < \
                        (best_plan.arena_bytes, best.extra_macs, len(best.tiles)):
                    best, best_plan = st, trial
            if best is None or best_plan.arena_bytes >= plan.arena_bytes:
                break
            chosen = sorted(others + [best], key=lambda st: span(st)[0])
            plan = best_plan
            path.append(as_schedule(chosen, plan))
            if fits_bytes is not None and plan.arena_bytes <= fits_bytes:
                break
        # Local refinement: the greedy fixes stages one at a time; revisit each one's grid (rows and columns within
        # one of each other) with all the others in place, while that lowers the planned peak. Not when a schedule
        # that fits the budget was found: it would only spend MACs on memory nobody needs.
        improved = fits_bytes is None or plan.arena_bytes > fits_bytes
        while improved and chosen:
            improved = False
            for st in list(chosen):
                others = [o for o in chosen if o is not st]
                used = sum(o.extra_macs for o in others)
                a, b = span(st)
                for g in set(REFINE_GRIDS) - {st.grid}:
                    if g[0] > graph.nodes[b].shape[2] or g[1] > graph.nodes[b].shape[3]:
                        continue
                    alt = tiles(a, b, g)
                    if used + alt.extra_macs > budget:
                        continue
                    tried += 1
                    trial = plan_schedule(graph, others + [alt], bpe, scratch, bound=plan.arena_bytes)
                    if trial is not None and trial.arena_bytes < plan.arena_bytes:
                        chosen = sorted(others + [alt], key=lambda x: span(x)[0])
                        plan, improved = trial, True
                        break
                if improved:
                    break
        # Coarsening: the greedy and the refinement keep a grid once it lowered the peak, though after later
        # changes fewer tiles may plan the same arena; tiles cost instructions the MAC budget does not see (a call
        # per layer and tile, halo copies), so each stage takes the fewest tiles that keep the planned arena.
        for k in range(len(chosen)):
            st = chosen[k]
            others = chosen[:k] + chosen[k + 1:]
            used = sum(o.extra_macs for o in others)
            a, b = span(st)
            rows, cols = graph.nodes[b].shape[2:4]
            coarser = sorted((g for g in REFINE_GRIDS if g[0] * g[1] < len(st.tiles) and g[0] <= rows and g[1] <= cols),
                             key=lambda g: (g[0] * g[1], g))
            for g in coarser:
                alt = tiles(a, b, g)
                if used + alt.extra_macs > budget:
                    continue
                tried += 1
                trial = plan_schedule(graph, others + [alt], bpe, scratch, bound=plan.arena_bytes + 1)
                if trial is not None and trial.arena_bytes <= plan.arena_bytes:
                    chosen = others[:k] + [alt] + others[k:]
                    plan = trial
                    break
        if path and [st.grid for st in chosen] != [st.grid for st in path[-1].stages]:  # --patch auto weighs it too
            path.append(as_schedule(chosen, plan))
    if not chosen:
        return Decision(None, f"no patching: none of {tried} stages tried lowers the planned peak of {base:,} B "
                              f"within {max_overhead:.0%} extra MACs", base, tried, list(base_plan.live_bytes))
    sched = as_schedule(chosen, plan)
    if sched.peak_bytes >= base and grid is None:
        return Decision(None, f"no patching: the best schedule found plans {sched.peak_bytes:,} B, not less than "
                              f"{base:,} B layer by layer", base, tried, list(base_plan.live_bytes))
    first = chosen[0]
    more = f" and {len(chosen) - 1} later block(s) in row tiles" if len(chosen) > 1 else ""
    return Decision(sched, f"patch-based: layers '{first.layers[0]}'..'{first.split_after}' as "
                           f"{first.grid[0]}x{first.grid[1]} tiles{more} lower the planned peak from {base:,} B to "
                           f"{sched.peak_bytes:,} B ({base / sched.peak_bytes:.2f}x) for {sched.mac_overhead:.1%} "
                           f"extra MACs; {tried} stages tried", base, tried, list(base_plan.live_bytes), path)
