"""The reading stages that the standalone readers and the loader's workers compose.

Place in the data flow: schedule (`mmsample.schedule`) -> **lay out** (`streamed_epoch`: the
epoch's rows and their plan items over a reader's table) -> **read ahead** (`read_ahead`:
sequential reads, at most a shuffle buffer held) -> **decode or replace** (`streamed_samples`)
-> the caller's batching. Each stage is a small function or generator whose every input is an
argument (seed, epoch, plan, consumer, start): nothing here stores an epoch or a position.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from ..errors import SampleError
from ..plan import ArrayPlan
from ..schedule import (
    Consumer,
    locate,
    replacement_positions,
    rows_in_order,
    shard_order,
    skip_start,
    streamed_slice,
)

if TYPE_CHECKING:
    from .streamed import StreamedDataset

T = TypeVar("T")


@dataclass(frozen=True)
class StreamedEpoch:
    """One epoch of a streamed reader: `rows` (table rows in reading order), `counts[s]` (items
    of the s-th row), `first[s]` (the position in `masks` of its first item) and `masks` (every
    item's mask, as `ArrayPlan.masks`); `masks is None` for the plain plan (every row once, every
    modality: `full`)."""

    epoch: int
    rows: np.ndarray
    counts: np.ndarray
    first: np.ndarray
    masks: np.ndarray | None
    full: int

    @property
    def total(self) -> int:
        """Items in the epoch over all ranks."""
        return int(self.counts.sum())

    def mask(self, s: int, item: int) -> int:
        """The plan's mask of item `item` of the s-th row."""
        return self.full if self.masks is None else int(self.masks[self.first[s] + item])


def streamed_epoch(reader: StreamedDataset, epoch: int, plan: ArrayPlan | None) -> StreamedEpoch:
    """Lay `plan` (None: the plain plan) out over `reader`'s table for `epoch`: the shards in the
    epoch's order (seeded by the reader's seed when it shuffles shards), each shard's rows in
    file order, each row's items from the plan."""
    table = reader.table
    shards = shard_order(len(table.names), reader.seed, epoch, reader.shuffle_shards)
    rows = rows_in_order(table.first_row, shards)
    full = reader.decoder.full
    if plan is None:
        ones = np.ones(len(rows), dtype=np.int64)
        return StreamedEpoch(epoch, rows, ones, np.zeros(len(rows), np.int64), None, full)
    ids = table.ids[rows]
    counts = plan.counts(ids)
    first = np.zeros(len(rows), dtype=np.int64)
    has = counts > 0
    first[has] = plan.first_items(ids[has])
    return StreamedEpoch(epoch, rows, counts, first, plan.masks, full)


def read_ahead(emit: np.ndarray, reads: np.ndarray, read: Callable[[int], T]) -> Iterator[T]:
    """`read(s)` for each s of `emit`, reading samples in `reads` order (file order): a sample
    is read once, when the walk reaches it and some emission still needs it, and dropped after
    its last emission. Samples that no emission needs are walked past unread."""
    need = Counter(emit.tolist())
    loaded: dict[int, T] = {}
    walk = 0
    for k in emit.tolist():
        while k not in loaded:
            s = int(reads[walk])
            walk += 1
            if need[s] > 0 and s not in loaded:
                loaded[s] = read(s)
        value = loaded[k]
        need[k] -= 1
        if need[k] == 0:
            del loaded[k]
        yield value


def streamed_samples(
    reader: StreamedDataset,
    layout: StreamedEpoch,
    consumer: Consumer,
    *,
    start: int = 0,
    granule: int = 1,
    restrict: Callable[[int], int] | None = None,
    equal_split: bool | None = None,
    drop_last: bool = False,
) -> Iterator[dict[str, Any]]:
    """The decoded items of `consumer`'s slice of the streamed epoch `layout`, from its
    `start`-th on (schedule: `mmsample.schedule.streamed_slice`).

    `granule`: consumers' slices are whole multiples of it (a loader's batch, under DUS);
    `drop_last`: a rank's share is rounded down to whole granules rather than up by wrapping.
    `restrict(step)`: a mask further restricting the modalities of the consumer's item at
    `step` (a loader assigning modalities by batch position, as DUS does); a restriction that
    leaves the sample none falls back to the plan's mask, so no row is empty.
    `equal_split` (default: the reader's): every rank gets equally many items (see
    `mmsample.schedule.consumer_range`).
    With the reader's `on_error="skip"`, a bad item at epoch position p is replaced by the first
    item that decodes among `replacement_positions(p, total, ...)`. ValueError when `start` is
    past the slice (a state from another plan or dataset)."""
    sl = streamed_slice(
        layout.counts,
        consumer,
        seed=reader.seed,
        epoch=layout.epoch,
        shuffle=reader.shuffle,
        equal_split=reader.equal_split if equal_split is None else equal_split,
        granule=granule,
        drop_last=drop_last,
    )
    n = len(sl.samples)
    if start > n:
        raise ValueError(
            f"StreamedDataset: the state says {start} items were yielded but this consumer has "
            f"{n} items in epoch {layout.epoch}: the plan or dataset changed"
        )
    rows = layout.rows
    reader.table.expect(rows[sl.reads])  # a remote dataset streams the next shard ahead
    raws = read_ahead(sl.samples[start:], sl.reads, lambda s: reader.read_row(int(rows[s])))
    cum = np.cumsum(layout.counts)
    for step, raw in zip(range(start, n), raws):
        s, item = int(sl.samples[step]), int(sl.items[step])
        limit = -1 if restrict is None else int(restrict(step))
        try:
            yield _decode(reader, layout, raw, s, item, limit)
        except SampleError as err:
            if reader.on_error == "raise":
                raise
            p = int(sl.positions[step])
            later = replacement_positions(p, sl.total, skip_start(reader.seed, layout.epoch, p))
            yield reader.replace(
                err, ((f"epoch item {q}", _attempt(reader, layout, cum, q, limit)) for q in later)
            )


def _decode(
    reader: StreamedDataset, layout: StreamedEpoch, raw: Any, s: int, item: int, limit: int
) -> dict[str, Any]:
    planned = layout.mask(s, item)
    fallback = planned if limit != -1 else None  # a restricted row is never empty
    return reader.decode(raw, planned & limit, epoch=layout.epoch, item=item, fallback=fallback)


def _attempt(
    reader: StreamedDataset, layout: StreamedEpoch, cum: np.ndarray, position: int, limit: int
) -> Callable[[], dict[str, Any]]:
    """Decode thunk of the epoch's item at `position`, its modalities restricted to `limit`."""
    s, item = locate(cum, position)
    return lambda: _decode(reader, layout, reader.read_row(int(layout.rows[s])), s, item, limit)
