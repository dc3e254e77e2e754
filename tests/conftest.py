"""Shared fixtures, and the CI rule: a skip for a missing tool fails under CI=true.

Tests that need an external tool or optional package skip with a reason starting
with ``MISSING_TOOL`` (see ``require_tool``) or through ``pytest.importorskip``.
Locally that is a skip; in CI (``CI=true``) it is a failure, so CI always exercises
every backend and reference.
"""

from __future__ import annotations

import os
import shutil

import pytest

MISSING_TOOL = "missing tool:"
IN_CI = os.environ.get("CI", "").lower() == "true"


def require_tool(name: str, hint: str) -> str:
    """Path of executable ``name``, or skip (fail in CI) saying how to install it."""
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{MISSING_TOOL} {name} ({hint})")
    return path


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):  # type: ignore[no-untyped-def]
    outcome = yield
    report = outcome.get_result()
    if not (IN_CI and report.skipped and isinstance(report.longrepr, tuple)):
        return
    reason = str(report.longrepr[2])
    if MISSING_TOOL in reason or "could not import" in reason:
        report.outcome = "failed"
        report.longrepr = f"CI=true: a required tool is missing, so this test cannot be skipped: {reason}"
