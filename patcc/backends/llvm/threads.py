"""A thread pool inside the shared object, emitted as LLVM IR over pthreads.

Written in IR rather than C so that every target (x86-64, aarch64, Android) builds
without a C compiler for it. Workers start in ``patcc_set_num_threads`` and then wait
on a condition variable; ``parallel_for(phase, ctx, n)`` publishes a job (a new
*generation*), runs tasks on the calling thread too, and waits until every worker
that took part is done. Tasks are handed out by an atomic counter, so uneven tasks
balance themselves.

A job names its phase by number and ``pool_dispatch`` switches to the phase function
with a direct call (llvmlite cannot emit indirect calls through opaque pointers,
and direct calls let LLVM see every callee).

pthread objects are kept in opaque 64-byte slots (large enough for glibc and bionic
on every supported ABI) and initialised with ``pthread_*_init`` before first use.
"""

from __future__ import annotations

from llvmlite import ir

from patcc.backends.abi import ERR_THREADS, OK
from patcc.backends.llvm.irutil import I32, I64, PTR, VOID, declare, i32, i64

MAX_THREADS = 64
SPIN_ITERATIONS = 4000
"""Polls of a waiting thread before it sleeps on the condition variable (tens of
microseconds): layers run back to back, and waking a sleeping thread costs more than
many small layers take."""
_SLOT = ir.ArrayType(ir.IntType(8), 64)


def _global(module: ir.Module, name: str, typ: ir.Type, init: ir.Constant | None = None,
            align: int = 8) -> ir.GlobalVariable:
    g = ir.GlobalVariable(module, typ, name)
    g.linkage = "internal"
    g.initializer = init if init is not None else ir.Constant(typ, None)
    g.align = align
    return g


class ThreadPool:
    """Emits the pool's globals and functions into ``module``; see the module docstring."""

    def __init__(self, module: ir.Module, nprocessors_onln: int, arch: str = "") -> None:
        self.module = module
        self.arch = arch
        m = module
        self.mutex = _global(m, "pool_mutex", _SLOT, align=64)
        self.work_cv = _global(m, "pool_work_cv", _SLOT, align=64)
        self.done_cv = _global(m, "pool_done_cv", _SLOT, align=64)
        self.run_mutex = _global(m, "run_mutex", _SLOT, align=64)
        self.initialised = _global(m, "pool_initialised", I32)
        self.generation = _global(m, "pool_generation", I64)
        self.pending = _global(m, "pool_pending", I64)
        self.active = _global(m, "pool_active", I64)
        self.task_fn = _global(m, "pool_task_phase", I64)
        self.task_ctx = _global(m, "pool_task_ctx", PTR)
        self.ntasks = _global(m, "pool_ntasks", I64)
        self.next = _global(m, "pool_next", I64, align=64)
        self.started = _global(m, "pool_started", I64)
        self.nthreads = _global(m, "pool_nthreads", I64, ir.Constant(I64, 1))
        self.threads = _global(m, "pool_threads", ir.ArrayType(I64, MAX_THREADS))
        # The generation each worker was started at: a worker that reads it only when
        # it first takes the lock could miss a job published before that.
        self.start_gen = _global(m, "pool_start_generation", ir.ArrayType(I64, MAX_THREADS))
        self.task_type = ir.FunctionType(VOID, [PTR, I64])
        self.dispatch = ir.Function(m, ir.FunctionType(VOID, [I64, PTR, I64]), "pool_dispatch")
        self.dispatch.linkage = "internal"
        self._pthread()
        self.spin = self._emit_spin()
        self.init_fn = self._emit_init()
        self.run_tasks = self._emit_run_tasks()
        self.worker = self._emit_worker()
        self.parallel_for = self._emit_parallel_for()
        self.set_threads = self._emit_set_threads(nprocessors_onln)

    def _pthread(self) -> None:
        m = self.module
        self.p_mutex_init = declare(m, "pthread_mutex_init", I32, [PTR, PTR])
        self.p_lock = declare(m, "pthread_mutex_lock", I32, [PTR])
        self.p_unlock = declare(m, "pthread_mutex_unlock", I32, [PTR])
        self.p_cond_init = declare(m, "pthread_cond_init", I32, [PTR, PTR])
        self.p_wait = declare(m, "pthread_cond_wait", I32, [PTR, PTR])
        self.p_broadcast = declare(m, "pthread_cond_broadcast", I32, [PTR])
        self.p_create = declare(m, "pthread_create", I32, [PTR, PTR, PTR, PTR])
        self.sysconf = declare(m, "sysconf", I64, [I32])

    def _function(self, name: str, ret: ir.Type, args: list[ir.Type]
                  ) -> tuple[ir.Function, ir.IRBuilder]:
        fn = ir.Function(self.module, ir.FunctionType(ret, args), name)
        fn.linkage = "internal"
        return fn, ir.IRBuilder(fn.append_basic_block("entry"))

    def _emit_spin(self) -> ir.Function:
        """``pool_spin(ptr word, i64 value, i1 until_equal)``: poll ``word`` (atomically)
        until it differs from ``value`` (or equals it, with ``until_equal``), at most
        SPIN_ITERATIONS times, with the CPU's spin-wait hint between polls."""
        fn, b = self._function("pool_spin", VOID, [PTR, I64, ir.IntType(1)])
        word, value, until_equal = fn.args
        head, body, done = (fn.append_basic_block(n) for n in ("poll", "pause", "done"))
        entry = b.block
        b.branch(head)
        b.position_at_end(head)
        i = b.phi(I64, "i")
        i.add_incoming(i64(0), entry)
        current = b.load_atomic(word, "monotonic", 8, typ=I64)
        equal = b.icmp_signed("==", current, value)
        finished = b.or_(b.icmp_unsigned("!=", equal, until_equal),
                         b.icmp_signed(">=", i, i64(SPIN_ITERATIONS)))
        b.cbranch(finished, done, body)
        b.position_at_end(body)
        if self.arch == "x86_64":
            b.call(declare(self.module, "llvm.x86.sse2.pause", VOID, []), [])
        elif self.arch == "aarch64":
            b.call(declare(self.module, "llvm.aarch64.hint", VOID, [I32]), [i32(1)])  # yield
        i.add_incoming(b.add(i, i64(1)), body)
        b.branch(head)
        b.position_at_end(done)
        b.ret_void()
        return fn

    def _emit_init(self) -> ir.Function:
        """Initialise the mutexes and condition variables once (from set_num_threads/run)."""
        fn, b = self._function("pool_init", VOID, [])
        done = b.load(self.initialised, typ=I32)
        with b.if_then(b.icmp_signed("==", done, i32(0))):
            null = ir.Constant(PTR, None)
            for mutex in (self.mutex, self.run_mutex):
                b.call(self.p_mutex_init, [mutex, null])
            for cv in (self.work_cv, self.done_cv):
                b.call(self.p_cond_init, [cv, null])
            b.store(i32(1), self.initialised)
        b.ret_void()
        return fn

    def _emit_run_tasks(self) -> ir.Function:
        """Claim task indices from the shared counter until none is left."""
        fn, b = self._function("pool_run_tasks", VOID, [I64, PTR, I64])
        task, ctx, n = fn.args
        loop = fn.append_basic_block("claim")
        body = fn.append_basic_block("run")
        done = fn.append_basic_block("done")
        b.branch(loop)
        b.position_at_end(loop)
        i = b.atomic_rmw("add", self.next, i64(1), "monotonic")
        b.cbranch(b.icmp_signed("<", i, n), body, done)
        b.position_at_end(body)
        b.call(self.dispatch, [task, ctx, i])
        b.branch(loop)
        b.position_at_end(done)
        b.ret_void()
        return fn

    def _emit_worker(self) -> ir.Function:
        fn, b = self._function("pool_worker", PTR, [PTR])
        index = b.ptrtoint(fn.args[0], I64)
        b.call(self.p_lock, [self.mutex])
        seen0 = b.load(b.gep(self.start_gen, [i64(0), index]), typ=I64)
        wait = fn.append_basic_block("wait")
        wait_body = fn.append_basic_block("wait.body")
        woke = fn.append_basic_block("woke")
        work = fn.append_basic_block("work")
        b.branch(wait)
        b.position_at_end(wait)
        seen = b.phi(I64, "seen")
        seen.add_incoming(seen0, fn.entry_basic_block)
        gen = b.load(self.generation, typ=I64)
        b.cbranch(b.icmp_signed("==", gen, seen), wait_body, woke)
        b.position_at_end(wait_body)
        # Spin a little without the lock, then sleep unless a job arrived meanwhile
        # (checked under the lock, so a broadcast cannot be missed).
        b.call(self.p_unlock, [self.mutex])
        b.call(self.spin, [self.generation, seen, ir.Constant(ir.IntType(1), 0)])
        b.call(self.p_lock, [self.mutex])
        with b.if_then(b.icmp_signed("==", b.load(self.generation, typ=I64), seen)):
            b.call(self.p_wait, [self.work_cv, self.mutex])
        seen.add_incoming(seen, b.block)
        b.branch(wait)
        b.position_at_end(woke)
        seen.add_incoming(gen, woke)  # back-edge added below, from `woke` when idle
        active = b.load(self.active, typ=I64)
        b.cbranch(b.icmp_signed("<", index, active), work, wait)
        b.position_at_end(work)
        task = b.load(self.task_fn, typ=I64)
        ctx = b.load(self.task_ctx, typ=PTR)
        n = b.load(self.ntasks, typ=I64)
        b.call(self.p_unlock, [self.mutex])
        b.call(self.run_tasks, [task, ctx, n])
        b.call(self.p_lock, [self.mutex])
        left = b.sub(b.load(self.pending, typ=I64), i64(1))
        b.store_atomic(left, self.pending, "monotonic", 8)
        with b.if_then(b.icmp_signed("==", left, i64(0))):
            b.call(self.p_broadcast, [self.done_cv])
        seen.add_incoming(gen, b.block)
        b.branch(wait)
        return fn

    def _emit_parallel_for(self) -> ir.Function:
        fn, b = self._function("parallel_for", VOID, [I64, PTR, I64])
        task, ctx, n = fn.args
        workers = b.sub(b.load(self.nthreads, typ=I64), i64(1))
        useful = b.sub(n, i64(1))
        workers = b.select(b.icmp_signed("<", useful, workers), useful, workers)
        serial, threaded = fn.append_basic_block("serial"), fn.append_basic_block("threaded")
        b.cbranch(b.icmp_signed("<=", workers, i64(0)), serial, threaded)

        b.position_at_end(serial)
        b.store(i64(0), self.next)
        b.call(self.run_tasks, [task, ctx, n])
        b.ret_void()

        b.position_at_end(threaded)
        b.call(self.p_lock, [self.mutex])
        b.store(task, self.task_fn)
        b.store(ctx, self.task_ctx)
        b.store(n, self.ntasks)
        b.store(i64(0), self.next)
        b.store(workers, self.active)
        b.store_atomic(workers, self.pending, "monotonic", 8)
        b.store_atomic(b.add(b.load(self.generation, typ=I64), i64(1)), self.generation,
                       "monotonic", 8)
        b.call(self.p_broadcast, [self.work_cv])
        b.call(self.p_unlock, [self.mutex])
        b.call(self.run_tasks, [task, ctx, n])
        b.call(self.p_lock, [self.mutex])
        head, body, end = (fn.append_basic_block(s) for s in ("join", "join.wait", "joined"))
        b.branch(head)
        b.position_at_end(head)
        pending = b.load(self.pending, typ=I64)
        b.cbranch(b.icmp_signed("==", pending, i64(0)), end, body)
        b.position_at_end(body)
        b.call(self.p_unlock, [self.mutex])
        b.call(self.spin, [self.pending, i64(0), ir.Constant(ir.IntType(1), 1)])
        b.call(self.p_lock, [self.mutex])
        with b.if_then(b.icmp_signed("!=", b.load(self.pending, typ=I64), i64(0))):
            b.call(self.p_wait, [self.done_cv, self.mutex])
        b.branch(head)
        b.position_at_end(end)
        b.call(self.p_unlock, [self.mutex])
        b.ret_void()
        return fn

    def _emit_set_threads(self, nprocessors_onln: int) -> ir.Function:
        """``int32 patcc_set_num_threads(int32 n)``: 0 means one per online core."""
        fn = ir.Function(self.module, ir.FunctionType(I32, [I32]), "patcc_set_num_threads")
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        b.call(self.init_fn, [])
        n = b.sext(fn.args[0], I64)
        bad = b.or_(b.icmp_signed("<", n, i64(0)), b.icmp_signed(">", n, i64(MAX_THREADS)))
        with b.if_then(bad):
            b.ret(i32(ERR_THREADS))
        cores = b.call(self.sysconf, [i32(nprocessors_onln)])
        cores = b.select(b.icmp_signed("<", cores, i64(1)), i64(1), cores)
        cores = b.select(b.icmp_signed(">", cores, i64(MAX_THREADS)), i64(MAX_THREADS), cores)
        n = b.select(b.icmp_signed("==", n, i64(0)), cores, n)
        # Take the run lock: the thread count never changes under a running model.
        b.call(self.p_lock, [self.run_mutex])
        b.call(self.p_lock, [self.mutex])
        start = b.load(self.started, typ=I64)
        pre = b.block
        head = fn.append_basic_block("spawn")
        body = fn.append_basic_block("spawn.body")
        failed = fn.append_basic_block("spawn.failed")
        ok = fn.append_basic_block("spawn.next")
        done = fn.append_basic_block("spawned")
        b.branch(head)
        b.position_at_end(head)
        i = b.phi(I64, "i")
        i.add_incoming(start, pre)
        b.cbranch(b.icmp_signed("<", i, b.sub(n, i64(1))), body, done)
        b.position_at_end(body)
        slot = b.gep(self.threads, [i64(0), i])
        b.store(b.load(self.generation, typ=I64),
                b.gep(self.start_gen, [i64(0), i]))
        rc = b.call(self.p_create, [slot, ir.Constant(PTR, None), self.worker,
                                    b.inttoptr(i, PTR)])
        b.cbranch(b.icmp_signed("==", rc, i32(0)), ok, failed)
        b.position_at_end(ok)
        b.store(b.add(i, i64(1)), self.started)
        i.add_incoming(b.add(i, i64(1)), ok)
        b.branch(head)
        b.position_at_end(failed)
        b.call(self.p_unlock, [self.mutex])
        b.call(self.p_unlock, [self.run_mutex])
        b.ret(i32(ERR_THREADS))
        b.position_at_end(done)
        b.store(n, self.nthreads)
        b.call(self.p_unlock, [self.mutex])
        b.call(self.p_unlock, [self.run_mutex])
        b.ret(i32(OK))
        return fn

    def finish_dispatch(self, phases: list[ir.Function]) -> None:
        """Fill ``pool_dispatch``: phase id i calls ``phases[i](ctx, task)``."""
        fn = self.dispatch
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        phase, ctx, task = fn.args
        done = fn.append_basic_block("done")
        switch = b.switch(phase, done)
        for i, target in enumerate(phases):
            block = fn.append_basic_block(f"phase{i}")
            switch.add_case(i64(i), block)
            b.position_at_end(block)
            b.call(target, [ctx, task])
            b.branch(done)
        b.position_at_end(done)
        b.ret_void()

    def emit_get_threads(self) -> ir.Function:
        """``int32 patcc_get_num_threads(void)``."""
        fn = ir.Function(self.module, ir.FunctionType(I32, []), "patcc_get_num_threads")
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        b.ret(b.trunc(b.load(self.nthreads, typ=I64), I32))
        return fn
