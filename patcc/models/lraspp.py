"""LR-ASPP segmentation on a reduced MobileNetV3, as torchvision's
``lraspp_mobilenet_v3_large`` builds it.

The backbone has MobileNetV3's blocks (1x1 expansion, depthwise 3x3 or 5x5,
squeeze-excite gated by Hardsigmoid, ReLU or Hardswish, linear 1x1 projection,
residual when shapes allow) in fewer and narrower stages; like torchvision's
``dilated=True`` backbone its last stage keeps output stride 16 with dilated depthwise
convolutions instead of a stride. The head takes the stride-8 ("low") and the last
("high") feature maps: a 1x1 conv-BN-ReLU branch of the high features multiplied by a
sigmoid gate from their global average, resized bilinearly to the low features' size,
each side through a 1x1 classifier, summed, and resized to the input size.

The input, 1x3x120x120, is not a power of two: the stride-8 map is 15x15 and the last
one 8x8, so the first resize is by a factor 15/8 given as sizes, as for any input
torchvision's model is given.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from patcc.models.weights import build_seeded

# The batch-1 NCHW input the model is built for.
INPUT_SHAPE: tuple[int, ...] = (1, 3, 120, 120)

# (kernel, expanded channels, output channels, squeeze-excite, activation, stride,
# dilation) per block, a reduced ``mobilenet_v3_large``; the block after which the
# "low" features are taken is LOW_BLOCK.
BLOCK_SETTING: tuple[tuple[int, int, int, bool, str, int, int], ...] = (
    (3, 16, 16, False, "RE", 1, 1),
    (3, 64, 24, False, "RE", 2, 1),
    (3, 72, 24, False, "RE", 1, 1),
    (5, 72, 40, True, "RE", 2, 1),
    (5, 120, 40, True, "RE", 1, 1),
    (3, 160, 48, False, "HS", 2, 1),
    (3, 144, 48, True, "HS", 1, 1),
    (5, 240, 80, True, "HS", 1, 2),
    (5, 320, 80, True, "HS", 1, 2),
)
LOW_BLOCK = 4  # index in BLOCK_SETTING: 40 channels at stride 8
HEAD_CHANNELS = 128  # LR-ASPP's inter_channels (torchvision: 128)


def _make_divisible(value: float, divisor: int = 8) -> int:
    """torchvision's rounding of channel counts: nearest multiple of ``divisor``,
    never below 90% of ``value``."""
    new_value = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if new_value < 0.9 * value:
        new_value += divisor
    return new_value


def _activation(kind: str) -> nn.Module:
    return nn.Hardswish(inplace=True) if kind == "HS" else nn.ReLU(inplace=True)


class ConvBNActivation(nn.Sequential):
    """Conv without bias, batch norm, optional activation (Conv2dNormActivation)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1,
                 stride: int = 1, groups: int = 1, dilation: int = 1,
                 activation: str | None = None) -> None:
        padding = (kernel_size - 1) // 2 * dilation
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding,
                      dilation=dilation, groups=groups, bias=False),
            nn.BatchNorm2d(out_channels),
        ]
        if activation is not None:
            layers.append(_activation(activation))
        super().__init__(*layers)


class SqueezeExcitation(nn.Module):
    """Global average, 1x1 reduce, ReLU, 1x1 expand, Hardsigmoid gate, multiply."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        squeezed = _make_divisible(channels // 4)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeezed, 1)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(squeezed, channels, 1)
        self.gate = nn.Hardsigmoid(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(self.fc2(self.relu(self.fc1(self.avgpool(x)))))


class InvertedResidual(nn.Module):
    """MobileNetV3 block: expand, depthwise (dilated or strided), SE, project."""

    def __init__(self, in_channels: int, kernel: int, expanded: int, out_channels: int,
                 squeeze_excite: bool, activation: str, stride: int, dilation: int) -> None:
        super().__init__()
        self.use_residual = stride == 1 and in_channels == out_channels
        layers: list[nn.Module] = []
        if expanded != in_channels:
            layers.append(ConvBNActivation(in_channels, expanded, activation=activation))
        layers.append(ConvBNActivation(expanded, expanded, kernel, stride, groups=expanded,
                                       dilation=dilation, activation=activation))
        if squeeze_excite:
            layers.append(SqueezeExcitation(expanded))
        layers.append(ConvBNActivation(expanded, out_channels))
        self.block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return x + out if self.use_residual else out


class LRASPPHead(nn.Module):
    """torchvision's LRASPPHead: gated high branch, resized, plus the low classifier."""

    def __init__(self, low_channels: int, high_channels: int, num_classes: int,
                 inter_channels: int) -> None:
        super().__init__()
        self.cbr = nn.Sequential(
            nn.Conv2d(high_channels, inter_channels, 1, bias=False),
            nn.BatchNorm2d(inter_channels),
            nn.ReLU(inplace=True),
        )
        self.scale = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(high_channels, inter_channels, 1, bias=False),
            nn.Sigmoid(),
        )
        self.low_classifier = nn.Conv2d(low_channels, num_classes, 1)
        self.high_classifier = nn.Conv2d(inter_channels, num_classes, 1)

    def forward(self, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        x = self.cbr(high) * self.scale(high)
        x = F.interpolate(x, size=(low.shape[-2], low.shape[-1]), mode="bilinear",
                          align_corners=False)
        return self.low_classifier(low) + self.high_classifier(x)


class LRASPPMobileNetV3(nn.Module):
    """Hardswish stem, the blocks of BLOCK_SETTING, a 1x1 conv to 6x the last width
    (Hardswish), the LR-ASPP head and a bilinear resize to the input size."""

    def __init__(self, num_classes: int = 8) -> None:
        super().__init__()
        channels = 16
        self.stem = ConvBNActivation(3, channels, 3, stride=2, activation="HS")
        blocks: list[nn.Module] = []
        low_channels = 0
        for index, (kernel, expanded, out, se, act, stride, dilation) in enumerate(
                BLOCK_SETTING):
            blocks.append(InvertedResidual(channels, kernel, expanded, out, se, act, stride,
                                           dilation))
            channels = out
            if index == LOW_BLOCK:
                low_channels = channels
        self.low_features = nn.Sequential(*blocks[:LOW_BLOCK + 1])
        self.high_features = nn.Sequential(
            *blocks[LOW_BLOCK + 1:],
            ConvBNActivation(channels, 6 * channels, activation="HS"),
        )
        self.head = LRASPPHead(low_channels, 6 * channels, num_classes, HEAD_CHANNELS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        low = self.low_features(self.stem(x))
        out = self.head(low, self.high_features(low))
        return F.interpolate(out, size=(x.shape[-2], x.shape[-1]), mode="bilinear",
                             align_corners=False)


def lraspp_mobilenet_v3(num_classes: int = 8, seed: int = 0) -> LRASPPMobileNetV3:
    """Build the LR-ASPP MobileNetV3 (input 1x3x120x120) in eval mode with
    deterministic weights.

    Args:
        num_classes: classes per pixel (channels of the output).
        seed: seed for the weights and batch-norm statistics.

    Returns:
        the model; its output is ``(1, num_classes, 120, 120)`` logits.
    """
    return build_seeded(lambda: LRASPPMobileNetV3(num_classes), seed, INPUT_SHAPE)
