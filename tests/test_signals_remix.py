"""Data Remixing's assignment on fixed logits, against values worked by hand: KL to uniform in
bits with p clipped at 1e-9 (the authors' `kl_divergence`), argmin over M, ties."""

from __future__ import annotations

import math

import pytest
import torch

from mmsample.ledger import Ledger
from mmsample.signals import assign_lowest, remix_assignment, uniform_kl

T = torch.float64
L3 = math.log(3)


def test_uniform_kl_in_bits_by_hand() -> None:
    # p = softmax([ln 3, 0, 0]) = [3/5, 1/5, 1/5]; KL = sum p log2(3 p)
    want = 0.6 * math.log2(1.8) + 2 * 0.2 * math.log2(0.6)
    got = uniform_kl(torch.softmax(torch.tensor([[L3, 0.0, 0.0]], dtype=T), -1))
    assert got.dtype == T and got.shape == (1,)
    assert got.item() == pytest.approx(want, abs=1e-12)
    # uniform: 0 bits; two classes, one certain: 1 bit (log2 K), not ln 2 (nats)
    assert uniform_kl(torch.full((4,), 0.25, dtype=T)).item() == pytest.approx(0.0, abs=1e-15)
    one = uniform_kl(torch.tensor([1.0, 0.0], dtype=T)).item()
    assert one == pytest.approx(1.0 + 1e-9 * math.log2(2e-9), abs=1e-15)


def test_clipping_keeps_a_certain_prediction_finite() -> None:
    # softmax([800, 0, 0]) underflows to [1, 0, 0]: without the clip 0 * log 0 is NaN; with it
    # each zero counts as 1e-9: KL = log2 3 + 2 * 1e-9 * log2(3e-9)
    p = torch.softmax(torch.tensor([800.0, 0.0, 0.0], dtype=T), -1)
    assert p[1].item() == 0.0
    want = math.log2(3) + 2e-9 * math.log2(3e-9)
    assert uniform_kl(p).item() == pytest.approx(want, abs=1e-15)
    # clipping, not renormalising: the clipped vector sums to 1 + 2e-9 and KL uses it as is
    assert uniform_kl(p).item() != pytest.approx(math.log2(3), abs=1e-10)


def test_assignment_is_the_least_confident_modality() -> None:
    audio = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.5, 0.0]], dtype=T)
    video = torch.tensor([[0.0, 0.0, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 4.0]], dtype=T)
    # row 0: video uniform (KL 0) < audio; row 1: audio uniform; row 2: audio's 0.5 gap is less
    # confident than video's 4
    got = remix_assignment([audio, video])
    assert got.dtype == torch.int64 and got.tolist() == [1, 0, 0]


def test_assignment_over_three_modalities_by_hand() -> None:
    def kl(z: list[float]) -> float:
        e = [math.exp(x) for x in z]
        return sum(x / sum(e) * math.log2(3 * x / sum(e)) for x in e)

    rows = [
        ([1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 0.3]),
        ([0.2, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 3.0]),
        ([5.0, 0.0, 0.0], [0.0, 0.7, 0.0], [0.0, 0.0, 3.0]),
    ]
    want = [min(range(3), key=lambda j: kl(r[j])) for r in rows]
    assert want == [2, 0, 1]
    logits = [torch.tensor([r[j] for r in rows], dtype=T) for j in range(3)]
    assert remix_assignment(logits).tolist() == want


def test_ties_go_to_the_documented_modality() -> None:
    same = torch.tensor([[1.0, 0.0], [0.0, 0.0], [3.0, 1.0]], dtype=T)
    other = torch.tensor([[0.0, 1.0], [0.0, 0.0], [0.0, 0.0]], dtype=T)  # rows 0, 1 tie
    assert remix_assignment([same, other]).tolist() == [0, 0, 1]  # argmin's first index
    assert remix_assignment([same, other], tie=1).tolist() == [1, 1, 1]
    assert torch.equal(
        remix_assignment([same, other]),
        torch.stack([uniform_kl(torch.softmax(z, -1)) for z in (same, other)], 1).argmin(1),
    )
    # three modalities: a tie of 0 and 2 goes to 2 only when tie=2; tie=1 is not among them
    kl = torch.tensor([[0.5, 0.9, 0.5], [0.7, 0.1, 0.7]], dtype=T)
    assert assign_lowest(kl).tolist() == [0, 1]
    assert assign_lowest(kl, tie=2).tolist() == [2, 1]
    assert assign_lowest(kl, tie=1).tolist() == [0, 1]


def test_bad_arguments_name_the_argument() -> None:
    z = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="'unimodal_logits' argument of remix_assignment"):
        remix_assignment([z])
    with pytest.raises(ValueError, match="'unimodal_logits'"):
        remix_assignment([z, torch.zeros(2, 4)])
    with pytest.raises(ValueError, match="'unimodal_logits'"):
        remix_assignment([z, torch.full((2, 3), math.nan)])
    with pytest.raises(ValueError, match="'unimodal_logits'"):
        remix_assignment(z)  # a tensor, not a list of M tensors
    with pytest.raises(ValueError, match="'tie' argument of remix_assignment must be < 2"):
        remix_assignment([z, z], tie=2)


def test_the_ledger_stores_each_modalitys_kl_from_the_rows_carrying_it() -> None:
    g = torch.Generator().manual_seed(0)
    a, v = torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g)
    led = Ledger(6, 2, 3, names=["audio", "video"])
    present = torch.tensor([[True, True], [True, False], [False, True], [True, True]])
    led.observe(torch.arange(4), torch.tensor([0, 1, 2, 0]), [a, v], a + v, present=present)
    want = torch.stack([uniform_kl(torch.softmax(z.double(), -1)) for z in (a, v)], 1)
    got = led.snapshot()["uniform_kl"]
    assert got.shape == (6, 2)
    assert torch.allclose(got[:4][present].double(), want[present], atol=1e-6)
    assert got[:4][~present].isnan().all() and got[4:].isnan().all()  # never observed
    # a row carrying only video overwrites video's KL of id 0, never audio's
    led.observe(torch.tensor([0]), torch.tensor([0]), [v[:1], a[:1]], present=present[2:3])
    after = led.snapshot()["uniform_kl"][0].double()
    assert after[0].item() == pytest.approx(want[0, 0].item(), abs=1e-6)
    assert after[1].item() == pytest.approx(want[0, 0].item(), abs=1e-6)  # KL of a[:1]
