"""Bad input: one line on stderr naming what and where, exit 2, nothing written."""

from __future__ import annotations

import io
import json
import os
import stat
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

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
    node = helper.make_node("Hardmax", ["r"], ["y"], name="hardmax_7")
    model = save(tiny_model(extra_node=node), tmp_path / "m.onnx")
    out = tmp_path / "o.npz"
    code, _, err = run_cli(capsys, "run", str(model), "-i", str(x_npy), "-o", str(out))
    assert_user_error(code, err, "'Hardmax'", "'hardmax_7'", "unsupported operator")
    assert not out.exists()
    code, _, err = run_cli(capsys, "inspect", str(model))
    assert_user_error(code, err, "'Hardmax'", "'hardmax_7'")


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
    model = save(tiny_model(opset=6), tmp_path / "m.onnx")
    code, _, err = run_cli(capsys, "inspect", str(model))
    assert_user_error(code, err, "opset 6", "7-28", "version_converter")


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


# ---------------------------------------------------------------------------------------
# Outputs: -o never destroys anything it should not (issue 17)
# ---------------------------------------------------------------------------------------

COMMANDS = ("compile", "run", "prune")


def snapshot(root: Path) -> dict[str, object]:
    """Everything under ``root``: file bytes and modes, link targets, kinds of the rest."""
    found: dict[str, object] = {}
    for path in sorted(root.rglob("*")):
        key = str(path.relative_to(root))
        if path.is_symlink():
            found[key] = ("link", os.readlink(path))
        elif path.is_file():
            found[key] = (path.read_bytes(), stat.S_IMODE(path.stat().st_mode))
        else:
            found[key] = stat.S_IFMT(path.lstat().st_mode)
    return found


def argv(command: str, model: Path, x: Path, out: str) -> list[str]:
    """The cheapest invocation of ``command`` on the tiny model writing ``-o out``."""
    if command == "compile":
        return ["compile", str(model), "-o", out, "--target", "x86_64-avx2", "-q"]
    if command == "run":
        return ["run", str(model), "-i", str(x), "-o", out, "-q"]
    return ["prune", str(model), "-o", out, "--method", "project", "--rate", "2.25", "-q"]


def assert_output_written(command: str, path: Path) -> None:
    """``path`` holds what ``command`` writes: an ELF object, an .npz, an ONNX model."""
    data = path.read_bytes()
    if command == "compile":
        assert data[:4] == b"\x7fELF"
    elif command == "run":
        with np.load(path) as outputs:
            assert outputs["y"].shape == (1, 4, 8, 8)
    else:
        assert onnx.load_from_string(data).graph.node


@pytest.fixture()
def model_onnx(tmp_path: Path) -> Path:
    return save(tiny_model(), tmp_path / "m.onnx")


@pytest.mark.parametrize("command", COMMANDS)
def test_output_that_is_a_directory(command: str, tmp_path: Path, model_onnx: Path,
                                    x_npy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "outdir").mkdir()
    before = snapshot(tmp_path)
    code, _, err = run_cli(capsys, *argv(command, model_onnx, x_npy, str(tmp_path / "outdir")))
    assert_user_error(code, err, "outdir", "is a directory")
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("command", COMMANDS)
def test_empty_output_name(command: str, tmp_path: Path, model_onnx: Path, x_npy: Path,
                           capsys: pytest.CaptureFixture[str],
                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    before = snapshot(tmp_path)
    code, _, err = run_cli(capsys, *argv(command, model_onnx, x_npy, ""))
    assert_user_error(code, err, "-o", "empty")
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize(("command", "spelling"), [
    *((command, spelling) for command in COMMANDS
      for spelling in ("same path", "symlink", "hard link")),
    ("run", "named input"),
])
def test_output_onto_an_input_is_refused(command: str, spelling: str, tmp_path: Path,
                                         model_onnx: Path, x_npy: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    victim = x_npy if command == "run" else model_onnx
    out = victim
    if spelling == "symlink":
        out = tmp_path / "alias"
        out.symlink_to(victim)
    elif spelling == "hard link":
        out = tmp_path / "alias"
        os.link(victim, out)
    args = argv(command, model_onnx, x_npy, str(out))
    if spelling == "named input":
        args[args.index(str(x_npy))] = f"x={x_npy}"
    before = snapshot(tmp_path)
    code, _, err = run_cli(capsys, *args)
    assert_user_error(code, err, str(out), "is also the input", victim.name)
    assert snapshot(tmp_path) == before


def test_run_output_onto_the_model_is_refused(tmp_path: Path, model_onnx: Path, x_npy: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    before = snapshot(tmp_path)
    code, _, err = run_cli(capsys, *argv("run", model_onnx, x_npy, str(model_onnx)))
    assert_user_error(code, err, "is also the input", "m.onnx")
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("command", COMMANDS)
def test_output_through_a_symlink_writes_its_target(command: str, tmp_path: Path,
                                                    model_onnx: Path, x_npy: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    real = tmp_path / "real"
    real.mkdir()
    target = real / "target"
    target.write_bytes(b"old contents")
    target.chmod(0o640)
    link = tmp_path / "link"
    link.symlink_to(target)
    code, _, err = run_cli(capsys, *argv(command, model_onnx, x_npy, str(link)))
    assert code == 0, err
    assert link.is_symlink() and os.readlink(link) == str(target)  # the link is kept
    assert_output_written(command, target)
    assert stat.S_IMODE(target.stat().st_mode) == 0o640  # and the target's mode
    assert [p.name for p in real.iterdir()] == ["target"]  # no temporary file left
    # A dangling link: its target is created.
    target.unlink()
    code, _, err = run_cli(capsys, *argv(command, model_onnx, x_npy, str(link)))
    assert code == 0, err
    assert link.is_symlink()
    assert_output_written(command, target)


def test_new_output_gets_the_usual_permissions(tmp_path: Path, model_onnx: Path, x_npy: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    umask = os.umask(0o022)
    try:
        code, _, err = run_cli(capsys, *argv("run", model_onnx, x_npy, str(tmp_path / "o.npz")))
    finally:
        os.umask(umask)
    assert code == 0, err
    # as any tool creates a file (0666 less the umask), not mkstemp's private 0600
    assert stat.S_IMODE((tmp_path / "o.npz").stat().st_mode) == 0o644


def test_output_onto_a_fifo_is_written_in_place(tmp_path: Path, model_onnx: Path, x_npy: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    # Not a regular file (a pipe, /dev/null, /dev/stdout): written through, never
    # replaced by a regular file.
    fifo = tmp_path / "pipe.npz"
    os.mkfifo(fifo)
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()), daemon=True)
    reader.start()
    try:
        code, _, err = run_cli(capsys, *argv("run", model_onnx, x_npy, str(fifo)))
    finally:
        try:  # release a reader still waiting for a writer
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:
            pass
        reader.join(timeout=10)
    assert code == 0, err
    assert stat.S_ISFIFO(fifo.lstat().st_mode), "the pipe was replaced by a file"
    with np.load(io.BytesIO(received[0])) as outputs:
        assert outputs["y"].shape == (1, 4, 8, 8)


# ---------------------------------------------------------------------------------------
# Inputs that are not regular files never block or read without bound (issue 17)
# ---------------------------------------------------------------------------------------


def test_run_refuses_a_fifo_model_at_once(tmp_path: Path, x_npy: Path) -> None:
    fifo = tmp_path / "model.so"
    os.mkfifo(fifo)
    out = tmp_path / "o.npz"
    try:
        proc = subprocess.run([sys.executable, "-m", "patcc.cli", "run", str(fifo), "-i",
                               str(x_npy), "-o", str(out)], capture_output=True, text=True,
                              check=False, timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("patcc run blocked reading a named pipe")
    assert_user_error(proc.returncode, proc.stderr, "model.so", "named pipe")
    assert not out.exists()


@pytest.mark.parametrize("kind", ["directory", "device"])
def test_run_refuses_a_model_that_is_not_a_file(kind: str, tmp_path: Path, x_npy: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    artifact = "/dev/zero" if kind == "device" else str(tmp_path)
    code, _, err = run_cli(capsys, "run", artifact, "-i", str(x_npy),
                           "-o", str(tmp_path / "o.npz"))
    needles = ("/dev/zero", "not a regular file") if kind == "device" else \
        (str(tmp_path), "is a directory", "manifest.json")
    assert_user_error(code, err, *needles)
    assert not (tmp_path / "o.npz").exists()


@pytest.mark.parametrize("kind", ["fifo", "directory", "device"])
def test_input_that_is_not_a_regular_file(kind: str, tmp_path: Path, model_onnx: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    if kind == "fifo":
        source = tmp_path / "x.npy"
        os.mkfifo(source)
        needle = "named pipe"
    elif kind == "directory":
        source = tmp_path / "x.npy"
        source.mkdir()
        needle = "is a directory"
    else:
        source, needle = Path("/dev/zero"), "not a regular file"
    out = tmp_path / "o.npz"
    code, _, err = run_cli(capsys, "run", str(model_onnx), "-i", str(source), "-o", str(out))
    assert_user_error(code, err, str(source), needle)
    assert not out.exists()


def test_npy_header_promising_more_than_the_file_holds(tmp_path: Path, model_onnx: Path,
                                                       capsys: pytest.CaptureFixture[str]
                                                       ) -> None:
    # A few bytes whose header claims 4 PiB: refused from the header, nothing allocated.
    huge = tmp_path / "huge.npy"
    with huge.open("wb") as f:
        np.lib.format.write_array_header_1_0(
            f, {"descr": "<f4", "fortran_order": False, "shape": (1 << 50,)})
        f.write(bytes(64))
    out = tmp_path / "o.npz"
    code, _, err = run_cli(capsys, "run", str(model_onnx), "-i", str(huge), "-o", str(out))
    assert_user_error(code, err, "huge.npy", "truncated", "4503599627370496 bytes")
    assert not out.exists()


# ---------------------------------------------------------------------------------------
# Command-line syntax errors are one line too (issue 17)
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("args", "needles"), [
    (["prune", "m.onnx", "-o", "p.onnx", "--method", "project", "--rate", "six"],
     ["prune", "--rate", "'six'"]),
    (["prune", "m.onnx", "-o", "p.onnx", "--method", "bogus"], ["--method", "'bogus'", "admm"]),
    (["prune", "m.onnx", "--method", "admm"], ["prune", "-o"]),
    (["compile", "m.onnx", "-o", "m.so", "--emit", "exe"], ["compile", "--emit", "'exe'"]),
    (["run", "m.onnx", "-i", "x.npy", "-o", "o.npz", "--threads", "many"],
     ["run", "--threads", "'many'"]),
    (["inspect"], ["inspect", "MODEL.onnx"]),
    (["frobnicate"], ["'frobnicate'", "compile"]),
    ([], ["COMMAND"]),
    (["--no-such-flag", "inspect", "m.onnx"], ["--no-such-flag"]),
])
def test_usage_errors_are_one_line(args: list[str], needles: list[str],
                                   capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, *args)
    assert_user_error(code, err, *needles)
    assert out == ""
    assert "--help" in err  # where to look for the usage


def test_help_still_prints_the_usage(capsys: pytest.CaptureFixture[str]) -> None:
    for args in (["--help"], ["prune", "--help"], ["run", "-h"]):
        with pytest.raises(SystemExit) as info:
            main(args)
        assert info.value.code == 0
        out = capsys.readouterr().out
        assert out.startswith("usage: patcc") and "options:" in out


# ---------------------------------------------------------------------------------------
# A corrupt OpenCL package manifest (issue 17)
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("corrupt", "needles"), [
    (lambda m: m.pop("precision"), ["'precision'"]),
    (lambda m: m.update(kernels={"a": 1}), ["'kernels'", "list"]),
    (lambda m: m["inputs"]["x"].pop("offset"), ["inputs", "'x'", "'offset'"]),
    (lambda m: m.update(weights="../../etc/passwd"), ["'weights'", "file name"]),
])
def test_corrupt_package_manifest(corrupt: Callable[[dict[str, Any]], object],
                                  needles: list[str], tmp_path: Path, model_onnx: Path,
                                  x_npy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    package = tmp_path / "m.ocl"
    code, _, err = run_cli(capsys, "compile", str(model_onnx), "-o", str(package), "--target",
                           "opencl-adreno", "-q")
    assert code == 0, err
    manifest = package / "manifest.json"
    document = json.loads(manifest.read_text())
    corrupt(document)
    manifest.write_text(json.dumps(document))
    out = tmp_path / "o.npz"
    code, _, err = run_cli(capsys, "run", str(package), "-i", str(x_npy), "-o", str(out))
    assert_user_error(code, err, "manifest.json", *needles)
    assert not out.exists()
    manifest.write_text("{\"format\": \"patcc-opencl\", ")  # cut short
    code, _, err = run_cli(capsys, "run", str(package), "-i", str(x_npy), "-o", str(out))
    assert_user_error(code, err, "manifest.json", "JSON")


def test_atomic_write_from_python_refuses_or_keeps_the_old_file(tmp_path: Path) -> None:
    # What CompiledModel.save and the tuning cache meet without the CLI's checks.
    from patcc.errors import PatccError
    from patcc.fileio import atomic_write

    for path, needle in ((tmp_path, "is a directory"), ("", "empty")):
        with pytest.raises(PatccError, match=needle):
            atomic_write(path, lambda f: f.write(b"new"))
    old = tmp_path / "old.bin"
    old.write_bytes(b"old")

    def fail(f: Any) -> None:
        f.write(b"half")
        raise RuntimeError("a bug halfway")

    with pytest.raises(RuntimeError):
        atomic_write(old, fail)
    assert [p.name for p in tmp_path.iterdir()] == ["old.bin"] and old.read_bytes() == b"old"


def test_package_whose_weights_are_a_pipe(tmp_path: Path, model_onnx: Path,
                                          x_npy: Path, capsys: pytest.CaptureFixture[str]
                                          ) -> None:
    package = tmp_path / "m.ocl"
    code, _, err = run_cli(capsys, "compile", str(model_onnx), "-o", str(package), "--target",
                           "opencl-adreno", "-q")
    assert code == 0, err
    (package / "weights.bin").unlink()
    os.mkfifo(package / "weights.bin")
    out = tmp_path / "o.npz"
    try:
        proc = subprocess.run([sys.executable, "-m", "patcc.cli", "run", str(package), "-i",
                               str(x_npy), "-o", str(out)], capture_output=True, text=True,
                              check=False, timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("patcc run blocked reading a package's weights from a named pipe")
    assert_user_error(proc.returncode, proc.stderr, "weights.bin", "not a regular file")
    assert not out.exists()
