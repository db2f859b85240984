"""Conv models over a time axis on microcontrollers as streaming step programs: one call per new frame, per-layer
caches in ``ek_state`` instead of recomputing the window.

Where it sits: inside the MCU target, next to streaming.py (recurrent step programs) and program.py (whose builder
makes every kernel call here). edgekit/convstream.py plans the stream — which layer reads which cache, when each
cache fires, the running pool — and :func:`build_conv_step_program` turns its step graph into a StepProgram:

* each ``time_cache`` is a state buffer [rows, F, C] (NHWC rows) that the window layer's kernel reads in place; a
  ``cache_push`` call shifts it by one row, appends the new row and counts down to its next firing, setting its bit
  in ``ek_fired``
* every other call carries a *guard*: the cache bits that must be set for it to run (the layers after a time stride
  run on every second frame, and so on), so a step costs only what the new frame makes computable
* the global pool over time is a ``running_pool`` call: a ring of the last T' row sums (int32 in int8 builds) in
  ``ek_state``, summed and requantized like the windowed model's pool
* int8: the windowed model's integer layers (edgekit/qgraph.py) on the same rows, so the output after a window's
  last frame equals the windowed integer reference bit for bit (for causal models; convstream.py says why)
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgekit.analysis import macs_of
from edgekit.convstream import StreamPlan
from edgekit.errors import UnsupportedError
from edgekit.targets.mcu.program import StateBuffer, Step, Tensor, _Builder, check_supported, nhwc
from edgekit.targets.mcu.streaming import StepProgram, plan_step_program

PUSH_KIND = "cache_push"
POOL_KIND = "running_pool"
MAX_CACHES = 32  # one bit each in ek_fired


@dataclass
class ConvStepProgram(StepProgram):
    """A StepProgram of a conv model: ``stream`` is its plan; ``output_guard`` the gate bits that mark a new output."""

    stream: StreamPlan | None = None
    output_guard: tuple[int, ...] = ()

    @property
    def flushes(self) -> bool:
        """The model looks ahead: edgekit_model_flush() ends a window (each push step's ``flush_rows``)."""
        return self.stream is not None and not self.stream.causal


class _ConvStepBuilder(_Builder):
    def __init__(self, sp: StreamPlan, dtype: str, qg, use_ek: bool, cpu: str, platform=None):
        super().__init__(sp.step, dtype, qg, use_ek, cpu, platform)
        self.sp = sp
        self.states: list[StateBuffer] = []
        self.gate = {name: i for i, name in enumerate(sp.caches)}
        self.state_end = 0

    def state(self, name: str, layer: str, kind: str, size: int, dtype: str, init: float = 0) -> StateBuffer:
        st = StateBuffer(name, layer, kind, int(size), dtype, new="", offset=self.state_end, init=init)
        self.states.append(st)
        self.state_end += -(-st.nbytes // 4) * 4
        return st

    def guard_of(self, node: str) -> tuple[int, ...]:
        return tuple(sorted(self.gate[c] for c in self.sp.guards.get(node, ())))

    def rate_of(self, guard: tuple[int, ...]) -> float:
        caches = list(self.sp.caches.values())
        return float(1.0 / np.prod([caches[g].period for g in guard])) if guard else 1.0

    def cache(self, n) -> None:
        c = self.sp.caches[n.name]
        shape = nhwc(n.shape)  # [1, rows, F, C]
        if len(n.shape) == 3:  # a Conv1d model's [1, C, rows]: kept [1, rows, 1, C], as its convs read it (as_image)
            shape = (1, n.shape[2], 1, n.shape[1])
            self.nlc.add(n.name)
        if self.dtype == "int8":
            init = -128 if c.max_pool else self.q(n.name).out_zp
        else:
            init = float("-inf") if c.max_pool else 0.0
        st = self.state(n.name, c.layer, "cache", int(np.prod(shape)), self.dtype, init)
        self.tensors[n.name] = Tensor(n.name, shape, self.dtype, state_offset=st.offset)
        counter = self.state(f"{n.name}.countdown", c.layer, "countdown", 1, "int32", c.wait)
        row_bytes = int(np.prod(shape[2:])) * (1 if self.dtype == "int8" else 4)
        guard = self.guard_of(c.source)
        self.steps.append(Step(n.name, PUSH_KIND, [n.inputs[0]], [], n.name, guard=guard, rate=self.rate_of(guard),
                               params={"row_bytes": row_bytes, "rows": c.rows, "gate": self.gate[n.name],
                                       "period": c.period, "countdown": counter.offset, "cache": st.offset,
                                       "flush_rows": c.flush_rows, "pad": init}))

    def running_pool(self, n) -> None:
        p = self.sp.pools[n.name]
        acc = "int32" if self.dtype == "int8" else "float32"
        ring = self.state(f"{n.name}.ring", n.name, "ring", p.rows * p.channels, acc)
        pos = self.state(f"{n.name}.pos", n.name, "position", 1, "int32")
        out = self.add_tensor(n.name, nhwc(n.shape))
        params = {"rows": p.rows, "channels": p.channels, "inner": p.inner, "ring": ring.offset, "pos": pos.offset}
        if self.dtype == "int8":  # the window's total, updated by each new row (exact in integers)
            params["total"] = self.state(f"{n.name}.total", n.name, "total", p.channels, "int32").offset
            qn = self.q(n.name)
            params.update(in_zp=int(qn.q["in_zp"]), mult=int(qn.q["mult"]), shift=int(qn.q["shift"]),
                          out_zp=int(qn.out_zp))
        guard = self.guard_of(n.name)
        self.steps.append(Step(n.name, POOL_KIND, [n.inputs[0]], [], out.name, guard=guard,
                               rate=self.rate_of(guard), params=params))

    def node(self, n) -> None:
        before = len(self.steps)
        if n.op == "input":
            self.add_tensor(n.name, nhwc(n.shape))
            return
        if n.op == "time_cache":
            self.cache(n)
            return
        if n.op == "running_pool":
            self.running_pool(n)
            return
        if not self.layer(n, macs_of(n, self.g)):
            raise UnsupportedError(f"layer '{n.name}': '{n.op}' is not supported in a streaming step program")
        guard = self.guard_of(n.name)
        for s in self.steps[before:]:
            s.guard, s.rate = guard, self.rate_of(guard)


def build_conv_step_program(sp: StreamPlan, dtype: str, qg=None, use_ek: bool = False, cpu: str = "cortex-m7",
                            target: str = "cortex-m", platform=None) -> ConvStepProgram:
    """The planned step program of the stream ``sp`` (int8: with ``qg``, the lowered *windowed* graph)."""
    from edgekit.convstream import step_qgraph

    if len(sp.caches) > MAX_CACHES:
        raise UnsupportedError(f"model '{sp.graph.name}' has {len(sp.caches)} layers with extent in time; a streaming "
                               f"step program on {target} keeps at most {MAX_CACHES}")
    check_supported(sp.graph, dtype, target)
    step_qg = step_qgraph(sp, qg) if qg is not None else None
    b = _ConvStepBuilder(sp, dtype, step_qg, use_ek, cpu, platform)
    for n in sp.step.nodes:
        b.node(n)
    out = sp.step.outputs[0]
    prog = ConvStepProgram(sp.graph.name, dtype, b.tensors, b.consts, b.steps, sp.step.inputs[0].name, out,
                           notes=b.notes + list(sp.notes), states=b.states, steps_per_sequence=sp.frames,
                           stream=sp, output_guard=b.guard_of(out))
    if step_qg is not None:
        prog.input_q = (step_qg.input.out_scale, step_qg.input.out_zp)
        prog.output_q = (step_qg.output().out_scale, step_qg.output().out_zp)
    plan_step_program(prog)
    prog.schedule = {"reason": f"streaming step program: {len(sp.caches)} cached layer(s), one call per new frame "
                               f"(an output every {sp.hop_frames} frame(s)), state {prog.state_bytes:,} B in ek_state",
                     "per_layer_arena_bytes": prog.arena_bytes, "unpatched_timeline": None}
    return prog

