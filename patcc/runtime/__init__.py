"""Runtime: the numpy reference interpreter, the oracle every backend is tested
against, and ``load``, which runs what the backends built: a ``.so`` for this machine
(``native``), one for another architecture under qemu (``emulated``), or an OpenCL
package on a device (``opencl``)."""

from __future__ import annotations

import os
from typing import Any

from patcc.errors import ExecutionError
from patcc.runtime.interpreter import apply_activation, bind_inputs, evaluate, run

run_reference = run


def load(path: str | os.PathLike[str], num_threads: int | None = None) -> Any:
    """Load a compiled model: a ``.so`` (``num_threads`` defaults to one per CPU the
    process may run on) or an OpenCL package directory (run on
    ``PATCC_OPENCL_DEVICE``).

    A ``.so`` built for another architecture that this machine can emulate (aarch64,
    under qemu) is returned as a ``patcc.runtime.emulated.EmulatedModel``, called the
    same way. Raises ``PatccError`` for a missing file, a file that is not a patcc
    model, or a foreign model that cannot run here (naming what to install).
    """
    from patcc.runtime.opencl import is_package

    if is_package(path):
        if num_threads is not None:
            raise ExecutionError("num_threads is for compiled .so models; an OpenCL package "
                             "runs on its device")
        from patcc.runtime.opencl import load as load_package

        return load_package(path)
    from patcc.runtime.native import NativeModel, elf_machine, host_machine

    arch = elf_machine(path)
    if arch != host_machine():
        from patcc.runtime.emulated import EmulatedModel

        return EmulatedModel(path, arch, num_threads)
    return NativeModel(path, num_threads)


__all__ = ["apply_activation", "bind_inputs", "evaluate", "load", "run", "run_reference"]
