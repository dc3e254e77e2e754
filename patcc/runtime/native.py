"""Loading and running a compiled model (``.so``) through its C ABI with ctypes.

Thread safety: a ``NativeModel`` may be called from several Python threads at once.
ctypes releases the GIL for the call; each Python thread gets its own workspace
(thread-local) and output arrays; the library serialises runs internally (a mutex
around ``patcc_run``), so concurrent calls are safe, though not run in parallel —
the parallelism is inside each run, across the model's own threads.

Loading one file twice gives two objects over one library (the dynamic loader maps
a file once), and the thread count is the library's. Each ``NativeModel`` keeps its
own count and sets it on the library before a run that needs another, under a lock
that every load of the library shares: runs through different objects were
serialised by the library already, so the lock costs only the switch (one
``patcc_set_num_threads`` call, when the counts differ). A private copy of the file
per load would give each load its own library instead, at the price of the weights
mapped once per load and pools of threads competing for the same cores. The
profiling counters (``layer_times``) stay the library's: they sum every load's runs.
"""

from __future__ import annotations

import ctypes
import json
import os
import struct
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from patcc.backends.abi import ABI_VERSION, ERROR_CODES
from patcc.backends.target import host_features
from patcc.errors import ExecutionError
from patcc.ir.graph import TensorType
from patcc.runtime.interpreter import bind_inputs

_ELF_MACHINES = {62: "x86_64", 183: "aarch64", 40: "arm"}
_WORKSPACE_ALIGN = 64


def parse_model_info(raw: str | bytes | None, where: str) -> dict[str, Any]:
    """The JSON document ``patcc_model_info`` returned, checked field by field (every
    one the runtimes read). Raises ``PatccError`` naming ``where`` and what is wrong
    (a model whose bytes were damaged after it was compiled)."""

    def fail(what: str) -> NoReturn:
        raise ExecutionError(f"corrupt model info: {what}; recompile the model", where=where)

    def field(document: dict[str, Any], key: str, kind: type, at: str = "") -> Any:
        if key not in document:
            fail(f"{at}{key!r} is missing")
        value = document[key]
        if not isinstance(value, kind) or isinstance(value, bool):
            fail(f"{at}{key!r} is {json.dumps(value)[:40]}, expected {kind.__name__}")
        if isinstance(value, int) and value < 0:
            fail(f"{at}{key!r} is {value}")
        return value

    if raw is None:
        fail("patcc_model_info returned nothing")
    try:
        info = json.loads(raw)
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
        fail(f"not valid JSON ({e})")
    if not isinstance(info, dict):
        fail(f"{json.dumps(info)[:40]} is not a JSON object")
    target = field(info, "target", dict)
    field(target, "tag", str, "target: ")
    if "isa" in target and not all(isinstance(f, str)
                                   for f in field(target, "isa", list, "target: ")):
        fail(f"target: 'isa' is {json.dumps(target['isa'])[:40]}, expected CPU feature names")
    field(info, "workspace_size", int)
    field(info, "layers", int)
    for side in ("inputs", "outputs"):
        for i, tensor in enumerate(field(info, side, list)):
            at = f"{side}[{i}]: "
            if not isinstance(tensor, dict):
                fail(f"{at}is {json.dumps(tensor)[:40]}, expected an object")
            field(tensor, "name", str, at)
            shape = field(tensor, "shape", list, at)
            if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0
                       for n in shape):
                fail(f"{at}'shape' is {json.dumps(shape)[:40]}, expected dimensions")
            try:
                np.dtype(field(tensor, "dtype", str, at))
            except (TypeError, ValueError):
                fail(f"{at}'dtype' is {json.dumps(tensor['dtype'])[:40]}, not a numpy type")
    return info


class _SharedLibrary:
    """What every ``NativeModel`` over one loaded library shares: the lock under which
    one sets its thread count and runs, and the count the library has now."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.num_threads: int | None = None


_LIBRARIES: dict[int, _SharedLibrary] = {}
"""By dlopen handle: loads of the same file get the same handle (ctypes never closes
one, so a handle is never reused for another library)."""
_LIBRARIES_LOCK = threading.Lock()


def _shared_library(lib: ctypes.CDLL) -> _SharedLibrary:
    with _LIBRARIES_LOCK:
        return _LIBRARIES.setdefault(int(lib._handle), _SharedLibrary())


def elf_machine(path: str | os.PathLike[str]) -> str:
    """The architecture of an ELF shared object, after checking it is whole.

    Raises ``PatccError`` for a file that is not ELF, or whose program headers,
    loadable segments or section headers reach past its end: dlopen would map such a
    file and the process would die of SIGBUS on first touch.
    """
    p = Path(path)
    if not p.is_file():
        raise ExecutionError("no such file", where=str(p))
    size = p.stat().st_size
    with p.open("rb") as f:
        head = f.read(64)
        if len(head) < 52 or head[:4] != b"\x7fELF" or head[4] not in (1, 2):
            raise ExecutionError("not a compiled patcc model (not an ELF shared object)",
                             where=str(p))
        is64, endian = head[4] == 2, "<" if head[5] == 1 else ">"
        if is64:
            (machine,) = struct.unpack_from(endian + "H", head, 18)
            phoff, shoff = struct.unpack_from(endian + "QQ", head, 32)
            phentsize, phnum, shentsize, shnum = struct.unpack_from(endian + "HHHH", head, 54)
        else:
            (machine,) = struct.unpack_from(endian + "H", head, 18)
            phoff, shoff = struct.unpack_from(endian + "II", head, 28)
            phentsize, phnum, shentsize, shnum = struct.unpack_from(endian + "HHHH", head, 42)
        ends = [("program headers", phoff + phentsize * phnum),
                ("section headers", shoff + shentsize * shnum)]
        if phoff + phentsize * phnum <= size:
            f.seek(phoff)
            table = f.read(phentsize * phnum)
            for i in range(phnum):
                entry = table[i * phentsize:(i + 1) * phentsize]
                if is64:
                    kind, _, offset, _, _, filesz = struct.unpack_from(endian + "IIQQQQ", entry)
                else:
                    kind, offset, _, _, filesz = struct.unpack_from(endian + "IIIII", entry)
                if kind == 1:  # PT_LOAD
                    ends.append((f"segment {i}", offset + filesz))
    for what, end in ends:
        if end > size:
            raise ExecutionError(f"truncated or corrupt shared object ({what} end at byte {end}, "
                             f"the file has {size}); recompile it", where=str(p))
    return _ELF_MACHINES.get(machine, f"machine {machine}")


def host_machine() -> str:
    import platform

    m = platform.machine().lower()
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(m, m)


def _dlopen_fresh(path: str) -> ctypes.CDLL:
    """dlopen ``path`` through a fresh name.

    The dynamic loader reuses an already loaded object with the same file name, so a
    model recompiled to the same path would come back stale; under a new name it
    matches only an object with the same device and inode, that is the same file.
    """
    import tempfile

    with tempfile.TemporaryDirectory(prefix="patcc-load-") as tmp:
        alias = Path(tmp) / Path(path).name
        alias.symlink_to(path)
        try:
            return ctypes.CDLL(str(alias))
        except OSError as e:
            raise ExecutionError(f"cannot load: {e}", where=path) from e


class CompiledModelRunner:
    """What every way of running a compiled ``.so`` shares: the signature read from
    its model info, calling with arrays by position or by name, and the repr.
    Subclasses set ``path`` and ``info`` (then ``_read_signature``) and define ``run``."""

    path: str
    info: dict[str, Any]
    inputs: dict[str, TensorType]
    outputs: dict[str, TensorType]
    where = ""
    """How it runs, for the repr (e.g. ", under qemu-aarch64")."""

    def _read_signature(self) -> None:
        self.inputs = {t["name"]: TensorType(tuple(t["shape"]), t["dtype"])
                       for t in self.info["inputs"]}
        self.outputs = {t["name"]: TensorType(tuple(t["shape"]), t["dtype"])
                        for t in self.info["outputs"]}

    def run(self, inputs: Mapping[str, np.ndarray] | list[np.ndarray]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def __call__(self, *args: np.ndarray, **kwargs: np.ndarray) -> Any:
        if args and kwargs:
            raise ExecutionError("give the inputs either by position or by name, not both")
        outs = self.run(kwargs if kwargs else list(args))
        return next(iter(outs.values())) if len(outs) == 1 else outs

    def __repr__(self) -> str:
        ins = ", ".join(f"{n}: {t}" for n, t in self.inputs.items())
        return f"<patcc model {self.path} ({ins}) on {self.info['target']['tag']}{self.where}>"


class NativeModel(CompiledModelRunner):
    """A compiled model loaded into this process; call it with numpy arrays.

    ``model(x)`` or ``model(input=x)`` returns one array for a single-output model,
    else a dict name -> array.
    """

    def __init__(self, path: str | os.PathLike[str], num_threads: int | None = None) -> None:
        self.path = str(Path(path).resolve())
        arch = elf_machine(self.path)
        if arch != host_machine():
            raise ExecutionError(f"built for {arch}, this machine is {host_machine()}; run it "
                             "on the target device", where=str(path))
        lib = _dlopen_fresh(self.path)
        try:
            info_fn = lib.patcc_model_info
            self._run = lib.patcc_run
            set_threads = lib.patcc_set_num_threads
            abi = lib.patcc_abi_version
        except AttributeError as e:
            raise ExecutionError("not a patcc model (no patcc_* entry points)",
                                 where=str(path)) from e
        abi.restype = ctypes.c_int32
        if abi() != ABI_VERSION:
            raise ExecutionError(f"ABI version {abi()} is not this runtime's {ABI_VERSION}; "
                             "recompile the model", where=str(path))
        info_fn.restype = ctypes.c_char_p
        self.info: dict[str, Any] = parse_model_info(info_fn(), str(path))
        needs = set(self.info["target"].get("isa", []))
        if needs - host_features():
            raise ExecutionError(
                f"compiled for {self.info['target']['tag']}, whose code needs CPU features "
                f"this CPU lacks: {', '.join(sorted(needs - host_features()))}; recompile "
                "for this CPU (--target x86_64) or a narrower tag (e.g. x86_64-avx2)",
                where=str(path))
        self._run.restype = ctypes.c_int32
        self._run.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
                              ctypes.c_size_t]
        set_threads.restype = ctypes.c_int32
        set_threads.argtypes = [ctypes.c_int32]
        self._set_threads = set_threads
        get_threads = lib.patcc_get_num_threads
        get_threads.restype = ctypes.c_int32
        self._get_threads = get_threads
        self._lib = lib
        self._shared = _shared_library(lib)
        self._read_signature()
        self.workspace_size = int(self.info["workspace_size"])
        self._local = threading.local()
        self._num_threads = 0
        self.num_threads = num_threads if num_threads is not None else 0  # one per CPU

    @property
    def num_threads(self) -> int:
        """The threads this model's runs use: its own count, whatever another load of
        the same file asked for. Setting 0 means one per CPU the process may run on."""
        return self._num_threads

    @num_threads.setter
    def num_threads(self, n: int) -> None:
        with self._shared.lock:
            self._use_threads(int(n))

    def _use_threads(self, n: int) -> None:
        """Set ``n`` threads on the library and remember the count it gave (0 becomes
        the CPU count); the caller holds the shared lock."""
        rc = self._set_threads(n)
        if rc:
            reason = ERROR_CODES.get(rc, (f"error {rc}", "unknown error"))[1]
            raise ExecutionError(f"cannot use {n} threads: {reason}", where=self.path)
        self._num_threads = self._shared.num_threads = int(self._get_threads())

    def _workspace(self) -> tuple[int, np.ndarray]:
        ws = getattr(self._local, "workspace", None)
        if ws is None:
            buf = np.empty(self.workspace_size + _WORKSPACE_ALIGN, np.uint8)
            start = -buf.ctypes.data % _WORKSPACE_ALIGN
            ws = (buf.ctypes.data + start, buf)
            self._local.workspace = ws
        return ws

    def run(self, inputs: Mapping[str, np.ndarray] | list[np.ndarray],
            out: Mapping[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        """Run on inputs (by name or position); returns output name -> array.

        ``out`` (output name -> a C-contiguous float32 array of the output's shape)
        receives the outputs instead of new arrays: a caller that runs a model in a
        loop then pays no page faults for fresh output memory on every run (large
        outputs are fresh pages from the allocator each time)."""
        bound = bind_inputs(self.inputs, inputs)
        arrays = [np.ascontiguousarray(bound[n]) for n in self.inputs]
        outs = {n: np.empty(t.shape, np.float32) for n, t in self.outputs.items()} \
            if out is None else self._check_out(out)
        in_ptrs = (ctypes.c_void_p * max(1, len(arrays)))(*[a.ctypes.data for a in arrays])
        out_ptrs = (ctypes.c_void_p * max(1, len(outs)))(*[a.ctypes.data for a in outs.values()])
        ws_ptr, _keep = self._workspace()
        with self._shared.lock:  # another load of the library may have set another count
            if self._shared.num_threads != self._num_threads:
                self._use_threads(self._num_threads)
            rc = self._run(in_ptrs, out_ptrs, ws_ptr, self.workspace_size)
        if rc:
            name, text = ERROR_CODES.get(rc, (f"error {rc}", "unknown error"))
            raise ExecutionError(f"patcc_run failed with {name}: {text}", where=self.path)
        return outs

    def _check_out(self, out: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        if set(out) != set(self.outputs):
            raise ExecutionError(f"out= names {sorted(out)}; the model's outputs are "
                             f"{sorted(self.outputs)}", where=self.path)
        for name, t in self.outputs.items():
            a = out[name]
            if not (isinstance(a, np.ndarray) and a.dtype == np.float32
                    and a.shape == tuple(t.shape) and a.flags.c_contiguous
                    and a.flags.writeable):
                raise ExecutionError(f"out[{name!r}] must be a writable C-contiguous float32 "
                                 f"array of shape {tuple(t.shape)}", where=self.path)
        return {name: out[name] for name in self.outputs}

    def layer_times(self) -> np.ndarray:
        """Seconds spent in each layer over all runs so far (profiling builds only)."""
        try:
            fn = self._lib.patcc_profile_ns
        except AttributeError as e:
            raise ExecutionError("not a profiling build; compile with profile=True") from e
        out = np.zeros(int(self.info["layers"]), np.int64)
        fn.restype = ctypes.c_int32
        fn(out.ctypes.data_as(ctypes.c_void_p), ctypes.c_int32(len(out)))
        return out / 1e9
