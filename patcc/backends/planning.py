"""What both backends decide alike: which kernel family runs each conv (from the IR
facts the passes established, which kernels require and never recompute), the
workspace (activation buffers laid out in one block, reusing dead ones' bytes, with
Reshape views and in-place Concat inputs sharing their owner's) and the weight blob
(constants laid end to end).

Kernel families, one name each in both backends, the docs and ``--report``:

- ``pattern``: a pattern-style conv over its compressed weights, one loop per pattern;
- ``depthwise``: a dense depthwise conv, the same kernel with one tap set;
- ``sparse``: a 1x1 conv with unstructured zeros, as a sparse x dense product over the
  non-zeros in filter order;
- ``gemm``: a dense conv (every weight) as a matrix product.

A buffer is live from the step that first writes it to the last step that reads it.
Two buffers live at the same step must not overlap; buffers never live together may
share bytes. Placement is the greedy interval packing TFLite Micro's
``GreedyMemoryPlanner`` and TVM's storage rewrite use: largest buffer first, each at
the lowest aligned offset free of the already-placed buffers it is live with.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from patcc.errors import BackendError
from patcc.ir import Concat, Conv, Graph, Layer, Reshape
from patcc.ir.storage import CompressedWeights
from patcc.passes.reorder import sparse_pointwise

PATTERN = "pattern"
DEPTHWISE = "depthwise"
SPARSE = "sparse"
GEMM = "gemm"

T = TypeVar("T")


def conv_kernels(conv: Conv) -> tuple[str, ...]:
    """The kernel families that can run ``conv``, by its IR facts alone, the one that
    skips the most work first. A backend runs one of them: the LLVM backend ranks them
    with its cost model (and the tuner times them), the OpenCL backend takes the first.

    A pattern-style conv may also run dense, where removing kernels does not pay; a
    depthwise conv never runs as a GEMM (one row per group).
    """
    if conv.pattern is not None:
        return (PATTERN,) if conv.is_depthwise else (PATTERN, GEMM)
    if conv.is_depthwise:
        return (DEPTHWISE,)
    if sparse_pointwise(conv):
        return (SPARSE, GEMM)
    return (GEMM,)


def required(value: T | None, layer: Layer, what: str, pass_name: str) -> T:
    """An IR fact a kernel needs, which ``BACKEND_PIPELINE`` establishes (pass
    ``pass_name``): kernels read it, they never recompute it. A graph built without the
    pipeline is a ``BackendError`` naming the pass."""
    if value is None:
        raise BackendError(f"has no {what}; run patcc.passes.BACKEND_PIPELINE (its "
                           f"{pass_name} pass) before a backend builds the graph",
                           f"layer {layer.name!r}")
    return value


def required_compressed_weights(conv: Conv) -> CompressedWeights:
    """What the ``pattern`` and ``depthwise`` kernels read (pass ``compress_weights``)."""
    return required(conv.compressed, conv, "compressed weights", "compress_weights")


def required_filter_order(conv: Conv) -> np.ndarray:
    """The order the ``sparse`` kernel visits filters in (pass ``reorder_filters``)."""
    return required(conv.filter_order, conv, "filter order", "reorder_filters")


@dataclass(frozen=True)
class Buffer:
    """An activation buffer: its size in bytes and the steps it is live over."""

    name: str
    size: int  # bytes
    first: int  # index of the step that writes it first
    last: int  # index of the last step that reads it (>= first)

    def live_with(self, other: Buffer) -> bool:
        """Whether the two buffers are live at some common step."""
        return self.first <= other.last and other.first <= self.last


@dataclass(frozen=True)
class MemoryPlan:
    """Where each buffer lives in the workspace, and how big the workspace is."""

    offsets: Mapping[str, int]  # byte offset of each buffer in the workspace
    peak: int  # workspace bytes needed (a multiple of the alignment)

    def overlaps(self, a: Buffer, b: Buffer) -> bool:
        """Whether ``a`` and ``b`` share a byte in this plan (zero-size buffers share none)."""
        if a.size == 0 or b.size == 0:
            return False
        start_a, start_b = self.offsets[a.name], self.offsets[b.name]
        return start_a < start_b + b.size and start_b < start_a + a.size


def _align_up(value: int, alignment: int) -> int:
    return (value + alignment - 1) // alignment * alignment


def _check(buffers: Sequence[Buffer], alignment: int) -> None:
    """Raise ValueError naming the first bad buffer, or for a bad alignment."""
    if alignment < 1 or alignment & (alignment - 1):
        raise ValueError(f"workspace alignment {alignment} must be a power of two (eg. 64)")
    seen: set[str] = set()
    for b in buffers:
        if b.name in seen:
            raise ValueError(f"buffer {b.name!r} is listed twice; each buffer needs one name")
        seen.add(b.name)
        if b.size < 0:
            raise ValueError(f"buffer {b.name!r} has size {b.size}; sizes are bytes >= 0")
        if not 0 <= b.first <= b.last:
            raise ValueError(
                f"buffer {b.name!r} is live over steps [{b.first}, {b.last}]; expected "
                "0 <= first <= last (eg. first=2, last=5)"
            )


def plan_memory(buffers: Sequence[Buffer], alignment: int = 64) -> MemoryPlan:
    """Offsets for ``buffers`` in one workspace, so that buffers live together never overlap.

    Takes the buffers (unique names, sizes >= 0, 0 <= first <= last) and the offset
    alignment (a power of two). Returns a ``MemoryPlan`` whose offsets are multiples of
    ``alignment`` (zero-size buffers get 0) and whose ``peak`` is the workspace size,
    rounded up to the alignment. Deterministic: buffers are placed by decreasing size,
    ties broken by earlier first step, then name.
    Raises ValueError for a bad alignment, a repeated name, a negative size or a bad
    live range.
    """
    _check(buffers, alignment)
    offsets = {b.name: 0 for b in buffers}
    placed: list[Buffer] = []
    for buffer in sorted(buffers, key=lambda b: (-b.size, b.first, b.name)):
        if buffer.size == 0:
            continue  # needs no bytes, so it collides with nothing
        busy = sorted(
            (offsets[p.name], offsets[p.name] + p.size) for p in placed if p.live_with(buffer)
        )
        # First fit: slide past each busy range the buffer cannot fit below.
        candidate = 0
        for start, end in busy:
            if candidate + buffer.size <= start:
                break
            candidate = max(candidate, _align_up(end, alignment))
        offsets[buffer.name] = candidate
        placed.append(buffer)
    end = max((offsets[b.name] + b.size for b in placed), default=0)
    return MemoryPlan(offsets=offsets, peak=_align_up(end, alignment))


def naive_peak(buffers: Sequence[Buffer], alignment: int = 64) -> int:
    """Workspace bytes with no reuse: the sum of the sizes, each rounded up to ``alignment``.

    Reporting compares this with ``plan_memory(...).peak`` to show what reuse saved.
    Raises ValueError as ``plan_memory`` does.
    """
    _check(buffers, alignment)
    return sum(_align_up(b.size, alignment) for b in buffers)


def live_ranges(steps: Iterable[tuple[Sequence[str], Sequence[str]]],
                home: Callable[[str], str] = lambda t: t, inputs: Iterable[str] = (),
                outputs: Iterable[str] = ()) -> dict[str, tuple[int, int]]:
    """The steps each buffer is live over, ``(first, last)``.

    ``steps`` are each step's (tensors read, tensors written), in execution order;
    ``home(t)`` is the buffer tensor ``t`` lives in (a view's owner, the Concat output
    an input is written into). A buffer is live from the step that first writes it to
    the last that reads it; graph ``inputs`` given here are live from step 0 (written
    before it), ``outputs`` to the last step. Tensors only read (constants, and inputs
    not given) get no range.
    """
    first: dict[str, int] = {t: 0 for t in inputs}
    last: dict[str, int] = dict(first)
    step = -1
    for step, (reads, writes) in enumerate(steps):
        for t in map(home, writes):
            first.setdefault(t, step)
            last[t] = max(last.get(t, step), step)
        for t in map(home, reads):
            if t in first:
                last[t] = max(last[t], step)
    for t in map(home, outputs):
        last[t] = max(step, 0)
    return {t: (first[t], last[t]) for t in first}


def concat_placements(graph: Graph, element_size: int = 4) -> dict[str, tuple[str, int]]:
    """Concat inputs their producers can write straight into the Concat's output,
    saving the copy: tensor -> (the Concat's output, byte offset in it, for elements
    of ``element_size`` bytes).

    An input's block is contiguous in the output when every axis before the concat
    axis has size 1 (channels of a batch-1 image: U-Net skips, detector necks, dense
    blocks). The input must be computed by a layer (not a graph input, constant or
    Reshape alias), be no graph output, and have this Concat as its only reader.
    Nested Concats chain: a placed input may itself be a Concat's output.
    """
    shapes = graph.shapes
    readers = Counter(t for layer in graph.layers for t in layer.inputs)
    computed = {t for layer in graph.layers if not isinstance(layer, Reshape)
                for t in layer.outputs}
    outputs = set(graph.outputs)
    placements: dict[str, tuple[str, int]] = {}
    for layer in graph.layers:
        if not isinstance(layer, Concat):
            continue
        out = layer.outputs[0]
        if math.prod(shapes[out][:layer.axis]) != 1:
            continue
        offset = 0
        for t in layer.inputs:
            if t in computed and t not in outputs and readers[t] == 1:
                placements[t] = (out, offset)
            offset += element_size * math.prod(shapes[t])
    return placements


def placed_offsets(offsets: Mapping[str, int], placed: Mapping[str, tuple[str, int]]
                   ) -> dict[str, int]:
    """``offsets`` (of the buffers) with every in-place Concat input added at its
    Concat output's offset plus its own (``concat_placements``; nested Concats chain)."""
    result = dict(offsets)

    def place(t: str) -> int:
        if t not in result:
            parent, offset = placed[t]
            result[t] = place(parent) + offset
        return result[t]

    for t in placed:
        place(t)
    return result


def reshape_aliases(graph: Graph) -> dict[str, str]:
    """Reshape outputs that are views of their input's buffer: tensor -> the tensor
    that owns the memory. A Reshape moves no data, so neither backend gives it code,
    except where its output is a graph output, which has a buffer of its own."""
    alias: dict[str, str] = {}
    outputs = set(graph.outputs)
    for layer in graph.layers:
        if isinstance(layer, Reshape) and layer.outputs[0] not in outputs:
            alias[layer.outputs[0]] = alias.get(layer.inputs[0], layer.inputs[0])
    return alias


class WeightBlob:
    """Constant arrays laid end to end, each ``align``-byte aligned; offsets in bytes.

    The LLVM backend links it into the ``.so`` as is (64-byte alignment, arrays in
    their own dtype); the OpenCL backend writes it as the package's weights file
    (16-byte alignment; float data in the package's precision, ``real``, unless an
    array is added with its own ``dtype``).
    """

    def __init__(self, align: int = 64, real: type | None = None) -> None:
        self.align = align
        self.real = real
        self._parts: list[bytes] = []
        self.size = 0

    def add(self, array: np.ndarray, dtype: type | np.dtype | None = None) -> int:
        """Append ``array`` (its bytes, C order, as ``dtype`` or ``real`` when given);
        returns its byte offset."""
        kind = dtype or self.real
        data = np.ascontiguousarray(array, dtype=kind).tobytes() if kind is not None \
            else np.ascontiguousarray(array).tobytes()
        pad = -self.size % self.align
        if pad:
            self._parts.append(bytes(pad))
            self.size += pad
        offset = self.size
        self._parts.append(data)
        self.size += len(data)
        return offset

    def tobytes(self, whole_blocks: bool = False) -> bytes:
        """The blob; with ``whole_blocks``, padded to a multiple of ``align``."""
        tail = bytes(-self.size % self.align) if whole_blocks else b""
        return b"".join(self._parts) + tail
