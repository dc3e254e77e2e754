"""Converters from ONNX operators (on dynamic tensors) to IR layers.

One function per operator family; each reads a resolved ``Node`` and appends layers
through the ``Importer``. Semantics follow the ONNX operator specification for
opsets 7-28 (later than 21 only element types changed for these operators),
including where attributes moved to inputs (Slice 10, Clip and Pad 11,
Split/Squeeze/Unsqueeze 13, Reduce* 18, Pad axes 18) and Upsample (7-9), which with
Resize-10 became Resize-11's asymmetric coordinates.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import onnx

from patcc.errors import FrontendError
from patcc.frontends.lowering import (
    Names,
    lower_expand,
    lower_prelu,
    lower_reduce,
    lower_shuffle,
    lower_tile,
)
from patcc.frontends.normalization import (
    lower_group_norm,
    lower_instance_norm,
    lower_layer_norm,
)
from patcc.frontends.onnx.importer import Converter, Importer, Node, unsupported
from patcc.frontends.transpose_conv import TransposedConv, lower_conv_transpose
from patcc.ir.layers import (
    Activation,
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
    Reshape,
    Resize,
    ScaleShift,
    Slice,
    Softmax,
    Split,
    Transpose,
    Unary,
)


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
        raise FrontendError(f"{key} must be a list of integers, got {value!r}"[:200], node.where)
    if len(value) != length or min(value) < minimum:
        raise FrontendError(f"{key} {value} must be {length} integers >= {minimum}"[:200],
                         node.where)
    return tuple(value)


def _window_attrs(node: Node) -> tuple[tuple[int, int], tuple[int, int]]:
    """(strides, dilations) of a 2-D conv or pool: two integers >= 1 each."""
    strides = _int_list(node, "strides", (1, 1), 2, 1)
    dilations = _int_list(node, "dilations", (1, 1), 2, 1)
    return strides, dilations  # type: ignore[return-value]


def _axis(node: Node, axis: int, rank: int) -> int:
    if not -rank <= axis < rank:
        raise FrontendError(f"axis {axis} out of range for a rank-{rank} tensor", node.where)
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
        raise FrontendError(f"unknown auto_pad {auto!r}", node.where)
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


def _conv_operands(ctx: Importer, node: Node, what: str
                   ) -> tuple[np.ndarray, np.ndarray | None, tuple[int, int],
                              tuple[int, int], tuple[int, int]]:
    """(weight, bias, kernel, strides, dilations) of a 2-D Conv or ConvTranspose."""
    weight = ctx.weight(node, 1, "weight")
    if weight.ndim != 4:
        unsupported(node, f"only 2-D {what} is supported (weight rank {weight.ndim})")
    bias = ctx.weight(node, 2, "bias") if len(node.inputs) > 2 and node.inputs[2] else None
    kernel = (int(weight.shape[2]), int(weight.shape[3]))
    if _int_list(node, "kernel_shape", kernel, 2, 1) != kernel:
        raise FrontendError(f"kernel_shape {node.attr('kernel_shape')} does not match the "
                         f"weight {list(weight.shape)}", node.where)
    strides, dilations = _window_attrs(node)
    return weight, bias, kernel, strides, dilations


def conv(ctx: Importer, node: Node) -> None:
    _, _, h, w = _spatial_input(ctx, node)
    weight, bias, kernel, strides, dilations = _conv_operands(ctx, node, "convolution")
    groups = node.attr("group", 1)
    if not isinstance(groups, int) or groups < 1:
        raise FrontendError(f"group {groups!r} must be a positive integer", node.where)
    ctx.add(Conv(
        name=ctx.layer_name(node), inputs=(node.inputs[0],), outputs=(node.outputs[0],),
        weight=weight,
        bias=np.zeros(weight.shape[0], np.float32) if bias is None else bias,
        strides=strides,
        pads=_window_pads(node, (h, w), kernel, strides, dilations),  # type: ignore[arg-type]
        dilations=dilations,
        groups=groups,
    ))


def _transpose_pads(node: Node, hw: tuple[int, int], full: tuple[int, int],
                    strides: tuple[int, int], output_padding: tuple[int, int]
                    ) -> tuple[tuple[int, ...], tuple[int, int]]:
    """ConvTranspose's (pads, output padding) from ``pads``, ``auto_pad`` or
    ``output_shape`` (which overrides pads), per the ONNX formulas: the total padding
    is the full output (``full``, plus output_padding) less the output asked for
    (``output_shape``, or input x stride for SAME_*), split with the larger half at
    the start but for SAME_UPPER; an output longer than the full one is output
    padding. ONNX (and onnxruntime) allow at most stride - 1 of that."""
    auto = node.attr("auto_pad", "NOTSET")
    if auto not in ("NOTSET", "VALID", "SAME_UPPER", "SAME_LOWER"):
        raise FrontendError(f"unknown auto_pad {auto!r}", node.where)
    wanted = node.attr("output_shape")
    if wanted is not None:
        wanted = _int_list(node, "output_shape", (), 2, 1)
    elif auto in ("SAME_UPPER", "SAME_LOWER"):
        wanted = tuple(size * s for size, s in zip(hw, strides, strict=True))
    elif auto == "VALID":
        return (0, 0, 0, 0), output_padding
    else:
        return _int_list(node, "pads", (0, 0, 0, 0), 4, 0), output_padding
    begin, end, extra = [], [], []
    for axis in range(2):
        total = full[axis] + output_padding[axis] - wanted[axis]
        if total < 0 and (auto == "SAME_UPPER" or node.attr("output_shape") is None):
            # the reference evaluator pads by -1 at the start, onnxruntime sizes the
            # output without the padding: no answer is the ONNX one
            raise FrontendError(
                f"auto_pad {auto} asks for {-total} row(s) of negative padding on axis "
                f"{axis + 2} (the kernel spans less than the stride), which onnxruntime "
                "and the ONNX reference evaluator size differently; give pads and "
                "output_padding instead", node.where)
        small = max(0, total) // 2
        begin.append(small if auto == "SAME_UPPER" else max(0, total) - small)
        end.append(max(0, total) - begin[-1])
        extra.append(output_padding[axis] + max(0, -total))
    return (begin[0], begin[1], end[0], end[1]), (extra[0], extra[1])


def conv_transpose(ctx: Importer, node: Node) -> None:
    """A 2-D ConvTranspose as a flipped Conv (stride 1) or a 1x1 Conv and Col2Im
    (``patcc.frontends.transpose_conv``)."""
    x_shape = _spatial_input(ctx, node)
    weight, bias, kernel, strides, dilations = _conv_operands(ctx, node, "ConvTranspose")
    output_padding = _int_list(node, "output_padding", (0, 0), 2, 0)
    hw = (x_shape[2], x_shape[3])
    shape_only = TransposedConv(weight=weight, bias=None, strides=strides,
                                dilations=dilations)
    pads, extra = _transpose_pads(node, hw, shape_only.full_size(hw), strides,
                                  output_padding)  # type: ignore[arg-type]
    for axis, (e, s) in enumerate(zip(extra, strides, strict=True)):
        if e >= s:
            raise FrontendError(f"output_padding or output_shape adds {e} row(s) on axis "
                             f"{axis + 2} past the full output; ONNX allows at most stride "
                             f"- 1 = {s - 1}", node.where)
    spec = TransposedConv(weight=weight, bias=bias, strides=strides,
                          pads=pads, dilations=dilations,  # type: ignore[arg-type]
                          groups=node.attr("group", 1), output_padding=extra)
    for layer in lower_conv_transpose(
            spec, node.inputs[0], x_shape, node.outputs[0],
            lambda suffix: ctx.layer_name(node, suffix),
            lambda suffix: ctx.temp(node, suffix), node.where):
        ctx.add(layer)


def col2im(ctx: Importer, node: Node) -> None:
    """Col2Im (opset 18) on a 2-D image: the (N, C*kh*kw, L) columns reshaped to the
    (N, C*kh*kw, Lh, Lw) grid of block positions, then the Col2Im layer."""
    x_shape = ctx.shape(node.inputs[0])
    image = _ints(ctx.const(node, 1, "image_shape").reshape(-1), ())
    block = _ints(ctx.const(node, 2, "block_shape").reshape(-1), ())
    if len(image) != 2 or len(block) != 2:
        unsupported(node, f"only 2-D Col2Im is supported (image_shape {list(image)}, "
                          f"block_shape {list(block)})")
    if len(x_shape) != 3:
        raise FrontendError(f"the input has shape {list(x_shape)}; Col2Im reads (N, C x "
                         "block size, blocks)", node.where)
    if min(image) < 1 or min(block) < 1 or x_shape[1] % (block[0] * block[1]):
        raise FrontendError(f"image_shape {list(image)} and block_shape {list(block)} must be "
                         f">= 1, and the block size must divide the input's {x_shape[1]} "
                         "channels", node.where)
    strides, dilations = _window_attrs(node)
    pads = _int_list(node, "pads", (0, 0, 0, 0), 4, 0)
    grid = []
    for axis in range(2):
        span = (block[axis] - 1) * dilations[axis] + 1
        room = image[axis] + pads[axis] + pads[axis + 2] - span
        if room < 0:
            raise FrontendError(f"a block spanning {span} does not fit the padded image "
                             f"{image[axis] + pads[axis] + pads[axis + 2]} on axis "
                             f"{axis + 2}", node.where)
        grid.append(room // strides[axis] + 1)
    if grid[0] * grid[1] != x_shape[2]:
        raise FrontendError(f"the input has {x_shape[2]} blocks, but image_shape {list(image)} "
                         f"with these blocks, pads and strides has {grid[0]} x {grid[1]}",
                         node.where)
    n, ck = x_shape[0], x_shape[1]
    columns = ctx.temp(node, "grid")
    ctx.add(Reshape(name=ctx.layer_name(node, "_grid"), inputs=(node.inputs[0],),
                    outputs=(columns,), shape=(n, ck, grid[0], grid[1])))
    ctx.add(Col2Im(name=ctx.layer_name(node), inputs=(columns,), outputs=(node.outputs[0],),
                   channels=ck // (block[0] * block[1]), kernel=(block[0], block[1]),
                   output_size=(image[0], image[1]), strides=strides,
                   pads=pads, dilations=dilations))  # type: ignore[arg-type]


def gemm(ctx: Importer, node: Node) -> None:
    a = node.inputs[0]
    if len(ctx.shape(a)) != 2:
        raise FrontendError(f"Gemm input A must be 2-D, got shape {ctx.shape(a)}", node.where)
    b = ctx.weight(node, 1, "B")
    if b.ndim != 2:
        raise FrontendError(f"Gemm B must be 2-D, got shape {b.shape}", node.where)
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
            raise FrontendError(f"C of shape {c.shape} does not broadcast to the output "
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


MAX_MATMUL_MATRICES = 256
"""The most matrices a batched constant B of MatMul may hold: each becomes a Dense."""


def matmul(ctx: Importer, node: Node) -> None:
    """numpy's matmul with a constant B: a 1-D A is a row and a 1-D B a column whose
    added axis leaves the result; B's batch axes broadcast against A's. A 2-D (or 1-D)
    B is one Dense on A's last axis. A batched B is one Dense per matrix of B: A is
    split along the batch axes where B varies (where A varies too), each piece meets
    its matrix, and Concats put the results back in order, so no weight is copied."""
    if node.inputs[1] not in ctx.consts:
        unsupported(node, "MatMul of two computed tensors is not supported "
                          "(the second operand must be a constant weight)")
    b = ctx.weight(node, 1, "B")
    a = node.inputs[0]
    a_shape = ctx.shape(a)
    if not a_shape or b.ndim == 0:
        raise FrontendError(f"MatMul of shapes {list(a_shape)} and {list(b.shape)}: both "
                         "operands need rank >= 1", node.where)
    depth = b.shape[-2] if b.ndim >= 2 else b.shape[0]
    if a_shape[-1] != depth:
        raise FrontendError(f"MatMul of shapes {list(a_shape)} and {list(b.shape)}: A's last "
                         f"axis {a_shape[-1]} must equal B's rows {depth}", node.where)
    if b.ndim <= 2:
        weight = np.ascontiguousarray(b.reshape(depth, -1).T)
        column = b.ndim == 1
        out = ctx.temp(node, "column") if column else node.outputs[0]
        ctx.add(Dense(name=ctx.layer_name(node), inputs=(a,), outputs=(out,), weight=weight,
                      bias=np.zeros(weight.shape[0], np.float32)))
        if column:
            ctx.add(Reshape(name=ctx.layer_name(node, "_drop"), inputs=(out,),
                            outputs=(node.outputs[0],), shape=a_shape[:-1]))
        return
    rows = a_shape if len(a_shape) >= 2 else (1, *a_shape)
    rank = max(len(rows), b.ndim)
    a_full = (1,) * (rank - len(rows)) + tuple(rows)
    b_full = b.reshape((1,) * (rank - b.ndim) + b.shape)
    batch = []
    for axis in range(rank - 2):
        da, db = a_full[axis], int(b_full.shape[axis])
        if da != db and 1 not in (da, db):
            raise FrontendError(f"MatMul of shapes {list(a_shape)} and {list(b.shape)}: batch "
                             f"axes {da} and {db} do not broadcast", node.where)
        batch.append(max(da, db))
    out_shape = (*batch, a_full[-2], b.shape[-1])
    final = out_shape if len(a_shape) >= 2 else (*batch, b.shape[-1])
    source = a
    if a_full != a_shape:
        source = ctx.temp(node, "batched")
        ctx.add(Reshape(name=ctx.layer_name(node, "_batched"), inputs=(a,), outputs=(source,),
                        shape=a_full))
    varying = [axis for axis in range(rank - 2) if b_full.shape[axis] > 1]
    if math.prod(b_full.shape[:-2]) > MAX_MATMUL_MATRICES:
        unsupported(node, f"MatMul with {math.prod(b_full.shape[:-2])} weight matrices (B of "
                          f"shape {list(b.shape)}) is not supported (at most "
                          f"{MAX_MATMUL_MATRICES}: each is a Dense layer)")
    pieces: dict[tuple[str, int], tuple[str, ...]] = {}

    def piece(tensor: str, axis: int, k: int) -> str:
        """Index ``k`` of ``tensor`` along ``axis``, the tensor itself where it has one."""
        shape = ctx.shape(tensor)
        if shape[axis] == 1:
            return tensor
        if (tensor, axis) not in pieces:
            names = tuple(ctx.temp(node, f"split{len(pieces)}_{j}")
                          for j in range(shape[axis]))
            ctx.add(Split(name=ctx.layer_name(node, f"_split{axis}"), inputs=(tensor,),
                          outputs=names, axis=axis, sizes=(1,) * shape[axis]))
            pieces[tensor, axis] = names
        return pieces[tensor, axis][k]

    def product(tensor: str, index: tuple[int, ...], target: str) -> None:
        """``target`` = the part of the result where B's varying axes start at ``index``."""
        if len(index) == len(varying):
            at = [0] * (rank - 2)
            for axis, k in zip(varying, index, strict=True):
                at[axis] = k
            matrix = b_full[tuple(at)]
            ctx.add(Dense(name=ctx.layer_name(node, "".join(f"_{k}" for k in index)),
                          inputs=(tensor,), outputs=(target,),
                          weight=np.ascontiguousarray(matrix.T),
                          bias=np.zeros(matrix.shape[1], np.float32)))
            return
        axis = varying[len(index)]
        parts = []
        for k in range(b_full.shape[axis]):
            part = ctx.temp(node, "mm_" + "_".join(map(str, (*index, k))))
            product(piece(tensor, axis, k), (*index, k), part)
            parts.append(part)
        ctx.add(Concat(name=ctx.layer_name(node, f"_cat{axis}"), inputs=tuple(parts),
                       outputs=(target,), axis=axis))

    result = node.outputs[0] if final == out_shape else ctx.temp(node, "rows")
    product(source, (), result)
    if final != out_shape:
        ctx.add(Reshape(name=ctx.layer_name(node, "_drop"), inputs=(result,),
                        outputs=(node.outputs[0],), shape=final))


def instance_norm(ctx: Importer, node: Node) -> None:
    """(x - mean) / sqrt(var + epsilon) per image and channel over the spatial axes,
    then a per-channel scale and bias (``patcc.frontends.normalization``)."""
    for layer in lower_instance_norm(
            node.inputs[0], ctx.shape(node.inputs[0]), ctx.weight(node, 1, "scale"),
            ctx.weight(node, 2, "B"), float(node.attr("epsilon", 1e-5)), node.outputs[0],
            _names(ctx, node), node.where):
        ctx.add(layer)


def _names(ctx: Importer, node: Node) -> Names:
    """How a shared lowering (``patcc.frontends.lowering``) names what it builds for
    ``node``: its intermediate tensors unique among themselves too, since a lowering
    names them all before the importer records any."""
    taken: set[str] = set()

    def tensor(suffix: str) -> str:
        name, k = ctx.temp(node, suffix), 1
        while name in taken:
            k += 1
            name = ctx.temp(node, f"{suffix}{k}")
        taken.add(name)
        return name

    return Names(lambda suffix: ctx.layer_name(node, suffix), tensor,
                 lambda suffix, value: _constant_operand(ctx, node, suffix, value))


def _optional_weight(ctx: Importer, node: Node, index: int, what: str) -> np.ndarray | None:
    if index >= len(node.inputs) or not node.inputs[index]:
        return None
    return ctx.weight(node, index, what)


def layer_norm(ctx: Importer, node: Node) -> None:
    """LayerNormalization (opset 17) over the axes from ``axis`` on, with its optional
    Mean and InvStdDev outputs (``patcc.frontends.normalization``); computed in
    float32 whatever ``stash_type`` asks."""
    outputs = [*node.outputs, "", ""]
    for layer in lower_layer_norm(
            node.inputs[0], ctx.shape(node.inputs[0]), int(node.attr("axis", -1)),
            ctx.weight(node, 1, "Scale"), _optional_weight(ctx, node, 2, "B"),
            float(node.attr("epsilon", 1e-5)), node.outputs[0], _names(ctx, node),
            node.where, mean_out=outputs[1] or None, inv_std_out=outputs[2] or None):
        ctx.add(layer)


def group_norm(ctx: Importer, node: Node) -> None:
    """GroupNormalization: per-channel scale and bias (opset 21), or one per group
    (opset 18, which ONNX deprecated), repeated over each group's channels."""
    shape = ctx.shape(node.inputs[0])
    groups = node.attr("num_groups")
    scale, bias = ctx.weight(node, 1, "scale"), ctx.weight(node, 2, "bias")
    if ctx.opset < 21 and len(shape) >= 2 and isinstance(groups, int) and groups >= 1 \
            and shape[1] % groups == 0:
        per_group = shape[1] // groups
        scale, bias = (np.repeat(v, per_group) if v.shape == (groups,) else v
                       for v in (scale, bias))
    for layer in lower_group_norm(node.inputs[0], shape, groups, scale, bias,
                                  float(node.attr("epsilon", 1e-5)), node.outputs[0],
                                  _names(ctx, node), node.where):
        ctx.add(layer)


def lrn(ctx: Importer, node: Node) -> None:
    """Local response normalisation across channels (AlexNet, GoogLeNet):
    ``x / (bias + alpha / size * sum(x^2 over channels c - floor((size-1)/2) ..
    c + ceil((size-1)/2)))^beta``. The windowed sum is an average Pool over the channel
    axis of ``x * x`` seen as (N, 1, C, pixels), zero-padded and counting the padding,
    so that it divides by ``size``: ``size`` taps per value where a banded 1x1 conv
    would take C, and no weight the pruning passes would take for a filter."""
    x = node.inputs[0]
    shape = ctx.shape(x)
    if len(shape) < 3:
        unsupported(node, f"LRN of a rank-{len(shape)} tensor is not supported (needs N, C "
                          "and spatial axes)")
    size = node.attr("size")
    if not isinstance(size, int) or size < 1:
        raise FrontendError(f"size {size!r} must be an integer >= 1", node.where)
    alpha, beta = float(node.attr("alpha", 1e-4)), float(node.attr("beta", 0.75))
    bias = float(node.attr("bias", 1.0))
    n, c = shape[:2]
    pixels = math.prod(shape[2:])
    before = (size - 1) // 2
    square, planes, window, base, denominator, back = (
        ctx.temp(node, t) for t in ("square", "planes", "window", "base", "denominator",
                                    "back"))

    def layer(cls: type, suffix: str, inputs: tuple[str, ...], out: str, **kw: object) -> None:
        ctx.add(cls(name=ctx.layer_name(node, suffix), inputs=inputs, outputs=(out,), **kw))

    layer(Binary, "_square", (x, x), square, binop="mul")
    layer(Reshape, "_planes", (square,), planes, shape=(n, 1, c, pixels))
    layer(Pool, "_window", (planes,), window, kind="avg", kernel=(size, 1),
          pads=(before, 0, size - 1 - before, 0), count_include_pad=True)
    layer(ScaleShift, "_scale", (window,), base, scale=np.array([alpha], np.float32),
          shift=np.array([bias], np.float32))
    layer(Unary, "_pow", (base,), denominator, activation=Activation("pow", beta))
    layer(Reshape, "_back", (denominator,), back, shape=tuple(shape))
    layer(Binary, "", (x, back), node.outputs[0], binop="div")


def batch_norm(ctx: Importer, node: Node) -> None:
    if node.attr("training_mode", 0):
        unsupported(node, "BatchNormalization in training mode is not supported "
                          "(export the model in eval mode)")
    if any(node.outputs[1:]):
        unsupported(node, "BatchNormalization running-statistics outputs are not supported")
    if not node.attr("spatial", 1):  # opset 7-8: statistics per element, not per channel
        unsupported(node, "BatchNormalization with spatial=0 is not supported")
    shape = ctx.shape(node.inputs[0])
    channels = shape[1] if len(shape) >= 2 else 0
    scale, shift, mean, var = (ctx.weight(node, i, what) for i, what in
                               enumerate(("scale", "B", "mean", "var"), start=1))
    for what, value in zip(("scale", "B", "mean", "var"), (scale, shift, mean, var),
                           strict=True):
        if value.shape != (channels,):
            raise FrontendError(f"{what} has shape {value.shape}; the input {list(shape)} needs "
                             f"({channels},)", node.where)
    eps = np.float64(node.attr("epsilon", 1e-5))
    if not np.isfinite(eps) or not (var.astype(np.float64) + eps > 0).all():
        bad = int(np.argmin(var.astype(np.float64) + eps))
        raise FrontendError(f"var + epsilon must be positive, but channel {bad} has var "
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
            raise FrontendError("kernel_shape is missing", node.where)
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
        norm = [_axis(node, a, rank) for a in axes]
        for layer in lower_reduce(x, shape, kind, norm, bool(node.attr("keepdims", 1)),
                                  node.outputs[0], _names(ctx, node)):
            ctx.add(layer)
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
    """x if x >= 0 else slope * x (``patcc.frontends.lowering.lower_prelu``)."""
    x = node.inputs[0]
    for layer in lower_prelu(x, ctx.shape(x), ctx.weight(node, 1, "slope"), node.outputs[0],
                             _names(ctx, node), node.where):
        ctx.add(layer)


def activation(kind: str) -> Callable[[Importer, Node], None]:
    def convert(ctx: Importer, node: Node) -> None:
        alpha, beta, chosen = 0.0, 0.0, kind
        if kind == "leaky_relu":
            alpha = float(node.attr("alpha", 0.01))
        elif kind == "hard_sigmoid":
            alpha, beta = float(node.attr("alpha", 0.2)), float(node.attr("beta", 0.5))
        elif kind == "clip" and ctx.opset < 11:  # Clip-6: bounds are attributes
            alpha = _clip_bound(node, node.attr("min"), -math.inf)
            beta = _clip_bound(node, node.attr("max"), math.inf)
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
                raise FrontendError(f"unknown approximate {approximate!r}", node.where)
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
        raise FrontendError(f"a Clip bound must be one number, got shape {array.shape}",
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
        raise FrontendError(f"axis {axis} out of range for a rank-{len(shape)} tensor", node.where)
    axis = axis + len(shape) if axis < 0 else axis
    _reshape_to(ctx, node, (math.prod(shape[:axis]), math.prod(shape[axis:])))


def reshape(ctx: Importer, node: Node) -> None:
    shape = ctx.shape(node.inputs[0])
    value = ctx.const(node, 1, "shape")
    if not np.issubdtype(value.dtype, np.integer):
        raise FrontendError(f"the shape input has dtype {value.dtype}; ONNX requires int64",
                         node.where)
    target = [int(d) for d in value.reshape(-1)]
    if not node.attr("allowzero", 0):
        if any(d == 0 for d in target[len(shape):]):
            raise FrontendError(f"shape {target[:8]}: a 0 (copy the input's dimension) past the "
                             f"input's rank {len(shape)}", node.where)
        target = [shape[i] if d == 0 else d for i, d in enumerate(target)]
    if target.count(-1) > 1 or min(target, default=0) < -1:
        raise FrontendError(f"shape {target[:8]} has more than one -1 or a dimension below -1",
                         node.where)
    if -1 in target:
        known = math.prod(d for d in target if d != -1)
        if not known or math.prod(shape) % known:
            raise FrontendError(f"cannot reshape {list(shape)} to {target[:8]}", node.where)
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
        raise FrontendError(f"cannot squeeze axes {sorted(drop)} of shape {shape}", node.where)
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
    for layer in lower_shuffle(node.inputs[0], split, perm, out_shape, node.outputs[0],
                               _names(ctx, node)):
        ctx.add(layer)


def depth_to_space(ctx: Importer, node: Node) -> None:
    """DCR (depth, column, row: the default) or CRD blocks of channels into space."""
    n, c, h, w = _spatial_input(ctx, node)
    bs, mode = int(node.attr("blocksize", 0)), node.attr("mode", "DCR")
    if bs < 1 or c % (bs * bs) or mode not in ("DCR", "CRD"):
        raise FrontendError(f"blocksize {bs} and mode {mode!r} for {c} channels: the "
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
        raise FrontendError(f"blocksize {bs} and mode {mode!r} for a {h}x{w} input: height and "
                         "width must divide by blocksize, mode DCR or CRD", node.where)
    perm = (0, 3, 5, 1, 2, 4) if mode == "DCR" else (0, 1, 3, 5, 2, 4)
    _shuffle(ctx, node, (n, c, h // bs, bs, w // bs, bs), perm,
             (n, c * bs * bs, h // bs, w // bs))


def expand(ctx: Importer, node: Node) -> None:
    """Broadcast to a constant shape: x + 0 of the expanded dimensions (numpy rules)."""
    target = tuple(int(d) for d in ctx.const(node, 1, "shape").reshape(-1))
    _lowered(ctx, node, lower_expand(node.inputs[0], ctx.shape(node.inputs[0]), target,
                                     node.outputs[0], _names(ctx, node), node.where))


def tile(ctx: Importer, node: Node) -> None:
    """Repeats along each axis (``patcc.frontends.lowering.lower_tile``)."""
    repeats = [int(r) for r in ctx.const(node, 1, "repeats").reshape(-1)]
    _lowered(ctx, node, lower_tile(node.inputs[0], ctx.shape(node.inputs[0]), repeats,
                                   node.outputs[0], _names(ctx, node), node.where))


def _lowered(ctx: Importer, node: Node, layers: list[Layer]) -> None:
    """Add what a shared lowering built; nothing built: the output is the input."""
    if not layers:
        ctx.alias[node.outputs[0]] = node.inputs[0]
    for layer in layers:
        ctx.add(layer)


def _resize_target(ctx: Importer, node: Node, axes: list[int]
                   ) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """(output shape, per-axis scales) from the ``scales`` or ``sizes`` input of
    Resize, with ``keep_aspect_ratio_policy`` applied to sizes."""
    shape = ctx.shape(node.inputs[0])
    given_scales = ctx.optional_const(node, 2, "scales")
    given_sizes = ctx.optional_const(node, 3, "sizes")
    if given_scales is not None and given_scales.size == 0:
        given_scales = None
    if given_sizes is not None and given_sizes.size == 0:
        given_sizes = None
    if (given_scales is None) == (given_sizes is None):
        raise FrontendError("Resize needs exactly one of scales and sizes", node.where)
    given = given_scales if given_scales is not None else given_sizes
    assert given is not None
    if given.ndim != 1 or len(given) != len(axes):
        raise FrontendError(f"{'scales' if given_scales is not None else 'sizes'} "
                         f"{given.tolist()} must hold one value per resized axis "
                         f"({len(axes)})"[:200], node.where)
    size, scales = list(shape), [1.0] * len(shape)
    if given_scales is not None:
        if not np.issubdtype(given_scales.dtype, np.floating):
            raise FrontendError(f"scales have dtype {given_scales.dtype}", node.where)
        for axis, value in zip(axes, given_scales.tolist(), strict=True):
            if not (math.isfinite(value) and value > 0):
                raise FrontendError(f"scale {value} of axis {axis} must be positive and "
                                 "finite", node.where)
            scales[axis] = float(value)
            size[axis] = math.floor(value * shape[axis])
        return tuple(size), tuple(scales)
    if not np.issubdtype(given.dtype, np.integer) or given.min() < 1:
        raise FrontendError(f"sizes {given.tolist()} must be positive integers"[:200], node.where)
    for axis, value in zip(axes, given.tolist(), strict=True):
        size[axis], scales[axis] = int(value), value / shape[axis]
    policy = node.attr("keep_aspect_ratio_policy", "stretch")
    if policy not in ("stretch", "not_larger", "not_smaller"):
        raise FrontendError(f"unknown keep_aspect_ratio_policy {policy!r}", node.where)
    if policy != "stretch":
        common = (min if policy == "not_larger" else max)(scales[a] for a in axes)
        for axis in axes:
            scales[axis] = common
            size[axis] = int(common * shape[axis] + 0.5)  # round half up, as ONNX
    return tuple(size), tuple(scales)


def upsample(ctx: Importer, node: Node) -> None:
    """Upsample (opsets 7-9, deprecated since 10) and Resize-10: scales (an attribute
    of Upsample-7, else the second input), nearest or (bi)linear, in asymmetric
    coordinates (x = y / scale); nearest takes the floor when up-sampling and, as
    onnxruntime, the ceiling when every resized axis shrinks."""
    shape = ctx.shape(node.inputs[0])
    attr = node.attr("scales")
    if node.op_type == "Upsample" and attr is not None:
        scales = [float(v) for v in attr]
    else:
        scales = [float(v) for v in ctx.const(node, 1, "scales").reshape(-1)]
    if len(scales) != len(shape) or not all(math.isfinite(v) and v > 0 for v in scales):
        raise FrontendError(f"scales {scales} must be one positive number per axis of "
                         f"{list(shape)}"[:200], node.where)
    mode = {"bilinear": "linear"}.get(node.attr("mode", "nearest"), node.attr("mode", "nearest"))
    if mode not in ("nearest", "linear"):
        raise FrontendError(f"unknown mode {mode!r} (nearest or linear)", node.where)
    resized = [v for v in scales if v != 1.0]
    shrinks = bool(resized) and all(v < 1.0 for v in resized)
    ctx.add(Resize(name=ctx.layer_name(node), inputs=(node.inputs[0],),
                   outputs=(node.outputs[0],),
                   size=tuple(math.floor(v * d) for v, d in zip(scales, shape, strict=True)),
                   scales=tuple(scales), mode=mode, coordinate_mode="asymmetric",
                   nearest_mode="ceil" if shrinks else "floor"))


def resize(ctx: Importer, node: Node) -> None:
    """Resize (opset 11-19 forms): nearest, linear and cubic over any axes, every
    coordinate transformation, scales or sizes, antialiasing, tf_crop_and_resize."""
    if ctx.opset < 11:
        upsample(ctx, node)
        return
    shape = ctx.shape(node.inputs[0])
    r = len(shape)
    axes = [_axis(node, a, r) for a in _ints(node.attr("axes"), tuple(range(r)))]
    if len(set(axes)) != len(axes):
        raise FrontendError(f"axes {axes} repeat an axis", node.where)
    size, scales = _resize_target(ctx, node, axes)
    coordinate_mode = node.attr("coordinate_transformation_mode", "half_pixel")
    roi: tuple[float, ...] = ()
    if coordinate_mode == "tf_crop_and_resize":
        given = ctx.optional_const(node, 1, "roi")
        if given is None or given.size != 2 * len(axes):
            raise FrontendError(f"tf_crop_and_resize needs a roi of {2 * len(axes)} values "
                             "(starts, then ends, of the resized axes)", node.where)
        full = [0.0] * r + [1.0] * r
        for i, axis in enumerate(axes):
            full[axis], full[r + axis] = float(given[i]), float(given[len(axes) + i])
        roi = tuple(full)
    ctx.add(Resize(name=ctx.layer_name(node), inputs=(node.inputs[0],),
                   outputs=(node.outputs[0],), size=size, scales=scales,
                   mode=node.attr("mode", "nearest"), coordinate_mode=coordinate_mode,
                   nearest_mode=node.attr("nearest_mode", "round_prefer_floor"),
                   cubic_a=float(node.attr("cubic_coeff_a", -0.75)),
                   exclude_outside=bool(node.attr("exclude_outside", 0)),
                   antialias=bool(node.attr("antialias", 0)), roi=roi,
                   extrapolation_value=float(node.attr("extrapolation_value", 0.0))))


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
    if ctx.opset < 10:  # Slice-1: starts, ends and axes are attributes, no steps
        starts = np.array(_ints(node.attr("starts"), ()), np.int64)
        ends = np.array(_ints(node.attr("ends"), ()), np.int64)
        axes_attr = node.attr("axes")
        axes_v = None if axes_attr is None else np.array(_ints(axes_attr, ()), np.int64)
        steps_v = None
    else:
        starts = ctx.const(node, 1, "starts").reshape(-1).astype(np.int64)
        ends = ctx.const(node, 2, "ends").reshape(-1).astype(np.int64)
        axes_v = ctx.optional_const(node, 3, "axes")
        steps_v = ctx.optional_const(node, 4, "steps")
    if len(ends) != len(starts):
        raise FrontendError(f"{len(starts)} starts but {len(ends)} ends", node.where)
    axes = range(len(starts)) if axes_v is None else axes_v.reshape(-1).tolist()
    steps = [1] * len(starts) if steps_v is None else steps_v.reshape(-1).tolist()
    lo, hi, st = [0] * rank, list(shape), [1] * rank
    for a, s, e, step in zip(axes, starts.tolist(), ends.tolist(), steps, strict=True):
        a = _axis(node, int(a), rank)
        d = shape[a]
        if step == 0:
            raise FrontendError("Slice step 0", node.where)
        s = s + d if s < 0 else s
        e = e + d if e < 0 else e
        if step > 0:
            s, e = min(max(s, 0), d), min(max(e, 0), d)
        else:
            s, e = min(max(s, 0), d - 1), min(max(e, -1), d - 1)
        lo[a], hi[a], st[a] = s, e, int(step)
    ctx.add(Slice(name=ctx.layer_name(node), inputs=(node.inputs[0],),
                  outputs=(node.outputs[0],), starts=tuple(lo), ends=tuple(hi), steps=tuple(st)))


def gather(ctx: Importer, node: Node) -> None:
    """Gather with constant indices of any shape (negative ones count from the end) on
    a computed tensor: one Gather layer. (With constant data too, it was folded.)"""
    shape = ctx.shape(node.inputs[0])
    axis = _axis(node, int(node.attr("axis", 0)), len(shape))
    indices = ctx.const(node, 1, "indices")
    if not np.issubdtype(indices.dtype, np.integer):
        raise FrontendError(f"indices have dtype {indices.dtype}; ONNX requires int32 or int64",
                         node.where)
    size = shape[axis]
    flat = indices.reshape(-1)
    bad = np.flatnonzero((flat < -size) | (flat >= size))
    if bad.size:
        raise FrontendError(f"index {int(flat[bad[0]])} is out of range for axis {axis} of "
                         f"shape {list(shape)} (valid: {-size}..{size - 1})", node.where)
    normalised = np.where(indices < 0, indices.astype(np.int64) + size, indices)
    ctx.add(Gather(name=ctx.layer_name(node), inputs=(node.inputs[0],),
                   outputs=(node.outputs[0],), axis=axis,
                   indices=np.array(normalised, dtype=np.int64)))


def pad(ctx: Importer, node: Node) -> None:
    shape = ctx.shape(node.inputs[0])
    rank = len(shape)
    mode = node.attr("mode", "constant")
    if mode not in ("constant", "reflect", "edge"):
        unsupported(node, f"Pad mode {mode!r} is not supported (constant, reflect, edge)")
    if ctx.opset < 11:  # Pad-2: pads and value are attributes
        given = list(_ints(node.attr("pads"), ()))
        value: np.ndarray | None = np.array(float(node.attr("value", 0.0)))
        axes_v = None
    else:
        given = [int(p) for p in ctx.const(node, 1, "pads").reshape(-1)]
        value = ctx.optional_const(node, 2, "constant_value")
        axes_v = ctx.optional_const(node, 3, "axes")
    axes = list(range(rank)) if axes_v is None else [
        _axis(node, int(a), rank) for a in axes_v.reshape(-1)]
    if len(given) != 2 * len(axes):
        raise FrontendError(f"pads {given} do not match {len(axes)} axes", node.where)
    pads = [0] * (2 * rank)
    for k, a in enumerate(axes):
        pads[a], pads[a + rank] = given[k], given[k + len(axes)]
    source = node.inputs[0]
    if min(pads) < 0:  # negative pads crop: a Slice first, then what remains to pad
        if mode != "constant":
            unsupported(node, f"negative pads {given} (cropping) with mode {mode!r}")
        starts = [max(0, -p) for p in pads[:rank]]
        ends = [d - max(0, -p) for d, p in zip(shape, pads[rank:], strict=True)]
        if any(e <= s for s, e in zip(starts, ends, strict=True)):
            raise FrontendError(f"pads {given} crop all of shape {list(shape)}", node.where)
        cropped = node.outputs[0] if max(pads) <= 0 else ctx.temp(node, "cropped")
        ctx.add(Slice(name=ctx.layer_name(node, "_crop"), inputs=(source,), outputs=(cropped,),
                      starts=tuple(starts), ends=tuple(ends), steps=(1,) * rank))
        if max(pads) <= 0:
            return
        source, pads = cropped, [max(0, p) for p in pads]
    ctx.add(Pad(name=ctx.layer_name(node), inputs=(source,),
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


CONVERTERS: dict[str, Converter] = {
    "Conv": conv,
    "ConvTranspose": conv_transpose,
    "Col2Im": col2im,
    "Gemm": gemm,
    "MatMul": matmul,
    "BatchNormalization": batch_norm,
    "InstanceNormalization": instance_norm,
    "LayerNormalization": layer_norm,
    "GroupNormalization": group_norm,
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
    "Gather": gather,
    "LRN": lrn,
    "Resize": resize,
    "Upsample": upsample,
    "Identity": identity,
    "Dropout": identity,
    "Cast": identity,
    "Shape": shape_of,
    "Size": shape_of,
}
