"""Shard format: manifest round trip, key/field rules, offset index byte ranges, atomic writes."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds

from mmsample.errors import ManifestError
from mmsample.sharding import ShardWriter, write_samples
from mmsample.shards.format import Manifest, check_field, check_key, read_index, write_index


def _samples(n: int) -> list[tuple[str, int, dict[str, bytes]]]:
    return [
        (f"key-{i}", i % 2, {"txt": f"text {i}".encode(), "bin": bytes([i]) * (700 * i)})
        for i in range(n)
    ]


def test_manifest_round_trip_and_counts(tmp_path: Path) -> None:
    m = write_samples(tmp_path, _samples(7), ["even", "odd"], samples_per_shard=3)
    loaded = Manifest.load(tmp_path)
    assert loaded == m
    assert [s.count for s in loaded.shards] == [3, 3, 1]
    assert [(s.first_id, s.last_id) for s in loaded.shards] == [(0, 2), (3, 5), (6, 6)]
    assert loaded.class_counts() == {"even": 4, "odd": 3}
    assert loaded.fields == ["bin", "txt"]
    assert [loaded.shard_of(i) for i in range(7)] == [0, 0, 0, 1, 1, 1, 2]
    with pytest.raises(KeyError):
        loaded.shard_of(7)


def test_index_byte_ranges_hold_exactly_one_sample(tmp_path: Path) -> None:
    samples = _samples(5)
    write_samples(tmp_path, samples, ["even", "odd"], samples_per_shard=5)
    raw = (tmp_path / "shard-000000.tar").read_bytes()
    index = read_index(tmp_path / "shard-000000.idx.npy")
    assert index[:, 0].tolist() == [0, 1, 2, 3, 4]
    assert index[0, 1] == 0 and all(index[1:, 1] == index[:-1, 2])
    for (sid, start, end), (key, label, fields) in zip(index, samples):
        with tarfile.open(fileobj=io.BytesIO(raw[start:end])) as tar:
            got = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]
        expect = {f"{key}.id": str(sid).encode(), f"{key}.cls": str(label).encode()}
        expect.update({f"{key}.{k}": v for k, v in fields.items()})
        assert got == expect


def test_plain_webdataset_reads_the_shards(tmp_path: Path) -> None:
    write_samples(tmp_path, _samples(6), ["even", "odd"], samples_per_shard=4)
    urls = [str(tmp_path / "shard-000000.tar"), str(tmp_path / "shard-000001.tar")]
    got = list(wds.WebDataset(urls, shardshuffle=False, empty_check=False))
    assert [s["__key__"] for s in got] == [f"key-{i}" for i in range(6)]
    assert [int(s["id"]) for s in got] == list(range(6))
    assert got[2]["txt"] == b"text 2"


def test_shards_are_deterministic_bytes(tmp_path: Path) -> None:
    write_samples(tmp_path / "a", _samples(4), ["even", "odd"], 4)
    write_samples(tmp_path / "b", _samples(4), ["even", "odd"], 4)
    for name in ("shard-000000.tar", "shard-000000.idx.npy"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_aborted_writer_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), ShardWriter(tmp_path / "shard-000000.tar") as w:
        w.write("a", 0, 0, {"txt": b"x"})
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("key", ["a.b", "../evil", "a/b", "", "sp ace", "x\x00"])
def test_unsafe_keys_are_refused(key: str, tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="not allowed"):
        check_key(key)
    with ShardWriter(tmp_path / "s.tar") as w, pytest.raises(ManifestError):
        w.write(key, 0, 0, {"txt": b"x"})


@pytest.mark.parametrize("field", ["id", "cls", "json", "MP4", "a.b.c", ".mp4", "a.", "../x"])
def test_bad_fields_are_refused(field: str) -> None:
    with pytest.raises(ManifestError, match="field name"):
        check_field(field)


def test_duplicate_key_in_shard_is_refused(tmp_path: Path) -> None:
    with ShardWriter(tmp_path / "s.tar") as w:
        w.write("a", 0, 0, {"txt": b"x"})
        with pytest.raises(ValueError, match="twice"):
            w.write("a", 1, 0, {"txt": b"y"})


def test_index_refuses_pickled_or_malformed_arrays(tmp_path: Path) -> None:
    bad = tmp_path / "bad.idx.npy"
    np.save(bad, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ManifestError, match="unreadable"):
        read_index(bad)
    np.save(bad, np.zeros((2, 2), dtype=np.int64))
    with pytest.raises(ManifestError, match=r"\[n, 3\]"):
        read_index(bad)
    write_index(bad, np.arange(6).reshape(2, 3))
    assert read_index(bad).tolist() == [[0, 1, 2], [3, 4, 5]]


def test_manifest_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="mmsample shard"):
        Manifest.load(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(ManifestError, match="not valid JSON"):
        Manifest.load(tmp_path)
    (tmp_path / "manifest.json").write_text('{"format": "other/9"}')
    with pytest.raises(ManifestError, match="format"):
        Manifest.load(tmp_path)
