"""``patcc compile --report``: what the compiler chose for each layer, and what it costs.

Per layer: the kernel, its register block and task count, weight storage (dense and,
for the pattern, depthwise and sparse kernels, compressed), loads per FMA of the inner
loop as generated and as it would be without load-redundancy elimination ("w/o
LRE"), how many schedules the layer could use ("cands") and, when tuned, the chosen
one's time alone ("tuned ms") and the tuner's verdict ("tuning": ``model`` when the
cost model's choice was fastest, ``tuned`` when another was faster beyond the noise,
``noise`` when another had a lower median within the noise and the cost model's
choice was kept), and -- when
the target is this machine -- the measured time and non-zero GFLOP/s from a
profiling build run on random inputs.

For any target, the hot inner loop of each layer as compiled (read from the verbose
assembly, ``patcc/backends/llvm/mca.py``): its FMA instruction ("fmla .4s" is NEON),
FMAs per iteration and values loaded per FMA -- the load-redundancy elimination as
it reached machine code -- and the registers it spills to the stack and reloads per
iteration (0 and 0 when its values fit the target's registers). Where llvm-mca is
installed: the loop's simulated cycles per iteration on the target CPU, FMAs per
cycle, the share of the model's FMA peak, and "est Mcyc", the layer's non-zero MACs
at that rate on one core (a lower bound: edges, padding lanes and cache misses are
not in it).
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np

from patcc.backends.llvm import mca, toolchain
from patcc.backends.llvm.lowering import Schedule
from patcc.backends.target import scheduling_model_cpu
from patcc.errors import PatccError
from patcc.ir.layers import Conv, Dense


def layer_rows(compiled: Any, runs: int = 10, threads: int = 0) -> list[dict[str, Any]]:
    """One row per lowered layer of a ``CompiledModel``; timed when it can run here, at
    ``threads`` threads (0: one per core)."""
    from patcc.compiler import build

    shapes = compiled.graph.shapes
    rows = []
    for code in compiled.plan.codes:
        layer = code.layer
        row: dict[str, Any] = {"name": layer.name, "op": layer.op, "kernel": code.kernel,
                               "block": code.notes.get("block", ""),
                               "tasks": code.notes.get("tasks", sum(p.tasks for p in
                                                                    code.phases))}
        parts = getattr(layer, "convs", (layer,))  # a fused block: its convs
        if all(isinstance(part, (Conv, Dense)) for part in parts):
            row["nonzero_macs"] = sum(_nonzero_macs(part, shapes) for part in parts)
            row["weight_bytes"] = sum(int(part.weight.nbytes) for part in parts)
        if "compressed_bytes" in code.notes:
            row["compressed_bytes"] = code.notes["compressed_bytes"]
        for key in ("loads_per_fma", "loads_per_fma_without_lre"):
            if key in code.notes:
                row[key] = round(float(code.notes[key]), 3)
        if "candidates" in code.notes:
            row["candidates"] = code.notes["candidates"]
        if "tuned_ms" in code.notes:
            row["tuned_ms"] = round(float(code.notes["tuned_ms"]), 4)
            row["tuning"] = code.notes["tuning"]
        rows.append(row)
    if compiled.target.runs_here:
        schedules = {code.layer.name: Schedule.parse(str(code.notes["schedule"]))
                     for code in compiled.plan.codes if "schedule" in code.notes}
        for code in compiled.plan.codes:  # a fused block's convs
            schedules.update({name: Schedule.parse(str(text)) for name, text
                              in dict(code.notes.get("schedules", {})).items()})
        profiled = build(compiled.graph, compiled.target, schedules, profile=True,
                         fuse_blocks=compiled.plan.fuse_blocks)
        model = profiled.load(num_threads=threads)
        rng = np.random.default_rng(0)
        inputs = [rng.uniform(-1, 1, t.shape).astype(np.float32) for t in model.inputs.values()]
        written = {name: np.zeros(t.shape, np.float32) for name, t in model.outputs.items()}
        model.run(inputs, written)  # outputs in place: no page faults in the last layer
        # The median of each layer's per-run times: a mean lets the odd descheduled
        # run (a shared machine) inflate a short layer several times over.
        laps = [model.layer_times()]
        for _ in range(runs):
            model.run(inputs, written)
            laps.append(model.layer_times())
        seconds = np.median(np.diff(np.array(laps), axis=0), axis=0)
        for row, s in zip(rows, seconds, strict=True):
            row["ms"] = round(1e3 * float(s), 4)
            if row.get("nonzero_macs") and s > 0:
                row["nonzero_gflops"] = float(f"{2 * row['nonzero_macs'] / s / 1e9:.3g}")
    return rows


def _nonzero_macs(layer: Conv | Dense, shapes: Any) -> int:
    out = shapes[layer.outputs[0]]
    positions = math.prod(out[2:]) if isinstance(layer, Conv) else math.prod(out[:-1])
    return int(np.count_nonzero(layer.weight)) * positions


def add_loop_figures(compiled: Any, rows: list[dict[str, Any]]) -> list[str]:
    """Add the hot inner loop's figures to the rows of ``layer_rows(compiled)``;
    returns footnotes (the static model used, or why there is none)."""
    target = compiled.target
    arch = target.triple.split("-")[0]
    asm = toolchain.emit_assembly(compiled.llvm_module, target)
    hot = mca.hot_loops(mca.parse_inner_loops(asm, arch))
    for index, loops in hot.items():
        rows[index]["fma_form"] = loops[0].fma_form
        rows[index]["loop_fmas"] = loops[0].fmas
        rows[index]["asm_loads_per_fma"] = round(
            sum(lp.loaded / lp.fmas for lp in loops) / len(loops), 3)
        rows[index]["loop_spills"] = max(lp.spills for lp in loops)
        rows[index]["loop_reloads"] = max(lp.reloads for lp in loops)
    bodies = [lp.instructions for loops in hot.values() for lp in loops]
    try:
        tool = mca.find_llvm_mca()
        if tool is None:
            return ["no llvm-mca on PATH, so no cycle estimates (apt-get install llvm-19)"]
        cycles = iter(tool.cycles(bodies, target) if bodies else [])
        peak = tool.fma_peak(target)
    except PatccError as e:
        return [f"no cycle estimates: {e}"]
    lanes = target.vector_width
    total = 0.0
    for index, loops in hot.items():
        per_iteration = sum(next(cycles) for _ in loops) / len(loops)
        row = rows[index]
        fma_rate = row["loop_fmas"] / per_iteration
        row["loop_cycles"] = round(per_iteration, 1)
        row["fma_per_cycle"] = round(fma_rate, 2)
        row["fma_peak_pct"] = round(100 * fma_rate / peak, 1)
        if row.get("nonzero_macs"):
            row["est_mcycles"] = float(f"{row['nonzero_macs'] / lanes / fma_rate / 1e6:.4g}")
            total += row["est_mcycles"]
    model = scheduling_model_cpu(target.cpu)
    modelled = model if model == target.cpu else f"{model} for {target.cpu}"
    return [f"cycle estimates: {tool}, scheduling model {modelled}, loads hitting L1; "
            f"FMA peak {peak:.2f}/cycle ({2 * lanes * peak:.0f} FLOP/cycle); "
            f"est Mcyc total {total:.2f} (one core)"]


def report(compiled: Any) -> str:
    """What ``patcc compile --report`` prints: the layers, the loop figures' notes, and
    (when the model ran here) the time by kernel against the measured FMA peak."""
    threads = os.cpu_count() or 1
    rows = layer_rows(compiled, threads=threads)
    notes = add_loop_figures(compiled, rows)
    parts = [format_rows(rows, threads), *notes]
    if any("ms" in r for r in rows):
        from patcc.backends.llvm.peak import fma_peak

        peak = fma_peak(compiled.target, threads)
        parts += ["", format_kernels(kernel_rows(rows), peak, threads)]
    return "\n".join(parts)


def kernel_rows(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per kernel (pattern, depthwise, sparse, gemm, ...), the layers that run it, their
    summed profiled ms and non-zero MACs, from ``layer_rows``' timed rows."""
    kernels: dict[str, dict[str, Any]] = {}
    for r in rows:
        k = kernels.setdefault(r["kernel"], {"layers": 0, "ms": 0.0, "nonzero_macs": 0})
        k["layers"] += 1
        k["ms"] += r.get("ms", 0.0)
        k["nonzero_macs"] += r.get("nonzero_macs", 0)
    return kernels


def format_kernels(kernels: dict[str, dict[str, Any]], fma_peak: float, threads: int) -> str:
    """The time-by-kernel table: each kernel's share of the model's time, its non-zero
    GFLOP/s and that as a share of ``fma_peak`` (GFLOP/s of the target's FMAs measured
    here at ``threads`` threads), the slowest kernel first."""
    total = sum(k["ms"] for k in kernels.values()) or 1.0
    lines = [f"{'kernel':<18}{'layers':>7}{'ms':>9}{'share':>8}{'nz GF/s':>9}{'% FMA pk':>10}"]
    for name, k in sorted(kernels.items(), key=lambda kv: -kv[1]["ms"]):
        line = f"{name:<18}{k['layers']:>7}{k['ms']:>9.3f}{100 * k['ms'] / total:>7.1f}%"
        if k["nonzero_macs"] and k["ms"]:
            rate = 2 * k["nonzero_macs"] / (k["ms"] / 1e3) / 1e9
            line += f"{rate:>9.1f}{100 * rate / fma_peak:>9.1f}%"
        lines.append(line)
    lines.append(f"FMA peak measured here: {fma_peak:.0f} GFLOP/s at {threads} threads "
                 "(independent FMAs of the target's vectors)")
    return "\n".join(lines)


_COLUMNS = (
    ("layer", "name"), ("kernel", "kernel"), ("block", "block"), ("tasks", "tasks"),
    ("weights B", "weight_bytes"), ("compressed B", "compressed_bytes"),
    ("loads/FMA", "loads_per_fma"), ("w/o LRE", "loads_per_fma_without_lre"),
    ("cands", "candidates"), ("tuned ms", "tuned_ms"), ("tuning", "tuning"), ("ms", "ms"),
    ("nz GF/s", "nonzero_gflops"), ("FMA op", "fma_form"), ("FMA/it", "loop_fmas"),
    ("ld/FMA asm", "asm_loads_per_fma"), ("spills", "loop_spills"),
    ("reloads", "loop_reloads"), ("cyc/it", "loop_cycles"),
    ("FMA/cyc", "fma_per_cycle"), ("% FMA pk", "fma_peak_pct"), ("est Mcyc", "est_mcycles"),
)


def format_rows(rows: list[dict[str, Any]], threads: int = 0) -> str:
    """The table ``--report`` prints; columns no row has are left out."""
    columns = [(h, k) for h, k in _COLUMNS if k == "name" or any(k in r for r in rows)]
    head = tuple(h for h, _ in columns)
    table = [head] + [tuple(str(r.get(k, "")) for _, k in columns) for r in rows]
    widths = [min(36, max(len(t[i]) for t in table)) for i in range(len(head))]
    lines = ["  ".join(c[:36].ljust(w) for c, w in zip(t, widths, strict=True)).rstrip()
             for t in table]
    if any("ms" in r for r in rows):
        lines.append(f"total {sum(r.get('ms', 0) for r in rows):.2f} ms per run "
                     f"(profiling build, {threads or 'one per core'} threads)")
    return "\n".join(lines)
