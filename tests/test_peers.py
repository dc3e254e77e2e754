"""The peers benchmark (benchmarks/peers.py, benchmarks/peer_worker.py) on a tiny model.

Only the engines of the project's own ``.venv`` run here (patcc and onnxruntime): the
real driver and worker processes, the line protocol, the output check and the JSON.
The other peers need ``make bench-peers``'s environments; that an engine whose
environment is missing is skipped with its reason is checked by pointing the driver
at an interpreter that does not exist. Nothing here is about speed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = ROOT / "benchmarks"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MODEL = "senet_tiny:6x"
RUNS = 3


@pytest.fixture(scope="module")
def peers_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path, str]:
    """(peers.json, output dir, stdout) of a 3-run patcc/onnxruntime run of senet_tiny 6x,
    with OpenVINO asked for from an environment that is not there."""
    out = tmp_path_factory.mktemp("peers")
    missing = out / "no-such-venv" / "bin" / "python"
    proc = subprocess.run(
        [sys.executable, str(BENCHMARKS / "peers.py"), "--models", MODEL,
         "--engines", "patcc,onnxruntime,openvino", "--bench-python", str(missing),
         "--runs", str(RUNS), "--per-turn", "2", "--threads", "2", "--pause-ms", "5",
         "--sgemm-runs", "3",
         "--out-dir", str(out)],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
        env={**os.environ, "PATCC_TUNE": "0"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads((out / "peers.json").read_text()), out, proc.stdout


def test_both_engines_checked_and_timed(peers_run: tuple[dict[str, Any], Path, str]) -> None:
    data, _, _ = peers_run
    assert data["runs"] == RUNS and data["threads"] == 2 and data["tolerance"] == 1e-4
    assert data["per_turn"] == 2
    assert str(ROOT) not in json.dumps(data)  # the JSON is committed: no machine paths
    (row,) = data["results"]
    assert (row["model"], row["variant"]) == ("senet_tiny", "6x")
    assert 0 < row["nonzero_gmacs"] < row["dense_gmacs"]  # 6x pattern-pruned
    assert set(row["engines"]) == {"patcc", "onnxruntime"}
    for name, result in row["engines"].items():
        assert result["status"] == "ok", (name, result)
        assert result["correctness"]["ok"] is True
        assert 0 <= result["correctness"]["max_rel_error"] <= 1e-4
        lat = result["latency_ms"]
        assert lat["runs"] == len(lat["times"]) == RUNS
        assert min(lat["times"]) == pytest.approx(lat["min"])
        assert 0 < lat["min"] <= lat["q1"] <= lat["median"] <= lat["q3"]
        # measured after every turn: 3 runs in turns of 2 and 1
        assert len(result["idle_cpu_ms"]["times"]) == 2
        assert result["load_s"] > 0 and result["config"]
    ort, patcc = row["engines"]["onnxruntime"], row["engines"]["patcc"]
    assert ort["correctness"]["max_rel_error"] == 0.0  # the reference itself
    assert ort["config"]["session.intra_op.allow_spinning"] == "0"
    assert ort["config"]["intra_op_num_threads"] == 2
    assert patcc["config"]["num_threads"] == 2 and patcc["config"]["tune"] is False
    ratio = ort["latency_ms"]["median"] / patcc["latency_ms"]["median"]
    assert patcc["speedup_vs_onnxruntime"] == pytest.approx(ratio)
    assert ort["time_vs_patcc"] == pytest.approx(ratio)
    assert ort["speedup_vs_onnxruntime"] == pytest.approx(1.0)
    assert row["fastest_peer"]["engine"] == "onnxruntime"
    assert row["fastest_peer"]["patcc_speedup"] == pytest.approx(ratio)


def test_header_engines_and_outputs(peers_run: tuple[dict[str, Any], Path, str]) -> None:
    data, out, stdout = peers_run
    assert data["machine"]["isa"] and data["machine"]["cpus"] >= 1
    peak = data["sgemm_peak_gflops"]
    assert peak["peak"] == max(*peak["providers_start"].values(),
                               *peak["providers_end"].values()) > 0
    assert peak["fma"] > 0
    engines = data["engines"]
    assert engines["patcc"]["status"] == engines["onnxruntime"]["status"] == "ok"
    assert engines["onnxruntime"]["version"] == data["machine"]["versions"]["onnxruntime"]
    assert engines["openvino"]["status"] == "skipped"
    assert "no-such-venv" in engines["openvino"]["reason"]
    assert [ln for ln in stdout.splitlines() if ln.startswith("skipping OpenVINO: ")]
    # One table row per engine that ran, labelled with its version.
    assert f"| onnxruntime {engines['onnxruntime']['version']} | " in stdout
    assert "| patcc 0.1.0 (untuned) | " in stdout
    assert (out / "peers.png").read_bytes().startswith(PNG_SIGNATURE)


FAKE_WORKER = """
import sys
sys.path.insert(0, {benchmarks!r})
import numpy as np
import peer_worker


class Wrong(peer_worker.OnnxruntimeAdapter):
    name = "wrong"

    def outputs(self):
        return [o + 0.01 * np.abs(o).max() for o in super().outputs()]


class Broken(peer_worker.OnnxruntimeAdapter):
    name = "broken"

    def load(self):
        raise RuntimeError("no kernel for this model")


sys.exit(peer_worker.main(sys.argv[1:], {{"wrong": Wrong, "broken": Broken}}))
"""


def test_wrong_and_failing_engines_are_flagged(tmp_path: Path) -> None:
    """An engine whose output is off by 1% of max|ref| is marked wrong (and gets no
    ratio); one whose load raises is marked failed with its error; the reference is
    unaffected."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import peers
    finally:
        sys.path.remove(str(BENCHMARKS))
    fake = tmp_path / "fake_worker.py"
    fake.write_text(FAKE_WORKER.format(benchmarks=str(BENCHMARKS)))
    model = peers.export_model("senet_tiny", "6x", tmp_path)
    engines = [peers.Engine("wrong", sys.executable, str(fake)),
               peers.Engine("broken", sys.executable, str(fake)),
               peers.Engine("onnxruntime", sys.executable)]
    row = peers.bench_model(model, engines, runs=2, threads=1, warmup=1, pause_ms=0,
                            workdir=tmp_path, env=peers.worker_env(1))
    ort, wrong, broken = (row["engines"][n] for n in ("onnxruntime", "wrong", "broken"))
    assert ort["status"] == "ok" and ort["latency_ms"]["runs"] == 2
    assert wrong["status"] == "wrong" and wrong["correctness"]["ok"] is False
    assert wrong["correctness"]["max_rel_error"] == pytest.approx(0.01, rel=1e-3)
    assert "speedup_vs_onnxruntime" not in wrong and "time_vs_patcc" not in wrong
    assert wrong["latency_ms"]["runs"] == 2  # timed, but kept out of every comparison
    assert row["fastest_peer"]["engine"] == "onnxruntime"
    assert broken["status"] == "failed" and "no kernel for this model" in broken["error"]
    assert peers.cell(wrong, "speedup_vs_onnxruntime").startswith("wrong: ")
    assert "err 1.0e-02" in peers.cell(wrong, "speedup_vs_onnxruntime")
    assert peers.cell(broken, "speedup_vs_onnxruntime") == "failed"
