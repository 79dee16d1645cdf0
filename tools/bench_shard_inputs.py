"""Benchmark the sharding tool on a table whose media are URLs, against the same table with
local paths.

Writes `--rows` rows (a 0.25 s 16 kHz wav and a 64-float npy each) in a temp folder, serves it
from a local HTTP server (`mmsample.storage.local_server.LocalServer`, in its own process) whose
every request waits `--latency` ms first (0 and 20 ms: a cloud region), and times
`shard_dataset` three ways in the same run: the table with local paths (the baseline), the
table with http:// URLs read one request at a time (`media_threads=1`: how the tool read its
inputs before, one file after another), and the same URLs with `--threads` requests at a time
(stats while a shard is planned, whole reads a window of rows ahead while it is written). Prints
rows/s, the ratio to local paths, and the speed-up of the concurrent reads over the serial ones.

Run: `.venv/bin/python tools/bench_shard_inputs.py` (under a minute on 2 cores).
"""

from __future__ import annotations

import argparse
import datetime
import multiprocessing as mp
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from mmsample.sharding import shard_dataset
from mmsample.storage.local_server import LocalServer
from mmsample.testing import encode_npy, encode_wav


def build(folder: Path, rows: int) -> None:
    """`rows` wav + npy files in folder/media."""
    (folder / "media").mkdir(parents=True)
    rng = np.random.default_rng(0)
    t = np.arange(4000) / 16000
    for i in range(rows):
        tone = 0.3 * np.sin(2 * np.pi * (200 + i % 50 * 10) * t)
        (folder / "media" / f"a{i}.wav").write_bytes(encode_wav(tone))
        feats = rng.normal(size=64).astype(np.float32)
        (folder / "media" / f"f{i}.npy").write_bytes(encode_npy(feats))


def table(path: Path, rows: int, prefix: str) -> Path:
    """A CSV whose wav and npy cells are `prefix`/media/NAME."""
    lines = [f"k{i},c{i % 10},{prefix}/media/a{i}.wav,{prefix}/media/f{i}.npy" for i in range(rows)]
    path.write_text("key,label,wav,npy\n" + "\n".join(lines) + "\n")
    return path


def _serve(folder: str, latency: float, port: Any) -> None:
    server = LocalServer(folder=folder, latency=latency)
    port.value = server.port
    server.thread.join()


def serve(folder: str, latency: float) -> tuple[str, Any]:
    """A LocalServer in its own process, each request delayed by `latency` seconds; (its URL,
    the process)."""
    ctx = mp.get_context("spawn")
    port = ctx.Value("i", 0)
    proc = ctx.Process(target=_serve, args=(folder, latency, port), daemon=True)
    proc.start()
    while port.value == 0:
        time.sleep(0.05)
    return f"http://127.0.0.1:{port.value}", proc


def rate(csv: Path, out: Path, rows: int, per_shard: int, workers: int, threads: int) -> float:
    """Rows/s of one `shard_dataset` run into a fresh `out`."""
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    shard_dataset(csv, out, samples_per_shard=per_shard, workers=workers, media_threads=threads)
    return rows / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=240, help="rows of the table")
    parser.add_argument("--per-shard", type=int, default=60, help="samples a shard")
    parser.add_argument("--workers", type=int, default=1, help="sharding processes")
    parser.add_argument("--threads", type=int, default=16, help="concurrent requests")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs (median)")
    parser.add_argument(
        "--latency", type=float, nargs="+", default=[0.0, 20.0], help="ms added to each request"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        build(root / "src", args.rows)
        local = table(root / "local.csv", args.rows, str(root / "src"))
        load = os.getloadavg()
        print(
            f"{datetime.date.today()}, load {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}, "
            f"{os.cpu_count()} cores, {args.rows} rows (wav 0.25 s + npy) in "
            f"{-(-args.rows // args.per_shard)} shards, {args.workers} sharding process(es), "
            f"median of {args.repeats}"
        )
        print()
        print("| latency | media | requests at a time | rows/s | vs local paths |")
        print("|---|---|---|---|---|")
        out = root / "out"

        def median(csv: Path, threads: int) -> float:
            return statistics.median(
                rate(csv, out, args.rows, args.per_shard, args.workers, threads)
                for _ in range(args.repeats)
            )

        rate(local, out, args.rows, args.per_shard, args.workers, 1)  # warm-up: imports
        disk = median(local, 1)
        print(f"| - | local paths | - | {disk:.0f} | 1.00x |")
        for latency in args.latency:
            where, proc = serve(str(root / "src"), latency / 1000)
            try:
                urls = table(root / "urls.csv", args.rows, where)
                serial = median(urls, 1)
                both = median(urls, args.threads)
            finally:
                proc.kill()
            print(f"| {latency:g} ms | http:// | 1 | {serial:.0f} | {serial / disk:.2f}x |")
            print(
                f"| {latency:g} ms | http:// | {args.threads} | {both:.0f} | {both / disk:.2f}x "
                f"({both / serial:.1f}x the serial reads) |"
            )


if __name__ == "__main__":
    main()
