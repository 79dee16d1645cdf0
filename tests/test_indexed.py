"""IndexedDataset: plan expansion, random access under samplers, ids with holes, processes."""

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

from mmsample.errors import SampleError
from mmsample.shards import IndexedDataset, ShardWriter, StreamedDataset
from mmsample.shards.format import Manifest, ShardInfo, index_name
from mmsample.spec import Array, Spec, Text, Video
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


def test_items_follow_the_expanded_plan(root: Path) -> None:
    plan = TablePlan({0: (), 3: (0b01, 0b10, 0b11), 7: (0b10,)})
    ds = IndexedDataset(root, MODS, plan=plan)
    # worked by hand: ids in order, id 0 dropped, id 3 three items, id 7 feature only
    expected = [(1, 3, 0), (2, 3, 0), (3, 1, 0), (3, 2, 1), (3, 3, 2), (4, 3, 0), (5, 3, 0)]
    expected += [(6, 3, 0), (7, 2, 0), (8, 3, 0), (9, 3, 0), (10, 3, 0)]
    assert len(ds) == len(expected)
    assert [ds.item(i) for i in range(len(ds))] == expected
    for i, (sample_id, mask, _) in enumerate(expected):
        got = ds[i]
        assert (got["id"], got["mask"], got["label"], got["key"]) == (
            sample_id,
            mask,
            sample_id % 3,
            f"s{sample_id:06d}",
        )
        assert ("feat" in got) == bool(mask & 0b10) and ("text" in got) == bool(mask & 0b01)
        if "feat" in got:
            assert torch.equal(got["feat"], _feat(sample_id))
    assert ds[-1]["id"] == 10
    with pytest.raises(IndexError, match=r"item index 12 outside \[0, 12\)"):
        ds[12]


def test_any_sampler_covers_the_items(root: Path) -> None:
    ds = IndexedDataset(root, MODS, plan=TablePlan({5: (3, 3)}))
    gen = torch.Generator().manual_seed(0)
    loader = DataLoader(ds, batch_size=None, sampler=RandomSampler(ds, generator=gen))
    ids = [s["id"] for s in loader]
    assert ids != sorted(ids)
    assert Counter(ids) == Counter([*range(N), 5])
    per_rank = []
    for rank in range(2):
        sampler: DistributedSampler[Any] = DistributedSampler(
            ds, num_replicas=2, rank=rank, shuffle=True, seed=1
        )
        per_rank.append([s["id"] for s in DataLoader(ds, batch_size=None, sampler=sampler)])
    assert len(per_rank[0]) == len(per_rank[1]) == 6
    assert set(per_rank[0]) | set(per_rank[1]) == set(range(N))


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


def test_epoch_reseeds_items_and_re_expands_callable_plans(tmp_path: Path) -> None:
    write_tiny_dataset(tmp_path, n=4, fields=("mp4",), samples_per_shard=2)
    video = {"video": Video(frames=8, fps=10.0, random_frames=3)}

    def plan_of(epoch: int) -> TablePlan:
        return TablePlan({i: (1,) * (1 + (i + epoch) % 2) for i in range(4)}, full=1)

    ds = IndexedDataset(tmp_path, video, plan=plan_of, seed=5)
    assert [ds.item(i)[0] for i in range(len(ds))] == [0, 1, 1, 2, 3, 3]
    first = [ds[i]["video"] for i in range(len(ds))]
    again = IndexedDataset(tmp_path, video, plan=plan_of, seed=5)
    assert all(torch.equal(a, again[i]["video"]) for i, a in enumerate(first))
    # two items of one id draw different frames; the same item is stable across processes
    assert not torch.equal(first[1], first[2])
    ds.set_epoch(1)
    assert [ds.item(i)[0] for i in range(len(ds))] == [0, 0, 1, 2, 2, 3]
    assert not all(torch.equal(ds.get(i)["video"], again.get(i)["video"]) for i in range(4))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"seed": -1}, "'seed' parameter of IndexedDataset must be an int >= 0"),
        ({"on_error": "drop"}, r"'on_error' parameter of IndexedDataset must be one of \["),
        ({"plan": "all"}, "'plan' parameter of IndexedDataset must be a Plan"),
    ],
)
def test_parameters_are_validated(root: Path, kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        IndexedDataset(root, MODS, **kwargs)


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
