"""The segmentation and detection reference models (``patcc.models`` unet, lraspp,
yolo): outputs, determinism, the operators each promises in its ONNX export, their
pruned variants, and the README's detector post-processing (numpy decode and NMS).

Their compiled runs on every backend are in the shared matrices (test_reference_models,
test_compile_models, test_cross, test_opencl, test_torch_frontend).
"""

from __future__ import annotations

import functools
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import helper
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from patcc.models import (
    DENSE_PREDICTION_ARCHITECTURES,
    INPUT_SHAPES,
    NUM_CLASSES,
    OUTPUT_NAMES,
    OUTPUT_SHAPES,
    REFERENCE_ARCHITECTURES,
    export_onnx,
    pruned_model,
)
from patcc.models.yolo import ANCHORS, STRIDES
from support.compare import assert_close


@functools.cache
def _shared(name: str) -> nn.Module:
    return REFERENCE_ARCHITECTURES[name]()


def _input(name: str, seed: int = 0) -> torch.Tensor:
    return torch.randn(INPUT_SHAPES[name], generator=torch.Generator().manual_seed(seed))


def _outputs(module: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    with torch.no_grad():
        out = module(x)
    return out if isinstance(out, tuple) else (out,)


def test_registry_names_and_shapes_every_output() -> None:
    assert set(OUTPUT_SHAPES) == set(OUTPUT_NAMES) == set(REFERENCE_ARCHITECTURES)
    assert set(DENSE_PREDICTION_ARCHITECTURES) <= set(REFERENCE_ARCHITECTURES)
    for name, shapes in OUTPUT_SHAPES.items():
        assert len(shapes) == len(OUTPUT_NAMES[name])
        if name not in DENSE_PREDICTION_ARCHITECTURES:  # a classifier: one row of scores
            assert shapes == ((1, NUM_CLASSES[name]),)
    assert OUTPUT_NAMES["yolo_tiny"] == ("p3", "p4", "p5")


@pytest.mark.parametrize("name", DENSE_PREDICTION_ARCHITECTURES)
def test_forward_gives_the_registered_outputs(name: str) -> None:
    model = _shared(name)
    assert not model.training
    outs, others = _outputs(model, _input(name)), _outputs(model, _input(name, seed=1))
    assert tuple(tuple(o.shape) for o in outs) == OUTPUT_SHAPES[name]
    for out, other in zip(outs, others, strict=True):
        assert torch.isfinite(out).all() and out.std() > 0
        assert (out - other).abs().max() > 0.01 * out.abs().max()  # the input matters


@pytest.mark.parametrize("name", DENSE_PREDICTION_ARCHITECTURES)
def test_the_seed_changes_the_weights_and_batch_norms_are_measured(name: str) -> None:
    """(Determinism and the global RNG: test_models.py, with every architecture.)"""
    builder = REFERENCE_ARCHITECTURES[name]
    first, other = builder(), builder(seed=1).state_dict()  # type: ignore[call-arg]
    assert any(not torch.equal(v, other[k]) for k, v in first.state_dict().items())
    for bn in (m for m in first.modules() if isinstance(m, _BatchNorm)):
        assert not torch.allclose(bn.running_var, torch.ones_like(bn.running_var))


def _attributes(node: onnx.NodeProto) -> dict[str, object]:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("dense-prediction")
    paths = {}
    for name in DENSE_PREDICTION_ARCHITECTURES:
        paths[name] = root / f"{name}.onnx"
        export_onnx(_shared(name), paths[name], INPUT_SHAPES[name],
                    output_names=OUTPUT_NAMES[name])
    return paths


@pytest.mark.parametrize("name", DENSE_PREDICTION_ARCHITECTURES)
def test_export_matches_torch_and_names_the_outputs(name: str, exports: dict[str, Path]) -> None:
    session = ort.InferenceSession(str(exports[name]), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == list(OUTPUT_NAMES[name])
    x = _input(name)
    for got, want in zip(session.run(None, {"input": x.numpy()}),
                         _outputs(_shared(name), x), strict=True):
        assert_close(got, want.numpy(), name, floor=0.0)


def test_unet_up_samples_three_ways(exports: dict[str, Path]) -> None:
    graph = onnx.load(str(exports["unet_small"])).graph
    ops = Counter(node.op_type for node in graph.node)
    assert ops["ConvTranspose"] == 1 and ops["Resize"] == 2
    assert ops["MaxPool"] == 3 and ops["Concat"] == 3
    resizes = {(a["mode"], a["coordinate_transformation_mode"])
               for a in map(_attributes, (n for n in graph.node if n.op_type == "Resize"))}
    assert resizes == {(b"linear", b"align_corners"), (b"nearest", b"asymmetric")}
    (transposed,) = (_attributes(n) for n in graph.node if n.op_type == "ConvTranspose")
    assert transposed["kernel_shape"] == [2, 2] and transposed["strides"] == [2, 2]


def test_lraspp_has_mobilenet_v3_blocks_and_the_gated_head(exports: dict[str, Path]) -> None:
    model = _shared("lraspp_mobilenet_v3")
    depthwise = [m for m in model.modules() if isinstance(m, nn.Conv2d)
                 and m.groups == m.in_channels == m.out_channels > 1]
    assert {m.kernel_size for m in depthwise} == {(3, 3), (5, 5)}
    assert any(m.dilation == (2, 2) for m in depthwise)  # output stride 16, dilated
    graph = onnx.load(str(exports["lraspp_mobilenet_v3"])).graph
    ops = Counter(node.op_type for node in graph.node)
    assert {"HardSwish", "HardSigmoid", "GlobalAveragePool", "Sigmoid", "Mul"} <= set(ops)
    resizes = [_attributes(n) for n in graph.node if n.op_type == "Resize"]
    assert len(resizes) == 2
    assert all((r["mode"], r["coordinate_transformation_mode"])
               == (b"linear", b"half_pixel") for r in resizes)


def test_yolo_has_csp_blocks_sppf_and_a_pan_neck(exports: dict[str, Path]) -> None:
    graph = onnx.load(str(exports["yolo_tiny"])).graph
    ops = Counter(node.op_type for node in graph.node)
    assert ops["Split"] == 4  # the C2f blocks
    pools = [_attributes(n) for n in graph.node if n.op_type == "MaxPool"]
    assert len(pools) == 3 and all(
        p["kernel_shape"] == [5, 5] and p["strides"] == [1, 1] and p["pads"] == [2] * 4
        for p in pools)
    resizes = [_attributes(n) for n in graph.node if n.op_type == "Resize"]
    assert len(resizes) == 2 and all(r["mode"] == b"nearest" for r in resizes)
    assert ops["Sigmoid"] == ops["Mul"] > 40  # SiLU, exported as x * sigmoid(x)


def _convs(model: nn.Module, kernel: tuple[int, int]) -> list[nn.Conv2d]:
    return [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == kernel]


@pytest.mark.parametrize("name", ["unet_small", "yolo_tiny"])
def test_6x_prunes_every_3x3_conv_and_leaves_the_rest(name: str) -> None:
    model, dense = pruned_model(name, "6x"), _shared(name)
    weights = [conv.weight for conv in _convs(model, (3, 3))]
    total = sum(w.numel() for w in weights)
    nonzero = sum(int(w.count_nonzero()) for w in weights)
    assert total / nonzero == pytest.approx(6.0, rel=0.05)
    patterns = set()
    for w in weights:
        kept = w.reshape(-1, 9).ne(0)
        kept = kept[kept.any(dim=1)]
        assert (kept.sum(dim=1) == 4).all()
        patterns |= {tuple(row.tolist()) for row in kept}
    assert 1 < len(patterns) <= 8
    pruned_state, dense_state = model.state_dict(), dense.state_dict()
    for key, conv in dense.named_modules():
        if isinstance(conv, nn.ConvTranspose2d) or (
                isinstance(conv, nn.Conv2d) and conv.kernel_size != (3, 3)):
            assert torch.equal(pruned_state[f"{key}.weight"], dense_state[f"{key}.weight"])


def test_lraspp_pruned_variant_patterns_3x3_depthwise_and_halves_1x1() -> None:
    model = pruned_model("lraspp_mobilenet_v3", "dw-patterns+pw50")
    for conv in model.modules():
        if not isinstance(conv, nn.Conv2d):
            continue
        weight = conv.weight
        if conv.kernel_size == (1, 1):
            assert int((weight == 0).sum()) == weight.numel() // 2
        elif conv.kernel_size == (3, 3) and conv.groups > 1:
            assert (weight.reshape(-1, 9).ne(0).sum(dim=1) == 4).all()
        else:  # the 3-channel stem and the 5x5 depthwise convs stay dense
            assert int(weight.count_nonzero()) == weight.numel()


# ---------------------------------------------------------------- README


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    wh = np.clip(np.minimum(a[2:4], b[2:4]) - np.maximum(a[:2], b[:2]), 0, None)
    inter = wh[0] * wh[1]
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union)


def test_readme_detection_example_decodes_and_suppresses(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's detector example, verbatim: the compiled maps decode to the boxes
    torch's maps decode to, one row by hand, and the NMS keeps what greedy NMS keeps."""
    monkeypatch.chdir(tmp_path)
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme.split("### Detection and segmentation", 1)[1].split("\n### ", 1)[0]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    scope: dict[str, object] = {}
    exec(compile(code, "README.md", "exec"), scope)  # noqa: S102
    maps, decode, nms = scope["maps"], scope["decode"], scope["nms"]
    assert isinstance(maps, dict) and list(maps) == list(OUTPUT_NAMES["yolo_tiny"])
    assert tuple(v.shape for v in maps.values()) == OUTPUT_SHAPES["yolo_tiny"]

    image = scope["image"]
    assert isinstance(image, np.ndarray)
    torch_maps = _outputs(pruned_model("yolo_tiny", "6x"), torch.from_numpy(image))
    boxes = scope["boxes"]
    assert isinstance(boxes, np.ndarray) and boxes.shape == (3 * (400 + 100 + 25), 6)
    reference = decode([m.numpy() for m in torch_maps])  # type: ignore[operator]
    for column in range(5):  # boxes in pixels (up to ~1500 for the big anchors), scores
        # assert_close's rule per column, written out: decoded boxes are float64
        scale = float(np.abs(reference[:, column]).max())
        np.testing.assert_allclose(boxes[:, column], reference[:, column], rtol=0,
                                   atol=1e-4 * scale)

    # By hand: anchor 1 of cell (y 3, x 4) at stride 16, the p4 map.
    p4 = maps["p4"].reshape(3, 13, 10, 10)[1, :, 3, 4].astype(np.float64)
    s = 1 / (1 + np.exp(-p4))
    cx, cy = (2 * s[0] - 0.5 + 4) * 16, (2 * s[1] - 0.5 + 3) * 16
    w, h = (2 * s[2]) ** 2 * ANCHORS[1][1][0], (2 * s[3]) ** 2 * ANCHORS[1][1][1]
    row = boxes[3 * 400 + 1 * 100 + 3 * 10 + 4]
    np.testing.assert_allclose(row[:5], [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2,
                                         s[4] * s[5:].max()], rtol=1e-5)
    assert row[5] == s[5:].argmax() and STRIDES[1] == 16

    candidates = boxes[boxes[:, 4] > 0.25]
    kept = scope["detections"]
    assert isinstance(kept, np.ndarray) and 0 < len(kept) < len(candidates)
    assert (np.diff(kept[:, 4]) <= 0).all()  # best first
    for i, a in enumerate(kept):  # no two kept boxes of a class overlap
        assert all(_iou(a, b) <= 0.45 for b in kept[i + 1:] if b[5] == a[5])
    for c in candidates:  # every dropped box overlaps a better kept one of its class
        if not (kept == c).all(axis=1).any():
            assert any(_iou(c, k) > 0.45 and k[4] >= c[4] for k in kept if k[5] == c[5])
    assert len(nms(candidates)) == len(kept)  # type: ignore[operator]
