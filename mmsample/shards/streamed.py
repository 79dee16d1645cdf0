"""StreamedDataset: shards read sequentially, split over ranks and workers, shuffled.

Reader for iterable loading. Iterated on its own (under a plain DataLoader) it serves the plain
plan (every sample once, every modality) in epoch 0's order, through the same stages the loader
runs (`mmsample.shards.stages`): the schedule splits the epoch over ranks and workers, samples
are read in file order through the offset index and decoded only for the modalities an item
needs, and leave through a seeded shuffle buffer. Epochs, plans and resume are the loader's:
`mmsample.loader.balanced_loader(reader, method_or_None)`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from torch.utils.data import IterableDataset, get_worker_info

from ..decoding.decoder import MAIN_PROCESS_DECODE_THREADS, check_decode_threads
from ..schedule import Consumer, consumer_range, resolve_world
from ..storage.cache import ShardCache
from ..storage.retry import RetryPolicy
from .source import ShardSource, remote_settings
from .stages import streamed_epoch, streamed_samples

if TYPE_CHECKING:
    from ..decoding import Spec


def worker_of() -> tuple[int, int]:
    """(worker id, number of workers) of the calling DataLoader worker; (0, 1) outside one."""
    info = get_worker_info()
    return (info.id, info.num_workers) if info is not None else (0, 1)


class StreamedDataset(ShardSource, IterableDataset[dict[str, Any]]):
    """Iterable reader over a sharded dataset: sequential reads, seeded shard and sample order.

    Guarantee when iterated on its own: the epoch's item sequence (shards in a seeded order,
    each sample once) is cut into contiguous slices, one per (rank, DataLoader worker); every
    sample is yielded exactly once over all consumers, plus with `equal_split=True` up to
    world_size - 1 padding items (the epoch's first items repeated) so that every rank yields
    exactly `len(self)`. Every pass serves epoch 0's order: for per-epoch orders, plans and
    exact resume, iterate `balanced_loader(reader, None)` (or with a method).
    With `ids=` (an id set, e.g. a labeled set) only those samples are read, without
    rewriting shards; ValueError naming the missing ids when some are in no shard.
    With `split="train"` only the samples of that split are read.
    With `on_error="skip"` a bad item at position p of the epoch's item sequence is replaced by
    the first item that decodes among `mmsample.schedule.replacement_positions(p, total, ...)`
    (seeded by seed, epoch and p: the same replacement for any rank or worker count); each skip
    is warned about (naming the bad and the replacing item) and counted in `skipped`, over this
    process and its DataLoader workers.
    `decode_threads` (default 1; None: torch's own count): torch intra-op threads while an item
    decodes in the main process (num_workers=0); the caller's count is restored after each item.
    `root` may be a URL (`s3://`, `gs://`, `https://`, `pipe:CMD`; see `mmsample.storage`):
    each shard is then read forward in large chunks (one request each, retried under `retry`,
    a `mmsample.storage.RetryPolicy`) with two chunks read ahead; `storage_options` go to the
    fsspec backend (for s3://, `"client": "obstore" | "fsspec"` chooses the client: see
    `mmsample.storage.open_store`); `cache` (a `mmsample.storage.ShardCache`) keeps whole shards on a local
    disk.
    """

    def __init__(
        self,
        root: str | Path,
        modalities: Mapping[str, Spec],
        *,
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
        storage_options: Mapping[str, Any] | None = None,
        retry: RetryPolicy | None = None,
        cache: ShardCache | None = None,
    ) -> None:
        if not isinstance(shuffle, int) or isinstance(shuffle, bool) or shuffle < 0:
            raise ValueError(
                "The 'shuffle' parameter of StreamedDataset must be an int >= 0 (buffer size, "
                f"0 = no shuffle); got {shuffle!r}."
            )
        threads = check_decode_threads(decode_threads, "StreamedDataset")
        remote = remote_settings(
            root, "StreamedDataset", "sequential", storage_options, retry, cache
        )
        self._open(root, modalities, seed, on_error, split, ids, remote)
        self.decoder.threads = threads
        self.shuffle = shuffle
        self.shuffle_shards = bool(shuffle_shards)
        self.equal_split = bool(equal_split)
        self.rank, self.world_size = resolve_world(rank, world_size, "StreamedDataset")

    def consumer(self, worker: int = 0, workers: int = 1) -> Consumer:
        """This reader's rank as DataLoader worker `worker` of `workers`."""
        return Consumer(self.rank, self.world_size, worker, workers)

    def __len__(self) -> int:
        """Items this rank yields when iterated on its own, over all its DataLoader workers."""
        lo, hi = consumer_range(len(self.table), self.rank, self.world_size, 0, 1, self.equal_split)
        return hi - lo

    def __iter__(self) -> Iterator[dict[str, Any]]:
        """The plain plan's epoch 0, this (rank, DataLoader worker)'s slice of it."""
        return streamed_samples(self, streamed_epoch(self, 0, None), self.consumer(*worker_of()))
