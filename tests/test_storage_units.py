"""The storage layer's pure parts, checked against values worked out by hand: URL parsing and
redaction, range coalescing, the full-jitter backoff (bounds and mean), the transient /
permanent line, the retry loop, backend options, and the shard cache's LRU eviction."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from mmsample.errors import StorageError
from mmsample.storage import RetryPolicy, ShardCache, is_transient, open_store, parse_location
from mmsample.storage.filesystem import merged_options
from mmsample.storage.location import redact, scrub
from mmsample.storage.ranges import coalesce, split_read
from mmsample.storage.retry import ShortReadError, TransientFailure, with_retries


def test_locations_parse_and_print_without_secrets() -> None:
    s3 = parse_location("s3://bucket/some/prefix/")
    assert (s3.protocol, s3.path, s3.is_local) == ("s3", "bucket/some/prefix", False)
    assert s3.child("manifest.json").path == "bucket/some/prefix/manifest.json"
    web = parse_location("https://user:pw@host:8443/data?X-Amz-Signature=abc#frag")
    assert web.display == "https://host:8443/data" and not web.writable
    child = web.child("shard-000001.tar")
    assert child.url == "https://user:pw@host:8443/data/shard-000001.tar?X-Amz-Signature=abc#frag"
    assert child.display == "https://host:8443/data/shard-000001.tar"
    assert parse_location("file:///tmp/x").is_local and parse_location("rel/dir").is_local
    pipe = parse_location("pipe:curl -s https://h/d/{name}?t=1")
    assert pipe.child("manifest.json").path == "curl -s https://h/d/manifest.json?t=1"
    assert redact("plain/path?x") == "plain/path?x"
    assert scrub("GET https://h/p?sig=1 failed, s3://b/k?v=2") == "GET https://h/p failed, s3://b/k"
    with pytest.raises(ValueError, match=r"\{name\}"):
        parse_location("pipe:cat x.tar")
    with pytest.raises(ValueError, match="local path"):
        open_store("/tmp")


def test_coalesce_joins_touching_ranges_within_the_limit() -> None:
    starts = np.array([1024, 0, 512, 4096, 2048, 2560])
    ends = np.array([1536, 512, 1024, 4608, 2560, 3072])
    groups = coalesce(starts, ends, gap=0, max_bytes=1 << 20)
    # sorted by start: [0,512) [512,1024) [1024,1536) | [2048,2560) [2560,3072) | [4096,4608)
    assert [g.tolist() for g in groups] == [[1, 2, 0], [4, 5], [3]]
    assert [g.tolist() for g in coalesce(starts, ends, gap=512, max_bytes=1 << 20)] == [
        [1, 2, 0, 4, 5],
        [3],
    ]
    assert [g.tolist() for g in coalesce(starts, ends, gap=0, max_bytes=1024)] == [
        [1, 2],
        [0],
        [4, 5],
        [3],
    ]
    data = bytes(range(256)) * 4
    assert split_read(data, 100, np.array([100, 150]), np.array([110, 160])) == [
        data[0:10],
        data[50:60],
    ]


def test_full_jitter_delays_are_uniform_below_the_cap() -> None:
    policy = RetryPolicy(attempts=6, base_delay=0.5, max_delay=3.0)
    rng = random.Random(7)
    for attempt, cap in enumerate([0.5, 1.0, 2.0, 3.0, 3.0]):
        draws = np.array([policy.delay(attempt, rng) for _ in range(4000)])
        assert draws.min() >= 0 and draws.max() <= cap
        # uniform on [0, cap]: mean cap/2, standard error cap / sqrt(12 * 4000); 5 sigma
        assert abs(draws.mean() - cap / 2) < 5 * cap / np.sqrt(12 * 4000)
    with pytest.raises(ValueError, match="attempts"):
        RetryPolicy(attempts=0)
    with pytest.raises(ValueError, match="timeout"):
        RetryPolicy(timeout=0)


class _Coded(Exception):
    def __init__(self, code: str, status: int) -> None:
        super().__init__(code)
        self.response = {"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}


def test_transient_and_permanent_faults() -> None:
    assert is_transient(ConnectionResetError()) and is_transient(TimeoutError())
    assert is_transient(ShortReadError("got 3 of 9 bytes"))
    assert is_transient(_Coded("SlowDown", 503)) and is_transient(_Coded("InternalError", 500))
    assert is_transient(OSError(16, "Please reduce your request rate."))
    assert not is_transient(_Coded("AccessDenied", 403)) and not is_transient(
        _Coded("NoSuchKey", 404)
    )
    assert not is_transient(FileNotFoundError("x")) and not is_transient(PermissionError("x"))
    assert not is_transient(ValueError("unknown")) and not is_transient(KeyError("x"))
    wrapped = OSError("wrapped")
    wrapped.__cause__ = ConnectionResetError()
    assert is_transient(wrapped)


def test_retry_loop() -> None:
    slept: list[float] = []
    calls = iter([ConnectionResetError(), _Coded("SlowDown", 503), "ok"])

    def flaky() -> str:
        value = next(calls)
        if isinstance(value, BaseException):
            raise value
        return value

    policy = RetryPolicy(attempts=3, base_delay=1.0, max_delay=8.0)
    assert with_retries(flaky, policy, "get x", sleep=slept.append) == "ok"
    assert len(slept) == 2 and slept[0] <= 1.0 and slept[1] <= 2.0
    with pytest.raises(
        TransientFailure, match=r"get y: 3 attempts failed; the last with ConnectionResetError"
    ):
        with_retries(
            lambda: (_ for _ in ()).throw(ConnectionResetError()),
            policy,
            "get y",
            sleep=slept.append,
        )
    count = 0

    def denied() -> None:
        nonlocal count
        count += 1
        raise PermissionError("403")

    with pytest.raises(PermissionError):
        with_retries(denied, policy, "get z", sleep=slept.append)
    assert count == 1  # a permanent fault is not retried


def test_backend_options_set_timeouts_under_the_users() -> None:
    policy = RetryPolicy(timeout=7.0)
    s3 = merged_options("s3", policy, {"config_kwargs": {"read_timeout": 99}, "anon": True})
    assert s3["anon"] is True and s3["config_kwargs"]["read_timeout"] == 99
    assert s3["config_kwargs"]["connect_timeout"] == 7.0
    assert s3["config_kwargs"]["retries"] == {"total_max_attempts": 1, "mode": "standard"}
    http = merged_options("https", policy, None)
    assert http["client_kwargs"]["timeout"].sock_read == 7.0
    assert merged_options("memory", policy, None) == {}


def test_cache_evicts_least_recently_used_and_skips_oversized(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for name, size in (("a.tar", 400), ("b.tar", 300), ("c.tar", 500), ("big.tar", 2000)):
        (src / name).write_bytes(bytes([len(name)]) * size)
    store = open_store(f"pipe:cat {src}/{{name}}")
    cache = ShardCache(tmp_path / "cache", max_bytes=1000)
    a = cache.fetch(store, "a.tar", 400)
    b = cache.fetch(store, "b.tar", 300)
    assert a is not None and b is not None and a.read_bytes() == (src / "a.tar").read_bytes()
    import os
    import time

    os.utime(b, (time.time() - 100, time.time() - 100))  # b used longest ago
    os.utime(a, (time.time() - 50, time.time() - 50))
    c = cache.fetch(store, "c.tar", 500)  # 400 + 300 + 500 > 1000: b goes
    assert c is not None and c.exists() and a.exists() and not b.exists()
    assert cache.used() == 900
    with pytest.warns(UserWarning, match="larger than the cache"):
        assert cache.fetch(store, "big.tar", 2000) is None
    (src / "huge.tar").write_bytes(b"h" * 3000)
    import warnings

    with warnings.catch_warnings():  # said once per process: not again for another shard
        warnings.simplefilter("error")
        assert cache.fetch(store, "huge.tar", 3000) is None
        assert cache.fetch(store, "big.tar", 2000) is None
    with pytest.raises(ValueError, match="max_bytes"):
        ShardCache(tmp_path / "x", 0)
    with pytest.raises(StorageError, match="read-only"):
        store.write_bytes("x", b"")


def test_a_url_is_never_taken_for_a_local_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """What must be on this machine (output folders, the cache, staging, subset output)
    refuses a URL naming the option; a URL that lost a slash (`s3:/b`, what pathlib.Path makes
    of `s3://b`) is refused everywhere with the fix; nothing named `s3:` is ever created."""
    from mmsample.active.subset import write_subset
    from mmsample.cli import main as cli
    from mmsample.sharding.remote_output import staging_folder
    from mmsample.storage.location import require_local
    from pipelines.training import main as train

    monkeypatch.chdir(tmp_path)
    for mangled in ("s3:/bucket/x", Path("s3://bucket/x"), "gs:/b"):
        with pytest.raises(ValueError, match=r"lost a slash .*give it as a string, (s3|gs)://"):
            parse_location(mangled)
    assert parse_location("C:/data").is_local  # a drive letter stays a path
    assert require_local("runs/x", "--out") == Path("runs/x")
    with pytest.raises(ValueError, match=r"ShardCache's 'directory' must be a local path; s3://"):
        ShardCache("s3://bucket/cache?token=SECRET", max_bytes=10)
    with (
        pytest.raises(ValueError, match=r"staging folder .* must be a local path"),
        staging_folder("gs://bucket/stage"),
    ):
        pass
    with pytest.raises(ValueError, match=r"'out' parameter of write_subset .* local path"):
        write_subset(tmp_path / "nowhere", [0], "s3://bucket/subset")
    commands = (
        (cli, ["subset", "s3://bucket/data", "ids.json", "s3://bucket/subset"], "argument out"),
        (cli, ["report", "s3://bucket/runs"], "argument run_dir"),
        (train, ["--data", "s3://b/d", "--out", "s3://b/runs/x"], "argument --out"),
        (train, ["--data", "s3://b/d", "--out", "r", "--cache-dir", "s3://b/c"], "--cache-dir"),
    )
    for run, argv, flag in commands:
        with pytest.raises(SystemExit) as stop:
            run(argv)
        assert stop.value.code == 2
        err = capsys.readouterr().err
        assert f"{flag}: must be a local path" in err and "s3://b" in err and "SECRET" not in err
    assert list(tmp_path.iterdir()) == []  # no folder named `s3:` (nor anything else)
