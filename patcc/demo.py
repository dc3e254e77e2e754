"""``make demo``: a 6x pattern-pruned ResNet-18, from torch to a compiled, checked .so.

Builds the example model, exports it to ONNX under ``build/demo/``, prints what
``patcc inspect`` sees, compiles it to ``build/demo/resnet18-6x.so``, runs it, and
checks it against onnxruntime and the reference interpreter; prints both latencies.
Exit status 1 when an output disagrees beyond 1e-4 relative.
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

    import patcc

    so_path = directory / "resnet18-6x.so"
    start = time.perf_counter()
    compiled = patcc.compile(path)
    compiled.save(so_path)
    print(f"compiled {so_path} in {time.perf_counter() - start:.1f} s "
          f"(workspace {compiled.workspace_size / 2**20:.1f} MiB)")
    model = patcc.load(so_path, num_threads=2)

    x = np.random.default_rng(0).uniform(-1, 1, INPUT_SHAPES["resnet18"]).astype(np.float32)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    options.inter_op_num_threads = 1
    # onnxruntime's threads otherwise spin after each run and take the cores from the
    # patcc run that follows (as in benchmarks/run.py): patcc measured 2x slower.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: x}
    (ref,) = session.run(None, feed)
    ours = model(x)
    (oracle,) = run(graph, [x]).values()
    scale = float(np.abs(ref).max())
    errors = {"patcc vs onnxruntime": float(np.abs(ours - ref).max()) / scale,
              "patcc vs reference interpreter": float(np.abs(ours - oracle).max()) / scale}
    ok = all(e <= 1e-4 for e in errors.values())
    for what, error in errors.items():
        print(f"{what}: max error {error:.2e} of the output's largest magnitude "
              f"({'OK' if error <= 1e-4 else 'MISMATCH'}, limit 1e-4)")
    runs = 30
    times: dict[str, list[float]] = {"patcc": [], "onnxruntime": []}
    for _ in range(3):
        model(x)
        session.run(None, feed)
    for _ in range(runs):  # alternate, so that noise hits both alike
        times["patcc"].append(_median_ms(lambda: model(x), 1))
        times["onnxruntime"].append(_median_ms(lambda: session.run(None, feed), 1))
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"latency, 2 threads, median of {runs}: patcc {med['patcc']:.1f} ms, "
          f"onnxruntime {med['onnxruntime']:.1f} ms "
          f"(onnxruntime/patcc = {med['onnxruntime'] / med['patcc']:.2f})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
