"""IndexedDataset: random access by global id through the offset index, under any Sampler.

Reader stage of the data flow for map-style loading: the epoch's plan is expanded into an exact
item list (id, modality mask, item index) in id order, item i is read with one `os.pread` of its
sample's byte range and decoded by the shared `Decoder` (so it equals what `StreamedDataset`
yields for the same item). Shuffling and rank splitting are the Sampler's job.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from torch.utils.data import Dataset

from ..errors import SampleError
from ..schedule import replacement_positions, skip_start
from .decode import (
    MAIN_PROCESS_DECODE_THREADS,
    PlanSource,
    check_decode_threads,
    item_counts,
    resolve_plan,
)
from .source import ShardSource

if TYPE_CHECKING:
    from ..spec import Spec


class IndexedDataset(ShardSource, Dataset[dict[str, Any]]):
    """Map-style reader: `ds[i]` is item i of the epoch's expanded plan, decoded.

    With `ids=` (an id set, e.g. a labeled set) only those samples are read, without
    rewriting shards; ValueError naming the missing ids when some are in no shard.
    With `split="train"` only the samples of that split (the input table's split column) are
    items; ValueError for a `split` the manifest does not count. Opening checks every offset
    index (`mmsample.shards.offsets`).
    With `on_error="skip"` a bad item i is replaced by the first item that decodes among
    `mmsample.skips.replacement_positions(i, len(self), ...)` (seeded by seed, epoch and i, so
    the same in every worker); each skip is warned about (naming the bad and the replacing
    item) and counted in `skipped`, over this process and its DataLoader workers.
    `decode_threads` (default 1; None: torch's own count): torch intra-op threads while an item
    decodes in the main process (num_workers=0); the caller's count is restored after each item.
    """

    def __init__(
        self,
        root: str | Path,
        modalities: Mapping[str, Spec],
        *,
        plan: PlanSource = None,
        seed: int = 0,
        on_error: str = "raise",
        decode_threads: int | None = MAIN_PROCESS_DECODE_THREADS,
        split: str | None = None,
        ids: Iterable[int] | np.ndarray | None = None,
    ) -> None:
        threads = check_decode_threads(decode_threads, "IndexedDataset")
        self._open(root, modalities, plan, seed, on_error, split, ids)
        self.decoder.threads = threads
        ids = self.table.ids
        # rows in id order and their (unique: checked by the table) ids: id -> row by binary
        # search, memory O(samples), never O(largest id)
        self._sorted_rows = np.argsort(ids, kind="stable")
        self._sorted_ids = ids[self._sorted_rows]
        self._expand()

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch: re-expands the plan (when `plan` is a callable) and reseeds items.
        Reaches persistent DataLoader workers too (through a shared-memory cell)."""
        self._publish_epoch(epoch)
        self.epoch = epoch
        self._expand()

    def _follow_epoch(self) -> None:
        published = self._published_epoch()
        if published != self.epoch:  # a persistent worker: the main process moved on
            self.epoch = published
            self._expand()

    def _expand(self) -> None:
        self.plan = resolve_plan(self.plan_source, self.epoch, len(self.decoder.names))
        rows = self._sorted_rows
        counts = item_counts(self.plan, self.table.ids[rows])
        self._item_rows = np.repeat(rows, counts)
        starts = np.cumsum(counts) - counts
        self._item_index = np.arange(len(self._item_rows), dtype=np.int64) - np.repeat(
            starts, counts
        )

    def __len__(self) -> int:
        """Items of the epoch's expanded plan (default: every sample once)."""
        return len(self._item_rows)

    def item(self, i: int) -> tuple[int, int, int]:
        """(global id, modality mask, item index within the id) of item `i`."""
        n = len(self)
        if not isinstance(i, int | np.integer):
            raise TypeError(f"IndexedDataset: an item index must be an int; got {i!r}")
        if not -n <= i < n:
            raise IndexError(f"IndexedDataset: item index {i!r} outside [0, {n})")
        row = int(self._item_rows[i])
        sample_id = int(self.table.ids[row])
        j = int(self._item_index[i])
        return sample_id, int(self.plan.items(sample_id)[j]), j

    def _decode(
        self,
        row: int,
        mask: int,
        j: int,
        fallback: int | None = None,
        epoch: int | None = None,
    ) -> dict[str, Any]:
        epoch = self.epoch if epoch is None else epoch
        return self.decoder(self.table.read(row), mask, epoch=epoch, item=j, fallback=fallback)

    def __getitem__(self, i: int) -> dict[str, Any]:
        self._follow_epoch()
        try:
            return self._attempt(i)()
        except SampleError as err:
            if self.on_error == "raise":
                raise
            n = len(self)
            # Deterministic replacement, the same in every worker: see replacement_positions.
            at = int(i) % n
            later = replacement_positions(at, n, skip_start(self.seed, self.epoch, at))
            return self._replace(err, ((f"item {j}", self._attempt(j)) for j in later))

    def _attempt(self, i: int) -> Callable[[], dict[str, Any]]:
        def run() -> dict[str, Any]:
            _, mask, j = self.item(i)
            return self._decode(int(self._item_rows[i]), mask, j)

        return run

    def get(
        self,
        sample_id: int,
        mask: int | None = None,
        item: int = 0,
        fallback: int | None = None,
        epoch: int | None = None,
    ) -> dict[str, Any]:
        """Decode the sample with global id `sample_id` (all its modalities unless `mask`);
        `item` and `epoch` (default: the reader's) select the per-item random draws (as item
        `item` of that id in that epoch's plan); `fallback` is the mask used when `mask` leaves
        none of the sample's modalities."""
        pos = int(np.searchsorted(self._sorted_ids, sample_id))
        if pos == len(self._sorted_ids) or self._sorted_ids[pos] != sample_id:
            where = f" of split {self.table.split!r}" if self.table.split is not None else ""
            raise KeyError(
                f"IndexedDataset: sample id {sample_id} is in no shard{where} of this dataset"
            )
        full = self.decoder.full if mask is None else int(mask)
        return self._decode(int(self._sorted_rows[pos]), full, item, fallback, epoch)

    def close(self) -> None:
        """Close the shard files this process opened (they reopen on the next read)."""
        self.table.close()


class IdSubset(Dataset[dict[str, Any]]):
    """A map-style view of an `IndexedDataset` over `ids`: item k decodes sample `ids[k]` with
    every modality it has (item 0's random draws, at the reader's epoch). For passes that visit
    given ids in order (scoring, evaluation, a pool pass); KeyError for an id in no shard."""

    def __init__(self, reader: IndexedDataset, ids: np.ndarray) -> None:
        self.reader, self.ids = reader, np.asarray(ids, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, k: int) -> dict[str, Any]:
        return self.reader.get(int(self.ids[k]))
