"""edgekit spiking network -> NIR graph (nir.NIRGraph), and the round-trip check of the written file.

Where it sits: inside targets/neuromorphic. Built from edgekit's own description of the network
(edgekit/layers/spiking.py), not through snntorch's exporter (FIELD_NOTES: its Leaky export needs per-neuron
tensors, Conv2d fails, recurrent layers do not read back).

Mapping (NIR is continuous-time; edgekit runs discrete steps of dt = 1, which metadata states):

* population ``input``  -> nir.Input
* ``lif`` β = 1         -> nir.IF(r = 1, v_threshold = ϑ, v_reset = 0)
* ``lif`` β < 1         -> nir.LIF(tau = dt / (1 − β), r = tau / dt, v_leak = 0, v_threshold = ϑ, v_reset = 0): the
  usual forward-Euler reading v ← β v + I (snntorch's convention)
* connection ops        -> nir.AvgPool2d / nir.Flatten / nir.Conv2d / nir.Affine / nir.Linear / nir.Scale, in order;
  the population's bias rides on its first incoming connection (nir.Affine or the Conv2d bias); several sources
  are several edges into the connection's first node (NIR sums a node's inputs); an extra synaptic delay
  (delay − 1 steps) is a nir.Delay in front
* ``readout``           -> nir.Affine(W / T, b / T) into nir.I(r = 1): after T steps the integrator holds the mean
* the LMU memory (a ``graded`` population with a recurrent connection, info kind lmuformer) -> the continuous LTI
  θ ṁ = A m + B u as nir.I(r = 1) with edges m -> nir.Linear(A/θ) -> m and u -> nir.Linear(B/θ) -> m. The
  network itself runs its zero-order-hold discretisation (Ā, B̄, split in two 8-bit parts for Loihi); NIR has no
  discrete state-space node, so the discrete matrices are kept in OUT/network.json + network.npz (edgekit's own
  description) and the file says so in its metadata.

Timing that NIR cannot state: every edge into a neuron delivers the previous step's output (Loihi's synaptic delay);
this is graph metadata (``synaptic_delay_steps = 1``).
"""
from __future__ import annotations

from pathlib import Path

import nir
import numpy as np

from edgekit.layers.lmu import legendre_delay_system
from edgekit.layers.spiking import SpikingNetwork

DT = 1.0


def _ones(shape) -> np.ndarray:
    return np.ones(tuple(shape), np.float32)


def to_nir(net: SpikingNetwork) -> tuple[nir.NIRGraph, list[str]]:
    """The NIR graph of ``net`` and notes on what it cannot express."""
    nodes: dict[str, nir.NIRNode] = {}
    edges: list[tuple[str, str]] = []
    notes: list[str] = []
    info = net.info
    steps = net.steps
    for name, p in net.populations.items():
        s = p.spec
        if s.kind == "input":
            nodes[name] = nir.Input(input_type={"input": np.array(s.shape)})
        elif s.kind == "lif":
            thr = _ones(s.shape) * s.threshold
            if s.beta >= 1.0:
                nodes[name] = nir.IF(r=_ones(s.shape), v_threshold=thr, v_reset=np.zeros_like(thr))
            else:
                tau = DT / (1.0 - s.beta)
                nodes[name] = nir.LIF(tau=_ones(s.shape) * tau, r=_ones(s.shape) * tau / DT,
                                      v_leak=np.zeros_like(thr), v_threshold=thr, v_reset=np.zeros_like(thr))
        elif s.kind == "graded":
            nodes[name] = nir.I(r=_ones(s.shape))
        elif s.kind == "readout":
            nodes[name] = nir.I(r=_ones(s.shape))
            nodes["output"] = nir.Output(output_type={"output": np.array(s.shape)})
            edges.append((name, "output"))

    lmu_memory = None
    if info.get("kind") == "lmuformer" and "memory" in net.populations:
        lmu_memory = "memory"
        d, theta, u = int(info["memory_order"]), float(info["theta"]), int(info["u_size"])
        a, b = legendre_delay_system(d)
        a_full = np.kron(np.eye(u), a / theta).astype(np.float32)
        b_full = np.kron(np.eye(u), (b / theta)[:, None]).astype(np.float32)
        nodes["memory_A"] = nir.Linear(weight=a_full)
        nodes["memory_B"] = nir.Linear(weight=b_full)
        edges += [("memory", "memory_A"), ("memory_A", "memory"), ("u", "memory_B"), ("memory_B", "memory")]
        notes.append("LMU memory written as the continuous LTI θ·dm/dt = A m + B u (nir.I with nir.Linear feedback); "
                     "NIR has no discrete state-space node, so the zero-order-hold Ā, B̄ the network runs (and their "
                     "8-bit split for Loihi) are kept in network.json/network.npz")

    biased: set[str] = set()
    cropped: set[str] = set()
    for cname, c in net.connections.items():
        spec = c.spec
        if lmu_memory is not None and spec.target == lmu_memory:
            continue  # the memory's own connections are the LTI above
        target = net.populations[spec.target].spec
        src_shape = net.populations[spec.sources[0]].spec.shape
        chain: list[tuple[str, nir.NIRNode]] = []
        if spec.delay > 1:
            chain.append((f"{cname}.delay", nir.Delay(delay=np.full(src_shape, (spec.delay - 1) * DT, np.float32))))
        shape = tuple(src_shape)
        weight = c.weight.detach().numpy().astype(np.float32)
        bias = None
        if spec.target not in biased and net.populations[spec.target].bias is not None:
            bias = net.populations[spec.target].bias.detach().numpy().astype(np.float32).reshape(-1)
            biased.add(spec.target)
        crops_in: list[list[int]] = []
        for i, o in enumerate(spec.ops):
            key = f"{cname}.{o['op']}" if sum(x["op"] == o["op"] for x in spec.ops) == 1 else f"{cname}.{o['op']}{i}"
            if o["op"] == "crop":
                # NIR has no crop node: it rides on the node before it (or, first in the chain, on the next one) as
                # metadata, and the shapes that follow are the cropped ones
                crop = [int(o["axis"]), int(o["start"]), int(o["stop"])]
                if chain:
                    meta = chain[-1][1].metadata
                    meta["edgekit_crop_output"] = np.array(
                        [*meta.get("edgekit_crop_output", np.zeros((0, 3), np.int64)).tolist(), crop], np.int64)
                else:
                    crops_in.append(crop)
                shape = tuple(int(o["stop"]) - int(o["start"]) if a == int(o["axis"]) else d
                              for a, d in enumerate(shape))
                cropped.add(cname)
                continue
            if o["op"] == "avgpool2d":
                k = np.array(o["kernel"])
                node = nir.AvgPool2d(kernel_size=k, stride=np.array(o.get("stride", o["kernel"])),
                                     padding=np.array([0, 0]))
                shape = (shape[0], shape[1] // k[0], shape[2] // k[1])
            elif o["op"] == "flatten":
                node = nir.Flatten(input_type={"input": np.array(shape)}, start_dim=0, end_dim=-1)
                shape = (int(np.prod(shape)),)
            elif o["op"] == "conv2d":
                b = bias if bias is not None else np.zeros(weight.shape[0], np.float32)
                node = nir.Conv2d(input_shape=tuple(shape[1:]), weight=weight, stride=tuple(o.get("stride", (1, 1))),
                                  padding=tuple(o.get("padding", (0, 0))), dilation=tuple(o.get("dilation", (1, 1))),
                                  groups=int(o.get("groups", 1)), bias=b)
                shape = tuple(int(v) for v in node.output_type["output"])
            else:  # linear / scale
                w = np.diag(weight) if o["op"] == "scale" else weight
                if target.kind == "readout":
                    w = w / net.readout_steps
                    bias = (bias / net.readout_steps) if bias is not None else None
                node = nir.Affine(weight=w, bias=bias) if bias is not None else \
                    (nir.Scale(scale=weight) if o["op"] == "scale" else nir.Linear(weight=w))
                shape = (w.shape[0],)
            if crops_in:
                node.metadata["edgekit_crop_input"] = np.array(crops_in, np.int64)
                crops_in = []
            chain.append((key, node))
        for k, node in chain:
            nodes[k] = node
        for s in spec.sources:
            edges.append((s, chain[0][0]))
        edges += [(a[0], b[0]) for a, b in zip(chain, chain[1:])]
        edges.append((chain[-1][0], spec.target))
    for name, p in net.populations.items():
        if p.bias is not None and name not in biased:
            notes.append(f"population '{name}': bias has no incoming connection to ride on; not in the NIR file")
    if cropped:
        notes.append(f"crops (a causal convolution keeping its first rows) in {len(cropped)} connections are node "
                     "metadata ('edgekit_crop_output' / 'edgekit_crop_input': rows of [axis of [C, H, W], start, "
                     "stop]): NIR has no crop node; network.json holds them as ops")
    if any(p.spec.kind == "graded" and p.spec.name != lmu_memory for p in net.populations.values()):
        notes.append("graded populations other than the LMU memory are written as nir.I (integrators); edgekit runs "
                     "them as x[t] = input[t]")
    metadata = {"producer": "edgekit", "time": "discrete", "dt": DT, "steps": int(steps),
                "synaptic_delay_steps": 1, "input_mode": net.input_mode, "kind": str(info.get("kind", "")),
                "readout": f"mean over the last {net.readout_steps} of {steps} steps: the Affine is scaled by "
                           f"1/{net.readout_steps} and its integrator read after step {steps} having been reset "
                           f"after step {steps - net.readout_steps}",
                "readout_steps": int(net.readout_steps),
                "reset": "to zero (v_reset = 0) in the step a neuron fires"}
    graph = nir.NIRGraph(nodes=nodes, edges=edges, metadata=metadata, type_check=False)
    return graph, notes


def _same(a, b, path: str, diffs: list[str]) -> None:
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):
            diffs.append(f"{path}: keys {sorted(set(a) ^ set(b))} differ")
        for k in set(a) & set(b):
            _same(a[k], b[k], f"{path}.{k}", diffs)
    elif isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) and not \
            (len(a) and isinstance(a[0], (int, float, np.number))):
        if len(a) != len(b):
            diffs.append(f"{path}: length {len(a)} != {len(b)}")
        for i, (x, y) in enumerate(zip(a, b)):
            _same(x, y, f"{path}[{i}]", diffs)
    elif isinstance(a, (np.ndarray, list, tuple, int, float, np.number)) or isinstance(b, np.ndarray):
        x, y = np.asarray(a), np.asarray(b)
        if x.shape != y.shape or not np.array_equal(x, y):
            diffs.append(f"{path}: arrays differ")
    else:
        x = a.decode() if isinstance(a, bytes) else a
        y = b.decode() if isinstance(b, bytes) else b
        if x != y:
            diffs.append(f"{path}: {x!r} != {y!r}")


def round_trip(graph: nir.NIRGraph, path: Path) -> list[str]:
    """Write ``graph`` to ``path`` with nir.write, read it back with nir.read and compare every node, array, edge and
    metadata entry. Returns the differences (empty when unchanged)."""
    nir.write(str(path), graph)
    back = nir.read(str(path), type_check=False)
    diffs: list[str] = []
    if sorted(map(tuple, graph.edges)) != sorted(map(tuple, back.edges)):
        diffs.append("edges differ")
    if set(graph.nodes) != set(back.nodes):
        diffs.append(f"nodes differ: {sorted(set(graph.nodes) ^ set(back.nodes))}")
    for k in set(graph.nodes) & set(back.nodes):
        a, b = graph.nodes[k], back.nodes[k]
        if type(a) is not type(b):
            diffs.append(f"node '{k}': {type(a).__name__} read back as {type(b).__name__}")
            continue
        _same(a.to_dict(), b.to_dict(), k, diffs)
    _same(graph.metadata, back.metadata, "metadata", diffs)
    return diffs
