"""Pattern style of a 3x3 convolution: the model-wide library and per-kernel ids.

A pattern-pruned model keeps, in each 3x3 kernel, the weights of one mask from a
small library (PatDNN: the centre plus three neighbours, 6-8 masks model-wide), and
removes whole kernels (connectivity pruning). The IR records, per conv layer, the
library and one int8 pattern id per (filter, input channel) kernel, -1 for a removed
kernel; everything else (kernels kept, non-zero weights) is derived from those.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import numpy as np

from patcc.ir.node import IRNode

REMOVED = -1
"""Pattern id of a kernel removed by connectivity pruning."""

MAX_LIBRARY_SIZE = 32
"""Above this many distinct masks model-wide a layer is unstructured, not pattern style."""


class Sparsity(str, Enum):
    """How a convolution's zeros are structured, as detected from its weights."""

    DENSE = "dense"
    PATTERN = "pattern"
    UNSTRUCTURED = "unstructured"


@dataclass(frozen=True, eq=False)
class PatternLibrary(IRNode):
    """The model-wide library: ``masks`` is a bool array of shape (m, 3, 3)."""

    masks: np.ndarray

    def __len__(self) -> int:
        return int(self.masks.shape[0])

    @property
    def sizes(self) -> np.ndarray:
        """Kept taps per pattern, shape (m,)."""
        return self.masks.reshape(len(self), 9).sum(axis=1)

    def grid(self, pattern_id: int) -> list[str]:
        """The mask drawn as three lines of ``#`` (kept) and ``.`` (removed)."""
        mask = self.masks[pattern_id]
        return ["".join("#" if v else "." for v in row) for row in mask]

    def draw(self) -> str:
        """All patterns side by side, numbered, as a small text block."""
        if len(self) == 0:
            return "(empty library)"
        header = "  ".join(f"{i:<3d}" for i in range(len(self)))
        rows = ["  ".join(self.grid(i)[r] for i in range(len(self))) for r in range(3)]
        return "\n".join([header, *rows])


@dataclass(frozen=True, eq=False)
class PatternStyle(IRNode):
    """Per-kernel pattern ids of one 3x3 conv against the model-wide library.

    ``kernel_pattern`` is int8 of shape (out_channels, in_channels // groups); entry
    -1 (``REMOVED``) marks a kernel removed by connectivity pruning.
    """

    library: PatternLibrary
    kernel_pattern: np.ndarray

    @property
    def kept(self) -> np.ndarray:
        """Bool array (O, I/g): which kernels remain."""
        return self.kernel_pattern != REMOVED

    @property
    def kernels_kept(self) -> int:
        return int(self.kept.sum())

    @property
    def kernels_total(self) -> int:
        return int(self.kernel_pattern.size)

    @property
    def nonzero_weights(self) -> int:
        """Weights inside the masks of kept kernels (what the pattern kernel multiplies)."""
        ids = self.kernel_pattern[self.kept].astype(np.int64)
        return int(self.library.sizes[ids].sum())

    @property
    def patterns_used(self) -> tuple[int, ...]:
        """Sorted ids of the library patterns this layer uses."""
        return tuple(int(i) for i in np.unique(self.kernel_pattern[self.kept]))

    def dense_mask(self) -> np.ndarray:
        """Bool array (O, I/g, 3, 3): the weights this style keeps."""
        ids = np.where(self.kept, self.kernel_pattern, 0).astype(np.int64)
        return self.library.masks[ids] & self.kept[..., None, None]


def kernel_masks(weight: np.ndarray) -> np.ndarray:
    """Bool array (O, I/g, kh, kw) of non-zero weights."""
    return weight != 0


def masks_to_codes(masks: np.ndarray) -> np.ndarray:
    """Encode 3x3 bool masks (..., 3, 3) as 9-bit integers, bit 0 = top-left."""
    flat = masks.reshape(*masks.shape[:-2], 9).astype(np.int64)
    return (flat << np.arange(9)).sum(axis=-1)


def codes_to_masks(codes: np.ndarray) -> np.ndarray:
    """Inverse of :func:`masks_to_codes`."""
    codes = np.asarray(codes, dtype=np.int64)
    bits = (codes[..., None] >> np.arange(9)) & 1
    return bits.astype(bool).reshape(*codes.shape, 3, 3)
