"""Benchmark active-learning queries at VGGSound scale, against bounds measured in the same run.

Prints, in one run:
1. The synthetic pool: N = 180,000 samples, K = 309 classes, two modalities of D = 512 float32
   features each, class-structured (class centres + noise, modality 0 the more informative), a
   linear fusion head on the concatenated features scaled so that the mean max probability is
   ~0.5 (VGGSound-scale pool models have top-1 about 0.5), and its softmax on all 4 modality
   subsets. The Pool's bytes.
2. BMMAL selection of `--budget` (default 5,000) picks: exact (k-means++ over the whole pool,
   screened: the default on CPU), exact unscreened (`BMMAL(screen=False)`; whether its picks equal
   the screened ones, in order), and `split = 8`. For each: seconds, the setup (contributions,
   weights, factors, first pick: a selection of 1 pick per part), seconds per further pick against
   the memory-bandwidth bound per pick (the bytes of the float32 factors a [N, K] and z [N, 2D]
   over the bandwidth of a plain streaming read `a.sum() + z.sum()` measured in this run, as
   tools/bench_signals.py does), peak memory (VmHWM over the RSS before the pool was built)
   against the Pool's tensors; for the screened run the rows recomputed per pick and the bytes
   read per pick; the overlap of the exact and split selections.
3. The pool pass (`mmsample.active.pool_pass`) per 1,000 samples for a small model on real tiny
   shards (wav spectrogram + npy features, linear head), decoding included.

Run: `python tools/bench_query.py [--n 180000] [--budget 5000] [--split 8] [--device cpu]
[--pass-samples 400] [--no-unscreened] [--bound-picks 200 [--only-bound]]`. Peak memory is measured on CPU runs
only. `--bound-picks P` adds the share of per-pick distance updates that the norm bound
`(|g_i| - |g_c|)^2 >= nearest_i` would skip over P exact picks (measured, not used).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from bench_signals import reset_peak_rss, rss_bytes

from mmsample.active import BMMAL, Pool, pool_pass, select_split
from mmsample.signals import gradient_embedding_factors, kmeans_pp, rank_one_sq_distances


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def table(title: str, rows: list[list[str]]) -> None:
    width = max(len(r[0]) for r in rows)
    print(f"\n{title}")
    for r in rows:
        print(f"  {r[0].ljust(width)}  {r[1]}")


def synthetic_pool(n: int, k: int, d: int, device: torch.device, target: float) -> Pool:
    """Class-structured features, a linear head scaled to mean max probability ~target."""
    g = torch.Generator(device=device).manual_seed(0)
    y = torch.randint(k, (n,), generator=g, device=device)
    centres = [torch.randn(k, d, generator=g, device=device) for _ in range(2)]
    centres[1].mul_(0.5)  # modality 1 carries less class signal: modality 0 dominates
    noise = (1.0, 1.5)
    feats = []
    for c, s in zip(centres, noise):
        f = torch.randn(n, d, generator=g, device=device).mul_(s)
        f.add_(c[y])
        feats.append(f)
    w = torch.cat(centres, dim=1) / d  # [K, 2D]: the head scores the class centres
    probe = torch.cat([f[:2000] for f in feats], dim=1) @ w.T
    lo, hi = 0.01, 100.0
    for _ in range(40):  # bisection on the scale: mean max probability -> target
        mid = (lo * hi) ** 0.5
        top = torch.softmax(probe * mid, dim=1).amax(dim=1).mean().item()
        lo, hi = (mid, hi) if top < target else (lo, mid)
    scale = (lo * hi) ** 0.5
    subset = torch.empty(n, 4, k, device=device)
    probs = torch.empty(n, k, device=device)
    chunk = 8192
    for i in range(0, n, chunk):
        parts = [f[i : i + chunk] for f in feats]
        zero = torch.zeros_like(parts[0])
        for mask, (p0, p1) in enumerate(
            [(zero, zero), (parts[0], zero), (zero, parts[1]), (parts[0], parts[1])]
        ):
            subset[i : i + chunk, mask] = torch.softmax(torch.cat([p0, p1], 1) @ w.T * scale, 1)
        probs[i : i + chunk] = subset[i : i + chunk, 3]
    return Pool(feats, probs, subset)


def bandwidth_bound(pool: Pool, device: torch.device) -> tuple[float, float, int]:
    """(seconds of a streaming read of a + z, GB/s, bytes of a + z), fastest of 5 reads."""
    _, w = pool.contribution_and_weights()
    a, z = gradient_embedding_factors(pool.probs, pool.features, w)
    nbytes = a.numel() * a.element_size() + z.numel() * z.element_size()
    best = float("inf")
    for _ in range(6):
        t0 = time.perf_counter()
        (a.sum() + z.sum()).item()
        sync(device)
        best = min(best, time.perf_counter() - t0)
    del a, z, w
    return best, nbytes / best / 1e9, nbytes


def timed_select(
    strategy: BMMAL, pool: Pool, budget: int, split: int, device: torch.device, base_rss: int
) -> tuple[torch.Tensor, float, int]:
    """(ids, seconds, peak bytes over base_rss) of one BMMAL selection."""
    reset = device.type == "cpu" and reset_peak_rss()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    gen = torch.Generator(device=device).manual_seed(0)
    t0 = time.perf_counter()
    ids = select_split(strategy, pool, budget, split, generator=gen)
    sync(device)
    seconds = time.perf_counter() - t0
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device)
    else:
        peak = rss_bytes()[1] - base_rss if reset else -1
    return ids, seconds, peak


def norm_bound_skips(pool: Pool, picks: int, device: torch.device) -> float:
    """The share of per-pick distance updates that the bound `||g_i - g_c||^2 >= (|g_i| -
    |g_c|)^2` proves unaffected (bound >= the current nearest distance), replayed over the
    first `picks` exact BMMAL picks on this pool (a measurement; the selection does not skip)."""
    _, w = pool.contribution_and_weights()
    a, z = gradient_embedding_factors(pool.probs, pool.features, w)
    norm = torch.linalg.vector_norm(a, dim=1) * torch.linalg.vector_norm(z, dim=1)
    chosen = kmeans_pp(a, z, picks, generator=torch.Generator(device=device).manual_seed(0))
    nearest = torch.full_like(norm, float("inf"))
    skipped = 0
    for k, c in enumerate(chosen.tolist()):
        if k:
            skipped += int(((norm - norm[c]) ** 2 >= nearest).sum())
        torch.minimum(nearest, rank_one_sq_distances(a, z, c), out=nearest)
    return skipped / max(1, (picks - 1) * len(norm))


def bench_pass(samples: int) -> list[list[str]]:
    from mmsample.decoding import Array, Audio
    from mmsample.testing import write_tiny_dataset

    specs = {"audio": Audio(field="wav", seconds=0.25), "feat": Array(field="npy")}

    class Small:
        def __init__(self) -> None:
            self.head_layer = torch.nn.Linear(64 + 8, 10)

        def features(self, batch: object) -> list[torch.Tensor]:
            spec = batch.dense("audio")  # type: ignore[attr-defined]
            audio = spec.reshape(spec.shape[0], -1, spec.shape[-1])[:, :64].mean(-1).float()
            return [audio, batch.dense("feat").float()]  # type: ignore[attr-defined]

        def head(self, x: torch.Tensor) -> torch.Tensor:
            return self.head_layer(x)

    with tempfile.TemporaryDirectory() as tmp:
        write_tiny_dataset(tmp, n=samples, num_classes=10, fields=("wav", "npy"))
        model = Small()
        pool_pass(model, Path(tmp), modalities=specs, progress=False, ids=[0, 1])
        t0 = time.perf_counter()
        pool = pool_pass(model, Path(tmp), modalities=specs, progress=False)
        seconds = time.perf_counter() - t0
    return [
        ["samples (1 s 16 kHz wav -> spectrogram, 8-float npy)", f"{len(pool)}"],
        ["pool pass", f"{seconds:.2f} s = {seconds / len(pool) * 1000:.2f} s per 1,000 samples"],
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=180_000)
    parser.add_argument("--k", type=int, default=309)
    parser.add_argument("--d", type=int, default=512, help="features per modality")
    parser.add_argument("--budget", type=int, default=5_000)
    parser.add_argument("--split", type=int, default=8)
    parser.add_argument("--target", type=float, default=0.5, help="mean max probability")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--pass-samples", type=int, default=400)
    parser.add_argument(
        "--bound-picks",
        type=int,
        default=0,
        help="replay this many picks to measure the norm bound's skip share (0: skip this section)",
    )
    parser.add_argument("--only-bound", action="store_true", help="only the bound section")
    parser.add_argument(
        "--no-unscreened",
        dest="unscreened",
        action="store_false",
        help="skip the unscreened exact selection (and the identity check)",
    )
    args = parser.parse_args()
    device = torch.device(args.device)
    print(
        f"torch {torch.__version__}, {os.cpu_count()} CPUs visible, "
        f"{torch.get_num_threads()} threads, device {device}"
    )
    t0 = time.perf_counter()
    pool = synthetic_pool(args.n, args.k, args.d, device, args.target)
    built = time.perf_counter() - t0
    top = pool.probs.amax(1).mean().item()
    phi = pool.contribution().mean(0).tolist()
    table(
        f"synthetic pool: N={args.n:,}, K={args.k}, D={args.d} x 2 modalities, float32",
        [
            [
                "Pool tensors",
                f"{pool.nbytes / 1e9:.3f} GB ({pool.nbytes / len(pool):,.0f} B a sample)",
            ],
            ["mean max probability", f"{top:.3f}"],
            ["mean contribution Phi", f"{phi[0]:.3f} / {phi[1]:.3f}"],
            ["built in", f"{built:.1f} s"],
        ],
    )
    if args.bound_picks:
        share = norm_bound_skips(pool, args.bound_picks, device)
        table(
            "norm bound (|g_i| - |g_c|)^2 >= nearest_i, replayed over exact BMMAL picks",
            [[f"updates it proves unaffected ({args.bound_picks} picks)", f"{share:.1%}"]],
        )
        if args.only_bound:
            return
    t_read, gbps, nbytes = bandwidth_bound(pool, device)
    bound = nbytes / (gbps * 1e9)
    rows = [
        ["factors a + z", f"{nbytes / 1e9:.3f} GB"],
        ["streaming read a.sum()+z.sum()", f"{t_read * 1e3:.1f} ms = {gbps:.1f} GB/s"],
        ["bandwidth bound per pick", f"{bound * 1e3:.1f} ms"],
    ]
    base = rss_bytes()[0] - pool.nbytes if device.type == "cpu" else 0
    runs = [("exact", BMMAL(), 1)]
    if args.unscreened:
        runs.append(("exact unscreened", BMMAL(screen=False), 1))
    runs.append((f"split={args.split}", BMMAL(), args.split))
    results = {}
    for label, strategy, split in runs:
        _, setup, _ = timed_select(strategy, pool, split, split, device, base)  # setup only
        ids, seconds, peak = timed_select(strategy, pool, args.budget, split, device, base)
        results[label] = ids
        per_pick = (seconds - setup) / max(args.budget - split, 1)
        # a split part reads 1/split of the factors per pick
        part_bound = bound / split
        rows += [
            [f"{label}: {args.budget:,} picks", f"{seconds:.1f} s (setup {setup:.1f} s)"],
            [
                f"{label}: per pick / bound",
                f"{per_pick * 1e3:.1f} ms / {part_bound * 1e3:.1f} ms = "
                f"{per_pick / part_bound:.2f}x (target <= 1.5x)",
            ],
        ]
        stats = strategy.stats
        if label == "exact" and stats.get("screened_picks"):
            screened = stats["screened_picks"]
            per = stats["recomputed_rows"] / screened
            n_rows, k = pool.probs.shape
            width = k + sum(f.shape[1] for f in pool.features)
            read = n_rows * min(k, width - k) * 2 + per * width * 4
            rows += [
                [
                    f"{label}: screened picks / unscreened passes",
                    f"{screened:,} / {stats['full_passes']:,}",
                ],
                [
                    f"{label}: rows recomputed per screened pick",
                    f"{per:,.0f} of {n_rows:,} ({per / n_rows:.2%})",
                ],
                [
                    f"{label}: bytes read per screened pick",
                    f"{read / 1e9:.3f} GB ({read / nbytes:.1%} of the factors)",
                ],
            ]
        if peak >= 0:
            rows.append(
                [
                    f"{label}: peak memory / Pool",
                    f"{peak / 1e9:.2f} GB / {pool.nbytes / 1e9:.2f} GB = "
                    f"{peak / pool.nbytes:.2f}x (target < 2x)",
                ]
            )
    if "exact unscreened" in results:
        exact, plain = results["exact"], results["exact unscreened"]
        first = torch.nonzero(exact != plain).flatten()
        rows.append(
            [
                "screened vs unscreened picks",
                "identical, in order"
                if len(first) == 0
                else f"differ from pick {int(first[0])}; shared ids "
                f"{len(set(exact.tolist()) & set(plain.tolist())):,}",
            ]
        )
    split_ids = results[f"split={args.split}"]
    same = len(set(results["exact"].tolist()) & set(split_ids.tolist()))
    rows.append(
        ["overlap exact vs split", f"{same:,} of {args.budget:,} ({same / args.budget:.1%})"]
    )
    table(f"BMMAL selection on {device.type}", rows)
    del pool
    table("pool pass (small model, real tiny shards, CPU)", bench_pass(args.pass_samples))


if __name__ == "__main__":
    main()
