"""The units data-free ADMM prunes one at a time, found in the ``torch.fx`` graph: a
selected 3x3 convolution with the batch norm and activation that directly follow it,
and the values of a traced model captured as it runs.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F  # noqa: N812
from torch import fx, nn

from patcc.frontends.pruning.fxgraph import module_of, sole_user

_ACTIVATION_MODULES = (nn.ReLU, nn.ReLU6, nn.Hardswish, nn.SiLU, nn.LeakyReLU, nn.GELU,
                       nn.Hardsigmoid, nn.Sigmoid)
_ACTIVATION_FUNCTIONS = {F.relu, torch.relu, F.relu6, F.hardswish, F.silu, F.leaky_relu,
                         F.gelu, F.hardsigmoid, torch.sigmoid}


@dataclass(frozen=True)
class Unit:
    """A selected conv and the batch norm and activation directly after it."""

    name: str
    conv: nn.Conv2d
    conv_node: fx.Node
    tail: tuple[fx.Node, ...]

    @property
    def end(self) -> fx.Node:
        """The node whose value is the unit's output."""
        return self.tail[-1] if self.tail else self.conv_node


def _is_activation(node: fx.Node, gm: fx.GraphModule) -> bool:
    if node.op == "call_module":
        return isinstance(gm.get_submodule(str(node.target)), _ACTIVATION_MODULES)
    return node.op == "call_function" and node.target in _ACTIVATION_FUNCTIONS


def find_units(gm: fx.GraphModule, convs: dict[str, nn.Conv2d]) -> list[Unit]:
    """The selected convs in the order the graph runs them, each with its tail."""
    units = []
    for node in gm.graph.nodes:
        if node.op != "call_module" or str(node.target) not in convs:
            continue
        tail: list[fx.Node] = []
        nxt = sole_user(node)
        if module_of(gm, nxt, nn.BatchNorm2d) is not None:
            tail.append(nxt)  # type: ignore[arg-type]
            nxt = sole_user(nxt)  # type: ignore[arg-type]
        if nxt is not None and _is_activation(nxt, gm):
            tail.append(nxt)
        units.append(Unit(str(node.target), convs[str(node.target)], node, tuple(tail)))
    return units


class _Stop(Exception):
    pass


class _Capture(fx.Interpreter):
    """Runs a traced model until the values of ``wanted`` nodes are known."""

    def __init__(self, gm: fx.GraphModule, wanted: Iterable[fx.Node]) -> None:
        super().__init__(gm)
        self.wanted = set(wanted)
        self.values: dict[fx.Node, torch.Tensor] = {}

    def run_node(self, n: fx.Node) -> object:
        value = super().run_node(n)
        if n in self.wanted:
            self.values[n] = value
            if len(self.values) == len(self.wanted):
                raise _Stop
        return value


def node_values(gm: fx.GraphModule, x: torch.Tensor, nodes: Sequence[fx.Node]
                ) -> list[torch.Tensor]:
    """The values of ``nodes`` when the traced model runs on ``x``; the run stops as
    soon as they are known."""
    capture = _Capture(gm, nodes)
    try:
        capture.run(x)
    except _Stop:
        pass
    return [capture.values[n] for n in nodes]


def _apply_tail(gm: fx.GraphModule, unit: Unit, y: torch.Tensor) -> torch.Tensor:
    for node in unit.tail:
        if node.op == "call_module":
            module = gm.get_submodule(str(node.target))
            if getattr(module, "inplace", False):
                module = copy.copy(module)
                module.inplace = False  # type: ignore[assignment]
            y = module(y)
        else:
            kwargs = {k: v for k, v in node.kwargs.items() if k != "inplace"}
            y = node.target(y, *node.args[1:], **kwargs)  # type: ignore[operator]
    return y


def unit_output(gm: fx.GraphModule, unit: Unit, x: torch.Tensor, weight: torch.Tensor,
                bias: torch.Tensor | None) -> torch.Tensor:
    """The unit's output for input ``x`` with the conv's ``weight`` and ``bias`` in
    place of its own (the tensors ADMM optimises)."""
    c = unit.conv
    y = F.conv2d(x, weight, bias, c.stride, c.padding, c.dilation, c.groups)
    return _apply_tail(gm, unit, y)


def relative_error(gm: fx.GraphModule, gm_original: fx.GraphModule, unit: Unit,
                   target_unit: Unit, x: torch.Tensor) -> float:
    """||unit output - original unit output||^2 / ||original||^2, the pruned model's
    own input feeding the unit."""
    (out,) = node_values(gm, x, [unit.end])
    (target,) = node_values(gm_original, x, [target_unit.end])
    return float((out - target).square().sum() / target.square().sum().clamp_min(1e-30))
