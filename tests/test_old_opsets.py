"""Opsets 7-10: the operators whose form changed by opset 11 (Pad-2, Clip-6 and
Slice-1 attributes, Upsample-7/9, Resize-10, BatchNormalization-7's spatial),
against onnxruntime on the interpreter and every x86 build."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import patcc
from patcc.errors import PatccError
from patcc.frontends.onnx import import_onnx
from patcc.runtime import run
from support.compare import assert_close, run_onnxruntime
from support.targets import X86_TAGS, runnable_target

SHAPE = (1, 3, 6, 8)


def _model(opset: int, nodes: list[onnx.NodeProto], outputs: list[str],
           inits: list[onnx.TensorProto] | None = None) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, f"opset{opset}", [helper.make_tensor_value_info("x", TensorProto.FLOAT, SHAPE)],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, [None] * 4) for o in outputs],
        inits or [])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                             ir_version=4 if opset < 9 else 5)


def _scales(name: str, values: list[float]) -> onnx.TensorProto:
    return numpy_helper.from_array(np.array(values, np.float32), name)


def _bn(opset: int) -> list[onnx.TensorProto]:
    rng = np.random.default_rng(4)
    return [numpy_helper.from_array(v.astype(np.float32), n) for n, v in (
        ("s", rng.uniform(0.5, 1.5, 3)), ("b", rng.standard_normal(3)),
        ("m", rng.standard_normal(3)), ("v", rng.uniform(0.5, 2, 3)))]


MODELS = {
    "opset7": lambda: _model(7, [
        helper.make_node("Pad", ["x"], ["pad"], pads=[0, 0, 1, 2, 0, 0, 2, 1], value=0.5),
        helper.make_node("Pad", ["x"], ["reflect"], pads=[0, 0, 1, 1, 0, 0, 1, 1],
                         mode="reflect"),
        helper.make_node("Clip", ["x"], ["clip"], min=-0.5, max=0.75),
        helper.make_node("Clip", ["x"], ["relu6"], min=0.0, max=6.0),
        helper.make_node("Slice", ["x"], ["slice"], starts=[1, -5], ends=[3, 100],
                         axes=[2, 3]),
        helper.make_node("Upsample", ["x"], ["up_nearest"], scales=[1.0, 1.0, 2.0, 3.0]),
        helper.make_node("Upsample", ["x"], ["up_linear"], scales=[1.0, 1.0, 2.0, 2.0],
                         mode="linear"),
        helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["bn"],
                         epsilon=1e-3, spatial=1),
    ], ["pad", "reflect", "clip", "relu6", "slice", "up_nearest", "up_linear", "bn"], _bn(7)),
    "opset9": lambda: _model(9, [
        helper.make_node("Upsample", ["x", "s2"], ["up"], mode="nearest"),
        helper.make_node("Upsample", ["x", "s15"], ["up_linear"], mode="linear"),
        helper.make_node("Softmax", ["x"], ["softmax"], axis=2),
    ], ["up", "up_linear", "softmax"],
        [_scales("s2", [1, 1, 2, 2]), _scales("s15", [1, 1, 1.5, 2.5])]),
    "opset10": lambda: _model(10, [
        helper.make_node("Resize", ["x", "s2"], ["up"], mode="nearest"),
        helper.make_node("Resize", ["x", "s05"], ["down"], mode="nearest"),
        helper.make_node("Resize", ["x", "s15"], ["linear"], mode="linear"),
        helper.make_node("Slice", ["x", "st", "en", "ax", "sp"], ["slice"]),
    ], ["up", "down", "linear", "slice"],
        [_scales("s2", [1, 1, 2, 2]), _scales("s05", [1, 1, 0.5, 0.75]),
         _scales("s15", [1, 1, 1.5, 2.5]),
         *(numpy_helper.from_array(np.array(v, np.int64), n) for n, v in (
             ("st", [5, 0]), ("en", [0, 8]), ("ax", [3, 2]), ("sp", [-2, 3])))]),
}


def _feeds() -> dict[str, np.ndarray]:
    return {"x": np.random.default_rng(2).standard_normal(SHAPE).astype(np.float32) * 2}


@pytest.mark.parametrize("name", MODELS)
def test_interpreter_matches_onnxruntime(name: str) -> None:
    model = MODELS[name]()
    ours = run(import_onnx(model), _feeds())
    theirs = run_onnxruntime(model, _feeds(), list(ours))
    for output, value in theirs.items():
        assert_close(ours[output], value, f"{name} {output}")


@pytest.mark.parametrize("tag", X86_TAGS)
def test_compiled_matches_onnxruntime(tag: str) -> None:
    runnable_target(tag)
    for name, build in MODELS.items():
        model = build()
        got = patcc.compile(model, tag, tune=False).load(num_threads=2).run(_feeds())
        theirs = run_onnxruntime(model, _feeds(), list(got))
        for output, value in theirs.items():
            assert_close(got[output], value, f"{name} {output} on {tag}")


@pytest.mark.parametrize(("node", "message"), [
    (helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"], spatial=0),
     "spatial=0"),
    (helper.make_node("Upsample", ["x"], ["y"], scales=[1.0, 2.0]), "one positive number"),
    (helper.make_node("Upsample", ["x"], ["y"], scales=[1.0, 1.0, 2.0, 2.0], mode="cubic"),
     "unknown mode"),
])
def test_bad_old_forms_are_one_clear_line(node: onnx.NodeProto, message: str) -> None:
    with pytest.raises(PatccError) as info:
        import_onnx(_model(7, [node], ["y"], _bn(7)))
    assert message in str(info.value) and "\n" not in str(info.value)
