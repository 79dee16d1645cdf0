"""SMV valuation: the two-modality truth table, copies, and the modality-level probability."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from mmsample.signals import (
    smv_contributions,
    smv_copies,
    smv_max_gap,
    smv_modality_probability,
)

# (correct a, correct v, correct av) -> (phi_a, phi_v), worked by hand from
# v(a) = ca, v(v) = cv, v(av) = 2 cav: phi_a = (ca + 2 cav - cv) / 2, phi_v = (cv + 2 cav - ca) / 2
TRUTH_TABLE = {
    (0, 0, 0): (0.0, 0.0),
    (1, 0, 0): (0.5, -0.5),
    (0, 1, 0): (-0.5, 0.5),
    (1, 1, 0): (0.0, 0.0),
    (0, 0, 1): (1.0, 1.0),
    (1, 0, 1): (1.5, 0.5),
    (0, 1, 1): (0.5, 1.5),
    (1, 1, 1): (1.0, 1.0),
}
# authors' f_s on those values: 1.5 and 1 -> 0, 0.5 -> 1, 0 -> 2, -0.5 -> 3
COPIES = {1.5: 0, 1.0: 0, 0.5: 1, 0.0: 2, -0.5: 3}


def test_truth_table_two_modalities() -> None:
    rows = list(TRUTH_TABLE)
    correct = torch.tensor([[True, bool(a), bool(v), bool(av)] for a, v, av in rows])
    phi = smv_contributions(correct, dtype=torch.float64)
    expected = torch.tensor([TRUTH_TABLE[r] for r in rows], dtype=torch.float64)
    torch.testing.assert_close(phi, expected)
    copies = smv_copies(phi)
    assert copies.dtype == torch.long
    assert copies.tolist() == [[COPIES[x] for x in TRUTH_TABLE[r]] for r in rows]


def test_empty_subset_entry_is_ignored() -> None:
    on = torch.tensor([[True, True, False, True]])
    off = torch.tensor([[False, True, False, True]])
    torch.testing.assert_close(smv_contributions(on), smv_contributions(off))


def test_three_modalities_by_hand() -> None:
    # only subsets holding modality 0 are right: v(C) = |C| if 0 in C.
    # phi_0 = 1/3 (1-0) + 1/6 (2-0) + 1/6 (2-0) + 1/3 (3-0) = 2
    # phi_1 = 1/3 (0) + 1/6 (2-1) + 1/6 (0) + 1/3 (3-2) = 1/2 = phi_2; sum = 3 = v(all)
    correct = torch.tensor([[bool(c & 1) for c in range(8)]])
    phi = smv_contributions(correct, dtype=torch.float64)
    torch.testing.assert_close(phi, torch.tensor([[2.0, 0.5, 0.5]], dtype=torch.float64))


@pytest.mark.parametrize(
    ("value", "copies"),
    [(1.2, 0), (1.0, 0), (0.999, 1), (0.41, 1), (0.4, 2), (0.0, 2), (-0.09, 2), (-0.1, 3), (-2, 3)],
)
def test_copies_boundaries(value: float, copies: int) -> None:
    assert smv_copies(torch.tensor([[value]], dtype=torch.float64)).item() == copies


def test_modality_probability_two_by_hand() -> None:
    # Phi = [1.0, 0.5]: weak = 1, d = 0.5; default Norm divides by the max gap 1 -> 0.5
    phi = torch.tensor([[1.5, 0.5], [0.5, 0.5]], dtype=torch.float64)
    weak, p = smv_modality_probability(phi)
    assert weak.item() == 1 and p.dtype == torch.float64
    assert p.item() == pytest.approx(0.5)
    assert smv_modality_probability(phi, "tanh")[1].item() == pytest.approx(math.tanh(0.5))
    assert smv_modality_probability(phi, "power")[1].item() == pytest.approx(0.5**1.5)
    assert smv_modality_probability(phi, scale=3.0)[1].item() == 1.0  # clamped
    # authors' code: |gap_a - gap_v| / 3 * 2 * alpha with gap = 1 - Phi -> 0.5 * 2 / 3
    assert smv_modality_probability(phi, gap=1.5)[1].item() == pytest.approx(1 / 3)
    assert smv_modality_probability(phi, "tanh", 2.0, gap=1.5)[1].item() == pytest.approx(
        math.tanh(2 / 3)
    )


def test_modality_probability_three_by_hand() -> None:
    # Phi = [1, 0, 2]: weak = 1, d = mean(1 - 0, 2 - 0) = 1.5 = max gap for M = 3 -> p = 1
    phi = torch.tensor([[1.0, 0.0, 2.0]])
    weak, p = smv_modality_probability(phi)
    assert weak.item() == 1 and p.item() == pytest.approx(1.0)
    weak, p = smv_modality_probability(torch.tensor([[1.0, 0.5, 1.5]]))
    assert weak.item() == 1 and p.item() == pytest.approx(0.75 / 1.5)


@pytest.mark.parametrize("m", [2, 3, 4])
def test_max_gap_by_enumeration(m: int) -> None:
    # every correctness pattern of the 2**M - 1 non-empty subsets, one sample each
    patterns = torch.tensor(list(itertools.product([False, True], repeat=(1 << m) - 1)))
    correct = torch.cat([torch.zeros(len(patterns), 1, dtype=torch.bool), patterns], dim=1)
    phi = smv_contributions(correct, dtype=torch.float64)
    d = (phi.sum(1) - m * phi.min(1).values) / (m - 1)
    assert d.max().item() == pytest.approx(smv_max_gap(m))
    assert smv_max_gap(m) == m / 2
    best = phi[d.argmax()][None]
    assert smv_modality_probability(best)[1].item() == pytest.approx(1.0)


def test_authors_gap_is_not_reached_for_two() -> None:
    # the authors normalise by 1.5 for two modalities; the largest d that occurs is 1
    assert smv_max_gap(2) == 1.0
    phi = torch.tensor([[0.5, -0.5]])  # a right, v wrong, av wrong: the extreme case
    assert smv_modality_probability(phi, gap=1.5)[1].item() == pytest.approx(2 / 3)
    assert smv_modality_probability(phi)[1].item() == pytest.approx(1.0)


def test_validation_messages() -> None:
    with pytest.raises(ValueError, match=r"'correct'.*bool"):
        smv_contributions(torch.zeros(2, 4))
    with pytest.raises(ValueError, match=r"'correct'.*2\*\*M"):
        smv_contributions(torch.zeros(2, 5, dtype=torch.bool))
    phi = torch.zeros(3, 2)
    with pytest.raises(ValueError, match=r"'f_m'.*must be one of \['linear', 'power', 'tanh'\]"):
        smv_modality_probability(phi, f_m="square")
    with pytest.raises(ValueError, match=r"'scale'.*> 0; got -1.0"):
        smv_modality_probability(phi, scale=-1.0)
    with pytest.raises(ValueError, match=r"'gap'.*> 0"):
        smv_modality_probability(phi, gap=0.0)
    with pytest.raises(ValueError, match=r"'phi'.*\[Z, M\]"):
        smv_modality_probability(torch.zeros(0, 2))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda() -> None:
    correct = torch.tensor([[True, True, False, True]], device="cuda")
    phi = smv_contributions(correct)
    assert phi.device.type == "cuda"
    assert smv_copies(phi).device.type == "cuda"
    weak, p = smv_modality_probability(phi)
    assert weak.device.type == "cuda" and p.device.type == "cuda"
