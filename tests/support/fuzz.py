"""How many examples hypothesis draws per randomised test.

Each test keeps its own default, sized to the cost of one of its examples (a
numpy-only example costs microseconds, a compiled one a build). ``PATCC_FUZZ_EXAMPLES=N``
replaces every default with N (a test that scales its count, such as whole graphs at
four times the single layers, scales N alike), for a quick local run or a long
search. This is the one place that reads the variable.
"""

from __future__ import annotations

import os


def requested_fuzz_examples() -> int | None:
    """``PATCC_FUZZ_EXAMPLES`` as a number, or None when it is not set."""
    value = os.environ.get("PATCC_FUZZ_EXAMPLES")
    return None if value is None else int(value)


def fuzz_examples(default: int) -> int:
    """Examples for a test whose own count is ``default``: ``PATCC_FUZZ_EXAMPLES``
    when set, else ``default``."""
    requested = requested_fuzz_examples()
    return default if requested is None else requested
