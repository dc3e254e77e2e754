"""Tests for patcc.frontends.pruning: pattern library, projection, pattern/magnitude pruning."""

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
    PruneReport,
    build_pattern_library,
    candidate_patterns,
    keep_fraction,
    magnitude_prune,
    pattern_prune,
    project_to_patterns,
)
from patcc.models import grouped_dilated_tiny, resnet18


def _mask(*positions: int) -> np.ndarray:
    """3x3 bool mask with the centre and the given row-major positions set."""
    mask = np.zeros(9, dtype=bool)
    mask[[4, *positions]] = True
    return mask.reshape(3, 3)


def _kernel(values: dict[int, float], rest: float = 0.01) -> np.ndarray:
    kernel = np.full(9, rest, dtype=np.float32)
    for position, value in values.items():
        kernel[position] = value
    return kernel.reshape(3, 3)


def _convs3x3(model: nn.Module) -> list[tuple[str, nn.Conv2d]]:
    return [
        (name, m)
        for name, m in model.named_modules()
        if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)
    ]


# ---------------------------------------------------------------- candidate patterns


def test_candidate_patterns_are_the_56_centre_plus_three_masks() -> None:
    masks = candidate_patterns()
    assert masks.shape == (56, 3, 3) and masks.dtype == bool
    assert (masks.reshape(56, 9).sum(axis=1) == 4).all()
    assert masks[:, 1, 1].all()
    assert len({m.tobytes() for m in masks}) == 56
    np.testing.assert_array_equal(masks[0], _mask(0, 1, 2))
    np.testing.assert_array_equal(masks[-1], _mask(6, 7, 8))
    np.testing.assert_array_equal(candidate_patterns(), masks)


# ---------------------------------------------------------------- library


def test_library_orders_by_frequency_then_candidate_order() -> None:
    corners = _kernel({0: 5, 2: 4, 6: 3})  # prefers centre + {0, 2, 6}
    cross = _kernel({1: 5, 3: 4, 5: 3})  # prefers centre + {1, 3, 5}
    bottom = _kernel({6: 5, 7: 4, 8: 3})  # prefers centre + {6, 7, 8}
    library = build_pattern_library([np.stack([bottom, corners, corners, cross, cross])])
    # corners and cross tie on frequency (2 each); {0,2,6} comes first in candidate order.
    expected = np.stack([_mask(0, 2, 6), _mask(1, 3, 5), _mask(6, 7, 8)])
    np.testing.assert_array_equal(library, expected)


def test_library_is_truncated_to_num_patterns_and_accepts_tensors() -> None:
    kernels = torch.randn(40, 7, 3, 3, generator=torch.Generator().manual_seed(0))
    library = build_pattern_library([kernels[:20], kernels[20:].numpy()], num_patterns=5)
    assert library.shape == (5, 3, 3)
    full = build_pattern_library([kernels], num_patterns=56)
    np.testing.assert_array_equal(library, full[:5])


def test_library_breaks_magnitude_ties_by_position() -> None:
    equal = np.ones((3, 3), dtype=np.float32)
    np.testing.assert_array_equal(build_pattern_library([equal]), _mask(0, 1, 2)[None])
    # Positions 2, 3 and 5 tie for the last place after 7 and 8: 2 wins.
    kernel = _kernel({7: 9, 8: 8, 2: 1, 3: 1, 5: -1}, rest=0.5)
    np.testing.assert_array_equal(build_pattern_library([kernel]), _mask(2, 7, 8)[None])


def test_library_rejects_bad_input() -> None:
    with pytest.raises(PruningError, match="num_patterns"):
        build_pattern_library([np.ones((3, 3))], num_patterns=0)
    with pytest.raises(PruningError, match=r"\(\.\.\., 3, 3\)"):
        build_pattern_library([np.ones((4, 5, 5))])
    with pytest.raises(PruningError, match="no 3x3 kernels"):
        build_pattern_library([])


# ---------------------------------------------------------------- projection


def test_projection_keeps_the_largest_norm_library_pattern() -> None:
    library = np.stack([_mask(0, 1, 2), _mask(6, 7, 8), _mask(1, 3, 5)])
    # Top row: 3 + 3 + 3 -> energy 27 (+ centre); bottom row: 4 + 1 + 1 -> 18;
    # cross: 3 + 1 + 1 -> 11. The single largest entry (bottom row) does not decide.
    kernel = _kernel({0: 3, 1: -3, 2: 3, 6: -4, 7: 1, 8: 1, 3: 1, 5: 1, 4: 2}, rest=0.0)
    weight = torch.from_numpy(kernel)[None, None]
    pruned, ids = project_to_patterns(weight, library)
    assert ids.dtype == np.int8 and ids.shape == (1, 1) and ids[0, 0] == 0
    expected = np.where(_mask(0, 1, 2), kernel, 0)
    np.testing.assert_array_equal(pruned[0, 0].numpy(), expected)


def test_projection_tie_goes_to_the_first_library_pattern() -> None:
    library = np.stack([_mask(1, 3, 5), _mask(0, 1, 2), _mask(6, 7, 8)])
    weight = torch.tensor([0.3, -0.3, 0.3, 0.3, -0.3, 0.3, -0.3, 0.3, 0.3]).reshape(1, 1, 3, 3)
    for _ in range(2):
        _, ids = project_to_patterns(weight, library)
        assert ids[0, 0] == 0


def test_projection_leaves_no_negative_zeros() -> None:
    weight = -torch.rand(2, 3, 3, 3, generator=torch.Generator().manual_seed(1)) - 0.1
    pruned, _ = project_to_patterns(weight, candidate_patterns()[:4])
    zeros = pruned[pruned == 0]
    assert len(zeros) == 2 * 3 * 5
    assert not torch.signbit(zeros).any()


@settings(max_examples=40, deadline=None)
@given(
    out_channels=st.integers(1, 6),
    in_channels=st.integers(1, 6),
    library_ids=st.lists(st.integers(0, 55), min_size=1, max_size=8, unique=True),
    seed=st.integers(0, 2**31 - 1),
)
def test_projection_matches_a_per_kernel_loop(
    out_channels: int, in_channels: int, library_ids: list[int], seed: int
) -> None:
    library = candidate_patterns()[library_ids]
    rng = np.random.default_rng(seed)
    weight = rng.standard_normal((out_channels, in_channels, 3, 3)).astype(np.float32)
    pruned, ids = project_to_patterns(torch.from_numpy(weight), library)
    for o, i in itertools.product(range(out_channels), range(in_channels)):
        energies = [float((weight[o, i].astype(np.float64) ** 2)[m].sum()) for m in library]
        best = int(np.argmax(energies))
        assert ids[o, i] == best
        expected = np.where(library[best], weight[o, i], 0)
        np.testing.assert_array_equal(pruned[o, i].numpy(), expected)


def test_projection_rejects_bad_shapes() -> None:
    with pytest.raises(PruningError, match=r"\(O, I, 3, 3\)"):
        project_to_patterns(torch.zeros(2, 2, 5, 5), candidate_patterns()[:2])
    with pytest.raises(PruningError, match="bool array"):
        project_to_patterns(torch.zeros(2, 2, 3, 3), np.ones((2, 3, 3)))


# ---------------------------------------------------------------- pattern_prune


def test_keep_fraction() -> None:
    assert keep_fraction(6.0) == 0.375
    assert keep_fraction(8.0) == 0.28125
    assert keep_fraction(2.25) == 1.0
    assert keep_fraction(1.0) == 1.0
    for bad in (0.0, -3.0, math.inf, math.nan):
        with pytest.raises(PruningError, match="rate"):
            keep_fraction(bad)


@pytest.fixture(scope="module")
def resnet18_6x() -> tuple[nn.Module, nn.Module, PruneReport]:
    dense = resnet18()
    pruned = resnet18()
    report = pattern_prune(pruned, rate=6.0)
    return dense, pruned, report


def test_resnet18_kernels_are_zero_or_exactly_a_library_pattern(resnet18_6x) -> None:
    _, pruned, report = resnet18_6x
    library = report.library
    assert 1 <= len(library) <= 8
    allowed = {m.tobytes() for m in library}
    by_name = {layer.name: layer for layer in report.layers}
    convs = _convs3x3(pruned)
    assert [name for name, _ in convs] == [layer.name for layer in report.layers]
    for name, conv in convs:
        nonzero = (conv.weight != 0).reshape(-1, 3, 3).numpy()
        kept = nonzero.reshape(len(nonzero), -1).any(axis=1)
        assert all(m.tobytes() in allowed for m in nonzero[kept])
        ids = by_name[name].pattern_ids.reshape(-1)
        np.testing.assert_array_equal(ids >= 0, kept)
        np.testing.assert_array_equal(library[ids[kept]], nonzero[kept])


def test_resnet18_connectivity_keeps_ceil_three_eighths_of_largest_kernels(resnet18_6x) -> None:
    dense, pruned, report = resnet18_6x
    dense_convs = dict(_convs3x3(dense))
    for name, conv in _convs3x3(pruned):
        n = conv.weight.shape[0] * conv.weight.shape[1]
        kept = conv.weight.reshape(n, 9).ne(0).any(dim=1)
        assert int(kept.sum()) == math.ceil(0.375 * n) == report.kept_kernels[name][0]
        assert report.kept_kernels[name][1] == n
        # The kept kernels are the largest by norm after projection.
        projected, _ = project_to_patterns(dense_convs[name].weight, report.library)
        norms = projected.reshape(n, 9).norm(dim=1)
        assert norms[kept].min() >= norms[~kept].max()


def test_resnet18_rate_and_untouched_layers(resnet18_6x) -> None:
    dense, pruned, report = resnet18_6x
    assert report.rate == pytest.approx(6.0, abs=0.01)
    total = sum(conv.weight.numel() for _, conv in _convs3x3(pruned))
    nonzero = sum(int(conv.weight.count_nonzero()) for _, conv in _convs3x3(pruned))
    assert report.rate == total / nonzero
    dense_state = dense.state_dict()
    three_by_three = {f"{name}.weight" for name, _ in _convs3x3(pruned)}
    for key, value in pruned.state_dict().items():
        if key not in three_by_three:
            assert torch.equal(value, dense_state[key]), key


def test_pattern_prune_is_deterministic() -> None:
    first, second = grouped_dilated_tiny(), grouped_dilated_tiny()
    report_a = pattern_prune(first, rate=8.0)
    report_b = pattern_prune(second, rate=8.0)
    np.testing.assert_array_equal(report_a.library, report_b.library)
    state_b = second.state_dict()
    assert first.state_dict().keys() == state_b.keys()
    for key, a in first.state_dict().items():
        assert torch.equal(a, state_b[key]), key


def test_depthwise_layers_get_patterns_but_keep_every_kernel() -> None:
    model = grouped_dilated_tiny()
    report = pattern_prune(model, rate=6.0)
    depthwise = [layer for layer in report.layers if layer.depthwise]
    assert [layer.name for layer in depthwise] == ["features.8"]
    conv = model.features[8]
    assert report.kept_kernels["features.8"] == (32, 32)
    assert (conv.weight.reshape(32, 9).ne(0).sum(dim=1) == 4).all()
    assert model.features[3].weight.shape == (32, 8, 3, 3)  # groups=2
    assert report.kept_kernels["features.3"] == (math.ceil(0.375 * 256), 256)


def test_flags_select_layers() -> None:
    model = grouped_dilated_tiny()
    first = model.features[0].weight.clone()
    report = pattern_prune(model, skip_first=True, include_depthwise=False)
    assert "features.0" not in report.kept_kernels and "features.8" not in report.kept_kernels
    assert torch.equal(model.features[0].weight, first)
    report = pattern_prune(grouped_dilated_tiny(), only_depthwise=True)
    assert list(report.kept_kernels) == ["features.8"]
    with pytest.raises(PruningError, match="only_depthwise"):
        pattern_prune(grouped_dilated_tiny(), only_depthwise=True, include_depthwise=False)
    with pytest.raises(PruningError, match="no 3x3"):
        pattern_prune(nn.Sequential(nn.Conv2d(3, 4, 1)))


def test_connectivity_rounds_the_kept_count_up_and_keeps_at_least_one() -> None:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Conv2d(3, 5, 3), nn.Conv2d(5, 7, 3), nn.Conv2d(2, 2, 3))
    report = pattern_prune(model, rate=6.0)
    # 0.375 * 15 = 5.625 and 0.375 * 35 = 13.125 round up; 0.375 * 4 = 1.5 -> 2.
    assert report.kept_kernels == {"0": (6, 15), "1": (14, 35), "2": (2, 4)}
    assert report.rate == pytest.approx(9 * 54 / (4 * 22))
    tiny = nn.Sequential(nn.Conv2d(2, 2, 3))
    assert pattern_prune(tiny, rate=1e12).kept_kernels == {"0": (1, 4)}
    assert int(tiny[0].weight.count_nonzero()) == 4


def test_rate_two_and_a_quarter_is_patterns_only() -> None:
    model = grouped_dilated_tiny()
    report = pattern_prune(model, rate=2.25)
    assert all(kept == total for kept, total in report.kept_kernels.values())
    assert report.rate == pytest.approx(2.25)


# ---------------------------------------------------------------- magnitude_prune


def test_magnitude_prune_removes_the_smallest_exactly() -> None:
    model = nn.Sequential(nn.Conv2d(2, 3, 1, bias=False), nn.Conv2d(3, 3, 3, bias=False))
    values = torch.tensor([0.5, -0.1, 0.3, -0.3, 0.2, 0.9]).reshape(3, 2, 1, 1)
    with torch.no_grad():
        model[0].weight.copy_(values)
    before_3x3 = model[1].weight.clone()
    counts = magnitude_prune(model, 0.5)
    assert counts == {"0": (3, 6)}
    # |w| sorted: 0.1 (idx 1), 0.2 (idx 4), 0.3 (idx 2), 0.3 (idx 3): the tie at 0.3
    # removes the lower index.
    expected = torch.tensor([0.5, 0.0, 0.0, -0.3, 0.0, 0.9]).reshape(3, 2, 1, 1)
    assert torch.equal(model[0].weight, expected)
    assert torch.equal(model[1].weight, before_3x3)


def test_magnitude_prune_counts_per_layer() -> None:
    model = resnet18()
    counts = magnitude_prune(model, 0.3)
    downsample = model.layer2[0].downsample[0]
    n = downsample.weight.numel()
    assert counts["layer2.0.downsample.0"] == (math.floor(0.3 * n), n)
    assert int((downsample.weight == 0).sum()) == math.floor(0.3 * n)
    assert set(counts) == {
        name for name, m in model.named_modules()
        if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1)
    }
    with pytest.raises(PruningError, match="ratio"):
        magnitude_prune(model, 1.5)
