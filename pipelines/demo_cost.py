"""What a `make demo` cost, measured against the machine it ran on.

Place in the data flow: after the demo's runs (`pipelines.demo`). Reads the work each run logged
(`work/decoded_train`, `work/decoded_eval`, times and items in its `metrics.jsonl`, counted in
the decoder: `mmsample.decoding.decode_count`), measures in this same process, at the demo's
settings, what decoding alone costs per clip (the training reader over the demo's train split,
the model's specs, the same DataLoader workers, batch size and torch threads, no training
step), and a fixed reference (the signals benchmark's softmax baseline), and prints:

- the work: clip decodes per run (training with its scoring passes, evaluation) and in all;
- the decode-only seconds per clip and rate;
- the efficiency, wall time / (decodes x decode-only seconds per clip) (goal <= 1.3), and each
  run's training items/s against the decode-only rate (goal >= 0.8x);
- beside them the date, load average, decoder, torch threads, workers and the reference, so a
  time measured on a slower or busier machine reads as such.

    from pipelines.demo_cost import print_cost
    print_cost(out, wall_s, runs, workers=1, batch_size=16)
"""

from __future__ import annotations

import datetime
import json
import os
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from mmsample.decoding.backends.diagnosis import decoder_line
from mmsample.loader import balanced_loader
from mmsample.shards.format import Manifest
from mmsample.shards.indexed import IndexedDataset

from .models import MODELS

EFFICIENCY_GOAL = 1.3  # demo wall / (decodes x decode-only s per clip), at most
RATE_GOAL = 0.8  # a run's training items/s over the decode-only rate, at least


@dataclass(frozen=True)
class RunWork:
    """One run's logged work: `name` (its folder relative to the demo's), items decoded for
    training (scoring passes included) and for evaluation, training items, and seconds of
    its epochs (`time/epoch_s`), evaluations and epoch starts (`time/set_epoch_s`)."""

    name: str
    decoded_train: int
    decoded_eval: int
    items: int
    train_s: float
    eval_s: float
    plan_s: float

    @property
    def decodes(self) -> int:
        return self.decoded_train + self.decoded_eval

    @property
    def wall_s(self) -> float:
        """The run's logged time: epochs, evaluations and epoch starts."""
        return self.train_s + self.eval_s + self.plan_s

    @property
    def items_per_s(self) -> float:
        return self.items / self.train_s if self.train_s > 0 else float("nan")


def run_work(run: Path, root: Path) -> RunWork:
    """The work `run`'s `metrics.jsonl` logged, summed over its epochs. ValueError naming the
    file when it lacks the decode counts (a run of a version that did not count them)."""
    path = run / "metrics.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if not records or any("work/decoded_train" not in r for r in records):
        raise ValueError(
            f"{path} has no 'work/decoded_train' counts (a run trained before decodes were "
            "counted): delete the run folder and run the demo again to measure its cost."
        )

    def total(key: str) -> float:
        return float(sum(r.get(key) or 0.0 for r in records))

    return RunWork(
        name=str(run.relative_to(root)) if run.is_relative_to(root) else str(run),
        decoded_train=round(total("work/decoded_train")),
        decoded_eval=round(total("work/decoded_eval")),
        items=round(total("train/items")),
        train_s=total("time/epoch_s"),
        eval_s=total("time/eval_s"),
        plan_s=total("time/set_epoch_s"),
    )


def softmax_reference_us(reps: int = 2000) -> float:
    """The machine's speed now: median microseconds of the softmaxes of three float32 [64, 309]
    logits (the Ledger baseline of `tools/bench_signals.py`, at this process's torch threads)."""
    gen = torch.Generator().manual_seed(0)
    logits = [torch.randn(64, 309, generator=gen) for _ in range(3)]
    for _ in range(50):
        [torch.softmax(t, dim=1) for t in logits]
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        [torch.softmax(t, dim=1) for t in logits]
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e6


def decode_only_s(
    data: Path,
    *,
    workers: int,
    batch_size: int,
    clips: int = 400,
    passes: int = 2,
    model: str = "small",
    seed: int = 0,
) -> float:
    """Seconds per clip of the demo's training reader alone: `balanced_loader` over the train
    split of `data` in indexed mode (as the demo's runs read: `pipelines.train --mode
    indexed`) with `model`'s specs, `workers` DataLoader workers and `batch_size`, iterated
    without a training step for `clips` clips (or the whole split if smaller), DataLoader
    start-up included; the fastest of `passes` passes. Runs at this process's torch threads."""
    classes = len(Manifest.load(data).classes)
    specs = MODELS[model](classes).modalities
    best = float("inf")
    for _ in range(passes):
        source = IndexedDataset(data, specs, split="train", seed=seed)
        loader = balanced_loader(source, None, batch_size=batch_size, num_workers=workers)
        start = time.perf_counter()
        seen = 0
        for batch in loader:
            seen += len(batch)
            if seen >= clips:
                break
        best = min(best, (time.perf_counter() - start) / max(seen, 1))
        del loader
    return best


def machine_line(workers: int) -> str:
    """Date, load average, decoder and torch threads: what every absolute time depends on."""
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (
        f"{now}, load average {load} on {os.cpu_count()} cores; {decoder_line()}; torch "
        f"{torch.get_num_threads()} intra-op threads, {workers} DataLoader workers"
    )


def cost_lines(
    works: Sequence[RunWork], wall_s: float, per_clip_s: float, reference_us: float, machine: str
) -> list[str]:
    """The printed summary: per-run work and rates, totals and the efficiency against the goals
    (pure: every number is an argument)."""
    rate = 1.0 / per_clip_s
    lines = [
        f"demo cost ({machine}); reference: softmax baseline {reference_us:.1f} us, decode-only "
        f"{per_clip_s * 1e3:.2f} ms per clip = {rate:.0f} clips/s",
        "| run | decodes train (+ scoring) | decodes eval | logged s | items/s | "
        "items/s / decode-only rate |",
        "|---|---|---|---|---|---|",
    ]
    for w in works:
        lines.append(
            f"| {w.name} | {w.decoded_train} | {w.decoded_eval} | {w.wall_s:.1f} | "
            f"{w.items_per_s:.0f} | {w.items_per_s / rate:.2f} (goal >= {RATE_GOAL}) |"
        )
    decodes = sum(w.decodes for w in works)
    ideal = decodes * per_clip_s
    logged = sum(w.wall_s for w in works)
    lines += [
        f"work: {decodes} clip decodes in {len(works)} runs "
        f"({sum(w.decoded_train for w in works)} training and scoring, "
        f"{sum(w.decoded_eval for w in works)} evaluation)",
        f"decoding alone would take {ideal:.1f} s; the runs logged {logged:.1f} s, the demo "
        f"took {wall_s:.1f} s: efficiency {wall_s / ideal if ideal else float('nan'):.2f} "
        f"(runs alone {logged / ideal if ideal else float('nan'):.2f}; goal <= "
        f"{EFFICIENCY_GOAL})",
    ]
    return lines


def print_cost(
    out: Path,
    wall_s: float,
    runs: Sequence[Path],
    *,
    workers: int,
    batch_size: int,
    data: Path | None = None,
    clips: int = 400,
) -> list[str]:
    """Measure the decode-only cost and the reference now, read the work `runs` logged (the
    run folders this demo trained, in `out`), print the summary and return its lines. `wall_s`:
    the demo's wall time for those runs. Says so, instead of a ratio, when no run was trained
    now or when the decoder counted fewer items than the runs trained (DataLoader workers not
    forked from this process: their decodes are not seen)."""
    if not runs:
        lines = ["demo cost: every run was reused; nothing was measured (delete runs to time them)"]
        print("\n".join(lines))
        return lines
    works = [run_work(r, out) for r in runs]
    uncounted = [w.name for w in works if w.decoded_train < w.items]
    shards = data if data is not None else out / "data" / "shards"
    per_clip = decode_only_s(shards, workers=workers, batch_size=batch_size, clips=clips)
    lines = cost_lines(works, wall_s, per_clip, softmax_reference_us(), machine_line(workers))
    if uncounted:
        lines.append(
            f"decodes undercounted in {uncounted}: the decoder counted fewer items than they "
            "trained (DataLoader workers started with 'spawn' or 'forkserver' count apart)"
        )
    print("\n".join(lines), flush=True)
    return lines
