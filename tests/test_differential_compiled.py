"""Differential tests: random ONNX models compiled to native code vs the references.

Each example builds a small model (``tests/support/onnx_gen.py``), compiles it with
``patcc.compile`` for ``x86_64-avx2`` and for ``x86_64-avx512`` (where this CPU runs
them: an AVX2 machine skips the second), runs the shared object with one thread and
then two (the outputs must be bitwise identical: how the work is split must not
change a result), and compares every output with the reference interpreter on the
imported graph and with onnxruntime, within 1e-4 of the reference's largest
magnitude (at least 1).

``PATCC_FUZZ_EXAMPLES`` sets the examples (default ``DEFAULT_EXAMPLES`` = 25); each
target gets three fifths of them per test and per single-layer operator, whole
graphs four times that. A single layer compiles in ~0.1 s and a small graph in
~0.35 s, so the default (2 targets x (24 operators x 15 + 60 graphs + 15 conv stacks
+ 15 pattern convs) = 900 examples) runs in about 2 minutes on two cores. The search
is derandomized, so CI runs the same examples every time.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

import patcc
from patcc.backends.llvm.conv import conv_options, conv_schedules
from patcc.backends.llvm.lowering import LoweringContext, WeightBlob
from patcc.compiler import CompiledModel, build
from patcc.frontends.onnx import import_onnx
from patcc.ir import Conv, Sparsity, verify
from patcc.runtime import run
from support.compare import assert_close, run_onnxruntime, run_with_threads
from support.fuzz import fuzz_examples, requested_fuzz_examples
from support.onnx_gen import (
    SINGLE_OPS,
    ModelBuilder,
    OnnxCase,
    activation,
    batch_norm,
    conv,
    pattern_conv_models,
    single_layer_models,
    small_graph_models,
)
from support.targets import X86_TAGS, runnable_target, runnable_x86_tags
from support.tools import IN_CI

DEFAULT_EXAMPLES = 25
EXAMPLES = fuzz_examples(DEFAULT_EXAMPLES)
PER_TARGET = max(1, EXAMPLES * 3 // 5)
"""Every test runs for each x86 target this CPU can run (AVX2 and AVX-512 builds),
each with three fifths of the examples: more in all than one target had alone."""

fuzz = settings(
    max_examples=PER_TARGET,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                           HealthCheck.filter_too_much],
)


def assert_compiled_matches(case: OnnxCase, tag: str) -> CompiledModel:
    """Compile ``case`` for ``tag``; its outputs (1 thread == 2 threads, bitwise)
    match the interpreter and onnxruntime. Returns the compiled model for further
    checks."""
    graph = verify(import_onnx(case.model, case.input_shapes))
    note(str(graph))
    expected = run(graph, case.feeds)
    onnxrt = run_onnxruntime(case.model, case.feeds, case.output_names)
    compiled = patcc.compile(case.model, target=tag, input_shapes=case.input_shapes)
    note("kernels: " + ", ".join(f"{c.layer.name}={c.kernel}" for c in compiled.plan.codes))
    info = compiled.info
    assert [t["name"] for t in info["outputs"]] == list(case.output_names)
    assert [tuple(t["shape"]) for t in info["outputs"]] == list(case.output_shapes)
    ours = run_with_threads(compiled.load(num_threads=1), case.feeds, threads=(1, 2))
    assert tuple(ours) == case.output_names
    for name in case.output_names:
        assert_close(ours[name], expected[name], f"{name} vs interpreter")
        assert_close(ours[name], onnxrt[name], f"{name} vs onnxruntime")
    return compiled


def assert_pattern_kernels(compiled: CompiledModel) -> None:
    """Every pattern-style conv runs the pattern kernel (or the GEMM, where the cost
    model finds that cheaper: tiny layers), and no other conv does."""
    ctx = LoweringContext(dict(compiled.graph.shapes), compiled.target, WeightBlob())
    for code in compiled.plan.codes:
        if isinstance(code.layer, Conv):
            is_pattern = code.layer.sparsity is Sparsity.PATTERN
            first = conv_options(code.layer, ctx)[0][1].kernel
            assert (code.kernel == "pattern") == (is_pattern and first == "pattern"), (
                code.layer.name, code.kernel)


@pytest.mark.parametrize("tag", X86_TAGS)
@pytest.mark.parametrize("op", sorted(set(SINGLE_OPS)))
def test_single_layer_compiled(op: str, tag: str) -> None:
    # One hypothesis run per operator kind, so each gets its examples of its own.
    runnable_target(tag)

    @fuzz
    @given(single_layer_models(ops=(op,)))
    def check(case: OnnxCase) -> None:
        assert_pattern_kernels(assert_compiled_matches(case, tag))

    check()


@pytest.mark.parametrize("tag", X86_TAGS)
@settings(fuzz, max_examples=4 * PER_TARGET)  # graphs find the most bugs
@given(case=small_graph_models())
def test_small_graph_compiled(case: OnnxCase, tag: str) -> None:
    runnable_target(tag)
    compiled = assert_compiled_matches(case, tag)
    assert_pattern_kernels(compiled)
    # every pattern conv the generator wrote is detected (it runs the pattern kernel
    # or, where the cost model finds it cheaper, the GEMM: assert_pattern_kernels)
    detected = [c for c in compiled.plan.codes
                if isinstance(c.layer, Conv) and c.layer.sparsity is Sparsity.PATTERN]
    assert len(detected) == len(case.pattern_convs)


@pytest.mark.parametrize("tag", X86_TAGS)
@fuzz
@given(case=pattern_conv_models())
def test_pattern_conv_compiled(case: OnnxCase, tag: str) -> None:
    runnable_target(tag)
    compiled = assert_compiled_matches(case, tag)
    (code,) = [c for c in compiled.plan.codes if isinstance(c.layer, Conv)]
    if code.kernel != "pattern":  # the GEMM was estimated cheaper: run the pattern kernel too
        ctx = LoweringContext(dict(compiled.graph.shapes), compiled.target, WeightBlob())
        schedule = next(s for s in conv_schedules(code.layer, ctx, every=True)
                        if s.kernel == "pattern")
        forced = build(compiled.graph, compiled.target, {code.layer.name: schedule})
        got = run_with_threads(forced.load(num_threads=1), case.feeds, threads=(1, 2))
        for name, value in run(compiled.graph, case.feeds).items():
            assert_close(got[name], value, f"{name} under {schedule}")


@st.composite
def conv_stack_models(draw: st.DrawFn) -> OnnxCase:
    """2-4 convs in a chain with wider channels (up to 40) than the generic
    generator, so the GEMM's register blocks and the pattern kernel's loops see
    full blocks and remainders; each conv randomly pattern-pruned (a model-wide
    library, random connectivity), grouped or depthwise, strided, padded, dilated,
    maybe followed by BatchNormalization and an activation."""
    b = ModelBuilder(draw(st.integers(11, 21)), draw(st.integers(0, 2**32 - 1)))
    shape = (draw(st.integers(1, 2)), draw(st.integers(1, 40)),
             draw(st.integers(3, 14)), draw(st.integers(3, 14)))
    y = b.input(shape)
    for _ in range(draw(st.integers(2, 4))):
        wide = draw(st.booleans())
        y = conv(draw, b, y, out_channels=draw(st.integers(1, 40)) if wide else None)
        if draw(st.booleans()):
            y = batch_norm(draw, b, y)
        if draw(st.booleans()):
            y = activation(draw, b, y, kinds=("Relu", "Clip", "LeakyRelu"))
    return b.build([y])


@pytest.mark.parametrize("tag", X86_TAGS)
@fuzz
@given(case=conv_stack_models())
def test_conv_stack_compiled(case: OnnxCase, tag: str) -> None:
    runnable_target(tag)
    compiled = assert_compiled_matches(case, tag)
    assert_pattern_kernels(compiled)


def test_fuzz_budget() -> None:
    """This file runs at least 200 examples (in CI always; locally unless
    PATCC_FUZZ_EXAMPLES asks for fewer)."""
    if requested_fuzz_examples() is not None and not IN_CI:
        pytest.skip("PATCC_FUZZ_EXAMPLES set: a local run may be smaller")
    total = (len(set(SINGLE_OPS)) + 4 + 2) * PER_TARGET * len(runnable_x86_tags())
    assert total >= 200, f"only {total} examples; raise PATCC_FUZZ_EXAMPLES"


# ---------------------------------------------------------------------------------------
# Regressions the fuzzers found (run in a child process: the bug aborts the interpreter)
# ---------------------------------------------------------------------------------------

COMPILE_SOFTMAX_FOR_ZEN = """
import sys
from onnx import TensorProto, helper
import patcc
from patcc.backends.target import Target

n = int(sys.argv[1])
graph = helper.make_graph(
    [helper.make_node("Softmax", ["x"], ["y"], axis=-1)], "softmax",
    [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, n])],
    [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, n])])
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
zen = Target(tag="zen", triple="x86_64-unknown-linux-gnu", cpu=sys.argv[2], features="",
             vector_bits=512, vector_registers=32, elf_arch="x86_64")
patcc.compile(model, target=zen)  # compile only: runs on any x86-64 host
"""


# Regression: a scalar Softmax loop compiled for Zen 4/5 tripped an assertion in
# LLVM's loop vectorizer ('VPlan cost model and legacy cost model disagreed') and the
# bundled llvmlite aborted the whole process. Softmax is now written with explicit
# vectors. Compiled in a child process so a regression cannot kill the test run.
@pytest.mark.parametrize("cpu", ["znver4", "znver5"])
@pytest.mark.parametrize("shape", ["72", "75", "191"])
def test_softmax_row_of_72_compiles_for_zen(cpu: str, shape: str) -> None:
    result = subprocess.run([sys.executable, "-c", COMPILE_SOFTMAX_FOR_ZEN, shape, cpu],
                            capture_output=True, text=True, check=False, timeout=300)
    assert result.returncode == 0, (f"compile died with status {result.returncode}: "
                                    f"{result.stderr[-600:]}")


def test_softmax_row_compiles_for_other_cpus() -> None:
    # The same model for a CPU whose cost model always agreed: proves the child script
    # itself is sound.
    result = subprocess.run([sys.executable, "-c", COMPILE_SOFTMAX_FOR_ZEN, "72",
                             "skylake-avx512"], capture_output=True, text=True, check=False,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-600:]


BORDER_POOLS = [  # (input shape, kernel, strides, pads, dilations, ceil_mode)
    ((1, 8, 5, 5), (5, 5), (1, 1), (2, 2, 2, 2), (1, 1), 0),  # YOLO's SPP at 160x160
    ((1, 3, 2, 3), (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 0),
    ((1, 4, 7, 6), (3, 3), (2, 2), (1, 1, 1, 1), (1, 1), 1),
    ((2, 2, 6, 6), (3, 3), (1, 1), (2, 2, 2, 2), (2, 2), 0),
    ((1, 2, 3, 21), (2, 3), (2, 1), (1, 0, 1, 2), (1, 1), 1),
]


@pytest.mark.parametrize("tag", X86_TAGS)
@pytest.mark.parametrize("case", BORDER_POOLS, ids=lambda c: "x".join(map(str, c[0])))
def test_border_max_pools(case: tuple, tag: str) -> None:
    """Max pools whose outputs are mostly border run from a -inf padded copy on the
    stack (``pooling._padded_max_pool``): asserted, and equal to the interpreter and
    onnxruntime."""
    import numpy as np
    from onnx import TensorProto, helper

    shape, kernel, strides, pads, dilations, ceil_mode = case
    node = helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=list(kernel),
                            strides=list(strides), pads=list(pads),
                            dilations=list(dilations), ceil_mode=ceil_mode)
    graph = helper.make_graph([node], "pool",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT,
                                                             ["n", "c", "h", "w"])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    x = np.random.default_rng(len(shape) + shape[-1]).standard_normal(shape).astype(np.float32)
    compiled = patcc.compile(model, runnable_target(tag), tune=False)
    assert compiled.plan.codes[0].notes.get("block") == "padded"
    got = run_with_threads(compiled.load(), {"x": x})["y"]
    assert_close(got, run(import_onnx(model), {"x": x})["y"], "interpreter")
    assert_close(got, run_onnxruntime(model, {"x": x}, ["y"])["y"], "onnxruntime")


@pytest.mark.parametrize("tag", X86_TAGS)
def test_vector_exp_matches_expf(tag: str) -> None:
    """The in-IR exp (``KernelBuilder.exp``; Exp, Sigmoid, SiLU, Tanh, Softmax... use
    it) against float32 expf over its whole range: within 2 ulp where the result is
    normal, inf exactly where expf overflows, subnormals within a few of the smallest,
    NaN kept, e**-inf = 0."""
    import numpy as np
    from onnx import TensorProto, helper

    n = 1 << 16
    graph = helper.make_graph(
        [helper.make_node("Exp", ["x"], ["y"])], "exp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, n + 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, n + 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    x = np.concatenate([np.linspace(-110, 95, n), [np.nan, np.inf, -np.inf]])
    x = x.astype(np.float32)[None]
    got = patcc.compile(model, runnable_target(tag), tune=False).load()(x)[0]
    with np.errstate(over="ignore"):
        ref = np.exp(x[0])
    assert np.isnan(got[-3]) and got[-2] == np.inf and got[-1] == 0.0
    got, ref = got[:-3], ref[:-3]
    assert np.array_equal(np.isinf(got), np.isinf(ref))
    normal = np.isfinite(ref) & (ref >= np.finfo(np.float32).tiny)
    rel = np.abs(got[normal].astype(np.float64) - ref[normal]) / ref[normal]
    assert rel.max() < 2.4e-7, rel.max()
    assert np.abs(got[~normal & np.isfinite(ref)] - ref[~normal & np.isfinite(ref)]).max() \
        <= 4 * np.finfo(np.float32).smallest_subnormal
