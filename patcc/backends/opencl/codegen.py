"""The OpenCL backend: the planned IR rendered as OpenCL C, one kernel per layer.

Every kernel takes the same two arguments: the workspace ``ws`` (activations, and the
model's inputs and outputs, laid out by the memory planner) and the read-only weights
blob ``wb`` (bytes; each array 16-byte aligned). Shapes, strides, offsets and
pattern taps are compile-time constants in the source, so no index arithmetic is
passed at run time and the host only enqueues kernels in order.

Kernels:

- **pattern convolutions** (the layer has compressed storage: pattern style, or a
  depthwise conv, whose 3x3 kernels make one nine-tap pattern): one work-item per
  output pixel of one filter, a work-group a run of pixels of one filter, so all its
  work-items follow the same pattern sequence with no divergence; where an image has
  fewer pixels than a work-group (7x7), a work-group takes neighbouring filters in
  the reorder's storage order, whose pattern sequences the reorder made alike. The
  filter reads its kernel counts per pattern, then each kernel's input channel and
  kept weights, from the compressed buffers, front to back; each pattern's taps are
  constants.
- **dense convolutions** (everything else, grouped, depthwise, dilated, strided):
  one work-item per output element, the weight loops fully known at compile time;
  on targets with on-chip local memory, ungrouped convs are a tiled implicit
  matrix product whose work-groups stage inputs and weights there.
- fully connected layers, col2im (one work-item per output pixel, gathering the
  taps that land on it), pooling, global pooling, softmax, scale/shift, element-wise
  layers with numpy broadcasting, and the data movement layers (reshape, transpose,
  slice, split, concat, pad, gather) as index maps with constant strides.

Bias, activation and a fused residual add are applied in the kernel's epilogue.
``precision="fp16"`` stores activations and weights as ``half`` and computes in
``half`` (accumulating convolution and matrix sums in ``float``); it needs the
device's ``cl_khr_fp16``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from patcc.backends.memory import Buffer, plan_memory
from patcc.errors import PatccError
from patcc.ir.graph import Graph
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
    Shape,
    Slice,
    Softmax,
    Split,
    Transpose,
    Unary,
)
from patcc.ir.patterns import Sparsity
from patcc.text import c_comment, identifier

PRECISIONS = ("fp32", "fp16")
ALIGN = 16  # bytes, of every array in the weights blob and every workspace buffer


@dataclass(frozen=True)
class KernelLaunch:
    """One enqueue: the kernel's name and its NDRange."""

    name: str
    layer: str
    global_size: tuple[int, ...]
    local_size: tuple[int, ...]


@dataclass(frozen=True)
class TensorSlot:
    """Where a model input or output lives in the workspace (element offset)."""

    shape: Shape
    offset: int  # elements of the precision's type


@dataclass
class Program:
    """A model rendered as OpenCL C with what the host needs to run it."""

    source: str
    weights: bytes
    launches: list[KernelLaunch]
    inputs: dict[str, TensorSlot]
    outputs: dict[str, TensorSlot]
    workspace_elements: int
    precision: str
    layers: list[dict[str, object]] = field(default_factory=list)

    @property
    def element_size(self) -> int:
        return 2 if self.precision == "fp16" else 4


class _Blob:
    """The weights blob: arrays appended 16-byte aligned, addressed by byte offset."""

    def __init__(self, precision: str) -> None:
        self.parts: list[bytes] = []
        self.size = 0
        self.real = np.float16 if precision == "fp16" else np.float32

    def add(self, array: np.ndarray, dtype: type | np.dtype | None = None) -> int:
        data = np.ascontiguousarray(array, dtype=dtype or self.real).tobytes()
        offset = self.size
        pad = -len(data) % ALIGN
        self.parts.append(data + b"\0" * pad)
        self.size += len(data) + pad
        return offset

    def bytes(self) -> bytes:
        return b"".join(self.parts)


def _strides(shape: Sequence[int]) -> list[int]:
    strides = [1] * len(shape)
    for i in range(len(shape) - 2, -1, -1):
        strides[i] = strides[i + 1] * int(shape[i + 1])
    return strides


def _f(value: float) -> str:
    """A float literal in OpenCL C (exact for fp32 values)."""
    if math.isinf(value):
        return "INFINITY" if value > 0 else "(-INFINITY)"
    return f"{float(np.float32(value))!r}f"


NAN_HELPERS = [
    "/* max, min and clamp that keep NaN, as onnxruntime's Relu, Clip, Max, Min and the",
    " * interpreter do (fmax/fmin return the other operand). */",
    "float patcc_max(float a, float b) { return (a > b || isnan(a)) ? a : b; }",
    "float patcc_min(float a, float b) { return (a < b || isnan(a)) ? a : b; }",
    "float patcc_clamp(float x, float lo, float hi) "
    "{ return x < lo ? lo : (x > hi ? hi : x); }",
    "/* log(1 + exp(x)) without overflow for large x */",
    "float patcc_softplus(float x) { return patcc_max(x, 0.0f) + log(1.0f + exp(-fabs(x))); }",
]


def activation_expr(act: Activation | None, v: str) -> str:
    """``act`` applied to the float expression ``v`` (evaluated once: pass a name)."""
    if act is None:
        return v
    kind, a, b = act.kind, _f(act.alpha), _f(act.beta)
    if kind == "relu":
        return f"patcc_max({v}, 0.0f)"
    if kind == "clip":
        return f"patcc_clamp({v}, {a}, {b})"
    if kind == "leaky_relu":
        return f"({v} >= 0.0f ? {v} : {v} * {a})"
    if kind == "sigmoid":
        return f"(1.0f / (1.0f + exp(-{v})))"
    if kind == "hard_sigmoid":
        return f"patcc_clamp({v} * {a} + {b}, 0.0f, 1.0f)"
    if kind == "hard_swish":
        return f"({v} * patcc_clamp({v} / 6.0f + 0.5f, 0.0f, 1.0f))"
    if kind == "tanh":
        return f"tanh({v})"
    if kind == "silu":
        return f"({v} / (1.0f + exp(-{v})))"
    if kind in ("exp", "log", "sqrt", "erf"):
        return f"{kind}({v})"
    if kind == "neg":
        return f"(-{v})"
    if kind == "abs":
        return f"fabs({v})"
    if kind == "reciprocal":
        return f"(1.0f / {v})"
    if kind == "pow":
        return f"pow({v}, {a})"
    if kind == "elu":
        return f"({v} <= 0.0f ? {a} * (exp({v}) - 1.0f) : {v})"
    if kind == "selu":
        return f"({b} * ({v} <= 0.0f ? {a} * (exp({v}) - 1.0f) : {v}))"
    if kind == "softplus":
        return f"patcc_softplus({v})"
    if kind == "mish":
        return f"({v} * tanh(patcc_softplus({v})))"
    if kind == "gelu":
        return f"(0.5f * {v} * (1.0f + erf({v} * 0.70710678118654752f)))"
    if kind == "gelu_tanh":
        return (f"(0.5f * {v} * (1.0f + tanh(0.79788456080286536f * ({v} + 0.044715f * {v}"
                f" * {v} * {v}))))")
    raise AssertionError(kind)


def _ident(name: str, index: int) -> str:
    """The kernel name of the ``index``-th launch: unique by its prefix, then as much
    of the layer's name as ASCII ``[A-Za-z0-9_]`` shows (names come from the model)."""
    return f"L{index}_" + (identifier(name, 40).strip("_") or "layer")


class _Renderer:
    def __init__(self, graph: Graph, precision: str, local_size: int,
                 local_memory: bool) -> None:
        if precision not in PRECISIONS:
            raise PatccError(f"unknown precision {precision!r}; expected one of "
                             f"{', '.join(PRECISIONS)}")
        self.graph = graph
        self.precision = precision
        self.local = local_size
        self.local_memory = local_memory
        self.blob = _Blob(precision)
        self.shapes = graph.shapes
        self.kernels: list[str] = []
        self.launches: list[KernelLaunch] = []
        self.layer_info: list[dict[str, object]] = []
        self.offsets = self._plan_workspace()
        self.constants = {name: self.blob.add(value) for name, value in graph.constants.items()}

    # -- workspace ------------------------------------------------------------------

    def _plan_workspace(self) -> dict[str, int]:
        g = self.graph
        last = len(g.layers)
        first: dict[str, int] = {name: 0 for name in g.inputs}
        final: dict[str, int] = {name: 0 for name in g.inputs}
        for step, layer in enumerate(g.layers):
            for t in layer.inputs:
                if t in final:
                    final[t] = step
            for t in layer.outputs:
                first.setdefault(t, step)
                final[t] = max(final.get(t, step), step)
        for t in g.outputs:
            final[t] = last
        for t in g.inputs:  # inputs are written before the first kernel and kept whole
            first[t] = 0
        size = 2 if self.precision == "fp16" else 4
        buffers = [Buffer(t, math.prod(self.shapes[t]) * size, first[t], final[t])
                   for t in first]
        plan = plan_memory(buffers, ALIGN)
        self.workspace_elements = plan.peak // size
        return {t: plan.offsets[t] // size for t in first}

    def ws(self, tensor: str) -> str:
        """A pointer expression to ``tensor``: in the workspace, or a blob constant."""
        if tensor in self.constants:
            return f"((__global const real*)(wb + {self.constants[tensor]}))"
        return f"(ws + {self.offsets[tensor]})"

    # -- kernels --------------------------------------------------------------------

    def add(self, layer: Layer, body: str, total: int, name_suffix: str = "",
            global_size: tuple[int, ...] | None = None,
            local_size: tuple[int, ...] | None = None) -> None:
        index = len(self.launches)
        name = _ident(layer.name + name_suffix, index)
        self.kernels.append(
            f"/* {layer.op} {c_comment(layer.name)} */\n"
            f"__kernel void {name}(__global real* restrict ws, "
            f"__global const uchar* restrict wb)\n{{\n{body}}}\n")
        if global_size is None:
            local = min(self.local, max(1, total))
            global_size = (-(-total // local) * local,)
            local_size = (local,)
        self.launches.append(KernelLaunch(name, layer.name, global_size,
                                          local_size or (self.local,)))

    def linear(self, total: int, body: str) -> str:
        """A body over ``total`` work-items, ``i`` the flat index."""
        return (f"  const int i = get_global_id(0);\n  if (i >= {total}) return;\n{body}")

    def render(self) -> Program:
        for layer in self.graph.layers:
            method = getattr(self, f"_{type(layer).__name__.lower()}", None)
            if method is None:
                raise PatccError(f"the OpenCL backend has no kernel for {layer.op} "
                                 f"{layer.name!r}")
            method(layer)
        header = [
            "/* Generated by patcc: one kernel per layer; see the package manifest. */",
        ]
        if self.precision == "fp16":
            header += ["#pragma OPENCL EXTENSION cl_khr_fp16 : enable", "typedef half real;"]
        else:
            header += ["typedef float real;"]
        header += NAN_HELPERS
        source = "\n".join(header) + "\n\n" + "\n".join(self.kernels)
        g = self.graph
        return Program(
            source=source, weights=self.blob.bytes(), launches=self.launches,
            inputs={n: TensorSlot(tuple(t.shape), self.offsets[n]) for n, t in g.inputs.items()},
            outputs={n: TensorSlot(tuple(self.shapes[n]), self.offsets[n]) for n in g.outputs},
            workspace_elements=self.workspace_elements, precision=self.precision,
            layers=self.layer_info)

    # -- convolution ----------------------------------------------------------------

    def _epilogue(self, layer: Conv | Dense, acc: str, out_index: str, channel: str,
                  residual: str | None) -> str:
        lines = [f"  float v = {acc} + (float)B[{channel}];\n"]
        if residual is not None:
            lines.append(f"  v += (float){residual}[{out_index}];\n")
        lines.append(f"  v = {activation_expr(layer.activation, 'v')};\n")
        lines.append(f"  Y[{out_index}] = (real)v;\n")
        return "".join(lines)

    def _conv(self, layer: Conv) -> None:
        x_shape = self.shapes[layer.inputs[0]]
        (n, o, ho, wo) = self.shapes[layer.outputs[0]]
        bias = self.blob.add(layer.bias)
        residual = self.ws(layer.inputs[1]) if len(layer.inputs) == 2 else None
        pre = (f"  __global const real* X = {self.ws(layer.inputs[0])};\n"
               f"  __global real* Y = {self.ws(layer.outputs[0])};\n"
               f"  __global const real* B = (__global const real*)(wb + {bias});\n")
        if residual is not None:
            pre += f"  __global const real* R = {residual};\n"
        if layer.compressed is not None:
            self._pattern_conv(layer, x_shape, (n, o, ho, wo), pre, residual is not None)
        elif self.local_memory and layer.groups == 1:
            self._tiled_conv(layer, x_shape, (n, o, ho, wo), pre, residual is not None)
        else:
            self._dense_conv(layer, x_shape, (n, o, ho, wo), pre, residual is not None)

    def _dense_conv(self, layer: Conv, x_shape: Shape, y_shape: Shape, pre: str,
                    residual: bool) -> None:
        _, c, h, w = x_shape
        n, o, ho, wo = y_shape
        kh, kw = layer.kernel_shape
        (sh, sw), (dh, dw), (pt, pl, _, _) = layer.strides, layer.dilations, layer.pads
        cg, og = c // layer.groups, o // layer.groups
        weight = self.blob.add(layer.weight)
        total = n * o * ho * wo
        body = pre + (
            f"  __global const real* W = (__global const real*)(wb + {weight});\n"
            f"  const int x = i % {wo}, y = (i / {wo}) % {ho};\n"
            f"  const int f = (i / {ho * wo}) % {o}, b = i / {o * ho * wo};\n"
            f"  const int c0 = (f / {og}) * {cg};\n"
            f"  __global const real* xb = X + (b * {c} + c0) * {h * w};\n"
            f"  __global const real* wf = W + f * {cg * kh * kw};\n"
            f"  float acc = 0.0f;\n"
            f"  for (int ci = 0; ci < {cg}; ++ci) {{\n"
            f"    for (int ky = 0; ky < {kh}; ++ky) {{\n"
            f"      const int iy = y * {sh} - {pt} + ky * {dh};\n"
            f"      if (iy < 0 || iy >= {h}) continue;\n"
            f"      for (int kx = 0; kx < {kw}; ++kx) {{\n"
            f"        const int ix = x * {sw} - {pl} + kx * {dw};\n"
            f"        if (ix < 0 || ix >= {w}) continue;\n"
            f"        acc += (float)wf[(ci * {kh} + ky) * {kw} + kx]"
            f" * (float)xb[(ci * {h} + iy) * {w} + ix];\n"
            f"      }}\n    }}\n  }}\n"
        ) + self._epilogue(layer, "acc", "i", "f", "R" if residual else None)
        self.add(layer, self.linear(total, body), total)
        self.layer_info.append({"layer": layer.name, "kernel": "dense-conv"})

    def _tiled_conv(self, layer: Conv, x_shape: Shape, y_shape: Shape, pre: str,
                    residual: bool) -> None:
        """An ungrouped dense conv as the implicit matrix product W (O x C.kh.kw) @
        X (C.kh.kw x pixels), tiled: each work-group stages a chunk of the reduction
        (input channel and tap) for its pixels, and of weights for its filters, in
        local memory, so every input value is read from global memory once per
        work-group instead of once per filter. A 1x1 stride-1 conv reads its input
        rows directly; other shapes gather their window (zero outside the input)."""
        _, c, h, w = x_shape
        n, o, ho, wo = y_shape
        kh, kw = layer.kernel_shape
        (sh, sw), (dh, dw), (pt, pl, _, _) = layer.strides, layer.dilations, layer.pads
        pixels, taps = ho * wo, kh * kw
        depth = c * taps
        tp, tk = 16, 16
        to = max(1, self.local // tp)
        weight = self.blob.add(layer.weight.reshape(o, depth))
        if (kh, kw, sh, sw) == (1, 1, 1, 1) and not any(layer.pads):
            load = (f"      const float v = (k < {depth} && p < {pixels})"
                    f" ? (float)xb[k * {pixels} + p] : 0.0f;\n")
        else:
            load = (f"      const int r = k % {taps};\n"
                    f"      const int iy = y * {sh} - {pt} + (r / {kw}) * {dh};\n"
                    f"      const int ix = x * {sw} - {pl} + (r % {kw}) * {dw};\n"
                    f"      const float v = (k < {depth} && p < {pixels} && iy >= 0 && iy < {h}"
                    f" && ix >= 0 && ix < {w})\n"
                    f"          ? (float)xb[(k / {taps}) * {h * w} + iy * {w} + ix] : 0.0f;\n")
        body = pre + (
            f"  __global const real* W = (__global const real*)(wb + {weight});\n"
            f"  __local float xs[{tk}][{tp}];\n"
            f"  __local float ws_[{to}][{tk}];\n"
            f"  const int lp = get_local_id(0), lo = get_local_id(1);\n"
            f"  const int p = get_global_id(0), f = get_global_id(1), b = get_global_id(2);\n"
            f"  const int x = p % {wo}, y = p / {wo};\n"
            f"  __global const real* xb = X + b * {c * h * w};\n"
            f"  float acc = 0.0f;\n"
            f"  for (int k0 = 0; k0 < {depth}; k0 += {tk}) {{\n"
            f"    for (int j = lo; j < {tk}; j += {to}) {{\n"
            f"      const int k = k0 + j;\n"
            + load +
            f"      xs[j][lp] = v;\n"
            f"    }}\n"
            f"    for (int j = lp; j < {tk}; j += {tp}) {{\n"
            f"      const int k = k0 + j;\n"
            f"      ws_[lo][j] = (k < {depth} && f < {o}) ? (float)W[f * {depth} + k] : 0.0f;\n"
            f"    }}\n"
            f"    barrier(CLK_LOCAL_MEM_FENCE);\n"
            f"    for (int j = 0; j < {tk}; ++j) acc += ws_[lo][j] * xs[j][lp];\n"
            f"    barrier(CLK_LOCAL_MEM_FENCE);\n"
            f"  }}\n"
            f"  if (p >= {pixels} || f >= {o}) return;\n"
            f"  const int out = (b * {o} + f) * {pixels} + p;\n"
        ) + self._epilogue(layer, "acc", "out", "f", "R" if residual else None)
        glob = (-(-pixels // tp) * tp, -(-o // to) * to, n)
        self.add(layer, body, 0, global_size=glob, local_size=(tp, to, 1))
        self.layer_info.append({"layer": layer.name, "kernel": "tiled-conv"})

    def _pattern_conv(self, layer: Conv, x_shape: Shape, y_shape: Shape, pre: str,
                      residual: bool) -> None:
        cw = layer.compressed
        assert cw is not None
        _, c, h, w = x_shape
        n, o, ho, wo = y_shape
        (sh, sw), (dh, dw), (pt, pl, _, _) = layer.strides, layer.dilations, layer.pads
        m = len(cw.patterns)
        offsets = {
            "order": self.blob.add(cw.filter_order, np.int32),
            "counts": self.blob.add(cw.counts, np.uint16),
            "channels": self.blob.add(cw.channels, np.uint16),
            "weights": self.blob.add(cw.weights),
            "kstart": self.blob.add(cw.kernel_start, np.int32),
            "wstart": self.blob.add(cw.weight_start, np.int32),
        }
        pixels = n * ho * wo
        loops = []
        for p, taps in enumerate(cw.patterns):
            if not taps:
                continue
            tap_lines = []
            for t, (dy, dx) in enumerate(taps):
                tap_lines.append(
                    f"      {{ const int iy = iy0 + {dy * dh}, ix = ix0 + {dx * dw};\n"
                    f"        if (iy >= 0 && iy < {h} && ix >= 0 && ix < {w})\n"
                    f"          acc += (float)wk[{t}] * (float)xc[iy * {w} + ix]; }}\n")
            loops.append(
                f"  for (int j = 0; j < (int)counts[{p}]; ++j, ++k, wk += {len(taps)}) {{\n"
                f"    __global const real* xc = xb + (int)channels[k] * {h * w};\n"
                + "".join(tap_lines) + "  }\n")
        body = pre + (
            f"  const int pos = get_global_id(1);\n"
            f"  const int i = get_global_id(0);\n"
            f"  if (i >= {pixels} || pos >= {o}) return;\n"
            f"  const int f = ((__global const int*)(wb + {offsets['order']}))[pos];\n"
            f"  __global const ushort* counts = "
            f"(__global const ushort*)(wb + {offsets['counts']}) + pos * {m};\n"
            f"  __global const ushort* channels = "
            f"(__global const ushort*)(wb + {offsets['channels']});\n"
            f"  int k = ((__global const int*)(wb + {offsets['kstart']}))[pos];\n"
            f"  __global const real* wk = (__global const real*)(wb + {offsets['weights']})"
            f" + ((__global const int*)(wb + {offsets['wstart']}))[pos];\n"
            f"  const int x = i % {wo}, y = (i / {wo}) % {ho}, b = i / {ho * wo};\n"
            f"  const int iy0 = y * {sh} - {pt}, ix0 = x * {sw} - {pl};\n"
            f"  __global const real* xb = X + b * {c * h * w};\n"
            f"  float acc = 0.0f;\n"
            + "".join(loops)
            + f"  const int out = (b * {o} + f) * {ho * wo} + y * {wo} + x;\n"
        ) + self._epilogue(layer, "acc", "out", "f", "R" if residual else None)
        # A work-group: a run of pixels of one filter, or, where the image has fewer
        # pixels than a work-group, of several filters next to each other in the
        # reorder's storage order (one reorder group: the same pattern sequence).
        ptile = min(self.local, pixels)
        ftile = max(1, min(o, self.local // ptile))
        self.add(layer, body, pixels,
                 global_size=(-(-pixels // ptile) * ptile, -(-o // ftile) * ftile),
                 local_size=(ptile, ftile))
        kind = "pattern-conv" if layer.sparsity is Sparsity.PATTERN else "compressed-conv"
        self.layer_info.append({"layer": layer.name, "kernel": kind, "patterns": m,
                                "kept_kernels": int(cw.channels.size)})

    def _col2im(self, layer: Col2Im) -> None:
        """One work-item per output pixel: the taps whose strided position lands on it,
        each checked (a stride phase takes some taps, not others)."""
        _, _, h, w = self.shapes[layer.inputs[0]]
        n, c, ho, wo = self.shapes[layer.outputs[0]]
        (kh, kw), (sh, sw), (dh, dw) = layer.kernel, layer.strides, layer.dilations
        pt, pl, _, _ = layer.pads
        bias = "0.0f" if layer.bias is None else (
            f"(float)((__global const real*)(wb + {self.blob.add(layer.bias)}))[nc % {c}]")
        total = n * c * ho * wo
        body = (
            f"  const int x = i % {wo}, y = (i / {wo}) % {ho}, nc = i / {ho * wo};\n"
            f"  __global const real* xc = {self.ws(layer.inputs[0])} + nc * {kh * kw * h * w};\n"
            f"  float acc = 0.0f;\n"
            f"  for (int ky = 0; ky < {kh}; ++ky) {{\n"
            f"    const int ty = y + {pt} - ky * {dh};\n"
            f"    if (ty < 0 || ty % {sh} != 0 || ty / {sh} >= {h}) continue;\n"
            f"    for (int kx = 0; kx < {kw}; ++kx) {{\n"
            f"      const int tx = x + {pl} - kx * {dw};\n"
            f"      if (tx < 0 || tx % {sw} != 0 || tx / {sw} >= {w}) continue;\n"
            f"      acc += (float)xc[((ky * {kw} + kx) * {h} + ty / {sh}) * {w} + tx / {sw}];\n"
            f"    }}\n  }}\n"
            f"  float v = acc + {bias};\n"
            f"  v = {activation_expr(layer.activation, 'v')};\n"
            f"  {self.ws(layer.outputs[0])}[i] = (real)v;\n")
        self.add(layer, self.linear(total, body), total)
        self.layer_info.append({"layer": layer.name, "kernel": "col2im"})

    def _dense(self, layer: Dense) -> None:
        x_shape = self.shapes[layer.inputs[0]]
        k = x_shape[-1]
        rows = math.prod(x_shape[:-1])
        o = layer.weight.shape[0]
        weight, bias = self.blob.add(layer.weight), self.blob.add(layer.bias)
        total = rows * o
        body = (
            f"  __global const real* X = {self.ws(layer.inputs[0])};\n"
            f"  __global real* Y = {self.ws(layer.outputs[0])};\n"
            f"  __global const real* W = (__global const real*)(wb + {weight});\n"
            f"  __global const real* B = (__global const real*)(wb + {bias});\n"
            f"  const int f = i % {o}, r = i / {o};\n"
            f"  __global const real* xr = X + r * {k};\n"
            f"  __global const real* wr = W + f * {k};\n"
            f"  float acc = 0.0f;\n"
            f"  for (int j = 0; j < {k}; ++j) acc += (float)wr[j] * (float)xr[j];\n"
        ) + self._epilogue(layer, "acc", "i", "f", None)
        self.add(layer, self.linear(total, body), total)
        self.layer_info.append({"layer": layer.name, "kernel": "dense"})

    # -- element-wise -----------------------------------------------------------------

    def _scaleshift(self, layer: ScaleShift) -> None:
        shape = self.shapes[layer.inputs[0]]
        inner = math.prod(shape[2:])
        channels = shape[1]
        scale, shift = self.blob.add(layer.scale), self.blob.add(layer.shift)
        total = math.prod(shape)
        body = (
            f"  const int ch = (i / {inner}) % {channels};\n"
            f"  float v = (float){self.ws(layer.inputs[0])}[i]"
            f" * (float)((__global const real*)(wb + {scale}))[ch]"
            f" + (float)((__global const real*)(wb + {shift}))[ch];\n"
            f"  v = {activation_expr(layer.activation, 'v')};\n"
            f"  {self.ws(layer.outputs[0])}[i] = (real)v;\n")
        self.add(layer, self.linear(total, body), total)

    def _unary(self, layer: Unary) -> None:
        total = math.prod(self.shapes[layer.outputs[0]])
        body = (f"  float v = (float){self.ws(layer.inputs[0])}[i];\n"
                f"  v = {activation_expr(layer.activation, 'v')};\n"
                f"  {self.ws(layer.outputs[0])}[i] = (real)v;\n")
        self.add(layer, self.linear(total, body), total)

    def _broadcast_index(self, in_shape: Shape, out_shape: Shape, var: str) -> str:
        """The flat index into an input of ``in_shape`` broadcast to ``out_shape``, for
        the output's flat index ``var``."""
        rank = len(out_shape)
        padded = (1,) * (rank - len(in_shape)) + tuple(in_shape)
        in_strides = _strides(padded)
        out_strides = _strides(out_shape)
        terms = []
        for a in range(rank):
            if padded[a] == 1 or out_shape[a] == 1:
                continue
            coord = f"(({var} / {out_strides[a]}) % {out_shape[a]})"
            terms.append(f"{coord} * {in_strides[a]}")
        return " + ".join(terms) or "0"

    def _binary(self, layer: Binary) -> None:
        out_shape = self.shapes[layer.outputs[0]]
        a_shape, b_shape = (self.shapes[t] for t in layer.inputs)
        total = math.prod(out_shape)
        op = {"add": "a + b", "sub": "a - b", "mul": "a * b", "div": "a / b",
              "max": "patcc_max(a, b)", "min": "patcc_min(a, b)", "pow": "pow(a, b)"}[layer.binop]
        body = (
            f"  const float a = (float){self.ws(layer.inputs[0])}"
            f"[{self._broadcast_index(a_shape, out_shape, 'i')}];\n"
            f"  const float b = (float){self.ws(layer.inputs[1])}"
            f"[{self._broadcast_index(b_shape, out_shape, 'i')}];\n"
            f"  float v = {op};\n"
            f"  v = {activation_expr(layer.activation, 'v')};\n"
            f"  {self.ws(layer.outputs[0])}[i] = (real)v;\n")
        self.add(layer, self.linear(total, body), total)

    # -- pooling and reductions -----------------------------------------------------------

    def _pool(self, layer: Pool) -> None:
        n, c, h, w = self.shapes[layer.inputs[0]]
        _, _, ho, wo = self.shapes[layer.outputs[0]]
        (kh, kw), (sh, sw), (dh, dw) = layer.kernel, layer.strides, layer.dilations
        pt, pl, pb, pr = layer.pads
        total = n * c * ho * wo
        if layer.kind == "max":  # a window wholly in padding gives -inf, as numpy's
            init, update, finish, count = "-INFINITY", "acc = patcc_max(acc, v);", "acc", ""
        else:
            # Positions an average counts: inside the input, or (count_include_pad)
            # inside the explicit padding -- never the ceil-mode extension.
            counted = (f"iy >= {-pt} && iy < {h + pb} && ix >= {-pl} && ix < {w + pr}"
                       if layer.count_include_pad else "inside")
            init, update, finish = "0.0f", "acc += v;", "acc / (float)cnt"
            count = f"      if ({counted}) ++cnt;\n"
        body = (
            f"  __global const real* X = {self.ws(layer.inputs[0])};\n"
            f"  const int x = i % {wo}, y = (i / {wo}) % {ho}, nc = i / {ho * wo};\n"
            f"  __global const real* xc = X + nc * {h * w};\n"
            f"  float acc = {init};\n  int cnt = 0;\n"
            f"  for (int ky = 0; ky < {kh}; ++ky) {{\n"
            f"    const int iy = y * {sh} - {pt} + ky * {dh};\n"
            f"    for (int kx = 0; kx < {kw}; ++kx) {{\n"
            f"      const int ix = x * {sw} - {pl} + kx * {dw};\n"
            f"      const bool inside = iy >= 0 && iy < {h} && ix >= 0 && ix < {w};\n"
            + count +
            f"      if (!inside) continue;\n"
            f"      const float v = (float)xc[iy * {w} + ix];\n"
            f"      {update}\n"
            f"    }}\n  }}\n"
            f"  {self.ws(layer.outputs[0])}[i] = (real)({finish});\n")
        self.add(layer, self.linear(total, body), total)

    def _globalpool(self, layer: GlobalPool) -> None:
        shape = self.shapes[layer.inputs[0]]
        rows = shape[0] * shape[1]
        size = math.prod(shape[2:])
        if layer.kind == "max":
            init, update, finish = "-INFINITY", "acc = patcc_max(acc, (float)xr[j]);", "acc"
        else:
            init, update, finish = "0.0f", "acc += (float)xr[j];", f"acc / {size}.0f"
        body = (
            f"  __global const real* xr = {self.ws(layer.inputs[0])} + i * {size};\n"
            f"  float acc = {init};\n"
            f"  for (int j = 0; j < {size}; ++j) {update}\n"
            f"  {self.ws(layer.outputs[0])}[i] = (real)({finish});\n")
        self.add(layer, self.linear(rows, body), rows)

    def _reduce(self, layer: Reduce) -> None:
        shape = self.shapes[layer.inputs[0]]
        length = math.prod(shape[layer.start:layer.stop])
        inner = math.prod(shape[layer.stop:])
        total = math.prod(shape) // length
        init, update, finish = {
            "max": ("-INFINITY", "acc = patcc_max(acc, v);", "acc"),
            "min": ("INFINITY", "acc = patcc_min(acc, v);", "acc"),
            "sum": ("0.0f", "acc += v;", "acc"),
            "mean": ("0.0f", "acc += v;", f"acc / {length}.0f"),
            "l2": ("0.0f", "acc = fma(v, v, acc);", "sqrt(acc)"),
        }[layer.kind]
        body = (
            f"  __global const real* xr = {self.ws(layer.inputs[0])}"
            f" + (i / {inner}) * {length * inner} + i % {inner};\n"
            f"  float acc = {init};\n"
            f"  for (int j = 0; j < {length}; ++j) {{ const float v = (float)xr[j * {inner}];"
            f" {update} }}\n"
            f"  {self.ws(layer.outputs[0])}[i] = (real)({finish});\n")
        self.add(layer, self.linear(total, body), total)

    def _softmax(self, layer: Softmax) -> None:
        shape = self.shapes[layer.inputs[0]]
        axis = layer.axis % len(shape)
        size = shape[axis]
        inner = math.prod(shape[axis + 1:])
        rows = math.prod(shape) // size
        body = (
            f"  const int base = (i / {inner}) * {size * inner} + i % {inner};\n"
            f"  __global const real* X = {self.ws(layer.inputs[0])} + base;\n"
            f"  __global real* Y = {self.ws(layer.outputs[0])} + base;\n"
            f"  float mx = -INFINITY;\n"
            f"  for (int j = 0; j < {size}; ++j) mx = fmax(mx, (float)X[j * {inner}]);\n"
            f"  float sum = 0.0f;\n"
            f"  for (int j = 0; j < {size}; ++j) sum += exp((float)X[j * {inner}] - mx);\n"
            f"  for (int j = 0; j < {size}; ++j)"
            + (f" Y[j * {inner}] = (real)((float)X[j * {inner}] - mx - log(sum));\n"
               if layer.log else
               f" Y[j * {inner}] = (real)(exp((float)X[j * {inner}] - mx) / sum);\n"))
        self.add(layer, self.linear(rows, body), rows)

    # -- data movement ----------------------------------------------------------------

    def _copy(self, layer: Layer, shape: Shape, src: str, src_strides: Sequence[int],
              src_base: int, dst: str, dst_strides: Sequence[int], dst_base: int,
              suffix: str = "") -> None:
        """Over the index space ``shape``: dst[base + c.dst_strides] =
        src[base + c.src_strides]."""
        total = math.prod(shape)
        strides = _strides(shape)
        src_terms, dst_terms = [str(src_base)], [str(dst_base)]
        for a, dim in enumerate(shape):
            if dim == 1:
                continue
            coord = f"((i / {strides[a]}) % {dim})"
            if src_strides[a]:
                src_terms.append(f"{coord} * {src_strides[a]}")
            if dst_strides[a]:
                dst_terms.append(f"{coord} * {dst_strides[a]}")
        body = f"  {dst}[{' + '.join(dst_terms)}] = {src}[{' + '.join(src_terms)}];\n"
        self.add(layer, self.linear(total, body), total, name_suffix=suffix)

    def _reshape(self, layer: Reshape) -> None:
        total = math.prod(self.shapes[layer.outputs[0]])
        self._copy(layer, (total,), self.ws(layer.inputs[0]), (1,), 0,
                   self.ws(layer.outputs[0]), (1,), 0)

    def _transpose(self, layer: Transpose) -> None:
        in_strides = _strides(self.shapes[layer.inputs[0]])
        out_shape = self.shapes[layer.outputs[0]]
        self._copy(layer, out_shape, self.ws(layer.inputs[0]),
                   [in_strides[p] for p in layer.perm], 0,
                   self.ws(layer.outputs[0]), _strides(out_shape), 0)

    def _slice(self, layer: Slice) -> None:
        in_strides = _strides(self.shapes[layer.inputs[0]])
        out_shape = self.shapes[layer.outputs[0]]
        base = sum(s * st for s, st in zip(layer.starts, in_strides, strict=True))
        self._copy(layer, out_shape, self.ws(layer.inputs[0]),
                   [st * step for st, step in zip(in_strides, layer.steps, strict=True)],
                   base, self.ws(layer.outputs[0]), _strides(out_shape), 0)

    def _resize(self, layer: Resize) -> None:
        """One work-item per output element: nested loops over the windows of the
        resized axes (tables of ``patcc.ir.resample`` in the blob, offsets premultiplied
        by the input strides), the others read straight through."""
        in_shape, out_shape = self.shapes[layer.inputs[0]], self.shapes[layer.outputs[0]]
        in_strides, out_strides = _strides(in_shape), _strides(out_shape)
        total = math.prod(out_shape)
        lines = ["  float acc = 0.0f;\n", "  int base = 0;\n"]
        loops, inner, outside = [], [], []
        for a, taps in enumerate(layer.axis_taps(in_shape)):
            coord = f"((i / {out_strides[a]}) % {out_shape[a]})"
            if taps is None:
                if out_shape[a] > 1:
                    lines.append(f"  base += {coord} * {in_strides[a]};\n")
                continue
            offsets = self.blob.add(taps.index * in_strides[a], np.int32)
            weights = self.blob.add(taps.weight, np.float32)
            n = taps.taps
            lines.append(f"  const int c{a} = {coord};\n")
            if taps.outside is not None:
                flags = self.blob.add(taps.outside, np.int32)
                outside.append(f"((__global const int*)(wb + {flags}))[c{a}]")
            loops.append(
                f"  for (int t{a} = 0; t{a} < {n}; ++t{a}) {{\n"
                f"  const int o{a} = ((__global const int*)(wb + {offsets}))[c{a} * {n} + t{a}];\n"
                f"  const float w{a} = ((__global const float*)(wb + {weights}))"
                f"[c{a} * {n} + t{a}];\n")
            inner.append(a)
        read = " + ".join(["base", *(f"o{a}" for a in inner)])
        weight = " * ".join(f"w{a}" for a in inner) or "1.0f"
        body = "".join(lines)
        if outside:
            fill = _f(layer.extrapolation_value)
            body += (f"  if ({' || '.join(outside)}) {{\n"
                     f"    {self.ws(layer.outputs[0])}[i] = (real){fill};\n"
                     f"    return;\n  }}\n")
        body += "".join(loops)
        body += f"  acc += {weight} * (float){self.ws(layer.inputs[0])}[{read}];\n"
        body += "  }\n" * len(loops)
        body += f"  {self.ws(layer.outputs[0])}[i] = (real)acc;\n"
        self.add(layer, self.linear(total, body), total)

    def _concat(self, layer: Concat) -> None:
        out_shape = self.shapes[layer.outputs[0]]
        axis = layer.axis % len(out_shape)
        out_strides = _strides(out_shape)
        start = 0
        for j, t in enumerate(layer.inputs):
            shape = self.shapes[t]
            self._copy(layer, shape, self.ws(t), _strides(shape), 0,
                       self.ws(layer.outputs[0]), out_strides, start * out_strides[axis],
                       suffix=f"_in{j}")
            start += shape[axis]

    def _split(self, layer: Split) -> None:
        in_shape = self.shapes[layer.inputs[0]]
        axis = layer.axis % len(in_shape)
        in_strides = _strides(in_shape)
        start = 0
        for j, t in enumerate(layer.outputs):
            shape = self.shapes[t]
            self._copy(layer, shape, self.ws(layer.inputs[0]), in_strides,
                       start * in_strides[axis], self.ws(t), _strides(shape), 0,
                       suffix=f"_out{j}")
            start += shape[axis]

    def _gather(self, layer: Gather) -> None:
        """One work-item per output element; the indices are an int array in the blob."""
        in_shape = self.shapes[layer.inputs[0]]
        inner = math.prod(in_shape[layer.axis + 1:])
        flat = layer.indices.reshape(-1)
        table = self.blob.add(flat, np.int32)
        total = math.prod(self.shapes[layer.outputs[0]])
        body = (
            f"  const int o = i / {flat.size * inner}, k = (i / {inner}) % {flat.size};\n"
            f"  const int index = ((__global const int*)(wb + {table}))[k];\n"
            f"  {self.ws(layer.outputs[0])}[i] = {self.ws(layer.inputs[0])}"
            f"[o * {in_shape[layer.axis] * inner} + index * {inner} + i % {inner}];\n")
        self.add(layer, self.linear(total, body), total)

    def _pad(self, layer: Pad) -> None:
        in_shape = self.shapes[layer.inputs[0]]
        out_shape = self.shapes[layer.outputs[0]]
        rank = len(in_shape)
        out_strides, in_strides = _strides(out_shape), _strides(in_shape)
        lines = ["  int src = 0;\n  bool inside = true;\n"]
        for a in range(rank):
            lo = layer.pads[a]
            size = in_shape[a]
            lines.append(f"  {{ int c = (i / {out_strides[a]}) % {out_shape[a]} - {lo};\n")
            if layer.mode == "constant":
                lines.append(f"    if (c < 0 || c >= {size}) inside = false;\n")
            elif layer.mode == "edge":
                lines.append(f"    c = clamp(c, 0, {size - 1});\n")
            else:  # reflect (ONNX needs pads < size, so one reflection suffices)
                lines.append(f"    if (c < 0) c = -c;\n"
                             f"    if (c >= {size}) c = {2 * (size - 1)} - c;\n")
            lines.append(f"    src += c * {in_strides[a]}; }}\n")
        value = _f(layer.value)
        lines.append(f"  {self.ws(layer.outputs[0])}[i] = inside ? "
                     f"{self.ws(layer.inputs[0])}[src] : (real){value};\n")
        total = math.prod(out_shape)
        self.add(layer, self.linear(total, "".join(lines)), total)


def render(graph: Graph, precision: str = "fp32", local_size: int = 64,
           local_memory: bool = False) -> Program:
    """``graph`` (after the backend passes) as an OpenCL program; ``local_memory``:
    stage inputs through local memory where the kernel has a staged form."""
    return _Renderer(graph, precision, local_size, local_memory).render()
