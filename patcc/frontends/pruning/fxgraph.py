"""What the pruning algorithms read from a model's ``torch.fx`` graph."""

from __future__ import annotations

from torch import fx, nn

from patcc.errors import PruningError


def trace(model: nn.Module, who: str) -> fx.GraphModule:
    """``torch.fx.symbolic_trace(model)``; a model it cannot trace (data-dependent
    control flow, say) is a ``PruningError`` naming ``who`` asked."""
    try:
        return fx.symbolic_trace(model)
    except Exception as e:  # torch.fx raises many kinds for untraceable code
        raise PruningError(f"{who}: {type(model).__name__} cannot be traced by torch.fx "
                           f"({type(e).__name__}: {e})") from e


def sole_user(node: fx.Node) -> fx.Node | None:
    """The one node that uses ``node``'s value, or None (no user, or several)."""
    users = list(node.users)
    return users[0] if len(users) == 1 else None


def module_of(gm: fx.GraphModule, node: fx.Node | None, kind: type[nn.Module]
              ) -> nn.Module | None:
    """The module a ``call_module`` node calls, when it is a ``kind``."""
    if node is None or node.op != "call_module":
        return None
    module = gm.get_submodule(str(node.target))
    return module if isinstance(module, kind) else None


def following_batchnorms(model: nn.Module, who: str) -> dict[str, str]:
    """Conv name -> the name of the BatchNorm2d that alone consumes its output."""
    gm = trace(model, who)
    pairs = {}
    for node in gm.graph.nodes:
        if module_of(gm, node, nn.Conv2d) is None:
            continue
        user = sole_user(node)
        if module_of(gm, user, nn.BatchNorm2d) is not None:
            pairs[str(node.target)] = str(user.target)  # type: ignore[union-attr]
    return pairs
