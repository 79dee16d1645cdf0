"""BSS balance score pieces and root pacing, against values worked by hand."""

from __future__ import annotations

import math

import pytest
import torch

from mmsample.signals import (
    balance_loss,
    balance_score,
    balance_similarity,
    min_max,
    root_pacing,
)

L3 = math.log(3)
T = torch.float64


def logits(rows: list[list[float]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=T)


def test_similarity_by_hand() -> None:
    # softmax([0, ln 3]) = [1/4, 3/4], softmax([ln 3, 0]) = [3/4, 1/4]:
    # cos = (3/16 + 3/16) / (10/16) = 0.6; identical predictions: 1
    u = logits([[0.0, L3], [0.0, L3]])
    v = logits([[L3, 0.0], [0.0, L3]])
    sim = balance_similarity([u, v])
    assert sim.dtype == T
    assert sim.tolist() == pytest.approx([0.6, 1.0])
    # M = 3, third = first: pairs (u, v) = 0.6, (u, w) = 1, (v, w) = 0.6 -> mean 2.2 / 3
    sim3 = balance_similarity([u, v, u])
    assert sim3[0].item() == pytest.approx(2.2 / 3)


def test_loss_by_hand() -> None:
    # CE = -log p_y; p(u) = [1/4, 3/4], p(v) = [3/4, 1/4], fused uniform: p = 1/2
    u, v = logits([[0.0, L3]]), logits([[L3, 0.0]])
    fused = logits([[0.0, 0.0]])
    y = torch.tensor([1])
    ce_u, ce_v, ce_f = -math.log(3 / 4), -math.log(1 / 4), math.log(2)
    out = balance_loss([u, v], fused, y, alpha=0.2)
    assert out.item() == pytest.approx(0.8 * ce_f + 0.2 * (ce_u + ce_v))
    out = balance_loss([u, v], fused, y, alpha=0.5)
    assert out.item() == pytest.approx(0.5 * (ce_f + ce_u + ce_v))


def test_min_max() -> None:
    assert min_max(torch.tensor([1.0, 3.0, 2.0])).tolist() == [0.0, 1.0, 0.5]
    assert min_max(torch.tensor([4.0, 4.0])).tolist() == [0.0, 0.0]


def test_balance_score_by_hand() -> None:
    # three samples; sims [0.6, 1, 0.6] -> Norm [0, 1, 0]
    u = logits([[0.0, L3], [0.0, L3], [0.0, L3]])
    v = logits([[L3, 0.0], [0.0, L3], [L3, 0.0]])
    fused = logits([[0.0, 0.0], [0.0, 0.0], [0.0, 0.0]])
    y = torch.tensor([1, 1, 0])
    # L_total at alpha = 0.2: CE(u) = [-ln 3/4, -ln 3/4, -ln 1/4], CE(v) = [-ln 1/4, -ln 3/4,
    # -ln 3/4], CE(fused) = ln 2 for all
    ce_u = [-math.log(0.75), -math.log(0.75), -math.log(0.25)]
    ce_v = [-math.log(0.25), -math.log(0.75), -math.log(0.75)]
    loss = [0.8 * math.log(2) + 0.2 * (a + b) for a, b in zip(ce_u, ce_v)]
    lo, hi = min(loss), max(loss)
    norm_loss = [(x - lo) / (hi - lo) for x in loss]
    norm_sim = [0.0, 1.0, 0.0]
    score = balance_score([u, v], fused, y)
    assert score.tolist() == pytest.approx([s - x for s, x in zip(norm_sim, norm_loss)])
    ref = balance_score([u, v], fused, y, variant="reference")
    assert ref.tolist() == pytest.approx([(1 - s) + x for s, x in zip(norm_sim, norm_loss)])
    torch.testing.assert_close(ref, 1 - score)


def test_degenerate_batch_scores_zero() -> None:
    u = logits([[0.0, L3], [0.0, L3]])
    fused = logits([[0.0, 0.0], [0.0, 0.0]])
    score = balance_score([u, u], fused, torch.tensor([1, 1]))
    assert score.tolist() == [0.0, 0.0]


def test_validation() -> None:
    u = logits([[0.0, 1.0]])
    with pytest.raises(ValueError, match=r"'variant'.*must be one of \['paper', 'reference'\]"):
        balance_score([u, u], u, torch.tensor([0]), variant="authors")
    with pytest.raises(ValueError, match=r"'alpha'.*\[0, 1\]; got 1.5"):
        balance_loss([u, u], u, torch.tensor([0]), alpha=1.5)
    with pytest.raises(ValueError, match=r"'unimodal_logits'"):
        balance_similarity([u])
    with pytest.raises(ValueError, match=r"'fused_logits'"):
        balance_loss([u, u], logits([[0.0, 1.0, 2.0]]), torch.tensor([0]))
    with pytest.raises(ValueError, match=r"'labels'"):
        balance_loss([u, u], u, torch.tensor([0, 1]))


def test_root_pacing() -> None:
    assert root_pacing(0) == pytest.approx(0.1)
    assert root_pacing(20) == pytest.approx(math.sqrt(0.99 / 40 * 20 + 0.01))
    assert root_pacing(40) == 1.0
    assert root_pacing(100) == 1.0
    assert root_pacing(10, l0=0.5, t_grow=20) == pytest.approx(math.sqrt(0.75 / 2 + 0.25))
    with pytest.raises(ValueError, match=r"'l0'"):
        root_pacing(1, l0=0.0)
    with pytest.raises(ValueError, match=r"'t_grow'"):
        root_pacing(1, t_grow=0)
    with pytest.raises(ValueError, match=r"'t'"):
        root_pacing(-1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda() -> None:
    u = torch.randn(6, 4, device="cuda", dtype=T)
    v = torch.randn(6, 4, device="cuda", dtype=T)
    y = torch.randint(0, 4, (6,), device="cuda")
    score = balance_score([u, v], u + v, y)
    assert score.device.type == "cuda"
    torch.testing.assert_close(
        score.cpu(), balance_score([u.cpu(), v.cpu()], (u + v).cpu(), y.cpu())
    )
