"""Convolutional models over a time axis as streaming steps: one new frame in, per-layer caches instead of
recomputing the window (the cache-based inference of the Stateful Conformer, for conv nets).

Where it sits: between the deployment graph (edgekit/graph.py) and what runs a conv model frame by frame — the
converter :func:`edgekit.converters.to_streaming` (float step as a PyTorch module, ONNX with explicit caches), the
Cortex-M step programs (targets/mcu/streaming.py) and the integer reference here. A model over ``x`` [1, C, T, F]
(Conv2d over time x frequency, time = axis 2) or [1, C, T] (Conv1d) becomes a *step graph* on one frame
[1, C, 1, F]:

* every layer with extent in time (conv, max/avg pool with a time kernel > 1, a time stride or time padding) reads a
  ``time_cache`` node: the last ``rows`` = (k - 1)·d + 1 rows of its input, initialised to its padding value; the layer
  itself runs with no time padding and time stride 1 on that window and gives exactly one output row.
* a cache *fires* (lets its layer and everything downstream run) on some arrivals only: after ``wait`` arrivals at
  first (k_eff - 1 - padding: a causal conv padded by k_eff - 1 fires at once), then every ``period`` (its time
  stride). Each node's ``guard`` is the set of caches that must have fired in this step for it to run.
* layers local in time (1x1 convs, activations, adds, concats over channels) run on the row; a crop of the time axis
  that keeps the first frames (``x[:, :, :T]``, TCN's Chomp1d) passes rows through — in a stream the frames it drops
  are the ones that would need the future.
* global average pooling over time becomes a ``running_pool``: a ring of the last ``rows`` row sums (T' rows of the
  windowed model); the head after it runs on every pooled row.

Equality: for a *causal* model (no row of the windowed model needs frames after the window's last) the step graph,
from :func:`reset` state and fed the window's T frames, gives the windowed model's output after the last frame —
in int8 bit for bit (the same integer layers, with the windowed model's scales, on the same rows; the ring sums
exactly what the global pool sums). A model that *looks ahead* (symmetric 'same' time padding, no time crop) streams
with its look-ahead as latency: a layer's row comes out when the frames it needs have arrived. To end a window as the
windowed model does, a flush (:meth:`StreamRunner.flush` on the host, ``edgekit_model_flush()`` on a device, the
``pad_into`` input of the phone's step) pushes each cache's right padding rows, cache after cache in order, and the
layers after it compute the rows the windowed model computes from them: after the window's frames and the flush, the
output is the windowed model's again, bit for bit.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from edgekit.errors import UnsupportedError
from edgekit.graph import ACTIVATIONS, Graph, Node

TIME_AXIS = 2
WINDOW_OPS = ("conv2d", "conv1d", "maxpool2d", "avgpool2d")
ROW_OPS = (*ACTIVATIONS, "add", "mul", "concat")


@dataclass(frozen=True)
class CacheSpec:
    """The cache in front of window layer ``layer``: ``rows`` input rows of ``row_shape`` (NCHW without batch and time:
    (C, F) or (C,)); fires after ``wait`` arrivals, then every ``period``; starts filled with ``pad`` (a float value;
    int8 builds use the layer's input zero point, or -128 before a max pool)."""

    name: str
    layer: str
    source: str
    rows: int
    wait: int
    period: int
    row_shape: tuple[int, ...]
    max_pool: bool = False
    flush_rows: int = 0  # padding rows the windowed layer appends after the last frame (pushed by a flush)


@dataclass(frozen=True)
class PoolSpec:
    """A global average pool over time (and frequency) as a running sum of the last ``rows`` rows."""

    name: str
    source: str
    rows: int
    channels: int
    inner: int          # elements of one row per channel (frequency bins; 1 for Conv1d models)


@dataclass
class StreamPlan:
    """How a windowed conv model streams (see the module docstring)."""

    graph: Graph                      # the windowed deployment graph
    step: Graph                       # one frame in, the model's output (when it fires) out
    frames: int                       # T: the window the model was built for
    caches: dict[str, CacheSpec]
    pools: dict[str, PoolSpec]
    guards: dict[str, frozenset[str]]  # node of ``step`` -> caches that must fire for it to run
    fire_frame: int                   # frame (0-based) at which the window's output is first complete
    lookahead_frames: int             # > 0: the windowed model's output needs frames after the window
    notes: list[str] = field(default_factory=list)

    @property
    def frame_shape(self) -> tuple[int, ...]:
        """One frame, batch first, NCHW-style: [1, C, 1, F] or [1, C, 1]."""
        return self.step.inputs[0].shape

    @property
    def hop_frames(self) -> int:
        """Frames between two outputs of the model (the product of the time strides on the way to the output)."""
        out = self.guards.get(self.step.outputs[0], frozenset())
        return int(np.prod([self.caches[c].period for c in out])) if out else 1

    @property
    def causal(self) -> bool:
        return self.lookahead_frames == 0

    def state_elements(self) -> dict[str, int]:
        """Elements each cache and ring keeps between frames (per stream)."""
        out = {c.name: c.rows * int(np.prod(c.row_shape)) for c in self.caches.values()}
        out.update({p.name: p.rows * p.channels for p in self.pools.values()})
        return out

    def to_json(self) -> dict:
        return {"frames": self.frames, "hop_frames": self.hop_frames, "fire_frame": self.fire_frame,
                "lookahead_frames": self.lookahead_frames,
                "caches": [{"name": c.name, "layer": c.layer, "rows": c.rows, "row_shape": list(c.row_shape),
                            "wait": c.wait, "period": c.period} for c in self.caches.values()],
                "pools": [{"name": p.name, "rows": p.rows, "channels": p.channels} for p in self.pools.values()]}


def _time_params(n: Node) -> tuple[int, int, int, int]:
    """(kernel, stride, padding, dilation) of a window layer along time."""
    a = n.attrs

    def first(v, default):
        v = a.get(v, default)
        return int(v[0]) if isinstance(v, (list, tuple)) else int(v)

    if n.op in ("conv2d", "conv1d"):
        return first("kernel_size", 1), first("stride", 1), first("padding", 0), first("dilation", 1)
    return first("kernel_size", 1), first("stride", 1), first("padding", 0), 1


def _with_time(values, value: int):
    """A per-axis attribute with its time entry (the first) replaced."""
    if isinstance(values, (list, tuple)):
        return [value] + list(values[1:])
    return value


def _row_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(shape[:TIME_AXIS]) + (1,) + tuple(shape[TIME_AXIS + 1:])


def is_time_crop(n: Node, src: Node) -> bool:
    """``x[:, :, :k]`` (or ``x[..., :k]`` on a 3-D tensor): keeps the first frames and everything else."""
    if n.op != "select":
        return False
    index = list(n.attrs.get("index", []))
    if len(index) <= TIME_AXIS:
        return False
    for ax, item in enumerate(index):
        if not isinstance(item, list):
            return False
        _, start, stop, step = item
        if ax == TIME_AXIS:
            if start not in (None, 0) or step not in (None, 1):
                return False
        elif not (start in (None, 0) and stop in (None, src.shape[ax]) and step in (None, 1)):
            return False
    return True


def _time_pad(graph: Graph, n: Node) -> tuple[int, int] | None:
    """(left, right) frames of a zero pad of the time axis only, read by one conv or pool over time alone (which
    takes them into its cache), or None."""
    p = n.attrs["pads"]
    readers = graph.consumers(n.name)
    if len(p) == 4 and (p[2] or p[3]) or len(readers) != 1 or readers[0].op not in WINDOW_OPS or \
            readers[0].inputs != [n.name] or n.name in graph.outputs or readers[0].op == "maxpool2d":
        return None
    return int(p[0]), int(p[1])


def plan(graph: Graph, where: str = "streaming") -> StreamPlan:
    """The streaming form of a windowed conv deployment ``graph``, or an UnsupportedError naming the layer that
    mixes time steps in a way a stream cannot."""
    if len(graph.inputs) != 1 or len(graph.outputs) != 1:
        raise UnsupportedError(f"model '{graph.name}' has {len(graph.inputs)} inputs and {len(graph.outputs)} "
                               f"outputs; {where} reads one stream of frames and gives one output")
    inp = graph.inputs[0]
    if len(inp.shape) not in (3, 4) or inp.shape[0] != 1:
        raise UnsupportedError(f"model '{graph.name}' reads [{', '.join(map(str, inp.shape))}]; {where} needs frames "
                               "on axis 2: [1, C, T, F] (Conv2d over time x frequency) or [1, C, T] (Conv1d)")
    frames = int(inp.shape[TIME_AXIS])
    timing: dict[str, tuple[int, int]] = {inp.name: (1, 0)}   # time-ful node -> (S, D): row r complete at r·S + D
    length: dict[str, int] = {inp.name: frames}                # rows in the windowed graph
    guards: dict[str, frozenset[str]] = {inp.name: frozenset()}
    caches: dict[str, CacheSpec] = {}
    pools: dict[str, PoolSpec] = {}
    nodes: list[Node] = [Node(inp.name, "input", [], _row_shape(inp.shape))]
    static: set[str] = set()
    fire_frame = 0
    lookahead = 0
    crops: list[str] = []
    time_pads: dict[str, tuple[int, int]] = {}  # a window layer -> (left, right) frames of a zero pad before it
    through: dict[str, str] = {}  # a pad folded into its reader's cache -> the tensor it pads

    for n in graph.nodes:
        if n.op == "input":
            continue
        timeful = [i for i in n.inputs if i in timing]
        if n.op == "pad" and timeful and _time_pad(graph, n) is not None:
            # zero frames before / after the sequence (F.pad(x, (k - 1, 0)): a causal conv): its reader's cache
            # starts with the left ones and a flush pushes the right ones, as for the conv's own time padding
            reader = graph.consumers(n.name)[0]
            time_pads[reader.name] = _time_pad(graph, n)
            through[n.name] = through.get(timeful[0], timeful[0])
            timing[n.name], guards[n.name] = timing[timeful[0]], guards[timeful[0]]
            continue
        if not timeful:
            static.add(n.name)
            nodes.append(n.copy())
            guards[n.name] = frozenset().union(*(guards[i] for i in n.inputs if i in guards))
            continue
        src = graph[timeful[0]]
        k, s, p, d = _time_params(n) if n.op in WINDOW_OPS and len(n.shape) >= 3 else (1, 1, 0, 1)
        left, right = (p + time_pads[n.name][0], p + time_pads[n.name][1]) if n.name in time_pads else (p, p)
        if k > 1 or s > 1 or left > 0 or right > 0:
            k_eff = (k - 1) * d + 1
            if max(left, right) > k_eff - 1:
                raise UnsupportedError(f"layer '{n.name}' ({n.op}) pads time by {max(left, right)} frames, more than "
                                       f"its window ({k_eff} frames) needs; {where} supports time padding up to "
                                       "kernel - 1")
            S, D = timing[src.name]
            cache = CacheSpec(f"{n.name}:cache", n.name, through.get(src.name, src.name), k_eff, k_eff - 1 - left, s,
                              tuple(src.shape[1:TIME_AXIS]) + tuple(src.shape[TIME_AXIS + 1:]),
                              max_pool=n.op == "maxpool2d", flush_rows=right)
            caches[cache.name] = cache
            window_shape = tuple(src.shape[:TIME_AXIS]) + (k_eff,) + tuple(src.shape[TIME_AXIS + 1:])
            nodes.append(Node(cache.name, "time_cache", [through.get(src.name, src.name)], window_shape,
                              {"rows": k_eff}))
            guards[cache.name] = guards[src.name] | {cache.name}
            layer = n.copy()
            layer.inputs = [cache.name]
            layer.attrs = dict(layer.attrs)
            layer.attrs["padding"] = _with_time(layer.attrs.get("padding", 0), 0)
            layer.attrs["stride"] = _with_time(layer.attrs.get("stride", 1), 1)
            if n.op == "avgpool2d" and p > 0 and not n.attrs.get("count_include_pad", True):
                raise UnsupportedError(f"layer '{n.name}': average pooling over time with padding and "
                                       f"count_include_pad=False cannot stream; use count_include_pad=True")
            layer.shape = _row_shape(n.shape)
            nodes.append(layer)
            timing[n.name] = (S * s, D + (k_eff - 1 - left) * S)
            length[n.name] = int(n.shape[TIME_AXIS])
            guards[n.name] = guards[cache.name]
            continue
        if n.op == "global_avgpool":
            S, D = timing[src.name]
            rows = length[src.name]
            done = (rows - 1) * S + D
            fire_frame = max(fire_frame, done)
            lookahead = max(lookahead, done - (frames - 1))
            inner = int(np.prod(src.shape[TIME_AXIS + 1:])) if len(src.shape) > TIME_AXIS + 1 else 1
            pools[n.name] = PoolSpec(n.name, src.name, rows, int(src.shape[1]), inner)
            nodes.append(Node(n.name, "running_pool", [src.name], n.shape, {"rows": rows, "inner": inner}))
            guards[n.name] = guards[src.name]
            static.add(n.name)
            continue
        if n.op == "select" and is_time_crop(n, src):
            crops.append(n.name)
            nodes.append(Node(n.name, "reshape", [src.name], _row_shape(src.shape)))
            timing[n.name], length[n.name], guards[n.name] = timing[src.name], int(n.shape[TIME_AXIS]), guards[src.name]
            continue
        pointwise_conv = n.op in ("conv2d", "conv1d") and (k, s, p) == (1, 1, 0)
        # a view that only adds or drops trailing size-1 axes ([N, C, T] <-> [N, C, T, 1] around a 1-D pool): local
        time_view = n.op == "reshape" and tuple(n.shape[:TIME_AXIS + 1]) == tuple(src.shape[:TIME_AXIS + 1]) and \
            all(d == 1 for d in n.shape[TIME_AXIS + 1:]) and all(d == 1 for d in src.shape[TIME_AXIS + 1:])
        if n.op in ROW_OPS or pointwise_conv or n.op == "batchnorm" or time_view:
            others = [i for i in n.inputs if i not in timing]
            if others:
                raise UnsupportedError(f"layer '{n.name}' ({n.op}) combines a stream of frames with "
                                       f"'{others[0]}', which has no time axis; {where} cannot broadcast it per frame")
            if n.op == "concat" and n.attrs["dim"] % len(n.shape) == TIME_AXIS:
                raise UnsupportedError(f"layer '{n.name}' concatenates along time; {where} needs time to flow "
                                       "frame by frame")
            t0 = timing[timeful[0]]
            for i in timeful[1:]:
                if timing[i] != t0 or length[i] != length[timeful[0]]:
                    raise UnsupportedError(f"layer '{n.name}' ({n.op}) combines '{timeful[0]}' and '{i}', whose frames "
                                           "arrive at different times (different time strides, or a conv padded on "
                                           "both time sides, which looks ahead, in one branch); make the time convs "
                                           "causal (pad kernel - 1 and keep the first frames) so that both branches "
                                           "align")
            layer = n.copy()
            layer.shape = _row_shape(n.shape)
            nodes.append(layer)
            timing[n.name], length[n.name] = t0, length[timeful[0]]
            guards[n.name] = frozenset().union(*(guards[i] for i in timeful))
            continue
        raise UnsupportedError(f"layer '{n.name}' ({n.op}) reads '{src.name}' across time in a way {where} cannot "
                               "split into frames; supported: convs and pools over time (cached), layers local in "
                               "time, a crop keeping the first frames, and global average pooling over time")
    out = graph.outputs[0]
    if out in timing:
        raise UnsupportedError(f"model '{graph.name}' outputs a sequence ('{out}'); {where} of a conv model needs "
                               "a global average pool over time before the output")
    if not pools:
        raise UnsupportedError(f"model '{graph.name}' has no global average pool over time; {where} of a conv model "
                               "pools the window as a running sum (AdaptiveAvgPool2d(1) / AdaptiveAvgPool1d(1))")
    if not caches:
        raise UnsupportedError(f"model '{graph.name}' has no layer with extent in time; nothing to stream")
    step = Graph(nodes, list(graph.outputs), f"{graph.name}.step")
    notes = []
    if lookahead > 0 and crops:
        raise UnsupportedError(f"model '{graph.name}' looks {lookahead} frame(s) ahead and crops time at "
                               f"'{crops[0]}'; {where} ends a look-ahead window by pushing each layer's right padding, "
                               "which a crop would cut: make the time convs causal (pad kernel - 1, keep the first "
                               "frames) or drop the crop")
    if lookahead > 0:
        notes.append(f"the model looks {lookahead} frame(s) ahead (time padding on the right): streamed, its outputs "
                     f"lag by {lookahead} frame(s); a flush (edgekit_model_flush) ends a window as the windowed model "
                     "does")
    return StreamPlan(graph, step, frames, caches, pools, guards, fire_frame, max(lookahead, 0), notes)


def step_qgraph(sp: StreamPlan, qg):
    """The integer parameters of the step graph: every layer's those of the same layer of the windowed model's
    lowered graph ``qg`` (same scales, weights, multipliers); a cache keeps its input's scale."""
    from edgekit.qgraph import QGraph, QNode

    nodes = {}
    for n in sp.step.nodes:
        if n.op == "time_cache":
            src = qg.nodes[n.inputs[0]]
            nodes[n.name] = QNode(n, src.out_scale, src.out_zp)
        else:
            q = qg.nodes[n.name]
            nodes[n.name] = QNode(n, q.out_scale, q.out_zp, q.q)
    return QGraph(sp.step, nodes, list(qg.notes))


# ---- the integer reference of a plan (the float step is converters/streaming.py's ConvStreamingModel) -------------

class StreamRunner:
    """Steps a :class:`StreamPlan` over int8 frames for a batch of streams through edgekit/qgraph.py's per-layer
    integer reference, with the windowed model's integer parameters (``qgraph``: the lowered *windowed* graph).
    :meth:`step` returns the output after a frame, or None when the output did not fire on this frame."""

    def __init__(self, sp: StreamPlan, qgraph):
        self.sp = sp
        self.qnodes = step_qgraph(sp, qgraph).nodes
        self.reset(1)

    def pad_value(self, c: CacheSpec) -> int:
        return -128 if c.max_pool else self.qnodes[c.name].out_zp

    def reset(self, batch: int) -> None:
        self.batch = batch
        self.cache = {c.name: np.full((batch,) + self.sp.step[c.name].shape[1:], self.pad_value(c), np.int8)
                      for c in self.sp.caches.values()}
        self.countdown = {c.name: c.wait for c in self.sp.caches.values()}
        self.ring = {p.name: np.zeros((batch, p.rows, p.channels), np.int64) for p in self.sp.pools.values()}
        self.ring_pos = {p.name: 0 for p in self.sp.pools.values()}
        self.output = None

    def step(self, frame: np.ndarray | None, pad_into: str | None = None):
        """One frame of int8 codes [N, C, 1, F] (or [N, C, 1]). ``pad_into``: instead of a frame, one padding row
        into that cache (a flush)."""
        from edgekit import qgraph, qmath

        # (a flush row stands for what the caches before it have already given: they count as fired)
        fired: set[str] = set(self.sp.guards[pad_into]) - {pad_into} if pad_into else set()
        values: dict[str, np.ndarray] = {} if frame is None else {self.sp.step.inputs[0].name: np.asarray(frame)}
        produced = False
        for n in self.sp.step.nodes:
            if n.name == pad_into:
                c = self.cache[n.name]
                x = [np.full((self.batch,) + c.shape[1:2] + (1,) + c.shape[3:], self.pad_value(self.sp.caches[n.name]),
                             c.dtype)]
            elif n.op == "input" or not all(i in values for i in n.inputs):
                continue
            elif n.op != "time_cache" and not self.sp.guards[n.name] <= fired:
                continue
            else:
                x = [values[i] for i in n.inputs]
            if n.op == "time_cache":
                c = self.cache[n.name]
                c[:, :, :-1] = c[:, :, 1:]
                c[:, :, -1:] = x[0]
                if self.countdown[n.name] == 0:
                    fired.add(n.name)
                    values[n.name] = c.copy()
                    self.countdown[n.name] = self.sp.caches[n.name].period - 1
                else:
                    self.countdown[n.name] -= 1
                continue
            if n.op == "running_pool":
                p, qn = self.sp.pools[n.name], self.qnodes[n.name]
                row = (x[0].astype(np.int64) - qn.q["in_zp"]).reshape(self.batch, p.channels, -1).sum(-1)
                self.ring[n.name][:, self.ring_pos[n.name]] = row
                self.ring_pos[n.name] = (self.ring_pos[n.name] + 1) % p.rows
                total = self.ring[n.name].sum(1).reshape((self.batch,) + tuple(n.shape[1:]))
                values[n.name] = qmath.requantize(total, qn.q["mult"], qn.q["shift"], qn.out_zp)
                continue
            if n.op in ("reshape", "flatten"):
                values[n.name] = x[0].reshape((self.batch,) + tuple(n.shape[1:]))
            else:
                values[n.name] = qgraph.run_node_int8(self.qnodes[n.name], x, self.sp.step)
            if n.name == self.sp.step.outputs[0]:
                produced = True
        if produced:
            self.output = values[self.sp.step.outputs[0]]
            return self.output
        return None

    def flush(self):
        """End the window as the windowed model does: each cache, in order, takes its layer's right padding rows and
        the layers after it compute the rows they complete. Returns the output after the flush."""
        for c in self.sp.caches.values():
            for _ in range(c.flush_rows):
                self.step(None, pad_into=c.name)
        return self.output

    def run(self, x: np.ndarray) -> np.ndarray:
        """Whole windows ``x`` [N, C, T, F] (the windowed model's input) from reset; the output after the last
        frame (the last output that fired), after a flush for a model that looks ahead."""
        x = np.asarray(x)
        self.reset(len(x))
        for t in range(x.shape[TIME_AXIS]):
            self.step(x[:, :, t:t + 1])
        if not self.sp.causal:
            self.flush()
        if self.output is None:
            raise UnsupportedError(f"model '{self.sp.graph.name}': no output fired within {x.shape[TIME_AXIS]} frames")
        return self.output


def frames_of(x: np.ndarray) -> np.ndarray:
    """Windows [N, C, T, F] (or [N, C, T]) as a device's frame sequence [N, T, F, C] (or [N, T, C]): one step's
    input is contiguous, channels last as the Cortex-M programs keep them."""
    x = np.asarray(x)
    return np.ascontiguousarray(np.moveaxis(x, 1, -1))
