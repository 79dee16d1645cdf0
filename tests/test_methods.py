"""DUS, BSS and SMV plans against their formulas, computed here independently (numpy, by hand)."""

from __future__ import annotations

import copy
import math
import re

import numpy as np
import pytest
import torch
from scipy import stats as sstats

from mmsample.ledger import Ledger
from mmsample.methods import BSS, DUS, SMV

K = 4


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def fed_ledger(n: int, seed: int = 0, m: int = 2, ids: np.ndarray | None = None) -> tuple:
    """A ledger that observed random logits for `ids` (default all); returns the ledger and the
    logits (unimodal list, fused, labels) as numpy arrays."""
    rng = np.random.default_rng(seed)
    ids = np.arange(n) if ids is None else ids
    uni = [rng.normal(size=(len(ids), K)) * 2 for _ in range(m)]
    fused = rng.normal(size=(len(ids), K)) * 2
    labels = rng.integers(0, K, len(ids))
    led = Ledger(n, m, K)
    led.observe(
        torch.from_numpy(ids),
        torch.from_numpy(labels),
        [torch.from_numpy(u) for u in uni],
        torch.from_numpy(fused),
    )
    return led, uni, fused, labels


def paper_scores(uni: list, fused: np.ndarray, labels: np.ndarray, alpha: float) -> np.ndarray:
    """s = Norm(sim) - Norm(L_total), by hand (M = 2: plain cosine of the two softmaxes)."""
    pa, pv = softmax(uni[0]), softmax(uni[1])
    sim = (pa * pv).sum(1) / np.linalg.norm(pa, axis=1) / np.linalg.norm(pv, axis=1)
    rows = np.arange(len(labels))

    def ce(z: np.ndarray) -> np.ndarray:
        return -np.log(softmax(z)[rows, labels])

    loss = (1 - alpha) * ce(fused) + alpha * (ce(uni[0]) + ce(uni[1]))

    def norm(x: np.ndarray) -> np.ndarray:
        return (x - x.min()) / (x.max() - x.min())

    return norm(sim) - norm(loss)


# ------------------------------------------------------------------------------------ BSS
@pytest.mark.parametrize("epoch", [0, 3, 10, 40])
def test_bss_heuristic_keeps_exactly_the_top_ids_by_score(epoch: int) -> None:
    n = 57
    led, uni, fused, labels = fed_ledger(n)
    bss = BSS(led, lambda0=0.1, t_grow=40, alpha=0.2)
    s = paper_scores(uni, fused, labels, 0.2)
    lam = min(1.0, math.sqrt((1 - 0.01) / 40 * epoch + 0.01))
    keep = math.floor(n * lam)
    top = sorted(np.argsort(-s, kind="stable")[:keep].tolist())
    plan = bss.plan(epoch)
    order = plan.order().tolist()
    assert sorted(order) == top  # exactly the top ids, each once
    assert [len(plan.items(i)) for i in range(n)] == [int(i in top) for i in range(n)]
    assert all(plan.items(i) == (3,) for i in top)
    assert bss.stats(epoch)["pacing"] == pytest.approx(lam)


def test_bss_ranking_ties_by_id_and_is_frozen() -> None:
    n = 10
    led = Ledger(n, 2, K)
    z = torch.zeros(n, K)  # every id the same statistics: all scores tie
    led.observe(torch.arange(n), torch.zeros(n, dtype=torch.long), [z, z], z)
    bss = BSS(led, lambda0=0.5, t_grow=10)
    assert sorted(bss.plan(0).order().tolist()) == [0, 1, 2, 3, 4]  # floor(10 * 0.5) lowest ids
    # new observations do not change the frozen ranking
    led.observe(torch.arange(n), torch.arange(n) % K, [torch.randn(n, K)] * 2, torch.randn(n, K))
    assert sorted(bss.plan(1).order().tolist()) == list(range(math.floor(10 * bss.pacing(1))))


def test_bss_orders_are_seeded_random_orders() -> None:
    led, *_ = fed_ledger(40)
    a, b = BSS(led, lambda0=1.0, seed=1), BSS(led, lambda0=1.0, seed=2)
    assert a.plan(0) == BSS(led, lambda0=1.0, seed=1).plan(0)  # deterministic
    assert a.plan(0).order().tolist() != b.plan(0).order().tolist()
    assert a.plan(0).order().tolist() != a.plan(1).order().tolist()


def test_bss_reference_variant_paces_at_e_plus_one_ranked_ascending() -> None:
    n = 30
    led, uni, fused, labels = fed_ledger(n, seed=3)
    ref = BSS(led, lambda0=0.2, t_grow=5, variant="reference")
    assert ref.kept(0) == math.floor(n * math.sqrt((1 - 0.04) / 5 * 1 + 0.04))
    # authors' score (1 - Norm(sim)) + Norm(CE_a + CE_v + CE_fused), lower first
    s = paper_scores(uni, fused, labels, 0.5)  # alpha 0.5: the same ranking as the plain sum
    expected = sorted(np.argsort(-s, kind="stable")[: ref.kept(0)].tolist())
    assert sorted(ref.plan(0).order().tolist()) == expected


def test_bss_names_ids_never_scored() -> None:
    led, *_ = fed_ledger(12, ids=np.arange(10))
    with pytest.raises(ValueError, match=r"2 of the 12 ids were never scored.*\[10, 11\]"):
        BSS(led).plan(0)
    bss = BSS(led)
    bss.set_ids(np.arange(10))  # the reader yields only the scored ids
    assert len(bss.plan(0).order()) == 1


def test_bss_learned_draws_follow_softmax_p() -> None:
    n = 25
    led, uni, fused, labels = fed_ledger(n, seed=5)
    bss = BSS(led, scheduler="learned", interval=1000)  # no rescoring after epoch 0
    s = paper_scores(uni, fused, labels, 0.2)
    p = np.exp(s) / np.exp(s).sum()
    assert bss.probabilities(0) == pytest.approx(p, rel=1e-5)  # the ledger keeps float32
    counts = np.zeros(n)
    for epoch in range(80):
        order = bss.plan(epoch).order()
        assert len(order) == n  # N draws per epoch
        counts += np.bincount(order, minlength=n)
    total = counts.sum()
    assert sstats.chisquare(counts, p * total).pvalue > 1e-3
    # the test has power: a uniform p is rejected by the same draws
    assert sstats.chisquare(counts, np.full(n, total / n)).pvalue < 1e-3


def test_bss_learned_ema_by_hand() -> None:
    n = 8
    led, uni, fused, labels = fed_ledger(n, seed=1)
    bss = BSS(led, scheduler="learned", interval=2, beta=0.6)
    s0 = paper_scores(uni, fused, labels, 0.2)
    bss.set_epoch(0)
    bss.set_epoch(1)  # not a rescoring epoch
    rng = np.random.default_rng(9)
    uni2 = [rng.normal(size=(n, K)) for _ in range(2)]
    fused2, labels2 = rng.normal(size=(n, K)), rng.integers(0, K, n)
    led.observe(
        torch.arange(n),
        torch.from_numpy(labels2),
        [torch.from_numpy(u) for u in uni2],
        torch.from_numpy(fused2),
    )
    assert bss.probabilities(1) == pytest.approx(np.exp(s0) / np.exp(s0).sum())
    s1 = paper_scores(uni2, fused2, labels2, 0.2)
    s_upd = 0.4 * s0 + 0.6 * s1
    assert bss.probabilities(2) == pytest.approx(np.exp(s_upd) / np.exp(s_upd).sum(), rel=1e-6)


def test_bss_reference_learned_permutes_every_id_once() -> None:
    led, *_ = fed_ledger(30)
    plan = BSS(led, scheduler="learned", variant="reference").plan(0)
    assert sorted(plan.order().tolist()) == list(range(30))


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"lambda0": 0.0}, "lambda0"),
        ({"lambda0": 1.5}, "lambda0"),
        ({"t_grow": 0}, "t_grow"),
        ({"alpha": -0.1}, "alpha"),
        ({"interval": 0}, "interval"),
        ({"beta": 2.0}, "beta"),
        ({"scheduler": "fast"}, "scheduler"),
        ({"variant": "code"}, "variant"),
        ({"seed": -1}, "seed"),
    ],
)
def test_bss_rejects_bad_settings(kwargs: dict, name: str) -> None:
    led = Ledger(4, 2, K)
    with pytest.raises(ValueError, match=f"'{name}' parameter of BSS"):
        BSS(led, **kwargs)


# ------------------------------------------------------------------------------------ SMV
def smv_ledger(values: np.ndarray, observed: np.ndarray | None = None) -> Ledger:
    n, width = values.shape
    m = width.bit_length() - 1
    led = Ledger(n, m, K)
    ids = np.arange(n) if observed is None else observed
    z = torch.zeros(len(ids), K)
    led.observe(
        torch.from_numpy(ids),
        torch.zeros(len(ids), dtype=torch.long),
        [z] * m,
        z,
        values=torch.from_numpy(values[ids]),
    )
    return led


def copies_by_hand(phi: float) -> int:
    if 0.4 < phi < 1:
        return 1
    if -0.1 < phi <= 0.4:
        return 2
    if phi <= -0.1:
        return 3
    return 0


def test_smv_sample_level_adds_exactly_the_copies() -> None:
    rng = np.random.default_rng(0)
    n = 40
    correct = rng.random((n, 4)) < 0.5
    sizes = np.array([0, 1, 1, 2])
    values = (correct * sizes).astype(np.float64)
    led = smv_ledger(values, observed=np.arange(n - 3))  # the last 3 ids never valuated
    smv = SMV(led, warmup=2)
    for e in (0, 1):
        assert all(smv.plan(e).items(i) == (3,) for i in range(n))
    plan = smv.plan(2)
    for i in range(n):
        v = values[i]
        phi0 = 0.5 * (v[1] - v[0]) + 0.5 * (v[3] - v[2])  # M = 2 Shapley by hand
        phi1 = 0.5 * (v[2] - v[0]) + 0.5 * (v[3] - v[1])
        c = (0, 0) if i >= n - 3 else (copies_by_hand(phi0), copies_by_hand(phi1))
        assert plan.items(i) == (3,) + (1,) * c[0] + (2,) * c[1], i
    assert plan.order() is None


def test_smv_sample_level_no_copies_for_a_modality_never_observed() -> None:
    values = np.zeros((2, 4))  # every subset wrong: phi = (0, 0), two copies of each modality
    led = smv_ledger(values)
    z = torch.zeros(1, K)
    # id 1's modality 1 is never observed on its own: a fresh ledger where it lacks modality 1
    led2 = Ledger(2, 2, K)
    led2.observe(torch.tensor([0]), torch.tensor([0]), [z, z], z, values=torch.tensor(values[:1]))
    led2.observe(
        torch.tensor([1]), torch.tensor([0]), [z, z], present=torch.tensor([[True, False]])
    )
    assert SMV(led, warmup=0).plan(0).items(1) == (3, 1, 1, 2, 2)
    assert SMV(led2, warmup=0).plan(0).items(1) == (3,)  # never valuated (no full row)
    assert SMV(led2, warmup=0).plan(0).items(0) == (3, 1, 1, 2, 2)


def test_smv_modality_level_paper_adds_weak_items_with_probability_p() -> None:
    n = 4000
    # modality 0 alone always right, modality 1 alone never: Phi = (1.5, 0.5) on every id
    values = np.tile(np.array([0.0, 1.0, 0.0, 2.0]), (n, 1))
    led = smv_ledger(values)
    smv = SMV(led, level="modality", warmup=0, seed=3)
    plan = smv.plan(0)
    p = 1.0 / 1.0  # d = 1.5 - 0.5 = 1, Norm by the largest gap M/2 = 1: p = 1
    extra = sum(len(plan.items(i)) - 1 for i in range(n))
    assert extra == n * p
    # a weaker gap: modality 0 alone right on a third of the ids
    values = np.zeros((n, 4))
    values[:, 3] = 2.0
    values[: n // 3, 1] = 1.0
    led = smv_ledger(values)
    smv = SMV(led, level="modality", warmup=0, seed=4, fraction=1.0)
    plan = smv.plan(0)
    phi0 = np.where(np.arange(n) < n // 3, 1.5, 1.0)
    gap = (phi0 - (2 - phi0)).mean()  # mean over Z (all ids) of Phi_0 - Phi_1
    extras = np.array([len(plan.items(i)) - 1 for i in range(n)])
    assert set(np.unique(extras)) <= {0, 1}
    assert all(plan.items(i)[1:] in ((), (2,)) for i in range(0, n, 97))
    assert sstats.binomtest(int(extras.sum()), n, gap).pvalue > 1e-3
    assert smv.stats(0)["probability"] == pytest.approx(gap)


def test_smv_modality_level_reference_draws_int_p_n_with_replacement() -> None:
    n = 300
    values = np.zeros((n, 4))
    values[:, 3] = 2.0
    values[: n // 2, 1] = 1.0
    led = smv_ledger(values)
    smv = SMV(led, level="modality", warmup=0, variant="reference", fraction=1.0)
    plan = smv.plan(0)
    d = 0.5  # mean Phi_0 - Phi_1 = (1 + 0) / 2 ... worked: Phi_0 = 1.25, Phi_1 = 0.75
    p = d * (2 / 3)  # the authors' Norm: largest gap 1.5
    extra = sum(len(plan.items(i)) - 1 for i in range(n))
    assert extra == int(p * n)
    assert max(len(plan.items(i)) for i in range(n)) >= 2


def test_smv_state_round_trip_and_mismatch() -> None:
    values = np.tile(np.array([0.0, 1.0, 0.0, 2.0]), (20, 1))
    led = smv_ledger(values)
    smv = SMV(led, warmup=1)
    smv.set_epoch(1)
    state = smv.state_dict()
    saved = copy.deepcopy(state)
    # the ledger changes after the snapshot; the restored method keeps the epoch's plan
    led.observe(
        torch.arange(20),
        torch.zeros(20, dtype=torch.long),
        [torch.zeros(20, K)] * 2,
        torch.zeros(20, K),
        values=torch.zeros(20, 4, dtype=torch.float64),
    )
    fresh = SMV(led, warmup=1)
    fresh.load_state_dict(state)
    assert fresh.plan(1) == smv.plan(1)
    assert repr(state) == repr(saved)
    assert SMV(led, warmup=1).plan(1) != smv.plan(1)  # a new snapshot would differ
    with pytest.raises(ValueError, match="seed: saved 0, now 5"):
        SMV(led, warmup=1, seed=5).load_state_dict(state)
    with pytest.raises(ValueError, match="class: saved 'SMV', now 'BSS'"):
        BSS(led).load_state_dict(state)
    with pytest.raises(ValueError, match="samples: saved 20, now 21"):
        SMV(Ledger(21, 2, K), warmup=1).load_state_dict(state)


# ------------------------------------------------------------------------------------ DUS
def dus_ledger(p_audio: float, p_video: float, n: int = 8) -> Ledger:
    led = Ledger(n, 2, 2, names=["audio", "video"])
    za = torch.tensor([[math.log(p_audio), math.log(1 - p_audio)]] * n)
    zv = torch.tensor([[math.log(p_video), math.log(1 - p_video)]] * n)
    led.observe(torch.arange(n), torch.zeros(n, dtype=torch.long), [za, zv])
    return led


def test_dus_heuristic_sizes_by_hand() -> None:
    led = dus_ledger(0.9, 0.6)  # audio dominates
    dus = DUS(led, batch_size=64, epochs=4, beta=0.5)
    # round(0.5 * 2**(T/4) * 64): T=1 38.05 -> 38, T=2 45.25 -> 45, T=3 53.82 -> 54, T=4 64
    got = [dus.batch_sizes(e) for e in range(4)]
    assert [g["audio"] for g in got] == [38, 45, 54, 64]
    assert all(g["video"] == 64 for g in got)
    assert dus.stats(0)["batch_size/audio"] == 38.0
    assert dus.rows_per_batch(0) == 64


def test_dus_before_observation_and_ties() -> None:
    led = Ledger(8, 2, 2)
    assert DUS(led, batch_size=10, epochs=3).batch_sizes(0) == {"m0": 10, "m1": 10}
    assert DUS(led, batch_size=10, epochs=3, policy="rl").batch_sizes(0) == {"m0": 5, "m1": 5}
    tie = dus_ledger(0.7, 0.7)
    sizes = DUS(tie, batch_size=10, epochs=2).batch_sizes(0)
    assert sizes == {"audio": round(0.5 * math.sqrt(2) * 10), "video": 10}  # lowest index


def test_dus_rounding_is_pythons_round() -> None:
    led = dus_ledger(0.9, 0.6)
    # beta * exp(alpha) * N_B with E = 1: 1 * N_B; beta = 0.25, E = 2: 0.5 * N_B -> 2.5 for 5
    dus = DUS(led, batch_size=5, epochs=2, beta=0.25)
    assert 0.25 * math.exp(math.log(4) / 2) * 5 == 2.5
    assert dus.batch_sizes(0)["audio"] == round(2.5) == 2  # half to even


def test_dus_rl_reward_update_and_state() -> None:
    led = dus_ledger(0.9, 0.6)
    dus = DUS(led, batch_size=16, epochs=3, policy="rl", seed=2)
    first = dus.batch_sizes(0)
    a = softmax(np.array(dus.state_dict()["saved"]["_last"]["logits"]))  # the epoch-0 action
    assert first == {"audio": round(16 * a[0]), "video": round(16 * a[1])}
    logits = np.array(dus.state_dict()["saved"]["_last"]["logits"])
    second = dus.batch_sizes(1)
    # reward of the epoch-0 action: (1/M) * log(share of video), video being the weak modality
    reward = math.log(a[1]) / 2
    assert dus.stats(1)["reward"] == pytest.approx(reward)
    # one REINFORCE step by hand: loss = -r * sum_j log N(l_j; W s + b, 0.5^2), W = b = 0 at
    # the start, s = S / sum S = (7.2, 4.8) / 12 (p 0.9 and 0.6 at the label on 8 rows);
    # d loss / d b_j = -r * l_j / 0.25, d loss / d W_jk = that * s_k; Adam's first step moves
    # each parameter by -lr * g / (|g| + eps)
    s = np.array([0.6, 0.4])
    g_b = -reward * logits / 0.25
    g_w = g_b[:, None] * s[None, :]
    step = {"bias": g_b, "weight": g_w}
    for name, p in dus._net.named_parameters():
        g = step[name]
        expected = -1e-4 * g / (np.abs(g) + 1e-8)
        assert p.detach().numpy() == pytest.approx(expected, rel=1e-6), name
    state = dus.state_dict()
    fresh = DUS(led, batch_size=16, epochs=3, policy="rl", seed=2)
    fresh.load_state_dict(state)
    assert fresh.batch_sizes(1) == second
    assert fresh.batch_sizes(2) == dus.batch_sizes(2)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"batch_size": 0}, "batch_size"),
        ({"epochs": 0}, "epochs"),
        ({"beta": 0.0}, "beta"),
        ({"beta": 1.5}, "beta"),
        ({"policy": "ppo"}, "policy"),
    ],
)
def test_dus_rejects_bad_settings(kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=f"'{name}' parameter of DUS"):
        DUS(Ledger(4, 2, K), **kwargs)


def test_methods_refuse_a_non_ledger() -> None:
    with pytest.raises(ValueError, match="'ledger' parameter of SMV"):
        SMV(object())  # type: ignore[arg-type]


def test_bss_ids_observed_without_fused_logits_are_never_scored() -> None:
    n = 6
    led = Ledger(n, 2, K)
    z = torch.zeros(n, K)
    led.observe(torch.arange(4), torch.zeros(4, dtype=torch.long), [z[:4], z[:4]], z[:4])
    led.observe(torch.tensor([4, 5]), torch.zeros(2, dtype=torch.long), [z[:2], z[:2]])
    with pytest.raises(ValueError, match=r"2 of the 6 ids were never scored.*\[4, 5\]"):
        BSS(led).plan(0)


def test_methods_copy_the_ledger_table_only_when_they_read_it() -> None:
    """`set_epoch` reads the table (a copy of every column) only where the plan needs it: DUS
    never (it reads S), BSS heuristic once (the frozen ranking), BSS learned at each rescoring,
    SMV after the warm-up."""
    led, *_ = fed_ledger(12)
    calls = []
    snapshot = led.snapshot

    def counting() -> dict:
        calls.append(1)
        return snapshot()

    led.snapshot = counting
    cases = [
        (DUS(led, batch_size=4, epochs=3), 4, 0),
        (BSS(led, lambda0=0.5), 4, 1),
        (BSS(led, scheduler="learned", interval=2), 4, 2),  # epochs 0 and 2
        (SMV(led, warmup=2), 4, 2),  # epochs 2 and 3
    ]
    for method, epochs, copies in cases:
        calls.clear()
        for epoch in range(epochs):
            method.plan(epoch)
        assert len(calls) == copies, type(method).__name__


def test_registries_name_the_alternatives() -> None:
    """BSS's variants are the balance scores of mmsample.signals (one list of names), and every
    'must be one of' message comes from a registry."""
    from mmsample.methods import bss, dus, smv
    from mmsample.signals import BALANCE_SCORES

    assert set(bss.VARIANTS) == set(BALANCE_SCORES)
    for name, rules in bss.VARIANTS.items():
        assert rules.score is BALANCE_SCORES[name]
    led = Ledger(4, 2, K)
    for owner, param, registry in [
        (BSS, "variant", bss.VARIANTS),
        (BSS, "scheduler", bss.SCHEDULERS),
        (DUS, "policy", dus.POLICIES),
        (SMV, "level", smv.LEVELS),
        (SMV, "variant", smv.VARIANTS),
    ]:
        with pytest.raises(ValueError, match=re.escape(f"must be one of {sorted(registry)}")):
            owner(led, **{param: "other"})
