"""Model statistics for ``patcc inspect``: MACs, kernels kept, patterns, storage.

MACs count Conv and Dense layers, per image: dense = weight elements x output
positions, non-zero = non-zero weight elements x output positions.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from patcc.ir.graph import Graph
from patcc.ir.layers import Conv, Dense, Layer, format_shape
from patcc.ir.patterns import PatternLibrary
from patcc.ir.storage import csr_bytes
from patcc.passes.compress import compress_conv


def _layer_row(graph: Graph, layer: Layer) -> dict[str, Any]:
    out_shapes = [graph.shapes[t] for t in layer.outputs]
    row: dict[str, Any] = {
        "name": layer.name,
        "op": layer.op,
        "inputs": [list(graph.shapes[t]) for t in layer.inputs],
        "outputs": [list(s) for s in out_shapes],
        "dense_macs": 0,
        "nonzero_macs": 0,
    }
    if isinstance(layer, (Conv, Dense)):
        out = out_shapes[0]
        # output positions per image: spatial for conv, leading non-batch axes for dense
        positions = math.prod(out[2:]) if isinstance(layer, Conv) else math.prod(out[1:-1])
        nonzero = int((layer.weight != 0).sum())
        row.update(
            dense_macs=int(layer.weight.size) * positions,
            nonzero_macs=nonzero * positions,
            weights=int(layer.weight.size),
            nonzero_weights=nonzero,
            weight_bytes=4 * int(layer.weight.size + layer.bias.size),
        )
    if isinstance(layer, Conv) and (layer.pattern is not None or layer.is_depthwise):
        packed = layer.compressed if layer.compressed is not None else compress_conv(layer)
        row.update(compressed_bytes=packed.nbytes, csr_bytes=csr_bytes(layer.weight))
    if isinstance(layer, Conv):
        kept = layer.kept_kernels
        row.update(
            kernel=list(layer.kernel_shape),
            groups=layer.groups,
            sparsity=layer.sparsity.value,
            kernels_kept=int(kept.sum()),
            kernels_total=int(kept.size),
            patterns_used=list(layer.pattern.patterns_used) if layer.pattern else [],
        )
    return row


def model_stats(graph: Graph) -> dict[str, Any]:
    """Per-layer rows and totals, as JSON-serialisable data.

    Returns ``{"model", "inputs", "outputs", "layers": [...], "totals": {...}}`` where
    totals hold dense_macs, nonzero_macs, conv_compression (all conv weights over
    non-zero conv weights; None without a non-zero conv weight), num_patterns,
    pattern_library (masks as 0/1 grids), kernels kept/total, pattern_layers and weight bytes.
    """
    layers = [_layer_row(graph, layer) for layer in graph.layers]
    convs = list(graph.convs())
    conv_weights = sum(int(c.weight.size) for c in convs)
    conv_nonzero = sum(c.nonzero_weights for c in convs)
    library = graph.pattern_library
    totals = {
        "layers": len(layers),
        "dense_macs": sum(r["dense_macs"] for r in layers),
        "nonzero_macs": sum(r["nonzero_macs"] for r in layers),
        "conv_weights": conv_weights,
        "conv_nonzero_weights": conv_nonzero,
        "conv_compression": conv_weights / conv_nonzero if conv_nonzero else None,
        "kernels_kept": sum(r.get("kernels_kept", 0) for r in layers),
        "kernels_total": sum(r.get("kernels_total", 0) for r in layers),
        "pattern_layers": sum(1 for c in convs if c.pattern is not None),
        "num_patterns": len(library) if library is not None else 0,
        "pattern_library": [] if library is None else library.masks.astype(int).tolist(),
        "weight_bytes": sum(r.get("weight_bytes", 0) for r in layers),
        "compressed_bytes": sum(r.get("compressed_bytes", 0) for r in layers),
        "csr_bytes": sum(r.get("csr_bytes", 0) for r in layers),
    }
    return {
        "model": graph.name,
        "inputs": {n: list(t.shape) for n, t in graph.inputs.items()},
        "outputs": {n: list(graph.shapes[n]) for n in graph.outputs},
        "layers": layers,
        "totals": totals,
    }


def _si(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{unit}"
    return f"{n:.0f}"


def format_stats(stats: dict[str, Any]) -> str:
    """The human-readable table ``patcc inspect`` prints."""
    head = ("layer", "op", "output", "dense MACs", "nonzero MACs", "kernels", "style", "patterns")
    rows = [head]
    for r in stats["layers"]:
        kernels = f"{r['kernels_kept']}/{r['kernels_total']}" if "kernels_total" in r else ""
        rows.append((
            r["name"], r["op"], " ".join(format_shape(tuple(s)) for s in r["outputs"]),
            _si(r["dense_macs"]) if r["dense_macs"] else "",
            _si(r["nonzero_macs"]) if r["dense_macs"] else "",
            kernels, r.get("sparsity", ""),
            ",".join(map(str, r.get("patterns_used", []))),
        ))
    widths = [min(40, max(len(str(row[i])) for row in rows)) for i in range(len(head))]
    lines = ["  ".join(str(c)[:40].ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
             for row in rows]
    t = stats["totals"]
    ratio = t["dense_macs"] / t["nonzero_macs"] if t["nonzero_macs"] else math.inf
    ins = ", ".join(f"{n} {format_shape(tuple(s))}" for n, s in stats["inputs"].items())
    lines = [f"model {stats['model']}: inputs {ins}", *lines, ""]
    lines.append(
        f"MACs per image: dense {_si(t['dense_macs'])}, non-zero {_si(t['nonzero_macs'])} "
        f"({ratio:.2f}x fewer)"
    )
    compression = t["conv_compression"]
    lines.append(
        ("conv compression - " if compression is None
         else f"conv compression {compression:.2f}x ")
        + f"({t['conv_weights']} weights, {t['conv_nonzero_weights']} non-zero); "
        f"kernels kept {t['kernels_kept']}/{t['kernels_total']}; "
        f"weights {t['weight_bytes'] / 2**20:.2f} MiB"
    )
    lines.append(f"pattern layers {t['pattern_layers']}, library of {t['num_patterns']} patterns")
    if t["csr_bytes"]:
        lines.append(
            f"sparse storage of pattern/depthwise convs: compressed {t['compressed_bytes']} B, "
            f"CSR {t['csr_bytes']} B ({t['compressed_bytes'] / t['csr_bytes']:.2f}x)")
    if t["num_patterns"]:
        lines.append(PatternLibrary(np.array(t["pattern_library"], dtype=bool)).draw())
    return "\n".join(lines)
