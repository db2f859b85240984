"""The neuromorphic targets' cost model: memory, latency and energy of a spiking network on a chip.

Where it sits: targets/neuromorphic (Model -> Artifact); runtimes/neuromorphic.py uses :func:`neuromorphic_energy`
for what Lava measured. Formulas (each shown in the report with the constants that went in):

* chip energy E = E_synop · (synaptic ops + graded ops) + E_neuron · neuron updates per inference, with the
  profile's ``pj_per_synop`` and ``pj_per_neuron_update`` (synaptic ops = Σ spikes × fan-out, measured by the spiking
  converter on the test inputs; without them every synapse counts every step — an upper bound)
* the 45 nm convention (Horowitz 2014, as in the Spike-driven Transformer papers): E = E_MAC · MACs(first,
  non-spiking layers) + E_AC · SOPs, for comparison with an ANN
* memory = synapses · bytes per synapse + neurons · bytes of state; latency = steps · seconds per step
"""
from __future__ import annotations

import math
from typing import Any

from edgekit.analysis import macs_of
from edgekit.estimate import Estimate, activation_plan, layer_table
from edgekit.graph import Graph, Node
from edgekit.layers.spiking import SpikingNetwork
from edgekit.targets.profiles import TargetProfile


def neuromorphic_energy(profile: TargetProfile, synaptic_ops: float, graded_ops: float, neuron_updates: float,
                        mac_ops: float | None = None, ac_ops: float | None = None) -> dict[str, Any]:
    """Energy of one inference on a neuromorphic chip from its activity, and the 45 nm convention for comparison.

    * chip: E = E_synop · (synaptic ops + graded ops) + E_neuron · neuron updates, with the profile's
      ``pj_per_synop`` and ``pj_per_neuron_update`` (a graded spike costs a synaptic event like a binary one)
    * 45 nm (Horowitz 2014, as in the Spike-driven Transformer papers): E = E_MAC · MACs(non-spiking layers: the
      first layer reading real-valued input, graded state) + E_AC · SOPs(spiking layers), with ``pj_mac_45nm`` and
      ``pj_ac_45nm``; given when ``mac_ops``/``ac_ops`` are

    Returns energies in µJ and the formulas with the numbers that went in.
    """
    e_syn = profile.number("energy", "pj_per_synop")
    e_neu = profile.number("energy", "pj_per_neuron_update")
    syn_uj = (synaptic_ops + graded_ops) * e_syn * 1e-6
    neu_uj = neuron_updates * e_neu * 1e-6
    out = {"energy_uj": syn_uj + neu_uj, "synaptic_uj": syn_uj, "neuron_uj": neu_uj,
           "formula": f"E = {e_syn:g} pJ · ({synaptic_ops:.6g} synaptic ops + {graded_ops:.6g} graded ops) + "
                      f"{e_neu:g} pJ · {neuron_updates:.6g} neuron updates"}
    if mac_ops is not None and ac_ops is not None:
        e_mac = profile.number("energy", "pj_mac_45nm")
        e_ac = profile.number("energy", "pj_ac_45nm")
        out["energy_45nm_uj"] = (mac_ops * e_mac + ac_ops * e_ac) * 1e-6
        out["formula_45nm"] = (f"E = {e_mac:g} pJ · {mac_ops:.6g} MACs (first layer, graded) + "
                               f"{e_ac:g} pJ · {ac_ops:.6g} SOPs")
    return out


def _snn_networks(graph: Graph) -> list[dict]:
    return [n.attrs["network"] for n in graph.nodes if n.op == "snn"]


def _neuron_count(graph: Graph) -> int:
    return sum(math.prod(p["shape"]) for net in _snn_networks(graph) for p in net["populations"]
               if p["kind"] != "input")


def _neuron_updates(graph: Graph) -> int:
    return sum(math.prod(p["shape"]) * net["steps"] for net in _snn_networks(graph) for p in net["populations"]
               if p["kind"] != "input")


def _steps(graph: Graph) -> int:
    return max([net["steps"] for net in _snn_networks(graph)] or [1])


def _synapse_count(node: Node, graph: Graph) -> int:
    """Synapses of an "snn" node (its MACs are synapses × steps)."""
    if node.op != "snn":
        return 0
    return macs_of(node, graph) // max(node.attrs["network"]["steps"], 1)


def dense_estimate(graph: Graph, profile: TargetProfile) -> Estimate:
    """The upper bound without spike counts: every synapse active every step (the spiking converter's measured
    activity gives :func:`spiking_estimate` instead)."""
    table = layer_table(graph, "float32")
    layers, stored_total, total_macs = table.layers, table.stored_bytes, table.macs
    plan = activation_plan(graph, "float32")
    arena, timeline, state_bytes = plan.arena_bytes, list(plan.live_bytes), 0
    # Memory is the synapse/neuron state.
    synapse_bytes = profile.number("neuromorphic", "synapse_bytes", 1.0)
    neuron_bytes = profile.number("neuromorphic", "neuron_state_bytes", 6.0)
    updates = _neuron_updates(graph)
    synapses = int(sum(lay["macs"] for lay in layers))
    weight_mem = int(round(sum(_synapse_count(n, graph) for n in graph.nodes) * synapse_bytes)) or stored_total
    state = state_bytes or int(_neuron_count(graph) * neuron_bytes)
    flash = 0
    sram = weight_mem + state
    energy = neuromorphic_energy(profile, synaptic_ops=synapses, graded_ops=0, neuron_updates=updates)
    steps = _steps(graph)
    latency_ms = steps * profile.number("neuromorphic", "timestep_s", 0.0) * 1e3
    formulas = {"peak_sram_bytes": f"synapses · {synapse_bytes:g} B + neurons · {neuron_bytes:g} B of state "
                                   f"= {weight_mem} B + {state} B",
                "energy_uj": energy["formula"] + " — upper bound, every synapse active every step (no spike counts)",
                "latency_ms": f"{steps} steps · {profile.number('neuromorphic', 'timestep_s', 0.0):g} s/step"}
    return Estimate(flash, sram, arena, state, latency_ms, energy["energy_uj"], None, total_macs, layers, timeline,
                    formulas)


def _memory(net: SpikingNetwork, profile: TargetProfile) -> tuple[int, int, int]:
    synapses = sum(int(f.sum()) for f in net.fan_out().values())
    neurons = sum(p.spec.size for p in net.populations.values() if p.spec.kind != "input")
    weight_bytes = int(round(synapses * profile.number("neuromorphic", "synapse_bytes", 1.0)))
    state_bytes = int(round(neurons * profile.number("neuromorphic", "neuron_state_bytes", 6.0)))
    return synapses, weight_bytes, state_bytes


def spiking_estimate(net: SpikingNetwork, act: dict, profile: TargetProfile) -> Estimate:
    """Estimate of a spiking network on ``profile`` from its activity (:func:`edgekit.layers.spiking.summarize`)."""
    synapses, weight_bytes, state_bytes = _memory(net, profile)
    energy = neuromorphic_energy(profile, act["synaptic_ops_per_inference"], act["graded_ops_per_inference"],
                                 act["neuron_updates_per_inference"], mac_ops=act["graded_macs_per_inference"],
                                 ac_ops=act["synaptic_ops_per_inference"])
    e_syn = profile.number("energy", "pj_per_synop")
    e_neu = profile.number("energy", "pj_per_neuron_update")
    step_s = profile.number("neuromorphic", "timestep_s", 0.0)
    layers = []
    for name, p in net.populations.items():
        if p.spec.kind == "input":
            continue
        incoming = [c for c in act["connections"].values() if c["target"] == name]
        sops = sum(c["sops_per_inference"] for c in incoming)
        syn = sum(c["synapses"] for c in incoming)
        updates = p.spec.size * net.steps
        layers.append({"name": name, "op": p.spec.kind, "macs": syn * net.steps, "weight_bytes": syn,
                       "activation_bytes": p.spec.size, "instructions": 0, "synaptic_ops": sops,
                       "spikes": act["populations"].get(name, {}).get("spikes_per_inference", 0.0),
                       "neuron_updates": updates, "energy_uj": (sops * e_syn + updates * e_neu) * 1e-6,
                       "latency_ms": 0.0})
    formulas = {
        "energy_uj": energy["formula"],
        "energy_45nm_uj": energy["formula_45nm"] + f" = {energy['energy_45nm_uj']:.4g} µJ (comparison convention)",
        "peak_sram_bytes": f"{synapses} synapses · {profile.number('neuromorphic', 'synapse_bytes', 1):g} B + "
                           f"neuron state {state_bytes} B",
        "latency_ms": f"{net.steps} steps · {step_s:g} s/step",
        "activity": f"measured on {act.get('samples', '?')} test inputs by the spiking converter",
    }
    return Estimate(0, weight_bytes + state_bytes, 0, state_bytes, net.steps * step_s * 1e3, energy["energy_uj"],
                    None, synapses * net.steps, layers, [], formulas)
