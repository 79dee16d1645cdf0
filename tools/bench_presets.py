"""Benchmark the papers' presets: clips/s per loader worker for each `pipelines.presets` preset,
against a plain webdataset pipeline decoding with the same specs, in one run.

Builds shards of generated 10 s 224x224 clips at 25 fps (default 24 samples cycling over 4
encoded clips) carrying three fields: `mp4` (h264 + AAC, what the VGGSound and Kinetics-Sounds
presets read; x264's default keyframe interval of 250 frames, so one keyframe per clip, as in
clips re-encoded by the usual downloaders), `video.flv` (FLV1, CREMA-D's codec) and `audio.wav`
(16 kHz PCM), then for each preset in its "train" form (3 of 10 frames, CREMA-D 1 of 3; a random
audio crop; frames resized to 224) times:
- webdataset: `wds.WebDataset(urls).map(decode every preset spec with a seeded generator)`;
- mmsample: `StreamedDataset(root, preset)` (the reader `balanced_loader` streams from);
each in a DataLoader with `--workers` workers (0: the main process alone), best of `--repeats`.
Prints one markdown table: clips/s, clips/s per worker (0 workers count as 1) and the ratio.

Run: `.venv/bin/python tools/bench_presets.py` (about two minutes on 2 busy cores).
"""

from __future__ import annotations

import argparse
import functools
import io
import tempfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import av
import numpy as np
import torch
import webdataset as wds
from torch.utils.data import DataLoader

from mmsample.sharding import write_samples
from mmsample.shards import StreamedDataset
from mmsample.testing import encode_mp4, encode_wav
from pipelines.presets import PRESETS, preset

SAMPLE_RATE = 16000


def scene(seed: int, seconds: float, size: int, fps: float) -> tuple[np.ndarray, np.ndarray]:
    """uint8 frames `[T, size, size, 3]` of a drifting textured scene with a moving square, and a
    mono tone `[S]` at 16 kHz."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size]
    frames = np.empty((round(seconds * fps), size, size, 3), dtype=np.uint8)
    side = size // 5
    for t in range(len(frames)):
        base = (x + y + 2 * t + 17 * seed) % 200
        frame = np.stack([base, base * 3 // 4 + 40, 255 - base], axis=-1)
        frame = frame + rng.integers(0, 12, frame.shape)
        px, py = (t * 2 + seed * 7) % (size - side), (t + seed * 13) % (size - side)
        frame[py : py + side, px : px + side] = 250
        frames[t] = np.clip(frame, 0, 255)
    n = int(seconds * SAMPLE_RATE)
    audio = 0.3 * np.sin(2 * np.pi * (220 + 30 * seed) * np.arange(n) / SAMPLE_RATE)
    return frames, audio


def encode_flv(frames: np.ndarray, fps: float) -> bytes:
    """FLV1 (Sorenson H.263) video in an FLV container, FFmpeg's default GOP of 12 frames."""
    buf = io.BytesIO()
    with av.open(buf, "w", format="flv") as out:
        stream = out.add_stream("flv", rate=round(fps))
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return buf.getvalue()


def build(root: Path, clips: int, unique: int, seconds: float, size: int, fps: float) -> float:
    """Write the shards; return their size in MB."""
    payloads = []
    for seed in range(min(unique, clips)):
        frames, audio = scene(seed, seconds, size, fps)
        payloads.append(
            {
                "mp4": encode_mp4(frames, fps=fps, audio=audio, sample_rate=SAMPLE_RATE),
                "video.flv": encode_flv(frames, fps),
                "audio.wav": encode_wav(audio, SAMPLE_RATE),
            }
        )
    samples = ((f"c{i:05d}", i % 2, payloads[i % len(payloads)]) for i in range(clips))
    write_samples(root, samples, ["a", "b"], samples_per_shard=4)
    return sum(p.stat().st_size for p in root.glob("*.tar")) / 1e6


def run_plain(urls: list[str], specs: dict[str, Any], workers: int) -> int:
    def decode(sample: dict[str, Any]) -> dict[str, Any]:
        gen = torch.Generator().manual_seed(zlib.crc32(sample["__key__"].encode()))
        fields = {k.lower(): v for k, v in sample.items()}
        return {n: s.decode(fields[s.field], generator=gen) for n, s in specs.items()}

    pipe = wds.WebDataset(urls, shardshuffle=False, empty_check=False).map(decode)
    return sum(1 for _ in DataLoader(pipe, batch_size=None, num_workers=workers))


def run_ours(root: Path, specs: dict[str, Any], workers: int) -> int:
    ds = StreamedDataset(root, specs, shuffle=0, shuffle_shards=False)
    return sum(1 for _ in DataLoader(ds, batch_size=None, num_workers=workers))


def best(run: Callable[[], int], clips: int, repeats: int) -> float:
    """Best clips/s of `repeats` runs; raises if a run loses or adds clips."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        n = run()
        times.append(time.perf_counter() - start)
        if n != clips:
            raise RuntimeError(f"a reader yielded {n} of {clips} clips")
    return clips / min(times)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--clips", type=int, default=24, help="samples in the shards")
    parser.add_argument("--unique", type=int, default=4, help="distinct clips encoded")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--size", type=int, default=224, help="frame height and width")
    parser.add_argument("--fps", type=float, default=25.0)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--presets", nargs="+", default=sorted(PRESETS), choices=sorted(PRESETS))
    args = parser.parse_args(argv)
    for name in ("clips", "unique", "repeats", "size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1")
    torch.set_num_threads(1)  # as in DataLoader workers; the same for both readers
    with tempfile.TemporaryDirectory(prefix="bench_presets_") as tmp:
        root = Path(tmp)
        start = time.perf_counter()
        mb = build(root, args.clips, args.unique, args.seconds, args.size, args.fps)
        print(
            f"# bench_presets: {args.clips} clips ({args.unique} distinct) of {args.seconds:g} s, "
            f"{args.size}x{args.size} at {args.fps:g} fps (mp4 + flv + wav), {mb:.1f} MB; "
            f"built in {time.perf_counter() - start:.1f} s\n"
        )
        urls = [str(p) for p in sorted(root.glob("shard-*.tar"))]
        header = "| preset (train) | workers | webdataset clips/s | mmsample clips/s "
        header += "| mmsample clips/s per worker | ratio |"
        print(header + "\n|" + " --- |" * 6, flush=True)
        for name in args.presets:
            specs = preset(name, "train")
            run_ours(root, specs, 0)  # warm-up: decoder libraries, filterbanks, page cache
            for w in args.workers:
                plain = functools.partial(run_plain, urls, specs, w)
                base = best(plain, args.clips, args.repeats)
                mine = best(functools.partial(run_ours, root, specs, w), args.clips, args.repeats)
                row = [name, str(w), f"{base:.1f}", f"{mine:.1f}", f"{mine / max(w, 1):.1f}"]
                print("| " + " | ".join(row) + f" | {mine / base:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
