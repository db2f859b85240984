"""Spiking networks as an edgekit layer: populations of neurons joined by synaptic connections, run in discrete steps.

Where it sits: beside the LMU and EGRU layers. ``edgekit.converters.to_spiking`` builds a :class:`SpikingNetwork`
from a trained ANN and fine-tunes it; ``targets/neuromorphic`` exports its description (:meth:`SpikingNetwork.spec`)
as NIR and maps it onto Loihi 2's integer formats (edgekit/layers/loihi_format.py); ``runtimes/neuromorphic.py``
runs that mapping in Lava. Importing this module registers the network with the torch.fx importer as one graph node
``"snn"``, so ``Model.analyze()`` and the estimators see it.

A network is a list of populations and a list of connections; the description is plain data (JSON plus arrays).

Populations (one state vector each, of a fixed ``shape``):

* ``input``   the real-valued input, sent as graded values: the same image every step (``input_mode='static'``, direct
  encoding) or one sequence element per step (``'sequence'``, zeros after the sequence ends)
* ``lif``     leaky integrate-and-fire neurons (snntorch ``Leaky``, reset to zero — Loihi's LIF)::

      v[t] = clamp(β · v[t−1] + I[t] + b, ±v_max)        I[t] = Σ_connections W · s_source[t − delay]
      s[t] = 1 if v[t] > ϑ else 0,   v[t] = 0 where s[t] = 1

  β = 1 is the non-leaky integrate-and-fire neuron of ANN-to-SNN rate conversion; v_max = 32 ϑ is Loihi's 24-bit
  membrane range at edgekit's fixed-point unit (see loihi_format.py)
* ``graded``  non-spiking linear state that sends its value every step (a graded spike): ``x[t] = I[t]``. With a
  recurrent connection to itself it is a linear state-space system — the LMU memory m[t] = Ā m[t−1] + B̄ u[t−1]
* ``readout`` the output: ``logits = mean of I[t] over the last R steps + b`` (a non-spiking integrator read once
  at the end; R = ``readout_steps``, all steps unless set — a sequence model reads the end of the sequence)

Connections: ``target += ops(Σ sources)`` — the sources (same shape) are summed first, which is how residual paths
join; ``ops`` is a chain of linear operators of which exactly one holds the weights (``linear``, ``conv2d``,
``scale``) and the others are fixed (``avgpool2d``, ``flatten``, ``crop`` — keep rows ``start:stop`` of one axis of
a [C, H, W] value, e.g. the frames a causal convolution keeps). Every connection delivers what its sources sent
``delay`` steps earlier (``delay >= 1``): Loihi's timing, where a synapse hands its input to the neuron one step later,
so a network here and its Lava mapping are the same discrete-time system. A temporal convolution is several
connections from one source with delays 1, 2, 3 ...

Cost counted while running (``SpikingNetwork.run(..., record=True)``): spikes per population, and synaptic
operations per connection = Σ over sent spikes of the sending neuron's fan-out (synapses with a non-zero weight);
graded values count like spikes when they are non-zero (Loihi 2 sends a graded spike only then).
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import snntorch
import torch
import torch.nn.functional as F
from snntorch import surrogate
from torch import nn

POPULATION_KINDS = ("input", "lif", "graded", "readout")
WEIGHT_OPS = ("linear", "conv2d", "scale")
FIXED_OPS = ("avgpool2d", "flatten", "crop")
# Source neurons per chunk when a connection's synapse matrix is built (sparse, chunk by chunk: a conv between two
# 8,000-neuron populations would be a 512 MB dense matrix).
MATRIX_CHUNK = 512
# Loihi's 24-bit membrane at edgekit's current unit ϑ · 2**-12 (loihi_format.UNIT_EXP_LIF): ±(2**23 − 1) / 64 units.
V_MAX_THRESHOLDS = (2 ** 23 - 1) / 64 / 2 ** 12


@dataclass(frozen=True)
class PopulationSpec:
    """One population. ``beta`` and ``threshold`` are one value per population (as on Loihi); ``bias`` says whether it
    has a bias current per neuron (per channel for a [C, H, W] population). ``unit_exp`` (input and graded
    populations) fixes the resolution of the values it sends in fixed point: one step is 2**-unit_exp."""

    name: str
    kind: str
    shape: tuple[int, ...]
    beta: float = 1.0
    threshold: float = 1.0
    bias: bool = False
    unit_exp: int | None = None

    def __post_init__(self):
        if self.kind not in POPULATION_KINDS:
            raise ValueError(f"population '{self.name}': kind must be one of {POPULATION_KINDS}, not '{self.kind}'")
        object.__setattr__(self, "shape", tuple(int(d) for d in self.shape))
        if self.kind == "lif" and not (0.0 <= self.beta <= 1.0 and self.threshold > 0):
            raise ValueError(f"population '{self.name}': needs 0 <= beta <= 1 and threshold > 0")

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def bias_shape(self) -> tuple[int, ...]:
        return (self.shape[0],) + (1,) * (len(self.shape) - 1) if len(self.shape) > 1 else self.shape


@dataclass(frozen=True)
class ConnectionSpec:
    """One synaptic connection: ``target += ops(sum of sources)`` with the sources' values from ``delay`` steps ago.

    ``ops`` is a tuple of dicts, e.g. ``({"op": "avgpool2d", "kernel": [2, 2]}, {"op": "conv2d", "stride": [1, 1],
    "padding": [1, 1]})``; the op holding the weights is the one in WEIGHT_OPS. ``trainable`` False keeps the weight
    fixed (the LMU's Ā, B̄)."""

    name: str
    sources: tuple[str, ...]
    target: str
    ops: tuple[dict, ...]
    delay: int = 1
    trainable: bool = True
    truncate_gradient: bool = False

    def __post_init__(self):
        object.__setattr__(self, "sources", tuple(self.sources))
        object.__setattr__(self, "ops", tuple(dict(o) for o in self.ops))
        kinds = [o["op"] for o in self.ops]
        if sum(k in WEIGHT_OPS for k in kinds) != 1 or any(k not in WEIGHT_OPS + FIXED_OPS for k in kinds):
            raise ValueError(f"connection '{self.name}': ops {kinds} must hold exactly one of {WEIGHT_OPS} "
                             f"and otherwise only {FIXED_OPS}")
        if self.delay < 1:
            raise ValueError(f"connection '{self.name}': delay must be >= 1 step (got {self.delay})")

    @property
    def weight_op(self) -> dict:
        return next(o for o in self.ops if o["op"] in WEIGHT_OPS)


def _apply_ops(ops: tuple[dict, ...], x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    for o in ops:
        kind = o["op"]
        if kind == "linear":
            x = F.linear(x, weight)
        elif kind == "conv2d":
            x = F.conv2d(x, weight, None, tuple(o.get("stride", (1, 1))), tuple(o.get("padding", (0, 0))),
                         tuple(o.get("dilation", (1, 1))), int(o.get("groups", 1)))
        elif kind == "scale":
            x = x * weight
        elif kind == "avgpool2d":
            k = tuple(o["kernel"])
            x = F.avg_pool2d(x, k, tuple(o.get("stride", k)))
        elif kind == "flatten":
            x = x.flatten(1)
        elif kind == "crop":
            x = x.narrow(int(o["axis"]) + 1, int(o["start"]), int(o["stop"]) - int(o["start"]))
    return x


class Connection(nn.Module):
    """The module of a :class:`ConnectionSpec`: holds its weight (a Parameter, or a buffer when not trainable)."""

    def __init__(self, spec: ConnectionSpec, weight: np.ndarray | torch.Tensor):
        super().__init__()
        self.spec = spec
        w = torch.as_tensor(np.asarray(weight, np.float32)).clone()
        if spec.trainable:
            self.weight = nn.Parameter(w)
        else:
            self.register_buffer("weight", w)

    def forward(self, x: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        return _apply_ops(self.spec.ops, x, self.weight if weight is None else weight)

    def matrix(self, in_shape: tuple[int, ...]):
        """The connection as one sparse matrix [target size, source size] (scipy CSR, float64; what a Loihi core
        stores as synapses), built ``MATRIX_CHUNK`` source neurons at a time."""
        from scipy.sparse import csc_matrix, hstack

        n = math.prod(in_shape)
        weight = self.weight.detach().double()
        parts = []
        with torch.no_grad():
            for start in range(0, n, MATRIX_CHUNK):
                k = min(MATRIX_CHUNK, n - start)
                eye = torch.zeros(k, n, dtype=torch.float64)
                eye[torch.arange(k), torch.arange(start, start + k)] = 1.0
                out = _apply_ops(self.spec.ops, eye.reshape((k,) + tuple(in_shape)), weight)
                parts.append(csc_matrix(out.reshape(k, -1).T.numpy()))
        return hstack(parts, format="csr")


class _Saturate:
    """Clamp a membrane to ±v_max (a class, not a lambda, so networks can be pickled)."""

    def __init__(self, v_max: float):
        self.v_max = float(v_max)

    def __call__(self, v: torch.Tensor) -> torch.Tensor:
        return v.clamp(-self.v_max, self.v_max)


class Population(nn.Module):
    """The module of a :class:`PopulationSpec`: its bias and, for ``lif``, the snntorch neuron."""

    def __init__(self, spec: PopulationSpec, bias: np.ndarray | None = None):
        super().__init__()
        self.spec = spec
        if spec.bias:
            b = np.zeros(spec.bias_shape, np.float32) if bias is None else np.asarray(bias, np.float32)
            self.bias = nn.Parameter(torch.from_numpy(b.reshape(spec.bias_shape).copy()))
        else:
            self.bias = None
        if spec.kind == "lif":
            # snntorch integrates and fires (state_quant clamps the membrane to the 24-bit range before the
            # threshold test, as Loihi saturates it); the reset to zero in the firing step is applied in step()
            # with the spike detached, so no gradient flows through the reset (as LMUFormer's detach_reset).
            self.neuron = snntorch.Leaky(beta=spec.beta, threshold=spec.threshold, spike_grad=surrogate.atan(),
                                         reset_mechanism="none",
                                         state_quant=_Saturate(V_MAX_THRESHOLDS * spec.threshold))

    def step(self, current: torch.Tensor, mem: torch.Tensor,
             grid_exp: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """One LIF step: v = clamp(β v + I), s = v > ϑ, v = 0 where s. Returns (s, v).

        ``grid_exp``: the membrane lives on the grid ϑ · 2**-grid_exp and the decay is the chip's 12-bit multiply
        truncated toward zero (Lava's bit-accurate LIF), as the measuring run of a network on Loihi's grid uses."""
        if grid_exp is not None and self.spec.beta < 1.0:
            unit = self.spec.threshold * 2.0 ** -grid_exp
            keep = 4096 - round((1.0 - self.spec.beta) * 4096)
            units = torch.round(mem / unit) * keep
            v = self.neuron.state_quant(torch.sign(units) * torch.div(units.abs(), 4096, rounding_mode="floor")
                                        * unit + current)
            spk = self.neuron.fire(v).to(current.dtype)
            return spk, v * (1.0 - spk.detach())
        spk, mem = self.neuron(current, mem)
        spk = spk.to(current.dtype)  # snntorch's surrogate returns float32 spikes whatever the membrane's dtype
        return spk, mem * (1.0 - spk.detach())


@dataclass
class RunRecord:
    """What one run counted, per input sample: spikes (or non-zero graded values) per population and synaptic
    operations per connection; plus the population outputs of every step when asked."""

    spikes: dict[str, np.ndarray] = field(default_factory=dict)        # name -> [N]
    neuron_spikes: dict[str, np.ndarray] = field(default_factory=dict)  # name -> [N, size] (summed over steps)
    sops: dict[str, np.ndarray] = field(default_factory=dict)          # connection -> [N]
    trace: dict[str, np.ndarray] | None = None                         # name -> [N, steps, size]
    currents: dict[str, np.ndarray] | None = None                      # name -> [N, steps, size] input incl. bias


class SpikingNetwork(nn.Module):
    """A spiking network (see the module docstring). ``forward(x)`` runs ``steps`` steps and returns the readout.

    ``x`` is [N, *input shape] for ``input_mode='static'`` and [N, L, *input shape] for ``'sequence'``.
    """

    def __init__(self, populations: list[PopulationSpec], connections: list[tuple[ConnectionSpec, np.ndarray]],
                 steps: int, input_mode: str = "static", biases: dict[str, np.ndarray] | None = None,
                 info: dict[str, Any] | None = None, readout_steps: int | None = None):
        super().__init__()
        if input_mode not in ("static", "sequence"):
            raise ValueError(f"input_mode must be 'static' or 'sequence', not {input_mode!r}")
        names = [p.name for p in populations]
        if len(set(names)) != len(names):
            raise ValueError(f"population names repeat: {names}")
        inputs = [p for p in populations if p.kind == "input"]
        readouts = [p for p in populations if p.kind == "readout"]
        if len(inputs) != 1 or len(readouts) != 1:
            raise ValueError("a spiking network has exactly one input and one readout population")
        self.steps, self.input_mode = int(steps), input_mode
        self.readout_steps = int(readout_steps or steps)
        if not 1 <= self.readout_steps <= self.steps:
            raise ValueError(f"readout_steps must be in 1..{self.steps}")
        self.info = dict(info or {})
        self.populations = nn.ModuleDict({p.name: Population(p, (biases or {}).get(p.name)) for p in populations})
        self.connections = nn.ModuleDict()
        for spec, weight in connections:
            for s in spec.sources + (spec.target,):
                if s not in self.populations:
                    raise ValueError(f"connection '{spec.name}' names an unknown population '{s}'")
            if self.populations[spec.target].spec.kind == "input":
                raise ValueError(f"connection '{spec.name}' targets the input population")
            self.connections[spec.name] = Connection(spec, weight)
        self.input_name = inputs[0].name
        self.readout_name = readouts[0].name
        self.max_delay = max((c.spec.delay for c in self.connections.values()), default=1)
        self._fanout: dict[str, np.ndarray] | None = None
        self._last_measure: tuple | None = None  # (key, logits, RunRecord) of the last measure()
        # Set by loihi_format.fake_quantize: (network) -> (weights, biases) on the fixed-point grid, with
        # straight-through gradients, for training on the grid the chip uses.
        self.quantizer = None
        # Set by loihi_format.snap / fake_quantize: (network, connection, step sum, weight) -> the step sum as the
        # chip's integer arithmetic leaves it (Lava floors sums finer than the target's unit), so the torch run and
        # the Lava run of a network on the grid compute the same numbers.
        self.sum_rounding = None
        # Set on the measuring copy of a network on Loihi's grid (measure): the LIF membrane grid exponent, so that
        # leaky decays truncate as on the chip.
        self.membrane_grid_exp: int | None = None

    # ---- description ------------------------------------------------------------------------------------------------
    @property
    def population_specs(self) -> list[PopulationSpec]:
        return [p.spec for p in self.populations.values()]

    @property
    def connection_specs(self) -> list[ConnectionSpec]:
        return [c.spec for c in self.connections.values()]

    def incoming(self, name: str) -> list[Connection]:
        return [c for c in self.connections.values() if c.spec.target == name]

    def spec(self) -> tuple[dict, dict[str, np.ndarray]]:
        """The network as JSON-able data plus named arrays ('<connection>.weight', '<population>.bias')."""
        desc = {"format": "edgekit-snn/1", "steps": self.steps, "readout_steps": self.readout_steps,
                "input_mode": self.input_mode, "info": self.info,
                "fixed_point": "loihi2" if self.sum_rounding is not None else None,
                "populations": [dataclasses.asdict(p) for p in self.population_specs],
                "connections": [dataclasses.asdict(c) for c in self.connection_specs]}
        arrays = {f"{n}.weight": c.weight.detach().cpu().numpy().astype(np.float32) for n, c in self.connections.items()}
        for n, p in self.populations.items():
            if p.bias is not None:
                arrays[f"{n}.bias"] = p.bias.detach().cpu().numpy().astype(np.float32)
        return json.loads(json.dumps(desc)), arrays

    @classmethod
    def from_spec(cls, desc: dict, arrays: dict[str, np.ndarray]) -> "SpikingNetwork":
        pops = [PopulationSpec(**{**p, "shape": tuple(p["shape"])}) for p in desc["populations"]]
        conns = [(ConnectionSpec(**c), arrays[f"{c['name']}.weight"]) for c in desc["connections"]]
        biases = {p.name: arrays[f"{p.name}.bias"] for p in pops if p.bias}
        net = cls(pops, conns, desc["steps"], desc["input_mode"], biases, desc.get("info"),
                  desc.get("readout_steps"))
        if desc.get("fixed_point") == "loihi2":
            from edgekit.layers import loihi_format

            net.sum_rounding = loihi_format.floor_sum
        return net

    def copy(self) -> "SpikingNetwork":
        """An independent network with the same description, numbers and training hooks (rebuilt from
        :meth:`spec`: snntorch neurons keep their last membrane as a buffer, which deepcopy cannot copy mid-graph)."""
        twin = SpikingNetwork.from_spec(*self.spec())
        twin.quantizer, twin.sum_rounding = self.quantizer, self.sum_rounding
        return twin

    def fan_out(self) -> dict[str, np.ndarray]:
        """Per connection, the synapses (non-zero weights) leaving each source neuron: [source size]."""
        if self._fanout is None:
            self._fanout = {}
            for n, c in self.connections.items():
                m = c.matrix(self.populations[c.spec.sources[0]].spec.shape)
                m.eliminate_zeros()
                self._fanout[n] = np.asarray(m.getnnz(axis=0)).astype(np.int64)
        return self._fanout

    def invalidate(self) -> None:
        """Forget cached fan-outs (call after changing weights)."""
        self._fanout = None

    # ---- running ----------------------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.run(x)[0]

    def quantize_input(self, x: torch.Tensor) -> torch.Tensor:
        """The input as the chip receives it: graded values on the input population's grid (8-bit payload)."""
        e = self.populations[self.input_name].spec.unit_exp
        if e is None:
            return x
        step = 2.0 ** -e
        return torch.clamp(torch.round(x / step), -127, 127) * step

    def _input_at(self, x: torch.Tensor, t: int) -> torch.Tensor:
        if self.input_mode == "static":
            return x
        if t < x.shape[1]:
            return x[:, t]
        return x.new_zeros((x.shape[0],) + tuple(x.shape[2:]))

    def measure(self, x: np.ndarray, batch_size: int = 128) -> tuple[np.ndarray, RunRecord]:
        """Readout and counts (per sample) on inputs ``x``, in eval mode without gradients.

        A network on a fixed-point grid runs in float64 here: its weights, inputs, biases and step sums are integer
        multiples of ϑ · 2**-18 (and of the graded units), which float64 adds exactly, so a membrane that lands
        exactly on its threshold does not spike — as on the chip — instead of tipping either way by float32
        rounding; leaky decays truncate as the chip's 12-bit multiply does (Population.step)."""
        key = self._measure_key(x)
        if self._last_measure is not None and self._last_measure[0] == key:  # e.g. activity, then the build's run
            return self._last_measure[1], self._last_measure[2]
        was = self.training
        self.eval()
        runner, dtype = self, np.float32
        if self.sum_rounding is not None:
            from edgekit.layers.loihi_format import LIF_UNIT_EXP, VOLTAGE_SHIFT

            runner, dtype = self.copy().double(), np.float64
            runner.membrane_grid_exp = LIF_UNIT_EXP + VOLTAGE_SHIFT
        outs, recs = [], []
        try:
            with torch.no_grad():
                for i in range(0, len(x), batch_size):
                    xb = torch.from_numpy(np.ascontiguousarray(x[i:i + batch_size], dtype))
                    y, r = runner.run(xb, record=True)
                    outs.append(y.numpy())
                    recs.append(r)
        finally:
            self.train(was)
        merged = RunRecord()
        for field_name in ("spikes", "neuron_spikes", "sops"):
            getattr(merged, field_name).update({k: np.concatenate([getattr(r, field_name)[k] for r in recs], 0)
                                                for k in getattr(recs[0], field_name)})
        logits = np.concatenate(outs, 0)
        self._last_measure = (key, logits, merged)
        return logits, merged

    def _measure_key(self, x: np.ndarray) -> str:
        """What a measurement depends on: the inputs, every weight, bias and the fixed-point mode."""
        import hashlib

        h = hashlib.blake2b(np.ascontiguousarray(x).tobytes(), digest_size=16)
        h.update(str((x.shape, x.dtype, self.sum_rounding is not None, self.quantizer is not None)).encode())
        for t in self.state_dict().values():
            h.update(t.detach().cpu().numpy().tobytes())
        return h.hexdigest()

    def run(self, x: torch.Tensor, record: bool = False, trace: bool = False,
            currents: bool = False) -> tuple[torch.Tensor, RunRecord | None]:
        """Simulate ``steps`` steps on a batch. Returns (readout [N, classes], counts when ``record``; with ``trace``
        also every step's outputs, with ``currents`` every step's input current of each population)."""
        record = record or trace or currents
        n = x.shape[0]
        x = self.quantize_input(x)
        pops = self.populations
        # history[name][d - 1] = what the population sent d steps ago
        history: dict[str, list[torch.Tensor]] = {name: [] for name in pops}
        zeros = {name: x.new_zeros((n,) + p.spec.shape) for name, p in pops.items()}
        mem = {name: zeros[name] for name, p in pops.items() if p.spec.kind == "lif"}
        readout = pops[self.readout_name]
        acc = x.new_zeros((n,) + readout.spec.shape)
        order = [name for name, p in pops.items() if p.spec.kind != "input"]
        incoming = {name: self.incoming(name) for name in order}
        static_cache: dict[str, torch.Tensor] = {}
        weights = {name: c.weight for name, c in self.connections.items()}
        biases = {name: p.bias for name, p in pops.items()}
        if self.quantizer is not None:
            weights, biases = self.quantizer(self)
        rec = RunRecord() if record else None
        counts = {name: x.new_zeros((n,) + p.spec.shape) for name, p in pops.items()} if record else None
        traces = {name: [] for name in pops} if trace else None
        inputs = {name: [] for name in pops} if currents else None

        def sent(name: str, delay: int) -> torch.Tensor:
            h = history[name]
            return h[delay - 1] if delay <= len(h) else zeros[name]

        for t in range(self.steps):
            out: dict[str, torch.Tensor] = {self.input_name: self._input_at(x, t)}
            for name in order:
                pop = pops[name]
                current = None
                for c in incoming[name]:
                    spec = c.spec
                    static_input = self.input_mode == "static" and spec.sources == (self.input_name,)
                    if static_input and t >= spec.delay and spec.name in static_cache:
                        y = static_cache[spec.name]
                    else:
                        src = sent(spec.sources[0], spec.delay)
                        for s in spec.sources[1:]:
                            src = src + sent(s, spec.delay)
                        if spec.truncate_gradient:
                            src = src.detach()
                        y = c(src, weights[spec.name])
                        if self.sum_rounding is not None:
                            y = self.sum_rounding(self, c, y, weights[spec.name])
                        if static_input and t >= spec.delay:
                            static_cache[spec.name] = y
                    current = y if current is None else current + y
                if current is None:
                    current = zeros[name]
                kind = pop.spec.kind
                if kind == "readout":
                    if t >= self.steps - self.readout_steps:
                        acc = acc + current
                    out[name] = current
                    continue
                if biases[name] is not None:
                    current = current + biases[name]
                if currents:
                    inputs[name].append(current.detach())
                if kind == "lif":
                    spk, mem[name] = pop.step(current, mem[name], self.membrane_grid_exp)
                    out[name] = spk
                else:  # graded
                    out[name] = current
            for name in pops:
                if name == self.readout_name:
                    continue
                history[name].insert(0, out[name])
                del history[name][self.max_delay:]
                if record:
                    counts[name] = counts[name] + (out[name] != 0).to(x.dtype)
                if trace:
                    traces[name].append(out[name].detach())
        logits = acc / self.readout_steps
        if biases[self.readout_name] is not None:
            logits = logits + biases[self.readout_name]
        if record:
            fan = self.fan_out()
            for name, p in pops.items():
                if name == self.readout_name:
                    continue
                per_neuron = counts[name].reshape(n, -1).detach().cpu().numpy()
                rec.neuron_spikes[name] = per_neuron
                rec.spikes[name] = per_neuron.sum(1)
            for cname, c in self.connections.items():
                rec.sops[cname] = sum(rec.neuron_spikes[s] @ fan[cname] for s in c.spec.sources)
            if trace:
                rec.trace = {k: torch.stack(v, 1).reshape(n, self.steps, -1).cpu().numpy()
                             for k, v in traces.items() if v}
            if currents:
                rec.currents = {k: torch.stack(v, 1).reshape(n, self.steps, -1).cpu().numpy()
                                for k, v in inputs.items() if v}
        return logits, rec

    def activity(self, x: np.ndarray, y: np.ndarray | None = None, batch_size: int = 128) -> dict[str, Any]:
        """Spike activity on inputs ``x`` (means per inference): per population spikes and firing rate (spikes /
        neurons / steps), per connection synapses and synaptic operations (spikes × fan-out), the totals — binary
        spikes and graded values apart — and the accuracy when labels ``y`` are given."""
        logits, rec = self.measure(x, batch_size)
        return summarize(self, rec, logits, y)

    def neuron_updates(self) -> int:
        """Neuron state updates per inference: every non-input neuron, every step (Loihi updates all compartments
        each time step)."""
        return sum(p.spec.size for p in self.populations.values() if p.spec.kind != "input") * self.steps


def summarize(net: SpikingNetwork, rec: RunRecord, logits: np.ndarray | None = None,
              y: np.ndarray | None = None) -> dict[str, Any]:
    """Means per inference of what ``rec`` counted (see :meth:`SpikingNetwork.activity`). A connection from the
    input of a static image computes its products once per image on a conventional core, so its
    ``macs_per_inference`` (the 45 nm MAC convention's first layer) is its synapse count; other graded connections
    cost one MAC per synaptic operation."""
    fan = net.fan_out()
    pops = {}
    for name, p in net.populations.items():
        if p.spec.kind == "readout":
            continue
        spikes = float(rec.spikes[name].mean())
        pops[name] = {"kind": p.spec.kind, "neurons": p.spec.size, "spikes_per_inference": spikes,
                      "firing_rate": spikes / p.spec.size / net.steps}
    conns = {}
    for name, c in net.connections.items():
        graded = net.populations[c.spec.sources[0]].spec.kind != "lif"
        sops = float(rec.sops[name].mean())
        entry = {"sources": list(c.spec.sources), "target": c.spec.target, "graded": graded,
                 "synapses": int(fan[name].sum()), "sops_per_inference": sops}
        if graded:
            static = net.input_mode == "static" and c.spec.sources == (net.input_name,)
            entry["macs_per_inference"] = float(fan[name].sum()) if static else sops
        conns[name] = entry
    out = {"samples": int(len(next(iter(rec.spikes.values())))), "steps": net.steps, "populations": pops,
           "connections": conns,
           "spikes_per_inference": sum(v["spikes_per_inference"] for v in pops.values() if v["kind"] == "lif"),
           "synaptic_ops_per_inference": sum(v["sops_per_inference"] for v in conns.values() if not v["graded"]),
           "graded_ops_per_inference": sum(v["sops_per_inference"] for v in conns.values() if v["graded"]),
           "graded_macs_per_inference": sum(v.get("macs_per_inference", 0.0) for v in conns.values()),
           "neuron_updates_per_inference": net.neuron_updates()}
    if logits is not None and y is not None:
        out["accuracy"] = float((np.asarray(logits).argmax(-1) == np.asarray(y)).mean())
    return out


class SpikingClassifier(nn.Module):
    """The module a converted Model holds: one :class:`SpikingNetwork` (kept as a child so the torch.fx importer sees
    it as one leaf layer)."""

    def __init__(self, network: SpikingNetwork):
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x)


def find_network(module: nn.Module | None) -> SpikingNetwork | None:
    """The SpikingNetwork inside ``module`` (or None)."""
    if module is None:
        return None
    if isinstance(module, SpikingNetwork):
        return module
    return next((m for m in module.modules() if isinstance(m, SpikingNetwork)), None)


# --- edgekit registration: graph node, float semantics, MACs ----------------------------------------------------------


def _snn_node(m: SpikingNetwork) -> tuple[str, dict, dict]:
    desc, arrays = m.spec()
    return "snn", {"network": desc}, arrays


def run_snn_node(node, xs: list[torch.Tensor]) -> torch.Tensor:
    net = SpikingNetwork.from_spec(node.attrs["network"], node.params)
    with torch.no_grad():
        return net.eval()(xs[0])


def snn_macs(node, graph) -> int:
    """Dense-equivalent synaptic multiply-accumulates per inference: Σ_connections synapses × steps (what the same
    network would cost if every neuron sent a value every step; the spike counts say how much of it happens)."""
    net = SpikingNetwork.from_spec(node.attrs["network"], node.params)
    return int(sum(int(f.sum()) for f in net.fan_out().values()) * net.steps)


def _register() -> None:
    from edgekit import analysis, graph_exec
    from edgekit.importers import torch_fx

    torch_fx.register_module(SpikingNetwork, _snn_node)
    graph_exec.EXTRA_OPS["snn"] = run_snn_node
    analysis.MAC_COUNTERS["snn"] = snn_macs


_register()
