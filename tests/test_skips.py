"""Skip-and-replace across DataLoader workers (issue 7 item 10), on real shards whose members are
corrupt: a worker whose whole slice is bad yields replacements from the epoch's items, the same
ones for any worker count, counted in the main process and reported."""

from __future__ import annotations

import gc
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader

from mmsample.decoding import Spec, Text, Video
from mmsample.decoding.decoder import SkippedSampleWarning
from mmsample.errors import SampleError
from mmsample.loader import balanced_loader
from mmsample.schedule import replacement_positions
from mmsample.sharding import write_samples
from mmsample.shards import IndexedDataset, StreamedDataset
from mmsample.skips import SkipCounter
from mmsample.testing import tiny_sample_fields

GARBAGE = b"\x00\x00\x00\x18ftypmp42 not a real movie" * 20
N = 8
BAD = {0, 1, 2, 3}  # the whole first shard: the whole slice of worker 0 of 2


def _write(path: Path, bad: set[int]) -> Path:
    def samples() -> Any:
        for i in range(N):
            fields = tiny_sample_fields(i, ("mp4", "txt"))
            if i in bad:
                fields["mp4"] = GARBAGE
            yield f"c{i}", i % 2, fields

    write_samples(path, samples(), ["a", "b"], samples_per_shard=4)
    return path


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = _write(tmp_path_factory.mktemp("skips"), BAD)
    _specs()["video"].decode(tiny_sample_fields(0, ["mp4"])["mp4"])  # load decoders before forks
    return path


def _specs() -> dict[str, Spec]:
    return {"video": Video(frames=2, fps=10.0, random_frames=1), "text": Text(byte_ids=True)}


def _epoch(ds: Any, workers: int) -> list[dict[str, Any]]:
    gc.collect()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SkippedSampleWarning)  # workers=0: reported here
        return list(DataLoader(ds, batch_size=None, num_workers=workers))


@pytest.mark.parametrize("reader", ["streamed", "indexed"])
def test_a_worker_whose_whole_slice_is_bad_gets_replacements_from_the_epoch(
    root: Path, reader: str
) -> None:
    def make(**kw: Any) -> Any:
        if reader == "streamed":
            return StreamedDataset(root, _specs(), on_error="skip", shuffle_shards=False, **kw)
        return IndexedDataset(root, _specs(), on_error="skip")

    seen: dict[int, Counter[int]] = {}
    for workers in (0, 1, 2):
        ds = make()
        items = _epoch(ds, workers)
        ids = [int(s["id"]) for s in items]
        assert len(ids) == N  # the epoch keeps its length
        assert not set(ids) & BAD and set(ids) == set(range(N)) - BAD  # only good items
        assert ds.skipped == len(BAD)  # counted in this process, workers' skips included
        counts = Counter(ids)
        assert sum(c - 1 for c in counts.values()) == len(BAD)  # one copy per skip, no more
        seen[workers] = counts
        # a replacement is a true copy: the same item's tensors (same id, same random frame)
        by_id: dict[int, list[dict[str, Any]]] = {}
        for s in items:
            by_id.setdefault(int(s["id"]), []).append(s)
        for copies in by_id.values():
            for other in copies[1:]:
                assert torch.equal(other["video"], copies[0]["video"])
    assert seen[0] == seen[1] == seen[2]  # the same replacements for any worker count
    assert len([i for i, c in seen[0].items() if c > 1]) >= 2  # spread, not one item 5 times
    if reader == "streamed":  # a shuffle buffer reorders items, never changes replacements
        assert Counter(int(s["id"]) for s in _epoch(make(shuffle=3), 2)) == seen[0]


@pytest.mark.parametrize("reader", ["streamed", "indexed"])
def test_the_loader_replaces_bad_items_the_same_for_any_worker_count(
    root: Path, reader: str
) -> None:
    """The same policy through `balanced_loader(reader, None)`: the epoch keeps its length,
    only good items, one copy per skip, counted in the reader of the main process."""
    seen: dict[int, Counter[int]] = {}
    for workers in (0, 1, 2):
        ds: Any = (
            StreamedDataset(root, _specs(), on_error="skip", shuffle_shards=False)
            if reader == "streamed"
            else IndexedDataset(root, _specs(), on_error="skip")
        )
        loader = balanced_loader(ds, None, batch_size=3, num_workers=workers)
        gc.collect()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SkippedSampleWarning)
            ids = [i for batch in loader for i in batch.ids.tolist()]
        assert len(ids) == N
        assert set(ids) == set(range(N)) - BAD
        assert ds.skipped == len(BAD)
        counts = Counter(ids)
        assert sum(c - 1 for c in counts.values()) == len(BAD)
        seen[workers] = counts
    assert seen[0] == seen[1] == seen[2]
    assert len([i for i, c in seen[0].items() if c > 1]) >= 2  # spread, not one item 5 times
    if reader == "streamed":  # the loader's streamed epoch 0 is the reader's own epoch 0
        alone = StreamedDataset(root, _specs(), on_error="skip", shuffle_shards=False)
        assert Counter(int(s["id"]) for s in _epoch(alone, 0)) == seen[0]


def test_skips_are_reported_naming_the_bad_and_the_replacing_item(root: Path) -> None:
    ds = StreamedDataset(root, _specs(), on_error="skip", shuffle_shards=False)
    with pytest.warns(SkippedSampleWarning) as caught:
        ids = [int(s["id"]) for s in ds]
    assert len(caught) == len(BAD)
    for i, w in zip(sorted(BAD), caught):
        r = ids[i]  # shuffle=0, one consumer: position i of the epoch is id i
        assert f"shard-000000.tar:c{i}: cannot decode modality 'video' from field 'mp4'" in str(
            w.message
        )
        assert str(w.message).endswith(f"replaced by epoch item {r} (shard-000001.tar:c{r})")


def test_an_epoch_with_nothing_decodable_raises(tmp_path: Path) -> None:
    root = _write(tmp_path / "all-bad", set(range(N)))
    for ds in (
        StreamedDataset(root, _specs(), on_error="skip"),
        IndexedDataset(root, _specs(), on_error="skip"),
    ):
        with pytest.raises(SampleError, match=r"no item of this epoch decodes .*cannot decode"):
            next(iter(DataLoader(ds, batch_size=None, num_workers=0)))


def test_replacement_positions_cover_the_epoch_once() -> None:
    for total in (2, 3, 8, 13):
        for position in range(total):
            for start in (0, 1, 5, 2**62 + 7):
                order = list(replacement_positions(position, total, start))
                assert sorted(order) == [q for q in range(total) if q != position]
                assert order[0] == (position + 1 + start % (total - 1)) % total
    assert list(replacement_positions(0, 1, 3)) == []


def test_skip_counter_sums_processes() -> None:
    counter = SkipCounter()
    counter.add()
    counter.add(2)
    ds = _CountIn(counter)
    assert sorted(DataLoader(ds, batch_size=None, num_workers=2)) == [0, 1, 2, 3]
    assert counter.total() == 3 + 4  # 2 per worker, seen in the main process


class _CountIn(torch.utils.data.Dataset[int]):
    def __init__(self, counter: SkipCounter) -> None:
        self.counter = counter

    def __len__(self) -> int:
        return 4

    def __getitem__(self, i: int) -> int:
        self.counter.add()
        return i
