"""Quantization-aware fine-tuning (QAT): Model -> Model whose float weights tolerate edgekit's int8 rounding.

Where it sits: a converter, reached through ``converters.quantize(model, mode='qat')``. It fine-tunes the float
module while simulating, in the forward pass, exactly the integer graph that ``edgekit.qgraph.lower`` builds from the
deployment graph (Jacob et al. 2018, "Quantization and Training of Neural Networks for Efficient Integer-Arithmetic-Only
Inference", arXiv:1712.05877; Krishnamoorthi 2018, arXiv:1806.08342):

* BatchNorm folded into the conv/linear before it, with frozen running statistics:
  W' = W · γ/√(σ² + ε), b' = (b − μ) · γ/√(σ² + ε) + β — gradients still reach W, b, γ and β;
* weights fake-quantized symmetric int8, one scale per output channel (per tensor with ``per_channel=False``):
  s_c = max|W'_c| / 127, Ŵ' = s_c · clamp(round(W'/s_c), −127, 127);
* every layer output the int8 graph requantizes (conv/linear after its fused ReLU, add, pools, concat, lookup-table
  activations, the input) fake-quantized asymmetric per tensor: x̂ = s · (clamp(round(x/s) + z, −128, 127) − z);
  max pool, reshape, flatten and select pass their input's int8 values through unchanged, so they add no rounding.

Rounding uses a straight-through estimator (``torch.fake_quantize_per_*_affine``: gradient 1 inside the range, 0 where
the value clips). Activation (s, z) are not learned: at the start of every epoch they are recalibrated on the
calibration inputs with the same observer ``calibrate`` uses, so training sees the ranges the deployment will use.

The result is the fine-tuned float module; ``quantize`` then calibrates its final scales on it. Weights a pruned
model (``meta['pruning']``) holds at zero stay zero.
"""
from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgekit.converters.finetune import TrainSettings, fine_tune, training_data
from edgekit.converters.prune import prunable_weights
from edgekit.converters.quantize import PASS_THROUGH, QuantParams, calibrate
from edgekit.errors import DataError, UnsupportedError
from edgekit.graph import Graph
from edgekit.graph_exec import run_node
from edgekit.model import Model
from edgekit.qgraph import unsupported_int8

_ACT = {"relu": torch.relu, "relu6": F.relu6}


class FakeQuantNetwork(nn.Module):
    """The deployment graph of ``module`` run with int8 fake quantization; its parameters are ``module``'s own."""

    def __init__(self, module: nn.Module, graph: Graph, per_channel: bool = True):
        super().__init__()
        self.module = module
        self.graph = graph
        self.per_channel = per_channel
        self.quant: QuantParams | None = None
        modules = dict(module.named_modules())
        self._layers: dict[str, tuple[nn.Module, nn.Module | None]] = {}
        for n in graph.nodes:
            if n.op not in ("conv1d", "conv2d", "linear"):
                continue
            layer = modules.get(n.name)
            if not isinstance(layer, (nn.Conv1d, nn.Conv2d, nn.Linear)):
                raise UnsupportedError(f"layer '{n.name}' ({n.op}) is not an nn.Conv/nn.Linear module of the model; "
                                       "quantization-aware training needs the PyTorch module the graph came from")
            norms = [modules[f] for f in n.fused if isinstance(modules.get(f), nn.modules.batchnorm._BatchNorm)]
            self._layers[n.name] = (layer, norms[0] if norms else None)

    def folded(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(W', b') of a conv/linear node with its BatchNorm folded in (running statistics, differentiable)."""
        layer, bn = self._layers[name]
        w = layer.weight
        b = layer.bias if layer.bias is not None else torch.zeros(w.shape[0])
        if bn is None:
            return w, b
        gamma = bn.weight if bn.weight is not None else torch.ones_like(bn.running_var)
        beta = bn.bias if bn.bias is not None else torch.zeros_like(bn.running_var)
        scale = gamma / torch.sqrt(bn.running_var + bn.eps)
        return w * scale.reshape((-1,) + (1,) * (w.dim() - 1)), (b - bn.running_mean) * scale + beta

    def _fake_weight(self, w: torch.Tensor) -> torch.Tensor:
        flat = w.detach().abs().reshape(w.shape[0], -1)
        m = flat.max(dim=1).values if self.per_channel else flat.max().expand(w.shape[0])
        scale = torch.where(m > 0, m / 127.0, torch.ones_like(m)).to(torch.float32)
        zero = torch.zeros(w.shape[0], dtype=torch.int32)
        return torch.fake_quantize_per_channel_affine(w, scale, zero, 0, -127, 127)

    def _fake_act(self, name: str, x: torch.Tensor) -> torch.Tensor:
        q = self.quant.activations[name]
        return torch.fake_quantize_per_tensor_affine(x, float(q.scale), int(q.zero_point), -128, 127)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.quant is None:
            raise RuntimeError("calibrate() the fake-quantized network before running it")
        values: dict[str, torch.Tensor] = {}
        for n in self.graph.nodes:
            if n.op == "input":
                y = x
            elif n.op in ("conv1d", "conv2d", "linear"):
                w, b = self.folded(n.name)
                w = self._fake_weight(w)
                xin = values[n.inputs[0]]
                if n.op == "linear":
                    y = F.linear(xin, w, b)
                else:
                    conv = F.conv2d if n.op == "conv2d" else F.conv1d
                    a = n.attrs
                    y = conv(xin, w, b, a["stride"], a["padding"], a["dilation"], a["groups"])
                if n.attrs.get("activation"):
                    y = _ACT[n.attrs["activation"]](y)
            elif n.op in ("reshape", "flatten"):
                xin = values[n.inputs[0]]
                y = xin.reshape((xin.shape[0],) + tuple(n.shape[1:]))
            else:
                y = run_node(n, [values[i] for i in n.inputs])
            values[n.name] = y if n.op in PASS_THROUGH else self._fake_act(n.name, y)
        return values[self.graph.outputs[0]]


def fine_tune_qat(model: Model, calib: np.ndarray | None = None, per_channel: bool = True, *, epochs: int = 5,
                  lr: float = 1e-4, batch_size: int = 64, observer: str = "minmax", dataset=None,
                  progress: bool | None = None, seed: int = 0) -> Model:
    """Fine-tune ``model``'s float weights through int8 fake quantization (see the module docstring).

    Training data: ``dataset=(x, y)`` or the model's own training split; ``calib`` (default: the model's calibration
    inputs) sets the activation ranges each epoch. Returns a new Model with the fine-tuned float module and
    ``meta['qat']`` (settings and the loss per epoch).
    """
    if model.module is None:
        raise UnsupportedError(f"model '{model.name}' has no PyTorch module (loaded from ONNX); quantization-aware "
                               "training needs one — use post-training quantization instead")
    calib = model.calib if calib is None else np.asarray(calib, dtype=np.float32)
    if calib is None:
        raise DataError(f"model '{model.name}' has no calibration data; pass calib=... (CLI: --calib FILE)")
    data = training_data(model, dataset)
    if data is None:
        raise DataError(f"quantization-aware training of '{model.name}' needs labelled training data; pass "
                        "dataset=(x, y), or use post-training quantization (omit --qat)")
    bad = unsupported_int8(model.deploy_graph)
    if bad:
        raise UnsupportedError(f"{len(bad)} layer(s) have no int8 implementation, so there is nothing to simulate: "
                               f"{', '.join(bad)}; compile them in float32 (omit --quantize)")
    module = copy.deepcopy(model.module).eval()
    net = FakeQuantNetwork(module, model.deploy_graph, per_channel)
    settings = TrainSettings(epochs=epochs, lr=lr, batch_size=batch_size, seed=seed)
    steps_per_epoch = settings.steps(len(data[0])) // max(1, epochs)
    state = {"step": 0}
    # A pruned model stays pruned: its zero weights are held at zero (the gradient would revive them).
    held = [(w, (w != 0).to(w.dtype)) for w in (getattr(m, p) for _, m, p in prunable_weights(module))] \
        if "pruning" in model.meta else []

    def recalibrate() -> None:
        # The module's running BatchNorm statistics are never updated here (frozen BN), only its weights.
        net.quant = calibrate(model.with_module(module).deploy_graph, calib, observer, per_channel)

    def on_step() -> None:
        state["step"] += 1
        with torch.no_grad():
            for w, mask in held:
                w.mul_(mask)
        if state["step"] % steps_per_epoch == 0:
            recalibrate()

    recalibrate()
    losses = fine_tune(net, data[0], data[1], settings, on_step, f"quantization-aware training {model.name}",
                       progress)
    facts = {"epochs": epochs, "lr": lr, "observer": observer, "per_channel": per_channel,
             "loss_per_epoch": [round(v, 6) for v in losses]}
    return model.with_module(module.eval(), meta={"qat": facts})
