"""Skip-and-replace: which epoch items stand in for a bad one, and the count of skips.

With `on_error="skip"` a reader replaces an item that cannot be read or decoded by another item
of the same epoch. Both readers use `replacement_positions`: the candidates are a function of
(seed, epoch, the bad item's position in the epoch's item sequence, its length) alone, so the
replacement is the same whichever rank, DataLoader worker or worker count meets the bad item,
and a run of bad items (a whole corrupt shard) is replaced by items spread over the epoch rather
than one item repeated. `SkipCounter` counts skips in shared memory, so the main process sees
the skips of its DataLoader workers.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import get_worker_info

__all__ = ["MAX_WORKER_SLOTS", "SkipCounter", "replacement_positions"]

MAX_WORKER_SLOTS = 1024  # worker ids beyond this share slots (their counts may then race)


def replacement_positions(position: int, total: int, start: int) -> Iterator[int]:
    """Every position of an epoch of `total` items but `position`, in the order tried as its
    replacement: from `(position + 1 + start % (total - 1)) % total` on, wrapping around.
    `start` is a seeded draw (e.g. `mix_seed(seed, epoch, position)`)."""
    if total < 2:
        return
    first = position + 1 + start % (total - 1)
    for k in range(total):
        q = (first + k) % total
        if q != position:
            yield q


class SkipCounter:
    """Skips counted per process in a shared-memory tensor (one slot for the process that made
    it, one per DataLoader worker id), summed by `total()`; survives fork and spawn."""

    def __init__(self) -> None:
        self._slots = torch.zeros(1 + MAX_WORKER_SLOTS, dtype=torch.long).share_memory_()

    def add(self, count: int = 1) -> None:
        """Count `count` skips made by this process (a worker writes only its own slot)."""
        info = get_worker_info()
        slot = 0 if info is None else 1 + info.id % MAX_WORKER_SLOTS
        self._slots[slot] += count

    def total(self) -> int:
        """Skips made so far by every process sharing this counter."""
        return int(self._slots.sum())
