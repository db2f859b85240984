"""PyTorch module -> edgekit Graph, through torch.fx.

Where it sits: called by ``edgekit.Model`` for an ``nn.Module`` (and, via ``ExportedProgram.module()``, for ``.pt2``
files, whose graphs hold ATen operators). Standard ``torch.nn`` layers and edgekit's own layers are traced as leaves,
so layer names are the module names a user knows (``features.0.conv``); functional code around them (residual adds,
``torch.cat``, flatten, indexing) becomes nodes of its own. Shapes come from running the example input once
(torch.fx ShapeProp).

Every construct edgekit cannot express is collected, and all of them are reported in one error.
"""
from __future__ import annotations

import operator
import re
from typing import Any, Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.fx import GraphModule, Tracer
from torch.fx.passes.shape_prop import ShapeProp

from edgekit.errors import ModelLoadError, ShapeError, UnsupportedError
from edgekit.graph import Graph, Node

# --- module handlers: nn.Module instance -> (op, attrs, params) ----------------------------------------------------


def _np(t: torch.Tensor | None) -> np.ndarray | None:
    return None if t is None else t.detach().cpu().numpy().astype(np.float32).copy()


def _pair(v) -> list[int]:
    return [int(v), int(v)] if isinstance(v, int) else [int(x) for x in v]


def _conv(m: nn.Module) -> tuple[str, dict, dict]:
    if isinstance(m.padding, str):
        raise UnsupportedError(f"padding='{m.padding}'")
    if m.padding_mode != "zeros":
        raise UnsupportedError(f"padding_mode='{m.padding_mode}'")
    dims = 2 if isinstance(m, nn.Conv2d) else 1
    fix = _pair if dims == 2 else (lambda v: [int(v[0])] if not isinstance(v, int) else [int(v)])
    attrs = {"in_channels": m.in_channels, "out_channels": m.out_channels, "kernel_size": fix(m.kernel_size),
             "stride": fix(m.stride), "padding": fix(m.padding), "dilation": fix(m.dilation), "groups": m.groups}
    params = {"weight": _np(m.weight)}
    if m.bias is not None:
        params["bias"] = _np(m.bias)
    return ("conv2d" if dims == 2 else "conv1d"), attrs, params


def _conv_transpose_attrs(W: np.ndarray, stride, padding, output_padding, dilation, groups) -> dict:
    """A 2-D transposed convolution's attributes (weight [C_in, C_out / groups, kh, kw]); refuses what edgekit does
    not run, with what to do instead."""
    if W.ndim not in (3, 4):
        raise UnsupportedError(f"{W.ndim - 2}-D transposed convolution (edgekit runs ConvTranspose1d and 2d)")
    dims = W.ndim - 2
    fix = _pair if dims == 2 else (lambda v: [int(v)] if isinstance(v, int) else [int(x) for x in v][:1])
    if fix(dilation) != [1] * dims:
        raise UnsupportedError(f"transposed convolution with dilation {tuple(fix(dilation))} (edgekit runs "
                               "dilation 1)")
    return {"in_channels": int(W.shape[0]), "out_channels": int(W.shape[1]) * int(groups),
            "kernel_size": [int(k) for k in W.shape[2:]], "stride": fix(stride), "padding": fix(padding),
            "output_padding": fix(output_padding), "dilation": [1] * dims, "groups": int(groups)}


def _conv_transpose(m) -> tuple[str, dict, dict]:
    if m.padding_mode != "zeros":
        raise UnsupportedError(f"padding_mode='{m.padding_mode}'")
    attrs = _conv_transpose_attrs(_np(m.weight), m.stride, m.padding, m.output_padding, m.dilation, m.groups)
    params = {"weight": _np(m.weight)}
    if m.bias is not None:
        params["bias"] = _np(m.bias)
    return ("conv_transpose2d" if m.weight.dim() == 4 else "conv_transpose1d"), attrs, params


def pad_attrs(pad, rank: int, mode: str = "constant", value=0.0) -> dict:
    """F.pad's (left, right[, top, bottom]) on a rank-3 or rank-4 tensor as the pad layer's attributes, or a one-line
    refusal (other modes, a value other than 0, negative pads, pads on the channel or batch axes)."""
    pad = [int(v) for v in pad]
    if mode != "constant" or float(value or 0.0) != 0.0:
        raise UnsupportedError(f"padding mode '{mode}'" + (f" with value {value}" if mode == "constant" else "")
                               + ": edgekit pads with zeros")
    if rank not in (3, 4) or len(pad) > 2 * (rank - 2) or len(pad) % 2 or min(pad) < 0:
        raise UnsupportedError(f"padding {tuple(pad)} of a {rank}-D tensor: edgekit pads the spatial axes of "
                               "[N, C, H, W] and [N, C, L] by zero or more")
    pad = pad + [0] * (2 * (rank - 2) - len(pad))
    return {"pads": [pad[2], pad[3], pad[0], pad[1]] if rank == 4 else pad}


def _pad_module(m) -> tuple[str, dict, dict]:
    value = getattr(m, "value", 0.0)
    return "pad", {"padding": [int(v) for v in m.padding], "value": float(value)}, {}


def _hardtanh(lo: float, hi: float) -> tuple[str, dict, dict]:
    """Hardtanh(0, 6) is ReLU6; any other range a clamp of its own."""
    return ("relu6", {}, {}) if (lo, hi) == (0.0, 6.0) else ("hardtanh", {"min_val": lo, "max_val": hi}, {})


def _prelu(slope: np.ndarray) -> tuple[str, dict, dict]:
    """PReLU with one learned slope is a LeakyReLU of that slope (an int8 table); with a slope per channel, a layer
    of its own."""
    if slope.size != 1:
        return "prelu", {}, {"weight": np.ascontiguousarray(slope.reshape(-1), dtype=np.float32)}
    return "leaky_relu", {"negative_slope": float(slope.reshape(-1)[0])}, {}


def _linear(m: nn.Linear):
    params = {"weight": _np(m.weight)}
    if m.bias is not None:
        params["bias"] = _np(m.bias)
    return "linear", {"in_features": m.in_features, "out_features": m.out_features}, params


def _bn(m: nn.modules.batchnorm._BatchNorm):
    if m.running_mean is None:
        raise UnsupportedError("BatchNorm without running statistics (track_running_stats=False)")
    n = m.num_features
    w = _np(m.weight) if m.weight is not None else np.ones(n, np.float32)
    b = _np(m.bias) if m.bias is not None else np.zeros(n, np.float32)
    return "batchnorm", {"eps": float(m.eps)}, {"weight": w, "bias": b, "running_mean": _np(m.running_mean),
                                                "running_var": _np(m.running_var)}


def _resize_mode(mode: str, align_corners) -> str:
    """An interpolation mode edgekit runs ('nearest' or 'bilinear'), or a one-line refusal saying which are."""
    if mode in ("nearest", "nearest-exact"):  # (the same samples at integer factors)
        return "nearest"
    if mode == "bilinear" and not align_corners:
        return "bilinear"
    what = "bilinear with align_corners=True" if mode == "bilinear" else f"mode '{mode}'"
    raise UnsupportedError(f"upsampling {what}: edgekit runs mode='nearest' and mode='bilinear' with "
                           "align_corners=False, by integer factors")


def resize_scale(in_shape, out_shape) -> list[int]:
    """The integer factors of an upsampling of [N, C, H, W] ``in_shape`` to ``out_shape`` (from its scale_factor or
    its size alike), or a one-line refusal."""
    if len(in_shape) != 4 or len(out_shape) != 4 or tuple(in_shape[:2]) != tuple(out_shape[:2]):
        raise UnsupportedError(f"resizing {list(in_shape)} to {list(out_shape)}: edgekit upsamples the two spatial "
                               "axes of [N, C, H, W] maps")
    if any(o % i or o < i for i, o in zip(in_shape[2:], out_shape[2:])):
        raise UnsupportedError(f"resizing {list(in_shape[2:])} to {list(out_shape[2:])}: edgekit upsamples by "
                               "integer factors")
    return [o // i for i, o in zip(in_shape[2:], out_shape[2:])]


def _upsample(m):
    """nn.Upsample, mode 'nearest' or 'bilinear' (align_corners=False), by integer factors (the factors come from the
    traced shapes, so an output size works too)."""
    return "upsample", {"scale": None, "mode": _resize_mode(m.mode, m.align_corners)}, {}


def _pool(m):
    if isinstance(m, nn.AdaptiveAvgPool1d):
        if m.output_size not in (1, (1,), [1]):
            raise UnsupportedError(f"AdaptiveAvgPool1d to {m.output_size} (only output size 1 is supported)")
        return "global_avgpool", {}, {}
    if isinstance(m, nn.AdaptiveAvgPool2d):
        size = _pair(m.output_size) if m.output_size is not None else None
        if size != [1, 1]:
            raise UnsupportedError(f"AdaptiveAvgPool2d to {m.output_size} (only output size 1 is supported)")
        return "global_avgpool", {}, {}
    k = _pair(m.kernel_size)
    s = _pair(m.stride if m.stride is not None else m.kernel_size)
    attrs = {"kernel_size": k, "stride": s, "padding": _pair(m.padding), "ceil_mode": bool(m.ceil_mode)}
    if isinstance(m, nn.MaxPool2d):
        if _pair(m.dilation) != [1, 1]:
            raise UnsupportedError("MaxPool2d with dilation")
        return "maxpool2d", attrs, {}
    attrs["count_include_pad"] = bool(m.count_include_pad)
    if m.divisor_override is not None:
        raise UnsupportedError("AvgPool2d with divisor_override")
    return "avgpool2d", attrs, {}


def _pool1d_module(m) -> tuple[str, dict]:
    """nn.MaxPool1d / nn.AvgPool1d as the 2-D pool over [N, C, L, 1] that computes it (a Kx1 window)."""
    one = lambda v: int(v[0]) if isinstance(v, (list, tuple)) else int(v)  # noqa: E731
    k = one(m.kernel_size)
    s = one(m.stride if m.stride is not None else m.kernel_size)
    attrs = {"kernel_size": [k, 1], "stride": [s, 1], "padding": [one(m.padding), 0], "ceil_mode": bool(m.ceil_mode)}
    if isinstance(m, nn.MaxPool1d):
        if one(m.dilation) != 1:
            raise UnsupportedError("MaxPool1d with dilation")
        return "maxpool2d", attrs
    attrs["count_include_pad"] = bool(m.count_include_pad)
    return "avgpool2d", attrs


def _pool1d_call(n) -> tuple[str, dict]:
    """F.max_pool1d / F.avg_pool1d (and their ATen calls) as the 2-D pool over [N, C, L, 1] that computes them."""
    one = lambda v: int(v[0]) if isinstance(v, (list, tuple)) else int(v)  # noqa: E731
    k = one(_arg(n, 1, "kernel_size"))
    stride = _arg(n, 2, "stride", None)
    s = one(stride) if stride not in (None, [], ()) else k
    attrs = {"kernel_size": [k, 1], "stride": [s, 1], "padding": [one(_arg(n, 3, "padding", 0)), 0]}
    if n.target in (F.avg_pool1d, aten.avg_pool1d.default):
        attrs.update(ceil_mode=bool(_arg(n, 4, "ceil_mode", False)),
                     count_include_pad=bool(_arg(n, 5, "count_include_pad", True)))
        return "avgpool2d", attrs
    if one(_arg(n, 4, "dilation", 1)) != 1:
        raise UnsupportedError("max_pool1d with dilation")
    attrs["ceil_mode"] = bool(_arg(n, 5, "ceil_mode", False))
    return "maxpool2d", attrs


def _rnn(m: nn.RNNBase):
    kind = "gru" if isinstance(m, nn.GRU) else "lstm"
    if m.num_layers != 1:
        raise UnsupportedError(f"{type(m).__name__} with num_layers={m.num_layers} (stack single-layer modules)")
    if m.bidirectional:
        raise UnsupportedError(f"bidirectional {type(m).__name__} (a streaming device sees each step once)")
    if getattr(m, "proj_size", 0):
        raise UnsupportedError("LSTM with proj_size")
    params = {"weight_ih": _np(m.weight_ih_l0), "weight_hh": _np(m.weight_hh_l0)}
    if m.bias:
        params["bias_ih"] = _np(m.bias_ih_l0)
        params["bias_hh"] = _np(m.bias_hh_l0)
    return kind, {"input_size": m.input_size, "hidden_size": m.hidden_size, "batch_first": bool(m.batch_first)}, params


def _layernorm(m: nn.LayerNorm):
    params = {k: _np(v) for k, v in (("weight", m.weight), ("bias", m.bias)) if v is not None}
    return "layernorm", {"normalized_shape": [int(d) for d in m.normalized_shape], "eps": float(m.eps)}, params


def _simple(op: str) -> Callable:
    return lambda m: (op, {}, {})


MODULE_HANDLERS: dict[type, Callable[[nn.Module], tuple[str, dict, dict]]] = {
    nn.Conv1d: _conv, nn.Conv2d: _conv, nn.Linear: _linear,
    nn.BatchNorm1d: _bn, nn.BatchNorm2d: _bn,
    nn.ReLU: _simple("relu"), nn.ReLU6: _simple("relu6"), nn.Hardswish: _simple("hardswish"),
    nn.Hardsigmoid: _simple("hardsigmoid"),
    nn.Sigmoid: _simple("sigmoid"), nn.Tanh: _simple("tanh"), nn.SiLU: _simple("silu"),
    nn.MaxPool2d: _pool, nn.AvgPool2d: _pool, nn.AdaptiveAvgPool2d: _pool, nn.AdaptiveAvgPool1d: _pool,
    nn.Upsample: _upsample, nn.ConvTranspose2d: _conv_transpose, nn.ConvTranspose1d: _conv_transpose,
    nn.ZeroPad2d: _pad_module, nn.ConstantPad2d: _pad_module, nn.ConstantPad1d: _pad_module,
    **({nn.ZeroPad1d: _pad_module} if hasattr(nn, "ZeroPad1d") else {}),
    nn.PixelShuffle: lambda m: ("depth_to_space", {"block": [int(m.upscale_factor)] * 2, "mode": "CRD"}, {}),
    nn.GRU: _rnn, nn.LSTM: _rnn,
    nn.Flatten: lambda m: ("flatten", {"start_dim": int(m.start_dim), "end_dim": int(m.end_dim)}, {}),
    nn.Softmax: lambda m: ("softmax", {"dim": int(m.dim) if m.dim is not None else -1}, {}),
    nn.Dropout: _simple("identity"), nn.Identity: _simple("identity"),
    nn.GELU: lambda m: ("gelu", {"approximate": str(m.approximate)}, {}),
    nn.LeakyReLU: lambda m: ("leaky_relu", {"negative_slope": float(m.negative_slope)}, {}),
    nn.ELU: lambda m: ("elu", {"alpha": float(m.alpha)}, {}),
    nn.Hardtanh: lambda m: _hardtanh(float(m.min_val), float(m.max_val)),
    nn.Mish: _simple("mish"),
    nn.PReLU: lambda m: _prelu(_np(m.weight)),
    nn.LayerNorm: lambda m: _layernorm(m),
}


# Layers that return (outputs, final state) like torch.nn.GRU: their node is the output sequence, and the final
# hidden state (``result[1]``) is read as the sequence's last step.
RECURRENT_MODULES: set[type] = {nn.GRU, nn.LSTM}


def register_module(cls: type, handler: Callable[[nn.Module], tuple[str, dict, dict]], recurrent: bool = False) -> None:
    """Let another part of edgekit (e.g. the recurrent layers) declare how its own layer becomes a node.

    ``recurrent=True`` for a layer returning ``(outputs, final_state)`` like ``torch.nn.GRU``."""
    MODULE_HANDLERS[cls] = handler
    if recurrent:
        RECURRENT_MODULES.add(cls)


class _LeafTracer(Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return type(m) in MODULE_HANDLERS or super().is_leaf_module(m, qualname)


# --- function / method handlers: (fx node, shapes) -> (op, attrs) --------------------------------------------------

_ACT_FUNCS = {F.relu: "relu", torch.relu: "relu", F.relu6: "relu6", F.hardswish: "hardswish",
              torch.sigmoid: "sigmoid", F.sigmoid: "sigmoid", torch.tanh: "tanh", F.tanh: "tanh",
              torch.ops.aten.relu.default: "relu", torch.ops.aten.sigmoid.default: "sigmoid",
              torch.ops.aten.tanh.default: "tanh", torch.ops.aten.hardswish.default: "hardswish",
              torch.ops.aten.relu6.default: "relu6",  # F.relu6 in a torch.export program
              F.hardsigmoid: "hardsigmoid", torch.ops.aten.hardsigmoid.default: "hardsigmoid",
              F.silu: "silu", torch.ops.aten.silu.default: "silu", F.mish: "mish", torch.ops.aten.mish.default: "mish"}
_ACT_METHODS = {"relu": "relu", "sigmoid": "sigmoid", "tanh": "tanh"}
_ADD = {operator.add, torch.add, torch.ops.aten.add.Tensor}
_MUL = {operator.mul, torch.mul, torch.ops.aten.mul.Tensor}
_CAT = {torch.cat, torch.ops.aten.cat.default}
_FLATTEN = {torch.flatten, torch.ops.aten.flatten.using_ints}
_MATMUL = {operator.matmul, torch.matmul, torch.bmm, torch.ops.aten.matmul.default, torch.ops.aten.bmm.default}
_DIV = {operator.truediv, torch.div, torch.true_divide, torch.ops.aten.div.Tensor}
_GELU = {F.gelu, torch.ops.aten.gelu.default}
_LAYER_NORM = {F.layer_norm, torch.ops.aten.layer_norm.default}
_TRANSPOSE_CALLS = {torch.transpose, torch.permute, torch.t}
_INTERPOLATE = {F.interpolate, torch.ops.aten.upsample_nearest2d.vec, torch.ops.aten.upsample_bilinear2d.vec,
                torch.ops.aten.upsample_nearest2d.default, torch.ops.aten.upsample_bilinear2d.default,
                torch.ops.aten._upsample_nearest_exact2d.vec, torch.ops.aten._upsample_nearest_exact2d.default}
_SPLITS = {torch.chunk, torch.split, torch.ops.aten.chunk.default, torch.ops.aten.split.Tensor,
           torch.ops.aten.split_with_sizes.default}
_RESHAPE_METHODS = {"view", "reshape", "flatten", "squeeze", "unsqueeze", "contiguous"}
_RESHAPE_FUNCS = {torch.reshape, torch.squeeze, torch.unsqueeze, torch.ops.aten.view.default,
                  torch.ops.aten.reshape.default, torch.ops.aten.squeeze.dim, torch.ops.aten.unsqueeze.default,
                  torch.ops.aten.squeeze.dims, torch.ops.aten.clone.default, torch.ops.aten._unsafe_view.default,
                  torch.ops.aten.squeeze.default}


def _index_spec(idx: Any) -> list:
    """An indexing tuple as JSON-friendly data: ints stay ints, slices become ['slice', start, stop, step]."""
    if not isinstance(idx, tuple):
        idx = (idx,)
    out = []
    for i in idx:
        if isinstance(i, int):
            out.append(int(i))
        elif isinstance(i, slice):
            out.append(["slice", i.start, i.stop, i.step])
        else:
            raise UnsupportedError(f"indexing with {type(i).__name__}")
    return out


def index_tuple(spec: list) -> tuple:
    """Inverse of :func:`_index_spec`."""
    return tuple(slice(s[1], s[2], s[3]) if isinstance(s, list) else int(s) for s in spec)


# --- ATen layer handlers (.pt2 programs): (fx node, weight) -> (op, attrs, params, input node) ----------------------
# ``weight(arg)`` gives the constant behind an argument as float32 numpy (None for None) and refuses a tensor that is
# computed from the input. ``torch.export`` writes layers as ATen calls whose weights are get_attr nodes; these
# handlers turn each call back into the node the nn.Module import gives for the layer it came from.

aten = torch.ops.aten


def _number(a) -> float | None:
    """A number argument as float: a Python number, or an fx node that computed one from the example's shapes
    (None for a tensor or anything else)."""
    if isinstance(a, torch.fx.Node):
        a = a.meta.get("number")
    return float(a) if isinstance(a, (int, float)) and not isinstance(a, bool) else None


def _arg(n, i: int, name: str, default=None):
    """Argument ``i`` of an fx node, whether it was passed by position or by keyword."""
    return n.args[i] if len(n.args) > i else n.kwargs.get(name, default)


def _ints(v, dims: int) -> list[int]:
    """An ATen int-list argument ([k], [k, k] or k) as ``dims`` ints."""
    v = [v] if isinstance(v, int) else list(v)
    return [int(v[0])] * dims if len(v) == 1 else [int(x) for x in v]


def _aten_conv(n, weight):
    if n.target is aten.convolution.default:
        x, w, b, stride, padding, dilation, transposed, output_padding, groups = n.args[:9]
        if transposed:
            W = weight(w)
            params = {"weight": W} if b is None else {"weight": W, "bias": weight(b)}
            return ("conv_transpose2d" if W.ndim == 4 else "conv_transpose1d"), \
                _conv_transpose_attrs(W, stride, padding, output_padding, dilation, groups), params, x
    else:
        x, w, b = n.args[0], n.args[1], _arg(n, 2, "bias")
        stride, padding = _arg(n, 3, "stride", 1), _arg(n, 4, "padding", 0)
        dilation, groups = _arg(n, 5, "dilation", 1), _arg(n, 6, "groups", 1)
    W = weight(w)
    dims = W.ndim - 2
    if dims not in (1, 2):
        raise UnsupportedError(f"{dims}-D convolution (edgekit has 1-D and 2-D)")
    kernel, dilation = [int(k) for k in W.shape[2:]], _ints(dilation, dims)
    if padding == "valid":
        padding = [0] * dims
    elif padding == "same":
        total = [d * (k - 1) for d, k in zip(dilation, kernel)]
        if any(t % 2 for t in total):
            raise UnsupportedError("padding='same' with an even kernel (the padding would be asymmetric)")
        padding = [t // 2 for t in total]
    attrs = {"in_channels": int(W.shape[1]) * int(groups), "out_channels": int(W.shape[0]), "kernel_size": kernel,
             "stride": _ints(stride, dims), "padding": _ints(padding, dims), "dilation": dilation,
             "groups": int(groups)}
    params = {"weight": W}
    if b is not None:
        params["bias"] = weight(b)
    return ("conv2d" if dims == 2 else "conv1d"), attrs, params, x


def _aten_conv_transpose(n, weight):
    """aten.conv_transpose2d.input: (input, weight, bias, stride, padding, output_padding, groups, dilation)."""
    W, b = weight(n.args[1]), weight(_arg(n, 2, "bias"))
    attrs = _conv_transpose_attrs(W, _arg(n, 3, "stride", 1), _arg(n, 4, "padding", 0),
                                  _arg(n, 5, "output_padding", 0), _arg(n, 7, "dilation", 1), _arg(n, 6, "groups", 1))
    return ("conv_transpose2d" if W.ndim == 4 else "conv_transpose1d"), attrs, \
        ({"weight": W} if b is None else {"weight": W, "bias": b}), n.args[0]


def _aten_linear(n, weight):
    if n.target is aten.linear.default:
        x, W, b = n.args[0], weight(n.args[1]), weight(_arg(n, 2, "bias"))
    elif n.target is aten.addmm.default:  # bias + x @ W^T, what linear decomposes into
        if n.kwargs.get("beta", 1) != 1 or n.kwargs.get("alpha", 1) != 1:
            raise UnsupportedError("addmm with alpha or beta")
        x, W, b = n.args[1], weight(n.args[2]).T, weight(n.args[0])
    else:  # mm: x @ W^T without bias
        x, W, b = n.args[0], weight(n.args[1]).T, None
    params = {"weight": np.ascontiguousarray(W)}
    if b is not None:
        params["bias"] = np.ascontiguousarray(np.broadcast_to(b, W.shape[:1]))
    return "linear", {"in_features": int(W.shape[1]), "out_features": int(W.shape[0])}, params, x


def _aten_batchnorm(n, weight):
    if n.target is aten._native_batch_norm_legit_no_training.default:
        eps = _arg(n, 6, "eps")
    else:  # batch_norm / native_batch_norm: (input, weight, bias, mean, var, training, momentum, eps, ...)
        if _arg(n, 5, "training"):
            raise UnsupportedError("BatchNorm in training mode (export the model after model.eval())")
        eps = _arg(n, 7, "eps")
    mean, var = weight(n.args[3]), weight(n.args[4])
    if mean is None:
        raise UnsupportedError("BatchNorm without running statistics (track_running_stats=False)")
    w, b = weight(n.args[1]), weight(n.args[2])
    params = {"weight": w if w is not None else np.ones_like(mean), "bias": b if b is not None else np.zeros_like(mean),
              "running_mean": mean, "running_var": var}
    return "batchnorm", {"eps": float(eps)}, params, n.args[0]


def _aten_pool(n, weight):
    kernel = _ints(n.args[1], 2)
    stride = _ints(_arg(n, 2, "stride", []) or kernel, 2)  # an empty stride means stride = kernel
    attrs = {"kernel_size": kernel, "stride": stride, "padding": _ints(_arg(n, 3, "padding", 0), 2)}
    if n.target is aten.avg_pool2d.default:
        if _arg(n, 6, "divisor_override") is not None:
            raise UnsupportedError("avg_pool2d with divisor_override")
        attrs.update(ceil_mode=bool(_arg(n, 4, "ceil_mode", False)),
                     count_include_pad=bool(_arg(n, 5, "count_include_pad", True)))
        return "avgpool2d", attrs, {}, n.args[0]
    if _ints(_arg(n, 4, "dilation", 1), 2) != [1, 1]:
        raise UnsupportedError("max_pool2d with dilation")
    attrs["ceil_mode"] = bool(_arg(n, 5, "ceil_mode", False))
    return "maxpool2d", attrs, {}, n.args[0]


def _aten_rnn(n, weight):
    """aten.gru.input / aten.lstm.input: (input, hx, flat weights, has_biases, num_layers, dropout, train,
    bidirectional, batch_first); the initial state must be zeros, as nn.GRU/nn.LSTM make it when none is given."""
    kind = "gru" if n.target is aten.gru.input else "lstm"
    x, hx, flat, has_biases, num_layers, _, _, bidirectional, batch_first = n.args[:9]
    if num_layers != 1:
        raise UnsupportedError(f"{kind} with num_layers={num_layers} (stack single-layer modules)")
    if bidirectional:
        raise UnsupportedError(f"bidirectional {kind} (a streaming device sees each step once)")
    for h in (hx if isinstance(hx, (list, tuple)) else [hx]):
        if np.any(weight(h)):
            raise UnsupportedError(f"{kind} with an initial state argument")
    if len(flat) != (4 if has_biases else 2):
        raise UnsupportedError("LSTM with proj_size")
    w = [weight(t) for t in flat]
    params = {"weight_ih": w[0], "weight_hh": w[1]}
    if has_biases:
        params.update(bias_ih=w[2], bias_hh=w[3])
    attrs = {"input_size": int(w[0].shape[1]), "hidden_size": int(w[1].shape[1]), "batch_first": bool(batch_first)}
    return kind, attrs, params, x


def _permutation(n, rank: int) -> list[int]:
    """The axis order a permute / transpose / t call produces."""
    if n.target is aten.permute.default:
        return [int(d) % rank for d in n.args[1]]
    a, b = (int(n.args[1]) % rank, int(n.args[2]) % rank) if n.target is aten.transpose.int else (0, rank - 1)
    perm = list(range(rank))
    perm[a], perm[b] = perm[b], perm[a]
    return perm


def _any_permutation(n, rank: int) -> list[int]:
    """The axis order of a permute / transpose / t call, written as a method, a torch function or an ATen call."""
    if n.target in _LAYOUT:
        return _permutation(n, rank)
    name = n.target if isinstance(n.target, str) else n.target.__name__
    rest = list(n.args[1:])
    if name == "permute":
        dims = rest[0] if len(rest) == 1 and isinstance(rest[0], (list, tuple)) else rest
        return [int(d) % rank for d in (dims or n.kwargs.get("dims"))]
    perm = list(range(rank))
    a, b = (int(rest[0]) % rank, int(rest[1]) % rank) if name == "transpose" else (0, rank - 1)
    perm[a], perm[b] = perm[b], perm[a]
    return perm


def _split_bounds(n, size: int) -> list[int]:
    """Where every piece of a chunk / split call on an axis of ``size`` elements starts (and the last ends)."""
    name = (n.target if isinstance(n.target, str) else n.target.__name__).split(".")[0]  # aten: "split.Tensor"
    arg = n.args[1] if len(n.args) > 1 else n.kwargs.get("chunks", n.kwargs.get("split_size_or_sections",
                                                                                 n.kwargs.get("split_size")))
    if name == "chunk":
        step = -(-size // int(arg))
        sizes = [step] * (size // step) + ([size % step] if size % step else [])
    elif isinstance(arg, (list, tuple)):
        sizes = [int(a) for a in arg]
    else:
        sizes = [int(arg)] * (size // int(arg)) + ([size % int(arg)] if size % int(arg) else [])
    return [sum(sizes[:i]) for i in range(len(sizes) + 1)]


def _keeps_order(shape, perm) -> bool:
    """True when permuting ``shape`` by ``perm`` moves only size-1 axes, so the elements keep their order."""
    kept = [a for a in perm if shape[a] != 1]
    return kept == sorted(kept)


def _aten_prelu(n, weight):
    """aten.prelu: as nn.PReLU."""
    return (*_prelu(weight(n.args[1])), n.args[0])


ATEN_LAYER_HANDLERS: dict[Any, Callable] = {
    aten.conv1d.default: _aten_conv, aten.conv2d.default: _aten_conv, aten.convolution.default: _aten_conv,
    aten.conv2d.padding: _aten_conv, aten.conv1d.padding: _aten_conv, aten.conv_transpose2d.input: _aten_conv_transpose,
    aten.conv_transpose1d.default: _aten_conv_transpose,
    aten.linear.default: _aten_linear, aten.addmm.default: _aten_linear, aten.mm.default: _aten_linear,
    aten.batch_norm.default: _aten_batchnorm, aten.native_batch_norm.default: _aten_batchnorm,
    aten._native_batch_norm_legit_no_training.default: _aten_batchnorm,
    aten.max_pool2d.default: _aten_pool, aten.max_pool2d_with_indices.default: _aten_pool,
    aten.avg_pool2d.default: _aten_pool,
    aten.gru.input: _aten_rnn, aten.lstm.input: _aten_rnn, aten.prelu.default: _aten_prelu,
}
# 1-D pooling calls, run as the 2-D pool over the [N, C, L, 1] view (_pool1d_call)
_POOL1D_CALLS = {F.max_pool1d, F.avg_pool1d, aten.max_pool1d.default, aten.avg_pool1d.default,
                 aten.max_pool1d_with_indices.default}
# ATen calls that return a tuple whose first element is the layer's output (the rest, batch statistics or pooling
# indices, must go unused).
_FIRST_OF_TUPLE = {aten.native_batch_norm.default, aten._native_batch_norm_legit_no_training.default,
                   aten.max_pool2d_with_indices.default}
# In-place ATen calls (nn.ReLU(inplace=True), ``out += x``) and the call they stand for.
_INPLACE = {aten.relu_.default: aten.relu.default, aten.hardtanh_.default: aten.hardtanh.default,
            aten.sigmoid_.default: aten.sigmoid.default, aten.tanh_.default: aten.tanh.default,
            aten.hardswish_.default: aten.hardswish.default, aten.add_.Tensor: aten.add.Tensor,
            aten.hardsigmoid_.default: aten.hardsigmoid.default, aten.silu_.default: aten.silu.default,
            aten.leaky_relu_.default: aten.leaky_relu.default, aten.elu_.default: aten.elu.default,
            aten.mish_.default: aten.mish.default,
            aten.mul_.Tensor: aten.mul.Tensor}
_LAYOUT = {aten.permute.default, aten.transpose.int, aten.t.default}
_ZERO_FILLS = {aten.zeros.default, aten.new_zeros.default, aten.zeros_like.default, aten.full.default}
# Calls that appear only once a program is decomposed to core ATen (run_decompositions()).
_DECOMPOSED = {aten.convolution.default, aten.addmm.default, aten.mm.default,
               aten._native_batch_norm_legit_no_training.default}
_ALIASES = {aten.alias.default, aten.detach.default, aten.lift_fresh_copy.default, aten.contiguous.default}


def group_problems(problems: list[str]) -> str:
    """Join "'layer' (reason)" entries, naming the layers that share a reason together: "'a', 'b' (reason)"."""
    groups: dict[str, list[str]] = {}
    for p in problems:
        m = re.match(r"^(.*?'[^']*') \((.*)\)$", p)
        who, why = (m.group(1), m.group(2)) if m else (p, "")
        groups.setdefault(why, []).append(who)
    return "; ".join(", ".join(who) + (f" ({why})" if why else "") for why, who in groups.items())


def _leaf_path(n, op: str) -> str | None:
    """The module path of the torch.nn layer an ATen node is (conv2d inside an nn.Conv2d at 'features.0.0'), so that
    a .pt2 program's layers carry the names of the original model. Reshapes and selections inside a layer (an LSTM's
    h_n, a linear's flattening) are not the layer itself, except for nn.Flatten."""
    stack = n.meta.get("nn_module_stack")
    if not stack:
        return None
    path, cls = list(stack.values())[-1]
    cls_name = cls if isinstance(cls, str) else f"{cls.__module__}.{cls.__qualname__}"
    leaves = {f"{c.__module__}.{c.__qualname__}": c for c in MODULE_HANDLERS}
    if cls_name not in leaves or (op in ("reshape", "select") and not issubclass(leaves[cls_name], nn.Flatten)):
        return None
    return path


def _shape_of(meta) -> tuple[int, ...] | None:
    tm = meta.get("tensor_meta")
    if tm is None:
        v = meta.get("val")
        return tuple(v.shape) if isinstance(v, torch.Tensor) else None
    return tuple(tm.shape) if hasattr(tm, "shape") else None


class _ShapeAndNumberProp(ShapeProp):
    """ShapeProp that also keeps the value of every node computing a plain number (``d ** 0.5`` from ``x.shape``),
    so a tensor divided by it imports as a constant scale."""

    def run_node(self, n):
        result = super().run_node(n)
        if isinstance(result, (int, float)) and not isinstance(result, bool):
            n.meta["number"] = result
        return result


def _fx_graph(module: nn.Module, example: tuple[torch.Tensor, ...]) -> GraphModule:
    if isinstance(module, GraphModule):
        gm = module
    else:
        try:
            gm = GraphModule(module, _LeafTracer().trace(module))
        except Exception as e:  # tracing errors carry their own context
            raise UnsupportedError(f"model '{type(module).__name__}' cannot be traced by torch.fx: "
                                   f"{str(e).splitlines()[0]} (avoid Python control flow on tensor values)") from e
    try:
        _ShapeAndNumberProp(gm).propagate(*example)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise ShapeError(f"example input of shape {[tuple(x.shape) for x in example]} does not fit the model: "
                         f"{first}") from e
    return gm


def import_module(module: nn.Module, example: tuple[torch.Tensor, ...], name: str = "model") -> Graph:
    """Trace ``module`` on ``example`` (a tuple of tensors, batch 1) into a Graph."""
    module = module.eval()
    with torch.no_grad():
        gm = _fx_graph(module, example)
    modules = dict(gm.named_modules())
    nodes: list[Node] = []
    alias: dict[str, str] = {}  # fx node name -> graph node name it stands for
    tuples: dict[str, str] = {}  # fx name of a multi-output module -> graph node name
    pieces: dict[str, tuple[str, int, list[int]]] = {}  # a chunk / split call -> (input, axis, piece starts)
    hidden_states: dict[str, str] = {}  # fx name of an RNN's h_n -> the node selecting its last step
    lstm_states: dict[str, str] = {}  # fx name of nn.LSTM's (h_n, c_n) pair -> the LSTM's graph node
    consts: dict[str, Any] = {}  # fx name -> tensor (parameters, buffers, and what is computed from them alone)
    first_of: dict[str, str] = {}  # fx name of a tuple-returning ATen layer -> its graph node
    problems: list[str] = []
    outputs: list[str] = []
    used_names: set[str] = set()

    def layer_name(n, op: str = "") -> str:
        leaf = _leaf_path(n, op) if n.op == "call_function" else None
        if n.op == "call_module":
            base = str(n.target)
        elif leaf:
            base = leaf  # a layer called twice gets '_2', as a module called twice does
        else:
            stack = n.meta.get("nn_module_stack")
            base = n.name
            if stack:
                path = list(stack.values())[-1]
                path = path[0] if isinstance(path, tuple) else path
                base = f"{path}.{n.name}" if path else n.name
        nm, k = base, 1
        while nm in used_names:
            k += 1
            nm = f"{base}_{k}"
        used_names.add(nm)
        return nm

    def src(a) -> str:
        return alias.get(a.name, a.name)

    def weight(a) -> np.ndarray | None:
        if a is None:
            return None
        if isinstance(a, torch.fx.Node) and a.name in consts:
            return _np(consts[a.name])
        raise UnsupportedError(f"'{getattr(a, 'name', a)}' is used as a weight but computed from the input "
                               "(edgekit needs constant weights)")

    def is_constant(n) -> bool:
        """True when an fx node depends on parameters and buffers only (a transposed weight, a zero state)."""
        leaves: list = []
        torch.fx.node.map_arg((n.args, n.kwargs), leaves.append)
        return n.op == "call_function" and all(a.name in consts for a in leaves) and \
            n.target not in ATEN_LAYER_HANDLERS

    def last_step(n, rnn: str) -> None:
        """h_n of a single-layer RNN is the last step of its output sequence: a select node."""
        rnode = next(x for x in nodes if x.name == rnn)
        tdim = 1 if rnode.attrs["batch_first"] else 0
        spec: list = [["slice", None, None, None]] * 3
        spec[tdim] = -1
        step_shape = tuple(d for i, d in enumerate(rnode.shape) if i != tdim)
        nm = layer_name(n, "select")
        nodes.append(Node(nm, "select", [rnn], step_shape, {"index": spec}))
        hidden_states[n.name] = nm

    def add(n, op, inputs, attrs=None, params=None, shape=None):
        shape = shape if shape is not None else _shape_of(n.meta)
        nm = layer_name(n, op)
        alias[n.name] = nm
        nodes.append(Node(nm, op, inputs, shape, attrs or {}, params or {}))

    def pool1d(n, op, attrs, x):
        """A 1-D pool over [N, C, L] as the 2-D one over its [N, C, L, 1] view (a reshape each side: the same
        element order, so no copy on any target); the pool keeps the layer's name."""
        in_shape, out_shape = list(_shape_of(n.args[0].meta)), list(_shape_of(n.meta))
        if len(in_shape) != 3:
            raise UnsupportedError(f"1-D pooling of a {len(in_shape)}-D tensor (edgekit pools [N, C, L])")
        nm = layer_name(n, op)
        nodes.append(Node(f"{nm}.as_2d", "reshape", [x], in_shape + [1], {"shape": in_shape + [1]}))
        nodes.append(Node(nm, op, [f"{nm}.as_2d"], out_shape + [1], attrs))
        nodes.append(Node(f"{nm}.as_1d", "reshape", [nm], out_shape, {"shape": out_shape}))
        alias[n.name] = f"{nm}.as_1d"

    for n in gm.graph.nodes:
        try:
            if n.op == "placeholder":
                shape = _shape_of(n.meta)
                if shape is None:
                    continue
                add(n, "input", [], shape=shape)
            elif n.op == "get_attr":
                t = gm
                for part in str(n.target).split("."):
                    t = getattr(t, part)
                consts[n.name] = t.detach() if isinstance(t, torch.Tensor) else t
            elif n.op == "call_module" and not n.users and _shape_of(n.meta) is None:
                continue  # torch.export's input guard (_guards_fn): checks shapes, computes nothing
            elif n.op == "call_module" and isinstance(modules[str(n.target)], (nn.MaxPool1d, nn.AvgPool1d)):
                op, attrs = _pool1d_module(modules[str(n.target)])
                pool1d(n, op, attrs, src(n.args[0]))
            elif n.op == "call_module":
                m = modules[str(n.target)]
                handler = MODULE_HANDLERS.get(type(m))
                if handler is None:
                    problems.append(f"'{n.target}' ({type(m).__name__})")
                    continue
                op, attrs, params = handler(m)
                ins = [src(a) for a in n.args if isinstance(a, torch.fx.Node)]
                if op == "identity":
                    alias[n.name] = ins[0]
                    continue
                if op == "upsample":
                    attrs["scale"] = resize_scale(_shape_of(n.args[0].meta), _shape_of(n.meta))
                if op == "pad":
                    attrs = pad_attrs(attrs["padding"], len(_shape_of(n.args[0].meta)), value=attrs["value"])
                if type(m) in RECURRENT_MODULES:
                    if len(ins) != 1:
                        problems.append(f"'{n.target}' ({type(m).__name__} with an initial state argument)")
                        continue
                    shapes = n.meta["tensor_meta"]
                    seq_shape = tuple(shapes[0].shape)
                    add(n, op, ins, attrs, params, shape=seq_shape)
                    tuples[n.name] = alias[n.name]
                    continue
                add(n, op, ins, attrs, params)
            elif n.op == "call_function" and is_constant(n):
                args, kwargs = torch.fx.node.map_arg((n.args, n.kwargs), lambda a: consts[a.name])
                consts[n.name] = n.target(*args, **kwargs)
            elif n.op in ("call_function", "call_method"):
                tgt = n.target
                mutated = None
                if tgt in _INPLACE:  # the in-place call's result replaces its first argument from here on
                    tgt, mutated = _INPLACE[tgt], n.args[0]
                tensor_args = [a for a in n.args if isinstance(a, torch.fx.Node) and a.name not in consts
                               and "number" not in a.meta]
                shape = _shape_of(n.meta)
                if shape is None and "number" in n.meta:
                    continue  # shape arithmetic (an output size from x.shape[2] * 3): read where it is used
                if tgt in _ZERO_FILLS and (tgt is not aten.full.default or n.args[1] == 0):
                    # zeros sized from the input (an RNN's initial state with a dynamic batch): a zero constant
                    consts[n.name] = torch.zeros(shape)
                    continue
                if tgt in _POOL1D_CALLS:
                    op, attrs = _pool1d_call(n)
                    pool1d(n, op, attrs, src(n.args[0]))
                    if tgt is aten.max_pool1d_with_indices.default:
                        first_of[n.name] = alias[n.name]
                    continue
                if tgt in ATEN_LAYER_HANDLERS:
                    op, attrs, params, x = ATEN_LAYER_HANDLERS[tgt](n, weight)
                    tm = n.meta.get("tensor_meta")
                    out_shape = shape if hasattr(tm, "shape") else tuple(tm[0].shape)  # tuple: (output, ...)
                    add(n, op, [src(x)], attrs, params, shape=out_shape)
                    if op in ("gru", "lstm"):
                        tuples[n.name] = alias[n.name]
                    elif tgt in _FIRST_OF_TUPLE:
                        first_of[n.name] = alias[n.name]
                    continue
                if tgt is operator.getitem and n.args[0].name in first_of:
                    if n.args[1] == 0:
                        alias[n.name] = first_of[n.args[0].name]
                    elif n.users:
                        problems.append(f"'{n.name}' (batch statistics or pooling indices are read)")
                    continue
                if tgt is aten.select.int and n.args[0].name in hidden_states:
                    if n.args[1] == 0 and n.args[2] in (0, -1):
                        alias[n.name] = hidden_states[n.args[0].name]
                    else:
                        problems.append(f"'{n.name}' (indexing h_n other than h_n[-1])")
                    continue
                if tgt is operator.getitem and n.args[0].name in tuples:
                    rnn = tuples[n.args[0].name]
                    idx = n.args[1]
                    if idx == 0:
                        alias[n.name] = rnn
                    elif idx == 1 and n.args[0].op == "call_module" and type(modules[str(n.args[0].target)]) \
                            is nn.LSTM:
                        lstm_states[n.name] = rnn  # nn.LSTM returns (output, (h_n, c_n))
                    elif idx == 1:
                        last_step(n, rnn)
                    elif n.users:
                        problems.append(f"'{n.name}' (the cell state of an LSTM; use the output or h_n)")
                    continue
                if tgt is operator.getitem and n.args[0].name in lstm_states:
                    if n.args[1] == 0:
                        last_step(n, lstm_states[n.args[0].name])
                    elif n.users:
                        problems.append(f"'{n.name}' (the cell state of an LSTM; use the output or h_n)")
                    continue
                if tgt is operator.getitem and n.args[0].name in hidden_states:
                    # h_n is [num_layers=1, batch, hidden]: h_n[0] / h_n[-1] is the last step of the sequence.
                    if n.args[1] in (0, -1):
                        alias[n.name] = hidden_states[n.args[0].name]
                    else:
                        problems.append(f"'{n.name}' (indexing h_n other than h_n[-1])")
                    continue
                if tgt is operator.getitem and n.args[0].name in pieces:
                    x, dim, starts = pieces[n.args[0].name]
                    i = int(n.args[1]) % (len(starts) - 1)
                    add(n, "select", [x], {"index": [["slice", None, None, None]] * dim
                                           + [["slice", starts[i], starts[i + 1], None]]})
                elif tgt is operator.getitem and isinstance(n.args[0], torch.fx.Node):
                    if shape is None:
                        continue
                    add(n, "select", [src(n.args[0])], {"index": _index_spec(n.args[1])})
                elif tgt in _SPLITS or (n.op == "call_method" and tgt in ("chunk", "split")):
                    in_shape = _shape_of(n.args[0].meta)
                    dim = int(n.args[2] if len(n.args) > 2 else n.kwargs.get("dim", 0)) % len(in_shape)
                    pieces[n.name] = (src(n.args[0]), dim, _split_bounds(n, in_shape[dim]))
                elif tgt in _TRANSPOSE_CALLS or (n.op == "call_method" and tgt in ("transpose", "permute", "t")):
                    in_shape = _shape_of(n.args[0].meta)
                    perm = _any_permutation(n, len(in_shape))
                    if _keeps_order(in_shape, perm):
                        add(n, "reshape", [src(n.args[0])], {"shape": list(shape)})
                    elif perm[0] != 0:
                        problems.append(f"'{n.name}' (transpose: moves the batch axis; edgekit keeps the batch "
                                        "first, e.g. use batch_first=True)")
                    else:
                        add(n, "transpose", [src(n.args[0])], {"perm": perm})
                elif tgt in _MATMUL or (n.op == "call_method" and tgt in ("matmul", "bmm")):
                    if len(tensor_args) != 2:
                        problems.append(f"'{n.name}' (matmul with a constant: write it as nn.Linear)")
                        continue
                    add(n, "matmul", [src(a) for a in tensor_args])
                elif (tgt in _DIV or (n.op == "call_method" and tgt in ("div", "truediv"))) and \
                        len(tensor_args) == 1 and n.args[0] is tensor_args[0] and _number(n.args[1]) is not None:
                    add(n, "scale", [src(tensor_args[0])], {"factor": 1.0 / _number(n.args[1])})
                elif (tgt in _MUL or (n.op == "call_method" and tgt == "mul")) and len(tensor_args) == 1 and \
                        len(n.args) == 2 and _number(n.args[1] if n.args[0] is tensor_args[0] else n.args[0]) \
                        is not None:
                    c = _number(n.args[1] if n.args[0] is tensor_args[0] else n.args[0])
                    add(n, "scale", [src(tensor_args[0])], {"factor": c})
                elif tgt in (F.pad, torch.ops.aten.constant_pad_nd.default, torch.ops.aten.pad.default):
                    rank = len(_shape_of(n.args[0].meta))
                    if tgt is torch.ops.aten.constant_pad_nd.default:
                        attrs = pad_attrs(n.args[1], rank, value=_arg(n, 2, "value", 0.0))
                    else:
                        attrs = pad_attrs(n.args[1], rank, _arg(n, 2, "mode", "constant"), _arg(n, 3, "value", 0.0))
                    add(n, "pad", [src(tensor_args[0])], attrs)
                elif tgt in _INTERPOLATE:
                    if tgt is F.interpolate:
                        mode, corners = _arg(n, 3, "mode", "nearest"), _arg(n, 4, "align_corners")
                    elif tgt in (aten.upsample_bilinear2d.vec, aten.upsample_bilinear2d.default):
                        mode, corners = "bilinear", _arg(n, 2, "align_corners")
                    else:
                        mode, corners = "nearest", None
                    add(n, "upsample", [src(tensor_args[0])],
                        {"scale": resize_scale(_shape_of(n.args[0].meta), shape),
                         "mode": _resize_mode(mode, corners)})
                elif tgt in (F.pixel_shuffle, torch.pixel_shuffle, aten.pixel_shuffle.default):
                    r = int(_arg(n, 1, "upscale_factor"))
                    add(n, "depth_to_space", [src(tensor_args[0])], {"block": [r, r], "mode": "CRD"})
                elif tgt in _GELU or (n.op == "call_method" and tgt == "gelu"):
                    add(n, "gelu", [src(tensor_args[0])], {"approximate": str(n.kwargs.get("approximate", "none"))})
                elif tgt in _LAYER_NORM:
                    shape_arg = [int(d) for d in n.args[1]]
                    w = weight(n.args[2] if len(n.args) > 2 else n.kwargs.get("weight"))
                    b = weight(n.args[3] if len(n.args) > 3 else n.kwargs.get("bias"))
                    eps = float(n.args[4] if len(n.args) > 4 else n.kwargs.get("eps", 1e-5))
                    params = {k: v for k, v in (("weight", w), ("bias", b)) if v is not None}
                    add(n, "layernorm", [src(tensor_args[0])], {"normalized_shape": shape_arg, "eps": eps}, params)
                elif tgt is aten.select.int:
                    dim, index = int(n.args[1]), int(n.args[2])
                    add(n, "select", [src(n.args[0])], {"index": [["slice", None, None, None]] * dim + [index]})
                elif tgt is aten.slice.Tensor:
                    dim, start, end = _arg(n, 1, "dim", 0), _arg(n, 2, "start"), _arg(n, 3, "end")
                    step, size = _arg(n, 4, "step", 1), _shape_of(n.args[0].meta)[dim]
                    if (start or 0) == 0 and (end is None or end >= size) and step == 1:
                        alias[n.name] = src(n.args[0])  # x[:, :] keeps everything
                        continue
                    end = None if end is not None and end >= size else end
                    add(n, "select", [src(n.args[0])],
                        {"index": [["slice", None, None, None]] * (dim % len(shape)) + [["slice", start, end, step]]})
                elif tgt in _LAYOUT:
                    # With batch 1 a permute that only moves size-1 axes keeps the element order: a reshape.
                    in_shape = _shape_of(n.args[0].meta)
                    if shape[0] != in_shape[0]:
                        problems.append(f"'{n.name}' ({tgt.__name__}: moves the batch axis; edgekit keeps the batch "
                                        "first, e.g. use batch_first=True)")
                    elif not _keeps_order(in_shape, _permutation(n, len(in_shape))):
                        add(n, "transpose", [src(n.args[0])], {"perm": _permutation(n, len(in_shape))})
                    else:
                        add(n, "reshape", [src(n.args[0])], {"shape": list(shape)})
                elif tgt in (aten.softmax.int, aten._softmax.default):
                    add(n, "softmax", [src(n.args[0])], {"dim": int(n.args[1])})
                elif tgt in _ACT_FUNCS or (n.op == "call_method" and tgt in _ACT_METHODS):
                    op = _ACT_FUNCS.get(tgt) if n.op == "call_function" else _ACT_METHODS[tgt]
                    add(n, op, [src(tensor_args[0])])
                elif tgt in (F.hardtanh, torch.ops.aten.hardtanh.default):
                    lo = float(n.args[1] if len(n.args) > 1 else n.kwargs.get("min_val", -1.0))
                    hi = float(n.args[2] if len(n.args) > 2 else n.kwargs.get("max_val", 1.0))
                    op, attrs, _ = _hardtanh(lo, hi)
                    add(n, op, [src(tensor_args[0])], attrs)
                elif tgt in (F.leaky_relu, torch.ops.aten.leaky_relu.default):
                    slope = n.args[1] if len(n.args) > 1 else n.kwargs.get("negative_slope", 0.01)
                    add(n, "leaky_relu", [src(tensor_args[0])], {"negative_slope": float(slope)})
                elif tgt in (F.elu, torch.ops.aten.elu.default):
                    alpha = n.args[1] if len(n.args) > 1 else n.kwargs.get("alpha", 1.0)
                    if tgt is torch.ops.aten.elu.default and tuple(float(v) for v in n.args[2:4]) not in ((), (1.0,),
                                                                                                       (1.0, 1.0)):
                        problems.append(f"'{n.name}' (elu with a scale: SELU)")
                        continue
                    add(n, "elu", [src(tensor_args[0])], {"alpha": float(alpha)})
                elif tgt in _ADD or (n.op == "call_method" and tgt == "add"):
                    if len(tensor_args) != 2 or len(n.args) != 2 or n.kwargs.get("alpha", 1) != 1:
                        problems.append(f"'{n.name}' (add with a constant or alpha)")
                        continue
                    add(n, "add", [src(a) for a in tensor_args])
                elif tgt in _MUL or (n.op == "call_method" and tgt == "mul"):
                    const_args = [a for a in n.args if isinstance(a, torch.fx.Node) and a.name in consts
                                  and isinstance(consts[a.name], torch.Tensor)]
                    if len(tensor_args) == 1 and len(const_args) == 1 and len(n.args) == 2:  # x * c, a layer scale
                        add(n, "mul_const", [src(tensor_args[0])], params={"value": _np(consts[const_args[0].name])})
                        continue
                    if len(tensor_args) != 2 or len(n.args) != 2:
                        problems.append(f"'{n.name}' (multiply by a constant)")
                        continue
                    add(n, "mul", [src(a) for a in tensor_args])
                elif tgt in _CAT:
                    parts = n.args[0]
                    dim = n.args[1] if len(n.args) > 1 else n.kwargs.get("dim", 0)
                    add(n, "concat", [src(a) for a in parts], {"dim": int(dim)})
                elif tgt in _FLATTEN or (n.op == "call_method" and tgt == "flatten"):
                    start = n.args[1] if len(n.args) > 1 else n.kwargs.get("start_dim", 0)
                    add(n, "reshape", [src(tensor_args[0])], {"shape": list(shape)})
                    nodes[-1].attrs["from"] = f"flatten(start_dim={start})"
                elif tgt in _RESHAPE_FUNCS or (n.op == "call_method" and tgt in _RESHAPE_METHODS):
                    add(n, "reshape", [src(tensor_args[0])], {"shape": list(shape)})
                elif tgt in (F.adaptive_avg_pool2d, torch.ops.aten.adaptive_avg_pool2d.default,
                             torch.ops.aten._adaptive_avg_pool2d.default) and \
                        tuple(_pair(n.args[1])) == (1, 1):
                    add(n, "global_avgpool", [src(tensor_args[0])])
                elif tgt in (F.adaptive_avg_pool1d, torch.ops.aten.adaptive_avg_pool1d.default) and \
                        list(n.args[1] if isinstance(n.args[1], (list, tuple)) else [n.args[1]]) == [1]:
                    add(n, "global_avgpool", [src(tensor_args[0])])  # (a .pt2 keeps AdaptiveAvgPool1d(1) as is)
                elif tgt in (torch.mean, torch.ops.aten.mean.dim) or (n.op == "call_method" and tgt == "mean"):
                    raw = n.args[1] if len(n.args) > 1 else n.kwargs.get("dim")
                    raw = raw if isinstance(raw, (list, tuple)) else [raw]
                    dims = sorted(int(d) % 4 for d in raw)
                    in_shape = _shape_of(n.args[0].meta)
                    pooled = (in_shape[0], in_shape[1]) + (1,) * (len(in_shape) - 2)
                    if len(in_shape) == 4 and dims == [2, 3] or \
                            len(in_shape) == 3 and sorted(int(d) % 3 for d in raw) == [2]:  # over H, W / over time
                        add(n, "global_avgpool", [src(tensor_args[0])], shape=pooled)
                        if tuple(shape) != pooled:
                            nm = alias[n.name]
                            nodes.append(Node(nm + ".reshape", "reshape", [nm], shape, {"shape": list(shape)}))
                            alias[n.name] = nm + ".reshape"
                    else:
                        dims = sorted({int(d) % len(in_shape) for d in raw})
                        if 0 in dims:
                            problems.append(f"'{n.name}' (mean over the batch axis)")
                        else:
                            keep = bool(n.args[2] if len(n.args) > 2 else n.kwargs.get("keepdim", False))
                            add(n, "reduce_mean", [src(tensor_args[0])], {"dims": dims, "keepdim": keep})
                elif tgt in (F.softmax, torch.softmax) or (n.op == "call_method" and tgt == "softmax"):
                    dim = n.kwargs.get("dim", n.args[1] if len(n.args) > 1 else -1)
                    add(n, "softmax", [src(tensor_args[0])], {"dim": int(dim)})
                elif tgt in (F.dropout, torch.ops.aten.dropout.default) or tgt in _ALIASES or \
                        (n.op == "call_method" and tgt in ("detach",)):
                    alias[n.name] = src(tensor_args[0])
                elif shape is None:
                    continue  # shape arithmetic (x.size(0) ...): no tensor, nothing to deploy
                else:
                    what = tgt if isinstance(tgt, str) else getattr(tgt, "__name__", str(tgt))
                    problems.append(f"'{n.name}' ({what})")
                if mutated is not None and n.name in alias:
                    alias[mutated.name] = alias[n.name]
            elif n.op == "output":
                res = n.args[0]
                res = res if isinstance(res, (tuple, list)) else (res,)
                for r in res:
                    if isinstance(r, torch.fx.Node):
                        outputs.append(alias.get(r.name, r.name))
        except UnsupportedError as e:
            where = n.target if n.op == "call_module" else (_leaf_path(n, "") or n.name)
            problems.append(f"'{where}' ({e})")
    if problems:
        hint = ""
        if any(n.target in _DECOMPOSED for n in gm.graph.nodes):
            hint = (" (this program was decomposed to core ATen: save the program torch.export.export returns "
                    "without run_decompositions(), so layers such as GRU and LSTM stay whole)")
        raise UnsupportedError(f"model '{name}' has {len(problems)} layer(s) edgekit cannot import: "
                               + group_problems(problems) + hint + "; no edgekit target (cortex-m*, phone-arm64, "
                               "loihi2, spinnaker2) runs these operators yet: replace them, or run the model's ONNX "
                               "export in ONNX Runtime directly")
    return Graph(nodes, outputs, name)
