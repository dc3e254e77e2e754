"""The workspace planner: live buffers never overlap, offsets are aligned, reuse happens."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from patcc.backends.planning import (
    DEPTHWISE,
    GEMM,
    PATTERN,
    SPARSE,
    Buffer,
    MemoryPlan,
    concat_placements,
    conv_kernels,
    live_ranges,
    naive_peak,
    plan_memory,
    required_compressed_weights,
    required_filter_order,
)
from patcc.errors import BackendError
from patcc.ir import Conv, Graph, TensorType
from patcc.passes import detect_patterns
from support.onnx_gen import nested_concat_model


def live_lower_bound(buffers: list[Buffer]) -> int:
    """The most bytes live at any one step: no plan can need less."""
    steps = range(max((b.last for b in buffers), default=-1) + 1)
    return max((sum(b.size for b in buffers if b.first <= s <= b.last) for s in steps), default=0)


@st.composite
def buffer_sets(draw: st.DrawFn) -> list[Buffer]:
    count = draw(st.integers(1, 60))
    buffers = []
    for i in range(count):
        first = draw(st.integers(0, 40))
        last = draw(st.integers(first, 40))
        # Sizes mix zero, tiny (below the alignment) and large, and repeat often so
        # that tie-breaking is exercised.
        size = draw(st.one_of(st.sampled_from([0, 1, 64, 100, 4096]), st.integers(0, 10**6)))
        buffers.append(Buffer(f"t{i}", size, first, last))
    return buffers


def assert_valid(buffers: list[Buffer], plan: MemoryPlan, alignment: int) -> None:
    """The plan's invariants, checked directly from offsets and sizes."""
    assert set(plan.offsets) == {b.name for b in buffers}
    for b in buffers:
        offset = plan.offsets[b.name]
        assert offset % alignment == 0, (b, offset)
        assert offset + b.size <= plan.peak, (b, offset, plan.peak)
        if b.size == 0:
            assert offset == 0
    for a, b in itertools.combinations(buffers, 2):
        if a.live_with(b) and a.size and b.size:
            start_a, start_b = plan.offsets[a.name], plan.offsets[b.name]
            disjoint = start_a + a.size <= start_b or start_b + b.size <= start_a
            assert disjoint, (a, start_a, b, start_b)
            assert not plan.overlaps(a, b)


@given(buffer_sets(), st.sampled_from([1, 16, 64, 4096]))
def test_live_buffers_never_overlap(buffers: list[Buffer], alignment: int) -> None:
    plan = plan_memory(buffers, alignment)
    assert_valid(buffers, plan, alignment)
    assert plan.peak % alignment == 0
    assert live_lower_bound(buffers) <= plan.peak <= naive_peak(buffers, alignment)


@given(buffer_sets())
def test_deterministic_and_independent_of_input_order(buffers: list[Buffer]) -> None:
    plan = plan_memory(buffers)
    assert plan_memory(list(buffers)) == plan
    # placement order is decided by (size, first, name), so listing order cannot matter
    assert plan_memory(buffers[::-1]) == plan


def test_chain_needs_two_slots() -> None:
    # a -> b -> c -> d: each step reads one buffer and writes the next, so two slots
    # ping-pong, a and c in one, b and d in the other.
    size = 1000
    chain = [Buffer(n, size, i, i + 1) for i, n in enumerate("abcd")]
    plan = plan_memory(chain, alignment=64)
    assert plan.offsets == {"a": 0, "b": 1024, "c": 0, "d": 1024}
    assert plan.peak == 1024 + 1024
    assert naive_peak(chain, alignment=64) == 4 * 1024


def test_largest_first_then_fill_gaps() -> None:
    # big and small1 are live together, small2 only with big: small2 reuses small1's slot
    # (lowest free offset above big), the three fit in big + one small slot.
    buffers = [
        Buffer("small1", 100, 0, 1),
        Buffer("big", 1000, 0, 3),
        Buffer("small2", 100, 2, 3),
    ]
    plan = plan_memory(buffers, alignment=64)
    assert plan.offsets == {"big": 0, "small1": 1024, "small2": 1024}
    assert plan.peak == 1024 + 128


def test_gap_below_a_live_buffer_is_reused() -> None:
    # a sits at 0 and b above it; c is live only with b, so it fits into a's dead
    # bytes below b instead of going on top.
    buffers = [Buffer("a", 1000, 0, 0), Buffer("b", 500, 0, 1), Buffer("c", 400, 1, 1)]
    plan = plan_memory(buffers, alignment=64)
    assert plan.offsets == {"a": 0, "b": 1024, "c": 0}
    assert plan.peak == 1536
    assert_valid(buffers, plan, 64)


def test_zero_size_and_empty() -> None:
    plan = plan_memory([Buffer("empty", 0, 0, 5), Buffer("t", 10, 0, 5)], alignment=64)
    assert plan.offsets == {"empty": 0, "t": 0}
    assert plan.peak == 64
    assert plan_memory([]) == MemoryPlan(offsets={}, peak=0)
    assert naive_peak([]) == 0


@pytest.mark.parametrize(
    ("buffers", "message"),
    [
        ([Buffer("a", 1, 0, 0), Buffer("a", 2, 1, 1)], "'a' is listed twice"),
        ([Buffer("neg", -1, 0, 0)], "'neg' has size -1"),
        ([Buffer("back", 1, 3, 2)], r"'back' is live over steps \[3, 2\]"),
        ([Buffer("early", 1, -1, 2)], r"'early' is live over steps \[-1, 2\]"),
    ],
)
def test_bad_buffers_are_named(buffers: list[Buffer], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        plan_memory(buffers)


@pytest.mark.parametrize("alignment", [0, 3, -64])
def test_alignment_must_be_power_of_two(alignment: int) -> None:
    with pytest.raises(ValueError, match=f"alignment {alignment} must be a power of two"):
        plan_memory([Buffer("a", 1, 0, 0)], alignment)


# -- Concat inputs written in place ------------------------------------------------------


def test_concat_inputs_are_placed_where_it_is_safe() -> None:
    from patcc.frontends.onnx import import_onnx

    graph = import_onnx(nested_concat_model(1))
    placed = concat_placements(graph)
    # computed and read once by a Concat: in place (ab inside y); d is read twice
    # and x is a graph input, so the outer Concat copies them
    block = 4 * 4 * 30
    assert placed == {"a": ("ab", 0), "b": ("ab", block), "ab": ("y", 0),
                      "c": ("y", 2 * block)}
    assert concat_placements(import_onnx(nested_concat_model(2))) == {}  # blocks are strided


@pytest.mark.parametrize("batch", [1, 2])
def test_concat_in_place_computes_the_same(batch: int) -> None:
    import patcc
    from patcc.runtime import run
    from support.compare import assert_close
    from support.targets import runnable_x86_tags

    model = nested_concat_model(batch)
    x = np.random.default_rng(1).standard_normal((batch, 3, 6, 5)).astype(np.float32)
    for tag in runnable_x86_tags():
        compiled = patcc.compile(model, tag, tune=False)
        copies = [(c.kernel, sum(p.tasks for p in c.phases)) for c in compiled.plan.codes
                  if c.layer.op == "Concat"]  # a task per (batch index, copied input)
        assert copies == ([("in-place", 0), ("copy", 2)] if batch == 1
                          else [("copy", 4), ("copy", 8)])
        got = compiled.load(num_threads=2).run({"x": x})
        for name, value in run(compiled.graph, {"x": x}).items():
            assert_close(got[name], value, f"{name} on {tag}, batch {batch}")


def test_live_ranges_follow_views_inputs_and_outputs() -> None:
    """A buffer lives from its first write to its last read, through views (``home``);
    given inputs from step 0, given outputs to the last step; constants get none."""
    steps = [(("x", "w"), ("a",)),     # 0: a = f(x, constant w)
             (("a",), ("b",)),         # 1: b = g(a)
             (("v",), ("c",)),         # 2: reads v, a view of b
             (("c", "x"), ("d",)),     # 3
             (("d",), ("e",))]         # 4
    home = {"v": "b"}.get
    ranges = live_ranges(steps, lambda t: home(t, t))
    assert ranges == {"a": (0, 1), "b": (1, 2), "c": (2, 3), "d": (3, 4), "e": (4, 4)}
    ranges = live_ranges(steps, lambda t: home(t, t), inputs=["x"], outputs=["b", "e"])
    assert ranges["x"] == (0, 3) and ranges["b"] == (1, 4) and ranges["e"] == (4, 4)
    assert "w" not in ranges and "v" not in ranges
    assert live_ranges([], inputs=["x"], outputs=["x"]) == {"x": (0, 0)}


def _conv(weight: np.ndarray, groups: int = 1, pattern: bool = False) -> Conv:
    conv = Conv(name="c", inputs=("x",), outputs=("y",), weight=weight.astype(np.float32),
                bias=np.zeros(weight.shape[0], np.float32), groups=groups,
                pads=(1, 1, 1, 1) if weight.shape[2] == 3 else (0, 0, 0, 0))
    if not pattern:
        return conv
    x = TensorType((1, weight.shape[1] * groups, 6, 6))
    (detected,) = detect_patterns(Graph({"x": x}, (conv,), ("y",))).layers
    assert isinstance(detected, Conv)
    return detected


def test_conv_kernels_name_one_vocabulary_for_both_backends() -> None:
    rng = np.random.default_rng(0)
    dense = rng.standard_normal((8, 8, 3, 3))
    assert conv_kernels(_conv(dense)) == (GEMM,)
    assert conv_kernels(_conv(rng.standard_normal((8, 1, 3, 3)), groups=8)) == (DEPTHWISE,)
    patterned = dense * np.array([[0, 1, 0], [1, 1, 1], [0, 0, 0]])  # one 4-tap pattern
    patterned[0, :3] = 0  # and connectivity
    conv = _conv(patterned, pattern=True)
    assert conv.pattern is not None and conv_kernels(conv) == (PATTERN, GEMM)
    depthwise = _conv(patterned[:, :1], groups=8, pattern=True)
    assert depthwise.pattern is not None and conv_kernels(depthwise) == (PATTERN,)
    pointwise = rng.standard_normal((8, 8, 1, 1))
    assert conv_kernels(_conv(pointwise)) == (GEMM,)
    pointwise[rng.random(pointwise.shape) < 0.5] = 0
    assert conv_kernels(_conv(pointwise)) == (SPARSE, GEMM)
    # the facts kernels require are BackendErrors naming the pass that sets them
    with pytest.raises(BackendError, match="compress_weights"):
        required_compressed_weights(conv)
    with pytest.raises(BackendError, match="reorder_filters"):
        required_filter_order(_conv(pointwise))
