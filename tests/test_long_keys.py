"""Sample keys whose member names pass the 100 bytes of a ustar header: `mmsample shard` and
`write_samples` write them (pax `path` records), `mmsample index` and `--verify` accept them, and
both readers read every sample back with its key, label and payloads; GNU long names (a tar
repacked by another tool) index and read the same."""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
import tarfile
from pathlib import Path

import numpy as np
import pytest

from mmsample.cli import main
from mmsample.decoding import Array, Text
from mmsample.errors import ManifestError
from mmsample.sharding import write_samples
from mmsample.shards import IndexedDataset, StreamedDataset
from mmsample.testing import encode_npy

CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-"
LENGTHS = (5, 95, 100, 120, 200)  # 95 + ".feats.npy" is already past 100 bytes
CLASSES = ["cat", "dog"]


def long_key(length: int, seed: int) -> str:
    """A key of `length` characters drawn from every character a key may hold."""
    rng = np.random.default_rng(seed)
    return "".join(CHARS[i] for i in rng.integers(0, len(CHARS), length))


def rows() -> list[tuple[str, str, np.ndarray, str]]:
    """(key, label, feature array, caption) per row: one row per key length."""
    return [
        (long_key(n, i), CLASSES[i % 2], np.full(3, i, dtype=np.float32), f"caption {i} é")
        for i, n in enumerate(LENGTHS)
    ]


def specs() -> dict[str, Array | Text]:
    return {
        "x": Array(field="feats.npy"),
        "t": Text(field="txt", byte_ids=True, padding="do_not_pad"),
    }


def read_back(root: Path) -> dict[str, tuple[int, int, np.ndarray, bytes]]:
    """key -> (id, label, array, text bytes) from both readers, which must agree."""
    indexed = IndexedDataset(root, specs())
    by_index = [indexed.get(i) for i in range(len(LENGTHS))]
    streamed = sorted(StreamedDataset(root, specs()), key=lambda s: s["id"])
    got = {}
    for a, b in zip(by_index, streamed, strict=True):
        assert (a["key"], a["id"], a["label"]) == (b["key"], b["id"], b["label"])
        assert np.array_equal(a["x"].numpy(), b["x"].numpy())
        assert a["t"]["input_ids"].tolist() == b["t"]["input_ids"].tolist()
        text = bytes(a["t"]["input_ids"].tolist())
        got[a["key"]] = (a["id"], a["label"], a["x"].numpy(), text)
    return got


def check_samples(root: Path) -> None:
    got = read_back(root)
    assert sorted(got) == sorted(k for k, *_ in rows())
    for i, (key, label, array, caption) in enumerate(rows()):
        sample_id, cls, x, text = got[key]
        assert (sample_id, cls) == (i, CLASSES.index(label))
        assert np.array_equal(x, array) and text == caption.encode()


def write_table(tmp_path: Path) -> Path:
    (tmp_path / "media").mkdir()
    path = tmp_path / "in.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        out = csv.writer(f)
        out.writerow(["key", "label", "feats", "txt"])
        for i, (key, label, array, caption) in enumerate(rows()):
            (tmp_path / "media" / f"{i}.npy").write_bytes(encode_npy(array))
            out.writerow([key, label, f"media/{i}.npy", caption])
    return path


def test_shard_index_verify_and_read_keys_of_95_to_200_characters(tmp_path: Path) -> None:
    out = tmp_path / "out"
    code = main(["shard", str(write_table(tmp_path)), str(out), "--samples-per-shard", "2"])
    assert code == 0
    names = []
    for tar in sorted(out.glob("*.tar")):
        with tarfile.open(tar) as f:
            names += f.getnames()
    for key, *_ in rows():
        assert f"{key}.feats.npy" in names and f"{key}.txt" in names
    assert main(["index", str(out), "--verify"]) == 0
    check_samples(out)
    for p in [*out.glob("*.idx.npy"), out / "manifest.json", *out.glob("shard-*.json")]:
        p.unlink()  # rebuilt from the tars alone
    (tmp_path / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    assert main(["index", str(out), "--classes", str(tmp_path / "classes.txt"), "--verify"]) == 0
    check_samples(out)


def test_write_samples_keeps_short_names_plain_ustar(tmp_path: Path) -> None:
    samples = [(k, CLASSES.index(lab), {"feats.npy": encode_npy(a), "txt": c.encode()})
               for k, lab, a, c in rows()]  # fmt: skip
    write_samples(tmp_path / "ds", samples, CLASSES, samples_per_shard=2)
    assert main(["index", str(tmp_path / "ds"), "--verify"]) == 0
    check_samples(tmp_path / "ds")
    short = rows()[0][0]
    data = (tmp_path / "ds" / "shard-000000.tar").read_bytes()
    assert data[:100].rstrip(b"\0") == f"{short}.id".encode()  # no pax header for a short name
    assert data[156:157] == b"0" and data[257:263] == b"ustar\0"


def repack(tar: Path, fmt: int) -> None:
    """Rewrite `tar` member by member in tarfile format `fmt` (another tool's tar)."""
    with tarfile.open(tar) as src:
        members = [(m, src.extractfile(m).read()) for m in src]  # type: ignore[union-attr]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as dst:
        for m, payload in members:
            dst.addfile(m, io.BytesIO(payload))
    tar.write_bytes(buf.getvalue())


def test_gnu_long_names_index_and_read(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert main(["shard", str(write_table(tmp_path)), str(out), "--samples-per-shard", "2"]) == 0
    for tar in out.glob("*.tar"):
        repack(tar, tarfile.GNU_FORMAT)
    assert b"././@LongLink" in (out / "shard-000000.tar").read_bytes()
    assert main(["index", str(out), "--verify"]) == 0
    check_samples(out)


@pytest.mark.skipif(shutil.which("tar") is None, reason="needs the system tar (GNU tar)")
@pytest.mark.parametrize("fmt", ["gnu", "pax", "posix"])
def test_system_tar_long_names_index_and_read(tmp_path: Path, fmt: str) -> None:
    version = subprocess.run(["tar", "--version"], capture_output=True, text=True).stdout
    if "GNU tar" not in version:
        pytest.skip(f"the system tar is not GNU tar ({version.splitlines()[:1]})")
    out = tmp_path / "out"
    assert main(["shard", str(write_table(tmp_path)), str(out), "--samples-per-shard", "9"]) == 0
    tar = out / "shard-000000.tar"
    files = tmp_path / "files"
    with tarfile.open(tar) as src:
        names = src.getnames()
        src.extractall(files, filter="data")
    subprocess.run(
        ["tar", f"--format={fmt}", "-cf", str(tar), "-C", str(files), *names], check=True
    )
    assert main(["index", str(out), "--verify"]) == 0
    check_samples(out)


def test_keys_are_ascii_so_a_multibyte_key_is_a_bad_row(tmp_path: Path) -> None:
    key = "é" * 60  # 60 characters, 120 UTF-8 bytes
    with pytest.raises(ManifestError, match="letters, digits"):
        write_samples(tmp_path / "ds", [(key, 0, {"txt": b"x"})], CLASSES)
    path = tmp_path / "in.csv"
    path.write_text(f"key,label,txt\n{key},cat,x\nok,dog,y\n", encoding="utf-8")
    assert main(["shard", str(path), str(tmp_path / "out"), "--quiet"]) == 1
    lines = (tmp_path / "out" / "bad_rows.jsonl").read_text(encoding="utf-8").splitlines()
    (bad,) = [json.loads(line) for line in lines]
    assert bad["key"] == key and "not allowed" in bad["reasons"][0]["reason"]
