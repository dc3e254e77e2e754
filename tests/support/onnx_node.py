"""ONNX's own operator conformance tests (the backend "node" tests), made into patcc
cases.

The ``onnx`` wheel generates them (``onnx.backend.test.case.node``): per test a model
of one node (or its function body, the ``_expanded`` variants), inputs and the
expected outputs. patcc compiles static models, so what a test feeds as a weight or
as an attribute-like input (a conv's W and B, Clip's bounds, Reshape's shape, ...) is
turned into an initializer; the data inputs stay graph inputs.

A test is *in scope* when every node is a CNN-relevant operator (``OPERATORS``);
in scope, it is *excluded* (with the reason) when patcc deliberately does not
compile it: tensors other than float32, training mode, empty tensors, 1-D and 3-D
convolutions and pools, optional and sequence values. Every other in-scope test
must compile and match, or be listed, with the error it gives today, in
``tests/onnx_node_not_yet.txt`` (the operators and forms still missing, issue 18); a
listed test that starts to import must leave the list.
"""

from __future__ import annotations

import functools
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

OPERATORS = frozenset({
    "Abs", "Add", "AveragePool", "BatchNormalization", "Cast", "Clip", "Col2Im", "Concat",
    "Constant", "Conv", "ConvTranspose", "DepthToSpace", "Div", "Dropout", "Elu", "Erf", "Exp",
    "Expand", "Flatten", "Gather", "Gelu", "Gemm", "GlobalAveragePool", "GlobalMaxPool",
    "GroupNormalization", "HardSigmoid", "HardSwish", "Identity", "InstanceNormalization",
    "LayerNormalization", "LRN", "LeakyRelu",
    "Log", "LogSoftmax", "MatMul", "Max", "MaxPool", "Mean", "Min", "Mish", "Mul", "Neg",
    "PRelu", "Pad", "Pow", "Reciprocal", "ReduceL2", "ReduceMax", "ReduceMean", "ReduceMin",
    "ReduceSum",
    "Relu", "Reshape", "Resize", "Selu", "Shape", "Sigmoid", "Slice", "Softmax", "Softplus",
    "SpaceToDepth", "Split", "Sqrt", "Squeeze", "Sub", "Sum", "Tanh", "Tile", "Transpose",
    "Unsqueeze", "Upsample",
})
"""The operators of classification, detection and segmentation CNNs (issue 18)."""

DATA_INPUTS = {op: 0 for op in ("Add", "Sub", "Mul", "Div", "Max", "Min", "Sum", "Mean",
                                "Concat")}
"""Per operator, how many leading inputs are data (0: all of them); the default is
one. The inputs after them are weights or attribute-like and become initializers."""


@dataclass
class NodeCase:
    """One conformance test as patcc compiles it."""

    name: str
    model: onnx.ModelProto  # weights as initializers
    inputs: dict[str, np.ndarray]
    outputs: dict[str, np.ndarray]
    rtol: float
    atol: float
    excluded: str = ""  # the reason patcc deliberately does not compile it


def _op_of(case_model: onnx.ModelProto) -> str:
    """The operator a test is about: its node, or the first of an expanded body."""
    return case_model.graph.node[0].op_type if case_model.graph.node else ""


SPATIAL_OPERATORS = frozenset({"AveragePool", "Conv", "ConvTranspose", "MaxPool"})


def _exclusion(model: onnx.ModelProto, inputs: list[np.ndarray],
               outputs: list[np.ndarray]) -> str:
    if not all(v.type.HasField("tensor_type") for v in (*model.graph.input,
                                                          *model.graph.output)):
        return "optional or sequence values (patcc compiles tensors)"
    data = inputs[:_data_inputs(model)]  # the rest become initializers of any type
    float_only = all(np.asarray(a).dtype == np.float32 for a in (*data, *outputs))
    if not float_only:
        return "tensors other than float32 (patcc compiles float32 models)"
    if not model.graph.input:
        return "no inputs: the model computes a constant"
    if any(0 in np.shape(a) for a in (*data, *outputs)):
        return "empty tensors (a dimension of 0; patcc requires every dimension >= 1)"
    for node in model.graph.node:
        if node.op_type in SPATIAL_OPERATORS and inputs and np.asarray(inputs[0]).ndim != 4:
            return "1-D or 3-D convolution or pooling (patcc compiles 2-D NCHW CNNs)"
        if node.op_type == "Col2Im" and len(inputs) > 1 and np.asarray(inputs[1]).size != 2:
            return "1-D or 3-D convolution or pooling (patcc compiles 2-D NCHW CNNs)"
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "BatchNormalization" and (attrs.get("training_mode")
                                                     or len(node.output) > 1):
            return "training mode (running statistics are outputs)"
        if node.op_type == "Dropout" and (len(node.input) > 2 or len(node.output) > 1):
            return "training mode (a ratio or mask is an input or an output)"
    return ""


def _data_inputs(model: onnx.ModelProto) -> int:
    """How many leading graph inputs stay inputs (``DATA_INPUTS``)."""
    count = len(model.graph.input)
    if not model.graph.node:
        return count
    keep = DATA_INPUTS.get(model.graph.node[0].op_type, 1)
    return count if keep == 0 else min(keep, count)


def _to_static(model: onnx.ModelProto, inputs: list[np.ndarray]) -> tuple[
        onnx.ModelProto, dict[str, np.ndarray]]:
    """The model with its weight-like inputs as initializers, and the remaining feeds."""
    graph = model.graph
    keep = _data_inputs(model)
    static = onnx.ModelProto()
    static.CopyFrom(model)
    del static.graph.input[:]
    feeds = {}
    for index, (value, array) in enumerate(zip(graph.input, inputs, strict=True)):
        if index < keep:
            static.graph.input.append(value)
            feeds[value.name] = np.asarray(array)
        else:
            static.graph.initializer.append(numpy_helper.from_array(np.asarray(array),
                                                                    value.name))
    return static, feeds


def _tested_operators(tests: list[object]) -> dict[str, str]:
    """Test name -> the operator it tests: a plain test's one node; an expanded test
    (``_expanded``, ``_expanded_ver18``) tests the operator of its plain twin."""
    single = {t.name: t.model.graph.node[0].op_type for t in tests  # type: ignore[attr-defined]
              if t.model is not None and len(t.model.graph.node) == 1}  # type: ignore[attr-defined]
    tested = {}
    for test in tests:
        plain = re.sub(r"_expanded(_ver\d+)?$", "", test.name)  # type: ignore[attr-defined]
        if plain in single:
            tested[test.name] = single[plain]  # type: ignore[attr-defined]
    return tested


def _in_scope(model: onnx.ModelProto, operator: str | None) -> bool:
    """The test is of a CNN operator, and its graph uses only such operators."""
    return operator in OPERATORS and all(
        n.op_type in OPERATORS and n.domain in ("", "ai.onnx") for n in model.graph.node)


@functools.cache
def node_cases() -> tuple[NodeCase, ...]:
    """Every in-scope conformance test of the installed onnx, first data set each."""
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the generators divide by zero on purpose
        with np.errstate(all="ignore"):
            collected = collect_testcases(None)
    tested = _tested_operators(collected)
    cases = []
    for test in collected:
        if (test.model is None or not test.data_sets
                or not _in_scope(test.model, tested.get(test.name))):
            continue
        inputs, outputs = (list(part) for part in test.data_sets[0])
        excluded = _exclusion(test.model, inputs, outputs)
        model, feeds = _to_static(test.model, inputs) if not excluded else (test.model, {})
        expected = {o.name: np.asarray(v) for o, v in zip(test.model.graph.output, outputs,
                                                          strict=False)}
        cases.append(NodeCase(test.name, model, feeds, expected, test.rtol, test.atol,
                              excluded))
    return tuple(sorted(cases, key=lambda c: c.name))


def by_name() -> dict[str, NodeCase]:
    return {c.name: c for c in node_cases()}


def operators_of(case: NodeCase) -> Iterator[str]:
    yield from sorted({n.op_type for n in case.model.graph.node})
