"""`mmsample shard --out s3://...`, `mmsample index s3://... --verify` and `mmsample inspect
s3://...` against a real local S3 server (moto behind a fault-injecting proxy): shards are
published atomically one at a time, manifest.json last, so an interrupted or partial job leaves
nothing a reader accepts; a rerun uploads only what is missing; read-only URLs are refused."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mmsample.cli import main
from mmsample.decoding import Text
from mmsample.errors import StorageError
from mmsample.shards import IndexedDataset, StreamedDataset
from mmsample.shards.index_bundle import BundleWarning

from .remote_helpers import BUCKET, S3, local_s3

LABELS = [0, 1, 2, 0, 1, 2, 1]  # 7 rows: 3 shards of 3, 3, 1


@pytest.fixture(scope="module")
def s3_server() -> Iterator[S3]:
    with local_s3() as s3:
        yield s3


@pytest.fixture
def s3(s3_server: S3) -> S3:
    s3_server.reset()
    return s3_server


@pytest.fixture
def table(tmp_path: Path) -> Path:
    path = tmp_path / "table.csv"
    rows = [f"r{i},{label},row {i}" for i, label in enumerate(LABELS)]
    path.write_text("key,label,txt\n" + "\n".join(rows) + "\n")
    return path


def _labels(url: str) -> list[int]:
    ds = IndexedDataset(url, {"text": Text(byte_ids=True, max_length=4)})
    return [ds.get(i)["label"] for i in range(len(LABELS))]


def _shard(table: Path, url: str, *more: str) -> int:
    return main(["shard", str(table), url, "--workers", "1", "--samples-per-shard", "3", *more])


def test_shard_to_s3_then_inspect_index_and_verify(
    s3: S3, table: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = s3.url("sharded")
    assert _shard(table, url, "--verify") == 0
    said = capsys.readouterr().out
    assert f"published them to {url}" in said and f"{url}/manifest.json: 7 samples" in said
    assert "verify: OK" in said
    names = s3.names("sharded")
    assert names == sorted(
        ["manifest.json", "index-bundle.npy"]
        + [f"shard-00000{n}.{ext}" for n in range(3) for ext in ("tar", "idx.npy", "json")]
    )  # no temporary key left behind
    assert _labels(url) == LABELS
    assert main(["inspect", url]) == 0
    assert f"dataset {url}" in capsys.readouterr().out
    client = s3.client()
    for name in ("manifest.json", "shard-000000.idx.npy", "shard-000001.idx.npy"):
        client.delete_object(Bucket=BUCKET, Key=f"sharded/{name}")
    s3.reset()
    assert main(["index", url, "--verify"]) == 0
    said = capsys.readouterr().out
    assert f"indexed {url}/manifest.json: 7 samples in 3 shards" in said and "verify: OK" in said
    tars = [p for m, p, _ in s3.proxy.faults.log if m == "GET" and p.endswith(".tar")]
    assert sorted(tars) == [f"/{BUCKET}/sharded/shard-00000{n}.tar" for n in range(3)]  # once
    s3.reset()
    assert _labels(url) == LABELS
    opening = [p for m, p, _ in s3.proxy.faults.log if m == "GET" and not p.endswith(".tar")]
    assert opening == [f"/{BUCKET}/sharded/manifest.json", f"/{BUCKET}/sharded/index-bundle.npy"]


def test_parts_publish_the_manifest_when_the_last_part_is_done(s3: S3, table: Path) -> None:
    url = s3.url("parts")
    assert _shard(table, url, "--part", "1/2") == 0
    assert "manifest.json" not in s3.names("parts")
    with pytest.raises(StorageError, match=f"{url}/manifest.json does not exist"):
        StreamedDataset(url, {"text": Text(byte_ids=True, max_length=4)})
    assert _shard(table, url, "--part", "0/2") == 0
    assert "manifest.json" in s3.names("parts")
    assert _labels(url) == LABELS
    # a stale consolidated index is never used: each shard's index is read, with a warning
    s3.client().put_object(Bucket=BUCKET, Key="parts/index-bundle.npy", Body=b"stale")
    with pytest.warns(BundleWarning, match="does not match the SHA-256"):
        assert _labels(url) == LABELS


def test_interrupted_upload_leaves_no_shard_a_reader_accepts(
    s3: S3, table: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = s3.url("cut")
    s3.proxy.faults.add("403", "shard-000001.tar", count=1, method="PUT")
    assert _shard(table, url) == 1
    err = capsys.readouterr().err
    assert "denied" in err and f"{url}/shard-000001.tar" in err
    names = s3.names("cut")
    assert "manifest.json" not in names and "shard-000001.tar" not in names
    assert "shard-000001.json" not in names and not [n for n in names if n.endswith(".tmp")]
    with pytest.raises(StorageError, match=r"manifest\.json does not exist"):
        IndexedDataset(url, {"text": Text(byte_ids=True, max_length=4)})
    s3.reset()
    assert _shard(table, url) == 0
    puts = [p for m, p, _ in s3.proxy.faults.log if m == "PUT"]
    assert not [p for p in puts if "shard-000000" in p]  # published before: not uploaded again
    assert [p for p in puts if "shard-000001.tar" in p]
    assert _labels(url) == LABELS


def test_read_only_urls_are_refused_as_output(
    table: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _shard(table, "https://example.invalid/data?sig=SECRET") == 1
    err = capsys.readouterr().err
    assert "read-only" in err and "https://example.invalid/data" in err and "SECRET" not in err


def test_a_local_folder_copied_as_is_opens_in_two_requests(
    s3: S3, table: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`mmsample shard` into a local folder writes the consolidated index too (the per-shard
    indexes packed, its SHA-256 in the manifest): the folder copied to S3 file by file (as
    `aws s3 sync` does) opens with the manifest and the bundle, no per-shard request, no
    warning; `mmsample index` of the folder and a subset of it write their own bundles."""
    import warnings

    from mmsample.active.subset import write_subset
    from mmsample.shards.format import Manifest
    from mmsample.shards.index_bundle import BUNDLE, BUNDLE_KEY, digest_matches, pack
    from mmsample.shards.offsets import load_index

    def own_bundle(folder: Path) -> bytes:
        manifest = Manifest.load(folder)
        raw = pack([load_index(folder / s.index) for s in manifest.shards])
        assert raw is not None and (folder / BUNDLE).read_bytes() == raw
        assert digest_matches(raw, manifest.extra[BUNDLE_KEY])
        return raw

    local = tmp_path / "local"
    assert _shard(table, str(local)) == 0
    first = own_bundle(local)
    url = s3.upload(local, "synced")
    s3.reset()
    with warnings.catch_warnings():
        warnings.simplefilter("error", BundleWarning)
        assert _labels(url) == LABELS
    opening = [p for m, p, _ in s3.proxy.faults.log if m == "GET" and not p.endswith(".tar")]
    assert opening == [f"/{BUCKET}/synced/manifest.json", f"/{BUCKET}/synced/index-bundle.npy"]
    # a stale entry never survives: `mmsample index` rewrites the bundle from the indexes
    manifest = Manifest.load(local)
    (local / BUNDLE).write_bytes(b"stale")
    assert main(["index", str(local)]) == 0
    assert own_bundle(local) == first
    assert Manifest.load(local).extra[BUNDLE_KEY] == manifest.extra[BUNDLE_KEY]
    part = tmp_path / "part"
    write_subset(local, [0, 2, 5], part)
    assert own_bundle(part) != first  # the subset's own shards, not the source's
    capsys.readouterr()


def test_another_jobs_dataset_is_named_by_its_url(
    s3: S3, table: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Sharding into a URL that holds another job's dataset is refused naming the URL (never
    the temporary staging folder the user did not choose) and the fix."""
    url = s3.url("other")
    assert _shard(table, url) == 0
    capsys.readouterr()
    assert main(["shard", str(table), url, "--workers", "1", "--samples-per-shard", "2"]) == 1
    err = capsys.readouterr().err
    assert f"{url} already holds manifest.json of a different input" in err
    assert "--overwrite" in err and "mmsample-staging" not in err


def test_a_missing_dataset_or_shard_is_named_with_the_fix(
    s3: S3, table: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A typo'd prefix: the manifest's URL and how a folder gets one; a shard gone from a
    published folder: its URL and how to publish again."""
    assert main(["inspect", s3.url("no-such-prefix")]) == 1
    err = capsys.readouterr().err
    assert f"{s3.url('no-such-prefix')}/manifest.json does not exist" in err
    assert "check the bucket and prefix" in err and "mmsample index URL" in err
    url = s3.url("shard-gone")
    assert _shard(table, url) == 0
    s3.client().delete_object(Bucket=BUCKET, Key="shard-gone/shard-000001.tar")
    with pytest.raises(StorageError, match=r"shard-000001.tar does not exist .*publish it again"):
        _labels(url)


def test_bad_rows_with_a_url_output_keep_the_staging_folder_and_say_so(
    s3: S3, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bad row stops a job whose output is a URL before anything is published: the message
    says so and names the temporary staging folder, which is kept (the shards written so far
    and bad_rows.jsonl), with the rerun that keeps them; the rerun with it and the row fixed
    publishes the dataset."""
    import re
    import shutil

    table = tmp_path / "table.csv"
    rows = [f"r{i},{label},row {i}" for i, label in enumerate(LABELS)]
    rows[4] = "r.4,1,row 4"  # a key with a dot: a bad row
    table.write_text("key,label,txt\n" + "\n".join(rows) + "\n")
    url = s3.url("badrows")
    assert _shard(table, url) == 1
    err = capsys.readouterr().err
    assert "1 bad row(s)" in err and f"Nothing was published to {url}" in err
    found = re.search(r"rerun with the same arguments and --staging (\S+) to keep them", err)
    assert found is not None
    staging = Path(found.group(1))
    try:
        assert (staging / "bad_rows.jsonl").is_file() and list(staging.glob("shard-*.tar"))
        assert s3.names("badrows") == []
        rows[4] = "r4,1,row 4"
        table.write_text("key,label,txt\n" + "\n".join(rows) + "\n")
        assert _shard(table, url, "--staging", str(staging)) == 0
        assert "manifest.json" in s3.names("badrows") and _labels(url) == LABELS
    finally:
        shutil.rmtree(staging, ignore_errors=True)
