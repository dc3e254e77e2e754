"""The CLI against hostile models: succeed and match the reference, or fail cleanly.

``tests/support/cli_fuzzer.py`` generates the cases and runs them in a worker process. The
default budget is small (``DEFAULT_CASES``); ``PATCC_FUZZ_CASES=N`` raises it,
``PATCC_FUZZ_SEED`` picks the first case's number and ``PATCC_FUZZ_JOBS`` the number
of worker processes. For a large run outside pytest: ``python -m
tests.support.cli_fuzzer run --cases 5000 --jobs 2``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import onnx
import pytest

from support.cli_fuzzer import (
    BAD_OUTCOMES,
    SEEDS,
    TARGET,
    UNMUTATED_EVERY,
    Summary,
    compare_outputs,
    generate_case,
    host_runs_target,
    run_fuzz,
    seed_model,
)

DEFAULT_CASES = 60


@pytest.fixture(autouse=True)
def _runs_target() -> None:
    why = host_runs_target()
    if why is not None:
        pytest.skip(why)


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    return int(value) if value.strip() else default


def test_cases_are_deterministic_and_varied() -> None:
    first = [generate_case(n) for n in range(40)]
    assert first == [generate_case(n) for n in range(40)]
    assert len({c.data for c in first}) >= 35, "mutations should rarely repeat"
    assert first[0].mutation == "unmutated"
    assert {c.seed for c in first} == set(SEEDS)
    for name in SEEDS:
        onnx.checker.check_model(seed_model(name))


def test_comparison_catches_differences() -> None:
    ref = {"y": np.array([1.0, -2.0, np.inf, np.nan], np.float32)}
    assert compare_outputs({"y": ref["y"].copy()}, ref, "same") is None
    near = ref["y"] + np.array([1e-4, 0, 0, 0], np.float32)
    assert compare_outputs({"y": near}, ref, "near") is None  # within 1e-4 of max |ref| = 2
    far = ref["y"] + np.array([1e-3, 0, 0, 0], np.float32)
    assert "y" in (compare_outputs({"y": far}, ref, "far") or "")
    assert "NaN" in (compare_outputs({"y": np.zeros(4, np.float32)}, ref, "nan") or "")
    assert "outputs" in (compare_outputs({"z": ref["y"]}, ref, "names") or "")


def test_harness_reports_every_kind_of_fault(tmp_path: Path) -> None:
    """Faults injected into unmutated (valid) cases come back as the bad outcomes
    they are, the worker is restarted after a crash, and bad cases are saved."""
    cases = [k * UNMUTATED_EVERY for k in range(1, 6)]
    kinds = ["signal", "internal", "leak", "mismatch"]
    inject = ",".join(f"{n}:{kind}" for n, kind in zip(cases, kinds, strict=False))
    results = run_fuzz(cases, workdir=tmp_path / "work", save_dir=tmp_path / "bad",
                       env={"PATCC_FUZZ_INJECT": inject})
    outcomes = {r.number: r.outcome for r in results}
    assert outcomes == {cases[0]: "signal", cases[1]: "internal_error",
                        cases[2]: "partial_output", cases[3]: "mismatch", cases[4]: "ok"}
    crashed = results[0].problems()
    assert "SIGSEGV" in crashed[0] and crashed[0].startswith("compile:"), crashed
    assert all(r.saved is not None and r.saved.is_file() for r in results if r.bad)
    assert "ok" not in BAD_OUTCOMES and "user_error" not in BAD_OUTCOMES

    hung = run_fuzz([UNMUTATED_EVERY], workdir=tmp_path / "hang", timeout=3,
                    env={"PATCC_FUZZ_INJECT": f"{UNMUTATED_EVERY}:hang"})
    assert [r.outcome for r in hung] == ["timeout"]
    assert hung[0].problems()[0].startswith("compile: timeout")


def test_cli_survives_hostile_models(tmp_path: Path) -> None:
    """Every case: inspect, compile (for ``TARGET``) and run either succeed and match
    onnxruntime (or the interpreter), or fail with exit 2 and one error line."""
    cases = _env_int("PATCC_FUZZ_CASES", DEFAULT_CASES)
    start = _env_int("PATCC_FUZZ_SEED", 0)
    jobs = _env_int("PATCC_FUZZ_JOBS", 1)
    numbers = range(start, start + cases)
    save_dir = tmp_path / "bad-cases"
    start_time = time.monotonic()
    results = run_fuzz(numbers, jobs, workdir=tmp_path / "work", save_dir=save_dir)
    summary = Summary(results, time.monotonic() - start_time, save_dir)
    print(summary)
    if summary.bad:
        pytest.fail(f"the patcc CLI broke its contract (target {TARGET}):\n{summary}",
                    pytrace=False)
    unmutated = [n for n in numbers if n % UNMUTATED_EVERY == 0]
    assert summary.counts["ok"] >= len(unmutated), f"the seeds must compile and match\n{summary}"
