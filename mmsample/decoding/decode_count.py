"""How many items the `Decoder` decoded, in this process and its DataLoader workers: the work a
training run does, counted where it happens.

Place in the data flow: `Decoder.__call__` (`mmsample.decoding.decoder`) adds every item it
decodes (`add`, after the decode succeeded); a caller reads `total()` before and after a stretch
of work (an epoch's training and scoring passes, an evaluation) and takes the difference. An
item counts once however many of its modalities it decodes (one clip decode); `modalities`
counts each decoded modality.

The counts live in shared memory made when this module is imported, so DataLoader workers
forked from this process (the default start method on Linux) add into it; each process writes
its own slot (the main process slot 0, DataLoader worker w slot w + 1), so two workers never
lose each other's updates. Workers started with "spawn" or "forkserver" import a fresh copy:
their decodes are not seen here (`pipelines.demo_cost` checks the count against the items the
runs logged and says so).
"""

from __future__ import annotations

import multiprocessing
from typing import NamedTuple

from torch.utils.data import get_worker_info

__all__ = ["SLOTS", "DecodeTotal", "add", "total"]

SLOTS = 257  # the main process and up to 256 DataLoader workers
_COUNTS = multiprocessing.RawArray("q", 2 * SLOTS)  # slot s: [2s] items, [2s + 1] modalities


class DecodeTotal(NamedTuple):
    """Items decoded (each once, whatever it carried) and modalities decoded (one per modality
    of each item), over this process and its forked DataLoader workers."""

    items: int
    modalities: int

    def __sub__(self, other: tuple[int, ...]) -> DecodeTotal:
        return DecodeTotal(self.items - other[0], self.modalities - other[1])


def add(mask: int) -> None:
    """Count one decoded item that carried the modalities of bitmask `mask` (0: nothing was
    decoded, nothing is counted). A worker with id >= SLOTS - 1 shares the last slot."""
    if not mask:
        return
    info = get_worker_info()
    slot = 0 if info is None else min(info.id + 1, SLOTS - 1)
    _COUNTS[2 * slot] += 1
    _COUNTS[2 * slot + 1] += int(mask).bit_count()


def total() -> DecodeTotal:
    """The counts so far (read in the main process: every forked worker's slot included)."""
    return DecodeTotal(sum(_COUNTS[0::2]), sum(_COUNTS[1::2]))
