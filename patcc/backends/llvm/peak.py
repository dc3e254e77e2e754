"""The FMA peak of a compile target on this machine, measured: what "x% of peak" means
in ``--report`` and in the benchmarks.

A loop of independent fused multiply-adds on the target's vectors, with more chains
than FMA latency times FMA pipes (so nothing waits on a result), compiled for the
target with patcc's own toolchain (LLVM at O3) and run on ``threads`` threads at
once. Its rate is the most the target's code can do here: 2 FMAs x 8 lanes x 2 FLOP
per cycle per core for AVX2 on most cores, and on Zen 4 the same for AVX-512 (its
512-bit FMAs take two cycles). The clock follows from it, at the ISA's nominal FMA
rate (``nominal_flop_per_cycle``).
"""

from __future__ import annotations

import ctypes
import threading
import time
from typing import Any

from llvmlite import ir

from patcc.backends.llvm import toolchain
from patcc.backends.target import target_machine

CHAINS = 12
"""Independent accumulators: more than 4 cycles latency x 2 pipes, and with the
constant operands they fit 16 registers as well as 32."""
UNROLL = 8
ITERATIONS = 2_000_000


def _kernel(target: Any) -> tuple[Any, Any]:
    """JIT-compile ``float peak(int64 n)`` for ``target``; (function, engine)."""
    import llvmlite.binding as llvm

    width = target.vector_width
    f32, i64 = ir.FloatType(), ir.IntType(64)
    vec = ir.VectorType(f32, width)
    module = ir.Module(name="peak")
    module.triple = target.triple
    fn = ir.Function(module, ir.FunctionType(f32, [i64]), "peak")
    fma = ir.Function(module, ir.FunctionType(vec, [vec, vec, vec]), f"llvm.fma.v{width}f32")
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    entry = b.block
    head, body, done = (fn.append_basic_block(n) for n in ("head", "body", "done"))
    b.branch(head)
    b.position_at_end(head)
    i = b.phi(i64)
    i.add_incoming(ir.Constant(i64, 0), entry)
    chains = [b.phi(vec) for _ in range(CHAINS)]
    for k, chain in enumerate(chains):
        chain.add_incoming(ir.Constant(vec, [ir.Constant(f32, 1e-3 * k)] * width), entry)
    b.cbranch(b.icmp_signed("<", i, fn.args[0]), body, done)
    b.position_at_end(body)
    scale = ir.Constant(vec, [ir.Constant(f32, 0.999)] * width)
    shift = ir.Constant(vec, [ir.Constant(f32, 1e-3)] * width)
    values = list(chains)
    for _ in range(UNROLL):
        values = [b.call(fma, [v, scale, shift]) for v in values]
    for chain, value in zip(chains, values, strict=True):
        chain.add_incoming(value, body)
    i.add_incoming(b.add(i, ir.Constant(i64, 1)), body)
    b.branch(head)
    b.position_at_end(done)
    total = chains[0]
    for chain in chains[1:]:
        total = b.fadd(total, chain)
    b.ret(b.extract_element(total, ir.Constant(ir.IntType(32), 0)))
    engine = llvm.create_mcjit_compiler(toolchain.optimize(module, target),
                                        target_machine(target))
    engine.finalize_object()
    function = ctypes.CFUNCTYPE(ctypes.c_float, ctypes.c_int64)(
        engine.get_function_address("peak"))
    return function, engine


def fma_peak(target: Any, threads: int, repeats: int = 5) -> float:
    """GFLOP/s of ``threads`` threads running independent FMAs of ``target``'s
    vectors at once, the best of ``repeats`` (ctypes releases the GIL)."""
    function, _engine = _kernel(target)
    flop = ITERATIONS * UNROLL * CHAINS * target.vector_width * 2
    best = float("inf")
    for _ in range(repeats):
        workers = [threading.Thread(target=function, args=(ITERATIONS,))
                   for _ in range(threads)]
        start = time.perf_counter()
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        best = min(best, time.perf_counter() - start)
    return flop * threads / best / 1e9


def nominal_flop_per_cycle(target: Any) -> int:
    """FLOP per cycle per core the ISA's FMA units nominally reach: 2 FMAs a cycle of
    the target's vectors (Zen 4 runs AVX-512 at half that rate per instruction)."""
    return 2 * 2 * target.vector_width
