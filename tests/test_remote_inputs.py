"""The sharding tool's inputs as URLs and `mmsample index URL` with room for one tar, against
real local servers (moto's S3 server behind a proxy, `LocalServer` for http://): media named
by s3:// and http:// URLs shard to the same bytes as local paths, a missing or forbidden media
URL names the row and the URL, and indexing a remote folder holds at most one tar in staging
while producing exactly the indexes and bundle of local indexing."""

from __future__ import annotations

import json
import shutil
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from mmsample.cli import main
from mmsample.sharding import shard_dataset
from mmsample.sharding.rebuild import rebuild
from mmsample.shards.format import MANIFEST, Manifest
from mmsample.shards.index_bundle import BUNDLE, BUNDLE_KEY, pack
from mmsample.shards.offsets import load_index

from .remote_helpers import BUCKET, S3, local_s3

LABELS = [0, 1, 2, 0, 1, 2, 1]  # 7 rows: 3 shards of 3, 3, 1
CLASSES = ["a", "b", "c"]


@pytest.fixture(scope="module")
def s3_server() -> Iterator[S3]:
    with local_s3() as s3:
        yield s3


@pytest.fixture
def s3(s3_server: S3) -> S3:
    s3_server.reset()
    return s3_server


@pytest.fixture
def tars(tmp_path: Path) -> Path:
    """A folder holding only the three tars of a 7-row text dataset (indexes, sidecars and
    manifest removed: what `mmsample index` is for)."""
    table = tmp_path / "table.csv"
    rows = [f"r{i},{CLASSES[label]},row {i} {'x' * 50 * i}" for i, label in enumerate(LABELS)]
    table.write_text("key,label,txt\n" + "\n".join(rows) + "\n")
    shard_dataset(table, tmp_path / "full", samples_per_shard=3, workers=1)
    folder = tmp_path / "tars"
    folder.mkdir()
    for tar in sorted((tmp_path / "full").glob("*.tar")):
        shutil.copy(tar, folder / tar.name)
    return folder


@pytest.fixture
def classes(tmp_path: Path) -> Path:
    path = tmp_path / "classes.txt"
    path.write_text("\n".join(CLASSES) + "\n")
    return path


class Watch:
    """Polls a folder every millisecond from a thread: the most .tar files seen at once."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.most, self.looks = folder, 0, 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                found = [p for p in self.folder.iterdir() if p.name.endswith(".tar")]
            except FileNotFoundError:
                found = []
            self.most, self.looks = max(self.most, len(found)), self.looks + 1
            self.stop.wait(0.001)

    def __enter__(self) -> Watch:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()


def _upload_tars(s3: S3, folder: Path, prefix: str) -> str:
    client = s3.client()
    for tar in sorted(folder.glob("*.tar")):
        client.upload_file(str(tar), BUCKET, f"{prefix}/{tar.name}")
    return s3.url(prefix)


def _get(s3: S3, prefix: str, name: str) -> bytes:
    body = s3.client().get_object(Bucket=BUCKET, Key=f"{prefix}/{name}")["Body"]
    return bytes(body.read())


def test_index_url_holds_one_tar_and_matches_local_indexing(
    s3: S3, tars: Path, classes: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = _upload_tars(s3, tars, "copied")
    local = tmp_path / "local"
    shutil.copytree(tars, local)
    expected = rebuild(local, CLASSES)  # the reference: indexing the same tars on local disk
    staging = tmp_path / "staging"
    s3.reset()
    s3.proxy.set_latency(0.05)  # each tar's download spans >= 50 ms: the watch sees it
    with Watch(staging) as watch:
        code = main(
            ["index", url, "--classes", str(classes), "--verify", "--staging", str(staging)]
        )
    assert code == 0
    said = capsys.readouterr().out
    assert f"indexed {url}/manifest.json: 7 samples in 3 shards" in said and "verify: OK" in said
    assert watch.looks > 100 and watch.most == 1  # seen, and never two tars at once
    assert not list(staging.glob("*.tar"))  # the last one deleted too
    gets = [p for m, p, _ in s3.proxy.faults.log if m == "GET" and p.endswith(".tar")]
    assert sorted(gets) == [f"/{BUCKET}/copied/shard-00000{n}.tar" for n in range(3)]  # once each
    for n in range(3):
        name = f"shard-00000{n}.idx.npy"
        assert _get(s3, "copied", name) == (local / name).read_bytes()
    got = Manifest.from_json(json.loads(_get(s3, "copied", MANIFEST)))
    bundle = pack([load_index(local / s.index) for s in expected.shards])
    assert bundle is not None and _get(s3, "copied", BUNDLE) == bundle
    assert got.extra.pop(BUNDLE_KEY)
    assert got == expected


def _rename_member(tar: Path, old: str, new: str) -> None:
    """Rename member `old` of `tar` in place to `new` (same length; header checksum redone):
    the tar keeps its size and structure, so only checks against the sidecars can tell."""
    with tarfile.open(tar) as t:
        member = t.getmember(old)
    data = bytearray(tar.read_bytes())
    header = data[member.offset : member.offset + tarfile.BLOCKSIZE]
    assert header[: len(old)] == old.encode() and len(old) == len(new)
    header[: len(new)] = new.encode()
    header[148:156] = b" " * 8
    header[148:156] = b"%06o\0 " % sum(header)
    data[member.offset : member.offset + tarfile.BLOCKSIZE] = header
    tar.write_bytes(bytes(data))


def test_index_url_verify_catches_a_corrupt_shard(
    s3: S3, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # a sharded dataset whose manifest and indexes are lost, with one member of shard 1
    # renamed: it still indexes (from its sidecars), and --verify names the foreign member
    table = tmp_path / "table.csv"
    table.write_text(
        "key,label,txt\n" + "".join(f"r{i},{CLASSES[b]},row {i}\n" for i, b in enumerate(LABELS))
    )
    local = tmp_path / "local"
    shard_dataset(table, local, samples_per_shard=3, workers=1)
    for path in [local / MANIFEST, *local.glob("*.idx.npy")]:
        path.unlink()
    _rename_member(local / "shard-000001.tar", "r4.txt", "r4.zzz")
    url = s3.upload(local, "corrupt")
    assert main(["index", url, "--verify"]) == 1
    remote = capsys.readouterr().err.splitlines()
    wanted = "  shard-000001.tar:r4: members ['zzz'] are not manifest fields"
    assert wanted in remote
    assert main(["index", str(local), "--verify"]) == 1  # the same problems as on local disk
    assert remote[1:] == capsys.readouterr().err.splitlines()[1:]
