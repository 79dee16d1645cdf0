"""Both readers on real shards of real mp4/wav/txt/npy: same tensors, lazy decoding, errors.
Plans and epochs are applied by the loader (`balanced_loader(reader, None, plan=...)`)."""

from __future__ import annotations

import functools
import hashlib
import pickle
import re
import shutil
import tarfile
import warnings
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from mmsample.batch import MultimodalBatch, collate
from mmsample.decoding import Array, Audio, Spec, Text, Video
from mmsample.decoding.decoder import SkippedSampleWarning
from mmsample.errors import SampleError
from mmsample.loader import BalancedLoader, balanced_loader
from mmsample.sharding import write_samples
from mmsample.shards import IndexedDataset, StreamedDataset
from mmsample.testing import TablePlan, tiny_sample_fields, write_tiny_dataset

N = 10  # samples in shards of 3: 4 shards
NO_WAV, NO_MP4 = 3, 5


def _specs() -> dict[str, Spec]:
    # Random frame choice and random audio crops: what must agree between the readers.
    return {
        "video": Video(frames=4, fps=10.0, random_frames=2),
        "audio": Audio(field="wav", seconds=0.5, backend="wave"),
        "text": Text(max_length=16, byte_ids=True),
        "feat": Array(),
    }


FULL = 0b1111


# two items of id 2 with different masks, id 7 dropped, id 4 text-only, id 6 video twice
PLAN = TablePlan({2: (FULL, 0b0001, 0b0110), 7: (), 4: (0b0100,), 6: (0b0001, 0b0011)}, full=FULL)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("readers")
    write_tiny_dataset(path, n=N, samples_per_shard=3, missing={"wav": {NO_WAV}, "mp4": {NO_MP4}})
    # Load the decoder libraries once here, so forked DataLoader workers inherit them (speed).
    _specs()["video"].decode(tiny_sample_fields(0, ["mp4"])["mp4"])
    return path


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    return isinstance(a, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)


def _loader(ds: StreamedDataset | IndexedDataset, **kwargs: Any) -> BalancedLoader:
    """The loader over a reader without a method (one item per batch unless told)."""
    kwargs.setdefault("batch_size", 1)
    return balanced_loader(ds, None, **kwargs)


def _row(batch: MultimodalBatch, r: int, names: Sequence[str]) -> dict[str, Any]:
    """Row r of a loader's batch as a sample dict: id, mask, label, key and the tensors of the
    modalities that row carries."""
    out: dict[str, Any] = {
        "id": int(batch.ids[r]),
        "mask": int(batch.mask[r]),
        "label": int(batch.labels[r]),
        "key": batch.keys[r],
    }
    for name in names:
        if name in batch and r in batch.rows(name).tolist():
            at = batch.rows(name).tolist().index(r)
            data = batch[name]
            out[name] = {k: v[at] for k, v in data.items()} if isinstance(data, dict) else data[at]
    return out


def _samples(loader: BalancedLoader, names: Sequence[str]) -> list[dict[str, Any]]:
    return [_row(b, r, names) for b in loader for r in range(len(b))]


def _key(item: dict[str, Any]) -> tuple[int, int]:
    return int(item["id"]), int(item["mask"])


def _planned(i: int) -> list[tuple[int, int]]:
    """(item index, planned mask) of id i's items in PLAN."""
    return list(enumerate(PLAN.items(i)))


def test_streamed_and_indexed_give_identical_tensors(root: Path) -> None:
    specs = _specs()
    names = list(specs)
    streamed = StreamedDataset(root, specs, shuffle=4, seed=11)
    indexed = IndexedDataset(root, specs, seed=11)
    # the plan as worked out by hand, with the mask cut to the fields each sample has
    expected = set()
    for i in range(N):
        have = FULL & ~(0b0010 if i == NO_WAV else 0) & ~(0b0001 if i == NO_MP4 else 0)
        expected |= {(i, m & have) for m in PLAN.items(i)}
    by_epoch = []
    for epoch in (0, 1):
        workers = 2 if epoch == 0 else 0  # in DataLoader workers, then in this process
        from_loaders = []
        for reader in (streamed, indexed):
            loader = _loader(reader, plan=PLAN, num_workers=workers)
            loader.set_epoch(epoch)
            items = _samples(loader, names)
            assert len(items) == len(loader) == N - 1 + 2 + 1
            from_loaders.append({_key(s): s for s in items})
        from_stream, from_index = from_loaders
        assert set(from_stream) == set(from_index) == expected
        assert len(from_index) == N - 1 + 2 + 1  # every item distinct
        for key, a in from_stream.items():
            b = from_index[key]
            assert (a["label"], a["key"]) == (b["label"], b["key"])
            present = [n for j, n in enumerate(names) if key[1] >> j & 1]
            assert [n for n in names if n in a] == present == [n for n in names if n in b]
            for n in present:
                assert _same(a[n], b[n]), (key, n)
        # each item, decoded by the readers themselves: the same sample dict (shard included)
        # and the same tensors as the loaders'
        for i in range(N):
            row = int(np.flatnonzero(streamed.table.ids == i)[0])
            for k, m in _planned(i):
                a = streamed.decode(streamed.read_row(row), m, epoch=epoch, item=k)
                b = indexed.get(i, m, k, epoch=epoch)
                assert (a["label"], a["key"], a["shard"]) == (b["label"], b["key"], b["shard"])
                assert (a["id"], a["mask"]) == (b["id"], b["mask"]) and _key(a) in expected
                for n in names:
                    assert (n in a) == (n in b) == (n in from_stream[_key(a)])
                    if n in a:
                        assert _same(a[n], b[n]) and _same(a[n], from_stream[_key(a)][n])
        by_epoch.append(from_index)
    first, second = by_epoch
    # the random draws are real: another epoch picks other frames / crops for some items
    changed = [
        k for k in first if "video" in first[k] and not _same(first[k]["video"], second[k]["video"])
    ]
    assert changed
    # and get(id, epoch=e) is item 0 of that id in epoch e
    assert _same(indexed.get(8, epoch=1)["video"], second[(8, FULL)]["video"])
    assert _same(indexed.get(8)["video"], first[(8, FULL)]["video"])


class Counting:
    """A real Spec that delegates to another and records the digest of every payload decoded."""

    def __init__(self, inner: Spec) -> None:
        self.inner = inner
        self.field = inner.field
        self.calls: Counter[bytes] = Counter()

    def decode(self, data: bytes, *, generator: torch.Generator | None = None) -> Any:
        self.calls[hashlib.sha1(data).digest()] += 1
        return self.inner.decode(data, generator=generator)


def _calls_per_id(spec: Counting, field: str) -> dict[int, int]:
    """Decode calls per sample id, matching the recorded payload digests to the payloads."""
    digests = {hashlib.sha1(tiny_sample_fields(i, [field])[field]).digest(): i for i in range(N)}
    assert set(spec.calls) <= set(digests)
    return {digests[d]: n for d, n in spec.calls.items()}


@pytest.mark.parametrize("reader", ["streamed", "indexed"])
def test_only_needed_modalities_are_decoded(root: Path, reader: str) -> None:
    specs = {name: Counting(spec) for name, spec in _specs().items()}
    ds: Any = StreamedDataset(root, specs) if reader == "streamed" else IndexedDataset(root, specs)
    items = _samples(_loader(ds, plan=PLAN, batch_size=3), list(specs))  # decoded in this process
    assert len(items) == N - 1 + 2 + 1
    # Worked by hand from PLAN: id 2 -> masks 1111, 0001, 0110; id 4 -> 0100; id 6 -> 0001,
    # 0011; id 7 dropped; others 1111; id 3 has no wav, id 5 no mp4.
    assert _calls_per_id(specs["video"], "mp4") == {0: 1, 1: 1, 2: 2, 3: 1, 6: 2, 8: 1, 9: 1}
    assert _calls_per_id(specs["audio"], "wav") == {0: 1, 1: 1, 2: 2, 5: 1, 6: 1, 8: 1, 9: 1}
    assert _calls_per_id(specs["text"], "txt") == {0: 1, 1: 1, 2: 2, 3: 1, 4: 1, 5: 1, 8: 1, 9: 1}
    assert _calls_per_id(specs["feat"], "npy") == {0: 1, 1: 1, 2: 1, 3: 1, 5: 1, 8: 1, 9: 1}
    # exactly the decoded modalities are in each item
    assert all(
        set(specs) & set(item) == {n for j, n in enumerate(specs) if item["mask"] >> j & 1}
        for item in items
    )


def test_unrequested_modalities_never_reach_a_decoder(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mmsample.decoding.backends import get_backend

    backend = type(get_backend(None))
    seen = Counter[str]()
    for method in ("audio", "video_frames"):
        real = getattr(backend, method)

        def counted(
            self: Any, *args: Any, _real: Any = real, _name: str = method, **kw: Any
        ) -> Any:
            seen[_name] += 1
            return _real(self, *args, **kw)

        monkeypatch.setattr(backend, method, counted)
    # the mp4 files have an audio track and there are wav files: only the video is asked for
    video = {"video": Video(frames=2, fps=10.0)}
    list(StreamedDataset(root, video))
    ds = IndexedDataset(root, video)
    [ds[i] for i in range(len(ds))]
    assert seen == Counter({"video_frames": 2 * (N - 1)})


def _copy(root: Path, dest: Path) -> Path:
    shutil.copytree(root, dest)
    return dest


def _member_offset(tar_path: Path, member: str) -> int:
    with tarfile.open(tar_path) as tar:
        return next(m.offset for m in tar.getmembers() if m.name == member)


def _both_raise(
    root: Path, match: str, sample_id: int, specs: dict[str, Spec] | None = None
) -> None:
    specs = specs or _specs()
    with pytest.raises(SampleError, match=match):
        list(StreamedDataset(root, specs, shuffle=3))
    ds = IndexedDataset(root, specs)
    with pytest.raises(SampleError, match=match):
        ds.get(sample_id)
    with pytest.raises(SampleError, match=match):
        [ds[i] for i in range(len(ds))]


def test_corrupt_header_is_named_by_both_readers(root: Path, tmp_path: Path) -> None:
    bad = _copy(root, tmp_path / "ds")
    shard = bad / "shard-000001.tar"  # ids 3, 4, 5
    data = bytearray(shard.read_bytes())
    at = _member_offset(shard, "s000004.npy")
    data[at + 124 : at + 130] = b"zzzzzz"
    shard.write_bytes(bytes(data))
    _both_raise(bad, r"shard-000001\.tar:s000004: corrupt tar header", 4)


def test_truncated_shard_is_named_by_both_readers(root: Path, tmp_path: Path) -> None:
    bad = _copy(root, tmp_path / "ds")
    shard = bad / "shard-000002.tar"  # ids 6, 7, 8
    at = _member_offset(shard, "s000007.mp4")
    shard.write_bytes(shard.read_bytes()[: at + 512 + 300])
    _both_raise(bad, r"shard-000002\.tar:s000007: .*truncated", 7)


@pytest.fixture(scope="module")
def garbage(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Five samples with a video and a caption; sample c2's mp4 payload is garbage."""
    path = tmp_path_factory.mktemp("garbage")

    def samples() -> Any:
        for i in range(5):
            fields = tiny_sample_fields(i, ("mp4", "txt"))
            if i == 2:
                fields["mp4"] = b"\x00\x00\x00\x18ftypmp42 not a real movie" * 20
            yield f"c{i}", i % 2, fields

    write_samples(path, samples(), ["a", "b"], samples_per_shard=2)
    return path


def test_undecodable_clip_is_named_by_both_readers(garbage: Path) -> None:
    root = garbage
    specs: dict[str, Spec] = {"video": Video(frames=2, fps=10.0), "text": Text(byte_ids=True)}
    _both_raise(
        root, r"shard-000001\.tar:c2: cannot decode modality 'video' from field 'mp4'", 2, specs
    )
    # Through a DataLoader worker too (one case only: torch takes ~5 s per worker to shut
    # down a loader whose worker raised).
    loader = DataLoader(StreamedDataset(root, specs), batch_size=None, num_workers=1)
    with pytest.raises(SampleError, match=r"shard-000001\.tar:c2: cannot decode modality"):
        list(loader)
    # The same clip is never opened when the plan leaves the video out.
    text_only = TablePlan({i: (0b10,) for i in range(5)}, full=FULL)
    for ds in (StreamedDataset(root, specs), IndexedDataset(root, specs)):
        ids = [i for b in _loader(ds, plan=text_only, batch_size=2) for i in b.ids.tolist()]
        assert sorted(ids) == list(range(5))


def test_skip_replaces_counts_and_reports(garbage: Path) -> None:
    root = garbage
    specs: dict[str, Spec] = {"video": Video(frames=2, fps=10.0), "text": Text(byte_ids=True)}
    streamed = StreamedDataset(root, specs, on_error="skip", shuffle_shards=False)
    with pytest.warns(SkippedSampleWarning) as caught:
        ids = [s["id"] for s in streamed]
    (warning,) = caught
    # c2 is replaced by another item of the epoch, named in the warning
    r = ids[2]
    assert ids[:2] + ids[3:] == [0, 1, 3, 4] and r in (0, 1, 3, 4) and streamed.skipped == 1
    assert re.search(
        rf"shard-000001\.tar:c2: cannot decode .* replaced by epoch item {r} \(shard-00000"
        rf"{r // 2}\.tar:c{r}\)",
        str(warning.message),
    )
    indexed = IndexedDataset(root, specs, on_error="skip")
    with pytest.warns(SkippedSampleWarning, match=rf"c2.*item {r} \(shard-00000{r // 2}\.tar:c{r}"):
        assert indexed[2]["id"] == r  # the same epoch order, so the same replacement
    assert indexed.skipped == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert [indexed[i]["id"] for i in (0, 1, 3, 4)] == [0, 1, 3, 4]


def test_pickle_members_never_run(tmp_path: Path) -> None:
    flag = tmp_path / "pwned"

    class Trap:
        def __reduce__(self) -> tuple[Any, tuple[str, str]]:
            return (open, (str(flag), "w"))

    payload = pickle.dumps(Trap())
    samples = [(f"p{i}", 0, {"txt": b"hi", "pyd": payload, "pickle": payload}) for i in range(3)]
    write_samples(tmp_path / "ds", samples, ["c"], samples_per_shard=2)
    text = {"text": Text(byte_ids=True)}
    assert len(list(StreamedDataset(tmp_path / "ds", text))) == 3
    ds = IndexedDataset(tmp_path / "ds", text)
    assert [ds[i]["id"] for i in range(3)] == [0, 1, 2]
    for field_ in ("pyd", "pickle"):
        for cls in (StreamedDataset, IndexedDataset):
            with pytest.raises(ValueError, match="never unpickles"):
                cls(tmp_path / "ds", {"x": Array(field=field_)})
    assert not flag.exists()


def test_requested_field_must_exist(root: Path) -> None:
    for cls in (StreamedDataset, IndexedDataset):
        with pytest.raises(ValueError, match=r"reads field 'flac'.*fields are \['mp4', 'npy'"):
            cls(root, {"audio": Audio(field="flac")})
        with pytest.raises(ValueError, match="must be a non-empty mapping"):
            cls(root, {})
        with pytest.raises(ValueError, match="'label' must be a non-empty string other than"):
            cls(root, {"label": Text(byte_ids=True)})


def _check_batches(batches: list[MultimodalBatch], names: Sequence[str]) -> torch.Tensor:
    """Each modality's rows are exactly the rows whose mask carries it; video frames have
    their shape. Returns the batches' ids."""
    for b in batches:
        for j, name in enumerate(names):
            carried = (b.mask >> j & 1).bool()
            if name in b:
                assert b.rows(name).tolist() == carried.nonzero().flatten().tolist()
            else:
                assert not carried.any()
        if "video" in b:
            frames = b["video"]
            assert isinstance(frames, torch.Tensor)
            assert frames.shape[1:] == (2, 3, 32, 32) and frames.dtype == torch.uint8
            dense = b.dense("video")
            assert isinstance(dense, torch.Tensor) and dense.shape[0] == len(b)
    return torch.cat([b.ids for b in batches])


@pytest.mark.parametrize("reader", ["streamed", "indexed"])
def test_collate_into_multimodal_batches(root: Path, reader: str) -> None:
    specs = _specs()
    names = list(specs)
    ds: Any = StreamedDataset(root, specs) if reader == "streamed" else IndexedDataset(root, specs)
    # the loader forms MultimodalBatches of the plan's items
    batches: list[MultimodalBatch] = list(_loader(ds, plan=PLAN, batch_size=4))
    assert all(isinstance(b, MultimodalBatch) for b in batches)
    ids = _check_batches(batches, names)
    assert sorted(ids.tolist()) == sorted([i for i in range(N) if i != 7] + [2, 2, 6])
    # `collate` under a plain DataLoader over the reader alone (every sample once)
    loader = DataLoader(ds, batch_size=4, collate_fn=functools.partial(collate, names=names))
    ids = _check_batches(list(loader), names)
    assert sorted(ids.tolist()) == list(range(N))


def test_plan_given_as_a_dict_names_the_fix(root: Path) -> None:
    """Issue 7 item 14: a dict has an `items` method, so it passed as a Plan and failed inside
    the reader with "dict.items() takes no arguments". The loader applies plans now."""
    from mmsample.plan import TablePlan

    table = {2: (FULL, 0b0001), 7: ()}
    for cls in (StreamedDataset, IndexedDataset):
        for plan in (table, dict(table), {}):
            with pytest.raises(ValueError) as info:
                _loader(cls(root, _specs()), plan=plan)
            message = str(info.value)
            assert message.startswith("The 'plan' parameter of balanced_loader must be a plan")
            assert "mmsample.plan.TablePlan(table, full=" in message
        loader = _loader(cls(root, _specs()), plan=lambda epoch: table)
        with pytest.raises(ValueError, match=r"'plan' callable returned a dict for epoch 0.*Table"):
            next(iter(loader))
        with pytest.raises(ValueError, match=r"'plan' callable returned a dict for epoch 3.*Table"):
            loader.set_epoch(3)
    # the fix works: id 2 twice, id 7 dropped, every other id once
    expected = sorted([i for i in range(N) if i != 7] + [2])
    fixed = TablePlan(table, full=FULL)
    for ds in (StreamedDataset(root, _specs()), IndexedDataset(root, _specs())):
        loader = _loader(ds, plan=fixed, batch_size=4)
        assert sorted(i for b in loader for i in b.ids.tolist()) == expected


def test_table_plan_checks_its_table() -> None:
    from mmsample.plan import TablePlan

    with pytest.raises(ValueError, match=r"table\[3\] must be a tuple of item masks, e.g. \(5,\)"):
        TablePlan({3: 5})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match=r"'table' parameter of TablePlan must map int ids"):
        TablePlan({"a": (1,)})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match=r"ints >= 0 .* got 1: \(-1,\)"):
        TablePlan({1: (-1,)})
    with pytest.raises(ValueError, match=r"'full' parameter of TablePlan must be an int >= 1"):
        TablePlan({}, full=0)
    assert TablePlan({1: [3, 1]}, full=7).items(1) == (3, 1)
    assert TablePlan({1: [3, 1]}, full=7).items(0) == (7,)
