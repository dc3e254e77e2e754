"""Converters from ONNX operators (on dynamic tensors) to IR layers.

One function per operator family; each reads a resolved ``Node`` and appends layers
through the ``Importer``. Semantics follow the ONNX operator specification for
opsets 11-28 (later than 21 only element types changed for these operators),
including where attributes moved to inputs (Clip 11, Split/Squeeze/Unsqueeze 13,
Reduce* 18, Pad axes 18).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NoReturn

import numpy as np
import onnx

from patcc.errors import PatccError
from patcc.frontends.onnx.importer import Importer, Node
from patcc.ir.layers import (
    Activation,
    Binary,
    Concat,
    Conv,
    Dense,
    GlobalPool,
    Pad,
    Pool,
    Reduce,
    Reshape,
    ScaleShift,
    Slice,
    Softmax,
    Split,
    Transpose,
    Unary,
)


def unsupported(node: Node, detail: str = "") -> NoReturn:
    """Raise the one-line error for an operator (or form of one) patcc cannot compile."""
    what = detail or f"unsupported operator {node.op_type!r}"
    raise PatccError(f"{what}; the supported operators are listed in README.md (Operators)",
                     node.where)


def _ints(values: object, default: tuple[int, ...]) -> tuple[int, ...]:
    if values is None:
        return default
    return tuple(int(v) for v in values)  # type: ignore[attr-defined]


def _int_list(node: Node, key: str, default: tuple[int, ...], length: int,
              minimum: int) -> tuple[int, ...]:
    """Attribute ``key`` as ``length`` integers, each at least ``minimum``."""
    value = node.attr(key)
    if value is None:
        return default
    if not isinstance(value, list) or not all(isinstance(v, int) for v in value):
        raise PatccError(f"{key} must be a list of integers, got {value!r}"[:200], node.where)
    if len(value) != length or min(value) < minimum:
        raise PatccError(f"{key} {value} must be {length} integers >= {minimum}"[:200],
                         node.where)
    return tuple(value)


def _window_attrs(node: Node) -> tuple[tuple[int, int], tuple[int, int]]:
    """(strides, dilations) of a 2-D conv or pool: two integers >= 1 each."""
    strides = _int_list(node, "strides", (1, 1), 2, 1)
    dilations = _int_list(node, "dilations", (1, 1), 2, 1)
    return strides, dilations  # type: ignore[return-value]


def _axis(node: Node, axis: int, rank: int) -> int:
    if not -rank <= axis < rank:
        raise PatccError(f"axis {axis} out of range for a rank-{rank} tensor", node.where)
    return axis % rank


def _spatial_input(ctx: Importer, node: Node) -> tuple[int, int, int, int]:
    shape = ctx.shape(node.inputs[0])
    if len(shape) != 4:
        unsupported(node, f"only 2-D {node.op_type} on NCHW tensors is supported "
                          f"(input has rank {len(shape)})")
    return shape


def _window_pads(node: Node, hw: tuple[int, int], kernel: tuple[int, int],
                 strides: tuple[int, int], dilations: tuple[int, int]) -> tuple[int, ...]:
    """(top, left, bottom, right) from ``pads`` or ``auto_pad``."""
    auto = node.attr("auto_pad", "NOTSET")
    if auto == "NOTSET":
        return _int_list(node, "pads", (0, 0, 0, 0), 4, 0)
    if auto == "VALID":
        return (0, 0, 0, 0)
    if auto not in ("SAME_UPPER", "SAME_LOWER"):
        raise PatccError(f"unknown auto_pad {auto!r}", node.where)
    begin, end = [], []
    for size, k, s, d in zip(hw, kernel, strides, dilations, strict=True):
        out = -(-size // s)
        total = max(0, (out - 1) * s + (k - 1) * d + 1 - size)
        small = total // 2
        begin.append(small if auto == "SAME_UPPER" else total - small)
        end.append(total - begin[-1])
    return (begin[0], begin[1], end[0], end[1])


# ---------------------------------------------------------------------------------------
# Convolution, dense, normalisation
# ---------------------------------------------------------------------------------------


def conv(ctx: Importer, node: Node) -> None:
    _, _, h, w = _spatial_input(ctx, node)
    weight = ctx.weight(node, 1, "weight")
    if weight.ndim != 4:
        unsupported(node, f"only 2-D convolution is supported (weight rank {weight.ndim})")
    bias = ctx.weight(node, 2, "bias") if len(node.inputs) > 2 and node.inputs[2] else None
    kernel = (int(weight.shape[2]), int(weight.shape[3]))
    if _int_list(node, "kernel_shape", kernel, 2, 1) != kernel:
        raise PatccError(f"kernel_shape {node.attr('kernel_shape')} does not match the "
                         f"weight {weight.shape}", node.where)
    strides, dilations = _window_attrs(node)
    groups = node.attr("group", 1)
    if not isinstance(groups, int) or groups < 1:
        raise PatccError(f"group {groups!r} must be a positive integer", node.where)
    ctx.add(Conv(
        name=ctx.layer_name(node), inputs=(node.inputs[0],), outputs=(node.outputs[0],),
        weight=weight,
        bias=np.zeros(weight.shape[0], np.float32) if bias is None else bias,
        strides=strides,
        pads=_window_pads(node, (h, w), kernel, strides, dilations),  # type: ignore[arg-type]
        dilations=dilations,
        groups=groups,
    ))


def gemm(ctx: Importer, node: Node) -> None:
    a = node.inputs[0]
    if len(ctx.shape(a)) != 2:
        raise PatccError(f"Gemm input A must be 2-D, got shape {ctx.shape(a)}", node.where)
    b = ctx.weight(node, 1, "B")
    if b.ndim != 2:
        raise PatccError(f"Gemm B must be 2-D, got shape {b.shape}", node.where)
    weight = (b if node.attr("transB", 0) else b.T) * np.float32(node.attr("alpha", 1.0))
    if node.attr("transA", 0):
        t = ctx.temp(node, "a_t")
        ctx.add(Transpose(name=ctx.layer_name(node, "_transA"), inputs=(a,), outputs=(t,),
                          perm=(1, 0)))
        a = t
    m, n = ctx.shape(a)[0], weight.shape[0]
    c = ctx.optional_const(node, 2, "C")
    bias = np.zeros(n, np.float32)
    extra = None
    if c is not None:
        c = ctx.weight(node, 2, "C") * np.float32(node.attr("beta", 1.0))
        try:
            np.broadcast_shapes(c.shape, (m, n))
        except ValueError:
            raise PatccError(f"C of shape {c.shape} does not broadcast to the output "
                             f"{m}x{n}", node.where) from None
        if c.size in (1, n) and c.ndim <= 2 and (c.ndim < 2 or c.shape[0] == 1):
            bias = np.broadcast_to(c.reshape(-1), (n,)).astype(np.float32)
        else:
            extra = np.broadcast_to(c, (m, n)).astype(np.float32)
    out = node.outputs[0] if extra is None else ctx.temp(node, "mm")
    ctx.add(Dense(name=ctx.layer_name(node), inputs=(a,), outputs=(out,),
                  weight=np.ascontiguousarray(weight, dtype=np.float32), bias=bias))
    if extra is not None:
        cname = _constant_operand(ctx, node, "C", extra)
        ctx.add(Binary(name=ctx.layer_name(node, "_C"), inputs=(out, cname),
                       outputs=(node.outputs[0],), binop="add"))


def matmul(ctx: Importer, node: Node) -> None:
    if node.inputs[1] not in ctx.consts:
        unsupported(node, "MatMul of two computed tensors is not supported "
                          "(the second operand must be a constant weight)")
    b = ctx.weight(node, 1, "B")
    if b.ndim != 2 or len(ctx.shape(node.inputs[0])) < 2:
        unsupported(node, f"MatMul with weight of shape {b.shape} is not supported "
                          "(needs a 2-D weight and an input of rank >= 2)")
    ctx.add(Dense(name=ctx.layer_name(node), inputs=(node.inputs[0],),
                  outputs=(node.outputs[0],), weight=np.ascontiguousarray(b.T),
                  bias=np.zeros(b.shape[1], np.float32)))


def instance_norm(ctx: Importer, node: Node) -> None:
    """(x - mean) / sqrt(var + epsilon) per image and channel over H and W, then a
    per-channel scale and bias; from GlobalPool, Binary, Unary and ScaleShift layers."""
    shape = ctx.shape(node.inputs[0])
    if len(shape) < 3:
        unsupported(node, f"InstanceNormalization of a rank-{len(shape)} tensor is not "
                          "supported (needs N, C and spatial axes)")
    channels = shape[1]
    scale, bias = ctx.weight(node, 1, "scale"), ctx.weight(node, 2, "B")
    for what, value in (("scale", scale), ("B", bias)):
        if value.shape != (channels,):
            raise PatccError(f"{what} has shape {value.shape}; the input {list(shape)} needs "
                             f"({channels},)", node.where)
    eps = float(node.attr("epsilon", 1e-5))
    if not eps >= 0:
        raise PatccError(f"epsilon {eps} must be >= 0", node.where)
    x = node.inputs[0]
    mean, centred, square, var, shifted, std, normed = (
        ctx.temp(node, t) for t in ("mean", "centred", "square", "var", "shifted", "std",
                                    "normed"))

    def layer(cls: type, suffix: str, inputs: tuple[str, ...], out: str, **kw: object) -> None:
        ctx.add(cls(name=ctx.layer_name(node, suffix), inputs=inputs, outputs=(out,), **kw))

    layer(GlobalPool, "_mean", (x,), mean, kind="avg")
    layer(Binary, "_centre", (x, mean), centred, binop="sub")
    layer(Binary, "_square", (centred, centred), square, binop="mul")
    layer(GlobalPool, "_var", (square,), var, kind="avg")
    layer(Binary, "_eps", (var, _constant_operand(ctx, node, "eps",
                                                  np.array(eps, np.float32))),
          shifted, binop="add")
    layer(Unary, "_sqrt", (shifted,), std, activation=Activation("sqrt"))
    layer(Binary, "_divide", (centred, std), normed, binop="div")
    layer(ScaleShift, "", (normed,), node.outputs[0], scale=scale, shift=bias)


def batch_norm(ctx: Importer, node: Node) -> None:
    if node.attr("training_mode", 0):
        unsupported(node, "BatchNormalization in training mode is not supported "
                          "(export the model in eval mode)")
    if any(node.outputs[1:]):
        unsupported(node, "BatchNormalization running-statistics outputs are not supported")
    shape = ctx.shape(node.inputs[0])
    channels = shape[1] if len(shape) >= 2 else 0
    scale, shift, mean, var = (ctx.weight(node, i, what) for i, what in
                               enumerate(("scale", "B", "mean", "var"), start=1))
    for what, value in zip(("scale", "B", "mean", "var"), (scale, shift, mean, var),
                           strict=True):
        if value.shape != (channels,):
            raise PatccError(f"{what} has shape {value.shape}; the input {list(shape)} needs "
                             f"({channels},)", node.where)
    eps = np.float64(node.attr("epsilon", 1e-5))
    if not np.isfinite(eps) or not (var.astype(np.float64) + eps > 0).all():
        bad = int(np.argmin(var.astype(np.float64) + eps))
        raise PatccError(f"var + epsilon must be positive, but channel {bad} has var "
                         f"{float(var[bad]):g} and epsilon is {float(eps):g}", node.where)
    factor = scale.astype(np.float64) / np.sqrt(var.astype(np.float64) + eps)
    ctx.add(ScaleShift(
        name=ctx.layer_name(node), inputs=(node.inputs[0],), outputs=(node.outputs[0],),
        scale=factor.astype(np.float32),
        shift=(shift - mean * factor).astype(np.float32),
    ))


# ---------------------------------------------------------------------------------------
# Pooling and reductions
# ---------------------------------------------------------------------------------------


def pool(kind: str) -> Callable[[Importer, Node], None]:
    def convert(ctx: Importer, node: Node) -> None:
        _, _, h, w = _spatial_input(ctx, node)
        if any(node.outputs[1:]):
            unsupported(node, "MaxPool with an Indices output is not supported")
        if node.attr("storage_order", 0):
            unsupported(node, "MaxPool storage_order=1 is not supported")
        if node.attr("kernel_shape") is None:
            raise PatccError("kernel_shape is missing", node.where)
        kernel = _int_list(node, "kernel_shape", (), 2, 1)
        strides, dilations = _window_attrs(node)
        ctx.add(Pool(
            name=ctx.layer_name(node), inputs=(node.inputs[0],), outputs=(node.outputs[0],),
            kind=kind, kernel=kernel,  # type: ignore[arg-type]
            strides=strides,
            pads=_window_pads(node, (h, w), kernel, strides, dilations),  # type: ignore[arg-type]
            dilations=dilations,
            ceil_mode=bool(node.attr("ceil_mode", 0)),
            count_include_pad=bool(node.attr("count_include_pad", 0)),
        ))
    return convert


def global_pool(kind: str) -> Callable[[Importer, Node], None]:
    def convert(ctx: Importer, node: Node) -> None:
        ctx.add(GlobalPool(name=ctx.layer_name(node), inputs=(node.inputs[0],),
                           outputs=(node.outputs[0],), kind=kind))
    return convert


def reduce(kind: str) -> Callable[[Importer, Node], None]:
    """ReduceMean/Max/Min/Sum/L2 over any axes, keepdims either way (axes an attribute,
    or an input from opset 18, 13 for ReduceSum). Over all spatial axes of a 3-D or
    wider tensor, a mean or max is a GlobalPool; any other set of axes is a Reduce
    per run of consecutive axes, then a Reshape where the axes are dropped."""
    def convert(ctx: Importer, node: Node) -> None:
        x = node.inputs[0]
        shape = ctx.shape(x)
        rank = len(shape)
        if ctx.opset >= (13 if kind == "sum" else 18):
            axes_value = ctx.optional_const(node, 1, "axes")
            axes = None if axes_value is None else _ints(axes_value.reshape(-1), ())
        else:
            axes = _ints(node.attr("axes"), ()) if node.attr("axes") is not None else None
        if not axes:
            if node.attr("noop_with_empty_axes", 0) or rank == 0:
                ctx.alias[node.outputs[0]] = x
                return
            axes = tuple(range(rank))
        norm = sorted({_axis(node, a, rank) for a in axes})
        keep = bool(node.attr("keepdims", 1))
        kept_shape = tuple(1 if a in norm else d for a, d in enumerate(shape))
        out = node.outputs[0] if keep else ctx.temp(node, "keep")
        if kind in ("mean", "max") and rank >= 3 and norm == list(range(2, rank)):
            ctx.add(GlobalPool(name=ctx.layer_name(node), inputs=(x,), outputs=(out,),
                               kind="avg" if kind == "mean" else "max"))
        else:
            runs: list[list[int]] = []
            for a in norm:
                if runs and runs[-1][-1] == a - 1:
                    runs[-1].append(a)
                else:
                    runs.append([a])
            source = x
            for k, run in enumerate(runs):
                last = k == len(runs) - 1
                target = out if last else ctx.temp(node, f"part{k}")
                ctx.add(Reduce(name=ctx.layer_name(node, "" if last else f"_{k}"),
                               inputs=(source,), outputs=(target,), kind=kind,
                               start=run[0], stop=run[-1] + 1))
                source = target
        if not keep:
            ctx.add(Reshape(name=ctx.layer_name(node, "_squeeze"), inputs=(out,),
                            outputs=(node.outputs[0],),
                            shape=tuple(d for a, d in enumerate(kept_shape) if a not in norm)))
    return convert


# ---------------------------------------------------------------------------------------
# Element-wise
# ---------------------------------------------------------------------------------------


def _chain(ctx: Importer, node: Node, op: str, out: str) -> bool:
    """Fold the node's inputs with ``op`` into ``out`` (a chain of Binary layers);
    False, with ``out`` an alias of the input, when there is one input."""
    inputs = [i for i in node.inputs if i]
    if len(inputs) == 1:
        ctx.alias[out] = inputs[0]
        return False
    acc = ctx.operand(node, 0)
    for k in range(1, len(inputs)):
        last = k == len(inputs) - 1
        target = out if last else ctx.temp(node, f"acc{k}")
        ctx.add(Binary(name=ctx.layer_name(node, "" if last else f"_{k}"),
                       inputs=(acc, ctx.operand(node, k)), outputs=(target,), binop=op))
        acc = target
    return True


def binary(op: str) -> Callable[[Importer, Node], None]:
    """Add/Sub/Mul/Div (two inputs) and the variadic Max/Min/Sum, as a chain."""
    def convert(ctx: Importer, node: Node) -> None:
        _chain(ctx, node, op, node.outputs[0])
    return convert


def _constant_operand(ctx: Importer, node: Node, suffix: str, value: np.ndarray) -> str:
    """A graph constant made for this node's translation."""
    name = ctx.temp(node, suffix)
    ctx.consts[name] = value
    ctx.graph_constants[name] = value
    return name


def mean(ctx: Importer, node: Node) -> None:
    """Mean of several inputs: their sum (a chain of adds) times 1/n."""
    total = ctx.temp(node, "sum")
    if _chain(ctx, node, "add", total):
        scale = _constant_operand(ctx, node, "scale",
                                  np.array(1 / len([i for i in node.inputs if i]), np.float32))
        ctx.add(Binary(name=ctx.layer_name(node), inputs=(total, scale),
                       outputs=(node.outputs[0],), binop="mul"))
    else:
        ctx.alias[node.outputs[0]] = ctx.alias.pop(total)


def prelu(ctx: Importer, node: Node) -> None:
    """x if x >= 0 else slope * x. One slope: a leaky ReLU; a slope per channel (or any
    shape broadcasting to x): relu(x) + slope * min(x, 0), which keeps NaN and inf as
    onnxruntime's product does."""
    x = node.inputs[0]
    slope = ctx.weight(node, 1, "slope")
    shape = ctx.shape(x)
    try:
        if np.broadcast_shapes(slope.shape, shape) != tuple(shape):
            raise ValueError
    except ValueError:
        raise PatccError(f"slope of shape {slope.shape} does not broadcast to the input "
                         f"{list(shape)}", node.where) from None
    if slope.size == 1:
        ctx.add(Unary(name=ctx.layer_name(node), inputs=(x,), outputs=(node.outputs[0],),
                      activation=Activation("leaky_relu", float(slope.reshape(-1)[0]))))
        return
    zero = _constant_operand(ctx, node, "zero", np.zeros((), np.float32))
    slope_name = _constant_operand(ctx, node, "slope", slope)
    negative, scaled, positive = (ctx.temp(node, t) for t in ("neg", "scaled", "pos"))
    ctx.add(Binary(name=ctx.layer_name(node, "_min"), inputs=(x, zero), outputs=(negative,),
                   binop="min"))
    ctx.add(Binary(name=ctx.layer_name(node, "_scale"), inputs=(negative, slope_name),
                   outputs=(scaled,), binop="mul"))
    ctx.add(Unary(name=ctx.layer_name(node, "_relu"), inputs=(x,), outputs=(positive,),
                  activation=Activation("relu")))
    ctx.add(Binary(name=ctx.layer_name(node), inputs=(positive, scaled),
                   outputs=(node.outputs[0],), binop="add"))


def activation(kind: str) -> Callable[[Importer, Node], None]:
    def convert(ctx: Importer, node: Node) -> None:
        alpha, beta, chosen = 0.0, 0.0, kind
        if kind == "leaky_relu":
            alpha = float(node.attr("alpha", 0.01))
        elif kind == "hard_sigmoid":
            alpha, beta = float(node.attr("alpha", 0.2)), float(node.attr("beta", 0.5))
        elif kind == "clip":
            lo, hi = ctx.optional_const(node, 1, "min"), ctx.optional_const(node, 2, "max")
            alpha, beta = _clip_bound(node, lo, -math.inf), _clip_bound(node, hi, math.inf)
        elif kind == "elu":
            alpha = float(node.attr("alpha", 1.0))
        elif kind == "selu":
            alpha = float(node.attr("alpha", 1.67326319217681884765625))
            beta = float(node.attr("gamma", 1.05070102214813232421875))
        elif kind == "gelu":
            approximate = node.attr("approximate", "none")
            if approximate not in ("none", "tanh"):
                raise PatccError(f"unknown approximate {approximate!r}", node.where)
            chosen = "gelu_tanh" if approximate == "tanh" else kind
        elif kind == "pow":
            exponent = ctx.consts.get(node.inputs[1]) if len(node.inputs) > 1 else None
            if exponent is None or np.asarray(exponent).size != 1:  # element-wise
                if exponent is not None and np.issubdtype(exponent.dtype, np.integer):
                    operand = _constant_operand(ctx, node, "exponent",
                                                exponent.astype(np.float32))
                else:
                    operand = ctx.operand(node, 1)
                ctx.add(Binary(name=ctx.layer_name(node), outputs=(node.outputs[0],),
                               binop="pow", inputs=(ctx.operand(node, 0), operand)))
                return
            alpha = float(np.asarray(exponent).reshape(-1)[0])
        ctx.add(Unary(name=ctx.layer_name(node), inputs=(node.inputs[0],),
                      outputs=(node.outputs[0],), activation=Activation(chosen, alpha, beta)))
    return convert


def _clip_bound(node: Node, value: object, default: float) -> float:
    """A Clip bound as a float; a missing or NaN bound is no bound (as onnxruntime)."""
    if value is None:
        return default
    array = np.asarray(value)
    if array.size != 1 or not np.issubdtype(array.dtype, np.number):
        raise PatccError(f"a Clip bound must be one number, got shape {array.shape}",
                         node.where)
    bound = float(array.reshape(-1)[0])
    return default if math.isnan(bound) else bound


def softmax(ctx: Importer, node: Node) -> None:
    """Softmax and LogSoftmax (``log``): one Softmax layer along the axis."""
    log = node.op_type == "LogSoftmax"
    x = node.inputs[0]
    shape = ctx.shape(x)
    rank = len(shape)
    axis = _axis(node, int(node.attr("axis", -1 if ctx.opset >= 13 else 1)), rank)
    if ctx.opset >= 13 or axis == rank - 1:
        ctx.add(Softmax(name=ctx.layer_name(node), inputs=(x,), outputs=(node.outputs[0],),
                        axis=axis, log=log))
        return
    # before opset 13 Softmax normalises over all axes from `axis` on, as one row
    flat = (math.prod(shape[:axis]), math.prod(shape[axis:]))
    t0, t1 = ctx.temp(node, "rows"), ctx.temp(node, "softmax")
    ctx.add(Reshape(name=ctx.layer_name(node, "_rows"), inputs=(x,), outputs=(t0,), shape=flat))
    ctx.add(Softmax(name=ctx.layer_name(node), inputs=(t0,), outputs=(t1,), axis=1, log=log))
    ctx.add(Reshape(name=ctx.layer_name(node, "_back"), inputs=(t1,),
                    outputs=(node.outputs[0],), shape=shape))


# ---------------------------------------------------------------------------------------
# Data movement
# ---------------------------------------------------------------------------------------


def _reshape_to(ctx: Importer, node: Node, shape: tuple[int, ...]) -> None:
    ctx.add(Reshape(name=ctx.layer_name(node), inputs=(node.inputs[0],),
                    outputs=(node.outputs[0],), shape=tuple(int(d) for d in shape)))


def flatten(ctx: Importer, node: Node) -> None:
    shape = ctx.shape(node.inputs[0])
    axis = int(node.attr("axis", 1))
    if not -len(shape) <= axis <= len(shape):
        raise PatccError(f"axis {axis} out of range for a rank-{len(shape)} tensor", node.where)
    axis = axis + len(shape) if axis < 0 else axis
    _reshape_to(ctx, node, (math.prod(shape[:axis]), math.prod(shape[axis:])))


def reshape(ctx: Importer, node: Node) -> None:
    shape = ctx.shape(node.inputs[0])
    value = ctx.const(node, 1, "shape")
    if not np.issubdtype(value.dtype, np.integer):
        raise PatccError(f"the shape input has dtype {value.dtype}; ONNX requires int64",
                         node.where)
    target = [int(d) for d in value.reshape(-1)]
    if not node.attr("allowzero", 0):
        if any(d == 0 for d in target[len(shape):]):
            raise PatccError(f"shape {target[:8]}: a 0 (copy the input's dimension) past the "
                             f"input's rank {len(shape)}", node.where)
        target = [shape[i] if d == 0 else d for i, d in enumerate(target)]
    if target.count(-1) > 1 or min(target, default=0) < -1:
        raise PatccError(f"shape {target[:8]} has more than one -1 or a dimension below -1",
                         node.where)
    if -1 in target:
        known = math.prod(d for d in target if d != -1)
        if not known or math.prod(shape) % known:
            raise PatccError(f"cannot reshape {list(shape)} to {target[:8]}", node.where)
        target[target.index(-1)] = math.prod(shape) // known
    _reshape_to(ctx, node, tuple(target))


def _axes_input_or_attr(ctx: Importer, node: Node, since: int) -> tuple[int, ...] | None:
    if ctx.opset >= since:
        value = ctx.optional_const(node, 1, "axes")
        return None if value is None else _ints(value.reshape(-1), ())
    attr = node.attr("axes")
    return None if attr is None else _ints(attr, ())


def squeeze(ctx: Importer, node: Node) -> None:
    shape = ctx.shape(node.inputs[0])
    axes = _axes_input_or_attr(ctx, node, 13)
    drop = ({i for i, d in enumerate(shape) if d == 1} if axes is None
            else {_axis(node, a, len(shape)) for a in axes})
    if any(shape[a] != 1 for a in drop):
        raise PatccError(f"cannot squeeze axes {sorted(drop)} of shape {shape}", node.where)
    _reshape_to(ctx, node, tuple(d for i, d in enumerate(shape) if i not in drop))


def unsqueeze(ctx: Importer, node: Node) -> None:
    shape = list(ctx.shape(node.inputs[0]))
    axes = _axes_input_or_attr(ctx, node, 13) or ()
    rank = len(shape) + len(axes)
    for a in sorted(_axis(node, a, rank) for a in axes):
        shape.insert(a, 1)
    _reshape_to(ctx, node, tuple(shape))


def transpose(ctx: Importer, node: Node) -> None:
    rank = len(ctx.shape(node.inputs[0]))
    perm = _ints(node.attr("perm"), tuple(reversed(range(rank))))
    ctx.add(Transpose(name=ctx.layer_name(node), inputs=(node.inputs[0],),
                      outputs=(node.outputs[0],), perm=perm))


def _shuffle(ctx: Importer, node: Node, split: tuple[int, ...], perm: tuple[int, ...],
             out_shape: tuple[int, ...]) -> None:
    """Reshape to ``split``, permute by ``perm``, reshape to ``out_shape``."""
    t0, t1 = ctx.temp(node, "split"), ctx.temp(node, "moved")
    ctx.add(Reshape(name=ctx.layer_name(node, "_split"), inputs=(node.inputs[0],),
                    outputs=(t0,), shape=split))
    ctx.add(Transpose(name=ctx.layer_name(node), inputs=(t0,), outputs=(t1,), perm=perm))
    ctx.add(Reshape(name=ctx.layer_name(node, "_merge"), inputs=(t1,),
                    outputs=(node.outputs[0],), shape=out_shape))


def depth_to_space(ctx: Importer, node: Node) -> None:
    """DCR (depth, column, row: the default) or CRD blocks of channels into space."""
    n, c, h, w = _spatial_input(ctx, node)
    bs, mode = int(node.attr("blocksize", 0)), node.attr("mode", "DCR")
    if bs < 1 or c % (bs * bs) or mode not in ("DCR", "CRD"):
        raise PatccError(f"blocksize {bs} and mode {mode!r} for {c} channels: the "
                         "channels must divide by blocksize^2, mode DCR or CRD", node.where)
    depth = c // (bs * bs)
    if mode == "DCR":
        split, perm = (n, bs, bs, depth, h, w), (0, 3, 4, 1, 5, 2)
    else:
        split, perm = (n, depth, bs, bs, h, w), (0, 1, 4, 2, 5, 3)
    _shuffle(ctx, node, split, perm, (n, depth, h * bs, w * bs))


def space_to_depth(ctx: Importer, node: Node) -> None:
    """Blocks of space into channels, in DCR order (or CRD where the mode says so)."""
    n, c, h, w = _spatial_input(ctx, node)
    bs, mode = int(node.attr("blocksize", 0)), node.attr("mode", "DCR")
    if bs < 1 or h % bs or w % bs or mode not in ("DCR", "CRD"):
        raise PatccError(f"blocksize {bs} and mode {mode!r} for a {h}x{w} input: height and "
                         "width must divide by blocksize, mode DCR or CRD", node.where)
    perm = (0, 3, 5, 1, 2, 4) if mode == "DCR" else (0, 1, 3, 5, 2, 4)
    _shuffle(ctx, node, (n, c, h // bs, bs, w // bs, bs), perm,
             (n, c * bs * bs, h // bs, w // bs))


def expand(ctx: Importer, node: Node) -> None:
    """Broadcast to a constant shape: x + 0 of the expanded dimensions (numpy rules)."""
    shape = ctx.shape(node.inputs[0])
    target = tuple(int(d) for d in ctx.const(node, 1, "shape").reshape(-1))
    try:
        out = np.broadcast_shapes(shape, target)
    except ValueError:
        raise PatccError(f"cannot expand {list(shape)} to {list(target)}", node.where) from None
    if out == tuple(shape):
        ctx.alias[node.outputs[0]] = node.inputs[0]
        return
    padded = (1,) * (len(out) - len(shape)) + tuple(shape)
    zeros = np.zeros(tuple(o if p == 1 else 1 for o, p in zip(out, padded, strict=True)),
                     np.float32)
    ctx.add(Binary(name=ctx.layer_name(node), outputs=(node.outputs[0],), binop="add",
                   inputs=(node.inputs[0], _constant_operand(ctx, node, "zeros", zeros))))


def tile(ctx: Importer, node: Node) -> None:
    """Repeats along each axis: a Concat of copies per repeated axis."""
    shape = ctx.shape(node.inputs[0])
    repeats = [int(r) for r in ctx.const(node, 1, "repeats").reshape(-1)]
    if len(repeats) != len(shape) or min(repeats, default=1) < 1:
        raise PatccError(f"repeats {repeats} for a rank-{len(shape)} input must be one "
                         "integer >= 1 per axis", node.where)
    axes = [a for a, r in enumerate(repeats) if r > 1]
    if not axes:
        ctx.alias[node.outputs[0]] = node.inputs[0]
        return
    source = node.inputs[0]
    for k, axis in enumerate(axes):
        last = k == len(axes) - 1
        out = node.outputs[0] if last else ctx.temp(node, f"tile{axis}")
        ctx.add(Concat(name=ctx.layer_name(node, "" if last else f"_{axis}"),
                       inputs=(source,) * repeats[axis], outputs=(out,), axis=axis))
        source = out


def concat(ctx: Importer, node: Node) -> None:
    inputs = tuple(ctx.operand(node, i) for i, name in enumerate(node.inputs) if name)
    rank = len(ctx.shape(inputs[0]))
    ctx.add(Concat(name=ctx.layer_name(node), inputs=inputs, outputs=(node.outputs[0],),
                   axis=_axis(node, int(node.attr("axis")), rank)))


def split(ctx: Importer, node: Node) -> None:
    shape = ctx.shape(node.inputs[0])
    axis = _axis(node, int(node.attr("axis", 0)), len(shape))
    count = len(node.outputs)
    if ctx.opset >= 13:
        given = ctx.optional_const(node, 1, "split")
        sizes = None if given is None else _ints(given.reshape(-1), ())
    else:
        sizes = _ints(node.attr("split"), ()) or None
    if sizes is None:
        count = int(node.attr("num_outputs", count))
        chunk = -(-shape[axis] // count)
        sizes = tuple(min(chunk, shape[axis] - k * chunk) for k in range(count))
    outputs = tuple(out or ctx.temp(node, f"unused{k}") for k, out in enumerate(node.outputs))
    ctx.add(Split(name=ctx.layer_name(node), inputs=(node.inputs[0],), outputs=outputs,
                  axis=axis, sizes=sizes))


def slice_(ctx: Importer, node: Node) -> None:
    shape = ctx.shape(node.inputs[0])
    rank = len(shape)
    starts = ctx.const(node, 1, "starts").reshape(-1).astype(np.int64)
    ends = ctx.const(node, 2, "ends").reshape(-1).astype(np.int64)
    axes_v = ctx.optional_const(node, 3, "axes")
    steps_v = ctx.optional_const(node, 4, "steps")
    axes = range(len(starts)) if axes_v is None else axes_v.reshape(-1).tolist()
    steps = [1] * len(starts) if steps_v is None else steps_v.reshape(-1).tolist()
    lo, hi, st = [0] * rank, list(shape), [1] * rank
    for a, s, e, step in zip(axes, starts.tolist(), ends.tolist(), steps, strict=True):
        a = _axis(node, int(a), rank)
        d = shape[a]
        if step == 0:
            raise PatccError("Slice step 0", node.where)
        s = s + d if s < 0 else s
        e = e + d if e < 0 else e
        if step > 0:
            s, e = min(max(s, 0), d), min(max(e, 0), d)
        else:
            s, e = min(max(s, 0), d - 1), min(max(e, -1), d - 1)
        lo[a], hi[a], st[a] = s, e, int(step)
    ctx.add(Slice(name=ctx.layer_name(node), inputs=(node.inputs[0],),
                  outputs=(node.outputs[0],), starts=tuple(lo), ends=tuple(hi), steps=tuple(st)))


def pad(ctx: Importer, node: Node) -> None:
    shape = ctx.shape(node.inputs[0])
    rank = len(shape)
    mode = node.attr("mode", "constant")
    if mode not in ("constant", "reflect", "edge"):
        unsupported(node, f"Pad mode {mode!r} is not supported (constant, reflect, edge)")
    given = [int(p) for p in ctx.const(node, 1, "pads").reshape(-1)]
    value = ctx.optional_const(node, 2, "constant_value")
    axes_v = ctx.optional_const(node, 3, "axes")
    axes = list(range(rank)) if axes_v is None else [
        _axis(node, int(a), rank) for a in axes_v.reshape(-1)]
    if len(given) != 2 * len(axes):
        raise PatccError(f"pads {given} do not match {len(axes)} axes", node.where)
    if min(given, default=0) < 0:
        unsupported(node, f"negative pads {given} (cropping) are not supported")
    pads = [0] * (2 * rank)
    for k, a in enumerate(axes):
        pads[a], pads[a + rank] = given[k], given[k + len(axes)]
    ctx.add(Pad(name=ctx.layer_name(node), inputs=(node.inputs[0],),
                outputs=(node.outputs[0],), pads=tuple(pads), mode=mode,
                value=0.0 if value is None or value.size == 0 else float(value.reshape(-1)[0])))


# ---------------------------------------------------------------------------------------
# Nodes that vanish or become constants
# ---------------------------------------------------------------------------------------


def identity(ctx: Importer, node: Node) -> None:
    """Identity, Dropout (inference) and float-to-float Cast are aliases of their input."""
    if node.op_type == "Cast" and node.attr("to") != onnx.TensorProto.FLOAT:
        unsupported(node, "Cast of a computed tensor to a non-float32 type is not supported")
    if node.op_type == "Dropout" and any(node.outputs[1:]):
        unsupported(node, "Dropout with a mask output is not supported")
    ctx.alias[node.outputs[0]] = node.inputs[0]


def shape_of(ctx: Importer, node: Node) -> None:
    """Shape (and Size) of a computed tensor are constants: every shape is static."""
    shape = np.array(ctx.shape(node.inputs[0]), dtype=np.int64)
    if node.op_type == "Size":
        ctx.consts[node.outputs[0]] = np.array(shape.prod(), dtype=np.int64)
        return
    start, end = node.attr("start", 0), node.attr("end")
    ctx.consts[node.outputs[0]] = shape[start:end]


CONVERTERS: dict[str, Callable[[Importer, Node], None]] = {
    "Conv": conv,
    "Gemm": gemm,
    "MatMul": matmul,
    "BatchNormalization": batch_norm,
    "InstanceNormalization": instance_norm,
    "MaxPool": pool("max"),
    "AveragePool": pool("avg"),
    "GlobalAveragePool": global_pool("avg"),
    "GlobalMaxPool": global_pool("max"),
    "ReduceMean": reduce("mean"),
    "ReduceMax": reduce("max"),
    "ReduceMin": reduce("min"),
    "ReduceSum": reduce("sum"),
    "ReduceL2": reduce("l2"),
    "Add": binary("add"),
    "Sub": binary("sub"),
    "Mul": binary("mul"),
    "Div": binary("div"),
    "Max": binary("max"),
    "Min": binary("min"),
    "Sum": binary("add"),
    "Mean": mean,
    "PRelu": prelu,
    "Relu": activation("relu"),
    "Clip": activation("clip"),
    "LeakyRelu": activation("leaky_relu"),
    "Sigmoid": activation("sigmoid"),
    "HardSigmoid": activation("hard_sigmoid"),
    "HardSwish": activation("hard_swish"),
    "Tanh": activation("tanh"),
    "Elu": activation("elu"),
    "Selu": activation("selu"),
    "Softplus": activation("softplus"),
    "Mish": activation("mish"),
    "Gelu": activation("gelu"),
    "Erf": activation("erf"),
    "Exp": activation("exp"),
    "Log": activation("log"),
    "Sqrt": activation("sqrt"),
    "Neg": activation("neg"),
    "Abs": activation("abs"),
    "Reciprocal": activation("reciprocal"),
    "Pow": activation("pow"),
    "Softmax": softmax,
    "LogSoftmax": softmax,
    "Flatten": flatten,
    "Reshape": reshape,
    "Squeeze": squeeze,
    "Unsqueeze": unsqueeze,
    "Transpose": transpose,
    "Concat": concat,
    "DepthToSpace": depth_to_space,
    "SpaceToDepth": space_to_depth,
    "Expand": expand,
    "Tile": tile,
    "Split": split,
    "Slice": slice_,
    "Pad": pad,
    "Identity": identity,
    "Dropout": identity,
    "Cast": identity,
    "Shape": shape_of,
    "Size": shape_of,
}
