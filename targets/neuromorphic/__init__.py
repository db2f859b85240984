"""Neuromorphic targets (Loihi 2, SpiNNaker 2): a spiking network as NIR plus what its chip needs, with energy
estimated from spike counts.

Where it sits: targets/ (Model -> Artifact). The model must be a spiking network made by
``edgekit.converters.to_spiking`` (edgekit/layers/spiking.py) — or, for spinnaker2, an event-based GRU (EGRU),
which NIR cannot express. ``build`` writes into OUT:

* ``model.nir``            the network as a NIR graph (nir_export.py), checked to read back unchanged
* ``network.json/.npz``    edgekit's own description of the network (what NIR cannot state: the discrete-time
                           LMU memory Ā, B̄ and its 8-bit split, delays, the readout)
* ``loihi_network.json/.npz`` (loihi2) the network in Loihi 2's integers (edgekit/layers/loihi_format.py):
                           8-bit weight mantissas with a per-connection exponent, thresholds, decays, biases —
                           what runtimes/neuromorphic.py builds Lava processes from
* ``testdata.npz``         test inputs ``x``, labels ``y``, the torch (snntorch) run's readout ``reference`` and per
                           sample spike counts ``spikes.<population>`` and synaptic ops ``sops.<connection>``
* for an EGRU: ``egru.json/.npz`` (its graph layers and weights) instead of model.nir and the network files

Energy (cost.py: neuromorphic_energy): E = E_synop · (synaptic ops + graded ops) + E_neuron · neuron
updates per inference, synaptic ops = Σ spikes × fan-out measured on the test inputs; and the 45 nm convention
E = E_MAC · MACs(first layer) + E_AC · SOPs for comparison with an ANN.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from edgekit.analysis import Analysis, LayerRecord
from edgekit.errors import MismatchError, UnsupportedError
from edgekit.estimate import Estimate
from edgekit.targets.neuromorphic.cost import dense_estimate, neuromorphic_energy, spiking_estimate
from edgekit.layers import EGRU
from edgekit.layers.spiking import SpikingNetwork, find_network, summarize
from edgekit.targets import BuildResult, Capabilities, CompileOptions
from edgekit.targets.profiles import TargetProfile

MAX_TEST_SAMPLES = 2048  # the keyword test split (1,120) whole: its measurement is the conversion's, reused


def _network(model, profile: TargetProfile) -> SpikingNetwork | None:
    """The model's spiking network; None for an EGRU model on a chip that runs it; else a one-line error."""
    net = find_network(model.module)
    if net is not None:
        return net
    if model.module is not None and any(isinstance(m, EGRU) for m in model.module.modules()):
        if profile.name == "spinnaker2":
            return None
        raise UnsupportedError(f"model '{model.name}' is an event-based GRU: edgekit maps it to spinnaker2 only (its "
                               "gated units run as software neurons on the ARM cores); compile it with "
                               "--target spinnaker2")
    raise UnsupportedError(f"model '{model.name}' is not a spiking network: {profile.name} runs spiking neurons; "
                           "convert it first (edgekit compile ... --spiking auto, or "
                           "edgekit.converters.to_spiking(model))")


# ---- estimate ---------------------------------------------------------------------------------------------------------


def estimate(model, profile: TargetProfile, options: CompileOptions) -> Estimate:
    """From the spike activity the converter measured (``meta['spiking']``); without it the dense upper bound."""
    net = _network(model, profile)
    if net is None:
        return egru_estimate(model, profile, model.meta.get("egru_activity"))
    act = model.meta.get("spiking")
    if not act or "connections" not in act:
        return dense_estimate(model.deploy_graph, profile)
    return spiking_estimate(net, act, profile)


def _analysis(net: SpikingNetwork) -> Analysis:
    """Per population: incoming synapses as parameters, dense synaptic ops (synapses × steps) as MACs."""
    fan = net.fan_out()
    rows = []
    for name, p in net.populations.items():
        if p.spec.kind == "input":
            continue
        incoming = [(n, c) for n, c in net.connections.items() if c.spec.target == name]
        syn = sum(int(fan[n].sum()) for n, _ in incoming)
        params = sum(int(c.weight.numel()) for _, c in incoming) + (p.bias.numel() if p.bias is not None else 0)
        in_shapes = tuple(net.populations[s].spec.shape for _, c in incoming for s in c.spec.sources)
        label = {"lif": f"LIF β={p.spec.beta:g}" if p.spec.beta < 1 else "IF", "graded": "graded (linear state)",
                 "readout": "readout (mean)"}[p.spec.kind]
        rows.append(LayerRecord(name=name, op=p.spec.kind, label=label, input_shapes=in_shapes,
                                output_shape=p.spec.shape, params=params, param_bytes=syn, macs=syn * net.steps,
                                activation_bytes=p.spec.size, fused=()))
    inp = net.populations[net.input_name].spec
    out = net.populations[net.readout_name].spec
    return Analysis(layers=tuple(rows), params=sum(r.params for r in rows), param_bytes=sum(r.param_bytes for r in rows),
                    macs=sum(r.macs for r in rows), input_bytes=inp.size, output_bytes=out.size * 4)


# ---- build ------------------------------------------------------------------------------------------------------------


def _test_data(model) -> tuple[np.ndarray, np.ndarray | None, list[str]]:
    notes = []
    if model.test_x is not None and len(model.test_x):
        x, y = model.test_x, model.test_y
    else:
        x, y = model.example_inputs[0].numpy(), None
        notes.append("the model has no test set; testdata.npz holds its one example input")
    if len(x) > MAX_TEST_SAMPLES:
        notes.append(f"testdata.npz keeps the first {MAX_TEST_SAMPLES} of {len(x)} test inputs")
        x, y = x[:MAX_TEST_SAMPLES], (y[:MAX_TEST_SAMPLES] if y is not None else None)
    return np.ascontiguousarray(x, np.float32), (np.asarray(y) if y is not None else None), notes


@dataclass
class NeuromorphicBuild:
    """What a neuromorphic build learned (``report["build"]``); runtimes/neuromorphic.py reads it back. ``kind`` is
    "spiking" (a spiking network: NIR, and for Lava its integers) or "egru" (events counted on SpiNNaker 2)."""

    kind: str
    test_samples: int
    reference_accuracy: float | None
    activity: dict
    energy: dict | None = None
    network: dict | None = None
    steps: int | None = None
    input_mode: str | None = None
    populations: dict | None = None
    nir: dict | None = None
    simulator: str | None = None          # "lava" when a simulator runs it (edgekit profile)
    fixed_point: dict | None = None

    def to_json(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None or k in ("reference_accuracy", "simulator")}

    @classmethod
    def from_json(cls, d: dict) -> "NeuromorphicBuild":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


@dataclass
class NeuromorphicPlan:
    model: object
    profile: TargetProfile
    options: CompileOptions
    estimate: Estimate


class NeuromorphicTarget:
    """Loihi 2 and SpiNNaker 2 (see the module docstring); measured by runtimes/neuromorphic.py (Lava)."""

    backend = "neuromorphic"
    runtime = "edgekit.runtimes.neuromorphic"

    def capabilities(self, profile: TargetProfile) -> Capabilities:
        # a neuromorphic chip has no flash: the network lives in the cores' SRAM
        return Capabilities(dtypes=("spiking",), spiking=True, streaming=profile.name == "spinnaker2",
                            memories=("sram",), profile_options=("samples",))

    def dtype(self, options: CompileOptions) -> str:
        return "spiking"

    def plan(self, model, profile: TargetProfile, options: CompileOptions) -> NeuromorphicPlan:
        return NeuromorphicPlan(model, profile, options, estimate(model, profile, options))

    def build(self, plan: NeuromorphicPlan, out: Path) -> BuildResult:
        return build(plan.model, plan.profile, out, plan.options)

    def fit_advice(self, plan: NeuromorphicPlan) -> list[str]:
        return ["a smaller network (fewer neurons or synapses), or fewer steps per input (--spiking with a shorter "
                "time window)"]


TARGET = NeuromorphicTarget()


def build(model, profile: TargetProfile, out: Path, options: CompileOptions) -> BuildResult:
    """Write the files listed in the module docstring into ``out``."""
    from edgekit.targets.neuromorphic import nir_export

    out = Path(out)
    net = _network(model, profile)
    if net is None:
        from edgekit.targets.neuromorphic import events

        return events.build_egru(model, profile, out, options)
    notes: list[str] = []
    if options.quantize:
        notes.append("--quantize ignored: a spiking network already holds Loihi's 8-bit weights (to_spiking snaps them)")
    net.eval()
    graph, nir_notes = nir_export.to_nir(net)
    notes += nir_notes
    diffs = nir_export.round_trip(graph, out / "model.nir")
    if diffs:
        raise MismatchError(f"model.nir does not read back unchanged with nir.read ({len(diffs)} differences, first: "
                            f"{diffs[0]}); report the model")
    desc, arrays = net.spec()
    (out / "network.json").write_text(json.dumps(desc, indent=1) + "\n")
    np.savez_compressed(out / "network.npz", **arrays)
    files = ["model.nir", "network.json", "network.npz", "testdata.npz"]

    x, y, data_notes = _test_data(model)
    notes += data_notes
    logits, rec = net.measure(x)
    act = summarize(net, rec, logits, y)
    data = {"x": x, "reference": logits.astype(np.float32)}
    ann = model.meta.get("converted_from")
    if ann is not None and getattr(ann, "module", None) is not None:  # fidelity is measured against the ANN
        data["float_reference"] = ann.predict(x).astype(np.float32)
    if y is not None:
        data["y"] = y
    data.update({f"spikes.{k}": v.astype(np.float32) for k, v in rec.spikes.items()})
    data.update({f"sops.{k}": v.astype(np.float32) for k, v in rec.sops.items()})
    np.savez_compressed(out / "testdata.npz", **data)

    info = NeuromorphicBuild(
        kind="spiking", network=net.info, steps=net.steps, input_mode=net.input_mode,
        populations={n: {"kind": p.spec.kind, "neurons": p.spec.size} for n, p in net.populations.items()},
        nir={"nodes": len(graph.nodes), "edges": len(graph.edges),
             "node_types": sorted({type(n).__name__ for n in graph.nodes.values()}),
             "round_trip": "unchanged (every node, array, edge and metadata entry compared after nir.write / "
                           "nir.read)"},
        test_samples=int(len(x)), reference_accuracy=act.get("accuracy"), activity=act)
    if profile.board.get("simulator") == "lava":
        from edgekit.layers import loihi_format

        int_desc, int_arrays, fixed_notes = loihi_format.integer_network(net)
        notes += fixed_notes
        (out / "loihi_network.json").write_text(json.dumps(int_desc, indent=1) + "\n")
        np.savez_compressed(out / "loihi_network.npz", **int_arrays)
        files += ["loihi_network.json", "loihi_network.npz"]
        info.simulator = "lava"
        info.fixed_point = {"exact_connections": sum(c["exact"] for c in int_desc["connections"]),
                               "connections": len(int_desc["connections"]),
                               "weight_exp": {c["name"]: c["weight_exp"] for c in int_desc["connections"]},
                               "lif_unit": "threshold · 2**-12 (vth = 4096)"}
    else:
        notes.append(f"no simulator for {profile.name} here: edgekit profile reports the snntorch run's counts")
    est = spiking_estimate(net, act, profile)
    energy = neuromorphic_energy(profile, act["synaptic_ops_per_inference"], act["graded_ops_per_inference"],
                                 act["neuron_updates_per_inference"], mac_ops=act["graded_macs_per_inference"],
                                 ac_ops=act["synaptic_ops_per_inference"])
    info.energy = energy
    return BuildResult(files=files, dtype="spiking", estimate=est, analysis=_analysis(net), info=info, notes=notes,
                       energy_breakdown=energy_breakdown(profile, act))


def energy_breakdown(profile: TargetProfile, act: dict) -> dict[str, float]:
    """µJ per inference by cause (the report draws it)."""
    e_syn = profile.number("energy", "pj_per_synop")
    e_neu = profile.number("energy", "pj_per_neuron_update")
    return {"synaptic ops (spikes)": act["synaptic_ops_per_inference"] * e_syn * 1e-6,
            "graded ops (input, memory)": act["graded_ops_per_inference"] * e_syn * 1e-6,
            "neuron updates": act["neuron_updates_per_inference"] * e_neu * 1e-6}


def egru_estimate(model, profile: TargetProfile, activity: dict | None) -> Estimate:
    from edgekit.targets.neuromorphic import events

    return events.egru_estimate(model, profile, activity)
