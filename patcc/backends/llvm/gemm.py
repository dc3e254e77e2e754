"""Register-blocked matrix product C = act(A @ B + bias [+ residual]).

The microkernel keeps a block of vector accumulators in registers. Per step of K it
loads a few vectors of one operand and broadcasts scalars of the other, so each
vector load serves several FMAs. Two orientations:

- vectors along N (``6x4v``: 6 rows of C by 4 vectors of columns): B is loaded as
  vectors, A broadcast. Right when C has many columns (large images).
- vectors along M (``2vx8``: 2 vectors of rows of C by 8 columns): A is loaded as
  vectors, B broadcast, and the block is transposed in registers before it is
  stored. Right when C has few columns (late layers: 14x14, 7x7 pixels), where
  vectors along N would be mostly padding, and where K is large enough to pay for
  the transpose.

``tiling_candidates`` ranks the orientations and tiles that fit the target's vector
registers by an estimate of their cycles.

All sizes are static; tiles at the edges of M and N get their own code with masked
loads and stores, never a branch per element.

A is either constant weights packed at compile time as [M/T][K][T] for the tile's
extent T along M (one contiguous stream per block of rows) or, with vectors along N
only, a runtime row-major matrix (Dense inputs).

B is never copied into a packed layout: its rows are addressed as ``Taps``, groups of
rows at fixed offsets from a per-group base. A convolution reads its (rearranged)
input this way, each kernel tap one row at a constant offset, so the K loop runs over
input channels with the taps unrolled as immediate offsets and no im2col matrix is
written. ``Columns`` says where each column of C is found in B's rows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from llvmlite import ir

from patcc.backends.llvm.irutil import I32, KernelBuilder, i32, i64, prefix_mask
from patcc.backends.target import Target
from patcc.ir.layers import Activation

Address = Callable[[KernelBuilder], ir.Value]
"""Emits the base pointer of an operand in the current function."""


@dataclass(frozen=True)
class Taps:
    """Where the rows of B start: row ``k`` at ``(k // T) * stride + offsets[k % T]``.

    A plain row-major matrix is ``Taps(ldb)``. A convolution's rows come in groups of
    T = kh * kw taps per input channel, each at its own offset in the channel's data.
    """

    stride: int
    offsets: tuple[int, ...] = (0,)


@dataclass(frozen=True)
class Columns:
    """Where the columns of C are in B's rows: C's columns come in rows of ``width``,
    which B's rows hold ``pitch`` apart (``pitch - width`` unused columns between).
    C column ``y * width + x`` is B column ``y * pitch + x``."""

    width: int
    pitch: int

    @property
    def dense(self) -> bool:
        return self.width == self.pitch

    def span(self, n: int) -> int:
        """How many of B's columns the first ``n`` columns of C reach over."""
        return n if self.dense else (n // self.width - 1) * self.pitch + self.width


@dataclass(frozen=True)
class GemmSpec:
    """One matrix product; pointers are given as emitters, offsets in floats.

    ``a_packed`` says A is packed as [M/T][K][T] (T the tiling's ``tile_m``);
    otherwise A is row-major with leading dimension ``lda``. ``k`` is a multiple of
    the number of taps of ``b_rows``; ``n`` counts the columns of C, which holds a
    multiple of ``columns.width`` of them. ``ldc`` is the distance between rows of
    C. ``bias`` is per row (``bias_per_row``) or per column of C; ``residual`` has
    C's layout.
    """

    m: int
    n: int
    k: int
    a: Address
    b: Address
    c: Address
    b_rows: Taps
    ldc: int
    a_packed: bool
    lda: int = 0
    columns: Columns | None = None
    bias: Address | None = None
    bias_per_row: bool = True
    residual: Address | None = None
    activation: Activation | None = None

    @property
    def b_columns(self) -> Columns:
        return self.columns or Columns(self.n, self.n)


def pack_rows(a: np.ndarray, mr: int) -> np.ndarray:
    """Pack a (M, K) matrix as [ceil(M/MR)][K][MR], zero-padding the last row block."""
    m, k = a.shape
    blocks = -(-m // mr)
    padded = np.zeros((blocks * mr, k), np.float32)
    padded[:m] = a
    return np.ascontiguousarray(padded.reshape(blocks, mr, k).transpose(0, 2, 1))


@dataclass(frozen=True)
class GemmTiling:
    """The register tile and how the product is split into tasks.

    The tile is ``mr`` rows by ``nr`` vectors of columns, or with ``vector_rows``
    ``nr`` vectors of rows by ``mr`` columns. Tasks are row blocks of ``mb`` x column
    blocks of ``nb`` (columns of B when vectors run along N: they include the unused
    ones between C's rows). ``kc`` > 0 splits K into blocks of ``kc`` groups of taps
    (vectors along M only), each run over all of a task's columns before the next.
    """

    mr: int
    nr: int
    width: int
    mb: int
    nb: int
    m_blocks: int
    n_blocks: int
    vector_rows: bool = False
    kc: int = 0

    @property
    def tasks(self) -> int:
        return self.m_blocks * self.n_blocks

    @property
    def tile_m(self) -> int:
        return self.nr * self.width if self.vector_rows else self.mr

    @property
    def tile_n(self) -> int:
        return self.mr if self.vector_rows else self.nr * self.width

    @property
    def block(self) -> str:
        """The tile as the report names it: ``6x4v`` or ``2vx8``."""
        return f"{self.nr}vx{self.mr}" if self.vector_rows else f"{self.mr}x{self.nr}v"


def gemm_tiling(m: int, n: int, mr: int, nr: int, width: int, min_tasks: int = 16
                ) -> GemmTiling:
    """Vectors along N: task blocks aligned to the register tile, aiming at
    ``min_tasks`` tasks or more (``n`` counts B's columns)."""
    nt = nr * width
    mb = mr * max(1, min(8, -(-m // mr)))
    nb = nt * max(1, min(4, -(-n // nt)))
    while -(-m // mb) * -(-n // nb) < min_tasks and (mb > mr or nb > nt):
        if nb > nt and (nb >= mb or mb == mr):
            nb -= nt
        else:
            mb -= mr
    return GemmTiling(mr, nr, width, mb, nb, -(-m // mb), -(-n // nb))


ROW_TILES = tuple((cols, vectors) for vectors in (2, 3, 1) for cols in (8, 7, 6, 5, 4))
"""Register tiles (columns, vectors of rows) tried with vectors along M. A tile's
columns must lie in one row of C (see ``Columns``), so that they are consecutive in
B too and every broadcast is at a constant offset from one pointer; CNN images are
7 * 2^k pixels wide."""


MICRO_TILES = ((6, 4), (4, 3), (4, 2), (2, 2), (1, 1))
"""Register tiles (rows of A, vectors of B) with vectors along N, most FMAs per value
loaded first."""


def register_tile(registers: int) -> tuple[int, int]:
    """The first of ``MICRO_TILES`` that fits ``registers`` vector registers
    (``tile_registers``): (6, 4) with 32 (AVX-512, NEON), (4, 3) with 16 (AVX2, SSE).

    On x86 LLVM 19 clusters the loads of a step's neighbouring taps and spills a few
    of them in these full tiles (``--report``'s ``spills``); the tiles that leave
    room for that (5 x 4, 6 x 3; 5 x 2, 4 x 2) measured 5-40% slower on Zen 4, so
    the model counts one step's values only."""
    return next(t for t in MICRO_TILES if tile_registers(*t) <= registers)


def tile_registers(accumulators_per_vector: int, vectors: int, window: int = 1) -> int:
    """Vector registers a tile of ``vectors`` loaded vectors by
    ``accumulators_per_vector`` broadcast values needs: its accumulators, the vectors
    and the broadcast values live at once: one, or with vectors along M a ``window``
    that the taps of one kernel row share (LLVM loads a value once for every tap
    that reads it, and keeps it)."""
    return accumulators_per_vector * vectors + vectors + window


def tiling_candidates(m: int, n: int, k: int, taps: int, columns: Columns,
                      target: Target, min_tasks: int = 16, row_taps: int = 1,
                      row_phases: int = 1) -> list[tuple[float, GemmTiling]]:
    """Every tile and orientation that fits ``target``'s vector registers with its
    estimated cycles (one core), the fewest first.

    With vectors along N the tile is ``register_tile(registers)``; with vectors along
    M each of ``ROW_TILES`` whose accumulators, loaded vectors and broadcast fit (they
    need A packed by rows, a bias per row, and tiles no wider than a vector that
    divide C's rows). ``taps`` is the size of B's groups of rows (K blocks are whole
    groups), ``row_taps`` how many of them read neighbouring columns of B's rows (a
    conv's kernel width) in ``row_phases`` interleaved runs (its stride).
    """
    registers, width = target.vector_registers, target.vector_width
    mr, nr = register_tile(registers)
    span = columns.span(n)
    ranked = [(_cycles(k, _edges(m, mr), _edges(span, nr * width, width), target,
                       per_accumulator=2 if columns.dense else 6),
               gemm_tiling(m, span, mr, nr, width, min_tasks))]
    for cols, vectors in ROW_TILES:
        # Each stride phase of a kernel row shares its own run of broadcast values.
        # Where an FMA takes a memory operand (x86), LLVM reads those of a 3-wide
        # kernel that do not fit back into the FMAs, which measured cheaper than the
        # smaller tiles that hold them (MobileNetV2's first conv on Zen 4: 0.15 ms
        # with 2 vectors x 8 columns, 0.4 ms with the largest tile that fits); wider
        # kernels spill several vectors per tap.
        phases = min(row_phases, row_taps)
        window = phases * cols + row_taps - phases \
            if row_taps > 3 or (row_taps > 1 and not target.fma_memory_operand) else 1
        if cols > width or tile_registers(cols, vectors, window) > registers or (
                not columns.dense and columns.width % cols):
            continue
        cycles = _cycles(k, _edges(m, vectors * width, width), _edges(n, cols), target,
                         vector_rows=True)
        ranked.append((cycles, _rows_tiling(m, n, k // taps, taps, cols, vectors, width,
                                            min_tasks)))
    return sorted(ranked, key=lambda pair: pair[0])


def _edges(size: int, step: int, width: int = 1) -> list[tuple[int, int]]:
    """(registers, count) of the full tiles of ``step`` along an axis and of the
    partial one, registers holding ``width`` elements each."""
    return [(-(-extent // width), count)
            for extent, count in ((step, size // step), (size % step, 1)) if extent and count]


def _cycles(k: int, m_tiles: list[tuple[int, int]], n_tiles: list[tuple[int, int]],
            target: Target, vector_rows: bool = False, per_accumulator: int = 2) -> float:
    """Estimated cycles of a product over tiles given by ``_edges`` along M and N:
    per step of K a tile runs no faster than ``target`` issues its FMAs and loads,
    nor than the FMA latency lets each accumulator advance; its epilogue costs
    ``per_accumulator`` cycles per accumulator (more when the stores skip unused
    columns), or ~40 cycles per vector of rows to transpose."""
    total = 0.0
    for rm, cm in m_tiles:
        for rn, cn in n_tiles:
            step = max(rm * rn / target.fma_per_cycle, (rm + rn) / target.loads_per_cycle,
                       target.fma_latency)
            epilogue = 40 * rm if vector_rows else per_accumulator * rm * rn
            total += cm * cn * (k * step + epilogue)
    return total


ROW_PANEL_BYTES = 128 << 10
"""With vectors along M a task streams each row tile's weights, K x tile, once per
tile of columns: up to this size they stay in L2, past it K is split into blocks of
about ``K_BLOCK_BYTES``, each reused from L1 by all of the task's columns while the
next streams in. The task's partial sums then wait on the stack, at most
``PARTIAL_BYTES`` of them."""
K_BLOCK_BYTES = 64 << 10
PARTIAL_BYTES = 64 << 10


def _rows_tiling(m: int, n: int, groups: int, taps: int, mr: int, nr: int, width: int,
                 min_tasks: int) -> GemmTiling:
    """Vectors along M: split M first (each row block streams its own weights once),
    N only when M has too few tiles or the partial sums of K blocks need it."""
    tm = nr * width
    panel = groups * taps * tm * 4
    kc = 0
    if panel > ROW_PANEL_BYTES:
        blocks = -(-panel // K_BLOCK_BYTES)
        kc = -(-groups // blocks)
    m_tiles, n_tiles = -(-m // tm), -(-n // mr)
    m_blocks = min(m_tiles, min_tasks)
    n_blocks = min(n_tiles, -(-min_tasks // m_blocks))
    if kc:
        n_blocks = max(n_blocks, -(-n_tiles * mr * tm * 4 // PARTIAL_BYTES))
    mb, nb = tm * -(-m_tiles // m_blocks), mr * -(-n_tiles // n_blocks)
    return GemmTiling(mr, nr, width, mb, nb, -(-m // mb), -(-n // nb), vector_rows=True,
                      kc=kc if kc < groups else 0)


def emit_gemm(kb: KernelBuilder, spec: GemmSpec, tiling: GemmTiling, task: ir.Value) -> None:
    """Emit the part of ``spec`` owned by block ``task`` (0 <= task < tiling.tasks)."""
    if spec.k % len(spec.b_rows.offsets):
        raise AssertionError(f"K={spec.k} is not a multiple of {len(spec.b_rows.offsets)} taps")
    b = kb.b
    tm, tn = tiling.tile_m, tiling.tile_n
    n = spec.n if tiling.vector_rows else spec.b_columns.span(spec.n)
    m_full, n_full = (spec.m // tm) * tm, (n // tn) * tn
    m_lo = b.mul(b.sdiv(task, i64(tiling.n_blocks)), i64(tiling.mb))
    n_lo = b.mul(b.srem(task, i64(tiling.n_blocks)), i64(tiling.nb))
    m_hi = _min(kb, b.add(m_lo, i64(tiling.mb)), spec.m)
    n_hi = _min(kb, b.add(n_lo, i64(tiling.nb)), n)
    ptrs = _Pointers(kb, spec)

    def tiles(lo: ir.Value, hi: ir.Value, full: int, size: int, step: int, name: str,
              inner: Callable[[ir.Value, int], None]) -> None:
        with kb.loop(lo, _min(kb, hi, full), step, name) as start:
            inner(start, step)
        if size % step:
            with b.if_then(b.icmp_signed(">", hi, i64(full))):
                inner(i64(full), size % step)

    # The operand loaded as vectors is the one reused from cache by the inner loop.
    if tiling.vector_rows:
        partial = None
        if tiling.kc:  # the partial sums of all of the task's tiles of one row tile
            with b.goto_entry_block():
                partial = b.alloca(kb.vec, size=i64(tiling.nb * tiling.nr))
        tiles(m_lo, m_hi, m_full, spec.m, tm, "m0", lambda m0, rows: _row_tiles(
            kb, spec, tiling, ptrs, m0, rows, n_lo, partial, lambda inner: tiles(
                n_lo, n_hi, n_full, n, tn, "n0", inner)))
    else:
        tiles(n_lo, n_hi, n_full, n, tn, "n0", lambda n0, cols: tiles(
            m_lo, m_hi, m_full, spec.m, tm, "m0",
            lambda m0, rows: _tile(kb, spec, ptrs, m0, n0, rows, cols, tm)))


def _row_tiles(kb: KernelBuilder, spec: GemmSpec, tiling: GemmTiling, ptrs: _Pointers,
               m0: ir.Value, rows: int, n_lo: ir.Value, partial: ir.Value | None,
               columns: Callable[[Callable[[ir.Value, int], None]], None]) -> None:
    """Vectors along M: the tiles of rows m0.. over the task's ``columns`` (a loop
    calling its argument with each tile's first column and width), for one K block
    after the other when ``tiling.kc`` splits K, with the partial sums of the tile
    at column n in ``partial`` from (n - ``n_lo``) * NR vectors on."""
    b = kb.b
    groups = spec.k // len(spec.b_rows.offsets)

    def over_columns(block: Callable[[ir.Value], _KBlock]) -> None:
        columns(lambda n0, cols: _tile_rows(kb, spec, ptrs, m0, n0, rows, cols,
                                            tiling.tile_m, block(n0)))

    if partial is None:
        over_columns(lambda n0: _KBlock(i64(0), i64(groups)))
        return
    with kb.loop(0, groups, tiling.kc, "kb") as g0:
        g1 = _min(kb, b.add(g0, i64(tiling.kc)), groups)
        first = b.icmp_signed("==", g0, i64(0))
        last = b.icmp_signed("==", g1, i64(groups))
        over_columns(lambda n0: _KBlock(g0, g1, _Partial(
            b.gep(partial, [b.mul(b.sub(n0, n_lo), i64(tiling.nr))], source_etype=kb.vec),
            first, last)))


def _min(kb: KernelBuilder, value: ir.Value, bound: int) -> ir.Value:
    c = i64(bound)
    return kb.b.select(kb.b.icmp_signed("<", value, c), value, c)


class _Pointers:
    """Operand base pointers, emitted once per task function."""

    def __init__(self, kb: KernelBuilder, spec: GemmSpec) -> None:
        self.a, self.b, self.c = spec.a(kb), spec.b(kb), spec.c(kb)
        self.bias = spec.bias(kb) if spec.bias else None
        self.residual = spec.residual(kb) if spec.residual else None


Step = Callable[[ir.Value, list[list[ir.Value]]], list[list[ir.Value]]]
"""One iteration of the K loop: (group of taps, accumulators) -> new accumulators."""


def _k_loop(kb: KernelBuilder, start: ir.Value, stop: ir.Value, init: list[list[ir.Value]],
            step: Step) -> list[list[ir.Value]]:
    """Run ``step`` over the groups of taps ``start``..``stop``-1 of K from the
    accumulators ``init``."""
    b = kb.b
    entry = b.block
    header = b.append_basic_block("k.head")
    body = b.append_basic_block("k.body")
    done = b.append_basic_block("k.end")
    b.branch(header)
    b.position_at_end(header)
    g = b.phi(ir.IntType(64), "kg")
    g.add_incoming(start, entry)
    phis = [[b.phi(kb.vec, f"acc{i}_{j}") for j in range(len(row))]
            for i, row in enumerate(init)]
    for row_phis, row in zip(phis, init, strict=True):
        for phi, value in zip(row_phis, row, strict=True):
            phi.add_incoming(value, entry)
    b.cbranch(b.icmp_signed("<", g, stop), body, done)

    b.position_at_end(body)
    accs = step(g, [list(row) for row in phis])
    for row_phis, row in zip(phis, accs, strict=True):
        for phi, acc in zip(row_phis, row, strict=True):
            phi.add_incoming(acc, b.block)
    g.add_incoming(b.add(g, i64(1)), b.block)
    b.branch(header)
    b.position_at_end(done)
    return [list(row) for row in phis]


def _zeros(kb: KernelBuilder, shape: tuple[int, int]) -> list[list[ir.Value]]:
    return [[kb.const(kb.vec, 0.0)] * shape[1] for _ in range(shape[0])]


# -- vectors along N --------------------------------------------------------------------

def _tile(kb: KernelBuilder, spec: GemmSpec, p: _Pointers, m0: ir.Value, n0: ir.Value,
          rows: int, cols: int, mr: int) -> None:
    """C rows m0..m0+rows (static ``rows`` <= MR) by B columns n0..n0+cols (static
    ``cols`` <= NR vectors)."""
    b, w = kb.b, kb.width
    lanes = [min(w, cols - j * w) for j in range(-(-cols // w))]
    taps = spec.b_rows.offsets

    def step(g: ir.Value, accs: list[list[ir.Value]]) -> list[list[ir.Value]]:
        b_base = b.add(b.mul(g, i64(spec.b_rows.stride)), n0)
        k0 = b.mul(g, i64(len(taps)))
        if spec.a_packed:  # [M/MR][K][MR]: block base m0*K, then k*MR + i
            a_base = b.add(b.mul(m0, i64(spec.k)), b.mul(k0, i64(mr)))
        else:
            a_base = b.add(b.mul(m0, i64(spec.lda)), k0)
        for t, offset in enumerate(taps):
            b_row = b.add(b_base, i64(offset))
            bvecs = [kb.vload(p.b, b.add(b_row, i64(j * w)), n) for j, n in enumerate(lanes)]
            for i in range(rows):
                a_off = t * mr + i if spec.a_packed else i * spec.lda + t
                av = kb.splat(kb.load(p.a, b.add(a_base, i64(a_off))))
                accs[i] = [kb.fma(av, bv, acc) for bv, acc in zip(bvecs, accs[i], strict=True)]
        return accs

    groups = spec.k // len(taps)
    accs = _k_loop(kb, i64(0), i64(groups), _zeros(kb, (rows, len(lanes))), step)
    _finish(kb, spec, p, m0, n0, accs, lanes)


def _finish(kb: KernelBuilder, spec: GemmSpec, p: _Pointers, m0: ir.Value, n0: ir.Value,
            accs: list[list[ir.Value]], lanes: list[int]) -> None:
    """Add bias and residual, apply the activation and store the tile's C columns."""
    b, w = kb.b, kb.width
    columns = spec.b_columns
    if p.bias is not None and not spec.bias_per_row and not columns.dense:
        raise AssertionError("a bias per column needs B's columns to be C's")
    places = [_place(kb, columns, b.add(n0, i64(j * w)), n) for j, n in enumerate(lanes)]
    for i, row in enumerate(accs):
        m = b.add(m0, i64(i))
        row_base = b.mul(m, i64(spec.ldc))
        row_bias = kb.splat(kb.load(p.bias, m)) if p.bias is not None and spec.bias_per_row \
            else None
        for j, (acc, place) in enumerate(zip(row, places, strict=True)):
            v: ir.Value = acc
            if p.bias is not None:
                bias = row_bias if row_bias is not None else kb.vload(
                    p.bias, b.add(n0, i64(j * w)), lanes[j])
                v = b.fadd(v, bias)
            if p.residual is not None:
                v = b.fadd(v, place.load(kb, p.residual, row_base))
            place.store(kb, kb.activation(spec.activation, v), p.c, row_base)


@dataclass
class _Place:
    """Where the lanes of one vector of B's columns go in C: runs of lanes, each
    stored contiguously at ``start + shift`` under its lane mask."""

    start: ir.Value
    runs: list[tuple[int, ir.Value | int]]  # (shift, mask: a lane count if static)

    def load(self, kb: KernelBuilder, base: ir.Value, row: ir.Value) -> ir.Value:
        v = kb.const(kb.vec, 0.0)
        for shift, mask in self.runs:
            index = kb.b.add(row, kb.b.add(self.start, i64(shift)))
            if isinstance(mask, int):
                v = kb.vload(base, index, mask)
            else:
                v = kb.masked_load(kb.at(base, index), mask, v)
        return v

    def store(self, kb: KernelBuilder, value: ir.Value, base: ir.Value, row: ir.Value) -> None:
        for shift, mask in self.runs:
            index = kb.b.add(row, kb.b.add(self.start, i64(shift)))
            if isinstance(mask, int):
                kb.vstore(value, base, index, mask)
            else:
                kb.masked_store(value, kb.at(base, index), mask)


def _place(kb: KernelBuilder, columns: Columns, q: ir.Value, lanes: int) -> _Place:
    """B columns q..q+lanes-1 in C: with every column kept one run at q; else B
    column q = y * pitch + x is C column y * width + x (for x < width), so the lanes
    that reach into row y + s form run s, shifted by s * (width - pitch)."""
    if columns.dense:
        return _Place(q, [(0, lanes)])
    b, w = kb.b, kb.width
    pitch, width = columns.pitch, columns.width
    y = b.udiv(q, i64(pitch))
    x = b.urem(q, i64(pitch))
    start = b.add(b.mul(y, i64(width)), x)
    lane_type = ir.VectorType(I32, w)
    lane = ir.Constant(lane_type, [i32(v) for v in range(w)])
    x32 = b.trunc(x, I32)
    runs: list[tuple[int, ir.Value | int]] = []
    for s in range((pitch + lanes - 2) // pitch + 1):
        lo = b.sub(i32(s * pitch), x32)  # first lane in row y + s
        lo_v = b.shuffle_vector(b.insert_element(ir.Constant(lane_type, None), lo, i32(0)),
                                ir.Constant(lane_type, None),
                                ir.Constant(lane_type, [i32(0)] * w))
        hi_v = b.add(lo_v, ir.Constant(lane_type, [i32(width)] * w))
        mask = b.and_(b.icmp_signed(">=", lane, lo_v), b.icmp_signed("<", lane, hi_v))
        if lanes < w:
            mask = b.and_(mask, prefix_mask(w, lanes))
        runs.append((s * (width - pitch), mask))
    return _Place(start, runs)


# -- vectors along M --------------------------------------------------------------------

@dataclass
class _Partial:
    """A tile's partial sums between K blocks: read unless ``first``, written back
    unless ``last`` (then the epilogue runs)."""

    slot: ir.Value
    first: ir.Value
    last: ir.Value


@dataclass
class _KBlock:
    """Groups of taps ``start``..``stop``-1 of K, with the partial sums of the other
    blocks (None: the block is all of K)."""

    start: ir.Value
    stop: ir.Value
    partial: _Partial | None = None


def _tile_rows(kb: KernelBuilder, spec: GemmSpec, p: _Pointers, m0: ir.Value, n0: ir.Value,
               rows: int, cols: int, tm: int, block: _KBlock) -> None:
    """C rows m0..m0+rows (static ``rows`` <= NR vectors) by C columns n0..n0+cols
    (static ``cols`` <= MR), A packed as [M/T][K][T] for T = ``tm``, over ``block``."""
    b, w = kb.b, kb.width
    vectors = -(-rows // w)
    taps = spec.b_rows.offsets
    columns = spec.b_columns
    q0 = n0  # the tile's first column in B's rows; the others follow it
    if not columns.dense:
        q0 = b.add(b.mul(b.udiv(n0, i64(columns.width)), i64(columns.pitch)),
                   b.urem(n0, i64(columns.width)))

    def step(g: ir.Value, accs: list[list[ir.Value]]) -> list[list[ir.Value]]:
        b_base = b.add(b.mul(g, i64(spec.b_rows.stride)), q0)
        a_base = b.add(b.mul(m0, i64(spec.k)), b.mul(g, i64(len(taps) * tm)))
        for t, offset in enumerate(taps):
            avecs = [kb.vload(p.a, b.add(a_base, i64(t * tm + j * w))) for j in range(vectors)]
            for i in range(cols):
                bv = kb.splat(kb.load(p.b, b.add(b_base, i64(offset + i))))
                accs[i] = [kb.fma(bv, av, acc) for av, acc in zip(avecs, accs[i], strict=True)]
        return accs

    shape = (cols, vectors)
    if block.partial is None:
        accs = _k_loop(kb, block.start, block.stop, _zeros(kb, shape), step)
        _finish_rows(kb, spec, p, m0, n0, accs, rows)
        return
    partial = block.partial
    slots = [[b.gep(partial.slot, [i64(i * vectors + j)], source_etype=kb.vec)
              for j in range(vectors)] for i in range(cols)]
    with b.if_else(partial.first) as (then, otherwise):
        with then:
            from_zero = b.block
        with otherwise:
            loaded = [[b.load(slot, typ=kb.vec) for slot in row] for row in slots]
            from_partial = b.block
    init = [[b.phi(kb.vec) for _ in range(vectors)] for _ in range(cols)]
    for phis, values in zip(init, loaded, strict=True):
        for phi, value in zip(phis, values, strict=True):
            phi.add_incoming(kb.const(kb.vec, 0.0), from_zero)
            phi.add_incoming(value, from_partial)
    accs = _k_loop(kb, block.start, block.stop, init, step)
    with b.if_else(partial.last) as (then, otherwise):
        with then:
            _finish_rows(kb, spec, p, m0, n0, accs, rows)
        with otherwise:
            for row, slot_row in zip(accs, slots, strict=True):
                for acc, slot in zip(row, slot_row, strict=True):
                    b.store(acc, slot)


def _finish_rows(kb: KernelBuilder, spec: GemmSpec, p: _Pointers, m0: ir.Value,
                 n0: ir.Value, accs: list[list[ir.Value]], rows: int) -> None:
    """Add the bias per row, transpose each vector of rows into one short vector per
    row of C, then add the residual, apply the activation and store."""
    b, w = kb.b, kb.width
    if p.bias is not None and not spec.bias_per_row:
        raise AssertionError("vectors along M take a bias per row")
    cols = len(accs)
    for j in range(len(accs[0])):
        lanes = min(w, rows - j * w)
        column = [accs[i][j] for i in range(cols)]
        if p.bias is not None:
            bias = kb.vload(p.bias, b.add(m0, i64(j * w)), lanes)
            column = [b.fadd(v, bias) for v in column]
        for lane, v in enumerate(_transpose(kb, column)[:lanes]):
            index = b.add(b.mul(b.add(m0, i64(j * w + lane)), i64(spec.ldc)), n0)
            mask = prefix_mask(v.type.count, cols)
            if p.residual is not None:
                v = b.fadd(v, kb.masked_load(kb.at(p.residual, index), mask,
                                           kb.const(v.type, 0.0)))
            kb.masked_store(kb.activation(spec.activation, v), kb.at(p.c, index), mask)


def _transpose(kb: KernelBuilder, vectors: list[ir.Value]) -> list[ir.Value]:
    """Lane l of each of R <= width vectors, for every lane: width vectors of R lanes
    (R rounded up to a power of two; the extra lanes are undefined).

    A butterfly of two-input shuffles: at stage s each vector holds 2^s of the rows
    for the lanes whose low s bits agree, so log2(R) stages of R shuffles end with
    R vectors, each holding all rows for width/R lanes, read out in R-lane pieces.
    """
    b, w = kb.b, kb.width
    r = 1 << (len(vectors) - 1).bit_length()
    undef = ir.Constant(kb.vec, None)
    # Each vector with its labels: position -> (row, lane); rows >= len are undefined.
    state = [(vectors[i] if i < len(vectors) else undef, [(i, lane) for lane in range(w)])
             for i in range(r)]
    bit = 1
    while bit < r:  # state[first + cls]: rows first..first+bit-1, lanes = cls mod bit
        nxt = list(state)
        for first in range(0, r, 2 * bit):
            for cls in range(bit):
                (va, la), (vb, lb) = state[first + cls], state[first + bit + cls]
                where = {lab: i for i, lab in enumerate(la)}
                where.update({lab: w + i for i, lab in enumerate(lb)})
                for half in (0, bit):
                    want = sorted((lane, row) for row, lane in la + lb
                                  if lane % (2 * bit) == cls + half)
                    mask = ir.Constant(ir.VectorType(I32, w),
                                       [i32(where[(row, lane)]) for lane, row in want])
                    nxt[first + cls + half] = (b.shuffle_vector(va, vb, mask),
                                               [(row, lane) for lane, row in want])
        state = nxt
        bit *= 2
    pieces = {}
    for v, labels in state:
        for piece in range(w // r):
            pieces[labels[piece * r][1]] = b.shuffle_vector(v, undef, ir.Constant(
                ir.VectorType(I32, r), [i32(piece * r + i) for i in range(r)]))
    return [pieces[lane] for lane in range(w)]
