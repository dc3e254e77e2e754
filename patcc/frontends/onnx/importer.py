"""Walks an ONNX graph node by node and builds the patcc IR.

Every tensor is either *constant* (an initializer, a Constant node, or the result
of a node whose inputs are all constant, folded with onnx's reference evaluator) or
*dynamic* with a static shape. Constant nodes never become layers; dynamic ones
are translated by the converters in ``ops``. Identity and Dropout become aliases.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn

import numpy as np
import onnx
from onnx import numpy_helper
from onnx.reference import ReferenceEvaluator

from patcc.errors import FrontendError
from patcc.ir.graph import Graph, TensorType
from patcc.ir.layers import IRError, Layer, Reshape, Shape, check_size
from patcc.ir.verify import verify
from patcc.text import unique_name

MAX_FOLDED_ELEMENTS = 2**26
"""The most elements a constant computed at import may have (256 MiB of float32). The
shape arithmetic and index ranges exported models fold are tiny; the operators whose
result can be far larger than their inputs (``_generated_elements``) are measured
before they run, so a hostile model cannot make the import hang or exhaust memory."""


def _generated_elements(node: Node, values: Sequence[np.ndarray | None]) -> int | None:
    """Elements ConstantOfShape, Range, Expand, Tile or Gather would produce from the
    constant inputs ``values`` (None where omitted); None for any other operator, whose
    result is no larger than its inputs, or for inputs the evaluator will reject."""
    def ints(value: np.ndarray | None) -> list[int]:
        return [int(d) for d in np.asarray(value).reshape(-1)]

    op = node.op_type
    try:
        if op == "ConstantOfShape":
            return math.prod(max(d, 0) for d in ints(values[0]))
        if op == "Range":
            start, limit, delta = (float(np.asarray(v).reshape(-1)[0]) for v in values[:3])
            return max(math.ceil((limit - start) / delta), 0)
        if op == "Expand" and values[0] is not None:
            return math.prod(np.broadcast_shapes(values[0].shape, tuple(ints(values[1]))))
        if op == "Tile" and values[0] is not None:
            return values[0].size * math.prod(max(r, 0) for r in ints(values[1]))
        if op == "Gather" and values[0] is not None and values[1] is not None:
            data, axis = values[0], int(node.attr("axis", 0))
            return data.size // data.shape[axis] * values[1].size
    except (ValueError, TypeError, IndexError, OverflowError, ZeroDivisionError):
        return None
    return None


SHAPE_OPERAND_ELEMENTS = 4096
"""Constant inputs up to this size are shown to shape inference as values (scales,
pads, target shapes); larger ones, weights, only by their shape."""


def _inferred_elements(model: onnx.ModelProto, feeds: Mapping[str, np.ndarray]) -> int:
    """The elements of the largest output of a one-node model as onnx's shape inference
    sees it before anything runs (0 when it cannot tell): any operator, Resize, Pad or
    an outer-product MatMul of constants included."""
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    for name, value in feeds.items():
        if value.size <= SHAPE_OPERAND_ELEMENTS:
            try:
                probe.graph.initializer.append(numpy_helper.from_array(value, name))
            except (TypeError, ValueError):
                continue
    try:
        inferred = onnx.shape_inference.infer_shapes(probe, strict_mode=False, data_prop=True)
    except Exception:  # inference is only a pre-check; the evaluator has the last word
        return 0
    largest = 0
    for info in inferred.graph.output:
        dims = info.type.tensor_type.shape.dim
        if info.type.tensor_type.HasField("shape") and all(d.HasField("dim_value") for d in dims):
            largest = max(largest, math.prod(max(d.dim_value, 0) for d in dims))
    return largest


@dataclass
class Node:
    """An ONNX node with aliases resolved and attributes decoded to Python values."""

    name: str
    op_type: str
    inputs: list[str]  # "" marks an omitted optional input
    outputs: list[str]
    attrs: dict[str, Any]
    proto: onnx.NodeProto

    @property
    def where(self) -> str:
        return f"node {self.name!r} ({self.op_type})"

    def attr(self, key: str, default: Any = None) -> Any:
        return self.attrs.get(key, default)


def unsupported(node: Node, detail: str = "") -> NoReturn:
    """Raise the one-line error for an operator (or form of one) patcc cannot compile."""
    what = detail or f"unsupported operator {node.op_type!r}"
    raise FrontendError(f"{what}; the supported operators are listed in README.md (Operators)",
                     node.where)


Converter = Callable[["Importer", Node], None]
"""Appends the layers of one ONNX node through the ``Importer`` (``ops.CONVERTERS``)."""


def _decode(attr: onnx.AttributeProto) -> Any:
    value = onnx.helper.get_attribute_value(attr)
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, onnx.TensorProto):
        return numpy_helper.to_array(value)
    if isinstance(value, list):
        return [v.decode() if isinstance(v, bytes) else v for v in value]
    return value


@dataclass
class Importer:
    """State of one import: constants, shapes of dynamic tensors, the layers built."""

    proto: onnx.ModelProto
    opset: int
    input_shapes: Mapping[str, Shape]
    converters: Mapping[str, Converter]
    consts: dict[str, np.ndarray] = field(default_factory=dict)
    shapes: dict[str, Shape] = field(default_factory=dict)
    layers: list[Layer] = field(default_factory=list)
    alias: dict[str, str] = field(default_factory=dict)
    graph_constants: dict[str, np.ndarray] = field(default_factory=dict)
    _names: set[str] = field(default_factory=set)

    def run(self) -> Graph:
        g = self.proto.graph
        for init in g.initializer:
            try:
                self.consts[init.name] = numpy_helper.to_array(init)
            except (ValueError, TypeError, KeyError, OSError) as e:
                raise FrontendError(f"cannot read its data ({type(e).__name__}: "
                                 f"{str(e).splitlines()[0] if str(e) else ''})"[:300],
                                 f"initializer {init.name!r}") from e
        self.shapes.update(self.input_shapes)
        for index, proto_node in enumerate(g.node):
            node = self._node(proto_node, index)
            if proto_node.domain not in ("", "ai.onnx"):
                unsupported(node, f"operator {node.op_type!r} of domain {proto_node.domain!r} "
                                  "is not supported")
            if node.op_type == "Constant" or (
                node.inputs and all(not i or i in self.consts for i in node.inputs)
            ):
                self._fold(node)
                continue
            converter = self.converters.get(node.op_type)
            if converter is None:
                unsupported(node)
            for i in node.inputs:
                if i and i not in self.consts and i not in self.shapes:
                    raise FrontendError(f"reads {i!r}, which no earlier node produces", node.where)
            try:
                converter(self, node)
            except IRError as e:
                raise FrontendError(str(e), node.where) from e
        return self._finish()

    # -- services for converters ----------------------------------------------------

    def shape(self, tensor: str) -> Shape:
        """Static shape of a dynamic or constant tensor."""
        if tensor in self.consts:
            return tuple(int(d) for d in self.consts[tensor].shape)
        return self.shapes[tensor]

    def const(self, node: Node, index: int, what: str) -> np.ndarray:
        """The value of input ``index``, which must be constant."""
        name = node.inputs[index] if index < len(node.inputs) else ""
        if not name:
            raise FrontendError(f"{what} (input {index}) is missing", node.where)
        if name not in self.consts:
            raise FrontendError(
                f"{what} {name!r} must be a constant (an initializer or foldable); "
                "patcc compiles static graphs", node.where)
        return self.consts[name]

    def optional_const(self, node: Node, index: int, what: str) -> np.ndarray | None:
        """Like :meth:`const`, or None when the optional input is omitted."""
        if index >= len(node.inputs) or not node.inputs[index]:
            return None
        return self.const(node, index, what)

    def weight(self, node: Node, index: int, what: str) -> np.ndarray:
        """A constant float input as float32, rejected if it holds NaN or infinity."""
        value = self.const(node, index, what)
        if not np.issubdtype(value.dtype, np.floating):
            raise FrontendError(f"{what} {node.inputs[index]!r} has dtype {value.dtype}",
                                node.where)
        value = value.astype(np.float32)
        if not np.isfinite(value).all():
            bad = "NaN" if np.isnan(value).any() else "infinity"
            raise FrontendError(
                f"{what} {node.inputs[index]!r} contains {bad}; fix or re-export the model",
                node.where)
        return value

    def operand(self, node: Node, index: int) -> str:
        """Name of input ``index`` as a layer operand; constants become graph constants."""
        name = node.inputs[index]
        if name in self.consts:
            if name not in self.graph_constants:
                value = self.weight(node, index, "operand")
                self.graph_constants[name] = value
        return name

    def layer_name(self, node: Node, suffix: str = "") -> str:
        """A unique layer name derived from the node's name."""
        return self._unique(node.name + suffix)

    def _unique(self, base: str) -> str:
        return unique_name(base, self._names)

    def temp(self, node: Node, suffix: str) -> str:
        """A fresh tensor name for a value internal to one node's translation."""
        name, k = f"{node.outputs[0]}__{suffix}", 1
        while name in self.shapes or name in self.consts:
            k += 1
            name = f"{node.outputs[0]}__{suffix}{k}"
        return name

    def add(self, layer: Layer) -> None:
        """Append a layer, inferring and recording its output shapes."""
        shapes = layer.infer_shapes([self.shape(t) for t in layer.inputs])
        for tensor, shape in zip(layer.outputs, shapes, strict=True):
            check_size(f"output {tensor!r}", shape)
        self.shapes.update(zip(layer.outputs, shapes, strict=True))
        self.layers.append(layer)

    # -- internals -----------------------------------------------------------------------

    def _node(self, proto_node: onnx.NodeProto, index: int) -> Node:
        name = proto_node.name or f"{proto_node.op_type}_{index}"
        attrs = {}
        for a in proto_node.attribute:
            try:
                attrs[a.name] = _decode(a)
            except (UnicodeDecodeError, ValueError, TypeError) as e:
                raise FrontendError(f"attribute {a.name!r} cannot be read ({type(e).__name__})",
                                 f"node {name!r} ({proto_node.op_type})") from e
        return Node(
            name=name,
            op_type=proto_node.op_type,
            inputs=[self.alias.get(i, i) for i in proto_node.input],
            outputs=list(proto_node.output),
            attrs=attrs,
            proto=proto_node,
        )

    def _fold(self, node: Node) -> None:
        """Evaluate a node whose inputs are all constant with onnx's reference evaluator."""
        proto_node = onnx.NodeProto()
        proto_node.CopyFrom(node.proto)
        del proto_node.input[:]
        proto_node.input.extend(node.inputs)
        feeds = {i: self.consts[i] for i in node.inputs if i}
        count = _generated_elements(node, [self.consts[i] if i else None
                                           for i in node.inputs])
        if count is not None and count > MAX_FOLDED_ELEMENTS:
            raise FrontendError(f"would compute a constant of {count} elements at import, more "
                             f"than patcc's limit of {MAX_FOLDED_ELEMENTS} (2^26)", node.where)
        # A one-node model pins the operator set: given a bare node, the evaluator
        # would use the newest version of the operator (Unsqueeze-13 for an opset-11
        # model, whose axes are an attribute, not an input).
        graph = onnx.helper.make_graph(
            [proto_node], "fold",
            [onnx.helper.make_tensor_value_info(
                i, onnx.helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
             for i, v in feeds.items()],
            [onnx.ValueInfoProto(name=o) for o in node.outputs if o],
        )
        model = onnx.helper.make_model(graph, opset_imports=list(self.proto.opset_import))
        count = _inferred_elements(model, feeds)
        if count > MAX_FOLDED_ELEMENTS:
            raise FrontendError(f"would compute a constant of {count} elements at import, more "
                             f"than patcc's limit of {MAX_FOLDED_ELEMENTS} (2^26)", node.where)
        try:
            results = ReferenceEvaluator(model).run(None, feeds)
        except Exception as e:  # the reference evaluator raises many exception types
            raise FrontendError(f"cannot fold constant node: {e}".splitlines()[0],
                                node.where) from e
        for out, value in zip(node.outputs, results, strict=False):
            if out:
                self.consts[out] = np.asarray(value)

    def _finish(self) -> Graph:
        g = self.proto.graph
        initializers = {t.name for t in g.initializer}
        inputs = {
            i.name: TensorType(self.input_shapes[i.name])
            for i in g.input if i.name not in initializers
        }
        if not g.output:
            raise FrontendError("the graph has no outputs", "model")
        outputs = []
        output_names = {out.name for out in g.output}
        produced = {t for layer in self.layers for t in layer.outputs}
        renames: dict[str, str] = {}
        copies: list[Layer] = []
        seen: set[str] = set()
        for out in g.output:
            if out.name in seen:
                raise FrontendError("is listed twice among the graph outputs (outputs are "
                                 "returned by name)", f"output {out.name!r}")
            seen.add(out.name)
            source = self.alias.get(out.name, out.name)
            if source in self.consts:
                raise FrontendError("is a constant: the model computes nothing from its inputs",
                                 f"output {out.name!r}")
            if source not in self.shapes:
                raise FrontendError("is never produced", f"output {out.name!r}")
            if out.name in inputs:
                # A graph output that is a graph input by name: the IR names tensors,
                # not slots, so the two cannot be told apart. (Through an Identity to
                # another name, the output is a copy, below.)
                raise FrontendError("is also a graph input: the model passes it through "
                                 "unchanged; compute outputs from the inputs, or name the "
                                 "output differently (an Identity node)",
                                 f"output {out.name!r}")
            if source != out.name:
                # An alias (Identity, Dropout) named the output: the producing layer takes
                # the output's name, unless its own tensor must survive (a graph input or
                # another output), or another output already took it; then copy.
                if source in produced and source not in output_names and source not in renames:
                    renames[source] = out.name
                else:
                    copies.append(Reshape(name=self._unique(f"copy_{out.name}"),
                                          inputs=(source,), outputs=(out.name,),
                                          shape=self.shapes[source]))
            outputs.append(out.name)
        layers = tuple(_rename(layer, renames) for layer in (*self.layers, *copies))
        graph = Graph(
            inputs=inputs,
            layers=layers,
            outputs=tuple(outputs),
            constants=dict(self.graph_constants),
            name=g.name or "model",
        )
        try:
            return verify(graph)
        except IRError as e:
            raise FrontendError(f"imported graph is inconsistent: {e}", "model") from e


def _rename(layer: Layer, renames: Mapping[str, str]) -> Layer:
    import dataclasses

    return dataclasses.replace(
        layer,
        inputs=tuple(renames.get(t, t) for t in layer.inputs),
        outputs=tuple(renames.get(t, t) for t in layer.outputs),
    )
