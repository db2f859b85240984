"""A zoo of public architectures, written out here as users copy them (nothing is downloaded): edgekit's standing test.

Each is the published shape at a microcontroller-sized input. The image classifiers (``TRAINED``) are briefly
trained, deterministically, on scikit-learn's bundled digits scaled up to their input size (a few epochs, seconds to
a minute each on two cores, done once and kept in the edgekit cache): a network's int8 fidelity is a property of
trained weights, and random deep networks are chaotic -- their pooled features barely depend on the input, so a
head that spreads the logits amplifies any rounding (measured: random-weight MobileNetV1/V2, ResNet-20 and
EfficientNet-lite reached 1-15 dB SQNR in int8 with ONNX Runtime's quantizer as with edgekit's). Those get digit
images as calibration and test inputs, with labels, so accuracy is measured too. The rest have deterministic random
weights whose BatchNorm statistics are re-estimated on seeded calibration-like inputs (so activations stay alive
through the network) and whose classifier is centred and scaled so that logits vary with the input.
``mobilenet-v1-025-untrained`` keeps PyTorch's default initialisation and BatchNorm statistics (mean 0, variance 1):
the int8 regression case whose activations die out (~1e-11).

| name | paper / source | what it exercises |
|---|---|---|
| dscnn-kws | Zhang et al. 2017, "Hello Edge" (DS-CNN-S) | depthwise-separable convs on a 49x10 MFCC map |
| mobilenet-v1-025 | Howard et al. 2017 | depthwise/pointwise stacks, 96x96 |
| mobilenet-v2-035 | Sandler et al. 2018 | inverted residuals, ReLU6, 96x96 |
| mobilenet-v3-small | Howard et al. 2019 | hardswish, squeeze-excite (broadcast multiply, hardsigmoid) |
| resnet8 | MLPerf Tiny image classification | residual adds, 32x32 |
| resnet20 | He et al. 2016 (CIFAR ResNet-20) | deeper residual stack |
| squeezenet | Iandola et al. 2016 (Fire modules) | concat |
| shufflenet | Zhang et al. 2018 (ShuffleNet v1 unit) | channel shuffle (reshape/transpose), grouped convs |
| efficientnet-lite | Tan & Le 2019, EfficientNet-lite0 blocks | MBConv with ReLU6, no SE |
| efficientnet-b0 | Tan & Le 2019, EfficientNet-B0 at width 0.5 | SiLU, squeeze-excite with a sigmoid gate |
| tcn | Bai et al. 2018 (temporal conv net) | dilated Conv1d |
| matchboxnet | Majumdar & Ginsburg 2020 (MatchboxNet 3x1x64) | time-channel separable Conv1d: depthwise kernels of
  11-29 taps (a dilated one), residual pointwise branches, on 49x10 MFCC |
| m5 | Dai et al. 2017 (M5, raw waveforms) at a quarter width | an 80-tap / stride-4 Conv1d on 8,000 samples,
  MaxPool1d after every conv |
| gru-kws | keyword GRU (hidden 64) | recurrent step program |
| attention | Vaswani et al. 2017 block | LayerNorm, MatMul, Softmax, GELU |
| unet | Ronneberger et al. 2015 (small) | upsample + concat |
| unet-upconv | Ronneberger et al. 2015 as published: three levels, 2x2 up-convolutions | ConvTranspose2d (stride 2),
  two convs a level, skip concats |
| espcn | Shi et al. 2016 (ESPCN super-resolution, x3) | tanh, sub-pixel conv: PixelShuffle of 9 channels a pixel |
| fsrcnn | Dong et al. 2016 (FSRCNN(56, 12, 4), x3) | PReLU per channel, a 9x9 / stride-3 transposed conv (9 phases
  of a 3x3 conv, cropped) |
| dcgan | Radford et al. 2016 (DCGAN generator, 32x32) | 4x4 transposed convs, stride 2, padding 1 (cropped
  phases), BatchNorm folded into them, a 1x1 latent, tanh |
| autoencoder | MLPerf Tiny anomaly detection (FC AE) | fully connected 640 -> 8 -> 640 |
| resnet18-224 | He et al. 2016, as torchvision writes it | too big for a microcontroller: the one-line "does not fit" |
"""
from __future__ import annotations

import hashlib
import os
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edgekit.zoo.models import MobileNetV2, conv_bn_relu

SEED = 20261203
CALIBRATION_SAMPLES = 64
TEST_SAMPLES = 32
BN_SAMPLES = 8


# ---- architectures ---------------------------------------------------------------------------------------------------

def _dw_sep(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(conv_bn_relu(cin, cin, 3, stride, groups=cin), conv_bn_relu(cin, cout, 1))


class DSCNN(nn.Module):
    def __init__(self, channels: int = 64, classes: int = 12):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, channels, (10, 4), 2, (5, 1), bias=False), nn.BatchNorm2d(channels),
                                      nn.ReLU(), *[_dw_sep(channels, channels) for _ in range(4)],
                                      nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = nn.Linear(channels, classes)

    def forward(self, x):
        return self.classifier(self.features(x))


class MobileNetV1(nn.Module):
    def __init__(self, alpha: float = 0.25, classes: int = 2):
        super().__init__()
        c = lambda v: max(8, int(v * alpha))  # noqa: E731
        cfg = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)] + [(512, 1)] * 5 + [(1024, 2), (1024, 1)]
        layers, cin = [conv_bn_relu(3, c(32), 3, 2)], c(32)
        for cout, s in cfg:
            layers.append(_dw_sep(cin, c(cout), s))
            cin = c(cout)
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = nn.Linear(cin, classes)

    def forward(self, x):
        return self.classifier(self.features(x))


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation: average pool, 1x1 conv to ``squeeze`` channels, ``act``, 1x1 conv back, ``gate``
    (MobileNetV3: ReLU and a hard sigmoid; EfficientNet: SiLU and a sigmoid)."""

    def __init__(self, c: int, squeeze: int, act=nn.ReLU, gate=nn.Hardsigmoid):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1, self.fc2 = nn.Conv2d(c, squeeze, 1), nn.Conv2d(squeeze, c, 1)
        self.act, self.gate = act(), gate()

    def forward(self, x):
        return x * self.gate(self.fc2(self.act(self.fc1(self.pool(x)))))


class _InvertedResidual(nn.Module):
    """A block of ``layers`` whose input is added to its output when ``residual`` (the shapes match): MobileNetV3's and
    EfficientNet's inverted residuals."""

    def __init__(self, layers: list[nn.Module], residual: bool):
        super().__init__()
        self.block = nn.Sequential(*layers)
        self.residual = residual

    def forward(self, x):
        y = self.block(x)
        return x + y if self.residual else y


class V3Block(_InvertedResidual):
    def __init__(self, cin, exp, cout, k, stride, se, hs):
        act = nn.Hardswish if hs else nn.ReLU
        layers = [] if exp == cin else [conv_bn_relu(cin, exp, 1, activation=act)]
        layers += [conv_bn_relu(exp, exp, k, stride, groups=exp, activation=act)]
        if se:
            layers.append(SqueezeExcite(exp, max(8, exp // 4)))
        layers += [nn.Conv2d(exp, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        super().__init__(layers, stride == 1 and cin == cout)


class MobileNetV3Small(nn.Module):
    """torchvision's mobilenet_v3_small configuration (width 1.0), written out."""

    CFG = [(16, 16, 16, 3, 2, True, False), (16, 72, 24, 3, 2, False, False), (24, 88, 24, 3, 1, False, False),
           (24, 96, 40, 5, 2, True, True), (40, 240, 40, 5, 1, True, True), (40, 240, 40, 5, 1, True, True),
           (40, 120, 48, 5, 1, True, True), (48, 144, 48, 5, 1, True, True), (48, 288, 96, 5, 2, True, True),
           (96, 576, 96, 5, 1, True, True), (96, 576, 96, 5, 1, True, True)]

    def __init__(self, classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(conv_bn_relu(3, 16, 3, 2, activation=nn.Hardswish),
                                      *[V3Block(*c) for c in self.CFG],
                                      conv_bn_relu(96, 576, 1, activation=nn.Hardswish), nn.AdaptiveAvgPool2d(1),
                                      nn.Flatten())
        self.classifier = nn.Sequential(nn.Linear(576, 1024), nn.Hardswish(), nn.Linear(1024, classes))

    def forward(self, x):
        return self.classifier(self.features(x))


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.body = nn.Sequential(conv_bn_relu(cin, cout, 3, stride), nn.Conv2d(cout, cout, 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(cout))
        self.short = nn.Sequential() if stride == 1 and cin == cout else \
            nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.relu(self.body(x) + self.short(x))


class CifarResNet(nn.Module):
    """ResNet-8 (MLPerf Tiny: stages 16/32/64, one block each) and ResNet-20 (three blocks each)."""

    def __init__(self, blocks: int, classes: int = 10):
        super().__init__()
        layers, cin = [conv_bn_relu(3, 16, 3)], 16
        for i, c in enumerate((16, 32, 64)):
            for b in range(blocks):
                layers.append(BasicBlock(cin, c, 2 if b == 0 and i > 0 else 1))
                cin = c
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = nn.Linear(64, classes)

    def forward(self, x):
        return self.classifier(self.features(x))


class Fire(nn.Module):
    def __init__(self, cin, squeeze, expand):
        super().__init__()
        self.squeeze = nn.Sequential(nn.Conv2d(cin, squeeze, 1), nn.ReLU())
        self.e1 = nn.Sequential(nn.Conv2d(squeeze, expand, 1), nn.ReLU())
        self.e3 = nn.Sequential(nn.Conv2d(squeeze, expand, 3, padding=1), nn.ReLU())

    def forward(self, x):
        s = self.squeeze(x)
        return torch.cat([self.e1(s), self.e3(s)], 1)


class SqueezeNet(nn.Module):
    def __init__(self, classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 32, 3, 2, 1), nn.ReLU(), nn.MaxPool2d(2), Fire(32, 8, 32),
                                      Fire(64, 8, 32), nn.MaxPool2d(2), Fire(64, 16, 64), Fire(128, 16, 64))
        # (the paper's ReLU after the class conv is left out: with random weights it zeroes most classes)
        self.head = nn.Sequential(nn.Conv2d(128, classes, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten())

    def forward(self, x):
        return self.head(self.features(x))


class ShuffleUnit(nn.Module):
    def __init__(self, c: int, groups: int = 4):
        super().__init__()
        self.groups = groups
        self.g1 = nn.Sequential(nn.Conv2d(c, c, 1, groups=groups, bias=False), nn.BatchNorm2d(c), nn.ReLU())
        self.dw = nn.Sequential(nn.Conv2d(c, c, 3, 1, 1, groups=c, bias=False), nn.BatchNorm2d(c))
        self.g2 = nn.Sequential(nn.Conv2d(c, c, 1, groups=groups, bias=False), nn.BatchNorm2d(c))

    def forward(self, x):
        y = self.g1(x)
        n, c, h, w = y.shape
        y = y.view(n, self.groups, c // self.groups, h, w).transpose(1, 2).reshape(n, c, h, w)  # channel shuffle
        return torch.relu(x + self.g2(self.dw(y)))


class ShuffleNet(nn.Module):
    def __init__(self, classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(conv_bn_relu(3, 32, 3, 2), ShuffleUnit(32), ShuffleUnit(32),
                                      nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = nn.Linear(32, classes)

    def forward(self, x):
        return self.classifier(self.features(x))


class MBConv(_InvertedResidual):
    def __init__(self, cin, cout, k, stride, expand):
        mid = cin * expand
        layers = [conv_bn_relu(cin, mid, 1, activation=nn.ReLU6)] if expand != 1 else []
        layers += [conv_bn_relu(mid, mid, k, stride, groups=mid, activation=nn.ReLU6),
                   nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        super().__init__(layers, stride == 1 and cin == cout)


class EfficientNetLite(nn.Module):
    """EfficientNet-lite0's stages (ReLU6, no squeeze-excite), channels halved for a microcontroller."""

    def __init__(self, classes: int = 10):
        super().__init__()
        cfg = [(16, 8, 3, 1, 1), (8, 12, 3, 2, 6), (12, 12, 3, 1, 6), (12, 20, 5, 2, 6), (20, 20, 5, 1, 6),
               (20, 40, 3, 2, 6), (40, 56, 5, 1, 6), (56, 96, 5, 2, 6)]
        self.features = nn.Sequential(conv_bn_relu(3, 16, 3, 2, activation=nn.ReLU6), *[MBConv(*c) for c in cfg],
                                      conv_bn_relu(96, 320, 1, activation=nn.ReLU6), nn.AdaptiveAvgPool2d(1),
                                      nn.Flatten())
        self.classifier = nn.Linear(320, classes)

    def forward(self, x):
        return self.classifier(self.features(x))


class MBConvSE(_InvertedResidual):
    """EfficientNet-B0's MBConv: 1x1 expansion, depthwise k x k, squeeze-excite (a quarter of the input channels),
    1x1 projection; SiLU; a residual add where the shape allows."""

    def __init__(self, cin, cout, k, stride, expand):
        mid = cin * expand
        layers = [conv_bn_relu(cin, mid, 1, activation=nn.SiLU)] if expand != 1 else []
        layers += [conv_bn_relu(mid, mid, k, stride, groups=mid, activation=nn.SiLU),
                   SqueezeExcite(mid, max(4, cin // 4), nn.SiLU, nn.Sigmoid), nn.Conv2d(mid, cout, 1, bias=False),
                   nn.BatchNorm2d(cout)]
        super().__init__(layers, stride == 1 and cin == cout)


class EfficientNetB0(nn.Module):
    """EfficientNet-B0 (Tan & Le 2019) as torchvision writes it -- SiLU, squeeze-excite in every MBConv, stages
    (expand, kernel, stride, channels, repeats) (1,3,1,16,1) (6,3,2,24,2) (6,5,2,40,2) (6,3,2,80,3) (6,5,1,112,3)
    (6,5,2,192,4) (6,3,1,320,1) -- at width 0.5 (channels halved, rounded to multiples of 8, as EfficientNet's
    width scaling does) and depth 1.0 for a microcontroller's flash."""

    STAGES = [(1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3), (6, 5, 1, 112, 3),
              (6, 5, 2, 192, 4), (6, 3, 1, 320, 1)]

    def __init__(self, classes: int = 10, width: float = 0.5):
        super().__init__()
        c = lambda v: max(8, int(v * width + 4) // 8 * 8)  # noqa: E731 - EfficientNet's _make_divisible(v, 8)
        layers, cin = [conv_bn_relu(3, c(32), 3, 2, activation=nn.SiLU)], c(32)
        for expand, k, stride, cout, repeats in self.STAGES:
            for r in range(repeats):
                layers.append(MBConvSE(cin, c(cout), k, stride if r == 0 else 1, expand))
                cin = c(cout)
        self.features = nn.Sequential(*layers, conv_bn_relu(cin, c(1280), 1, activation=nn.SiLU),
                                      nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = nn.Linear(c(1280), classes)

    def forward(self, x):
        return self.classifier(self.features(x))


class TCN(nn.Module):
    def __init__(self, cin: int = 10, c: int = 32, classes: int = 12):
        super().__init__()
        layers = []
        for i, d in enumerate((1, 2, 4, 8)):
            layers += [nn.Conv1d(cin if i == 0 else c, c, 3, padding=d, dilation=d), nn.BatchNorm1d(c), nn.ReLU()]
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool1d(1), nn.Flatten())
        self.classifier = nn.Linear(c, classes)

    def forward(self, x):
        return self.classifier(self.features(x))


class MatchboxNet(nn.Module):
    """MatchboxNet 3x1x64 (Majumdar & Ginsburg 2020): B = 3 residual blocks of R = 1 time-channel separable Conv1d
    (depthwise over time, kernels 13 / 15 / 17, then pointwise to 64 channels, BatchNorm, ReLU after the residual 1x1
    branch's add); prologue separable k = 11 stride 2 to 128 channels, epilogue separable k = 29 dilation 2 and a
    1x1 conv, then average pooling and a linear classifier (the paper's last 1x1 conv to the classes); on 10 MFCC
    coefficients x 49 frames as the other keyword models here, instead of the paper's 64 x 128."""

    @staticmethod
    def _sep(cin: int, cout: int, k: int, stride: int = 1, dilation: int = 1) -> list[nn.Module]:
        return [nn.Conv1d(cin, cin, k, stride, dilation * (k // 2), dilation, groups=cin, bias=False),
                nn.Conv1d(cin, cout, 1, bias=False), nn.BatchNorm1d(cout)]

    def __init__(self, cin: int = 10, c: int = 64, classes: int = 12):
        super().__init__()
        self.prologue = nn.Sequential(*self._sep(cin, 128, 11, stride=2), nn.ReLU())
        self.blocks = nn.ModuleList()
        self.residuals = nn.ModuleList()
        for i, k in enumerate((13, 15, 17)):
            ci = 128 if i == 0 else c
            self.blocks.append(nn.Sequential(*self._sep(ci, c, k)))
            self.residuals.append(nn.Sequential(nn.Conv1d(ci, c, 1, bias=False), nn.BatchNorm1d(c)))
        self.epilogue = nn.Sequential(*self._sep(c, 128, 29, dilation=2), nn.ReLU(),
                                      nn.Conv1d(128, 128, 1, bias=False), nn.BatchNorm1d(128), nn.ReLU(),
                                      nn.AdaptiveAvgPool1d(1), nn.Flatten())
        self.classifier = nn.Linear(128, classes)

    def forward(self, x):
        x = self.prologue(x)
        for block, residual in zip(self.blocks, self.residuals):
            x = torch.relu(block(x) + residual(x))
        return self.classifier(self.epilogue(x))


class GRUKws(nn.Module):
    def __init__(self, hidden: int = 64, classes: int = 12):
        super().__init__()
        self.gru = nn.GRU(10, hidden, batch_first=True)
        self.classifier = nn.Linear(hidden, classes)

    def forward(self, x):
        return self.classifier(self.gru(x)[1][0])


class AttentionBlock(nn.Module):
    """One pre-norm transformer encoder block over 16 tokens of width 32, mean-pooled into a classifier."""

    def __init__(self, d: int = 32, heads: int = 2, classes: int = 10):
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.mlp = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))
        self.classifier = nn.Linear(d, classes)

    def forward(self, x):
        n, t, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).chunk(3, dim=-1)
        split = lambda z: z.reshape(n, t, self.heads, d // self.heads).transpose(1, 2)  # noqa: E731
        q, k, v = split(q), split(k), split(v)
        att = torch.softmax(q @ k.transpose(-2, -1) / (d // self.heads) ** 0.5, dim=-1)
        x = x + self.proj((att @ v).transpose(1, 2).reshape(n, t, d))
        x = x + self.mlp(self.norm2(x))
        return self.classifier(x.mean(dim=1))


class UNet(nn.Module):
    """Two-level U-Net: conv, max-pool, conv, nearest upsample, concat with the skip, conv, 1x1 to class maps."""

    def __init__(self, c: int = 8, classes: int = 2):
        super().__init__()
        self.d1, self.d2 = conv_bn_relu(1, c), conv_bn_relu(c, 2 * c)
        self.pool = nn.MaxPool2d(2)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.u1 = conv_bn_relu(3 * c, c)
        self.out = nn.Conv2d(c, classes, 1)

    def forward(self, x):
        a = self.d1(x)
        b = self.d2(self.pool(a))
        return self.out(self.u1(torch.cat([self.up(b), a], 1)))


class UNetUpConv(nn.Module):
    """U-Net as Ronneberger et al. 2015 draw it, at three levels and microcontroller width (padded convs, as most
    implementations): two 3x3 conv-BN-ReLU a level, 2x2 max-pool down, a 2x2 up-convolution (ConvTranspose2d, stride
    2) halving the channels up, concatenated with the skip, a 1x1 conv to class maps."""

    def __init__(self, c: int = 8, classes: int = 2):
        super().__init__()
        two = lambda a, b: nn.Sequential(conv_bn_relu(a, b), conv_bn_relu(b, b))  # noqa: E731
        self.e1, self.e2, self.mid = two(1, c), two(c, 2 * c), two(2 * c, 4 * c)
        self.pool = nn.MaxPool2d(2)
        self.up2, self.d2 = nn.ConvTranspose2d(4 * c, 2 * c, 2, stride=2), two(4 * c, 2 * c)
        self.up1, self.d1 = nn.ConvTranspose2d(2 * c, c, 2, stride=2), two(2 * c, c)
        self.out = nn.Conv2d(c, classes, 1)

    def forward(self, x):
        a = self.e1(x)
        b = self.e2(self.pool(a))
        m = self.mid(self.pool(b))
        b = self.d2(torch.cat([self.up2(m), b], 1))
        return self.out(self.d1(torch.cat([self.up1(b), a], 1)))


class ESPCN(nn.Module):
    """ESPCN (Shi et al. 2016): 5x5 conv (64) - tanh - 3x3 conv (32) - tanh - 3x3 conv to r^2 channels - PixelShuffle(r),
    the published network for x3 super-resolution of one (luma) channel."""

    def __init__(self, r: int = 3):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 64, 5, padding=2), nn.Tanh(), nn.Conv2d(64, 32, 3, padding=1), nn.Tanh(),
                                  nn.Conv2d(32, r * r, 3, padding=1), nn.PixelShuffle(r))

    def forward(self, x):
        return self.body(x)


class FSRCNN(nn.Module):
    """FSRCNN(d=56, s=12, m=4) for x3 super-resolution (Dong et al. 2016): 5x5 feature extraction, 1x1 shrinking,
    four 3x3 mapping layers, 1x1 expanding, each followed by a PReLU with a slope per channel, then a 9x9
    deconvolution of stride 3."""

    def __init__(self, d: int = 56, s: int = 12, m: int = 4, r: int = 3):
        super().__init__()
        layers = [nn.Conv2d(1, d, 5, padding=2), nn.PReLU(d), nn.Conv2d(d, s, 1), nn.PReLU(s)]
        for _ in range(m):
            layers += [nn.Conv2d(s, s, 3, padding=1), nn.PReLU(s)]
        layers += [nn.Conv2d(s, d, 1), nn.PReLU(d)]
        self.body = nn.Sequential(*layers)
        self.deconv = nn.ConvTranspose2d(d, 1, 9, stride=r, padding=4, output_padding=r - 1)

    def forward(self, x):
        return self.deconv(self.body(x))


class DCGANGenerator(nn.Module):
    """DCGAN's generator (Radford et al. 2016) at 32x32x3 and width 16: a 100-d latent as a 1x1 map, a 4x4 transposed
    conv to 4x4, then 4x4 / stride 2 / padding 1 transposed convs doubling the map, BatchNorm and ReLU after each
    but the last, tanh out."""

    def __init__(self, z: int = 100, c: int = 16):
        super().__init__()

        def up(a, b, first=False):
            return [nn.ConvTranspose2d(a, b, 4, 1 if first else 2, 0 if first else 1, bias=False), nn.BatchNorm2d(b),
                    nn.ReLU()]

        self.body = nn.Sequential(*up(z, 4 * c, True), *up(4 * c, 2 * c), *up(2 * c, c),
                                  nn.ConvTranspose2d(c, 3, 4, 2, 1, bias=False), nn.Tanh())

    def forward(self, x):
        return self.body(x)


class AutoEncoder(nn.Module):
    def __init__(self, n: int = 640, h: int = 128, z: int = 8):
        super().__init__()
        dims = [n, h, h, h, h, z, h, h, h, h]
        layers = []
        for a, b in zip(dims, dims[1:]):
            layers += [nn.Linear(a, b), nn.BatchNorm1d(b), nn.ReLU()]
        self.body = nn.Sequential(*layers)
        self.out = nn.Linear(h, n)

    def forward(self, x):
        return self.out(self.body(x))


class M5(nn.Module):
    """Dai et al. 2017, "Very deep convolutional neural networks for raw waveforms" (M5) at a quarter of its width:
    an 80-tap, stride-4 Conv1d over the raw samples, then 3-tap ones, each with BatchNorm, ReLU and a 4-wide
    MaxPool1d, a global average over time and a linear classifier (1 s at 8 kHz)."""

    def __init__(self, classes: int = 12, width: int = 32):
        super().__init__()
        layers, cin = [], 1
        for i, cout in enumerate((width, width, 2 * width, 4 * width)):
            k, s = (80, 4) if i == 0 else (3, 1)
            layers += [nn.Conv1d(cin, cout, k, stride=s, padding=k // 2 if i else 38), nn.BatchNorm1d(cout), nn.ReLU(),
                       nn.MaxPool1d(4)]
            cin = cout
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool1d(1), nn.Flatten())
        self.fc = nn.Linear(cin, classes)

    def forward(self, x):
        return self.fc(self.features(x))


class ResNet18(nn.Module):
    """torchvision's resnet18 (BasicBlock, [2, 2, 2, 2]) as a user copies it: 224x224x3, 1000 classes."""

    def __init__(self, classes: int = 1000):
        super().__init__()
        layers, cin = [conv_bn_relu(3, 64, 7, 2), nn.MaxPool2d(3, 2, 1)], 64
        for i, c in enumerate((64, 128, 256, 512)):
            for b in range(2):
                layers.append(BasicBlock(cin, c, 2 if b == 0 and i > 0 else 1))
                cin = c
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(512, classes)

    def forward(self, x):
        return self.fc(self.features(x))


# name -> (build, input shape without batch, calibrate (False: PyTorch's default init left as it is))
# (classes: the classifiers' output width, 0 for the segmenter and the autoencoder; see CLASSES below)
ARCHITECTURES = {
    "dscnn-kws": (DSCNN, (1, 49, 10), True),
    "mobilenet-v1-025": (MobileNetV1, (3, 96, 96), True),
    "mobilenet-v1-025-untrained": (MobileNetV1, (3, 96, 96), False),
    "mobilenet-v2-035": (lambda: MobileNetV2(width=0.35, num_classes=10), (3, 96, 96), True),
    "mobilenet-v3-small": (MobileNetV3Small, (3, 96, 96), True),
    "resnet8": (lambda: CifarResNet(1), (3, 32, 32), True),
    "resnet20": (lambda: CifarResNet(3), (3, 32, 32), True),
    "squeezenet": (SqueezeNet, (3, 64, 64), True),
    "shufflenet": (ShuffleNet, (3, 32, 32), True),
    "efficientnet-lite": (EfficientNetLite, (3, 96, 96), True),
    "efficientnet-b0": (EfficientNetB0, (3, 96, 96), True),
    "tcn": (TCN, (10, 49), True),
    "matchboxnet": (MatchboxNet, (10, 49), True),
    "m5": (M5, (1, 8000), True),
    "gru-kws": (GRUKws, (49, 10), True),
    "attention": (AttentionBlock, (16, 32), True),
    "unet": (UNet, (1, 32, 32), True),
    "unet-upconv": (UNetUpConv, (1, 32, 32), True),
    "espcn": (ESPCN, (1, 32, 32), True),
    "fsrcnn": (FSRCNN, (1, 32, 32), True),
    "dcgan": (DCGANGenerator, (100, 1, 1), True),
    "autoencoder": (AutoEncoder, (640,), True),
    "resnet18-224": (ResNet18, (3, 224, 224), True),
}


CLASSES = {"dscnn-kws": 12, "mobilenet-v1-025": 2, "mobilenet-v1-025-untrained": 2, "mobilenet-v2-035": 10,
           "mobilenet-v3-small": 10, "resnet8": 10, "resnet20": 10, "squeezenet": 10, "shufflenet": 10,
           "efficientnet-lite": 10, "efficientnet-b0": 10, "tcn": 12, "matchboxnet": 12, "m5": 12, "gru-kws": 12,
           "attention": 10, "unet": 0, "unet-upconv": 0, "espcn": 0, "fsrcnn": 0, "dcgan": 0, "autoencoder": 0, "resnet18-224": 1000}


TASKS = {"unet": "segmentation", "unet-upconv": "segmentation", "espcn": "reconstruction", "fsrcnn": "reconstruction",
         "dcgan": "reconstruction",
         "autoencoder": "reconstruction"}  # the rest classify

# name -> (epochs, training images per epoch (None: all 1,437)) on the digits, labels taken modulo the class count.
# ResNet-18 at 224x224 gets 12 steps only (a full epoch would take minutes on two cores): not enough to learn the
# digits (test accuracy stays at chance), enough to leave the chaotic random regime (phone int8: 43 dB instead of 15).
TRAINED = {"mobilenet-v1-025": (4, None), "mobilenet-v2-035": (4, None), "mobilenet-v3-small": (4, None),
           "resnet8": (4, None), "resnet20": (4, None),
           "efficientnet-lite": (4, None), "efficientnet-b0": (4, None), "resnet18-224": (1, 384)}
TRAIN_BATCH = 32
TRAIN_LR = 2e-3


# ---- deterministic weights and data ----------------------------------------------------------------------------------

def _digits(name: str, split: str, count: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The digits (train or test split) at ``name``'s input shape: bilinear upscaling, grey in every channel,
    standardised; labels modulo the class count (MobileNetV1 here has two classes: even and odd digits)."""
    import torch.nn.functional as F

    from edgekit.datasets import digits

    d = digits()
    x, y = (d.x_train, d.y_train) if split == "train" else (d.x_test, d.y_test)
    x, y = x[:count], y[:count]
    shape = ARCHITECTURES[name][1]
    with torch.no_grad():
        big = F.interpolate(torch.from_numpy(np.ascontiguousarray(x)), size=shape[1:], mode="bilinear",
                            align_corners=False)
    big = big.repeat(1, shape[0], 1, 1).numpy()
    big = (big - 0.3) / 0.4  # the digits' pixel mean and standard deviation (0.30, 0.42)
    return np.ascontiguousarray(big, dtype=np.float32), (y % CLASSES[name]).astype(np.int64)


def _trained_cache(name: str) -> Path:
    digest = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:12]  # any change here trains again
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "edgekit" / "zoo"
    return root / f"{name}-{digest}.pt"


def _train(name: str, model: nn.Module) -> None:
    """A few epochs of Adam on the digits, seeded (same weights on every run of a machine), in place."""
    import torch.nn.functional as F

    epochs, count = TRAINED[name]
    x, y = (torch.from_numpy(a) for a in _digits(name, "train", count))
    generator = torch.Generator().manual_seed(SEED)
    optimiser = torch.optim.Adam(model.parameters(), lr=TRAIN_LR)
    steps = epochs * -(-len(x) // TRAIN_BATCH)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, TRAIN_LR, total_steps=steps)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        for i in range(0, len(x), TRAIN_BATCH):
            batch = order[i:i + TRAIN_BATCH]
            loss = F.cross_entropy(model(x[batch]), y[batch])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
    model.eval()


def inputs(name: str, count: int, offset: int) -> np.ndarray:
    """Seeded float32 inputs of ``name``'s shape: smooth fields plus fine noise (image-like), unit scale."""
    shape = ARCHITECTURES[name][1]
    rng = np.random.default_rng([SEED, offset, len(name)])
    x = rng.standard_normal((count,) + shape)
    if len(shape) == 3 and shape[1] >= 8 and shape[2] >= 8:  # images: spatial structure for the early convolutions
        coarse = rng.standard_normal((count, shape[0], -(-shape[1] // 8), -(-shape[2] // 8)))
        x = 0.5 * x + np.kron(coarse, np.ones((1, 1, 8, 8)))[:, :, :shape[1], :shape[2]]
    return (x / x.std()).astype(np.float32)


@lru_cache(maxsize=4)
def _state(name: str) -> dict[str, torch.Tensor]:
    build, _, calibrate = ARCHITECTURES[name]
    torch.manual_seed(SEED)
    model = build()
    if name in TRAINED:
        cache = _trained_cache(name)
        try:
            state = torch.load(cache, map_location="cpu", weights_only=True)
            model.load_state_dict(state)
            return state
        except (OSError, RuntimeError, ValueError, KeyError, EOFError):
            pass  # not trained yet here (or an unreadable cache file): train
        import sys

        print(f"edgekit: training zoo-{name} briefly on the digits (once; kept in {cache.parent})", file=sys.stderr)
        _train(name, model)
        state = {k: v.clone() for k, v in model.state_dict().items()}
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_suffix(f".{os.getpid()}.tmp")
            torch.save(state, tmp)
            os.replace(tmp, cache)
            for stale in cache.parent.glob(f"{name}-*.pt"):  # trained by an earlier version of this file
                if stale != cache:
                    stale.unlink(missing_ok=True)
        except OSError:
            pass  # no writable cache: still correct, only slower next time
        return state
    if calibrate:
        x = torch.from_numpy(inputs(name, BN_SAMPLES, 1))
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                    m.reset_running_stats()
                    m.momentum = None  # running statistics := this batch's
            model.train()
            if not isinstance(model, GRUKws):
                model(x)
            model.eval()
            for m in model.modules():
                if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                    m.momentum = 0.1
            head = _last_linear(model)
            if head is not None:  # centre and scale the logits so that they vary with the input
                logits = model(x)
                scale = 2.0 / float(logits.std(dim=0).mean().clamp_min(1e-6))
                head.weight.mul_(scale)
                head.bias.copy_(head.bias * scale - logits.mean(dim=0) * scale)
    return {k: v.clone() for k, v in model.state_dict().items()}


def _last_linear(model: nn.Module) -> nn.Linear | None:
    last = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return last[-1] if last and not isinstance(model, AutoEncoder) else None


def build(name: str) -> nn.Module:
    model = ARCHITECTURES[name][0]()
    model.load_state_dict(_state(name))
    return model.eval()


def data(name: str):
    """(x_calib, x_test, y_test): the trained models' digits (calibration from the training split, test images
    with labels); the others' seeded inputs, no labels (random weights: fidelity, not accuracy, is the question)."""
    if name in TRAINED:
        x_calib, _ = _digits(name, "train", CALIBRATION_SAMPLES)
        x_test, y_test = _digits(name, "test", TEST_SAMPLES)
        return x_calib, x_test, y_test
    return inputs(name, CALIBRATION_SAMPLES, 2), inputs(name, TEST_SAMPLES, 3), None
