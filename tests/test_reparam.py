"""Models pruned with torch's own tools (``patcc/frontends/pruning/reparam.py``):
``torch.nn.utils.prune`` and ``torch.nn.utils.parametrize`` masks."""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize, prune

from patcc.errors import PruningError
from patcc.frontends.pruning import (
    AdmmConfig,
    PruningMasks,
    admm_prune,
    bake_reparametrisations,
    effective_parameters,
    pattern_prune,
    plan_filter_removal,
    reparametrised,
)
from patcc.models import INPUT_SHAPES, REFERENCE_ARCHITECTURES, export_onnx


class _Mask(nn.Module):
    def __init__(self, mask: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mask", mask)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return w * self.mask


def _torch_pruned(name: str = "resnet18") -> nn.Module:
    """A reference model, every conv L1-unstructured pruned 50% by torch, and the
    first conv's weight masked through ``parametrize`` instead."""
    torch.manual_seed(0)
    model = REFERENCE_ARCHITECTURES[name]().eval()
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    first, rest = convs[0], convs[1:]
    for conv in rest:
        prune.l1_unstructured(conv, "weight", amount=0.5)
        with torch.no_grad():  # weights trained on since the mask was made
            conv.weight_orig.mul_(1.01)
    mask = torch.rand(first.weight.shape, generator=torch.Generator().manual_seed(1)) > 0.5
    parametrize.register_parametrization(first, "weight", _Mask(mask))
    return model


def _x(name: str) -> torch.Tensor:
    return torch.randn(2, *INPUT_SHAPES[name][1:], generator=torch.Generator().manual_seed(2))


def test_effective_parameters_are_what_the_model_computes_with() -> None:
    model = _torch_pruned()
    found = reparametrised(model)
    assert found["conv1.weight"] == "torch.nn.utils.parametrize"
    assert found["layer1.0.conv1.weight"] == "torch.nn.utils.prune"
    params = effective_parameters(model)
    assert not any(k.endswith("_orig") or ".parametrizations." in k for k in params)
    conv = model.get_submodule("layer1.0.conv1")
    want = conv.weight_orig * conv.weight_mask  # not conv.weight: stale until a forward
    assert torch.equal(params["layer1.0.conv1.weight"], want)
    assert not torch.equal(conv.weight, want)
    masks = PruningMasks.from_model(model)
    assert torch.equal(masks.masks["layer1.0.conv1.weight"], conv.weight_mask.bool())


def test_baking_keeps_the_function_and_returns_the_masks() -> None:
    model = _torch_pruned()
    with torch.no_grad():
        want = model(_x("resnet18"))
    pruned_masks = {n: m.weight_mask.bool().clone() for n, m in model.named_modules()
                    if hasattr(m, "weight_mask")}
    masks = bake_reparametrisations(model)
    assert not reparametrised(model)
    assert not any("orig" in k or "mask" in k or "parametrizations" in k
                   for k in model.state_dict())
    with torch.no_grad():
        assert torch.allclose(model(_x("resnet18")), want, rtol=1e-5, atol=1e-6)
    for name, mask in pruned_masks.items():
        assert torch.equal(masks[f"{name}.weight"], mask)
    assert set(masks) == {f"{n}.weight" for n in pruned_masks} | {"conv1.weight"}
    PruningMasks(masks).attach(model)  # plain parameters now: masks hold them
    assert PruningMasks(masks).kept(model)


def test_masks_refuse_a_computed_weight_with_the_way_out() -> None:
    model = _torch_pruned()
    with pytest.raises(PruningError, match="bake_reparametrisations"):
        PruningMasks.from_model(model).apply(model)


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2"])
def test_filter_removal_of_a_torch_pruned_model(name: str, tmp_path: Path) -> None:
    model = _torch_pruned(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plan = plan_filter_removal(model, INPUT_SHAPES[name], 0.3, "l2")
    baked = copy.deepcopy(model)
    bake_reparametrisations(baked)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert plan_filter_removal(baked, INPUT_SHAPES[name], 0.3, "l2").removed.keys() == \
            plan.removed.keys()  # the scores came from the effective weights
    compact = plan.compact(model).eval()
    assert reparametrised(model) and not reparametrised(compact)  # the input is untouched
    plan.masks(baked).apply(baked)
    with torch.no_grad():
        want, got = baked(_x(name)), compact(_x(name))
    assert float((got - want).abs().max() / want.abs().max()) < 1e-5
    path = tmp_path / "compact.onnx"
    export_onnx(compact, path, INPUT_SHAPES[name])
    names = [i.name for i in onnx.load(path).graph.initializer]
    assert not any("orig" in n or "mask" in n or "parametrizations" in n for n in names)


def test_pattern_pruners_bake_first_and_say_so() -> None:
    for prune_fn in (lambda m: pattern_prune(m, 6.0, 8),
                     lambda m: admm_prune(m, INPUT_SHAPES["resnet18"], 6.0, 8, AdmmConfig(
                         epochs=1, iterations=1, batch_size=2, distil_steps=1, refit_epochs=0,
                         pool_batches=1))):
        model = _torch_pruned()
        with pytest.warns(UserWarning, match="torch.nn.utils.prune.*permanent"):
            report = prune_fn(model)
        assert not reparametrised(model)
        library = report.library
        for layer in report.layers:  # the patterns are in the weights that compute
            weight = model.get_parameter(f"{layer.name}.weight").detach().numpy()
            for kernel, pid in zip(weight.reshape(-1, 3, 3), layer.pattern_ids.reshape(-1),
                                   strict=True):
                assert not kernel.any() if pid < 0 else not kernel[~library[pid]].any()
        with torch.no_grad():
            assert np.isfinite(model(_x("resnet18")).numpy()).all()
