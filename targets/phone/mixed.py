"""int8 only where it pays: per-layer Arm instruction counts of a QDQ model against its float layers, on the target core.

Where it sits: targets/phone (Model -> Artifact), between quantization (quantize.py) and the ORT format conversion.
ONNX Runtime picks its int8 kernels by core (NEON SMULL/SMLAL on a Cortex-A53, UDOT on an A76, SMMLA on an Armv9
core), and on some layers an int8 kernel with its requantization costs more than the float one; a model whose layers
mostly lose ends up slower in int8 than in float32. So each layer is measured both ways on the profile's emulated core
(targets/phone/arm64.py, exact instruction counts):

* a *layer* is an operator of the QDQ model whose activation inputs come through DequantizeLinear and whose output goes
  to a QuantizeLinear (what ONNX Runtime fuses into QLinearConv, QGemm, QLinearAdd ...). Its int8 form is the QDQ
  sub-model from the quantized inputs to the quantized output; its float form is the same operator cut from the float
  model the quantizer started from (same tensor names), plus what keeping it float adds: DequantizeLinear of its
  inputs and QuantizeLinear of its output;
* a layer stays float when that costs clearly (``MARGIN``) fewer instructions than its int8 form (``nodes_to_exclude``
  of ORT's quantizer);
* the whole models are then counted — float32, all-int8 and the mixed one — and the cheapest int8 model is shipped;
  if neither int8 model beats float32 the build ships float32 and says so (int8 never costs more than float).

Every count is batch 1, the median of three runs after one warm-up, minus an empty model's ``session.run``.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnx

from edgekit.targets.phone import arm64

RUNS = 3  # counted runs per model (after one warm-up); the median is kept
# ONNX Runtime's session.run does not execute exactly the same instructions every time (about ±1 % between runs of
# one process, measured): a choice changes only on a difference beyond that, so it does not flip between two builds.
MARGIN = 0.02


# Operators ONNX Runtime runs on the int8 data whatever the quantizer did: left float (nodes_to_exclude) they sit
# between a DequantizeLinear and a QuantizeLinear of the same scale, a pair its graph optimizer drops (DropQDQ).
# Counted alone their int8 form also pays the layout transposes the whole model does not, so they are never kept
# float (measured on the emulated A76: keeping digits-cnn's MaxPool float took the mixed model from 162 k to 214 k
# instructions once the pair was kept apart).
INT8_ANYWAY = {"MaxPool", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Slice", "Gather",
               "GatherElements", "Expand", "Resize", "SpaceToDepth", "DepthToSpace", "Tile", "Split"}


def clearly_fewer(a: int, b: int) -> bool:
    """``a`` instructions are fewer than ``b`` by more than the run-to-run noise."""
    return a < b * (1 - MARGIN)


@dataclass
class LayerChoice:
    node: str              # the operator in the QDQ model
    op: str
    layer: str | None      # the edgekit layer, when the export's map knows it
    int8: int              # instructions of its int8 form
    float32: int           # instructions of its float form, Q/DQ at its edges included
    dtype: str             # what was chosen: "int8" | "float32"
    edges: int = 0         # of ``float32``, the Q/DQ at its edges alone (the float layer is float32 - edges)


@dataclass
class MixedChoice:
    core: str
    layers: list[LayerChoice]
    excluded: list[str]                      # QDQ operators kept in float
    whole: dict[str, int] = field(default_factory=dict)   # instructions of each whole model counted
    shipped: str = "int8"                    # the key of ``whole`` shipped ("float32" when no int8 model is cheaper)
    activations: str = "uint8"               # the int8 models' activation type: "uint8" or "int8"

    def to_json(self) -> dict:
        return asdict(self)


# ---- the guest: counts sessions of many small models in one emulated process ---------------------------------------

GUEST = '''
import json, sys
import numpy as np, onnxruntime as ort
from ekmark import mark

jobs = json.load(open(sys.argv[1]))
for k, job in enumerate(jobs):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    sess = ort.InferenceSession(job["path"], so, providers=["CPUExecutionProvider"])
    data = np.load(job["feeds"])
    feed = {name: data[name] for name in data.files}
    sess.run(None, feed)
    for r in range(job["runs"]):
        mark(2 * k + 1)
        sess.run(None, feed)
        mark(2 * k + 2)
'''


def _np_dtype(elem_type: int):
    return onnx.helper.tensor_dtype_to_np_dtype(elem_type)


def _shape(vi: onnx.ValueInfoProto) -> list[int]:
    return [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else 1 for d in vi.type.tensor_type.shape.dim]


def _feeds(proto: onnx.ModelProto, path: Path, rng: np.random.Generator) -> None:
    """Random inputs of the right shape and type for every graph input (batch 1)."""
    inits = {i.name for i in proto.graph.initializer}
    feeds = {}
    for vi in proto.graph.input:
        if vi.name in inits:
            continue
        dt = _np_dtype(vi.type.tensor_type.elem_type)
        shape = _shape(vi)
        if np.issubdtype(dt, np.integer):
            info = np.iinfo(dt)
            feeds[vi.name] = rng.integers(max(info.min, -128), min(info.max, 255) + 1, size=shape).astype(dt)
        else:
            feeds[vi.name] = rng.standard_normal(shape).astype(dt)
    np.savez(path, **feeds)


def _fix_batch(proto: onnx.ModelProto) -> onnx.ModelProto:
    for vi in list(proto.graph.input) + list(proto.graph.output):
        dims = vi.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].dim_value = 1
    return proto


def _canonical(model: onnx.ModelProto, position: dict[str, int] | None = None) -> onnx.ModelProto:
    """Initializers and value infos sorted by name, nodes by ``position`` of their first output (when given). ONNX's
    extractor and ORT's quantizer collect some of them in sets, so their order follows Python's string hashing;
    ONNX Runtime's allocations follow that order and the counts would move by a few dozen instructions."""
    g = model.graph
    fields = [("initializer", sorted(g.initializer, key=lambda t: t.name)),
              ("value_info", sorted(g.value_info, key=lambda v: v.name))]
    if position is not None:
        fields.append(("node", sorted(g.node, key=lambda n: position.get(n.output[0], -1) if n.output else -1)))
    else:
        fields.append(("node", _topological(g)))
    for name, items in fields:
        copies = [type(item)() for item in items]
        for c, item in zip(copies, items):
            c.CopyFrom(item)
        del getattr(g, name)[:]
        getattr(g, name).extend(copies)
    return model


def _topological(g: onnx.GraphProto) -> list[onnx.NodeProto]:
    """The nodes in a topological order that depends only on the graph (ties broken by output names)."""
    import heapq

    producer = {o: i for i, n in enumerate(g.node) for o in n.output}
    waiting = [sum(1 for x in set(n.input) if x in producer) for n in g.node]
    users: dict[int, list[int]] = {}
    for i, n in enumerate(g.node):
        for x in set(n.input):
            if x in producer:
                users.setdefault(producer[x], []).append(i)
    key = [(",".join(n.output), n.op_type, n.name) for n in g.node]
    ready = [(key[i], i) for i, w in enumerate(waiting) if w == 0]
    heapq.heapify(ready)
    out = []
    while ready:
        _, i = heapq.heappop(ready)
        out.append(g.node[i])
        for u in users.get(i, []):
            waiting[u] -= 1
            if waiting[u] == 0:
                heapq.heappush(ready, (key[u], u))
    return out if len(out) == len(g.node) else list(g.node)


def _extract(extractor: onnx.utils.Extractor, inputs: list[str], outputs: list[str], path: Path) -> bool:
    """The sub-model from ``inputs`` to ``outputs`` (an onnx.utils.Extractor of a shape-inferred model), saved with
    batch 1."""
    try:
        sub = extractor.extract_model(inputs, outputs)
    except Exception:  # noqa: BLE001 - a cut ONNX cannot make (e.g. names the graph rewrote): the layer is skipped
        return False
    _canonical(sub, {o: i for i, n in enumerate(extractor.graph.node) for o in n.output})
    onnx.save(_fix_batch(sub), str(path))
    return True


def count_models(core: arm64.ArmCore, models: list[tuple[onnx.ModelProto | Path, Path | None]], work: Path
                 ) -> list[int]:
    """Instructions of one batch-1 ``session.run`` of each model on ``core`` (median of RUNS), minus an empty model's
    run. ``models``: (model or its path, feeds .npz or None for random feeds)."""
    rng = np.random.default_rng(0)
    jobs = []
    for i, (m, feeds) in enumerate([(empty_model(), None)] + list(models)):
        path = work / f"m{i}.onnx"
        onnx.save(_canonical(onnx.load(str(m)) if isinstance(m, Path) else m), str(path))
        if feeds is None:
            feeds = work / f"f{i}.npz"
            _feeds(onnx.load(str(path), load_external_data=False), feeds, rng)
        jobs.append({"path": str(Path(path).resolve()), "feeds": str(Path(feeds).resolve()), "runs": RUNS})
    # Counts depend only on the models, their inputs, the core and the userland: kept on disk, so compiling the same
    # model again (or the profile after the compile) does not emulate it again.
    h = hashlib.sha256(f"{core.qemu_cpu} {core.midr} {arm64.userland_dir().name} {RUNS}".encode())
    for job in jobs:
        h.update(Path(job["path"]).read_bytes())
        with np.load(job["feeds"]) as feeds:  # the arrays, not the .npz file (its zip entries carry times)
            for name in sorted(feeds.files):
                h.update(name.encode() + feeds[name].tobytes())
    cached = arm64.cache_root() / "counts" / f"{h.hexdigest()[:24]}.json"
    try:
        counts = json.loads(cached.read_text())
    except (OSError, ValueError):
        counts = None
    if not isinstance(counts, list) or len(counts) != len(jobs):
        (work / "jobs.json").write_text(json.dumps(jobs))
        run = arm64.run_python(core, GUEST, [str(work / "jobs.json")], work)
        counts = []
        for k in range(len(jobs)):
            c = run.between(2 * k + 1, 2 * k + 2)
            if len(c) != RUNS:
                raise arm64.ToolchainError(f"the emulated {core.name} run recorded {len(c)} of {RUNS} runs of "
                                           f"model {k}")
            counts.append(int(np.median(c)))
        cached.parent.mkdir(parents=True, exist_ok=True)
        partial = cached.with_suffix(f".{os.getpid()}.partial")
        partial.write_text(json.dumps(counts))
        os.replace(partial, cached)
    empty = counts[0]
    return [max(0, c - empty) for c in counts[1:]]


def empty_model() -> onnx.ModelProto:
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 1])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 1])
    g = onnx.helper.make_graph([onnx.helper.make_node("Identity", ["x"], ["y"])], "empty", [x], [y])
    return onnx.helper.make_model(g, opset_imports=[onnx.helper.make_opsetid("", 17)])


# ---- the layers of a QDQ model ----------------------------------------------------------------------------------


@dataclass
class _Layer:
    node: onnx.NodeProto
    q_inputs: list[str]      # the uint8 tensors its DequantizeLinear inputs read
    f_inputs: list[str]      # the same activations in float (the QuantizeLinear inputs)
    q_output: str            # its output's QuantizeLinear output
    f_output: str            # its float output


def qdq_layers(qproto: onnx.ModelProto) -> list[_Layer]:
    g = qproto.graph
    inits = {i.name for i in g.initializer}
    producer = {o: n for n in g.node for o in n.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    layers = []
    for n in g.node:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear") or not n.output:
            continue
        q_in, f_in, ok = [], [], True
        for i in n.input:
            if not i or i in inits:
                continue
            dq = producer.get(i)
            if dq is None or dq.op_type != "DequantizeLinear":
                ok = False  # a float activation input: the quantizer left this operator in float
                break
            if dq.input[0] in inits:
                continue  # a weight's DequantizeLinear
            q = producer.get(dq.input[0])
            if q is None or q.op_type != "QuantizeLinear":
                ok = False
                break
            q_in.append(dq.input[0])
            f_in.append(q.input[0])
        outs = [c for c in consumers.get(n.output[0], []) if c.op_type == "QuantizeLinear"]
        if ok and q_in and len(outs) == 1:
            layers.append(_Layer(n, q_in, f_in, outs[0].output[0], n.output[0]))
    return layers


def _edges(qproto: onnx.ModelProto, qx: onnx.utils.Extractor, layer: _Layer, path: Path) -> bool:
    """What keeping ``layer`` float adds: its inputs' DequantizeLinear and its output's QuantizeLinear, alone."""
    g = qproto.graph
    producer = {o: n for n in g.node for o in n.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    nodes, inputs, outputs = [], [], []
    for qi in layer.q_inputs:
        dq = next(c for c in consumers[qi] if c.op_type == "DequantizeLinear")
        nodes.append(dq)
        inputs.append(qi)
        outputs.append(dq.output[0])
    q = producer[layer.q_output]
    nodes.append(q)
    inputs.append(layer.f_output)
    outputs.append(layer.q_output)
    return _extract(qx, inputs, outputs, path)


def choose(float_pre: Path, qdq: Path, core: arm64.ArmCore, node_layers: dict[str, str], work: Path
           ) -> tuple[list[LayerChoice], list[str]]:
    """Per layer int8 vs float instructions on ``core``; returns the table and the QDQ operators to keep float."""
    qproto = onnx.load(str(qdq))
    qx = onnx.utils.Extractor(onnx.shape_inference.infer_shapes(qproto))
    fx = onnx.utils.Extractor(onnx.shape_inference.infer_shapes(onnx.load(str(float_pre))))
    layers = qdq_layers(qproto)
    models, kept = [], []
    for k, lay in enumerate(layers):
        qi, fl, ed = work / f"l{k}_int8.onnx", work / f"l{k}_float.onnx", work / f"l{k}_edges.onnx"
        if (_extract(qx, lay.q_inputs, [lay.q_output], qi) and _extract(fx, lay.f_inputs, [lay.f_output], fl)
                and _edges(qproto, qx, lay, ed)):
            models += [(qi, None), (fl, None), (ed, None)]
            kept.append(lay)
    counts = count_models(core, models, work) if models else []
    rows, excluded = [], []
    for k, lay in enumerate(kept):
        c_int8, c_float, c_edges = counts[3 * k: 3 * k + 3]
        as_float = c_float + c_edges
        dtype = "float32" if clearly_fewer(as_float, c_int8) and lay.node.op_type not in INT8_ANYWAY else "int8"
        if dtype == "float32":
            excluded.append(lay.node.name)
        rows.append(LayerChoice(lay.node.name, lay.node.op_type, _layer_name(lay.node.name, node_layers),
                                c_int8, as_float, dtype, c_edges))
    return rows, excluded


def _layer_name(node: str, node_layers: dict[str, str]) -> str | None:
    if node in node_layers:
        return node_layers[node]
    for k in sorted(node_layers, key=len, reverse=True):
        if node.startswith(k + "_"):
            return node_layers[k]
    return None


def whole_counts(core: arm64.ArmCore, named: dict[str, Path], x1: np.ndarray, input_name: str, work: Path
                 ) -> dict[str, int]:
    """Instructions of one inference of each whole model on ``core`` (batch 1 input ``x1``)."""
    feeds = work / "whole_feeds.npz"
    np.savez(feeds, **{input_name: np.ascontiguousarray(x1, np.float32)})
    counts = count_models(core, [(p, feeds) for p in named.values()], work)
    return dict(zip(named, counts))


# ---- fidelity: which layers lose the most in int8 ------------------------------------------------------------------


# A layer fed by the model's input (whose int8 SQNR is not measured here): about what 8 bits give a float input.
INPUT_SQNR_DB = 48.0


def _sqnr(got: np.ndarray, ref: np.ndarray) -> float:
    noise = float(np.sum((got - ref) ** 2))
    return 200.0 if noise == 0 else 10 * np.log10(max(float(np.sum(ref ** 2)), 1e-30) / noise)


def damage(float_pre: Path, qdq: Path, input_name: str, x: np.ndarray) -> dict[str, float]:
    """How much each int8 layer of ``qdq`` loses: SQNR (dB) of its input minus SQNR of its output, each the int8
    network's activation (run as written, on the host) against the float model's on the inputs ``x``."""
    import onnxruntime as ort

    qproto = onnx.load(str(qdq))
    fproto = onnx.load(str(float_pre))
    layers = qdq_layers(qproto)
    consumers = {}
    for n in qproto.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    # the dequantized int8 activation of each float tensor name
    deq = {}
    for lay in layers:
        for q_name, f_name in list(zip(lay.q_inputs, lay.f_inputs)) + [(lay.q_output, lay.f_output)]:
            d = next((c for c in consumers.get(q_name, []) if c.op_type == "DequantizeLinear"), None)
            if d is not None:
                deq[f_name] = d.output[0]
    fnames = sorted(deq)
    known = {o for n in fproto.graph.node for o in n.output}
    fnames = [f for f in fnames if f in known]
    for proto, names in ((fproto, fnames), (qproto, [deq[f] for f in fnames])):
        present = {o.name for o in proto.graph.output}
        proto.graph.output.extend([onnx.ValueInfoProto(name=nm) for nm in names if nm not in present])
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    outs = {}
    for tag, proto, names in (("f", fproto, fnames), ("q", qproto, [deq[f] for f in fnames])):
        sess = ort.InferenceSession(proto.SerializeToString(), so, providers=["CPUExecutionProvider"])
        res = sess.run(names, {input_name: np.ascontiguousarray(x, np.float32)})
        outs[tag] = dict(zip(fnames, res))
    sq = {f: _sqnr(outs["q"][f], outs["f"][f]) for f in fnames}
    out = {}
    for lay in layers:
        if lay.f_output not in sq:
            continue
        before = min((sq[f] for f in lay.f_inputs if f in sq), default=INPUT_SQNR_DB)
        out[lay.node.name] = before - sq[lay.f_output]
    return out
