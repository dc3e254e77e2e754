"""Convolution and dense layers: kernel choice and lowering.

- ``pattern``: a pattern-style conv runs the direct sparse kernel over compressed
  weights (``direct.py``): only kept kernels and kept taps, one loop body per pattern.
- ``depthwise``: a dense depthwise conv runs the same direct kernel with one tap set
  (the full kernel window).
- ``gemm``: any other conv is a matrix product per group, Y[O, P] = W[O, K] X[K, P];
  a 1x1 stride-1 unpadded conv reads its input as X directly, others go through an
  im2col copy into scratch memory.
- Dense layers are the same matrix product with the roles of A and B swapped.
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir

from patcc.backends.llvm.direct import lower_direct_conv
from patcc.backends.llvm.gemm import GemmSpec, emit_gemm, gemm_tiling, pack_rows
from patcc.backends.llvm.irutil import KernelBuilder, i64
from patcc.backends.llvm.lowering import (
    LayerCode,
    LoweringContext,
    Operands,
    Phase,
    PhaseBody,
)
from patcc.ir.layers import Conv, Dense


def lower_conv(layer: Conv, ctx: LoweringContext) -> LayerCode:
    """Choose and lower the kernel for one convolution."""
    if layer.pattern is not None:
        return lower_direct_conv(layer, ctx, kernel="pattern")
    if layer.is_depthwise:
        return lower_direct_conv(layer, ctx, kernel="depthwise")
    return _lower_gemm_conv(layer, ctx)


def _split_task(kb: KernelBuilder, task: ir.Value, *sizes: int) -> list[ir.Value]:
    """Decode a task index into mixed-radix digits (most significant first)."""
    digits = []
    for size in reversed(sizes):
        digits.append(kb.b.srem(task, i64(size)))
        task = kb.b.sdiv(task, i64(size))
    return digits[::-1]


def _lower_gemm_conv(layer: Conv, ctx: LoweringContext) -> LayerCode:
    target = ctx.target
    n, c, h, w = ctx.in_shape(layer)
    _, o, ho, wo = ctx.out_shape(layer)
    g = layer.groups
    cg, og = c // g, o // g
    kh, kw = layer.kernel_shape
    k = cg * kh * kw
    p = ho * wo
    mr, nr = target.gemm_block
    packed = [ctx.blob.add(pack_rows(layer.weight[gi * og:(gi + 1) * og].reshape(og, k), mr))
              for gi in range(g)]
    group_stride = (packed[1] - packed[0]) if g > 1 else 0
    if g > 1 and any(b - a != group_stride for a, b in zip(packed, packed[1:], strict=False)):
        raise AssertionError("packed groups are not evenly spaced")
    bias_off = ctx.blob.add(layer.bias)
    direct = kh == kw == 1 and layer.strides == (1, 1) and not any(layer.pads)
    tiling = gemm_tiling(og, p, mr, nr, target.vector_width,
                         min_tasks=max(1, 16 // (n * g)))
    phases: list[Phase] = []
    scratch = 0
    if not direct:
        scratch = n * g * k * p * 4
        phases.append(Phase("im2col", n * c, _im2col_body(layer, (n, c, h, w), (ho, wo))))

    def body(kb: KernelBuilder, ops: Operands, task: ir.Value) -> None:
        b = kb.b
        ni, gi, ti = _split_task(kb, task, n, g, tiling.tasks)
        ng = b.add(b.mul(ni, i64(g)), gi)
        if direct:
            b_base = b.mul(b.add(b.mul(ni, i64(c)), b.mul(gi, i64(cg))), i64(h * w))
            b_ptr = ops.inputs[0]
        else:
            b_base = b.mul(ng, i64(k * p))
            b_ptr = ops.scratch
        c_base = b.mul(b.add(b.mul(ni, i64(o)), b.mul(gi, i64(og))), i64(p))
        a_byte = b.add(i64(packed[0]), b.mul(gi, i64(group_stride)))
        spec = GemmSpec(
            m=og, n=p, k=k,
            a=lambda kb_: kb_.b.gep(ops.blob, [a_byte], source_etype=ir.IntType(8)),
            b=lambda kb_: kb_.at(b_ptr, b_base),
            c=lambda kb_: kb_.at(ops.outputs[0], c_base),
            ldb=p, ldc=p, a_packed=True,
            bias=lambda kb_: kb_.at(ops.weights(kb_, bias_off), b.mul(gi, i64(og))),
            bias_per_row=True, activation=layer.activation,
            residual=(lambda kb_: kb_.at(ops.inputs[1], c_base)) if len(layer.inputs) > 1
            else None,
        )
        emit_gemm(kb, spec, tiling, ti)

    phases.append(Phase("gemm", n * g * tiling.tasks, body))
    return LayerCode(layer, phases, kernel="gemm" + ("" if direct else "+im2col"),
                     scratch_bytes=scratch,
                     notes={"block": f"{mr}x{nr}v", "tasks": n * g * tiling.tasks})


def _im2col_body(layer: Conv, in_shape: tuple[int, int, int, int],
                 out_hw: tuple[int, int]) -> PhaseBody:
    """Rows (c, i, j) of X[K, P] for task (n, c): zero where the window is in the pad."""
    n, c, h, w = in_shape
    ho, wo = out_hw
    kh, kw = layer.kernel_shape
    sh, sw = layer.strides
    dh, dw = layer.dilations
    pt, pl = layer.pads[0], layer.pads[1]
    g = layer.groups
    cg = c // g
    k = cg * kh * kw
    p = ho * wo

    def body(kb: KernelBuilder, ops: Operands, task: ir.Value) -> None:
        b = kb.b
        ni, ci = _split_task(kb, task, n, c)
        gi = b.sdiv(ci, i64(cg))
        cl = b.srem(ci, i64(cg))
        src = kb.at(ops.inputs[0], b.mul(b.add(b.mul(ni, i64(c)), ci), i64(h * w)))
        dst_base = b.add(b.mul(b.add(b.mul(ni, i64(g)), gi), i64(k * p)),
                         b.mul(cl, i64(kh * kw * p)))
        zero = kb.const(kb.vec.element, 0.0)
        for i in range(kh):
            for j in range(kw):
                row = b.add(dst_base, i64((i * kw + j) * p))
                with kb.loop(0, ho, 1, "oh") as oh:
                    y = b.add(b.mul(oh, i64(sh)), i64(i * dh - pt))
                    y_ok = b.and_(b.icmp_signed(">=", y, i64(0)), b.icmp_signed("<", y, i64(h)))
                    y_safe = b.select(y_ok, y, i64(0))
                    line = b.add(row, b.mul(oh, i64(wo)))
                    with kb.loop(0, wo, 1, "ow") as ow:
                        x = b.add(b.mul(ow, i64(sw)), i64(j * dw - pl))
                        ok = b.and_(y_ok, b.and_(b.icmp_signed(">=", x, i64(0)),
                                                 b.icmp_signed("<", x, i64(w))))
                        x_safe = b.select(ok, x, i64(0))
                        v = kb.load(src, b.add(b.mul(y_safe, i64(w)), x_safe))
                        kb.store(b.select(ok, v, zero), ops.scratch, b.add(line, ow))
    return body


def lower_dense(layer: Dense, ctx: LoweringContext) -> LayerCode:
    """y = x @ W.T + b on the last axis: A = x (runtime rows), B = W.T packed (K, N)."""
    target = ctx.target
    shape = ctx.in_shape(layer)
    n_out, k = layer.weight.shape
    m = math.prod(shape[:-1])
    b_off = ctx.blob.add(np.ascontiguousarray(layer.weight.T))
    bias_off = ctx.blob.add(layer.bias)
    mr, nr = target.gemm_block
    tiling = gemm_tiling(m, n_out, mr, nr, target.vector_width)

    def body(kb: KernelBuilder, ops: Operands, task: ir.Value) -> None:
        spec = GemmSpec(
            m=m, n=n_out, k=k,
            a=lambda kb_: ops.inputs[0],
            b=lambda kb_: ops.weights(kb_, b_off),
            c=lambda kb_: ops.outputs[0],
            ldb=n_out, ldc=n_out, a_packed=False, lda=k,
            bias=lambda kb_: ops.weights(kb_, bias_off), bias_per_row=False,
            activation=layer.activation,
        )
        emit_gemm(kb, spec, tiling, task)

    return LayerCode(layer, [Phase("gemm", tiling.tasks, body)], kernel="gemm",
                     notes={"block": f"{mr}x{nr}v", "tasks": tiling.tasks})
