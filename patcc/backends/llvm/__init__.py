"""The LLVM backend: kernels in llvmlite IR, a thread pool, one shared object per model.

Its contract, as the OpenCL backend's: the targets it builds for (the CPU ``Target``s
of ``patcc.backends.target``, whose ``get_target`` names them), ``build(graph, target,
BuildOptions)`` and the artifact it returns, a ``Library`` (``save``, ``emit``,
``info``).
"""

from patcc.backends.llvm.artifact import EMIT_KINDS, BuildOptions, Library, build
from patcc.backends.target import Target, get_target

__all__ = ["EMIT_KINDS", "BuildOptions", "Library", "Target", "build", "get_target"]
