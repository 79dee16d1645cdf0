"""The plan: the only thing between a balancing method and the loader.

A plan says, for one epoch, how many items each global sample id yields and which modalities
each item carries (an integer bitmask, bit j = modality j in the dataset's modality order). A
plan may also fix the epoch's sequence with `order()` (int64 ids, each id as often as it has
items; its k-th occurrence is its item k): the indexed loader yields exactly that order. Its
`groups()` cut it into runs no batch mixes, each split over the ranks on its own (Remix).

`Plan` (also named `ArrayPlan`) holds per-id item counts and the items' masks as arrays, so a
plan of 200,000 ids is a few numpy arrays that reach loader workers without Python objects per
id. Every method returns one; `Plan.every` is the plain plan (every id once, every modality);
`TablePlan` writes a small fixed plan by hand and `to_plan` turns it into one. The loader
(`mmsample.loader`) is the only applier of a plan; the schedule (`mmsample.schedule`) lays it
out over ranks, workers and positions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


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
        """The item masks of `sample_id` (`(full,)` for an id the table does not list)."""
        return self.table.get(sample_id, (self.full,))

    def to_plan(self, ids: np.ndarray, num_ids: int) -> ArrayPlan:
        """The table as an `ArrayPlan` over `ids` (ascending, unique) in an id space of
        `num_ids`: listed ids as the table says, the others once with `full`. Ids the table
        lists but `ids` lacks yield nothing (they are not in the dataset)."""
        ids = np.unique(np.asarray(ids, dtype=np.int64))
        counts = np.zeros(num_ids, dtype=np.int64)
        masks: list[int] = []
        for i in ids.tolist():
            row = self.items(i)
            counts[i] = len(row)
            masks.extend(row)
        return ArrayPlan(counts, np.asarray(masks, dtype=np.int64))


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class ArrayPlan:
    """A plan held as arrays: `counts[id]` items for each id below `len(counts)` (ids beyond:
    none), their masks `masks[offsets[id]:offsets[id + 1]]` in item order, and optionally the
    epoch's sequence `order` (int64 ids; each id exactly `counts[id]` times), cut into runs of
    `groups` (lengths >= 1 summing to `len(order)`; `mmsample.schedule.rank_batches`).

    Raises ValueError for negative counts, a `masks` length other than `counts.sum()`, negative
    masks, an `order` that does not list each id exactly `counts[id]` times, or bad `groups`.

    Example: ids 0..3, id 1 dropped, id 2 twice (the second item carrying modality 1 only)::

        ArrayPlan(counts=[1, 0, 2, 1], masks=[3, 3, 2, 3])
    """

    def __init__(
        self,
        counts: Sequence[int] | np.ndarray,
        masks: Sequence[int] | np.ndarray,
        order: Sequence[int] | np.ndarray | None = None,
        groups: Sequence[int] | np.ndarray | None = None,
    ) -> None:
        c = np.ascontiguousarray(counts, dtype=np.int64)
        m = np.ascontiguousarray(masks, dtype=np.int64)
        if c.ndim != 1 or (len(c) and int(c.min()) < 0):
            raise ValueError(
                f"The 'counts' parameter of ArrayPlan must be a 1-D array of item counts >= 0; "
                f"got shape {c.shape}, min {int(c.min()) if c.size else None}."
            )
        total = int(c.sum())
        if m.shape != (total,):
            raise ValueError(
                f"The 'masks' parameter of ArrayPlan must hold counts.sum() = {total} masks (one "
                f"per item, ids in ascending order); got shape {m.shape}."
            )
        if total and int(m.min()) < 0:
            raise ValueError("The 'masks' parameter of ArrayPlan must hold masks >= 0.")
        self._counts = c
        self._masks = m
        self._offsets = np.concatenate([np.zeros(1, dtype=np.int64), np.cumsum(c)])
        self._order: np.ndarray | None = None
        if order is not None:
            o = np.ascontiguousarray(order, dtype=np.int64)
            inside = o.ndim == 1 and (o.size == 0 or (int(o.min()) >= 0 and int(o.max()) < len(c)))
            if not inside or not np.array_equal(np.bincount(o, minlength=len(c)), c):
                raise ValueError(
                    "The 'order' parameter of ArrayPlan must list every id exactly counts[id] "
                    f"times ({total} entries, ids in [0, {len(c)})); got {o.size} entries."
                )
            self._order = o
        self._groups: np.ndarray | None = None
        if groups is not None:
            g = np.ascontiguousarray(groups, dtype=np.int64)
            if self._order is None or (g.size and g.min() < 1) or g.sum() != total or g.ndim != 1:
                raise ValueError(
                    "The 'groups' parameter of ArrayPlan needs an 'order' and must be lengths >= "
                    f"1 summing to its {total} entries; got {g.tolist()}."
                )
            self._groups = g

    @classmethod
    def every(cls, ids: np.ndarray, num_ids: int, full: int) -> ArrayPlan:
        """The plain plan: each of `ids` (unique, in [0, num_ids)) once with mask `full`.
        ValueError naming the parameter for `full` < 1 or an id outside the range."""
        ids = np.asarray(ids, dtype=np.int64)
        if not _is_int(full) or full < 1:
            raise ValueError(
                f"The 'full' parameter of Plan.every must be an int >= 1; got {full!r}."
            )
        if ids.size and (int(ids.min()) < 0 or int(ids.max()) >= num_ids):
            raise ValueError(
                f"The 'ids' parameter of Plan.every must hold ids in [0, num_ids={num_ids}); "
                f"got ids {int(ids.min())}..{int(ids.max())}."
            )
        counts = np.zeros(num_ids, dtype=np.int64)
        counts[ids] = 1
        return cls(counts, np.full(len(ids), int(full), dtype=np.int64))

    @property
    def num_ids(self) -> int:
        """Length of the id range the plan covers (ids at or beyond it yield nothing)."""
        return len(self._counts)

    @property
    def masks(self) -> np.ndarray:
        """int64 `[items]`: every item's mask, ids ascending, items in order (read-only view)."""
        view = self._masks.view()
        view.flags.writeable = False
        return view

    def items(self, sample_id: int) -> Sequence[int]:
        if not 0 <= sample_id < len(self._counts):
            return ()
        lo, hi = self._offsets[sample_id], self._offsets[sample_id + 1]
        return tuple(self._masks[lo:hi].tolist())

    def counts(self, ids: np.ndarray) -> np.ndarray:
        """int64 items per id for an array of ids (vectorised `len(items(id))`)."""
        ids = np.asarray(ids, dtype=np.int64)
        inside = (ids >= 0) & (ids < len(self._counts))
        out = np.zeros(len(ids), dtype=np.int64)
        out[inside] = self._counts[ids[inside]]
        return out

    def first_items(self, ids: np.ndarray) -> np.ndarray:
        """int64 position in `masks` of each id's first item (vectorised; ids must be covered)."""
        return self._offsets[np.asarray(ids, dtype=np.int64)]

    def order(self) -> np.ndarray | None:
        """The epoch's sequence of ids (read-only), or None: the loader chooses the order."""
        if self._order is None:
            return None
        view = self._order.view()
        view.flags.writeable = False
        return view

    def groups(self) -> np.ndarray | None:
        """Lengths of the consecutive groups of `order()`, or None: one group."""
        return None if self._groups is None else self._groups.copy()

    def arrays(self) -> dict[str, np.ndarray]:
        """The plan as plain arrays (`ArrayPlan(**plan.arrays())` rebuilds it)."""
        out = {"counts": self._counts, "masks": self._masks}
        if self._order is not None:
            out["order"] = self._order
        if self._groups is not None:
            out["groups"] = self._groups
        return out

    def __eq__(self, other: Any) -> bool:
        if not isinstance(other, ArrayPlan):
            return NotImplemented
        mine, theirs = self.arrays(), other.arrays()
        return mine.keys() == theirs.keys() and all(
            np.array_equal(mine[k], theirs[k]) for k in mine
        )

    def __hash__(self) -> int:
        return hash((len(self._counts), int(self._masks.sum()), len(self._masks)))

    def __repr__(self) -> str:
        ordered = "" if self._order is None else ", ordered"
        ordered += "" if self._groups is None else f", {len(self._groups)} groups"
        return f"ArrayPlan(ids={len(self._counts)}, items={len(self._masks)}{ordered})"


Plan = ArrayPlan  # the plan type every method returns and the loader applies
