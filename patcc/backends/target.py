"""Targets are data: triple, CPU, features, vector width, and how to link for them.

A tag names a ``Target`` (``x86_64``, ``x86_64-avx2``, ``aarch64-android``, ...). The
host tag ``x86_64`` takes the CPU and features of the machine compiling, like
``-march=native``; the others are portable. ``aarch64-android`` is a Snapdragon 855
class phone (Cortex-A76: NEON, dot product, fp16 arithmetic) at Android API level
``DEFAULT_ANDROID_API``; ``aarch64-android29`` picks the level. ``--cpu`` and
``--features`` override a tag's CPU and features (``with_overrides``), checked by
LLVM itself. Nothing outside ``patcc/backends`` knows a vector width: kernels read
it, and their register blocking, from the target.
"""

from __future__ import annotations

import platform
import re
from dataclasses import dataclass, field, replace
from functools import lru_cache

from patcc.errors import PatccError


@dataclass(frozen=True)
class Target:
    """Everything code generation and linking need to know about a CPU target.

    ``vector_bits`` is the SIMD width used for fp32 vectors; ``gemm_block`` is the
    register block (rows of A, vectors of B) of the matrix-product microkernel (the
    direct sparse convolution's blocks are candidates its cost model ranks).
    ``nprocessors_onln`` is ``_SC_NPROCESSORS_ONLN`` in the target's C library, which
    ``patcc_set_num_threads(0)`` asks when it cannot read the affinity mask.
    ``pin_threads`` pins the thread pool's workers one per CPU
    (``patcc/backends/llvm/threads.py``), right where the OS scheduler treats cores
    alike and wrong on big.LITTLE phones. ``libraries`` are the shared libraries
    (sonames) a cross-linked model may need: the C library and libm of the target's
    C library (bionic's or glibc's names). ``soname``: a saved ``.so`` names itself
    after its file (``DT_SONAME``), as Android's loader requires from API level 23;
    elsewhere it has none, so a program linked against it by path finds it by that
    path.
    """

    tag: str
    triple: str
    cpu: str
    features: str
    vector_bits: int
    gemm_block: tuple[int, int]
    elf_arch: str
    nprocessors_onln: int = 84  # glibc's; bionic's is 0x61
    pin_threads: bool = True
    libraries: tuple[str, ...] = ("libc.so.6", "libm.so.6")
    soname: bool = False
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


DEFAULT_ANDROID_API = 24
"""Android 7.0: the oldest level current app stores still accept, and bionic has
every function a model calls."""
MIN_ANDROID_API = 21  # the first 64-bit Android

_ARM: dict[str, Target] = {
    "aarch64-linux": Target(
        tag="aarch64-linux", triple="aarch64-unknown-linux-gnu", cpu="generic",
        features="+neon,+fp-armv8", vector_bits=128, gemm_block=(6, 4), elf_arch="aarch64"),
    "aarch64-android": Target(
        tag="aarch64-android", triple=f"aarch64-unknown-linux-android{DEFAULT_ANDROID_API}",
        cpu="cortex-a76", features="+neon,+fp-armv8,+dotprod,+fullfp16", vector_bits=128,
        gemm_block=(6, 4), elf_arch="aarch64", pin_threads=False,
        libraries=("libc.so", "libm.so", "libdl.so"), soname=True, nprocessors_onln=0x61),
}
_ANDROID_API_TAG = re.compile(r"aarch64-android(\d+)")

_SCHEDULING_MODELS = {
    # LLVM gives the Cortex-A76 the Cortex-A57's scheduling model: one 128-bit FMA per
    # cycle. The Neoverse N1 is the A76's server sibling, the same core with the same
    # two 128-bit FMA pipes, and has its own model since LLVM 17.
    "cortex-a76": "neoverse-n1",
    "cortex-a76ae": "neoverse-n1",
}


def scheduling_model_cpu(cpu: str) -> str:
    """The CPU whose LLVM scheduling model best describes ``cpu`` (for llvm-mca)."""
    return _SCHEDULING_MODELS.get(cpu, cpu)


def target_tags() -> list[str]:
    """Every tag ``get_target`` accepts (and ``aarch64-androidNN`` for API level NN)."""
    return ["x86_64", *_PORTABLE, *_ARM, "opencl", "opencl-adreno"]


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
    if tag in _ARM:
        return _ARM[tag]
    api = _ANDROID_API_TAG.fullmatch(tag)
    if api:
        level = int(api.group(1))
        if level < MIN_ANDROID_API:
            raise PatccError(f"target {tag!r}: Android API level {level} has no 64-bit ARM; "
                             f"use {MIN_ANDROID_API} or later (e.g. --target aarch64-android29)")
        return replace(_ARM["aarch64-android"], tag=tag,
                       triple=f"aarch64-unknown-linux-android{level}")
    raise PatccError(f"unknown target {tag!r}; expected one of {', '.join(target_tags())} "
                     "(e.g. --target x86_64, or aarch64-android29 for an API level)")


_FEATURE = re.compile(r"[+-][A-Za-z0-9][A-Za-z0-9.\-_]*")


def with_overrides(target: Target, cpu: str | None = None, features: str | None = None
                   ) -> Target:
    """``target`` with its CPU and/or features replaced (``--cpu``, ``--features``).

    Features are a comma-separated list of ``+name`` / ``-name``; both are checked
    against what LLVM knows for the target's architecture, and an unknown one is a
    ``PatccError`` quoting it with a valid example.
    """
    if cpu is None and features is None:
        return target
    example = "cortex-a76" if target.elf_arch == "aarch64" else "znver4"
    if cpu is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9.\-_]*", cpu):
        raise PatccError(f"--cpu {cpu!r} is not a CPU name (e.g. --cpu {example})")
    if features is not None:
        bad = [f for f in features.split(",") if not _FEATURE.fullmatch(f)]
        if bad:
            raise PatccError(f"--features {features!r}: {bad[0]!r} is not +name or -name "
                             "(e.g. --features +neon,+dotprod)")
    if features is None and cpu is not None and "host" in target.tags:
        features = ""  # the named CPU's own features, not this machine's
    new = replace(target, cpu=cpu if cpu is not None else target.cpu,
                  features=features if features is not None else target.features,
                  tags=target.tags - {"host"})
    if new.elf_arch == "x86_64" and new.features:  # LLVM splits wider vectors if need be
        new = replace(new, vector_bits=_vector_bits(new.features))
    from patcc.backends.llvm.toolchain import unknown_cpu_or_features

    unknown = unknown_cpu_or_features(new)
    if unknown:
        kind, name = unknown
        hint = f"--cpu {example}" if kind == "CPU" else "--features +neon,+dotprod" \
            if target.elf_arch == "aarch64" else "--features +avx2,+fma"
        raise PatccError(f"{kind} {name!r} is not known to LLVM for {target.triple} "
                         f"(e.g. {hint})")
    return new
