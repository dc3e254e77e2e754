"""Col2Im (the second half of a strided ConvTranspose): a gather over kernel taps.

Each output pixel sums the tap columns whose strided position lands on it, so there
is no scatter and no zero-initialised accumulator image. Which taps land on a pixel
depends only on its stride phase: output row ``oy`` with ``oy + pt = a + sh*u`` is
reached by every ``ky`` with ``(a - ky*dh) % sh == 0``, from input row
``u + (a - ky*dh) // sh`` -- a static tap list per row phase ``a``. Columns alike:
output column ``ox = r + sw*j`` of column phase ``r`` reads input column ``j + q`` for
each of its phase's taps, so one vector of ``j`` per phase reads every input column
contiguously, and ``sw`` such vectors interleave into ``sw*V`` contiguous outputs
(beyond 4 phases, each lane is stored on its own).

A task is one (image, channel) plane, one row phase and, where planes are few, one
block of its rows. Rows and columns whose every tap is inside the input (the
interior) run that vector code with no checks; the few border rows and columns, where
a tap may fall outside, run scalar code that checks each tap with selects. Strides
above 8 (FCN-style upsampling by 16 or 32) and kernels whose chunk would unroll more
than 64 loads run the checked code everywhere: correct, bounded code, not fast.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from llvmlite import ir

from patcc.backends.llvm.irutil import F32, I32, KernelBuilder, f32, i32, i64, prefix_mask
from patcc.backends.llvm.lowering import LayerCode, LoweringContext, Operands, Phase
from patcc.backends.llvm.planes import inside
from patcc.ir.layers import Col2Im

MIN_TASKS = 32
"""Planes times row phases below this split each phase's rows into blocks, so that a
ConvTranspose with few channels still spreads over the threads."""

MAX_PHASES = 8
"""The most stride phases per axis given their own code; a larger stride (FCN-style
upsampling by 16 or 32) runs the checked scalar code everywhere."""

INTERLEAVED_PHASES = 4
"""Up to this many column phases interleave into one store of phases x V outputs;
more store each lane on its own."""

MAX_UNROLLED_LOADS = 64
"""The most vector loads one chunk of output may unroll (row taps x column taps of
all phases); a kernel with more runs the checked scalar code."""


@dataclass(frozen=True)
class _RowPhases:
    """The rows by stride phase: ``taps[a]`` lists (kernel row, input offset) for output
    rows ``a + stride*u - pad`` (input row ``u + offset``); the rows of phase ``a`` are
    ``u`` in [``lo[a]``, ``hi[a]``), those whose every tap is inside the input
    [``inner_lo[a]``, ``inner_hi[a]``) (empty: both ``hi[a]``)."""

    taps: list[list[tuple[int, int]]]
    lo: list[int]
    hi: list[int]
    inner_lo: list[int]
    inner_hi: list[int]


def _row_phases(size: int, out: int, kernel: int, stride: int, pad: int,
               dilation: int) -> _RowPhases:
    taps: list[list[tuple[int, int]]] = []
    lo, hi, inner_lo, inner_hi = [], [], [], []
    for a in range(stride):
        taps.append([(k, (a - k * dilation) // stride) for k in range(kernel)
                     if (a - k * dilation) % stride == 0])
        # 0 <= a + stride*u - pad < out
        first, stop = inside(out, stride, a - pad, -(-(out + pad) // stride) + 1)
        lo.append(first)
        hi.append(stop)
        u_lo, u_hi = first, stop
        for _, offset in taps[-1]:
            u_lo, u_hi = max(u_lo, -offset), min(u_hi, size - offset)
        if u_lo >= u_hi:
            u_lo = u_hi = stop
        inner_lo.append(u_lo)
        inner_hi.append(u_hi)
    return _RowPhases(taps, lo, hi, inner_lo, inner_hi)


def lower_col2im(layer: Col2Im, ctx: LoweringContext) -> LayerCode:
    n, _, h, w = ctx.in_shape(layer)
    c = layer.channels
    ho, wo = layer.output_size
    (kh, kw), (sh, sw), (dh, dw) = layer.kernel, layer.strides, layer.dilations
    pt, pl, _, _ = layer.pads
    kk = kh * kw
    checked_only = max(sh, sw) > MAX_PHASES
    rows = _row_phases(h, ho, kh, 1 if checked_only else sh, pt, dh)
    # Column ox = r + sw*j of phase r takes tap kx from input column j + q.
    col_taps = [] if checked_only else [[(kx, (r + pl - kx * dw) // sw) for kx in range(kw)
                                         if (r + pl - kx * dw) % sw == 0] for r in range(sw)]
    # Interior columns: the j whose every tap is inside the input, and the outputs
    # they give; before and after them, scalar code.
    offsets = [q for taps in col_taps for _, q in taps]
    j_lo = max([0, *(-q for q in offsets)])
    j_hi = min([-(-wo // sw), *(w - q for q in offsets)])
    ox_lo, ox_hi = (sw * j_lo, min(wo, sw * j_hi)) if j_lo < j_hi else (wo, wo)
    unrolled = max(len(taps) for taps in rows.taps) * len(offsets)
    checked_only = checked_only or unrolled > MAX_UNROLLED_LOADS
    phases = 1 if checked_only else sh
    bias = None if layer.bias is None else ctx.blob.add(np.asarray(layer.bias, np.float32))
    planes = n * c
    blocks = 1
    if planes * phases < MIN_TASKS:
        longest = ho if checked_only else max(
            hi - lo for lo, hi in zip(rows.inner_lo, rows.inner_hi, strict=True))
        blocks = max(1, min(longest, -(-MIN_TASKS // (planes * phases))))

    def body(kb: KernelBuilder, ops: Operands, task: ir.Value) -> None:
        b = kb.b
        block = b.srem(task, i64(blocks))
        rest = b.sdiv(task, i64(blocks))
        phase = b.srem(rest, i64(phases))
        plane = b.sdiv(rest, i64(phases))
        src = kb.at(ops.inputs[0], b.mul(plane, i64(kk * h * w)))  # tap columns of c
        dst = kb.at(ops.outputs[0], b.mul(plane, i64(ho * wo)))
        if bias is None:
            bias_value: ir.Value = f32(0.0)
        else:
            bias_value = kb.load(ops.weights(kb, bias), b.srem(plane, i64(c)))

        def point(oy: ir.Value, ox: ir.Value) -> None:
            """One output pixel, each tap checked against the input (loops over the
            taps: border code stays small whatever the kernel)."""
            slot = kb.entry_alloca(F32, "acc")
            b.store(bias_value, slot)
            with kb.loop(0, kh, 1, "ky") as ky:
                y_ok, iy = _tap(kb, oy, b.sub(i64(pt), b.mul(ky, i64(dh))), sh, h)
                row = b.add(b.mul(ky, i64(kw * h * w)), b.mul(iy, i64(w)))
                with kb.loop(0, kw, 1, "kx") as kx:
                    x_ok, ix = _tap(kb, ox, b.sub(i64(pl), b.mul(kx, i64(dw))), sw, w)
                    ok = b.and_(y_ok, x_ok)
                    index = b.add(b.add(row, b.mul(kx, i64(h * w))), ix)
                    value = kb.load(src, b.select(ok, index, i64(0)))
                    b.store(b.fadd(b.load(slot, typ=F32), b.select(ok, value, f32(0.0))),
                            slot)
            kb.store(kb.activation(layer.activation, b.load(slot, typ=F32)), dst,
                     b.add(b.mul(oy, i64(wo)), ox))

        def scalar_row(oy: ir.Value, start: int, stop: int) -> None:
            if start < stop:
                with kb.loop(start, stop, 1, "ox") as ox:
                    point(oy, ox)

        def chunk(oy: ir.Value, u: ir.Value, row_taps: list[tuple[int, int]], j0: ir.Value,
                  lanes: int, count: int) -> None:
            """Outputs sw*j0 .. sw*j0 + count - 1 of row oy from ``lanes`` values of j
            per column phase, every tap inside the input."""
            phases = []
            for r in range(sw):
                acc = kb.splat(bias_value)
                for ky, qy in row_taps:
                    line = b.add(b.mul(b.add(u, i64(qy)), i64(w)), j0)
                    for kx, q in col_taps[r]:
                        v = kb.vload(src, b.add(line, i64((ky * kw + kx) * h * w + q)), lanes)
                        acc = b.fadd(acc, v)
                phases.append(kb.activation(layer.activation, acc))
            start = b.add(b.mul(oy, i64(wo)), b.mul(j0, i64(sw)))
            if sw > INTERLEAVED_PHASES:  # lane by lane, output r + sw*l of the chunk
                for r, values in enumerate(phases):
                    for lane in range(lanes):
                        if r + sw * lane < count:
                            kb.store(b.extract_element(values, i32(lane)), dst,
                                     b.add(start, i64(r + sw * lane)))
                return
            out = _interleave(kb, phases)
            if count == sw * kb.width:
                b.store(out, kb.at(dst, start), align=4)
            else:
                kb.masked_store(out, kb.at(dst, start), prefix_mask(sw * kb.width, count))

        def vector_row(oy: ir.Value, u: ir.Value, row_taps: list[tuple[int, int]]) -> None:
            scalar_row(oy, 0, ox_lo)
            span = ox_hi - ox_lo
            step = sw * kb.width
            full = span // step
            if full:
                with kb.loop(0, full, 1, "chunk") as k:
                    j0 = b.add(i64(j_lo), b.mul(k, i64(kb.width)))
                    chunk(oy, u, row_taps, j0, kb.width, step)
            if span % step:
                tail = span % step
                chunk(oy, u, row_taps, i64(j_lo + full * kb.width), -(-tail // sw), tail)
            scalar_row(oy, ox_hi, wo)

        if checked_only:  # every row checked, in blocks
            first = b.sdiv(b.mul(block, i64(ho)), i64(blocks))
            last = b.sdiv(b.mul(b.add(block, i64(1)), i64(ho)), i64(blocks))
            with kb.loop(first, last, 1, "oy") as oy:
                scalar_row(oy, 0, wo)
            return
        for a in range(sh):
            with b.if_then(b.icmp_signed("==", phase, i64(a))):
                lo, hi = rows.lo[a], rows.hi[a]
                inner_lo, inner_hi = rows.inner_lo[a], rows.inner_hi[a]

                def output_row(u: ir.Value, a: int = a) -> ir.Value:
                    return b.add(b.mul(u, i64(sh)), i64(a - pt))

                with b.if_then(b.icmp_signed("==", block, i64(0))):
                    for start, stop in ((lo, inner_lo), (inner_hi, hi)):
                        if start < stop:
                            with kb.loop(start, stop, 1, "u") as u:
                                scalar_row(output_row(u), 0, wo)
                length = inner_hi - inner_lo
                if length:
                    first = b.add(i64(inner_lo), b.sdiv(b.mul(block, i64(length)),
                                                        i64(blocks)))
                    last = b.add(i64(inner_lo), b.sdiv(b.mul(b.add(block, i64(1)),
                                                             i64(length)), i64(blocks)))
                    with kb.loop(first, last, 1, "u") as u:
                        vector_row(output_row(u), u, rows.taps[a])

    return LayerCode(layer, [Phase("col2im", planes * phases * blocks, body)],
                     kernel="col2im")


def _tap(kb: KernelBuilder, out: ir.Value, shift: ir.Value, stride: int, size: int
         ) -> tuple[ir.Value, ir.Value]:
    """Whether output position ``out`` takes a tap whose input position is
    ``(out + shift) / stride``, and that position (clamped to 0 where it does not)."""
    b = kb.b
    t = b.add(out, shift)
    nonneg = b.icmp_signed(">=", t, i64(0))
    t = b.select(nonneg, t, i64(0))
    position = b.sdiv(t, i64(stride))
    ok = b.and_(nonneg, b.and_(b.icmp_signed("==", b.srem(t, i64(stride)), i64(0)),
                               b.icmp_signed("<", position, i64(size))))
    return ok, b.select(ok, position, i64(0))


def _interleave(kb: KernelBuilder, phases: list[ir.Value]) -> ir.Value:
    """Vectors p_0 .. p_{s-1} of V lanes as one vector of s*V lanes: lane ``i`` is lane
    ``i // s`` of ``p_{i % s}`` (a stride phase each, back in output order)."""
    s, v = len(phases), kb.width
    if s == 1:
        return phases[0]

    def mask(indices: list[int]) -> ir.Constant:
        return ir.Constant(ir.VectorType(I32, len(indices)), [ir.Constant(I32, i)
                                                                for i in indices])

    joined = phases[0]
    for k in range(1, s):
        widened = phases[k] if k == 1 else kb.b.shuffle_vector(
            phases[k], phases[k], mask(list(range(v)) + [0] * ((k - 1) * v)))
        joined = kb.b.shuffle_vector(joined, widened, mask(list(range((k + 1) * v))))
    return kb.b.shuffle_vector(joined, joined, mask([(i % s) * v + i // s
                                                     for i in range(s * v)]))


__all__ = ["lower_col2im"]
