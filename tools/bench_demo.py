"""Benchmark `make demo`'s cost on this machine, with the same-run references beside each time.

Three parts, each printed with the date, load average, decoder, torch threads and the softmax
reference (`pipelines.demo_cost.softmax_reference_us`) measured in the same run:

1. `clip`: one clip's video (4 frames) and log-mel audio as the demo decodes them, per
   backend: each spec on its own (two opens of the container) against one open
   (`mmsample.decoding.joint.decode_clip`: PyAV's one demux of both streams) and, for
   torchcodec, against one `torch.frombuffer` of the bytes shared by its two decoders; the
   tensors are checked equal. Interleaved per clip, fastest of `--reps`, median over clips.
2. `workers`: for 0, 1 and 2 DataLoader workers (torch threads 1, and torch's own count with
   0 workers), the decode-only seconds per clip (`pipelines.demo_cost.decode_only_s`) and one
   plain training epoch's items/s (`pipelines.train`), interleaved over `--reps` rounds;
   medians, and items/s over the decode-only rate.
3. `demo`: `python -m pipelines.demo --methods plain` (fresh runs in `--out`, the data built if
   absent), which ends with `pipelines.demo_cost.print_cost`.

Run alone on an idle machine (other processes slow decoding and steps unevenly):
`.venv/bin/python tools/bench_demo.py [--parts clip workers demo] [--out /tmp/bench_demo]`.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import io
import json
import shutil
import statistics
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from mmsample.decoding import joint
from mmsample.decoding.backends import available_backends
from pipelines import demo, training
from pipelines.demo_cost import decode_only_s, machine_line, softmax_reference_us
from pipelines.models import MODELS


def clip_bytes(data: Path, count: int) -> list[bytes]:
    """The first `count` mp4 clips the demo data was built from (`OUT/data/raw`)."""
    return [p.read_bytes() for p in sorted((data.parent / "raw").glob("*.mp4"))[:count]]


def fastest(fn: Callable[[], object], reps: int) -> float:
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def torchcodec_opens(source: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """torchcodec's two decoders on `source` (bytes, or one tensor view of them): the exact-mode
    video decoder's first frame and every audio sample."""
    from torchcodec.decoders import AudioDecoder, VideoDecoder

    video = VideoDecoder(source, num_ffmpeg_threads=1, seek_mode="exact").get_frame_at(0).data
    return video, AudioDecoder(source, sample_rate=16000).get_all_samples().data


def shared_view(data: bytes) -> tuple[torch.Tensor, torch.Tensor]:
    """`torchcodec_opens` on one `torch.frombuffer` view of the bytes, made once."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the bytes are read-only: torch warns, nothing writes
        view = torch.frombuffer(data, dtype=torch.uint8)
    return torchcodec_opens(view)


def separate(video: Any, audio: Any, data: bytes) -> tuple[torch.Tensor, torch.Tensor]:
    """Each spec decodes the clip on its own (two opens of the container)."""
    return video.decode(data), audio.decode(data)


def clip_ways(specs: dict[str, Any]) -> dict[tuple[str, str], Callable[[bytes], Any]]:
    """(backend, way) -> a function of the clip's bytes, for torchcodec and PyAV if installed."""
    ways: dict[tuple[str, str], Callable[[bytes], Any]] = {}
    for backend in (b for b in available_backends() if b in ("torchcodec", "pyav")):
        video = dataclasses.replace(specs["video"], backend=backend)
        audio = dataclasses.replace(specs["audio"], backend=backend)
        ways[(backend, SEPARATE)] = functools.partial(separate, video, audio)
        if joint.clip_backend(video, audio) is not None:
            ways[(backend, "one open, one demux")] = functools.partial(
                joint.decode_clip, video, audio
            )
        if backend == "torchcodec":  # the two decoders alone: on the bytes, on one view
            ways[(backend, "decoders on the bytes")] = torchcodec_opens
            ways[(backend, "decoders on one shared view")] = shared_view
    return ways


SEPARATE = "each spec alone (two opens)"


def bench_clip(data: Path, clips: int, reps: int) -> None:
    """Part 1: per backend, each spec alone vs one open; equal tensors checked. Every way runs
    on each clip in turn (so all see the same load), fastest of `reps`, median over clips."""
    datas = clip_bytes(data, clips)
    torch.set_num_threads(demo.THREADS)  # the demo's threads (a DataLoader worker runs one)
    ways = clip_ways(MODELS["small"](10).modalities)
    for d in datas[:20]:
        for (backend, way), fn in ways.items():
            base = torchcodec_opens if "decoders" in way else ways[(backend, SEPARATE)]
            if not all(torch.equal(x, y) for x, y in zip(base(d), fn(d), strict=True)):
                raise AssertionError(f"{backend} {way}: tensors differ from separate decodes")
    times: dict[tuple[str, str], list[float]] = {k: [] for k in ways}
    for d in datas:
        best = dict.fromkeys(ways, float("inf"))
        for _ in range(reps):  # round-robin over the ways, so a load spike hits them alike
            for key, fn in ways.items():
                best[key] = min(best[key], fastest(functools.partial(fn, d), 1))
        for key, t in best.items():
            times[key].append(t)
    print(f"\n## one clip, {len(datas)} clips; {machine_line(0)}")
    print(f"reference: softmax baseline {softmax_reference_us():.1f} us")
    print("| backend | way | ms per clip (median) | vs each spec alone |")
    print("|---|---|---|---|")
    for (backend, way), ts in times.items():
        med, alone = statistics.median(ts), statistics.median(times[(backend, SEPARATE)])
        print(f"| {backend} | {way} | {med * 1e3:.3f} | {med / alone:.2f} |")


def train_epoch_rate(data: Path, out: Path, workers: int, threads: int | None) -> float:
    """Items/s of one plain training epoch (`pipelines.train`, the demo's batch size)."""
    shutil.rmtree(out, ignore_errors=True)
    argv = ["--data", str(data), "--out", str(out), "--method", "plain", "--epochs", "1"]
    argv += ["--batch-size", "16", "--workers", str(workers), "--no-progress"]
    if threads is not None:
        argv += ["--threads", str(threads)]
    with contextlib.redirect_stdout(io.StringIO()):
        training.main(argv)
    record = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    return float(record["throughput/items_per_s"])


def bench_workers(data: Path, out: Path, reps: int, clips: int) -> None:
    """Part 2: decode-only and training rates for 0, 1, 2 workers, interleaved rounds."""
    default = torch.get_num_threads()
    settings = [(0, None), (0, 1), (1, 1), (2, 1)]
    decode: dict[tuple[int, int | None], list[float]] = {s: [] for s in settings}
    train: dict[tuple[int, int | None], list[float]] = {s: [] for s in settings}
    refs = []
    print(f"\n## workers, {reps} interleaved rounds; {machine_line(0)}")
    for _ in range(reps):
        for workers, threads in settings:
            torch.set_num_threads(threads or default)
            refs.append(softmax_reference_us(500))
            decode[(workers, threads)].append(
                decode_only_s(data, workers=workers, batch_size=16, clips=clips, passes=1)
            )
            train[(workers, threads)].append(
                train_epoch_rate(data, out.parent / f"{out.name}-epoch", workers, threads)
            )
    torch.set_num_threads(default)
    print(f"reference: softmax baseline {statistics.median(refs):.1f} us (median of rounds)")
    print("| workers | torch threads | decode-only ms/clip | decode-only clips/s | "
          "training items/s | items/s / decode-only rate |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for workers, threads in settings:
        per_clip = statistics.median(decode[(workers, threads)])
        rate = statistics.median(train[(workers, threads)])
        shown = threads if threads is not None else f"{default} (torch's)"
        print(
            f"| {workers} | {shown} | {per_clip * 1e3:.2f} | {1 / per_clip:.0f} | {rate:.0f} | "
            f"{rate * per_clip:.2f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/bench_demo"), help="work folder")
    parser.add_argument("--parts", nargs="+", default=["clip", "workers", "demo"])
    parser.add_argument("--reps", type=int, default=3, help="repetitions (fastest or median)")
    parser.add_argument("--clips", type=int, default=200, help="clips per decode measurement")
    parser.add_argument("--workers", type=int, default=demo.WORKERS, help="the demo's workers")
    args = parser.parse_args()
    data = demo.build_data(demo.parse_args(["--out", str(args.out)]))
    if "clip" in args.parts:
        bench_clip(data, args.clips, args.reps)
    if "workers" in args.parts:
        bench_workers(data, args.out, args.reps, args.clips)
    if "demo" in args.parts:
        shutil.rmtree(args.out / "seed0", ignore_errors=True)
        print(f"\n## the plain demo run, {args.workers} workers")
        demo.main(["--out", str(args.out), "--methods", "plain", "--no-progress", "--no-ceilings",
                   "--workers", str(args.workers)])  # fmt: skip


if __name__ == "__main__":
    main()
