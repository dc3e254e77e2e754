"""Whole reference architectures, dense and pattern-pruned: interpreter vs onnxruntime."""

from __future__ import annotations

import numpy as np
import pytest

from patcc.frontends.onnx import import_onnx
from patcc.ir import Sparsity
from patcc.models import INPUT_SHAPES, OUTPUT_NAMES
from patcc.runtime import run
from support.compare import assert_close
from support.reference_models import reference_params

ort = pytest.importorskip("onnxruntime")

CASES = reference_params()


@pytest.mark.parametrize(("name", "variant"), CASES)
def test_interpreter_matches_onnxruntime(exported_model, name: str, variant: str) -> None:
    _, path = exported_model(name, variant)
    graph = import_onnx(path)
    x = np.random.default_rng(0).uniform(-1, 1, INPUT_SHAPES[name]).astype(np.float32)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    refs = session.run(names, {session.get_inputs()[0].name: x})
    ours = run(graph, [x])
    assert list(ours) == names == list(OUTPUT_NAMES[name])  # the detector has three
    for out_name, ref in zip(names, refs, strict=True):
        assert np.abs(ref).max() > 0, out_name
        assert_close(ours[out_name], ref, out_name, floor=0.0)
    styles = {c.sparsity for c in graph.convs()}
    if variant == "dense":
        assert Sparsity.PATTERN not in styles
    else:
        assert Sparsity.PATTERN in styles
        library = graph.pattern_library
        assert library is not None and len(library) <= 8
