"""Reading an ONNX file and fixing its input shapes, with user-facing errors."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import onnx
from google.protobuf.message import DecodeError

from patcc.errors import FrontendError
from patcc.ir.layers import IRError, check_size

MIN_OPSET = 7
MAX_OPSET = 28
"""Opsets 22-28 changed the operators patcc converts only in the element types they
allow (bfloat16, 4- and 8-bit types), for Cast in attributes for 8-bit floats, and
for SpaceToDepth by a ``mode`` attribute (DCR by default, as before), which the
converter reads: float32 semantics are otherwise those of opset 21
(tests/test_onnx_node.py checks the schemas and runs ONNX's own node tests,
generated at these opsets)."""


def load_model(model: str | os.PathLike[str] | onnx.ModelProto) -> onnx.ModelProto:
    """Return the ModelProto for a path or a ModelProto, checked and of a supported opset.

    Raises ``PatccError`` for a missing or unreadable file, a file that is not an ONNX
    model, a model the ONNX checker rejects, or an opset outside 7-28.
    """
    if isinstance(model, onnx.ModelProto):
        proto, where = model, "model"
        _check_names(proto, where)
        external = [t.name for t in proto.graph.initializer
                    if t.data_location == onnx.TensorProto.EXTERNAL]
        if external:
            raise FrontendError(f"initializer {external[0]!r} keeps its data in an external file; "
                             "pass the model's path (or load it with onnx.load) so that "
                             "the data is read", where=where)
    else:
        where = str(model)
        path = Path(model)
        if not path.is_file():
            raise FrontendError("not a regular file (a pipe, device or directory)"
                             if path.exists() else "no such file", where=where)
        try:
            data = path.read_bytes()
        except OSError as e:
            raise FrontendError(f"cannot read: {e.strerror}", where=where) from e
        proto = onnx.ModelProto()
        try:
            proto.ParseFromString(data)
        except (DecodeError, RuntimeError, ValueError) as e:
            raise FrontendError("not an ONNX model (the protobuf does not parse; truncated?)",
                             where=where) from e
        if not proto.graph.node and not proto.graph.output:
            raise FrontendError("not an ONNX model (no graph in the file)", where=where)
        _check_names(proto, where)
        if any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer):
            _check_external_data(proto, path.parent, where)
            try:
                onnx.load_external_data_for_model(proto, str(path.parent))
            except (OSError, ValueError, onnx.checker.ValidationError) as e:
                first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                raise FrontendError(f"cannot load external weights: {first}", where=where) from e
    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else "invalid model"
        raise FrontendError(f"invalid ONNX model: {first}", where=where) from e
    opset = default_opset(proto)
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise FrontendError(
            f"opset {opset} is not supported (patcc reads opsets {MIN_OPSET}-{MAX_OPSET}); "
            f"convert it with onnx.version_converter.convert_version(model, 17)",
            where=where,
        )
    return proto


def _check_names(proto: onnx.ModelProto, where: str) -> None:
    """Every name the importer reads must be text: protobuf hands a string field that is
    not valid UTF-8 over as bytes."""
    g = proto.graph
    fields: list[object] = [g.name]
    for node in g.node:
        fields += [node.name, node.op_type, node.domain, *node.input, *node.output]
        fields += [a.name for a in node.attribute]
    for value in (*g.input, *g.output, *g.value_info, *g.initializer):
        fields.append(value.name)
    fields += [imp.domain for imp in proto.opset_import]
    if not all(isinstance(f, str) for f in fields):
        raise FrontendError("not an ONNX model (a name in the graph is not valid UTF-8 text; "
                         "corrupted?)", where=where)


def _check_external_data(proto: onnx.ModelProto, directory: Path, where: str) -> None:
    """External tensor data may only come from regular files inside the model's
    directory (after resolving links), within the file's bounds: a model must not
    make patcc read ``/dev/zero``, a FIFO or another user's file."""
    root = directory.resolve()
    for tensor in proto.graph.initializer:
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        info = {e.key: e.value for e in tensor.external_data}
        what = f"initializer {tensor.name!r}: external data"
        location = info.get("location", "")
        if not location or Path(location).is_absolute() or ".." in Path(location).parts:
            raise FrontendError(f"{what} location {location[:100]!r} must be a relative path "
                                "inside the model's directory", where=where)
        try:
            file = (root / location).resolve()
            regular = file.is_file()
            size = file.stat().st_size if regular else 0
        except (OSError, ValueError) as e:  # a NUL, a name too long, a link loop
            raise FrontendError(f"{what} location {location[:100]!r} cannot be used: {e}",
                             where=where) from e
        if not file.is_relative_to(root):
            raise FrontendError(f"{what} location {location[:100]!r} leads outside the model's "
                             "directory", where=where)
        if not regular:
            raise FrontendError(f"{what} {location[:100]!r} is not a regular file", where=where)
        try:
            offset, length = int(info.get("offset", 0)), int(info.get("length", -1))
        except ValueError:
            raise FrontendError(f"{what} offset or length is not an integer", where=where) from None
        if offset < 0 or offset > size or length < -1 or (length >= 0 and offset + length > size):
            raise FrontendError(f"{what} offset {offset} and length {length} do not lie inside "
                             f"{location[:100]!r} ({size} bytes)", where=where)


def default_opset(proto: onnx.ModelProto) -> int:
    """The version of the default ("" / ai.onnx) operator set the model imports."""
    for imp in proto.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return int(imp.version)
    raise FrontendError("the model imports no ai.onnx operator set", where="model")


def parse_shape_spec(spec: str) -> tuple[str, tuple[int, ...]]:
    """Parse ``NAME=1x3x224x224`` (as given to ``--input-shape``) into (name, shape).

    Raises ``PatccError`` quoting the bad spec and showing a valid one.
    """
    name, sep, dims = spec.rpartition("=")
    try:
        shape = tuple(int(d) for d in dims.lower().split("x"))
    except ValueError:
        shape = ()
    if not sep or not name or not shape or any(d <= 0 for d in shape):
        raise FrontendError(f"bad input shape {spec!r}; expected NAME=DIMS, e.g. input=1x3x224x224")
    return name, shape


def resolve_input_shapes(
    proto: onnx.ModelProto, overrides: Mapping[str, tuple[int, ...]] | None
) -> dict[str, tuple[int, ...]]:
    """Static shapes of the graph's (non-initializer) inputs.

    A symbolic batch dimension (axis 0) becomes 1; any other unknown dimension must
    come from ``overrides``. Raises ``PatccError`` for an unknown dimension, an
    override naming no input, or an override that contradicts a fixed dimension.
    """
    overrides = dict(overrides or {})
    initializers = {t.name for t in proto.graph.initializer}
    inputs = [i for i in proto.graph.input if i.name not in initializers]
    names = [i.name for i in inputs]
    for name in overrides:
        if name not in names:
            raise FrontendError(f"--input-shape names {name!r}, but the model's inputs are {names}")
    shapes = {}
    for value in inputs:
        where = f"input {value.name!r}"
        tt = value.type.tensor_type
        if not value.type.HasField("tensor_type"):
            raise FrontendError("only tensor inputs are supported", where=where)
        if tt.elem_type != onnx.TensorProto.FLOAT:
            dtype = (onnx.TensorProto.DataType.Name(tt.elem_type).lower()
                     if tt.elem_type in onnx.TensorProto.DataType.values() else
                     f"code {tt.elem_type}")
            raise FrontendError(f"has dtype {dtype}; patcc compiles float32 models", where=where)
        dims = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
        if not tt.HasField("shape"):
            dims = []
        given = overrides.get(value.name)
        if given is not None:
            if tt.HasField("shape") and (
                len(given) != len(dims)
                or any(d is not None and d != g for d, g in zip(dims, given, strict=True))
            ):
                declared = "x".join("?" if d is None else str(d) for d in dims)
                raise FrontendError(
                    f"--input-shape {'x'.join(map(str, given))} contradicts the declared "
                    f"shape {declared}",
                    where=where,
                )
            shapes[value.name] = _checked(tuple(given), where)
            continue
        if not tt.HasField("shape"):
            raise FrontendError(
                f"has no declared shape; give one with --input-shape {value.name}=1x3x224x224",
                where=where,
            )
        if dims and dims[0] is None:
            dims[0] = 1  # a symbolic batch dimension compiles for batch 1
        unknown = [i for i, d in enumerate(dims) if d is None]
        if unknown:
            dim = tt.shape.dim[unknown[0]]
            label = dim.dim_param or "?"
            raise FrontendError(
                f"dimension {unknown[0]} ({label!r}) is unknown; give the shape with "
                f"--input-shape {value.name}=" + "x".join(str(d or "N") for d in dims),
                where=where,
            )
        shapes[value.name] = _checked(tuple(int(d) for d in dims), where)  # type: ignore[arg-type]
    return shapes


def _checked(shape: tuple[int, ...], where: str) -> tuple[int, ...]:
    try:
        check_size("the input", shape)
    except IRError as e:
        raise FrontendError(str(e), where=where) from e
    return shape
