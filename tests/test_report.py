"""``patcc compile --report``: per-layer choices, loads/FMA, measured times."""

from __future__ import annotations

from pathlib import Path

import pytest

import patcc
from patcc.cli import main
from patcc.report import layer_rows


def test_report_rows_have_kernels_loads_and_times(exported_model) -> None:
    _, path = exported_model("senet_tiny", "6x")
    rows = layer_rows(patcc.compile(path), runs=3)
    pattern = [r for r in rows if r["kernel"] == "pattern"]
    assert pattern, "the pruned 3x3 convs run the pattern kernel"
    for r in pattern:
        assert 0 < r["loads_per_fma"] < 2
        assert r["loads_per_fma"] <= r["loads_per_fma_without_lre"]
        assert 0 < r["compressed_bytes"] < r["weight_bytes"]
    # Row blocks share the vectors of vertically overlapping taps somewhere.
    assert any(r["loads_per_fma"] < r["loads_per_fma_without_lre"] for r in pattern)
    assert all(r["ms"] >= 0 for r in rows) and sum(r["ms"] for r in rows) > 0
    assert all(r["nonzero_gflops"] > 0 for r in rows if r.get("nonzero_macs"))


def test_report_flag_prints_the_table(exported_model, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    _, path = exported_model("senet_tiny", "6x")
    out = tmp_path / "m.so"
    assert main(["compile", str(path), "-o", str(out), "--report"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith("layer") and "loads/FMA" in line for line in lines)
    assert any(line.startswith("total") and "ms per run" in line for line in lines)
    assert any("vfmadd" in line for line in lines if "pattern" in line)  # the loops
    assert out.exists()
