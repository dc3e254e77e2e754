"""Writing outputs atomically and reading user arrays, with user-facing errors."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO

import numpy as np

from patcc.errors import PatccError


def atomic_write(path: str | os.PathLike[str], write: Callable[[IO[bytes]], object]) -> None:
    """Write a file through ``write(fileobj)``, all or nothing.

    The bytes go to a temporary file beside ``path`` that is renamed over it only
    when ``write`` returns; on any error the temporary file is removed and ``path``
    is untouched. Raises ``PatccError`` when the directory cannot be written.
    """
    target = Path(path)
    directory = target.parent if str(target.parent) else Path(".")
    if not directory.is_dir():
        raise PatccError("the directory does not exist", where=str(target))
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=directory)
    except OSError as e:
        raise PatccError(f"cannot write: {e.strerror}", where=str(target)) from e
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_npz(path: str | os.PathLike[str], arrays: Mapping[str, np.ndarray]) -> None:
    """Save arrays keyed by name into an ``.npz`` file, atomically."""
    atomic_write(path, lambda f: np.savez(f, **arrays))  # type: ignore[arg-type]


def load_npy(path: str | os.PathLike[str]) -> np.ndarray:
    """Load one array from a ``.npy`` file; ``PatccError`` if it is missing or not one."""
    p = Path(path)
    if not p.is_file():
        raise PatccError("no such file", where=str(p))
    try:
        value = np.load(p, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise PatccError(f"not a .npy array file ({e})", where=str(p)) from e
    if not isinstance(value, np.ndarray):
        raise PatccError("holds several arrays (.npz); give one .npy per input", where=str(p))
    return value
