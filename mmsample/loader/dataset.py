"""BalancedDataset: one epoch's plan as batches, on every rank and DataLoader worker.

Place in the data flow: method -> plan (published once per epoch in the main process through
`SharedPlan`) -> **BalancedDataset** (in each worker: the rank's slice of the epoch, cut into
batches, fetched through a reader) -> `MultimodalBatch`. The loader's DataLoader runs with
`batch_size=None`: this dataset forms batches itself, because DUS changes the rows per batch
between epochs and assigns each row's modalities by its position in the batch.

Two fetch modes, one meaning:
- "indexed": random access in the epoch's exact sequence (the plan's `order()` if it has one,
  else the plan's items permuted by (seed, epoch)); each rank takes a contiguous slice and its
  batches go to workers round-robin, so the loader yields exactly that sequence.
- "streamed": shards read sequentially by `StreamedDataset` (shard order and a shuffle buffer
  seeded by (seed, epoch)); the plan's multiset of (id, mask) items is kept exactly, its order
  is not (the reader's order replaces it).

State per worker: (epoch, batches yielded); resume skips forward without reading the batches
already yielded. A state names what it is compatible with and refuses a mismatch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
from torch.utils.data import IterableDataset, get_worker_info

from ..batch import MultimodalBatch
from ..errors import SampleError
from ..plan import ArrayPlan
from ..schedule import (
    batch_count,
    consumer_range,
    dus_row_masks,
    item_masks,
    item_sequence,
    worker_batches,
)
from ..state import check_compatible
from .shared import SharedPlan

STATE_VERSION = 1
MODES = ("streamed", "indexed")
# (id, mask, item, epoch, fallback mask) -> sample
Fetch = Callable[[int, int, int, int, "int | None"], dict[str, Any]]


class BalancedDataset(IterableDataset[MultimodalBatch]):
    """Batches of the published plan for this rank and worker (see the module docstring).

    `reader` is a `StreamedDataset` (mode "streamed") or anything with `fetch` (mode "indexed":
    `fetch(id, mask, item, epoch)` -> decoded sample dict); `collate` turns a list of samples into
    a `MultimodalBatch`; `epoch_hook(epoch)` runs in the main process at `set_epoch` and returns
    (plan, rows per batch, DUS sizes or None).
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
        replace: Callable[[SampleError, Any], dict[str, Any]] | None = None,
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
        self.epoch = -1  # the epoch published by this process (main) or served (worker)
        self._yielded = 0
        self._resume: tuple[int, int] | None = None
        self._consumer = (0, 1)
        # (epoch, (ids, item indices, masks)) of the epoch's item sequence (indexed mode)
        self._sequence: tuple[int, tuple[np.ndarray, ...]] | None = None

    # ---- main process ---------------------------------------------------------------------
    def set_epoch(self, epoch: int) -> bool:
        """Publish epoch `epoch`'s plan to every worker (main process). Returns True when the
        shared buffers were reallocated (persistent workers must restart)."""
        if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 0:
            raise ValueError(f"set_epoch: epoch must be an int >= 0; got {epoch!r}")
        plan, rows, sizes = self.epoch_hook(epoch)
        grown = self.shared.publish(epoch, plan, rows, sizes)
        self.epoch = epoch
        self._yielded, self._resume, self._sequence = 0, None, None
        return grown

    # ---- iteration (main process with 0 workers, else each worker) -----------------------------
    def __iter__(self) -> Iterator[MultimodalBatch]:
        info = get_worker_info()
        self._consumer = (info.id, info.num_workers) if info is not None else (0, 1)
        epoch = self.shared.epoch
        if epoch < 0:
            if info is not None:
                raise RuntimeError("BalancedDataset: no plan was published; call set_epoch")
            self.set_epoch(0)
            epoch = 0
        start = 0
        if self._resume is not None:
            r_epoch, start = self._resume
            self._resume = None
            if r_epoch != epoch:
                raise ValueError(
                    f"BalancedDataset: the state resumes epoch {r_epoch} but the loader published "
                    f"epoch {epoch}; restore through BalancedLoader.load_state_dict"
                )
        self.epoch, self._yielded = epoch, start
        plan, rows, sizes = self.shared.plan(), self.shared.rows(), self.shared.sizes()
        if self.mode == "streamed":
            return self._streamed(epoch, plan, rows, sizes, start)
        return self._indexed(epoch, plan, rows, sizes, start)

    def _streamed(
        self, epoch: int, plan: ArrayPlan, rows: int, sizes: list[int] | None, start: int
    ) -> Iterator[MultimodalBatch]:
        reader = self._serve(epoch, plan, rows, sizes)
        worker, workers = self._consumer
        reader._consumer = (worker, workers)
        position_mask = None
        if sizes is not None:
            cache: dict[int, np.ndarray] = {}

            def position_mask(step: int) -> int:
                b = step // rows
                if b not in cache:
                    cache.clear()
                    cache[b] = dus_row_masks(
                        sizes, rows, self.seed, epoch, self.rank, worker, workers, b
                    )
                return int(cache[b][step % rows])

        buffer: list[dict[str, Any]] = []
        # only a consumer's last batch can be short: past it, everything was yielded
        first = min(start * rows, reader.consumer_items())
        for sample in reader.stream(first, position_mask):
            buffer.append(sample)
            if len(buffer) == rows:
                self._yielded += 1
                yield self.collate(buffer)
                buffer = []
        if buffer and not self.drop_last:
            self._yielded += 1
            yield self.collate(buffer)

    def epoch_sequence(self, epoch: int, plan: ArrayPlan) -> tuple[np.ndarray, ...]:
        """(ids, item indices, masks) of the epoch's full item sequence (indexed mode)."""
        if self._sequence is None or self._sequence[0] != epoch:
            seq, k = item_sequence(plan, self.ids, self.seed, epoch, self.shuffle)
            self._sequence = (epoch, (seq, k, item_masks(plan, seq, k)))
        return self._sequence[1]

    def _indexed(
        self, epoch: int, plan: ArrayPlan, rows: int, sizes: list[int] | None, start: int
    ) -> Iterator[MultimodalBatch]:
        assert self.fetch is not None
        seq, k, masks = self.epoch_sequence(epoch, plan)
        total = len(seq)
        granule = rows if sizes is not None else 1
        lo, hi = consumer_range(total, self.rank, self.world_size, 0, 1, True, granule)
        if total == 0:
            return
        worker, workers = self._consumer
        mine = worker_batches(self._count(hi - lo, rows), worker, workers)
        for b in mine[start:].tolist():
            pos = np.arange(lo + b * rows, min(lo + (b + 1) * rows, hi)) % total
            if sizes is not None:
                restrict = dus_row_masks(sizes, rows, self.seed, epoch, self.rank, b)[: len(pos)]
            else:
                restrict = np.full(len(pos), -1, dtype=np.int64)
            samples = [
                self._get(epoch, seq, k, masks, int(p), int(r), total)
                for p, r in zip(pos.tolist(), restrict.tolist())
            ]
            self._yielded += 1
            yield self.collate(samples)

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
            # deterministic replacement: the next items of the epoch's sequence that decode,
            # each with its own planned mask (restricted by this row's position, if any)
            later = ((p + d) % total for d in range(1, total))
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

    def batches(self, workers: int = 1) -> int:
        """Batches this rank yields in the published epoch, over `workers` DataLoader workers
        (main process)."""
        epoch, plan, rows = self.shared.epoch, self.shared.plan(), self.shared.rows()
        granule = rows if self.shared.sizes() is not None else 1
        if self.mode == "indexed":
            total = len(self.epoch_sequence(epoch, plan)[0])
            lo, hi = consumer_range(total, self.rank, self.world_size, 0, 1, True, granule)
            return self._count(hi - lo, rows) if total else 0
        total = self._serve(epoch, plan, rows, self.shared.sizes())._layout()[2]
        count = 0
        for w in range(max(1, workers)):
            lo, hi = consumer_range(
                total, self.rank, self.world_size, w, max(1, workers), True, granule
            )
            count += self._count(hi - lo, rows)
        return count

    def _serve(self, epoch: int, plan: ArrayPlan, rows: int, sizes: list[int] | None) -> Any:
        """The streamed reader set to serve `plan` as `epoch`, its consumers' slices whole
        batches under DUS."""
        self.reader.granule = rows if sizes is not None else 1
        self.reader.use_plan(epoch, plan)
        return self.reader

    def _count(self, items: int, rows: int) -> int:
        """Batches of `rows` rows made of `items` items (the last one short unless drop_last)."""
        return items // rows if self.drop_last else batch_count(items, rows)

    # ---- state ---------------------------------------------------------------------------
    def _compat(self) -> dict[str, Any]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else self._consumer
        return {
            "mode": self.mode,
            "rank": self.rank,
            "world_size": self.world_size,
            "worker": worker,
            "num_workers": workers,
            "seed": self.seed,
            "batch_size": self.batch_size,
            "drop_last": self.drop_last,
            "modalities": list(self.names),
            "ids": len(self.ids),
        }

    def state_dict(self) -> dict[str, Any]:
        """This consumer's position: (epoch, batches yielded) and what it is compatible with."""
        return {
            "class": type(self).__name__,
            "version": STATE_VERSION,
            "epoch": self.epoch,
            "batches": self._yielded,
            **self._compat(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Resume: the next iteration continues the saved epoch after the saved batches."""
        if state.get("class") != type(self).__name__ or state.get("version") != STATE_VERSION:
            raise ValueError(
                f"BalancedDataset.load_state_dict: not a BalancedDataset state (class "
                f"{state.get('class')!r}, version {state.get('version')!r})"
            )
        mine = self._compat()
        check_compatible(
            "BalancedDataset.load_state_dict",
            state,
            mine,
            "loader",
            "resume with the same settings",
        )
        epoch, batches = state.get("epoch"), state.get("batches")
        if not isinstance(epoch, int) or not isinstance(batches, int) or batches < 0:
            raise ValueError(f"BalancedDataset.load_state_dict: bad epoch/batches {epoch!r}")
        self._resume = (epoch, batches)
        self.epoch, self._yielded = epoch, batches

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["epoch_hook"] = None  # the method stays in the main process
        state["_sequence"] = None
        return state


def _thunk(
    fetch: Fetch, i: int, mask: int, k: int, epoch: int, fallback: int
) -> Callable[[], dict[str, Any]]:
    return lambda: fetch(i, mask, k, epoch, fallback)
