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

import numpy as np
import pytest

from mmsample.cli import main
from mmsample.sharding import shard_dataset
from mmsample.sharding.rebuild import rebuild
from mmsample.shards.format import MANIFEST, Manifest
from mmsample.shards.index_bundle import BUNDLE, BUNDLE_KEY, pack
from mmsample.shards.offsets import load_index
from mmsample.storage.local_server import LocalServer
from mmsample.testing import encode_npy, encode_wav

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
    """Polls a folder (and its subfolders) every millisecond from a thread: the most .tar files
    seen at once."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.most, self.looks = folder, 0, 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                found = list(self.folder.rglob("*.tar"))
            except OSError:  # a subfolder removed while listed
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
    staging.mkdir()
    kept = staging / "shard-000000.tar"  # a shard job's own copy: left alone
    kept.write_bytes(b"mine")
    s3.reset()
    s3.proxy.set_latency(0.05)  # each tar's download spans >= 50 ms: the watch sees it
    with Watch(staging) as watch:
        code = main(
            ["index", url, "--classes", str(classes), "--verify", "--staging", str(staging)]
        )
    assert code == 0
    said = capsys.readouterr().out
    assert f"indexed {url}/manifest.json: 7 samples in 3 shards" in said and "verify: OK" in said
    assert watch.looks > 100 and watch.most == 2  # seen, and never two tars at once + `kept`
    assert list(staging.rglob("*.tar")) == [kept] and kept.read_bytes() == b"mine"
    gets = [p for m, p, _ in s3.proxy.faults.log if m == "GET" and p.endswith(".tar")]
    assert sorted(gets) == [f"/{BUCKET}/copied/shard-00000{n}.tar" for n in range(3)]  # once each
    for n in range(3):
        name = f"shard-00000{n}.idx.npy"
        assert _get(s3, "copied", name) == (local / name).read_bytes()
    got = Manifest.from_json(json.loads(_get(s3, "copied", MANIFEST)))
    bundle = pack([load_index(local / s.index) for s in expected.shards])
    assert bundle is not None and _get(s3, "copied", BUNDLE) == bundle
    # local indexing writes the same consolidated index (a copy of the folder opens bundled)
    assert (local / BUNDLE).read_bytes() == bundle and got.extra[BUNDLE_KEY]
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


def test_a_corrupt_header_inside_a_tar_is_named_not_a_silent_end(
    s3: S3, tars: Path, classes: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # tarfile stops at a header whose checksum is wrong as if the archive ended there: without
    # the trailing-data check, r4 and r5 would vanish from shard 1 without a word
    tar = tars / "shard-000001.tar"
    with tarfile.open(tar) as t:
        offset = next(m.offset for m in t.getmembers() if m.name.startswith("r4."))
    data = bytearray(tar.read_bytes())
    data[offset + 148] ^= 0x01  # one bit of the header's checksum field
    tar.write_bytes(bytes(data))
    url = _upload_tars(s3, tars, "badheader")
    for where in (str(tars), url):
        assert main(["index", where, "--classes", str(classes)]) == 1
        err = capsys.readouterr().err
        assert f"cannot index {where}: 1 problem(s)" in err
        assert f"shard-000001.tar: byte {offset} (after the last member read" in err


# --- media named by URLs --------------------------------------------------------------------

ROWS = 6  # 2 shards of 3


@pytest.fixture(scope="module")
def src(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Real encoded files: a wav and an npy per row (and one more), in `media/`."""
    folder = tmp_path_factory.mktemp("src")
    (folder / "media").mkdir()
    for i in range(ROWS + 1):
        tone = 0.3 * np.sin(2 * np.pi * (200 + 30 * i) * np.arange(2000) / 16000)
        (folder / "media" / f"a{i}.wav").write_bytes(encode_wav(tone))
        feats = np.random.default_rng(i).standard_normal(4).astype(np.float32)
        (folder / "media" / f"f{i}.npy").write_bytes(encode_npy(feats))
    return folder


@pytest.fixture(scope="module")
def http_server(src: Path) -> Iterator[LocalServer]:
    with LocalServer(folder=src) as server:
        yield server


@pytest.fixture
def http(http_server: LocalServer) -> LocalServer:
    """The file server over `src`, with no pending faults and an empty request log."""
    http_server.faults.clear()
    return http_server


@pytest.fixture(scope="module")
def media_s3(s3_server: S3, src: Path) -> str:
    return s3_server.upload(src / "media", "media")


def _csv(path: Path, wav: list[str], npy: list[str]) -> Path:
    rows = [f"k{i},{CLASSES[i % 3]},{w},{n},clip {i}" for i, (w, n) in enumerate(zip(wav, npy))]
    path.write_text("key,label,wav,npy,txt\n" + "\n".join(rows) + "\n")
    return path


def _local_table(src: Path) -> Path:
    """Relative wav paths, absolute npy paths: the reference."""
    wav = [f"media/a{i}.wav" for i in range(ROWS)]
    npy = [str(src / "media" / f"f{i}.npy") for i in range(ROWS)]
    return _csv(src / "local.csv", wav, npy)


def _same_dataset(a: Path, b: Path) -> None:
    """`a` and `b` hold byte-identical tars and indexes and the same manifest, but for what
    names the input table (its path, hash and the job hash made from it)."""
    names = sorted(p.name for p in a.iterdir() if p.suffix in (".tar", ".npy"))
    assert names == sorted(p.name for p in b.iterdir() if p.suffix in (".tar", ".npy"))
    assert len([n for n in names if n.endswith(".tar")]) == 2
    for name in names:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    ma, mb = Manifest.load(a), Manifest.load(b)
    for m in (ma, mb):
        for key in ("input", "input_sha256", "job"):
            m.extra.pop(key)
    assert ma == mb and ma.num_samples == ROWS and ma.skipped == 0


def test_media_urls_shard_like_local_paths(
    s3: S3, media_s3: str, src: Path, http: LocalServer, tmp_path: Path
) -> None:
    shard_dataset(_local_table(src), tmp_path / "local", samples_per_shard=3, workers=1)
    web = f"{http.url}/media"
    wav = [
        f"{media_s3}/a0.wav",
        f"{web}/a1.wav",
        "media/a2.wav",  # still relative to the table's folder
        f"{media_s3}/a3.wav",
        f"{web}/a4.wav?sig=SECRET",  # a presigned-style query string, never printed
        f"file://{src}/media/a5.wav",
    ]
    npy = [f"{web}/f{i}.npy" if i % 2 else f"{media_s3}/f{i}.npy" for i in range(ROWS)]
    table = _csv(src / "urls.csv", wav, npy)
    s3.proxy.faults.add("503", "media/a3.wav", count=1)  # transient: retried
    http.faults.add("reset", "f1.npy", count=1)
    report = shard_dataset(table, tmp_path / "urls", samples_per_shard=3, workers=2)
    assert report.written == [0, 1] and not report.skipped
    assert s3.proxy.faults.injected and http.faults.injected  # the faults did happen
    _same_dataset(tmp_path / "local", tmp_path / "urls")
    gets = s3.proxy.faults.requests("GET", "/media/a0.wav")
    assert gets == 1  # read once, whole
    # the same rows, the table itself given as a URL: relative cells resolve against its folder
    assert "SECRET" not in json.dumps(report.dataset)
    served = _csv(src / "served.csv", [f"media/a{i}.wav" for i in range(ROWS)], npy)
    report = shard_dataset(
        f"{http.url}/{served.name}?token=SECRET",
        tmp_path / "served",
        samples_per_shard=3,
        workers=1,
    )
    assert report.dataset["extra"]["input"] == f"{http.url}/served.csv"
    _same_dataset(tmp_path / "local", tmp_path / "served")


def _one_bad(src: Path, cell: str, name: str) -> Path:
    wav = [cell if i == 2 else f"media/a{i}.wav" for i in range(ROWS)]
    npy = [str(src / "media" / f"f{i}.npy") for i in range(ROWS)]
    return _csv(src / name, wav, npy)


@pytest.mark.parametrize("where", ["s3", "http"])
def test_a_missing_media_url_is_a_bad_row_like_a_missing_file(
    s3: S3,
    media_s3: str,
    src: Path,
    http: LocalServer,
    tmp_path: Path,
    where: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = f"{media_s3}/gone.wav" if where == "s3" else f"{http.url}/media/gone.wav"
    table = _one_bad(src, url, f"missing-{where}.csv")
    out = tmp_path / "out"
    args = ["shard", str(table), str(out), "--samples-per-shard", "3", "--workers", "1"]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert f"row 2 (line 4, key 'k2'): wav: file not found: {url}" in err
    assert main([*args, "--skip-bad"]) == 0
    assert "skipped 1 of 6 rows" in capsys.readouterr().out
    # exactly what a missing local file gives, but for the name
    local = _one_bad(src, "media/gone.wav", f"missing-local-{where}.csv")
    ref = [*args[:2], str(tmp_path / "ref"), *args[3:]]
    ref[1] = str(local)
    assert main(ref) == 1
    assert main([*ref, "--skip-bad"]) == 0
    got = (out / "skipped.jsonl").read_text()
    want = (tmp_path / "ref" / "skipped.jsonl").read_text()
    assert got == want.replace(str(src / "media" / "gone.wav"), url)
    assert Manifest.load(out).skipped == Manifest.load(tmp_path / "ref").skipped == 1


@pytest.mark.parametrize("where", ["s3", "http"])
def test_a_forbidden_media_url_stops_the_run_naming_row_and_url(
    s3: S3,
    media_s3: str,
    src: Path,
    http: LocalServer,
    tmp_path: Path,
    where: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    if where == "s3":
        url, shown = f"{media_s3}/a6.wav", f"{media_s3}/a6.wav"
        s3.proxy.faults.add("403", "media/a6.wav", count=10, method="HEAD")
    else:
        url, shown = f"{http.url}/media/a6.wav?sig=SECRET", f"{http.url}/media/a6.wav"
        http.faults.add("403", "a6.wav", count=10, method="HEAD")
        http.faults.add("403", "a6.wav", count=10, method="GET")
    table = _one_bad(src, url, f"forbidden-{where}.csv")
    for more in ([], ["--skip-bad"]):  # not the row's fault: never skipped
        out = str(tmp_path / "out")
        code = main(["shard", str(table), out, "--samples-per-shard", "3", "--workers", "1", *more])
        assert code == 1
        err = capsys.readouterr().err
        assert "row 2 (line 4, key 'k2'), column wav: " in err and shown in err, err
        assert "was denied" in err and "403" in err and "SECRET" not in err
    assert not (tmp_path / "out" / "manifest.json").exists()
