"""``make demo``: a 6x pattern-pruned ResNet-18, from torch to a checked import.

Builds the example model, exports it to ONNX under ``build/demo/``, prints what
``patcc inspect`` sees, runs the reference interpreter and onnxruntime on the same
input and compares them. Exit status 1 when they disagree beyond 1e-4 relative.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np


def _median_ms(fn: Callable[[], object], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def main(out_dir: str = "build/demo") -> int:
    """Run the demo; returns the process exit status."""
    import onnxruntime as ort

    from patcc.frontends.onnx import import_onnx
    from patcc.models import INPUT_SHAPES, export_onnx, pruned_model
    from patcc.runtime import run
    from patcc.stats import format_stats, model_stats

    directory = Path(out_dir)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "resnet18-6x.onnx"
    print("building ResNet-18, pattern-pruned 6x (8 patterns, 37.5% of 3x3 kernels kept)"
          f" -> {path}")
    export_onnx(pruned_model("resnet18", "6x"), path, INPUT_SHAPES["resnet18"])

    graph = import_onnx(path)
    print()
    print(format_stats(model_stats(graph)))
    print()

    x = np.random.default_rng(0).uniform(-1, 1, INPUT_SHAPES["resnet18"]).astype(np.float32)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: x}
    (ref,) = session.run(None, feed)
    (ours,) = run(graph, [x]).values()
    error = float(np.abs(ours - ref).max() / np.abs(ref).max())
    ok = error <= 1e-4
    print(f"reference interpreter vs onnxruntime: max error {error:.2e} of the output's "
          f"largest magnitude ({'OK' if ok else 'MISMATCH'}, limit 1e-4)")
    print(f"onnxruntime, 2 threads:     {_median_ms(lambda: session.run(None, feed), 20):7.1f} ms")
    print(f"reference interpreter:      {_median_ms(lambda: run(graph, [x]), 3):7.1f} ms "
          "(numpy, float64 accumulation: the oracle, not the product)")
    print("compiling to native code arrives with the LLVM backend (patcc compile).")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
