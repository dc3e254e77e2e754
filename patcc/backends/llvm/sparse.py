"""The sparse pointwise kernel: 1x1 convs with unstructured zeros as a sparse x dense
matrix product (SpMM) that never multiplies a removed weight.

A 1x1, stride-1, unpadded, ungrouped conv is Y[O, P] = W[O, C] X[C, P] per image, with
P = H*W pixels. The kernel vectorises along pixels: a *tile* of ``nvec`` vectors of one
image's pixels, accumulated in registers for a *block* of ``F`` filters at once.

Filter-level load-redundancy elimination: the input channels a block reads are sorted
by which of its filters use them (a non-empty subset S of the F filters, one of
2^F - 1), and the kernel has one loop per subset, with S fixed in the code. An
iteration loads the channel's ``nvec`` input vectors once and multiplies them by the
|S| weights of that channel, so each loaded vector serves |S| FMAs and no zero weight
is multiplied or tested. Measured on Zen 5 with every operand in L1, one filter at a
time (one vector load per FMA, plus the weight and the channel) ran at 1.2-1.35 FMAs
per cycle, bound by vector loads; blocks of 3-4 filters at 50% density reach 1.6-1.75
(2 is the peak). In whole models 3 filters win: 4 have 15 loops of few iterations.

Input channels are processed in chunks of ``k_chunk`` (K blocking). A task first copies
the chunk's rows of its tile into a small buffer on its stack, one row after another,
each a whole number of vectors; then every filter of the task reads the chunk from
there. Partial sums wait in the output between chunks, which get the bias at the first
chunk and the residual and activation at the last. The copy made the kernel 10-25%
faster than reading the rows in place: every filter's first pass over a chunk missed
L1 (rows a whole image apart defeat the prefetchers and spread over dozens of pages),
and rows of 7x7 or 14x14 images start inside cache lines, so every vector load was
split across two lines and the last one needed a mask. The buffer is the same few KiB
for every chunk and task, so it stays in L1 and is never written back.

Weights are stored per (chunk, block, subset) in the blocks' visiting order (filters by
decreasing non-zero count, so the heaviest tasks start first under the pool's dynamic
schedule): an entry is the channel's element offset in the chunk buffer (int32), then
the |S| weights (fp32), read as one sequential stream.

Tasks are (image, tile, group of blocks). Tiles are balanced: the image's vectors are
split into ``ceil(vectors / nvec)`` tiles of ``q`` or ``q + 1`` vectors, so a 14x14
image (12 full vectors and one of 4 pixels) runs tiles of 4, 3, 3, 3 vectors rather
than 4, 4, 4, 1, whose last tile would pay the per-channel scalar loads for one vector.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

import numpy as np
from llvmlite import ir

from patcc.backends.llvm.irutil import F32, I32, I64, KernelBuilder, i64
from patcc.backends.llvm.lowering import LayerCode, LoweringContext, Operands, Phase
from patcc.backends.planning import SPARSE, conv_kernels, required_filter_order
from patcc.errors import BackendError
from patcc.ir.layers import Conv

Block = tuple[int, int, int, int]
"""(nvec, block_filters, task_filters, k_chunk): vectors of pixels per tile, filters
accumulated together (F), filters per task (a multiple of F), input channels per
chunk."""

L1_CHUNK_BYTES = 28 * 1024
"""Bytes of a chunk buffer at most: most of a 48 KiB L1 (Zen 4/5, recent Intel
cores), leaving room for the streamed weights, the rows being copied and the output."""

MAX_BLOCK_FILTERS = 4
"""Filters accumulated together at most: 2^F - 1 loops per block and chunk."""


def _widest(block_filters: int, registers: int) -> int:
    """The most vectors per tile whose accumulators (F per vector), the input vectors
    of a channel and a broadcast weight fit the registers."""
    return (registers - 1) // (block_filters + 1)


def _fits(nvec: int, block_filters: int, registers: int) -> bool:
    return nvec <= _widest(block_filters, registers)


@dataclass(frozen=True)
class _Tiles:
    """How one image's ``pixels`` split into ``count`` tiles of whole vectors.

    The first ``big`` tiles have ``q + 1`` vectors, the others ``q``; only the image's
    last vector may be partial.
    """

    pixels: int
    width: int
    count: int
    q: int
    big: int

    @staticmethod
    def split(pixels: int, width: int, nvec: int) -> _Tiles:
        vectors = -(-pixels // width)
        count = -(-vectors // nvec)
        q, big = divmod(vectors, count)
        return _Tiles(pixels, width, count, q, big)

    @property
    def widest(self) -> int:
        """Vectors of the largest tile."""
        return self.q + (self.big > 0)

    @property
    def tail(self) -> int:
        """Pixels in the image's last vector."""
        return self.pixels - (-(-self.pixels // self.width) - 1) * self.width

    def variants(self) -> list[tuple[int, tuple[int, ...]]]:
        """Runs of tiles with the same shape, in tile order: (end tile, pixels in each
        vector); a run covers the tiles from the previous run's end to its own."""
        runs: list[tuple[int, tuple[int, ...]]] = []
        for lo, hi, nv in ((0, self.big, self.q + 1), (self.big, self.count - 1, self.q),
                           (self.count - 1, self.count, self.q)):
            if hi <= lo:
                continue
            lanes = (self.width,) * (nv - 1) + (self.tail if hi == self.count else self.width,)
            if runs and runs[-1][1] == lanes:
                runs[-1] = (hi, lanes)
            else:
                runs.append((hi, lanes))
        return runs


def _subsets(block_filters: int) -> list[tuple[int, ...]]:
    """The non-empty subsets of a block's filters, in loop order (by size, then
    lexicographic), each as the sorted filter positions."""
    return [s for size in range(1, block_filters + 1)
            for s in itertools.combinations(range(block_filters), size)]


@dataclass(frozen=True)
class _Geometry:
    """The layer's shape and the block's sizes, capped to the layer."""

    n: int
    c: int
    o: int
    tiles: _Tiles
    block_filters: int
    blocks_per_task: int
    k_chunk: int
    residual: bool

    @property
    def chunks(self) -> int:
        return -(-self.c // self.k_chunk)

    @property
    def blocks(self) -> int:
        return -(-self.o // self.block_filters)

    @property
    def groups(self) -> int:
        return -(-self.blocks // self.blocks_per_task)

    @property
    def tasks(self) -> int:
        return self.n * self.tiles.count * self.groups

    @property
    def pitch(self) -> int:
        """Elements between two rows of the chunk buffer: the widest tile."""
        return self.tiles.widest * self.tiles.width

    @property
    def subsets(self) -> list[tuple[int, ...]]:
        return _subsets(self.block_filters)


@dataclass(frozen=True)
class _SparseWeights:
    """The kernel's weight arrays (see the module docstring)."""

    order: np.ndarray  # int32 (blocks * F,): storage position -> output channel
    start: np.ndarray  # int32 (chunks * blocks * subsets + 1,): first word of each loop
    entries: np.ndarray  # int32 words: per entry a buffer offset, then |S| fp32 weights
    nonzeros: int
    loads: int  # of the inner loops, summed over entries, for ``nvec`` vectors
    fmas: int
    iterations: int  # of the inner loops: (channel, subset) pairs

    @property
    def nbytes(self) -> int:
        return int(self.order.nbytes + self.start.nbytes + self.entries.nbytes)


def _sparse_weights(layer: Conv, g: _Geometry) -> _SparseWeights:
    """Entries of every (chunk, block, subset) loop, in that order (the order the
    kernel reads them), channels ascending.

    Raises ``PatccError`` when buffer offsets would overflow int32.
    """
    o, c = layer.weight.shape[:2]
    if g.k_chunk * g.pitch >= 2**31:
        raise BackendError(f"conv {layer.name!r}: a chunk of {g.k_chunk} channels of "
                         f"{g.pitch} pixels is too large for the sparse pointwise kernel; "
                         "use a smaller block")
    f = g.block_filters
    order = np.zeros(g.blocks * f, np.int32)
    order[:o] = required_filter_order(layer)
    # positions past the last filter read the block's first filter (never stored)
    order[o:] = order[(g.blocks - 1) * f]
    w = np.zeros((g.blocks * f, c), np.float32)
    w[:o] = layer.weight.reshape(o, c)[order[:o]]
    blocks = w.reshape(g.blocks, f, c)
    # the subset of each (block, channel), as a bit mask over the block's filters
    masks = ((blocks != 0) << np.arange(f)[None, :, None]).sum(axis=1)
    loop_of_mask = np.full(1 << f, -1)
    for i, subset in enumerate(g.subsets):
        loop_of_mask[sum(1 << k for k in subset)] = i
    blk, ch = np.nonzero(masks)
    mask = masks[blk, ch]
    loop = (ch // g.k_chunk * g.blocks + blk) * len(g.subsets) + loop_of_mask[mask]
    by_loop = np.lexsort((ch, loop))  # by loop, then channel
    blk, ch, mask, loop = blk[by_loop], ch[by_loop], mask[by_loop], loop[by_loop]
    sizes = [bin(m).count("1") for m in range(1 << f)]
    used = np.array(sizes)[mask]
    first_word = np.concatenate([[0], np.cumsum(1 + used)])
    words = np.zeros(int(first_word[-1]), np.int32)
    words[first_word[:-1]] = ch % g.k_chunk * g.pitch
    for k in range(f):
        has = (mask >> k) & 1 == 1
        rank = np.array([sizes[m & ((1 << k) - 1)] for m in range(1 << f)])[mask[has]]
        words[first_word[:-1][has] + 1 + rank] = blocks[blk[has], k, ch[has]].view(np.int32)
    per_loop = np.bincount(loop, weights=1 + used, minlength=g.blocks * g.chunks
                           * len(g.subsets)).astype(np.int64)
    start = np.concatenate([[0], np.cumsum(per_loop)]).astype(np.int32)
    nvec = g.tiles.widest
    return _SparseWeights(order, start, words, int(np.count_nonzero(layer.weight)),
                          loads=int(len(ch) * (nvec + 1) + used.sum()),
                          fmas=int(used.sum()) * nvec, iterations=len(ch))


def _blocks_per_task(blocks: int, tile_tasks: int, min_tasks: int) -> int:
    """Blocks per task: all of them, unless that leaves fewer than ``min_tasks``."""
    groups = min(blocks, -(-min_tasks // tile_tasks))
    return -(-blocks // groups)


def _k_chunk(c: int, nvec: int, width: int) -> int:
    """Input channels per chunk so the chunk buffer fits ``L1_CHUNK_BYTES``, equalised
    so the last chunk is not a sliver."""
    fit = max(1, L1_CHUNK_BYTES // (nvec * width * 4))
    chunks = -(-c // fit)
    return -(-c // chunks)


CANDIDATES = ((3, 2), (3, 8), (2, 2), (3, 32), (4, 2))
"""(block_filters, tasks at least) of the candidate blocks, best first, each with the
widest tile its registers allow. Measured on MobileNetV2 (Zen 5, AVX-512, 2 threads),
3 filters of 7 vectors in at least 2 tasks won on every 1x1 layer but one (where 8
tasks tied); 2 filters lost 5-20% to their weaker reuse, 4 filters 20-45% to their 15
short loops; more tasks lose up to 45% on 7x7 and 14x14 layers, because every task
copies its tile's chunks, and are there for machines with more threads."""


ENTRY_CYCLES = 2.2
"""Per inner-loop iteration: the offset load's latency into the address, the branch."""
SUBSET_LOOP_CYCLES = 0.5
"""Per subset loop entered (tile, chunk, block): its bounds and the exit branch."""
PARTIAL_VECTOR_CYCLES = 6.0
"""Per vector of a block's partial sums read and written back between chunks."""
COPY_VECTOR_CYCLES = 0.6
"""Per vector copied into a chunk buffer.

The constants are a least-squares fit to the measured times of every block of
MobileNetV2's 1x1 convs on Zen 4 (AVX2 build, 2 threads): the partial sums, which
go to the output tensor, cost ten times a copied vector."""


def sparse_pointwise_options(layer: Conv, ctx: LoweringContext) -> list[tuple[float, Block]]:
    """The candidate blocks (``sparse_pointwise_blocks``) with their estimated cycles
    on one core of ``ctx.target``, the cheapest first.

    Per tile: the inner loops at the rate the target issues their FMAs and loads
    (weights, offsets and input vectors, from the block's own weight layout), each
    iteration's overhead, every subset loop entered, and the memory traffic: the copy
    of its chunks (for each task that copies them) and each block's partial sums read
    and written per chunk.
    """
    n, c, h, w = ctx.in_shape(layer)
    o = layer.out_channels
    target = ctx.target
    ranked = []
    for block in sparse_pointwise_blocks(layer, ctx):
        nvec, f, task_filters, k_chunk = block
        tiles = _Tiles.split(h * w, target.vector_width, nvec)
        g = _Geometry(n, c, o, tiles, f, -(-min(task_filters, o) // f), min(k_chunk, c),
                      len(layer.inputs) > 1)
        sw = _sparse_weights(layer, g)
        inner = max(sw.fmas / target.fma_per_cycle, sw.loads / target.loads_per_cycle) \
            + sw.iterations * ENTRY_CYCLES
        loops = g.chunks * g.blocks * len(g.subsets) * SUBSET_LOOP_CYCLES
        partial = g.chunks * g.blocks * f * 2 * tiles.widest * PARTIAL_VECTOR_CYCLES
        copy = g.groups * c * tiles.widest * COPY_VECTOR_CYCLES
        ranked.append((n * tiles.count * (inner + loops + partial + copy), block))
    return sorted(ranked, key=lambda pair: pair[0])


def sparse_pointwise_blocks(layer: Conv, ctx: LoweringContext) -> list[Block]:
    """Legal block candidates (see ``Block``) for this layer, in ``CANDIDATES`` order:
    for each block of filters the widest tile the registers allow."""
    n, c, h, w = ctx.in_shape(layer)
    o = layer.out_channels
    width = ctx.target.vector_width
    registers = ctx.target.vector_registers
    vectors = -(-h * w // width)
    candidates: list[Block] = []
    for f, min_tasks in CANDIDATES:
        f = min(f, o)
        nv = min(_widest(f, registers), vectors)
        if nv < 1:
            continue
        tiles = _Tiles.split(h * w, width, nv)
        per_task = _blocks_per_task(-(-o // f), n * tiles.count, min_tasks)
        block = (nv, f, per_task * f, _k_chunk(c, nv, width))
        if block not in candidates:
            candidates.append(block)
    return candidates


def block_name(block: Block) -> str:
    """A block in schedule notation: (7, 3, 96, 64) is ``7v3f96t64k``."""
    nvec, f, task_filters, k_chunk = block
    return f"{nvec}v{f}f{task_filters}t{k_chunk}k"


def parse_block(text: str) -> Block:
    """The block ``block_name`` wrote; raises ``ValueError`` for another text."""
    match = re.fullmatch(r"(\d+)v(\d+)f(\d+)t(\d+)k", text)
    if match is None:
        raise ValueError(f"bad sparse pointwise block {text!r}; expected "
                         "'<nvec>v<block filters>f<task filters>t<k chunk>k', e.g. '7v3f96t64k'")
    nvec, f, task_filters, k_chunk = map(int, match.groups())
    return nvec, f, task_filters, k_chunk


def _checked(block: Block, vectors: int, o: int, registers: int) -> Block:
    """``block`` with ``nvec`` and F capped by the layer (``vectors`` per image, ``o``
    filters); raises ``ValueError`` if it is not legal."""
    if len(block) == 4 and all(isinstance(x, int) and x >= 1 for x in block):
        nvec, f, task_filters, k_chunk = block
        nvec, f = min(nvec, vectors), min(f, o)
        if f <= MAX_BLOCK_FILTERS and _fits(nvec, f, registers):
            return nvec, f, task_filters, k_chunk
    raise ValueError(
        f"sparse pointwise block {block} is not legal: expected positive (nvec, "
        f"block_filters <= {MAX_BLOCK_FILTERS}, task_filters, k_chunk) with "
        f"(block_filters + 1) * nvec + 1 <= {registers} registers, e.g. (7, 3, 96, 64)")


def lower_sparse_pointwise(layer: Conv, ctx: LoweringContext,
                           block: Block | None = None) -> LayerCode:
    """The SpMM as one phase of (image, tile, filter group) tasks.

    ``block`` is (nvec, block_filters, task_filters, k_chunk), None for the first
    candidate of ``sparse_pointwise_blocks``; each is capped by the layer's size and
    ``task_filters`` rounded up to whole blocks. Raises ``ValueError`` for an illegal
    block or an unsupported layer.
    """
    if SPARSE not in conv_kernels(layer):
        raise ValueError(f"conv {layer.name!r} is not a sparse 1x1 conv "
                         "(see patcc.backends.planning.conv_kernels)")
    n, c, h, w = ctx.in_shape(layer)
    o = layer.out_channels
    width = ctx.target.vector_width
    if block is None:
        block = sparse_pointwise_blocks(layer, ctx)[0]
    nvec, f, task_filters, k_chunk = _checked(block, -(-h * w // width), o,
                                              ctx.target.vector_registers)
    tiles = _Tiles.split(h * w, width, nvec)
    g = _Geometry(n, c, o, tiles, f, -(-min(task_filters, o) // f), min(k_chunk, c),
                  len(layer.inputs) > 1)
    sw = _sparse_weights(layer, g)
    offsets = {"order": ctx.blob.add(sw.order), "start": ctx.blob.add(sw.start),
               "entries": ctx.blob.add(sw.entries), "bias": ctx.blob.add(layer.bias)}

    def body(kb: KernelBuilder, ops: Operands, task: ir.Value) -> None:
        _emit_task(kb, ops, task, g, offsets, layer)

    details = [f"{tiles.widest}v", f"{f}f block", f"{g.blocks_per_task * f}f"]
    if g.chunks > 1:
        details.append(f"{g.k_chunk}k")
    return LayerCode(
        # The chunk buffer is on each task's stack, so the phase stays out of line.
        layer, [Phase("sparse", g.tasks, body)], kernel="sparse",
        scratch_bytes=0,
        notes={"block": " x ".join(details), "tasks": g.tasks,
               "loads_per_fma": sw.loads / sw.fmas if sw.fmas else 0.0,
               "loads_per_fma_without_lre": (tiles.widest + 2) / tiles.widest,
               "kernels": sw.nonzeros, "compressed_bytes": sw.nbytes},
    )


@dataclass(frozen=True)
class _TaskValues:
    """Values a task computes once: where its tile is read and written, its blocks,
    the chunk buffer and the weight arrays."""

    source: ir.Value  # the tile's first pixel of channel 0 in the input
    image_out: ir.Value  # element index of the tile's first output pixel, channel 0
    b_lo: ir.Value
    b_hi: ir.Value
    buffer: ir.Value
    order: ir.Value
    start: ir.Value
    entries: ir.Value
    bias: ir.Value


def _emit_task(kb: KernelBuilder, ops: Operands, task: ir.Value, g: _Geometry,
               off: dict[str, int], layer: Conv) -> None:
    """Task (image, tile, group of blocks): branch on the tile's shape, run its chunks."""
    b = kb.b
    tiles = g.tiles
    ni = b.sdiv(task, i64(tiles.count * g.groups))
    rest = b.srem(task, i64(tiles.count * g.groups))
    ti = b.sdiv(rest, i64(g.groups))
    gi = b.srem(rest, i64(g.groups))
    bigs = b.select(b.icmp_signed("<", ti, i64(tiles.big)), ti, i64(tiles.big))
    p0 = b.mul(b.add(b.mul(ti, i64(tiles.q)), bigs), i64(tiles.width))
    b_lo = b.mul(gi, i64(g.blocks_per_task))
    b_hi = b.add(b_lo, i64(g.blocks_per_task))
    if g.blocks % g.blocks_per_task:
        b_hi = b.select(b.icmp_signed("<", b_hi, i64(g.blocks)), b_hi, i64(g.blocks))
    with b.goto_entry_block():
        # typed as vectors: every access to the buffer is a whole vector
        buffer = b.alloca(kb.vec, size=i64(g.k_chunk * g.pitch // kb.width), name="chunk")
        buffer.align = 64
    a = _TaskValues(
        source=kb.at(ops.inputs[0], b.add(b.mul(ni, i64(g.c * tiles.pixels)), p0)),
        image_out=b.add(b.mul(ni, i64(g.o * tiles.pixels)), p0), b_lo=b_lo, b_hi=b_hi,
        buffer=buffer, order=ops.weights(kb, off["order"]),
        start=ops.weights(kb, off["start"]), entries=ops.weights(kb, off["entries"]),
        bias=ops.weights(kb, off["bias"]))

    def chain(runs: list[tuple[int, tuple[int, ...]]]) -> None:
        """One copy of the tile code per run of same-shape tiles."""
        (end, lanes), later = runs[0], runs[1:]
        if not later:
            _emit_tile(kb, ops, a, g, lanes, layer)
            return
        with b.if_else(b.icmp_signed("<", ti, i64(end))) as (this, other):
            with this:
                _emit_tile(kb, ops, a, g, lanes, layer)
            with other:
                chain(later)

    chain(tiles.variants())


def _emit_tile(kb: KernelBuilder, ops: Operands, a: _TaskValues, g: _Geometry,
               lanes: tuple[int, ...], layer: Conv) -> None:
    """For each chunk: copy it into the buffer, then run every block of the task over
    it, for one tile shape (``lanes``: pixels in each vector)."""
    b = kb.b
    slots = [[kb.entry_alloca(kb.vec, f"acc{k}_{v}") for v in range(len(lanes))]
             for k in range(g.block_filters)]

    def chunk_body(chunk: ir.Value | None) -> None:
        c_lo = i64(0) if chunk is None else b.mul(chunk, i64(g.k_chunk))
        rows: int | ir.Value = g.k_chunk
        if chunk is not None and g.c % g.k_chunk:
            rows = b.select(b.icmp_signed("==", chunk, i64(g.chunks - 1)),
                            i64(g.c % g.k_chunk), i64(g.k_chunk))
        _emit_copy(kb, g, lanes, kb.at(a.source, b.mul(c_lo, i64(g.tiles.pixels))),
                   a.buffer, rows)
        with kb.loop(a.b_lo, a.b_hi, 1, "blk") as blk:
            _emit_block(kb, ops, a, g, lanes, slots, blk, chunk, layer)

    if g.chunks == 1:
        chunk_body(None)
        return
    with kb.loop(0, g.chunks, 1, "kc") as chunk:
        chunk_body(chunk)


def _emit_copy(kb: KernelBuilder, g: _Geometry, lanes: tuple[int, ...], source: ir.Value,
               buffer: ir.Value, rows: int | ir.Value) -> None:
    """``rows`` input rows of the tile from ``source``, each to ``pitch`` floats of the
    buffer. The image's partial last vector is read with a mask (the last row of the
    last image ends the input buffer: a whole vector could cross into an unmapped page)
    and its other lanes are zero."""
    b = kb.b
    with kb.loop(0, rows, 1, "copy") as row:
        src = b.mul(row, i64(g.tiles.pixels))
        dst = b.mul(row, i64(g.pitch))
        for v, n_lanes in enumerate(lanes):
            x = kb.vload(source, b.add(src, i64(v * kb.width)), n_lanes)
            kb.vstore(x, buffer, b.add(dst, i64(v * kb.width)))


def _emit_block(kb: KernelBuilder, ops: Operands, a: _TaskValues, g: _Geometry,
                lanes: tuple[int, ...], slots: list[list[ir.Value]], blk: ir.Value,
                chunk: ir.Value | None, layer: Conv) -> None:
    """Block ``blk``, one chunk (all channels when ``chunk`` is None): initialise its
    accumulators, run its subset loops, then store (the epilogue at the last chunk).
    Positions past the last filter (``O`` not a multiple of F) start from the block's
    first filter's bias or partial sums (written by this task: no race) and store
    nothing."""
    b = kb.b
    width = kb.width
    outs = []
    valid = []
    for k in range(g.block_filters):
        position = b.add(b.mul(blk, i64(g.block_filters)), i64(k))
        out_ch = b.sext(kb.load(a.order, position, I32), I64)
        outs.append(b.add(a.image_out, b.mul(out_ch, i64(g.tiles.pixels))))
        valid.append(b.icmp_signed("<", position, i64(g.o)) if g.o % g.block_filters else None)

        def init_from_bias(k: int = k, out_ch: ir.Value = out_ch) -> None:
            bias = kb.splat(kb.load(a.bias, out_ch))
            for slot in slots[k]:
                b.store(bias, slot)

        def init_from_output(k: int = k) -> None:
            for v, n_lanes in enumerate(lanes):
                b.store(kb.vload(ops.outputs[0], b.add(outs[k], i64(v * width)), n_lanes),
                        slots[k][v])

        if chunk is None:
            init_from_bias()
            continue
        with b.if_else(b.icmp_signed("==", chunk, i64(0))) as (first, later):
            with first:
                init_from_bias()
            with later:
                init_from_output()
    loops = len(g.subsets)
    index = b.mul(blk, i64(loops))
    if chunk is not None:
        index = b.add(index, b.mul(chunk, i64(g.blocks * loops)))
    for s, subset in enumerate(g.subsets):
        _emit_subset_loop(kb, a, g, len(lanes), slots, subset, b.add(index, i64(s)))

    def store(k: int, epilogue: bool) -> None:
        for v, n_lanes in enumerate(lanes):
            acc = b.load(slots[k][v], typ=kb.vec)
            at = b.add(outs[k], i64(v * width))
            if epilogue:
                if g.residual:
                    acc = b.fadd(acc, kb.vload(ops.inputs[1], at, n_lanes))
                acc = kb.activation(layer.activation, acc)
            kb.vstore(acc, ops.outputs[0], at, n_lanes)

    def store_all(epilogue: bool) -> None:
        for k in range(g.block_filters):
            if valid[k] is None:
                store(k, epilogue)
                continue
            with b.if_then(valid[k]):
                store(k, epilogue)

    if chunk is None:
        store_all(True)
        return
    with b.if_else(b.icmp_signed("==", chunk, i64(g.chunks - 1))) as (last, other):
        with last:
            store_all(True)
        with other:
            store_all(False)


def _emit_subset_loop(kb: KernelBuilder, a: _TaskValues, g: _Geometry, vectors: int,
                      slots: list[list[ir.Value]], subset: tuple[int, ...],
                      index: ir.Value) -> None:
    """The loop over the channels that exactly the filters of ``subset`` use: load the
    channel's ``vectors`` buffer vectors once, FMA them into every filter of ``subset``."""
    b = kb.b
    stride = 1 + len(subset)
    lo = b.sext(kb.load(a.start, index, I32), I64)
    hi = b.sext(kb.load(a.start, b.add(index, i64(1)), I32), I64)
    with kb.loop(lo, hi, stride, f"s{''.join(map(str, subset))}") as j:
        row = kb.at(a.buffer, b.sext(kb.load(a.entries, j, I32), I64))
        xs = [kb.vload(row, v * kb.width) for v in range(vectors)]
        for q, k in enumerate(subset):
            w = kb.splat(kb.load(a.entries, b.add(j, i64(1 + q)), F32))
            for v, x in enumerate(xs):
                b.store(kb.fma(w, x, b.load(slots[k][v], typ=kb.vec)), slots[k][v])
