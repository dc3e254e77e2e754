"""From an llvmlite module to bytes: optimise, emit an object, link a shared object.

Optimisation uses LLVM's new pass builder at O3 with the target machine's CPU and
features; objects are position independent. The host target links with the system
C compiler (``cc -shared``), exporting only the C ABI through a version script.

Other targets link with ``ld.lld`` (Debian's ``lld``, or the one in the ``ziglang``
wheel) and no sysroot: the symbols the code object leaves undefined are sorted into
the target's C library and libm, a stub shared object with those symbols and the
real library's soname is linked for each (``-z defs``: nothing else may be missing),
and the model records them as ``DT_NEEDED``. So the shared object asks for exactly
``libc.so`` and, if it calls any, ``libm.so`` (bionic's names) or ``libc.so.6`` /
``libm.so.6`` (glibc's), and both loaders resolve it on the device.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import llvmlite.binding as llvm
from llvmlite import ir

from patcc.backends.elf import ELF_ARCHES, blob_object, read_symbols
from patcc.backends.llvm.lowering import BLOB_ALIGN, BLOB_SYMBOL
from patcc.backends.target import Target, target_machine
from patcc.errors import BackendError
from patcc.text import module_id

EXPORTS = (
    "patcc_run", "patcc_workspace_size", "patcc_model_info", "patcc_set_num_threads",
    "patcc_get_num_threads", "patcc_abi_version",
)


def optimize(module: ir.Module, target: Target) -> llvm.ModuleRef:
    """Parse, verify and optimise ``module`` at O3 for ``target``."""
    tm = target_machine(target)
    mod = llvm.parse_assembly(str(module))
    mod.triple = target.triple
    mod.data_layout = str(tm.target_data)
    mod.verify()
    pto = llvm.create_pipeline_tuning_options(speed_level=3)
    pto.loop_vectorization = True
    pto.slp_vectorization = True
    pto.loop_unrolling = True
    pb = llvm.create_pass_builder(tm, pto)
    pb.getModulePassManager().run(mod, pb)
    return mod


@contextmanager
def _codegen_options(target: Target) -> Iterator[None]:
    """LLVM's code generator configured for ``target`` (its options are process-wide:
    set for this emission, back to LLVM's default after)."""
    if target.machine_scheduler:
        yield
        return
    llvm.set_option("patcc", "-enable-misched=false")
    try:
        yield
    finally:
        llvm.set_option("patcc", "-enable-misched=true")


def emit_object(mod: llvm.ModuleRef, target: Target) -> bytes:
    with _codegen_options(target):
        return bytes(target_machine(target).emit_object(mod))


def emit_assembly(mod: llvm.ModuleRef, target: Target) -> str:
    """Verbose assembly: every block with its IR name and place in the loop nest."""
    tm = target_machine(target)
    tm.set_asm_verbosity(True)
    with _codegen_options(target):
        return str(tm.emit_assembly(mod))


def weights_object(blob: bytes, target: Target) -> bytes:
    """The ELF object holding the weight blob as the hidden symbol the code reads."""
    return blob_object(BLOB_SYMBOL, blob, ELF_ARCHES[target.elf_arch], BLOB_ALIGN)


def _host_cc() -> str:
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise BackendError("no C compiler to link with; install one (apt-get install "
                         "build-essential) or set CC")
    return cc


LIBM_FUNCTIONS = frozenset(
    name + suffix
    for name in ("acos", "acosh", "asin", "asinh", "atan", "atan2", "atanh", "cbrt", "ceil",
                 "copysign", "cos", "cosh", "erf", "erfc", "exp", "exp2", "expm1", "fabs",
                 "floor", "fma", "fmax", "fmin", "fmod", "frexp", "hypot", "ldexp", "lgamma",
                 "log", "log10", "log1p", "log2", "lrint", "lround", "modf", "nearbyint",
                 "nextafter", "pow", "remainder", "rint", "round", "sin", "sinh", "sqrt",
                 "tan", "tanh", "tgamma", "trunc")
    for suffix in ("", "f", "l"))
"""C math functions: a cross-linked model finds these in libm, everything else in libc."""


def find_lld() -> list[str]:
    """The command that runs ``ld.lld``: Debian's (any version), else the ziglang
    wheel's; a ``PatccError`` saying how to get one when there is neither."""
    for name in ("ld.lld", *(f"ld.lld-{v}" for v in range(30, 10, -1))):
        found = shutil.which(name)
        if found:
            return [found]
    if importlib.util.find_spec("ziglang") is not None:
        return [sys.executable, "-m", "ziglang", "ld.lld"]
    raise BackendError("cross-linking needs ld.lld, which is not installed: apt-get install "
                     "lld (Debian/Ubuntu), or pip install ziglang")


def _run_linker(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        raise BackendError(f"linking failed: {detail[0] if detail else proc.returncode}")


def _stub_library(target: Target, soname: str, symbols: list[str], path: Path) -> None:
    """A shared object named ``soname`` that defines ``symbols``, to link against."""
    module = ir.Module(name=module_id(soname))
    module.triple = target.triple
    for name in symbols:
        fn = ir.Function(module, ir.FunctionType(ir.VoidType(), []), name)
        ir.IRBuilder(fn.append_basic_block()).ret_void()
    obj = path.with_suffix(".o")
    obj.write_bytes(emit_object(optimize(module, target), target))
    _run_linker([*find_lld(), "-shared", f"-soname={soname}", "-o", str(path), str(obj)])


def _cross_link(paths: list[str], objects: list[bytes], target: Target, out: Path,
                script: Path, soname: str | None) -> None:
    """Link a shared object for a foreign target with ld.lld against stub libraries."""
    symbols = [read_symbols(data) for data in objects]
    defined = set().union(*(s.defined for s in symbols))
    missing = sorted(set().union(*(s.undefined for s in symbols)) - defined)
    libc, libm = target.libraries[0], target.libraries[1]
    wanted = {libc: [m for m in missing if m not in LIBM_FUNCTIONS],
              libm: [m for m in missing if m in LIBM_FUNCTIONS]}
    stubs = []
    for library, names in wanted.items():
        if names:
            stub = out.parent / "stubs" / library
            stub.parent.mkdir(exist_ok=True)
            _stub_library(target, library, names, stub)
            stubs.append(str(stub))
    # Segments aligned for 64 KiB pages also load where pages are 4 or 16 KiB
    # (Android 15 devices may use 16).
    _run_linker([*find_lld(), "-shared", "-o", str(out), *paths, *stubs,
                 f"--version-script={script}", "-z", "noexecstack", "-z", "defs",
                 "-z", "now", "-z", "max-page-size=65536", "--build-id=none",
                 "--hash-style=both", *([f"-soname={soname}"] if soname else [])])


def link(objects: list[bytes], target: Target, relocatable: bool = False,
         exports: tuple[str, ...] = EXPORTS, soname: str | None = None) -> bytes:
    """Link object files into a shared object (or one relocatable object) for ``target``.

    Only ``exports`` are visible from the shared object; ``soname`` is its
    ``DT_SONAME``.
    """
    with tempfile.TemporaryDirectory(prefix="patcc-link-") as tmp:
        d = Path(tmp)
        paths = []
        for i, data in enumerate(objects):
            p = d / f"part{i}.o"
            p.write_bytes(data)
            paths.append(str(p))
        out = d / ("model.o" if relocatable else "model.so")
        script = d / "exports.map"
        script.write_text("{ global: " + " ".join(f"{s};" for s in exports)
                          + " local: *; };\n")
        if not target.is_host:
            if relocatable:
                _run_linker([*find_lld(), "-r", "-o", str(out), *paths])
            else:
                _cross_link(paths, objects, target, out, script, soname)
        elif relocatable:
            _run_linker([_host_cc(), "-r", "-nostdlib", "-o", str(out), *paths])
        else:
            _run_linker([_host_cc(), "-shared", "-o", str(out), *paths,
                         f"-Wl,--version-script={script}", "-Wl,-z,noexecstack",
                         "-Wl,--build-id=none", "-lpthread", "-lm",
                         *(["-Xlinker", f"-soname={soname}"] if soname else [])])
        return out.read_bytes()
