"""Zero-padded, stride-phase-split copies of input channels ("planes").

A convolution reads its input through planes so that every kernel tap of every
output vector is one contiguous load at a constant offset: plane (ph, pw) of a
channel holds the input pixels at rows ``u*sh + ph - pt`` and columns
``v*sw + pw - pl``, zero where that falls in the padding. The dense (GEMM) and the
pattern kernels both build them.
"""

from __future__ import annotations

from llvmlite import ir

from patcc.backends.llvm.irutil import KernelBuilder, i32, i64


def fill_plane(kb: KernelBuilder, src: ir.Value, dst: ir.Value, hw: tuple[int, int],
               plane: tuple[int, int], strides: tuple[int, int], phase: tuple[int, int],
               pads: tuple[int, int]) -> None:
    """The ``plane`` (hq, wq) of stride phase ``phase`` of one ``hw`` input channel:
    ``dst[u][v] = src[u*sh + ph - pt][v*sw + pw - pl]``, zero where that is padding.

    Zero rows and borders where the source is padding, strided copies elsewhere; all
    bounds are static, so there is no per-element test.
    """
    b = kb.b
    h, w = hw
    hq, wq = plane
    (sh, sw), (ph, pw), (pt, pl) = strides, phase, pads
    u_lo, u_hi = inside(h, sh, ph - pt, hq)
    v_lo, v_hi = inside(w, sw, pw - pl, wq)
    zero_fill(kb, dst, i64(0), u_lo * wq)
    zero_fill(kb, dst, i64(u_hi * wq), (hq - u_hi) * wq)
    with kb.loop(u_lo, u_hi, 1, "u") as u:
        row = b.mul(u, i64(wq))
        src_row = b.add(b.mul(b.add(b.mul(u, i64(sh)), i64(ph - pt)), i64(w)),
                        i64(v_lo * sw + pw - pl))
        zero_fill(kb, dst, row, v_lo)
        strided_copy(kb, src, src_row, dst, b.add(row, i64(v_lo)), v_hi - v_lo, sw)
        zero_fill(kb, dst, b.add(row, i64(v_hi)), wq - v_hi)


def inside(size: int, stride: int, shift: int, count: int) -> tuple[int, int]:
    """The range [lo, hi) of u in [0, count) with 0 <= u*stride + shift < size."""
    lo = min(count, max(0, -(shift // stride)))
    hi = min(count, max(lo, -((shift - size) // stride)))
    return lo, hi


def zero_fill(kb: KernelBuilder, base: ir.Value, start: ir.Value, count: int) -> None:
    """base[start : start + count] = 0 (``count`` static)."""
    w = kb.width
    zero = kb.const(kb.vec, 0.0)
    full = count // w * w
    if full:
        with kb.loop(0, full, w, "z") as i:
            kb.vstore(zero, base, kb.b.add(start, i))
    if count % w:
        kb.vstore(zero, base, kb.b.add(start, i64(full)), count % w)


def strided_load(kb: KernelBuilder, src: ir.Value, s: ir.Value, lanes: int,
                 stride: int) -> ir.Value:
    """The vector ``src[s + v*stride]`` for v < ``lanes`` (lanes past that are
    unspecified), stride 1 or 2: every other lane of two loads, neither of which
    reads past the last element used."""
    b, w = kb.b, kb.width
    if stride == 1:
        return kb.vload(src, s, lanes)
    if stride != 2:
        raise ValueError(f"vector loads of stride {stride}")
    first = kb.vload(src, s, min(w, 2 * lanes - 1))
    second = kb.vload(src, b.add(s, i64(w)), 2 * lanes - 1 - w) \
        if 2 * lanes - 1 > w else kb.const(kb.vec, 0.0)
    return b.shuffle_vector(first, second, ir.Constant(ir.VectorType(ir.IntType(32), w),
                                                       [i32(2 * i) for i in range(w)]))


def strided_copy(kb: KernelBuilder, src: ir.Value, s: ir.Value, dst: ir.Value, d: ir.Value,
                 count: int, stride: int) -> None:
    """dst[d + v] = src[s + v*stride] for v < ``count``: vectors for strides 1 and 2
    (every other lane of two loads), scalars otherwise."""
    b, w = kb.b, kb.width
    if stride > 2:
        with kb.loop(0, count, 1, "v") as v:
            kb.store(kb.load(src, b.add(s, b.mul(v, i64(stride)))), dst, b.add(d, v))
        return

    def vector(v: ir.Value, lanes: int) -> None:
        value = strided_load(kb, src, b.add(s, b.mul(v, i64(stride))), lanes, stride)
        kb.vstore(value, dst, b.add(d, v), lanes)

    full = count // w * w
    if full:
        with kb.loop(0, full, w, "v") as v:
            vector(v, w)
    if count % w:
        vector(i64(full), count % w)
