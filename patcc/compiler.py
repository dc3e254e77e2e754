"""The compile driver: model -> IR -> passes -> LLVM -> shared object.

``compile(model, target=...)`` returns a ``CompiledModel`` that can be saved, called,
or asked for any intermediate form (``emit``: so, obj, llvm, asm, header).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx

from patcc.backends.abi import render_header
from patcc.backends.llvm import codegen, toolchain
from patcc.backends.llvm.lowering import Schedule
from patcc.backends.opencl import OPENCL_TARGETS
from patcc.backends.opencl import build as build_opencl
from patcc.backends.target import Target, get_target, with_overrides
from patcc.errors import PatccError
from patcc.fileio import atomic_write
from patcc.ir.graph import Graph
from patcc.ir.verify import verify
from patcc.passes import BACKEND_PIPELINE, run_pipeline

EMIT_KINDS = ("so", "obj", "llvm", "asm", "header")


@dataclass
class CompiledModel:
    """A model compiled for a target: ``save`` it, ``emit`` other forms, or call it."""

    graph: Graph
    target: Target
    plan: codegen.ModulePlan
    llvm_module: Any  # llvmlite.binding.ModuleRef, optimised
    code_object: bytes
    weights_object: bytes
    timings: dict[str, float] = field(default_factory=dict)
    profile: bool = False
    _shared_object: tuple[str | None, bytes] | None = None  # (soname, library)
    _loaded: Any = None
    _tmpdir: Any = None

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
        raise PatccError(f"unknown --emit {kind!r}; expected one of {', '.join(EMIT_KINDS)}")

    def save(self, path: str | os.PathLike[str], kind: str = "so") -> None:
        """Write the artifact of ``kind`` to ``path`` atomically (a ``.so`` for a
        target that wants a soname, Android, is named after the file)."""
        soname = Path(path).name if self.target.soname else None
        if kind == "so" and soname in self.target.libraries:
            raise PatccError(f"{soname} is the name of a system library on "
                             f"{self.target.tag}; the loader would take one for the "
                             "other (name the model e.g. libmodel.so)", where=str(path))
        data = self.shared_object(soname) if kind == "so" else self.emit(kind)
        atomic_write(path, lambda f: f.write(data))

    def load(self, num_threads: int | None = None) -> Any:
        """This model loaded into the process (``patcc.load`` of a private copy)."""
        from patcc.runtime.native import load

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
) -> Any:
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
    start = time.perf_counter()
    if isinstance(model, Graph):
        graph = verify(model)
    elif _is_torch_module(model):
        from patcc.frontends.torch import import_module

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
        graph = import_module(model, example_inputs)
    else:
        from patcc.frontends.onnx import import_onnx

        graph = import_onnx(model, input_shapes)
    if isinstance(target, str) and target in OPENCL_TARGETS:
        if cpu or features or tune or fuse_blocks:
            raise PatccError(f"--cpu, --features, --tune and --fuse-blocks apply to CPU "
                             f"targets, not {target}")
        graph = run_pipeline(graph, BACKEND_PIPELINE)
        timings["import"] = time.perf_counter() - start
        return build_opencl(graph, OPENCL_TARGETS[target], precision, timings)
    if precision != "fp32":
        raise PatccError(f"--precision {precision} is for OpenCL targets; CPU targets "
                         "compute in fp32")
    tgt = with_overrides(get_target(target), cpu, features)
    graph = run_pipeline(graph, BACKEND_PIPELINE)
    timings["import"] = time.perf_counter() - start
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
    compiled = build(graph, tgt, {name: t.schedule for name, t in tuning.items()}, profile,
                     timings, fuse_blocks)
    for code in compiled.plan.codes:
        if code.layer.name in tuning:
            tuned = tuning[code.layer.name]
            code.notes["tuned_ms"] = tuned.best_ms
            code.notes["tuning"] = tuned.verdict
            code.notes["model_ms"] = tuned.model_ms
            code.notes["fastest_ms"] = min(tuned.times_ms.values())
    return compiled


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
    """Lower an optimised graph (after ``BACKEND_PIPELINE``) with the given per-layer
    schedules (others take the cost model's choice) and compile it to objects."""
    timings = {} if timings is None else timings
    start = time.perf_counter()
    plan = codegen.plan_module(graph, target, schedules or {}, fuse_blocks)
    module = codegen.emit_module(plan, profile=profile)
    timings["codegen"] = time.perf_counter() - start
    start = time.perf_counter()
    optimised = toolchain.optimize(module, target)
    code = toolchain.emit_object(optimised, target)
    timings["llvm"] = time.perf_counter() - start
    weights = toolchain.weights_object(plan.blob.tobytes(), target)
    return CompiledModel(graph, target, plan, optimised, code, weights, timings, profile)
