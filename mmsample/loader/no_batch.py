"""The warning for an epoch whose plan holds items but gives this rank no batch.

Place in the data flow: method -> plan -> the loader publishes epoch e (`BalancedLoader`) ->
**here**, once per epoch: when this rank's share of the plan holds items but makes no batch
(with `drop_last=True`, fewer items than a batch on the rank or, streamed, on each DataLoader
worker), one `NoBatchWarning` naming the counts, rather than an epoch that ends at once without
a word. Every method, none, and both reading modes pass through it.
"""

from __future__ import annotations

import warnings

from ..errors import MmsampleWarning
from ..schedule import consumer_range
from .dataset import BalancedDataset


class NoBatchWarning(MmsampleWarning):
    """An epoch's plan holds items but this rank yields no batch of it (see `no_batch`)."""


def no_batch(dataset: BalancedDataset, workers: int, epoch: int) -> str | None:
    """The warning text for the epoch `dataset` has published, or None when this rank yields a
    batch of it (or the plan holds no item: the method says why, as BSS does)."""
    planned = dataset.planned_items()
    if planned == 0 or dataset.batches(workers) > 0:
        return None
    rank, world = dataset.rank, dataset.world_size
    share = -(-planned // world)  # every rank's equal share, padding included
    counts = f"{share} on rank {rank} of {world}" if world > 1 else f"{share} on this rank"
    if dataset.mode == "streamed" and workers > 1:  # each worker batches its own run of items
        runs = [consumer_range(planned, rank, world, w, workers, True) for w in range(workers)]
        counts += f", read as {[hi - lo for lo, hi in runs]} by its {workers} DataLoader workers"
    fix = "drop_last=False, " if dataset.drop_last else ""
    return (
        f"BalancedLoader: epoch {epoch} yields no batch on rank {rank}: the plan holds "
        f"{planned} item(s) ({counts}) and a batch is {dataset.shared.rows()} rows with "
        f"drop_last={dataset.drop_last}, which keeps only full batches. Use {fix}a smaller "
        "batch_size, or fewer ranks or DataLoader workers."
    )


def warn_no_batch(dataset: BalancedDataset, workers: int, epoch: int) -> None:
    """Warn (`NoBatchWarning`) when the published epoch gives this rank no batch."""
    text = no_batch(dataset, workers, epoch)
    if text is not None:
        warnings.warn(text, NoBatchWarning, stacklevel=4)
