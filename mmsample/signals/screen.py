"""Exact screening of k-means++ distance updates over rank-one gradient embeddings.

`kmeans_pp` (BADGE, BMMAL) lowers every point's nearest squared distance `nearest_i` to
`||g_i - g_c||^2` at each new seed c. For rank-one `g = a (x) z` with `s = ||g|| = |a| |z|`:

    ||g_i - g_c||^2 = n_i + n_c - 2 s_i s_c cos(a_i, a_c) cos(z_i, z_c),   n = s^2,

and a cosine is at most 1 in magnitude, so one factor's cosine alone bounds the distance from
below: `||g_i - g_c||^2 >= n_i + n_c - 2 s_i s_c |cos(f_i, f_c)|` for f = a or z. A point whose
bound is not below `nearest_i` keeps `nearest_i`. When the pool model predicts one of many classes,
`a = p - onehot(argmax p)` of two samples with different predicted classes are nearly orthogonal,
so a new seed leaves almost every point's nearest distance unchanged, and the bound proves it.

`RankOneScreen` keeps the narrower factor's unit rows (f = a `[N, K]` when K <= sum D), in
float16 on CPU (half of float32's bytes; PyTorch's CPU float16 mat-vec accumulates in float32), and
per pick reads them once (one mat-vec) and returns the rows it cannot rule out. `kmeans_pp`
recomputes those rows' distances from the float32 factors, exactly as the unscreened path does.

The bound is lowered by a margin that covers every rounding on both sides, so no skipped row's
distance *as the unscreened path computes it* is below `nearest_i` (u: the factors' unit roundoff,
`gamma_n = n u / (1 - n u)`; h: the stored rows' unit roundoff; e: the largest measured distance of
a stored unit row from the exact unit row, quantisation and normalisation error included, plus
`(F + 5) u` for the normalisation's own rounding):

- stored cosine vs exact: `E = 2e + e^2 + gamma_F (1 + e)^2 + h (1 + e)^2 (1 + gamma_F) + t`
  (`gamma_F` of the accumulation precision over F = the factor's width, `t` the stored type's
  smallest subnormal: output rounding in the subnormal range);
- the unscreened path's own error: its cross term is off by at most `s_i s_c beta`,
  `beta = gamma_K + gamma_D + gamma_K gamma_D + 4u`, its norms n by `theta = 2(gamma_K + gamma_D) +
  10u` relatively (2u of each: underflow, below), and its additions and this bound's evaluation by under `32u (n_i + n_c)`.

A row survives when

    (1 - 32u - 2 tau)(n_i + n_c) - 2 kappa s_i s_c (|cos16| + 2(E + beta + 3u(1 + beta)))
        < nearest_i,

`kappa = (1 + theta)^2 (1 + u)^2 (1 + 32u)` (the factor 2 on the margin is slack for this
derivation's own lower-order terms; `tau = residue_tolerance(K, D)`: `kmeans_pp` sets a computed
distance of at most `tau (n_i + n_c)` to 0, so a row that might be set to 0 survives too).

Those are relative error bounds: they hold only while nothing underflows (a product or sum in the
subnormal range is off by up to half the smallest subnormal t, whatever its size). A row is
*guarded* when `|a_i|^2 >= 4 K t / u`, `|z_i|^2 >= 4 D t / u` and `n_i >= tiny / u` (tiny: the
smallest normal number): then every underflowed product in a dot product, a norm or the bound is
at most u/4 of the term it belongs to (K t <= u |a_i| |a_c| / 4 for two guarded rows), covered by
the 2u in beta and in theta and one u of the normalisation term. A row whose a or z is exactly
zero is guarded too (its dot products are exact zeros). Unguarded rows (factors so small that |a|^2 or n leaves
the normal range, e.g. a ~ 1e-21 with z ~ 1e18 in float32) always survive, and a pick whose seed
is unguarded reads every row. On the benchmark's VGGSound-scale pool (N = 180,000,
K = 309, mean max probability 0.5) about 0.4% of rows survive a pick once the first hundred seeds
are chosen (README, `tools/bench_query.py`).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["RankOneScreen", "residue_tolerance"]

CHUNK_ROWS = 8192  # rows normalised per block when the unit rows are built (bounded temporaries)


def _gamma(n: int, u: float) -> float:
    """Higham's gamma_n = n u / (1 - n u): the relative error bound of an n-term dot product."""
    return n * u / (1.0 - n * u)


def residue_tolerance(k: int, d: int, dtype: torch.dtype) -> float:
    """`tau = 3 (gamma_K + gamma_D) + 24 u`: a squared distance that `n_i + n_c - 2 (a_i . a_c)
    (z_i . z_c)` computes (a [*, K], z [*, D] in `dtype`) as at most `tau (n_i + n_c)` is within
    the formula's rounding error of 0 (its norms off by theta, its cross term by beta, its sums by
    6u of `n_i + n_c`, module docstring: `beta + theta + 6u <= tau`), so `kmeans_pp` sets it to exactly 0: an exact duplicate
    of a seed weighs 0 in the draw, not a rounding residue that depends on BLAS blocking."""
    u = torch.finfo(dtype).eps / 2
    return 3 * (_gamma(k, u) + _gamma(d, u)) + 24 * u


def _cpu_reduces_fp16_in_fp16() -> bool:
    """True when PyTorch was told to let CPU float16 reductions run in float16 (the default is
    float32 arithmetic, which the margin assumes); a private switch, read defensively."""
    getter = getattr(torch._C, "_get_cpu_allow_fp16_reduced_precision_reduction", None)
    return bool(getter()) if getter is not None else False


def storage_dtype(factor: Tensor) -> torch.dtype:
    """The dtype the screen stores unit rows in: float16 for float32 / float64 factors on CPU
    (float32 accumulation there), else the factor's own dtype (on CUDA cuBLAS may reduce float16 in
    float16, so the bytes are not halved there)."""
    if (
        factor.device.type == "cpu"
        and factor.dtype in (torch.float32, torch.float64)
        and not _cpu_reduces_fp16_in_fp16()
    ):
        return torch.float16
    return factor.dtype


def guarded_rows(a: Tensor, z: Tensor, a_sq: Tensor, z_sq: Tensor) -> Tensor:
    """Bool `[N]`: rows whose distances the screen's relative error bounds cover (no underflow
    can matter: module docstring), or whose a or z is exactly zero. `a_sq`, `z_sq` `[N]`: the
    factors' squared row norms, as `kmeans_pp` computes them."""
    tiny = torch.finfo(a.dtype)
    u, t = tiny.eps / 2, tiny.smallest_normal * tiny.eps  # t: the smallest subnormal
    self_sq = a_sq * z_sq
    large = (
        (a_sq >= 4 * a.shape[1] * t / u)
        & (z_sq >= 4 * z.shape[1] * t / u)
        & (self_sq >= tiny.smallest_normal / u)
    )
    # exactly zero factors: only rows whose squared norm is 0 can be (a nonzero row's may have
    # underflowed to 0), so only those rows are read again, for their largest |entry|
    zero = torch.zeros_like(large)
    for factor, sq in ((a, a_sq), (z, z_sq)):
        rows = torch.nonzero(sq == 0).flatten()
        if len(rows):
            zero[rows] |= factor.index_select(0, rows).abs().amax(dim=1) == 0
    return large | zero


class RankOneScreen:
    """Which rows' nearest distance a new k-means++ seed can lower (module docstring).

    Built once per selection from the factors `a [N, K]`, `z [N, D]` and their squared row norms
    `a_sq`, `z_sq [N]` (as `kmeans_pp` computes them; the embeddings' are `a_sq * z_sq`). Memory: the narrower factor's unit rows in
    the storage dtype (float16 on CPU: 2 bytes x min(K, D) per point) and two `[N]` vectors.
    """

    def __init__(self, a: Tensor, z: Tensor, a_sq: Tensor, z_sq: Tensor) -> None:
        self_sq = a_sq * z_sq
        factor = a if a.shape[1] <= z.shape[1] else z
        num, width = factor.shape
        store = storage_dtype(factor)
        self.unit = torch.empty((num, width), dtype=store, device=factor.device)
        worst = 0.0
        for lo in range(0, num, CHUNK_ROWS):
            rows = factor[lo : lo + CHUNK_ROWS]
            norm = torch.linalg.vector_norm(rows, dim=1, keepdim=True)
            exact = rows / torch.where(norm > 0, norm, torch.ones_like(norm))
            stored = self.unit[lo : lo + CHUNK_ROWS]
            stored.copy_(exact)
            gap = torch.linalg.vector_norm(stored.to(exact.dtype) - exact, dim=1)
            worst = max(worst, float(gap.max()))
        u = torch.finfo(a.dtype).eps / 2
        h = torch.finfo(store).eps / 2
        # float16 rows are reduced in float32 on CPU; otherwise in the stored dtype
        u_acc = torch.finfo(torch.float32).eps / 2 if store == torch.float16 else h
        subnormal = float(torch.finfo(store).smallest_normal) * torch.finfo(store).eps
        e = worst * (1 + 4 * u) + (width + 5) * u  # + the normalisation's own rounding
        g_f = _gamma(width, u_acc)
        cos_error = 2 * e + e * e + g_f * (1 + e) ** 2 + h * (1 + e) ** 2 * (1 + g_f) + subnormal
        g_k, g_d = _gamma(a.shape[1], u), _gamma(z.shape[1], u)
        beta = g_k + g_d + g_k * g_d + 4 * u  # 2u of it: underflow in guarded rows
        theta = 2 * (g_k + g_d) + 10 * u  # 2u of it: underflow in guarded rows
        self.margin = 2 * (cos_error + beta + 3 * u * (1 + beta))
        self.kappa = (1 + theta) ** 2 * (1 + u) ** 2 * (1 + 32 * u)
        # a distance within tau (n_i + n_c) of 0 is set to 0: such rows must survive too
        self.shrink = 1 - 32 * u - 2 * residue_tolerance(a.shape[1], z.shape[1], a.dtype)
        self.n_low = self_sq * self.shrink
        # rows the relative error bounds do not cover (underflow, module docstring) always survive
        self.guarded = guarded_rows(a, z, a_sq, z_sq)
        self.n_low.masked_fill_(~self.guarded, float("-inf"))
        self.norm = self_sq.sqrt()
        self.bytes_per_pick = self.unit.numel() * self.unit.element_size()

    def survivors(self, center: int, nearest: Tensor) -> Tensor:
        """Rows (long `[m]`, ascending) whose distance to seed `center` may be below `nearest`
        `[N]`; every other row provably keeps its `nearest` value."""
        if not bool(self.guarded[center]):
            return torch.arange(len(nearest), device=nearest.device)
        cos = torch.mv(self.unit, self.unit[center])
        slack = cos.abs().to(self.norm.dtype).add_(self.margin).mul_(self.norm)
        s_c = float(self.norm[center])
        bound = torch.add(self.n_low, slack, alpha=-2.0 * self.kappa * s_c)
        bound.add_(float(self.n_low[center]))
        return torch.nonzero(bound < nearest).flatten()
