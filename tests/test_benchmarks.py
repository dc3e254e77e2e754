"""The benchmark machinery (benchmarks/run.py, benchmarks/chart.py) on a tiny model.

Runs the real script in a subprocess, as ``make bench`` does, on senet_tiny 6x with a
few runs, and checks what it writes. Nothing here is about speed: the benchmark is
only checked to measure, compute and record consistently.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
ENGINES = ("patcc", "onnxruntime", "torch")


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path, str]:
    """(bench.json contents, output dir, stdout) of a 3-run benchmark of senet_tiny 6x."""
    pytest.importorskip("matplotlib")
    pytest.importorskip("onnxruntime")
    out = tmp_path_factory.mktemp("bench")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--models", "senet_tiny:6x",
         "--scaling", "senet_tiny:6x", "--runs", "3", "--threads", "2", "--out-dir", str(out)],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads((out / "bench.json").read_text()), out, proc.stdout


def test_json_has_run_settings_and_peak(bench: tuple[dict, Path, str]) -> None:
    data, _, _ = bench
    assert data["threads"] == 2 and data["runs"] == 3
    assert data["machine"]["cpus"] >= 1 and data["machine"]["versions"]["patcc"]
    peak = data["sgemm_peak_gflops"]
    assert peak["start"] > 0 and peak["end"] > 0
    assert peak["peak"] == max(peak["start"], peak["end"])
    for when in ("start", "end"):  # the best of every provider measured, not one of them
        providers = peak[f"providers_{when}"]
        assert set(providers) == {"numpy", "torch", "onnxruntime"}
        assert peak[when] == max(providers.values())
    assert [(r["model"], r["variant"]) for r in data["results"]] == [("senet_tiny", "6x")]


def test_row_latencies_ratios_and_efficiency(bench: tuple[dict, Path, str]) -> None:
    data, _, _ = bench
    (row,) = data["results"]
    for engine in ENGINES:
        lat = row["latency_ms"][engine]
        assert lat["runs"] == len(lat["times"]) == 3
        assert min(lat["times"]) == pytest.approx(lat["min"])
        assert 0 < lat["min"] <= lat["q1"] <= lat["median"] <= lat["q3"]
        assert lat["iqr"] == pytest.approx(lat["q3"] - lat["q1"])
        gflops = 2 * row["nonzero_gmacs"] / (lat["median"] / 1e3)
        assert row["nonzero_gflops"][engine] == pytest.approx(gflops)
        assert row["fraction_of_peak"][engine] == pytest.approx(
            gflops / data["sgemm_peak_gflops"]["peak"])
    patcc_ms = row["latency_ms"]["patcc"]["median"]
    for peer in ("onnxruntime", "torch"):
        assert row["speedup"][peer] == pytest.approx(row["latency_ms"][peer]["median"] / patcc_ms)
    assert 0 < row["nonzero_gmacs"] < row["dense_gmacs"]  # 6x pattern-pruned


def test_row_correctness_and_compile_record(bench: tuple[dict, Path, str]) -> None:
    data, _, _ = bench
    (row,) = data["results"]
    assert 0 <= row["correctness"]["max_rel_error"] <= 1e-4
    assert row["correctness"]["ok"] is True
    compile_record = row["compile"]
    assert set(compile_record["seconds"]) >= {"import", "codegen", "llvm", "link"}
    assert compile_record["total_s"] >= sum(compile_record["seconds"].values()) * 0.99
    assert compile_record["workspace_bytes"] > 0


def test_thread_scaling_is_recorded(bench: tuple[dict, Path, str]) -> None:
    data, _, _ = bench
    scaling = data["results"][0]["thread_scaling"]
    one, two = (scaling["latency_ms"][n]["median"] for n in ("1", "2"))
    assert one > 0 and two > 0
    assert scaling["speedup"] == pytest.approx(one / two)


def test_time_by_kernel_covers_every_layer(bench: tuple[dict, Path, str]) -> None:
    data, _, stdout = bench
    (row,) = data["results"]
    kernels = row["kernels"]
    assert "pattern" in kernels  # senet_tiny 6x has pattern-pruned 3x3 convs
    assert all(k["layers"] >= 1 and k["ms"] > 0 for k in kernels.values())
    conv_macs = sum(k["nonzero_macs"] for k in kernels.values())
    assert conv_macs == pytest.approx(row["nonzero_gmacs"] * 1e9, rel=0.01)
    assert "pattern" in stdout.split("per-layer times of a profiling build")[0]


def test_table_is_printed_and_chart_is_a_png(bench: tuple[dict, Path, str]) -> None:
    data, out, stdout = bench
    assert "ort/patcc" in stdout and "senet_tiny 6x" in stdout
    assert f"{data['results'][0]['speedup']['onnxruntime']:.2f}" in stdout
    png = (out / "bench.png").read_bytes()
    assert png.startswith(PNG_SIGNATURE) and len(png) > 1000


def test_bad_models_option_is_rejected() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--models", "resnet18"],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )
    assert proc.returncode != 0
    assert "'resnet18' is not name:variant" in proc.stderr


def test_pruning_evidence_script_runs(tmp_path: Path) -> None:
    pytest.importorskip("sklearn")
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "pruning.py"), "--quick",
                           "--out-dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads((tmp_path / "pruning.json").read_text())
    assert result["dense_accuracy"] > 80  # the digits are learnt even in a smoke run
    methods = {(r["rate"], r["method"]) for r in result["pattern"]}
    assert len(methods) == 20
    for row in result["filters"]:  # the compact models compute the masked ones
        assert row["compact_vs_masked"] < 1e-4 and 0 < row["macs_kept"] < 1
    errors = result["resnet18_6x_output_error"]
    assert {"project", "admm", "admm-published"} <= set(errors)
    assert all(0 <= errors[m] < 10 for m in ("project", "admm", "admm-published"))
    assert len(result["ablation_8x"]) == 5
    assert "| rate | method |" in proc.stdout


def test_opencl_benchmark_script_runs(tmp_path: Path) -> None:
    pytest.importorskip("pyopencl")
    from patcc.errors import PatccError
    from patcc.runtime.opencl import select_device
    from support.tools import MISSING_TOOL

    try:
        select_device()
    except PatccError as e:
        pytest.skip(f"{MISSING_TOOL} an OpenCL device ({e})")
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "opencl.py"), "--models",
                           "senet_tiny:dense,senet_tiny:6x", "--runs", "2", "--out-dir",
                           str(tmp_path)], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads((tmp_path / "opencl.json").read_text())
    rows = {r["variant"]: r for r in result["rows"]}
    assert set(rows) == {"dense", "6x"} and all(r["ok"] for r in rows.values())
    for row in rows.values():  # over 2 runs the kinds' medians add up to the total's
        assert sum(v["ms"] for v in row["by_kind"].values()) == pytest.approx(
            row["kernel_ms"], rel=0.01, abs=0.01)
    assert "pattern" in rows["6x"]["by_kind"]
    assert "pattern" not in rows["dense"]["by_kind"]
    assert "speed-up vs dense" in proc.stdout
