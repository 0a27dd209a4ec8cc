"""This process's place in a ``torchrun`` job, and joining it (rank 0 of 1 without one).

Under ``torchrun`` (``WORLD_SIZE`` > 1) each process joins the process group (NCCL on CUDA, Gloo on
CPU) and trains on its own device; the training loop wraps the model in DistributedDataParallel.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any


@dataclass
class Distributed:
    """This process's place in a torchrun job (rank 0 of 1 without one)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: str = "cpu"

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_distributed(torch: Any) -> Distributed:
    """Join the torchrun job that ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK`` describe, if any."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = torch.cuda.is_available()
    if world <= 1:
        return Distributed(device="cuda" if cuda else "cpu")
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if cuda:
        torch.cuda.set_device(local_rank)
    torch.distributed.init_process_group("nccl" if cuda else "gloo")
    return Distributed(rank, world, local_rank, f"cuda:{local_rank}" if cuda else "cpu")
