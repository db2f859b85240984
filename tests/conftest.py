"""Shared fixtures: small real models built here, and the bundled examples."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from edgekit.model import Model


class TinyCNN(nn.Module):
    """Conv + BN + ReLU, a depthwise conv in a residual branch, 1x1 conv, max pool, flatten, linear."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(1, 8, 3, padding=1)
        self.b1 = nn.BatchNorm2d(8)
        self.c2 = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.c3 = nn.Conv2d(8, 16, 1)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(16 * 4 * 4, 10)

    def forward(self, x):
        y = torch.relu(self.b1(self.c1(x)))
        y = y + F.relu6(self.c2(y))
        y = self.pool(torch.relu(self.c3(y)))
        return self.fc(torch.flatten(y, 1))


def make_tiny(n: int = 24, seed: int = 0) -> Model:
    torch.manual_seed(seed)
    module = TinyCNN().eval()
    with torch.no_grad():
        module.b1.running_mean.uniform_(-0.5, 0.5)
        module.b1.running_var.uniform_(0.5, 2.0)
    x = np.random.default_rng(seed).random((n, 1, 8, 8), dtype=np.float32)
    y = module(torch.from_numpy(x)).argmax(-1).numpy()
    return Model.from_module(module, torch.from_numpy(x[:1]), name="tiny", calib=x, test_x=x, test_y=y)


@pytest.fixture
def tiny() -> Model:
    return make_tiny()
