"""`balanced_loader`: a method's plans read from sharded tar files, as a `BalancedLoader`.

Place in the data flow: shards -> reader (`StreamedDataset` or `IndexedDataset`) ->
**balanced_loader** (arguments checked, reader, method and epoch control wired into a
`BalancedDataset`) -> `BalancedLoader` -> the training step. `wrap` (wrap.py) is the same around
a user's own map-style DataLoader.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from ..batch import Collate
from ..schedule import resolve_world
from ..shards.indexed import IndexedDataset
from ..shards.streamed import StreamedDataset
from .arguments import (
    ReaderSettings,
    attach,
    check_dataloader_kwargs,
    loader_batch_size,
    open_reader,
)
from .control import Scorer
from .dataset import BalancedDataset
from .loader import BalancedLoader


class IndexedFetch:
    """`fetch(id, mask, item, epoch)` through an `IndexedDataset` (picklable for workers)."""

    def __init__(self, reader: IndexedDataset) -> None:
        self.reader = reader

    def __call__(
        self, sample_id: int, mask: int, item: int, epoch: int, fallback: int | None = None
    ) -> dict[str, Any]:
        return self.reader.get(sample_id, mask, item, fallback, epoch)

    def prefetch(self, ids: np.ndarray) -> None:
        """Start reading these samples ahead (a remote dataset; see IndexedDataset.prefetch)."""
        self.reader.prefetch(ids)


def balanced_loader(
    source: str | os.PathLike[str] | StreamedDataset | IndexedDataset,
    method: Any = None,
    *,
    modalities: Mapping[str, Any] | None = None,
    batch_size: int | None = None,
    mode: str | None = None,
    num_workers: int = 0,
    seed: int = 0,
    shuffle: bool = True,
    shuffle_buffer: int = 1000,
    pin_memory: bool = False,
    persistent_workers: bool = False,
    prefetch_factor: int | None = None,
    rank: int | None = None,
    world_size: int | None = None,
    on_error: str = "raise",
    split: str | None = None,
    drop_last: bool = False,
    log: str | os.PathLike[str] | None = None,
    scorer: Scorer | None = None,
    ids: Iterable[int] | np.ndarray | None = None,
    plan: Any = None,
    **dataloader_kwargs: Any,
) -> BalancedLoader:
    """A loader that applies `method`'s plans to a sharded dataset.

    Args:
        source: a shard folder (then `modalities` is required) or a `StreamedDataset` /
            `IndexedDataset` (its modalities, seed and error policy are used).
        method: a `DUS`, `BSS` or `SMV` built on a Ledger sized with `manifest.id_space`
            and named like the modalities, or None (plain reading, for comparison).
        modalities: ordered `{name: Spec}`; bit j of every mask is the j-th name.
        batch_size: rows per batch (default 64; DUS: the method's rows, which change by epoch).
        mode: "streamed" (sequential shard reads; the plan's items, not its order) or "indexed"
            (random access in the plan's exact order). Default: the reader's kind, or streamed.
        num_workers, pin_memory, persistent_workers, prefetch_factor: as in DataLoader.
        seed: the readers' and the loader's seed (orders, DUS row positions).
        shuffle: indexed mode without a plan order: permute the epoch's items (seeded).
        shuffle_buffer: streamed mode: the shuffle buffer size (0: shard order).
        rank, world_size: default torch.distributed, else RANK / WORLD_SIZE, else 0, 1.
        on_error: "raise" or "skip" (bad items replaced deterministically, counted).
        split: read only the samples of this split (the sharding table's split column).
        drop_last: drop each rank's (streamed: each worker's) last short batch; under DUS,
            whose batches are whole, each rank's share is rounded down to whole batches
            rather than filled by wrapping around. An epoch whose plan holds items but gives
            this rank no batch warns once (`mmsample.loader.NoBatchWarning`, with the counts).
        dataloader_kwargs: more DataLoader options (timeout, worker_init_fn, ...); the loader
            forms batches itself, so batch_size, shuffle, sampler, batch_sampler, collate_fn
            and drop_last there are refused.
        log: a JSONL path: rank 0 appends each epoch's `method.stats(e)`.
        scorer: `scorer(ids)` runs a scoring pass over those ids (e.g.
            `mmsample.scoring.Scorer(model, reader, ledger)`); the loader calls it at
            `set_epoch` for the ids `method.scoring_ids(epoch)` asks for.
        ids: read only these sample ids (e.g. an active-learning round's labeled set), for a
            shard path; a reader given as `source` takes `ids=` itself.
        plan: without a method, a fixed plan for every epoch (a `mmsample.plan.ArrayPlan` or
            `TablePlan`) or a callable epoch -> plan; default: every sample once with every
            modality.

    Returns a `BalancedLoader` (a torchdata `StatefulDataLoader`). Raises ValueError naming the
    argument for bad settings (no modalities for a path, an unknown mode, a ledger smaller than
    the id space or with other modalities, batch_size < 1).
    """
    rank_, world = resolve_world(rank, world_size, "balanced_loader")
    check_dataloader_kwargs(dataloader_kwargs, "balanced_loader")
    settings = ReaderSettings(
        modalities, seed, shuffle, shuffle_buffer, rank_, world, on_error, split, ids
    )
    reader, mode, seed = open_reader(source, mode, settings)
    names = tuple(reader.decoder.names)
    manifest = reader.table.manifest
    id_space = max(int(manifest.id_space), int(reader.table.ids.max(initial=-1)) + 1)
    reader_ids = np.unique(np.asarray(reader.table.ids, dtype=np.int64))
    control = attach(
        method,
        ids=reader_ids,
        id_space=id_space,
        names=names,
        batch_size=loader_batch_size(batch_size, method, "balanced_loader"),
        scorer=scorer,
        log=log,
        rank=rank_,
        owner="balanced_loader",
        classes=len(manifest.classes),
        plan=plan,
    )
    num_ids = control.num_ids
    dataset = BalancedDataset(
        mode=mode,
        reader=reader,
        fetch=IndexedFetch(reader) if isinstance(reader, IndexedDataset) else None,
        ids=reader_ids,
        names=names,
        collate=Collate(names),
        epoch_hook=control,
        num_ids=num_ids,
        seed=seed,
        rank=rank_,
        world_size=world,
        shuffle=shuffle,
        batch_size=control.batch_size,
        drop_last=drop_last,
        replace=reader.replace if reader.on_error == "skip" else None,
    )
    extra: dict[str, Any] = dict(dataloader_kwargs)
    if prefetch_factor is not None:
        extra["prefetch_factor"] = prefetch_factor
    return BalancedLoader(
        dataset,
        control,
        num_workers=num_workers,
        pin_memory=pin_memory,
        persistent_workers=persistent_workers,
        **extra,
    )
