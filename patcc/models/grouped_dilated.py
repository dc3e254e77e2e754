"""A small network of awkward convolution and pooling geometry on an odd-sized input.

Input 1x3x37x29 (odd, non-square). Covers grouped convolutions (groups 2 and 4), a
depthwise convolution, dilation 2, stride-2 convolutions, MaxPool2d with
``ceil_mode=True``, AvgPool2d with padding and ``count_include_pad=False``, a
convolution with bias and no batch norm, and a Flatten -> Linear -> Softmax head.
"""

from __future__ import annotations

import torch
from torch import nn

from patcc.models.weights import init_like_torchvision, randomize_batchnorm, seeded

# The batch-1 NCHW input the model is built for.
INPUT_SHAPE: tuple[int, ...] = (1, 3, 37, 29)


class GroupedDilatedTiny(nn.Module):
    """Spatial sizes for a 37x29 input: 19x15, 19x15, 9x7 (ceil-mode pool), 5x4, 3x2."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(16),
            nn.ReLU(inplace=True),
            nn.Conv2d(16, 32, 3, padding=1, groups=2, bias=False),
            nn.BatchNorm2d(32),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, stride=2, ceil_mode=True),
            nn.Conv2d(32, 32, 1, groups=4, bias=True),  # bias, no batch norm after it
            nn.Conv2d(32, 32, 3, padding=1, groups=32, bias=False),  # depthwise
            nn.BatchNorm2d(32),
            nn.ReLU6(inplace=True),
            nn.Conv2d(32, 48, 3, padding=2, dilation=2, bias=False),
            nn.BatchNorm2d(48),
            nn.ReLU(inplace=True),
            nn.Conv2d(48, 64, 3, stride=2, padding=1, groups=4, bias=False),
            nn.BatchNorm2d(64),
            nn.ReLU(inplace=True),
            nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False),
        )
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(64 * 3 * 2, num_classes), nn.Softmax(dim=1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def grouped_dilated_tiny(num_classes: int = 10, seed: int = 0) -> GroupedDilatedTiny:
    """Build the grouped/dilated network (input 1x3x37x29) in eval mode, deterministic.

    Args:
        num_classes: width of the classifier (its Flatten expects a 37x29 input).
        seed: seed for the weights and batch-norm statistics.

    Returns:
        the model; its output rows are probabilities (Softmax).
    """
    with seeded(seed):
        model = GroupedDilatedTiny(num_classes)
        init_like_torchvision(model)
        # A softmax over near-zero logits is flat; default-scale head weights keep it
        # informative (N(0, 0.01) would make every class ~1/num_classes).
        classifier = model.head[1]
        assert isinstance(classifier, nn.Linear)
        classifier.reset_parameters()
    randomize_batchnorm(model, seed, INPUT_SHAPE)
    return model.eval()
