"""Shared fixtures, and the CI rule: a skip for a missing tool fails under CI=true.

Tests that need an external tool or optional package skip with a reason starting
with ``MISSING_TOOL`` (see ``require_tool``) or through ``pytest.importorskip``.
Locally that is a skip; in CI (``CI=true``) it is a failure, so CI always exercises
every backend and reference.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

import pytest

MISSING_TOOL = "missing tool:"
IN_CI = os.environ.get("CI", "").lower() == "true"

# Tuning times every candidate schedule of every layer (about 40 s for ResNet-18), and
# the suite compiles hundreds of models: it runs untuned (the cost model's choices),
# and tests/test_tuning.py turns tuning on where it is the subject; every schedule is
# checked for correctness there. The cache never lands in the user's home.
os.environ.setdefault("PATCC_TUNE", "0")
# Under pytest-xdist there is a worker per core already: torch's (and OpenMP's) own
# thread teams on top oversubscribe the cores, and their spinning threads then slow
# small-tensor loops (ADMM, input matching) by two orders of magnitude. One each; the
# variable also reaches the ``patcc prune`` subprocesses. patcc's runtime has its own
# pool and ignores it.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
os.environ["PATCC_CACHE_DIR"] = tempfile.mkdtemp(prefix="patcc-test-cache-")
atexit.register(shutil.rmtree, os.environ["PATCC_CACHE_DIR"], ignore_errors=True)


def fuzz_examples(default: int) -> int:
    """Hypothesis examples per randomised test: ``PATCC_FUZZ_EXAMPLES`` when set, else
    the test's own default (sized to the cost of one example)."""
    return int(os.environ.get("PATCC_FUZZ_EXAMPLES", default))


def require_tool(name: str, hint: str) -> str:
    """Path of executable ``name``, or skip (fail in CI) saying how to install it."""
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{MISSING_TOOL} {name} ({hint})")
    return path


def require_lld() -> None:
    """Skip (fail in CI) unless a linker for foreign objects is there: Debian's
    ``ld.lld`` or the ``ziglang`` wheel's."""
    from patcc.backends.llvm.toolchain import find_lld
    from patcc.errors import PatccError

    try:
        find_lld()
    except PatccError:
        pytest.skip(f"{MISSING_TOOL} ld.lld (apt-get install lld, or pip install ziglang)")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):  # type: ignore[no-untyped-def]
    outcome = yield
    report = outcome.get_result()
    if not (IN_CI and report.skipped and isinstance(report.longrepr, tuple)):
        return
    reason = str(report.longrepr[2])
    if MISSING_TOOL in reason or "could not import" in reason:
        report.outcome = "failed"
        report.longrepr = f"CI=true: a required tool is missing, so this cannot skip: {reason}"


PRUNED_VARIANT = {
    "resnet18": "6x",
    "resnet50": "6x",
    "vgg16": "8x",
    "mobilenet_v2": "dw-patterns+pw50",
    "lraspp_mobilenet_v3": "dw-patterns+pw50",
}
"""The pruned variant tested for each architecture (the others use "6x"): patterns on
the depthwise convolutions and half of each 1x1 for the MobileNets."""

SLOW_ARCHITECTURES = ("resnet50", "vgg16")

FULL_MATRIX = os.environ.get("PATCC_FULL_MATRIX") == "1"
"""``make test-full``: every architecture in every variant on every backend and target.
``make test`` keeps to 15 minutes on 2 cores with the subsets each test file states
(each kernel family and each new operator still runs on every backend)."""


def reference_params(*more: tuple[str, ...], packed: bool = False) -> list[object]:
    """pytest params ``(name, variant, *one of each of more)`` over every reference
    architecture, dense and its pruned variant; resnet50 and vgg16 are marked slow and,
    unless ``FULL_MATRIX``, run pruned only (their dense layers are ResNet-18's; each
    costs 10-25 s a build).
    ``packed``: each param is one tuple (for a parametrized fixture)."""
    import itertools

    from patcc.models import REFERENCE_ARCHITECTURES

    params = []
    for name in REFERENCE_ARCHITECTURES:
        marks = [pytest.mark.slow] if name in SLOW_ARCHITECTURES else []
        variants = ("dense",) * (FULL_MATRIX or name not in SLOW_ARCHITECTURES) + (
            PRUNED_VARIANT.get(name, "6x"),)
        for variant in variants:
            for extra in itertools.product(*more):
                values = (name, variant, *extra)
                params.append(pytest.param(*((values,) if packed else values), marks=marks,
                                           id="-".join(values)))
    return params


@pytest.fixture(scope="session")
def exported_model(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """``exported_model(name, variant) -> (torch module, path of its ONNX export)``.

    Built and exported once per session; models are never committed to the repo.
    Dense variants keep their BatchNormalization nodes (the exporter would fold
    them), so patcc's own folding is exercised on every architecture.
    """
    from patcc.models import INPUT_SHAPES, OUTPUT_NAMES, export_onnx, pruned_model

    cache: dict[tuple[str, str], tuple[object, object]] = {}
    root = tmp_path_factory.mktemp("models")

    def get(name: str, variant: str):  # type: ignore[no-untyped-def]
        if (name, variant) not in cache:
            module = pruned_model(name, variant)
            path = root / f"{name}-{variant}.onnx"
            export_onnx(module, path, INPUT_SHAPES[name], fold_batchnorm=variant != "dense",
                        output_names=OUTPUT_NAMES[name])
            cache[name, variant] = (module, path)
        return cache[name, variant]

    return get


X86_TAGS = ("x86_64-avx2", "x86_64-avx512")
"""The portable x86 targets whose code the compiled tests run where this CPU can: an
AVX-512 machine runs both, an AVX2 one only the first (``PATCC_HOST_TARGET`` makes
an AVX-512 machine pass for an AVX2 one)."""

CPU_TAGS = ("x86_64-avx512", "x86_64-avx2", "aarch64-android")
"""One target per register file patcc generates code for: 32 x 16 lanes, 16 x 8 lanes,
32 x 4 lanes (compile-only tests cover all three on any host)."""


def runnable_target(tag: str):  # type: ignore[no-untyped-def]
    """The ``Target`` for ``tag``; skips (also in CI: no tool is missing, the CPU is
    what it is) when this machine cannot run its code."""
    from patcc.backends.target import get_target

    target = get_target(tag)
    if not target.runs_here:
        pytest.skip(f"this CPU cannot run {tag} code (it lacks "
                    f"{', '.join(target.missing_features()) or 'the architecture'})")
    return target


def runnable_x86_tags() -> list[str]:
    """The tags of ``X86_TAGS`` this machine can run (for hypothesis to draw from)."""
    from patcc.backends.target import get_target

    return [tag for tag in X86_TAGS if get_target(tag).runs_here]
