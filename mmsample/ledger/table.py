"""The Ledger's shared tables: their layout, and writing the rows of a flush into them.

Place in the data flow: the tables live in shared memory (DataLoader workers read them); the
Ledger writes a flush's drained rows with `Tables.write` (for an id seen in several rows, the last
row wins, per column group), merges them across ranks (sync.py) and checkpoints them.

Layout, for M modalities and R = M + 1 heads (the last one fused): `f` float32
[true_prob M | fused_true_prob | unimodal_loss M | fused_loss | similarity | values 2**M |
uniform_kl M] (NaN: never observed); `b` bool [correct M | fused_correct]; `i` int64
[label | last_seen | stamps] (-1 / 0: never), one stamp per column group: each modality's statistics (M groups), the
similarity (rows that carried every modality), the fused statistics and the subset values;
`count` int64 observations, of which `count_base` were already merged across ranks.

A row that did not carry modality j (`present`) leaves modality j's group as it was; the
similarity, fused statistics and values are written only from rows that carried every modality.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .staging import Drained
from .stats import last_occurrence

__all__ = ["STEP_BITS", "Tables", "stamp_groups"]

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
        i = torch.zeros((n, 2 + stamp_groups(m)), dtype=torch.int64)
        i[:, :2] = -1
        return cls(
            f=torch.full((n, 2 * r + 1 + (1 << m) + m), math.nan),
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
        """Write drained rows: `record` `[n, 2R'+1+M]` is [true_prob R' | loss R' | similarity |
        uniform_kl M] and `correct` `[n, R']` (R' = M, or R when some row has fused logits).
        Per id and column group the last row that writes the group wins; `scratch` is an int64
        `[N]` work buffer."""
        m = self.b.shape[1] - 1
        r, f, i = m + 1, self.f, self.i
        ids, stamp, distinct = rows.ids, rows.stamp, rows.distinct
        w = correct.shape[1]  # R'
        self.count.index_add_(0, ids, torch.ones_like(ids))
        ints = torch.stack([rows.labels, (stamp >> STEP_BITS) - 1], 1)
        pick = _last(ids, True, distinct, scratch)

        def last(rows_: bool | Tensor) -> Tensor | None:  # all rows: the pick made above
            return pick if rows_ is True else _last(ids, rows_, distinct, scratch)

        u_ids, u_ints = _take(pick, ids, ints)
        i[:, :2].index_copy_(0, u_ids, u_ints)
        present = rows.present
        if not isinstance(present, Tensor):  # every row carried every modality: one write
            u_rec, u_ok, u_stamp = _take(pick, record, correct, stamp)
            f[:, :m].index_copy_(0, u_ids, u_rec[:, :m])
            f[:, r : r + m].index_copy_(0, u_ids, u_rec[:, w : w + m])
            self.b[:, :m].index_copy_(0, u_ids, u_ok[:, :m])
            f[:, -m:].index_copy_(0, u_ids, u_rec[:, 2 * w + 1 :])
            i[:, 2 : 2 + m].index_copy_(0, u_ids, u_stamp.unsqueeze(1).expand(-1, m))
        else:
            for j in range(m):
                pick_j = last(present[:, j])
                j_ids, j_rec, j_ok, j_stamp = _take(pick_j, ids, record, correct, stamp)
                f[:, j].index_copy_(0, j_ids, j_rec[:, j])
                f[:, r + j].index_copy_(0, j_ids, j_rec[:, w + j])
                self.b[:, j].index_copy_(0, j_ids, j_ok[:, j])
                f[:, j - m].index_copy_(0, j_ids, j_rec[:, 2 * w + 1 + j])
                i[:, 2 + j].index_copy_(0, j_ids, j_stamp)
        full: bool | Tensor = present.all(1) if isinstance(present, Tensor) else True
        s_ids, s_rec, s_stamp = _take(last(full), ids, record, stamp)
        f[:, 2 * r].index_copy_(0, s_ids, s_rec[:, 2 * w])
        i[:, 2 + m].index_copy_(0, s_ids, s_stamp)
        if rows.fused is not False:
            f_ids, f_rec, f_ok, f_stamp = _take(
                last(_both(rows.fused, full)), ids, record, correct, stamp
            )
            f[:, m].index_copy_(0, f_ids, f_rec[:, m])
            f[:, r + m].index_copy_(0, f_ids, f_rec[:, r + m])
            self.b[:, m].index_copy_(0, f_ids, f_ok[:, m])
            i[:, 3 + m].index_copy_(0, f_ids, f_stamp)
        if rows.has_values is not False:
            v_ids, v_values, v_stamp = _take(
                last(_both(rows.has_values, full)), ids, rows.values, stamp
            )
            f[:, 2 * r + 1 : -m].index_copy_(0, v_ids, v_values.float())
            i[:, 4 + m].index_copy_(0, v_ids, v_stamp)


def stamp_groups(m: int) -> int:
    """Column groups with a stamp of their own: M modalities, similarity, fused, values."""
    return m + 3


def _both(a: bool | Tensor, b: bool | Tensor) -> bool | Tensor:
    """Rows selected by both (True: all rows; a bool mask otherwise)."""
    if a is True:
        return b
    if b is True:
        return a
    return a & b


def _last(ids: Tensor, rows: bool | Tensor, distinct: bool, scratch: Tensor) -> Tensor | None:
    """The rows (`True`: all; else a bool mask) that hold the last occurrence of their id among
    those rows, ascending; None: all rows, no id repeats (`distinct`: known not to)."""
    if rows is True:
        return None if distinct else last_occurrence(ids, scratch)
    if rows is False:
        return rows_none(ids)
    sel = rows.nonzero().squeeze(1)
    keep = None if distinct else last_occurrence(ids[sel], scratch)
    return sel if keep is None else sel[keep]


def rows_none(ids: Tensor) -> Tensor:
    """No rows: an empty selection."""
    return torch.zeros(0, dtype=torch.int64, device=ids.device)


def _take(rows: Tensor | None, *tensors: Tensor) -> list[Tensor]:
    """The given rows of each tensor (None: all of them)."""
    return list(tensors) if rows is None else [t.index_select(0, rows) for t in tensors]
