"""Recurrent models on microcontrollers as streaming step programs: one call per input sample, the state kept in
between.

Where it sits: inside the MCU target, next to program.py (a StepProgram is a Program whose call list runs once per
sample). A deployment graph with recurrent layers (gru, lstm,
lmu, egru) over a sequence [1, T, I] is split by edgekit/stepgraph.py into cells, the last-step selection and a
head; :func:`build_step_program` turns that into a :class:`StepProgram`:

* the input is one sample x_t [1, I] in the arena; the head's output is the model's output after this step
* each layer's state (h; h and c; y and c; h and m) lives in ``ek_state``, a static area outside the arena that
  ``edgekit_model_reset()`` zeroes; the cell kernels (tvm_cells.py) read it and write the new state into the arena,
  the head and the next layer read the new output there, and the step ends by copying the new state into ek_state
* the EGRU's recurrent product runs event-driven (only the columns of units that fired at the previous step)
* int8: edgekit/qrecurrent.py's integer cells (int8 weights, int16 state), the head in int8 as for any model

The pipeline (pipeline.py) plans and builds it like any program (codegen.py, the one template set);
runtimes/mcu.py measures instructions per step.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgekit.analysis import macs_of
from edgekit.errors import UnsupportedError
from edgekit.graph import ACTIVATIONS
from edgekit.memplan import Buffer, plan_arena
from edgekit.stepgraph import STATE_KINDS, StepGraph, split, state_size
from edgekit.targets.mcu.kernel_spec import KernelSpec
from edgekit.targets.mcu.program import Program, StateBuffer, Step, Tensor, _Builder, check_supported, root_of

# What the head after the recurrent layers may hold: it reads one vector per step.
HEAD_OPS = ("linear", "add", "mul", *ACTIVATIONS, "concat", "reshape", "flatten", "select")
CELL_KIND = "tvm_cell"      # a recurrent kernel from tvm_cells.py (may write several outputs)
COMMIT_KIND = "commit"      # copy a new state from the arena into ek_state


@dataclass
class StepProgram(Program):
    """A Program run once per input sample, with persistent ``states`` (see the module docstring)."""

    step_graph: StepGraph | None = None
    qstream: object | None = None


def cell_macs(node) -> int:
    """Multiply-accumulates of one step of a recurrent layer (EGRU: dense, all units active)."""
    a = node.attrs
    i, h = a["input_size"], a["hidden_size"]
    if node.op == "trace":
        return h
    if node.op in ("gru", "egru"):
        return 3 * h * (i + h)
    if node.op == "lstm":
        return 4 * h * (i + h)
    if node.op in ("s4d", "selective_ssm"):
        from edgekit.layers.ssm import ssm_step_macs

        return ssm_step_macs(node)
    d = a["memory_size"]
    return (i + h + d) + d * d + d + h * (i + h + d)


class _StepBuilder(_Builder):
    """program._Builder for the head, plus the recurrent cells, their states and commits."""

    def __init__(self, sg: StepGraph, dtype: str, qs, use_ek: bool, cpu: str, platform=None):
        super().__init__(sg.head, dtype, qs.head if qs is not None else None, use_ek, cpu, platform)
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
        if node.op in ("s4d", "selective_ssm"):
            attrs["state"] = int(node.attrs["state_size"])
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
        if op == "trace":
            self.cell_step(name, "trace_cell", {**attrs, "decay": float(node.attrs["decay"])}, [x, st["h"].name], {},
                           [st["h"].new], H)
            return
        if op in ("gru", "lstm", "egru"):
            G = p["weight_ih"].shape[0]
            p.setdefault("bias_ih", np.zeros(G, np.float32))
            p.setdefault("bias_hh", np.zeros(G, np.float32))
        if op in ("s4d", "selective_ssm"):
            H, I, N = attrs["hidden"], attrs["inputs"], attrs["state"]
            u_macs = H * I
            if op == "s4d":
                state = {"w_in": p["w_in"], "b_in": p["b_in"], "a_bar": p["a_bar"], "b_bar": p["b_bar"]}
                out = {"w_in": p["w_in"], "b_in": p["b_in"], "C": p["C"], "D": p["D"]}
                kernels, extra = ("s4d_state", "s4d_out"), (0, 0)
            else:
                state = {"w_in": p["w_in"], "b_in": p["b_in"], "w_dt": p["w_dt"], "b_dt": p["b_dt"], "w_b": p["w_b"],
                         "neg_a": -np.exp(p["A_log"])}
                out = {"w_in": p["w_in"], "b_in": p["b_in"], "w_c": p["w_c"], "D": p["D"]}
                kernels, extra = ("selective_state", "selective_out"), (H * H + N * H, N * H)
            self.cell_step(name, kernels[0], attrs, [x, st["s"].name], state, [st["s"].new],
                           u_macs + 2 * H * N + extra[0])
            self.cell_step(name, kernels[1], attrs, [x, st["s"].new], out, [st["h"].new],
                           u_macs + H * N + H + extra[1], prefix="o.")
            return
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

        if op == "s4d":
            attrs = {**attrs, **{f"shift_{t}": int(q[f"shift_{t}"]) for t in ("u", "b", "c", "d")}}
            H, I, N = attrs["hidden"], attrs["inputs"], attrs["state"]
            u = {"w_in": q["w_in"], "b_in": q["b_in"], "mult_u": q["mult_u"]}
            self.cell_step(name, "s4d_state", attrs, [x, st["s"].name],
                           {**u, "a_bar": q["a"], "b_bar": q["b"], "mult_b": q["mult_b"]}, [st["s"].new],
                           H * I + 2 * H * N)
            self.cell_step(name, "s4d_out", attrs, [x, st["s"].new],
                           {**u, "C": q["c"], "mult_c": q["mult_c"], "D": q["d"], "mult_d": q["mult_d"],
                            "tanh_lut": luts["tanh_lut"]}, [st["h"].new], H * I + H * N + H, prefix="o.")
            return
        if op == "selective_ssm":
            from edgekit.qrecurrent import EXP_TABLE, SOFTPLUS_TABLE

            f = qc.frac
            attrs = {**attrs, "shift_u": int(q["shift_u"]), "shift_dt": int(q["shift_dt"]),
                     "shift_bt": int(q["shift_bt"]), "shift_ct": int(q["shift_ct"]), "shift_d": int(q["shift_d"]),
                     "a_frac": int(q["a_frac"]), "shift_g": 11 + f["u"] - f["g"],
                     "shift_s": f["g"] + f["bt"] - f["s"], "shift_y": f["ct"] + f["s"] - 11}
            H, I, N = attrs["hidden"], attrs["inputs"], attrs["state"]
            u = {"w_in": q["w_in"], "b_in": q["b_in"], "mult_u": q["mult_u"]}
            self.cell_step(name, "selective_state", attrs, [x, st["s"].name],
                           {**u, "w_dt": q["w_dt"], "b_dt": q["b_dt"], "mult_dt": q["mult_dt"], "w_b": q["w_b"],
                            "mult_bt": q["mult_bt"], "neg_a": q["neg_a"], "softplus_lut": SOFTPLUS_TABLE,
                            "exp_lut": EXP_TABLE}, [st["s"].new], H * I + H * H + N * H + 3 * H * N)
            self.cell_step(name, "selective_out", attrs, [x, st["s"].new],
                           {**u, "w_c": q["w_c"], "mult_ct": q["mult_ct"], "D": q["d"], "mult_d": q["mult_d"],
                            "tanh_lut": luts["tanh_lut"]}, [st["h"].new], H * I + N * H + H * N + H, prefix="o.")
            return
        if op == "trace":
            self.cell_step(name, "trace_cell", {**attrs, "k": int(q["k"])}, [x, st["h"].name], {}, [st["h"].new], H)
            return
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
            if n.op not in HEAD_OPS or not self.layer(n, macs_of(n, self.g)):
                raise UnsupportedError(f"layer '{n.name}': '{n.op}' after a recurrent layer is not supported on "
                                       "Cortex-M (the head reads one vector per step)")


def _placeholder_quant(graph):
    """int8 parameters with placeholder scales: enough to plan memory and count bytes without calibrating."""
    from edgekit.quantparams import QuantParams, TensorQ, weight_scales

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
                       target: str = "cortex-m", platform=None) -> StepProgram:
    """The planned step program of a recurrent deployment ``graph`` (int8: with the QStream ``qs``)."""
    sg = split(graph, target)
    check_supported(sg.head, dtype, target)
    b = _StepBuilder(sg, dtype, qs, use_ek, cpu, platform)
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
    buffers = [Buffer(n, prog.tensors[n].nbytes, first[n], last[n]) for n in first
               if prog.tensors[n].state_offset is None]  # (a conv stream's caches live in ek_state)
    for i, s in enumerate(prog.steps):
        if s.scratch_bytes:
            buffers.append(Buffer(f"{s.layer}#scratch{i}", s.scratch_bytes, i, i))
    prog.plan = plan_arena(buffers, alignment=8)
    for t in prog.tensors.values():
        t.offset = prog.plan.offsets.get(root_of(prog, t.name), 0)


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
