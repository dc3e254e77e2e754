"""Pattern-aware compressed weight storage, read front to back by the pattern kernel.

Filters appear in their conv's storage order (``Conv.storage_order``: the reorder
pass's ``filter_order``, which only the conv holds, or the identity). For each
filter: ``counts[f, p]`` kernels of pattern p (its kept taps, ``tap_sets[p]``), in
library order; for each kept kernel
its input channel (uint16) and its kept weights in tap order. ``kernel_start`` and
``weight_start`` index the first kernel and weight of each filter. Compared with
CSR (fp32 value + int32 column per non-zero, int32 row pointers), a 4-tap kernel
costs 16 + 2 bytes instead of 32: about 0.56x.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from patcc.ir.node import IRNode


@dataclass(frozen=True, eq=False)
class CompressedWeights(IRNode):
    """One conv's weights in the pattern-aware layout (see the module docstring)."""

    tap_sets: tuple[tuple[tuple[int, int], ...], ...]  # each pattern's kept (dy, dx)
    counts: np.ndarray  # uint16 (O, m), storage order
    channels: np.ndarray  # uint16 (kept kernels,)
    weights: np.ndarray  # float32 (kept weights,)
    kernel_start: np.ndarray  # int32 (O,)
    weight_start: np.ndarray  # int32 (O,)

    @property
    def nbytes(self) -> int:
        """Bytes the kernel reads: the stored arrays and the filter order (int32 per
        filter) it reads beside them."""
        return 4 * len(self.kernel_start) + sum(
            int(a.nbytes) for a in (self.counts, self.channels, self.weights,
                                    self.kernel_start, self.weight_start))

    def decompress(self, shape: tuple[int, int, int, int], groups: int,
                   order: np.ndarray) -> np.ndarray:
        """The dense (O, I/groups, kh, kw) weight tensor these arrays encode, stored in
        filter ``order`` (storage position -> output channel)."""
        o, cg = shape[0], shape[1]
        og = o // groups
        dense = np.zeros(shape, np.float32)
        k = w = 0
        for pos, f in enumerate(order.tolist()):
            for p, taps in enumerate(self.tap_sets):
                for _ in range(int(self.counts[pos, p])):
                    ci = int(self.channels[k]) - (f // og) * cg
                    for dy, dx in taps:
                        dense[f, ci, dy, dx] = self.weights[w]
                        w += 1
                    k += 1
        return dense


def csr_bytes(weight: np.ndarray) -> int:
    """Size of ``weight`` as CSR over (filters, inputs*kh*kw): fp32 values, int32 columns
    and row pointers."""
    nnz = int(np.count_nonzero(weight))
    return nnz * (4 + 4) + (weight.shape[0] + 1) * 4
