"""Who gets which part of an epoch: ranks, DataLoader workers, batches.

Place in the data flow: plan -> item sequence -> **split** -> each consumer's positions -> read.
An epoch is a sequence of `total` items. Ranks take contiguous slices; with `equal_split` every
rank's slice has the same length (rounded up to whole batches where a loader needs them), the
missing items taken by wrapping around to the epoch's first items, as DistributedSampler pads.
Pure functions of integers.
"""

from __future__ import annotations

import numpy as np


def batch_count(items: int, batch: int, drop_last: bool = False) -> int:
    """Batches of at most `batch` rows holding `items` items (`drop_last`: full ones only)."""
    return items // batch if drop_last else -(-items // batch)


def rank_range(
    total: int,
    rank: int,
    world: int,
    equal_split: bool = True,
    granule: int = 1,
    drop_last: bool = False,
) -> tuple[int, int]:
    """[start, stop) of rank `rank`'s slice of an epoch of `total` items (positions are taken
    mod `total`, so a stop past it wraps around to the epoch's first items).

    `equal_split`: every rank gets ceil(total / world) positions rounded up to a multiple of
    `granule` (`drop_last`: rounded down, the last part granule dropped rather than filled by
    wrapping around); else slices differ by at most one item and `granule` is ignored."""
    if equal_split:
        each = -(-total // world)
        each = (each // granule if drop_last else -(-each // granule)) * granule
        return rank * each, (rank + 1) * each
    return rank * total // world, (rank + 1) * total // world


def consumer_range(
    total: int,
    rank: int,
    world: int,
    worker: int,
    workers: int,
    equal_split: bool,
    granule: int = 1,
    drop_last: bool = False,
) -> tuple[int, int]:
    """[start, stop) of one (rank, worker) in the epoch's item sequence (positions mod total):
    the rank's slice (`rank_range`) cut into `workers` runs of equal size +-1 granule."""
    lo, hi = rank_range(total, rank, world, equal_split, granule, drop_last)
    if not equal_split:
        granule = 1
    k = (hi - lo) // granule
    return lo + worker * k // workers * granule, lo + (worker + 1) * k // workers * granule


def worker_batches(batches: int, worker: int, workers: int) -> np.ndarray:
    """The batch indices (of a rank's `batches`) that DataLoader worker `worker` yields:
    round-robin, so the DataLoader's in-order output keeps the batch order."""
    return np.arange(worker, batches, workers)


def interleave(per_worker: list[int]) -> list[tuple[int, int]]:
    """The order in which an in-order DataLoader yields its workers' batches: round r gives each
    worker's r-th batch, workers in turn, skipping a worker once it has none left. Returns
    (worker, batch index within the worker) for every batch."""
    out: list[tuple[int, int]] = []
    for r in range(max(per_worker, default=0)):
        out.extend((w, r) for w, n in enumerate(per_worker) if r < n)
    return out


def next_worker(yielded: int, per_worker: list[int]) -> int:
    """The worker whose batch an in-order DataLoader yields after `yielded` batches
    (`interleave` order; 0 once every batch was yielded). A resumed pass lets DataLoader worker
    i play worker `(i + next_worker(...)) % workers`, since a DataLoader always asks worker 0
    first: the cycle then continues where the interrupted one stopped."""
    order = interleave(per_worker)
    return order[yielded][0] if yielded < len(order) else 0


def worker_starts(yielded: int, per_worker: list[int]) -> list[int]:
    """How many batches each worker had yielded when the DataLoader had yielded `yielded` in all
    (`interleave` order). ValueError when `yielded` exceeds the batches there are."""
    if yielded > sum(per_worker):
        raise ValueError(f"{yielded} batches yielded but the epoch has only {sum(per_worker)}")
    starts = [0] * len(per_worker)
    for w, _ in interleave(per_worker)[:yielded]:
        starts[w] += 1
    return starts


def rank_batches(
    total: int,
    rank: int,
    world: int,
    rows: int,
    granule: int = 1,
    drop_last: bool = False,
    groups: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(positions, bounds): rank `rank`'s positions in an epoch of `total` items, its batch b
    `positions[bounds[b]:bounds[b + 1]]`. Each of `groups` (lengths of consecutive runs; None:
    one) is split as `rank_range` splits an epoch, wrapping around within the group, and cut in
    batches of `rows` (`drop_last`: whole ones): no batch mixes groups; ranks get equal batches."""
    pos, bounds, start = [np.zeros(0, np.int64)], [0], 0
    for n in [total] if groups is None else np.asarray(groups).tolist():
        lo, hi = rank_range(n, rank, world, True, granule, drop_last)
        count = batch_count(hi - lo, rows, drop_last) if n else 0
        used = min(hi - lo, count * rows)
        pos.append(start + np.arange(lo, lo + used, dtype=np.int64) % max(n, 1))
        bounds.extend(bounds[-1] + np.minimum(np.arange(1, count + 1) * rows, used))
        start += n
    return np.concatenate(pos), np.asarray(bounds, dtype=np.int64)
