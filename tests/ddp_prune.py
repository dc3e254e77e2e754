"""Run by tests/test_admm.py under torchrun (2 processes, gloo): data-free ADMM, then
masked retraining of the DistributedDataParallel-wrapped model on each process's own
data. Each process saves its final weights to OUT/rank<r>.pt."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.distributed as dist
from test_admm import SHAPE, make_model
from torch import nn

from patcc.frontends.pruning import AdmmConfig, PruningMasks, admm_prune, masked_retrain


def main(out: Path) -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    model = make_model()
    report = admm_prune(model, SHAPE, config=AdmmConfig(epochs=2, iterations=3, batch_size=2))
    torch.save(model.state_dict(), out / f"admm{rank}.pt")
    masks = PruningMasks.from_report(model, report)
    g = torch.Generator().manual_seed(100 + rank)  # each process its own data
    data = [(torch.randn(4, *SHAPE, generator=g), torch.randn(4, 12, 6, 6, generator=g))
            for _ in range(3)]
    ddp = nn.parallel.DistributedDataParallel(model)
    masked_retrain(ddp, masks, data, loss_fn=nn.functional.mse_loss, epochs=2, lr=1e-2)
    torch.save(model.state_dict(), out / f"rank{rank}.pt")
    # Both processes reach the end before either tears the group down: rank 0 hosts
    # the rendezvous store, and leaving while rank 1 still used it aborted rank 0
    # ("terminate called without an active exception") about one run in four under load.
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
