"""IndexedDataset: random access by global id through the offset index, under any Sampler.

Reader stage of the data flow for map-style loading: the epoch's plan is expanded into an exact
item list (id, modality mask, item index) in id order, item i is read with one `os.pread` of its
sample's byte range and decoded by the shared `Decoder` (so it equals what `StreamedDataset`
yields for the same item). Shuffling and rank splitting are the Sampler's job.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from torch.utils.data import Dataset

from ..epoch import SharedEpoch
from ..errors import ManifestError, SampleError
from .decode import (
    Decoder,
    PlanSource,
    check_modalities,
    check_on_error,
    check_plan_source,
    item_counts,
    report_skip,
    resolve_plan,
)
from .tario import ShardTable

if TYPE_CHECKING:
    from ..spec import Spec


class IndexedDataset(Dataset[dict[str, Any]]):
    """Map-style reader: `ds[i]` is item i of the epoch's expanded plan, decoded.

    With `on_error="skip"` a bad item is replaced by the next item in the expanded order that
    decodes (wrapping around); each skip is counted in `skipped` (per process) and warned about.
    """

    def __init__(
        self,
        root: str | Path,
        modalities: Mapping[str, Spec],
        *,
        plan: PlanSource = None,
        seed: int = 0,
        on_error: str = "raise",
    ) -> None:
        owner = "IndexedDataset"
        if not isinstance(seed, int) or seed < 0:
            raise ValueError(f"The 'seed' parameter of {owner} must be an int >= 0; got {seed!r}.")
        self.on_error = check_on_error(on_error, owner)
        self.table = ShardTable(root)
        specs = check_modalities(modalities, owner, self.table.manifest.fields)
        self.decoder = Decoder(specs, seed)
        self.plan_source = check_plan_source(plan, owner)
        self.seed = seed
        self.skipped = 0
        ids = self.table.ids
        if len(np.unique(ids)) != len(ids):
            raise ManifestError(f"dataset at {root}: the offset indices list some id twice")
        space = max(self.table.manifest.id_space, int(ids.max(initial=-1)) + 1)
        self._row_of_id = np.full(space, -1, dtype=np.int64)
        self._row_of_id[ids] = np.arange(len(ids), dtype=np.int64)
        self._sorted_rows = np.argsort(ids, kind="stable")
        self.epoch = 0
        self._shared_epoch = SharedEpoch(0)
        self._expand()

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch: re-expands the plan (when `plan` is a callable) and reseeds items.
        Reaches persistent DataLoader workers too (through a shared-memory cell)."""
        if not isinstance(epoch, int) or epoch < 0:
            raise ValueError(f"set_epoch: epoch must be an int >= 0; got {epoch!r}")
        self._shared_epoch.set(epoch)
        self.epoch = epoch
        self._expand()

    def _follow_epoch(self) -> None:
        published = self._shared_epoch.get()
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

    def _decode(self, row: int, mask: int, j: int) -> dict[str, Any]:
        return self.decoder(self.table.read(row), mask, epoch=self.epoch, item=j)

    def __getitem__(self, i: int) -> dict[str, Any]:
        self._follow_epoch()
        _, mask, j = self.item(i)
        try:
            return self._decode(int(self._item_rows[i]), mask, j)
        except SampleError as err:
            if self.on_error == "raise":
                raise
            bad = err
        n = len(self)
        for later in range(1, n):
            k = (int(i) + later) % n
            _, other_mask, other_j = self.item(k)
            try:
                out = self._decode(int(self._item_rows[k]), other_mask, other_j)
            except SampleError:
                continue
            self.skipped += 1
            report_skip("IndexedDataset", bad, f"item {k} ({out['shard']}:{out['key']})")
            return out
        raise SampleError(
            f"no item of this dataset decodes; the first failure: {bad.reason}",
            shard=bad.shard,
            key=bad.key,
        )

    def get(self, sample_id: int, mask: int | None = None, item: int = 0) -> dict[str, Any]:
        """Decode the sample with global id `sample_id` (all its modalities unless `mask`);
        `item` selects the per-item random draws (as item `item` of that id in a plan)."""
        if not 0 <= sample_id < len(self._row_of_id) or self._row_of_id[sample_id] < 0:
            raise KeyError(f"IndexedDataset: sample id {sample_id} is in no shard of this dataset")
        full = self.decoder.full if mask is None else int(mask)
        return self._decode(int(self._row_of_id[sample_id]), full, item)

    def close(self) -> None:
        """Close the shard files this process opened (they reopen on the next read)."""
        self.table.close()
