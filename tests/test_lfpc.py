"""LFPC: the learnt per-layer criterion (``patcc/frontends/pruning/lfpc.py``)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from patcc.errors import PruningError
from patcc.frontends.pruning import FilterSelection, lfpc_search, select_filters


def model_and_data(seed: int = 0) -> tuple[nn.Module, list[tuple[torch.Tensor, torch.Tensor]]]:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(8, 4)).eval()
    g = torch.Generator().manual_seed(seed + 1)
    data = []
    for _ in range(4):
        x = torch.randn(32, 3, 6, 6, generator=g)
        with torch.no_grad():
            data.append((x, model(x).argmax(dim=1)))  # the dense model's own answers
    return model, data


def masked_loss(model: nn.Module, selection: FilterSelection,
                data: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    keep = torch.ones(8)
    keep[torch.as_tensor(selection.pruned["0"], dtype=torch.long)] = 0
    handle = model[0].register_forward_hook(lambda _m, _i, out: out * keep.view(1, -1, 1, 1))
    try:
        with torch.no_grad():
            return sum(float(nn.functional.cross_entropy(model(x), y)) for x, y in data)
    finally:
        handle.remove()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_lfpc_picks_the_criterion_with_the_lowest_validation_loss(seed: int) -> None:
    model, data = model_and_data(seed)
    before = [p.detach().clone() for p in model.parameters()]
    selection, (choice,) = lfpc_search(model, data, 0.5, epochs=40, lr=0.1)
    losses = {c: masked_loss(model, select_filters(model, 0.5, c), data)
              for c in ("l1", "l2", "fpgm")}
    best = min(losses.values())
    assert losses[choice.criterion] <= best + 1e-6, (choice, losses)
    assert sorted(selection.pruned["0"]) == sorted(
        select_filters(model, 0.5, choice.criterion).pruned["0"])
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert abs(sum(choice.probabilities.values()) - 1) < 1e-3


def test_flops_penalty_pushes_towards_the_highest_ratio() -> None:
    model, data = model_and_data()
    _, (cheap,) = lfpc_search(model, data, 0.5, ratios=[0.25, 0.5, 0.75], flops_weight=100,
                              epochs=20, input_shape=(3, 6, 6))
    assert cheap.ratio == 0.75
    _, (accurate,) = lfpc_search(model, data, 0.5, ratios=[0.25, 0.5, 0.75], epochs=40,
                                 lr=0.1)
    losses = {(c, r): masked_loss(model, select_filters(model, r, c), data)
              for c in ("l1", "l2", "fpgm") for r in (0.25, 0.5, 0.75)}
    # Without the penalty the loss alone chooses, among every criterion and ratio.
    assert losses[accurate.criterion, accurate.ratio] <= min(losses.values()) + 1e-6


def test_lfpc_input_errors() -> None:
    model, data = model_and_data()
    with pytest.raises(PruningError, match="needs input_shape"):
        lfpc_search(model, data, 0.5, flops_weight=1.0)
    with pytest.raises(PruningError, match=r"ratio must be in \[0, 1\)"):
        lfpc_search(model, data, 1.2)
    with pytest.raises(PruningError, match="no prunable convolution"):
        lfpc_search(nn.Sequential(nn.Linear(3, 2)), data, 0.5)
