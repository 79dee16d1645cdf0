"""k-means++ seeding over rank-one gradient embeddings, without ever forming them.

BMMAL and BADGE pick the samples to label by k-means++ seeding over last-layer gradient
embeddings `g_i = a_i (x) z_i` (`gradient_embedding_factors`). At VGGSound scale the materialised
`[N, K*D]` matrix needs over 200 GB; because every g is an outer product,
`||a (x) b - c (x) d||^2 = |a|^2 |b|^2 + |c|^2 |d|^2 - 2 (a.c)(b.d)`, so each pick costs two
mat-vecs (`a @ a_c`, `z @ z_c`): one read of the factors, the memory-bandwidth bound. A computed
distance within the formula's rounding error of 0 counts as 0 (`residue_tolerance`), so an
exact duplicate of a seed weighs 0, not a rounding residue.

On CPU, `kmeans_pp` by default screens each pick first (`mmsample.signals.screen`): one read of
the narrower factor's unit rows in float16 proves which points the new seed cannot bring nearer,
and only the rest are recomputed from the float32 factors. The picks are the unscreened path's.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import torch
from torch import Tensor

from .checks import describe
from .screen import RankOneScreen, residue_tolerance

__all__ = ["kmeans_pp", "rank_one_sq_distances"]

# CPU mat-vecs over at least this many elements (rows x columns of a and z) are split across
# threads: at 2 threads, 20,000 x (309 + 1,024) float32 rows take 2.7 ms split, 5.6 ms whole
SPLIT_ELEMENTS = 1 << 20
RECOMPUTE_ROWS = 8192  # screened rows recomputed per block (bounded temporaries)
FULL_PASS_SHARE = 4  # more than 1/4 of the rows left by the screen: one unscreened pass instead
MAX_BACKOFF = 32  # after such picks the screen rests for up to this many picks (doubling)


@contextlib.contextmanager
def row_split_pool(a: Tensor, z: Tensor) -> Iterator[ThreadPoolExecutor | None]:
    """The helper threads that split mat-vecs over the rows of a and z, for one library call:
    None when the rows are not split (not CPU, one intra-op thread, fewer rows than threads, or
    fewer than SPLIT_ELEMENTS elements in a and z together), else
    `torch.get_num_threads() - 1` threads, joined when the block exits. No thread outlives the
    call, nor the OpenMP team a thread's torch kernels start (it ends with its thread), so the
    caller's later calls never run beside threads left spinning here."""
    threads = torch.get_num_threads()
    rows = a.shape[0]
    small = rows * (a.shape[1] + z.shape[1]) < SPLIT_ELEMENTS or rows < threads
    if a.device.type != "cpu" or threads < 2 or small:
        yield None
        return
    pool = ThreadPoolExecutor(threads - 1, thread_name_prefix="mmsample-mv")
    try:
        yield pool
    finally:
        pool.shutdown(wait=True)


def paired_matvecs(
    a: Tensor, a_c: Tensor, z: Tensor, z_c: Tensor, pool: ThreadPoolExecutor | None = None
) -> tuple[Tensor, Tensor]:
    """`(a @ a_c, z @ z_c)`. On CPU the rows are split over torch's intra-op thread count, since
    BLAS runs one mat-vec on one thread (2 cores: 1.8x the streaming-read time whole, 1.05x split):
    the calling thread takes one part, `pool` (from `row_split_pool`) the others; without a
    pool, one is made and joined for this call."""
    if pool is None:
        with row_split_pool(a, z) as own:
            return _paired(a, a_c, z, z_c, own)
    return _paired(a, a_c, z, z_c, pool)


def _paired(
    a: Tensor, a_c: Tensor, z: Tensor, z_c: Tensor, pool: ThreadPoolExecutor | None
) -> tuple[Tensor, Tensor]:
    if pool is None:
        return torch.mv(a, a_c), torch.mv(z, z_c)
    rows, parts = a.shape[0], torch.get_num_threads()
    out_a, out_z = a.new_empty(rows), z.new_empty(rows)

    def part(i: int) -> None:
        lo, hi = i * rows // parts, (i + 1) * rows // parts
        torch.mv(a[lo:hi], a_c, out=out_a[lo:hi])
        torch.mv(z[lo:hi], z_c, out=out_z[lo:hi])

    # the calling thread takes part 0 itself: one hand-off fewer per pick
    others = [pool.submit(part, i) for i in range(1, parts)]
    part(0)
    for done in others:
        done.result()
    return out_a, out_z


def _check_factors(a: Tensor, z: Tensor, function: str) -> None:
    for name, t in (("a", a), ("z", z)):
        if not isinstance(t, Tensor) or not t.is_floating_point() or t.ndim != 2:
            got = describe(t)
            raise ValueError(
                f"The '{name}' argument of {function} must be a floating tensor [N, {name.upper()}"
                f" dim]; got {got}."
            )
    if a.shape[0] != z.shape[0] or a.dtype != z.dtype or a.device != z.device:
        raise ValueError(
            f"The 'a' and 'z' arguments of {function} must have the same N, dtype and device; "
            f"got a {a.dtype} {tuple(a.shape)} on {a.device}, z {z.dtype} {tuple(z.shape)} "
            f"on {z.device}."
        )


def _sq_norms(t: Tensor) -> Tensor:
    # a reduction kernel: no [N, D] temporary (a * a would double the peak memory)
    return torch.linalg.vector_norm(t, dim=1).square()


def _distances_to(
    a: Tensor, z: Tensor, self_sq: Tensor, center: Tensor, pool: ThreadPoolExecutor | None
) -> Tensor:
    """Squared distances `[N]` from every g_i to g_center; center is a 1-element long tensor."""
    a_c = a.index_select(0, center).squeeze(0)
    z_c = z.index_select(0, center).squeeze(0)
    dist = torch.addcmul(self_sq, *_paired(a, a_c, z, z_c, pool), value=-2.0)
    return _finish(dist, self_sq, self_sq.index_select(0, center), _tolerance(a, z))


def _tolerance(a: Tensor, z: Tensor) -> float:
    return residue_tolerance(a.shape[1], z.shape[1], a.dtype)


def _finish(dist: Tensor, self_sq_rows: Tensor, n_c: Tensor, tol: float) -> Tensor:
    """`dist` (holding `n_i - 2 (a_i . a_c)(z_i . z_c)`) plus `n_c`, in place; values within the
    formula's rounding error of 0 (`<= tol (n_i + n_c)`, negatives included) set to exactly 0."""
    dist.add_(n_c)
    residue = torch.add(self_sq_rows, n_c).mul_(tol)
    return dist.masked_fill_(dist <= residue, 0.0)


def _draw(weight: Tensor, generator: torch.Generator | None) -> Tensor:
    """One index i (1-element long tensor) with probability weight_i / sum(weight), by inverse
    CDF: the first i whose float64 cumulative sum exceeds u ~ U[0, total). A zero weight leaves
    the cumulative sum unchanged, so it is never drawn."""
    cdf = torch.cumsum(weight, dim=0, dtype=torch.float64)
    total = cdf[-1:]
    u = torch.rand(1, generator=generator, dtype=torch.float64, device=weight.device) * total
    u = torch.minimum(u, torch.nextafter(total, torch.zeros_like(total)))  # u < total always
    return torch.searchsorted(cdf, u, right=True)


def rank_one_sq_distances(a: Tensor, z: Tensor, center: int | Tensor) -> Tensor:
    """`||a_i (x) z_i - a_c (x) z_c||^2` for every i `[N]`, from the factors alone, as
    `kmeans_pp` computes them: a value within the formula's rounding error of 0
    (`mmsample.signals.screen.residue_tolerance` times `n_i + n_c`) is exactly 0."""
    _check_factors(a, z, "rank_one_sq_distances")
    c = torch.as_tensor(center, dtype=torch.long, device=a.device).reshape(1)
    self_sq = _sq_norms(a) * _sq_norms(z)
    with row_split_pool(a, z) as pool:
        return _distances_to(a, z, self_sq, c, pool)


def _update_rows(
    a: Tensor, z: Tensor, self_sq: Tensor, center: Tensor, rows: Tensor, nearest: Tensor
) -> None:
    """`nearest[rows] = min(nearest[rows], ||g_rows - g_center||^2)`, the distances by the same
    formula as `_distances_to` (`_finish` included), over blocks of RECOMPUTE_ROWS gathered
    rows. BLAS may round a gathered row's dot product differently in the last bit."""
    a_c = a.index_select(0, center).squeeze(0)
    z_c = z.index_select(0, center).squeeze(0)
    n_c = self_sq.index_select(0, center)
    tol = _tolerance(a, z)
    for lo in range(0, len(rows), RECOMPUTE_ROWS):
        part = rows[lo : lo + RECOMPUTE_ROWS]
        part_sq = self_sq.index_select(0, part)
        dist = torch.addcmul(
            part_sq,
            torch.mv(a.index_select(0, part), a_c),
            torch.mv(z.index_select(0, part), z_c),
            value=-2.0,
        )
        dist = _finish(dist, part_sq, n_c, tol)
        nearest.index_copy_(0, part, torch.minimum(nearest.index_select(0, part), dist))


def kmeans_pp(
    a: Tensor,
    z: Tensor,
    n: int,
    generator: torch.Generator | None = None,
    *,
    screen: bool | None = None,
    stats: dict[str, int] | None = None,
) -> Tensor:
    """Indices (long `[n]`, on a's device) of n k-means++ seeds over `g_i = a_i (x) z_i`.

    First pick: the largest `||g_i|| = ||a_i|| ||z_i||` (ties: lowest index). Then each pick draws
    i with probability D_i^2 / sum D^2, D_i the distance to the nearest chosen seed, never a chosen
    index twice. When every unchosen point has D = 0 (n exceeds the number of distinct points) the
    pick is uniform over the unchosen. Draws use `generator` (on a's device) or the global RNG.

    Unscreened, a pick costs two mat-vecs over the factors (rows split over CPU threads) and a
    few passes over `[N]` vectors; no `[N, K*D]`, no host sync. `screen` (default: on for CPU
    factors) first reads the narrower factor's unit rows (float16 on CPU, 2 bytes x min(K, D) per
    point, built once) and recomputes only the points that a proven bound
    (`mmsample.signals.screen`) cannot rule out; when over a quarter of the points remain, that
    pick runs unscreened and the screen rests for 1, 2, 4, ... (at most MAX_BACKOFF) picks, so a
    pool it cannot help pays for it on few picks. Skipped points provably keep their nearest
    distance; recomputed points get the unscreened formula, and a distance within its rounding
    error of 0 counts as 0 on both paths (an exact duplicate of a seed weighs 0, never a
    rounding residue), so no draw hinges on rounding residues. BLAS may round a recomputed row's
    dot product differently in the last bit from the whole-factor mat-vec; a draw can differ
    only when the uniform lands within such a bit of a step of the cumulative weights (a chance
    of order 1e-7 a pick; the benchmark's 5,000 VGGSound-scale picks are identical, in order).
    One host sync per screened pick.
    `stats`, when given, receives `screened_picks`, `full_passes` (unscreened picks),
    `recomputed_rows` (over the screened picks) and `screen_misses` (screens that left too many).

    The helper threads are joined before it returns: no thread it started outlives the call.
    Raises ValueError for factors that are not floating `[N, *]` tensors of one dtype and device,
    non-finite embedding norms (the rows named), n outside [0, N], or a generator on another
    device; TypeError for a non-int n.
    """
    _check_arguments(a, z, n, generator, screen)
    counts = {"screened_picks": 0, "full_passes": 0, "recomputed_rows": 0, "screen_misses": 0}
    picks = torch.empty(n, dtype=torch.long, device=a.device)
    if n == 0:
        _report(stats, counts)
        return picks
    num = a.shape[0]
    a_sq, z_sq, self_sq = _embedding_sq_norms(a, z)
    use_screen = (a.device.type == "cpu") if screen is None else screen
    screener = RankOneScreen(a, z, a_sq, z_sq) if use_screen and n > 2 else None
    backoff = _Backoff(screener, num, counts)
    center = self_sq.argmax().reshape(1)
    picks[0:1] = center
    # 1 for unchosen, 0 for chosen: the fallback law when every unchosen point has D = 0
    unchosen = torch.ones(num, dtype=a.dtype, device=a.device)
    nearest = torch.full((num,), float("inf"), dtype=a.dtype, device=a.device)
    with row_split_pool(a, z) as pool:  # helper threads live for this call only
        for k in range(1, n):
            unchosen.index_fill_(0, center, 0.0)
            rows = backoff.rows(k, center, nearest)
            if rows is None:
                torch.minimum(nearest, _distances_to(a, z, self_sq, center, pool), out=nearest)
            else:
                _update_rows(a, z, self_sq, center, rows, nearest)
            nearest.index_fill_(0, center, 0.0)  # chosen stay at 0: distances are >= 0
            weight = torch.where(nearest.sum() > 0, nearest, unchosen)  # no host sync
            center = _draw(weight, generator)
            picks[k : k + 1] = center
    _report(stats, counts)
    return picks


def _check_arguments(
    a: Tensor, z: Tensor, n: object, generator: torch.Generator | None, screen: object
) -> None:
    """kmeans_pp's argument checks (see its docstring for what each raises)."""
    _check_factors(a, z, "kmeans_pp")
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"The 'n' parameter of kmeans_pp must be an int; got {type(n).__name__}.")
    num = a.shape[0]
    if not 0 <= n <= num:
        raise ValueError(
            f"The 'n' parameter of kmeans_pp must be in [0, N] = [0, {num}] (picks never "
            f"repeat); got {n}."
        )
    if generator is not None and generator.device.type != a.device.type:
        raise ValueError(
            f"The 'generator' of kmeans_pp must be on the factors' device ({a.device}); "
            f"got a generator on {generator.device}."
        )
    if screen is not None and not isinstance(screen, bool):
        raise TypeError(
            f"The 'screen' parameter of kmeans_pp must be a bool or None; got {screen!r}."
        )


def _embedding_sq_norms(a: Tensor, z: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """`(||a_i||^2, ||z_i||^2, ||g_i||^2)` `[N]` each; ValueError naming rows whose embedding
    norm is not finite (the one host sync)."""
    a_sq, z_sq = _sq_norms(a), _sq_norms(z)
    self_sq = a_sq * z_sq
    if not bool(torch.isfinite(self_sq).all()):  # bad rows name themselves
        bad = torch.nonzero(~torch.isfinite(self_sq)).flatten()[:5].tolist()
        raise ValueError(
            f"The 'a' and 'z' arguments of kmeans_pp must be finite; rows {bad} have a NaN or "
            "infinite embedding norm (check the logits and features of those samples)."
        )
    return a_sq, z_sq, self_sq


class _Backoff:
    """When to screen a pick: from the second pick on (the first seed's distances are all
    needed), unless the last screen left over 1 / FULL_PASS_SHARE of the points; then the
    screen rests for 1, 2, 4, ... (at most MAX_BACKOFF) picks. Counts into `counts`."""

    def __init__(self, screener: RankOneScreen | None, num: int, counts: dict[str, int]):
        self.screener, self.num, self.counts = screener, num, counts
        self.retry_at, self.backoff = 0, 0  # the screen is skipped before pick retry_at

    def rows(self, k: int, center: Tensor, nearest: Tensor) -> Tensor | None:
        """The rows to recompute for pick k (None: a full pass)."""
        rows = None
        if self.screener is not None and k > 1 and k >= self.retry_at:
            rows = self.screener.survivors(int(center), nearest)
            if len(rows) * FULL_PASS_SHARE > self.num:  # no gain: retry after 1, 2, 4, ...
                self.counts["screen_misses"] += 1
                self.backoff = min(2 * self.backoff or 1, MAX_BACKOFF)
                self.retry_at, rows = k + 1 + self.backoff, None
            else:
                self.backoff = 0
        if rows is None:
            self.counts["full_passes"] += 1
        else:
            self.counts["screened_picks"] += 1
            self.counts["recomputed_rows"] += len(rows)
        return rows


def _report(stats: dict[str, int] | None, counts: dict[str, int]) -> None:
    if stats is not None:
        stats.update(counts)
