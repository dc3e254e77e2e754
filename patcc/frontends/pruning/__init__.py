"""Pruning that produces the pattern-sparse models patcc compiles (``patcc.pruning``).

Pattern pruning: ``patterns.py`` (the pattern library, one-shot projection and
connectivity pruning, the projections ADMM uses), ``admm.py`` (data-free ADMM, knobs in
``admm_config.py``; its synthetic inputs in ``synthetic.py``, the conv units it prunes
in ``units.py``) and ``data_admm.py`` (ADMM on the user's data). Keeping pruned weights
zero while training: ``masks.py``. Filters: ``filters.py`` (criteria and schedules),
``lfpc.py`` (a learnt criterion per layer), ``removal.py`` (physical removal). Shared:
``fxgraph.py`` (the ``torch.fx`` graph), ``reparam.py`` (models pruned with torch's
own tools), ``distributed.py`` (``torchrun``). ``onnx_bridge.py`` turns an ONNX model
into a torch module and writes pruned weights back (``patcc prune``, in
``patcc/prune_command.py``). Every rejected model or setting is a ``PruningError``.
"""

from patcc.frontends.pruning.admm import admm_prune, reconstruction_errors
from patcc.frontends.pruning.admm_config import AdmmConfig
from patcc.frontends.pruning.data_admm import admm_prune_on_data
from patcc.frontends.pruning.filters import (
    CRITERIA,
    AsfpSchedule,
    FilterSelection,
    SoftFilterPruning,
    asfp_schedule,
    filter_scores,
    filters_to_prune,
    gradual_magnitude_schedule,
    hard_filter_prune,
    magnitude_masks,
    prunable_convs,
    select_filters,
    soft_filter_prune,
)
from patcc.frontends.pruning.lfpc import LfpcChoice, lfpc_search
from patcc.frontends.pruning.masks import MaskHandle, PruningMasks, filter_masks, masked_retrain
from patcc.frontends.pruning.patterns import (
    CENTRE,
    PATTERN_ONLY_RATE,
    LayerPruning,
    PruneReport,
    build_pattern_library,
    candidate_patterns,
    connectivity_prune,
    is_depthwise,
    keep_fraction,
    keep_largest_kernels,
    kernel_masks,
    magnitude_prune,
    pattern_prune,
    project_to_patterns,
    select_convs,
)
from patcc.frontends.pruning.removal import RemovalPlan, plan_filter_removal, prune_filters
from patcc.frontends.pruning.reparam import (
    bake_reparametrisations,
    effective_parameters,
    reparametrised,
)
from patcc.frontends.pruning.synthetic import synthetic_batch, synthetic_inputs

__all__ = [
    "admm_prune_on_data",
    "bake_reparametrisations",
    "effective_parameters",
    "reparametrised",
    "CENTRE",
    "CRITERIA",
    "PATTERN_ONLY_RATE",
    "AdmmConfig",
    "AsfpSchedule",
    "FilterSelection",
    "LayerPruning",
    "LfpcChoice",
    "MaskHandle",
    "PruneReport",
    "PruningMasks",
    "RemovalPlan",
    "SoftFilterPruning",
    "admm_prune",
    "asfp_schedule",
    "build_pattern_library",
    "candidate_patterns",
    "connectivity_prune",
    "filter_masks",
    "filter_scores",
    "filters_to_prune",
    "gradual_magnitude_schedule",
    "hard_filter_prune",
    "is_depthwise",
    "keep_fraction",
    "keep_largest_kernels",
    "kernel_masks",
    "lfpc_search",
    "magnitude_masks",
    "magnitude_prune",
    "masked_retrain",
    "pattern_prune",
    "plan_filter_removal",
    "project_to_patterns",
    "prunable_convs",
    "prune_filters",
    "reconstruction_errors",
    "select_convs",
    "select_filters",
    "soft_filter_prune",
    "synthetic_batch",
    "synthetic_inputs",
]
