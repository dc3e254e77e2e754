"""VGG-16 (configuration "D", no batch norm), as torchvision's ``vgg16`` defines it."""

from __future__ import annotations

import torch
from torch import nn

from patcc.models.weights import init_like_torchvision, seeded

# The batch-1 NCHW input the model is built for.
INPUT_SHAPE: tuple[int, ...] = (1, 3, 224, 224)

# Output channels of each 3x3 convolution; "M" is a 2x2 stride-2 max-pool.
VGG16_LAYOUT: tuple[int | str, ...] = (
    64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M",
)


class VGG(nn.Module):
    """Convolutional features, a 7x7 adaptive average pool and a three-layer classifier."""

    def __init__(self, features: nn.Sequential, num_classes: int = 1000) -> None:
        super().__init__()
        self.features = features
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(512 * 7 * 7, 4096),
            nn.ReLU(True),
            nn.Dropout(),
            nn.Linear(4096, 4096),
            nn.ReLU(True),
            nn.Dropout(),
            nn.Linear(4096, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


def _make_features(layout: tuple[int | str, ...]) -> nn.Sequential:
    layers: list[nn.Module] = []
    in_channels = 3
    for item in layout:
        if item == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            assert isinstance(item, int)
            layers += [nn.Conv2d(in_channels, item, kernel_size=3, padding=1), nn.ReLU(True)]
            in_channels = item
    return nn.Sequential(*layers)


def vgg16(num_classes: int = 1000, seed: int = 0) -> VGG:
    """Build plain VGG-16 (input 1x3x224x224) in eval mode with deterministic weights.

    Args:
        num_classes: width of the last classifier layer.
        seed: seed for the weights.

    Returns:
        the model; 138,357,544 parameters with 1000 classes.
    """
    with seeded(seed):
        model = VGG(_make_features(VGG16_LAYOUT), num_classes)
        init_like_torchvision(model)
    return model.eval()
