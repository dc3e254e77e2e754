"""The graph: named inputs with static shapes, layers in topological order, outputs.

Tensor shapes are not stored: they follow from the input shapes and the layers, and
``Graph.shapes`` derives them once (an interpretation of the graph over shapes).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from patcc.ir.layers import (
    MAX_TOTAL_ELEMENTS,
    Conv,
    IRError,
    Layer,
    Shape,
    check_size,
    format_shape,
)
from patcc.ir.node import IRNode
from patcc.ir.patterns import PatternLibrary


@dataclass(frozen=True)
class TensorType:
    """Static shape and element type of a graph input or output."""

    shape: Shape
    dtype: str = "float32"

    def __str__(self) -> str:
        return f"{self.dtype}[{format_shape(self.shape)}]"


@dataclass(frozen=True, eq=False)
class Graph(IRNode):
    """A model: ``inputs`` (name -> type), ``layers`` in order, ``outputs`` (names).

    ``constants`` holds constant operands of element-wise layers (name -> array);
    weights of Conv and Dense layers live in the layers. Treat the mappings as
    read-only: edit a graph with ``dataclasses.replace``.
    """

    inputs: Mapping[str, TensorType]
    layers: tuple[Layer, ...]
    outputs: tuple[str, ...]
    constants: Mapping[str, np.ndarray] = field(default_factory=dict)
    name: str = "model"

    def replace(self, **changes: object) -> Graph:
        """A copy with some fields changed (``dataclasses.replace``)."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    @cached_property
    def shapes(self) -> Mapping[str, Shape]:
        """Shape of every tensor (inputs, constants, layer outputs).

        Raises ``IRError`` when a layer reads an undefined tensor, its shapes are
        inconsistent, or a tensor is empty or larger than ``check_size`` allows.
        """
        shapes: dict[str, Shape] = {n: tuple(t.shape) for n, t in self.inputs.items()}
        total = 0
        for n, s in shapes.items():
            check_size(f"input {n!r}", s)
            total += math.prod(s)
        shapes.update({n: tuple(int(d) for d in c.shape) for n, c in self.constants.items()})
        for layer in self.layers:
            missing = [t for t in layer.inputs if t not in shapes]
            if missing:
                raise IRError(f"{layer.op} {layer.name!r} reads undefined tensor {missing[0]!r}")
            outs = layer.infer_shapes([shapes[t] for t in layer.inputs])
            if len(outs) != len(layer.outputs):
                raise IRError(f"{layer.op} {layer.name!r}: {len(outs)} outputs inferred")
            for t, s in zip(layer.outputs, outs, strict=True):
                if t in shapes:
                    raise IRError(f"{layer.op} {layer.name!r} redefines tensor {t!r}")
                check_size(f"{layer.op} {layer.name!r}: output {t!r}", s)
                total += math.prod(s)
                if total > MAX_TOTAL_ELEMENTS:
                    raise IRError(f"{layer.op} {layer.name!r}: with output {t!r} the graph's "
                                  f"tensors hold {total} elements, more than patcc's limit "
                                  f"of {MAX_TOTAL_ELEMENTS} (2^34)")
                shapes[t] = s
        return shapes

    @cached_property
    def producers(self) -> Mapping[str, Layer]:
        """Tensor name -> the layer that writes it."""
        return {t: layer for layer in self.layers for t in layer.outputs}

    @cached_property
    def consumers(self) -> Mapping[str, tuple[Layer, ...]]:
        """Tensor name -> the layers that read it (in order)."""
        users: dict[str, list[Layer]] = {}
        for layer in self.layers:
            for t in dict.fromkeys(layer.inputs):
                users.setdefault(t, []).append(layer)
        return {t: tuple(v) for t, v in users.items()}

    def output_types(self) -> dict[str, TensorType]:
        """Name -> type of every graph output."""
        return {n: TensorType(self.shapes[n]) for n in self.outputs}

    def convs(self) -> Iterator[Conv]:
        """The convolution layers, in order."""
        return (layer for layer in self.layers if isinstance(layer, Conv))

    @property
    def pattern_library(self) -> PatternLibrary | None:
        """The model-wide pattern library, or None when no layer is pattern style."""
        for conv in self.convs():
            if conv.pattern is not None:
                return conv.pattern.library
        return None

    def __str__(self) -> str:
        ins = ", ".join(f"%{n}: {t}" for n, t in self.inputs.items())
        lines = [f"graph {self.name}({ins}) {{"]
        for layer in self.layers:
            args = ", ".join(f"%{t}" for t in layer.inputs)
            outs = ", ".join(f"%{t}" for t in layer.outputs)
            try:
                shape = " ".join(format_shape(self.shapes[t]) for t in layer.outputs)
            except IRError:
                shape = "?"
            attrs = layer.describe()
            lines.append(f"  {outs} = {layer.op}({args}) -> {shape}"
                         + (f"  {attrs}" if attrs else "") + f"  # {layer.name}")
        lines.append(f"  return {', '.join('%' + t for t in self.outputs)}")
        lines.append("}")
        return "\n".join(lines)
