"""Every kernel's register blocks come from the target under test: for each CPU tag
(32 x 16 lanes, 16 x 8 lanes, 32 x 4 lanes) every schedule the tuner is offered for a
representative layer of each kernel family is one the layer can run with, and its
inner loops, read back from the compiled assembly, spill no vector register (at
most one general-purpose value is read back from the stack per iteration). The one
exception, bounded, is the GEMM's full tile on x86 (``X86_GEMM_SPILLS_PER_TAP``).

These tests only compile (to assembly), so they run for every tag on any host.
"""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from patcc.backends.llvm import codegen, mca, toolchain
from patcc.backends.llvm.conv import conv_schedules
from patcc.backends.llvm.lowering import LoweringContext, WeightBlob
from patcc.backends.target import get_target
from patcc.frontends.onnx import import_onnx
from patcc.ir import Graph
from patcc.passes import BACKEND_PIPELINE, run_pipeline
from patcc.tuning import candidate_graph
from support.onnx_gen import CENTRE_PLUS_3_MASKS
from support.targets import CPU_TAGS

LAYERS = {
    # name: (in channels, out channels, image, kernel, stride, groups, style)
    "pattern 56x56": (16, 16, 56, 3, 1, 1, "pattern"),
    "pattern 28x28 stride 2": (16, 16, 56, 3, 2, 1, "pattern"),
    "pattern 14x14": (32, 16, 14, 3, 1, 1, "pattern"),
    "pattern 7x7": (32, 16, 7, 3, 1, 1, "pattern"),
    "depthwise 28x28": (24, 24, 28, 3, 1, 24, "dense"),
    "depthwise 28x28 stride 2": (24, 24, 56, 3, 2, 24, "dense"),
    "depthwise patterns 14x14": (24, 24, 14, 3, 1, 24, "pattern"),
    "sparse 1x1 28x28": (32, 48, 28, 1, 1, 1, "sparse"),
    "sparse 1x1 7x7": (64, 32, 7, 1, 1, 1, "sparse"),
    "dense 3x3 56x56": (16, 32, 56, 3, 1, 1, "dense"),
    "dense 3x3 14x14": (32, 32, 14, 3, 1, 1, "dense"),
    "dense 7x7 stride 2": (3, 16, 56, 7, 2, 1, "dense"),
    "dense 1x1 14x14": (32, 32, 14, 1, 1, 1, "dense"),
}

X86_GEMM_SPILLS_PER_TAP = 3
"""On x86, LLVM 19 clusters the loads of neighbouring taps of the GEMM's multi-tap
steps and spills a few of them in its full register tile (6 x 4 vectors on AVX-512,
4 x 3 on AVX2; measured faster than the spill-free smaller tiles, see
``patcc.backends.llvm.gemm.register_tile``): bounded here so that a regression (a
tile too large for the registers spills several vectors per FMA) still fails."""


def _layer_graph(spec: tuple[int, int, int, int, int, int, str]) -> Graph:
    c, o, size, k, stride, groups, style = spec
    rng = np.random.default_rng(c * o + size)
    weight = rng.standard_normal((o, c // groups, k, k)).astype(np.float32)
    if style == "pattern":
        library = CENTRE_PLUS_3_MASKS[rng.choice(len(CENTRE_PLUS_3_MASKS), 8, replace=False)]
        masks = library[rng.integers(0, 8, (o, c // groups))]
        if groups == 1:
            masks &= (rng.random((o, c)) < 0.4)[:, :, None, None]
        weight *= masks
    elif style == "sparse":
        weight *= rng.random(weight.shape) < 0.5
    out = (size + 2 * (k // 2) - k) // stride + 1
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], strides=[stride, stride],
                            pads=[k // 2] * 4, group=groups)
    graph = helper.make_graph(
        [node], "registers", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                            [1, c, size, size])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, o, out, out])],
        [numpy_helper.from_array(weight, "w"),
         numpy_helper.from_array(rng.standard_normal(o).astype(np.float32), "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)],
                              ir_version=8)
    return run_pipeline(import_onnx(model), BACKEND_PIPELINE)


@pytest.mark.parametrize("tag", CPU_TAGS)
@pytest.mark.parametrize("name", sorted(LAYERS))
def test_every_candidate_fits_the_registers(name: str, tag: str) -> None:
    target = get_target(tag)
    graph = _layer_graph(LAYERS[name])
    (layer,) = graph.convs()
    candidates = conv_schedules(layer, LoweringContext(dict(graph.shapes), target,
                                                       WeightBlob()))
    every = conv_schedules(layer, LoweringContext(dict(graph.shapes), target, WeightBlob()),
                           every=True)
    assert candidates and all(s in every for s in candidates)  # legal schedules
    copies, chosen = candidate_graph(layer, graph, list(candidates))
    plan = codegen.plan_module(copies, target, chosen)
    asm = toolchain.emit_assembly(toolchain.optimize(codegen.emit_module(plan), target),
                                  target)
    loops = [lp for lp in mca.parse_inner_loops(asm, target.arch) if lp.fmas]
    for index, code in enumerate(plan.codes):
        schedule = code.notes["schedule"]
        mine = [lp for lp in loops if lp.layer == index]
        assert mine, f"{schedule}: no inner loop with FMAs found"
        for lp in mine:
            where = (f"{name} on {tag}, {schedule}, loop {lp.name}: {lp.spills} spills, "
                     f"{lp.reloads} reloads, {lp.vector_spills} of vectors")
            if schedule.startswith("gemm") and target.arch == "x86_64":
                taps = LAYERS[name][3] ** 2
                assert lp.vector_spills <= X86_GEMM_SPILLS_PER_TAP * taps, where
                assert lp.spills + lp.reloads == lp.vector_spills, where
            else:
                assert lp.vector_spills == 0, where
                # a loop-invariant pointer or bound read back once is all that
                # general-purpose registers may lose to the loops around
                assert lp.spills + lp.reloads <= 1, where


def test_the_register_files_differ_as_the_tags_say() -> None:
    # The three register files the tests above cover.
    shapes = {tag: (get_target(tag).vector_registers, get_target(tag).vector_width)
              for tag in CPU_TAGS}
    assert shapes == {"x86_64-avx512": (32, 16), "x86_64-avx2": (16, 8),
                      "aarch64-android": (32, 4)}


def test_spills_are_read_from_the_assembly() -> None:
    asm = """\
.LBB0_2:                                # %L0.k0.body
                                        # =>This Inner Loop Header: Depth=1
\tvmovups\t%ymm3, 32(%rsp)                 # 32-byte Spill
\tvfmadd231ps\t%ymm1, %ymm2, %ymm3
\tvmovups\t32(%rsp), %ymm4                 # 32-byte Reload
\tvfmadd231ps\t64(%rsp), %ymm2, %ymm4     # 32-byte Folded Reload
\tmovq\t8(%rsp), %rax                      # 8-byte Reload
\tjne\t.LBB0_2
"""
    (loop,) = mca.parse_inner_loops(asm, "x86_64")
    assert (loop.fmas, loop.spills, loop.reloads, loop.vector_spills) == (2, 1, 3, 3)
