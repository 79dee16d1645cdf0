"""In which order an epoch's items come: shard order, shuffle buffer, an indexed sequence.

Place in the data flow: plan -> **order** -> split -> read. Each order is a pure function of
(seed, epoch, sizes) so a position in it is a few integers and resume skips forward without
reading anything.
"""

from __future__ import annotations

import numpy as np

from .seeds import TAG_SHARDS, TAG_SHUFFLE, mix_seed


def shard_order(num_shards: int, seed: int, epoch: int, shuffle: bool) -> np.ndarray:
    """int64 shard indices in the epoch's reading order (a seeded permutation when `shuffle`)."""
    shards = np.arange(num_shards, dtype=np.int64)
    if shuffle:
        shards = np.random.default_rng(mix_seed(seed, epoch, TAG_SHARDS)).permutation(shards)
    return shards


def rows_in_order(first_row: np.ndarray, shards: np.ndarray) -> np.ndarray:
    """int64 table rows of the shards `shards` in that order (`first_row[s]`..`first_row[s+1]`
    are shard s's rows, in file order)."""
    parts = [np.arange(first_row[s], first_row[s + 1], dtype=np.int64) for s in shards]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def buffer_order(n: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """Emission order of a shuffle buffer of `size` slots over items 0..n-1 (size <= 1: in
    order). The item emitted at step e has index < e + size, so a reader holds at most `size`
    items read ahead."""
    if size <= 1 or n <= 1:
        return np.arange(n, dtype=np.int64)
    size = min(size, n)
    out = np.empty(n, dtype=np.int64)
    buf = list(range(size))
    picks = rng.integers(0, size, n - size).tolist()
    for t in range(size, n):
        j = picks[t - size]
        out[t - size] = buf[j]
        buf[j] = t
    out[n - size :] = np.asarray(buf, dtype=np.int64)[rng.permutation(size)]
    return out


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


def permuted(seq: np.ndarray, seed: int, epoch: int) -> np.ndarray:
    """`seq` permuted by a generator seeded by (seed, epoch) (the indexed epoch's shuffle)."""
    if len(seq) <= 1:
        return seq
    return seq[np.random.default_rng(mix_seed(seed, epoch, TAG_SHUFFLE)).permutation(len(seq))]
