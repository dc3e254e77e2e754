"""A small DenseNet with an Inception-style module: channel concatenation everywhere.

Covers what the big reference networks lack: concatenation of many branches,
pre-activation batch norm (BN -> ReLU -> conv, so the BN cannot be folded into a
preceding convolution), a 5x5 convolution, a stride-1 max-pool branch and an
average-pool transition.
"""

from __future__ import annotations

import torch
from torch import nn

from patcc.models.weights import build_seeded

# The batch-1 NCHW input the model is built for.
INPUT_SHAPE: tuple[int, ...] = (1, 3, 32, 32)


def _conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class InceptionModule(nn.Module):
    """Four parallel branches (1x1; 1x1-3x3; 1x1-5x5; maxpool-1x1) concatenated."""

    def __init__(self, in_channels: int, branch_channels: int) -> None:
        super().__init__()
        self.branch1x1 = _conv_bn_relu(in_channels, branch_channels, 1)
        self.branch3x3 = nn.Sequential(
            _conv_bn_relu(in_channels, branch_channels, 1),
            _conv_bn_relu(branch_channels, branch_channels, 3),
        )
        self.branch5x5 = nn.Sequential(
            _conv_bn_relu(in_channels, branch_channels // 2, 1),
            _conv_bn_relu(branch_channels // 2, branch_channels, 5),
        )
        self.branch_pool = nn.Sequential(
            nn.MaxPool2d(3, stride=1, padding=1),
            _conv_bn_relu(in_channels, branch_channels, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branches = (self.branch1x1, self.branch3x3, self.branch5x5, self.branch_pool)
        return torch.cat([branch(x) for branch in branches], 1)


class DenseLayer(nn.Module):
    """BN-ReLU-1x1 bottleneck then BN-ReLU-3x3 producing ``growth_rate`` new channels."""

    def __init__(self, in_channels: int, growth_rate: int, bottleneck: int = 4) -> None:
        super().__init__()
        self.norm1 = nn.BatchNorm2d(in_channels)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_channels, bottleneck * growth_rate, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(bottleneck * growth_rate)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(bottleneck * growth_rate, growth_rate, 3, padding=1, bias=False)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        # As torchvision does: every layer sees the concatenation of all earlier outputs.
        x = torch.cat(features, 1)
        x = self.conv1(self.relu1(self.norm1(x)))
        return self.conv2(self.relu2(self.norm2(x)))


class DenseBlock(nn.Module):
    """``num_layers`` dense layers; returns the input concatenated with all their outputs."""

    def __init__(self, num_layers: int, in_channels: int, growth_rate: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            DenseLayer(in_channels + i * growth_rate, growth_rate) for i in range(num_layers)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for layer in self.layers:
            features.append(layer(features))
        return torch.cat(features, 1)


class Transition(nn.Sequential):
    """BN, ReLU, 1x1 convolution halving the channels, 2x2 average pool."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.BatchNorm2d(in_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(in_channels, out_channels, 1, bias=False),
            nn.AvgPool2d(2, stride=2),
        )


class DenseNetTiny(nn.Module):
    """Stem, Inception module, dense block, transition, dense block, pooled classifier."""

    def __init__(self, num_classes: int = 10, growth_rate: int = 8) -> None:
        super().__init__()
        self.stem = _conv_bn_relu(3, 16, 3)
        self.inception = InceptionModule(16, 8)
        channels = 4 * 8
        self.block1 = DenseBlock(3, channels, growth_rate)
        channels += 3 * growth_rate
        self.transition = Transition(channels, channels // 2)
        channels //= 2
        self.block2 = DenseBlock(3, channels, growth_rate)
        channels += 3 * growth_rate
        self.norm = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block1(self.inception(self.stem(x)))
        x = self.block2(self.transition(x))
        x = self.pool(self.relu(self.norm(x)))
        return self.classifier(torch.flatten(x, 1))


def densenet_tiny(num_classes: int = 10, seed: int = 0) -> DenseNetTiny:
    """Build the small DenseNet (input 1x3x32x32) in eval mode with deterministic weights.

    Args:
        num_classes: width of the classifier.
        seed: seed for the weights and batch-norm statistics.

    Returns:
        the model.
    """
    return build_seeded(lambda: DenseNetTiny(num_classes), seed, INPUT_SHAPE)
