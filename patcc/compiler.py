"""The compile driver: ``patcc.compile`` as one pipeline.

    import (raw graph) -> FRONTEND_PIPELINE -> BACKEND_PIPELINE -> [tune] -> backend.build

The frontends read a model into the raw graph (``patcc.frontends.onnx.read_onnx``,
``patcc.frontends.torch.import_module``); the two pass pipelines are
``patcc.passes``' (``PATCC_VERIFY=1`` verifies the graph after every pass); the tuner
(``patcc.tuning``, CPU targets this machine runs) picks each layer's schedule; the
backend the target names builds its artifact: ``patcc.backends.llvm.build`` a
``Library`` (a ``.so``), ``patcc.backends.opencl.build`` an ``OpenCLPackage``. What
``compile`` returns is that artifact made runnable here: a ``CompiledModel`` or a
``CompiledPackage``, which ``save``, ``emit``, ``load`` and run.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import onnx

from patcc.backends.llvm import EMIT_KINDS, BuildOptions, Library
from patcc.backends.llvm import build as build_library
from patcc.backends.llvm.lowering import Schedule
from patcc.backends.opencl import OpenCLPackage, OpenCLTarget
from patcc.backends.opencl import build as build_opencl
from patcc.backends.target import Target, find_target, with_overrides
from patcc.errors import BackendError, PatccError
from patcc.ir.graph import Graph
from patcc.ir.verify import verify
from patcc.passes import BACKEND_PIPELINE, FRONTEND_PIPELINE, run_pipeline
from patcc.runtime import load
from patcc.runtime.opencl import load as load_package

__all__ = ["EMIT_KINDS", "CompiledModel", "CompiledPackage", "build", "call_with_torch_io",
           "compile", "runnable"]


class CompiledModel(Library):
    """A model compiled for a CPU target (``patcc.backends.llvm.Library``) that can
    also run here: ``load`` it, or call it."""

    _loaded: Any = None
    _tmpdir: Any = None

    def load(self, num_threads: int | None = None) -> Any:
        """This model loaded into the process (``patcc.runtime.load`` of a private
        copy)."""
        if self._loaded is None:
            self._tmpdir = tempfile.TemporaryDirectory(prefix="patcc-")
            path = Path(self._tmpdir.name) / "model.so"
            path.write_bytes(self.shared_object())
            self._loaded = load(path, num_threads)
        elif num_threads is not None:
            self._loaded.num_threads = num_threads
        return self._loaded

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run on numpy arrays or torch tensors (positional or by input name); returns
        the same kind: one array/tensor for one output, else a dict by name."""
        return call_with_torch_io(self.load(), args, kwargs)


class CompiledPackage(OpenCLPackage):
    """A model compiled for an OpenCL target (``patcc.backends.opencl.OpenCLPackage``)
    that can also run here, through pyopencl (``patcc.runtime.opencl``)."""

    _loaded: Any = None
    _tmpdir: Any = None

    def load(self, profile: bool = False) -> Any:
        """The package loaded on the selected OpenCL device (a private copy)."""
        if self._loaded is None or self._loaded.profile != profile:
            self._tmpdir = tempfile.TemporaryDirectory(prefix="patcc-ocl-")
            path = Path(self._tmpdir.name) / "model.ocl"
            self.save(path)
            self._loaded = load_package(path, profile=profile)
        return self._loaded

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run on numpy arrays or torch tensors; returns the same kind."""
        return call_with_torch_io(self.load(), args, kwargs)


def runnable(artifact: Library | OpenCLPackage) -> CompiledModel | CompiledPackage:
    """A backend's artifact as the class ``compile`` returns (the same fields)."""
    kind: type[Any] = CompiledModel if isinstance(artifact, Library) else CompiledPackage
    return kind(**{f.name: getattr(artifact, f.name) for f in dataclasses.fields(artifact)})


def compile(
    model: str | os.PathLike[str] | onnx.ModelProto | Graph,
    target: str | Target = "x86_64",
    input_shapes: Mapping[str, tuple[int, ...]] | None = None,
    profile: bool = False,
    tune: bool | None = None,
    progress: bool = False,
    cpu: str | None = None,
    features: str | None = None,
    precision: str = "fp32",
    example_inputs: Any = None,
    dynamic_shapes: Any = None,
    fuse_blocks: bool = False,
) -> CompiledModel | CompiledPackage:
    """Compile an ONNX model (path or ModelProto), a ``torch.nn.Module`` (with
    ``example_inputs``: a tensor or tuple of tensors of the shapes to compile for;
    imported through ``torch.export``, pruning masks honoured, see
    ``patcc.frontends.torch``) or a patcc Graph for ``target``.

    ``cpu`` and ``features`` (e.g. ``"cortex-a55"``, ``"+neon,+dotprod"``) override
    the target tag's, checked against LLVM (``patcc.backends.target.with_overrides``).

    ``profile`` builds a library that also times every layer (see
    ``NativeModel.layer_times``); leave it off for deployment.

    ``tune`` times the schedules each layer can use on this machine and keeps the
    fastest (``patcc.tuning``; results cached in the user cache directory). By
    default it is on for the host target (``x86_64``, this CPU) unless the
    environment sets ``PATCC_TUNE=0``; other targets take the cost model's choice
    unless tuning is asked for and their code runs here.
    ``progress`` shows a progress bar on stderr while tuning.

    ``fuse_blocks`` runs each inverted-residual block with a large expanded tensor
    (1x1 expand, depthwise, 1x1 project) as one computation over bands of rows
    (``patcc.backends.llvm.fused``). Off by default: on the machines measured so far
    (Zen 4, with 1 MiB of L2 per core and a large L3) the band-sized kernels cost
    more than the memory traffic fusion saves.

    An OpenCL tag (``opencl``, ``opencl-adreno``) returns an ``OpenCLPackage`` instead,
    whose ``save`` writes a package directory; ``precision="fp16"`` stores and
    computes in half precision there (devices with ``cl_khr_fp16``).

    Raises ``PatccError`` for anything the frontends reject, an unknown target, or a
    toolchain failure.
    """
    timings: dict[str, float] = {}
    backend, tgt = _resolve_target(target, cpu, features, precision, tune, fuse_blocks)
    start = time.perf_counter()
    graph = _import(model, input_shapes, example_inputs, dynamic_shapes)
    graph = run_pipeline(graph, FRONTEND_PIPELINE, check=True)
    graph = run_pipeline(graph, BACKEND_PIPELINE)
    timings["import"] = time.perf_counter() - start
    if backend == "opencl":
        assert isinstance(tgt, OpenCLTarget)
        return runnable(build_opencl(graph, tgt, precision, timings))
    assert isinstance(tgt, Target)
    tuning: dict[str, Any] = {}
    if tune is None:  # the host's own tag; portable tags may deploy to other CPUs
        tune = "host" in tgt.tags and os.environ.get("PATCC_TUNE") != "0"
    if tune and not tgt.runs_here:
        lacks = tgt.missing_features()
        raise PatccError(f"cannot tune for {tgt.tag}: its code does not run on this machine"
                         + (f" (it lacks {', '.join(lacks)})" if lacks else "")
                         + "; tuning times candidates here: compile without --tune")
    if tune:
        from patcc.tuning import tune_graph

        start = time.perf_counter()
        tuning = tune_graph(graph, tgt, progress=progress)
        timings["tune"] = time.perf_counter() - start
    notes = {name: {"tuned_ms": t.best_ms, "tuning": t.verdict, "model_ms": t.model_ms,
                    "fastest_ms": min(t.times_ms.values())} for name, t in tuning.items()}
    options = BuildOptions({name: t.schedule for name, t in tuning.items()}, profile,
                           fuse_blocks, notes)
    return runnable(build_library(graph, tgt, options, timings))


def _resolve_target(target: str | Target, cpu: str | None, features: str | None,
                    precision: str, tune: bool | None, fuse_blocks: bool
                    ) -> tuple[str, Target | OpenCLTarget]:
    """The backend (``"llvm"`` or ``"opencl"``) and target a tag names, the options
    checked against it."""
    found = find_target(target)
    if isinstance(found, OpenCLTarget):
        if cpu or features or tune or fuse_blocks:
            raise BackendError(f"--cpu, --features, --tune and --fuse-blocks apply to CPU "
                               f"targets, not {found.tag}")
        return "opencl", found
    if precision != "fp32":
        raise BackendError(f"--precision {precision} is for OpenCL targets; CPU targets "
                           "compute in fp32")
    return "llvm", with_overrides(found, cpu, features)


def _import(model: str | os.PathLike[str] | onnx.ModelProto | Graph,
            input_shapes: Mapping[str, tuple[int, ...]] | None, example_inputs: Any,
            dynamic_shapes: Any) -> Graph:
    """The raw graph of ``model``: a patcc Graph as given (verified), an
    ``nn.Module`` through the torch frontend, anything else through the ONNX one."""
    if isinstance(model, Graph):
        return verify(model)
    if _is_torch_module(model):
        from patcc.frontends.torch import read_module

        if dynamic_shapes is not None:
            raise PatccError("dynamic shapes are not supported: patcc compiles static shapes "
                             "(those of example_inputs); compile once per deployment shape")
        if example_inputs is None:
            raise PatccError("compiling an nn.Module needs example_inputs: a tensor or tuple "
                             "of tensors of the shapes to compile for, e.g. "
                             "example_inputs=(torch.randn(1, 3, 224, 224),)")
        if input_shapes:
            raise PatccError("input_shapes is for ONNX models; an nn.Module takes its shapes "
                             "from example_inputs")
        return read_module(model, example_inputs)
    from patcc.frontends.onnx import read_onnx

    return read_onnx(model, input_shapes)


def _is_torch_module(model: object) -> bool:
    """Whether ``model`` is a ``torch.nn.Module`` (without importing torch otherwise)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(model, torch.nn.Module)


def call_with_torch_io(run: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``run(*args, **kwargs)`` where the inputs may be torch tensors: they go in as
    numpy arrays, and if any input was a tensor the outputs come back as tensors (a
    dict of them for several outputs)."""
    torch = sys.modules.get("torch")
    if torch is None or not any(isinstance(v, torch.Tensor)
                                for v in (*args, *kwargs.values())):
        return run(*args, **kwargs)

    def to_numpy(v: Any) -> Any:
        return v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else v

    result = run(*(to_numpy(a) for a in args), **{k: to_numpy(v) for k, v in kwargs.items()})
    if isinstance(result, dict):
        return {k: torch.from_numpy(v) for k, v in result.items()}
    return torch.from_numpy(result)


def build(graph: Graph, target: Target, schedules: Mapping[str, Schedule] | None = None,
          profile: bool = False, timings: dict[str, float] | None = None,
          fuse_blocks: bool = False) -> CompiledModel:
    """``patcc.backends.llvm.build`` of an optimised graph (after ``BACKEND_PIPELINE``),
    as a runnable ``CompiledModel``: the tuner's and the profiler's door."""
    options = BuildOptions(schedules or {}, profile, fuse_blocks)
    model = runnable(build_library(graph, target, options, timings))
    assert isinstance(model, CompiledModel)
    return model
