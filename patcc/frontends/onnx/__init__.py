"""ONNX frontend: ``import_onnx(path_or_model) -> Graph``."""

from __future__ import annotations

import os
from collections.abc import Mapping

import onnx

from patcc.errors import FrontendError
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


def read_onnx(
    model: str | os.PathLike[str] | onnx.ModelProto,
    input_shapes: Mapping[str, tuple[int, ...]] | None = None,
) -> Graph:
    """Read an ONNX model (path or ModelProto) into the raw patcc graph: one layer or
    more per node, constants folded, no pass run yet (``import_onnx`` runs them).

    ``input_shapes`` fixes dimensions the model leaves symbolic (a symbolic batch
    dimension defaults to 1). Raises ``PatccError`` for anything patcc cannot import,
    naming the node.
    """
    proto = load_model(model)
    shapes = resolve_input_shapes(proto, input_shapes)
    return Importer(proto=proto, opset=default_opset(proto), input_shapes=shapes,
                    converters=CONVERTERS).run()


def import_onnx(
    model: str | os.PathLike[str] | onnx.ModelProto,
    input_shapes: Mapping[str, tuple[int, ...]] | None = None,
) -> Graph:
    """Import an ONNX model (path or ModelProto) into a verified patcc graph:
    ``read_onnx``, then ``FRONTEND_PIPELINE`` (BatchNorm folded into convs,
    activations fused, each conv's sparsity style detected from its weights).
    Raises ``PatccError`` for anything patcc cannot import, naming the node.
    """
    graph = read_onnx(model, input_shapes)
    try:
        return run_pipeline(graph, FRONTEND_PIPELINE, check=True)
    except IRError as e:
        raise FrontendError(f"import produced an inconsistent graph: {e}", "model") from e


__all__ = [
    "MAX_OPSET", "MIN_OPSET", "SUPPORTED_OPERATORS", "import_onnx", "load_model",
    "parse_shape_spec", "read_onnx",
]
