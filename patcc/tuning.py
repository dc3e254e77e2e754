"""Per-layer tuning: time the schedules the cost model shortlists, on this machine, and
keep its choice unless another is faster beyond the noise of the measurement.

For each convolution with a choice (``conv_schedules``: the cheapest estimated
schedule and those close to it, of every kind), the tuner builds one profiling module
per layer holding a copy of the layer under each candidate schedule
(``candidate_graph``), compiles the modules in worker processes (one per core), then
loads them all in one child process and runs each module in rounds at the thread
count the library will use: every round runs every candidate once, so a change in
the machine's load falls on all of them alike, and each candidate's times are paired
round by round with those of the cost model's choice. Another candidate replaces the
cost model's choice only if it is faster in at least ``WIN_ROUNDS`` of the rounds and
its median time at least ``MIN_GAIN`` lower: a tuned model is never slower than the
untuned one by the machine's noise. ``--report`` says which layers the tuner changed
and where a faster median was within noise.

Results are cached in ``tuning.json`` in the user cache directory
(``$PATCC_CACHE_DIR``, else ``$XDG_CACHE_HOME/patcc``, else ``~/.cache/patcc``), one
entry per layer signature: the target CPU and features, the thread count, the
layer's geometry, its fused operations, the position of every non-zero weight (two
models pruned alike share entries, whatever their weight values) and a hash of the
code generator's sources (a changed kernel is timed again). An entry keeps every
candidate's times. A cache that cannot be read is set aside with a warning and
rebuilt; one that cannot be written costs the next compile its tuning time, nothing
else.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pickle
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from patcc.backends.llvm.artifact import BuildOptions, build
from patcc.backends.llvm.conv import conv_schedules
from patcc.backends.llvm.lowering import LoweringContext, Schedule, WeightBlob
from patcc.backends.target import Target
from patcc.errors import PatccError
from patcc.fileio import atomic_write, cache_dir
from patcc.ir.graph import Graph, TensorType
from patcc.ir.layers import Conv
from patcc.progress import progress_bar
from patcc.version import __version__

CACHE_FORMAT = 2
"""Bump when what an entry means changes; older files are then ignored."""

RUNS = 31
"""Timed rounds (after ``WARMUP_RUNS``); each runs every candidate of a layer once."""
WARMUP_RUNS = 3

WIN_ROUNDS = 0.75
"""A candidate replaces the cost model's choice only if it is faster in at least this
share of the rounds..."""
MIN_GAIN = 0.02
"""...and its median time is at least this fraction lower."""


@dataclass(frozen=True)
class LayerTuning:
    """What tuning decided for one layer: the schedule, every candidate's median time,
    and the verdict: ``"model"`` (the cost model's choice was fastest), ``"tuned"``
    (another was faster beyond the noise) or ``"noise"`` (another had a lower median,
    within the noise: the cost model's choice was kept)."""

    layer: str
    schedule: Schedule
    times_ms: dict[str, float]
    """Median milliseconds per candidate schedule (``str(schedule)``)."""
    cached: bool
    verdict: str = "model"
    model_choice: str = ""
    """The cost model's choice (``str(schedule)``), the first candidate."""

    @property
    def best_ms(self) -> float:
        return self.times_ms[str(self.schedule)]

    @property
    def model_ms(self) -> float:
        """The median time of the cost model's choice."""
        return self.times_ms[self.model_choice or str(self.schedule)]


def choose(candidates: list[Schedule], samples: dict[str, list[float]]
           ) -> tuple[Schedule, str]:
    """The schedule to keep of ``candidates`` (the cost model's choice first), from
    each one's times in paired rounds, and the verdict (see ``LayerTuning``)."""
    first = candidates[0]
    base = samples[str(first)]
    medians = {str(s): statistics.median(samples[str(s)]) for s in candidates}
    winners = []
    for s in candidates[1:]:
        times = samples[str(s)]
        rounds = sum(1 for a, b in zip(base, times, strict=True) if b < a) / len(times)
        if rounds >= WIN_ROUNDS and medians[str(s)] <= (1 - MIN_GAIN) * medians[str(first)]:
            winners.append(s)
    if winners:
        return min(winners, key=lambda s: medians[str(s)]), "tuned"
    fastest = min(candidates, key=lambda s: medians[str(s)])
    return first, "model" if fastest == first else "noise"


class TuningCache:
    """The measured times of every candidate of layer signatures, in one JSON file:
    signature -> ``str(schedule)`` -> milliseconds of each round."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path if path is not None else cache_dir() / "tuning.json"
        self.entries: dict[str, dict[str, list[float]]] = self._read()
        self._dirty: dict[str, dict[str, list[float]]] = {}

    def _read(self, warn: bool = True) -> dict[str, dict[str, list[float]]]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as e:
            if warn:
                warnings.warn(f"{self.path}: tuning cache unreadable ({e}); starting afresh",
                              stacklevel=3)
            return {}
        if not isinstance(data, dict) or data.get("format") != CACHE_FORMAT:
            return {}
        entries = data.get("entries")
        if not isinstance(entries, dict):
            return {}
        return {key: {str(s): [float(t) for t in ts] for s, ts in entry.items()}
                for key, entry in entries.items() if _well_formed(entry)}

    def get(self, key: str) -> dict[str, list[float]]:
        return dict(self.entries.get(key, {}))

    def put(self, key: str, samples: dict[str, list[float]]) -> None:
        self.entries[key] = dict(samples)
        self._dirty[key] = dict(samples)

    def save(self) -> None:
        """Merge this session's measurements into the file (another process may have
        written since it was read); a failure to write is a warning."""
        if not self._dirty:
            return
        merged = self._read(warn=False)
        merged.update(self._dirty)
        text = json.dumps({"format": CACHE_FORMAT, "entries": merged}, sort_keys=True)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(self.path, lambda f: f.write(text.encode()))
        except (OSError, PatccError) as e:
            warnings.warn(f"{self.path}: tuning cache not written ({e})", stacklevel=2)
            return
        self._dirty.clear()


def _well_formed(entry: object) -> bool:
    if not isinstance(entry, dict) or not entry:
        return False
    lengths = set()
    for times in entry.values():
        if not (isinstance(times, list) and times
                and all(isinstance(t, (int, float)) for t in times)):
            return False
        lengths.add(len(times))
    return len(lengths) == 1  # paired rounds


@lru_cache(maxsize=1)
def code_generator_fingerprint() -> str:
    """A hash of the code generator's sources: a kernel changed since a time was taken
    (a new release, or a developer's edit) makes that time stale."""
    root = Path(__file__).parent / "backends"
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        h.update(path.relative_to(root).as_posix().encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def layer_signature(layer: Conv, graph: Graph, target: Target, threads: int) -> str:
    """A stable key for everything that decides how fast each schedule of ``layer`` is."""
    shapes = graph.shapes
    h = hashlib.sha256()
    h.update(json.dumps({
        "patcc": __version__, "format": CACHE_FORMAT,
        "code": code_generator_fingerprint(),
        "target": [target.triple, target.cpu, target.features, target.vector_bits],
        "threads": threads, "inputs": [list(shapes[t]) for t in layer.inputs],
        "output": list(shapes[layer.outputs[0]]), "kernel": list(layer.kernel_shape),
        "strides": list(layer.strides), "pads": list(layer.pads),
        "dilations": list(layer.dilations), "groups": layer.groups,
        "activation": str(layer.activation), "sparsity": layer.sparsity.value,
    }, sort_keys=True).encode())
    h.update(np.packbits(layer.weight != 0).tobytes())
    if layer.filter_order is not None:
        h.update(np.ascontiguousarray(layer.filter_order).tobytes())
    return h.hexdigest()


def tune_graph(graph: Graph, target: Target, threads: int | None = None,
               cache: TuningCache | None = None, progress: bool = False
               ) -> dict[str, LayerTuning]:
    """The schedule of every conv of ``graph`` (after the backend passes) that has a
    choice, timed on this machine at ``threads`` threads (default: one per core, as
    the library runs by default)."""
    threads = threads or len(os.sched_getaffinity(0))  # as patcc_set_num_threads(0)
    cache = cache if cache is not None else TuningCache()
    ctx = LoweringContext(dict(graph.shapes), target, WeightBlob())
    work = []
    for layer in graph.convs():
        candidates = conv_schedules(layer, ctx)
        if len(candidates) > 1:
            work.append((layer, candidates, layer_signature(layer, graph, target, threads)))

    def measured(candidates: list[Schedule], key: str) -> bool:
        return set(cache.get(key)) == {str(s) for s in candidates}

    missing = [(layer, candidates) for layer, candidates, key in work
               if not measured(candidates, key)]
    if missing:
        timed = time_schedules(missing, graph, target, threads, progress=progress)
        for layer, _, key in work:
            if layer.name in timed:
                cache.put(key, timed[layer.name])
        cache.save()
    results: dict[str, LayerTuning] = {}
    fresh = {layer.name for layer, _ in missing}
    for layer, candidates, key in work:
        if not measured(candidates, key):
            continue  # not measured (the timing run failed): the cost model decides
        samples = cache.get(key)
        schedule, verdict = choose(candidates, samples)
        results[layer.name] = LayerTuning(
            layer.name, schedule, {s: statistics.median(t) for s, t in samples.items()},
            cached=layer.name not in fresh, verdict=verdict, model_choice=str(candidates[0]))
    return results


def single_layer_graph(layer: Conv, graph: Graph) -> Graph:
    """``layer`` alone: its tensor inputs become graph inputs, constants stay."""
    return candidate_graph(layer, graph, [None])[0]


def candidate_graph(layer: Conv, graph: Graph, schedules: list[Schedule | None]
                    ) -> tuple[Graph, dict[str, Schedule]]:
    """``layer`` once per schedule, side by side: copy ``i`` is named
    ``<name>#<i>``, reads the layer's inputs (graph inputs, constants stay) and writes
    its own graph output. Returns the graph and the copies' schedules (None: the
    cost model's choice) by layer name."""
    shapes = graph.shapes
    inputs = {t: TensorType(shapes[t]) for t in dict.fromkeys(layer.inputs)
              if t not in graph.constants}
    constants = {t: graph.constants[t] for t in layer.inputs if t in graph.constants}
    if len(schedules) == 1:
        copies = [layer]
    else:
        copies = [dataclasses.replace(layer, name=f"{layer.name}#{i}",
                                      outputs=(f"{layer.outputs[0]}#{i}",))
                  for i in range(len(schedules))]
    chosen = {copy.name: s for copy, s in zip(copies, schedules, strict=True) if s is not None}
    return Graph(inputs=inputs, layers=tuple(copies),
                 outputs=tuple(copy.outputs[0] for copy in copies), constants=constants,
                 name=f"tune_{layer.op}"), chosen


def time_schedules(work: list[tuple[Conv, list[Schedule]]], graph: Graph, target: Target,
                   threads: int, runs: int = RUNS, progress: bool = False
                   ) -> dict[str, dict[str, list[float]]]:
    """Milliseconds of each layer under each of its schedules, round by round: layer
    name -> ``str(schedule)`` -> one time per round.

    Each layer's candidates are compiled into one profiling module
    (``candidate_graph``) by worker processes, one per core; a child process loads
    them all and times them (the libraries and their thread pools go when it exits,
    and a crash costs the tuning, not the compiler). A failed run is a warning and an
    empty result.
    """
    with tempfile.TemporaryDirectory(prefix="patcc-tune-") as tmp:
        root = Path(tmp)
        jobs = []
        for i, (layer, schedules) in enumerate(work):
            candidates, chosen = candidate_graph(layer, graph, list(schedules))
            (root / f"{i}.job").write_bytes(pickle.dumps((candidates, target, chosen)))
            jobs.append((layer.name, [str(s) for s in schedules], i))
        if not _run_workers(root, len(jobs), progress):
            return {}
        manifest = {"threads": threads, "runs": runs,
                    "layers": [{"name": name, "schedules": schedules, "path": f"{i}.so"}
                               for name, schedules, i in jobs]}
        (root / "manifest.json").write_text(json.dumps(manifest))
        proc = subprocess.run([sys.executable, "-m", "patcc.tuning", "time", tmp],
                              capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        warnings.warn(f"tuning run failed (exit {proc.returncode}: {last}); the cost "
                      "model chooses instead", stacklevel=3)
        return {}
    result: dict[str, dict[str, list[float]]] = json.loads(proc.stdout)
    return result


def _run_workers(root: Path, jobs: int, progress: bool) -> bool:
    """Compile the ``jobs`` pickled candidate graphs of ``root`` in worker processes,
    one per core (each claims the next job); True when every library was written."""
    workers = min(jobs, len(os.sched_getaffinity(0)))
    procs = [subprocess.Popen([sys.executable, "-m", "patcc.tuning", "compile", str(root)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for _ in range(workers)]
    bar = progress_bar(jobs, progress, "tuning", "layer")
    done = 0
    while any(p.poll() is None for p in procs):
        time.sleep(0.1)
        now = sum(1 for i in range(jobs) if (root / f"{i}.so").exists())
        if bar is not None and now > done:
            bar.update(now - done)
        done = now
    if bar is not None:
        bar.close()
    failed = [p for p in procs if p.returncode != 0]
    if failed:
        last = (failed[0].stderr.read().strip().splitlines() if failed[0].stderr else [])
        warnings.warn(f"tuning build failed (exit {failed[0].returncode}: "
                      f"{last[-1] if last else 'no output'}); the cost model chooses "
                      "instead", stacklevel=4)
        return False
    return all((root / f"{i}.so").exists() for i in range(jobs))


def _compile_jobs(root: Path) -> None:
    """A worker of ``_run_workers``: claim jobs one at a time (an exclusively created
    claim file each) and write each one's profiling library."""
    for job in sorted(root.glob("*.job"), key=lambda p: int(p.stem)):
        try:
            os.close(os.open(job.with_suffix(".claim"), os.O_CREAT | os.O_EXCL))
        except FileExistsError:
            continue
        graph, target, schedules = pickle.loads(job.read_bytes())
        library = build(graph, target, BuildOptions(schedules, profile=True)).shared_object()
        partial = job.with_suffix(".part")
        partial.write_bytes(library)
        partial.rename(job.with_suffix(".so"))


def _time_manifest(directory: Path) -> dict[str, dict[str, list[float]]]:
    """The timing child of ``time_schedules``: run each layer's module in rounds."""
    from patcc.runtime import load

    manifest = json.loads((directory / "manifest.json").read_text())
    threads, runs = int(manifest["threads"]), int(manifest["runs"])
    rng = np.random.default_rng(0)
    out: dict[str, dict[str, list[float]]] = {}
    for entry in manifest["layers"]:
        model = load(directory / entry["path"], num_threads=threads)
        feeds = [rng.uniform(-1, 1, t.shape).astype(np.float32) for t in model.inputs.values()]
        # the outputs written in place: fresh output memory would put page faults
        # into the candidates' times
        written = {name: np.zeros(t.shape, np.float32) for name, t in model.outputs.items()}
        for _ in range(WARMUP_RUNS):
            model.run(feeds, written)
        rounds = []
        for _ in range(runs):
            before = model.layer_times()
            model.run(feeds, written)
            rounds.append((model.layer_times() - before) * 1e3)
        out[entry["name"]] = {s: [float(r[i]) for r in rounds]
                              for i, s in enumerate(entry["schedules"])}
    return out


if __name__ == "__main__":
    if sys.argv[1] == "compile":
        _compile_jobs(Path(sys.argv[2]))
    else:
        print(json.dumps(_time_manifest(Path(sys.argv[2]))))
