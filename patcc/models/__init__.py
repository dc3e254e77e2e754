"""Reference CNN architectures in plain torch (torchvision cannot be imported here).

``registry.py`` names them (``REFERENCE_ARCHITECTURES``, their input and output
shapes, their classes); one module per family builds them; ``pruned.py`` prunes them
into the benchmark and demo variants; ``export.py`` writes them as ONNX.
"""

from patcc.models.densenet import densenet_tiny
from patcc.models.export import export_onnx
from patcc.models.grouped_dilated import grouped_dilated_tiny
from patcc.models.lraspp import lraspp_mobilenet_v3
from patcc.models.mobilenet import mobilenet_v2
from patcc.models.pruned import BENCHMARK_VARIANTS, pruned_model
from patcc.models.registry import (
    DENSE_PREDICTION_ARCHITECTURES,
    INPUT_SHAPES,
    NUM_CLASSES,
    OUTPUT_NAMES,
    OUTPUT_SHAPES,
    REFERENCE_ARCHITECTURES,
    SMALL_ARCHITECTURES,
)
from patcc.models.resnet import resnet18, resnet50
from patcc.models.senet import senet_tiny
from patcc.models.shufflenet import channel_shuffle, shufflenet_tiny
from patcc.models.unet import unet_small
from patcc.models.vgg import vgg16
from patcc.models.weights import init_like_torchvision, randomize_batchnorm, seeded
from patcc.models.yolo import yolo_tiny

__all__ = [
    "BENCHMARK_VARIANTS",
    "DENSE_PREDICTION_ARCHITECTURES",
    "INPUT_SHAPES",
    "NUM_CLASSES",
    "OUTPUT_NAMES",
    "OUTPUT_SHAPES",
    "REFERENCE_ARCHITECTURES",
    "SMALL_ARCHITECTURES",
    "channel_shuffle",
    "densenet_tiny",
    "export_onnx",
    "grouped_dilated_tiny",
    "init_like_torchvision",
    "lraspp_mobilenet_v3",
    "mobilenet_v2",
    "pruned_model",
    "randomize_batchnorm",
    "resnet18",
    "resnet50",
    "seeded",
    "senet_tiny",
    "shufflenet_tiny",
    "unet_small",
    "vgg16",
    "yolo_tiny",
]
