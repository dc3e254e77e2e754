"""Benchmark the peers on the benchmark models; the baseline patcc is measured against.

For each model of ``patcc.models.BENCHMARK_VARIANTS``: median latency of onnxruntime
and torch (2 threads, batch 1), runs taken alternately so that machine noise hits
both alike; non-zero GFLOP/s (2 x non-zero MACs / time) and that as a fraction of
the sgemm peak measured in the same run with numpy. Prints a table and writes JSON
to ``benchmarks/results/peers.json``.

Usage: ``python benchmarks/run.py [--runs 30] [--threads 2] [--models resnet18:6x,...]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path


def sgemm_peak_gflops(threads: int, n: int = 1024, runs: int = 20) -> float:
    """Best-of-runs fp32 matrix product rate of numpy's BLAS, in GFLOP/s."""
    import numpy as np

    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    b = np.random.default_rng(1).standard_normal((n, n), dtype=np.float32)
    a @ b  # warm up
    best = min(_time(lambda: a @ b) for _ in range(runs))
    return 2 * n**3 / best / 1e9


def _time(fn) -> float:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench_model(name: str, variant: str, runs: int, threads: int, workdir: Path) -> dict:
    import numpy as np
    import onnxruntime as ort
    import torch

    from patcc.frontends.onnx import import_onnx
    from patcc.models import INPUT_SHAPES, export_onnx, pruned_model
    from patcc.stats import model_stats

    module = pruned_model(name, variant)
    path = workdir / f"{name}-{variant}.onnx"
    export_onnx(module, path, INPUT_SHAPES[name])
    totals = model_stats(import_onnx(path))["totals"]
    x = np.random.default_rng(0).uniform(-1, 1, INPUT_SHAPES[name]).astype(np.float32)

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: x}
    xt = torch.from_numpy(x)

    def run_torch() -> None:
        with torch.inference_mode():
            module(xt)

    peers = {"onnxruntime": lambda: session.run(None, feed), "torch": run_torch}
    for fn in peers.values():
        for _ in range(3):
            fn()
    times: dict[str, list[float]] = {p: [] for p in peers}
    for _ in range(runs):  # alternate, so that noise hits every peer alike
        for peer, fn in peers.items():
            times[peer].append(_time(fn))
    result = {
        "model": name, "variant": variant,
        "dense_gmacs": totals["dense_macs"] / 1e9,
        "nonzero_gmacs": totals["nonzero_macs"] / 1e9,
        "conv_compression": totals["conv_compression"],
        "latency_ms": {p: 1e3 * statistics.median(t) for p, t in times.items()},
    }
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--models", default="", help="e.g. resnet18:6x,vgg16:8x")
    parser.add_argument("--out", default="benchmarks/results/peers.json")
    args = parser.parse_args(argv)

    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch

    from patcc.models import BENCHMARK_VARIANTS

    torch.set_num_threads(args.threads)
    models = ([tuple(m.split(":", 1)) for m in args.models.split(",")] if args.models
              else list(BENCHMARK_VARIANTS))
    peak = sgemm_peak_gflops(args.threads)
    print(f"sgemm peak (numpy, {args.threads} threads): {peak:.1f} GFLOP/s")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, variant in models:
            r = bench_model(name, variant, args.runs, args.threads, Path(tmp))
            rows.append(r)

    head = f"{'model':<28}{'GMAC dense':>11}{'GMAC nz':>9}"
    head += "".join(f"{p + ' ms':>16}{'nz GF/s':>9}{'% peak':>8}" for p in ("onnxruntime", "torch"))
    print(head)
    for r in rows:
        label = f"{r['model']} {r['variant']}"
        line = f"{label:<28}{r['dense_gmacs']:>11.2f}{r['nonzero_gmacs']:>9.2f}"
        for peer in ("onnxruntime", "torch"):
            ms = r["latency_ms"][peer]
            gflops = 2 * r["nonzero_gmacs"] / (ms / 1e3)
            r.setdefault("nonzero_gflops", {})[peer] = gflops
            line += f"{ms:>16.2f}{gflops:>9.1f}{100 * gflops / peak:>7.1f}%"
        print(line)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                    "sgemm_peak_gflops": peak},
        "threads": args.threads, "runs": args.runs, "results": rows,
    }, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
