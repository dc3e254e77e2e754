"""The layers of the patcc IR: frozen dataclasses with static attributes.

Every layer names its input and output tensors and knows how to compute its output
shapes from its input shapes (``infer_shapes``), raising ``IRError`` when the shapes
or attributes are inconsistent. Numeric semantics live in the reference interpreter
(``patcc.runtime.interpreter``), the executable specification of each layer.

Convolution and dense layers own their weights (passes rewrite them); other
constant operands are graph constants referenced by name.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from patcc.errors import PatccError
from patcc.ir.node import IRNode
from patcc.ir.patterns import PatternStyle, Sparsity
from patcc.ir.resample import COORDINATE_MODES, NEAREST_MODES, RESIZE_MODES, AxisTaps, axis_taps
from patcc.ir.storage import CompressedWeights

Shape = tuple[int, ...]


class IRError(PatccError):
    """An IR invariant does not hold (a bug in a frontend or pass, or a bad model)."""


MAX_TENSOR_ELEMENTS = 2**31 - 1
"""The most elements one tensor (or a padded copy of one) may have: kernels index
within a tensor with 32-bit offsets, and 8 GiB of float32 is more than any device
patcc targets holds for one activation."""


MAX_TOTAL_ELEMENTS = 2**34
"""The most elements all of a graph's tensors may have together (64 GiB of float32):
a bound on the workspace a compiled model asks for, whatever the memory plan."""


def check_size(what: str, shape: Shape) -> None:
    """Raise ``IRError`` unless every dim of ``shape`` is >= 1 and the tensor has at
    most ``MAX_TENSOR_ELEMENTS`` elements; ``what`` names it in the message."""
    if any(d < 1 for d in shape):
        raise IRError(f"{what} has shape {format_shape(shape)}; every dimension must be >= 1")
    if math.prod(shape) > MAX_TENSOR_ELEMENTS:
        raise IRError(f"{what} of shape {format_shape(shape)} has {math.prod(shape)} elements, "
                      f"more than patcc's limit of {MAX_TENSOR_ELEMENTS} (2^31 - 1)")


def format_shape(shape: Shape) -> str:
    return "x".join(str(d) for d in shape) if shape else "scalar"


def _pair(values: Sequence[int]) -> str:
    return str(values[0]) if len(set(values)) == 1 else ",".join(map(str, values))


# ---------------------------------------------------------------------------------------
# Activations, standalone (Unary) or fused into a producer
# ---------------------------------------------------------------------------------------

ACTIVATION_KINDS = (
    "relu",  # max(x, 0)
    "clip",  # min(max(x, alpha), beta); ReLU6 is clip(0, 6)
    "leaky_relu",  # x if x >= 0 else alpha * x
    "sigmoid",
    "hard_sigmoid",  # max(0, min(1, alpha * x + beta))
    "hard_swish",  # x * max(0, min(1, x / 6 + 1 / 2))
    "tanh",
    "silu",  # x * sigmoid(x)
    "elu",  # x if x > 0 else alpha * (exp(x) - 1)
    "selu",  # beta * (x if x > 0 else alpha * (exp(x) - 1)); beta is ONNX's gamma
    "softplus",  # log(1 + exp(x))
    "mish",  # x * tanh(softplus(x))
    "gelu",  # x * (1 + erf(x / sqrt(2))) / 2
    "gelu_tanh",  # x * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 x^3))) / 2
    "erf",
    "exp",
    "log",
    "sqrt",
    "neg",
    "abs",
    "reciprocal",  # 1 / x
    "pow",  # x ** alpha (a constant exponent)
)


@dataclass(frozen=True)
class Activation:
    """A point-wise activation; ``alpha``/``beta`` as documented in ACTIVATION_KINDS."""

    kind: str
    alpha: float = 0.0
    beta: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in ACTIVATION_KINDS:
            raise IRError(f"unknown activation {self.kind!r}; expected one of {ACTIVATION_KINDS}")

    def __str__(self) -> str:
        if self.kind == "clip":
            return f"clip({self.alpha:g},{self.beta:g})"
        if self.kind == "leaky_relu":
            return f"leaky_relu({self.alpha:g})"
        if self.kind in ("hard_sigmoid", "selu"):
            return f"{self.kind}({self.alpha:g},{self.beta:g})"
        if self.kind in ("elu", "pow"):
            return f"{self.kind}({self.alpha:g})"
        return self.kind


# ---------------------------------------------------------------------------------------
# Base class
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False, kw_only=True)
class Layer(IRNode):
    """A node of the graph: reads ``inputs`` and writes ``outputs`` (tensor names)."""

    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]

    op: ClassVar[str] = "Layer"
    arity: ClassVar[int | None] = 1  # number of inputs, None for variadic

    def infer_shapes(self, shapes: Sequence[Shape]) -> tuple[Shape, ...]:
        """Output shapes for the given input shapes; raises ``IRError`` if inconsistent."""
        raise NotImplementedError

    def describe(self) -> str:
        """Attributes worth printing on the layer's line (empty by default)."""
        return ""

    def _check_arity(self, shapes: Sequence[Shape]) -> None:
        if self.arity is not None and len(shapes) != self.arity:
            raise IRError(f"{self.op} {self.name!r} takes {self.arity} inputs, got {len(shapes)}")

    def _rank(self, shape: Shape, rank: int) -> None:
        if len(shape) != rank:
            raise IRError(
                f"{self.op} {self.name!r} expects a rank-{rank} input, got {format_shape(shape)}"
            )


def _check_window(layer: Layer, strides: Sequence[int], pads: Sequence[int],
                  dilations: Sequence[int]) -> None:
    """Strides and dilations: two integers >= 1; pads: four integers >= 0."""
    if (len(strides) != 2 or len(dilations) != 2 or len(pads) != 4
            or min(strides) < 1 or min(dilations) < 1 or min(pads) < 0):
        raise IRError(f"{layer.op} {layer.name!r}: strides {tuple(strides)}, dilations "
                      f"{tuple(dilations)} (two integers >= 1) or pads {tuple(pads)} (four "
                      "integers >= 0) out of range")


def _padding_only_window(size: int, out: int, kernel: int, stride: int, pad: int,
                         dilation: int) -> int | None:
    """The first output position whose window reads only padding, or None.

    Only windows that start before the input or end after it can; each is checked in
    constant time, so the cost does not grow with the size of an attribute.
    """
    span = (kernel - 1) * dilation
    left = min(out, -(-pad // stride))  # windows starting in the leading padding
    first_inside_end = max(0, (size - 1 - span + pad) // stride + 1)  # end past the input
    edge = np.unique(np.concatenate([np.arange(left, dtype=np.int64),
                                     np.arange(min(first_inside_end, out), out,
                                               dtype=np.int64)]))
    start = edge * stride - pad
    lo = np.maximum(0, -(start // dilation))  # first tap index at or after 0
    hi = np.minimum(kernel - 1, (size - 1 - start) // dilation)  # last tap before size
    bad = edge[lo > hi]
    return int(bad[0]) if bad.size else None


def _window_out(size: int, kernel: int, stride: int, pad_lo: int, pad_hi: int, dilation: int,
                ceil_mode: bool = False) -> int:
    """Output length of a sliding window (conv or pool) along one axis."""
    span = (kernel - 1) * dilation + 1
    num = size + pad_lo + pad_hi - span
    if num < 0:
        raise IRError(f"window {span} larger than padded input {size + pad_lo + pad_hi}")
    out = (-(-num // stride) if ceil_mode else num // stride) + 1
    if ceil_mode and (out - 1) * stride >= size + pad_lo:
        out -= 1  # the last window would start in the right padding only
    return out


# ---------------------------------------------------------------------------------------
# Compute layers with weights
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False, kw_only=True)
class Conv(Layer):
    """2-D convolution NCHW, weight (O, I/groups, kh, kw), bias (O,), fused activation.

    ``pads`` are (top, left, bottom, right). ``sparsity`` and ``pattern`` are the style
    detected from the weights: ``pattern`` is set exactly when sparsity is PATTERN.
    A second input is a fused residual: ``y = act(conv(x) + bias + residual)``.
    ``filter_order`` (set by the reorder pass) is the order the kernel visits filters
    in, and ``compressed`` (set by the compression pass) the weights in the layout it
    reads, filters in ``storage_order``; both leave the layer's meaning unchanged.
    """

    weight: np.ndarray
    bias: np.ndarray
    strides: tuple[int, int] = (1, 1)
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)
    dilations: tuple[int, int] = (1, 1)
    groups: int = 1
    activation: Activation | None = None
    sparsity: Sparsity = Sparsity.DENSE
    pattern: PatternStyle | None = None
    filter_order: np.ndarray | None = None
    compressed: CompressedWeights | None = None

    op: ClassVar[str] = "Conv"
    arity: ClassVar[int | None] = None  # 1, or 2 with a fused residual

    @property
    def out_channels(self) -> int:
        return int(self.weight.shape[0])

    @property
    def in_channels(self) -> int:
        return int(self.weight.shape[1]) * self.groups

    @property
    def kernel_shape(self) -> tuple[int, int]:
        return int(self.weight.shape[2]), int(self.weight.shape[3])

    @property
    def is_depthwise(self) -> bool:
        return self.groups > 1 and self.groups == self.in_channels == self.out_channels

    @property
    def storage_order(self) -> np.ndarray:
        """int32 (O,): the filter order, or the identity before the reorder pass; the
        order of the filters in ``compressed``, which does not store it again."""
        if self.filter_order is None:
            return np.arange(self.out_channels, dtype=np.int32)
        return self.filter_order.astype(np.int32, copy=False)

    @property
    def kept_kernels(self) -> np.ndarray:
        """Bool (O, I/g): kernels with at least one non-zero weight."""
        return np.asarray(self.weight.reshape(*self.weight.shape[:2], -1).any(axis=2))

    @property
    def nonzero_weights(self) -> int:
        return int(np.count_nonzero(self.weight))

    def infer_shapes(self, shapes: Sequence[Shape]) -> tuple[Shape, ...]:
        if len(shapes) not in (1, 2):
            raise IRError(f"Conv {self.name!r} takes 1 or 2 inputs, got {len(shapes)}")
        x = shapes[0]
        self._rank(x, 4)
        n, c, h, w = x
        if self.weight.ndim != 4:
            raise IRError(f"Conv {self.name!r}: weight must be 4-D, got {self.weight.shape}")
        if c != self.in_channels or self.out_channels % self.groups:
            raise IRError(
                f"Conv {self.name!r}: input has {c} channels but weight "
                f"{self.weight.shape} with groups={self.groups} expects {self.in_channels}"
            )
        if self.bias.shape != (self.out_channels,):
            raise IRError(f"Conv {self.name!r}: bias shape {self.bias.shape}")
        if self.groups < 1:
            raise IRError(f"Conv {self.name!r}: groups {self.groups}")
        _check_window(self, self.strides, self.pads, self.dilations)
        kh, kw = self.kernel_shape
        pt, pl, pb, pr = self.pads
        check_size(f"Conv {self.name!r}: the padded input", (n, c, h + pt + pb, w + pl + pr))
        ho = _window_out(h, kh, self.strides[0], pt, pb, self.dilations[0])
        wo = _window_out(w, kw, self.strides[1], pl, pr, self.dilations[1])
        out = (n, self.out_channels, ho, wo)
        if len(shapes) == 2 and tuple(shapes[1]) != out:
            raise IRError(f"Conv {self.name!r}: residual {format_shape(shapes[1])} is not the "
                          f"output shape {format_shape(out)}")
        return (out,)

    def describe(self) -> str:
        kh, kw = self.kernel_shape
        parts = [f"k={kh}x{kw}"]
        if self.strides != (1, 1):
            parts.append(f"s={_pair(self.strides)}")
        if any(self.pads):
            parts.append(f"p={_pair(self.pads)}")
        if self.dilations != (1, 1):
            parts.append(f"d={_pair(self.dilations)}")
        if self.groups != 1:
            parts.append("depthwise" if self.is_depthwise else f"g={self.groups}")
        if len(self.inputs) == 2:
            parts.append("+residual")
        if self.activation:
            parts.append(f"+{self.activation}")
        if self.filter_order is not None:
            parts.append("reordered")
        if self.compressed is not None:
            parts.append(f"compressed {self.compressed.nbytes}B")
        if self.pattern is not None:
            p = self.pattern
            parts.append(
                f"pattern[{len(p.patterns_used)}/{len(p.library)} used, "
                f"kept {p.kernels_kept}/{p.kernels_total}]"
            )
        elif self.sparsity is Sparsity.UNSTRUCTURED:
            parts.append(f"unstructured[nnz {self.nonzero_weights}/{self.weight.size}]")
        return " ".join(parts)


@dataclass(frozen=True, eq=False, kw_only=True)
class Dense(Layer):
    """Fully connected: ``y = x @ weight.T + bias`` on the last axis; weight (N, K)."""

    weight: np.ndarray
    bias: np.ndarray
    activation: Activation | None = None

    op: ClassVar[str] = "Dense"

    def infer_shapes(self, shapes: Sequence[Shape]) -> tuple[Shape, ...]:
        self._check_arity(shapes)
        (x,) = shapes
        n_out, k = self.weight.shape
        if not x or x[-1] != k:
            raise IRError(
                f"Dense {self.name!r}: input {format_shape(x)} does not end in {k} features"
            )
        if self.bias.shape != (n_out,):
            raise IRError(f"Dense {self.name!r}: bias shape {self.bias.shape}")
        return ((*x[:-1], n_out),)

    def describe(self) -> str:
        n_out, k = self.weight.shape
        act = f" +{self.activation}" if self.activation else ""
        return f"{k}->{n_out}{act}"


@dataclass(frozen=True, eq=False, kw_only=True)
class Col2Im(Layer):
    """Sums columns of kernel taps into an image (ONNX Col2Im, torch's fold): the
    second half of a strided ConvTranspose, after a 1x1 conv made the columns.

    Input (N, C*kh*kw, H, W), channel ``(c*kh + ky)*kw + kx`` holding tap (ky, kx) of
    output channel c; output (N, C, Ho, Wo) = ``output_size``::

        out[n, c, oy, ox] = act(bias[c] + sum of in[n, (c*kh + ky)*kw + kx, iy, ix]
                                over the taps with oy = iy*sh - pt + ky*dh, 0 <= iy < H
                                (and the same along x))

    ``pads`` (top, left, bottom, right) crop the full image of the taps; the output
    may be up to max(stride, dilation) - 1 rows or columns longer than that cropped
    image (ConvTranspose's output_padding), rows no tap reaches holding the bias
    alone. ``bias`` (C,) or None for zero.
    """

    channels: int
    kernel: tuple[int, int]
    output_size: tuple[int, int]
    strides: tuple[int, int] = (1, 1)
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)
    dilations: tuple[int, int] = (1, 1)
    bias: np.ndarray | None = None
    activation: Activation | None = None

    op: ClassVar[str] = "Col2Im"

    def infer_shapes(self, shapes: Sequence[Shape]) -> tuple[Shape, ...]:
        self._check_arity(shapes)
        (x,) = shapes
        self._rank(x, 4)
        n, ck, h, w = x
        _check_window(self, self.strides, self.pads, self.dilations)
        if len(self.kernel) != 2 or min(self.kernel) < 1 or self.channels < 1:
            raise IRError(f"Col2Im {self.name!r}: kernel {self.kernel} and channels "
                          f"{self.channels} must be >= 1")
        kh, kw = self.kernel
        if ck != self.channels * kh * kw:
            raise IRError(f"Col2Im {self.name!r}: input {format_shape(x)} has {ck} channels, "
                          f"not channels x kernel = {self.channels} x {kh}x{kw}")
        if self.bias is not None and self.bias.shape != (self.channels,):
            raise IRError(f"Col2Im {self.name!r}: bias shape {self.bias.shape}, expected "
                          f"({self.channels},)")
        if len(self.output_size) != 2:
            raise IRError(f"Col2Im {self.name!r}: output size {self.output_size}")
        pt, pl, pb, pr = self.pads
        for axis, size, out, pad in ((2, h, self.output_size[0], pt + pb),
                                     (3, w, self.output_size[1], pl + pr)):
            k, s, d = (v[axis - 2] for v in (self.kernel, self.strides, self.dilations))
            least = (size - 1) * s + (k - 1) * d + 1 - pad  # the taps' cropped image
            if not least <= out < least + max(s, d):
                raise IRError(
                    f"Col2Im {self.name!r}: output size {out} on axis {axis} does not fit "
                    f"{size} columns of kernel {k}, stride {s}, dilation {d} and padding "
                    f"{pad}: expected {least} to {least + max(s, d) - 1}")
        image = (n, self.channels, *self.output_size)
        check_size(f"Col2Im {self.name!r}: the output", image)
        return (image,)

    def describe(self) -> str:
        parts = [f"k={_pair(self.kernel)}", f"s={_pair(self.strides)}"]
        if any(self.pads):
            parts.append(f"p={_pair(self.pads)}")
        if self.dilations != (1, 1):
            parts.append(f"d={_pair(self.dilations)}")
        parts.append(f"to {format_shape(self.output_size)}")
        if self.bias is not None:
            parts.append("+bias")
        if self.activation:
            parts.append(f"+{self.activation}")
        return " ".join(parts)


@dataclass(frozen=True, eq=False, kw_only=True)
class ScaleShift(Layer):
    """Per-channel affine on axis 1: ``y = x * scale[c] + shift[c]`` (an unfused BatchNorm)."""

    scale: np.ndarray
    shift: np.ndarray
    activation: Activation | None = None

    op: ClassVar[str] = "ScaleShift"

    def infer_shapes(self, shapes: Sequence[Shape]) -> tuple[Shape, ...]:
        self._check_arity(shapes)
        (x,) = shapes
        if len(x) < 2 or self.scale.shape != (x[1],) or self.shift.shape != (x[1],):
            raise IRError(f"ScaleShift {self.name!r}: {self.scale.shape} vs input {x}")
        return (tuple(x),)

    def describe(self) -> str:
        return f"+{self.activation}" if self.activation else ""


# ---------------------------------------------------------------------------------------
# Pooling
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False, kw_only=True)
class Pool(Layer):
    """Max or average pooling over H, W. ``pads`` are (top, left, bottom, right).

    ``count_include_pad`` (average only) divides by the full window including the
    explicit padding; windows extended by ``ceil_mode`` never count the extension.
    """

    kind: str  # "max" | "avg"
    kernel: tuple[int, int]
    strides: tuple[int, int] = (1, 1)
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)
    dilations: tuple[int, int] = (1, 1)
    ceil_mode: bool = False
    count_include_pad: bool = False

    op: ClassVar[str] = "Pool"

    def infer_shapes(self, shapes: Sequence[Shape]) -> tuple[Shape, ...]:
        self._check_arity(shapes)
        (x,) = shapes
        self._rank(x, 4)
        if self.kind not in ("max", "avg"):
            raise IRError(f"Pool {self.name!r}: kind {self.kind!r}")
        n, c, h, w = x
        _check_window(self, self.strides, self.pads, self.dilations)
        if len(self.kernel) != 2 or min(self.kernel) < 1:
            raise IRError(f"Pool {self.name!r}: kernel {self.kernel}")
        pt, pl, pb, pr = self.pads
        check_size(f"Pool {self.name!r}: the padded input", (n, c, h + pt + pb, w + pl + pr))
        ho = _window_out(h, self.kernel[0], self.strides[0], pt, pb, self.dilations[0],
                         self.ceil_mode)
        wo = _window_out(w, self.kernel[1], self.strides[1], pl, pr, self.dilations[1],
                         self.ceil_mode)
        # A window of padding alone has no maximum and no average (onnxruntime answers
        # -FLT_MAX or 0/0); reject it rather than pick a value.
        for axis, size, out, pad in ((2, h, ho, pt), (3, w, wo, pl)):
            k, s, d = self.kernel[axis - 2], self.strides[axis - 2], self.dilations[axis - 2]
            i = _padding_only_window(size, out, k, s, pad, d)
            if i is not None:
                raise IRError(
                    f"Pool {self.name!r}: output {i} on axis {axis} reads only padding "
                    f"(kernel {k}, dilation {d}, padding {pad}); reduce the padding")
        return ((n, c, ho, wo),)

    def describe(self) -> str:
        parts = [self.kind, f"k={_pair(self.kernel)}", f"s={_pair(self.strides)}"]
        if any(self.pads):
            parts.append(f"p={_pair(self.pads)}")
        if self.dilations != (1, 1):
            parts.append(f"d={_pair(self.dilations)}")
        if self.ceil_mode:
            parts.append("ceil")
        if self.kind == "avg" and self.count_include_pad:
            parts.append("count_include_pad")
        return " ".join(parts)


@dataclass(frozen=True, eq=False, kw_only=True)
class GlobalPool(Layer):
    """Max or average over all spatial axes (2..), keeping them as size 1."""

    kind: str  # "max" | "avg"

    op: ClassVar[str] = "GlobalPool"

    def infer_shapes(self, shapes: Sequence[Shape]) -> tuple[Shape, ...]:
        self._check_arity(shapes)
        (x,) = shapes
        if len(x) < 3 or self.kind not in ("max", "avg"):
            raise IRError(f"GlobalPool {self.name!r}: kind {self.kind!r} on {format_shape(x)}")
        return ((x[0], x[1], *([1] * (len(x) - 2))),)

    def describe(self) -> str:
        return self.kind


REDUCE_KINDS = ("mean", "max", "min", "sum", "l2")  # l2: sqrt of the sum of squares


@dataclass(frozen=True, eq=False, kw_only=True)
class Reduce(Layer):
    """A reduction over the consecutive axes ``start``..``stop - 1``, which stay as size
    1. Frontends express any set of axes as a chain of these (and a Reshape to drop
    them); over all spatial axes of NCHW, ``GlobalPool`` is the faster form."""

    kind: str
    start: int
    stop: int

    op: ClassVar[str] = "Reduce"

    def infer_shapes(self, shapes: Sequence[Shape]) -> tuple[Shape, ...]:
        self._check_arity(shapes)
        (x,) = shapes
        if self.kind not in REDUCE_KINDS or not 0 <= self.start < self.stop <= len(x):
            raise IRError(f"Reduce {self.name!r}: {self.kind} over axes "
                          f"{self.start}..{self.stop - 1} of {format_shape(x)}")
        return ((*x[:self.start], *([1] * (self.stop - self.start)), *x[self.stop:]),)

    def describe(self) -> str:
        return f"{self.kind} axes={self.start}..{self.stop - 1}"


# ---------------------------------------------------------------------------------------
# Element-wise
# ---------------------------------------------------------------------------------------

BINARY_OPS = ("add", "sub", "mul", "div", "max", "min", "pow")


def broadcast(a: Shape, b: Shape) -> Shape:
    """Numpy broadcasting of two shapes; raises IRError when they do not broadcast."""
    try:
        return tuple(int(d) for d in np.broadcast_shapes(a, b))
    except ValueError as e:
        raise IRError(f"shapes {format_shape(a)} and {format_shape(b)} do not broadcast") from e


@dataclass(frozen=True, eq=False, kw_only=True)
class Binary(Layer):
    """Element-wise ``op`` of two tensors with numpy broadcasting, optional activation."""

    binop: str
    activation: Activation | None = None

    op: ClassVar[str] = "Binary"
    arity: ClassVar[int | None] = 2

    def infer_shapes(self, shapes: Sequence[Shape]) -> tuple[Shape, ...]:
        self._check_arity(shapes)
        if self.binop not in BINARY_OPS:
            raise IRError(f"Binary {self.name!r}: unknown op {self.binop!r}")
        return (broadcast(*shapes),)

    def describe(self) -> str:
        return self.binop + (f" +{self.activation}" if self.activation else "")


@dataclass(frozen=True, eq=False, kw_only=True)
class Unary(Layer):
    """A standalone activation."""

    activation: Activation

    op: ClassVar[str] = "Unary"

    def infer_shapes(self, shapes: Sequence[Shape]) -> tuple[Shape, ...]:
        self._check_arity(shapes)
        return (tuple(shapes[0]),)

    def describe(self) -> str:
        return str(self.activation)


@dataclass(frozen=True, eq=False, kw_only=True)
class Softmax(Layer):
    """Softmax along one axis (opset >= 13 semantics; frontends rewrite older forms);
    with ``log``, its logarithm computed directly: ``x - max - log(sum(exp(x - max)))``
    (LogSoftmax)."""

    axis: int
    log: bool = False

    op: ClassVar[str] = "Softmax"

    def infer_shapes(self, shapes: Sequence[Shape]) -> tuple[Shape, ...]:
        self._check_arity(shapes)
        (x,) = shapes
        if not 0 <= self.axis < len(x):
            raise IRError(f"Softmax {self.name!r}: axis {self.axis} out of range for {x}")
        return (tuple(x),)

    def describe(self) -> str:
        return ("log " if self.log else "") + f"axis={self.axis}"


# ---------------------------------------------------------------------------------------
# Data movement
# ---------------------------------------------------------------------------------------


def _normalize_axis(axis: int, rank: int, who: str) -> int:
    if not -rank <= axis < rank:
        raise IRError(f"{who}: axis {axis} out of range for rank {rank}")
    return axis % rank


@dataclass(frozen=True, eq=False, kw_only=True)
class Concat(Layer):
    """Concatenation along ``axis`` (non-negative)."""

    axis: int

    op: ClassVar[str] = "Concat"
    arity: ClassVar[int | None] = None

    def infer_shapes(self, shapes: Sequence[Shape]) -> tuple[Shape, ...]:
        if not shapes:
            raise IRError(f"Concat {self.name!r} has no inputs")
        first = shapes[0]
        axis = _normalize_axis(self.axis, len(first), f"Concat {self.name!r}")
        for s in shapes[1:]:
            if len(s) != len(first) or any(
                a != b for i, (a, b) in enumerate(zip(s, first, strict=True)) if i != axis
            ):
                raise IRError(f"Concat {self.name!r}: {format_shape(s)} vs {format_shape(first)}")
        total = sum(s[axis] for s in shapes)
        return ((*first[:axis], total, *first[axis + 1:]),)

    def describe(self) -> str:
        return f"axis={self.axis}"


@dataclass(frozen=True, eq=False, kw_only=True)
class Reshape(Layer):
    """Row-major reshape to a fully static ``shape`` (Flatten, Squeeze, View...)."""

    shape: Shape

    op: ClassVar[str] = "Reshape"

    def infer_shapes(self, shapes: Sequence[Shape]) -> tuple[Shape, ...]:
        self._check_arity(shapes)
        (x,) = shapes
        if math.prod(x) != math.prod(self.shape) or any(d < 0 for d in self.shape):
            raise IRError(
                f"Reshape {self.name!r}: cannot reshape {format_shape(x)} to "
                f"{format_shape(self.shape)}"
            )
        return (tuple(self.shape),)

    def describe(self) -> str:
        return f"to {format_shape(self.shape)}"


@dataclass(frozen=True, eq=False, kw_only=True)
class Transpose(Layer):
    """Axis permutation: output axis i is input axis ``perm[i]``."""

    perm: tuple[int, ...]

    op: ClassVar[str] = "Transpose"

    def infer_shapes(self, shapes: Sequence[Shape]) -> tuple[Shape, ...]:
        self._check_arity(shapes)
        (x,) = shapes
        if sorted(self.perm) != list(range(len(x))):
            raise IRError(f"Transpose {self.name!r}: perm {self.perm} for rank {len(x)}")
        return (tuple(x[p] for p in self.perm),)

    def describe(self) -> str:
        return f"perm={','.join(map(str, self.perm))}"


@dataclass(frozen=True, eq=False, kw_only=True)
class Slice(Layer):
    """Strided slice with one (start, end, step) per axis, as Python ``range`` bounds.

    Bounds are already clamped: with a negative step ``end`` may be -1, meaning
    "through index 0" (so the slice is ``range(start, end, step)`` exactly).
    """

    starts: tuple[int, ...]
    ends: tuple[int, ...]
    steps: tuple[int, ...]

    op: ClassVar[str] = "Slice"

    def infer_shapes(self, shapes: Sequence[Shape]) -> tuple[Shape, ...]:
        self._check_arity(shapes)
        (x,) = shapes
        if not len(self.starts) == len(self.ends) == len(self.steps) == len(x):
            raise IRError(f"Slice {self.name!r}: bounds for rank {len(self.starts)}, input {x}")
        out = []
        for d, s, e, st in zip(x, self.starts, self.ends, self.steps, strict=True):
            r = range(s, e, st)
            if st == 0 or (len(r) and not (0 <= r[0] < d and 0 <= r[-1] < d)):
                raise IRError(f"Slice {self.name!r}: range({s}, {e}, {st}) on axis of size {d}")
            out.append(len(r))
        return (tuple(out),)

    def describe(self) -> str:
        # printed as Python slices: a negative step running through index 0 has no end
        return " ".join(
            f"[{s}:{'' if e < 0 else e}{':' + str(st) if st != 1 else ''}]"
            for s, e, st in zip(self.starts, self.ends, self.steps, strict=True)
        )


@dataclass(frozen=True, eq=False, kw_only=True)
class Split(Layer):
    """Split along ``axis`` into consecutive pieces of ``sizes`` (one output each)."""

    axis: int
    sizes: tuple[int, ...]

    op: ClassVar[str] = "Split"

    def infer_shapes(self, shapes: Sequence[Shape]) -> tuple[Shape, ...]:
        self._check_arity(shapes)
        (x,) = shapes
        axis = _normalize_axis(self.axis, len(x), f"Split {self.name!r}")
        if sum(self.sizes) != x[axis] or len(self.sizes) != len(self.outputs):
            raise IRError(f"Split {self.name!r}: sizes {self.sizes} of axis length {x[axis]}")
        return tuple((*x[:axis], s, *x[axis + 1:]) for s in self.sizes)

    def describe(self) -> str:
        return f"axis={self.axis} sizes={','.join(map(str, self.sizes))}"


@dataclass(frozen=True, eq=False, kw_only=True)
class Gather(Layer):
    """The slices at constant ``indices`` along ``axis`` (numpy's ``take``): the output
    is the input's shape with that axis replaced by the indices' shape (a scalar index
    drops it). Indices are int64 of any shape, already non-negative (frontends add the
    axis length to a negative one), so a backend only copies."""

    axis: int
    indices: np.ndarray

    op: ClassVar[str] = "Gather"

    def infer_shapes(self, shapes: Sequence[Shape]) -> tuple[Shape, ...]:
        self._check_arity(shapes)
        (x,) = shapes
        if not 0 <= self.axis < len(x):
            raise IRError(f"Gather {self.name!r}: axis {self.axis} out of range for "
                          f"{format_shape(x)}")
        if self.indices.dtype != np.int64:
            raise IRError(f"Gather {self.name!r}: indices are {self.indices.dtype}, "
                          "expected int64")
        size = x[self.axis]
        bad = np.flatnonzero((self.indices < 0) | (self.indices >= size))
        if bad.size:
            raise IRError(f"Gather {self.name!r}: index {int(self.indices.flat[bad[0]])} "
                          f"(position {bad[0]} of the indices) is outside 0..{size - 1}, "
                          f"the axis {self.axis} of {format_shape(x)}")
        return ((*x[:self.axis], *self.indices.shape, *x[self.axis + 1:]),)

    def describe(self) -> str:
        flat = self.indices.reshape(-1).tolist()
        shown = ",".join(map(str, flat[:8])) + (",..." if len(flat) > 8 else "")
        return f"axis={self.axis} indices[{format_shape(self.indices.shape)}]={shown}"


PAD_MODES = ("constant", "reflect", "edge")


@dataclass(frozen=True, eq=False, kw_only=True)
class Pad(Layer):
    """Padding with ONNX's ``pads`` order (all begins, then all ends), non-negative."""

    pads: tuple[int, ...]
    mode: str = "constant"
    value: float = 0.0

    op: ClassVar[str] = "Pad"

    def infer_shapes(self, shapes: Sequence[Shape]) -> tuple[Shape, ...]:
        self._check_arity(shapes)
        (x,) = shapes
        r = len(x)
        if len(self.pads) != 2 * r or min(self.pads, default=0) < 0 or self.mode not in PAD_MODES:
            raise IRError(f"Pad {self.name!r}: pads {self.pads} mode {self.mode!r} for {x}")
        if self.mode == "reflect" and any(
            max(self.pads[i], self.pads[i + r]) >= x[i] for i in range(r)
            if self.pads[i] or self.pads[i + r]
        ):
            raise IRError(f"Pad {self.name!r}: reflect padding {self.pads} too wide for {x}")
        return (tuple(d + self.pads[i] + self.pads[i + r] for i, d in enumerate(x)),)

    def describe(self) -> str:
        value = f" value={self.value:g}" if self.mode == "constant" and self.value else ""
        return f"{self.mode} {','.join(map(str, self.pads))}{value}"


@dataclass(frozen=True, eq=False, kw_only=True)
class Resize(Layer):
    """Resampling to ``size`` (ONNX Resize; torch interpolate): along each axis whose
    size, scale or region changes, every output coordinate reads a window of input
    coordinates (``patcc.ir.resample``). ``scales`` are the per-axis factors the
    coordinate transformation uses (not always ``size / input``: ONNX floors the
    output size of given scales); ``roi`` (all starts, then all ends, normalised) only
    matters for ``tf_crop_and_resize``, whose outputs outside it are
    ``extrapolation_value``."""

    size: Shape
    scales: tuple[float, ...]
    mode: str = "nearest"
    coordinate_mode: str = "half_pixel"
    nearest_mode: str = "round_prefer_floor"
    cubic_a: float = -0.75
    exclude_outside: bool = False
    antialias: bool = False
    roi: tuple[float, ...] = ()
    extrapolation_value: float = 0.0

    op: ClassVar[str] = "Resize"

    MAX_TABLE: ClassVar[int] = 2**22
    """The most (output coordinate, tap) pairs one axis's table may hold: an axis of a
    million outputs with a cubic window, built in about a second."""

    def infer_shapes(self, shapes: Sequence[Shape]) -> tuple[Shape, ...]:
        self._check_arity(shapes)
        (x,) = shapes
        r = len(x)
        what = f"Resize {self.name!r}"
        if r == 0:
            raise IRError(f"{what}: cannot resize a scalar")
        if len(self.size) != r or len(self.scales) != r or len(self.roi) not in (0, 2 * r):
            raise IRError(f"{what}: size {self.size}, scales {self.scales} and roi "
                          f"{self.roi} do not fit a rank-{r} input")
        if (self.mode not in RESIZE_MODES or self.coordinate_mode not in COORDINATE_MODES
                or self.nearest_mode not in NEAREST_MODES):
            raise IRError(f"{what}: unknown mode {self.mode!r}, coordinate transformation "
                          f"{self.coordinate_mode!r} or nearest mode {self.nearest_mode!r}")
        if self.antialias and self.mode == "nearest":
            raise IRError(f"{what}: antialiasing applies to the linear and cubic modes only")
        values = (*self.scales, *self.roi, self.cubic_a, self.extrapolation_value)
        if not all(math.isfinite(v) for v in values) or min(self.scales) <= 0:
            raise IRError(f"{what}: scales {self.scales} must be finite and positive "
                          "(and roi, cubic_coeff_a, extrapolation_value finite)")
        check_size(f"{what} output", self.size)
        support = {"nearest": 1.0, "linear": 1.0, "cubic": 2.0}[self.mode]
        for axis, (out, scale) in enumerate(zip(self.size, self.scales, strict=True)):
            stretch = min(scale, 1.0) if self.antialias else 1.0
            if out * (2 * math.ceil(support / stretch) + 2) > self.MAX_TABLE:
                raise IRError(f"{what}: axis {axis} resized by {scale:g} to {out} needs "
                              f"a filter table of more than {self.MAX_TABLE} entries")
        return (tuple(self.size),)

    def axis_taps(self, in_shape: Shape) -> list[AxisTaps | None]:
        """Each axis's window table, None for an axis the layer leaves as it is."""
        r = len(in_shape)
        result: list[AxisTaps | None] = []
        for axis, (n_in, n_out, scale) in enumerate(
                zip(in_shape, self.size, self.scales, strict=True)):
            roi = (self.roi[axis], self.roi[axis + r]) if self.roi else (0.0, 1.0)
            taps = axis_taps(mode=self.mode, coordinate_mode=self.coordinate_mode,
                             nearest_mode=self.nearest_mode, cubic_a=self.cubic_a,
                             exclude_outside=self.exclude_outside, antialias=self.antialias,
                             scale=scale, in_size=n_in, out_size=n_out, roi=roi)
            result.append(None if n_in == n_out and taps.is_identity() else taps)
        return result

    def describe(self) -> str:
        detail = {"nearest": self.nearest_mode, "cubic": f"a={self.cubic_a:g}"}.get(self.mode)
        extra = [self.coordinate_mode, *([detail] if detail else []),
                 *(["antialias"] if self.antialias else []),
                 *(["exclude_outside"] if self.exclude_outside else [])]
        return f"{self.mode} to {format_shape(self.size)} ({', '.join(extra)})"


LAYER_TYPES: tuple[type[Layer], ...] = (
    Conv, Dense, ScaleShift, Pool, GlobalPool, Reduce, Binary, Unary, Softmax,
    Concat, Reshape, Transpose, Slice, Split, Pad, Resize, Gather, Col2Im,
)

__all__ = [
    "ACTIVATION_KINDS", "Activation", "BINARY_OPS", "Binary", "Col2Im", "Concat", "Conv",
    "Dense",
    "Gather", "GlobalPool", "IRError", "LAYER_TYPES", "Layer", "MAX_TENSOR_ELEMENTS",
    "MAX_TOTAL_ELEMENTS", "PAD_MODES", "Pad", "Pool", "REDUCE_KINDS", "Reduce", "Reshape", "Resize",
    "ScaleShift", "Shape", "Slice", "Softmax", "Split", "Transpose", "Unary", "broadcast",
    "check_size",
]
