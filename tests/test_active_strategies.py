"""Query strategies on Pools built by hand: BMMAL vs BADGE (the paper's guidelines as properties
over seeds), hand-worked picks of the simple strategies, and the rules every strategy keeps."""

from __future__ import annotations

import math

import pytest
import torch

from mmsample.active import (
    BADGE,
    BALD,
    BMMAL,
    STRATEGIES,
    CoreSet,
    Entropy,
    Margin,
    Pool,
    Random,
    make_strategy,
    query,
    select_split,
)
from mmsample.signals import gradient_embedding_factors

STRONG, WEAK, BALANCED = 0, 1, 2


def subset_rows(p: torch.Tensor, shares: torch.Tensor) -> torch.Tensor:
    """`[N, 2**M, K]` subset softmaxes whose values at the full argmax are
    `V(C) = 1/K + sum_{j in C} shares_j * (V(all) - 1/K)`: additive, so the Shapley value of
    modality j is `shares_j * (V(all) - 1/K)` and the contribution Phi = shares (rows sum to 1)."""
    n, k = p.shape
    m = shares.shape[1]
    y = p.argmax(1)
    top = p.gather(1, y[:, None]).squeeze(1)
    rows = []
    for c in range((1 << m) - 1):
        inside = sum((shares[:, j] for j in range(m) if c >> j & 1), torch.zeros(n, dtype=p.dtype))
        v = 1.0 / k + inside * (top - 1.0 / k)
        row = ((1 - v) / (k - 1))[:, None].expand(n, k).clone()
        rows.append(row.scatter(1, y[:, None], v[:, None]))
    return torch.stack([*rows, p], 1)


def class_pool(seed: int, shares: torch.Tensor, k: int = 10, d: int = 16) -> Pool:
    """Class-structured features for M = shares.shape[1] modalities and a fused softmax with
    mean max probability ~0.5, with the given contributions."""
    n, m = shares.shape
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(k, (n,), generator=g)
    centers = torch.randn(k, m * d, generator=g, dtype=torch.float64) * 2
    x = centers[y] + torch.randn(n, m * d, generator=g, dtype=torch.float64)
    logits = torch.randn(n, k, generator=g, dtype=torch.float64)
    p = torch.softmax(logits + 2.0 * torch.nn.functional.one_hot(y, k), 1)
    feats = [x[:, j * d : (j + 1) * d] for j in range(m)]
    return Pool(feats, p, subset_rows(p, shares), ids=torch.arange(n) * 3 + 1000)


def dominated_pool(seed: int, n: int = 600) -> tuple[Pool, torch.Tensor]:
    """60% of the samples dominated by modality 0 (Phi = 0.9 / 0.1, dominance 0.8), 20% by
    modality 1, the weaker one over the pool (Phi = 0.35 / 0.65, dominance 0.3), 20% balanced:
    the paper's situation (the subset the strong modality dominates has the larger dominance)."""
    g = torch.Generator().manual_seed(1000 + seed)
    group = torch.zeros(n, dtype=torch.long)
    group[int(0.6 * n) : int(0.8 * n)] = WEAK
    group[int(0.8 * n) :] = BALANCED
    group = group[torch.randperm(n, generator=g)]
    s0 = torch.tensor([0.9, 0.35, 0.5], dtype=torch.float64)[group]
    return class_pool(seed, torch.stack([s0, 1 - s0], 1)), group


def group_of(pool: Pool, group: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    return group[pool.positions(ids)] if len(ids) else group[:0]


@pytest.mark.parametrize("m", [2, 3])
def test_bmmal_equals_badge_when_contributions_are_equal(m: int) -> None:
    for seed in range(3):
        pool = class_pool(seed, torch.full((240, m), 1.0 / m, dtype=torch.float64))
        phi = pool.contribution()
        assert torch.allclose(phi, torch.full_like(phi, 1.0 / m))
        picks = [
            s.select(pool, 40, generator=torch.Generator().manual_seed(seed))
            for s in (BADGE(), BMMAL())
        ]
        assert torch.equal(picks[0], picks[1])
    # the control: unequal contributions change BMMAL's picks, and BADGE ignores them
    shares = torch.rand(240, m, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    pool = class_pool(0, shares / shares.sum(1, keepdim=True))
    badge = BADGE().select(pool, 40, generator=torch.Generator().manual_seed(0))
    bmmal = BMMAL().select(pool, 40, generator=torch.Generator().manual_seed(0))
    assert not torch.equal(badge, bmmal)


def test_bmmal_weights_scale_the_embedding_norm_by_the_dominance() -> None:
    """Guideline 1 on the acquisition score k-means++ starts from (the embedding norm): with
    equal features per modality, BMMAL's norm is BADGE's times sqrt(1 + (1 - rho)^2) / sqrt(2)."""
    pool, group = dominated_pool(0, n=60)
    ones = torch.ones(60, 16, dtype=torch.float64)
    same = Pool([ones, ones], pool.probs, pool.subset_probs)
    a, z = gradient_embedding_factors(same.probs, same.features)
    _, w = same.contribution_and_weights()
    a2, z2 = gradient_embedding_factors(same.probs, same.features, w)
    rho = torch.tensor([0.8, 0.3, 0.0], dtype=torch.float64)[group]
    ratio = z2.norm(dim=1) / z.norm(dim=1)
    assert torch.allclose(ratio, torch.sqrt(1 + (1 - rho) ** 2) / math.sqrt(2))
    assert torch.equal(a, a2)


def test_bmmal_follows_guidelines_1_and_2_over_seeds() -> None:
    """One modality (0) dominates the pool. For every seed: BMMAL's picks have a lower mean
    dominance degree than BADGE's (Guideline 1), and the picks' ratio of weak-dominated to
    strong-dominated samples rises (Guideline 2); over the seeds the weak-dominated share rises."""
    weak_share = {"badge": 0.0, "bmmal": 0.0}
    seeds = range(8)
    for seed in seeds:
        pool, group = dominated_pool(seed, n=1200)
        assert pool.contribution()[:, 0].mean() > pool.contribution()[:, 1].mean()
        found = {}
        for strategy in (BADGE(), BMMAL()):
            ids = strategy.select(pool, 300, generator=torch.Generator().manual_seed(seed))
            g = group_of(pool, group, ids)
            weak, strong = (g == WEAK).double().mean(), (g == STRONG).double().mean()
            found[strategy.name] = (pool.dominance(pool.positions(ids)).mean(), weak / strong)
            weak_share[strategy.name] += float(weak) / len(seeds)
        assert found["bmmal"][0] < found["badge"][0], seed
        assert found["bmmal"][1] > found["badge"][1], seed
    assert weak_share["bmmal"] > weak_share["badge"]


def all_strategies() -> list[str]:
    return sorted(STRATEGIES)


def mc_pool(seed: int, n: int = 90) -> Pool:
    pool, _ = dominated_pool(seed, n=n)
    g = torch.Generator().manual_seed(seed)
    mc = torch.softmax(torch.randn(n, 5, pool.num_classes, generator=g, dtype=torch.float64), -1)
    return Pool(pool.features, pool.probs, pool.subset_probs, pool.ids, mc_probs=mc)


@pytest.mark.parametrize("name", all_strategies())
def test_no_strategy_picks_a_labeled_id_or_one_twice(name: str) -> None:
    for seed in range(3):
        pool = mc_pool(seed)
        labeled = pool.ids[torch.randperm(90, generator=torch.Generator().manual_seed(seed))[:30]]
        labeled = torch.cat([labeled, torch.tensor([7, 99999])])  # ids outside the pool: ignored
        for budget in (0, 1, 17, 60):
            ids = make_strategy(name).select(
                pool, budget, labeled=labeled, generator=torch.Generator().manual_seed(seed)
            )
            assert ids.dtype == torch.long and len(ids) == budget
            assert len(set(ids.tolist())) == budget
            assert not set(ids.tolist()) & set(labeled.tolist())
            assert set(ids.tolist()) <= set(pool.ids.tolist())
        with pytest.raises(ValueError, match=r"budget.* is 61 but only 60 of the pool's 90"):
            make_strategy(name).select(pool, 61, labeled=labeled)


def test_split_picks_exactly_the_budget() -> None:
    pool = mc_pool(1, n=101)
    labeled = pool.ids[:10]
    for name in ("badge", "bmmal", "entropy", "random"):
        for split in (1, 2, 3, 8):
            for budget in (0, 1, 7, 23, 91):
                gen = torch.Generator().manual_seed(split)
                ids = select_split(
                    make_strategy(name), pool, budget, split, labeled=labeled, generator=gen
                )
                assert len(ids) == budget and len(set(ids.tolist())) == budget
                assert not set(ids.tolist()) & set(labeled.tolist())
    with pytest.raises(ValueError, match="'budget' parameter of query must be an int in"):
        select_split(BADGE(), pool, 92, 4, labeled=labeled)
    with pytest.raises(ValueError, match="'split' parameter of query must be an int >= 1"):
        query(pool, None, "badge", 5, split=0)
    # split = 1 is the exact path: query on a Pool equals select with the same seed
    exact = query(pool, None, "bmmal", 20, seed=3)
    assert torch.equal(exact, BMMAL().select(pool, 20, generator=torch.Generator().manual_seed(3)))


def test_entropy_margin_bald_coreset_by_hand() -> None:
    third = 1 / 3
    probs = torch.tensor(
        [[1.0, 0, 0], [0.5, 0.5, 0], [third, third, third], [0.8, 0.1, 0.1]], dtype=torch.float64
    )
    feats = [torch.tensor([[0.0], [1.0], [2.0], [10.0]], dtype=torch.float64)] * 2
    pool = Pool(feats, probs, ids=[10, 11, 12, 13])
    # entropies 0, ln 2, ln 3, 0.639: order 12, 11, 13, 10
    assert Entropy().select(pool, 4).tolist() == [12, 11, 13, 10]
    # margins 1, 0, 0, 0.7: the tie goes to the lower position
    assert Margin().select(pool, 4).tolist() == [11, 12, 13, 10]
    assert Margin().select(pool, 2, labeled=[11]).tolist() == [12, 13]
    # BALD: sample 0's draws agree (MI 0), sample 1's disagree fully (MI ln 2), sample 2 half
    mc = torch.tensor(
        [
            [[0.5, 0.5, 0], [0.5, 0.5, 0]],
            [[1.0, 0, 0], [0, 1.0, 0]],
            [[1.0, 0, 0], [0.5, 0.5, 0]],
            [[0.2, 0.4, 0.4], [0.2, 0.4, 0.4]],
        ],
        dtype=torch.float64,
    )
    bald_pool = Pool(feats, probs, ids=[10, 11, 12, 13], mc_probs=mc)
    assert BALD().select(bald_pool, 2).tolist() == [11, 12]
    with pytest.raises(ValueError, match="BALD needs MC-dropout softmaxes"):
        BALD().select(pool, 1)
    # CoreSet on a line (both modalities 0, 1, 2, 10, 11 -> distances scale by sqrt 2)
    line = torch.tensor([[0.0], [1.0], [2.0], [10.0], [11.0]], dtype=torch.float64)
    flat = Pool([line, line], torch.full((5, 3), third, dtype=torch.float64))
    # from labeled {0}: farthest is 11 (id 4); then from {0, 11}: 2 (distance 2) beats 1 and 10
    assert CoreSet().select(flat, 2, labeled=[0]).tolist() == [4, 2]
    assert CoreSet(chunk=1).select(flat, 3, labeled=[0, 1]).tolist() == [4, 2, 3]


def test_coreset_chunks_do_not_change_the_picks() -> None:
    pool = mc_pool(2, n=200)
    labeled = pool.ids[::7]
    big = CoreSet().select(pool, 30, labeled=labeled)
    small = CoreSet(chunk=5).select(pool, 30, labeled=labeled)
    assert torch.equal(big, small)
    x = pool.fused_features()
    pos = pool.positions(big[:1])
    lab = pool.positions(labeled)
    unl = pool.unlabeled(labeled)
    nearest = torch.cdist(x[unl], x[lab]).amin(1)
    assert int(unl[nearest.argmax()]) == int(pos[0])  # the first pick: farthest from labeled


def test_random_is_seeded_and_bad_arguments_are_named() -> None:
    pool = mc_pool(0)
    one = Random().select(pool, 20, generator=torch.Generator().manual_seed(5))
    two = Random().select(pool, 20, generator=torch.Generator().manual_seed(5))
    assert torch.equal(one, two)
    with pytest.raises(ValueError, match=r"'strategy' parameter of query must be one of \['badge'"):
        make_strategy("kcenter")
    with pytest.raises(
        ValueError, match=r"'budget' argument of Entropy\.select must be an int >= 0"
    ):
        Entropy().select(pool, -1)
    with pytest.raises(ValueError, match="'ids' parameter of Pool must hold distinct ids"):
        Pool(pool.features, pool.probs, ids=[0] * 90)
    with pytest.raises(
        ValueError, match=r"features\[1\] of Pool must be a floating \[N, D_j\] with N = 90"
    ):
        Pool([pool.features[0], pool.features[1][:5]], pool.probs)
    with pytest.raises(ValueError, match="This Pool has no subset_probs"):
        BMMAL().select(Pool(pool.features, pool.probs), 3)
    mixed = Pool([f.float() for f in pool.features], pool.probs)  # stored in probs' dtype
    assert all(f.dtype == torch.float64 for f in mixed.features)
    assert len(BADGE().select(mixed, 5)) == 5
    with pytest.raises(ValueError, match="'chunk' parameter of CoreSet"):
        CoreSet(chunk=0)


@pytest.mark.parametrize("cls", [BADGE, BMMAL])
def test_screen_changes_no_pick_and_reports_its_work(cls: type[BADGE]) -> None:
    """The exact screening of k-means++ updates (default on CPU) picks what the unscreened path
    picks, labeled ids excluded; `stats` counts what it skipped; bad `screen` values are named."""
    shares = torch.rand(900, 2, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    pool = class_pool(3, shares / shares.sum(1, keepdim=True), k=30, d=24)
    labeled = pool.ids[::9]
    screened = cls()
    got = screened.select(pool, 150, labeled=labeled, generator=torch.Generator().manual_seed(1))
    plain = cls(screen=False)
    ref = plain.select(pool, 150, labeled=labeled, generator=torch.Generator().manual_seed(1))
    assert torch.equal(got, ref)
    assert screened.stats["screened_picks"] + screened.stats["full_passes"] == 149
    assert screened.stats["screened_picks"] > 0
    assert plain.stats == {
        "screened_picks": 0,
        "full_passes": 149,
        "recomputed_rows": 0,
        "screen_misses": 0,
    }
    assert repr(plain) == f"{cls.__name__}(screen=False)" and repr(screened) == f"{cls.__name__}()"
    with pytest.raises(ValueError, match=f"'screen' parameter of {cls.__name__}"):
        cls(screen="on")  # type: ignore[arg-type]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a generator on another device")
@pytest.mark.parametrize("cls", [BADGE, BMMAL])
def test_a_generator_on_another_device_is_refused_not_ignored(cls: type[BADGE]) -> None:
    """A CUDA generator for a CPU pool was dropped silently (the draws then came from the global
    RNG, so the user's seed did not fix the picks)."""
    pool = class_pool(0, torch.full((60, 2), 0.5, dtype=torch.float64))
    gen = torch.Generator(device="cuda").manual_seed(0)
    with pytest.raises(ValueError, match=r"'generator' argument of .*must be on the pool's device"):
        cls().select(pool, 5, generator=gen)
    cpu = [cls().select(pool, 5, generator=torch.Generator().manual_seed(0)) for _ in range(2)]
    assert cpu[0].tolist() == cpu[1].tolist()


def test_pool_nbytes_counts_every_tensor_it_holds() -> None:
    """5 samples, D = 3 + 2, K = 4, M = 2: float32 features 25, probs 20, subset 80 values
    (4 bytes each), int64 ids and labels 5 each (8 bytes each): 500 + 80 bytes."""
    g = torch.Generator().manual_seed(0)
    p = torch.softmax(torch.randn(5, 4, generator=g), 1)
    feats = [torch.randn(5, 3, generator=g), torch.randn(5, 2, generator=g)]
    sub = torch.softmax(torch.randn(5, 4, 4, generator=g), -1)
    assert Pool(feats, p, sub).nbytes == 4 * 125 + 8 * 5
    assert Pool(feats, p, sub, labels=torch.arange(5) % 4).nbytes == 4 * 125 + 8 * 10


def test_split_coreset_measures_from_the_labeled_samples() -> None:
    """k-center greedy starts from the labeled samples; with split=S each part was a Pool
    without them, so CoreSet's first pick in a part was a random one. Here the labeled samples
    and 10 unlabeled ones sit at the origin, 10 more far away: each part's one pick must be far
    (a part without a far sample has odds 1 / C(20, 10) ~ 5e-6)."""
    g = torch.Generator().manual_seed(0)
    near = torch.randn(15, 4, generator=g, dtype=torch.float64) * 0.01  # 5 labeled + 10
    far = 100.0 + torch.randn(10, 4, generator=g, dtype=torch.float64)
    x = torch.cat([near, far])
    p = torch.full((25, 3), 1 / 3, dtype=torch.float64)
    pool = Pool([x[:, :2], x[:, 2:]], p, ids=torch.arange(25) + 100)
    labeled = list(range(100, 105))
    for seed in range(5):
        gen = torch.Generator().manual_seed(seed)
        ids = select_split(CoreSet(), pool, 2, 2, labeled=labeled, generator=gen)
        assert all(i >= 115 for i in ids.tolist()), (seed, ids.tolist())
    # for every strategy the labeled rows beside each part are never picked
    for name in ("random", "entropy", "badge"):
        a = select_split(make_strategy(name), pool, 6, 3, labeled=labeled,
                         generator=torch.Generator().manual_seed(1))  # fmt: skip
        assert not set(a.tolist()) & set(labeled) and len(set(a.tolist())) == 6
