"""Deterministic weights for the reference architectures.

The compiler is tested on untrained networks, so the weights only have to be
reproducible and numerically sensible: torchvision's initialisation for convolutions
and linear layers, and non-identity batch-norm parameters and statistics so that
batch-norm folding is really exercised.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run the body with torch's global CPU generator seeded to ``seed``.

    Module constructors draw their default initialisation from the global generator;
    forking it keeps the caller's random stream untouched by a model build.

    Args:
        seed: the seed for the body.

    Yields:
        nothing; the caller's generator state is restored on exit.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def init_like_torchvision(module: nn.Module) -> None:
    """Initialise convolutions and linear layers the way torchvision's models do.

    Convolutions get Kaiming-normal weights (fan-out, ReLU gain) and zero biases;
    linear layers get N(0, 0.01) weights and zero biases. Draws from the global
    generator, so call it inside :func:`seeded`.

    Args:
        module: the model, changed in place.
    """
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d):
            nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
        elif isinstance(layer, nn.Linear):
            nn.init.normal_(layer.weight, 0.0, 0.01)
            nn.init.zeros_(layer.bias)


@torch.no_grad()
def randomize_batchnorm(
    module: nn.Module, seed: int, input_shape: tuple[int, ...] | None = None
) -> None:
    """Give every batch-norm layer non-identity affine parameters and running statistics.

    Each layer, in ``modules()`` order, gets weight ~ U(0.5, 1.5) and bias ~ N(0, 0.1).
    With ``input_shape``, the running statistics are then *measured*: the model is run
    once on an N(0, 1) input of that shape with its batch norms in training mode, so
    every batch norm sees (and in eval mode undoes) the mean and variance it really
    gets. Without it they are drawn: running_mean ~ N(0, 0.1), running_var ~
    U(0.5, 2.0).

    Measured statistics matter for deep networks: with drawn ones nothing re-centres
    and re-scales the activations, and in MobileNetV2 (whose depthwise convolutions
    shrink the signal) the output stops depending on the input at all.

    Args:
        module: the model, changed in place.
        seed: seed of a private generator, so the result does not depend on (or
            disturb) torch's global random state.
        input_shape: the model's input shape, to measure statistics with.
    """
    generator = torch.Generator().manual_seed(seed)
    norms = [layer for layer in module.modules() if isinstance(layer, _BatchNorm)]
    for layer in norms:
        n = layer.num_features
        if layer.affine:
            layer.weight.copy_(_uniform(generator, n, 0.5, 1.5))
            layer.bias.copy_(0.1 * torch.randn(n, generator=generator))
        mean, var = layer.running_mean, layer.running_var
        if mean is not None and var is not None and input_shape is None:
            mean.copy_(0.1 * torch.randn(n, generator=generator))
            var.copy_(_uniform(generator, n, 0.5, 2.0))
    if input_shape is not None and norms:
        example = torch.randn(input_shape, generator=generator, dtype=torch.float64)
        _measure_running_statistics(module, norms, example)


def _uniform(generator: torch.Generator, n: int, low: float, high: float) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator)


def _measure_running_statistics(
    module: nn.Module, norms: list[_BatchNorm], example: torch.Tensor
) -> None:
    # Measured in float64 on a copy, then rounded: the float32 statistics then do not
    # depend on the thread count's effect on the order of reductions.
    probe = copy.deepcopy(module).double().eval()
    probe_norms = [layer for layer in probe.modules() if isinstance(layer, _BatchNorm)]
    for layer in probe_norms:
        layer.reset_running_stats()
        layer.momentum = None  # cumulative average: after one batch, exactly its statistics
        layer.train()
    # One thread: on a busy machine torch's thread pool made this single small pass
    # (float64 has no oneDNN kernels) take 30 s instead of 0.1 s for MobileNetV2.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        probe(example)
    finally:
        torch.set_num_threads(threads)
    for layer, measured in zip(norms, probe_norms, strict=True):
        for name in ("running_mean", "running_var"):
            target, source = getattr(layer, name), getattr(measured, name)
            if target is not None and source is not None:
                target.copy_(source)


ModelT = TypeVar("ModelT", bound=nn.Module)


def build_seeded(factory: Callable[[], ModelT], seed: int,
                 input_shape: tuple[int, ...]) -> ModelT:
    """Construct ``factory()`` under ``seed`` with torchvision's initialisation and
    BatchNorm statistics measured on ``input_shape``; returns it in eval mode."""
    with seeded(seed):
        model = factory()
        init_like_torchvision(model)
    randomize_batchnorm(model, seed, input_shape)
    return model.eval()
