"""Models pruned with torch's own tools: ``torch.nn.utils.prune`` (``weight_orig``
times the buffer ``weight_mask``, applied by a forward pre-hook) and
``torch.nn.utils.parametrize`` (``parametrizations.weight.original`` through a
function). Their parameters are not named ``weight``, and writing ``weight`` does
not last past the next forward.

Functions that only read weights use :func:`effective_parameters` (every tensor under
its plain name, as the model computes it). Those that write them in place first make
the reparametrisations permanent with :func:`bake_reparametrisations`, which also
returns their masks, so training can go on with the same weights kept.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterator

import torch
from torch import nn
from torch.nn.utils import parametrize, prune


def _reparametrised(model: nn.Module) -> Iterator[tuple[str, nn.Module, str, str]]:
    """(qualified plain name, module, tensor name, how) for each reparametrised tensor."""
    for prefix, module in model.named_modules():
        dot = f"{prefix}." if prefix else ""
        for hook in module._forward_pre_hooks.values():
            if isinstance(hook, prune.BasePruningMethod):
                name = hook._tensor_name
                yield f"{dot}{name}", module, name, "torch.nn.utils.prune"
        if parametrize.is_parametrized(module):
            for name in module.parametrizations:
                yield f"{dot}{name}", module, str(name), "torch.nn.utils.parametrize"


def reparametrised(model: nn.Module) -> dict[str, str]:
    """The tensors of ``model`` that torch's pruning or parametrisation computes: plain
    name -> which tool (``"torch.nn.utils.prune"`` or ``"torch.nn.utils.parametrize"``)."""
    return {qualified: how for qualified, _, _, how in _reparametrised(model)}


def _effective(module: nn.Module, name: str, how: str) -> torch.Tensor:
    if how == "torch.nn.utils.prune":
        return getattr(module, f"{name}_orig") * getattr(module, f"{name}_mask")
    return getattr(module, name)  # a parametrisation recomputes it on access


def effective_parameters(model: nn.Module) -> dict[str, torch.Tensor]:
    """``named_parameters()`` with every reparametrised tensor replaced by the value
    the model computes with, under its plain name (``conv.weight``)."""
    params: dict[str, torch.Tensor] = dict(model.named_parameters())
    for qualified, module, name, how in _reparametrised(model):
        prefix = qualified[: -len(name)]
        params.pop(f"{prefix}{name}_orig", None)
        params.pop(f"{prefix}parametrizations.{name}.original", None)
        params[qualified] = _effective(module, name, how)
    return params


def copy_model(model: nn.Module) -> nn.Module:
    """``copy.deepcopy(model)``, also after a forward pass with gradients on: then the
    weights ``torch.nn.utils.prune`` computed are not graph leaves, which deepcopy
    refuses. They are replaced by detached copies first (each forward recomputes them
    anyway)."""
    for _, module, name, how in _reparametrised(model):
        if how == "torch.nn.utils.prune":
            setattr(module, name, getattr(module, name).detach())
    return copy.deepcopy(model)


def bake_reparametrisations(model: nn.Module) -> dict[str, torch.Tensor]:
    """Make every ``torch.nn.utils.prune`` and ``parametrize`` reparametrisation of
    ``model`` permanent, in place: the tensor becomes a plain parameter holding the
    value the model computed with. Returns the kept-weight masks by plain name (the
    prune masks; for a parametrisation, the non-zero entries of its result), ready for
    :class:`~patcc.frontends.pruning.masks.PruningMasks`."""
    masks = {}
    for qualified, module, name, how in list(_reparametrised(model)):
        with torch.no_grad():
            if how == "torch.nn.utils.prune":
                masks[qualified] = getattr(module, f"{name}_mask").detach().bool().clone()
                prune.remove(module, name)
            else:
                masks[qualified] = getattr(module, name).detach() != 0
                _own_class(module)
                parametrize.remove_parametrizations(module, name, leave_parametrized=True)
    return masks


def _own_class(module: nn.Module) -> None:
    """Give a parametrised module a class of its own. ``parametrize`` makes one class
    per module and ``copy.deepcopy`` shares it between the copies, while removing a
    parametrisation deletes the property from the class -- from the original too."""
    cls = type(module)
    namespace = {k: v for k, v in cls.__dict__.items() if k not in ("__dict__", "__weakref__")}
    module.__class__ = type(cls.__name__, cls.__bases__, namespace)


def bake_before_pruning(model: nn.Module, who: str) -> None:
    """For a function that prunes ``model``'s weights in place: make reparametrisations
    permanent first (a write to a computed weight would not last), saying so."""
    found = reparametrised(model)
    if not found:
        return
    names = ", ".join(list(found)[:4]) + (" ..." if len(found) > 4 else "")
    warnings.warn(f"{who}: made the {' and '.join(sorted(set(found.values())))} "
                  f"reparametrisation of {names} permanent (plain weights, as computed) "
                  "before pruning in place", stacklevel=3)
    bake_reparametrisations(model)
