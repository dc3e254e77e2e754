"""Models from torch's default (dynamo) exporter: opset 18 forms, ReduceMean axes inputs."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from patcc.frontends.onnx import import_onnx
from patcc.models import INPUT_SHAPES, pruned_model
from patcc.runtime import run
from support.compare import assert_close

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")


@pytest.mark.parametrize("name", ["senet_tiny", "shufflenet_tiny", "grouped_dilated_tiny"])
def test_dynamo_export_matches_onnxruntime(tmp_path: Path, name: str) -> None:
    module = pruned_model(name, "6x")
    x = np.random.default_rng(1).uniform(-1, 1, INPUT_SHAPES[name]).astype(np.float32)
    path = tmp_path / f"{name}.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (torch.from_numpy(x),), str(path), dynamo=True,
                          verbose=False)
    graph = import_onnx(path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (ref,) = session.run(None, {session.get_inputs()[0].name: x})
    (ours,) = run(graph, [x]).values()
    assert_close(ours, ref, name, floor=0.0)
    assert any(c.pattern is not None for c in graph.convs())
