"""What both readers stand on: the shard table, the decode stage, the plan, the epoch, skips.

`StreamedDataset` and `IndexedDataset` differ only in how they order and fetch items; opening a
dataset, validating the shared parameters, following the epoch across worker processes and the
skip-and-replace policy live here once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..epoch import SharedEpoch
from ..errors import SampleError
from ..skips import SkipCounter
from .decode import (
    Decoder,
    PlanSource,
    check_modalities,
    check_on_error,
    check_plan_source,
    report_skip,
)
from .tario import ShardTable

if TYPE_CHECKING:
    from ..spec import Spec


class ShardSource:
    """Base of the readers: sets `table`, `decoder`, `plan_source`, `seed`, `on_error`,
    `skipped` and the epoch (published to worker processes through shared memory)."""

    table: ShardTable
    decoder: Decoder
    epoch: int

    def _open(
        self,
        root: str | Path,
        modalities: Mapping[str, Spec],
        plan: PlanSource,
        seed: int,
        on_error: str,
        split: str | None = None,
        ids: Iterable[int] | np.ndarray | None = None,
    ) -> None:
        owner = type(self).__name__
        if not isinstance(seed, int) or seed < 0:
            raise ValueError(f"The 'seed' parameter of {owner} must be an int >= 0; got {seed!r}.")
        self.on_error = check_on_error(on_error, owner)
        self.table = ShardTable(root, split=split, owner=owner, ids=ids)
        specs = check_modalities(modalities, owner, self.table.manifest.fields)
        self.decoder = Decoder(specs, seed)
        self.plan_source = check_plan_source(plan, owner)
        self.seed = seed
        self._skips = SkipCounter()
        self.epoch = 0
        self._shared_epoch = SharedEpoch(0)

    @property
    def skipped(self) -> int:
        """Items replaced so far with `on_error="skip"`, by this process and its DataLoader
        workers together (counted in shared memory)."""
        return self._skips.total()

    def _publish_epoch(self, epoch: int) -> None:
        if not isinstance(epoch, int) or epoch < 0:
            raise ValueError(f"set_epoch: epoch must be an int >= 0; got {epoch!r}")
        self._shared_epoch.set(epoch)

    def _published_epoch(self) -> int:
        """The epoch the main process last set (differs from `epoch` in a persistent worker)."""
        return self._shared_epoch.get()

    def _replace(
        self, bad: SampleError, candidates: Iterable[tuple[str, Callable[[], dict[str, Any]]]]
    ) -> dict[str, Any]:
        """Count and report a skipped item; return the first candidate that decodes. Each
        candidate is (how the report names it, e.g. "item 3", a decode thunk); candidates come
        from `mmsample.skips.replacement_positions`, the same in every process."""
        for where, attempt in candidates:
            try:
                out = attempt()
            except SampleError:
                continue
            self._skips.add()
            found = f"{out['shard']}:{out['key']}"
            report_skip(type(self).__name__, bad, f"{where} ({found})" if where else found)
            return out
        raise SampleError(
            f"no item of this epoch decodes (on_error='skip' found no replacement); the first "
            f"failure: {bad.reason}",
            shard=bad.shard,
            key=bad.key,
        )
