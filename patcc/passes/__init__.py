"""Passes: plain functions from Graph to Graph, chained in explicit pipelines.

``FRONTEND_PIPELINE`` normalises what a frontend imported: dead layers removed,
BatchNorm folded, activations fused, sparsity style detected. ``run_pipeline`` runs
a pipeline, optionally verifying after every step; ``PATCC_PRINT_AFTER=name[,name]``
prints the graph after the named passes (``all`` for every pass).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence

from patcc.ir.graph import Graph
from patcc.ir.verify import verify
from patcc.passes.compress import compress_graph, compress_weights
from patcc.passes.dead_code import eliminate_dead_layers
from patcc.passes.detect_patterns import detect_patterns
from patcc.passes.fusion import fold_batchnorm, fuse_activations, fuse_residual_add, fuse_silu
from patcc.passes.reorder import reorder_filters, reorder_graph

Pass = Callable[[Graph], Graph]

FRONTEND_PIPELINE: tuple[tuple[str, Pass], ...] = (
    ("eliminate_dead_layers", eliminate_dead_layers),
    ("fold_batchnorm", fold_batchnorm),
    ("fuse_silu", fuse_silu),
    ("fuse_activations", fuse_activations),
    ("detect_patterns", detect_patterns),
)


BACKEND_PIPELINE: tuple[tuple[str, Pass], ...] = (
    ("fuse_residual_add", fuse_residual_add),
    ("reorder_filters", reorder_graph),
    ("compress_weights", compress_graph),
)
"""Rewrites for generated code: residual adds into conv epilogues, then the pattern
passes (filter-kernel reorder, compressed weight storage) for the pattern kernel, and
the filter order of the sparse pointwise kernel."""


def run_pipeline(graph: Graph, pipeline: Sequence[tuple[str, Pass]],
                 check: bool = False) -> Graph:
    """Apply each pass in order; with ``check`` (or ``PATCC_VERIFY=1`` in the
    environment, as in the test suite), ``verify`` the graph after each one."""
    check = check or os.environ.get("PATCC_VERIFY") == "1"
    print_after = {p for p in os.environ.get("PATCC_PRINT_AFTER", "").split(",") if p}
    for name, fn in pipeline:
        graph = fn(graph)
        if check:
            verify(graph)
        if name in print_after or "all" in print_after:
            print(f"# after {name}\n{graph}", file=sys.stderr)
    return graph


__all__ = [
    "BACKEND_PIPELINE", "FRONTEND_PIPELINE", "Pass", "compress_graph", "compress_weights",
    "detect_patterns", "eliminate_dead_layers", "fold_batchnorm", "fuse_activations",
    "reorder_filters", "reorder_graph", "fuse_residual_add", "fuse_silu", "run_pipeline",
]
