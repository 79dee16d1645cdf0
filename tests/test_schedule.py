"""The schedule's pure functions, checked as properties over grids of their arguments.

Each expected value is computed here independently of the code under test: positions by
expanding counts into explicit lists, the padding from the documented wrap-around rule, the
DataLoader's batch order by simulating its worker cycle (and once against a real DataLoader).
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Iterator

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from mmsample.plan import ArrayPlan
from mmsample.schedule import (
    Consumer,
    batch_count,
    consumer_range,
    dus_row_masks,
    interleave,
    item_masks,
    item_sequence,
    next_worker,
    rank_range,
    rows_in_order,
    shard_order,
    streamed_slice,
    worker_batches,
    worker_starts,
)


def _expanded(counts: list[int]) -> list[tuple[int, int]]:
    """(sample, item) of every position of an epoch whose samples have `counts` items."""
    return [(s, k) for s, c in enumerate(counts) for k in range(c)]


def _padded_each(total: int, world: int, granule: int) -> int:
    each = -(-total // world)  # ceil
    return -(-each // granule) * granule


@settings(max_examples=150, deadline=None)
@given(
    counts=st.lists(st.integers(0, 3), min_size=0, max_size=30),
    world=st.integers(1, 4),
    workers=st.integers(1, 3),
    shuffle=st.integers(0, 6),
    granule=st.integers(1, 4),
    seed=st.integers(0, 2**31),
    epoch=st.integers(0, 5),
)
def test_streamed_slices_cover_every_item_once_plus_padding(
    counts: list[int], world: int, workers: int, shuffle: int, granule: int, seed: int, epoch: int
) -> None:
    positions = _expanded(counts)
    total = len(positions)
    got: Counter[tuple[int, int]] = Counter()
    per_rank_items = []
    for rank in range(world):
        sizes = []
        for worker in range(workers):
            c = Consumer(rank, world, worker, workers)
            sl = streamed_slice(
                np.array(counts, dtype=np.int64),
                c,
                seed=seed,
                epoch=epoch,
                shuffle=shuffle,
                granule=granule,
            )
            again = streamed_slice(
                np.array(counts, dtype=np.int64),
                c,
                seed=seed,
                epoch=epoch,
                shuffle=shuffle,
                granule=granule,
            )
            assert all(
                np.array_equal(a, b)
                for a, b in zip(
                    (sl.samples, sl.items, sl.positions, sl.reads),
                    (again.samples, again.items, again.positions, again.reads),
                )
            )  # same inputs, same output
            pairs = list(zip(sl.samples.tolist(), sl.items.tolist()))
            # each emitted (sample, item) is the one its epoch position holds
            assert pairs == [positions[p] for p in sl.positions.tolist()]
            # the reads are the slice in file order; emission never runs ahead of the buffer
            assert Counter(sl.reads.tolist()) == Counter(sl.samples.tolist())
            sizes.append(len(pairs))
            got.update(pairs)
        per_rank_items.append(sizes)
    if total == 0:
        assert not got
        return
    each = _padded_each(total, world, granule)
    padding = [positions[p % total] for p in range(total, world * each)]
    assert got == Counter(positions) + Counter(padding)
    # every rank the same items per worker, so the same batches whatever the batch size
    assert all(sizes == per_rank_items[0] for sizes in per_rank_items)
    assert all(sum(sizes) == each for sizes in per_rank_items)
    # workers' runs are whole granules (whole DUS batches)
    assert all(n % granule == 0 for n in per_rank_items[0])


@settings(max_examples=100, deadline=None)
@given(
    total=st.integers(0, 60),
    world=st.integers(1, 5),
    rows=st.integers(1, 7),
    drop_last=st.booleans(),
    workers=st.integers(1, 4),
)
def test_indexed_split_gives_every_rank_the_same_batches(
    total: int, world: int, rows: int, drop_last: bool, workers: int
) -> None:
    counts = []
    covered: Counter[int] = Counter()
    for rank in range(world):
        lo, hi = rank_range(total, rank, world, True, 1)
        n = batch_count(hi - lo, rows, drop_last)
        counts.append(n)
        mine = [list(worker_batches(n, w, workers)) for w in range(workers)]
        # the workers' round-robin batches are the rank's batches, each once
        assert sorted(itertools.chain.from_iterable(mine)) == list(range(n))
        if not drop_last:
            covered.update(p % total for p in range(lo, hi) if total)
    assert len(set(counts)) == 1
    if total and not drop_last:
        each = _padded_each(total, world, 1)
        expected = Counter(range(total)) + Counter(p % total for p in range(total, world * each))
        assert covered == expected


@pytest.mark.parametrize("equal", [True, False])
def test_consumer_ranges_tile_each_rank(equal: bool) -> None:
    for total, world, workers, granule in itertools.product(
        [0, 1, 7, 23, 64], [1, 2, 3], [1, 2, 3], [1, 4]
    ):
        for rank in range(world):
            lo, hi = rank_range(total, rank, world, equal, granule)
            parts = [
                consumer_range(total, rank, world, w, workers, equal, granule)
                for w in range(workers)
            ]
            assert parts[0][0] == lo and parts[-1][1] == hi
            assert all(a[1] == b[0] for a, b in itertools.pairwise(parts))


def _dataloader_order(per_worker: list[int], first: int) -> list[tuple[int, int]]:
    """Simulate an in-order DataLoader over an iterable dataset: it asks worker 0, 1, ... in
    a cycle, skipping a worker once it ran out. DataLoader worker i plays worker
    (i + first) % W, whose batches start where `worker_starts` says."""
    workers = len(per_worker)
    queues = [list(range(n)) for n in per_worker]
    out = []
    active = list(range(workers))
    while active:
        for i in list(active):
            role = (i + first) % workers
            if queues[role]:
                out.append((role, queues[role].pop(0)))
            else:
                active.remove(i)
    return out


@settings(max_examples=200, deadline=None)
@given(per_worker=st.lists(st.integers(0, 6), min_size=1, max_size=4), data=st.data())
def test_a_resumed_pass_continues_the_dataloader_cycle(
    per_worker: list[int], data: st.DataObject
) -> None:
    full = interleave(per_worker)
    assert full == _dataloader_order(per_worker, 0)
    yielded = data.draw(st.integers(0, len(full)))
    starts = worker_starts(yielded, per_worker)
    assert sum(starts) == yielded
    assert Counter(w for w, _ in full[:yielded]) == Counter(
        {w: n for w, n in enumerate(starts) if n}
    )
    remaining = [n - s for n, s in zip(per_worker, starts)]
    first = next_worker(yielded, per_worker)
    resumed = [(w, k + starts[w]) for w, k in _dataloader_order(remaining, first)]
    assert resumed == full[yielded:]
    with pytest.raises(ValueError, match="batches yielded"):
        worker_starts(len(full) + 1, per_worker)


class _Tagged(IterableDataset):
    def __init__(self, per_worker: list[int]) -> None:
        self.per_worker = per_worker

    def __iter__(self) -> Iterator[tuple[int, int]]:
        info = get_worker_info()
        w = 0 if info is None else info.id
        return iter([(w, k) for k in range(self.per_worker[w])])


@pytest.mark.filterwarnings("ignore:This DataLoader will create:UserWarning")
def test_interleave_is_a_real_dataloaders_order() -> None:
    per_worker = [3, 5, 1]
    loader = DataLoader(_Tagged(per_worker), batch_size=None, num_workers=3)
    assert [tuple(int(x) for x in b) for b in loader] == interleave(per_worker)


@settings(max_examples=150, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 9), min_size=2, max_size=4),
    seed=st.integers(0, 2**31),
    key=st.lists(st.integers(0, 100), min_size=1, max_size=4),
)
def test_dus_rows_carry_each_modality_exactly_its_size(
    sizes: list[int], seed: int, key: list[int]
) -> None:
    rows = max(sizes)  # the loader's rows per batch
    masks = dus_row_masks(sizes, rows, seed, *key)
    assert masks.shape == (rows,)
    for j, n in enumerate(sizes):
        assert int(((masks >> j) & 1).sum()) == n
    assert (masks != 0).all()  # the largest modality is on every row: no row is empty
    assert np.array_equal(masks, dus_row_masks(sizes, rows, seed, *key))


def test_dus_rows_move_with_the_key() -> None:
    sizes, rows = [2, 8], 8
    draws = {tuple(dus_row_masks(sizes, rows, 0, 0, 0, b).tolist()) for b in range(20)}
    assert len(draws) > 10  # C(8, 2) = 28 placements; 20 batches hit many


@settings(max_examples=100, deadline=None)
@given(
    counts=st.lists(st.integers(0, 3), min_size=1, max_size=25),
    seed=st.integers(0, 2**31),
    epoch=st.integers(0, 9),
    shuffle=st.booleans(),
)
def test_indexed_sequence_is_the_plans_items(
    counts: list[int], seed: int, epoch: int, shuffle: bool
) -> None:
    ids = np.arange(len(counts), dtype=np.int64)
    masks = np.arange(1, sum(counts) + 1, dtype=np.int64)  # every item a distinct mask
    plan = ArrayPlan(counts, masks)
    seq, k = item_sequence(plan, ids, seed, epoch, shuffle)
    expected = [(i, j) for i, c in enumerate(counts) for j in range(c)]
    got = list(zip(seq.tolist(), k.tolist()))
    assert sorted(got) == expected
    if not shuffle:
        assert got == expected
    # the k-th occurrence of an id is its item k: masks in each id's item order
    m = item_masks(plan, seq, k).tolist()
    first = np.concatenate([[0], np.cumsum(counts)])
    assert m == [int(masks[first[i] + j]) for i, j in got]
    seq2, k2 = item_sequence(plan, ids, seed, epoch, shuffle)
    assert np.array_equal(seq, seq2) and np.array_equal(k, k2)


def test_a_plan_order_fixes_the_sequence() -> None:
    plan = ArrayPlan([2, 1, 0, 1], [3, 1, 2, 3], order=[3, 0, 1, 0])
    seq, k = item_sequence(plan, np.arange(4), 0, 0, True)
    assert seq.tolist() == [3, 0, 1, 0] and k.tolist() == [0, 0, 0, 1]
    assert item_masks(plan, seq, k).tolist() == [3, 3, 2, 1]


def test_shuffles_depend_on_seed_and_epoch() -> None:
    plan = ArrayPlan(np.ones(50, dtype=np.int64), np.ones(50, dtype=np.int64))
    ids = np.arange(50)
    base = item_sequence(plan, ids, 1, 0)[0].tolist()
    assert base != list(range(50))
    assert base != item_sequence(plan, ids, 1, 1)[0].tolist()
    assert base != item_sequence(plan, ids, 2, 0)[0].tolist()
    order = shard_order(8, 3, 0, True).tolist()
    assert sorted(order) == list(range(8)) and order != list(range(8))
    assert order != shard_order(8, 3, 1, True).tolist()
    assert shard_order(8, 3, 1, False).tolist() == list(range(8))
    rows = rows_in_order(np.array([0, 3, 5, 9]), np.array([2, 0, 1]))
    assert rows.tolist() == [5, 6, 7, 8, 0, 1, 2, 3, 4]


def test_consumer_refuses_impossible_positions() -> None:
    with pytest.raises(ValueError, match="rank 2 outside"):
        Consumer(2, 2, 0, 1)
    with pytest.raises(ValueError, match="worker 3 outside"):
        Consumer(0, 1, 3, 2)


@settings(max_examples=100, deadline=None)
@given(
    total=st.integers(0, 60),
    world=st.integers(1, 5),
    granule=st.integers(1, 9),
    workers=st.integers(1, 4),
)
def test_drop_last_rounds_each_ranks_share_down_to_whole_granules(
    total: int, world: int, granule: int, workers: int
) -> None:
    """DUS with drop_last: every rank's share is ceil(total / world) rounded down to whole
    batches (never padded past it), the ranks' slices tile [0, world * share) in order, and
    the workers' runs tile each rank's slice in whole granules."""
    share = math.ceil(total / world) // granule * granule
    for rank in range(world):
        lo, hi = rank_range(total, rank, world, True, granule, drop_last=True)
        assert (lo, hi) == (rank * share, (rank + 1) * share)
        runs = [
            consumer_range(total, rank, world, w, workers, True, granule, drop_last=True)
            for w in range(workers)
        ]
        assert runs[0][0] == lo and runs[-1][1] == hi
        assert all(a[1] == b[0] for a, b in itertools.pairwise(runs))
        assert all((b - a) % granule == 0 for a, b in runs)
    # without drop_last the share is rounded up instead, as before
    up = math.ceil(math.ceil(total / world) / granule) * granule
    assert rank_range(total, world - 1, world, True, granule) == ((world - 1) * up, world * up)
