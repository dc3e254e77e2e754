"""Dense layers on a few rows (a classifier at batch 1): dot products over the weight
rows as they are stored.

``y[m, n] = x[m, :] . W[n, :] + b[n]`` for M <= ``GEMV_MAX_ROWS``. The matrix product
(``gemm.py``) reads W transposed, a register tile's columns from every one of the K
rows: at batch 1 each of those reads is a few cache lines, each K row a page away
from the last, and VGG-16's 25088 x 4096 classifier (411 MB of weights, read once
per image and never reused) ran at half the memory bandwidth numpy's matrix-vector
product reaches. Here each task streams its own run of whole weight rows front to
back, ``R`` rows at a time against the same vectors of x (which stays in L1/L2),
one accumulator vector per (input row, weight row); each accumulator is summed
across its lanes once, at the end of its row.
"""

from __future__ import annotations

import math

from llvmlite import ir

from patcc.backends.llvm.irutil import KernelBuilder, i32, i64
from patcc.backends.llvm.lowering import LayerCode, LoweringContext, Operands, Phase
from patcc.ir.layers import Dense

GEMV_MAX_ROWS = 4
"""Dense layers with at most this many input rows (M) run as dot products; more rows
reuse each weight vector enough for the register-tiled matrix product."""

GEMV_TASKS = 64
"""Tasks (runs of weight rows) to split N into at most: enough for any thread count
to balance, each run long enough to stream."""


def use_gemv(layer: Dense, ctx: LoweringContext) -> bool:
    """Whether ``layer`` runs as dot products (``lower_gemv``)."""
    rows = math.prod(ctx.in_shape(layer)[:-1])
    return rows <= GEMV_MAX_ROWS and layer.weight.shape[1] >= ctx.target.vector_width


def _rows_per_block(m: int, registers: int) -> int:
    """Weight rows per register block: accumulators ``m`` x R, plus m vectors of x
    and one weight vector, inside the register file, R at most 4."""
    rows = 4
    while rows > 1 and m * rows + m + 2 > registers:
        rows //= 2
    return rows


def lower_gemv(layer: Dense, ctx: LoweringContext) -> LayerCode:
    """One phase; task t owns weight rows [t * rows_per_task, ...) of N."""
    shape = ctx.in_shape(layer)
    n_out, k = layer.weight.shape
    m = math.prod(shape[:-1])
    w_off = ctx.blob.add(layer.weight)
    bias_off = ctx.blob.add(layer.bias)
    block = _rows_per_block(m, ctx.target.vector_registers)
    per_task = -(-max(1, -(-n_out // GEMV_TASKS)) // block) * block
    tasks = -(-n_out // per_task)

    def body(kb: KernelBuilder, ops: Operands, task: ir.Value) -> None:
        b = kb.b
        weights, bias = ops.weights(kb, w_off), ops.weights(kb, bias_off)
        x, y = ops.inputs[0], ops.outputs[0]
        lo = b.mul(task, i64(per_task))
        hi = b.add(lo, i64(per_task))
        hi = b.select(b.icmp_signed("<", hi, i64(n_out)), hi, i64(n_out))
        full = b.add(lo, b.mul(b.sdiv(b.sub(hi, lo), i64(block)), i64(block)))
        with kb.loop(lo, full, block, "n") as n0:
            _rows(kb, layer, x, weights, bias, y, n0, block, m, k, n_out)
        with kb.loop(full, hi, 1, "nt") as n0:
            _rows(kb, layer, x, weights, bias, y, n0, 1, m, k, n_out)

    return LayerCode(layer, [Phase("gemv", tasks, body)], kernel="gemv",
                     notes={"block": f"{m}x{block} rows x {per_task}/task", "tasks": tasks})


def _rows(kb: KernelBuilder, layer: Dense, x: ir.Value, weights: ir.Value, bias: ir.Value,
          y: ir.Value, n0: ir.Value, rows: int, m: int, k: int, n_out: int) -> None:
    """Outputs y[:, n0 .. n0 + rows]: the dot products of ``rows`` weight rows with the
    ``m`` input rows."""
    b, width = kb.b, kb.width
    slots = [[kb.entry_alloca(kb.vec, f"acc{i}_{r}") for r in range(rows)] for i in range(m)]
    for row in slots:
        for slot in row:
            b.store(kb.const(kb.vec, 0.0), slot)
    w_rows = [b.mul(b.add(n0, i64(r)), i64(k)) for r in range(rows)]

    def step(k0: ir.Value, lanes: int) -> None:
        xs = [kb.vload(x, b.add(i64(i * k), k0), lanes) for i in range(m)]
        for r in range(rows):
            wv = kb.vload(weights, b.add(w_rows[r], k0), lanes)
            for i in range(m):
                slot = slots[i][r]
                b.store(kb.fma(xs[i], wv, b.load(slot, typ=kb.vec)), slot)

    full = k // width * width
    with kb.loop(0, full, width, "k") as k0:
        step(k0, width)
    if k % width:
        step(i64(full), k % width)
    for r in range(rows):
        n = b.add(n0, i64(r))
        bn = kb.load(bias, n)
        for i in range(m):
            total = b.fadd(_lane_sum(kb, b.load(slots[i][r], typ=kb.vec)), bn)
            kb.store(kb.activation(layer.activation, total), y,
                     b.add(i64(i * n_out), n))


def _lane_sum(kb: KernelBuilder, v: ir.Value) -> ir.Value:
    """The sum of a vector's lanes as a tree of halvings (log2 lanes dependent adds,
    where an ordered reduction is one add per lane)."""
    b = kb.b
    count = v.type.count
    while count > 1:
        half = count // 2
        lanes = ir.VectorType(ir.IntType(32), half)
        low = b.shuffle_vector(v, v, ir.Constant(lanes, [i32(i) for i in range(half)]))
        high = b.shuffle_vector(v, v, ir.Constant(lanes, [i32(half + i) for i in range(half)]))
        v = b.fadd(low, high)
        count = half
    return b.extract_element(v, i32(0)) if isinstance(v.type, ir.VectorType) else v

