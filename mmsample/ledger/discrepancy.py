"""DUS's cumulative discrepancy as the Ledger keeps it: a `mmsample.signals.CumulativeMean` of
each observe call's per-modality sum of the label's probability.

Place in the data flow: the Ledger's flush hands over the drained rows' label probabilities
(`add`); `Ledger.sync()` sums the ranks' running means (`sync`); DUS reads the result through
`Ledger.cumulative_discrepancy` at the next epoch; the Ledger's state saves it (`state`, `load`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from ..signals.discrepancy import CumulativeMean
from .sync import collective_device

SAVED = ("discrepancy_count", "discrepancy_mean", "discrepancy_synced")


class CumulativeDiscrepancy:
    """`S^(j)` (DUS paper): the running mean over observe calls of `s^(j) = sum_i p^(j)_{i, y_i}`
    over the rows carrying modality j (`S_t = (t-1)/t S_{t-1} + s_t / t`; zeros before any
    call), float64 `[M]`; after `sync` under torch.distributed, the sum over ranks of each
    rank's running mean as of that sync."""

    def __init__(self, num_modalities: int) -> None:

        self.num_modalities = num_modalities
        self.mean = CumulativeMean(num_modalities)
        self.synced: Tensor | None = None

    def add(self, true_prob: Tensor, present: bool | Tensor, stamp: Tensor) -> None:
        """Fold in the drained calls: `true_prob` `[n, M]` of their rows in observation order,
        `present` (True or bool `[n, M]`: rows carrying each modality), `stamp` `[n]` (a
        call's rows share one), one update per call."""
        p = true_prob.double()
        if present is not True:
            p = p * present.to(p.device)  # type: ignore[union-attr]
        _, call = torch.unique_consecutive(stamp.to(p.device), return_inverse=True)
        sums = torch.zeros(int(call.max()) + 1, p.shape[1], dtype=p.dtype, device=p.device)
        sums.index_add_(0, call, p)
        for s in sums.cpu():
            self.mean.update(s)

    def local(self) -> Tensor:
        """This rank's running mean (a copy; zeros before any call)."""
        if self.mean.count == 0:
            return torch.zeros(self.num_modalities, dtype=torch.float64)
        return self.mean.value.clone()

    def value(self) -> Tensor:
        """The value as of the last sync if there was one under torch.distributed, else the
        local running mean (a copy)."""
        return self.local() if self.synced is None else self.synced.clone()

    def sync(self, group: Any, distributed: bool) -> None:
        """Sum the ranks' running means (a collective when `distributed`; else forget the last
        synced value)."""
        if not distributed:
            self.synced = None
            return
        mean = self.local().to(collective_device(group))
        dist.all_reduce(mean, group=group)
        self.synced = mean.cpu()

    def state(self) -> dict[str, Any]:
        """The saved entries: the number of calls, the running mean and the synced value."""
        return {
            "discrepancy_count": self.mean.count,
            "discrepancy_mean": None if self.mean.count == 0 else self.mean.value.clone(),
            "discrepancy_synced": _float64(self.synced),
        }

    def load(self, state: Mapping[str, Any]) -> None:
        """Restore from checked entries (copies)."""
        self.mean.reset()
        mean = _float64(state["discrepancy_mean"])
        if mean is not None:
            count = int(state["discrepancy_count"])
            self.mean.load_state_dict(
                {"kind": "CumulativeMean", "shape": [self.num_modalities], "count": count}
                | {"value": mean}
            )
        self.synced = _float64(state["discrepancy_synced"])


def _float64(value: Tensor | None) -> Tensor | None:
    return None if value is None else value.to(torch.float64, copy=True)
