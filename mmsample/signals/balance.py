"""BSS (Guan et al.): the per-sample balance score and the root pacing function of its curriculum.

The training pass logs, per sample, the similarity of the unimodal predictions and the total loss
(`balance_similarity`, `balance_loss`: the Ledger stores these raw pieces); the BSS scheduler
min-max normalises them over the scored set into `balance_score` and ranks samples by it, then
`root_pacing` says what fraction of the ranking each epoch trains on.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .checks import check_labels, describe

__all__ = [
    "BALANCE_SCORES",
    "balance_loss",
    "balance_score",
    "balance_similarity",
    "min_max",
    "root_pacing",
]


def _check_logits(unimodal_logits: Sequence[Tensor], function: str) -> None:
    if isinstance(unimodal_logits, Tensor) or len(unimodal_logits) < 2:
        raise ValueError(
            f"The 'unimodal_logits' argument of {function} must be a sequence of M >= 2 "
            f"tensors [B, K], one per modality."
        )
    first = unimodal_logits[0]
    for j, t in enumerate(unimodal_logits):
        if not isinstance(t, Tensor) or not t.is_floating_point() or t.ndim != 2:
            got = describe(t)
            raise ValueError(
                f"unimodal_logits[{j}] of {function} must be a floating tensor [B, K]; got {got}."
            )
        if t.shape != first.shape:
            raise ValueError(
                f"unimodal_logits[{j}] of {function} must have the shape of unimodal_logits[0] "
                f"{tuple(first.shape)}; got {tuple(t.shape)}."
            )


def balance_similarity(unimodal_logits: Sequence[Tensor]) -> Tensor:
    """Per-sample `[B]` cosine similarity of the unimodal softmaxes (M > 2: mean over pairs)."""
    _check_logits(unimodal_logits, "balance_similarity")
    probs = [torch.softmax(t, dim=1) for t in unimodal_logits]
    pairs = [
        F.cosine_similarity(probs[i], probs[j], dim=1)
        for i in range(len(probs))
        for j in range(i + 1, len(probs))
    ]
    return torch.stack(pairs).mean(dim=0)


def balance_loss(
    unimodal_logits: Sequence[Tensor], fused_logits: Tensor, labels: Tensor, alpha: float = 0.2
) -> Tensor:
    """Per-sample `[B]` `L_total = (1 - alpha) CE(fused) + alpha * sum_j CE(unimodal j)`.

    The authors' code sums the losses unweighted (alpha = 0.5 up to a factor, which min-max
    normalisation removes) and uses 0.9 on the unimodal sum for CREMA-D (alpha = 0.9).
    """
    _check_logits(unimodal_logits, "balance_loss")
    if not 0 <= alpha <= 1:
        raise ValueError(f"The 'alpha' parameter of balance_loss must be in [0, 1]; got {alpha}.")
    shape = unimodal_logits[0].shape
    if (
        not isinstance(fused_logits, Tensor)
        or not fused_logits.is_floating_point()
        or fused_logits.shape != shape
    ):
        got = describe(fused_logits)
        raise ValueError(
            f"The 'fused_logits' argument of balance_loss must be [B, K] = {tuple(shape)}; "
            f"got {got}."
        )
    labels = check_labels(labels, shape[0], "balance_loss")
    unimodal = torch.stack(
        [F.cross_entropy(t, labels, reduction="none") for t in unimodal_logits]
    ).sum(dim=0)
    return (1 - alpha) * F.cross_entropy(fused_logits, labels, reduction="none") + alpha * unimodal


def min_max(x: Tensor) -> Tensor:
    """`(x - min) / (max - min)` over the last dim; all zeros where max == min (no spread)."""
    low = x.amin(dim=-1, keepdim=True)
    spread = x.amax(dim=-1, keepdim=True) - low
    safe = torch.where(spread > 0, spread, torch.ones_like(spread))
    return torch.where(spread > 0, (x - low) / safe, torch.zeros_like(x))


def _paper(sim: Tensor, loss: Tensor) -> Tensor:
    return min_max(sim) - min_max(loss)


def _reference(sim: Tensor, loss: Tensor) -> Tensor:
    return (1 - min_max(sim)) + min_max(loss)


# "paper": higher = more balanced (rank descending); "reference": the authors' code, which is
# 1 - paper and ranked ascending.
BALANCE_SCORES: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "paper": _paper,
    "reference": _reference,
}


def balance_score(
    unimodal_logits: Sequence[Tensor],
    fused_logits: Tensor,
    labels: Tensor,
    alpha: float = 0.2,
    variant: str = "paper",
) -> Tensor:
    """BSS balance score `[B]`, min-max normalised over the given batch.

    "paper": `Norm(sim) - Norm(L_total)` (higher = more balanced); "reference": the authors'
    `(1 - Norm(sim)) + Norm(L_total)` (lower = more balanced). Norm of a constant is 0.
    """
    if variant not in BALANCE_SCORES:
        raise ValueError(
            f"The 'variant' parameter of balance_score must be one of {sorted(BALANCE_SCORES)}; "
            f"got {variant!r}."
        )
    loss = balance_loss(unimodal_logits, fused_logits, labels, alpha)
    return BALANCE_SCORES[variant](balance_similarity(unimodal_logits), loss)


def root_pacing(t: float, l0: float = 0.1, t_grow: float = 40) -> float:
    """Fraction of the ranked data trained on at epoch t: `min(1, sqrt((1-l0^2)/t_grow t + l0^2))`."""
    if not t >= 0:
        raise ValueError(f"The 't' parameter of root_pacing must be >= 0; got {t}.")
    if not 0 < l0 <= 1:
        raise ValueError(f"The 'l0' parameter of root_pacing must be in (0, 1]; got {l0}.")
    if not t_grow > 0:
        raise ValueError(f"The 't_grow' parameter of root_pacing must be > 0; got {t_grow}.")
    return min(1.0, math.sqrt((1 - l0 * l0) / t_grow * t + l0 * l0))
