"""Tests for patcc.models: reference architectures, ONNX export and pruned variants."""

from __future__ import annotations

import functools
import math
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from patcc.models import (
    DENSE_PREDICTION_ARCHITECTURES,
    INPUT_SHAPES,
    NUM_CLASSES,
    REFERENCE_ARCHITECTURES,
    SMALL_ARCHITECTURES,
    channel_shuffle,
    export_onnx,
    pruned_model,
)
from support.compare import assert_close

REQUIRED = {
    "resnet18", "resnet50", "vgg16", "mobilenet_v2",
    "densenet_tiny", "shufflenet_tiny", "senet_tiny", "grouped_dilated_tiny",
}

# torchvision's parameter counts with 1000 classes (vgg16 is the plain, no-BN one).
TORCHVISION_PARAMETERS = {
    "resnet18": 11_689_512,
    "resnet50": 25_557_032,
    "vgg16": 138_357_544,
    "mobilenet_v2": 3_504_872,
}


def _input(name: str, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(INPUT_SHAPES[name], generator=generator)


@functools.cache
def _shared(name: str) -> nn.Module:
    """One build per architecture for the tests that only read the model."""
    return REFERENCE_ARCHITECTURES[name]()


def _assert_same_state(a: nn.Module, b: nn.Module) -> None:
    state_a, state_b = a.state_dict(), b.state_dict()
    assert state_a.keys() == state_b.keys()
    for key, value in state_a.items():
        assert torch.equal(value, state_b[key]), key


def test_registry_is_complete_and_consistent() -> None:
    assert REQUIRED <= set(REFERENCE_ARCHITECTURES)
    assert set(REFERENCE_ARCHITECTURES) == set(INPUT_SHAPES) == set(NUM_CLASSES)
    assert set(SMALL_ARCHITECTURES) <= set(REFERENCE_ARCHITECTURES)
    assert all(len(shape) == 4 and shape[:2] == (1, 3) for shape in INPUT_SHAPES.values())
    assert INPUT_SHAPES["grouped_dilated_tiny"] == (1, 3, 37, 29)


@pytest.mark.parametrize("name", sorted(TORCHVISION_PARAMETERS))
def test_parameter_count_matches_torchvision(name: str) -> None:
    # vgg16 and resnet50 are built afresh rather than cached: 650 MB of weights.
    cached = name in ("resnet18", "mobilenet_v2")
    model = _shared(name) if cached else REFERENCE_ARCHITECTURES[name]()
    assert sum(p.numel() for p in model.parameters()) == TORCHVISION_PARAMETERS[name]


@pytest.mark.parametrize("name", [*SMALL_ARCHITECTURES, "resnet18", "mobilenet_v2"])
def test_forward_gives_finite_class_scores(name: str) -> None:
    model = _shared(name)
    assert not model.training
    with torch.no_grad():
        out = model(_input(name))
        other = model(_input(name, seed=1))
    assert out.shape == (1, NUM_CLASSES[name])
    assert torch.isfinite(out).all()
    assert out.std() > 0  # not collapsed to a constant
    # The input matters: with unmeasured batch-norm statistics MobileNetV2's output was
    # the same for every input.
    assert (out - other).abs().max() > 0.01 * out.abs().max()


@pytest.mark.parametrize("name", [*SMALL_ARCHITECTURES, *DENSE_PREDICTION_ARCHITECTURES,
                                  "resnet18", "mobilenet_v2"])
def test_builds_are_deterministic_and_leave_global_rng_alone(name: str) -> None:
    builder = REFERENCE_ARCHITECTURES[name]
    torch.manual_seed(123)
    expected_draw = torch.rand(3)
    torch.manual_seed(123)
    first = builder()
    assert torch.equal(torch.rand(3), expected_draw)
    _assert_same_state(first, builder())


@pytest.mark.parametrize("name", SMALL_ARCHITECTURES)
def test_seed_changes_the_weights(name: str) -> None:
    first = REFERENCE_ARCHITECTURES[name]()
    other_seed = REFERENCE_ARCHITECTURES[name](seed=1)  # type: ignore[call-arg]
    assert any(
        not torch.equal(a, b)
        for a, b in zip(
            first.state_dict().values(), other_seed.state_dict().values(), strict=True
        )
    )


@pytest.mark.parametrize("name", [*SMALL_ARCHITECTURES, "resnet18", "mobilenet_v2"])
def test_batchnorm_is_not_the_identity(name: str) -> None:
    norms = [m for m in _shared(name).modules() if isinstance(m, _BatchNorm)]
    assert norms
    for bn in norms:
        assert not torch.allclose(bn.running_mean, torch.zeros_like(bn.running_mean))
        assert not torch.allclose(bn.running_var, torch.ones_like(bn.running_var))
        assert not torch.allclose(bn.weight, torch.ones_like(bn.weight))
        assert not torch.allclose(bn.bias, torch.zeros_like(bn.bias))
        assert (bn.running_var > 0).all()


def test_resnet_structure_is_torchvision_like() -> None:
    model = _shared("resnet18")
    downsample = model.layer2[0].downsample
    assert isinstance(downsample[0], nn.Conv2d) and isinstance(downsample[1], nn.BatchNorm2d)
    assert downsample[0].kernel_size == (1, 1) and downsample[0].stride == (2, 2)
    assert model.layer1[0].downsample is None
    assert model.conv1.kernel_size == (7, 7)


def test_mobilenet_v2_structure() -> None:
    model = _shared("mobilenet_v2")
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    depthwise = [m for m in convs if m.groups > 1]
    assert len(depthwise) == 17
    assert all(m.groups == m.in_channels == m.out_channels for m in depthwise)
    assert all(m.kernel_size == (3, 3) for m in depthwise)
    assert sum(isinstance(m, nn.ReLU6) for m in model.modules()) == 35
    # Expansion 6 everywhere but the first block: 1x1 from 24 channels to 144.
    assert model.features[3].conv[0][0].out_channels == 144


def test_small_models_cover_the_promised_operators() -> None:
    from patcc.models import grouped_dilated_tiny, senet_tiny

    kinds = {type(m) for m in senet_tiny().modules()}
    assert {nn.Hardsigmoid, nn.SiLU, nn.Hardswish, nn.LeakyReLU, nn.Tanh} <= kinds

    model = grouped_dilated_tiny()
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert {2, 4} <= {m.groups for m in convs}
    assert any(m.groups == m.in_channels == m.out_channels for m in convs)
    assert any(m.dilation == (2, 2) for m in convs)
    assert any(m.stride == (2, 2) for m in convs)
    assert any(isinstance(m, nn.MaxPool2d) and m.ceil_mode for m in model.modules())
    assert any(
        isinstance(m, nn.AvgPool2d) and not m.count_include_pad and m.padding
        for m in model.modules()
    )
    with torch.no_grad():
        probabilities = model(_input("grouped_dilated_tiny"))
    assert probabilities.sum().item() == pytest.approx(1.0, abs=1e-6)


def test_channel_shuffle_interleaves_groups() -> None:
    x = torch.arange(6.0).reshape(1, 6, 1, 1).expand(1, 6, 2, 3)
    out = channel_shuffle(x, 2)
    assert out[0, :, 0, 0].tolist() == [0, 3, 1, 4, 2, 5]
    assert out.shape == x.shape


# ---------------------------------------------------------------- ONNX export


def _onnx_ops(path: Path) -> Counter[str]:
    return Counter(node.op_type for node in onnx.load(str(path)).graph.node)


def _run_onnx(path: Path, x: torch.Tensor) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"input": x.numpy()})[0]


@pytest.mark.parametrize(
    ("name", "expected_ops"),
    [
        ("shufflenet_tiny", {"Split", "Reshape", "Transpose", "Concat"}),
        ("grouped_dilated_tiny", {"MaxPool", "AveragePool", "Softmax", "Gemm"}),
    ],
)
def test_export_onnx_matches_torch(name: str, expected_ops: set[str], tmp_path: Path) -> None:
    model = REFERENCE_ARCHITECTURES[name]()
    model.train()  # export must switch to eval mode and switch back
    path = tmp_path / f"{name}.onnx"
    export_onnx(model, path, INPUT_SHAPES[name])
    assert model.training
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temp file left
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    ops = _onnx_ops(path)
    assert expected_ops <= set(ops)
    assert not {"Shape", "Gather"} & set(ops)  # static shapes only
    x = _input(name)
    with torch.no_grad():
        expected = model.eval()(x).numpy()
    assert_close(_run_onnx(path, x), expected, name, floor=0.0)


def test_export_onnx_can_keep_batchnorm(tmp_path: Path) -> None:
    model = REFERENCE_ARCHITECTURES["senet_tiny"]()
    folded, kept = tmp_path / "folded.onnx", tmp_path / "kept.onnx"
    export_onnx(model, folded, INPUT_SHAPES["senet_tiny"])
    export_onnx(model, kept, INPUT_SHAPES["senet_tiny"], fold_batchnorm=False)
    assert "BatchNormalization" not in _onnx_ops(folded)
    assert _onnx_ops(kept)["BatchNormalization"] == 6
    x = _input("senet_tiny")
    with torch.no_grad():
        expected = model(x).numpy()
    np.testing.assert_allclose(_run_onnx(kept, x), expected, rtol=0, atol=1e-5)


def test_export_onnx_overwrites_and_validates(tmp_path: Path) -> None:
    path = tmp_path / "model.onnx"
    path.write_bytes(b"stale")
    model = REFERENCE_ARCHITECTURES["densenet_tiny"]()
    export_onnx(model, str(path), INPUT_SHAPES["densenet_tiny"])
    onnx.checker.check_model(onnx.load(str(path)))
    with pytest.raises(ValueError, match="input_shape"):
        export_onnx(model, path, (1, 3, 0, 32))
    with pytest.raises(FileNotFoundError):
        export_onnx(model, tmp_path / "missing" / "m.onnx", INPUT_SHAPES["densenet_tiny"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]


# ---------------------------------------------------------------- pruned variants


def _kernels_3x3(model: nn.Module) -> list[tuple[str, nn.Conv2d]]:
    return [
        (name, m)
        for name, m in model.named_modules()
        if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)
    ]


def test_pruned_resnet18_variants() -> None:
    _assert_same_state(pruned_model("resnet18", "dense"), _shared("resnet18"))
    model = pruned_model("resnet18", "6x")
    assert not model.training
    weights = [conv.weight for _, conv in _kernels_3x3(model)]
    total = sum(w.numel() for w in weights)
    nonzero = sum(int(w.count_nonzero()) for w in weights)
    assert total / nonzero == pytest.approx(6.0, abs=0.01)


def test_pruned_vgg16_8x_keeps_ceil_of_the_fraction() -> None:
    model = pruned_model("vgg16", "8x")
    for name, conv in _kernels_3x3(model):
        n = conv.weight.shape[0] * conv.weight.shape[1]
        kept = int(conv.weight.reshape(n, 9).ne(0).any(dim=1).sum())
        assert kept == math.ceil(0.28125 * n), name


def test_pruned_mobilenet_v2_depthwise_patterns_and_half_pointwise() -> None:
    model = pruned_model("mobilenet_v2", "dw-patterns+pw50")
    dense = _shared("mobilenet_v2")
    stem = model.features[0][0]
    assert torch.equal(stem.weight, dense.features[0][0].weight)  # the one regular 3x3
    patterns = set()
    for module in model.modules():
        if not isinstance(module, nn.Conv2d) or module is stem:
            continue
        weight = module.weight
        if module.kernel_size == (3, 3):
            nonzero = weight.reshape(-1, 9).ne(0)
            assert (nonzero.sum(dim=1) == 4).all() and nonzero[:, 4].all()
            patterns |= {tuple(row.tolist()) for row in nonzero}
        else:
            assert int((weight == 0).sum()) == weight.numel() // 2
    assert 1 < len(patterns) <= 8


def test_pruned_model_rejects_unknown_names() -> None:
    with pytest.raises(KeyError, match="known:"):
        pruned_model("alexnet", "dense")
    with pytest.raises(ValueError, match="expected 'dense'"):
        pruned_model("senet_tiny", "sparse")
