"""A small U-Net for per-pixel classification (segmentation).

Four resolutions (16, 32, 64, 128 channels), each a double 3x3 conv-BN-ReLU block;
max-pool 2x2 down. The three ways up that segmentation networks use, one per level:
a 2x2 stride-2 ``ConvTranspose2d`` (the original U-Net), bilinear up-sampling with
``align_corners=True`` then a 1x1 conv (milesial's Pytorch-UNet ``bilinear=True``), and
nearest up-sampling then a 3x3 conv. Each is concatenated with the encoder's feature map
of the same size (the skip), and a 1x1 conv head gives per-pixel class logits.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from patcc.models.weights import build_seeded

# The batch-1 NCHW input the model is built for (divisible by 8: three poolings).
INPUT_SHAPE: tuple[int, ...] = (1, 3, 96, 96)

# Channels per resolution, full size first.
WIDTHS: tuple[int, int, int, int] = (16, 32, 64, 128)


class DoubleConv(nn.Sequential):
    """(3x3 conv without bias, batch norm, ReLU) twice, the U-Net block."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class UpTransposed(nn.Module):
    """2x2 stride-2 transposed convolution halving the channels, skip concat, block."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(in_channels, in_channels // 2, 2, stride=2)
        self.block = DoubleConv(in_channels // 2 + out_channels, out_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.block(torch.cat([skip, self.up(x)], dim=1))


class UpResized(nn.Module):
    """x2 ``F.interpolate`` (``mode``), a conv to half the channels, skip concat, block.

    Bilinear up-sampling is followed by a 1x1 conv and nearest by a 3x3 one: a
    nearest copy is blocky, and the 3x3 conv smooths it (and is pattern-prunable).
    """

    def __init__(self, in_channels: int, out_channels: int, mode: str) -> None:
        super().__init__()
        self.mode = mode
        kernel = 1 if mode == "bilinear" else 3
        self.reduce = nn.Sequential(
            nn.Conv2d(in_channels, in_channels // 2, kernel, padding=kernel // 2, bias=False),
            nn.BatchNorm2d(in_channels // 2),
            nn.ReLU(inplace=True),
        )
        self.block = DoubleConv(in_channels // 2 + out_channels, out_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        if self.mode == "bilinear":
            x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=True)
        else:
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        return self.block(torch.cat([skip, self.reduce(x)], dim=1))


class UNetSmall(nn.Module):
    """Encoder of three poolings, decoder of three up-samplings with skips, 1x1 head."""

    def __init__(self, num_classes: int = 4) -> None:
        super().__init__()
        w1, w2, w3, w4 = WIDTHS
        self.enc1 = DoubleConv(3, w1)
        self.enc2 = DoubleConv(w1, w2)
        self.enc3 = DoubleConv(w2, w3)
        self.bottleneck = DoubleConv(w3, w4)
        self.pool = nn.MaxPool2d(2)
        self.up3 = UpTransposed(w4, w3)
        self.up2 = UpResized(w3, w2, "bilinear")
        self.up1 = UpResized(w2, w1, "nearest")
        self.head = nn.Conv2d(w1, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s1 = self.enc1(x)
        s2 = self.enc2(self.pool(s1))
        s3 = self.enc3(self.pool(s2))
        x = self.bottleneck(self.pool(s3))
        x = self.up1(self.up2(self.up3(x, s3), s2), s1)
        return self.head(x)


def unet_small(num_classes: int = 4, seed: int = 0) -> UNetSmall:
    """Build the small U-Net (input 1x3x96x96) in eval mode with deterministic weights.

    Args:
        num_classes: classes per pixel (channels of the output).
        seed: seed for the weights and batch-norm statistics.

    Returns:
        the model; its output is ``(1, num_classes, 96, 96)`` logits.
    """
    return build_seeded(lambda: UNetSmall(num_classes), seed, INPUT_SHAPE)
