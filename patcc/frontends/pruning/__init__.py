"""Pruning that produces the pattern-sparse models patcc compiles."""

from patcc.frontends.pruning.patterns import (
    CENTRE,
    PATTERN_ONLY_RATE,
    LayerPruning,
    PruneReport,
    build_pattern_library,
    candidate_patterns,
    is_depthwise,
    keep_fraction,
    magnitude_prune,
    pattern_prune,
    project_to_patterns,
)

__all__ = [
    "CENTRE",
    "PATTERN_ONLY_RATE",
    "LayerPruning",
    "PruneReport",
    "build_pattern_library",
    "candidate_patterns",
    "is_depthwise",
    "keep_fraction",
    "magnitude_prune",
    "pattern_prune",
    "project_to_patterns",
]
