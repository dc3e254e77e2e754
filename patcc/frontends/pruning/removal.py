"""Physical filter removal: the compact model with fewer filters and, downstream,
fewer input channels -- coupled layers found in the ``torch.fx`` graph.

Channels are tracked as *spaces*: the output channels of one convolution are a
space, and every tensor's channel dimension is a sequence of (space, size)
segments. Per-channel operations (batch norm, activations, pooling, depthwise
convolutions) keep the segments; ``torch.cat`` concatenates them; a residual add or a
squeeze-excite multiply joins the spaces of its operands into one coupled group,
which loses the same channels everywhere (its channels are scored by the sum of its
convolutions' criterion scores). Convolutions (groups 1) and linear layers consume
a layout and drop the removed input channels (a linear layer after ``flatten``, each
channel's H*W features).

A removed channel must be exactly zero wherever something sums over channels, so
that dropping it changes nothing: the *masked model* zeroes the channel's filters,
biases and batch-norm scale and shift. A space is left whole (with a warning naming
its convolutions) when that cannot hold or the layout cannot be followed: model
inputs and outputs, grouped (not depthwise) convolutions, channel shuffles and other
reshapes, splits that cut a space, division, adding constants, or an operation that
turns zero into something else (a sigmoid) before a convolution reads it.
"""

from __future__ import annotations

import math
import operator
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from patcc.errors import PruningError
from patcc.frontends.pruning.filters import check_ratio, filter_scores
from patcc.frontends.pruning.fxgraph import following_batchnorms, trace
from patcc.frontends.pruning.masks import PruningMasks, filter_masks
from patcc.frontends.pruning.reparam import (
    bake_reparametrisations,
    copy_model,
    effective_parameters,
)

Layout = tuple[tuple[int, int], ...]  # (space id, channels), channel-major

_ZERO_KEEPING_MODULES = (nn.ReLU, nn.ReLU6, nn.Hardswish, nn.SiLU, nn.GELU, nn.LeakyReLU,
                         nn.Tanh, nn.Identity, nn.Dropout, nn.MaxPool2d, nn.AvgPool2d,
                         nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
_ZERO_KEEPING_FUNCTIONS = {F.relu, torch.relu, F.relu6, F.hardswish, F.silu, F.gelu,
                           F.leaky_relu, torch.tanh, F.dropout, F.max_pool2d, F.avg_pool2d,
                           F.adaptive_avg_pool2d, F.adaptive_max_pool2d}
_ZERO_KEEPING_METHODS = {"relu", "tanh", "contiguous", "clone"}
_NONZERO_MODULES = (nn.Sigmoid, nn.Hardsigmoid)
_NONZERO_FUNCTIONS = {torch.sigmoid, F.sigmoid, F.hardsigmoid}
_NONZERO_METHODS = {"sigmoid"}
_ADD = {operator.add, operator.iadd, torch.add, operator.sub, operator.isub, torch.sub}
_MUL = {operator.mul, operator.imul, torch.mul}


@dataclass
class _Space:
    size: int
    convs: list[str] = field(default_factory=list)  # groups-1 convs: filters = channels
    linears: list[str] = field(default_factory=list)  # linear layers: rows = channels
    blocked: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Value:
    layout: Layout
    hw: int = 1  # > 1: flattened, each channel's H*W features in a row
    tainted: bool = False  # a removed channel may be non-zero here


class _Analysis:
    def __init__(self, model: nn.Module, input_shape: Sequence[int]) -> None:
        self.gm = trace(model, "physical removal")
        example = torch.zeros(1, *tuple(input_shape)[-3:])
        was_training = model.training
        self.gm.eval()
        with torch.no_grad():
            ShapeProp(self.gm).propagate(example)
        self.gm.train(was_training)
        self.spaces: list[_Space] = []
        self.parent: list[int] = []
        self.conv_in: dict[str, Layout] = {}
        self.conv_out: dict[str, int] = {}
        self.per_channel: dict[str, Layout] = {}  # depthwise convs and batch norms
        self.linear_in: dict[str, tuple[Layout, int]] = {}
        self.linear_out: dict[str, int] = {}
        self.calls: dict[str, int] = {}
        values: dict[fx.Node, object] = {}
        for node in self.gm.graph.nodes:
            values[node] = self._visit(node, values)

    # -- spaces ---------------------------------------------------------------------

    def new_space(self, size: int, blocked: str | None = None) -> int:
        self.spaces.append(_Space(size, blocked=[blocked] if blocked else []))
        self.parent.append(len(self.parent))
        return len(self.spaces) - 1

    def root(self, space: int) -> int:
        while self.parent[space] != space:
            self.parent[space] = self.parent[self.parent[space]]
            space = self.parent[space]
        return space

    def join(self, a: int, b: int) -> None:
        ra, rb = self.root(a), self.root(b)
        if ra != rb:
            self.parent[rb] = ra
            for name in ("convs", "linears", "blocked"):
                getattr(self.spaces[ra], name).extend(getattr(self.spaces[rb], name))

    def block(self, value: object, reason: str) -> None:
        for v in _tensor_values(value):
            for space, _ in v.layout:
                self.spaces[self.root(space)].blocked.append(reason)

    def opaque(self, node: fx.Node, reason: str) -> object:
        """A value whose channels cannot be followed: a fresh, blocked space."""
        shape = _shape(node)
        if shape is None or len(shape) < 2:
            return None
        return _Value(((self.new_space(shape[1], reason), shape[1]),), tainted=True)

    # -- nodes ----------------------------------------------------------------------

    def _visit(self, node: fx.Node, values: dict[fx.Node, object]) -> object:
        args = [values.get(a) if isinstance(a, fx.Node) else a for a in node.args]
        if node.op == "placeholder":
            return self.opaque(node, "the model's input")
        if node.op == "output":
            outputs = node.args[0]
            self.block([values.get(a) for a in outputs if isinstance(a, fx.Node)]
                       if isinstance(outputs, (tuple, list)) else args[0], "the model's output")
            return None
        if node.op == "get_attr":
            return self.opaque(node, f"constant {node.target}")
        if node.op == "call_module":
            return self._module(node, args)
        if node.op == "call_function":
            return self._function(node, args, values)
        if node.op == "call_method":
            return self._method(node, args)
        return None

    def _module(self, node: fx.Node, args: list[object]) -> object:
        name = str(node.target)
        module = self.gm.get_submodule(name)
        x = args[0] if args else None
        self.calls[name] = self.calls.get(name, 0) + 1
        if self.calls[name] > 1 and isinstance(module, (nn.Conv2d, nn.BatchNorm2d, nn.Linear)):
            self.block(x, f"{name} is called more than once")
            return self.opaque(node, f"{name} is called more than once")
        if not isinstance(x, _Value):
            return self.opaque(node, f"{name}'s input")
        if isinstance(module, nn.Conv2d):
            if module.groups == 1:
                return self._consume(name, x, node, conv=True)
            if module.groups == module.in_channels == module.out_channels:
                self.per_channel[name] = x.layout
                return _Value(x.layout, tainted=x.tainted)
            self.block(x, f"grouped convolution {name}")
            return self.opaque(node, f"grouped convolution {name}")
        if isinstance(module, nn.BatchNorm2d):
            self.per_channel[name] = x.layout
            return _Value(x.layout)  # scale and shift zeroed: zero out, whatever came in
        if isinstance(module, nn.Linear):
            return self._consume(name, x, node, conv=False)
        if isinstance(module, nn.Flatten):
            return self._reshape(node, x)
        if isinstance(module, _ZERO_KEEPING_MODULES):
            return x
        if isinstance(module, _NONZERO_MODULES):
            return _Value(x.layout, x.hw, tainted=True)
        self.block(x, f"{type(module).__name__} {name}")
        return self.opaque(node, f"{type(module).__name__} {name}")

    def _consume(self, name: str, x: _Value, node: fx.Node, conv: bool) -> object:
        if x.tainted:
            self.block(x, f"{name} reads channels that are not zero when removed")
        if conv:
            if x.hw != 1:
                self.block(x, f"{name} reads a flattened tensor")
            self.conv_in[name] = x.layout
        else:
            self.linear_in[name] = (x.layout, x.hw)
        shape = _shape(node)
        assert shape is not None
        space = self.new_space(shape[1])
        (self.spaces[space].convs if conv else self.spaces[space].linears).append(name)
        (self.conv_out if conv else self.linear_out)[name] = space
        return _Value(((space, shape[1]),))

    def _function(self, node: fx.Node, args: list[object],
                  values: dict[fx.Node, object]) -> object:
        fn = node.target
        if fn is getattr:  # x.shape and the like: not a tensor
            return None
        if fn is operator.getitem:
            parts = args[0]
            if isinstance(parts, tuple) and isinstance(node.args[1], int):
                return parts[node.args[1]]
            return None if not isinstance(parts, _Value) else \
                self._blocked(node, parts, "indexing a tensor")
        if fn in (torch.cat, torch.concat):
            tensors = [values.get(a) if isinstance(a, fx.Node) else None
                       for a in node.args[0]]  # type: ignore[union-attr]
            dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
            return self._cat(node, tensors, dim)  # type: ignore[arg-type]
        if fn in (torch.flatten, torch.reshape):
            return self._reshape(node, args[0])
        if fn is torch.split:
            return self._split(node, args[0])
        if fn is torch.mean:
            return self._mean(node, args[0])
        if fn in _ADD or fn in _MUL or fn in (operator.truediv, torch.div):
            return self._binary(node, fn, args)
        if fn is torch.clamp:  # keeps zero when the range holds it
            bounds = [*node.args[1:3], node.kwargs.get("min"), node.kwargs.get("max")]
            lo, hi = (bounds[0], bounds[1]) if len(node.args) > 2 else (bounds[2], bounds[3])
            keeps = bool((lo is None or lo <= 0) and (hi is None or hi >= 0))  # type: ignore[operator]
            return self._elementwise(node, args, keeps, not keeps, "clamp")
        return self._elementwise(node, args, fn in _ZERO_KEEPING_FUNCTIONS,
                                 fn in _NONZERO_FUNCTIONS, str(getattr(fn, "__name__", fn)))

    def _method(self, node: fx.Node, args: list[object]) -> object:
        method = str(node.target)
        x = args[0]
        if method in ("size", "dim"):
            return None
        if method in ("view", "reshape", "flatten"):
            return self._reshape(node, x)
        if method == "split":
            return self._split(node, x)
        if method == "mean":
            return self._mean(node, x)
        if method in ("add", "add_", "sub", "sub_"):
            return self._binary(node, operator.add, args)
        if method in ("mul", "mul_"):
            return self._binary(node, operator.mul, args)
        return self._elementwise(node, args, method in _ZERO_KEEPING_METHODS,
                                 method in _NONZERO_METHODS, method)

    def _blocked(self, node: fx.Node, x: object, why: str) -> object:
        self.block(x, why)
        return self.opaque(node, why)

    def _elementwise(self, node: fx.Node, args: list[object], keeps_zero: bool,
                     to_nonzero: bool, what: str) -> object:
        x = args[0] if args else None
        if not isinstance(x, _Value):
            return self.opaque(node, what) if _shape(node) is not None else None
        if keeps_zero or to_nonzero:
            return _Value(x.layout, x.hw, x.tainted or to_nonzero)
        for v in args:
            self.block(v, what)
        return self.opaque(node, what)

    def _binary(self, node: fx.Node, fn: object, args: list[object]) -> object:
        a, b = args[0], args[1] if len(args) > 1 else None
        tensors = [v for v in (a, b) if isinstance(v, _Value)]
        if len(tensors) == 1:
            x = tensors[0]
            if fn in _MUL:
                return x
            if fn in (operator.truediv, torch.div) and x is a:
                return x
            return self._blocked(node, x, "adding a constant")
        if len(tensors) == 0:
            return None
        x, y = tensors
        if fn in (operator.truediv, torch.div) or x.hw != y.hw or \
                [s for _, s in x.layout] != [s for _, s in y.layout]:
            self.block(x, "a division or mismatched operands")
            return self._blocked(node, y, "a division or mismatched operands")
        for (sx, _), (sy, _) in zip(x.layout, y.layout, strict=True):
            self.join(sx, sy)
        tainted = (x.tainted and y.tainted) if fn in _MUL else (x.tainted or y.tainted)
        return _Value(x.layout, x.hw, tainted)

    def _cat(self, node: fx.Node, tensors: list[object], dim: int) -> object:
        parts = [t for t in tensors if isinstance(t, _Value)]
        shape = _shape(node)
        if len(parts) != len(tensors) or shape is None or dim not in (1, 1 - len(shape)) or \
                any(p.hw != 1 for p in parts):
            for t in tensors:
                self.block(t, "a concatenation across something else than channels")
            return self.opaque(node, "a concatenation")
        layout = tuple(seg for p in parts for seg in p.layout)
        return _Value(layout, tainted=any(p.tainted for p in parts))

    def _split(self, node: fx.Node, x: object) -> object:
        if not isinstance(x, _Value):
            return None
        dim = node.args[2] if len(node.args) > 2 else node.kwargs.get("dim", 0)
        sizes = node.args[1]
        total = sum(s for _, s in x.layout)
        if isinstance(sizes, int):
            sizes = [sizes] * math.ceil(total / sizes)
        if dim not in (1, -3) or not isinstance(sizes, (list, tuple)):
            self.block(x, "a split across something else than channels")
            return tuple(_Value(((self.new_space(1, "split"), 1),), tainted=True)
                         for _ in range(len(sizes) if isinstance(sizes, (list, tuple)) else 1))
        bounds = np.cumsum([0, *[s for _, s in x.layout]])
        cuts = np.cumsum([0, *sizes])
        parts = []
        for lo, hi in zip(cuts[:-1], cuts[1:], strict=True):
            inside = [seg for seg, a, b in zip(x.layout, bounds[:-1], bounds[1:], strict=True)
                      if a >= lo and b <= hi]
            if sum(s for _, s in inside) != hi - lo:  # the split cuts a space
                self.block(x, "a split that cuts a convolution's channels")
                parts.append(_Value(((self.new_space(int(hi - lo), "split"), int(hi - lo)),),
                                    tainted=True))
            else:
                parts.append(_Value(tuple(inside), tainted=x.tainted))
        return tuple(parts)

    def _mean(self, node: fx.Node, x: object) -> object:
        dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
        if isinstance(x, _Value) and x.hw == 1 and isinstance(dims, (list, tuple)) and \
                sorted(d % 4 for d in dims) == [2, 3]:
            return x
        return self._blocked(node, x, "a mean over channels")

    def _reshape(self, node: fx.Node, x: object) -> object:
        before, after = (_shape(node.args[0]) if isinstance(node.args[0], fx.Node) else None,
                         _shape(node))
        if not isinstance(x, _Value) or before is None or after is None:
            return self._blocked(node, x, "a reshape")
        channels = sum(s for _, s in x.layout)
        if len(before) == 4 and len(after) == 2 and x.hw == 1 and after[1] == math.prod(before[1:]):
            return _Value(x.layout, before[2] * before[3], x.tainted)  # flatten
        if after[1:] in ((channels,), (channels, 1, 1)) and math.prod(before[1:]) == channels:
            return _Value(x.layout, 1, x.tainted)  # (N, C) <-> (N, C, 1, 1)
        return self._blocked(node, x, "a reshape of the channels (a channel shuffle?)")


def _shape(node: fx.Node) -> tuple[int, ...] | None:
    meta = node.meta.get("tensor_meta")
    return tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else None


def _tensor_values(value: object) -> list[_Value]:
    if isinstance(value, _Value):
        return [value]
    if isinstance(value, (tuple, list)):
        return [v for item in value for v in _tensor_values(item)]
    return []


# -- the plan -------------------------------------------------------------------------------


@dataclass
class RemovalPlan:
    """Which channels of which coupled group go, and every layer that changes.

    ``removed`` maps a group (by its first convolution's name) to the removed channel
    indices; ``skipped`` maps each convolution whose filters stay to the reason.
    """

    removed: dict[str, np.ndarray]
    skipped: dict[str, str]
    _analysis: _Analysis

    def _keep(self, space: int) -> np.ndarray:
        a = self._analysis
        root = a.root(space)
        size = a.spaces[root].size
        keep = np.ones(size, dtype=bool)
        convs = a.spaces[root].convs
        if convs and convs[0] in self.removed:
            keep[self.removed[convs[0]]] = False
        return keep

    def _layout_keep(self, layout: Layout, hw: int = 1) -> np.ndarray:
        keep = np.concatenate([self._keep(space) for space, _ in layout]) if layout else \
            np.ones(0, dtype=bool)
        return np.repeat(keep, hw)

    def masks(self, model: nn.Module) -> PruningMasks:
        """The masked model's masks: every removed channel's filters, biases, batch-norm
        scale and shift (and squeeze-excite rows) set to zero."""
        a = self._analysis
        params = effective_parameters(model)
        keeps = [(name, self._keep(space)) for name, space in
                 [*a.conv_out.items(), *a.linear_out.items()]]
        keeps += [(name, self._layout_keep(layout)) for name, layout in a.per_channel.items()]
        masks: dict[str, torch.Tensor] = {}
        for name, keep in keeps:
            masks.update(filter_masks(params, name, torch.from_numpy(keep)))
        return PruningMasks({n: m for n, m in masks.items() if not bool(m.all())})

    def compact(self, model: nn.Module) -> nn.Module:
        """A copy of ``model`` with the removed channels gone from every layer (and
        no ``torch.nn.utils.prune`` or ``parametrize`` reparametrisation left)."""
        a = self._analysis
        compact = copy_model(model)
        bake_reparametrisations(compact)
        for name, space in a.conv_out.items():
            conv = compact.get_submodule(name)
            out_keep = torch.from_numpy(self._keep(space))
            in_keep = torch.from_numpy(self._layout_keep(a.conv_in[name]))
            _replace(compact, name, _sliced_conv(conv, out_keep, in_keep))  # type: ignore[arg-type]
        for name, layout in a.per_channel.items():
            module = compact.get_submodule(name)
            keep = torch.from_numpy(self._layout_keep(layout))
            if isinstance(module, nn.Conv2d):
                _replace(compact, name, _sliced_conv(module, keep, keep, depthwise=True))
            else:
                _replace(compact, name, _sliced_bn(module, keep))  # type: ignore[arg-type]
        for name, (layout, hw) in a.linear_in.items():
            linear = compact.get_submodule(name)
            out_keep = torch.from_numpy(self._keep(a.linear_out[name]))
            in_keep = torch.from_numpy(self._layout_keep(layout, hw))
            _replace(compact, name, _sliced_linear(linear, out_keep, in_keep))  # type: ignore[arg-type]
        return compact


def _replace(root: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, leaf, module)


def _sliced_conv(conv: nn.Conv2d, out_keep: torch.Tensor, in_keep: torch.Tensor,
                 depthwise: bool = False) -> nn.Conv2d:
    outs, ins = int(out_keep.sum()), int(in_keep.sum())
    new = nn.Conv2d(ins, outs, conv.kernel_size, conv.stride,  # type: ignore[arg-type]
                    conv.padding, conv.dilation,  # type: ignore[arg-type]
                    outs if depthwise else 1, conv.bias is not None, conv.padding_mode)
    with torch.no_grad():
        weight = conv.weight[out_keep]
        new.weight.copy_(weight if depthwise else weight[:, in_keep])
        if conv.bias is not None:
            new.bias.copy_(conv.bias[out_keep])  # type: ignore[union-attr]
    return new.train(conv.training)


def _sliced_bn(bn: nn.BatchNorm2d, keep: torch.Tensor) -> nn.BatchNorm2d:
    new = nn.BatchNorm2d(int(keep.sum()), bn.eps, bn.momentum, bn.affine,
                         bn.track_running_stats)
    with torch.no_grad():
        for name in ("weight", "bias", "running_mean", "running_var"):
            source = getattr(bn, name)
            if source is not None:
                getattr(new, name).copy_(source[keep])
        if bn.num_batches_tracked is not None:
            new.num_batches_tracked.copy_(bn.num_batches_tracked)  # type: ignore[union-attr]
    return new.train(bn.training)


def _sliced_linear(linear: nn.Linear, out_keep: torch.Tensor, in_keep: torch.Tensor
                   ) -> nn.Linear:
    new = nn.Linear(int(in_keep.sum()), int(out_keep.sum()), linear.bias is not None)
    with torch.no_grad():
        new.weight.copy_(linear.weight[out_keep][:, in_keep])
        if linear.bias is not None:
            new.bias.copy_(linear.bias[out_keep])
    return new.train(linear.training)


def plan_filter_removal(model: nn.Module, input_shape: Sequence[int], ratio: float,
                        criterion: str = "l2", warn: bool = True) -> RemovalPlan:
    """Choose, per coupled group of convolutions, the ``floor(ratio * channels)``
    channels with the lowest summed criterion scores (at least one channel stays),
    and work out every layer that loses them. Groups that cannot lose channels are
    listed in ``skipped`` (and warned about, naming their convolutions)."""
    check_ratio(ratio)
    analysis = _Analysis(model, input_shape)
    params = effective_parameters(model)
    bns = following_batchnorms(model, "physical removal") if criterion == "bn" else {}
    removed: dict[str, np.ndarray] = {}
    skipped: dict[str, str] = {}
    roots = sorted({analysis.root(s) for s in range(len(analysis.spaces))})
    for root in roots:
        space = analysis.spaces[root]
        if not space.convs:
            continue
        if space.blocked:
            for conv in space.convs:
                skipped[conv] = space.blocked[0]
            continue
        scores = np.zeros(space.size)
        for conv in space.convs:
            gamma = params.get(f"{bns[conv]}.weight") if conv in bns else None
            if criterion == "bn" and gamma is None:
                raise PruningError(f"criterion 'bn': no BatchNorm2d directly after {conv!r}")
            scores += filter_scores(params[f"{conv}.weight"], criterion, gamma)
        count = min(space.size - 1, math.floor(round(ratio * space.size, 9)))
        removed[space.convs[0]] = np.sort(np.argsort(scores, kind="stable")[:count])
    if warn and skipped:
        names = ", ".join(sorted(skipped)[:6]) + (" ..." if len(skipped) > 6 else "")
        warnings.warn(f"filters left as they are in {len(skipped)} convolution(s) ({names}): "
                      f"{next(iter(skipped.values()))}", stacklevel=2)
    return RemovalPlan(removed, skipped, analysis)


def prune_filters(model: nn.Module, input_shape: Sequence[int], ratio: float,
                  criterion: str = "l2") -> tuple[nn.Module, RemovalPlan]:
    """One-shot filter pruning, physically removed: ``(compact model, plan)``. The
    compact model computes what ``model`` with ``plan.masks(model)`` applied does."""
    plan = plan_filter_removal(model, input_shape, ratio, criterion)
    return plan.compact(model), plan
