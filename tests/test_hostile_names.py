"""Names from a model never become code: graph, node, input and output names that
close comments, break lines, hold quotes, backslashes, trigraphs, NULs, bidi
controls, non-ASCII letters or a megabyte reach the OpenCL package, the LLVM module
and ``patcc run``'s ``.npz`` only as escaped comments, identifiers or data.

The judge for C and OpenCL C is the system preprocessor: with comments dropped
(``cc -E -P``), the package of a model with hostile names is token for token the
package of the same model with plain names, kernel names aside.
"""

from __future__ import annotations

import ctypes
import json
import re
import subprocess
import zipfile
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import onnx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

import patcc
from patcc.backends.llvm.codegen import emit_module
from patcc.cli import main
from patcc.errors import PatccError
from patcc.fileio import npz_key, save_npz
from patcc.frontends.onnx import import_onnx
from patcc.runtime import run
from patcc.text import COMMENT_LIMIT, c_comment, c_string, identifier, module_id
from support.targets import runnable_target
from support.tools import MISSING_TOOL, require_tool

INJECTED = "injected"
"""A word every hostile name holds; it must never be a token of generated code."""

HOSTILE = {
    "comment": f"demo */ int {INJECTED} = 42; /*",
    "newline": f"demo\nint {INJECTED} = 42;\n#define x",
    "quotes": f"say \"hi\", '{INJECTED}'\"",
    "backslash": f"back\\slash {INJECTED}\\",
    "trigraph": f"what??/\nint {INJECTED};??/",
    "nul": f"demo\x00 int {INJECTED};",
    "bidi": f"admin\u202e {INJECTED} \u2066x\u2069",
    "non_ascii": f"卷积 naïve {INJECTED}",
    "megabyte": f"{INJECTED} */ " * 100_000,
}
ABI_FUNCTIONS = ("patcc_run", "patcc_workspace_size", "patcc_model_info",
                 "patcc_set_num_threads", "patcc_get_num_threads", "patcc_abi_version")
X_SHAPE = (1, 3, 6, 6)


def two_output_model(name: str) -> onnx.ModelProto:
    """x -> Conv -> t -> Relu -> y; both t and y are outputs; every name (graph, the
    two nodes, the input, both outputs) is ``name`` plus a suffix."""
    w = np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32)
    x, t, y = name + " x", name + " t", name + " y"
    graph = helper.make_graph(
        [helper.make_node("Conv", [x, "w"], [t], name=name + " conv", pads=[1, 1, 1, 1]),
         helper.make_node("Relu", [t], [y], name=name + " relu")],
        name, [helper.make_tensor_value_info(x, TensorProto.FLOAT, X_SHAPE)],
        [helper.make_tensor_value_info(t, TensorProto.FLOAT, (1, 4, 6, 6)),
         helper.make_tensor_value_info(y, TensorProto.FLOAT, (1, 4, 6, 6))],
        [numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)  # onnx takes every one of these names, NUL included
    return model


# -- patcc.text -------------------------------------------------------------------------


@given(st.text())
def test_comment_text_cannot_end_or_nest_a_comment(text: str) -> None:
    shown = c_comment(text, limit=40)
    assert len(shown) <= 40 and shown.isascii() and shown.isprintable()
    comment = f"/*{shown}*/"  # even with no spaces around it
    assert comment.find("*/", 2) == len(comment) - 2  # the comment ends where it should
    assert "/*" not in comment[1:] and "??" not in comment  # -Wcomment; trigraphs
    assert not shown.endswith("\\")  # no backslash-newline if a line break follows


def test_comment_text_examples() -> None:
    assert c_comment("conv1/Conv") == "conv1/Conv"  # ordinary names read as they are
    assert c_comment("a*/b/*c") == "a*\\x2fb/\\x2ac"
    assert c_comment("x\ny\u202e") == "x\\x0ay\\u202e"
    assert c_comment("a" * 10_000, limit=10) == "aaaaaaa..."
    assert c_comment("\u202e" * 10, limit=15) == "\\u202e\\u202e..."
    assert module_id('a\n"b"\x00') == "a\\x0a\\x22b\\x22\\x00"
    assert len(module_id("x" * 1_000_000)) == COMMENT_LIMIT


@given(st.text())
def test_c_string_is_one_printable_line_of_the_utf8_bytes(text: str) -> None:
    literal = c_string(text)
    assert literal.isascii() and literal.isprintable() and "??" not in literal
    body = literal[1:-1]
    assert literal[0] == literal[-1] == '"' and '"' not in body
    # the C escapes used here are exactly Python's bytes escapes
    assert body.encode().decode("unicode_escape").encode("latin-1") == \
        text.encode("utf-8", "surrogatepass")


def test_identifiers_are_ascii() -> None:
    assert identifier("conv1/Conv:0") == "conv1_Conv_0"
    assert identifier("卷积ab") == "__ab"
    assert identifier("x" * 1000, 40) == "x" * 40


# -- OpenCL package: C host and kernels ---------------------------------------------------


def _c_tools() -> str:
    cc = require_tool("cc", "apt-get install build-essential")
    if not Path("/usr/include/CL/cl.h").exists():
        pytest.skip(f"{MISSING_TOOL} OpenCL headers (apt-get install ocl-icd-opencl-dev)")
    return cc


def _preprocessed(cc: str, package: Path) -> str:
    """The package's C host (header included) and kernels without comments, kernel
    names reduced to their ``L<index>_`` prefix."""
    texts = []
    for source, lang in (("patcc_model.c", "c"), ("model.cl", "c")):
        proc = subprocess.run([cc, "-E", "-P", "-trigraphs", "-x", lang,
                               str(package / source)], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        texts.append(proc.stdout)
    return re.sub(r"\bL(\d+)_\w*", r"L\1_", "\n".join(texts))


@pytest.fixture(scope="module")
def plain_package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("plain") / "plain.ocl"
    patcc.compile(two_output_model("plain"), "opencl").save(out)
    return out


@pytest.mark.needs_tool
@pytest.mark.parametrize("kind", list(HOSTILE))
def test_opencl_package_keeps_names_out_of_code(kind: str, plain_package: Path,
                                                tmp_path: Path) -> None:
    cc = _c_tools()
    name = HOSTILE[kind]
    out = tmp_path / "m.ocl"
    patcc.compile(two_output_model(name), "opencl").save(out)
    manifest = json.loads((out / "manifest.json").read_text())  # the real names, as data
    assert manifest["model"] == name
    assert list(manifest["inputs"]) == [name + " x"]
    assert list(manifest["outputs"]) == [name + " t", name + " y"]
    for file in ("patcc_model.c", "patcc_model.h", "model.cl"):
        text = (out / file).read_bytes()
        plain = (plain_package / file).read_bytes()
        assert re.fullmatch(rb"[\x20-\x7e\n]*", text), file  # no NUL, bidi, non-ASCII
        assert b"??" not in text and max(map(len, text.splitlines())) <= 200, file
        assert len(text) <= len(plain) + 1500, file  # a 1 MB name is shown shortened
    proc = subprocess.run([cc, "-Wall", "-Wextra", "-Werror", "-trigraphs", "-c",
                           str(out / "patcc_model.c"), "-o", str(tmp_path / "host.o")],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    proc = subprocess.run([cc, "-Wall", "-Werror", "-trigraphs", "-fsyntax-only", "-x",
                           "c", str(out / "patcc_model.h")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    ours = _preprocessed(cc, out)
    assert INJECTED not in re.findall(r"\w+", ours)
    assert ours == _preprocessed(cc, plain_package)


# -- native: LLVM module and shared object ------------------------------------------------


@pytest.mark.parametrize("kind", list(HOSTILE))
def test_native_model_keeps_names_as_data(kind: str, tmp_path: Path) -> None:
    target = runnable_target("x86_64-avx2")
    name = HOSTILE[kind]
    model = two_output_model(name)
    compiled = patcc.compile(model, target.tag)
    # llvmlite writes '; ModuleID = "NAME"' as the first line of the module's text
    module_name = emit_module(compiled.plan).name
    assert module_name == module_id(name)
    assert re.fullmatch(r"[\x20\x21\x23-\x7e]{1,80}", module_name), module_name
    ir_text = compiled.emit("llvm").decode()  # as LLVM parsed and optimised it
    assert ir_text.isascii() and "\x00" not in ir_text
    path = tmp_path / "m.so"
    compiled.save(path)
    library = ctypes.CDLL(str(path))
    for symbol in ABI_FUNCTIONS:
        assert hasattr(library, symbol), symbol
    loaded = patcc.load(path)
    assert loaded.info["model"] == name
    assert list(loaded.inputs) == [name + " x"]
    assert list(loaded.outputs) == [name + " t", name + " y"]
    x = np.random.default_rng(1).standard_normal(X_SHAPE).astype(np.float32)
    got = loaded.run({name + " x": x})
    want = run(import_onnx(model), [x])
    assert list(got) == list(want)
    for key in want:
        np.testing.assert_allclose(got[key], want[key], rtol=1e-5, atol=1e-5)


@pytest.mark.needs_tool
@pytest.mark.parametrize("kind", list(HOSTILE))
def test_native_header_keeps_names_in_strings_and_comments(kind: str, tmp_path: Path) -> None:
    """``--emit header``: names go into comments and ``#define ..._NAME "..."``
    literals only; the header compiles warning-free and holds no name as code."""
    cc = require_tool("cc", "apt-get install build-essential")
    name = HOSTILE[kind]
    header = patcc.compile(two_output_model(name), "x86_64-avx2").emit("header")
    assert re.fullmatch(rb"[\x20-\x7e\n]*", header) and b"??" not in header
    # the NAME literals hold the exact names; comments show them shortened
    assert len(re.sub(rb'"(\\.|[^"\\])*"', b'""', header)) < 8000
    path = tmp_path / "model.h"
    path.write_bytes(header)
    proc = subprocess.run([cc, "-Wall", "-Wextra", "-Werror", "-trigraphs", "-fsyntax-only",
                           "-x", "c", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    proc = subprocess.run([cc, "-E", "-P", "-dD", "-trigraphs", "-x", "c", str(path)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    code = re.sub(r'"(\\.|[^"\\])*"', '""', proc.stdout)  # string literals emptied
    assert INJECTED not in re.findall(r"\w+", code)


# -- patcc run: the .npz's member names ---------------------------------------------------


def test_run_output_names_stay_inside_the_npz(tmp_path: Path) -> None:
    w = np.ones((2, 3, 1, 1), np.float32)
    outs = ["../../x.npy", "y", ".hidden", "file", "a\\b:c", "卷积"]
    nodes = [helper.make_node("Conv", ["x", "w"], [outs[0]], name="conv")]
    nodes += [helper.make_node("Relu", [outs[0]], [o], name=f"relu{i}")
              for i, o in enumerate(outs[1:])]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, (1, 3, 2, 2))],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, (1, 2, 2, 2)) for o in outs],
        [numpy_helper.from_array(w, "w")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]),
              tmp_path / "m.onnx")
    x = np.arange(12, dtype=np.float32).reshape(1, 3, 2, 2) - 6
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "out" / "out.npz"
    out.parent.mkdir()
    assert main(["run", str(tmp_path / "m.onnx"), "-i", str(tmp_path / "x.npy"), "-o",
                 str(out), "-q"]) == 0
    members = zipfile.ZipFile(out).namelist()
    for member in members:
        assert "/" not in member and "\\" not in member and not member.startswith("."), member
    assert [unquote(m.removesuffix(".npy")) for m in members] == outs
    conv = x.sum(axis=1, keepdims=True).repeat(2, axis=1)
    with np.load(out) as got:
        np.testing.assert_array_equal(got["%2E.%2F..%2Fx.npy"], conv)  # documented key
        np.testing.assert_array_equal(got["y"], np.maximum(conv, 0))  # plain names plain
        np.testing.assert_array_equal(got["file"], np.maximum(conv, 0))
        assert npz_key(".hidden") == "%2Ehidden" and "%2Ehidden" in got
    zipfile.ZipFile(out).extractall(tmp_path / "ex")
    assert sorted(p.name for p in (tmp_path / "ex").rglob("*")) == sorted(members)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ex", "m.onnx", "out", "x.npy"]
    with pytest.raises(PatccError, match="too long for an .npz member"):
        save_npz(out, {"x" * 70_000: x})  # the zip format's limit: a clear error
    assert [p.name for p in out.parent.iterdir()] == ["out.npz"]


# -- an OpenCL package over an existing directory -----------------------------------------


def test_a_package_is_replaced_only_when_it_holds_nothing_else(tmp_path: Path) -> None:
    compiled = patcc.compile(two_output_model("again"), "opencl")
    target = tmp_path / "m.ocl"
    compiled.save(target)
    compiled.save(target)  # our package, nothing else in it: replaced whole
    (target / "host").write_bytes(b"a host built from the old patcc_model.c")
    (target / "notes").mkdir()
    before = {p.name: p.read_bytes() for p in target.iterdir() if p.is_file()}
    with pytest.raises(PatccError, match=r"m\.ocl: holds files that are not part of the "
                                         r"OpenCL package \('host', 'notes'\)"):
        compiled.save(target)
    assert {p.name: p.read_bytes() for p in target.iterdir() if p.is_file()} == before
    assert (target / "notes").is_dir()
    (target / "host").unlink()
    (target / "notes").rmdir()
    compiled.save(target)
    mine = tmp_path / "mine"  # a directory of the user's: never a package
    mine.mkdir()
    (mine / "data.txt").write_text("keep")
    (mine / "manifest.json").write_text('{"format": "something else"}')
    with pytest.raises(PatccError, match="mine: exists and is not an OpenCL package"):
        compiled.save(mine)
    assert sorted(p.name for p in mine.iterdir()) == ["data.txt", "manifest.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.ocl", "mine"]  # no temporaries
