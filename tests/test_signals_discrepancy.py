"""Discrepancy score, cumulative mean and OGM coefficients, against values worked by hand."""

from __future__ import annotations

import math

import pytest
import torch

from mmsample.signals import CumulativeMean, discrepancy, ogm_coefficients


def test_discrepancy_by_hand() -> None:
    # row 0: softmax([0, ln 3]) = [1/4, 3/4], label 1 -> 3/4; row 1: softmax([ln 2, 0]) = [2/3, 1/3],
    # label 0 -> 2/3; the score is the SUM 17/12
    logits = torch.tensor([[0.0, math.log(3)], [math.log(2), 0.0]], dtype=torch.float64)
    s = discrepancy(logits, torch.tensor([1, 0]))
    assert s.dtype == torch.float64 and s.shape == ()
    assert s.item() == pytest.approx(17 / 12, rel=1e-12)
    # a sum: doubling the batch doubles the score
    s2 = discrepancy(logits.repeat(2, 1), torch.tensor([1, 0, 1, 0]))
    assert s2.item() == pytest.approx(2 * 17 / 12, rel=1e-12)


def test_discrepancy_validation() -> None:
    with pytest.raises(ValueError, match=r"'labels'.*\[B\] = \[2\]"):
        discrepancy(torch.zeros(2, 3), torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match=r"'labels'.*integer"):
        discrepancy(torch.zeros(2, 3), torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"'logits'"):
        discrepancy(torch.zeros(2, dtype=torch.long), torch.tensor([0, 1]))


def k(alpha: float, rho: float) -> float:
    return 1 - math.tanh(alpha * rho) if rho > 1 else 1.0


def test_two_modalities_by_hand() -> None:
    # s = [3, 1]: rho_a = 3, rho_v = 1/3 -> k = [1 - tanh(0.5 * 3), 1]
    out = ogm_coefficients(torch.tensor([3.0, 1.0], dtype=torch.float64), alpha=0.5)
    assert out.dtype == torch.float64
    assert out.tolist() == pytest.approx([1 - math.tanh(1.5), 1.0])
    out = ogm_coefficients(torch.tensor([0.5, 2.0], dtype=torch.float64), alpha=0.8)
    assert out.tolist() == pytest.approx([1.0, 1 - math.tanh(0.8 * 4)])


def test_tie() -> None:
    s = torch.tensor([2.0, 2.0])
    assert ogm_coefficients(s, 0.3).tolist() == [1.0, 1.0]
    assert ogm_coefficients(s, 0.3, tie_modulates=0).tolist() == pytest.approx(
        [1 - math.tanh(0.3), 1.0]
    )
    assert ogm_coefficients(s, 0.3, tie_modulates=1).tolist() == pytest.approx(
        [1.0, 1 - math.tanh(0.3)]
    )


def authors_two_modality(score_a: float, score_v: float, alpha: float) -> list[float]:
    """The branch of the authors' main.py, transcribed: ratio_v > 1 modulates v, else a."""
    ratio_v = score_v / score_a
    ratio_a = 1 / ratio_v
    if ratio_v > 1:
        return [1.0, 1 - math.tanh(alpha * max(ratio_v, 0.0))]
    return [1 - math.tanh(alpha * max(ratio_a, 0.0)), 1.0]


@pytest.mark.parametrize(
    ("sa", "sv"), [(10.0, 5.0), (5.0, 10.0), (7.0, 7.0), (0.1, 63.0), (31.5, 32.5)]
)
def test_tie_modulates_first_reproduces_authors(sa: float, sv: float) -> None:
    out = ogm_coefficients(torch.tensor([sa, sv], dtype=torch.float64), 0.1, tie_modulates=0)
    assert out.tolist() == pytest.approx(authors_two_modality(sa, sv, 0.1))


def test_three_modalities_by_hand() -> None:
    # s = [4, 1, 1]: rho = [4 / 1, 1 / 2.5, 1 / 2.5] -> only modality 0 modulated
    out = ogm_coefficients(torch.tensor([4.0, 1.0, 1.0], dtype=torch.float64), 0.2)
    assert out.tolist() == pytest.approx([k(0.2, 4.0), 1.0, 1.0])
    # s = [2, 1, 3]: rho = [2 / 2, 1 / 2.5, 3 / 1.5] = [1, 0.4, 2]
    s = torch.tensor([2.0, 1.0, 3.0], dtype=torch.float64)
    assert ogm_coefficients(s, 0.2).tolist() == pytest.approx([1.0, 1.0, k(0.2, 2.0)])
    assert ogm_coefficients(s, 0.2, tie_modulates=0).tolist() == pytest.approx(
        [1 - math.tanh(0.2), 1.0, k(0.2, 2.0)]
    )


def test_zero_scores() -> None:
    # the other modality scores 0: rho = inf -> k = 0; both 0: rho = NaN -> k = 1
    assert ogm_coefficients(torch.tensor([1.0, 0.0]), 0.1).tolist() == [0.0, 1.0]
    assert ogm_coefficients(torch.tensor([0.0, 0.0]), 0.1).tolist() == [1.0, 1.0]


def test_ogm_validation() -> None:
    with pytest.raises(ValueError, match=r"The 'alpha' parameter of ogm_coefficients must be > 0"):
        ogm_coefficients(torch.tensor([1.0, 2.0]), -1.0)
    with pytest.raises(ValueError, match=r"M >= 2"):
        ogm_coefficients(torch.tensor([1.0]), 0.1)
    with pytest.raises(ValueError, match=r"'tie_modulates'.*\[0, 2\)"):
        ogm_coefficients(torch.tensor([1.0, 2.0]), 0.1, tie_modulates=2)


def test_cumulative_mean_recurrence_is_the_mean() -> None:
    steps = [torch.tensor([2.0, 10.0]), torch.tensor([4.0, 0.0]), torch.tensor([9.0, 5.0])]
    cm = CumulativeMean(2)
    expected = [[2.0, 10.0], [3.0, 5.0], [5.0, 5.0]]  # running means worked by hand
    for s, e in zip(steps, expected):
        assert cm.update(s).tolist() == pytest.approx(e)
    assert cm.count == 3
    # the recurrence S_t = (t-1)/t S_{t-1} + s_t/t, term by term on t = 4
    s4 = torch.tensor([1.0, 1.0])
    assert cm.update(s4).tolist() == pytest.approx([3 / 4 * 5 + 1 / 4, 3 / 4 * 5 + 1 / 4])


def test_cumulative_mean_float64_and_shape_check() -> None:
    cm = CumulativeMean((3,))
    out = cm.update(torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64))
    assert out.dtype == torch.float64
    with pytest.raises(ValueError, match=r"'score'.*shape \(3,\)"):
        cm.update(torch.zeros(2))
    with pytest.raises(RuntimeError, match=r"before its first update"):
        _ = CumulativeMean().value


def test_cumulative_mean_state_round_trip() -> None:
    g = torch.Generator().manual_seed(0)
    steps = [torch.rand(3, generator=g, dtype=torch.float64) for _ in range(6)]
    straight = CumulativeMean(3)
    for s in steps:
        straight.update(s)
    first = CumulativeMean(3)
    for s in steps[:2]:
        first.update(s)
    state = first.state_dict()
    saved_value = state["value"].clone()
    resumed = CumulativeMean(3)
    resumed.load_state_dict(state)
    for s in steps[2:]:
        resumed.update(s)
        first.update(s)
    assert torch.equal(resumed.value, straight.value)
    assert torch.equal(state["value"], saved_value)  # loading and updating never touched it
    assert state["count"] == 2
    # state at 0 (never updated) round-trips too
    empty = CumulativeMean(3)
    empty.load_state_dict(CumulativeMean(3).state_dict())
    assert empty.count == 0


def test_cumulative_mean_refuses_mismatch() -> None:
    state = CumulativeMean(3).state_dict()
    with pytest.raises(ValueError, match=r"shape \(2,\).*\(3,\)"):
        CumulativeMean(2).load_state_dict(state)
    with pytest.raises(ValueError, match=r"not a CumulativeMean"):
        CumulativeMean(3).load_state_dict({"kind": "OGMGE"})


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda() -> None:
    logits = torch.randn(8, 5, device="cuda", dtype=torch.float64)
    labels = torch.randint(0, 5, (8,), device="cuda")
    s = discrepancy(logits, labels)
    assert s.device.type == "cuda"
    expected = discrepancy(logits.cpu(), labels.cpu())
    torch.testing.assert_close(s.cpu(), expected)
    scores = torch.tensor([3.0, 1.0], device="cuda")
    assert ogm_coefficients(scores, 0.5).device.type == "cuda"
    cm = CumulativeMean(2)
    cm.update(scores)
    assert cm.value.device.type == "cuda"
