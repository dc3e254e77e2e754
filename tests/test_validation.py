"""Malformed and hostile models: the frontend rejects them with one clear line before
any backend runs, compile time does not grow with an attribute's value, and NaN
goes through every activation, comparison and pooling as onnxruntime lets it."""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from patcc.errors import PatccError
from patcc.frontends.onnx import import_onnx
from patcc.ir.layers import MAX_TENSOR_ELEMENTS, _padding_only_window
from support.compare import run_onnxruntime
from support.targets import X86_TAGS, runnable_target

OPSET = 17


def model(nodes: list[onnx.NodeProto], inputs: list[onnx.ValueInfoProto],
          outputs: list[onnx.ValueInfoProto], inits: tuple[onnx.TensorProto, ...] = (),
          name: str = "m") -> onnx.ModelProto:
    graph = helper.make_graph(nodes, name, inputs, outputs, list(inits))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                             ir_version=8)


def value(name: str, shape: list[int | None] | None = None,
          dtype: int = TensorProto.FLOAT) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, dtype, [1, 3, 8, 8] if shape is None else shape)


def out(name: str = "y") -> onnx.ValueInfoProto:
    return value(name, [None] * 4)


def const(name: str, array: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(array, name)


def conv_model(**attrs: object) -> onnx.ModelProto:
    weight = const("w", np.ones((4, 3, 3, 3), np.float32))
    return model([helper.make_node("Conv", ["x", "w"], ["y"], name="c", **attrs)],
                 [value("x")], [out()], (weight,))


def pool_model(op: str = "MaxPool", **attrs: object) -> onnx.ModelProto:
    return model([helper.make_node(op, ["x"], ["y"], name="p", **attrs)], [value("x")], [out()])


def unary(op: str, x_shape: list[int] | None = None, dtype: int = TensorProto.FLOAT,
          ) -> onnx.ModelProto:
    return model([helper.make_node(op, ["x"], ["y"])], [value("x", x_shape, dtype)], [out()])


def batch_norm(size: int, var: float) -> onnx.ModelProto:
    inits = (const("s", np.ones(size, np.float32)), const("b", np.ones(size, np.float32)),
             const("m", np.zeros(size, np.float32)), const("v", np.full(size, var, np.float32)))
    return model([helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"])],
                 [value("x")], [out()], inits)


def gemm(b_shape: tuple[int, int], c_shape: tuple[int, ...] | None) -> onnx.ModelProto:
    inits = [const("b", np.ones(b_shape, np.float32))]
    names = ["f", "b"]
    if c_shape is not None:
        inits.append(const("c", np.ones(c_shape, np.float32)))
        names.append("c")
    return model([helper.make_node("Flatten", ["x"], ["f"]),
                  helper.make_node("Gemm", names, ["y"], transB=1)],
                 [value("x")], [value("y", [None, None])], tuple(inits))


def reshape(shape: np.ndarray) -> onnx.ModelProto:
    return model([helper.make_node("Reshape", ["x", "s"], ["y"])], [value("x")],
                 [value("y", None)], (const("s", shape),))


def relu_outputs(*names: str) -> onnx.ModelProto:
    return model([helper.make_node("Relu", ["x"], ["y"])], [value("x")],
                 [out(n) for n in names])


def assert_rejected(m: onnx.ModelProto | str | Path, *needles: str) -> str:
    """Import fails with a PatccError of one line holding every needle, and no
    numpy warning is printed on the way."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(PatccError) as info:
            import_onnx(m)
    message = str(info.value)
    assert "\n" not in message, message
    for needle in needles:
        assert needle in message, f"{needle!r} not in {message!r}"
    return message


BAD_MODELS = {
    "stride 0": (lambda: conv_model(strides=[0, 0]), ("node 'c'", "strides [0, 0]")),
    "stride (1, 0)": (lambda: conv_model(strides=[1, 0]), ("strides [1, 0]",)),
    "negative stride": (lambda: conv_model(strides=[-1, -1]), ("strides [-1, -1]",)),
    "one stride": (lambda: conv_model(strides=[1]), ("strides [1]", "2 integers")),
    "dilation 0": (lambda: conv_model(dilations=[0, 0]), ("dilations [0, 0]",)),
    "negative dilation": (lambda: conv_model(dilations=[-1, -1]), ("dilations",)),
    "one dilation": (lambda: conv_model(dilations=[1]), ("dilations [1]",)),
    "negative pad": (lambda: conv_model(pads=[1, -1, 1, 1]), ("pads",)),
    "three pads": (lambda: conv_model(pads=[1, 1, 1]), ("pads",)),
    "group 0": (lambda: conv_model(group=0), ("group 0",)),
    "pads 2^31-1": (lambda: conv_model(pads=[2**31 - 1] * 4), ("padded input", "2^31 - 1")),
    "pads 2^40": (lambda: conv_model(pads=[2**40] * 4), ("padded input",)),
    "pool stride 0": (lambda: pool_model(kernel_shape=[2, 2], strides=[0, 1]), ("strides",)),
    "pool no kernel": (lambda: pool_model(), ("kernel_shape", "missing")),
    "pool kernel 0": (lambda: pool_model(kernel_shape=[0, 2]), ("kernel_shape",)),
    "pool padding-only window": (
        lambda: pool_model(kernel_shape=[2, 2], pads=[3, 0, 0, 0]), ("reads only padding",)),
    "input dim 2^31": (lambda: unary("Relu", [1, 3, 2**31, 8]),
                       ("input 'x'", "2147483648", "limit")),
    "input dim 0": (lambda: unary("Relu", [1, 0, 8, 8]), ("input 'x'", "1x0x8x8", ">= 1")),
    "undefined dtype": (lambda: unary("Relu", dtype=TensorProto.UNDEFINED),
                        ("input 'x'", "dtype undefined")),
    "int8 input": (lambda: unary("Relu", dtype=TensorProto.INT8), ("dtype int8",)),
    "reshape zeros past the rank": (lambda: reshape(np.zeros(5, np.int64)),
                                    ("past the input's rank 4",)),
    "reshape two -1": (lambda: reshape(np.array([-1, -1], np.int64)), ("more than one -1",)),
    "reshape -2": (lambda: reshape(np.array([-2, 96], np.int64)), ("below -1",)),
    "reshape float shape": (lambda: reshape(np.array([1, 192], np.float32)), ("int64",)),
    "reshape -1 does not divide": (lambda: reshape(np.array([-1, 7], np.int64)),
                                   ("cannot reshape",)),
    "gemm C": (lambda: gemm((10, 192), (7,)), ("C of shape (7,)",)),
    "gemm B": (lambda: gemm((10, 191), None), ("191",)),
    "batchnorm size": (lambda: batch_norm(5, 1.0), ("scale has shape (5,)", "(3,)")),
    "batchnorm negative variance": (lambda: batch_norm(3, -2.0),
                                    ("var + epsilon must be positive", "channel 0")),
    "output listed twice": (lambda: relu_outputs("y", "y"), ("output 'y'", "listed twice")),
    "output is an input": (lambda: relu_outputs("y", "x"), ("output 'x'", "graph input")),
    "graph without nodes": (lambda: model([], [value("x")], [value("x")]), ("output 'x'",)),
    "no outputs": (lambda: model([helper.make_node("Relu", ["x"], ["y"])], [value("x")], []),
                   ("no outputs",)),
    "clip bound of two values": (
        lambda: model([helper.make_node("Clip", ["x", "lo"], ["y"])], [value("x")], [out()],
                      (const("lo", np.zeros(2, np.float32)),)), ("one number",)),
    "flatten axis": (lambda: model([helper.make_node("Flatten", ["x"], ["y"], axis=7)],
                                   [value("x")], [value("y", [None, None])]), ("axis 7",)),
}


@pytest.mark.parametrize("case", sorted(BAD_MODELS))
def test_malformed_models_are_rejected_in_one_line(case: str) -> None:
    make, needles = BAD_MODELS[case]
    assert_rejected(make(), *needles)


@pytest.mark.parametrize("change", [-4, 1, 2, 4])
def test_raw_data_of_the_wrong_length(tmp_path: Path, change: int) -> None:
    m = conv_model()
    w = m.graph.initializer[0]
    w.raw_data = w.raw_data[:change] if change < 0 else w.raw_data + bytes(change)
    path = tmp_path / "m.onnx"
    path.write_bytes(m.SerializeToString())
    # too short: the ONNX checker says so; too long or ragged: reading it does
    assert_rejected(path, "raw_data" if change < 0 else "initializer 'w': cannot read")


def test_names_that_are_not_text(tmp_path: Path) -> None:
    # protobuf hands over a string field holding invalid UTF-8 as bytes
    data = bytearray(conv_model().SerializeToString())
    at = data.index(b"\x1a\x01c")  # the node's name (field 3): "c"
    data[at + 2] = 0xFF
    path = tmp_path / "m.onnx"
    path.write_bytes(bytes(data))
    assert_rejected(path, str(path))


def test_attribute_string_that_is_not_text() -> None:
    m = pool_model(kernel_shape=[2, 2])
    m.graph.node[0].attribute.append(helper.make_attribute("auto_pad", b"\xff\xfe"))
    assert_rejected(m, "node 'p'", "auto_pad")


def _external(tmp_path: Path, location: str, **fields: str) -> Path:
    m = conv_model()
    w = m.graph.initializer[0]
    w.ClearField("raw_data")
    w.data_location = TensorProto.EXTERNAL
    for key, val in {"location": location, **fields}.items():
        entry = w.external_data.add()
        entry.key, entry.value = key, val
    path = tmp_path / "model" / "m.onnx"
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(m.SerializeToString())
    return path


@pytest.mark.parametrize("location", ["../secret.bin", "/etc/passwd", "/dev/zero",
                                      "file:///etc/passwd", "~/w.bin", "a\x00b", "x" * 5000,
                                      "link.bin", "fifo.bin", "sub"])
def test_external_data_stays_inside_the_model_directory(tmp_path: Path, location: str) -> None:
    path = _external(tmp_path, location, length="432")
    (tmp_path / "secret.bin").write_bytes(bytes(432))
    (path.parent / "link.bin").symlink_to(tmp_path / "secret.bin")
    os.mkfifo(path.parent / "fifo.bin")
    (path.parent / "sub").mkdir()
    assert_rejected(path, str(path), "initializer 'w': external data")


def test_external_data_within_its_file(tmp_path: Path) -> None:
    path = _external(tmp_path, "w.bin", offset="100", length="432")
    (path.parent / "w.bin").write_bytes(bytes(432))
    assert_rejected(path, "do not lie inside 'w.bin' (432 bytes)")
    good = _external(tmp_path, "w.bin", offset="0", length="432")
    graph = import_onnx(good)  # the same file, in bounds, loads
    assert graph.layers[0].weight.shape == (4, 3, 3, 3)


def test_external_data_of_a_model_in_memory() -> None:
    m = conv_model()
    m.graph.initializer[0].data_location = TensorProto.EXTERNAL
    assert_rejected(m, "external file", "pass the model's path")


@settings(max_examples=300, deadline=None)
@given(size=st.integers(1, 12), kernel=st.integers(1, 5), stride=st.integers(1, 4),
       dilation=st.integers(1, 4), pad_lo=st.integers(0, 9), pad_hi=st.integers(0, 9),
       ceil=st.booleans())
def test_padding_only_windows_found_without_a_loop_over_positions(
        size: int, kernel: int, stride: int, dilation: int, pad_lo: int, pad_hi: int,
        ceil: bool) -> None:
    span = (kernel - 1) * dilation + 1
    num = size + pad_lo + pad_hi - span
    if num < 0:
        return
    outs = (-(-num // stride) if ceil else num // stride) + 1
    if ceil and (outs - 1) * stride >= size + pad_lo:
        outs -= 1
    expected = next((i for i in range(outs) if not any(
        0 <= i * stride - pad_lo + j * dilation < size for j in range(kernel))), None)
    assert _padding_only_window(size, outs, kernel, stride, pad_lo, dilation) == expected


def test_huge_pool_windows_check_in_constant_time() -> None:
    # 2^30 output positions along one axis: a loop over positions would not finish
    m = model([helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[1, 1])],
              [value("x", [1, 1, 1, 2**30])], [out()])
    graph = import_onnx(m)
    assert graph.shapes["y"] == (1, 1, 1, 2**30)
    assert MAX_TENSOR_ELEMENTS >= 2**30


def test_large_strides_compile_to_code_that_grows_with_the_kernel() -> None:
    """A stride of 1000: the pattern kernel's pad phase copies only the stride phases
    that taps read (at most one per tap), not 10^6 of them."""
    from patcc.backends.llvm.pattern import _layer_taps
    from patcc.passes.compress import compress_conv

    weight = np.zeros((8, 1, 3, 3), np.float32)
    weight[:, :, [0, 1, 1, 2], [1, 0, 1, 1]] = 1.0
    m = model([helper.make_node("Conv", ["x", "w"], ["y"], strides=[1000, 999], group=8,
                                dilations=[2, 3], pads=[1, 1, 1, 1])],
              [value("x", [1, 8, 2100, 2100])], [out()], (const("w", weight),))
    graph = import_onnx(m)
    (conv,) = graph.convs()
    taps, phases = _layer_taps(conv, conv.compressed or compress_conv(conv))
    assert len(phases) <= 4 and all(t.phase < len(phases) for ts in taps for t in ts)


@pytest.mark.parametrize("tag", X86_TAGS)
def test_large_strides_run_correctly(tag: str) -> None:
    import patcc
    from patcc.runtime.interpreter import run

    runnable_target(tag)
    weight = np.zeros((6, 1, 3, 3), np.float32)
    weight[:, :, [0, 1, 1, 2], [1, 0, 1, 1]] = np.arange(1, 5, dtype=np.float32)
    m = model([helper.make_node("Conv", ["x", "w"], ["y"], strides=[37, 41], group=6,
                                dilations=[2, 3], pads=[1, 2, 3, 4])],
              [value("x", [1, 6, 120, 130])], [out()], (const("w", weight),))
    x = np.random.default_rng(3).standard_normal((1, 6, 120, 130)).astype(np.float32)
    compiled = patcc.compile(m, tag, tune=False)
    (code,) = compiled.plan.codes
    assert code.kernel in ("depthwise", "pattern"), code.kernel
    got = compiled.load().run({"x": x})["y"]
    ref = run(compiled.graph, {"x": x})["y"]
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


def test_deep_graphs_keep_one_function_per_phase() -> None:
    """Phases stay out of line: LLVM's O3 on one dispatcher holding every layer's code
    grew faster than the number of layers (a 2000-layer chain took minutes)."""
    from patcc.backends.llvm import codegen, toolchain
    from patcc.backends.target import get_target

    n = 40
    nodes = [helper.make_node("Sigmoid", [f"t{i}" if i else "x"], [f"t{i + 1}"])
             for i in range(n)]
    m = model(nodes, [value("x")], [value(f"t{n}")])
    target = get_target("x86_64-avx2")
    plan = codegen.plan_module(import_onnx(m), target, {})
    optimised = toolchain.optimize(codegen.emit_module(plan), target)
    defined = {f.name for f in optimised.functions if not f.is_declaration}
    phases = [name for name in defined if name.startswith("L")]
    assert len(phases) == n, sorted(defined)


# ---------------------------------------------------------------------------------------
# NaN
# ---------------------------------------------------------------------------------------

NAN_INPUT = np.array([np.nan, -1, 2, np.inf, -np.inf, 0.5, -0.5, 3, 7] * 2,
                     np.float32).reshape(1, 2, 3, 3)
FEEDS = {"x": NAN_INPUT, "x2": np.roll(NAN_INPUT, 4)}


def nan_model() -> onnx.ModelProto:
    """The NaN-sensitive operators side by side, each on the same input."""
    nodes = [
        helper.make_node("Relu", ["x"], ["relu"]),
        helper.make_node("Clip", ["x", "lo", "hi"], ["clip"]),
        helper.make_node("Clip", ["x", "nan", "hi"], ["clip_nan_bound"]),
        helper.make_node("HardSigmoid", ["x"], ["hard_sigmoid"]),
        helper.make_node("HardSwish", ["x"], ["hard_swish"]),
        helper.make_node("LeakyRelu", ["x"], ["leaky"], alpha=0.1),
        helper.make_node("Max", ["x", "x2"], ["max"]),
        helper.make_node("Min", ["x", "x2"], ["min"]),
        helper.make_node("Conv", ["x", "w"], ["conv"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv"], ["conv_relu"]),  # fused epilogue
        helper.make_node("MaxPool", ["x"], ["maxpool"], kernel_shape=[2, 2]),
        helper.make_node("GlobalMaxPool", ["x"], ["global_max"]),
        helper.make_node("AveragePool", ["x"], ["avgpool"], kernel_shape=[2, 2]),
    ]
    names = [n.output[0] for n in nodes if n.output[0] != "conv"]
    # Non-zero weights: a zero weight is never multiplied by patcc's sparse kernels,
    # so a NaN or inf input reaches an output only through non-zero ones (README).
    w = np.linspace(-1, 1, 36, dtype=np.float32).reshape(2, 2, 3, 3) + 0.01
    inits = (const("lo", np.array(0, np.float32)), const("hi", np.array(6, np.float32)),
             const("nan", np.array(np.nan, np.float32)), const("w", w))
    return model(nodes, [value("x", [1, 2, 3, 3]), value("x2", [1, 2, 3, 3])],
                 [out(n) for n in names], inits)


def assert_same_nans(got: np.ndarray, ref: np.ndarray, name: str) -> None:
    assert np.array_equal(np.isnan(got), np.isnan(ref)), f"{name}: {got.ravel()} vs {ref.ravel()}"
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-6, err_msg=name)


# onnxruntime's MaxPool result depends on where the NaN sits in the window (see the
# README): patcc, like torch, propagates it; compared with the interpreter only.
ORT_UNDEFINED = {"maxpool", "global_max"}


def test_interpreter_nan_semantics_match_onnxruntime() -> None:
    from patcc.runtime.interpreter import run

    m = nan_model()
    graph = import_onnx(m)
    got = run(graph, FEEDS)
    ref = run_onnxruntime(m, FEEDS, list(got))
    for name in got:
        if name not in ORT_UNDEFINED:
            assert_same_nans(got[name], ref[name], name)
    assert np.isnan(got["maxpool"][0, 0, 0, 0]) and np.isnan(got["global_max"][0, 0])
    assert math.isnan(float(got["relu"][0, 0, 0, 0]))


@pytest.mark.parametrize("tag", X86_TAGS)
def test_compiled_nan_semantics_match_the_interpreter(tag: str) -> None:
    import patcc
    from patcc.runtime.interpreter import run

    runnable_target(tag)
    compiled = patcc.compile(nan_model(), tag, tune=False)
    assert any(getattr(c.layer, "activation", None) is not None and c.layer.op == "Conv"
               for c in compiled.plan.codes), "the conv's Relu is fused"
    got = compiled.load().run(FEEDS)
    ref = run(compiled.graph, FEEDS)
    for name, value_ in ref.items():
        assert_same_nans(got[name], value_, name)


def _generator(op: str, *inputs: np.ndarray, **attrs: object) -> onnx.ModelProto:
    """``op`` on constant inputs (folded at import), added to the input x."""
    names = [f"in{i}" for i in range(len(inputs))]
    return model([helper.make_node(op, names, ["big"], name="gen", **attrs),
                  helper.make_node("Add", ["x", "big"], ["y"])], [value("x")], [out()],
                 tuple(const(n, v) for n, v in zip(names, inputs, strict=True)))


HUGE_FOLDS = {
    "ConstantOfShape": lambda: _generator("ConstantOfShape", np.array([2**20, 2**20], np.int64)),
    "Range": lambda: _generator("Range", *(np.array(v, np.int64) for v in (0, 2**40, 1))),
    "Range of floats": lambda: _generator("Range", *(np.array(v, np.float32)
                                                     for v in (0.0, 1e12, 0.5))),
    "Expand": lambda: _generator("Expand", np.ones(1, np.float32),
                                 np.array([2**15, 2**15], np.int64)),
    "Tile": lambda: _generator("Tile", np.ones((2, 2), np.float32),
                               np.array([2**14, 2**14], np.int64)),
    "Gather": lambda: _generator("Gather", np.ones((4, 2**20), np.float32),
                                 np.zeros(2**10, np.int64)),
    # measured by onnx's shape inference, for any operator: a constant up-sampled,
    # padded, or an outer product
    "Resize": lambda: _generator("Resize", np.ones((1, 1, 4, 4), np.float32),
                                 np.zeros(0, np.float32),
                                 np.array([1, 1, 3000, 3000], np.float32)),
    "Pad": lambda: _generator("Pad", np.ones((1, 1, 4, 4), np.float32),
                              np.array([0, 0, 0, 0, 0, 0, 30000, 30000], np.int64)),
    "MatMul": lambda: _generator("MatMul", np.ones((30000, 1), np.float32),
                                 np.ones((1, 30000), np.float32)),
}


@pytest.mark.parametrize("case", sorted(HUGE_FOLDS))
def test_huge_folded_constants_are_refused_before_they_are_computed(case: str) -> None:
    """A constant computed at import may have 2^26 elements at most, measured before
    it is computed (evaluated, these take tens of seconds or more memory than there
    is)."""
    assert_rejected(HUGE_FOLDS[case](), "node 'gen'", "would compute a constant of",
                    "limit of 67108864 (2^26)")


def test_fold_errors_stay_one_line() -> None:
    assert_rejected(_generator("Range", *(np.array(v, np.int64) for v in (0, 5, 0))),
                    "node 'gen' (Range)", "cannot fold constant node")
    assert_rejected(_generator("Reshape", np.ones(6, np.float32), np.array([4, 4], np.int64)),
                    "node 'gen' (Reshape)", "cannot fold constant node")


def test_tile_of_a_computed_tensor_checks_the_output_first() -> None:
    """The repeats are checked against the size limit before any layer is built (2^30
    copies of a Concat input would exhaust memory); many repeats build by doubling."""
    repeats = const("r", np.array([1, 1, 2**30, 1], np.int64))
    assert_rejected(model([helper.make_node("Tile", ["x", "r"], ["y"], name="t")],
                          [value("x")], [out()], (repeats,)), "node 't' (Tile)", "2^31 - 1")
    repeats = const("r", np.array([1, 1, 1, 1000], np.int64))
    graph = import_onnx(model([helper.make_node("Tile", ["x", "r"], ["y"], name="t")],
                              [value("x")], [out()], (repeats,)))
    assert len(graph.layers) <= 2 * math.ceil(math.log2(1000))
    from patcc.runtime.interpreter import run

    x = np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)
    np.testing.assert_array_equal(run(graph, [x])["y"], np.tile(x, (1, 1, 1, 1000)))
