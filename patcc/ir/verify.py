"""``verify(graph)``: the invariants every frontend and pass must preserve."""

from __future__ import annotations

import numpy as np

from patcc.ir.graph import Graph
from patcc.ir.layers import Col2Im, Conv, Dense, IRError, ScaleShift
from patcc.ir.patterns import MAX_LIBRARY_SIZE, REMOVED, Sparsity


def verify(graph: Graph) -> Graph:
    """Check the graph's invariants; return it unchanged, or raise ``IRError``.

    Checked: unique layer names; unique graph outputs, none of them a graph input;
    every tensor defined once before use; shapes
    consistent (``Graph.shapes``); graph outputs defined; weights float32 and finite;
    pattern style consistent with the weights (ids in range, removed kernels all zero,
    no weight outside its kernel's mask) and one library shared by all layers. A kept
    kernel may have zeros inside its mask: a weight can be exactly zero by accident.
    """
    names = [layer.name for layer in graph.layers]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise IRError(f"layer name {dup!r} used twice")
    clash = set(graph.inputs) & set(graph.constants)
    if clash:
        raise IRError(f"tensor {sorted(clash)[0]!r} is both an input and a constant")
    if len(set(graph.outputs)) != len(graph.outputs):
        dup = next(n for n in graph.outputs if graph.outputs.count(n) > 1)
        raise IRError(f"graph output {dup!r} listed twice")
    passed = set(graph.outputs) & set(graph.inputs)
    if passed:
        raise IRError(f"graph output {sorted(passed)[0]!r} is a graph input (outputs own "
                      "their buffers: copy it)")
    shapes = graph.shapes
    for out in graph.outputs:
        if out not in shapes:
            raise IRError(f"graph output {out!r} is never produced")
    library = None
    for layer in graph.layers:
        if isinstance(layer, (Conv, Dense)):
            _check_array(layer.name, "weight", layer.weight)
            _check_array(layer.name, "bias", layer.bias)
        if isinstance(layer, Col2Im) and layer.bias is not None:
            _check_array(layer.name, "bias", layer.bias)
        if isinstance(layer, ScaleShift):
            _check_array(layer.name, "scale", layer.scale)
            _check_array(layer.name, "shift", layer.shift)
        if isinstance(layer, Conv):
            _check_pattern_style(layer)
            _check_storage(layer)
            if layer.pattern is not None:
                if library is None:
                    library = layer.pattern.library
                elif layer.pattern.library != library:
                    raise IRError(f"Conv {layer.name!r} uses a different pattern library")
    return graph


def _check_array(layer: str, what: str, a: np.ndarray) -> None:
    if a.dtype != np.float32:
        raise IRError(f"layer {layer!r}: {what} is {a.dtype}, expected float32")
    if not np.isfinite(a).all():
        raise IRError(f"layer {layer!r}: {what} contains NaN or infinity")


def _check_pattern_style(conv: Conv) -> None:
    style = conv.pattern
    if (style is not None) != (conv.sparsity is Sparsity.PATTERN):
        raise IRError(f"Conv {conv.name!r}: sparsity {conv.sparsity.value} with pattern {style}")
    if style is None:
        return
    masks = style.library.masks
    if masks.dtype != bool or masks.ndim != 3 or masks.shape[1:] != (3, 3):
        raise IRError(f"Conv {conv.name!r}: library masks must be bool (m, 3, 3)")
    if not 0 < len(style.library) <= MAX_LIBRARY_SIZE:
        raise IRError(f"Conv {conv.name!r}: library of {len(style.library)} patterns")
    if conv.kernel_shape != (3, 3):
        raise IRError(f"Conv {conv.name!r}: pattern style needs 3x3 kernels")
    ids = style.kernel_pattern
    if ids.dtype != np.int8 or ids.shape != conv.weight.shape[:2]:
        raise IRError(f"Conv {conv.name!r}: kernel_pattern must be int8 {conv.weight.shape[:2]}")
    if ids.min(initial=0) < REMOVED or ids.max(initial=0) >= len(style.library):
        raise IRError(f"Conv {conv.name!r}: pattern id out of range")
    outside = (conv.weight != 0) & ~style.dense_mask()
    if outside.any():
        o, i, y, x = (int(v) for v in np.argwhere(outside)[0])
        raise IRError(
            f"Conv {conv.name!r}: weight [{o},{i},{y},{x}] is non-zero outside the "
            f"mask of pattern {int(ids[o, i])}"
        )


def _check_storage(conv: Conv) -> None:
    order = conv.filter_order
    if order is not None and (order.shape != (conv.out_channels,)
                              or not np.array_equal(np.sort(order), np.arange(len(order)))):
        raise IRError(f"Conv {conv.name!r}: filter_order is not a permutation of the filters")
    packed = conv.compressed
    if packed is None:
        return
    dense = packed.decompress(conv.weight.shape, conv.groups, conv.storage_order)
    if not np.array_equal(dense, conv.weight):
        raise IRError(f"Conv {conv.name!r}: compressed weights do not decompress to the "
                      "weights in the conv's filter order")
