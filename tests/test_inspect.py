"""``patcc inspect`` against an independent count on the torch model."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from patcc.cli import main
from patcc.models import INPUT_SHAPES


def independent_counts(module: nn.Module, input_shape: tuple[int, ...]) -> list[dict[str, int]]:
    """Per Conv2d/Linear, in execution order: MACs dense and non-zero, kernels kept."""
    rows: list[dict[str, int]] = []

    def hook(mod: nn.Module, _inputs: object, output: torch.Tensor) -> None:
        w = mod.weight.detach()
        positions = math.prod(output.shape[2:]) if isinstance(mod, nn.Conv2d) else 1
        row = {"dense_macs": w.numel() * positions,
               "nonzero_macs": int(torch.count_nonzero(w)) * positions}
        if isinstance(mod, nn.Conv2d):
            kept = w.reshape(w.shape[0], w.shape[1], -1).ne(0).any(dim=2)
            row.update(kernels_kept=int(kept.sum()), kernels_total=kept.numel())
        rows.append(row)

    handles = [m.register_forward_hook(hook) for m in module.modules()
               if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        module(torch.zeros(input_shape))
    for h in handles:
        h.remove()
    return rows


def test_inspect_resnet18_6x_counts_exactly(exported_model,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    module, path = exported_model("resnet18", "6x")
    assert main(["inspect", "--json", str(path)]) == 0
    report = json.loads(capsys.readouterr().out)
    expected = independent_counts(module, INPUT_SHAPES["resnet18"])
    got = [r for r in report["layers"] if r["op"] in ("Conv", "Dense")]
    assert len(got) == len(expected) == 21  # 20 convs (3 downsample) + fc
    for ours, ref in zip(got, expected, strict=True):
        for key, value in ref.items():
            assert ours[key] == value, (ours["name"], key)
    totals = report["totals"]
    assert totals["dense_macs"] == sum(r["dense_macs"] for r in expected)
    assert totals["nonzero_macs"] == sum(r["nonzero_macs"] for r in expected)
    assert totals["kernels_kept"] == sum(r.get("kernels_kept", 0) for r in expected)
    assert 1 <= totals["num_patterns"] <= 8
    assert len(totals["pattern_library"]) == totals["num_patterns"]
    for mask in totals["pattern_library"]:
        assert sum(map(sum, mask)) == 4 and mask[1][1] == 1  # centre plus three
    # 16 pruned 3x3 convs keep 37.5% of their kernels (rounded up per layer)
    pattern_rows = [r for r in got if r.get("sparsity") == "pattern"]
    assert len(pattern_rows) == 16
    for r in pattern_rows:
        assert r["kernels_kept"] == math.ceil(0.375 * r["kernels_total"])
    assert totals["dense_macs"] / totals["nonzero_macs"] > 2.5


def test_inspect_table_shows_totals_and_library(exported_model,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    _, path = exported_model("resnet18", "6x")
    assert main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert "MACs per image: dense 1.81G" in out
    assert "library of" in out and ".#." in out
