"""PyTorch module -> one self-contained, simplified ONNX file, and which edgekit layer each ONNX node came from.

Where it sits: the first step of the phone target (targets/phone/__init__.py). It only writes ONNX; quantization
(quantize.py) and the ORT format conversion happen afterwards.

Export order: ``torch.onnx.export(dynamo=True)`` (torch.export based, carries the module path of every node in its
metadata); if that fails, the TorchScript exporter (its node names carry the module path); if both fail, every
operator the ONNX exporter cannot translate is collected from the exported program and reported in one error. The
batch axis is exported dynamic so the runtime can run test inputs in batches.
"""
from __future__ import annotations

import ast
import contextlib
import io
import os
import re
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch

from edgekit.errors import ModelLoadError, UnsupportedError
from edgekit.graph import Graph

INPUT_NAME = "input"
OUTPUT_NAME = "output"

# Node metadata the dynamo exporter writes (stack traces, fx nodes, class paths). It is read once for the layer map
# and then dropped: stack traces add a few hundred bytes per node, and a phone never reads them.
NAME_SCOPES_KEY = "pkg.torch.onnx.name_scopes"


def _first_line(e: BaseException, limit: int = 200) -> str:
    text = str(e).strip()
    # The dynamo exporter's message starts with boilerplate; its "Exception summary" names the op.
    m = re.search(r"No ONNX function found for <OpOverload\(op='([^']+)'", text)
    if m:
        return f"no ONNX translation for {m.group(1)}"
    lines = [ln.strip() for ln in re.sub(r"\x1b\[[0-9;]*m", "", text).splitlines() if ln.strip()]
    if "## Exception summary" in lines:
        lines = lines[lines.index("## Exception summary") + 1:]
    line = lines[0] if lines else type(e).__name__
    line = re.sub(r"^<class '(?:[\w.]+\.)?(\w+)'>", r"\1", line)
    return line[:limit]


def _batched_example(example: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    # torch.export specialises a dimension whose example size is 1, so trace with a batch of 2 to keep it dynamic.
    return tuple(torch.cat([x, x], 0) if x.shape[0] == 1 else x for x in example)


def export_module(module: torch.nn.Module, example: tuple[torch.Tensor, ...], path: Path) -> tuple[str, list[str]]:
    """Write ``module`` to ``path`` as ONNX; returns (exporter used, notes)."""
    from edgekit.loaders import _BatchOneProgram

    # A .pt2 exported at batch 1 has that batch baked into its graph (views, guards): export it at batch 1, fixed.
    fixed_batch = isinstance(module, _BatchOneProgram)
    args = tuple(example) if fixed_batch else _batched_example(example)
    names = [INPUT_NAME] if len(args) == 1 else [f"{INPUT_NAME}{i}" for i in range(len(args))]
    notes: list[str] = []
    try:
        batch = torch.export.Dim("batch")
        with _quiet():
            torch.onnx.export(module, args, str(path), dynamo=True, external_data=False, input_names=names,
                              output_names=[OUTPUT_NAME], verbose=False,
                              dynamic_shapes=None if fixed_batch else tuple({0: batch} for _ in args))
        return "dynamo", notes
    except Exception as dynamo_error:  # noqa: BLE001 - any exporter failure sends us to the fallback
        dynamo_reason = _first_line(dynamo_error)
    try:
        with _quiet():
            torch.onnx.export(module, args, str(path), dynamo=False, input_names=names, output_names=[OUTPUT_NAME],
                              dynamic_axes=None if fixed_batch else {n: {0: "batch"} for n in names + [OUTPUT_NAME]})
        notes.append(f"exported with the TorchScript exporter because the dynamo exporter failed ({dynamo_reason}); "
                     "TorchScript tracing freezes Python control flow, so outputs are checked against torch")
        return "torchscript", notes
    except Exception as ts_error:  # noqa: BLE001
        failures = untranslatable_ops(module, args)
        if failures:
            raise UnsupportedError(
                f"model has {len(failures)} operator(s) ONNX export cannot translate: "
                + "; ".join(f"layer '{layer}': {op}" for layer, op in failures)
                + ". Replace them with standard torch.nn layers or pick another target") from ts_error
        raise UnsupportedError(f"ONNX export failed: dynamo exporter: {dynamo_reason}; TorchScript exporter: "
                               f"{_first_line(ts_error)}. Make the model torch.export-able (no data-dependent "
                               "control flow) or export it to .onnx yourself") from ts_error


@contextlib.contextmanager
def _quiet():
    """The exporters print progress, graphs and warnings meant for their developers, some from C++ straight to file
    descriptors 1 and 2; keep edgekit's output readable (failures still arrive as exceptions)."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
            contextlib.redirect_stderr(io.StringIO()), _quiet_fds():
        warnings.simplefilter("ignore")
        import logging

        loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._export",
                                                  "torch.fx.experimental.symbolic_shapes",
                                                  "torch.onnx._internal.exporter._registration")]
        levels = [lg.level for lg in loggers]
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for lg, lv in zip(loggers, levels):
                lg.setLevel(lv)


@contextlib.contextmanager
def _quiet_fds():
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    saved = [os.dup(1), os.dup(2)]
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 1)
        os.dup2(null, 2)
        yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved + [null]:
            os.close(fd)


def untranslatable_ops(module: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> list[tuple[str, str]]:
    """(layer, aten op) for every node of the exported program that has no ONNX translation.

    Uses the dynamo exporter's own registry and dispatcher (private torch API, so any failure here just yields []:
    the caller then reports the exporter's first error instead).
    """
    try:
        from torch.onnx._internal.exporter import _core, _dispatching, _registration

        with _quiet():
            ep = torch.export.export(module, args, strict=False)
            registry = _registration.ONNXRegistry.from_torchlib()
            ep = _core._prepare_exported_program_for_export(ep, registry=registry)
            out = []
            for node in ep.graph.nodes:
                if node.op != "call_function":
                    continue
                fn, _ = _dispatching.dispatch(node, registry)
                if fn is None:
                    stack = node.meta.get("nn_module_stack") or {}
                    layer = next(reversed(stack.values()))[0] if stack else node.name
                    out.append((layer or node.name, str(node.target).replace("aten::", "aten.")))
        return out
    except Exception:  # noqa: BLE001
        return []


# ---- the layer map ------------------------------------------------------------------------------------------------


def layer_index(graph: Graph | None) -> dict[str, str]:
    """Module path -> deployment-graph layer (a layer owns the BatchNorm and activation fused into it)."""
    index: dict[str, str] = {}
    if graph is None:
        return index
    for n in graph.nodes:
        if n.op == "input":
            continue
        index[n.name] = n.name
        for f in n.fused:
            index[f] = n.name
    return index


def node_layers(model: onnx.ModelProto, index: dict[str, str]) -> dict[str, str]:
    """ONNX node name (and output tensor name) -> edgekit layer, for the nodes whose module path is known.

    dynamo export: the ``name_scopes`` metadata lists module paths, outermost first, then the fx node name
    (``['', 'features', 'features.3', 'add_2']``). TorchScript export: node names are scope paths
    (``/features/features.0/features.0.0/Conv``).
    """
    out = {}
    by_base: dict[str, set[str]] = {}
    for name, layer in index.items():
        by_base.setdefault(_base(name), set()).add(layer)
    for node in model.graph.node:
        scopes = []
        meta = {p.key: p.value for p in node.metadata_props}
        if NAME_SCOPES_KEY in meta:
            try:
                scopes = [s for s in ast.literal_eval(meta[NAME_SCOPES_KEY]) if s]
            except (ValueError, SyntaxError):
                scopes = []
        elif node.name.startswith("/"):
            scopes = [s for s in node.name.split("/")[1:-1] if s]
        # Files from elsewhere: edgekit's ONNX importer may name layers after nodes or their outputs.
        layer = _match(scopes, index, by_base) or index.get(node.name) or \
            next((index[o] for o in node.output if o in index), None)
        if layer is not None:
            out[node.name] = layer
            # ORT names the Q/DQ nodes it keeps after a tensor ('relu_2_DequantizeLinear'): map tensors too.
            for tensor in node.output:
                out.setdefault(tensor, layer)
    return out


def _base(name: str) -> str:
    return re.sub(r"_\d+$", "", name)


def _match(scopes: list[str], index: dict[str, str], by_base: dict[str, set[str]]) -> str | None:
    if not scopes:
        return None
    *modules, leaf = scopes
    # Functional ops inside a module are edgekit layers named '<module>.<op>[_N]' (features.5.add_1); the exporter
    # numbers them differently (add_120), so match on '<module>.<op>' when that module holds only one such layer.
    op = _base(leaf)
    for module in reversed(modules):
        if module in index:
            return index[module]
        layers = by_base.get(f"{module}.{op}", set())
        if len(layers) == 1:
            return next(iter(layers))
    for candidate in (leaf, op):
        if candidate in index:
            return index[candidate]
    return None


def strip_metadata(model: onnx.ModelProto) -> None:
    """Drop exporter debug metadata (stack traces, fx nodes) from every node, in place."""
    for node in model.graph.node:
        del node.metadata_props[:]
        node.doc_string = ""
    model.graph.doc_string = ""


def simplify(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    """onnxslim's constant folding and dead-node removal; the model as is (and a note) if onnxslim fails."""
    import onnxslim

    try:
        with _quiet():
            return onnxslim.slim(model), []
    except Exception as e:  # noqa: BLE001 - simplification is an optimisation, never a reason to fail
        return model, [f"onnxslim could not simplify the model ({_first_line(e, 120)}); kept it as exported"]


def load_onnx_file(path: Path) -> onnx.ModelProto:
    """An .onnx file with any external weights pulled in (edgekit writes one self-contained file)."""
    try:
        return onnx.load(str(path), load_external_data=True)
    except Exception as e:  # noqa: BLE001
        raise ModelLoadError(f"{path}: cannot read the ONNX file ({_first_line(e, 120)}); re-export it") from e


def compact_names(model: onnx.ModelProto, keep_nodes: set[str]) -> onnx.ModelProto:
    """No all-zero bias zero points, each distinct initializer once, short tensor names and no names on the
    quantizer's Q/DQ nodes: an int8 QDQ file spells every activation's and
    weight's long name several times (``features.0.0.weight_DequantizeLinear_Output``), a few hundred bytes per
    layer. The graph's inputs and outputs and the nodes in ``keep_nodes`` (the ones the per-layer profile maps to
    edgekit layers) keep their names."""
    g = model.graph
    # An int32 bias's DequantizeLinear with an all-zero zero point means the same without it (ONNX: the zero point
    # defaults to 0): four bytes per channel fewer. The int8 weights keep theirs: without it ONNX Runtime does not
    # take its symmetric depthwise kernels (measured: mbv2-w035 +30 % instructions on the A76).
    inits = {t.name: t for t in g.initializer}
    for n in g.node:
        if (n.op_type == "DequantizeLinear" and len(n.input) == 3 and n.input[0] in inits and n.input[2] in inits
                and inits[n.input[0]].data_type == onnx.TensorProto.INT32
                and not onnx.numpy_helper.to_array(inits[n.input[2]]).any()):
            del n.input[2]
    # Identical initializers stored once (the quantizer writes one per reader: equal zero points, the all-zero
    # weight zero points of layers with as many channels; zoo MobileNetV2-0.35: 111 of 320, 15 KB of model.ort,
    # whose every initializer is also a typed, shaped NodeArg).
    first: dict[tuple, str] = {}
    same: dict[str, str] = {}
    graph_io = {v.name for v in list(g.input) + list(g.output)}
    for t in g.initializer:
        if t.name in graph_io:  # (an initializer listed as a graph input can be overridden: not merged)
            continue
        key = (t.data_type, tuple(t.dims), onnx.numpy_helper.to_array(t).tobytes())
        same[t.name] = first.setdefault(key, t.name)
    for n in g.node:
        n.input[:] = [same.get(i, i) for i in n.input]
    used = {i for n in g.node for i in n.input} | {o.name for o in g.output}
    kept = [t for t in g.initializer if t.name in used]
    del g.initializer[:]
    g.initializer.extend(kept)
    fixed = {v.name for v in list(g.input) + list(g.output)}
    names: dict[str, str] = {}

    def short(name: str) -> str:
        if not name or name in fixed:
            return name
        if name not in names:
            i, s = len(names), ""
            while True:
                s = "0123456789abcdefghijklmnopqrstuvwxyz"[i % 36] + s
                i //= 36
                if not i:
                    break
            names[name] = "t" + s
        return names[name]

    for t in g.initializer:
        t.name = short(t.name)
    for n in g.node:
        n.input[:] = [short(i) for i in n.input]
        n.output[:] = [short(o) for o in n.output]
        if n.name not in keep_nodes:
            n.name = ""
        n.doc_string = ""
    for v in g.value_info:  # kept: ONNX Runtime's layout transformers need the shapes (mbv2-w035 +30 % without)
        v.name = short(v.name)
    return model


def derived_bias_scales(model: onnx.ModelProto) -> int:
    """Replace each int32 bias's per-channel DequantizeLinear scale — the quantizer's input scale x weight scales,
    one float per output channel — by a Mul of the two scales the file holds anyway, where that product is the
    stored array bit for bit; in place, returns the bytes saved. ONNX Runtime folds the Mul when it loads the model
    (constant folding runs before the QDQ fusions), so the fused kernels and every output stay the same (the
    unoptimised QDQ session computes the same float32 product); an int8 file loses 4 bytes per output channel
    (zoo MobileNetV2-0.35: 27.5 KB of 517 KB)."""
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    producer = {o: n for n in g.node for o in n.output}
    readers: dict[str, int] = {}
    for n in g.node:
        for i in n.input:
            readers[i] = readers.get(i, 0) + 1
    muls, dropped, saved = [], set(), 0
    for n in g.node:
        if n.op_type not in ("Conv", "Gemm") or len(n.input) < 3:
            continue
        dq = [producer.get(i) for i in n.input[:3]]
        if not all(d is not None and d.op_type == "DequantizeLinear" and len(d.input) >= 2 and d.input[1] in inits
                   for d in dq):
            continue
        x_scale, w_scale, b_scale = (d.input[1] for d in dq)
        if readers.get(b_scale) != 1 or b_scale in dropped:
            continue
        xs, ws, bs = (onnx.numpy_helper.to_array(inits[name]) for name in (x_scale, w_scale, b_scale))
        if xs.size != 1 or bs.dtype != np.float32 or not np.array_equal((xs * ws).astype(np.float32), bs):
            continue
        muls.append(onnx.helper.make_node("Mul", [x_scale, w_scale], [b_scale]))
        dropped.add(b_scale)
        saved += bs.nbytes
    if muls:
        kept = [t for t in g.initializer if t.name not in dropped]
        del g.initializer[:]
        g.initializer.extend(kept)
        nodes = muls + list(g.node)  # the Muls read initializers only: first is a topological place
        del g.node[:]
        g.node.extend(nodes)
    return saved


def phase_conv_transposes(model: onnx.ModelProto, layers: dict[str, str]) -> tuple[onnx.ModelProto, list[str]]:
    """Every 2-D ConvTranspose with constant weights and one stride for both axes, rewritten as what edgekit deploys
    it as (edgekit.graph.conv_transpose_phases): a stride-1 Conv computing the output phases, a DepthToSpace
    interleaving them and, when the padding cuts the borders, a Slice. ONNX Runtime's ConvTranspose is a GEMM and
    col2im in float32, and its int8 form does not pay on any Arm core measured (zoo DCGAN's: 2.18 M int8 against
    1.19 M float32 instructions on the A76); as convs, its layers run ONNX Runtime's int8 / float conv kernels.
    ``layers`` (ONNX node -> edgekit layer) gets the new nodes under the transposed conv's layer."""
    from onnx import helper, numpy_helper

    from edgekit.graph import Node, conv_transpose_phases

    todo = [n for n in model.graph.node if n.op_type == "ConvTranspose"]
    if not todo:
        return model, []
    inferred = onnx.shape_inference.infer_shapes(model)
    shapes = {v.name: [d.dim_value if d.HasField("dim_value") else 0 for d in v.type.tensor_type.shape.dim]
              for v in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output)}
    inits = {i.name: i for i in model.graph.initializer}
    nodes, added, done = [], [], []
    for node in model.graph.node:
        if node.op_type != "ConvTranspose":
            nodes.append(node)
            continue
        a = {x.name: helper.get_attribute_value(x) for x in node.attribute}
        x_shape, y_shape = shapes.get(node.input[0]), shapes.get(node.output[0])
        weight = inits.get(node.input[1])
        bias = inits.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        strides = list(a.get("strides", [1, 1]))
        pads = list(a.get("pads", [0, 0, 0, 0]))
        if weight is None or (len(node.input) > 2 and node.input[2] and bias is None) or not x_shape or \
                not y_shape or len(x_shape) != 4 or 0 in x_shape[1:] or 0 in y_shape[1:] or \
                list(a.get("dilations", [1, 1])) != [1, 1] or a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET") \
                or strides[0] != strides[1] or pads[:2] != pads[2:]:
            nodes.append(node)
            continue
        w = numpy_helper.to_array(weight).astype(np.float32)
        params = {"weight": w} if bias is None else {"weight": w, "bias": numpy_helper.to_array(bias)}
        group = int(a.get("group", 1))
        t = Node(node.name or node.output[0], "conv_transpose2d", ["x"], (1, w.shape[1] * group, *y_shape[2:]),
                 {"in_channels": w.shape[0], "out_channels": w.shape[1] * group, "kernel_size": list(w.shape[2:]),
                  "stride": strides, "padding": pads[:2], "dilation": [1, 1], "groups": group}, params)
        in_hw = tuple(x_shape[2:])
        conv, shuffle, crop = conv_transpose_phases(t, in_hw)
        if shuffle.attrs["block"][0] != shuffle.attrs["block"][1]:  # (a 1-pixel axis took another stride)
            nodes.append(node)
            continue
        base = node.name or node.output[0]
        w_name, b_name = f"{base}_phase_weight", f"{base}_phase_bias"
        added += [numpy_helper.from_array(conv.params["weight"], w_name),
                  numpy_helper.from_array(conv.params["bias"].astype(np.float32), b_name)]
        (ph, pw), k = conv.attrs["padding"], conv.attrs["kernel_size"]
        phases = f"{base}_phases"
        nodes.append(helper.make_node("Conv", [node.input[0], w_name, b_name], [phases], name=base,
                                      kernel_shape=k, pads=[ph, pw, ph, pw], group=group))
        inter = node.output[0] if crop is None else f"{base}_interleaved"
        nodes.append(helper.make_node("DepthToSpace", [phases], [inter], name=f"{base}_interleave",
                                      blocksize=int(shuffle.attrs["block"][0]), mode=shuffle.attrs["mode"]))
        names = [base, f"{base}_interleave"]
        if crop is not None:
            (_, _, rows, cols) = crop.attrs["index"]
            starts, ends = f"{base}_crop_starts", f"{base}_crop_ends"
            added += [numpy_helper.from_array(np.array([rows[1], cols[1]], np.int64), starts),
                      numpy_helper.from_array(np.array([rows[2], cols[2]], np.int64), ends),
                      numpy_helper.from_array(np.array([2, 3], np.int64), f"{base}_crop_axes")]
            nodes.append(helper.make_node("Slice", [inter, starts, ends, f"{base}_crop_axes"], [node.output[0]],
                                          name=f"{base}_crop"))
            names.append(f"{base}_crop")
        layer = layers.get(node.name)
        if layer is not None:
            for nm in names:
                layers[nm] = layer
            for tensor in (phases, inter):
                layers.setdefault(tensor, layer)
        done.append(base)
    if not done:
        return model, []
    used = {i for n in nodes for i in n.input}
    kept = [i for i in model.graph.initializer if i.name in used]
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept + added)
    return model, [f"transposed convs as phase convs (Conv, DepthToSpace, Slice: ONNX Runtime's conv kernels): "
                   f"{', '.join(layers.get(n, n) for n in done)}"]
