"""Per-sample statistics the Ledger stores, as pure tensor functions over stacked logits.

Place in the data flow: `Ledger.observe` stages the logits of each batch; at flush time the
Ledger reduces all staged rows at once with `head_statistics` (one pass of exp over the logits,
a few cheap row reductions), then keeps the last observation of each id (`last_occurrence`).
`per_sample_statistics` is the same computation for one batch, as a dict, for direct use.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ..signals import uniform_kl

_LOG_TINY = -69.0  # below log(1e-30) a float32 probability has lost precision

__all__ = [
    "head_statistics",
    "last_occurrence",
    "mean_pairwise_cosine",
    "per_sample_statistics",
]


def head_statistics(
    z: Tensor, labels: Tensor, m: int, *, overwrite: bool = False
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """For stacked logits `z` `[B, R, K]` (the first `m` heads unimodal) and int64 labels `[B]`:
    log-softmax at the label `[B, R]`, argmax == label `[B, R]` (the first maximal index, as
    `torch.argmax`), the mean pairwise cosine of the first `m` softmaxes `[B]` and their
    `uniform_kl` `[B, m]`.

    `overwrite=True` lets it use `z` as scratch space (a staging buffer about to be reused).
    """
    if z.dtype not in (torch.float32, torch.float64):
        z, overwrite = z.float(), True
    at = labels.view(-1, 1, 1).expand(-1, z.shape[1], 1)
    p = torch.softmax(z, -1)  # the one pass of exp; everything else reads p or z once
    sim, kl = mean_pairwise_cosine(p[:, :m]), uniform_kl(p[:, :m])
    log_true = p.gather(-1, at).log_()
    # argmax == label iff the label's logit beats every other class's; a tie (the label is a
    # maximum, but maybe not the first) is decided by looking at the earlier classes
    work = z if overwrite else z.clone()
    zy = work.gather(-1, at)
    other = work.scatter_(-1, at, -torch.inf).amax(-1, keepdim=True)
    correct = zy > other
    tie = zy == other
    if bool(tie.any()):
        correct = _break_ties(work, zy, labels, correct, tie)
    tiny = log_true < _LOG_TINY
    if bool(tiny.any()):  # p underflowed (or nearly): log p = z_y - logsumexp(z) exactly
        rows, heads, _ = tiny.nonzero(as_tuple=True)
        row = work[rows, heads].scatter_(-1, labels[rows].unsqueeze(1), zy[rows, heads])
        log_true[rows, heads] = zy[rows, heads] - row.logsumexp(-1, keepdim=True)
    return log_true.squeeze(-1), correct.squeeze(-1), sim, kl


def _break_ties(work: Tensor, zy: Tensor, labels: Tensor, correct: Tensor, tie: Tensor) -> Tensor:
    """Rows where the label's logit equals the best other class: correct iff no earlier class
    holds the same value (`work` has -inf at the label, so only other classes compare)."""
    rows, heads, _ = tie.nonzero(as_tuple=True)
    k = work.shape[-1]
    same = work[rows, heads] == zy[rows, heads]
    earlier = torch.arange(k, device=work.device) < labels[rows].unsqueeze(1)
    correct = correct.clone()
    correct[rows, heads, 0] = ~(same & earlier).any(-1)
    return correct


def mean_pairwise_cosine(x: Tensor) -> Tensor:
    """Mean cosine similarity over the M*(M-1)/2 pairs of vectors in `x` `[..., M, K]` -> `[...]`.

    The BSS measurer on modality softmaxes (M = 2: the plain cosine). Scale-invariant per vector.
    """
    m = x.shape[-2]
    gram = torch.bmm(x, x.mT) if x.dim() == 3 else x @ x.mT
    diag = gram.diagonal(dim1=-2, dim2=-1)
    if m == 2:
        return gram[..., 0, 1] * diag.prod(-1).rsqrt()
    inv = diag.rsqrt()
    cos = gram * inv.unsqueeze(-1) * inv.unsqueeze(-2)
    off = cos.sum((-2, -1)) - cos.diagonal(dim1=-2, dim2=-1).sum(-1)
    return off / (m * (m - 1))


def per_sample_statistics(
    unimodal_logits: Sequence[Tensor], labels: Tensor, fused_logits: Tensor | None = None
) -> dict[str, Tensor]:
    """The numbers the Ledger stores for one batch (int64 labels), as a dict of `[B]` / `[B, M]`
    tensors: true-class probability, cross-entropy, argmax correctness, KL to uniform per head,
    similarity."""
    m = len(unimodal_logits)
    heads = [*unimodal_logits] if fused_logits is None else [*unimodal_logits, fused_logits]
    with torch.no_grad():
        z = torch.stack(heads, 1)
        log_true, correct, sim, kl = head_statistics(z, labels, m, overwrite=True)
        out = {
            "true_prob": log_true[:, :m].exp(),
            "unimodal_loss": -log_true[:, :m],
            "correct": correct[:, :m],
            "similarity": sim,
            "uniform_kl": kl,
        }
        if fused_logits is not None:
            out.update(
                fused_true_prob=log_true[:, m].exp(),
                fused_loss=-log_true[:, m],
                fused_correct=correct[:, m],
            )
    return out


def last_occurrence(ids: Tensor, scratch: Tensor) -> Tensor | None:
    """Positions of the last occurrence of each distinct id in `ids` `[B]` (ascending), or None
    when no id repeats. `scratch` is an int64 `[N]` work buffer (its contents are clobbered)."""
    b = ids.shape[0]
    pos = torch.arange(b, device=ids.device)
    scratch.scatter_reduce_(0, ids, pos, "amax", include_self=False)
    keep = scratch.index_select(0, ids) == pos
    if bool(keep.all()):
        return None
    return keep.nonzero().squeeze(1)
