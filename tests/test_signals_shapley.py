"""Exact Shapley values and subset helpers, checked against hand-worked games and definitions."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mmsample.signals import (
    masks_with,
    masks_without,
    membership,
    shapley,
    shapley_matrix,
    subset_correct,
    subset_logits,
    subset_sizes,
    subset_values,
)


def permutation_shapley(values: list[float], m: int) -> list[float]:
    """Shapley by its other definition: the mean marginal contribution over all M! orders."""
    phi = [0.0] * m
    orders = list(itertools.permutations(range(m)))
    for order in orders:
        mask = 0
        for j in order:
            phi[j] += values[mask | (1 << j)] - values[mask]
            mask |= 1 << j
    return [p / len(orders) for p in phi]


def test_two_modalities_by_hand() -> None:
    # v(empty)=0.1, v(a)=0.5, v(b)=0.3, v(ab)=0.9
    # phi_a = 0.5 (0.5 - 0.1) + 0.5 (0.9 - 0.3) = 0.5; phi_b = 0.5 (0.3 - 0.1) + 0.5 (0.9 - 0.5) = 0.3
    phi = shapley(torch.tensor([0.1, 0.5, 0.3, 0.9], dtype=torch.float64))
    torch.testing.assert_close(phi, torch.tensor([0.5, 0.3], dtype=torch.float64))


def test_glove_game_three_modalities() -> None:
    # modality 0 holds a left glove, 1 and 2 right gloves; a pair is worth 1.
    # Textbook values: 2/3 for the scarce left glove, 1/6 for each right glove.
    values = [1.0 if (c & 1) and (c & 6) else 0.0 for c in range(8)]
    phi = shapley(torch.tensor(values, dtype=torch.float64))
    torch.testing.assert_close(phi, torch.tensor([2 / 3, 1 / 6, 1 / 6], dtype=torch.float64))


def test_matrix_weights_by_hand_for_three() -> None:
    # phi_0 weights for M=3: |S|=0 -> 1/3, |S|=1 -> 1/6, |S|=2 -> 1/3
    w = shapley_matrix(3)
    assert w.shape == (8, 3)
    expected_col0 = [-1 / 3, 1 / 3, -1 / 6, 1 / 6, -1 / 6, 1 / 6, -1 / 3, 1 / 3]
    torch.testing.assert_close(w[:, 0], torch.tensor(expected_col0, dtype=torch.float64))


@settings(max_examples=60, deadline=None)
@given(
    m=st.integers(min_value=2, max_value=4),
    data=st.data(),
)
def test_efficiency_property(m: int, data: st.DataObject) -> None:
    floats = st.floats(min_value=-10, max_value=10, allow_nan=False, allow_infinity=False)
    values = data.draw(st.lists(floats, min_size=1 << m, max_size=1 << m))
    v = torch.tensor(values, dtype=torch.float64)
    phi = shapley(v)
    assert phi.shape == (m,)
    assert math.isclose(phi.sum().item(), values[-1] - values[0], rel_tol=1e-9, abs_tol=1e-9)


@settings(max_examples=30, deadline=None)
@given(
    m=st.integers(min_value=2, max_value=4),
    data=st.data(),
)
def test_equals_permutation_definition(m: int, data: st.DataObject) -> None:
    floats = st.floats(min_value=-5, max_value=5, allow_nan=False, allow_infinity=False)
    values = data.draw(st.lists(floats, min_size=1 << m, max_size=1 << m))
    phi = shapley(torch.tensor(values, dtype=torch.float64))
    expected = torch.tensor(permutation_shapley(values, m), dtype=torch.float64)
    torch.testing.assert_close(phi, expected, rtol=1e-9, atol=1e-9)


def test_null_player_and_symmetry() -> None:
    # modality 2 never changes the value: phi_2 = 0; modalities 0 and 1 are interchangeable.
    base = {0: 0.0, 1: 1.0, 2: 1.0, 3: 3.0}
    values = [base[c & 3] for c in range(8)]
    phi = shapley(torch.tensor(values, dtype=torch.float64))
    assert phi[2].item() == pytest.approx(0.0, abs=1e-12)
    assert phi[0].item() == pytest.approx(phi[1].item(), abs=1e-12)


def test_batched_and_dtype_kept() -> None:
    g = torch.Generator().manual_seed(0)
    for dtype in (torch.float32, torch.float64):
        v = torch.randn(2, 3, 8, generator=g).to(dtype)
        phi = shapley(v)
        assert phi.shape == (2, 3, 3) and phi.dtype == dtype
        for i, j in itertools.product(range(2), range(3)):
            torch.testing.assert_close(phi[i, j], shapley(v[i, j]))


@pytest.mark.parametrize("width", [1, 2, 3, 6, 12])
def test_rejects_non_power_of_two(width: int) -> None:
    with pytest.raises(ValueError, match=r"'values'.*2\*\*M"):
        shapley(torch.zeros(3, width))


def test_rejects_integer_values() -> None:
    with pytest.raises(TypeError, match=r"'values'.*floating"):
        shapley(torch.zeros(4, dtype=torch.long))


def test_subset_bookkeeping() -> None:
    assert subset_sizes(3).tolist() == [0, 1, 1, 2, 1, 2, 2, 3]
    assert masks_without(1, 3) == [0, 1, 4, 5]
    assert masks_with(1, 3) == [2, 3, 6, 7]
    assert membership(2).tolist() == [[False, False], [True, False], [False, True], [True, True]]
    with pytest.raises(ValueError, match=r"'j'"):
        masks_without(3, 3)


class CountingHead(torch.nn.Module):
    def __init__(self, d: int, k: int) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(d, k, dtype=torch.float64)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.linear(x)


def test_subset_logits_one_call_and_zeroed_features() -> None:
    torch.manual_seed(0)
    dims = [3, 2, 4]
    b = 5
    feats = [torch.randn(b, d, dtype=torch.float64) for d in dims]
    head = CountingHead(sum(dims), 6)
    with torch.no_grad():
        out = subset_logits(feats, head)
    assert head.calls == 1
    assert out.shape == (b, 8, 6)
    for c in range(8):
        parts = [f if (c >> j) & 1 else torch.zeros_like(f) for j, f in enumerate(feats)]
        with torch.no_grad():
            expected = head.linear(torch.cat(parts, dim=1))
        torch.testing.assert_close(out[:, c], expected)
    # the empty subset sees only zeros: the head's bias
    torch.testing.assert_close(out[:, 0], head.linear.bias.detach().expand(b, 6))


def test_absent_modality_is_zero_even_if_not_finite() -> None:
    feats = [torch.ones(2, 3), torch.full((2, 2), float("inf"))]
    head = torch.nn.Linear(5, 4)
    with torch.no_grad():
        out = subset_logits(feats, head)
    assert torch.isfinite(out[:, 0]).all() and torch.isfinite(out[:, 1]).all()


def test_subset_values_and_correct() -> None:
    feats = [torch.eye(2), torch.eye(2)]

    def head(x: torch.Tensor) -> torch.Tensor:  # logits = modality-0 block minus modality-1 block
        return x[:, :2] - x[:, 2:]

    probs = subset_values(feats, head, value="probs")
    torch.testing.assert_close(probs.sum(-1), torch.ones(2, 4))
    logits = subset_values(feats, head, value="logits")
    labels = torch.tensor([0, 1])
    correct = subset_correct(logits, labels)
    # sample 0: subset {0} predicts class 0 (right); {1} predicts class 1 (wrong); {} and {0,1}
    # are all-zero logits, argmax 0 (right).
    assert correct[0].tolist() == [True, True, False, True]
    assert correct[1].tolist() == [False, True, False, False]
    with pytest.raises(ValueError, match=r"'value'.*must be one of"):
        subset_values(feats, head, value="probability")


def test_subset_logits_validation() -> None:
    head = torch.nn.Linear(4, 2)
    with pytest.raises(ValueError, match=r"'features'"):
        subset_logits([torch.zeros(2, 4)], head)
    with pytest.raises(ValueError, match=r"features\[1\]"):
        subset_logits([torch.zeros(2, 2), torch.zeros(3, 2)], head)
    with pytest.raises(ValueError, match=r"'head'"):
        subset_logits([torch.zeros(2, 2), torch.zeros(2, 2)], lambda x: x.sum())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu() -> None:
    v = torch.randn(16, 8, dtype=torch.float64)
    torch.testing.assert_close(shapley(v.cuda()).cpu(), shapley(v))
    feats = [torch.randn(4, 3, device="cuda"), torch.randn(4, 2, device="cuda")]
    head = torch.nn.Linear(5, 3).cuda()
    with torch.no_grad():
        assert subset_logits(feats, head).device.type == "cuda"
