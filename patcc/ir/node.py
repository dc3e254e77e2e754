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


def frozen(value: Any) -> Any:
    """``value`` made read-only: an array as a read-only view (the caller's own array
    stays writable), a mapping as a ``ConstantMap`` of frozen values; anything else
    as it is."""
    if isinstance(value, np.ndarray):
        if not value.flags.writeable:
            return value
        view = value.view()
        view.setflags(write=False)
        return view
    if isinstance(value, dict) and not isinstance(value, ConstantMap):
        return ConstantMap({k: frozen(v) for k, v in value.items()})
    return value


class ConstantMap(dict[str, Any]):
    """A dict that refuses changes (and pickles, where ``MappingProxyType`` does not):
    the IR's name -> array mappings, such as ``Graph.constants``."""

    def _refuse(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError("IR mappings are read-only: build a new graph with Graph.replace")

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = _refuse  # type: ignore[assignment]
    __ior__ = _refuse  # type: ignore[assignment]

    def __reduce__(self) -> tuple[Any, ...]:
        return frozen, (dict(self),)  # unpickled arrays are writable: frozen again


class IRNode:
    """Mixin for frozen IR dataclasses: structural ``==``, no hashing, and arrays
    read-only from construction on: a node is a value, and a pass that wrote into a
    weight array would change every graph sharing it."""

    __hash__ = None  # type: ignore[assignment]  # array fields make nodes unhashable

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            read_only = frozen(value)
            if read_only is not value:
                object.__setattr__(self, f.name, read_only)

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Unpickling: the arrays come back writable, so they are frozen again."""
        for key, value in state.items():
            object.__setattr__(self, key, frozen(value))

    def __eq__(self, other: object) -> bool:
        if type(self) is not type(other):
            return NotImplemented
        return all(
            same(getattr(self, f.name), getattr(other, f.name))
            for f in dataclasses.fields(self)  # type: ignore[arg-type]
            if f.compare
        )
