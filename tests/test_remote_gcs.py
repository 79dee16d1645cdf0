"""gs:// through gcsfs against a real local GCS JSON-API server (gcp-storage-emulator, in
memory) behind a fault-injecting proxy: both readers equal local disk with every item once,
`mmsample shard/inspect/index --verify` on gs://, a resume round trip, transient faults retried
(one of mmsample's attempts = one HTTP request: gcsfs's own retries are off, its requests time
out), permanent faults named with the URL and never a token, and the missing-gcsfs message.

What the emulator lacks, and how the tests go around it: it has no `moveTo` (gcsfs's rename
answers 501, then gcsfs copies with `rewriteTo` and deletes, the fallback it logs): the atomic
upload is tested through that fallback, not through `moveTo`. It ignores credentials (any token
is accepted), so real GCS authentication is not tested here.
"""

from __future__ import annotations

import logging
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from mmsample.cli import main
from mmsample.decoding import Text
from mmsample.errors import SampleError, StorageError
from mmsample.loader import balanced_loader
from mmsample.resume_check import check_resume
from mmsample.shards import IndexedDataset, StreamedDataset
from mmsample.storage import RetryPolicy, open_store
from mmsample.storage.location import scrub

from .loader_helpers import N, items, modalities, write_dataset
from .remote_helpers import BUCKET, GCS, local_gcs

FAST = RetryPolicy(attempts=4, base_delay=0.01, max_delay=0.05, timeout=1.0)
TOKEN = "ya29.SECRET-BEARER-TOKEN"  # an OAuth access token: gcsfs sends it; the emulator ignores it


@pytest.fixture(scope="module")
def gcs_server() -> Iterator[GCS]:
    logging.getLogger("gcsfs").setLevel(logging.ERROR)  # the emulator's moveTo fallback, said
    with local_gcs(stall=3.0) as gcs:
        yield gcs


@pytest.fixture
def gcs(gcs_server: GCS) -> GCS:
    gcs_server.reset()
    return gcs_server


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("gcs") / "shards"
    write_dataset(root)  # 22 samples (wav + npy) in 5 shards
    return root


@pytest.fixture(scope="module")
def uploaded(gcs_server: GCS, local: Path) -> str:
    return gcs_server.upload(local, "data")


def _gets(gcs: GCS, match: str) -> int:
    return gcs.proxy.faults.requests("GET", match)


@pytest.mark.parametrize("mode", ["streamed", "indexed"])
def test_both_modes_equal_local_every_item_once(
    gcs: GCS, uploaded: str, local: Path, mode: str
) -> None:
    def run(root: str) -> list[Any]:
        loader = balanced_loader(root, None, modalities=modalities(), batch_size=4, mode=mode)
        return list(loader)

    want = run(str(local))
    gcs.reset()
    got = run(uploaded)
    assert [b.ids.tolist() for b in got] == [b.ids.tolist() for b in want]
    assert Counter(i for b in got for i in b.ids.tolist()) == Counter(range(N))
    for a, b in zip(got, want):
        assert torch.equal(a["audio"], b["audio"]) and torch.equal(a["feat"], b["feat"])
    tars = [(p, r) for m, p, r in gcs.proxy.faults.log if m == "GET" and ".tar?" in p]
    assert tars and all(r.startswith("bytes=") for _, r in tars)  # range reads only
    names = Counter(p.split("%2F")[-1].split("?")[0] for p, _ in tars)
    assert set(names) == {f"shard-00000{n}.tar" for n in range(5)}
    # opening: the manifest and the consolidated index (the local folder's, uploaded as is),
    # no per-shard index, no stat, no list
    others = [(m, p.split("%2F")[-1].split("?")[0]) for m, p, _ in gcs.proxy.faults.log]
    others = [x for x in others if not x[1].endswith(".tar")]
    assert others == [("GET", "manifest.json"), ("GET", "index-bundle.npy")]
    if mode == "streamed":  # one sequential chunk per shard (each is far below 8 MiB)
        assert sorted(names.values()) == [1] * 5
    else:  # each sample by range, touching ranges asked together coalesced
        assert sum(names.values()) <= N


def test_one_attempt_is_one_request(gcs: GCS, uploaded: str) -> None:
    two = RetryPolicy(attempts=2, base_delay=0.0, timeout=2.0)
    reader = IndexedDataset(uploaded, modalities(), retry=two, prefetch=0)
    # per attempt: one request for a 503 (gcsfs's own loop would make 6); for a connection
    # dropped before any answer aiohttp sends an idempotent request once more at once (RFC 9112
    # section 9.3.1), its only resend: two
    for kind, per_attempt in (("503", 1), ("reset", 2)):
        gcs.reset()
        gcs.proxy.faults.add(kind, "shard-000001.tar", count=10)
        with pytest.raises(SampleError, match="2 attempts"):
            reader.get(5)  # shard 1 holds ids 5..9
        assert _gets(gcs, "shard-000001.tar") == 2 * per_attempt, kind
    # uploads too: a 503 answer to the single-request upload costs one attempt, then it lands
    gcs.reset()
    store = open_store(gcs.url("one"), retry=two)
    gcs.proxy.faults.add("503", "uploadType=multipart", count=1, method="POST")
    store.write_bytes("x.bin", b"payload")
    assert gcs.proxy.faults.requests("POST", "uploadType=multipart") == 2
    assert gcs.fs().cat_file(f"{BUCKET}/one/x.bin") == b"payload"
    assert gcs.names("one") == ["x.bin"]  # the temporary key renamed away
    # the rename: the emulator has no moveTo (501, one request); gcsfs copies (rewriteTo) and
    # deletes the temporary key; mmsample's own clean-up then finds it gone (404, ignored).
    # (before them, gcsfs's mv asks about both keys: 6 GETs, left out here)
    log = gcs.proxy.faults.log
    calls = [(m, p) for m, p, _ in log if m != "GET" and "uploadType" not in p]
    tmp = calls[0][1].split("/o/")[1].split("/")[0]
    assert tmp.startswith("one%2F.x.bin.") and tmp.endswith(".tmp")
    assert calls == [
        ("POST", f"/storage/v1/b/{BUCKET}/o/{tmp}/moveTo/o/one%2Fx.bin"),
        ("POST", f"/storage/v1/b/{BUCKET}/o/{tmp}/rewriteTo/b/{BUCKET}/o/one%2Fx.bin"),
        ("DELETE", f"/storage/v1/b/{BUCKET}/o/{tmp}"),
        ("DELETE", f"/storage/v1/b/{BUCKET}/o/{tmp}"),
    ]


def test_large_upload_is_resumable_and_whole(gcs: GCS, tmp_path: Path) -> None:
    # gcsfs uploads a file of 5 MiB or more by a resumable session (start, then the bytes)
    data = torch.randint(
        0, 256, (6 << 20,), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )
    local = tmp_path / "big.bin"
    local.write_bytes(data.numpy().tobytes())
    open_store(gcs.url("big"), retry=FAST).put_file("big.bin", str(local))
    posts = [p for m, p, _ in gcs.proxy.faults.log if m == "POST" and "uploadType" in p]
    assert len(posts) == 2 and all("uploadType=resumable" in p for p in posts)
    assert "upload_id=" in posts[1]
    assert gcs.fs().cat_file(f"{BUCKET}/big/big.bin") == local.read_bytes()
    assert gcs.names("big") == ["big.bin"]


def test_a_stalled_request_times_out(gcs: GCS, uploaded: str) -> None:
    # the proxy stalls 3 s, then closes; a 1 s read timeout must end the attempt first
    once = RetryPolicy(attempts=1, timeout=1.0)
    reader = IndexedDataset(uploaded, modalities(), retry=once, prefetch=0)
    gcs.reset()
    gcs.proxy.faults.add("stall", "shard-000002.tar", count=1)
    with pytest.raises(SampleError) as raised:
        reader.get(10)
    assert "Timeout" in str(raised.value) and "Disconnected" not in str(raised.value)
    assert reader.get(10)["key"] == "s000010"  # the next attempt is answered


@pytest.mark.parametrize("mode", ["streamed", "indexed"])
def test_transient_faults_every_item_exactly_once(gcs: GCS, uploaded: str, mode: str) -> None:
    def run() -> list[tuple[int, int]]:
        reader = (StreamedDataset if mode == "streamed" else IndexedDataset)(
            uploaded, modalities(), retry=FAST
        )
        return [x for b in balanced_loader(reader, None, batch_size=4) for x in items(b)]

    clean = run()
    for kind, shard in (("503", "0"), ("reset", "1"), ("truncate", "2"), ("stall", "3")):
        gcs.proxy.faults.add(kind, f"shard-00000{shard}.tar", count=2 if kind == "503" else 1)
    faulty = run()
    assert faulty == clean
    assert Counter(i for i, _ in faulty) == Counter(range(N))
    injected = sorted(k for k, _ in gcs.proxy.faults.injected)
    assert injected == ["503", "503", "reset", "stall", "truncate"]


def test_permanent_faults_named_with_url_never_the_token(
    gcs: GCS, local: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from google.oauth2.credentials import Credentials

    url = gcs.upload(local, "perm")
    # a credentials object: gcsfs sends `Authorization: Bearer TOKEN` with each request (a raw
    # token string would first be checked against Google's tokeninfo endpoint, over the network)
    options = {"token": Credentials(token=TOKEN)}
    reader = IndexedDataset(url, modalities(), storage_options=options, retry=FAST, prefetch=0)
    assert reader.get(3)["key"] == "s000003"  # the token is accepted (the emulator ignores it)
    gcs.fs().rm_file(f"{BUCKET}/perm/shard-000002.tar")
    gcs.reset()
    errors: list[str] = []
    with pytest.raises(StorageError, match=f"{url}/shard-000002.tar does not exist") as gone:
        reader.get(10)
    errors.append(str(gone.value))
    assert _gets(gcs, "shard-000002.tar") == 1  # a 404 is not retried
    gcs.proxy.faults.add("403", "shard-000000.tar", count=1)
    with pytest.raises(StorageError, match="denied") as denied:
        reader.get(0)
    errors.append(str(denied.value))
    assert (
        f"{url}/shard-000000.tar" in errors[-1] and "GOOGLE_APPLICATION_CREDENTIALS" in errors[-1]
    )
    assert _gets(gcs, "shard-000000.tar") == 1  # a 403 is not retried
    gcs.proxy.faults.add("503", "shard-000001.tar", count=100)
    with pytest.raises(SampleError) as failed:
        reader.get(5)
    errors.append(str(failed.value))
    assert f"{url}/shard-000001.tar" in errors[-1] and failed.value.key == "s000005"
    assert "4 attempts" in errors[-1] and "503" in errors[-1]
    gcs.reset()
    with pytest.raises(StorageError, match="does not exist") as nowhere:
        StreamedDataset(f"{url}-nowhere", modalities(), storage_options=options)
    errors.append(str(nowhere.value))
    loader = balanced_loader(
        IndexedDataset(url, modalities(), storage_options=options, prefetch=0), None, batch_size=2
    )
    next(iter(loader))
    errors.append(repr(loader.state_dict()))
    assert main(["inspect", f"{url}-nowhere"]) != 0
    errors.append(capsys.readouterr().err)
    for text in errors:
        assert TOKEN not in text and "ya29" not in text and "alt=media" not in text, text


def test_tokens_in_client_error_text_are_scrubbed() -> None:
    # what requests prints when gcsfs checks a raw token string and cannot reach the endpoint
    said = "Max retries exceeded with url: /tokeninfo?access_token=ya29.SECRET (Caused by X)"
    assert scrub(said) == "Max retries exceeded with url: /tokeninfo (Caused by X)"


LABELS = [0, 1, 2, 0, 1, 2, 1]  # 7 rows: 3 shards of 3, 3, 1


def _labels(url: str) -> list[int]:
    ds = IndexedDataset(url, {"text": Text(byte_ids=True, max_length=4)})
    return [ds.get(i)["label"] for i in range(len(LABELS))]


def test_shard_to_gs_then_inspect_index_and_verify(
    gcs: GCS, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    table = tmp_path / "table.csv"
    rows = [f"r{i},{label},row {i}" for i, label in enumerate(LABELS)]
    table.write_text("key,label,txt\n" + "\n".join(rows) + "\n")
    url = gcs.url("sharded")
    args = ["shard", str(table), url, "--workers", "1", "--samples-per-shard", "3", "--verify"]
    assert main(args) == 0
    said = capsys.readouterr().out
    assert f"published them to {url}" in said and f"{url}/manifest.json: 7 samples" in said
    assert "verify: OK" in said
    assert gcs.names("sharded") == sorted(
        ["manifest.json", "index-bundle.npy"]
        + [f"shard-00000{n}.{ext}" for n in range(3) for ext in ("tar", "idx.npy", "json")]
    )  # every temporary key renamed away
    assert _labels(url) == LABELS
    assert main(["inspect", url]) == 0
    assert f"dataset {url}" in capsys.readouterr().out
    fs = gcs.fs()
    for name in ("manifest.json", "shard-000000.idx.npy", "shard-000001.idx.npy"):
        fs.rm_file(f"{BUCKET}/sharded/{name}")
    gcs.reset()
    assert main(["index", url, "--verify"]) == 0
    said = capsys.readouterr().out
    assert f"indexed {url}/manifest.json: 7 samples in 3 shards" in said and "verify: OK" in said
    tars = [p for m, p, _ in gcs.proxy.faults.log if m == "GET" and ".tar?" in p]
    assert sorted(p.split("%2F")[-1].split("?")[0] for p in tars) == [
        f"shard-00000{n}.tar" for n in range(3)
    ]  # each shard read once
    assert _labels(url) == LABELS


def test_interrupted_shard_job_leaves_nothing_a_reader_accepts(
    gcs: GCS, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    table = tmp_path / "table.csv"
    rows = [f"r{i},{label},row {i}" for i, label in enumerate(LABELS)]
    table.write_text("key,label,txt\n" + "\n".join(rows) + "\n")
    url = gcs.url("cut")
    args = ["shard", str(table), url, "--workers", "1", "--samples-per-shard", "3"]
    # the upload's object name travels in its body: deny shard 1's rename (moveTo, then the
    # rewriteTo gcsfs falls back to), so its tar never appears under its name
    gcs.proxy.faults.add("403", "shard-000001.tar", count=2, method="POST")
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "denied" in err and f"{url}/shard-000001.tar" in err
    names = gcs.names("cut")
    assert "manifest.json" not in names and "shard-000001.tar" not in names
    assert not [n for n in names if n.endswith(".tmp")]  # the temporary key removed
    with pytest.raises(StorageError, match=r"manifest\.json does not exist"):
        IndexedDataset(url, {"text": Text(byte_ids=True, max_length=4)})
    gcs.reset()
    assert main(args) == 0
    uploads = [p for m, p, _ in gcs.proxy.faults.log if m == "POST" and "moveTo" in p]
    assert not [p for p in uploads if "shard-000000" in p]  # published before: not again
    assert [p for p in uploads if "shard-000001.tar" in p]
    assert _labels(url) == LABELS


def test_forked_workers_read_gs(gcs: GCS, uploaded: str, local: Path) -> None:
    def ids(root: str, workers: int) -> list[list[int]]:
        loader = balanced_loader(
            root, None, modalities=modalities(), batch_size=4, num_workers=workers
        )
        loader.set_epoch(1)
        return [b.ids.tolist() for b in loader]

    assert ids(uploaded, 2) == ids(str(local), 2)


def test_resume_round_trip_on_gs(gcs: GCS, uploaded: str) -> None:
    def make(epoch: int) -> Any:
        loader = balanced_loader(uploaded, None, modalities=modalities(), batch_size=4, seed=2)
        loader.set_epoch(epoch)
        return loader

    check_resume(make, items, stops=[0, 3])


def test_missing_gcsfs_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    from mmsample.storage import filesystem

    filesystem._gcs_class.cache_clear()
    for name in [m for m in sys.modules if m == "gcsfs" or m.startswith("gcsfs.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "gcsfs", None)  # `import gcsfs` raises ImportError
    try:
        store = open_store("gs://some-bucket/data")
        with pytest.raises(StorageError, match=r"pip install 'mmsample\[gcs\]'"):
            store.read("manifest.json")
        with pytest.raises(StorageError, match=r"pip install 'mmsample\[gcs\]'"):
            StreamedDataset("gs://some-bucket/data", modalities())
    finally:
        filesystem._gcs_class.cache_clear()


def test_a_gcsfs_without_the_retry_decorator_is_said(monkeypatch: pytest.MonkeyPatch) -> None:
    from gcsfs.core import GCSFileSystem

    from mmsample.storage import filesystem

    # a gcsfs whose _request is no longer wrapped by retry_request: nothing to remove, said once
    monkeypatch.setattr(GCSFileSystem, "_request", GCSFileSystem._request.__wrapped__)
    filesystem._gcs_class.cache_clear()
    try:
        with pytest.warns(
            RuntimeWarning, match=r"no retry_request decorator found on GCSFileSystem\._request \("
        ):
            cls = filesystem._gcs_class()
        assert issubclass(cls, GCSFileSystem)
    finally:
        filesystem._gcs_class.cache_clear()
