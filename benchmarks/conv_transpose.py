"""ConvTranspose layers, patcc against onnxruntime, dense and pruned.

The layers segmentation decoders use, on a 56x56 input, 128 -> 64 channels:

- ``up2x2``: a U-Net up-convolution, kernel 2, stride 2 (patcc: a 1x1 conv to the
  tap columns, then Col2Im);
- ``up3x3``: kernel 3, stride 2, padding 1, output_padding 1 (the same, 9 taps);
- ``same3x3``: kernel 3, stride 1, padding 1 (patcc: one conv with flipped kernels).

Each dense, and pruned: the 3x3 kernels pattern-pruned (the centre and three
neighbours, 4 patterns) with a third of the kernels removed, the 2x2 ones keeping 2
of their 4 taps with the same connectivity pruning. patcc runs a pruned stride-2 layer
as a sparse 1x1 conv (its kernel skips the zeros) and a pruned stride-1 layer on the
pattern kernel; onnxruntime runs every zero.

Per row: patcc's kernels, the median latency of each engine over ``--runs`` runs taken
alternately after a warm-up (at ``--threads`` threads, idle threads blocking, as in
``benchmarks/run.py``), ort / patcc (> 1: patcc is faster), patcc's time per layer
from a profiling build (how the 1x1 conv and the Col2Im share it), and patcc's
largest difference from onnxruntime relative to its output's scale.

Usage: ``python benchmarks/conv_transpose.py [--runs 30] [--threads 2] [--target
x86_64] [--out-dir benchmarks/results]``; prints the table and writes
``conv_transpose.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from run import ort_session, relative_error, summarize, time_alternately

X_SHAPE = (1, 128, 56, 56)
C_OUT = 64
LAYERS: dict[str, dict[str, Any]] = {
    "up2x2": {"kernel": 2, "strides": [2, 2], "pads": [0, 0, 0, 0], "output_padding": [0, 0]},
    "up3x3": {"kernel": 3, "strides": [2, 2], "pads": [1, 1, 1, 1], "output_padding": [1, 1]},
    "same3x3": {"kernel": 3, "strides": [1, 1], "pads": [1, 1, 1, 1], "output_padding": [0, 0]},
}
VARIANTS = ("dense", "pruned")
KEEP_KERNELS = 2 / 3
"""The fraction of kernels connectivity pruning keeps (3x3: about 3.4x fewer weights
with the 4-of-9 patterns)."""

PATTERNS = np.array([np.isin(np.arange(9), (4, *taps)).reshape(3, 3)
                     for taps in ((1, 3, 5), (1, 5, 7), (3, 5, 7), (0, 1, 3))])


def weight(kernel: int, variant: str, seed: int = 0) -> np.ndarray:
    """(C_in, C_out, k, k), dense or pruned as the module's docstring says."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((X_SHAPE[1], C_OUT, kernel, kernel)).astype(np.float32) * 0.05
    if variant == "dense":
        return w
    if kernel == 3:
        masks = PATTERNS[rng.integers(0, len(PATTERNS), w.shape[:2])]
    else:  # 2 of the kernel's taps
        order = rng.random((*w.shape[:2], kernel * kernel)).argsort(axis=-1)
        masks = (order < kernel * kernel // 2).reshape(w.shape)
    masks = masks & (rng.random(w.shape[:2]) < KEEP_KERNELS)[..., None, None]
    return (w * masks).astype(np.float32)


def model(layer: dict[str, Any], w: np.ndarray) -> onnx.ModelProto:
    bias = np.random.default_rng(1).standard_normal(C_OUT).astype(np.float32)
    node = helper.make_node("ConvTranspose", ["x", "w", "b"], ["y"], name="up",
                            strides=layer["strides"], pads=layer["pads"],
                            output_padding=layer["output_padding"])
    graph = helper.make_graph(
        [node], "conv_transpose", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                 X_SHAPE)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", "c", "h", "w"])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(bias, "b")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def bench(name: str, variant: str, runs: int, threads: int, target: str,
          workdir: Path) -> dict[str, Any]:
    import patcc
    from patcc.report import layer_rows

    layer = LAYERS[name]
    w = weight(layer["kernel"], variant)
    path = workdir / f"{name}-{variant}.onnx"
    onnx.save(model(layer, w), path)
    compiled = patcc.compile(path, target=target, tune=os.environ.get("PATCC_TUNE") != "0")
    native = compiled.load(num_threads=threads)
    session = ort_session(path, threads)
    x = np.random.default_rng(2).uniform(-1, 1, X_SHAPE).astype(np.float32)
    ours, theirs = native(x), session.run(None, {"x": x})[0]
    times = time_alternately({"patcc": lambda: native(x),
                              "onnxruntime": lambda: session.run(None, {"x": x})}, runs)
    latency = {engine: summarize(t) for engine, t in times.items()}
    rows = layer_rows(compiled, runs=runs, threads=threads)
    return {
        "layer": name, "variant": variant, **{k: v for k, v in layer.items()},
        "weights": int(w.size), "nonzero_weights": int(np.count_nonzero(w)),
        "kernels": [f"{r['op']}:{r['kernel']}" for r in rows],
        "layer_ms": {r["name"]: r.get("ms") for r in rows},
        "latency_ms": latency,
        "speedup_vs_onnxruntime": latency["onnxruntime"]["median"]
        / latency["patcc"]["median"],
        "relative_error": relative_error(ours, theirs),
    }


def format_table(rows: list[dict[str, Any]]) -> str:
    head = ["layer", "variant", "nonzero", "patcc kernels", "patcc ms", "ort ms", "ort/patcc",
            "per layer ms", "rel err"]
    table = [head]
    for r in rows:
        per_layer = ", ".join(f"{ms:.3f}" for ms in r["layer_ms"].values() if ms is not None)
        table.append([r["layer"], r["variant"], f"{r['nonzero_weights'] / r['weights']:.0%}",
                      " + ".join(r["kernels"]), f"{r['latency_ms']['patcc']['median']:.3f}",
                      f"{r['latency_ms']['onnxruntime']['median']:.3f}",
                      f"{r['speedup_vs_onnxruntime']:.2f}", per_layer,
                      f"{r['relative_error']:.1e}"])
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
                     for row in table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--target", default="x86_64")
    parser.add_argument("--out-dir", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    rows = []
    with tempfile.TemporaryDirectory(prefix="patcc-bench-") as tmp:
        for name in LAYERS:
            for variant in VARIANTS:
                rows.append(bench(name, variant, args.runs, args.threads, args.target,
                                  Path(tmp)))
                print(f"{name} {variant}: done", file=sys.stderr)
    print(format_table(rows))
    bad = [f"{r['layer']} {r['variant']}" for r in rows if r["relative_error"] > 1e-4]
    args.out_dir.mkdir(parents=True, exist_ok=True)
    out = args.out_dir / "conv_transpose.json"
    out.write_text(json.dumps({"x_shape": list(X_SHAPE), "c_out": C_OUT, "runs": args.runs,
                               "threads": args.threads, "target": args.target,
                               "results": rows}, indent=1))
    print(f"wrote {out}")
    if bad:
        print(f"outputs differ from onnxruntime by more than 1e-4: {bad}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
