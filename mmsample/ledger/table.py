"""The Ledger's shared tables: their layout, and writing the rows of a flush into them.

Place in the data flow: the tables live in shared memory (DataLoader workers read them); the
Ledger writes a flush's drained rows with `Tables.write` (for an id seen in several rows, the last
row wins, per column group), merges them across ranks (sync.py) and checkpoints them.

Layout, for M modalities and R = M + 1 heads (the last one fused): `f` float32
[true_prob M | fused_true_prob | unimodal_loss M | fused_loss | similarity | values 2**M] (NaN:
never observed); `b` bool [correct M | fused_correct]; `i` int64 [label | last_seen | stamp of
the unimodal, fused and values column groups] (-1 / 0: never); `count` int64 observations, of
which `count_base` were already merged across ranks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .staging import Drained
from .stats import last_occurrence

__all__ = ["STEP_BITS", "Tables"]

STEP_BITS = 40  # stamp = (epoch + 1) << 40 | step: epochs below 2**23 - 1, steps below 2**40


@dataclass(eq=False)
class Tables:
    """The per-sample tables of a Ledger (see the module docstring for the columns)."""

    f: Tensor
    b: Tensor
    i: Tensor
    count: Tensor
    count_base: Tensor

    @classmethod
    def empty(cls, n: int, m: int) -> Tables:
        """Tables of `n` samples never observed, in shared memory."""
        r = m + 1
        i = torch.zeros((n, 5), dtype=torch.int64)
        i[:, :2] = -1
        return cls(
            f=torch.full((n, 2 * r + 1 + (1 << m)), math.nan),
            b=torch.zeros((n, r), dtype=torch.bool),
            i=i,
            count=torch.zeros(n, dtype=torch.int64),
            count_base=torch.zeros(n, dtype=torch.int64),
        ).share_memory_()

    def share_memory_(self) -> Tables:
        """Move the tables to shared memory (a no-op where they are)."""
        for t in (self.f, self.b, self.i, self.count, self.count_base):
            t.share_memory_()
        return self

    def write(self, rows: Drained, record: Tensor, correct: Tensor, scratch: Tensor) -> None:
        """Write drained rows: `record` `[n, 2R'+1]` is [true_prob R' | loss R' | similarity]
        and `correct` `[n, R']` (R' = M, or R when some row has fused logits). Per id and
        column group the last row wins; `scratch` is an int64 `[N]` work buffer."""
        m = self.b.shape[1] - 1
        r, f = m + 1, self.f
        ids, stamp, distinct = rows.ids, rows.stamp, rows.distinct
        self.count.index_add_(0, ids, torch.ones_like(ids))
        ints = torch.stack([rows.labels, (stamp >> STEP_BITS) - 1, stamp, stamp], 1)
        pick = _last(ids, True, distinct, scratch)
        u_ids, u_rec, u_ok, u_ints = _take(pick, ids, record, correct, ints)
        if rows.fused is True:  # every row: the record is the first 2R + 1 columns
            f[:, : 2 * r + 1].index_copy_(0, u_ids, u_rec)
            self.b.index_copy_(0, u_ids, u_ok)
            self.i[:, :4].index_copy_(0, u_ids, u_ints)
        else:
            w = correct.shape[1]  # R'
            f[:, :m].index_copy_(0, u_ids, u_rec[:, :m])
            f[:, r : r + m].index_copy_(0, u_ids, u_rec[:, w : w + m])
            f[:, 2 * r].index_copy_(0, u_ids, u_rec[:, 2 * w])
            self.b[:, :m].index_copy_(0, u_ids, u_ok[:, :m])
            self.i[:, :3].index_copy_(0, u_ids, u_ints[:, :3])
        if isinstance(rows.fused, Tensor):  # some rows: R' = R
            pick = _last(ids, rows.fused, distinct, scratch)
            f_ids, f_rec, f_ok, f_stamp = _take(pick, ids, record, correct, stamp)
            f[:, m].index_copy_(0, f_ids, f_rec[:, m])
            f[:, r + m].index_copy_(0, f_ids, f_rec[:, r + m])
            self.b[:, m].index_copy_(0, f_ids, f_ok[:, m])
            self.i[:, 3].index_copy_(0, f_ids, f_stamp)
        if rows.has_values is not False:
            pick = _last(ids, rows.has_values, distinct, scratch)
            v_ids, v_values, v_stamp = _take(pick, ids, rows.values, stamp)
            f[:, 2 * r + 1 :].index_copy_(0, v_ids, v_values.float())
            self.i[:, 4].index_copy_(0, v_ids, v_stamp)


def _last(ids: Tensor, rows: bool | Tensor, distinct: bool, scratch: Tensor) -> Tensor | None:
    """The rows (`True`: all; else a bool mask) that hold the last occurrence of their id among
    those rows, ascending; None: all rows, no id repeats (`distinct`: known not to)."""
    if rows is True:
        return None if distinct else last_occurrence(ids, scratch)
    sel = rows.nonzero().squeeze(1)  # type: ignore[union-attr]
    keep = None if distinct else last_occurrence(ids[sel], scratch)
    return sel if keep is None else sel[keep]


def _take(rows: Tensor | None, *tensors: Tensor) -> list[Tensor]:
    """The given rows of each tensor (None: all of them)."""
    return list(tensors) if rows is None else [t.index_select(0, rows) for t in tensors]
