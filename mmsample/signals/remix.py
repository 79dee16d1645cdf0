"""Data Remixing's assignment (Ma, Chen, Deng, ICML 2025): the modality each sample trains.

Place in the data flow: unimodal logits -> `uniform_kl` per modality (the Ledger stores it) ->
`assign_lowest` -> `mmsample.methods.Remix` plans each sample with its assigned modality only.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .checks import describe


def uniform_kl(probs: Tensor) -> Tensor:
    """`KL(p || uniform)` in bits, `sum_k p_k log2(p_k K)`, of probabilities `[..., K]` ->
    `[...]` (dtype kept), p clipped to [1e-9, 1], not renormalised: the authors' `kl_divergence`
    (Remix_ICML2025 train.py). Low: an unconfident, little-learned modality."""
    p = probs.clamp(1e-9, 1.0)
    return (p * torch.log2(p * probs.shape[-1])).sum(-1)


def assign_lowest(kl: Tensor, tie: int | None = None) -> Tensor:
    """int64 `[N]`: per row of `kl` `[N, M]` the column of the lowest value; a tie goes to
    column `tie` when it is among the lowest, else (and for `tie=None`) to the first, as
    `torch.argmin`."""
    pick = kl.argmin(1)
    return pick if tie is None else torch.where(kl[:, tie] == kl.amin(1), tie, pick)


def remix_assignment(unimodal_logits: Sequence[Tensor], tie: int | None = None) -> Tensor:
    """int64 `[N]`: each sample's modality, `argmin_j uniform_kl(softmax(z_j))` over M >= 2
    logits `[N, K]` (paper Sec. 3.2; ties: `assign_lowest`; the authors' two-modality code gives
    them to the visual one). ValueError naming the argument for fewer than 2 tensors, unequal
    shapes, non-floating or non-finite logits, or a `tie` that is not a modality index."""
    z = [] if isinstance(unimodal_logits, Tensor) else list(unimodal_logits)
    ok = len(z) >= 2 and all(isinstance(t, Tensor) and t.is_floating_point() for t in z)
    if not ok or any(t.ndim != 2 or t.shape != z[0].shape or not t.isfinite().all() for t in z):
        raise ValueError(
            "The 'unimodal_logits' argument of remix_assignment must be a list of M >= 2 finite "
            f"floating tensors [N, K] of one shape; got {[describe(t) for t in z] or z}."
        )
    if tie is not None and (isinstance(tie, bool) or tie not in range(len(z))):
        raise ValueError(f"The 'tie' argument of remix_assignment must be < {len(z)}; got {tie!r}")
    return assign_lowest(torch.stack([uniform_kl(torch.softmax(t, -1)) for t in z], 1), tie)
