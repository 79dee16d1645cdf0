"""Both readers and the loader on shards served by real local servers: moto's S3 server (behind
a fault-injecting proxy) for s3://, a Range-capable HTTP file server for https-style URLs, and
pipe: commands. Same tensors as from local disk; every planned item exactly once after
transient faults; permanent faults named (URL without secrets, key, last error); storage
errors never skipped; resume and two gloo ranks on s3://."""

from __future__ import annotations

import json
import shutil
import warnings
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from mmsample.errors import SampleError, StorageError
from mmsample.loader import balanced_loader
from mmsample.resume_check import check_resume
from mmsample.shards import IndexedDataset, StreamedDataset
from mmsample.shards.index_bundle import BUNDLE, BundleWarning
from mmsample.storage import RetryPolicy
from mmsample.storage.local_server import LocalServer

from .loader_helpers import N, items, modalities, write_dataset
from .remote_helpers import S3, local_s3

FAST = RetryPolicy(attempts=4, base_delay=0.01, max_delay=0.05, timeout=1.0)


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("remote") / "shards"
    write_dataset(root)  # 22 samples (wav + npy) in 5 shards
    return root


@pytest.fixture(scope="module")
def s3_server() -> Iterator[S3]:
    with local_s3(stall=3.0) as s3:
        yield s3


@pytest.fixture
def s3(s3_server: S3, local: Path) -> S3:
    s3_server.reset()
    return s3_server


@pytest.fixture(scope="module")
def uploaded(s3_server: S3, local: Path) -> str:
    return s3_server.upload(local, "data")


def _same(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert (a["id"], a["key"], a["label"]) == (b["id"], b["key"], b["label"])
    for name in ("audio", "feat"):
        assert torch.equal(a[name], b[name]), (a["key"], name)


def test_streamed_s3_equals_local_and_streams_each_shard(
    s3: S3, uploaded: str, local: Path
) -> None:
    here = list(StreamedDataset(str(local), modalities(), shuffle=4, seed=1))
    s3.reset()
    there = list(StreamedDataset(uploaded, modalities(), shuffle=4, seed=1))
    assert len(there) == N
    for a, b in zip(here, there):
        _same(a, b)
    log = s3.proxy.faults.log
    tars = [p for m, p, _ in log if m == "GET" and p.endswith(".tar")]
    # one sequential chunk request per shard (shards are far below the 16 MiB chunk), no stat
    assert sorted(Counter(tars).values()) == [1] * 5
    assert not [m for m, _, _ in log if m == "HEAD"]
    # opening: the manifest and the consolidated index, nothing per shard or sample
    opening = [p.rsplit("/", 1)[-1] for m, p, _ in log if m == "GET" and not p.endswith(".tar")]
    assert opening == ["manifest.json", "index-bundle.npy"]


@pytest.mark.parametrize(
    ("case", "said"),
    [("unnamed", "names no consolidated offset index"), ("missing", "named in manifest.json but")],
)
def test_without_a_consolidated_index_each_shards_index_is_read_with_a_warning(
    s3: S3, local: Path, tmp_path: Path, case: str, said: str
) -> None:
    """Shards whose manifest names no bundle (written by another tool), or whose bundle was
    not copied: the manifest and the five per-shard indexes, the same samples, and a
    BundleWarning naming the fix."""
    bare = tmp_path / case
    bare.mkdir()
    for p in local.iterdir():
        if p.name != BUNDLE:
            (bare / p.name).write_bytes(p.read_bytes())
    if case == "unnamed":
        manifest = json.loads((bare / "manifest.json").read_text())
        del manifest["extra"]["index_bundle"]
        (bare / "manifest.json").write_text(json.dumps(manifest))
    url = s3.upload(bare, case)
    s3.reset()
    with pytest.warns(BundleWarning, match=f"{said}.*`mmsample index URL`"):
        there = list(StreamedDataset(url, modalities(), shuffle=4, seed=1))
    here = list(StreamedDataset(str(local), modalities(), shuffle=4, seed=1))
    assert len(here) == len(there) == N
    for a, b in zip(here, there):
        _same(a, b)
    log = s3.proxy.faults.log
    opening = [p.rsplit("/", 1)[-1] for m, p, _ in log if m == "GET" and not p.endswith(".tar")]
    tried = ["index-bundle.npy"] if case == "missing" else []
    indexes = [f"shard-00000{n}.idx.npy" for n in range(5)]
    assert sorted(opening) == sorted(["manifest.json", *tried, *indexes])


def test_indexed_http_prefetch_coalesces_ranges(local: Path) -> None:
    with LocalServer(folder=local.parent) as server:
        url = f"{server.url}/{local.name}"
        ref = balanced_loader(
            str(local), None, modalities=modalities(), batch_size=4, mode="indexed"
        )
        loader = balanced_loader(url, None, modalities=modalities(), batch_size=4, mode="indexed")
        got = [b for b in loader]
        want = [b for b in ref]
        assert [b.ids.tolist() for b in got] == [b.ids.tolist() for b in want]
        for a, b in zip(got, want):
            assert torch.equal(a["audio"], b["audio"]) and torch.equal(a["feat"], b["feat"])
        ranged = [r for m, p, r in server.faults.log if p.endswith(".tar") and r]
        # every sample read, by range; touching ranges of a shard asked together are one request
        assert 0 < len(ranged) < N


def test_pipe_streams_and_refuses_indexed(local: Path) -> None:
    url = f"pipe:cat {local}/{{name}}"
    for a, b in zip(StreamedDataset(url, modalities()), StreamedDataset(str(local), modalities())):
        _same(a, b)
    with pytest.raises(StorageError, match="streamed-only"):
        IndexedDataset(url, modalities())
    with pytest.raises(ValueError, match=r"\{name\}"):
        StreamedDataset("pipe:cat shards.tar", modalities())


@pytest.mark.parametrize("mode", ["streamed", "indexed"])
def test_transient_faults_every_item_exactly_once(s3: S3, uploaded: str, mode: str) -> None:
    def run() -> list[tuple[int, int]]:
        reader = (StreamedDataset if mode == "streamed" else IndexedDataset)(
            uploaded, modalities(), retry=FAST
        )
        loader = balanced_loader(reader, None, batch_size=4)
        return [x for b in loader for x in items(b)]

    clean = run()
    for kind, shard in (("503", "0"), ("reset", "1"), ("truncate", "2"), ("stall", "3")):
        s3.proxy.faults.add(kind, f"shard-00000{shard}.tar", count=2 if kind == "503" else 1)
    faulty = run()
    assert faulty == clean
    assert Counter(i for i, _ in faulty) == Counter(range(N))  # each sample exactly once
    assert sorted(k for k, _ in s3.proxy.faults.injected) == [
        "503",
        "503",
        "reset",
        "stall",
        "truncate",
    ]


def test_permanent_fault_names_url_key_and_error_and_skips(s3: S3, uploaded: str) -> None:
    policy = RetryPolicy(attempts=2, base_delay=0.0, timeout=2.0)
    s3.proxy.faults.add("503", "shard-000001.tar", count=100)
    reader = IndexedDataset(uploaded, modalities(), retry=policy, prefetch=0)
    with pytest.raises(SampleError) as raised:
        reader.get(5)  # shard 1 holds ids 5..9
    text = str(raised.value)
    assert f"{uploaded}/shard-000001.tar" in text and raised.value.key == "s000005"
    assert "2 attempts" in text and "[SlowDown, HTTP 503]" in text
    skipping = IndexedDataset(uploaded, modalities(), retry=policy, on_error="skip", prefetch=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = skipping[5]
    assert out["shard"] != "shard-000001.tar" and skipping.skipped == 1
    assert any("s000005" in str(w.message) for w in caught)


def test_storage_errors_are_never_skipped(s3: S3, local: Path) -> None:
    url = s3.upload(local, "gone")
    reader = IndexedDataset(url, modalities(), on_error="skip", retry=FAST, prefetch=0)
    s3.client().delete_object(Bucket="mmsample-test", Key="gone/shard-000002.tar")
    with pytest.raises(StorageError, match=f"{url}/shard-000002.tar does not exist"):
        reader[10]
    s3.proxy.faults.add("403", "shard-000000.tar", count=1)
    with pytest.raises(StorageError, match="denied"):
        reader[0]
    with pytest.raises(StorageError, match="does not exist"):
        StreamedDataset(f"{url}-nowhere", modalities())


def test_secrets_never_printed(local: Path) -> None:
    with LocalServer(folder=local.parent) as server:
        url = f"{server.url}/{local.name}?X-Amz-Signature=SECRET123"
        reader = IndexedDataset(url, modalities(), retry=FAST, prefetch=0)
        assert len(reader) == N and reader.get(3)["key"] == "s000003"
        moved = local.parent / "moved.tar"
        shutil.move(local / "shard-000000.tar", moved)
        try:
            with pytest.raises(StorageError) as raised:
                reader.get(0)
        finally:
            shutil.move(moved, local / "shard-000000.tar")
        assert "SECRET123" not in str(raised.value) and "shard-000000.tar" in str(raised.value)
        loader = balanced_loader(reader, None, batch_size=4)
        next(iter(loader))
        assert "SECRET123" not in repr(loader.state_dict())


def test_resume_round_trip_on_s3(s3: S3, uploaded: str) -> None:
    def make(epoch: int) -> Any:
        loader = balanced_loader(uploaded, None, modalities=modalities(), batch_size=4, seed=2)
        loader.set_epoch(epoch)
        return loader

    check_resume(make, items, stops=[0, 3])


def test_cache_keeps_whole_shards_lru_and_never_partial(
    s3: S3, uploaded: str, local: Path, tmp_path: Path
) -> None:
    from mmsample.storage import ShardCache

    sizes = sorted(p.stat().st_size for p in local.glob("*.tar"))
    cache = ShardCache(tmp_path / "cache", max_bytes=sizes[-1] + sizes[-2])  # two shards fit
    reader = StreamedDataset(uploaded, modalities(), cache=cache, retry=FAST)
    first = [x["key"] for x in reader]
    assert first == [x["key"] for x in StreamedDataset(str(local), modalities())]
    assert 0 < cache.used() <= cache.max_bytes
    assert len(list((tmp_path / "cache" / "objects").iterdir())) == 2
    # a download cut short (every attempt truncated) leaves no entry that could be read
    broken = ShardCache(tmp_path / "broken", max_bytes=1 << 30)
    s3.proxy.faults.add("truncate", "shard-000004.tar", count=100)
    with pytest.raises(SampleError):
        list(
            StreamedDataset(
                uploaded, modalities(), cache=broken, retry=RetryPolicy(2, 0.0, 0.0, 1.0)
            )
        )
    entries = [p.name for p in (tmp_path / "broken" / "objects").iterdir()]
    assert entries and not [e for e in entries if e.endswith("shard-000004.tar")]
    assert not any((tmp_path / "broken" / "tmp").iterdir())


def _rank(rank: int, world: int, init: str, url: str, endpoint: str, out: str) -> None:
    import os

    from .remote_helpers import AWS_ENV

    os.environ.update(AWS_ENV, AWS_ENDPOINT_URL_S3=endpoint)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        result = {}
        for mode in ("streamed", "indexed"):
            # streamed through a forked DataLoader worker (its own client), indexed in-process
            workers = 1 if mode == "streamed" else 0
            loader = balanced_loader(
                url, None, modalities=modalities(), batch_size=4, mode=mode, num_workers=workers
            )
            loader.set_epoch(1)
            result[mode] = ([b.ids.tolist() for b in loader], len(loader))
        torch.save(result, f"{out}{rank}.pt")
        dist.barrier()
    finally:
        dist.destroy_process_group()


def test_two_gloo_ranks_on_s3_equal_batches_cover_every_sample(
    s3: S3, uploaded: str, tmp_path: Path
) -> None:
    init = f"file://{tmp_path / 'rendezvous'}"
    out = str(tmp_path / "rank")
    args = (2, init, uploaded, s3.proxy.url, out)
    mp.start_processes(_rank, args=args, nprocs=2, start_method="spawn")
    r0, r1 = (torch.load(f"{out}{r}.pt") for r in (0, 1))
    for mode in ("streamed", "indexed"):
        (b0, n0), (b1, n1) = r0[mode], r1[mode]
        assert len(b0) == len(b1) == n0 == n1, mode
        ids = Counter(i for batch in b0 + b1 for i in batch)
        assert set(ids) == set(range(N)), mode
        assert sum(ids.values()) - N <= 1, mode  # at most world_size - 1 padding items
