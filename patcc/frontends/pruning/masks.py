"""Pruning masks, and masked retraining that keeps pruned weights exactly zero.

A :class:`PruningMasks` maps parameter names to boolean tensors (True = kept). Once
attached to a model (and its optimiser) the pruned entries cannot come back:

- every masked parameter's gradient is multiplied by its mask as it is computed,
  so nothing flows into pruned entries (under DistributedDataParallel too: the hook
  runs before the gradients are averaged);
- after every optimiser step the pruned entries are set to zero again, so neither
  momentum accumulated before pruning, nor weight decay, nor Adam's moments can
  revive them.

:func:`masked_retrain` is a plain training loop over the user's own data that does
both; users with their own loop call ``masks.attach(model, optimiser)`` instead.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from patcc.errors import PruningError
from patcc.frontends.pruning.distributed import unwrap
from patcc.frontends.pruning.patterns import PruneReport, kernel_masks
from patcc.frontends.pruning.reparam import effective_parameters, reparametrised
from patcc.progress import progress_iter


@dataclass
class MaskHandle:
    """What :meth:`PruningMasks.attach` registered; ``remove()`` undoes it."""

    handles: list[Any] = field(default_factory=list)

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()


class PruningMasks:
    """Parameter name -> bool mask of the same shape (True: the weight is kept)."""

    def __init__(self, masks: dict[str, torch.Tensor]) -> None:
        self.masks = {name: mask.detach().bool().clone() for name, mask in masks.items()}

    def __repr__(self) -> str:
        kept = sum(int(m.sum()) for m in self.masks.values())
        total = sum(m.numel() for m in self.masks.values())
        return f"PruningMasks({len(self.masks)} parameters, {kept}/{total} weights kept)"

    def __len__(self) -> int:
        return len(self.masks)

    @classmethod
    def from_model(cls, model: nn.Module,
                   types: tuple[type[nn.Module], ...] = (nn.Conv2d, nn.Linear)
                   ) -> PruningMasks:
        """Masks of the zeros already in ``model``: the weight of every module of
        ``types`` that has at least one weight exactly zero (the weight the model
        computes with, where ``torch.nn.utils.prune`` or ``parametrize`` made it)."""
        model = unwrap(model)
        params = effective_parameters(model)
        masks = {}
        for name, module in model.named_modules():
            key = f"{name}.weight" if name else "weight"
            weight = params.get(key)
            if isinstance(module, types) and weight is not None and bool((weight == 0).any()):
                masks[key] = weight.detach() != 0
        return cls(masks)

    @classmethod
    def from_report(cls, model: nn.Module, report: PruneReport) -> PruningMasks:
        """The exact masks of a pattern pruning (``pattern_prune`` or ``admm_prune``):
        each kept kernel's library pattern, nothing of a removed kernel -- including
        kept positions whose weight happens to be zero."""
        model = unwrap(model)
        return cls({f"{layer.name}.weight": kernel_masks(report.library, layer.pattern_ids)
                    .reshape(model.get_parameter(f"{layer.name}.weight").shape)
                    for layer in report.layers})

    def _parameters(self, model: nn.Module) -> list[tuple[torch.Tensor, torch.Tensor]]:
        params = dict(unwrap(model).named_parameters())
        computed = reparametrised(unwrap(model))
        if any(name in computed for name in self.masks):
            name = next(n for n in self.masks if n in computed)
            raise PruningError(f"{name} is computed by {computed[name]}: masks cannot hold it; "
                               "make it a plain parameter first with "
                               "patcc.pruning.bake_reparametrisations(model)")
        missing = [name for name in self.masks if name not in params]
        if missing:
            raise PruningError(f"masks name parameters the model does not have: "
                               f"{', '.join(missing[:3])}")
        pairs: list[tuple[torch.Tensor, torch.Tensor]] = []
        for name, mask in self.masks.items():
            if params[name].shape != mask.shape:
                raise PruningError(f"mask for {name} is {tuple(mask.shape)}, the parameter "
                                   f"is {tuple(params[name].shape)}")
            pairs.append((params[name], mask.to(params[name].device)))
        return pairs

    def apply(self, model: nn.Module) -> None:
        """Zero every pruned weight of ``model`` in place."""
        with torch.no_grad():
            for param, mask in self._parameters(model):
                param.mul_(mask)

    def attach(self, model: nn.Module, optimiser: torch.optim.Optimizer | None = None
               ) -> MaskHandle:
        """Apply the masks and keep them: gradients masked as they are computed, and
        (given the optimiser) pruned weights zeroed again after each of its steps."""
        self.apply(model)
        pairs = self._parameters(model)
        handle = MaskHandle()
        for param, mask in pairs:
            handle.handles.append(param.register_hook(lambda g, m=mask: g * m))
        if optimiser is not None:
            def reapply(*_: Any) -> None:
                with torch.no_grad():
                    for param, mask in pairs:
                        param.mul_(mask)
            handle.handles.append(optimiser.register_step_post_hook(reapply))
        return handle

    def kept(self, model: nn.Module) -> bool:
        """Whether every pruned weight of ``model`` is exactly zero."""
        return all(not bool(param[~mask].any()) for param, mask in self._parameters(model))


def filter_masks(params: Mapping[str, torch.Tensor], name: str, keep: torch.Tensor
                 ) -> dict[str, torch.Tensor]:
    """Masks keeping the output rows ``keep`` (bool, one per filter) of the layer
    ``name``: its weight and, if it has one, its bias (``params``: named parameters)."""
    masks = {}
    for suffix in ("weight", "bias"):
        param = params.get(f"{name}.{suffix}")
        if param is not None:
            masks[f"{name}.{suffix}"] = keep.view(-1, *[1] * (param.dim() - 1)).expand_as(param)
    return masks


def masked_retrain(
    model: nn.Module,
    masks: PruningMasks,
    data: Iterable[tuple[torch.Tensor, torch.Tensor]],
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    epochs: int = 1,
    optimiser: torch.optim.Optimizer | None = None,
    lr: float = 1e-3,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    progress: bool = False,
) -> list[float]:
    """Train ``model`` on the user's ``data`` with ``masks`` kept (see the module
    docstring); ``model`` may be wrapped in DistributedDataParallel.

    Args:
        model: the pruned model, trained in place (left in training mode).
        masks: e.g. ``PruningMasks.from_report(model, report)``.
        data: batches of (inputs, targets), re-iterated every epoch (a DataLoader).
        loss_fn: defaults to cross-entropy.
        epochs: passes over ``data``.
        optimiser: defaults to SGD with ``lr``, ``momentum`` and ``weight_decay``.

    Returns:
        the mean loss of each epoch.
    """
    if epochs < 1:
        raise PruningError(f"masked_retrain: epochs must be at least 1, got {epochs}")
    loss_fn = loss_fn or nn.functional.cross_entropy
    optimiser = optimiser or torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum,
                                             weight_decay=weight_decay)
    handle = masks.attach(model, optimiser)
    model.train()
    losses = []
    try:
        for _ in progress_iter(range(epochs), progress, "retrain", "epoch"):
            total, count = 0.0, 0
            for inputs, targets in data:
                optimiser.zero_grad()
                loss = loss_fn(model(inputs), targets)
                loss.backward()
                optimiser.step()
                total += float(loss.detach()) * len(inputs)
                count += len(inputs)
            losses.append(total / count if count else math.nan)
    finally:
        handle.remove()
    return losses
