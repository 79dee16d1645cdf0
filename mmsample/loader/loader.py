"""`balanced_loader` and `BalancedLoader`: a method's plans read from shards, as a torchdata
`StatefulDataLoader` yielding `MultimodalBatch`.

Place in the data flow: shards -> reader -> **loader** (plan applied, batches formed) -> the
training step -> ledger -> method -> plan. One call per epoch, `loader.set_epoch(e)`, reaches
the ledger (`sync`, `set_epoch`), the method, the reader and the workers (persistent ones too).

Guarantees: the plan is global and identical on every rank; every rank yields the same number
of batches whatever the method drops or repeats (its slice is padded by wrapping around to the
epoch's first items); `state_dict()` nests the method's and the ledger's states, and a loader
restored from it in a fresh process continues the same batches (same ids, masks and order).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from torchdata.stateful_dataloader import StatefulDataLoader

from ..batch import Collate
from ..schedule import resolve_world
from ..shards.indexed import IndexedDataset
from ..shards.streamed import StreamedDataset
from ..stateful import Stateful
from .control import EpochControl, Scorer, check_plan_source
from .dataset import MODES, BalancedDataset
from .log import StatsLog

_FORMED_HERE = frozenset(
    {"batch_size", "shuffle", "sampler", "batch_sampler", "collate_fn", "drop_last"}
)


class BalancedLoader(Stateful, StatefulDataLoader):
    """A StatefulDataLoader over a `BalancedDataset` (build it with `balanced_loader` or
    `wrap`): the only holder of the epoch and of the position in it.

    Epochs: `set_epoch(e)` starts epoch e (on every rank, before iterating); without it, the
    first pass serves epoch 0 and a pass that starts after a completed one serves the next
    epoch. A pass that starts after an incomplete one (a `break`) serves its epoch again from
    the start. `state_dict()` = (epoch, batches yielded in it, whether its pass began) + the
    method's and the ledger's states; a loader restored from it continues the same batches,
    and one restored from a state taken after an epoch's last batch serves the next epoch.
    """

    STATE_FORMAT = "mmsample.BalancedLoader"
    STATE_VERSION = 3
    SAVED_FIELDS = ("epoch", "batches", "began", "method", "ledger")
    STATE_FIX = (
        "resume with the same settings (num_workers too: each worker's slice depends on it)."
    )

    dataset: BalancedDataset

    def __init__(self, dataset: BalancedDataset, control: EpochControl, **kwargs: Any) -> None:
        with warnings.catch_warnings():  # torchdata's own deprecation notice, not the user's
            warnings.filterwarnings("ignore", message=".*set_vital.*", category=UserWarning)
            super().__init__(dataset, batch_size=None, **kwargs)
        self.control = control
        self._epoch = -1  # the epoch published to the workers (-1: none yet)
        self._yielded = 0  # batches of it yielded to the caller
        self._began = False  # a pass over it began (iteration, or a restored state)
        self._resuming = False  # the next pass continues a restored position

    @property
    def method(self) -> Any:
        """The balancing method (None: plain reading)."""
        return self.control.method

    @property
    def ledger(self) -> Any:
        """The method's Ledger (None without a method)."""
        return self.control.ledger

    @property
    def epoch(self) -> int:
        """The epoch being (or last) served; -1 before the first."""
        return self._epoch

    def set_epoch(self, epoch: int) -> None:
        """Start epoch `epoch`: sync the ledger, let the method take its snapshot and plan,
        publish the plan to the workers (restarting persistent ones if the plan outgrew the
        shared buffers) and log the method's stats. Call it on every rank before iterating."""
        if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 0:
            raise ValueError(f"set_epoch: epoch must be an int >= 0; got {epoch!r}")
        self._start(epoch, 0)
        self._began, self._resuming = False, False

    def _start(self, epoch: int, start: int) -> None:
        grown = self.dataset.publish(epoch, start)
        self._epoch, self._yielded = epoch, start
        running: Any = getattr(self, "_iterator", None)
        if grown and running is not None and self.persistent_workers:
            shutdown = getattr(running, "_shutdown_workers", None)
            if callable(shutdown):
                shutdown()
            self._iterator = None

    def _complete(self) -> bool:
        """A pass over the published epoch began and yielded every batch."""
        return self._began and self._yielded >= len(self)

    def __iter__(self) -> Any:
        if self._epoch < 0:
            self.set_epoch(0)
        elif self._complete():
            self.set_epoch(self._epoch + 1)
        elif self._began and not self._resuming:
            self._yielded = 0  # an abandoned pass: its epoch again from the start
            self.dataset.resume_at(0)
        self._began, self._resuming = True, False
        return self._counted(super().__iter__())

    def _counted(self, batches: Any) -> Iterator[Any]:
        for batch in batches:
            self._yielded += 1
            yield batch

    def __len__(self) -> int:
        """Batches this rank yields in the published epoch (epoch 0 before the first)."""
        if self._epoch < 0:
            self.set_epoch(0)
        return self.dataset.batches(self.num_workers)

    def compatibility(self) -> dict[str, Any]:
        """What a state must match: workers, mode, rank, world size, seed, batch size,
        drop_last, modalities and the number of ids read."""
        ds = self.dataset
        return {
            "num_workers": self.num_workers,
            "mode": ds.mode,
            "rank": ds.rank,
            "world_size": ds.world_size,
            "seed": ds.seed,
            "batch_size": ds.batch_size,
            "drop_last": ds.drop_last,
            "modalities": list(ds.names),
            "ids": len(ds.ids),
        }

    def state_dict(self) -> dict[str, Any]:
        """(epoch, batches yielded in it, whether its pass began), what the loader is
        compatible with, and the method's and the ledger's states."""
        if self._epoch < 0:
            self.set_epoch(0)
        return super().state_dict()

    def _save_fields(self) -> dict[str, Any]:
        method, ledger = self.method, self.ledger
        return {
            "epoch": self._epoch,
            "batches": self._yielded,
            "began": self._began,
            "method": None if method is None else method.state_dict(),
            "ledger": None if ledger is None else ledger.state_dict(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the ledger, the method and the position; the next pass continues the saved
        epoch (or, for a state taken after its last batch, serves the next one). Refuses a
        state of another configuration (ValueError naming each field); never modifies `state`."""
        super().load_state_dict(state)

    def _load_fields(self, state: Mapping[str, Any]) -> None:
        for key, part in (("method", self.method), ("ledger", self.ledger)):
            if (state[key] is None) != (part is None):
                raise ValueError(
                    f"BalancedLoader.load_state_dict: the state has {'no ' * (part is not None)}"
                    f"{key} state but this loader has {'no ' * (part is None)}{key}."
                )
        epoch, batches = state["epoch"], state["batches"]
        if not isinstance(epoch, int) or epoch < 0 or not isinstance(batches, int) or batches < 0:
            raise ValueError(
                f"BalancedLoader.load_state_dict: bad epoch/batches {epoch!r}/{batches!r}"
            )
        if self.ledger is not None:
            self.ledger.load_state_dict(state["ledger"])
        if self.method is not None:
            self.method.load_state_dict(state["method"])
        self._start(epoch, 0)
        if batches > len(self):
            raise ValueError(
                f"BalancedLoader.load_state_dict: the state says {batches} batches of epoch "
                f"{epoch} were yielded but this loader has {len(self)} in it: the plan or "
                "dataset changed"
            )
        self._yielded = batches
        self.dataset.resume_at(batches)
        self._began, self._resuming = bool(state["began"]), True


class IndexedFetch:
    """`fetch(id, mask, item, epoch)` through an `IndexedDataset` (picklable for workers)."""

    def __init__(self, reader: IndexedDataset) -> None:
        self.reader = reader

    def __call__(
        self, sample_id: int, mask: int, item: int, epoch: int, fallback: int | None = None
    ) -> dict[str, Any]:
        return self.reader.get(sample_id, mask, item, fallback, epoch)


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
        drop_last: drop each rank's (streamed: each worker's) last short batch.
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
    taken = sorted(set(dataloader_kwargs) & _FORMED_HERE)
    if taken:
        raise ValueError(
            f"balanced_loader forms batches itself: {taken} cannot be given (use its "
            "batch_size, shuffle and drop_last parameters; batches are MultimodalBatch)."
        )
    if isinstance(source, StreamedDataset | IndexedDataset):
        reader: Any = source
        kind = "streamed" if isinstance(source, StreamedDataset) else "indexed"
        if mode is not None and mode != kind:
            raise ValueError(
                f"The 'mode' parameter of balanced_loader is {mode!r} but the source is a "
                f"{type(source).__name__} ({kind}); pass a shard path to choose the mode."
            )
        mode = kind
        seed = reader.seed
        if ids is not None:
            raise ValueError(
                "The 'ids' parameter of balanced_loader applies to a shard path; the source is a "
                f"{type(source).__name__}: build it with ids=... instead."
            )
    else:
        if not isinstance(source, str | os.PathLike):
            raise ValueError(
                "The 'source' parameter of balanced_loader must be a shard folder or a "
                f"StreamedDataset / IndexedDataset; got {type(source).__name__}."
            )
        if modalities is None:
            raise ValueError(
                "The 'modalities' parameter of balanced_loader is required when the source is a "
                "shard path: an ordered {name: Spec} mapping, e.g. {'audio': Audio(), "
                "'video': Video()}."
            )
        mode = "streamed" if mode is None else mode
        if mode not in MODES:
            raise ValueError(
                f"The 'mode' parameter of balanced_loader must be one of {list(MODES)}; "
                f"got {mode!r}."
            )
        if mode == "streamed":
            if not isinstance(shuffle_buffer, int) or shuffle_buffer < 0:
                raise ValueError(
                    "The 'shuffle_buffer' parameter of balanced_loader must be an int >= 0; "
                    f"got {shuffle_buffer!r}."
                )
            reader = StreamedDataset(
                Path(source),
                modalities,
                shuffle=shuffle_buffer if shuffle else 0,
                shuffle_shards=shuffle,
                seed=seed,
                rank=rank_,
                world_size=world,
                on_error=on_error,
                split=split,
                ids=ids,
            )
        else:
            reader = IndexedDataset(
                Path(source), modalities, seed=seed, on_error=on_error, split=split, ids=ids
            )
    if mode == "streamed" and (reader.rank, reader.world_size) != (rank_, world):
        raise ValueError(
            f"balanced_loader: the StreamedDataset was built for rank {reader.rank} of "
            f"{reader.world_size}, the loader runs as rank {rank_} of {world}."
        )
    names = tuple(reader.decoder.names)
    manifest = reader.table.manifest
    id_space = max(int(manifest.id_space), int(reader.table.ids.max(initial=-1)) + 1)
    reader_ids = np.unique(np.asarray(reader.table.ids, dtype=np.int64))
    control = attach(
        method,
        ids=reader_ids,
        id_space=id_space,
        names=names,
        batch_size=_batch_size(batch_size, method, "balanced_loader"),
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
        fetch=IndexedFetch(reader) if mode == "indexed" else None,
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


def _batch_size(batch_size: int | None, method: Any, owner: str) -> int:
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
