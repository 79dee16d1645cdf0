"""Benchmark balanced_loader: every method against the same reader with no method, plan time.

Builds shards of real h264 clips with an AAC track (default 192 clips of 2 s, 112x112 at 25 fps)
and reads two modalities from each clip: `video` (8 frames, the expensive decode) and `audio`
(the clip's track as a log spectrogram). A Ledger is fed synthetic statistics in which video
dominates, so DUS gives video half the rows of each batch. Prints, in one run:
1. per method (2 persistent DataLoader workers, streamed mode, batch 16, an epoch timed after
   a warm-up epoch): rows/s, decoder calls per row per modality (counted in shared memory), and
   against no method: rows/s, the speed-up expected from the decode work a method skips
   (one-thread decode costs measured in the same run), and decode work done per second (the
   loader's efficiency; target >= 0.95x);
2. plan time (`set_epoch` + `plan`, including the ledger snapshot) for N = 200,000 (target
   under 100 ms);
3. how much of BSS's planned order each mode keeps: Spearman correlation of planned vs
   delivered positions.

Run: `.venv/bin/python tools/bench_loader.py` (a few minutes on 2 cores); `--help` for sizes.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from bench_read import build, table

from mmsample.decoding import Audio, Video
from mmsample.ledger import Ledger
from mmsample.loader import balanced_loader
from mmsample.methods import BSS, DUS, SMV
from mmsample.testing import CountingSpec

K = 10
NAMES = ("video", "audio")


def fed_ledger(n: int, seed: int = 0) -> Ledger:
    """Synthetic training-pass statistics: video's label probability high, audio's low."""
    g = torch.Generator().manual_seed(seed)
    led = Ledger(n, 2, K, names=list(NAMES))
    labels = torch.arange(n) % K
    onehot = torch.nn.functional.one_hot(labels, K).float()
    video = torch.randn(n, K, generator=g) + 4 * onehot
    audio = torch.randn(n, K, generator=g) + 0.5 * onehot
    fused = video + audio
    subsets = torch.stack([torch.zeros(n, K), video, audio, fused], 1)
    right = (subsets.argmax(-1) == labels[:, None]).float()
    values = right * torch.tensor([0.0, 1.0, 1.0, 2.0])
    for lo in range(0, n, 4096):
        hi = min(n, lo + 4096)
        led.observe(
            torch.arange(lo, hi),
            labels[lo:hi],
            [video[lo:hi], audio[lo:hi]],
            fused[lo:hi],
            values=values[lo:hi],
        )
    return led


def methods(led: Ledger, batch: int) -> dict[str, Any]:
    return {
        "none": None,
        "dus": DUS(led, batch_size=batch, epochs=100),
        "dus-rl": DUS(led, batch_size=batch, epochs=100, policy="rl"),
        "bss": BSS(led, lambda0=0.5),
        "bss-learned": BSS(led, scheduler="learned"),
        "smv": SMV(led, warmup=0),
        "smv-modality": SMV(led, level="modality", warmup=0),
    }


def specs() -> dict[str, CountingSpec]:
    return {
        "video": CountingSpec(Video(field="mp4", frames=8, size=112)),
        "audio": CountingSpec(Audio(field="mp4", seconds=2.0)),
    }


def decode_costs(root: Path, reps: int = 20) -> dict[str, float]:
    """Seconds per decode of each modality alone (one thread, median), from the shards."""
    from mmsample.shards import IndexedDataset

    reader = IndexedDataset(root, {k: v.spec for k, v in specs().items()})
    out = {}
    for j, name in enumerate(NAMES):
        times = []
        for i in range(reps):
            start = time.perf_counter()
            reader.get(i, mask=1 << j)
            times.append(time.perf_counter() - start)
        out[name] = statistics.median(times)
    return out


def run_epoch(root: Path, name: str, batch: int, workers: int, n: int) -> dict[str, float]:
    """One timed epoch after a warm-up epoch (persistent workers: no start-up in the time)."""
    counted = specs()
    method = methods(fed_ledger(n), batch)[name]
    loader = balanced_loader(
        root,
        method,
        modalities=counted,
        batch_size=batch,
        num_workers=workers,
        persistent_workers=workers > 0,
        seed=1,
    )
    loader.set_epoch(0)
    sum(len(b) for b in loader)
    loader.set_epoch(1)
    before = {k: int(v.calls) for k, v in counted.items()}
    start = time.perf_counter()
    rows = sum(len(b) for b in loader)
    seconds = time.perf_counter() - start
    calls = {k: int(v.calls) - before[k] for k, v in counted.items()}
    return {"seconds": seconds, "rows": rows, **calls}


def bench_methods(root: Path, n: int, batch: int, workers: int, repeats: int) -> str:
    names = list(methods(Ledger(2, 2, K), batch))
    cost = decode_costs(root)
    runs: dict[str, list[dict[str, float]]] = {m: [] for m in names}
    for _ in range(repeats):  # interleaved, so load changes hit every method alike
        for m in names:
            runs[m].append(run_epoch(root, m, batch, workers, n))

    def rate(m: str, key: str) -> float:
        if key == "work":  # decode seconds (at the one-thread unit costs) per second
            return statistics.median(
                sum(r[k] * cost[k] for k in NAMES) / r["seconds"] for r in runs[m]
            )
        return statistics.median(r[key] / r["seconds"] for r in runs[m])

    base_rows, base_work = rate("none", "rows"), rate("none", "work")
    base = runs["none"][0]
    base_row_cost = sum(base[k] * cost[k] for k in NAMES) / base["rows"]
    out = []
    for m in names:
        r = runs[m][0]
        per_row = {k: r[k] / r["rows"] for k in NAMES}
        row_cost = sum(per_row[k] * cost[k] for k in NAMES)
        out.append(
            [
                m,
                f"{rate(m, 'rows'):.1f}",
                " / ".join(f"{per_row[k]:.2f}" for k in NAMES),
                f"{rate(m, 'rows') / base_rows:.2f}x",
                f"{base_row_cost / row_cost:.2f}x",
                f"{rate(m, 'work') / base_work:.2f}x",
            ]
        )
    head = [
        "method",
        "rows/s",
        "decoder calls/row (video / audio)",
        "rows/s vs none",
        "expected from decode work skipped",
        "decode work/s vs none",
    ]
    note = (
        f"\nOne-thread decode cost: video {1000 * cost['video']:.1f} ms, audio "
        f"{1000 * cost['audio']:.1f} ms per item; medians of {repeats} interleaved runs."
    )
    return table(head, out) + note


def bench_plan(n: int, repeats: int) -> str:
    led = fed_ledger(n)
    rows = []
    for name, method in methods(led, 64).items():
        if method is None:
            continue
        times = []
        for r in range(repeats):
            start = time.perf_counter()
            method.set_epoch(r)
            method.plan(r)
            times.append(time.perf_counter() - start)
        rows.append(
            [
                name,
                f"{1000 * times[0]:.1f}",
                f"{1000 * statistics.median(times[1:]):.1f}",
                f"{1000 * max(times):.1f}",
            ]
        )
    head = [f"method (N = {n:,})", "first epoch ms", "later epochs ms (median)", "max ms"]
    return table(head, rows)


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def bench_order(root: Path, n: int) -> str:
    rows = []
    for mode in ("indexed", "streamed"):
        bss = BSS(fed_ledger(n), lambda0=1.0, seed=3)
        specs = {"video": Video(field="mp4", frames=1, size=16), "audio": Audio(field="mp4")}
        loader = balanced_loader(root, bss, modalities=specs, batch_size=16, mode=mode)
        loader.set_epoch(0)
        planned = bss.plan(0).order()
        got = np.array([i for b in loader for i in b.ids.tolist()])
        pos = np.empty(n, dtype=np.int64)
        pos[planned] = np.arange(n)
        rows.append([mode, f"{spearman(np.arange(len(got)), pos[got]):.3f}"])
    return table(["mode", "Spearman(planned, delivered position)"], rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=192)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--plan-n", type=int, default=200_000)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        build(root, args.clips, 32, 16, seconds=2.0, size=112, fps=25.0)
        print(f"## balanced_loader per method ({args.clips} clips, {args.workers} workers)\n")
        print(bench_methods(root, args.clips, args.batch, args.workers, args.repeats))
        print("\n## plan time\n")
        print(bench_plan(args.plan_n, 5))
        print("\n## BSS order kept\n")
        print(bench_order(root, args.clips))


if __name__ == "__main__":
    main()
