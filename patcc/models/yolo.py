"""A small YOLOv5/v8-style detector: the compiled part, up to the raw head outputs.

Backbone: Conv-BN-SiLU with stride 2 down-sampling and C2f blocks (YOLOv8: split the
channels in two, chain bottlenecks on one half, concat every intermediate), then SPPF
(three chained 5x5 stride-1 max-pools, concatenated with their input). Neck: an
FPN/PAN of nearest x2 up-sampling and stride-2 convs, concatenated with the
backbone's maps and merged by C3 blocks (YOLOv5: two 1x1 branches, bottlenecks on
one, concat). Head: a 1x1 conv per scale to ``ANCHORS_PER_CELL * (5 + num_classes)``
channels, YOLOv5's anchor-based layout.

The model returns the three raw head maps (strides 8, 16, 32). Decoding them (sigmoid,
grid offsets, ``ANCHORS``) and non-maximum suppression stay outside the compiled model,
as exported detectors deploy them; the README shows both in numpy.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from patcc.models.weights import build_seeded

# The batch-1 NCHW input the model is built for (divisible by the largest stride).
INPUT_SHAPE: tuple[int, ...] = (1, 3, 160, 160)

STRIDES: tuple[int, int, int] = (8, 16, 32)
ANCHORS_PER_CELL = 3
# YOLOv5's default anchors (width, height in input pixels), per stride.
ANCHORS: tuple[tuple[tuple[int, int], ...], ...] = (
    ((10, 13), (16, 30), (33, 23)),
    ((30, 61), (62, 45), (59, 119)),
    ((116, 90), (156, 198), (373, 326)),
)
OUTPUT_NAMES: tuple[str, str, str] = ("p3", "p4", "p5")


class ConvBNSiLU(nn.Sequential):
    """Conv without bias, batch norm, SiLU (YOLOv5/v8's ``Conv``)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1,
                 stride: int = 1) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2,
                      bias=False),
            nn.BatchNorm2d(out_channels),
            nn.SiLU(inplace=True),
        )


class Bottleneck(nn.Module):
    """Two 3x3 ConvBNSiLU, with a residual add when ``shortcut``."""

    def __init__(self, channels: int, shortcut: bool) -> None:
        super().__init__()
        self.cv1 = ConvBNSiLU(channels, channels, 3)
        self.cv2 = ConvBNSiLU(channels, channels, 3)
        self.shortcut = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.cv2(self.cv1(x))
        return x + out if self.shortcut else out


class C2f(nn.Module):
    """YOLOv8's CSP block: 1x1 conv, split in halves, ``n`` bottlenecks chained on the
    second half, concat of both halves and every bottleneck's output, 1x1 conv.

    The split uses explicit sizes: ``chunk`` exports to Shape/Gather/Slice.
    """

    def __init__(self, in_channels: int, out_channels: int, n: int, shortcut: bool) -> None:
        super().__init__()
        self.hidden = out_channels // 2
        self.cv1 = ConvBNSiLU(in_channels, 2 * self.hidden)
        self.blocks = nn.ModuleList(Bottleneck(self.hidden, shortcut) for _ in range(n))
        self.cv2 = ConvBNSiLU((2 + n) * self.hidden, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Unpacked, not list(): torch.fx (filter removal) traces a fixed-size unpacking.
        first, second = self.cv1(x).split((self.hidden, self.hidden), dim=1)
        parts = [first, second]
        for block in self.blocks:
            parts.append(block(parts[-1]))
        return self.cv2(torch.cat(parts, dim=1))


class C3(nn.Module):
    """YOLOv5's CSP block: two 1x1 branches, ``n`` bottlenecks on the first, concat,
    1x1 conv."""

    def __init__(self, in_channels: int, out_channels: int, n: int, shortcut: bool) -> None:
        super().__init__()
        hidden = out_channels // 2
        self.cv1 = ConvBNSiLU(in_channels, hidden)
        self.cv2 = ConvBNSiLU(in_channels, hidden)
        self.blocks = nn.Sequential(*(Bottleneck(hidden, shortcut) for _ in range(n)))
        self.cv3 = ConvBNSiLU(2 * hidden, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cv3(torch.cat([self.blocks(self.cv1(x)), self.cv2(x)], dim=1))


class SPPF(nn.Module):
    """Spatial pyramid pooling, fast: 1x1 conv, three chained 5x5 stride-1 max-pools
    (receptive fields 5, 9, 13), concat of all four, 1x1 conv."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        hidden = in_channels // 2
        self.cv1 = ConvBNSiLU(in_channels, hidden)
        self.pool = nn.MaxPool2d(5, stride=1, padding=2)
        self.cv2 = ConvBNSiLU(4 * hidden, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.cv1(x)
        y1 = self.pool(x)
        y2 = self.pool(y1)
        return self.cv2(torch.cat([x, y1, y2, self.pool(y2)], dim=1))


class YoloTiny(nn.Module):
    """Backbone to stride 32 with SPPF, PAN neck, three 1x1 detection convs."""

    def __init__(self, num_classes: int = 8) -> None:
        super().__init__()
        outputs = ANCHORS_PER_CELL * (5 + num_classes)
        self.stem = nn.Sequential(ConvBNSiLU(3, 16, 3, 2), ConvBNSiLU(16, 32, 3, 2),
                                  C2f(32, 32, 1, shortcut=True))
        self.stage3 = nn.Sequential(ConvBNSiLU(32, 64, 3, 2), C2f(64, 64, 2, shortcut=True))
        self.stage4 = nn.Sequential(ConvBNSiLU(64, 96, 3, 2), C2f(96, 96, 1, shortcut=True))
        self.stage5 = nn.Sequential(ConvBNSiLU(96, 128, 3, 2), C2f(128, 128, 1, shortcut=True),
                                    SPPF(128, 128))
        self.reduce5 = ConvBNSiLU(128, 96)
        self.top_down4 = C3(96 + 96, 96, 1, shortcut=False)
        self.reduce4 = ConvBNSiLU(96, 64)
        self.top_down3 = C3(64 + 64, 64, 1, shortcut=False)
        self.down3 = ConvBNSiLU(64, 64, 3, 2)
        self.bottom_up4 = C3(64 + 64, 96, 1, shortcut=False)
        self.down4 = ConvBNSiLU(96, 96, 3, 2)
        self.bottom_up5 = C3(96 + 96, 128, 1, shortcut=False)
        self.detect = nn.ModuleList(nn.Conv2d(c, outputs, 1) for c in (64, 96, 128))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        c3 = self.stage3(self.stem(x))
        c4 = self.stage4(c3)
        r5 = self.reduce5(self.stage5(c4))
        t4 = self.top_down4(torch.cat([F.interpolate(r5, scale_factor=2.0, mode="nearest"),
                                       c4], dim=1))
        r4 = self.reduce4(t4)
        p3 = self.top_down3(torch.cat([F.interpolate(r4, scale_factor=2.0, mode="nearest"),
                                       c3], dim=1))
        p4 = self.bottom_up4(torch.cat([self.down3(p3), r4], dim=1))
        p5 = self.bottom_up5(torch.cat([self.down4(p4), r5], dim=1))
        out3, out4, out5 = (conv(p) for conv, p in zip(self.detect, (p3, p4, p5), strict=True))
        return out3, out4, out5


def yolo_tiny(num_classes: int = 8, seed: int = 0) -> YoloTiny:
    """Build the small detector (input 1x3x160x160) in eval mode with deterministic
    weights.

    Args:
        num_classes: object classes.
        seed: seed for the weights and batch-norm statistics.

    Returns:
        the model; it returns three maps of ``3 * (5 + num_classes)`` channels at
        20x20, 10x10 and 5x5 (strides 8, 16, 32).
    """
    return build_seeded(lambda: YoloTiny(num_classes), seed, INPUT_SHAPE)

