"""Remix: Data Remixing (Ma, Chen, Deng, ICML 2025): each sample trains one modality an epoch.

Place in the data flow: ledger (`uniform_kl`) -> **Remix** -> grouped plan -> indexed loader.

Epochs e < `warmup` yield every id with every modality. Then id i is assigned `a_i = argmin_j
KL(softmax(z_i^(j)) || uniform)` (`mmsample.signals.remix_assignment`; ties to `tie`) and yields
one item of mask `1 << a_i`. The order is one group per modality, `tie`'s first, then ascending
(the authors': visual wins ties and trains first), each shuffled by (seed, epoch); as `ArrayPlan`
groups, each batch holds one modality on every rank (padding: < world_size items per group).
Streamed mode keeps the items and masks, not the order. `source="scoring"` (the authors') asks
for a scoring pass each epoch after warm-up (without a scorer: one warning, then the training
pass is read); `source="ledger"` reads the training pass (a modality a sample did not carry
keeps its last KL). Unlike the authors' code the other modality is neither decoded nor encoded
(theirs runs both encoders and zeroes the other's features, updating its BatchNorm too).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch

from ..errors import MmsampleWarning, ShortRunWarning
from ..ledger import Ledger
from ..plan import ArrayPlan
from ..schedule import rng_for
from ..signals import assign_lowest
from .base import Method, check_choice, check_number

_TAG_ORDER = 0x2E3
SOURCES = {"scoring": "a scoring pass each epoch (the authors')", "ledger": "the training pass"}


class Remix(Method):
    """Data Remixing (module docstring): `ledger` (None: bound later), `warmup` epochs (the
    authors' 10), `source` ("scoring" or "ledger"), `tie` (the modality index that wins ties and
    trains first; None: index 0), `seed`. `stats(e)["share/<name>"]`: each
    modality's share. ValueError naming the parameter for a bad setting or ids without a KL."""

    _SAVED = ("_assigned",)
    _ARRAYS = frozenset({"_assigned"})
    _COMPAT = ("warmup", "source", "tie")

    def __init__(
        self,
        ledger: Ledger | None = None,
        warmup: int = 10,
        source: str = "scoring",
        tie: int | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(ledger, seed)
        check_number("Remix", "warmup", warmup, low=0, integer=True)
        check_choice("Remix", "source", source, SOURCES)
        if tie is not None:
            check_number("Remix", "tie", tie, low=0, integer=True)
        self.warmup, self.source, self.tie = warmup, source, tie
        self._warned = False
        self._reset()
        if ledger is not None:
            self.bind(ledger)

    def _bind(self) -> None:
        if (self.tie or 0) >= self.num_modalities:
            raise ValueError(f"The 'tie' parameter of Remix must be < M; got {self.tie}.")
        self._reset()

    def _set_run(self, epochs: int | None, batch_size: int | None) -> None:
        if epochs is not None and self.warmup >= epochs:
            why = f"Remix(warmup={self.warmup}) remixes nothing in a {epochs}-epoch run: every "
            fits = min(epochs - 1, max(1, epochs // 4))  # a quarter of the run, at least 1 if any
            why += f"epoch is warm-up. Give warmup < {epochs} (e.g. {fits})."
            warnings.warn(why, ShortRunWarning, stacklevel=3)

    def _reads_observations(self, epoch: int) -> bool:
        return epoch >= self.warmup

    def _reset(self) -> None:
        self._assigned: np.ndarray | None = None  # int64 [N]: each id's modality (None: warm-up)

    def scoring_ids(self, epoch: int) -> np.ndarray | None:
        return self.ids if self.source == "scoring" and epoch >= self.warmup else None

    def _take(self, epoch: int) -> None:
        self._reset()
        if epoch < self.warmup:
            return
        snap, ids = self.ledger.snapshot(), torch.from_numpy(self._ids)
        kl = snap["uniform_kl"][ids]
        never = ids[kl.isnan().any(1)]
        if len(never):
            raise ValueError(
                f"Remix: {len(never)} of {len(ids)} ids were never observed with some modality "
                f"(no KL), e.g. ids {never[:8].tolist()}. Run the scoring pass (the loader's "
                "scorer=mmsample.scoring.Scorer(...)) or a warm-up epoch first."
            )
        stale = bool((snap["last_seen"][ids] < epoch).any())
        if self.source == "scoring" and stale and not self._warned:
            self._warned = True
            why = f"Remix(source='scoring') plans epoch {epoch} from the training pass: no scoring"
            why += " pass ran. Give the loader scorer=mmsample.scoring.Scorer(model, reader, "
            warnings.warn(why + "ledger), or use Remix(source='ledger').", MmsampleWarning, 4)
        self._assigned = assign_lowest(kl, self.tie).numpy()

    def _plan(self, epoch: int) -> ArrayPlan:
        if self._assigned is None:
            return self._every_id_once()
        rng = rng_for(self.seed, epoch, _TAG_ORDER)
        first = sorted(range(self.num_modalities), key=lambda j: j != (self.tie or 0))
        parts = [rng.permutation(self._ids[self._assigned == j]) for j in first]
        parts = [p for p in parts if len(p)]
        counts = np.zeros(self.ledger.num_samples, dtype=np.int64)
        counts[self._ids] = 1
        return ArrayPlan(counts, 1 << self._assigned, np.concatenate(parts), list(map(len, parts)))

    def _stats(self, epoch: int) -> dict[str, Any]:
        out = {"warmup": float(epoch < self.warmup)}
        if self._assigned is not None:  # the share of ids assigned to each modality
            for j, name in enumerate(self.names):
                out[f"share/{name}"] = float(np.mean(self._assigned == j))
        return out
