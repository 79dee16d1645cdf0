"""The reference training loop reading its shards from object storage: `python -m
pipelines.train --data s3://...` (moto's S3 server on 127.0.0.1) trains the same batches to the
same metrics as the local copy, with and without a shard cache, and records the same data
fingerprint."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mmsample.report import data_fingerprint

from .remote_helpers import S3, local_s3

REPO = Path(__file__).resolve().parents[1]


def jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def trained(metrics: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The metrics that depend on what was trained (not on how long it took, nor on whether
    the process had decoded the same test set before)."""
    skip = ("time/", "throughput/", "eval/decoded", "work/decoded_eval")
    return [{k: v for k, v in m.items() if not k.startswith(skip)} for m in metrics]


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pipelines.avmnist import main

    out = tmp_path_factory.mktemp("avmnist")
    argv = ["--out", str(out), "--n", "20", "--samples-per-shard", "8", "--workers", "1"]
    assert main(argv) == 0
    return out / "shards"


@pytest.fixture(scope="module")
def s3(shards: Path) -> Iterator[S3]:
    with local_s3() as server:
        server.upload(shards, "avmnist")
        yield server


@pytest.mark.parametrize(("method", "mode"), [("dus", "streamed"), ("smv", "indexed")])
def test_training_from_s3_equals_training_from_the_local_copy(
    shards: Path, s3: S3, tmp_path: Path, method: str, mode: str
) -> None:
    from pipelines.training import main
    from pipelines.training.test_set import TEST_SETS

    TEST_SETS.clear()  # this process's decoded test sets: none yet
    common = ["--method", method, "--mode", mode, "--epochs", "2", "--batch-size", "3"]
    common += ["--workers", "1", "--threads", "1", "--trace", "--no-progress"]
    local, remote, cached = tmp_path / "local", tmp_path / "remote", tmp_path / "cached"
    cache = tmp_path / "cache"
    assert main(["--data", str(shards), "--out", str(local), *common]) == 0
    assert main(["--data", s3.url("avmnist"), "--out", str(remote), *common]) == 0
    argv = ["--data", s3.url("avmnist"), "--out", str(cached), *common]
    assert main([*argv, "--cache-dir", str(cache), "--cache-gb", "1"]) == 0
    for run in (remote, cached):
        assert jsonl(run / "trace-0.jsonl") == jsonl(local / "trace-0.jsonl")
        assert jsonl(run / "stats.jsonl") == jsonl(local / "stats.jsonl")
        assert trained(jsonl(run / "metrics.jsonl")) == trained(jsonl(local / "metrics.jsonl"))
    # the test set is decoded once per process and data location: the cached run (same URL)
    # reuses the remote run's
    decoded = [jsonl(r / "metrics.jsonl")[0]["eval/decoded"] for r in (local, remote, cached)]
    assert decoded == [10, 10, 0]
    configs = [json.loads((r / "config.json").read_text()) for r in (local, remote, cached)]
    assert configs[1]["data"] == s3.url("avmnist")
    # the same data, wherever it lives: one fingerprint (names, sizes, metadata content)
    assert configs[0]["data_fingerprint"] == configs[1]["data_fingerprint"]
    assert configs[1]["data_fingerprint"] == configs[2]["data_fingerprint"]
    # the cache holds every shard whole, byte for byte
    tars = sorted(p.name for p in shards.glob("*.tar"))
    kept = sorted((cache / "objects").iterdir())
    assert len(kept) == len(tars)
    for tar, entry in zip(tars, sorted(kept, key=lambda p: p.name.split("-", 1)[1])):
        assert entry.read_bytes() == (shards / tar).read_bytes()


def test_the_fingerprint_of_a_remote_folder_follows_its_files(
    shards: Path, s3: S3, tmp_path: Path
) -> None:
    """Independently of the code: one more file, or one metadata byte changed, changes it; a
    second copy under another prefix has the same one."""
    url = s3.url("avmnist")
    assert data_fingerprint(url) == data_fingerprint(shards)
    assert data_fingerprint(s3.upload(shards, "copy")) == data_fingerprint(shards)
    client = s3.client()
    client.put_object(Bucket="mmsample-test", Key="copy/extra.bin", Body=b"x")
    assert data_fingerprint(s3.url("copy")) != data_fingerprint(url)
    changed = tmp_path / "changed"
    changed.mkdir()
    for p in shards.iterdir():
        (changed / p.name).write_bytes(p.read_bytes())
    manifest = json.loads((changed / "manifest.json").read_text())
    manifest["name"] = "other"  # same size as before? no matter: content is hashed
    (changed / "manifest.json").write_text(json.dumps(manifest))
    assert data_fingerprint(s3.upload(changed, "changed")) == data_fingerprint(changed)
    assert data_fingerprint(changed) != data_fingerprint(shards)
    with pytest.raises(ValueError, match="no files under s3://mmsample-test/nothing"):
        data_fingerprint(s3.url("nothing"))


def test_a_cache_without_a_url_or_a_size_is_refused_naming_the_flags(
    shards: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from pipelines.training import main

    base = ["--data", str(shards), "--out", str(tmp_path / "run"), "--no-progress"]
    for extra, words in (
        (["--cache-dir", str(tmp_path / "c"), "--cache-gb", "1"], "is a local path"),
        (["--cache-dir", str(tmp_path / "c")], "--cache-dir and --cache-gb go together"),
    ):
        with pytest.raises(SystemExit) as stop:
            main([*base, *extra])
        assert stop.value.code == 2
        assert words in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "run" / "config.json")


@pytest.mark.slow
def test_two_ranks_under_torchrun_read_s3_through_one_shared_cache(
    shards: Path, s3: S3, tmp_path: Path
) -> None:
    """Two gloo ranks (torchrun) train from s3:// with both ranks sharing one cache folder:
    each rank's batches are the ones it trains from the local copy, and every shard was
    downloaded once into the cache."""
    from .test_demo import env

    def torchrun(data: str, out: Path, *extra: str) -> None:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
        cmd += ["--nproc_per_node", "2", "-m", "pipelines.train", "--data", data]
        cmd += ["--out", str(out), "--method", "dus", "--epochs", "2", "--batch-size", "3"]
        cmd += ["--threads", "1", "--trace", "--no-progress", *extra]
        done = subprocess.run(cmd, cwd=REPO, env=env(), capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]

    local, remote, cache = tmp_path / "local", tmp_path / "remote", tmp_path / "cache"
    torchrun(str(shards), local)
    torchrun(s3.url("avmnist"), remote, "--cache-dir", str(cache), "--cache-gb", "1")
    for rank in (0, 1):
        name = f"trace-{rank}.jsonl"
        assert jsonl(remote / name) == jsonl(local / name)
    steps = [len(jsonl(remote / f"trace-{r}.jsonl")) for r in (0, 1)]
    assert steps[0] == steps[1] > 0
    assert trained(jsonl(remote / "metrics.jsonl")) == trained(jsonl(local / "metrics.jsonl"))
    kept = list((cache / "objects").iterdir())
    assert len(kept) == len(list(shards.glob("*.tar")))
    assert not list((cache / "tmp").iterdir())  # no partial download left behind


def test_training_from_a_signed_https_style_url_never_writes_its_signature(
    shards: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A web server with Range support (a token in the query string, as a signed URL has):
    the run trains the local copy's batches, and neither config.json, the logs, nor the
    output hold the token; a folder that cannot be listed is fingerprinted by its manifest."""
    from mmsample.storage.local_server import LocalServer
    from pipelines.training import main

    common = ["--method", "dus", "--epochs", "1", "--batch-size", "3", "--threads", "1"]
    common += ["--trace", "--no-progress"]
    with LocalServer(folder=shards.parent) as server:
        url = f"{server.url}/{shards.name}?token=SECRET-7f3a"
        assert main(["--data", url, "--out", str(tmp_path / "web"), *common]) == 0
        fingerprint = data_fingerprint(url)
    assert main(["--data", str(shards), "--out", str(tmp_path / "local"), *common]) == 0
    web, local = tmp_path / "web", tmp_path / "local"
    assert jsonl(web / "trace-0.jsonl") == jsonl(local / "trace-0.jsonl")
    config = json.loads((web / "config.json").read_text())
    assert config["data"] == f"{server.url}/{shards.name}"
    assert config["data_fingerprint"] == fingerprint != data_fingerprint(shards)
    for path in web.rglob("*"):
        if path.is_file() and path.suffix in {".json", ".jsonl"}:
            assert "SECRET-7f3a" not in path.read_text(), path
    out = capsys.readouterr()
    assert "SECRET-7f3a" not in out.out + out.err


def test_training_from_a_pipe_source_streams_and_refuses_what_needs_byte_ranges(
    shards: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--data 'pipe:cat DIR/{name}'` trains in streamed mode (the local copy's batches); the
    options that read by id (indexed mode, wrap, a scoring pass, evaluation) are refused
    together, naming each flag and the fix."""
    from pipelines.training import main

    common = ["--method", "dus", "--epochs", "1", "--batch-size", "3", "--threads", "1"]
    common += ["--trace", "--no-progress", "--test-split", ""]
    pipe = f"pipe:cat {shards}/{{name}}"
    assert main(["--data", pipe, "--out", str(tmp_path / "pipe"), *common]) == 0
    assert main(["--data", str(shards), "--out", str(tmp_path / "local"), *common]) == 0
    trace = jsonl(tmp_path / "pipe" / "trace-0.jsonl")
    assert trace and trace == jsonl(tmp_path / "local" / "trace-0.jsonl")
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        main(
            ["--data", pipe, "--out", str(tmp_path / "no"), "--mode", "indexed", "--method", "bss"]
        )
    assert stop.value.code == 2
    err = capsys.readouterr().err
    for words in ("--mode indexed", "--method bss", "--test-split 'test'", "--mode streamed"):
        assert words in err, words
    assert not (tmp_path / "no").exists()
