"""BMMAL (Shen et al.): modality contributions, embedding weights and rank-one gradient embeddings.

Active-learning queries (BMMAL, BADGE) score an unlabeled pool from cached encoder features: the
fused head's softmax over every modality subset (`subset_values(..., value="probs")`) gives the
Shapley contributions and weights here; `gradient_embedding_factors` gives the two factors of the
last-layer gradient embedding `g = a (x) z` that `kmeans_pp` selects from without forming g.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .checks import describe
from .shapley import shapley
from .subsets import modalities_from_subsets

__all__ = ["bmmal_weights", "gradient_embedding_factors"]


def bmmal_weights(probs: Tensor) -> tuple[Tensor, Tensor]:
    """Contribution `Phi [B, M]` and embedding weights `w [B, M]` from subset softmaxes.

    `probs [B, 2**M, K]`: softmax of the fused head on every subset (mask 2**M - 1 = all).
    `V(C) = probs[C, y_hat]` at the full set's argmax `y_hat`; `phi = shapley(V)`;
    `Phi_j = |phi_j| / sum_k |phi_k|`; `w_j = 1 - (max_k Phi_k - Phi_j)` (the strongest gets 1;
    which of tied strongest modalities counts as "the" strongest does not change w). Where every
    phi is 0 (all subsets valued alike) Phi is uniform 1/M and every weight is 1.
    """
    if not isinstance(probs, Tensor) or not probs.is_floating_point() or probs.ndim != 3:
        got = describe(probs)
        raise ValueError(
            f"The 'probs' argument of bmmal_weights must be a floating tensor [B, 2**M, K]; "
            f"got {got}."
        )
    m = modalities_from_subsets(probs.shape[1], "probs", "bmmal_weights")
    y_hat = probs[:, -1, :].argmax(dim=-1)  # [B]
    index = y_hat[:, None, None].expand(-1, probs.shape[1], 1)
    values = probs.gather(2, index).squeeze(2)  # [B, 2**M]
    magnitude = shapley(values).abs()
    total = magnitude.sum(dim=1, keepdim=True)
    uniform = torch.full_like(magnitude, 1.0 / m)
    contribution = torch.where(total > 0, magnitude / torch.where(total > 0, total, 1.0), uniform)
    weights = 1.0 - (contribution.amax(dim=1, keepdim=True) - contribution)
    return contribution, weights


def gradient_embedding_factors(
    probs: Tensor, features: Sequence[Tensor], weights: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Factors `(a [N, K], z [N, sum D])` of the gradient embedding `g = a (x) z`, class-major.

    `a = p - onehot(argmax p)` for the full-set softmax `probs [N, K]`; `z = [w_0 f_0, ...,
    w_{M-1} f_{M-1}]` the cached features scaled by BMMAL's weights `[N, M]` (None: all 1, BADGE).
    """
    if not isinstance(probs, Tensor) or not probs.is_floating_point() or probs.ndim != 2:
        got = describe(probs)
        raise ValueError(
            "The 'probs' argument of gradient_embedding_factors must be a floating tensor "
            f"[N, K]; got {got}."
        )
    if isinstance(features, Tensor) or len(features) < 1:
        raise ValueError(
            "The 'features' argument of gradient_embedding_factors must be a sequence of "
            "tensors [N, D_j], one per modality."
        )
    n = probs.shape[0]
    for j, f in enumerate(features):
        if not isinstance(f, Tensor) or f.ndim != 2 or f.shape[0] != n or f.dtype != probs.dtype:
            got = describe(f)
            raise ValueError(
                f"features[{j}] of gradient_embedding_factors must be [N, D_j] with N = {n} and "
                f"dtype {probs.dtype}; got {got}."
            )
    if weights is not None and (
        not isinstance(weights, Tensor) or weights.shape != (n, len(features))
    ):
        got = describe(weights)
        raise ValueError(
            f"The 'weights' argument of gradient_embedding_factors must be [N, M] = "
            f"[{n}, {len(features)}]; got {got}."
        )
    a = probs.clone()
    a.scatter_add_(
        1,
        probs.argmax(dim=1, keepdim=True),
        torch.full((n, 1), -1.0, dtype=a.dtype, device=a.device),
    )
    # written into one preallocated [N, sum D]: no per-modality temporaries (peak memory)
    z = probs.new_empty((n, sum(f.shape[1] for f in features)))
    w = None if weights is None else weights.to(probs.dtype)
    col = 0
    for j, f in enumerate(features):
        part = z[:, col : col + f.shape[1]]
        if w is None:
            part.copy_(f)
        else:
            torch.mul(f, w[:, j : j + 1], out=part)
        col += f.shape[1]
    return a, z
