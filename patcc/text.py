"""Model-supplied names made safe for the text patcc generates.

Graph, layer and tensor names come from the model file, so they can hold anything: a
``*/`` that ends a C comment, a newline that ends an LLVM comment line, a NUL, a
trigraph, a right-to-left override, a megabyte. Every generator that writes such a
name into C, OpenCL C or LLVM IR text goes through one of these functions; the real
names travel only as data (the package manifest, the model-info JSON).

- ``c_comment``: shown inside ``/* ... */``, printable ASCII, bounded length;
- ``c_string``: a C string literal holding exactly the name's UTF-8 bytes;
- ``identifier``: ``[A-Za-z0-9_]`` only, for building symbol names;
- ``module_id``: the LLVM module's ``; ModuleID = "..."`` line.
"""

from __future__ import annotations

from collections.abc import Callable

COMMENT_LIMIT = 80
"""Characters of a name shown in a comment: enough to recognise it, and a 1 MB name
does not become 1 MB of comment each time it is mentioned."""

ELLIPSIS = "..."

_IDENTIFIER_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")

# Printable ASCII a C string literal keeps as is: not the quote, the backslash (the
# escape character) or '?' (two of them begin a trigraph under -trigraphs or C89).
_C_STRING_KEEP = frozenset(chr(c) for c in range(0x20, 0x7F)) - set('"\\?')


def _escape(ch: str) -> str:
    """``ch`` as a backslash escape made of printable ASCII (Python's ``ascii()`` forms)."""
    code = ord(ch)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def _shown(text: str, limit: int, needs_escape: Callable[[str, str, bool], bool]) -> str:
    """``text`` in printable ASCII, at most ``limit`` characters (cut with ``...``).

    A character is kept when it is printable ASCII, not a backslash (so every
    backslash in the result begins an escape) and ``needs_escape(previous, ch, last)``
    is false, ``previous`` being the last character written so far and ``last``
    whether ``ch`` ends ``text``; any other character is written as an escape.
    """
    limit = max(limit, len(ELLIPSIS))
    pieces: list[str] = []
    length = 0
    previous = ""
    for i, ch in enumerate(text):
        if " " <= ch <= "~" and ch != "\\" and not needs_escape(previous, ch, i == len(text) - 1):
            piece = ch
        else:
            piece = _escape(ch)
        if length + len(piece) > limit:  # cut: drop pieces until the ellipsis fits
            while pieces and length + len(ELLIPSIS) > limit:
                length -= len(pieces.pop())
            return "".join(pieces) + ELLIPSIS
        pieces.append(piece)
        length += len(piece)
        previous = piece[-1]
    return "".join(pieces)


def _comment_escape(previous: str, ch: str, last: bool) -> bool:
    # No "*/" (ends the comment), no "/*" (-Wcomment; also not when the caller's "*/"
    # follows a final '/'), no "??" (a trigraph; "??/" + newline would splice lines).
    return ((ch == "/" and (previous == "*" or last)) or (ch == "*" and previous == "/")
            or (ch == "?" and previous == "?"))


def c_comment(text: str, limit: int = COMMENT_LIMIT) -> str:
    """``text`` as it may appear inside a C or OpenCL C block comment.

    Printable ASCII only: control characters, backslashes and non-ASCII characters
    (bidi overrides included) become ``\\xNN``/``\\uNNNN``/``\\UNNNNNNNN`` escapes, and
    a character that would form ``*/``, ``/*`` or ``??`` with its neighbour is
    escaped too; the result never ends in ``/`` or a backslash, so it is safe directly
    before the closing ``*/``. At most ``limit`` characters (at least 3), cut with
    ``...``. For showing a name to a reader; it is not reversible.
    """
    return _shown(text, limit, _comment_escape)


def module_id(text: str, limit: int = COMMENT_LIMIT) -> str:
    """``text`` for an LLVM module's name (llvmlite writes ``; ModuleID = "NAME"``).

    Printable ASCII without ``"`` (other characters as escapes, like ``c_comment``),
    at most ``limit`` characters: a newline would end the comment line and make the
    IR unparsable, and a NUL would cut the IR text short where LLVM reads it.
    """
    return _shown(text, limit, lambda previous, ch, last: ch == '"')


def c_string(text: str) -> str:
    """``text`` as a C string literal (with its quotes) of exactly its UTF-8 bytes.

    Printable ASCII is kept except ``"``, ``\\`` and ``?``; every other byte is a
    three-digit octal escape (which no following digit can extend), so the literal
    is one line of printable ASCII and holds no trigraph. A NUL in ``text`` becomes
    ``\\000`` and ends the string for C functions that read it.
    """
    out = []
    for ch in text:
        if ch in _C_STRING_KEEP:
            out.append(ch)
        else:
            out.extend(f"\\{b:03o}" for b in ch.encode("utf-8", "surrogatepass"))
    return '"' + "".join(out) + '"'


def identifier(text: str, limit: int = 40) -> str:
    """The first ``limit`` characters of ``text`` with each one outside ASCII
    ``[A-Za-z0-9_]`` replaced by ``_`` (possibly empty, possibly starting with a
    digit: callers put it after a prefix of their own, such as ``L3_``)."""
    return "".join(ch if ch in _IDENTIFIER_CHARS else "_" for ch in text[:limit])


def unique_name(base: str, taken: set[str]) -> str:
    """``base``, or ``base_2``, ``base_3``... : the first not in ``taken``, which it
    joins (the frontends name the layers they create after the model's nodes)."""
    name, k = base, 1
    while name in taken:
        k += 1
        name = f"{base}_{k}"
    taken.add(name)
    return name
