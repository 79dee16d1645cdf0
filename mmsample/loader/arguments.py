"""What `balanced_loader` and `wrap` are given, checked and resolved before a loader is built.

Place in the data flow: the user's arguments -> **arguments** (the reader opened from a shard
path or checked, the method checked against the dataset and given the reader's ids, the rows per
batch, the DataLoader options the loader forms itself refused) -> `EpochControl` and
`BalancedDataset` -> `BalancedLoader`. Every check raises ValueError naming the parameter, the
rule, the value and the fix, in the main process (never inside a worker).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..shards.indexed import IndexedDataset
from ..shards.streamed import StreamedDataset
from .control import EpochControl, Scorer, check_plan_source
from .log import StatsLog

# DataLoader options the loader sets itself (batches are MultimodalBatch of its own forming)
FORMED_HERE = frozenset(
    {"batch_size", "shuffle", "sampler", "batch_sampler", "collate_fn", "drop_last"}
)


# the readers' remote-reading parameters: given to the reader, not to the DataLoader
READER_ONLY = frozenset({"storage_options", "retry", "cache", "prefetch"})


def check_dataloader_kwargs(kwargs: Mapping[str, Any], owner: str) -> None:
    """Refuse the DataLoader options the loader forms itself, and the readers' own parameters
    (which the DataLoader would reject with a TypeError of its own)."""
    reader = sorted(set(kwargs) & READER_ONLY)
    if reader:
        raise ValueError(
            f"{owner}: {reader} are parameters of the shard readers, not of the DataLoader: "
            f"open the reader yourself and give it to {owner}, e.g. {owner}(StreamedDataset("
            "url, modalities, storage_options=..., cache=ShardCache(dir, max_bytes), retry="
            "RetryPolicy(...)), method)."
        )
    taken = sorted(set(kwargs) & FORMED_HERE)
    if taken:
        raise ValueError(
            f"{owner} forms batches itself: {taken} cannot be given (use its "
            "batch_size, shuffle and drop_last parameters; batches are MultimodalBatch)."
        )


@dataclass(frozen=True)
class ReaderSettings:
    """What `balanced_loader` passes to the reader it opens on a shard path."""

    modalities: Mapping[str, Any] | None
    seed: int
    shuffle: bool
    shuffle_buffer: int
    rank: int
    world_size: int
    on_error: str
    split: str | None
    ids: Iterable[int] | np.ndarray | None


def _streamed(path: str, s: ReaderSettings) -> StreamedDataset:
    assert s.modalities is not None  # open_reader checked it
    if not isinstance(s.shuffle_buffer, int) or s.shuffle_buffer < 0:
        raise ValueError(
            "The 'shuffle_buffer' parameter of balanced_loader must be an int >= 0; "
            f"got {s.shuffle_buffer!r}."
        )
    return StreamedDataset(
        path,
        s.modalities,
        shuffle=s.shuffle_buffer if s.shuffle else 0,
        shuffle_shards=s.shuffle,
        seed=s.seed,
        rank=s.rank,
        world_size=s.world_size,
        on_error=s.on_error,
        split=s.split,
        ids=s.ids,
    )


def _indexed(path: str, s: ReaderSettings) -> IndexedDataset:
    assert s.modalities is not None  # open_reader checked it
    return IndexedDataset(
        path, s.modalities, seed=s.seed, on_error=s.on_error, split=s.split, ids=s.ids
    )


# the reader `balanced_loader` opens on a shard path, by mode
READERS: dict[str, Callable[[str, ReaderSettings], StreamedDataset | IndexedDataset]] = {
    "streamed": _streamed,
    "indexed": _indexed,
}


def open_reader(
    source: str | os.PathLike[str] | StreamedDataset | IndexedDataset,
    mode: str | None,
    settings: ReaderSettings,
) -> tuple[StreamedDataset | IndexedDataset, str, int]:
    """(reader, mode, seed) of `balanced_loader`'s source: a reader given (its own mode and
    seed; `mode` must agree, `ids` must be None) or one opened on a shard folder (`mode`
    default "streamed"; `modalities` required). A streamed reader must be built for the
    loader's rank and world size. ValueError naming the parameter otherwise."""
    if isinstance(source, StreamedDataset | IndexedDataset):
        kind = "streamed" if isinstance(source, StreamedDataset) else "indexed"
        if mode is not None and mode != kind:
            raise ValueError(
                f"The 'mode' parameter of balanced_loader is {mode!r} but the source is a "
                f"{type(source).__name__} ({kind}); pass a shard path to choose the mode."
            )
        if settings.ids is not None:
            raise ValueError(
                "The 'ids' parameter of balanced_loader applies to a shard path; the source is a "
                f"{type(source).__name__}: build it with ids=... instead."
            )
        reader, mode = source, kind
    else:
        if not isinstance(source, str | os.PathLike):
            raise ValueError(
                "The 'source' parameter of balanced_loader must be a shard folder or a "
                f"StreamedDataset / IndexedDataset; got {type(source).__name__}."
            )
        if settings.modalities is None:
            raise ValueError(
                "The 'modalities' parameter of balanced_loader is required when the source is a "
                "shard path: an ordered {name: Spec} mapping, e.g. {'audio': Audio(), "
                "'video': Video()}."
            )
        mode = "streamed" if mode is None else mode
        if mode not in READERS:
            raise ValueError(
                f"The 'mode' parameter of balanced_loader must be one of {list(READERS)}; "
                f"got {mode!r}."
            )
        reader = READERS[mode](os.fspath(source), settings)  # a path or a URL
    if isinstance(reader, StreamedDataset) and (reader.rank, reader.world_size) != (
        settings.rank,
        settings.world_size,
    ):
        raise ValueError(
            f"balanced_loader: the StreamedDataset was built for rank {reader.rank} of "
            f"{reader.world_size}, the loader runs as rank {settings.rank} of "
            f"{settings.world_size}."
        )
    return reader, mode, int(reader.seed)


def check_method(
    method: Any, names: tuple[str, ...], id_space: int, owner: str, classes: int | None = None
) -> None:
    """The method's ledger must cover the id space and the classes and have the loader's
    modalities."""
    if method is None:
        return
    if not (callable(getattr(method, "plan", None)) and hasattr(method, "ledger")):
        raise ValueError(
            f"The 'method' parameter of {owner} must be a balancing method (DUS, BSS, SMV from "
            f"mmsample.methods) or None; got {type(method).__name__}."
        )
    ledger = method.ledger
    if ledger.num_samples < id_space:
        raise ValueError(
            f"The 'method' parameter of {owner}: its ledger holds {ledger.num_samples} ids but "
            f"the dataset's id space is {id_space}; size the Ledger with manifest.id_space."
        )
    if classes is not None and ledger.num_classes < classes:
        raise ValueError(
            f"The 'method' parameter of {owner}: its ledger has {ledger.num_classes} classes but "
            f"the dataset has {classes}; build the Ledger with num_classes=len(manifest.classes)."
        )
    default = tuple(f"m{j}" for j in range(ledger.num_modalities))
    if ledger.num_modalities != len(names) or (
        tuple(ledger.names) != default and tuple(ledger.names) != names
    ):
        raise ValueError(
            f"The 'method' parameter of {owner}: its ledger has modalities "
            f"{list(ledger.names)} but the loader reads {list(names)}; build the Ledger with "
            f"names={list(names)} (same order)."
        )


def attach(
    method: Any,
    *,
    ids: np.ndarray,
    id_space: int,
    names: tuple[str, ...],
    batch_size: int,
    scorer: Scorer | None,
    log: str | os.PathLike[str] | None,
    rank: int,
    owner: str,
    classes: int | None = None,
    plan: Any = None,
) -> EpochControl:
    """Check `method` (or the fixed `plan`) against the dataset, give the method the reader's
    ids and build the loader's epoch control (one place for `balanced_loader` and `wrap`)."""
    check_method(method, names, id_space, owner, classes)
    plan = check_plan_source(plan, owner)
    if plan is not None and method is not None:
        raise ValueError(
            f"{owner} takes a method or a fixed 'plan', not both: the method plans each epoch."
        )
    if method is not None:
        method.set_ids(ids)
    return EpochControl(
        method,
        ids=ids,
        num_ids=method.ledger.num_samples if method is not None else id_space,
        names=names,
        batch_size=batch_size,
        scorer=scorer,
        log=None if log is None else StatsLog(log),
        rank=rank,
        plan=plan,
    )


def loader_batch_size(batch_size: int | None, method: Any, owner: str) -> int:
    """The rows per batch: `batch_size` (default 64), or the method's own under DUS (a
    different `batch_size` given is refused); ValueError naming the parameter."""
    own = (
        getattr(method, "batch_size", None)
        if callable(getattr(method, "batch_sizes", None))
        else None
    )
    if own is not None and batch_size is not None and batch_size != own:
        raise ValueError(
            f"The 'batch_size' parameter of {owner} is {batch_size} but the method's batch_size "
            f"is {own}: a per-modality-batch method (DUS) sets the rows per batch; leave "
            "batch_size out."
        )
    if batch_size is None:
        batch_size = int(getattr(method, "batch_size", 64)) if method is not None else 64
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(
            f"The 'batch_size' parameter of {owner} must be an int >= 1; got {batch_size!r}."
        )
    return batch_size
