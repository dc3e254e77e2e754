"""External tools and optional packages: a test that needs one skips without it, with
a reason starting with ``MISSING_TOOL`` (``require_tool``) or through
``pytest.importorskip``; under ``CI=true`` that skip is a failure
(``tests/conftest.py``), so CI always exercises every backend and reference."""

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


def require_lld() -> None:
    """Skip (fail in CI) unless a linker for foreign objects is there: Debian's
    ``ld.lld`` or the ``ziglang`` wheel's."""
    from patcc.backends.llvm.toolchain import find_lld
    from patcc.errors import PatccError

    try:
        find_lld()
    except PatccError:
        pytest.skip(f"{MISSING_TOOL} ld.lld (apt-get install lld, or pip install ziglang)")
