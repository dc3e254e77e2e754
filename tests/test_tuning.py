"""Per-layer schedules and the tuner.

Every schedule a conv offers the tuner must compute the same function: each one of
random pattern-pruned, depthwise and dense convs is compiled and checked against the
interpreter. The tuner itself is checked with a stand-in clock (which candidate wins,
what the cache keeps, when it is consulted) and once with the real one.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import patcc
from patcc import tuning
from patcc.backends.llvm.conv import VARIETY_MARGIN, conv_options, conv_schedules
from patcc.backends.llvm.lowering import LoweringContext, Schedule, WeightBlob
from patcc.backends.llvm.pattern import block_fits, pattern_blocks
from patcc.backends.target import get_target
from patcc.compiler import build
from patcc.errors import PatccError
from patcc.frontends.onnx import import_onnx
from patcc.ir import Graph
from patcc.passes import BACKEND_PIPELINE, run_pipeline
from patcc.runtime import run
from support.compare import assert_close, run_with_threads
from support.onnx_gen import ModelBuilder, activation, conv
from support.targets import CPU_TAGS, X86_TAGS, runnable_target


def _graph(case: object) -> Graph:
    return run_pipeline(import_onnx(case.model), BACKEND_PIPELINE)  # type: ignore[attr-defined]


def _context(graph: Graph, target: str = "x86_64") -> LoweringContext:
    return LoweringContext(dict(graph.shapes), get_target(target), WeightBlob())


@st.composite
def conv_cases(draw: st.DrawFn, pattern: bool | None = None) -> object:
    """One conv (pattern-pruned, depthwise, grouped or dense) on an image sized to
    cross register blocks, the flat layout (7x7) or several vector tiles per row."""
    b = ModelBuilder(13, draw(st.integers(0, 2**32 - 1)))
    h, w = draw(st.sampled_from(((7, 7), (5, 6), (14, 14), (9, 23), (12, 40))))
    x = b.input((draw(st.sampled_from((1, 1, 2))), draw(st.integers(1, 12)), h, w))
    y = conv(draw, b, x, pattern=pattern)
    if draw(st.booleans()):
        y = activation(draw, b, y)
    return b.build([y])


def _check_every_schedule(case: object) -> int:
    graph = _graph(case)
    expected = run(graph, case.feeds)  # type: ignore[attr-defined]
    ctx = _context(graph)
    checked = 0
    for layer in graph.convs():
        for schedule in conv_schedules(layer, ctx):
            compiled = build(graph, ctx.target, {layer.name: schedule})
            (code,) = [c for c in compiled.plan.codes if c.layer.name == layer.name]
            assert code.notes["schedule"] == str(schedule)
            got = run_with_threads(compiled.load(num_threads=1),
                                   case.feeds)  # type: ignore[attr-defined]
            for name, value in expected.items():
                assert_close(got[name], value, f"{name} under {schedule}\n{graph}")
            checked += 1
    return checked


@settings(max_examples=25, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(conv_cases(pattern=True))
def test_every_schedule_of_a_pattern_conv_matches_the_interpreter(case: object) -> None:
    assert _check_every_schedule(case) >= 1


@settings(max_examples=15, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(conv_cases(pattern=False))
def test_every_schedule_of_other_convs_matches_the_interpreter(case: object) -> None:
    assert _check_every_schedule(case) >= 1


def _pattern_graph(seed: int = 0, hw: tuple[int, int] = (14, 14), removed: float = 0.5,
                   scale: float = 1.0) -> Graph:
    """A 3x3 pattern conv, 16 -> 24 channels, kernels removed at random, after the
    backend passes; ``scale`` multiplies the weights (the sparsity stays)."""
    rng = np.random.default_rng(seed)
    b = ModelBuilder(13, seed)
    x = b.input((1, 16, *hw))
    masks = b.pattern_library()[rng.integers(len(b.pattern_library()), size=(24, 16))]
    masks &= (rng.random((24, 16)) >= removed)[..., None, None]
    weight = np.where(masks, scale * rng.standard_normal((24, 16, 3, 3)), 0).astype(np.float32)
    (y,) = b.node("Conv", [x, b.const(weight, "w")], [(1, 24, *hw)], pads=[1, 1, 1, 1])
    return run_pipeline(import_onnx(b.build([y]).model), BACKEND_PIPELINE)


@pytest.mark.parametrize("tag", CPU_TAGS)
def test_cost_model_order_of_pattern_blocks(tag: str) -> None:
    # Every block the cost model ranks fits the target's registers; tall blocks share
    # the most loads between rows; where half a vector holds a 7x7 row, the flat tile
    # of the whole image comes first; where a lane shift costs several instructions
    # (AVX2), loads across cache lines beat aligned loads with shuffles.
    target = get_target(tag)
    for hw in ((56, 56), (14, 14), (7, 7)):
        graph = _pattern_graph(hw=hw)
        (layer,) = graph.convs()
        blocks = pattern_blocks(layer, _context(graph, tag))
        assert len(set(blocks)) == len(blocks) > 1, (hw, blocks)
        for block in blocks:
            rows, nvec = _block_shape(block, hw, target.vector_width)
            assert block_fits(target, rows, nvec, 4, aligned=block.endswith("a")), block
        first = blocks[0]
        if 2 * hw[1] <= target.vector_width:
            assert first.startswith("flat"), (hw, blocks)
        else:
            assert _block_shape(first, hw, target.vector_width)[0] >= min(4, hw[0]), (hw, blocks)
        if target.lane_shift_ops > 1:
            assert not first.endswith("a"), (hw, blocks)


def _block_shape(block: str, hw: tuple[int, int], width: int) -> tuple[int, int]:
    """(rows, vectors) of a pattern-kernel block name; a flat tile is one row of vectors."""
    if block.startswith("flat"):
        return 1, -(-hw[0] * (hw[1] + 2) // width)
    rows, _, vectors = block.rstrip("a").rstrip("v").partition("r")
    return int(rows), int(vectors)


@pytest.mark.parametrize("tag", X86_TAGS)
@pytest.mark.parametrize("hw", [(12, 40), (14, 14), (7, 7), (5, 6)])
def test_every_pattern_block_matches_the_interpreter(hw: tuple[int, int], tag: str) -> None:
    # The tuner is offered the cost model's first few: here those and a spread of
    # the others (up to 8 rows by 4 vectors, aligned and not), which it never sees.
    target = runnable_target(tag)
    graph = _pattern_graph(hw=hw, seed=sum(hw))
    (layer,) = graph.convs()
    feeds = {name: np.random.default_rng(1).standard_normal(t.shape).astype(np.float32)
             for name, t in graph.inputs.items()}
    expected = run(graph, feeds)
    blocks = pattern_blocks(layer, _context(graph, tag))
    assert any(b.endswith("a") for b in blocks) and any(not b.endswith("a") for b in blocks)
    for block in blocks[:6] + blocks[6::max(1, len(blocks) // 6)]:
        compiled = build(graph, target, {layer.name: Schedule("pattern", block)})
        got = run_with_threads(compiled.load(num_threads=2), feeds)
        for name, value in expected.items():
            assert_close(got[name], value, f"{name} under {block} at {hw}")


def test_pattern_convs_can_run_the_dense_kernel_where_the_model_finds_it_close() -> None:
    # Every GEMM tiling is a schedule of a pattern conv; the tuner times one only
    # when its estimate is near the pattern kernel's, which it is not with 3/4 of the
    # kernels removed.
    graph = _pattern_graph(removed=0.75)
    (layer,) = graph.convs()
    ctx = _context(graph)
    every = conv_schedules(layer, ctx, every=True)
    assert {s.kernel for s in every} == {"pattern", "gemm"}
    assert every[0].kernel == "pattern"
    assert [s.kernel for s in conv_schedules(layer, ctx)] == ["pattern"] * len(
        conv_schedules(layer, ctx))
    costs = dict((str(s), c) for c, s in conv_options(layer, ctx))
    best_gemm = min(c for s, c in costs.items() if s.startswith("gemm"))
    assert best_gemm > (1 + VARIETY_MARGIN) * costs[str(every[0])]


def test_a_schedule_that_does_not_apply_is_a_clear_error() -> None:
    graph = _pattern_graph()
    (layer,) = graph.convs()
    with pytest.raises(PatccError, match="schedule 'pattern:9r9v' does not apply; this layer "
                                         "can use pattern:"):
        build(graph, get_target("x86_64"), {layer.name: Schedule("pattern", "9r9v")})
    with pytest.raises(ValueError, match="expected '<kernel>:<block>'"):
        Schedule.parse("pattern")


class _FakeClock:
    """Stands in for ``time_schedules``: the last candidate of each layer is fastest,
    in every round."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def __call__(self, work, graph, target, threads, progress=False):  # type: ignore[no-untyped-def]
        self.calls.append([f"{layer.name}={s}" for layer, schedules in work for s in schedules])
        return {layer.name: {str(s): [1.0 / (i + 1)] * 5 for i, s in enumerate(schedules)}
                for layer, schedules in work}


@pytest.fixture
def clock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> _FakeClock:
    """The stand-in clock, with the cache in ``tmp_path``."""
    monkeypatch.setenv("PATCC_CACHE_DIR", str(tmp_path))
    fake = _FakeClock()
    monkeypatch.setattr(tuning, "time_schedules", fake)
    return fake


def test_tuning_picks_the_fastest_and_caches_it_by_signature(
        tmp_path: Path, clock: _FakeClock) -> None:
    graph = _pattern_graph()
    (layer,) = graph.convs()
    options = conv_schedules(layer, _context(graph))
    compiled = patcc.compile(graph, tune=True)
    (code,) = compiled.plan.codes
    assert code.notes["schedule"] == str(options[-1])
    assert code.notes["tuned_ms"] == pytest.approx(1.0 / len(options))
    assert code.notes["tuning"] == "tuned"
    assert len(clock.calls) == 1 and len(clock.calls[0]) == len(options)
    stored = json.loads((tmp_path / "tuning.json").read_text())
    assert stored["format"] == tuning.CACHE_FORMAT and len(stored["entries"]) == 1

    # Same sparsity, other weight values: the cache answers.
    again = patcc.compile(_pattern_graph(scale=2.0), tune=True)
    assert len(clock.calls) == 1
    assert again.plan.codes[0].notes["schedule"] == str(options[-1])

    # Other kernels removed: a new signature, timed again.
    patcc.compile(_pattern_graph(seed=1), tune=True)
    assert len(clock.calls) == 2
    assert len(json.loads((tmp_path / "tuning.json").read_text())["entries"]) == 2


def test_only_the_host_is_tuned_and_patcc_tune_0_turns_it_off(
        clock: _FakeClock, monkeypatch: pytest.MonkeyPatch) -> None:
    graph = _pattern_graph()
    portable = patcc.compile(graph, target="x86_64-avx2")  # may deploy to another CPU
    assert clock.calls == [] and "tuned_ms" not in portable.plan.codes[0].notes
    foreign = dataclasses.replace(get_target("x86_64-generic"), tag="arm-test",
                                  triple="aarch64-unknown-linux-gnu")
    with pytest.raises(PatccError, match="cannot tune for arm-test"):
        patcc.compile(graph, target=foreign, tune=True)
    patcc.compile(graph, target="x86_64-avx2", tune=True)  # asked for, and it runs here
    assert len(clock.calls) == 1
    clock.calls.clear()
    monkeypatch.setenv("PATCC_TUNE", "0")
    patcc.compile(graph)
    assert clock.calls == []
    monkeypatch.setenv("PATCC_TUNE", "1")
    patcc.compile(_pattern_graph(seed=1))  # not in the cache (for x86_64-avx2 either)
    assert len(clock.calls) == 1


def test_cli_no_tune(tmp_path: Path, clock: _FakeClock,
                     monkeypatch: pytest.MonkeyPatch) -> None:
    from onnx import save

    from patcc.cli import main

    monkeypatch.setenv("PATCC_TUNE", "1")
    b = ModelBuilder(13, 0)
    x = b.input((1, 4, 8, 8))
    (y,) = b.node("Conv", [x, b.const(np.ones((8, 4, 3, 3), np.float32), "w")], [(1, 8, 8, 8)],
                  pads=[1, 1, 1, 1])
    save(b.build([y]).model, tmp_path / "m.onnx")
    assert main(["compile", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "m.so"),
                 "--no-tune", "-q"]) == 0
    assert clock.calls == []
    assert main(["compile", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "m.so"), "-q"]) == 0
    assert len(clock.calls) == 1


def test_an_unreadable_cache_is_set_aside_with_a_warning(tmp_path: Path) -> None:
    path = tmp_path / "tuning.json"
    path.write_text("{not json")
    with pytest.warns(UserWarning, match="tuning cache unreadable"):
        cache = tuning.TuningCache(path)
    assert cache.entries == {}
    cache.put("k", {"pattern:4r2v": [0.5, 0.6]})
    cache.save()
    assert json.loads(path.read_text())["entries"] == {"k": {"pattern:4r2v": [0.5, 0.6]}}
    path.write_text(json.dumps({"format": tuning.CACHE_FORMAT + 1, "entries": {"x": {}}}))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert tuning.TuningCache(path).entries == {}  # another format: ignored quietly


def test_real_timing_measures_every_candidate(tmp_path: Path) -> None:
    graph = _pattern_graph(hw=(14, 14))  # several candidates on every target
    (layer,) = graph.convs()
    options = conv_schedules(layer, _context(graph))[:2]
    times = tuning.time_schedules([(layer, options)], graph, get_target("x86_64"), threads=2,
                                  runs=3)
    assert set(times[layer.name]) == {str(s) for s in options}
    assert all(len(ts) == 3 and all(0 < t < 1000 for t in ts)
               for ts in times[layer.name].values())
    cache = tuning.TuningCache(tmp_path / "tuning.json")
    result = tuning.tune_graph(graph, get_target("x86_64"), threads=2, cache=cache)
    tuned = result[layer.name]
    fastest = min(tuned.times_ms, key=tuned.times_ms.get)
    assert str(tuned.schedule) == fastest if tuned.verdict in ("model", "tuned") else (
        str(tuned.schedule) == str(conv_schedules(layer, _context(graph))[0]) != fastest)
    assert not tuned.cached
    assert tuning.tune_graph(graph, get_target("x86_64"), threads=2,
                             cache=tuning.TuningCache(tmp_path / "tuning.json"))[
        layer.name].cached


def test_a_changed_code_generator_invalidates_the_signature(
        monkeypatch: pytest.MonkeyPatch) -> None:
    graph = _pattern_graph()
    (layer,) = graph.convs()
    target = get_target("x86_64")
    before = tuning.layer_signature(layer, graph, target, 2)
    assert tuning.layer_signature(layer, graph, target, 2) == before
    assert tuning.layer_signature(layer, graph, target, 1) != before
    monkeypatch.setattr(tuning, "code_generator_fingerprint", lambda: "edited")
    assert tuning.layer_signature(layer, graph, target, 2) != before


def test_the_cost_model_keeps_its_choice_within_the_noise() -> None:
    # The tuner's rule: another candidate must be faster in 3 of 4 rounds and by 2%
    # of the median; else the cost model's choice stays ("noise" when it lost the
    # medians, "model" when it won them).
    first, other, third = (Schedule("pattern", b) for b in ("4r2v", "8r1v", "2r2v"))
    rounds = np.linspace(1.0, 1.1, 20).tolist()

    def samples(a: list[float], b: list[float]) -> dict[str, list[float]]:
        return {str(first): a, str(other): b, str(third): [2.0] * 20}

    faster = [t * 0.9 for t in rounds]
    assert tuning.choose([first, other, third], samples(rounds, faster)) == (other, "tuned")
    barely = [t * 0.99 for t in rounds]  # faster every round, by 1%
    assert tuning.choose([first, other, third], samples(rounds, barely)) == (first, "noise")
    sometimes = [t * (0.8 if i % 2 else 1.1) for i, t in enumerate(rounds)]  # half the rounds
    assert tuning.choose([first, other, third], samples(rounds, sometimes)) == (first, "noise")
    slower = [t * 1.2 for t in rounds]
    assert tuning.choose([first, other, third], samples(rounds, slower)) == (first, "model")
    assert tuning.choose([first, other, third], {**samples(rounds, slower),
                                                 str(third): faster}) == (third, "tuned")


def test_candidates_of_a_layer_share_one_module() -> None:
    graph = _pattern_graph()
    (layer,) = graph.convs()
    options = conv_schedules(layer, _context(graph))
    candidates, chosen = tuning.candidate_graph(layer, graph, list(options))
    assert [c.name for c in candidates.layers] == [f"{layer.name}#{i}"
                                                   for i in range(len(options))]
    assert list(chosen.values()) == options
    compiled = build(candidates, get_target("x86_64"), chosen)
    assert [c.notes["schedule"] for c in compiled.plan.codes] == [str(s) for s in options]
    feeds = {name: np.random.default_rng(2).standard_normal(t.shape).astype(np.float32)
             for name, t in candidates.inputs.items()}
    outs = compiled.load(num_threads=1).run(feeds)
    (expected,) = run(graph, feeds).values()
    for name in candidates.outputs:
        assert_close(outs[name], expected, name)
