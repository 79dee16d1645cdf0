"""The s3:// clients (s3fs and obstore) on real local servers: the file-backed S3 endpoint
(`LocalServer(s3=True)`) answers reads as S3 does; both clients deliver every item once, equal
to local disk, through moto's server and the file-backed endpoint, in both modes; transient
faults retried and permanent ones named alike by both; DataLoader workers forked from a
process that never used obstore read through obstore, and from one that did, through s3fs (no
hang); the client chosen by a validated name."""

from __future__ import annotations

import datetime
import hashlib
import json
import multiprocessing
import subprocess
import sys
import warnings
from collections import Counter
from collections.abc import Iterator
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import pytest
import torch

from mmsample.errors import SampleError, StorageError
from mmsample.loader import balanced_loader
from mmsample.shards import IndexedDataset, StreamedDataset
from mmsample.storage import RetryPolicy, open_store
from mmsample.storage.local_server import LocalServer
from mmsample.storage.obstore_client import ObstoreStore, obstore_config
from mmsample.storage.store import ClientNotice, FsspecStore

from .loader_helpers import N, items, modalities, write_dataset
from .remote_helpers import S3, local_s3

FAST = RetryPolicy(attempts=4, base_delay=0.01, max_delay=0.05, timeout=1.0)
CLIENTS = ("fsspec", "obstore")
SECRET = "SECRET-never-printed"
AGENT = {"fsspec": "botocore", "obstore": "object_store"}  # User-Agent of each client


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("obstore") / "shards"  # the endpoint's bucket "shards"
    write_dataset(root)  # 22 samples (wav + npy) in 5 shards
    return root


@pytest.fixture(scope="module")
def endpoint(local: Path) -> Iterator[LocalServer]:
    with LocalServer(folder=local.parent, s3=True, stall=3.0) as server:
        yield server


@pytest.fixture
def files(endpoint: LocalServer) -> LocalServer:
    endpoint.faults.clear()
    return endpoint


def options(server: LocalServer, client: str) -> dict[str, Any]:
    """s3fs-style storage options for the file-backed endpoint (obstore's are translated)."""
    return {
        "client": client,
        "endpoint_url": server.url,
        "key": "k",
        "secret": SECRET,
        "client_kwargs": {"region_name": "us-east-1"},
    }


def tar_agents(log: list[tuple[str, str, str]], agents: list[str]) -> set[str]:
    """Which client sent the GETs of shard tars (by User-Agent)."""
    found = {a for (m, p, _), a in zip(log, agents) if m == "GET" and p.endswith(".tar")}
    return {name for name, mark in AGENT.items() if any(mark in a for a in found)}


def _batches(reader: Any, **kw: Any) -> list[Any]:
    return list(balanced_loader(reader, None, batch_size=4, **kw))


def _same_batches(got: list[Any], want: list[Any]) -> None:
    assert [b.ids.tolist() for b in got] == [b.ids.tolist() for b in want]
    for a, b in zip(got, want):
        assert torch.equal(a["audio"], b["audio"]) and torch.equal(a["feat"], b["feat"])


def test_file_backed_endpoint_answers_reads_as_s3_does(files: LocalServer, local: Path) -> None:
    import boto3
    from botocore.exceptions import ClientError

    s3 = boto3.client(
        "s3",
        endpoint_url=files.url,
        aws_access_key_id="k",
        aws_secret_access_key="s",
        region_name="us-east-1",
    )
    path = local / "shard-000001.tar"
    data = path.read_bytes()
    whole = s3.get_object(Bucket="shards", Key=path.name)
    assert whole["Body"].read() == data and whole["ContentLength"] == len(data)
    assert whole["ETag"] == f'"{hashlib.md5(data).hexdigest()}"'
    mtime = datetime.datetime.fromtimestamp(int(path.stat().st_mtime), datetime.timezone.utc)
    assert whole["LastModified"] == mtime
    part = s3.get_object(Bucket="shards", Key=path.name, Range="bytes=100-1099")
    assert part["ResponseMetadata"]["HTTPStatusCode"] == 206
    assert part["ContentRange"] == f"bytes 100-1099/{len(data)}"
    assert part["Body"].read() == data[100:1100]
    assert (
        s3.get_object(Bucket="shards", Key=path.name, Range="bytes=-7")["Body"].read()
        == (data[-7:])
    )
    head = s3.head_object(Bucket="shards", Key=path.name)
    assert head["ContentLength"] == len(data) and head["ETag"] == whole["ETag"]
    assert parsedate_to_datetime(head["ResponseMetadata"]["HTTPHeaders"]["last-modified"]) == (
        mtime
    )
    listed = s3.list_objects_v2(Bucket="shards", Prefix="shard-00000", Delimiter="/")
    want = sorted((p.name, p.stat().st_size) for p in local.glob("shard-00000*"))
    assert [(o["Key"], o["Size"]) for o in listed["Contents"]] == want
    for call, code, status in (
        (lambda: s3.get_object(Bucket="shards", Key="nope.tar"), "NoSuchKey", 404),
        (
            lambda: s3.get_object(Bucket="shards", Key=path.name, Range=f"bytes={len(data)}-"),
            "InvalidRange",
            416,
        ),
        (lambda: s3.put_object(Bucket="shards", Key="new", Body=b"x"), "NotImplemented", 501),
    ):
        with pytest.raises(ClientError) as raised:
            call()
        error = raised.value.response
        assert (error["Error"]["Code"], error["ResponseMetadata"]["HTTPStatusCode"]) == (
            code,
            status,
        )
    assert "read-only S3 endpoint" in str(raised.value)
    # both clients, through the storage layer: the same bytes as the file
    for client in CLIENTS:
        store = open_store("s3://shards", options(files, client), FAST)
        assert store.read_range(path.name, 5, 70_000) == data[5:70_000]
        assert store.read(path.name) == data
    assert tar_agents(files.faults.log, files.faults.agents) == set(CLIENTS)


@pytest.fixture(scope="module")
def moto() -> Iterator[S3]:
    with local_s3(stall=3.0) as s3:
        yield s3


@pytest.mark.parametrize("server", ["files", "moto"])
@pytest.mark.parametrize("mode", ["streamed", "indexed"])
def test_both_clients_deliver_every_item_once_equal_to_disk(
    files: LocalServer, moto: S3, local: Path, server: str, mode: str
) -> None:
    kind = StreamedDataset if mode == "streamed" else IndexedDataset
    want = _batches(kind(str(local), modalities()), mode=mode)
    assert Counter(i for b in want for i, _ in items(b)) == Counter(range(N))
    if server == "moto":
        moto.reset()
        url, proxy = moto.upload(local, f"equal-{mode}"), moto.proxy
    else:
        url, proxy = "s3://shards", files
    for client in CLIENTS:
        opts = options(files, client) if server == "files" else {"client": client}
        start = len(proxy.faults.log)
        got = _batches(kind(url, modalities(), storage_options=opts, retry=FAST), mode=mode)
        _same_batches(got, want)
        log, agents = proxy.faults.log[start:], proxy.faults.agents[start:]
        assert tar_agents(log, agents) == {client}


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("mode", ["streamed", "indexed"])
def test_transient_faults_retried_every_item_once(
    files: LocalServer, local: Path, client: str, mode: str
) -> None:
    kind = StreamedDataset if mode == "streamed" else IndexedDataset

    def run() -> list[tuple[int, int]]:
        reader = kind(
            "s3://shards", modalities(), storage_options=options(files, client), retry=FAST
        )
        return [x for b in _batches(reader, mode=mode) for x in items(b)]

    clean = run()
    for kind_, shard in (("503", "0"), ("reset", "1"), ("truncate", "2"), ("stall", "3")):
        files.faults.add(kind_, f"shard-00000{shard}.tar", count=2 if kind_ == "503" else 1)
    faulty = run()
    assert faulty == clean
    assert Counter(i for i, _ in faulty) == Counter(range(N))
    assert sorted(k for k, _ in files.faults.injected[-5:]) == [
        "503",
        "503",
        "reset",
        "stall",
        "truncate",
    ]


def test_permanent_faults_named_alike_by_both_clients(files: LocalServer, local: Path) -> None:
    policy = RetryPolicy(attempts=2, base_delay=0.0, timeout=2.0)
    texts = {}
    for client in CLIENTS:
        files.faults.add("503", "shard-000001.tar", count=100)
        reader = IndexedDataset(
            "s3://shards", modalities(), storage_options=options(files, client), retry=policy
        )
        with pytest.raises(SampleError) as raised:
            reader.get(5)  # shard 1 holds ids 5..9
        files.faults.cancel()
        text = texts[client] = str(raised.value)
        assert "s3://shards/shard-000001.tar" in text and raised.value.key == "s000005"
        assert "2 attempts" in text and "[SlowDown, HTTP 503]" in text
        files.faults.add("403", "shard-000002.tar", count=1)
        with pytest.raises(
            StorageError, match=r"access to s3://shards/shard-000002.tar was denied"
        ):
            reader.get(10)
        skipping = IndexedDataset(
            "s3://shards",
            modalities(),
            storage_options=options(files, client),
            retry=policy,
            on_error="skip",
        )
        moved = local.parent / f"moved-{client}"
        (local / "shard-000003.tar").rename(moved)
        try:
            with pytest.raises(StorageError, match=r"s3://shards/shard-000003.tar does not exist"):
                skipping.get(15)  # a missing shard is never skipped
        finally:
            moved.rename(local / "shard-000003.tar")
        assert SECRET not in text
    assert texts["fsspec"].split(": 2 attempts")[0] == texts["obstore"].split(": 2 attempts")[0]


def _forked_workers(url: str, opts: dict[str, Any], out: str) -> None:
    """In a fresh process: one epoch by 2 forked workers before this process used obstore,
    then one read here (obstore's runtime starts) and another epoch by forked workers."""
    result = {}
    reader = IndexedDataset(url, modalities(), storage_options=opts, retry=FAST)
    ctx = multiprocessing.get_context("fork")
    for epoch in ("fresh", "after"):
        if epoch == "after":
            assert reader.get(0)["key"] == "s000000"
        loader = balanced_loader(
            reader, None, batch_size=4, num_workers=2, multiprocessing_context=ctx, timeout=20
        )
        result[epoch] = [i for b in loader for i, _ in items(b)]
    Path(out).write_text(json.dumps(result))


def test_forked_workers_use_obstore_or_fall_back_without_hanging(
    files: LocalServer, tmp_path: Path
) -> None:
    out = tmp_path / "forked.json"
    proc = multiprocessing.get_context("spawn").Process(
        target=_forked_workers, args=("s3://shards", options(files, "obstore"), str(out))
    )
    proc.start()
    try:
        proc.join(90)  # a worker that hangs (obstore used across a fork) fails here
    finally:
        if proc.is_alive():
            proc.kill()  # its forked workers exit with it (DataLoader watches its parent)
    assert proc.exitcode == 0
    result = json.loads(out.read_text())
    for epoch in ("fresh", "after"):
        assert Counter(result[epoch]) == Counter(range(N)), epoch
    log, agents = files.faults.log, files.faults.agents
    tars = [(p, r, a) for (m, p, r), a in zip(log, agents) if m == "GET" and p.endswith(".tar")]
    # fresh epoch (every tar range by obstore in the workers), one read in the process, then
    # the workers forked after it: s3fs
    marks = ["obstore" if AGENT["obstore"] in a else "fsspec" for _, _, a in tars]
    first_fsspec = marks.index("fsspec")
    assert first_fsspec > 0 and set(marks[:first_fsspec]) == {"obstore"}
    assert set(marks[first_fsspec:]) == {"fsspec"}


def test_client_option_validated_and_obstore_options_translated(files: LocalServer) -> None:
    with pytest.raises(ValueError, match=r"must be one of \['fsspec', 'obstore'\].*got 'rust'"):
        open_store("s3://shards", {"client": "rust"})
    with pytest.raises(ValueError, match="chooses the client of s3://"):
        open_store("https://host/data", {"client": "obstore"})
    with pytest.raises(ValueError, match=r"\['requester_pays'\] have no obstore equivalent"):
        open_store("s3://shards", {"client": "obstore", "requester_pays": True})
    config, unknown = obstore_config(
        {
            "key": "a",
            "secret": "b",
            "token": "c",
            "anon": False,
            "client_kwargs": {"endpoint_url": "http://h:1", "region_name": "eu-west-1"},
            "config_kwargs": {"read_timeout": 5},
            "max_concurrency": 4,
        }
    )
    assert config == {
        "access_key_id": "a",
        "secret_access_key": "b",
        "session_token": "c",
        "skip_signature": False,
        "endpoint": "http://h:1",
        "aws_endpoint_url_s3": "http://h:1",
        "region": "eu-west-1",
    }
    assert unknown == ["max_concurrency"]
    assert isinstance(open_store("s3://shards", options(files, "obstore")), ObstoreStore)
    fsspec_store = open_store("s3://shards", options(files, "fsspec"))
    assert type(fsspec_store) is FsspecStore
    # the default: obstore (installed), or s3fs for options obstore cannot take (said once)
    plain = {k: v for k, v in options(files, "obstore").items() if k != "client"}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        import mmsample.storage.store as store_module

        store_module._said.clear()
        assert isinstance(open_store("s3://shards", plain), ObstoreStore)
        assert type(open_store("s3://shards", {**plain, "requester_pays": True})) is FsspecStore
        open_store("s3://shards", plain)
    notes = [str(w.message) for w in caught if issubclass(w.category, ClientNotice)]
    assert len(notes) == 2 and "obstore" in notes[0] and "requester_pays" in notes[1]


def test_obstore_not_installed_is_named() -> None:
    code = (
        "import sys; sys.modules['obstore'] = None\n"
        "from mmsample.storage import open_store\n"
        "assert type(open_store('s3://b/p')).__name__ == 'FsspecStore'\n"
        "try:\n"
        "    open_store('s3://b/p', {'client': 'obstore'})\n"
        "except ImportError as err:\n"
        "    print(err)\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert "'obstore' was chosen but obstore is not installed: pip install 'mmsample[s3]'" in (
        run.stdout
    )


def test_obstore_takes_a_profile_from_the_shared_credentials_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mmsample.storage.obstore_client import _credentials

    creds = tmp_path / "credentials"
    creds.write_text(
        "[default]\naws_access_key_id = DEFAULTKEY\naws_secret_access_key = d\n"
        "[team]\naws_access_key_id = TEAMKEY\naws_secret_access_key = t\n"
        "aws_session_token = TEAMTOKEN\n"
    )
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(creds))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_PROFILE", "team")
    before = datetime.datetime.now(datetime.timezone.utc)
    found = _credentials({}, {})()
    expires = found.pop("expires_at")
    assert found == {"access_key_id": "TEAMKEY", "secret_access_key": "t", "token": "TEAMTOKEN"}
    assert datetime.timedelta(minutes=14) < expires - before <= datetime.timedelta(minutes=16)
    assert _credentials({"profile": "default"}, {})()["access_key_id"] == "DEFAULTKEY"
    # keys given (options or environment) or unsigned requests: obstore's own configuration
    assert _credentials({}, {"access_key_id": "x"}) is None
    assert _credentials({"anon": True}, {"skip_signature": True}) is None
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "ENVKEY")
    assert _credentials({}, {}) is None


@pytest.mark.parametrize("client", CLIENTS)
def test_one_attempt_of_the_policy_is_one_request(
    files: LocalServer, local: Path, client: str
) -> None:
    """RetryPolicy(attempts=3) on a shard answering 503 (or stalling) every time: exactly 3
    GETs of it, whichever client (botocore's own retries off: its `max_attempts` counts
    retries, `total_max_attempts` attempts). A connection reset before any answer costs two
    requests an attempt with s3fs: aiohttp re-sends an idempotent request once (RFC 9112
    9.3.1), below every retry setting."""
    policy = RetryPolicy(attempts=3, base_delay=0.0, max_delay=0.0, timeout=1.0)
    reader = IndexedDataset(
        "s3://shards", modalities(), storage_options=options(files, client), retry=policy
    )
    for kind, per_attempt in (("503", 1), ("stall", 1), ("reset", 2 if client == "fsspec" else 1)):
        files.faults.add(kind, "shard-000002.tar", count=100)
        start = len(files.faults.log)
        with pytest.raises(SampleError, match="3 attempts"):
            reader.get(10)  # shard 2 holds ids 10..14
        files.faults.cancel()
        gets = [p for m, p, _ in files.faults.log[start:] if m == "GET" and "000002" in p]
        assert len(gets) == 3 * per_attempt, (kind, gets)
