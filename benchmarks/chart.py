"""Draw ``bench.json`` (written by ``benchmarks/run.py``) as a PNG bar chart.

One group of bars per model: the median latency of patcc, onnxruntime and torch, with
the interquartile range as an error bar, each group annotated with the onnxruntime /
patcc ratio (> 1: patcc is faster). The latency axis is logarithmic, because the
models differ by more than 10x in cost. Uses matplotlib's Agg backend (no display).

``make_peers_chart`` draws ``peers.json`` (``benchmarks/peers.py``): each engine's
speed-up over onnxruntime, grouped by model.

Usage: ``python benchmarks/chart.py [bench.json|peers.json] [OUT.png]``
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ENGINES = ("patcc", "onnxruntime", "torch")
COLOURS = {"patcc": "#2a7ab0", "onnxruntime": "#e08a2c", "torch": "#8a8a8a"}
RESULTS_DIR = Path(__file__).resolve().parent / "results"


def make_chart(json_path: str | Path, png_path: str | Path) -> None:
    """Read the benchmark results at ``json_path`` and write the chart to ``png_path``.

    Raises:
        KeyError: if the JSON lacks the ``results`` rows ``run.py`` writes.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = json.loads(Path(json_path).read_text())
    rows = data["results"]
    width = 0.8 / len(ENGINES)
    fig, ax = plt.subplots(figsize=(max(6.0, 2.2 * len(rows)), 4.8))
    for i, engine in enumerate(ENGINES):
        stats = [r["latency_ms"][engine] for r in rows]
        medians = [s["median"] for s in stats]
        spread = [[s["median"] - s["q1"] for s in stats], [s["q3"] - s["median"] for s in stats]]
        xs = [j + (i - 1) * width for j in range(len(rows))]
        ax.bar(xs, medians, width, yerr=spread, capsize=2, label=engine, color=COLOURS[engine])
        for x, s in zip(xs, stats, strict=True):  # above the error bar, not under it
            ax.text(x, s["q3"] * 1.08, f"{s['median']:.3g}", ha="center", va="bottom",
                    fontsize=7)
    for j, r in enumerate(rows):
        top = max(r["latency_ms"][e]["q3"] for e in ENGINES)
        mark = "" if r["correctness"]["ok"] else "\n(wrong result!)"
        ax.annotate(f"ort/patcc {r['speedup']['onnxruntime']:.2f}x{mark}", (j, top * 1.8),
                    ha="center", fontsize=8, fontweight="bold")
    ax.set_yscale("log")
    ax.set_ylim(top=ax.get_ylim()[1] * 3)
    ax.set_xticks(range(len(rows)), [f"{r['model']}\n{r['variant']}" for r in rows])
    ax.set_ylabel("median latency, ms (log scale; bars: IQR)")
    machine = data.get("machine", {})
    ax.set_title(f"batch 1, {data.get('threads', '?')} threads, {data.get('runs', '?')} runs "
                 f"each; {machine.get('cpu', '')}", fontsize=9)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=len(ENGINES), fontsize=8,
              frameon=False)
    fig.tight_layout()
    fig.savefig(png_path, dpi=120)
    plt.close(fig)


PEER_COLOURS = {"patcc": "#2a7ab0", "onnxruntime": "#e08a2c", "openvino": "#6a3d9a",
                "mnn": "#33a02c", "mnn-sparse": "#b2df8a", "executorch": "#e31a1c",
                "deepsparse": "#8a8a8a"}


def make_peers_chart(json_path: str | Path, png_path: str | Path) -> None:
    """Draw ``peers.json`` (``benchmarks/peers.py``) as grouped bars to ``png_path``.

    One group per model, one bar per engine: its speed-up over onnxruntime
    (``ort_ms / engine_ms``, > 1: faster; 1 is drawn as a line). An engine with no time
    on a model (wrong output, failed, not run) gets a labelled gap, not a bar.

    Raises:
        KeyError: if the JSON lacks the ``engines`` and ``results`` ``peers.py`` writes.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = json.loads(Path(json_path).read_text())
    rows = data["results"]
    engines = [name for name, e in data["engines"].items() if e.get("status") == "ok"]
    width = 0.8 / max(1, len(engines))
    fig, ax = plt.subplots(figsize=(max(7.0, 1.3 * len(rows) * max(1, len(engines)) / 3), 5))
    for i, name in enumerate(engines):
        offset = (i - (len(engines) - 1) / 2) * width
        for j, row in enumerate(rows):
            result = row["engines"].get(name, {})
            speedup = result.get("speedup_vs_onnxruntime")
            if speedup is None:
                ax.text(j + offset, 0.05, result.get("status", "n/a"), rotation=90,
                        ha="center", va="bottom", fontsize=6, color="#c00000")
                continue
            ax.bar(j + offset, speedup, width, color=PEER_COLOURS.get(name, "#444444"),
                   label=data["engines"][name]["label"])
            ax.text(j + offset, speedup + 0.02, f"{speedup:.2f}", ha="center", va="bottom",
                    fontsize=6, rotation=90)
    ax.axhline(1.0, color="black", linewidth=0.8)
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=True))
    ax.legend(unique.values(), unique.keys(), loc="upper center", bbox_to_anchor=(0.5, -0.16),
              ncol=min(4, len(unique)), fontsize=8, frameon=False)
    ax.set_xticks(range(len(rows)), [f"{r['model']}\n{r['variant']}" for r in rows],
                  fontsize=8)
    ax.set_ylabel("speed-up over onnxruntime (ort ms / engine ms)")
    ax.set_ylim(0, ax.get_ylim()[1] * 1.12)
    machine = data.get("machine", {})
    ax.set_title(f"batch 1, {data.get('threads', '?')} threads, fp32, median of "
                 f"{data.get('runs', '?')} interleaved runs; {machine.get('cpu', '')} "
                 f"({machine.get('isa', '')})", fontsize=9)
    fig.tight_layout()
    fig.savefig(png_path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    args = sys.argv[1:]
    json_in = Path(args[0]) if args else RESULTS_DIR / "bench.json"
    png_out = Path(args[1]) if len(args) > 1 else json_in.with_suffix(".png")
    if "engines" in json.loads(json_in.read_text()):  # peers.json, from peers.py
        make_peers_chart(json_in, png_out)
    else:
        make_chart(json_in, png_out)
    print(f"wrote {png_out}")
