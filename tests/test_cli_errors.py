"""Bad input: one line on stderr naming what and where, exit 2, nothing written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from patcc.cli import main


def tiny_model(weight: np.ndarray | None = None, batch: int | str = 1, height: int | str = 8,
               extra_node: onnx.NodeProto | None = None, opset: int = 17) -> onnx.ModelProto:
    """x -> Conv(3x3, 4 filters) -> Relu -> y, optionally followed by one more node."""
    w = np.ones((4, 3, 3, 3), np.float32) if weight is None else weight
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv_a", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["y" if extra_node is None else "r"],
                              name="relu_a")]
    if extra_node is not None:
        nodes.append(extra_node)
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, height, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 4, height, 8])],
        [numpy_helper.from_array(w, "w")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                             ir_version=8)


def save(model: onnx.ModelProto, path: Path) -> Path:
    path.write_bytes(model.SerializeToString())
    return path


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def assert_user_error(code: int, err: str, *needles: str) -> None:
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"expected one line, got:\n{err}"
    assert lines[0].startswith("patcc: error: ")
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"


@pytest.fixture()
def x_npy(tmp_path: Path) -> Path:
    path = tmp_path / "x.npy"
    np.save(path, np.ones((1, 3, 8, 8), np.float32))
    return path


def test_good_model_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                         x_npy: Path) -> None:
    model = save(tiny_model(), tmp_path / "m.onnx")
    code, out, err = run_cli(capsys, "run", str(model), "-i", str(x_npy),
                             "-o", str(tmp_path / "o.npz"))
    assert code == 0, err
    y = np.load(tmp_path / "o.npz")["y"]
    assert y.shape == (1, 4, 8, 8)
    assert y[0, 0, 4, 4] == 27.0 and y[0, 0, 0, 0] == 12.0  # interior and corner sums


def test_truncated_file(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                        x_npy: Path) -> None:
    data = tiny_model().SerializeToString()
    bad = tmp_path / "cut.onnx"
    bad.write_bytes(data[: len(data) // 2])
    out = tmp_path / "o.npz"
    code, _, err = run_cli(capsys, "run", str(bad), "-i", str(x_npy), "-o", str(out))
    assert_user_error(code, err, "cut.onnx", "not an ONNX model")
    assert not out.exists()


def test_not_an_onnx_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = tmp_path / "notes.onnx"
    text.write_text("this is a text file, not a model\n" * 20)
    code, _, err = run_cli(capsys, "inspect", str(text))
    assert_user_error(code, err, "notes.onnx", "not an ONNX model")


def test_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, "inspect", str(tmp_path / "nope.onnx"))
    assert_user_error(code, err, "nope.onnx", "no such file")


def test_unsupported_operator_names_op_and_node(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str],
                                                x_npy: Path) -> None:
    node = helper.make_node("Erf", ["r"], ["y"], name="erf_7")
    model = save(tiny_model(extra_node=node), tmp_path / "m.onnx")
    out = tmp_path / "o.npz"
    code, _, err = run_cli(capsys, "run", str(model), "-i", str(x_npy), "-o", str(out))
    assert_user_error(code, err, "'Erf'", "'erf_7'", "unsupported operator")
    assert not out.exists()
    code, _, err = run_cli(capsys, "inspect", str(model))
    assert_user_error(code, err, "'Erf'", "'erf_7'")


def test_unknown_dimension_needs_input_shape(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    model = save(tiny_model(batch="N", height="H"), tmp_path / "m.onnx")
    code, _, err = run_cli(capsys, "inspect", str(model))
    assert_user_error(code, err, "input 'x'", "'H'", "--input-shape x=")
    code, out, err = run_cli(capsys, "inspect", str(model), "--input-shape", "x=2x3x8x8")
    assert code == 0, err
    assert "x 2x3x8x8" in out


def test_symbolic_batch_defaults_to_one(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    model = save(tiny_model(batch="batch"), tmp_path / "m.onnx")
    code, out, err = run_cli(capsys, "inspect", "--json", str(model))
    assert code == 0, err
    assert '"x": [\n   1,\n   3,\n   8,\n   8\n  ]' in out


@pytest.mark.parametrize("spec", ["x=1x3xAx8", "1x3x8x8", "x=", "x=1x0x8x8"])
def test_bad_input_shape_spec(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                              spec: str) -> None:
    model = save(tiny_model(), tmp_path / "m.onnx")
    code, _, err = run_cli(capsys, "inspect", str(model), "--input-shape", spec)
    assert_user_error(code, err, repr(spec), "e.g. input=1x3x224x224")


def test_input_shape_contradicting_the_model(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    model = save(tiny_model(), tmp_path / "m.onnx")
    code, _, err = run_cli(capsys, "inspect", str(model), "--input-shape", "x=1x3x9x9")
    assert_user_error(code, err, "input 'x'", "contradicts")
    code, _, err = run_cli(capsys, "inspect", str(model), "--input-shape", "z=1x3x9x9")
    assert_user_error(code, err, "'z'", "['x']")


def test_nan_weight(tmp_path: Path, capsys: pytest.CaptureFixture[str], x_npy: Path) -> None:
    w = np.ones((4, 3, 3, 3), np.float32)
    w[2, 1, 0, 0] = np.nan
    model = save(tiny_model(weight=w), tmp_path / "m.onnx")
    out = tmp_path / "o.npz"
    code, _, err = run_cli(capsys, "run", str(model), "-i", str(x_npy), "-o", str(out))
    assert_user_error(code, err, "'conv_a'", "'w'", "NaN")
    assert not out.exists()


def test_input_file_of_wrong_shape(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = save(tiny_model(), tmp_path / "m.onnx")
    x = tmp_path / "x.npy"
    np.save(x, np.ones((1, 3, 9, 8), np.float32))
    out = tmp_path / "o.npz"
    code, _, err = run_cli(capsys, "run", str(model), "-i", str(x), "-o", str(out))
    assert_user_error(code, err, "input 'x'", "1x3x9x8", "expected 1x3x8x8")
    assert not out.exists()


def test_input_file_of_wrong_dtype_and_bad_names(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    model = save(tiny_model(), tmp_path / "m.onnx")
    x = tmp_path / "x.npy"
    np.save(x, np.ones((1, 3, 8, 8), np.float64))
    code, _, err = run_cli(capsys, "run", str(model), "-i", str(x), "-o", str(tmp_path / "o"))
    assert_user_error(code, err, "input 'x'", "float64", "float32")
    code, _, err = run_cli(capsys, "run", str(model), "-i", f"q={x}", "-o", str(tmp_path / "o"))
    assert_user_error(code, err, "'q'", "['x']")
    junk = tmp_path / "junk.npy"
    junk.write_text("not numpy")
    code, _, err = run_cli(capsys, "run", str(model), "-i", str(junk), "-o", str(tmp_path / "o"))
    assert_user_error(code, err, "junk.npy", "not a .npy")


def test_unsupported_opset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = save(tiny_model(opset=9), tmp_path / "m.onnx")
    code, _, err = run_cli(capsys, "inspect", str(model))
    assert_user_error(code, err, "opset 9", "11-21", "version_converter")


def test_output_directory_missing(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                  x_npy: Path) -> None:
    model = save(tiny_model(), tmp_path / "m.onnx")
    out = tmp_path / "no" / "such" / "o.npz"
    code, _, err = run_cli(capsys, "run", str(model), "-i", str(x_npy), "-o", str(out))
    assert_user_error(code, err, "directory does not exist")


def test_console_script_exit_status_and_debug(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00\x01garbage")
    cmd = [sys.executable, "-m", "patcc.cli", "inspect", str(bad)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "not an ONNX model" in proc.stderr
    debug = subprocess.run([*cmd[:3], "--debug", *cmd[3:]], capture_output=True, text=True,
                           check=False)
    assert debug.returncode == 2 and "Traceback" in debug.stderr
