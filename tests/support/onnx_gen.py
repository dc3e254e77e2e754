"""Hypothesis strategies that build small random ONNX models for differential tests.

Every strategy draws an :class:`OnnxCase`: a float32 NCHW model (``onnx.helper``,
``ir_version`` 8 so onnxruntime accepts every opset 11..21), the inputs to feed it,
and the ground truth the generator knows (declared output shapes, the masks of the
pattern-pruned 3x3 convolutions it wrote). Hypothesis draws the structure (ops,
shapes, attributes, opset, a seed); the values (weights, inputs) come from numpy
seeded with the drawn seed, which is much faster than drawing floats and still
reproducible.

Strategies:

* ``single_layer_models()``: one operator with random attributes.
* ``small_graph_models()``: chains and branches of 2-6 blocks (conv-bn-relu-pool,
  residual add, concat branches, channel shuffle, squeeze-excite, ...), ending in an
  optional classifier head.
* ``pattern_conv_models()``: one pattern-pruned 3x3 convolution, maybe followed by a
  BatchNormalization and an activation, for checking pattern-style detection.

Constants are mostly initializers, sometimes Constant nodes, and sometimes also
listed as graph inputs (as old exporters do); with ``input_shapes`` set on a case the
batch dimension is symbolic. Tensors stay tiny (at most a few thousand elements) so
each example runs in milliseconds.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

Shape = tuple[int, ...]
Draw = Callable[[st.SearchStrategy], object]

MIN_OPSET, MAX_OPSET = 11, 21
IR_VERSION = 8  # onnxruntime accepts IR 8 with every opset we draw (11..21)
INT64_MAX = int(np.iinfo(np.int64).max)
INT64_MIN = int(np.iinfo(np.int64).min)

# The PatDNN pattern shape: the centre tap plus three of its eight neighbours.
CENTRE_PLUS_3_MASKS: np.ndarray = np.array(
    [
        np.isin(np.arange(9), (4, *nbrs)).reshape(3, 3)
        for nbrs in itertools.combinations((0, 1, 2, 3, 5, 6, 7, 8), 3)
    ]
)


# ---------------------------------------------------------------------------------------
# What a strategy returns
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PatternConv:
    """Ground truth of one pattern-pruned 3x3 conv: its weight and per-kernel masks.

    ``masks`` is bool (O, I/groups, 3, 3), all False for a removed kernel.
    """

    node: str
    weight: str
    masks: np.ndarray

    @property
    def removed(self) -> np.ndarray:
        """Bool (O, I/groups): kernels removed by connectivity pruning."""
        return ~self.masks.reshape(*self.masks.shape[:2], 9).any(axis=2)


@dataclass(frozen=True)
class OnnxCase:
    """A generated model, its inputs, and what the generator knows about it."""

    model: onnx.ModelProto
    feeds: dict[str, np.ndarray]
    output_names: tuple[str, ...]
    output_shapes: tuple[Shape, ...]
    input_shapes: dict[str, Shape] | None = None  # set when the batch dim is symbolic
    pattern_convs: tuple[PatternConv, ...] = field(default_factory=tuple)

    @property
    def opset(self) -> int:
        return next(o.version for o in self.model.opset_import if o.domain in ("", "ai.onnx"))

    def _repr_pretty_(self, printer: object, cycle: bool) -> None:
        printer.text(repr(self))  # type: ignore[attr-defined]  # hypothesis's pretty printer

    def __repr__(self) -> str:
        # What hypothesis prints for a falsifying example: enough to rebuild the model.
        g = self.model.graph
        ins = ", ".join(f"{n}: {tuple(a.shape)}" for n, a in self.feeds.items())
        lines = [f"OnnxCase(opset {self.opset}, inputs {ins}"
                 + (f", input_shapes={self.input_shapes}" if self.input_shapes else "") + ")"]
        inits = {t.name: numpy_helper.to_array(t) for t in g.initializer}
        for node in g.node:
            args = []
            for name in node.input:
                value = inits.get(name)
                if value is None or value.size > 8:
                    args.append(name + (f"{list(value.shape)}" if value is not None else ""))
                else:
                    args.append(f"{name}={value.tolist()}")
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            attrs = {k: (v.decode() if isinstance(v, bytes) else
                         numpy_helper.to_array(v).tolist() if isinstance(v, onnx.TensorProto)
                         else v) for k, v in attrs.items()}
            lines.append(f"  {', '.join(node.output)} = {node.op_type}({', '.join(args)})"
                         + (f" {attrs}" if attrs else ""))
        outs = zip(self.output_names, self.output_shapes, strict=True)
        lines.append(f"  -> {', '.join(f'{n}{list(s)}' for n, s in outs)}")
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------
# Building a model while tracking static shapes
# ---------------------------------------------------------------------------------------


class ModelBuilder:
    """Appends nodes, initializers and inputs, tracking every tensor's static shape."""

    def __init__(self, opset: int, seed: int) -> None:
        self.opset = opset
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.inputs: list[str] = []
        self.feeds: dict[str, np.ndarray] = {}
        self.shapes: dict[str, Shape] = {}
        self.pattern_convs: list[PatternConv] = []
        self._library: np.ndarray | None = None
        self._count = 0
        # ONNX shape inference (which onnxruntime runs when loading) keeps a ceil_mode
        # window that starts past the input and padding; onnxruntime's kernels (and the
        # ONNX reference and PyTorch) drop it. A later node with a shape-dependent
        # constant then fails to load, so graphs avoid such pools; single layers keep
        # them (only the runtime shape counts there).
        self.ceil_window_drop_ok = True

    def fresh(self, prefix: str) -> str:
        self._count += 1
        return f"{prefix}{self._count}"

    def input(self, shape: Shape, away_from_zero: bool = False) -> str:
        """A new graph input fed with random values (magnitude >= 0.5 if asked)."""
        name = "x" if not self.inputs else f"x{len(self.inputs) + 1}"
        if away_from_zero:
            value = self.rng.uniform(0.5, 2.0, shape) * self.rng.choice((-1.0, 1.0), shape)
        else:
            value = self.rng.standard_normal(shape)
        self.inputs.append(name)
        self.feeds[name] = value.astype(np.float32)
        self.shapes[name] = tuple(shape)
        return name

    def const(self, value: np.ndarray | Sequence[int] | float, prefix: str = "c") -> str:
        """A constant: float arrays become float32, integer lists int64. Mostly an
        initializer, sometimes a Constant node (as torch.onnx exports shapes)."""
        arr = np.asarray(value)
        arr = arr.astype(np.int64 if arr.dtype.kind in "iu" else np.float32)
        name = self.fresh(prefix)
        if self.rng.random() < 0.15:
            self.nodes.append(helper.make_node("Constant", [], [name], name=self.fresh("Constant"),
                                               value=numpy_helper.from_array(arr, name)))
        else:
            self.initializers.append(numpy_helper.from_array(arr, name))
        self.shapes[name] = tuple(arr.shape)
        return name

    def weights(self, shape: Shape, fan_in: int) -> np.ndarray:
        """He-style random weights so activations keep magnitude ~1 through a chain."""
        return (self.rng.standard_normal(shape) / math.sqrt(max(fan_in, 1))).astype(np.float32)

    def node(self, op: str, inputs: Sequence[str], out_shapes: Sequence[Shape],
             **attrs: object) -> list[str]:
        """Append a node; returns its output names (one per shape)."""
        outs = [self.fresh(op.lower() + "_") for _ in out_shapes]
        self.nodes.append(helper.make_node(op, list(inputs), outs, name=self.fresh(op),
                                           **{k: v for k, v in attrs.items() if v is not None}))
        self.shapes.update(zip(outs, (tuple(s) for s in out_shapes), strict=True))
        return outs

    def pattern_library(self) -> np.ndarray:
        """The model-wide library (2-8 centre-plus-3 masks), drawn on first use."""
        if self._library is None:
            m = int(self.rng.integers(2, 9))
            pick = self.rng.choice(len(CENTRE_PLUS_3_MASKS), size=m, replace=False)
            self._library = CENTRE_PLUS_3_MASKS[np.sort(pick)]
        return self._library

    def build(self, outputs: Sequence[str], dynamic_batch: bool = False) -> OnnxCase:
        """The finished case; with ``dynamic_batch`` dim 0 of inputs and outputs is symbolic."""
        def info(name: str, prefix: str) -> onnx.ValueInfoProto:
            shape: list[int | str] = list(self.shapes[name])
            if dynamic_batch and shape:
                shape[0] = f"{prefix}_{name}"
            return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)

        # An output that is also a graph input gets an Identity so names stay distinct.
        final = []
        for name in outputs:
            if name in self.inputs:
                (name,) = self.node("Identity", [name], [self.shapes[name]])
            final.append(name)
        inputs = [info(n, "batch") for n in self.inputs]
        if self.rng.random() < 0.1:
            # Old exporters also list initializers as graph inputs (overridable defaults).
            inputs += [helper.make_tensor_value_info(t.name, t.data_type, list(t.dims))
                       for t in self.initializers]
        graph = helper.make_graph(
            self.nodes, "generated", inputs,
            [info(n, "out_batch") for n in final],
            self.initializers,
        )
        model = helper.make_model(
            graph, opset_imports=[helper.make_opsetid("", self.opset)],
            ir_version=IR_VERSION, producer_name="patcc-tests",
        )
        return OnnxCase(
            model=model,
            feeds=dict(self.feeds),
            output_names=tuple(final),
            output_shapes=tuple(self.shapes[n] for n in final),
            input_shapes={n: self.shapes[n] for n in self.inputs} if dynamic_batch else None,
            pattern_convs=tuple(self.pattern_convs),
        )


# ---------------------------------------------------------------------------------------
# Shape arithmetic (ONNX semantics)
# ---------------------------------------------------------------------------------------


def window_out(size: int, kernel: int, stride: int, lo: int, hi: int, dilation: int,
               ceil_mode: bool = False) -> int:
    """Conv/pool output length; with ceil_mode the last window must start before the
    right padding (ONNX and onnxruntime drop a window that starts there)."""
    span = (kernel - 1) * dilation + 1
    num = size + lo + hi - span
    assert num >= 0, (size, kernel, stride, lo, hi, dilation)
    out = (-(-num // stride) if ceil_mode else num // stride) + 1
    if ceil_mode and (out - 1) * stride >= size + lo:
        out -= 1
    return out


def ceil_drops_window(size: int, kernel: int, stride: int, lo: int, hi: int,
                      dilation: int) -> bool:
    """True when ceil_mode's last window starts in the right padding or beyond, the
    window ONNX shape inference keeps but onnxruntime's kernels drop."""
    num = size + lo + hi - ((kernel - 1) * dilation + 1)
    return -(-num // stride) * stride >= size + lo


def every_window_hits_input(size: int, kernel: int, stride: int, lo: int, out: int,
                            dilation: int) -> bool:
    """True when each window has at least one tap inside the input (not all padding)."""
    return all(
        any(0 <= o * stride - lo + k * dilation < size for k in range(kernel))
        for o in range(out)
    )


def slice_length(dim: int, start: int, end: int, step: int) -> int:
    """Length of ONNX Slice on one axis: negative indices wrap once, then clamp."""
    start = start + dim if start < 0 else start
    end = end + dim if end < 0 else end
    if step > 0:
        start, end = min(max(start, 0), dim), min(max(end, 0), dim)
    else:
        start, end = min(max(start, 0), dim - 1), min(max(end, -1), dim - 1)
    return len(range(start, end, step))


def prime_factors(n: int) -> list[int]:
    out, p = [], 2
    while n > 1:
        while n % p == 0:
            out.append(p)
            n //= p
        p += 1
    return out


def divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


# ---------------------------------------------------------------------------------------
# Small drawing helpers
# ---------------------------------------------------------------------------------------


def _opset(draw: Draw, lo: int = MIN_OPSET, hi: int = MAX_OPSET) -> int:
    return int(draw(st.integers(lo, hi)))


def _seed(draw: Draw) -> int:
    return int(draw(st.integers(0, 2**32 - 1)))


def _nchw(draw: Draw, c_max: int = 8, hw_min: int = 1, hw_max: int = 12) -> Shape:
    return (
        draw(st.integers(1, 2)),
        draw(st.integers(1, c_max)),
        draw(st.integers(hw_min, hw_max)),
        draw(st.integers(hw_min, hw_max)),
    )


# ---------------------------------------------------------------------------------------
# Operators: each appends nodes reading tensor ``x`` and returns its output name
# ---------------------------------------------------------------------------------------


def conv(draw: Draw, b: ModelBuilder, x: str, *, pattern: bool | None = None,
         out_channels: int | None = None, kernel: tuple[int, int] | None = None,
         same_size: bool = False) -> str:
    """Conv with random kernel/stride/pads/dilation/groups, maybe pattern-pruned.

    ``pattern`` None draws whether to prune (3x3 kernels only). ``same_size`` forces
    stride 1 and padding that keeps H and W (residual and concat branches).
    """
    n, c, h, w = b.shapes[x]
    if pattern is None:
        pattern = draw(st.booleans())
    if pattern:
        kernel = (3, 3)

    # Groups: plain, grouped, or depthwise.
    style = draw(st.sampled_from(("plain", "plain", "grouped", "depthwise")))
    if out_channels is not None:
        common = [g for g in divisors(c) if out_channels % g == 0]
        groups = 1 if style == "plain" else draw(st.sampled_from(common))
        o = out_channels
    elif style == "depthwise":
        groups, o = c, c
    elif style == "grouped":
        groups = draw(st.sampled_from(divisors(c)))
        o = groups * draw(st.integers(1, max(1, 8 // groups)))
    else:
        groups, o = 1, draw(st.integers(1, 8))

    auto_pad = "NOTSET"
    if same_size:
        kh, kw = kernel or draw(st.sampled_from(((1, 1), (3, 3), (5, 5), (1, 3), (3, 1))))
        d = (1, 1) if kh == 5 or kw == 5 else (draw(st.integers(1, 2)),) * 2
        s = (1, 1)
        ph, pw = (kh - 1) * d[0] // 2, (kw - 1) * d[1] // 2
        pads = (ph, pw, ph, pw)
    else:
        auto_pad = "NOTSET"
        if draw(st.integers(0, 3)) == 0:
            auto_pad = draw(st.sampled_from(("SAME_UPPER", "SAME_LOWER", "VALID")))
        s = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
        # onnxruntime rejects dilation with SAME_* auto padding.
        d = (1, 1) if auto_pad.startswith("SAME") else (
            draw(st.integers(1, 2)), draw(st.integers(1, 2)))
        pads = (0, 0, 0, 0)
        if auto_pad == "NOTSET":
            pads = tuple(draw(st.integers(0, 2)) for _ in range(4))
        # The largest kernel that still fits the (padded) input on each axis.
        room = (h + pads[0] + pads[2], w + pads[1] + pads[3])
        if auto_pad.startswith("SAME"):
            room = (99, 99)
        kmax = [min(5, (r - 1) // dd + 1) for r, dd in zip(room, d, strict=True)]
        if kernel is None:
            kh, kw = draw(st.integers(1, kmax[0])), draw(st.integers(1, kmax[1]))
        else:
            kh, kw = kernel
            if kh > kmax[0] or kw > kmax[1]:  # does not fit: pad to keep the size
                auto_pad, d = "NOTSET", (1, 1)
                pads = ((kh - 1) // 2, (kw - 1) // 2, kh // 2, kw // 2)
                room = (h + pads[0] + pads[2], w + pads[1] + pads[3])
                if kh > room[0] or kw > room[1]:
                    pads = (kh - 1, kw - 1, kh - 1, kw - 1)

    if auto_pad.startswith("SAME"):
        ho, wo = -(-h // s[0]), -(-w // s[1])
    else:
        ho = window_out(h, kh, s[0], pads[0], pads[2], d[0])
        wo = window_out(w, kw, s[1], pads[1], pads[3], d[1])

    cg = c // groups
    weight = b.weights((o, cg, kh, kw), cg * kh * kw)
    if pattern:
        library = b.pattern_library()
        ids = b.rng.integers(len(library), size=(o, cg))
        masks = library[ids]
        removed_fraction = draw(st.sampled_from((0.0, 0.0, 0.3, 0.6)))
        removed = b.rng.random((o, cg)) < removed_fraction
        if removed.all():
            removed.flat[b.rng.integers(removed.size)] = False
        masks = masks & ~removed[..., None, None]
        weight = np.where(masks, weight, np.float32(0))
    wname = b.const(weight, "w")
    inputs = [x, wname]
    if draw(st.booleans()):
        inputs.append(b.const(b.rng.standard_normal(o) * 0.5, "bias"))
    explicit = auto_pad == "NOTSET"
    attrs = dict(
        kernel_shape=[kh, kw] if draw(st.booleans()) else None,
        strides=list(s) if s != (1, 1) or draw(st.booleans()) else None,
        dilations=list(d) if d != (1, 1) or draw(st.booleans()) else None,
        group=groups if groups != 1 or draw(st.booleans()) else None,
        pads=[pads[0], pads[1], pads[2], pads[3]] if explicit and any(pads) else None,
        auto_pad=None if explicit else auto_pad,
    )
    (y,) = b.node("Conv", inputs, [(n, o, ho, wo)], **attrs)
    if pattern:
        b.pattern_convs.append(PatternConv(node=b.nodes[-1].name, weight=wname, masks=masks))
    return y


def pool(draw: Draw, b: ModelBuilder, x: str) -> str:
    """MaxPool or AveragePool with random kernel, strides, pads, ceil_mode, dilations."""
    n, c, h, w = b.shapes[x]
    kind = draw(st.sampled_from(("MaxPool", "AveragePool")))
    kh, kw = draw(st.integers(1, min(4, h + 1))), draw(st.integers(1, min(4, w + 1)))
    s = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    # onnxruntime requires each pad to be smaller than the kernel.
    pads = (draw(st.integers(0, kh - 1)), draw(st.integers(0, kw - 1)),
            draw(st.integers(0, kh - 1)), draw(st.integers(0, kw - 1)))
    d = (1, 1)
    if kind == "MaxPool" and draw(st.booleans()):
        d = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    ceil_mode = draw(st.booleans())
    auto_pad = "NOTSET"
    if kind == "MaxPool" and not ceil_mode and d == (1, 1) and draw(st.integers(0, 5)) == 0:
        auto_pad = draw(st.sampled_from(("SAME_UPPER", "SAME_LOWER", "VALID")))
        # onnxruntime's pools reject SAME when the stride outruns the kernel (the
        # total padding (out - 1) * stride + kernel - size would be negative).
        if auto_pad.startswith("SAME") and any(
            (-(-size // step) - 1) * step + k < size
            for size, step, k in ((h, s[0], kh), (w, s[1], kw))
        ):
            auto_pad = "VALID"
    if auto_pad == "NOTSET":
        # Shrink the kernel until it fits the padded input, pads staying below it.
        while True:
            pads = (min(pads[0], kh - 1), min(pads[1], kw - 1),
                    min(pads[2], kh - 1), min(pads[3], kw - 1))
            fit_h = (kh - 1) * d[0] + 1 <= h + pads[0] + pads[2]
            fit_w = (kw - 1) * d[1] + 1 <= w + pads[1] + pads[3]
            if fit_h and fit_w:
                break
            kh, kw = kh - (not fit_h), kw - (not fit_w)
        ho = window_out(h, kh, s[0], pads[0], pads[2], d[0], ceil_mode)
        wo = window_out(w, kw, s[1], pads[1], pads[3], d[1], ceil_mode)
        if not (every_window_hits_input(h, kh, s[0], pads[0], ho, d[0])
                and every_window_hits_input(w, kw, s[1], pads[1], wo, d[1])):
            d = (1, 1)  # a dilated window of only padding has no defined maximum
            ho = window_out(h, kh, s[0], pads[0], pads[2], 1, ceil_mode)
            wo = window_out(w, kw, s[1], pads[1], pads[3], 1, ceil_mode)
        if ceil_mode and not b.ceil_window_drop_ok and (
            ceil_drops_window(h, kh, s[0], pads[0], pads[2], d[0])
            or ceil_drops_window(w, kw, s[1], pads[1], pads[3], d[1])
        ):
            ceil_mode = False
            ho = window_out(h, kh, s[0], pads[0], pads[2], d[0])
            wo = window_out(w, kw, s[1], pads[1], pads[3], d[1])
    elif auto_pad == "VALID":
        kh, kw, pads = min(kh, h), min(kw, w), (0, 0, 0, 0)
        ho, wo = (h - kh) // s[0] + 1, (w - kw) // s[1] + 1
    else:
        ho, wo = -(-h // s[0]), -(-w // s[1])
    attrs: dict[str, object] = dict(
        kernel_shape=[kh, kw],
        strides=list(s) if s != (1, 1) or draw(st.booleans()) else None,
        pads=list(pads) if auto_pad == "NOTSET" and any(pads) else None,
        ceil_mode=1 if ceil_mode else None,
        auto_pad=None if auto_pad == "NOTSET" else auto_pad,
    )
    if kind == "MaxPool":
        attrs["dilations"] = list(d) if d != (1, 1) else None
    else:
        attrs["count_include_pad"] = draw(st.sampled_from((None, 0, 1)))
    (y,) = b.node(kind, [x], [(n, c, ho, wo)], **attrs)
    return y


def global_pool(draw: Draw, b: ModelBuilder, x: str) -> str:
    shape = b.shapes[x]
    op = draw(st.sampled_from(("GlobalAveragePool", "GlobalMaxPool")))
    (y,) = b.node(op, [x], [(*shape[:2], *([1] * (len(shape) - 2)))])
    return y


def gemm(draw: Draw, b: ModelBuilder, x: str) -> str:
    """Gemm on a 2-D input with a constant B (transB 0/1), alpha, beta, optional C."""
    m, k = b.shapes[x]
    n_out = draw(st.integers(1, 10))
    trans_b = draw(st.booleans())
    weight = b.weights((n_out, k) if trans_b else (k, n_out), k)
    inputs = [x, b.const(weight, "gemm_b")]
    c_shape = draw(st.sampled_from(("none", "vector", "vector", "row", "scalar", "full")))
    beta = None
    if c_shape != "none":
        shape = {"vector": (n_out,), "row": (1, n_out), "scalar": (), "full": (m, n_out)}[c_shape]
        inputs.append(b.const(b.rng.standard_normal(shape), "gemm_c"))
        beta = draw(st.sampled_from((None, 1.0, 0.5, -2.0)))
    alpha = draw(st.sampled_from((None, 1.0, 0.25, -1.5)))
    (y,) = b.node("Gemm", inputs, [(m, n_out)], transB=1 if trans_b else None,
                  alpha=alpha, beta=beta)
    return y


def matmul(draw: Draw, b: ModelBuilder, x: str) -> str:
    """MatMul of a tensor (any rank >= 2) by a constant (K, N) matrix."""
    shape = b.shapes[x]
    n_out = draw(st.integers(1, 10))
    weight = b.weights((shape[-1], n_out), shape[-1])
    (y,) = b.node("MatMul", [x, b.const(weight, "mm_w")], [(*shape[:-1], n_out)])
    return y


BINARY_OPS = ("Add", "Sub", "Mul", "Div")


def binary_const(draw: Draw, b: ModelBuilder, x: str, x_away_from_zero: bool = False) -> str:
    """Add/Sub/Mul/Div of ``x`` with a broadcastable constant, on either side."""
    shape = b.shapes[x]
    op = draw(st.sampled_from(BINARY_OPS))
    kinds = ["scalar", "full", "last"]
    if len(shape) >= 3:
        kinds += ["channel", "channel4"]
    kind = draw(st.sampled_from(kinds))
    c_shape = {
        "scalar": (),
        "full": shape[1:] if draw(st.booleans()) else shape,
        "last": shape[-1:],
        "channel": (shape[1],) + (1,) * (len(shape) - 2),
        "channel4": (1, shape[1]) + (1,) * (len(shape) - 2),
    }[kind]
    const_first = draw(st.booleans()) and (op != "Div" or x_away_from_zero)
    value = b.rng.uniform(0.5, 2.0, c_shape) * b.rng.choice((-1.0, 1.0), c_shape)
    c = b.const(value, "k")
    out = tuple(np.broadcast_shapes(shape, c_shape))
    (y,) = b.node(op, [c, x] if const_first else [x, c], [out])
    return y


def binary_dynamic(draw: Draw, b: ModelBuilder, x: str) -> str:
    """Add/Sub/Mul/Div of ``x`` and a second graph input, maybe broadcast either way."""
    shape = b.shapes[x]
    op = draw(st.sampled_from(BINARY_OPS))
    choices = [shape, shape[1:], (1,) * len(shape)]
    if len(shape) == 4:
        n, c, h, w = shape
        choices += [(n, c, 1, 1), (1, c, h, w), (h, w), (n, 1, h, w), (n, c, h, 1)]
    if 1 in shape:  # x broadcasts into a bigger second operand
        choices.append(tuple(d if d != 1 else draw(st.integers(2, 4)) for d in shape))
    other = tuple(draw(st.sampled_from(choices)))
    x2 = b.input(other, away_from_zero=op == "Div")
    swap = draw(st.booleans()) and op != "Div"
    out = tuple(np.broadcast_shapes(shape, other))
    (y,) = b.node(op, [x2, x] if swap else [x, x2], [out])
    return y


ACTIVATIONS = ("Relu", "Clip", "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh")


def activation(draw: Draw, b: ModelBuilder, x: str, kinds: Sequence[str] = ACTIVATIONS) -> str:
    """One point-wise activation; Clip takes min/max as (optional) inputs."""
    kinds = [k for k in kinds if k != "HardSwish" or b.opset >= 14]
    op = draw(st.sampled_from(kinds))
    shape = b.shapes[x]
    inputs, attrs = [x], {}
    if op == "Clip":
        lo = draw(st.sampled_from((None, 0.0, -1.0, -0.25)))
        hi = draw(st.sampled_from((None, 6.0, 1.0, 0.5)))
        if lo is not None or hi is not None:
            inputs.append(b.const(np.float32(lo), "clip_min") if lo is not None else "")
        if hi is not None:
            inputs.append(b.const(np.float32(hi), "clip_max"))
    elif op == "LeakyRelu":
        attrs["alpha"] = draw(st.sampled_from((None, 0.1, 0.2, 1.5)))
    elif op == "HardSigmoid":
        attrs["alpha"] = draw(st.sampled_from((None, 1 / 6, 0.25)))
        attrs["beta"] = draw(st.sampled_from((None, 0.5, 0.25)))
    (y,) = b.node(op, inputs, [shape], **attrs)
    return y


def softmax(draw: Draw, b: ModelBuilder, x: str) -> str:
    """Softmax; before opset 13 the input is coerced to 2-D at ``axis``."""
    shape = b.shapes[x]
    r = len(shape)
    axis = draw(st.one_of(st.none(), st.integers(-r, r - 1)))
    (y,) = b.node("Softmax", [x], [shape], axis=axis)
    return y


def concat(draw: Draw, b: ModelBuilder, x: str) -> str:
    """Concat of ``x`` with itself and/or new graph inputs along a random axis."""
    shape = b.shapes[x]
    r = len(shape)
    axis = draw(st.integers(-r, r - 1))
    parts = [x]
    for _ in range(draw(st.integers(1, 2))):
        if draw(st.booleans()):
            parts.append(x)
        else:
            other = list(shape)
            other[axis % r] = draw(st.integers(1, 4))
            parts.append(b.input(tuple(other)))
    out = list(shape)
    out[axis % r] = sum(b.shapes[p][axis % r] for p in parts)
    (y,) = b.node("Concat", parts, [tuple(out)], axis=axis)
    return y


def flatten(draw: Draw, b: ModelBuilder, x: str) -> str:
    shape = b.shapes[x]
    r = len(shape)
    axis = draw(st.one_of(st.none(), st.integers(-r, r)))
    a = 1 if axis is None else axis + r if axis < 0 else axis
    (y,) = b.node("Flatten", [x], [(math.prod(shape[:a]), math.prod(shape[a:]))], axis=axis)
    return y


def reshape(draw: Draw, b: ModelBuilder, x: str) -> str:
    """Reshape to a random regrouping of the input's factors, using 0 and -1 in the shape."""
    shape = b.shapes[x]
    factors = [f for d in shape for f in prime_factors(d)]
    # Cut the factor list into consecutive groups; each group is one output dim.
    cuts = sorted(draw(st.sets(st.integers(1, max(1, len(factors) - 1)), max_size=4)))
    cuts = [c for c in cuts if c < len(factors)]
    bounds = [0, *cuts, len(factors)]
    target = [math.prod(factors[i:j]) for i, j in itertools.pairwise(bounds)]
    for _ in range(draw(st.integers(0, 2))):  # unit dims anywhere
        target.insert(draw(st.integers(0, len(target))), 1)
    target = target[:6]
    target[-1] *= math.prod(shape) // math.prod(target)
    spec = list(target)
    for i in range(min(len(shape), len(spec))):
        if spec[i] == shape[i] and draw(st.integers(0, 2)) == 0:
            spec[i] = 0  # copy the input dim
    free = [i for i, v in enumerate(spec) if v != 0]
    if free and draw(st.booleans()):
        spec[draw(st.sampled_from(free))] = -1
    (y,) = b.node("Reshape", [x, b.const(spec, "shape")], [tuple(target)])
    return y


def transpose(draw: Draw, b: ModelBuilder, x: str) -> str:
    shape = b.shapes[x]
    if draw(st.integers(0, 4)) == 0:
        perm = None  # the default reverses the axes
        out = shape[::-1]
    else:
        perm = list(draw(st.permutations(range(len(shape)))))
        out = tuple(shape[p] for p in perm)
    (y,) = b.node("Transpose", [x], [out], perm=perm)
    return y


def split(draw: Draw, b: ModelBuilder, x: str) -> list[str]:
    """Split into 2-3 pieces: ``split`` attribute before opset 13, an input after;
    equal pieces with neither, ``num_outputs`` (uneven last piece) from opset 18."""
    shape = b.shapes[x]
    r = len(shape)
    axes = [i for i in range(r) if shape[i] >= 2]
    if not axes:
        return [x]
    axis = draw(st.sampled_from(axes))
    length = shape[axis]
    pieces = draw(st.integers(2, min(3, length)))
    form = draw(st.sampled_from(("explicit", "equal")))
    inputs, attrs = [x], {"axis": axis - r if draw(st.booleans()) else axis}
    if form == "explicit":
        cuts = sorted(draw(st.sets(st.integers(1, length - 1), min_size=pieces - 1,
                                   max_size=pieces - 1)))
        sizes = [j - i for i, j in itertools.pairwise([0, *cuts, length])]
        if b.opset < 13:
            attrs["split"] = sizes
        else:
            inputs.append(b.const(sizes, "split"))
    elif b.opset >= 18:
        chunk = -(-length // pieces)
        sizes = [min(chunk, length - i * chunk) for i in range(pieces)]
        sizes = [s for s in sizes if s > 0]
        attrs["num_outputs"] = len(sizes)
    else:
        pieces = draw(st.sampled_from([p for p in divisors(length) if p > 1][:3]))
        sizes = [length // pieces] * pieces
    outs = [tuple(s if i != axis else size for i, s in enumerate(shape)) for size in sizes]
    return b.node("Split", inputs, outs, **attrs)


def slice_(draw: Draw, b: ModelBuilder, x: str) -> str:
    """Slice with starts/ends/axes/steps inputs: negative indices, INT64 bounds,
    out-of-range bounds and negative steps; never empty."""
    shape = b.shapes[x]
    r = len(shape)
    axes = draw(st.lists(st.integers(0, r - 1), min_size=1, max_size=r, unique=True))
    starts, ends, steps = [], [], []
    out = list(shape)
    for axis in axes:
        dim = shape[axis]
        step = draw(st.sampled_from((1, 1, 2, 3, -1, -2)))
        if step > 0:
            start = draw(st.one_of(st.integers(-dim - 2, dim), st.just(0)))
            end = draw(st.one_of(st.integers(-dim - 2, dim + 2), st.just(INT64_MAX)))
        else:
            start = draw(st.one_of(st.integers(-dim - 2, dim + 1), st.just(INT64_MAX),
                                   st.just(-1)))
            end = draw(st.one_of(st.integers(-dim - 2, dim), st.just(INT64_MIN)))
        if slice_length(dim, start, end, step) == 0:
            start, end = (0, INT64_MAX) if step > 0 else (-1, INT64_MIN)
        starts.append(start)
        ends.append(end)
        steps.append(step)
        out[axis] = slice_length(dim, start, end, step)
    # Optional inputs: axes may be omitted when they are 0..k-1 in order, steps when all 1.
    axes_given = axes != list(range(len(axes))) or draw(st.booleans())
    steps_given = any(s != 1 for s in steps) or draw(st.booleans())
    named_axes = [a - r if draw(st.booleans()) else a for a in axes]
    inputs = [x, b.const(starts, "starts"), b.const(ends, "ends")]
    if axes_given or steps_given:
        inputs.append(b.const(named_axes, "axes") if axes_given else "")
    if steps_given:
        inputs.append(b.const(steps, "steps"))
    (y,) = b.node("Slice", inputs, [tuple(out)])
    return y


def pad(draw: Draw, b: ModelBuilder, x: str) -> str:
    """Pad (constant/reflect/edge) with the ``pads`` input, maybe ``axes`` (opset 18)."""
    shape = b.shapes[x]
    r = len(shape)
    mode = draw(st.sampled_from(("constant", "reflect", "edge")))
    spatial_only = draw(st.integers(0, 3)) > 0
    begins, ends = [], []
    for i, dim in enumerate(shape):
        if spatial_only and i < 2:
            begins.append(0)
            ends.append(0)
            continue
        most = min(2, dim - 1) if mode == "reflect" else 2  # reflect needs pad < dim
        begins.append(draw(st.integers(0, most)))
        ends.append(draw(st.integers(0, most)))
    inputs = [x]
    if b.opset >= 18 and draw(st.booleans()):
        axes = [i for i in range(r) if begins[i] or ends[i]] or [r - 1]
        inputs.append(b.const([begins[i] for i in axes] + [ends[i] for i in axes], "pads"))
        value = draw(st.sampled_from((None, 0.0, 1.5))) if mode == "constant" else None
        inputs.append(b.const(np.float32(value), "pad_value") if value is not None else "")
        inputs.append(b.const([a - r if draw(st.booleans()) else a for a in axes], "pad_axes"))
    else:
        inputs.append(b.const(begins + ends, "pads"))
        value = draw(st.sampled_from((None, 0.0, -2.0))) if mode == "constant" else None
        if value is not None:
            inputs.append(b.const(np.float32(value), "pad_value"))
    out = tuple(d + lo + hi for d, lo, hi in zip(shape, begins, ends, strict=True))
    (y,) = b.node("Pad", inputs, [out], mode=None if mode == "constant" and
                  draw(st.booleans()) else mode)
    return y


def batch_norm(draw: Draw, b: ModelBuilder, x: str) -> str:
    """Inference-mode BatchNormalization with random statistics."""
    shape = b.shapes[x]
    c = shape[1]
    scale = b.rng.uniform(0.5, 1.5, c) * b.rng.choice((-1.0, 1.0), c)
    inputs = [x, b.const(scale, "bn_scale"), b.const(b.rng.standard_normal(c) * 0.3, "bn_b"),
              b.const(b.rng.standard_normal(c) * 0.3, "bn_mean"),
              b.const(b.rng.uniform(0.25, 2.0, c), "bn_var")]
    eps = draw(st.sampled_from((None, 1e-3, 1e-5)))
    (y,) = b.node("BatchNormalization", inputs, [shape], epsilon=eps)
    return y


def identity(draw: Draw, b: ModelBuilder, x: str) -> str:
    """Identity or inference-mode Dropout (ratio attribute before opset 12, input after)."""
    shape = b.shapes[x]
    if draw(st.booleans()):
        (y,) = b.node("Identity", [x], [shape])
        return y
    if b.opset < 12:
        (y,) = b.node("Dropout", [x], [shape], ratio=draw(st.sampled_from((None, 0.5))))
    else:
        inputs = [x, b.const(np.float32(0.3), "ratio")] if draw(st.booleans()) else [x]
        (y,) = b.node("Dropout", inputs, [shape])
    return y


def squeeze_unsqueeze(draw: Draw, b: ModelBuilder, x: str) -> str:
    """Unsqueeze then maybe Squeeze: ``axes`` attribute before opset 13, input after."""
    shape = b.shapes[x]

    def axes_arg(axes: list[int], inputs: list[str]) -> dict[str, object]:
        if b.opset >= 13:
            inputs.append(b.const(axes, "axes"))
            return {}
        return {"axes": axes}

    k = draw(st.integers(1, 2))
    rank = len(shape) + k
    axes = draw(st.lists(st.integers(0, rank - 1), min_size=k, max_size=k, unique=True))
    out = list(shape)
    for a in sorted(axes):
        out.insert(a, 1)
    named = [a - rank if draw(st.booleans()) else a for a in axes]
    inputs = [x]
    (y,) = b.node("Unsqueeze", inputs, [tuple(out)], **axes_arg(named, inputs))
    if draw(st.booleans()):
        ones = [i for i, d in enumerate(out) if d == 1]
        if draw(st.booleans()):
            drop = ones  # no axes: squeeze every unit dim
            inputs = [y]
            attrs: dict[str, object] = {}
        else:
            drop = draw(st.lists(st.sampled_from(ones), min_size=1, unique=True))
            inputs = [y]
            attrs = axes_arg([a - len(out) if draw(st.booleans()) else a for a in drop],
                             inputs)
        (y,) = b.node("Squeeze", inputs,
                      [tuple(d for i, d in enumerate(out) if i not in drop)], **attrs)
    return y


def reduce_spatial(draw: Draw, b: ModelBuilder, x: str) -> str:
    """ReduceMean/ReduceMax over H and W (torch's global pooling); axes is an input
    from opset 18."""
    n, c, h, w = b.shapes[x]
    op = draw(st.sampled_from(("ReduceMean", "ReduceMax")))
    axes = draw(st.sampled_from(([2, 3], [-2, -1], [3, 2])))
    keep = draw(st.sampled_from((None, 0, 1)))
    out = (n, c, 1, 1) if keep in (None, 1) else (n, c)
    if b.opset >= 18:
        (y,) = b.node(op, [x, b.const(axes, "axes")], [out], keepdims=keep)
    else:
        (y,) = b.node(op, [x], [out], axes=axes, keepdims=keep)
    return y


def variadic(draw: Draw, b: ModelBuilder, x: str) -> str:
    """Sum of 1-3 operands or Max/Min of two, with a broadcast constant or an input."""
    shape = b.shapes[x]
    op = draw(st.sampled_from(("Sum", "Max", "Min")))
    count = draw(st.integers(1, 3)) if op == "Sum" else 2
    operands = [x]
    for _ in range(count - 1):
        other = draw(st.sampled_from((shape, shape[1:], (1,) * len(shape))))
        operands.append(b.const(b.rng.standard_normal(other), "k") if draw(st.booleans())
                        else b.input(other))
    out = tuple(np.broadcast_shapes(*(b.shapes[t] for t in operands)))
    (y,) = b.node(op, operands, [out])
    return y


def torch_flatten(draw: Draw, b: ModelBuilder, x: str) -> str:
    """``x.view(x.size(0), -1)`` as torch.onnx exports it: Shape -> Gather ->
    Unsqueeze -> Concat -> Reshape (a shape computation patcc must fold)."""
    shape = b.shapes[x]
    (s,) = b.node("Shape", [x], [(len(shape),)])
    (n,) = b.node("Gather", [s, b.const(np.int64(0), "zero")], [()], axis=0)
    if b.opset >= 13:
        (n,) = b.node("Unsqueeze", [n, b.const([0], "axes")], [(1,)])
    else:
        (n,) = b.node("Unsqueeze", [n], [(1,)], axes=[0])
    (target,) = b.node("Concat", [n, b.const([-1], "minus_one")], [(2,)], axis=0)
    (y,) = b.node("Reshape", [x, target], [(shape[0], math.prod(shape[1:]))])
    return y


# ---------------------------------------------------------------------------------------
# Strategies
# ---------------------------------------------------------------------------------------

SINGLE_OPS = (
    "conv", "conv", "conv", "pattern_conv", "pool", "pool", "global_pool", "gemm", "matmul",
    "binary_const", "binary_dynamic", "activation", "softmax", "concat", "flatten",
    "reshape", "transpose", "split", "slice", "pad", "batch_norm", "conv_bn", "identity",
    "squeeze_unsqueeze", "reduce", "variadic", "torch_flatten",
)


@st.composite
def single_layer_models(draw: Draw, ops: Sequence[str] = SINGLE_OPS) -> OnnxCase:
    """A model of one operator (Conv+BatchNormalization counts as one) on a random input."""
    kind = draw(st.sampled_from(ops))
    b = ModelBuilder(_opset(draw), _seed(draw))
    dynamic_batch = draw(st.integers(0, 7)) == 0
    if kind == "gemm":
        x = b.input((draw(st.integers(1, 4)), draw(st.integers(1, 16))))
        return b.build([gemm(draw, b, x)], dynamic_batch)
    if kind in ("matmul", "softmax", "activation", "binary_const", "binary_dynamic",
                "transpose", "flatten", "reshape", "slice", "concat", "split", "identity",
                "squeeze_unsqueeze", "variadic", "torch_flatten"):
        rank = draw(st.integers(2, 4)) if kind != "transpose" else draw(st.integers(1, 5))
        shape = tuple(draw(st.integers(1, 6)) for _ in range(rank))
        away = kind == "binary_const"
        x = b.input(shape, away_from_zero=away)
        fn = {
            "matmul": matmul, "softmax": softmax, "activation": activation,
            "binary_const": lambda d, bb, t: binary_const(d, bb, t, x_away_from_zero=True),
            "binary_dynamic": binary_dynamic, "transpose": transpose, "flatten": flatten,
            "reshape": reshape, "slice": slice_, "concat": concat, "identity": identity,
            "squeeze_unsqueeze": squeeze_unsqueeze, "variadic": variadic,
            "torch_flatten": torch_flatten,
        }.get(kind)
        if kind == "split":
            return b.build(split(draw, b, x), dynamic_batch)
        return b.build([fn(draw, b, x)], dynamic_batch)
    # Pools vectorise their interior 16 outputs at a time: wide enough rows for that.
    x = b.input(_nchw(draw, hw_max=40 if kind == "pool" else 12))
    if kind == "conv":
        y = conv(draw, b, x, pattern=False)
    elif kind == "pattern_conv":
        y = conv(draw, b, x, pattern=True)
    elif kind == "pool":
        y = pool(draw, b, x)
    elif kind == "global_pool":
        y = global_pool(draw, b, x)
    elif kind == "pad":
        y = pad(draw, b, x)
    elif kind == "batch_norm":
        y = batch_norm(draw, b, x)
    elif kind == "conv_bn":
        y = batch_norm(draw, b, conv(draw, b, x))
    elif kind == "reduce":
        y = reduce_spatial(draw, b, x)
    else:
        raise AssertionError(kind)
    return b.build([y], dynamic_batch)


@st.composite
def pattern_conv_models(draw: Draw) -> OnnxCase:
    """One pattern-pruned 3x3 conv, maybe followed by BatchNormalization and Relu."""
    b = ModelBuilder(_opset(draw), _seed(draw))
    x = b.input(_nchw(draw))
    y = conv(draw, b, x, pattern=True)
    if draw(st.booleans()):
        y = batch_norm(draw, b, y)
    if draw(st.booleans()):
        y = activation(draw, b, y, kinds=("Relu", "Clip"))
    return b.build([y])


def _block_conv_bn_act(draw: Draw, b: ModelBuilder, x: str) -> str:
    y = conv(draw, b, x)
    if draw(st.booleans()):
        y = batch_norm(draw, b, y)
    if draw(st.integers(0, 3)) > 0:
        y = activation(draw, b, y)
    return y


def _block_residual(draw: Draw, b: ModelBuilder, x: str) -> str:
    """Two same-size conv branches (or conv and identity) added, then maybe Relu."""
    c = b.shapes[x][1]
    o = c if draw(st.booleans()) else draw(st.integers(1, 8))
    left = conv(draw, b, x, out_channels=o, same_size=True)
    if draw(st.booleans()):
        left = batch_norm(draw, b, left)
    if draw(st.booleans()):
        left = activation(draw, b, left, kinds=("Relu",))
        left = conv(draw, b, left, out_channels=o, same_size=True)
    right = x if o == c and draw(st.booleans()) else conv(
        draw, b, x, out_channels=o, same_size=True, kernel=(1, 1))
    (y,) = b.node("Add", [left, right] if draw(st.booleans()) else [right, left],
                  [b.shapes[left]])
    if draw(st.booleans()):
        y = activation(draw, b, y, kinds=("Relu", "Clip"))
    return y


def _block_concat(draw: Draw, b: ModelBuilder, x: str) -> str:
    """Two or three same-size branches concatenated on channels."""
    n, _, h, w = b.shapes[x]
    branches = []
    for _ in range(draw(st.integers(2, 3))):
        kind = draw(st.sampled_from(("conv", "conv", "pool", "identity")))
        if kind == "conv":
            y = conv(draw, b, x, out_channels=draw(st.integers(1, 4)), same_size=True)
            if draw(st.booleans()):
                y = activation(draw, b, y, kinds=("Relu",))
        elif kind == "pool":
            (y,) = b.node("MaxPool", [x], [b.shapes[x]], kernel_shape=[3, 3],
                          pads=[1, 1, 1, 1])
        else:
            y = x
        branches.append(y)
    c = sum(b.shapes[t][1] for t in branches)
    (y,) = b.node("Concat", branches, [(n, c, h, w)], axis=draw(st.sampled_from((1, -3))))
    return y


def _block_shuffle(draw: Draw, b: ModelBuilder, x: str) -> str:
    """ShuffleNet channel shuffle: reshape (N, g, C/g, H, W), swap, reshape back."""
    n, c, h, w = b.shapes[x]
    gs = [g for g in divisors(c) if 1 < g < c]
    if not gs:
        return activation(draw, b, x)
    g = draw(st.sampled_from(gs))
    first = [0 if draw(st.booleans()) else n, g, c // g, h, -1 if draw(st.booleans()) else w]
    (y,) = b.node("Reshape", [x, b.const(first, "shape")], [(n, g, c // g, h, w)])
    (y,) = b.node("Transpose", [y], [(n, c // g, g, h, w)], perm=[0, 2, 1, 3, 4])
    back = [n, -1, h, w] if draw(st.booleans()) else [0, c, h, w]
    (y,) = b.node("Reshape", [y, b.const(back, "shape")], [(n, c, h, w)])
    return y


def _block_squeeze_excite(draw: Draw, b: ModelBuilder, x: str) -> str:
    """Global pool -> 1x1 conv -> relu -> 1x1 conv -> hard sigmoid -> scale the trunk."""
    n, c, h, w = b.shapes[x]
    r = max(1, c // draw(st.sampled_from((1, 2, 4))))
    (g,) = b.node("GlobalAveragePool", [x], [(n, c, 1, 1)])
    g = conv(draw, b, g, out_channels=r, kernel=(1, 1), same_size=True, pattern=False)
    g = activation(draw, b, g, kinds=("Relu",))
    g = conv(draw, b, g, out_channels=c, kernel=(1, 1), same_size=True, pattern=False)
    g = activation(draw, b, g, kinds=("HardSigmoid", "Sigmoid"))
    (y,) = b.node("Mul", [x, g] if draw(st.booleans()) else [g, x], [(n, c, h, w)])
    return y


def _block_split_concat(draw: Draw, b: ModelBuilder, x: str) -> str:
    """Split channels, transform one piece, concatenate back."""
    if b.shapes[x][1] < 2:
        return activation(draw, b, x)
    n, c, h, w = b.shapes[x]
    at = draw(st.integers(1, c - 1))
    sizes = [at, c - at]
    if b.opset < 13:
        a, z = b.node("Split", [x], [(n, s, h, w) for s in sizes], axis=1, split=sizes)
    else:
        a, z = b.node("Split", [x, b.const(sizes, "split")], [(n, s, h, w) for s in sizes],
                      axis=1)
    z = activation(draw, b, z)
    (y,) = b.node("Concat", [z, a] if draw(st.booleans()) else [a, z], [(n, c, h, w)], axis=1)
    return y


def _block_crop(draw: Draw, b: ModelBuilder, x: str) -> str:
    """A spatial Slice (crop or flip) or a Pad."""
    n, c, h, w = b.shapes[x]
    if draw(st.booleans()):
        return pad(draw, b, x)
    step = draw(st.sampled_from((1, -1, 2)))
    if step > 0:
        starts, ends = [draw(st.integers(0, h - 1)), 0], [INT64_MAX, -1 if w > 1 else 1]
    else:
        starts, ends = [-1, -1], [INT64_MIN, INT64_MIN]
    out = (n, c, slice_length(h, starts[0], ends[0], step),
           slice_length(w, starts[1], ends[1], step))
    (y,) = b.node("Slice", [x, b.const(starts, "starts"), b.const(ends, "ends"),
                            b.const([2, 3], "axes"), b.const([step, step], "steps")], [out])
    return y


def _block_fanout(draw: Draw, b: ModelBuilder, x: str) -> str:
    """A conv whose output feeds two consumers (BatchNorm or an activation, and the
    raw output), joined again: folding or fusing into the conv here would be wrong."""
    t = conv(draw, b, x, out_channels=draw(st.integers(1, 8)), same_size=True)
    first = draw(st.sampled_from((batch_norm, activation, _block_affine)))(draw, b, t)
    second = t if draw(st.booleans()) else activation(draw, b, t)
    op = draw(st.sampled_from(("Add", "Mul", "Concat")))
    shape = b.shapes[t]
    if op == "Concat":
        (y,) = b.node("Concat", [first, second], [(shape[0], 2 * shape[1], *shape[2:])], axis=1)
    else:
        (y,) = b.node(op, [first, second], [shape])
    return y


def _block_affine(draw: Draw, b: ModelBuilder, x: str) -> str:
    return binary_const(draw, b, x)


def _block_misc(draw: Draw, b: ModelBuilder, x: str) -> str:
    fn = draw(st.sampled_from((batch_norm, identity, activation, pool, variadic)))
    return fn(draw, b, x)


BLOCKS = (
    _block_conv_bn_act, _block_conv_bn_act, _block_residual, _block_concat, _block_shuffle,
    _block_squeeze_excite, _block_split_concat, _block_crop, _block_affine, _block_misc,
    _block_fanout, pool,
)


def _head(draw: Draw, b: ModelBuilder, x: str) -> str:
    """An optional classifier head after the trunk."""
    kind = draw(st.sampled_from(("none", "gap_gemm", "flatten_matmul", "softmax", "gmp",
                                 "torch_head")))
    n, c, h, w = b.shapes[x]
    if kind == "gap_gemm":
        (y,) = b.node("GlobalAveragePool", [x], [(n, c, 1, 1)])
        if draw(st.booleans()):
            (y,) = b.node("Flatten", [y], [(n, c)])
        else:
            (y,) = b.node("Reshape", [y, b.const([n, -1] if draw(st.booleans()) else [0, c],
                                                 "shape")], [(n, c)])
        y = gemm(draw, b, y)
        return softmax(draw, b, y) if draw(st.booleans()) else y
    if kind == "flatten_matmul":
        (y,) = b.node("Flatten", [x], [(n, c * h * w)])
        return matmul(draw, b, y)
    if kind == "softmax":
        # Before opset 13 axis 1 means one softmax over C*H*W, from 13 over C alone.
        (y,) = b.node("Softmax", [x], [(n, c, h, w)], axis=1)
        return y
    if kind == "torch_head":  # x.mean((2, 3)) then x.view(n, -1) then a Linear
        y = torch_flatten(draw, b, reduce_spatial(draw, b, x))
        return gemm(draw, b, y)
    if kind == "gmp":
        (y,) = b.node("GlobalMaxPool", [x], [(n, c, 1, 1)])
        return y
    return x


@st.composite
def small_graph_models(draw: Draw) -> OnnxCase:
    """Chains and branches of 2-6 blocks on a small NCHW input, then an optional head."""
    b = ModelBuilder(_opset(draw), _seed(draw))
    b.ceil_window_drop_ok = False
    x = b.input(_nchw(draw, hw_min=3))
    outputs = []
    y = x
    for _ in range(draw(st.integers(2, 6))):
        y = draw(st.sampled_from(BLOCKS))(draw, b, y)
        if y != x and draw(st.integers(0, 9)) == 0:
            outputs.append(y)  # an intermediate tensor as an extra output
    y = _head(draw, b, y)
    outputs = [t for t in outputs if t != y] + [y]
    return b.build(outputs, dynamic_batch=draw(st.integers(0, 7)) == 0)


def nested_concat_model(batch: int) -> onnx.ModelProto:
    """Two convs into a Concat, that Concat and two more convs into an outer Concat
    (the graph output) with the input; one of those convs is read twice. At batch 1,
    ``a``, ``b`` (in ``ab``), ``ab`` and ``c`` (in ``y``) can be written in place."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array((rng.standard_normal((4, 3, 3, 3)) * 0.3).astype(
        np.float32), f"w{i}") for i in range(4)]
    nodes = [
        helper.make_node("Conv", ["x", "w0"], ["a"], pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["x", "w1"], ["b"], pads=[1, 1, 1, 1]),
        helper.make_node("Concat", ["a", "b"], ["ab"], axis=1),
        helper.make_node("Conv", ["x", "w2"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["x", "w3"], ["d"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["d"], ["d_relu"]),
        helper.make_node("Concat", ["ab", "c", "d", "x"], ["y"], axis=1),
    ]
    graph = helper.make_graph(
        nodes, "concats", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                         (batch, 3, 6, 5))],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [None] * 4) for n in ("y", "d_relu")],
        inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
