"""ONNX models as trainable torch modules for the pruning algorithms, and back.

The ONNX file is imported by patcc's own frontend *before* its optimisation passes,
so every convolution still holds its initializer's weights verbatim, and the IR is
rebuilt as a ``torch.fx.GraphModule``: convolutions and linear layers become
``nn.Conv2d`` / ``nn.Linear`` modules (trainable), inference batch norms become
``nn.BatchNorm2d`` (with the ONNX node's statistics where the IR's scale and shift
came from a BatchNormalization; ADMM matches its inputs to them), everything else
the torch function of the same meaning. The batch dimension is left free.

:func:`write_back` puts the pruned convolution weights into the original ONNX
model's initializers (a convolution is found by its output tensor, which ONNX
keeps unique), so the file keeps its structure, names and metadata. Only the convs
of ONNX Conv nodes can be written back: the convs a ConvTranspose becomes hold its
weight rearranged (flipped, or as a 1x1 conv before a ``Col2Im``), so they are
rebuilt as constant ``F.conv2d`` calls that pruning neither prunes nor trains, and
the ConvTranspose keeps its weights.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
import torch
import torch.nn.functional as F  # noqa: N812
from onnx import numpy_helper
from torch import fx, nn

from patcc.errors import PruningError
from patcc.frontends.onnx import load_model, read_onnx
from patcc.frontends.pruning.synthetic import FoldedBatchNorm
from patcc.ir import Graph
from patcc.ir.layers import (
    Activation,
    Binary,
    Col2Im,
    Concat,
    Conv,
    Dense,
    Gather,
    GlobalPool,
    Pad,
    Pool,
    Reshape,
    Resize,
    ScaleShift,
    Slice,
    Softmax,
    Split,
    Transpose,
    Unary,
)
from patcc.text import unique_name


@dataclass
class TorchModel:
    """An imported ONNX model as a torch module, and how to find its convolutions."""

    module: fx.GraphModule
    convs: dict[str, Conv]  # module name -> the IR conv (its output names the ONNX node)
    input_shape: tuple[int, ...]


def import_for_pruning(path: str) -> tuple[onnx.ModelProto, TorchModel]:
    """Load ``path`` and build its torch module; a ``PatccError`` for anything patcc
    cannot import, a ``PruningError`` for a model with other than one image input."""
    proto = load_model(path)
    graph = read_onnx(proto)
    if len(graph.inputs) != 1:
        raise PruningError(f"pruning needs a model with one input, this one has "
                           f"{len(graph.inputs)}", path)
    (shape,) = [t.shape for t in graph.inputs.values()]
    if len(shape) != 4:
        raise PruningError(f"pruning needs an NCHW image input, got shape {shape}", path)
    conv_outputs = {node.output[0] for node in proto.graph.node if node.op_type == "Conv"}
    return proto, _build(graph, tuple(shape), _batch_norms(proto), conv_outputs)


def _batch_norms(proto: onnx.ModelProto) -> dict[str, tuple[np.ndarray, ...]]:
    """Each inference BatchNormalization's (scale, shift, mean, variance, epsilon), by
    its output: the importer folds them into a scale and shift, but ADMM's synthetic
    inputs are matched to the running statistics."""
    weights = {t.name: t for t in proto.graph.initializer}
    found = {}
    for node in proto.graph.node:
        if node.op_type != "BatchNormalization" or len(node.input) != 5 \
                or not all(name in weights for name in node.input[1:]):
            continue
        eps = next((a.f for a in node.attribute if a.name == "epsilon"), 1e-5)
        found[node.output[0]] = (*(numpy_helper.to_array(weights[name]).astype(np.float32)
                                   for name in node.input[1:]), np.float32(eps))
    return found


def _batch_norm(layer: ScaleShift, onnx_bn: tuple[np.ndarray, ...] | None) -> nn.BatchNorm2d:
    """The ONNX node's batch norm where the layer is one, else one whose running
    variance plus eps is 1 and running mean 0, so the scale and shift apply as they are
    (a :class:`FoldedBatchNorm`: its statistics are not the data's)."""
    if onnx_bn is not None:
        scale, shift, mean, var, eps = onnx_bn
        bn = nn.BatchNorm2d(len(layer.scale), eps=float(eps)).eval()
    else:
        bn = FoldedBatchNorm(len(layer.scale)).eval()
        scale, shift = layer.scale, layer.shift
        mean, var = np.zeros_like(scale), np.full_like(scale, 1.0 - bn.eps)
    with torch.no_grad():
        for param, value in ((bn.weight, scale), (bn.bias, shift), (bn.running_mean, mean),
                             (bn.running_var, var)):
            param.copy_(torch.from_numpy(np.array(value, np.float32)))  # type: ignore[union-attr]
    return bn


def _ident(name: str, taken: set[str]) -> str:
    base = re.sub(r"\W", "_", name).strip("_") or "layer"
    return unique_name(base if not base[0].isdigit() else f"m_{base}", taken)


def _activation(g: fx.Graph, act: Activation | None, x: fx.Node) -> fx.Node:
    if act is None:
        return x
    kind = act.kind
    if kind == "relu":
        return g.call_function(F.relu, (x,))
    if kind == "clip" and (act.alpha, act.beta) == (0.0, 6.0):
        return g.call_function(F.relu6, (x,))
    if kind == "clip":
        return g.call_function(torch.clamp, (x, act.alpha, act.beta))
    if kind == "leaky_relu":
        return g.call_function(F.leaky_relu, (x, act.alpha))
    if kind == "sigmoid":
        return g.call_function(torch.sigmoid, (x,))
    if kind == "hard_sigmoid" and abs(act.alpha - 1 / 6) < 1e-6 and act.beta == 0.5:
        return g.call_function(F.hardsigmoid, (x,))
    if kind == "hard_sigmoid":
        scaled = g.call_function(operator.add, (g.call_function(operator.mul, (x, act.alpha)),
                                                act.beta))
        return g.call_function(torch.clamp, (scaled, 0.0, 1.0))
    if kind == "hard_swish":
        return g.call_function(F.hardswish, (x,))
    if kind == "tanh":
        return g.call_function(torch.tanh, (x,))
    if kind == "silu":
        return g.call_function(F.silu, (x,))
    if kind == "elu":
        return g.call_function(F.elu, (x, act.alpha))
    if kind == "selu":
        return g.call_function(operator.mul, (g.call_function(F.elu, (x, act.alpha)), act.beta))
    if kind == "gelu_tanh":
        return g.call_function(F.gelu, (x,), {"approximate": "tanh"})
    if kind == "pow":
        return g.call_function(torch.pow, (x, act.alpha))
    functions: dict[str, Callable[..., Any]] = {
        "softplus": F.softplus, "mish": F.mish, "gelu": F.gelu, "erf": torch.erf,
        "exp": torch.exp, "log": torch.log, "sqrt": torch.sqrt, "neg": torch.neg,
        "abs": torch.abs, "reciprocal": torch.reciprocal}
    return g.call_function(functions[kind], (x,))


_BINARY: dict[str, Callable[..., Any]] = {
    "add": operator.add, "sub": operator.sub, "mul": operator.mul,
    "div": operator.truediv, "max": torch.maximum, "min": torch.minimum, "pow": torch.pow}


def _build(graph: Graph, input_shape: tuple[int, ...],
           batch_norms: dict[str, tuple[np.ndarray, ...]],
           conv_outputs: set[str] | None = None) -> TorchModel:
    """The torch module of ``graph``; a Conv whose output is not in ``conv_outputs``
    (the outputs of the model's Conv nodes; None: every Conv's) is a constant."""
    root = nn.Module()
    g = fx.Graph()
    taken: set[str] = set()
    env: dict[str, fx.Node] = {}
    shapes = graph.shapes
    for name in graph.inputs:
        env[name] = g.placeholder(_ident(name, taken))
    for name, value in graph.constants.items():
        ident = _ident(f"const_{name}", taken)
        root.register_buffer(ident, torch.from_numpy(np.array(value, np.float32)
                                                     if value.dtype.kind == "f" else
                                                     np.array(value)))
        env[name] = g.get_attr(ident)
    convs: dict[str, Conv] = {}

    def module(layer_name: str, m: nn.Module) -> str:
        ident = _ident(layer_name, taken)
        root.add_module(ident, m)
        return ident

    for layer in graph.layers:
        args = [env[t] for t in layer.inputs]
        x = args[0] if args else None
        out: fx.Node | list[fx.Node]
        if isinstance(layer, Conv) and conv_outputs is not None \
                and layer.outputs[0] not in conv_outputs:
            out = _activation(g, layer.activation, _frozen_conv(g, layer, args, module))
        elif isinstance(layer, Conv):
            pt, pl, pb, pr = layer.pads
            conv = nn.Conv2d(layer.weight.shape[1] * layer.groups, layer.weight.shape[0],
                             layer.kernel_shape, layer.strides,
                             (pt, pl) if (pt, pl) == (pb, pr) else 0,
                             layer.dilations, layer.groups)
            with torch.no_grad():
                conv.weight.copy_(torch.from_numpy(np.array(layer.weight, np.float32)))
                conv.bias.copy_(torch.from_numpy(np.array(layer.bias, np.float32)))  # type: ignore[union-attr]
            ident = module(layer.name, conv)
            convs[ident] = layer
            if (pt, pl) != (pb, pr):
                x = g.call_function(F.pad, (x, (pl, pr, pt, pb)))
            y = g.call_module(ident, (x,))
            if len(args) == 2:
                y = g.call_function(operator.add, (y, args[1]))
            out = _activation(g, layer.activation, y)
        elif isinstance(layer, Dense):
            linear = nn.Linear(layer.weight.shape[1], layer.weight.shape[0])
            with torch.no_grad():
                linear.weight.copy_(torch.from_numpy(np.array(layer.weight, np.float32)))
                linear.bias.copy_(torch.from_numpy(np.array(layer.bias, np.float32)))
            out = _activation(g, layer.activation,
                              g.call_module(module(layer.name, linear), (x,)))
        elif isinstance(layer, ScaleShift) and len(shapes[layer.inputs[0]]) == 4:
            bn = _batch_norm(layer, batch_norms.get(layer.outputs[0]))
            out = _activation(g, layer.activation, g.call_module(module(layer.name, bn), (x,)))
        elif isinstance(layer, ScaleShift):
            rank = len(shapes[layer.inputs[0]])
            view = (1, -1) + (1,) * (rank - 2)
            scale = module(layer.name + "_scale", _Constant(layer.scale.reshape(view)))
            shift = module(layer.name + "_shift", _Constant(layer.shift.reshape(view)))
            y = g.call_function(operator.mul, (x, g.call_module(scale, ())))
            y = g.call_function(operator.add, (y, g.call_module(shift, ())))
            out = _activation(g, layer.activation, y)
        elif isinstance(layer, Pool):
            out = _pool(g, layer, x)  # type: ignore[arg-type]
        elif isinstance(layer, GlobalPool):
            fn = torch.mean if layer.kind == "avg" else torch.amax
            out = g.call_function(fn, (x, [2, 3]), {"keepdim": True})
        elif isinstance(layer, Binary):
            out = _activation(g, layer.activation,
                              g.call_function(_BINARY[layer.binop], tuple(args)))
        elif isinstance(layer, Unary):
            out = _activation(g, layer.activation, x)  # type: ignore[arg-type]
        elif isinstance(layer, Softmax):
            out = g.call_function(torch.log_softmax if layer.log else torch.softmax,
                                  (x, layer.axis))
        elif isinstance(layer, Concat):
            out = g.call_function(torch.cat, (args, layer.axis))
        elif isinstance(layer, Reshape):
            before = shapes[layer.inputs[0]]
            target = tuple(layer.shape)
            if len(before) == 4 and len(target) == 2 and target[0] == before[0]:
                out = g.call_function(torch.flatten, (x, 1))
            elif before[1:2] == target[1:2] and math.prod(before[2:]) == math.prod(target[2:]) == 1:
                # (N, C) <-> (N, C, 1, 1): the channel count stays free too, so that
                # removing filters upstream leaves this valid
                batch = g.call_function(operator.getitem, (
                    g.call_function(getattr, (x, "shape")), 0))
                out = g.call_function(torch.reshape, (x, (batch, -1, *target[2:])))
            else:  # the batch dimension stays free
                out = g.call_function(torch.reshape, (x, (-1, *target[1:])))
        elif isinstance(layer, Transpose):
            out = g.call_function(torch.permute, (x, tuple(layer.perm)))
        elif isinstance(layer, Slice):
            index = tuple(slice(s, e if e >= 0 else None, st) for s, e, st in
                          zip(layer.starts, layer.ends, layer.steps, strict=True))
            out = g.call_function(operator.getitem, (x, index))
        elif isinstance(layer, Split):
            parts = g.call_function(torch.split, (x, list(layer.sizes), layer.axis))
            out = [g.call_function(operator.getitem, (parts, i))
                   for i in range(len(layer.outputs))]
        elif isinstance(layer, Pad):
            out = _pad(g, layer, x)  # type: ignore[arg-type]
        elif isinstance(layer, Col2Im):
            out = _activation(g, layer.activation, _col2im(
                g, layer, x, shapes[layer.inputs[0]], module))  # type: ignore[arg-type]
        elif isinstance(layer, Gather):
            # numpy-style indexing with one index list (a scalar drops the axis), as Gather
            index = (*(slice(None),) * layer.axis, layer.indices.tolist())
            out = g.call_function(operator.getitem, (x, index))
        elif isinstance(layer, Resize):
            resample = _Resample(layer, shapes[layer.inputs[0]])
            out = g.call_module(module(layer.name, resample), (x,))
        else:
            raise PruningError(f"pruning cannot rebuild {layer.op} layers in torch", layer.name)
        for name, node in zip(layer.outputs, out if isinstance(out, list) else [out],
                              strict=True):
            env[name] = node
    outputs = [env[name] for name in graph.outputs]
    g.output(outputs[0] if len(outputs) == 1 else tuple(outputs))
    return TorchModel(fx.GraphModule(root, g).eval(), convs, input_shape)


class _Constant(nn.Module):
    """A constant tensor as a module (not a parameter: it is not trained)."""

    def __init__(self, value: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("value", torch.from_numpy(np.array(value, np.float32)))

    def forward(self) -> torch.Tensor:
        value: torch.Tensor = self.get_buffer("value")
        return value


class _Resample(nn.Module):
    """A Resize from its window tables (``patcc.ir.resample``), so that every mode
    means in torch what it means to patcc; the batch and channel axes stay free."""

    def __init__(self, layer: Resize, in_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.axes: list[int] = []
        self.extrapolation = float(layer.extrapolation_value)
        for axis, taps in enumerate(layer.axis_taps(in_shape)):
            if taps is None:
                continue
            if axis < 2:
                raise PruningError("pruning cannot rebuild a Resize of the batch or channel "
                                   "axis", layer.name)
            self.axes.append(axis)
            self.register_buffer(f"index{axis}", torch.from_numpy(taps.index))
            self.register_buffer(f"weight{axis}", torch.from_numpy(
                taps.weight.astype(np.float32)))
            outside = np.zeros(len(taps.index), bool) if taps.outside is None else taps.outside
            self.register_buffer(f"outside{axis}", torch.from_numpy(outside))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outside = None
        for axis in self.axes:
            index, weight = self.get_buffer(f"index{axis}"), self.get_buffer(f"weight{axis}")
            window = x.index_select(axis, index.reshape(-1)).unflatten(axis, index.shape)
            view = [1] * window.dim()
            view[axis:axis + 2] = index.shape
            x = (window * weight.reshape(view)).sum(axis + 1)
            flags = self.get_buffer(f"outside{axis}")
            flag_view = [1] * x.dim()
            flag_view[axis] = len(flags)
            flags = flags.reshape(flag_view)
            outside = flags if outside is None else outside | flags
        return x if outside is None else torch.where(outside, self.extrapolation, x)


def _frozen_conv(g: fx.Graph, layer: Conv, args: list[fx.Node],
                 module: Callable[[str, nn.Module], str]) -> fx.Node:
    """``layer`` as ``F.conv2d`` with constant weights: no ``nn.Conv2d`` for the
    pruning algorithms to prune or train (``write_back`` could not store it)."""
    pt, pl, pb, pr = layer.pads
    x = args[0]
    if (pt, pl) != (pb, pr):
        x = g.call_function(F.pad, (x, (pl, pr, pt, pb)))
    weight = g.call_module(module(layer.name + "_weight", _Constant(layer.weight)), ())
    bias = g.call_module(module(layer.name + "_bias", _Constant(layer.bias)), ())
    y = g.call_function(F.conv2d, (x, weight, bias, layer.strides,
                                   (pt, pl) if (pt, pl) == (pb, pr) else 0,
                                   layer.dilations, layer.groups))
    return g.call_function(operator.add, (y, args[1])) if len(args) == 2 else y


def _col2im(g: fx.Graph, layer: Col2Im, x: fx.Node, in_shape: tuple[int, ...],
            module: Callable[[str, nn.Module], str]) -> fx.Node:
    """``F.fold`` of the taps into their full image, cropped (negative ``F.pad``) by
    the pads and extended by any output padding, plus the bias."""
    _, _, h, w = in_shape
    (kh, kw), (sh, sw), (dh, dw) = layer.kernel, layer.strides, layer.dilations
    full = ((h - 1) * sh + (kh - 1) * dh + 1, (w - 1) * sw + (kw - 1) * dw + 1)
    image = g.call_function(F.fold, (g.call_function(torch.flatten, (x, 2)), full,
                                     layer.kernel), {"dilation": layer.dilations,
                                                     "stride": layer.strides})
    pt, pl, _, _ = layer.pads
    ho, wo = layer.output_size
    y = g.call_function(F.pad, (image, (-pl, wo + pl - full[1], -pt, ho + pt - full[0])))
    if layer.bias is None:
        return y
    bias = module(layer.name + "_bias", _Constant(layer.bias.reshape(1, -1, 1, 1)))
    return g.call_function(operator.add, (y, g.call_module(bias, ())))


def _pool(g: fx.Graph, layer: Pool, x: fx.Node) -> fx.Node:
    pt, pl, pb, pr = layer.pads
    if (pt, pl) != (pb, pr) or 2 * pt > layer.kernel[0] or 2 * pl > layer.kernel[1]:
        raise PruningError("pruning supports pools with symmetric padding up to half the "
                           "window only", layer.name)
    if layer.kind == "max":
        return g.call_function(F.max_pool2d, (x, layer.kernel, layer.strides, (pt, pl),
                                              layer.dilations, layer.ceil_mode))
    if layer.dilations != (1, 1):
        raise PruningError("pruning does not support dilated average pooling", layer.name)
    return g.call_function(F.avg_pool2d, (x, layer.kernel, layer.strides, (pt, pl),
                                          layer.ceil_mode, layer.count_include_pad))


def _pad(g: fx.Graph, layer: Pad, x: fx.Node) -> fx.Node:
    rank = len(layer.pads) // 2
    pads: list[int] = []
    for axis in reversed(range(rank)):
        pads += [layer.pads[axis], layer.pads[axis + rank]]
    while len(pads) > 2 and pads[-2:] == [0, 0]:
        pads = pads[:-2]
    mode = {"constant": "constant", "reflect": "reflect", "edge": "replicate"}[layer.mode]
    kwargs: dict[str, Any] = {"value": layer.value} if mode == "constant" else {}
    return g.call_function(F.pad, (x, tuple(pads), mode), kwargs)


def write_back(proto: onnx.ModelProto, model: TorchModel,
               metadata: dict[str, str]) -> onnx.ModelProto:
    """A copy of ``proto`` with every convolution's weight and bias replaced by the
    torch module's, and ``metadata`` added to the model's metadata properties."""
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    initializers = {init.name: init for init in out.graph.initializer}
    producer = {node.output[0]: node for node in out.graph.node if node.op_type == "Conv"}
    used: dict[str, int] = {}
    for node in out.graph.node:
        for name in node.input:
            used[name] = used.get(name, 0) + 1
    for ident, layer in model.convs.items():
        node = producer.get(layer.outputs[0])
        conv = model.module.get_submodule(ident)
        if node is None:  # e.g. a ConvTranspose's rearranged weight: not stored as is
            raise PruningError("no ONNX Conv node produces this layer's output, so its "
                               "weights have nowhere to go; pruning writes back Conv "
                               "nodes only", layer.name)
        weight = conv.weight.detach().numpy()  # type: ignore[operator]
        _replace_initializer(initializers, node.input[1], weight, used, layer.name)
        bias = conv.bias.detach().numpy()  # type: ignore[operator]
        if len(node.input) > 2 and node.input[2]:
            _replace_initializer(initializers, node.input[2], bias, used, layer.name)
        elif bias.any():  # trained from zero: the node gains a bias input
            name = f"{node.output[0]}_patcc_bias"
            out.graph.initializer.append(numpy_helper.from_array(bias, name))
            while len(node.input) < 2:
                node.input.append("")
            node.input.append(name)
    for key, value in metadata.items():
        entry = next((p for p in out.metadata_props if p.key == key), None)
        if entry is None:
            entry = out.metadata_props.add()
            entry.key = key
        entry.value = value
    return out


def _replace_initializer(initializers: dict[str, onnx.TensorProto], name: str,
                         value: np.ndarray, used: dict[str, int], where: str) -> None:
    init = initializers.get(name)
    if init is None:
        raise PruningError(f"the convolution's weight {name!r} is not an initializer; "
                           "pruning cannot write it back", where)
    if used.get(name, 0) > 1:
        raise PruningError(f"the initializer {name!r} is shared by several nodes; pruning "
                           "cannot change it for one", where)
    init.CopyFrom(numpy_helper.from_array(value.astype(numpy_helper.to_array(init).dtype),
                                          name))
