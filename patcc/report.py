"""``patcc compile --report``: what the compiler chose for each layer, and what it costs.

Per layer: the kernel, its register block and task count, weight storage (dense and,
for sparse kernels, compressed), loads per FMA of the inner loop as generated and as
it would be without load-redundancy elimination ("w/o LRE"), how many schedules the
layer could use ("cands") and, when tuned, the chosen one's time alone ("tuned ms"),
and -- when the target is this machine -- the measured time and non-zero GFLOP/s from
a profiling build run on random inputs.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from patcc.backends.llvm.lowering import Schedule
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
        if isinstance(layer, (Conv, Dense)):
            out = shapes[layer.outputs[0]]
            positions = math.prod(out[2:]) if isinstance(layer, Conv) else math.prod(out[:-1])
            row["nonzero_macs"] = int(np.count_nonzero(layer.weight)) * positions
            row["weight_bytes"] = int(layer.weight.nbytes)
        if "compressed_bytes" in code.notes:
            row["compressed_bytes"] = code.notes["compressed_bytes"]
        for key in ("loads_per_fma", "loads_per_fma_without_lre"):
            if key in code.notes:
                row[key] = round(float(code.notes[key]), 3)
        if "candidates" in code.notes:
            row["candidates"] = code.notes["candidates"]
        if "tuned_ms" in code.notes:
            row["tuned_ms"] = round(float(code.notes["tuned_ms"]), 4)
        rows.append(row)
    if compiled.target.is_host:
        schedules = {code.layer.name: Schedule.parse(str(code.notes["schedule"]))
                     for code in compiled.plan.codes if "schedule" in code.notes}
        profiled = build(compiled.graph, compiled.target, schedules, profile=True)
        model = profiled.load(num_threads=threads)
        rng = np.random.default_rng(0)
        inputs = [rng.uniform(-1, 1, t.shape).astype(np.float32) for t in model.inputs.values()]
        model.run(inputs)
        before = model.layer_times()
        for _ in range(runs):
            model.run(inputs)
        seconds = (model.layer_times() - before) / runs
        for row, s in zip(rows, seconds, strict=True):
            row["ms"] = round(1e3 * float(s), 4)
            if row.get("nonzero_macs") and s > 0:
                row["nonzero_gflops"] = float(f"{2 * row['nonzero_macs'] / s / 1e9:.3g}")
    return rows


def format_rows(rows: list[dict[str, Any]]) -> str:
    """The table ``--report`` prints."""
    head = ("layer", "kernel", "block", "tasks", "weights B", "compressed B", "loads/FMA",
            "w/o LRE", "cands", "tuned ms", "ms", "nz GF/s")
    keys = ("name", "kernel", "block", "tasks", "weight_bytes", "compressed_bytes",
            "loads_per_fma", "loads_per_fma_without_lre", "candidates", "tuned_ms", "ms",
            "nonzero_gflops")
    table = [head] + [tuple(str(r.get(k, "")) for k in keys) for r in rows]
    widths = [min(36, max(len(t[i]) for t in table)) for i in range(len(head))]
    lines = ["  ".join(c[:36].ljust(w) for c, w in zip(t, widths, strict=True)).rstrip()
             for t in table]
    if any("ms" in r for r in rows):
        lines.append(f"total {sum(r.get('ms', 0) for r in rows):.2f} ms per run "
                     "(profiling build, threads: one per core)")
    return "\n".join(lines)
