"""Detect each convolution's sparsity style from its weights.

A 3x3 conv with zeros is *pattern style* when the masks of its kept kernels come
from a small model-wide library (at most ``MAX_LIBRARY_SIZE`` distinct masks); the
library is built from the masks themselves, most frequent first. When the model uses
more distinct masks than that, the layers whose masks all fall among the most
frequent ones stay pattern style and the rest are recorded as unstructured. Other
convs are dense (no zero weight) or unstructured.
"""

from __future__ import annotations

import dataclasses
from collections import Counter

import numpy as np

from patcc.ir.graph import Graph
from patcc.ir.layers import Conv, Layer
from patcc.ir.patterns import (
    MAX_LIBRARY_SIZE,
    REMOVED,
    PatternLibrary,
    PatternStyle,
    Sparsity,
    codes_to_masks,
    masks_to_codes,
)

FULL_MASK = 0b111111111


RARE_FRACTION = 0.01
"""A mask used by at most this fraction of a layer's kept kernels (and at least one) is
rare: an incidental zero weight, not a pattern, when a common mask covers it."""


def _kernel_codes(conv: Conv) -> np.ndarray:
    """9-bit mask code of every kernel, (O, I/g); 0 for a removed kernel.

    A rare mask that is a strict subset of a common mask of the same layer takes that
    mask's code: a trained or randomly drawn weight can be exactly zero (fp32 normal
    draws hit 0.0 about once in 10^7), and such zeros must neither turn a dense layer
    into a pattern layer nor add a pattern to the library.
    """
    codes = masks_to_codes(conv.weight != 0)
    values, counts = np.unique(codes[codes != 0], return_counts=True)
    rare_limit = max(1, int(RARE_FRACTION * counts.sum()))
    common = [(int(c), int(n)) for c, n in zip(values, counts, strict=True) if n > rare_limit]
    for code, n in zip(values.tolist(), counts.tolist(), strict=True):
        if n > rare_limit:
            continue
        covers = [(-m, c) for c, m in common if c != code and c & code == code]
        if covers:
            codes[codes == code] = min(covers)[1]  # the most used covering mask
    return codes


def detect_patterns(graph: Graph, max_library: int = MAX_LIBRARY_SIZE) -> Graph:
    """Set ``sparsity`` and ``pattern`` of every Conv from its weights.

    Deterministic: the library is ordered by how many kernels use each mask
    (descending), ties broken by the mask's code.
    """
    codes = {c.name: _kernel_codes(c) for c in graph.convs() if c.kernel_shape == (3, 3)}
    # a 3x3 conv with some pruning (a removed kernel, or zeros in a kept one) and at
    # least one kernel left; an all-zero conv has no pattern to speak of
    candidates = [c for c in graph.convs()
                  if c.name in codes and bool((codes[c.name] != FULL_MASK).any())
                  and bool(codes[c.name].any())]
    freq: Counter[int] = Counter()
    for conv in candidates:
        kept = codes[conv.name][codes[conv.name] != 0]
        freq.update(int(k) for k in kept)
    ranked = sorted(freq, key=lambda code: (-freq[code], code))
    allowed = set(ranked[:max_library])
    pattern_layers = {
        c.name for c in candidates
        if set(np.unique(codes[c.name][codes[c.name] != 0]).tolist()) <= allowed
    }
    used: Counter[int] = Counter()
    for conv in candidates:
        if conv.name in pattern_layers:
            kept = codes[conv.name][codes[conv.name] != 0]
            used.update(int(k) for k in kept)
    library_codes = sorted(used, key=lambda code: (-used[code], code))
    library = PatternLibrary(codes_to_masks(np.array(library_codes, dtype=np.int64)).reshape(
        len(library_codes), 3, 3))
    lookup = {code: i for i, code in enumerate(library_codes)}

    def restyle(layer: Layer) -> Layer:
        if not isinstance(layer, Conv):
            return layer
        if layer.name in pattern_layers:
            layer_codes = codes[layer.name]
            ids = np.full(layer_codes.shape, REMOVED, dtype=np.int8)
            kept = layer_codes != 0
            ids[kept] = [lookup[int(c)] for c in layer_codes[kept]]
            style = PatternStyle(library=library, kernel_pattern=ids)
            return dataclasses.replace(layer, sparsity=Sparsity.PATTERN, pattern=style)
        sparsity = Sparsity.UNSTRUCTURED if (layer.weight == 0).any() else Sparsity.DENSE
        return dataclasses.replace(layer, sparsity=sparsity, pattern=None)

    return graph.replace(layers=tuple(restyle(layer) for layer in graph.layers))
