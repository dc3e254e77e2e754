"""ONNX's own node tests (``tests/support/onnx_node.py``) as a conformance suite: every
in-scope test that is not excluded runs on the interpreter and on the native build
against the expected outputs, or is listed in ``onnx_node_not_yet.txt`` with the
error it gives today; listed tests must still fail that way, so the list shrinks
as operators arrive."""

from __future__ import annotations

import collections
from pathlib import Path

import numpy as np
import onnx
import pytest

from patcc.errors import PatccError
from patcc.frontends.onnx import import_onnx
from patcc.frontends.onnx.loader import MAX_OPSET
from patcc.runtime import run
from support.compare import assert_close
from support.onnx_node import NodeCase, node_cases
from support.targets import X86_TAGS, runnable_target

NOT_YET_FILE = Path(__file__).with_name("onnx_node_not_yet.txt")
BATCH = 40
"""Node tests compiled together into one native module (one LLVM run per batch)."""


def not_yet() -> dict[str, str]:
    """Test name -> why patcc cannot compile it yet, from ``onnx_node_not_yet.txt``."""
    listed = {}
    for line in NOT_YET_FILE.read_text().splitlines():
        name, _, reason = line.partition(" ")
        if name and not name.startswith("#"):
            listed[name] = reason.strip()
    return listed


def runnable() -> list[NodeCase]:
    listed = not_yet()
    return [c for c in node_cases() if not c.excluded and c.name not in listed]


def _check(case: NodeCase, got: dict[str, np.ndarray], where: str) -> str | None:
    for name, expected in case.outputs.items():
        try:
            value = got[name]
            assert_close(value, expected.astype(np.float32), f"{case.name} {name}")
        except (AssertionError, KeyError) as e:
            return f"{case.name} ({where}): {str(e).strip().splitlines()[0][:200]}"
    return None


def test_the_suite_counts() -> None:
    cases = node_cases()
    excluded = collections.Counter(c.excluded for c in cases if c.excluded)
    listed = not_yet()
    print(f"\nONNX node tests in scope: {len(cases)}; excluded: {sum(excluded.values())}"
          f" ({dict(excluded)}); not yet supported: {len(listed)}; run: "
          f"{len(cases) - sum(excluded.values()) - len(listed)}")
    assert len(cases) > 400  # the onnx wheel generates them: an empty suite is a bug
    unknown = set(listed) - {c.name for c in cases}
    assert not unknown, f"listed in {NOT_YET_FILE.name} but not a node test: {sorted(unknown)}"


def test_not_yet_supported_tests_fail_clearly() -> None:
    """Each listed test still fails to import with a one-line PatccError; one that
    imports now (an operator arrived) must leave the list."""
    cases = {c.name: c for c in node_cases()}
    imported = []
    for name in not_yet():
        try:
            import_onnx(cases[name].model)
        except PatccError as e:
            assert "\n" not in str(e), name
        else:
            imported.append(name)
    assert not imported, f"these import now; run them (remove from the list): {imported}"


def test_interpreter_passes_the_node_tests() -> None:
    failures = []
    for case in runnable():
        try:
            got = run(import_onnx(case.model), case.inputs)
        except PatccError as e:
            failures.append(f"{case.name}: {e}")
            continue
        problem = _check(case, got, "interpreter")
        if problem:
            failures.append(problem)
    assert not failures, "\n".join(failures)


def _prefixed(case: NodeCase, prefix: str) -> onnx.GraphProto:
    """The case's graph with every name prefixed, so that cases share one model."""
    graph = onnx.GraphProto()
    graph.CopyFrom(case.model.graph)

    def rename(name: str) -> str:
        return prefix + name if name else name

    for node in graph.node:
        node.name = prefix + (node.name or node.op_type)
        node.input[:] = [rename(n) for n in node.input]
        node.output[:] = [rename(n) for n in node.output]
    for value in (*graph.input, *graph.output, *graph.initializer):
        value.name = rename(value.name)
    del graph.value_info[:]
    return graph


def _batches(cases: list[NodeCase]) -> list[tuple[int, list[NodeCase]]]:
    by_opset: dict[int, list[NodeCase]] = collections.defaultdict(list)
    for case in cases:
        opset = next(o.version for o in case.model.opset_import if o.domain in ("", "ai.onnx"))
        by_opset[opset].append(case)
    return [(opset, group[i:i + BATCH]) for opset, group in sorted(by_opset.items())
            for i in range(0, len(group), BATCH)]


def _merge(opset: int, cases: list[NodeCase]) -> onnx.ModelProto:
    graphs = [_prefixed(case, f"t{i}_") for i, case in enumerate(cases)]
    merged = onnx.helper.make_graph(
        [n for g in graphs for n in g.node], "node_tests",
        [v for g in graphs for v in g.input], [v for g in graphs for v in g.output],
        [t for g in graphs for t in g.initializer])
    return onnx.helper.make_model(merged, opset_imports=[onnx.helper.make_opsetid("", opset)],
                                  ir_version=max(c.model.ir_version for c in cases))


def _run_native(model: onnx.ModelProto, tag: str, feeds: dict[str, np.ndarray]
                ) -> dict[str, np.ndarray]:
    import patcc

    return patcc.compile(model, tag, tune=False).load(num_threads=1).run(feeds)


@pytest.mark.parametrize("tag", X86_TAGS)
def test_native_build_passes_the_node_tests(tag: str) -> None:
    runnable_target(tag)
    failures = []
    for opset, cases in _batches(runnable()):
        assert opset <= MAX_OPSET
        feeds = {f"t{i}_{k}": v for i, c in enumerate(cases) for k, v in c.inputs.items()}
        try:
            got = _run_native(_merge(opset, cases), tag, feeds)
        except PatccError:  # find the culprit: each case on its own
            for case in cases:
                try:
                    alone = _run_native(case.model, tag, case.inputs)
                except PatccError as e:
                    failures.append(f"{case.name}: {e}")
                    continue
                problem = _check(case, alone, tag)
                if problem:
                    failures.append(problem)
            continue
        for i, case in enumerate(cases):
            ours = {k[len(f"t{i}_"):]: v for k, v in got.items() if k.startswith(f"t{i}_")}
            problem = _check(case, ours, tag)
            if problem:
                failures.append(problem)
    assert not failures, "\n".join(failures)


def test_opsets_after_21_changed_only_types_of_the_supported_operators() -> None:
    """Why MAX_OPSET may be above 21: for every operator patcc converts, the
    attributes, inputs and outputs at MAX_OPSET are those of opset 21, but for the
    attributes the converters handle (SpaceToDepth's mode, DCR by default as before)
    or that concern types patcc never casts to (Cast's, for 8-bit floats)."""
    from onnx import defs

    from patcc.frontends.onnx import SUPPORTED_OPERATORS

    handled = {"Cast": {"saturate", "round_mode"}, "SpaceToDepth": {"mode"}}

    def signature(op: str, version: int) -> tuple[object, ...]:
        schema = defs.get_schema(op, version)
        attributes = sorted(a for a in schema.attributes if a not in handled.get(op, ()))
        return (attributes, [(i.name, i.option) for i in schema.inputs],
                [(o.name, o.option) for o in schema.outputs])

    assert MAX_OPSET <= defs.onnx_opset_version()
    changed = [op for op in SUPPORTED_OPERATORS
               if signature(op, MAX_OPSET) != signature(op, 21)]
    assert not changed, f"changed after opset 21: {changed}; check their semantics"
