"""Targets are data: triple, CPU, features, register file, and how to link for them.

A tag names a ``Target`` (``x86_64``, ``x86_64-avx2``, ``aarch64-android``, ...). The
host tag ``x86_64`` takes the CPU and features of the machine compiling, like
``-march=native``; the others are portable. ``aarch64-android`` is a Snapdragon 855
class phone (Cortex-A76: NEON, dot product, fp16 arithmetic) at Android API level
``DEFAULT_ANDROID_API``; ``aarch64-android29`` picks the level. ``--cpu`` and
``--features`` override a tag's CPU and features (``with_overrides``), checked by
LLVM itself. Nothing outside ``patcc/backends`` knows a vector width: kernels read
it, their register count and what an operation costs from the target, and derive
their register blocks from them.

``PATCC_HOST_TARGET=x86_64-avx2`` makes this machine pass for one with only what
that tag needs: the ``x86_64`` tag compiles (and tunes) for it, and code for wider
targets is treated as unable to run here. The test suite runs under it to check an
AVX2 machine's behaviour on an AVX-512 one.
"""

from __future__ import annotations

import os
import platform
import re
import sys
import tempfile
from dataclasses import dataclass, field, replace
from functools import lru_cache

import llvmlite.binding as llvm

from patcc.backends.opencl import OPENCL_TARGETS, OpenCLTarget
from patcc.errors import BackendError

X86_AVX2_ISA = ("avx", "avx2", "fma", "f16c", "bmi", "bmi2", "lzcnt", "movbe", "popcnt")
"""What code for Haswell (the ``x86_64-avx2`` CPU) may use; every AVX2 CPU has it."""
X86_AVX512_ISA = (*X86_AVX2_ISA, "avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl")
"""What code for Skylake-SP (the ``x86_64-avx512`` CPU) may use beyond that."""


@dataclass(frozen=True)
class Target:
    """Everything code generation and linking need to know about a CPU target.

    ``vector_bits`` is the SIMD width used for fp32 vectors and ``vector_registers``
    how many such registers the ISA has (16 for AVX2 and SSE, 32 for AVX-512 and
    NEON): every kernel derives its register blocks from the two, so that no
    generated inner loop spills. ``lane_shift_ops`` is what cutting a vector from two
    neighbouring ones costs in shuffle instructions (``valignd`` on AVX-512, ``ext``
    on NEON: one; AVX2 has no lane shift across its two 128-bit halves: a permute and
    two shuffles); ``shifts_on_fma_pipes``, that they issue to the pipes the FMAs
    use (the Cortex-A76's EXT), else to a shuffle port of their own;
    ``fma_memory_operand``, that an FMA can read one operand from memory (x86), so a
    value the registers cannot hold costs no extra instruction; the cost model
    reads them with ``fma_per_cycle``, ``loads_per_cycle`` and ``fma_latency``.
    ``isa`` lists the CPU features code for the target needs (LLVM's names of the x86
    flags of ``/proc/cpuinfo``): it runs on this machine only if it has them all
    (``runs_here``). ``machine_scheduler`` leaves LLVM's
    pre-register-allocation instruction scheduler on: on AArch64 it moves a whole
    unrolled step's loads to its top and spills dozens of vectors per iteration of
    a register-blocked loop, where the order the kernels are emitted in (each value
    loaded just before its use) spills none, and the out-of-order Cortex-A76 needs
    no static schedule.

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
    vector_registers: int
    elf_arch: str
    isa: tuple[str, ...] = ()
    lane_shift_ops: int = 1
    shifts_on_fma_pipes: bool = False
    fma_memory_operand: bool = False
    fma_per_cycle: int = 2
    loads_per_cycle: int = 2
    fma_latency: int = 4
    machine_scheduler: bool = True
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
    def arch(self) -> str:
        """The architecture of the triple: ``x86_64``, ``aarch64``."""
        return self.triple.split("-")[0]

    @property
    def is_host(self) -> bool:
        """True when this machine has the target's architecture (its code is loaded
        natively, not emulated); ``runs_here`` also checks the CPU features."""
        machine = platform.machine().lower()
        return self.arch == machine or (self.arch == "x86_64" and machine == "amd64")

    @property
    def runs_here(self) -> bool:
        """True when code for this target can run on this machine: same architecture,
        and every CPU feature in ``isa`` present (AVX2 code runs on an AVX-512 CPU,
        not the other way round)."""
        return self.is_host and set(self.isa) <= host_features()

    def missing_features(self) -> list[str]:
        """The features of ``isa`` this machine lacks (empty on another architecture)."""
        return sorted(set(self.isa) - host_features()) if self.is_host else []


def _vector_bits(features: str) -> int:
    if "+avx512f" in features.split(","):
        return 512
    if "+avx2" in features.split(",") or "+avx" in features.split(","):
        return 256
    return 128


def _x86(target: Target, features: str) -> Target:
    """``target`` with the vector width, register count and lane-shift cost x86
    ``features`` give."""
    bits = _vector_bits(features)
    return replace(target, vector_bits=bits, vector_registers=32 if bits == 512 else 16,
                   lane_shift_ops=1 if bits == 512 else 3)


def _x86_target(tag: str, cpu: str, features: str, shape: str, **more: object) -> Target:
    """An x86-64 Linux target; ``shape`` are the features that decide its vectors."""
    base = Target(tag=tag, triple="x86_64-unknown-linux-gnu", cpu=cpu, features=features,
                  vector_bits=128, vector_registers=16, elf_arch="x86_64",
                  fma_memory_operand=True, **more)  # type: ignore[arg-type]
    return _x86(base, shape)


@lru_cache(maxsize=1)
def _real_host_features() -> frozenset[str]:
    return frozenset(name for name, on in llvm.get_host_cpu_features().items() if on)


def host_features() -> frozenset[str]:
    """The CPU features of this machine (LLVM's names, e.g. ``avx2``, ``avx512f``); with
    ``PATCC_HOST_TARGET`` set, only the features that tag needs."""
    forced = _forced_host()
    return frozenset(forced.isa) if forced is not None else _real_host_features()


def _forced_host() -> Target | None:
    tag = os.environ.get("PATCC_HOST_TARGET")
    if not tag:
        return None
    if tag not in _PORTABLE:
        raise BackendError(f"PATCC_HOST_TARGET={tag!r} is not a portable x86 tag; expected "
                         f"one of {', '.join(_PORTABLE)}")
    return _PORTABLE[tag]


@lru_cache(maxsize=1)
def _real_host_target() -> Target:
    cpu = llvm.get_host_cpu_name()
    features = llvm.get_host_cpu_features().flatten()
    return _x86_target("x86_64", cpu, features, features,
                       isa=tuple(sorted(_real_host_features())), tags=frozenset({"host"}))


def host_target() -> Target:
    """The machine compiling, with its own CPU name and features (or, with
    ``PATCC_HOST_TARGET``, the portable target it passes for)."""
    forced = _forced_host()
    if forced is not None:
        return replace(forced, tag="x86_64", tags=frozenset({"host"}))
    return _real_host_target()


_PORTABLE: dict[str, Target] = {
    "x86_64-avx512": _x86_target("x86_64-avx512", "skylake-avx512", "", "+avx512f",
                                 isa=X86_AVX512_ISA),
    "x86_64-avx2": _x86_target("x86_64-avx2", "haswell", "", "+avx2", isa=X86_AVX2_ISA),
    "x86_64-generic": _x86_target("x86_64-generic", "x86-64", "", ""),
}


DEFAULT_ANDROID_API = 24
"""Android 7.0: the oldest level current app stores still accept, and bionic has
every function a model calls."""
MIN_ANDROID_API = 21  # the first 64-bit Android

_ARM: dict[str, Target] = {
    "aarch64-linux": Target(
        tag="aarch64-linux", triple="aarch64-unknown-linux-gnu", cpu="generic",
        features="+neon,+fp-armv8", vector_bits=128, vector_registers=32, elf_arch="aarch64",
        machine_scheduler=False, shifts_on_fma_pipes=True),
    "aarch64-android": Target(
        tag="aarch64-android", triple=f"aarch64-unknown-linux-android{DEFAULT_ANDROID_API}",
        cpu="cortex-a76", features="+neon,+fp-armv8,+dotprod,+fullfp16", vector_bits=128,
        vector_registers=32, elf_arch="aarch64", machine_scheduler=False,
        shifts_on_fma_pipes=True, pin_threads=False,
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
    """Every tag ``find_target`` accepts (and ``aarch64-androidNN`` for API level NN)."""
    return ["x86_64", *_PORTABLE, *_ARM, *OPENCL_TARGETS]


def find_target(tag: str | Target | OpenCLTarget) -> Target | OpenCLTarget:
    """The target a tag names, CPU or GPU alike: a ``Target`` (the LLVM backend's) or an
    ``OpenCLTarget``; which backend builds for it follows from its type. Raises
    ``BackendError`` quoting an unknown tag."""
    if isinstance(tag, (Target, OpenCLTarget)):
        return tag
    return OPENCL_TARGETS[tag] if tag in OPENCL_TARGETS else get_target(tag)


def get_target(tag: str | Target) -> Target:
    """The CPU ``Target`` for a tag; raises ``BackendError`` quoting an unknown tag
    (``find_target`` also takes the OpenCL tags)."""
    if isinstance(tag, Target):
        return tag
    if tag in OPENCL_TARGETS:
        raise BackendError(f"target {tag!r} is an OpenCL device, not a CPU")
    if tag in ("x86_64", "host", "native"):
        host = host_target()
        if not host.is_host:
            raise BackendError(f"target {tag!r} means this machine, which is not x86-64")
        return host if tag == "x86_64" else replace(host, tag=tag)
    if tag in _PORTABLE:
        return _PORTABLE[tag]
    if tag in _ARM:
        return _ARM[tag]
    api = _ANDROID_API_TAG.fullmatch(tag)
    if api:
        level = int(api.group(1))
        if level < MIN_ANDROID_API:
            raise BackendError(f"target {tag!r}: Android API level {level} has no 64-bit ARM; "
                             f"use {MIN_ANDROID_API} or later (e.g. --target aarch64-android29)")
        return replace(_ARM["aarch64-android"], tag=tag,
                       triple=f"aarch64-unknown-linux-android{level}")
    raise BackendError(f"unknown target {tag!r}; expected one of {', '.join(target_tags())} "
                     "(e.g. --target x86_64, or aarch64-android29 for an API level)")


_FEATURE = re.compile(r"[+-][A-Za-z0-9][A-Za-z0-9.\-_]*")


@lru_cache(maxsize=1)
def init_llvm() -> None:
    """Register LLVM's targets and assembly printers (once)."""
    llvm.initialize_all_targets()
    llvm.initialize_all_asmprinters()


def target_machine(target: Target) -> llvm.TargetMachine:
    """An LLVM target machine for ``target`` (O3, PIC)."""
    init_llvm()
    try:
        llvm_target = llvm.Target.from_triple(target.triple)
    except RuntimeError as e:
        raise BackendError(f"LLVM cannot generate code for {target.triple!r}: {e}") from e
    return llvm_target.create_target_machine(
        cpu=target.cpu, features=target.features, opt=3, reloc="pic", codemodel="default")


_UNKNOWN = re.compile(r"'([^']*)' is not a recognized (processor|feature) for this target")


def unknown_cpu_or_features(target: Target) -> tuple[str, str] | None:
    """("CPU" or "feature", name) of the first part of ``target.cpu`` /
    ``target.features`` LLVM does not know, or None.

    LLVM only warns on stderr and carries on; the warning is caught by pointing file
    descriptor 2 at a temporary file while a target machine emits an empty module.
    """
    init_llvm()
    module = llvm.parse_assembly("")
    module.triple = target.triple
    with tempfile.TemporaryFile() as caught:
        sys.stderr.flush()
        saved = os.dup(2)
        try:
            os.dup2(caught.fileno(), 2)
            target_machine(target).emit_object(module)
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        caught.seek(0)
        found = _UNKNOWN.search(caught.read().decode(errors="replace"))
    if found is None:
        return None
    return ("CPU" if found.group(2) == "processor" else "feature", found.group(1))


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
        raise BackendError(f"--cpu {cpu!r} is not a CPU name (e.g. --cpu {example})")
    if features is not None:
        bad = [f for f in features.split(",") if not _FEATURE.fullmatch(f)]
        if bad:
            raise BackendError(f"--features {features!r}: {bad[0]!r} is not +name or -name "
                             "(e.g. --features +neon,+dotprod)")
    if features is None and cpu is not None and "host" in target.tags:
        features = ""  # the named CPU's own features, not this machine's
    new = replace(target, cpu=cpu if cpu is not None else target.cpu,
                  features=features if features is not None else target.features,
                  tags=target.tags - {"host"})
    if new.elf_arch == "x86_64" and new.features:  # LLVM splits wider vectors if need be
        new = _x86(replace(new, isa=tuple(sorted(f[1:] for f in new.features.split(",")
                                                 if f.startswith("+")))), new.features)
    unknown = unknown_cpu_or_features(new)
    if unknown:
        kind, name = unknown
        hint = f"--cpu {example}" if kind == "CPU" else "--features +neon,+dotprod" \
            if target.elf_arch == "aarch64" else "--features +avx2,+fma"
        raise BackendError(f"{kind} {name!r} is not known to LLVM for {target.triple} "
                         f"(e.g. {hint})")
    return new
