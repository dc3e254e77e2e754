"""The OpenCL backend (``patcc/backends/opencl``) on PoCL, through pyopencl.

Every reference architecture, dense and pattern-pruned, against onnxruntime (1e-4 of
the output's scale, fp32); the generated C host compiled with ``cc`` against
libOpenCL gives the same outputs; random single layers and small graphs (hypothesis)
against the reference interpreter; the package format, its atomic writing and the
errors users meet.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

import patcc
from patcc.backends.planning import PATTERN, SPARSE, conv_kernels, reshape_aliases
from patcc.cli import main
from patcc.errors import PatccError
from patcc.frontends.onnx import import_onnx
from patcc.ir import Sparsity
from patcc.models import INPUT_SHAPES
from patcc.passes import BACKEND_PIPELINE, run_pipeline
from patcc.runtime import run
from support.compare import assert_close, run_onnxruntime
from support.fuzz import fuzz_examples
from support.onnx_gen import (
    ModelBuilder,
    OnnxCase,
    _nchw,
    _opset,
    _seed,
    conv,
    nested_concat_model,
    pattern_conv_models,
    single_layer_models,
    small_graph_models,
)
from support.reference_models import FULL_MATRIX, SLOW_ARCHITECTURES, reference_params
from support.sparse_models import PointwiseConv, pointwise_model, sparse_weight
from support.tools import MISSING_TOOL, require_tool

pytestmark = pytest.mark.needs_tool


@pytest.fixture(scope="module", autouse=True)
def opencl_device() -> None:
    """Skip (fail under CI) without pyopencl or an OpenCL device."""
    try:
        from patcc.runtime.opencl import select_device

        select_device()
    except (ImportError, PatccError) as e:
        pytest.skip(f"{MISSING_TOOL} an OpenCL device through pyopencl (Debian: "
                    f"pocl-opencl-icd; pip: pyopencl): {e}")


ONE_VARIANT = {"unet_small": "dense", "lraspp_mobilenet_v3": "dw-patterns+pw50",
               "yolo_tiny": "6x"}
"""The dense-prediction models run one variant each: their Resize, Col2Im and Concat
kernels are the same in both, and the conv kernels of either variant are the
classifiers' (the U-Net dense: its ConvTranspose's dense 1x1 conv and Col2Im)."""

CASES = [case for case in reference_params(packed=True) if FULL_MATRIX or (
    case.values[0][0] not in SLOW_ARCHITECTURES
    and ONE_VARIANT.get(case.values[0][0], case.values[0][1]) == case.values[0][1])]
"""Every reference architecture, dense and pruned, but the slow two (ResNet-18's
kernels again) and one variant of each dense-prediction model: PoCL compiles each
kernel at its first launch, 10-25 s a model with the cache cold, as in CI. All of
them with ``PATCC_FULL_MATRIX=1``."""


@pytest.mark.parametrize("case", CASES)
def test_reference_architectures_match_onnxruntime(case: tuple[str, str], exported_model,
                                                   tmp_path: Path) -> None:
    name, variant = case
    _, path = exported_model(name, variant)
    x = np.random.default_rng(0).uniform(-1, 1, INPUT_SHAPES[name]).astype(np.float32)
    import onnx

    model = onnx.load(path)
    feeds = {model.graph.input[0].name: x}
    expected = run_onnxruntime(model, feeds, [o.name for o in model.graph.output])
    compiled = patcc.compile(path, target="opencl-adreno")  # every staged kernel too
    kernels = {layer["layer"]: layer["kernel"] for layer in compiled.program.layers}
    # each conv runs the first kernel of the vocabulary both backends share
    assert {kernels[c.name] for c in compiled.graph.convs()
            if kernels[c.name] != conv_kernels(c)[0]} == set()
    patterned = [c.name for c in compiled.graph.convs() if c.sparsity is Sparsity.PATTERN]
    assert all(kernels[name] == PATTERN for name in patterned)
    assert bool(patterned) == (variant != "dense")
    compiled.save(tmp_path / "model.ocl")
    from patcc.runtime.opencl import load

    ours = load(tmp_path / "model.ocl").run([x])
    assert list(ours) == list(expected)
    for out_name, ref in expected.items():
        assert float(np.abs(ref).max()) > 0
        assert_close(ours[out_name], ref, out_name, floor=0.0)


@pytest.fixture(scope="module")
def pruned_package(exported_model, tmp_path_factory: pytest.TempPathFactory) -> Path:
    _, path = exported_model("senet_tiny", "6x")
    out = tmp_path_factory.mktemp("ocl") / "senet.ocl"
    assert main(["compile", str(path), "--target", "opencl-adreno", "-o", str(out),
                 "-q"]) == 0
    return out


def test_package_layout_and_manifest(pruned_package: Path) -> None:
    names = sorted(p.name for p in pruned_package.iterdir())
    assert names == ["manifest.json", "model.cl", "patcc_model.c", "patcc_model.h",
                     "weights.bin"]
    m = json.loads((pruned_package / "manifest.json").read_text())
    assert (m["format"], m["version"], m["precision"], m["target"]) == \
        ("patcc-opencl", 1, "fp32", "opencl-adreno")
    assert m["weights_bytes"] == (pruned_package / "weights.bin").stat().st_size
    source = (pruned_package / "model.cl").read_text()
    for k in m["kernels"]:
        assert f"__kernel void {k['name']}(" in source
        assert all(g % lc == 0 for g, lc in zip(k["global"], k["local"], strict=True))
        assert k["local"][0] <= 128
    assert [tuple(s["shape"]) for s in m["inputs"].values()] == [INPUT_SHAPES["senet_tiny"]]


def test_pattern_weights_are_stored_compressed(pruned_package: Path, exported_model) -> None:
    _, path = exported_model("senet_tiny", "6x")
    layers = import_onnx(path).layers
    dense_bytes = sum(4 * layer.weight.size for layer in layers if hasattr(layer, "weight"))
    stored = json.loads((pruned_package / "manifest.json").read_text())["weights_bytes"]
    assert stored < 0.75 * dense_bytes, (stored, dense_bytes)


def test_cli_run_of_a_package_equals_the_interpreter(pruned_package: Path, exported_model,
                                                     tmp_path: Path) -> None:
    _, path = exported_model("senet_tiny", "6x")
    x = np.random.default_rng(3).standard_normal(INPUT_SHAPES["senet_tiny"]).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    assert main(["run", str(pruned_package), "-i", str(tmp_path / "x.npy"), "-o",
                 str(tmp_path / "out.npz"), "-q"]) == 0
    got = dict(np.load(tmp_path / "out.npz"))
    want = run(import_onnx(path), [x])
    assert list(got) == list(want)
    for name in want:
        assert_close(got[name], want[name], name)
    loaded = patcc.load(pruned_package)  # the Python API's door to the same package
    np.testing.assert_array_equal(loaded(x), got[next(iter(got))])
    with pytest.raises(PatccError, match="num_threads is for compiled .so models"):
        patcc.load(pruned_package, num_threads=2)


def test_the_c_host_gives_the_same_outputs(pruned_package: Path, tmp_path: Path) -> None:
    cc = require_tool("cc", "apt-get install build-essential")
    if not Path("/usr/include/CL/cl.h").exists():
        pytest.skip(f"{MISSING_TOOL} OpenCL headers (apt-get install ocl-icd-opencl-dev)")
    exe = tmp_path / "host"
    proc = subprocess.run([cc, "-O2", "-Wall", "-Werror", "-DPATCC_MODEL_MAIN",
                           str(pruned_package / "patcc_model.c"), "-o", str(exe),
                           "-lOpenCL"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    x = np.random.default_rng(4).standard_normal(INPUT_SHAPES["senet_tiny"]).astype(np.float32)
    x.tofile(tmp_path / "x.bin")
    proc = subprocess.run([str(exe), str(pruned_package), str(tmp_path / "x.bin"),
                           str(tmp_path / "y.bin")], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    from patcc.runtime.opencl import load

    model = load(pruned_package)
    (name,) = model.output_names
    want = model.run([x])[name]
    got = np.fromfile(tmp_path / "y.bin", dtype=np.float32).reshape(want.shape)
    np.testing.assert_array_equal(got, want)  # the same kernels on the same device


def test_compiled_model_call_and_profile(exported_model) -> None:
    _, path = exported_model("resnet18", "dense")
    compiled = patcc.compile(path, target="opencl")
    x = np.random.default_rng(5).standard_normal(INPUT_SHAPES["resnet18"]).astype(np.float32)
    want = run(compiled.graph, [x])
    got = compiled(x)
    assert_close(got, next(iter(want.values())), "output")
    profiled = compiled.load(profile=True)
    profiled.run([x])
    times = profiled.layer_times()
    views = reshape_aliases(compiled.graph)  # ResNet's Flatten: a view, no kernel
    assert [layer.op for layer in compiled.graph.layers if layer.outputs[0] in views] \
        == ["Reshape"]
    assert set(times) == {layer.name for layer in compiled.graph.layers
                          if layer.outputs[0] not in views}
    assert all(t > 0 for t in times.values())


def test_fp16_needs_the_extension(exported_model, tmp_path: Path) -> None:
    from patcc.runtime.opencl import load, select_device

    _, path = exported_model("senet_tiny", "6x")
    compiled = patcc.compile(path, target="opencl", precision="fp16")
    source = compiled.program.source
    assert "cl_khr_fp16 : enable" in source and "typedef half real;" in source
    assert compiled.program.element_size == 2
    compiled.save(tmp_path / "half.ocl")
    x = np.random.default_rng(6).standard_normal(INPUT_SHAPES["senet_tiny"]).astype(np.float32)
    if "cl_khr_fp16" not in select_device().extensions.split():
        with pytest.raises(PatccError, match="lacks cl_khr_fp16.*--precision fp32"):
            load(tmp_path / "half.ocl")
        return
    want = run(compiled.graph, [x])
    got = load(tmp_path / "half.ocl").run([x])
    # Half storage keeps about three significant digits: 2e-2 of the largest magnitude,
    # where assert_close (float32 results) holds to 1e-4.
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=0,
                                   atol=2e-2 * np.abs(want[name]).max())


def test_package_writing_is_atomic_and_refuses_other_files(exported_model,
                                                           tmp_path: Path) -> None:
    _, path = exported_model("senet_tiny", "dense")
    compiled = patcc.compile(path, target="opencl")
    other = tmp_path / "taken"
    other.write_text("keep me")
    with pytest.raises(PatccError, match="not an OpenCL package"):
        compiled.save(other)
    assert other.read_text() == "keep me"
    target = tmp_path / "m.ocl"
    compiled.save(target)
    compiled.save(target)  # a package is replaced whole
    assert sorted(os.listdir(tmp_path)) == ["m.ocl", "taken"]  # no temporary left
    with pytest.raises(PatccError, match="--emit so is not an OpenCL output"):
        compiled.save(tmp_path / "x.so", "so")


def test_bad_device_and_options_are_clear(exported_model, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    from patcc.runtime.opencl import select_device

    monkeypatch.setenv("PATCC_OPENCL_DEVICE", "no such device anywhere")
    with pytest.raises(PatccError, match="matches no device; there are: 0: "):
        select_device()
    monkeypatch.setenv("PATCC_OPENCL_DEVICE", "99")
    with pytest.raises(PatccError, match="there are 1 device|there are [0-9]+ device"):
        select_device()
    _, path = exported_model("senet_tiny", "dense")
    out = tmp_path / "m.ocl"
    assert main(["compile", str(path), "--target", "opencl", "--precision", "fp8", "-o",
                 str(out)]) == 2  # argparse's choices, as one line
    assert main(["compile", str(path), "--target", "x86_64", "--precision", "fp16", "-o",
                 str(tmp_path / "m.so")]) == 2
    assert main(["compile", str(path), "--target", "opencl", "--report", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "fp8" in err and "--precision fp16 is for OpenCL targets" in err
    assert "--report reads CPU assembly" in err
    assert not out.exists() and not (tmp_path / "m.so").exists()
    bogus = tmp_path / "bogus.ocl"
    bogus.mkdir()
    (bogus / "manifest.json").write_text('{"format": "something else"}')
    np.save(tmp_path / "x.npy", np.zeros(INPUT_SHAPES["senet_tiny"], np.float32))
    assert main(["run", str(bogus), "-i", str(tmp_path / "x.npy"), "-o",
                 str(tmp_path / "o.npz")]) == 2
    assert "not a patcc OpenCL package" in capsys.readouterr().err


# -- randomised: single layers and small graphs against the interpreter -----------------

EXAMPLES = fuzz_examples(25)
fuzz = settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.filter_too_much])


def _assert_opencl_matches(case: OnnxCase, target: str = "opencl") -> None:
    graph = import_onnx(case.model, case.input_shapes)
    note(str(graph))
    expected = run(graph, case.feeds)
    compiled = patcc.compile(case.model, target=target, input_shapes=case.input_shapes)
    ours = compiled.load().run(case.feeds)
    for name in case.output_names:
        assert_close(ours[name], expected[name], f"{name} vs interpreter")


@fuzz
@given(single_layer_models())
def test_random_single_layers(case: OnnxCase) -> None:
    _assert_opencl_matches(case)


@st.composite
def pointwise_conv_models(draw: st.DrawFn) -> OnnxCase:
    """One 1x1 stride-1 conv, up to 40 channels in and out (tiles of 16 reduction
    steps and 16 pixels, so partial tiles on every axis); grouped or depthwise about
    half the time, which takes the other kernels."""
    b = ModelBuilder(_opset(draw), _seed(draw))
    x = b.input(_nchw(draw, c_max=40))
    return b.build([conv(draw, b, x, pattern=False, kernel=(1, 1), same_size=True,
                         out_channels=draw(st.integers(1, 40)))])


@fuzz
@given(pointwise_conv_models())
def test_random_pointwise_convs_staged_through_local_memory(case: OnnxCase) -> None:
    _assert_opencl_matches(case, "opencl-adreno")


@fuzz
@given(single_layer_models(ops=("conv", "conv_bn")))
def test_random_convs_staged_through_local_memory(case: OnnxCase) -> None:
    _assert_opencl_matches(case, "opencl-adreno")


@fuzz
@given(pattern_conv_models())
def test_random_pattern_convs(case: OnnxCase) -> None:
    _assert_opencl_matches(case)


@st.composite
def sparse_pointwise_models(draw: st.DrawFn) -> OnnxCase:
    """Two 1x1 convs of one random shape with unstructured zeros (the ``sparse``
    kernel), densities from 2% to 80% (filters with no non-zero at all), each with or
    without a fused residual and activation."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    x_shape = (draw(st.integers(1, 2)), draw(st.integers(1, 80)), draw(st.integers(1, 13)),
               draw(st.integers(1, 13)))
    o = draw(st.integers(1, 40))
    convs = [PointwiseConv(sparse_weight(rng, o, x_shape[1],
                                         draw(st.sampled_from((0.02, 0.2, 0.5, 0.8)))),
                           rng.standard_normal(o).astype(np.float32), draw(st.booleans()),
                           draw(st.sampled_from((None, "relu", "relu6"))))
             for _ in range(2)]
    model, feeds = pointwise_model(x_shape, convs, rng)
    names = tuple(out.name for out in model.graph.output)
    return OnnxCase(model, feeds, names, tuple((x_shape[0], o, *x_shape[2:]) for _ in names))


@fuzz
@given(sparse_pointwise_models(), st.sampled_from(["opencl", "opencl-adreno"]))
def test_random_sparse_pointwise_convs(case: OnnxCase, target: str) -> None:
    """The ``sparse`` kernel, which ``conv_kernels`` gives these convs first."""
    graph = run_pipeline(import_onnx(case.model, case.input_shapes), BACKEND_PIPELINE)
    assert {conv_kernels(conv)[0] for conv in graph.convs()} == {SPARSE}
    _assert_opencl_matches(case, target)


@fuzz
@given(small_graph_models())
def test_random_small_graphs(case: OnnxCase) -> None:
    _assert_opencl_matches(case)



@pytest.mark.parametrize("target", ["opencl", "opencl-adreno"])
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_concat_inputs_written_in_place(target: str, precision: str) -> None:
    """The workspace plan both backends share: at batch 1 the producers of ``a``, ``b``,
    ``ab`` and ``c`` write into their Concat's output (offsets in the precision's
    elements), so the inner Concat has no kernel and the outer copies ``d`` and ``x``
    only; at batch 2 the blocks are strided and every input is copied."""
    for batch, copies in ((1, ["_in2", "_in3"]), (2, ["_in0", "_in1", "_in0", "_in1",
                                                       "_in2", "_in3"])):
        model = nested_concat_model(batch)
        x = np.random.default_rng(1).standard_normal((batch, 3, 6, 5)).astype(np.float32)
        compiled = patcc.compile(model, target=target, precision=precision)
        launched = [k.name[-4:] for k in compiled.program.launches if "Concat" in k.layer]
        assert launched == copies, [k.layer for k in compiled.program.launches]
        if precision == "fp16":
            continue  # placements are counted in elements, alike in both precisions
        got = compiled.load().run({"x": x})
        for name, value in run(compiled.graph, {"x": x}).items():
            assert_close(got[name], value, f"{name}, batch {batch}")


def test_reshapes_are_views_of_their_input() -> None:
    """A Reshape inside the graph is a view (no kernel, its input's buffer): chained,
    of a graph input, read by two layers and after its input's other readers; one
    whose output is a graph output keeps its own buffer and copy kernel."""
    from onnx import TensorProto, helper

    def shape(name: str, dims: list[int]) -> onnx.TensorProto:
        return helper.make_tensor(name, TensorProto.INT64, [len(dims)], dims)

    nodes = [
        helper.make_node("Reshape", ["x", "s1"], ["r1"]),   # view of the input
        helper.make_node("Relu", ["r1"], ["a"]),
        helper.make_node("Reshape", ["a", "s2"], ["r2"]),   # view ...
        helper.make_node("Reshape", ["r2", "s3"], ["r3"]),  # ... of a view
        helper.make_node("Sigmoid", ["r3"], ["b"]),
        helper.make_node("Neg", ["a"], ["c"]),               # a read after its views
        helper.make_node("Reshape", ["c", "s2"], ["d"]),    # a graph output: copied
        helper.make_node("Add", ["r3", "b"], ["e"]),
    ]
    graph = helper.make_graph(
        nodes, "views", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4, 5])],
        [helper.make_tensor_value_info("d", TensorProto.FLOAT, [2, 60]),
         helper.make_tensor_value_info("e", TensorProto.FLOAT, [120])],
        [shape("s1", [6, 20]), shape("s2", [2, 60]), shape("s3", [120])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)],
                              ir_version=8)
    compiled = patcc.compile(model, target="opencl")
    views = reshape_aliases(compiled.graph)
    assert sorted(views) == ["r1", "r2", "r3"] and views["r3"] == "a"
    assert len(compiled.program.launches) == len(compiled.graph.layers) - 3
    x = np.random.default_rng(7).standard_normal((2, 3, 4, 5)).astype(np.float32)
    got = compiled.load().run({"x": x})
    for name, value in run(compiled.graph, {"x": x}).items():
        assert_close(got[name], value, name)


def test_nan_goes_through_activations_max_min_and_pooling() -> None:
    """Relu, Clip, HardSigmoid, HardSwish, Max, Min, the pools and a fused epilogue
    keep NaN as the interpreter does (OpenCL's fmax/fmin would drop it)."""
    from test_validation import FEEDS, assert_same_nans, nan_model

    compiled = patcc.compile(nan_model(), target="opencl")
    got = compiled.load().run(FEEDS)
    for name, value in run(compiled.graph, FEEDS).items():
        assert_same_nans(got[name], value, name)


def test_pointwise_operators_match_the_interpreter() -> None:
    """Elu ... Pow, standalone and fused into a conv, in OpenCL C."""
    from test_pointwise import feeds, pointwise_model

    compiled = patcc.compile(pointwise_model(), target="opencl")
    got = compiled.load().run(feeds())
    for name, value in run(compiled.graph, feeds()).items():
        assert_close(got[name], value, name)


def test_log_softmax_and_smooth_activations() -> None:
    import torch
    from test_torch_frontend import _Smooth

    module = _Smooth().eval()
    x = torch.randn(1, 3, 7, 9)
    compiled = patcc.compile(module, target="opencl", example_inputs=(x,))
    with torch.no_grad():
        want = module(x).numpy()
    assert_close(compiled(x.numpy()), want, "log_softmax")


def test_reductions_over_any_axes() -> None:
    from test_pointwise import feeds, reductions_model

    compiled = patcc.compile(reductions_model(), target="opencl")
    got = compiled.load().run(feeds())
    for name, value in run(compiled.graph, feeds()).items():
        assert_close(got[name], value, name)


def test_layer_and_group_normalization() -> None:
    """LayerNormalization (over the last two axes, with its Mean and InvStdDev outputs)
    and GroupNormalization, as the frontends lower them (Reduce, element-wise layers,
    Reshape and ScaleShift)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(4)
    consts = {"ln_scale": rng.uniform(0.5, 2, (5, 6)), "ln_bias": rng.uniform(-1, 1, (5, 6)),
              "gn_scale": rng.uniform(0.5, 2, 8), "gn_bias": rng.uniform(-1, 1, 8)}
    nodes = [helper.make_node("LayerNormalization", ["x", "ln_scale", "ln_bias"],
                              ["ln", "mean", "inv_std"], axis=-2, epsilon=1e-3),
             helper.make_node("GroupNormalization", ["ln", "gn_scale", "gn_bias"], ["gn"],
                              num_groups=4)]
    outputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [None] * 4)
               for n in ("gn", "mean", "inv_std")]
    graph = helper.make_graph(
        nodes, "norms", [helper.make_tensor_value_info("x", TensorProto.FLOAT, (2, 8, 5, 6))],
        outputs, [numpy_helper.from_array(v.astype(np.float32), k) for k, v in consts.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)
    x = rng.standard_normal((2, 8, 5, 6)).astype(np.float32) * 3 + 1
    compiled = patcc.compile(model, target="opencl")
    got = compiled.load().run({"x": x})
    expected = run_onnxruntime(model, {"x": x}, ["gn", "mean", "inv_std"])
    for name, value in expected.items():
        assert_close(got[name], value, name)


def test_depth_space_tile_expand() -> None:
    from test_pointwise import feeds, rearrangements_model

    compiled = patcc.compile(rearrangements_model(), target="opencl")
    got = compiled.load().run(feeds())
    for name, value in run(compiled.graph, feeds()).items():
        assert_close(got[name], value, name)


@pytest.mark.parametrize("which", ["gather", "lrn", "matmul"])
def test_gather_lrn_and_batched_matmul(which: str) -> None:
    """Gather on data (the indices in the blob), LRN (a channel-window average pool)
    and MatMul with a batched constant B (Split, Dense, Concat) in OpenCL C."""
    from test_shape_ops import MATMULS, gather_feeds, gather_model, lrn_model, matmul_model

    model = {"gather": gather_model, "lrn": lrn_model, "matmul": matmul_model}[which]()
    feeds = gather_feeds()
    if which == "matmul":
        rng = np.random.default_rng(1)
        feeds = {f"a_{label}": rng.standard_normal(a).astype(np.float32)
                 for label, (a, _) in MATMULS.items()}
    compiled = patcc.compile(model, target="opencl")
    got = compiled.load().run(feeds)
    for name, value in run(compiled.graph, feeds).items():
        assert_close(got[name], value, name)


def test_conv_transpose_and_col2im() -> None:
    """ConvTransposes of every form (strides 1-3, crops, output padding, groups,
    dilations): the flipped conv kernels and the Col2Im kernel in OpenCL C."""
    from test_conv_transpose import X_SHAPE, conv_transpose_model, feeds, grid_layers

    compiled = patcc.compile(conv_transpose_model(grid_layers(), X_SHAPE), target="opencl")
    assert any(info["kernel"] == "col2im" for info in compiled.program.layers)
    got = compiled.load().run(feeds(X_SHAPE))
    for name, value in run(compiled.graph, feeds(X_SHAPE)).items():
        assert_close(got[name], value, name)
