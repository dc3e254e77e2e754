"""Pruning masks and masked retraining (``patcc/frontends/pruning/masks.py``)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from patcc.errors import PruningError
from patcc.frontends.pruning import PruningMasks, masked_retrain, pattern_prune


def small_net(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))


def toy_data(n: int = 64, seed: int = 1) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 8, 8, generator=g)
    y = (x[:, 0].mean(dim=(1, 2)) > 0).long() + 2 * (x[:, 1].mean(dim=(1, 2)) > 0).long()
    return [(x[i:i + 16], y[i:i + 16]) for i in range(0, n, 16)]


@pytest.mark.parametrize("make_optimiser", [
    lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=1e-3),
    lambda p: torch.optim.Adam(p, lr=1e-2, weight_decay=1e-3),
], ids=["sgd-momentum", "adam"])
def test_pruned_weights_stay_zero_even_with_old_momentum(make_optimiser) -> None:  # type: ignore[no-untyped-def]
    model = small_net()
    data = toy_data()
    optimiser = make_optimiser(model.parameters())
    # Train unpruned first: the optimiser's state (momentum, Adam moments) now holds
    # non-zero values for weights pruning is about to remove.
    masked_retrain(model, PruningMasks({}), data, optimiser=optimiser)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    report = pattern_prune(model, rate=6.0)
    masks = PruningMasks.from_report(model, report)
    losses = masked_retrain(model, masks, data, epochs=3, optimiser=optimiser)
    assert masks.kept(model)
    for name, mask in masks.masks.items():
        weight = dict(model.named_parameters())[name]
        assert not weight[~mask].any()
        assert not torch.equal(weight[mask], before[name][mask])  # the kept ones trained
    assert losses[-1] < losses[0]


def test_masks_from_zeros_and_from_a_report_agree() -> None:
    model = small_net()
    report = pattern_prune(model, rate=4.0)
    exact = PruningMasks.from_report(model, report)
    seen = PruningMasks.from_model(model)
    assert set(seen.masks) == set(exact.masks) == {"0.weight", "2.weight"}
    for name in exact.masks:
        assert torch.equal(seen.masks[name], exact.masks[name])
    kept = sum(int(m.sum()) for m in exact.masks.values())
    total = sum(m.numel() for m in exact.masks.values())
    assert repr(exact) == f"PruningMasks(2 parameters, {kept}/{total} weights kept)"


def test_attach_masks_gradients_and_detaches() -> None:
    model = small_net()
    mask = torch.zeros_like(model[0].weight, dtype=torch.bool)
    mask[:, :, 1, 1] = True
    masks = PruningMasks({"0.weight": mask})
    handle = masks.attach(model)
    model(torch.randn(2, 3, 8, 8)).sum().backward()
    assert not model[0].weight.grad[~mask].any() and model[0].weight.grad[mask].any()
    handle.remove()
    model.zero_grad()
    model(torch.randn(2, 3, 8, 8)).sum().backward()
    assert model[0].weight.grad[~mask].abs().sum() > 0  # unhooked: gradients flow again


def test_masks_that_do_not_fit_the_model() -> None:
    model = small_net()
    with pytest.raises(PruningError, match="does not have: nope.weight"):
        PruningMasks({"nope.weight": torch.ones(1, dtype=torch.bool)}).apply(model)
    with pytest.raises(PruningError, match=r"mask for 0.weight is \(2,\)"):
        PruningMasks({"0.weight": torch.ones(2, dtype=torch.bool)}).apply(model)
    with pytest.raises(PruningError, match="epochs must be at least 1"):
        masked_retrain(model, PruningMasks({}), toy_data(), epochs=0)
