"""Operators both frontends build from layers patcc already has: reductions over any
axes, reshape-transpose-reshape shuffles (DepthToSpace, pixel_shuffle, channel
shuffles), tiling, broadcasting and PReLU. The ONNX and the torch frontend call these
with their own naming (``Names``) and check their own attributes; what is checked
here is what both would otherwise check twice. ConvTranspose and the normalisations
have modules of their own (``transpose_conv``, ``normalization``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from patcc.errors import FrontendError
from patcc.ir.layers import (
    Activation,
    Binary,
    Concat,
    GlobalPool,
    Layer,
    Reduce,
    Reshape,
    Shape,
    Transpose,
    Unary,
    check_size,
)


@dataclass(frozen=True)
class Names:
    """How a frontend names what a lowering adds: ``layer(suffix)`` a layer (suffix ""
    for the one that computes the operator's output), ``tensor(suffix)`` an
    intermediate tensor, both unique, and ``constant(suffix, value)`` a new graph
    constant holding ``value`` (returning its name)."""

    layer: Callable[[str], str]
    tensor: Callable[[str], str]
    constant: Callable[[str, np.ndarray], str]

    def prefixed(self, prefix: str) -> Names:
        """The names of one step of several: its suffixes start with ``prefix``, so
        the step's final layer (suffix "") is ``layer(prefix)``."""
        return Names(lambda suffix: self.layer(prefix + suffix),
                     lambda suffix: self.tensor(prefix + suffix), self.constant)


def lower_reduce(x: str, shape: Shape, kind: str, axes: Sequence[int], keep: bool, out: str,
                 names: Names) -> list[Layer]:
    """``kind`` (mean, max, min, sum, l2) over ``axes`` (normalised, non-negative), the
    axes kept as size 1 or dropped. Over all spatial axes of a 3-D or wider tensor a
    mean or max is a GlobalPool; any other set of axes is a Reduce per run of
    consecutive axes, then a Reshape where the axes are dropped."""
    norm = sorted(set(axes))
    rank = len(shape)
    kept_shape = tuple(1 if a in norm else d for a, d in enumerate(shape))
    target = out if keep else names.tensor("keep")
    layers: list[Layer] = []
    if kind in ("mean", "max") and rank >= 3 and norm == list(range(2, rank)):
        layers.append(GlobalPool(name=names.layer(""), inputs=(x,), outputs=(target,),
                                 kind="avg" if kind == "mean" else "max"))
    else:
        runs: list[list[int]] = []
        for a in norm:
            if runs and runs[-1][-1] == a - 1:
                runs[-1].append(a)
            else:
                runs.append([a])
        source = x
        for k, run in enumerate(runs):
            last = k == len(runs) - 1
            result = target if last else names.tensor(f"part{k}")
            layers.append(Reduce(name=names.layer("" if last else f"_{k}"), inputs=(source,),
                                 outputs=(result,), kind=kind, start=run[0],
                                 stop=run[-1] + 1))
            source = result
    if not keep:
        layers.append(Reshape(name=names.layer("_squeeze"), inputs=(target,), outputs=(out,),
                              shape=tuple(d for a, d in enumerate(kept_shape)
                                          if a not in norm)))
    return layers


def lower_variance(x: str, shape: Shape, axes: Sequence[int], out: str, names: Names,
                   mean: str | None = None) -> tuple[list[Layer], str, str]:
    """The population variance of ``x`` over ``axes`` into ``out`` (the axes kept as
    size 1), taken over the centred values: two passes, as onnxruntime and torch
    compute it, not ``E[x^2] - E[x]^2``, which cancels badly. Returns the layers, the
    mean (into ``mean`` when given) and the centred values, which normalisations
    divide."""
    mean = mean or names.tensor("mean")
    centred, square = names.tensor("centred"), names.tensor("square")
    layers = lower_reduce(x, shape, "mean", axes, True, mean, names.prefixed("_mean"))
    layers += [Binary(name=names.layer("_centre"), inputs=(x, mean), outputs=(centred,),
                      binop="sub"),
               Binary(name=names.layer("_square"), inputs=(centred, centred),
                      outputs=(square,), binop="mul")]
    layers += lower_reduce(square, shape, "mean", axes, True, out, names.prefixed("_var"))
    return layers, mean, centred


def lower_shuffle(x: str, split: Shape, perm: Sequence[int], out_shape: Shape, out: str,
                  names: Names) -> list[Layer]:
    """Reshape to ``split``, permute by ``perm``, reshape to ``out_shape``."""
    t0, t1 = names.tensor("split"), names.tensor("moved")
    return [Reshape(name=names.layer("_split"), inputs=(x,), outputs=(t0,), shape=tuple(split)),
            Transpose(name=names.layer(""), inputs=(t0,), outputs=(t1,), perm=tuple(perm)),
            Reshape(name=names.layer("_merge"), inputs=(t1,), outputs=(out,),
                    shape=tuple(out_shape))]


TILE_CONCAT_INPUTS = 8
"""Tile copies one Concat takes; more repeats are built by doubling (log2 layers)."""


def lower_tile(x: str, shape: Shape, repeats: Sequence[int], out: str, names: Names,
               where: str) -> list[Layer]:
    """Repeats along each axis: a Concat of copies per repeated axis (of doublings of
    the input for many repeats, so that the layers grow with the log of the count).
    No layers where nothing repeats (the caller makes ``out`` an alias of ``x``). The
    output's size is checked first: a hostile repeat count builds nothing."""
    repeats = [int(r) for r in repeats]
    if len(repeats) != len(shape) or min(repeats, default=1) < 1:
        raise FrontendError(f"repeats {repeats}"[:120] + f" for a rank-{len(shape)} input must "
                            "be one integer >= 1 per axis", where)
    check_size(f"output {out!r}", tuple(d * r for d, r in zip(shape, repeats, strict=True)))
    axes = [a for a, r in enumerate(repeats) if r > 1]
    layers: list[Layer] = []
    source = x
    for k, axis in enumerate(axes):
        last = k == len(axes) - 1
        result = out if last else names.tensor(f"tile{axis}")
        copies = [source] * repeats[axis]
        if repeats[axis] > TILE_CONCAT_INPUTS:
            copies, block, count = [], source, repeats[axis]
            while count:
                if count & 1:
                    copies.append(block)
                count >>= 1
                if count:
                    doubled = names.tensor(f"tile{axis}_double")
                    layers.append(Concat(name=names.layer(f"_{axis}_double"),
                                         inputs=(block, block), outputs=(doubled,), axis=axis))
                    block = doubled
        layers.append(Concat(name=names.layer("" if last else f"_{axis}"),
                             inputs=tuple(copies), outputs=(result,), axis=axis))
        source = result
    return layers


def lower_expand(x: str, shape: Shape, target: Shape, out: str, names: Names,
                 where: str) -> list[Layer]:
    """Broadcast to ``target`` (numpy rules): x + 0 of the expanded dimensions; no
    layers where nothing grows (the caller makes ``out`` an alias of ``x``)."""
    try:
        result = np.broadcast_shapes(tuple(shape), tuple(target))
    except ValueError:
        raise FrontendError(f"cannot expand {list(shape)} to {list(target)}", where) from None
    check_size(f"output {out!r}", result)  # before a zeros operand of that size
    if result == tuple(shape):
        return []
    padded = (1,) * (len(result) - len(shape)) + tuple(shape)
    zeros = np.zeros(tuple(o if p == 1 else 1 for o, p in zip(result, padded, strict=True)),
                     np.float32)
    return [Binary(name=names.layer(""), inputs=(x, names.constant("zeros", zeros)),
                   outputs=(out,), binop="add")]


def lower_prelu(x: str, shape: Shape, slope: np.ndarray, out: str, names: Names,
                where: str) -> list[Layer]:
    """x if x >= 0 else slope * x. One slope: a leaky ReLU; a slope per channel (or any
    shape broadcasting to x): relu(x) + slope * min(x, 0), which keeps NaN and inf as
    onnxruntime's product does."""
    try:
        if np.broadcast_shapes(slope.shape, tuple(shape)) != tuple(shape):
            raise ValueError
    except ValueError:
        raise FrontendError(f"slope of shape {slope.shape} does not broadcast to the input "
                            f"{list(shape)}", where) from None
    if slope.size == 1:
        return [Unary(name=names.layer(""), inputs=(x,), outputs=(out,),
                      activation=Activation("leaky_relu", float(slope.reshape(-1)[0])))]
    zero = names.constant("zero", np.zeros((), np.float32))
    slope_name = names.constant("slope", np.asarray(slope, np.float32))
    negative, scaled, positive = (names.tensor(t) for t in ("neg", "scaled", "pos"))
    return [Binary(name=names.layer("_min"), inputs=(x, zero), outputs=(negative,), binop="min"),
            Binary(name=names.layer("_scale"), inputs=(negative, slope_name), outputs=(scaled,),
                   binop="mul"),
            Unary(name=names.layer("_relu"), inputs=(x,), outputs=(positive,),
                  activation=Activation("relu")),
            Binary(name=names.layer(""), inputs=(positive, scaled), outputs=(out,), binop="add")]
