"""patcc: a compiler that turns pattern-pruned CNNs into fast native code.

The pipeline is frontends -> IR -> passes -> backends -> runtime; see README.md.
"""

from typing import Any

from patcc.errors import PatccError

__version__ = "0.1.0"


def compile(model: Any, target: Any = "x86_64", input_shapes: Any = None,
            **options: Any) -> Any:
    """Compile an ONNX model (path or ModelProto) for ``target``; see patcc.compiler."""
    from patcc.compiler import compile as _compile

    return _compile(model, target, input_shapes, **options)


def load(path: Any, num_threads: int | None = None) -> Any:
    """Load a compiled model: a ``.so`` (patcc.runtime.native.load) or an OpenCL
    package directory (patcc.runtime.opencl.load, on ``PATCC_OPENCL_DEVICE``)."""
    from patcc.runtime.opencl import is_package

    if is_package(path):
        if num_threads is not None:
            raise PatccError("num_threads is for compiled .so models; an OpenCL package "
                             "runs on its device")
        from patcc.runtime.opencl import load as _load_package

        return _load_package(path)
    from patcc.runtime.native import load as _load

    return _load(path, num_threads)


__all__ = ["PatccError", "__version__", "compile", "load"]
