"""SMV: valuation-driven re-sampling (seed 003): extra single-modality items for the modalities
that contribute little.

Place in the data flow: ledger (subset values `v[C]` the training pass records) -> **SMV** ->
the epoch's plan (each id's full item plus extra items carrying one modality) -> reader; an extra
item decodes only its own modality (`batch.dense` gives zeros for the rest).

Warm-up: for epochs e < `warmup` every id yields `(full,)`. Then (METHODS.md "SMV"):
- sample level: `phi = shapley(values)` per id (float64) and `c = smv_copies(phi)` (the
  authors' f_s: 1 copy if 0.4 < phi < 1, 2 if -0.1 < phi <= 0.4, 3 if phi <= -0.1); id i yields
  `(full,)` then c_j items of mask `1 << j` in ascending j; c_j = 0 for an id never valuated or
  whose modality j was never observed.
- modality level: valuate a seeded random `fraction` (20 %) Z of the valuated ids, `(i, p) =
  smv_modality_probability(phi_Z, f_m, scale, gap)`; the paper adds one item `1 << i` to each
  id (carrying i) with probability p; `variant="reference"` draws `int(p * N)` ids with
  replacement, one extra item each, and uses the authors' `gap=1.5`.
`variant="reference"` also asks for the authors' separate valuation pass each epoch
(`scoring_ids`): the loader runs it when given a scorer; otherwise the values of the training
pass are used.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..ledger import Ledger
from ..plan import ArrayPlan
from ..schedule import rng_for
from ..signals import SMV_PROBABILITY, shapley, smv_copies, smv_modality_probability
from .base import Method, check_choice, check_number

LEVELS: dict[str, str] = {"sample": "extra items per id", "modality": "weak modality re-sampling"}
VARIANTS: dict[str, str] = {"paper": "the paper's formulas", "reference": "the authors' code"}
_TAG_Z, _TAG_DRAW = 0x5A1, 0x5A2


class SMV(Method):
    """Sample- or modality-level valuation-driven re-sampling (seed 003).

    Args:
        ledger: the Ledger whose `values` hold `v[C] = |C|` if the head on subset C alone
            predicts the label, else 0 (the training pass records them with `subset_logits`).
        level: "sample" or "modality". warmup: epochs of plain training (int >= 0).
        variant: "paper" or "reference". seed: seeds Z and the draws.
        fraction: the valuated share Z of the modality level, in (0, 1]. f_m, scale, gap: the
            modality level's probability function (`smv_modality_probability`).

    Raises ValueError naming the parameter for a bad setting.
    """

    _SAVED = ("_copies", "_weak", "_p", "_phi_mean", "_extra_ids")
    _ARRAYS = frozenset({"_extra_ids"})
    _COMPAT = ("level", "warmup", "variant", "fraction")

    def __init__(
        self,
        ledger: Ledger,
        level: str = "sample",
        warmup: int = 5,
        variant: str = "paper",
        seed: int = 0,
        *,
        fraction: float = 0.2,
        f_m: str = "linear",
        scale: float = 1.0,
        gap: float | None = None,
    ) -> None:
        super().__init__(ledger, seed)
        check_choice("SMV", "level", level, LEVELS)
        check_number("SMV", "warmup", warmup, low=0, integer=True)
        check_choice("SMV", "variant", variant, VARIANTS)
        check_number("SMV", "fraction", fraction, low=0, high=1, low_open=True)
        check_choice("SMV", "f_m", f_m, SMV_PROBABILITY)
        check_number("SMV", "scale", scale, low=0, low_open=True)
        if gap is not None:
            check_number("SMV", "gap", gap, low=0, low_open=True)
        self.level, self.warmup, self.variant, self.fraction = level, warmup, variant, fraction
        self.f_m, self.scale = f_m, scale
        self.gap = (1.5 if variant == "reference" else None) if gap is None else gap
        self._reset()

    def _reset(self) -> None:
        self._copies: torch.Tensor | None = None  # sample level: int64 [N, M]
        self._weak: int | None = None  # modality level: the low-contributing modality
        self._p = 0.0
        self._phi_mean: list[float] = [float("nan")] * self.num_modalities
        self._extra_ids: np.ndarray | None = None  # modality level: ids with an extra item

    def scoring_ids(self, epoch: int) -> np.ndarray | None:
        if self.variant != "reference" or epoch < self.warmup:
            return None
        if self.level == "modality":
            return self._subset(epoch)
        return self._ids

    def _subset(self, epoch: int) -> np.ndarray:
        """Z: a seeded random `fraction` of the ids (at least one), ascending."""
        rng = rng_for(self.seed, epoch, _TAG_Z)
        size = max(1, int(self.fraction * len(self._ids)))
        return np.sort(rng.choice(self._ids, size=size, replace=False))

    def _take(self, epoch: int) -> None:
        self._reset()
        if epoch < self.warmup:
            return
        snapshot = self.ledger.snapshot()
        ids = torch.from_numpy(self._ids)
        valued = snapshot["values_seen"][ids]
        has = snapshot["modality_seen"][ids]
        if self.level == "sample":
            copies = torch.zeros(len(ids), self.num_modalities, dtype=torch.int64)
            rows = valued.nonzero().squeeze(1)
            if len(rows):
                phi = shapley(snapshot["values"][ids[rows]].double())
                copies[rows] = smv_copies(phi).long()
                self._phi_mean = phi.mean(0).tolist()
            self._copies = copies * has.long()
            return
        z = torch.from_numpy(self._subset(epoch))
        z = z[snapshot["values_seen"][z]]
        if len(z) == 0:
            return  # nothing valuated yet: no extra items this epoch
        phi = shapley(snapshot["values"][z].double())
        weak, p = smv_modality_probability(phi, self.f_m, self.scale, self.gap)
        self._weak, self._p = int(weak), float(p)
        self._phi_mean = phi.mean(0).tolist()
        carriers = self._ids[has[:, self._weak].numpy()]
        rng = rng_for(self.seed, epoch, _TAG_DRAW)
        if self.variant == "reference":
            n = int(self._p * len(self._ids))
            picks = rng.choice(carriers, size=n, replace=True) if len(carriers) else carriers[:0]
            self._extra_ids = np.sort(picks)
        else:
            self._extra_ids = carriers[rng.random(len(carriers)) < self._p]

    def _plan(self, epoch: int) -> ArrayPlan:
        if self._copies is None and self._extra_ids is None:
            return self._every_id_once()
        n_ids, m = self.ledger.num_samples, self.num_modalities
        extra = np.zeros((n_ids, m), dtype=np.int64)
        if self._copies is not None:
            extra[self._ids] = self._copies.numpy()
        else:
            assert self._extra_ids is not None and self._weak is not None
            np.add.at(extra[:, self._weak], self._extra_ids, 1)
        counts = np.zeros(n_ids, dtype=np.int64)
        counts[self._ids] = 1
        counts += extra.sum(1)
        # per id: the full item, then extra[id, j] items of mask 1 << j in ascending j
        per_id = np.concatenate([counts[:, None] - extra.sum(1, keepdims=True), extra], 1)
        kinds = np.concatenate([[self.full], 1 << np.arange(m)]).astype(np.int64)
        masks = np.repeat(np.tile(kinds, n_ids), per_id.ravel())
        return ArrayPlan(counts, masks)

    def copies(self, epoch: int) -> torch.Tensor:
        """int64 `[N, M]`: sample level, the extra items of each of `ids` per modality."""
        self.set_epoch(epoch)
        if self._copies is None:
            return torch.zeros(len(self._ids), self.num_modalities, dtype=torch.int64)
        return self._copies.clone()

    def _stats(self, epoch: int) -> dict[str, Any]:
        out: dict[str, Any] = {
            f"contribution/{n}": float(v) for n, v in zip(self.names, self._phi_mean)
        }
        out["warmup"] = float(epoch < self.warmup)
        if self.level == "modality":
            out["probability"] = self._p
            out["weak_modality"] = float(-1 if self._weak is None else self._weak)
        return out
