"""The k-means++ screen: sound at the boundary, not vacuous, and the same picks as unscreened."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import chisquare

from mmsample.signals import gradient_embedding_factors, kmeans_pp, rank_one_sq_distances
from mmsample.signals.screen import RankOneScreen


def class_pool(
    n: int, k: int, d: int, temperature: float, seed: int, dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, torch.Tensor]:
    """BADGE factors of a class-structured pool: features = class centre + noise, the fused
    softmax of a linear head at `temperature` (small: confident; large: near uniform)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(k, (n,), generator=g)
    centres = torch.randn(k, d, generator=g)
    feats = centres[y] + torch.randn(n, d, generator=g)
    probs = torch.softmax(feats @ centres.T / (d * temperature), dim=1)
    a, z = gradient_embedding_factors(probs.to(dtype), [feats.to(dtype)])
    return a, z


def pools() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    gauss = (torch.randn(3000, 12, generator=g), torch.randn(3000, 40, generator=g))
    # norms over six orders of magnitude, and exact duplicates (distance 0 ties)
    spread = (
        torch.randn(2000, 9, generator=g) * torch.logspace(-3, 3, 2000)[:, None],
        torch.randn(2000, 30, generator=g),
    )
    dup_a, dup_z = torch.randn(300, 8, generator=g), torch.randn(300, 20, generator=g)
    dups = (dup_a.repeat(5, 1), dup_z.repeat(5, 1))
    # rows with a = 0 (one-hot softmax): zero embeddings, unit rows left at 0
    za, zz = class_pool(2000, 20, 32, 0.01, seed=3)
    za[::7] = 0.0
    # squared norms in float32's subnormal range (~1e-42): absolute, not relative, rounding
    tiny = (
        torch.randn(2000, 9, generator=g) * 1e-21 * torch.logspace(0, 2, 2000)[:, None],
        torch.randn(2000, 30, generator=g) * 1e-2,
    )
    # z narrower than a: the screen reads z
    wide_a, narrow_z = torch.randn(2500, 64, generator=g), torch.randn(2500, 6, generator=g)
    return {
        "gaussian": gauss,
        "norm-spread": spread,
        "duplicates": dups,
        "zero-rows": (za, zz),
        "narrow-z": (wide_a, narrow_z),
        "subnormal": tiny,
        # mean max probability ~0.4, ~0.998 and ~0.06
        "classes-unsure": class_pool(4000, 50, 64, 0.25, seed=1),
        "classes-sure": class_pool(4000, 50, 64, 0.05, seed=2),
        "classes-uniform": class_pool(4000, 50, 64, 1.0, seed=6),
        "classes-float64": class_pool(3000, 30, 48, 0.25, seed=4, dtype=torch.float64),
    }


POOLS = pools()


@pytest.mark.parametrize("name", sorted(POOLS))
def test_screened_picks_equal_unscreened(name: str) -> None:
    a, z = POOLS[name]
    picks = min(300, a.shape[0])
    for seed in (0, 1):
        stats: dict[str, int] = {}
        got = kmeans_pp(a, z, picks, generator=torch.Generator().manual_seed(seed), stats=stats)
        ref = kmeans_pp(a, z, picks, generator=torch.Generator().manual_seed(seed), screen=False)
        assert torch.equal(got, ref), name
        assert stats["screened_picks"] + stats["full_passes"] == picks - 1


def test_screen_skips_most_rows_on_a_many_class_pool() -> None:
    """Not vacuous: on a pool whose model predicts one of many classes, after the first seeds
    almost every row is proven unaffected, and the unscreened path gives the same picks."""
    a, z = class_pool(6000, 100, 64, 0.2, seed=5)  # mean max probability ~0.5
    stats: dict[str, int] = {}
    got = kmeans_pp(a, z, 400, generator=torch.Generator().manual_seed(0), stats=stats)
    ref = kmeans_pp(a, z, 400, generator=torch.Generator().manual_seed(0), screen=False)
    assert torch.equal(got, ref)
    assert stats["screened_picks"] > 300
    # rows recomputed per screened pick: a small share of the 6,000
    assert stats["recomputed_rows"] / stats["screened_picks"] < 0.1 * 6000


def sq_norms(a: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """||a_i (x) z_i||^2 = |a_i|^2 |z_i|^2 `[N]`."""
    return torch.linalg.vector_norm(a, dim=1).square() * torch.linalg.vector_norm(z, dim=1).square()


def screen_of(a: torch.Tensor, z: torch.Tensor) -> RankOneScreen:
    """The screen kmeans_pp builds for these factors."""
    return RankOneScreen(a, z, *factor_sq(a, z))


def factor_sq(a: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """|a_i|^2 and |z_i|^2 `[N]` each."""
    return torch.linalg.vector_norm(a, dim=1).square(), torch.linalg.vector_norm(z, dim=1).square()


def exact_distances(a: torch.Tensor, z: torch.Tensor, c: int) -> torch.Tensor:
    """||g_i - g_c||^2 in float64 from the materialised embeddings (the reference)."""
    g = torch.einsum("nk,nd->nkd", a.double(), z.double()).flatten(1)
    return ((g - g[c]) ** 2).sum(1)


@pytest.mark.parametrize(
    "name",
    [
        "gaussian",
        "norm-spread",
        "classes-unsure",
        "narrow-z",
        "subnormal",
        "duplicates",
        "zero-rows",
    ],
)
def test_every_row_that_can_move_survives(name: str) -> None:
    """Soundness at the boundary: with nearest_i set just above or below the distance the
    unscreened path computes, every row whose computed distance is below nearest_i survives."""
    a, z = POOLS[name]
    a, z = a[:1500], z[:1500]
    screen = screen_of(a, z)
    g = torch.Generator().manual_seed(11)
    for c in (0, 17, 733, 1499):
        d_ref = rank_one_sq_distances(a, z, c)
        # relative offsets of +-1e-6 .. +-0.5 around the computed distance, and exact equality
        scale = torch.logspace(-6, -0.3, 1500)[torch.randperm(1500, generator=g)]
        sign = torch.randint(0, 3, (1500,), generator=g).to(a.dtype) - 1.0
        nearest = d_ref * (1 + sign * scale) + (sign > 0) * 1e-30
        kept = torch.zeros(1500, dtype=torch.bool)
        kept[screen.survivors(c, nearest)] = True
        must_move = d_ref < nearest
        assert must_move.any()
        assert kept[must_move].all(), f"{name}: a row whose distance drops was skipped"


def test_margin_is_under_one_percent_of_the_norms() -> None:
    """Not vacuous: rows whose nearest distance lies `0.01 (n_i + n_c)` under the exact
    one-factor bound `n_i + n_c - 2 s_i s_c |cos(a_i, a_c)|` (float64) are all skipped."""
    a, z = POOLS["classes-unsure"]
    screen = screen_of(a, z)
    a64, z64 = a.double(), z.double()
    n64 = sq_norms(a64, z64)
    s = n64.sqrt()
    unit = a64 / torch.linalg.vector_norm(a64, dim=1, keepdim=True)
    for c in (3, 1000, 3999):
        lower = n64 + n64[c] - 2 * s * s[c] * (unit @ unit[c]).abs()
        nearest = (lower - 0.01 * (n64 + n64[c])).to(a.dtype)
        assert len(screen.survivors(c, nearest)) == 0
        # and the exact distances are indeed at least the bound (the identity it rests on)
        assert (exact_distances(a, z, c) >= lower - 1e-12 * (n64 + n64[c])).all()


def test_storage_is_float16_of_the_narrower_factor() -> None:
    a, z = POOLS["classes-unsure"]  # K = 50 < D = 64: a is screened
    screen = screen_of(a, z)
    assert screen.unit.dtype == torch.float16 and screen.unit.shape == a.shape
    assert screen.bytes_per_pick == a.shape[0] * a.shape[1] * 2
    wa, nz = POOLS["narrow-z"]
    assert screen_of(wa, nz).unit.shape == nz.shape
    norms = torch.linalg.vector_norm(screen.unit.float(), dim=1)
    assert torch.allclose(norms, torch.ones_like(norms), atol=2e-3)


def test_a_screen_that_cannot_help_rests() -> None:
    """Every a_i equal (|cos| = 1): the bound rules nothing out, so each screen is a miss; the
    screen then rests 1, 2, 4, ..., 32 picks, and the picks stay the unscreened ones."""
    g = torch.Generator().manual_seed(8)
    a = torch.ones(3000, 10)
    z = torch.randn(3000, 24, generator=g)
    stats: dict[str, int] = {}
    got = kmeans_pp(a, z, 200, generator=torch.Generator().manual_seed(0), stats=stats)
    ref = kmeans_pp(a, z, 200, generator=torch.Generator().manual_seed(0), screen=False)
    assert torch.equal(got, ref)
    assert stats["screened_picks"] == 0 and stats["full_passes"] == 199
    # screens at picks 2, 4, 7, 12, 21, 38, 71, 104, 137, 170 (rests 1, 2, 4, 8, 16, 32, 32, ...)
    assert stats["screen_misses"] == 10


def test_stats_and_screen_argument() -> None:
    a, z = POOLS["gaussian"]
    stats: dict[str, int] = {}
    kmeans_pp(a, z, 5, generator=torch.Generator().manual_seed(0), screen=False, stats=stats)
    assert stats == {
        "screened_picks": 0,
        "full_passes": 4,
        "recomputed_rows": 0,
        "screen_misses": 0,
    }
    with pytest.raises(TypeError, match=r"'screen'"):
        kmeans_pp(a, z, 5, screen="yes")  # type: ignore[arg-type]


def test_a_row_whose_squared_norm_underflows_still_moves() -> None:
    """Seed c = (1e-20 e_0) (x) e_0 (n_c = 1e-40, subnormal) and row 1 = (1e-24 e_0) (x) e_0, whose
    n_1 = 1e-48 underflows to 0 and s_1 = 0: the relative margin vanishes, yet the computed
    distance n_c - 2e-44 lies below n_c; a nearest value between the two must let the row move."""
    a = torch.zeros(3, 4)
    z = torch.zeros(3, 5)
    a[0, 0], a[1, 0], a[2, 1] = 1e-20, 1e-24, 1.0
    z[0, 0] = z[1, 0] = z[2, 1] = 1.0
    self_sq = sq_norms(a, z)
    assert self_sq[1] == 0 and 0 < self_sq[0] < torch.finfo(torch.float32).tiny
    d_ref = rank_one_sq_distances(a, z, 0)
    assert d_ref[1] < self_sq[0]  # the cross term survives where the norm underflowed
    nearest = torch.tensor([0.0, float(self_sq[0]), 5.0])
    assert d_ref[1] < nearest[1]
    assert 1 in screen_of(a, z).survivors(0, nearest).tolist()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_screen_on_cuda_gives_the_unscreened_picks() -> None:
    """On CUDA the screen is off by default; asked for, it stores the unit rows in the factors'
    dtype and must still give the unscreened picks."""
    a, z = (t.cuda() for t in class_pool(4000, 50, 64, 0.25, seed=1))
    stats: dict[str, int] = {}
    gen = torch.Generator(device="cuda")
    got = kmeans_pp(a, z, 200, generator=gen.manual_seed(0), screen=True, stats=stats)
    ref = kmeans_pp(a, z, 200, generator=gen.manual_seed(0))
    assert torch.equal(got, ref)
    assert stats["screened_picks"] > 0
    assert screen_of(a, z).unit.dtype == torch.float32


def test_picks_that_hinge_on_rounding_residues_equal_unscreened() -> None:
    """100 distinct points, each 10 times, 200 picks: once every distinct point is a seed, the
    draws weigh only the duplicates' rounding residues, so a recomputed row whose distance
    differs from the unscreened one in the last bit changes the picks (it did, for all of the
    four seeds tried, while rows were recomputed by gathered BLAS mat-vecs)."""
    for seed in (0, 1):
        g = torch.Generator().manual_seed(seed)
        a = torch.randn(100, 9, generator=g).repeat(10, 1)
        z = torch.randn(100, 33, generator=g).repeat(10, 1)
        stats: dict[str, int] = {}
        got = kmeans_pp(a, z, 200, generator=torch.Generator().manual_seed(0), stats=stats)
        ref = kmeans_pp(a, z, 200, generator=torch.Generator().manual_seed(0), screen=False)
        assert stats["screened_picks"] > 100
        assert torch.equal(got, ref)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("threads", [1, 2])
def test_recomputed_rows_equal_whole_pool_distances(dtype: torch.dtype, threads: int) -> None:
    """A row recomputed among any gathered subset (one row, a few, thousands; narrow and wide
    factors) equals the whole-pool `rank_one_sq_distances` within the formula's rounding error
    `residue_tolerance (n_i + n_c)`, both equal the float64 formula within it, and a seed's exact
    duplicate is exactly 0 on both paths (BLAS rounds the two paths' dot products apart in the
    last bit: the reason for the zero rule)."""
    from mmsample.signals.kmeans import _update_rows
    from mmsample.signals.screen import residue_tolerance

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        g = torch.Generator().manual_seed(5)
        for num, k, d in ((5000, 7, 30), (3001, 309, 128), (7, 17000, 3), (5, 3, 33000)):
            a = torch.randn(num, k, generator=g, dtype=dtype)
            z = torch.randn(num, d, generator=g, dtype=dtype)
            c, dup = num - 1, num // 2
            a[dup], z[dup] = a[c], z[c]
            self_sq = sq_norms(a, z)
            scale = residue_tolerance(k, d, dtype) * (self_sq + self_sq[c]).double()
            a64, z64 = a.double(), z.double()
            n64 = sq_norms(a64, z64)
            d64 = n64 + n64[c] - 2 * (a64 @ a64[c]) * (z64 @ z64[c])
            whole = rank_one_sq_distances(a, z, c)
            assert whole[dup] == 0 and whole[c] == 0
            assert ((whole.double() - d64).abs() <= scale).all()
            for size in sorted({1, 2, 3, num // 3, num}):
                rows = torch.randperm(num, generator=g)[:size].sort().values
                rows = torch.unique(torch.cat([rows, torch.tensor([dup])]))
                nearest = torch.full((num,), float("inf"), dtype=dtype)
                _update_rows(a, z, self_sq, torch.tensor([c]), rows, nearest)
                got = nearest[rows].double()
                assert ((got - whole[rows].double()).abs() <= scale[rows]).all(), (k, d, size)
                assert nearest[dup] == 0
    finally:
        torch.set_num_threads(before)


def test_exact_duplicates_weigh_zero_not_rounding_residues() -> None:
    """Two distinct embeddings, three copies each (random floats, whose self-distance the
    formula leaves as rounding residues): pick 2 is always a copy of the other embedding, and
    with every unchosen D = 0, pick 3 is uniform over the 4 unchosen (the documented law), not
    weighted by residues (tau = 0 fails this: residues of 1e-7 to 1e-6 decide pick 3)."""
    g = torch.Generator().manual_seed(3)
    a = torch.randn(2, 9, generator=g).repeat(3, 1)
    z = torch.randn(2, 33, generator=g).repeat(3, 1)
    first = int(sq_norms(a, z).argmax())
    counts = np.zeros(6)
    gen = torch.Generator().manual_seed(0)
    for _ in range(600):
        picks = kmeans_pp(a, z, 3, generator=gen).tolist()
        assert picks[0] == first and picks[1] % 2 != first % 2
        counts[picks[2]] += 1
    # pick 3 is uniform over the 4 unchosen: each other copy of the first embedding 1/4, each
    # copy of the second 2/3 (not pick 2) x 1/4 = 1/6
    rest = [i for i in range(6) if i != first]
    expected = np.array([1 / 4 if i % 2 == first % 2 else 1 / 6 for i in rest]) * 600
    assert counts[first] == 0
    assert chisquare(counts[rest], expected).pvalue > 1e-3


def underflow_pools() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """float32 factors whose dot products or norms leave the normal range, while the embedding
    norms stay finite: the relative error bounds alone do not hold there."""
    a, z = class_pool(1500, 40, 64, 0.2, seed=1)
    g = torch.Generator().manual_seed(2)
    rows = torch.logspace(-25, 0, 1500)[torch.randperm(1500, generator=g)]
    return {
        "a~3e-22": (a * 3e-22, z),  # |a|^2 and n subnormal
        "a~1e-21,z~1e18": (a * 1e-21, z * 1e18),  # a.a_c subnormal, n normal (~1e-7)
        "a~1e-12,z~1e-11": (a * 1e-12, z * 1e-11),  # a.a_c z.z_c products subnormal
        "rows 1e-25..1": (a * rows[:, None], z),  # a mix of normal and underflowing rows
    }


UNDERFLOW = underflow_pools()


@pytest.mark.parametrize("name", sorted(UNDERFLOW))
def test_rows_that_underflow_survive(name: str) -> None:
    """Underflow (an absolute error of up to half the smallest subnormal) is outside the
    relative margin; rows it can touch must be recomputed, with nearest_i set just above or
    below the computed distance as in the boundary test above. Skipped before the guard."""
    a, z = UNDERFLOW[name]
    screen = screen_of(a, z)
    g = torch.Generator().manual_seed(11)
    num = a.shape[0]
    for c in (0, 1, 2, 100, 733, 1499):
        d_ref = rank_one_sq_distances(a, z, c)
        scale = torch.logspace(-6, -0.3, num)[torch.randperm(num, generator=g)]
        sign = torch.randint(0, 3, (num,), generator=g).to(a.dtype) - 1.0
        nearest = d_ref * (1 + sign * scale) + (sign > 0) * 1e-45
        kept = torch.zeros(num, dtype=torch.bool)
        kept[screen.survivors(c, nearest)] = True
        must_move = d_ref < nearest
        assert kept[must_move].all(), f"{name}: a row whose distance drops was skipped"
    stats: dict[str, int] = {}
    got = kmeans_pp(a, z, 150, generator=torch.Generator().manual_seed(0), stats=stats)
    ref = kmeans_pp(a, z, 150, generator=torch.Generator().manual_seed(0), screen=False)
    assert torch.equal(got, ref), name


def test_guarded_rows() -> None:
    """Normal-range rows and exactly-zero factors are guarded (screened); rows whose |a|^2, |z|^2
    or n underflow are not. Thresholds (float32, K = 4, D = 6): |a|^2 >= 16 t / u ~ 3.8e-37,
    |z|^2 >= 24 t / u ~ 5.6e-37, n >= tiny / u ~ 2.0e-31."""
    from mmsample.signals.screen import guarded_rows

    a = torch.tensor(
        [[1.0, 0, 0, 0], [0, 0, 0, 0], [1e-19, 0, 0, 0], [1e-16, 0, 0, 0], [1e-8, 0, 0, 0]]
    )
    z = torch.tensor(
        [
            [1.0, 0, 0, 0, 0, 0],
            [5, 0, 0, 0, 0, 0],
            [1e19, 0, 0, 0, 0, 0],
            [1, 0, 0, 0, 0, 0],
            [1e-8, 0, 0, 0, 0, 0],
        ]
    )
    got = guarded_rows(a, z, *factor_sq(a, z))
    # row 2: n = 1 but |a|^2 = 1e-38 < 3.8e-37; rows 3, 4: n = 1e-32 < 2e-31
    assert got.tolist() == [True, True, False, False, False]
