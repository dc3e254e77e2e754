"""Targets are data: triple, CPU, features, vector width, and how to link for them.

A tag names a ``Target`` (``x86_64``, ``x86_64-avx2``, ...). The host tag ``x86_64``
takes the CPU and features of the machine compiling, like ``-march=native``; the
others are portable. Nothing outside ``patcc/backends`` knows a vector width: kernels
read it, and their register blocking, from the target.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass, field, replace
from functools import lru_cache

from patcc.errors import PatccError


@dataclass(frozen=True)
class Target:
    """Everything code generation and linking need to know about a CPU target.

    ``vector_bits`` is the SIMD width used for fp32 vectors; ``gemm_block`` is the
    register block (rows of A, vectors of B) of the matrix-product microkernel (the
    direct sparse convolution's blocks are candidates its cost model ranks);
    ``nprocessors_onln`` is ``_SC_NPROCESSORS_ONLN`` in the target's C library, used
    by ``patcc_set_num_threads(0)``; ``pin_threads`` pins the thread pool's workers
    one per CPU (``patcc/backends/llvm/threads.py``), right where the OS scheduler
    treats cores alike and wrong on big.LITTLE phones.
    """

    tag: str
    triple: str
    cpu: str
    features: str
    vector_bits: int
    gemm_block: tuple[int, int]
    elf_arch: str
    nprocessors_onln: int = 84  # glibc and bionic agree on Linux
    pin_threads: bool = True
    tags: frozenset[str] = field(default_factory=frozenset)

    @property
    def vector_width(self) -> int:
        """fp32 lanes per vector."""
        return self.vector_bits // 32

    @property
    def is_host(self) -> bool:
        """True when code for this target runs natively on this machine."""
        machine = platform.machine().lower()
        arch = self.triple.split("-")[0]
        return arch == machine or (arch == "x86_64" and machine == "amd64")


def _vector_bits(features: str) -> int:
    if "+avx512f" in features.split(","):
        return 512
    if "+avx2" in features.split(",") or "+avx" in features.split(","):
        return 256
    return 128


@lru_cache(maxsize=1)
def host_target() -> Target:
    """The machine compiling, with its own CPU name and features."""
    import llvmlite.binding as llvm

    cpu = llvm.get_host_cpu_name()
    features = llvm.get_host_cpu_features().flatten()
    bits = _vector_bits(features)
    return Target(
        tag="x86_64", triple="x86_64-unknown-linux-gnu", cpu=cpu, features=features,
        vector_bits=bits, gemm_block=(6, 4) if bits == 512 else (4, 3), elf_arch="x86_64",
        tags=frozenset({"host"}),
    )


_PORTABLE: dict[str, Target] = {
    "x86_64-avx512": Target(
        tag="x86_64-avx512", triple="x86_64-unknown-linux-gnu", cpu="skylake-avx512",
        features="", vector_bits=512, gemm_block=(6, 4), elf_arch="x86_64"),
    "x86_64-avx2": Target(
        tag="x86_64-avx2", triple="x86_64-unknown-linux-gnu", cpu="haswell",
        features="", vector_bits=256, gemm_block=(4, 3), elf_arch="x86_64"),
    "x86_64-generic": Target(
        tag="x86_64-generic", triple="x86_64-unknown-linux-gnu", cpu="x86-64",
        features="", vector_bits=128, gemm_block=(4, 2), elf_arch="x86_64"),
}


def target_tags() -> list[str]:
    """Every tag ``get_target`` accepts."""
    return ["x86_64", *_PORTABLE]


def get_target(tag: str | Target) -> Target:
    """The ``Target`` for a tag; raises ``PatccError`` quoting an unknown tag."""
    if isinstance(tag, Target):
        return tag
    if tag in ("x86_64", "host", "native"):
        host = host_target()
        if not host.is_host:
            raise PatccError(f"target {tag!r} means this machine, which is not x86-64")
        return host if tag == "x86_64" else replace(host, tag=tag)
    if tag in _PORTABLE:
        return _PORTABLE[tag]
    raise PatccError(f"unknown target {tag!r}; expected one of {', '.join(target_tags())} "
                     "(e.g. --target x86_64)")
