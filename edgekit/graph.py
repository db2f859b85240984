"""edgekit's layer graph: the one description of a model that analysis, estimators, converters and targets share.

Where it sits: ``edgekit.Model`` imports a PyTorch module (torch.fx), a ``.pt2`` program or an ``.onnx`` file into a
:class:`Graph` (edgekit/importers). The graph is then cleaned for deployment (BatchNorm folded into the preceding
convolution, activations fused, no-ops removed) and read by edgekit/analysis.py, the estimators and every target.

A node produces exactly one tensor. Shapes follow PyTorch (NCHW, batch first, batch = 1); a target that wants another
layout (the Cortex-M target uses NHWC) converts on its side. Parameters are float32 numpy arrays in PyTorch layout.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np

from edgekit.errors import UnsupportedError

# Operators the graph knows, and what each computes. Targets declare which of these they run.
OPS = {
    "input": "graph input",
    "conv1d": "1-D convolution (groups allowed)",
    "conv2d": "2-D convolution (groups allowed; depthwise when groups == in_channels)",
    "conv_transpose2d": "2-D transposed convolution (nn.ConvTranspose2d: U-Net's up-convolution, decoders); targets run "
                        "it as a stride-1 conv computing every output phase and a depth_to_space",
    "conv_transpose1d": "1-D transposed convolution (nn.ConvTranspose1d: audio decoders, vocoders); targets run it "
                        "as a stride-1 conv1d computing every output phase and a depth_to_space along the sequence",
    "depth_to_space": "channel blocks moved into blocks of pixels (nn.PixelShuffle: mode 'CRD'; ONNX DepthToSpace's "
                      "default 'DCR')",
    "linear": "fully connected: y = x W^T + b",
    "batchnorm": "batch normalisation (inference statistics); folded into a preceding conv/linear when possible, "
                 "else a depthwise 1x1 conv",
    "relu": "max(x, 0)",
    "relu6": "min(max(x, 0), 6)",
    "hardswish": "x * relu6(x + 3) / 6",
    "hardsigmoid": "relu6(x + 3) / 6 (MobileNetV3's squeeze-excite gate)",
    "sigmoid": "1 / (1 + exp(-x))",
    "silu": "x * sigmoid(x) (nn.SiLU, swish: EfficientNet, YOLO)",
    "leaky_relu": "x if x > 0 else negative_slope * x (nn.LeakyReLU; nn.PReLU with one slope)",
    "prelu": "x if x > 0 else a_c * x, a learned slope per channel (nn.PReLU(num_parameters=C): MobileFaceNet, "
             "FSRCNN, ENet); one slope imports as leaky_relu",
    "elu": "x if x > 0 else alpha * (exp(x) - 1) (nn.ELU)",
    "hardtanh": "min(max(x, min_val), max_val) (nn.Hardtanh, a clamp; ReLU6 is Hardtanh(0, 6))",
    "mish": "x * tanh(softplus(x)) (nn.Mish: YOLOv4)",
    "tanh": "tanh(x)",
    "maxpool2d": "2-D max pooling",
    "avgpool2d": "2-D average pooling",
    "global_avgpool": "mean over the spatial (or time) axes, keeping them as size 1 (AdaptiveAvgPool2d/1d(1))",
    "add": "elementwise sum of two tensors (residual add)",
    "mul": "elementwise product of two tensors",
    "concat": "concatenation along an axis",
    "upsample": "upsampling of the spatial axes by integer factors: mode 'nearest' (repeat) or 'bilinear' "
                "(align_corners=False; nn.Upsample, F.interpolate, ONNX Resize)",
    "pad": "zero padding of the spatial axes (nn.ZeroPad2d, nn.ConstantPad1d/2d with 0, F.pad, ONNX Pad): pads = "
           "[top, bottom, left, right] of [N, C, H, W], [left, right] of [N, C, L]; folded into the next conv's "
           "padding when symmetric",
    "flatten": "collapse the axes from start_dim on",
    "reshape": "view with a new shape (same element order)",
    "select": "basic indexing (integers and slices), e.g. x[:, -1, :]",
    "softmax": "softmax along an axis",
    "transpose": "axes reordered by a permutation (batch axis first and kept), e.g. x.transpose(1, 2)",
    "matmul": "batched matrix product of two tensors: [..., M, K] @ [..., K, N]",
    "scale": "multiply by a constant number (x * c, x / c)",
    "mul_const": "product with a constant tensor broadcast over the input (a layer scale: ConvNeXt, CaiT); folded into "
                 "the conv/linear before it, else a depthwise 1x1 conv when it scales channels",
    "gelu": "x * Φ(x) (nn.GELU; approximate 'none' or 'tanh')",
    "layernorm": "layer normalisation over the last axes, with optional weight and bias (nn.LayerNorm)",
    "reduce_mean": "mean over axes other than the batch (x.mean(dim=1))",
    "gru": "gated recurrent unit layer over a sequence (PyTorch gate order r, z, n)",
    "lstm": "long short-term memory layer over a sequence (PyTorch gate order i, f, g, o)",
    "lmu": "Legendre Memory Unit layer over a sequence (edgekit/layers/lmu.py)",
    "s4d": "diagonal state-space layer over a sequence (S4D-Real; edgekit/layers/ssm.py)",
    "selective_ssm": "selective state-space layer over a sequence (Mamba's S6 scan; edgekit/layers/ssm.py)",
    "egru": "event-based GRU layer over a sequence: sparse event outputs (edgekit/layers/egru.py)",
    "trace": "low-pass trace of a sequence, tr_t = decay·tr_(t-1) + (1 − decay)·x_t (EGRU readout, edgekit/layers)",
    "time_cache": "streaming: the last rows frames of a layer's input, kept between frames (edgekit/convstream.py)",
    "running_pool": "streaming: global average pool over time as a running sum of the last rows rows",
    "snn": "spiking network: LIF populations and synaptic connections run for T steps (edgekit/layers/spiking.py)",
}

ACTIVATIONS = ("relu", "relu6", "hardswish", "hardsigmoid", "sigmoid", "tanh", "silu", "gelu", "leaky_relu", "elu",
               "hardtanh", "mish")
# Activations a conv/linear can absorb as a clamp (int8) or an epilogue (float).
FUSABLE_ACTIVATIONS = ("relu", "relu6")


@dataclass
class Node:
    """One layer. ``inputs`` name the producing nodes (or graph inputs) in argument order."""

    name: str
    op: str
    inputs: list[str]
    shape: tuple[int, ...]
    attrs: dict[str, Any] = field(default_factory=dict)
    params: dict[str, np.ndarray] = field(default_factory=dict)
    # Names of the source layers merged into this node (e.g. a folded BatchNorm, a fused ReLU).
    fused: list[str] = field(default_factory=list)
    dtype: str = "float32"

    def __post_init__(self):
        if self.op not in OPS:
            raise UnsupportedError(f"layer '{self.name}': operator '{self.op}' is not one edgekit knows")
        self.shape = tuple(int(d) for d in self.shape)

    @property
    def elements(self) -> int:
        return math.prod(self.shape)

    def copy(self) -> "Node":
        return dataclasses.replace(self, inputs=list(self.inputs), attrs=dict(self.attrs),
                                   params={k: v.copy() for k, v in self.params.items()}, fused=list(self.fused))


@dataclass
class Graph:
    """Nodes in execution (topological) order; ``inputs`` are 'input' nodes, ``outputs`` name the result nodes."""

    nodes: list[Node]
    outputs: list[str]
    name: str = "model"

    def __post_init__(self):
        self._index = {n.name: n for n in self.nodes}
        seen: set[str] = set()
        for n in self.nodes:
            for i in n.inputs:
                if i not in seen:
                    raise ValueError(f"graph '{self.name}': layer '{n.name}' reads '{i}' before it is computed")
            if n.name in seen:
                raise ValueError(f"graph '{self.name}': two layers are named '{n.name}'")
            seen.add(n.name)
        for o in self.outputs:
            if o not in seen:
                raise ValueError(f"graph '{self.name}': output '{o}' is not a layer")

    def __iter__(self) -> Iterator[Node]:
        return iter(self.nodes)

    def __getitem__(self, name: str) -> Node:
        return self._index[name]

    def __contains__(self, name: str) -> bool:
        return name in self._index

    @property
    def inputs(self) -> list[Node]:
        return [n for n in self.nodes if n.op == "input"]

    def consumers(self, name: str) -> list[Node]:
        return [n for n in self.nodes if name in n.inputs]

    def copy(self) -> "Graph":
        return Graph([n.copy() for n in self.nodes], list(self.outputs), self.name)

    def replace_nodes(self, nodes: list[Node], outputs: list[str] | None = None) -> "Graph":
        return Graph(nodes, list(outputs if outputs is not None else self.outputs), self.name)

    def in_shapes(self, node: Node) -> list[tuple[int, ...]]:
        return [self[i].shape for i in node.inputs]

    @property
    def param_count(self) -> int:
        return sum(int(p.size) for n in self.nodes for p in n.params.values())


# ---------------------------------------------------------------------------------------------------------------------
# Deployment passes: each returns a new graph and leaves its argument untouched.


def _rename_inputs(nodes: list[Node], old: str, new: str) -> None:
    for n in nodes:
        n.inputs = [new if i == old else i for i in n.inputs]


def remove_identities(graph: Graph) -> Graph:
    """Drop nodes that compute nothing (reshape to the same shape, flatten of an already-flat tensor)."""
    nodes = [n.copy() for n in graph.nodes]
    outputs = list(graph.outputs)
    keep = []
    for n in nodes:
        src = graph[n.inputs[0]] if n.inputs else None
        if n.op in ("reshape", "flatten") and src is not None and tuple(src.shape) == tuple(n.shape) \
                and n.name not in outputs:
            _rename_inputs(nodes, n.name, n.inputs[0])
            continue
        keep.append(n)
    return graph.replace_nodes(keep, outputs)


def fold_batchnorm(graph: Graph) -> Graph:
    """Fold every BatchNorm that directly follows a conv/linear (with no other reader) into its weights.

    W' = W · γ / sqrt(σ² + ε) per output channel, b' = (b − μ) · γ / sqrt(σ² + ε) + β.
    A BatchNorm with no such producer (after an activation, ConvMixer's GELU → BatchNorm; at the input) over an
    image or a sequence becomes what it computes, a per-channel scale and shift: a depthwise 1x1 conv2d (conv1d)
    with weight γ / sqrt(σ² + ε) and bias β − μ · γ / sqrt(σ² + ε), under its own name, which every target runs;
    over flat features ([N, C]) it stays a layer.
    """
    nodes = [n.copy() for n in graph.nodes]
    by_name = {n.name: n for n in nodes}
    outputs = list(graph.outputs)
    keep = []
    for n in nodes:
        if n.op == "batchnorm":
            prod = by_name.get(n.inputs[0])
            readers = [m for m in nodes if prod is not None and prod.name in m.inputs]
            if prod is not None and prod.op in ("conv1d", "conv2d", "linear", "conv_transpose2d", "conv_transpose1d") \
                    and len(readers) == 1 and prod.name not in outputs and "activation" not in prod.attrs:
                p = n.params
                scale = p["weight"] / np.sqrt(p["running_var"] + n.attrs.get("eps", 1e-5))
                w = prod.params["weight"]
                if prod.op in ("conv_transpose2d", "conv_transpose1d"):  # [C_in, C_out / groups, k...]: output
                    g = prod.attrs["groups"]  # channel g·C_out/g + o
                    per = scale.reshape(g, 1, w.shape[1], *([1] * (w.ndim - 2)))
                    prod.params["weight"] = (w.reshape(g, w.shape[0] // g, *w.shape[1:]) * per).reshape(w.shape) \
                        .astype(np.float32)
                else:
                    prod.params["weight"] = (w * scale.reshape((-1,) + (1,) * (w.ndim - 1))).astype(np.float32)
                b = prod.params.get("bias", np.zeros(scale.shape[0], np.float32))
                prod.params["bias"] = ((b - p["running_mean"]) * scale + p["bias"]).astype(np.float32)
                prod.fused.append(n.name)
                _rename_inputs(nodes, n.name, prod.name)
                outputs = [prod.name if o == n.name else o for o in outputs]
                continue
            if len(n.shape) in (3, 4):  # a standalone one: a depthwise 1x1 conv of the same name
                n = _batchnorm_as_depthwise(n)
        keep.append(n)
    return graph.replace_nodes(keep, outputs)


# Layers whose output is a feature map ([N, C, H, W] / [N, C, L] with channels on axis 1)
MAP_OPS = ("conv1d", "conv2d", "maxpool2d", "avgpool2d", "global_avgpool", "add", "mul", "concat", "upsample",
           "depth_to_space", "pad", "batchnorm", "prelu", *ACTIVATIONS)


def _channel_vector(value: np.ndarray, shape: tuple[int, ...], axis: int) -> np.ndarray | None:
    """``value`` (broadcast against an output of ``shape``) as one number per element of ``axis``, when it varies
    along that axis alone; None otherwise."""
    v = np.asarray(value, dtype=np.float32)
    if v.ndim > len(shape):
        return None
    v = v.reshape((1,) * (len(shape) - v.ndim) + v.shape)
    ax = axis % len(shape)
    if any(d != 1 for i, d in enumerate(v.shape) if i != ax) or v.shape[ax] not in (1, shape[ax]):
        return None
    return np.broadcast_to(v.reshape(-1), (shape[ax],)).astype(np.float32)


def fold_constant_mul(graph: Graph) -> Graph:
    """A product with a constant (``mul_const``: a tensor, a layer scale; ``scale``: a number) folded where it goes:
    into the conv/linear before it (its only reader, no activation) when the constant scales that layer's output
    channels (W' = c·W, b' = c·b); otherwise one that scales the channels (axis 1, or a number) of a [N, C, H, W] /
    [N, C, L] map becomes a depthwise 1x1 conv of the same name, as a lone BatchNorm does, which every target runs;
    a tensor constant that is one number elsewhere becomes ``scale``. Any other stays as it is (a ``mul_const``
    targets refuse by name)."""
    nodes = [n.copy() for n in graph.nodes]
    by_name = {n.name: n for n in nodes}
    outputs = list(graph.outputs)
    keep = []
    for n in nodes:
        if n.op in ("mul_const", "scale"):
            v = np.asarray(n.params["value"] if n.op == "mul_const" else n.attrs["factor"], dtype=np.float32)
            prod = by_name.get(n.inputs[0])
            readers = [m for m in nodes if prod is not None and prod.name in m.inputs]
            axis = -1 if prod is not None and prod.op == "linear" else 1
            c = _channel_vector(v, n.shape, axis) if prod is not None else None
            if c is not None and prod.op in ("conv1d", "conv2d", "linear") and len(readers) == 1 and \
                    prod.name not in outputs and "activation" not in prod.attrs and \
                    tuple(prod.shape) == tuple(n.shape):
                w = prod.params["weight"]
                prod.params["weight"] = (w * c.reshape((-1,) + (1,) * (w.ndim - 1))).astype(np.float32)
                if "bias" in prod.params:
                    prod.params["bias"] = (prod.params["bias"] * c).astype(np.float32)
                prod.fused.append(n.name)
                _rename_inputs(nodes, n.name, prod.name)
                outputs = [prod.name if o == n.name else o for o in outputs]
                continue
            # (a number stays a scale unless it scales a feature map: an attention's scaled scores are not channels)
            if len(n.shape) in (3, 4) and (n.op == "mul_const" or prod is not None and prod.op in MAP_OPS) and \
                    (c1 := _channel_vector(v, n.shape, 1)) is not None:
                n = _depthwise_1x1(n, c1, np.zeros_like(c1))
            elif n.op == "mul_const" and (v.size == 1 or np.all(v == v.reshape(-1)[0])):
                n = dataclasses.replace(n, op="scale", attrs={"factor": float(v.reshape(-1)[0])}, params={})
            by_name[n.name] = n  # (a product after it may fold into the depthwise conv it became)
        keep.append(n)
    return graph.replace_nodes(keep, outputs)


def _depthwise_1x1(n: Node, scale: np.ndarray, shift: np.ndarray) -> Node:
    """Layer ``n`` over [N, C, H, W] / [N, C, L] as the depthwise 1x1 conv2d / conv1d computing scale · x + shift per
    channel, under its name."""
    c, dims = int(n.shape[1]), len(n.shape) - 2
    one, zero = [1] * dims, [0] * dims
    attrs = {"in_channels": c, "out_channels": c, "kernel_size": one, "stride": one, "padding": zero,
             "dilation": one, "groups": c}
    params = {"weight": np.asarray(scale, np.float32).reshape((c, 1) + (1,) * dims),
              "bias": np.asarray(shift, np.float32)}
    return dataclasses.replace(n, op="conv2d" if dims == 2 else "conv1d", attrs=attrs, params=params)


def _batchnorm_as_depthwise(n: Node) -> Node:
    """A BatchNorm over [N, C, H, W] / [N, C, L] as the depthwise 1x1 conv2d / conv1d computing the same."""
    p = n.params
    scale = (p["weight"] / np.sqrt(p["running_var"] + n.attrs.get("eps", 1e-5))).astype(np.float32)
    return _depthwise_1x1(n, scale, p["bias"] - p["running_mean"] * scale)


def fuse_activations(graph: Graph) -> Graph:
    """Merge a ReLU/ReLU6 into the conv/linear/add that feeds only it (``attrs['activation']``)."""
    nodes = [n.copy() for n in graph.nodes]
    by_name = {n.name: n for n in nodes}
    outputs = list(graph.outputs)
    keep = []
    for n in nodes:
        if n.op in FUSABLE_ACTIVATIONS:
            prod = by_name.get(n.inputs[0])
            readers = [m for m in nodes if prod is not None and prod.name in m.inputs]
            if prod is not None and prod.op in ("conv1d", "conv2d", "linear", "add", "conv_transpose2d",
                                                "conv_transpose1d") \
                    and len(readers) == 1 \
                    and "activation" not in prod.attrs and prod.name not in outputs:
                prod.attrs["activation"] = n.op
                prod.fused.append(n.name)
                _rename_inputs(nodes, n.name, prod.name)
                outputs = [prod.name if o == n.name else o for o in outputs]
                continue
        keep.append(n)
    return Graph(keep, outputs, graph.name)


def fuse_swish(graph: Graph) -> Graph:
    """x · sigmoid(x) (an exported SiLU: ONNX's Sigmoid + Mul, or a hand-written Swish) as one ``silu`` layer, when the
    sigmoid feeds nothing else: one table in int8 instead of a table and a product."""
    nodes = [n.copy() for n in graph.nodes]
    by_name = {n.name: n for n in nodes}
    readers: dict[str, int] = {}
    for n in nodes:
        for i in n.inputs:
            readers[i] = readers.get(i, 0) + 1
    drop = set()
    for n in nodes:
        if n.op != "mul" or len(n.inputs) != 2 or n.params:
            continue
        for s_name, x_name in (n.inputs, n.inputs[::-1]):
            s = by_name.get(s_name)
            if s is not None and s.op == "sigmoid" and s.inputs == [x_name] and readers.get(s_name) == 1 \
                    and s_name not in graph.outputs and tuple(by_name[x_name].shape) == tuple(n.shape):
                n.op, n.inputs, n.attrs = "silu", [x_name], {}
                n.fused.append(s_name)
                drop.add(s_name)
                break
    return graph.replace_nodes([n for n in nodes if n.name not in drop], list(graph.outputs))


def remove_dead(graph: Graph) -> Graph:
    """Drop layers whose value no output depends on (e.g. an unused h_n)."""
    live = set(graph.outputs)
    for n in reversed(graph.nodes):
        if n.name in live:
            live.update(n.inputs)
    return graph.replace_nodes([n.copy() for n in graph.nodes if n.name in live or n.op == "input"])


def conv_transpose_phases(node: Node, in_hw: tuple[int, int]) -> tuple[Node, Node, Node | None]:
    """A conv_transpose2d as what computes it without multiplying zeros: a stride-1 conv2d whose output channels are
    the s_h·s_w output phases of every channel, a depth_to_space interleaving them into pixels, and a crop (a select)
    when the padding or output_padding cut the borders; the last of these keeps the layer's name.

    Per axis (stride s, kernel k, padding p): output position u + p = i·s + t of input i and tap t, so phase
    φ = (o + p) mod s reads the inputs m − a at taps φ + s·a (a < ⌈k/s⌉ = K): a K-tap correlation, zero where
    φ + s·a ≥ k. Its conv has K − 1 + e padding all round (e as small as the crop allows), so output m of the
    conv is phase block m − e; the crop starts at p + s·e. With k = s and p = 0 (U-Net's 2x2 up-convolution) this is a
    1x1 conv and an interleave: the MACs the transposed conv has, none more. Channel order of the phases: DCR (phase
    major, contiguous blocks of a pixel's channels) for groups = 1, CRD (channel major) for grouped ones, whose conv
    writes each group's channels together.
    """
    a, W = node.attrs, node.params["weight"]
    cin, cpg, kh, kw = W.shape
    g, (sh, sw), (ph, pw) = a["groups"], a["stride"], a["padding"]
    cout, ipg = cpg * g, cin // g
    out_hw = tuple(int(d) for d in node.shape[2:])
    # an axis of one input pixel (a generator's first layer on its 1x1 latent): the stride moves nothing, so take it
    # >= the kernel: one tap a phase, a 1x1 conv producing every output pixel's channels (a linear layer's MACs)
    sh, sw = (max(s, k) if L == 1 else s for L, s, k in zip(in_hw, (sh, sw), (kh, kw)))
    K, pad, off = [], [], []
    for L, s, p, k, o in zip(in_hw, (sh, sw), (ph, pw), (kh, kw), out_hw):
        taps = -(-k // s)
        e = max(-(taps - 1), -(p // s))
        while p + s * e + o > s * (L + 2 * (taps - 1 + e) - taps + 1):
            e += 1
        K.append(taps)
        pad.append(taps - 1 + e)
        off.append(p + s * e)
    mode = "DCR" if g == 1 else "CRD"
    wc = np.zeros((cout * sh * sw, ipg, K[0], K[1]), np.float32)
    bias = node.params.get("bias")
    bc = np.zeros(cout * sh * sw, np.float32)
    for fh in range(sh):
        for fw in range(sw):
            phase = fh * sw + fw
            oc = phase * cout + np.arange(cout) if mode == "DCR" else np.arange(cout) * sh * sw + phase
            for jh in range(K[0]):
                th = fh + sh * (K[0] - 1 - jh)
                for jw in range(K[1]):
                    tw = fw + sw * (K[1] - 1 - jw)
                    if th < kh and tw < kw:  # [C_in, C_out/g] -> per output channel c = gi·C_out/g + o, its group's
                        taps_w = W[:, :, th, tw].reshape(g, ipg, cpg).transpose(0, 2, 1).reshape(cout, ipg)
                        wc[oc, :, jh, jw] = taps_w
            if bias is not None:
                bc[oc] = bias
    conv_hw = [L + 2 * p_ - k + 1 for L, p_, k in zip(in_hw, pad, K)]
    full_hw = (conv_hw[0] * sh, conv_hw[1] * sw)
    crop = tuple(full_hw) != out_hw
    base = node.name
    conv_attrs = {"in_channels": cin, "out_channels": cout * sh * sw, "kernel_size": K, "stride": [1, 1],
                  "padding": pad, "dilation": [1, 1], "groups": g}
    if a.get("activation"):
        conv_attrs["activation"] = a["activation"]
    conv_attrs["transposed"] = {"of": node.name, "macs": int(math.prod(in_hw) * cin * cpg * kh * kw)}
    conv = Node(f"{base}.phases", "conv2d", list(node.inputs), (1, cout * sh * sw, *conv_hw), conv_attrs,
                {"weight": wc, "bias": bc}, fused=list(node.fused), dtype=node.dtype)
    shuffle = Node(base if not crop else f"{base}.interleave", "depth_to_space", [conv.name],
                   (1, cout, *full_hw), {"block": [sh, sw], "mode": mode, "part_of": node.name},
                   dtype=node.dtype)
    if not crop:
        return conv, shuffle, None
    index = [["slice", None, None, None]] * 2 + [["slice", off[0], off[0] + out_hw[0], None],
                                                 ["slice", off[1], off[1] + out_hw[1], None]]
    return conv, shuffle, Node(base, "select", [shuffle.name], node.shape, {"index": index, "part_of": node.name},
                               dtype=node.dtype)


def conv_transpose1d_phases(node: Node, length: int) -> list[Node]:
    """A conv_transpose1d as conv_transpose_phases computes its [N, C, L, 1] form: a conv1d of the phases, a
    depth_to_space along the sequence ([N, s·C, L] -> [N, C, s·L]) and a crop; the last keeps the layer's name."""
    a = node.attrs
    as2d = Node(node.name, "conv_transpose2d", list(node.inputs), tuple(node.shape) + (1,),
                {**a, "kernel_size": [a["kernel_size"][0], 1], "stride": [a["stride"][0], 1],
                 "padding": [a["padding"][0], 0], "output_padding": [a.get("output_padding", [0])[0], 0],
                 "dilation": [1, 1]},
                {**node.params, "weight": node.params["weight"][..., None]}, fused=list(node.fused), dtype=node.dtype)
    conv, shuffle, crop = conv_transpose_phases(as2d, (length, 1))
    ca = conv.attrs
    conv = dataclasses.replace(conv, op="conv1d", shape=conv.shape[:3], params={**conv.params,
                               "weight": conv.params["weight"][..., 0]},
                               attrs={**ca, "kernel_size": ca["kernel_size"][:1], "stride": [1],
                                      "padding": ca["padding"][:1], "dilation": [1]})
    shuffle = dataclasses.replace(shuffle, shape=shuffle.shape[:3],
                                  attrs={**shuffle.attrs, "block": shuffle.attrs["block"][:1]})
    out = [conv, shuffle]
    if crop is not None:
        out.append(dataclasses.replace(crop, shape=crop.shape[:3],
                                       attrs={**crop.attrs, "index": crop.attrs["index"][:3]}))
    return out


def lower_conv_transpose(graph: Graph) -> Graph:
    """Every conv_transpose2d as :func:`conv_transpose_phases` computes it (its BatchNorm and ReLU already folded
    in): layers every target runs."""
    if not any(n.op in ("conv_transpose2d", "conv_transpose1d") for n in graph.nodes):
        return graph
    nodes: list[Node] = []
    for n in graph.nodes:
        if n.op == "conv_transpose1d":
            nodes.extend(conv_transpose1d_phases(n, int(graph[n.inputs[0]].shape[2])))
            continue
        if n.op != "conv_transpose2d":
            nodes.append(n.copy())
            continue
        if tuple(n.attrs.get("dilation", (1, 1))) != (1, 1):
            raise UnsupportedError(f"layer '{n.name}': a transposed convolution with dilation "
                                   f"{tuple(n.attrs['dilation'])}; edgekit runs dilation 1")
        nodes.extend(x for x in conv_transpose_phases(n, tuple(graph[n.inputs[0]].shape[2:])) if x is not None)
    return graph.replace_nodes(nodes)


def fold_pads(graph: Graph) -> Graph:
    """A zero pad whose only reader is a conv with the same padding on both sides of each axis (ZeroPad2d(1) then a
    conv without padding): the conv's own padding grows by it (the same zeros), and the pad goes."""
    nodes = [n.copy() for n in graph.nodes]
    by_name = {n.name: n for n in nodes}
    drop = set()
    for n in nodes:
        if n.op != "pad" or n.name in graph.outputs:
            continue
        readers = [m for m in nodes if n.name in m.inputs]
        p = n.attrs["pads"]
        pairs = [(p[0], p[1]), (p[2], p[3])] if len(p) == 4 else [(p[0], p[1])]
        if len(readers) != 1 or readers[0].op not in ("conv1d", "conv2d") or readers[0].inputs != [n.name] or \
                len(pairs) != len(readers[0].attrs["padding"]) or any(a != b for a, b in pairs):
            continue
        conv = readers[0]
        conv.attrs["padding"] = [int(q) + a for q, (a, _) in zip(conv.attrs["padding"], pairs)]
        conv.inputs = list(n.inputs)
        conv.fused.append(n.name)
        drop.add(n.name)
    return graph.replace_nodes([n for n in nodes if n.name not in drop])


def deployment_graph(graph: Graph) -> Graph:
    """The graph targets build: dead layers and identities removed, symmetric zero pads folded into the conv after
    them, BatchNorm and constant products (layer scales) folded, x · sigmoid(x) as SiLU, ReLU/ReLU6 fused,
    transposed convs as convs computing their output phases."""
    return lower_conv_transpose(fuse_activations(fuse_swish(fold_constant_mul(fold_batchnorm(fold_pads(
        remove_identities(remove_dead(graph))))))))
