"""The staging ring: observed batches wait in preallocated host memory until the Ledger reduces
them all at once.

Place in the data flow: `Ledger.observe` copies each batch's stacked logits (and subset values,
and ids / labels given on a device) into the ring: from a CUDA device asynchronously into pinned
memory (no host sync), on the CPU with one copy. When the Ledger flushes, it drains the ring:
waits for the copies, runs the checks that needed the values of device tensors, and gets the
rows of every batch that passed, in observation order, to reduce in one go.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .checks import all_finite, finite_error, range_error, usable_logit_rows, usable_logits

__all__ = ["Drained", "StagedBatch", "StagingRing"]

RING_BYTES = 1 << 23  # the logits buffer (cache-sized) holds no more, unless one batch needs it


@dataclass(eq=False, slots=True)
class StagedBatch:
    """Rows `start:stop` of the ring: one observed batch and what is known about it."""

    start: int
    stop: int
    stamp: int  # (epoch + 1) << STEP_BITS | step, see table.py
    fused: bool  # its fused logits are in head M (else head M is not written)
    has_values: bool
    has_present: bool  # rows say which modalities they carried (else: all of them)
    ids: list[int] | Tensor | None  # given on the CPU (checked); None: in the ring (unchecked)
    labels: list[int] | Tensor | None
    finite: bool  # logits and values already checked for NaN / inf
    event: Any = None  # torch.cuda.Event recorded after the copies from the device


@dataclass
class Drained:
    """The rows of the staged batches that passed their checks, in observation order."""

    z: Tensor  # [n, R', K] logits (R' = M + 1 if any batch had fused logits, else M); scratch
    ids: Tensor  # [n] int64
    labels: Tensor  # [n] int64
    stamp: Tensor  # [n] int64
    fused: bool | Tensor  # every row has fused logits / none has / a [n] bool mask
    values: Tensor  # [n, 2**M] subset values (undefined in rows without)
    has_values: bool | Tensor
    present: bool | Tensor  # True: every row carried every modality; else a [n, M] bool mask
    calls: int  # the observe calls (batches) these rows come from
    error: ValueError | None  # the first failed check; that batch is left out
    distinct: bool  # known: no id repeats (else unknown)


class StagingRing:
    """Preallocated host buffers for up to `batches` observed batches (`heads` = M + 1 logits
    of `classes` each, `width` subset values): pinned when a batch comes from a CUDA device."""

    def __init__(self, heads: int, classes: int, width: int, batches: int) -> None:
        self.heads, self.classes, self.width, self.max_batches = heads, classes, width, batches
        self.z = torch.empty(0, heads, classes)
        self.values = torch.empty(0, width)
        self.present = torch.empty(0, heads - 1, dtype=torch.bool)
        self.ints = torch.empty(2, 0, dtype=torch.int64)  # ids | labels given on a device
        self.pinned = False
        self._slots: dict[tuple[int, int], Tensor] = {}
        self._clear()

    def _clear(self) -> None:
        self.batches: list[StagedBatch] = []
        self.rows = 0
        # kept up to date by `commit`, so that a drain does little per batch
        # batches with fused logits, with values, with a `present` mask
        self.fused = self.with_values = self.with_present = 0
        self.unchecked: list[StagedBatch] = []
        self.events: list[Any] = []
        self.id_lists: list[list[int]] | None = []  # None: some ids are not Python ints
        self.label_lists: list[list[int]] | None = []

    def __len__(self) -> int:
        return len(self.batches)

    def fits(self, b: int, dtype: torch.dtype, pinned: bool) -> bool:
        """Whether a batch of `b` rows can be staged now (an empty ring is reallocated to fit);
        False: drain the ring first."""
        if (
            self.z.dtype == dtype
            and (self.pinned or not pinned)
            and len(self.batches) < self.max_batches
            and self.rows + b <= self.z.shape[0]
        ):
            return True
        if self.batches:
            return False
        row = self.heads * self.classes * dtype.itemsize
        cap = max(b, min(b * self.max_batches, RING_BYTES // row))
        # normal tensors even when observe runs under torch.inference_mode (a scoring pass):
        # the flush later writes into them, possibly outside inference mode
        with torch.inference_mode(False):
            self.z = torch.empty(cap, self.heads, self.classes, dtype=dtype, pin_memory=pinned)
            self.values = torch.empty(cap, self.width, dtype=dtype, pin_memory=pinned)
            self.present = torch.empty(cap, self.heads - 1, dtype=torch.bool, pin_memory=pinned)
            self.ints = torch.empty(2, cap, dtype=torch.int64, pin_memory=pinned)
        self.pinned = pinned
        self._slots = {}
        return True

    def slot(self, b: int) -> Tensor:
        """The logits `[b, M + 1, K]` of the next `b` rows (see `values_slot`, `ints_slot`)."""
        key = (self.rows, b)
        view = self._slots.get(key)
        if view is None:  # the views of a ring of equal batches are made once
            if len(self._slots) > 4 * self.max_batches:  # batch sizes vary: keep it small
                self._slots.clear()
            view = self._slots[key] = self.z[self.rows : self.rows + b]
        return view

    def values_slot(self, b: int) -> Tensor:
        """The subset values `[b, 2**M]` of the next `b` rows."""
        return self.values[self.rows : self.rows + b]

    def present_slot(self, b: int) -> Tensor:
        """The modalities carried `[b, M]` (bool) of the next `b` rows."""
        return self.present[self.rows : self.rows + b]

    def ints_slot(self, b: int) -> Tensor:
        """The ids and labels `[2, b]` of the next `b` rows (for ids / labels on a device)."""
        return self.ints[:, self.rows : self.rows + b]

    def stage(
        self,
        heads: list[Tensor],
        values: Tensor | None,
        present: Tensor | None,
        ids: Tensor,
        labels: Tensor,
        checked: tuple[list[int] | Tensor | None, list[int] | Tensor | None],
        stamp: int,
        head_names: Sequence[str],
    ) -> None:
        """Copy one observed batch into the next rows (after `fits` said it fits) and keep it.

        CPU logits `[b, K]` (M or M + 1 heads) are stacked and checked for NaN / inf at once,
        raising the error that names the ids before anything is kept; tensors on a device are
        copied asynchronously into pinned memory and checked at `drain`. `checked`: the ids
        and the labels as range-checked on the CPU (None: given on a device, copied here)."""
        b, m = ids.shape[0], self.heads - 1
        on_cpu = heads[0].is_cpu
        if any(h.requires_grad for h in heads):
            heads = [h.detach() for h in heads]
        if values is not None and values.requires_grad:
            values = values.detach()
        fused = len(heads) > m
        z = self.slot(b)
        event = None
        if on_cpu:
            z = z if fused else z[:, :m]
            torch.stack(heads, 1, out=z)
            if not usable_logits(z):
                raise finite_error(ids, usable_logit_rows(z), head_names)
            if values is not None:
                v = self.values_slot(b)
                v.copy_(values)
                if not all_finite(v):
                    raise finite_error(ids, torch.isfinite(v).all(-1, keepdim=True), ["values"])
            if present is not None:
                self.present_slot(b).copy_(present)
        else:  # asynchronous copies into pinned memory; checked at drain
            if not fused:
                heads = [*heads, torch.zeros_like(heads[0])]
            z.copy_(torch.stack(heads, 1).to(z.dtype), non_blocking=True)
            if values is not None:
                v = self.values_slot(b)
                v.copy_(values.to(v.dtype), non_blocking=True)
            if present is not None:
                self.present_slot(b).copy_(present, non_blocking=True)
            ints = self.ints_slot(b)
            for row, t in enumerate((ids, labels)):
                if not t.is_cpu:
                    ints[row].copy_(t, non_blocking=True)
            event = torch.cuda.Event()
            event.record(torch.cuda.current_stream(heads[0].device))
        id_rows, label_rows = checked
        self.commit(
            StagedBatch(
                self.rows,
                self.rows + b,
                stamp,
                fused,
                values is not None,
                present is not None,
                id_rows,
                label_rows,
                on_cpu,
                event,
            )
        )

    def commit(self, batch: StagedBatch) -> None:
        """Keep the batch just written into `slot`."""
        self.batches.append(batch)
        self.rows = batch.stop
        self.fused += batch.fused
        self.with_values += batch.has_values
        self.with_present += batch.has_present
        if batch.ids is None or batch.labels is None or not batch.finite:
            self.unchecked.append(batch)
        if batch.event is not None:
            self.events.append(batch.event)
        if self.id_lists is not None and isinstance(batch.ids, list):
            self.id_lists.append(batch.ids)
        else:
            self.id_lists = None
        if self.label_lists is not None and isinstance(batch.labels, list):
            self.label_lists.append(batch.labels)
        else:
            self.label_lists = None

    def discard(self) -> None:
        """Drop every staged batch (letting copies in flight finish first)."""
        for event in self.events:
            event.synchronize()
        self._clear()

    def drain(self, num_samples: int, num_classes: int, head_names: Sequence[str]) -> Drained:
        """Empty the ring: wait for its copies, check what was not checked at observe time, and
        return the rows of the batches that passed. The returned logits are views of the ring:
        use them before the next batch is staged."""
        batches, n, m, count = self.batches, self.rows, self.heads - 1, len(self.batches)
        fused, with_values, unchecked = self.fused, self.with_values, self.unchecked
        with_present = self.with_present
        id_lists, label_lists = self.id_lists, self.label_lists
        for event in self.events:
            event.synchronize()
        self._clear()
        if 0 < fused < count:  # head M of batches without fused logits: a harmless 0
            for batch in batches:
                if not batch.fused:
                    self.z[batch.start : batch.stop, m].zero_()
        z = self.z[:n] if fused else self.z[:n, :m]
        ids = _column(id_lists, [b.ids for b in batches], self.ints[0], batches)
        labels = _column(label_lists, [b.labels for b in batches], self.ints[1], batches)
        distinct = id_lists is not None and len(set(chain.from_iterable(id_lists))) == n
        error, rejected = None, []
        if unchecked and not self._all_pass(z, ids, labels, unchecked, num_samples, num_classes):
            for batch in unchecked:
                err = self._check(batch, ids, labels, num_samples, num_classes, head_names)
                if err is not None:
                    rejected.append(batch)
                    error = error or err
        if rejected:
            batches = [b for b in batches if all(b is not r for r in rejected)]
        sizes = np.array([b.stop - b.start for b in batches], dtype=np.int64)
        stamps = np.array([b.stamp for b in batches], dtype=np.int64)
        stamp = torch.from_numpy(stamps.repeat(sizes))
        values = self.values[:n]
        present = self.present[:n]
        if with_present and with_present < count:  # rows of batches without a mask: all True
            for batch in batches:
                if not batch.has_present:
                    present[batch.start : batch.stop] = True
        if rejected:
            keep = [torch.arange(b.start, b.stop) for b in batches]
            rows = torch.cat(keep) if keep else torch.empty(0, dtype=torch.int64)
            z, ids, labels, values = z[rows], ids[rows], labels[rows], values[rows]
            present = present[rows]
            fused = sum(b.fused for b in batches)
            with_values = sum(b.has_values for b in batches)
            with_present = sum(b.has_present for b in batches)
        return Drained(
            z=z,
            ids=ids,
            labels=labels,
            stamp=stamp,
            fused=_rows_where(fused, batches, "fused", sizes),
            values=values,
            has_values=_rows_where(with_values, batches, "has_values", sizes),
            present=present if with_present else True,
            calls=len(batches),
            error=error,
            distinct=distinct and not rejected,
        )

    def _check(
        self,
        batch: StagedBatch,
        ids: Tensor,
        labels: Tensor,
        num_samples: int,
        num_classes: int,
        names: Sequence[str],
    ) -> ValueError | None:
        """The first failed check of one batch, in the order observe checks a CPU batch."""
        s, e = batch.start, batch.stop
        rows_ids, rows_labels = ids[s:e], labels[s:e]
        if batch.ids is None and _out_of_range(rows_ids, num_samples):
            return range_error("ids", rows_ids, rows_ids, num_samples)
        if batch.labels is None and _out_of_range(rows_labels, num_classes):
            return range_error("labels", rows_labels, rows_ids, num_classes)
        heads = self.heads if batch.fused else self.heads - 1
        z = self.z[s:e, :heads]
        if not batch.finite and not usable_logits(z):
            return finite_error(rows_ids, usable_logit_rows(z), names)
        v = self.values[s:e]
        if not batch.finite and batch.has_values and not all_finite(v):
            return finite_error(rows_ids, torch.isfinite(v).all(-1, keepdim=True), ["values"])
        return None

    def _all_pass(
        self, z: Tensor, ids: Tensor, labels: Tensor, unchecked: list[StagedBatch], n: int, k: int
    ) -> bool:
        """Whether every staged row is in range and finite (checked rows pass by construction;
        one reduction each, values batch by batch as they are rare)."""
        if _out_of_range(ids, n) or _out_of_range(labels, k) or not usable_logits(z):
            return False
        return all(all_finite(self.values[b.start : b.stop]) for b in unchecked if b.has_values)


def _out_of_range(t: Tensor, high: int) -> bool:
    lo, hi = torch.aminmax(t)
    return lo.item() < 0 or hi.item() >= high


def _column(
    lists: list[list[int]] | None,
    given: list[list[int] | Tensor | None],
    ring: Tensor,
    batches: list[StagedBatch],
) -> Tensor:
    """The ids (or labels) of all staged rows `[n]`: from the Python ints of every batch, or
    per batch from its ints, its copy, or the ring (given on a device)."""
    if lists is not None:
        flat = np.fromiter(chain.from_iterable(lists), dtype=np.int64)
        return torch.from_numpy(flat)
    pieces = [
        torch.tensor(g, dtype=torch.int64)
        if isinstance(g, list)
        else g
        if g is not None
        else ring[batch.start : batch.stop]
        for batch, g in zip(batches, given)
    ]
    return torch.cat(pieces)


def _rows_where(
    count: int, batches: list[StagedBatch], flag: str, sizes: np.ndarray
) -> bool | Tensor:
    """Whether rows have a per-batch `flag`: True (every row), False (none), or a bool mask."""
    if count == len(batches):
        return True
    if count == 0:
        return False
    return torch.from_numpy(np.array([getattr(b, flag) for b in batches]).repeat(sizes))
