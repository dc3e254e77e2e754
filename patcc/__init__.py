"""patcc: a compiler that turns pattern-pruned CNNs into fast native code.

The pipeline is frontends -> IR -> passes -> backends -> runtime; see README.md.
"""

from typing import Any

from patcc.errors import PatccError
from patcc.version import __version__


def compile(model: Any, target: Any = "x86_64", input_shapes: Any = None,
            **options: Any) -> Any:
    """Compile an ONNX model (path or ModelProto) for ``target``; see patcc.compiler."""
    from patcc.compiler import compile as _compile

    return _compile(model, target, input_shapes, **options)


def load(path: Any, num_threads: int | None = None) -> Any:
    """Load a compiled model: a ``.so`` or an OpenCL package directory; see
    ``patcc.runtime.load``."""
    from patcc.runtime import load as _load

    return _load(path, num_threads)


__all__ = ["PatccError", "__version__", "compile", "load"]
