"""BMMAL contributions and weights on a hand-worked batch; gradient-embedding factors vs autograd."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mmsample.signals import bmmal_weights, gradient_embedding_factors

T = torch.float64


def two_modality_batch() -> torch.Tensor:
    # rows per sample: subsets empty, {a}, {v}, {a, v} (mask order), K = 3 classes
    s1 = [[1 / 3, 1 / 3, 1 / 3], [0.6, 0.3, 0.1], [0.3, 0.4, 0.3], [0.7, 0.2, 0.1]]
    s2 = [[0.25, 0.25, 0.5], [0.1, 0.8, 0.1], [0.4, 0.2, 0.4], [0.2, 0.5, 0.3]]
    s3 = [[0.2, 0.3, 0.5]] * 4
    s4 = [[0.0, 0.5, 0.5], [0.45, 0.1, 0.45], [0.45, 0.5, 0.05], [0.9, 0.05, 0.05]]
    return torch.tensor([s1, s2, s3, s4], dtype=T)


def test_two_modalities_by_hand() -> None:
    # s1: y_hat = 0, V = [1/3, 0.6, 0.3, 0.7]; phi_a = (0.6 - 1/3)/2 + (0.7 - 0.3)/2 = 1/3,
    #     phi_v = (0.3 - 1/3)/2 + (0.7 - 0.6)/2 = 1/30 -> Phi = [10/11, 1/11], w = [1, 2/11]
    # s2: y_hat = 1, V = [0.25, 0.8, 0.2, 0.5]; phi_a = 0.275 + 0.15 = 0.425,
    #     phi_v = -0.025 - 0.15 = -0.175 -> Phi = [17/24, 7/24], w = [1, 1 - 10/24]
    # s3: every subset alike -> phi = 0 -> Phi = [1/2, 1/2] (the documented guard), w = [1, 1]
    # s4: y_hat = 0, V = [0, 0.45, 0.45, 0.9] -> phi = [0.45, 0.45], a tie: Phi = 1/2, w = 1
    contribution, weights = bmmal_weights(two_modality_batch())
    expected_c = [[10 / 11, 1 / 11], [17 / 24, 7 / 24], [0.5, 0.5], [0.5, 0.5]]
    expected_w = [[1.0, 2 / 11], [1.0, 14 / 24], [1.0, 1.0], [1.0, 1.0]]
    torch.testing.assert_close(contribution, torch.tensor(expected_c, dtype=T))
    torch.testing.assert_close(weights, torch.tensor(expected_w, dtype=T))
    # the paper's two-modality form: the weaker gets 1 - rho, rho = |Phi_1 - Phi_2|
    rho = (contribution[:, 0] - contribution[:, 1]).abs()
    torch.testing.assert_close(weights.min(1).values, 1 - rho)


def test_three_modalities_glove_values() -> None:
    # V(C) = 0.9 if modality 0 and one of 1, 2 are in C, else 0 (y_hat = class 0 at the full set)
    # phi = 0.9 * [2/3, 1/6, 1/6] -> Phi = [2/3, 1/6, 1/6], w = [1, 1/2, 1/2]
    values = [0.9 if (c & 1) and (c & 6) else 0.0 for c in range(8)]
    probs = torch.tensor([[[v, 1 - v] for v in values]], dtype=T)
    contribution, weights = bmmal_weights(probs)
    torch.testing.assert_close(contribution, torch.tensor([[2 / 3, 1 / 6, 1 / 6]], dtype=T))
    torch.testing.assert_close(weights, torch.tensor([[1.0, 0.5, 0.5]], dtype=T))


def test_properties_on_random_batch() -> None:
    g = torch.Generator().manual_seed(3)
    probs = torch.softmax(torch.randn(64, 16, 7, generator=g), dim=-1)
    contribution, weights = bmmal_weights(probs)
    assert contribution.dtype == torch.float32
    torch.testing.assert_close(contribution.sum(1), torch.ones(64))
    assert (weights <= 1).all() and (weights >= 0).all()
    strongest = contribution.argmax(1)
    assert torch.equal(weights.gather(1, strongest[:, None]).squeeze(1), torch.ones(64))
    # a larger contribution never gets a smaller weight
    order_c = contribution.argsort(1)
    assert (weights.gather(1, order_c).diff(dim=1) >= -1e-6).all()


def test_validation() -> None:
    with pytest.raises(ValueError, match=r"'probs'.*\[B, 2\*\*M, K\]"):
        bmmal_weights(torch.zeros(4, 3))
    with pytest.raises(ValueError, match=r"'probs'.*2\*\*M"):
        bmmal_weights(torch.zeros(2, 6, 3))


def test_badge_factors_equal_autograd_gradient() -> None:
    # BADGE: gradient of CE(W x + b, y_hat) w.r.t. W is (p - onehot(y_hat)) (x) x
    g = torch.Generator().manual_seed(1)
    f0, f1 = torch.randn(5, 3, generator=g, dtype=T), torch.randn(5, 4, generator=g, dtype=T)
    head = torch.nn.Linear(7, 6, dtype=T)
    x = torch.cat([f0, f1], dim=1)
    probs = torch.softmax(head(x), dim=1).detach()
    a, z = gradient_embedding_factors(probs, [f0, f1])
    for i in range(5):
        head.zero_grad()
        loss = F.cross_entropy(head(x[i : i + 1]), probs[i : i + 1].argmax(1))
        loss.backward()
        assert head.weight.grad is not None
        torch.testing.assert_close(torch.outer(a[i], z[i]), head.weight.grad)


def test_bmmal_factors_scale_each_modality_block() -> None:
    probs = torch.tensor([[0.1, 0.7, 0.2]], dtype=T)
    f0, f1 = torch.tensor([[1.0, 2.0]], dtype=T), torch.tensor([[3.0]], dtype=T)
    a, z = gradient_embedding_factors(probs, [f0, f1], torch.tensor([[1.0, 0.25]], dtype=T))
    torch.testing.assert_close(a, torch.tensor([[0.1, -0.3, 0.2]], dtype=T))
    torch.testing.assert_close(z, torch.tensor([[1.0, 2.0, 0.75]], dtype=T))
    with pytest.raises(ValueError, match=r"'weights'.*\[1, 2\]"):
        gradient_embedding_factors(probs, [f0, f1], torch.ones(1, 3))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu() -> None:
    probs = two_modality_batch()
    c_gpu, w_gpu = bmmal_weights(probs.cuda())
    c_cpu, w_cpu = bmmal_weights(probs)
    torch.testing.assert_close(c_gpu.cpu(), c_cpu)
    torch.testing.assert_close(w_gpu.cpu(), w_cpu)
