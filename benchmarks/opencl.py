"""Benchmark OpenCL packages on the selected device: per-layer kernel times.

For each model (``--models``, default ResNet-18 dense and 6x, MobileNetV2 dense and
pattern-pruned, VGG-16 dense and 8x): export to ONNX, compile for ``--target``
(default ``opencl-adreno``), load on the device ``PATCC_OPENCL_DEVICE`` selects (the
first one otherwise), check the output against onnxruntime once
(``max|ocl - ort| / max|ort|`` <= 1e-4 for fp32; a failing row is marked ``!``), then
``--runs`` runs after a warm-up with OpenCL profiling events on. Reported:

- the model's median total kernel time (sum of its kernels' event times per run) and
  the wall time of a run (enqueue to read-back);
- per kernel kind (pattern, compressed depthwise, dense conv, FC, other) the summed
  median time, its share, and non-zero GFLOP/s of the convolutions;
- the pruned variant's speed-up over its dense model on the same device, from the
  kernel times.

Usage: ``python benchmarks/opencl.py [--runs 20] [--target opencl-adreno]
[--precision fp32] [--models resnet18:dense,resnet18:6x]``; prints Markdown tables and
writes ``opencl.json`` to ``--out-dir`` (default ``benchmarks/results``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

import patcc
from patcc.ir import Conv, Dense
from patcc.models import INPUT_SHAPES, export_onnx, pruned_model
from patcc.runtime.opencl import load, select_device

DEFAULT_MODELS = ("resnet18:dense", "resnet18:6x", "mobilenet_v2:dense",
                  "mobilenet_v2:dw-patterns+pw50", "vgg16:dense", "vgg16:8x")


def _macs(graph: Any) -> dict[str, int]:
    """Non-zero MACs of each conv and dense layer."""
    shapes = graph.shapes
    macs = {}
    for layer in graph.layers:
        if isinstance(layer, Conv):
            _, _, ho, wo = shapes[layer.outputs[0]]
            n = shapes[layer.outputs[0]][0]
            macs[layer.name] = n * ho * wo * int(np.count_nonzero(layer.weight))
        elif isinstance(layer, Dense):
            rows = int(np.prod(shapes[layer.inputs[0]][:-1]))
            macs[layer.name] = rows * int(np.count_nonzero(layer.weight))
    return macs


def bench_model(name: str, variant: str, args: argparse.Namespace, tmp: Path
                ) -> dict[str, Any]:
    import onnxruntime as ort

    path = tmp / f"{name}-{variant}.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_onnx(pruned_model(name, variant), path, INPUT_SHAPES[name])
    x = np.random.default_rng(0).uniform(-1, 1, INPUT_SHAPES[name]).astype(np.float32)
    start = time.perf_counter()
    compiled = patcc.compile(path, target=args.target, precision=args.precision)
    package = tmp / f"{name}-{variant}.ocl"
    compiled.save(package)
    model = load(package, profile=True)
    load_s = time.perf_counter() - start
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    want = session.run(None, {session.get_inputs()[0].name: x})[0]
    got = next(iter(model.run([x]).values()))
    error = float(np.abs(got - want).max() / np.abs(want).max())
    tolerance = 1e-4 if args.precision == "fp32" else 2e-2
    kinds = {info["layer"]: info["kernel"] for info in compiled.program.layers}
    per_layer: dict[str, list[float]] = {}
    totals, walls = [], []
    for _ in range(args.runs):
        t = time.perf_counter()
        model.run([x])
        walls.append((time.perf_counter() - t) * 1e3)
        times = model.layer_times()
        totals.append(sum(times.values()))
        for layer, ms in times.items():
            per_layer.setdefault(layer, []).append(ms)
    medians = {layer: statistics.median(v) for layer, v in per_layer.items()}
    macs = _macs(compiled.graph)
    by_kind: dict[str, dict[str, float]] = {}
    for layer, ms in medians.items():
        kind = kinds.get(layer, "other")
        entry = by_kind.setdefault(kind, {"ms": 0.0, "macs": 0.0})
        entry["ms"] += ms
        entry["macs"] += macs.get(layer, 0)
    total = statistics.median(totals)
    return {
        "model": name, "variant": variant, "ok": error <= tolerance, "error": error,
        "kernel_ms": round(total, 3), "wall_ms": round(statistics.median(walls), 3),
        "kernels": len(compiled.program.launches), "compile_load_s": round(load_s, 2),
        "nonzero_gmacs": round(sum(macs.values()) / 1e9, 4),
        "by_kind": {k: {"ms": round(v["ms"], 3), "share": round(v["ms"] / total, 3),
                        "gflops": round(2 * v["macs"] / (v["ms"] * 1e6), 2) if v["macs"]
                        else None}
                    for k, v in sorted(by_kind.items(), key=lambda kv: -kv[1]["ms"])},
        "layers_ms": {k: round(v, 4) for k, v in medians.items()},
    }


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| model | variant | kernel ms | wall ms | speed-up vs dense | nz GMAC | "
             "kernels | ok |", "|---|---|---|---|---|---|---|---|"]
    dense = {r["model"]: r["kernel_ms"] for r in rows if r["variant"] == "dense"}
    for r in rows:
        speedup = (f"{dense[r['model']] / r['kernel_ms']:.2f}x"
                   if r["variant"] != "dense" and r["model"] in dense else "")
        lines.append(f"| {r['model']} | {r['variant']} | {r['kernel_ms']} | {r['wall_ms']} | "
                     f"{speedup} | {r['nonzero_gmacs']} | {r['kernels']} | "
                     f"{'yes' if r['ok'] else '!'} |")
    lines += ["", "| model | variant | kernel kind | ms | share | GFLOP/s (non-zero) |",
              "|---|---|---|---|---|---|"]
    for r in rows:
        for kind, v in r["by_kind"].items():
            lines.append(f"| {r['model']} | {r['variant']} | {kind} | {v['ms']} | "
                         f"{v['share']:.1%} | {v['gflops'] if v['gflops'] else ''} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--target", default="opencl-adreno")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS))
    parser.add_argument("--out-dir", default="benchmarks/results")
    args = parser.parse_args()
    device = select_device()
    print(f"device: {device.platform.name.strip()} {device.name.strip()}", file=sys.stderr)
    rows = []
    with tempfile.TemporaryDirectory(prefix="patcc-ocl-bench-") as tmp:
        for spec in args.models.split(","):
            name, _, variant = spec.partition(":")
            rows.append(bench_model(name, variant or "dense", args, Path(tmp)))
            r = rows[-1]
            print(f"  {name} {variant}: {r['kernel_ms']} ms kernels, {r['wall_ms']} ms wall, "
                  f"error {r['error']:.1e}", file=sys.stderr)
    print(markdown(rows))
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    result = {"device": f"{device.platform.name.strip()} {device.name.strip()}",
              "settings": vars(args), "rows": rows}
    (out / "opencl.json").write_text(json.dumps(result, indent=1))
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
