"""1x1 convs with unstructured zeros, the ``sparse`` kernel's layers, as ONNX models:
parallel convs on one input, each with its own weights, fused residual and activation.
The LLVM kernel's tests (``test_sparse_pointwise``) and the OpenCL backend's use them."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


@dataclasses.dataclass(frozen=True)
class PointwiseConv:
    """One 1x1 conv of a test model: weights, and what is fused after it."""

    weight: np.ndarray  # (O, C, 1, 1)
    bias: np.ndarray
    residual: bool = False
    activation: str | None = None  # "relu" or "relu6"


def sparse_weight(rng: np.random.Generator, o: int, c: int, density: float) -> np.ndarray:
    """(o, c, 1, 1) weights, each non-zero with probability ``density``, at least one
    zero (what makes a 1x1 conv a ``sparse`` kernel candidate)."""
    weight = (rng.standard_normal((o, c, 1, 1)) / np.sqrt(c)).astype(np.float32)
    weight[rng.random(weight.shape) >= density] = 0.0
    if not (weight == 0).any():  # the kernel takes only convs with a zero
        weight[0, 0] = 0.0
    return weight


def pointwise_model(x_shape: tuple[int, int, int, int], convs: Sequence[PointwiseConv],
           rng: np.random.Generator) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """Convs side by side on input ``x``, conv ``i`` ending in output ``out{i}``."""
    n, _, h, w = x_shape
    feeds = {"x": rng.standard_normal(x_shape).astype(np.float32)}
    consts = {"zero": np.array(0.0, np.float32), "six": np.array(6.0, np.float32)}
    nodes, outputs = [], []
    for i, spec in enumerate(convs):
        o = spec.weight.shape[0]
        consts[f"w{i}"], consts[f"b{i}"] = spec.weight, spec.bias
        chain = [("Conv", ["x", f"w{i}", f"b{i}"])]
        if spec.residual:
            feeds[f"r{i}"] = rng.standard_normal((n, o, h, w)).astype(np.float32)
            chain.append(("Add", [f"r{i}"]))
        if spec.activation == "relu":
            chain.append(("Relu", []))
        elif spec.activation == "relu6":
            chain.append(("Clip", ["zero", "six"]))
        last = None
        for step, (op, args) in enumerate(chain):
            out = f"out{i}" if step == len(chain) - 1 else f"t{i}_{step}"
            nodes.append(helper.make_node(op, ([last] if last else []) + args, [out]))
            last = out
        outputs.append(helper.make_tensor_value_info(f"out{i}", TensorProto.FLOAT, (n, o, h, w)))
    inputs = [helper.make_tensor_value_info(k, TensorProto.FLOAT, v.shape)
              for k, v in feeds.items()]
    graph = helper.make_graph(nodes, "pointwise", inputs, outputs,
                              [numpy_helper.from_array(v, k) for k, v in consts.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    return model, feeds
