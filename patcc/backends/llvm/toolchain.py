"""From an llvmlite module to bytes: optimise, emit an object, link a shared object.

Optimisation uses LLVM's new pass builder at O3 with the target machine's CPU and
features; objects are position independent. The host target links with the system
C compiler (``cc -shared``), exporting only the C ABI through a version script.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from functools import lru_cache
from pathlib import Path

import llvmlite.binding as llvm
from llvmlite import ir

from patcc.backends.elf import ELF_ARCHES, blob_object
from patcc.backends.llvm.lowering import BLOB_ALIGN, BLOB_SYMBOL
from patcc.backends.target import Target
from patcc.errors import PatccError

EXPORTS = (
    "patcc_run", "patcc_workspace_size", "patcc_model_info", "patcc_set_num_threads",
    "patcc_get_num_threads", "patcc_abi_version",
)


@lru_cache(maxsize=1)
def _init_llvm() -> None:
    llvm.initialize_all_targets()
    llvm.initialize_all_asmprinters()


def target_machine(target: Target) -> llvm.TargetMachine:
    """An LLVM target machine for ``target`` (O3, PIC)."""
    _init_llvm()
    try:
        llvm_target = llvm.Target.from_triple(target.triple)
    except RuntimeError as e:
        raise PatccError(f"LLVM cannot generate code for {target.triple!r}: {e}") from e
    return llvm_target.create_target_machine(
        cpu=target.cpu, features=target.features, opt=3, reloc="pic", codemodel="default")


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


def emit_object(mod: llvm.ModuleRef, target: Target) -> bytes:
    return bytes(target_machine(target).emit_object(mod))


def emit_assembly(mod: llvm.ModuleRef, target: Target) -> str:
    return str(target_machine(target).emit_assembly(mod))


def weights_object(blob: bytes, target: Target) -> bytes:
    """The ELF object holding the weight blob as the hidden symbol the code reads."""
    return blob_object(BLOB_SYMBOL, blob, ELF_ARCHES[target.elf_arch], BLOB_ALIGN)


def _host_cc() -> str:
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise PatccError("no C compiler to link with; install one (apt-get install "
                         "build-essential) or set CC")
    return cc


def link(objects: list[bytes], target: Target, relocatable: bool = False,
         exports: tuple[str, ...] = EXPORTS) -> bytes:
    """Link object files into a shared object (or one relocatable object) for ``target``.

    Only ``exports`` are visible from the shared object.
    """
    if not target.is_host:
        raise PatccError(f"linking for {target.tag!r} is not available on this machine")
    with tempfile.TemporaryDirectory(prefix="patcc-link-") as tmp:
        d = Path(tmp)
        paths = []
        for i, data in enumerate(objects):
            p = d / f"part{i}.o"
            p.write_bytes(data)
            paths.append(str(p))
        out = d / ("model.o" if relocatable else "model.so")
        if relocatable:
            cmd = [_host_cc(), "-r", "-nostdlib", "-o", str(out), *paths]
        else:
            script = d / "exports.map"
            script.write_text("{ global: " + " ".join(f"{s};" for s in exports)
                              + " local: *; };\n")
            cmd = [_host_cc(), "-shared", "-o", str(out), *paths,
                   f"-Wl,--version-script={script}", "-Wl,-z,noexecstack",
                   "-Wl,--build-id=none", "-lpthread", "-lm"]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            detail = (proc.stderr or proc.stdout).strip().splitlines()
            raise PatccError(f"linking failed: {detail[0] if detail else proc.returncode}")
        return out.read_bytes()
