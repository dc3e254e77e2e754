"""Compressed weight storage: the pattern-aware layout of ``patcc.ir.storage``."""

from __future__ import annotations

import dataclasses

import numpy as np

from patcc.ir.graph import Graph
from patcc.ir.layers import Conv, Layer
from patcc.ir.storage import CompressedWeights


def compress_conv(conv: Conv) -> CompressedWeights:
    """The compressed weights of a pattern-style or depthwise conv, its filters in
    ``conv.storage_order``.

    A dense depthwise conv has one tap set, the whole window.
    """
    o, cg, kh, kw = conv.weight.shape
    og = o // conv.groups
    if conv.pattern is not None:
        masks = conv.pattern.library.masks
        ids = conv.pattern.kernel_pattern.astype(np.int64)
    else:
        masks = np.ones((1, kh, kw), dtype=bool)
        ids = np.zeros((o, cg), dtype=np.int64)
    tap_sets = tuple(tuple((int(y), int(x)) for y, x in zip(*np.nonzero(m), strict=True))
                     for m in masks)
    order = conv.storage_order
    counts = np.zeros((o, len(tap_sets)), np.uint16)
    channels: list[np.ndarray] = []
    weights: list[np.ndarray] = []
    kernel_start = np.zeros(o, np.int32)
    weight_start = np.zeros(o, np.int32)
    n_kernels = n_weights = 0
    for pos, f in enumerate(order.tolist()):
        kernel_start[pos], weight_start[pos] = n_kernels, n_weights
        for p, taps in enumerate(tap_sets):
            local = np.flatnonzero(ids[f] == p)  # removed kernels (-1) are never listed
            counts[pos, p] = len(local)
            if not len(local):
                continue
            ys, xs = zip(*taps, strict=True)
            channels.append(((f // og) * cg + local).astype(np.uint16))
            weights.append(conv.weight[f][local][:, ys, xs].reshape(-1))
            n_kernels += len(local)
            n_weights += len(local) * len(taps)
    return CompressedWeights(
        tap_sets=tap_sets, counts=counts,
        channels=np.concatenate(channels) if channels else np.zeros(0, np.uint16),
        weights=(np.concatenate(weights).astype(np.float32) if weights
                 else np.zeros(0, np.float32)),
        kernel_start=kernel_start, weight_start=weight_start,
    )


def compress_weights(layer: Layer) -> Layer:
    """Attach compressed weights to a pattern-style or depthwise conv; others unchanged."""
    if not isinstance(layer, Conv) or not (layer.pattern is not None or layer.is_depthwise):
        return layer
    return dataclasses.replace(layer, compressed=compress_conv(layer))


def compress_graph(graph: Graph) -> Graph:
    """``compress_weights`` over every layer."""
    return graph.replace(layers=tuple(compress_weights(layer) for layer in graph.layers))
