"""Running a model built for another architecture under user-mode emulation (qemu).

A small C harness, built once per architecture with the cross C compiler and kept in
the user cache directory, loads the model with ``dlopen`` and calls it through the C
ABI exactly as an application would: ``harness MODEL.so info`` prints the model's
JSON description, ``harness MODEL.so run THREADS N IN BYTES... M OUT BYTES...`` reads
raw float32 inputs from files and writes the outputs. ``EmulatedModel`` drives it
through ``qemu-<arch>`` with the cross C library as its root (``-L``).

Models for Android need bionic's ``libc.so``/``libm.so``/``libdl.so``; under glibc
those names are links, in a private directory on ``LD_LIBRARY_PATH``, to glibc's
libraries. Both provide every function a model calls; what this cannot show is
anything peculiar to Android's loader itself.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from patcc.backends.abi import ABI_VERSION
from patcc.errors import ExecutionError
from patcc.runtime.interpreter import bind_inputs
from patcc.runtime.native import CompiledModelRunner, parse_model_info


class Emulator:
    """Tools that run one foreign architecture here: qemu, a cross C compiler, the
    cross C library, and the Debian packages that carry them."""

    def __init__(self, arch: str, qemu: str, cc: str, sysroot: str, packages: str) -> None:
        self.arch, self.qemu, self.cc, self.sysroot = arch, qemu, cc, sysroot
        self.packages = packages

    def check(self) -> None:
        """Raise ``PatccError`` naming the packages to install if a tool is missing."""
        missing = [name for name in (self.qemu, self.cc) if shutil.which(name) is None]
        if not (Path(self.sysroot) / "lib").is_dir():
            missing.append(f"the {self.arch} C library ({self.sysroot})")
        if missing:
            raise ExecutionError(f"running {self.arch} code here needs {', '.join(missing)}: "
                             f"apt-get install {self.packages}")


EMULATORS = {
    "aarch64": Emulator("aarch64", "qemu-aarch64", "aarch64-linux-gnu-gcc",
                        "/usr/aarch64-linux-gnu",
                        "qemu-user gcc-aarch64-linux-gnu libc6-arm64-cross "
                        "libc6-dev-arm64-cross"),
}
"""Architectures (as ``patcc.runtime.native.elf_machine`` names them) that run here."""

BIONIC_NAMES = {"libc.so": "libc.so.6", "libm.so": "libm.so.6", "libdl.so": "libdl.so.2"}
"""Android library names and the glibc libraries that stand in for them."""

HARNESS_C = r"""
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef int32_t (*run_fn)(const float *const *, float *const *, void *, size_t);
typedef size_t (*size_fn)(void);
typedef const char *(*info_fn)(void);
typedef int32_t (*threads_fn)(int32_t);
typedef int32_t (*int_fn)(void);

static void *lib;

static void *need(const char *name) {
    void *f = dlsym(lib, name);
    if (!f) { fprintf(stderr, "harness: no %s in the model\n", name); exit(3); }
    return f;
}

static void *file_io(const char *path, size_t bytes, void *buf) {
    FILE *f = fopen(path, buf ? "wb" : "rb");
    void *data = buf ? buf : malloc(bytes ? bytes : 1);
    size_t done = !f ? 0 : buf ? fwrite(data, 1, bytes, f) : fread(data, 1, bytes, f);
    if (!f || done != bytes) { fprintf(stderr, "harness: cannot %s %s\n",
                                       buf ? "write" : "read", path); exit(3); }
    fclose(f);
    return data;
}

int main(int argc, char **argv) {
    if (argc < 3) { fprintf(stderr, "usage: harness MODEL.so info|threads|run ...\n"); return 2; }
    lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (!lib) { fprintf(stderr, "harness: %s\n", dlerror()); return 3; }
    if (((int_fn)need("patcc_abi_version"))() != PATCC_ABI) {
        fprintf(stderr, "harness: ABI version mismatch\n"); return 3;
    }
    if (!strcmp(argv[2], "info")) { puts(((info_fn)need("patcc_model_info"))()); return 0; }
    if (!strcmp(argv[2], "threads")) {  /* threads N: the count set_num_threads(N) gives */
        if (argc < 4 || ((threads_fn)need("patcc_set_num_threads"))(atoi(argv[3]))) return 4;
        printf("%d\n", ((int_fn)need("patcc_get_num_threads"))());
        return 0;
    }
    int a = 3, threads = atoi(argv[a++]);
    int nin = atoi(argv[a++]);
    const float **ins = calloc(nin + 1, sizeof *ins);
    for (int i = 0; i < nin; i++, a += 2)
        ins[i] = file_io(argv[a], strtoull(argv[a + 1], 0, 10), 0);
    int nout = atoi(argv[a++]);
    float **outs = calloc(nout + 1, sizeof *outs);
    char **out_paths = argv + a;
    for (int i = 0; i < nout; i++) outs[i] = malloc(strtoull(argv[a + 2 * i + 1], 0, 10) + 1);
    size_t ws = ((size_fn)need("patcc_workspace_size"))();
    void *workspace = aligned_alloc(64, (ws + 63) / 64 * 64 + 64);
    if (((threads_fn)need("patcc_set_num_threads"))(threads)) {
        fprintf(stderr, "harness: cannot use %d threads\n", threads); return 4;
    }
    int32_t rc = ((run_fn)need("patcc_run"))(ins, outs, workspace, ws);
    if (rc) { fprintf(stderr, "harness: patcc_run returned %d\n", rc); return 4; }
    for (int i = 0; i < nout; i++)
        file_io(out_paths[2 * i], strtoull(out_paths[2 * i + 1], 0, 10), outs[i]);
    return 0;
}
"""


def harness(emulator: Emulator) -> Path:
    """The harness executable for ``emulator``'s architecture, built on first use."""
    from patcc.fileio import cache_dir

    source = HARNESS_C.replace("PATCC_ABI", str(ABI_VERSION))
    digest = hashlib.sha256((source + emulator.cc).encode()).hexdigest()[:12]
    path = cache_dir() / f"harness-{emulator.arch}-{digest}"
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="patcc-harness-") as tmp:
        c_file = Path(tmp) / "harness.c"
        c_file.write_text(source)
        built = Path(tmp) / "harness"
        proc = subprocess.run([emulator.cc, "-O2", "-o", str(built), str(c_file), "-ldl"],
                              capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise ExecutionError(f"building the {emulator.arch} harness failed: "
                             f"{(proc.stderr or proc.stdout).strip()[:300]}")
        os.replace(built, path.with_suffix(".tmp"))
        os.replace(path.with_suffix(".tmp"), path)  # whole or absent, for other processes
    return path


class EmulatedModel(CompiledModelRunner):
    """A compiled model for another architecture, run under qemu; called like a
    ``NativeModel`` (numpy arrays in, numpy arrays out)."""

    def __init__(self, path: str | os.PathLike[str], arch: str,
                 num_threads: int | None = None) -> None:
        if arch not in EMULATORS:
            raise ExecutionError(f"built for {arch}, which this machine cannot emulate; run it "
                             "on the target device", where=str(path))
        self.path = str(Path(path).resolve())
        self.emulator = EMULATORS[arch]
        self.emulator.check()
        self.harness = harness(self.emulator)
        self._links = tempfile.TemporaryDirectory(prefix="patcc-bionic-")
        lib = Path(self.emulator.sysroot) / "lib"
        for bionic, glibc in BIONIC_NAMES.items():
            (Path(self._links.name) / bionic).symlink_to(lib / glibc)
        self.where = f", under {self.emulator.qemu}"
        self.info = parse_model_info(self._harness("info"), self.path)
        self._read_signature()
        # One per CPU it may run on, as patcc_set_num_threads(0) decides (qemu-user
        # passes the affinity mask through).
        self.num_threads = num_threads if num_threads is not None else \
            len(os.sched_getaffinity(0))

    def _harness(self, *args: str) -> str:
        env = {**os.environ, "LD_LIBRARY_PATH": self._links.name}
        proc = subprocess.run([self.emulator.qemu, "-L", self.emulator.sysroot,
                               str(self.harness), self.path, *args],
                              capture_output=True, text=True, errors="replace", check=False,
                              env=env)
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
            raise ExecutionError(f"running under {self.emulator.qemu} failed: {last}",
                             where=self.path)
        return proc.stdout

    def run(self, inputs: Mapping[str, np.ndarray] | list[np.ndarray]) -> dict[str, np.ndarray]:
        """Run on inputs (by name or position); returns output name -> array."""
        bound = bind_inputs(self.inputs, inputs)
        with tempfile.TemporaryDirectory(prefix="patcc-run-") as tmp:
            args = [str(self.num_threads), str(len(self.inputs))]
            for i, name in enumerate(self.inputs):
                data = np.ascontiguousarray(bound[name], np.float32)
                path = Path(tmp) / f"in{i}"
                path.write_bytes(data.tobytes())
                args += [str(path), str(data.nbytes)]
            args.append(str(len(self.outputs)))
            for i, t in enumerate(self.outputs.values()):
                args += [str(Path(tmp) / f"out{i}"), str(4 * int(np.prod(t.shape)))]
            self._harness("run", *args)
            return {name: np.fromfile(Path(tmp) / f"out{i}", np.float32).reshape(t.shape)
                    for i, (name, t) in enumerate(self.outputs.items())}
