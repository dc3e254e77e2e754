"""The one progress helper (``patcc/progress.py``) that tuning and pruning share."""

from __future__ import annotations

import pytest

from patcc.progress import progress_bar, progress_iter


def test_no_bar_unless_shown_and_something_to_count() -> None:
    assert progress_bar(5, False, "tuning", "layer") is None
    assert progress_bar(0, True, "tuning", "layer") is None
    items = [3, 1, 2]
    assert progress_iter(items, False, "retrain", "epoch") is items


def test_bars_draw_on_stderr_only(capsys: pytest.CaptureFixture[str]) -> None:
    bar = progress_bar(4, True, "admm", "step")
    assert bar is not None
    bar.update(4)
    bar.close()
    assert list(progress_iter(range(3), True, "retrain", "epoch")) == [0, 1, 2]
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "admm" in captured.err and "retrain" in captured.err
