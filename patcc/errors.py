"""The exceptions users see: one hierarchy under ``PatccError``.

A ``PatccError`` is a user error: bad file, unsupported operator, wrong shape. The
CLI prints its message as one line and exits with status 2; anything else is a bug
in patcc and keeps its traceback. Each part of the compiler raises its own subclass,
so a caller can tell where a failure came from without parsing the message:

- ``IRError``: an IR invariant does not hold (a graph built by hand, or a frontend or
  pass that got it wrong); defined in ``patcc.ir.layers`` beside the invariants.
- ``FrontendError``: a model that cannot be imported (file, operator, attribute).
- ``BackendError``: a graph, target or option a backend cannot compile for, or a
  toolchain failure.
- ``PruningError``: a pruning configuration or model the pruning algorithms reject.
- ``ExecutionError``: a compiled model that cannot be loaded or run (its library,
  its inputs, the device).
"""

from __future__ import annotations


class PatccError(Exception):
    """A user-facing error: what went wrong, where, and what to do about it.

    ``where`` names the place (a file, an ONNX node, an IR layer) and is printed
    before the message.
    """

    def __init__(self, message: str, where: str | None = None) -> None:
        self.message = message
        self.where = where
        super().__init__(f"{where}: {message}" if where else message)


class FrontendError(PatccError):
    """A model that cannot be imported: its file, an operator, an attribute."""


class BackendError(PatccError):
    """A graph, target or option a backend cannot compile for, or a toolchain failure."""


class PruningError(PatccError):
    """A pruning configuration or model the pruning algorithms reject."""


class ExecutionError(PatccError):
    """A compiled model that cannot be loaded or run: its library, inputs or device."""
