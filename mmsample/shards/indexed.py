"""IndexedDataset: random access by global id through the offset index, under any Sampler.

Reader for map-style loading: `get(id, mask, item, epoch)` reads one sample's byte range with
one `os.pread` and decodes the modalities of that item with the shared `Decoder` (so it equals
what `StreamedDataset` yields for the same item). On its own, `ds[i]` is the i-th sample in id
order with every modality (epoch 0's random draws); the loader (`balanced_loader(...,
mode="indexed")`) applies plans, epochs and order through `get`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from torch.utils.data import Dataset

from ..decoding.decoder import MAIN_PROCESS_DECODE_THREADS, check_decode_threads
from ..errors import SampleError
from ..schedule import replacement_positions, skip_start
from ..storage.cache import ShardCache
from ..storage.retry import RetryPolicy
from .source import ShardSource, remote_settings

if TYPE_CHECKING:
    from ..decoding import Spec


class IndexedDataset(ShardSource, Dataset[dict[str, Any]]):
    """Map-style reader: `ds[i]` is the i-th sample in id order, every modality, decoded.

    With `ids=` (an id set, e.g. a labeled set) only those samples are read, without
    rewriting shards; ValueError naming the missing ids when some are in no shard.
    With `split="train"` only the samples of that split (the input table's split column) are
    items; ValueError for a `split` the manifest does not count. Opening checks every offset
    index (`mmsample.shards.offsets`).
    With `on_error="skip"` a bad sample i is replaced by the first sample that decodes among
    `mmsample.schedule.replacement_positions(i, len(self), ...)` (seeded by seed and i, so the
    same in every worker); each skip is warned about (naming the bad and the replacing sample)
    and counted in `skipped`, over this process and its DataLoader workers.
    `decode_threads` (default 1; None: torch's own count): torch intra-op threads while an item
    decodes in the main process (num_workers=0); the caller's count is restored after each item.
    `root` may be a URL (`s3://`, `gs://`, `https://`; see `mmsample.storage`): each sample is
    one byte-range request, retried under `retry` (a `mmsample.storage.RetryPolicy`);
    `prefetch(ids)` (the loader calls it) reads the next samples ahead, `prefetch` requests at
    a time, adjacent ones coalesced; `storage_options` go to the fsspec backend (for s3://,
    `"client": "obstore" | "fsspec"` chooses the client: see `mmsample.storage.open_store`);
    `cache` (a `mmsample.storage.ShardCache`) keeps whole shards on a local disk.
    """

    def __init__(
        self,
        root: str | Path,
        modalities: Mapping[str, Spec],
        *,
        seed: int = 0,
        on_error: str = "raise",
        decode_threads: int | None = MAIN_PROCESS_DECODE_THREADS,
        split: str | None = None,
        ids: Iterable[int] | np.ndarray | None = None,
        storage_options: Mapping[str, Any] | None = None,
        retry: RetryPolicy | None = None,
        cache: ShardCache | None = None,
        prefetch: int = 32,
    ) -> None:
        threads = check_decode_threads(decode_threads, "IndexedDataset")
        remote = remote_settings(
            root, "IndexedDataset", "random", storage_options, retry, cache, prefetch
        )
        self._open(root, modalities, seed, on_error, split, ids, remote)
        self.decoder.threads = threads
        ids = self.table.ids
        # rows in id order and their (unique: checked by the table) ids: id -> row by binary
        # search, memory O(samples), never O(largest id)
        self._sorted_rows = np.argsort(ids, kind="stable")
        self._sorted_ids = ids[self._sorted_rows]

    @property
    def ids(self) -> np.ndarray:
        """int64 `[samples]`: the sample ids this reader serves, ascending (read-only)."""
        view = self._sorted_ids.view()
        view.flags.writeable = False
        return view

    def __len__(self) -> int:
        """Samples this reader serves."""
        return len(self._sorted_ids)

    def __getitem__(self, i: int) -> dict[str, Any]:
        n = len(self)
        if not isinstance(i, int | np.integer):
            raise TypeError(f"IndexedDataset: an item index must be an int; got {i!r}")
        if not -n <= i < n:
            raise IndexError(f"IndexedDataset: item index {i!r} outside [0, {n})")
        at = int(i) % n
        try:
            return self._attempt(at)()
        except SampleError as err:
            if self.on_error == "raise":
                raise
            # Deterministic replacement, the same in every worker: see replacement_positions.
            later = replacement_positions(at, n, skip_start(self.seed, 0, at))
            return self.replace(err, ((f"item {j}", self._attempt(j)) for j in later))

    def _attempt(self, i: int) -> Callable[[], dict[str, Any]]:
        return lambda: self.get(int(self._sorted_ids[i]))

    def get(
        self,
        sample_id: int,
        mask: int | None = None,
        item: int = 0,
        fallback: int | None = None,
        epoch: int = 0,
    ) -> dict[str, Any]:
        """Decode the sample with global id `sample_id` (all its modalities unless `mask`);
        `item` and `epoch` select the per-item random draws (as item `item` of that id in that
        epoch's plan); `fallback` is the mask used when `mask` leaves none of the sample's
        modalities. KeyError for an id in no shard; SampleError for a sample that does not read
        or decode."""
        pos = int(np.searchsorted(self._sorted_ids, sample_id))
        if pos == len(self._sorted_ids) or self._sorted_ids[pos] != sample_id:
            where = f" of split {self.table.split!r}" if self.table.split is not None else ""
            raise KeyError(
                f"IndexedDataset: sample id {sample_id} is in no shard{where} of this dataset"
            )
        full = self.decoder.full if mask is None else int(mask)
        raw = self.table.read(int(self._sorted_rows[pos]))
        return self.decode(raw, full, epoch=epoch, item=item, fallback=fallback)

    def prefetch(self, ids: np.ndarray) -> None:
        """Start reading the samples `ids` ahead of their `get` (a remote dataset: concurrent,
        coalesced range requests; a local one: nothing to do). Ids in no shard are left out."""
        ids = np.asarray(ids, dtype=np.int64)
        pos = np.searchsorted(self._sorted_ids, ids)
        ok = pos < len(self._sorted_ids)
        ok[ok] = self._sorted_ids[pos[ok]] == ids[ok]
        self.table.prefetch(self._sorted_rows[pos[ok]])

    def close(self) -> None:
        """Close the shard files this process opened (they reopen on the next read)."""
        self.table.close()


class IdSubset(Dataset[dict[str, Any]]):
    """A map-style view of an `IndexedDataset` over `ids`: item k decodes sample `ids[k]` with
    every modality it has (item 0's random draws of epoch 0). For passes that visit
    given ids in order (scoring, evaluation, a pool pass); KeyError for an id in no shard."""

    def __init__(self, reader: IndexedDataset, ids: np.ndarray) -> None:
        self.reader, self.ids = reader, np.asarray(ids, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, k: int) -> dict[str, Any]:
        return self.reader.get(int(self.ids[k]))
