"""Outputs checked before any work and written atomically, and user arrays read, with
user-facing errors."""

from __future__ import annotations

import io
import math
import os
import secrets
import stat
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO

import numpy as np

from patcc.errors import PatccError


def atomic_write(path: str | os.PathLike[str], write: Callable[[IO[bytes]], object]) -> None:
    """Write a file through ``write(fileobj)``, all or nothing.

    The bytes go to a temporary file in the destination's directory that is renamed
    over it only when ``write`` returns; on any error the temporary file is removed
    and the destination is untouched. A symbolic link is followed, as ``ld`` does:
    its target is replaced and the link kept. A replaced file keeps its permission
    bits; a new one gets 0666 less the umask, as any tool's output does. An existing
    destination that is not a regular file (a pipe, ``/dev/null``) is written in
    place, as nothing may be renamed over it: the bytes are made in memory first (so
    ``write`` may seek, and a failure writes nothing), then written through.

    Raises ``PatccError`` (naming ``path``) for an empty path, a directory, a link
    that loops, a missing directory, or a file that cannot be written.
    """
    where = os.fspath(path)
    if not where:
        raise PatccError("the output path is empty; name a file to write")
    destination = Path(os.path.realpath(where))  # through every symbolic link
    try:
        existing: os.stat_result | None = destination.stat()
    except FileNotFoundError:
        existing = None
    except OSError as e:  # a link that loops (realpath stops there), no permission
        raise PatccError(f"cannot write: {e.strerror}", where=where) from e
    if existing is not None and stat.S_ISDIR(existing.st_mode):
        raise PatccError("is a directory; name a file to write in it (e.g. DIR/NAME)",
                         where=where)
    if existing is not None and not stat.S_ISREG(existing.st_mode):
        made = io.BytesIO()
        write(made)
        try:
            with open(destination, "wb") as f:
                f.write(made.getbuffer())
        except OSError as e:
            raise PatccError(f"cannot write: {e.strerror or e}", where=where) from e
        return
    directory = destination.parent
    if not directory.is_dir():
        raise PatccError("the directory does not exist", where=where)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    while True:  # tempfile.mkstemp would create it 0600, whatever the umask
        tmp = directory / f".{destination.name}.{secrets.token_hex(4)}.tmp"
        try:
            fd = os.open(tmp, flags, 0o666)  # the kernel applies the umask
            break
        except FileExistsError:
            continue
        except OSError as e:
            raise PatccError(f"cannot write: {e.strerror}", where=where) from e
    try:
        with os.fdopen(fd, "wb") as f:
            if existing is not None:
                os.fchmod(f.fileno(), existing.st_mode & 0o777)
            write(f)
        os.replace(tmp, destination)
    except OSError as e:  # a full disk, a quota: the user's to fix
        tmp.unlink(missing_ok=True)
        raise PatccError(f"cannot write: {e.strerror or e}", where=where) from e
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def check_output(output: str, inputs: Sequence[str | os.PathLike[str]], example: str,
                 package: bool = False) -> None:
    """Refuse, before any work, an ``-o OUTPUT`` that cannot be written or would lose
    something.

    Refused: an empty name; an existing directory (unless ``package``: an OpenCL
    target writes a package directory, and ``write_package`` decides which existing
    one it may replace), or one holding an input; a file that is one of ``inputs``
    under any name (the same path, a symbolic or a hard link). ``example`` is a file
    name to suggest. Raises ``PatccError``.
    """
    if not output:
        raise PatccError(f"the output name is empty; name the file to write (e.g. -o {example})",
                         where="-o")
    out = Path(output)
    if out.is_dir():
        if not package:
            raise PatccError("is a directory; -o names the file to write (e.g. -o "
                             f"{out / example})", where=output)
        for source in inputs:
            if out.resolve() in Path(source).resolve().parents:
                raise PatccError(f"holds the input {os.fspath(source)!r}, which replacing "
                                 "the package would delete; choose another output directory",
                                 where=output)
    for source in inputs:
        try:
            same = os.path.samefile(out, source)
        except OSError:  # the output does not exist yet (or the input does not)
            continue
        if same:
            raise PatccError(f"is also the input {os.fspath(source)!r}: writing it would "
                             "destroy the input; choose another output name", where=output)


NPZ_SAFE_CHARS = frozenset(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.")


def npz_key(name: str) -> str:
    """The key ``name`` has in an ``.npz`` that ``save_npz`` writes (its member is the
    key plus ``.npy``).

    A name of ASCII letters, digits and ``-_.`` that does not start with ``.`` is its
    own key; any other name is percent-encoded (each byte of its UTF-8 outside that
    set as ``%XX``, a leading ``.`` as ``%2E``), so no key holds a ``/``, a ``\\`` or a
    ``..`` path and ``urllib.parse.unquote(key) == name`` for every name.
    """
    if name and name[0] != "." and all(ch in NPZ_SAFE_CHARS for ch in name):
        return name
    key = "".join(ch if ch in NPZ_SAFE_CHARS else
                  "".join(f"%{b:02X}" for b in ch.encode("utf-8", "surrogatepass"))
                  for ch in name)
    return "%2E" + key[1:] if key.startswith(".") else key


def save_npz(path: str | os.PathLike[str], arrays: Mapping[str, np.ndarray]) -> None:
    """Save arrays into an ``.npz`` file, atomically, each under ``npz_key(name)``.

    Written member by member rather than through ``np.savez(**arrays)``, whose own
    keyword arguments (``file``, ``allow_pickle``) a model's output names could
    collide with. Raises ``PatccError`` when a key is too long for a zip member name
    (64 KiB) or the directory cannot be written.
    """
    import zipfile

    members = {npz_key(name) + ".npy": np.asanyarray(value) for name, value in arrays.items()}
    for member in members:
        if len(member.encode()) > 0xFFFF:
            raise PatccError(f"an output name is too long for an .npz member ({len(member)} "
                             "characters encoded; at most 65535)", where=str(path))

    def write(f: IO[bytes]) -> None:
        with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
            for member, value in members.items():
                with archive.open(member, "w", force_zip64=True) as out:
                    np.lib.format.write_array(out, value, allow_pickle=False)

    atomic_write(path, write)


def load_npy(path: str | os.PathLike[str]) -> np.ndarray:
    """Load one array from a ``.npy`` file.

    Only a regular file is opened (a named pipe would block, a device such as
    ``/dev/zero`` never ends), and its header is checked against the file's size
    before anything is allocated (a few bytes may claim petabytes). Raises
    ``PatccError`` naming ``path`` if it is missing, not a regular file, truncated,
    or not one array.
    """
    p = Path(path)
    where = str(p)
    try:
        mode = p.stat().st_mode
    except FileNotFoundError:
        raise PatccError("no such file", where=where) from None
    except OSError as e:
        raise PatccError(f"cannot read: {e.strerror}", where=where) from e
    if stat.S_ISDIR(mode):
        raise PatccError("is a directory; give a .npy file", where=where)
    if stat.S_ISFIFO(mode):
        raise PatccError("is a named pipe, not a .npy file; save the array to a file",
                         where=where)
    if not stat.S_ISREG(mode):
        raise PatccError("is not a regular file (a device or a socket); give a .npy file",
                         where=where)
    fmt = np.lib.format
    try:
        with p.open("rb") as f:
            if f.read(4) == b"PK\x03\x04":
                raise PatccError("holds several arrays (.npz); give one .npy per input",
                                 where=where)
            f.seek(0)
            version = fmt.read_magic(f)
            if version == (1, 0):
                shape, _, dtype = fmt.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, _, dtype = fmt.read_array_header_2_0(f)
            else:  # 3.0: structured arrays with non-ASCII field names, never an input
                raise PatccError(f".npy format version {version[0]}.{version[1]} is not a "
                                 "model input; save a float array with numpy.save",
                                 where=where)
            promised = math.prod(shape) * dtype.itemsize
            held = os.fstat(f.fileno()).st_size - f.tell()
            if promised > held:
                raise PatccError(f"truncated: its header promises a {dtype} array of shape "
                                 f"{shape}, {promised} bytes, and the file holds {held}",
                                 where=where)
            f.seek(0)
            value = np.load(f, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise PatccError(f"not a .npy array file ({e})", where=where) from e
    return value


def cache_dir() -> Path:
    """Where patcc keeps its per-user cache."""
    if os.environ.get("PATCC_CACHE_DIR"):
        return Path(os.environ["PATCC_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "patcc"
