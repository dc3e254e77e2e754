"""patcc against every CPU engine a user could pick, each in its own process (issue 19).

``make bench-peers`` runs this driver in the project's ``.venv`` after building the
environments the peers need. For each model (``--models``, default ``DEFAULT_MODELS``)
the driver exports the ONNX file once (``patcc.models.pruned_model`` +
``export_onnx``), writes one input (``.npy``, uniform in [-1, 1), seed 0, as
``run.py``), and starts one worker process per engine (``benchmarks/peer_worker.py``,
run by the Python of the environment that holds the engine). Engines, at batch 1,
``--threads`` threads (default 2), fp32 everywhere:

- patcc (``.venv``): ``patcc.compile(onnx, target=--target, tune=PATCC_TUNE != "0")``,
  ``.load(num_threads=threads)`` (``run.compile_patcc``); tuned as a user runs it.
- onnxruntime (``.venv``): ``run.ort_session``: CPU provider, intra-op threads,
  ``session.intra_op.allow_spinning=0``. Its output is the reference.
- OpenVINO (``.venv-bench``): CPU plugin, ``PERFORMANCE_HINT=LATENCY``,
  ``INFERENCE_NUM_THREADS=threads``, ``INFERENCE_PRECISION_HINT=f32`` (this is set
  explicitly: on a CPU with AVX512_BF16/AMX OpenVINO's default is bf16), same ONNX file.
- MNN and MNN sparse (``.venv-bench``): the ONNX file converted by MNN's converter,
  plain and with ``--detectSparseSpeedUp``, run on the CPU backend with
  ``numThread=threads`` and precision ``high`` (fp32). The converter is called as its
  compiled extension, not through the ``mnnconvert`` script, which pip-installs an
  Aliyun logging SDK and sends usage logs (``peer_worker.mnn_convert`` says how).
- ExecuTorch + XNNPACK (``.venv-bench``): the same torch module, ``torch.export``,
  ``XnnpackPartitioner``, a ``.pte`` run by the ExecuTorch runtime with its thread
  pool set to ``threads``.
- DeepSparse 1.8.0 (``.venv-deepsparse``, optional: it needs numpy<2):
  ``deepsparse.compile_model(onnx, batch_size=1, num_cores=threads)``.
- TVM is left out: its untuned default build runs single-threaded and unscheduled
  (about 60x slower than onnxruntime on these models); it is no fair peer without
  hours of auto-tuning per model.

An engine whose environment or package is missing is skipped with one line saying why.

Each worker loads/compiles once, runs ``--warmup`` runs and writes its outputs; the
driver checks them against onnxruntime's: ``max|out - ref| / max|ref|`` <= 1e-4 (every
engine runs fp32). An engine that fails the check is marked ``wrong`` in the tables, with
its error: its runs are still timed and kept in the JSON, but it gets no ratio, no bar
in the chart and is never the fastest peer. One that fails to load is marked ``failed``.

Timing is interleaved in rounds: each round asks every engine in turn (the order
rotates each round, so every engine follows every other) for one turn of
``--per-turn`` runs, until each has ``--runs``; the time is measured inside the worker
around the engine's inference call alone. Each turn starts with one more run that is
not kept: the first run after another engine's turn finds its caches and its idle
threads cold, and on this VM that costs an engine that sleeps between runs a lot
(onnxruntime on MobileNetV2, measured in one process: 5.8 ms back to back, 6.3 ms with
a 1 ms sleep between runs, 9.8 ms with 20 ms). Back-to-back runs are what every peer
reports and what a video loop sees. Workers idle on a blocking pipe read between their
turns. A thread pool that spins after a run would take the cores from the engine that
runs next: onnxruntime's spinning is off (``allow_spinning=0``), patcc's pool sleeps as
soon as a run ends, MNN's workers sleep between runs, ``OMP_WAIT_POLICY=PASSIVE`` is
set for any OpenMP pool; XNNPACK's pthreadpool, OpenVINO's TBB workers and
DeepSparse's threads have no switch. So after each turn the driver waits
``--pause-ms`` (default 2 ms) and measures the CPU time the idle worker burns in that
pause (``/proc/PID/task/*/schedstat``): the ``spin`` column shows it per engine, so a
pool that still spins through the pause is visible, not guessed. Measured here
(2-core Zen 4, 2 threads): OpenVINO's workers burn about 0.4-0.7 ms of CPU after each
run, every other engine under 0.05 ms.

Output: the machine (CPU, ISA, ``run.machine_info``), its sgemm peak
(``run.sgemm_rates``, start and end of the run) and patcc's target's FMA peak
(``peak.fma_peak``); a table with rows = engines (with versions) and columns = models,
each cell the median ms and the speed-up over onnxruntime (``ort_ms / engine_ms``, > 1:
faster); a table of each engine's time relative to patcc (``engine_ms / patcc_ms``,
> 1: patcc is faster) with the fastest peer; the spread (min, IQR) and the spin check.
``peers.json`` (every run's time, versions, configurations, correctness) and
``peers.png`` (``chart.make_peers_chart``) go to ``--out-dir`` (default
``benchmarks/results``). Exit status 1 if patcc failed or its output was wrong.

Usage: ``python benchmarks/peers.py [--runs 30] [--threads 2] [--models resnet18:6x,...]
[--engines patcc,onnxruntime,...] [--per-turn 3] [--pause-ms 2] [--out-dir DIR]``
"""

from __future__ import annotations

import argparse
import json
import os
import select
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from run import (  # benchmarks/run.py; this script's directory is on sys.path
    RESULTS_DIR,
    TOLERANCE,
    machine_info,
    parse_models,
    relative_error,
    sgemm_rates,
    summarize,
    target_record,
)

ROOT = Path(__file__).resolve().parent.parent
WORKER = Path(__file__).resolve().parent / "peer_worker.py"
BENCH_VENV = ROOT / ".venv-bench"
DEEPSPARSE_VENV = ROOT / ".venv-deepsparse"
UNAVAILABLE = "UNAVAILABLE"
"""A file the Makefile leaves in an optional venv whose install failed: its reason."""

DEFAULT_MODELS = ("resnet18:dense,resnet18:6x,vgg16:8x,resnet50:6x,mobilenet_v2:dense,"
                  "mobilenet_v2:dw-patterns+pw50,yolo_tiny:6x,unet_small:6x")
REFERENCE = "onnxruntime"
PATCC = "patcc"
LABELS = {"patcc": "patcc", "onnxruntime": "onnxruntime", "openvino": "OpenVINO",
          "mnn": "MNN", "mnn-sparse": "MNN", "executorch": "ExecuTorch",
          "deepsparse": "DeepSparse"}
SUFFIXES = {"mnn-sparse": " sparse", "executorch": " + XNNPACK"}
ENVIRONMENTS = {"patcc": "main", "onnxruntime": "main", "openvino": "bench", "mnn": "bench",
                "mnn-sparse": "bench", "executorch": "bench", "deepsparse": "deepsparse"}
ENGINE_NAMES = tuple(ENVIRONMENTS)
LOAD_TIMEOUT_S = 3 * 3600  # tuning vgg16 with patcc is the longest load
RUN_TIMEOUT_S = 600
PROBE_TIMEOUT_S = 300


@dataclass(frozen=True)
class Engine:
    """An engine to run: the adapter ``name`` in ``script`` (``peer_worker.py`` unless a
    test gives its own), run by ``python``; ``version`` once probed."""

    name: str
    python: str
    script: str = str(WORKER)
    version: str = ""

    @property
    def label(self) -> str:
        tuned = (" (tuned)" if os.environ.get("PATCC_TUNE") != "0" else " (untuned)") \
            if self.name == PATCC else ""
        return (f"{LABELS.get(self.name, self.name)} {self.version}".strip()
                + SUFFIXES.get(self.name, "") + tuned)


class WorkerError(RuntimeError):
    """A worker that died, timed out or answered nonsense."""


def cpu_ns(pid: int) -> int:
    """CPU time of every thread of process ``pid`` so far, in ns (0 where unreadable)."""
    total = 0
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/schedstat") as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            pass  # a thread that ended between listdir and open
    return total


class Worker:
    """One engine's process, driven over its stdin/stdout (``peer_worker.py``'s protocol);
    its stderr goes to ``workdir/worker.log``."""

    def __init__(self, engine: Engine, workdir: Path, env: dict[str, str]) -> None:
        self.engine = engine
        workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / "worker.log"
        self._log = self.log_path.open("w")
        self.proc = subprocess.Popen(
            [engine.python, engine.script, engine.name], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=self._log, text=True, cwd=ROOT, env=env)

    def request(self, line: str, timeout: float) -> dict[str, Any]:
        """Send one request line; its JSON reply. Raises WorkerError."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        try:
            self.proc.stdin.write(line + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError) as e:
            raise WorkerError(f"worker exited ({self.proc.poll()}): {self.log_tail()}") from e
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            self.close()
            raise WorkerError(f"no reply within {timeout:.0f} s; killed. {self.log_tail()}")
        reply = self.proc.stdout.readline()
        if not reply:
            self.proc.wait(timeout=30)
            raise WorkerError(f"worker exited with status {self.proc.returncode}: "
                              f"{self.log_tail()}")
        try:
            return dict(json.loads(reply))
        except ValueError as e:
            raise WorkerError(f"not a JSON reply: {reply[:200]!r}") from e

    def log_tail(self, lines: int = 3) -> str:
        self._log.flush()
        try:
            text = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return " | ".join(text[-lines:])[-600:] + f" (log: {self.log_path})"

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write("quit\n")
                self.proc.stdin.close()
                self.proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None and not stream.closed:
                try:
                    stream.close()
                except OSError:
                    pass
        self._log.close()


def worker_env(threads: int) -> dict[str, str]:
    """The workers' environment: thread counts for any OpenMP/BLAS pool, passive OpenMP
    waiting (no spinning), DeepSparse's analytics off."""
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(threads)
    env["OMP_WAIT_POLICY"] = "PASSIVE"
    env["NM_DISABLE_ANALYTICS"] = "1"
    return env


def engine_python(name: str, bench_python: Path, deepsparse_python: Path
                  ) -> tuple[str | None, str]:
    """(interpreter for engine ``name``, or None; why not)."""
    where = ENVIRONMENTS[name]
    if where == "main":
        return sys.executable, ""
    python = bench_python if where == "bench" else deepsparse_python
    venv = python.parent.parent
    marker = venv / UNAVAILABLE
    if marker.is_file():
        reason = marker.read_text().strip().splitlines()
        return None, reason[0] if reason else f"{venv.name} could not be installed"
    if not python.is_file():
        return None, f"no {python} (`make bench-peers` creates {venv.name})"
    return str(python), ""


def probe(engine: Engine, env: dict[str, str]) -> tuple[str | None, str]:
    """(version, "") if the engine imports in its environment, else (None, why)."""
    try:
        proc = subprocess.run([engine.python, engine.script, engine.name, "--probe"],
                              capture_output=True, text=True, timeout=PROBE_TIMEOUT_S,
                              cwd=ROOT, env=env)
    except subprocess.TimeoutExpired:
        return None, f"importing it took over {PROBE_TIMEOUT_S} s"
    for line in proc.stdout.splitlines():
        try:
            reply = json.loads(line)
        except ValueError:
            continue
        if reply.get("ok"):
            return str(reply["version"]), ""
        return None, str(reply.get("error", "unknown error"))
    tail = " ".join(proc.stderr.strip().splitlines()[-1:])
    return None, f"worker exited with status {proc.returncode}: {tail}"[:400]


def repo_relative(path: str | Path | None) -> str | None:
    """``path`` relative to the repository when inside it: the JSON is committed, and
    names no directory of the machine that wrote it."""
    if path is None:
        return None
    resolved = Path(path).absolute()
    return str(resolved.relative_to(ROOT)) if resolved.is_relative_to(ROOT) else str(path)


def resolve_engines(names: list[str], bench_python: Path, deepsparse_python: Path,
                    env: dict[str, str]) -> tuple[list[Engine], dict[str, dict[str, Any]]]:
    """The engines that can run (probed, with versions), and a record of every engine
    asked for: status ``ok`` or ``skipped`` with the reason (printed, one line each)."""
    engines, record = [], {}
    for name in names:
        python, why = engine_python(name, bench_python, deepsparse_python)
        version = None
        if python is not None:
            version, why = probe(Engine(name, python), env)
        if python is None or version is None:
            print(f"skipping {LABELS[name]}{SUFFIXES.get(name, '')}: {why}", flush=True)
            record[name] = {"status": "skipped", "reason": why,
                            "python": repo_relative(python)}
            continue
        engine = Engine(name, python, version=version)
        engines.append(engine)
        record[name] = {"status": "ok", "label": engine.label, "version": version,
                        "python": repo_relative(python), "environment": ENVIRONMENTS[name]}
    return engines, record


# --- one model ---------------------------------------------------------------------

def export_model(name: str, variant: str, workdir: Path) -> dict[str, Any]:
    """Export ``pruned_model(name, variant)`` to ONNX once, write the input, and count
    its MACs; the fields every worker's load request and the JSON row share."""
    import numpy as np
    import onnx

    from patcc.frontends.onnx import import_onnx
    from patcc.models import INPUT_SHAPES, OUTPUT_NAMES, export_onnx, pruned_model
    from patcc.stats import model_stats

    path = workdir / f"{name}-{variant}.onnx"
    export_onnx(pruned_model(name, variant), path, INPUT_SHAPES[name],
                output_names=OUTPUT_NAMES[name])
    graph = onnx.load(path, load_external_data=False).graph
    x = np.random.default_rng(0).uniform(-1, 1, INPUT_SHAPES[name]).astype(np.float32)
    input_path = workdir / f"{name}-{variant}-input.npy"
    np.save(input_path, x)
    totals = model_stats(import_onnx(path))["totals"]
    return {"model": name, "variant": variant, "onnx": str(path), "input": str(input_path),
            "input_shape": list(x.shape), "input_name": graph.input[0].name,
            "output_names": [o.name for o in graph.output],
            "dense_gmacs": totals["dense_macs"] / 1e9,
            "nonzero_gmacs": totals["nonzero_macs"] / 1e9}


def bench_model(model: dict[str, Any], engines: list[Engine], runs: int, threads: int,
                warmup: int, pause_ms: float, workdir: Path, env: dict[str, str],
                target: str = "x86_64", per_turn: int = 1) -> dict[str, Any]:
    """Load every engine on ``model`` (from ``export_model``), check its output against
    onnxruntime's, time those that loaded in interleaved rounds; the model's JSON row."""
    import numpy as np

    # The reference loads first, so every other engine is checked as it loads.
    engines = sorted(engines, key=lambda e: e.name != REFERENCE)
    row: dict[str, Any] = {k: model[k] for k in (
        "model", "variant", "input_shape", "dense_gmacs", "nonzero_gmacs")}
    results: dict[str, dict[str, Any]] = {}
    row["engines"] = results
    workers: dict[str, Worker] = {}
    reference: list[Any] | None = None
    try:
        for engine in engines:
            result: dict[str, Any] = {"label": engine.label, "version": engine.version}
            results[engine.name] = result
            spec = {**{k: model[k] for k in ("onnx", "model", "variant", "input",
                                             "input_name", "output_names")},
                    "threads": threads, "warmup": warmup, "target": target,
                    "workdir": str(workdir / engine.name)}
            worker = Worker(engine, workdir / engine.name, env)
            try:
                reply = worker.request("load " + json.dumps(spec), LOAD_TIMEOUT_S)
            except WorkerError as e:
                reply = {"ok": False, "error": str(e)}
            if not reply.get("ok"):
                result.update(status="failed", error=reply.get("error", "?"))
                print(f"  {engine.label}: failed: {result['error']}", flush=True)
                worker.close()
                continue
            result.update(config=reply["config"], load_s=reply["load_s"])
            outputs = [np.load(p) for p in reply["outputs"]]
            if engine.name == REFERENCE:
                reference = outputs
            if reference is None:
                result.update(status="failed", error="no onnxruntime output to check it by")
                worker.close()
                continue
            if len(outputs) != len(reference) or any(
                    o.shape != r.shape for o, r in zip(outputs, reference, strict=False)):
                error, ok = None, False
                result["error"] = (f"output shapes {[o.shape for o in outputs]}, reference "
                                   f"{[r.shape for r in reference]}")
            else:
                error = max(relative_error(o, r) for o, r in zip(outputs, reference,
                                                                 strict=True))
                ok = bool(error <= TOLERANCE)
            result["correctness"] = {"max_rel_error": error, "tolerance": TOLERANCE,
                                     "ok": ok}
            result["status"] = "ok" if ok else "wrong"
            workers[engine.name] = worker
            if not ok:
                differs = "in shape" if error is None else f"by {error:.2e} of max|ref|"
                print(f"  {engine.label}: output differs from onnxruntime's {differs} "
                      f"(> {TOLERANCE:g}): marked wrong", flush=True)
        times, idle = time_interleaved(workers, runs, pause_ms, results, per_turn)
    finally:
        for worker in workers.values():
            worker.close()
    for name, seconds in times.items():
        if results[name]["status"] == "failed":
            continue
        results[name]["latency_ms"] = summarize(seconds)
        if idle[name]:
            results[name]["idle_cpu_ms"] = summarize([ms / 1e3 for ms in idle[name]])
    add_ratios(row)
    return row


def time_interleaved(workers: dict[str, Worker], runs: int, pause_ms: float,
                     results: dict[str, dict[str, Any]], per_turn: int = 1
                     ) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Rounds of one turn per engine, the order rotated each round, until every engine
    has ``runs`` runs; a turn is one run not kept, then ``per_turn`` kept. After each
    turn, a ``pause_ms`` pause in which the idle worker's CPU time is measured. Returns
    (seconds per engine, CPU ms burnt in each pause per engine). An engine whose worker
    fails is marked ``failed`` in ``results`` and dropped; ``wrong`` ones are timed."""
    order = list(workers)
    times: dict[str, list[float]] = {name: [] for name in order}
    idle: dict[str, list[float]] = {name: [] for name in order}
    rounds = -(-runs // per_turn)
    for r in range(rounds):
        rotation = order[r % len(order):] + order[:r % len(order)] if order else []
        count = min(per_turn, runs - r * per_turn)
        for name in rotation:
            if results[name]["status"] == "failed":
                continue
            worker = workers[name]
            try:
                reply = worker.request(f"run {count + 1}", RUN_TIMEOUT_S)
                if not reply.get("ok"):
                    raise WorkerError(str(reply.get("error")))
            except WorkerError as e:
                results[name].update(status="failed", error=f"during the runs: {e}")
                print(f"  {results[name]['label']}: failed during the runs: {e}", flush=True)
                continue
            times[name].extend(float(t) for t in reply["times"][1:])
            if pause_ms > 0:
                before = cpu_ns(worker.proc.pid)
                time.sleep(pause_ms / 1e3)
                idle[name].append((cpu_ns(worker.proc.pid) - before) / 1e6)
    return times, idle


def add_ratios(row: dict[str, Any]) -> None:
    """Per timed engine: ``speedup_vs_onnxruntime`` = ort_ms / engine_ms (> 1: faster
    than onnxruntime) and ``time_vs_patcc`` = engine_ms / patcc_ms (> 1: patcc is
    faster); and the fastest peer (not patcc) with patcc's speed-up over it."""
    medians = {name: r["latency_ms"]["median"] for name, r in row["engines"].items()
               if r["status"] == "ok" and "latency_ms" in r}
    for name, ms in medians.items():
        r = row["engines"][name]
        if REFERENCE in medians:
            r["speedup_vs_onnxruntime"] = medians[REFERENCE] / ms
        if PATCC in medians:
            r["time_vs_patcc"] = ms / medians[PATCC]
    peers = {n: ms for n, ms in medians.items() if n != PATCC}
    if peers:
        best = min(peers, key=peers.__getitem__)
        row["fastest_peer"] = {"engine": best, "median_ms": peers[best]}
        if PATCC in medians:
            row["fastest_peer"]["patcc_speedup"] = peers[best] / medians[PATCC]


# --- tables ------------------------------------------------------------------------

def column(row: dict[str, Any]) -> str:
    """``resnet18 6x (1.81/0.42 GMAC)``: the model and its dense/non-zero GMACs."""
    def gmac(v: float) -> str:
        return f"{v:.2f}" if v >= 0.1 else f"{v:.2g}"

    return (f"{row['model']} {row['variant']} ({gmac(row['dense_gmacs'])}/"
            f"{gmac(row['nonzero_gmacs'])} GMAC)")


def engine_rows(rows: list[dict[str, Any]], engines: dict[str, dict[str, Any]]
                ) -> list[tuple[str, str]]:
    """(engine name, label) of every engine that ran on some model, reference first."""
    names = [n for n in engines if engines[n].get("status") == "ok"]
    names.sort(key=lambda n: (n != REFERENCE, n == PATCC, ENGINE_NAMES.index(n)
                              if n in ENGINE_NAMES else len(ENGINE_NAMES)))
    return [(n, engines[n]["label"]) for n in names]


def cell(result: dict[str, Any] | None, ratio_key: str, ms: bool = True) -> str:
    """A table cell: ``12.3 (1.20x)``, or why there is no time."""
    if result is None:
        return "n/a"
    if result.get("status") == "wrong":
        error = result["correctness"]["max_rel_error"]
        why = "shapes" if error is None else f"err {error:.1e}"
        lat = result.get("latency_ms")
        return f"wrong: {lat['median']:.2f} ms, {why}" if lat and ms else f"wrong ({why})"
    if result.get("status") == "failed" or "latency_ms" not in result:
        return "failed"
    ratio = result.get(ratio_key)
    ratio_text = f"{ratio:.2f}x" if ratio is not None else "-"
    return f"{result['latency_ms']['median']:.2f} ({ratio_text})" if ms else ratio_text


def markdown(header: list[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in body]
    return "\n".join(lines)


def format_main(rows: list[dict[str, Any]], engines: dict[str, dict[str, Any]]) -> str:
    """Median ms (speed-up over onnxruntime), rows = engines, columns = models."""
    body = [[label] + [cell(r["engines"].get(name), "speedup_vs_onnxruntime") for r in rows]
            for name, label in engine_rows(rows, engines)]
    return ("median ms (speed-up over onnxruntime: ort_ms / engine_ms, > 1 is faster)\n"
            + markdown(["engine"] + [column(r) for r in rows], body))


def format_vs_patcc(rows: list[dict[str, Any]], engines: dict[str, dict[str, Any]]) -> str:
    """engine_ms / patcc_ms per engine and model, and the fastest peer per model."""
    body = [[label] + [cell(r["engines"].get(name), "time_vs_patcc", ms=False) for r in rows]
            for name, label in engine_rows(rows, engines) if name != PATCC]
    best = []
    for r in rows:
        f = r.get("fastest_peer")
        best.append("-" if f is None or "patcc_speedup" not in f else
                    f"{engines[f['engine']]['label']}: {f['patcc_speedup']:.2f}x")
    body.append(["**fastest peer / patcc**"] + best)
    return ("each engine's time relative to patcc's (engine_ms / patcc_ms, > 1: patcc is "
            "faster)\n" + markdown(["engine"] + [f"{r['model']} {r['variant']}" for r in rows],
                                   body))


def format_spread(rows: list[dict[str, Any]], engines: dict[str, dict[str, Any]]) -> str:
    """min / IQR ms per engine and model, and the CPU the idle worker burnt per pause."""
    body = []
    for name, label in engine_rows(rows, engines):
        cells = []
        for r in rows:
            res = r["engines"].get(name, {})
            lat = res.get("latency_ms")
            cells.append(f"{lat['min']:.2f} / {lat['iqr']:.2f}" if lat else "-")
        spins = [r["engines"][name]["idle_cpu_ms"]["median"] for r in rows
                 if "idle_cpu_ms" in r["engines"].get(name, {})]
        cells.append(f"{max(spins):.2f}" if spins else "-")
        body.append([label] + cells)
    return ("spread: min / IQR ms; spin: CPU ms the idle worker used in the pause after "
            "a run (median per model, the largest shown; ~0: its threads sleep)\n"
            + markdown(["engine"] + [f"{r['model']} {r['variant']}" for r in rows]
                       + ["spin ms"], body))


# --- the run -----------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30, help="timed runs per engine")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=3, help="untimed runs after loading")
    parser.add_argument("--models", default=DEFAULT_MODELS, help="e.g. resnet18:6x,vgg16:8x")
    parser.add_argument("--engines", default=",".join(ENGINE_NAMES),
                        help=f"a subset of {','.join(ENGINE_NAMES)}")
    parser.add_argument("--per-turn", type=int, default=3,
                        help="runs kept per engine per turn (after one that is not)")
    parser.add_argument("--pause-ms", type=float, default=2.0,
                        help="pause after each turn before the next engine's (0: none)")
    parser.add_argument("--target", default="x86_64", help="patcc's target tag")
    parser.add_argument("--bench-python", type=Path, default=BENCH_VENV / "bin" / "python")
    parser.add_argument("--deepsparse-python", type=Path,
                        default=DEEPSPARSE_VENV / "bin" / "python")
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--sgemm-runs", type=int, default=20,
                        help="products per provider for the sgemm peak (best of them)")
    args = parser.parse_args(argv)
    if min(args.runs, args.threads, args.sgemm_runs, args.per_turn) < 1 or min(args.warmup,
                                                                 args.pause_ms) < 0:
        parser.error("--runs, --threads, --per-turn and --sgemm-runs must be >= 1, --warmup and "
                     "--pause-ms >= 0")
    names = [n.strip() for n in args.engines.split(",") if n.strip()]
    unknown = [n for n in names if n not in ENVIRONMENTS]
    if unknown or REFERENCE not in names:
        parser.error(f"--engines {args.engines!r}: unknown {unknown} or no {REFERENCE} "
                     f"(the reference); choose from {','.join(ENGINE_NAMES)}")
    models = parse_models(args.models)

    # Before numpy/torch are imported here: their BLAS/OpenMP pools read these once.
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, str(args.threads))
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from peak import fma_peak  # benchmarks/peak.py

    from patcc.backends.target import get_target
    from patcc.errors import PatccError

    try:
        target = get_target(args.target)
    except PatccError as e:
        parser.error(str(e))
    if not target.runs_here:
        parser.error(f"--target {args.target}: this CPU cannot run its code")
    env = worker_env(args.threads)
    load_start = os.getloadavg()[0]
    if load_start > 0.5:
        print(f"warning: load average {load_start:.2f} before the run: other work on this "
              "machine adds noise (see the IQR in the spread table)")
    info = machine_info()
    rates_start = sgemm_rates(args.threads, runs=args.sgemm_runs)
    fma = fma_peak(target, args.threads)
    print(f"{info['cpu']} ({info['cpus']} CPUs, {info['isa']}); sgemm peak at "
          f"{args.threads} threads {max(rates_start.values()):.1f} GFLOP/s ("
          + ", ".join(f"{k} {v:.0f}" for k, v in rates_start.items())
          + f"); {target.tag} FMA peak {fma:.1f} GFLOP/s", flush=True)
    engines, engine_record = resolve_engines(names, args.bench_python,
                                             args.deepsparse_python, env)
    print("engines: " + ", ".join(e.label for e in engines), flush=True)

    rows = []
    with tempfile.TemporaryDirectory(prefix="patcc-peers-") as tmp:
        for name, variant in models:
            workdir = Path(tmp) / f"{name}-{variant}"
            workdir.mkdir()
            start = time.perf_counter()
            model = export_model(name, variant, workdir)
            print(f"{name} {variant}: {model['dense_gmacs']:.2f} GMAC dense, "
                  f"{model['nonzero_gmacs']:.2f} non-zero", flush=True)
            row = bench_model(model, engines, args.runs, args.threads, args.warmup,
                              args.pause_ms, workdir, env, target.tag, args.per_turn)
            row["wall_s"] = time.perf_counter() - start
            rows.append(row)
    rates_end = sgemm_rates(args.threads, runs=args.sgemm_runs)
    fma = max(fma, fma_peak(target, args.threads))
    peak = max(*rates_start.values(), *rates_end.values())
    header = (f"peers: batch 1, {args.threads} threads, fp32, {args.runs} interleaved runs "
              f"per engine after {args.warmup} warm-up runs, in turns of {args.per_turn} "
              f"(after one not kept), {args.pause_ms:g} ms pause after each turn\n"
              f"machine: {info['cpu']}, {info['cpus']} CPUs, ISA "
              f"{info['isa']}, {info['platform']}; sgemm peak {peak:.1f} GFLOP/s at "
              f"{args.threads} threads (best of numpy, torch, onnxruntime, start and end); "
              f"{target.tag} FMA peak {fma:.1f} GFLOP/s; patcc target {target.tag} "
              f"({target.cpu})")
    print()
    print(header)
    for table in (format_main(rows, engine_record), format_vs_patcc(rows, engine_record),
                  format_spread(rows, engine_record)):
        print()
        print(table)
    skipped = {n: r["reason"] for n, r in engine_record.items() if r["status"] != "ok"}
    for name, why in skipped.items():
        print(f"not run: {LABELS[name]}{SUFFIXES.get(name, '')}: {why}")
    write_results(args, rows, engine_record, info, target, {
        "providers_start": rates_start, "providers_end": rates_end, "peak": peak,
        "fma": fma}, {"start": load_start, "end": os.getloadavg()[0]})
    patcc_ok = all(r["engines"].get(PATCC, {}).get("status", "ok") == "ok" for r in rows)
    return 0 if patcc_ok else 1


def write_results(args: argparse.Namespace, rows: list[dict[str, Any]],
                  engines: dict[str, dict[str, Any]], info: dict[str, Any], target: Any,
                  peak: dict[str, Any], load: dict[str, float]) -> None:
    """``peers.json`` and its chart ``peers.png`` in ``args.out_dir``."""
    from chart import make_peers_chart  # benchmarks/chart.py

    out_dir: Path = args.out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / "peers.json"
    json_path.write_text(json.dumps({
        "machine": {**info, "load_average_1min": load},
        "target": target_record(target), "sgemm_peak_gflops": peak,
        "threads": args.threads, "runs": args.runs,
        "warmup_runs": args.warmup, "per_turn": args.per_turn, "pause_ms": args.pause_ms,
        "tolerance": TOLERANCE,
        "patcc_tune": os.environ.get("PATCC_TUNE") != "0",
        "engines": engines, "results": rows,
    }, indent=1))
    png_path = out_dir / "peers.png"
    make_peers_chart(json_path, png_path)
    print(f"wrote {json_path} and {png_path}")


if __name__ == "__main__":
    sys.exit(main())
