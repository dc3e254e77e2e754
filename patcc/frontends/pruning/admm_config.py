"""The knobs of data-free ADMM (:func:`~patcc.frontends.pruning.admm.admm_prune`):
the optimisation, and the synthetic inputs it runs on (``synthetic.py``). Data-aware
ADMM (``data_admm.py``) uses its ``rho`` schedule."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from patcc.errors import PruningError

INPUTS = ("bn-matched", "uniform")


@dataclass(frozen=True)
class AdmmConfig:
    """The knobs of data-free ADMM.

    The defaults are patcc's recipe. It differs from the published one
    (:meth:`published`) in three measured ways:

    - The synthetic inputs match the model's batch-norm statistics (``inputs``).
    - SGD uses lr 1e-2.
    - Masked refitting follows the final projection (``refit_epochs``).

    On the digits benchmark, pruned 8x, they lift the accuracy before retraining from
    chance to within a few points of the dense model (``benchmarks/pruning.py``).

    ``mean``/``std`` are the model's input normalisation applied to the synthetic
    pixels (after scaling 0..255 to 0..1); ``None`` means ImageNet's for 3-channel
    inputs and none otherwise.
    """

    epochs: int = 44
    iterations: int = 10  # per epoch
    batch_size: int = 32
    lr: float = 1e-2
    momentum: float = 0.9
    rho: float = 1e-4
    rho_growth: float = 10.0
    rho_every: int = 11  # epochs
    rho_max: float = 1e-1
    refit_epochs: int = 11
    """After the hard projection, this many epochs of masked SGD on the same data-free
    objective (0: projection last, as published)."""
    inputs: str = "bn-matched"
    """``"uniform"``: the normalised uniform pixels as they are. ``"bn-matched"``:
    those pixels then optimised until the features entering every batch norm have
    its running mean and variance (the statistics of the training data, taken from
    the model alone); a model without batch norms keeps uniform inputs."""
    pool_batches: int = 8
    """The inputs are a pool of this many batches, drawn (and matched) once; each
    step samples a batch from it. One more batch, held out, measures the errors."""
    distil_steps: int = 50  # Adam steps matching each pool batch to the statistics
    seed: int = 0
    mean: Sequence[float] | None = None
    std: Sequence[float] | None = None

    @classmethod
    def published(cls, **changes: Any) -> AdmmConfig:
        """The recipe exactly as published: uniform inputs, SGD lr 1e-3, projection last."""
        return cls(**{"lr": 1e-3, "refit_epochs": 0, "inputs": "uniform", **changes})

    def __post_init__(self) -> None:
        if self.inputs not in INPUTS:
            raise PruningError(f"AdmmConfig.inputs must be one of {', '.join(INPUTS)}, got "
                               f"{self.inputs!r}")
        for name in ("refit_epochs", "distil_steps"):
            if getattr(self, name) < 0:
                raise PruningError(f"AdmmConfig.{name} must be 0 or more, got "
                                   f"{getattr(self, name)}")
        for name in ("epochs", "iterations", "batch_size", "rho_every", "pool_batches"):
            if getattr(self, name) < 1:
                raise PruningError(f"AdmmConfig.{name} must be at least 1, got "
                                   f"{getattr(self, name)}")
        if not 0 <= self.momentum < 1:
            raise PruningError(f"AdmmConfig.momentum must be in [0, 1), got {self.momentum!r}")
        for name in ("lr", "rho", "rho_growth", "rho_max"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise PruningError(f"AdmmConfig.{name} must be a positive number, got {value!r}")

    def rho_at(self, epoch: int) -> float:
        """The penalty weight during ``epoch`` (0-based)."""
        return min(self.rho_max, self.rho * self.rho_growth ** (epoch // self.rho_every))
