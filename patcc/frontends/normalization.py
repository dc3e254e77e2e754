"""LayerNormalization and GroupNormalization as layers patcc already has, built at
import by the ONNX and the torch frontend alike (ConvNeXt-style blocks, GroupNorm in
segmentation heads and detectors).

Layer normalisation of ``x`` over its trailing axes from ``axis`` on is
``(x - mean) / sqrt(var + eps) * scale + bias``. The mean and the variance are
``Reduce`` means, the variance taken over the centred values (two passes, as
onnxruntime and torch compute it, not ``E[x^2] - E[x]^2``, which cancels badly), and
the rest are element-wise layers; ``scale`` and ``bias`` broadcast against the
normalised axes. Group normalisation is layer normalisation of ``x`` seen as
(N, groups, the rest), then a per-channel ``ScaleShift``.
"""

from __future__ import annotations

import math

import numpy as np

from patcc.errors import FrontendError
from patcc.frontends.lowering import Names, lower_variance
from patcc.ir.layers import (
    Activation,
    Binary,
    Layer,
    Reshape,
    ScaleShift,
    Shape,
    Unary,
)


def _check_eps(eps: float, where: str) -> None:
    if not (math.isfinite(eps) and eps >= 0):
        raise FrontendError(f"epsilon {eps} must be a finite number >= 0", where)


def lower_layer_norm(x: str, shape: Shape, axis: int, scale: np.ndarray | None,
                     bias: np.ndarray | None, eps: float, out: str, names: Names,
                     where: str, mean_out: str | None = None,
                     inv_std_out: str | None = None) -> list[Layer]:
    """The layers computing ``out`` from ``x`` (of ``shape``), normalised over axes
    ``axis``.. (negative counts from the end); ``mean_out`` and ``inv_std_out``, when
    given, also receive the mean and 1 / sqrt(var + eps), with the normalised axes kept
    as size 1 (ONNX's optional outputs). Raises ``FrontendError`` at ``where`` for an
    axis out of range, a negative epsilon, or a scale or bias that does not broadcast
    against the normalised axes."""
    rank = len(shape)
    if not -rank <= axis < rank:
        raise FrontendError(f"axis {axis} is out of range for a rank-{rank} input", where)
    axis %= rank
    _check_eps(eps, where)
    normalised = tuple(shape[axis:])
    for what, value in (("scale", scale), ("bias", bias)):
        if value is not None and (value.ndim > len(normalised) or any(
                d not in (1, n) for d, n in zip(value.shape[::-1], normalised[::-1],
                                                 strict=False))):
            raise FrontendError(f"{what} of shape {list(value.shape)} does not broadcast "
                                f"against the normalised axes {list(normalised)}", where)
    var = names.tensor("var")
    layers, _, centred = lower_variance(x, shape, range(axis, rank), var, names, mean_out)

    def add(cls: type, suffix: str, inputs: tuple[str, ...], output: str,
            **fields: object) -> str:
        layers.append(cls(name=names.layer(suffix), inputs=inputs, outputs=(output,),
                          **fields))
        return output

    affine = [(binop, value) for binop, value in (("mul", scale), ("add", bias))
              if value is not None]
    shifted = add(Binary, "_eps", (var, names.constant("eps", np.array(eps, np.float32))),
                  names.tensor("shifted"), binop="add")
    std = add(Unary, "_sqrt", (shifted,), names.tensor("std"), activation=Activation("sqrt"))
    if inv_std_out is not None:
        add(Unary, "_inv_std", (std,), inv_std_out, activation=Activation("reciprocal"))
    y = add(Binary, "" if not affine else "_divide", (centred, std),
            out if not affine else names.tensor("normed"), binop="div")
    for i, (binop, value) in enumerate(affine):
        last = i == len(affine) - 1
        y = add(Binary, "" if last else f"_{binop}",
                (y, names.constant(binop, np.asarray(value, np.float32))),
                out if last else names.tensor(binop), binop=binop)
    return layers


def lower_instance_norm(x: str, shape: Shape, scale: np.ndarray, bias: np.ndarray,
                        eps: float, out: str, names: Names, where: str) -> list[Layer]:
    """Each image's channels normalised over their pixels, then a per-channel ``scale``
    and ``bias`` (C,): group normalisation with one channel per group, its means
    over the spatial axes ``GlobalPool``s (the fast form over NCHW), not a ``Reduce``
    over a reshaped view. Raises ``FrontendError`` at ``where`` for a rank
    below 3, a negative epsilon or a scale or bias of another shape."""
    if len(shape) < 3:
        raise FrontendError(f"InstanceNormalization of a rank-{len(shape)} tensor is not "
                            "supported (needs N, C and spatial axes)", where)
    channels = shape[1]
    for what, value in (("scale", scale), ("bias", bias)):
        if value.shape != (channels,):
            raise FrontendError(f"{what} has shape {value.shape}; the input {list(shape)} "
                                f"needs ({channels},)", where)
    _check_eps(eps, where)
    var, shifted, std, normed = (names.tensor(t) for t in ("var", "shifted", "std", "normed"))
    layers, _, centred = lower_variance(x, shape, range(2, len(shape)), var, names)
    return layers + [
        Binary(name=names.layer("_eps"), inputs=(var, names.constant(
            "eps", np.array(eps, np.float32))), outputs=(shifted,), binop="add"),
        Unary(name=names.layer("_sqrt"), inputs=(shifted,), outputs=(std,),
              activation=Activation("sqrt")),
        Binary(name=names.layer("_divide"), inputs=(centred, std), outputs=(normed,),
               binop="div"),
        ScaleShift(name=names.layer(""), inputs=(normed,), outputs=(out,),
                   scale=scale.astype(np.float32), shift=bias.astype(np.float32)),
    ]


def lower_group_norm(x: str, shape: Shape, groups: int, scale: np.ndarray | None,
                     bias: np.ndarray | None, eps: float, out: str, names: Names,
                     where: str) -> list[Layer]:
    """The layers computing ``out`` from ``x`` (N, C, ...): each image's ``groups``
    groups of C / groups channels normalised together, then the per-channel ``scale``
    and ``bias`` (C,). Raises ``FrontendError`` at ``where`` for a rank below 2, a
    group count that does not divide C, a negative epsilon or a scale or bias of
    another shape."""
    if len(shape) < 2:
        raise FrontendError(f"GroupNormalization of a rank-{len(shape)} tensor is not "
                            "supported (needs N and C axes)", where)
    n, c = shape[:2]
    if not isinstance(groups, int) or groups < 1 or c % groups:
        raise FrontendError(f"{groups!r} groups do not divide the {c} channels", where)
    for what, value in (("scale", scale), ("bias", bias)):
        if value is not None and value.shape != (c,):
            raise FrontendError(f"{what} has shape {list(value.shape)}; the input "
                                f"{list(shape)} needs ({c},)", where)
    grouped, normed, back = (names.tensor(t) for t in ("grouped", "normed", "ungrouped"))
    grouped_shape = (n, groups, math.prod(shape[1:]) // groups)
    layers: list[Layer] = [Reshape(name=names.layer("_group"), inputs=(x,),
                                   outputs=(grouped,), shape=grouped_shape)]
    # the ScaleShift holding the weights takes the plain name
    inner = Names(lambda suffix: names.layer(suffix or "_divide"), names.tensor,
                  names.constant)
    layers += lower_layer_norm(grouped, grouped_shape, 2, None, None, eps, normed, inner,
                               where)
    layers.append(Reshape(name=names.layer("_ungroup"), inputs=(normed,), outputs=(back,),
                          shape=tuple(shape)))
    layers.append(ScaleShift(
        name=names.layer(""), inputs=(back,), outputs=(out,),
        scale=np.ones(c, np.float32) if scale is None else scale.astype(np.float32),
        shift=np.zeros(c, np.float32) if bias is None else bias.astype(np.float32)))
    return layers
