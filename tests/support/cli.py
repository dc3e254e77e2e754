"""The form every command-line user error takes."""

from __future__ import annotations


def assert_user_error(code: int, err: str, *needles: str) -> None:
    """The CLI failed as a user error: exit 2, one ``patcc: error:`` line on stderr
    containing every needle, no traceback."""
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"expected one line, got:\n{err}"
    assert lines[0].startswith("patcc: error: "), lines[0]
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"
