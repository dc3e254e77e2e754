"""Per-layer tuning: time every schedule a layer can use, on this machine, keep the fastest.

For each convolution with a choice (``conv_schedules``: the direct kernel's register
blocks, the GEMM's tilings, dense against sparse), the tuner compiles a one-layer
model per candidate as a profiling build, runs the candidates in turn on random
inputs at the thread count the library will use, and keeps the lowest median time.
Only the host target is tuned; other targets take the cost model's choice.

Results are cached in ``tuning.json`` in the user cache directory
(``$PATCC_CACHE_DIR``, else ``$XDG_CACHE_HOME/patcc``, else ``~/.cache/patcc``), one
entry per layer signature: the target CPU and features, the thread count, the
layer's geometry, its fused operations, the position of every non-zero weight (two
models pruned alike share entries, whatever their weight values) and a hash of the
code generator's sources (a changed kernel is timed again). The entry
keeps each candidate's time, so a new candidate is timed alone. A cache that cannot
be read is set aside with a warning and rebuilt; one that cannot be written costs
the next compile its tuning time, nothing else.
"""

from __future__ import annotations

import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

import patcc
from patcc.backends.llvm.conv import conv_schedules
from patcc.backends.llvm.lowering import LoweringContext, Schedule, WeightBlob
from patcc.backends.target import Target
from patcc.fileio import atomic_write
from patcc.ir.graph import Graph, TensorType
from patcc.ir.layers import Conv

CACHE_FORMAT = 1
"""Bump when what an entry means changes; older files are then ignored."""

RUNS = 21
"""Timed runs of each candidate (after two warm-up runs), taken in turn."""


@dataclass(frozen=True)
class LayerTuning:
    """What tuning decided for one layer: the schedule and every candidate's time."""

    layer: str
    schedule: Schedule
    times_ms: dict[str, float]
    """Median milliseconds per candidate schedule (``str(schedule)``)."""
    cached: bool

    @property
    def best_ms(self) -> float:
        return self.times_ms[str(self.schedule)]


def cache_dir() -> Path:
    """Where patcc keeps its per-user cache."""
    if os.environ.get("PATCC_CACHE_DIR"):
        return Path(os.environ["PATCC_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "patcc"


class TuningCache:
    """The measured candidate times of layer signatures, in one JSON file."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path if path is not None else cache_dir() / "tuning.json"
        self.entries: dict[str, dict[str, float]] = self._read()
        self._dirty: dict[str, dict[str, float]] = {}

    def _read(self, warn: bool = True) -> dict[str, dict[str, float]]:
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
        return {k: {str(s): float(t) for s, t in v.items()} for k, v in entries.items()
                if isinstance(v, dict) and all(isinstance(t, (int, float)) for t in v.values())}

    def get(self, key: str) -> dict[str, float]:
        return dict(self.entries.get(key, {}))

    def put(self, key: str, times: dict[str, float]) -> None:
        self.entries.setdefault(key, {}).update(times)
        self._dirty.setdefault(key, {}).update(times)

    def save(self) -> None:
        """Merge this session's measurements into the file (another process may have
        written since it was read); a failure to write is a warning."""
        if not self._dirty:
            return
        merged = self._read(warn=False)
        for key, times in self._dirty.items():
            merged.setdefault(key, {}).update(times)
        text = json.dumps({"format": CACHE_FORMAT, "entries": merged}, sort_keys=True)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(self.path, lambda f: f.write(text.encode()))
        except (OSError, patcc.PatccError) as e:
            warnings.warn(f"{self.path}: tuning cache not written ({e})", stacklevel=2)
            return
        self._dirty.clear()


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
        "patcc": patcc.__version__, "format": CACHE_FORMAT,
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
    """The fastest schedule of every conv of ``graph`` (after the backend passes) that
    has a choice, timed on this machine at ``threads`` threads (default: one per
    core, as the library runs by default)."""
    threads = threads or len(os.sched_getaffinity(0))  # as patcc_set_num_threads(0)
    cache = cache if cache is not None else TuningCache()
    ctx = LoweringContext(dict(graph.shapes), target, WeightBlob())
    work = []
    for layer in graph.convs():
        options = conv_schedules(layer, ctx)
        if len(options) > 1:
            key = layer_signature(layer, graph, target, threads)
            work.append((layer, options, key, cache.get(key)))
    missing = [(layer, [s for s in options if str(s) not in times], key)
               for layer, options, key, times in work]
    missing = [(layer, todo, key) for layer, todo, key in missing if todo]
    if missing:
        measured = time_schedules([(layer, todo) for layer, todo, _ in missing], graph,
                                  target, threads, progress=progress)
        for layer, _, key in missing:
            if layer.name in measured:
                cache.put(key, measured[layer.name])
        cache.save()
    results: dict[str, LayerTuning] = {}
    for layer, options, key, _ in work:
        times = cache.get(key)
        if not all(str(s) in times for s in options):
            continue  # not measured (the timing run failed): the cost model decides
        known = {str(s): times[str(s)] for s in options}
        best = min(options, key=lambda s: known[str(s)])
        results[layer.name] = LayerTuning(layer.name, best, known,
                                          cached=all(layer is not m[0] for m in missing))
    return results


def single_layer_graph(layer: Conv, graph: Graph) -> Graph:
    """``layer`` alone: its tensor inputs become graph inputs, constants stay."""
    shapes = graph.shapes
    inputs = {t: TensorType(shapes[t]) for t in dict.fromkeys(layer.inputs)
              if t not in graph.constants}
    constants = {t: graph.constants[t] for t in layer.inputs if t in graph.constants}
    return Graph(inputs=inputs, layers=(layer,), outputs=(layer.outputs[0],),
                 constants=constants, name=f"tune_{layer.op}")


def time_schedules(work: list[tuple[Conv, list[Schedule]]], graph: Graph, target: Target,
                   threads: int, runs: int = RUNS, progress: bool = False
                   ) -> dict[str, dict[str, float]]:
    """Median milliseconds of each layer under each of its schedules: layer name ->
    ``str(schedule)`` -> ms.

    Every candidate is compiled as a one-layer profiling build; a child process loads
    them all and times them (the libraries and their thread pools go when it exits,
    and a crash costs the tuning, not the compiler). A layer's candidates run in
    turn, so that a change in the machine's load falls on all of them alike. A
    failed timing run is a warning and an empty result.
    """
    from patcc.compiler import build

    jobs = [(layer, schedule) for layer, schedules in work for schedule in schedules]
    with tempfile.TemporaryDirectory(prefix="patcc-tune-") as tmp:
        manifest: dict[str, Any] = {"threads": threads, "runs": runs, "layers": {}}
        for i, (layer, schedule) in enumerate(_progress(jobs, progress, "tuning")):
            path = Path(tmp) / f"{i}.so"
            compiled = build(single_layer_graph(layer, graph), target,
                             {layer.name: schedule}, profile=True)
            path.write_bytes(compiled.shared_object())
            manifest["layers"].setdefault(layer.name, {})[str(schedule)] = str(path)
        (Path(tmp) / "manifest.json").write_text(json.dumps(manifest))
        proc = subprocess.run([sys.executable, "-m", "patcc.tuning", str(tmp)],
                              capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        warnings.warn(f"tuning run failed (exit {proc.returncode}: {last}); the cost "
                      "model chooses instead", stacklevel=3)
        return {}
    result: dict[str, dict[str, float]] = json.loads(proc.stdout)
    return result


def _progress(items: list[Any], show: bool, what: str) -> Iterable[Any]:
    if not show or not items:
        return items
    from tqdm import tqdm

    return tqdm(items, desc=what, unit="candidate", file=sys.stderr, leave=False)


def _time_manifest(directory: Path) -> dict[str, dict[str, float]]:
    """The child process of ``time_schedules``: load and time what the manifest lists."""
    from patcc.runtime.native import load

    manifest = json.loads((directory / "manifest.json").read_text())
    threads, runs = int(manifest["threads"]), int(manifest["runs"])
    rng = np.random.default_rng(0)
    out: dict[str, dict[str, float]] = {}
    for layer, paths in manifest["layers"].items():
        models = {name: load(path, num_threads=threads) for name, path in paths.items()}
        first = next(iter(models.values()))
        feeds = [rng.uniform(-1, 1, t.shape).astype(np.float32) for t in first.inputs.values()]
        samples: dict[str, list[float]] = {name: [] for name in models}
        for model in models.values():
            for _ in range(2):
                model.run(feeds)
        for _ in range(runs):
            for name, model in models.items():
                before = float(model.layer_times()[0])
                model.run(feeds)
                samples[name].append((float(model.layer_times()[0]) - before) * 1e3)
        out[layer] = {name: statistics.median(t) for name, t in samples.items()}
    return out


if __name__ == "__main__":
    print(json.dumps(_time_manifest(Path(sys.argv[1]))))
