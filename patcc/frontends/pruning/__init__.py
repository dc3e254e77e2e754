"""Pruning that produces the pattern-sparse models patcc compiles."""

from patcc.frontends.pruning.admm import (
    AdmmConfig,
    admm_prune,
    reconstruction_errors,
    synthetic_batch,
)
from patcc.frontends.pruning.masks import MaskHandle, PruningMasks, masked_retrain
from patcc.frontends.pruning.patterns import (
    CENTRE,
    PATTERN_ONLY_RATE,
    LayerPruning,
    PruneReport,
    build_pattern_library,
    candidate_patterns,
    is_depthwise,
    keep_fraction,
    keep_largest_kernels,
    magnitude_prune,
    pattern_prune,
    project_to_patterns,
    select_convs,
)

__all__ = [
    "CENTRE",
    "AdmmConfig",
    "PATTERN_ONLY_RATE",
    "LayerPruning",
    "MaskHandle",
    "PruneReport",
    "PruningMasks",
    "admm_prune",
    "build_pattern_library",
    "candidate_patterns",
    "is_depthwise",
    "keep_fraction",
    "keep_largest_kernels",
    "magnitude_prune",
    "masked_retrain",
    "pattern_prune",
    "project_to_patterns",
    "reconstruction_errors",
    "select_convs",
    "synthetic_batch",
]
