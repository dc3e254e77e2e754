"""The sparse pointwise kernel (1x1 convs with unstructured zeros) against the interpreter.

Models are built of parallel 1x1 convs reading one input, each forced to a block of
``patcc.backends.llvm.sparse`` (by its output name) so that one compile checks every
candidate of a shape; the shapes cross full and partial vectors, several tiles, K
chunks, batches, fused residuals and activations, and filters with few or no
non-zeros. Each model runs with one thread and two (bitwise equal) and must match the
reference interpreter. The compressed weights are decoded back to the dense tensor.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Mapping
from typing import Any
from unittest import mock

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import patcc
from patcc.backends.llvm import codegen, sparse
from patcc.backends.llvm.lowering import LoweringContext, WeightBlob
from patcc.backends.target import get_target
from patcc.compiler import CompiledModel
from patcc.frontends.onnx import import_onnx
from patcc.ir import Conv, Sparsity, verify
from patcc.passes import reorder_filters
from patcc.passes.reorder import sparse_pointwise
from patcc.runtime import run
from support.compare import assert_close, run_with_threads
from support.sparse_models import PointwiseConv, pointwise_model, sparse_weight
from support.targets import CPU_TAGS, X86_TAGS, runnable_target, runnable_x86_tags

examples = settings(max_examples=30, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])


def _compile(model: onnx.ModelProto, blocks: Mapping[str, sparse.Block | None],
             target: str = "x86_64") -> CompiledModel:
    """Compile with the conv ending in output ``name`` lowered by the sparse kernel with
    ``blocks[name]`` (None: its default block)."""
    dense = codegen.LOWERINGS[Conv]

    def lowering(layer: Conv, ctx: LoweringContext) -> object:
        name = layer.outputs[0]
        if name in blocks:
            return sparse.lower_sparse_pointwise(layer, ctx, blocks[name])
        return dense(layer, ctx)

    with mock.patch.dict(codegen.LOWERINGS, {Conv: lowering}):
        return patcc.compile(model, target=target)


def _check(model: onnx.ModelProto, feeds: dict[str, np.ndarray],
           blocks: Mapping[str, sparse.Block | None], target: str = "x86_64"
           ) -> CompiledModel:
    """Compiled for ``target`` (1 thread == 2 threads, bitwise) == interpreter, every
    conv sparse."""
    graph = verify(import_onnx(model))
    expected = run(graph, feeds)
    compiled = _compile(model, blocks, target)
    kernels = {c.layer.outputs[0]: (c.kernel, c.notes.get("block"))
               for c in compiled.plan.codes if isinstance(c.layer, Conv)}
    where = f"{graph}\nkernels {kernels}, blocks {dict(blocks)}"
    assert set(kernels) == set(blocks) and all(k == "sparse" for k, _ in kernels.values()), where
    got = run_with_threads(compiled.load(num_threads=1), feeds, threads=(1, 2))
    for name, value in expected.items():
        assert_close(got[name], value, f"{name} of {where}")
    return compiled


def _candidates(x_shape: tuple[int, int, int, int], weight: np.ndarray,
                residual: bool = False, target: str = "x86_64") -> list[sparse.Block]:
    """``sparse_pointwise_blocks`` of a conv of ``weight`` on input ``x_shape``."""
    n, c, h, w = x_shape
    o = weight.shape[0]
    layer = Conv(name="c", inputs=("x", "r") if residual else ("x",), outputs=("y",),
                 weight=weight, bias=np.zeros(o, np.float32))
    ctx = LoweringContext({"x": x_shape, "r": (n, o, h, w), "y": (n, o, h, w)},
                          get_target(target), WeightBlob())
    return sparse.sparse_pointwise_blocks(layer, ctx)


# -- which convs, and how the kernel cuts them ---------------------------------------


def _conv(**changes: Any) -> Conv:
    """A 1x1 conv with a zero weight, through the reorder pass as BACKEND_PIPELINE
    runs it (the kernel reads the filter order the pass sets)."""
    weight = np.ones((4, 6, 1, 1), np.float32)
    weight[1, 2] = 0.0
    base = Conv(name="c", inputs=("x",), outputs=("y",), weight=weight,
                bias=np.zeros(4, np.float32))
    return reorder_filters(dataclasses.replace(base, **changes))


@pytest.mark.parametrize(("changes", "supported"), [
    ({}, True),
    ({"dilations": (2, 3)}, True),  # irrelevant for a 1x1 kernel
    ({"weight": np.ones((4, 6, 1, 1), np.float32)}, False),  # dense: the GEMM's
    ({"weight": np.zeros((4, 6, 3, 3), np.float32)}, False),
    ({"strides": (2, 2)}, False),
    ({"pads": (0, 1, 0, 1)}, False),
    ({"weight": np.zeros((4, 3, 1, 1), np.float32), "groups": 2}, False),
])
def test_supports_unpadded_unstrided_ungrouped_1x1_with_zeros(
        changes: dict[str, Any], supported: bool) -> None:
    assert sparse_pointwise(_conv(**changes)) is supported


def test_a_1x1_conv_with_zeros_is_detected_unstructured() -> None:
    rng = np.random.default_rng(0)
    sparse_w = sparse_weight(rng, 8, 12, 0.5)
    dense_w = rng.standard_normal((8, 12, 1, 1)).astype(np.float32) + 10.0
    for weight, style in ((sparse_w, Sparsity.UNSTRUCTURED), (dense_w, Sparsity.DENSE)):
        model, _ = pointwise_model((1, 12, 5, 5),
                                   [PointwiseConv(weight, np.zeros(8, np.float32))], rng)
        (conv,) = verify(import_onnx(model)).convs()
        assert conv.sparsity == style
        assert sparse_pointwise(conv) is (style == Sparsity.UNSTRUCTURED)


def test_tiles_are_balanced_and_only_the_last_vector_is_partial() -> None:
    # 14x14 in 16 lanes: 12 full vectors and one of 4 pixels, in 4-vector tiles
    tiles = sparse._Tiles.split(196, 16, 4)
    assert (tiles.count, tiles.q, tiles.big, tiles.widest, tiles.tail) == (4, 3, 1, 4, 4)
    assert tiles.variants() == [(1, (16, 16, 16, 16)), (3, (16, 16, 16)), (4, (16, 16, 4))]
    # 7x7: one tile, 49 pixels
    assert sparse._Tiles.split(49, 16, 7).variants() == [(1, (16, 16, 16, 1))]
    # whole vectors, equal tiles: one shape
    assert sparse._Tiles.split(3136, 16, 7).variants() == [(28, (16,) * 7)]


def _decode(sw: sparse._SparseWeights, g: sparse._Geometry) -> np.ndarray:
    """The dense (O, C) weights the kernel's arrays encode, walked as the kernel does."""
    dense = np.zeros((g.o, g.c), np.float32)
    loop = 0
    for chunk, block in itertools.product(range(g.chunks), range(g.blocks)):
        for subset in g.subsets:
            lo, hi = int(sw.start[loop]), int(sw.start[loop + 1])
            assert (hi - lo) % (1 + len(subset)) == 0
            for j in range(lo, hi, 1 + len(subset)):
                row, rest = divmod(int(sw.entries[j]), g.pitch)
                assert rest == 0 and 0 <= row < g.k_chunk
                for q, k in enumerate(subset):
                    position = block * g.block_filters + k
                    assert position < g.o, "a weight of a filter past the last"
                    value = sw.entries[j + 1 + q:j + 2 + q].view(np.float32)[0]
                    assert value != 0
                    dense[sw.order[position], chunk * g.k_chunk + row] = value
            loop += 1
    assert loop + 1 == len(sw.start) and sw.start[-1] == len(sw.entries)
    return dense


@pytest.mark.parametrize(("o", "c", "density", "f", "k_chunk"), [
    (10, 37, 0.5, 3, 8), (7, 5, 0.9, 4, 5), (16, 64, 0.1, 2, 64), (3, 20, 0.5, 1, 7),
])
def test_compressed_weights_decode_to_the_dense_weights(o: int, c: int, density: float,
                                                        f: int, k_chunk: int) -> None:
    weight = sparse_weight(np.random.default_rng(o * c), o, c, density)
    layer = _conv(weight=weight, bias=np.zeros(o, np.float32))
    g = sparse._Geometry(1, c, o, sparse._Tiles.split(30, 16, 2), f, 2, k_chunk, False)
    sw = sparse._sparse_weights(layer, g)
    np.testing.assert_array_equal(_decode(sw, g), weight.reshape(o, c))
    assert sw.nonzeros == np.count_nonzero(weight)
    assert sorted(sw.order[:o]) == list(range(o))


@pytest.mark.parametrize("tag", CPU_TAGS)
def test_candidates_fit_the_registers_of_each_target(tag: str) -> None:
    layer = _conv(weight=sparse_weight(np.random.default_rng(1), 64, 96, 0.5),
                  bias=np.zeros(64, np.float32))
    target = get_target(tag)
    ctx = LoweringContext({"x": (1, 96, 28, 28)}, target, WeightBlob())
    blocks = sparse.sparse_pointwise_blocks(layer, ctx)
    assert blocks and len(set(blocks)) == len(blocks)
    for nvec, f, task_filters, k_chunk in blocks:
        assert (f + 1) * nvec + 1 <= target.vector_registers, (tag, blocks)
        assert task_filters % f == 0 and 1 <= k_chunk <= 96
    # the widest tile the registers allow for the first block's filters
    nvec, f = blocks[0][:2]
    assert (f + 1) * (nvec + 1) + 1 > target.vector_registers, (tag, blocks)


def test_block_names_round_trip_and_bad_blocks_are_refused() -> None:
    assert sparse.parse_block(sparse.block_name((7, 3, 96, 64))) == (7, 3, 96, 64)
    with pytest.raises(ValueError, match="7v3f96t64k"):
        sparse.parse_block("7v3f")
    model, _ = pointwise_model((1, 8, 12, 12), [PointwiseConv(sparse_weight(
        np.random.default_rng(2), 6, 8, 0.5), np.zeros(6, np.float32))],
        np.random.default_rng(3))
    bad: list[Any] = [(8, 4, 6, 8), (0, 1, 6, 8), (2, 5, 6, 8), (2, 2, 6)]
    for block in bad:  # too many registers, a zero, F > 4, too short
        with pytest.raises(ValueError, match="not legal"):
            _compile(model, {"out0": block})
    with pytest.raises(ValueError, match="not a sparse 1x1 conv"):
        sparse.lower_sparse_pointwise(_conv(strides=(2, 2)), LoweringContext(
            {"x": (1, 6, 4, 4)}, get_target("x86_64"), WeightBlob()))


# -- compiled against the interpreter -------------------------------------------------


SHAPES = [
    # (x shape, filters, density): full and partial vectors, one or many tiles
    ((1, 24, 7, 7), 40, 0.5),  # one tile of 4 vectors, the last of 1 pixel
    ((2, 40, 14, 14), 33, 0.3),  # tiles of 4 and 3 vectors (or 7 and 6), batch 2
    ((1, 16, 56, 56), 20, 0.5),  # whole vectors, 28 tiles
    ((1, 300, 3, 5), 21, 0.5),  # one partial vector, K chunks
    ((1, 160, 14, 14), 12, 0.6),  # several chunks and tile shapes
]


@pytest.mark.parametrize("tag", X86_TAGS)
@pytest.mark.parametrize(("x_shape", "o", "density"), SHAPES)
def test_every_candidate_block_matches_the_interpreter(
        x_shape: tuple[int, int, int, int], o: int, density: float, tag: str) -> None:
    runnable_target(tag)
    rng = np.random.default_rng(x_shape[1] * o)
    c = x_shape[1]
    weight = sparse_weight(rng, o, c, density)
    candidates = _candidates(x_shape, weight, target=tag)
    fused = [(False, None), (True, "relu"), (False, "relu6"), (True, None)]
    convs = [PointwiseConv(sparse_weight(rng, o, c, density),
                           rng.standard_normal(o).astype(np.float32), *fused[i % len(fused)])
             for i in range(len(candidates))]
    model, feeds = pointwise_model(x_shape, convs, rng)
    compiled = _check(model, feeds, {f"out{i}": b for i, b in enumerate(candidates)}, tag)
    for code in compiled.plan.codes:
        assert isinstance(code.layer, Conv)
        assert code.notes["kernels"] == np.count_nonzero(code.layer.weight)
        assert code.notes["tasks"] == code.phases[0].tasks
        loads, unshared = (code.notes[k] for k in ("loads_per_fma", "loads_per_fma_without_lre"))
        assert isinstance(loads, float) and isinstance(unshared, float)
        assert 0 < loads <= unshared


@pytest.mark.parametrize("tag", X86_TAGS)
def test_empty_filters_and_a_single_weight(tag: str) -> None:
    registers = runnable_target(tag).vector_registers
    rng = np.random.default_rng(7)
    x_shape = (2, 50, 5, 9)
    holes = sparse_weight(rng, 13, 50, 0.5)
    holes[[0, 4, 12]] = 0.0  # filters with no non-zero: bias (+ residual) only
    single = np.zeros((13, 50, 1, 1), np.float32)
    single[6, 31] = 2.5
    bias = rng.standard_normal(13).astype(np.float32)
    convs = [PointwiseConv(holes, bias, True, "relu"), PointwiseConv(holes, bias),
             PointwiseConv(single, bias, False, "relu6"), PointwiseConv(single, bias, True)]
    widest = (registers - 1) // 4  # of 3 filters: the tile across the 5x9 image, or less
    blocks = [(3, 4, 8, 16), (widest, 3, 13, 50),
              (1, 1, 1, 1), (2, 2, 4, 7)]
    model, feeds = pointwise_model(x_shape, convs, rng)
    _check(model, feeds, {f"out{i}": b for i, b in enumerate(blocks)}, tag)


@st.composite
def sparse_cases(draw: st.DrawFn) -> tuple[onnx.ModelProto, dict[str, np.ndarray],
                                           dict[str, sparse.Block | None], str]:
    """Two convs of one random shape, each with a random block legal for a drawn
    target or the default, and the target."""
    tag = draw(st.sampled_from(runnable_x86_tags()))
    registers = get_target(tag).vector_registers
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    x_shape = (draw(st.integers(1, 2)), draw(st.integers(1, 160)), draw(st.integers(1, 17)),
               draw(st.integers(1, 17)))
    c = x_shape[1]
    o = draw(st.integers(1, 40))
    convs, blocks = [], {}
    for i in range(2):
        density = draw(st.sampled_from((0.02, 0.2, 0.5, 0.8)))
        convs.append(PointwiseConv(sparse_weight(rng, o, c, density),
                                   rng.standard_normal(o).astype(np.float32),
                                   draw(st.booleans()),
                                   draw(st.sampled_from((None, "relu", "relu6")))))
        f = draw(st.integers(1, 4))
        block = (draw(st.integers(1, (registers - 1) // (f + 1))), f, draw(st.integers(1, o)),
                 draw(st.integers(1, c)))
        blocks[f"out{i}"] = draw(st.sampled_from((block, block, None)))
    model, feeds = pointwise_model(x_shape, convs, rng)
    return model, feeds, blocks, tag


@examples
@given(sparse_cases())
def test_random_sparse_convs_match_the_interpreter(
        case: tuple[onnx.ModelProto, dict[str, np.ndarray],
                    dict[str, sparse.Block | None], str]) -> None:
    _check(*case)
