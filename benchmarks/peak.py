"""The benchmarks' name for ``patcc.backends.llvm.peak`` (the measured FMA peak),
which ``patcc compile --report`` uses too."""

from patcc.backends.llvm.peak import fma_peak, nominal_flop_per_cycle

__all__ = ["fma_peak", "nominal_flop_per_cycle"]
