"""ONNX frontend: ``import_onnx(path_or_model) -> Graph``."""

from __future__ import annotations

import os
from collections.abc import Mapping

import onnx

from patcc.errors import PatccError
from patcc.frontends.onnx.importer import Importer
from patcc.frontends.onnx.loader import (
    MAX_OPSET,
    MIN_OPSET,
    default_opset,
    load_model,
    parse_shape_spec,
    resolve_input_shapes,
)
from patcc.frontends.onnx.ops import CONVERTERS
from patcc.ir.graph import Graph
from patcc.ir.layers import IRError
from patcc.passes import FRONTEND_PIPELINE, run_pipeline

SUPPORTED_OPERATORS = tuple(sorted({*CONVERTERS, "Constant"}))


def import_onnx(
    model: str | os.PathLike[str] | onnx.ModelProto,
    input_shapes: Mapping[str, tuple[int, ...]] | None = None,
) -> Graph:
    """Import an ONNX model (path or ModelProto) into a verified patcc graph.

    ``input_shapes`` fixes dimensions the model leaves symbolic (a symbolic batch
    dimension defaults to 1). Constants are folded, BatchNorm is folded into convs,
    activations are fused, and each conv's sparsity style is detected from its
    weights. Raises ``PatccError`` for anything patcc cannot import, naming the node.
    """
    proto = load_model(model)
    shapes = resolve_input_shapes(proto, input_shapes)
    graph = Importer(proto=proto, opset=default_opset(proto), input_shapes=shapes).run()
    try:
        return run_pipeline(graph, FRONTEND_PIPELINE, check=True)
    except IRError as e:
        raise PatccError(f"import produced an inconsistent graph: {e}", "model") from e


__all__ = [
    "MAX_OPSET", "MIN_OPSET", "SUPPORTED_OPERATORS", "import_onnx", "load_model",
    "parse_shape_spec",
]
