"""Architectures of the bundled examples (see :mod:`edgekit.zoo` for the registry that pairs them with weights and data).

Plain ``torch.nn`` modules built only from standard layers (Conv2d incl. depthwise, BatchNorm2d, ReLU/ReLU6, Linear,
GRU, pooling, Flatten) and functional residual adds, so every converter and target sees ordinary operators — and, for
the LMU and EGRU examples, edgekit's own recurrent layers (edgekit/layers), which the importer keeps as single nodes.
Each one traces with torch.fx (recurrent layers as leaves): no Python control flow depends on tensor values.
"""
from __future__ import annotations

import torch
from torch import nn

from edgekit.layers import EGRU, LMU, EventTrace


def conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1, groups: int = 1,
                 activation: type[nn.Module] = nn.ReLU) -> nn.Sequential:
    """Conv (no bias, 'same' padding for odd kernels) + BatchNorm + activation: the block every CNN here is made of."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding=kernel_size // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out_channels),
        activation(),
    )


class DigitsCNN(nn.Module):
    """Small CNN for the 1x8x8 digits: two 3x3 convs at 8x8, 2x2 max-pool, one 3x3 conv at 4x4, global average pool,
    linear classifier. Input [N, 1, 8, 8] in [0, 1]; output [N, 10] logits."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            conv_bn_relu(1, 16),
            conv_bn_relu(16, 32),
            nn.MaxPool2d(2),
            conv_bn_relu(32, 32),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.classifier = nn.Linear(32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class DigitsGRU(nn.Module):
    """Single-layer GRU reading a digit one pixel per step (see :func:`edgekit.datasets.as_sequence`), classifying from
    the final hidden state. Input [N, 64, 1] in [0, 1]; output [N, 10] logits.

    GRU update (PyTorch's convention, Cho et al. 2014)::

        r_t = sigmoid(W_ir x_t + b_ir + W_hr h_{t-1} + b_hr)
        z_t = sigmoid(W_iz x_t + b_iz + W_hz h_{t-1} + b_hz)
        n_t = tanh(W_in x_t + b_in + r_t * (W_hn h_{t-1} + b_hn))
        h_t = (1 - z_t) * n_t + z_t * h_{t-1}
    """

    def __init__(self, hidden_size: int = 64, num_classes: int = 10):
        super().__init__()
        self.gru = nn.GRU(input_size=1, hidden_size=hidden_size, batch_first=True)
        self.classifier = nn.Linear(hidden_size, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        final_hidden = self.gru(x)[1]  # [num_layers=1, N, hidden]
        return self.classifier(final_hidden[0])


class DigitsEGRU(DigitsGRU):
    """:class:`DigitsGRU` with its GRU made event-based (:class:`edgekit.layers.EGRU`, same parameter names plus a
    per-unit ``threshold``): units communicate only when their state crosses the threshold, and the classifier reads
    the output trace of the events (:class:`edgekit.layers.EventTrace`, decay ``trace_decay``) after the last step.
    Its weights come from ``to_egru(digits-gru, output_trace=...)`` (examples/train_egru.py)."""

    def __init__(self, hidden_size: int = 64, num_classes: int = 10, input_size: int = 1, trace_decay: float = 0.9):
        super().__init__(hidden_size, num_classes)
        self.gru = EGRU(input_size=input_size, hidden_size=hidden_size, batch_first=True)
        self.gru_trace = EventTrace(hidden_size, trace_decay)  # the name to_egru's output_trace gives it

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.gru_trace(self.gru(x)[0])[1][0])


class DigitsLMU(nn.Module):
    """Legendre Memory Unit (:class:`edgekit.layers.LMU`) reading a digit one pixel per step, classifying from the last
    step's hidden state. The memory holds the whole 64-step window (theta = 64) in ``memory_size`` Legendre
    coefficients. Input [N, 64, 1] in [0, 1]; output [N, 10] logits."""

    def __init__(self, hidden_size: int = 64, memory_size: int = 32, theta: float = 64.0, num_classes: int = 10):
        super().__init__()
        self.lmu = LMU(input_size=1, hidden_size=hidden_size, memory_size=memory_size, theta=theta, batch_first=True)
        self.classifier = nn.Linear(hidden_size, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs, _ = self.lmu(x)
        return self.classifier(outputs[:, -1])


class CausalCrop(nn.Module):
    """Keeps the first ``frames`` steps of the time axis (dim 2). After a conv padded by kernel - 1 on both time sides
    it makes the conv causal (each output frame sees only the present and the past), as TCN's Chomp1d does; such a
    model streams frame by frame with identical outputs (edgekit.converters.to_streaming)."""

    def __init__(self, frames: int):
        super().__init__()
        self.frames = frames

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :, :self.frames]


class KwsDSCNN(nn.Module):
    """Depthwise-separable CNN for keyword spotting over [N, 1, 49, 10] MFCC frames (edgekit.speech): the DS-CNN of
    "Hello Edge" (Zhang et al. 2017, DS-CNN-S shape): a 10x4 conv with stride 2 (to 25x5x64), four blocks of 3x3
    depthwise + 1x1 pointwise convs (BatchNorm + ReLU each), global average pool, linear classifier. Output [N, 12]
    logits over edgekit.speech.CLASSES.

    Causal in time, so that it streams (one frame in, the window's answer out, caches instead of recomputation): the
    time-axis convs are padded by kernel - 1 on both sides and cropped to the frames that see no future
    (:class:`CausalCrop`); the frequency axis keeps 'same' padding. Row r of the first conv covers frames 2r-9 .. 2r."""

    def __init__(self, channels: int = 64, blocks: int = 4, num_classes: int = 12, frames: int = 49):
        super().__init__()
        rows = (frames - 1) // 2 + 1  # 25 for 49 frames
        layers = [nn.Conv2d(1, channels, (10, 4), stride=2, padding=(9, 1), bias=False), nn.BatchNorm2d(channels),
                  nn.ReLU(), CausalCrop(rows)]
        for _ in range(blocks):
            layers += [nn.Conv2d(channels, channels, 3, padding=(2, 1), groups=channels, bias=False),
                       nn.BatchNorm2d(channels), nn.ReLU(), CausalCrop(rows), conv_bn_relu(channels, channels, 1)]
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class KwsGRU(DigitsGRU):
    """GRU (hidden 64) reading the 49 MFCC frames of a clip one frame per step ([N, 49, 10]), classifying from the
    last hidden state: the streaming keyword model (one step per 20 ms frame). Output [N, 12] logits."""

    def __init__(self, hidden_size: int = 64, num_classes: int = 12):
        super().__init__(hidden_size, num_classes)
        self.gru = nn.GRU(input_size=10, hidden_size=hidden_size, batch_first=True)


class KwsEGRU(DigitsEGRU):
    """Event-based GRU (hidden 64) reading the 49 MFCC frames one per step ([N, 49, 10]), classifying from the output
    trace of its events; weights from ``to_egru(kws-gru, output_trace=...)`` (examples/train_egru.py)."""

    def __init__(self, hidden_size: int = 64, num_classes: int = 12, trace_decay: float = 0.9):
        super().__init__(hidden_size, num_classes, input_size=10, trace_decay=trace_decay)


class KwsLMU(DigitsLMU):
    """Legendre Memory Unit (hidden 64, memory order 16, window theta = 49 frames = the whole clip) reading the MFCC
    frames one per step ([N, 49, 10]). Output [N, 12] logits."""

    def __init__(self, hidden_size: int = 64, memory_size: int = 16, theta: float = 49.0, num_classes: int = 12):
        super().__init__(hidden_size, memory_size, theta, num_classes)
        self.lmu = LMU(input_size=10, hidden_size=hidden_size, memory_size=memory_size, theta=theta, batch_first=True)


class KwsSSM(nn.Module):
    """Two diagonal state-space layers (edgekit.layers.S4D: 64 channels, 16 states each) reading the MFCC frames one
    per step ([N, 49, 10]), classifying from the last step. Output [N, 12] logits."""

    def __init__(self, hidden_size: int = 64, state_size: int = 16, num_classes: int = 12, dt_min: float = 0.01,
                 dt_max: float = 0.5):
        super().__init__()
        self.ssm1, self.ssm2 = self.layers(hidden_size, state_size, dt_min=dt_min, dt_max=dt_max)
        self.classifier = nn.Linear(hidden_size, num_classes)

    @staticmethod
    def layers(hidden_size: int, state_size: int, **options) -> tuple[nn.Module, nn.Module]:
        from edgekit.layers import S4D

        return S4D(10, hidden_size, state_size, **options), S4D(hidden_size, hidden_size, state_size, **options)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.ssm2(self.ssm1(x)[0])[0][:, -1])


class KwsSelective(KwsSSM):
    """KwsSSM with selective state-space layers (edgekit.layers.SelectiveSSM, Mamba's scan: 64 channels, 16 states)."""

    def __init__(self, hidden_size: int = 64, state_size: int = 16, num_classes: int = 12):
        super().__init__(hidden_size, state_size, num_classes)

    @staticmethod
    def layers(hidden_size: int, state_size: int, **options) -> tuple[nn.Module, nn.Module]:
        from edgekit.layers import SelectiveSSM

        return SelectiveSSM(10, hidden_size, state_size), SelectiveSSM(hidden_size, hidden_size, state_size)


def make_divisible(value: float, divisor: int = 8) -> int:
    """MobileNet's channel rounding: nearest multiple of ``divisor``, never more than 10 % below ``value``."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand + BN + ReLU6 (skipped when expand_ratio is 1), 3x3 depthwise + BN + ReLU6, 1x1
    linear projection + BN; the input is added back when the stride is 1 and the channel count is unchanged."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expand_ratio: int):
        super().__init__()
        hidden = in_channels * expand_ratio
        self.use_residual = stride == 1 and in_channels == out_channels
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(conv_bn_relu(in_channels, hidden, kernel_size=1, activation=nn.ReLU6))
        layers += [
            conv_bn_relu(hidden, hidden, stride=stride, groups=hidden, activation=nn.ReLU6),
            nn.Conv2d(hidden, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
        ]
        self.block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_residual:  # a constructor-time bool, not a tensor value: FX-traceable
            return x + self.block(x)
        return self.block(x)


# (expand ratio t, output channels c at width 1.0, repeats n, first stride s), Sandler et al. 2018, table 2.
MOBILENET_V2_SETTINGS = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


class MobileNetV2(nn.Module):
    """MobileNetV2 (Sandler et al., "MobileNetV2: Inverted Residuals and Linear Bottlenecks", CVPR 2018).

    Channels are ``make_divisible(c * width)``; the last 1x1 conv keeps 1280 channels for width < 1, as in the paper.
    Input [N, 3, H, W] (any H, W divisible by 32); output [N, num_classes] logits.
    """

    def __init__(self, width: float = 1.0, num_classes: int = 1000, last_channels: int = 1280):
        super().__init__()
        in_channels = make_divisible(32 * width)
        layers: list[nn.Module] = [conv_bn_relu(3, in_channels, stride=2, activation=nn.ReLU6)]
        for expand_ratio, channels, repeats, first_stride in MOBILENET_V2_SETTINGS:
            out_channels = make_divisible(channels * width)
            for i in range(repeats):
                stride = first_stride if i == 0 else 1
                layers.append(InvertedResidual(in_channels, out_channels, stride, expand_ratio))
                in_channels = out_channels
        last_channels = max(last_channels, make_divisible(last_channels * width))
        layers.append(conv_bn_relu(in_channels, last_channels, kernel_size=1, activation=nn.ReLU6))
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(last_channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))
