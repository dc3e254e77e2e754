"""Small helpers over llvmlite's IRBuilder: types, loops, vectors, activations.

Kernels are written against ``KernelBuilder``: an IRBuilder plus the target's vector
type, so no kernel names a vector width itself.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from llvmlite import ir

from patcc.backends.target import Target
from patcc.ir.layers import Activation

F32 = ir.FloatType()
I1 = ir.IntType(1)
I8 = ir.IntType(8)
I32 = ir.IntType(32)
I64 = ir.IntType(64)
PTR = ir.PointerType()
VOID = ir.VoidType()


def i64(value: int) -> ir.Constant:
    return ir.Constant(I64, value)


def i32(value: int) -> ir.Constant:
    return ir.Constant(I32, value)


def f32(value: float) -> ir.Constant:
    return ir.Constant(F32, value)


def declare(module: ir.Module, name: str, ret: ir.Type, args: Sequence[ir.Type],
            var_arg: bool = False) -> ir.Function:
    """The function ``name`` of ``module``, declared on first use."""
    existing = module.globals.get(name)
    if existing is not None:
        return existing
    return ir.Function(module, ir.FunctionType(ret, list(args), var_arg=var_arg), name)


@dataclass
class KernelBuilder:
    """An IRBuilder with the target's vector type and helpers kernels share."""

    b: ir.IRBuilder
    target: Target

    @property
    def module(self) -> ir.Module:
        return self.b.module

    @property
    def width(self) -> int:
        return self.target.vector_width

    @property
    def vec(self) -> ir.VectorType:
        return ir.VectorType(F32, self.width)

    # -- addresses and memory ---------------------------------------------------------

    def at(self, base: ir.Value, index: ir.Value | int, etype: ir.Type = F32) -> ir.Value:
        """Address of element ``index`` of type ``etype`` from ``base``."""
        idx = i64(index) if isinstance(index, int) else index
        return self.b.gep(base, [idx], source_etype=etype)

    def load(self, base: ir.Value, index: ir.Value | int, etype: ir.Type = F32) -> ir.Value:
        return self.b.load(self.at(base, index, etype), typ=etype, align=etype_align(etype))

    def store(self, value: ir.Value, base: ir.Value, index: ir.Value | int) -> None:
        self.b.store(value, self.at(base, index, value.type), align=etype_align(value.type))

    def vload(self, base: ir.Value, index: ir.Value | int, lanes: int | None = None,
              fill: float = 0.0) -> ir.Value:
        """Unaligned vector load of ``lanes`` floats; with fewer than a vector, a masked
        load whose other lanes hold ``fill``."""
        lanes = self.width if lanes is None else lanes
        ptr = self.at(base, index)
        if lanes == self.width:
            return self.b.load(ptr, typ=self.vec, align=4)
        return self.masked_load(ptr, self.mask(lanes), self.const(self.vec, fill))

    def vstore(self, value: ir.Value, base: ir.Value, index: ir.Value | int,
               lanes: int | None = None) -> None:
        """Unaligned vector store of the first ``lanes`` lanes."""
        lanes = self.width if lanes is None else lanes
        ptr = self.at(base, index)
        if lanes == self.width:
            self.b.store(value, ptr, align=4)
            return
        self.masked_store(value, ptr, self.mask(lanes))

    def masked_load(self, ptr: ir.Value, mask: ir.Value, fill: ir.Value) -> ir.Value:
        """Load the lanes of ``mask`` (constant or computed) from ``ptr``; the others
        are ``fill``'s. Any float vector type (``fill``'s)."""
        t = fill.type
        fn = declare(self.module, f"llvm.masked.load.v{t.count}f32.p0", t,
                     [PTR, I32, mask.type, t])
        return self.b.call(fn, [ptr, i32(4), mask, fill])

    def masked_store(self, value: ir.Value, ptr: ir.Value, mask: ir.Value) -> None:
        """Store the lanes of ``mask`` of ``value`` (any float vector type) to ``ptr``."""
        t = value.type
        fn = declare(self.module, f"llvm.masked.store.v{t.count}f32.p0", VOID,
                     [t, PTR, I32, mask.type])
        self.b.call(fn, [value, ptr, i32(4), mask])

    def expand_load(self, base: ir.Value, index: ir.Value | int,
                    lanes: Sequence[bool]) -> ir.Value:
        """Consecutive floats from ``index`` into the ``lanes`` that are set, in order
        (zero elsewhere): the inverse of ``compress_store``. A prefix load and a
        constant lane shuffle."""
        loaded = self.vload(base, index, sum(lanes))
        if _is_prefix(lanes):
            return loaded
        rank = itertools.accumulate(lanes)
        picks = [r - 1 if set_ else self.width for set_, r in zip(lanes, rank, strict=True)]
        return self.b.shuffle_vector(loaded, self.const(self.vec, 0.0), _indices(picks))

    def compress_store(self, value: ir.Value, base: ir.Value, index: ir.Value | int,
                       lanes: Sequence[bool]) -> None:
        """Store the ``lanes`` of ``value`` that are set to consecutive floats from
        ``index`` (e.g. to drop padding columns): a constant lane shuffle and a prefix
        store. Not ``llvm.masked.compressstore``: AVX-512's ``vcompressps`` to memory
        is microcoded on Zen 4 (one per ~100 cycles; 11 uops on Intel) and AVX2 and
        NEON have none, so LLVM scalarises it there."""
        kept = [i for i, set_ in enumerate(lanes) if set_]
        if not kept:
            return
        if _is_prefix(lanes):
            self.vstore(value, base, index, len(kept))
            return
        picks = kept + [kept[-1]] * (self.width - len(kept))
        packed = self.b.shuffle_vector(value, ir.Constant(self.vec, None), _indices(picks))
        self.vstore(packed, base, index, len(kept))

    def mask(self, lanes: int) -> ir.Constant:
        return prefix_mask(self.width, lanes)

    def splat(self, scalar: ir.Value) -> ir.Value:
        """A vector with ``scalar`` in every lane."""
        if isinstance(scalar, ir.Constant):
            return ir.Constant(self.vec, [scalar] * self.width)
        undef = ir.Constant(self.vec, None)
        one = self.b.insert_element(undef, scalar, i32(0))
        zeros = ir.Constant(ir.VectorType(I32, self.width), [i32(0)] * self.width)
        return self.b.shuffle_vector(one, undef, zeros)

    def lane_shift(self, low: ir.Value, high: ir.Value, shift: int) -> ir.Value:
        """Lanes ``shift`` .. ``shift + width - 1`` of ``low`` followed by ``high``: the
        vector between two neighbouring loads (``valignd`` on AVX-512, ``ext`` on NEON)."""
        lanes = ir.Constant(ir.VectorType(I32, self.width),
                            [ir.Constant(I32, shift + i) for i in range(self.width)])
        return self.b.shuffle_vector(low, high, lanes)

    def fma(self, a: ir.Value, b: ir.Value, c: ir.Value) -> ir.Value:
        """a * b + c, fused."""
        return self.intrinsic("llvm.fma", a.type, [a, b, c])

    def intrinsic(self, name: str, typ: ir.Type, args: Sequence[ir.Value]) -> ir.Value:
        """Call an overloaded float intrinsic (``llvm.fma``, ``llvm.exp``...) on ``typ``."""
        suffix = f"v{typ.count}f32" if isinstance(typ, ir.VectorType) else "f32"
        fn = declare(self.module, f"{name}.{suffix}", typ, [typ] * len(args))
        return self.b.call(fn, list(args))

    def reduce(self, kind: str, v: ir.Value) -> ir.Value:
        """Horizontal ``fmax`` or ``fadd`` of a float vector."""
        if kind == "fadd":
            fn = declare(self.module, f"llvm.vector.reduce.fadd.v{self.width}f32", F32,
                         [F32, self.vec])
            return self.b.call(fn, [f32(0.0), v])
        fn = declare(self.module, f"llvm.vector.reduce.{kind}.v{self.width}f32", F32,
                     [self.vec])
        return self.b.call(fn, [v])

    def const(self, typ: ir.Type, value: float) -> ir.Constant:
        c = f32(value)
        return ir.Constant(typ, [c] * typ.count) if isinstance(typ, ir.VectorType) else c

    def entry_alloca(self, typ: ir.Type, name: str = "") -> ir.Value:
        """A stack slot in the function's entry block (promoted to a register by SROA)."""
        with self.b.goto_entry_block():
            return self.b.alloca(typ, name=name)

    # -- loops ------------------------------------------------------------------------

    @contextmanager
    def loop(self, start: int | ir.Value, stop: int | ir.Value, step: int = 1,
             name: str = "i") -> Iterator[ir.Value]:
        """``for (i = start; i < stop; i += step)`` over i64; yields ``i``.

        Static bounds that give no iteration emit nothing inside; the body still
        runs once at code-generation time, so it must not have side effects then.
        """
        b = self.b
        lo = i64(start) if isinstance(start, int) else start
        hi = i64(stop) if isinstance(stop, int) else stop
        pre = b.block
        header = b.append_basic_block(f"{name}.head")
        body = b.append_basic_block(f"{name}.body")
        end = b.append_basic_block(f"{name}.end")
        b.branch(header)
        b.position_at_end(header)
        phi = b.phi(I64, name=name)
        phi.add_incoming(lo, pre)
        b.cbranch(b.icmp_signed("<", phi, hi), body, end)
        b.position_at_end(body)
        yield phi
        nxt = b.add(phi, i64(step))
        phi.add_incoming(nxt, b.block)
        b.branch(header)
        b.position_at_end(end)

    # -- activations ------------------------------------------------------------------

    def activation(self, act: Activation | None, x: ir.Value) -> ir.Value:
        """``act`` applied to a float scalar or vector (identity for None)."""
        if act is None:
            return x
        b, t = self.b, x.type
        zero = self.const(t, 0.0)
        kind = act.kind
        if kind == "relu":
            return self.clamp(x, 0.0, float("inf"))
        if kind == "clip":
            return self.clamp(x, act.alpha, act.beta)
        if kind == "leaky_relu":
            neg = b.fcmp_ordered("<", x, zero)
            return b.select(neg, b.fmul(x, self.const(t, act.alpha)), x)
        if kind == "sigmoid":
            return self.sigmoid(x)
        if kind == "hard_sigmoid":
            return self.clamp(self.fma(x, self.const(t, act.alpha), self.const(t, act.beta)),
                              0.0, 1.0)
        if kind == "hard_swish":
            gate = self.clamp(self.fma(x, self.const(t, 1 / 6), self.const(t, 0.5)), 0.0, 1.0)
            return b.fmul(x, gate)
        if kind == "tanh":
            return self.tanh(x)
        if kind == "silu":
            return b.fmul(x, self.sigmoid(x))
        return self._math(act, x)

    def _math(self, act: Activation, x: ir.Value) -> ir.Value:
        """The point-wise functions beyond the classic activations (ACTIVATION_KINDS)."""
        b, t, kind = self.b, x.type, act.kind
        zero, one, half = self.const(t, 0.0), self.const(t, 1.0), self.const(t, 0.5)
        if kind == "exp":
            return self.exp(x)
        if kind in ("log", "sqrt"):
            return self.intrinsic(f"llvm.{kind}", t, [x])
        if kind == "neg":
            return b.fneg(x)
        if kind == "abs":
            return self.intrinsic("llvm.fabs", t, [x])
        if kind == "reciprocal":
            return b.fdiv(one, x)
        if kind == "pow":
            return self.power(x, act.alpha)
        if kind in ("elu", "selu"):
            # x > 0 ? x : alpha * (exp(x) - 1); NaN takes the x branch
            e = self.exp(self.clamp(x, float("-inf"), 0.0))
            y = b.select(b.fcmp_ordered("<=", x, zero),
                         b.fmul(self.const(t, act.alpha), b.fsub(e, one)), x)
            return y if kind == "elu" else b.fmul(self.const(t, act.beta), y)
        if kind == "softplus":
            return self.softplus(x)
        if kind == "mish":
            return b.fmul(x, self.tanh(self.softplus(x)))
        if kind == "erf":
            return self.erf(x)
        if kind == "gelu":
            return b.fmul(b.fmul(half, x),
                          b.fadd(one, self.erf(b.fmul(x, self.const(t, 1 / math.sqrt(2))))))
        if kind == "gelu_tanh":
            inner = b.fmul(self.const(t, math.sqrt(2 / math.pi)),
                           self.fma(b.fmul(x, x), b.fmul(x, self.const(t, 0.044715)), x))
            return b.fmul(b.fmul(half, x), b.fadd(one, self.tanh(inner)))
        raise AssertionError(kind)  # Activation validates kind on construction

    def tanh(self, x: ir.Value) -> ir.Value:
        """tanh(x) = 1 - 2 / (exp(2x) + 1): exact limits at +-inf, no overflow to NaN."""
        b, one = self.b, self.const(x.type, 1.0)
        e = self.exp(b.fadd(x, x))
        return b.fsub(one, b.fdiv(self.const(x.type, 2.0), b.fadd(e, one)))

    def softplus(self, x: ir.Value) -> ir.Value:
        """log(1 + exp(x)) as max(x, 0) + log(1 + exp(-|x|)): no overflow for large x."""
        b, t = self.b, x.type
        e = self.exp(b.fneg(self.intrinsic("llvm.fabs", t, [x])))
        return b.fadd(self.clamp(x, 0.0, float("inf")),
                      self.intrinsic("llvm.log", t, [b.fadd(self.const(t, 1.0), e)]))

    def erf(self, x: ir.Value) -> ir.Value:
        """erf by Abramowitz and Stegun 7.1.26 (error bound 1.5e-7 in exact arithmetic;
        4.2e-7 measured in float32 on [-6, 6]):
        sign(x) (1 - t (a1 + t (a2 + ... a5)) exp(-x^2)), t = 1 / (1 + p |x|)."""
        b, t = self.b, x.type
        ax = self.intrinsic("llvm.fabs", t, [x])
        one = self.const(t, 1.0)
        q = b.fdiv(one, self.fma(ax, self.const(t, 0.3275911), one))
        poly = self.const(t, 1.061405429)
        for a in (-1.453152027, 1.421413741, -0.284496736, 0.254829592):
            poly = self.fma(poly, q, self.const(t, a))
        e = self.exp(b.fneg(b.fmul(ax, ax)))
        y = b.fsub(one, b.fmul(b.fmul(poly, q), e))
        return self.intrinsic("llvm.copysign", t, [y, x])

    def power(self, x: ir.Value, exponent: float) -> ir.Value:
        """x ** exponent for a constant exponent: products for small integers, a square
        root for 0.5, llvm.pow otherwise."""
        b, t = self.b, x.type
        if exponent == 1:
            return x
        if exponent == 2:
            return b.fmul(x, x)
        if exponent == 3:
            return b.fmul(b.fmul(x, x), x)
        if exponent == 0.5:
            return self.intrinsic("llvm.sqrt", t, [x])
        if exponent == -1:
            return b.fdiv(self.const(t, 1.0), x)
        return self.intrinsic("llvm.pow", t, [x, self.const(t, exponent)])

    def exp(self, x: ir.Value) -> ir.Value:
        """e**x for a float scalar or vector, in vector instructions.

        ``llvm.exp`` on a vector becomes one libm ``expf`` call per lane (LLVM has no
        vector math library here): a SiLU after every conv of YOLO-tiny cost more than
        the convs' arithmetic (a 3->16 conv at 80x80: 0.058 ms, 0.224 ms with its SiLU).
        Range reduction e**x = 2**n e**r, n = round(x / ln 2), |r| <= ln(2)/2 with
        ln 2 split in two (exact n ln 2 products), then a degree-7 polynomial for e**r
        (Cephes' expf coefficients, about 1 ulp), and 2**n as two power-of-two factors,
        so that overflow gives inf and gradual underflow subnormals or 0, as expf.
        NaN stays NaN; -inf gives 0 and inf gives inf."""
        b, t = self.b, x.type
        lanes = t.count if isinstance(t, ir.VectorType) else None
        it = ir.VectorType(I32, lanes) if lanes else I32

        def c(value: float) -> ir.Value:
            return self.const(t, value)

        def ic(value: int) -> ir.Value:
            return ir.Constant(it, [ir.Constant(I32, value)] * lanes) if lanes \
                else ir.Constant(I32, value)

        xc = self.clamp(x, -104.0, 89.0)  # e**x is 0 below, inf above (NaN passes)
        n = self.intrinsic("llvm.floor", t, [self.fma(xc, c(1 / math.log(2)), c(0.5))])
        n = b.select(b.fcmp_unordered("uno", x, x), c(0.0), n)  # no fptosi of NaN
        r = self.fma(n, c(-0.693359375), xc)
        r = self.fma(n, c(2.12194440e-4), r)
        poly = c(1.9875691500e-4)
        for coefficient in (1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2,
                            1.6666665459e-1, 5.0000001201e-1):
            poly = self.fma(poly, r, c(coefficient))
        er = b.fadd(self.fma(poly, b.fmul(r, r), r), c(1.0))
        k = b.fptosi(n, it)
        half = b.ashr(k, ic(1))
        scale1 = b.bitcast(b.shl(b.add(half, ic(127)), ic(23)), t)
        scale2 = b.bitcast(b.shl(b.add(b.sub(k, half), ic(127)), ic(23)), t)
        return b.fmul(b.fmul(er, scale1), scale2)

    def sigmoid(self, x: ir.Value) -> ir.Value:
        one = self.const(x.type, 1.0)
        e = self.exp(self.b.fneg(x))
        return self.b.fdiv(one, self.b.fadd(one, e))

    def clamp(self, x: ir.Value, lo: float, hi: float) -> ir.Value:
        """``x`` limited to [lo, hi]; NaN stays NaN (as onnxruntime's Relu and Clip).

        ``x < lo ? lo : x`` is false for NaN, so NaN passes through; it is one
        ``maxps``/``fmax``-class instruction with the NaN operand in the right place,
        where ``llvm.maxnum`` would turn NaN into the bound.
        """
        b, t = self.b, x.type
        if lo != float("-inf"):
            bound = self.const(t, lo)
            x = b.select(b.fcmp_ordered("<", x, bound), bound, x)
        if hi != float("inf"):
            bound = self.const(t, hi)
            x = b.select(b.fcmp_ordered(">", x, bound), bound, x)
        return x


def _indices(picks: Sequence[int]) -> ir.Constant:
    """A shufflevector lane-index constant."""
    return ir.Constant(ir.VectorType(I32, len(picks)), [ir.Constant(I32, p) for p in picks])


def prefix_mask(width: int, lanes: int) -> ir.Constant:
    """A ``width``-lane mask with the first ``lanes`` lanes set."""
    return ir.Constant(ir.VectorType(I1, width), [ir.Constant(I1, int(i < lanes))
                                                  for i in range(width)])


def _is_prefix(lanes: Sequence[bool]) -> bool:
    """True if the set lanes are exactly the first ``sum(lanes)`` ones."""
    count = sum(lanes)
    return all(lanes[:count]) and not any(lanes[count:])


def etype_align(etype: ir.Type) -> int:
    if isinstance(etype, ir.VectorType):
        return 4
    if etype in (I64,) or isinstance(etype, ir.PointerType):
        return 8
    return 4
