"""Benchmark the readers: StreamedDataset against a plain webdataset pipeline, the video backends,
and the tar parser against the standard library's.

Builds its own shards of real h264 clips (default 256 clips of 10 s, 112x112 at 25 fps) in a temp
directory, then prints four markdown tables, each with ratios against a baseline measured in the
same run:
1. clips/s of `StreamedDataset` vs `webdataset.WebDataset(urls).map(decode)` with the same
   `Video` spec ("10 frames at 1 fps"), DataLoader with 0 and 2 workers (target: >= 0.95x).
   A `StreamedDataset` iterated on its own serves epoch 0's plain plan through the same stages
   the balanced loader's workers run (`mmsample.shards.stages`: schedule -> read -> decode), so
   this is the loader's reading path without its batching, method or shared plan;
   then the same two readers with a spec that only takes the payload length (their own cost);
2. ms/clip of each installed video backend for "10 frames at 1 fps from a 10 s clip";
3. MB/s of `mmsample.shards.tar_samples.iter_samples` vs `tarfile` stream mode (`"r|"`).

Run: `.venv/bin/python tools/bench_read.py` (about a minute on 2 cores); `--help` for sizes.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import webdataset as wds
from torch.utils.data import DataLoader

from mmsample.decoding import Video
from mmsample.decoding.backends import available_backends, get_backend
from mmsample.sharding import write_samples
from mmsample.shards import StreamedDataset
from mmsample.shards.tar_samples import iter_samples
from mmsample.testing import encode_mp4


def make_clip(seed: int, seconds: float, size: int, fps: float) -> bytes:
    """A textured moving scene (drifting gradient, moving square, mild noise) with a tone track."""
    rng = np.random.default_rng(seed)
    frames = round(seconds * fps)
    y, x = np.mgrid[0:size, 0:size]
    video = np.empty((frames, size, size, 3), dtype=np.uint8)
    side = size // 5
    for t in range(frames):
        base = (x + y + 2 * t + 17 * seed) % 200
        frame = np.stack([base, (base * 3 // 4 + 40), 255 - base], axis=-1)
        frame = frame + rng.integers(0, 12, frame.shape)
        px, py = (t * 2 + seed * 7) % (size - side), (t + seed * 13) % (size - side)
        frame[py : py + side, px : px + side] = 250
        video[t] = np.clip(frame, 0, 255)
    audio = 0.3 * np.sin(2 * np.pi * (220 + 30 * seed) * np.arange(int(seconds * 16000)) / 16000)
    return encode_mp4(video, fps=fps, audio=audio)


def build(root: Path, clips: int, unique: int, per_shard: int, **clip: Any) -> list[bytes]:
    """Write `clips` samples (cycling over `unique` encoded clips) into shards under root."""
    payloads = [make_clip(s, **clip) for s in range(min(unique, clips))]
    samples = ((f"c{i:05d}", i % 2, {"mp4": payloads[i % len(payloads)]}) for i in range(clips))
    write_samples(root, samples, ["a", "b"], samples_per_shard=per_shard)
    return payloads


def timed(run: Callable[[], int]) -> tuple[float, int]:
    """(seconds, items) of one run."""
    start = time.perf_counter()
    n = run()
    return time.perf_counter() - start, n


def count(loader: Iterable[Any]) -> int:
    return sum(1 for _ in loader)


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def bench_readers(root: Path, spec: Video, workers: list[int], repeats: int, clips: int) -> str:
    urls = [str(p) for p in sorted(root.glob("shard-*.tar"))]

    def plain(w: int) -> int:
        pipe = wds.WebDataset(urls, shardshuffle=False, empty_check=False).map(
            lambda s: {"video": spec.decode(s["mp4"]), "key": s["__key__"]}
        )
        return count(DataLoader(pipe, batch_size=None, num_workers=w))

    def ours(w: int) -> int:
        ds = StreamedDataset(root, {"video": spec}, shuffle=0, shuffle_shards=False)
        return count(DataLoader(ds, batch_size=None, num_workers=w))

    rows = []
    for w in workers:
        base, mine = [], []
        for _ in range(repeats):  # alternate, so drifting machine load hits both alike
            t, n = timed(functools.partial(plain, w))
            assert n == clips, f"webdataset pipeline yielded {n} of {clips} clips"
            base.append(t)
            t, n = timed(functools.partial(ours, w))
            assert n == clips, f"StreamedDataset yielded {n} of {clips} clips"
            mine.append(t)
        b, m = clips / min(base), clips / min(mine)
        rows.append([str(w), f"{b:.1f}", f"{m:.1f}", f"{m / b:.2f}x"])
    header = ["workers", "webdataset clips/s", "StreamedDataset clips/s", "ratio"]
    return table(header, rows)


class PayloadLength:
    """A Spec that only measures its payload: isolates the readers' own per-item cost."""

    field = "mp4"

    def decode(self, data: bytes, *, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.tensor(len(data))


def bench_overhead(root: Path, repeats: int, clips: int) -> str:
    urls = [str(p) for p in sorted(root.glob("shard-*.tar"))]
    spec = PayloadLength()

    def plain() -> int:
        pipe = wds.WebDataset(urls, shardshuffle=False, empty_check=False)
        return count(pipe.map(lambda s: spec.decode(s["mp4"])))

    def ours() -> int:
        return count(StreamedDataset(root, {"video": spec}, shuffle=0, shuffle_shards=False))

    base = min(timed(plain)[0] for _ in range(repeats)) / clips * 1e6
    mine = min(timed(ours)[0] for _ in range(repeats)) / clips * 1e6
    rows = [
        ["webdataset (baseline)", f"{base:.0f}", "1.00x"],
        ["StreamedDataset", f"{mine:.0f}", f"{mine / base:.2f}x"],
    ]
    return table(["reader, no decoding, in-process", "us/item", "time vs webdataset"], rows)


def bench_backends(payloads: list[bytes], reps: int) -> str:
    default = get_backend(None).name
    results = {}
    for name in available_backends():
        spec = Video(frames=10, fps=1.0, backend=name)
        spec.decode(payloads[0])  # warm-up: library load, first-call set-up
        times = []
        for r in range(reps):
            data = payloads[r % len(payloads)]
            start = time.perf_counter()
            spec.decode(data)
            times.append(time.perf_counter() - start)
        results[name] = 1000 * statistics.median(times)
    rows = [
        [
            name + (" (default)" if name == default else ""),
            f"{ms:.1f}",
            f"{ms / results[default]:.2f}x",
        ]
        for name, ms in sorted(results.items(), key=lambda kv: kv[1])
    ]
    return table(["backend", "ms/clip (median)", "vs default"], rows)


def bench_tar(root: Path, repeats: int) -> str:
    shards = sorted(root.glob("shard-*.tar"))
    total = sum(p.stat().st_size for p in shards)

    def with_tarfile() -> int:
        n = 0
        for p in shards:
            with open(p, "rb") as f, tarfile.open(fileobj=f, mode="r|") as tar:
                for member in tar:
                    got = tar.extractfile(member)
                    n += len(got.read()) if got is not None else 0
        return n

    def with_tar_samples() -> int:
        n = 0
        for p in shards:
            with open(p, "rb") as f:
                for raw in iter_samples(f, p.name):
                    n += sum(len(v) for v in raw["fields"].values())
        return n

    base = min(timed(with_tarfile)[0] for _ in range(repeats))
    mine = min(timed(with_tar_samples)[0] for _ in range(repeats))
    mb = total / 1e6
    rows = [
        ["tarfile stream mode (baseline)", f"{mb / base:.0f}", "1.00x"],
        ["tar_samples.iter_samples", f"{mb / mine:.0f}", f"{base / mine:.2f}x"],
    ]
    return table(["parser", "MB/s (page cache)", "speed vs tarfile"], rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--clips", type=int, default=256, help="samples in the shards")
    parser.add_argument("--unique", type=int, default=8, help="distinct clips encoded (cycled)")
    parser.add_argument("--seconds", type=float, default=10.0, help="clip length")
    parser.add_argument("--size", type=int, default=112, help="frame height and width")
    parser.add_argument("--fps", type=float, default=25.0, help="clip frame rate")
    parser.add_argument("--per-shard", type=int, default=8, help="samples per shard")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per reader (best)")
    parser.add_argument("--backend-reps", type=int, default=16, help="decodes per backend")
    args = parser.parse_args(argv)
    for name in ("clips", "unique", "per_shard", "repeats", "backend_reps", "size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    torch.set_num_threads(1)  # as in DataLoader workers; the same for every pipeline timed
    spec = Video(frames=10, fps=1.0)
    with tempfile.TemporaryDirectory(prefix="bench_read_") as tmp:
        root = Path(tmp)
        start = time.perf_counter()
        payloads = build(
            root, args.clips, args.unique, args.per_shard,
            seconds=args.seconds, size=args.size, fps=args.fps,
        )  # fmt: skip
        mb = sum(p.stat().st_size for p in root.glob("*.tar")) / 1e6
        print(
            f"# bench_read: {args.clips} clips ({args.unique} distinct) of {args.seconds:g} s, "
            f"{args.size}x{args.size} at {args.fps:g} fps, {mb:.1f} MB in shards of "
            f"{args.per_shard}; built in {time.perf_counter() - start:.1f} s\n"
        )
        print(f"## Readers: {spec}, default backend {get_backend(None).name!r}\n")
        print(bench_readers(root, spec, args.workers, args.repeats, args.clips), "\n", flush=True)
        print("## Reader overhead (payload length only, no decoding)\n")
        print(bench_overhead(root, max(3, args.repeats), args.clips), "\n", flush=True)
        print('## Video backends: "10 frames at 1 fps from a 10 s clip"\n')
        print(bench_backends(payloads, args.backend_reps), "\n", flush=True)
        print("## Tar parsing (all shards, payloads read)\n")
        print(bench_tar(root, max(3, args.repeats)))


if __name__ == "__main__":
    main()
