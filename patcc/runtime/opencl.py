"""Running OpenCL packages through pyopencl: ``load(package)`` -> a callable model.

The device is the first one pyopencl finds (PoCL on a CPU-only machine), or the one
``PATCC_OPENCL_DEVICE`` names: an index into the list of all platforms' devices, or
a case-insensitive substring of ``"<platform> <device>"``. With ``profile=True`` the
queue records an event per kernel and ``layer_times()`` gives each layer's time.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from patcc.errors import ExecutionError
from patcc.ir.graph import TensorType
from patcc.runtime.interpreter import Inputs, bind_inputs

MANIFEST = "manifest.json"
FORMAT = "patcc-opencl"


def is_package(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a directory holding an OpenCL package's manifest."""
    return (Path(path) / MANIFEST).is_file()


def _pyopencl() -> Any:
    try:
        import pyopencl
    except ImportError as e:
        raise ExecutionError("running an OpenCL package needs pyopencl (pip install "
                         "'patcc[opencl]') and an OpenCL driver (e.g. Debian's "
                         "pocl-opencl-icd)") from e
    return pyopencl


def devices() -> list[Any]:
    """Every OpenCL device of every platform, in the order PATCC_OPENCL_DEVICE counts."""
    cl = _pyopencl()
    try:
        platforms = cl.get_platforms()
    except cl.Error as e:  # no ICD installed: pyopencl raises PLATFORM_NOT_FOUND_KHR
        raise ExecutionError(f"no OpenCL platform found ({e}); install a driver, e.g. "
                         "Debian's pocl-opencl-icd") from e
    return [d for p in platforms for d in p.get_devices()]


def _describe(device: Any) -> str:
    return f"{device.platform.name.strip()} {device.name.strip()}"


def select_device(spec: str | None = None) -> Any:
    """The device ``spec`` (or ``PATCC_OPENCL_DEVICE``) names, else the first one."""
    spec = spec if spec is not None else os.environ.get("PATCC_OPENCL_DEVICE")
    found = devices()
    if not found:
        raise ExecutionError("no OpenCL device found; install a driver, e.g. Debian's "
                         "pocl-opencl-icd")
    if not spec:
        return found[0]
    if spec.isdigit():
        if int(spec) >= len(found):
            raise ExecutionError(f"PATCC_OPENCL_DEVICE={spec}: there are {len(found)} device(s): "
                             + "; ".join(f"{i}: {_describe(d)}" for i, d in enumerate(found)))
        return found[int(spec)]
    matches = [d for d in found if spec.lower() in _describe(d).lower()]
    if not matches:
        raise ExecutionError(f"PATCC_OPENCL_DEVICE={spec!r} matches no device; there are: "
                         + "; ".join(f"{i}: {_describe(d)}" for i, d in enumerate(found)))
    return matches[0]


def has_fp16(device: Any) -> bool:
    """Whether ``device`` advertises half-precision arithmetic (``cl_khr_fp16``)."""
    return "cl_khr_fp16" in device.extensions.split()


def read_manifest(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The package's manifest, checked field by field (every one the runtime reads);
    ``PatccError`` naming the file and the field otherwise."""
    file = Path(path) / MANIFEST
    if not file.is_file():  # missing, or a pipe that would block the read
        raise ExecutionError("no such file (an OpenCL package holds one)", where=str(file))
    try:
        manifest = json.loads(file.read_bytes())
    except OSError as e:
        raise ExecutionError(f"cannot read the OpenCL package manifest: {e.strerror}",
                         where=str(file)) from e
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
        raise ExecutionError(f"not valid JSON ({e}); recompile the package", where=str(file)) \
            from e
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ExecutionError(f"not a patcc OpenCL package (format {FORMAT!r} expected)",
                         where=str(file))
    _check_manifest(manifest, str(file))
    for key in ("source", "weights"):  # read whole later: a pipe would block, a device never end
        if not (Path(path) / manifest[key]).is_file():
            raise ExecutionError(f"the package's {key} file is missing or not a regular file; "
                             "recompile the package", where=str(Path(path) / manifest[key]))
    return manifest


_KINDS = {
    "count": ("a whole number >= 0",
              lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0),
    "sizes": ("a list of whole numbers >= 0",
              lambda v: isinstance(v, list) and all(isinstance(n, int) and not isinstance(n, bool)
                                                    and n >= 0 for n in v)),
    "text": ("a string", lambda v: isinstance(v, str)),
    "list": ("a list", lambda v: isinstance(v, list)),
    "object": ("an object", lambda v: isinstance(v, dict)),
    "file": ("a file name in the package",
             lambda v: isinstance(v, str) and v not in ("", ".", "..") and "/" not in v
             and "\\" not in v),
}


def _check_manifest(manifest: dict[str, Any], where: str) -> None:
    """Raise ``PatccError`` unless every field the runtime reads is there, of its type,
    and the inputs and outputs lie inside the workspace."""

    def fail(what: str) -> NoReturn:
        raise ExecutionError(f"corrupt manifest: {what}; recompile the package", where=where)

    def field(document: Any, key: str, kind: str, at: str = "") -> Any:
        if key not in document:
            fail(f"{at}{key!r} is missing")
        value = document[key]
        expected, ok = _KINDS[kind]
        if not ok(value):
            fail(f"{at}{key!r} is {json.dumps(value)[:40]}, expected {expected}")
        return value

    if field(manifest, "precision", "text") not in ("fp32", "fp16"):
        fail(f"'precision' is {json.dumps(manifest['precision'])[:40]}, expected \"fp32\" "
             "or \"fp16\"")
    workspace = field(manifest, "workspace_elements", "count")
    field(manifest, "source", "file")
    field(manifest, "weights", "file")
    field(manifest, "weights_bytes", "count")
    if "build_options" in manifest:
        field(manifest, "build_options", "text")
    for side in ("inputs", "outputs"):
        for name, slot in field(manifest, side, "object").items():
            at = f"{side}[{name!r}]: "
            if not isinstance(slot, dict):
                fail(f"{at}is {json.dumps(slot)[:40]}, expected an object")
            end = field(slot, "offset", "count", at) + math.prod(field(slot, "shape", "sizes", at))
            if end > workspace:
                fail(f"{at}ends at element {end}, past the workspace's {workspace}")
    for i, launch in enumerate(field(manifest, "kernels", "list")):
        at = f"kernels[{i}]: "
        if not isinstance(launch, dict):
            fail(f"{at}is {json.dumps(launch)[:40]}, expected an object")
        field(launch, "name", "text", at)
        field(launch, "layer", "text", at)
        field(launch, "global", "sizes", at)
        field(launch, "local", "sizes", at)


class OpenCLModel:
    """A loaded package: call it with inputs (positional or by name), get outputs."""

    def __init__(self, path: str | os.PathLike[str], device: Any = None,
                 profile: bool = False) -> None:
        self.path = Path(path)
        self.manifest = read_manifest(path)  # a corrupt package is told, driver or not
        cl = _pyopencl()
        m = self.manifest
        self.precision = m["precision"]
        self.dtype = np.float16 if self.precision == "fp16" else np.float32
        self.device = device if device is not None else select_device()
        if self.precision == "fp16" and not has_fp16(self.device):
            raise ExecutionError(f"the package is fp16 and {_describe(self.device)} lacks "
                             "cl_khr_fp16; compile with --precision fp32")
        self.context = cl.Context([self.device])
        props = cl.command_queue_properties.PROFILING_ENABLE if profile else 0
        self.queue = cl.CommandQueue(self.context, properties=props)
        self.profile = profile
        source = (self.path / m["source"]).read_text()
        try:
            self.program = cl.Program(self.context, source).build(
                options=m.get("build_options", ""))
        except cl.RuntimeError as e:
            raise ExecutionError(f"the OpenCL compiler of {_describe(self.device)} rejected "
                             f"the package's kernels: {str(e).strip()[:2000]}",
                             where=str(self.path / m["source"])) from e
        weights = np.fromfile(self.path / m["weights"], dtype=np.uint8)
        if weights.size != m["weights_bytes"]:
            raise ExecutionError(f"weights file has {weights.size} bytes, the manifest says "
                             f"{m['weights_bytes']}", where=str(self.path / m["weights"]))
        mf = cl.mem_flags
        self.wb = cl.Buffer(self.context, mf.READ_ONLY | mf.COPY_HOST_PTR,
                            hostbuf=weights if weights.size else np.zeros(16, np.uint8))
        itemsize = np.dtype(self.dtype).itemsize
        self.ws = cl.Buffer(self.context, mf.READ_WRITE,
                            size=max(16, m["workspace_elements"] * itemsize))
        self.kernels = [(getattr(self.program, k["name"]), k) for k in m["kernels"]]
        for kernel, _ in self.kernels:
            kernel.set_args(self.ws, self.wb)
        self.signature = {n: TensorType(tuple(s["shape"])) for n, s in m["inputs"].items()}
        self._events: list[tuple[str, Any]] = []

    @property
    def input_names(self) -> list[str]:
        return list(self.manifest["inputs"])

    @property
    def output_names(self) -> list[str]:
        return list(self.manifest["outputs"])

    def run(self, inputs: Inputs) -> dict[str, np.ndarray]:
        """Outputs by name for inputs given positionally or by name (float32)."""
        cl = _pyopencl()
        bound = bind_inputs(self.signature, inputs)
        itemsize = np.dtype(self.dtype).itemsize
        for name, value in bound.items():
            slot = self.manifest["inputs"][name]
            host = np.ascontiguousarray(value, dtype=self.dtype)
            cl.enqueue_copy(self.queue, self.ws, host, dst_offset=slot["offset"] * itemsize)
        events = []
        for kernel, launch in self.kernels:
            event = cl.enqueue_nd_range_kernel(self.queue, kernel, launch["global"],
                                               launch["local"])
            events.append((launch["layer"], event))
        outputs = {}
        for name, slot in self.manifest["outputs"].items():
            host = np.empty(slot["shape"], dtype=self.dtype)
            cl.enqueue_copy(self.queue, host, self.ws, src_offset=slot["offset"] * itemsize)
            outputs[name] = host.astype(np.float32)
        self.queue.finish()
        self._events = events
        return outputs

    def layer_times(self) -> dict[str, float]:
        """Milliseconds each layer's kernels took in the last run (``profile=True``)."""
        if not self.profile:
            raise ExecutionError("layer times need the model loaded with profile=True")
        times: dict[str, float] = {}
        for layer, event in self._events:
            times[layer] = times.get(layer, 0.0) + (event.profile.end - event.profile.start) / 1e6
        return times

    def __call__(self, *args: np.ndarray, **kwargs: np.ndarray) -> Any:
        """``model(x)`` or ``model(input=x)``: one array for a single-output model,
        else a dict name -> array (as a native model's)."""
        if args and kwargs:
            raise ExecutionError("give the inputs either by position or by name, not both")
        outs = self.run(kwargs if kwargs else list(args))
        return next(iter(outs.values())) if len(outs) == 1 else outs

    def __repr__(self) -> str:
        return f"<patcc OpenCL package {self.path} on {_describe(self.device)}>"


def load(path: str | os.PathLike[str], profile: bool = False) -> OpenCLModel:
    """Load the OpenCL package at ``path`` on the selected device."""
    return OpenCLModel(path, profile=profile)
