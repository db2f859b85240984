"""The microcontroller program: the deployment graph as a list of kernel calls on one statically planned arena.

Where it sits: inside the Cortex-M target. :func:`build_program` turns a graph (float32) or a lowered int8 graph
(edgekit/qgraph.py) into NHWC tensors, constant arrays (weights in the layout each kernel wants) and steps — one
kernel call each, a TVM kernel (tvm_kernels.py) or one of edgekit's own int8 micro-kernels (kernels/). It then plans
the arena with edgekit/memplan.py. Code generation (codegen.py) only prints what is here, and the estimators read
the same plan, so the arena in the estimate is the arena in the ELF.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgekit.errors import UnsupportedError
from edgekit.graph import ACTIVATIONS, Graph, Node
from edgekit.memplan import ArenaPlan, Buffer, plan_arena

from edgekit.targets.mcu.kernel_spec import KernelSpec

# Operators the Cortex-M target runs, per dtype, in one-shot programs.
FLOAT_OPS = {"input", "conv1d", "conv2d", "linear", "maxpool2d", "avgpool2d", "global_avgpool", "add", "mul", "concat",
             "reshape", "flatten", "select", "upsample", "transpose", "depth_to_space", "prelu", "pad", *ACTIVATIONS}
# (transpose: a channel shuffle only, see channel_shuffle_groups)
INT8_OPS = FLOAT_OPS
# (Recurrent layers, gru/lstm/lmu/egru, never get here: they build as streaming step programs, streaming.py.)
FOLLOW_UPS = {
    "batchnorm": "put it right after a conv/linear so edgekit folds it",
    "softmax": "drop the final softmax for deployment (argmax is unchanged)",
}
DTYPE_C = {"int8": "int8_t", "float32": "float", "int32": "int32_t", "int16": "int16_t", "uint8": "uint8_t"}
DTYPE_BYTES = {"int8": 1, "float32": 4, "int32": 4, "int16": 2, "uint8": 1}


@dataclass
class Tensor:
    """An activation tensor in the arena (or a view of one)."""

    name: str
    shape: tuple[int, ...]          # physical layout (NHWC for 4-D)
    dtype: str
    alias_of: str | None = None     # shares the buffer of another tensor
    offset: int = 0
    external: bool = False          # not in the arena: the model input read in place through a pointer
    state_offset: int | None = None  # not in the arena: a streaming cache kept in ek_state at this byte offset

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * DTYPE_BYTES[self.dtype]


@dataclass
class Const:
    name: str
    data: np.ndarray

    @property
    def dtype(self) -> str:
        return str(self.data.dtype)


@dataclass
class Step:
    """One kernel call. ``kind``: "tvm" (a kernel TVM generates from ``spec``), one of edgekit's int8 micro-kernels
    (ek_kernels.FUNCTIONS: "ek_conv", "ek_dw", "ek_fc", "ek_sconv", "ek_sfc", "ek_add", "ek_mul", "ek_pool", "ek_lut",
    "ek_concat", "ek_transpose"), "copy" (a patch tile into its tensor, or a window of rows and columns out of one:
    ``crop_row``, ``crop_col``), or in streaming programs "tvm_cell" (a recurrent cell) and "commit" (a new state
    into ek_state)."""

    layer: str
    kind: str
    inputs: list[str]
    consts: list[str]
    output: str
    spec: KernelSpec | None = None
    params: dict[str, Any] = field(default_factory=dict)   # micro-kernel parameters (ints), printed as a struct
    macs: int = 0
    scratch_bytes: int = 0
    symbol: str = ""
    in_offset: int = 0                  # micro-kernels: bytes into the input buffer where this call reads
    in2_offset: int = 0                 # ek_add, ek_mul: the same in the second input's buffer
    out_offset: int = 0                 # ek_conv: bytes into the output buffer where this call writes (one group's
                                        # channels of a grouped 1x1 conv, ek_kernels.grouped_1x1_steps)
    nz_macs: int = 0                    # sparse micro-kernels: MACs of the stored (non-zero) weights
    dense_weight_bytes: int = 0         # micro-kernels: the weights in the dense layout ...
    stored_weight_bytes: int = 0        # ... and as stored in flash (compressed for pruned layers)
    guard: tuple[int, ...] = ()         # conv streaming: the caches (gate bits) that must fire for this call to run
    rate: float = 1.0                   # conv streaming: the fraction of steps on which the call runs

    @property
    def is_micro_kernel(self) -> bool:
        return self.kind.startswith("ek_")


@dataclass
class StateBuffer:
    """One state vector of a streaming program in ``ek_state``: ``layer``'s ``kind`` (h, c, y, m), ``size``
    elements of ``dtype`` at byte ``offset``; ``new`` names the arena tensor that holds its value after the step."""

    name: str
    layer: str
    kind: str
    size: int
    dtype: str
    new: str
    offset: int = 0
    init: float = 0                     # value every element takes at edgekit_model_reset()

    @property
    def nbytes(self) -> int:
        return self.size * DTYPE_BYTES[self.dtype]


@dataclass
class Program:
    """Kernel calls on one planned arena. One-shot (``streaming`` False): one call of the list is one inference.
    Streaming (streaming.py): one call of the list is one step on one input sample, and ``states`` persist in
    ``ek_state`` between steps."""

    name: str
    dtype: str
    tensors: dict[str, Tensor]
    consts: dict[str, Const]
    steps: list[Step]
    input: str
    output: str
    plan: ArenaPlan | None = None
    input_q: tuple[float, int] | None = None     # int8: (scale, zero point) of input and output
    output_q: tuple[float, int] | None = None
    notes: list[str] = field(default_factory=list)
    schedule: dict | None = None                  # how the schedule was chosen (for the report)
    patch: dict | None = None                     # split_after, grid, mac_overhead when patch-based
    states: list[StateBuffer] = field(default_factory=list)
    steps_per_sequence: int = 0                   # streaming: the sequence length the model was trained on
    call_table: bool | None = None                # run from a call table (codegen.uses_call_table); None: if patched

    @property
    def streaming(self) -> bool:
        return self.steps_per_sequence > 0

    @property
    def arena_bytes(self) -> int:
        return self.plan.arena_bytes if self.plan else 0

    @property
    def state_bytes(self) -> int:
        """Bytes of ek_state: every state vector, each starting on a 4-byte boundary."""
        return sum(-(-s.nbytes // 4) * 4 for s in self.states)

    @property
    def event_states(self) -> list[StateBuffer]:
        """The EGRU outputs y: their non-zero entries are the events of a step."""
        return [s for s in self.states if s.kind == "y"]

    @property
    def const_bytes(self) -> int:
        return sum(c.data.nbytes for c in self.consts.values())

    def const_bytes_by_layer(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for s in self.steps:
            out[s.layer] = out.get(s.layer, 0) + sum(self.consts[c].data.nbytes for c in s.consts)
        return out


def nhwc(shape: tuple[int, ...]) -> tuple[int, ...]:
    return (shape[0], shape[2], shape[3], shape[1]) if len(shape) == 4 else tuple(shape)


# Torch axis -> physical axis for 4-D tensors.
_NCHW_TO_NHWC = (0, 3, 1, 2)


def channel_shuffle_groups(graph: Graph, n: Node) -> int | None:
    """ShuffleNet's channel shuffle -- x.view(N, g, C/g, H, W).transpose(1, 2).reshape(N, C, H, W) -- is a fixed
    permutation of the channels; on NHWC data it is one gather. For the transpose of that pattern: g; else None."""
    if n.op != "transpose" or list(n.attrs["perm"]) != [0, 2, 1, 3, 4]:
        return None
    view = graph[n.inputs[0]]
    if view.op != "reshape" or not view.inputs or len(graph[view.inputs[0]].shape) != 4:
        return None
    c, h, w = graph[view.inputs[0]].shape[1:]
    g = view.shape[1]
    users = graph.consumers(n.name)
    if tuple(view.shape[2:]) != (c // g, h, w) or g * (c // g) != c or len(graph.consumers(view.name)) != 1 or \
            not users or any(u.op != "reshape" or tuple(u.shape[1:]) != (c, h, w) for u in users):
        return None
    return g


# Layers over [N, C, L] (Conv1d models) that keep their output channels last: between them a [N, C, L] tensor is
# stored as [N, L, 1, C] (NHWC of [N, C, L, 1]: the layout of the conv kernels, and time on axis 2 as in the streaming
# plans of edgekit/convstream.py), and a Conv1d runs as a conv2d with a Kx1 kernel; elsewhere a 3-D tensor is kept in
# torch order like any tensor that is not an image.
_ELEMENTWISE = ACTIVATIONS + ("add", "mul")


def kx1_view(graph: Graph, n: Node) -> str | None:
    """``"to"`` for a reshape of [N, C, L] to [N, C, L, 1] (the view a 1-D pool runs on: the importers write
    MaxPool1d / AvgPool1d as the 2-D pool with a Kx1 window between two reshapes), ``"from"`` for the way back, else
    None."""
    if n.op != "reshape":
        return None
    src = tuple(graph[n.inputs[0]].shape)
    if len(src) == 3 and tuple(n.shape) == src + (1,):
        return "to"
    if len(src) == 4 and src[3] == 1 and tuple(n.shape) == src[:3]:
        return "from"
    return None


def channels_last_1d(graph: Graph) -> set[str]:
    """Names of the layers whose [N, C, L] output a program keeps channels last: the Conv1d layers, the way back from
    a 1-D pool's [N, C, L, 1] view (kx1_view) and the elementwise layers that read only such outputs, of one shape."""
    out: set[str] = set()
    for n in graph.nodes:
        if n.op == "conv1d" or kx1_view(graph, n) == "from" or \
                n.op in _ELEMENTWISE and n.inputs and all(i in out for i in n.inputs) and \
                len({tuple(graph[i].shape) for i in n.inputs}) == 1 or n.op == "pad" and n.inputs[0] in out or \
                n.op == "depth_to_space" and len(n.shape) == 3 and n.attrs["mode"] == "DCR" and n.inputs[0] in out \
                or n.op == "select" and len(n.shape) == 3 and n.inputs[0] in out and _sequence_window(n) is not None:
            out.add(n.name)
    return out


def _sequence_window(n: Node) -> int | None:
    """Where a select of [N, C, L] that keeps every channel and a window of the sequence starts (None otherwise)."""
    index = list(n.attrs["index"]) + [["slice", None, None, None]] * (3 - len(n.attrs["index"]))
    if any(not isinstance(i, list) for i in index) or index[0] != ["slice", None, None, None] or \
            index[1] != ["slice", None, None, None] or index[2][3] not in (None, 1):
        return None
    return int(index[2][1] or 0)


def as_image(n: Node, inputs: list[str]) -> Node:
    """Layer ``n`` over [N, C, L] as the same layer over [N, C, L, 1] reading ``inputs``: a Conv1d becomes a conv2d
    with a Kx1 kernel (the same sums, so the same integers)."""
    m = n.copy()
    m.inputs = list(inputs)
    m.shape = tuple(n.shape) + (1,)
    if n.op == "conv1d":
        a = n.attrs
        m.op = "conv2d"
        m.attrs.update(kernel_size=[a["kernel_size"][0], 1], stride=[a["stride"][0], 1], padding=[a["padding"][0], 0],
                       dilation=[a["dilation"][0], 1])
        if "weight" in m.params:
            m.params["weight"] = m.params["weight"][..., None]
    return m


def check_supported(graph: Graph, dtype: str, target: str) -> None:
    ops = INT8_OPS if dtype == "int8" else FLOAT_OPS
    bad = [n for n in graph.nodes if n.op not in ops or (n.op == "transpose" and not channel_shuffle_groups(graph, n))
           or n.op == "depth_to_space" and len(n.shape) == 3 and n.attrs["mode"] != "DCR"]
    if bad:
        def hint(n) -> str:
            if n.op == "transpose":
                return ": only a channel shuffle (view, transpose(1, 2), reshape) runs on a microcontroller"
            if n.op == "depth_to_space":
                return ": the channel-major interleave of a grouped ConvTranspose1d; use groups=1 on a microcontroller"
            if n.op == "softmax" and n.name not in graph.outputs:
                return ""  # (the follow-up below is for a final softmax)
            if n.op in FOLLOW_UPS:
                return ": " + FOLLOW_UPS[n.op]
            return f": {target} runs it in float32 (without --quantize)" if n.op in FLOAT_OPS else ""

        detail = "; ".join(f"'{n.name}' ({n.op}{hint(n)})" for n in bad)
        raise UnsupportedError(f"{len(bad)} layer(s) cannot run on {target} in {dtype}: {detail}; phone-arm64 (the "
                               "phone target) runs them")
    for n in graph.nodes:
        if n.op in ("conv2d",) and n.attrs["groups"] not in (1, n.attrs["in_channels"]) and dtype == "int8":
            continue
        if n.op not in ("add", "mul"):
            continue
        a_shape, b_shape = graph[n.inputs[0]].shape, graph[n.inputs[1]].shape
        per_channel = n.op == "mul" and len(b_shape) == 4 and tuple(b_shape[2:]) == (1, 1) and \
            tuple(b_shape[:2]) == tuple(a_shape[:2])
        if a_shape != b_shape and not per_channel:
            raise UnsupportedError(f"layer '{n.name}': {n.op} with broadcasting ({graph[n.inputs[0]].shape} and "
                                   f"{graph[n.inputs[1]].shape}) is not supported on {target}")


def _gather_map(src_shape_torch: tuple[int, ...], index: list) -> tuple[tuple, tuple, tuple[int, ...]]:
    """For basic indexing of a tensor: per output axis (source physical axis, offset, step), fixed source axes,
    and the output torch shape."""
    rank = len(src_shape_torch)
    phys = _NCHW_TO_NHWC if rank == 4 else tuple(range(rank))
    index = list(index) + [["slice", None, None, None]] * (rank - len(index))
    kept, fixed, out_shape = [], {}, []
    for ax, spec in enumerate(index):
        size = src_shape_torch[ax]
        if isinstance(spec, list):
            start, stop, step = slice(spec[1], spec[2], spec[3]).indices(size)
            n = len(range(start, stop, step))
            kept.append((phys[ax], start, step))
            out_shape.append(n)
        else:
            fixed[phys[ax]] = int(spec) % size
    return tuple(kept), tuple(sorted(fixed.items())), tuple(out_shape)


@dataclass
class TileContext:
    """One layer's call for one tile of a patch schedule: buffers read, windows in them, padding, output."""

    ins: list[str]
    windows: list[tuple[int, int, int, int]]   # (row, col, h, w) read in each input buffer
    pads: tuple[int, int, int, int]
    out: str
    out_shape: tuple[int, ...]
    macs: int


# A grouped (not depthwise) int8 conv of up to this many groups runs edgekit's dense conv kernel on block-diagonal
# weights (zeros between the groups: the same integers, G times the MACs at ~0.9 instructions each) rather than TVM's
# grouped kernel (zoo ShuffleNet's 1x1 convs, 4 groups: 12.4 instructions per MAC; the whole model on the M7 4.18 M ->
# 1.93 M instructions); the weights take G times the flash. Not on the scalar RV32 kernels (not measured there). A
# grouped 1x1 conv runs instead as one call a group (ek_kernels.grouped_1x1_steps: its pixels as rows of one pixel,
# the group's channels read and written at the pixel stride), at its own MACs and weights, on the RV32 kernels too.
GROUPED_AS_DENSE_MAX = 8


def _block_diagonal(qn, groups: int):
    """``qn`` with its grouped weights [Cout, Cin/G, kh, kw] as dense [Cout, Cin, kh, kw], zero outside each group's
    block (bias and requantization per output channel are unchanged, so every output is the same integer)."""
    import copy

    w = np.asarray(qn.q["weight"])
    cout, cin_g = w.shape[:2]
    dense = np.zeros((cout, cin_g * groups, *w.shape[2:]), dtype=w.dtype)
    per = cout // groups
    for g in range(groups):
        dense[g * per:(g + 1) * per, g * cin_g:(g + 1) * cin_g] = w[g * per:(g + 1) * per]
    out = copy.copy(qn)
    out.q = {**qn.q, "weight": dense}
    return out


class _Builder:
    def __init__(self, graph: Graph, dtype: str, qg=None, use_ek_kernels: bool = False, cpu: str = "cortex-m7",
                 platform=None):
        from edgekit.targets.mcu.platforms import get_platform

        self.g, self.dtype, self.qg, self.use_ek, self.cpu = graph, dtype, qg, bool(use_ek_kernels), cpu
        # which layouts of edgekit's kernels (kernel_pack.ISAS): use_ek_kernels may name them ("mve": Helium)
        self.ek_isa = use_ek_kernels if isinstance(use_ek_kernels, str) else "dsp"
        self.platform = platform or get_platform("cortex_m")
        self.tensors: dict[str, Tensor] = {}
        self.consts: dict[str, Const] = {}
        self.steps: list[Step] = []
        self.notes: list[str] = []
        self.conv_fc_layers: dict[str, bool] = {}  # layer -> its conv calls run as FC rows (one layout a layer)
        self.wide_layers: dict[str, bool] = {}  # layer -> its conv weights stored widened (one layout a layer)
        self.wide_rooms: dict[str, int] = {}  # layer -> the scratch its first widened call took within a grant
        self.wide_extra_bytes = 0  # flash those widened weights add (and channels-last depthwise weights)
        self.dw_wide_layers: set[str] = set()  # depthwise layers counted there (a layer's tiles count once)
        self.nlc_layers = channels_last_1d(graph)  # [N, C, L] outputs kept channels last (Conv1d models)
        self.nlc: set[str] = set()  # tensors holding such an output, [1, L, 1, C]
        self.torch_names: dict[str, str] = {}  # a torch-order copy of one of them -> the layer it is the output of

    def const(self, name: str, data: np.ndarray) -> str:
        """Add constant ``name`` (returns the name its readers use). The same name with the same bytes is stored
        once (tile calls of a layer share its weights); with other bytes — tiles of one layer packed differently,
        e.g. a depthwise layer whose narrower tiles take the other layout — it becomes ``layer_v2.suffix``, ...
        (the suffix, which says what the array is, kept): a call never reads another call's packing."""
        data = np.ascontiguousarray(data)
        head, dot, suffix = name.rpartition(".")
        key, k = name, 1
        while key in self.consts:
            old = self.consts[key].data
            if old.dtype == data.dtype and old.shape == data.shape and np.array_equal(old, data):
                return key
            k += 1
            key = f"{head}_v{k}.{suffix}" if dot else f"{name}_v{k}"
        self.consts[key] = Const(key, data)
        return key

    def q(self, name: str):
        if self.qg is None:
            return None
        qn = self.qg.nodes[name]
        w = qn.q.get("weight")
        if qn.node.op == "conv1d" and w is not None and w.ndim == 3:  # a Conv1d runs as a Kx1 conv2d (as_image)
            qn = dataclasses.replace(qn, q={**qn.q, "weight": w[..., None]})
        return qn

    def torch_shape(self, name: str) -> tuple[int, ...]:
        """The torch shape of the layer output tensor ``name`` holds (also for a torch-order copy, _torch_order)."""
        return self.g[self.torch_names.get(name, name)].shape

    def add_tensor(self, name: str, shape, alias_of: str | None = None) -> Tensor:
        t = Tensor(name, tuple(int(s) for s in shape), self.dtype, alias_of)
        self.tensors[name] = t
        return t

    def tvm_step(self, node: Node, op: str, inputs: list[str], consts: list[str], out: str, attrs: dict,
                 macs: int = 0) -> Step:
        spec = KernelSpec(op, self.dtype, tuple(self.tensors[i].shape for i in inputs), self.tensors[out].shape,
                          tuple(sorted(attrs.items())))
        step = Step(node.name, "tvm", inputs, consts, out, spec=spec, macs=macs)
        self.steps.append(step)
        return step

    # ---- per operator ------------------------------------------------------------------------------------------
    def _whole(self, tile: "TileContext | None") -> bool:
        """Whether a layer's call reads whole buffers (no tile, or a tile whose windows are its input buffers whole):
        the kernels without row strides (ek_pool_s8, ek_lut_s8, ek_concat_s8) can run it."""
        return tile is None or all(w[0] == 0 and w[1] == 0 and tuple(w[2:]) == tuple(self.tensors[x].shape[1:3])
                                   for x, w in zip(tile.ins, tile.windows))

    def _io(self, n: Node, tile: "TileContext | None") -> tuple[list[str], Tensor, dict]:
        """Input tensor names, the output tensor and window attrs: the whole layer, or one tile of it."""
        if tile is None:
            return list(n.inputs), self.add_tensor(n.name, nhwc(n.shape)), {}
        out = self.add_tensor(tile.out, tile.out_shape)
        return list(tile.ins), out, {"windows": tuple(tile.windows)}

    def conv2d(self, n: Node, macs: int, tile: "TileContext | None" = None):
        a = n.attrs
        ins, out, extra = self._io(n, tile)
        x = ins[0]
        ph, pw = a["padding"]
        pads = tile.pads if tile is not None else (ph, ph, pw, pw)
        attrs = {"kernel": tuple(a["kernel_size"]), "stride": tuple(a["stride"]), "dilation": tuple(a["dilation"]),
                 "groups": a["groups"], "pads": pads, **extra}
        depthwise = a["groups"] == a["in_channels"] and a["groups"] > 1 and a["out_channels"] == a["in_channels"]
        if self.dtype == "int8":
            qn = self.q(n.name)
            w = qn.q["weight"].transpose(0, 2, 3, 1)  # OIHW -> OHWI
            grouped = 1 < a["groups"] <= GROUPED_AS_DENSE_MAX and not depthwise and self.ek_isa != "rv32"
            if self.use_ek and 1 < a["groups"] <= GROUPED_AS_DENSE_MAX and not depthwise and tile is None:
                from edgekit.targets.mcu import ek_kernels

                steps = ek_kernels.grouped_1x1_steps(self, n, qn, macs, x, out.name)
                if steps:
                    self.steps += steps
                    return
            if self.use_ek and (a["groups"] == 1 or depthwise or grouped):
                from edgekit.targets.mcu import ek_kernels

                step = ek_kernels.conv_step(self, n, _block_diagonal(qn, a["groups"]) if grouped else qn, depthwise,
                                            pads, macs, x, out.name, tile.windows[0] if tile else None)
                if step is not None:
                    self.steps.append(step)
                    return
                self.notes.append(f"layer '{n.name}': TVM's conv kernel (the DSP kernel's smallest tile needs more "
                                  f"than {ek_kernels.CONV_SCRATCH_LIMIT_BYTES:,} B of scratch)")
            attrs.update(in_zp=qn.q["in_zp"], out_zp=qn.out_zp, act_min=qn.q["act_min"], act_max=qn.q["act_max"])
            cs = [self.const(f"{n.name}.w", w), self.const(f"{n.name}.b", qn.q["bias"]),
                  self.const(f"{n.name}.mult", qn.q["mult"]), self.const(f"{n.name}.shift", qn.q["shift"])]
        else:
            w = n.params["weight"].transpose(0, 2, 3, 1)
            b = n.params.get("bias", np.zeros(a["out_channels"], np.float32))
            attrs["act"] = n.attrs.get("activation")
            cs = [self.const(f"{n.name}.w", w.astype(np.float32)), self.const(f"{n.name}.b", b.astype(np.float32))]
        self.tvm_step(n, "conv2d", [x], cs, out.name, attrs, macs)

    def linear(self, n: Node, macs: int):
        x = n.inputs[0]
        in_shape = self.tensors[x].shape
        if len(in_shape) != 2:
            raise UnsupportedError(f"layer '{n.name}': linear on a {len(in_shape)}-D input is not supported on "
                                   "Cortex-M; flatten to (batch, features) first")
        out = self.add_tensor(n.name, n.shape)
        if self.dtype == "int8":
            qn = self.q(n.name)
            if self.use_ek:
                from edgekit.targets.mcu import ek_kernels

                self.steps.append(ek_kernels.fc_step(self, n, qn, macs))
                return
            attrs = {"in_zp": qn.q["in_zp"], "out_zp": qn.out_zp, "act_min": qn.q["act_min"],
                     "act_max": qn.q["act_max"]}
            cs = [self.const(f"{n.name}.w", qn.q["weight"]), self.const(f"{n.name}.b", qn.q["bias"]),
                  self.const(f"{n.name}.mult", qn.q["mult"]), self.const(f"{n.name}.shift", qn.q["shift"])]
        else:
            attrs = {"act": n.attrs.get("activation")}
            b = n.params.get("bias", np.zeros(n.attrs["out_features"], np.float32))
            cs = [self.const(f"{n.name}.w", n.params["weight"].astype(np.float32)),
                  self.const(f"{n.name}.b", b.astype(np.float32))]
        self.tvm_step(n, "linear", [x], cs, out.name, attrs, macs)

    def pool(self, n: Node, tile: "TileContext | None" = None):
        a = n.attrs
        ins, out, extra = self._io(n, tile)
        ih, iw = self.tensors[ins[0]].shape[1:3]
        kh, kw = a["kernel_size"]
        sh, sw = a["stride"]
        ph, pw = a["padding"]
        oh, ow = out.shape[1:3]
        # ceil_mode may need extra padding at the bottom/right edge.
        pb = max(ph, (oh - 1) * sh + kh - ih - ph)
        pr = max(pw, (ow - 1) * sw + kw - iw - pw)
        attrs = {"kernel": (kh, kw), "stride": (sh, sw), "pads": tile.pads if tile else (ph, pb, pw, pr), **extra}
        if n.op == "avgpool2d" and (ph or pw or pb != ph or pr != pw) and not a.get("count_include_pad", True):
            raise UnsupportedError(f"layer '{n.name}': average pooling with padding and count_include_pad=False")
        if self.dtype == "int8" and self.use_ek and self._whole(tile):  # edgekit's pooling kernel
            from edgekit.targets.mcu import ek_kernels

            top, left = (tile.pads[0], tile.pads[2]) if tile is not None else (ph, pw)
            step = ek_kernels.pool_step(self, n, ins[0], out.name, "max" if n.op == "maxpool2d" else "avg",
                                        (kh, kw), (sh, sw), top, left)
            if step is not None:
                self.steps.append(step)
                return
        if self.dtype == "int8" and n.op == "avgpool2d":
            qn = self.q(n.name)
            attrs.update(in_zp=qn.q["in_zp"], out_zp=qn.out_zp, mult=int(qn.q["mult"]), shift=int(qn.q["shift"]))
        self.tvm_step(n, n.op, [ins[0]], [], out.name, attrs)

    def upsample(self, n: Node):
        out = self.add_tensor(n.name, nhwc(n.shape))
        src = self.tensors[n.inputs[0]].shape
        mode = n.attrs.get("mode", "nearest")
        if self.use_ek and len(src) == 4:  # edgekit's int8 kernels where they run
            from edgekit.targets.mcu import ek_kernels

            make = ek_kernels.upsample_step if mode == "nearest" else ek_kernels.bilinear_step
            step = make(self, n.name, n.inputs[0], out.name, src[1:4], tuple(n.attrs["scale"]))
            if step is not None:
                self.steps.append(step)
                return
        self.tvm_step(n, "upsample", [n.inputs[0]], [], out.name, {"scale": tuple(n.attrs["scale"]), "mode": mode})

    def prelu(self, n: Node, tile: "TileContext | None" = None):
        """A slope per channel: TVM's kernel with the channel axis the layout puts them on (NHWC's last; [N, C] and
        a sequence in torch order [N, C, L]: 1). int8: (x - zp) requantized by the positive multiplier or the
        channel's signed negative one (edgekit/qgraph.py), float32: x or a_c · x."""
        ins, out, extra = self._io(n, tile)
        axis = 3 if len(out.shape) == 4 else 1
        if self.dtype == "int8" and self.use_ek and axis == len(out.shape) - 1:  # tables per channel, channels last
            from edgekit.qgraph import prelu_tables
            from edgekit.targets.mcu import ek_kernels

            step = ek_kernels.lut_channels_step(self, n, ins[0], out.name, prelu_tables(self.q(n.name)))
            if step is not None:
                self.steps.append(step)
                return
        if self.dtype == "int8":
            q = self.q(n.name).q
            cs = [self.const(f"{n.name}.negm", np.asarray(q["neg_mult"], np.int32)),
                  self.const(f"{n.name}.negs", np.asarray(q["neg_shift"], np.int32))]
            attrs = {"in_zp": int(q["in_zp"]), "out_zp": int(self.q(n.name).out_zp), "pos_mult": int(q["pos_mult"]),
                     "pos_shift": int(q["pos_shift"]), "axis": axis}
        else:
            cs = [self.const(f"{n.name}.slope", np.asarray(n.params["weight"], np.float32))]
            attrs = {"axis": axis}
        self.tvm_step(n, "prelu", ins[:1], cs, out.name, {**attrs, **extra})

    def pad(self, n: Node):
        """Zero padding: the output filled with the zero point (0.0 in float32), the input's rows copied inside
        (ek_copy_window). NHWC maps pad rows and columns; [N, C, L] in torch order pads each channel's row."""
        src = self.tensors[n.inputs[0]].shape
        out = self.add_tensor(n.name, nhwc(n.shape))
        fill = int(self.q(n.name).out_zp) if self.dtype == "int8" else 0
        self.steps.append(Step(n.name, "pad", [n.inputs[0]], [], out.name,
                               params={"pads": tuple(n.attrs["pads"]), "fill": fill, "rank": len(src)}))

    def depth_to_space(self, n: Node):
        """Channel blocks into pixel blocks. DCR order (a lowered transposed conv's phases, phase-major) on NHWC maps:
        each input pixel's channels are r_h rows of r_w·C contiguous values, every one a block of the output row
        h·r_h + i: copied as blocks (ek_copy_window per input row and phase, ~0.13 instructions a byte on the M7).
        CRD (nn.PixelShuffle, grouped transposed convs) interleaves single channels: TVM's gather kernel."""
        out = self.add_tensor(n.name, nhwc(n.shape))
        rh, rw = n.attrs["block"]
        if n.attrs["mode"] == "DCR":
            self.steps.append(Step(n.name, "copy_blocks", [n.inputs[0]], [], out.name, params={"block": (rh, rw)}))
            return
        self.tvm_step(n, "depth_to_space", [n.inputs[0]], [], out.name, {"block": (rh, rw), "mode": "CRD"})

    def global_avgpool(self, n: Node):
        out = self.add_tensor(n.name, nhwc(n.shape))
        attrs = {}
        src = self.tensors[n.inputs[0]].shape
        if self.dtype == "int8" and self.use_ek and len(src) == 4:  # edgekit's pooling kernel, window = the map
            from edgekit.targets.mcu import ek_kernels

            step = ek_kernels.pool_step(self, n, n.inputs[0], out.name, "avg", src[1:3], (1, 1), 0, 0)
            if step is not None:
                self.steps.append(step)
                return
        if self.dtype == "int8":
            qn = self.q(n.name)
            attrs = {"in_zp": qn.q["in_zp"], "out_zp": qn.out_zp, "mult": int(qn.q["mult"]),
                     "shift": int(qn.q["shift"])}
        self.tvm_step(n, "global_avgpool", [n.inputs[0]], [], out.name, attrs)

    def binary(self, n: Node, tile: "TileContext | None" = None):
        ins, out, extra = self._io(n, tile)
        attrs = {}
        if self.dtype == "int8":
            q = self.q(n.name).q
            keys = ("a_zp", "b_zp", "mult", "shift", "act_min", "act_max") if n.op == "mul" else \
                ("a_zp", "b_zp", "a_mult", "b_mult", "shift", "act_min", "act_max")
            attrs = {k: int(q[k]) for k in keys}
            attrs["out_zp"] = self.q(n.name).out_zp
            # a residual add (whole tensors or a tile's same-size windows of them): edgekit's kernel
            shapes = [self.tensors[i].shape for i in ins + [out.name]]
            if n.op == "add" and self.use_ek and len(ins) == 2 and (
                    tile is None and len(set(shapes)) == 1 or  # two whole tensors of one shape
                    tile is not None and all(len(sh) == 4 and sh[0] == 1 for sh in shapes) and
                    len({sh[3] for sh in shapes}) == 1 and
                    {tuple(w[2:]) for w in tile.windows} == {tuple(shapes[-1][1:3])}):  # same-size windows
                from edgekit.targets.mcu import ek_kernels

                self.steps.append(ek_kernels.add_step(self, n, self.q(n.name), ins, out.name,
                                                      tile.windows if tile is not None else None))
                return
            if n.op == "mul" and self.use_ek and self._whole(tile):  # a product or a gate: edgekit's kernel
                from edgekit.targets.mcu import ek_kernels

                step = ek_kernels.mul_step(self, n, self.q(n.name), ins, out.name)
                if step is not None:
                    self.steps.append(step)
                    return
        else:
            attrs = {"act": n.attrs.get("activation")}
        self.tvm_step(n, n.op, ins, [], out.name, {**attrs, **extra})

    def unary(self, n: Node, tile: "TileContext | None" = None):
        ins, out, extra = self._io(n, tile)
        cs = []
        if self.dtype == "int8":
            lut = self.q(n.name).q["lut"]
            if self.use_ek and self._whole(tile):  # edgekit's table kernel (the same table: bit-exact)
                from edgekit.targets.mcu import ek_kernels

                step = ek_kernels.lut_step(self, n, ins[0], out.name, lut)
                if step is not None:
                    self.steps.append(step)
                    return
            cs = [self.const(f"{n.name}.lut", lut)]
        elif n.op in ("gelu", "leaky_relu", "elu", "hardtanh"):  # float32: the function's attributes
            extra = {**extra, **{k: v for k, v in n.attrs.items() if k in ("approximate", "negative_slope", "alpha",
                                                                                 "min_val", "max_val")}}
        self.tvm_step(n, n.op, ins[:1], cs, out.name, extra)

    def concat(self, n: Node, tile: "TileContext | None" = None):
        ins, out, extra = self._io(n, tile)
        rank = len(n.shape)
        axis = _NCHW_TO_NHWC[n.attrs["dim"] % 4] if rank == 4 else n.attrs["dim"] % rank
        attrs = {"axis": axis}
        if self.dtype == "int8":
            qn = self.q(n.name)
            attrs.update(parts=tuple((int(z), int(m), int(s)) for z, m, s in qn.q["parts"]), out_zp=qn.out_zp)
            if self.use_ek and self._whole(tile) and axis == len(out.shape) - 1:  # along channels: edgekit's kernel
                from edgekit.targets.mcu import ek_kernels

                step = ek_kernels.concat_step(self, n, ins, out.name, attrs["parts"], int(qn.out_zp))
                if step is not None:
                    self.steps.append(step)
                    return
        self.tvm_step(n, "concat", ins, [], out.name, {**attrs, **extra})

    def transpose(self, n: Node):
        """A channel shuffle (check_supported let no other transpose through): NHWC [.., g, C/g] -> [.., C/g, g]."""
        src = self.tensors[n.inputs[0]]
        out = self.add_tensor(n.name, src.shape[:3] + (src.shape[4], src.shape[3]))
        amap = ((0, 0, 1), (1, 0, 1), (2, 0, 1), (4, 0, 1), (3, 0, 1))
        self._move(n, n.inputs[0], out.name, math.prod(src.shape[:3]), src.shape[3], src.shape[4], amap)

    def _move(self, n: Node, src: str, out: str, batches: int, rows: int, cols: int, amap) -> None:
        """``out`` = ``src`` as ``batches`` matrices of ``rows`` x ``cols`` elements, each transposed: edgekit's int8
        kernel (ek_transpose_s8) where it runs, else TVM's gather with the axis map ``amap``."""
        if self.use_ek:
            from edgekit.targets.mcu import ek_kernels

            step = ek_kernels.transpose_step(self, n.name, src, out, int(batches), int(rows), int(cols))
            if step is not None:
                self.steps.append(step)
                return
        self.tvm_step(n, "gather", [src], [], out, {"map": amap, "fixed": ()})

    def reshape(self, n: Node):
        src = self.tensors[n.inputs[0]]
        src_torch = self.torch_shape(n.inputs[0])
        if len(src_torch) == 4 and len(n.shape) == 5 or len(src_torch) == 5 and len(n.shape) == 4:
            # the two views around a channel shuffle: channels split into (g, C/g) as the last two NHWC axes
            shuffle = [u for u in self.g.consumers(n.name) if u.op == "transpose"] if len(n.shape) == 5 else \
                [self.g[n.inputs[0]]]
            if len(shuffle) != 1 or not channel_shuffle_groups(self.g, shuffle[0]):
                raise UnsupportedError(f"layer '{n.name}': a reshape to or from 5-D runs on a microcontroller only as "
                                       "part of a channel shuffle; phone-arm64 (the phone target) runs it")
            n_, c, h, w = n.shape if len(n.shape) == 4 else src_torch
            phys = (n_, h, w, c) if len(n.shape) == 4 else (n_, h, w, n.shape[1], n.shape[2])
            self.add_tensor(n.name, phys, alias_of=n.inputs[0])
            return
        if len(src_torch) == 4 and len(n.shape) == 4:
            if tuple(src_torch) != tuple(n.shape):
                raise UnsupportedError(f"layer '{n.name}': a 4-D to 4-D reshape is not supported on a microcontroller")
            self.add_tensor(n.name, src.shape, alias_of=n.inputs[0])
            return
        if len(src_torch) == 4 and src_torch[1] > 1 and src_torch[2] * src_torch[3] > 1:
            # NHWC in memory, but torch flattens in NCHW order: move the data once (a transpose kernel).
            tname = f"{n.name}.nchw"
            self.add_tensor(tname, src_torch)
            amap = ((0, 0, 1), (3, 0, 1), (1, 0, 1), (2, 0, 1))
            _, h, w, c = src.shape
            self._move(n, n.inputs[0], tname, src.shape[0], h * w, c, amap)
            self.add_tensor(n.name, n.shape, alias_of=tname)
            return
        if len(n.shape) == 4 and len(src_torch) != 4 and n.shape[1] > 1 and n.shape[2] * n.shape[3] > 1:
            raise UnsupportedError(f"layer '{n.name}': reshaping a flat tensor into an image is not supported on "
                                   "a microcontroller")
        self.add_tensor(n.name, nhwc(n.shape), alias_of=n.inputs[0])

    def select(self, n: Node):
        src_torch = self.torch_shape(n.inputs[0])
        kept, fixed, out_torch = _gather_map(src_torch, n.attrs["index"])
        out_phys = nhwc(out_torch)
        if len(out_torch) == 4:
            # Output axes in NHWC order: kept source axes are listed in torch order; reorder them.
            kept = tuple(kept[i] for i in (0, 2, 3, 1))
        out = self.add_tensor(n.name, out_phys)
        src = self.tensors[n.inputs[0]].shape
        if len(out_torch) == 4 and not fixed and len(src) == 4 and out_phys[0] == 1 and out_phys[3] == src[3] and \
                [(ax, step) for ax, _, step in kept] == [(0, 1), (1, 1), (2, 1), (3, 1)] and kept[3][1] == 0:
            # a window of rows and columns with every channel (a causal crop of the time axis, a centre crop):
            # rows of contiguous bytes, copied (~0.13 instructions a byte; TVM's gather ~4 an element)
            self.steps.append(Step(n.name, "copy", [n.inputs[0]], [], out.name,
                                   params={"crop_row": kept[1][1], "crop_col": kept[2][1]}))
            return
        self.tvm_step(n, "gather", [n.inputs[0]], [], out.name, {"map": kept, "fixed": fixed})


    # ---- [N, C, L] tensors kept channels last (Conv1d models) ------------------------------------------------------
    def _gather_3d(self, layer: Node, src: str, out: str, shape: tuple[int, int, int]) -> None:
        """``out`` [1, a, b] = ``src`` [1, b, a] (a TVM gather step attributed to ``layer``)."""
        self.add_tensor(out, shape)
        _, rows, cols = self.tensors[src].shape
        self._move(layer, src, out, 1, rows, cols, ((0, 0, 1), (2, 0, 1), (1, 0, 1)))

    def _channels_last(self, name: str, layer: Node) -> str:
        """The [N, C, L] tensor ``name`` as [1, L, 1, C] for a Conv1d: itself when a layer kept it channels last, else
        a transposed copy (made once)."""
        if name in self.nlc:
            return name
        t = f"{name}.nlc"
        if t not in self.tensors:
            _, c, length = self.tensors[name].shape
            self._gather_3d(layer, name, f"{t}3", (1, length, c))
            self.add_tensor(t, (1, length, 1, c), alias_of=f"{t}3")
        return t

    def _torch_order(self, name: str, layer: Node) -> str:
        """The tensor ``name`` for a layer that reads [N, C, L] in torch order: a channels-last one copied back
        (made once; a view when L = 1)."""
        if name not in self.nlc:
            return name
        t = f"{name}.ncl"
        if t not in self.tensors:
            _, length, _, c = self.tensors[name].shape
            if length == 1:
                self.add_tensor(t, (1, c, 1), alias_of=name)
            else:
                self.add_tensor(f"{name}.lc", (1, length, c), alias_of=name)
                self._gather_3d(layer, f"{name}.lc", t, (1, c, length))
            self.torch_names[t] = name
        return t

    def layer_1d(self, n: Node, macs: int) -> None:
        """A layer of channels_last_1d, or a global average pool reading one: run as the layer over [N, C, L, 1]."""
        m = as_image(n, [self._channels_last(i, n) for i in n.inputs] if n.op == "conv1d" else n.inputs)
        if n.op == "global_avgpool":  # output [N, C, 1]: the same bytes as [1, 1, 1, C]; kept in torch order
            self.global_avgpool(m)
            pooled = self.tensors.pop(n.name)
            pooled.name = f"{n.name}.nlc"
            self.tensors[pooled.name] = pooled
            self.steps[-1].output = pooled.name
            self.add_tensor(n.name, n.shape, alias_of=pooled.name)
            return
        self.nlc.add(n.name)
        if m.op == "depth_to_space":  # [1, L, 1, s·C] phase-major is [1, s·L, 1, C]: the same bytes
            self.add_tensor(n.name, nhwc(m.shape), alias_of=n.inputs[0])
        elif m.op == "select":  # a window of the sequence: a window of rows
            out = self.add_tensor(n.name, nhwc(m.shape))
            self.steps.append(Step(n.name, "copy", [n.inputs[0]], [], out.name,
                                   params={"crop_row": _sequence_window(n), "crop_col": 0}))
        elif m.op == "pad":  # [l, r] of the sequence: rows of the [1, L, 1, C] map
            m.attrs = {"pads": [*n.attrs["pads"], 0, 0]}
            self.pad(m)
        elif m.op == "conv2d":
            self.conv2d(m, macs)
        elif m.op in ("add", "mul"):
            self.binary(m)
        else:
            self.unary(m)

    def layer(self, n: Node, macs: int) -> bool:
        """The kernel calls of one layer of an operator every program kind shares; False for any other operator."""
        view = kx1_view(self.g, n)
        if view == "to":  # [N, C, L] -> [N, C, L, 1] for a 1-D pool: its NHWC is the channels-last [1, L, 1, C]
            t = self._channels_last(n.inputs[0], n)
            self.add_tensor(n.name, self.tensors[t].shape, alias_of=t)
            return True
        if view == "from":  # and back: the pool's NHWC output is a channels-last [N, C, L] as it is
            self.add_tensor(n.name, self.tensors[n.inputs[0]].shape, alias_of=n.inputs[0])
            self.nlc.add(n.name)
            return True
        if n.name in self.nlc_layers or n.op == "global_avgpool" and n.inputs[0] in self.nlc:
            self.layer_1d(n, macs)
            return True
        if any(i in self.nlc for i in n.inputs):
            n = n.copy()
            n.inputs = [self._torch_order(i, n) for i in n.inputs]
        if n.op == "conv2d":
            self.conv2d(n, macs)
        elif n.op == "linear":
            self.linear(n, macs)
        elif n.op in ("maxpool2d", "avgpool2d"):
            self.pool(n)
        elif n.op == "global_avgpool":
            self.global_avgpool(n)
        elif n.op == "upsample":
            self.upsample(n)
        elif n.op == "depth_to_space":
            self.depth_to_space(n)
        elif n.op == "prelu":
            self.prelu(n)
        elif n.op == "pad":
            self.pad(n)
        elif n.op in ("add", "mul"):
            self.binary(n)
        elif n.op in ACTIVATIONS:
            self.unary(n)
        elif n.op == "concat":
            self.concat(n)
        elif n.op in ("reshape", "flatten"):
            self.reshape(n)
        elif n.op == "select":
            self.select(n)
        elif n.op == "transpose":
            self.transpose(n)
        else:
            return False
        return True

    def patch_stage(self, st) -> None:
        """Steps of one patch-schedule stage: each tile through every stage layer, then into the split output."""
        g = self.g
        split = g[st.split_after]
        full = self.add_tensor(split.name, nhwc(split.shape))
        stage = set(st.layers)
        for t, calls in enumerate(st.tiles):
            regions = st.regions[t]
            for call in calls:
                n = g[call.layer]
                ins, windows = [], []
                for i, read in zip(n.inputs, call.reads):
                    if i in stage:
                        buf, reg = f"{i}@{t}", regions[i]
                    else:
                        buf, reg = root_name(self.tensors, i), None
                    ins.append(buf)
                    r0, c0 = (read.r0 - reg.r0, read.c0 - reg.c0) if reg else (read.r0, read.c0)
                    windows.append((r0, c0, read.h, read.w))
                tile = TileContext(ins, windows, call.pads, f"{n.name}@{t}",
                                   (1, call.out.h, call.out.w, n.shape[1]), call.macs)
                if n.op == "conv2d":
                    self.conv2d(n, call.macs, tile)
                elif n.op in ("maxpool2d", "avgpool2d"):
                    self.pool(n, tile)
                elif n.op in ("add", "mul"):
                    self.binary(n, tile)
                elif n.op == "concat":
                    self.concat(n, tile)
                else:
                    self.unary(n, tile)
                self.steps[-1].macs = call.macs
            reg = regions[split.name]
            self.steps.append(Step(split.name, "copy", [f"{split.name}@{t}"], [], full.name,
                                   params={"row": reg.r0, "col": reg.c0}))


def root_name(tensors: dict[str, "Tensor"], name: str) -> str:
    t = tensors[name]
    while t.alias_of is not None:
        t = tensors[t.alias_of]
    return t.name


def fc_pairs_budget(target: str) -> int | None:
    """Flash a scalar FC layer may add by packing its weights in channel pairs (2 bytes a weight): a sixteenth of the
    target's flash, so that a model which fits a small part in one byte a weight still fits it."""
    from edgekit.targets.profiles import all_profiles

    prof = all_profiles().get(target)
    return int(prof.flash_bytes.value) // 16 if prof is not None else None


def build_program(graph: Graph, dtype: str, qg=None, use_ek_kernels: bool = False, cpu: str = "cortex-m7",
                  target: str = "cortex-m", patch=None, scratch_limits: dict[str, int] | None = None,
                  platform=None) -> Program:
    """The program for ``graph``; ``patch`` (a converters.patch.PatchSchedule) runs its stages tile by tile.

    When only patch stages read the model input, the input is read in place (``Tensor.external``): the application
    passes a pointer (flash, a camera buffer) and the arena holds no copy of it."""
    from edgekit.analysis import macs_of

    check_supported(graph, dtype, target)
    b = _Builder(graph, dtype, qg, use_ek_kernels, cpu, platform)
    b.scratch_limits = dict(scratch_limits or {})
    b.fc_pairs_max_extra = fc_pairs_budget(target)
    b.wide_weights_max_extra = fc_pairs_budget(target)  # the same share of flash for widened conv weights
    stages = list(patch.stages) if patch is not None else []
    stage = {name for st in stages for name in st.layers}
    stage_at = {st.split_after: st for st in stages}
    for n in graph.nodes:
        macs = macs_of(n, graph)
        if n.name in stage:
            if n.name in stage_at:
                b.patch_stage(stage_at[n.name])
            continue
        if n.op == "input":
            b.add_tensor(n.name, nhwc(n.shape))
        elif not b.layer(n, macs):  # check_supported already refused it
            raise UnsupportedError(f"layer '{n.name}': '{n.op}' is not supported on {target}")
    out = b._torch_order(graph.outputs[0], graph[graph.outputs[0]])  # a channels-last [N, C, L] output: torch order
    prog = Program(graph.name, dtype, b.tensors, b.consts, b.steps, graph.inputs[0].name, out, notes=b.notes)
    if len(graph.outputs) != 1 or len(graph.inputs) != 1:
        raise UnsupportedError(f"model '{graph.name}' has {len(graph.inputs)} inputs and {len(graph.outputs)} "
                               "outputs; the Cortex-M target supports one of each")
    if patch is not None:
        from edgekit.converters.patch import input_in_place

        prog.patch = patch.to_json()  # (what makes codegen run it from a call table, and the estimate price that)
        if input_in_place(graph, stages):
            prog.tensors[prog.input].external = True
            prog.notes.append("the model input is read in place (edgekit_model_set_input): only the first patch "
                              "stage reads it, tile by tile, so the arena holds no copy")
    if qg is not None:
        prog.input_q = (qg.input.out_scale, qg.input.out_zp)
        prog.output_q = (qg.output().out_scale, qg.output().out_zp)
    plan_program(prog)
    if platform is not None and prog.patch is None:  # patched programs always take the table (their tiles)
        from edgekit.targets.mcu.cost import call_table_pays

        prog.call_table = call_table_pays(prog, platform)
    return prog


def scratch_slack(prog: Program) -> dict[str, int]:
    """Per layer, the scratch its micro-kernel calls could take without growing the arena: at each of its steps the
    arena minus the bytes live there (its own scratch counted as free); the smallest over the layer's steps."""
    live = prog.plan.live_bytes
    out: dict[str, int] = {}
    for i, s in enumerate(prog.steps):
        # conv micro-kernel calls, and int8 convs that fell back to TVM for want of scratch
        fell_back = s.kind == "tvm" and s.spec.op == "conv2d" and s.spec.dtype == "int8" and s.spec.attr("groups") == 1
        if s.kind != "ek_conv" and not fell_back:
            continue
        room = prog.arena_bytes - live[i] + s.scratch_bytes
        out[s.layer] = min(out.get(s.layer, room), room)
    return out


def root_of(prog: Program, name: str) -> str:
    t = prog.tensors[name]
    while t.alias_of is not None:
        t = prog.tensors[t.alias_of]
    return t.name


def program_buffers(prog: Program) -> list[Buffer]:
    """Arena buffers of a program: each root tensor live from its producing step to its last reader."""
    first: dict[str, int] = {root_of(prog, prog.input): 0}
    last: dict[str, int] = {root_of(prog, prog.input): 0}
    for i, s in enumerate(prog.steps):
        out = root_of(prog, s.output)
        first.setdefault(out, i)
        last[out] = max(last.get(out, i), i)
        for x in s.inputs:
            r = root_of(prog, x)
            last[r] = max(last.get(r, i), i)
    end = max(len(prog.steps) - 1, 0)
    last[root_of(prog, prog.output)] = end
    buffers = [Buffer(name, prog.tensors[name].nbytes, first[name], last[name]) for name in first
               if not prog.tensors[name].external]
    for i, s in enumerate(prog.steps):
        if s.scratch_bytes:
            buffers.append(Buffer(f"{s.layer}#scratch{i}", s.scratch_bytes, i, i))
    return buffers


def plan_program(prog: Program) -> None:
    prog.plan = plan_arena(program_buffers(prog), alignment=8)
    for t in prog.tensors.values():
        t.offset = prog.plan.offsets.get(root_of(prog, t.name), 0)
