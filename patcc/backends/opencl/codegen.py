"""The OpenCL backend's planner: the IR as a program of one kernel per layer.

Every kernel takes the same two arguments: the workspace ``ws`` (activations, and the
model's inputs and outputs, laid out by the memory planner) and the read-only weights
blob ``wb`` (bytes; each array 16-byte aligned). Shapes, strides, offsets and
pattern taps are compile-time constants in the source, so no index arithmetic is
passed at run time and the host only enqueues kernels in order.

This module plans: the workspace offsets, the blob (its arrays appended in layer
order), which kernel each layer gets and its launch sizes; the OpenCL C text of each
kernel kind, and what each kernel does, is in ``kernels``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# The module itself: ``from patcc.backends.opencl import kernels`` names the package
# too, whose ``__init__`` imports this module, a cycle to the import-graph test.
import patcc.backends.opencl.kernels as kernels
from patcc.backends.planning import (
    DEPTHWISE,
    GEMM,
    PATTERN,
    SPARSE,
    Buffer,
    WeightBlob,
    concat_placements,
    conv_kernels,
    live_ranges,
    placed_offsets,
    plan_memory,
    required_compressed_weights,
    required_filter_order,
    reshape_aliases,
)
from patcc.errors import BackendError
from patcc.ir.graph import Graph
from patcc.ir.layers import (
    Binary,
    Col2Im,
    Concat,
    Conv,
    Dense,
    Gather,
    GlobalPool,
    Layer,
    Pad,
    Pool,
    Reduce,
    Reshape,
    Resize,
    ScaleShift,
    Shape,
    Slice,
    Softmax,
    Split,
    Transpose,
    Unary,
)
from patcc.text import identifier

PRECISIONS = ("fp32", "fp16")
ALIGN = 16  # bytes, of every array in the weights blob and every workspace buffer


@dataclass(frozen=True)
class KernelLaunch:
    """One enqueue: the kernel's name and its NDRange."""

    name: str
    layer: str
    global_size: tuple[int, ...]
    local_size: tuple[int, ...]


@dataclass(frozen=True)
class TensorSlot:
    """Where a model input or output lives in the workspace (element offset)."""

    shape: Shape
    offset: int  # elements of the precision's type


@dataclass
class Program:
    """A model rendered as OpenCL C with what the host needs to run it."""

    source: str
    weights: bytes
    launches: list[KernelLaunch]
    inputs: dict[str, TensorSlot]
    outputs: dict[str, TensorSlot]
    workspace_elements: int
    precision: str
    layers: list[dict[str, object]] = field(default_factory=list)

    @property
    def element_size(self) -> int:
        return 2 if self.precision == "fp16" else 4


def _ident(name: str, index: int) -> str:
    """The kernel name of the ``index``-th launch: unique by its prefix, then as much
    of the layer's name as ASCII ``[A-Za-z0-9_]`` shows (names come from the model)."""
    return f"L{index}_" + (identifier(name, 40).strip("_") or "layer")


class _Renderer:
    def __init__(self, graph: Graph, precision: str, local_size: int,
                 local_memory: bool) -> None:
        if precision not in PRECISIONS:
            raise BackendError(f"unknown precision {precision!r}; expected one of "
                               f"{', '.join(PRECISIONS)}")
        self.graph = graph
        self.precision = precision
        self.local = local_size
        self.local_memory = local_memory
        self.blob = WeightBlob(ALIGN, np.float16 if precision == "fp16" else np.float32)
        self.shapes = graph.shapes
        self.kernels: list[str] = []
        self.launches: list[KernelLaunch] = []
        self.layer_info: list[dict[str, object]] = []
        self.alias = reshape_aliases(graph)  # views: no kernel, their input's memory
        self.offsets = self._plan_workspace()
        self.constants = {name: self.blob.add(value) for name, value in graph.constants.items()}

    # -- workspace ------------------------------------------------------------------

    def _plan_workspace(self) -> dict[str, int]:
        """Every activation, input and output in the workspace; views share their
        owner's bytes, and Concat inputs are written into their Concat's output where
        that is safe (``planning.concat_placements``)."""
        g = self.graph
        size = 2 if self.precision == "fp16" else 4
        self.placed = concat_placements(g, element_size=1)  # offsets in elements

        def home(t: str) -> str:
            t = self.alias.get(t, t)
            while t in self.placed:
                t = self.placed[t][0]
            return t

        steps = [(layer.inputs, layer.outputs) for layer in g.layers
                 if layer.outputs[0] not in self.alias]
        ranges = live_ranges(steps, home, g.inputs, g.outputs)
        buffers = [Buffer(t, math.prod(self.shapes[t]) * size, first, last)
                   for t, (first, last) in ranges.items()]
        plan = plan_memory(buffers, ALIGN)
        self.workspace_elements = plan.peak // size
        return placed_offsets({t: offset // size for t, offset in plan.offsets.items()},
                              self.placed)

    def ws(self, tensor: str) -> str:
        """A pointer expression to ``tensor``: in the workspace, or a blob constant."""
        tensor = self.alias.get(tensor, tensor)
        if tensor in self.constants:
            return f"((__global const real*)(wb + {self.constants[tensor]}))"
        return f"(ws + {self.offsets[tensor]})"

    # -- kernels --------------------------------------------------------------------

    def add(self, layer: Layer, body: str, total: int, name_suffix: str = "",
            global_size: tuple[int, ...] | None = None,
            local_size: tuple[int, ...] | None = None) -> None:
        index = len(self.launches)
        name = _ident(layer.name + name_suffix, index)
        self.kernels.append(kernels.kernel_source(name, layer, body))
        if global_size is None:
            local = min(self.local, max(1, total))
            global_size = (-(-total // local) * local,)
            local_size = (local,)
        self.launches.append(KernelLaunch(name, layer.name, global_size,
                                          local_size or (self.local,)))

    def render(self) -> Program:
        for layer in self.graph.layers:
            if layer.outputs[0] in self.alias:
                continue
            method = KERNELS.get(type(layer))
            if method is None:
                raise BackendError(f"the OpenCL backend has no kernel for {layer.op} "
                                   f"{layer.name!r}")
            method(self, layer)
        source = kernels.program_source(self.precision, self.kernels)
        g = self.graph
        return Program(
            source=source, weights=self.blob.tobytes(whole_blocks=True), launches=self.launches,
            inputs={n: TensorSlot(tuple(t.shape), self.offsets[n]) for n, t in g.inputs.items()},
            outputs={n: TensorSlot(tuple(self.shapes[n]), self.offsets[n]) for n in g.outputs},
            workspace_elements=self.workspace_elements, precision=self.precision,
            layers=self.layer_info)

    # -- convolution ----------------------------------------------------------------

    def _conv(self, layer: Conv) -> None:
        x_shape = self.shapes[layer.inputs[0]]
        (n, o, ho, wo) = self.shapes[layer.outputs[0]]
        bias = self.blob.add(layer.bias)
        residual = self.ws(layer.inputs[1]) if len(layer.inputs) == 2 else None
        pre = kernels.conv_pointers(self.ws(layer.inputs[0]), self.ws(layer.outputs[0]),
                                    bias, residual)
        kernel = conv_kernels(layer)[0]  # the one that skips the most work
        if kernel in (PATTERN, DEPTHWISE):
            self._pattern_conv(layer, x_shape, (n, o, ho, wo), pre, residual is not None,
                               kernel)
        elif kernel == SPARSE:
            self._sparse_conv(layer, x_shape, (n, o, ho, wo), pre, residual is not None)
        elif self.local_memory and layer.groups == 1:
            self._tiled_conv(layer, x_shape, (n, o, ho, wo), pre, residual is not None)
        else:
            self._dense_conv(layer, x_shape, (n, o, ho, wo), pre, residual is not None)

    def _filter_tiles(self, pixels: int, o: int) -> tuple[tuple[int, int], tuple[int, int]]:
        """The NDRange (pixel, filter position) of the ``pattern`` and ``sparse``
        kernels and its work-group: a run of pixels of one filter, or, where the image
        has fewer pixels than a work-group, of several filters next to each other in
        the reorder's storage order (alike in patterns and in non-zeros)."""
        ptile = min(self.local, pixels)
        ftile = max(1, min(o, self.local // ptile))
        return (-(-pixels // ptile) * ptile, -(-o // ftile) * ftile), (ptile, ftile)

    def _dense_conv(self, layer: Conv, x_shape: Shape, y_shape: Shape, pre: str,
                    residual: bool) -> None:
        n, o, ho, wo = y_shape
        weight = self.blob.add(layer.weight)
        total = n * o * ho * wo
        body = kernels.dense_conv(layer, x_shape, y_shape, pre, weight, residual)
        self.add(layer, kernels.linear(total, body), total)
        self.layer_info.append({"layer": layer.name, "kernel": GEMM,
                                "block": "one output per work-item"})

    def _tiled_conv(self, layer: Conv, x_shape: Shape, y_shape: Shape, pre: str,
                    residual: bool) -> None:
        """Work-groups of 16 pixels by (local size / 16) filters, staging 16 of the
        reduction at a time (``kernels.tiled_conv``)."""
        c = x_shape[1]
        n, o, ho, wo = y_shape
        kh, kw = layer.kernel_shape
        pixels = ho * wo
        tp, tk = 16, 16
        to = max(1, self.local // tp)
        weight = self.blob.add(layer.weight.reshape(o, c * kh * kw))
        body = kernels.tiled_conv(layer, x_shape, y_shape, pre, weight, residual, tp, tk, to)
        glob = (-(-pixels // tp) * tp, -(-o // to) * to, n)
        self.add(layer, body, 0, global_size=glob, local_size=(tp, to, 1))
        self.layer_info.append({"layer": layer.name, "kernel": GEMM,
                                "block": f"{tp} pixels x {to} filters in local memory"})

    def _pattern_conv(self, layer: Conv, x_shape: Shape, y_shape: Shape, pre: str,
                      residual: bool, kernel: str) -> None:
        cw = required_compressed_weights(layer)
        n, o, ho, wo = y_shape
        offsets = {
            "order": self.blob.add(layer.storage_order, np.int32),
            "counts": self.blob.add(cw.counts, np.uint16),
            "channels": self.blob.add(cw.channels, np.uint16),
            "weights": self.blob.add(cw.weights),
            "kstart": self.blob.add(cw.kernel_start, np.int32),
            "wstart": self.blob.add(cw.weight_start, np.int32),
        }
        body = kernels.pattern_conv(layer, x_shape, y_shape, pre, offsets, residual)
        glob, local = self._filter_tiles(n * ho * wo, o)
        self.add(layer, body, 0, global_size=glob, local_size=local)
        self.layer_info.append({"layer": layer.name, "kernel": kernel,
                                "patterns": len(cw.tap_sets),
                                "kept_kernels": int(cw.channels.size)})

    def _sparse_conv(self, layer: Conv, x_shape: Shape, y_shape: Shape, pre: str,
                     residual: bool) -> None:
        """A 1x1 conv over its non-zero weights: each filter's row of (input channel,
        weight) pairs, rows in filter order (``kernels.sparse_conv``)."""
        n, o, ho, wo = y_shape
        order = required_filter_order(layer)
        rows = layer.weight.reshape(o, -1)[order]
        nonzero = rows != 0
        starts = np.concatenate([[0], np.cumsum(nonzero.sum(axis=1))])
        offsets = {
            "order": self.blob.add(order, np.int32),
            "starts": self.blob.add(starts, np.int32),
            "channels": self.blob.add(np.nonzero(nonzero)[1], np.int32),
            "weights": self.blob.add(rows[nonzero]),
        }
        body = kernels.sparse_conv(layer, x_shape, y_shape, pre, offsets, residual)
        glob, local = self._filter_tiles(n * ho * wo, o)
        self.add(layer, body, 0, global_size=glob, local_size=local)
        self.layer_info.append({"layer": layer.name, "kernel": SPARSE,
                                "nonzero": int(starts[-1])})

    def _col2im(self, layer: Col2Im) -> None:
        x_shape, y_shape = self.shapes[layer.inputs[0]], self.shapes[layer.outputs[0]]
        bias = None if layer.bias is None else self.blob.add(layer.bias)
        total = math.prod(y_shape)
        body = kernels.col2im(layer, x_shape, y_shape, self.ws(layer.inputs[0]),
                              self.ws(layer.outputs[0]), bias)
        self.add(layer, kernels.linear(total, body), total)
        self.layer_info.append({"layer": layer.name, "kernel": "col2im"})

    def _dense(self, layer: Dense) -> None:
        x_shape = self.shapes[layer.inputs[0]]
        rows = math.prod(x_shape[:-1])
        o = layer.weight.shape[0]
        weight, bias = self.blob.add(layer.weight), self.blob.add(layer.bias)
        total = rows * o
        body = kernels.dense(layer, x_shape, self.ws(layer.inputs[0]),
                             self.ws(layer.outputs[0]), weight, bias)
        self.add(layer, kernels.linear(total, body), total)
        self.layer_info.append({"layer": layer.name, "kernel": "gemv"})

    # -- element-wise -----------------------------------------------------------------

    def _scaleshift(self, layer: ScaleShift) -> None:
        shape = self.shapes[layer.inputs[0]]
        scale, shift = self.blob.add(layer.scale), self.blob.add(layer.shift)
        total = math.prod(shape)
        body = kernels.scale_shift(layer, shape, self.ws(layer.inputs[0]),
                                   self.ws(layer.outputs[0]), scale, shift)
        self.add(layer, kernels.linear(total, body), total)

    def _unary(self, layer: Unary) -> None:
        total = math.prod(self.shapes[layer.outputs[0]])
        body = kernels.unary(layer, self.ws(layer.inputs[0]), self.ws(layer.outputs[0]))
        self.add(layer, kernels.linear(total, body), total)

    def _binary(self, layer: Binary) -> None:
        out_shape = self.shapes[layer.outputs[0]]
        a_shape, b_shape = (self.shapes[t] for t in layer.inputs)
        total = math.prod(out_shape)
        body = kernels.binary(layer, a_shape, b_shape, out_shape, self.ws(layer.inputs[0]),
                              self.ws(layer.inputs[1]), self.ws(layer.outputs[0]))
        self.add(layer, kernels.linear(total, body), total)

    # -- pooling and reductions -----------------------------------------------------------

    def _pool(self, layer: Pool) -> None:
        x_shape, y_shape = self.shapes[layer.inputs[0]], self.shapes[layer.outputs[0]]
        n, c, ho, wo = y_shape
        total = n * c * ho * wo
        body = kernels.pool(layer, x_shape, y_shape, self.ws(layer.inputs[0]),
                            self.ws(layer.outputs[0]))
        self.add(layer, kernels.linear(total, body), total)

    def _globalpool(self, layer: GlobalPool) -> None:
        shape = self.shapes[layer.inputs[0]]
        rows = shape[0] * shape[1]
        body = kernels.global_pool(layer, shape, self.ws(layer.inputs[0]),
                                   self.ws(layer.outputs[0]))
        self.add(layer, kernels.linear(rows, body), rows)

    def _reduce(self, layer: Reduce) -> None:
        shape = self.shapes[layer.inputs[0]]
        length = math.prod(shape[layer.start:layer.stop])
        total = math.prod(shape) // length
        body = kernels.reduce(layer, shape, self.ws(layer.inputs[0]),
                              self.ws(layer.outputs[0]))
        self.add(layer, kernels.linear(total, body), total)

    def _softmax(self, layer: Softmax) -> None:
        shape = self.shapes[layer.inputs[0]]
        size = shape[layer.axis % len(shape)]
        rows = math.prod(shape) // size
        body = kernels.softmax(layer, shape, self.ws(layer.inputs[0]),
                               self.ws(layer.outputs[0]))
        self.add(layer, kernels.linear(rows, body), rows)

    # -- data movement ----------------------------------------------------------------

    def _copy(self, layer: Layer, shape: Shape, src: str, src_strides: Sequence[int],
              src_base: int, dst: str, dst_strides: Sequence[int], dst_base: int,
              suffix: str = "") -> None:
        """One kernel over the index space ``shape`` (``kernels.copy``)."""
        total = math.prod(shape)
        body = kernels.copy(shape, src, src_strides, src_base, dst, dst_strides, dst_base)
        self.add(layer, kernels.linear(total, body), total, name_suffix=suffix)

    def _reshape(self, layer: Reshape) -> None:
        total = math.prod(self.shapes[layer.outputs[0]])
        self._copy(layer, (total,), self.ws(layer.inputs[0]), (1,), 0,
                   self.ws(layer.outputs[0]), (1,), 0)

    def _transpose(self, layer: Transpose) -> None:
        in_strides = kernels.row_major_strides(self.shapes[layer.inputs[0]])
        out_shape = self.shapes[layer.outputs[0]]
        self._copy(layer, out_shape, self.ws(layer.inputs[0]),
                   [in_strides[p] for p in layer.perm], 0,
                   self.ws(layer.outputs[0]), kernels.row_major_strides(out_shape), 0)

    def _slice(self, layer: Slice) -> None:
        in_strides = kernels.row_major_strides(self.shapes[layer.inputs[0]])
        out_shape = self.shapes[layer.outputs[0]]
        base = sum(s * st for s, st in zip(layer.starts, in_strides, strict=True))
        self._copy(layer, out_shape, self.ws(layer.inputs[0]),
                   [st * step for st, step in zip(in_strides, layer.steps, strict=True)],
                   base, self.ws(layer.outputs[0]), kernels.row_major_strides(out_shape), 0)

    def _resize(self, layer: Resize) -> None:
        """The window tables of ``patcc.ir.resample`` for each resized axis into the
        blob, offsets premultiplied by the input strides (``kernels.resize``)."""
        in_shape, out_shape = self.shapes[layer.inputs[0]], self.shapes[layer.outputs[0]]
        in_strides = kernels.row_major_strides(in_shape)
        total = math.prod(out_shape)
        axes: list[kernels.ResizeAxis | None] = []
        for a, taps in enumerate(layer.axis_taps(in_shape)):
            if taps is None:
                axes.append(None)
                continue
            offsets = self.blob.add(taps.index * in_strides[a], np.int32)
            weights = self.blob.add(taps.weight, np.float32)
            outside = None if taps.outside is None else self.blob.add(taps.outside, np.int32)
            axes.append(kernels.ResizeAxis(taps.taps, offsets, weights, outside))
        body = kernels.resize(layer, in_shape, out_shape, axes, self.ws(layer.inputs[0]),
                              self.ws(layer.outputs[0]))
        self.add(layer, kernels.linear(total, body), total)

    def _concat(self, layer: Concat) -> None:
        out_shape = self.shapes[layer.outputs[0]]
        axis = layer.axis % len(out_shape)
        out_strides = kernels.row_major_strides(out_shape)
        start = 0
        for j, t in enumerate(layer.inputs):
            shape = self.shapes[t]
            if t in self.placed:  # its producer wrote it in place
                start += shape[axis]
                continue
            self._copy(layer, shape, self.ws(t), kernels.row_major_strides(shape), 0,
                       self.ws(layer.outputs[0]), out_strides, start * out_strides[axis],
                       suffix=f"_in{j}")
            start += shape[axis]

    def _split(self, layer: Split) -> None:
        in_shape = self.shapes[layer.inputs[0]]
        axis = layer.axis % len(in_shape)
        in_strides = kernels.row_major_strides(in_shape)
        start = 0
        for j, t in enumerate(layer.outputs):
            shape = self.shapes[t]
            self._copy(layer, shape, self.ws(layer.inputs[0]), in_strides,
                       start * in_strides[axis], self.ws(t), kernels.row_major_strides(shape), 0,
                       suffix=f"_out{j}")
            start += shape[axis]

    def _gather(self, layer: Gather) -> None:
        """The indices into the blob as an int array (``kernels.gather``)."""
        in_shape = self.shapes[layer.inputs[0]]
        table = self.blob.add(layer.indices.reshape(-1), np.int32)
        total = math.prod(self.shapes[layer.outputs[0]])
        body = kernels.gather(layer, in_shape, table, self.ws(layer.inputs[0]),
                              self.ws(layer.outputs[0]))
        self.add(layer, kernels.linear(total, body), total)

    def _pad(self, layer: Pad) -> None:
        in_shape = self.shapes[layer.inputs[0]]
        out_shape = self.shapes[layer.outputs[0]]
        total = math.prod(out_shape)
        body = kernels.pad(layer, in_shape, out_shape, self.ws(layer.inputs[0]),
                           self.ws(layer.outputs[0]))
        self.add(layer, kernels.linear(total, body), total)


KERNELS: dict[type, Callable[[_Renderer, Any], None]] = {
    Conv: _Renderer._conv, Dense: _Renderer._dense, Col2Im: _Renderer._col2im,
    ScaleShift: _Renderer._scaleshift, Unary: _Renderer._unary, Binary: _Renderer._binary,
    Pool: _Renderer._pool, GlobalPool: _Renderer._globalpool, Reduce: _Renderer._reduce,
    Softmax: _Renderer._softmax, Reshape: _Renderer._reshape, Transpose: _Renderer._transpose,
    Slice: _Renderer._slice, Resize: _Renderer._resize, Concat: _Renderer._concat,
    Split: _Renderer._split, Gather: _Renderer._gather, Pad: _Renderer._pad,
}
"""Each layer type's kernel(s), a table keyed by type as the LLVM backend's
``LOWERINGS`` is."""


def render(graph: Graph, precision: str = "fp32", local_size: int = 64,
           local_memory: bool = False) -> Program:
    """``graph`` (after the backend passes) as an OpenCL program; ``local_memory``:
    stage inputs through local memory where the kernel has a staged form."""
    return _Renderer(graph, precision, local_size, local_memory).render()
