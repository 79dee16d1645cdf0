"""Modality subsets as integer bitmasks, and the value of every subset from cached features.

Shared by SMV and BMMAL: a subset C of M modalities is an integer mask (bit j = modality j), and a
model's value for every subset of a batch is a tensor `[B, 2**M]` indexed by that mask. The values
come from ONE call of the fusion head over the 2**M masked feature sets (absent modalities' encoder
features zeroed), so valuation costs a head forward per subset, never an encoder forward.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from .checks import describe

__all__ = [
    "SUBSET_VALUES",
    "masks_with",
    "masks_without",
    "membership",
    "modalities_from_subsets",
    "subset_correct",
    "subset_logits",
    "subset_sizes",
    "subset_values",
]


def modalities_from_subsets(num_subsets: int, argument: str, function: str) -> int:
    """Return M for a last dimension of 2**M subsets; refuse anything but a power of two >= 4."""
    m = num_subsets.bit_length() - 1
    if num_subsets < 4 or (1 << m) != num_subsets:
        raise ValueError(
            f"The last dimension of '{argument}' in {function} must be 2**M subsets with M >= 2 "
            f"(4, 8, 16, ...), indexed by modality bitmask; got {num_subsets}."
        )
    return m


def _check_m(num_modalities: int, function: str) -> None:
    if isinstance(num_modalities, bool) or not isinstance(num_modalities, int):
        raise TypeError(
            f"The 'num_modalities' parameter of {function} must be an int; "
            f"got {type(num_modalities).__name__}."
        )
    if num_modalities < 1:
        raise ValueError(
            f"The 'num_modalities' parameter of {function} must be >= 1; got {num_modalities}."
        )


def membership(num_modalities: int, device: torch.device | str | None = None) -> Tensor:
    """Bool `[2**M, M]`: entry (C, j) says whether modality j is in subset C (bit j of C)."""
    _check_m(num_modalities, "membership")
    masks = torch.arange(1 << num_modalities, device=device)
    bits = torch.arange(num_modalities, device=device)
    return ((masks[:, None] >> bits[None, :]) & 1).bool()


def subset_sizes(num_modalities: int, device: torch.device | str | None = None) -> Tensor:
    """Long `[2**M]`: |C| for every subset mask C (its popcount)."""
    return membership(num_modalities, device).sum(dim=1)


def masks_without(j: int, num_modalities: int) -> list[int]:
    """The subset masks that do not contain modality j, ascending."""
    _check_m(num_modalities, "masks_without")
    if not 0 <= j < num_modalities:
        raise ValueError(
            f"The 'j' parameter of masks_without must be in [0, {num_modalities}); got {j}."
        )
    return [c for c in range(1 << num_modalities) if not (c >> j) & 1]


def masks_with(j: int, num_modalities: int) -> list[int]:
    """The subset masks that contain modality j, ascending."""
    return [c | (1 << j) for c in masks_without(j, num_modalities)]


def subset_logits(features: Sequence[Tensor], head: Callable[[Tensor], Tensor]) -> Tensor:
    """Logits `[B, 2**M, K]` of `head` on every subset of the M cached feature tensors `[B, D_j]`.

    Row C of each sample is the head applied to the concatenation `[f_0, ..., f_{M-1}]` with the
    features of modalities outside C replaced by zeros; all B * 2**M rows go through the head in
    one call (the head sees `[B * 2**M, sum D_j]`).
    """
    if isinstance(features, Tensor) or len(features) < 2:
        raise ValueError(
            "The 'features' argument of subset_logits must be a sequence of M >= 2 tensors "
            "[B, D_j], one per modality in modality order."
        )
    first = features[0]
    for j, f in enumerate(features):
        if not isinstance(f, Tensor) or f.ndim != 2:
            shape = describe(f)
            raise ValueError(f"features[{j}] of subset_logits must be a 2-D tensor; got {shape}.")
        if f.shape[0] != first.shape[0] or f.dtype != first.dtype or f.device != first.device:
            raise ValueError(
                f"features[{j}] of subset_logits must share the batch size, dtype and device of "
                f"features[0] ({first.shape[0]}, {first.dtype}, {first.device}); "
                f"got ({f.shape[0]}, {f.dtype}, {f.device})."
            )
    m = len(features)
    batch = first.shape[0]
    widths = torch.tensor([f.shape[1] for f in features], device=first.device)
    column_owner = torch.repeat_interleave(torch.arange(m, device=first.device), widths)
    keep = membership(m, first.device)[:, column_owner]  # [2**M, sum D]
    x = torch.cat(list(features), dim=1)  # [B, sum D]
    stacked = torch.where(
        keep[None], x[:, None, :], torch.zeros((), dtype=x.dtype, device=x.device)
    )
    logits = head(stacked.reshape(batch << m, x.shape[1]))
    if not isinstance(logits, Tensor) or logits.ndim != 2 or logits.shape[0] != batch << m:
        got = describe(logits)
        raise ValueError(
            f"The 'head' of subset_logits must map [N, sum D] to logits [N, K]; given "
            f"N = {batch << m} rows it returned {got}."
        )
    return logits.reshape(batch, 1 << m, logits.shape[1])


def _probs(logits: Tensor) -> Tensor:
    return torch.softmax(logits, dim=-1)


def _log_probs(logits: Tensor) -> Tensor:
    return torch.log_softmax(logits, dim=-1)


def _identity(logits: Tensor) -> Tensor:
    return logits


SUBSET_VALUES: dict[str, Callable[[Tensor], Tensor]] = {
    "logits": _identity,
    "probs": _probs,
    "log_probs": _log_probs,
}


def subset_values(
    features: Sequence[Tensor], head: Callable[[Tensor], Tensor], value: str = "probs"
) -> Tensor:
    """`[B, 2**M, K]` head outputs for every subset: raw logits, softmax ("probs", BMMAL's input)
    or log-softmax, from one batched call of the head."""
    if value not in SUBSET_VALUES:
        raise ValueError(
            f"The 'value' parameter of subset_values must be one of {sorted(SUBSET_VALUES)}; "
            f"got {value!r}."
        )
    return SUBSET_VALUES[value](subset_logits(features, head))


def subset_correct(logits: Tensor, labels: Tensor) -> Tensor:
    """Bool `[B, 2**M]`: is the prediction (argmax) of subset C correct; SMV's input."""
    if logits.ndim != 3:
        raise ValueError(
            f"The 'logits' argument of subset_correct must be [B, 2**M, K]; "
            f"got {tuple(logits.shape)}."
        )
    modalities_from_subsets(logits.shape[1], "logits", "subset_correct")
    if labels.shape != logits.shape[:1] or labels.is_floating_point() or labels.is_complex():
        raise ValueError(
            f"The 'labels' argument of subset_correct must be integer class indices "
            f"[B] = [{logits.shape[0]}]; got {labels.dtype} {tuple(labels.shape)}."
        )
    return logits.argmax(dim=-1) == labels[:, None]
