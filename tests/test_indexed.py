"""IndexedDataset: random access under samplers, ids with holes, processes; plan expansion and
epochs through the loader that applies them (`balanced_loader(reader, None, plan=...)`)."""

from __future__ import annotations

import io
import pickle
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler

from mmsample.batch import MultimodalBatch
from mmsample.decoding import Array, Spec, Text, Video
from mmsample.errors import SampleError
from mmsample.loader import BalancedLoader, balanced_loader
from mmsample.plan import ArrayPlan
from mmsample.schedule import item_sequence
from mmsample.sharding import ShardWriter
from mmsample.shards import IndexedDataset, StreamedDataset
from mmsample.shards.format import Manifest, ShardInfo, index_name
from mmsample.testing import TablePlan, tiny_sample_fields, write_tiny_dataset

N = 11
MODS: dict[str, Spec] = {"text": Text(max_length=8, byte_ids=True), "feat": Array()}


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("indexed")
    write_tiny_dataset(path, n=N, fields=("txt", "npy"), samples_per_shard=4)
    return path


def _feat(i: int) -> torch.Tensor:
    """Sample i's npy payload, decoded independently of the reader."""
    data = tiny_sample_fields(i, ["npy"])["npy"]
    return torch.from_numpy(np.load(io.BytesIO(data), allow_pickle=False))


def _loader(ds: IndexedDataset, batch_size: int = 1, **kwargs: Any) -> BalancedLoader:
    """The indexed loader over `ds` without a method (its items in id order unless
    `shuffle=True` is passed)."""
    kwargs.setdefault("shuffle", False)
    return balanced_loader(ds, None, batch_size=batch_size, **kwargs)


def _rows(batch: MultimodalBatch) -> list[tuple[int, int]]:
    return list(zip(batch.ids.tolist(), batch.mask.tolist()))


def test_items_follow_the_expanded_plan(root: Path) -> None:
    plan = TablePlan({0: (), 3: (0b01, 0b10, 0b11), 7: (0b10,)})
    ds = IndexedDataset(root, MODS)
    loader = _loader(ds, plan=plan)  # one item per batch, the plan's items in id order
    # worked by hand: ids in order, id 0 dropped, id 3 three items, id 7 feature only
    expected = [(1, 3, 0), (2, 3, 0), (3, 1, 0), (3, 2, 1), (3, 3, 2), (4, 3, 0), (5, 3, 0)]
    expected += [(6, 3, 0), (7, 2, 0), (8, 3, 0), (9, 3, 0), (10, 3, 0)]
    assert len(loader) == len(expected)
    batches = list(loader)
    assert [row for b in batches for row in _rows(b)] == [(i, m) for i, m, _ in expected]
    # the item index within the id, as the loader's schedule lays the plan out
    _, k = item_sequence(plan.to_plan(ds.ids, N), ds.ids, ds.seed, 0, shuffle=False)
    assert k.tolist() == [j for _, _, j in expected]
    for (sample_id, mask, _), got in zip(expected, batches, strict=True):
        assert (got.ids.tolist(), got.mask.tolist(), got.labels.tolist(), got.keys) == (
            [sample_id],
            [mask],
            [sample_id % 3],
            [f"s{sample_id:06d}"],
        )
        assert ("feat" in got) == bool(mask & 0b10) and ("text" in got) == bool(mask & 0b01)
        if "feat" in got:
            assert torch.equal(got["feat"][0], _feat(sample_id))
    # the reader on its own: sample i in id order, every modality
    assert len(ds) == N
    for i in range(N):
        got = ds[i]
        assert (got["id"], got["mask"], got["label"], got["key"]) == (i, 3, i % 3, f"s{i:06d}")
        assert torch.equal(got["feat"], _feat(i))
    assert ds[-1]["id"] == 10
    with pytest.raises(IndexError, match=r"item index 11 outside \[0, 11\)"):
        ds[11]


def test_any_sampler_covers_the_items(root: Path) -> None:
    ds = IndexedDataset(root, MODS)
    gen = torch.Generator().manual_seed(0)
    loader = DataLoader(ds, batch_size=None, sampler=RandomSampler(ds, generator=gen))
    ids = [s["id"] for s in loader]
    assert ids != sorted(ids)
    assert Counter(ids) == Counter(range(N))
    per_rank = []
    for rank in range(2):
        sampler: DistributedSampler[Any] = DistributedSampler(
            ds, num_replicas=2, rank=rank, shuffle=True, seed=1
        )
        per_rank.append([s["id"] for s in DataLoader(ds, batch_size=None, sampler=sampler)])
    assert len(per_rank[0]) == len(per_rank[1]) == 6
    assert set(per_rank[0]) | set(per_rank[1]) == set(range(N))


def test_the_loader_shuffles_and_splits_a_plans_items(root: Path) -> None:
    plan = TablePlan({5: (3, 3)})
    shuffled = _loader(IndexedDataset(root, MODS), batch_size=2, plan=plan, shuffle=True)
    ids = [i for b in shuffled for i in b.ids.tolist()]
    assert ids != sorted(ids)
    assert Counter(ids) == Counter([*range(N), 5])
    per_rank = []
    for rank in range(2):
        loader = _loader(
            IndexedDataset(root, MODS, seed=1),
            batch_size=2,
            plan=plan,
            shuffle=True,
            rank=rank,
            world_size=2,
        )
        per_rank.append([i for b in loader for i in b.ids.tolist()])
    assert len(per_rank[0]) == len(per_rank[1]) == 6
    assert set(per_rank[0]) | set(per_rank[1]) == set(range(N))
    assert Counter(per_rank[0] + per_rank[1]) == Counter([*range(N), 5])  # 12 items: no padding


def test_workers_open_their_own_files(root: Path) -> None:
    ds = IndexedDataset(root, MODS)
    ds[0]  # the parent has a descriptor open now
    assert len(pickle.loads(pickle.dumps(ds)).table._fds) == 0
    loader = DataLoader(ds, batch_size=3, num_workers=2, collate_fn=lambda b: [s["id"] for s in b])
    assert [i for batch in loader for i in batch] == list(range(N))
    ds.close()
    assert ds[4]["id"] == 4


def test_get_by_id_with_holes(tmp_path: Path) -> None:
    ids = [0, 2, 5, 9]  # skipped input rows leave holes in the id space
    with ShardWriter(tmp_path / "shard-000000.tar", ["a", "b"]) as writer:
        for sample_id in ids:
            writer.write(
                f"k{sample_id}", sample_id, sample_id % 2, tiny_sample_fields(sample_id, ["npy"])
            )
    shard = ShardInfo("shard-000000.tar", 4, 0, 9, 0, index_name("shard-000000.tar"))
    Manifest(["a", "b"], ["npy"], [shard], num_rows=12, samples_per_shard=4, skipped=8).save(
        tmp_path
    )
    ds = IndexedDataset(tmp_path, {"feat": Array()})
    assert len(ds) == 4 and [ds[i]["id"] for i in range(4)] == ids
    for sample_id in ids:
        got = ds.get(sample_id)
        assert got["key"] == f"k{sample_id}" and torch.equal(got["feat"], _feat(sample_id))
    for missing in (1, 3, 10, 11, 12, -1):
        with pytest.raises(KeyError, match=f"sample id {missing} is in no shard"):
            ds.get(missing)
    assert ds.get(5, mask=0)["mask"] == 0 and "feat" not in ds.get(5, mask=0)


def _frames(loader: BalancedLoader) -> tuple[list[int], list[torch.Tensor]]:
    """(ids, each item's frames) of a one-item-per-batch pass."""
    ids, frames = [], []
    for batch in loader:
        video = batch["video"]
        assert isinstance(video, torch.Tensor) and len(batch) == 1
        ids.append(int(batch.ids[0]))
        frames.append(video[0])
    return ids, frames


def test_epoch_reseeds_items_and_re_expands_callable_plans(tmp_path: Path) -> None:
    write_tiny_dataset(tmp_path, n=4, fields=("mp4",), samples_per_shard=2)
    video = {"video": Video(frames=8, fps=10.0, random_frames=3)}

    def plan_of(epoch: int) -> TablePlan:
        return TablePlan({i: (1,) * (1 + (i + epoch) % 2) for i in range(4)}, full=1)

    ds = IndexedDataset(tmp_path, video, seed=5)
    loader = _loader(ds, plan=plan_of)
    loader.set_epoch(0)
    ids, first = _frames(loader)
    assert ids == [0, 1, 1, 2, 3, 3]
    # the same items from another reader, decoded in DataLoader worker processes
    again = _loader(IndexedDataset(tmp_path, video, seed=5), plan=plan_of, num_workers=2)
    again_ids, again_frames = _frames(again)
    assert again_ids == ids
    assert all(torch.equal(a, b) for a, b in zip(first, again_frames, strict=True))
    # two items of one id draw different frames; the same item is stable across processes
    assert not torch.equal(first[1], first[2])
    # the k-th item of an id is get(id, item=k) of that epoch
    for (i, k), frames in zip([(0, 0), (1, 0), (1, 1), (2, 0), (3, 0), (3, 1)], first):
        assert torch.equal(frames, ds.get(i, item=k, epoch=0)["video"])
    loader.set_epoch(1)
    ids, second = _frames(loader)
    assert ids == [0, 0, 1, 2, 2, 3]
    for (i, k), frames in zip([(0, 0), (0, 1), (1, 0), (2, 0), (2, 1), (3, 0)], second):
        assert torch.equal(frames, ds.get(i, item=k, epoch=1)["video"])
    # the epoch reseeds the draws: some id's item 0 differs between the epochs
    assert not all(torch.equal(ds.get(i, epoch=1)["video"], ds.get(i)["video"]) for i in range(4))
    item0 = {0: (0, 0), 1: (1, 2), 2: (3, 3), 3: (4, 5)}  # id: (its position in epoch 0, 1)
    assert not all(torch.equal(first[a], second[b]) for a, b in item0.values())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"seed": -1}, "'seed' parameter of IndexedDataset must be an int >= 0"),
        ({"on_error": "drop"}, r"'on_error' parameter of IndexedDataset must be one of \["),
    ],
)
def test_parameters_are_validated(root: Path, kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        IndexedDataset(root, MODS, **kwargs)


def test_plan_parameter_is_validated_by_the_loader(root: Path) -> None:
    with pytest.raises(ValueError, match="'plan' parameter of balanced_loader must be a mmsample"):
        _loader(IndexedDataset(root, MODS), plan="all")
    every = ArrayPlan.every(np.arange(N), N, 3)
    assert len(_loader(IndexedDataset(root, MODS), plan=every)) == N  # a plan is accepted


def test_duplicate_ids_are_refused(tmp_path: Path) -> None:
    infos = []
    for s in range(2):
        name = f"shard-00000{s}.tar"
        with ShardWriter(tmp_path / name, ["a"]) as writer:
            writer.write(f"k{s}", 7, 0, {"txt": b"x"})
        infos.append(ShardInfo(name, 1, 7, 7, 0, index_name(name)))
    Manifest(["a"], ["txt"], infos, num_rows=8, samples_per_shard=1).save(tmp_path)
    with pytest.raises(
        SampleError, match=r"id 7 is given twice: by shard-000000\.tar row 0"
    ) as err:
        IndexedDataset(tmp_path, {"text": Text(byte_ids=True)})
    assert (err.value.shard, err.value.key) == ("shard-000001.tar", "k1")
    with pytest.raises(SampleError, match="id 7 is given twice"):
        StreamedDataset(tmp_path, {"text": Text(byte_ids=True)})
