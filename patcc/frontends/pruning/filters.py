"""Filter (structured) pruning: criteria, and the schedules that apply them.

A criterion scores every output filter of a convolution; the lowest-scoring
``floor(ratio * filters)`` are pruned (at least one filter always stays):

- ``l1`` / ``l2``: the norm of the filter's weights (small filters matter little);
- ``fpgm``: the sum of Euclidean distances from the filter to the layer's other
  filters, on raw weights. The filters nearest the geometric median are the ones
  the others can stand in for, so the smallest sums go (He et al., FPGM);
- ``bn``: ``|gamma|`` of the BatchNorm that follows the convolution (network
  slimming).

Schedules: soft filter pruning (SFP) zeroes the selected filters after every epoch
and lets them train again, so a pruned filter may come back; asymptotic SFP (ASFP)
raises the ratio along ``a * exp(-k * epoch) + b`` (:func:`asfp_schedule`); hard
pruning (one-shot or iterative) keeps the masks with :class:`PruningMasks`.
:func:`gradual_magnitude_schedule` is the unstructured baseline's cubic sparsity
ramp.

These select per convolution and mask its filters only. To remove filters
physically, select with ``removal.plan_filter_removal`` instead: it couples layers
(residual adds, squeeze-excite) and its masks also zero each removed channel's batch
norm, so training with them and then compacting is exact
(``benchmarks/pruning.py`` does both).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from patcc.errors import PruningError
from patcc.frontends.pruning.fxgraph import following_batchnorms
from patcc.frontends.pruning.masks import PruningMasks, filter_masks
from patcc.frontends.pruning.reparam import effective_parameters

CRITERIA = ("l1", "l2", "fpgm", "bn")


def filter_scores(weight: torch.Tensor, criterion: str,
                  bn_weight: torch.Tensor | None = None) -> np.ndarray:
    """Importance of each output filter of ``weight`` ``(O, ...)`` (float64; low is
    pruned first). ``bn`` needs ``bn_weight``, the following BatchNorm's gamma."""
    flat = weight.detach().reshape(weight.shape[0], -1).to(torch.float64).cpu()
    if criterion == "l1":
        return flat.abs().sum(dim=1).numpy()
    if criterion == "l2":
        return flat.norm(dim=1).numpy()
    if criterion == "fpgm":
        return torch.cdist(flat[None], flat[None])[0].sum(dim=1).numpy()
    if criterion == "bn":
        if bn_weight is None:
            raise PruningError("criterion 'bn' needs the BatchNorm after the convolution")
        return bn_weight.detach().abs().to(torch.float64).cpu().numpy()
    raise PruningError(f"unknown filter criterion {criterion!r}; expected one of "
                       f"{', '.join(CRITERIA)}")


def check_ratio(ratio: float) -> float:
    """``ratio`` if it is a fraction of filters to prune in [0, 1)."""
    if not (isinstance(ratio, (int, float)) and 0 <= ratio < 1):
        raise PruningError(f"filter pruning ratio must be in [0, 1) (e.g. 0.3), got {ratio!r}")
    return float(ratio)


def filters_to_prune(scores: np.ndarray, ratio: float) -> np.ndarray:
    """Indices (ascending) of the ``floor(ratio * n)`` lowest scores, at most n - 1;
    among equal scores the lower index goes first."""
    n = len(scores)
    count = min(n - 1, math.floor(round(check_ratio(ratio) * n, 9)))
    return np.sort(np.argsort(scores, kind="stable")[:count])


def prunable_convs(model: nn.Module) -> list[tuple[str, nn.Conv2d]]:
    """The convolutions whose filters can be pruned independently: every
    ``nn.Conv2d`` with ``groups == 1``, in module order."""
    return [(name, m) for name, m in model.named_modules()
            if isinstance(m, nn.Conv2d) and m.groups == 1]


@dataclass(frozen=True)
class FilterSelection:
    """The filters a criterion picked: layer name -> pruned output-filter indices."""

    criterion: str
    ratio: float
    pruned: dict[str, np.ndarray]

    def masks(self, model: nn.Module) -> PruningMasks:
        """Masks removing whole filters: weight rows (and bias entries)."""
        params = effective_parameters(model)
        masks = {}
        for name, indices in self.pruned.items():
            keep = torch.ones(params[f"{name}.weight"].shape[0], dtype=torch.bool)
            keep[torch.as_tensor(indices, dtype=torch.long)] = False
            masks.update(filter_masks(params, name, keep))
        return PruningMasks(masks)


def select_filters(model: nn.Module, ratio: float, criterion: str = "l2",
                   layers: Sequence[str] | None = None,
                   already: FilterSelection | None = None) -> FilterSelection:
    """Pick the filters ``criterion`` prunes at ``ratio`` in each of ``layers``
    (default: :func:`prunable_convs`); the filters in ``already`` (an earlier round
    of iterative pruning) are kept in the selection, and the rest come from the
    remaining filters."""
    check_ratio(ratio)
    if criterion not in CRITERIA:
        filter_scores(torch.zeros(1, 1), criterion)  # raises, naming the criteria
    convs = dict(prunable_convs(model))
    names = list(layers) if layers is not None else list(convs)
    unknown = [n for n in names if n not in convs]
    if unknown:
        raise PruningError(f"not a prunable convolution (groups == 1): {unknown[0]!r}")
    bns = following_batchnorms(model, "select_filters") if criterion == "bn" else {}
    params = effective_parameters(model)
    pruned = {}
    for name in names:
        if criterion == "bn" and name not in bns:
            raise PruningError(f"criterion 'bn': no BatchNorm2d directly after {name!r}")
        gamma = params[f"{bns[name]}.weight"] if name in bns else None
        scores = filter_scores(params[f"{name}.weight"], criterion, gamma)
        if already is not None and name in already.pruned:
            scores[already.pruned[name]] = -np.inf
        pruned[name] = filters_to_prune(scores, ratio)
    return FilterSelection(criterion, ratio, pruned)


def soft_filter_prune(model: nn.Module, ratio: float, criterion: str = "l2",
                      layers: Sequence[str] | None = None) -> FilterSelection:
    """One SFP step: zero the selected filters (weights, biases and the following
    BatchNorm's gamma and beta stay: the filter may train back)."""
    selection = select_filters(model, ratio, criterion, layers)
    selection.masks(model).apply(model)
    return selection


@dataclass(frozen=True)
class AsfpSchedule:
    """ASFP's pruning ratio ``a * exp(-k * epoch) + b`` (see :func:`asfp_schedule`)."""

    a: float
    k: float
    b: float

    def __call__(self, epoch: float) -> float:
        return self.a * math.exp(-self.k * epoch) + self.b


def asfp_schedule(ratio: float, epochs: int, d: float = 0.125, start: float = 0.0
                  ) -> AsfpSchedule:
    """The ratio curve ``a * exp(-k * epoch) + b`` through (0, ``start``),
    (``d * epochs``, 3/4 ``ratio``) and (``epochs``, ``ratio``), with k != 0: pruning
    grows fast early and levels off at the target.

    Raises:
        PruningError: if the points admit no such curve (``d`` out of (0, 1), ``ratio``
            not above ``start``, or three quarters of the way up reached too late).
    """
    check_ratio(ratio)
    if not 0 < d < 1 or epochs < 1:
        raise PruningError(f"asfp_schedule: need 0 < d < 1 and epochs >= 1, got d={d}, "
                           f"epochs={epochs}")
    if not 0 <= start < ratio:
        raise PruningError(f"asfp_schedule: start ratio {start} must be below the target {ratio}")
    # With x = exp(-k d E): a (1 - x) = start - 3/4 ratio and a (1 - x^(1/d)) = start -
    # ratio, so 1 - x = r (1 - x^(1/d)), r = (start - 3/4 ratio) / (start - ratio);
    # x = 1 (k = 0) always solves it, the curve needs the root inside (0, 1).
    r = (start - 0.75 * ratio) / (start - ratio)

    def f(x: float) -> float:
        return 1 - x - r * (1 - x ** (1 / d))

    if r / d <= 1:  # f < 0 just below x = 1 only if r / d > 1
        raise PruningError(f"asfp_schedule: no curve with k != 0 reaches 3/4 of {ratio} at "
                           f"epoch {d * epochs:g} (try a smaller d)")
    lo, hi = 0.0, 1.0 - 1e-12  # f(0) = 1 - r > 0, f(hi) < 0
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if f(mid) > 0 else (lo, mid)
    x = (lo + hi) / 2
    k = -math.log(x) / (d * epochs)
    a = (start - ratio) / (1 - math.exp(-k * epochs))
    return AsfpSchedule(a, k, start - a)


class SoftFilterPruning:
    """SFP and ASFP: call :meth:`step` after every training epoch.

    ``ratio`` is a fixed fraction (SFP) or a function of the epoch, e.g.
    ``asfp_schedule(0.4, epochs)`` (ASFP). Filters are zeroed, not masked: the next
    epoch trains them again, and the selection can change from epoch to epoch.
    """

    def __init__(self, model: nn.Module, ratio: float | Callable[[int], float],
                 criterion: str = "l2", layers: Sequence[str] | None = None) -> None:
        self.model = model
        if callable(ratio):
            self.ratio = ratio
        else:
            fixed = check_ratio(ratio)
            self.ratio = lambda _epochs_done: fixed
        self.criterion = criterion
        self.layers = layers
        self.history: list[FilterSelection] = []

    def step(self, epochs_done: int) -> FilterSelection:
        """Zero the filters the criterion picks at ``ratio(epochs_done)`` (1 after the
        first epoch; after the last, the target ratio)."""
        ratio = min(max(self.ratio(epochs_done), 0.0), 1.0 - 1e-9)
        selection = soft_filter_prune(self.model, ratio, self.criterion, self.layers)
        self.history.append(selection)
        return selection


def hard_filter_prune(model: nn.Module, ratio: float, criterion: str = "l2",
                      layers: Sequence[str] | None = None,
                      already: FilterSelection | None = None
                      ) -> tuple[FilterSelection, PruningMasks]:
    """Hard pruning: zero the selected filters and return masks that keep them at
    zero through any further training (``masks.attach``, ``masked_retrain``).
    One-shot: call once. Iterative: call with growing ratios between training
    rounds, passing the previous round's selection as ``already``."""
    selection = select_filters(model, ratio, criterion, layers, already)
    masks = selection.masks(model)
    masks.apply(model)
    return selection, masks


def gradual_magnitude_schedule(final: float, steps: int, initial: float = 0.0,
                               start: int = 0) -> Callable[[int], float]:
    """The cubic sparsity ramp of gradual magnitude pruning: ``initial`` at step
    ``start``, ``final`` from ``start + steps`` on,
    ``final + (initial - final) * (1 - (t - start) / steps) ** 3`` between."""
    if not 0 <= initial <= final < 1 or steps < 1:
        raise PruningError(f"gradual_magnitude_schedule: need 0 <= initial <= final < 1 and "
                           f"steps >= 1, got initial={initial}, final={final}, steps={steps}")

    def sparsity(t: int) -> float:
        progress = min(max((t - start) / steps, 0.0), 1.0)
        return final + (initial - final) * (1 - progress) ** 3

    return sparsity


def magnitude_masks(model: nn.Module, sparsity: float,
                    types: tuple[type[nn.Module], ...] = (nn.Conv2d, nn.Linear)
                    ) -> PruningMasks:
    """Per layer, masks removing the ``floor(sparsity * n)`` smallest-magnitude weights
    of every module of ``types`` (ties: lower flat index first)."""
    if not 0 <= sparsity < 1:
        raise PruningError(f"sparsity must be in [0, 1), got {sparsity!r}")
    masks = {}
    params = effective_parameters(model)
    for name, module in model.named_modules():
        key = f"{name}.weight" if name else "weight"
        if not isinstance(module, types) or key not in params:
            continue
        weight = params[key].detach()
        count = math.floor(round(sparsity * weight.numel(), 9))
        order = np.argsort(weight.abs().reshape(-1).cpu().numpy(), kind="stable")
        keep = np.ones(weight.numel(), dtype=bool)
        keep[order[:count]] = False
        masks[key] = torch.from_numpy(keep).reshape(weight.shape)
    return PruningMasks(masks)
