"""Data-free inputs for pruning: random images, optionally matched to the model's
batch-norm statistics.

The user's data never leaves them. Pixels are uniform on 0..255, scaled to 0..1 and
normalised as the model's inputs are; by default they are then optimised so that the
features entering every batch norm have its running mean and variance -- the
statistics of the training data, read from the model alone.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any, cast

import torch
from torch import nn

from patcc.frontends.pruning.admm_config import AdmmConfig
from patcc.progress import progress_bar

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DISTIL_LR = 0.2  # Adam on the normalised pixels


def synthetic_batch(generator: torch.Generator, shape: Sequence[int],
                    mean: Sequence[float] | None = None,
                    std: Sequence[float] | None = None) -> torch.Tensor:
    """Random images of ``shape`` (N, C, H, W): integer pixels uniform on 0..255,
    scaled to 0..1 and normalised per channel (ImageNet's mean and std by default
    for 3 channels)."""
    pixels = torch.randint(0, 256, tuple(shape), generator=generator).float() / 255.0
    channels = shape[1]
    if mean is None and std is None and channels == 3:
        mean, std = IMAGENET_MEAN, IMAGENET_STD
    if mean is not None or std is not None:
        m = torch.tensor(mean if mean is not None else [0.0] * channels).view(1, -1, 1, 1)
        s = torch.tensor(std if std is not None else [1.0] * channels).view(1, -1, 1, 1)
        pixels = (pixels - m) / s
    return pixels


class FoldedBatchNorm(nn.BatchNorm2d):
    """A batch norm whose running statistics are unknown (folded into its scale and
    shift, as in an ONNX model's per-channel affine): inputs are not matched to it."""


def _has_statistics(module: nn.BatchNorm2d) -> bool:
    """Whether ``module`` is a batch norm that has seen data: not folded, and not at
    its initial statistics (mean 0, variance 1 everywhere: an untrained model's,
    which say nothing about any data; on a random-weight ResNet-18, matching them
    made ADMM's output error 0.68 instead of 0.35)."""
    if isinstance(module, FoldedBatchNorm):
        return False
    mean, var = module.running_mean, module.running_var
    if mean is None or var is None:
        return False
    return bool(mean.any()) or not bool((var == 1).all())


def synthetic_inputs(model: nn.Module, shape: Sequence[int], config: AdmmConfig,
                     generator: torch.Generator, progress: bool = False) -> torch.Tensor:
    """``shape[0]`` synthetic images for ``model`` (in eval mode), as ``config.inputs``
    says: uniform pixels, matched to the batch-norm statistics a batch of
    ``config.batch_size`` at a time (``progress``: a bar on stderr)."""
    x = synthetic_batch(generator, shape, config.mean, config.std)
    if config.inputs == "uniform" or not config.distil_steps:
        return x
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d) and _has_statistics(m)]
    if not norms:
        warnings.warn("the model has no batch norm statistics to match the synthetic "
                      "inputs to (batch norms folded into the convolutions, or never "
                      "trained): they stay uniform", stacklevel=2)
        return x
    chunks = x.split(config.batch_size)
    bar = progress_bar(len(chunks) * config.distil_steps, progress, "matching inputs",
                       "step")
    matched = [_match_statistics(model, norms, chunk, config.distil_steps, bar)
               for chunk in chunks]
    if bar is not None:
        bar.close()
    return torch.cat(matched)


def _match_statistics(model: nn.Module, norms: list[nn.BatchNorm2d], x: torch.Tensor,
                      steps: int, bar: Any = None) -> torch.Tensor:
    """Adam on the pixels of ``x``: the per-channel mean and standard deviation of
    every batch norm's input over the batch, against its running ones (normalised by
    the layer's total variance, so every layer counts alike)."""
    terms: list[torch.Tensor] = []

    def hook(module: nn.Module, args: tuple[torch.Tensor, ...], _: Any) -> None:
        bn: nn.BatchNorm2d = module  # type: ignore[assignment]
        feature = args[0]
        want_var = cast(torch.Tensor, bn.running_var) + bn.eps
        mean = feature.mean(dim=(0, 2, 3))
        std = (feature.var(dim=(0, 2, 3), unbiased=False) + bn.eps).sqrt()
        terms.append(((mean - cast(torch.Tensor, bn.running_mean)).square().sum()
                      + (std - want_var.sqrt()).square().sum()) / want_var.sum())

    x = x.clone().requires_grad_(True)
    optimiser = torch.optim.Adam([x], lr=DISTIL_LR)
    handles = [bn.register_forward_hook(hook) for bn in norms]
    try:
        for _ in range(steps):
            terms.clear()
            model(x)
            (x.grad,) = torch.autograd.grad(torch.stack(terms).sum(), [x])
            optimiser.step()
            if bar is not None:
                bar.update(1)
    finally:
        for handle in handles:
            handle.remove()
    return x.detach()
