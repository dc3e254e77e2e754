"""The compiled artifact and its runtime: determinism, the --emit kinds, the C ABI
driven from a C program, the Python loader's errors, threads, and the CLI.

The oracle for the model's numbers is the reference interpreter; binutils
(``readelf``, ``nm``) and the system C compiler judge the artifacts.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import patcc
from patcc.backends.target import X86_AVX512_ISA
from patcc.cli import main
from patcc.compiler import CompiledModel
from patcc.frontends.onnx import import_onnx
from patcc.runtime import run
from patcc.runtime.native import NativeModel
from support.cli import assert_user_error
from support.compare import assert_close, run_with_threads
from support.onnx_gen import CENTRE_PLUS_3_MASKS
from support.tools import require_tool

ABI_FUNCTIONS = {
    "patcc_run", "patcc_workspace_size", "patcc_model_info", "patcc_set_num_threads",
    "patcc_get_num_threads", "patcc_abi_version",
}
X_SHAPE, Z_SHAPE = (1, 3, 8, 8), (1, 4, 4, 4)

Reference = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]
"""The reference interpreter on the test model: feeds -> outputs."""


def two_input_model() -> onnx.ModelProto:
    """x -> pattern-pruned 3x3 conv -> relu -> r; y = strided dense conv(r) + z;
    pooled = flatten(global average pool(r)). Two inputs and two outputs, and a
    workspace (r is an intermediate), so every part of the ABI is exercised."""
    rng = np.random.default_rng(0)
    masks = CENTRE_PLUS_3_MASKS[[0, 5, 17, 40]]
    w1 = rng.standard_normal((4, 3, 3, 3)) * masks[rng.integers(4, size=(4, 3))]
    w2 = rng.standard_normal((4, 4, 3, 3))
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv_pattern", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r"], name="relu"),
        helper.make_node("Conv", ["r", "w2"], ["c2"], name="conv_dense", pads=[1, 1, 1, 1],
                         strides=[2, 2]),
        helper.make_node("Add", ["c2", "z"], ["y"], name="add"),
        helper.make_node("GlobalAveragePool", ["r"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["pooled"], name="flatten"),
    ]
    graph = helper.make_graph(
        nodes, "native_test",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, X_SHAPE),
         helper.make_tensor_value_info("z", TensorProto.FLOAT, Z_SHAPE)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, (1, 4, 4, 4)),
         helper.make_tensor_value_info("pooled", TensorProto.FLOAT, (1, 4))],
        [numpy_helper.from_array(w1.astype(np.float32), "w1"),
         numpy_helper.from_array(w2.astype(np.float32), "w2")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def random_feeds(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"x": rng.standard_normal(X_SHAPE).astype(np.float32),
            "z": rng.standard_normal(Z_SHAPE).astype(np.float32)}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("native")


@pytest.fixture(scope="module")
def onnx_path(workdir: Path) -> Path:
    path = workdir / "model.onnx"
    path.write_bytes(two_input_model().SerializeToString())
    return path


@pytest.fixture(scope="module")
def compiled(onnx_path: Path) -> CompiledModel:
    return patcc.compile(onnx_path)


@pytest.fixture(scope="module")
def so_path(compiled: CompiledModel, workdir: Path) -> Path:
    path = workdir / "model.so"
    compiled.save(path)
    return path


@pytest.fixture(scope="module")
def native(so_path: Path) -> NativeModel:
    return patcc.load(so_path, num_threads=2)


@pytest.fixture(scope="module")
def reference(onnx_path: Path) -> Reference:
    graph = import_onnx(onnx_path)
    return lambda feeds: run(graph, feeds)


def test_model_uses_the_intended_kernels(compiled: CompiledModel) -> None:
    # The fixture model is meant to cover the pattern kernel and a workspace.
    kernels = {c.layer.name: c.kernel for c in compiled.plan.codes}
    assert kernels["conv_pattern"] == "pattern"
    assert kernels["conv_dense"] == "gemm+planes"
    assert compiled.workspace_size > 0


def test_native_matches_interpreter(native: NativeModel, reference: Reference) -> None:
    feeds = random_feeds(1)
    expected = reference(feeds)
    got = native(**feeds)
    assert set(got) == {"y", "pooled"}
    for name in expected:
        assert_close(got[name], expected[name], name)
    # Positional inputs, and .run with a list, mean the same thing.
    positional = native(feeds["x"], feeds["z"])
    listed = native.run([feeds["x"], feeds["z"]])
    for name in expected:
        np.testing.assert_array_equal(positional[name], got[name])
        np.testing.assert_array_equal(listed[name], got[name])


def test_loaded_signature(native: NativeModel, compiled: CompiledModel) -> None:
    assert {n: t.shape for n, t in native.inputs.items()} == {"x": X_SHAPE, "z": Z_SHAPE}
    assert {n: t.shape for n, t in native.outputs.items()} == {"y": (1, 4, 4, 4),
                                                               "pooled": (1, 4)}
    assert all(t.dtype == "float32" for t in [*native.inputs.values(),
                                              *native.outputs.values()])
    assert native.info == compiled.info
    assert native.info["workspace_size"] == compiled.workspace_size


# ---------------------------------------------------------------------------------------
# Determinism and the --emit kinds
# ---------------------------------------------------------------------------------------

EMIT_ALL = """
import sys
import patcc
from patcc.backends.target import X86_AVX512_ISA
model = patcc.compile(sys.argv[1])
for kind in ("so", "obj", "llvm", "asm", "header"):
    model.save(f"{sys.argv[2]}.{kind}", kind)
"""


@pytest.fixture(scope="module")
def emitted_by_subprocess(onnx_path: Path, workdir: Path) -> dict[int, Path]:
    """Every kind emitted by two fresh interpreters with different string-hash seeds
    (set and dict iteration orders differ), as ``{seed: path prefix}``."""
    prefixes = {}
    for seed in (1, 2):
        prefix = workdir / f"seed{seed}"
        env = {**os.environ, "PYTHONHASHSEED": str(seed)}
        subprocess.run([sys.executable, "-c", EMIT_ALL, str(onnx_path), str(prefix)],
                       check=True, env=env)
        prefixes[seed] = prefix
    return prefixes


@pytest.mark.parametrize("kind", ["so", "obj", "llvm", "asm", "header"])
def test_compile_is_deterministic(kind: str, onnx_path: Path, tmp_path: Path,
                                  emitted_by_subprocess: dict[int, Path],
                                  capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / f"cli.{kind}"
    code = main(["compile", str(onnx_path), "-o", str(out), "--emit", kind, "-q"])
    assert code == 0, capsys.readouterr().err
    assert capsys.readouterr().out == ""  # -q
    ours = out.read_bytes()
    assert len(ours) > 0
    for seed, prefix in emitted_by_subprocess.items():
        theirs = Path(f"{prefix}.{kind}").read_bytes()
        assert ours == theirs, f"--emit {kind} differs from the compile with hash seed {seed}"


def test_emit_obj_is_a_relocatable_elf(compiled: CompiledModel, tmp_path: Path) -> None:
    readelf = require_tool("readelf", "apt-get install binutils")
    nm = require_tool("nm", "apt-get install binutils")
    obj = tmp_path / "model.o"
    obj.write_bytes(compiled.emit("obj"))
    header = subprocess.run([readelf, "-h", str(obj)], capture_output=True, text=True,
                            check=True).stdout
    assert re.search(r"^\s*Type:\s+REL ", header, re.MULTILINE), header
    assert re.search(r"^\s*Machine:\s+Advanced Micro Devices X86-64", header, re.MULTILINE)
    symbols = subprocess.run([nm, "--defined-only", str(obj)], capture_output=True,
                             text=True, check=True).stdout
    global_text = {line.split()[-1] for line in symbols.splitlines()
                   if line.split()[1] == "T"}
    assert ABI_FUNCTIONS <= global_text, symbols


def test_emit_llvm_and_asm(compiled: CompiledModel) -> None:
    llvm = compiled.emit("llvm").decode()
    # The optimised module: LLVM may add return attributes (``define range(i32 0, 3)
    # i32 @patcc_run(``), so match the return type and name, not the exact line.
    assert re.search(r"^define [^@\n]*\bi32 @patcc_run\(ptr [^,]*, ptr [^,]*, ptr [^,]*, i64 ",
                     llvm, re.MULTILINE), [ln for ln in llvm.splitlines() if "patcc_run" in ln]
    for name in ABI_FUNCTIONS:
        assert re.search(rf"^define .*@{name}\(", llvm, re.MULTILINE), name
    asm = compiled.emit("asm").decode()
    assert re.search(r"^patcc_run:", asm, re.MULTILINE)
    assert ".globl\tpatcc_run" in asm or ".globl patcc_run" in asm


def test_emit_header_compiles(compiled: CompiledModel, tmp_path: Path) -> None:
    cc = require_tool("cc", "apt-get install gcc")
    header = tmp_path / "model.h"
    header.write_bytes(compiled.emit("header"))
    text = header.read_text()
    assert "#define PATCC_NUM_INPUTS 2" in text and "#define PATCC_NUM_OUTPUTS 2" in text
    assert f"#define PATCC_WORKSPACE_SIZE {compiled.workspace_size}u" in text
    assert '#define PATCC_INPUT1_NAME "z"' in text
    assert "#define PATCC_OUTPUT0_SHAPE {1, 4, 4, 4}" in text
    source = tmp_path / "use.c"
    # Included twice: the include guard must hold.
    source.write_text('#include "model.h"\n#include "model.h"\n'
                      "int main(void) { return (int)patcc_workspace_size(); }\n")
    subprocess.run([cc, "-std=c11", "-Wall", "-Wextra", "-Werror", "-pedantic",
                    "-fsyntax-only", f"-I{tmp_path}", str(source)], check=True)


def test_exported_symbols_are_exactly_the_abi(so_path: Path) -> None:
    nm = require_tool("nm", "apt-get install binutils")
    out = subprocess.run([nm, "-D", "--defined-only", str(so_path)], capture_output=True,
                         text=True, check=True).stdout
    names = {line.split()[-1] for line in out.splitlines() if line.strip()}
    assert names == ABI_FUNCTIONS, out


# ---------------------------------------------------------------------------------------
# The C ABI from C
# ---------------------------------------------------------------------------------------

C_DRIVER = r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "model.h"

_Static_assert(PATCC_NUM_INPUTS == 2 && PATCC_NUM_OUTPUTS == 2, "the test model");
_Static_assert(PATCC_OK == 0 && PATCC_ERR_NULL == 1 && PATCC_ERR_WORKSPACE == 2
               && PATCC_ERR_THREADS == 3, "documented error codes");

#define CHECK(cond, ...) do { if (!(cond)) { fprintf(stderr, __VA_ARGS__); \
    fputc('\n', stderr); return 1; } } while (0)

static int read_floats(const char *path, float *buf, size_t n) {
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    size_t got = fread(buf, sizeof(float), n, f);
    fclose(f);
    return got == n;
}

static float x[PATCC_INPUT0_SIZE], z[PATCC_INPUT1_SIZE];
static float y0[PATCC_OUTPUT0_SIZE], y1[PATCC_OUTPUT1_SIZE];

int main(int argc, char **argv) {
    CHECK(argc == 4, "usage: %s X.bin Z.bin OUT.bin", argv[0]);
    CHECK(read_floats(argv[1], x, PATCC_INPUT0_SIZE), "cannot read %s", argv[1]);
    CHECK(read_floats(argv[2], z, PATCC_INPUT1_SIZE), "cannot read %s", argv[2]);
    const float *const inputs[] = {x, z};
    float *const outputs[] = {y0, y1};

    CHECK(patcc_abi_version() == PATCC_ABI_VERSION, "abi %d", (int)patcc_abi_version());
    size_t size = patcc_workspace_size();
    CHECK(size == PATCC_WORKSPACE_SIZE && size > 0, "workspace %zu", size);
    const char *info = patcc_model_info();
    CHECK(info != NULL && strstr(info, "\"" PATCC_INPUT1_NAME "\"") != NULL, "info %s", info);

    size_t bytes = (size + 64 + 63) / 64 * 64;  /* room for a misaligned view too */
    unsigned char *ws = aligned_alloc(64, bytes);
    CHECK(ws != NULL, "aligned_alloc");
    int32_t rc;
    rc = patcc_run(NULL, outputs, ws, size);
    CHECK(rc == 1, "NULL inputs: %d", (int)rc);
    rc = patcc_run(inputs, NULL, ws, size);
    CHECK(rc == 1, "NULL outputs: %d", (int)rc);
    rc = patcc_run(inputs, outputs, NULL, size);
    CHECK(rc == 2, "NULL workspace: %d", (int)rc);
    rc = patcc_run(inputs, outputs, ws, size - 1);
    CHECK(rc == 2, "small workspace: %d", (int)rc);
    rc = patcc_run(inputs, outputs, ws + 4, size);
    CHECK(rc == 2, "misaligned workspace: %d", (int)rc);

    CHECK(patcc_get_num_threads() == 1, "default threads %d", (int)patcc_get_num_threads());
    rc = patcc_set_num_threads(65);
    CHECK(rc == 3, "65 threads: %d", (int)rc);
    rc = patcc_set_num_threads(-1);
    CHECK(rc == 3, "-1 threads: %d", (int)rc);
    CHECK(patcc_get_num_threads() == 1, "a rejected count changed it");
    rc = patcc_set_num_threads(2);
    CHECK(rc == 0 && patcc_get_num_threads() == 2, "2 threads: %d", (int)rc);

    rc = patcc_run(inputs, outputs, ws, size);
    CHECK(rc == 0, "run: %d", (int)rc);
    FILE *f = fopen(argv[3], "wb");
    CHECK(f != NULL, "cannot write %s", argv[3]);
    CHECK(fwrite(y0, sizeof(float), PATCC_OUTPUT0_SIZE, f) == PATCC_OUTPUT0_SIZE, "write");
    CHECK(fwrite(y1, sizeof(float), PATCC_OUTPUT1_SIZE, f) == PATCC_OUTPUT1_SIZE, "write");
    fclose(f);
    free(ws);
    puts("ok");
    return 0;
}
"""


def test_c_program_uses_the_abi(compiled: CompiledModel, so_path: Path,
                                native: NativeModel,
                                tmp_path: Path) -> None:
    cc = require_tool("cc", "apt-get install gcc")
    (tmp_path / "model.h").write_bytes(compiled.emit("header"))
    (tmp_path / "driver.c").write_text(C_DRIVER)
    exe = tmp_path / "driver"
    # Linked against the .so (not dlopen'ed): the header's prototypes must match.
    subprocess.run([cc, "-std=c11", "-Wall", "-Wextra", "-Werror", f"-I{tmp_path}",
                    str(tmp_path / "driver.c"), str(so_path), "-o", str(exe)], check=True)
    feeds = random_feeds(2)
    feeds["x"].tofile(tmp_path / "x.bin")
    feeds["z"].tofile(tmp_path / "z.bin")
    result = subprocess.run([str(exe), str(tmp_path / "x.bin"), str(tmp_path / "z.bin"),
                             str(tmp_path / "out.bin")], capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "ok\n"
    raw = np.fromfile(tmp_path / "out.bin", np.float32)
    assert raw.size == 4 * 4 * 4 + 4
    native.num_threads = 2
    expected = native(**feeds)
    # Same library, same thread count: the same bits.
    np.testing.assert_array_equal(raw[:64].reshape(1, 4, 4, 4), expected["y"])
    np.testing.assert_array_equal(raw[64:].reshape(1, 4), expected["pooled"])


# ---------------------------------------------------------------------------------------
# Python runtime errors
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("feeds", "needles"), [
    pytest.param({"x": np.zeros((1, 3, 8, 9), np.float32), "z": np.zeros(Z_SHAPE, np.float32)},
                 ("'x'", "1x3x8x9", "1x3x8x8"), id="wrong-shape"),
    pytest.param({"x": np.zeros(X_SHAPE, np.float64), "z": np.zeros(Z_SHAPE, np.float32)},
                 ("'x'", "float64", "float32"), id="wrong-dtype"),
    pytest.param({"x": np.zeros(X_SHAPE, np.float32), "z": np.zeros((4, 4), np.float32)},
                 ("'z'", "4x4", "1x4x4x4"), id="wrong-rank"),
    pytest.param({"x": np.zeros(X_SHAPE, np.float32), "q": np.zeros(Z_SHAPE, np.float32)},
                 ("'q'",), id="unknown-name"),
    pytest.param({"x": np.zeros(X_SHAPE, np.float32)}, ("'z'", "missing"), id="missing"),
])
def test_bad_inputs_raise_naming_the_input(native: NativeModel, feeds: dict[str, np.ndarray],
                                           needles: tuple[str, ...]) -> None:
    with pytest.raises(patcc.PatccError) as info:
        native(**feeds)
    for needle in needles:
        assert needle in str(info.value), str(info.value)
    with pytest.raises(patcc.PatccError):
        native.run(feeds)


def test_wrong_number_of_positional_inputs(native: NativeModel) -> None:
    with pytest.raises(patcc.PatccError, match=r"\['x', 'z'\]"):
        native(np.zeros(X_SHAPE, np.float32))
    with pytest.raises(patcc.PatccError, match="not both"):
        native(np.zeros(X_SHAPE, np.float32), z=np.zeros(Z_SHAPE, np.float32))


def test_non_contiguous_inputs(native: NativeModel, reference: Reference) -> None:
    feeds = random_feeds(3)
    strided = {n: np.asfortranarray(v) for n, v in feeds.items()}
    assert not strided["x"].flags.c_contiguous
    got = native(**strided)
    expected = reference(feeds)
    for name in expected:
        assert_close(got[name], expected[name], name)


LOAD_AND_RUN = """
import sys
import numpy as np
import patcc
from patcc.backends.target import X86_AVX512_ISA
try:
    model = patcc.load(sys.argv[1])
except patcc.PatccError as e:
    print("PatccError:", e)
else:
    model.run({n: np.zeros(t.shape, np.float32) for n, t in model.inputs.items()})
    print("loaded")
"""


def load_in_subprocess(path: Path) -> str:
    """What ``patcc.load(path)`` does, in a child process so a crash fails the test
    instead of killing pytest: "PatccError: ..." or "loaded"."""
    result = subprocess.run([sys.executable, "-c", LOAD_AND_RUN, str(path)],
                            capture_output=True, text=True, check=False, timeout=120)
    assert result.returncode == 0, (f"patcc.load({path.name}) crashed the process "
                                    f"(status {result.returncode}): {result.stderr[-2000:]}")
    return result.stdout.strip()


def test_load_a_text_file(tmp_path: Path) -> None:
    path = tmp_path / "notes.so"
    path.write_text("not a shared object\n" * 10)
    with pytest.raises(patcc.PatccError, match="notes.so"):
        patcc.load(path)


def test_load_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(patcc.PatccError, match="nope.so"):
        patcc.load(tmp_path / "nope.so")


def test_load_a_shared_object_that_is_not_patcc(tmp_path: Path) -> None:
    cc = require_tool("cc", "apt-get install gcc")
    source = tmp_path / "other.c"
    source.write_text("int other_function(int x) { return x + 1; }\n")
    lib = tmp_path / "other.so"
    subprocess.run([cc, "-shared", "-fPIC", str(source), "-o", str(lib)], check=True)
    with pytest.raises(patcc.PatccError, match="other.so") as info:
        patcc.load(lib)
    assert "not a patcc model" in str(info.value)


def test_load_a_foreign_architecture(so_path: Path, tmp_path: Path) -> None:
    data = bytearray(so_path.read_bytes())
    data[18:20] = (183).to_bytes(2, "little")  # e_machine = EM_AARCH64
    path = tmp_path / "arm.so"
    path.write_bytes(bytes(data))
    with pytest.raises(patcc.PatccError, match="aarch64"):
        patcc.load(path)


@pytest.mark.parametrize("keep", [
    pytest.param(lambda n: 16, id="16-bytes"),
    pytest.param(lambda n: 64, id="elf-header-only"),
    # regressions: a cut inside a segment made dlopen's mapping die of SIGBUS; a cut
    # in the section headers loaded as if whole
    pytest.param(lambda n: 1000, id="1000-bytes"),
    pytest.param(lambda n: n // 2, id="half"),
    pytest.param(lambda n: n - 1, id="last-byte-cut"),
])
def test_load_a_truncated_model(so_path: Path, tmp_path: Path,
                                keep: Callable[[int], int]) -> None:
    data = so_path.read_bytes()
    path = tmp_path / "cut.so"
    path.write_bytes(data[:keep(len(data))])
    outcome = load_in_subprocess(path)
    assert outcome.startswith("PatccError:"), outcome
    assert "cut.so" in outcome


def corrupt_model_info(so_path: Path, tmp_path: Path, old: bytes, new: bytes) -> Path:
    """A copy of the model whose embedded model-info JSON (a constant string) has
    ``old`` replaced by ``new`` of the same length."""
    assert len(old) == len(new)
    data = so_path.read_bytes()
    start = data.rfind(b"{", 0, data.index(b'"abi_version"'))
    end = data.index(b"\0", start)
    info = data[start:end]
    assert info.count(old) >= 1, info
    path = tmp_path / "corrupt.so"
    path.write_bytes(data[:start] + info.replace(old, new, 1) + data[end:])
    return path


@pytest.mark.parametrize(("old", "new", "needles"), [
    (b'{"abi_version"', b'["abi_version"', ["not valid JSON"]),
    (b'{"abi_version"', b'\xff"abi_version"', ["not valid JSON"]),
    (b'"inputs"', b'"inpXts"', ["'inputs' is missing"]),
    (b'"name": "x"', b'"name": 123', ["inputs[0]: 'name' is 123, expected str"]),
    (b'"shape": [1', b'"shape": {1', ["not valid JSON"]),
    (b'"dtype": "float32"', b'"dtype": "floaX32"', ["'dtype'", "not a numpy type"]),
    (b'"tag"', b'"taX"', ["target: 'tag' is missing"]),
    (b'"workspace_size": ', b'"workspace_size":-', ["'workspace_size' is -"]),
    (b'"layers": ', b'"layers":"', ["not valid JSON"]),
])
def test_load_a_model_with_corrupt_info(so_path: Path, tmp_path: Path, old: bytes, new: bytes,
                                        needles: list[str],
                                        capsys: pytest.CaptureFixture[str]) -> None:
    path = corrupt_model_info(so_path, tmp_path, old, new)
    with pytest.raises(patcc.PatccError) as info:
        patcc.load(path)
    for needle in [str(path), "corrupt model info", "recompile", *needles]:
        assert needle in str(info.value)
    x, z = tmp_path / "x.npy", tmp_path / "z.npy"
    np.save(x, np.zeros(X_SHAPE, np.float32))
    np.save(z, np.zeros(Z_SHAPE, np.float32))
    code, _, err = cli(capsys, "run", str(path), "-i", str(x), "-i", str(z), "-o",
                       str(tmp_path / "o.npz"))
    assert_user_error(code, err, "corrupt.so", "corrupt model info")
    assert not (tmp_path / "o.npz").exists()


# ---------------------------------------------------------------------------------------
# Threads
# ---------------------------------------------------------------------------------------


def test_thread_counts_give_identical_results(native: NativeModel, reference: Reference) -> None:
    feeds = random_feeds(4)
    got = run_with_threads(native, feeds, threads=(1, 2, 0))
    expected = reference(feeds)
    for name in expected:
        assert_close(got[name], expected[name], name)
    native.num_threads = 0  # one per core
    assert 1 <= native.num_threads <= 64
    assert native.num_threads == min(64, os.sysconf("SC_NPROCESSORS_ONLN"))
    for bad in (65, -1):
        with pytest.raises(patcc.PatccError, match=str(bad)):
            native.num_threads = bad
    native.num_threads = 2


def test_load_with_thread_count(so_path: Path) -> None:
    one = patcc.load(so_path, num_threads=1)
    assert one.num_threads == 1
    with pytest.raises(patcc.PatccError, match="65"):
        patcc.load(so_path, num_threads=65)


def test_two_loads_of_one_file_keep_their_own_thread_counts(so_path: Path) -> None:
    # The loader maps a file once, so both objects drive one library, whose thread
    # count is a global: each must set its own before it runs (issue 17).
    one = patcc.load(so_path, num_threads=1)
    two = patcc.load(so_path, num_threads=2)
    assert (one.num_threads, two.num_threads) == (1, 2)
    library = ctypes.CDLL(str(so_path))  # the very library both objects run
    library.patcc_get_num_threads.restype = ctypes.c_int32
    feeds = random_feeds(7)
    by_one = one.run(feeds)
    assert library.patcc_get_num_threads() == 1
    by_two = two.run(feeds)
    assert library.patcc_get_num_threads() == 2
    one.run(feeds)
    assert library.patcc_get_num_threads() == 1
    one.num_threads = 3
    assert (one.num_threads, two.num_threads) == (3, 2)
    two.run(feeds)
    assert library.patcc_get_num_threads() == 2
    for name, value in by_one.items():  # splitting the work changes no bit
        np.testing.assert_array_equal(by_two[name], value, err_msg=name)


DEFAULT_THREADS = """
import os, sys
import patcc
from patcc.backends.target import X86_AVX512_ISA
os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # as under taskset -c
print(patcc.load(sys.argv[1]).num_threads, patcc.load(sys.argv[1], num_threads=0).num_threads)
"""


def test_default_threads_follow_the_affinity_mask(so_path: Path) -> None:
    # One thread per CPU the process may use (a container's, taskset's share), not
    # per CPU online: oversubscribed spinning threads would wait on each other.
    assert patcc.load(so_path).num_threads == len(os.sched_getaffinity(0))
    out = subprocess.run([sys.executable, "-c", DEFAULT_THREADS, str(so_path)],
                         capture_output=True, text=True, check=True, timeout=120).stdout
    assert out.split() == ["1", "1"]


THREAD_AFFINITIES = """
import json, os, sys
import numpy as np
import patcc
from patcc.backends.target import X86_AVX512_ISA
before = set(os.listdir("/proc/self/task"))
caller = sorted(os.sched_getaffinity(0))
model = patcc.load(sys.argv[1], num_threads=int(sys.argv[2]))
feeds = {n: np.zeros(t.shape, np.float32) for n, t in model.inputs.items()}
for _ in range(3):
    model.run(feeds)
new = sorted(set(os.listdir("/proc/self/task")) - before)
pool = [sorted(os.sched_getaffinity(int(t))) for t in new]
result = {"caller_before": caller, "caller_after": sorted(os.sched_getaffinity(0)),
          "pool": pool}
if len(pool[0]) == 1:  # the caller moves onto the first worker's CPU: it must move away
    os.sched_setaffinity(0, pool[0])
    model.run(feeds)
    result["moved_to"] = pool[0][0]
    result["pool_after_move"] = [sorted(os.sched_getaffinity(int(t))) for t in new]
print(json.dumps(result))
"""


def pool_affinities(so_path: Path, threads: int, **env: str) -> dict[str, list]:
    """The allowed CPUs of the caller (before and after) and of each thread the
    model started, in a fresh process."""
    result = subprocess.run([sys.executable, "-c", THREAD_AFFINITIES, str(so_path), str(threads)],
                            capture_output=True, text=True, check=True, timeout=120,
                            env={**os.environ, **env})
    return json.loads(result.stdout)


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs")
def test_workers_are_pinned_away_from_the_caller(so_path: Path) -> None:
    cpus = sorted(os.sched_getaffinity(0))
    threads = min(len(cpus), 4)
    got = pool_affinities(so_path, threads)
    assert got["caller_after"] == got["caller_before"] == cpus  # never touched
    workers = got["pool"]
    assert len(workers) == threads - 1
    assert all(len(w) == 1 for w in workers), workers
    assert len({w[0] for w in workers}) == len(workers), f"two workers share a CPU: {workers}"
    moved = got["pool_after_move"]
    assert all(len(w) == 1 and w[0] != got["moved_to"] for w in moved), moved
    assert len({w[0] for w in moved}) == len(moved), f"two workers share a CPU: {moved}"


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs")
def test_workers_stay_unpinned_when_asked_or_crowded(so_path: Path) -> None:
    cpus = sorted(os.sched_getaffinity(0))
    asked = pool_affinities(so_path, 2, PATCC_THREAD_AFFINITY="0")
    assert asked["pool"] == [cpus]
    crowded = pool_affinities(so_path, len(cpus) + 1)
    assert crowded["pool"] == [cpus] * len(cpus)


def test_concurrent_calls_from_python_threads(native: NativeModel, reference: Reference) -> None:
    native.num_threads = 2
    feeds = [random_feeds(10 + i) for i in range(4)]
    expected = [native(**f) for f in feeds]
    for f, e in zip(feeds, expected, strict=True):
        want = reference(f)
        for name in want:
            assert_close(e[name], want[name], name)
    start = threading.Barrier(4)
    errors: list[str] = []

    def worker(i: int) -> None:
        start.wait()
        for _ in range(50):
            got = native(**feeds[i])
            for name, value in expected[i].items():
                if not np.array_equal(got[name], value):
                    errors.append(f"thread {i}: {name} differs")
                    return

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a call deadlocked"
    assert errors == []


# ---------------------------------------------------------------------------------------
# The command line
# ---------------------------------------------------------------------------------------


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_compile_unsupported_operator(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    model = two_input_model()
    model.graph.node.append(helper.make_node("Hardmax", ["pooled"], ["e"], name="hardmax_node"))
    model.graph.output.append(helper.make_tensor_value_info("e", TensorProto.FLOAT, (1, 4)))
    src = tmp_path / "m.onnx"
    src.write_bytes(model.SerializeToString())
    out = tmp_path / "m.so"
    code, _, err = cli(capsys, "compile", str(src), "-o", str(out))
    assert_user_error(code, err, "'Hardmax'", "'hardmax_node'")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]  # nothing else written


def test_cli_compile_unknown_target(onnx_path: Path, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "m.so"
    code, _, err = cli(capsys, "compile", str(onnx_path), "-o", str(out), "--target",
                       "nonsense")
    assert_user_error(code, err, "'nonsense'", "x86_64")
    assert list(tmp_path.iterdir()) == []


def test_cli_run_wrong_shape(so_path: Path, tmp_path: Path,
                             capsys: pytest.CaptureFixture[str]) -> None:
    np.save(tmp_path / "x.npy", np.zeros((1, 3, 9, 9), np.float32))
    np.save(tmp_path / "z.npy", np.zeros(Z_SHAPE, np.float32))
    out = tmp_path / "o.npz"
    code, _, err = cli(capsys, "run", str(so_path), "-i", f"x={tmp_path / 'x.npy'}",
                       "-i", f"z={tmp_path / 'z.npy'}", "-o", str(out))
    assert_user_error(code, err, "'x'", "1x3x9x9", "1x3x8x8")
    assert not out.exists()


def test_cli_run_so_and_onnx_agree(so_path: Path, onnx_path: Path, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    feeds = random_feeds(5)
    for name, value in feeds.items():
        np.save(tmp_path / f"{name}.npy", value)
    # z by name first, x by position: the CLI matches them up.
    args = ["-i", f"z={tmp_path / 'z.npy'}", "-i", str(tmp_path / "x.npy")]
    code, out, err = cli(capsys, "run", str(so_path), *args, "-o", str(tmp_path / "so.npz"),
                         "--threads", "2")
    assert code == 0, err
    assert "y: float32[1x4x4x4]" in out
    code, _, err = cli(capsys, "run", str(onnx_path), *args, "-o", str(tmp_path / "ref.npz"))
    assert code == 0, err
    with np.load(tmp_path / "so.npz") as a, np.load(tmp_path / "ref.npz") as b:
        assert sorted(a.files) == sorted(b.files) == ["pooled", "y"]
        for name in a.files:
            assert_close(a[name], b[name], name)


def test_cli_compile_then_run(onnx_path: Path, tmp_path: Path,
                              capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli.so"
    code, text, err = cli(capsys, "compile", str(onnx_path), "-o", str(out))
    assert code == 0, err
    assert str(out) in text and "workspace" in text
    assert out.read_bytes()[:4] == b"\x7fELF"
    loaded = patcc.load(out, num_threads=1)
    feeds = random_feeds(6)
    expected = run(import_onnx(onnx_path), feeds)
    got = loaded(**feeds)
    for name in expected:
        assert_close(got[name], expected[name], name)


# ---------------------------------------------------------------------------------------
# Regressions of bugs found by these tests
# ---------------------------------------------------------------------------------------


def scale_model(scale: float, input_name: str = "x", graph_name: str = "scale") -> onnx.ModelProto:
    """y = x * scale on a (1, 4) input: the smallest model with a visible constant."""
    graph = helper.make_graph(
        [helper.make_node("Mul", [input_name, "k"], ["y"], name="mul")], graph_name,
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, (1, 4))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, (1, 4))],
        [numpy_helper.from_array(np.full((1, 4), scale, np.float32), "k")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_load_after_recompiling_to_the_same_path(tmp_path: Path) -> None:
    path = tmp_path / "model.so"
    ones = np.ones((1, 4), np.float32)
    patcc.compile(scale_model(2.0)).save(path)
    np.testing.assert_array_equal(patcc.load(path)(ones), 2 * ones)
    patcc.compile(scale_model(3.0)).save(path)
    np.testing.assert_array_equal(patcc.load(path)(ones), 3 * ones)


def test_header_escapes_names(tmp_path: Path) -> None:
    cc = require_tool("cc", "apt-get install gcc")
    name = 'in"put*/\\'
    compiled = patcc.compile(scale_model(2.0, input_name=name, graph_name="a */ model"))
    (tmp_path / "model.h").write_bytes(compiled.emit("header"))
    source = tmp_path / "use.c"
    source.write_text('#include <string.h>\n#include "model.h"\n'
                      "int main(void) { return strlen(PATCC_INPUT0_NAME) != 9; }\n")
    exe = tmp_path / "use"
    subprocess.run([cc, "-std=c11", f"-I{tmp_path}", str(source), "-o", str(exe)], check=True)
    assert subprocess.run([str(exe)], check=False).returncode == 0


def test_a_model_for_a_wider_cpu_is_refused_before_it_runs(
        onnx_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # AVX-512 code on a machine that passes for an AVX2 one: one clear error naming
    # what is missing, never an illegal instruction.
    path = tmp_path / "wide.so"
    wide = patcc.compile(onnx_path, target="x86_64-avx512")
    wide.save(path)
    assert wide.info["target"]["isa"] == list(X86_AVX512_ISA)
    monkeypatch.setenv("PATCC_HOST_TARGET", "x86_64-avx2")
    with pytest.raises(patcc.PatccError, match=r"x86_64-avx512, whose code needs CPU "
                                               r"features this CPU lacks: avx512bw"):
        patcc.load(path)
    narrow = tmp_path / "narrow.so"
    patcc.compile(onnx_path, target="x86_64-avx2").save(narrow)
    assert patcc.load(narrow).info["target"]["tag"] == "x86_64-avx2"


def test_outputs_can_be_written_in_place(native: NativeModel) -> None:
    feeds = random_feeds(5)
    expected = native.run(feeds)
    out = {name: np.full(a.shape, np.nan, np.float32) for name, a in expected.items()}
    got = native.run(feeds, out)
    for name, a in expected.items():
        assert got[name] is out[name]
        np.testing.assert_array_equal(out[name], a)
    name = next(iter(expected))
    bad = {**out, name: np.zeros(expected[name].shape, np.float64)}
    with pytest.raises(patcc.PatccError, match=rf"out\['{name}'\] must be a writable"):
        native.run(feeds, bad)
    with pytest.raises(patcc.PatccError, match="out= names"):
        native.run(feeds, {})
