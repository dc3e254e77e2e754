"""Draw ``bench.json`` (written by ``benchmarks/run.py``) as a PNG bar chart.

One group of bars per model: the median latency of patcc, onnxruntime and torch, with
the interquartile range as an error bar, each group annotated with the onnxruntime /
patcc ratio (> 1: patcc is faster). The latency axis is logarithmic, because the
models differ by more than 10x in cost. Uses matplotlib's Agg backend (no display).

Usage: ``python benchmarks/chart.py [bench.json] [bench.png]``
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


if __name__ == "__main__":
    args = sys.argv[1:]
    json_in = Path(args[0]) if args else RESULTS_DIR / "bench.json"
    png_out = Path(args[1]) if len(args) > 1 else json_in.with_suffix(".png")
    make_chart(json_in, png_out)
    print(f"wrote {png_out}")
