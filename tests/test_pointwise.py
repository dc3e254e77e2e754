"""The point-wise operators beyond the classic activations (Elu, Selu, Softplus, Mish,
Gelu, Erf, Exp, Log, Sqrt, Neg, Abs, Reciprocal, Pow): standalone and fused into a
conv's epilogue, against onnxruntime, on the interpreter and every x86 build."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import patcc
from patcc.frontends.onnx import import_onnx
from patcc.ir import Conv
from patcc.runtime import run
from support.compare import assert_close, run_onnxruntime
from support.targets import X86_TAGS, compiled_outputs, runnable_target

OPSET = 20  # Gelu arrived in opset 20
SHAPE = (1, 3, 9, 11)

OPERATORS: dict[str, dict[str, object]] = {
    "Elu": {"alpha": 0.7}, "Selu": {}, "Softplus": {}, "Mish": {}, "Gelu": {},
    "Gelu_tanh": {"approximate": "tanh"}, "Erf": {}, "Exp": {}, "Neg": {}, "Abs": {},
    "Reciprocal": {}, "Pow2": {}, "Pow3.5": {}, "Log": {}, "Sqrt": {},
}
"""Test label -> attributes; the op is the label up to '_' or a digit."""

POSITIVE_ONLY = {"Log", "Sqrt", "Pow3.5", "Reciprocal"}  # fed |x| + 0.5


def _op(label: str) -> str:
    return label.split("_")[0].rstrip("0123456789.")


def pointwise_model() -> onnx.ModelProto:
    """For each operator: on the input (standalone) and on a conv's output (fused)."""
    nodes, outputs, inits = [], [], []
    w = np.random.default_rng(7).standard_normal((3, 3, 3, 3)).astype(np.float32) * 0.4
    inits.append(numpy_helper.from_array(w, "w"))
    nodes.append(helper.make_node("Abs", ["x"], ["ax"]))
    inits.append(numpy_helper.from_array(np.array(0.5, np.float32), "half"))
    nodes.append(helper.make_node("Add", ["ax", "half"], ["pos"]))
    nodes.append(helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]))
    nodes.append(helper.make_node("Conv", ["pos", "w"], ["cp"], pads=[1, 1, 1, 1]))
    nodes.append(helper.make_node("Abs", ["cp"], ["cpa"]))
    for label, attrs in OPERATORS.items():
        op = _op(label)
        sources = ("pos", "cpa") if label in POSITIVE_ONLY else ("x", "c")
        for where, source in zip(("alone", "fused"), sources, strict=True):
            inputs = [source]
            if op == "Pow":
                name = f"exp_{label}_{where}"
                inits.append(numpy_helper.from_array(
                    np.array(float(label[3:]), np.float32), name))
                inputs.append(name)
            out = f"{label}_{where}"
            nodes.append(helper.make_node(op, inputs, [out], **attrs))
            outputs.append(helper.make_tensor_value_info(out, TensorProto.FLOAT, SHAPE))
    graph = helper.make_graph(nodes, "pointwise",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, SHAPE)],
                              outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                             ir_version=9)


def feeds() -> dict[str, np.ndarray]:
    x = np.random.default_rng(3).standard_normal(SHAPE).astype(np.float32) * 3
    x.flat[:4] = [0.0, -20.0, 20.0, 1e-3]  # the tails of exp, erf and softplus
    return {"x": x}


def test_interpreter_matches_onnxruntime() -> None:
    model = pointwise_model()
    ours = run(import_onnx(model), feeds())
    theirs = run_onnxruntime(model, feeds(), list(ours))
    for name, value in theirs.items():
        assert_close(ours[name], value, name)


@pytest.mark.parametrize("tag", X86_TAGS)
def test_compiled_matches_the_interpreter(tag: str) -> None:
    runnable_target(tag)
    compiled = patcc.compile(pointwise_model(), tag, tune=False)
    fused = [c.layer for c in compiled.plan.codes
             if isinstance(c.layer, Conv) and c.layer.activation is not None]
    assert fused, "an activation is fused into a conv's epilogue"
    got = compiled.load(num_threads=1).run(feeds())
    for name, value in run(compiled.graph, feeds()).items():
        assert_close(got[name], value, name)


REDUCTIONS = [("ReduceSum", (1,), 1), ("ReduceL2", (0, 2, 3), 1), ("ReduceMax", (-1,), 0),
              ("ReduceMin", (1, 2), 0), ("ReduceMean", (3,), 1), ("ReduceMean", (1, 3), 0),
              ("ReduceMax", (2, 3), 1)]
"""(operator, axes, keepdims): runs of consecutive axes, split runs, the last axis,
and the spatial pair (a GlobalPool)."""


def reductions_model() -> onnx.ModelProto:
    """Reductions over assorted axes (opset 18: axes are an input)."""
    nodes, outputs, inits = [], [], []
    for k, (op, axes, keep) in enumerate(REDUCTIONS):
        inits.append(numpy_helper.from_array(np.array(axes, np.int64), f"axes{k}"))
        nodes.append(helper.make_node(op, ["x", f"axes{k}"], [f"r{k}"], keepdims=keep))
        outputs.append(helper.make_tensor_value_info(f"r{k}", TensorProto.FLOAT, None))
    graph = helper.make_graph(nodes, "reductions",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, SHAPE)],
                              outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)
    return onnx.shape_inference.infer_shapes(model)


def test_reductions_match_onnxruntime_interpreted_and_compiled() -> None:
    model = reductions_model()
    ours = run(import_onnx(model), feeds())
    theirs = run_onnxruntime(model, feeds(), list(ours))
    for tag, got in {"interpreter": ours, **compiled_outputs(model, feeds())}.items():
        for name, value in theirs.items():
            assert_close(got[name], value, f"{name} ({tag})")


def rearrangements_model() -> onnx.ModelProto:
    """DepthToSpace (both modes), SpaceToDepth, Tile and Expand, chained; Pow with a
    per-channel exponent; Pad with negative pads (a crop, alone and with padding)."""
    nodes = [
        helper.make_node("Tile", ["x", "reps"], ["t"]),  # 1x3x9x11 -> 1x12x9x22
        helper.make_node("DepthToSpace", ["t"], ["d"], blocksize=2),  # 1x3x18x44
        helper.make_node("DepthToSpace", ["t"], ["dc"], blocksize=2, mode="CRD"),
        helper.make_node("SpaceToDepth", ["d"], ["s"], blocksize=2),  # 1x12x9x22
        helper.make_node("ReduceMean", ["x", "ax"], ["m"], keepdims=1),  # 1x3x9x1
        helper.make_node("Expand", ["m", "shape"], ["e"]),  # 2x3x9x5
        helper.make_node("Pow", ["x", "expo"], ["p"]),  # a tensor exponent
        helper.make_node("Pad", ["x", "crop"], ["c"]),  # 1x3x7x10
        helper.make_node("Pad", ["x", "crop_pad", "value"], ["cp"]),  # 1x3x9x11
    ]
    inits = [numpy_helper.from_array(np.array([1, 4, 1, 2], np.int64), "reps"),
             numpy_helper.from_array(np.array([3], np.int64), "ax"),
             numpy_helper.from_array(np.array([2, 3, 9, 5], np.int64), "shape"),
             numpy_helper.from_array(np.array([2.0, 3.0, -1.0], np.float32).reshape(1, 3, 1, 1),
                                     "expo"),
             numpy_helper.from_array(np.array([0, 0, -1, 0, 0, 0, -1, -1], np.int64), "crop"),
             numpy_helper.from_array(np.array([0, 0, -2, 1, 0, 0, 2, -1], np.int64),
                                     "crop_pad"),
             numpy_helper.from_array(np.array(0.5, np.float32), "value")]
    outputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None)
               for n in ("d", "dc", "s", "e", "p", "c", "cp")]
    graph = helper.make_graph(nodes, "rearrange",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, SHAPE)],
                              outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)
    return onnx.shape_inference.infer_shapes(model)


def test_rearrangements_match_onnxruntime_interpreted_and_compiled() -> None:
    model = rearrangements_model()
    ours = run(import_onnx(model), feeds())
    theirs = run_onnxruntime(model, feeds(), list(ours))
    for tag, got in {"interpreter": ours, **compiled_outputs(model, feeds())}.items():
        for name, value in theirs.items():
            assert_close(got[name], value, f"{name} ({tag})")


def test_instance_normalization_in_every_x86_build() -> None:
    """A composition of GlobalPool, Binary, Unary and ScaleShift layers."""
    scale = np.array([1.5, -0.5, 2.0], np.float32)
    bias = np.array([0.1, 0.2, -0.3], np.float32)
    graph = helper.make_graph(
        [helper.make_node("InstanceNormalization", ["x", "s", "b"], ["y"], epsilon=1e-3)],
        "instance_norm", [helper.make_tensor_value_info("x", TensorProto.FLOAT, SHAPE)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, SHAPE)],
        [numpy_helper.from_array(scale, "s"), numpy_helper.from_array(bias, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    want = run_onnxruntime(model, feeds(), ["y"])["y"]
    assert_close(run(import_onnx(model), feeds())["y"], want, "interpreter")
    for tag, got in compiled_outputs(model, feeds()).items():
        assert_close(got["y"], want, tag)
