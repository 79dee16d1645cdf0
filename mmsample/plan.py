"""The plan: the only thing between a balancing method and a reader.

A plan says, for one epoch, how many items each global sample id yields and which modalities
each item carries (an integer bitmask, bit j = modality j in the dataset's modality order).
Streamed readers ask `items(id)` as each sample passes; indexed readers expand it into an
exact order with `expand`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
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


class TablePlan:
    """A plan written out as a table: `table[id]` is the tuple of item masks of that id (`()`
    drops it, two masks yield it twice); ids not listed yield one item with mask `full`.

    `TablePlan({3: (), 5: (0b01, 0b11)}, full=0b11)`: id 3 dropped, id 5 twice (first with
    modality 0 only), every other id once with both modalities. Raises ValueError naming the
    parameter for a non-int id or mask, a negative mask or `full` < 1.
    """

    def __init__(self, table: Mapping[int, Sequence[int]], full: int = 0b11) -> None:
        if not isinstance(table, Mapping):
            raise ValueError(
                f"The 'table' parameter of TablePlan must be a mapping id -> tuple of item "
                f"masks; got {type(table).__name__}."
            )
        if not _is_int(full) or full < 1:
            raise ValueError(
                f"The 'full' parameter of TablePlan must be an int >= 1; got {full!r}."
            )
        rows: dict[int, tuple[int, ...]] = {}
        for sample_id, masks in table.items():
            if isinstance(masks, int | str) or not isinstance(masks, Sequence):
                raise ValueError(
                    f"The 'table' parameter of TablePlan: table[{sample_id!r}] must be a tuple "
                    f"of item masks, e.g. ({masks!r},) for one item; got {masks!r}."
                )
            if not _is_int(sample_id) or not all(_is_int(m) and m >= 0 for m in masks):
                raise ValueError(
                    f"The 'table' parameter of TablePlan must map int ids to ints >= 0 "
                    f"(modality bitmasks); got {sample_id!r}: {masks!r}."
                )
            rows[int(sample_id)] = tuple(int(m) for m in masks)
        self.table, self.full = rows, int(full)

    def items(self, sample_id: int) -> tuple[int, ...]:
        return self.table.get(sample_id, (self.full,))


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def expand(plan: Plan, ids: Iterable[int]) -> list[tuple[int, int]]:
    """Expand a plan over ids into the exact (id, mask) item list an indexed reader serves."""
    return [(i, m) for i in ids for m in plan.items(i)]
