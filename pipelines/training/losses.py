"""The training step's loss: the fused head's cross-entropy plus the unimodal heads' terms.

Place in the data flow: model outputs (fused logits, unimodal logits) and the rows' modality
masks -> **loss** -> backward. `LOSSES[name](fused, unimodal, labels, present, epoch, args)`:
"plain" trains the probes on the rows carrying their modality (their features are detached, so
this term never reaches the encoders); "remix" is Data Remixing's loss (Ma, Chen, Deng, ICML
2025, the authors' `train.py`), whose unimodal heads train the encoders.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence

import torch.nn.functional as F
from torch import Tensor


def head_terms(unimodal: Sequence[Tensor], labels: Tensor, present: Tensor) -> Tensor:
    """`sum_j sum_{i carries j} CE(z_i^(j), y_i) / B`: each head's cross-entropy summed over the
    rows carrying its modality (`present` bool `[B, M]`), divided by the batch's B rows."""
    total = labels.new_zeros((), dtype=unimodal[0].dtype)
    for j, z in enumerate(unimodal):
        rows = present[:, j]
        if bool(rows.any()):
            total = total + F.cross_entropy(z[rows], labels[rows], reduction="sum")
    return total / len(labels)


def plain_loss(
    fused: Tensor,
    unimodal: Sequence[Tensor],
    labels: Tensor,
    present: Tensor,
    epoch: int,
    args: argparse.Namespace,
) -> Tensor:
    """`CE(fused) + sum_j CE(probe j over the rows carrying j)` (each probe's mean)."""
    loss = F.cross_entropy(fused, labels)
    for j, z in enumerate(unimodal):
        rows = present[:, j]
        if bool(rows.any()):
            loss = loss + F.cross_entropy(z[rows], labels[rows])
    return loss


def remix_loss(
    fused: Tensor,
    unimodal: Sequence[Tensor],
    labels: Tensor,
    present: Tensor,
    epoch: int,
    args: argparse.Namespace,
) -> Tensor:
    """Data Remixing: during the `--remix-warmup` epochs `CE(fused) + 0.5 sum_j CE(head j)`
    (the authors' alpha = beta = 0.5), then `CE(fused) + gamma CE(the assigned head)` with gamma
    `--remix-gamma` (their gamma1 = gamma2 = 1). A remixed row carries only its assigned
    modality, so both are `CE(fused) + w * head_terms(...)`: on a batch of one modality (indexed
    mode) the assigned head's mean, as the authors; streamed batches may mix modalities."""
    weight = 0.5 if epoch < args.remix_warmup else args.remix_gamma
    return F.cross_entropy(fused, labels) + weight * head_terms(unimodal, labels, present)


LOSSES: dict[str, Callable[..., Tensor]] = {"plain": plain_loss, "remix": remix_loss}
