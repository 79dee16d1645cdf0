"""StreamedDataset: shards read sequentially, split over ranks and workers, shuffled, resumable.

Reader stage of the data flow for iterable loading: the epoch's plan is applied as each sample
passes (multiplicity and modality mask per id), raw samples are read in file order through the
offset index, decoded by the shared `Decoder` only for the modalities an item needs, and yielded
through a seeded shuffle buffer.

Order is computed, not stored: for an epoch it is a pure function of (seed, epoch, plan, shard
sizes, rank, world size, worker, workers), so a state is two ints and resume skips forward without
reading or decoding the items already yielded.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from torch.utils.data import IterableDataset, get_worker_info

from ..errors import SampleError
from ..plan import Plan
from ..schedule import (
    buffer_order,
    consumer_range,
    mix_seed,
    replacement_positions,
    resolve_world,
    skip_start,
)
from ..state import check_compatible
from .decode import (
    MAIN_PROCESS_DECODE_THREADS,
    PlanSource,
    check_decode_threads,
    item_counts,
    resolve_plan,
)
from .source import ShardSource
from .tario import RawSample

if TYPE_CHECKING:
    from ..spec import Spec

STATE_VERSION = 1
_COMPAT = (
    *("rank", "world_size", "worker", "num_workers", "seed"),
    *("shuffle", "shuffle_shards", "equal_split", "modalities", "num_samples", "split"),
)


class StreamedDataset(ShardSource, IterableDataset[dict[str, Any]]):
    """Iterable reader over a sharded dataset: sequential reads, plan-driven items, seeded.

    Guarantee per epoch: the epoch's item sequence (shards in a seeded order, each sample's plan
    items in turn) is cut into contiguous slices, one per (rank, worker); every item is yielded
    exactly once over all consumers, plus with `equal_split=True` up to world_size - 1 padding
    items (the epoch's first items repeated) so that every rank yields exactly `len(self)`.
    Call `set_epoch` before each epoch's `iter(loader)`; it reaches persistent workers too.
    With `ids=` (an id set, e.g. a labeled set) only those samples are read, without
    rewriting shards; ValueError naming the missing ids when some are in no shard.
    With `split="train"` only the samples of that split are read.
    With `on_error="skip"` a bad item at position p of the epoch's item sequence is replaced by
    the first item that decodes among `mmsample.skips.replacement_positions(p, total, ...)`
    (seeded by seed, epoch and p: the same replacement for any rank or worker count, so a
    worker whose whole slice is bad still yields its count); each skip is warned about (naming
    the bad and the replacing item) and counted in `skipped`, over this process and its
    DataLoader workers. The replacement is a second copy of another item of the epoch.
    `decode_threads` (default 1; None: torch's own count): torch intra-op threads while an item
    decodes in the main process (num_workers=0); the caller's count is restored after each item.
    """

    def __init__(
        self,
        root: str | Path,
        modalities: Mapping[str, Spec],
        *,
        plan: PlanSource = None,
        shuffle: int = 0,
        shuffle_shards: bool = True,
        seed: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
        on_error: str = "raise",
        equal_split: bool = True,
        decode_threads: int | None = MAIN_PROCESS_DECODE_THREADS,
        split: str | None = None,
        ids: Iterable[int] | np.ndarray | None = None,
    ) -> None:
        if not isinstance(shuffle, int) or shuffle < 0:
            raise ValueError(
                "The 'shuffle' parameter of StreamedDataset must be an int >= 0 (buffer size, "
                f"0 = no shuffle); got {shuffle!r}."
            )
        threads = check_decode_threads(decode_threads, "StreamedDataset")
        self._open(root, modalities, plan, seed, on_error, split, ids)
        self.decoder.threads = threads
        self.shuffle = shuffle
        self.shuffle_shards = bool(shuffle_shards)
        self.equal_split = bool(equal_split)
        self.rank, self.world_size = resolve_world(rank, world_size, "StreamedDataset")
        self.plan = resolve_plan(self.plan_source, 0, len(self.decoder.names))
        self._layout_cache: tuple[Any, ...] | None = None
        self._yielded = 0
        self._resume: int | None = None
        self._consumer = (0, 1)
        self.granule = 1  # consumers' slices are whole multiples of this (a loader's batch)

    # ----- epoch layout (metadata only, no I/O) -----
    def set_epoch(self, epoch: int) -> None:
        """Select the epoch: shard order, plan (when `plan` is a callable) and random draws.
        Reaches persistent DataLoader workers too (through a shared-memory cell)."""
        self._publish_epoch(epoch)
        self._select(epoch)

    def use_plan(self, epoch: int, plan: Plan) -> None:
        """Serve `plan` as epoch `epoch` (for a loader that computed the epoch's plan itself and
        iterates with `stream`)."""
        if self.epoch != epoch or self.plan is not plan:
            self._start(epoch, plan)

    def _select(self, epoch: int) -> None:
        self._start(epoch, resolve_plan(self.plan_source, epoch, len(self.decoder.names)))

    def _start(self, epoch: int, plan: Plan) -> None:
        """Serve `plan` as epoch `epoch` from its first item."""
        self.plan, self.epoch = plan, epoch
        self._yielded = 0
        self._resume = None
        self._layout_cache = None

    def _layout(self) -> tuple[np.ndarray, np.ndarray, int]:
        """(rows in epoch order, cumulative item counts, total items) for the current epoch."""
        key = (self.epoch, id(self.plan))
        if self._layout_cache is not None and self._layout_cache[0] == key:
            return self._layout_cache[1]
        table = self.table
        shards = np.arange(len(table.names))
        if self.shuffle_shards:
            rng = np.random.default_rng(mix_seed(self.seed, self.epoch, 0x5EED))
            shards = rng.permutation(shards)
        rows = np.concatenate(
            [np.arange(table.first_row[s], table.first_row[s + 1]) for s in shards]
            or [np.zeros(0, dtype=np.int64)]
        ).astype(np.int64)
        cum = np.cumsum(item_counts(self.plan, table.ids[rows]))
        layout = (rows, cum, int(cum[-1]) if len(cum) else 0)
        self._layout_cache = (key, layout)
        return layout

    def __len__(self) -> int:
        """Items this rank yields this epoch, over all its DataLoader workers."""
        total = self._layout()[2]
        lo, hi = consumer_range(
            total, self.rank, self.world_size, 0, 1, self.equal_split, self.granule
        )
        return hi - lo

    # ----- iteration -----
    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        self._consumer = (info.id, info.num_workers) if info is not None else (0, 1)
        published = self._published_epoch()
        if published != self.epoch:  # a persistent worker: the main process moved on
            self._select(published)
        start = self._resume or 0
        self._resume = None
        self._yielded = start
        return self.stream(start)

    def consumer_items(self) -> int:
        """Items the current consumer (rank, DataLoader worker) yields this epoch."""
        lo, hi = self._consumer_range(self._layout()[2])
        return hi - lo

    def _consumer_range(self, total: int) -> tuple[int, int]:
        """[lo, hi) of the epoch's `total` items that the current consumer yields."""
        worker, workers = self._consumer
        return consumer_range(
            total, self.rank, self.world_size, worker, workers, self.equal_split, self.granule
        )

    def stream(
        self, start: int = 0, position_mask: Callable[[int], int] | None = None
    ) -> Iterator[dict[str, Any]]:
        """The current consumer's decoded items from its `start`-th on (what iteration yields).
        `position_mask(step)`, if given, further restricts the modalities of the consumer's
        item at position `step` (a loader assigning modalities by batch position, as DUS does)."""
        rows, cum, total = self._layout()
        worker, workers = self._consumer
        lo, hi = self._consumer_range(total)
        if start > hi - lo:
            raise ValueError(
                f"StreamedDataset: the state says {start} items were yielded but this consumer "
                f"has {hi - lo} items in epoch {self.epoch}: the plan or dataset changed"
            )
        if total == 0 or start == hi - lo:
            return
        pos = np.arange(lo, hi, dtype=np.int64) % total
        samples = np.searchsorted(cum, pos, side="right")
        items = pos - np.concatenate([[0], cum[:-1]])[samples]
        rng = np.random.default_rng(
            mix_seed(self.seed, self.epoch, self.rank, worker, self.world_size, workers)
        )
        order = buffer_order(len(pos), self.shuffle, rng)
        need = Counter(samples[order[start:]].tolist())
        loaded: dict[int, RawSample | SampleError] = {}
        walk = 0
        for step in range(start, len(order)):
            u = int(order[step])
            k = int(samples[u])
            while k not in loaded:
                s = int(samples[walk])
                walk += 1
                if need[s] > 0 and s not in loaded:
                    loaded[s] = self._read(int(rows[s]))
            raw = loaded[k]
            need[k] -= 1
            if need[k] == 0:
                del loaded[k]
            restrict = -1 if position_mask is None else int(position_mask(step))
            try:
                out = self._decode(raw, int(items[u]), restrict)
            except SampleError as err:
                if self.on_error == "raise":
                    raise
                # Deterministic replacement from the whole epoch, the same for any worker count.
                p = int(pos[u])
                later = replacement_positions(p, total, skip_start(self.seed, self.epoch, p))
                out = self._replace(
                    err,
                    ((f"epoch item {q}", self._attempt_at(q, rows, cum, restrict)) for q in later),
                )
            self._yielded = step + 1
            yield out

    def _read(self, row: int) -> RawSample | SampleError:
        try:
            return self.table.read(row)
        except SampleError as err:
            return err

    def _decode(
        self, raw: RawSample | SampleError, item: int, restrict: int = -1
    ) -> dict[str, Any]:
        if isinstance(raw, SampleError):
            raise raw
        planned = self.plan.items(raw["id"])[item]
        fallback = planned if restrict != -1 else None  # a restricted row is never empty
        return self.decoder(raw, planned & restrict, epoch=self.epoch, item=item, fallback=fallback)

    def _attempt_at(
        self, position: int, rows: np.ndarray, cum: np.ndarray, restrict: int = -1
    ) -> Callable[[], dict[str, Any]]:
        """Decode thunk of the epoch's item at `position` (of the layout `rows`, `cum`), its
        modalities further restricted to `restrict`."""
        s = int(np.searchsorted(cum, position, side="right"))
        item = position - (int(cum[s - 1]) if s else 0)
        return lambda: self._decode(self._read(int(rows[s])), item, restrict)

    # ----- state -----
    def _compat(self) -> dict[str, Any]:
        worker, workers = self._consumer
        info = get_worker_info()
        if info is not None:
            worker, workers = info.id, info.num_workers
        return {
            "rank": self.rank,
            "world_size": self.world_size,
            "worker": worker,
            "num_workers": workers,
            "seed": self.seed,
            "shuffle": self.shuffle,
            "shuffle_shards": self.shuffle_shards,
            "equal_split": self.equal_split,
            "modalities": list(self.decoder.names),
            "num_samples": len(self.table),
            "split": self.table.split,
        }

    def state_dict(self) -> dict[str, Any]:
        """This consumer's position: (epoch, items yielded), plus what it is compatible with."""
        return {
            "class": type(self).__name__,
            "version": STATE_VERSION,
            "epoch": self.epoch,
            "yielded": self._yielded,
            **self._compat(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Resume: the next iteration continues the saved epoch after the saved item count."""
        if state.get("class") != type(self).__name__ or state.get("version") != STATE_VERSION:
            raise ValueError(
                f"StreamedDataset.load_state_dict: not a StreamedDataset state (class "
                f"{state.get('class')!r}, version {state.get('version')!r})"
            )
        mine = self._compat()
        check_compatible(
            "StreamedDataset.load_state_dict",
            state,
            mine,
            "reader",
            "resume with the same settings",
            keys=_COMPAT,
        )
        yielded = state.get("yielded")
        if not isinstance(yielded, int) or yielded < 0:
            raise ValueError(f"StreamedDataset.load_state_dict: bad 'yielded' {yielded!r}")
        epoch = state.get("epoch")
        if not isinstance(epoch, int) or epoch < 0:
            raise ValueError(f"StreamedDataset.load_state_dict: bad 'epoch' {epoch!r}")
        if epoch != self.epoch:
            self.set_epoch(epoch)
        self._resume = yielded
        self._yielded = yielded
