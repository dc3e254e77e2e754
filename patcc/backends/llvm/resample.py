"""Resize: every output row (all axes but the last fixed) is a weighted sum of input
rows, and every element of a row a weighted sum along the last axis.

The per-axis window tables of ``patcc.ir.resample`` go into the weight blob as
element offsets (int32, pre-multiplied by the axis's input stride) and float32
weights. A row task visits the combinations of its outer axes' taps (one for
nearest, two per axis for linear); the first writes the row and the others add to
it while it is still in L1; when the last axis is resized too, the rows are first
blended into one input-width row on the stack (contiguous, vectorised) and the last
axis's windows read from it. Along the last axis three loops cover what models use:
a contiguous read (the axis is not resized), a repeat (nearest up-sampling by an
integer factor s: a vector of inputs spread by shuffles into s vectors of outputs),
and the general gather over the axis's taps.
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir

from patcc.backends.llvm.elementwise import row_major_strides
from patcc.backends.llvm.irutil import F32, I32, KernelBuilder, i64
from patcc.backends.llvm.lowering import LayerCode, LoweringContext, Operands, Phase
from patcc.ir.layers import Resize
from patcc.ir.resample import AxisTaps

UNROLL_TAPS = 8
"""Last-axis windows up to this many taps are unrolled; wider ones (antialiased
down-sampling) loop."""

MAX_BLEND = 16
"""Outer tap combinations (rows) blended into one row on the stack first: linear is 2
(4 with a resized channel axis), cubic 4."""

MAX_ROW = 16384
"""The widest input row blended on a worker's stack (64 KiB)."""


class _Table:
    """One axis's window table in the blob: offsets, weights, outside flags."""

    def __init__(self, ctx: LoweringContext, taps: AxisTaps, stride: int) -> None:
        self.taps = taps.taps
        self.offsets = ctx.blob.add((taps.index * stride).astype(np.int32))
        self.weights = ctx.blob.add(taps.weight.astype(np.float32))
        self.unit = bool(np.all(taps.weight == 1.0))
        self.outside = (None if taps.outside is None
                        else ctx.blob.add(taps.outside.astype(np.int32)))

    def offset(self, kb: KernelBuilder, ops: Operands, coord: ir.Value, tap: ir.Value | int
               ) -> ir.Value:
        at = kb.b.add(kb.b.mul(coord, i64(self.taps)), i64(tap) if isinstance(tap, int) else tap)
        return kb.b.sext(kb.load(ops.weights(kb, self.offsets), at, I32), ir.IntType(64))

    def weight(self, kb: KernelBuilder, ops: Operands, coord: ir.Value, tap: ir.Value | int
               ) -> ir.Value:
        at = kb.b.add(kb.b.mul(coord, i64(self.taps)), i64(tap) if isinstance(tap, int) else tap)
        return kb.load(ops.weights(kb, self.weights), at)

    def is_outside(self, kb: KernelBuilder, ops: Operands, coord: ir.Value) -> ir.Value:
        assert self.outside is not None
        flag = kb.load(ops.weights(kb, self.outside), coord, I32)
        return kb.b.icmp_signed("!=", flag, ir.Constant(I32, 0))


def lower_resize(layer: Resize, ctx: LoweringContext) -> LayerCode:
    in_shape, out_shape = ctx.in_shape(layer), ctx.out_shape(layer)
    in_strides = row_major_strides(in_shape)
    all_taps = layer.axis_taps(in_shape)
    tables = [None if t is None else _Table(ctx, t, s)
              for t, s in zip(all_taps, in_strides, strict=True)]
    outer, last = tables[:-1], tables[-1]
    repeat = all_taps[-1].repeat_factor() if all_taps[-1] is not None else 0
    width, in_width = out_shape[-1], in_shape[-1]
    rows = math.prod(out_shape[:-1])
    resized = [(a, t) for a, t in enumerate(outer) if t is not None]
    combos = math.prod(t.taps for _, t in resized)
    extrapolation = float(layer.extrapolation_value)
    tasks = max(1, min(rows, 256, -(-math.prod(out_shape) // 2048)))
    per_task = -(-rows // tasks)

    blend = last is not None and 1 < combos <= MAX_BLEND and in_width <= MAX_ROW

    def last_axis(kb: KernelBuilder, ops: Operands, base: ir.Value, scale: ir.Value | None,
                  row_out: ir.Value, first: ir.Value | None, src: ir.Value | None = None
                  ) -> None:
        """out[row_out + x] (=|+=) scale * (the row at offset ``base`` of ``src``, the
        input by default)[window x]."""
        b = kb.b
        src = ops.inputs[0] if src is None else src

        def put(index: ir.Value, value: ir.Value) -> None:
            if scale is not None:
                value = b.fmul(value, scale)
            at = b.add(row_out, index)
            if first is not None:
                old = kb.load(ops.outputs[0], at)
                value = b.fadd(b.select(first, kb.const(value.type, 0.0), old), value)
            kb.store(value, ops.outputs[0], at)

        if last is None:
            with kb.loop(0, width, 1, "x") as x:
                put(x, kb.load(src, b.add(base, x)))
        elif repeat:
            full = min(width // repeat, in_width)
            done = 0
            if scale is None and first is None:
                # a vector of inputs becomes `repeat` vectors of outputs, each lane's
                # input spread by a shuffle (LLVM does not vectorise the scalar form)
                lanes = kb.width
                done = full // lanes * lanes
                spread = [ir.Constant(ir.VectorType(I32, lanes),
                                      [(k * lanes + lane) // repeat for lane in range(lanes)])
                          for k in range(repeat)]
                with kb.loop(0, done, lanes, "j") as j:
                    v = kb.vload(src, b.add(base, j))
                    at = b.add(row_out, b.mul(j, i64(repeat)))
                    for k in range(repeat):
                        kb.vstore(b.shuffle_vector(v, v, spread[k]), ops.outputs[0],
                                  b.add(at, i64(k * lanes)))
            with kb.loop(done, full, 1, "j") as j:
                v = kb.load(src, b.add(base, j))
                for k in range(repeat):
                    put(b.add(b.mul(j, i64(repeat)), i64(k)), v)
            with kb.loop(full * repeat, width, 1, "x") as x:
                put(x, kb.load(src, b.add(base, b.sdiv(x, i64(repeat)))))
        else:
            with kb.loop(0, width, 1, "x") as x:
                def tap(t: ir.Value | int) -> ir.Value:
                    v = kb.load(src, b.add(base, last.offset(kb, ops, x, t)))
                    return v if last.unit else b.fmul(v, last.weight(kb, ops, x, t))

                if last.taps <= UNROLL_TAPS:
                    total = tap(0)
                    for t in range(1, last.taps):
                        total = b.fadd(total, tap(t))
                else:
                    acc = kb.entry_alloca(F32, "acc")
                    b.store(kb.const(F32, 0.0), acc)
                    with kb.loop(0, last.taps, 1, "t") as t:
                        b.store(b.fadd(b.load(acc), tap(t)), acc)
                    total = b.load(acc)
                put(x, total)

    def body(kb: KernelBuilder, ops: Operands, task: ir.Value) -> None:
        b = kb.b
        lo = b.mul(task, i64(per_task))
        hi = b.add(lo, i64(per_task))
        hi = b.select(b.icmp_signed("<", hi, i64(rows)), hi, i64(rows))
        with kb.loop(lo, hi, 1, "row") as row:
            coords: list[ir.Value] = [i64(0)] * (len(out_shape) - 1)
            rest = row
            for a in reversed(range(len(out_shape) - 1)):
                coords[a] = b.srem(rest, i64(out_shape[a])) if a else rest
                rest = b.sdiv(rest, i64(out_shape[a]))
            base: ir.Value = i64(0)
            for a, t in enumerate(outer):
                if t is None:
                    base = b.add(base, b.mul(coords[a], i64(in_strides[a])))
            row_out = b.mul(row, i64(width))
            flagged = [(a, t) for a, t in resized if t.outside is not None]
            if flagged:
                out_of_roi = ir.Constant(ir.IntType(1), 0)
                for a, t in flagged:
                    out_of_roi = b.or_(out_of_roi, t.is_outside(kb, ops, coords[a]))
                inside_block = b.append_basic_block("inside")
                fill_block = b.append_basic_block("fill")
                done_block = b.append_basic_block("row_done")
                b.cbranch(out_of_roi, fill_block, inside_block)
                b.position_at_end(fill_block)
                with kb.loop(0, width, 1, "x") as x:
                    kb.store(kb.const(F32, extrapolation), ops.outputs[0],
                             b.add(row_out, x))
                b.branch(done_block)
                b.position_at_end(inside_block)
            if combos == 1:
                offset, scale = base, None
                for a, t in resized:
                    offset = b.add(offset, t.offset(kb, ops, coords[a], 0))
                    if not t.unit:
                        w = t.weight(kb, ops, coords[a], 0)
                        scale = w if scale is None else b.fmul(scale, w)
                last_axis(kb, ops, offset, scale, row_out, None)
            elif blend:
                # the outer windows' rows blended into one input-width row (contiguous,
                # vectorised), then the last axis's window read from it in L1
                terms = []
                for combo in range(combos):
                    offset, scale, rest = base, None, combo
                    for a, t in reversed(resized):
                        offset = b.add(offset, t.offset(kb, ops, coords[a], rest % t.taps))
                        w = t.weight(kb, ops, coords[a], rest % t.taps)
                        scale = w if scale is None else b.fmul(scale, w)
                        rest //= t.taps
                    terms.append((offset, scale))
                with b.goto_entry_block():
                    row = b.alloca(F32, size=i64(in_width), name="row")
                with kb.loop(0, in_width, 1, "j") as j:
                    total = None
                    for offset, scale in terms:
                        v = b.fmul(kb.load(ops.inputs[0], b.add(offset, j)), scale)
                        total = v if total is None else b.fadd(total, v)
                    kb.store(total, row, j)
                last_axis(kb, ops, i64(0), None, row_out, None, src=row)
            else:
                with kb.loop(0, combos, 1, "combo") as combo:
                    offset, scale, rest = base, None, combo
                    for a, t in reversed(resized):
                        which = b.srem(rest, i64(t.taps))
                        rest = b.sdiv(rest, i64(t.taps))
                        offset = b.add(offset, t.offset(kb, ops, coords[a], which))
                        w = t.weight(kb, ops, coords[a], which)
                        scale = w if scale is None else b.fmul(scale, w)
                    first = b.icmp_signed("==", combo, i64(0))
                    last_axis(kb, ops, offset, scale, row_out, first)
            if last is not None and last.outside is not None:
                with kb.loop(0, width, 1, "x") as x:
                    with b.if_then(last.is_outside(kb, ops, x)):
                        kb.store(kb.const(F32, extrapolation), ops.outputs[0],
                                 b.add(row_out, x))
            if flagged:
                b.branch(done_block)
                b.position_at_end(done_block)

    kernel = "resize" if not repeat or resized and combos > 1 else "repeat"
    return LayerCode(layer, [Phase("resize", tasks, body)], kernel=kernel)
