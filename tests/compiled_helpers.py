"""Helpers shared by the tests that compile models to native code and run them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import onnx

from patcc.runtime.native import NativeModel

RELATIVE_TOLERANCE = 1e-4
"""Outputs must agree within this fraction of the reference's largest magnitude."""


def assert_close(got: np.ndarray, ref: np.ndarray, name: str, floor: float = 1.0) -> None:
    """``got`` equals ``ref`` within RELATIVE_TOLERANCE of max(floor, max |ref|).

    Also checks the dtype (float32) and shape, and that ``got`` is finite where
    ``ref`` is (a NaN would otherwise slip through ``assert_allclose``'s
    ``equal_nan``).
    """
    assert got.dtype == np.float32, f"{name}: dtype {got.dtype}"
    assert got.shape == ref.shape, f"{name}: shape {got.shape}, reference {ref.shape}"
    assert np.array_equal(np.isfinite(got), np.isfinite(ref)), f"{name}: non-finite values"
    scale = max(floor, float(np.abs(ref[np.isfinite(ref)]).max(initial=0.0)))
    np.testing.assert_allclose(got, ref, rtol=0, atol=RELATIVE_TOLERANCE * scale,
                               err_msg=name)


def run_onnxruntime(model: onnx.ModelProto, feeds: Mapping[str, np.ndarray],
                    output_names: Sequence[str]) -> dict[str, np.ndarray]:
    """The model's outputs from onnxruntime's CPU provider with graph optimizations
    off (a reference, not an optimizer), on one thread."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.intra_op_num_threads = 1
    options.log_severity_level = 3  # no warnings on stderr for every example
    session = ort.InferenceSession(model.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    values = session.run(list(output_names), dict(feeds))
    return dict(zip(output_names, values, strict=True))


def run_with_threads(native: NativeModel, feeds: Mapping[str, np.ndarray] | list[np.ndarray],
                     threads: Sequence[int] = (1, 2)) -> dict[str, np.ndarray]:
    """Run a loaded model with each thread count in turn; the outputs must be
    bitwise identical (splitting the work must not change a single bit).

    A count of 0 means one thread per core. Returns the outputs of the first run;
    the model is left at ``threads[0]``.
    """
    first: dict[str, np.ndarray] | None = None
    for n in threads:
        native.num_threads = n
        actual = native.num_threads
        assert actual == n or (n == 0 and 1 <= actual <= 64), (n, actual)
        outs = native.run(feeds)
        if first is None:
            first = outs
            continue
        assert list(outs) == list(first)
        for name, value in outs.items():
            np.testing.assert_array_equal(
                value, first[name],
                err_msg=f"{name}: {n} threads differ from {threads[0]} thread(s)")
    native.num_threads = threads[0]
    assert first is not None
    return first


def assert_user_error(code: int, err: str, *needles: str) -> None:
    """The CLI failed as a user error: exit 2, one ``patcc: error:`` line on stderr
    containing every needle, no traceback."""
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"expected one line, got:\n{err}"
    assert lines[0].startswith("patcc: error: "), lines[0]
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"


def compiled_outputs(model: onnx.ModelProto, feeds: Mapping[str, np.ndarray],
                     input_shapes: Mapping[str, Sequence[int]] | None = None
                     ) -> dict[str, dict[str, np.ndarray]]:
    """Tag -> the outputs of ``model`` built (untuned) for each x86 tag this machine
    can run, on ``feeds`` at two threads."""
    import patcc
    from conftest import runnable_x86_tags

    return {tag: patcc.compile(model, tag, input_shapes=input_shapes, tune=False)
            .load(num_threads=2).run(feeds) for tag in runnable_x86_tags()}
