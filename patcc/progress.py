"""Progress bars for long work (tuning, pruning): tqdm's on stderr, or none.

One place decides how a bar looks: on stderr, so that what a command prints on stdout
stays clean, and cleared when it ends (``leave=False``), so that a finished run leaves
only its result. Callers say whether to show one (the CLI: not ``--quiet``, and stderr
a terminal); tqdm is imported only when a bar is shown.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any, TypeVar

T = TypeVar("T")


def progress_bar(total: int, show: bool, desc: str, unit: str) -> Any:
    """A bar of ``total`` steps of ``unit``, labelled ``desc``: the caller advances it
    with ``update(n)`` and ends it with ``close()``. None when not ``show``, or when
    there is nothing to count."""
    if not show or not total:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, leave=False)


def progress_iter(items: Iterable[T], show: bool, desc: str, unit: str) -> Iterable[T]:
    """``items``, and (when ``show``) a bar labelled ``desc`` that advances one
    ``unit`` per item and ends with them."""
    if not show:
        return items
    from tqdm import tqdm

    return tqdm(items, desc=desc, unit=unit, file=sys.stderr, leave=False)
