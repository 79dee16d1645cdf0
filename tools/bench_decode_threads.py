"""Benchmark main-process decoding (DataLoader num_workers=0) against torch's intra-op threads.

In the main process torch runs one intra-op thread per core; a sample's small tensor work (the
STFT of a spectrogram, a frame resize) is split over them while FFmpeg decodes beside them, and
on a busy machine the split costs more than it saves. The readers' `decode_threads` (default 1)
limits torch's threads inside each item's decode and restores the caller's count after it.

Builds a small dataset of real clips (mp4 with an AAC track, 2 s, 64x64) in a temp directory and
prints one table: ms per item of `StreamedDataset` with `decode_threads` None (torch's own count)
and 1, for a log spectrogram of the clip's audio plus 8 resized frames, and the median
`torch.stft` time alone under each setting; the thread count after each epoch is checked.

Run: `.venv/bin/python tools/bench_decode_threads.py [--n 32] [--epochs 3]`.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from mmsample.decoding import Audio, Spec, Video
from mmsample.decoding.decoder import intra_op_threads
from mmsample.sharding import write_samples
from mmsample.shards import StreamedDataset
from mmsample.testing import moving_square_clip


def build(root: Path, n: int) -> None:
    samples = (
        (f"c{i}", i % 2, {"mp4": moving_square_clip(i, frames=40, size=64, fps=20.0)})
        for i in range(n)
    )
    write_samples(root, samples, ["a", "b"], samples_per_shard=8)


def epoch_ms(root: Path, threads: int | None, epochs: int) -> float:
    """Best of `epochs` epochs, ms per item, decoding in this process."""
    specs: dict[str, Spec] = {
        "audio": Audio(field="mp4", sample_rate=16000, seconds=2.0),
        "video": Video(frames=8, fps=4.0, size=112),
    }
    ds = StreamedDataset(root, specs, decode_threads=threads)
    best = float("inf")
    before = torch.get_num_threads()
    for _ in range(epochs):
        start = time.perf_counter()
        count = sum(1 for _ in DataLoader(ds, batch_size=None, num_workers=0))
        best = min(best, (time.perf_counter() - start) * 1000 / count)
        if torch.get_num_threads() != before:
            raise RuntimeError("decoding changed the caller's torch thread count")
    return best


def stft_ms(threads: int | None, reps: int = 50) -> float:
    wave = torch.randn(1, 32000)
    window = torch.hann_window(512)
    times = []
    with intra_op_threads(threads):
        for _ in range(reps):
            start = time.perf_counter()
            torch.stft(wave, 512, 159, 512, window=window, return_complex=True).abs()
            times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=32, help="clips")
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs (best kept)")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} intra-op threads by default")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        build(root, args.n)
        epoch_ms(root, None, 1)  # warm the decoders
        rows = []
        for threads in (None, 1):
            rows.append((threads, epoch_ms(root, threads, args.epochs), stft_ms(threads)))
    base = rows[0][1]
    print("\n| decode_threads | ms/item (best epoch) | vs torch's own | torch.stft ms (median) |")
    print("| --- | --- | --- | --- |")
    for threads, ms, stft in rows:
        name = "None (torch's own)" if threads is None else str(threads)
        print(f"| {name} | {ms:.1f} | {ms / base:.2f}x | {stft:.2f} |")


if __name__ == "__main__":
    main()
