"""The layer-wise IR: frozen layers, a graph with static shapes, pattern style, verify."""

from patcc.ir.graph import Graph, TensorType
from patcc.ir.layers import (
    ACTIVATION_KINDS,
    BINARY_OPS,
    LAYER_TYPES,
    PAD_MODES,
    Activation,
    Binary,
    Col2Im,
    Concat,
    Conv,
    Dense,
    Gather,
    GlobalPool,
    IRError,
    Layer,
    Pad,
    Pool,
    Reduce,
    Reshape,
    Resize,
    ScaleShift,
    Shape,
    Slice,
    Softmax,
    Split,
    Transpose,
    Unary,
    broadcast,
)
from patcc.ir.patterns import (
    MAX_LIBRARY_SIZE,
    REMOVED,
    PatternLibrary,
    PatternStyle,
    Sparsity,
)
from patcc.ir.verify import verify

__all__ = [
    "ACTIVATION_KINDS", "BINARY_OPS", "LAYER_TYPES", "MAX_LIBRARY_SIZE", "PAD_MODES",
    "REMOVED", "Activation", "Binary", "Col2Im", "Concat", "Conv", "Dense", "Gather",
    "GlobalPool", "Graph",
    "IRError", "Layer", "Pad", "PatternLibrary", "PatternStyle", "Pool", "Reduce", "Reshape",
    "Resize", "ScaleShift", "Shape", "Slice", "Softmax", "Sparsity", "Split", "TensorType",
    "Transpose", "Unary", "broadcast", "verify",
]
