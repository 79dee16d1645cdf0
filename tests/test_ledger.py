"""Ledger: per-sample statistics by global id, checked against values worked by hand."""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mmsample.ledger import Ledger, mean_pairwise_cosine, per_sample_statistics

NAN = float("nan")


def logits_of(*probs: list[float]) -> torch.Tensor:
    """Logits whose softmax is exactly the given probability rows (log p plus a row shift)."""
    p = torch.tensor(probs, dtype=torch.float64)
    return (p.log() + 3.0).float()


def hand_batch() -> dict[str, Any]:
    """Two samples, M=2, K=3, with probabilities chosen so everything is known by hand."""
    return {
        "ids": torch.tensor([2, 4]),
        "labels": torch.tensor([0, 2]),
        "unimodal_logits": [
            logits_of([0.5, 0.25, 0.25], [0.6, 0.2, 0.2]),
            logits_of([0.25, 0.5, 0.25], [0.2, 0.2, 0.6]),
        ],
        "fused_logits": logits_of([0.7, 0.2, 0.1], [0.3, 0.5, 0.2]),
    }


def test_observe_stores_hand_computed_statistics() -> None:
    led = Ledger(5, 2, 3, names=["audio", "video"])
    led.observe(**hand_batch())
    # sample 2, label 0: audio p=.5, video p=.25; cos = (.125+.125+.0625)/.375 = 5/6
    # sample 4, label 2: audio p=.2, video p=.6; cos = (.12+.04+.12)/.44 = 7/11
    tp = torch.tensor([[0.5, 0.25], [0.2, 0.6]])
    torch.testing.assert_close(led.true_prob[[2, 4]], tp)
    torch.testing.assert_close(led.unimodal_loss[[2, 4]], -tp.log())
    torch.testing.assert_close(led.similarity[[2, 4]], torch.tensor([5 / 6, 7 / 11]))
    torch.testing.assert_close(led.fused_true_prob[[2, 4]], torch.tensor([0.7, 0.2]))
    torch.testing.assert_close(
        led.fused_loss[[2, 4]], torch.tensor([-math.log(0.7), -math.log(0.2)])
    )
    assert led.correct[[2, 4]].tolist() == [[True, False], [False, True]]
    assert led.fused_correct[[2, 4]].tolist() == [True, False]
    assert led.labels.tolist() == [-1, -1, 0, -1, 2]
    assert led.last_seen.tolist() == [-1, -1, 0, -1, 0]
    assert led.seen_count.tolist() == [0, 0, 1, 0, 1]
    # never observed: NaN statistics, False correctness
    assert torch.isnan(led.true_prob[[0, 1, 3]]).all()
    assert torch.isnan(led.fused_loss[[0, 1, 3]]).all()
    assert not led.correct[[0, 1, 3]].any()
    assert torch.isnan(led.values).all()


def test_confidently_wrong_logits_keep_an_exact_loss() -> None:
    led = Ledger(2, 2, 3)
    # label 0 sits 200 (and 100) below the max: p = e^-200 underflows float32 to 0, e^-100 is a
    # subnormal with a few significant bits; CE = 200 + log(1 + 2 e^-200) = 200 (and 100)
    u = torch.tensor([[0.0, 200.0, 0.0]])
    led.observe(torch.tensor([1]), torch.tensor([0]), [u, u * 0.5])
    torch.testing.assert_close(led.unimodal_loss[1], torch.tensor([200.0, 100.0]))
    assert led.true_prob[1, 0] == 0.0 and abs(led.true_prob[1, 1].item() - math.exp(-100)) < 3e-45
    assert not led.correct[1].any()


def test_mean_pairwise_cosine_by_hand() -> None:
    x = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], [[2.0, 0.0], [3.0, 0.0], [1.0, 0.0]]])
    # pairs: (0,1) -> 0, (0,2) -> 1/sqrt2, (1,2) -> 1/sqrt2; second row: all parallel -> 1
    torch.testing.assert_close(mean_pairwise_cosine(x), torch.tensor([math.sqrt(2) / 3, 1.0]))
    torch.testing.assert_close(mean_pairwise_cosine(x[:, :2]), torch.tensor([0.0, 1.0]))


def test_three_modalities_similarity_and_values() -> None:
    led = Ledger(3, 3, 3)
    rows = [[0.5, 0.25, 0.25]], [[0.25, 0.5, 0.25]], [[0.25, 0.25, 0.5]]
    values = torch.arange(8, dtype=torch.float32).view(1, 8) / 10
    led.observe(torch.tensor([1]), torch.tensor([1]), [logits_of(*r) for r in rows], values=values)
    # every pair has cosine 0.3125 / 0.375 = 5/6
    torch.testing.assert_close(led.similarity[1], torch.tensor(5 / 6))
    torch.testing.assert_close(led.true_prob[1], torch.tensor([0.25, 0.5, 0.25]))
    torch.testing.assert_close(led.values[1], values[0])
    snap = led.snapshot()
    assert snap["seen"].tolist() == [False, True, False]
    assert snap["values_seen"].tolist() == [False, True, False]
    assert not snap["fused_seen"].any() and torch.isnan(snap["fused_true_prob"]).all()


def reference(z: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """float64 numpy: p(label), CE, first-argmax == label, for logits [B, R, K]."""
    z = z.astype(np.float64)
    e = np.exp(z - z.max(-1, keepdims=True))
    p = e / e.sum(-1, keepdims=True)
    py = np.take_along_axis(p, y[:, None, None].repeat(z.shape[1], 1), -1)[..., 0]
    lse = np.log(np.exp(z - z.max(-1, keepdims=True)).sum(-1)) + z.max(-1)
    ce = lse - np.take_along_axis(z, y[:, None, None].repeat(z.shape[1], 1), -1)[..., 0]
    return py, ce, z.argmax(-1) == y[:, None]


@settings(max_examples=40, deadline=None)
@given(
    b=st.integers(1, 6),
    k=st.integers(2, 5),
    m=st.integers(2, 3),
    seed=st.integers(0, 2**31 - 1),
    integer=st.booleans(),
)
def test_statistics_match_float64_reference(
    b: int, k: int, m: int, seed: int, integer: bool
) -> None:
    rng = np.random.default_rng(seed)
    # integer-valued logits from a small range make ties at the maximum common
    z = rng.integers(-2, 3, (b, m + 1, k)) if integer else rng.normal(0, 4, (b, m + 1, k))
    y = rng.integers(0, k, b)
    zt = torch.tensor(z, dtype=torch.float32)
    yt = torch.tensor(y)
    out = per_sample_statistics(list(zt[:, :m].unbind(1)), yt, zt[:, m])
    py, ce, ok = reference(z.astype(np.float32), y)
    np.testing.assert_allclose(out["true_prob"].numpy(), py[:, :m], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["unimodal_loss"].numpy(), ce[:, :m], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out["fused_true_prob"].numpy(), py[:, m], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(out["correct"].numpy(), ok[:, :m])
    np.testing.assert_array_equal(out["fused_correct"].numpy(), ok[:, m])
    p = np.exp(z[:, :m] - z[:, :m].max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    pairs = [(i, j) for i in range(m) for j in range(i + 1, m)]
    cos = [
        (p[:, i] * p[:, j]).sum(-1)
        / np.linalg.norm(p[:, i], axis=-1)
        / np.linalg.norm(p[:, j], axis=-1)
        for i, j in pairs
    ]
    np.testing.assert_allclose(out["similarity"].numpy(), np.mean(cos, 0), rtol=1e-5, atol=1e-6)
    led = Ledger(10, m, k)
    ids = torch.tensor(rng.permutation(10)[:b])
    led.observe(ids, yt, list(zt[:, :m].unbind(1)), zt[:, m])
    np.testing.assert_array_equal(led.correct[ids].numpy(), ok[:, :m])
    np.testing.assert_allclose(led.unimodal_loss[ids].numpy(), ce[:, :m], rtol=1e-5, atol=1e-5)


def test_columns_agree_with_the_bss_signal_functions() -> None:
    """BSS combines the Ledger's columns; they must equal the signals' batch functions."""
    from mmsample.signals import balance_loss, balance_similarity

    g = torch.Generator().manual_seed(3)
    u = [torch.randn(32, 9, generator=g) * 4 for _ in range(3)]
    fused, labels = torch.randn(32, 9, generator=g) * 4, torch.randint(0, 9, (32,), generator=g)
    led = Ledger(32, 3, 9)
    led.observe(torch.arange(32), labels, u, fused)
    torch.testing.assert_close(led.similarity, balance_similarity(u))
    total = 0.8 * led.fused_loss + 0.2 * led.unimodal_loss.sum(1)
    torch.testing.assert_close(total, balance_loss(u, fused, labels, alpha=0.2))


def test_duplicate_ids_last_occurrence_wins() -> None:
    led = Ledger(4, 2, 3)
    u = [logits_of([0.5, 0.25, 0.25], [0.2, 0.2, 0.6], [0.1, 0.1, 0.8])] * 2
    led.observe(torch.tensor([1, 3, 1]), torch.tensor([0, 1, 2]), u)
    torch.testing.assert_close(led.true_prob[1], torch.tensor([0.8, 0.8]))
    torch.testing.assert_close(led.true_prob[3], torch.tensor([0.2, 0.2]))
    assert led.labels[1] == 2 and led.seen_count.tolist() == [0, 2, 0, 1]


def test_duplicates_in_a_large_batch_match_a_sequential_reference() -> None:
    n, b, k = 50, 4000, 7
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, n, (b,), generator=g)
    labels = torch.randint(0, k, (b,), generator=g)
    u = [torch.randn(b, k, generator=g) for _ in range(2)]
    led = Ledger(n, 2, k)
    led.observe(ids, labels, u)
    last = {int(i): row for row, i in enumerate(ids.tolist())}  # later rows overwrite
    rows = torch.tensor([last[i] for i in sorted(last)])
    expected = torch.stack([x.log_softmax(-1)[rows, labels[rows]] for x in u], 1).exp()
    torch.testing.assert_close(led.true_prob[sorted(last)], expected)
    assert led.seen_count.tolist() == torch.bincount(ids, minlength=n).tolist()


def test_observe_without_fused_or_values_keeps_those_groups() -> None:
    led = Ledger(3, 2, 3)
    batch = hand_batch()
    led.observe(
        torch.tensor([0, 1]),
        batch["labels"],
        batch["unimodal_logits"],
        batch["fused_logits"],
        values=torch.tensor([[0.0, 1, 2, 3], [4, 5, 6, 7]]),
    )
    led.set_epoch(1)
    led.observe(torch.tensor([0]), torch.tensor([1]), [logits_of([0.1, 0.8, 0.1])] * 2)
    torch.testing.assert_close(led.true_prob[0], torch.tensor([0.8, 0.8]))
    torch.testing.assert_close(led.fused_true_prob[0], torch.tensor(0.7))  # from epoch 0
    torch.testing.assert_close(led.values[0], torch.tensor([0.0, 1, 2, 3]))
    assert led.labels.tolist() == [1, 2, -1] and led.last_seen.tolist() == [1, 0, -1]


def test_epochs_and_staleness() -> None:
    led = Ledger(4, 2, 3)
    u = [logits_of([0.5, 0.25, 0.25])] * 2
    led.set_epoch(2)
    led.observe(torch.tensor([0]), torch.tensor([0]), u)
    led.observe(torch.tensor([1]), torch.tensor([0]), u, epoch=5)
    assert led.epoch == 2 and led.step == 2
    assert led.last_seen.tolist() == [2, 5, -1, -1]
    assert led.staleness(6).tolist() == [4, 1, 7, 7]


def test_snapshot_is_a_copy_and_accessors_are_live() -> None:
    led = Ledger(3, 2, 3)
    view = led.true_prob
    snap = led.snapshot()
    u = [logits_of([0.5, 0.25, 0.25])] * 2
    led.observe(torch.tensor([2]), torch.tensor([0]), u)
    led.flush()  # observe only stages: a view taken earlier sees the batch once it is applied
    assert torch.isnan(snap["true_prob"]).all() and snap["seen_count"].sum() == 0
    torch.testing.assert_close(view[2], torch.tensor([0.5, 0.5]))
    snap["true_prob"].fill_(0.0)
    torch.testing.assert_close(led.true_prob[2], torch.tensor([0.5, 0.5]))
    assert set(snap) >= {"labels", "true_prob", "fused_true_prob", "values", "last_seen", "seen"}


def test_sync_without_distributed_is_a_no_op() -> None:
    led = Ledger(3, 2, 3)
    led.observe(**hand_batch() | {"ids": torch.tensor([0, 1])})
    before = led.snapshot()
    led.sync()
    after = led.snapshot()
    for key in before:
        torch.testing.assert_close(after[key], before[key], equal_nan=True)


# ---- deferral: observe stages, a flush computes; the tables are as if applied one by one ---


def test_observe_stages_until_a_read_a_flush_point_or_a_full_ring() -> None:
    led = Ledger(4, 2, 3, staging=2)
    raw = led.state_dict()["float"]  # an untouched copy to compare the live table against
    view = led.true_prob  # a live view: it does not flush by itself
    u = [logits_of([0.5, 0.25, 0.25])] * 2
    led.observe(torch.tensor([0]), torch.tensor([0]), u)
    led.observe(torch.tensor([1]), torch.tensor([0]), u)
    assert torch.isnan(view).all()  # staged, not applied
    led.observe(torch.tensor([2]), torch.tensor([0]), u)  # the ring was full: 0 and 1 applied
    torch.testing.assert_close(view[:2], torch.full((2, 2), 0.5))
    assert torch.isnan(view[2]).all()
    assert led.seen_count.tolist() == [1, 1, 1, 0]  # a read through the ledger applies all
    torch.testing.assert_close(view[2], torch.tensor([0.5, 0.5]))
    led.observe(torch.tensor([3]), torch.tensor([0]), u)
    led.set_epoch(1)  # a flush point
    torch.testing.assert_close(view[3], torch.tensor([0.5, 0.5]))
    assert torch.isnan(raw).all() and led.step == 4


def same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bit-for-bit equal, NaN where the other has NaN."""
    if a.is_floating_point() and not torch.equal(a.isnan(), b.isnan()):
        return False
    return torch.equal(a.nan_to_num(0.0), b.nan_to_num(0.0))


READS = {
    "labels": lambda led: led.labels,
    "true_prob": lambda led: led.true_prob,
    "fused_loss": lambda led: led.fused_loss,
    "values": lambda led: led.values,
    "seen_count": lambda led: led.seen_count,
    "staleness": lambda led: led.staleness(9),
    "snapshot": lambda led: led.snapshot()["similarity"],
}


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_deferred_tables_equal_batch_by_batch_and_reads_see_everything(data: Any) -> None:
    """Any sequence of batches (duplicate ids within and across batches, with and without fused
    logits and values, float32 and float64, changing sizes and epochs, refused batches, reads
    in between) gives the table of applying each batch on its own, in order: for each id and
    column group the last occurrence wins; seen_count counts every occurrence."""
    n, m, k = 6, data.draw(st.integers(2, 3)), data.draw(st.integers(2, 5))
    deferred = Ledger(n, m, k, staging=data.draw(st.integers(1, 5)))
    stepwise = Ledger(n, m, k)
    g = torch.Generator().manual_seed(data.draw(st.integers(0, 2**31 - 1)))
    last: dict[int, tuple[int, int, int]] = {}  # id -> (label, epoch, step) of its last row
    count, step = [0] * n, 0
    for _ in range(data.draw(st.integers(1, 9))):
        b = data.draw(st.integers(1, 10))
        dtype = data.draw(st.sampled_from([torch.float32, torch.float64]))
        batch: dict[str, Any] = {
            "ids": torch.randint(0, n, (b,), generator=g),
            "labels": torch.randint(0, k, (b,), generator=g),
            "unimodal_logits": [torch.randn(b, k, generator=g, dtype=dtype) for _ in range(m)],
            "fused_logits": torch.randn(b, k, generator=g) if data.draw(st.booleans()) else None,
            "values": torch.randn(b, 1 << m, generator=g) if data.draw(st.booleans()) else None,
            "epoch": data.draw(st.none() | st.integers(0, 3)),
        }
        if data.draw(st.integers(0, 5)) == 0:  # a refused batch changes nothing
            batch["unimodal_logits"][-1][b - 1, 0] = math.nan
            for led in (deferred, stepwise):
                with pytest.raises(ValueError, match=rf"'unimodal_logits\[{m - 1}\]' .* NaN"):
                    led.observe(**batch)
            continue
        for led in (deferred, stepwise):
            led.observe(**batch)
        stepwise.flush()
        step += 1
        epoch = 0 if batch["epoch"] is None else batch["epoch"]
        for i, y in zip(batch["ids"].tolist(), batch["labels"].tolist()):
            last[i], count[i] = (y, epoch, step), count[i] + 1
        read = data.draw(st.sampled_from([None, *READS]))
        if read is not None:  # the read itself sees every batch observed so far
            assert same(READS[read](deferred), READS[read](stepwise)), read
    got, want = deferred.state_dict(), stepwise.state_dict()
    for key in ("float", "bool", "int", "count", "step"):
        assert same(torch.as_tensor(got[key]), torch.as_tensor(want[key])), key
    # the winners, worked out here: the label, epoch and stamp of each id's last row
    assert deferred.seen_count.tolist() == count
    assert deferred.labels.tolist() == [last[i][0] if i in last else -1 for i in range(n)]
    assert deferred.last_seen.tolist() == [last[i][1] if i in last else -1 for i in range(n)]
    stamps = [((last[i][1] + 1) << 40) | last[i][2] if i in last else 0 for i in range(n)]
    assert got["int"][:, 2].tolist() == stamps  # the unimodal group's (epoch, step) stamp


INF = math.inf


def test_minus_inf_logits_are_masked_classes() -> None:
    """Issue 7 item 18: models mask classes with -inf; such a class gets probability 0 (its
    cross-entropy, as the label, is +inf) and the other classes share the probability."""
    led = Ledger(5, 2, 3, names=["audio", "video"])
    led.observe(
        ids=torch.tensor([2, 4]),
        labels=torch.tensor([0, 2]),
        unimodal_logits=[
            torch.tensor([[0.0, -INF, 0.0], [-INF, -INF, 5.0]]),
            torch.tensor([[-INF, 0.0, math.log(3.0)], [0.0, 0.0, 0.0]]),
        ],
        fused_logits=torch.tensor([[math.log(2.0), -INF, 0.0], [-INF, 1.0, -INF]]),
    )
    # sample 2, label 0: audio p = (.5, 0, .5), video p = (0, .25, .75), fused (2/3, 0, 1/3)
    # sample 4, label 2: audio p = (0, 0, 1), video p = (1/3, 1/3, 1/3), fused (0, 1, 0)
    tp = torch.tensor([[0.5, 0.0], [1.0, 1 / 3]])
    torch.testing.assert_close(led.true_prob[[2, 4]], tp)
    torch.testing.assert_close(
        led.unimodal_loss[[2, 4]], torch.tensor([[math.log(2.0), INF], [0.0, math.log(3.0)]])
    )
    torch.testing.assert_close(led.fused_true_prob[[2, 4]], torch.tensor([2 / 3, 0.0]))
    torch.testing.assert_close(led.fused_loss[[2, 4]], torch.tensor([math.log(1.5), INF]))
    # argmax == label: a tie goes to the first maximal class (class 0 of (.5, 0, .5))
    assert led.correct[[2, 4]].tolist() == [[True, False], [True, False]]
    assert led.fused_correct[[2, 4]].tolist() == [True, False]
    # cosines: .375 / sqrt(.5 * .625) = 3 / (2 sqrt 5); (1/3) / sqrt(1/3) = sqrt(1/3)
    torch.testing.assert_close(
        led.similarity[[2, 4]], torch.tensor([3 / (2 * math.sqrt(5.0)), math.sqrt(1 / 3)])
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_nan_and_plus_inf_are_refused_beside_minus_inf(dtype: torch.dtype) -> None:
    ok = torch.tensor([[0.0, -INF, 1.0], [2.0, 0.0, -INF]], dtype=dtype)
    led = Ledger(5, 2, 3)
    led.observe(torch.tensor([2, 4]), torch.tensor([0, 1]), [ok, ok], fused_logits=ok)
    assert led.seen_count.tolist() == [0, 0, 1, 0, 1]
    bad_rows = {
        "NaN beside -inf": torch.tensor([[0.0, -INF, NAN], [2.0, 0.0, -INF]]),
        "+inf": torch.tensor([[0.0, -INF, 1.0], [INF, 0.0, -INF]]),
        "-inf for every class": torch.tensor([[-INF, -INF, -INF], [2.0, 0.0, -INF]]),
    }
    for what, bad in bad_rows.items():
        bad = bad.to(dtype)
        row = 4 if what == "+inf" else 2
        with pytest.raises(
            ValueError, match=rf"'unimodal_logits\[1\]' .* 1 sample\(s\), ids \[{row}\]"
        ):
            led.observe(torch.tensor([2, 4]), torch.tensor([0, 1]), [ok, bad])
        with pytest.raises(ValueError, match=rf"'fused_logits' .* 1 sample\(s\), ids \[{row}\]"):
            led.observe(torch.tensor([2, 4]), torch.tensor([0, 1]), [ok, ok], fused_logits=bad)
    assert led.seen_count.tolist() == [0, 0, 1, 0, 1]  # the refused batches wrote nothing
    with pytest.raises(ValueError, match=r"'values' argument .* NaN or inf for 1 sample"):
        values = torch.tensor([[0.0, 1.0, 1.0, 2.0], [0.0, -INF, 1.0, 2.0]], dtype=dtype)
        led.observe(torch.tensor([2, 4]), torch.tensor([0, 1]), [ok, ok], values=values)


# ---- validation --------------------------------------------------------------------------


def observe_with(**change: object) -> None:
    led = Ledger(5, 2, 3)
    args = hand_batch() | change
    before = led.state_dict()
    try:
        led.observe(**args)
    finally:  # a refused batch writes nothing
        after = led.state_dict()
        for key in ("float", "bool", "int", "count"):
            assert torch.equal(after[key].nan_to_num(-7), before[key].nan_to_num(-7))


U0: torch.Tensor = hand_batch()["unimodal_logits"][0]
U1: torch.Tensor = hand_batch()["unimodal_logits"][1]


@pytest.mark.parametrize(
    ("change", "pattern"),
    [
        ({"ids": torch.tensor([[2, 4]])}, r"'ids' argument .* shape \[B\]"),
        ({"ids": torch.tensor([2.0, 4.0])}, r"'ids' argument .* integer tensor"),
        ({"labels": torch.tensor([0, 1, 2])}, r"'labels' argument .* shape \[2\]"),
        ({"unimodal_logits": [U0]}, r"'unimodal_logits' argument .* 2 tensors .* got 1"),
        ({"unimodal_logits": U0}, r"'unimodal_logits' argument .* got a tensor"),
        ({"unimodal_logits": [U0, U1[:, :2]]}, r"'unimodal_logits\[1\]' .* shape \[2, 3\]"),
        ({"unimodal_logits": [U0, U1.long()]}, r"'unimodal_logits\[1\]' .* floating"),
        ({"fused_logits": torch.zeros(3, 3)}, r"'fused_logits' argument .* shape \[2, 3\]"),
        ({"values": torch.zeros(2, 3)}, r"'values' argument .* shape \[2, 4\]"),
        ({"ids": torch.tensor([2, 5])}, r"'ids' argument .* \[0, 5\); got 1 out of range: \[5\]"),
        ({"ids": torch.tensor([-1, 4])}, r"'ids' argument .* got 1 out of range: \[-1\]"),
        ({"labels": torch.tensor([0, 3])}, r"'labels' argument .* \[0, 3\).*\[3\] at ids \[4\]"),
        (
            {"unimodal_logits": [U0, U1.index_fill(1, torch.tensor([1]), NAN)]},
            r"'unimodal_logits\[1\]' argument .* NaN or \+inf .* for 2 sample\(s\), ids \[2, 4\]",
        ),
        (
            {"unimodal_logits": [U0.index_fill(0, torch.tensor([1]), -math.inf), U1]},
            r"'unimodal_logits\[0\]' .* \(or -inf for every class\) for 1 sample\(s\), ids \[4\]",
        ),
        (
            {"fused_logits": torch.tensor([[0.0, math.inf, 0.0], [0.0, 0.0, 0.0]])},
            r"'fused_logits' argument .* NaN or \+inf .* for 1 sample\(s\), ids \[2\]",
        ),
        (
            {"values": torch.tensor([[0.0, 0, 0, 0], [0, NAN, 0, 0]])},
            r"'values' argument .* NaN or inf for 1 sample\(s\), ids \[4\]",
        ),
        ({"epoch": -1}, r"'epoch' argument of Ledger.observe must be an int"),
    ],
)
def test_observe_rejects_bad_input_naming_the_argument(
    change: dict[str, object], pattern: str
) -> None:
    with pytest.raises(ValueError, match=pattern):
        observe_with(**change)


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"num_samples": 0}, r"'num_samples' parameter of Ledger must be an int >= 1; got 0"),
        ({"num_modalities": 1}, r"'num_modalities' parameter .* >= 2; got 1"),
        ({"num_classes": 2.0}, r"'num_classes' parameter .* got 2.0"),
        ({"names": ["a"]}, r"'names' parameter .* 2 modality names"),
        ({"names": ["a", "a"]}, r"'names' parameter .* distinct"),
        ({"staging": 0}, r"'staging' parameter .* >= 1"),
    ],
)
def test_constructor_rejects_bad_parameters(kwargs: dict[str, Any], pattern: str) -> None:
    args: dict[str, Any] = {"num_samples": 4, "num_modalities": 2, "num_classes": 3}
    with pytest.raises(ValueError, match=pattern):
        Ledger(**(args | kwargs))


def test_epoch_arguments_are_checked() -> None:
    led = Ledger(2, 2, 2)
    with pytest.raises(ValueError, match=r"'epoch' argument of Ledger.set_epoch"):
        led.set_epoch(-1)
    with pytest.raises(ValueError, match=r"'epoch' argument of Ledger.staleness"):
        led.staleness(True)


# ---- checkpoints -------------------------------------------------------------------------


def test_state_dict_round_trip_and_caller_dict_untouched() -> None:
    led = Ledger(5, 2, 3, names=["audio", "video"])
    led.set_epoch(3)
    led.observe(**hand_batch(), values=torch.ones(2, 4))
    state = led.state_dict()
    kept = copy.deepcopy(state)
    other = Ledger(5, 2, 3, names=["audio", "video"])
    other.load_state_dict(state)
    for key, value in led.snapshot().items():
        torch.testing.assert_close(other.snapshot()[key], value, equal_nan=True)
    assert (other.epoch, other.step) == (3, 1)
    # both continue identically; the loaded state is a copy, never an alias
    more: dict[str, Any] = {"ids": torch.tensor([0]), "labels": torch.tensor([1])}
    for ledger in (led, other):
        ledger.observe(**more, unimodal_logits=[logits_of([0.2, 0.7, 0.1])] * 2)
    assert other.step == led.step == 2
    torch.testing.assert_close(other.true_prob, led.true_prob, equal_nan=True)
    assert state.keys() == kept.keys()
    for key, value in kept.items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(state[key].nan_to_num(-7), value.nan_to_num(-7)), key
        else:
            assert state[key] == value


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"num_classes": 4}, "num_classes: saved 3, now 4"),
        ({"num_samples": 6}, "num_samples: saved 5, now 6"),
        (
            {"names": ["video", "audio"]},
            r"names: saved \['audio', 'video'\], now \['video', 'audio'\]",
        ),
    ],
)
def test_load_state_dict_refuses_another_ledger(kwargs: dict[str, Any], field: str) -> None:
    state = Ledger(5, 2, 3, names=["audio", "video"]).state_dict()
    args: dict[str, Any] = {"num_samples": 5, "num_modalities": 2, "num_classes": 3}
    other = Ledger(**(args | {"names": ["audio", "video"]} | kwargs))
    with pytest.raises(ValueError, match=rf"differently configured Ledger \(.*{field}"):
        other.load_state_dict(state)


def test_load_state_dict_refuses_other_dicts() -> None:
    led = Ledger(5, 2, 3)
    with pytest.raises(ValueError, match=r"expects a dict from Ledger\.state_dict"):
        led.load_state_dict({"weights": 1})
    state = led.state_dict()
    state["float"] = state["float"][:3]
    with pytest.raises(ValueError, match=r"entry 'float' must be a torch.float32 tensor"):
        led.load_state_dict(state)


# ---- shared memory: DataLoader workers read what the training process writes -------------


class LedgerDataset(torch.utils.data.Dataset[tuple[torch.Tensor, bool]]):
    """Returns the ledger's current true_prob row, and whether the worker may observe."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    def __len__(self) -> int:
        return self.ledger.num_samples

    def __getitem__(self, i: int) -> tuple[torch.Tensor, bool]:
        try:
            self.ledger.observe(torch.tensor([i]), torch.tensor([0]), [torch.zeros(1, 3)] * 2)
            refused = False
        except RuntimeError as err:
            refused = "only read the shared table" in str(err)
        return self.ledger.true_prob[i].clone(), refused


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_persistent_workers_see_updates_made_after_they_started(context: str) -> None:
    led = Ledger(4, 2, 3)
    loader = torch.utils.data.DataLoader(
        LedgerDataset(led),
        batch_size=2,
        num_workers=2,
        persistent_workers=True,
        multiprocessing_context=context,
    )
    ids, labels = torch.arange(4), torch.zeros(4, dtype=torch.long)
    for epoch, p in enumerate((0.5, 0.2)):  # the value for epoch e is observed before it is read
        led.observe(ids, labels, [logits_of(*[[p, (1 - p) / 2, (1 - p) / 2]] * 4)] * 2)
        led.set_epoch(epoch)  # a flush point: this epoch's workers read all observed so far
        rows, refused = zip(*[(r, f) for batch in loader for r, f in zip(*batch)])
        torch.testing.assert_close(torch.stack(rows), torch.full((4, 2), p))
        assert all(refused)
    assert led.seen_count.tolist() == [2, 2, 2, 2]  # the workers' observe calls wrote nothing


# ---- CUDA: staged through pinned memory without a host sync per call ---------------------

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def random_batches(n: int, b: int, m: int, k: int, count: int, seed: int) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    return [
        {
            "ids": torch.randint(0, n, (b,), generator=g),
            "labels": torch.randint(0, k, (b,), generator=g),
            "unimodal_logits": [torch.randn(b, k, generator=g) * 3 for _ in range(m)],
            "fused_logits": torch.randn(b, k, generator=g) * 3 if i % 2 else None,
            "values": torch.randn(b, 1 << m, generator=g) if i % 3 == 0 else None,
        }
        for i in range(count)
    ]


def to_cuda(batch: dict) -> dict:
    move = lambda x: x.cuda() if isinstance(x, torch.Tensor) else x  # noqa: E731
    return {k: [move(t) for t in v] if isinstance(v, list) else move(v) for k, v in batch.items()}


@cuda
def test_cuda_observe_matches_cpu_without_host_sync() -> None:
    batches = random_batches(n=40, b=16, m=3, k=7, count=25, seed=0)
    host = Ledger(40, 3, 7)
    roomy, tight = Ledger(40, 3, 7, device="cuda", staging=32), Ledger(40, 3, 7, staging=4)
    gpu_batches = [to_cuda(b) for b in batches]
    torch.cuda.synchronize()
    for b, gb in zip(batches, gpu_batches):
        host.observe(**b)
        tight.observe(**gb)  # its ring fills every 4 batches and is applied then
        torch.cuda.set_sync_debug_mode("error")  # any host sync raises
        try:
            roomy.observe(**gb)
        finally:
            torch.cuda.set_sync_debug_mode(0)
    expected = host.snapshot()
    for led in (roomy, tight):
        got = led.snapshot()
        for key in expected:
            torch.testing.assert_close(
                got[key], expected[key], equal_nan=True, rtol=1e-5, atol=1e-5
            )


@cuda
def test_cuda_errors_are_deferred_to_flush_and_name_argument_and_ids() -> None:
    led = Ledger(5, 2, 3)
    good = to_cuda(hand_batch())
    bad = to_cuda(hand_batch())
    bad["fused_logits"] = bad["fused_logits"].index_fill(0, torch.tensor([1]).cuda(), NAN)
    led.observe(**good)
    led.observe(**bad)  # no error yet: checking would need a host sync
    with pytest.raises(ValueError, match=r"'fused_logits' argument .* ids \[4\]"):
        led.flush()
    assert led.seen_count.tolist() == [0, 0, 1, 0, 1]  # the good batch applied, the bad one not
    led.observe(**to_cuda(hand_batch() | {"labels": torch.tensor([0, 7])}))
    with pytest.raises(ValueError, match=r"'labels' argument .* \[7\] at ids \[4\]"):
        led.snapshot()
    led.observe(**to_cuda(hand_batch() | {"ids": torch.tensor([2, 9])}))
    with pytest.raises(ValueError, match=r"'ids' argument .* \[9\]"):
        led.flush()
    with pytest.raises(ValueError, match=r"'ids' argument .* \[9\]"):  # CPU ids: at once
        led.observe(**to_cuda(hand_batch()) | {"ids": torch.tensor([2, 9])})
    assert led.seen_count.tolist() == [0, 0, 1, 0, 1]


@cuda
def test_cuda_batches_merged_at_flush_keep_order_epochs_and_errors() -> None:
    batches = random_batches(n=10, b=8, m=2, k=5, count=6, seed=2)
    for i, b in enumerate(batches):  # one kind throughout: merged into one reduction at flush
        b["fused_logits"], b["values"] = b["unimodal_logits"][0] * 0.5, None
        b["epoch"] = i // 2
    bad = 3
    batches[bad]["unimodal_logits"][1][5, 2] = math.inf
    host, dev = Ledger(10, 2, 5), Ledger(10, 2, 5, staging=64)
    for i, b in enumerate(batches):
        dev.observe(**to_cuda(b))
        if i != bad:
            host.observe(**b)
    ids = batches[bad]["ids"][5].item()
    with pytest.raises(ValueError, match=rf"'unimodal_logits\[1\]' .* ids \[{ids}\]"):
        dev.flush()
    expected, got = host.snapshot(), dev.snapshot()
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], equal_nan=True, rtol=1e-5, atol=1e-5)


@cuda
def test_cuda_minus_inf_logits_are_accepted_and_nan_refused_at_flush() -> None:
    """Issue 7 item 18 on the deferred (device) path: checked when the ring is drained."""
    masked = [torch.tensor([[0.0, -INF, 0.0], [-INF, -INF, 5.0]]).cuda()] * 2
    host, dev = Ledger(5, 2, 3), Ledger(5, 2, 3, staging=8)
    for led, logits in ((host, [t.cpu() for t in masked]), (dev, masked)):
        led.observe(torch.tensor([2, 4]), torch.tensor([0, 2]), logits)
    torch.testing.assert_close(dev.true_prob, host.true_prob, equal_nan=True)
    torch.testing.assert_close(dev.true_prob[[2, 4]].cpu(), torch.tensor([[0.5, 0.5], [1.0, 1.0]]))
    bad = [masked[0], torch.tensor([[0.0, -INF, NAN], [0.0, 1.0, 2.0]]).cuda()]
    dev.observe(torch.tensor([2, 4]), torch.tensor([0, 2]), bad)
    with pytest.raises(ValueError, match=r"'unimodal_logits\[1\]' .* 1 sample\(s\), ids \[2\]"):
        dev.flush()
