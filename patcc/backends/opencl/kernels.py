"""The OpenCL C text of each kernel kind, from a layer and what the planner chose.

Each function takes the layer (its attributes), the shapes, the pointer expressions
the workspace plan gave its tensors and the byte offsets of its arrays in the weights
blob, and returns the kernel's body; ``kernel_source`` wraps a body into a kernel and
``program_source`` the kernels into the program. Flat kernels (one work-item per
output element) read the work-item's index ``i``, which ``linear`` defines; the
planner (``codegen``) chooses which kernel a layer gets, the blob, the workspace and
the launch sizes.

Kernels:

Which kernel a conv gets is ``patcc.backends.planning.conv_kernels``' first choice,
as for the LLVM backend:

- **pattern convolutions** (the ``pattern`` and ``depthwise`` kernels, over compressed
  weights: pattern style, or a depthwise conv, whose 3x3 kernels make one nine-tap
  pattern): one work-item per
  output pixel of one filter, a work-group a run of pixels of one filter, so all its
  work-items follow the same pattern sequence with no divergence; where an image has
  fewer pixels than a work-group (7x7), a work-group takes neighbouring filters in
  the reorder's storage order, whose pattern sequences the reorder made alike. The
  filter reads its kernel counts per pattern, then each kernel's input channel and
  kept weights, from the compressed buffers, front to back; each pattern's taps are
  constants.
- **sparse 1x1 convolutions** (unstructured zeros): the same 2-D range, each
  work-item summing its filter's non-zero weights, filters in filter order.
- **dense convolutions** (everything else, grouped, dilated, strided):
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
from dataclasses import dataclass

import numpy as np

from patcc.ir.layers import (
    Activation,
    Binary,
    Col2Im,
    Conv,
    Dense,
    Gather,
    GlobalPool,
    Layer,
    Pad,
    Pool,
    Reduce,
    Resize,
    ScaleShift,
    Shape,
    Softmax,
    Unary,
)
from patcc.text import c_comment


def row_major_strides(shape: Sequence[int]) -> list[int]:
    """The element strides of a C-contiguous array of ``shape``."""
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


# -- the program ---------------------------------------------------------------------


def program_source(precision: str, kernels: Sequence[str]) -> str:
    """The whole program: the header for ``precision``, the helpers, then ``kernels``."""
    header = [
        "/* Generated by patcc: one kernel per layer; see the package manifest. */",
    ]
    if precision == "fp16":
        header += ["#pragma OPENCL EXTENSION cl_khr_fp16 : enable", "typedef half real;"]
    else:
        header += ["typedef float real;"]
    header += NAN_HELPERS
    return "\n".join(header) + "\n\n" + "\n".join(kernels)


def kernel_source(name: str, layer: Layer, body: str) -> str:
    """Kernel ``name`` running ``body`` for ``layer``, on the workspace and the blob."""
    return (f"/* {layer.op} {c_comment(layer.name)} */\n"
            f"__kernel void {name}(__global real* restrict ws, "
            f"__global const uchar* restrict wb)\n{{\n{body}}}\n")


def linear(total: int, body: str) -> str:
    """A body over ``total`` work-items, ``i`` the flat index."""
    return (f"  const int i = get_global_id(0);\n  if (i >= {total}) return;\n{body}")


# -- convolution ---------------------------------------------------------------------


def epilogue(activation: Activation | None, acc: str, out_index: str, channel: str,
             residual: str | None) -> str:
    """``Y[out_index]``: the sum ``acc`` plus the bias of ``channel``, the residual
    read at the same index, then the activation."""
    lines = [f"  float v = {acc} + (float)B[{channel}];\n"]
    if residual is not None:
        lines.append(f"  v += (float){residual}[{out_index}];\n")
    lines.append(f"  v = {activation_expr(activation, 'v')};\n")
    lines.append(f"  Y[{out_index}] = (real)v;\n")
    return "".join(lines)


def conv_pointers(x: str, y: str, bias: int, residual: str | None) -> str:
    """The pointers every convolution kernel starts with: X, Y, B (and R)."""
    pre = (f"  __global const real* X = {x};\n"
           f"  __global real* Y = {y};\n"
           f"  __global const real* B = (__global const real*)(wb + {bias});\n")
    if residual is not None:
        pre += f"  __global const real* R = {residual};\n"
    return pre


def dense_conv(layer: Conv, x_shape: Shape, y_shape: Shape, pre: str, weight: int,
               residual: bool) -> str:
    """A flat kernel: one output element per work-item, the weight loops constant."""
    _, c, h, w = x_shape
    n, o, ho, wo = y_shape
    kh, kw = layer.kernel_shape
    (sh, sw), (dh, dw), (pt, pl, _, _) = layer.strides, layer.dilations, layer.pads
    cg, og = c // layer.groups, o // layer.groups
    return pre + (
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
    ) + epilogue(layer.activation, "acc", "i", "f", "R" if residual else None)


def tiled_conv(layer: Conv, x_shape: Shape, y_shape: Shape, pre: str, weight: int,
               residual: bool, tp: int, tk: int, to: int) -> str:
    """An ungrouped dense conv as the implicit matrix product W (O x C.kh.kw) @
    X (C.kh.kw x pixels), tiled: each work-group (``tp`` pixels by ``to`` filters)
    stages a chunk of ``tk`` of the reduction (input channel and tap) for its pixels,
    and of weights for its filters, in local memory, so every input value is read
    from global memory once per work-group instead of once per filter. A 1x1
    stride-1 conv reads its input rows directly; other shapes gather their window
    (zero outside the input)."""
    _, c, h, w = x_shape
    n, o, ho, wo = y_shape
    kh, kw = layer.kernel_shape
    (sh, sw), (dh, dw), (pt, pl, _, _) = layer.strides, layer.dilations, layer.pads
    pixels, taps = ho * wo, kh * kw
    depth = c * taps
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
    return pre + (
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
    ) + epilogue(layer.activation, "acc", "out", "f", "R" if residual else None)


def pattern_conv(layer: Conv, x_shape: Shape, y_shape: Shape, pre: str,
                 offsets: dict[str, int], residual: bool) -> str:
    """A compressed conv over the 2-D range (pixel, filter position in storage order):
    ``offsets`` are the blob offsets of the compressed arrays (``order``, ``counts``,
    ``channels``, ``weights``, ``kstart``, ``wstart``); each pattern's taps are
    constants of the loop over the kernels of that pattern."""
    cw = layer.compressed
    assert cw is not None
    _, c, h, w = x_shape
    n, o, ho, wo = y_shape
    (sh, sw), (dh, dw), (pt, pl, _, _) = layer.strides, layer.dilations, layer.pads
    m = len(cw.tap_sets)
    pixels = n * ho * wo
    loops = []
    for p, taps in enumerate(cw.tap_sets):
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
    return pre + (
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
    ) + epilogue(layer.activation, "acc", "out", "f", "R" if residual else None)


def sparse_conv(layer: Conv, x_shape: Shape, y_shape: Shape, pre: str,
                offsets: dict[str, int], residual: bool) -> str:
    """A 1x1 conv with unstructured zeros over the 2-D range (pixel, filter position
    in filter order): each work-item sums its filter's non-zero weights times the
    input channels they read. ``offsets`` are the blob offsets of ``order``, the
    row ``starts`` (filter positions + 1), and each non-zero's input ``channels`` and
    ``weights``. A work-group shares one filter (or neighbours in filter order, whose
    counts the reorder made alike), so its weight reads are the same address."""
    _, c, h, w = x_shape
    n, o, _, _ = y_shape
    plane = h * w
    return pre + (
        f"  const int pos = get_global_id(1);\n"
        f"  const int i = get_global_id(0);\n"
        f"  if (i >= {n * plane} || pos >= {o}) return;\n"
        f"  const int f = ((__global const int*)(wb + {offsets['order']}))[pos];\n"
        f"  __global const int* starts = (__global const int*)(wb + {offsets['starts']});\n"
        f"  __global const int* channels = "
        f"(__global const int*)(wb + {offsets['channels']});\n"
        f"  __global const real* weights = (__global const real*)(wb + {offsets['weights']});\n"
        f"  const int b = i / {plane}, p = i % {plane};\n"
        f"  __global const real* xb = X + b * {c * plane} + p;\n"
        f"  float acc = 0.0f;\n"
        f"  for (int k = starts[pos]; k < starts[pos + 1]; ++k)\n"
        f"    acc += (float)weights[k] * (float)xb[channels[k] * {plane}];\n"
        f"  const int out = (b * {o} + f) * {plane} + p;\n"
    ) + epilogue(layer.activation, "acc", "out", "f", "R" if residual else None)


def col2im(layer: Col2Im, x_shape: Shape, y_shape: Shape, x: str, y: str,
           bias: int | None) -> str:
    """A flat kernel, one output pixel per work-item: the taps whose strided position
    lands on it, each checked (a stride phase takes some taps, not others)."""
    _, _, h, w = x_shape
    n, c, ho, wo = y_shape
    (kh, kw), (sh, sw), (dh, dw) = layer.kernel, layer.strides, layer.dilations
    pt, pl, _, _ = layer.pads
    bias_value = "0.0f" if bias is None else (
        f"(float)((__global const real*)(wb + {bias}))[nc % {c}]")
    return (
        f"  const int x = i % {wo}, y = (i / {wo}) % {ho}, nc = i / {ho * wo};\n"
        f"  __global const real* xc = {x} + nc * {kh * kw * h * w};\n"
        f"  float acc = 0.0f;\n"
        f"  for (int ky = 0; ky < {kh}; ++ky) {{\n"
        f"    const int ty = y + {pt} - ky * {dh};\n"
        f"    if (ty < 0 || ty % {sh} != 0 || ty / {sh} >= {h}) continue;\n"
        f"    for (int kx = 0; kx < {kw}; ++kx) {{\n"
        f"      const int tx = x + {pl} - kx * {dw};\n"
        f"      if (tx < 0 || tx % {sw} != 0 || tx / {sw} >= {w}) continue;\n"
        f"      acc += (float)xc[((ky * {kw} + kx) * {h} + ty / {sh}) * {w} + tx / {sw}];\n"
        f"    }}\n  }}\n"
        f"  float v = acc + {bias_value};\n"
        f"  v = {activation_expr(layer.activation, 'v')};\n"
        f"  {y}[i] = (real)v;\n")


def dense(layer: Dense, x_shape: Shape, x: str, y: str, weight: int, bias: int) -> str:
    """A flat kernel, one output element (row, filter) per work-item."""
    k = x_shape[-1]
    o = layer.weight.shape[0]
    return (
        f"  __global const real* X = {x};\n"
        f"  __global real* Y = {y};\n"
        f"  __global const real* W = (__global const real*)(wb + {weight});\n"
        f"  __global const real* B = (__global const real*)(wb + {bias});\n"
        f"  const int f = i % {o}, r = i / {o};\n"
        f"  __global const real* xr = X + r * {k};\n"
        f"  __global const real* wr = W + f * {k};\n"
        f"  float acc = 0.0f;\n"
        f"  for (int j = 0; j < {k}; ++j) acc += (float)wr[j] * (float)xr[j];\n"
    ) + epilogue(layer.activation, "acc", "i", "f", None)


# -- element-wise --------------------------------------------------------------------


def scale_shift(layer: ScaleShift, shape: Shape, x: str, y: str, scale: int,
                shift: int) -> str:
    """A flat kernel: each element times its channel's scale, plus its shift."""
    inner = math.prod(shape[2:])
    channels = shape[1]
    return (
        f"  const int ch = (i / {inner}) % {channels};\n"
        f"  float v = (float){x}[i]"
        f" * (float)((__global const real*)(wb + {scale}))[ch]"
        f" + (float)((__global const real*)(wb + {shift}))[ch];\n"
        f"  v = {activation_expr(layer.activation, 'v')};\n"
        f"  {y}[i] = (real)v;\n")


def unary(layer: Unary, x: str, y: str) -> str:
    """A flat kernel: the activation of each element."""
    return (f"  float v = (float){x}[i];\n"
            f"  v = {activation_expr(layer.activation, 'v')};\n"
            f"  {y}[i] = (real)v;\n")


def _broadcast_index(in_shape: Shape, out_shape: Shape, var: str) -> str:
    """The flat index into an input of ``in_shape`` broadcast to ``out_shape``, for
    the output's flat index ``var``."""
    rank = len(out_shape)
    padded = (1,) * (rank - len(in_shape)) + tuple(in_shape)
    in_strides = row_major_strides(padded)
    out_strides = row_major_strides(out_shape)
    terms = []
    for a in range(rank):
        if padded[a] == 1 or out_shape[a] == 1:
            continue
        coord = f"(({var} / {out_strides[a]}) % {out_shape[a]})"
        terms.append(f"{coord} * {in_strides[a]}")
    return " + ".join(terms) or "0"


def binary(layer: Binary, a_shape: Shape, b_shape: Shape, out_shape: Shape, a: str, b: str,
           y: str) -> str:
    """A flat kernel over the output, each operand read with numpy broadcasting."""
    op = {"add": "a + b", "sub": "a - b", "mul": "a * b", "div": "a / b",
          "max": "patcc_max(a, b)", "min": "patcc_min(a, b)", "pow": "pow(a, b)"}[layer.binop]
    return (
        f"  const float a = (float){a}"
        f"[{_broadcast_index(a_shape, out_shape, 'i')}];\n"
        f"  const float b = (float){b}"
        f"[{_broadcast_index(b_shape, out_shape, 'i')}];\n"
        f"  float v = {op};\n"
        f"  v = {activation_expr(layer.activation, 'v')};\n"
        f"  {y}[i] = (real)v;\n")


# -- pooling and reductions ----------------------------------------------------------


def pool(layer: Pool, x_shape: Shape, y_shape: Shape, x: str, y: str) -> str:
    """A flat kernel, one output pixel per work-item, over its window."""
    n, c, h, w = x_shape
    _, _, ho, wo = y_shape
    (kh, kw), (sh, sw), (dh, dw) = layer.kernel, layer.strides, layer.dilations
    pt, pl, pb, pr = layer.pads
    if layer.kind == "max":  # a window wholly in padding gives -inf, as numpy's
        init, update, finish, count = "-INFINITY", "acc = patcc_max(acc, v);", "acc", ""
    else:
        # Positions an average counts: inside the input, or (count_include_pad)
        # inside the explicit padding -- never the ceil-mode extension.
        counted = (f"iy >= {-pt} && iy < {h + pb} && ix >= {-pl} && ix < {w + pr}"
                   if layer.count_include_pad else "inside")
        init, update, finish = "0.0f", "acc += v;", "acc / (float)cnt"
        count = f"      if ({counted}) ++cnt;\n"
    return (
        f"  __global const real* X = {x};\n"
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
        f"  {y}[i] = (real)({finish});\n")


def global_pool(layer: GlobalPool, shape: Shape, x: str, y: str) -> str:
    """A flat kernel, one (image, channel) row per work-item."""
    size = math.prod(shape[2:])
    if layer.kind == "max":
        init, update, finish = "-INFINITY", "acc = patcc_max(acc, (float)xr[j]);", "acc"
    else:
        init, update, finish = "0.0f", "acc += (float)xr[j];", f"acc / {size}.0f"
    return (
        f"  __global const real* xr = {x} + i * {size};\n"
        f"  float acc = {init};\n"
        f"  for (int j = 0; j < {size}; ++j) {update}\n"
        f"  {y}[i] = (real)({finish});\n")


def reduce(layer: Reduce, shape: Shape, x: str, y: str) -> str:
    """A flat kernel, one output element per work-item, over the reduced axes."""
    length = math.prod(shape[layer.start:layer.stop])
    inner = math.prod(shape[layer.stop:])
    init, update, finish = {
        "max": ("-INFINITY", "acc = patcc_max(acc, v);", "acc"),
        "min": ("INFINITY", "acc = patcc_min(acc, v);", "acc"),
        "sum": ("0.0f", "acc += v;", "acc"),
        "mean": ("0.0f", "acc += v;", f"acc / {length}.0f"),
        "l2": ("0.0f", "acc = fma(v, v, acc);", "sqrt(acc)"),
    }[layer.kind]
    return (
        f"  __global const real* xr = {x}"
        f" + (i / {inner}) * {length * inner} + i % {inner};\n"
        f"  float acc = {init};\n"
        f"  for (int j = 0; j < {length}; ++j) {{ const float v = (float)xr[j * {inner}];"
        f" {update} }}\n"
        f"  {y}[i] = (real)({finish});\n")


def softmax(layer: Softmax, shape: Shape, x: str, y: str) -> str:
    """A flat kernel, one row along the softmax axis per work-item."""
    axis = layer.axis % len(shape)
    size = shape[axis]
    inner = math.prod(shape[axis + 1:])
    return (
        f"  const int base = (i / {inner}) * {size * inner} + i % {inner};\n"
        f"  __global const real* X = {x} + base;\n"
        f"  __global real* Y = {y} + base;\n"
        f"  float mx = -INFINITY;\n"
        f"  for (int j = 0; j < {size}; ++j) mx = fmax(mx, (float)X[j * {inner}]);\n"
        f"  float sum = 0.0f;\n"
        f"  for (int j = 0; j < {size}; ++j) sum += exp((float)X[j * {inner}] - mx);\n"
        f"  for (int j = 0; j < {size}; ++j)"
        + (f" Y[j * {inner}] = (real)((float)X[j * {inner}] - mx - log(sum));\n"
           if layer.log else
           f" Y[j * {inner}] = (real)(exp((float)X[j * {inner}] - mx) / sum);\n"))


# -- data movement -------------------------------------------------------------------


def copy(shape: Shape, src: str, src_strides: Sequence[int], src_base: int, dst: str,
         dst_strides: Sequence[int], dst_base: int) -> str:
    """A flat kernel over the index space ``shape``: dst[base + c.dst_strides] =
    src[base + c.src_strides]."""
    strides = row_major_strides(shape)
    src_terms, dst_terms = [str(src_base)], [str(dst_base)]
    for a, dim in enumerate(shape):
        if dim == 1:
            continue
        coord = f"((i / {strides[a]}) % {dim})"
        if src_strides[a]:
            src_terms.append(f"{coord} * {src_strides[a]}")
        if dst_strides[a]:
            dst_terms.append(f"{coord} * {dst_strides[a]}")
    return f"  {dst}[{' + '.join(dst_terms)}] = {src}[{' + '.join(src_terms)}];\n"


@dataclass(frozen=True)
class ResizeAxis:
    """A resized axis's window tables in the blob (``patcc.ir.resample``): ``taps``
    per output position, their input offsets (premultiplied by the axis's input
    stride) and weights, and the flags of positions outside the input, if any."""

    taps: int
    offsets: int
    weights: int
    outside: int | None


def resize(layer: Resize, in_shape: Shape, out_shape: Shape,
           axes: Sequence[ResizeAxis | None], x: str, y: str) -> str:
    """A flat kernel, one output element per work-item: nested loops over the windows
    of the resized axes (``axes``; ``None`` for an axis read straight through)."""
    in_strides, out_strides = row_major_strides(in_shape), row_major_strides(out_shape)
    lines = ["  float acc = 0.0f;\n", "  int base = 0;\n"]
    loops, inner, outside = [], [], []
    for a, table in enumerate(axes):
        coord = f"((i / {out_strides[a]}) % {out_shape[a]})"
        if table is None:
            if out_shape[a] > 1:
                lines.append(f"  base += {coord} * {in_strides[a]};\n")
            continue
        offsets, weights, n = table.offsets, table.weights, table.taps
        lines.append(f"  const int c{a} = {coord};\n")
        if table.outside is not None:
            outside.append(f"((__global const int*)(wb + {table.outside}))[c{a}]")
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
                 f"    {y}[i] = (real){fill};\n"
                 f"    return;\n  }}\n")
    body += "".join(loops)
    body += f"  acc += {weight} * (float){x}[{read}];\n"
    body += "  }\n" * len(loops)
    body += f"  {y}[i] = (real)acc;\n"
    return body


def gather(layer: Gather, in_shape: Shape, table: int, x: str, y: str) -> str:
    """A flat kernel, one output element per work-item; ``table`` is the blob offset
    of the indices (int)."""
    inner = math.prod(in_shape[layer.axis + 1:])
    count = layer.indices.size
    return (
        f"  const int o = i / {count * inner}, k = (i / {inner}) % {count};\n"
        f"  const int index = ((__global const int*)(wb + {table}))[k];\n"
        f"  {y}[i] = {x}"
        f"[o * {in_shape[layer.axis] * inner} + index * {inner} + i % {inner}];\n")


def pad(layer: Pad, in_shape: Shape, out_shape: Shape, x: str, y: str) -> str:
    """A flat kernel over the output: each element's source, or the fill value."""
    rank = len(in_shape)
    out_strides, in_strides = row_major_strides(out_shape), row_major_strides(in_shape)
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
    lines.append(f"  {y}[i] = inside ? {x}[src] : (real){value};\n")
    return "".join(lines)
