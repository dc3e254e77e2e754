"""Data movement: Concat, Split, Gather and Reshape as block copies, Pad as an index map.

A Reshape whose output can share its input's memory is planned away by the memory
planner and emits nothing; the copies here are the cases that cannot (a graph
output, for instance).
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir

from patcc.backends.llvm.elementwise import row_major_strides
from patcc.backends.llvm.irutil import I1, I64, PTR, VOID, KernelBuilder, declare, i64
from patcc.backends.llvm.lowering import LayerCode, LoweringContext, Operands, Phase
from patcc.ir.layers import Concat, Gather, Pad, Reshape, Split


def copy_floats(kb: KernelBuilder, dst: ir.Value, src: ir.Value, floats: ir.Value | int
                ) -> None:
    """dst[0:floats] = src[0:floats] (``llvm.memcpy``; the buffers do not overlap)."""
    fn = declare(kb.module, "llvm.memcpy.p0.p0.i64", VOID, [PTR, PTR, I64, I1])
    size = i64(4 * floats) if isinstance(floats, int) else kb.b.mul(floats, i64(4))
    kb.b.call(fn, [dst, src, size, ir.Constant(I1, 0)])


def _blocks(shape: tuple[int, ...], axis: int) -> tuple[int, int]:
    """(outer count, floats per outer index from ``axis`` on) of a row-major tensor."""
    return math.prod(shape[:axis]), math.prod(shape[axis:])


def lower_concat(layer: Concat, ctx: LoweringContext) -> LayerCode:
    out_shape = ctx.out_shape(layer)
    outer, out_chunk = _blocks(out_shape, layer.axis)
    pieces = []
    start = 0
    for i, t in enumerate(layer.inputs):
        _, chunk = _blocks(ctx.in_shape(layer, i), layer.axis)
        if t not in ctx.in_place:  # the others' producers wrote them in place
            pieces.append((i, chunk, start))
        start += chunk
    if not pieces:
        return LayerCode(layer, [], kernel="in-place")

    def body(kb: KernelBuilder, ops: Operands, task: ir.Value) -> None:
        b = kb.b
        o = b.sdiv(task, i64(len(pieces)))
        which = b.srem(task, i64(len(pieces)))
        for k, (i, chunk, offset) in enumerate(pieces):
            with b.if_then(b.icmp_signed("==", which, i64(k))):
                copy_floats(kb, kb.at(ops.outputs[0], b.add(b.mul(o, i64(out_chunk)), i64(offset))),
                        kb.at(ops.inputs[i], b.mul(o, i64(chunk))), chunk)

    return LayerCode(layer, [Phase("concat", outer * len(pieces), body)], kernel="copy")


def lower_split(layer: Split, ctx: LoweringContext) -> LayerCode:
    in_shape = ctx.in_shape(layer)
    outer, in_chunk = _blocks(in_shape, layer.axis)
    inner = math.prod(in_shape[layer.axis + 1:])
    pieces = []
    start = 0
    for i, size in enumerate(layer.sizes):
        pieces.append((i, size * inner, start))
        start += size * inner

    def body(kb: KernelBuilder, ops: Operands, task: ir.Value) -> None:
        b = kb.b
        o = b.sdiv(task, i64(len(pieces)))
        which = b.srem(task, i64(len(pieces)))
        for i, chunk, offset in pieces:
            if chunk == 0:
                continue
            with b.if_then(b.icmp_signed("==", which, i64(i))):
                copy_floats(kb, kb.at(ops.outputs[i], b.mul(o, i64(chunk))),
                        kb.at(ops.inputs[0], b.add(b.mul(o, i64(in_chunk)), i64(offset))), chunk)

    return LayerCode(layer, [Phase("split", outer * len(pieces), body)], kernel="copy")


GATHER_TASK_FLOATS = 256
"""Blocks of fewer floats are copied several to a task (a run of consecutive indices),
so that a gather along an inner axis is not one task per element."""


def lower_gather(layer: Gather, ctx: LoweringContext) -> LayerCode:
    """One block copy per (outer index, index): the block from the gathered axis on.
    The indices are an int64 array in the weights blob, read at run time."""
    in_shape = ctx.in_shape(layer)
    outer, in_chunk = _blocks(in_shape, layer.axis)
    inner = math.prod(in_shape[layer.axis + 1:])
    flat = layer.indices.reshape(-1)
    count = flat.size
    per_task = min(count, max(1, GATHER_TASK_FLOATS // inner))
    runs = -(-count // per_task)
    offset = ctx.blob.add(flat.astype(np.int64))

    def body(kb: KernelBuilder, ops: Operands, task: ir.Value) -> None:
        b = kb.b
        o = b.sdiv(task, i64(runs))
        first = b.mul(b.srem(task, i64(runs)), i64(per_task))
        last = b.add(first, i64(per_task))
        last = b.select(b.icmp_signed("<", last, i64(count)), last, i64(count))
        table = ops.weights(kb, offset)
        with kb.loop(first, last, 1, "k") as k:
            index = kb.load(table, k, I64)
            src = b.add(b.mul(o, i64(in_chunk)), b.mul(index, i64(inner)))
            dst = b.mul(b.add(b.mul(o, i64(count)), k), i64(inner))
            copy_floats(kb, kb.at(ops.outputs[0], dst), kb.at(ops.inputs[0], src), inner)

    return LayerCode(layer, [Phase("gather", outer * runs, body)], kernel="copy")


def lower_reshape_copy(layer: Reshape, ctx: LoweringContext) -> LayerCode:
    total = math.prod(ctx.out_shape(layer))

    def body(kb: KernelBuilder, ops: Operands, task: ir.Value) -> None:
        copy_floats(kb, ops.outputs[0], ops.inputs[0], total)

    return LayerCode(layer, [Phase("copy", 1, body)], kernel="copy")


def lower_pad(layer: Pad, ctx: LoweringContext) -> LayerCode:
    in_shape = ctx.in_shape(layer)
    out_shape = ctx.out_shape(layer)
    rank = len(in_shape)
    in_strides = row_major_strides(in_shape)
    rows = math.prod(out_shape[:-1])
    inner = out_shape[-1]
    value = float(layer.value)

    def source(kb: KernelBuilder, i: ir.Value, axis: int) -> tuple[ir.Value, ir.Value]:
        """Source index along ``axis`` for output index ``i``, and whether it exists."""
        b = kb.b
        lo, size = layer.pads[axis], in_shape[axis]
        j = b.sub(i, i64(lo))
        inside = b.and_(b.icmp_signed(">=", j, i64(0)), b.icmp_signed("<", j, i64(size)))
        if layer.mode == "constant":
            return b.select(inside, j, i64(0)), inside
        if layer.mode == "edge":
            j = b.select(b.icmp_signed("<", j, i64(0)), i64(0), j)
            return b.select(b.icmp_signed(">=", j, i64(size)), i64(size - 1), j), ir.Constant(
                I1, 1)
        # reflect (the edge itself is not repeated)
        j = b.select(b.icmp_signed("<", j, i64(0)), b.neg(j), j)
        j = b.select(b.icmp_signed(">=", j, i64(size)), b.sub(i64(2 * (size - 1)), j), j)
        return j, ir.Constant(I1, 1)

    def body(kb: KernelBuilder, ops: Operands, task: ir.Value) -> None:
        b = kb.b
        row = task
        base: ir.Value = i64(0)
        valid: ir.Value = ir.Constant(I1, 1)
        for axis in reversed(range(rank - 1)):
            idx = b.srem(row, i64(out_shape[axis])) if axis else row
            row = b.sdiv(row, i64(out_shape[axis]))
            j, ok = source(kb, idx, axis)
            base = b.add(base, b.mul(j, i64(in_strides[axis])))
            valid = b.and_(valid, ok)
        with kb.loop(0, inner, 1, "e") as e:
            j, ok = source(kb, e, rank - 1)
            ok = b.and_(valid, ok)
            v = kb.load(ops.inputs[0], b.select(ok, b.add(base, j), i64(0)))
            kb.store(b.select(ok, v, kb.const(v.type, value)), ops.outputs[0],
                     b.add(b.mul(task, i64(inner)), e))

    return LayerCode(layer, [Phase("pad", rows, body)], kernel="copy")
