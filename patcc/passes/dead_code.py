"""Removal of layers and constants that no graph output depends on."""

from __future__ import annotations

from patcc.ir.graph import Graph


def eliminate_dead_layers(graph: Graph) -> Graph:
    """Drop layers none of whose outputs reach a graph output, and unread constants.

    Returns ``graph`` itself when everything is live.
    """
    live = set(graph.outputs)
    kept = []
    for layer in reversed(graph.layers):
        if live.intersection(layer.outputs):
            live.update(layer.inputs)
            kept.append(layer)
    constants = {k: v for k, v in graph.constants.items() if k in live}
    if len(kept) == len(graph.layers) and len(constants) == len(graph.constants):
        return graph
    return graph.replace(layers=tuple(reversed(kept)), constants=constants)
