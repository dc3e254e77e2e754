"""Data-free ADMM pattern and connectivity pruning, layer by layer, on synthetic inputs.

The user's data never leaves them: inputs are random images (pixels uniform on
0..255, then the model's own input normalisation), by default then optimised so that
the features entering every batch norm have its running mean and variance -- the
statistics of the training data, read from the model alone. A pool of such images is
drawn once. For each selected 3x3 convolution ``n``, in the order the model runs
them, ADMM minimises

    || unit_n(W_n, X_{n-1}) - X'_n ||^2   (mean over elements and batch)

where ``unit_n`` is the convolution with the batch norm and activation that directly
follow it (found in the ``torch.fx`` graph), ``X_{n-1}`` is the convolution's input in
the model being pruned (earlier layers already pruned, so their error is
compensated) and ``X'_n`` is the original model's output of the unit. The constraints
-- every kernel inside one library pattern, and at most ``beta_n`` kernels kept --
each get an auxiliary variable ``Z`` and a scaled dual ``U``; the weights follow SGD on

    loss + rho/2 ||W - Z_p + U_p||^2 + rho/2 ||W - Z_c + U_c||^2

and after every epoch ``Z = project(W + U)``, ``U += W - Z``. ``rho`` starts at 1e-4 and
grows x10 every 11 epochs up to 1e-1. A final hard projection makes the constraints
exact, and (by default) masked SGD on the same objective refits the weights kept.
Depthwise convolutions get the pattern constraint only. :meth:`AdmmConfig.published`
is the recipe as published (uniform inputs, lr 1e-3, projection last).

Under ``torchrun`` (``torch.distributed`` initialised) every process draws its own
pool of synthetic inputs and the gradients are averaged, so all processes keep identical
weights and finish with the same model.

The parts live beside this loop: the synthetic inputs in ``synthetic.py``, the units
and what they capture in ``units.py``, the projections in ``patterns.py``, the
``torch.distributed`` helpers in ``distributed.py``, the knobs in ``admm_config.py``.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from torch import fx, nn

from patcc.errors import PruningError
from patcc.frontends.pruning.admm_config import AdmmConfig
from patcc.frontends.pruning.distributed import average_gradients, rank
from patcc.frontends.pruning.fxgraph import trace
from patcc.frontends.pruning.patterns import (
    LayerPruning,
    PruneReport,
    build_pattern_library,
    is_depthwise,
    keep_fraction,
    kernel_masks,
    project_both,
    project_connectivity,
    project_pattern,
    select_convs,
)
from patcc.frontends.pruning.reparam import bake_before_pruning
from patcc.frontends.pruning.synthetic import synthetic_inputs
from patcc.frontends.pruning.units import (
    Unit,
    find_units,
    node_values,
    relative_error,
    unit_output,
)
from patcc.progress import progress_bar

CACHE_BYTES = 2 << 30
"""The largest per-layer cache of (unit input, target) pairs over the input pool;
above it they are recomputed for every batch."""


def _sample(gm: fx.GraphModule, gm_original: fx.GraphModule, unit: Unit,
            target_unit: Unit, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For a batch ``x``: the unit's input in the model being pruned, and what the
    original model's unit outputs (the target)."""
    with torch.no_grad():
        (inp,) = node_values(gm, x, [unit.conv_node.args[0]])  # type: ignore[list-item]
        (target,) = node_values(gm_original, x, [target_unit.end])
    return inp, target


def _layer_data(gm: fx.GraphModule, gm_original: fx.GraphModule, unit: Unit,
                target_unit: Unit, pool: torch.Tensor, batch_size: int,
                generator: torch.Generator
                ) -> Callable[[], tuple[torch.Tensor, torch.Tensor]]:
    """A sampler of (unit input, target) batches over the pool of inputs. The pairs of
    the whole pool are computed once when they fit :data:`CACHE_BYTES`, so a step
    costs the unit alone rather than two runs of the model up to it."""
    chunks = pool.split(batch_size)
    first = _sample(gm, gm_original, unit, target_unit, chunks[0])
    per_image = sum(t[0].numel() * t.element_size() for t in first)
    if per_image * pool.shape[0] > CACHE_BYTES:
        def recompute() -> tuple[torch.Tensor, torch.Tensor]:
            pick = torch.randint(0, pool.shape[0], (batch_size,), generator=generator)
            return _sample(gm, gm_original, unit, target_unit, pool[pick])
        return recompute
    pairs = [first] + [_sample(gm, gm_original, unit, target_unit, c) for c in chunks[1:]]
    inputs = torch.cat([p[0] for p in pairs])
    targets = torch.cat([p[1] for p in pairs])

    def cached() -> tuple[torch.Tensor, torch.Tensor]:
        pick = torch.randint(0, pool.shape[0], (batch_size,), generator=generator)
        return inputs[pick], targets[pick]
    return cached


def _trace(model: nn.Module) -> fx.GraphModule:
    return trace(model, "admm_prune")


def admm_prune(
    model: nn.Module,
    input_shape: Sequence[int],
    rate: float = 6.0,
    num_patterns: int = 8,
    config: AdmmConfig | None = None,
    include_depthwise: bool = True,
    skip_first: bool = False,
    progress: bool = False,
    on_layer: Callable[[str, int, int], None] | None = None,
) -> PruneReport:
    """Pattern- and connectivity-prune every 3x3 ``nn.Conv2d`` of ``model`` in place
    with data-free ADMM (see the module docstring), then project exactly.

    Args:
        model: the model (``torch.fx``-traceable), changed in place; it is left in
            the training mode it came in.
        input_shape: one input's shape ``(C, H, W)`` or ``(N, C, H, W)`` (N ignored).
        rate: target compression of the non-depthwise 3x3 layers (weights / non-zero
            weights); 2.25 is patterns alone, 6 keeps 37.5% of kernels.
        num_patterns: the largest pattern library, built from the original weights.
        config: ADMM's knobs (:class:`AdmmConfig`).
        include_depthwise: also give depthwise 3x3 convolutions patterns.
        skip_first: leave the first 3x3 convolution dense.
        progress: a progress bar on stderr.
        on_layer: called with (layer name, index, count) as each layer starts.

    Returns:
        a :class:`PruneReport` whose layers carry ``error``: the relative
        reconstruction error of each unit on fresh synthetic inputs after pruning.

    Raises:
        PruningError: for a rate or library size out of range, a model with no 3x3
            convolution, or one torch.fx cannot trace.
    """
    config = config or AdmmConfig()
    keep = keep_fraction(rate)
    shape = tuple(input_shape)[-3:]
    if len(shape) != 3:
        raise PruningError(f"admm_prune: input_shape must be (C, H, W), got {tuple(input_shape)}")
    selected = select_convs(model, include_depthwise, skip_first, only_depthwise=False)
    if not selected:
        raise PruningError(f"admm_prune: no 3x3 nn.Conv2d in {type(model).__name__}")
    bake_before_pruning(model, "admm_prune")
    was_training = model.training
    model.eval()
    original = copy.deepcopy(model).eval()
    try:
        return _admm(model, original, dict(selected), shape, keep, num_patterns, config,
                     progress, on_layer)
    finally:
        model.train(was_training)


def _admm(model: nn.Module, original: nn.Module, convs: dict[str, nn.Conv2d],
          shape: tuple[int, ...], keep: float, num_patterns: int, config: AdmmConfig,
          progress: bool, on_layer: Callable[[str, int, int], None] | None) -> PruneReport:
    gm = _trace(model)
    gm_original = _trace(original)
    units = find_units(gm, convs)
    original_units = {u.name: u for u in find_units(gm_original, dict(
        (name, original.get_submodule(name)) for name in convs))}  # type: ignore[misc]
    with torch.no_grad():
        library = build_pattern_library((u.conv.weight for u in units), num_patterns)
    generator = torch.Generator().manual_seed(config.seed * 1009 + rank())
    pool = synthetic_inputs(original, ((config.pool_batches + 1) * config.batch_size, *shape),
                            config, generator, progress)
    pool, held_out = pool[config.batch_size:], pool[:config.batch_size]

    steps = len(units) * config.epochs * config.iterations
    bar = progress_bar(steps, progress, "admm", "step")
    layers = []
    total_weights = nonzero_weights = 0
    for index, unit in enumerate(units):
        if on_layer is not None:
            on_layer(unit.name, index, len(units))
        target_unit = original_units[unit.name]
        draw = _layer_data(gm, gm_original, unit, target_unit, pool, config.batch_size,
                           generator)
        layer_keep = None if is_depthwise(unit.conv) else keep
        weight = unit.conv.weight.detach().clone().requires_grad_(True)
        bias = None if unit.conv.bias is None else \
            unit.conv.bias.detach().clone().requires_grad_(True)
        params = [p for p in (weight, bias) if p is not None]
        optimiser = torch.optim.SGD(params, lr=config.lr, momentum=config.momentum)
        with torch.no_grad():
            z_pattern = project_pattern(weight, library)
            u_pattern = torch.zeros_like(weight)
            z_conn = project_connectivity(weight, layer_keep) if layer_keep is not None \
                else None
            u_conn = torch.zeros_like(weight)
        for epoch in range(config.epochs):
            rho = config.rho_at(epoch)
            for _ in range(config.iterations):
                inp, target = draw()
                out = unit_output(gm, unit, inp, weight, bias)
                loss = F.mse_loss(out, target)
                loss = loss + rho / 2 * (weight - z_pattern + u_pattern).square().sum()
                if z_conn is not None:
                    loss = loss + rho / 2 * (weight - z_conn + u_conn).square().sum()
                optimiser.zero_grad()
                loss.backward()
                average_gradients(params)
                optimiser.step()
                if bar is not None:
                    bar.update(1)
            with torch.no_grad():
                z_pattern = project_pattern(weight + u_pattern, library)
                u_pattern += weight - z_pattern
                if z_conn is not None:
                    z_conn = project_connectivity(weight + u_conn, layer_keep)  # type: ignore[arg-type]
                    u_conn += weight - z_conn
        with torch.no_grad():
            pruned, ids, kept = project_both(weight.detach(), library, layer_keep)
        if config.refit_epochs:
            pruned = _refit(gm, unit, pruned, ids, library, bias, config, draw)
        with torch.no_grad():
            unit.conv.weight.copy_(pruned)
            if bias is not None:
                unit.conv.bias.copy_(bias.detach())  # type: ignore[union-attr]
            error = relative_error(gm, gm_original, unit, target_unit, held_out)
        ids.setflags(write=False)
        layers.append(LayerPruning(unit.name, kept, ids.size, is_depthwise(unit.conv), ids,
                                   error))
        total_weights += unit.conv.weight.numel()
        nonzero_weights += int(torch.count_nonzero(unit.conv.weight))
    if bar is not None:
        bar.close()
    rate_achieved = total_weights / nonzero_weights if nonzero_weights else math.inf
    return PruneReport(library, tuple(layers), rate_achieved)


def _refit(gm: fx.GraphModule, unit: Unit, pruned: torch.Tensor, ids: np.ndarray,
           library: np.ndarray, bias: torch.Tensor | None, config: AdmmConfig,
           draw: Callable[[], tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """Masked SGD on the same objective after the hard projection: the kept weights
    (each kernel's pattern, nothing of a removed kernel) adjust to what was cut."""
    mask = kernel_masks(library, ids).reshape(pruned.shape)
    weight = pruned.clone().requires_grad_(True)
    params = [p for p in (weight, bias) if p is not None]
    optimiser = torch.optim.SGD(params, lr=config.lr, momentum=config.momentum)
    for _ in range(config.refit_epochs * config.iterations):
        inp, target = draw()
        loss = F.mse_loss(unit_output(gm, unit, inp, weight, bias), target)
        optimiser.zero_grad()
        loss.backward()
        weight.grad *= mask  # type: ignore[operator]
        average_gradients(params)
        optimiser.step()
        with torch.no_grad():
            weight *= mask
    return weight.detach()


def reconstruction_errors(model: nn.Module, original: nn.Module, input_shape: Sequence[int],
                          names: Iterable[str], seed: int = 1, batch_size: int = 8,
                          config: AdmmConfig | None = None) -> dict[str, float]:
    """Relative reconstruction error of each named 3x3 conv unit of ``model`` (its
    own, pruned, inputs) against ``original``'s, on fresh synthetic inputs drawn as
    ``config.inputs`` says, both in eval mode (batch norms on their running
    statistics)."""
    config = config or AdmmConfig()
    names = list(names)
    modes = (model.training, original.training)
    model.eval()
    original.eval()
    try:
        return _reconstruction_errors(model, original, input_shape, names, seed, batch_size,
                                      config)
    finally:
        model.train(modes[0])
        original.train(modes[1])


def _reconstruction_errors(model: nn.Module, original: nn.Module, input_shape: Sequence[int],
                           names: list[str], seed: int, batch_size: int, config: AdmmConfig
                           ) -> dict[str, float]:
    gm, gm_original = _trace(model), _trace(original)
    units = {u.name: u for u in find_units(gm, {n: model.get_submodule(n) for n in names})}  # type: ignore[misc]
    targets = {u.name: u for u in find_units(gm_original, {
        n: original.get_submodule(n) for n in names})}  # type: ignore[misc]
    generator = torch.Generator().manual_seed(seed)
    x = synthetic_inputs(original, (batch_size, *tuple(input_shape)[-3:]), config, generator)
    with torch.no_grad():
        return {n: relative_error(gm, gm_original, units[n], targets[n], x) for n in names}
