"""Fused inverted-residual blocks (``patcc.backends.llvm.fused``) against the interpreter.

A block is 1x1 expand -> ReLU6 -> depthwise kxk -> ReLU6 -> 1x1 project (-> + input),
dense or pruned (unstructured 1x1 weights, pattern depthwise kernels). The fusion
thresholds are lowered so that small images fuse and split into many bands, with
short last bands, bands reaching past the image at both ends, strides and dilations;
every compiled block must be one fused step (asserted: otherwise the test would check
the unfused kernels) and match the interpreter, with 1 and 2 threads bitwise equal.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

import patcc
from patcc.backends.llvm import fused
from patcc.frontends.onnx import import_onnx
from patcc.passes import BACKEND_PIPELINE, run_pipeline
from patcc.runtime import run
from support.compare import assert_close, run_with_threads
from support.fuzz import fuzz_examples
from support.targets import runnable_target, runnable_x86_tags

# Centre plus three neighbours: the pattern library the pruned blocks draw from.
PATTERNS = np.array([[[0, 1, 0], [1, 1, 0], [0, 0, 1]], [[0, 0, 0], [1, 1, 1], [0, 1, 0]],
                     [[1, 0, 0], [0, 1, 1], [0, 1, 0]], [[0, 1, 0], [0, 1, 0], [1, 0, 1]],
                     [[0, 0, 1], [1, 1, 0], [0, 1, 0]], [[0, 1, 1], [0, 1, 0], [0, 1, 0]]],
                    dtype=np.float32)


def block_model(c: int, e: int, o: int, k: int, stride: int, dilation: int, hw: tuple[int, int],
                residual: bool, pruned: bool, seed: int) -> tuple[onnx.ModelProto,
                                                                   np.ndarray]:
    """The block as an ONNX model and an input for it."""
    rng = np.random.default_rng(seed)
    w1 = (rng.standard_normal((e, c, 1, 1)) / np.sqrt(c)).astype(np.float32)
    w2 = (rng.standard_normal((e, 1, k, k)) / k).astype(np.float32)
    w3 = (rng.standard_normal((o, e, 1, 1)) / np.sqrt(e)).astype(np.float32)
    if pruned:
        for w in (w1, w3):
            w[rng.random(w.shape) < 0.5] = 0.0
            w.flat[0] = 0.0
        if k == 3:
            w2 *= PATTERNS[rng.integers(0, len(PATTERNS), e)][:, None]
    pad = dilation * (k - 1) // 2
    consts = {"w1": w1, "b1": rng.standard_normal(e).astype(np.float32),
              "w2": w2, "b2": rng.standard_normal(e).astype(np.float32),
              "w3": w3, "b3": rng.standard_normal(o).astype(np.float32),
              "zero": np.array(0.0, np.float32), "six": np.array(6.0, np.float32)}
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["t1"]),
        helper.make_node("Clip", ["t1", "zero", "six"], ["a1"]),
        helper.make_node("Conv", ["a1", "w2", "b2"], ["t2"], group=e, strides=[stride] * 2,
                         dilations=[dilation] * 2, pads=[pad] * 4),
        helper.make_node("Clip", ["t2", "zero", "six"], ["a2"]),
        helper.make_node("Conv", ["a2", "w3", "b3"], ["t3" if residual else "y"]),
    ]
    if residual:
        nodes.append(helper.make_node("Add", ["t3", "x"], ["y"]))
    h, w = hw
    ho, wo = (h + 2 * pad - dilation * (k - 1) - 1) // stride + 1, \
        (w + 2 * pad - dilation * (k - 1) - 1) // stride + 1
    graph = helper.make_graph(
        nodes, "block", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, h, w])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, o, ho, wo])],
        [numpy_helper.from_array(v, n) for n, v in consts.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    x = rng.uniform(-2, 2, (1, c, h, w)).astype(np.float32)
    return model, x


@st.composite
def blocks(draw: st.DrawFn) -> dict[str, object]:
    k = draw(st.sampled_from([3, 3, 5]))
    stride = draw(st.sampled_from([1, 2]))
    c = draw(st.integers(1, 24))
    o = draw(st.sampled_from([c, draw(st.integers(1, 24))]))
    return {"c": c, "e": draw(st.integers(2, 72)), "o": o, "k": k, "stride": stride,
            "dilation": draw(st.sampled_from([1, 1, 2])),
            "hw": (draw(st.integers(k + 2, 40)), draw(st.integers(2, 70))),
            "residual": stride == 1 and o == c and draw(st.booleans()),
            "pruned": draw(st.booleans()), "seed": draw(st.integers(0, 2**16))}


@pytest.fixture
def fuse_small(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """Fuse every block, in bands of ``budget`` bytes (set by the test)."""
    monkeypatch.setattr(fused, "FUSE_MIN_BYTES", 0)
    return lambda budget: monkeypatch.setattr(fused, "BAND_BYTES", budget)


def compile_block(model: onnx.ModelProto, tag: str) -> patcc.compiler.CompiledModel:
    compiled = patcc.compile(model, runnable_target(tag), tune=False, fuse_blocks=True)
    kernels = [code.kernel for code in compiled.plan.codes]
    assert kernels == ["inverted-residual"], kernels  # one fused step, nothing else
    return compiled


@given(spec=blocks(), budget=st.integers(4 << 10, 512 << 10),
       tag=st.sampled_from(runnable_x86_tags()))
@settings(max_examples=fuzz_examples(15), deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
def test_fused_block_matches_interpreter(spec: dict, budget: int, tag: str,
                                         fuse_small) -> None:  # type: ignore[no-untyped-def]
    fuse_small(budget)
    model, x = block_model(**spec)  # type: ignore[arg-type]
    compiled = compile_block(model, tag)
    ref = run(import_onnx(model), {"x": x})["y"]
    got = run_with_threads(compiled.load(), {"x": x})["y"]
    assert_close(got, ref, f"{spec} bands {compiled.plan.codes[0].notes['block']}")


@pytest.mark.parametrize("pruned", [False, True])
def test_band_edges(pruned: bool, fuse_small) -> None:  # type: ignore[no-untyped-def]
    """One-row bands (every band reaches past the image or is an edge) and a band of
    the whole image, with a stride and a residual block."""
    tag = runnable_x86_tags()[0]
    for budget, spec in ((1, dict(c=8, e=32, o=8, k=3, stride=1, dilation=1, hw=(9, 20),
                                  residual=True)),
                         (1, dict(c=4, e=16, o=6, k=3, stride=2, dilation=1, hw=(11, 13),
                                  residual=False)),
                         (1 << 30, dict(c=8, e=24, o=8, k=5, stride=1, dilation=1,
                                        hw=(12, 12), residual=True))):
        fuse_small(budget)
        model, x = block_model(**spec, pruned=pruned, seed=7)  # type: ignore[arg-type]
        compiled = compile_block(model, tag)
        rows = compiled.plan.codes[0].notes["block"]
        assert rows.startswith("1 rows" if budget == 1 else "12 rows x 1 bands"), rows
        assert_close(compiled.load()(x), run(import_onnx(model), {"x": x})["y"], str(spec))


def test_which_blocks_fuse(monkeypatch: pytest.MonkeyPatch) -> None:
    """A block fuses when its inner tensors have no other reader and are no outputs,
    and its expanded tensor is at least FUSE_MIN_BYTES."""
    model, _ = block_model(8, 48, 8, 3, 1, 1, (20, 20), True, False, 0)
    graph = run_pipeline(import_onnx(model), BACKEND_PIPELINE)
    expanded = 4 * 48 * 20 * 20
    monkeypatch.setattr(fused, "FUSE_MIN_BYTES", expanded)
    (block,) = fused.inverted_residuals(graph).values()
    assert [conv.name for conv in block.convs] == [layer.name for layer in graph.layers]
    assert block.inputs == (graph.layers[0].inputs[0], "x") and block.outputs == ("y",)
    monkeypatch.setattr(fused, "FUSE_MIN_BYTES", expanded + 1)
    assert fused.inverted_residuals(graph) == {}
    monkeypatch.setattr(fused, "FUSE_MIN_BYTES", 0)
    inner = graph.layers[0].outputs[0]
    assert fused.inverted_residuals(graph, keep=frozenset({inner})) == {}
    with_output = patcc.ir.Graph(inputs=graph.inputs, layers=graph.layers,
                                 outputs=(*graph.outputs, inner), constants=graph.constants)
    assert fused.inverted_residuals(with_output) == {}


def test_report_counts_the_blocks_convs(fuse_small) -> None:  # type: ignore[no-untyped-def]
    """``--report`` gives a fused block one row with the non-zero MACs of its three
    convs, timed by a profiling build that fuses too; the time-by-kernel table has it."""
    from patcc.report import format_kernels, kernel_rows, layer_rows

    fuse_small(64 << 10)
    model, _ = block_model(8, 48, 8, 3, 2, 1, (30, 30), False, True, 3)
    compiled = compile_block(model, runnable_x86_tags()[0])
    (row,) = layer_rows(compiled, runs=2, threads=1)
    weights = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    macs = [np.count_nonzero(weights[name]) for name in ("w1", "w2", "w3")]
    assert row["nonzero_macs"] == macs[0] * 30 * 30 + (macs[1] + macs[2]) * 15 * 15
    assert row["kernel"] == "inverted-residual" and row["ms"] > 0
    table = format_kernels(kernel_rows([row]), fma_peak=100.0, threads=1)
    assert table.splitlines()[1].split()[:2] == ["inverted-residual", "1"]
