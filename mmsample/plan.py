"""The plan: the only thing between a balancing method and a reader.

A plan says, for one epoch, how many items each global sample id yields and which modalities
each item carries (an integer bitmask, bit j = modality j in the dataset's modality order).
Streamed readers ask `items(id)` as each sample passes; indexed readers expand it into an
exact order with `expand`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol, runtime_checkable


@runtime_checkable
class Plan(Protocol):
    """Per-id item masks for one epoch: () drops the id, (mask,) yields it once, more repeats it."""

    def items(self, sample_id: int) -> Sequence[int]: ...


class EveryItem:
    """The identity plan: every id once, with every modality it has."""

    def __init__(self, num_modalities: int) -> None:
        if num_modalities < 1:
            raise ValueError(f"num_modalities must be >= 1; got {num_modalities}")
        self.full = (1 << num_modalities) - 1

    def items(self, sample_id: int) -> Sequence[int]:
        return (self.full,)


def expand(plan: Plan, ids: Iterable[int]) -> list[tuple[int, int]]:
    """Expand a plan over ids into the exact (id, mask) item list an indexed reader serves."""
    return [(i, m) for i in ids for m in plan.items(i)]
