"""StreamedDataset: rank/worker split, shuffling, plans, and resume through StatefulDataLoader."""

from __future__ import annotations

import copy
import itertools
import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as tmp
from torch.utils.data import DataLoader
from torchdata.stateful_dataloader import StatefulDataLoader

from mmsample.resume_check import check_resume
from mmsample.schedule import buffer_order, consumer_range
from mmsample.shards import StreamedDataset
from mmsample.spec import Array, Spec, Text
from mmsample.testing import TablePlan, write_tiny_dataset

N = 23  # samples: 6 shards of 4 (the last of 3)
MODS: dict[str, Spec] = {"text": Text(max_length=8, byte_ids=True), "feat": Array()}


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("streamed")
    write_tiny_dataset(path, n=N, fields=("txt", "npy"), samples_per_shard=4)
    return path


def _ids(batch: list[dict[str, Any]]) -> list[int]:
    return [int(s["id"]) for s in batch]


def _items(batch: list[dict[str, Any]]) -> list[tuple[int, int]]:
    return [(int(s["id"]), int(s["mask"])) for s in batch]


# ----- pure pieces -----
def test_buffer_order_is_a_bounded_seeded_permutation() -> None:
    for n, size in [(0, 5), (1, 5), (10, 0), (10, 1), (10, 3), (50, 7), (6, 100)]:
        order = buffer_order(n, size, np.random.default_rng(1))
        assert sorted(order.tolist()) == list(range(n))
        for step, item in enumerate(order.tolist()):
            assert item < step + max(size, 1)  # never emitted before it could have been read
    a = buffer_order(50, 7, np.random.default_rng(1)).tolist()
    assert a == buffer_order(50, 7, np.random.default_rng(1)).tolist()
    assert a != buffer_order(50, 7, np.random.default_rng(2)).tolist()
    assert a != list(range(50))
    assert buffer_order(10, 1, np.random.default_rng(1)).tolist() == list(range(10))


@pytest.mark.parametrize("equal", [True, False])
def test_consumer_ranges_tile_the_items(equal: bool) -> None:
    for total in [0, 1, 5, 7, 23, 64]:
        for world in [1, 2, 3, 4]:
            per_rank = []
            positions: list[int] = []
            for rank in range(world):
                lo, hi = consumer_range(total, rank, world, 0, 1, equal)
                per_rank.append(hi - lo)
                parts = [consumer_range(total, rank, world, w, 3, equal) for w in range(3)]
                assert parts[0][0] == lo and parts[-1][1] == hi
                assert all(a[1] == b[0] for a, b in itertools.pairwise(parts))
                assert max(b - a for a, b in parts) - min(b - a for a, b in parts) <= 1
                positions += [p % total for p in range(lo, hi)] if total else []
            if equal:
                assert len(set(per_rank)) == 1 and per_rank[0] == -(-total // world)
                # every item once, then padding that wraps around to the epoch's first items
                assert Counter(positions) == Counter(
                    p % total for p in range(world * per_rank[0]) if total
                )
            else:
                assert sorted(positions) == list(range(total))
                assert max(per_rank) - min(per_rank) <= 1


# ----- splitting over ranks and workers -----
def test_two_ranks_two_workers_cover_every_item_once(root: Path) -> None:
    drop, twice = 4, 9
    plan = TablePlan({drop: (), twice: (0b11, 0b01)})
    expected = [(i, 0b11) for i in range(N) if i != drop] + [(twice, 0b01)]
    total = len(expected)  # 23 items: odd, so one rank needs one padding item
    per_rank: list[list[tuple[int, int]]] = []
    for rank in range(2):
        ds = StreamedDataset(
            root, MODS, plan=plan, rank=rank, world_size=2, shuffle=5, shuffle_shards=False
        )
        loader = DataLoader(ds, batch_size=3, num_workers=2, collate_fn=_items)
        got = [item for batch in loader for item in batch]
        assert len(got) == len(ds) == -(-total // 2)
        per_rank.append(got)
    assert len(per_rank[0]) == len(per_rank[1])
    union = Counter(per_rank[0] + per_rank[1])
    # Padding: the epoch's first item (id 0, shards in order) is served once more.
    assert union == Counter([*expected, (0, 0b11)])


def test_equal_split_false_yields_each_item_once(root: Path) -> None:
    got = []
    counts = []
    for rank in range(3):
        ds = StreamedDataset(root, MODS, rank=rank, world_size=3, equal_split=False, shuffle=3)
        ids = [s["id"] for s in ds]
        counts.append(len(ids))
        got += ids
    assert sorted(got) == list(range(N))
    assert max(counts) - min(counts) <= 1


def _gloo_rank(rank: int, root: str, store: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        ds = StreamedDataset(root, MODS, shuffle=4)  # rank and world size from torch.distributed
        ids = [int(s["id"]) for s in ds]
        Path(out, f"rank{rank}.json").write_text(json.dumps([ds.rank, ds.world_size, ids]))
        dist.barrier()  # no rank tears gloo down while its peer still talks to it
    finally:
        dist.destroy_process_group()


def test_real_gloo_ranks_get_disjoint_halves(root: Path, tmp_path: Path) -> None:
    tmp.start_processes(
        _gloo_rank,
        args=(str(root), str(tmp_path / "store"), str(tmp_path)),
        nprocs=2,
        start_method="fork",
    )
    results = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert [r[:2] for r in results] == [[0, 2], [1, 2]]
    a, b = results[0][2], results[1][2]
    assert len(a) == len(b) == 12  # 23 samples: 12 each, one padding item
    assert len(set(a)) == len(a) and len(set(b)) == len(b)
    assert set(a) | set(b) == set(range(N))
    assert len(set(a) & set(b)) == 1  # the padding item, served by both ranks


def test_rank_from_environment(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "3")
    ds = StreamedDataset(root, MODS)
    assert (ds.rank, ds.world_size) == (1, 3)
    assert (StreamedDataset(root, MODS, rank=0).rank, ds.world_size) == (0, 3)
    monkeypatch.setenv("RANK", "x")
    with pytest.raises(ValueError, match="RANK='x'"):
        StreamedDataset(root, MODS)


# ----- order -----
def test_shuffle_is_seeded(root: Path) -> None:
    def order(seed: int, epoch: int, shuffle: int = 6, shards: bool = True) -> list[int]:
        ds = StreamedDataset(root, MODS, shuffle=shuffle, shuffle_shards=shards, seed=seed)
        ds.set_epoch(epoch)
        return [s["id"] for s in ds]

    assert order(0, 0, 0, False) == list(range(N))
    base = order(0, 0)
    assert sorted(base) == list(range(N))
    assert base == order(0, 0)
    assert base != order(0, 1)
    assert base != order(1, 0)
    # shard order only: each shard's ids stay contiguous and in file order
    shards_only = order(0, 1, 0, True)
    assert shards_only != list(range(N))
    where = {sample: n for n, sample in enumerate(shards_only)}
    for first in range(0, N, 4):
        shard = list(range(first, min(first + 4, N)))
        at = where[shard[0]]
        assert [where[i] for i in shard] == list(range(at, at + len(shard)))


def test_plan_masks_and_callable_plans(root: Path) -> None:
    def plan_of(epoch: int) -> TablePlan:
        return TablePlan({i: ((0b01,) if (i + epoch) % 2 else (0b10, 0b11)) for i in range(N)})

    ds = StreamedDataset(root, MODS, plan=plan_of, shuffle=0, shuffle_shards=False)
    for epoch in (0, 1):
        ds.set_epoch(epoch)
        got = [(s["id"], s["mask"], sorted(k for k in ("text", "feat") if k in s)) for s in ds]
        expected = []
        for i in range(N):
            for m in plan_of(epoch).items(i):
                expected.append((i, m, sorted(n for j, n in enumerate(MODS) if m >> j & 1)))
        assert got == expected
        assert len(ds) == len(expected)


# ----- resume -----
def _loader(root: Path, workers: int, epoch: int = 0) -> StatefulDataLoader:
    ds = StreamedDataset(root, MODS, shuffle=5, seed=3, plan=TablePlan({2: (3, 1), 5: ()}))
    ds.set_epoch(epoch)
    return StatefulDataLoader(ds, batch_size=2, num_workers=workers, collate_fn=_ids)


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_continues_exactly(root: Path, workers: int) -> None:
    reference = check_resume(lambda epoch: _loader(root, workers, epoch))
    assert sorted(reference) == sorted([i for i in range(N) if i != 5] + [2])  # type: ignore[type-var]


def test_resume_check_catches_a_reader_that_forgets_its_position(root: Path) -> None:
    class Forgetful(StatefulDataLoader):  # restores nothing: the epoch restarts from the top
        def load_state_dict(self, state: dict[str, Any]) -> None:
            pass

    def make(epoch: int) -> StatefulDataLoader:
        ds = StreamedDataset(root, MODS, shuffle=5, seed=3)
        ds.set_epoch(epoch)
        return Forgetful(ds, batch_size=2, num_workers=0, collate_fn=_ids)

    with pytest.raises(AssertionError, match="duplicated"):
        check_resume(make)


def test_state_refuses_a_different_configuration(root: Path) -> None:
    ds = StreamedDataset(root, MODS, shuffle=5, seed=3)
    it = iter(ds)
    next(it)
    state = ds.state_dict()
    assert (state["epoch"], state["yielded"]) == (0, 1)
    saved = copy.deepcopy(state)
    with pytest.raises(ValueError, match=r"seed: saved 3, now 4"):
        StreamedDataset(root, MODS, shuffle=5, seed=4).load_state_dict(state)
    with pytest.raises(ValueError, match=r"world_size: saved 1, now 2"):
        StreamedDataset(root, MODS, shuffle=5, seed=3, rank=0, world_size=2).load_state_dict(state)
    with pytest.raises(ValueError, match="modalities"):
        StreamedDataset(root, {"text": Text(byte_ids=True)}, shuffle=5, seed=3).load_state_dict(
            state
        )
    with pytest.raises(ValueError, match="not a StreamedDataset state"):
        ds.load_state_dict({"class": "IndexedDataset"})
    assert state == saved
    too_far = {**state, "yielded": N + 1}
    other = StreamedDataset(root, MODS, shuffle=5, seed=3)
    other.load_state_dict(too_far)
    with pytest.raises(ValueError, match="the plan or dataset changed"):
        list(other)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"shuffle": -1}, "'shuffle' parameter of StreamedDataset must be an int >= 0"),
        ({"seed": -2}, "'seed' parameter of StreamedDataset"),
        ({"on_error": "ignore"}, r"'on_error' parameter of StreamedDataset must be one of \["),
        ({"rank": 2, "world_size": 2}, r"'rank' parameter of StreamedDataset must be in \[0, "),
        ({"world_size": 0}, "'world_size' parameter of StreamedDataset must be >= 1"),
        ({"plan": 3}, "'plan' parameter of StreamedDataset"),
    ],
)
def test_parameters_are_validated(root: Path, kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        StreamedDataset(root, MODS, **kwargs)


def test_set_epoch_resets_position(root: Path) -> None:
    ds = StreamedDataset(root, MODS, shuffle=4)
    assert torch.equal(torch.tensor([s["id"] for s in ds]).sort().values, torch.arange(N))
    assert ds.state_dict()["yielded"] == N
    ds.set_epoch(2)
    assert (ds.state_dict()["epoch"], ds.state_dict()["yielded"]) == (2, 0)
