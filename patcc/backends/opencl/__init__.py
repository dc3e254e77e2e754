"""The OpenCL backend: OpenCL C kernels, and a package a host program runs.

Targets are data here too: ``opencl`` (any OpenCL 1.2 device; work-groups of 64)
and ``opencl-adreno`` (Qualcomm's Adreno GPUs of Snapdragon phones, which schedule
waves of 64 or 128 work-items; work-groups of 128). ``local_memory`` says whether
kernels stage inputs through local memory: it pays on GPUs, whose local memory is
on chip, and not on CPU devices, where it is ordinary memory plus barriers (PoCL:
ResNet-50's 1x1 convs 872 ms staged against 726 ms reading global memory directly;
ResNet-18's convs 1222 ms against 834 ms), so only the Adreno target stages.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from patcc.errors import BackendError
from patcc.ir.graph import Graph


@dataclass(frozen=True)
class OpenCLTarget:
    """An OpenCL device family: its tag and the work-group size kernels use."""

    tag: str
    local_size: int
    description: str
    local_memory: bool = False
    device: str = "opencl"  # the device family `patcc compile` prints beside the tag


OPENCL_TARGETS = {
    "opencl": OpenCLTarget("opencl", 64, "any OpenCL 1.2 device"),
    "opencl-adreno": OpenCLTarget("opencl-adreno", 128, "Qualcomm Adreno GPUs (Snapdragon)",
                                  local_memory=True, device="adreno"),
}
EMIT_KINDS = ("opencl",)


@dataclass
class OpenCLPackage:
    """A model compiled for an OpenCL target: ``save`` writes the package directory.
    (``patcc.compile`` returns it as a ``patcc.compiler.CompiledPackage``, which also
    runs it through pyopencl.)"""

    graph: Graph
    target: OpenCLTarget
    program: Any  # codegen.Program
    timings: dict[str, float] = field(default_factory=dict)

    def files(self) -> dict[str, bytes]:
        from patcc.backends.opencl.package import files

        return files(self.program, self.target.tag, self.graph.name)

    @property
    def info(self) -> dict[str, Any]:
        """The package's manifest."""
        from patcc.backends.opencl.package import manifest

        return manifest(self.program, self.target.tag, self.graph.name)

    @property
    def workspace_size(self) -> int:
        return self.program.workspace_elements * self.program.element_size

    def save(self, path: str | Path, kind: str = "opencl") -> None:
        """Write the package directory at ``path`` (all or nothing)."""
        from patcc.backends.opencl.package import write_package

        if kind not in EMIT_KINDS:
            raise BackendError(f"--emit {kind} is not an OpenCL output; an OpenCL target "
                             "writes a package directory (--emit opencl)")
        write_package(path, self.files())


def build(graph: Graph, target: OpenCLTarget, precision: str = "fp32",
          timings: dict[str, float] | None = None) -> OpenCLPackage:
    """Render an optimised graph (after ``BACKEND_PIPELINE``) for ``target``."""
    from patcc.backends.opencl.codegen import render

    timings = {} if timings is None else timings
    start = time.perf_counter()
    program = render(graph, precision, target.local_size, target.local_memory)
    timings["codegen"] = time.perf_counter() - start
    return OpenCLPackage(graph, target, program, timings)
