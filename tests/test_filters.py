"""Filter pruning criteria and schedules (``patcc/frontends/pruning/filters.py``)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from patcc.errors import PruningError
from patcc.frontends.pruning import (
    SoftFilterPruning,
    asfp_schedule,
    filter_scores,
    filters_to_prune,
    gradual_magnitude_schedule,
    hard_filter_prune,
    magnitude_masks,
    masked_retrain,
    select_filters,
)


def net(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 10, 3, padding=1), nn.BatchNorm2d(10), nn.ReLU(),
                         nn.Conv2d(10, 6, 3, padding=1, groups=2), nn.ReLU(),
                         nn.Conv2d(6, 8, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(8, 3))


def brute_force_geometric_median_ranking(weight: np.ndarray) -> list[int]:
    """Filters ordered by their summed distance to all others, by plain loops."""
    filters = weight.reshape(len(weight), -1).astype(np.float64)
    sums = []
    for i, f in enumerate(filters):
        total = 0.0
        for g in filters:
            total += math.sqrt(sum((a - b) ** 2 for a, b in zip(f, g, strict=True)))
        sums.append((total, i))
    return [i for _, i in sorted(sums)]


@settings(max_examples=30, deadline=None)
@given(st.integers(2, 9), st.integers(1, 3), st.integers(0, 2**31 - 1),
       st.sampled_from([0.1, 0.3, 0.5, 0.75]))
def test_fpgm_prunes_the_filters_nearest_the_geometric_median(
        filters: int, channels: int, seed: int, ratio: float) -> None:
    weight = np.random.default_rng(seed).standard_normal((filters, channels, 3, 3))
    pruned = filters_to_prune(filter_scores(torch.from_numpy(weight), "fpgm"), ratio)
    count = min(filters - 1, math.floor(round(ratio * filters, 9)))
    assert sorted(pruned) == sorted(brute_force_geometric_median_ranking(weight)[:count])


def test_norm_and_batchnorm_criteria() -> None:
    w = torch.tensor([[1.0, -1.0], [0.5, 0.5], [3.0, 0.0], [-0.1, 2.0]])
    assert np.allclose(filter_scores(w, "l1"), [2.0, 1.0, 3.0, 2.1])
    assert np.allclose(filter_scores(w, "l2"), [math.sqrt(2), math.sqrt(0.5), 3.0,
                                                math.sqrt(4.01)])
    assert list(filters_to_prune(filter_scores(w, "l1"), 0.5)) == [0, 1]
    assert list(filters_to_prune(np.zeros(4), 0.5)) == [0, 1]  # ties: lower index first
    assert list(filters_to_prune(np.zeros(3), 0.99)) == [0, 1]  # one filter always stays
    model = net()
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([5, -0.1, 3, 0.2, -4, 1, 2, 0.3, 6, 7.0]))
    selection = select_filters(model, 0.3, "bn", layers=["0"])
    assert list(selection.pruned["0"]) == [1, 3, 7]  # the three smallest |gamma|
    with pytest.raises(PruningError, match="no BatchNorm2d directly after '5'"):
        select_filters(model, 0.3, "bn", layers=["5"])


def test_select_filters_skips_grouped_convs_and_checks_its_input() -> None:
    model = net()
    assert set(select_filters(model, 0.5).pruned) == {"0", "5"}
    with pytest.raises(PruningError, match="groups == 1"):
        select_filters(model, 0.5, layers=["3"])
    with pytest.raises(PruningError, match=r"ratio must be in \[0, 1\)"):
        select_filters(model, 1.0)
    with pytest.raises(PruningError, match="unknown filter criterion 'l3'"):
        select_filters(model, 0.5, "l3")


@pytest.mark.parametrize("ratio, epochs, d", [(0.3, 100, 0.125), (0.4, 90, 0.125),
                                              (0.5, 10, 0.25)])
def test_asfp_schedule_passes_through_its_three_points(ratio: float, epochs: int,
                                                       d: float) -> None:
    schedule = asfp_schedule(ratio, epochs, d)
    assert schedule.k != 0 and schedule.k > 0
    assert schedule(0) == pytest.approx(0.0, abs=1e-9)
    assert schedule(d * epochs) == pytest.approx(0.75 * ratio, rel=1e-9)
    assert schedule(epochs) == pytest.approx(ratio, rel=1e-9)
    values = [schedule(e) for e in range(epochs + 1)]
    assert all(b > a for a, b in itertools.pairwise(values))  # rising, levelling off


def test_asfp_schedule_without_a_curve() -> None:
    with pytest.raises(PruningError, match="try a smaller d"):
        asfp_schedule(0.4, 100, d=0.8)  # 3/4 of the way at 80% of training: k would be 0
    with pytest.raises(PruningError, match="below the target"):
        asfp_schedule(0.4, 100, start=0.5)


def test_soft_filter_pruning_lets_filters_train_back() -> None:
    model = net()
    with torch.no_grad():  # positive BN shifts: a zeroed channel still passes the ReLU,
        model[1].bias.fill_(0.5)  # so gradients reach its filter
    sfp = SoftFilterPruning(model, asfp_schedule(0.5, 4, d=0.25), "l2", layers=["0"])
    data = [(torch.randn(8, 3, 6, 6), torch.randint(0, 3, (8,))) for _ in range(2)]
    from patcc.frontends.pruning import PruningMasks

    counts = []
    for epoch in range(1, 5):
        masked_retrain(model, PruningMasks({}), data, lr=0.1)
        zeroed = sfp.step(epoch).pruned["0"]
        counts.append(len(zeroed))
        rows = model[0].weight.detach().reshape(10, -1)
        assert not rows[zeroed].any() and (rows.abs().sum(dim=1) > 0).sum() == 10 - len(zeroed)
    assert counts == sorted(counts) and counts[-1] == 5  # the schedule reaches the target
    masked_retrain(model, PruningMasks({}), data, lr=0.1)
    assert model[0].weight.detach().reshape(10, -1).abs().sum(dim=1).min() > 0  # trained back


def test_hard_filter_pruning_masks_keep_filters_out() -> None:
    model = net()
    selection, masks = hard_filter_prune(model, 0.4, "fpgm")
    data = [(torch.randn(8, 3, 6, 6), torch.randint(0, 3, (8,))) for _ in range(2)]
    masked_retrain(model, masks, data, epochs=2, lr=0.1)
    for name, pruned in selection.pruned.items():
        conv = model.get_submodule(name)
        assert not conv.weight[pruned].any() and not conv.bias[pruned].any()


def test_gradual_magnitude_schedule_and_masks() -> None:
    schedule = gradual_magnitude_schedule(0.8, steps=10, start=5)
    assert schedule(0) == schedule(5) == 0.0 and schedule(15) == schedule(99) == 0.8
    assert schedule(10) == pytest.approx(0.8 * (1 - 0.5**3))
    values = [schedule(t) for t in range(5, 16)]
    assert all(b >= a for a, b in itertools.pairwise(values))
    with pytest.raises(PruningError, match="initial <= final"):
        gradual_magnitude_schedule(0.2, 10, initial=0.5)
    model = net()
    masks = magnitude_masks(model, 0.5)
    for name, mask in masks.masks.items():
        weight = model.get_parameter(name).detach().abs()
        assert int((~mask).sum()) == weight.numel() // 2
        assert weight[~mask].max() <= weight[mask].min()


def test_iterative_hard_pruning_keeps_what_earlier_rounds_pruned() -> None:
    model = net()
    data = [(torch.randn(8, 3, 6, 6), torch.randint(0, 3, (8,))) for _ in range(2)]
    selection = None
    for ratio in (0.2, 0.4, 0.6):
        new, masks = hard_filter_prune(model, ratio, "fpgm", already=selection)
        if selection is not None:
            for name, old in selection.pruned.items():
                assert set(old) <= set(new.pruned[name])
        masked_retrain(model, masks, data, lr=0.1)
        selection = new
    assert selection is not None and len(selection.pruned["0"]) == 6
