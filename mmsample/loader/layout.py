"""How an epoch's plan becomes batches on every rank and worker: pure functions of integers.

Place in the data flow: plan -> **layout** -> the loader's batches. Ranks take equal
contiguous slices of the epoch's item sequence (`mmsample.shards.streamed.consumer_range`, the
readers' own split: padded by wrapping around, whole batches with DUS), so every rank yields the
same number of batches whatever a method drops or repeats. In indexed mode a rank's batches go to
DataLoader workers round-robin, so the loader's output keeps the sequence; streamed mode gives
each worker a contiguous run (the reader's split), so reads stay sequential.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..plan import ArrayPlan
from ..shards.decode import mix_seed

_TAG_SHUFFLE, _TAG_ROWS = 0x10AD, 0x2035


def batch_count(items: int, batch: int) -> int:
    """Batches of at most `batch` rows holding `items` items."""
    return -(-items // batch)


def worker_batches(batches: int, worker: int, workers: int) -> np.ndarray:
    """The batch indices (of a rank's `batches`) that DataLoader worker `worker` yields:
    round-robin, so the DataLoader's in-order output keeps the batch order."""
    return np.arange(worker, batches, workers)


def item_sequence(
    plan: ArrayPlan, ids: np.ndarray, seed: int, epoch: int, shuffle: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """The epoch's item sequence for random access: (sample ids, item index within the id), both
    int64 `[items]`. A plan with `order()` fixes it (the k-th occurrence of an id is its item
    k); otherwise every item of the plan in id order, permuted by a generator seeded by
    (seed, epoch) when `shuffle`."""
    order = plan.order()
    if order is not None:
        seq = np.asarray(order, dtype=np.int64)
    else:
        seq = np.repeat(ids, plan.counts(ids))
        if shuffle and len(seq) > 1:
            rng = np.random.default_rng(mix_seed(seed, epoch, _TAG_SHUFFLE))
            seq = seq[rng.permutation(len(seq))]
    return seq, occurrence_index(seq)


def occurrence_index(seq: np.ndarray) -> np.ndarray:
    """For each position, how many earlier positions hold the same id (0 for the first)."""
    if len(seq) == 0:
        return np.zeros(0, dtype=np.int64)
    by_id = np.argsort(seq, kind="stable")
    sorted_ids = seq[by_id]
    starts = np.flatnonzero(np.r_[True, sorted_ids[1:] != sorted_ids[:-1]])
    run = np.repeat(starts, np.diff(np.r_[starts, len(seq)]))
    out = np.empty(len(seq), dtype=np.int64)
    out[by_id] = np.arange(len(seq)) - run
    return out


def item_masks(plan: ArrayPlan, seq: np.ndarray, k: np.ndarray) -> np.ndarray:
    """int64 mask of each (id, item index) of a sequence."""
    return plan.masks[plan.first_items(seq) + k] if len(seq) else np.zeros(0, np.int64)


def dus_row_masks(sizes: Sequence[int], rows: int, seed: int, *key: int) -> np.ndarray:
    """int64 `[rows]` masks of one DUS batch: modality j is carried by exactly `sizes[j]` rows,
    at positions drawn by a generator seeded by (seed, *key); a modality with `rows` rows (the
    largest) is carried by every row, so no row is empty."""
    rng = np.random.default_rng(mix_seed(seed, *key, _TAG_ROWS))
    out = np.zeros(rows, dtype=np.int64)
    for j, n in enumerate(sizes):
        if n >= rows:
            out |= 1 << j
        else:
            out[rng.choice(rows, size=n, replace=False)] |= 1 << j
    return out
