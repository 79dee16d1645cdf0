"""Who is reading: the (rank, world size) of this process and the consumer it runs as.

Place in the data flow: the one place the distributed context is read (explicit arguments, else
torch.distributed when initialised, else the RANK / WORLD_SIZE environment variables, else one
process). Everything downstream takes a `Consumer` explicitly.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Consumer:
    """One reader of an epoch: DataLoader worker `worker` of `workers` on rank `rank` of
    `world`. Raises ValueError for a rank outside [0, world) or a worker outside [0, workers)."""

    rank: int = 0
    world: int = 1
    worker: int = 0
    workers: int = 1

    def __post_init__(self) -> None:
        if self.world < 1 or not 0 <= self.rank < self.world:
            raise ValueError(f"Consumer: rank {self.rank} outside [0, world={self.world})")
        if self.workers < 1 or not 0 <= self.worker < self.workers:
            raise ValueError(f"Consumer: worker {self.worker} outside [0, workers={self.workers})")


def resolve_world(rank: int | None, world_size: int | None, owner: str) -> tuple[int, int]:
    """(rank, world size): explicit values, else torch.distributed if initialised, else the
    RANK / WORLD_SIZE environment variables, else (0, 1). ValueError naming the parameter of
    `owner` (or the environment variable) for a value that is not an int in range."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        found = (dist.get_rank(), dist.get_world_size())
    else:
        found = (0, 1)
        for pos, var in enumerate(("RANK", "WORLD_SIZE")):
            text = os.environ.get(var)
            if text is None:
                continue
            if not text.strip().isdigit():
                raise ValueError(f"{owner}: environment variable {var}={text!r} is not an int")
            found = (int(text), found[1]) if pos == 0 else (found[0], int(text))
    world = found[1] if world_size is None else world_size
    rank_ = found[0] if rank is None else rank
    if not isinstance(world, int) or isinstance(world, bool) or world < 1:
        raise ValueError(f"The 'world_size' parameter of {owner} must be >= 1; got {world!r}.")
    if not isinstance(rank_, int) or isinstance(rank_, bool) or not 0 <= rank_ < world:
        raise ValueError(
            f"The 'rank' parameter of {owner} must be in [0, world_size={world}); got {rank_!r}."
        )
    return rank_, world
