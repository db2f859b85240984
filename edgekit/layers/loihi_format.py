"""Loihi 2's number formats for a spiking network: the one definition the converter trains to and the target maps to.

Where it sits: between edgekit/layers/spiking.py (float networks) and targets/neuromorphic (the integer network Lava
runs). ``to_spiking`` fine-tunes with weights fake-quantized onto this grid and snaps them at the end
(:func:`snap`), so the float network it returns holds only values Loihi can store; ``targets/neuromorphic`` then
turns it into integers (:func:`integer_network`) without further rounding. The formats are those of Lava 0.10's
bit-accurate process models (``lava/proc/lif/models.py`` PyLifModelBitAcc, ``lava/proc/dense/models.py``
PyDenseModelBitAcc, ``lava/utils/weightutils.py``, ``lava/proc/graded/models.py``):

* synaptic weights: 8 bits; sign-mixed matrices keep even values in [−256, 254], so a weight is 2·M·2**e with
  the mantissa M in [−128, 127] and one exponent e (``weight_exp``) per connection; the sum over a step is shifted
  by e (a right shift floors)
* LIF: synaptic input and threshold are shifted left by 6 bits into a 24-bit membrane (saturating at ±(2**23 − 1));
  the threshold ``vth`` is 17 bits; bias = mantissa (13 bits signed) · 2**exponent (3 bits, 0..7), added in the
  shifted domain; decays ``du``, ``dv`` are 12 bits (decay factor 1 − d/4096, the product truncated toward zero)
* graded spikes: up to 24-bit payloads

edgekit's units (one integer step of a population's input):

* LIF population with threshold ϑ: ϑ · 2**-12, so ``vth`` = 4096 and the membrane saturates at ±32 ϑ (the float
  network saturates there too, spiking.V_MAX_THRESHOLDS); a bias step is ϑ · 2**-18 · 2**bias_exp
* graded and input populations: 2**-unit_exp, chosen by the converter from the value range seen on data
* readout: 2**-12 (summed on the host, which adds the readout bias)

A connection's weights W become, in the target's units, C = f · W with f = (what one sent unit is worth / the
target unit) · 1/area of each average pool in the connection. Exact when pools do not overlap; then every
fixed-point product equals the float one and Lava's integers reproduce the float network except for decays
(the 12-bit decay truncates) and right shifts (connections whose weights are finer than the target's unit).
"""
from __future__ import annotations

import math

import numpy as np
import torch

from edgekit.layers.spiking import Connection, PopulationSpec, SpikingNetwork

LIF_UNIT_EXP = 12           # LIF input unit ϑ · 2**-12: vth = 4096 fits the 17-bit threshold with headroom
READOUT_UNIT_EXP = 12
WEIGHT_MANTISSA = (-128, 127)   # 8-bit sign-mixed weights stored as 2·M
BIAS_MANTISSA = 4095            # 13-bit signed
BIAS_EXP_MAX = 7                # 3-bit unsigned
VOLTAGE_SHIFT = 6               # a_in and vth are shifted left by 6 into the membrane
DECAY_UNITY = 4096              # 12-bit decays
GRADED_PAYLOAD_MAX = 2 ** 23 - 1
INPUT_PAYLOAD_MAX = 127         # 8-bit graded input


def received_unit(spec: PopulationSpec) -> float:
    """Real value of one integer step of what the population receives."""
    if spec.kind == "lif":
        return spec.threshold * 2.0 ** -LIF_UNIT_EXP
    if spec.kind == "readout":
        return 2.0 ** -READOUT_UNIT_EXP
    return 2.0 ** -_unit_exp(spec)


def sent_unit(spec: PopulationSpec) -> float:
    """Real value of one integer step of what the population sends: 1 for a binary spike."""
    return 1.0 if spec.kind == "lif" else 2.0 ** -_unit_exp(spec)


def _unit_exp(spec: PopulationSpec) -> int:
    if spec.unit_exp is None:
        raise ValueError(f"population '{spec.name}' ({spec.kind}) has no fixed-point unit (unit_exp); set it from "
                         "the value range (to_spiking does)")
    return int(spec.unit_exp)


def connection_factor(net: SpikingNetwork, c: Connection) -> float:
    """f: the connection's weights W in the target's integer units are f · W (see the module docstring)."""
    src = net.populations[c.spec.sources[0]].spec
    tgt = net.populations[c.spec.target].spec
    f = sent_unit(src) / received_unit(tgt)
    for o in c.spec.ops:
        if o["op"] == "avgpool2d":
            f /= math.prod(o["kernel"])
    return f


def weight_exponent(max_abs_units: float) -> int:
    """Lava's ``weight_exp`` for weights whose largest magnitude in target units is ``max_abs_units``."""
    if max_abs_units <= 0:
        return 0
    return math.ceil(math.log2(max_abs_units / (2 * WEIGHT_MANTISSA[1])))


def weight_step(net: SpikingNetwork, c: Connection, weight: torch.Tensor | None = None) -> float:
    """The grid step of the connection's float weights: W = M · step, M in WEIGHT_MANTISSA."""
    w = c.weight if weight is None else weight
    f = connection_factor(net, c)
    e = weight_exponent(float(w.detach().abs().max()) * f)
    return 2.0 ** (e + 1) / f


def bias_step(spec: PopulationSpec, bias: torch.Tensor) -> torch.Tensor:
    """Per element, the grid step of a LIF bias: (ϑ · 2**-18) · 2**bias_exp with the smallest exponent that keeps
    the 13-bit mantissa."""
    base = received_unit(spec) / 2 ** VOLTAGE_SHIFT
    units = bias.detach().abs() / base
    exp = torch.clamp(torch.ceil(torch.log2(torch.clamp(units / BIAS_MANTISSA, min=1e-30))), 0, BIAS_EXP_MAX)
    return base * torch.pow(2.0, exp)


def snap_beta(beta: float) -> float:
    """β on the 12-bit decay grid: 1 − dv/4096."""
    return 1.0 - round((1.0 - beta) * DECAY_UNITY) / DECAY_UNITY


def _round_ste(x: torch.Tensor, step) -> torch.Tensor:
    """Round to the grid in the forward pass, identity in the backward pass."""
    q = torch.round(x / step) * step
    return x + (q - x).detach()


def quantized(net: SpikingNetwork, straight_through: bool = True) -> tuple[dict, dict]:
    """Weights and biases of ``net`` on the Loihi grid (as a SpikingNetwork.quantizer)."""
    rnd = _round_ste if straight_through else (lambda x, s: torch.round(x / s) * s)
    weights, biases = {}, {}
    for name, c in net.connections.items():
        step = weight_step(net, c)
        lo, hi = WEIGHT_MANTISSA
        weights[name] = rnd(torch.clamp(c.weight, lo * step, hi * step), step)
    for name, p in net.populations.items():
        b = p.bias
        if b is not None and p.spec.kind == "lif":
            step = bias_step(p.spec, b)
            cap = BIAS_MANTISSA * step
            b = rnd(torch.maximum(torch.minimum(b, cap), -cap), step)
        biases[name] = b
    return weights, biases


def fake_quantize(net: SpikingNetwork, enable: bool = True) -> None:
    """Train ``net`` through the Loihi grid (straight-through rounding of weights and biases, and Lava's floored
    step sums, in every forward)."""
    net.quantizer = quantized if enable else None
    net.sum_rounding = floor_sum if enable else None


def floor_sum(net: SpikingNetwork, c: Connection, y: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """A connection's step sum ``y`` as Lava's fixed-point Dense delivers it: Σ 2M·s is shifted by ``weight_exp``
    e, and for e < −1 that right shift floors to the target's unit (straight-through gradient).

    y / unit · 2**-e is an integer up to float error (Σ 2M·s), so it is rounded first and then floored."""
    e = weight_exponent(float(weight.detach().abs().max()) * connection_factor(net, c))
    if e >= -1:
        return y
    unit = received_unit(net.populations[c.spec.target].spec)
    scaled = torch.round(y.detach() / unit * 2.0 ** -e)
    q = torch.floor(scaled * 2.0 ** e) * unit
    return y + (q - y).detach()


def snap(net: SpikingNetwork) -> None:
    """Move every weight, bias and decay of ``net`` onto the Loihi grid, in place; from then on the network runs
    with Lava's floored step sums (:func:`floor_sum`)."""
    net.sum_rounding = floor_sum
    with torch.no_grad():
        weights, biases = quantized(net, straight_through=False)
        for name, c in net.connections.items():
            c.weight.copy_(weights[name])
        for name, p in net.populations.items():
            if p.bias is not None:
                p.bias.copy_(biases[name])
            if p.spec.kind == "lif":
                beta = snap_beta(p.spec.beta)
                if beta != p.spec.beta:
                    raise ValueError(f"population '{name}': beta {p.spec.beta} is not on Loihi's 12-bit decay grid; "
                                     f"use {beta}")
    net.invalidate()


def input_unit_exp(max_abs: float) -> int:
    """unit_exp for an input whose largest magnitude is ``max_abs`` (8-bit graded payload)."""
    return int(math.floor(math.log2(INPUT_PAYLOAD_MAX / max(max_abs, 1e-12))))


def graded_unit_exp(max_abs: float, fan_in: int) -> int:
    """unit_exp for a graded population whose values reach ``max_abs``: the largest resolution (at most 2**-16) at
    which the payload fits 24 bits and a downstream 8-bit weight sum over ``fan_in`` inputs fits int32 with 2x
    headroom (Lava's fixed-point Dense multiplies in int32)."""
    limit = min(GRADED_PAYLOAD_MAX, 2 ** 31 / (256 * max(fan_in, 1) * 2))
    return int(min(16, math.floor(math.log2(limit / max(max_abs, 1e-12)))))


def integer_network(net: SpikingNetwork) -> tuple[dict, dict[str, np.ndarray], list[str]]:
    """The network in Loihi's integers: (description, arrays, notes).

    Per population: ``du``, ``dv``, ``vth``, ``bias_mant``/``bias_exp`` (LIF), the unit of graded values; per
    connection: the synapse matrix [target size, source size] of even 8-bit values, stored sparse as CSR
    (``<name>.weights`` the non-zero values, ``.indices`` their source neuron, ``.indptr`` the row starts; the
    description holds ``shape``), and ``weight_exp``. ``notes`` say
    where a value had to be rounded (the network was not snapped) or where Lava's right shift will truncate.
    """
    from scipy.sparse import csr_matrix

    notes: list[str] = []
    pops, arrays = [], {}
    for name, p in net.populations.items():
        s = p.spec
        entry = {"name": name, "kind": s.kind, "shape": list(s.shape), "size": s.size}
        if s.kind in ("input", "graded"):
            entry["unit_exp"] = _unit_exp(s)
        if s.kind == "lif":
            dv = round((1.0 - s.beta) * DECAY_UNITY)
            entry.update({"du": DECAY_UNITY - 1, "dv": int(dv), "vth": 2 ** LIF_UNIT_EXP,
                          "threshold": s.threshold})
            if abs(1.0 - dv / DECAY_UNITY - s.beta) > 1e-9:
                notes.append(f"population '{name}': beta {s.beta:g} rounded to the 12-bit decay {1 - dv / 4096:g}")
            bias = np.zeros(s.size)
            if p.bias is not None:
                bias = torch.broadcast_to(p.bias.detach().double(), s.shape).reshape(-1).numpy()
            base = received_unit(s) / 2 ** VOLTAGE_SHIFT
            units = bias / base
            exp = np.clip(np.ceil(np.log2(np.maximum(np.abs(units) / BIAS_MANTISSA, 1e-30))), 0, BIAS_EXP_MAX)
            mant = np.round(units / 2 ** exp)
            if np.any(np.abs(mant) > BIAS_MANTISSA):
                notes.append(f"population '{name}': biases beyond the 13+3-bit range were clipped")
                mant = np.clip(mant, -BIAS_MANTISSA, BIAS_MANTISSA)
            if np.any(np.abs(mant * 2 ** exp - units) > 1e-6):
                notes.append(f"population '{name}': biases rounded to Loihi's 13-bit mantissa")
            arrays[f"{name}.bias_mant"] = mant.astype(np.int32)
            arrays[f"{name}.bias_exp"] = exp.astype(np.int32)
        if s.kind == "readout":
            entry["unit_exp"] = READOUT_UNIT_EXP
            bias = np.zeros(s.size) if p.bias is None else p.bias.detach().double().reshape(-1).numpy()
            arrays[f"{name}.bias"] = bias.astype(np.float64)
        pops.append(entry)
    conns = []
    for name, c in net.connections.items():
        src = net.populations[c.spec.sources[0]].spec
        matrix = c.matrix(src.shape) * (sent_unit(src) / received_unit(net.populations[c.spec.target].spec))
        matrix.eliminate_zeros()
        e = weight_exponent(float(np.abs(matrix.data).max()) if matrix.nnz else 0.0)
        mant = matrix.data / 2.0 ** (e + 1)
        rounded = np.clip(np.round(mant), *WEIGHT_MANTISSA)
        exact = bool(np.all(np.abs(rounded - mant) < 1e-6))
        if not exact:
            notes.append(f"connection '{name}': weights rounded to 8 bits (max error "
                         f"{float(np.abs(rounded - mant).max()):.2g} of a step); to_spiking trains on this grid")
        if e < -1:
            notes.append(f"connection '{name}': weights finer than the target's unit; Lava floors the step sums "
                         f"(right shift by {-e} bits)")
        synapses = csr_matrix((2 * rounded, matrix.indices, matrix.indptr), shape=matrix.shape)
        synapses.eliminate_zeros()  # weights that round to zero are no synapses
        arrays[f"{name}.weights"] = synapses.data.astype(np.int32)
        arrays[f"{name}.indices"] = synapses.indices.astype(np.int32)
        arrays[f"{name}.indptr"] = synapses.indptr.astype(np.int64)
        conns.append({"name": name, "sources": list(c.spec.sources), "target": c.spec.target,
                      "delay": c.spec.delay, "weight_exp": int(e), "graded": src.kind != "lif",
                      "exact": exact, "synapses": int(synapses.nnz), "shape": list(matrix.shape)})
    desc = {"format": "edgekit-loihi-int/2", "steps": net.steps, "readout_steps": net.readout_steps,
            "input_mode": net.input_mode,
            "input": net.input_name, "readout": net.readout_name, "populations": pops, "connections": conns,
            "lif_unit_exp": LIF_UNIT_EXP, "voltage_shift": VOLTAGE_SHIFT}
    return desc, arrays, notes
