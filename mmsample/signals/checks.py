"""Argument checks shared by the signal functions: how a bad argument is described in an error."""

from __future__ import annotations

import torch
from torch import Tensor


def describe(x: object) -> str:
    """`float32 (4, 3)` for a tensor, the type name for anything else: the 'got ...' of errors."""
    if isinstance(x, Tensor):
        return f"{x.dtype} {tuple(x.shape)} on {x.device}"
    return f"a {type(x).__name__}"


def check_labels(labels: object, batch: int, function: str) -> Tensor:
    """Return `labels` as long `[B]` class indices, or raise naming the argument of `function`."""
    if (
        not isinstance(labels, Tensor)
        or labels.shape != (batch,)
        or labels.is_floating_point()
        or labels.dtype == torch.bool
    ):
        raise ValueError(
            f"The 'labels' argument of {function} must be integer class indices [B] = "
            f"[{batch}]; got {describe(labels)}."
        )
    return labels.long()
