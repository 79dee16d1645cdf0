"""Benchmark the signals every balancing method reads, against baselines measured in the same run.

Prints three tables:
1. Shapley valuation throughput (M = 2, 3; K = 309 classes, D = 512 per modality): the subset
   helper runs a linear fusion head over the 2**M masked feature sets, then BMMAL's valuation
   (`bmmal_weights`: values at y_hat + `shapley`); baseline: one head forward on the full set.
2. `kmeans_pp` at VGGSound scale (N = 180,000, K = 309, D = 1,024, float32): seconds per pick
   unscreened (`screen=False`), peak memory over the inputs, and the ratio of a pick's time to the
   memory-bandwidth bound (bytes of a and z / bandwidth of a plain streaming read `a.sum() +
   z.sum()` in this run); then the same picks with the exact screen on (the CPU default), on these
   unstructured Gaussian factors where its bound rules little out (its cost when it cannot help;
   `tools/bench_query.py` measures it on a class-structured pool).
3. `Ledger.observe` per batch of 64, amortised over an epoch's calls and the flush they require
   (observe stages, the flush computes), and one call alone; baseline: the softmaxes of the
   same logits.

Run: `python tools/bench_signals.py [--device cpu|cuda] [--picks 20] [--n 180000]
[--only shapley|kmeans|ledger ...]`.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import time
from collections.abc import Callable

import torch

from mmsample.signals import bmmal_weights, kmeans_pp, subset_values
from mmsample.signals.screen import RankOneScreen


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device, reps: int, warmup: int = 2) -> float:
    """Fastest wall time of `fn` in seconds over `reps` runs after `warmup` runs (the minimum is
    the estimate least disturbed by other processes on a shared machine)."""
    return min(timed_all(fn, device, reps, warmup))


def table(title: str, header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    print(f"\n{title}")
    print("  ".join(h.rjust(w) for h, w in zip(header, widths)))
    for r in rows:
        print("  ".join(c.rjust(w) for c, w in zip(r, widths)))


def bench_shapley(device: torch.device, batch: int) -> None:
    rows = []
    k, d = 309, 512
    for m in (2, 3):
        g = torch.Generator(device=device).manual_seed(m)
        feats = [torch.randn(batch, d, generator=g, device=device) for _ in range(m)]
        head = torch.nn.Linear(m * d, k).to(device)
        full = torch.cat(feats, dim=1)

        def baseline(head: torch.nn.Module = head, full: torch.Tensor = full) -> object:
            return torch.softmax(head(full), dim=1)

        def valuation(head: torch.nn.Module = head, feats: list[torch.Tensor] = feats) -> object:
            return bmmal_weights(subset_values(feats, head, value="probs"))

        with torch.inference_mode():
            t_base = timed(baseline, device, reps=20)
            t_val = timed(valuation, device, reps=20)
        rows.append(
            [
                str(m),
                str(batch),
                f"{batch / t_base:,.0f}",
                f"{batch / t_val:,.0f}",
                f"{t_val / t_base:.2f}",
                str(1 << m),
            ]
        )
    table(
        f"Shapley valuation, K=309, D=512 per modality, linear head, {device.type} "
        f"({torch.get_num_threads()} threads)",
        ["M", "batch", "head only samples/s", "valuation samples/s", "time ratio", "head calls"],
        rows,
    )


def rss_bytes() -> tuple[int, int]:
    """(current RSS, peak RSS) of this process in bytes from /proc/self/status."""
    values = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0]) * 1024
    return values["VmRSS"], values["VmHWM"]


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark to the current RSS (Linux >= 4.0); False if refused."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def bench_kmeans(device: torch.device, n: int, picks: int, reps: int) -> None:
    k, d = 309, 1024
    g = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, k, generator=g, device=device)
    z = torch.randn(n, d, generator=g, device=device)
    nbytes = a.numel() * a.element_size() + z.numel() * z.element_size()
    materialised = n * k * d * a.element_size()

    def stream() -> object:
        return a.sum() + z.sum()

    a0, z0 = a[0].clone(), z[0].clone()

    def matvecs() -> object:
        return torch.mv(a, a0), torch.mv(z, z0)

    def run(count: int, screen: bool = False) -> float:
        t0 = time.perf_counter()
        gen = torch.Generator(device=device).manual_seed(1)
        kmeans_pp(a, z, count, generator=gen, screen=screen, stats=stats)
        sync(device)
        return time.perf_counter() - t0

    stats: dict[str, int] = {}
    a_sq, z_sq = (
        torch.linalg.vector_norm(a, dim=1).square(),
        torch.linalg.vector_norm(z, dim=1).square(),
    )
    run(2)  # warm-up
    # interleave the baselines and the picks, keep the fastest of each (shared machines)
    t_read = t_mv = t_setup = t_all = t_screened = t_build = float("inf")
    extra = 0
    how = ""
    for _ in range(reps):
        t_read = min(t_read, timed(stream, device, reps=3, warmup=0))
        t_mv = min(t_mv, timed(matvecs, device, reps=3, warmup=0))
        t_setup = min(t_setup, run(1))
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            before = torch.cuda.memory_allocated(device)
            t_all = min(t_all, run(picks + 1))
            extra = max(extra, torch.cuda.max_memory_allocated(device) - before)
            how = "torch.cuda.max_memory_allocated over the inputs"
        else:
            reset = reset_peak_rss()
            rss0, _ = rss_bytes()
            ru0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
            t_all = min(t_all, run(picks + 1))
            _, hwm1 = rss_bytes()
            if reset:
                extra = max(extra, hwm1 - rss0)
                how = "VmHWM after a /proc/self/clear_refs reset, minus VmRSS before the call"
            else:
                extra = max(extra, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - ru0)
                how = "ru_maxrss delta (a lower bound)"
        t_screened = min(t_screened, run(picks + 1, screen=True))
        t_build = min(
            t_build, timed(lambda: RankOneScreen(a, z, a_sq, z_sq), device, reps=1, warmup=0)
        )
    bandwidth = nbytes / t_read
    per_pick = (t_all - t_setup) / picks
    bound = nbytes / bandwidth
    table(
        f"kmeans_pp, N={n:,}, K={k}, D={d}, float32, {device.type} ({torch.get_num_threads()} "
        f"threads); BADGE's materialised [N, K*D] would need {materialised / 1e9:,.0f} GB",
        ["quantity", "value"],
        [
            ["inputs a + z", f"{nbytes / 1e9:.3f} GB"],
            [
                "streaming read a.sum()+z.sum()",
                f"{t_read * 1e3:.1f} ms = {bandwidth / 1e9:.1f} GB/s",
            ],
            ["two mat-vecs a@a0, z@z0", f"{t_mv * 1e3:.1f} ms ({t_mv / t_read:.2f}x the read)"],
            ["setup (norms + first pick)", f"{t_setup:.3f} s"],
            [f"per pick (mean of {picks}, best of {reps} runs)", f"{per_pick * 1e3:.1f} ms"],
            ["bandwidth bound per pick", f"{bound * 1e3:.1f} ms"],
            ["pick time / bound", f"{per_pick / bound:.2f}x (target <= 1.5x)"],
            [
                "per pick, screen on (the CPU default)",
                f"{(t_screened - t_setup) / picks * 1e3:.1f} ms; {stats['screen_misses']} "
                f"screens of {picks} picks left over 1/4 of the rows",
            ],
            ["  of which the screen's build, once", f"{t_build * 1e3:.0f} ms"],
            ["peak memory over inputs", f"{extra / 1e6:.1f} MB"],
            ["peak / inputs", f"{(nbytes + extra) / nbytes:.3f}x (target < 2x)"],
            ["peak measured by", how],
        ],
    )


def bench_ledger(device: torch.device, batches: int, reps: int) -> None:
    """`Ledger.observe` as a training epoch uses it: `batches` calls with the ids of an epoch's
    permutation, then the flush they require (what a read would trigger), timed `reps` times."""
    b, m, k, n = 64, 2, 309, 180_000
    title = (
        f"Ledger.observe, batch {b}, M={m}, K={k}, N={n:,}, {device.type} "
        f"({torch.get_num_threads()} threads); medians of {reps} runs of {batches} batches"
    )
    try:
        from mmsample.ledger import Ledger

        ledger = Ledger(num_samples=n, num_modalities=m, num_classes=k)
        one_by_one = Ledger(num_samples=n, num_modalities=m, num_classes=k, staging=1)
    except NotImplementedError:
        print(f"\n{title}\nLedger: not available")
        return
    g = torch.Generator().manual_seed(0)
    order = torch.randperm(n, generator=g)[: batches * b].view(batches, b)
    label_of = torch.randint(0, k, (n,), generator=g)
    ids = [t.to(device) for t in order]
    labels = [label_of[t].to(device) for t in order]
    uni = [torch.randn(b, k, generator=g).to(device) for _ in range(m)]
    fused = torch.randn(b, k, generator=g).to(device)

    def epoch(led: Ledger, calls: list[float] | None = None) -> float:
        """Seconds for `batches` observe calls plus the final flush; per-call times into
        `calls` (a call that had to flush a full ring included)."""
        sync(device)
        t0 = time.perf_counter()
        for i in range(batches):
            c0 = time.perf_counter()
            led.observe(ids[i], labels[i], uni, fused_logits=fused)
            if calls is not None:
                calls.append(time.perf_counter() - c0)
        led.flush()
        sync(device)
        return time.perf_counter() - t0

    def baseline() -> object:
        return [torch.softmax(t, dim=1) for t in (*uni, fused)]

    for led in (ledger, one_by_one):  # warm-up: allocations, first flush
        epoch(led)
    staged: list[float] = []
    applied: list[float] = []
    calls: list[float] = []
    for _ in range(reps):  # interleaved, so both see the same machine load
        staged.append(epoch(ledger, calls) / batches)
        applied.append(epoch(one_by_one) / batches)
    t_base = statistics.median(timed_all(baseline, device, reps=batches * reps, warmup=50))
    t_call = statistics.median(calls)
    t_staged, t_applied = statistics.median(staged), statistics.median(applied)
    table(
        title,
        ["call", "us per batch", "ratio", "target"],
        [
            ["softmax of the logits (baseline)", f"{t_base * 1e6:.1f}", "1.00", ""],
            [
                f"observe, one call (median: {ledger.staging - 1} of {ledger.staging} only stage)",
                f"{t_call * 1e6:.1f}",
                f"{t_call / t_base:.2f}",
                "",
            ],
            [
                f"observe amortised: ({batches} calls + flush) / {batches}",
                f"{t_staged * 1e6:.1f}",
                f"{t_staged / t_base:.2f}",
                "< 100 us",
            ],
            [
                "same with staging=1 (each batch applied alone)",
                f"{t_applied * 1e6:.1f}",
                f"{t_applied / t_base:.2f}",
                "",
            ],
        ],
    )


def timed_all(
    fn: Callable[[], object], device: torch.device, reps: int, warmup: int
) -> list[float]:
    """Wall time of each of `reps` runs of `fn` in seconds, after `warmup` runs."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return times


SECTIONS = ("shapley", "kmeans", "ledger")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--n", type=int, default=180_000, help="kmeans pool size")
    parser.add_argument("--picks", type=int, default=20, help="timed kmeans picks")
    parser.add_argument("--reps", type=int, default=3, help="kmeans repetitions (min kept)")
    parser.add_argument("--batch", type=int, default=256, help="Shapley batch size")
    parser.add_argument(
        "--only",
        action="append",
        choices=SECTIONS,
        help="run only this section (repeatable; default: all)",
    )
    parser.add_argument(
        "--ledger-batches", type=int, default=256, help="observe calls per timed Ledger run"
    )
    parser.add_argument("--ledger-reps", type=int, default=7, help="timed Ledger runs (median)")
    args = parser.parse_args()
    device = torch.device(args.device)
    only = args.only or SECTIONS
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs visible, device {device}")
    if "shapley" in only:
        bench_shapley(device, args.batch)
    if "kmeans" in only:
        bench_kmeans(device, args.n, args.picks, args.reps)
    if "ledger" in only:
        bench_ledger(device, args.ledger_batches, args.ledger_reps)


if __name__ == "__main__":
    main()
