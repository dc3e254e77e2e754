"""OpenCL packages: a directory an app (or ``patcc run``) runs the model from.

::

    model.ocl/
      manifest.json    what the host needs: buffers, kernels in order, NDRanges
      model.cl         the OpenCL C source, one kernel per layer
      weights.bin      the weights blob (kernel argument 1)
      patcc_model.h    the C host program's interface
      patcc_model.c    a C host that loads the package and runs it (plain OpenCL API)

The manifest (``format: "patcc-opencl"``, ``version: 1``): ``precision`` (``fp32`` or
``fp16``, the element type of the workspace), ``workspace_elements`` (kernel
argument 0: one buffer of that many elements holding every activation, the inputs
and the outputs), ``inputs``/``outputs`` (name -> ``shape`` and element ``offset``
in the workspace), ``source``, ``weights`` and ``weights_bytes``, ``build_options``,
and ``kernels``: in order, each ``name``, ``layer``, ``global`` and ``local`` size.
Every kernel takes (workspace, weights) and nothing else.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Any

from patcc.backends.opencl.codegen import Program
from patcc.backends.opencl.host import render_host
from patcc.errors import BackendError

FORMAT = "patcc-opencl"
VERSION = 1
SOURCE, WEIGHTS, MANIFEST = "model.cl", "weights.bin", "manifest.json"
HOST_C, HOST_H = "patcc_model.c", "patcc_model.h"
BUILD_OPTIONS = "-cl-std=CL1.2"


def manifest(program: Program, target: str, model_name: str) -> dict[str, Any]:
    """The package's manifest for ``program``."""
    return {
        "format": FORMAT, "version": VERSION, "model": model_name, "target": target,
        "precision": program.precision,
        "workspace_elements": program.workspace_elements,
        "inputs": {n: {"shape": list(s.shape), "offset": s.offset}
                   for n, s in program.inputs.items()},
        "outputs": {n: {"shape": list(s.shape), "offset": s.offset}
                    for n, s in program.outputs.items()},
        "source": SOURCE, "weights": WEIGHTS, "weights_bytes": len(program.weights),
        "build_options": BUILD_OPTIONS,
        "kernels": [{"name": k.name, "layer": k.layer, "global": list(k.global_size),
                     "local": list(k.local_size)} for k in program.launches],
        "layers": program.layers,
    }


def files(program: Program, target: str, model_name: str) -> dict[str, bytes]:
    """Every file of the package, by name."""
    doc = manifest(program, target, model_name)
    header, source = render_host(doc)
    return {
        MANIFEST: (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode(),
        SOURCE: program.source.encode(),
        WEIGHTS: program.weights,
        HOST_H: header.encode(),
        HOST_C: source.encode(),
    }


def _foreign_entries(directory: Path, contents: dict[str, bytes]) -> list[str]:
    """The entries of ``directory`` (an existing package) that the package does not
    own: anything but a regular file named as one of ``contents`` or of a package's
    files."""
    owned = set(contents) | {MANIFEST, SOURCE, WEIGHTS, HOST_C, HOST_H}
    return sorted(entry.name for entry in directory.iterdir()
                  if entry.name not in owned or not stat.S_ISREG(entry.lstat().st_mode))


def _is_package(directory: Path) -> bool:
    """Whether ``directory`` holds a manifest of ours (``format: "patcc-opencl"``)."""
    try:
        doc = json.loads((directory / MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(doc, dict) and doc.get("format") == FORMAT


def write_package(path: str | os.PathLike[str], contents: dict[str, bytes]) -> None:
    """Write the package directory all or nothing: into a temporary directory beside
    ``path``, then renamed over it.

    An existing patcc package at ``path`` is replaced whole, but only when it holds
    nothing else: files or directories a user put in it (a host program built from
    the old ``patcc_model.c``, notes) are never deleted or moved, and the write is
    refused, naming them. Any other existing file or directory is refused too. Raises
    ``PatccError`` (``path`` untouched) for these and when the parent directory is
    missing or not writable.
    """
    target = Path(path)
    parent = target.parent if str(target.parent) else Path(".")
    if not parent.is_dir():
        raise BackendError("the directory does not exist", where=str(target))
    if target.exists() or target.is_symlink():
        if not (target.is_dir() and _is_package(target)):
            raise BackendError("exists and is not an OpenCL package; an OpenCL target writes "
                             "a package directory (e.g. -o model.ocl)", where=str(target))
        try:
            extra = _foreign_entries(target, contents)
        except OSError as e:
            raise BackendError(f"cannot read the existing package: {e.strerror}",
                             where=str(target)) from e
        if extra:
            shown = ", ".join(repr(name) for name in extra[:5])
            more = f" and {len(extra) - 5} more" if len(extra) > 5 else ""
            raise BackendError(f"holds files that are not part of the OpenCL package ({shown}"
                             f"{more}); a package is replaced whole and they would be lost: "
                             f"move them out, or write the package elsewhere "
                             f"(e.g. -o other.ocl)", where=str(target))
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=parent))
    except OSError as e:
        raise BackendError(f"cannot write: {e.strerror}", where=str(target)) from e
    old = None
    try:
        for name, data in contents.items():
            (tmp / name).write_bytes(data)
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=parent))
            os.replace(target, old / "package")
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and not target.exists():
            os.replace(old / "package", target)
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
