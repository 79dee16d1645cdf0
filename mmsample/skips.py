"""The count of skipped items (`on_error="skip"`), over a process and its DataLoader workers.

Which item replaces a bad one is the schedule's decision (`mmsample.schedule.replacement_positions`);
`SkipCounter` counts skips in shared memory, so the main process sees its workers' skips.
"""

from __future__ import annotations

import torch
from torch.utils.data import get_worker_info

__all__ = ["MAX_WORKER_SLOTS", "SkipCounter"]

MAX_WORKER_SLOTS = 1024  # worker ids beyond this share slots (their counts may then race)


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
