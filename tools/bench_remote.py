"""Benchmark reading shards from a remote store against local disk.

Builds its own shards (default 480 samples: a 2 s 16 kHz wav and a 256-float npy each, 60 a
shard) in a temp folder and serves that folder from a local HTTP server with Range support
(`mmsample.storage.local_server.LocalServer`: file-backed, every byte range read from disk, like
an object store; moto's S3 server slices the whole object on every ranged GET, so it is not used
here). Each request waits `--latency` ms first (0 and 20 ms: a cloud region). For streamed and
indexed reading it prints items/s from local disk and from the server, with the same decoder
(`Audio(field="wav", seconds=1.0)`, log spectrogram, and `Array(field="npy")`) through
`balanced_loader`, and a raw-bytes run (each sample's bytes read and parsed, nothing decoded),
median of `--repeats` epochs, and the ratio server / disk measured in the same run.
Goals: streamed >= 0.9x and indexed >= 0.5x at 20 ms.

Run: `.venv/bin/python tools/bench_remote.py` (about a minute on 2 cores); `--help` for sizes.
"""

from __future__ import annotations

import argparse
import datetime
import multiprocessing as mp
import os
import statistics
import tempfile
import time
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

    write_samples(root, rows(), [f"c{c}" for c in range(10)], per_shard)


def modalities() -> dict[str, Any]:
    return {"audio": Audio(field="wav", seconds=1.0), "feat": Array(field="npy")}


def decoded(source: str, mode: str, batch: int, workers: int) -> Callable[[], int]:
    def run() -> int:
        loader = balanced_loader(
            source, None, modalities=modalities(), batch_size=batch, mode=mode, num_workers=workers
        )
        return sum(len(b) for b in loader)

    return run


def raw(source: str, mode: str, batch: int) -> Callable[[], int]:
    """Each sample's bytes read and parsed, nothing decoded: file order (streamed) or a
    permutation read a batch at a time with the next batch prefetched (indexed)."""

    def run() -> int:
        if mode == "streamed":
            table = StreamedDataset(source, modalities()).table
            order = np.arange(len(table))
        else:
            table = IndexedDataset(source, modalities()).table
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


def _serve(folder: str, latency: float, port: Any) -> None:
    server = LocalServer(folder=folder, latency=latency)
    port.value = server.port
    server.thread.join()


def serve(folder: str, latency: float) -> tuple[str, Any]:
    """A LocalServer in its own process (so that serving never competes with decoding for the
    GIL), each request delayed by `latency` seconds; (its URL, the process)."""
    ctx = mp.get_context("spawn")
    port = ctx.Value("i", 0)
    proc = ctx.Process(target=_serve, args=(folder, latency, port), daemon=True)
    proc.start()
    while port.value == 0:
        time.sleep(0.05)
    return f"http://127.0.0.1:{port.value}", proc


def rate(run: Callable[[], int], repeats: int) -> float:
    """Median items/s over `repeats` runs (after one warm-up run)."""
    run()
    speeds = []
    for _ in range(repeats):
        start = time.perf_counter()
        n = run()
        speeds.append(n / (time.perf_counter() - start))
    return statistics.median(speeds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=480, help="samples in the dataset")
    parser.add_argument("--per-shard", type=int, default=60, help="samples a shard")
    parser.add_argument("--batch", type=int, default=16, help="batch size")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers")
    parser.add_argument("--repeats", type=int, default=3, help="timed epochs (median)")
    parser.add_argument(
        "--latency", type=float, nargs="+", default=[0.0, 20.0], help="ms added to each request"
    )
    args = parser.parse_args()
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
        print("| latency | mode | run | disk items/s | server items/s | ratio | goal |")
        print("|---|---|---|---|---|---|---|")
        for latency in args.latency:
            where, proc = serve(tmp, latency / 1000)
            url = f"{where}/shards"
            try:
                for mode, goal in (("streamed", 0.9), ("indexed", 0.5)):
                    for what in ("decoded", "raw bytes"):
                        make = (
                            (lambda s, m=mode: decoded(s, m, args.batch, args.workers))
                            if what == "decoded"
                            else (lambda s, m=mode: raw(s, m, args.batch))
                        )
                        disk = rate(make(str(root)), args.repeats)
                        there = rate(make(url), args.repeats)
                        want = f">= {goal}x" if latency == 20.0 and what == "decoded" else ""
                        print(
                            f"| {latency:g} ms | {mode} | {what} | {disk:.0f} | {there:.0f} | "
                            f"{there / disk:.2f}x | {want} |"
                        )
            finally:
                proc.kill()


if __name__ == "__main__":
    main()
