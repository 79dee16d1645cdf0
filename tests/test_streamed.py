"""StreamedDataset: rank/worker split and shuffling on its own; plans, epochs and resume through
the loader that owns them (`balanced_loader(reader, None, plan=...)`)."""

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

from mmsample.batch import MultimodalBatch
from mmsample.decoding import Array, Spec, Text
from mmsample.loader import BalancedLoader, balanced_loader
from mmsample.resume_check import check_resume
from mmsample.schedule import buffer_order, consumer_range
from mmsample.shards import StreamedDataset
from mmsample.testing import TablePlan, write_tiny_dataset

N = 23  # samples: 6 shards of 4 (the last of 3)
MODS: dict[str, Spec] = {"text": Text(max_length=8, byte_ids=True), "feat": Array()}


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("streamed")
    write_tiny_dataset(path, n=N, fields=("txt", "npy"), samples_per_shard=4)
    return path


def _ids(batch: MultimodalBatch) -> list[int]:
    return [int(i) for i in batch.ids.tolist()]


def _items(batch: MultimodalBatch) -> list[tuple[int, int]]:
    """(id, mask) of every row of a loader's batch."""
    return list(zip(batch.ids.tolist(), batch.mask.tolist()))


def _sample_ids(batch: list[dict[str, Any]]) -> list[int]:
    """Ids of a plain DataLoader's list of samples."""
    return [int(s["id"]) for s in batch]


def _loader(ds: StreamedDataset, batch_size: int = 4, **kwargs: Any) -> BalancedLoader:
    """The loader over `ds` (its seed, shuffle buffer, rank and world size) without a method."""
    return balanced_loader(
        ds, None, batch_size=batch_size, rank=ds.rank, world_size=ds.world_size, **kwargs
    )


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
        ds = StreamedDataset(root, MODS, rank=rank, world_size=2, shuffle=5, shuffle_shards=False)
        assert len(ds) == -(-N // 2)  # on its own: the plain plan's items of this rank
        loader = _loader(ds, batch_size=3, plan=plan, num_workers=2)
        batches = list(loader)
        got = [item for batch in batches for item in _items(batch)]
        assert len(got) == -(-total // 2)
        # 12 items per rank, 6 per worker: 2 batches of 3 each
        assert len(batches) == len(loader) == 4
        per_rank.append(got)
    assert len(per_rank[0]) == len(per_rank[1])
    union = Counter(per_rank[0] + per_rank[1])
    # Padding: the epoch's first item (id 0, shards in order) is served once more.
    assert union == Counter([*expected, (0, 0b11)])


def test_a_reader_on_its_own_splits_over_dataloader_workers(root: Path) -> None:
    """The plain plan's epoch 0 under a plain DataLoader: each rank's slice, cut over its
    workers, every sample once plus the padding item."""
    per_rank = []
    for rank in range(2):
        ds = StreamedDataset(root, MODS, rank=rank, world_size=2, shuffle=5, shuffle_shards=False)
        loader = DataLoader(ds, batch_size=3, num_workers=2, collate_fn=_sample_ids)
        got = [i for batch in loader for i in batch]
        assert len(got) == len(ds) == -(-N // 2)
        per_rank.append(got)
    assert Counter(per_rank[0] + per_rank[1]) == Counter([*range(N), 0])


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
        loader = _loader(ds)
        loader.set_epoch(epoch)
        return [i for batch in loader for i in _ids(batch)]

    assert order(0, 0, 0, False) == list(range(N))
    base = order(0, 0)
    assert sorted(base) == list(range(N))
    assert base == order(0, 0)
    assert base != order(0, 1)
    assert base != order(1, 0)
    # the reader on its own serves epoch 0's order
    alone = StreamedDataset(root, MODS, shuffle=6, shuffle_shards=True, seed=0)
    assert [int(s["id"]) for s in alone] == base
    # shard order only: each shard's ids stay contiguous and in file order
    shards_only = order(0, 1, 0, True)
    assert shards_only != list(range(N))
    where = {sample: n for n, sample in enumerate(shards_only)}
    for first in range(0, N, 4):
        shard = list(range(first, min(first + 4, N)))
        at = where[shard[0]]
        assert [where[i] for i in shard] == list(range(at, at + len(shard)))


def test_a_reader_on_its_own_always_serves_epoch_0(root: Path) -> None:
    """Readers hold no epoch: every pass of a reader is epoch 0; the loader over the same
    reader serves the epochs (each a permutation of the samples, epoch 0 the reader's)."""
    ds = StreamedDataset(root, MODS, shuffle=6, seed=2)
    first = [int(s["id"]) for s in ds]
    assert first == [int(s["id"]) for s in ds]  # a second pass: epoch 0 again
    assert sorted(first) == list(range(N))
    loader = balanced_loader(ds, None, batch_size=5)
    epochs = []
    for epoch in (0, 1):
        loader.set_epoch(epoch)
        epochs.append([i for batch in loader for i in _ids(batch)])
    assert all(sorted(e) == list(range(N)) for e in epochs)
    assert epochs[0] != epochs[1]
    assert epochs[0] == first
    assert [int(s["id"]) for s in ds] == first  # the loader's epochs left the reader at epoch 0


def test_plan_masks_and_callable_plans(root: Path) -> None:
    def plan_of(epoch: int) -> TablePlan:
        return TablePlan({i: ((0b01,) if (i + epoch) % 2 else (0b10, 0b11)) for i in range(N)})

    names = list(MODS)
    ds = StreamedDataset(root, MODS, shuffle=0, shuffle_shards=False)
    loader = _loader(ds, batch_size=4, plan=plan_of)
    for epoch in (0, 1):
        loader.set_epoch(epoch)
        got = []
        batches = list(loader)
        for batch in batches:
            for r, (i, m) in enumerate(_items(batch)):
                present = sorted(n for n in names if n in batch and r in batch.rows(n).tolist())
                got.append((i, m, present))
        expected = []
        for i in range(N):
            for m in plan_of(epoch).items(i):
                expected.append((i, m, sorted(n for j, n in enumerate(MODS) if m >> j & 1)))
        assert got == expected
        assert len(batches) == len(loader) == -(-len(expected) // 4)


# ----- resume (the loader's) -----
def _resumable(root: Path, workers: int, epoch: int = 0) -> BalancedLoader:
    ds = StreamedDataset(root, MODS, shuffle=5, seed=3)
    loader = _loader(ds, batch_size=2, num_workers=workers, plan=TablePlan({2: (3, 1), 5: ()}))
    loader.set_epoch(epoch)
    return loader


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_continues_exactly(root: Path, workers: int) -> None:
    reference = check_resume(lambda epoch: _resumable(root, workers, epoch), _ids)
    assert sorted(reference) == sorted([i for i in range(N) if i != 5] + [2])  # type: ignore[type-var]


class _Forgetful:
    """A loader that restores nothing: the epoch restarts from the top."""

    def __init__(self, loader: BalancedLoader) -> None:
        self.loader = loader

    def set_epoch(self, epoch: int) -> None:
        self.loader.set_epoch(epoch)

    def __iter__(self) -> Any:
        return iter(self.loader)

    def state_dict(self) -> dict[str, Any]:
        return self.loader.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


def test_resume_check_catches_a_loader_that_forgets_its_position(root: Path) -> None:
    def make(epoch: int) -> _Forgetful:
        loader = _Forgetful(_loader(StreamedDataset(root, MODS, shuffle=5, seed=3), batch_size=2))
        loader.set_epoch(epoch)
        return loader

    with pytest.raises(AssertionError, match="duplicated"):
        check_resume(make, _ids)


def test_state_refuses_a_different_configuration(root: Path) -> None:
    loader = _loader(StreamedDataset(root, MODS, shuffle=5, seed=3), batch_size=1)
    it = iter(loader)
    next(it)
    state = loader.state_dict()
    assert (state["epoch"], state["batches"]) == (0, 1)
    saved = copy.deepcopy(state)
    with pytest.raises(ValueError, match=r"seed: saved 3, now 4"):
        _loader(StreamedDataset(root, MODS, shuffle=5, seed=4), batch_size=1).load_state_dict(state)
    two = StreamedDataset(root, MODS, shuffle=5, seed=3, rank=0, world_size=2)
    with pytest.raises(ValueError, match=r"world_size: saved 1, now 2"):
        _loader(two, batch_size=1).load_state_dict(state)
    text = StreamedDataset(root, {"text": Text(byte_ids=True)}, shuffle=5, seed=3)
    with pytest.raises(ValueError, match="modalities"):
        _loader(text, batch_size=1).load_state_dict(state)
    with pytest.raises(ValueError, match=r"expects a dict from BalancedLoader\.state_dict\(\)"):
        loader.load_state_dict({"class": "IndexedDataset"})
    # a state of the other mode (an indexed reader's loader) is refused too
    with pytest.raises(ValueError, match=r"mode: saved 'indexed', now 'streamed'"):
        loader.load_state_dict({**state, "mode": "indexed"})
    assert state == saved
    too_far = {**state, "batches": N + 1}
    other = _loader(StreamedDataset(root, MODS, shuffle=5, seed=3), batch_size=1)
    with pytest.raises(ValueError, match="the plan or dataset changed"):
        other.load_state_dict(too_far)
    assert state == saved


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"shuffle": -1}, "'shuffle' parameter of StreamedDataset must be an int >= 0"),
        ({"seed": -2}, "'seed' parameter of StreamedDataset"),
        ({"on_error": "ignore"}, r"'on_error' parameter of StreamedDataset must be one of \["),
        ({"rank": 2, "world_size": 2}, r"'rank' parameter of StreamedDataset must be in \[0, "),
        ({"world_size": 0}, "'world_size' parameter of StreamedDataset must be >= 1"),
    ],
)
def test_parameters_are_validated(root: Path, kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        StreamedDataset(root, MODS, **kwargs)


def test_plan_parameter_is_validated_by_the_loader(root: Path) -> None:
    with pytest.raises(ValueError, match="'plan' parameter of balanced_loader"):
        _loader(StreamedDataset(root, MODS), plan=3)


def test_set_epoch_resets_position(root: Path) -> None:
    loader = _loader(StreamedDataset(root, MODS, shuffle=4), batch_size=5)
    ids = torch.tensor([i for batch in loader for i in _ids(batch)])
    assert torch.equal(ids.sort().values, torch.arange(N))
    state = loader.state_dict()
    assert (state["epoch"], state["batches"]) == (0, len(loader))
    loader.set_epoch(2)
    assert (loader.state_dict()["epoch"], loader.state_dict()["batches"]) == (2, 0)
