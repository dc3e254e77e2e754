"""Assemble a whole model into one LLVM module with the patcc C ABI.

Exported functions (see ``patcc/backends/abi.py`` for the header):
``patcc_run``, ``patcc_workspace_size``, ``patcc_model_info``,
``patcc_set_num_threads``, ``patcc_get_num_threads``, ``patcc_abi_version``.

Tensors live in one of four places: the caller's input or output buffers, the
constant blob (graph constants), or the caller-provided workspace at an offset the
memory planner chose by liveness. A Reshape whose output is not a graph output
shares its input's memory and emits no code.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from llvmlite import ir

from patcc.backends.abi import ABI_VERSION, ERR_NULL, ERR_WORKSPACE, OK
from patcc.backends.llvm.col2im import lower_col2im
from patcc.backends.llvm.conv import lower_conv, lower_dense
from patcc.backends.llvm.elementwise import (
    lower_binary,
    lower_scale_shift,
    lower_slice,
    lower_transpose,
    lower_unary,
)
from patcc.backends.llvm.fused import inverted_residuals, lower_inverted_residual
from patcc.backends.llvm.irutil import I8, I32, I64, PTR, KernelBuilder, declare, i32, i64
from patcc.backends.llvm.lowering import (
    BLOB_ALIGN,
    BLOB_SYMBOL,
    LayerCode,
    LoweringContext,
    Schedule,
    load_operands,
)
from patcc.backends.llvm.movement import (
    lower_concat,
    lower_gather,
    lower_pad,
    lower_reshape_copy,
    lower_split,
)
from patcc.backends.llvm.pooling import (
    lower_global_pool,
    lower_pool,
    lower_reduce,
    lower_softmax,
)
from patcc.backends.llvm.resample import lower_resize
from patcc.backends.llvm.threads import ThreadPool
from patcc.backends.planning import (
    Buffer,
    WeightBlob,
    concat_placements,
    live_ranges,
    naive_peak,
    plan_memory,
    reshape_aliases,
)
from patcc.backends.target import Target
from patcc.ir import (
    Binary,
    Col2Im,
    Concat,
    Conv,
    Dense,
    Gather,
    GlobalPool,
    Graph,
    Pad,
    Pool,
    Reduce,
    Reshape,
    Resize,
    ScaleShift,
    Slice,
    Softmax,
    Split,
    Transpose,
    Unary,
)
from patcc.text import identifier, module_id
from patcc.version import __version__

WORKSPACE_ALIGN = 64

Lowering = Callable[..., LayerCode]
LOWERINGS: dict[type, Lowering] = {
    Conv: lower_conv, Dense: lower_dense, Binary: lower_binary, Unary: lower_unary,
    Col2Im: lower_col2im,
    ScaleShift: lower_scale_shift, Pool: lower_pool, GlobalPool: lower_global_pool,
    Reduce: lower_reduce, Softmax: lower_softmax, Concat: lower_concat, Split: lower_split,
    Pad: lower_pad, Transpose: lower_transpose, Slice: lower_slice,
    Reshape: lower_reshape_copy, Resize: lower_resize,
    Gather: lower_gather,
}


@dataclass(frozen=True)
class Location:
    """Where a tensor lives: ``kind`` is input, output, const or workspace."""

    kind: str
    index: int  # input/output position, or byte offset in the blob or workspace
    offset: int = 0  # bytes into an input or output (a Concat input written in place)


@dataclass
class ModulePlan:
    """Everything decided before emission: layer code, tensor locations, memory."""

    graph: Graph
    target: Target
    codes: list[LayerCode]
    locations: dict[str, Location]
    scratch: dict[str, int]  # layer name -> workspace byte offset of its scratch
    workspace: int
    workspace_naive: int
    blob: WeightBlob
    info: dict[str, object] = field(default_factory=dict)
    fuse_blocks: bool = False


def plan_module(graph: Graph, target: Target,
                schedules: Mapping[str, Schedule] | None = None,
                fuse_blocks: bool = False) -> ModulePlan:
    """Lower every layer (with its schedule from ``schedules`` where given) and lay
    out all tensors; nothing is emitted yet. With ``fuse_blocks``, inverted-residual
    blocks whose expanded tensor is large are one step (``patcc.backends.llvm.fused``)."""
    shapes = dict(graph.shapes)
    blob = WeightBlob(BLOB_ALIGN)
    placed = concat_placements(graph)
    ctx = LoweringContext(shapes=shapes, target=target, blob=blob, schedules=schedules or {},
                          in_place=frozenset(placed))
    alias = reshape_aliases(graph)
    codes: list[LayerCode] = []
    blocks = inverted_residuals(graph, frozenset(placed)) if fuse_blocks else {}
    inner = {conv.name for block in blocks.values() for conv in block.convs[:2]}
    for layer in graph.layers:
        if layer.name in inner:
            continue  # computed by its block, in the project conv's place
        if layer.name in blocks:
            codes.append(lower_inverted_residual(blocks[layer.name], ctx))
            continue
        if layer.outputs[0] in alias:
            continue  # a view of its input's buffer
        codes.append(LOWERINGS[type(layer)](layer, ctx))

    locations: dict[str, Location] = {}
    for i, name in enumerate(graph.inputs):
        locations[name] = Location("input", i)
    for j, name in enumerate(graph.outputs):
        locations[name] = Location("output", j)
    for name, value in graph.constants.items():
        locations[name] = Location("const", blob.add(value))

    def home(t: str) -> str:
        """The buffer a tensor lives in: its owner's for a view, or (in place) its
        Concat's."""
        t = alias.get(t, t)
        while t in placed:
            t = placed[t][0]
        return t

    ranges = live_ranges(((code.layer.inputs, code.layer.outputs) for code in codes), home)
    buffers = [Buffer(t, 4 * math.prod(shapes[t]), first, last)
               for t, (first, last) in ranges.items() if t not in locations]
    scratch_keys: dict[str, str] = {}  # buffer name -> layer; no tensor has that name
    for step, code in enumerate(codes):
        if code.scratch_bytes:
            key = f"scratch:{step}"
            while key in shapes:
                key = "_" + key
            scratch_keys[key] = code.layer.name
            buffers.append(Buffer(key, code.scratch_bytes, step, step))
    memory = plan_memory(buffers, WORKSPACE_ALIGN)
    for buf in buffers:
        if buf.name not in scratch_keys:
            locations[buf.name] = Location("workspace", memory.offsets[buf.name])

    def place(t: str) -> Location:
        if t not in locations:
            parent, offset = placed[t]
            at = place(parent)
            locations[t] = (Location(at.kind, at.index + offset) if at.kind == "workspace"
                            else Location(at.kind, at.index, at.offset + offset))
        return locations[t]

    for t in placed:
        place(t)
    for t, r in alias.items():
        locations[t] = locations[r]
    scratch = {layer: memory.offsets[key] for key, layer in scratch_keys.items()}
    plan = ModulePlan(graph, target, codes, locations, scratch, memory.peak,
                      naive_peak(buffers, WORKSPACE_ALIGN), blob, fuse_blocks=fuse_blocks)
    plan.info = model_info(plan)
    return plan


def model_info(plan: ModulePlan) -> dict[str, object]:
    """The JSON document ``patcc_model_info`` returns."""
    g = plan.graph
    return {
        "patcc_version": __version__,
        "abi_version": ABI_VERSION,
        "model": g.name,
        "target": {"tag": plan.target.tag, "triple": plan.target.triple,
                   "cpu": plan.target.cpu, "vector_bits": plan.target.vector_bits,
                   "isa": list(plan.target.isa)},
        "inputs": [{"name": n, "shape": list(t.shape), "dtype": t.dtype}
                   for n, t in g.inputs.items()],
        "outputs": [{"name": n, "shape": list(g.shapes[n]), "dtype": "float32"}
                    for n in g.outputs],
        "workspace_size": plan.workspace,
        "layers": len(plan.codes),
        "pattern_layers": pattern_layers(g),
    }


def pattern_layers(graph: Graph) -> list[dict[str, object]]:
    """Per pattern-style conv: kernels kept of all, non-zero weights, the library
    patterns it uses, and its compression (weights / non-zero weights)."""
    rows: list[dict[str, object]] = []
    for conv in graph.convs():
        style = conv.pattern
        if style is None:
            continue
        nonzero = style.nonzero_weights
        rows.append({"name": conv.name, "kernels_kept": style.kernels_kept,
                     "kernels_total": style.kernels_total, "nonzero_weights": nonzero,
                     "patterns": list(style.patterns_used),
                     "compression": round(conv.weight.size / max(1, nonzero), 3)})
    return rows


def emit_module(plan: ModulePlan, profile: bool = False) -> ir.Module:
    """The LLVM module for a planned model (functions, pool, ABI entry points).

    With ``profile``, ``patcc_run`` also accumulates each layer's wall time, read back
    through the extra export ``int32_t patcc_profile_ns(int64_t *ns, int32_t n)``.
    """
    target = plan.target
    module = ir.Module(name=module_id(plan.graph.name))  # the real name: in the info JSON
    module.triple = target.triple
    blob_type = ir.ArrayType(I8, max(plan.blob.size, 1))
    blob = ir.GlobalVariable(module, blob_type, BLOB_SYMBOL)
    blob.linkage = "external"
    blob.global_constant = True
    blob.visibility = "hidden"
    pool = ThreadPool(module, target.nprocessors_onln, target.triple.split("-")[0],
                      pin=target.pin_threads)
    pool.emit_get_threads()

    phase_fns: list[list[tuple[int, int]]] = []
    all_phases: list[ir.Function] = []
    for li, code in enumerate(plan.codes):
        fns = []
        for pi, phase in enumerate(code.phases):
            fn = ir.Function(module, pool.task_type, f"L{li}_{_ident(code.layer.name)}_{pi}"
                             f"_{phase.name}")
            fn.linkage = "internal"
            fn.attributes.add("nounwind")
            fn.attributes.add("noinline")  # see Phase: compile time linear in layers
            kb = KernelBuilder(ir.IRBuilder(fn.append_basic_block("entry")), target)
            ops = load_operands(kb, fn.args[0], len(code.layer.inputs),
                                len(code.layer.outputs), blob)
            phase.body(kb, ops, fn.args[1])
            kb.b.ret_void()
            for block in fn.blocks:  # the layer's loops stay findable after inlining
                block.name = f"L{li}.{block.name}"  # (patcc/backends/llvm/mca.py)
            fns.append((len(all_phases), phase.tasks))
            all_phases.append(fn)
        phase_fns.append(fns)
    pool.finish_dispatch(all_phases)

    timer = _Profiler(module, len(plan.codes)) if profile else None
    _emit_run(module, plan, pool, blob, phase_fns, timer)
    _emit_constant_fn(module, "patcc_workspace_size", I64, i64(plan.workspace))
    _emit_constant_fn(module, "patcc_abi_version", I32, i32(ABI_VERSION))
    _emit_info(module, json.dumps(plan.info, sort_keys=True))
    return module


def _ident(name: str) -> str:
    """A layer's name as a part of a function name (ASCII ``[A-Za-z0-9_]``, bounded)."""
    return identifier(name, 40)


def _emit_constant_fn(module: ir.Module, name: str, typ: ir.Type, value: ir.Constant) -> None:
    fn = ir.Function(module, ir.FunctionType(typ, []), name)
    ir.IRBuilder(fn.append_basic_block("entry")).ret(value)


def _emit_info(module: ir.Module, text: str) -> None:
    data = bytearray(text.encode()) + b"\0"
    g = ir.GlobalVariable(module, ir.ArrayType(I8, len(data)), "model_info_json")
    g.linkage = "internal"
    g.global_constant = True
    g.initializer = ir.Constant(ir.ArrayType(I8, len(data)), data)
    fn = ir.Function(module, ir.FunctionType(PTR, []), "patcc_model_info")
    ir.IRBuilder(fn.append_basic_block("entry")).ret(g)


class _Profiler:
    """Per-layer wall-clock accumulators (CLOCK_MONOTONIC) for profiling builds."""

    def __init__(self, module: ir.Module, layers: int) -> None:
        self.totals = ir.GlobalVariable(module, ir.ArrayType(I64, max(layers, 1)),
                                        "profile_ns")
        self.totals.linkage = "internal"
        self.totals.initializer = ir.Constant(self.totals.value_type, None)
        self.clock = ir.Function(module, ir.FunctionType(I32, [I32, PTR]), "clock_gettime")
        fn = ir.Function(module, ir.FunctionType(I32, [PTR, I32]), "patcc_profile_ns")
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        out, n = fn.args
        count = b.select(b.icmp_signed("<", n, i32(layers)), n, i32(layers))
        memcpy = declare(module, "llvm.memcpy.p0.p0.i64", ir.VoidType(),
                         [PTR, PTR, I64, ir.IntType(1)])
        b.call(memcpy, [out, self.totals, b.mul(b.sext(count, I64), i64(8)),
                        ir.Constant(ir.IntType(1), 0)])
        b.ret(count)

    def now(self, b: ir.IRBuilder) -> ir.Value:
        if not hasattr(self, "ts"):
            with b.goto_entry_block():
                self.ts = b.alloca(I64, size=i64(2))
        ts = self.ts
        b.call(self.clock, [i32(1), ts])  # CLOCK_MONOTONIC; struct timespec {i64, i64}
        sec = b.load(ts, typ=I64)
        nsec = b.load(b.gep(ts, [i64(1)], source_etype=I64), typ=I64)
        return b.add(b.mul(sec, i64(1_000_000_000)), nsec)

    def add(self, b: ir.IRBuilder, layer: int, start: ir.Value) -> None:
        slot = b.gep(self.totals, [i64(0), i64(layer)])
        b.store(b.add(b.load(slot, typ=I64), b.sub(self.now(b), start)), slot)


def _emit_run(module: ir.Module, plan: ModulePlan, pool: ThreadPool, blob: ir.Value,
              phase_fns: list[list[tuple[int, int]]], timer: _Profiler | None) -> None:
    """``int32 patcc_run(const float *const *inputs, float *const *outputs,
    void *workspace, size_t workspace_size)``."""
    fn = ir.Function(module, ir.FunctionType(I32, [PTR, PTR, PTR, I64]), "patcc_run")
    inputs, outputs, ws, ws_size = fn.args
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    null = ir.Constant(PTR, None)
    with b.if_then(b.or_(b.icmp_unsigned("==", inputs, null),
                         b.icmp_unsigned("==", outputs, null))):
        b.ret(i32(ERR_NULL))
    if plan.workspace:
        misaligned = b.icmp_unsigned("!=", b.and_(b.ptrtoint(ws, I64),
                                                  i64(WORKSPACE_ALIGN - 1)), i64(0))
        bad = b.or_(b.or_(b.icmp_unsigned("==", ws, null),
                          b.icmp_unsigned("<", ws_size, i64(plan.workspace))), misaligned)
        with b.if_then(bad):
            b.ret(i32(ERR_WORKSPACE))
    b.call(pool.init_fn, [])
    b.call(pool.p_lock, [pool.run_mutex])
    pool.begin_run(b)
    width = max((len(c.layer.inputs) + len(c.layer.outputs) + 1 for c in plan.codes),
                default=1)
    table_ptr = b.alloca(PTR, size=i64(width), name="operands")

    def pointer(tensor: str) -> ir.Value:
        loc = plan.locations[tensor]
        if loc.kind in ("input", "output"):
            table = inputs if loc.kind == "input" else outputs
            ptr = b.load(b.gep(table, [i64(loc.index)], source_etype=PTR), typ=PTR)
            return b.gep(ptr, [i64(loc.offset)], source_etype=I8) if loc.offset else ptr
        base = blob if loc.kind == "const" else ws
        return b.gep(base, [i64(loc.index)], source_etype=I8)

    for li, (code, fns) in enumerate(zip(plan.codes, phase_fns, strict=True)):
        layer = code.layer
        start = timer.now(b) if timer else None
        ptrs = [pointer(t) for t in (*layer.inputs, *layer.outputs)]
        scratch = plan.scratch.get(layer.name)
        ptrs.append(b.gep(ws, [i64(scratch)], source_etype=I8) if scratch is not None
                    else null)
        for k, p in enumerate(ptrs):
            b.store(p, b.gep(table_ptr, [i64(k)], source_etype=PTR))
        for phase_id, tasks in fns:
            b.call(pool.parallel_for, [i64(phase_id), table_ptr, i64(tasks)])
        if timer and start is not None:
            timer.add(b, li, start)
    pool.end_run(b)
    b.call(pool.p_unlock, [pool.run_mutex])
    b.ret(i32(OK))
