"""``patcc prune``: ONNX in, pruned ONNX out (``patcc/prune_command.py``)."""

from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper

import patcc
from patcc.cli import main
from patcc.frontends.pruning import pattern_prune, plan_filter_removal
from patcc.frontends.pruning.onnx_bridge import import_for_pruning
from patcc.models import INPUT_SHAPES

SHAPE = INPUT_SHAPES["senet_tiny"]


@pytest.fixture(scope="module")
def dense(exported_model) -> Path:  # type: ignore[no-untyped-def]
    return exported_model("senet_tiny", "dense")[1]


def _run(path: Path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path))
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def _conv3x3_weights(path: Path) -> list[np.ndarray]:
    model = onnx.load(path)
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    return [inits[n.input[1]] for n in model.graph.node
            if n.op_type == "Conv" and inits[n.input[1]].shape[2:] == (3, 3)
            and inits[n.input[1]].shape[1] > 1]


def test_the_torch_rebuild_matches_onnxruntime(dense: Path) -> None:
    _, model = import_for_pruning(str(dense))
    x = np.random.default_rng(0).standard_normal((3, *SHAPE[1:])).astype(np.float32)
    with torch.no_grad():
        got = model.module(torch.from_numpy(x)).numpy()  # batch 3: the batch is free
    want = np.concatenate([_run(dense, x[i:i + 1]) for i in range(3)])
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * np.abs(want).max())


def test_project_writes_patterns_patcc_detects(dense: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "p.onnx"
    assert main(["prune", str(dense), "-o", str(out), "--method", "project", "--rate", "6",
                 "--patterns", "6"]) == 0
    table = capsys.readouterr().out
    assert "kept" in table and "error" in table
    model = onnx.load(out)
    meta = {p.key: p.value for p in model.metadata_props}
    library = json.loads(meta["patcc.pattern_library"])
    assert 1 <= len(library) <= 6 and all(len(m) == 9 and m[4] == "1" for m in library)
    assert json.loads(meta["patcc.pruning"])["method"] == "project"
    # The same projection done in torch gives the same network.
    _, reference = import_for_pruning(str(dense))
    pattern_prune(reference.module, 6.0, 6)
    x = np.random.default_rng(1).standard_normal(SHAPE).astype(np.float32)
    with torch.no_grad():
        want = reference.module(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(_run(out, x), want, rtol=1e-4, atol=1e-5 * np.abs(want).max())
    compiled = patcc.compile(out)
    styles = {layer.name: layer.pattern for layer in compiled.graph.layers
              if getattr(layer, "pattern", None) is not None}
    assert styles, "patcc detects the pattern style in the pruned file"


def test_admm_output_keeps_the_library(dense: Path, tmp_path: Path) -> None:
    out = tmp_path / "a.onnx"
    assert main(["prune", str(dense), "-o", str(out), "--method", "admm", "--epochs", "2",
                 "--batch-size", "4", "-q"]) == 0
    meta = {p.key: p.value for p in onnx.load(out).metadata_props}
    masks = [np.array([c == "1" for c in m]).reshape(3, 3)
             for m in json.loads(meta["patcc.pattern_library"])]
    for weight in _conv3x3_weights(out):
        for kernel in weight.reshape(-1, 3, 3):
            assert not kernel.any() or any(not kernel[~m].any() for m in masks)


def test_filter_pruning_writes_the_compact_model(dense: Path, tmp_path: Path) -> None:
    out = tmp_path / "f.onnx"
    assert main(["prune", str(dense), "-o", str(out), "--method", "fpgm", "--ratio", "0.3",
                 "-q"]) == 0
    _, model = import_for_pruning(str(dense))
    plan = plan_filter_removal(model.module, SHAPE, 0.3, "fpgm")
    masked = copy.deepcopy(model.module)
    plan.masks(masked).apply(masked)
    x = np.random.default_rng(2).standard_normal(SHAPE).astype(np.float32)
    with torch.no_grad():
        want = masked(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(_run(out, x), want, rtol=1e-4, atol=1e-5 * np.abs(want).max())
    size = sum(numpy_helper.to_array(i).size for i in onnx.load(out).graph.initializer)
    before = sum(numpy_helper.to_array(i).size for i in onnx.load(dense).graph.initializer)
    assert size < 0.75 * before


@pytest.mark.parametrize("extra, message", [
    (["--method", "project", "--rate", "-1"], r"--rate -1 is impossible.*2\.25"),
    (["--method", "fpgm"], "needs --ratio"),
    (["--method", "l2", "--ratio", "1.5"], r"ratio must be in \[0, 1\)"),
    # issue 17: no longer taken silently as 2.25, or as the defaults
    (["--method", "project", "--rate", "1"], r"--rate 1 is impossible.*2\.25 \(patterns alone\)"),
    (["--method", "admm", "--rate", "2"], r"--rate 2 is impossible.*2\.25"),
    (["--method", "project", "--rate", "nan"], r"--rate nan is impossible"),
    (["--method", "admm", "--epochs", "0"], r"--epochs 0: .*1 epoch or more.*--method project"),
    (["--method", "admm", "--epochs", "-3"], r"--epochs -3: .*1 epoch or more"),
    (["--method", "admm", "--batch-size", "0"], r"--batch-size 0: must be 1 or more"),
    (["--method", "project", "--patterns", "0"], r"--patterns 0: .*1 to 56"),
    (["--method", "project", "--patterns", "57"], r"--patterns 57: .*1 to 56"),
])
def test_bad_options_exit_2_without_output(dense: Path, tmp_path: Path, extra: list[str],
                                           message: str,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bad.onnx"
    assert main(["prune", str(dense), "-o", str(out), *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("patcc: error:")
    import re

    assert re.search(message, err[0]) and not out.exists()


def test_bad_files_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = tmp_path / "notes.onnx"
    text.write_text("not a model")
    out = tmp_path / "out.onnx"
    assert main(["prune", str(text), "-o", str(out), "--method", "project"]) == 2
    assert "notes.onnx" in capsys.readouterr().err and not out.exists()
    # A model with no 3x3 convolution has nothing to pattern-prune.
    from patcc.models import export_onnx

    flat = tmp_path / "flat.onnx"
    export_onnx(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.ReLU()), flat,
                (1, 3, 8, 8))
    assert main(["prune", str(flat), "-o", str(out), "--method", "project"]) == 2
    assert "no 3x3 convolution" in capsys.readouterr().err and not out.exists()


def test_readme_pruning_example_runs(capsys: pytest.CaptureFixture[str]) -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    section = readme.split("### Pruning", 1)[1].split("\n### ", 1)[0]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    exec(compile(code, "README.md", "exec"), {})  # noqa: S102
    out = capsys.readouterr().out
    assert "kernels" in out and "reconstruction error" in out and "Conv2d(" in out


def _conv_bn_relu_model(path: Path) -> dict[str, np.ndarray]:
    """Conv 3x3 -> BatchNormalization -> Relu, twice, with non-trivial statistics."""
    from onnx import TensorProto, helper

    rng = np.random.default_rng(5)
    inits, nodes, x = {}, [], "x"
    for i, (cin, cout) in enumerate(((3, 8), (8, 8))):
        inits[f"w{i}"] = rng.standard_normal((cout, cin, 3, 3)).astype(np.float32) * 0.3
        inits[f"scale{i}"] = rng.uniform(0.5, 1.5, cout).astype(np.float32)
        inits[f"shift{i}"] = rng.uniform(-0.2, 0.2, cout).astype(np.float32)
        inits[f"mean{i}"] = rng.uniform(-0.5, 0.5, cout).astype(np.float32)
        inits[f"var{i}"] = rng.uniform(0.5, 3.0, cout).astype(np.float32)
        nodes += [helper.make_node("Conv", [x, f"w{i}"], [f"c{i}"], pads=[1, 1, 1, 1]),
                  helper.make_node("BatchNormalization", [f"c{i}", f"scale{i}", f"shift{i}",
                                                          f"mean{i}", f"var{i}"], [f"b{i}"],
                                   epsilon=1e-3),
                  helper.make_node("Relu", [f"b{i}"], [f"r{i}"])]
        x = f"r{i}"
    graph = helper.make_graph(
        nodes, "bn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, [1, 8, 8, 8])],
        [numpy_helper.from_array(v, k) for k, v in inits.items()])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                                ir_version=8), path)
    return inits


def test_onnx_batch_norms_keep_their_statistics(tmp_path: Path) -> None:
    from patcc.frontends.pruning import AdmmConfig, synthetic_inputs

    path = tmp_path / "bn.onnx"
    inits = _conv_bn_relu_model(path)
    _, model = import_for_pruning(str(path))
    norms = [m for m in model.module.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(norms) == 2
    for i, bn in enumerate(norms):
        np.testing.assert_array_equal(bn.running_mean.numpy(), inits[f"mean{i}"])
        np.testing.assert_array_equal(bn.running_var.numpy(), inits[f"var{i}"])
        assert bn.eps == pytest.approx(1e-3)
    x = np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)
    with torch.no_grad():
        got = model.module(torch.from_numpy(x)).numpy()
    want = _run(path, x)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * np.abs(want).max())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # statistics found: no fallback to uniform
        synthetic_inputs(model.module, (4, 3, 8, 8), AdmmConfig(distil_steps=2),
                         torch.Generator().manual_seed(0))


def test_folded_batch_norms_fall_back_to_uniform_inputs(tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]
                                                        ) -> None:
    from patcc.models import export_onnx, pruned_model

    folded, out = tmp_path / "folded.onnx", tmp_path / "a.onnx"
    export_onnx(pruned_model("senet_tiny", "dense"), folded, SHAPE, fold_batchnorm=True)
    assert main(["prune", str(folded), "-o", str(out), "--method", "admm", "--epochs", "1",
                 "--batch-size", "2"]) == 0
    assert "no batch norm statistics" in capsys.readouterr().err
