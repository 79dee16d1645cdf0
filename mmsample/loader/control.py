"""EpochControl: what the loader does in the main process when an epoch starts.

Place in the data flow: the loader starts epoch e -> **EpochControl** -> ledger (`sync`,
`set_epoch`), optional scoring pass (the ids `method.scoring_ids(e)` asks for), the method
(`set_epoch`, `plan`, DUS `batch_sizes`) or a fixed plan, the JSONL log -> (plan, rows per
batch, DUS sizes), which the loader publishes to the workers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..plan import ArrayPlan, TablePlan
from .log import StatsLog

Scorer = Callable[[np.ndarray], None]
# A fixed plan, or a callable epoch -> plan; a TablePlan lists only the ids it changes.
PlanSource = ArrayPlan | TablePlan | Callable[[int], "ArrayPlan | TablePlan"] | None


def check_plan_source(plan: object, owner: str) -> PlanSource:
    """Accept an ArrayPlan, a TablePlan, a callable epoch -> one of them, or None; ValueError
    naming the parameter otherwise (a plain mapping gets the fix: wrap it in a TablePlan)."""
    if plan is None or isinstance(plan, ArrayPlan | TablePlan):
        return plan
    if isinstance(plan, dict):
        raise ValueError(
            f"The 'plan' parameter of {owner} must be a plan, not a {type(plan).__name__}: "
            "wrap a table id -> item masks as mmsample.plan.TablePlan(table, full=<mask of "
            "every modality>) (ids not in the table yield one full item)."
        )
    if callable(plan):
        return plan
    raise ValueError(
        f"The 'plan' parameter of {owner} must be a mmsample.plan.ArrayPlan or TablePlan, a "
        f"callable epoch -> plan, or None; got {plan!r}."
    )


class EpochControl:
    """Runs one epoch's start for a method, a fixed plan, or neither (every id once) over
    `ids`."""

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
        plan: PlanSource = None,
    ) -> None:
        self.method, self.ids, self.num_ids = method, ids, num_ids
        self.names = tuple(names)
        self.batch_size, self.scorer, self.log, self.rank = batch_size, scorer, log, rank
        self.plan = plan
        self.full = (1 << len(self.names)) - 1

    @property
    def ledger(self) -> Any:
        return None if self.method is None else self.method.ledger

    def fixed_plan(self, epoch: int) -> ArrayPlan:
        """The plan of epoch `epoch` without a method: the given plan (a TablePlan laid out over
        the ids), or every id once with every modality. ValueError naming the epoch for a
        callable that returns something else."""
        source = self.plan
        made = source(epoch) if callable(source) and not isinstance(source, TablePlan) else source
        if made is None:
            return ArrayPlan.every(self.ids, self.num_ids, self.full)
        if isinstance(made, TablePlan):
            return made.to_plan(self.ids, self.num_ids)
        if isinstance(made, ArrayPlan):
            return made
        raise ValueError(
            f"The 'plan' callable returned a {type(made).__name__} for epoch {epoch}, not a "
            "plan; return a mmsample.plan.ArrayPlan, or mmsample.plan.TablePlan(table, "
            "full=<mask of every modality>) for a table."
        )

    def __call__(self, epoch: int) -> tuple[ArrayPlan, int, list[int] | None]:
        method = self.method
        if method is None:
            plan = self.fixed_plan(epoch)
            self._log(epoch, lambda: {"method": "none", "items": float(len(plan.masks))})
            return plan, self.batch_size, None
        ledger = method.ledger
        ledger.sync()
        ledger.set_epoch(epoch)
        if self.scorer is not None and method.taken_epoch != epoch:
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
