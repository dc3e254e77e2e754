"""Pooling, global pooling and softmax: one task per plane or row, scalar windows.

These layers are a small share of a CNN's time; the window loops are unrolled (the
kernel size is static) and bounds are checked per tap with selects, so the code has
no data-dependent branches for LLVM to trip over.
"""

from __future__ import annotations

import math

from llvmlite import ir

from patcc.backends.llvm.irutil import F32, KernelBuilder, f32, i64
from patcc.backends.llvm.lowering import LayerCode, LoweringContext, Operands, Phase
from patcc.ir.layers import GlobalPool, Pool, Softmax


def _in_range(kb: KernelBuilder, v: ir.Value, lo: int, hi: int) -> ir.Value:
    b = kb.b
    return b.and_(b.icmp_signed(">=", v, i64(lo)), b.icmp_signed("<", v, i64(hi)))


def lower_pool(layer: Pool, ctx: LoweringContext) -> LayerCode:
    n, c, h, w = ctx.in_shape(layer)
    _, _, ho, wo = ctx.out_shape(layer)
    (kh, kw), (sh, sw), (dh, dw) = layer.kernel, layer.strides, layer.dilations
    pt, pl, pb, pr = layer.pads
    is_max = layer.kind == "max"

    def body(kb: KernelBuilder, ops: Operands, task: ir.Value) -> None:
        b = kb.b
        src = kb.at(ops.inputs[0], b.mul(task, i64(h * w)))
        dst = kb.at(ops.outputs[0], b.mul(task, i64(ho * wo)))
        init = f32(float("-inf")) if is_max else f32(0.0)
        with kb.loop(0, ho, 1, "oh") as oh, kb.loop(0, wo, 1, "ow") as ow:
            y0 = b.sub(b.mul(oh, i64(sh)), i64(pt))
            x0 = b.sub(b.mul(ow, i64(sw)), i64(pl))
            acc: ir.Value = init
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

    return LayerCode(layer, [Phase("pool", n * c, body)], kernel="pool")


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


def lower_softmax(layer: Softmax, ctx: LoweringContext) -> LayerCode:
    shape = ctx.in_shape(layer)
    outer = math.prod(shape[:layer.axis])
    length = shape[layer.axis]
    inner = math.prod(shape[layer.axis + 1:])

    def body(kb: KernelBuilder, ops: Operands, task: ir.Value) -> None:
        b = kb.b
        base = b.add(b.mul(b.sdiv(task, i64(inner)), i64(length * inner)),
                     b.srem(task, i64(inner)))
        src, dst = ops.inputs[0], ops.outputs[0]
        top = kb.entry_alloca(F32, "max")
        total = kb.entry_alloca(F32, "sum")
        b.store(f32(float("-inf")), top)
        b.store(f32(0.0), total)

        def at(e: ir.Value) -> ir.Value:
            return b.add(base, b.mul(e, i64(inner)))

        with kb.loop(0, length, 1, "e") as e:
            b.store(kb.intrinsic("llvm.maxnum", F32, [b.load(top, typ=F32), kb.load(src, at(e))]),
                    top)
        peak = b.load(top, typ=F32)
        with kb.loop(0, length, 1, "e") as e:
            ex = kb.intrinsic("llvm.exp", F32, [b.fsub(kb.load(src, at(e)), peak)])
            kb.store(ex, dst, at(e))
            b.store(b.fadd(b.load(total, typ=F32), ex), total)
        scale = b.fdiv(f32(1.0), b.load(total, typ=F32))
        with kb.loop(0, length, 1, "e") as e:
            kb.store(b.fmul(kb.load(dst, at(e)), scale), dst, at(e))

    return LayerCode(layer, [Phase("softmax", outer * inner, body)], kernel="reduce")
