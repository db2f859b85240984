"""ONNX file -> edgekit Model, through the same layer Graph a PyTorch module imports into.

Where it sits: ``edgekit.Model.load("net.onnx")`` (edgekit/loaders.py) ends here. The result is a Model whose
``module`` is None: its Graph was built here, and ``predict`` runs it with edgekit/graph_exec.py.

How: the file is read, checked (``onnx.checker``, strict shape inference on the fixed example shape) and walked in
order. Parts computed from initializers alone (weight slices, shape arithmetic, ``Constant``) are evaluated once with
ONNX's reference evaluator; every other node maps to one Graph node. ONNX writes recurrent layers sequence-first
(``Transpose`` before a GRU, ``Squeeze``/``Gather`` after it) while edgekit keeps the batch first: with batch 1 such
transposes and squeezes only move size-1 axes, so they are kept as *views* (the same Graph node seen with another
shape) and turned into a reshape node only where a layer needs the exact shape.

Every node edgekit cannot express is collected, and all of them are reported in one UnsupportedError.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper

from edgekit.errors import DataError, ModelLoadError, ShapeError, UnsupportedError
from edgekit.graph import Graph, Node
from edgekit.graph_exec import run_node
from edgekit.importers.torch_fx import group_problems
from edgekit.model import Model

# ONNX gate order -> PyTorch gate order (rows of the stacked gate matrices, in blocks of hidden_size).
GRU_GATES_FROM_ONNX = (1, 0, 2)  # ONNX z, r, h -> torch r, z, n
LSTM_GATES_FROM_ONNX = (0, 2, 3, 1)  # ONNX i, o, f, c -> torch i, f, g, o

_FLOAT_TYPES = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE, onnx.TensorProto.BFLOAT16)


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:200]


def _not_onnx(path: Path, e: BaseException) -> ModelLoadError:
    return ModelLoadError(f"{path}: not a valid ONNX model ({_first_line(e)}); re-export it")


def load_onnx(path, input_shape: tuple[int, ...] | None = None) -> Model:
    """Read an ``.onnx`` file into a Model (``module`` None, ``meta['source']`` the path).

    ``input_shape`` is one sample's shape without the batch (the CLI's --input-shape); it is needed when the first
    input has a dynamic dimension other than the batch, and applies to the first input only.
    """
    path = Path(path)
    model = _read(path)
    example = _example_inputs(model, path, input_shape)
    _check_supported(model, path)
    _check_shapes(model, path, example)
    graph = _Importer(model, path, example).run()
    _check_finite(graph, path)
    inputs = tuple(torch.from_numpy(x) for x in example.values())
    return Model(None, inputs, name=path.stem, meta={"source": str(path)}, _graph=graph)


def _check_finite(graph: Graph, path: Path) -> None:
    """DataError naming every layer whose weights hold NaN or Inf (Model.check_data does this for torch modules)."""
    bad = [f"'{n.name}' ({key})" for n in graph.nodes for key, value in n.params.items()
           if np.issubdtype(np.asarray(value).dtype, np.floating) and not np.isfinite(value).all()]
    if bad:
        raise DataError(f"{path}: weights of {len(bad)} layer(s) hold NaN or Inf values: {', '.join(bad)}; retrain "
                        "or fix the weights and export again")


def _read(path: Path) -> onnx.ModelProto:
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # protobuf's DecodeError and friends: one line, no traceback
        raise _not_onnx(path, e) from e
    external = {init.name: next((kv.value for kv in init.external_data if kv.key == "location"), "")
                for init in model.graph.initializer if init.data_location == onnx.TensorProto.EXTERNAL}
    missing = sorted({loc for loc in external.values() if not (path.parent / loc).is_file()})
    if missing:
        raise ModelLoadError(f"{path}: its weights are stored in '{missing[0]}' next to it, which is missing; copy "
                             "that file alongside or re-export with torch.onnx.export(..., external_data=False)")
    try:
        if external:
            onnx.load_external_data_for_model(model, str(path.parent))
        onnx.checker.check_model(model)
    except Exception as e:
        raise _not_onnx(path, e) from e
    if not model.graph.node:
        raise ModelLoadError(f"{path}: the ONNX graph has no nodes; re-export it")
    return model


def _graph_inputs(model: onnx.ModelProto) -> list:
    """The graph's real inputs (older exporters also list every initializer as an input)."""
    inits = {i.name for i in model.graph.initializer}
    return [vi for vi in model.graph.input if vi.name not in inits]


def _example_inputs(model: onnx.ModelProto, path: Path, input_shape) -> dict[str, np.ndarray]:
    """One zero array per graph input, batch 1: the shape comes from ``input_shape`` (first input) or the file."""
    example = {}
    for k, vi in enumerate(_graph_inputs(model)):
        tt = vi.type.tensor_type
        if not vi.type.HasField("tensor_type") or tt.elem_type not in _FLOAT_TYPES:
            raise UnsupportedError(f"{path}: input '{vi.name}' is not a float tensor; edgekit models take float "
                                   "inputs")
        dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in tt.shape.dim]
        shown = "[" + ", ".join(str(d) for d in dims) + "]"
        if k == 0 and input_shape:
            want = tuple(int(d) for d in input_shape)
            if tt.HasField("shape") and (len(want) != len(dims) - 1 or any(
                    isinstance(d, int) and d != w for d, w in zip(dims[1:], want))):
                raise ShapeError(f"{path}: --input-shape {list(want)} does not fit input '{vi.name}' of shape "
                                 f"{shown} (give one sample's shape, without the batch)")
            shape = (1,) + want
        else:
            if not tt.HasField("shape"):
                raise UnsupportedError(f"{path}: input '{vi.name}' has no declared shape, and edgekit plans memory "
                                       "for fixed shapes; pass --input-shape")
            dynamic = [str(d) for d in dims[1:] if not isinstance(d, int)]
            if dynamic:
                raise UnsupportedError(f"{path}: input '{vi.name}' of shape {shown} has a dynamic dimension "
                                       f"'{dynamic[0]}', and edgekit plans memory for fixed shapes; pass --input-shape "
                                       "(one sample's shape, without the batch)")
            if not dims:
                raise UnsupportedError(f"{path}: input '{vi.name}' is a scalar; edgekit needs a batch axis")
            shape = (1,) + tuple(dims[1:])
        batch = dims[0] if dims else 1
        if isinstance(batch, int) and batch not in (0, 1):  # 0: left unset by the exporter
            raise ModelLoadError(f"{path}: input '{vi.name}' of shape {shown} was exported for batch {batch}; "
                                 "re-export with batch 1 or a dynamic batch")
        example[vi.name] = np.zeros(shape, np.float32)
    if not example:
        raise ModelLoadError(f"{path}: the ONNX graph has no inputs; re-export it")
    return example


def _opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)


def _const_names(model: onnx.ModelProto) -> tuple[set[str], set[int]]:
    """Values computable without the input (initializers, Constant, Shape, and nodes reading only those), and the
    indices of the nodes that compute them."""
    const = {i.name for i in model.graph.initializer}
    folded = set()
    for k, node in enumerate(model.graph.node):
        ins = [i for i in node.input if i]
        if node.domain in ("", "ai.onnx") and not any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
                                                      for a in node.attribute) and \
                (node.op_type in ("Shape", "Size") or all(i in const for i in ins)):
            const.update(o for o in node.output if o)
            folded.add(k)
    return const, folded


def _check_supported(model: onnx.ModelProto, path: Path) -> None:
    """Raise one UnsupportedError naming every node whose operator edgekit has no layer for."""
    _, folded = _const_names(model)
    bad = [n for k, n in enumerate(model.graph.node) if k not in folded
           and (n.domain not in ("", "ai.onnx") or n.op_type not in _Importer.HANDLERS)]
    if bad:
        listed = group_problems([f"'{n.name or n.output[0]}' ({n.domain + '.' if n.domain else ''}{n.op_type})"
                                 for n in bad])
        raise UnsupportedError(f"{path}: {len(bad)} ONNX node(s) edgekit cannot import: {listed}. edgekit imports "
                               f"{', '.join(sorted(_Importer.HANDLERS))}")


def _check_shapes(model: onnx.ModelProto, path: Path, example: dict[str, np.ndarray]) -> None:
    """Strict ONNX shape inference on the example shape: a file whose shapes contradict each other stops here, with
    ONNX's own message, rather than deep inside the import."""
    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    for vi in fixed.graph.input:
        if vi.name in example:
            shape = vi.type.tensor_type.shape
            del shape.dim[:]
            for d in example[vi.name].shape:
                shape.dim.add().dim_value = int(d)
    try:
        onnx.shape_inference.infer_shapes(fixed, check_type=True, strict_mode=True)
    except Exception as e:
        raise ModelLoadError(f"{path}: ONNX shape inference fails ({_first_line(e)}); re-export the model") from e


def _keeps_order(shape, perm) -> bool:
    """True when permuting ``shape`` by ``perm`` moves only size-1 axes, so the elements keep their order."""
    kept = [a for a in perm if shape[a] != 1]
    return kept == sorted(kept)


def _node_axis(view: tuple, node_shape: tuple, axis: int) -> int | None:
    """The axis of the Graph node that axis ``axis`` of a view of it is (None for a size-1 axis of the view)."""
    if view[axis] == 1 or [d for d in view if d != 1] != [d for d in node_shape if d != 1]:
        return None
    k = sum(1 for d in view[:axis] if d != 1)
    return [a for a, d in enumerate(node_shape) if d != 1][k]


class _Importer:
    """One pass over the ONNX graph. ``vals`` maps an ONNX value to (Graph node, the value's own shape): a view
    when the two shapes differ (by size-1 axes only)."""

    def __init__(self, model: onnx.ModelProto, path: Path, example: dict[str, np.ndarray]):
        self.model, self.path, self.opset = model, path, _opset(model)
        self.nodes: list[Node] = []
        self.values: dict[str, torch.Tensor] = {}  # graph node -> its value on the example (gives every shape)
        self.vals: dict[str, tuple[str, tuple[int, ...]]] = {}
        self.consts: dict[str, np.ndarray] = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
        self.names: set[str] = set()
        self.reshaped: dict[tuple, str] = {}  # (graph node, shape) -> reshape node made for a view
        self.bias_free: set[str] = set()  # linear nodes from MatMul, which a following Add may give a bias
        self.readers: dict[str, int] = {}
        for node in model.graph.node:
            for i in node.input:
                self.readers[i] = self.readers.get(i, 0) + 1
        for o in model.graph.output:
            self.readers[o.name] = self.readers.get(o.name, 0) + 1
        for name, x in example.items():
            self.names.add(name)
            self.nodes.append(Node(name, "input", [], x.shape))
            self.values[name] = torch.from_numpy(x)
            self.vals[name] = (name, tuple(x.shape))

    # ---- the walk ----------------------------------------------------------------------------------------------------
    def run(self) -> Graph:
        _, folded = _const_names(self.model)
        problems: list[str] = []
        broken: set[str] = set()  # outputs of nodes that failed: their readers fail with them, unreported
        for k, node in enumerate(self.model.graph.node):
            label = node.name or node.output[0]
            if any(i in broken for i in node.input):
                broken.update(node.output)
                continue
            try:
                with torch.no_grad():
                    if k in folded:
                        self._fold(node)
                    else:
                        self.HANDLERS[node.op_type](self, node, self._attrs(node))
            except UnsupportedError as e:
                problems.append(f"'{label}' ({node.op_type}: {e})")
                broken.update(node.output)
            except Exception as e:  # a file the checker let through but that makes no sense here
                problems.append(f"'{label}' ({node.op_type}: cannot be imported: {_first_line(e)})")
                broken.update(node.output)
        outputs = []
        for o in self.model.graph.output:
            if o.name in broken:
                continue
            try:
                if o.name in self.consts:
                    raise UnsupportedError("it is a constant")
                outputs.append(self._exact(o.name, "it"))
            except UnsupportedError as e:
                problems.append(f"output '{o.name}' ({e})")
        if problems:
            raise UnsupportedError(f"{self.path}: {len(problems)} ONNX node(s) edgekit cannot import: "
                                   + group_problems(problems))
        return Graph(self.nodes, outputs, self.path.stem)

    def _attrs(self, node) -> dict:
        out = {}
        for a in node.attribute:
            v = helper.get_attribute_value(a)
            out[a.name] = v.decode() if isinstance(v, bytes) else v
        return out

    def _fold(self, node) -> None:
        """Evaluate a node whose inputs are all constant (weight slicing, shape arithmetic, Constant)."""
        if node.op_type == "Shape":
            shape = np.array(self.vals[node.input[0]][1] if node.input[0] in self.vals
                             else self.consts[node.input[0]].shape, np.int64)
            a = self._attrs(node)
            self.consts[node.output[0]] = shape[a.get("start", 0):a.get("end", len(shape))]
            return
        if node.op_type == "Size":
            shape = self.vals[node.input[0]][1] if node.input[0] in self.vals else self.consts[node.input[0]].shape
            self.consts[node.output[0]] = np.array(int(np.prod(shape)), np.int64)
            return
        from onnx.reference import ReferenceEvaluator

        ins = [i for i in node.input if i]
        g = helper.make_graph([node], "fold", [helper.make_tensor_value_info(i, onnx.TensorProto.UNDEFINED, None)
                                               for i in ins],
                              [helper.make_tensor_value_info(o, onnx.TensorProto.UNDEFINED, None)
                               for o in node.output if o])
        m = helper.make_model(g, opset_imports=list(self.model.opset_import))
        results = ReferenceEvaluator(m).run(None, {i: self.consts[i] for i in ins})
        for o, r in zip([o for o in node.output if o], results):
            self.consts[o] = np.asarray(r)

    # ---- helpers -----------------------------------------------------------------------------------------------------
    def _name(self, base: str) -> str:
        nm, k = base, 1
        while nm in self.names:
            k += 1
            nm = f"{base}_{k}"
        self.names.add(nm)
        return nm

    def _emit(self, base: str, op: str, inputs: list[str], attrs=None, params=None, shape=()) -> str:
        """Add a Graph node; its shape is what graph_exec computes for it on the example."""
        node = Node(self._name(base), op, inputs, shape, attrs or {}, params or {})
        y = run_node(node, [self.values[i] for i in inputs])
        node.shape = tuple(int(d) for d in y.shape)
        self.nodes.append(node)
        self.values[node.name] = y
        return node.name

    def _shape(self, node_name: str) -> tuple[int, ...]:
        return tuple(self.values[node_name].shape)

    def _const(self, name: str, what: str) -> np.ndarray:
        if name not in self.consts:
            raise UnsupportedError(f"the {what} '{name}' is computed in the graph; edgekit needs it constant")
        return self.consts[name]

    def _weight(self, name: str, what: str) -> np.ndarray:
        return np.ascontiguousarray(self._const(name, what), dtype=np.float32)

    def _tensor(self, name: str) -> tuple[str, tuple[int, ...]]:
        if name not in self.vals:
            raise UnsupportedError(f"'{name}' is a constant where edgekit expects a computed tensor "
                                   "(an operation on constants alone, or with a constant operand)")
        return self.vals[name]

    def _bind(self, value: str, node_name: str, shape: tuple | None = None) -> None:
        self.vals[value] = (node_name, tuple(shape) if shape is not None else self._shape(node_name))

    def _with_shape(self, node_name: str, shape: tuple, why: str) -> str:
        """``node_name`` seen with ``shape`` (same elements): itself, or a reshape node (made once)."""
        shape = tuple(int(d) for d in shape)
        if self._shape(node_name) == shape:
            return node_name
        if shape and shape[0] != 1:
            raise UnsupportedError(f"{why} has shape {list(shape)}, with the batch on another axis than the first; "
                                   "edgekit keeps the batch first (e.g. return y.transpose(0, 1))")
        key = (node_name, shape)
        if key not in self.reshaped:
            self.reshaped[key] = self._emit(f"{node_name}.reshape", "reshape", [node_name], {"shape": list(shape)},
                                            shape=shape)
        return self.reshaped[key]

    def _exact(self, value: str, why: str = "its input") -> str:
        """The Graph node holding ``value`` with exactly its ONNX shape."""
        node_name, shape = self._tensor(value)
        return self._with_shape(node_name, shape, why)

    def _view(self, node, value: str, shape: tuple) -> None:
        """Bind the first output of a layout node (Reshape, Squeeze, a Transpose of size-1 axes ...) to ``value``
        seen with ``shape``: an alias, a reshape node named after the ONNX node, or a view."""
        node_name, _ = self._tensor(value)
        shape = tuple(int(d) for d in shape)
        if shape != self._shape(node_name) and shape and shape[0] == 1:
            node_name = self._emit(node.name or node.output[0], "reshape", [node_name], {"shape": list(shape)},
                                   shape=shape)
        self._bind(node.output[0], node_name, shape)

    def _label(self, node) -> str:
        return node.name or node.output[0]

    def _input_list(self, node, i: int, attrs: dict, key: str, opset_moved: int):
        """An argument that moved from an attribute to an input at ``opset_moved`` (Squeeze axes, Clip bounds ...)."""
        if self.opset >= opset_moved:
            return self._const(node.input[i], key) if len(node.input) > i and node.input[i] else None
        return attrs.get(key)

    def _used(self, value: str) -> bool:
        return bool(value) and self.readers.get(value, 0) > 0

    @staticmethod
    def _pads(attrs: dict, in_spatial, kernel, strides, dilations, what: str, asymmetric: bool = False):
        """Symmetric padding per spatial axis from ``pads`` / ``auto_pad``; asymmetric padding is refused, or with
        ``asymmetric`` returned as (begin, end) lists (a conv runs the rest as a zero pad layer before it)."""
        dims = len(kernel)
        auto = attrs.get("auto_pad", "NOTSET")
        if auto in ("SAME_UPPER", "SAME_LOWER"):
            total = [max((-(-i // s) - 1) * s + (k - 1) * d + 1 - i, 0)
                     for i, k, s, d in zip(in_spatial, kernel, strides, dilations)]
            begin, end = [t // 2 for t in total], [t - t // 2 for t in total]
        elif auto == "VALID":
            begin = end = [0] * dims
        else:
            pads = list(attrs.get("pads", [0] * 2 * dims))
            begin, end = pads[:dims], pads[dims:]
        if asymmetric:
            return [int(p) for p in begin], [int(p) for p in end]
        if begin != end:
            raise UnsupportedError(f"asymmetric padding (begin {begin}, end {end}); edgekit's {what} pads both sides "
                                   "alike: re-export with symmetric padding (e.g. padding=k//2 for an odd kernel k)")
        return [int(p) for p in begin]

    # ---- layers ------------------------------------------------------------------------------------------------------
    def _conv(self, node, a):
        x = self._exact(node.input[0])
        W = self._weight(node.input[1], "weight")
        dims = W.ndim - 2
        if dims not in (1, 2):
            raise UnsupportedError(f"{dims}-D convolution (edgekit has 1-D and 2-D)")
        kernel = [int(k) for k in W.shape[2:]]
        strides = [int(s) for s in a.get("strides", [1] * dims)]
        dilations = [int(d) for d in a.get("dilations", [1] * dims)]
        begin, end = self._pads(a, self._shape(x)[2:], kernel, strides, dilations, "convolution", asymmetric=True)
        pads = [min(b, e) for b, e in zip(begin, end)]
        if begin != end:  # ('same' padding of a stride-2 conv, F.pad folded in by the exporter): the rest a zero pad
            from edgekit.importers.torch_fx import pad_attrs

            extra = [v for k in reversed(range(dims)) for v in (begin[k] - pads[k], end[k] - pads[k])]
            x = self._emit(f"{self._label(node)}.pad", "pad", [x], pad_attrs(extra, dims + 2))
        groups = int(a.get("group", 1))
        attrs = {"in_channels": int(W.shape[1]) * groups, "out_channels": int(W.shape[0]), "kernel_size": kernel,
                 "stride": strides, "padding": pads, "dilation": dilations, "groups": groups}
        params = {"weight": W}
        if len(node.input) > 2 and node.input[2]:
            params["bias"] = self._weight(node.input[2], "bias")
        self._bind(node.output[0], self._emit(self._label(node), "conv2d" if dims == 2 else "conv1d", [x], attrs,
                                              params))

    def _conv_transpose(self, node, a):
        x = self._exact(node.input[0])
        W = self._weight(node.input[1], "weight")
        if W.ndim not in (3, 4):
            raise UnsupportedError(f"{W.ndim - 2}-D ConvTranspose (edgekit runs 1-D and 2-D)")
        dims = W.ndim - 2
        if a.get("auto_pad", "NOTSET") != "NOTSET" or "output_shape" in a:
            raise UnsupportedError("ConvTranspose with auto_pad or output_shape (export with explicit pads and "
                                   "output_padding)")
        pads = [int(p) for p in a.get("pads", [0] * 2 * dims)]
        if pads[:dims] != pads[dims:]:
            raise UnsupportedError(f"asymmetric padding (begin {pads[:dims]}, end {pads[dims:]}); edgekit's "
                                   "transposed convolution pads both sides alike")
        from edgekit.importers.torch_fx import _conv_transpose_attrs

        attrs = _conv_transpose_attrs(W, [int(v) for v in a.get("strides", [1] * dims)], pads[:dims],
                                      [int(v) for v in a.get("output_padding", [0] * dims)],
                                      [int(v) for v in a.get("dilations", [1] * dims)], int(a.get("group", 1)))
        params = {"weight": W}
        if len(node.input) > 2 and node.input[2]:
            params["bias"] = self._weight(node.input[2], "bias")
        self._bind(node.output[0], self._emit(self._label(node), f"conv_transpose{dims}d", [x], attrs, params))

    def _resize(self, node, a):
        """Resize (Upsample before opset 10) by integer factors: nearest (the exporters' asymmetric / floor, or
        half_pixel / round_prefer_*) or linear with half_pixel / pytorch_half_pixel coordinates (PyTorch's
        align_corners=False)."""
        from edgekit.importers.torch_fx import resize_scale

        x = self._exact(node.input[0])
        shape = self._shape(x)
        mode = a.get("mode", "nearest")
        coords = a.get("coordinate_transformation_mode", "half_pixel" if node.op_type == "Resize" else "asymmetric")
        nearest = a.get("nearest_mode", "round_prefer_floor")
        inputs = list(node.input) + [""] * 4
        scales_in, sizes_in = (inputs[1], None) if node.op_type == "Upsample" else (inputs[2], inputs[3])
        if sizes_in:
            out = [int(v) for v in self._const(sizes_in, "sizes")]
        elif scales_in:
            out = [int(round(d * float(f))) for d, f in zip(shape, self._const(scales_in, "scales"))]
        else:
            raise UnsupportedError("Resize without scales or sizes")
        if len(out) != len(shape):
            raise UnsupportedError(f"Resize to {out} of a {len(shape)}-D tensor")
        scale = resize_scale(shape, out)
        if mode == "nearest" and (coords == "asymmetric" and nearest == "floor" or coords in (
                "half_pixel", "pytorch_half_pixel") and nearest in ("round_prefer_floor", "round_prefer_ceil")):
            kind = "nearest"
        elif mode == "linear" and coords in ("half_pixel", "pytorch_half_pixel"):
            kind = "bilinear"
        else:
            raise UnsupportedError(f"Resize mode '{mode}' with {coords} coordinates"
                                   + (f" and nearest_mode '{nearest}'" if mode == "nearest" else "")
                                   + ": edgekit runs nearest and linear (half_pixel: PyTorch's align_corners=False) "
                                   "by integer factors")
        self._bind(node.output[0], self._emit(self._label(node), "upsample", [x], {"scale": scale, "mode": kind}))

    def _pad(self, node, a):
        """Pad with zeros on the spatial axes (opset 11+: pads as an input; opset 2: an attribute)."""
        from edgekit.importers.torch_fx import pad_attrs

        x = self._exact(node.input[0])
        rank = len(self._shape(x))
        inputs = list(node.input) + [""] * 4
        pads = [int(v) for v in (self._const(inputs[1], "pads") if inputs[1] else a.get("pads", []))]
        value = float(np.asarray(self._const(inputs[2], "constant_value")).reshape(-1)[0]) if inputs[2] else \
            float(a.get("value", 0.0))
        if inputs[3]:
            raise UnsupportedError("Pad with an axes input (pad every axis)")
        begin, end = pads[:rank], pads[rank:]
        if len(begin) != rank or any(begin[:2]) or any(end[:2]):
            raise UnsupportedError(f"Pad {pads} of a {rank}-D tensor: edgekit pads the spatial axes")
        torch_order = [v for k in reversed(range(2, rank)) for v in (begin[k], end[k])]  # (left, right, top, bottom)
        attrs = pad_attrs(torch_order, rank, a.get("mode", "constant"), value)
        self._bind(node.output[0], self._emit(self._label(node), "pad", [x], attrs))

    def _depth_to_space(self, node, a):
        x = self._exact(node.input[0])
        mode = a.get("mode", "DCR")
        mode = mode.decode() if isinstance(mode, bytes) else str(mode)
        r = int(a["blocksize"])
        self._bind(node.output[0], self._emit(self._label(node), "depth_to_space", [x],
                                              {"block": [r, r], "mode": mode}))

    def _linear(self, node, x: str, W: np.ndarray, b: np.ndarray | None, out_shape: tuple | None = None):
        params = {"weight": np.ascontiguousarray(W, dtype=np.float32)}
        if b is not None:
            params["bias"] = np.ascontiguousarray(b, dtype=np.float32)
        attrs = {"in_features": int(W.shape[1]), "out_features": int(W.shape[0])}
        name = self._emit(self._label(node), "linear", [x], attrs, params)
        self._bind(node.output[0], name, out_shape)
        return name

    def _gemm(self, node, a):
        if a.get("transA", 0):
            raise UnsupportedError("transA=1 (the input transposed)")
        x = self._exact(node.input[0])
        if len(self._shape(x)) != 2:
            raise UnsupportedError("Gemm on a tensor that is not 2-D")
        B = self._weight(node.input[1], "weight")
        W = (B if a.get("transB", 0) else B.T) * float(a.get("alpha", 1.0))
        b = None
        if len(node.input) > 2 and node.input[2]:
            C = self._weight(node.input[2], "bias") * float(a.get("beta", 1.0))
            if C.size not in (1, W.shape[0]):
                raise UnsupportedError(f"a bias of shape {list(C.shape)} (one value per output expected)")
            b = np.broadcast_to(C.reshape(-1), (W.shape[0],))
        self._linear(node, x, W, b)

    def _matmul(self, node, a):
        if node.input[1] not in self.consts and node.input[0] not in self.consts:  # two activations (attention)
            ins = [self._exact(node.input[0]), self._exact(node.input[1])]
            self._bind(node.output[0], self._emit(self._label(node), "matmul", ins))
            return
        if node.input[1] not in self.consts:
            raise UnsupportedError("MatMul of a constant on the left (edgekit's linear is x @ W with constant "
                                   "weights W)")
        B = self._weight(node.input[1], "weight")
        if B.ndim != 2:
            raise UnsupportedError(f"MatMul with a {B.ndim}-D weight")
        node_name, shape = self._tensor(node.input[0])
        out = shape[:-1] + (int(B.shape[1]),)
        if shape != self._shape(node_name) and not (shape[-1] != 1 and self._shape(node_name)[-1] == shape[-1]):
            node_name = self._exact(node.input[0])  # the last axis must be the one the weight multiplies
        self.bias_free.add(self._linear(node, node_name, B.T, None, out))

    def _binary(self, node, a):
        op = "add" if node.op_type == "Add" else "mul"
        const = [i for i in node.input if i in self.consts]
        if node.op_type in ("Mul", "Div") and len(const) == 1 and self.consts[const[0]].size == 1 and \
                (node.op_type == "Mul" or const[0] == node.input[1]):  # x * c, c * x, x / c
            c = float(np.asarray(self.consts[const[0]]).reshape(-1)[0])
            other = node.input[1] if node.input[0] == const[0] else node.input[0]
            node_name, shape = self._tensor(other)
            factor = c if node.op_type == "Mul" else 1.0 / c
            self._bind(node.output[0], self._emit(self._label(node), "scale", [node_name], {"factor": factor}), shape)
            return
        if node.op_type == "Div":
            raise UnsupportedError("Div other than by a constant number (edgekit scales by constants)")
        if const and op == "mul" and len(const) == 1:  # x * c with a constant tensor c (a layer scale)
            other = node.input[1] if node.input[0] == const[0] else node.input[0]
            self._bind(node.output[0], self._emit(self._label(node), "mul_const", [self._exact(other)],
                                                  params={"value": np.asarray(self.consts[const[0]], np.float32)}))
            return
        if const and op == "add" and len(const) == 1:
            other = node.input[1] if node.input[0] == const[0] else node.input[0]
            self._bias_after_matmul(node, other, self.consts[const[0]])
            return
        if const:
            raise UnsupportedError(f"{node.op_type} with a constant operand (edgekit's {op} takes two computed "
                                   "tensors)")
        (n0, s0), (n1, s1) = self._tensor(node.input[0]), self._tensor(node.input[1])
        if s0 == s1 and self._shape(n0) == self._shape(n1):  # same view of same-shaped nodes: stay a view
            self._bind(node.output[0], self._emit(self._label(node), op, [n0, n1]), s0)
        else:
            self._bind(node.output[0], self._emit(self._label(node), op, [self._exact(node.input[0]),
                                                                          self._exact(node.input[1])]))

    def _bias_after_matmul(self, node, value: str, bias: np.ndarray) -> None:
        """MatMul followed by Add of a constant is how exporters write a linear layer with a bias."""
        node_name, shape = self._tensor(value)
        lin = next((n for n in self.nodes if n.name == node_name), None)
        if lin is None or node_name not in self.bias_free or self.readers.get(value, 0) != 1 or \
                bias.size != lin.attrs["out_features"] or bias.ndim > len(shape):
            raise UnsupportedError("Add with a constant operand that is not the bias of a preceding MatMul "
                                   "(edgekit's add takes two computed tensors)")
        lin.params["bias"] = np.ascontiguousarray(bias.reshape(-1), dtype=np.float32)
        lin.fused.append(self._label(node))
        self.bias_free.discard(node_name)
        self.values[node_name] = run_node(lin, [self.values[lin.inputs[0]]])
        self._bind(node.output[0], node_name, shape)

    def _batchnorm(self, node, a):
        if a.get("training_mode", 0) or any(self._used(o) for o in node.output[1:]):
            raise UnsupportedError("BatchNormalization in training mode (export the model after model.eval())")
        params = {"weight": self._weight(node.input[1], "scale"), "bias": self._weight(node.input[2], "bias"),
                  "running_mean": self._weight(node.input[3], "mean"),
                  "running_var": self._weight(node.input[4], "variance")}
        x = self._exact(node.input[0])
        attrs = {"eps": float(a.get("epsilon", 1e-5))}
        self._bind(node.output[0], self._emit(self._label(node), "batchnorm", [x], attrs, params))

    def _hardsigmoid(self, node, a: dict):
        """HardSigmoid(alpha, beta) = clip(alpha·x + beta, 0, 1); PyTorch's (MobileNetV3's) is alpha 1/6, beta 1/2."""
        alpha, beta = float(a.get("alpha", 0.2)), float(a.get("beta", 0.5))
        if abs(alpha - 1 / 6) > 1e-6 or abs(beta - 0.5) > 1e-6:
            raise UnsupportedError(f"HardSigmoid with alpha {alpha:g}, beta {beta:g} (edgekit runs alpha 1/6, beta 1/2, "
                                   "as torch.nn.Hardsigmoid)")
        self._unary(node, "hardsigmoid")

    def _unary(self, node, op: str, attrs: dict | None = None):
        node_name, shape = self._tensor(node.input[0])  # elementwise: any view will do
        self._bind(node.output[0], self._emit(self._label(node), op, [node_name], attrs or {}), shape)

    def _prelu(self, node, a):
        """PRelu with one slope is a LeakyReLU of that slope; with a slope per channel (shape [C], [C, 1, 1]) a
        prelu layer; other broadcasts are refused."""
        slope = np.asarray(self._const(node.input[1], "slope"), dtype=np.float64)
        if slope.size == 1:
            self._unary(node, "leaky_relu", {"negative_slope": float(slope.reshape(-1)[0])})
            return
        x = self._exact(node.input[0])
        shape = self._shape(x)
        aligned = (1,) * (len(shape) - slope.ndim) + tuple(slope.shape)  # numpy broadcasting: from the last axis
        if len(shape) < 2 or len(aligned) != len(shape) or aligned[1] != shape[1] or \
                any(d != 1 for k, d in enumerate(aligned) if k != 1):
            raise UnsupportedError(f"PRelu with slopes of shape {list(slope.shape)} on {list(shape)} (edgekit runs "
                                   "one slope or one per channel)")
        self._bind(node.output[0], self._emit(self._label(node), "prelu", [x], {},
                                              {"weight": slope.reshape(-1).astype(np.float32)}))

    def _clip(self, node, a):
        if self.opset >= 11:
            lo = self._const(node.input[1], "minimum") if len(node.input) > 1 and node.input[1] else None
            hi = self._const(node.input[2], "maximum") if len(node.input) > 2 and node.input[2] else None
        else:
            lo, hi = a.get("min"), a.get("max")
        lo = None if lo is None or float(lo) == float("-inf") else float(lo)
        hi = None if hi is None or float(hi) == float("inf") else float(hi)
        if (lo, hi) == (0.0, 6.0):
            self._unary(node, "relu6")
        elif (lo, hi) == (0.0, None):
            self._unary(node, "relu")
        elif lo is not None and hi is not None:
            self._unary(node, "hardtanh", {"min_val": lo, "max_val": hi})
        else:
            raise UnsupportedError(f"Clip to [{lo}, {hi}] with one open end other than ReLU's (edgekit runs Clip(0), "
                                   "Clip(0, 6) and any closed range)")

    def _pool(self, node, a):
        x = self._exact(node.input[0])
        kernel = [int(k) for k in a["kernel_shape"]]
        if len(kernel) not in (1, 2):
            raise UnsupportedError(f"{len(kernel)}-D pooling (edgekit has 1-D and 2-D pooling)")
        dims = len(kernel)
        strides = [int(s) for s in a.get("strides", [1] * dims)]
        if [int(d) for d in a.get("dilations", [1] * dims)] != [1] * dims:
            raise UnsupportedError("pooling with dilation")
        pads = self._pads(a, self._shape(x)[2:], kernel, strides, [1] * dims, "pooling")
        if dims == 1:  # over [N, C, L]: the 2-D pool with a Kx1 window over its [N, C, L, 1] view, and back
            x = self._emit(f"{self._label(node)}.as_2d", "reshape", [x], {"shape": [*self._shape(x), 1]},
                           shape=(*self._shape(x), 1))
            kernel, strides, pads = [kernel[0], 1], [strides[0], 1], [pads[0], 0]
        attrs = {"kernel_size": kernel, "stride": strides, "padding": pads, "ceil_mode": bool(a.get("ceil_mode", 0))}
        if node.op_type == "MaxPool":
            if len(node.output) > 1 and self._used(node.output[1]):
                raise UnsupportedError("the pooling indices are read")
            op = "maxpool2d"
        else:
            op = "avgpool2d"
            attrs["count_include_pad"] = bool(a.get("count_include_pad", 0))
        y = self._emit(self._label(node), op, [x], attrs)
        if dims == 1:
            y = self._emit(f"{self._label(node)}.as_1d", "reshape", [y], {"shape": list(self._shape(y)[:3])},
                           shape=self._shape(y)[:3])
        self._bind(node.output[0], y)

    def _global_pool(self, node, a):
        x = self._exact(node.input[0])
        if len(self._shape(x)) not in (3, 4):
            raise UnsupportedError(f"global pooling of a {len(self._shape(x))}-D tensor (edgekit pools [N, C, L] "
                                   "and [N, C, H, W])")
        self._bind(node.output[0], self._emit(self._label(node), "global_avgpool", [x]))

    def _reduce_mean(self, node, a):
        node_name, shape = self._tensor(node.input[0])
        axes = self._input_list(node, 1, a, "axes", 18)
        axes = sorted(int(d) % len(shape) for d in (axes if axes is not None else range(len(shape))))
        if len(shape) != 4 or axes != [2, 3]:
            if 0 in axes:
                raise UnsupportedError(f"ReduceMean over axes {axes}, the batch axis among them")
            keep = bool(a.get("keepdims", 1))
            out = self._emit(self._label(node), "reduce_mean", [self._exact(node.input[0])],
                             {"dims": axes, "keepdim": keep})
            self._bind(node.output[0], out)
            return
        pooled = self._emit(self._label(node), "global_avgpool", [self._exact(node.input[0])])
        self.vals[node.output[0]] = (pooled, self._shape(pooled))
        if not a.get("keepdims", 1):
            self._view(node, node.output[0], shape[:2])

    def _concat(self, node, a):
        ins = [self._exact(i) for i in node.input]
        rank = len(self._shape(ins[0]))
        self._bind(node.output[0], self._emit(self._label(node), "concat", ins, {"dim": int(a["axis"]) % rank}))

    def _softmax(self, node, a):
        node_name, shape = self._tensor(node.input[0])
        axis = int(a.get("axis", -1 if self.opset >= 13 else 1)) % len(shape)
        if self.opset < 13 and axis != len(shape) - 1:
            raise UnsupportedError(f"opset {self.opset} Softmax over axes {axis} to {len(shape) - 1} flattened "
                                   "together; re-export with opset 13 or later")
        if shape != self._shape(node_name):
            mapped = _node_axis(shape, self._shape(node_name), axis)
            if mapped is None:
                node_name = self._exact(node.input[0])
            else:
                axis = mapped
        self._bind(node.output[0], self._emit(self._label(node), "softmax", [node_name], {"dim": axis}), shape)

    # ---- layout (views) ----------------------------------------------------------------------------------------------
    def _identity(self, node, a):
        if node.op_type == "Dropout" and len(node.output) > 1 and self._used(node.output[1]):
            raise UnsupportedError("the dropout mask is read")
        if node.op_type == "Cast" and a.get("to") not in _FLOAT_TYPES:
            raise UnsupportedError(f"a cast to {onnx.TensorProto.DataType.Name(a.get('to'))} (edgekit computes in "
                                   "float)")
        self.vals[node.output[0]] = self._tensor(node.input[0])

    def _flatten(self, node, a):
        _, shape = self._tensor(node.input[0])
        axis = int(a.get("axis", 1)) % (len(shape) + 1)
        self._view(node, node.input[0], (int(np.prod(shape[:axis])), int(np.prod(shape[axis:]))))

    def _reshape(self, node, a):
        _, shape = self._tensor(node.input[0])
        target = [int(d) for d in self._const(node.input[1], "target shape")]
        if not a.get("allowzero", 0):
            target = [shape[i] if d == 0 else d for i, d in enumerate(target)]
        self._view(node, node.input[0], np.empty(shape, np.bool_).reshape(target).shape)

    def _squeeze(self, node, a):
        _, shape = self._tensor(node.input[0])
        axes = self._input_list(node, 1, a, "axes", 13)
        axes = {int(d) % len(shape) for d in axes} if axes is not None else {i for i, d in enumerate(shape) if d == 1}
        self._view(node, node.input[0], tuple(d for i, d in enumerate(shape) if i not in axes))

    def _unsqueeze(self, node, a):
        _, shape = self._tensor(node.input[0])
        axes = self._input_list(node, 1, a, "axes", 13)
        rank = len(shape) + len(axes)
        axes = {int(d) % rank for d in axes}
        rest = iter(shape)
        self._view(node, node.input[0], tuple(1 if i in axes else next(rest) for i in range(rank)))

    def _transpose(self, node, a):
        _, shape = self._tensor(node.input[0])
        perm = [int(p) for p in a.get("perm", range(len(shape) - 1, -1, -1))]
        if _keeps_order(shape, perm):
            self._view(node, node.input[0], tuple(shape[p] for p in perm))
            return
        if perm[0] != 0:
            raise UnsupportedError(f"perm {perm} on shape {list(shape)} moves the batch axis; edgekit keeps the batch "
                                   "first")
        x = self._exact(node.input[0])
        self._bind(node.output[0], self._emit(self._label(node), "transpose", [x], {"perm": perm}))

    def _layernorm(self, node, a):
        x = self._exact(node.input[0])
        rank = len(self._shape(x))
        axis = int(a.get("axis", -1)) % rank
        params = {"weight": self._weight(node.input[1], "scale")}
        if len(node.input) > 2 and node.input[2]:
            params["bias"] = self._weight(node.input[2], "bias")
        if any(self._used(o) for o in node.output[1:]):
            raise UnsupportedError("LayerNormalization's mean or inverse standard deviation is read")
        attrs = {"normalized_shape": list(self._shape(x)[axis:]), "eps": float(a.get("epsilon", 1e-5))}
        self._bind(node.output[0], self._emit(self._label(node), "layernorm", [x], attrs, params))

    def _gelu(self, node, a):
        node_name, shape = self._tensor(node.input[0])
        approximate = a.get("approximate", b"none")
        approximate = approximate.decode() if isinstance(approximate, bytes) else str(approximate)
        self._bind(node.output[0], self._emit(self._label(node), "gelu", [node_name], {"approximate": approximate}),
                   shape)

    def _select(self, node, value: str, axis: int, index, out_shape: tuple) -> None:
        """Bind ``node``'s output to ``value[..., index on axis, ...]`` (index an int or a slice)."""
        node_name, shape = self._tensor(value)
        if shape[axis] == 1 and (index in (0, -1) or index == slice(0, 1, 1)):
            self._view(node, value, out_shape)  # selecting along a size-1 axis only drops or keeps it
            return
        mapped = axis if shape == self._shape(node_name) else _node_axis(shape, self._shape(node_name), axis)
        if mapped is None:
            node_name, mapped = self._exact(value), axis
        if mapped == 0:
            raise UnsupportedError("it selects along the batch axis")
        spec: list = [["slice", None, None, None]] * mapped
        spec.append(int(index) if isinstance(index, int) else ["slice", index.start, index.stop, index.step])
        self._bind(node.output[0], self._emit(self._label(node), "select", [node_name], {"index": spec}), out_shape)

    def _gather(self, node, a):
        _, shape = self._tensor(node.input[0])
        idx = self._const(node.input[1], "index")
        axis = int(a.get("axis", 0)) % len(shape)
        if idx.size != 1:
            raise UnsupportedError("Gather of several indices (edgekit selects one index or a slice)")
        i = int(idx.reshape(-1)[0])
        if idx.ndim == 0:
            self._select(node, node.input[0], axis, i, shape[:axis] + shape[axis + 1:])
        else:
            i %= shape[axis]
            self._select(node, node.input[0], axis, slice(i, i + 1, 1), shape[:axis] + (1,) + shape[axis + 1:])

    def _slice(self, node, a):
        _, shape = self._tensor(node.input[0])
        if self.opset >= 10:
            starts, ends = self._const(node.input[1], "starts"), self._const(node.input[2], "ends")
            axes = self._const(node.input[3], "axes") if len(node.input) > 3 and node.input[3] else None
            steps = self._const(node.input[4], "steps") if len(node.input) > 4 and node.input[4] else None
        else:
            starts, ends, axes, steps = a["starts"], a["ends"], a.get("axes"), None
        axes = list(range(len(starts))) if axes is None else [int(x) % len(shape) for x in axes]
        steps = [1] * len(axes) if steps is None else [int(s) for s in steps]
        cuts = {}
        for ax, st, en, sp in zip(axes, starts, ends, steps):
            if sp <= 0:
                raise UnsupportedError("a slice with a negative step")
            start, stop, step = slice(int(st), int(en), sp).indices(shape[ax])
            if (start, stop, step) != (0, shape[ax], 1):
                cuts[ax] = slice(start, stop, step)
        if not cuts:
            self.vals[node.output[0]] = self._tensor(node.input[0])
            return
        if len(cuts) > 1:
            raise UnsupportedError("a slice along several axes")
        ax, s = next(iter(cuts.items()))
        out = shape[:ax] + (len(range(s.start, s.stop, s.step)),) + shape[ax + 1:]
        self._select(node, node.input[0], ax, s, out)

    # ---- recurrent layers --------------------------------------------------------------------------------------------
    def _rnn(self, node, a):
        kind = node.op_type.lower()
        gates, order = (3, GRU_GATES_FROM_ONNX) if kind == "gru" else (4, LSTM_GATES_FROM_ONNX)
        defaults = ["Sigmoid", "Tanh"] if kind == "gru" else ["Sigmoid", "Tanh", "Tanh"]
        if a.get("direction", "forward") != "forward":
            raise UnsupportedError(f"direction '{a['direction']}' (a streaming device sees each step once, forward)")
        if [s.decode() if isinstance(s, bytes) else s for s in a.get("activations", defaults)] != defaults:
            raise UnsupportedError(f"activations {a['activations']} (edgekit has the default ones)")
        if "clip" in a:
            raise UnsupportedError("cell clipping")
        if kind == "gru" and a.get("linear_before_reset", 0) != 1:
            raise UnsupportedError("linear_before_reset=0 (PyTorch's GRU, which edgekit runs, is "
                                   "linear_before_reset=1)")
        if kind == "lstm" and a.get("input_forget", 0):
            raise UnsupportedError("input_forget=1 (coupled input and forget gates)")
        hidden, layout = int(a["hidden_size"]), int(a.get("layout", 0))

        def opt(i):
            return node.input[i] if len(node.input) > i and node.input[i] else None

        for i, what in ((5, "initial hidden state"), (6, "initial cell state"), (7, "peephole weights")):
            if (kind == "lstm" or i == 5) and opt(i) is not None and np.any(self._const(opt(i), what)):
                raise UnsupportedError(f"a non-zero {what} (edgekit's recurrent layers start from zero)")

        def torch_order(m: np.ndarray) -> np.ndarray:
            blocks = np.split(m, gates, axis=0)
            return np.ascontiguousarray(np.concatenate([blocks[g] for g in order], axis=0), dtype=np.float32)

        W, R = self._weight(node.input[1], "input weights"), self._weight(node.input[2], "recurrent weights")
        params = {"weight_ih": torch_order(W[0]), "weight_hh": torch_order(R[0])}
        if opt(3) is not None:
            B = self._weight(opt(3), "biases")[0]
            params["bias_ih"], params["bias_hh"] = torch_order(B[:gates * hidden]), torch_order(B[gates * hidden:])

        node_name, shape = self._tensor(node.input[0])
        steps = shape[0] if layout == 0 else shape[1]
        if opt(4) is not None and np.any(self._const(opt(4), "sequence lengths") != steps):
            raise UnsupportedError("sequence_lens shorter than the sequence")
        if layout == 0 and self._shape(node_name) == shape and shape[1] == 1 and shape[0] != 1:
            x, batch_first = node_name, False  # a sequence-first graph input
        else:
            x, batch_first = self._with_shape(node_name, (1, steps, shape[2]), "its input"), True
        attrs = {"input_size": int(W.shape[2]), "hidden_size": hidden, "batch_first": batch_first}
        rnn = self._emit(self._label(node), kind, [x], attrs, params)
        # Y is [T, 1, B, H] (layout 0) or [B, T, 1, H] (layout 1); with B = 1 both are views of the [1, T, H] output.
        self._bind(node.output[0], rnn, (steps, 1, 1, hidden) if layout == 0 else (1, steps, 1, hidden))
        if len(node.output) > 1 and self._used(node.output[1]):
            spec: list = [["slice", None, None, None]] * (1 if batch_first else 0) + [-1]
            last = self._emit(f"{self._label(node)}.h_n", "select", [rnn], {"index": spec})
            self._bind(node.output[1], last, (1, 1, hidden))
        if len(node.output) > 2 and self._used(node.output[2]):
            raise UnsupportedError("the cell state Y_c is read (use the output or Y_h)")

    HANDLERS = {
        "Conv": _conv, "ConvTranspose": _conv_transpose, "DepthToSpace": _depth_to_space, "Resize": _resize, "Upsample": _resize, "Pad": _pad, "Gemm": _gemm, "MatMul": _matmul, "Add": _binary, "Mul": _binary, "Div": _binary,
        "LayerNormalization": _layernorm, "Gelu": _gelu,
        "BatchNormalization": _batchnorm,
        "Relu": lambda self, n, a: self._unary(n, "relu"), "Clip": _clip,
        "HardSwish": lambda self, n, a: self._unary(n, "hardswish"),
        "HardSigmoid": lambda self, n, a: self._hardsigmoid(n, a),
        "Sigmoid": lambda self, n, a: self._unary(n, "sigmoid"), "Tanh": lambda self, n, a: self._unary(n, "tanh"),
        "LeakyRelu": lambda self, n, a: self._unary(n, "leaky_relu", {"negative_slope": float(a.get("alpha", 0.01))}),
        "Elu": lambda self, n, a: self._unary(n, "elu", {"alpha": float(a.get("alpha", 1.0))}),
        "Mish": lambda self, n, a: self._unary(n, "mish"), "PRelu": _prelu,
        "MaxPool": _pool, "AveragePool": _pool, "GlobalAveragePool": _global_pool, "ReduceMean": _reduce_mean,
        "Concat": _concat, "Softmax": _softmax,
        "Identity": _identity, "Dropout": _identity, "Cast": _identity,
        "Flatten": _flatten, "Reshape": _reshape, "Squeeze": _squeeze, "Unsqueeze": _unsqueeze,
        "Transpose": _transpose, "Gather": _gather, "Slice": _slice,
        "GRU": _rnn, "LSTM": _rnn,
    }
