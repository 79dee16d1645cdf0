"""Benchmark reading shards from a remote store against local disk: http:// (fsspec) and s3://
through both clients (s3fs, obstore).

Builds its own shards (default 480 samples: a 2 s 16 kHz wav and a 256-float npy each, 60 a
shard) in a temp folder and serves that folder from local servers in their own processes
(`mmsample.storage.local_server.LocalServer`, file-backed, every byte range read from disk like
an object store; moto's S3 server slices the whole object on every ranged GET, so it is not used
here): plain HTTP with Range support, and the same files as a read-only S3 endpoint
(`s3=True`, path-style, the folder `shards` its bucket) read as `s3://shards` with
`storage_options={"client": "fsspec"}` (s3fs) and `{"client": "obstore"}`. Each request waits
`--latency` ms first (0 and 20 ms: a cloud region). For streamed and indexed reading it prints
items/s from local disk and from each server and client, with the same decoder
(`Audio(field="wav", seconds=1.0)`, log spectrogram, and `Array(field="npy")`) through
`balanced_loader`, and a raw-bytes run (each sample's bytes read and parsed, nothing decoded),
median of `--repeats` epochs (each round times every source once, in turn), the ratios to disk
measured in the same run and obstore / s3fs.
Goals: streamed >= 0.9x and indexed >= 0.5x at 20 ms. With `--workers` > 0 every source's
DataLoader workers start by forkserver (obstore is not fork-safe once the main process used it).

Run: `.venv/bin/python tools/bench_remote.py` (about six minutes on 2 cores); `--help` for sizes.
"""

from __future__ import annotations

import argparse
import datetime
import multiprocessing as mp
import os
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmsample.decoding import Array, Audio
from mmsample.loader import balanced_loader
from mmsample.sharding import write_samples
from mmsample.shards import IndexedDataset, StreamedDataset
from mmsample.storage.local_server import LocalServer
from mmsample.storage.store import ClientNotice
from mmsample.testing import encode_npy, encode_wav


def build(root: Path, samples: int, per_shard: int) -> None:
    rng = np.random.default_rng(0)

    def rows() -> Any:
        for i in range(samples):
            t = np.arange(32000) / 16000
            audio = 0.3 * np.sin(2 * np.pi * (200 + i % 50 * 10) * t) + 0.01 * rng.normal(
                size=t.size
            )
            feat = rng.normal(size=256).astype(np.float32)
            yield f"s{i:06d}", i % 10, {"wav": encode_wav(audio), "npy": encode_npy(feat)}

    # with its consolidated offset index (opening a remote copy: two requests)
    write_samples(root, rows(), [f"c{c}" for c in range(10)], per_shard)


def modalities() -> dict[str, Any]:
    return {"audio": Audio(field="wav", seconds=1.0), "feat": Array(field="npy")}


def reader(source: str, mode: str, options: dict[str, Any] | None) -> Any:
    """The reader of `mode` on `source` (`options`: the storage options of a URL)."""
    if mode == "streamed":
        return StreamedDataset(source, modalities(), storage_options=options)
    return IndexedDataset(source, modalities(), storage_options=options)


def decoded(
    source: str, mode: str, batch: int, workers: int, options: dict[str, Any] | None
) -> Callable[[], int]:
    def run() -> int:
        extra: dict[str, Any] = {"multiprocessing_context": "forkserver"} if workers else {}
        loader = balanced_loader(
            reader(source, mode, options),
            None,
            batch_size=batch,
            mode=mode,
            num_workers=workers,
            **extra,
        )
        return sum(len(b) for b in loader)

    return run


def raw(source: str, mode: str, batch: int, options: dict[str, Any] | None) -> Callable[[], int]:
    """Each sample's bytes read and parsed, nothing decoded: file order (streamed) or a
    permutation read a batch at a time with the next batch prefetched (indexed)."""

    def run() -> int:
        table = reader(source, mode, options).table
        if mode == "streamed":
            order = np.arange(len(table))
        else:
            order = np.random.default_rng(1).permutation(len(table))
        chunks = [order[i : i + batch] for i in range(0, len(order), batch)]
        for rows in chunks[:2]:
            table.prefetch(rows)
        for j, rows in enumerate(chunks):
            if j + 2 < len(chunks):  # two batches ahead, as the loader's indexed mode
                table.prefetch(chunks[j + 2])
            for r in rows.tolist():
                table.read(r)
        table.close()
        return len(order)

    return run


def _serve(folder: str, latency: float, s3: bool, port: Any) -> None:
    server = LocalServer(folder=folder, latency=latency, s3=s3)
    port.value = server.port
    server.thread.join()


def serve(folder: str, latency: float, s3: bool = False) -> tuple[str, Any]:
    """A LocalServer in its own process (so that serving never competes with decoding for the
    GIL), each request delayed by `latency` seconds, plain HTTP or (`s3`) an S3 endpoint; (its
    URL, the process)."""
    ctx = mp.get_context("spawn")
    port = ctx.Value("i", 0)
    proc = ctx.Process(target=_serve, args=(folder, latency, s3, port), daemon=True)
    proc.start()
    while port.value == 0:
        if not proc.is_alive():
            raise RuntimeError(f"the benchmark's server exited with {proc.exitcode}")
        time.sleep(0.05)
    return f"http://127.0.0.1:{port.value}", proc


def rates(runs: list[Callable[[], int]], repeats: int) -> list[float]:
    """Median items/s of each run over `repeats` rounds (after one warm-up round); a round
    times every run once, in turn, so that a change in the machine's load meets them alike."""
    for run in runs:
        run()
    speeds: list[list[float]] = [[] for _ in runs]
    for _ in range(repeats):
        for run, out in zip(runs, speeds):
            start = time.perf_counter()
            n = run()
            out.append(n / (time.perf_counter() - start))
    return [statistics.median(s) for s in speeds]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=480, help="samples in the dataset")
    parser.add_argument("--per-shard", type=int, default=60, help="samples a shard")
    parser.add_argument("--batch", type=int, default=16, help="batch size")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers")
    parser.add_argument("--repeats", type=int, default=5, help="timed epochs (median)")
    parser.add_argument(
        "--latency", type=float, nargs="+", default=[0.0, 20.0], help="ms added to each request"
    )
    args = parser.parse_args()
    warnings.simplefilter("ignore", ClientNotice)  # each client is named in the table
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "shards"
        build(root, args.samples, args.per_shard)
        size = sum(p.stat().st_size for p in root.glob("*.tar"))
        load = os.getloadavg()
        print(
            f"{datetime.date.today()}, load {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}, "
            f"{os.cpu_count()} cores, torch threads {torch.get_num_threads()}, "
            f"{args.samples} samples in {args.samples // args.per_shard} shards ({size / 1e6:.1f} "
            f"MB), batch {args.batch}, {args.workers} DataLoader workers, decoder: "
            "Audio(wav, 1 s, log spectrogram) + Array(npy)"
        )
        print()
        print(
            "| latency | mode | run | disk items/s | http | s3fs | obstore | http/disk | "
            "s3fs/disk | obstore/disk | obstore/s3fs | goal |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|---|---|")
        # any credentials do: the endpoint does not check signatures
        os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench")
        os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
        for latency in args.latency:
            web, web_proc = serve(tmp, latency / 1000)
            s3, s3_proc = serve(tmp, latency / 1000, s3=True)
            os.environ["AWS_ENDPOINT_URL_S3"] = s3
            sources: list[tuple[str, dict[str, Any] | None]] = [
                (str(root), None),
                (f"{web}/shards", None),
                ("s3://shards", {"client": "fsspec"}),
                ("s3://shards", {"client": "obstore"}),
            ]
            try:
                for mode, goal in (("streamed", 0.9), ("indexed", 0.5)):
                    for what in ("decoded", "raw bytes"):
                        runs = [
                            decoded(source, mode, args.batch, args.workers, options)
                            if what == "decoded"
                            else raw(source, mode, args.batch, options)
                            for source, options in sources
                        ]
                        speeds = rates(runs, args.repeats)
                        disk, web_rate, s3fs_rate, obstore_rate = speeds
                        want = f">= {goal}x" if latency == 20.0 and what == "decoded" else ""
                        print(
                            f"| {latency:g} ms | {mode} | {what} | {disk:.0f} | {web_rate:.0f} | "
                            f"{s3fs_rate:.0f} | {obstore_rate:.0f} | {web_rate / disk:.2f}x | "
                            f"{s3fs_rate / disk:.2f}x | {obstore_rate / disk:.2f}x | "
                            f"{obstore_rate / s3fs_rate:.2f}x | {want} |",
                            flush=True,
                        )
            finally:
                web_proc.kill()
                s3_proc.kill()


if __name__ == "__main__":
    main()
