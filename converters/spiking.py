"""ANN -> spiking network: Model -> Model whose module is an edgekit SpikingNetwork (edgekit/layers/spiking.py).

Where it sits: converters/. ``to_spiking`` builds the spiking network, fine-tunes it with surrogate gradients on the
model's training data, moves its numbers onto Loihi 2's fixed-point grid (edgekit/layers/loihi_format.py) and
records the spike activity on the test inputs in ``meta['spiking']``. targets/neuromorphic builds the result for
loihi2 / spinnaker2.

Three kinds:

* ``rate`` — plain CNN/MLP (conv/linear + ReLU incl. depthwise, pooling, crops such as a causal convolution's
  ``x[:, :, :T]``, a final linear). ReLU units become non-leaky
  integrate-and-fire neurons (β = 1, reset to zero, threshold 1) and the image is presented for T steps as graded
  input (direct encoding); the firing rate over T approximates the ReLU activation. Weights and biases are
  normalised from data (Diehl et al. 2015; Rueckauer et al. 2017): with λ_l the p-th percentile (99.9 %) of layer
  l's ReLU activations on training inputs, W_l ← W_l · λ_{l−1} / λ_l and b_l ← b_l / λ_l, so a neuron's rate
  saturates where the ANN's activation reaches λ_l. Max pooling has no rate equivalent and becomes average pooling
  (folded into the next connection). The last linear layer becomes the readout: the mean of its input over T.
* ``lmuformer`` — the spiking LMU of LMUFormer (Liu, Datta, Li, Beerel, ICLR 2024), compact for short sequences:
  a causal convolutional patch embedding (kernel 3 over time, as three connections with delays 1–3) into LIF
  neurons; the LMU with u_t = LIF(W_u · embed) (``u_size`` units, each with its own memory), the memory kept as the
  linear state-space recurrence m_t = Ā m_{t−1} + B̄ u_{t−1} (a graded population: LegT Ā, B̄ with zero-order
  hold, from the ANN's LMU), its output passed through a per-unit scale and bias (LMUFormer's BatchNorm) into LIF
  neurons, h = LIF(W_m m_spk + W_x embed), a 1×1 projection in LIF neurons added back to the embedding (residual),
  then a spiking channel mixer (two 1×1 layers of LIF neurons, residual again) and the readout averaged over the
  last ``flush`` steps (after the sequence: the memory then holds the whole window).
* ``l2mu`` — L2MU (Pedersini et al., "L2MU: spiking Legendre memory units"): every part of the LMU is a population
  of LIF neurons — an input module (a population of LIF neurons with their own gains and biases per input channel
  turns the real-valued signal into spikes), u = LIF(e_x · in + e_h · h + e_m · m), the memory m = LIF(Ā m + B̄ u)
  on spikes (fixed LegT Ā, B̄; a bias near threshold so u's spikes move it), h = LIF(W_x · in + W_h · h + W_m · m)
  — read out by averaging W_out h over the last steps. Gradients are truncated through the spiking recurrences
  (the memory's Ā, W_h and the feedback into u): through 70 steps of Ā ≈ I on spikes surrogate gradients grow by
  ~10^12 and drown every other gradient.

Measured (bench/neuromorphic.py; test splits): digits-lmu (ANN 95.56 %): ``lmuformer`` 95.0 % after its default 80
epochs (91.1 % after 40); ``l2mu`` 53.1 % (u_size 16, 80 epochs; 45.3 % with u_size 4 and 40 epochs). kws-lmu (ANN
63.3 %, a one-dimensional memory): ``lmuformer`` 67.4 %, ``l2mu`` 36.3 % (19 epochs each).

Where L2MU loses — an ablation on digits-lmu, everything else as the default ``l2mu``: the **memory population**.
With the memory as the linear state m = Ā m + B̄ u sent as graded spikes (``memory="graded"``; input module, u, h
and the readout stay LIF populations) the network reaches 90.3 % (80 epochs), against 53.1 % with the memory as LIF
neurons. The memory's time constant does not rescue the spiking one: β = 0.75 (default) 53.1 %, integrate-and-fire
(``memory_beta=1``) 47.8 %; dropping the recurrences into u and h 34.7 %. A LIF memory neuron forgets its sub-threshold
charge at the rate β and loses all of it at each spike (reset to zero), so the Legendre state it should hold for
θ = 64 steps is quantised to a few spikes and decays in a few steps: the delay system Ā ≈ I + small terms only holds
a sequence when its state is kept exactly. Best variant found: ``memory="graded"`` (90.3 %, 5.3 points below the
ANN); use ``lmuformer`` for accuracy.

Both LMU kinds are new networks (only Ā, B̄ come from the ANN), trained with knowledge distillation from the ANN
by default. Before training, :func:`calibrate_currents` scales each population's input so none starts silent.

Timing: every connection delivers the spikes of the previous step (Loihi's synaptic delay), also inside the
recurrences; sequences run ``flush`` extra zero-input steps so the last inputs reach the readout.

Fine-tuning: Adam with cosine decay on cross-entropy (converters/finetune.py); the last third of the epochs trains
through Loihi's weight/bias grid with straight-through rounding, then everything is snapped to that grid.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import numpy as np
import torch
from torch import nn

from edgekit.converters.finetune import TrainSettings, fine_tune, training_data
from edgekit.errors import DataError, UnsupportedError, UsageError
from edgekit.graph_exec import run_graph
from edgekit.layers import EGRU, LMU
from edgekit.layers import loihi_format
from edgekit.layers.spiking import (ConnectionSpec, PopulationSpec, SpikingClassifier, SpikingNetwork,
                                    find_network)
from edgekit.model import Model

KINDS = ("auto", "rate", "lmuformer", "l2mu")
# timesteps (static: steps per image; sequences: extra flush steps), fine-tuning budget in optimizer steps, learning
# rate. The default epochs are those that make the budget on the training set, at least 4: on the 1,437 digits (23
# batches of 64) 12 epochs for rate and 80 for the LMUs (lmuformer on digits-lmu: 40 epochs 91.1 %, 80 94.7 %, ANN
# 95.6 %); on the 6,160 keyword clips (97 batches) 4 and 19.
DEFAULTS = {
    "rate": {"timesteps": 16, "fine_tune_steps": 276, "lr": 1e-3},
    "lmuformer": {"timesteps": 10, "fine_tune_steps": 1840, "lr": 3e-3},
    "l2mu": {"timesteps": 6, "fine_tune_steps": 1840, "lr": 2e-3},
}
NORMALISATION_PERCENTILE = 99.9
NORMALISATION_SAMPLES = 512
# Fraction of the fine-tuning epochs trained through the fixed-point grid (the last ones).
GRID_EPOCH_FRACTION = 1 / 3


def _to_spiking(model, kind: str = "auto", timesteps: int | None = None, fine_tune_epochs: int | None = None, *,
               lr: float | None = None, batch_size: int = 64, percentile: float = NORMALISATION_PERCENTILE,
               distill: bool | None = None, dataset=None, seed: int = 0, progress: bool | None = None,
               **arch) -> Model:
    """Convert ``model`` into a spiking network and fine-tune it (see the module docstring for the kinds).

    ``timesteps``: for images, the steps each image is shown (T of rate coding); for sequences, the extra steps after
    the sequence. ``fine_tune_epochs`` 0 skips training (a ``rate`` conversion is then the normalised ANN as is); None
    (default) trains for the kind's budget of optimizer steps (DEFAULTS: 12 epochs of the digits for rate, 80 for the
    LMUs; at least 4).
    ``distill`` (default: on for the LMU kinds, which are new networks rather than converted weights) adds
    knowledge distillation from the ANN: loss = CE + T² · KL(softmax(z_ANN / T) ‖ softmax(z_SNN / T)), T = 2.
    ``arch`` sets sizes of the LMU kinds (``embed``, ``hidden``, ``u_size``, ``beta``, ``encoder_size`` ...).
    Returns a Model whose ``meta['spiking']`` holds accuracies and the spike activity on the test inputs.
    """
    m = Model.load(model)
    if find_network(m.module) is not None:
        raise UsageError(f"model '{m.name}' is already a spiking network")
    if m.module is None:
        raise UnsupportedError(f"model '{m.name}' has no PyTorch module (loaded from .onnx); to_spiking needs the "
                               "torch module to fine-tune")
    if kind not in KINDS:
        raise UsageError(f"kind={kind!r}: choose one of {', '.join(KINDS)}")
    layers = list(m.module.modules())
    if any(isinstance(x, EGRU) for x in layers):
        raise UsageError(f"model '{m.name}' is an event-based GRU already (its units send sparse events); compile it "
                         "for spinnaker2 directly instead of converting it")
    has_lmu = any(isinstance(x, LMU) for x in layers)
    if kind == "auto":
        kind = "lmuformer" if has_lmu else "rate"
    if kind in ("lmuformer", "l2mu") and not has_lmu:
        raise UnsupportedError(f"kind='{kind}' converts a model with an LMU layer (edgekit.layers.LMU); "
                               f"'{m.name}' has none — use kind='rate' for a CNN/MLP")
    if kind == "rate" and any(isinstance(x, (nn.GRU, nn.LSTM, nn.RNN, LMU)) for x in layers):
        raise UnsupportedError(f"model '{m.name}' is recurrent; rate conversion handles feed-forward CNN/MLPs "
                               "(LMU models: kind='lmuformer' or 'l2mu'; GRU: edgekit.converters.recurrent.to_egru)")
    shipped = _shipped(m, kind, defaults=(timesteps, fine_tune_epochs, lr, dataset, arch, distill) ==
                       (None, None, None, None, {}, None) and batch_size == 64 and seed == 0 and
                       percentile == NORMALISATION_PERCENTILE)
    if shipped is not None:
        return shipped
    data = training_data(m, dataset)
    if data is None:
        raise DataError(f"model '{m.name}' has no training data; to_spiking fine-tunes with surrogate gradients — "
                        "pass dataset=(x, y)")
    x_train, y_train = data
    cfg = DEFAULTS[kind]
    timesteps = int(cfg["timesteps"] if timesteps is None else timesteps)
    if fine_tune_epochs is None:
        epochs = max(4, round(cfg["fine_tune_steps"] / math.ceil(len(x_train) / batch_size)))
    else:
        epochs = int(fine_tune_epochs)
    lr = float(cfg["lr"] if lr is None else lr)
    if timesteps < 1 or epochs < 0:
        raise UsageError("timesteps must be >= 1 and fine_tune_epochs >= 0")
    torch.manual_seed(seed)
    notes: list[str] = []
    if kind == "rate":
        net = rate_network(m, timesteps, x_train, percentile, notes)
    else:
        lmu, head = _lmu_parts(m.module)
        build = lmuformer_network if kind == "lmuformer" else l2mu_network
        net = build(lmu, head, x_train, flush=timesteps, **arch)
        calibrate_currents(net, x_train)
    module = SpikingClassifier(net)
    ann_acc = m.accuracy()
    spiking = {"kind": kind, "steps": net.steps, "input_mode": net.input_mode, "ann_accuracy": ann_acc,
               "normalisation_percentile": percentile if kind == "rate" else None}
    if kind == "rate" and m.test_x is not None and m.test_y is not None:
        spiking["accuracy_before_fine_tuning"] = _accuracy(net, m.test_x, m.test_y)
    if epochs:
        grid_epochs = max(1, round(epochs * GRID_EPOCH_FRACTION))
        float_epochs = epochs - grid_epochs
        loss = _distillation_loss(m, x_train) if (kind != "rate" if distill is None else distill) else None
        if float_epochs:
            fine_tune(module, x_train, y_train, TrainSettings(float_epochs, lr, batch_size, seed=seed),
                      description=f"spiking ({kind})", progress=progress, loss=loss)
            if m.test_x is not None and m.test_y is not None:
                spiking["accuracy_float_weights"] = _accuracy(net, m.test_x, m.test_y)
        loihi_format.fake_quantize(net)
        fine_tune(module, x_train, y_train, TrainSettings(grid_epochs, lr / 3, batch_size, seed=seed + 1),
                  description=f"spiking ({kind}, Loihi grid)", progress=progress, loss=loss)
        loihi_format.fake_quantize(net, False)
        spiking["fine_tune_epochs"] = {"float": float_epochs, "loihi_grid": grid_epochs}
        spiking["distilled"] = loss is not None
    loihi_format.snap(net)
    module.eval()
    out = Model.from_module(module, m.example_inputs, name=f"{m.name}-snn", calib=m.calib, test_x=m.test_x,
                            test_y=m.test_y, train_x=m.train_x, train_y=m.train_y)
    out.meta.update({k: v for k, v in m.meta.items() if k not in ("quant", "prune")})
    if m.test_x is not None:
        spiking.update(net.activity(m.test_x, m.test_y))
    spiking["notes"] = notes
    out.meta["spiking"] = spiking
    return out


# ---------------------------------------------------------------------------------------------------------------------
# Shipped conversions of the bundled examples

def weights_digest(module: nn.Module) -> str:
    """A hash of a module's parameters and buffers (names, shapes, values): which ANN a shipped conversion is of."""
    import hashlib

    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def shipped_files(example: str, kind: str):
    from edgekit.zoo import WEIGHTS_DIR

    stem = WEIGHTS_DIR / f"{example}.{kind}"
    return stem.with_suffix(stem.suffix + ".json"), stem.with_suffix(stem.suffix + ".npz")


def save_shipped(ann: Model, snn: Model) -> tuple:
    """Write ``snn`` (to_spiking's result with default settings on the bundled example ``ann``) next to the example's
    weights, with the digest of the ANN it was converted from (examples/convert_spiking.py)."""
    import json

    example = str(ann.meta.get("source", "")).removeprefix("example:")
    net = find_network(snn.module)
    desc, arrays = net.spec()
    kind = snn.meta["spiking"]["kind"]
    meta = {k: v for k, v in snn.meta["spiking"].items() if k in ("kind", "ann_accuracy", "normalisation_percentile",
                                                                  "accuracy_before_fine_tuning",
                                                                  "accuracy_float_weights", "fine_tune_epochs",
                                                                  "distilled", "notes")}
    doc = {"example": example, "ann_digest": weights_digest(ann.module), "network": desc, "conversion": meta}
    js, npz = shipped_files(example, kind)
    js.write_text(json.dumps(doc, indent=1) + "\n")
    np.savez_compressed(npz, **arrays)
    return js, npz


def _shipped(m: Model, kind: str, defaults: bool) -> Model | None:
    """The shipped conversion of a bundled example, when ``m`` is that example unchanged and the call asks for the
    default conversion: compiling it for a neuromorphic chip then takes seconds, not the 10-20 minutes of
    fine-tuning. The spike activity is measured again on the test inputs."""
    import json

    source = str(m.meta.get("source", ""))
    if not defaults or not source.startswith("example:") or m.meta.get("prune") or m.meta.get("quant"):
        return None
    js, npz = shipped_files(source.removeprefix("example:"), kind)
    if not (js.is_file() and npz.is_file()):
        return None
    doc = json.loads(js.read_text())
    if doc.get("ann_digest") != weights_digest(m.module):
        return None
    with np.load(npz) as data:
        net = SpikingNetwork.from_spec(doc["network"], {k: data[k] for k in data.files})
    module = SpikingClassifier(net).eval()
    out = Model.from_module(module, m.example_inputs, name=f"{m.name}-snn", calib=m.calib, test_x=m.test_x,
                            test_y=m.test_y, train_x=m.train_x, train_y=m.train_y)
    out.meta.update({k: v for k, v in m.meta.items() if k not in ("quant", "prune")})
    spiking = {**doc["conversion"], "steps": net.steps, "input_mode": net.input_mode,
               "shipped": f"converted once by examples/convert_spiking.py ({js.name}); to_spiking with other "
                          "settings, or on a changed model, fine-tunes anew"}
    if m.test_x is not None:
        spiking.update(net.activity(m.test_x, m.test_y))
    out.meta["spiking"] = spiking
    return out


# ---------------------------------------------------------------------------------------------------------------------
# Statistics


DISTILL_TEMPERATURE = 2.0


def _distillation_loss(ann: Model, x_train: np.ndarray):
    """CE + T² · KL to the ANN's softened outputs on the same training inputs (Hinton et al. 2015)."""
    teacher = torch.from_numpy(ann.predict(x_train).astype(np.float32))
    t = DISTILL_TEMPERATURE

    def loss(out: torch.Tensor, labels: torch.Tensor, batch: torch.Tensor) -> torch.Tensor:
        soft = torch.nn.functional.kl_div(torch.log_softmax(out / t, -1), torch.softmax(teacher[batch] / t, -1),
                                          reduction="batchmean")
        return torch.nn.functional.cross_entropy(out, labels) + t * t * soft

    return loss


def _accuracy(net: SpikingNetwork, x: np.ndarray, y: np.ndarray, batch_size: int = 256) -> float:
    logits, _ = net.measure(x, batch_size)
    return float((logits.argmax(-1) == y).mean())


# ---------------------------------------------------------------------------------------------------------------------
# Rate coding for CNN/MLPs


def rate_network(model: Model, steps: int, x_train: np.ndarray, percentile: float, notes: list[str]) -> SpikingNetwork:
    """The normalised IF network of a feed-forward ReLU CNN/MLP (before fine-tuning)."""
    graph = model.deploy_graph
    nodes = [n for n in graph.nodes if n.op != "input"]
    bad = []
    prev = graph.inputs[0].name
    for n in nodes:
        if n.inputs != [prev]:
            bad.append(f"layer '{n.name}' ({n.op}) does not read the layer before it (branches/residuals)")
        if n.op == "select":
            try:
                _crops(n, graph[n.inputs[0]].shape)
            except UnsupportedError as e:
                bad.append(str(e))
        elif n.op not in ("conv2d", "linear", "maxpool2d", "avgpool2d", "global_avgpool", "flatten", "reshape"):
            bad.append(f"layer '{n.name}': operator '{n.op}'")
        elif n.op in ("conv2d", "linear") and n.attrs.get("activation") not in (None, "relu", "relu6"):
            bad.append(f"layer '{n.name}': activation '{n.attrs['activation']}'")
        prev = n.name
    if nodes and (nodes[-1].op != "linear" or nodes[-1].attrs.get("activation")):
        bad.append(f"the last layer '{nodes[-1].name}' must be a linear layer without activation (the readout)")
    if bad:
        raise UnsupportedError("rate conversion handles chains of conv/linear + ReLU, pooling, crops and flatten "
                               "ending in a linear layer; not: " + "; ".join(bad))
    if any(n.attrs.get("activation") == "relu6" for n in nodes):
        notes.append("ReLU6 converted like ReLU (the normalisation already caps rates)")
    if any(n.op == "maxpool2d" for n in nodes):
        notes.append("max pooling replaced by average pooling (spike rates have no max); fine-tuning adapts")

    sample = np.ascontiguousarray(x_train[:NORMALISATION_SAMPLES], np.float32)
    values = run_graph(graph, [sample], keep_all=True)
    in_name = graph.inputs[0].name
    in_shape = tuple(graph.inputs[0].shape[1:])
    populations = [PopulationSpec("input", "input", in_shape,
                                  unit_exp=loihi_format.input_unit_exp(float(np.abs(x_train).max())))]
    connections, biases = [], {}
    pending: list[dict] = []
    shape = in_shape
    prev_pop, prev_lambda = "input", 1.0
    for i, n in enumerate(nodes):
        if n.op == "select":
            crops = _crops(n, graph[n.inputs[0]].shape)
            if connections and prev_pop == connections[-1][0].target and not pending:
                # a crop right after a layer's neurons: that layer's population keeps only the cropped units (its
                # connection crops what it computes), so no neuron is simulated that the ANN throws away
                spec, w = connections[-1]
                connections[-1] = (dataclasses.replace(spec, ops=spec.ops + tuple(crops)), w)
                last = populations[-1]
                populations[-1] = dataclasses.replace(last, shape=tuple(n.shape[1:]))
            else:
                pending.extend(crops)
            shape = tuple(n.shape[1:])
            continue
        if n.op in ("maxpool2d", "avgpool2d"):
            if n.attrs.get("padding", [0, 0]) != [0, 0] or n.attrs.get("ceil_mode"):
                raise UnsupportedError(f"layer '{n.name}': pooling with padding or ceil_mode")
            pending.append({"op": "avgpool2d", "kernel": list(n.attrs["kernel_size"]), "stride": list(n.attrs["stride"])})
        elif n.op == "global_avgpool":
            pending.append({"op": "avgpool2d", "kernel": list(graph[n.inputs[0]].shape[2:]),
                            "stride": list(graph[n.inputs[0]].shape[2:])})
        elif n.op in ("flatten", "reshape"):
            if len(n.shape) != 2:
                raise UnsupportedError(f"layer '{n.name}': reshape to {n.shape[1:]} (only flattening is supported)")
            pending.append({"op": "flatten"})
        else:
            w = n.params["weight"].astype(np.float64)
            b = n.params.get("bias", np.zeros(w.shape[0])).astype(np.float64)
            if n.op == "conv2d":
                a = n.attrs
                op = {"op": "conv2d", "stride": a["stride"], "padding": a["padding"], "dilation": a["dilation"],
                      "groups": a["groups"]}
            else:
                if len(shape) > 1 and not any(o["op"] == "flatten" for o in pending):
                    pending.append({"op": "flatten"})
                op = {"op": "linear"}
            readout = n is nodes[-1]
            act = values[n.name]
            if i + 1 < len(nodes) and nodes[i + 1].op == "select":  # normalise on what the crop keeps
                act = values[nodes[i + 1].name]
            lam = 1.0 if readout else float(np.percentile(act, percentile))
            if not readout and lam <= 0:
                raise DataError(f"layer '{n.name}' is never active on the training inputs (its ReLU outputs are all 0)")
            scale_w, scale_b = prev_lambda / lam, 1.0 / lam
            if readout:
                scale_w, scale_b = prev_lambda, 1.0
            name = n.name.replace(".", "_")
            kind = "readout" if readout else "lif"
            pops_shape = tuple(n.shape[1:])
            populations.append(PopulationSpec(name, kind, pops_shape, bias=True))
            connections.append((ConnectionSpec(f"{prev_pop}_to_{name}", (prev_pop,), name, tuple(pending + [op])),
                                (w * scale_w).astype(np.float32)))
            biases[name] = (b * scale_b).astype(np.float32).reshape(populations[-1].bias_shape)
            pending = []
            prev_pop, prev_lambda = name, lam
        shape = tuple(n.shape[1:])
    return SpikingNetwork(populations, connections, steps, "static", biases,
                          info={"kind": "rate", "source": model.name, "classes": int(nodes[-1].shape[-1])})


def _crops(node, in_shape) -> list[dict]:
    """The ``crop`` ops of a ``select`` node that keeps a contiguous range of rows on axes after the batch (e.g. a
    causal convolution's ``x[:, :, :T]``); a one-line error naming the layer for any other indexing."""
    ops = []
    for axis, entry in enumerate(node.attrs.get("index", [])):
        if not (isinstance(entry, (list, tuple)) and entry and entry[0] == "slice"):
            raise UnsupportedError(f"layer '{node.name}': indexing {entry!r} (rate conversion takes slices that keep "
                                   "a range of rows, as a causal crop does)")
        start, stop, step = (list(entry[1:]) + [None, None, None])[:3]
        size = int(in_shape[axis])
        start = 0 if start is None else int(start) % size if int(start) < 0 else int(start)
        stop = size if stop is None else (int(stop) % size if int(stop) < 0 else min(int(stop), size))
        if step not in (None, 1) or (axis == 0 and (start, stop) != (0, size)):
            raise UnsupportedError(f"layer '{node.name}': a strided or batch-axis slice (rate conversion takes "
                                   "slices that keep a range of rows)")
        if axis and (start, stop) != (0, size):
            ops.append({"op": "crop", "axis": axis - 1, "start": start, "stop": stop})
    return ops


# ---------------------------------------------------------------------------------------------------------------------
# Spiking LMUs


CALIBRATION_QUANTILE = 95.0
CALIBRATION_SAMPLES = 128


def calibrate_currents(net: SpikingNetwork, x: np.ndarray, passes: int = 2) -> None:
    """Data-based initialisation of an untrained spiking network: per LIF population, in order, scale its trainable
    incoming weights so that the 95th percentile of its synaptic current on ``x`` is D = 1.2 ϑ / (1 + β) — a drive
    that fires a neuron at least every other step — so no population starts silent or saturated."""
    xb = torch.from_numpy(np.ascontiguousarray(x[:CALIBRATION_SAMPLES], np.float32))
    for _ in range(passes):
        for name, p in net.populations.items():
            trainable = [c for c in net.incoming(name) if c.spec.trainable]
            if p.spec.kind != "lif" or not trainable:
                continue
            with torch.no_grad():
                _, rec = net.run(xb, currents=True)
                bias = 0.0 if p.bias is None else torch.broadcast_to(p.bias, p.spec.shape).reshape(-1).numpy()
                level = float(np.percentile(rec.currents[name] - bias, CALIBRATION_QUANTILE))
                if level > 1e-6:
                    want = 1.2 * p.spec.threshold / (1.0 + p.spec.beta)
                    for c in trainable:
                        c.weight.mul_(want / level)
    net.invalidate()


def _lmu_parts(module: nn.Module) -> tuple[LMU, nn.Linear]:
    lmus = [m for m in module.modules() if isinstance(m, LMU)]
    linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
    if len(lmus) != 1 or not linears:
        raise UnsupportedError("LMU conversion handles one LMU layer followed by a linear classifier "
                               f"(found {len(lmus)} LMU layers, {len(linears)} linear layers)")
    return lmus[0], linears[-1]


def _split_fixed(matrix: np.ndarray, f: float, parts: int = 2) -> list[np.ndarray]:
    """A fixed matrix as ``parts`` matrices that each fit Loihi's 8-bit weights, summing to it within 2**-15
    relative: the high part on its own grid, the next part on the (256× finer) grid of the remainder."""
    out, rest = [], matrix.astype(np.float64)
    for _ in range(parts):
        if not np.any(rest):
            break
        step = 2.0 ** (loihi_format.weight_exponent(float(np.abs(rest).max()) * f) + 1) / f
        part = np.clip(np.round(rest / step), *loihi_format.WEIGHT_MANTISSA) * step
        out.append(part)
        rest = rest - part
    return out


def _memory_bound(a_bar: np.ndarray, b_bar: np.ndarray, steps: int) -> float:
    """Largest |m_i| a binary input u can drive the memory to within ``steps`` steps: max_i Σ_k |(Ā^k B̄)_i|."""
    h, acc = b_bar.astype(np.float64), np.zeros_like(b_bar, dtype=np.float64)
    for _ in range(steps):
        acc += np.abs(h)
        h = a_bar @ h
    return float(acc.max())


def _init(shape: tuple[int, ...], fan_in: int, gain: float = 1.0) -> np.ndarray:
    return (np.random.default_rng(int(torch.randint(0, 2 ** 31, (1,)))).standard_normal(shape)
            * gain / math.sqrt(fan_in)).astype(np.float32)


def _sequence_input(x_train: np.ndarray, lmu: LMU) -> tuple[PopulationSpec, int, int]:
    if x_train.ndim != 3:
        raise UnsupportedError(f"LMU conversion reads sequences [N, steps, features]; got inputs {x_train.shape[1:]}")
    features, length = x_train.shape[2], x_train.shape[1]
    if features != lmu.input_size:
        raise UnsupportedError(f"the LMU reads {lmu.input_size} features per step but the data has {features}")
    unit = loihi_format.input_unit_exp(float(np.abs(x_train).max()))
    return PopulationSpec("input", "input", (features,), unit_exp=unit), features, length


def _legt(lmu: LMU, u_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Block-diagonal Ā, B̄ for ``u_size`` memories (one per u neuron), from the ANN's LMU."""
    a = lmu.A_bar.detach().double().numpy()
    b = lmu.B_bar.detach().double().numpy()
    eye = np.eye(u_size)
    return np.kron(eye, a), np.kron(eye, b[:, None])


def lmuformer_network(lmu: LMU, head: nn.Linear, x_train: np.ndarray, flush: int, embed: int = 32, hidden: int = 64,
                      u_size: int = 16, mixer: int = 64, beta: float = 0.5,
                      readout_steps: int | None = None) -> SpikingNetwork:
    """LMUFormer's spiking LMU block for a short sequence (module docstring): untrained except Ā, B̄."""
    inp, features, length = _sequence_input(x_train, lmu)
    d = lmu.memory_size * u_size
    a_bar, b_bar = _legt(lmu, u_size)
    steps = length + flush
    m_unit = loihi_format.graded_unit_exp(_memory_bound(a_bar, b_bar[:, 0] if u_size == 1 else b_bar.sum(1), steps),
                                          fan_in=lmu.memory_size)
    beta = loihi_format.snap_beta(beta)
    pops = [inp,
            PopulationSpec("embed", "lif", (embed,), beta, bias=True),
            PopulationSpec("u", "lif", (u_size,), beta, bias=True),
            PopulationSpec("memory", "graded", (d,), unit_exp=m_unit),
            PopulationSpec("memory_spikes", "lif", (d,), beta, bias=True),
            PopulationSpec("hidden", "lif", (hidden,), beta, bias=True),
            PopulationSpec("proj", "lif", (embed,), beta, bias=True),
            PopulationSpec("mixer1", "lif", (mixer,), beta, bias=True),
            PopulationSpec("mixer2", "lif", (embed,), beta, bias=True),
            PopulationSpec("readout", "readout", (head.out_features,), bias=True)]
    lin = ({"op": "linear"},)
    conns = [(ConnectionSpec(f"embed_tap{k}", ("input",), "embed", lin, delay=k), _init((embed, features), 3, 2.0))
             for k in (1, 2, 3)]
    # u starts excited by the embedding (a silent u would leave the memory empty and without gradient)
    conns.append((ConnectionSpec("u_in", ("embed",), "u", lin), np.abs(_init((u_size, embed), embed * 0.1, 1.0))))
    f_b = 1.0 / 2.0 ** -m_unit   # a spike (1) into memory units
    for i, part in enumerate(_split_fixed(b_bar, f_b)):
        conns.append((ConnectionSpec(f"memory_in{i}", ("u",), "memory", lin, trainable=False), part))
    for i, part in enumerate(_split_fixed(a_bar, 1.0)):
        conns.append((ConnectionSpec(f"memory_rec{i}", ("memory",), "memory", lin, trainable=False), part))
    m_scale = 1.0 / max(_memory_bound(a_bar, b_bar.sum(1), steps) * 0.3, 1e-6)
    conns += [
        (ConnectionSpec("memory_scale", ("memory",), "memory_spikes", ({"op": "scale"},)),
         np.full((d,), m_scale, np.float32)),
        (ConnectionSpec("hidden_from_memory", ("memory_spikes",), "hidden", lin), _init((hidden, d), d * 0.25, 1.5)),
        (ConnectionSpec("hidden_from_embed", ("embed",), "hidden", lin), _init((hidden, embed), embed * 0.25, 1.5)),
        (ConnectionSpec("proj_in", ("hidden",), "proj", lin), _init((embed, hidden), hidden * 0.25, 1.5)),
        (ConnectionSpec("mixer1_in", ("embed", "proj"), "mixer1", lin), _init((mixer, embed), embed * 0.5, 1.5)),
        (ConnectionSpec("mixer2_in", ("mixer1",), "mixer2", lin), _init((embed, mixer), mixer * 0.25, 1.5)),
        (ConnectionSpec("readout_in", ("embed", "proj", "mixer2"), "readout", lin),
         _init((head.out_features, embed), embed, 1.0)),
    ]
    biases = {"u": np.full((u_size,), -0.2, np.float32)}
    return SpikingNetwork(pops, conns, steps, "sequence", biases, readout_steps=readout_steps or flush,
                          info={"kind": "lmuformer", "memory_order": lmu.memory_size, "theta": lmu.theta,
                                "u_size": u_size, "classes": head.out_features, "sequence_length": length})


def l2mu_network(lmu: LMU, head: nn.Linear, x_train: np.ndarray, flush: int, encoder_size: int = 16,
                 u_size: int = 16, beta: float = 0.75, hidden: int | None = None, memory_threshold: float = 1.0,
                 recurrent: bool = True, readout_steps: int | None = None,
                 memory_beta: float | None = None, memory: str = "spiking") -> SpikingNetwork:
    """L2MU (module docstring): LIF populations for the input module, u, the memory and h; recurrent weights start
    from the ANN's LMU (scaled), Ā and B̄ are its fixed LegT matrices. ``memory_beta`` sets the memory population's
    decay apart from the others' ``beta`` (1.0: integrate-and-fire memory). ``memory="graded"`` is the ablation that
    keeps everything else spiking but makes the memory the linear state m = Ā m + B̄ u sent as graded spikes (the
    LMU's own memory, as in LMUFormer) instead of a population of LIF neurons."""
    if memory not in ("spiking", "graded"):
        raise UsageError(f"memory={memory!r}: choose 'spiking' (L2MU) or 'graded'")
    inp, features, length = _sequence_input(x_train, lmu)
    hidden = hidden or lmu.hidden_size
    d = lmu.memory_size * u_size
    a_bar, b_bar = _legt(lmu, u_size)
    beta = loihi_format.snap_beta(beta)
    m_beta = beta if memory_beta is None else loihi_format.snap_beta(memory_beta)
    steps = length + flush
    if memory == "graded":
        bound = _memory_bound(a_bar, b_bar.sum(1), steps)
        m_pop = PopulationSpec("memory", "graded", (d,), unit_exp=loihi_format.graded_unit_exp(
            bound, fan_in=lmu.memory_size))
    else:
        m_pop = PopulationSpec("memory", "lif", (d,), m_beta, memory_threshold, bias=True)
    pops = [inp,
            PopulationSpec("encoder", "lif", (encoder_size * features,), beta, bias=True),
            PopulationSpec("u", "lif", (u_size,), beta, bias=True),
            m_pop,
            PopulationSpec("hidden", "lif", (hidden,), beta, bias=True),
            PopulationSpec("readout", "readout", (head.out_features,), bias=True)]
    # Input module: each feature drives encoder_size neurons with gains of both signs and spread thresholds (biases),
    # a population code of the real value.
    gains = np.zeros((encoder_size * features, features), np.float32)
    enc_bias = np.zeros((encoder_size * features,), np.float32)
    levels = np.linspace(0.0, 1.0, encoder_size, dtype=np.float32)
    span = float(np.abs(x_train).max()) or 1.0
    for f in range(features):
        rows = slice(f * encoder_size, (f + 1) * encoder_size)
        sign = np.where(np.arange(encoder_size) % 2 == 0, 1.0, -1.0)
        gains[rows, f] = sign * 2.0 / span
        enc_bias[rows] = -sign * levels * 1.0 + 0.5 * (sign < 0)
    lin = ({"op": "linear"},)
    w_h = lmu.weight_h.detach().numpy()[:hidden, :hidden]
    w_m = np.tile(lmu.weight_m.detach().numpy()[:hidden], (1, u_size))
    conns = [
        (ConnectionSpec("encoder_in", ("input",), "encoder", lin), gains),
        (ConnectionSpec("u_from_input", ("encoder",), "u", lin), _init((u_size, encoder_size * features),
                                                                      encoder_size * features * 0.25)),
        (ConnectionSpec("u_from_hidden", ("hidden",), "u", lin, truncate_gradient=True),
         _init((u_size, hidden), hidden, 0.2)),
        (ConnectionSpec("u_from_memory", ("memory",), "u", lin, truncate_gradient=True), _init((u_size, d), d, 0.2)),
        (ConnectionSpec("memory_in", ("u",), "memory", lin, trainable=False), b_bar.astype(np.float32)),
        (ConnectionSpec("memory_rec", ("memory",), "memory", lin, trainable=False, truncate_gradient=True),
         a_bar.astype(np.float32)),
        (ConnectionSpec("hidden_from_input", ("encoder",), "hidden", lin),
         _init((hidden, encoder_size * features), encoder_size * features * 0.25, 1.5)),
        # recurrent weights start weak (the ANN's W_h scaled down): strong spiking recurrence makes surrogate
        # gradients through 70 steps useless
        (ConnectionSpec("hidden_rec", ("hidden",), "hidden", lin, truncate_gradient=True),
         (w_h * 0.1).astype(np.float32)),
        (ConnectionSpec("hidden_from_memory", ("memory",), "hidden", lin), (w_m * 1.0).astype(np.float32)),
        (ConnectionSpec("readout_in", ("hidden",), "readout", lin), _init((head.out_features, hidden), hidden)),
    ]
    # The memory's inputs are the fixed Ā, B̄ (≤ 0.15 per u spike): a bias near ϑ (1 − β) keeps it near threshold
    # so that u's spikes move it.
    if not recurrent:  # u and h read only the input module and the memory (the LMUFormer simplification)
        conns = [c for c in conns if c[0].name not in ("u_from_hidden", "u_from_memory", "hidden_rec")]
    biases = {"encoder": enc_bias}
    if memory == "spiking":
        biases["memory"] = np.full((d,), (1.0 - m_beta) * memory_threshold, np.float32)
    else:  # a graded memory's values are ~bound large: its readers start scaled to it; Ā and B̄ split in two
        # 8-bit parts each (as LMUFormer's memory), so the linear state stays exact on the chip's grid
        fixed = [(spec, w) for spec, w in conns if spec.target == "memory"]
        conns = [(spec, w / max(bound, 1e-6) if spec.sources == ("memory",) else w)
                 for spec, w in conns if spec.target != "memory"]
        for spec, w in fixed:
            f = 1.0 / 2.0 ** -m_pop.unit_exp if spec.sources == ("u",) else 1.0
            for i, part in enumerate(_split_fixed(np.asarray(w, np.float64), f)):
                conns.append((dataclasses.replace(spec, name=f"{spec.name}{i}"), part.astype(np.float32)))
    return SpikingNetwork(pops, conns, steps, "sequence", biases, readout_steps=readout_steps or flush,
                          info={"kind": "l2mu", "memory": memory, "memory_order": lmu.memory_size, "theta": lmu.theta,
                                "u_size": u_size, "classes": head.out_features, "sequence_length": length})


@functools.wraps(_to_spiking)
def to_spiking(model, *args, **kwargs):
    out = _to_spiking(model, *args, **kwargs)
    # The float model it came from, for fidelity (the target stores its outputs beside the spiking network's);
    # kept in memory only, never written out.
    out.meta["converted_from"] = Model.load(model) if not isinstance(model, Model) else model
    return out
