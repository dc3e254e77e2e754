"""One converter per ATen operation, and the table the importer looks them up in.

A converter takes the graph builder, the node, its operands (computed ``IRTensor``s or
constants) and keyword operands, emits IR layers through the builder and returns the
node's value (a tensor, a tuple of them for multi-output operations, or ``None``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from patcc.errors import FrontendError
from patcc.frontends.lowering import (
    Names,
    lower_expand,
    lower_prelu,
    lower_reduce,
    lower_shuffle,
    lower_tile,
    lower_variance,
)
from patcc.frontends.normalization import (
    lower_group_norm,
    lower_instance_norm,
    lower_layer_norm,
)
from patcc.frontends.torch.builder import Converter, GraphBuilder, IRTensor, where
from patcc.frontends.transpose_conv import TransposedConv, lower_conv_transpose
from patcc.ir.layers import (
    Activation,
    Binary,
    Concat,
    Conv,
    Dense,
    Gather,
    GlobalPool,
    Layer,
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


def _pairs(value: Any) -> tuple[int, int]:
    """An int or a one- or two-element list as (height, width)."""
    if isinstance(value, int):
        return (value, value)
    values = [int(v) for v in value]
    return (values[0], values[0]) if len(values) == 1 else (values[0], values[1])


def _arg(args: list[Any], kwargs: dict[str, Any], index: int, name: str, default: Any) -> Any:
    if len(args) > index:
        return args[index]
    return kwargs.get(name, default)


def _conv(imp: GraphBuilder, node: Any, args: list[Any], kwargs: dict[str, Any]) -> Any:
    x, weight = args[0], imp.array(args[1], node, "weight")
    bias = _arg(args, kwargs, 2, "bias", None)
    stride = _pairs(_arg(args, kwargs, 3, "stride", 1))
    padding = _arg(args, kwargs, 4, "padding", 0)
    dilation = _pairs(_arg(args, kwargs, 5, "dilation", 1))
    groups = int(_arg(args, kwargs, 6, "groups", 1))
    if getattr(node.target, "_opname", "") == "convolution":  # (.., transposed, out_pad, g)
        if _arg(args, kwargs, 6, "transposed", False):
            return _conv_transpose(imp, node, [
                x, args[1], bias, stride, padding, _arg(args, kwargs, 7, "output_padding", 0),
                _arg(args, kwargs, 8, "groups", 1), dilation], {})
        groups = int(args[8])
    if weight.ndim != 4:
        raise FrontendError(f"only 2-D convolutions are supported (weight {weight.shape})",
                            where(node))
    kh, kw = weight.shape[2:]
    if isinstance(padding, str):
        if padding == "valid":
            pads = (0, 0, 0, 0)
        else:  # "same": stride 1; the extra pixel of an even window goes after
            total = ((kh - 1) * dilation[0], (kw - 1) * dilation[1])
            pads = (total[0] // 2, total[1] // 2, total[0] - total[0] // 2,
                    total[1] - total[1] // 2)
    else:
        ph, pw = _pairs(padding)
        pads = (ph, pw, ph, pw)
    b = imp.array(bias, node, "bias") if bias is not None else \
        np.zeros(weight.shape[0], np.float32)
    name, shape = imp.out(node)
    return imp.emit(Conv(name=name, inputs=(x.name,), outputs=(name,), weight=weight,
                         bias=b, strides=stride, pads=pads, dilations=dilation,
                         groups=groups), shape)


def _conv_transpose(imp: GraphBuilder, node: Any, args: list[Any], kwargs: dict[str, Any]
                    ) -> Any:
    """conv_transpose2d(x, weight, bias, stride, padding, output_padding, groups,
    dilation): a flipped Conv or a 1x1 Conv and Col2Im (``patcc.frontends.transpose_conv``)."""
    x, weight = args[0], imp.array(args[1], node, "weight")
    bias = _arg(args, kwargs, 2, "bias", None)
    padding = _arg(args, kwargs, 4, "padding", 0)
    if isinstance(padding, str):
        raise FrontendError(f"conv_transpose2d with padding={padding!r} is not supported "
                            "(give the padding as integers)", where(node))
    ph, pw = _pairs(padding)
    spec = TransposedConv(
        weight=weight, bias=None if bias is None else imp.array(bias, node, "bias"),
        strides=_pairs(_arg(args, kwargs, 3, "stride", 1)), pads=(ph, pw, ph, pw),
        output_padding=_pairs(_arg(args, kwargs, 5, "output_padding", 0)),
        groups=int(_arg(args, kwargs, 6, "groups", 1)),
        dilations=_pairs(_arg(args, kwargs, 7, "dilation", 1)))
    name, shape = imp.out(node)
    for layer in lower_conv_transpose(
            spec, x.name, x.shape, name,
            lambda suffix: name if not suffix else imp.unique(name + suffix),
            lambda suffix: imp.unique(f"{name}_{suffix}"), where(node)):
        imp.layers.append(layer)
    return IRTensor(name, shape)


def _batch_norm(imp: GraphBuilder, node: Any, args: list[Any], kwargs: dict[str, Any]) -> Any:
    op = node.target._opname
    x = args[0]
    weight, bias, mean, var = args[1:5]
    if op == "batch_norm":
        training, eps = args[5], args[7]
    else:  # _native_batch_norm_legit_no_training(x, w, b, mean, var, momentum, eps)
        training, eps = False, args[6]
    if training:
        raise FrontendError("batch norm in training mode: call module.eval() first",
                            where(node))
    c = imp.shape(x)[1]
    mean = imp.array(mean, node, "running mean").astype(np.float64)
    var = imp.array(var, node, "running variance").astype(np.float64)
    gamma = imp.array(weight, node, "scale").astype(np.float64) if weight is not None \
        else np.ones(c)
    beta = imp.array(bias, node, "shift").astype(np.float64) if bias is not None \
        else np.zeros(c)
    scale = gamma / np.sqrt(var + eps)
    name, shape = imp.out(node)
    result = imp.emit(ScaleShift(name=name, inputs=(x.name,), outputs=(name,),
                                 scale=scale.astype(np.float32),
                                 shift=(beta - mean * scale).astype(np.float32)), shape)
    return (result, None, None) if op != "batch_norm" else result


def _optional_array(imp: GraphBuilder, node: Any, value: Any, what: str) -> np.ndarray | None:
    return None if value is None else imp.array(value, node, what)


def _layer_norm(imp: GraphBuilder, node: Any, args: list[Any], kwargs: dict[str, Any]
                ) -> Any:
    """layer_norm(x, normalized_shape, weight, bias, eps) over the trailing
    ``len(normalized_shape)`` axes (``patcc.frontends.normalization``); native_layer_norm
    also returns the mean and 1 / std, which nothing in an eval graph reads."""
    x = args[0]
    shape = imp.shape(x)
    normalized = [int(d) for d in args[1]]
    if list(shape[len(shape) - len(normalized):]) != normalized or not normalized:
        raise FrontendError(f"layer_norm over {normalized} does not match the trailing axes "
                            f"of the input {list(shape)}", where(node))
    name, _ = imp.out(node)
    for layer in lower_layer_norm(
            x.name, shape, len(shape) - len(normalized),
            _optional_array(imp, node, _arg(args, kwargs, 2, "weight", None), "weight"),
            _optional_array(imp, node, _arg(args, kwargs, 3, "bias", None), "bias"),
            float(_arg(args, kwargs, 4, "eps", 1e-5)), name, _names(imp, name),
            where(node)):
        imp.layers.append(layer)
    result = IRTensor(name, tuple(shape))
    return (result, None, None) if node.target._opname == "native_layer_norm" else result


def _group_norm(imp: GraphBuilder, node: Any, args: list[Any], kwargs: dict[str, Any]
                ) -> Any:
    """group_norm(x, num_groups, weight, bias, eps), and native_group_norm(x, weight,
    bias, N, C, HxW, group, eps), which also returns the statistics."""
    x = args[0]
    if node.target._opname == "native_group_norm":
        weight, bias, groups, eps = args[1], args[2], args[6], args[7]
    else:
        groups = args[1]
        weight, bias = _arg(args, kwargs, 2, "weight", None), _arg(args, kwargs, 3, "bias", None)
        eps = _arg(args, kwargs, 4, "eps", 1e-5)
    name, _ = imp.out(node)
    for layer in lower_group_norm(
            x.name, imp.shape(x), int(groups), _optional_array(imp, node, weight, "weight"),
            _optional_array(imp, node, bias, "bias"), float(eps), name,
            _names(imp, name), where(node)):
        imp.layers.append(layer)
    result = IRTensor(name, tuple(imp.shape(x)))
    return (result, None, None) if node.target._opname == "native_group_norm" else result


def _linear(imp: GraphBuilder, node: Any, args: list[Any], kwargs: dict[str, Any]) -> Any:
    x, weight = args[0], imp.array(args[1], node, "weight")
    bias = _arg(args, kwargs, 2, "bias", None)
    b = imp.array(bias, node, "bias") if bias is not None else np.zeros(weight.shape[0],
                                                                         np.float32)
    name, shape = imp.out(node)
    return imp.emit(Dense(name=name, inputs=(x.name,), outputs=(name,), weight=weight,
                          bias=b), shape)


def _matmul(imp: GraphBuilder, node: Any, args: list[Any], kwargs: dict[str, Any]) -> Any:
    """matmul / mm of a computed tensor by a constant matrix (or vector): a Dense layer
    on the last axis (a vector: then its added axis dropped). Two computed operands,
    or a batched weight, are refused."""
    x, b = args[0], args[1]
    if not isinstance(x, IRTensor) or isinstance(b, IRTensor):
        raise FrontendError(f"aten.{node.target._opname} is supported with a computed first "
                            "operand and a constant weight second (x @ W)", where(node))
    weight = imp.array(b, node, "weight")
    shape = imp.shape(x)
    if weight.ndim not in (1, 2) or not shape or shape[-1] != weight.shape[0]:
        raise FrontendError(f"aten.{node.target._opname} of {list(shape)} by a weight of "
                            f"{list(weight.shape)}: the weight must be a vector or a matrix "
                            "whose rows match the last axis", where(node))
    dense = np.ascontiguousarray(weight.reshape(weight.shape[0], -1).T)
    name, out_shape = imp.out(node)
    column = weight.ndim == 1
    layer = Dense(name=name, inputs=(x.name,), outputs=(imp.unique(f"{name}_column")
                                                     if column else name,),
                  weight=dense, bias=np.zeros(dense.shape[0], np.float32))
    imp.layers.append(layer)
    if column:
        imp.layers.append(Reshape(name=imp.unique(f"{name}_drop"), inputs=layer.outputs,
                                  outputs=(name,), shape=tuple(shape[:-1])))
    return IRTensor(name, out_shape)


def _roll(imp: GraphBuilder, node: Any, args: list[Any], kwargs: dict[str, Any]) -> Any:
    """roll(x, shifts, dims): per rolled axis, the tail Slice and the head Slice
    concatenated (a shift of 0 modulo the axis copies nothing). ``dims`` omitted rolls
    the flattened tensor."""
    x = args[0]
    shape = tuple(imp.shape(x))
    shifts = _arg(args, kwargs, 1, "shifts", 0)
    dims = _arg(args, kwargs, 2, "dims", [])
    shifts = [int(shifts)] if isinstance(shifts, int) else [int(v) for v in shifts]
    dims = [int(dims)] if isinstance(dims, int) else [int(d) for d in dims]
    name, out_shape = imp.out(node)
    source = x.name
    if not dims:
        flat = imp.unique(f"{name}_flat")
        imp.layers.append(Reshape(name=flat, inputs=(x.name,), outputs=(flat,),
                                  shape=(math.prod(shape),)))
        work_shape: tuple[int, ...] = (math.prod(shape),)
        source, dims = flat, [0]
    else:
        work_shape = shape
    if len(shifts) != len(dims):
        raise FrontendError(f"roll with {len(shifts)} shifts for {len(dims)} dims",
                            where(node))
    rank = len(work_shape)
    for k, (shift, dim) in enumerate(zip(shifts, dims, strict=True)):
        dim %= rank
        size = work_shape[dim]
        shift %= size
        if not shift:
            continue
        head, tail = imp.unique(f"{name}_head{k}"), imp.unique(f"{name}_tail{k}")
        for part, lo, hi in ((tail, size - shift, size), (head, 0, size - shift)):
            imp.layers.append(Slice(
                name=part, inputs=(source,), outputs=(part,),
                starts=tuple(lo if a == dim else 0 for a in range(rank)),
                ends=tuple(hi if a == dim else d for a, d in enumerate(work_shape)),
                steps=(1,) * rank))
        rolled = imp.unique(f"{name}_rolled{k}")
        imp.layers.append(Concat(name=rolled, inputs=(tail, head), outputs=(rolled,),
                                 axis=dim))
        source = rolled
    if source == x.name:
        return x
    imp.layers.append(Reshape(name=name, inputs=(source,), outputs=(name,), shape=out_shape))
    return IRTensor(name, out_shape)


def _activation(kind: str, alpha: float = 0.0, beta: float = 0.0) -> Converter:
    def convert(imp: GraphBuilder, node: Any, args: list[Any], kwargs: dict[str, Any]) -> Any:
        a, b, chosen = alpha, beta, kind
        if kind == "leaky_relu":
            a = float(_arg(args, kwargs, 1, "negative_slope", 0.01))
        elif kind == "clip":
            a = float(_arg(args, kwargs, 1, "min_val", -1.0))
            b = float(_arg(args, kwargs, 2, "max_val", 1.0))
        elif kind == "elu":
            a = float(_arg(args, kwargs, 1, "alpha", 1.0))
            scale = float(_arg(args, kwargs, 2, "scale", 1.0))
            if scale != 1.0 or float(_arg(args, kwargs, 3, "input_scale", 1.0)) != 1.0:
                raise FrontendError("elu with a scale is not supported", where(node))
        elif kind == "gelu" and _arg(args, kwargs, 1, "approximate", "none") == "tanh":
            chosen = "gelu_tanh"
        elif kind == "softplus" and (float(_arg(args, kwargs, 1, "beta", 1.0)) != 1.0
                                     or float(_arg(args, kwargs, 2, "threshold", 20.0)) != 20.0):
            raise FrontendError("softplus with beta or threshold other than 1 and 20 is not "
                                "supported", where(node))
        name, shape = imp.out(node)
        return imp.emit(Unary(name=name, inputs=(args[0].name,), outputs=(name,),
                              activation=Activation(chosen, a, b)), shape)
    return convert


def _clamp(imp: GraphBuilder, node: Any, args: list[Any], kwargs: dict[str, Any]) -> Any:
    lo = _arg(args, kwargs, 1, "min", None)
    hi = _arg(args, kwargs, 2, "max", None)
    if not all(isinstance(v, (int, float)) or v is None for v in (lo, hi)):
        raise FrontendError("clamp with tensor bounds is not supported", where(node))
    name, shape = imp.out(node)
    act = Activation("clip", -math.inf if lo is None else float(lo),
                     math.inf if hi is None else float(hi))
    return imp.emit(Unary(name=name, inputs=(args[0].name,), outputs=(name,), activation=act),
                    shape)


def _binary(binop: str, reverse: bool = False) -> Converter:
    def convert(imp: GraphBuilder, node: Any, args: list[Any], kwargs: dict[str, Any]) -> Any:
        a, b = args[0], args[1]
        alpha = kwargs.get("alpha", args[2] if len(args) > 2 else 1)
        if alpha != 1:
            if isinstance(b, IRTensor):
                raise FrontendError(f"{node.target} with alpha={alpha} is not supported",
                                    where(node))
            b = b * alpha
        if reverse:
            a, b = b, a
        name, shape = imp.out(node)
        return imp.emit(Binary(name=name, inputs=(imp.tensor(a, node), imp.tensor(b, node)),
                               outputs=(name,), binop=binop), shape)
    return convert


def _alias(imp: GraphBuilder, node: Any, args: list[Any], kwargs: dict[str, Any]) -> Any:
    return args[0]  # dropout / identity / clone / contiguous / detach in eval


def _reshape(imp: GraphBuilder, node: Any, args: list[Any], kwargs: dict[str, Any]) -> Any:
    name, shape = imp.out(node)
    return imp.emit(Reshape(name=name, inputs=(args[0].name,), outputs=(name,), shape=shape),
                    shape)


def _transpose(imp: GraphBuilder, node: Any, args: list[Any], kwargs: dict[str, Any]) -> Any:
    rank = len(imp.shape(args[0]))
    op = node.target._opname
    if op == "permute":
        perm = tuple(int(d) % rank for d in args[1])
    elif op == "t":
        perm = (1, 0)
    else:
        a, b = int(args[1]) % rank, int(args[2]) % rank
        perm_list = list(range(rank))
        perm_list[a], perm_list[b] = perm_list[b], perm_list[a]
        perm = tuple(perm_list)
    name, shape = imp.out(node)
    return imp.emit(Transpose(name=name, inputs=(args[0].name,), outputs=(name,), perm=perm),
                    shape)


def _cat(imp: GraphBuilder, node: Any, args: list[Any], kwargs: dict[str, Any]) -> Any:
    tensors = [imp.tensor(t, node) for t in args[0]]
    rank = len(node.meta["val"].shape)
    axis = int(_arg(args, kwargs, 1, "dim", 0)) % rank
    name, shape = imp.out(node)
    return imp.emit(Concat(name=name, inputs=tuple(tensors), outputs=(name,), axis=axis),
                    shape)


def _split(imp: GraphBuilder, node: Any, args: list[Any], kwargs: dict[str, Any]) -> Any:
    x = args[0]
    in_shape = imp.shape(x)
    op = node.target._opname
    dim = int(_arg(args, kwargs, 2, "dim", 0)) % len(in_shape)
    size = in_shape[dim]
    if op == "chunk":
        chunks = int(args[1])
        step = -(-size // chunks)
        sizes = [min(step, size - i) for i in range(0, size, step)]
    elif op == "split_with_sizes":
        sizes = [int(s) for s in args[1]]
    else:  # split.Tensor(x, split_size, dim)
        step = int(args[1])
        sizes = [min(step, size - i) for i in range(0, size, step)]
    names = [imp.unique(f"{node.name}_{i}") for i in range(len(sizes))]
    imp.layers.append(Split(name=imp.unique(node.name + "_split"), inputs=(x.name,),
                            outputs=tuple(names), axis=dim, sizes=tuple(sizes)))
    shapes = [tuple(s if a != dim else part for a, s in enumerate(in_shape)) for part in sizes]
    return [IRTensor(n, s) for n, s in zip(names, shapes, strict=True)]


def _global(imp: GraphBuilder, node: Any, x: IRTensor, kind: str, keepdim: bool) -> Any:
    name, shape = imp.out(node, "" if keepdim else "_pool")
    pooled_shape = tuple(x.shape[:2]) + (1,) * (len(x.shape) - 2)
    result = imp.emit(GlobalPool(name=name, inputs=(x.name,), outputs=(name,), kind=kind),
                      pooled_shape)
    if keepdim:
        return result
    out_name, out_shape = imp.out(node)
    return imp.emit(Reshape(name=out_name, inputs=(name,), outputs=(out_name,),
                            shape=out_shape), out_shape)


def _adaptive_pool(kind: str) -> Converter:
    def convert(imp: GraphBuilder, node: Any, args: list[Any], kwargs: dict[str, Any]) -> Any:
        x = args[0]
        _, _, h, w = imp.shape(x)
        oh, ow = (h if s is None else int(s) for s in _pairs_none(args[1]))
        if (oh, ow) == (1, 1):
            result = _global(imp, node, x, kind, True)
            return (result, None) if node.target._opname.endswith("max_pool2d") else result
        if h % oh or w % ow:
            raise FrontendError(f"adaptive pooling from {h}x{w} to {oh}x{ow} is not supported "
                                "(the output must divide the input)", where(node))
        name, shape = imp.out(node)
        kernel = (h // oh, w // ow)
        result = imp.emit(Pool(name=name, inputs=(x.name,), outputs=(name,), kind=kind,
                               kernel=kernel, strides=kernel), shape)
        return (result, None) if kind == "max" else result
    return convert


def _pairs_none(value: Any) -> tuple[Any, Any]:
    if value is None or isinstance(value, int):
        return (value, value)
    value = tuple(value)
    return (value[0], value[0]) if len(value) == 1 else (value[0], value[1])


def _max_pool(imp: GraphBuilder, node: Any, args: list[Any], kwargs: dict[str, Any]) -> Any:
    x = args[0]
    kernel = _pairs(args[1])
    stride = _pairs(_arg(args, kwargs, 2, "stride", []) or kernel)
    ph, pw = _pairs(_arg(args, kwargs, 3, "padding", 0))
    dilation = _pairs(_arg(args, kwargs, 4, "dilation", 1))
    ceil_mode = bool(_arg(args, kwargs, 5, "ceil_mode", False))
    name, shape = imp.out(node)
    result = imp.emit(Pool(name=name, inputs=(x.name,), outputs=(name,), kind="max",
                           kernel=kernel, strides=stride, pads=(ph, pw, ph, pw),
                           dilations=dilation, ceil_mode=ceil_mode), shape)
    return (result, None) if node.target._opname.endswith("with_indices") else result


def _avg_pool(imp: GraphBuilder, node: Any, args: list[Any], kwargs: dict[str, Any]) -> Any:
    x = args[0]
    kernel = _pairs(args[1])
    stride = _pairs(_arg(args, kwargs, 2, "stride", []) or kernel)
    ph, pw = _pairs(_arg(args, kwargs, 3, "padding", 0))
    ceil_mode = bool(_arg(args, kwargs, 4, "ceil_mode", False))
    include = bool(_arg(args, kwargs, 5, "count_include_pad", True))
    if _arg(args, kwargs, 6, "divisor_override", None) is not None:
        raise FrontendError("avg_pool2d with divisor_override is not supported", where(node))
    name, shape = imp.out(node)
    return imp.emit(Pool(name=name, inputs=(x.name,), outputs=(name,), kind="avg",
                         kernel=kernel, strides=stride, pads=(ph, pw, ph, pw),
                         ceil_mode=ceil_mode, count_include_pad=include), shape)


def _slice(imp: GraphBuilder, node: Any, args: list[Any], kwargs: dict[str, Any]) -> Any:
    """aten.slice.Tensor(x, dim, start, end, step): Python slicing of one axis."""
    x = args[0]
    in_shape = imp.shape(x)
    rank = len(in_shape)
    dim = int(_arg(args, kwargs, 1, "dim", 0)) % rank
    start = _arg(args, kwargs, 2, "start", None)
    end = _arg(args, kwargs, 3, "end", None)
    step = int(_arg(args, kwargs, 4, "step", 1))
    lo, hi, _ = slice(start, end, step).indices(in_shape[dim])
    starts = [0] * rank
    ends = list(in_shape)
    steps = [1] * rank
    starts[dim], ends[dim], steps[dim] = lo, hi, step
    name, shape = imp.out(node)
    if shape == in_shape:
        return x
    return imp.emit(Slice(name=name, inputs=(x.name,), outputs=(name,), starts=tuple(starts),
                          ends=tuple(ends), steps=tuple(steps)), shape)


def _upsample(mode: str, exact: bool = False, antialias: bool = False) -> Converter:
    """aten.upsample_{nearest,bilinear,bicubic}2d (and the ``.vec`` forms, the exact-
    nearest and antialiased variants) as a Resize in torch's coordinates: nearest reads
    floor(y / scale) (nearest-exact rounds half-pixel centres), bilinear and bicubic
    use half-pixel centres or, with align_corners, the corners; given scale factors
    set the coordinate scale, sizes the ratio of sizes. Antialiased filters, like
    torch's, drop the taps that fall outside the image and renormalise (and take
    bicubic with a = -0.5, as PIL)."""
    def convert(imp: GraphBuilder, node: Any, args: list[Any], kwargs: dict[str, Any]) -> Any:
        x = args[0]
        in_shape = imp.shape(x)
        name, shape = imp.out(node)
        opname = node.target._overloadname
        rest = args[1:]
        align = False
        if mode != "nearest":
            align = bool(rest[1] if len(rest) > 1 else kwargs.get("align_corners", False))
            rest = rest[:1] + rest[2:]
        if opname == "vec":  # (x, output_size, [align_corners,] scale_factors)
            factors = rest[1] if len(rest) > 1 else kwargs.get("scale_factors")
        else:  # (x, output_size, [align_corners,] scales_h, scales_w)
            factors = list(rest[1:3]) if len(rest) > 2 and None not in rest[1:3] else None
        if factors and not align:
            scales = (1.0, 1.0, *(float(f) for f in factors))
        else:  # align_corners maps corners to corners whatever the factor
            scales = tuple(o / i for o, i in zip(shape, in_shape, strict=True))
        if mode == "nearest":
            coordinate, rule = ("half_pixel", "round_prefer_ceil") if exact else \
                ("asymmetric", "floor")
        else:
            coordinate, rule = ("align_corners" if align else "half_pixel"), "floor"
        return imp.emit(Resize(name=name, inputs=(x.name,), outputs=(name,), size=shape,
                               scales=scales, mode=mode, coordinate_mode=coordinate,
                               nearest_mode=rule, cubic_a=-0.5 if antialias else -0.75,
                               antialias=antialias,
                               exclude_outside=antialias), shape)
    return convert


def _gather(imp: GraphBuilder, node: Any, args: list[Any], kwargs: dict[str, Any]) -> Any:
    """aten.select (``x[:, 0]``), index_select and index with one constant index tensor
    (``x[:, [0, 2]]``): a Gather layer; negative indices count from the end."""
    x = args[0]
    shape = imp.shape(x)
    op = node.target._opname
    if op == "index":
        given = list(args[1])
        used = [i for i, t in enumerate(given) if t is not None]
        if len(used) != 1:
            raise FrontendError(f"indexing with {len(used)} index tensors is not supported "
                                "(one, on one axis)", where(node))
        dim, index = used[0], given[used[0]]
    else:
        dim, index = int(_arg(args, kwargs, 1, "dim", 0)), _arg(args, kwargs, 2, "index", 0)
    if not -len(shape) <= dim < len(shape) or isinstance(index, IRTensor):
        raise FrontendError(f"aten.{op} on dim {dim} of {list(shape)} with a computed index is "
                            "not supported (the index must be a constant)", where(node))
    dim %= len(shape)
    values = np.asarray(index.detach().cpu().numpy() if isinstance(index, imp.torch.Tensor)
                        else index)
    if values.dtype == np.bool_ or not np.issubdtype(values.dtype, np.integer):
        raise FrontendError(f"aten.{op}: an index of dtype {values.dtype} is not supported "
                            "(integer indices)", where(node))
    size = shape[dim]
    if ((values < -size) | (values >= size)).any():
        raise FrontendError(f"aten.{op}: index {values.reshape(-1).tolist()[:8]} out of range "
                            f"for dim {dim} of size {size}", where(node))
    name, out_shape = imp.out(node)
    return imp.emit(Gather(name=name, inputs=(x.name,), outputs=(name,), axis=dim,
                           indices=np.where(values < 0, values + size, values).astype(np.int64)),
                    out_shape)


def _pad(imp: GraphBuilder, node: Any, args: list[Any], kwargs: dict[str, Any]) -> Any:
    """aten.constant_pad_nd / pad: torch's pads run from the last axis backwards in
    (begin, end) pairs; the IR's are all begins, then all ends."""
    x = args[0]
    rank = len(imp.shape(x))
    pad = [int(p) for p in args[1]]
    op = node.target._opname
    mode = "constant" if op == "constant_pad_nd" else str(_arg(args, kwargs, 2, "mode",
                                                                "constant"))
    value = _arg(args, kwargs, 2 if op == "constant_pad_nd" else 3, "value", 0.0)
    modes = {"constant": "constant", "reflect": "reflect", "replicate": "edge"}
    if mode not in modes or any(p < 0 for p in pad):
        raise FrontendError(f"padding mode {mode!r} with pads {pad} is not supported "
                            "(constant, reflect or replicate, non-negative)", where(node))
    begins, ends = [0] * rank, [0] * rank
    for i in range(len(pad) // 2):
        axis = rank - 1 - i
        begins[axis], ends[axis] = pad[2 * i], pad[2 * i + 1]
    name, shape = imp.out(node)
    return imp.emit(Pad(name=name, inputs=(x.name,), outputs=(name,),
                        pads=tuple(begins + ends), mode=modes[mode],
                        value=float(value or 0.0)), shape)


def _softmax(log: bool) -> Converter:
    def convert(imp: GraphBuilder, node: Any, args: list[Any], kwargs: dict[str, Any]) -> Any:
        rank = len(imp.shape(args[0]))
        name, shape = imp.out(node)
        return imp.emit(Softmax(name=name, inputs=(args[0].name,), outputs=(name,),
                                axis=int(args[1]) % rank, log=log), shape)
    return convert


def _names(imp: GraphBuilder, name: str) -> Names:
    """How a shared lowering names what it adds for the node whose output is ``name``."""
    def constant(suffix: str, value: np.ndarray) -> str:
        const = imp.unique(f"{name}_{suffix}")
        imp.constants[const] = np.ascontiguousarray(value, np.float32)
        return const

    return Names(lambda suffix: name if not suffix else imp.unique(name + suffix),
                 lambda suffix: imp.unique(f"{name}_{suffix}"), constant)


def _emit_layers(imp: GraphBuilder, layers: list[Layer], x: IRTensor, name: str,
                 shape: tuple[int, ...]) -> IRTensor:
    """The layers a shared lowering built, computing ``name``; none: ``x`` itself."""
    if not layers:
        return x
    imp.layers.extend(layers)
    return IRTensor(name, shape)


def _dims(value: Any, rank: int) -> list[int]:
    """A ``dim`` argument (an int, a list, or None / [] for every axis) as axes."""
    if value is None:
        return list(range(rank))
    dims = [int(value)] if isinstance(value, int) else [int(d) for d in value]
    return [d % rank for d in dims] if dims else list(range(rank))


def _reduce(kind: str) -> Converter:
    """aten.sum, amax, amin and mean (``.dim`` and ``.default``), max.dim and min.dim
    (their values; the int64 indices are not computed): any dims, kept or dropped
    (``patcc.frontends.lowering.lower_reduce``)."""
    def convert(imp: GraphBuilder, node: Any, args: list[Any], kwargs: dict[str, Any]) -> Any:
        overload = node.target._overloadname
        if overload == "other":  # max.other / min.other: element-wise
            return _binary(kind)(imp, node, args, kwargs)
        x = args[0]
        shape = imp.shape(x)
        if overload == "default" and node.target._opname not in ("amax", "amin"):
            # sum(x), mean(x), max(x), min(x): every axis, dropped
            axes, keep = list(range(len(shape))), False
        else:
            axes = _dims(_arg(args, kwargs, 1, "dim", None), len(shape))
            keep = bool(_arg(args, kwargs, 2, "keepdim", False))
        name, out_shape = imp.out(node)
        result = _emit_layers(imp, lower_reduce(x.name, shape, kind, axes, keep, name,
                                                _names(imp, name)), x, name, out_shape)
        return (result, None) if overload == "dim" and kind in ("max", "min") else result
    return convert


def _variance(imp: GraphBuilder, node: Any, args: list[Any], kwargs: dict[str, Any]) -> Any:
    """aten.var and std (``.default``, ``.dim``, ``.correction``): the mean of the
    squared deviations from the mean over the dims, times n / (n - correction)
    (Bessel's correction 1 unless ``unbiased=False`` or ``correction`` says otherwise),
    then a square root for std."""
    x = args[0]
    shape = imp.shape(x)
    op, overload = node.target._opname, node.target._overloadname
    correction: float
    if overload == "default":  # var(x, unbiased=True)
        dims, correction, keep = None, int(bool(_arg(args, kwargs, 1, "unbiased", True))), False
    elif overload == "dim":  # var.dim(x, dim, unbiased=True, keepdim=False)
        dims = _arg(args, kwargs, 1, "dim", None)
        correction = int(bool(_arg(args, kwargs, 2, "unbiased", True)))
        keep = bool(_arg(args, kwargs, 3, "keepdim", False))
    else:  # var.correction(x, dim=None, *, correction=None, keepdim=False)
        dims = _arg(args, kwargs, 1, "dim", None)
        given = kwargs.get("correction")
        correction = 1 if given is None else float(given)
        keep = bool(kwargs.get("keepdim", False))
    axes = _dims(dims, len(shape))
    count = math.prod(shape[a] for a in axes)
    if count - correction <= 0:
        raise FrontendError(f"aten.{node.target._opname} of {count} value(s) with correction "
                            f"{correction} divides by {count - correction}", where(node))
    name, out_shape = imp.out(node)
    names = _names(imp, name)
    # the kept variance, then each step that applies, the last one writing ``name``
    steps = [step for step, applies in (("bessel", correction), ("sqrt", op == "std"),
                                        ("drop", not keep)) if applies]
    variance = names.tensor("var") if steps else name
    layers, _, _ = lower_variance(x.name, shape, axes, variance, names)
    source = variance
    for i, step in enumerate(steps):
        last = i == len(steps) - 1
        target, layer_name = (name, names.layer("")) if last else \
            (names.tensor(step), names.layer(f"_{step}"))
        if step == "bessel":
            factor = names.constant(step, np.array(count / (count - correction), np.float32))
            layers.append(Binary(name=layer_name, inputs=(source, factor), outputs=(target,),
                                 binop="mul"))
        elif step == "sqrt":
            layers.append(Unary(name=layer_name, inputs=(source,), outputs=(target,),
                                activation=Activation("sqrt")))
        else:
            layers.append(Reshape(name=layer_name, inputs=(source,), outputs=(target,),
                                  shape=tuple(out_shape)))
        source = target
    imp.layers.extend(layers)
    return IRTensor(name, out_shape)


def _pow(imp: GraphBuilder, node: Any, args: list[Any], kwargs: dict[str, Any]) -> Any:
    """aten.pow: a constant number exponent is the ``pow`` activation (it fuses into a
    conv's epilogue); a tensor exponent, or a number raised to a tensor, a Binary."""
    base, exponent = args[0], args[1]
    name, shape = imp.out(node)
    if isinstance(base, IRTensor) and isinstance(exponent, (int, float)):
        return imp.emit(Unary(name=name, inputs=(base.name,), outputs=(name,),
                              activation=Activation("pow", float(exponent))), shape)
    return imp.emit(Binary(name=name, inputs=(imp.tensor(base, node), imp.tensor(exponent, node)),
                           outputs=(name,), binop="pow"), shape)


def _unaries(*kinds: str) -> Converter:
    """Activations applied one after another (rsqrt: sqrt, reciprocal; log_sigmoid:
    -softplus(-x))."""
    def convert(imp: GraphBuilder, node: Any, args: list[Any], kwargs: dict[str, Any]) -> Any:
        name, shape = imp.out(node)
        source = args[0].name
        for i, kind in enumerate(kinds):
            out = name if i == len(kinds) - 1 else imp.unique(f"{name}_{kind}")
            imp.layers.append(Unary(name=out, inputs=(source,), outputs=(out,),
                                    activation=Activation(kind)))
            source = out
        return IRTensor(name, shape)
    return convert


def _square(imp: GraphBuilder, node: Any, args: list[Any], kwargs: dict[str, Any]) -> Any:
    name, shape = imp.out(node)
    return imp.emit(Binary(name=name, inputs=(args[0].name, args[0].name), outputs=(name,),
                           binop="mul"), shape)


def _prelu(imp: GraphBuilder, node: Any, args: list[Any], kwargs: dict[str, Any]) -> Any:
    """prelu(x, weight): one slope, or one per channel (axis 1)."""
    x = args[0]
    shape = imp.shape(x)
    weight = imp.array(args[1], node, "weight")
    slope = weight.reshape((weight.size,) + (1,) * max(0, len(shape) - 2)) \
        if weight.size > 1 else weight.reshape(())
    name, out_shape = imp.out(node)
    return _emit_layers(imp, lower_prelu(x.name, shape, slope, name, _names(imp, name),
                                         where(node)), x, name, out_shape)


def _instance_norm(imp: GraphBuilder, node: Any, args: list[Any], kwargs: dict[str, Any]
                   ) -> Any:
    """instance_norm(x, weight, bias, running_mean, running_var, use_input_stats,
    momentum, eps): each image's channels normalised over their pixels
    (``patcc.frontends.normalization.lower_instance_norm``); on running statistics
    (``track_running_stats`` in eval) a per-channel scale and shift, as batch norm."""
    x, weight, bias, mean, var, use_input_stats, _, eps = args[:8]
    c = imp.shape(x)[1]
    gamma = imp.array(weight, node, "weight") if weight is not None else np.ones(c, np.float32)
    beta = imp.array(bias, node, "bias") if bias is not None else np.zeros(c, np.float32)
    name, shape = imp.out(node)
    if not use_input_stats:
        scale = gamma / np.sqrt(imp.array(var, node, "running variance") + eps)
        return imp.emit(ScaleShift(
            name=name, inputs=(x.name,), outputs=(name,), scale=scale.astype(np.float32),
            shift=(beta - imp.array(mean, node, "running mean") * scale).astype(np.float32)),
            shape)
    imp.layers.extend(lower_instance_norm(x.name, imp.shape(x), gamma, beta, float(eps), name,
                                          _names(imp, name), where(node)))
    return IRTensor(name, shape)


def _pixel_shuffle(imp: GraphBuilder, node: Any, args: list[Any], kwargs: dict[str, Any]
                   ) -> Any:
    """pixel_shuffle (ONNX's DepthToSpace in CRD order), pixel_unshuffle (SpaceToDepth,
    CRD) and channel_shuffle (ShuffleNet): a reshape, a transpose and a reshape."""
    x = args[0]
    n, c, h, w = _nchw(imp, node, x)
    op = node.target._opname
    r = int(args[1])
    split: tuple[int, ...]
    perm: tuple[int, ...]
    if op == "pixel_shuffle":
        split, perm = (n, c // (r * r), r, r, h, w), (0, 1, 4, 2, 5, 3)
    elif op == "pixel_unshuffle":
        split, perm = (n, c, h // r, r, w // r, r), (0, 1, 3, 5, 2, 4)
    else:  # channel_shuffle / native_channel_shuffle(x, groups)
        split, perm = (n, r, c // r, h, w), (0, 2, 1, 3, 4)
    name, shape = imp.out(node)
    imp.layers.extend(lower_shuffle(x.name, split, perm, shape, name, _names(imp, name)))
    return IRTensor(name, shape)


def _expand(imp: GraphBuilder, node: Any, args: list[Any], kwargs: dict[str, Any]) -> Any:
    """expand / expand_as: broadcast to the output's shape (``-1`` keeps an axis)."""
    x = args[0]
    name, shape = imp.out(node)
    return _emit_layers(imp, lower_expand(x.name, imp.shape(x), shape, name, _names(imp, name),
                                          where(node)), x, name, shape)


def _repeat(imp: GraphBuilder, node: Any, args: list[Any], kwargs: dict[str, Any]) -> Any:
    """repeat(x, repeats) and tile(x, dims): copies along each axis; more repeats than
    axes add leading axes, fewer (tile) repeat the trailing ones."""
    x = args[0]
    shape = tuple(imp.shape(x))
    repeats = [int(r) for r in args[1]]
    name, out_shape = imp.out(node)
    if len(repeats) < len(shape):
        repeats = [1] * (len(shape) - len(repeats)) + repeats
    source = x
    if len(repeats) > len(shape):
        shape = (1,) * (len(repeats) - len(shape)) + shape
        lead = imp.unique(f"{name}_lead")
        source = imp.emit(Reshape(name=lead, inputs=(x.name,), outputs=(lead,), shape=shape),
                          shape)
    return _emit_layers(imp, lower_tile(source.name, shape, repeats, name, _names(imp, name),
                                        where(node)), source, name, out_shape)


def _flip(imp: GraphBuilder, node: Any, args: list[Any], kwargs: dict[str, Any]) -> Any:
    """flip(x, dims): one Slice stepping backwards along each flipped axis."""
    x = args[0]
    shape = imp.shape(x)
    axes = set(_dims(args[1], len(shape)))
    name, out_shape = imp.out(node)
    return imp.emit(Slice(name=name, inputs=(x.name,), outputs=(name,),
                          starts=tuple(d - 1 if a in axes else 0 for a, d in enumerate(shape)),
                          ends=tuple(-1 if a in axes else d for a, d in enumerate(shape)),
                          steps=tuple(-1 if a in axes else 1 for a in range(len(shape)))),
                    out_shape)


def _narrow(imp: GraphBuilder, node: Any, args: list[Any], kwargs: dict[str, Any]) -> Any:
    """narrow(x, dim, start, length): a Slice of one axis."""
    x = args[0]
    shape = imp.shape(x)
    dim = int(args[1]) % len(shape)
    start = int(args[2]) % shape[dim]
    length = int(args[3])
    name, out_shape = imp.out(node)
    return imp.emit(Slice(name=name, inputs=(x.name,), outputs=(name,),
                          starts=tuple(start if a == dim else 0 for a in range(len(shape))),
                          ends=tuple(start + length if a == dim else d
                                     for a, d in enumerate(shape)),
                          steps=(1,) * len(shape)), out_shape)


def _stack(imp: GraphBuilder, node: Any, args: list[Any], kwargs: dict[str, Any]) -> Any:
    """stack(tensors, dim): each with a new axis of size 1 (a Reshape), then a Concat."""
    name, out_shape = imp.out(node)
    dim = int(_arg(args, kwargs, 1, "dim", 0)) % len(out_shape)
    parts = []
    for t in args[0]:
        shape = imp.shape(t)
        grown = (*shape[:dim], 1, *shape[dim:])
        part = imp.unique(f"{name}_part")
        imp.layers.append(Reshape(name=part, inputs=(imp.tensor(t, node),), outputs=(part,),
                                  shape=grown))
        parts.append(part)
    return imp.emit(Concat(name=name, inputs=tuple(parts), outputs=(name,), axis=dim), out_shape)


def _nchw(imp: GraphBuilder, node: Any, x: Any) -> tuple[int, int, int, int]:
    shape = imp.shape(x)
    if len(shape) != 4:
        raise FrontendError(f"aten.{node.target._opname} of a rank-{len(shape)} tensor is not "
                            "supported (patcc compiles NCHW images)", where(node))
    n, c, h, w = (int(d) for d in shape)
    return n, c, h, w


CONVERTERS: dict[str, Converter] = {
    "conv2d": _conv, "convolution": _conv, "_convolution": _conv,
    "conv_transpose2d": _conv_transpose,
    "batch_norm": _batch_norm, "_native_batch_norm_legit_no_training": _batch_norm,
    "sum": _reduce("sum"), "amax": _reduce("max"), "amin": _reduce("min"),
    "max": _reduce("max"), "min": _reduce("min"), "mean": _reduce("mean"),
    "var": _variance, "std": _variance,
    "pow": _pow, "square": _square, "rsqrt": _unaries("sqrt", "reciprocal"),
    "log_sigmoid": _unaries("neg", "softplus", "neg"), "prelu": _prelu,
    "_prelu_kernel": _prelu, "instance_norm": _instance_norm,
    "pixel_shuffle": _pixel_shuffle, "pixel_unshuffle": _pixel_shuffle,
    "channel_shuffle": _pixel_shuffle, "native_channel_shuffle": _pixel_shuffle,
    "expand": _expand, "expand_as": _expand, "repeat": _repeat, "tile": _repeat,
    "flip": _flip, "narrow": _narrow, "stack": _stack, "roll": _roll,
    "matmul": _matmul, "mm": _matmul,
    "layer_norm": _layer_norm, "native_layer_norm": _layer_norm,
    "group_norm": _group_norm, "native_group_norm": _group_norm,
    "linear": _linear,
    "relu": _activation("relu"), "relu_": _activation("relu"),
    "relu6": _activation("clip", 0.0, 6.0),
    "hardtanh": _activation("clip"), "hardtanh_": _activation("clip"),
    "hardswish": _activation("hard_swish"), "hardswish_": _activation("hard_swish"),
    "hardsigmoid": _activation("hard_sigmoid", 1 / 6, 0.5),
    "hardsigmoid_": _activation("hard_sigmoid", 1 / 6, 0.5),
    "silu": _activation("silu"), "silu_": _activation("silu"),
    "sigmoid": _activation("sigmoid"), "sigmoid_": _activation("sigmoid"),
    "tanh": _activation("tanh"), "leaky_relu": _activation("leaky_relu"),
    "leaky_relu_": _activation("leaky_relu"),
    "clamp": _clamp, "clamp_": _clamp,
    "add": _binary("add"), "add_": _binary("add"), "sub": _binary("sub"),
    "rsub": _binary("sub", reverse=True), "mul": _binary("mul"), "mul_": _binary("mul"),
    "div": _binary("div"), "maximum": _binary("max"), "minimum": _binary("min"),
    "dropout": _alias, "dropout_": _alias, "feature_dropout": _alias, "alpha_dropout": _alias,
    "clone": _alias, "contiguous": _alias, "detach": _alias, "identity": _alias,
    "alias": _alias, "lift_fresh_copy": _alias,
    "_assert_tensor_metadata": lambda imp, node, args, kwargs: None,
    "to": _alias, "_to_copy": _alias,
    "flatten": _reshape, "view": _reshape, "reshape": _reshape, "_unsafe_view": _reshape,
    "squeeze": _reshape, "unsqueeze": _reshape,
    "transpose": _transpose, "permute": _transpose, "t": _transpose,
    "cat": _cat, "concat": _cat,
    "split": _split, "split_with_sizes": _split, "chunk": _split,
    "adaptive_avg_pool2d": _adaptive_pool("avg"), "_adaptive_avg_pool2d": _adaptive_pool("avg"),
    "adaptive_max_pool2d": _adaptive_pool("max"),
    "max_pool2d": _max_pool, "max_pool2d_with_indices": _max_pool,
    "avg_pool2d": _avg_pool,
    "softmax": _softmax(False), "_softmax": _softmax(False),
    "log_softmax": _softmax(True), "_log_softmax": _softmax(True),
    "elu": _activation("elu"), "elu_": _activation("elu"),
    "selu": _activation("selu", 1.6732632423543772, 1.0507009873554805),
    "selu_": _activation("selu", 1.6732632423543772, 1.0507009873554805),
    "gelu": _activation("gelu"), "mish": _activation("mish"), "mish_": _activation("mish"),
    "softplus": _activation("softplus"), "erf": _activation("erf"),
    "exp": _activation("exp"), "log": _activation("log"), "sqrt": _activation("sqrt"),
    "neg": _activation("neg"), "abs": _activation("abs"),
    "reciprocal": _activation("reciprocal"),
    "slice": _slice, "constant_pad_nd": _pad, "pad": _pad,
    "select": _gather, "index_select": _gather, "index": _gather,
    "upsample_nearest2d": _upsample("nearest"),
    "_upsample_nearest_exact2d": _upsample("nearest", exact=True),
    "upsample_bilinear2d": _upsample("linear"), "upsample_bicubic2d": _upsample("cubic"),
    "_upsample_bilinear2d_aa": _upsample("linear", antialias=True),
    "_upsample_bicubic2d_aa": _upsample("cubic", antialias=True),
}
"""ATen operation (overload packet name) -> converter."""
