"""Evidence for the pruning module, on real data: scikit-learn's handwritten digits.

1. A small VGG-style CNN is trained on the digits (8x8 grey images, 10 classes).
2. Pattern + connectivity pruning at 4x, 8x, 12x and 16x (the 3x3 convs'
   compression; the stem, whose kernels are whole filters, stays dense), each
   followed by masked retraining on the training set: data-free ADMM (synthetic
   inputs only) with patcc's defaults ("admm") and as published ("admm-published",
   ``AdmmConfig.published()``), data-aware ADMM on the training set's task loss
   ("admm-data"), projection only (the same constraints, no
   optimisation), and unstructured magnitude pruning at the same sparsity. Test
   accuracy before and after retraining. At 8x, an ablation: the published recipe
   with patcc's three changes added one at a time.
3. Filter pruning at 30% and 40% of the filters: FPGM and L2 (one-shot, hard, then
   masked retraining), SFP (L2, zeroed after every retraining epoch) and ASFP (the
   ratio rising along its exponential): test accuracy, the compact model's MACs, and
   the largest difference between the compact and the masked model's outputs.
4. A ResNet-18 (random weights) pattern-pruned 6x: the relative output error on
   fresh uniform synthetic inputs of data-free ADMM (both recipes, and patcc's with
   uniform inputs: the reference model's batch-norm statistics are random, so the
   inputs matched to them are not the ones measured) against projection only, and
   the seconds each took.

Usage: ``python benchmarks/pruning.py [--epochs 30] [--retrain 8] [--admm-epochs 22]
[--quick]``; prints the tables (Markdown) and writes ``pruning.json`` to ``--out-dir``.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from patcc.pruning import (
    AdmmConfig,
    PruningMasks,
    admm_prune,
    admm_prune_on_data,
    asfp_schedule,
    magnitude_masks,
    masked_retrain,
    pattern_prune,
    plan_filter_removal,
    synthetic_batch,
)

RATES = (4.0, 8.0, 12.0, 16.0)
PATTERN_METHODS = ("admm", "admm-published", "admm-data", "project", "magnitude")
ABLATION = {  # the published recipe, then patcc's changes added one at a time
    "published": {},
    "+ bn-matched inputs": {"inputs": "bn-matched"},
    "+ lr 1e-2": {"inputs": "bn-matched", "lr": 1e-2},
    "+ masked refit (= patcc)": {"inputs": "bn-matched", "lr": 1e-2, "refit": True},
    "patcc with uniform inputs": {"lr": 1e-2, "refit": True},
}
RATIOS = (0.3, 0.4)
SHAPE = (1, 8, 8)


def digits() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    x = torch.tensor(data.images / 16.0, dtype=torch.float32)[:, None]  # 0..1, like 0..255/255
    y = torch.tensor(data.target)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.25, random_state=0,
                                          stratify=y)
    return xtr, ytr, xte, yte


def vgg_digits() -> nn.Sequential:
    def block(cin: int, cout: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True)]

    return nn.Sequential(*block(1, 32), *block(32, 32), nn.MaxPool2d(2),
                         *block(32, 64), *block(64, 64), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(64 * 2 * 2, 10))


def batches(x: torch.Tensor, y: torch.Tensor, size: int, seed: int
            ) -> list[tuple[torch.Tensor, torch.Tensor]]:
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    return [(x[order[i:i + size]], y[order[i:i + size]]) for i in range(0, len(x), size)]


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        return float((model(x).argmax(dim=1) == y).float().mean()) * 100


def train(model: nn.Module, xtr: torch.Tensor, ytr: torch.Tensor, epochs: int,
          masks: PruningMasks | None = None, lr: float = 1e-3,
          after_epoch: Any = None) -> None:
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    for epoch in range(epochs):
        masked_retrain(model, masks or PruningMasks({}), batches(xtr, ytr, 64, epoch),
                       optimiser=optimiser)
        if after_epoch is not None:
            after_epoch(epoch + 1)


def conv_macs(model: nn.Module) -> int:
    """MACs of the convolutions and linear layers for one 8x8 input."""
    total = 0

    def hook(module: nn.Module, _: Any, out: torch.Tensor) -> None:
        nonlocal total
        if isinstance(module, nn.Conv2d):
            total += out.numel() * module.in_channels // module.groups * math.prod(
                module.kernel_size)
        elif isinstance(module, nn.Linear):
            total += module.in_features * module.out_features

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        model.eval()(torch.zeros(1, *SHAPE))
    for h in handles:
        h.remove()
    return total


def pattern_rows(dense: nn.Module, data: tuple[torch.Tensor, ...], args: argparse.Namespace
                 ) -> list[dict[str, Any]]:
    xtr, ytr, xte, yte = data
    rows = []
    for rate in RATES:
        for method in PATTERN_METHODS:
            model = copy.deepcopy(dense)
            start = time.perf_counter()
            # The stem (one input channel: a kernel is a whole filter) stays dense.
            if method == "admm-data":  # the training set, task loss
                report = admm_prune_on_data(model, batches(xtr, ytr, 64, 0), rate, 8,
                                            args.data_admm_epochs, skip_first=True)
                masks = PruningMasks.from_report(model, report)
            elif method.startswith("admm"):
                report = admm_prune(model, SHAPE, rate, 8, admm_config(method, args),
                                    skip_first=True)
                masks = PruningMasks.from_report(model, report)
            elif method == "project":
                report = pattern_prune(model, rate, 8, skip_first=True)
                masks = PruningMasks.from_report(model, report)
            else:  # the same sparsity on the same convs, unstructured
                convs = nn.ModuleList(m for m in model.modules() if isinstance(m, nn.Conv2d))
                masks = magnitude_masks(convs[1:], 1 - 1 / rate, types=(nn.Conv2d,))
                masks = PruningMasks({_name(model, convs[1:], key): mask
                                      for key, mask in masks.masks.items()})
                masks.apply(model)
            seconds = time.perf_counter() - start
            before = accuracy(model, xte, yte)
            train(model, xtr, ytr, args.retrain, masks)
            assert masks.kept(model)
            rows.append({"rate": rate, "method": method, "before": round(before, 2),
                         "after": round(accuracy(model, xte, yte), 2),
                         "prune_s": round(seconds, 1)})
            print(f"  {rate:>4}x {method:<9} {before:6.2f} -> {rows[-1]['after']:6.2f} "
                  f"({seconds:.1f} s)", file=sys.stderr)
    return rows


def admm_config(method: str, args: argparse.Namespace, epochs: int | None = None,
                **extra: Any) -> AdmmConfig:
    """"admm": patcc's defaults; "admm-published": ``AdmmConfig.published()``. The
    digits are 0..1 without normalisation (``mean``/``std`` unless given)."""
    epochs = epochs or args.admm_epochs
    extra = {"mean": [0.0], "std": [1.0], "distil_steps": args.distil_steps, **extra}
    if method == "admm":
        return AdmmConfig(epochs=epochs, refit_epochs=max(1, epochs // 2), **extra)
    return AdmmConfig.published(epochs=epochs, **extra)


def ablation_rows(dense: nn.Module, data: tuple[torch.Tensor, ...], args: argparse.Namespace
                  ) -> list[dict[str, Any]]:
    """At 8x: accuracy before retraining of the published recipe and each change."""
    _, _, xte, yte = data
    rows = []
    for name, changes in ABLATION.items():
        model = copy.deepcopy(dense)
        changes = dict(changes)
        if changes.pop("refit", False):
            changes["refit_epochs"] = max(1, args.admm_epochs // 2)  # as "admm" has
        config = admm_config("admm-published", args, **changes)
        admm_prune(model, SHAPE, 8.0, 8, config, skip_first=True)
        rows.append({"8x recipe": name, "before retraining": round(accuracy(model, xte, yte), 2)})
        print(f"  8x {name}: {rows[-1]['before retraining']}", file=sys.stderr)
    return rows


def _name(model: nn.Module, convs: nn.Module, key: str) -> str:
    """``model``'s name for the parameter ``convs`` holds under ``key``."""
    param = convs.get_parameter(key)
    return next(n for n, p in model.named_parameters() if p is param)


def filter_rows(dense: nn.Module, data: tuple[torch.Tensor, ...], args: argparse.Namespace
                ) -> list[dict[str, Any]]:
    xtr, ytr, xte, yte = data
    dense_macs = conv_macs(dense)
    rows = []
    for ratio in RATIOS:
        for method in ("fpgm", "l2", "sfp", "asfp"):
            model = copy.deepcopy(dense)
            # Group-aware plans: their masks zero a removed channel's filter and its
            # batch norm, so the compact model is exactly the trained masked one.
            if method in ("fpgm", "l2"):
                plan = _plan(model, ratio, method)
                masks = plan.masks(model)
                masks.apply(model)
                train(model, xtr, ytr, args.retrain, masks)
            else:
                curve = asfp_schedule(ratio, args.retrain) if method == "asfp" else None

                def soft(epochs_done: int, model: nn.Module = model, curve: Any = curve,
                         ratio: float = ratio) -> None:
                    r = ratio if curve is None else min(ratio, curve(epochs_done))
                    _plan(model, r, "l2").masks(model).apply(model)  # zeroed, not kept

                train(model, xtr, ytr, args.retrain, after_epoch=soft)
                plan = _plan(model, ratio, "l2")  # the zeroed filters score lowest
                plan.masks(model).apply(model)
            compact = plan.compact(model).eval()
            x = xte[:64]
            with torch.no_grad():
                gap = float((compact(x) - model.eval()(x)).abs().max())
            rows.append({"ratio": ratio, "method": method,
                         "accuracy": round(accuracy(model, xte, yte), 2),
                         "macs": conv_macs(compact),
                         "macs_kept": round(conv_macs(compact) / dense_macs, 3),
                         "compact_vs_masked": gap})
            print(f"  {ratio:.0%} {method:<5} {rows[-1]['accuracy']:6.2f} "
                  f"MACs x{rows[-1]['macs_kept']}", file=sys.stderr)
    return rows


def _plan(model: nn.Module, ratio: float, criterion: str) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return plan_filter_removal(model.eval(), SHAPE, ratio, criterion)


def resnet_rows(args: argparse.Namespace) -> dict[str, float]:
    from patcc.models import REFERENCE_ARCHITECTURES

    original = REFERENCE_ARCHITECTURES["resnet18"]().eval()
    size = 64 if args.quick else 112
    shape = (3, size, size)
    x = synthetic_batch(torch.Generator().manual_seed(99), (4, *shape))
    with torch.no_grad():
        want = original(x)
    errors: dict[str, float] = {}
    for method in ("project", "admm-published", "admm", "admm-uniform"):
        model = copy.deepcopy(original)
        start = time.perf_counter()
        if method.startswith("admm"):
            epochs = args.resnet_admm_epochs
            uniform = {"inputs": "uniform"} if method == "admm-uniform" else {}
            config = admm_config(method.removesuffix("-uniform"), args, epochs, iterations=5,
                                 batch_size=8, rho_every=max(1, epochs // 4), mean=None,
                                 std=None, **uniform)
            admm_prune(model, shape, 6.0, 8, config)
        else:
            pattern_prune(model, 6.0, 8)
        seconds = time.perf_counter() - start
        with torch.no_grad():
            got = model(x)
        errors[method] = float((got - want).square().sum() / want.square().sum())
        errors[f"{method}_s"] = round(seconds, 1)
        print(f"  resnet18 6x {method}: relative output error {errors[method]:.4f} "
              f"({seconds:.0f} s)", file=sys.stderr)
    return errors


def markdown(rows: list[dict[str, Any]]) -> str:
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(str(r[k]) for k in keys) + " |" for r in rows]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30, help="dense training epochs")
    parser.add_argument("--retrain", type=int, default=8, help="masked retraining epochs")
    parser.add_argument("--admm-epochs", type=int, default=22, help="ADMM epochs per layer")
    parser.add_argument("--resnet-admm-epochs", type=int, default=8)
    parser.add_argument("--distil-steps", type=int, default=AdmmConfig.distil_steps,
                        help="Adam steps matching each input batch to the batch norms")
    parser.add_argument("--data-admm-epochs", type=int, default=24,
                        help="data-aware ADMM epochs (passes over the training set)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: few epochs")
    parser.add_argument("--out-dir", default="benchmarks/results")
    args = parser.parse_args()
    if args.quick:
        args.epochs, args.retrain, args.admm_epochs, args.resnet_admm_epochs = 3, 1, 2, 1
        args.data_admm_epochs, args.distil_steps = 1, 5
    torch.manual_seed(0)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    data = digits()
    xtr, ytr, xte, yte = data
    dense = vgg_digits()
    train(dense, xtr, ytr, args.epochs)
    dense_accuracy = accuracy(dense, xte, yte)
    print(f"dense: {dense_accuracy:.2f}% test accuracy", file=sys.stderr)
    result = {"dense_accuracy": round(dense_accuracy, 2),
              "pattern": pattern_rows(dense, data, args),
              "ablation_8x": ablation_rows(dense, data, args),
              "filters": filter_rows(dense, data, args),
              "resnet18_6x_output_error": resnet_rows(args),
              "settings": vars(args)}
    print(f"dense accuracy {result['dense_accuracy']}%\n")
    print(markdown(result["pattern"]) + "\n")
    print(markdown(result["ablation_8x"]) + "\n")
    print(markdown(result["filters"]) + "\n")
    print(json.dumps(result["resnet18_6x_output_error"]))
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "pruning.json").write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
