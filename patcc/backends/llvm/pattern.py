"""The pattern kernel, a direct convolution: pattern-sparse 3x3 and depthwise convs.

It never sees a dense weight tensor. The weights arrive compressed
(``patcc.ir.storage``), read front to back: for each filter in reorder order, its
kept kernels grouped by pattern (a count per pattern), the input channel of each
kernel, and the kept weights in code order.
The generated code has one loop per pattern, whose body reads the pattern's taps
at compile-time (dy, dx) offsets, vectorised along output pixels.

Padding and strides are taken out of the inner loop by a first phase that copies
each input channel into a zero-padded buffer split into stride phases: output pixel
``(oh, ow)`` reads tap ``(dy, dx)`` at ``phase[(dy*dh) % sh][(dx*dw) % sw]`` row
``oh + (dy*dh) // sh``, column ``ow + (dx*dw) // sw``, so every tap of every pattern
is one contiguous vector load at a constant offset, with no bounds check. Rows are
padded to whole vector tiles so tile loads never leave their row.

Those loads are mostly not aligned: with 16 lanes every one of them crosses a cache
line and costs two. Blocks ending in ``a`` (``4r2va``, ``flata``) lay rows out on
whole vectors instead and load only aligned vectors; a tap ``s`` lanes to the right
is cut from two neighbours with one lane shuffle (``valignd``), and the aligned
vectors are shared by every tap of the row. On Zen 5 (2 threads) that took the
ResNet-18 6x layer1 convs from 0.211 to 0.170 ms and the whole model from 4.12 to
3.63 ms. Where a row is one vector (14x14) it gains nothing; the tuner chooses.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from llvmlite import ir

from patcc.backends.llvm.irutil import I32, I64, KernelBuilder, i64
from patcc.backends.llvm.lowering import LayerCode, LoweringContext, Operands, Phase
from patcc.backends.llvm.planes import fill_plane
from patcc.backends.planning import required_compressed_weights
from patcc.backends.target import Target
from patcc.errors import BackendError
from patcc.ir.layers import Conv
from patcc.ir.storage import CompressedWeights


@dataclass(frozen=True)
class Tap:
    """One kept kernel position, resolved against the phase-split padded input."""

    phase: int
    row: int
    col: int


MAX_BLOCK_ROWS = 8
MAX_BLOCK_VECTORS = 4
"""Register blocks (output rows x vectors per row) are drawn from 1..8 rows and 1..4
vectors; which of them a target can use depends on its registers (``block_registers``).
More rows share more input vectors between vertically neighbouring taps (kernel-level
load-redundancy elimination); more vectors per row fewer pattern loops per pixel."""

FLAT_ACCUMULATORS = 8
"""Most vectors one flat tile (the whole narrow image) may take."""


def block_registers(rows: int, nvec: int, taps: int, sets: int = 1,
                    aligned: bool = False, lane_shift_ops: int = 1) -> int:
    """Vector registers the kernel's loop body needs with a block of ``rows`` x
    ``nvec`` accumulators (``sets`` copies for the flat layout) and ``taps`` weights
    held broadcast: the input vectors of one row at a time on top (``_emit_conv``
    visits input rows in order). Unaligned loads need two (one loading while one is
    used); the aligned layout keeps the row's ``nvec`` + 1 aligned vectors, the one
    cut from them, and the intermediates of a lane shift that takes several
    instructions (AVX2: a permute and two shuffles)."""
    if not aligned:
        return rows * nvec * sets + taps + 2
    return rows * nvec * sets + taps + nvec + 1 + lane_shift_ops


def block_fits(target: Target, rows: int, nvec: int, taps: int, sets: int = 1,
               aligned: bool = False) -> bool:
    """Whether the block's loop body fits ``target``'s vector registers without spills.

    Where LLVM keeps the order the body is emitted in (``Target.machine_scheduler``
    off: AArch64), ``block_registers`` is the whole story. On x86 its instruction
    scheduling (LLVM 19) issues loads ahead of their use, which measurably spills
    (``tests/test_registers.py``; ``--report``'s ``spills`` column) in two more
    cases: on 16 registers, blocks of more than 7 rows or 2 vectors per row (the
    loads of later input rows move up); and with the aligned layout or more than 4
    taps (a depthwise conv's full window), more than half the registers less 4 as
    accumulators (12 of 32, 4 of 16: the vectors several rows share stay live).
    """
    registers = target.vector_registers
    accumulators = rows * nvec * sets
    if block_registers(rows, nvec, taps, sets, aligned, target.lane_shift_ops) > registers:
        return False
    if not target.machine_scheduler:
        return True
    if registers <= 16 and (rows > 7 or nvec > 2):
        return False
    return not (aligned or taps > 4) or accumulators <= registers // 2 - 4


def pattern_blocks(layer: Conv, ctx: LoweringContext) -> list[str]:
    """The register blocks this conv can run with on ``ctx.target``, the cost model's
    cheapest first (``pattern_options`` without the estimates)."""
    return [name for _, name in pattern_options(layer, ctx)]


def pattern_options(layer: Conv, ctx: LoweringContext) -> list[tuple[float, str]]:
    """Every register block this conv can run with on ``ctx.target`` and its
    estimated cycles (one core), the cheapest first: ``"<R>r<V>v"`` (R output rows by
    V vectors), for narrow outputs ``"flat"``, and each with ``a`` for the aligned
    layout. A block is legal when its loop body fits the target's vector registers
    (``block_fits``), so no generated inner loop spills."""
    _, _, ho, wo = ctx.out_shape(layer)
    vectors = -(-wo // ctx.target.vector_width)
    names = [f"{rows}r{nvec}v" for rows in range(1, min(MAX_BLOCK_ROWS, ho) + 1)
             for nvec in range(1, min(MAX_BLOCK_VECTORS, vectors) + 1)]
    if _flat_fits(layer, ctx):
        names.append("flat")
    costs: dict[str, float] = {}
    for name in names:
        for variant in (name, name + "a"):
            plan = _plan(layer, ctx, variant)
            if plan.fits:
                costs[variant] = plan.cycles
    if not costs:  # more taps than registers: the smallest block, weights reloaded
        costs = {"1r1v": _plan(layer, ctx, "1r1v").cycles}
    return sorted((cycles, name) for name, cycles in costs.items())


def lower_pattern_conv(layer: Conv, ctx: LoweringContext, kernel: str,
                      block: str) -> LayerCode:
    """Two phases: pad + stride-split each input channel, then the sparse convolution.

    The convolution's tasks are (image, block of ``R`` output rows, group of filters),
    rows outermost so that threads working at the same time read the same input rows.
    ``block`` is one of ``pattern_blocks``.
    """
    plan = _plan(layer, ctx, block)
    geometry, taps, cw = plan.geometry, plan.taps, plan.compressed
    n, c = geometry.n, geometry.c
    rows, nvec, group = geometry.rows, geometry.nvec, geometry.group
    blob = ctx.blob
    # Depthwise (fused): each task pads its filters' channels one after another into
    # one slot of its own, so the stream's channel offsets are all 0.
    stream, fstart = _kernel_stream(cw, 0 if geometry.fused else geometry.chan)
    offsets = {
        "counts": blob.add(cw.counts), "stream": blob.add(stream), "fstart": blob.add(fstart),
        "bias": blob.add(layer.bias), "order": blob.add(layer.storage_order),
    }
    loads, fmas = _loads_per_kernel(taps, rows, nvec, aligned=geometry.aligned,
                                    width=ctx.target.vector_width)
    unshared, _ = _loads_per_kernel(taps, rows, nvec, share=False, aligned=geometry.aligned,
                                    width=ctx.target.vector_width)

    def pad_body(kb: KernelBuilder, ops: Operands, task: ir.Value) -> None:
        _emit_pad(kb, ops, task, geometry)

    def conv_body(kb: KernelBuilder, ops: Operands, task: ir.Value) -> None:
        _emit_conv(kb, ops, task, geometry, taps, offsets, layer)

    tasks = geometry.tasks
    conv_phase = Phase(kernel, tasks, conv_body)
    return LayerCode(
        layer, [conv_phase] if geometry.fused
        else [Phase("pad", n * c, pad_body), conv_phase],
        kernel=kernel, scratch_bytes=(tasks if geometry.fused else n * c) * geometry.chan * 4,
        notes={"block": (f"{nvec}v flat x {group}f" if geometry.flat
                         else f"{rows}r x {nvec}v x {group}f")
               + (" aligned" if geometry.aligned else ""), "tasks": tasks,
               "loads_per_fma": loads / fmas if fmas else 0.0,
               "loads_per_fma_without_lre": unshared / fmas if fmas else 0.0,
               "kernels": len(cw.channels), "compressed_bytes": cw.nbytes},
    )


def _kernel_stream(cw: CompressedWeights, chan: int) -> tuple[np.ndarray, np.ndarray]:
    """The compressed weights as the kernel reads them: one int32 stream of entries,
    one per kept kernel in storage order, each the element offset of its input
    channel in the padded input (channel x ``chan``) followed by its kept weights
    (float32 bits); and the word where each filter's entries start. One stream leaves
    the inner loop one pointer and no multiply per kernel.

    Raises ``PatccError`` when an offset does not fit int32 (a padded input of 8 GiB).
    """
    kernels, m = len(cw.channels), len(cw.tap_sets)
    if kernels and (int(cw.channels.max()) + 1) * chan >= 2**31:
        raise BackendError(f"a padded input of {(int(cw.channels.max()) + 1) * chan} elements "
                         "is too large for the pattern kernel")
    pattern_of = np.repeat(np.tile(np.arange(m), len(cw.counts)), cw.counts.reshape(-1))
    taps = np.array([len(p) for p in cw.tap_sets], np.int64)[pattern_of]
    entry = np.arange(kernels) + np.concatenate([[0], np.cumsum(taps)[:-1]]).astype(np.int64)
    stream = np.zeros(kernels + len(cw.weights), np.int32)
    stream[entry] = cw.channels.astype(np.int64) * chan
    stream[np.arange(len(cw.weights)) + np.repeat(np.arange(kernels), taps) + 1] = \
        cw.weights.view(np.int32)
    fstart = (cw.kernel_start.astype(np.int64) + cw.weight_start).astype(np.int32)
    return stream, fstart


@dataclass(frozen=True)
class _Plan:
    geometry: _Geometry
    taps: list[list[Tap]]
    compressed: CompressedWeights
    cycles: float
    """The cost model's estimate (cycles of one thread for the whole layer)."""
    fits: bool
    """Whether the loop body fits the target's registers (``block_fits``)."""


def _layer_taps(layer: Conv, cw: CompressedWeights
                ) -> tuple[list[list[Tap]], tuple[tuple[int, int], ...]]:
    """The taps of each pattern and the stride phases (row, column) they read, in
    order: ``Tap.phase`` indexes that tuple. Only phases some tap reads get a plane,
    so the pad phase's code and buffer grow with the kernel, not with the stride."""
    sh, sw = layer.strides
    dh, dw = layer.dilations
    phases = sorted({((dy * dh) % sh, (dx * dw) % sw)
                     for pattern in cw.tap_sets for dy, dx in pattern}) or [(0, 0)]
    index = {p: i for i, p in enumerate(phases)}
    taps = [[Tap(phase=index[(dy * dh) % sh, (dx * dw) % sw],
                 row=(dy * dh) // sh, col=(dx * dw) // sw) for dy, dx in pattern]
            for pattern in cw.tap_sets]
    return taps, tuple(phases)


def _flat_fits(layer: Conv, ctx: LoweringContext) -> bool:
    """Very narrow outputs (7x7 in 16 lanes) can be vectorised over the flattened
    (row, col) positions, the whole image one tile of at most FLAT_ACCUMULATORS."""
    _, _, ho, wo = ctx.out_shape(layer)
    width = ctx.target.vector_width
    max_col = ((layer.kernel_shape[1] - 1) * layer.dilations[1]) // layer.strides[1]
    return 2 * wo <= width and -(-(ho * (wo + max_col)) // width) <= FLAT_ACCUMULATORS


def _plan(layer: Conv, ctx: LoweringContext, block: str) -> _Plan:
    """Geometry, taps and estimated cost of ``layer`` with register block ``block``."""
    n, c, h, w = ctx.in_shape(layer)
    _, o, ho, wo = ctx.out_shape(layer)
    sh, sw = layer.strides
    pt, pl = layer.pads[0], layer.pads[1]
    width = ctx.target.vector_width
    cw = required_compressed_weights(layer)
    taps, phases = _layer_taps(layer, cw)
    all_taps = [t for ts in taps for t in ts] or [Tap(0, 0, 0)]
    max_row, max_col = max(t.row for t in all_taps), max(t.col for t in all_taps)
    aligned = block.endswith("a")
    flat = block.removesuffix("a") == "flat"
    sets = 1
    if flat:
        if not _flat_fits(layer, ctx):
            raise ValueError(f"block 'flat' does not fit a {ho}x{wo} output")
        # Tap (row, col) becomes one offset row * pitch + col, the whole image is one
        # tile, and compressing stores drop the padding columns (77% of the lanes
        # useful at 7x7 in 16 lanes instead of 44%).
        pitch = wo + max_col
        nvec = -(-(ho * pitch) // width)
        rows, tile = 1, nvec * width
        taps = [[Tap(t.phase, 0, t.row * pitch + t.col) for t in ts] for ts in taps]
        # Few accumulators: alternate taps between two sets to keep two FMA chains each.
        sets = 2 if 2 * nvec <= FLAT_ACCUMULATORS else 1
        row_blocks = 1
        wq = pitch
        reach = max(_aligned_reach(t.col, nvec, width) for ts in taps for t in ts) \
            if aligned and any(taps) else 0
        hq = -(-max(tile + max_row * pitch + max_col, reach) // pitch)
    else:
        rows, nvec = _parse_block(block.removesuffix("a"))
        if rows > ho or nvec > -(-wo // width):
            raise ValueError(f"block {block!r} is larger than a {ho}x{wo} output")
        tile = nvec * width
        row_blocks = -(-ho // rows)
        hq = row_blocks * rows + max_row
        wq = -(-wo // tile) * tile + max_col
        if aligned:  # the last tile's neighbour vector included
            last = (-(-wo // tile) - 1) * tile
            wq = max(wq, last + max(_aligned_reach(t.col, nvec, width) for t in all_taps))
        # Rows on whole vectors: a tap's loads then sit at the same offset from a
        # vector boundary on every row and plane, so the addresses of a tile's loads
        # differ by multiples of the vector size (what AArch64's scaled offsets
        # reach from one register per column), and the column-0 taps are aligned.
        wq = -(-wq // width) * width
    plane = hq * wq
    if not flat:
        plane = -(-plane // width) * width
    chan = len(phases) * plane
    # A depthwise conv pads each channel just before its only filter reads it, in one
    # task (image, group of filters): the padded copy is still in L1/L2 when read,
    # instead of a separate pass over memory and a barrier between them.
    fused = layer.is_depthwise
    blocks = 1 if fused else row_blocks  # row blocks per task: all of them when fused
    group = 16
    while group > 1 and n * blocks * -(-o // group) < 32:
        group //= 2
    geometry = _Geometry(n, c, h, w, o, ho, wo, sh, sw, phases, pt, pl, hq, wq, plane, chan,
                         tile, rows, nvec, row_blocks, group, fused, flat, sets, aligned)
    fits = block_fits(ctx.target, rows, nvec, max(map(len, taps), default=0), sets, aligned)
    return _Plan(geometry, taps, cw, _cycles(geometry, taps, cw, ctx.target), fits)


def _parse_block(block: str) -> tuple[int, int]:
    rows, _, rest = block.partition("r")
    if not rest.endswith("v") or not rows.isdigit() or not rest[:-1].isdigit():
        raise ValueError(f"bad pattern-kernel block {block!r}; expected e.g. '4r2v', '4r2va', "
                         "'flat' or 'flata'")
    return int(rows), int(rest[:-1])


def _aligned_reach(col: int, nvec: int, width: int) -> int:
    """Elements past the tile start that the aligned loads of a tap at ``col`` read:
    its ``nvec`` vectors start ``col // width`` vectors in, plus the right neighbour
    when it is cut between two."""
    return (col // width + nvec + (1 if col % width else 0)) * width


def _aligned_loads(ptaps: list[Tap], rows: int, nvec: int, width: int
                   ) -> tuple[set[tuple[int, int, int]], int]:
    """The aligned vectors one kernel of this pattern loads for ``rows`` output rows
    and ``nvec`` vectors (keys (phase, input row, vector index)), and the lane
    shuffles that cut its taps from them."""
    vectors: set[tuple[int, int, int]] = set()
    shuffles = 0
    for phase, row, col in _shared_loads(ptaps, rows):
        first, shift = divmod(col, width)
        for v in range(nvec):
            vectors.add((phase, row, first + v))
            if shift:
                vectors.add((phase, row, first + v + 1))
                shuffles += 1
    return vectors, shuffles


LOOP_OVERHEAD_CYCLES = 2.0
"""Per kept kernel and tile: the channel load, address arithmetic and branch."""
PATTERN_LOOP_CYCLES = 6.0
"""Per pattern loop entered (filter, tile, pattern): its count, set-up and the exit
branch, mispredicted now and then since counts differ between filters."""
CACHE_LINE_BYTES = 64
SHUFFLES_PER_CYCLE = 1.0
"""Lane shuffles a core issues per cycle (one shuffle port on x86 and most ARM cores)."""


def _unaligned_load_cost(width: int) -> float:
    """Load slots an unaligned vector load of ``width`` floats costs on average: two
    when it crosses a cache line, which one at a random float offset does with odds
    (vector bytes - 4) / 64: nearly always with 16 lanes, one time in five with 4."""
    return 1.0 + max(0, 4 * width - 4) / CACHE_LINE_BYTES


def _cycles(g: _Geometry, taps: list[list[Tap]], cw: CompressedWeights,
            target: Target) -> float:
    """Estimated cycles of the convolution on one core of ``target`` (the cost model).

    Per kept kernel and output tile the inner loop runs no faster than the target
    issues its FMAs, its loads and its lane shuffles (``lane_shift_ops`` each), nor
    than the FMA latency lets each accumulator chain advance; plus the loop's own
    overhead, and every pattern loop entered and every tile's epilogue. Partial tiles
    (the last rows and columns) cost what their vectors cost, so a block that wastes
    lanes is charged for them.
    """
    kernels = cw.counts.sum(axis=0, dtype=np.int64)  # kept kernels per pattern, all filters
    used = int(np.count_nonzero(cw.counts))  # (filter, pattern) loops that run
    if g.flat:
        shapes = [(1, g.nvec, 1)]
    else:
        full_cols, tail_cols = divmod(g.wo, g.tile)
        col_tiles = [(g.nvec, full_cols)] + ([(-(-tail_cols // (g.tile // g.nvec)), 1)]
                                              if tail_cols else [])
        tail_rows = g.ho - (g.row_blocks - 1) * g.rows
        row_tiles = [(g.rows, g.row_blocks - 1), (tail_rows, 1)]
        shapes = [(r, v, rc * vc) for r, rc in row_tiles for v, vc in col_tiles if rc * vc]
    total = 0.0
    split = 1.0 if g.aligned else _unaligned_load_cost(g.tile // g.nvec)
    shift_cost = target.lane_shift_ops / SHUFFLES_PER_CYCLE
    for rows, nvec, count in shapes:
        for ptaps, k in zip(taps, kernels, strict=True):
            shuffles = 0
            if g.aligned:
                vectors, shuffles = _aligned_loads(ptaps, rows, nvec, g.tile // g.nvec)
                loads = len(vectors) + len(ptaps) + 1.0
            else:
                loads = len(_shared_loads(ptaps, rows)) * nvec * split + len(ptaps) + 1
            fmas = len(ptaps) * rows * nvec
            if target.shifts_on_fma_pipes:  # the shifts take FMA slots
                fma_cycles, shift_cycles = (fmas + shuffles * target.lane_shift_ops) \
                    / target.fma_per_cycle, 0.0
            else:
                fma_cycles, shift_cycles = fmas / target.fma_per_cycle, shuffles * shift_cost
            step = max(fma_cycles, loads / target.loads_per_cycle,
                       target.fma_latency * len(ptaps) / g.sets,
                       shift_cycles) + LOOP_OVERHEAD_CYCLES
            total += float(k) * count * step
        total += count * (g.o * 3 * rows * nvec + used * PATTERN_LOOP_CYCLES)
    return total * g.n


def _shared_loads(ptaps: list[Tap], rows: int) -> dict[tuple[int, int, int], list[tuple[int, int]]]:
    """Input vectors one kernel of this pattern reads for ``rows`` output rows.

    Key (phase, row, col) -> the (output row, tap) pairs that use it: a vector loaded
    once serves every tap and row that reads it (kernel-level load-redundancy
    elimination; a vertical pattern over 4 rows loads 6 rows, not 12).
    """
    users: dict[tuple[int, int, int], list[tuple[int, int]]] = {}
    for t, tap in enumerate(ptaps):
        for r in range(rows):
            users.setdefault((tap.phase, r + tap.row, tap.col), []).append((r, t))
    return users


def _loads_per_kernel(taps: list[list[Tap]], rows: int, nvec: int, share: bool = True,
                      aligned: bool = False, width: int = 1) -> tuple[int, int]:
    """(loads, FMAs) of the inner loop summed over one kernel of each pattern; with
    ``share=False``, as if every (row, tap) pair loaded its own input vectors (the
    code without kernel-level load-redundancy elimination); ``aligned`` counts the
    aligned vectors the taps are cut from (two for a tap between vectors)."""
    loads = fmas = 0
    for ptaps in taps:
        if aligned and share:
            vectors = len(_aligned_loads(ptaps, rows, nvec, width)[0])
        elif aligned:
            vectors = sum(1 if tap.col % width == 0 else 2 for tap in ptaps) * rows * nvec
        else:
            vectors = (len(_shared_loads(ptaps, rows)) if share else len(ptaps) * rows) * nvec
        loads += vectors + len(ptaps) + 1  # + weights, channel
        fmas += len(ptaps) * rows * nvec
    return loads, fmas


@dataclass(frozen=True)
class _Geometry:
    n: int
    c: int
    h: int
    w: int
    o: int
    ho: int
    wo: int
    sh: int
    sw: int
    phases: tuple[tuple[int, int], ...]
    """The stride phases (row, column) that have a plane, in plane order."""
    pt: int
    pl: int
    hq: int
    wq: int
    plane: int
    chan: int
    tile: int
    rows: int
    nvec: int
    row_blocks: int
    group: int
    fused: bool
    """Depthwise: each task pads its filters' channels itself (no pad phase)."""
    flat: bool
    """One tile of ``nvec`` vectors over the flattened image, row pitch ``wq``."""
    sets: int
    """Accumulator sets the taps alternate between (summed before the store)."""
    aligned: bool
    """Rows on whole vectors; taps cut from aligned loads with lane shuffles."""

    @property
    def task_row_blocks(self) -> int:
        """Row blocks the tasks are split by: 1 when fused (a task does every row)."""
        return 1 if self.fused else self.row_blocks

    @property
    def tasks(self) -> int:
        """(image, row block, filter group) tasks of the convolution phase."""
        return self.n * self.task_row_blocks * -(-self.o // self.group)


def _emit_pad(kb: KernelBuilder, ops: Operands, task: ir.Value, g: _Geometry,
              slot: ir.Value | None = None) -> None:
    """Task (n, c) (flat index ``n * C + c``): zero-padded, stride-split copy of one
    input channel, the planes of its read stride phases one after the other, into
    scratch slot ``slot`` (default: the channel's own)."""
    b = kb.b
    src = kb.at(ops.inputs[0], b.mul(task, i64(g.h * g.w)))
    dst = b.mul(task if slot is None else slot, i64(g.chan))
    for index, phase in enumerate(g.phases):
        plane = kb.at(ops.scratch, b.add(dst, i64(index * g.plane)))
        fill_plane(kb, src, plane, (g.h, g.w), (g.hq, g.wq), (g.sh, g.sw), phase,
                   (g.pt, g.pl))


class _InputLoads:
    """The input vectors of one kept kernel at one output tile (``cbase``: its
    channel's plane at the tile's first pixel)."""

    def __init__(self, kb: KernelBuilder, xbase: ir.Value, cbase: ir.Value,
                 g: _Geometry) -> None:
        self.kb, self.xbase, self.cbase, self.g = kb, xbase, cbase, g
        self.aligned: dict[tuple[int, int, int], ir.Value] = {}

    def tap(self, phase: int, row: int, col: int) -> ir.Value:
        """The vector at ``col`` of tile row ``row`` of stride phase ``phase``: one
        load, or (aligned layout) cut from the two aligned vectors around it."""
        g, b, width = self.g, self.kb.b, self.kb.width
        if not g.aligned:
            return self.kb.vload(self.xbase, b.add(self.cbase, i64(
                phase * g.plane + row * g.wq + col)))
        first, shift = divmod(col, width)
        if not shift:
            return self._vector(phase, row, first)
        return self.kb.lane_shift(self._vector(phase, row, first),
                                  self._vector(phase, row, first + 1), shift)

    def _vector(self, phase: int, row: int, index: int) -> ir.Value:
        """The aligned vector ``index`` of (phase, row), loaded once per kernel."""
        key = (phase, row, index)
        if key not in self.aligned:
            at = self.kb.b.add(self.cbase, i64(phase * self.g.plane + row * self.g.wq
                                               + index * self.kb.width))
            self.aligned[key] = self.kb.vload(self.xbase, at)
        return self.aligned[key]


def _flat_position(q: int, g: _Geometry) -> int:
    """Output pixels before flattened position ``q`` (row pitch ``g.wq``)."""
    full_rows, col = divmod(q, g.wq)
    return min(full_rows * g.wo + min(col, g.wo), g.ho * g.wo)


def _emit_conv(kb: KernelBuilder, ops: Operands, task: ir.Value, g: _Geometry,
               taps: list[list[Tap]], off: dict[str, int], layer: Conv) -> None:
    """Task (image, row block, filter group): R x NV register tiles per filter.

    Fused (depthwise): task (image, filter group), and each filter first pads its
    input channel, then computes all its row blocks.
    """
    b, width = kb.b, kb.width
    groups = -(-g.o // g.group)
    rb_count = g.row_blocks
    ni = b.sdiv(task, i64(g.task_row_blocks * groups))
    rest = b.srem(task, i64(g.task_row_blocks * groups))
    rb_task = b.sdiv(rest, i64(groups))
    fg = b.srem(rest, i64(groups))
    counts = ops.weights(kb, off["counts"])
    stream = ops.weights(kb, off["stream"])
    fstart = ops.weights(kb, off["fstart"])
    biases = ops.weights(kb, off["bias"])
    order = ops.weights(kb, off["order"])
    i16 = ir.IntType(16)
    # Depthwise: the task's own slot, reused by each of its channels (it stays in L1/L2
    # and is never written back); otherwise the image's padded channels.
    xbase = kb.at(ops.scratch, b.mul(task if g.fused else b.mul(ni, i64(g.c)), i64(g.chan)))
    acc_slots = [[[kb.entry_alloca(kb.vec, f"acc{s}_{r}_{v}") for v in range(g.nvec)]
                  for r in range(g.rows)] for s in range(g.sets)]
    pslot = kb.entry_alloca(I64, "pos")
    full_tiles = g.wo // g.tile
    tail_cols = g.wo - full_tiles * g.tile
    tail_rows = g.ho - (rb_count - 1) * g.rows
    shared = [_shared_loads(ptaps, g.rows) for ptaps in taps]

    def tile(f: ir.Value, oh0: ir.Value, ow0: ir.Value, rows: int, cols: int) -> None:
        """Filter at storage position ``f``; it writes its original output channel."""
        lanes = [min(width, cols - v * width) for v in range(-(-cols // width))]
        out_ch = b.sext(kb.load(order, f, I32), I64)
        # Accumulators start at zero (rematerialised for free), the bias is added in
        # the epilogue: started from one broadcast bias, every accumulator would be
        # that one value until a pattern loop runs, and LLVM keeps it in a register
        # through all the loops, one fewer for the block.
        for slots in acc_slots:
            for r in range(rows):
                for v in range(len(lanes)):
                    b.store(kb.const(kb.vec, 0.0), slots[r][v])
        b.store(b.sext(kb.load(fstart, f, I32), I64), pslot)
        pix = b.add(b.mul(oh0, i64(g.wq)), ow0)
        for p, ptaps in enumerate(taps):
            count = b.zext(kb.load(counts, b.add(b.mul(f, i64(len(taps))), i64(p)), i16), I64)
            entry = 1 + len(ptaps)
            with kb.loop(0, count, 1, f"k{p}") as j:
                e = b.add(b.load(pslot, typ=I64), b.mul(j, i64(entry)))
                cbase = b.add(b.sext(kb.load(stream, e, I32), I64), pix)
                wv = [kb.splat(kb.load(stream, b.add(e, i64(1 + t))))
                      for t in range(len(ptaps))]
                accs = [[[b.load(slots[r][v], typ=kb.vec) for v in range(len(lanes))]
                         for r in range(rows)] for slots in acc_slots]
                loads = _InputLoads(kb, xbase, cbase, g)
                # Input rows in order: a row's vectors are dead once its taps are done,
                # so at most one row's are live (``block_registers``).
                for (phase, row, col), users in sorted(shared[p].items()):
                    live = [(r, t) for r, t in users if r < rows]
                    if not live:
                        continue
                    for v in range(len(lanes)):  # each vector used as soon as loaded
                        x = loads.tap(phase, row, col + v * width)
                        for r, t in live:
                            acc = accs[t % g.sets][r]
                            acc[v] = kb.fma(wv[t], x, acc[v])
                for acc, slots in zip(accs, acc_slots, strict=True):
                    for r in range(rows):
                        for v in range(len(lanes)):
                            b.store(acc[r][v], slots[r][v])
            b.store(b.add(b.load(pslot, typ=I64), b.mul(count, i64(entry))), pslot)
        bias = kb.splat(kb.load(biases, out_ch))
        plane_out = b.mul(b.add(b.mul(ni, i64(g.o)), out_ch), i64(g.ho * g.wo))
        for r in range(rows):
            row_base = b.add(plane_out, b.add(b.mul(b.add(oh0, i64(r)), i64(g.wo)), ow0))
            for v, n_lanes in enumerate(lanes):
                acc = b.fadd(b.load(acc_slots[0][r][v], typ=kb.vec), bias)
                for slots in acc_slots[1:]:
                    acc = b.fadd(acc, b.load(slots[r][v], typ=kb.vec))
                if g.flat:  # lanes at padding columns (or past the image) are dropped
                    first = v * width
                    valid = [q < g.ho * g.wq and q % g.wq < g.wo
                             for q in range(first, first + width)]
                    index = b.add(plane_out, i64(_flat_position(first, g)))
                    if len(layer.inputs) > 1:
                        acc = b.fadd(acc, kb.expand_load(ops.inputs[1], index, valid))
                    kb.compress_store(kb.activation(layer.activation, acc), ops.outputs[0],
                                      index, valid)
                    continue
                index = b.add(row_base, i64(v * width))
                if len(layer.inputs) > 1:
                    acc = b.fadd(acc, kb.vload(ops.inputs[1], index, n_lanes))
                kb.vstore(kb.activation(layer.activation, acc), ops.outputs[0], index, n_lanes)

    def row_block(f: ir.Value, oh0: ir.Value, rows: int) -> None:
        with kb.loop(0, full_tiles * g.tile, g.tile, "ow") as ow0:
            tile(f, oh0, ow0, rows, g.tile)
        if tail_cols:
            tile(f, oh0, i64(full_tiles * g.tile), rows, tail_cols)

    def filter_rows(f: ir.Value, rb: ir.Value) -> None:
        if g.flat:
            tile(f, i64(0), i64(0), 1, g.tile)
            return
        oh0 = b.mul(rb, i64(g.rows))
        if tail_rows == g.rows:
            row_block(f, oh0, g.rows)
            return
        last = b.icmp_signed("==", rb, i64(rb_count - 1))
        with b.if_else(last) as (then, otherwise):
            with then:
                row_block(f, oh0, tail_rows)
            with otherwise:
                row_block(f, oh0, g.rows)

    f_lo = b.mul(fg, i64(g.group))
    f_hi = b.add(f_lo, i64(g.group))
    f_hi = b.select(b.icmp_signed("<", f_hi, i64(g.o)), f_hi, i64(g.o))
    with kb.loop(f_lo, f_hi, 1, "f") as f:
        if g.fused:  # depthwise: filter f reads only input channel order[f]
            channel = b.sext(kb.load(order, f, I32), I64)
            _emit_pad(kb, ops, b.add(b.mul(ni, i64(g.c)), channel), g, slot=task)
            with kb.loop(0, rb_count, 1, "rb") as rb:
                filter_rows(f, rb)
        else:
            filter_rows(f, rb_task)
