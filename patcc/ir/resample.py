"""The arithmetic of ``Resize``: which input coordinates each output coordinate reads,
and with what weights, one axis at a time.

Resizing is separable: along every resized axis, output coordinate ``y`` maps to a
source coordinate ``x`` (the *coordinate transformation*), and reads a window of input
coordinates around ``x`` weighted by the mode's filter (nearest: one, linear: a tent
of two, cubic: Keys' kernel of four; antialiased filters are stretched by 1 / scale
when downsampling). The whole layer is the outer product of the axes' windows.

Every backend (and the reference interpreter) consumes the same tables, so the
semantics live here once: :func:`axis_taps` follows the ONNX Resize specification
(opset 11-19, with the conventions of its reference implementation, which produces
the expected outputs of ONNX's node tests). Windows are read with edge clamping,
weights are computed in float64 (vectorised: a table of millions of coordinates
takes milliseconds), and zero-weight taps are dropped, so nearest is one tap and
linear at most two.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

RESIZE_MODES = ("nearest", "linear", "cubic")
COORDINATE_MODES = ("half_pixel", "half_pixel_symmetric", "pytorch_half_pixel",
                    "align_corners", "asymmetric", "tf_crop_and_resize")
NEAREST_MODES = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")


@dataclass(frozen=True)
class AxisTaps:
    """What one resized axis reads: for output coordinate ``y``, the input coordinates
    ``index[y, :]`` (all in range) with ``weight[y, :]`` (zero for padding taps), and
    whether ``y`` lies outside the region of interest (``outside[y]``; only with
    tf_crop_and_resize, whose such outputs take the extrapolation value)."""

    index: np.ndarray  # (out, taps) int64
    weight: np.ndarray  # (out, taps) float64
    outside: np.ndarray | None  # (out,) bool

    @property
    def taps(self) -> int:
        return int(self.index.shape[1])

    def is_identity(self) -> bool:
        return (self.taps == 1 and self.outside is None
                and np.array_equal(self.index[:, 0], np.arange(len(self.index)))
                and bool(np.all(self.weight == 1.0)))

    def repeat_factor(self) -> int:
        """``s`` when output ``y`` copies input ``y // s`` (nearest up-sampling by an
        integer factor, the common case a kernel can vectorise), else 0."""
        n = len(self.index)
        if self.taps != 1 or self.outside is not None or not np.all(self.weight == 1.0):
            return 0
        s = int(np.count_nonzero(self.index[:, 0] == 0))
        return s if s and np.array_equal(self.index[:, 0], np.arange(n) // s) else 0


def source_coordinate(mode: str, y: np.ndarray, scale: float, in_size: int, out_size: int,
                      roi: tuple[float, float]) -> np.ndarray:
    """Input coordinate of output coordinates ``y`` (float64) under the coordinate
    transformation ``mode``. ``scale`` is the axis's scale factor; the output length in
    the formulas is ``scale * in_size``, which differs from ``out_size`` (its floor)
    when the scales, not the sizes, were given."""
    resized = scale * in_size
    if mode == "half_pixel":
        return (y + 0.5) / scale - 0.5
    if mode == "half_pixel_symmetric":
        offset = in_size / 2 * (1 - out_size / resized)
        return offset + (y + 0.5) / scale - 0.5
    if mode == "pytorch_half_pixel":
        return (y + 0.5) / scale - 0.5 if out_size > 1 else np.zeros_like(y)
    if mode == "align_corners":
        return y * (in_size - 1) / (resized - 1) if resized != 1 else np.zeros_like(y)
    if mode == "asymmetric":
        return y / scale
    if mode == "tf_crop_and_resize":
        lo, hi = roi
        if resized == 1:
            x = np.full_like(y, (hi - lo) * (in_size - 1) / 2)
        else:
            x = y * (hi - lo) * (in_size - 1) / (resized - 1)
        return x + lo * (in_size - 1)
    raise ValueError(f"unknown coordinate_transformation_mode {mode!r}")


def _nearest(rule: str, ratio: np.ndarray) -> np.ndarray:
    """Weights of the taps at floor(x) and floor(x) + 1: one of them, by ``rule``."""
    up = {"round_prefer_floor": ratio > 0.5, "round_prefer_ceil": ratio >= 0.5,
          "floor": np.zeros_like(ratio, bool), "ceil": np.ones_like(ratio, bool)}[rule]
    up = up | (ratio == 1.0)  # an exact source coordinate: the right-hand tap
    return np.stack([~up, up], axis=1).astype(np.float64)


def _keys(a: float, x: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel with parameter ``a`` at distances ``x``."""
    x = np.abs(x)
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return np.where(x <= 1, near, np.where(x < 2, far, 0.0))


def _filter(kernel: Callable[[np.ndarray], np.ndarray], support: float, ratio: np.ndarray,
            stretch: float, normalise: bool) -> tuple[int, np.ndarray]:
    """(first tap's offset from floor(x), weights) of a filter of half-width
    ``support``, stretched by 1 / ``stretch`` (antialiasing) and then normalised."""
    start = math.floor(-support / stretch) + 1
    offsets = np.arange(start, 2 - start)
    weights = kernel(stretch * (offsets[None, :] - ratio[:, None]))
    if normalise:
        weights = weights / weights.sum(axis=1, keepdims=True)
    return start, weights


def axis_taps(*, mode: str, coordinate_mode: str, nearest_mode: str, cubic_a: float,
              exclude_outside: bool, antialias: bool, scale: float, in_size: int,
              out_size: int, roi: tuple[float, float] = (0.0, 1.0)) -> AxisTaps:
    """The input window of every output coordinate along one axis (see module doc)."""
    y = np.arange(out_size, dtype=np.float64)
    x = source_coordinate(coordinate_mode, y, scale, in_size, out_size, roi)
    outside = None
    if coordinate_mode == "tf_crop_and_resize":
        outside = (x < 0) | (x > in_size - 1)
        if not outside.any():
            outside = None
    base = np.floor(x)
    ratio = x - base
    exact = ratio == 0.0  # the window ends at an exact coordinate: taps to its left
    base, ratio = np.where(exact, base - 1, base), np.where(exact, 1.0, ratio)
    stretch = min(scale, 1.0) if antialias else 1.0
    if mode == "nearest":
        start, weights = 0, _nearest(nearest_mode, ratio)
    elif mode == "linear":
        start, weights = _filter(lambda d: np.clip(1.0 - np.abs(d), 0.0, None), 1.0, ratio,
                                 stretch, antialias)
    elif mode == "cubic":
        start, weights = _filter(lambda d: _keys(cubic_a, d), 2.0, ratio, stretch, antialias)
    else:
        raise ValueError(f"unknown resize mode {mode!r}")
    index = base.astype(np.int64)[:, None] + start + np.arange(weights.shape[1])[None, :]
    if exclude_outside:
        weights = np.where((index < 0) | (index >= in_size), 0.0, weights)
        total = weights.sum(axis=1, keepdims=True)
        weights = weights / np.where(total == 0.0, 1.0, total)
    index = np.clip(index, 0, in_size - 1)
    for k in range(index.shape[1] - 1, 0, -1):  # taps clamped onto one coordinate merge
        same = index[:, k] == index[:, k - 1]
        weights[:, k - 1] += np.where(same, weights[:, k], 0.0)
        weights[:, k] = np.where(same, 0.0, weights[:, k])
    # the taps of non-zero weight first (in order), then as many columns as the
    # row with the most of them needs: nearest keeps one, linear at most two
    order = np.argsort(weights == 0.0, axis=1, kind="stable")
    index = np.take_along_axis(index, order, axis=1)
    weights = np.take_along_axis(weights, order, axis=1)
    taps = max(1, int((weights != 0.0).sum(axis=1).max(initial=0)))
    return AxisTaps(np.ascontiguousarray(index[:, :taps]),
                    np.ascontiguousarray(weights[:, :taps]), outside)
