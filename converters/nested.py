"""Nested sub-networks: Model -> Model whose narrower operating points are prefixes of its own weights.

Where it sits: a converter (model -> **converters** -> targets). :func:`nest` fine-tunes a network so that, in every
sliceable layer, the first k channels (units) form a working network of their own; :func:`operating_point` cuts one
of them out as an ordinary, smaller dense Model, whose parameters are exact copies of the first rows/columns of the
full model's (a target stores the weights once and runs any width from them: targets/mcu/nested.py).

Preparation (before any training):

* **BatchNorm folded** into the conv/linear before it (W' = W·γ/√(σ²+ε), b' = (b − μ)·γ/√(σ²+ε) + β; the norm
  becomes ``nn.Identity``): a sub-network cannot switch statistics, so the deployed weights are one set for all widths.
  A norm that cannot be folded keeps its channels full width and its statistics frozen (a note says so).
* **Width groups** from the layer graph: the channel dimension of a tensor is followed through ReLU/ReLU6/tanh/...,
  pooling, crops and other indexing of non-channel axes, flatten (a linear then reads ``block`` features per
  channel), transposes; a conv's outputs and the inputs of the layers it feeds are one group, both sides of a
  residual add are one group, a depthwise conv ties its input to its output. A GRU/LSTM's (and an edgekit LMU's)
  hidden size is a group: its units' rows in every gate of ``weight_ih``/``weight_hh`` and the biases, the columns of
  ``weight_hh`` and the inputs of whatever reads the hidden state (the LMU's memory order d is never sliced: its
  Legendre matrices belong to the whole memory). Never sliced: the model input's channels, the model outputs, and any
  group that reaches an operator this module does not understand (a note names it; e.g. concat, mul, layernorm,
  softmax over channels, a grouped non-depthwise conv, a module called twice).
* **Widths**: operating point i keeps k_i = min(C, max(4, 4·⌊b_i·C/4 + ½⌉)) channels of a group of C (multiples of 4:
  the firmware kernels pack channels in fours); the largest budget, 1.0, keeps all C.
* **Importance sorting**: the channels of each group are permuted, in every layer of the group alike, by decreasing
  importance s_c = Σ_layers ‖W_layer[c]‖₁ / mean_c ‖W_layer[c]‖₁ — the L1 norm of each tied layer's outgoing and
  incoming weights of channel c (all gates of a recurrent unit, ``block`` columns of a flattened channel), each layer
  normalised by its mean so that a big layer does not outvote the others (Li et al. 2017's filter norm, summed over
  the tie). A permutation of a group does not change the full network's function; :func:`nest` checks that it did not.

Training (``fine_tune``, the shared loop: Adam, cosine-decayed learning rate, gradient clipping) combines:

* **SortedNet** (Valipour et al. 2023, "SortedNet, a Place for Every Network and Every Network in its Place: Towards
  a Generalized Solution for Training Many-in-One Neural Networks", arXiv:2309.00255): sub-networks are nested by
  sorted width and share the full network's parameters; each optimizer step minimises the sum of losses

      L = λ·CE(f_full(x), y) + Σ_{i ∈ S_t} w_i(t) · b_i^(−γ) · L_i
      L_i = (1 − α)·CE(f_i(x), y) + α·τ²·KL(σ(f_full(x)/τ) ‖ σ(f_i(x)/τ))

  S_t is every operating point allowed at step t (``subnets_per_step=None``), or — SortedNet's stochastic
  updating — ``subnets_per_step`` of them drawn uniformly without replacement each step, or — the sandwich rule of
  universally slimmable networks (Yu & Huang 2019), ``sandwich=True`` — the smallest allowed point and one other
  allowed narrower point drawn uniformly (the full network always trains). f_i is the *real* sliced
  network: a structurally smaller copy of the module (fewer channels) called with slices of the full parameters
  (``torch.func.functional_call``), so gradients reach the shared prefix, and a sub-network computes exactly what
  :func:`operating_point` later returns. Only the target operating points are trained, not every width in between:
  they are the only widths deployed. λ = ``full_weight`` (default 1). b_i^(−γ) (``boost``, default γ = 1) gives the
  narrower points more say over the shared prefix: with γ = 0 the full network, already trained, pulls the prefix
  towards what it needs (kws-dscnn, 4 epochs on 2,000 clips, width 0.25: 15 % with γ = 0, 29 % with γ = 1, 39 %
  trained alone). The KL term is in-place distillation from the full network's (detached) outputs, α = ``distill``,
  τ = ``temperature``; it is off by default (α = 0): on kws-dscnn it slowed the narrow points (width 0.25 as the only
  sub-network: 24 % with α = 0.5, τ = 2 against 39 % with cross-entropy alone).
* **Each narrower point's own bias offsets** (``private="bias"``, the default): per narrower operating point and
  per conv / linear / recurrent layer, a trainable offset d_i (init 0) added to the layer's sliced bias (a recurrent
  layer's ``bias_ih``), so that b_i = b[:k] + d_i — what the per-width BatchNorm of slimmable networks (Yu et al.
  2019, "switchable BN") gives a point, with BatchNorm folded: a point's activations are shifted apart from the
  wider ones' without moving the shared weights. ``private="affine"`` also gives each point its own per-channel
  scale a_i (init 1) of the weight rows, W_i = a_i ⊙ W[:k] (the firmware stores the same int8 weights with the
  point's weight scales times a_i, but then needs the point's own requantization tables: 16 bytes per channel
  against the offsets' 4). The full network has no private parameters. Measured, 0.25/0.5/0.75/1 nested − alone in
  points (bench/budgets.py's settings): kws-dscnn without −0.4/−3.3/−2.1/−2.8, offsets +1.7/−1.0/−2.3/−2.6
  (with γ = 0.5: +0.7/−0.5/−1.9/−2.1), affine +0.7/−0.9/−2.5/−2.8 (M7 image flash over the widest point alone:
  +9.8 % with offsets, +33.8 % affine);
  digits-gru (γ = 0) without +3.6/+0.6/−1.9/−1.9, offsets +0.6/−0.6/−1.7/+0.3, affine (gate rows scaled)
  +5.8/+0.3/−1.1/−0.3; digits-cnn without −0.6/−0.6/0/−0.6, offsets −0.8/−0.3/−0.3/−0.6 (image +5.4 %), affine
  +1.4/−0.8/−0.3/−0.3 (+13.0 %).
* **DεpS** (Annavajjala, Khare et al., ECCV 2024, "DεpS: Delayed ε-Shrinking for Faster Once-For-All Training",
  arXiv:2407.06167): FM-warmup — the first ``warmup`` fraction of the T optimizer steps trains the full network only;
  then ε-shrinking — the smallest allowed width falls linearly from 1 to the smallest budget b_min over the next
  ``shrink`` fraction of the steps,

      w_min(t) = 1 − (1 − b_min) · min(1, (t − T·warmup) / (T·shrink)),

  and operating point i joins S_t once w_min(t) ≤ b_i; E-warmup — its loss weight then rises linearly,
  w_i(t) = min(1, (t − t_i + 1) / (T·ramp)), which stands in for the paper's incremental sub-network learning rate
  (with Adam a loss weight scales a sub-network's share of the shared gradient, not an exact learning rate);
  IKD-warmup — the distillation above (when α > 0) starts with the sub-network, from a full network that has been
  training alone. The fractions are short by default (``WARMUP`` 2 %, ``SHRINK`` 8 %, ``RAMP`` 2 %): the paper
  starts shrinking when the full model is about half trained, and here it is trained before nesting starts, so a
  longer delay only takes steps from the narrow points (kws-dscnn, 8 epochs, width 0.25: 67.1 % with 5 %/15 %/5 %,
  69.8 % with 2 %/8 %/2 %; trained alone: 70.5 %). Not implemented: DεpS's elastic depth/kernel dimensions and its
  per-subnet learning-rate bookkeeping.

What the settings do, measured against the same widths trained alone (bench/budgets.py's setup: same epochs and
learning rate; points 0.25/0.5/0.75/1, nested − alone in accuracy points; private parameters "none" unless said).
digits-gru, 20 epochs at 3e-3, γ = 1:
+3.6/−0.8/−2.8/−2.5; γ = 0: +3.6/+0.6/−1.9/−1.9 (bench/budgets.py uses it for the GRU); γ = 0.5: +3.6/0/−1.4/−2.5;
α = 0.5 or 1 (τ = 2): +1.7/−2.2/−2.8/−2.0 and +2.5/−1.7/−3.1/−1.4; α = 0.5 with γ = 0: −1.4/−1.7/−2.8/−2.0;
λ = 3: +3.3/−1.1/−2.8/−2.2; warmup 20 %: −0.6/−1.4/−1.4/−2.0; γ = 0 with warmup 10 %: −0.3/+0.3/−2.5/−2.2; one point
per step (``subnets_per_step=1``): −17.2/−1.1/−1.4/0.0; sandwich: +3.6/−3.1/−2.8/−0.3; sandwich with γ = 0:
+1.4/−1.1/−2.2/−0.6. The sandwich rule gives the full network back its accuracy (fewer sub-network gradients on
the shared prefix) at the cost of the middle points, which train only every other step. kws-dscnn, 12 epochs at
3e-3, γ = 1: −0.4/−3.3/−2.1/−2.8; sandwich with γ = 0: −1.3/−3.8/−2.4/−2.5. digits-gru with private scales, γ = 0
and λ = 2: +5.8/+0.6/−0.8/−0.6, every point within 1 (bench/budgets.py's setting). No setting tried (with private
offsets or scales either) brings every point within 1 point of its separately trained twin on kws-dscnn: with one
set of weights the widest points give up capacity to the narrow ones — it is the 0.25 point that costs the full
network: nested with budgets (0.75, 1) alone, the points are −0.8/−0.5 from their twins; with (0.25, 1), the full
network is at 91.1 % (alone 93.5 %); giving each narrower point its own copy of the output layer as well (γ = 0.5:
+0.5/+1.2/−2.1/−2.9) does not lift the full network either. Also tried on kws-dscnn (γ = 0.5 unless said, not kept):
γ = −0.5 (narrower points weighed less): −3.7/+0.6/−0.2/−2.7; λ = 8: −2.3/−1.3/−1.6/−1.5; gradient surgery (PCGrad
per parameter tensor: a sub-network's gradient loses its component against the full network's where they conflict):
+0.8/−0.1/−1.8/−2.6; the full network's loss half distillation from its own outputs before nesting (τ = 2):
−1.6/+0.1/−1.0/−2.6; 30 epochs each: −1.4/−2.1 at 0.75/1; learning rate 1e-3 each: −5.9/−1.6/−1.1/−0.9; label
smoothing 0.1 for both: +0.2/−1.2/−1.6/−1.3; each clip also shifted by up to 4 frames in time (twice the data, half
the epochs) for both: −1.3/−0.5/−1.7/−1.3, with it γ = 0 and λ = 2: −4.7/−1.3/−1.4/−0.1 (the full network within 1,
the narrow points not); an exponential moving average of the weights (decay 0.99 a step, for both):
+0.6/+0.5/−1.3/−2.0; the full network anchored to its own outputs before nesting on mixup inputs (the batch blended
with a shuffled copy of itself — inputs it cannot fit by rote, unlike the training clips above — a term μ·τ²·KL
added to the loss): μ = 1 −2.4/−1.2/−0.9/−1.4, μ = 4 −8.9/−3.1/−2.6/−1.3; the shared weights held near the pretrained ones (L2-SP, a term
μ/2·Σ‖w − w₀‖² over every trained parameter; seed 0, nested accuracy 0.25/0.5/0.75/1 against the default's
75.7/86.3/89.4/91.3 %): μ = 0.1 70.2/83.0/87.7/91.3 %, μ = 1 38.4/71.5/84.8/91.6 % — the full network stays
1.5-2 points below its twin even with its weights held near the pretrained ones, while the narrow points lose
their room to adapt; every point, the full network too, with its own per-channel scales and bias offsets (switchable
BatchNorm's affine for every width; seed 0) 74.4/86.5/89.1/91.4 % — the full network's own affine does not give back
what the shared weights lost. Across training seeds (the order of the
mini-batches and of the sampled points) one seed's difference moves by 1-3 points: seeds 0-3 with bench/budgets.py's
settings give +1.2/−1.2/−0.9/−1.3 at 0.25, +0.5/−1.5/−2.2/+0.3 at 0.5, −1.3/−1.4/−2.1/−0.7 at 0.75 and
−2.1/−3.0/−1.0/−2.5 at full width (means −0.6/−0.7/−1.4/−2.1), so bench/budgets.py compares means over seeds. The
training loop itself costs nothing: the full network trained alone through it (narrow points never joining) is at
93.48 %, as trained alone. The loss is one of generalisation, not of fitting: nested and
alone, the full network classifies its training clips 100 % right (held out: 91.3 % and 93.5 %). BatchNorm is folded
before training; the private bias offsets above stand in for the per-width statistics.

The result is the full network (BatchNorm folded, channels sorted) with ``meta['nested']`` (JSON):
``{"budgets", "groups": {group: {"channels", "members": [[layer, role], ...]}}, "layers": {layer: {"kind", "out",
"in", "block", "gates"}}, "operating_points": [{"budget", "widths": {group: k}, "private": {layer: {"shift": [...],
"scale": [...]}}, "params", "macs", "float_accuracy"}], "method", "epochs", "schedule", "notes"}`` — groups are
named after their first producing layer; ``private`` (narrower points of a trained nest only) holds the point's own bias offsets (and scales).
A ``.pt2`` written by ``edgekit.loaders.save_pt2`` holds each narrower operating point as its own exported program
(see there), so :func:`operating_point` also works on a model loaded back from the file.

:func:`train_separately` is the baseline: the same-width network trained alone for the same epochs.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.func import functional_call

from edgekit.converters.finetune import TrainSettings, fine_tune, training_data
from edgekit.converters.prune import CONV_TYPES, RNN_TYPES, _expand, _replace
from edgekit.errors import DataError, UnsupportedError, UsageError
from edgekit.graph import ACTIVATIONS
from edgekit.layers import LMU
from edgekit.model import Model

DEFAULT_BUDGETS = (0.25, 0.5, 0.75, 1.0)
SETTINGS = TrainSettings(epochs=10, lr=3e-3)   # nest's and train_separately's default fine-tuning
CHANNEL_MULTIPLE = 4     # the firmware kernels pack channels in groups of 4
WARMUP = 0.02            # DεpS FM-warmup: share of the steps that train the full network alone (it is pretrained)
SHRINK = 0.08            # ε-shrinking: share of the steps over which the smallest allowed width falls to b_min
RAMP = 0.02              # E-warmup: share of the steps over which a joining sub-network's loss weight rises to 1
DISTILL = 0.0            # α: weight of in-place distillation from the full network in a sub-network's loss
TEMPERATURE = 2.0        # τ of the distillation
FULL_WEIGHT = 1.0        # λ: weight of the full network's own loss once sub-networks train
BOOST = 1.0              # γ: operating point i's loss is weighted by b_i^-γ (narrower points get more say)
PRIVATE = "bias"         # each narrower point's own bias offsets ("affine": and its own per-channel weight scales)
PRIVATE_KINDS = ("affine", "bias", "none")
SORT_TOLERANCE = 1e-3    # largest change of the outputs (relative to their scale) that sorting may cause
# meta keys that describe the weights before nesting: not true of the nested network or of its operating points
_STALE_META = ("nested", "nested_archive", "quant", "quant_mode", "operating_point")

METHOD = ("SortedNet (nested widths sharing one set of weights, importance-sorted channels, the full network plus "
          "{sampling} every step, summed losses weighted λ={full_weight:g} for the full network and b^-{boost:g} for "
          "width b{private}) + DεpS (full-network warmup {warmup:.0%} of the steps, ε-shrinking of the smallest width "
          "to {smallest:g} over {shrink:.0%}, loss-weight warmup over {ramp:.0%}, in-place distillation α={distill:g}"
          "{temperature})")


# ---- budgets and widths ----------------------------------------------------------------------------------------------


def check_budgets(budgets) -> tuple[float, ...]:
    """The budgets as a sorted tuple of floats; UsageError unless there are at least two, each in (0, 1], distinct,
    the largest 1.0."""
    try:
        values = [float(b) for b in budgets]
    except (TypeError, ValueError):
        raise UsageError(f"budgets {budgets!r}: give width fractions such as 0.25,0.5,0.75,1.0") from None
    if len(values) < 2:
        raise UsageError(f"budgets {values}: give at least two width fractions, the largest 1.0 (e.g. 0.5,1.0)")
    bad = [b for b in values if not (math.isfinite(b) and 0.0 < b <= 1.0)]
    if bad:
        raise UsageError(f"budget {bad[0]:g}: every width fraction must be in (0, 1], e.g. 0.25,0.5,0.75,1.0")
    if len(set(values)) != len(values):
        raise UsageError(f"budgets {values}: a width fraction appears twice; give each once")
    if max(values) != 1.0:
        raise UsageError(f"budgets {values}: the largest must be 1.0 (the full network, whose weights the others "
                         "share)")
    return tuple(sorted(values))


def width(budget: float, channels: int) -> int:
    """k = min(C, max(4, 4·round(b·C/4))) channels of a group of C at width fraction b (round half up); C at b = 1."""
    if budget >= 1.0:
        return channels
    k = CHANNEL_MULTIPLE * int(math.floor(budget * channels / CHANNEL_MULTIPLE + 0.5))
    return min(channels, max(CHANNEL_MULTIPLE, k))


# ---- how each layer slices -------------------------------------------------------------------------------------------

# Per layer kind: parameter -> (dimension, role, gated). Role "out" follows the layer's output group (conv filters,
# linear units, recurrent hidden units), "in" its input group (``block`` columns per channel); gated rows come in
# ``gates`` blocks of the hidden size (PyTorch's r|z|n for GRU, i|f|g|o for LSTM).
_PARAM_DIMS: dict[str, dict[str, tuple[tuple[int, str, bool], ...]]] = {
    "conv": {"weight": ((0, "out", False), (1, "in", False)), "bias": ((0, "out", False),)},
    "linear": {"weight": ((0, "out", False), (1, "in", False)), "bias": ((0, "out", False),)},
    "rnn": {"weight_ih_l0": ((0, "out", True), (1, "in", False)),
            "weight_hh_l0": ((0, "out", True), (1, "out", False)),
            "bias_ih_l0": ((0, "out", True),), "bias_hh_l0": ((0, "out", True),)},
    "lmu": {"encoder_x": ((0, "in", False),), "encoder_h": ((0, "out", False),),
            "weight_x": ((0, "out", False), (1, "in", False)), "weight_h": ((0, "out", False), (1, "out", False)),
            "weight_m": ((0, "out", False),), "bias": ((0, "out", False),)},
}


@dataclass(frozen=True)
class LayerSlicing:
    """How one layer's parameters shrink: ``out`` and ``in`` name the width groups of its output and input channels
    (None: kept full); ``block`` input features per input channel (a linear after a flatten); ``gates`` row blocks of
    a recurrent layer; ``depthwise`` convs have as many groups as channels (their output group is their input's)."""

    layer: str
    kind: str
    out: str | None
    inp: str | None
    block: int = 1
    gates: int = 1
    depthwise: bool = False

    def to_json(self) -> dict:
        return {"kind": self.kind, "out": self.out, "in": self.inp, "block": self.block, "gates": self.gates,
                "depthwise": self.depthwise}

    @classmethod
    def from_json(cls, layer: str, d: dict) -> "LayerSlicing":
        return cls(layer, d["kind"], d["out"], d["in"], int(d["block"]), int(d["gates"]), bool(d["depthwise"]))


@dataclass
class WidthPlan:
    """The width groups of a network (name -> channels C), the layers they slice, and what could not be sliced."""

    groups: dict[str, int]
    members: dict[str, list[list[str]]]
    layers: dict[str, LayerSlicing]
    notes: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)   # layers kept full width because they are model outputs

    def widths(self, budget: float) -> dict[str, int]:
        return {g: width(budget, c) for g, c in self.groups.items()}

    def to_json(self) -> dict:
        return {"groups": {g: {"channels": c, "members": self.members[g]} for g, c in self.groups.items()},
                "layers": {name: s.to_json() for name, s in self.layers.items()}}

    @classmethod
    def from_json(cls, d: dict) -> "WidthPlan":
        return cls({g: int(v["channels"]) for g, v in d["groups"].items()},
                   {g: v["members"] for g, v in d["groups"].items()},
                   {name: LayerSlicing.from_json(name, s) for name, s in d["layers"].items()})


def _kind(m: nn.Module) -> str | None:
    if isinstance(m, CONV_TYPES):
        return "conv"
    if isinstance(m, nn.Linear):
        return "linear"
    if isinstance(m, RNN_TYPES):
        return "rnn"
    if isinstance(m, LMU):
        return "lmu"
    return None


# ---- finding the width groups ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Chan:
    """The channel dimension of a tensor: its union-find space, the axis it is on, features per channel there."""

    space: int
    axis: int
    block: int = 1


class _Spaces:
    """Union-find over channel dimensions; a frozen space (with the reason) is never sliced."""

    def __init__(self):
        self.parent: list[int] = []
        self.size: list[int] = []
        self.frozen: dict[int, str] = {}

    def new(self, size: int) -> int:
        self.parent.append(len(self.parent))
        self.size.append(int(size))
        return len(self.parent) - 1

    def find(self, s: int) -> int:
        while self.parent[s] != s:
            self.parent[s] = self.parent[self.parent[s]]
            s = self.parent[s]
        return s

    def freeze(self, chan: _Chan | None, reason: str) -> None:
        if chan is not None:
            self.frozen.setdefault(self.find(chan.space), reason)

    def union(self, a: int, b: int) -> int:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return ra
        first, second = min(ra, rb), max(ra, rb)  # the earlier space names the group
        self.parent[second] = first
        if second in self.frozen:
            self.frozen.setdefault(first, self.frozen.pop(second))
        return first


_ELEMENTWISE = (*ACTIVATIONS, "scale")
_POOLS = ("maxpool2d", "avgpool2d", "global_avgpool", "upsample")


def width_plan(model: Model) -> WidthPlan:
    """The width groups of ``model`` (its ``module`` must hold torch.nn layers; BatchNorm already folded)."""
    graph = model.graph
    modules = dict(model.module.named_modules())
    names = {n.name for n in graph.nodes}
    spaces = _Spaces()
    members: list[tuple[int, str, str]] = []    # (space, layer, role)
    slices: dict[str, dict] = {}                # layer -> LayerSlicing fields, spaces for now
    info: dict[str, _Chan | None] = {}
    notes: list[str] = []

    def layer(name: str, op: str):
        """The torch.nn layer a node is, when it is one and is called only once."""
        m = modules.get(name)
        k = _kind(m) if m is not None else None
        if k is None or any(f"{name}_{i}" in names for i in (2, 3)):
            return None, None
        if k == "rnn" and (m.num_layers != 1 or m.bidirectional or getattr(m, "proj_size", 0)):
            return None, None
        return m, k

    def produce(n, ci, kind: str, size: int, axis: int, **fields) -> _Chan:
        """A layer whose outputs open a width group of ``size`` channels (its inputs, if sliceable, are ``ci``'s)."""
        s = spaces.new(size)
        members.append((s, n.name, "out"))
        if ci is not None:
            members.append((ci.space, n.name, "in"))
        slices[n.name] = dict(kind=kind, out=s, inp=ci.space if ci else None, **fields)
        return _Chan(s, axis)

    def needs_all(n, why: str | None = None) -> None:
        for i in n.inputs:
            spaces.freeze(info.get(i), why or f"'{n.name}' ({n.op}) needs all of them")

    for n in graph.nodes:
        ins = [info.get(i) for i in n.inputs]
        ci = ins[0] if ins else None
        in_rank = len(graph[n.inputs[0]].shape) if n.inputs else 0
        m, kind = layer(n.name, n.op)
        out: _Chan | None = None
        if n.op == "input":
            out = None
        elif kind == "conv" and n.op in ("conv1d", "conv2d"):
            if ci is not None and (ci.axis != 1 or ci.block != 1):
                spaces.freeze(ci, f"'{n.name}' reads them mixed with other axes")
                ci = None
            if m.groups == 1:
                out = produce(n, ci, "conv", m.out_channels, 1)
            elif m.groups == m.in_channels == m.out_channels:
                if ci is not None:
                    members.append((ci.space, n.name, "out"))
                    slices[n.name] = dict(kind="conv", out=ci.space, inp=None, depthwise=True)
                out = ci
            else:
                spaces.freeze(ci, f"'{n.name}' is a grouped convolution ({m.groups} groups)")
        elif kind == "linear" and n.op == "linear":
            if ci is not None and (ci.axis != in_rank - 1 or spaces.size[ci.space] * ci.block != m.in_features):
                spaces.freeze(ci, f"'{n.name}' reads them mixed with other axes")
                ci = None
            out = produce(n, ci, "linear", m.out_features, len(n.shape) - 1, block=ci.block if ci else 1)
        elif (kind == "rnn" and n.op in ("gru", "lstm")) or (kind == "lmu" and n.op == "lmu"):
            if ci is not None and (ci.axis != in_rank - 1 or ci.block != 1):
                spaces.freeze(ci, f"'{n.name}' reads them mixed with other axes")
                ci = None
            gates = 3 if isinstance(m, nn.GRU) else 4 if isinstance(m, nn.LSTM) else 1
            out = produce(n, ci, kind, m.hidden_size, len(n.shape) - 1, gates=gates)
        elif n.op in _ELEMENTWISE or n.op == "identity":
            out = ci
        elif n.op in _POOLS:
            if ci is not None and (ci.axis != 1 or ci.block != 1):
                spaces.freeze(ci, f"'{n.name}' ({n.op}) pools across them")
            else:
                out = ci
        elif n.op == "select" and ci is not None:
            idx = n.attrs["index"]
            if ci.block != 1 or (ci.axis < len(idx) and idx[ci.axis] != ["slice", None, None, None]):
                spaces.freeze(ci, f"'{n.name}' indexes into them")
            else:
                out = _Chan(ci.space, ci.axis - sum(isinstance(i, int) for i in idx[:ci.axis]))
        elif n.op in ("flatten", "reshape") and ci is not None:
            shape = tuple(graph[n.inputs[0]].shape)
            new = tuple(n.shape)
            a = ci.axis
            if new == shape:
                out = ci
            elif new[:a] == shape[:a] and len(new) == a + 1:
                out = _Chan(ci.space, a, ci.block * int(np.prod(shape[a + 1:], dtype=np.int64)))
            elif new[:a + 1] == shape[:a + 1] and ci.block == 1:
                out = ci  # only axes after the channels are merged
            else:
                spaces.freeze(ci, f"'{n.name}' reshapes across them")
        elif n.op == "transpose" and ci is not None and ci.block == 1:
            out = _Chan(ci.space, list(n.attrs["perm"]).index(ci.axis))
        elif n.op == "add" and len(ins) == 2:
            a, b = ins
            if a is not None and b is not None and a.axis == b.axis and a.block == b.block \
                    and spaces.size[a.space] == spaces.size[b.space] and tuple(n.shape) == \
                    tuple(graph[n.inputs[0]].shape) == tuple(graph[n.inputs[1]].shape):
                out = _Chan(spaces.union(a.space, b.space), a.axis, a.block)
            else:
                needs_all(n, f"'{n.name}' adds them to a tensor of other channels")
        elif n.op == "batchnorm":
            needs_all(n, f"BatchNorm '{n.name}' could not be folded into a conv/linear")
        else:
            needs_all(n)
        info[n.name] = out
    for o in graph.outputs:
        spaces.freeze(info.get(o), "it is a model output")

    # groups: unfrozen spaces with a producing layer, named after the first one
    producers: dict[int, str] = {}
    for s, name, role in members:
        if role == "out" and not slices[name].get("depthwise"):
            producers.setdefault(spaces.find(s), name)
    group_of: dict[int, str] = {}
    kept: list[str] = []
    for root, name in producers.items():
        if root in spaces.frozen:
            why = f"'{name}' keeps its {spaces.size[root]} channels: {spaces.frozen[root]}"
            (kept if "model output" in spaces.frozen[root] else notes).append(why)
            continue
        group_of[root] = name
    for n in graph.nodes:
        if n.params and n.name not in slices and n.op != "batchnorm":
            notes.append(f"'{n.name}' ({n.op}) keeps its width: edgekit does not slice {n.op} layers")
    groups = {group_of[r]: spaces.size[r] for r in sorted(group_of)}
    roles: dict[str, list[list[str]]] = {g: [] for g in groups}
    for s, name, role in members:
        g = group_of.get(spaces.find(s))
        if g is not None:
            roles[g].append([name, "depthwise" if slices[name].get("depthwise") else role])
    layers = {}
    for name, d in slices.items():
        out_g = group_of.get(spaces.find(d["out"])) if d["out"] is not None else None
        in_g = group_of.get(spaces.find(d["inp"])) if d["inp"] is not None else None
        if out_g is None and in_g is None:
            continue
        layers[name] = LayerSlicing(name, d["kind"], out_g, in_g, int(d.get("block", 1)), int(d.get("gates", 1)),
                                    bool(d.get("depthwise", False)))
    for name, m in modules.items():
        if _kind(m) is not None and f"{name}_2" in names:
            notes.append(f"'{name}' ({type(m).__name__}) keeps its width: it is called more than once")
    if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in modules.values()):
        notes.append("BatchNorm layers that could not be folded keep their statistics frozen while training")
    return WidthPlan(groups, roles, layers, notes, kept)


# ---- folding BatchNorm -----------------------------------------------------------------------------------------------


def fold_batchnorm(model: Model) -> tuple[nn.Module, list[str]]:
    """A copy of ``model.module`` with every BatchNorm that directly follows a conv (or a 2-D linear) read only by it
    folded into that layer's weight and bias and replaced by ``nn.Identity``; notes on norms left in place."""
    module = copy.deepcopy(model.module).eval()
    modules = dict(module.named_modules())
    graph = model.graph
    notes = []
    for n in graph.nodes:
        bn = modules.get(n.name)
        if n.op != "batchnorm" or not isinstance(bn, nn.modules.batchnorm._BatchNorm):
            continue
        prod = graph[n.inputs[0]]
        layer = modules.get(prod.name)
        ok = isinstance(layer, CONV_TYPES) or (isinstance(layer, nn.Linear) and len(prod.shape) == 2)
        if not ok or len(graph.consumers(prod.name)) != 1 or prod.name in graph.outputs \
                or bn.running_var is None or bn.num_features != layer.weight.shape[0]:
            notes.append(f"BatchNorm '{n.name}' is not folded: its input is not a conv/linear read only by it")
            continue
        with torch.no_grad():
            scale = (bn.weight if bn.affine else torch.ones_like(bn.running_var)) / torch.sqrt(bn.running_var
                                                                                                + bn.eps)
            shift = (bn.bias if bn.affine else torch.zeros_like(bn.running_mean)) - bn.running_mean * scale
            w = layer.weight
            layer.weight.copy_(w * scale.reshape((-1,) + (1,) * (w.dim() - 1)))
            bias = layer.bias if layer.bias is not None else torch.zeros_like(scale)
            layer.bias = nn.Parameter((bias * scale + shift).detach().clone())
        _replace(module, n.name, nn.Identity())
    return module, notes


# ---- slicing ---------------------------------------------------------------------------------------------------------


def _select(t: torch.Tensor, dim: int, sel: int | torch.Tensor, block: int = 1, gates: int = 1) -> torch.Tensor:
    """Channels ``sel`` (the first k, or these indices) of ``t`` along ``dim``: ``block`` entries per channel, in each
    of ``gates`` row blocks."""
    units = t.shape[dim] // gates
    if isinstance(sel, int):
        if sel * block == units:
            return t
        parts = [t.narrow(dim, g * units, sel * block) for g in range(gates)]
    else:
        idx = _expand(sel, block)
        parts = [t.index_select(dim, idx + g * units) for g in range(gates)]
    return parts[0] if gates == 1 else torch.cat(parts, dim)


def _layer_params(m: nn.Module, s: LayerSlicing, sel: dict[str, int | torch.Tensor]) -> dict[str, torch.Tensor]:
    """The parameters of layer ``m`` restricted to the channels ``sel[group]`` of its groups (views where possible,
    so gradients reach ``m``'s own parameters)."""
    out = {}
    for pname, t in m.named_parameters(recurse=False):
        for dim, role, gated in _PARAM_DIMS[s.kind].get(pname, ()):
            g = s.out if role == "out" else s.inp
            if g is None or (role == "in" and s.depthwise):
                continue
            t = _select(t, dim, sel[g], s.block if role == "in" else 1, s.gates if gated else 1)
        out[pname] = t
    return out


def _resized(m: nn.Module, s: LayerSlicing, widths: dict[str, int]) -> nn.Module:
    """An empty layer like ``m`` with the sizes of ``widths``."""
    out_k = widths[s.out] if s.out else None
    in_k = widths[s.inp] * s.block if s.inp else None
    if s.kind == "conv":
        o = out_k or m.out_channels
        i = o if s.depthwise else (in_k or m.in_channels)
        new = type(m)(i, o, m.kernel_size, m.stride, m.padding, m.dilation, o if s.depthwise else m.groups,
                      m.bias is not None, m.padding_mode)
    elif s.kind == "linear":
        new = nn.Linear(in_k or m.in_features, out_k or m.out_features, m.bias is not None)
    elif s.kind == "rnn":
        new = type(m)(in_k or m.input_size, out_k or m.hidden_size, 1, bias=m.bias, batch_first=m.batch_first)
    else:
        new = LMU(in_k or m.input_size, out_k or m.hidden_size, m.memory_size, m.theta, m.dt, m.activation,
                  m.batch_first)
        new.load_state_dict({k: v for k, v in m.state_dict().items() if k in ("A_bar", "B_bar")}, strict=False)
    return new.to(next(m.parameters()).dtype)


def sliced_module(module: nn.Module, plan: WidthPlan, widths: dict[str, int],
                  private: dict[str, dict[str, torch.Tensor]] | None = None) -> nn.Module:
    """A copy of ``module`` whose layers keep the first ``widths[group]`` channels of each group: smaller dense layers
    (same forward code) holding exact copies of the full parameters' prefixes — times the point's own per-channel
    scales and plus its own bias offsets where ``private`` (layer -> {"scale", "shift"}) has them."""
    small = copy.deepcopy(module)
    modules = dict(module.named_modules())
    sel = {g: int(k) for g, k in widths.items()}
    private = private or {}
    for name, s in plan.layers.items():
        m = modules[name]
        new = _resized(m, s, widths)
        with torch.no_grad():
            for pname, t in _point_params(m, s, sel, private.get(name)).items():
                getattr(new, pname).copy_(t)
        _replace(small, name, new.train(m.training))
    return small.eval()


def _check_layers(module: nn.Module, plan: WidthPlan, what: str) -> None:
    modules = dict(module.named_modules()) if module is not None else {}
    for name, s in plan.layers.items():
        m = modules.get(name)
        size = None if m is None or _kind(m) != s.kind else \
            (m.out_channels if s.kind == "conv" else m.out_features if s.kind == "linear" else m.hidden_size)
        if size is None or (s.out and size != plan.groups[s.out]):
            raise UnsupportedError(f"{what}: layer '{name}' is not the {s.kind} layer nest() sliced (the module was "
                                   "replaced after nesting); make the operating points again with "
                                   "edgekit.converters.nest")


# ---- importance sorting ----------------------------------------------------------------------------------------------


def _importance(module: nn.Module, plan: WidthPlan) -> dict[str, torch.Tensor]:
    """s_c per group: Σ over the group's layers of the L1 norm of channel c's weights, each layer over its mean."""
    modules = dict(module.named_modules())
    scores = {g: torch.zeros(c, dtype=torch.float64) for g, c in plan.groups.items()}
    with torch.no_grad():
        for name, s in plan.layers.items():
            m = modules[name]
            per_group: dict[str, torch.Tensor] = {}
            for pname, dims in _PARAM_DIMS[s.kind].items():
                t = getattr(m, pname, None)
                if not isinstance(t, torch.Tensor) or not pname.startswith(("weight", "encoder")):
                    continue
                for dim, role, gated in dims:
                    g = s.out if role == "out" else s.inp
                    if g is None or (role == "in" and s.depthwise):
                        continue
                    a = t.detach().abs().double().movedim(dim, 0).reshape(t.shape[dim], -1).sum(1)
                    gates = s.gates if gated else 1
                    block = s.block if role == "in" else 1
                    a = a.reshape(gates, plan.groups[g], block).sum((0, 2))
                    per_group[g] = per_group.get(g, 0) + a
            for g, a in per_group.items():
                scores[g] += a / a.mean().clamp_min(1e-12)
    return scores


def sort_channels(module: nn.Module, plan: WidthPlan) -> dict[str, torch.Tensor]:
    """Permute every group's channels in place, most important first (the full function is unchanged); returns the
    permutation of each group (new position -> old channel)."""
    perms = {g: torch.argsort(-s, stable=True) for g, s in _importance(module, plan).items()}
    modules = dict(module.named_modules())
    with torch.no_grad():
        for name, s in plan.layers.items():
            m = modules[name]
            for pname, t in _layer_params(m, s, perms).items():
                getattr(m, pname).copy_(t.clone())
            if isinstance(m, RNN_TYPES):
                m.flatten_parameters()
    return perms


# ---- training --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Schedule:
    """When operating point i joins the training and with which loss weight (DεpS; equations in the module
    docstring). ``steps`` is T, the optimizer steps of the whole fine-tuning."""

    budgets: tuple[float, ...]
    steps: int
    warmup: float = WARMUP
    shrink: float = SHRINK
    ramp: float = RAMP

    def smallest_width(self, step: int) -> float:
        """w_min(t): 1 during the warmup, then falling linearly to the smallest budget."""
        start = self.warmup * self.steps
        if step < start:
            return 1.0
        progress = min(1.0, (step - start) / max(1.0, self.shrink * self.steps))
        return 1.0 - (1.0 - self.budgets[0]) * progress

    def joins(self, i: int) -> int:
        """t_i: the first step at which w_min(t) ≤ b_i."""
        b = self.budgets[i]
        fraction = (1.0 - b) / max(1e-12, 1.0 - self.budgets[0])
        t = max(0, math.ceil(self.warmup * self.steps + fraction * max(1.0, self.shrink * self.steps) - 1e-9))
        while t > 0 and self.smallest_width(t - 1) <= b + 1e-12:  # rounding of the closed form
            t -= 1
        while self.smallest_width(t) > b + 1e-12:
            t += 1
        return t

    def weights(self, step: int) -> dict[int, float]:
        """w_i(t) of the narrower operating points trained at ``step`` (index -> loss weight)."""
        out = {}
        for i in range(len(self.budgets) - 1):
            t_i = self.joins(i)
            if step >= t_i:
                out[i] = min(1.0, (step - t_i + 1) / max(1.0, self.ramp * self.steps))
        return out


class _SubNetworks:
    """The narrower operating points as smaller copies of the module, run on slices of its live parameters."""

    def __init__(self, module: nn.Module, plan: WidthPlan, widths: list[dict[str, int]],
                 private: dict[int, dict[str, dict[str, torch.Tensor]]] | None = None):
        self.module = module
        self.plan = plan
        self.widths = widths
        self.private = private or {}
        self.skeletons = [sliced_module(module, plan, w) for w in widths]

    def forward(self, i: int, x: torch.Tensor) -> torch.Tensor:
        skeleton = self.skeletons[i]
        skeleton.train(self.module.training)
        tensors = dict(self.module.named_buffers())
        tensors.update(self.module.named_parameters())
        modules = dict(self.module.named_modules())
        sel = {g: int(k) for g, k in self.widths[i].items()}
        own = self.private.get(i, {})
        for name, s in self.plan.layers.items():
            for pname, t in _point_params(modules[name], s, sel, own.get(name)).items():
                tensors[f"{name}.{pname}"] = t
        with warnings.catch_warnings():  # an RNN's sliced weights are not one contiguous block: fine on the CPU
            warnings.filterwarnings("ignore", message=".*contiguous chunk of memory.*")
            out = functional_call(skeleton, tensors, (x,))
        return out[0] if isinstance(out, (tuple, list)) else out


def _point_params(m: nn.Module, s: LayerSlicing, sel: dict[str, int], own: dict[str, torch.Tensor] | None
                  ) -> dict[str, torch.Tensor]:
    """A layer's parameters at an operating point: the sliced prefixes, with the point's own scales and bias offsets
    (``own``) where it has them."""
    params = _layer_params(m, s, sel)
    return _with_private(params, own) if own else params


def _with_private(params: dict[str, torch.Tensor], own: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A layer's sliced parameters with an operating point's own per-output-channel scale (``scale``: the weight
    rows are multiplied by it) and bias offset (``shift``: added to the bias, or to ``bias_ih_l0`` of a recurrent
    layer)."""
    out = dict(params)
    if "scale" in own:
        for key in ("weight", "weight_ih_l0", "weight_hh_l0"):
            if key in out:
                w = out[key]
                out[key] = w * own["scale"].reshape((-1,) + (1,) * (w.dim() - 1))
    if "shift" in own:
        key = "bias" if "bias" in out else "bias_ih_l0"
        out[key] = out[key] + own["shift"]
    return out


def _private_params(module: nn.Module, plan: WidthPlan, widths: list[dict[str, int]], kind: str
                    ) -> tuple[nn.ParameterDict, dict[int, dict[str, dict[str, torch.Tensor]]]]:
    """Per narrower operating point, per conv/linear/recurrent layer that has a bias: its own bias offset (and, with
    kind "affine", its own per-output-row weight scale: a recurrent layer's gate rows of ``weight_ih`` and
    ``weight_hh``), as trainable parameters (init 0 and 1)."""
    store = nn.ParameterDict()
    private: dict[int, dict[str, dict[str, torch.Tensor]]] = {}
    modules = dict(module.named_modules())
    for i, w in enumerate(widths):
        sel = {g: int(k) for g, k in w.items()}
        for name, s in plan.layers.items():
            if s.kind not in ("conv", "linear", "rnn"):
                continue
            params = _layer_params(modules[name], s, sel)
            bias = params.get("bias", params.get("bias_ih_l0"))
            if bias is None:
                continue
            own = {}
            key = f"p{i}__{name.replace('.', '__')}"
            store[key + "__shift"] = nn.Parameter(torch.zeros_like(bias.detach()))
            own["shift"] = store[key + "__shift"]
            if kind == "affine":
                store[key + "__scale"] = nn.Parameter(torch.ones(bias.shape[0]))
                own["scale"] = store[key + "__scale"]
            private.setdefault(i, {})[name] = own
    return store, private


def subnetwork_forward(model: Model, index: int, x: torch.Tensor) -> torch.Tensor:
    """What the training computes for operating point ``index`` of a nested ``model`` (in memory) on inputs ``x``:
    the sliced network called with views of the full parameters. Tests compare it with :func:`operating_point`."""
    facts = _facts(model)
    plan = WidthPlan.from_json(facts)
    _check_layers(model.module, plan, f"model '{model.name}'")
    point = facts["operating_points"][index]
    return _SubNetworks(model.module, plan, [point["widths"]], {0: _stored_private(point)}).forward(0, x)


def _stored_private(point: dict) -> dict[str, dict[str, torch.Tensor]]:
    """An operating point's own scales and bias offsets as recorded in ``meta['nested']`` (layer -> tensors)."""
    return {name: {k: torch.tensor(v, dtype=torch.float32) for k, v in d.items()}
            for name, d in point.get("private", {}).items()}


def private_scales(model, index: int) -> dict[str, np.ndarray]:
    """Layer -> operating point ``index``'s own per-output-channel weight scale (the layers that have one): a
    narrower point's weights are the shared prefix times this scale, so its int8 build takes the widest point's
    weight scales times it (targets/mcu/nested.py) and stores the same int8 weights."""
    point = _facts(Model.load(model))["operating_points"][int(index)]
    return {name: np.asarray(d["scale"], np.float64) for name, d in point.get("private", {}).items() if "scale" in d}


class _FrozenNorms(nn.Module):
    """The module to train: BatchNorm layers left in it (not folded) stay in eval mode, so that every width reads the
    same frozen statistics."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x)

    def train(self, mode: bool = True):
        super().train(mode)
        for m in self.inner.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()
        return self


@dataclass
class _Prepared:
    """A network ready to nest: BatchNorm folded, channels sorted, its groups."""

    model: Model
    plan: WidthPlan
    notes: list[str]


def _prepare(model: Model) -> _Prepared:
    if model.module is None:
        raise UnsupportedError(f"model '{model.name}' has no PyTorch module (loaded from ONNX); nest the PyTorch "
                               "model")
    folded, notes = fold_batchnorm(model)
    folded_model = model.with_module(folded)
    plan = width_plan(folded_model)
    notes += plan.notes
    if not plan.groups:
        why = "; ".join(notes + plan.outputs) or "it has no torch.nn Conv, Linear, GRU, LSTM or LMU layers (a " \
                                                 "loaded .pt2 program holds operators, not layers)"
        raise UnsupportedError(f"model '{model.name}': no layer's channels can be sliced into nested widths ({why}); "
                               "nest the PyTorch model, whose layers edgekit can follow")
    sort_channels(folded, plan)
    _check_unchanged(model, folded_model)
    return _Prepared(folded_model, plan, notes)


def _check_unchanged(before: Model, after: Model) -> None:
    """Folding and sorting must not change what the network computes (an operator edgekit did not see might)."""
    x = before.test_x if before.test_x is not None else before.calib
    x = x[:64] if x is not None else before.example_inputs[0].numpy()
    a, b = before.predict(x), after.predict(x)
    scale = max(1.0, float(np.abs(a).max()))
    diff = float(np.abs(a - b).max())
    if not diff <= SORT_TOLERANCE * scale:
        raise UnsupportedError(f"model '{before.name}': folding BatchNorm and sorting channels changed its outputs "
                               f"by {diff:.3g}; its forward code mixes channels in a way the layer graph does not "
                               "show; nest a model built from torch.nn layers")


def _ce_and_distill(sub: torch.Tensor, teacher: torch.Tensor, y: torch.Tensor, distill: float,
                    temperature: float) -> torch.Tensor:
    loss = nn.functional.cross_entropy(sub, y)
    if distill <= 0:
        return loss
    kl = nn.functional.kl_div(nn.functional.log_softmax(sub / temperature, -1),
                              nn.functional.log_softmax(teacher / temperature, -1), reduction="batchmean",
                              log_target=True)
    return (1.0 - distill) * loss + distill * temperature ** 2 * kl


def nest(model, budgets=DEFAULT_BUDGETS, *, settings: TrainSettings | None = None, dataset=None,
         progress: bool | None = None, subnets_per_step: int | None = None, warmup: float = WARMUP,
         shrink: float = SHRINK, ramp: float = RAMP, distill: float = DISTILL,
         temperature: float = TEMPERATURE, full_weight: float = FULL_WEIGHT, boost: float = BOOST,
         sandwich: bool = False, private: str = PRIVATE) -> Model:
    """Fine-tune ``model`` so that its first-k-channel sub-networks at the width fractions ``budgets`` work, sharing
    its weights (see the module docstring for the method and ``meta['nested']``).

    - ``budgets``: width fractions in (0, 1], distinct, the largest 1.0 (sorted in the result).
    - ``settings``: epochs, learning rate, batch size, seed of the fine-tuning (default ``SETTINGS``: 10 epochs,
      Adam at 3e-3 — the narrow points start far from trained); ``epochs=0`` only folds and sorts (no training data
      needed then).
    - ``dataset=(x, y)``: training data instead of the model's own training split.
    - ``subnets_per_step``: None trains every allowed operating point each step; n draws n of them (SortedNet).
      ``sandwich``: the smallest allowed point plus one other drawn uniformly each step (overrides it).
    - ``warmup``, ``shrink``, ``ramp``: the DεpS schedule as fractions of the steps; ``distill`` α and
      ``temperature`` τ of in-place distillation (α = 0: cross-entropy only); ``full_weight`` λ and ``boost`` γ
      weigh the losses (λ for the full network, b^-γ for width b).
    - ``private``: "bias" (default) gives every narrower point its own bias offsets, "affine" also its own
      per-channel weight scales, "none" shares every parameter.

    Returns a new Model (full width, BatchNorm folded, channels sorted); the input is unchanged.
    """
    budgets = check_budgets(budgets)
    model = Model.load(model)
    settings = settings or SETTINGS
    for name, value in (("warmup", warmup), ("shrink", shrink), ("ramp", ramp), ("distill", distill)):
        if not 0.0 <= value <= 1.0:
            raise UsageError(f"{name}={value}: give a fraction in [0, 1]")
    if warmup + shrink > 1.0:
        raise UsageError(f"warmup + shrink = {warmup + shrink:g}: the schedule must end within the fine-tuning (≤ 1)")
    if private not in PRIVATE_KINDS:
        raise UsageError(f"private={private!r}: use one of {', '.join(PRIVATE_KINDS)}")
    if temperature <= 0:
        raise UsageError(f"temperature={temperature}: give a positive number")
    if full_weight < 0 or not math.isfinite(boost):
        raise UsageError(f"full_weight={full_weight}, boost={boost}: give a weight ≥ 0 and a finite exponent")
    if settings.epochs < 0:
        raise UsageError(f"epochs={settings.epochs}: give 0 or more")
    if subnets_per_step is not None and subnets_per_step < 1:
        raise UsageError(f"subnets_per_step={subnets_per_step}: give 1 or more (None: all of them)")
    data = training_data(model, dataset) if settings.epochs > 0 else None
    if settings.epochs > 0 and data is None:
        raise DataError(f"model '{model.name}' has no training data: nested widths need fine-tuning; pass "
                        "dataset=(x, y) (or epochs=0 to only fold and sort)")
    prep = _prepare(model)
    module, plan, notes = prep.model.module, prep.plan, list(prep.notes)
    widths = [plan.widths(b) for b in budgets]

    owned: dict[int, dict] = {}
    schedule = Schedule(budgets, settings.steps(len(data[0])) if data is not None else 0, warmup, shrink, ramp)
    if data is not None:
        trained = _FrozenNorms(module)
        own = None
        if private != "none":
            trained.private, own = _private_params(module, plan, widths[:-1], private)
        subnets = _SubNetworks(module, plan, widths[:-1], own)
        inputs = torch.from_numpy(np.ascontiguousarray(data[0], np.float32))
        state = {"step": 0}
        draw = torch.Generator().manual_seed(settings.seed + 1)

        def loss(out: torch.Tensor, y: torch.Tensor, batch: torch.Tensor) -> torch.Tensor:
            total = full_weight * nn.functional.cross_entropy(out, y)
            active = schedule.weights(state["step"])
            chosen = sorted(active)
            if sandwich and len(chosen) > 2:  # the smallest allowed point and one other drawn uniformly
                chosen = [chosen[0], chosen[1 + int(torch.randint(len(chosen) - 1, (1,), generator=draw))]]
            elif subnets_per_step is not None and len(chosen) > subnets_per_step:
                pick = torch.randperm(len(chosen), generator=draw)[:subnets_per_step]
                chosen = sorted(chosen[int(j)] for j in pick)
            x = inputs[batch]
            teacher = out.detach()
            for i in chosen:
                sub = _ce_and_distill(subnets.forward(i, x), teacher, y, distill, temperature)
                total = total + active[i] * budgets[i] ** -boost * sub
            return total

        def on_step() -> None:
            state["step"] += 1

        fine_tune(trained, data[0], data[1], settings, on_step,
                  f"nesting {model.name} ({', '.join(f'{b:g}' for b in budgets)})", progress, loss=loss)
        module.eval()
        for i, layers in (own or {}).items():
            owned[i] = {name: {k: t.detach().tolist() for k, t in d.items()}
                        for name, d in layers.items()}
    else:
        notes.append("no fine-tuning (epochs=0): the operating points are the importance-sorted prefixes of the "
                     "pretrained, BatchNorm-folded network")

    sampling = "every allowed operating point" if subnets_per_step is None else \
        f"{subnets_per_step} allowed operating point(s) drawn uniformly"
    if sandwich:
        sampling = "the smallest allowed operating point and one other drawn uniformly (sandwich rule)"
    facts = {
        "budgets": list(budgets), **plan.to_json(),
        "operating_points": [{"budget": b, "widths": w, **({"private": owned[i]} if i in owned else {})}
                             for i, (b, w) in enumerate(zip(budgets, widths))],
        "method": METHOD.format(sampling=sampling, full_weight=full_weight, boost=boost,
                                private={"none": "", "bias": "; each narrower point's own bias offsets",
                                         "affine": "; each narrower point's own per-channel scales and bias "
                                                   "offsets"}[private] if data is not None else "", warmup=warmup,
                                smallest=budgets[0], shrink=shrink, ramp=ramp, distill=distill,
                                temperature=f", τ={temperature:g}" if distill > 0 else ""),
        "epochs": int(settings.epochs),
        "schedule": {"steps": schedule.steps, "warmup": warmup, "shrink": shrink, "ramp": ramp, "distill": distill,
                     "temperature": temperature, "full_weight": full_weight, "boost": boost, "private": private,
                     "subnets_per_step": subnets_per_step, "sandwich": sandwich, "lr": settings.lr,
                     "batch_size": settings.batch_size, "seed": settings.seed,
                     "joins_at_step": [schedule.joins(i) for i in range(len(budgets) - 1)] + [0]},
        "notes": notes,
    }
    meta = {k: v for k, v in model.meta.items() if k not in _STALE_META}
    meta["nested"] = facts
    result = dataclasses.replace(model, module=module.eval(), _graph=None, meta=meta)
    for record, point in zip(facts["operating_points"], operating_points(result)):
        analysis = point.analyze()
        record.update(params=int(analysis.params), macs=int(analysis.macs), float_accuracy=point.accuracy())
    return result


# ---- operating points ------------------------------------------------------------------------------------------------


def _facts(model: Model) -> dict:
    facts = model.meta.get("nested")
    if not facts:
        raise UsageError(f"model '{model.name}' has no operating points (no meta['nested']); make them with "
                         "edgekit.converters.nest or edgekit convert MODEL --budgets 0.25,0.5,0.75,1.0")
    return facts


def operating_point(model, index: int) -> Model:
    """Operating point ``index`` (0 = narrowest; -1 or the last = the full width) of a nested model as an ordinary,
    smaller dense Model: same data, name ``f"{model.name}@{budget}"``, ``meta['operating_point']``.

    Works on what :func:`nest` returns (slices its module) and on a model loaded from a ``.pt2`` written by
    ``edgekit.loaders.save_pt2`` (the archive holds every operating point's program)."""
    model = Model.load(model)
    facts = _facts(model)
    points = facts["operating_points"]
    if not isinstance(index, (int, np.integer)) or not -len(points) <= index < len(points):
        raise UsageError(f"operating point {index}: model '{model.name}' has {len(points)} (0 .. {len(points) - 1})")
    index = int(index) % len(points)
    budget = float(points[index]["budget"])
    meta = {k: v for k, v in model.meta.items() if k not in _STALE_META}
    meta["operating_point"] = {"index": index, "budget": budget, "of": len(points),
                               "widths": dict(points[index]["widths"])}
    name = f"{model.name}@{budget}"
    archive = model.meta.get("nested_archive")
    if index == len(points) - 1 and (archive is not None or model.module is None):
        module = copy.deepcopy(model.module) if model.module is not None else None
        point = dataclasses.replace(model, module=module, name=name, meta=meta)
        if module is not None:
            point._graph = None
        return point
    if archive is not None:
        from edgekit.loaders import nested_program

        module = nested_program(archive, index, f"{model.meta.get('source', model.name)}")
    else:
        if model.module is None:
            raise UnsupportedError(f"model '{model.name}' holds no module to cut operating point {index} from; "
                                   "load it from its .pt2 file")
        plan = WidthPlan.from_json(facts)
        _check_layers(model.module, plan, f"model '{model.name}'")
        module = sliced_module(model.module, plan, {g: int(k) for g, k in points[index]["widths"].items()},
                               _stored_private(points[index]))
        _check_runs(model, module, budget)
    # a graph-only model (edgekit/modelcache.py) carries input shapes instead of example inputs
    example = model.example_inputs or tuple(torch.zeros(shape) for shape in model.input_shapes)
    return dataclasses.replace(model, module=module.eval(), example_inputs=example, name=name, meta=meta,
                               _graph=None, _input_shapes=None)


def _check_runs(model: Model, module: nn.Module, budget: float) -> None:
    """The sliced module must run and give outputs of the full model's shape (forward code that hard-codes a
    channel count, e.g. ``x.view(-1, 512)``, does not)."""
    x = model.example_inputs
    try:
        with torch.no_grad():
            got = module(*x)
            want = model.module(*x)
        got = got[0] if isinstance(got, (tuple, list)) else got
        want = want[0] if isinstance(want, (tuple, list)) else want
        ok = tuple(got.shape) == tuple(want.shape)
        problem = f"outputs of shape {tuple(got.shape)} instead of {tuple(want.shape)}"
    except Exception as e:  # the forward code's own error
        ok, problem = False, (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
    if not ok:
        raise UnsupportedError(f"model '{model.name}': the sub-network at width {budget:g} does not run ({problem}); "
                               "its forward code probably hard-codes a channel count (write x.flatten(1) instead of "
                               "x.view(-1, 512))")


def operating_points(model) -> list[Model]:
    """Every operating point of a nested model, narrowest first (the last is the full width)."""
    model = Model.load(model)
    return [operating_point(model, i) for i in range(len(_facts(model)["operating_points"]))]


def train_separately(model, budget: float, settings: TrainSettings | None = None, dataset=None, *,
                     progress: bool | None = None) -> Model:
    """The baseline for operating point ``budget``: a network of the same widths trained alone.

    Initialised as :func:`nest` initialises its operating point — the pretrained network with BatchNorm folded and
    channels importance-sorted, cut to the first k channels of every group — then fine-tuned with cross-entropy
    alone (no distillation, no shared weights) for ``settings`` (the same epochs and learning rate as the nested run
    it is compared with). Returns a dense Model named ``f"{model.name}@{budget}-alone"`` with
    ``meta['separately_trained']``.
    """
    if not isinstance(budget, (int, float)) or not (math.isfinite(budget) and 0.0 < budget <= 1.0):
        raise UsageError(f"budget {budget}: give a width fraction in (0, 1]")
    model = Model.load(model)
    settings = settings or SETTINGS
    data = training_data(model, dataset) if settings.epochs > 0 else None
    if settings.epochs > 0 and data is None:
        raise DataError(f"model '{model.name}' has no training data; pass dataset=(x, y)")
    prep = _prepare(model)
    widths = prep.plan.widths(float(budget))
    module = sliced_module(prep.model.module, prep.plan, widths)
    _check_runs(prep.model, module, budget)
    if data is not None:
        fine_tune(_FrozenNorms(module), data[0], data[1], settings, None,
                  f"training {model.name} at width {budget:g} alone", progress)
    meta = {k: v for k, v in model.meta.items() if k not in _STALE_META}
    meta["separately_trained"] = {"budget": float(budget), "widths": widths, "epochs": int(settings.epochs),
                                  "lr": settings.lr, "init": "importance-sorted slice of the BatchNorm-folded "
                                                             "pretrained network"}
    return dataclasses.replace(model, module=module.eval(), name=f"{model.name}@{float(budget)}-alone", meta=meta,
                               _graph=None)


__all__ = ["nest", "operating_point", "operating_points", "train_separately", "check_budgets", "width",
           "width_plan", "fold_batchnorm", "sort_channels", "sliced_module", "subnetwork_forward", "Schedule",
           "WidthPlan", "LayerSlicing", "DEFAULT_BUDGETS"]
