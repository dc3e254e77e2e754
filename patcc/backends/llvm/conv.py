"""Convolution and dense layers: kernel choice and lowering.

Which kernel families can run a conv is ``patcc.backends.planning.conv_kernels``,
shared with the OpenCL backend; this module ranks their schedules with the cost model.

- ``pattern``: a pattern-style conv runs the pattern kernel (a direct conv) over compressed
  weights (``pattern.py``): only kept kernels and kept taps, one loop body per pattern.
- ``depthwise``: a dense depthwise conv runs the same pattern kernel with one tap set
  (the full kernel window).
- ``sparse``: a 1x1 conv with unstructured zeros may run the sparse pointwise kernel
  (``sparse.py``), a sparse x dense matrix product that skips the zeros.
- ``gemm``: any other conv is a matrix product per group, Y[O, P] = W[O, K] X[K, P]
  with X the im2col matrix, never built: each kernel tap reads its row of X as a
  contiguous run of the input (unstrided, unpadded convs) or of per-channel planes
  the ``planes`` phase rearranges the input into (padded, split by stride phase).
- Dense layers are the same matrix product with the roles of A and B swapped; on a
  few rows (a classifier at batch 1), dot products over the weight rows (``gemv``).

Each conv lists the schedules it can run (``conv_schedules``); the tuner times them on
the host, other targets take the first, the cost model's choice.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from llvmlite import ir

from patcc.backends.llvm.gemm import (
    Columns,
    GemmSpec,
    GemmTiling,
    Taps,
    emit_gemm,
    gemm_tiling,
    pack_rows,
    register_tile,
    tiling_candidates,
)
from patcc.backends.llvm.gemv import lower_gemv, use_gemv
from patcc.backends.llvm.irutil import KernelBuilder, i64
from patcc.backends.llvm.lowering import (
    LayerCode,
    LoweringContext,
    Operands,
    Phase,
    PhaseBody,
    Schedule,
)
from patcc.backends.llvm.pattern import lower_pattern_conv, pattern_options
from patcc.backends.llvm.planes import fill_plane
from patcc.backends.llvm.sparse import (
    block_name,
    lower_sparse_pointwise,
    parse_block,
    sparse_pointwise_options,
)
from patcc.backends.planning import DEPTHWISE, GEMM, PATTERN, SPARSE, conv_kernels
from patcc.errors import BackendError
from patcc.ir.layers import Conv, Dense

TUNE_CANDIDATES = 4
"""At most this many schedules of a conv, the cheapest estimated first, are timed by
the tuner."""

TUNE_MARGIN = 0.25
"""...and only those estimated within this fraction of the cheapest: the cost model
ranks the pattern kernel's blocks within 5-15% of their measured order (Zen 4, AVX2
and AVX-512), so what lies further out never wins, and each candidate timed costs
the compile its LLVM time."""

VARIETY_MARGIN = 0.6
"""Except that the cheapest of each kind of schedule (aligned or unaligned loads,
vectors along N or M, sparse or dense) is timed when within this fraction: how much
a kind costs depends on the core more than the model knows (unaligned 512-bit loads
across cache lines cost Zen 5 and Skylake-SP two loads, Zen 4 about one)."""

LISTED_SCHEDULES = 12
"""How many valid schedules an error about an invalid one lists."""

SPARSE_DENSITY_CUTOFF = 0.55
"""The fraction of non-zero weights at which the sparse pointwise kernel's best block
and the GEMM's best tiling break even. On Zen 5 the sparse kernel reaches about 250
non-zero GFLOP/s (2 threads) where the GEMM does 440 dense, so they break even near
57%; at 50% the sparse kernel was faster on every MobileNetV2 1x1 layer."""


def conv_schedules(layer: Conv, ctx: LoweringContext, every: bool = False) -> list[Schedule]:
    """The schedules the tuner times for this conv, the cost model's choice first:
    the cheapest estimated and those within ``TUNE_MARGIN`` of it, at most
    ``TUNE_CANDIDATES``; with ``every``, every schedule the conv can run with.

    Pattern-style convs run the pattern kernel with one of its register blocks,
    or the dense GEMM where sparsity does not pay (few kernels removed, small
    images); depthwise convs the pattern kernel; 1x1 convs with unstructured zeros the
    sparse pointwise kernel (SpMM) or the GEMM; other convs the GEMM with one of its
    tilings.
    """
    options = conv_options(layer, ctx)
    if every:
        return [schedule for _, schedule in options]
    best = options[0][0]
    chosen = [options[0]]
    kinds = {_kind(options[0][1])}
    for option in options:  # the cheapest of each kind
        if option[0] <= best * (1 + VARIETY_MARGIN) and _kind(option[1]) not in kinds:
            kinds.add(_kind(option[1]))
            chosen.append(option)
    for option in options:
        if option[0] <= best * (1 + TUNE_MARGIN) and option not in chosen:
            chosen.append(option)
    return [schedule for _, schedule in sorted(chosen[:TUNE_CANDIDATES],
                                               key=lambda option: option[0])]


def _kind(schedule: Schedule) -> str:
    """What kind of code a schedule is: its kernel, and aligned loads or vectors along
    M where the kernel has both."""
    if schedule.kernel in ("pattern", "depthwise") and schedule.block.endswith("a"):
        return schedule.kernel + "-aligned"
    if schedule.kernel == "gemm" and "vx" in schedule.block:
        return "gemm-rows"
    return schedule.kernel


def conv_options(layer: Conv, ctx: LoweringContext) -> list[tuple[float, Schedule]]:
    """Every schedule this conv can run with on ``ctx.target`` and its estimated cycles
    on one core (the cost model), the cheapest first. Computed once per layer and
    lowering context."""
    key = (layer.name, "options")
    if key not in ctx.memo:
        ctx.memo[key] = _options(layer, ctx)
    return list(ctx.memo[key])  # type: ignore[call-overload]


def _options(layer: Conv, ctx: LoweringContext) -> list[tuple[float, Schedule]]:
    kernels = conv_kernels(layer)
    gemm = [(cycles, Schedule(GEMM, t.block)) for cycles, t in _gemm_tilings(layer, ctx)] \
        if GEMM in kernels else []
    if kernels[0] in (PATTERN, DEPTHWISE):
        pattern = [(cycles, Schedule(kernels[0], name))
                   for cycles, name in pattern_options(layer, ctx)]
        return sorted(pattern + gemm, key=lambda option: option[0])
    if kernels[0] == SPARSE:
        # The blocks ranked by their own model; the kernel against the GEMM by the
        # measured break-even density: the two models' scales do not compare.
        blocks = sparse_pointwise_options(layer, ctx)
        density = np.count_nonzero(layer.weight) / layer.weight.size
        scale = gemm[0][0] * density / SPARSE_DENSITY_CUTOFF / blocks[0][0]
        sparse = [(cycles * scale, Schedule(SPARSE, block_name(b))) for cycles, b in blocks]
        return sorted(sparse + gemm, key=lambda option: option[0])
    return gemm


def lower_conv(layer: Conv, ctx: LoweringContext) -> LayerCode:
    """Lower one convolution with its schedule from ``ctx.schedules`` or, without
    one, the cost model's choice."""
    options = conv_schedules(layer, ctx, every=True)
    chosen = ctx.schedules.get(layer.name, options[0])
    if chosen not in options:
        shown = ", ".join(map(str, options[:LISTED_SCHEDULES]))
        more = f" and {len(options) - LISTED_SCHEDULES} more" \
            if len(options) > LISTED_SCHEDULES else ""
        raise BackendError(f"Conv {layer.name!r}: schedule {str(chosen)!r} does not apply; "
                         f"this layer can use {shown}{more}")
    if chosen.kernel in (PATTERN, DEPTHWISE):
        code = lower_pattern_conv(layer, ctx, chosen.kernel, chosen.block)
    elif chosen.kernel == SPARSE:
        code = lower_sparse_pointwise(layer, ctx, parse_block(chosen.block))
    else:
        code = _lower_gemm_conv(layer, ctx, chosen.block)
    code.notes["schedule"] = str(chosen)
    code.notes["candidates"] = len(conv_schedules(layer, ctx))
    return code


def _split_task(kb: KernelBuilder, task: ir.Value, *sizes: int) -> list[ir.Value]:
    """Decode a task index into mixed-radix digits (most significant first)."""
    digits = []
    for size in reversed(sizes):
        digits.append(kb.b.srem(task, i64(size)))
        task = kb.b.sdiv(task, i64(size))
    return digits[::-1]


def _gemm_tilings(layer: Conv, ctx: LoweringContext) -> list[tuple[float, GemmTiling]]:
    """The GEMM tilings of this conv with their estimated cycles, the fewest first."""
    n, _, _, w = ctx.in_shape(layer)
    _, o, ho, wo = ctx.out_shape(layer)
    g = layer.groups
    kh, kw = layer.kernel_shape
    planes = _planes(layer, w, (ho, wo))
    return tiling_candidates(o // g, ho * wo, layer.weight.shape[1] * kh * kw, kh * kw,
                             Columns(wo, planes.wq), ctx.target, min_tasks=max(1, 16 // (n * g)),
                             row_taps=kw, row_phases=layer.strides[1])


def _lower_gemm_conv(layer: Conv, ctx: LoweringContext, tile: str) -> LayerCode:
    """A dense conv as one matrix product per (image, group), after a ``planes`` phase
    unless the input can be read in place, with the tiling named ``tile`` (one of
    ``_gemm_tilings``) and the weights packed for that tile."""
    n, c, h, w = ctx.in_shape(layer)
    _, o, ho, wo = ctx.out_shape(layer)
    g = layer.groups
    cg, og = c // g, o // g
    kh, kw = layer.kernel_shape
    k = cg * kh * kw
    planes = _planes(layer, w, (ho, wo))
    channel = planes.channel_size
    columns = Columns(wo, planes.wq)
    tiling = next(t for _, t in _gemm_tilings(layer, ctx) if t.block == tile)
    packed = [ctx.blob.add(pack_rows(layer.weight[gi * og:(gi + 1) * og].reshape(og, k),
                                     tiling.tile_m)) for gi in range(g)]
    group_stride = (packed[1] - packed[0]) if g > 1 else 0
    if g > 1 and any(b - a != group_stride for a, b in zip(packed, packed[1:], strict=False)):
        raise AssertionError("packed groups are not evenly spaced")
    bias_off = ctx.blob.add(layer.bias)
    phases: list[Phase] = []
    scratch = 0
    if not planes.in_place:
        scratch = n * c * channel * 4
        block = max(1, n * c * len(planes.phases) // PLANE_TASKS)
        phases.append(Phase("planes", n * -(-c // block) * len(planes.phases),
                            _planes_body(layer, (n, c, h, w), planes, block)))

    def body(kb: KernelBuilder, ops: Operands, task: ir.Value) -> None:
        b = kb.b
        ni, gi, ti = _split_task(kb, task, n, g, tiling.tasks)
        b_base = b.mul(b.add(b.mul(ni, i64(c)), b.mul(gi, i64(cg))), i64(channel))
        b_ptr = ops.inputs[0] if planes.in_place else ops.scratch
        c_base = b.mul(b.add(b.mul(ni, i64(o)), b.mul(gi, i64(og))), i64(ho * wo))
        a_byte = b.add(i64(packed[0]), b.mul(gi, i64(group_stride)))
        spec = GemmSpec(
            m=og, n=ho * wo, k=k,
            a=lambda kb_: kb_.b.gep(ops.blob, [a_byte], source_etype=ir.IntType(8)),
            b=lambda kb_: kb_.at(b_ptr, b_base),
            c=lambda kb_: kb_.at(ops.outputs[0], c_base),
            b_rows=Taps(channel, planes.offsets), ldc=ho * wo, a_packed=True,
            columns=columns,
            bias=lambda kb_: kb_.at(ops.weights(kb_, bias_off), b.mul(gi, i64(og))),
            bias_per_row=True, activation=layer.activation,
            residual=(lambda kb_: kb_.at(ops.inputs[1], c_base)) if len(layer.inputs) > 1
            else None,
        )
        emit_gemm(kb, spec, tiling, ti)

    phases.append(Phase("gemm", n * g * tiling.tasks, body))
    notes: dict[str, object] = {"block": tiling.block, "tasks": n * g * tiling.tasks}
    if tiling.kc:
        notes["k_blocks"] = -(-cg // tiling.kc)
    return LayerCode(layer, phases, kernel="gemm" + ("" if planes.in_place else "+planes"),
                     scratch_bytes=scratch, notes=notes)


PLANE_TASKS = 32
"""About how many tasks rearrange the input: enough to share among threads, few
enough that a task is more than its dispatch."""


@dataclass(frozen=True)
class _Planes:
    """A conv's input rearranged so that each kernel tap reads its row of the im2col
    matrix as one contiguous run; no im2col matrix is built.

    Each input channel has one ``hq`` x ``wq`` plane per stride phase (ph, pw) that some
    tap uses: plane[u][v] = x[u*sh + ph - pt][v*sw + pw - pl], zero in the padding.
    Output (y, x) under tap (i, j) reads plane ((i*dh) % sh, (j*dw) % sw) at
    [y + i*dh // sh][x + j*dw // sw]; with q = y*wq + x as the product's column, tap t
    reads element q + offsets[t] of the channel's planes, and columns with x >= wo are
    not outputs. Unstrided and unpadded, the input itself is the one plane.
    """

    phases: tuple[tuple[int, int], ...]
    hq: int
    wq: int
    offsets: tuple[int, ...]
    in_place: bool

    @property
    def channel_size(self) -> int:
        return len(self.phases) * self.hq * self.wq


def _planes(layer: Conv, w: int, out_hw: tuple[int, int]) -> _Planes:
    ho, wo = out_hw
    kh, kw = layer.kernel_shape
    sh, sw = layer.strides
    rows = [i * layer.dilations[0] for i in range(kh)]
    cols = [j * layer.dilations[1] for j in range(kw)]
    hq, wq = ho + rows[-1] // sh, wo + cols[-1] // sw
    if layer.strides == (1, 1) and not any(layer.pads):
        return _Planes(((0, 0),), hq, w, tuple(a * w + b for a in rows for b in cols), True)
    phases = sorted({(a % sh, b % sw) for a in rows for b in cols})
    offsets = tuple(phases.index((a % sh, b % sw)) * hq * wq + a // sh * wq + b // sw
                    for a in rows for b in cols)
    return _Planes(tuple(phases), hq, wq, offsets, False)


def _planes_body(layer: Conv, in_shape: tuple[int, int, int, int], planes: _Planes,
                 block: int) -> PhaseBody:
    """Task (n, channel block, phase): one plane of each of ``block`` input channels."""
    n, c, h, w = in_shape
    plane = planes.hq * planes.wq
    count = len(planes.phases)

    def body(kb: KernelBuilder, ops: Operands, task: ir.Value) -> None:
        b = kb.b
        ni, cb, pi = _split_task(kb, task, n, -(-c // block), count)
        c_lo = b.mul(cb, i64(block))
        c_hi = b.add(c_lo, i64(block))
        c_hi = b.select(b.icmp_signed("<", c_hi, i64(c)), c_hi, i64(c))
        for index, phase in enumerate(planes.phases):
            with b.if_then(b.icmp_signed("==", pi, i64(index))), \
                    kb.loop(c_lo, c_hi, 1, "c") as ci:
                nc = b.add(b.mul(ni, i64(c)), ci)
                src = kb.at(ops.inputs[0], b.mul(nc, i64(h * w)))
                dst = kb.at(ops.scratch, b.mul(b.add(b.mul(nc, i64(count)), i64(index)),
                                               i64(plane)))
                fill_plane(kb, src, dst, (h, w), (planes.hq, planes.wq), layer.strides,
                           phase, (layer.pads[0], layer.pads[1]))
    return body


def lower_dense(layer: Dense, ctx: LoweringContext) -> LayerCode:
    """y = x @ W.T + b on the last axis: A = x (runtime rows), B = W.T packed (K, N);
    on a few rows (``use_gemv``), dot products over W's rows (``gemv.py``)."""
    if use_gemv(layer, ctx):
        return lower_gemv(layer, ctx)
    target = ctx.target
    shape = ctx.in_shape(layer)
    n_out, k = layer.weight.shape
    m = math.prod(shape[:-1])
    b_off = ctx.blob.add(np.ascontiguousarray(layer.weight.T))
    bias_off = ctx.blob.add(layer.bias)
    mr, nr = register_tile(target.vector_registers)
    tiling = gemm_tiling(m, n_out, mr, nr, target.vector_width)

    def body(kb: KernelBuilder, ops: Operands, task: ir.Value) -> None:
        spec = GemmSpec(
            m=m, n=n_out, k=k,
            a=lambda kb_: ops.inputs[0],
            b=lambda kb_: ops.weights(kb_, b_off),
            c=lambda kb_: ops.outputs[0],
            b_rows=Taps(n_out), ldc=n_out, a_packed=False, lda=k,
            bias=lambda kb_: ops.weights(kb_, bias_off), bias_per_row=False,
            activation=layer.activation,
        )
        emit_gemm(kb, spec, tiling, task)

    return LayerCode(layer, [Phase("gemm", tiling.tasks, body)], kernel="gemm",
                     notes={"block": tiling.block, "tasks": tiling.tasks})
