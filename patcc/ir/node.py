"""Structural equality for IR dataclasses that hold numpy arrays.

Dataclass-generated ``__eq__`` compares fields with ``==``, which is ambiguous for
arrays; IR nodes compare arrays by dtype, shape and values so that pass tests can
write ``assert reorder(before) == expected``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np


def same(a: Any, b: Any) -> bool:
    """True when ``a`` and ``b`` are structurally equal (arrays compared by value)."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return (
            isinstance(a, np.ndarray)
            and isinstance(b, np.ndarray)
            and a.dtype == b.dtype
            and a.shape == b.shape
            and bool(np.array_equal(a, b))
        )
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return type(a) is type(b) and len(a) == len(b) and all(map(same, a, b))
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return bool(a == b)


class IRNode:
    """Mixin for frozen IR dataclasses: structural ``==``, no hashing."""

    __hash__ = None  # type: ignore[assignment]  # array fields make nodes unhashable

    def __eq__(self, other: object) -> bool:
        if type(self) is not type(other):
            return NotImplemented
        return all(
            same(getattr(self, f.name), getattr(other, f.name))
            for f in dataclasses.fields(self)  # type: ignore[arg-type]
            if f.compare
        )
