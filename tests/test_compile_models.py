"""Whole reference architectures, dense and pattern-pruned, compiled to native code.

Each model is exported to ONNX (the session fixture ``exported_model``), compiled once
per session with ``patcc.compile``, run with two threads, and compared with
onnxruntime: every output within 1e-4 of the reference's largest magnitude. The
kernel each convolution got is checked too: a pattern-style conv runs the sparse
``pattern`` kernel, and a dense model never does. One and two threads must give
bitwise identical outputs.

resnet50 and vgg16 are marked ``slow`` (they still run in ``make test``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from patcc.backends.llvm.conv import conv_options
from patcc.backends.llvm.lowering import LoweringContext, WeightBlob
from patcc.compiler import CompiledModel
from patcc.ir import Conv, Sparsity
from patcc.models import INPUT_SHAPES
from support.compare import assert_close, run_with_threads
from support.reference_models import reference_params

ort = pytest.importorskip("onnxruntime")

CASES = reference_params(packed=True)


@dataclass(frozen=True)
class CompiledCase:
    name: str
    variant: str
    onnx_path: Path
    compiled: CompiledModel


@pytest.fixture(scope="session", params=CASES)
def compiled_case(request: pytest.FixtureRequest, exported_model) -> CompiledCase:
    """Each architecture and variant compiled once per session.

    A parametrized session fixture: pytest runs every test of one model before
    moving to the next and drops the previous model then, so only one compiled
    model (up to ~2 GB for VGG-16: weights in the plan, the objects, the .so) is
    alive at a time.
    """
    import patcc

    name, variant = request.param
    _, path = exported_model(name, variant)
    return CompiledCase(name, variant, Path(path), patcc.compile(path))


def onnxruntime_outputs(path: object, x: np.ndarray) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    values = session.run(names, {session.get_inputs()[0].name: x})
    return dict(zip(names, values, strict=True))


def test_compiled_matches_onnxruntime(compiled_case: CompiledCase) -> None:
    x = np.random.default_rng(0).uniform(-1, 1, INPUT_SHAPES[compiled_case.name])
    x = x.astype(np.float32)
    expected = onnxruntime_outputs(compiled_case.onnx_path, x)
    native = compiled_case.compiled.load(num_threads=2)
    assert native.num_threads == 2
    ours = native.run([x])
    assert list(ours) == list(expected)
    for out_name, ref in expected.items():
        got = ours[out_name]
        assert np.isfinite(got).all(), out_name
        # an all-zero reference would make the tolerance meaningless
        assert np.abs(ref).max() > 0, out_name
        assert_close(got, ref, out_name, floor=0.0)


def test_pattern_convs_use_the_pattern_kernel(compiled_case: CompiledCase) -> None:
    compiled = compiled_case.compiled
    conv_kernels = [(code.layer, code.kernel) for code in compiled.plan.codes
                    if isinstance(code.layer, Conv)]
    assert len(conv_kernels) == len(list(compiled.graph.convs()))  # every conv has code
    ctx = LoweringContext(dict(compiled.graph.shapes), compiled.target, WeightBlob())
    for layer, kernel in conv_kernels:
        # The reference architectures' pattern convs run the pattern kernel; in the
        # tiny ones the cost model may find the GEMM cheaper for a layer of a few
        # channels, and then says so.
        if layer.sparsity is Sparsity.PATTERN and (
                not compiled_case.name.endswith("_tiny")
                or conv_options(layer, ctx)[0][1].kernel == "pattern"):
            assert kernel == "pattern", f"{layer.name}: pattern-style conv ran {kernel!r}"
        elif layer.sparsity is Sparsity.PATTERN:
            assert kernel.startswith("gemm"), f"{layer.name}: ran {kernel!r}"
        else:
            assert kernel != "pattern", f"{layer.name}: {layer.sparsity} conv ran {kernel!r}"
    pattern_count = sum(kernel == "pattern" for _, kernel in conv_kernels)
    if compiled_case.variant == "dense":
        assert pattern_count == 0
    else:
        assert pattern_count > 0


def test_thread_count_does_not_change_a_bit(compiled_case: CompiledCase) -> None:
    # Whole models split into many more tasks than the random graphs do, so this is
    # where a work split that changes a reduction order would show.
    native = compiled_case.compiled.load()
    x = np.random.default_rng(1).uniform(-1, 1, INPUT_SHAPES[compiled_case.name])
    x = x.astype(np.float32)
    outputs = run_with_threads(native, [x], threads=(2, 1))
    assert all(np.isfinite(v).all() for v in outputs.values())
