"""Fused inverted-residual blocks: 1x1 expand -> kxk depthwise -> 1x1 project, one
computation over bands of output rows.

MobileNetV2's blocks (also MnasNet's without squeeze-excite, ShuffleNetV2's branches,
LR-ASPP's backbone) widen a thin tensor t times, filter it depthwise and narrow it
again. Run layer by layer, the wide tensor makes two trips to memory: the expand conv
writes it, the depthwise conv reads it back (at MobileNetV2's second block, 4.8 MB at
112x112x96, more than a core's L2), and the depthwise output once more. Both convs
between are memory-bound, the depthwise conv at a fraction of its FMA rate.

Fused, a task walks its run of bands of ``R`` output rows one band after another; per
band it

1. copies the band's input rows (thin: C channels) into a buffer, zero rows where the
   band reaches past the image,
2. runs the expand conv on that buffer (the ``R`` rows' depthwise window: ``(R-1)s+k``
   rows), then zeroes the rows outside the image: they are the depthwise conv's zero
   padding, and the expand's bias and activation made them non-zero,
3. runs the depthwise conv on the expanded band, unpadded vertically,
4. runs the project conv on the depthwise band,
5. copies the band's output rows into the output tensor, adding the residual and
   applying the project's activation.

Each step is the ordinary kernel for that conv (``lower_conv``: pattern, depthwise,
sparse pointwise or GEMM, dense or pruned alike), lowered for the band's shape and run
task after task on the band's buffers; nothing is a new kernel but the copies. The
band's buffers (about ``BAND_BYTES``) are the task's own, so they stay in L2 from one
step to the next and from one band to the next. The price is the expand conv's
``k - s`` halo rows, computed by both bands that read them: ``R`` is the most rows
whose buffers fit.

Fusion is a lowering decision (``plan_module(fuse_blocks=True)``, ``patcc compile
--fuse-blocks``): the graph is unchanged, the plan has one step (``InvertedResidual``)
where it had three, and the block's inner tensors get no workspace.

It is off by default because it did not pay where measured. On a 2-core Zen 4 (1 MiB
L2 per core, a large L3), MobileNetV2 ran 4.89 ms unfused and 5.55 ms fused (pruned,
untuned), 4.85 and 5.23 dense; with bands of 1-14 rows, whatever the budget. The
layers are not memory-bound there: the unfused kernels' time per pixel is the same or
lower at 56x56 than at 28x28 or 20x20, where every tensor fits L2, so a band-sized run
of each kernel pays its per-call and per-channel costs (the depthwise kernel pads
each channel into planes) at every band, plus the halo rows, and gains nothing back.
A fused kernel that pays would have to keep a band's expanded channels in registers
or L1 from the expand through the project, not run three kernels per band.
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

from llvmlite import ir

from patcc.backends.llvm.conv import conv_schedules, lower_conv
from patcc.backends.llvm.irutil import I1, I8, I64, PTR, VOID, KernelBuilder, declare, i64
from patcc.backends.llvm.lowering import (
    LayerCode,
    LoweringContext,
    Operands,
    Phase,
)
from patcc.backends.llvm.movement import copy_floats
from patcc.ir import Graph
from patcc.ir.layers import Activation, Conv, IRError, Layer, Shape

BAND_BYTES = 384 * 1024
"""A band's buffers at most: well inside a core's L2 (1 MiB on Zen 4, 1.25-2 MiB on
recent Intel cores, 512 KiB on a Cortex-A76), leaving room for the weights."""

FUSE_MIN_BYTES = 512 * 1024
"""Blocks whose expanded tensor is smaller stay three layers: it stays in L2 anyway,
and bands of a small image are few rows, whose halo costs more than fusion saves."""

MAX_CHUNKS = 8
"""Tasks (runs of consecutive bands) of a fused block at most: enough for the pool to
balance, few enough that each run's first band is its only cold one."""

ALIGN = 64


@dataclass(frozen=True, eq=False, kw_only=True)
class InvertedResidual(Layer):
    """Three convs computed as one step of the plan: ``expand`` (1x1), ``depthwise``
    and ``project`` (1x1, with the block's residual as its second input if any).
    Inputs: the expand's input, then the residual; output: the project's."""

    expand: Conv
    depthwise: Conv
    project: Conv

    op: ClassVar[str] = "InvertedResidual"
    arity: ClassVar[int | None] = None

    @property
    def convs(self) -> tuple[Conv, Conv, Conv]:
        return self.expand, self.depthwise, self.project

    def infer_shapes(self, shapes: Sequence[Shape]) -> tuple[Shape, ...]:
        if len(shapes) != len(self.inputs):
            raise IRError(f"{self.op} {self.name!r} takes {len(self.inputs)} inputs")
        x = shapes[0]
        for conv in self.convs:
            x = conv.infer_shapes([x])[0]
        return (x,)


def _pointwise(layer: Layer) -> bool:
    return (isinstance(layer, Conv) and layer.kernel_shape == (1, 1) and layer.groups == 1
            and layer.strides == (1, 1) and not any(layer.pads))


def inverted_residuals(graph: Graph, keep: frozenset[str] = frozenset()
                       ) -> dict[str, InvertedResidual]:
    """The blocks worth fusing, keyed by their project conv's name (the plan step that
    runs the block takes that conv's place; the block's inputs are all computed by
    then).

    A block is a 1x1 conv whose only reader is a depthwise conv whose only reader is a
    1x1 conv, on one image, with neither inner tensor a graph output nor in ``keep``
    (tensors the plan places elsewhere), and an expanded tensor of at least
    ``FUSE_MIN_BYTES``.
    """
    shapes = graph.shapes
    readers = Counter(t for layer in graph.layers for t in layer.inputs)
    producer = {t: layer for layer in graph.layers for t in layer.outputs}

    def inner_ok(t: str) -> bool:
        return readers[t] == 1 and t not in graph.outputs and t not in keep

    blocks: dict[str, InvertedResidual] = {}
    for project in graph.layers:
        if not _pointwise(project):
            continue
        depthwise = producer.get(project.inputs[0])
        if not (isinstance(depthwise, Conv) and depthwise.is_depthwise
                and len(depthwise.inputs) == 1 and inner_ok(project.inputs[0])):
            continue
        expand = producer.get(depthwise.inputs[0])
        if not (expand is not None and _pointwise(expand) and len(expand.inputs) == 1
                and inner_ok(depthwise.inputs[0])):
            continue
        assert isinstance(expand, Conv) and isinstance(project, Conv)
        wide = shapes[expand.outputs[0]]
        if wide[0] != 1 or 4 * math.prod(wide) < FUSE_MIN_BYTES:
            continue
        blocks[project.name] = InvertedResidual(
            name=_block_name(expand.name, project.name),
            inputs=(expand.inputs[0], *project.inputs[1:]), outputs=project.outputs,
            expand=expand, depthwise=depthwise, project=project)
    return blocks


def _block_name(first: str, last: str) -> str:
    """The convs' common name prefix where it names something (torch exports:
    ``/features/features.2/conv``), else both names."""
    common = first[:next((i for i, (a, b) in enumerate(zip(first, last, strict=False))
                          if a != b), min(len(first), len(last)))]
    common = common.rstrip("/._")
    return f"{common} (block)" if len(common) >= 4 else f"{first}..{last}"


@dataclass(frozen=True)
class _Bands:
    """Output rows ``rows`` at a time: ``count`` bands, each reading ``rows_in`` input
    rows from row ``band * rows * stride - pad_top``."""

    rows: int
    rows_in: int
    count: int
    stride: int
    pad_top: int


def _bands(block: InvertedResidual, shapes: Mapping[str, Shape], width: int) -> _Bands:
    """The most output rows per band whose buffers fit ``BAND_BYTES`` (at least one)."""
    dw = block.depthwise
    _, c, _, w = shapes[block.expand.inputs[0]]
    _, e, ho, wo = shapes[dw.outputs[0]]
    o = block.project.out_channels
    kh, kw = dw.kernel_shape
    reach = (kh - 1) * dw.dilations[0] + 1
    stride = dw.strides[0]

    def floats(rows: int) -> int:
        rows_in = (rows - 1) * stride + reach
        padded = e * (rows_in + 1) * (w + kw + width)  # depthwise planes, at most
        return max(c * rows_in * w, padded, o * rows * wo) + e * rows_in * w + e * rows * wo

    rows = max([r for r in range(1, ho + 1) if 4 * floats(r) <= BAND_BYTES], default=1)
    count = -(-ho // rows)
    rows = -(-ho // count)  # as even as the same number of bands allows
    return _Bands(rows, (rows - 1) * stride + reach, count, stride, dw.pads[0])


def _memset_zero(kb: KernelBuilder, dst: ir.Value, floats: ir.Value) -> None:
    fn = declare(kb.module, "llvm.memset.p0.i64", VOID, [PTR, I8, I64, I1])
    kb.b.call(fn, [dst, ir.Constant(I8, 0), kb.b.mul(floats, i64(4)), ir.Constant(I1, 0)])


def _align(size: int) -> int:
    return -(-size // ALIGN) * ALIGN


def lower_inverted_residual(block: InvertedResidual, ctx: LoweringContext) -> LayerCode:
    """One phase of up to ``MAX_CHUNKS`` tasks, each a run of consecutive bands."""
    expand, dw, project = block.convs
    target = ctx.target
    _, c, h, w = ctx.in_shape(expand)
    _, e, ho, wo = ctx.out_shape(dw)
    o = project.out_channels
    bands = _bands(block, ctx.shapes, target.vector_width)
    rows, rows_in = bands.rows, bands.rows_in

    names = ("band:input", "band:expanded", "band:depthwise", "band:output")
    shapes: dict[str, Shape] = {names[0]: (1, c, rows_in, w), names[1]: (1, e, rows_in, w),
              names[2]: (1, e, rows, wo), names[3]: (1, o, rows, wo)}
    sub = [
        dataclasses.replace(expand, inputs=names[:1], outputs=names[1:2]),
        dataclasses.replace(dw, inputs=names[1:2], outputs=names[2:3],
                            pads=(0, dw.pads[1], 0, dw.pads[3])),
        dataclasses.replace(project, inputs=names[2:3], outputs=names[3:],
                            activation=None),
    ]
    sub_ctx = LoweringContext(shapes=shapes, target=target, blob=ctx.blob)
    schedules = {}
    for layer in sub:  # a tuned schedule where it applies to the band's shape
        chosen = ctx.schedules.get(layer.name)
        if chosen is not None and chosen in conv_schedules(layer, sub_ctx, every=True):
            schedules[layer.name] = chosen
    sub_ctx.schedules = schedules
    codes = [lower_conv(layer, sub_ctx) for layer in sub]

    # Per task: A holds the input band, then the depthwise kernel's planes, then the
    # project's output (never live together); B the expanded band; C the depthwise
    # output; D the pointwise kernels' own scratch.
    size_a = _align(4 * max(c * rows_in * w, o * rows * wo, codes[1].scratch_bytes))
    size_b = _align(4 * e * rows_in * w)
    size_c = _align(4 * e * rows * wo)
    size_d = _align(max(codes[0].scratch_bytes, codes[2].scratch_bytes))
    per_task = size_a + size_b + size_c + size_d
    chunks = min(bands.count, MAX_CHUNKS)
    residual = len(project.inputs) > 1
    activation = project.activation

    def body(kb: KernelBuilder, ops: Operands, task: ir.Value) -> None:
        b = kb.b
        base = b.mul(task, i64(per_task))

        def region(offset: int) -> ir.Value:
            return b.gep(ops.scratch, [b.add(base, i64(offset))], source_etype=I8)

        area_a, area_b = region(0), region(size_a)
        area_c, area_d = region(size_a + size_b), region(size_a + size_b + size_c)
        first = b.sdiv(b.mul(task, i64(bands.count)), i64(chunks))
        last = b.sdiv(b.mul(b.add(task, i64(1)), i64(bands.count)), i64(chunks))
        with kb.loop(first, last, 1, "band") as band:
            y0 = b.mul(band, i64(rows))
            lo = b.sub(b.mul(y0, i64(bands.stride)), i64(bands.pad_top))
            r0 = _smax(b, b.neg(lo), i64(0))  # band rows [r0, r1) lie in the image
            r1 = _smin(b, b.sub(i64(h), lo), i64(rows_in))
            _copy_band_in(kb, ops.inputs[0], area_a, (c, h, w), rows_in, lo, r0, r1)
            _run(kb, codes[0], Operands([area_a], [area_b], area_d, ops.blob))
            _zero_outside(kb, area_b, e, rows_in, w, r0, r1)
            _run(kb, codes[1], Operands([area_b], [area_c], area_a, ops.blob))
            _run(kb, codes[2], Operands([area_c], [area_a], area_d, ops.blob))
            tail = ho - (bands.count - 1) * rows
            out_at = b.mul(y0, i64(wo))

            def copy_out(count: int) -> None:
                _copy_band_out(kb, area_a, ops, (o, ho * wo), rows * wo, out_at,
                               count * wo, residual, activation)

            if tail == rows:
                copy_out(rows)
            else:
                with b.if_else(b.icmp_signed("==", band, i64(bands.count - 1))) as (
                        then, otherwise):
                    with then:
                        copy_out(tail)
                    with otherwise:
                        copy_out(rows)

    kernels = [code.kernel for code in codes]
    notes: dict[str, object] = {
        "block": f"{rows} rows x {bands.count} bands ({'+'.join(kernels)})",
        "tasks": chunks,
        "schedules": {layer.name: code.notes["schedule"] for layer, code in zip(sub, codes,
                                                                               strict=True)},
        "halo_rows": rows_in * bands.count - h,
    }
    return LayerCode(block, [Phase("block", chunks, body)], kernel="inverted-residual",
                     scratch_bytes=chunks * per_task, notes=notes)


def _smax(b: ir.IRBuilder, x: ir.Value, y: ir.Value) -> ir.Value:
    return b.select(b.icmp_signed(">", x, y), x, y)


def _smin(b: ir.IRBuilder, x: ir.Value, y: ir.Value) -> ir.Value:
    return b.select(b.icmp_signed("<", x, y), x, y)


def _run(kb: KernelBuilder, code: LayerCode, ops: Operands) -> None:
    """Every task of every phase of a band-shaped layer, one after another."""
    for phase in code.phases:
        if phase.tasks == 1:
            phase.body(kb, ops, i64(0))
            continue
        with kb.loop(0, phase.tasks, 1, phase.name) as t:
            phase.body(kb, ops, t)


def _copy_band_in(kb: KernelBuilder, x: ir.Value, dst: ir.Value, chw: tuple[int, int, int],
                  rows_in: int, lo: ir.Value, r0: ir.Value, r1: ir.Value) -> None:
    """Rows [lo, lo + rows_in) of every channel of ``x`` into ``dst`` (C, rows_in, W),
    zeros for rows outside the image."""
    b = kb.b
    c, h, w = chw
    with kb.loop(0, c, 1, "cin") as ch:
        row0 = b.mul(ch, i64(rows_in * w))
        _memset_zero(kb, kb.at(dst, row0), b.mul(r0, i64(w)))
        copy_floats(kb, kb.at(dst, b.add(row0, b.mul(r0, i64(w)))),
                kb.at(x, b.add(b.mul(ch, i64(h * w)), b.mul(b.add(lo, r0), i64(w)))),
                b.mul(b.sub(r1, r0), i64(w)))
        _memset_zero(kb, kb.at(dst, b.add(row0, b.mul(r1, i64(w)))),
                     b.mul(b.sub(i64(rows_in), r1), i64(w)))


def _zero_outside(kb: KernelBuilder, buf: ir.Value, channels: int, rows_in: int, w: int,
                  r0: ir.Value, r1: ir.Value) -> None:
    """Zero rows [0, r0) and [r1, rows_in) of every channel of ``buf``: the depthwise
    conv's padding rows, which the expand conv filled with act(bias)."""
    b = kb.b
    edge = b.or_(b.icmp_signed(">", r0, i64(0)), b.icmp_signed("<", r1, i64(rows_in)))
    with b.if_then(edge), kb.loop(0, channels, 1, "cz") as ch:
        row0 = b.mul(ch, i64(rows_in * w))
        _memset_zero(kb, kb.at(buf, row0), b.mul(r0, i64(w)))
        _memset_zero(kb, kb.at(buf, b.add(row0, b.mul(r1, i64(w)))),
                     b.mul(b.sub(i64(rows_in), r1), i64(w)))


def _copy_band_out(kb: KernelBuilder, src: ir.Value, ops: Operands, channels: tuple[int, int],
                   band_floats: int, out_at: ir.Value, count: int, residual: bool,
                   activation: Activation | None) -> None:
    """``count`` floats of each output channel's band from ``src`` (pitch
    ``band_floats``) to the output (pitch ``channels[1]``) from ``out_at``, plus the
    residual, through the activation."""
    b, width = kb.b, kb.width
    o, plane = channels
    full, tail = divmod(count, width)
    with kb.loop(0, o, 1, "cout") as ch:
        s0 = b.mul(ch, i64(band_floats))
        d0 = b.add(b.mul(ch, i64(plane)), out_at)

        def step(offset: ir.Value, lanes: int) -> None:
            v = kb.vload(src, b.add(s0, offset), lanes)
            at = b.add(d0, offset)
            if residual:
                v = b.fadd(v, kb.vload(ops.inputs[1], at, lanes))
            kb.vstore(kb.activation(activation, v), ops.outputs[0], at, lanes)

        if full:
            with kb.loop(0, full * width, width, "v") as v:
                step(v, width)
        if tail:
            step(i64(full * width), tail)
