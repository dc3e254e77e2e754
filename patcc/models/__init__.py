"""Reference CNN architectures in plain torch (torchvision cannot be imported here).

``REFERENCE_ARCHITECTURES`` maps a name to a builder returning the model in eval mode
with deterministic weights; ``INPUT_SHAPES`` gives its NCHW batch-1 input and
``NUM_CLASSES`` the width of its output.
"""

from collections.abc import Callable

from torch import nn

from patcc.models import densenet, grouped_dilated, mobilenet, resnet, senet, shufflenet, vgg
from patcc.models.densenet import densenet_tiny
from patcc.models.export import export_onnx
from patcc.models.grouped_dilated import grouped_dilated_tiny
from patcc.models.mobilenet import mobilenet_v2
from patcc.models.pruned import BENCHMARK_VARIANTS, pruned_model
from patcc.models.resnet import resnet18, resnet50
from patcc.models.senet import senet_tiny
from patcc.models.shufflenet import channel_shuffle, shufflenet_tiny
from patcc.models.vgg import vgg16
from patcc.models.weights import init_like_torchvision, randomize_batchnorm, seeded

REFERENCE_ARCHITECTURES: dict[str, Callable[[], nn.Module]] = {
    "resnet18": resnet18,
    "resnet50": resnet50,
    "vgg16": vgg16,
    "mobilenet_v2": mobilenet_v2,
    "densenet_tiny": densenet_tiny,
    "shufflenet_tiny": shufflenet_tiny,
    "senet_tiny": senet_tiny,
    "grouped_dilated_tiny": grouped_dilated_tiny,
}

INPUT_SHAPES: dict[str, tuple[int, ...]] = {
    "resnet18": resnet.INPUT_SHAPE,
    "resnet50": resnet.INPUT_SHAPE,
    "vgg16": vgg.INPUT_SHAPE,
    "mobilenet_v2": mobilenet.INPUT_SHAPE,
    "densenet_tiny": densenet.INPUT_SHAPE,
    "shufflenet_tiny": shufflenet.INPUT_SHAPE,
    "senet_tiny": senet.INPUT_SHAPE,
    "grouped_dilated_tiny": grouped_dilated.INPUT_SHAPE,
}

NUM_CLASSES: dict[str, int] = {
    "resnet18": 1000,
    "resnet50": 1000,
    "vgg16": 1000,
    "mobilenet_v2": 1000,
    "densenet_tiny": 10,
    "shufflenet_tiny": 10,
    "senet_tiny": 10,
    "grouped_dilated_tiny": 10,
}

# The small models: fast enough to build, export and run in unit tests.
SMALL_ARCHITECTURES: tuple[str, ...] = (
    "densenet_tiny",
    "shufflenet_tiny",
    "senet_tiny",
    "grouped_dilated_tiny",
)

__all__ = [
    "BENCHMARK_VARIANTS",
    "INPUT_SHAPES",
    "NUM_CLASSES",
    "REFERENCE_ARCHITECTURES",
    "SMALL_ARCHITECTURES",
    "channel_shuffle",
    "densenet_tiny",
    "export_onnx",
    "grouped_dilated_tiny",
    "init_like_torchvision",
    "mobilenet_v2",
    "pruned_model",
    "randomize_batchnorm",
    "resnet18",
    "resnet50",
    "seeded",
    "senet_tiny",
    "shufflenet_tiny",
    "vgg16",
]
