"""Tar I/O: raw samples from real tar files, checked against the standard library's tarfile."""

from __future__ import annotations

import io
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmsample.errors import SampleError
from mmsample.sharding import ShardWriter, write_samples
from mmsample.shards.format import read_index
from mmsample.shards.shard_table import ShardTable
from mmsample.shards.tar_header import split_name
from mmsample.shards.tar_samples import iter_samples, parse_sample


def _payloads() -> list[tuple[str, int, int, dict[str, bytes]]]:
    rng = np.random.default_rng(7)
    sizes = [0, 1, 511, 512, 513, 1024, 5000]
    out = []
    for n, size in enumerate(sizes):
        fields = {"bin": rng.bytes(size), "txt": f"caption {n}".encode()}
        out.append((f"k{n:03d}", 10 + 3 * n, n % 4, fields))
    return out


def _write(path: Path, samples: list[tuple[str, int, int, dict[str, bytes]]]) -> np.ndarray:
    with ShardWriter(path) as w:
        for key, sid, label, fields in samples:
            w.write(key, sid, label, fields)
    return read_index(path.with_name(path.name.replace(".tar", ".idx.npy")))


def _tar_bytes(members: list[tuple[str, bytes]], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for name, payload in members:
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return buf.getvalue()


def test_split_name_matches_webdataset_grouping() -> None:
    assert split_name("s01.mp4") == ("s01", "mp4")
    assert split_name("dir/s01.seg.npy") == ("dir/s01", "seg.npy")
    assert split_name("noext") is None


def test_stream_and_range_parse_round_trip(tmp_path: Path) -> None:
    samples = _payloads()
    rows = _write(tmp_path / "a.tar", samples)
    with open(tmp_path / "a.tar", "rb") as f:
        got = list(iter_samples(f, "a.tar"))
    assert [g["key"] for g in got] == [s[0] for s in samples]
    for g, (_, sid, label, fields), row in zip(got, samples, rows):
        assert (g["id"], g["label"], g["fields"]) == (sid, label, fields)
        assert g["shard"] == "a.tar"
        assert [sid, g["start"], g["end"]] == row.tolist()
    data = (tmp_path / "a.tar").read_bytes()
    for (key, sid, label, fields), (rid, start, end) in zip(samples, rows):
        raw = parse_sample(data[start:end], "a.tar", expect_id=int(rid), at=int(start))
        assert (raw["key"], raw["id"], raw["label"], raw["fields"]) == (key, sid, label, fields)


@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT])
def test_agrees_with_tarfile_on_foreign_tars(fmt: int) -> None:
    key = "k" * (150 if fmt != tarfile.USTAR_FORMAT else 90)
    members = [
        (f"{key}.id", b"5"),
        (f"{key}.cls", b"2"),
        (f"{key}.wav", b"\x01" * 700),
        ("x1.id", b"6"),
        ("x1.cls", b"0"),
        ("x1.txt", "héllo".encode()),
    ]
    data = _tar_bytes(members, fmt)
    # Oracle: what tarfile reads from the same bytes.
    with tarfile.open(fileobj=io.BytesIO(data), mode="r") as tar:
        expected = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]
    got = list(iter_samples(io.BytesIO(data), "f.tar"))
    flat = {f"{g['key']}.{ext}": payload for g in got for ext, payload in g["fields"].items()} | {
        f"{g['key']}.{m}": str(g[f]).encode()
        for g in got
        for m, f in (("id", "id"), ("cls", "label"))
    }
    assert flat == expected
    assert [g["id"] for g in got] == [5, 6]
    # Each reported byte range parses on its own into the same sample.
    for g in got:
        raw = parse_sample(data[g["start"] : g["end"]], "f.tar", expect_id=g["id"])
        assert raw["fields"] == g["fields"]


def test_directories_and_links_are_not_members() -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        d = tarfile.TarInfo("sub")
        d.type = tarfile.DIRTYPE
        tar.addfile(d)
        for name, payload in (("sub/a.id", b"0"), ("sub/a.cls", b"1"), ("sub/a.txt", b"t")):
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
        link = tarfile.TarInfo("sub/a.lnk")
        link.type = tarfile.SYMTYPE
        link.linkname = "/etc/passwd"
        tar.addfile(link)
    (got,) = list(iter_samples(io.BytesIO(buf.getvalue()), "d.tar"))
    assert got["key"] == "sub/a" and got["fields"] == {"txt": b"t"}


def _header_offset(data: bytes, member: str) -> int:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r") as tar:
        return next(m.offset for m in tar.getmembers() if m.name == member)


def test_corrupt_header_names_shard_and_key(tmp_path: Path) -> None:
    samples = _payloads()
    rows = _write(tmp_path / "a.tar", samples)
    data = bytearray((tmp_path / "a.tar").read_bytes())
    at = _header_offset(bytes(data), "k003.bin")
    data[at + 124 : at + 130] = b"9z9z9z"  # garble the size field
    with pytest.raises(SampleError, match=r"a\.tar:k003: corrupt tar header") as err:
        list(iter_samples(io.BytesIO(bytes(data)), "a.tar"))
    assert (err.value.shard, err.value.key) == ("a.tar", "k003")
    _, start, end = rows[3]
    with pytest.raises(SampleError, match=r"a\.tar:k003: corrupt tar header"):
        parse_sample(bytes(data[start:end]), "a.tar", at=int(start))
    # tarfile's stream mode ends the archive silently at such a header: why we parse by hand.
    with tarfile.open(fileobj=io.BytesIO(bytes(data)), mode="r|") as tar:
        names = [m.name for m in tar]
    assert "k006.txt" not in names


def test_truncated_shard_names_shard_and_key(tmp_path: Path) -> None:
    samples = _payloads()
    rows = _write(tmp_path / "a.tar", samples)
    data = (tmp_path / "a.tar").read_bytes()
    _, start, end = rows[5]
    cut = data[: int(start) + 512 * 5 + 100]  # inside k005.bin's payload
    with pytest.raises(SampleError, match=r"a\.tar:k005: .*truncated") as err:
        list(iter_samples(io.BytesIO(cut), "a.tar"))
    assert err.value.key == "k005"
    with pytest.raises(SampleError, match=r"a\.tar:k005: .*truncated"):
        parse_sample(cut[start:end], "a.tar")
    # Cut exactly after the last sample: no end-of-archive marker.
    with pytest.raises(SampleError, match="without an end-of-archive marker"):
        list(iter_samples(io.BytesIO(data[: int(rows[-1][2])]), "a.tar"))
    # Through the table (os.pread of the indexed range of a truncated file).
    (tmp_path / "a.tar").write_bytes(cut)
    table = _table(tmp_path, "a.tar", samples, size=len(data))  # the manifest: the whole tar
    with pytest.raises(SampleError, match=r"a\.tar:k005: the shard is truncated"):
        table.read(5)
    assert table.read(4)["key"] == "k004"


def _table(
    root: Path, name: str, samples: list[tuple[str, int, int, dict[str, bytes]]], size: int
) -> ShardTable:
    from mmsample.shards.format import Manifest, ShardInfo

    index = name.replace(".tar", ".idx.npy")
    info = ShardInfo(name, len(samples), samples[0][1], samples[-1][1], size, index)
    Manifest(["c0", "c1", "c2", "c3"], ["bin", "txt"], [info], 40, len(samples)).save(root)
    return ShardTable(root)


@pytest.mark.parametrize(
    ("members", "message"),
    [
        ([("a.cls", b"1"), ("a.txt", b"x")], r"f\.tar:a: sample has no 'a\.id' member"),
        ([("a.id", b"1"), ("a.txt", b"x")], r"f\.tar:a: sample has no 'a\.cls' member"),
        ([("a.id", b"one"), ("a.cls", b"1")], r"f\.tar:a: member a\.id must hold"),
        ([("a.id", b"1"), ("a.cls", b"-2")], r"f\.tar:a: member a\.cls must hold"),
        ([("a.id", b"1"), ("a.cls", b"1"), ("a.txt", b"x"), ("a.txt", b"y")], "appears twice"),
    ],
)
def test_bad_samples_are_named(members: list[tuple[str, bytes]], message: str) -> None:
    data = _tar_bytes(members)
    with pytest.raises(SampleError, match=message):
        list(iter_samples(io.BytesIO(data), "f.tar"))


def test_range_must_hold_one_sample_with_the_indexed_id(tmp_path: Path) -> None:
    samples = _payloads()
    rows = _write(tmp_path / "a.tar", samples)
    data = (tmp_path / "a.tar").read_bytes()
    with pytest.raises(SampleError, match=r"a\.tar:k001: member 'k002\.id' belongs to key"):
        parse_sample(data[rows[1][1] : rows[2][2]], "a.tar")
    with pytest.raises(SampleError, match=r"a\.tar:k001: holds id 13 but the offset index says 99"):
        parse_sample(data[rows[1][1] : rows[1][2]], "a.tar", expect_id=99)
    tail = data[rows[-1][1] : rows[-1][2] + 1024]  # runs into the end-of-archive blocks
    with pytest.raises(SampleError, match="end-of-archive marker"):
        parse_sample(tail, "a.tar")


class _Trap:
    """Unpickling this creates a file: proof that a payload was unpickled."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (self.path, "w"))


def test_pickle_members_are_bytes_never_unpickled(tmp_path: Path) -> None:
    flag = tmp_path / "unpickled"
    payload = pickle.dumps(_Trap(str(flag)))
    write_samples(tmp_path / "ds", [("p0", 0, {"pyd": payload, "txt": b"t"})], ["c"], 4)
    with open(tmp_path / "ds" / "shard-000000.tar", "rb") as f:
        (raw,) = list(iter_samples(f, "shard-000000.tar"))
    assert raw["fields"]["pyd"] == payload
    assert ShardTable(tmp_path / "ds").read(0)["fields"]["pyd"] == payload
    assert not flag.exists()
    pickle.loads(payload)  # the trap is real: unpickling does create the file
    assert flag.exists()


def test_table_handles_are_per_process_and_never_pickled(tmp_path: Path) -> None:
    write_samples(tmp_path, [(f"s{i}", 0, {"txt": b"x" * i}) for i in range(6)], ["c"], 4)
    table = ShardTable(tmp_path)
    assert [table.read(r)["id"] for r in range(6)] == list(range(6))
    assert len(table._fds) == 2
    clone = pickle.loads(pickle.dumps(table))
    assert len(clone._fds) == 0 and clone.read(5)["fields"]["txt"] == b"xxxxx"
    pid = os.fork()
    if pid == 0:  # child: the parent's descriptors are replaced by its own
        ok = table.read(3)["id"] == 3 and table._pid == os.getpid()
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    table.close()
    assert table.read(0)["id"] == 0


def test_garbled_checksum_field_is_a_sample_error(tmp_path: Path) -> None:
    _write(tmp_path / "a.tar", _payloads())
    data = bytearray((tmp_path / "a.tar").read_bytes())
    at = _header_offset(bytes(data), "k002.txt")
    data[at + 148 : at + 156] = b"nonsense"
    with pytest.raises(SampleError, match=r"a\.tar:k002: corrupt tar header"):
        list(iter_samples(io.BytesIO(bytes(data)), "a.tar"))


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_damaged_bytes_give_sample_errors_or_intact_samples(data: st.DataObject) -> None:
    members = [("a.id", b"0"), ("a.cls", b"1"), ("a.txt", b"x" * 600), ("b.id", b"1")]
    members += [("b.cls", b"0"), ("b.npy", b"y" * 10)]
    tar = bytearray(_tar_bytes(members))
    cut = data.draw(st.integers(0, len(tar)))
    flips = data.draw(st.lists(st.integers(0, len(tar) - 1), max_size=3))
    for at in flips:
        tar[at] ^= 0xFF
    try:
        got = list(iter_samples(io.BytesIO(bytes(tar[:cut] if cut % 2 else tar)), "f.tar"))
    except SampleError as err:
        assert str(err).startswith("f.tar")
        return
    # Header bytes are ASCII, so a flip there always breaks the checksum: an archive that parses
    # has its structure intact (flips in payloads or padding do not touch it).
    assert [(g["key"], g["id"], g["label"]) for g in got] == [("a", 0, 1), ("b", 1, 0)]
    assert [len(g["fields"]["txt" if g["key"] == "a" else "npy"]) for g in got] == [600, 10]
