"""Modality subsets as integer bitmasks, and the value of every subset from cached features.

Shared by SMV and BMMAL: a subset C of M modalities is an integer mask (bit j = modality j), and a
model's value for every subset of a batch is a tensor `[B, 2**M]` indexed by that mask. The values
come from ONE call of the fusion head over the 2**M masked feature sets (absent modalities' encoder
features zeroed), so valuation costs a head forward per subset, never an encoder forward.

A subset whose logits give no prediction (a NaN, a +inf, or -inf for every class: a cosine head
on zeroed features divides by a zero norm) counts as wrong: `subset_correct` gives False and
`subset_values` zero probabilities (log-probabilities -inf) there, with one
`NonFiniteSubsetWarning` per call naming the sample ids. -inf for some classes is a masked class
(probability 0), a prediction like any other. The empty subset (mask 0) counts as wrong too but
is never warned about: its value is 0 by definition.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from ..errors import MmsampleWarning
from .checks import describe

__all__ = [
    "SUBSET_VALUES",
    "NonFiniteSubsetWarning",
    "finite_subsets",
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


class NonFiniteSubsetWarning(MmsampleWarning, RuntimeWarning):
    """Some modality subsets' logits give no prediction (NaN, +inf, or -inf for every class);
    they count as wrong. The message names the sample ids and the subset masks."""


_SHOWN = 8  # ids named in a warning


def finite_subsets(
    logits: Tensor, ids: Tensor | None = None, function: str = "finite_subsets"
) -> Tensor:
    """Bool `[B, 2**M]`: whether subset C's logits `[B, 2**M, K]` give a prediction (no NaN,
    no +inf, at least one finite logit; -inf for some classes is a masked class, allowed).

    Where a subset other than the empty one does not, warns once (`NonFiniteSubsetWarning`,
    from `function`) naming the sample `ids` `[B]` (batch rows when None) and the subset masks:
    those subsets count as wrong. One reduction; on CUDA one host sync, for the warning.
    ValueError naming `function`'s argument for logits that are not a floating `[B, 2**M, K]`.
    """
    return _finite(logits, ids, function)


def _finite(logits: Tensor, ids: Tensor | None, function: str) -> Tensor:
    """`finite_subsets`, warning at the caller of the public function that called it."""
    if not isinstance(logits, Tensor) or logits.ndim != 3 or not logits.is_floating_point():
        raise ValueError(
            f"The 'logits' argument of {function} must be a floating tensor [B, 2**M, K]; got "
            f"{describe(logits)}."
        )
    finite = torch.isfinite(logits.amax(dim=-1))  # NaN, +inf or all -inf show in the maximum
    bad = ~finite[:, 1:]  # the empty subset's value is 0 whatever its logits
    if bool(bad.any()):
        rows = bad.any(dim=1).nonzero().squeeze(1).cpu()
        masks = (bad.any(dim=0).nonzero().squeeze(1) + 1).tolist()
        named = "rows" if ids is None else "ids"
        shown = (rows if ids is None else ids.reshape(-1).cpu()[rows]).tolist()
        listed = ", ".join(map(str, shown[:_SHOWN])) + (", ..." if len(shown) > _SHOWN else "")
        warnings.warn(
            f"{function}: the logits of subsets {masks} (modality bitmasks) are NaN, +inf or "
            f"-inf for every class for {len(shown)} sample(s), {named} [{listed}]; they count "
            "as wrong (no prediction). A cosine head on zeroed features does this; NaN for "
            "every subset means a diverged model.",
            NonFiniteSubsetWarning,
            stacklevel=3,
        )
    return finite


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
    features: Sequence[Tensor],
    head: Callable[[Tensor], Tensor],
    value: str = "probs",
    ids: Tensor | None = None,
) -> Tensor:
    """`[B, 2**M, K]` head outputs for every subset: raw logits, softmax ("probs", BMMAL's input)
    or log-softmax, from one batched call of the head.

    A subset whose logits give no prediction (`finite_subsets`: NaN, +inf, -inf for every
    class) gets probabilities 0 ("probs") or -inf ("log_probs") for every class, with one
    `NonFiniteSubsetWarning` naming `ids` `[B]`; "logits" are returned as the head gave them.
    """
    if value not in SUBSET_VALUES:
        raise ValueError(
            f"The 'value' parameter of subset_values must be one of {sorted(SUBSET_VALUES)}; "
            f"got {value!r}."
        )
    logits = subset_logits(features, head)
    out = SUBSET_VALUES[value](logits)
    if value == "logits":
        return out
    finite = _finite(logits, ids, "subset_values")
    fill = torch.full((), 0.0 if value == "probs" else float("-inf"), dtype=out.dtype)
    return torch.where(finite[..., None], out, fill.to(out.device))


def subset_correct(logits: Tensor, labels: Tensor, ids: Tensor | None = None) -> Tensor:
    """Bool `[B, 2**M]`: is the prediction (argmax) of subset C correct; SMV's input
    (`subset_correct(...) * subset_sizes(M)` are SMV's values `v[C] = |C|` if right, else 0).

    A subset whose logits give no prediction (NaN, +inf, or -inf for every class) is wrong, not
    argmax's pick: one `NonFiniteSubsetWarning` per call names the sample `ids` `[B]` (batch
    rows when None) and the subsets (see `finite_subsets`).
    """
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
    if ids is not None and (not isinstance(ids, Tensor) or ids.shape != labels.shape):
        raise ValueError(
            f"The 'ids' argument of subset_correct must be the sample ids [B] = "
            f"[{logits.shape[0]}] or None; got {describe(ids)}."
        )
    finite = _finite(logits, ids, "subset_correct")
    return (logits.argmax(dim=-1) == labels[:, None]) & finite
