"""Differential tests: random ONNX models imported by patcc vs onnxruntime.

Each example builds a small model (``tests/support/onnx_gen.py``), runs it in onnxruntime
with graph optimizations disabled (so onnxruntime is a reference, not an optimizer),
imports it with ``import_onnx``, verifies the IR, runs the reference interpreter and
compares: every output within 1e-4 of onnxruntime, relative to the output's largest
magnitude. ``PATCC_FUZZ_EXAMPLES`` sets the examples per test and per single-layer
operator (default 100; whole graphs get four times as many); the search is
derandomized so CI runs the same examples every time.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context
from onnx import TensorProto, helper, numpy_helper

from patcc.frontends.onnx import import_onnx
from patcc.ir import REMOVED, Conv, Graph, Sparsity, verify
from patcc.runtime import run
from support.compare import assert_close
from support.fuzz import fuzz_examples
from support.onnx_gen import (
    CENTRE_PLUS_3_MASKS,
    SINGLE_OPS,
    OnnxCase,
    pattern_conv_models,
    single_layer_models,
    small_graph_models,
)

EXAMPLES = fuzz_examples(100)

fuzz = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def run_onnxruntime(case: OnnxCase) -> list[np.ndarray]:
    """The model's outputs from onnxruntime's CPU provider, unoptimized."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.intra_op_num_threads = 1
    options.log_severity_level = 3  # no warnings on stderr for every example
    session = ort.InferenceSession(case.model.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    return session.run(list(case.output_names), case.feeds)


def import_and_run(case: OnnxCase) -> tuple[Graph, dict[str, np.ndarray]]:
    graph = verify(import_onnx(case.model, case.input_shapes))
    if currently_in_test_context():  # hand-written cases run outside hypothesis
        note(str(graph))
    return graph, run(graph, case.feeds)


def assert_matches_onnxruntime(case: OnnxCase) -> Graph:
    """patcc's outputs equal onnxruntime's to 1e-4 of the largest output magnitude."""
    expected = run_onnxruntime(case)
    for name, ref, shape in zip(case.output_names, expected, case.output_shapes, strict=True):
        # The generator's own shape bookkeeping is part of what the case claims.
        assert ref.shape == shape, f"generator declared {name} {shape}, onnxruntime {ref.shape}"
    graph, ours = import_and_run(case)
    assert tuple(graph.outputs) == case.output_names
    for name, ref in zip(case.output_names, expected, strict=True):
        assert_close(ours[name], ref, name)
    return graph


@pytest.mark.parametrize("op", sorted(set(SINGLE_OPS)))
def test_single_layer_matches_onnxruntime(op: str) -> None:
    # One hypothesis run per operator kind, so each gets EXAMPLES examples of its own.
    @fuzz
    @given(single_layer_models(ops=(op,)))
    def check(case: OnnxCase) -> None:
        assert_matches_onnxruntime(case)

    check()


@settings(fuzz, max_examples=4 * EXAMPLES)  # graphs find the most bugs and are still cheap
@given(small_graph_models())
def test_small_graph_matches_onnxruntime(case: OnnxCase) -> None:
    graph = assert_matches_onnxruntime(case)
    # Folding BatchNorm or fusing activations keeps zeros: every pattern-pruned conv
    # the generator wrote is still detected, and no dense one is.
    pattern_convs = [c for c in graph.convs() if c.sparsity is Sparsity.PATTERN]
    assert len(pattern_convs) == len(case.pattern_convs)


@fuzz
@given(pattern_conv_models())
def test_pattern_style_detected(case: OnnxCase) -> None:
    """A pattern-pruned 3x3 conv imports as PATTERN with the generator's masks:
    removed kernels exactly where the generator zeroed whole kernels, every kept
    kernel's non-zeros equal to its library mask, and the same function."""
    graph = assert_matches_onnxruntime(case)
    (truth,) = case.pattern_convs
    (layer,) = [layer for layer in graph.layers if isinstance(layer, Conv)]
    assert layer.sparsity is Sparsity.PATTERN
    assert layer.pattern is not None
    ids = layer.pattern.kernel_pattern
    np.testing.assert_array_equal(ids == REMOVED, truth.removed)
    masks = layer.pattern.library.masks
    nonzero = layer.weight != 0
    kept = ~truth.removed
    np.testing.assert_array_equal(masks[ids[kept]], truth.masks[kept])
    np.testing.assert_array_equal(nonzero[kept], truth.masks[kept])
    assert not nonzero[truth.removed].any()
    # Every library entry the layer uses is one the generator drew.
    codes = {m.tobytes() for m in CENTRE_PLUS_3_MASKS}
    assert all(masks[i].tobytes() in codes for i in layer.pattern.patterns_used)


@fuzz
@given(single_layer_models(ops=("conv",)))
def test_dense_conv_is_not_pattern_style(case: OnnxCase) -> None:
    """A conv with random (all non-zero) weights imports as DENSE with no pattern."""
    graph = verify(import_onnx(case.model, case.input_shapes))
    (layer,) = [layer for layer in graph.layers if isinstance(layer, Conv)]
    assert layer.sparsity is Sparsity.DENSE
    assert layer.pattern is None


# ---------------------------------------------------------------------------------------
# Regressions: minimal models the fuzzers once failed on
# ---------------------------------------------------------------------------------------


def fixed_case(nodes: list[onnx.NodeProto], x_shape: tuple[int, ...],
               outputs: dict[str, tuple[int, ...]], opset: int,
               initializers: tuple[np.ndarray, ...] = ()) -> OnnxCase:
    """A hand-written model on input ``x``; ``initializers`` are named c0, c1, ..."""
    inits = [numpy_helper.from_array(v, f"c{i}") for i, v in enumerate(initializers)]
    graph = helper.make_graph(
        nodes, "regression", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, s) for o, s in outputs.items()],
        inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              ir_version=8)
    x = np.random.default_rng(0).standard_normal(x_shape).astype(np.float32)
    return OnnxCase(model, {"x": x}, tuple(outputs), tuple(outputs.values()))


@pytest.mark.parametrize("alias", ["Identity", "Dropout"])
def test_output_read_by_an_alias_that_is_also_an_output(alias: str) -> None:
    # r is a graph output and also the input of an Identity/Dropout whose output is
    # another graph output: both names must survive the aliasing.
    case = fixed_case([helper.make_node("Relu", ["x"], ["r"]),
                       helper.make_node(alias, ["r"], ["d"])], (1, 2, 3, 3),
                      {"r": (1, 2, 3, 3), "d": (1, 2, 3, 3)}, 13)
    assert_matches_onnxruntime(case)


@pytest.mark.parametrize("opset", [11, 12, 13, 18])
def test_torch_view_flatten_folds(opset: int) -> None:
    # x.view(x.size(0), -1) as torch.onnx exports it: a shape computation that must
    # fold with the model's opset (Unsqueeze takes ``axes`` as an attribute before 13).
    if opset < 13:
        unsqueeze = helper.make_node("Unsqueeze", ["n"], ["n1"], axes=[0])
        inits: tuple[np.ndarray, ...] = (np.array(0, np.int64), np.array([-1], np.int64))
    else:
        unsqueeze = helper.make_node("Unsqueeze", ["n", "c2"], ["n1"])
        inits = (np.array(0, np.int64), np.array([-1], np.int64), np.array([0], np.int64))
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Gather", ["s", "c0"], ["n"], axis=0),
        unsqueeze,
        helper.make_node("Concat", ["n1", "c1"], ["target"], axis=0),
        helper.make_node("Reshape", ["x", "target"], ["y"]),
    ]
    assert_matches_onnxruntime(fixed_case(nodes, (2, 3, 2, 2), {"y": (2, 12)}, opset, inits))


def test_squeeze_to_a_scalar_keeps_rank_zero() -> None:
    case = fixed_case([helper.make_node("Relu", ["x"], ["r"]),
                       helper.make_node("Squeeze", ["r"], ["y"])], (1, 1), {"y": ()}, 17)
    assert_matches_onnxruntime(case)


@fuzz
@given(st.one_of(single_layer_models(), small_graph_models(), pattern_conv_models()))
def test_generated_models_are_valid(case: OnnxCase) -> None:
    """The generator's own claims: the ONNX checker accepts its models, onnxruntime
    agrees with its output shapes, and outputs are finite (so the tolerance means
    something)."""
    onnx.checker.check_model(case.model)
    for ref, shape in zip(run_onnxruntime(case), case.output_shapes, strict=True):
        assert ref.shape == shape
        assert np.isfinite(ref).all()
