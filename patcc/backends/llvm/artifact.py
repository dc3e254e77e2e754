"""What the LLVM backend builds: ``build(graph, target, options) -> Library``.

A ``Library`` holds a model's plan, its optimised LLVM module and its two objects
(code and weights); ``save`` links and writes the ``.so`` (or another ``emit`` kind).
Running it is the runtime's business: ``patcc.compile`` returns a
``patcc.compiler.CompiledModel``, this class with ``load`` and ``__call__`` added.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# The modules themselves: ``from patcc.backends.llvm import codegen`` names the package
# too, whose ``__init__`` imports this module, a cycle to the import-graph test.
import patcc.backends.llvm.codegen as codegen
import patcc.backends.llvm.toolchain as toolchain
from patcc.backends.abi import render_header
from patcc.backends.llvm.lowering import Schedule
from patcc.backends.target import Target
from patcc.errors import BackendError
from patcc.fileio import atomic_write
from patcc.ir.graph import Graph

EMIT_KINDS = ("so", "obj", "llvm", "asm", "header")


@dataclass(frozen=True)
class BuildOptions:
    """How ``build`` lowers a graph."""

    schedules: Mapping[str, Schedule] = field(default_factory=dict)
    """Per-layer schedules (the tuner's choices); other layers take the cost model's."""
    profile: bool = False
    """Also time every layer (``NativeModel.layer_times``); not for deployment."""
    fuse_blocks: bool = False
    """Run large inverted-residual blocks as one computation (``fused.py``)."""
    notes: Mapping[str, Mapping[str, object]] = field(default_factory=dict)
    """Extra report notes per layer name (the tuner's measurements), kept in the plan."""


@dataclass
class Library:
    """A model compiled for a CPU target: ``save`` it, or ``emit`` other forms."""

    graph: Graph
    target: Target
    plan: codegen.ModulePlan
    llvm_module: Any  # llvmlite.binding.ModuleRef, optimised
    code_object: bytes
    weights_object: bytes
    timings: dict[str, float] = field(default_factory=dict)
    profile: bool = False
    _shared_object: tuple[str | None, bytes] | None = None  # (soname, library)

    @property
    def info(self) -> dict[str, Any]:
        """The model description the compiled library reports (``patcc_model_info``)."""
        return dict(self.plan.info)

    @property
    def workspace_size(self) -> int:
        return self.plan.workspace

    def shared_object(self, soname: str | None = None) -> bytes:
        """The linked ``.so`` for the target, with ``soname`` as its ``DT_SONAME``
        when given (``save`` gives the file's name where ``Target.soname``); the last
        one linked is kept."""
        if self._shared_object is None or self._shared_object[0] != soname:
            start = time.perf_counter()
            exports = toolchain.EXPORTS + (("patcc_profile_ns",) if self.profile else ())
            library = toolchain.link([self.code_object, self.weights_object], self.target,
                                     exports=exports, soname=soname)
            self._shared_object = (soname, library)
            self.timings["link"] = time.perf_counter() - start
        return self._shared_object[1]

    def emit(self, kind: str = "so") -> bytes:
        """The artifact of ``kind`` (one of EMIT_KINDS) as bytes."""
        if kind == "so":
            return self.shared_object()
        if kind == "obj":
            return toolchain.link([self.code_object, self.weights_object], self.target,
                                  relocatable=True)
        if kind == "llvm":
            return str(self.llvm_module).encode()
        if kind == "asm":
            return toolchain.emit_assembly(self.llvm_module, self.target).encode()
        if kind == "header":
            return render_header(self.info).encode()
        raise BackendError(f"unknown --emit {kind!r}; expected one of {', '.join(EMIT_KINDS)}")

    def save(self, path: str | os.PathLike[str], kind: str = "so") -> None:
        """Write the artifact of ``kind`` to ``path`` atomically (a ``.so`` for a
        target that wants a soname, Android, is named after the file)."""
        soname = Path(path).name if self.target.soname else None
        if kind == "so" and soname in self.target.libraries:
            raise BackendError(f"{soname} is the name of a system library on "
                               f"{self.target.tag}; the loader would take one for the "
                               "other (name the model e.g. libmodel.so)", where=str(path))
        data = self.shared_object(soname) if kind == "so" else self.emit(kind)
        atomic_write(path, lambda f: f.write(data))


def build(graph: Graph, target: Target, options: BuildOptions | None = None,
          timings: dict[str, float] | None = None) -> Library:
    """Lower an optimised graph (after ``BACKEND_PIPELINE``) for ``target`` and compile
    it to objects (linked on ``save``)."""
    options = BuildOptions() if options is None else options
    timings = {} if timings is None else timings
    start = time.perf_counter()
    plan = codegen.plan_module(graph, target, options.schedules, options.fuse_blocks)
    for code in plan.codes:
        code.notes.update(options.notes.get(code.layer.name, {}))
    module = codegen.emit_module(plan, profile=options.profile)
    timings["codegen"] = time.perf_counter() - start
    start = time.perf_counter()
    optimised = toolchain.optimize(module, target)
    code_object = toolchain.emit_object(optimised, target)
    timings["llvm"] = time.perf_counter() - start
    weights = toolchain.weights_object(plan.blob.tobytes(), target)
    return Library(graph, target, plan, optimised, code_object, weights, timings,
                   options.profile)
