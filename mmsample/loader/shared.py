"""SharedPlan: each epoch's plan, computed once in the main process, handed to DataLoader
workers as arrays in shared memory.

Place in the data flow: method -> plan -> **SharedPlan** -> workers. The main process publishes
(epoch, plan arrays, rows per batch, DUS sizes, and the batches of the epoch the loader had
already yielded: 0, or a restored position) when an epoch starts; workers, persistent ones too,
read them when they start a pass. The arrays live in shared memory allocated with room to
spare; a plan that does not fit gets new buffers (a new generation), and the loader restarts
persistent workers so none reads a stale buffer.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..plan import ArrayPlan

# header: epoch, generation, items, has_order, rows per batch, start batch, groups (-1: none),
# then one size per modality
_EPOCH, _GEN, _ITEMS, _ORDERED, _ROWS, _START, _GROUPS, _SIZES = range(8)


class SharedPlan:
    """Plan arrays over `num_ids` ids in shared memory (see the module docstring)."""

    def __init__(self, num_ids: int, num_modalities: int) -> None:
        self.num_ids, self.num_modalities = num_ids, num_modalities
        self._header = torch.full((_SIZES + num_modalities,), -1, dtype=torch.int64)
        self._header.share_memory_()
        self._counts = torch.zeros(num_ids, dtype=torch.int64).share_memory_()
        self._masks = torch.zeros(0, dtype=torch.int64)
        self._order = torch.zeros(0, dtype=torch.int64)
        self._groups = torch.zeros(0, dtype=torch.int64)
        self._generation = 0
        self._cached: tuple[int, int, ArrayPlan] | None = None

    def publish(
        self,
        epoch: int,
        plan: ArrayPlan,
        rows: int,
        sizes: Sequence[int] | None,
        start: int = 0,
    ) -> bool:
        """Write one epoch's plan, to be served after the loader's first `start` batches;
        returns True when the buffers had to be reallocated (workers holding the old ones must
        be restarted)."""
        arrays = plan.arrays()
        counts, masks = arrays["counts"], arrays["masks"]
        if len(counts) > self.num_ids and int(counts[self.num_ids :].sum()) > 0:
            raise ValueError(
                f"the plan yields items for ids >= {self.num_ids}, outside the dataset"
            )
        if len(counts) != self.num_ids:
            full = np.zeros(self.num_ids, dtype=np.int64)
            full[: min(len(counts), self.num_ids)] = counts[: self.num_ids]
            counts = full
        n = len(masks)
        grown = n > self._masks.shape[0]
        if grown:
            cap = max(2 * n, self.num_ids)
            self._masks = torch.zeros(cap, dtype=torch.int64).share_memory_()
            self._order = torch.zeros(cap, dtype=torch.int64).share_memory_()
            self._groups = torch.zeros(cap, dtype=torch.int64).share_memory_()
            self._generation += 1
        self._counts.copy_(torch.from_numpy(counts))
        self._masks[:n] = torch.from_numpy(masks)
        ordered, h = "order" in arrays, self._header
        if ordered:
            self._order[:n] = torch.from_numpy(arrays["order"])
        groups = arrays.get("groups", np.zeros(0, np.int64))
        self._groups[: len(groups)] = torch.from_numpy(groups)
        h[_GROUPS] = len(groups) if "groups" in arrays else -1
        h[_GEN], h[_ITEMS], h[_ORDERED] = self._generation, n, int(ordered)
        h[_ROWS] = rows
        h[_START] = start
        h[_SIZES:] = torch.tensor(list(sizes) if sizes is not None else [-1] * self.num_modalities)
        h[_EPOCH] = epoch
        self._cached = None
        return grown

    @property
    def epoch(self) -> int:
        """The epoch last published (-1: none yet)."""
        return int(self._header[_EPOCH])

    def start(self) -> int:
        """Batches of the published epoch the loader had yielded before this pass."""
        return int(self._header[_START])

    def set_start(self, start: int) -> None:
        """Let the next pass start after the loader's first `start` batches."""
        self._header[_START] = int(start)

    def rows(self) -> int:
        """Rows per batch of the published epoch."""
        return int(self._header[_ROWS])

    def sizes(self) -> list[int] | None:
        """DUS rows per modality of the published epoch (None: not a DUS epoch)."""
        sizes = self._header[_SIZES:].tolist()
        return None if sizes[0] < 0 else sizes

    def plan(self) -> ArrayPlan:
        """The published plan (a copy of the arrays, made once per epoch in each process)."""
        epoch, gen = self.epoch, int(self._header[_GEN])
        if epoch < 0:
            raise RuntimeError("SharedPlan: no plan was published yet (call set_epoch)")
        if gen != self._generation:
            raise RuntimeError(
                "SharedPlan: this worker holds the buffers of an older plan; the loader restarts "
                "persistent workers when a plan outgrows them (use BalancedLoader.set_epoch)."
            )
        if self._cached is not None and self._cached[:2] == (epoch, gen):
            return self._cached[2]
        n = int(self._header[_ITEMS])
        order = self._order[:n].numpy().copy() if int(self._header[_ORDERED]) else None
        g = int(self._header[_GROUPS])
        groups = self._groups[:g].numpy().copy() if g >= 0 else None
        plan = ArrayPlan(self._counts.numpy().copy(), self._masks[:n].numpy().copy(), order, groups)
        self._cached = (epoch, gen, plan)
        return plan

    def __getstate__(self) -> dict[str, object]:
        state = dict(self.__dict__)
        state["_cached"] = None
        return state
