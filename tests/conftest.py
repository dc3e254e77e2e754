"""The suite's environment, its tiers, the CI rule and the shared fixtures.

Every test has one tier (``MODULE_TIERS``, ``TEST_TIERS``), a marker that selects a
slice: ``pytest -m nocompile``, ``pytest -m "not cross and not opencl"``.

Tests that need an external tool or optional package skip with a reason starting
with ``MISSING_TOOL`` (see ``support.tools.require_tool``) or through
``pytest.importorskip``. Locally that is a skip; in CI (``CI=true``) it is a failure,
so CI always exercises every backend and reference.

The helpers the tests import live in ``tests/support/``; this file keeps what pytest
itself must find here (hooks and fixtures).
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

import pytest

from support.tools import IN_CI, MISSING_TOOL

# Tuning times every candidate schedule of every layer (about 40 s for ResNet-18), and
# the suite compiles hundreds of models: it runs untuned (the cost model's choices),
# and tests/test_tuning.py turns tuning on where it is the subject; every schedule is
# checked for correctness there. The cache never lands in the user's home.
os.environ.setdefault("PATCC_TUNE", "0")
# Every pass pipeline verifies the graph after each pass (``run_pipeline``): a pass that
# breaks an IR invariant fails where it does, not in a backend three passes later.
os.environ.setdefault("PATCC_VERIFY", "1")
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


MODULE_TIERS = {
    "test_dense_prediction_models": "nocompile",
    "test_differential_onnx": "nocompile",
    "test_dynamo_export": "nocompile",
    "test_imports": "nocompile",
    "test_inspect": "nocompile",
    "test_interpreter": "nocompile",
    "test_ir": "nocompile",
    "test_planning": "nocompile",
    "test_models": "nocompile",
    "test_old_opsets": "nocompile",
    "test_onnx_node": "nocompile",
    "test_passes": "nocompile",
    "test_pattern_passes": "nocompile",
    "test_progress": "nocompile",
    "test_reference_models": "nocompile",
    "test_validation": "nocompile",
    "test_benchmarks": "compiled",
    "test_cli_errors": "compiled",
    "test_compile_models": "compiled",
    "test_conv_transpose": "compiled",
    "test_differential_compiled": "compiled",
    "test_elf": "compiled",
    "test_fused_blocks": "compiled",
    "test_fuzz": "compiled",
    "test_gemm": "compiled",
    "test_hostile_names": "compiled",
    "test_native_runtime": "compiled",
    "test_peers": "compiled",
    "test_pointwise": "compiled",
    "test_registers": "compiled",
    "test_report": "compiled",
    "test_resize": "compiled",
    "test_shape_ops": "compiled",
    "test_sparse_pointwise": "compiled",
    "test_torch_frontend": "compiled",
    "test_tuning": "compiled",
    "test_cross": "cross",
    "test_loops": "cross",
    "test_opencl": "opencl",
    "test_admm": "pruning",
    "test_filters": "pruning",
    "test_lfpc": "pruning",
    "test_masks": "pruning",
    "test_prune_cli": "pruning",
    "test_pruning_helper": "pruning",
    "test_removal": "pruning",
    "test_reparam": "pruning",
}
"""Each test module's tier (the markers in pyproject.toml): ``nocompile`` generates no
native code (IR, passes, interpreter, frontends, models; onnxruntime and torch are the
references), ``compiled`` builds x86 code and runs it here (llvmlite and ``cc``),
``cross`` builds for aarch64 (``ld.lld``, ``qemu-aarch64``, ``llvm-mca``), ``opencl``
builds OpenCL packages and runs them on PoCL, ``pruning`` runs the pruning algorithms
(torch training; some build their result for the host). A new module must be added:
collection stops until it is."""

TEST_TIERS = {
    "test_dense_prediction_models::test_readme_detection_example_decodes_and_suppresses":
        "compiled",
    "test_planning::test_concat_in_place_computes_the_same": "compiled",
    "test_old_opsets::test_compiled_matches_onnxruntime": "compiled",
    "test_onnx_node::test_native_build_passes_the_node_tests": "compiled",
    "test_validation::test_compiled_nan_semantics_match_the_interpreter": "compiled",
    "test_validation::test_deep_graphs_keep_one_function_per_phase": "compiled",
    "test_validation::test_large_strides_run_correctly": "compiled",
    "test_benchmarks::test_opencl_benchmark_script_runs": "opencl",
    "test_benchmarks::test_pruning_evidence_script_runs": "pruning",
    "test_cli_errors::test_corrupt_package_manifest": "opencl",
    "test_cli_errors::test_package_whose_weights_are_a_pipe": "opencl",
    "test_hostile_names::test_opencl_package_keeps_names_out_of_code": "opencl",
    "test_hostile_names::test_a_package_is_replaced_only_when_it_holds_nothing_else": "opencl",
    "test_resize::test_opencl_matches_the_interpreter": "opencl",
}
"""The tests whose tier is not their module's: a compiled test among tests that
generate no native code, an OpenCL one among x86 ones (so that ``-m nocompile`` needs
no toolchain and ``-m "not opencl"`` no PoCL), the pruning benchmark among the others."""


@pytest.hookimpl(tryfirst=True)  # before ``-m`` deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test with its tier."""
    for item in items:
        module = item.path.stem
        name = getattr(item, "originalname", item.name)
        tier = TEST_TIERS.get(f"{module}::{name}", MODULE_TIERS.get(module))
        if tier is None:
            raise pytest.UsageError(f"{item.path.name} has no tier: add it to MODULE_TIERS "
                                    "in tests/conftest.py")
        item.add_marker(tier)


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
