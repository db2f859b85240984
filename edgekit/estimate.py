"""Estimators: flash, peak SRAM, latency and energy of a model on a target, before anything is built.

Where it sits: reads the deployment graph (edgekit/graph.py) and a target profile (targets/profiles/*.toml); runs
nothing. ``edgekit estimate`` prints it, ``edgekit compile`` puts it in report.json next to what was measured.

Formulas (each shown in the report with the constants that went in):

* flash = Σ stored weight bytes (+ per-layer code/table bytes on MCUs) + the profile's runtime overhead
* peak SRAM = the arena of edgekit's static memory plan (edgekit/memplan.py) + state buffers + the profile's
  runtime overhead (stack and driver state)
* MCU instructions = Σ_layers MACs · instructions-per-MAC(kind, dtype) + elements · per-element cost;
  latency = instructions / clock (one instruction per cycle assumed); energy = cycles · I_run/MHz · V
  (uA/MHz · V = pJ per cycle)
* phone latency = MACs / MAC-throughput(dtype); energy = MACs · pJ/MAC(dtype)
* neuromorphic energy = E_synop · synaptic ops + E_neuron · neuron updates (:func:`neuromorphic_energy`; the spike
  counts come from the spiking converter, without them every synapse counts every step — an upper bound)
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from edgekit.analysis import DTYPE_BYTES, macs_of, param_bytes_of
from edgekit.graph import Graph, Node
from edgekit.memplan import graph_buffers, plan_arena
from edgekit.targets.profiles import TargetProfile


@dataclass
class Estimate:
    flash_bytes: int
    peak_sram_bytes: int
    arena_bytes: int
    state_bytes: int
    latency_ms: float
    energy_uj: float
    instructions: int | None = None
    macs: int = 0
    layers: list[dict[str, Any]] = field(default_factory=list)
    memory_timeline: list[int] = field(default_factory=list)
    formulas: dict[str, str] = field(default_factory=dict)
    # Recurrent models run as step programs (one call per input sample): instructions of one step; ``instructions``
    # then counts a whole sequence, and ``state_bytes`` is the state kept between steps.
    instructions_per_step: int | None = None

    def to_json(self) -> dict:
        return asdict(self)


def _kind(node: Node) -> str:
    """The cost-model key family of a layer."""
    if node.op in ("conv2d", "conv1d"):
        a = node.attrs
        return "depthwise" if a["groups"] == a["in_channels"] and a["groups"] > 1 else "conv2d"
    if node.op == "linear":
        return "linear"
    if node.op in ("gru", "lstm") or node.op in RECURRENT_OPS:
        return "rnn"
    return "elementwise"


# Recurrent layers registered by other parts of edgekit (LMU, EGRU) share the rnn cost family.
RECURRENT_OPS: set[str] = set()


def weight_bytes_per_param(dtype: str) -> int:
    return 1 if dtype == "int8" else 4


def layer_instructions(node: Node, graph: Graph, profile: TargetProfile, dtype: str) -> int:
    kind = _kind(node)
    macs = macs_of(node, graph)
    per_elem = profile.number("cost", "elementwise_per_element", 4.0)
    if kind == "elementwise":
        elems = max([node.elements] + [graph[i].elements for i in node.inputs])
        if node.op in ("maxpool2d", "avgpool2d"):
            elems *= int(node.attrs["kernel_size"][0] * node.attrs["kernel_size"][1])
        if node.op in ("reshape", "flatten"):
            return 0
        return int(elems * per_elem)
    ipm = profile.number("cost", f"{kind}_{dtype}", profile.number("cost", f"conv2d_{dtype}", 10.0))
    return int(macs * ipm + node.elements * per_elem)


def estimate(graph: Graph, profile: TargetProfile, dtype: str = "float32", *, weight_bytes: dict[str, int] | None = None,
             scratch: dict[str, int] | None = None, state_bytes: int = 0, code_bytes: dict[str, int] | None = None,
             arena_override: int | None = None, timeline_override: list[int] | None = None) -> Estimate:
    """Estimate ``graph`` on ``profile`` with activations and weights in ``dtype``.

    Targets that know better pass what they decided: stored ``weight_bytes`` per layer (sparse storage),
    ``scratch`` bytes per layer, recurrent ``state_bytes``, ``code_bytes`` per layer, or a patch schedule's arena.
    """
    wb = weight_bytes_per_param(dtype)
    act = DTYPE_BYTES[dtype]
    layers = []
    total_instr = 0
    total_macs = 0
    stored_total = 0
    for n in graph.nodes:
        if n.op == "input":
            continue
        stored = (weight_bytes or {}).get(n.name, param_bytes_of(n, wb))
        macs = macs_of(n, graph)
        instr = layer_instructions(n, graph, profile, dtype) if profile.kind == "mcu" else 0
        total_instr += instr
        total_macs += macs
        stored_total += stored + (code_bytes or {}).get(n.name, 0)
        layers.append({"name": n.name, "op": n.op, "macs": macs, "weight_bytes": stored,
                       "activation_bytes": n.elements * act, "instructions": instr})
    buffers, _ = graph_buffers(graph, act, scratch)
    plan = plan_arena(buffers)
    arena = arena_override if arena_override is not None else plan.arena_bytes
    timeline = timeline_override if timeline_override is not None else list(plan.live_bytes)
    overhead_flash = int(profile.number("runtime", "overhead_flash_bytes", 0))
    overhead_sram = int(profile.number("runtime", "overhead_sram_bytes", 0))
    formulas = {}
    if profile.kind == "mcu":
        flash = stored_total + overhead_flash
        sram = arena + state_bytes + overhead_sram
        clock = profile.clock_hz.value
        latency_ms = total_instr / clock * 1e3
        pj_per_cycle = profile.number("energy", "run_current_ua_per_mhz") * profile.number("energy", "supply_v")
        energy_uj = total_instr * pj_per_cycle * 1e-6
        for lay in layers:
            lay["latency_ms"] = lay["instructions"] / clock * 1e3
            lay["energy_uj"] = lay["instructions"] * pj_per_cycle * 1e-6
        formulas = {
            "flash_bytes": f"weights {stored_total} B + runtime overhead {overhead_flash} B",
            "peak_sram_bytes": f"arena {arena} B + state {state_bytes} B + stack/runtime {overhead_sram} B",
            "instructions": "Σ MACs · instructions/MAC(kind, dtype) + elements · "
                            f"{profile.number('cost', 'elementwise_per_element', 4.0):g}/element",
            "latency_ms": f"{total_instr} instructions / {clock / 1e6:g} MHz (1 instruction per cycle)",
            "energy_uj": f"{total_instr} cycles · {profile.number('energy', 'run_current_ua_per_mhz'):g} uA/MHz · "
                         f"{profile.number('energy', 'supply_v'):g} V = {pj_per_cycle:.1f} pJ/cycle",
        }
        return Estimate(flash, sram, arena, state_bytes, latency_ms, energy_uj, total_instr, total_macs, layers,
                        timeline, formulas)
    if profile.kind == "phone":
        return _phone_estimate(graph, profile, dtype, layers, stored_total, total_macs, arena, state_bytes,
                               timeline, overhead_flash, overhead_sram)
    # Neuromorphic: memory is the synapse/neuron state. Without spike counts (targets/neuromorphic passes them from
    # the spiking converter's measurements) the energy here is the dense bound: every synapse active every step.
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


PHONE_KINDS = ("conv2d", "depthwise", "linear", "rnn")


def phone_terms(graph: Graph) -> dict[str, float]:
    """Work of a graph in the phone cost model's terms: MACs per kernel family, other elements, layer count, and for
    the file size the layers with weights and their output channels (an int8 QDQ file keeps a scale and zero point per
    channel)."""
    terms = {f"macs_{k}": 0.0 for k in PHONE_KINDS}
    terms.update(elements=0.0, layers=0.0, weighted=0.0, channels=0.0)
    for n in graph.nodes:
        if n.op == "input":
            continue
        kind = _kind(n)
        terms["layers"] += 1
        if kind in PHONE_KINDS:
            terms["weighted"] += 1
            terms["channels"] += n.shape[-1] if n.op in ("gru", "lstm") or kind == "rnn" else n.shape[1]
            terms[f"macs_{kind}"] += macs_of(n, graph)
        else:
            terms["elements"] += n.elements
    return terms


def _phone_estimate(graph, profile, dtype, layers, stored_total, total_macs, arena, state_bytes, timeline,
                    overhead_flash, overhead_sram) -> Estimate:
    """Phone: ONNX Runtime's per-operator costs when the profile carries a fitted model
    (targets/profiles/cost/phone-arm64.toml: ns per MAC per kernel family, ns per element, µs per layer, µs per
    inference, and file bytes per layer), else peak MAC throughput."""
    key = "int8" if dtype == "int8" else "fp32"
    pj = profile.number("energy", f"pj_per_mac_{key}")
    terms = phone_terms(graph)
    fitted = f"ort_us_per_inference_{key}" in profile.cost
    if fitted:
        c = lambda name: profile.number("cost", f"{name}_{key}", 0.0)  # noqa: E731
        latency_ms = (c("ort_us_per_inference") + c("ort_us_per_layer") * terms["layers"]
                      + c("ort_ns_per_element") * terms["elements"] * 1e-3
                      + sum(c(f"ort_ns_per_mac_{k}") * terms[f"macs_{k}"] * 1e-3 for k in PHONE_KINDS)) * 1e-3
        file_overhead = int(c("onnx_bytes_per_layer") * terms["layers"] + c("onnx_bytes_per_weighted_layer")
                            * terms["weighted"] + c("onnx_bytes_per_channel") * terms["channels"]
                            + c("onnx_bytes_base"))
        for lay in layers:
            node = graph[lay["name"]]
            k = _kind(node)
            per = c(f"ort_ns_per_mac_{k}") * lay["macs"] if k in PHONE_KINDS else \
                c("ort_ns_per_element") * node.elements
            lay["latency_ms"] = (per * 1e-3 + c("ort_us_per_layer")) * 1e-3
            lay["energy_uj"] = lay["macs"] * pj * 1e-6
        lat_formula = (f"{c('ort_us_per_inference'):.3g} µs + {terms['layers']:.0f} layers · "
                       f"{c('ort_us_per_layer'):.3g} µs + Σ MACs · ns/MAC by family + elements · "
                       f"{c('ort_ns_per_element'):.3g} ns (ONNX Runtime per-op costs fitted by bench/estimators.py)")
    else:
        mps = profile.number("cost", f"macs_per_second_{key}")
        latency_ms = total_macs / mps * 1e3
        file_overhead = overhead_flash
        for lay in layers:
            lay["latency_ms"] = lay["macs"] / mps * 1e3
            lay["energy_uj"] = lay["macs"] * pj * 1e-6
        lat_formula = f"{total_macs} MACs / {mps:.3g} MAC/s ({key})"
    flash = stored_total + file_overhead
    sram = arena + state_bytes + overhead_sram
    energy_uj = total_macs * pj * 1e-6
    formulas = {
        "flash_bytes": f"weights {stored_total} B + file overhead {file_overhead} B" + (
            f" ({terms['layers']:.0f} layers · {c('onnx_bytes_per_layer'):.4g} B + {terms['weighted']:.0f} with "
            f"weights · {c('onnx_bytes_per_weighted_layer'):.4g} B + {terms['channels']:.0f} channels · "
            f"{c('onnx_bytes_per_channel'):.4g} B + {c('onnx_bytes_base'):.4g} B)" if fitted else ""),
        "peak_sram_bytes": f"activation arena {arena} B + runtime {overhead_sram} B",
        "latency_ms": lat_formula,
        "energy_uj": f"{total_macs} MACs · {pj:g} pJ/MAC ({key})",
    }
    return Estimate(flash, sram, arena, state_bytes, latency_ms, energy_uj, None, total_macs, layers, timeline,
                    formulas)


def fit_check(est: Estimate, profile: TargetProfile) -> tuple[bool, list[str]]:
    """Whether the estimate fits the profile's memories, with one reason per memory."""
    reasons = []
    ok = True
    for what, need, have in (("SRAM", est.peak_sram_bytes, int(profile.sram_bytes.value)),
                             ("flash", est.flash_bytes, int(profile.flash_bytes.value))):
        if profile.kind == "neuromorphic" and what == "flash":
            continue
        if need > have:
            ok = False
            reasons.append(f"{what}: needs {need:,} B of {have:,} B ({need - have:,} B over)")
        else:
            reasons.append(f"{what}: {need:,} B of {have:,} B ({need / have:.0%})")
    return ok, reasons
