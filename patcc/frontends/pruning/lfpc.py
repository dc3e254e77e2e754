"""LFPC: learning, per layer, which filter pruning criterion to use.

Every prunable convolution (groups 1) gets a sampler over candidates -- each a
criterion of :data:`CRITERIA` (L1, L2, FPGM by default) at a pruning ratio (the
target, and optionally others) -- with learnable logits. Each candidate is a binary
mask over the layer's filters. During search the layer's output channels are scaled
by the Gumbel-softmax mixture of its candidates' masks, and the logits alone are
trained (the model's weights are frozen) on the user's validation loss plus a FLOPs
penalty: ``flops_weight`` times the expected share of the convolutions' MACs kept.
Afterwards each layer takes its most likely candidate. With one ratio the penalty is
the same for every candidate and only the loss chooses.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from patcc.errors import PruningError
from patcc.frontends.pruning.filters import (
    FilterSelection,
    check_ratio,
    filter_scores,
    filters_to_prune,
    prunable_convs,
)


@dataclass(frozen=True)
class LfpcChoice:
    """What the search settled on for one layer, and its final probabilities."""

    layer: str
    criterion: str
    ratio: float
    probabilities: dict[str, float]  # "criterion@ratio" -> probability


def lfpc_search(
    model: nn.Module,
    data: Iterable[tuple[torch.Tensor, torch.Tensor]],
    ratio: float,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    criteria: Sequence[str] = ("l1", "l2", "fpgm"),
    ratios: Sequence[float] | None = None,
    flops_weight: float = 0.0,
    epochs: int = 5,
    lr: float = 0.05,
    tau: float = 1.0,
    seed: int = 0,
    input_shape: Sequence[int] | None = None,
) -> tuple[FilterSelection, list[LfpcChoice]]:
    """Learn each layer's criterion (and ratio, among ``ratios``) on ``data``, the
    user's validation batches; the model is not changed.

    Args:
        ratio: the pruning ratio, the only candidate ratio unless ``ratios`` is given.
        flops_weight: weight of the expected kept MAC share in the search loss; needs
            ``input_shape`` (C, H, W) to count MACs.
        epochs: passes over ``data``; ``lr`` the logits' Adam step; ``tau`` the
            Gumbel-softmax temperature.

    Returns:
        the :class:`FilterSelection` of the chosen candidates (criterion ``"lfpc"``)
        and one :class:`LfpcChoice` per layer.
    """
    loss_fn = loss_fn or F.cross_entropy
    ratios = [check_ratio(r) for r in (ratios or [ratio])]
    check_ratio(ratio)
    if flops_weight and input_shape is None:
        raise PruningError("lfpc_search: flops_weight needs input_shape to count MACs")
    convs = prunable_convs(model)
    if not convs:
        raise PruningError(f"lfpc_search: no prunable convolution in {type(model).__name__}")
    names = [f"{c}@{r:g}" for c in criteria for r in ratios]
    masks: dict[str, torch.Tensor] = {}
    kept_share: dict[str, torch.Tensor] = {}
    for name, conv in convs:
        scores = {c: filter_scores(conv.weight, c) for c in criteria}
        rows = []
        for c in criteria:
            for r in ratios:
                keep = np.ones(conv.out_channels, dtype=np.float32)
                keep[filters_to_prune(scores[c], r)] = 0
                rows.append(keep)
        masks[name] = torch.from_numpy(np.stack(rows))  # (candidates, filters)
        kept_share[name] = masks[name].mean(dim=1)
    macs = _conv_macs(model, input_shape) if flops_weight else {}
    total_macs = sum(macs.values()) or 1
    generator = torch.Generator().manual_seed(seed)
    logits = {name: torch.zeros(len(names), requires_grad=True) for name, _ in convs}
    optimiser = torch.optim.Adam(list(logits.values()), lr=lr)
    weights: dict[str, torch.Tensor] = {}

    def scale(name: str) -> Callable[[nn.Module, object, torch.Tensor], torch.Tensor]:
        def hook(_: nn.Module, __: object, out: torch.Tensor) -> torch.Tensor:
            mix = weights[name] @ masks[name]  # soft keep factor per filter
            return out * mix.view(1, -1, *[1] * (out.dim() - 2))
        return hook

    handles = [conv.register_forward_hook(scale(name)) for name, conv in convs]
    was_training = model.training
    frozen = [(p, p.requires_grad) for p in model.parameters()]
    model.eval()
    for p, _ in frozen:
        p.requires_grad_(False)
    try:
        for _ in range(epochs):
            for inputs, targets in data:
                for name in logits:
                    gumbel = -torch.log(-torch.log(
                        torch.rand(len(names), generator=generator).clamp(1e-9, 1 - 1e-9)))
                    weights[name] = F.softmax((logits[name] + gumbel) / tau, dim=0)
                loss = loss_fn(model(inputs), targets)
                if flops_weight:
                    expected = sum(macs[n] * (weights[n] @ kept_share[n]) for n in logits)
                    loss = loss + flops_weight * expected / total_macs
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
    finally:
        for handle in handles:
            handle.remove()
        for p, requires in frozen:
            p.requires_grad_(requires)
        model.train(was_training)
    choices, pruned = [], {}
    for name, _ in convs:
        probs = F.softmax(logits[name].detach(), dim=0)
        best = int(torch.argmax(probs))
        criterion, chosen = names[best].split("@")
        pruned[name] = np.flatnonzero(masks[name][best].numpy() == 0)
        choices.append(LfpcChoice(name, criterion, float(chosen),
                                  {n: round(float(p), 4) for n, p in zip(names, probs,
                                                                         strict=True)}))
    return FilterSelection("lfpc", ratio, pruned), choices


def _conv_macs(model: nn.Module, input_shape: Sequence[int] | None) -> dict[str, int]:
    """MACs of each prunable convolution for one input of ``input_shape``."""
    assert input_shape is not None
    macs: dict[str, int] = {}
    handles = []
    for name, conv in prunable_convs(model):
        def hook(module: nn.Module, _: object, out: torch.Tensor, name: str = name) -> None:
            c = module
            assert isinstance(c, nn.Conv2d)
            macs[name] = out[0].numel() * c.in_channels * math.prod(c.kernel_size)
        handles.append(conv.register_forward_hook(hook))
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, *tuple(input_shape)[-3:]))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return macs
