"""How the tests compare patcc's outputs with a reference: the 1e-4 rule
(``assert_close``), onnxruntime as the reference, and runs at several thread counts
that must agree to the bit."""

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
    ``equal_nan``). The floor keeps small random outputs from asking for more than
    float32 holds; ``floor=0.0`` makes the tolerance purely relative (whole models,
    whose outputs are far from zero).
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
