"""BalancedDataset: the published epoch as batches, on every rank and DataLoader worker.

Place in the data flow: method -> plan (published once per epoch in the main process through
`SharedPlan`) -> **BalancedDataset** (in each worker: schedule -> read -> decode -> replace ->
batch -> collate) -> `MultimodalBatch`. The loader's DataLoader runs with `batch_size=None`:
this dataset forms batches itself, because DUS changes the rows per batch between epochs and
assigns each row's modalities by its position in the batch.

Two fetch modes, one meaning:
- "indexed": random access in the epoch's exact sequence (the plan's `order()` if it has one,
  else the plan's items permuted by (seed, epoch)); each rank takes a contiguous slice (of each
  plan group) and its batches go to workers round-robin, so the loader yields that sequence.
- "streamed": shards read sequentially (`mmsample.shards.stages`: shard order and a shuffle
  buffer seeded by (seed, epoch)); the plan's multiset of (id, mask) items is kept exactly, its
  order and groups are not (the reader's order replaces them).

This object stores no position: the epoch, the plan and the number of batches the loader had
already yielded in the epoch (a resumed state) are read from the shared header each pass, and
each worker derives from them where it starts (`mmsample.schedule.worker_starts`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
from torch.utils.data import IterableDataset

from ..batch import MultimodalBatch
from ..errors import SampleError
from ..plan import ArrayPlan
from ..schedule import (
    batch_count,
    consumer_range,
    dus_row_masks,
    item_masks,
    item_sequence,
    next_worker,
    rank_batches,
    replacement_positions,
    skip_start,
    worker_batches,
    worker_starts,
)
from ..shards.stages import StreamedEpoch, streamed_epoch, streamed_samples
from ..shards.streamed import worker_of
from .shared import SharedPlan

MODES = ("streamed", "indexed")
# (id, mask, item, epoch, fallback mask) -> sample
Fetch = Callable[[int, int, int, int, "int | None"], dict[str, Any]]
Replace = Callable[[SampleError, Any], dict[str, Any]]


def batched(
    samples: Iterator[dict[str, Any]], rows: int, drop_last: bool
) -> Iterator[list[dict[str, Any]]]:
    """Consecutive lists of `rows` samples; the last shorter one too unless `drop_last`."""
    buffer: list[dict[str, Any]] = []
    for sample in samples:
        buffer.append(sample)
        if len(buffer) == rows:
            yield buffer
            buffer = []
    if buffer and not drop_last:
        yield buffer


class BalancedDataset(IterableDataset[MultimodalBatch]):
    """Batches of the published plan for this rank and worker (see the module docstring).

    `reader` is a `StreamedDataset` (mode "streamed") or anything with `fetch` (mode "indexed":
    `fetch(id, mask, item, epoch, fallback)` -> decoded sample dict); `collate` turns a list of
    samples into a `MultimodalBatch`; `epoch_hook(epoch)` runs in the main process at `publish`
    and returns (plan, rows per batch, DUS sizes or None); `replace(err, candidates)` replaces a
    bad item (None: raise).
    """

    def __init__(
        self,
        *,
        mode: str,
        reader: Any,
        fetch: Fetch | None,
        ids: np.ndarray,
        names: Sequence[str],
        collate: Callable[[list[dict[str, Any]]], MultimodalBatch],
        epoch_hook: Callable[[int], tuple[ArrayPlan, int, list[int] | None]],
        num_ids: int,
        seed: int,
        rank: int,
        world_size: int,
        shuffle: bool,
        batch_size: int,
        drop_last: bool = False,
        replace: Replace | None = None,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"The 'mode' parameter must be one of {list(MODES)}; got {mode!r}.")
        self.mode, self.reader, self.fetch = mode, reader, fetch
        self.ids = np.asarray(ids, dtype=np.int64)
        self.names = tuple(names)
        self.collate, self.epoch_hook, self.replace = collate, epoch_hook, replace
        self.seed, self.rank, self.world_size, self.shuffle = seed, rank, world_size, shuffle
        self.batch_size, self.drop_last = batch_size, bool(drop_last)
        self.shared = SharedPlan(num_ids, len(self.names))
        # (epoch, plan) -> the epoch's layout, computed once per process
        self._layout: tuple[tuple[int, int], Any] | None = None

    # ---- main process ---------------------------------------------------------------------
    def publish(self, epoch: int, start: int = 0) -> bool:
        """Plan epoch `epoch` (the epoch hook) and publish it to every worker, the workers to
        start after the loader's first `start` batches of it. Returns True when the shared
        buffers were reallocated (persistent workers must restart)."""
        plan, rows, sizes = self.epoch_hook(epoch)
        return self.shared.publish(epoch, plan, rows, sizes, start)

    def resume_at(self, start: int) -> None:
        """Let the next pass start after the loader's first `start` batches of the epoch."""
        self.shared.set_start(start)

    def batches_per_worker(self, workers: int) -> list[int]:
        """Batches each of `workers` DataLoader workers yields in the published epoch."""
        workers = max(1, workers)
        epoch, plan, rows = self.shared.epoch, self.shared.plan(), self.shared.rows()
        if self.mode == "indexed":
            count = len(self._sequence(epoch, plan)[4]) - 1
            return [len(worker_batches(count, w, workers)) for w in range(workers)]
        return [batch_count(n, rows, self.drop_last) for n in self.items_per_worker(workers)]

    def batches(self, workers: int = 1) -> int:
        """Batches this rank yields in the published epoch, over `workers` DataLoader workers."""
        return sum(self.batches_per_worker(workers))

    def planned_items(self) -> int:
        """Items of the published epoch's plan (every rank's, padding left out)."""
        epoch, plan = self.shared.epoch, self.shared.plan()
        if self.mode == "indexed":
            return len(self._sequence(epoch, plan)[0])
        return self._streamed(epoch, plan).total

    def items_per_worker(self, workers: int) -> list[int]:
        """Items (padding included) this rank's share of the published epoch gives each of
        `workers` DataLoader workers: streamed mode reads a run of items per worker; indexed
        mode deals the rank's batches round-robin (then the rank's items, in one entry)."""
        total, workers = self.planned_items(), max(1, workers)
        if self.mode == "indexed":
            return [len(self._sequence(self.shared.epoch, self.shared.plan())[3])]
        ranges = [
            consumer_range(
                total, self.rank, self.world_size, w, workers, True, self._granule(), self.drop_last
            )
            for w in range(workers)
        ]
        return [hi - lo for lo, hi in ranges]

    # ---- iteration (main process with 0 workers, else each worker) -------------------------
    def __iter__(self) -> Iterator[MultimodalBatch]:
        epoch = self.shared.epoch
        if epoch < 0:
            raise RuntimeError(
                "BalancedDataset: no epoch was published; iterate the BalancedLoader (or call "
                "its set_epoch) rather than this dataset"
            )
        worker, workers = worker_of()
        per_worker, yielded = self.batches_per_worker(workers), self.shared.start()
        # the DataLoader asks its worker 0 first: on a resumed pass it plays the worker whose
        # batch comes next, so the cycle over workers continues where it stopped
        worker = (worker + next_worker(yielded, per_worker)) % workers
        start = worker_starts(yielded, per_worker)[worker]
        if self.mode == "streamed":
            samples = self._streamed_batches(epoch, worker, workers, start)
        else:
            samples = self._indexed_batches(epoch, worker, workers, start)
        for batch in samples:
            yield self.collate(batch)

    def _granule(self) -> int:
        """Slices are whole batches under DUS (each row's modalities follow its position)."""
        return self.shared.rows() if self.shared.sizes() is not None else 1

    def _streamed(self, epoch: int, plan: ArrayPlan) -> StreamedEpoch:
        key = (epoch, id(plan))
        if self._layout is None or self._layout[0] != key:
            self._layout = (key, streamed_epoch(self.reader, epoch, plan))
        layout: StreamedEpoch = self._layout[1]
        return layout

    def _sequence(self, epoch: int, plan: ArrayPlan) -> tuple[np.ndarray, ...]:
        """(ids, item indices, masks) of the epoch's full item sequence, then this rank's
        positions in it and its batch bounds (`rank_batches`; indexed mode)."""
        key = (epoch, id(plan))
        if self._layout is None or self._layout[0] != key:
            seq, k = item_sequence(plan, self.ids, self.seed, epoch, self.shuffle)
            rows, world, last = self.shared.rows(), self.world_size, self.drop_last
            mine = rank_batches(
                len(seq), self.rank, world, rows, self._granule(), last, plan.groups()
            )
            self._layout = (key, (seq, k, item_masks(plan, seq, k), *mine))
        sequence: tuple[np.ndarray, ...] = self._layout[1]
        return sequence

    def _streamed_batches(
        self, epoch: int, worker: int, workers: int, start: int
    ) -> Iterator[list[dict[str, Any]]]:
        layout = self._streamed(epoch, self.shared.plan())
        rows, sizes = self.shared.rows(), self.shared.sizes()
        consumer = self.reader.consumer(worker, workers)
        restrict = None
        if sizes is not None:
            cache: dict[int, np.ndarray] = {}
            key = (epoch, self.rank, worker, workers)

            def restrict(step: int) -> int:
                b = step // rows
                if b not in cache:
                    cache.clear()
                    cache[b] = dus_row_masks(sizes, rows, self.seed, *key, b)
                return int(cache[b][step % rows])

        lo, hi = consumer_range(
            layout.total,
            self.rank,
            self.world_size,
            worker,
            workers,
            True,
            self._granule(),
            self.drop_last,
        )
        # only a consumer's last batch can be short: past it, everything was yielded
        first = min(start * rows, hi - lo)
        samples = streamed_samples(
            self.reader,
            layout,
            consumer,
            start=first,
            granule=self._granule(),
            restrict=restrict,
            equal_split=True,
            drop_last=self.drop_last,
        )
        yield from batched(samples, rows, self.drop_last)

    def _indexed_batches(
        self, epoch: int, worker: int, workers: int, start: int
    ) -> Iterator[list[dict[str, Any]]]:
        seq, k, masks, mine, bounds = self._sequence(epoch, self.shared.plan())
        rows, sizes, total = self.shared.rows(), self.shared.sizes(), len(seq)
        batches = worker_batches(len(bounds) - 1, worker, workers)[start:].tolist()
        prefetch = getattr(self.fetch, "prefetch", None)  # remote shards read ahead

        def positions(b: int) -> np.ndarray:
            return mine[bounds[b] : bounds[b + 1]]

        for j, b in enumerate(batches):
            pos = positions(b)
            if prefetch is not None:  # this batch (the first) and the next two, concurrently
                for c in batches[j : j + 3] if j == 0 else batches[j + 2 : j + 3]:
                    prefetch(seq[positions(c)])
            if sizes is not None:
                restrict = dus_row_masks(sizes, rows, self.seed, epoch, self.rank, b)[: len(pos)]
            else:
                restrict = np.full(len(pos), -1, dtype=np.int64)
            yield [
                self._get(epoch, seq, k, masks, int(p), int(r), total)
                for p, r in zip(pos.tolist(), restrict.tolist())
            ]

    def _get(
        self,
        epoch: int,
        seq: np.ndarray,
        k: np.ndarray,
        masks: np.ndarray,
        p: int,
        restrict: int,
        total: int,
    ) -> dict[str, Any]:
        """Item p of the epoch's sequence, its modalities restricted by the row's position
        (DUS; -1: none); a restriction that leaves the sample nothing falls back to the plan's
        mask, so no row is empty. A bad item is replaced (`on_error="skip"`)."""
        assert self.fetch is not None
        fetch = self.fetch
        fallback = int(masks[p]) if restrict != -1 else None
        try:
            return fetch(int(seq[p]), int(masks[p]) & restrict, int(k[p]), epoch, fallback)
        except SampleError as err:
            if self.replace is None:
                raise
            # deterministic replacement: the first item that decodes from a start seeded by
            # (seed, epoch, position), each with its own planned mask (restricted by this row's
            # position, if any): the same for any worker count, spread over the epoch
            later = replacement_positions(p, total, skip_start(self.seed, epoch, p))
            candidates = (
                (
                    f"item {q}",
                    _thunk(
                        fetch,
                        int(seq[q]),
                        int(masks[q]) & restrict,
                        int(k[q]),
                        epoch,
                        int(masks[q]),
                    ),
                )
                for q in later
            )
            return self.replace(err, candidates)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["epoch_hook"] = None  # the method stays in the main process
        state["_layout"] = None
        return state


def _thunk(
    fetch: Fetch, i: int, mask: int, k: int, epoch: int, fallback: int
) -> Callable[[], dict[str, Any]]:
    return lambda: fetch(i, mask, k, epoch, fallback)
