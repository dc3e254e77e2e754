"""What the pruning algorithms need of ``torch.distributed``: run alone or under
``torchrun``, they see the same model and, in data-free ADMM, the same gradients on
every process.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DistributedDataParallel / DataParallel wrapper."""
    wrappers = (nn.parallel.DistributedDataParallel, nn.DataParallel)
    return model.module if isinstance(model, wrappers) else model


def average_gradients(params: Sequence[torch.Tensor]) -> None:
    """Average the gradients of ``params`` over the processes (all-reduce), so that
    every process takes the same step; nothing when ``torch.distributed`` is not
    initialised."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return
    world = torch.distributed.get_world_size()
    for p in params:
        if p.grad is not None:
            torch.distributed.all_reduce(p.grad)
            p.grad /= world


def rank() -> int:
    """This process's rank under ``torch.distributed``, 0 when it is not initialised."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank()
    return 0
