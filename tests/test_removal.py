"""Physical filter removal (``patcc/frontends/pruning/removal.py``): the compact model
computes exactly what the masked model does, on every reference architecture."""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from patcc.errors import PruningError
from patcc.frontends.pruning import plan_filter_removal, prune_filters
from patcc.models import INPUT_SHAPES, REFERENCE_ARCHITECTURES, export_onnx

# Where a layout cannot be followed, the filters stay (with a warning): which
# architectures lose nothing at all.
NOTHING_REMOVABLE = {"grouped_dilated_tiny"}


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _outputs(out: torch.Tensor | tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    return out if isinstance(out, tuple) else (out,)


@pytest.mark.parametrize("name", sorted(REFERENCE_ARCHITECTURES))
def test_compact_model_equals_the_masked_model(name: str) -> None:
    model = REFERENCE_ARCHITECTURES[name]().eval()
    shape = INPUT_SHAPES[name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plan = plan_filter_removal(model, shape, 0.3, "fpgm")
    masked = copy.deepcopy(model)
    masks = plan.masks(masked)
    masks.apply(masked)
    compact = plan.compact(model).eval()
    x = torch.randn(2, *shape[1:], generator=torch.Generator().manual_seed(0))
    with torch.no_grad():  # every output, one tensor each (the detector has three)
        outs = [_outputs(m(x)) for m in (masked, compact, model)]
    assert [o.shape for o in outs[1]] == [o.shape for o in outs[0]]
    want, got, before = (torch.cat([o.flatten() for o in out]) for out in outs)
    scale = want.abs().max()
    assert float((got - want).abs().max() / scale) < 1e-5
    if name in NOTHING_REMOVABLE:
        assert _params(compact) == _params(model) and plan.skipped and not plan.removed
        return
    assert _params(compact) < 0.8 * _params(model)
    assert float((before - want).abs().max() / scale) > 1e-3  # the masks did something
    # Every group lost floor(30%) of its channels, and the masked model's removed
    # channels are zero in each producing convolution.
    for conv, removed in plan.removed.items():
        out_channels = model.get_submodule(conv).out_channels
        assert len(removed) == int(0.3 * out_channels + 1e-9)
        assert not masked.get_submodule(conv).weight[removed].any()


def test_coupled_residual_convs_lose_the_same_channels() -> None:
    model = REFERENCE_ARCHITECTURES["resnet18"]().eval()
    plan = plan_filter_removal(model, INPUT_SHAPES["resnet18"], 0.25, "l1")
    compact = plan.compact(model)
    # A stage's residual stream: its blocks' second convs and downsample agree.
    widths = {compact.get_submodule(n).out_channels for n in (
        "layer2.0.conv2", "layer2.0.downsample.0", "layer2.1.conv2")}
    assert widths == {96}
    assert compact.get_submodule("layer3.0.conv1").in_channels == 96


def test_skipped_layers_are_named_in_a_warning() -> None:
    model = REFERENCE_ARCHITECTURES["shufflenet_tiny"]().eval()
    with pytest.warns(UserWarning, match=r"filters left as they are in \d+ convolution"):
        plan = plan_filter_removal(model, INPUT_SHAPES["shufflenet_tiny"], 0.3)
    assert plan.skipped and plan.removed  # the shuffle blocks some groups, not all
    assert all("shuffle" in reason or "split" in reason for reason in plan.skipped.values())


def test_compact_model_exports_to_onnx_and_runs(tmp_path: Path) -> None:
    model = REFERENCE_ARCHITECTURES["senet_tiny"]().eval()
    shape = INPUT_SHAPES["senet_tiny"]
    compact, plan = prune_filters(model, shape, 0.4, "l2")
    path = tmp_path / "compact.onnx"
    export_onnx(compact, path, shape)
    graph = onnx.load(path).graph
    names = [i.name for i in graph.initializer] + [n.name for n in graph.node]
    assert not any("orig" in n or "mask" in n for n in names)  # no pruning leftovers
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    (got,) = ort.InferenceSession(str(path)).run(None, {"input": x})
    with torch.no_grad():
        want = compact(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * np.abs(want).max())


def test_bad_ratio_and_untraceable_models() -> None:
    model = REFERENCE_ARCHITECTURES["senet_tiny"]()
    with pytest.raises(PruningError, match=r"ratio must be in \[0, 1\)"):
        plan_filter_removal(model, INPUT_SHAPES["senet_tiny"], 1.5)

    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(x) if x.sum() > 0 else x

    with pytest.raises(PruningError, match="cannot be traced by torch.fx"):
        plan_filter_removal(Branchy(), (3, 8, 8), 0.3)
