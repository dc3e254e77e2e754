"""Fusion passes: BatchNorm into conv, activations into their producer, SiLU.

Each pass merges a layer into the layer that produces its only input, when that
producer's output has no other reader and is not a graph output. The merged layer
keeps the producer's name and takes over the consumer's output tensor, so graph
outputs keep their names.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable

import numpy as np

from patcc.ir.graph import Graph
from patcc.ir.layers import Activation, Binary, Col2Im, Conv, Dense, Layer, ScaleShift, Unary


def fuse_into_producer(graph: Graph, fuse: Callable[[Layer, Layer], Layer | None]) -> Graph:
    """Merge single-input layers into their producer wherever ``fuse`` returns a layer.

    ``fuse(producer, consumer)`` returns the merged layer or None; its outputs are
    set to the consumer's. Returns ``graph`` itself when nothing merged.
    """
    readers = Counter(t for layer in graph.layers for t in dict.fromkeys(layer.inputs))
    outputs = set(graph.outputs)
    result: list[Layer] = []
    index: dict[str, int] = {}
    changed = False
    for layer in graph.layers:
        src = layer.inputs[0] if len(layer.inputs) == 1 else None
        if src in index and readers[src] == 1 and src not in outputs:
            i = index[src]
            merged = fuse(result[i], layer) if len(result[i].outputs) == 1 else None
            if merged is not None:
                result[i] = dataclasses.replace(merged, outputs=layer.outputs)
                index.update((t, i) for t in layer.outputs)
                changed = True
                continue
        index.update((t, len(result)) for t in layer.outputs)
        result.append(layer)
    return graph.replace(layers=tuple(result)) if changed else graph


def _fold_scale_shift(producer: Layer, consumer: Layer) -> Layer | None:
    if not isinstance(consumer, ScaleShift):
        return None
    scale = consumer.scale.astype(np.float64)
    shift = consumer.shift.astype(np.float64)
    if isinstance(producer, Conv) and producer.activation is None:
        weight = producer.weight * scale[:, None, None, None]
    elif (isinstance(producer, Dense) and producer.activation is None
          and producer.weight.shape[0] == scale.shape[0]):
        weight = producer.weight * scale[:, None]
    else:
        return None
    return dataclasses.replace(
        producer,
        weight=weight.astype(np.float32),
        bias=(producer.bias * scale + shift).astype(np.float32),
        activation=consumer.activation,
    )


def fold_batchnorm(graph: Graph) -> Graph:
    """Fold ScaleShift layers (inference BatchNorm) into the preceding Conv or Dense.

    Removed weights stay exactly zero: the fold scales each filter by one factor.
    """
    # Dense output rank must be 2 for its features to sit on ScaleShift's axis 1.
    def fold(producer: Layer, consumer: Layer) -> Layer | None:
        if isinstance(producer, Dense) and len(graph.shapes[producer.outputs[0]]) != 2:
            return None
        return _fold_scale_shift(producer, consumer)

    return fuse_into_producer(graph, fold)


def _fuse_activation(producer: Layer, consumer: Layer) -> Layer | None:
    if not isinstance(consumer, Unary):
        return None
    if (isinstance(producer, (Conv, Dense, ScaleShift, Binary, Col2Im))
            and producer.activation is None):
        return dataclasses.replace(producer, activation=consumer.activation)
    return None


def fuse_activations(graph: Graph) -> Graph:
    """Fuse a standalone activation into the Conv/Dense/ScaleShift/Binary/Col2Im
    before it."""
    return fuse_into_producer(graph, _fuse_activation)


def fuse_silu(graph: Graph) -> Graph:
    """Rewrite ``x * sigmoid(x)`` (how exporters spell SiLU/Swish) into one activation."""
    readers = Counter(t for layer in graph.layers for t in layer.inputs)
    producers = graph.producers
    outputs = set(graph.outputs)
    drop: set[str] = set()
    replaced: dict[str, Layer] = {}
    for layer in graph.layers:
        if not (isinstance(layer, Binary) and layer.binop == "mul" and layer.activation is None):
            continue
        for x, s in (layer.inputs, layer.inputs[::-1]):
            gate = producers.get(s)
            if (isinstance(gate, Unary) and gate.activation.kind == "sigmoid"
                    and gate.inputs[0] == x and readers[s] == 1 and s not in outputs):
                drop.add(gate.name)
                replaced[layer.name] = Unary(name=layer.name, inputs=(x,),
                                             outputs=layer.outputs,
                                             activation=Activation("silu"))
                break
    if not replaced:
        return graph
    layers = tuple(replaced.get(layer.name, layer) for layer in graph.layers
                   if layer.name not in drop)
    return graph.replace(layers=layers)


def fuse_residual_add(graph: Graph) -> Graph:
    """Fold ``act(conv(x) + r)`` into the conv's epilogue (a second, residual input).

    The conv must have no activation of its own and its output no other reader; ``r``
    must have the conv's output shape and be computed before the conv runs (it is,
    in topological order, when it is not produced later than the conv).
    """
    readers = Counter(t for layer in graph.layers for t in layer.inputs)
    producers = graph.producers
    order = {layer.name: i for i, layer in enumerate(graph.layers)}
    outputs = set(graph.outputs)
    shapes = graph.shapes
    merged: dict[str, Layer] = {}
    drop: set[str] = set()
    for layer in graph.layers:
        if not (isinstance(layer, Binary) and layer.binop == "add"):
            continue
        for t, r in (layer.inputs, layer.inputs[::-1]):
            conv = producers.get(t)
            residual_producer = producers.get(r)
            if (isinstance(conv, Conv) and len(conv.inputs) == 1 and conv.activation is None
                    and conv.name not in merged and readers[t] == 1 and t not in outputs
                    and t != r and shapes[r] == shapes[t]
                    and (residual_producer is None
                         or order[residual_producer.name] < order[conv.name])):
                merged[conv.name] = dataclasses.replace(
                    conv, inputs=(*conv.inputs, r), outputs=layer.outputs,
                    activation=layer.activation)
                drop.add(layer.name)
                break
    if not merged:
        return graph
    return graph.replace(layers=tuple(merged.get(layer.name, layer) for layer in graph.layers
                                      if layer.name not in drop))
