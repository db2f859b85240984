"""The event-based GRU (EGRU) on SpiNNaker 2: events and synaptic operations counted on the test sequences.

Where it sits: inside targets/neuromorphic, for models with an ``"egru"`` layer (edgekit/layers/egru.py), which run
on SpiNNaker 2's ARM cores as software neurons (the chip the EGRU was demonstrated on). NIR has no gated or
multiplicative neuron, so an EGRU cannot be written as NIR: OUT gets edgekit's own description instead
(``egru.json``: the deployment graph's layers, attributes and parameter shapes; ``egru.npz``: the parameters).

What is counted per inference (on the test sequences, with edgekit's float graph executor):

* events: non-zero EGRU outputs (a unit sends its state only when it crosses its threshold)
* synaptic ops: every event at step t < T−1 is read by the 3H recurrent weights of step t+1 (W_hh's column);
  every non-zero input of a layer reading the EGRU's events (the classifier on the last step) costs its fan-out
* graded ops: the real-valued input x_t enters through W_ih: non-zero inputs × 3H per step
* neuron updates: H units × T steps (each unit's gates are computed every step)
* an output trace (edgekit.layers.EventTrace) that the classifier reads instead of the last step's events: one op
  per event (the event is added into its unit's trace), H decays per step as neuron updates, and the classifier's
  fan-out for every non-zero trace value it reads

An event carries the unit's state (a graded value), so on the 45 nm convention every op is a MAC.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from edgekit.errors import UnsupportedError
from edgekit.estimate import Estimate
from edgekit.targets.neuromorphic.cost import neuromorphic_energy
from edgekit.graph import Graph
from edgekit.graph_exec import run_graph
from edgekit.targets import BuildResult, CompileOptions
from edgekit.targets.profiles import TargetProfile

PASS_THROUGH = ("select", "reshape", "flatten")


def _egru_nodes(graph: Graph):
    nodes = [n for n in graph.nodes if n.op == "egru"]
    if not nodes:
        raise UnsupportedError("the model has no EGRU layer")
    return nodes


def egru_activity(graph: Graph, x: np.ndarray, batch_size: int = 256) -> dict:
    """Counts per inference (means over ``x``) and per sample (``per_sample``)."""
    egrus = _egru_nodes(graph)
    n = len(x)
    events = np.zeros(n)
    rec_ops = np.zeros(n)
    read_ops = np.zeros(n)
    in_ops = np.zeros(n)
    updates = 0
    for i in range(0, n, batch_size):
        vals = run_graph(graph, [x[i:i + batch_size]], keep_all=True)
        sl = slice(i, i + batch_size)
        for e in egrus:
            y = vals[e.name] if e.attrs["batch_first"] else vals[e.name].swapaxes(0, 1)
            h = e.attrs["hidden_size"]
            nz = (y != 0).reshape(len(y), y.shape[1], -1)
            events[sl] += nz.sum((1, 2))
            rec_ops[sl] += nz[:, :-1].sum((1, 2)) * 3 * h
            xin = vals[e.inputs[0]]
            xin = xin if e.attrs["batch_first"] else xin.swapaxes(0, 1)
            in_ops[sl] += (xin != 0).reshape(len(xin), -1).sum(1) * 3 * h
            # layers reading the events (through selects/reshapes): non-zero inputs × fan-out
            frontier = [e.name]
            while frontier:
                name = frontier.pop()
                for c in graph.consumers(name):
                    if c.op in PASS_THROUGH:
                        frontier.append(c.name)
                    elif c.op == "trace":  # the output trace: each event is added into its unit's trace
                        frontier.append(c.name)
                        rec_ops[sl] += nz.sum((1, 2))
                    elif c.op == "linear":
                        v = vals[name]
                        read_ops[sl] += (v != 0).reshape(len(v), -1).sum(1) * c.attrs["out_features"]
    for e in egrus + [n for n in graph.nodes if n.op == "trace"]:  # a trace decays every step too
        steps = e.shape[1] if e.attrs["batch_first"] else e.shape[0]
        updates += e.attrs["hidden_size"] * steps
    slots = sum(e.attrs["hidden_size"] * (e.shape[1] if e.attrs["batch_first"] else e.shape[0]) for e in egrus)
    steps = max(e.shape[1] if e.attrs["batch_first"] else e.shape[0] for e in egrus)
    return {"samples": n, "events_per_inference": float(events.mean()),
            "events_per_step": float(events.mean()) / steps,
            "activity_sparsity": 1.0 - float(events.mean()) / slots,
            "synaptic_ops_per_inference": float((rec_ops + read_ops).mean()),
            "recurrent_ops_per_inference": float(rec_ops.mean()), "readout_ops_per_inference": float(read_ops.mean()),
            "graded_ops_per_inference": float(in_ops.mean()), "neuron_updates_per_inference": int(updates),
            "per_sample": {"events": events, "sops": rec_ops + read_ops, "graded": in_ops}}


def _dense_activity(graph: Graph) -> dict:
    """Every unit sends an event every step: the upper bound before anything was counted."""
    ops = rec = read = upd = 0
    for e in _egru_nodes(graph):
        h, i = e.attrs["hidden_size"], e.attrs["input_size"]
        steps = e.shape[1] if e.attrs["batch_first"] else e.shape[0]
        rec += (steps - 1) * h * 3 * h
        ops += steps * i * 3 * h
        upd += h * steps
        read += sum(c.attrs.get("out_features", 0) * h for c in graph.consumers(e.name))
    return {"synaptic_ops_per_inference": rec + read, "graded_ops_per_inference": ops,
            "neuron_updates_per_inference": upd, "events_per_inference": upd, "samples": 0}


def egru_estimate(model, profile: TargetProfile, activity: dict | None) -> Estimate:
    graph = model.deploy_graph
    act = activity or _dense_activity(graph)
    energy = neuromorphic_energy(profile, act["synaptic_ops_per_inference"], act["graded_ops_per_inference"],
                                 act["neuron_updates_per_inference"],
                                 mac_ops=act["synaptic_ops_per_inference"] + act["graded_ops_per_inference"],
                                 ac_ops=0.0)
    params = sum(int(p.size) for n in graph.nodes for p in n.params.values())
    hidden = sum(e.attrs["hidden_size"] for e in _egru_nodes(graph))
    weight_bytes = int(params * profile.number("neuromorphic", "synapse_bytes", 4.0))
    state_bytes = int(hidden * 2 * 4)  # y and c in float32 per unit
    steps = max(e.shape[1] if e.attrs["batch_first"] else e.shape[0] for e in _egru_nodes(graph))
    step_s = profile.number("neuromorphic", "timestep_s", 0.0)
    how = (f"measured on {act['samples']} test sequences" if activity else
           "upper bound: every unit sends an event every step (counts come with the build)")
    formulas = {"energy_uj": energy["formula"] + f" — {how}",
                "energy_45nm_uj": energy["formula_45nm"] + " (events carry values: MACs)",
                "peak_sram_bytes": f"{params} weights · {profile.number('neuromorphic', 'synapse_bytes', 4):g} B + "
                                   f"state {state_bytes} B",
                "latency_ms": f"{steps} steps · {step_s:g} s/step"}
    layers = [{"name": e.name, "op": "egru", "macs": 0, "weight_bytes": weight_bytes, "activation_bytes": 0,
               "instructions": 0, "energy_uj": energy["energy_uj"], "latency_ms": steps * step_s * 1e3}
              for e in _egru_nodes(graph)]
    return Estimate(0, weight_bytes + state_bytes, 0, state_bytes, steps * step_s * 1e3, energy["energy_uj"], None,
                    sum(_macs(n, graph) for n in graph.nodes), layers, [], formulas)


def _macs(node, graph) -> int:
    from edgekit.analysis import macs_of

    return macs_of(node, graph)


def build_egru(model, profile: TargetProfile, out: Path, options: CompileOptions) -> BuildResult:
    """egru.json/.npz (edgekit's description; NIR cannot express the EGRU), testdata.npz with the float outputs and
    per-sample counts, and the estimate from the counted events."""
    from edgekit.targets.neuromorphic import MAX_TEST_SAMPLES, NeuromorphicBuild, energy_breakdown

    graph = model.deploy_graph
    notes = ["NIR cannot express the EGRU (gated units with multiplicative state updates); OUT holds edgekit's own "
             "description (egru.json, egru.npz) instead of model.nir",
             "no SpiNNaker 2 simulator here: edgekit profile reports the events counted by the float model"]
    desc = {"format": "edgekit-graph/1", "name": graph.name, "outputs": graph.outputs,
            "layers": [{"name": n.name, "op": n.op, "inputs": n.inputs, "shape": list(n.shape), "attrs": n.attrs,
                        "params": {k: list(v.shape) for k, v in n.params.items()}} for n in graph.nodes]}
    (out / "egru.json").write_text(json.dumps(desc, indent=1, default=str) + "\n")
    np.savez_compressed(out / "egru.npz", **{f"{n.name}.{k}": v for n in graph.nodes for k, v in n.params.items()})
    x = model.test_x if model.test_x is not None else model.example_inputs[0].numpy()
    y = model.test_y
    x = np.ascontiguousarray(x[:MAX_TEST_SAMPLES], np.float32)
    y = None if y is None else np.asarray(y[:MAX_TEST_SAMPLES])
    reference = model.predict(x).astype(np.float32)
    act = egru_activity(graph, x)
    per = act.pop("per_sample")
    data = {"x": x, "reference": reference, "events": per["events"], "sops": per["sops"], "graded": per["graded"]}
    if y is not None:
        data["y"] = y
    np.savez_compressed(out / "testdata.npz", **data)
    est = egru_estimate(model, profile, act)
    info = NeuromorphicBuild(
        kind="egru", activity=act, test_samples=int(len(x)),
        reference_accuracy=float((reference.argmax(-1) == y).mean()) if y is not None else None,
        energy=neuromorphic_energy(profile, act["synaptic_ops_per_inference"], act["graded_ops_per_inference"],
                                   act["neuron_updates_per_inference"],
                                   mac_ops=act["synaptic_ops_per_inference"] + act["graded_ops_per_inference"],
                                   ac_ops=0.0))
    return BuildResult(files=["egru.json", "egru.npz", "testdata.npz"], dtype="spiking", estimate=est,
                       analysis=model.analyze(), info=info, notes=notes,
                       energy_breakdown=energy_breakdown(profile, act))
