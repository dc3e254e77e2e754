"""The reference interpreter against naive loops written plainly in this file.

The interpreter is the oracle for every backend, so it gets an oracle of its own:
loop-per-element convolution and pooling that follow the ONNX definitions literally
(checked against ``onnx.reference.ops``), activation formulas written with ``math``,
index-mapping Slice and Pad. Layers are built directly and run with ``evaluate``.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from patcc import PatccError
from patcc.ir import (
    ACTIVATION_KINDS,
    Activation,
    Binary,
    Conv,
    Dense,
    GlobalPool,
    Graph,
    Pad,
    Pool,
    Reshape,
    Slice,
    Softmax,
    TensorType,
    Unary,
)
from patcc.runtime import evaluate, run
from support.fuzz import fuzz_examples

EXAMPLES = fuzz_examples(100)

fuzz = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


def random_array(seed: int, shape: tuple[int, ...]) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


seeds = st.integers(0, 2**32 - 1)


# ---------------------------------------------------------------------------------------
# Activations: each kind against its formula
# ---------------------------------------------------------------------------------------


def activation_formula(kind: str, alpha: float, beta: float, v: float) -> float:
    """One element of each activation, as the ONNX operator documents define it."""
    if kind == "relu":
        return max(v, 0.0)
    if kind == "clip":
        return min(max(v, alpha), beta)
    if kind == "leaky_relu":
        return v if v >= 0 else alpha * v
    if kind == "sigmoid":
        return 1 / (1 + math.exp(-v)) if v >= 0 else math.exp(v) / (1 + math.exp(v))
    if kind == "hard_sigmoid":
        return max(0.0, min(1.0, alpha * v + beta))
    if kind == "hard_swish":
        return v * max(0.0, min(1.0, v / 6 + 0.5))
    if kind == "tanh":
        return math.tanh(v)
    if kind == "silu":
        return v * activation_formula("sigmoid", 0, 0, v)
    if kind in ("elu", "selu"):
        y = v if v > 0 else alpha * math.expm1(v)
        return y if kind == "elu" else beta * y
    if kind == "softplus":
        return max(v, 0.0) + math.log1p(math.exp(-abs(v)))
    if kind == "mish":
        return v * math.tanh(activation_formula("softplus", 0, 0, v))
    if kind == "gelu":
        return 0.5 * v * (1 + math.erf(v / math.sqrt(2)))
    if kind == "gelu_tanh":
        return 0.5 * v * (1 + math.tanh(math.sqrt(2 / math.pi) * (v + 0.044715 * v**3)))
    if kind == "erf":
        return math.erf(v)
    if kind == "exp":
        return math.exp(v)
    if kind == "neg":
        return -v
    if kind == "abs":
        return abs(v)
    # defined on part of the line only: NaN (or inf) outside it, as numpy answers
    with np.errstate(all="ignore"):
        if kind == "log":
            return float(np.log(np.float64(v)))
        if kind == "sqrt":
            return float(np.sqrt(np.float64(v)))
        if kind == "reciprocal":
            return float(np.float64(1) / np.float64(v))
        if kind == "pow":
            return float(np.power(np.float64(v), np.float64(alpha)))
    raise AssertionError(kind)


ACTIVATION_PARAMS = {
    "clip": (-0.5, 6.0), "leaky_relu": (0.1, 0.0), "hard_sigmoid": (0.2, 0.5),
    "elu": (0.7, 0.0), "selu": (1.6732632423543772, 1.0507009873554805), "pow": (2.5, 0.0),
}
POSITIVE_DOMAIN = ("log", "sqrt", "reciprocal", "pow")
"""Kinds tested on |x| + 0.5: elsewhere they are NaN or infinite by definition."""
WHOLE_LINE_KINDS = tuple(k for k in ACTIVATION_KINDS if k not in (*POSITIVE_DOMAIN, "exp"))
"""Kinds finite on the whole line, drawn for the fused-activation properties."""


def activations() -> st.SearchStrategy[Activation]:
    def build(kind: str, a: float, b: float) -> Activation:
        if kind == "clip":
            return Activation(kind, min(a, b), max(a, b))
        return Activation(kind, a, b) if kind in ACTIVATION_PARAMS else Activation(kind)

    grid = st.integers(-16, 16).map(lambda i: i / 4)
    return st.builds(build, st.sampled_from(WHOLE_LINE_KINDS), grid, grid)


def apply_formula(act: Activation | None, y: np.ndarray) -> np.ndarray:
    if act is None:
        return y
    f = np.vectorize(lambda v: activation_formula(act.kind, act.alpha, act.beta, float(v)),
                     otypes=[np.float64])
    return f(y)


@pytest.mark.parametrize("kind", ACTIVATION_KINDS)
def test_activation_matches_formula(kind: str) -> None:
    alpha, beta = ACTIVATION_PARAMS.get(kind, (0.0, 0.0))
    act = Activation(kind, alpha, beta)
    # Zero, the kinks of clip/hard_sigmoid/hard_swish, and magnitudes that overflow a
    # naive exp(-x) in float32.
    x = np.concatenate([
        np.linspace(-8, 8, 161), [-3.0, 3.0, -2.5, 2.5, 6.0, -0.5, -100.0, 100.0, -1e4, 1e4],
    ]).astype(np.float32).reshape(1, -1)
    if kind in POSITIVE_DOMAIN:
        x = np.abs(x) + np.float32(0.5)
    if kind == "exp":
        x = np.clip(x, -80, 80)  # e^80 is still a float32
    layer = Unary(name="act", inputs=("x",), outputs=("y",), activation=act)
    (got,) = evaluate(layer, [x])
    assert got.dtype == np.float32 and got.shape == x.shape
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, apply_formula(act, x.astype(np.float64)),
                               rtol=1e-6, atol=1e-7)


@fuzz
@given(activations(), seeds, st.sampled_from(("add", "sub", "mul", "max", "min")))
def test_binary_with_fused_activation(act: Activation, seed: int, op: str) -> None:
    a = random_array(seed, (2, 3, 4))
    b = random_array(seed + 1, (3, 1))
    layer = Binary(name="b", inputs=("a", "b"), outputs=("y",), binop=op, activation=act)
    (got,) = evaluate(layer, [a, b])
    plain = {"add": a + b, "sub": a - b, "mul": a * b, "max": np.maximum(a, b),
             "min": np.minimum(a, b)}[op]
    np.testing.assert_allclose(got, apply_formula(act, plain.astype(np.float64)),
                               rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------
# Convolution
# ---------------------------------------------------------------------------------------


def conv_out_len(size: int, kernel: int, stride: int, lo: int, hi: int, dilation: int) -> int:
    return (size + lo + hi - (kernel - 1) * dilation - 1) // stride + 1


def naive_conv(x: np.ndarray, w: np.ndarray, bias: np.ndarray, strides: tuple[int, int],
               pads: tuple[int, int, int, int], dilations: tuple[int, int],
               groups: int) -> np.ndarray:
    """ONNX Conv, one output element at a time; ``pads`` are (top, left, bottom, right)."""
    n_batch, c_in, height, width = x.shape
    c_out, c_per_group, kh, kw = w.shape
    (sh, sw), (pt, pl, pb, pr), (dh, dw) = strides, pads, dilations
    ho = conv_out_len(height, kh, sh, pt, pb, dh)
    wo = conv_out_len(width, kw, sw, pl, pr, dw)
    out_per_group = c_out // groups
    y = np.zeros((n_batch, c_out, ho, wo))
    for n in range(n_batch):
        for o in range(c_out):
            group = o // out_per_group
            for i in range(ho):
                for j in range(wo):
                    acc = float(bias[o])
                    for c in range(c_per_group):
                        for u in range(kh):
                            for v in range(kw):
                                r = i * sh - pt + u * dh
                                q = j * sw - pl + v * dw
                                if 0 <= r < height and 0 <= q < width:
                                    acc += (float(x[n, group * c_per_group + c, r, q])
                                            * float(w[o, c, u, v]))
                    y[n, o, i, j] = acc
    return y


@st.composite
def conv_cases(draw: st.DrawFn) -> dict:
    groups = draw(st.integers(1, 3))
    c_in = groups * draw(st.integers(1, 2))
    c_out = groups * draw(st.integers(1, 2))
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    strides = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilations = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    pads = tuple(draw(st.integers(0, 2)) for _ in range(4))
    height, width = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    assume((kh - 1) * dilations[0] + 1 <= height + pads[0] + pads[2])
    assume((kw - 1) * dilations[1] + 1 <= width + pads[1] + pads[3])
    seed = draw(seeds)
    weight = random_array(seed, (c_out, c_in // groups, kh, kw))
    if draw(st.booleans()):  # zero whole kernels and taps, as pruning does
        mask = np.random.default_rng(seed + 2).random(weight.shape) < 0.5
        weight = np.where(mask, weight, np.float32(0))
    return dict(
        x=random_array(seed + 1, (draw(st.integers(1, 2)), c_in, height, width)),
        weight=weight,
        bias=random_array(seed + 3, (c_out,)),
        strides=strides, pads=pads, dilations=dilations, groups=groups,
        activation=draw(st.one_of(st.none(), activations())),
    )


@fuzz
@given(conv_cases())
def test_conv_matches_naive_loops(case: dict) -> None:
    x = case.pop("x")
    act = case.pop("activation")
    layer = Conv(name="conv", inputs=("x",), outputs=("y",), activation=act, **case)
    (got,) = evaluate(layer, [x])
    expected = naive_conv(x, case["weight"], case["bias"], case["strides"], case["pads"],
                          case["dilations"], case["groups"])
    expected = apply_formula(act, expected)
    assert got.dtype == np.float32
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_depthwise_conv_is_per_channel() -> None:
    # A hand-checkable case: a depthwise 3x3 of ones sums each channel's neighbourhood.
    x = np.arange(2 * 3 * 3, dtype=np.float32).reshape(1, 2, 3, 3)
    w = np.ones((2, 1, 3, 3), np.float32)
    layer = Conv(name="dw", inputs=("x",), outputs=("y",), weight=w,
                 bias=np.array([0, 100], np.float32), groups=2)
    (got,) = evaluate(layer, [x])
    assert got.shape == (1, 2, 1, 1)
    assert got[0, 0, 0, 0] == sum(range(9))
    assert got[0, 1, 0, 0] == sum(range(9, 18)) + 100


# ---------------------------------------------------------------------------------------
# Pooling
# ---------------------------------------------------------------------------------------


def pool_out_len(size: int, kernel: int, stride: int, lo: int, hi: int, dilation: int,
                 ceil_mode: bool) -> int:
    """ONNX pooling output length: with ceil_mode the last window must start inside the
    input or the left padding (onnx.reference ``get_output_shape_explicit_padding``)."""
    exact = (size + lo + hi - (kernel - 1) * dilation - 1) / stride + 1
    out = math.ceil(exact) if ceil_mode else math.floor(exact)
    if ceil_mode and (out - 1) * stride >= size + lo:
        out -= 1
    return out


def naive_pool(x: np.ndarray, kind: str, kernel: tuple[int, int], strides: tuple[int, int],
               pads: tuple[int, int, int, int], dilations: tuple[int, int], ceil_mode: bool,
               count_include_pad: bool) -> np.ndarray:
    """ONNX MaxPool/AveragePool one window at a time.

    Max ignores padding. Average divides by the taps inside the input, or with
    ``count_include_pad`` by the taps inside input plus explicit pads: the part of a
    ceil_mode window past the explicit padding never counts (onnx.reference drops
    those taps, onnxruntime clips the window to ``size + pad``).
    """
    n_batch, channels, height, width = x.shape
    (kh, kw), (sh, sw), (pt, pl, pb, pr), (dh, dw) = kernel, strides, pads, dilations
    ho = pool_out_len(height, kh, sh, pt, pb, dh, ceil_mode)
    wo = pool_out_len(width, kw, sw, pl, pr, dw, ceil_mode)
    y = np.zeros((n_batch, channels, ho, wo))
    for n, c, i, j in itertools.product(range(n_batch), range(channels), range(ho), range(wo)):
        values, count = [], 0
        for u, v in itertools.product(range(kh), range(kw)):
            r, q = i * sh - pt + u * dh, j * sw - pl + v * dw
            inside = 0 <= r < height and 0 <= q < width
            in_explicit_pads = -pt <= r < height + pb and -pl <= q < width + pr
            if inside:
                values.append(float(x[n, c, r, q]))
            if inside or (count_include_pad and in_explicit_pads):
                count += 1
        assert values, "a window of padding only has no defined value"
        y[n, c, i, j] = max(values) if kind == "max" else sum(values) / count
    return y


@st.composite
def pool_cases(draw: st.DrawFn) -> dict:
    kernel = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    strides = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilations = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    pads = (draw(st.integers(0, kernel[0] - 1)), draw(st.integers(0, kernel[1] - 1)),
            draw(st.integers(0, kernel[0] - 1)), draw(st.integers(0, kernel[1] - 1)))
    height, width = draw(st.integers(1, 7)), draw(st.integers(1, 7))
    ceil_mode = draw(st.booleans())
    assume((kernel[0] - 1) * dilations[0] + 1 <= height + pads[0] + pads[2])
    assume((kernel[1] - 1) * dilations[1] + 1 <= width + pads[1] + pads[3])
    # Every window must hold at least one input element (no all-padding windows).
    for size, k, s, lo, hi, d in ((height, kernel[0], strides[0], pads[0], pads[2],
                                   dilations[0]),
                                  (width, kernel[1], strides[1], pads[1], pads[3],
                                   dilations[1])):
        out = pool_out_len(size, k, s, lo, hi, d, ceil_mode)
        assume(all(any(0 <= o * s - lo + t * d < size for t in range(k)) for o in range(out)))
    return dict(
        x=random_array(draw(seeds), (draw(st.integers(1, 2)), draw(st.integers(1, 3)),
                                     height, width)),
        kind=draw(st.sampled_from(("max", "avg"))),
        kernel=kernel, strides=strides, pads=pads, dilations=dilations,
        ceil_mode=ceil_mode, count_include_pad=draw(st.booleans()),
    )


@fuzz
@given(pool_cases())
def test_pool_matches_naive_loops(case: dict) -> None:
    x = case.pop("x")
    layer = Pool(name="pool", inputs=("x",), outputs=("y",), **case)
    (got,) = evaluate(layer, [x])
    expected = naive_pool(x, **case)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)


def test_avg_pool_ceil_extension_never_counts() -> None:
    # W=4, kernel 3, stride 2, pads (1, 1), ceil_mode: windows start at -1, 1, 3; the
    # last covers input 3, the right pad (4) and the ceil extension (5). With
    # count_include_pad it divides by 2 (input + explicit pad), not 3.
    x = np.array([[[[1.0, 2.0, 3.0, 4.0]]]], np.float32)
    common = dict(name="p", inputs=("x",), outputs=("y",), kind="avg", kernel=(1, 3),
                  strides=(1, 2), pads=(0, 1, 0, 1), ceil_mode=True)
    (with_pad,) = evaluate(Pool(count_include_pad=True, **common), [x])
    (without,) = evaluate(Pool(count_include_pad=False, **common), [x])
    np.testing.assert_allclose(with_pad[0, 0, 0], [3 / 3, 9 / 3, 4 / 2])
    np.testing.assert_allclose(without[0, 0, 0], [3 / 2, 9 / 3, 4 / 1])


def test_ceil_mode_drops_window_starting_in_right_padding() -> None:
    # H=4, kernel 3, stride 2, pads (0, 2): ceil gives 3 windows, but the third would
    # start at 4, inside the right padding, so ONNX keeps 2.
    layer = Pool(name="p", inputs=("x",), outputs=("y",), kind="max", kernel=(3, 3),
                 strides=(2, 2), pads=(0, 0, 2, 2), ceil_mode=True)
    (got,) = evaluate(layer, [np.zeros((1, 1, 4, 4), np.float32)])
    assert got.shape == (1, 1, 2, 2)


@fuzz
@given(seeds, st.sampled_from(("max", "avg")), st.integers(2, 5))
def test_global_pool_matches_loops(seed: int, kind: str, rank: int) -> None:
    x = random_array(seed, (2, 3, *([3] * (rank - 2))))
    (got,) = evaluate(GlobalPool(name="g", inputs=("x",), outputs=("y",), kind=kind), [x])
    assert got.shape == (2, 3, *([1] * (rank - 2)))
    for n, c in itertools.product(range(2), range(3)):
        values = [float(v) for v in x[n, c].reshape(-1)]
        want = max(values) if kind == "max" else sum(values) / len(values)
        assert got[n, c].reshape(-1)[0] == pytest.approx(want, rel=1e-6, abs=1e-6)


# ---------------------------------------------------------------------------------------
# Dense and Softmax
# ---------------------------------------------------------------------------------------


@fuzz
@given(seeds, st.integers(1, 3), st.integers(1, 6), st.integers(1, 6),
       st.one_of(st.none(), activations()))
def test_dense_matches_loops(seed: int, rows: int, k: int, n_out: int,
                             act: Activation | None) -> None:
    x = random_array(seed, (rows, k))
    w = random_array(seed + 1, (n_out, k))
    bias = random_array(seed + 2, (n_out,))
    layer = Dense(name="fc", inputs=("x",), outputs=("y",), weight=w, bias=bias,
                  activation=act)
    (got,) = evaluate(layer, [x])
    expected = np.array([[sum(float(x[r, i]) * float(w[o, i]) for i in range(k)) + bias[o]
                          for o in range(n_out)] for r in range(rows)])
    np.testing.assert_allclose(got, apply_formula(act, expected), rtol=1e-5, atol=1e-5)


@fuzz
@given(seeds, st.integers(0, 2))
def test_softmax_sums_to_one_along_axis(seed: int, axis: int) -> None:
    x = random_array(seed, (2, 3, 4)) * 30  # large logits: needs the max subtraction
    (got,) = evaluate(Softmax(name="s", inputs=("x",), outputs=("y",), axis=axis), [x])
    lines = np.moveaxis(x, axis, -1).reshape(-1, x.shape[axis])
    got_lines = np.moveaxis(got, axis, -1).reshape(-1, x.shape[axis])
    for line, have in zip(lines.tolist(), got_lines, strict=True):
        top = max(line)
        denom = sum(math.exp(v - top) for v in line)
        np.testing.assert_allclose(have, [math.exp(v - top) / denom for v in line],
                                   rtol=1e-5, atol=1e-7)


# ---------------------------------------------------------------------------------------
# Slice and Pad
# ---------------------------------------------------------------------------------------


@st.composite
def slice_bounds(draw: st.DrawFn, dim: int) -> tuple[int, int, int]:
    """Clamped (start, end, step) for an axis, as the IR stores them: a Python range
    whose end may be -1 with a negative step (through index 0)."""
    step = draw(st.sampled_from((1, 2, 3, -1, -2, -3)))
    start = draw(st.integers(0, dim - 1))
    if step > 0:
        end = draw(st.integers(start + 1, dim))
    else:
        end = draw(st.integers(-1, start - 1))
    return start, end, step


@fuzz
@given(st.data())
def test_slice_matches_index_mapping(data: st.DataObject) -> None:
    shape = tuple(data.draw(st.lists(st.integers(1, 5), min_size=1, max_size=4)))
    bounds = [data.draw(slice_bounds(d)) for d in shape]
    starts, ends, steps = (tuple(b[i] for b in bounds) for i in range(3))
    x = random_array(data.draw(seeds), shape)
    layer = Slice(name="s", inputs=("x",), outputs=("y",), starts=starts, ends=ends,
                  steps=steps)
    (got,) = evaluate(layer, [x])
    lengths = [len(range(s, e, st_)) for s, e, st_ in bounds]
    assert got.shape == tuple(lengths)
    # Output element k on an axis is input element start + k * step.
    for out_index in itertools.product(*(range(n) for n in lengths)):
        in_index = tuple(s + k * st_ for k, (s, _, st_) in zip(out_index, bounds, strict=True))
        assert got[out_index] == x[in_index]
    # The same slice with Python's own syntax (end -1 with a negative step is "None").
    py = tuple(slice(s, None if e < 0 else e, st_) for s, e, st_ in bounds)
    np.testing.assert_array_equal(got, x[py])


def test_slice_negative_step_through_zero() -> None:
    x = np.arange(5, dtype=np.float32).reshape(1, 5)
    layer = Slice(name="s", inputs=("x",), outputs=("y",), starts=(0, 4), ends=(1, -1),
                  steps=(1, -2))
    (got,) = evaluate(layer, [x])
    np.testing.assert_array_equal(got, [[4.0, 2.0, 0.0]])


def pad_source_index(i: int, n: int, mode: str) -> int | None:
    """The input index that padded position ``i`` (may be out of range) copies, or None
    for a constant."""
    if 0 <= i < n:
        return i
    if mode == "edge":
        return min(max(i, 0), n - 1)
    if mode == "reflect":
        return -i if i < 0 else 2 * (n - 1) - i
    return None


@fuzz
@given(st.data())
def test_pad_matches_index_mapping(data: st.DataObject) -> None:
    mode = data.draw(st.sampled_from(("constant", "reflect", "edge")))
    shape = tuple(data.draw(st.lists(st.integers(1, 4), min_size=1, max_size=4)))
    r = len(shape)
    pads = []
    for part in range(2):  # all begins, then all ends
        for d in shape:
            most = d - 1 if mode == "reflect" else 3
            pads.append(data.draw(st.integers(0, most), label=f"pad{part}"))
    value = data.draw(st.sampled_from((0.0, -1.5))) if mode == "constant" else 0.0
    x = random_array(data.draw(seeds), shape)
    layer = Pad(name="p", inputs=("x",), outputs=("y",), pads=tuple(pads), mode=mode,
                value=value)
    (got,) = evaluate(layer, [x])
    out_shape = tuple(d + pads[i] + pads[i + r] for i, d in enumerate(shape))
    assert got.shape == out_shape
    for out_index in itertools.product(*(range(n) for n in out_shape)):
        src = [pad_source_index(o - pads[i], shape[i], mode) for i, o in enumerate(out_index)]
        want = value if any(s is None for s in src) else x[tuple(src)]
        assert got[out_index] == np.float32(want)
    widths = [(pads[i], pads[i + r]) for i in range(r)]
    kwargs = {"constant_values": value} if mode == "constant" else {}
    np.testing.assert_array_equal(got, np.pad(x, widths, mode=mode, **kwargs))


def test_rank_zero_output_stays_rank_zero() -> None:
    # Reshape (Squeeze) to a scalar: the IR says shape (), so must the array.
    layer = Reshape(name="r", inputs=("x",), outputs=("y",), shape=())
    assert layer.infer_shapes([(1, 1)]) == ((),)
    (got,) = evaluate(layer, [np.full((1, 1), 5.0, np.float32)])
    assert got.shape == ()
    assert got == 5.0


# ---------------------------------------------------------------------------------------
# run(): binding inputs
# ---------------------------------------------------------------------------------------


def two_input_graph() -> Graph:
    return Graph(
        inputs={"image": TensorType((1, 3, 4, 4)), "offset": TensorType((1, 3, 1, 1))},
        layers=(Binary(name="add", inputs=("image", "offset"), outputs=("sum",),
                       binop="add"),),
        outputs=("sum",),
    )


def good_inputs() -> dict[str, np.ndarray]:
    return {"image": np.ones((1, 3, 4, 4), np.float32),
            "offset": np.full((1, 3, 1, 1), 2.0, np.float32)}


def test_run_by_name_and_by_position() -> None:
    graph = two_input_graph()
    inputs = good_inputs()
    by_name = run(graph, inputs)
    by_position = run(graph, [inputs["image"], inputs["offset"]])
    assert list(by_name) == ["sum"]
    np.testing.assert_array_equal(by_name["sum"], np.full((1, 3, 4, 4), 3.0))
    np.testing.assert_array_equal(by_position["sum"], by_name["sum"])


@pytest.mark.parametrize(
    "change, name, words",
    [
        (lambda d: d.update(image=np.ones((1, 3, 4, 5), np.float32)), "image", "shape"),
        (lambda d: d.update(offset=np.ones((1, 3, 1, 1), np.float64)), "offset", "dtype"),
        (lambda d: d.update(imagee=d["image"]), "imagee", "unknown"),
        (lambda d: d.pop("offset"), "offset", "missing"),
    ],
    ids=["wrong-shape", "wrong-dtype", "unknown-name", "missing"],
)
def test_run_rejects_bad_inputs_naming_them(change, name: str, words: str) -> None:
    inputs = good_inputs()
    change(inputs)
    with pytest.raises(PatccError) as info:
        run(two_input_graph(), inputs)
    assert repr(name) in str(info.value)
    assert words in str(info.value)


def test_run_rejects_wrong_positional_count() -> None:
    with pytest.raises(PatccError, match="expected 2 input"):
        run(two_input_graph(), [np.ones((1, 3, 4, 4), np.float32)])
