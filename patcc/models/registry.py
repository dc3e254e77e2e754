"""The registry of reference architectures, by name.

``REFERENCE_ARCHITECTURES`` maps a name to a builder returning the model in eval mode
with deterministic weights; ``INPUT_SHAPES`` gives its NCHW batch-1 input,
``OUTPUT_NAMES`` and ``OUTPUT_SHAPES`` its outputs (several for the detector), and
``NUM_CLASSES`` the classes it predicts: the output width of a classifier, the channels
of a segmentation network's per-pixel logits, a detector's object classes.
"""

from collections.abc import Callable

from torch import nn

import patcc.models.densenet as densenet
import patcc.models.grouped_dilated as grouped_dilated
import patcc.models.lraspp as lraspp
import patcc.models.mobilenet as mobilenet
import patcc.models.resnet as resnet
import patcc.models.senet as senet
import patcc.models.shufflenet as shufflenet
import patcc.models.unet as unet
import patcc.models.vgg as vgg
import patcc.models.yolo as yolo
from patcc.models.densenet import densenet_tiny
from patcc.models.grouped_dilated import grouped_dilated_tiny
from patcc.models.lraspp import lraspp_mobilenet_v3
from patcc.models.mobilenet import mobilenet_v2
from patcc.models.resnet import resnet18, resnet50
from patcc.models.senet import senet_tiny
from patcc.models.shufflenet import shufflenet_tiny
from patcc.models.unet import unet_small
from patcc.models.vgg import vgg16
from patcc.models.yolo import yolo_tiny

REFERENCE_ARCHITECTURES: dict[str, Callable[[], nn.Module]] = {
    "resnet18": resnet18,
    "resnet50": resnet50,
    "vgg16": vgg16,
    "mobilenet_v2": mobilenet_v2,
    "densenet_tiny": densenet_tiny,
    "shufflenet_tiny": shufflenet_tiny,
    "senet_tiny": senet_tiny,
    "grouped_dilated_tiny": grouped_dilated_tiny,
    "unet_small": unet_small,
    "lraspp_mobilenet_v3": lraspp_mobilenet_v3,
    "yolo_tiny": yolo_tiny,
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
    "unet_small": unet.INPUT_SHAPE,
    "lraspp_mobilenet_v3": lraspp.INPUT_SHAPE,
    "yolo_tiny": yolo.INPUT_SHAPE,
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
    "unet_small": 4,
    "lraspp_mobilenet_v3": 8,
    "yolo_tiny": 8,
}

# The exported graph's output names: "output" but for the detector's three scales.
OUTPUT_NAMES: dict[str, tuple[str, ...]] = {
    name: yolo.OUTPUT_NAMES if name == "yolo_tiny" else ("output",)
    for name in REFERENCE_ARCHITECTURES
}

OUTPUT_SHAPES: dict[str, tuple[tuple[int, ...], ...]] = {
    "resnet18": ((1, 1000),),
    "resnet50": ((1, 1000),),
    "vgg16": ((1, 1000),),
    "mobilenet_v2": ((1, 1000),),
    "densenet_tiny": ((1, 10),),
    "shufflenet_tiny": ((1, 10),),
    "senet_tiny": ((1, 10),),
    "grouped_dilated_tiny": ((1, 10),),
    "unet_small": ((1, 4, 96, 96),),  # per-pixel logits
    "lraspp_mobilenet_v3": ((1, 8, 120, 120),),
    # 3 anchors x (box 4, objectness 1, classes 8) per cell, at strides 8, 16, 32.
    "yolo_tiny": ((1, 39, 20, 20), (1, 39, 10, 10), (1, 39, 5, 5)),
}

# The segmentation networks and the detector: outputs per pixel or per grid cell.
DENSE_PREDICTION_ARCHITECTURES: tuple[str, ...] = (
    "unet_small",
    "lraspp_mobilenet_v3",
    "yolo_tiny",
)

# The small models: fast enough to build, export and run in unit tests.
SMALL_ARCHITECTURES: tuple[str, ...] = (
    "densenet_tiny",
    "shufflenet_tiny",
    "senet_tiny",
    "grouped_dilated_tiny",
)
