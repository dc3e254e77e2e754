"""A small ShuffleNetV2: channel split, depthwise 3x3 (stride 1 and 2), channel shuffle.

The split uses explicit sizes (``Tensor.split``), which exports to one ONNX ``Split``;
``chunk`` would export to a Shape/Gather/Slice computation. The shuffle is the
view/transpose/view idiom, exported as Reshape -> Transpose -> Reshape.
"""

from __future__ import annotations

import torch
from torch import nn

from patcc.models.weights import build_seeded

# The batch-1 NCHW input the model is built for.
INPUT_SHAPE: tuple[int, ...] = (1, 3, 33, 33)


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Interleave the channels of ``groups`` equal channel groups.

    Args:
        x: an NCHW tensor whose channel count is divisible by ``groups``.
        groups: number of channel groups.

    Returns:
        a tensor of the same shape; channel ``g * (C // groups) + i`` moves to
        ``i * groups + g``.
    """
    batch, channels, height, width = x.size()
    x = x.view(batch, groups, channels // groups, height, width)
    x = torch.transpose(x, 1, 2).contiguous()
    return x.view(batch, -1, height, width)


def _depthwise(channels: int, stride: int) -> nn.Conv2d:
    return nn.Conv2d(channels, channels, 3, stride, 1, groups=channels, bias=False)


def _pointwise(in_channels: int, out_channels: int) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 1, bias=False)


class ShuffleUnit(nn.Module):
    """ShuffleNetV2 unit (torchvision's ``InvertedResidual``).

    Stride 1: split the channels in half, transform one half, concatenate, shuffle.
    Stride 2: transform the whole input on two branches, concatenate, shuffle.
    """

    def __init__(self, inp: int, oup: int, stride: int) -> None:
        super().__init__()
        if stride == 1 and inp != oup:
            raise ValueError(f"stride-1 ShuffleUnit needs inp == oup, got {inp} -> {oup}")
        self.stride = stride
        self.branch_features = oup // 2
        bf = self.branch_features
        self.branch1 = nn.Sequential()
        if stride > 1:
            self.branch1 = nn.Sequential(
                _depthwise(inp, stride),
                nn.BatchNorm2d(inp),
                _pointwise(inp, bf),
                nn.BatchNorm2d(bf),
                nn.ReLU(inplace=True),
            )
        self.branch2 = nn.Sequential(
            _pointwise(inp if stride > 1 else bf, bf),
            nn.BatchNorm2d(bf),
            nn.ReLU(inplace=True),
            _depthwise(bf, stride),
            nn.BatchNorm2d(bf),
            _pointwise(bf, bf),
            nn.BatchNorm2d(bf),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            x1, x2 = x.split([self.branch_features, self.branch_features], dim=1)
            out = torch.cat((x1, self.branch2(x2)), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        return channel_shuffle(out, 2)


class ShuffleNetTiny(nn.Module):
    """Stem conv and max-pool, two stages of shuffle units, 1x1 conv, mean pool, fc."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(
            nn.Conv2d(3, 24, 3, 2, 1, bias=False), nn.BatchNorm2d(24), nn.ReLU(inplace=True)
        )
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.stage2 = nn.Sequential(ShuffleUnit(24, 48, 2), ShuffleUnit(48, 48, 1))
        self.stage3 = nn.Sequential(
            ShuffleUnit(48, 96, 2), ShuffleUnit(96, 96, 1), ShuffleUnit(96, 96, 1)
        )
        self.conv5 = nn.Sequential(
            _pointwise(96, 128), nn.BatchNorm2d(128), nn.ReLU(inplace=True)
        )
        self.fc = nn.Linear(128, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.conv1(x))
        x = self.conv5(self.stage3(self.stage2(x)))
        return self.fc(x.mean([2, 3]))  # global pool as torchvision writes it: ReduceMean


def shufflenet_tiny(num_classes: int = 10, seed: int = 0) -> ShuffleNetTiny:
    """Build the small ShuffleNetV2 (input 1x3x33x33) in eval mode, deterministic weights.

    Args:
        num_classes: width of the classifier.
        seed: seed for the weights and batch-norm statistics.

    Returns:
        the model.
    """
    return build_seeded(lambda: ShuffleNetTiny(num_classes), seed, INPUT_SHAPE)
