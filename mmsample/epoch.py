"""SharedEpoch: the epoch number that the main process sets and every DataLoader worker reads.

Readers hold one, so `set_epoch` in the training loop reaches persistent workers too (they keep
their own copy of the dataset object, but this cell lives in shared memory).
"""

from __future__ import annotations

import torch


class SharedEpoch:
    """An int in shared memory; survives pickling into fork and spawn DataLoader workers."""

    def __init__(self, epoch: int = 0) -> None:
        self._cell = torch.full((1,), int(epoch), dtype=torch.long).share_memory_()

    def set(self, epoch: int) -> None:
        """Publish `epoch` to every process holding this cell."""
        self._cell[0] = int(epoch)

    def get(self) -> int:
        """The epoch last published by any process."""
        return int(self._cell[0])
