"""Offset indexes from strangers (issue 7 items 12, 14, 18, 19): an index that does not match its
manifest or tar is refused when a dataset opens, with the shard, the key and the rebuild named;
memory grows with the number of samples, never with an id value; the index keeps each sample's
key so errors name it, and indexes written before keys existed still read; `mmsample index` on
empty tars and `mmsample inspect` on a wrong path say what is wrong."""

from __future__ import annotations

import re
import tarfile
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from mmsample.cli import main
from mmsample.decoding import Array, Text
from mmsample.errors import SampleError
from mmsample.sharding import ShardWriter, verify_dataset
from mmsample.shards import IndexedDataset, StreamedDataset
from mmsample.shards.format import Manifest, ShardInfo
from mmsample.shards.offsets import load_index, read_index, write_index
from mmsample.testing import tiny_sample_fields, write_tiny_dataset

MODS = {"text": Text(byte_ids=True, max_length=8)}
REBUILD = "this index does not match its tar; rebuild it with `mmsample index`"
GB = 1 << 30


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """8 samples s000000..s000007 (ids 0-7) in two shards of 4, txt only."""
    write_tiny_dataset(tmp_path / "ds", n=8, fields=("txt",), samples_per_shard=4)
    return tmp_path / "ds"


def edit_index(root: Path, shard: int, edit: Callable[[np.ndarray], None]) -> None:
    path = root / f"shard-{shard:06d}.idx.npy"
    index = load_index(path)
    rows = index.rows.copy()
    edit(rows)
    write_index(path, rows, index.key_texts())


def test_the_index_keeps_every_key_in_tar_order(root: Path) -> None:
    for shard in range(2):
        index = load_index(root / f"shard-{shard:06d}.idx.npy")
        assert index.keys is not None and index.splits is None
        assert index.key_texts() == [f"s{i:06d}" for i in range(4 * shard, 4 * shard + 4)]
        assert index.keys.dtype == np.dtype("S7")  # one byte a key character
        with tarfile.open(root / f"shard-{shard:06d}.tar") as tar:
            ids = [int(tar.extractfile(m).read()) for m in tar if m.name.endswith(".id")]  # type: ignore[union-attr]
            offsets = [m.offset for m in tar if m.name.endswith(".id")]  # a key's first member
        assert index.rows[:, 0].tolist() == ids
        assert index.rows[:, 1].tolist() == offsets


# (shard, row, edit, what the message says): each edit breaks one rule of the kind
BROKEN = {
    "id 2,000,000,000 in an 8-sample dataset": (
        1,
        2,
        lambda r: r.__setitem__((2, 0), 2_000_000_000),
        "id 2000000000 is outside the dataset's id space [0, 8)",
    ),
    "end offset 5 GB past the tar": (
        0,
        3,
        lambda r: r.__setitem__((3, 2), r[3, 2] + 5 * GB),
        "end past the tar's",
    ),
    "start 5 GB past the tar": (
        1,
        0,
        lambda r: r.__setitem__((0, slice(1, 3)), [5 * GB, 5 * GB + 1024]),
        "end past the tar's",
    ),
    "negative id": (0, 1, lambda r: r.__setitem__((1, 0), -3), "id -3 is outside"),
    "id of another shard": (
        0,
        0,
        lambda r: r.__setitem__((0, 0), 6),
        "id 6 is outside the shard's id range [0, 3]",
    ),
    "largest int64 end": (
        1,
        3,
        lambda r: r.__setitem__((3, 2), np.iinfo(np.int64).max),
        "are not 512-byte tar blocks",
    ),
    "range not on tar blocks": (0, 2, lambda r: r.__setitem__((2, 1), r[2, 1] + 7), "512-byte"),
    "empty range": (0, 2, lambda r: r.__setitem__((2, 2), r[2, 1]), "an empty range"),
    "rows out of tar order": (
        1,
        1,
        lambda r: r.__setitem__(slice(0, 2), r[[1, 0]]),
        "overlap or precede the previous sample's",
    ),
    "overlapping ranges": (
        0,
        2,
        lambda r: r.__setitem__((2, 1), r[1, 1]),
        "overlap or precede",
    ),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
@pytest.mark.parametrize("reader", [IndexedDataset, StreamedDataset])
def test_an_index_that_does_not_match_is_refused_on_opening(
    root: Path, case: str, reader: type
) -> None:
    shard, row, edit, says = BROKEN[case]
    edit_index(root, shard, edit)
    tracemalloc.start()
    try:
        with pytest.raises(SampleError) as caught:
            reader(root, MODS)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    err = caught.value
    assert err.shard == f"shard-{shard:06d}.tar"
    assert err.key == f"s{4 * shard + row:06d}"
    assert says in str(err) and REBUILD in str(err)
    assert f"row {row}:" in str(err)
    assert peak < 8 << 20  # nothing sized by an id or an offset


@pytest.mark.parametrize("reader", [IndexedDataset, StreamedDataset])
def test_an_id_given_twice_in_one_shard_is_refused(root: Path, reader: type) -> None:
    edit_index(root, 0, lambda r: r.__setitem__((1, 0), 0))
    with pytest.raises(SampleError) as caught:
        reader(root, MODS)
    assert (caught.value.shard, caught.value.key) == ("shard-000000.tar", "s000001")
    assert "id 0 is given twice: by shard-000000.tar row 0 (key 's000000') and by row 1" in str(
        caught.value
    )
    assert REBUILD in str(caught.value)


def test_a_row_count_that_does_not_match_the_manifest_is_refused(root: Path) -> None:
    path = root / "shard-000001.idx.npy"
    index = load_index(path)
    keys = index.key_texts()
    assert keys is not None
    write_index(path, index.rows[:3], keys[:3])
    with pytest.raises(SampleError, match="has 3 rows but the manifest counts 4 samples"):
        IndexedDataset(root, MODS)


def test_a_huge_valid_id_costs_memory_by_samples_not_by_id(tmp_path: Path) -> None:
    """A consistent dataset whose ids are rows of a 2-billion-row table: opening it and reading
    its samples by id stays within a few MB (a dense id map would need 14.9 GiB)."""
    ids = [0, 5, 1_999_999_999, 2_000_000_000]
    with ShardWriter(tmp_path / "shard-000000.tar", ["a", "b"]) as writer:
        for i in ids:
            writer.write(f"k{i}", i, i % 2, tiny_sample_fields(i % 7, ["npy"]))
    info = ShardInfo(
        "shard-000000.tar",
        4,
        0,
        2_000_000_000,
        (tmp_path / "shard-000000.tar").stat().st_size,
        "shard-000000.idx.npy",
        {"a": 2, "b": 2},
    )
    Manifest(["a", "b"], ["npy"], [info], 2_000_000_001, 1000, skipped=2_000_000_001 - 4).save(
        tmp_path
    )
    tracemalloc.start()
    try:
        ds = IndexedDataset(tmp_path, {"feat": Array()})
        got = [ds.get(i) for i in reversed(ids)]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20
    assert [(g["id"], g["key"], g["label"]) for g in got] == [
        (i, f"k{i}", i % 2) for i in reversed(ids)
    ]
    assert [ds[j]["id"] for j in range(len(ds))] == ids
    for absent in (1, 2_000_000_001, 1_000_000_000, -1):
        with pytest.raises(KeyError, match=f"sample id {absent} is in no shard"):
            ds.get(absent)


def test_errors_name_the_key_the_index_gives(root: Path) -> None:
    # row 1 of shard 0 now starts one block late, inside its own first member's payload: the
    # tar holds no header there, so only the index can name the sample
    edit_index(root, 0, lambda r: r.__setitem__((1, 1), r[1, 1] + 512))
    ds = IndexedDataset(root, MODS)
    with pytest.raises(SampleError, match=r"shard-000000\.tar:s000001: corrupt tar header"):
        ds.get(1)
    assert ds.get(2)["key"] == "s000002"
    # an index whose key disagrees with the tar is refused, naming what the index says
    path = root / "shard-000001.idx.npy"
    index = load_index(path)
    keys = index.key_texts()
    assert keys is not None
    keys[2] = "elsewhere"
    write_index(path, index.rows, keys)
    ds = IndexedDataset(root, MODS)
    with pytest.raises(SampleError) as caught:
        ds.get(6)
    assert caught.value.key == "elsewhere"
    assert "hold sample 's000006' but the offset index says 'elsewhere'" in str(caught.value)
    assert REBUILD in str(caught.value)
    # and `--verify` reports it
    problems = [str(p) for p in verify_dataset(root, webdataset=False)]
    assert "shard-000001.tar:s000006: index row 2 gives key 'elsewhere', the tar 's000006'" in (
        problems
    )


def test_indexes_written_without_keys_still_read(root: Path) -> None:
    expected = [IndexedDataset(root, MODS).get(i)["text"]["input_ids"].tolist() for i in range(8)]
    for shard in range(2):
        path = root / f"shard-{shard:06d}.idx.npy"
        rows = read_index(path)
        np.save(path, rows, allow_pickle=False)  # the keyless int64 [n, 3] layout
        assert load_index(path).keys is None and load_index(path).splits is None
    for reader in (IndexedDataset, StreamedDataset):
        ds = reader(root, MODS)
        assert ds.table.keys is None
        got = sorted((s["id"], s["key"], s["text"]["input_ids"].tolist()) for s in iter_all(ds))
        assert got == [(i, f"s{i:06d}", expected[i]) for i in range(8)]
    edit_index(root, 1, lambda r: r.__setitem__((0, 0), 2_000_000_000))
    with pytest.raises(SampleError, match=re.escape("row 0: id 2000000000 is outside")):
        IndexedDataset(root, MODS)


def iter_all(ds: IndexedDataset | StreamedDataset) -> list[dict]:
    if isinstance(ds, IndexedDataset):
        return [ds[i] for i in range(len(ds))]
    return list(ds)


# ------------------------------------------------------------- `mmsample index` on empty tars


def empty_tar(path: Path, zero_bytes: bool) -> None:
    if zero_bytes:
        path.write_bytes(b"")
    else:
        with tarfile.open(path, "w"):
            pass


@pytest.mark.parametrize("zero_bytes", [False, True])
def test_index_of_only_empty_tars_says_no_samples(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], zero_bytes: bool
) -> None:
    empty_tar(tmp_path / "shard-000000.tar", zero_bytes)
    assert main(["index", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert f"no samples in {tmp_path}" in err and "shard-000000.tar" in err
    assert "max()" not in err
    assert not (tmp_path / "manifest.json").exists()


@pytest.mark.parametrize("zero_bytes", [False, True])
def test_an_empty_tar_next_to_good_ones_is_fine(
    root: Path, capsys: pytest.CaptureFixture[str], zero_bytes: bool
) -> None:
    (root / "manifest.json").unlink()
    empty_tar(root / "shard-000002.tar", zero_bytes)
    empty_tar(root / "aaa.tar", zero_bytes)  # sorts first
    classes = root.parent / "classes.txt"
    classes.write_text("class0\nclass1\nclass2\n")
    assert main(["index", str(root), "--classes", str(classes), "--verify"]) == 0
    assert "verify: OK" in capsys.readouterr().out
    manifest = Manifest.load(root)
    assert [s.name for s in manifest.shards] == ["shard-000000.tar", "shard-000001.tar"]
    assert manifest.num_samples == 8 and manifest.num_rows == 8
    assert sorted(s["id"] for s in StreamedDataset(root, MODS)) == list(range(8))


# ------------------------------------------------------------- `mmsample inspect` on a wrong path


def test_inspect_on_a_tar_or_a_missing_path_says_what_to_give(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tar = root / "shard-000000.tar"
    assert main(["inspect", str(tar)]) == 1
    err = capsys.readouterr().err
    assert f"{tar} is a shard, not a dataset: give the directory that holds it" in err
    assert str(root) in err and "decode" not in err
    missing = root / "nowhere"
    assert main(["inspect", str(missing)]) == 1
    err = capsys.readouterr().err
    assert f"{missing} does not exist" in err and "no manifest.json" not in err
    (root / "notes.bin").write_bytes(b"\xff\xfe\x00binary")
    assert main(["inspect", str(root / "notes.bin")]) == 1
    assert "is not a manifest.json: not valid JSON" in capsys.readouterr().err
    empty = root / "empty"
    empty.mkdir()
    assert main(["inspect", str(empty)]) == 1
    assert f"no manifest.json in {empty}" in capsys.readouterr().err
    assert main(["inspect", str(root)]) == 0


def test_an_index_with_an_unknown_column_is_refused_in_one_sentence(tmp_path: Path) -> None:
    from mmsample.errors import ManifestError

    data = np.zeros(2, dtype=[("id", "<i8"), ("start", "<i8"), ("end", "<i8"), ("key", "S2"),
                              ("extra", "<i8")])  # fmt: skip
    np.save(tmp_path / "x.idx.npy", data, allow_pickle=False)
    with pytest.raises(ManifestError) as info:
        load_index(tmp_path / "x.idx.npy")
    assert str(info.value) == (
        f"{tmp_path / 'x.idx.npy'}: offset index must hold int64 id, start, end, an ASCII key "
        f"(and a unicode split) column and no others; got {data.dtype} (2,)"
    )
