"""Argument checks shared by the signal functions: how a bad argument is described in an error."""

from __future__ import annotations

from torch import Tensor


def describe(x: object) -> str:
    """`float32 (4, 3)` for a tensor, the type name for anything else: the 'got ...' of errors."""
    if isinstance(x, Tensor):
        return f"{x.dtype} {tuple(x.shape)} on {x.device}"
    return f"a {type(x).__name__}"
