"""ConvTranspose (ONNX, torch) and Col2Im, lowered at import to a flipped Conv (stride 1)
or a 1x1 Conv and a Col2Im layer (``patcc/frontends/transpose_conv.py``): against
onnxruntime and torch on the interpreter and every x86 build this CPU runs, pruned
weights on the pattern and sparse kernels, the ONNX attribute forms (auto_pad,
output_shape), bad input, and the pruning bridge."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

import patcc
from patcc.errors import PatccError
from patcc.frontends.onnx import import_onnx
from patcc.frontends.torch import import_module
from patcc.ir import Col2Im, Conv, IRError, Slice, Sparsity, Unary
from patcc.runtime import run
from support.compare import assert_close, run_onnxruntime, run_with_threads
from support.fuzz import fuzz_examples
from support.targets import X86_TAGS, runnable_target, runnable_x86_tags

OPSET = 18  # Col2Im arrived in opset 18
IR_VERSION = 8

CENTRE_PLUS_3 = np.array([np.isin(np.arange(9), (4, *taps)).reshape(3, 3)
                          for taps in ((1, 3, 5), (1, 5, 7), (3, 5, 7), (0, 1, 3))])
"""Four PatDNN patterns: the centre tap and three of its neighbours."""


def conv_transpose_model(layers: list[dict[str, object]], x_shape: tuple[int, ...],
                         seed: int = 0) -> onnx.ModelProto:
    """One ConvTranspose node per entry of ``layers``, all reading the input ``x``.

    An entry holds the node's attributes plus ``weight`` (a shape, or an array),
    ``bias`` (bool) and ``relu`` (bool: a Relu after it); output ``y{k}``.
    """
    rng = np.random.default_rng(seed)
    nodes, inits, outputs = [], [], []
    for k, entry in enumerate(layers):
        attrs = dict(entry)
        weight = attrs.pop("weight")
        if not isinstance(weight, np.ndarray):
            weight = rng.standard_normal(weight).astype(np.float32)  # type: ignore[arg-type]
        inputs = ["x", f"w{k}"]
        inits.append(numpy_helper.from_array(weight, f"w{k}"))
        if attrs.pop("bias", True):
            c_out = weight.shape[1] * int(attrs.get("group", 1))  # type: ignore[call-overload]
            inits.append(numpy_helper.from_array(
                rng.standard_normal(c_out).astype(np.float32), f"b{k}"))
            inputs.append(f"b{k}")
        relu = attrs.pop("relu", False)
        out = f"y{k}"
        nodes.append(helper.make_node("ConvTranspose", inputs, [f"t{k}" if relu else out],
                                      name=f"ct{k}", **attrs))
        if relu:
            nodes.append(helper.make_node("Relu", [f"t{k}"], [out], name=f"relu{k}"))
        outputs.append(helper.make_tensor_value_info(out, TensorProto.FLOAT,
                                                     ["n", "c", "h", "w"]))
    graph = helper.make_graph(nodes, "conv_transpose",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                              outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                             ir_version=IR_VERSION)


def feeds(x_shape: tuple[int, ...], seed: int = 1) -> dict[str, np.ndarray]:
    return {"x": np.random.default_rng(seed).standard_normal(x_shape).astype(np.float32)}


def assert_matches_onnxruntime(model: onnx.ModelProto, inputs: dict[str, np.ndarray],
                               tags: list[str] | tuple[str, ...] = ()) -> None:
    """The interpreter, and the build for each of ``tags``, against onnxruntime."""
    names = [o.name for o in model.graph.output]
    want = run_onnxruntime(model, inputs, names)
    ours = run(import_onnx(model), inputs)
    for name in names:
        assert_close(ours[name], want[name], f"{name} interpreter")
    for tag in tags:
        got = patcc.compile(model, tag, tune=False).load(num_threads=2).run(inputs)
        for name in names:
            assert_close(got[name], want[name], f"{name} {tag}")


# -- many attribute combinations in one model ---------------------------------------------

X_SHAPE = (2, 4, 5, 19)  # wide enough for whole vector chunks on AVX-512


def grid_layers() -> list[dict[str, object]]:
    """Strides 1-3 (one per axis), kernels 1-4 (not square), no, uneven and large pads
    (crops beyond the kernel's span at stride 1), output_padding, dilations 1-2 and
    groups 1-2; a Relu after every third (fused into the conv or the Col2Im)."""
    layers: list[dict[str, object]] = []
    combos = itertools.product((1, 2, 3), (1, 2, 3, 4), ((0, 0, 0, 0), (1, 0, 2, 1), (3, 3, 3, 3)),
                               (1, 2), (1, 2))
    for k, (s, kernel, pads, d, g) in enumerate(combos):
        if k % 3:  # a third of the grid: each value still meets every other
            continue
        kw = kernel + 1 if kernel < 3 else kernel - 1
        strides = (s, max(1, s - 1))
        full = [(X_SHAPE[2 + a] - 1) * strides[a] + ((kernel, kw)[a] - 1) * d + 1
                for a in range(2)]
        if full[0] - pads[0] - pads[2] < 1 or full[1] - pads[1] - pads[3] < 1:
            continue
        layers.append({"weight": (4, 3, kernel, kw), "strides": list(strides),
                       "pads": list(pads), "output_padding": [(k // 3) % s, 0],
                       "dilations": [d, d], "group": g, "bias": bool(k % 2),
                       "relu": k % 9 == 0})
    return layers


def test_the_grid_lowers_to_both_forms() -> None:
    graph = import_onnx(conv_transpose_model(grid_layers(), X_SHAPE))
    col2ims = [layer for layer in graph.layers if isinstance(layer, Col2Im)]
    convs = [layer for layer in graph.layers if isinstance(layer, Conv)]
    assert col2ims and len(convs) == len(grid_layers())
    assert all(producer.kernel_shape == (1, 1) for producer in
               (graph.producers[c.inputs[0]] for c in col2ims))
    assert any(isinstance(layer, Slice) for layer in graph.layers), "a crop at stride 1"
    assert any(c.activation is not None for c in col2ims), "a Relu fused into Col2Im"
    assert not any(isinstance(layer, Unary) for layer in graph.layers)


def test_the_grid_on_the_interpreter() -> None:
    assert_matches_onnxruntime(conv_transpose_model(grid_layers(), X_SHAPE), feeds(X_SHAPE))


@pytest.mark.parametrize("tag", X86_TAGS)
def test_the_grid_compiled(tag: str) -> None:
    runnable_target(tag)
    model = conv_transpose_model(grid_layers(), X_SHAPE)
    names = [o.name for o in model.graph.output]
    want = run_onnxruntime(model, feeds(X_SHAPE), names)
    native = patcc.compile(model, tag, tune=False).load()
    got = run_with_threads(native, feeds(X_SHAPE), (1, 3))  # row blocks split the work
    for name in names:
        assert_close(got[name], want[name], f"{name} {tag}")


def test_large_strides_and_kernels() -> None:
    """Five column phases (each lane stored on its own), FCN-8s's 16x16 stride 8, and
    FCN-32s's 64x64 stride 32 (the checked scalar code), on every x86 build."""
    x_shape = (1, 3, 3, 4)
    layers: list[dict[str, object]] = [
        {"weight": (3, 2, 5, 5), "strides": [2, 5], "pads": [1, 0, 0, 2]},
        {"weight": (3, 2, 16, 16), "strides": [8, 8], "pads": [4, 4, 4, 4], "relu": True},
        {"weight": (3, 2, 64, 64), "strides": [32, 32], "pads": [16, 16, 16, 16]},
    ]
    assert_matches_onnxruntime(conv_transpose_model(layers, x_shape), feeds(x_shape),
                               runnable_x86_tags())


# -- random single layers -----------------------------------------------------------------


@st.composite
def single_conv_transposes(draw: st.DrawFn) -> tuple[onnx.ModelProto, tuple[int, ...]]:
    groups = draw(st.sampled_from((1, 1, 2, 3)))
    kernel = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    strides = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilations = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    x_shape = (draw(st.integers(1, 2)), groups * draw(st.integers(1, 3)),
               draw(st.integers(1, 9)), draw(st.integers(1, 12)))
    begin, end = [], []
    for a in range(2):
        full = (x_shape[2 + a] - 1) * strides[a] + (kernel[a] - 1) * dilations[a] + 1
        begin.append(draw(st.integers(0, min(3, full - 1))))
        end.append(draw(st.integers(0, min(3, full - 1 - begin[-1]))))
    layer = {"weight": (x_shape[1], draw(st.integers(1, 4)), *kernel),
             "strides": list(strides), "dilations": list(dilations), "group": groups,
             "pads": begin + end,
             "output_padding": [draw(st.integers(0, s - 1)) for s in strides],
             "bias": draw(st.booleans()), "relu": draw(st.booleans())}
    return conv_transpose_model([layer], x_shape, seed=draw(st.integers(0, 99))), x_shape


@settings(max_examples=fuzz_examples(25), deadline=None,
          derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(single_conv_transposes())
def test_random_single_layers(case: tuple[onnx.ModelProto, tuple[int, ...]]) -> None:
    model, x_shape = case
    note(str(import_onnx(model)))
    assert_matches_onnxruntime(model, feeds(x_shape), runnable_x86_tags())


# -- the ONNX attribute forms ---------------------------------------------------------------


@pytest.mark.parametrize("attrs", [
    {"auto_pad": "SAME_UPPER", "strides": [2, 2]},
    {"auto_pad": "SAME_LOWER", "strides": [2, 3]},
    {"auto_pad": "SAME_UPPER", "strides": [1, 1], "kernel_shape": [3, 3]},
    {"auto_pad": "VALID", "strides": [2, 2], "output_padding": [1, 0]},
    {"output_shape": [10, 12], "strides": [2, 2]},  # larger than the full output
    {"output_shape": [8, 11], "strides": [2, 2], "pads": [5, 5, 5, 5]},  # pads ignored
    {"output_shape": [8, 10], "strides": [2, 2], "auto_pad": "SAME_UPPER"},  # odd totals
    {"output_shape": [8, 10], "strides": [2, 2], "auto_pad": "SAME_LOWER"},
    {"output_shape": [10, 12], "strides": [2, 2], "auto_pad": "SAME_LOWER"},
    {"output_shape": [8, 11], "strides": [2, 2], "output_padding": [1, 1]},
], ids=str)
def test_auto_pad_and_output_shape_as_onnxruntime(attrs: dict[str, object]) -> None:
    x_shape = (1, 2, 4, 5)
    model = conv_transpose_model([{"weight": (2, 3, 3, 3), **attrs}], x_shape)
    assert_matches_onnxruntime(model, feeds(x_shape))


def test_col2im_node_as_onnxruntime() -> None:
    """ONNX Col2Im with strides, dilations and uneven pads, then a Relu (fused)."""
    image, block = (9, 11), (2, 3)
    strides, dilations, pads = (2, 1), (1, 2), (1, 0, 2, 1)
    grid = [(image[a] + pads[a] + pads[a + 2] - (block[a] - 1) * dilations[a] - 1)
            // strides[a] + 1 for a in range(2)]
    x_shape = (2, 3 * block[0] * block[1], grid[0] * grid[1])
    nodes = [helper.make_node("Col2Im", ["x", "image", "block"], ["t"], name="fold",
                              strides=list(strides), dilations=list(dilations),
                              pads=list(pads)),
             helper.make_node("Relu", ["t"], ["y"])]
    inits = [numpy_helper.from_array(np.array(image, np.int64), "image"),
             numpy_helper.from_array(np.array(block, np.int64), "block")]
    graph = helper.make_graph(
        nodes, "col2im", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, (2, 3, *image))], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              ir_version=IR_VERSION)
    (layer,) = [la for la in import_onnx(model).layers if isinstance(la, Col2Im)]
    assert layer.activation is not None
    assert_matches_onnxruntime(model, feeds(x_shape), runnable_x86_tags())


# -- pruned weights: which kernel runs -------------------------------------------------------


def pattern_pruned_weight(c_in: int, c_out: int, seed: int = 5) -> np.ndarray:
    """(C_in, C_out, 3, 3), each kernel one of ``CENTRE_PLUS_3``, a third removed."""
    rng = np.random.default_rng(seed)
    masks = CENTRE_PLUS_3[rng.integers(0, len(CENTRE_PLUS_3), (c_in, c_out))]
    masks &= (rng.random((c_in, c_out)) > 0.33)[..., None, None]
    return (rng.standard_normal((c_in, c_out, 3, 3)) * masks).astype(np.float32)


@pytest.mark.parametrize(("stride", "expected"), [(1, "pattern"), (2, "sparse")])
def test_pruned_weights_reach_the_sparse_kernels(stride: int, expected: str) -> None:
    """Stride 1: a flipped pattern is a pattern, so the conv is pattern style and runs
    the pattern kernel. Stride 2: the pruned weight makes the 1x1 conv unstructured
    sparse, which runs the sparse pointwise kernel."""
    x_shape = (1, 32, 14, 14)
    weight = pattern_pruned_weight(32, 32)
    model = conv_transpose_model([{"weight": weight, "strides": [stride, stride],
                                   "pads": [1, 1, 1, 1],
                                   "output_padding": [stride - 1, stride - 1]}], x_shape)
    graph = import_onnx(model)
    (conv,) = graph.convs()
    if stride == 1:
        assert conv.kernel_shape == (3, 3) and conv.sparsity is Sparsity.PATTERN
        assert conv.pattern is not None and len(conv.pattern.library) == len(CENTRE_PLUS_3)
        flipped = {m.tobytes() for m in CENTRE_PLUS_3[:, ::-1, ::-1]}
        assert {m.tobytes() for m in conv.pattern.library.masks} == flipped
    else:
        assert conv.kernel_shape == (1, 1) and conv.sparsity is Sparsity.UNSTRUCTURED
        assert conv.nonzero_weights == np.count_nonzero(weight)
    for tag in runnable_x86_tags():
        compiled = patcc.compile(model, tag, tune=False)
        kernels = {code.layer.name: code.kernel for code in compiled.plan.codes}
        assert kernels[conv.name] == expected, kernels
        want = run_onnxruntime(model, feeds(x_shape), ["y0"])["y0"]
        assert_close(compiled.load().run(feeds(x_shape))["y0"], want, tag)


# -- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("layer", "x_shape", "message"), [
    ({"weight": (3, 2, 3, 3), "group": 2}, (1, 3, 4, 4), "group 2 must be a positive"),
    ({"weight": (4, 2, 3, 3), "strides": [2, 2], "output_padding": [2, 0]}, (1, 4, 4, 4),
     "adds 2 row(s) on axis 2"),
    ({"weight": (4, 2, 3), "strides": [2]}, (1, 4, 4, 4), "weight rank 3"),
    ({"weight": (4, 2, 3, 3)}, (1, 4, 4), "rank 3"),
    ({"weight": (4, 2, 3, 3)}, (1, 3, 4, 4), "the input has 3 channels"),
    ({"weight": (4, 2, 3, 3), "pads": [3, 0, 3, 0]}, (1, 4, 1, 4), "crop all 3 rows"),
    ({"weight": (4, 2, 2, 2), "strides": [3, 3], "auto_pad": "SAME_UPPER"}, (1, 4, 4, 4),
     "negative padding"),
    ({"weight": (4, 2, 3, 3), "strides": [2, 2], "output_shape": [12, 9]}, (1, 4, 4, 4),
     "ONNX allows at most stride - 1 = 1"),
    ({"weight": (4, 2, 3, 3), "kernel_shape": [2, 2]}, (1, 4, 4, 4),
     "does not match the weight"),
    ({"weight": (4, 2, 3, 3), "dilations": [0, 1]}, (1, 4, 4, 4), "dilations [0, 1]"),
])
def test_bad_input_names_the_node(layer: dict[str, object], x_shape: tuple[int, ...],
                                  message: str) -> None:
    model = conv_transpose_model([layer], x_shape)
    with pytest.raises(PatccError) as info:
        import_onnx(model)
    text = str(info.value)
    assert "node 'ct0' (ConvTranspose)" in text and message in text, text
    assert "\n" not in text


def test_a_bad_bias_names_the_node() -> None:
    model = conv_transpose_model([{"weight": (4, 2, 3, 3)}], (1, 4, 4, 4))
    model.graph.initializer[1].CopyFrom(numpy_helper.from_array(np.zeros(3, np.float32), "b0"))
    with pytest.raises(PatccError, match=r"node 'ct0'.*bias has shape \[3\]"):
        import_onnx(model)


def test_col2im_layer_checks_its_output_size() -> None:
    """The output may exceed the taps' cropped image by up to max(stride, dilation) - 1
    rows (output padding), no more and no less."""
    def layer(out: int) -> Col2Im:
        return Col2Im(name="c", inputs=("x",), outputs=("y",), channels=2, kernel=(3, 3),
                      output_size=(out, 9), strides=(2, 2), pads=(1, 1, 1, 1))

    assert layer(9).infer_shapes([(1, 18, 5, 5)]) == ((1, 2, 9, 9),)
    assert layer(10).infer_shapes([(1, 18, 5, 5)]) == ((1, 2, 10, 9),)
    for bad in (8, 11):
        with pytest.raises(IRError, match="expected 9 to 10"):
            layer(bad).infer_shapes([(1, 18, 5, 5)])
    with pytest.raises(IRError, match="17 channels"):
        layer(9).infer_shapes([(1, 17, 5, 5)])


# -- the torch frontend ----------------------------------------------------------------------


class _Decoder(torch.nn.Module):
    """ConvTransposes as a U-Net and a segmentation head use them, and odd forms:
    grouped and dilated, output_padding up to max(stride, dilation) - 1, the
    functional form, and one that torch's convolution op expresses as transposed."""

    def __init__(self) -> None:
        super().__init__()
        self.up = torch.nn.ConvTranspose2d(8, 6, 2, stride=2)
        self.grouped = torch.nn.ConvTranspose2d(6, 4, 3, stride=2, padding=1,
                                                output_padding=1, groups=2)
        self.same = torch.nn.ConvTranspose2d(4, 4, 3, padding=1, bias=False)
        self.dilated = torch.nn.ConvTranspose2d(4, 3, 3, stride=2, dilation=3, padding=2,
                                                output_padding=2)
        self.wide = torch.nn.ConvTranspose2d(3, 2, 3, dilation=2, output_padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.up(x))
        y = self.same(self.grouped(y))
        y = torch.nn.functional.conv_transpose2d(y, self.dilated.weight, self.dilated.bias,
                                                 stride=2, padding=2, output_padding=2,
                                                 dilation=3)
        return self.wide(torch.sigmoid(y))


def test_torch_conv_transpose_as_torch() -> None:
    module = _Decoder().eval()
    x = torch.randn(2, 8, 5, 6)
    with torch.no_grad():
        want = module(x).numpy()
    graph = import_module(module, (x,))
    assert sum(isinstance(layer, Col2Im) for layer in graph.layers) == 3
    (got,) = run(graph, [x.numpy()]).values()
    assert_close(got, want, "interpreter")
    for tag in runnable_x86_tags():
        assert_close(patcc.compile(module, tag, example_inputs=(x,), tune=False)(x.numpy()),
                     want, tag)


# -- the pruning bridge ----------------------------------------------------------------------


def test_pruning_keeps_conv_transpose_weights(tmp_path: Path) -> None:
    """The bridge rebuilds ConvTranspose as constant torch code: pattern pruning prunes
    the model's 3x3 Conv only, and writing back leaves the ConvTranspose weights."""
    from patcc.frontends.pruning import pattern_prune
    from patcc.frontends.pruning.onnx_bridge import import_for_pruning, write_back

    x_shape = (1, 4, 6, 6)
    model = conv_transpose_model([{"weight": (4, 4, 3, 3), "strides": [2, 2],
                                   "pads": [1, 1, 0, 0], "output_padding": [1, 1]}], x_shape)
    rng = np.random.default_rng(2)
    weights = {"wa": (4, 4, 3, 3), "wc": (4, 4, 3, 3)}
    model.graph.initializer.extend(numpy_helper.from_array(
        rng.standard_normal(shape).astype(np.float32), name) for name, shape in weights.items())
    model.graph.node.extend([
        helper.make_node("Conv", ["y0", "wa"], ["a"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("ConvTranspose", ["a", "wc"], ["z"], name="flat", pads=[0, 2, 1, 0])])
    del model.graph.output[:]
    model.graph.output.append(helper.make_tensor_value_info("z", TensorProto.FLOAT,
                                                            ["n", "c", "h", "w"]))
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    proto, torch_model = import_for_pruning(str(path))
    x = feeds(x_shape)["x"]
    with torch.no_grad():
        got = torch_model.module(torch.from_numpy(x)).numpy()
    assert_close(got, run_onnxruntime(model, {"x": x}, ["z"])["z"], "torch rebuild")
    assert [layer.name for layer in torch_model.convs.values()] == ["conv"]
    pattern_prune(torch_model.module, 3.0, 4)
    pruned = write_back(proto, torch_model, {})
    before = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    after = {i.name: numpy_helper.to_array(i) for i in pruned.graph.initializer}
    for name in ("w0", "b0", "wc"):
        np.testing.assert_array_equal(after[name], before[name])
    assert np.count_nonzero(after["wa"]) < np.count_nonzero(before["wa"])
