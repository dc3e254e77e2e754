"""Strided maps: element-wise layers with broadcasting, Transpose and Slice.

Every operand is described by an element offset and one stride per output axis
(0 along broadcast axes, negative for reversed slices). Axes that are contiguous for
every operand are merged first, so ``(N, C, H, W) + (N, C, H, W)`` becomes one long
loop and ``x * scale[C, 1, 1]`` a loop over H*W with the scale constant; the innermost
loop is left for LLVM's loop vectorizer (stride 0 or 1 on every operand).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from llvmlite import ir

from patcc.backends.llvm.irutil import KernelBuilder, i64
from patcc.backends.llvm.lowering import LayerCode, LoweringContext, Operands, Phase
from patcc.ir.layers import Binary, Layer, ScaleShift, Shape, Slice, Transpose, Unary

Pointer = Callable[[KernelBuilder, Operands], ir.Value]


@dataclass(frozen=True)
class Access:
    """How an operand is read: base pointer, element offset, stride per output axis."""

    pointer: Pointer
    offset: int
    strides: tuple[int, ...]


def row_major_strides(shape: Shape) -> tuple[int, ...]:
    strides, acc = [], 1
    for d in reversed(shape):
        strides.append(acc)
        acc *= d
    return tuple(reversed(strides))


def broadcast_strides(shape: Shape, out: Shape) -> tuple[int, ...]:
    """Strides of a numpy-broadcast operand of ``shape`` in the index space of ``out``."""
    own = row_major_strides(shape)
    lead = len(out) - len(shape)
    return tuple(0 if a < lead or shape[a - lead] == 1 and out[a] != 1 else own[a - lead]
                 for a in range(len(out)))


def _coalesce(shape: Shape, accesses: list[tuple[int, ...]]) -> tuple[Shape, list[tuple[int, ...]]]:
    """Merge neighbouring axes along which every operand is contiguous."""
    dims = [d for d in shape]
    strides = [list(s) for s in accesses]
    a = len(dims) - 2
    while a >= 0:
        if all(s[a] == s[a + 1] * dims[a + 1] for s in strides):
            dims[a] *= dims[a + 1]
            del dims[a + 1]
            for s in strides:
                s[a] = s[a + 1]
                del s[a + 1]
        a -= 1
    return tuple(dims) or (1,), [tuple(s) or (0,) for s in strides]


Combine = Callable[[KernelBuilder, list[ir.Value]], ir.Value]


def map_layer(layer: Layer, ctx: LoweringContext, operands: Sequence[Access],
              combine: Combine, kernel: str) -> LayerCode:
    """Lower ``out[i] = combine(op0[i], op1[i], ...)`` over the layer's output shape."""
    out_shape = ctx.out_shape(layer)
    total = math.prod(out_shape)
    out_access = Access(lambda kb, ops: ops.outputs[0], 0, row_major_strides(out_shape))
    accesses = [out_access, *operands]
    dims, strides = _coalesce(out_shape, [a.strides for a in accesses])
    inner = dims[-1]
    rows = math.prod(dims[:-1])
    tasks = max(1, min(rows, 64, -(-total // 4096)))
    per_task = -(-rows // tasks)

    def body(kb: KernelBuilder, ops: Operands, task: ir.Value) -> None:
        b = kb.b
        ptrs = [a.pointer(kb, ops) for a in accesses]
        lo = b.mul(task, i64(per_task))
        hi = b.add(lo, i64(per_task))
        hi = b.select(b.icmp_signed("<", hi, i64(rows)), hi, i64(rows))
        with kb.loop(lo, hi, 1, "row") as row:
            bases = _row_offsets(kb, row, dims[:-1], [s[:-1] for s in strides],
                                 [a.offset for a in accesses])
            with kb.loop(0, inner, 1, "e") as e:
                idx = [b.add(base, b.mul(e, i64(s[-1]))) if s[-1] else base
                       for base, s in zip(bases, strides, strict=True)]
                values = [kb.load(p, i) for p, i in zip(ptrs[1:], idx[1:], strict=True)]
                kb.store(combine(kb, values), ptrs[0], idx[0])

    return LayerCode(layer, [Phase(kernel, tasks, body)], kernel=kernel)


def _row_offsets(kb: KernelBuilder, row: ir.Value, dims: Shape,
                 strides: list[tuple[int, ...]], offsets: list[int]) -> list[ir.Value]:
    """Element offset of each operand at the start of outer row ``row``."""
    b = kb.b
    result = [i64(o) for o in offsets]
    rest = row
    for a in reversed(range(len(dims))):
        if a > 0:
            idx = b.srem(rest, i64(dims[a]))
            rest = b.sdiv(rest, i64(dims[a]))
        else:
            idx = rest
        result = [b.add(r, b.mul(idx, i64(s[a]))) if s[a] else r
                  for r, s in zip(result, strides, strict=True)]
    return result


def _input(i: int) -> Pointer:
    def pointer(kb: KernelBuilder, ops: Operands) -> ir.Value:
        return ops.inputs[i]
    return pointer


def _constant(byte_offset: int) -> Pointer:
    def pointer(kb: KernelBuilder, ops: Operands) -> ir.Value:
        return ops.weights(kb, byte_offset)
    return pointer


def _operand(ctx: LoweringContext, layer: Layer, i: int, out: Shape) -> Access:
    return Access(_input(i), 0, broadcast_strides(ctx.in_shape(layer, i), out))


_BINARY: dict[str, Callable[[ir.IRBuilder, ir.Value, ir.Value], ir.Value]] = {
    "add": lambda b, x, y: b.fadd(x, y),
    "sub": lambda b, x, y: b.fsub(x, y),
    "mul": lambda b, x, y: b.fmul(x, y),
    "div": lambda b, x, y: b.fdiv(x, y),
}


def lower_binary(layer: Binary, ctx: LoweringContext) -> LayerCode:
    out = ctx.out_shape(layer)

    def combine(kb: KernelBuilder, v: list[ir.Value]) -> ir.Value:
        if layer.binop in ("max", "min"):
            # numpy semantics: NaN wins (llvm.maximum/minimum), unlike maxnum/minnum
            y = kb.intrinsic("llvm.maximum" if layer.binop == "max" else "llvm.minimum",
                             v[0].type, v)
        elif layer.binop == "pow":
            y = kb.intrinsic("llvm.pow", v[0].type, v)
        else:
            y = _BINARY[layer.binop](kb.b, v[0], v[1])
        return kb.activation(layer.activation, y)

    return map_layer(layer, ctx, [_operand(ctx, layer, 0, out), _operand(ctx, layer, 1, out)],
                     combine, "map")


def lower_unary(layer: Unary, ctx: LoweringContext) -> LayerCode:
    out = ctx.out_shape(layer)
    return map_layer(layer, ctx, [_operand(ctx, layer, 0, out)],
                     lambda kb, v: kb.activation(layer.activation, v[0]), "map")


def lower_scale_shift(layer: ScaleShift, ctx: LoweringContext) -> LayerCode:
    out = ctx.out_shape(layer)
    per_channel = (1, out[1], *([1] * (len(out) - 2)))
    accesses = [_operand(ctx, layer, 0, out)]
    for array in (layer.scale, layer.shift):
        offset = ctx.blob.add(array)
        accesses.append(Access(_constant(offset), 0, broadcast_strides(per_channel, out)))
    return map_layer(layer, ctx, accesses,
                     lambda kb, v: kb.activation(layer.activation, kb.fma(v[0], v[1], v[2])),
                     "map")


def lower_transpose(layer: Transpose, ctx: LoweringContext) -> LayerCode:
    own = row_major_strides(ctx.in_shape(layer))
    access = Access(_input(0), 0, tuple(own[p] for p in layer.perm))
    return map_layer(layer, ctx, [access], lambda kb, v: v[0], "copy")


def lower_slice(layer: Slice, ctx: LoweringContext) -> LayerCode:
    own = row_major_strides(ctx.in_shape(layer))
    offset = int(np.dot(layer.starts, own))
    access = Access(_input(0), offset,
                    tuple(s * st for s, st in zip(own, layer.steps, strict=True)))
    return map_layer(layer, ctx, [access], lambda kb, v: v[0], "copy")
