"""Pooling, global pooling and softmax: one task per plane or row.

The window loops are unrolled (the kernel size is static). Pooling splits each plane
into its interior, where every tap of every output is inside the image, and the
border: the interior is vectorised along output columns for strides 1 and 2 (stride
2 takes every other lane of two loads) with no bounds checks at all; the border, and
other strides, run scalar code that checks each tap with selects, so there are no
data-dependent branches for LLVM to trip over. (ResNet-18's 3x3/2 max pool took
0.147 ms scalar on Zen 5, 4% of the whole pruned model.) A max pool whose outputs are
mostly border (a detector's SPP: 5x5 windows on a 5x5 map) instead copies each plane
into a -inf padded stack buffer and runs vectors over every output row.
"""

from __future__ import annotations

import math

from llvmlite import ir

from patcc.backends.llvm.irutil import F32, KernelBuilder, f32, i64
from patcc.backends.llvm.lowering import (
    LayerCode,
    LoweringContext,
    Operands,
    Phase,
    PhaseBody,
)
from patcc.backends.llvm.planes import inside, strided_load
from patcc.ir.layers import GlobalPool, Pool, Reduce, Softmax


def _in_range(kb: KernelBuilder, v: ir.Value, lo: int, hi: int) -> ir.Value:
    b = kb.b
    return b.and_(b.icmp_signed(">=", v, i64(lo)), b.icmp_signed("<", v, i64(hi)))


def _interior(size: int, out: int, kernel: int, stride: int, dilation: int, pad: int
              ) -> tuple[int, int]:
    """Outputs [lo, hi) whose every tap lies inside an axis of ``size``."""
    lo, hi = inside(size, stride, -pad, out)
    last_lo, last_hi = inside(size, stride, (kernel - 1) * dilation - pad, out)
    lo, hi = max(lo, last_lo), min(hi, last_hi)
    return (lo, hi) if lo < hi else (0, 0)


PADDED_MAX_FLOATS = 8192
"""Largest padded plane (floats, on the task's stack) the padded max-pool path uses."""


def lower_pool(layer: Pool, ctx: LoweringContext) -> LayerCode:
    n, c, h, w = ctx.in_shape(layer)
    _, _, ho, wo = ctx.out_shape(layer)
    (kh, kw), (sh, sw), (dh, dw) = layer.kernel, layer.strides, layer.dilations
    pt, pl, pb, pr = layer.pads
    is_max = layer.kind == "max"
    rows = _interior(h, ho, kh, sh, dh, pt)
    cols = _interior(w, wo, kw, sw, dw, pl) if sw <= 2 else (0, 0)
    padded = _padded_max_pool(layer, (h, w), (ho, wo), ctx.target.vector_width)
    if padded is not None and 2 * (rows[1] - rows[0]) * (cols[1] - cols[0]) < ho * wo:
        return LayerCode(layer, [Phase("pool", n * c, padded)], kernel="pool",
                         notes={"block": "padded"})

    def point(kb: KernelBuilder, src: ir.Value, dst: ir.Value, oh: ir.Value,
              ow: ir.Value) -> None:
        """One output, each tap checked against the image."""
        b = kb.b
        y0 = b.sub(b.mul(oh, i64(sh)), i64(pt))
        x0 = b.sub(b.mul(ow, i64(sw)), i64(pl))
        acc: ir.Value = f32(float("-inf")) if is_max else f32(0.0)
        count: ir.Value = f32(0.0)
        for i in range(kh):
            y = b.add(y0, i64(i * dh))
            y_in = _in_range(kb, y, 0, h)
            y_pad = _in_range(kb, y, -pt, h + pb)
            for j in range(kw):
                x = b.add(x0, i64(j * dw))
                ok = b.and_(y_in, _in_range(kb, x, 0, w))
                index = b.add(b.mul(b.select(ok, y, i64(0)), i64(w)),
                              b.select(ok, x, i64(0)))
                v = kb.load(src, index)
                if is_max:
                    acc = b.select(ok, kb.intrinsic("llvm.maximum", F32, [acc, v]), acc)
                else:
                    acc = b.fadd(acc, b.select(ok, v, f32(0.0)))
                    counted = ok if not layer.count_include_pad else b.and_(
                        y_pad, _in_range(kb, x, -pl, w + pr))
                    count = b.fadd(count, b.uitofp(counted, F32))
        result = acc if is_max else b.fdiv(acc, count)
        kb.store(result, dst, b.add(b.mul(oh, i64(wo)), ow))

    def vector(kb: KernelBuilder, src: ir.Value, dst: ir.Value, oh: ir.Value,
               ow: ir.Value, lanes: int) -> None:
        """Outputs ow .. ow+lanes-1 of an interior row, all taps inside the image."""
        b = kb.b
        acc: ir.Value | None = None
        for i in range(kh):
            row = b.mul(b.add(b.mul(oh, i64(sh)), i64(i * dh - pt)), i64(w))
            for j in range(kw):
                x = b.add(b.mul(ow, i64(sw)), i64(j * dw - pl))
                v = strided_load(kb, src, b.add(row, x), lanes, sw)
                acc = v if acc is None else (
                    kb.intrinsic("llvm.maximum", kb.vec, [acc, v]) if is_max else b.fadd(acc, v))
        assert acc is not None
        if not is_max:  # every tap inside: the window's full count, padding or not
            acc = b.fmul(acc, kb.splat(f32(1.0 / (kh * kw))))
        kb.vstore(acc, dst, b.add(b.mul(oh, i64(wo)), ow), lanes)

    def body(kb: KernelBuilder, ops: Operands, task: ir.Value) -> None:
        b = kb.b
        src = kb.at(ops.inputs[0], b.mul(task, i64(h * w)))
        dst = kb.at(ops.outputs[0], b.mul(task, i64(ho * wo)))

        def scalar_rows(lo: int, hi: int) -> None:
            if lo < hi:
                with kb.loop(lo, hi, 1, "oh") as oh, kb.loop(0, wo, 1, "ow") as ow:
                    point(kb, src, dst, oh, ow)

        scalar_rows(0, rows[0])
        lo, hi = cols
        full = (hi - lo) // kb.width * kb.width
        with kb.loop(rows[0], rows[1], 1, "oh") as oh:
            for a, z in ((0, lo), (hi, wo)):
                if a < z:
                    with kb.loop(a, z, 1, "ow") as ow:
                        point(kb, src, dst, oh, ow)
            if full:
                with kb.loop(lo, lo + full, kb.width, "ow") as ow:
                    vector(kb, src, dst, oh, ow, kb.width)
            if hi - lo - full:
                vector(kb, src, dst, oh, i64(lo + full), hi - lo - full)
        scalar_rows(rows[1], ho)

    return LayerCode(layer, [Phase("pool", n * c, body)], kernel="pool")


def _padded_max_pool(layer: Pool, hw: tuple[int, int], out: tuple[int, int],
                     width: int) -> PhaseBody | None:
    """A max pool whose outputs are mostly border (SPP's 5x5 windows on a 5x5 map:
    one interior output of 25) as a copy of the plane into a stack buffer padded with
    -inf, then vectors along every output row with no bounds checks: the checked
    scalar border code cost YOLO-tiny's three SPP pools 50 us each. None where it
    does not apply (average pools, strides over 2, planes over PADDED_MAX_FLOATS)."""
    h, w = hw
    ho, wo = out
    (kh, kw), (sh, sw), (dh, dw) = layer.kernel, layer.strides, layer.dilations
    pt, pl = layer.pads[:2]
    hp = (ho - 1) * sh + (kh - 1) * dh + 1
    wp = (wo - 1) * sw + (kw - 1) * dw + 1
    pitch = -(-(max(wp, pl + w) + width) // width) * width
    if layer.kind != "max" or sw > 2 or hp * pitch > PADDED_MAX_FLOATS:
        return None
    rows_in = [(y, y - pt) for y in range(hp) if 0 <= y - pt < h]

    def body(kb: KernelBuilder, ops: Operands, task: ir.Value) -> None:
        b = kb.b
        with b.goto_entry_block():
            plane = b.alloca(kb.vec, size=i64(hp * pitch // width), name="padded")
            plane.align = 64
        ninf = kb.const(kb.vec, float("-inf"))
        with kb.loop(0, hp * pitch, width, "fill") as i:
            kb.vstore(ninf, plane, i)
        src = kb.at(ops.inputs[0], b.mul(task, i64(h * w)))
        dst = kb.at(ops.outputs[0], b.mul(task, i64(ho * wo)))
        count = max(0, min(w, wp - pl))  # input columns 0..count-1 can be read
        if rows_in and count:
            with kb.loop(rows_in[0][0], rows_in[-1][0] + 1, 1, "y") as y:
                s0 = b.mul(b.sub(y, i64(pt)), i64(w))
                d0 = b.add(b.mul(y, i64(pitch)), i64(pl))
                full = count // width * width
                if full:
                    with kb.loop(0, full, width, "x") as x:
                        kb.vstore(kb.vload(src, b.add(s0, x)), plane, b.add(d0, x))
                if count % width:
                    kb.vstore(kb.vload(src, b.add(s0, i64(full)), count % width), plane,
                              b.add(d0, i64(full)), count % width)
        with kb.loop(0, ho, 1, "oh") as oh:
            for ow0 in range(0, wo, width):
                lanes = min(width, wo - ow0)
                acc: ir.Value | None = None
                for i in range(kh):
                    row = b.mul(b.add(b.mul(oh, i64(sh)), i64(i * dh)), i64(pitch))
                    for j in range(kw):
                        v = strided_load(kb, plane, b.add(row, i64(ow0 * sw + j * dw)),
                                         lanes, sw)
                        acc = v if acc is None else kb.intrinsic("llvm.maximum", kb.vec,
                                                                 [acc, v])
                assert acc is not None
                kb.vstore(acc, dst, b.add(b.mul(oh, i64(wo)), i64(ow0)), lanes)

    return body


def lower_global_pool(layer: GlobalPool, ctx: LoweringContext) -> LayerCode:
    shape = ctx.in_shape(layer)
    planes = shape[0] * shape[1]
    size = math.prod(shape[2:])
    is_max = layer.kind == "max"

    def body(kb: KernelBuilder, ops: Operands, task: ir.Value) -> None:
        b = kb.b
        src = kb.at(ops.inputs[0], b.mul(task, i64(size)))
        slot = kb.entry_alloca(F32, "acc")
        b.store(f32(float("-inf")) if is_max else f32(0.0), slot)
        with kb.loop(0, size, 1, "e") as e:
            v, acc = kb.load(src, e), b.load(slot, typ=F32)
            b.store(kb.intrinsic("llvm.maximum", F32, [acc, v]) if is_max else b.fadd(acc, v),
                    slot)
        acc = b.load(slot, typ=F32)
        kb.store(acc if is_max else b.fdiv(acc, f32(float(size))), ops.outputs[0], task)

    return LayerCode(layer, [Phase("global_pool", planes, body)], kernel="reduce")


def lower_reduce(layer: Reduce, ctx: LoweringContext) -> LayerCode:
    """Task = one output element (outer index, inner index): a scalar loop over the
    reduced length, ``inner`` apart (reductions off the spatial axes are rare and
    small in CNNs; over H and W, ``GlobalPool``)."""
    shape = ctx.in_shape(layer)
    outer = math.prod(shape[:layer.start])
    length = math.prod(shape[layer.start:layer.stop])
    inner = math.prod(shape[layer.stop:])
    kind = layer.kind

    def body(kb: KernelBuilder, ops: Operands, task: ir.Value) -> None:
        b = kb.b
        o, i = b.sdiv(task, i64(inner)), b.srem(task, i64(inner))
        src = kb.at(ops.inputs[0], b.add(b.mul(o, i64(length * inner)), i))
        slot = kb.entry_alloca(F32, "acc")
        start = {"max": float("-inf"), "min": float("inf")}.get(kind, 0.0)
        b.store(f32(start), slot)
        with kb.loop(0, length, 1, "e") as e:
            v, acc = kb.load(src, b.mul(e, i64(inner))), b.load(slot, typ=F32)
            if kind == "max":
                acc = kb.intrinsic("llvm.maximum", F32, [acc, v])
            elif kind == "min":
                acc = kb.intrinsic("llvm.minimum", F32, [acc, v])
            else:
                acc = kb.fma(v, v, acc) if kind == "l2" else b.fadd(acc, v)
            b.store(acc, slot)
        acc = b.load(slot, typ=F32)
        if kind == "mean":
            acc = b.fdiv(acc, f32(float(length)))
        elif kind == "l2":
            acc = kb.intrinsic("llvm.sqrt", F32, [acc])
        kb.store(acc, ops.outputs[0], task)

    return LayerCode(layer, [Phase("reduce", outer * inner, body)], kernel="reduce")


def lower_softmax(layer: Softmax, ctx: LoweringContext) -> LayerCode:
    """Softmax with explicit vectors: along the axis when it is innermost, else across
    the inner positions (contiguous there). Besides speed, explicit vectors keep these
    loops away from LLVM's loop vectorizer, whose cost model asserts on some scalar
    forms of them (exp reductions on Zen 4/5)."""
    shape = ctx.in_shape(layer)
    outer = math.prod(shape[:layer.axis])
    length = shape[layer.axis]
    inner = math.prod(shape[layer.axis + 1:])
    width = ctx.target.vector_width
    if inner == 1:
        return LayerCode(layer, [Phase("softmax", outer,
                                       _softmax_rows(length, width, layer.log))],
                         kernel="reduce")
    blocks = -(-inner // width)
    return LayerCode(layer, [Phase("softmax", outer * blocks,
                                   _softmax_columns(length, inner, width, layer.log))],
                     kernel="reduce")


def _softmax_rows(length: int, width: int, log: bool) -> PhaseBody:
    """Task = one contiguous row; lanes run along the row, tails are masked. With
    ``log``, the exponentials are only summed, and the row is ``x - (max + log sum)``."""
    full, tail = length // width * width, length % width

    def body(kb: KernelBuilder, ops: Operands, task: ir.Value) -> None:
        b = kb.b
        base = b.mul(task, i64(length))
        src, dst = kb.at(ops.inputs[0], base), kb.at(ops.outputs[0], base)
        ninf = float("-inf")
        slot = kb.entry_alloca(kb.vec, "acc")
        b.store(kb.const(kb.vec, ninf), slot)
        with kb.loop(0, full, width, "e") as e:
            b.store(kb.intrinsic("llvm.maxnum", kb.vec, [b.load(slot, typ=kb.vec),
                                                         kb.vload(src, e)]), slot)
        acc = b.load(slot, typ=kb.vec)
        if tail:
            acc = kb.intrinsic("llvm.maxnum", kb.vec, [acc, kb.vload(src, full, tail, ninf)])
        peak = kb.splat(kb.reduce("fmax", acc))
        b.store(kb.const(kb.vec, 0.0), slot)
        with kb.loop(0, full, width, "e") as e:
            ex = kb.exp(b.fsub(kb.vload(src, e), peak))
            if not log:
                kb.vstore(ex, dst, e)
            b.store(b.fadd(b.load(slot, typ=kb.vec), ex), slot)
        total = b.load(slot, typ=kb.vec)
        if tail:
            ex = kb.exp(b.fsub(kb.vload(src, full, tail), peak))
            if not log:
                kb.vstore(ex, dst, full, tail)
            total = b.fadd(total, b.select(kb.mask(tail), ex, kb.const(kb.vec, 0.0)))
        if log:
            shift = b.fadd(peak, kb.splat(kb.intrinsic("llvm.log", F32,
                                                       [kb.reduce("fadd", total)])))
            with kb.loop(0, full, width, "e") as e:
                kb.vstore(b.fsub(kb.vload(src, e), shift), dst, e)
            if tail:
                kb.vstore(b.fsub(kb.vload(src, full, tail), shift), dst, full, tail)
            return
        scale = kb.splat(b.fdiv(f32(1.0), kb.reduce("fadd", total)))
        with kb.loop(0, full, width, "e") as e:
            kb.vstore(b.fmul(kb.vload(dst, e), scale), dst, e)
        if tail:
            kb.vstore(b.fmul(kb.vload(dst, full, tail), scale), dst, full, tail)

    return body


def _softmax_columns(length: int, inner: int, width: int, log: bool) -> PhaseBody:
    """Task = (outer index, block of ``width`` inner positions): lanes across ``inner``;
    ``log`` as in ``_softmax_rows``."""
    blocks = -(-inner // width)

    def body(kb: KernelBuilder, ops: Operands, task: ir.Value) -> None:
        b = kb.b
        o = b.sdiv(task, i64(blocks))
        j0 = b.mul(b.srem(task, i64(blocks)), i64(width))
        lanes_left = b.sub(i64(inner), j0)
        base = b.add(b.mul(o, i64(length * inner)), j0)
        src, dst = kb.at(ops.inputs[0], base), kb.at(ops.outputs[0], base)
        tail = inner % width
        full_block = b.icmp_signed(">=", lanes_left, i64(width))

        def run(lanes: int) -> None:
            slot = kb.entry_alloca(kb.vec, "acc")
            b.store(kb.const(kb.vec, float("-inf")), slot)
            with kb.loop(0, length, 1, "e") as e:
                x = kb.vload(src, b.mul(e, i64(inner)), lanes, float("-inf"))
                b.store(kb.intrinsic("llvm.maxnum", kb.vec, [b.load(slot, typ=kb.vec), x]),
                        slot)
            peak = b.load(slot, typ=kb.vec)
            b.store(kb.const(kb.vec, 0.0), slot)
            with kb.loop(0, length, 1, "e") as e:
                at = b.mul(e, i64(inner))
                ex = kb.exp(b.fsub(kb.vload(src, at, lanes), peak))
                if not log:
                    kb.vstore(ex, dst, at, lanes)
                b.store(b.fadd(b.load(slot, typ=kb.vec), ex), slot)
            if log:
                shift = b.fadd(peak, kb.intrinsic("llvm.log", kb.vec,
                                                  [b.load(slot, typ=kb.vec)]))
                with kb.loop(0, length, 1, "e") as e:
                    at = b.mul(e, i64(inner))
                    kb.vstore(b.fsub(kb.vload(src, at, lanes), shift), dst, at, lanes)
                return
            scale = b.fdiv(kb.const(kb.vec, 1.0), b.load(slot, typ=kb.vec))
            with kb.loop(0, length, 1, "e") as e:
                at = b.mul(e, i64(inner))
                kb.vstore(b.fmul(kb.vload(dst, at, lanes), scale), dst, at, lanes)

        if tail == 0:
            run(width)
            return
        with b.if_else(full_block) as (whole, partial):
            with whole:
                run(width)
            with partial:
                run(tail)

    return body
