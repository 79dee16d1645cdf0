"""`BalancedLoader`: the torchdata `StatefulDataLoader` that `balanced_loader` and `wrap`
return (yielding `MultimodalBatch`, or under `wrap` the dataset's own batch structure); the only
holder of the epoch and of the position in it.

Place in the data flow: shards (or a user's dataset) -> reader -> **loader** (plan applied,
batches formed) -> the training step -> ledger -> method -> plan. One call per epoch,
`loader.set_epoch(e)`, reaches the ledger (`sync`, `set_epoch`), the method, the reader and the
workers (persistent ones too).

Guarantees: the plan is global and identical on every rank; every rank yields the same number
of batches whatever the method drops or repeats (its slice is padded by wrapping around to the
epoch's first items); `state_dict()` nests the method's and the ledger's states, and a loader
restored from it in a fresh process continues the same batches (same ids, masks and order).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping
from typing import Any

from torchdata.stateful_dataloader import StatefulDataLoader

from ..errors import EpochWarning
from ..stateful import Stateful
from .control import EpochControl
from .dataset import BalancedDataset
from .no_batch import warn_no_batch


def formed(batch: Any) -> Any:
    """The DataLoader's collate_fn: a batch the dataset formed, unchanged."""
    return batch


class BalancedLoader(Stateful, StatefulDataLoader):
    """A StatefulDataLoader over a `BalancedDataset` (build it with `balanced_loader` or
    `wrap`): the only holder of the epoch and of the position in it.

    An epoch whose plan holds items but gives this rank no batch (`drop_last=True` with fewer
    items than a batch per rank or, streamed, per DataLoader worker) warns once
    (`mmsample.loader.NoBatchWarning`, naming the counts).

    Epochs: `set_epoch(e)` starts epoch e (on every rank, before iterating); without it, the
    first pass serves epoch 0 and every later pass the next epoch: after a completed pass
    silently, after an incomplete one (a `break`) with an `EpochWarning` (every rank follows the
    same rule, so ranks advance together). `set_epoch` of an epoch already served (or an
    earlier one) serves it again, with an `EpochWarning`. `state_dict()` = (epoch, batches yielded in it, whether its pass began) + the
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
            # batches come formed; torch's default_convert would turn a tuple batch into a list
            super().__init__(dataset, batch_size=None, collate_fn=formed, **kwargs)
        self.control = control
        self._epoch = -1  # the epoch published to the workers (-1: none yet)
        self._yielded = 0  # batches of it yielded to the caller
        self._began = False  # a pass over it began (iteration, or a restored state)
        self._resuming = False  # the next pass continues a restored position
        self._checked = -1  # the last epoch checked for planned items but no batch

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
        if epoch < self._epoch or (epoch == self._epoch and self._began):
            warnings.warn(
                f"set_epoch({epoch}): epoch {self._epoch} was already served, so epoch {epoch} "
                "is served again (same plan, same order). Epochs advance by themselves with "
                f"each new pass; to go on, call set_epoch({self._epoch + 1}) or drop the call.",
                EpochWarning,
                stacklevel=2,
            )
        self._start(epoch, 0)
        self._began, self._resuming = False, False

    def _start(self, epoch: int, start: int) -> None:
        grown = self.dataset.publish(epoch, start)
        self._epoch, self._yielded = epoch, start
        if epoch != self._checked:  # once per epoch: a repeated set_epoch says nothing new
            self._checked = epoch
            warn_no_batch(self.dataset, self.num_workers, epoch)
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
        elif self._began and not self._resuming:  # an abandoned pass (a break)
            warnings.warn(
                f"A new pass over the loader began after the pass over epoch {self._epoch} "
                f"stopped at batch {self._yielded} of {len(self)}: it serves epoch "
                f"{self._epoch + 1}. To serve an epoch again on purpose, call set_epoch.",
                EpochWarning,
                stacklevel=2,
            )
            self.set_epoch(self._epoch + 1)
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
        parts = [(p, state[k]) for k, p in (("ledger", self.ledger), ("method", self.method))]
        parts = [(p, s) for p, s in parts if p is not None]
        for part, saved in parts:
            part.check_state(saved)  # every part fits before any changes
        # all or nothing: a refusal past this point puts back what the loader had
        before = [(part, part.state_dict()) for part, _ in parts]
        position = (self._epoch, self._yielded, self._began, self._resuming)
        try:
            for part, saved in parts:
                part.load_state_dict(saved)
            self._start(epoch, 0)
            if batches > len(self):
                raise ValueError(
                    f"BalancedLoader.load_state_dict: the state says {batches} batches of epoch "
                    f"{epoch} were yielded but this loader has {len(self)} in it: the plan or "
                    "dataset changed"
                )
        except Exception:
            for part, saved in before:
                part.load_state_dict(saved)
            if position[0] >= 0:  # republish what the workers had been told
                self._start(position[0], position[1] if position[3] else 0)
            self._epoch, self._yielded, self._began, self._resuming = position
            raise
        self._yielded = batches
        self.dataset.resume_at(batches)
        self._began, self._resuming = bool(state["began"]), True
