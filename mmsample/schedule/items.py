"""Which item each position of an epoch holds: a plan's items laid out for the two modes.

Place in the data flow: plan + shard layout -> **items** -> each consumer's (sample, item, mask)
positions -> read. Indexed mode lays the plan out as one sequence (the plan's `order()`, else
its items permuted by (seed, epoch)); streamed mode lays it out in the epoch's shard order (each
sample's items in turn) and each consumer emits its slice through a seeded shuffle buffer.
Pure functions of arrays and integers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..plan import ArrayPlan
from .order import buffer_order, occurrence_index, permuted
from .seeds import TAG_ROWS, mix_seed
from .split import consumer_range
from .world import Consumer


def item_sequence(
    plan: ArrayPlan, ids: np.ndarray, seed: int, epoch: int, shuffle: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """The indexed epoch: (sample ids, item index within the id), both int64 `[items]`. A plan
    with `order()` fixes it (the k-th occurrence of an id is its item k); otherwise every item
    of the plan over `ids` in id order, permuted by (seed, epoch) when `shuffle`."""
    order = plan.order()
    if order is not None:
        seq = np.asarray(order, dtype=np.int64)
    else:
        seq = np.repeat(ids, plan.counts(ids))
        if shuffle:
            seq = permuted(seq, seed, epoch)
    return seq, occurrence_index(seq)


def item_masks(plan: ArrayPlan, seq: np.ndarray, k: np.ndarray) -> np.ndarray:
    """int64 mask of each (id, item index) of a sequence."""
    return plan.masks[plan.first_items(seq) + k] if len(seq) else np.zeros(0, np.int64)


@dataclass(frozen=True)
class StreamedSlice:
    """One consumer's items of a streamed epoch, in emission order.

    `samples[t]`: index (into the epoch's row order) of the sample emitted at step t;
    `items[t]`: which of its plan items; `positions[t]`: its position in the epoch's item
    sequence (what skip replacement is seeded by). `reads`: the sample indices in reading
    order (file order of the slice); a reader holding the samples read ahead but not yet
    emitted holds at most the shuffle buffer's size of them."""

    samples: np.ndarray
    items: np.ndarray
    positions: np.ndarray
    reads: np.ndarray
    total: int


def streamed_slice(
    counts: np.ndarray,
    consumer: Consumer,
    *,
    seed: int,
    epoch: int,
    shuffle: int,
    equal_split: bool = True,
    granule: int = 1,
    drop_last: bool = False,
) -> StreamedSlice:
    """The streamed epoch's items for `consumer`.

    `counts[s]`: items the plan gives the s-th sample in the epoch's row order. The epoch's item
    sequence lists each sample's items in turn; the consumer takes its `consumer_range` of it
    (padded by wrap-around under `equal_split`, whole `granule`s: `drop_last` rounds the
    rank's share down to them instead of up) and emits it through a
    shuffle buffer of `shuffle` slots seeded by (seed, epoch, rank, worker, world, workers)."""
    cum = np.cumsum(np.asarray(counts, dtype=np.int64))
    total = int(cum[-1]) if len(cum) else 0
    c = consumer
    lo, hi = consumer_range(
        total, c.rank, c.world, c.worker, c.workers, equal_split, granule, drop_last
    )
    if total == 0:
        empty = np.zeros(0, dtype=np.int64)
        return StreamedSlice(empty, empty, empty, empty, 0)
    pos = np.arange(lo, hi, dtype=np.int64) % total
    samples = np.searchsorted(cum, pos, side="right")
    items = pos - np.concatenate([[0], cum[:-1]])[samples]
    rng = np.random.default_rng(mix_seed(seed, epoch, c.rank, c.worker, c.world, c.workers))
    order = buffer_order(len(pos), shuffle, rng)
    return StreamedSlice(samples[order], items[order], pos[order], samples, total)


def locate(cum: np.ndarray, position: int) -> tuple[int, int]:
    """(sample index, item index) of `position` in an item sequence whose samples end at the
    cumulative counts `cum`."""
    s = int(np.searchsorted(cum, position, side="right"))
    return s, position - (int(cum[s - 1]) if s else 0)


def dus_row_masks(sizes: Sequence[int], rows: int, seed: int, *key: int) -> np.ndarray:
    """int64 `[rows]` masks of one DUS batch: modality j is carried by exactly `sizes[j]` rows
    (capped at `rows`), at positions drawn by a generator seeded by (seed, *key); a modality
    with `rows` rows (the largest) is carried by every row, so no row is empty."""
    rng = np.random.default_rng(mix_seed(seed, *key, TAG_ROWS))
    out = np.zeros(rows, dtype=np.int64)
    for j, n in enumerate(sizes):
        if n >= rows:
            out |= 1 << j
        else:
            out[rng.choice(rows, size=n, replace=False)] |= 1 << j
    return out
