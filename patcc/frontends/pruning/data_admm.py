"""Data-aware ADMM pattern and connectivity pruning, for users who do have data.

The same constraints and the same auxiliary variables as the data-free
:func:`~patcc.frontends.pruning.admm.admm_prune`, but on the task: all selected 3x3
convolutions at once, the weights following the optimiser on

    task_loss(model(x), y) + sum_n rho/2 (||W_n - Z_pn + U_pn||^2 + ||W_n - Z_cn + U_cn||^2)

over the user's batches, and after every epoch ``Z = project(W + U)``, ``U += W - Z``.
``rho`` follows :meth:`AdmmConfig.rho_at` epoch by epoch. A final hard projection
makes the constraints exact. Then :func:`~patcc.frontends.pruning.masks.masked_retrain`
with ``PruningMasks.from_report`` recovers the accuracy, as after the data-free method.
A model wrapped in DistributedDataParallel trains as usual (DDP averages the gradients).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from patcc.errors import PruningError
from patcc.frontends.pruning.admm_config import AdmmConfig
from patcc.frontends.pruning.distributed import unwrap
from patcc.frontends.pruning.patterns import (
    LayerPruning,
    PruneReport,
    build_pattern_library,
    is_depthwise,
    keep_fraction,
    project_both,
    project_connectivity,
    project_pattern,
    select_convs,
)
from patcc.frontends.pruning.reparam import bake_before_pruning
from patcc.progress import progress_iter


@dataclass
class _Constraints:
    """One layer's auxiliary variables and scaled duals: pattern, and connectivity
    unless the layer is depthwise (``keep`` None)."""

    keep: float | None
    z_pattern: torch.Tensor
    u_pattern: torch.Tensor
    z_conn: torch.Tensor | None
    u_conn: torch.Tensor

    @classmethod
    def start(cls, weight: torch.Tensor, library: np.ndarray, keep: float | None
              ) -> _Constraints:
        return cls(keep, project_pattern(weight, library), torch.zeros_like(weight),
                   None if keep is None else project_connectivity(weight, keep),
                   torch.zeros_like(weight))

    def penalty(self, weight: torch.Tensor, rho: float) -> torch.Tensor:
        total = rho / 2 * (weight - self.z_pattern + self.u_pattern).square().sum()
        if self.z_conn is not None:
            total = total + rho / 2 * (weight - self.z_conn + self.u_conn).square().sum()
        return total

    def update(self, weight: torch.Tensor, library: np.ndarray) -> None:
        """``Z = project(W + U)``, ``U += W - Z``, for each constraint."""
        self.z_pattern = project_pattern(weight + self.u_pattern, library)
        self.u_pattern += weight - self.z_pattern
        if self.keep is not None:
            self.z_conn = project_connectivity(weight + self.u_conn, self.keep)
            self.u_conn += weight - self.z_conn


def admm_prune_on_data(
    model: nn.Module,
    data: Iterable[tuple[torch.Tensor, torch.Tensor]],
    rate: float = 6.0,
    num_patterns: int = 8,
    epochs: int = 24,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    optimiser: torch.optim.Optimizer | None = None,
    lr: float = 1e-3,
    rho: float = 1e-4,
    rho_max: float = 1e-1,
    include_depthwise: bool = True,
    skip_first: bool = False,
    progress: bool = False,
) -> PruneReport:
    """Pattern- and connectivity-prune every 3x3 ``nn.Conv2d`` of ``model`` in place
    with ADMM on the task loss over ``data`` (see the module docstring).

    Args:
        model: trained in place (left in training mode); may be DDP-wrapped.
        data: batches of (inputs, targets), re-iterated every epoch (a DataLoader).
        rate, num_patterns, include_depthwise, skip_first: as for ``admm_prune``.
        epochs: passes over ``data``; ``rho`` grows x10 every quarter of them, from
            ``rho`` up to ``rho_max``.
        loss_fn: defaults to cross-entropy.
        optimiser: defaults to Adam with ``lr`` (on the digits benchmark, SGD at
            lr 1e-2 or 1e-3 and fewer than ~20 epochs leave the weights too far from
            the constraint sets, and the projection collapses the model).

    Returns:
        a :class:`PruneReport` (``error`` is not measured: there is no per-layer
        reconstruction here).
    """
    config = AdmmConfig(epochs=epochs, rho=rho, rho_max=rho_max,
                        rho_every=max(1, epochs // 4))  # checks the numbers too
    keep = keep_fraction(rate)
    inner = unwrap(model)
    convs = select_convs(inner, include_depthwise, skip_first, only_depthwise=False)
    if not convs:
        raise PruningError(f"admm_prune_on_data: no 3x3 nn.Conv2d in {type(inner).__name__}")
    bake_before_pruning(inner, "admm_prune_on_data")
    loss_fn = loss_fn or nn.functional.cross_entropy
    optimiser = optimiser or torch.optim.Adam(model.parameters(), lr=lr)
    with torch.no_grad():
        library = build_pattern_library((conv.weight for _, conv in convs), num_patterns)
        constraints = [_Constraints.start(conv.weight, library,
                                          None if is_depthwise(conv) else keep)
                       for _, conv in convs]
    model.train()
    for epoch in progress_iter(range(config.epochs), progress, "retrain", "epoch"):
        rho = config.rho_at(epoch)
        for inputs, targets in data:
            loss = loss_fn(model(inputs), targets)
            for (_, conv), c in zip(convs, constraints, strict=True):
                loss = loss + c.penalty(conv.weight, rho)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        with torch.no_grad():
            for (_, conv), c in zip(convs, constraints, strict=True):
                c.update(conv.weight, library)
    layers = []
    total_weights = nonzero_weights = 0
    with torch.no_grad():
        for (name, conv), c in zip(convs, constraints, strict=True):
            pruned, ids, kept = project_both(conv.weight.detach(), library, c.keep)
            conv.weight.copy_(pruned)
            ids.setflags(write=False)
            layers.append(LayerPruning(name, kept, ids.size, is_depthwise(conv), ids))
            total_weights += conv.weight.numel()
            nonzero_weights += int(torch.count_nonzero(conv.weight))
    rate_achieved = total_weights / nonzero_weights if nonzero_weights else math.inf
    return PruneReport(library, tuple(layers), rate_achieved)
