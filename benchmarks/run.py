"""Benchmark patcc against onnxruntime and torch on the benchmark models, in one process.

What is measured, for each model of ``patcc.models.BENCHMARK_VARIANTS`` (or ``--models``):

- compile: export to ONNX, ``patcc.compile`` for ``--target`` (default ``x86_64``,
  this CPU; ``x86_64-avx2`` measures the AVX2 build on a wider CPU), tuned here
  unless ``PATCC_TUNE=0``, load; the compiler's own ``timings`` (import, tune,
  codegen, llvm, link) and the wall time of compile + load, and the workspace the
  compiled model needs. The tables name the target and the host's ISA.
- correctness, once: the patcc output against onnxruntime's on the same input,
  ``max|patcc - ort| / max|ort|`` <= 1e-4; a row that fails is marked ``!`` (timing a
  wrong result means nothing) and the script exits with status 1.
- latency: batch 1, ``--threads`` threads for every engine, ``--runs`` runs each after
  a warm-up, taken alternately (patcc, ort, torch, patcc, ...) so that machine noise
  hits every engine alike; median, min and interquartile range. Idle worker threads
  block instead of spinning (``OMP_WAIT_POLICY=PASSIVE`` for torch, onnxruntime's
  ``session.intra_op.allow_spinning=0``): a pool that spins after its run takes the
  cores from the engine that runs next (measured here: torch 2x slower after ort,
  patcc 1.3x slower after torch, on a 2-core machine) and no engine ran slower alone
  without spinning.
- speed-up of patcc: ``ort_ms / patcc_ms`` and ``torch_ms / patcc_ms`` (> 1: patcc
  is faster), from the medians.
- efficiency: non-zero GFLOP/s = 2 x non-zero MACs / median time, and that as a
  fraction of the sgemm peak: the best 1024^3 fp32 matrix product rate of numpy's
  BLAS, torch and onnxruntime (a constant-weight MatMul), at ``--threads`` threads,
  measured at the start and at the end of the run (the larger is the peak), so
  figures from different machines compare. The best, not numpy's alone: on an AMD
  Zen 5 machine numpy's OpenBLAS and torch's MKL reach about 230-260 GFLOP/s and
  onnxruntime about twice that, and a peak below what an engine reaches is no peak.
  Also patcc's share of its target's FMA peak (``benchmarks/peak.py``: independent
  FMAs of the target's vectors on every thread), and the clock that implies.
- tuning: per model, the layers tuned, those the tuner changed or kept within the
  noise, and how close the cost model's own choice came to the fastest candidate.
- thread scaling (``--scaling``, default resnet18 6x): patcc at 1 thread against
  ``--threads`` threads, again alternately.
- time by kernel: a profiling build of the same schedules times each layer
  (``patcc.report.layer_rows``, ``--runs`` runs at ``--threads`` threads); per kernel
  (pattern, depthwise, sparse, gemm, ...) the layers' summed time, share of the
  model and non-zero GFLOP/s, e.g. how close the pattern 3x3 convs come to the peak.

Prints the main table, then the spread of the runs and the compile times, and writes
``bench.json`` and ``bench.png`` (``chart.make_chart``) to ``--out-dir`` (default
``benchmarks/results``). Other work on the machine shows as a large IQR or as drift in
the per-run ``times`` kept in the JSON; the 1-minute load average is recorded too.

Usage: ``python benchmarks/run.py [--runs 30] [--threads 2] [--models resnet18:6x,...]
[--scaling resnet18:6x] [--target x86_64-avx2] [--out-dir DIR]``
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ENGINES = ("patcc", "onnxruntime", "torch")
PEERS = ("onnxruntime", "torch")
TOLERANCE = 1e-4  # max|patcc - ort| relative to max|ort|
WARMUP_RUNS = 3
DEFAULT_SCALING = "resnet18:6x"
RESULTS_DIR = Path(__file__).resolve().parent / "results"

Model = tuple[str, str]  # (architecture name, pruned variant)


# --- measuring ---------------------------------------------------------------------

def sgemm_rates(threads: int, n: int = 1024, runs: int = 20) -> dict[str, float]:
    """Best-of-runs fp32 ``n``-cubed matrix product rate, GFLOP/s, of each provider."""
    import numpy as np
    import onnx
    import torch
    from onnx import TensorProto, helper, numpy_helper

    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    b = np.random.default_rng(1).standard_normal((n, n), dtype=np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["c"])], "sgemm",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [n, n])],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, [n, n])],
        [numpy_helper.from_array(b, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)],
                              ir_version=8)  # one every supported onnxruntime reads
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "sgemm.onnx"
        onnx.save(model, path)
        session = ort_session(path, threads)
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    products: dict[str, Callable[[], object]] = {
        "numpy": lambda: a @ b, "torch": lambda: torch.mm(ta, tb),
        "onnxruntime": lambda: session.run(None, {"a": a})}
    rates = {}
    for name, product in products.items():
        product()  # warm up
        rates[name] = 2 * n**3 / min(_time(product) for _ in range(runs)) / 1e9
    return rates


def _time(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def time_alternately(engines: dict[str, Callable[[], object]], runs: int,
                     prepare: dict[str, Callable[[], None]] | None = None,
                     ) -> dict[str, list[float]]:
    """Seconds of ``runs`` calls of each engine, one call of each in turn, after warm-up.

    ``prepare[name]``, if given, runs untimed before each call of that engine (e.g. to
    set its thread count).
    """
    prepare = prepare or {}
    for name, fn in engines.items():
        prepare.get(name, lambda: None)()
        for _ in range(WARMUP_RUNS):
            fn()
    times: dict[str, list[float]] = {name: [] for name in engines}
    for _ in range(runs):
        for name, fn in engines.items():
            prepare.get(name, lambda: None)()
            times[name].append(_time(fn))
    return times


def summarize(seconds: list[float]) -> dict[str, Any]:
    """Median, min, quartiles and interquartile range of a list of times, in ms.

    The times themselves are kept too, in run order, to see drift or outliers.
    """
    ms = sorted(1e3 * s for s in seconds)
    q1, _, q3 = statistics.quantiles(ms, n=4) if len(ms) > 1 else (ms[0], ms[0], ms[0])
    return {"median": statistics.median(ms), "min": ms[0], "q1": q1, "q3": q3,
            "iqr": q3 - q1, "runs": len(ms), "times": [1e3 * s for s in seconds]}


def relative_error(actual: Any, reference: Any) -> float:
    """``max|actual - reference| / max|reference|`` (absolute if the reference is 0)."""
    import numpy as np

    scale = float(np.max(np.abs(reference))) or 1.0
    return float(np.max(np.abs(actual - reference))) / scale


# --- one model ---------------------------------------------------------------------

def compile_patcc(path: Path, threads: int, target: str = "x86_64"
                  ) -> tuple[Any, Any, dict[str, Any]]:
    """Compile for ``target`` (tuned here unless ``PATCC_TUNE=0``) and load an ONNX
    file; returns (compiled, loaded model, compile record)."""
    import patcc

    start = time.perf_counter()
    compiled = patcc.compile(path, target=target, tune=os.environ.get("PATCC_TUNE") != "0")
    model = compiled.load(num_threads=threads)
    total = time.perf_counter() - start
    record = {"seconds": dict(compiled.timings), "total_s": total,
              "workspace_bytes": int(compiled.workspace_size)}
    return compiled, model, record


def ort_session(path: Path, threads: int) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # see top
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def efficiency(nonzero_gmacs: float, ms: float, peak: float) -> dict[str, float]:
    gflops = 2 * nonzero_gmacs / (ms / 1e3)
    return {"nonzero_gflops": gflops, "fraction_of_peak": gflops / peak}


def bench_model(name: str, variant: str, runs: int, threads: int, workdir: Path,
                scaling: bool = False, target: str = "x86_64") -> dict[str, Any]:
    """Compile, check and time one model against its peers; returns its JSON row.

    ``nonzero_gflops`` / ``fraction_of_peak`` are added later, once the peak is known.
    """
    import numpy as np
    import torch

    from patcc.models import INPUT_SHAPES, OUTPUT_NAMES, export_onnx, pruned_model
    from patcc.stats import model_stats

    start = time.perf_counter()
    module = pruned_model(name, variant)
    path = workdir / f"{name}-{variant}.onnx"
    export_onnx(module, path, INPUT_SHAPES[name], output_names=OUTPUT_NAMES[name])
    export_s = time.perf_counter() - start
    compiled, model, compile_record = compile_patcc(path, threads, target)
    compile_record["export_s"] = export_s
    totals = model_stats(compiled.graph)["totals"]

    x = np.random.default_rng(0).uniform(-1, 1, INPUT_SHAPES[name]).astype(np.float32)
    session = ort_session(path, threads)
    feed = {session.get_inputs()[0].name: x}
    xt = torch.from_numpy(x)

    def run_torch() -> None:
        with torch.inference_mode():
            module(xt)

    # Every output (the detector has three), in the order both engines give them.
    error = max(relative_error(ours, ref) for ours, ref in zip(
        model.run([x]).values(), session.run(None, feed), strict=True))
    engines = {"patcc": lambda: model(x), "onnxruntime": lambda: session.run(None, feed),
               "torch": run_torch}
    latency = {e: summarize(t) for e, t in time_alternately(engines, runs).items()}
    row: dict[str, Any] = {
        "model": name, "variant": variant,
        "input_shape": list(INPUT_SHAPES[name]),
        "dense_gmacs": totals["dense_macs"] / 1e9,
        "nonzero_gmacs": totals["nonzero_macs"] / 1e9,
        "conv_compression": totals["conv_compression"],
        "correctness": {"max_rel_error": error, "tolerance": TOLERANCE,
                        "ok": bool(error <= TOLERANCE)},
        "compile": compile_record,
        "latency_ms": latency,
        "speedup": {p: latency[p]["median"] / latency["patcc"]["median"] for p in PEERS},
    }
    if scaling and threads > 1:
        row["thread_scaling"] = thread_scaling(model, x, runs, threads)
    row["kernels"] = kernel_times(compiled, runs, threads)
    row["tuning"] = tuning_record(compiled)
    model.num_threads = threads
    return row


def tuning_record(compiled: Any) -> dict[str, Any]:
    """What tuning decided per layer: the verdicts, and how far the cost model's own
    choice was from the fastest candidate (its time over the fastest's)."""
    layers = {code.layer.name: {"verdict": code.notes["tuning"],
                                "schedule": code.notes["schedule"],
                                "model_over_fastest": code.notes["model_ms"]
                                / code.notes["fastest_ms"]}
              for code in compiled.plan.codes if "tuning" in code.notes}
    ratios = [layer["model_over_fastest"] for layer in layers.values()]
    return {"layers": layers, "tuned": len(layers),
            "changed": sum(1 for v in layers.values() if v["verdict"] == "tuned"),
            "within_noise": sum(1 for v in layers.values() if v["verdict"] == "noise"),
            "model_within_15pct": sum(1 for r in ratios if r <= 1.15),
            "model_worst": max(ratios, default=1.0)}


def thread_scaling(model: Any, x: Any, runs: int, threads: int) -> dict[str, Any]:
    """patcc latency at 1 thread and at ``threads``, runs alternated; speed-up t1/tN."""
    counts = {"1": 1, str(threads): threads}
    engines = {n: (lambda: model(x)) for n in counts}
    prepare: dict[str, Callable[[], None]] = {
        n: functools.partial(setattr, model, "num_threads", k) for n, k in counts.items()}
    latency = {n: summarize(t) for n, t in time_alternately(engines, runs, prepare).items()}
    return {"latency_ms": latency,
            "speedup": latency["1"]["median"] / latency[str(threads)]["median"]}


def kernel_times(compiled: Any, runs: int, threads: int) -> dict[str, dict[str, float]]:
    """Per kernel: layers, profiled milliseconds and non-zero MACs of its layers."""
    from patcc.report import kernel_rows, layer_rows

    return kernel_rows(layer_rows(compiled, runs=runs, threads=threads))


# --- the run -----------------------------------------------------------------------

def parse_models(spec: str, option: str = "--models") -> list[Model]:
    """``"resnet18:6x,vgg16:8x"`` -> [("resnet18", "6x"), ("vgg16", "8x")].

    Raises SystemExit naming ``option`` for an item that is not ``name:variant``.
    """
    models = []
    for item in filter(None, (s.strip() for s in spec.split(","))):
        name, sep, variant = item.partition(":")
        if not (sep and name and variant):
            raise SystemExit(f"{option}: {item!r} is not name:variant "
                             "(e.g. resnet18:6x,mobilenet_v2:dw-patterns+pw50)")
        models.append((name, variant))
    return models


def machine_info() -> dict[str, Any]:
    import numpy as np
    import onnxruntime
    import torch

    import patcc

    cpu = platform.processor()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [ln.split(":", 1)[1].strip() for ln in cpuinfo.read_text().splitlines()
                 if ln.startswith("model name")]
        cpu = names[0] if names else cpu
    from patcc.backends.target import host_features

    features = host_features()
    isa = next((name for name, flag in (("AVX-512", "avx512f"), ("AVX2", "avx2"),
                                        ("AVX", "avx")) if flag in features), "SSE")
    return {"platform": platform.platform(), "cpu": cpu, "cpus": os.cpu_count(),
            "isa": isa, "python": platform.python_version(),
            "versions": {"patcc": patcc.__version__, "onnxruntime": onnxruntime.__version__,
                         "torch": torch.__version__, "numpy": np.__version__}}


def target_record(target: Any) -> dict[str, Any]:
    """The compile target as the results JSON records it."""
    return {"tag": target.tag, "cpu": target.cpu, "vector_bits": target.vector_bits,
            "vector_registers": target.vector_registers}


def add_efficiency(row: dict[str, Any], peak: float, fma_peak: float) -> None:
    """Non-zero GFLOP/s and fraction of the sgemm peak, per engine, and patcc's
    fraction of its target's FMA peak, into ``row``."""
    for key in ("nonzero_gflops", "fraction_of_peak"):
        row[key] = {}
    for engine in ENGINES:
        e = efficiency(row["nonzero_gmacs"], row["latency_ms"][engine]["median"], peak)
        for key, value in e.items():
            row[key][engine] = value
    row["fraction_of_fma_peak"] = row["nonzero_gflops"]["patcc"] / fma_peak


def format_kernels(rows: list[dict[str, Any]], peak: float, fma_peak: float) -> str:
    """Time by kernel, from the profiling build: share of the model, nz GFLOP/s, and
    that as a share of the sgemm peak and of the target's FMA peak."""
    lines = [f"{'model':<32}{'kernel':<14}{'layers':>7}{'ms':>8}{'share':>8}"
             f"{'nz GF/s':>9}{'% peak':>8}{'% FMA pk':>10}"]
    for r in rows:
        total = sum(k["ms"] for k in r["kernels"].values()) or 1.0
        for name, k in sorted(r["kernels"].items(), key=lambda kv: -kv[1]["ms"]):
            rate = 2 * k["nonzero_macs"] / (k["ms"] / 1e3) / 1e9 if k["ms"] else 0.0
            lines.append(f"{label(r):<32}{name:<14}{k['layers']:>7}{k['ms']:>8.3f}"
                         f"{100 * k['ms'] / total:>7.1f}%"
                         + (f"{rate:>9.1f}{100 * rate / peak:>7.1f}%"
                            f"{100 * rate / fma_peak:>9.1f}%" if k["nonzero_macs"] else ""))
    lines.append("(per-layer times of a profiling build; they sum a little above the "
                 "model's median)")
    return "\n".join(lines)


def format_tuning(rows: list[dict[str, Any]]) -> str:
    """Per model: layers tuned, how many the tuner changed or kept within the noise,
    and how close the cost model's own choices came to the fastest candidates."""
    lines = [f"{'model':<32}{'tuned':>7}{'changed':>9}{'noise':>7}{'model<=1.15x':>14}"
             f"{'worst':>8}"]
    for r in rows:
        t = r["tuning"]
        lines.append(f"{label(r):<32}{t['tuned']:>7}{t['changed']:>9}{t['within_noise']:>7}"
                     f"{t['model_within_15pct']:>14}{t['model_worst']:>7.2f}x")
    lines.append("(model<=1.15x: layers whose cost-model choice ran within 15% of the "
                 "fastest candidate; worst: its largest time over the fastest's)")
    return "\n".join(lines)


def label(row: dict[str, Any]) -> str:
    mark = "" if row["correctness"]["ok"] else " !"
    return f"{row['model']} {row['variant']}{mark}"


def format_table(rows: list[dict[str, Any]]) -> str:
    """The main table: size, median latencies, speed-ups and patcc efficiency."""
    lines = [f"{'model':<32}{'GMAC dense':>11}{'GMAC nz':>9}{'patcc ms':>10}{'ort ms':>9}"
             f"{'torch ms':>10}{'ort/patcc':>11}{'torch/patcc':>13}{'patcc nz GF/s':>15}"
             f"{'% peak':>8}{'% FMA pk':>10}"]
    for r in rows:
        ms = {e: r["latency_ms"][e]["median"] for e in ENGINES}
        lines.append(
            f"{label(r):<32}{r['dense_gmacs']:>11.2f}{r['nonzero_gmacs']:>9.2f}"
            f"{ms['patcc']:>10.2f}{ms['onnxruntime']:>9.2f}{ms['torch']:>10.2f}"
            f"{r['speedup']['onnxruntime']:>11.2f}{r['speedup']['torch']:>13.2f}"
            f"{r['nonzero_gflops']['patcc']:>15.1f}"
            f"{100 * r['fraction_of_peak']['patcc']:>7.1f}%"
            f"{100 * r['fraction_of_fma_peak']:>9.1f}%")
    if not all(r["correctness"]["ok"] for r in rows):
        lines.append(f"! patcc output differs from onnxruntime by more than {TOLERANCE:g} "
                     "of max|ref|: its timing is not meaningful")
    return "\n".join(lines)


def format_spread(rows: list[dict[str, Any]]) -> str:
    """Min and interquartile range of each engine's runs, and patcc's thread scaling."""
    lines = [f"{'model':<32}" + "".join(f"{e + ' min/IQR ms':>24}" for e in ENGINES)]
    for r in rows:
        lines.append(f"{label(r):<32}" + "".join(
            f"{r['latency_ms'][e]['min']:>16.2f} /{r['latency_ms'][e]['iqr']:>6.2f}"
            for e in ENGINES))
    for r in rows:
        if "thread_scaling" in r:
            s = r["thread_scaling"]
            ms = ", ".join(f"{n} thread(s) {v['median']:.2f} ms"
                           for n, v in s["latency_ms"].items())
            lines.append(f"thread scaling of patcc on {label(r)}: {ms}; "
                         f"speed-up {s['speedup']:.2f}x")
    return "\n".join(lines)


def format_compile(rows: list[dict[str, Any]]) -> str:
    """Correctness, compile times (s) and workspace, one line per model."""
    steps = ("export", "import", "tune", "codegen", "llvm", "link")
    lines = [f"{'model':<32}{'rel err':>9}" + "".join(f"{k + ' s':>11}" for k in steps)
             + f"{'total s':>10}{'workspace MiB':>15}"]
    for r in rows:
        c = r["compile"]
        seconds = {"export": c["export_s"], **c["seconds"]}
        lines.append(f"{label(r):<32}{r['correctness']['max_rel_error']:>9.1e}"
                     + "".join(f"{seconds.get(k, 0.0):>11.2f}" for k in steps)
                     + f"{c['total_s']:>10.2f}{c['workspace_bytes'] / 2**20:>15.2f}")
    lines.append("(total: patcc.compile + load, i.e. import to link; export is not in it)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30, help="timed runs per engine")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--models", default="", help="e.g. resnet18:6x,vgg16:8x "
                        "(default: patcc.models.BENCHMARK_VARIANTS)")
    parser.add_argument("--scaling", default=DEFAULT_SCALING,
                        help="models to time at 1 thread too, e.g. resnet18:6x ('' for none)")
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--target", default="x86_64",
                        help="patcc's target tag, e.g. x86_64-avx2: its code is tuned and "
                             "timed here, so this CPU must run it (default: this CPU's own)")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.threads < 1:
        parser.error(f"--runs and --threads must be >= 1, got {args.runs} and {args.threads}")
    from patcc.backends.target import get_target
    from patcc.errors import PatccError

    try:
        target = get_target(args.target)
    except PatccError as e:
        parser.error(str(e))
    if not target.runs_here:
        parser.error(f"--target {args.target}: this CPU cannot run its code (it lacks "
                     f"{', '.join(target.missing_features()) or 'the architecture'})")

    chosen, scaling = parse_models(args.models), set(parse_models(args.scaling, "--scaling"))

    # Before numpy/torch are imported: their BLAS/OpenMP pools read these once.
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, str(args.threads))
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # no spinning; see the top
    import torch

    from patcc.models import BENCHMARK_VARIANTS

    torch.set_num_threads(args.threads)
    models = chosen or list(BENCHMARK_VARIANTS)

    load_start = os.getloadavg()[0]
    if load_start > 0.5:
        print(f"warning: load average {load_start:.2f} before the run: other work on this "
              "machine will add noise (see the IQR columns)")
    from peak import fma_peak, nominal_flop_per_cycle  # benchmarks/peak.py

    info = machine_info()
    print(f"patcc compiled for {target.tag} ({target.cpu}, {target.vector_registers} x "
          f"{target.vector_bits}-bit registers), tuned and timed on an {info['isa']} host "
          f"({info['cpu']})")
    rates_start = sgemm_rates(args.threads)
    peak_start = max(rates_start.values())
    fma_start = fma_peak(target, args.threads)
    print(f"sgemm peak ({args.threads} threads) at start: {peak_start:.1f} GFLOP/s ("
          + ", ".join(f"{k} {v:.0f}" for k, v in rates_start.items()) + "); "
          f"{target.tag} FMA peak {fma_start:.1f} GFLOP/s")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, variant in models:
            row = bench_model(name, variant, args.runs, args.threads, Path(tmp),
                              scaling=(name, variant) in scaling, target=target.tag)
            print(f"  {name} {variant}: compiled in {row['compile']['total_s']:.1f} s, "
                  f"rel error {row['correctness']['max_rel_error']:.1e}, "
                  f"patcc {row['latency_ms']['patcc']['median']:.2f} ms", flush=True)
            rows.append(row)
    rates_end = sgemm_rates(args.threads)
    peak_end = max(rates_end.values())
    fma = max(fma_start, fma_peak(target, args.threads))
    load = {"start": load_start, "end": os.getloadavg()[0]}
    peak = max(peak_start, peak_end)
    clock = fma / args.threads / nominal_flop_per_cycle(target)
    print(f"sgemm peak at end: {peak_end:.1f} GFLOP/s; peak used: {peak:.1f} GFLOP/s; "
          f"{target.tag} FMA peak {fma:.1f} GFLOP/s ({clock:.2f} GHz at "
          f"{nominal_flop_per_cycle(target)} FLOP/cycle per core)")
    for row in rows:
        add_efficiency(row, peak, fma)

    tables = [format_table(rows), format_spread(rows), format_kernels(rows, peak, fma),
              format_compile(rows)]
    if any(r["tuning"]["tuned"] for r in rows):
        tables.append(format_tuning(rows))
    for table in tables:
        print()
        print(table)
    write_results(args, rows, {"start": peak_start, "end": peak_end, "peak": peak,
                               "providers_start": rates_start, "providers_end": rates_end,
                               "fma": fma, "fma_clock_ghz": clock},
                  load, info, target)
    return 0 if all(r["correctness"]["ok"] for r in rows) else 1


def write_results(args: argparse.Namespace, rows: list[dict[str, Any]],
                  peak: dict[str, Any], load: dict[str, float], info: dict[str, Any],
                  target: Any) -> None:
    """``bench.json`` and its chart ``bench.png`` in ``args.out_dir``."""
    from chart import make_chart  # benchmarks/chart.py; this script's directory is on sys.path

    out_dir: Path = args.out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / "bench.json"
    json_path.write_text(json.dumps({
        "machine": {**info, "load_average_1min": load},
        "target": target_record(target), "sgemm_peak_gflops": peak,
        "threads": args.threads, "runs": args.runs, "warmup_runs": WARMUP_RUNS,
        "environment": {v: os.environ.get(v) for v in
                        ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "OPENBLAS_NUM_THREADS")},
        "tolerance": TOLERANCE, "results": rows,
    }, indent=1))
    png_path = out_dir / "bench.png"
    make_chart(json_path, png_path)
    print(f"wrote {json_path} and {png_path}")


if __name__ == "__main__":
    sys.exit(main())
