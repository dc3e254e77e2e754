"""The reference interpreter: runs the IR in numpy, the oracle for every backend.

Written to be obviously right rather than fast: convolutions are im2col plus one
matrix product per group, accumulated in float64 and rounded to float32 per layer,
so the oracle is at least as accurate as any fp32 backend it judges. A ResNet-50 at
224x224 takes about a second.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from patcc.errors import ExecutionError
from patcc.ir.graph import Graph, TensorType
from patcc.ir.layers import (
    Activation,
    Binary,
    Col2Im,
    Concat,
    Conv,
    Dense,
    Gather,
    GlobalPool,
    Layer,
    Pad,
    Pool,
    Reduce,
    Reshape,
    Resize,
    ScaleShift,
    Slice,
    Softmax,
    Split,
    Transpose,
    Unary,
)

Inputs = Mapping[str, np.ndarray] | Sequence[np.ndarray]


def bind_inputs(signature: Mapping[str, TensorType], inputs: Inputs) -> dict[str, np.ndarray]:
    """Match user inputs (positional or by name) to a model's inputs ``signature``.

    Returns name -> array. Raises ``PatccError`` naming the input for a missing or
    unknown name, a wrong count, a wrong shape or a wrong dtype.
    """
    names = list(signature)
    if isinstance(inputs, Mapping):
        unknown = [k for k in inputs if k not in signature]
        if unknown:
            raise ExecutionError(f"unknown input {unknown[0]!r}; the model's inputs are {names}")
        missing = [n for n in names if n not in inputs]
        if missing:
            raise ExecutionError(f"missing input {missing[0]!r}; the model's inputs are {names}")
        given = dict(inputs)
    else:
        if len(inputs) != len(names):
            raise ExecutionError(f"expected {len(names)} input(s) {names}, got {len(inputs)}")
        given = dict(zip(names, inputs, strict=True))
    bound = {}
    for name, value in given.items():
        arr = np.asarray(value)
        want = signature[name]
        if arr.dtype != np.dtype(want.dtype):
            raise ExecutionError(
                f"input {name!r} has dtype {arr.dtype}, expected {want.dtype} "
                f"(convert with .astype(np.{want.dtype}))"
            )
        if tuple(arr.shape) != tuple(want.shape):
            got = "x".join(map(str, arr.shape)) or "scalar"
            exp = "x".join(map(str, want.shape))
            raise ExecutionError(f"input {name!r} has shape {got}, expected {exp}")
        bound[name] = arr
    return bound


def run(graph: Graph, inputs: Inputs) -> dict[str, np.ndarray]:
    """Run ``graph`` on ``inputs`` (positional or by name); returns output name -> array.

    Raises ``PatccError`` for inputs of the wrong name, shape or dtype.
    """
    env: dict[str, np.ndarray] = dict(graph.constants)
    env.update(bind_inputs(graph.inputs, inputs))
    # Overflow to infinity and NaN from inf - inf are IEEE results the compiled code
    # gives silently too, not errors worth a warning on stderr.
    with np.errstate(all="ignore"):
        for layer in graph.layers:
            outs = evaluate(layer, [env[t] for t in layer.inputs])
            env.update(zip(layer.outputs, outs, strict=True))
    return {name: env[name] for name in graph.outputs}


def evaluate(layer: Layer, args: list[np.ndarray]) -> list[np.ndarray]:
    """Evaluate one layer on numpy arrays; the reference semantics of every layer."""
    fn = _EVALUATORS[type(layer)]
    # np.ascontiguousarray would turn a rank-0 result into shape (1,)
    return [np.require(o, dtype=np.float32, requirements="C") for o in fn(layer, args)]


# ---------------------------------------------------------------------------------------
# Activations
# ---------------------------------------------------------------------------------------


def _sigmoid(x: np.ndarray) -> np.ndarray:
    # exp of a non-positive number never overflows; both branches are exact forms.
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def apply_activation(act: Activation | None, x: np.ndarray) -> np.ndarray:
    """``act`` applied element-wise to ``x`` (identity for None)."""
    if act is None:
        return x
    kind = act.kind
    if kind == "relu":
        return np.maximum(x, 0)
    if kind == "clip":
        return np.clip(x, act.alpha, act.beta)
    if kind == "leaky_relu":
        return np.where(x >= 0, x, x * act.alpha)
    if kind == "sigmoid":
        return _sigmoid(x)
    if kind == "hard_sigmoid":
        return np.clip(x * act.alpha + act.beta, 0, 1)
    if kind == "hard_swish":
        return x * np.clip(x / 6 + 0.5, 0, 1)
    if kind == "tanh":
        return np.tanh(x)
    if kind == "silu":
        return x * _sigmoid(x)
    return _MATH[kind](np.asarray(x, np.float64), act.alpha, act.beta)  # rounded once


def _softplus(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x)))


def _erf(x: np.ndarray) -> np.ndarray:
    return np.vectorize(math.erf, otypes=[np.float64])(x.astype(np.float64))


def _expm1_below_zero(x: np.ndarray, alpha: float) -> np.ndarray:
    return np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0)))


_MATH: dict[str, Callable[[np.ndarray, float, float], np.ndarray]] = {
    "elu": lambda x, a, b: _expm1_below_zero(x, a),
    "selu": lambda x, a, b: b * _expm1_below_zero(x, a),
    "softplus": lambda x, a, b: _softplus(x),
    "mish": lambda x, a, b: x * np.tanh(_softplus(x)),
    "gelu": lambda x, a, b: 0.5 * x * (1 + _erf(x / math.sqrt(2))),
    "gelu_tanh": lambda x, a, b: 0.5 * x * (
        1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3))),
    "erf": lambda x, a, b: _erf(x),
    "exp": lambda x, a, b: np.exp(x),
    "log": lambda x, a, b: np.log(x),
    "sqrt": lambda x, a, b: np.sqrt(x),
    "neg": lambda x, a, b: -x,
    "abs": lambda x, a, b: np.abs(x),
    "reciprocal": lambda x, a, b: 1 / x,
    "pow": lambda x, a, b: np.power(x, np.float32(a)),
}
"""The point-wise functions of ``ACTIVATION_KINDS`` beyond the classic activations."""


# ---------------------------------------------------------------------------------------
# Sliding windows shared by convolution and pooling
# ---------------------------------------------------------------------------------------


def _windows(x: np.ndarray, kernel: tuple[int, int], strides: tuple[int, int],
             dilations: tuple[int, int], out_hw: tuple[int, int]) -> np.ndarray:
    """View (N, C, Ho, Wo, kh, kw) of the windows of an already padded NCHW array."""
    (kh, kw), (sh, sw), (dh, dw), (ho, wo) = kernel, strides, dilations, out_hw
    span = ((kh - 1) * dh + 1, (kw - 1) * dw + 1)
    win = sliding_window_view(x, span, axis=(2, 3))
    return win[:, :, : (ho - 1) * sh + 1 : sh, : (wo - 1) * sw + 1 : sw, ::dh, ::dw]


def _conv(layer: Conv, args: list[np.ndarray]) -> list[np.ndarray]:
    x = args[0]
    n, c, h, w = x.shape
    (_, _, ho, wo), = layer.infer_shapes([x.shape])
    pt, pl, pb, pr = layer.pads
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    cols = _windows(xp, layer.kernel_shape, layer.strides, layer.dilations, (ho, wo))
    g = layer.groups
    cg = c // g
    kh, kw = layer.kernel_shape
    # (N, G, Ho*Wo, Cg*kh*kw) @ (G, Cg*kh*kw, Og) -> (N, G, Ho*Wo, Og)
    cols = cols.reshape(n, g, cg, ho, wo, kh, kw).transpose(0, 1, 3, 4, 2, 5, 6)
    cols = cols.reshape(n, g, ho * wo, cg * kh * kw)
    wmat = layer.weight.astype(np.float64).reshape(g, -1, cg * kh * kw).transpose(0, 2, 1)
    y = np.matmul(cols, wmat)  # (N, G, Ho*Wo, Og)
    y = y.transpose(0, 1, 3, 2).reshape(n, layer.out_channels, ho, wo)
    y += layer.bias.astype(np.float64)[None, :, None, None]
    if len(args) == 2:  # fused residual
        y += args[1]
    return [apply_activation(layer.activation, y)]


def _col2im(layer: Col2Im, args: list[np.ndarray]) -> list[np.ndarray]:
    """Each tap's column added, strided, where it lands in the output: input position
    i of tap k lands on i*stride - pad + k*dilation, when that is inside the output."""
    (x,) = args
    n, _, h, w = x.shape
    (kh, kw), (sh, sw), (dh, dw) = layer.kernel, layer.strides, layer.dilations
    pt, pl, _, _ = layer.pads
    ho, wo = layer.output_size
    y = np.zeros((n, layer.channels, ho, wo))
    cols = x.astype(np.float64).reshape(n, layer.channels, kh, kw, h, w)
    for ky in range(kh):
        rows = _landing(h, ho, sh, ky * dh - pt)
        for kx in range(kw):
            columns = _landing(w, wo, sw, kx * dw - pl)
            if rows is not None and columns is not None:
                y[:, :, rows[1], columns[1]] += cols[:, :, ky, kx, rows[0], columns[0]]
    if layer.bias is not None:
        y += layer.bias.astype(np.float64)[None, :, None, None]
    return [apply_activation(layer.activation, y)]


def _landing(size: int, out: int, stride: int, shift: int) -> tuple[slice, slice] | None:
    """(input positions i, the output positions i*stride + shift they land on) for the
    i in [0, size) that land in [0, out); None if none does."""
    first = max(0, -(shift // stride))  # ceil(-shift / stride)
    last = min(size - 1, (out - 1 - shift) // stride)
    if first > last:
        return None
    start = first * stride + shift
    return slice(first, last + 1), slice(start, start + (last - first) * stride + 1, stride)


def _dense(layer: Dense, args: list[np.ndarray]) -> list[np.ndarray]:
    (x,) = args
    y = x.astype(np.float64) @ layer.weight.astype(np.float64).T + layer.bias
    return [apply_activation(layer.activation, y)]


def _scale_shift(layer: ScaleShift, args: list[np.ndarray]) -> list[np.ndarray]:
    (x,) = args
    bshape = (1, -1) + (1,) * (x.ndim - 2)
    y = x.astype(np.float64) * layer.scale.reshape(bshape) + layer.shift.reshape(bshape)
    return [apply_activation(layer.activation, y)]


def _pool(layer: Pool, args: list[np.ndarray]) -> list[np.ndarray]:
    (x,) = args
    n, c, h, w = x.shape
    (_, _, ho, wo), = layer.infer_shapes([x.shape])
    pt, pl, pb, pr = layer.pads
    (kh, kw), (sh, sw), (dh, dw) = layer.kernel, layer.strides, layer.dilations
    # ceil_mode may let the last window run past the explicit padding: extend the
    # bottom/right edge so every window is whole; the extension never counts.
    eb = max(0, (ho - 1) * sh + (kh - 1) * dh + 1 - (h + pt + pb))
    er = max(0, (wo - 1) * sw + (kw - 1) * dw + 1 - (w + pl + pr))
    widths = ((0, 0), (0, 0), (pt, pb + eb), (pl, pr + er))
    if layer.kind == "max":
        xp = np.pad(x, widths, constant_values=-np.inf)
        y = _windows(xp, layer.kernel, layer.strides, layer.dilations, (ho, wo)).max(axis=(4, 5))
        return [y]
    xp = np.pad(x.astype(np.float64), widths)
    total = _windows(xp, layer.kernel, layer.strides, layer.dilations, (ho, wo)).sum(axis=(4, 5))
    counted = np.zeros((1, 1, h + pt + pb + eb, w + pl + pr + er))
    if layer.count_include_pad:
        counted[:, :, : h + pt + pb, : w + pl + pr] = 1
    else:
        counted[:, :, pt : pt + h, pl : pl + w] = 1
    count = _windows(counted, layer.kernel, layer.strides, layer.dilations, (ho, wo))
    return [total / count.sum(axis=(4, 5))]


def _reduce(layer: Reduce, args: list[np.ndarray]) -> list[np.ndarray]:
    x = args[0].astype(np.float64)
    axes = tuple(range(layer.start, layer.stop))
    if layer.kind == "l2":
        return [np.sqrt(np.sum(x * x, axis=axes, keepdims=True))]
    reductions: dict[str, Callable[..., Any]] = {"mean": np.mean, "max": np.max,
                                                 "min": np.min, "sum": np.sum}
    return [np.asarray(reductions[layer.kind](x, axis=axes, keepdims=True))]


def _global_pool(layer: GlobalPool, args: list[np.ndarray]) -> list[np.ndarray]:
    (x,) = args
    axes = tuple(range(2, x.ndim))
    if layer.kind == "max":
        return [x.max(axis=axes, keepdims=True)]
    return [x.astype(np.float64).mean(axis=axes, keepdims=True)]


_BINARY: dict[str, Callable[[Any, Any], Any]] = {
    "add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide,
    "max": np.maximum, "min": np.minimum, "pow": np.power,
}


def _binary(layer: Binary, args: list[np.ndarray]) -> list[np.ndarray]:
    a, b = args
    with np.errstate(divide="ignore", invalid="ignore"):
        y = _BINARY[layer.binop](a, b)
    return [apply_activation(layer.activation, y)]


def _unary(layer: Unary, args: list[np.ndarray]) -> list[np.ndarray]:
    return [apply_activation(layer.activation, args[0])]


def _softmax(layer: Softmax, args: list[np.ndarray]) -> list[np.ndarray]:
    x = args[0].astype(np.float64)
    shifted = x - x.max(axis=layer.axis, keepdims=True)
    e = np.exp(shifted)
    if layer.log:
        return [shifted - np.log(e.sum(axis=layer.axis, keepdims=True))]
    return [e / e.sum(axis=layer.axis, keepdims=True)]


def _concat(layer: Concat, args: list[np.ndarray]) -> list[np.ndarray]:
    return [np.concatenate(args, axis=layer.axis)]


def _reshape(layer: Reshape, args: list[np.ndarray]) -> list[np.ndarray]:
    return [args[0].reshape(layer.shape)]


def _transpose(layer: Transpose, args: list[np.ndarray]) -> list[np.ndarray]:
    return [args[0].transpose(layer.perm)]


def _slice(layer: Slice, args: list[np.ndarray]) -> list[np.ndarray]:
    index = np.ix_(*(np.arange(s, e, st) for s, e, st in
                     zip(layer.starts, layer.ends, layer.steps, strict=True)))
    return [args[0][index]]


def _split(layer: Split, args: list[np.ndarray]) -> list[np.ndarray]:
    return np.split(args[0], np.cumsum(layer.sizes)[:-1], axis=layer.axis)


def _pad(layer: Pad, args: list[np.ndarray]) -> list[np.ndarray]:
    (x,) = args
    r = x.ndim
    widths = [(layer.pads[i], layer.pads[i + r]) for i in range(r)]
    if layer.mode == "constant":
        return [np.pad(x, widths, constant_values=layer.value)]
    return [np.pad(x, widths, mode=layer.mode)]  # type: ignore[call-overload]


def _gather(layer: Gather, args: list[np.ndarray]) -> list[np.ndarray]:
    return [np.take(args[0], layer.indices, axis=layer.axis)]


def _resize(layer: Resize, args: list[np.ndarray]) -> list[np.ndarray]:
    """One axis at a time: gather each output coordinate's window, weight, sum; outputs
    outside the region of interest take the extrapolation value."""
    x = args[0].astype(np.float64)
    outside = np.zeros(layer.size, bool)
    for axis, taps in enumerate(layer.axis_taps(args[0].shape)):
        if taps is None:
            continue
        window = np.take(x, taps.index, axis=axis)  # the axis becomes (out, taps)
        shape = [1] * window.ndim
        shape[axis:axis + 2] = taps.weight.shape
        x = (window * taps.weight.reshape(shape)).sum(axis=axis + 1)
        if taps.outside is not None:
            flags = [1] * len(layer.size)
            flags[axis] = len(taps.outside)
            outside |= taps.outside.reshape(flags)
    return [np.where(outside, layer.extrapolation_value, x)]


_EVALUATORS: dict[type, Callable[[Any, list[np.ndarray]], list[np.ndarray]]] = {
    Conv: _conv, Dense: _dense, ScaleShift: _scale_shift, Pool: _pool,
    GlobalPool: _global_pool, Reduce: _reduce, Binary: _binary, Unary: _unary, Softmax: _softmax,
    Concat: _concat, Reshape: _reshape, Transpose: _transpose, Slice: _slice,
    Split: _split, Pad: _pad, Resize: _resize, Col2Im: _col2im,
    Gather: _gather,
}
