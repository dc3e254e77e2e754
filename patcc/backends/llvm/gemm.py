"""Register-blocked matrix product C = act(A @ B + bias [+ residual]), vectorised on N.

The microkernel keeps an MR x NR block of vector accumulators (MR rows of C, NR
vectors of the target's width along N) in registers: per step of K it loads NR
vectors of B once and broadcasts MR scalars of A, so each B load serves MR FMAs.
All sizes are static; tiles at the edges of M and N get their own code with masked
loads and stores, never a branch per element.

A is either constant weights packed at compile time as [M/MR][K][MR] (conv filters:
one contiguous stream per row block) or a runtime row-major matrix (Dense inputs).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from llvmlite import ir

from patcc.backends.llvm.irutil import KernelBuilder, i64
from patcc.ir.layers import Activation

Address = Callable[[KernelBuilder], ir.Value]
"""Emits the base pointer of an operand in the current function."""


@dataclass(frozen=True)
class GemmSpec:
    """One matrix product; pointers are given as emitters, offsets in floats.

    ``a_packed`` says A is packed as [M/MR][K][MR] (with ``mr`` the packing block);
    otherwise A is row-major with leading dimension ``lda``. ``bias`` is per row
    (``bias_per_row``) or per column of C; ``residual`` has C's layout.
    """

    m: int
    n: int
    k: int
    a: Address
    b: Address
    c: Address
    ldb: int
    ldc: int
    a_packed: bool
    lda: int = 0
    bias: Address | None = None
    bias_per_row: bool = True
    residual: Address | None = None
    activation: Activation | None = None


def pack_rows(a: np.ndarray, mr: int) -> np.ndarray:
    """Pack a (M, K) matrix as [ceil(M/MR)][K][MR], zero-padding the last row block."""
    m, k = a.shape
    blocks = -(-m // mr)
    padded = np.zeros((blocks * mr, k), np.float32)
    padded[:m] = a
    return np.ascontiguousarray(padded.reshape(blocks, mr, k).transpose(0, 2, 1))


@dataclass(frozen=True)
class GemmTiling:
    """How a GEMM is split into tasks: row blocks of ``mb`` x column blocks of ``nb``."""

    mr: int
    nr: int
    mb: int
    nb: int
    m_blocks: int
    n_blocks: int

    @property
    def tasks(self) -> int:
        return self.m_blocks * self.n_blocks


def gemm_tiling(m: int, n: int, mr: int, nr: int, width: int, min_tasks: int = 16
                ) -> GemmTiling:
    """Task blocks aligned to the register tile, aiming at ``min_tasks`` tasks or more."""
    nt = nr * width
    mb = mr * max(1, min(8, -(-m // mr)))
    nb = nt * max(1, min(4, -(-n // nt)))
    while -(-m // mb) * -(-n // nb) < min_tasks and (mb > mr or nb > nt):
        if nb > nt and (nb >= mb or mb == mr):
            nb -= nt
        else:
            mb -= mr
    return GemmTiling(mr, nr, mb, nb, -(-m // mb), -(-n // nb))


def emit_gemm(kb: KernelBuilder, spec: GemmSpec, tiling: GemmTiling, task: ir.Value) -> None:
    """Emit the part of ``spec`` owned by block ``task`` (0 <= task < tiling.tasks)."""
    b = kb.b
    mr, nt = tiling.mr, tiling.nr * kb.width
    m_full, n_full = (spec.m // mr) * mr, (spec.n // nt) * nt
    mb_idx = b.sdiv(task, i64(tiling.n_blocks))
    nb_idx = b.srem(task, i64(tiling.n_blocks))
    m_lo = b.mul(mb_idx, i64(tiling.mb))
    n_lo = b.mul(nb_idx, i64(tiling.nb))
    m_hi = _min(kb, b.add(m_lo, i64(tiling.mb)), spec.m)
    n_hi = _min(kb, b.add(n_lo, i64(tiling.nb)), spec.n)
    m_full_hi = _min(kb, m_hi, m_full)
    n_full_hi = _min(kb, n_hi, n_full)
    ptrs = _Pointers(kb, spec)

    def rows(n0: ir.Value, cols: int) -> None:
        with kb.loop(m_lo, m_full_hi, mr, "m0") as m0:
            _tile(kb, spec, ptrs, m0, n0, mr, cols, mr)
        if spec.m % mr:
            with b.if_then(b.icmp_signed(">", m_hi, i64(m_full))):
                _tile(kb, spec, ptrs, i64(m_full), n0, spec.m % mr, cols, mr)

    with kb.loop(n_lo, n_full_hi, nt, "n0") as n0:
        rows(n0, nt)
    if spec.n % nt:
        with b.if_then(b.icmp_signed(">", n_hi, i64(n_full))):
            rows(i64(n_full), spec.n % nt)


def _min(kb: KernelBuilder, value: ir.Value, bound: int) -> ir.Value:
    c = i64(bound)
    return kb.b.select(kb.b.icmp_signed("<", value, c), value, c)


class _Pointers:
    """Operand base pointers, emitted once per task function."""

    def __init__(self, kb: KernelBuilder, spec: GemmSpec) -> None:
        self.a, self.b, self.c = spec.a(kb), spec.b(kb), spec.c(kb)
        self.bias = spec.bias(kb) if spec.bias else None
        self.residual = spec.residual(kb) if spec.residual else None


def _tile(kb: KernelBuilder, spec: GemmSpec, p: _Pointers, m0: ir.Value, n0: ir.Value,
          rows: int, cols: int, mr: int) -> None:
    """C[m0:m0+rows, n0:n0+cols] for static ``rows`` <= MR and ``cols`` <= NR vectors."""
    b, w = kb.b, kb.width
    lanes = [min(w, cols - j * w) for j in range(-(-cols // w))]
    zero = kb.const(kb.vec, 0.0)
    entry = b.block
    header = b.append_basic_block("k.head")
    body = b.append_basic_block("k.body")
    done = b.append_basic_block("k.end")
    b.branch(header)
    b.position_at_end(header)
    k = b.phi(ir.IntType(64), "k")
    k.add_incoming(i64(0), entry)
    accs = [[b.phi(kb.vec, f"acc{i}_{j}") for j in range(len(lanes))] for i in range(rows)]
    for row in accs:
        for acc in row:
            acc.add_incoming(zero, entry)
    b.cbranch(b.icmp_signed("<", k, i64(spec.k)), body, done)

    b.position_at_end(body)
    b_row = b.add(b.mul(k, i64(spec.ldb)), n0)
    bvecs = [kb.vload(p.b, b.add(b_row, i64(j * w)), lanes[j]) for j in range(len(lanes))]
    if spec.a_packed:  # [M/MR][K][MR]: block base m0*K, then k*MR + i
        a_base = b.add(b.mul(m0, i64(spec.k)), b.mul(k, i64(mr)))
    else:
        a_base = b.add(b.mul(m0, i64(spec.lda)), k)
    for i in range(rows):
        a_index = b.add(a_base, i64(i if spec.a_packed else i * spec.lda))
        av = kb.splat(kb.load(p.a, a_index))
        for j, bv in enumerate(bvecs):
            accs[i][j].add_incoming(kb.fma(av, bv, accs[i][j]), body)
    k.add_incoming(b.add(k, i64(1)), body)
    b.branch(header)

    b.position_at_end(done)
    for i in range(rows):
        m = b.add(m0, i64(i))
        row_base = b.add(b.mul(m, i64(spec.ldc)), n0)
        row_bias = kb.splat(kb.load(p.bias, m)) if p.bias is not None and spec.bias_per_row \
            else None
        for j, acc in enumerate(accs[i]):
            v: ir.Value = acc
            if p.bias is not None:
                bias = row_bias if row_bias is not None else kb.vload(
                    p.bias, b.add(n0, i64(j * w)), lanes[j])
                v = b.fadd(v, bias)
            index = b.add(row_base, i64(j * w))
            if p.residual is not None:
                v = b.fadd(v, kb.vload(p.residual, index, lanes[j]))
            kb.vstore(kb.activation(spec.activation, v), p.c, index, lanes[j])
