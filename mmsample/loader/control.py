"""EpochControl: what the loader does in the main process when an epoch starts.

Place in the data flow: `loader.set_epoch(e)` -> **EpochControl** -> ledger (`sync`,
`set_epoch`), optional scoring pass (the ids `method.scoring_ids(e)` asks for), the method
(`set_epoch`, `plan`, DUS `batch_sizes`), the JSONL log -> (plan, rows per batch, DUS sizes),
which the dataset publishes to the workers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..plan import ArrayPlan
from .log import StatsLog

Scorer = Callable[[np.ndarray], None]


class EpochControl:
    """Runs one epoch's start for a method (or None: every id once) over `ids`."""

    def __init__(
        self,
        method: Any,
        *,
        ids: np.ndarray,
        num_ids: int,
        names: Sequence[str],
        batch_size: int,
        scorer: Scorer | None,
        log: StatsLog | None,
        rank: int,
    ) -> None:
        self.method, self.ids, self.num_ids = method, ids, num_ids
        self.names = tuple(names)
        self.batch_size, self.scorer, self.log, self.rank = batch_size, scorer, log, rank
        self.full = (1 << len(self.names)) - 1

    @property
    def ledger(self) -> Any:
        return None if self.method is None else self.method.ledger

    def __call__(self, epoch: int) -> tuple[ArrayPlan, int, list[int] | None]:
        method = self.method
        if method is None:
            counts = np.zeros(self.num_ids, dtype=np.int64)
            counts[self.ids] = 1
            plan = ArrayPlan(counts, np.full(len(self.ids), self.full, dtype=np.int64))
            self._log(epoch, lambda: {"method": "none", "items": float(len(self.ids))})
            return plan, self.batch_size, None
        ledger = method.ledger
        ledger.sync()
        ledger.set_epoch(epoch)
        if self.scorer is not None and getattr(method, "_taken", None) != epoch:
            wanted = method.scoring_ids(epoch)
            if wanted is not None and len(wanted):
                self.scorer(np.asarray(wanted, dtype=np.int64))
                ledger.sync()
        method.set_epoch(epoch)
        plan = method.plan(epoch)
        sizes = None
        rows = self.batch_size
        if callable(getattr(method, "batch_sizes", None)):
            by_name = method.batch_sizes(epoch)
            sizes = [int(by_name[n]) for n in self.names]
            rows = max(sizes)
        self._log(epoch, lambda: {"method": type(method).__name__, **method.stats(epoch)})
        return plan, rows, sizes

    def _log(self, epoch: int, record: Callable[[], dict[str, Any]]) -> None:
        """Write the epoch's record (computed only when a log is written: rank 0 with a path)."""
        if self.log is not None and self.rank == 0:
            self.log.write(epoch, record())
