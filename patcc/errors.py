"""The one exception type users see.

A ``PatccError`` is a user error: bad file, unsupported operator, wrong shape. The
CLI prints its message as one line and exits with status 2; anything else is a bug
in patcc and keeps its traceback.
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
