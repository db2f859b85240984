"""Recurrent models on Cortex-M as streaming step programs: one call per input sample, the state kept in between.

Where it sits: inside the Cortex-M target, next to program.py. A deployment graph with recurrent layers (gru, lstm,
lmu, egru) over a sequence [1, T, I] is split by edgekit/stepgraph.py into cells, the last-step selection and a
head; :func:`build_step_program` turns that into a :class:`StepProgram`:

* the input is one sample x_t [1, I] in the arena; the head's output is the model's output after this step
* each layer's state (h; h and c; y and c; h and m) lives in ``ek_state``, a static area outside the arena that
  ``edgekit_model_reset()`` zeroes; the cell kernels (tvm_cells.py) read it and write the new state into the arena,
  the head and the next layer read the new output there, and the step ends by copying the new state into ek_state
* the EGRU's recurrent product runs event-driven (only the columns of units that fired at the previous step)
* int8: edgekit/qrecurrent.py's integer cells (int8 weights, int16 state), the head in int8 as for any model

codegen of the driver and harness is streaming_codegen.py; runtimes/mcu.py measures instructions per step.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgekit.analysis import macs_of
from edgekit.errors import UnsupportedError
from edgekit.memplan import Buffer, plan_arena
from edgekit.stepgraph import STATE_KINDS, StepGraph, split, state_size
from edgekit.targets.mcu.kernel_spec import KernelSpec
from edgekit.targets.mcu.program import DTYPE_BYTES, Program, Step, Tensor, _Builder, check_supported, root_of

CELL_KIND = "tvm_cell"      # a recurrent kernel from tvm_cells.py (may write several outputs)
COMMIT_KIND = "commit"      # copy a new state from the arena into ek_state


@dataclass
class StateBuffer:
    """One state vector in ``ek_state``: ``layer``'s ``kind`` (h, c, y, m), ``size`` elements of ``dtype`` at byte
    ``offset``; ``new`` names the arena tensor that holds its value after the step."""

    name: str
    layer: str
    kind: str
    size: int
    dtype: str
    new: str
    offset: int = 0

    @property
    def nbytes(self) -> int:
        return self.size * DTYPE_BYTES[self.dtype]


@dataclass
class StepProgram(Program):
    """A Program run once per input sample, with persistent ``states`` (see the module docstring)."""

    states: list[StateBuffer] = field(default_factory=list)
    steps_per_sequence: int = 0
    step_graph: StepGraph | None = None
    qstream: object | None = None

    @property
    def state_bytes(self) -> int:
        """Bytes of ek_state: every state vector, each starting on a 4-byte boundary."""
        return sum(-(-s.nbytes // 4) * 4 for s in self.states)

    @property
    def state_by_name(self) -> dict[str, StateBuffer]:
        return {s.name: s for s in self.states}

    @property
    def event_states(self) -> list[StateBuffer]:
        """The EGRU outputs y: their non-zero entries are the events of a step."""
        return [s for s in self.states if s.kind == "y"]


def cell_macs(node) -> int:
    """Multiply-accumulates of one step of a recurrent layer (EGRU: dense, all units active)."""
    a = node.attrs
    i, h = a["input_size"], a["hidden_size"]
    if node.op in ("gru", "egru"):
        return 3 * h * (i + h)
    if node.op == "lstm":
        return 4 * h * (i + h)
    d = a["memory_size"]
    return (i + h + d) + d * d + d + h * (i + h + d)


class _StepBuilder(_Builder):
    """program._Builder for the head, plus the recurrent cells, their states and commits."""

    def __init__(self, sg: StepGraph, dtype: str, qs, use_ek: bool, cpu: str):
        super().__init__(sg.head, dtype, qs.head if qs is not None else None, use_ek, cpu)
        self.sg, self.qs = sg, qs
        self.states: list[StateBuffer] = []
        self.state_dtype = "float32" if dtype == "float32" else "int16"

    def tensor(self, name: str, shape, dtype: str, alias_of: str | None = None) -> Tensor:
        t = Tensor(name, tuple(int(s) for s in shape), dtype, alias_of)
        self.tensors[name] = t
        return t

    def cell_step(self, layer: str, op: str, attrs: dict, inputs: list[str], consts: dict[str, np.ndarray],
                  outputs: list[str], macs: int, prefix: str = "") -> None:
        """A call of tvm_cells' ``op``: its arguments are ``inputs`` (arena tensors or states), then ``consts`` (named
        as the kernel names its parameters; the lookup tables are shared by all layers), then ``outputs``."""
        names = [self.const(f"{layer}.{prefix}{k}" if not k.endswith("_lut") else k, v) for k, v in consts.items()]
        attrs = {k: (tuple(v) if isinstance(v, list) else v) for k, v in attrs.items()}
        spec = KernelSpec(op, self.dtype, (), (), tuple(sorted(attrs.items())))
        self.steps.append(Step(layer, CELL_KIND, inputs, names, outputs[0], spec=spec, macs=macs,
                               params={"outputs": outputs, "const_params": list(consts)}))

    def add_cell(self, k: int, node, x: str) -> str:
        """Steps of one recurrent layer reading ``x``; returns the name of its new output (an arena tensor)."""
        H = int(node.attrs["hidden_size"])
        states = {}
        for kind in STATE_KINDS[node.op]:
            st = StateBuffer(f"{node.name}.{kind}", node.name, kind, state_size(node, kind), self.state_dtype,
                             f"{node.name}.{kind}.new")
            self.states.append(st)
            self.tensor(st.new, (st.size,), self.state_dtype)
            states[kind] = st
        x_dtype = self.tensors[x].dtype
        attrs = {"hidden": H, "inputs": int(node.attrs["input_size"]), "x_dtype": x_dtype}
        if self.dtype == "float32":
            self._float_cell(node, x, states, attrs)
        else:
            qc = self.qs.cells[k]
            attrs["x_zp"] = int(qc.x_zp)
            self._int_cell(node, qc, x, states, attrs)
        for st in states.values():
            self.steps.append(Step(node.name, COMMIT_KIND, [st.new], [], st.name, params={"bytes": st.nbytes}))
        out = states[STATE_KINDS[node.op][0]]
        self.tensor(node.name, (1, H), self.state_dtype, alias_of=out.new)
        return node.name

    # ---- float32 -----------------------------------------------------------------------------------------------
    def _float_cell(self, node, x, st, attrs):
        p = {k: np.asarray(v, np.float32) for k, v in node.params.items()}
        H = attrs["hidden"]
        name, op = node.name, node.op
        if op in ("gru", "lstm", "egru"):
            G = p["weight_ih"].shape[0]
            p.setdefault("bias_ih", np.zeros(G, np.float32))
            p.setdefault("bias_hh", np.zeros(G, np.float32))
        if op == "gru":
            self.cell_step(name, "gru_cell", attrs, [x, st["h"].name],
                           {"w_ih": p["weight_ih"], "w_hh": p["weight_hh"], "b_ih": p["bias_ih"], "b_hh": p["bias_hh"]},
                           [st["h"].new], cell_macs(node))
        elif op == "lstm":
            ifg, o = slice(0, 3 * H), slice(3 * H, 4 * H)
            self.cell_step(name, "lstm_cell", attrs, [x, st["h"].name, st["c"].name],
                           {"w_ih": p["weight_ih"][ifg], "w_hh": p["weight_hh"][ifg], "b_ih": p["bias_ih"][ifg],
                            "b_hh": p["bias_hh"][ifg]}, [st["c"].new], cell_macs(node) * 3 // 4)
            self.cell_step(name, "lstm_out", attrs, [x, st["h"].name, st["c"].new],
                           {"w_ih": p["weight_ih"][o], "w_hh": p["weight_hh"][o], "b_ih": p["bias_ih"][o],
                            "b_hh": p["bias_hh"][o]}, [st["h"].new], cell_macs(node) // 4, prefix="o.")
        elif op == "egru":
            acc = self.tensor(f"{name}.acc_h", (3 * H,), "float32").name
            self.cell_step(name, "egru_recurrent", {"hidden": H}, [st["y"].name],
                           {"w_hh_t": np.ascontiguousarray(p["weight_hh"].T), "b_hh": p["bias_hh"]}, [acc], 3 * H * H)
            self.cell_step(name, "egru_cell", attrs, [x, st["c"].name, acc],
                           {"w_ih": p["weight_ih"], "b_ih": p["bias_ih"], "threshold": p["threshold"]},
                           [st["y"].new, st["c"].new], 3 * H * attrs["inputs"])
        else:
            d = int(node.attrs["memory_size"])
            attrs = {**attrs, "memory": d}
            self.cell_step(name, "lmu_memory", attrs, [x, st["h"].name, st["m"].name],
                           {"e_x": p["encoder_x"], "e_h": p["encoder_h"], "e_m": p["encoder_m"], "A_bar": p["A_bar"],
                            "B_bar": p["B_bar"]}, [st["m"].new], attrs["inputs"] + H + d + d * d + d)
            attrs["activation"] = node.attrs.get("hidden_activation", "tanh")
            self.cell_step(name, "lmu_hidden", attrs, [x, st["h"].name, st["m"].new],
                           {"w_x": p["weight_x"], "w_h": p["weight_h"], "w_m": p["weight_m"], "bias": p["bias"]},
                           [st["h"].new], H * (attrs["inputs"] + H + d))

    # ---- int8 (edgekit/qrecurrent.py) --------------------------------------------------------------------------
    def _luts(self, *kinds) -> dict[str, np.ndarray]:
        from edgekit.qrecurrent import SIGMOID_TABLE, TANH_TABLE

        tables = {"sigmoid_lut": SIGMOID_TABLE, "tanh_lut": TANH_TABLE}
        return {k: tables[k] for k in kinds}

    def _int_cell(self, node, qc, x, st, attrs):
        q = qc.q
        H, name, op = attrs["hidden"], node.name, node.op
        luts = self._luts("sigmoid_lut", "tanh_lut")

        def gates(rows: slice, with_h=True):
            g = {"w_x": q["w_x"][rows], "b_x": q["b_x"][rows], "mult_x": q["mult_x"][rows]}
            if with_h:
                g.update({"w_h": q["w_h"][rows], "b_h": q["b_h"][rows]})
            g["mult_h"] = q["mult_h"][rows]
            return g

        attrs = {**attrs, "shift_x": int(q["shift_x"]), "shift_h": int(q["shift_h"])}

        if op == "gru":
            self.cell_step(name, "gru_cell", attrs, [x, st["h"].name], {**gates(slice(None)), **luts}, [st["h"].new],
                           cell_macs(node))
        elif op == "lstm":
            attrs = {**attrs, "c_frac": qc.frac["c"]}
            self.cell_step(name, "lstm_cell", attrs, [x, st["h"].name, st["c"].name],
                           {**gates(slice(0, 3 * H)), **luts}, [st["c"].new], cell_macs(node) * 3 // 4)
            self.cell_step(name, "lstm_out", attrs, [x, st["h"].name, st["c"].new],
                           {**gates(slice(3 * H, 4 * H)), **luts}, [st["h"].new], cell_macs(node) // 4, prefix="o.")
        elif op == "egru":
            acc = self.tensor(f"{name}.acc_h", (3 * H,), "int32").name
            self.cell_step(name, "egru_recurrent", {"hidden": H}, [st["y"].name],
                           {"w_hh_t": np.ascontiguousarray(q["w_h"].T), "b_hh": q["b_h"]}, [acc], 3 * H * H)
            g = gates(slice(None), with_h=False)
            self.cell_step(name, "egru_cell", attrs, [x, st["c"].name, acc], {**g, **luts, "threshold": q["thr"]},
                           [st["y"].new, st["c"].new], 3 * H * attrs["inputs"])
        else:
            d = int(node.attrs["memory_size"])
            attrs = {**attrs, "memory": d, "a_frac": int(q["a_frac"]), "shift_b": int(q["shift_b"]),
                     "shift_m": int(q["shift_m"])}
            for tag in ("x", "h", "m"):
                attrs[f"mult_u{tag}"], attrs[f"shift_u{tag}"] = int(q[f"mult_u{tag}"]), int(q[f"shift_u{tag}"])
            self.cell_step(name, "lmu_memory", attrs, [x, st["h"].name, st["m"].name],
                           {"e_x": q["e_x"], "e_h": q["e_h"], "e_m": q["e_m"], "A_bar": q["a"], "B_bar": q["bm"],
                            "mult_b": q["mult_b"]}, [st["m"].new], attrs["inputs"] + H + d + d * d + d)
            hid = {}
            for tag in ("x", "h", "m"):
                hid.update({f"w_{tag}": q[f"w_{tag}"], f"b_{tag}": q[f"b_{tag}"], f"mult_{tag}": q[f"mult_{tag}"]})
            hid["tanh_lut"] = luts["tanh_lut"]
            self.cell_step(name, "lmu_hidden", attrs, [x, st["h"].name, st["m"].new], hid, [st["h"].new],
                           H * (attrs["inputs"] + H + d))

    def head_input(self) -> None:
        """The tensor the head reads (named like the selection): the last layer's new output itself (float), or
        requantized from int16 Q15 to the head's int8 input scale."""
        sel = self.sg.select
        src = sel.inputs[0]
        H = self.tensors[src].shape[-1]
        if self.dtype == "float32":
            self.tensor(sel.name, (1, H), "float32", alias_of=src)
            return
        mult, shift, zp = self.qs.head_in
        self.tensor(sel.name, (1, H), "int8")
        spec = KernelSpec("requant_q15", "int8", (), (), tuple(sorted({"hidden": H, "mult": mult, "shift": shift,
                                                                       "zp": zp}.items())))
        self.steps.append(Step(sel.name, CELL_KIND, [src], [], sel.name, spec=spec,
                               params={"outputs": [sel.name], "const_params": []}))

    def head(self) -> None:
        for n in self.g.nodes:
            if n.op == "input":
                continue
            macs = macs_of(n, self.g)
            if n.op == "linear":
                self.linear(n, macs)
            elif n.op in ("add", "mul"):
                self.binary(n)
            elif n.op in ("relu", "relu6", "sigmoid", "tanh", "hardswish"):
                self.unary(n)
            elif n.op == "concat":
                self.concat(n)
            elif n.op in ("reshape", "flatten"):
                self.reshape(n)
            elif n.op == "select":
                self.select(n)
            else:
                raise UnsupportedError(f"layer '{n.name}': '{n.op}' after a recurrent layer is not supported on "
                                       "Cortex-M (the head reads one vector per step)")


def _placeholder_quant(graph):
    """int8 parameters with placeholder scales: enough to plan memory and count bytes without calibrating."""
    from edgekit.converters.quantize import QuantParams, TensorQ, weight_scales

    acts = {n.name: TensorQ(1.0 / 64, 0) for n in graph.nodes}
    ws = {n.name: weight_scales(n.params["weight"]) for n in graph.nodes if n.op == "linear"}
    return QuantParams(acts, ws)


def lower_int8(model, sg: StepGraph, calibrated: bool):
    """The integer step function (edgekit/qrecurrent.py): with the model's quantization parameters, calibrating
    first if no converter did; or (``calibrated=False``) placeholder scales for planning and estimates."""
    from edgekit import qrecurrent

    if not calibrated:
        return qrecurrent.lower(sg, _placeholder_quant(model.deploy_graph), None)
    from edgekit.converters.quantize import quantize

    q = model.meta.get("quant")
    if q is None:
        q = quantize(model).meta["quant"]
    return qrecurrent.lower(sg, q, model.calib)


def build_step_program(graph, dtype: str, qs=None, use_ek: bool = False, cpu: str = "cortex-m7",
                       target: str = "cortex-m") -> StepProgram:
    """The planned step program of a recurrent deployment ``graph`` (int8: with the QStream ``qs``)."""
    sg = split(graph, target)
    check_supported(sg.head, dtype, target)
    b = _StepBuilder(sg, dtype, qs, use_ek, cpu)
    x = b.tensor(sg.input.name, (1, sg.input_features), dtype).name
    for k, cell in enumerate(sg.cells):
        x = b.add_cell(k, cell, x)
    b.head_input()
    b.head()
    prog = StepProgram(graph.name, dtype, b.tensors, b.consts, b.steps, sg.input.name, graph.outputs[0], notes=b.notes,
                       states=b.states, steps_per_sequence=sg.steps, step_graph=sg, qstream=qs)
    if qs is not None:
        prog.input_q = qs.input_q
        prog.output_q = (qs.head.output().out_scale, qs.head.output().out_zp)
    offset = 0
    for st in prog.states:
        st.offset = offset
        offset += -(-st.nbytes // 4) * 4
    plan_step_program(prog)
    prog.schedule = {"reason": f"streaming step program: {len(sg.cells)} recurrent layer(s), one call per input "
                               f"sample, state {prog.state_bytes} B in ek_state", "per_layer_arena_bytes":
                     prog.arena_bytes, "unpatched_timeline": None}
    return prog


def plan_step_program(prog: StepProgram) -> None:
    """Plan the arena over one step: every tensor lives from its producing call to its last reader (state buffers
    are not in the arena); the output lives to the end of the step."""
    first: dict[str, int] = {root_of(prog, prog.input): 0}
    last: dict[str, int] = {root_of(prog, prog.input): 0}
    for i, s in enumerate(prog.steps):
        for out in s.params.get("outputs", [s.output]):
            if out in prog.tensors:
                r = root_of(prog, out)
                first.setdefault(r, i)
                last[r] = max(last.get(r, i), i)
        for x in s.inputs:
            if x in prog.tensors:
                r = root_of(prog, x)
                last[r] = max(last.get(r, i), i)
    last[root_of(prog, prog.output)] = max(len(prog.steps) - 1, 0)
    buffers = [Buffer(n, prog.tensors[n].nbytes, first[n], last[n]) for n in first]
    for i, s in enumerate(prog.steps):
        if s.scratch_bytes:
            buffers.append(Buffer(f"{s.layer}#scratch{i}", s.scratch_bytes, i, i))
    prog.plan = plan_arena(buffers, alignment=8)
    for t in prog.tensors.values():
        t.offset = prog.plan.offsets.get(root_of(prog, t.name), 0)


# ---- estimates ------------------------------------------------------------------------------------------------------

# Instructions of the recurrent kernels on the emulated Cortex-M7 (QEMU, exact counts), set from the per-call
# measurements of bench/recurrent.py (digits-gru, -lstm, -lmu, -egru; the bench prints estimate against measurement):
# per multiply-accumulate, plus per input element loaded once for the gates fused in a pass (MACs / gates), per unit
# (rescaling, gate arithmetic, state update), per sigmoid/tanh (newlib's expf/tanhf in float32, an interpolated table
# in int8) and per call (argument unpacking). The EGRU's event-driven product: per multiply-accumulate of an active
# column and per unit checked. Used where the target profile's [cost] has no fitted value.
DEFAULT_CELL_COSTS = {
    "float32": {"per_mac": 3.25, "per_gate_input": 2.25, "per_unit": 140.0, "per_activation": 25.0,
                "per_call": 150.0, "per_event_mac": 6.0, "per_event_unit": 8.0},
    "int8": {"per_mac": 2.15, "per_gate_input": 2.45, "per_unit": 100.0, "per_activation": 30.0,
             "per_call": 150.0, "per_event_mac": 4.8, "per_event_unit": 8.0, "per_requant": 14.0},
}
# Per recurrent kernel: gate rows computed in one pass over the inputs, sigmoid/tanh evaluations per unit.
GATES_PER_PASS = {"gru_cell": 3, "egru_cell": 3, "lstm_cell": 3, "lstm_out": 1, "lmu_hidden": 1, "lmu_memory": 1}
ACTIVATIONS_PER_UNIT = {"gru_cell": 3, "egru_cell": 3, "lstm_cell": 3, "lstm_out": 2, "lmu_hidden": 1,
                        "lmu_memory": 0, "egru_recurrent": 0, "requant_q15": 0}


def step_instruction_terms(prog: StepProgram, s: Step, activity: float | None = None) -> tuple:
    """(cost key, MACs (or work units), units (or outputs), sigmoid/tanh evaluations, calls) of one call of a step
    program. For the EGRU's event-driven product (key ``rnn_event_<dtype>``) the MACs are those of the active columns:
    ``activity`` events per unit and step, dense when unknown (an upper bound)."""
    if s.kind == COMMIT_KIND:
        return "copy", s.params["bytes"], 0, 0, 1
    if s.kind != CELL_KIND:
        from edgekit.targets.mcu import step_cost_terms

        key, units, outs, _ = step_cost_terms(prog, s)
        return key, units, outs, 0, 1
    op = s.spec.op
    H = s.spec.attr("hidden")
    if op == "egru_recurrent":
        macs = s.macs if activity is None else int(round(s.macs * activity))
        return f"rnn_event_{prog.dtype}", macs, H, 0, 1
    if op == "requant_q15":
        return "requant_int8", 0, H, 0, 1
    units = s.spec.attr("memory") if op == "lmu_memory" else H
    return f"rnn_{prog.dtype}", s.macs, units, units * ACTIVATIONS_PER_UNIT[op], 1


def call_instructions(prog: StepProgram, s: Step, profile, activity: float | None = None) -> float:
    """Estimated instructions of one call of step ``s``."""
    defaults = DEFAULT_CELL_COSTS[prog.dtype]
    key, units, outs, acts, calls = step_instruction_terms(prog, s, activity)

    def cost(name: str, default: float) -> float:
        return profile.number("cost", name, default)

    if key == "requant_int8":
        return cost(f"{key}_step_per_unit", defaults["per_requant"]) * outs + \
            cost(f"{key}_step_per_call", defaults["per_call"]) * calls
    if key.startswith("rnn_event_"):
        return cost(f"{key}_step", defaults["per_event_mac"]) * units + \
            cost(f"{key}_step_per_unit", defaults["per_event_unit"]) * outs + \
            cost(f"{key}_step_per_call", defaults["per_call"]) * calls
    if s.kind == CELL_KIND:
        inputs = units / GATES_PER_PASS.get(s.spec.op, 1)
        return cost(f"{key}_step", defaults["per_mac"]) * units + \
            cost(f"{key}_step_per_gate_input", defaults["per_gate_input"]) * inputs + \
            cost(f"{key}_step_per_unit", defaults["per_unit"]) * outs + \
            cost(f"{key}_step_per_activation", defaults["per_activation"]) * acts + \
            cost(f"{key}_step_per_call", defaults["per_call"]) * calls
    if s.kind == COMMIT_KIND:
        return 1.0 * units + 10.0   # a byte loop: ~1 instruction per byte (measured 261 for 256 B)
    return cost(key, cost("default_per_unit", 8.0)) * units + cost(key + "_per_output", 0.0) * outs + \
        cost(key + "_per_call", 0.0)


def step_instructions(prog: StepProgram, profile, activity: float | None = None) -> dict[str, float]:
    """Estimated instructions of one step, per layer."""
    out: dict[str, float] = {}
    for s in prog.steps:
        out[s.layer] = out.get(s.layer, 0.0) + call_instructions(prog, s, profile, activity)
    return out


def estimate(model, profile, prog: StepProgram):
    """Flash, SRAM (arena + state), instructions per step and per sequence for a step program."""
    from edgekit.estimate import estimate as generic_estimate
    from edgekit.targets.mcu import code_bytes, sram_estimate

    est = generic_estimate(model.deploy_graph, profile, prog.dtype, weight_bytes=prog.const_bytes_by_layer(),
                           state_bytes=prog.state_bytes, arena_override=prog.arena_bytes,
                           timeline_override=list(prog.plan.live_bytes))
    # The EGRU's event-driven product scales with the events: the activity to_egru measured, when the model carries
    # it (meta['egru']); otherwise dense, an upper bound.
    sparsity = (model.meta.get("egru") or {}).get("activity_sparsity") if prog.event_states else None
    activity = None if sparsity is None else 1.0 - float(sparsity)
    per_step = step_instructions(prog, profile, activity)
    T = prog.steps_per_sequence
    clock = profile.clock_hz.value
    pj = profile.number("energy", "run_current_ua_per_mhz") * profile.number("energy", "supply_v")
    for lay in est.layers:
        lay["instructions"] = int(per_step.get(lay["name"], 0) * T)
        lay["instructions_per_step"] = int(per_step.get(lay["name"], 0))
        lay["latency_ms"] = lay["instructions"] / clock * 1e3
        lay["energy_uj"] = lay["instructions"] * pj * 1e-6
    step_total = int(sum(per_step.values()))
    total = step_total * T
    code = code_bytes(prog) + 600 * len({s.spec for s in prog.steps if s.kind == CELL_KIND})
    est.flash_bytes = prog.const_bytes + code
    est.formulas["flash_bytes"] = f"constants {prog.const_bytes:,} B + code {code:,} B"
    est.peak_sram_bytes, est.formulas["peak_sram_bytes"] = sram_estimate(model, prog, prog.state_bytes,
                                                                           " (one step)")
    est.instructions = total
    est.instructions_per_step = step_total
    est.latency_ms = total / clock * 1e3
    est.energy_uj = total * pj * 1e-6
    events = "" if not prog.event_states else (
        f"; EGRU product at {activity:.0%} activity (to_egru's measurement)" if activity is not None
        else "; EGRU product dense (an upper bound: no measured activity)")
    est.formulas["instructions"] = (f"{T} steps x {step_total:,} instructions per step (cells: MACs, units, "
                                    f"sigmoid/tanh and calls at streaming.DEFAULT_CELL_COSTS; head every step{events})")
    est.formulas["latency_ms"] = f"{total:,} instructions per sequence / {clock / 1e6:g} MHz (1 instruction per cycle)"
    est.formulas["energy_uj"] = f"{total:,} cycles · {pj:.1f} pJ/cycle, per sequence of {T} steps"
    return est


# ---- the target's entry points for recurrent models (called from targets/mcu/__init__.py) -----------------------

# Test sequences the emulator firmware runs at most, by estimated instructions (QEMU with the counting plugin runs
# roughly 50-150 million instructions a second here).
MAX_EMULATED_INSTRUCTIONS = 4_000_000_000


def make_step_program(model, profile, options, qs=None) -> StepProgram:
    """The planned step program of a recurrent model (int8 without ``qs``: placeholder scales, for estimates)."""
    from edgekit.targets.mcu import _dtype, _use_ek, cpu_of

    dtype = _dtype(options)
    graph = model.deploy_graph
    if dtype == "int8" and qs is None:
        qs = lower_int8(model, split(graph, profile.name), calibrated=False)
    return build_step_program(graph, dtype, qs, _use_ek(options, dtype), cpu_of(profile), profile.name)


def test_sequences(model, prog: StepProgram, profile, limit: int | None = None):
    """(float sequences, device sequences, labels) for the firmware: the model's test set, capped by the flash budget
    of the test data and by emulator time (``limit`` overrides)."""
    from edgekit.targets.mcu import TEST_DATA_BUDGET

    x = model.test_x if model.test_x is not None else \
        (model.calib if model.calib is not None else model.example_inputs[0].numpy())
    y = model.test_y if model.test_x is not None else None
    per_sequence = int(np.prod(x.shape[1:])) * (1 if prog.dtype == "int8" else 4)
    per_step = max(sum(step_instructions(prog, profile).values()), 1.0)
    n = min(len(x), TEST_DATA_BUDGET // max(per_sequence, 1),
            int(MAX_EMULATED_INSTRUCTIONS // (per_step * prog.steps_per_sequence)))
    n = max(1, n if limit is None else min(n, int(limit)))
    x = np.ascontiguousarray(x[:n], dtype=np.float32)
    y = None if y is None else np.asarray(y[:n])
    dev = prog.qstream.quantize_input(x) if prog.dtype == "int8" else x
    return x, np.ascontiguousarray(dev), y


def build(model, profile, out: Path, options):
    """Build a recurrent model for a Cortex-M profile as a streaming step program: C sources, test firmware that
    runs the test sequences step by step, the host reference (reference.npz) and the build facts."""
    from edgekit import qrecurrent
    from edgekit.targets import BuildResult
    from edgekit.targets.mcu import (STACK_BYTES, _dtype, _use_ek, board_of, elf_report, layer_weight_bytes,
                                          streaming_codegen, toolchain, tvm_cells, tvm_kernels)
    from edgekit.targets.mcu.platforms.cortex_m.board import board_info, gcc_flags, link_flags

    dtype = _dtype(options)
    graph = model.deploy_graph
    sg = split(graph, profile.name)            # refuses unsupported models before any calibration
    check_supported(sg.head, dtype, profile.name)
    qs = lower_int8(model, sg, calibrated=True) if dtype == "int8" else None
    board = board_of(profile)
    info = board_info(board)
    cpu = info["cpu"]
    prog = build_step_program(graph, dtype, qs, _use_ek(options, dtype), cpu, profile.name)

    symbols: dict[int, str] = {}
    arg_shapes: dict[int, list[tuple]] = {}
    funcs, by_spec, shapes_of = {}, {}, {}
    for i, s in enumerate(prog.steps):
        if s.kind not in (CELL_KIND, "tvm"):
            continue
        if s.spec not in by_spec:
            sym = f"ek_tvm_{s.spec.op}_{len(by_spec)}"
            if s.kind == CELL_KIND:
                func = tvm_cells.build_kernel(s.spec, sym)
                params = [p.name for p in func.params]
                want = len(s.inputs) + len(s.consts) + len(s.params["outputs"])
                if len(params) != want or params[len(s.inputs):len(s.inputs) + len(s.consts)] != \
                        s.params["const_params"]:
                    raise AssertionError(f"layer '{s.layer}': kernel {s.spec.op} takes {params}, the program passes "
                                         f"{s.inputs} + {s.params['const_params']} + {s.params['outputs']}")
                shapes_of[s.spec] = [tuple(int(d) for d in p.shape) for p in func.params]
            else:
                func, _ = tvm_kernels.build_kernel(s.spec, sym)
            funcs[sym] = func
            by_spec[s.spec] = sym
        symbols[i] = s.symbol = by_spec[s.spec]
        if s.kind == CELL_KIND:
            arg_shapes[i] = shapes_of[s.spec]
    kernels_c = tvm_kernels.compile_kernels(funcs, cpu)
    sources = streaming_codegen.write_sources(prog, kernels_c, symbols, arg_shapes, out, cpu)

    x, x_dev, y = test_sequences(model, prog, profile, options.extra.get("test_sequences"))
    ref: dict = {"x": x, "x_device": x_dev}
    if dtype == "int8":
        expected, events = qrecurrent.run(qs, x_dev)
        ref.update(out_scale=np.float64(prog.output_q[0]), out_zp=np.int64(prog.output_q[1]))
        if prog.event_states:
            ref["events"] = events
        if model.test_x is not None and model.test_y is not None:
            ref["reference_accuracy"] = np.float64(
                (qrecurrent.predict(qs, model.test_x).argmax(-1) == model.test_y).mean())
            ref["float_accuracy"] = np.float64(model.accuracy())
    else:
        expected = model.predict(x)
        if model.test_x is not None and model.test_y is not None:
            ref["reference_accuracy"] = np.float64(model.accuracy())
        if prog.event_states:  # where an EGRU unit came within rounding of its threshold, float32 may decide otherwise
            ref["event_margin"] = qrecurrent.event_margins(sg, x)
    ref["expected"] = np.ascontiguousarray(expected)
    if y is not None:
        ref["y"] = y
    np.savez(out / "reference.npz", **ref)

    cflags = gcc_flags(board) + ["-DEDGEKIT_PROFILE_STEPS"]
    fw_sources = streaming_codegen.write_firmware(prog, sources, x_dev, board, cflags, link_flags("link.ld"),
                                                  info["qemu_machine"], STACK_BYTES)
    kinds = [s.symbol or s.kind for s in prog.steps]
    build_info = {
        "board": board, "qemu_machine": info["qemu_machine"], "cpu": cpu, "dtype": dtype,
        "kernels": "TVM (recurrent cells, head)" + (" + edgekit DSP micro-kernels" if any(
            s.kind.startswith("ek_") for s in prog.steps) else ""),
        "tvm_kernels": len(funcs), "steps": len(prog.steps), "arena_bytes": prog.arena_bytes,
        "state_bytes": prog.state_bytes,
        "step_layers": [s.layer for s in prog.steps], "step_macs": [s.macs for s in prog.steps],
        "step_kernels": kinds,
        "step_cost_terms": [list(step_instruction_terms(prog, s)) for s in prog.steps],
        "step_estimated_instructions": [round(call_instructions(prog, s, profile), 1) for s in prog.steps],
        "weight_bytes": prog.const_bytes, "layer_weights": layer_weight_bytes(prog),
        "stack_reserved_bytes": STACK_BYTES, "test_inputs": int(len(x)),
        "cflags": " ".join(cflags + toolchain.OPT_FLAGS),
        "streaming": {
            "steps_per_sequence": prog.steps_per_sequence, "input_shape": list(prog.tensors[prog.input].shape),
            "state_bytes": prog.state_bytes,
            "states": [{"name": st.name, "layer": st.layer, "kind": st.kind, "elements": st.size, "dtype": st.dtype,
                        "bytes": st.nbytes} for st in prog.states],
            "event_units": sum(st.size for st in prog.event_states),
            "cells": [{"layer": c.name, "op": c.op, "hidden": int(c.attrs["hidden_size"])} for c in sg.cells],
            "int8_scheme": None if qs is None else int8_scheme(qs),
        },
    }
    notes: list[str] = []
    elf = sources.firmware_dir / "firmware.elf"
    if toolchain.have_toolchain():
        toolchain.compile_firmware(sources.model_sources + fw_sources, sources.include_dirs + [sources.firmware_dir],
                                   cflags, link_flags(sources.firmware_dir / "link.ld"), sources.firmware_dir, elf)
        rep = elf_report(elf, sources.firmware_dir, prog)
        rep["elf_state_bytes"] = toolchain.elf_sizes(elf).symbols.get("ek_state", 0)
        build_info.update(rep)
        shutil.rmtree(sources.firmware_dir / "obj", ignore_errors=True)
    else:
        notes.append("arm-none-eabi-gcc not found: wrote the C sources only; " + toolchain.INSTALL_HINT)
        build_info["firmware"] = None
    from edgekit.analysis import analyze

    build_info["estimate"] = estimate(model, profile, prog)
    build_info["analysis"] = analyze(graph, dtype, 1 if dtype == "int8" else 4)
    build_info["schedule"] = prog.schedule
    build_info["patch"] = None
    files = [str(p.relative_to(out)) for p in sorted(out.rglob("*")) if p.is_file()]
    return BuildResult(files, build_info, notes + prog.notes)


def int8_scheme(qs) -> dict:
    """What the int8 build stores and computes, per layer, for the report."""
    layers = []
    for qc in qs.cells:
        row = {"layer": qc.node.name, "op": qc.op, "weights": "int8, per row", "accumulator": "int32",
               "state": {k: f"int16 Q{f}" for k, f in qc.frac.items() if k != "u"},
               "gates": "Q4.11 -> sigmoid/tanh tables (513 x int16, interpolated) -> Q15",
               "input": f"{qc.x_dtype} (zero point {qc.x_zp})"}
        if qc.op == "lmu":
            row["memory_matrix"] = f"int16 Q{qc.q['a_frac']}, int64 accumulator"
            row["u"] = f"int16 Q{qc.frac['u']}"
        layers.append(row)
    return {"layers": layers, "head_input": "int8 (requantized from the last layer's Q15 output)"}
