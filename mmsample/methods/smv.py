"""SMV: valuation-driven re-sampling (Wei et al. 2024): extra single-modality items for the
modalities that contribute little.

Place in the data flow: ledger (subset values `v[C]` the training pass records) -> **SMV** ->
the epoch's plan (each id's full item plus extra items carrying one modality) -> reader; an extra
item decodes only its own modality (`batch.dense` gives zeros for the rest).

Warm-up: for epochs e < `warmup` every id yields `(full,)`. Then (docs/methods.md):
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

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..errors import ShortRunWarning
from ..ledger import Ledger
from ..plan import ArrayPlan
from ..schedule import rng_for
from ..signals import SMV_PROBABILITY, shapley, smv_copies, smv_modality_probability
from .base import Method, check_choice, check_number

_TAG_Z, _TAG_DRAW = 0x5A1, 0x5A2


# ---- variants: what the paper and the authors' code do differently ------------------------


def _bernoulli_draw(p: float, carriers: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Paper: each carrier of the weak modality gets one extra item with probability p."""
    return carriers[rng.random(len(carriers)) < p]


def _count_draw(p: float, carriers: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Reference: `int(p * N)` carriers drawn with replacement, one extra item each (sorted)."""
    if not len(carriers):
        return carriers[:0]
    return np.sort(rng.choice(carriers, size=int(p * n), replace=True))


@dataclass(frozen=True)
class Variant:
    """`gap`: the default gap of `smv_modality_probability`; `valuation_pass`: ask for a
    separate valuation pass each epoch after warm-up (`scoring_ids`); `draw`: (p, carriers,
    N, rng) -> the ids that get an extra item of the weak modality."""

    gap: float | None
    valuation_pass: bool
    draw: Callable[[float, np.ndarray, int, np.random.Generator], np.ndarray]


VARIANTS: dict[str, Variant] = {
    "paper": Variant(gap=None, valuation_pass=False, draw=_bernoulli_draw),
    "reference": Variant(gap=1.5, valuation_pass=True, draw=_count_draw),
}


# ---- levels: extra items per id, or for the weak modality -------------------------------------


class SampleLevel:
    """Each valuated id gets `smv_copies(phi)` extra single-modality items."""

    def valuated_ids(self, smv: SMV, epoch: int) -> np.ndarray:
        return smv.ids

    def take(
        self, smv: SMV, epoch: int, snapshot: dict[str, torch.Tensor], ids: np.ndarray
    ) -> None:
        rows_of = torch.from_numpy(ids)
        has = snapshot["modality_seen"][rows_of]
        copies = torch.zeros(len(rows_of), smv.num_modalities, dtype=torch.int64)
        rows = snapshot["values_seen"][rows_of].nonzero().squeeze(1)
        if len(rows):
            phi = shapley(snapshot["values"][rows_of[rows]].double())
            copies[rows] = smv_copies(phi).long()
            smv._phi_mean = phi.mean(0).tolist()
        smv._copies = copies * has.long()

    def stats(self, smv: SMV) -> dict[str, float]:
        return {}


class ModalityLevel:
    """A valuated subset Z names the weak modality and its probability p; the variant draws
    the ids that get an extra item of it."""

    def valuated_ids(self, smv: SMV, epoch: int) -> np.ndarray:
        return smv.subset(epoch)

    def take(
        self, smv: SMV, epoch: int, snapshot: dict[str, torch.Tensor], ids: np.ndarray
    ) -> None:
        z = torch.from_numpy(smv.subset(epoch))
        z = z[snapshot["values_seen"][z]]
        if len(z) == 0:
            return  # nothing valuated yet: no extra items this epoch
        phi = shapley(snapshot["values"][z].double())
        weak, p = smv_modality_probability(phi, smv.f_m, smv.scale, smv.gap)
        smv._weak, smv._p = int(weak), float(p)
        smv._phi_mean = phi.mean(0).tolist()
        has = snapshot["modality_seen"][torch.from_numpy(ids)]
        carriers = ids[has[:, smv._weak].numpy()]
        rng = rng_for(smv.seed, epoch, _TAG_DRAW)
        smv._extra_ids = smv._rules.draw(smv._p, carriers, len(ids), rng)

    def stats(self, smv: SMV) -> dict[str, float]:
        return {
            "probability": smv._p,
            "weak_modality": float(-1 if smv._weak is None else smv._weak),
        }


LEVELS: dict[str, SampleLevel | ModalityLevel] = {
    "sample": SampleLevel(),
    "modality": ModalityLevel(),
}


class SMV(Method):
    """Sample- or modality-level valuation-driven re-sampling (SMV paper).

    Args:
        ledger: the Ledger whose `values` hold `v[C] = |C|` if the head on subset C alone
            predicts the label, else 0 (the training pass records them with `subset_logits`);
            None: bound later (`bind`, done by `mmsample.Balancer` and `wrap`).
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
        ledger: Ledger | None = None,
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
        self._rules, self._level = VARIANTS[variant], LEVELS[level]
        self.gap = self._rules.gap if gap is None else gap
        if ledger is not None:
            self.bind(ledger)

    def _set_run(self, epochs: int | None, batch_size: int | None) -> None:
        if epochs is not None and self.warmup >= epochs:
            warnings.warn(
                f"SMV(warmup={self.warmup}) re-samples nothing in a {epochs}-epoch run: every "
                f"epoch is warm-up. Give warmup < {epochs} (e.g. warmup={max(1, epochs // 4)}).",
                ShortRunWarning,
                stacklevel=3,
            )

    def _reads_observations(self, epoch: int) -> bool:
        return epoch > 0 and epoch >= self.warmup

    def _reset(self) -> None:
        self._copies: torch.Tensor | None = None  # sample level: int64 [N, M]
        self._weak: int | None = None  # modality level: the low-contributing modality
        self._p = 0.0
        self._phi_mean: list[float] = [float("nan")] * self.num_modalities
        self._extra_ids: np.ndarray | None = None  # modality level: ids with an extra item

    def scoring_ids(self, epoch: int) -> np.ndarray | None:
        if not self._rules.valuation_pass or epoch < self.warmup:
            return None
        return self._level.valuated_ids(self, epoch)

    def subset(self, epoch: int) -> np.ndarray:
        """Z of the modality level at `epoch`: a seeded random `fraction` of the ids (at least
        one), ascending int64."""
        rng = rng_for(self.seed, epoch, _TAG_Z)
        size = max(1, int(self.fraction * len(self._ids)))
        return np.sort(rng.choice(self._ids, size=size, replace=False))

    def _take(self, epoch: int) -> None:
        self._reset()
        if epoch >= self.warmup:
            self._level.take(self, epoch, self.ledger.snapshot(), self._ids)

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
        out.update(self._level.stats(self))
        return out
