"""ConvTranspose as layers patcc already has, built at import by the ONNX and the torch
frontend alike.

The IR has no transposed convolution. At stride 1 a ConvTranspose is a plain
convolution: each kernel flipped in both spatial axes, input and output channels
swapped within each group, padded by ``d*(k-1) - p`` (a negative pad crops the input
first) with the output padding added at the bottom and right. A pattern-pruned 3x3
kernel stays pattern style, since a flipped pattern is a pattern, and runs on the
pattern kernel.

At a larger stride it is the GEMM + col2im algorithm onnxruntime uses: a 1x1 conv
gives each input pixel its ``C_out*kh*kw`` tap products (per group, through the conv's
own groups), and a ``Col2Im`` layer sums them into the output image and adds the bias.
Nothing is computed for the zeros the stride would insert between input pixels, and
the zeros of a pruned weight make the 1x1 conv unstructured sparse, whose kernel skips
them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from patcc.errors import FrontendError
from patcc.ir.layers import MAX_TENSOR_ELEMENTS, Col2Im, Conv, Layer, Shape, Slice


@dataclass(frozen=True)
class TransposedConv:
    """A 2-D ConvTranspose's attributes as a frontend normalised them.

    ``weight`` has ONNX's and torch's layout (C_in, C_out / groups, kh, kw); ``bias``
    is (C_out,) or None. ``pads`` (top, left, bottom, right) are cropped from the full
    output, (H - 1)*stride + (k - 1)*dilation + 1 rows, and ``output_padding`` rows
    and columns are added at the bottom and right (ONNX's ``output_shape`` is
    expressed through these two).
    """

    weight: np.ndarray
    bias: np.ndarray | None
    strides: tuple[int, int] = (1, 1)
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)
    dilations: tuple[int, int] = (1, 1)
    groups: int = 1
    output_padding: tuple[int, int] = (0, 0)

    @property
    def out_channels(self) -> int:
        return int(self.weight.shape[1]) * self.groups

    @property
    def kernel(self) -> tuple[int, int]:
        return int(self.weight.shape[2]), int(self.weight.shape[3])

    def full_size(self, hw: tuple[int, int]) -> tuple[int, int]:
        """Rows and columns the taps of an ``hw`` input reach, before any cropping."""
        return tuple(  # type: ignore[return-value]
            (size - 1) * s + (k - 1) * d + 1
            for size, k, s, d in zip(hw, self.kernel, self.strides, self.dilations,
                                     strict=True))

    def output_size(self, hw: tuple[int, int]) -> tuple[int, int]:
        """The output's (height, width) for an ``hw`` input."""
        (fh, fw), (pt, pl, pb, pr), (eh, ew) = self.full_size(hw), self.pads, \
            self.output_padding
        return fh - pt - pb + eh, fw - pl - pr + ew


def check(spec: TransposedConv, x_shape: Shape, where: str) -> None:
    """Raise ``PatccError`` (at ``where``) unless ``spec`` applies to an input of
    ``x_shape``: NCHW, a 4-D weight whose input channels the groups divide, strides
    and dilations >= 1, pads >= 0, output padding below max(stride, dilation) (torch's
    rule; ONNX's, below the stride, is the ONNX frontend's to check), a bias of C_out,
    and an output that is not empty."""
    if len(x_shape) != 4:
        raise FrontendError(f"only 2-D ConvTranspose on NCHW tensors is supported (input "
                         f"has rank {len(x_shape)})", where)
    w = spec.weight
    if w.ndim != 4:
        raise FrontendError(f"only 2-D ConvTranspose is supported (weight rank {w.ndim}); "
                         "the weight is (C_in, C_out / groups, kh, kw)", where)
    g = spec.groups
    if not isinstance(g, int) or g < 1 or w.shape[0] % g:
        raise FrontendError(f"group {g!r} must be a positive integer dividing the weight's "
                         f"{w.shape[0]} input channels", where)
    if x_shape[1] != w.shape[0]:
        raise FrontendError(f"the input has {x_shape[1]} channels but the weight "
                         f"{list(w.shape)} expects {w.shape[0]} (its first axis)", where)
    if min(w.shape) < 1:
        raise FrontendError(f"the weight {list(w.shape)} is empty", where)
    if (len(spec.strides) != 2 or len(spec.dilations) != 2 or len(spec.pads) != 4
            or len(spec.output_padding) != 2 or min(spec.strides) < 1
            or min(spec.dilations) < 1 or min(spec.pads) < 0 or min(spec.output_padding) < 0):
        raise FrontendError(f"strides {list(spec.strides)}, dilations {list(spec.dilations)} "
                         f"(two integers >= 1), pads {list(spec.pads)} (four integers >= 0) "
                         f"or output_padding {list(spec.output_padding)} (two integers >= 0)"
                         " out of range", where)
    for axis, (e, s, d) in enumerate(zip(spec.output_padding, spec.strides, spec.dilations,
                                         strict=True)):
        if e >= max(s, d):
            raise FrontendError(f"output_padding {e} on axis {axis + 2} must be below "
                             f"max(stride, dilation) = {max(s, d)}", where)
    if spec.bias is not None and spec.bias.shape != (spec.out_channels,):
        raise FrontendError(f"the bias has shape {list(spec.bias.shape)}; "
                         f"{spec.out_channels} output channels need [{spec.out_channels}]",
                         where)
    full = spec.full_size((x_shape[2], x_shape[3]))
    pt, pl, pb, pr = spec.pads
    for axis, (size, crop) in enumerate(zip(full, (pt + pb, pl + pr), strict=True)):
        if size - crop < 1:
            raise FrontendError(f"pads {list(spec.pads)} crop all {size} rows of the output "
                             f"on axis {axis + 2}; they must leave at least one", where)
    out = (x_shape[0], spec.out_channels, *spec.output_size((x_shape[2], x_shape[3])))
    columns = (x_shape[0], spec.out_channels * math.prod(spec.kernel), *x_shape[2:])
    for what, shape in (("output", out), ("tap columns", columns)):
        if math.prod(shape) > MAX_TENSOR_ELEMENTS:
            raise FrontendError(f"the {what} {list(shape)} would have more than "
                             f"{MAX_TENSOR_ELEMENTS} elements, patcc's limit", where)


def lower_conv_transpose(spec: TransposedConv, x: str, x_shape: Shape, out: str,
                         layer_name: Callable[[str], str], tensor_name: Callable[[str], str],
                         where: str) -> list[Layer]:
    """The layers computing ``out`` from ``x`` (of ``x_shape``) as ``spec`` says, in
    order; ``layer_name(suffix)`` names a layer (suffix "" for the one holding the
    weights), ``tensor_name(suffix)`` an intermediate tensor, both unique. Raises
    ``PatccError`` (at ``where``) for attributes that do not fit (see ``check``)."""
    check(spec, x_shape, where)
    if spec.strides == (1, 1):
        return _as_conv(spec, x, x_shape, out, layer_name, tensor_name)
    return _as_columns(spec, x, x_shape, out, layer_name, tensor_name)


def _grouped(spec: TransposedConv) -> np.ndarray:
    """The weight as (groups, C_in / groups, C_out / groups, kh, kw)."""
    c_in, c_out_g, kh, kw = spec.weight.shape
    return spec.weight.reshape(spec.groups, c_in // spec.groups, c_out_g, kh, kw)


def _as_conv(spec: TransposedConv, x: str, x_shape: Shape, out: str,
             layer_name: Callable[[str], str], tensor_name: Callable[[str], str]
             ) -> list[Layer]:
    """Stride 1: one Conv with flipped kernels, after a Slice where a pad exceeds the
    kernel's span (the conv's own padding would be negative)."""
    g = spec.groups
    kh, kw = spec.kernel
    _, c_in_g, c_out_g, _, _ = _grouped(spec).shape
    weight = _grouped(spec).transpose(0, 2, 1, 3, 4).reshape(g * c_out_g, c_in_g, kh, kw)
    weight = np.ascontiguousarray(weight[:, :, ::-1, ::-1], dtype=np.float32)
    span_h, span_w = (kh - 1) * spec.dilations[0], (kw - 1) * spec.dilations[1]
    pt, pl, pb, pr = spec.pads
    eh, ew = spec.output_padding
    conv_pads = (span_h - pt, span_w - pl, span_h - pb + eh, span_w - pr + ew)
    layers: list[Layer] = []
    source = x
    crop = tuple(max(0, -p) for p in conv_pads)
    if any(crop):
        n, c, h, w = x_shape
        source = tensor_name("cropped")
        layers.append(Slice(name=layer_name("_crop"), inputs=(x,), outputs=(source,),
                            starts=(0, 0, crop[0], crop[1]),
                            ends=(n, c, h - crop[2], w - crop[3]), steps=(1, 1, 1, 1)))
    bias = spec.bias if spec.bias is not None else np.zeros(spec.out_channels, np.float32)
    layers.append(Conv(
        name=layer_name(""), inputs=(source,), outputs=(out,), weight=weight,
        bias=np.ascontiguousarray(bias, dtype=np.float32),
        pads=tuple(max(0, p) for p in conv_pads),  # type: ignore[arg-type]
        dilations=spec.dilations, groups=g))
    return layers


def _as_columns(spec: TransposedConv, x: str, x_shape: Shape, out: str,
                layer_name: Callable[[str], str], tensor_name: Callable[[str], str]
                ) -> list[Layer]:
    """Stride > 1: a 1x1 conv to the tap columns, channel ``(c*kh + ky)*kw + kx`` for
    output channel c, then Col2Im with the bias."""
    g = spec.groups
    kh, kw = spec.kernel
    _, c_in_g, c_out_g, _, _ = _grouped(spec).shape
    rows = g * c_out_g * kh * kw
    weight = _grouped(spec).transpose(0, 2, 3, 4, 1).reshape(rows, c_in_g, 1, 1)
    columns = tensor_name("columns")
    bias = None if spec.bias is None else np.ascontiguousarray(spec.bias, dtype=np.float32)
    return [
        Conv(name=layer_name(""), inputs=(x,), outputs=(columns,),
             weight=np.ascontiguousarray(weight, dtype=np.float32),
             bias=np.zeros(rows, np.float32), groups=g),
        Col2Im(name=layer_name("_col2im"), inputs=(columns,), outputs=(out,),
               channels=spec.out_channels, kernel=(kh, kw),
               output_size=spec.output_size((x_shape[2], x_shape[3])),
               strides=spec.strides, pads=spec.pads, dilations=spec.dilations, bias=bias),
    ]


__all__ = ["TransposedConv", "check", "lower_conv_transpose"]
