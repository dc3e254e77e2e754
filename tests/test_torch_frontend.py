"""The PyTorch frontend (``patcc/frontends/torch``): nn.Modules compiled directly.

Every reference architecture, dense and pattern-pruned with ``torch.nn.utils.prune``
masks still attached, compiled from the module: its output equals the module's
eval-mode output within 1e-4, and the ONNX path's (the interpreter on the exported
model); the pattern style is detected as for ONNX and reported in ``.info``. Then
torch and numpy in and out, ``parametrize`` and ``patcc.pruning`` masks, saving and
loading, and the errors users meet.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils import parametrize, prune

import patcc
from patcc.errors import PatccError
from patcc.frontends.onnx import import_onnx
from patcc.frontends.torch import import_module
from patcc.ir import Sparsity
from patcc.models import DENSE_PREDICTION_ARCHITECTURES, INPUT_SHAPES, OUTPUT_NAMES, pruned_model
from patcc.runtime import run
from support.compare import assert_close
from support.reference_models import FULL_MATRIX, SLOW_ARCHITECTURES, reference_params


def _with_torch_masks(module: nn.Module) -> nn.Module:
    """Re-express the zeros of every conv as ``torch.nn.utils.prune`` masks, and put
    other values under them in ``weight_orig``: only the masks keep them out."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            prune.custom_from_mask(m, "weight", m.weight.detach() != 0)
            with torch.no_grad():
                m.weight_orig.add_(0.05 * (m.weight_orig == 0))
    return module


def _input(name: str, seed: int = 0) -> torch.Tensor:
    return torch.randn(*INPUT_SHAPES[name], generator=torch.Generator().manual_seed(seed))


def _close(got: np.ndarray, want: np.ndarray, what: str) -> None:
    """``assert_close``, purely relative, against a reference that is not all zeros."""
    assert np.abs(want).max() > 0, what
    assert_close(got, want, what, floor=0.0)


INTERPRETED = DENSE_PREDICTION_ARCHITECTURES
"""Architectures whose graph imported from the module runs on the interpreter here,
not compiled: what is under test is the frontend, their kernels are compiled from
the ONNX file in test_compile_models, and compiling them again (the 52 convs of
YOLO) would cost the suite a minute. ResNet-50 and VGG-16 are left out: their layers
are ResNet-18's, and VGG-16 takes 20 s even interpreted."""


@pytest.mark.parametrize(("name", "variant"), [
    case for case in reference_params()
    if FULL_MATRIX or case.values[0] not in SLOW_ARCHITECTURES])
def test_reference_architectures_compile_from_the_module(name: str, variant: str,
                                                         exported_model) -> None:
    module = pruned_model(name, variant).eval()
    if variant != "dense":
        module = _with_torch_masks(module)
    x = _input(name)
    with torch.no_grad():
        want = module(x)
    wants = want if isinstance(want, tuple) else (want,)  # the detector returns three
    if name in INTERPRETED:
        graph = import_module(module, (x,))
        gots = tuple(torch.from_numpy(v) for v in run(graph, [x.numpy()]).values())
    else:
        compiled = patcc.compile(module, example_inputs=(x,))
        graph = compiled.graph
        got = compiled(x)
        gots = tuple(got.values()) if isinstance(got, dict) else (got,)
        patterned = [c.name for c in graph.convs() if c.sparsity is Sparsity.PATTERN]
        assert [row["name"] for row in compiled.info["pattern_layers"]] == patterned
    assert len(gots) == len(wants) == len(OUTPUT_NAMES[name])
    # The ONNX path: the same weights exported (masks already applied), interpreted
    # (for the interpreted architectures, the module is the reference: it costs VGG-16
    # a second interpretation)
    _, onnx_path = exported_model(name, variant)
    onnx_graph = import_onnx(onnx_path)
    references = (run(onnx_graph, [x.numpy()]).values() if name not in INTERPRETED
                  else [None] * len(gots))
    for index, (value, module_out, reference) in enumerate(zip(gots, wants, references,
                                                               strict=True)):
        assert isinstance(value, torch.Tensor) and value.dtype == torch.float32  # torch in, out
        _close(value.numpy(), module_out.numpy(), f"output {index} vs the module")
        if reference is not None:
            _close(value.numpy(), reference, f"output {index} vs the ONNX path")
    # The pattern style is found from the effective weights, as from the ONNX file.
    ours = [c.sparsity for c in graph.convs()]
    theirs = [c.sparsity for c in onnx_graph.convs()]
    assert ours == theirs
    assert (Sparsity.PATTERN in ours) == (variant != "dense")


def test_numpy_in_numpy_out_and_save_load(tmp_path: Path) -> None:
    module = pruned_model("senet_tiny", "6x").eval()
    x = _input("senet_tiny")
    compiled = patcc.compile(module, example_inputs=x)  # a bare tensor is one input
    got = compiled(x.numpy())
    assert isinstance(got, np.ndarray)
    compiled.save(tmp_path / "model.so")
    loaded = patcc.load(tmp_path / "model.so")
    np.testing.assert_array_equal(loaded(x.numpy()), got)
    assert loaded.info["pattern_layers"] == compiled.info["pattern_layers"]
    rows = compiled.info["pattern_layers"]
    assert rows and all(r["kernels_kept"] < r["kernels_total"] and r["compression"] > 2
                        for r in rows)
    assert compiled.info["inputs"][0]["name"] == "x"  # the forward argument's name


def test_parametrize_and_patcc_pruning_masks() -> None:
    from patcc.pruning import PruningMasks, pattern_prune

    module = pruned_model("resnet18", "dense").eval()
    report = pattern_prune(module, 6.0, 8)
    masks = PruningMasks.from_report(module, report)
    handle = masks.attach(module)  # patcc.pruning's masks: hooks on the parameters

    class Mask(nn.Module):
        def __init__(self, mask: torch.Tensor) -> None:
            super().__init__()
            self.register_buffer("mask", mask)

        def forward(self, w: torch.Tensor) -> torch.Tensor:
            return w * self.mask

    conv = module.get_submodule("layer1.0.conv1")
    keep = conv.weight.detach() != 0
    with torch.no_grad():
        conv.weight.add_(0.05 * ~keep)  # hidden under the parametrisation's mask
    parametrize.register_parametrization(conv, "weight", Mask(keep.float()))
    x = _input("resnet18", 1)
    with torch.no_grad():
        want = module(x)
    with warnings.catch_warnings():  # the new parametrisation modules are in training
        warnings.simplefilter("error")  # mode, but the model is not: no warning
        compiled = patcc.compile(module, example_inputs=(x,))
    _close(compiled(x).numpy(), want.numpy(), "vs the module")
    styles = {c.name: c.sparsity for c in compiled.graph.convs()}
    assert styles["layer1.0.conv1"] is Sparsity.PATTERN
    assert sum(s is Sparsity.PATTERN for s in styles.values()) == len(report.layers)
    handle.remove()


def test_training_mode_is_compiled_in_eval_and_left_alone() -> None:
    module = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Dropout(0.5),
                           nn.ReLU()).train()
    with torch.no_grad():
        module[1].running_mean.uniform_(-1, 1)
    x = torch.randn(1, 3, 8, 8)
    with pytest.warns(UserWarning, match="training mode.*compiled in eval mode"):
        compiled = patcc.compile(module, example_inputs=(x,))
    assert module.training and module[1].training  # the user's module is as it was
    with torch.no_grad():
        want = module.eval()(x)
    _close(compiled(x).numpy(), want.numpy(), "eval-mode output")


def test_unsupported_operation_names_the_op_module_and_line() -> None:
    class Block(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.cumsum(x, dim=1)

    module = nn.Sequential(nn.Conv2d(3, 4, 1), Block()).eval()
    with pytest.raises(PatccError) as e:
        patcc.compile(module, example_inputs=(torch.randn(1, 3, 4, 4),))
    message = str(e.value)
    assert "aten.cumsum" in message and "module 1 (Block)" in message
    assert "test_torch_frontend.py" in message  # the source line torch recorded


def test_bad_calls_are_clear() -> None:
    module = nn.Sequential(nn.Conv2d(3, 4, 1)).eval()
    with pytest.raises(PatccError, match="needs example_inputs"):
        patcc.compile(module)
    with pytest.raises(PatccError, match="example_inputs must be a tensor"):
        patcc.compile(module, example_inputs=[np.zeros((1, 3, 4, 4), np.float32)])
    with pytest.raises(PatccError, match="patcc compiles float32 inputs"):
        patcc.compile(module.double(), example_inputs=(torch.zeros(1, 3, 4, 4,
                                                                   dtype=torch.float64),))

    class Branchy(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x if x.sum() > 0 else -x  # data-dependent control flow

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(PatccError, match="torch.export cannot export Branchy"):
            patcc.compile(Branchy(), example_inputs=(torch.randn(1, 3, 4, 4),))


def test_slicing_padding_and_dynamic_shapes() -> None:
    class Model(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(4, 6, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            a, b = x[:, :4], x[:, 4::2]  # channel slices
            y = self.conv(nn.functional.pad(a, (1, 2, 0, 1)))
            z = nn.functional.pad(b, (1, 1, 1, 1), mode="reflect")[:, :, 1:, :-1]
            return torch.cat([y[:, :, :, :z.shape[3]], nn.functional.pad(z, (0, 0, 0, 0),
                                                                            mode="replicate")
                              [:, :, :y.shape[2]]], dim=1)

    module = Model().eval()
    x = torch.randn(1, 8, 6, 6)
    with torch.no_grad():
        want = module(x)
    compiled = patcc.compile(module, example_inputs=(x,))
    _close(compiled(x).numpy(), want.numpy(), "slices and pads")
    assert {"Slice", "Pad"} <= {layer.op for layer in compiled.graph.layers}
    with pytest.raises(PatccError, match="dynamic shapes are not supported"):
        patcc.compile(module, example_inputs=(x,),
                      dynamic_shapes={"x": {0: torch.export.Dim("batch")}})


def test_readme_torch_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's PyTorch example, verbatim (in a temporary directory: it saves)."""
    monkeypatch.chdir(tmp_path)
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    start = readme.index("```python\n", readme.index("### From PyTorch")) + len("```python\n")
    code = readme[start:readme.index("```", start)]
    scope: dict[str, object] = {}
    exec(compile(code, "README.md", "exec"), scope)  # noqa: S102
    assert isinstance(scope["y"], torch.Tensor)
    assert patcc.load(tmp_path / "model.so").info["pattern_layers"][0]["patterns"]


class _Smooth(nn.Module):
    """The smooth activations of detection and transformer-era CNNs, then a
    log-softmax over the channels."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        y = (F.gelu(y) + F.gelu(y, approximate="tanh") + F.mish(y) + F.elu(y, 0.5)
             + F.selu(y) + F.softplus(y) + torch.erf(y) - torch.exp(-y.abs()).neg())
        y = y + torch.sqrt(y.abs() + 1).log() * torch.reciprocal(y.abs() + 2)
        return F.log_softmax(y, dim=1)


def test_smooth_activations_and_log_softmax_from_the_module() -> None:
    module = _Smooth().eval()
    x = torch.randn(1, 3, 7, 9)
    compiled = patcc.compile(module, example_inputs=(x,), tune=False)
    with torch.no_grad():
        want = module(x).numpy()
    _close(compiled(x.numpy()), want, "log_softmax")


class _Normalised(nn.Module):
    """A ConvNeXt-style block (depthwise conv, LayerNorm over channels in NHWC, a
    pointwise MLP) and a GroupNorm head, with affine parameters away from 1 and 0."""

    def __init__(self) -> None:
        super().__init__()
        self.dw = nn.Conv2d(8, 8, 7, padding=3, groups=8)
        self.ln = nn.LayerNorm(8, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 8))
        self.gn = nn.GroupNorm(4, 8)
        self.plain = nn.GroupNorm(2, 8, affine=False)
        for norm in (self.ln, self.gn):
            nn.init.uniform_(norm.weight, 0.5, 2.0)
            nn.init.uniform_(norm.bias, -1.0, 1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dw(x).permute(0, 2, 3, 1)
        y = x + self.mlp(self.ln(y)).permute(0, 3, 1, 2)
        return self.plain(F.relu(self.gn(y)))


def test_layer_and_group_norm_from_the_module() -> None:
    module = _Normalised().eval()
    x = torch.randn(2, 8, 9, 7) * 3 + 1  # statistics away from 0 and 1
    compiled = patcc.compile(module, example_inputs=(x,), tune=False)
    ops = [layer.op for layer in compiled.graph.layers]
    # mean and variance of each of the three norms: Reduces, or GlobalPools where the
    # axes are all those after the first two (the groups' values)
    assert ops.count("Reduce") + ops.count("GlobalPool") == 6
    with torch.no_grad():
        want = module(x).numpy()
    _close(compiled(x.numpy()), want, "layer and group norm")


OPERATIONS = {
    "sum over channels": lambda x: x.sum(dim=1, keepdim=True),
    "sum of everything": lambda x: x.sum() + x,
    "amax over space": lambda x: x.amax(dim=(2, 3)),
    "amin, last axis": lambda x: x.amin(dim=-1),
    "max.dim values": lambda x: x.max(dim=1, keepdim=True)[0],
    "max of everything": lambda x: x - x.max(),
    "mean over channels": lambda x: x.mean(dim=1),
    "mean over H and batch": lambda x: x.mean(dim=(0, 2), keepdim=True),
    "var (unbiased)": lambda x: x.var(dim=1, keepdim=True),
    "var, correction 0": lambda x: torch.var(x, dim=(2, 3), correction=0),
    "std of everything": lambda x: x / x.std(),
    "pow number": lambda x: x.abs() ** 1.5,
    "pow tensor": lambda x: torch.pow(x.abs() + 1, torch.linspace(0.5, 2, 6)),
    "number ** tensor": lambda x: 2.0 ** x,
    "square": torch.square, "rsqrt": lambda x: torch.rsqrt(x.abs() + 0.5),
    "log_sigmoid": F.logsigmoid,
    "prelu per channel": nn.PReLU(8, init=0.1), "prelu one slope": nn.PReLU(init=0.3),
    "instance norm": nn.InstanceNorm2d(8, affine=True),
    "instance norm, running statistics": nn.InstanceNorm2d(8, track_running_stats=True),
    "pixel_shuffle": lambda x: F.pixel_shuffle(x, 2),
    "pixel_unshuffle": lambda x: F.pixel_unshuffle(x, 2),
    "channel_shuffle": lambda x: F.channel_shuffle(x, 4),
    "expand": lambda x: x[:, :1].expand(-1, 8, -1, -1) * x,
    "repeat with a new axis": lambda x: x.repeat(2, 1, 2, 1, 1),
    "tile of the last axes": lambda x: x.tile((3, 1)),
    "flip": lambda x: x.flip((1, 3)),
    "narrow": lambda x: x.narrow(1, 2, 3),
    "stack": lambda x: torch.stack([x, 2 * x], 2),
    "roll two axes": lambda x: x.roll((2, -1), (1, 3)),
    "roll flattened": lambda x: x.roll(5),
    "matmul by a matrix": lambda x: x @ torch.linspace(-1, 1, 30).reshape(6, 5),
    "matmul by a vector": lambda x: torch.matmul(x, torch.linspace(-1, 1, 6)),
}
"""ATen operations beyond the reference architectures', each on a (2, 8, 6, 6) input."""


class _Operation(nn.Module):
    def __init__(self, fn: Any) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)


@pytest.mark.parametrize("what", list(OPERATIONS))
def test_operations_match_torch(what: str) -> None:
    """Imported and interpreted: the frontend's lowering against torch itself."""
    module = _Operation(OPERATIONS[what]).eval()
    if isinstance(module.fn, nn.InstanceNorm2d) and module.fn.track_running_stats:
        module.fn.running_mean.uniform_(-1, 1)
        module.fn.running_var.uniform_(0.5, 2)
    x = torch.randn(2, 8, 6, 6, generator=torch.Generator().manual_seed(1)) * 2 + 0.5
    graph = import_module(module, (x,))
    with torch.no_grad():
        want = module(x).numpy()
    (got,) = run(graph, {next(iter(graph.inputs)): x.numpy()}).values()
    _close(got, want, what)


def test_operations_compile() -> None:
    """All of them in one module, compiled for this machine."""
    fns = list(OPERATIONS.values())
    module = nn.ModuleList([_Operation(fn) for fn in fns]).eval()

    class All(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.ops = module

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
            return tuple(op(x) for op in self.ops)

    whole = All().eval()
    x = torch.randn(2, 8, 6, 6, generator=torch.Generator().manual_seed(2)) + 0.5
    compiled = patcc.compile(whole, example_inputs=(x,), tune=False)
    got = compiled.load().run([x.numpy()])
    with torch.no_grad():
        want = [w.numpy() for w in whole(x)]
    for what, g, w in zip(OPERATIONS, got.values(), want, strict=True):
        _close(g, w, what)
