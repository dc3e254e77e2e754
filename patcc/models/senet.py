"""A small squeeze-and-excitation residual network with a zoo of activations.

Covers gating (a feature map multiplied by a broadcast per-channel gate), both SE
forms (1x1 convolutions, and Flatten/Linear/Reshape), Hardsigmoid, Hardswish, SiLU,
LeakyReLU and Tanh.
"""

from __future__ import annotations

import torch
from torch import nn

from patcc.models.weights import randomize_batchnorm, seeded

# The batch-1 NCHW input the model is built for.
INPUT_SHAPE: tuple[int, ...] = (1, 3, 32, 32)


class SqueezeExciteConv(nn.Module):
    """SE gate from 1x1 convolutions: pool, reduce, SiLU, expand, Hardsigmoid, multiply."""

    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.reduce = nn.Conv2d(channels, channels // reduction, 1)
        self.act = nn.SiLU()
        self.expand = nn.Conv2d(channels // reduction, channels, 1)
        self.gate = nn.Hardsigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(self.expand(self.act(self.reduce(self.pool(x)))))


class SqueezeExciteLinear(nn.Module):
    """SE gate from linear layers, as in the original SENet: the gate is reshaped to NC11."""

    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Linear(channels, channels // reduction)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Linear(channels // reduction, channels)
        self.gate = nn.Hardsigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels = x.shape[0], x.shape[1]
        y = torch.flatten(self.pool(x), 1)
        y = self.gate(self.fc2(self.relu(self.fc1(y))))
        return x * y.view(batch, channels, 1, 1)


class SEBlock(nn.Module):
    """conv3x3-BN-SiLU-conv3x3-BN, SE gate, residual add, then ``activation``."""

    def __init__(
        self, in_channels: int, out_channels: int, stride: int, squeeze_excite: nn.Module,
        activation: nn.Module,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.act1 = nn.SiLU()
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.se = squeeze_excite
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )
        self.act2 = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.act1(self.bn1(self.conv1(x)))))
        return self.act2(self.se(out) + self.shortcut(x))


class SENetTiny(nn.Module):
    """Hardswish stem, two SE blocks (the second strided), pooled Linear-Tanh-Linear head."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.Hardswish()
        )
        self.block1 = SEBlock(16, 16, 1, SqueezeExciteConv(16), nn.LeakyReLU(0.1))
        self.block2 = SEBlock(16, 32, 2, SqueezeExciteLinear(32), nn.Hardswish())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.block2(self.block1(self.stem(x)))))


def senet_tiny(num_classes: int = 10, seed: int = 0) -> SENetTiny:
    """Build the small SE network (input 1x3x32x32) in eval mode with deterministic weights.

    Args:
        num_classes: width of the classifier.
        seed: seed for the weights and batch-norm statistics.

    Returns:
        the model.
    """
    with seeded(seed):
        model = SENetTiny(num_classes)
    # PyTorch's default (fan-in uniform) initialisation is kept here: the SE and head
    # linear layers need non-negligible weights for the gates and Tanh to do anything.
    randomize_batchnorm(model, seed, INPUT_SHAPE)
    return model.eval()
