"""Filter-kernel reorder (PatDNN): similar filters side by side, kernels by pattern.

Filters are ordered by how many kernels they keep (most first), then by their
pattern mix and first input channel, so a group of neighbouring filters -- one task
of the pattern kernel -- has nearly the same amount of work and the same loop trip
counts; inside a filter, kernels are visited pattern by pattern (the compressed
layout does that). Outputs still go to each filter's original channel: the order is
a permutation recorded on the layer, not a change of the layer's meaning.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from patcc.ir.graph import Graph
from patcc.ir.layers import Conv, Layer


def filter_order(conv: Conv) -> np.ndarray:
    """The reorder permutation of one conv (storage position -> output channel)."""
    o = conv.out_channels
    if conv.pattern is not None:
        ids = conv.pattern.kernel_pattern.astype(np.int64)
        m = len(conv.pattern.library)
        kept = ids >= 0
        histogram = np.stack([(ids == p).sum(axis=1) for p in range(m)], axis=1)
    else:
        kept = conv.kept_kernels
        histogram = np.zeros((o, 0), np.int64)
    first = np.where(kept.any(axis=1), kept.argmax(axis=1), kept.shape[1])
    # np.lexsort sorts by the last key first
    keys = [np.arange(o), first, *[-histogram[:, p] for p in reversed(range(histogram.shape[1]))],
            -kept.sum(axis=1)]
    return np.lexsort(keys).astype(np.int32)


def sparse_pointwise(conv: Conv) -> bool:
    """A 1x1, stride-1, unpadded, ungrouped conv with at least one zero weight (what
    the frontends detect as ``Sparsity.UNSTRUCTURED``; dilation is irrelevant for a
    1x1 kernel), which a backend may run as a sparse x dense product. The weights are
    checked themselves, so a graph built without sparsity detection is judged alike."""
    return (conv.kernel_shape == (1, 1) and conv.strides == (1, 1)
            and not any(conv.pads) and conv.groups == 1 and bool((conv.weight == 0).any()))


def reorder_filters(layer: Layer) -> Layer:
    """Set ``filter_order`` on a pattern-style, depthwise or sparse pointwise conv;
    others unchanged."""
    if not isinstance(layer, Conv) or not (layer.pattern is not None or layer.is_depthwise
                                           or sparse_pointwise(layer)):
        return layer
    return dataclasses.replace(layer, filter_order=filter_order(layer))


def reorder_graph(graph: Graph) -> Graph:
    """``reorder_filters`` over every layer."""
    return graph.replace(layers=tuple(reorder_filters(layer) for layer in graph.layers))
