"""The GEMM lowering of dense convolutions and Dense layers against the interpreter.

The generic differential tests draw few channels; these draw enough rows, columns and
K to cross the register tile, the task blocks and the column gaps between output rows
of the planes a strided or padded conv reads, with groups, batches, fused residuals
and activations. Each conv is compiled in the orientation the compiler picks, or
forced to vectors along N, or to vectors along M with a drawn tile and maybe K split
into small blocks (shapes this small would never choose them). Each model runs with
one thread and two (bitwise equal) and must match the reference interpreter.
"""

from __future__ import annotations

from contextlib import ExitStack
from unittest import mock

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

import patcc
from patcc.backends.llvm import gemm
from patcc.backends.llvm.conv import _Planes, _planes
from patcc.backends.llvm.gemv import GEMV_MAX_ROWS
from patcc.backends.llvm.planes import inside
from patcc.backends.target import get_target
from patcc.compiler import CompiledModel
from patcc.frontends.onnx import import_onnx
from patcc.ir import Conv, verify
from patcc.runtime import run
from support.compare import assert_close, run_with_threads
from support.onnx_gen import window_out
from support.targets import X86_TAGS, runnable_target, runnable_x86_tags

examples = settings(max_examples=40, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])


def _model(nodes: list[onnx.NodeProto], inputs: dict[str, tuple[int, ...]],
           output: str, shape: tuple[int, ...], consts: dict[str, np.ndarray]
           ) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, "gemm",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs.items()],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, shape)],
        [numpy_helper.from_array(v, n) for n, v in consts.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


def _check(model: onnx.ModelProto, feeds: dict[str, np.ndarray], kernel: str,
           orientation: str = "chosen", target: str = "x86_64") -> CompiledModel:
    """Compiled == interpreter, one thread == two, and the layer ran ``kernel``;
    returns the compiled model.

    ``orientation``: "chosen" by the compiler, "columns" (vectors along N), or
    "rows:C:V" / "rows:C:V:kblocks" (vectors along M, tile C columns by V vectors,
    with K in blocks of one group of taps), which a layer takes if the tile fits.
    """
    graph = verify(import_onnx(model))
    expected = run(graph, feeds)
    with ExitStack() as patches:
        if orientation == "columns":
            patches.enter_context(mock.patch.object(gemm, "ROW_TILES", ()))
        elif orientation.startswith("rows"):
            cols, vectors = map(int, orientation.split(":")[1:3])
            patches.enter_context(mock.patch.object(gemm, "ROW_TILES", ((cols, vectors),)))
            patches.enter_context(mock.patch.object(  # vectors along M always cheaper
                gemm, "_cycles", lambda *args, vector_rows=False, **kwargs: float(not vector_rows)))
            if orientation.endswith("kblocks"):
                for limit in ("ROW_PANEL_BYTES", "K_BLOCK_BYTES", "PARTIAL_BYTES"):
                    patches.enter_context(mock.patch.object(gemm, limit, 1))
        compiled = patcc.compile(model, target=target)
    blocks = [c.notes["block"] for c in compiled.plan.codes if c.kernel.startswith("gemm")]
    kernels = [c.kernel for c in compiled.plan.codes if c.layer.op in ("Conv", "Dense")]
    where = f"{graph}\nkernels {kernels}, blocks {blocks}"
    assert kernels and all(k.startswith(kernel) for k in kernels), where
    if orientation == "columns":
        assert all("vx" not in block for block in blocks), where
    got = run_with_threads(compiled.load(num_threads=1), feeds, threads=(1, 2))
    for name, value in expected.items():
        assert_close(got[name], value, f"{name} of {where}")
    return compiled


@st.composite
def gemm_convs(draw: st.DrawFn) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """A dense conv (+ residual) (+ activation) sized to cross tiles and tasks."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    groups = draw(st.sampled_from((1, 1, 1, 2, 3)))
    c = groups * draw(st.integers(1, 12))
    o = groups * draw(st.integers(1, 40))
    if groups > 1 and c == o == groups:  # depthwise: the pattern kernel's, not the GEMM's
        o = 2 * groups
    n, h, w = draw(st.integers(1, 2)), draw(st.integers(1, 20)), draw(st.integers(1, 20))
    kh, kw = draw(st.sampled_from(((1, 1), (1, 1), (3, 3), (3, 3), (2, 3), (5, 5), (7, 7))))
    s = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    d = (draw(st.sampled_from((1, 1, 2))), draw(st.sampled_from((1, 1, 2))))
    pads = tuple(draw(st.integers(0, 3)) for _ in range(4))
    if h + pads[0] + pads[2] < (kh - 1) * d[0] + 1 or w + pads[1] + pads[3] < (kw - 1) * d[1] + 1:
        pads, d = (kh - 1, kw - 1, kh - 1, kw - 1), (1, 1)
    ho = window_out(h, kh, s[0], pads[0], pads[2], d[0])
    wo = window_out(w, kw, s[1], pads[1], pads[3], d[1])
    out = (n, o, ho, wo)
    weight = (rng.standard_normal((o, c // groups, kh, kw))
              / np.sqrt(c // groups * kh * kw)).astype(np.float32)
    consts = {"w": weight, "b": rng.standard_normal(o).astype(np.float32)}
    feeds = {"x": rng.standard_normal((n, c, h, w)).astype(np.float32)}
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["y"], kernel_shape=[kh, kw],
                              strides=list(s), dilations=list(d), pads=list(pads),
                              group=groups)]
    last = "y"
    if draw(st.booleans()):
        feeds["r"] = rng.standard_normal(out).astype(np.float32)
        nodes.append(helper.make_node("Add", [last, "r"], ["sum"]))
        last = "sum"
    act = draw(st.sampled_from((None, "Relu", "Sigmoid")))
    if act:
        nodes.append(helper.make_node(act, [last], ["act"]))
        last = "act"
    inputs = {name: value.shape for name, value in feeds.items()}
    return _model(nodes, inputs, last, out, consts), feeds


ORIENTATIONS = ("chosen", "columns", "rows:8:2", "rows:7:3", "rows:5:1", "rows:3:2:kblocks",
                "rows:8:2:kblocks")


@examples
@given(gemm_convs(), st.sampled_from(ORIENTATIONS), st.sampled_from(runnable_x86_tags()))
def test_gemm_conv_matches_interpreter(case: tuple[onnx.ModelProto, dict[str, np.ndarray]],
                                       orientation: str, tag: str) -> None:
    _check(*case, kernel="gemm", orientation=orientation, target=tag)


@pytest.mark.parametrize("tag", X86_TAGS)
def test_forced_orientations_are_taken(tag: str) -> None:
    # A 14x14 image: 7 divides its rows, so each forced tile that fits the target's
    # registers is used as asked.
    target = runnable_target(tag)
    rng = np.random.default_rng(0)
    consts = {"w": rng.standard_normal((40, 24, 1, 1)).astype(np.float32),
              "b": rng.standard_normal(40).astype(np.float32)}
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"])
    model = _model([node], {"x": (1, 24, 14, 14)}, "y", (1, 40, 14, 14), consts)
    feeds = {"x": rng.standard_normal((1, 24, 14, 14)).astype(np.float32)}
    mr, nr = gemm.register_tile(target.vector_registers)
    vectors = max(v for v in (1, 2, 3) if gemm.tile_registers(7, v) <= target.vector_registers)
    for orientation, block, k_blocks in (
            ("columns", f"{mr}x{nr}v", None), (f"rows:7:{vectors}", f"{vectors}vx7", None),
            ("rows:7:1:kblocks", "1vx7", 24)):
        (code,) = _check(model, feeds, kernel="gemm", orientation=orientation,
                         target=tag).plan.codes
        assert (code.notes["block"], code.notes.get("k_blocks")) == (block, k_blocks)


@examples
@given(st.integers(1, 20), st.integers(1, 300), st.integers(1, 150), st.booleans(),
       st.integers(0, 2**32 - 1), st.sampled_from(runnable_x86_tags()))
def test_gemm_dense_matches_interpreter(m: int, k: int, n: int, relu: bool, seed: int,
                                        tag: str) -> None:
    rng = np.random.default_rng(seed)
    consts = {"w": rng.standard_normal((n, k)).astype(np.float32),
              "b": rng.standard_normal(n).astype(np.float32)}
    nodes = [helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=1)]
    if relu:
        nodes.append(helper.make_node("Relu", ["y"], ["z"]))
    model = _model(nodes, {"x": (m, k)}, nodes[-1].output[0], (m, n), consts)
    dots = m <= GEMV_MAX_ROWS and k >= get_target(tag).vector_width
    _check(model, {"x": rng.standard_normal((m, k)).astype(np.float32)},
           kernel="gemv" if dots else "gemm", target=tag)


@examples
@given(st.integers(1, GEMV_MAX_ROWS), st.integers(1, 3000), st.integers(1, 700),
       st.sampled_from((None, "Relu", "Sigmoid")), st.integers(0, 2**32 - 1),
       st.sampled_from(runnable_x86_tags()))
def test_gemv_dense_matches_interpreter(m: int, k: int, n: int, activation: str | None,
                                        seed: int, tag: str) -> None:
    """A classifier on a few rows runs as dot products (``gemv``): K across whole
    vectors and a tail, N across register blocks of rows and tasks, with the last
    task's rows cut short, and a fused activation."""
    width = get_target(tag).vector_width
    k = max(k, width)
    rng = np.random.default_rng(seed)
    consts = {"w": rng.standard_normal((n, k)).astype(np.float32),
              "b": rng.standard_normal(n).astype(np.float32)}
    nodes = [helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=1)]
    if activation:
        nodes.append(helper.make_node(activation, ["y"], ["z"]))
    model = _model(nodes, {"x": (m, k)}, nodes[-1].output[0], (m, n), consts)
    _check(model, {"x": rng.standard_normal((m, k)).astype(np.float32)}, kernel="gemv",
           target=tag)


def test_inside_is_the_range_that_reads_the_input() -> None:
    # u*2 - 1 in [0, 5) for u in [0, 4): u = 1, 2 (u = 3 reads row 5)
    assert inside(5, 2, -1, 4) == (1, 3)
    assert inside(5, 1, 0, 7) == (0, 5)
    assert inside(3, 1, -4, 2) == (2, 2)  # the whole range is padding


def test_planes_of_a_strided_padded_conv() -> None:
    # 3x3, stride 2, pad 1, 8x8 -> 4x4: taps at rows/columns 0, 1, 2 of the padded
    # input are phases 0, 1, 0 with shifts 0, 0, 1; planes are (4 + 1) x (4 + 1).
    layer = Conv(name="c", inputs=("x",), outputs=("y",),
                 weight=np.zeros((1, 1, 3, 3), np.float32), bias=np.zeros(1, np.float32),
                 strides=(2, 2), pads=(1, 1, 1, 1))
    plane = 25
    shift = {0: (0, 0), 1: (1, 0), 2: (0, 1)}  # tap row/column -> (phase, shift)

    def offset(i: int, j: int) -> int:
        (pi, si), (pj, sj) = shift[i], shift[j]
        return (2 * pi + pj) * plane + si * 5 + sj

    expected = _Planes(((0, 0), (0, 1), (1, 0), (1, 1)), 5, 5,
                       tuple(offset(i, j) for i in range(3) for j in range(3)), False)
    assert _planes(layer, 8, (4, 4)) == expected


def test_unpadded_unstrided_conv_reads_its_input_in_place() -> None:
    layer = Conv(name="c", inputs=("x",), outputs=("y",),
                 weight=np.zeros((1, 1, 2, 3), np.float32), bias=np.zeros(1, np.float32),
                 dilations=(2, 1))
    assert _planes(layer, 9, (4, 7)) == _Planes(((0, 0),), 6, 9, (0, 1, 2, 18, 19, 20), True)
