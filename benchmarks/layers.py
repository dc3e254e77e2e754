"""Single layers of dense-prediction networks, patcc against onnxruntime.

The cases are the data-movement layers U-Nets, detector necks and segmentation heads
add to a classifier: nearest x2 up-sampling followed by a Concat with the skip
connection (the Resize output is written straight into the Concat's buffer), and
bilinear up-sampling in its two coordinate conventions. Each case is a small ONNX
model whose inputs pass through a ReLU first, so that, as in a network, the tensors
the Resize and the Concat read are computed ones and not the caller's buffers.

Batch 1, ``--threads`` threads for both engines, ``--runs`` runs each taken
alternately after a warm-up; medians and IQRs, the speed-up over onnxruntime, and the
effective bandwidth (bytes the layers must read and write / median time). Outputs are
checked against onnxruntime first (1e-4 of the largest value).

Usage: ``python benchmarks/layers.py [--runs 50] [--threads 2] [--target x86_64]``
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import (  # noqa: E402
    RESULTS_DIR,
    TOLERANCE,
    machine_info,
    ort_session,
    relative_error,
    summarize,
    time_alternately,
)


def _relu_inputs(shapes: dict[str, tuple[int, ...]]) -> tuple[list[Any], list[Any]]:
    from onnx import TensorProto, helper

    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in shapes.items()]
    nodes = [helper.make_node("Relu", [n], [f"{n}_r"]) for n in shapes]
    return inputs, nodes


def upsample_concat(channels: int, skip_channels: int, size: int) -> tuple[Any, int]:
    """Nearest x2 of (1, channels, size, size), Concat with a (1, skip, 2size, 2size)
    skip; returns the model and the bytes the Resize + Concat must move."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    inputs, nodes = _relu_inputs({"low": (1, channels, size, size),
                                  "skip": (1, skip_channels, 2 * size, 2 * size)})
    scales = numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")
    nodes += [helper.make_node("Resize", ["low_r", "", "scales"], ["up"], mode="nearest",
                               coordinate_transformation_mode="asymmetric",
                               nearest_mode="floor"),
              helper.make_node("Concat", ["up", "skip_r"], ["y"], axis=1)]
    out = (1, channels + skip_channels, 2 * size, 2 * size)
    graph = helper.make_graph(nodes, "upsample_concat", inputs,
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, out)],
                              [scales])
    low, skip = channels * size * size, skip_channels * 4 * size * size
    moved = 4 * (low + skip + int(np.prod(out)))  # read both, write the result once
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), moved


def bilinear(channels: int, size: int, factor: int, mode: str) -> tuple[Any, int]:
    """Linear up-sampling of (1, channels, size, size) by ``factor``."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    inputs, nodes = _relu_inputs({"x": (1, channels, size, size)})
    scales = numpy_helper.from_array(np.array([1, 1, factor, factor], np.float32), "scales")
    nodes.append(helper.make_node("Resize", ["x_r", "", "scales"], ["y"], mode="linear",
                                  coordinate_transformation_mode=mode))
    out = (1, channels, factor * size, factor * size)
    graph = helper.make_graph(nodes, "bilinear", inputs,
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, out)],
                              [scales])
    moved = 4 * (channels * size * size + int(np.prod(out)))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), moved


CASES = {
    "unet nearest x2 + concat 256+128 @28": lambda: upsample_concat(256, 128, 28),
    "yolo nearest x2 + concat 128+64 @40": lambda: upsample_concat(128, 64, 40),
    "bilinear x2 half_pixel 64 @56": lambda: bilinear(64, 56, 2, "half_pixel"),
    "bilinear x4 align_corners 21 @28": lambda: bilinear(21, 28, 4, "align_corners"),
}


def bench_case(name: str, runs: int, threads: int, target: str, workdir: Path
               ) -> dict[str, Any]:
    import numpy as np
    import onnx

    import patcc

    model, moved = CASES[name]()
    path = workdir / "case.onnx"
    onnx.save(model, path)
    rng = np.random.default_rng(0)
    feeds = {i.name: rng.standard_normal([d.dim_value for d in i.type.tensor_type.shape.dim]
                                         ).astype(np.float32) for i in model.graph.input}
    compiled = patcc.compile(path, target=target, tune=False)
    ours = compiled.load(num_threads=threads)
    session = ort_session(path, threads)
    error = relative_error(ours.run(feeds)["y"], session.run(None, feeds)[0])
    times = time_alternately({"patcc": lambda: ours.run(feeds),
                              "onnxruntime": lambda: session.run(None, feeds)}, runs)
    row = {"case": name, "bytes": moved, "error": error, "ok": error <= TOLERANCE,
           "kernels": [c.kernel for c in compiled.plan.codes if c.layer.op != "Unary"]}
    for engine, seconds in times.items():
        row[engine] = summarize(seconds)
    return row


def format_rows(rows: list[dict[str, Any]]) -> str:
    lines = [f"{'case':40} {'MB':>6} {'patcc ms':>9} {'iqr':>6} {'ort ms':>8} {'iqr':>6} "
             f"{'ort/patcc':>9} {'patcc GB/s':>10}  kernels"]
    for r in rows:
        p, o = r["patcc"]["median"], r["onnxruntime"]["median"]
        mark = "" if r["ok"] else " !"
        lines.append(f"{r['case']:40} {r['bytes'] / 1e6:6.2f} {p:9.3f} "
                     f"{r['patcc']['iqr']:6.3f} {o:8.3f} {r['onnxruntime']['iqr']:6.3f} "
                     f"{o / p:9.2f} {r['bytes'] / (p / 1e3) / 1e9:10.1f}  "
                     f"{','.join(r['kernels'])}{mark}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--target", default="x86_64")
    parser.add_argument("--cases", default=",".join(CASES),
                        help="comma-separated case names (default: all)")
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    names = [n for n in args.cases.split(",") if n]
    unknown = [n for n in names if n not in CASES]
    if unknown:
        parser.error(f"unknown case {unknown[0]!r}; cases: {', '.join(CASES)}")
    with tempfile.TemporaryDirectory() as tmp:
        rows = [bench_case(n, args.runs, args.threads, args.target, Path(tmp)) for n in names]
    print(f"target {args.target}, {args.threads} threads, {args.runs} alternating runs")
    print(format_rows(rows))
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "layers.json").write_text(json.dumps(
        {"machine": machine_info(), "target": args.target, "threads": args.threads,
         "rows": rows}, indent=1))
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
