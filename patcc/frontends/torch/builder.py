"""The IR graph the torch importer builds, as the operator converters see it.

``GraphBuilder`` hands out fresh layer and tensor names, turns constant operands into
graph constants and collects the emitted layers; ``IRTensor`` is a computed tensor of
that graph. The graph walk (``importer``) extends the builder, and the converters
(``ops``) write through it, so neither module imports the other's internals.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from patcc.errors import FrontendError
from patcc.ir.layers import Layer
from patcc.text import unique_name


def import_torch() -> Any:
    """The torch module; a one-line error saying how to install it where it is missing."""
    try:
        import torch
    except ImportError as e:  # pragma: no cover - torch is a dependency of this path
        raise FrontendError("compiling an nn.Module needs torch (pip install 'patcc[torch]')") \
            from e
    return torch


def where(node: Any) -> str:
    """The module path and class, and the source line, torch recorded for ``node``."""
    parts = []
    stack = node.meta.get("nn_module_stack") or {}
    if stack:
        path, cls = list(stack.values())[-1]
        cls_name = cls if isinstance(cls, str) else getattr(cls, "__name__", str(cls))
        parts.append(f"module {path or '(root)'} ({cls_name.rsplit('.', 1)[-1]})")
    trace = (node.meta.get("stack_trace") or "").strip().splitlines()
    files = [line.strip() for line in trace if line.strip().startswith("File ")]
    if files:
        parts.append(files[-1].replace("File ", "", 1))
    return ", ".join(parts) or node.name


class IRTensor:
    """A computed tensor of the IR graph being built."""

    __slots__ = ("name", "shape")

    def __init__(self, name: str, shape: tuple[int, ...]) -> None:
        self.name, self.shape = name, shape

    def __repr__(self) -> str:
        return f"<tensor {self.name} {list(self.shape)}>"


class GraphBuilder:
    """The graph under construction: layers, constants and the names already taken."""

    def __init__(self) -> None:
        self.torch = import_torch()
        self.layers: list[Layer] = []
        self.constants: dict[str, np.ndarray] = {}
        self.names: set[str] = set()

    def unique(self, base: str) -> str:
        return unique_name(base, self.names)

    def tensor(self, value: Any, node: Any) -> str:
        """An IR tensor name for an operand: computed, or a new graph constant."""
        if isinstance(value, IRTensor):
            return value.name
        torch = self.torch
        if isinstance(value, torch.Tensor):
            array = value.detach().to(torch.float32).cpu().numpy()
        elif isinstance(value, (int, float, bool)):
            array = np.asarray(value, np.float32)
        else:
            raise FrontendError(f"operand {value!r} of {node.target} is not a tensor",
                                where(node))
        name = self.unique(f"{node.name}_const")
        self.constants[name] = np.ascontiguousarray(array, dtype=np.float32)
        return name

    def shape(self, value: Any) -> tuple[int, ...]:
        if isinstance(value, IRTensor):
            return value.shape
        return tuple(int(d) for d in value.shape)

    def array(self, value: Any, node: Any, what: str) -> np.ndarray:
        if isinstance(value, IRTensor):
            raise FrontendError(f"{node.target}: the {what} must be a constant (a parameter or "
                                "buffer), not a computed tensor", where(node))
        return np.ascontiguousarray(value.detach().to(self.torch.float32).cpu().numpy())

    def emit(self, layer: Layer, shape: tuple[int, ...]) -> IRTensor:
        self.layers.append(layer)
        return IRTensor(layer.outputs[0], shape)

    def out(self, node: Any, suffix: str = "") -> tuple[str, tuple[int, ...]]:
        """A fresh layer/tensor name for ``node`` -- the path of the module it runs in
        (``layer1.0.conv1``), else torch's node name -- and its output shape."""
        value = node.meta.get("val")
        if isinstance(value, (tuple, list)):  # max.dim, native_layer_norm: the first
            value = value[0]
        shape = tuple(int(d) for d in value.shape) if value is not None else ()
        stack = node.meta.get("nn_module_stack") or {}
        path = list(stack.values())[-1][0] if stack else ""
        return self.unique((path or node.name) + suffix), shape


Converter = Callable[[GraphBuilder, Any, list[Any], dict[str, Any]], Any]
"""A converter: (builder, ATen node, operands, keyword operands) -> the node's value."""
