"""Exact Shapley values of M modalities from the values of all 2**M modality subsets.

SMV and BMMAL both value each modality of a sample this way: the subset values `[..., 2**M]`
(bitmask-indexed, see `subsets`) come from the fusion head, and the Shapley value is a fixed
linear map of them, `phi = values @ W` with `W [2**M, M]` built once per (M, dtype, device).
"""

from __future__ import annotations

from functools import lru_cache
from math import factorial

import torch
from torch import Tensor

from .subsets import modalities_from_subsets

__all__ = ["shapley", "shapley_matrix"]


@lru_cache(maxsize=64)
def _matrix(num_modalities: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    m = num_modalities
    # weight of a coalition S of size s not containing j: s! (M - s - 1)! / M!, exact in float64
    weight = [factorial(s) * factorial(m - s - 1) / factorial(m) for s in range(m)]
    rows = []
    for c in range(1 << m):
        size = c.bit_count()
        # v(C) enters phi_j with +w(|C|-1) when j in C (as S + j) and -w(|C|) when j not in C
        rows.append([weight[size - 1] if (c >> j) & 1 else -weight[size] for j in range(m)])
    return torch.tensor(rows, dtype=torch.float64).to(device=device, dtype=dtype)


def shapley_matrix(
    num_modalities: int,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> Tensor:
    """The `[2**M, M]` matrix W with `shapley(values) == values @ W` (cached per M/dtype/device)."""
    if isinstance(num_modalities, bool) or not isinstance(num_modalities, int):
        raise TypeError(
            f"The 'num_modalities' parameter of shapley_matrix must be an int; "
            f"got {type(num_modalities).__name__}."
        )
    if num_modalities < 2:
        raise ValueError(
            f"The 'num_modalities' parameter of shapley_matrix must be >= 2; got {num_modalities}."
        )
    return _matrix(num_modalities, dtype, torch.device(device if device is not None else "cpu"))


def shapley(values: Tensor) -> Tensor:
    """Exact Shapley values `[..., M]` from the values of every modality subset `[..., 2**M]`.

    `phi_j = sum over S not containing j of |S|! (M-|S|-1)! / M! * (v(S + j) - v(S))`, with
    `values[..., C]` the value of subset mask C (bit j = modality j; entry 0 is v(empty)).
    """
    if not isinstance(values, Tensor):
        raise TypeError(
            f"The 'values' argument of shapley must be a tensor; got {type(values).__name__}."
        )
    if not values.is_floating_point():
        raise TypeError(
            f"The 'values' argument of shapley must be a floating tensor; got {values.dtype}."
        )
    if values.ndim < 1:
        raise ValueError("The 'values' argument of shapley must have a last dimension of 2**M.")
    m = modalities_from_subsets(values.shape[-1], "values", "shapley")
    return values @ _matrix(m, values.dtype, values.device)
