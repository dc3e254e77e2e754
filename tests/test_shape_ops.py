"""Gather on computed tensors, LRN, MatMul with a batched or 1-D constant B, and the
shape arithmetic exported models fold at import (Shape, Gather, Unsqueeze, Concat,
Cast, ConstantOfShape, Range, Slice and Expand of a computed shape): against
onnxruntime (or torch) on the interpreter and on every x86 build this machine runs."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import patcc
from patcc.backends.target import get_target
from patcc.errors import PatccError
from patcc.frontends.onnx import import_onnx
from patcc.ir import Dense, Gather, Reshape, Transpose
from patcc.runtime import run
from support.compare import assert_close, run_onnxruntime
from support.targets import X86_TAGS, compiled_outputs, runnable_target

SHAPE = (2, 6, 5, 7)


def _model(nodes: list[onnx.NodeProto], inputs: dict[str, tuple[int, ...]],
           outputs: list[str], inits: dict[str, np.ndarray], out_rank: int | None = None
           ) -> onnx.ModelProto:
    """Opset 13; the outputs' shapes inferred, or of ``out_rank`` unknown dimensions
    where inference cannot tell (a malformed node)."""
    declared = None if out_rank is None else [None] * out_rank
    graph = helper.make_graph(
        nodes, "shape_ops",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, list(s)) for n, s in inputs.items()],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, declared) for n in outputs],
        [numpy_helper.from_array(v, n) for n, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)],
                              ir_version=8)
    return onnx.shape_inference.infer_shapes(model)


def _feeds(inputs: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(5)
    return {n: rng.standard_normal(s).astype(np.float32) for n, s in inputs.items()}


def _assert_everywhere(model: onnx.ModelProto, feeds: dict[str, np.ndarray],
                       expected: dict[str, np.ndarray]) -> None:
    """Interpreter and every runnable x86 build equal ``expected`` (1e-4 rule)."""
    results = {"interpreter": run(import_onnx(model), feeds), **compiled_outputs(model, feeds)}
    for where, got in results.items():
        assert set(got) == set(expected), where
        for name, value in expected.items():
            assert_close(got[name], value, f"{name} ({where})")


# -- Gather ------------------------------------------------------------------------------

GATHERS: dict[str, tuple[int, np.ndarray]] = {
    "batch": (0, np.array([1, 0, 1])),
    "channels": (1, np.array([5, 0, -1, 2])),  # negative counts from the end
    "one_channel": (1, np.array(3)),  # a scalar index drops the axis
    "rows_2d": (2, np.array([[4, 0], [-5, 2], [1, 1]])),
    "last_axis": (3, np.array([6, 6, 0, -2])),  # blocks of one float
    "many": (3, np.arange(700) % 7),  # more indices than one copy task takes
}
"""Label -> (axis, indices) of the Gathers of ``gather_model``."""


def gather_model() -> onnx.ModelProto:
    """Each Gather of GATHERS on a computed tensor (relu of the input), and one that
    feeds a convolution (anchors picked from a head, then convolved)."""
    nodes = [helper.make_node("Relu", ["x"], ["r"])]
    inits: dict[str, np.ndarray] = {}
    for label, (axis, indices) in GATHERS.items():
        inits[f"i_{label}"] = indices.astype(np.int64)
        nodes.append(helper.make_node("Gather", ["r", f"i_{label}"], [label], axis=axis))
    inits["i_conv"] = np.array([4, 1, 1], np.int32)  # int32 indices are valid too
    inits["w"] = np.random.default_rng(2).standard_normal((2, 3, 3, 3)).astype(np.float32)
    nodes += [helper.make_node("Gather", ["x", "i_conv"], ["picked"], axis=1),
              helper.make_node("Conv", ["picked", "w"], ["conv"], pads=[1, 1, 1, 1])]
    return _model(nodes, {"x": SHAPE}, [*GATHERS, "conv"], inits)


def gather_feeds() -> dict[str, np.ndarray]:
    return _feeds({"x": SHAPE})


def test_gather_on_data_matches_onnxruntime() -> None:
    model, feeds = gather_model(), gather_feeds()
    graph = import_onnx(model)
    gathers = [layer for layer in graph.layers if isinstance(layer, Gather)]
    assert len(gathers) == len(GATHERS) + 1
    assert all(int(g.indices.min()) >= 0 for g in gathers)  # normalised at import
    expected = run_onnxruntime(model, feeds, [*GATHERS, "conv"])
    assert expected["one_channel"].shape == (2, 5, 7)
    assert expected["rows_2d"].shape == (2, 6, 3, 2, 7)
    _assert_everywhere(model, feeds, expected)


@pytest.mark.parametrize(("indices", "needle"), [
    (np.array([0, 6]), "index 6 is out of range for axis 1"),
    (np.array([-7]), "index -7 is out of range"),
    (np.array([1.0], np.float32), "dtype float32"),
])
def test_bad_gather_indices_are_rejected_in_one_line(indices: np.ndarray, needle: str) -> None:
    model = _model([helper.make_node("Gather", ["x", "i"], ["y"], axis=1, name="g")],
                   {"x": SHAPE}, ["y"], {"i": indices}, out_rank=4)
    with pytest.raises(PatccError) as info:
        import_onnx(model)
    assert needle in str(info.value) and "node 'g' (Gather)" in str(info.value)
    assert "\n" not in str(info.value)


def test_gather_with_computed_indices_is_rejected() -> None:
    model = _model([helper.make_node("Gather", ["w", "x"], ["y"], name="g")], {"x": (3,)},
                   ["y"], {"w": np.ones((4, 2), np.float32)}, out_rank=2)
    with pytest.raises(PatccError, match="indices 'x' must be a constant"):
        import_onnx(model)


def test_the_gather_layer_checks_its_indices() -> None:
    from patcc.ir import IRError

    layer = Gather(name="g", inputs=("x",), outputs=("y",), axis=1,
                   indices=np.array([0, 3, 6], np.int64))
    with pytest.raises(IRError, match=r"index 6 \(position 2 of the indices\)"):
        layer.infer_shapes([SHAPE])
    assert layer.infer_shapes([(1, 7)]) == ((1, 3),)
    with pytest.raises(IRError, match="int64"):
        Gather(name="g", inputs=("x",), outputs=("y",), axis=0,
               indices=np.array([0], np.int32)).infer_shapes([(2,)])


# -- LRN ---------------------------------------------------------------------------------

LRNS: dict[str, dict[str, float]] = {
    "default": {"size": 3},
    "alexnet": {"size": 5, "alpha": 1e-4, "beta": 0.75, "bias": 2.0},
    "one": {"size": 1, "alpha": 0.3, "beta": 1.2, "bias": 0.7},
    "wide": {"size": 13, "alpha": 2.0, "beta": 0.9, "bias": 1.0},  # wider than C
}
"""Label -> LRN attributes; onnxruntime takes odd sizes only."""


def lrn_model() -> onnx.ModelProto:
    nodes = [helper.make_node("LRN", ["x"], [label], **attrs) for label, attrs in LRNS.items()]
    return _model(nodes, {"x": SHAPE}, list(LRNS), {})


def test_lrn_matches_onnxruntime() -> None:
    model, feeds = lrn_model(), gather_feeds()
    feeds["x"] *= 3  # the window sum matters against the bias
    _assert_everywhere(model, feeds, run_onnxruntime(model, feeds, list(LRNS)))


def lrn_reference(x: np.ndarray, size: int, alpha: float, beta: float, bias: float
                  ) -> np.ndarray:
    """The ONNX specification's formula, channel by channel, in float64."""
    x64 = x.astype(np.float64)
    total = np.zeros_like(x64)
    for c in range(x.shape[1]):
        lo = max(0, c - (size - 1) // 2)
        hi = min(x.shape[1] - 1, c + -(-(size - 1) // 2))
        total[:, c] = (x64[:, lo:hi + 1] ** 2).sum(axis=1)
    return (x64 / (bias + alpha / size * total) ** beta).astype(np.float32)


@pytest.mark.parametrize(("shape", "size"), [(SHAPE, 4), (SHAPE, 2), ((2, 5, 7), 3),
                                             ((1, 4, 3, 3, 2), 6)])
def test_lrn_of_even_sizes_and_other_ranks_matches_the_formula(shape: tuple[int, ...],
                                                                size: int) -> None:
    """onnxruntime computes 4-D LRN of odd sizes only: the rest against the formula,
    whose window is asymmetric for an even size (floor below, ceil above)."""
    model = _model([helper.make_node("LRN", ["x"], ["y"], size=size, alpha=0.5, beta=0.6,
                                     bias=1.5)], {"x": shape}, ["y"], {})
    feeds = _feeds({"x": shape})
    _assert_everywhere(model, feeds, {"y": lrn_reference(feeds["x"], size, 0.5, 0.6, 1.5)})


# -- MatMul ------------------------------------------------------------------------------

MATMULS: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "batched_3d": ((2, 3, 4), (2, 4, 3)),
    "batched_4d": ((1, 2, 3, 4), (1, 2, 4, 3)),
    "bcast": ((3, 1, 3, 4), (1, 2, 4, 2)),  # A broadcasts along B's batch, B along A's
    "both_vary": ((2, 3, 5, 4), (2, 3, 4, 2)),  # A split along two axes
    "b_deeper": ((5, 4), (3, 1, 4, 2)),  # A gets leading axes
    "b_ones": ((2, 3, 4), (1, 1, 4, 3)),  # one matrix, a rank-4 result
    "row_times_batched": ((4,), (2, 4, 3)),  # a row whose axis leaves the result
    "row_times_matrix": ((4,), (4, 3)),
    "times_column": ((2, 3, 4), (4,)),  # a column whose axis leaves the result
    "dot": ((4,), (4,)),  # a scalar result
}
"""Label -> (shape of the data A, shape of the constant B)."""


def matmul_model() -> onnx.ModelProto:
    rng = np.random.default_rng(4)
    nodes, inputs, inits = [], {}, {}
    for label, (a, b) in MATMULS.items():
        inputs[f"a_{label}"] = a
        inits[f"b_{label}"] = rng.standard_normal(b).astype(np.float32)
        nodes.append(helper.make_node("MatMul", [f"a_{label}", f"b_{label}"], [label],
                                      name=label))
    return _model(nodes, inputs, list(MATMULS), inits)


def test_matmul_forms_match_onnxruntime() -> None:
    model = matmul_model()
    feeds = _feeds({f"a_{label}": a for label, (a, _) in MATMULS.items()})
    expected = run_onnxruntime(model, feeds, list(MATMULS))
    for label, (a, b) in MATMULS.items():
        assert expected[label].shape == np.matmul(np.ones(a), np.ones(b)).shape
    _assert_everywhere(model, feeds, expected)


def test_one_dense_per_weight_matrix_and_no_copied_weights() -> None:
    graph = import_onnx(matmul_model())
    for label, (_, b) in MATMULS.items():
        dense = [layer for layer in graph.layers if isinstance(layer, Dense)
                 and (layer.name == label or layer.name.startswith(label + "_"))]
        assert len(dense) == (int(np.prod(b[:-2])) if len(b) > 2 else 1), label
        assert sum(d.weight.size for d in dense) == int(np.prod(b)), label


@pytest.mark.parametrize(("a", "b", "needle"), [
    ((2, 3, 4), (3, 4, 3), "batch axes 2 and 3 do not broadcast"),
    ((2, 3, 4), (2, 5, 3), "A's last axis 4 must equal B's rows 5"),
    ((3, 4), (300, 4, 2), "300 weight matrices"),
])
def test_bad_matmul_shapes_are_rejected_in_one_line(a: tuple[int, ...], b: tuple[int, ...],
                                                    needle: str) -> None:
    model = _model([helper.make_node("MatMul", ["a", "b"], ["y"], name="mm")], {"a": a}, ["y"],
                   {"b": np.ones(b, np.float32)}, out_rank=3)
    with pytest.raises(PatccError) as info:
        import_onnx(model)
    assert needle in str(info.value) and "node 'mm' (MatMul)" in str(info.value)
    assert "\n" not in str(info.value)


def test_matmul_of_two_computed_tensors_stays_unsupported() -> None:
    model = _model([helper.make_node("MatMul", ["a", "b"], ["y"])], {"a": (2, 3), "b": (3, 2)},
                   ["y"], {}, out_rank=2)
    with pytest.raises(PatccError, match="MatMul of two computed tensors is not supported"):
        import_onnx(model)


# -- the torch frontend and the pruning bridge --------------------------------------------


def test_torch_select_and_indexing_become_gathers() -> None:
    import torch

    from patcc.frontends.torch import import_module

    class Picks(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
            y = torch.relu(x)
            return (y[:, 0], y[:, -1], y[:, [0, 2, 2]], y[..., [[1, -1]]],
                    torch.index_select(y, 2, torch.tensor([4, 0])))

    module = Picks().eval()
    x = torch.randn(*SHAPE)
    graph = import_module(module, (x,))
    assert sum(isinstance(layer, Gather) for layer in graph.layers) == 5
    with torch.no_grad():
        want = [t.numpy() for t in module(x)]
    got = list(run(graph, [x.numpy()]).values())
    for tag in X86_TAGS:
        try:
            runnable_target(tag)
        except pytest.skip.Exception:
            continue
        compiled = patcc.compile(module, tag, example_inputs=(x,), tune=False)
        got_native = compiled.load(num_threads=1).run([x.numpy()])
        for value, ref in zip(got_native.values(), want, strict=True):
            assert_close(value, ref, tag)
    for value, ref in zip(got, want, strict=True):
        assert_close(value, ref, "interpreter")


def test_torch_indexing_with_two_index_tensors_is_rejected() -> None:
    import torch

    from patcc.frontends.torch import import_module

    class TwoIndices(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x[:, [0, 1], [2, 3]]

    with pytest.raises(PatccError, match="indexing with 2 index tensors is not supported"):
        import_module(TwoIndices().eval(), (torch.randn(*SHAPE),))


def test_pruning_bridge_rebuilds_gather_lrn_and_matmul(tmp_path: Path) -> None:
    import torch

    from patcc.frontends.pruning.onnx_bridge import import_for_pruning

    w = np.random.default_rng(3).standard_normal((4, 6, 3, 3)).astype(np.float32)
    b = np.random.default_rng(4).standard_normal((4, 5, 3)).astype(np.float32)
    model = _model([
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("LRN", ["c"], ["n"], size=3, alpha=0.2, bias=1.5),
        helper.make_node("Gather", ["n", "i"], ["g"], axis=3),
        helper.make_node("MatMul", ["g", "b"], ["y"]),
    ], {"x": SHAPE}, ["y"], {"w": w, "b": b, "i": np.array([6, 0, 2, -1, 3], np.int64)})
    onnx.save(model, tmp_path / "m.onnx")
    feeds = gather_feeds()
    expected = run(import_onnx(model), feeds)["y"]
    _, torch_model = import_for_pruning(str(tmp_path / "m.onnx"))
    with torch.no_grad():
        got = torch_model.module(torch.from_numpy(feeds["x"])).numpy()
    assert_close(got, expected, "pruning bridge")


# -- shapes computed at run time, folded at import ----------------------------------------


def _detection_head() -> object:
    import torch

    class Head(torch.nn.Module):
        """The reshapes exported models compute from ``x.size()``: a YOLO head's
        (b, anchors, outputs, h, w) view, view(b, -1), reshape(b, c, -1) and flatten."""

        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 18, 3, padding=1)
            self.fc = torch.nn.Linear(18 * 5 * 7, 4)

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
            y = self.conv(x)
            b, c, h, w = y.shape
            head = y.view(b, 3, 6, h, w).permute(0, 1, 3, 4, 2)
            rows = y.reshape(b, c, -1).permute(0, 2, 1)
            return head, rows, y.view(y.size(0), -1), self.fc(torch.flatten(y, 1))

    return Head().eval()


@pytest.mark.parametrize("dynamo", [False, True])
def test_exported_runtime_shapes_fold_for_the_given_batch(dynamo: bool) -> None:
    """Exported with a dynamic batch: the Shape -> Gather -> Unsqueeze -> Concat ->
    Reshape chains fold once the user's input shape fixes the batch."""
    import torch

    if dynamo:
        pytest.importorskip("onnxscript")
    module = _detection_head()
    x = torch.randn(3, 3, 5, 7)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            model = torch.onnx.export(module, (x[:2],), dynamo=True, verbose=False,
                                      input_names=["x"],
                                      dynamic_shapes={"x": {0: torch.export.Dim("batch")}},
                                      ).model_proto
        else:
            buffer = io.BytesIO()
            torch.onnx.export(module, (x[:2],), buffer, dynamo=False, input_names=["x"],
                              dynamic_axes={"x": {0: "batch"}}, opset_version=17)
            model = onnx.load_from_string(buffer.getvalue())
    assert not model.graph.input[0].type.tensor_type.shape.dim[0].HasField("dim_value")
    graph = import_onnx(model, {"x": (3, 3, 5, 7)})
    kinds = {type(layer) for layer in graph.layers}
    assert Reshape in kinds and Transpose in kinds and Gather not in kinds  # shapes folded
    with torch.no_grad():
        want = [t.numpy() for t in module(x)]
    results = {"interpreter": run(graph, [x.numpy()])}
    tag = next((t for t in X86_TAGS if get_target(t).runs_here), None)
    if tag is not None:
        compiled = patcc.compile(model, tag, input_shapes={"x": (3, 3, 5, 7)}, tune=False)
        results[tag] = compiled.load(num_threads=1).run([x.numpy()])
    for where, got in results.items():
        for value, ref in zip(got.values(), want, strict=True):
            assert_close(value, ref, where)


def shape_arithmetic_model() -> onnx.ModelProto:
    """Every node but the last few works on shapes and constants (folded at import):
    the target of a reshape from Shape, Gather, Slice, Div, Mul, Unsqueeze and Concat;
    a channel scale from Range, Cast and ConstantOfShape; Expand to a computed shape;
    a Gather on data whose indices come from Range."""
    i64 = {n: np.array(v, np.int64) for n, v in
           {"zero": 0, "one": 1, "two": 2, "axes0": [0], "from2": [2], "to4": [4],
            "neg2": [-2], "end": [2**62]}.items()}
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Gather", ["s", "zero"], ["n"]),
        helper.make_node("Gather", ["s", "one"], ["c"]),
        helper.make_node("Slice", ["s", "from2", "to4"], ["hw"]),
        helper.make_node("Slice", ["s", "neg2", "end"], ["hw_again"]),
        helper.make_node("ReduceProd", ["hw_again"], ["pixels"], keepdims=1),
        helper.make_node("Gather", ["hw", "zero"], ["h"]),
        helper.make_node("Gather", ["hw", "one"], ["w"]),
        helper.make_node("Mul", ["h", "w"], ["hw_product"]),
        helper.make_node("Div", ["c", "two"], ["half"]),
        helper.make_node("Unsqueeze", ["n", "axes0"], ["n1"]),
        helper.make_node("Unsqueeze", ["half", "axes0"], ["half1"]),
        helper.make_node("Concat", ["n1", "two_1d", "half1", "pixels"], ["target"], axis=0),
        helper.make_node("Reshape", ["x", "target"], ["grouped"]),
        # a per-channel scale 1 + c / 10 from Range, Cast and ConstantOfShape
        helper.make_node("Range", ["zero", "c", "one"], ["channel"]),
        helper.make_node("Cast", ["channel"], ["channel_f"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["c", "axes0"], ["c1"]),
        helper.make_node("ConstantOfShape", ["c1"], ["ones"],
                         value=numpy_helper.from_array(np.array([1.0], np.float32))),
        helper.make_node("Cast", ["hw_product"], ["ten"], to=TensorProto.FLOAT),
        helper.make_node("Div", ["channel_f", "ten"], ["tenths"]),
        helper.make_node("Add", ["ones", "tenths"], ["scale_flat"]),
        helper.make_node("Concat", ["one_1d", "c1", "one_1d", "one_1d"], ["scale_shape"],
                         axis=0),
        helper.make_node("Reshape", ["scale_flat", "scale_shape"], ["scale"]),
        helper.make_node("Mul", ["x", "scale"], ["scaled"]),
        # a pooled map expanded back to the input's (computed) shape
        helper.make_node("ReduceMean", ["x"], ["mean"], axes=[2, 3], keepdims=1),
        helper.make_node("Expand", ["mean", "s"], ["expanded"]),
        # every other channel, indices from Range
        helper.make_node("Range", ["zero", "c", "two"], ["even"]),
        helper.make_node("Gather", ["x", "even"], ["evens"], axis=1),
    ]
    inits = {**i64, "two_1d": np.array([2], np.int64), "one_1d": np.array([1], np.int64)}
    return _model(nodes, {"x": SHAPE}, ["grouped", "scaled", "expanded", "evens"], inits,
                  out_rank=4)


def test_shape_arithmetic_folds_to_constants() -> None:
    model = shape_arithmetic_model()
    graph = import_onnx(model)
    kinds = sorted(type(layer).__name__ for layer in graph.layers)
    # the computations on x alone: the rest were constants
    assert kinds == ["Binary", "Binary", "Gather", "GlobalPool", "Reshape"], kinds
    feeds = gather_feeds()
    expected = run_onnxruntime(model, feeds, ["grouped", "scaled", "expanded", "evens"])
    assert expected["grouped"].shape == (2, 2, 3, 35)
    _assert_everywhere(model, feeds, expected)
