"""Pattern pruning of 3x3 convolutions, plus connectivity and magnitude pruning.

A *pattern* is a 3x3 boolean mask that keeps the centre and three of the other eight
positions (PatDNN's "4-entry" patterns). Pattern pruning picks a small model-wide
library of such masks, projects every 3x3 kernel onto its best library mask, then
*connectivity pruning* removes whole kernels (per layer, the smallest by norm). This is
the one-shot projection step; ADMM, the training that makes the pruned model accurate
(``admm.py``, ``data_admm.py``), calls the projections at the end of this module in its
loop.

Positions are numbered row-major, 0..8; the centre is position 4.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from patcc.errors import PruningError
from patcc.frontends.pruning.reparam import bake_before_pruning

CENTRE = 4
_NON_CENTRE = (0, 1, 2, 3, 5, 6, 7, 8)
# 4 kept of 9 entries: the compression of pattern pruning alone.
PATTERN_ONLY_RATE = 9 / 4


def candidate_patterns() -> np.ndarray:
    """All 56 "centre plus three" 3x3 masks.

    Returns:
        a read-only ``(56, 3, 3)`` bool array; mask ``k`` keeps the centre and the
        ``k``-th 3-combination (``itertools.combinations`` order) of the positions
        0, 1, 2, 3, 5, 6, 7, 8.
    """
    flat = np.zeros((56, 9), dtype=bool)
    for k, chosen in enumerate(itertools.combinations(_NON_CENTRE, 3)):
        flat[k, (CENTRE, *chosen)] = True
    masks = flat.reshape(56, 3, 3)
    masks.setflags(write=False)
    return masks


def _preferred_candidates(kernels: np.ndarray) -> np.ndarray:
    """Candidate index of each kernel's preferred pattern; ``kernels`` is ``(n, 9)``."""
    magnitude = np.abs(kernels[:, _NON_CENTRE])
    # Stable sort on the negated magnitude: equal magnitudes keep position order, so
    # the lower position index wins a tie.
    top3 = np.sort(np.argsort(-magnitude, axis=1, kind="stable")[:, :3], axis=1)
    # Rank of the sorted triple (i < j < l, indices into _NON_CENTRE) in
    # combinations order, via a lookup table over all 8**3 index triples.
    lookup = np.full((8, 8, 8), -1, dtype=np.int64)
    for k, (i, j, l) in enumerate(itertools.combinations(range(8), 3)):
        lookup[i, j, l] = k
    return lookup[top3[:, 0], top3[:, 1], top3[:, 2]]


def _as_kernel_rows(kernel: torch.Tensor | np.ndarray) -> np.ndarray:
    array = kernel.detach().cpu().numpy() if isinstance(kernel, torch.Tensor) else kernel
    array = np.asarray(array)
    if array.ndim < 2 or array.shape[-2:] != (3, 3):
        raise PruningError(
            f"build_pattern_library: expected kernels of shape (..., 3, 3), got {array.shape}"
        )
    return array.reshape(-1, 9)


def build_pattern_library(
    kernels: Iterable[torch.Tensor | np.ndarray], num_patterns: int = 8
) -> np.ndarray:
    """Choose the ``num_patterns`` patterns most 3x3 kernels prefer.

    A kernel prefers the pattern made of the centre and its three largest-magnitude
    other positions (ties: lower position index first). The library is the most often
    preferred patterns, most frequent first (ties: :func:`candidate_patterns` order).
    Patterns no kernel prefers are left out, so the library may be smaller.

    Args:
        kernels: tensors or arrays of shape ``(..., 3, 3)``, e.g. conv weights.
        num_patterns: the largest library size, 1..56.

    Returns:
        a read-only ``(m, 3, 3)`` bool array, ``1 <= m <= num_patterns``.

    Raises:
        PruningError: if ``num_patterns`` is out of range, a kernel is not ``(..., 3, 3)``,
            or there are no kernels at all.
    """
    if not 1 <= num_patterns <= 56:
        raise PruningError(
            f"build_pattern_library: num_patterns must be in 1..56, got {num_patterns}"
        )
    counts = np.zeros(56, dtype=np.int64)
    for kernel in kernels:
        rows = _as_kernel_rows(kernel)
        if len(rows):
            counts += np.bincount(_preferred_candidates(rows), minlength=56)
    if counts.sum() == 0:
        raise PruningError("build_pattern_library: no 3x3 kernels given")
    order = np.argsort(-counts, kind="stable")[:num_patterns]
    order = order[counts[order] > 0]
    library = candidate_patterns()[order].copy()
    library.setflags(write=False)
    return library


def _check_library(library: np.ndarray) -> np.ndarray:
    library = np.asarray(library)
    if library.dtype != bool or library.ndim != 3 or library.shape[1:] != (3, 3):
        raise PruningError(
            "pattern library must be a bool array of shape (m, 3, 3), got "
            f"{library.dtype} {library.shape}"
        )
    if not 1 <= len(library) <= 127:  # pattern ids are stored as int8
        raise PruningError(f"pattern library must hold 1..127 masks, got {len(library)}")
    return library


def project_to_patterns(
    weight: torch.Tensor, library: np.ndarray
) -> tuple[torch.Tensor, np.ndarray]:
    """Project every 3x3 kernel onto the library pattern that keeps most of its energy.

    Args:
        weight: conv weight of shape ``(O, I, 3, 3)``.
        library: ``(m, 3, 3)`` bool masks, e.g. from :func:`build_pattern_library`.

    Returns:
        ``(pruned, pattern_ids)``: ``pruned`` is a new tensor like ``weight`` with each
        kernel multiplied by its chosen mask; ``pattern_ids`` is an ``(O, I)`` int8
        array of library indices. The chosen mask maximises the kept squared L2 norm;
        among equal norms the lowest library index wins (norms are summed in float64,
        so kernels of equal magnitudes really tie).

    Raises:
        PruningError: if ``weight`` is not ``(O, I, 3, 3)`` or ``library`` is malformed.
    """
    library = _check_library(library)
    if weight.ndim != 4 or tuple(weight.shape[2:]) != (3, 3):
        raise PruningError(
            f"project_to_patterns: expected weight of shape (O, I, 3, 3), got "
            f"{tuple(weight.shape)}"
        )
    out_channels, in_channels = weight.shape[:2]
    rows = weight.detach().reshape(-1, 9).to(torch.float64)
    masks = torch.from_numpy(library.reshape(-1, 9).astype(np.float64)).to(rows.device)
    kept_energy = (rows * rows) @ masks.T  # (kernels, m)
    ids = torch.argmax(kept_energy, dim=1)  # first maximum on ties
    chosen = masks[ids].bool().reshape(weight.shape)
    # where() rather than multiplying: a negative weight times 0 would leave -0.0.
    pruned = torch.where(chosen, weight.detach(), torch.zeros((), dtype=weight.dtype))
    pattern_ids = ids.cpu().numpy().astype(np.int8).reshape(out_channels, in_channels)
    return pruned, pattern_ids


def is_depthwise(conv: nn.Conv2d) -> bool:
    """Whether ``conv`` is depthwise: ``groups == in_channels == out_channels``."""
    return conv.groups == conv.in_channels == conv.out_channels


def keep_fraction(rate: float) -> float:
    """Fraction of 3x3 kernels connectivity pruning keeps for a target compression rate.

    Args:
        rate: target (weights / non-zero weights) of a pattern-pruned 3x3 layer.

    Returns:
        ``9 / (4 * rate)`` clamped to [0, 1]: rate 2.25 keeps every kernel, 6 keeps
        37.5%, 8 keeps 28.125%.

    Raises:
        PruningError: if ``rate`` is not a positive finite number.
    """
    if not (math.isfinite(rate) and rate > 0):
        raise PruningError(f"pruning rate must be a positive number such as 6.0, got {rate!r}")
    return min(1.0, max(0.0, PATTERN_ONLY_RATE / rate))


@dataclass(frozen=True, eq=False)  # eq=False: ndarray fields have no boolean equality
class LayerPruning:
    """What pattern pruning did to one conv layer.

    ``pattern_ids`` is ``(O, I)`` int8: the library index of each kernel, or -1 for a
    kernel removed by connectivity pruning.
    """

    name: str
    kept_kernels: int
    total_kernels: int
    depthwise: bool
    pattern_ids: np.ndarray
    error: float | None = None
    """Relative reconstruction error of the layer's output after pruning, where the
    method measures one (ADMM)."""


@dataclass(frozen=True, eq=False)  # eq=False: ndarray fields have no boolean equality
class PruneReport:
    """Result of :func:`pattern_prune`.

    ``library`` is the ``(m, 3, 3)`` bool pattern library, ``layers`` one entry per
    pruned conv in module order, ``rate`` the achieved compression of those layers
    (their weight count divided by their non-zero weight count).
    """

    library: np.ndarray
    layers: tuple[LayerPruning, ...]
    rate: float

    @property
    def kept_kernels(self) -> dict[str, tuple[int, int]]:
        """Layer name -> (kept kernels, total kernels)."""
        return {layer.name: (layer.kept_kernels, layer.total_kernels) for layer in self.layers}


def select_convs(
    module: nn.Module, include_depthwise: bool, skip_first: bool, only_depthwise: bool
) -> list[tuple[str, nn.Conv2d]]:
    """The (name, module) of each 3x3 ``nn.Conv2d`` pattern pruning would prune."""
    convs = [
        (name, m)
        for name, m in module.named_modules()
        if isinstance(m, nn.Conv2d) and tuple(m.kernel_size) == (3, 3)
    ]
    if skip_first:
        convs = convs[1:]
    if only_depthwise:
        convs = [(name, m) for name, m in convs if is_depthwise(m)]
    elif not include_depthwise:
        convs = [(name, m) for name, m in convs if not is_depthwise(m)]
    return convs


def keep_largest_kernels(weight: torch.Tensor, keep: float
                         ) -> tuple[torch.Tensor, np.ndarray]:
    """Zero all but the ``ceil(keep * n)`` (at least 1) largest-norm of the n 3x3
    kernels of ``weight`` ``(O, I, 3, 3)``; among equal norms the lower index stays.

    Returns:
        ``(pruned, kept)``: a new tensor, and the ``(O, I)`` bool mask of kept kernels.
    """
    norms = weight.detach().reshape(-1, 9).to(torch.float64).square().sum(dim=1).cpu().numpy()
    total = len(norms)
    # round() first so that e.g. 0.375 * n landing a hair above an integer is not
    # rounded up to the next one.
    kept = max(1, math.ceil(round(keep * total, 9)))
    removed = np.argsort(-norms, kind="stable")[kept:]  # stable: lower index kept
    keep_mask = np.ones(total, dtype=bool)
    keep_mask[removed] = False
    mask = torch.from_numpy(keep_mask).to(weight.device).reshape(*weight.shape[:2], 1, 1)
    pruned = torch.where(mask, weight.detach(), torch.zeros((), dtype=weight.dtype))
    return pruned, keep_mask.reshape(weight.shape[:2])


def connectivity_prune(
    weight: torch.Tensor, pattern_ids: np.ndarray, keep: float
) -> tuple[torch.Tensor, np.ndarray, int]:
    """:func:`keep_largest_kernels` of a pattern-projected weight, marking removed
    kernels -1 in the pattern ids: ``(pruned, ids, kernels kept)``."""
    pruned, kept = keep_largest_kernels(weight, keep)
    ids = pattern_ids.copy()
    ids[~kept] = -1
    return pruned, ids, int(kept.sum())


def kernel_masks(library: np.ndarray, pattern_ids: np.ndarray) -> torch.Tensor:
    """The ``(O, I, 3, 3)`` bool mask of a pattern pruning: each kept kernel's library
    pattern, nothing of a removed (-1) kernel."""
    ids = torch.from_numpy(pattern_ids.astype(np.int64))
    masks = torch.from_numpy(np.array(library, dtype=bool))[ids.clamp_min(0)]
    return masks & (ids >= 0)[..., None, None]


def pattern_prune(
    module: nn.Module,
    rate: float = 6.0,
    num_patterns: int = 8,
    include_depthwise: bool = True,
    skip_first: bool = False,
    only_depthwise: bool = False,
) -> PruneReport:
    """Pattern-prune, then connectivity-prune, every 3x3 ``nn.Conv2d`` in place.

    One library of at most ``num_patterns`` patterns is built from all selected
    kernels of the model; each kernel is projected onto it. Then each non-depthwise
    layer keeps only its ``ceil(keep * n)`` largest-norm kernels (at least one), where
    ``keep = 9 / (4 * rate)`` clamped to [0, 1]. Depthwise layers (one kernel per
    filter) get patterns only. Biases are left alone.

    Args:
        module: the model, changed in place.
        rate: target compression (weights / non-zero weights) of non-depthwise 3x3
            layers; 2.25 means patterns only, 6 keeps 37.5% of kernels.
        num_patterns: the largest library size, 1..56.
        include_depthwise: also pattern-prune depthwise 3x3 convolutions.
        skip_first: leave the first 3x3 convolution (in module order) dense.
        only_depthwise: prune depthwise 3x3 convolutions only, leaving every other
            convolution dense (MobileNet-style models).

    Returns:
        a :class:`PruneReport`.

    Raises:
        PruningError: if ``rate`` or ``num_patterns`` is out of range, the flags
            contradict each other, or no convolution is selected.
    """
    keep = keep_fraction(rate)
    if only_depthwise and not include_depthwise:
        raise PruningError("pattern_prune: only_depthwise=True needs include_depthwise=True")
    bake_before_pruning(module, "pattern_prune")
    convs = select_convs(module, include_depthwise, skip_first, only_depthwise)
    if not convs:
        raise PruningError(
            f"pattern_prune: no 3x3 nn.Conv2d selected in {type(module).__name__} "
            f"(include_depthwise={include_depthwise}, skip_first={skip_first}, "
            f"only_depthwise={only_depthwise})"
        )
    layers = []
    total_weights = nonzero_weights = 0
    with torch.no_grad():
        library = build_pattern_library((conv.weight for _, conv in convs), num_patterns)
        for name, conv in convs:
            pruned, ids = project_to_patterns(conv.weight, library)
            depthwise = is_depthwise(conv)
            kept = ids.size
            if not depthwise:
                pruned, ids, kept = connectivity_prune(pruned, ids, keep)
            conv.weight.copy_(pruned)
            ids.setflags(write=False)
            layers.append(LayerPruning(name, kept, ids.size, depthwise, ids))
            total_weights += conv.weight.numel()
            nonzero_weights += int(torch.count_nonzero(conv.weight))
    rate_achieved = total_weights / nonzero_weights if nonzero_weights else math.inf
    return PruneReport(library, tuple(layers), rate_achieved)


def magnitude_prune(
    module: nn.Module, ratio: float, kernel_size: tuple[int, int] = (1, 1)
) -> dict[str, tuple[int, int]]:
    """Zero the smallest-magnitude ``floor(ratio * n)`` weights of each matching conv.

    Unstructured pruning, per layer, of every ``nn.Conv2d`` whose kernel size is
    ``kernel_size`` (e.g. the 1x1 convolutions of MobileNetV2). Among equal magnitudes
    the lower flat index is removed first, so the result is deterministic. Biases are
    left alone.

    Args:
        module: the model, changed in place.
        ratio: fraction of each layer's weights to remove, in [0, 1].
        kernel_size: ``(kh, kw)`` of the convolutions to prune.

    Returns:
        layer name -> (weights removed, total weights), in module order.

    Raises:
        PruningError: if ``ratio`` is outside [0, 1].
    """
    if not 0.0 <= ratio <= 1.0:
        raise PruningError(f"magnitude_prune: ratio must be in [0, 1] (e.g. 0.5), got {ratio!r}")
    wanted = tuple(kernel_size)
    removed_counts: dict[str, tuple[int, int]] = {}
    bake_before_pruning(module, "magnitude_prune")
    with torch.no_grad():
        for name, conv in module.named_modules():
            if not (isinstance(conv, nn.Conv2d) and tuple(conv.kernel_size) == wanted):
                continue
            flat = conv.weight.reshape(-1)
            total = flat.numel()
            count = math.floor(round(ratio * total, 9))
            magnitude = flat.abs().cpu().numpy()
            removed = np.argsort(magnitude, kind="stable")[:count]
            keep_mask = np.ones(total, dtype=bool)
            keep_mask[removed] = False
            mask = torch.from_numpy(keep_mask).to(flat.device).reshape(conv.weight.shape)
            conv.weight.copy_(
                torch.where(mask, conv.weight, torch.zeros((), dtype=conv.weight.dtype))
            )
            removed_counts[name] = (count, total)
    return removed_counts


# -- ADMM's projections onto its constraint sets --------------------------------------


def project_pattern(weight: torch.Tensor, library: np.ndarray) -> torch.Tensor:
    """The nearest weight whose every kernel is a ``library`` pattern: the pruned
    tensor of :func:`project_to_patterns`, without the ids."""
    return project_to_patterns(weight, library)[0]


def project_connectivity(weight: torch.Tensor, keep: float) -> torch.Tensor:
    """The nearest weight with at most ``ceil(keep * n)`` non-zero kernels: the pruned
    tensor of :func:`keep_largest_kernels`, without the mask."""
    return keep_largest_kernels(weight, keep)[0]


def project_both(weight: torch.Tensor, library: np.ndarray, keep: float | None
                 ) -> tuple[torch.Tensor, np.ndarray, int]:
    """The final hard projection: patterns, then the largest kernels of the result
    (``keep`` None: patterns only, as for a depthwise layer). Returns
    ``(pruned, pattern ids, kernels kept)`` as :func:`connectivity_prune` does."""
    pruned, ids = project_to_patterns(weight, library)
    if keep is None:
        return pruned, ids, ids.size
    return connectivity_prune(pruned, ids, keep)
