"""A thread pool inside the shared object, emitted as LLVM IR over pthreads.

Written in IR rather than C so that every target (x86-64, aarch64, Android) builds
without a C compiler for it. Workers start in ``patcc_set_num_threads``.

``parallel_for(phase, ctx, n)`` publishes a job without a lock: it writes the job,
then a new generation number into the word of each worker that takes part (one cache
line per worker), runs tasks on the calling thread too, and waits until the
``pending`` count of those workers reaches zero. Each thread taking part owns a
contiguous share of the tasks, claimed through its own counter on its own cache line,
and then helps itself to what is left of the others' shares: uneven tasks still
balance, but in the common case no cache line moves between cores per task, and a
thread computes the same part of every layer, whose inputs the previous layer left in
its own cache. (One shared counter cost ResNet-18 a cache-line transfer per task;
with the two vCPUs on different CCDs of the host, 0.4 us each.)

Waiting threads (workers for a job, the caller for the workers) poll their word
while a run is in progress (``pool_in_run``), for at most SPIN_ITERATIONS polls, and
only then sleep on a condition variable. The mutex is taken only to sleep and to wake
sleepers; whether anyone sleeps is a counter read after the publishing store, both
sequentially consistent, so a wake-up cannot be lost. (A pool that took the mutex for
every job made the worker block on it about 35 times per ResNet-18 run.)

A job names its phase by number and ``pool_dispatch`` switches to the phase function
with a direct call (llvmlite cannot emit indirect calls through opaque pointers,
and direct calls let LLVM see every callee).

With ``pin=True`` each worker is pinned to one CPU of the process's allowed set other
than the one the caller runs on: at the start of a run the caller reads its CPU, and
when it has changed, each worker re-pins itself at its next job (worker ``k`` to the
``k``-th allowed CPU that is not the caller's). The caller's own affinity is the
application's business and is never touched. Unpinned, a worker woken for a job was
often placed on the caller's CPU while the other sat idle, and the scheduler did not
move it before it slept again: with idle time between runs (a camera loop, the
tuner's alternating candidates) half the runs of ResNet-18 took the one-thread time.
Pinning is skipped when the pool has more threads than allowed CPUs, when
``PATCC_THREAD_AFFINITY=0``, and on targets whose scheduler should place threads itself
(Android's big.LITTLE cores).

pthread objects are kept in opaque 64-byte slots (large enough for glibc and bionic
on every supported ABI) and initialised with ``pthread_*_init`` before first use.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from llvmlite import ir

from patcc.backends.abi import ERR_THREADS, OK
from patcc.backends.llvm.irutil import I32, I64, PTR, VOID, declare, i32, i64

MAX_THREADS = 64
SPIN_ITERATIONS = 1 << 22
"""Polls of a thread waiting inside a run before it sleeps (milliseconds): layers
run back to back, and waking a sleeping thread costs tens of microseconds, more on a
busy virtual machine. Outside a run waiting threads sleep at once, so an idle model
takes no CPU from the rest of the process."""
POLLS_PER_PAUSE = 256
"""The spin-wait hint is given once per this many polls, not at every poll: under a
hypervisor, back-to-back PAUSEs trigger pause-loop exiting, which hands the virtual
CPU away for a time slice (measured: ResNet-18 runs of 11 ms instead of 5)."""
POLLS_PER_YIELD = 4096
"""A spinning thread calls ``sched_yield`` once per this many polls. When the machine
has more runnable threads than cores, the thread being waited for may be queued
behind the spinner on its core; without the yield every wait lasted the whole spin
(MobileNetV2 took 210 ms instead of 3 while another process used a core). On an idle
machine the yield returns at once."""
AFFINITY_ENV = "PATCC_THREAD_AFFINITY"
"""Set to ``0`` to leave the workers unpinned."""
CPU_MASK_WORDS = 16
"""The affinity mask is 16 x 64 bits: machines with up to 1024 CPUs are pinned (with
more, ``sched_getaffinity`` fails and the workers stay unpinned)."""
_SLOT = ir.ArrayType(ir.IntType(8), 64)
_LINE = ir.ArrayType(I64, 8)  # one 64-byte cache line per worker word
_SEQ = "seq_cst"


@contextmanager
def _counting(b: ir.IRBuilder, count: ir.Value, name: str) -> Iterator[ir.Value]:
    """``for (k = 0; k < count; k++) { body }`` with a straight-line body; yields k
    and leaves the builder after the loop."""
    fn, pre = b.function, b.block
    head, body, done = (fn.append_basic_block(s) for s in (name, f"{name}.body",
                                                            f"{name}.done"))
    b.branch(head)
    b.position_at_end(head)
    k = b.phi(I64, name)
    k.add_incoming(i64(0), pre)
    b.cbranch(b.icmp_signed("<", k, count), body, done)
    b.position_at_end(body)
    yield k
    k.add_incoming(b.add(k, i64(1)), b.block)
    b.branch(head)
    b.position_at_end(done)


def _global(module: ir.Module, name: str, typ: ir.Type, init: ir.Constant | None = None,
            align: int = 8) -> ir.GlobalVariable:
    g = ir.GlobalVariable(module, typ, name)
    g.linkage = "internal"
    g.initializer = init if init is not None else ir.Constant(typ, None)
    g.align = align
    return g


class ThreadPool:
    """Emits the pool's globals and functions into ``module``; see the module docstring."""

    def __init__(self, module: ir.Module, nprocessors_onln: int, arch: str = "",
                 pin: bool = False) -> None:
        self.module = module
        self.arch = arch
        m = module
        self.mutex = _global(m, "pool_mutex", _SLOT, align=64)
        self.work_cv = _global(m, "pool_work_cv", _SLOT, align=64)
        self.done_cv = _global(m, "pool_done_cv", _SLOT, align=64)
        self.run_mutex = _global(m, "run_mutex", _SLOT, align=64)
        self.initialised = _global(m, "pool_initialised", I32)
        self.generation = _global(m, "pool_generation", I64)
        self.task_fn = _global(m, "pool_task_phase", I64)
        self.task_ctx = _global(m, "pool_task_ctx", PTR)
        # Per thread taking part (the caller is 0, worker k is k+1): its share of the
        # job's tasks as [next, end) in the first two words of its own cache line.
        self.shares = _global(m, "pool_shares", ir.ArrayType(_LINE, MAX_THREADS + 1), align=64)
        self.nshares = _global(m, "pool_nshares", I64, ir.Constant(I64, 1))
        self.pending = _global(m, "pool_pending", _LINE, align=64)
        self.sleepers = _global(m, "pool_sleepers", _LINE, align=64)
        self.caller_waits = _global(m, "pool_caller_waits", _LINE, align=64)
        self.in_run = _global(m, "pool_in_run", _LINE, align=64)
        self.started = _global(m, "pool_started", I64)
        self.nthreads = _global(m, "pool_nthreads", I64, ir.Constant(I64, 1))
        self.requested = _global(m, "pool_requested", I64, ir.Constant(I64, 1))
        self.caller_cpu = _global(m, "pool_caller_cpu", I64, ir.Constant(I64, -1))
        self.placement = _global(m, "pool_placement", I64)  # bumped when the caller moves
        # The CPUs the caller of patcc_set_num_threads may run on: the workers' choice.
        self.cpus = _global(m, "pool_cpus", ir.ArrayType(I64, CPU_MASK_WORDS), align=64)
        self.cpus_known = _global(m, "pool_cpus_known", I64)
        self.threads = _global(m, "pool_threads", ir.ArrayType(I64, MAX_THREADS))
        # Each worker's job word, and its value when the worker was started (a job
        # may be published before the new thread first reads its word).
        self.words = _global(m, "pool_words", ir.ArrayType(_LINE, MAX_THREADS), align=64)
        self.start_gen = _global(m, "pool_start_generation", ir.ArrayType(I64, MAX_THREADS))
        self.task_type = ir.FunctionType(VOID, [PTR, I64])
        self.dispatch = ir.Function(m, ir.FunctionType(VOID, [I64, PTR, I64]), "pool_dispatch")
        self.dispatch.linkage = "internal"
        self._pthread()
        self.spin = self._emit_spin()
        self.init_fn = self._emit_init()
        self.run_tasks = self._emit_run_tasks()
        self.pin = self._emit_pin() if pin else None
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
        self.sched_yield = declare(m, "sched_yield", I32, [])
        self.getaffinity = declare(m, "sched_getaffinity", I32, [I32, I64, PTR])
        self.setaffinity = declare(m, "sched_setaffinity", I32, [I32, I64, PTR])
        self.getenv = declare(m, "getenv", PTR, [PTR])
        self.getcpu = declare(m, "sched_getcpu", I32, [])

    def _function(self, name: str, ret: ir.Type, args: list[ir.Type]
                  ) -> tuple[ir.Function, ir.IRBuilder]:
        fn = ir.Function(self.module, ir.FunctionType(ret, args), name)
        fn.linkage = "internal"
        return fn, ir.IRBuilder(fn.append_basic_block("entry"))

    @staticmethod
    def _word(b: ir.IRBuilder, line: ir.Value) -> ir.Value:
        return b.gep(line, [i64(0), i64(0)])

    def _load(self, b: ir.IRBuilder, line: ir.Value, order: str = _SEQ) -> ir.Value:
        return b.load_atomic(self._word(b, line), order, 8, typ=I64)

    def _store(self, b: ir.IRBuilder, value: ir.Value, line: ir.Value) -> None:
        b.store_atomic(value, self._word(b, line), _SEQ, 8)

    def _worker_word(self, b: ir.IRBuilder, index: ir.Value) -> ir.Value:
        return b.gep(self.words, [i64(0), index, i64(0)])

    def _broadcast(self, b: ir.IRBuilder, cv: ir.Value) -> None:
        b.call(self.p_lock, [self.mutex])
        b.call(self.p_broadcast, [cv])
        b.call(self.p_unlock, [self.mutex])

    def _emit_spin(self) -> ir.Function:
        """``pool_spin(ptr word, i64 value, i1 until_equal)``: poll ``word`` until it
        differs from ``value`` (or equals it, with ``until_equal``), at most
        SPIN_ITERATIONS times and only while a run is in progress, with the CPU's
        spin-wait hint every POLLS_PER_PAUSE polls."""
        fn, b = self._function("pool_spin", VOID, [PTR, I64, ir.IntType(1)])
        word, value, until_equal = fn.args
        head, body, done = (fn.append_basic_block(n) for n in ("poll", "next", "done"))
        entry = b.block
        b.branch(head)
        b.position_at_end(head)
        i = b.phi(I64, "i")
        i.add_incoming(i64(0), entry)
        current = b.load_atomic(word, "monotonic", 8, typ=I64)
        equal = b.icmp_signed("==", current, value)
        idle = b.icmp_signed("==", self._load(b, self.in_run, "monotonic"), i64(0))
        finished = b.or_(b.or_(b.icmp_unsigned("==", equal, until_equal), idle),
                         b.icmp_signed(">=", i, i64(SPIN_ITERATIONS)))
        b.cbranch(finished, done, body)
        b.position_at_end(body)
        hint: tuple[ir.Function, list[ir.Value]] | None = None
        if self.arch == "x86_64":
            hint = (declare(self.module, "llvm.x86.sse2.pause", VOID, []), [])
        elif self.arch == "aarch64":
            hint = (declare(self.module, "llvm.aarch64.hint", VOID, [I32]), [i32(1)])
        if hint is not None:
            due = b.icmp_signed("==", b.and_(i, i64(POLLS_PER_PAUSE - 1)),
                                i64(POLLS_PER_PAUSE - 1))
            with b.if_then(due):
                b.call(*hint)
        due = b.icmp_signed("==", b.and_(i, i64(POLLS_PER_YIELD - 1)), i64(POLLS_PER_YIELD - 1))
        with b.if_then(due):
            b.call(self.sched_yield, [])
        i.add_incoming(b.add(i, i64(1)), b.block)
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

    def _share(self, b: ir.IRBuilder, owner: ir.Value, word: int) -> ir.Value:
        return b.gep(self.shares, [i64(0), owner, i64(word)])

    def _emit_run_tasks(self) -> ir.Function:
        """``pool_run_tasks(phase, ctx, own)``: claim tasks from share ``own`` until it
        is empty, then from each other share in turn."""
        fn, b = self._function("pool_run_tasks", VOID, [I64, PTR, I64])
        task, ctx, own = fn.args
        parts = b.load(self.nshares, typ=I64)
        entry = b.block
        outer, pick, claim, body, done = (fn.append_basic_block(n) for n in (
            "share", "share.pick", "claim", "run", "done"))
        b.branch(outer)
        b.position_at_end(outer)
        i = b.phi(I64, "i")
        i.add_incoming(i64(0), entry)
        b.cbranch(b.icmp_signed("<", i, parts), pick, done)
        b.position_at_end(pick)
        u = b.add(own, i)
        u = b.select(b.icmp_signed(">=", u, parts), b.sub(u, parts), u)
        end = b.load(self._share(b, u, 1), typ=I64)
        counter = self._share(b, u, 0)
        b.branch(claim)
        b.position_at_end(claim)
        j = b.atomic_rmw("add", counter, i64(1), "monotonic")
        i.add_incoming(b.add(i, i64(1)), claim)
        b.cbranch(b.icmp_signed("<", j, end), body, outer)
        b.position_at_end(body)
        b.call(self.dispatch, [task, ctx, j])
        b.branch(claim)
        b.position_at_end(done)
        b.ret_void()
        return fn

    def _set_shares(self, b: ir.IRBuilder, parts: ir.Value, n: ir.Value) -> None:
        """Split tasks [0, n) into ``parts`` contiguous shares (before publishing)."""
        with _counting(b, parts, "split") as u:
            b.store(b.udiv(b.mul(u, n), parts), self._share(b, u, 0))
            b.store(b.udiv(b.mul(b.add(u, i64(1)), n), parts), self._share(b, u, 1))
        b.store(parts, self.nshares)

    def _emit_pin(self) -> ir.Function:
        """``pool_pin(i64 worker)``: pin the calling thread to the ``worker``-th
        allowed CPU other than the caller's (modulo their number); see the module
        docstring."""
        fn, b = self._function("pool_pin", VOID, [I64])
        index = fn.args[0]
        i8 = ir.IntType(8)
        name = bytearray(AFFINITY_ENV.encode()) + b"\0"
        env_name = _global(self.module, "pool_affinity_env", ir.ArrayType(i8, len(name)),
                           ir.Constant(ir.ArrayType(i8, len(name)), name), align=1)
        env_name.global_constant = True
        value = b.call(self.getenv, [env_name])
        is_set = b.icmp_unsigned("!=", value, ir.Constant(PTR, None))
        with b.if_then(is_set):
            with b.if_then(b.icmp_signed("==", b.load(value, typ=i8), ir.Constant(i8, ord("0")))):
                b.ret_void()
        words = ir.ArrayType(I64, CPU_MASK_WORDS)
        mask = b.alloca(words, name="mask")
        size = i64(CPU_MASK_WORDS * 8)
        with b.if_then(b.icmp_signed("==", b.load(self.cpus_known, typ=I64), i64(0))):
            b.ret_void()
        word_at = [b.gep(mask, [i64(0), i64(w)]) for w in range(CPU_MASK_WORDS)]
        for w, ptr in enumerate(word_at):
            b.store(b.load(b.gep(self.cpus, [i64(0), i64(w)]), typ=I64), ptr)
        caller = b.load(self.caller_cpu, typ=I64)
        known = b.icmp_unsigned("<", caller, i64(CPU_MASK_WORDS * 64))
        with b.if_then(known):  # take the caller's CPU out of the choice
            ptr = b.gep(mask, [i64(0), b.lshr(caller, i64(6))])
            bit = b.shl(i64(1), b.and_(caller, i64(63)))
            b.store(b.and_(b.load(ptr, typ=I64), b.xor(bit, i64(-1))), ptr)
        ctpop = declare(self.module, "llvm.ctpop.i64", I64, [I64])
        allowed = i64(0)
        for ptr in word_at:
            allowed = b.add(allowed, b.call(ctpop, [b.load(ptr, typ=I64)]))
        workers = b.sub(b.load(self.requested, typ=I64), i64(1))
        crowded = b.icmp_signed(">", workers, allowed)
        with b.if_then(b.or_(crowded, b.icmp_signed("==", allowed, i64(0)))):
            # Too many threads for the CPUs: free to run anywhere again.
            b.call(self.setaffinity, [i32(0), size, self.cpus])
            b.ret_void()
        # The wanted-th set bit of the mask, scanning CPU numbers upwards.
        wanted = b.urem(index, allowed)
        pre = b.block
        head, step, found = (fn.append_basic_block(n) for n in ("scan", "scan.next", "found"))
        b.branch(head)
        b.position_at_end(head)
        cpu = b.phi(I64, "cpu")
        seen = b.phi(I64, "seen")
        cpu.add_incoming(i64(0), pre)
        seen.add_incoming(i64(0), pre)
        word = b.load(b.gep(mask, [i64(0), b.lshr(cpu, i64(6))]), typ=I64)
        bit = b.and_(b.lshr(word, b.and_(cpu, i64(63))), i64(1))
        hit = b.icmp_signed("!=", bit, i64(0))
        b.cbranch(b.and_(hit, b.icmp_signed("==", seen, wanted)), found, step)
        b.position_at_end(step)
        cpu.add_incoming(b.add(cpu, i64(1)), step)
        seen.add_incoming(b.add(seen, b.zext(hit, I64)), step)
        b.branch(head)  # ends: the wanted-th bit exists, as wanted < allowed
        b.position_at_end(found)
        for ptr in word_at:
            b.store(i64(0), ptr)
        slot = b.gep(mask, [i64(0), b.lshr(cpu, i64(6))])
        b.store(b.shl(i64(1), b.and_(cpu, i64(63))), slot)
        b.call(self.setaffinity, [i32(0), size, mask])  # best effort: failure leaves it free
        b.ret_void()
        return fn

    def _emit_worker(self) -> ir.Function:
        fn, b = self._function("pool_worker", PTR, [PTR])
        index = b.ptrtoint(fn.args[0], I64)
        placed = b.alloca(I64, name="placed")  # the placement this worker is pinned for
        b.store(i64(-1), placed)
        word = self._worker_word(b, index)
        seen0 = b.load(b.gep(self.start_gen, [i64(0), index]), typ=I64)
        wait, sleep, work = (fn.append_basic_block(n) for n in ("wait", "sleep", "work"))
        b.branch(wait)

        b.position_at_end(wait)
        seen = b.phi(I64, "seen")
        seen.add_incoming(seen0, fn.entry_basic_block)
        b.call(self.spin, [word, seen, ir.Constant(ir.IntType(1), 0)])
        gen = b.load_atomic(word, _SEQ, 8, typ=I64)
        b.cbranch(b.icmp_signed("!=", gen, seen), work, sleep)

        # Count ourselves as a sleeper, then look at the word again: the publisher
        # stores the word, then reads the count (both seq_cst), so one of us sees the
        # other; it broadcasts under the mutex we hold until cond_wait releases it.
        b.position_at_end(sleep)
        b.call(self.p_lock, [self.mutex])
        b.atomic_rmw("add", self._word(b, self.sleepers), i64(1), _SEQ)
        with b.if_then(b.icmp_signed("==", b.load_atomic(word, _SEQ, 8, typ=I64), seen)):
            b.call(self.p_wait, [self.work_cv, self.mutex])
        b.atomic_rmw("sub", self._word(b, self.sleepers), i64(1), _SEQ)
        b.call(self.p_unlock, [self.mutex])
        seen.add_incoming(seen, b.block)
        b.branch(wait)

        b.position_at_end(work)
        if self.pin is not None:
            placement = b.load(self.placement, typ=I64)
            with b.if_then(b.icmp_signed("!=", placement, b.load(placed, typ=I64))):
                b.call(self.pin, [index])
                b.store(placement, placed)
        task = b.load(self.task_fn, typ=I64)
        ctx = b.load(self.task_ctx, typ=PTR)
        b.call(self.run_tasks, [task, ctx, b.add(index, i64(1))])
        left = b.atomic_rmw("sub", self._word(b, self.pending), i64(1), _SEQ)
        last = b.icmp_signed("==", left, i64(1))
        waits = b.icmp_signed("!=", self._load(b, self.caller_waits), i64(0))
        with b.if_then(b.and_(last, waits)):
            self._broadcast(b, self.done_cv)
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
        self._set_shares(b, i64(1), n)
        b.call(self.run_tasks, [task, ctx, i64(0)])
        b.ret_void()

        # Publish: the job, then each taking-part worker's word (seq_cst releases the
        # plain stores before it), then wake sleepers if there are any.
        b.position_at_end(threaded)
        b.store(task, self.task_fn)
        b.store(ctx, self.task_ctx)
        self._set_shares(b, b.add(workers, i64(1)), n)
        self._store(b, workers, self.pending)
        gen = b.add(b.load(self.generation, typ=I64), i64(1))
        b.store(gen, self.generation)
        with _counting(b, workers, "publish") as k:
            b.store_atomic(gen, self._worker_word(b, k), _SEQ, 8)
        with b.if_then(b.icmp_signed("!=", self._load(b, self.sleepers), i64(0))):
            self._broadcast(b, self.work_cv)
        b.call(self.run_tasks, [task, ctx, i64(0)])

        # Join: spin on `pending`, then sleep on done_cv (same handshake, reversed).
        head, sleep, end = (fn.append_basic_block(s) for s in ("join", "join.sleep", "joined"))
        b.branch(head)
        b.position_at_end(head)
        b.call(self.spin, [self._word(b, self.pending), i64(0), ir.Constant(ir.IntType(1), 1)])
        b.cbranch(b.icmp_signed("==", self._load(b, self.pending), i64(0)), end, sleep)
        b.position_at_end(sleep)
        b.call(self.p_lock, [self.mutex])
        self._store(b, i64(1), self.caller_waits)
        with b.if_then(b.icmp_signed("!=", self._load(b, self.pending), i64(0))):
            b.call(self.p_wait, [self.done_cv, self.mutex])
        self._store(b, i64(0), self.caller_waits)
        b.call(self.p_unlock, [self.mutex])
        b.branch(head)
        b.position_at_end(end)
        b.ret_void()
        return fn

    def _emit_set_threads(self, nprocessors_onln: int) -> ir.Function:
        """``int32 patcc_set_num_threads(int32 n)``: 0 means one per CPU the process
        may run on (its affinity mask: a container's or ``taskset``'s share, an
        Android app's cpuset), or per online CPU if the mask cannot be read."""
        fn = ir.Function(self.module, ir.FunctionType(I32, [I32]), "patcc_set_num_threads")
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        b.call(self.init_fn, [])
        n = b.sext(fn.args[0], I64)
        bad = b.or_(b.icmp_signed("<", n, i64(0)), b.icmp_signed(">", n, i64(MAX_THREADS)))
        with b.if_then(bad):
            b.ret(i32(ERR_THREADS))
        # Take the run lock: the thread count never changes under a running model.
        b.call(self.p_lock, [self.run_mutex])
        b.call(self.p_lock, [self.mutex])
        got = b.call(self.getaffinity, [i32(0), i64(CPU_MASK_WORDS * 8), self.cpus])
        known = b.icmp_signed("==", got, i32(0))
        b.store(b.zext(known, I64), self.cpus_known)
        ctpop = declare(self.module, "llvm.ctpop.i64", I64, [I64])
        allowed = i64(0)
        for w in range(CPU_MASK_WORDS):
            word = b.load(b.gep(self.cpus, [i64(0), i64(w)]), typ=I64)
            allowed = b.add(allowed, b.call(ctpop, [word]))
        online = b.call(self.sysconf, [i32(nprocessors_onln)])
        cores = b.select(b.and_(known, b.icmp_signed(">", allowed, i64(0))), allowed, online)
        cores = b.select(b.icmp_signed("<", cores, i64(1)), i64(1), cores)
        cores = b.select(b.icmp_signed(">", cores, i64(MAX_THREADS)), i64(MAX_THREADS), cores)
        n = b.select(b.icmp_signed("==", n, i64(0)), cores, n)
        b.store(n, self.requested)
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
        b.store(b.load_atomic(self._worker_word(b, i), _SEQ, 8, typ=I64),
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

    def begin_run(self, b: ir.IRBuilder) -> None:
        """At the start of a run: waiting threads may spin from now on, and sleeping
        workers are woken now, so that their wake-up overlaps the first layer rather
        than delaying the first parallel one."""
        self._store(b, i64(1), self.in_run)
        if self.pin is not None:  # published to the workers with the next job
            cpu = b.sext(b.call(self.getcpu, []), I64)
            with b.if_then(b.icmp_signed("!=", cpu, b.load(self.caller_cpu, typ=I64))):
                b.store(cpu, self.caller_cpu)
                b.store(b.add(b.load(self.placement, typ=I64), i64(1)), self.placement)
        with b.if_then(b.icmp_signed("!=", self._load(b, self.sleepers), i64(0))):
            self._broadcast(b, self.work_cv)

    def end_run(self, b: ir.IRBuilder) -> None:
        """At the end of a run: waiting threads stop spinning and sleep."""
        self._store(b, i64(0), self.in_run)

    def emit_get_threads(self) -> ir.Function:
        """``int32 patcc_get_num_threads(void)``."""
        fn = ir.Function(self.module, ir.FunctionType(I32, []), "patcc_get_num_threads")
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        b.ret(b.trunc(b.load(self.nthreads, typ=I64), I32))
        return fn
