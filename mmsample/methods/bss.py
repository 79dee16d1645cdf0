"""BSS: the balance-aware curriculum (seed 004): which samples, in what order.

Place in the data flow: ledger (per-sample similarity and losses) -> **BSS** -> the epoch's
ordered plan -> the indexed loader yields exactly that order (streamed: see `mmsample.loader`).

Measurer (METHODS.md "BSS"): `s = Norm(sim) - Norm(L_total)` over the N ids the reader yields,
`L_total = (1 - alpha) CE(fused) + alpha * sum_j CE(unimodal j)`, Norm = min-max; higher = more
balanced. Heuristic scheduler: rank once (descending s, ties by ascending id; frozen at the
first plan), epoch e keeps the top `floor(N * lambda(e))` (float64) in a seeded random order,
`lambda(e) = min(1, sqrt((1 - l0^2) / T_grow * e + l0^2))`. Learned scheduler: rescore every
`interval` epochs, `s_upd = s_cur` at the first rescoring, else `(1 - beta) s_upd + beta s_cur`;
`p = softmax(s_upd)`; the epoch draws N ids by p (with replacement; an id drawn k times yields k
items, in the drawn order).

`variant="reference"` follows the authors' code: score `(1 - Norm(sim)) + Norm(loss)` ranked
ascending with `loss = w_u * sum_j CE_j + w_f * CE(fused)` (`reference_weights`, default (1, 1);
CREMA-D: (0.9, 0.1)); pacing at e + 1; learned weights `w = 1 - (Norm(loss) - Norm(sim)) + 0.01`,
`p = w / sum(w)`, rescored every epoch, no EMA, the order drawn without replacement (every id
once).
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import torch

from ..ledger import Ledger
from ..plan import ArrayPlan
from ..schedule import rng_for
from ..signals import min_max, root_pacing
from .base import Method, check_choice, check_number

SCHEDULERS: dict[str, str] = {
    "heuristic": "rank once, root pacing",
    "learned": "rescore, draw by softmax",
}
VARIANTS: dict[str, str] = {"paper": "the paper's formulas", "reference": "the authors' code"}
_TAG_ORDER, _TAG_DRAW = 0xB55, 0xB56
SHOWN = 8


class EmptyEpochWarning(UserWarning):
    """A method's plan yields no item this epoch (e.g. BSS keeping floor(N * lambda) = 0)."""


class BSS(Method):
    """Balance-aware sequence sampling (seed 004); see the module docstring for the formulas.

    Args:
        ledger: the Ledger with per-sample statistics (a scoring pass before the first plan,
            `mmsample.scoring.score`, gives the first ranking; later rescorings read the
            training pass).
        scheduler: "heuristic" or "learned". lambda0: l0 in (0, 1]. t_grow: T_grow > 0 epochs.
        alpha: the unimodal weight of L_total, in [0, 1]. interval: rescore every E epochs
            (learned). beta: EMA weight of the current score, in [0, 1]. variant: "paper" or
            "reference". seed: seeds the orders and draws.

    Raises ValueError naming the parameter for a bad setting, and at the first plan naming the
    ids the ledger never scored.
    """

    _SAVED = ("_ranking", "_s_upd", "_rescored", "_p")
    _ARRAYS = frozenset({"_ranking", "_s_upd", "_p"})
    _COMPAT = ("scheduler", "lambda0", "t_grow", "alpha", "interval", "beta", "variant")

    def __init__(
        self,
        ledger: Ledger,
        scheduler: str = "heuristic",
        lambda0: float = 0.1,
        t_grow: float = 40,
        alpha: float = 0.2,
        interval: int = 5,
        beta: float = 0.6,
        variant: str = "paper",
        seed: int = 0,
        *,
        reference_weights: tuple[float, float] = (1.0, 1.0),
    ) -> None:
        super().__init__(ledger, seed)
        check_choice("BSS", "scheduler", scheduler, SCHEDULERS)
        check_number("BSS", "lambda0", lambda0, low=0, high=1, low_open=True)
        check_number("BSS", "t_grow", t_grow, low=0, low_open=True)
        check_number("BSS", "alpha", alpha, low=0, high=1)
        check_number("BSS", "interval", interval, low=1, integer=True)
        check_number("BSS", "beta", beta, low=0, high=1)
        check_choice("BSS", "variant", variant, VARIANTS)
        if not isinstance(reference_weights, tuple | list) or len(reference_weights) != 2:
            raise ValueError(
                "The 'reference_weights' parameter of BSS must be (unimodal weight, fused "
                f"weight); got {reference_weights!r}."
            )
        for w in reference_weights:
            check_number("BSS", "reference_weights", w, low=0)
        self.scheduler, self.lambda0, self.t_grow, self.alpha = scheduler, lambda0, t_grow, alpha
        self.interval, self.beta, self.variant = interval, beta, variant
        self.reference_weights = tuple(float(w) for w in reference_weights)
        self._reset()

    def _reset(self) -> None:
        self._ranking: np.ndarray | None = None  # heuristic: ids, best first (frozen)
        self._s_upd: np.ndarray | None = None  # learned (paper): the running score
        self._rescored: int | None = None  # learned: the epoch of the last rescoring
        self._p: np.ndarray | None = None  # learned: the draw probabilities over ids

    # ---- the measurer --------------------------------------------------------------------
    def scores(self, snapshot: dict[str, torch.Tensor] | None = None) -> np.ndarray:
        """float64 `[N]` scores of `ids` from the ledger (paper: higher = more balanced;
        reference: the authors' score, lower = more balanced), min-max over the paired ids.

        An id observed only without some modality (unpaired data: it has no similarity or fused
        loss) scores as the least balanced (paper: -inf, reference: +inf), so it comes last.
        Raises ValueError naming the other ids without a similarity and fused loss (never
        scored: run the scoring pass)."""
        snap = self.ledger.snapshot() if snapshot is None else snapshot
        ids = torch.from_numpy(self._ids)
        paired = (snap["paired_seen"] & snap["fused_seen"])[ids]
        lacking = snap["seen"][ids] & ~snap["modality_seen"][ids].all(1)  # unpaired samples
        scored = paired | lacking
        if not bool(scored.all()):
            missing = ids[~scored]
            raise ValueError(
                f"BSS: {len(missing)} of the {len(ids)} ids were never scored (no similarity or "
                f"fused loss in the ledger), e.g. ids {missing[:SHOWN].tolist()}. Run the scoring "
                f"pass first (balanced_loader(..., scorer=mmsample.scoring.Scorer(model, reader, "
                f"ledger)) or mmsample.scoring.score), or train with the plain loader first."
            )
        rows = paired.nonzero().squeeze(1)
        worst = -math.inf if self.variant == "paper" else math.inf
        out = np.full(len(ids), worst, dtype=np.float64)
        if len(rows) == 0:
            return out
        sel = ids[rows]
        sim = snap["similarity"][sel].double()
        uni = snap["unimodal_loss"][sel].double().sum(1)
        fused = snap["fused_loss"][sel].double()
        if self.variant == "paper":
            loss = (1 - self.alpha) * fused + self.alpha * uni
            out[rows.numpy()] = (min_max(sim) - min_max(loss)).numpy()
        else:
            w_u, w_f = self.reference_weights
            loss = w_u * uni + w_f * fused
            out[rows.numpy()] = ((1 - min_max(sim)) + min_max(loss)).numpy()
        return out

    def _learned_weights(self, snap: dict[str, torch.Tensor]) -> np.ndarray:
        """Reference learned weights `1 - (Norm(loss) - Norm(sim)) + 0.01` = 2.01 - score
        (an unpaired id: 0.01, the smallest weight a paired id can get)."""
        w = 2.01 - self.scores(snap)
        w[~np.isfinite(w)] = 0.01
        return w

    # ---- the scheduler -------------------------------------------------------------------
    def pacing(self, epoch: int) -> float:
        """lambda(epoch): the fraction of ids the heuristic keeps (reference: lambda(e + 1))."""
        t = epoch + 1 if self.variant == "reference" else epoch
        return root_pacing(t, self.lambda0, self.t_grow)

    def kept(self, epoch: int) -> int:
        """`floor(N * lambda(epoch))`, in float64."""
        return math.floor(float(np.float64(len(self._ids)) * np.float64(self.pacing(epoch))))

    def scoring_ids(self, epoch: int) -> np.ndarray | None:
        if self.scheduler == "heuristic":
            return self._ids if self._ranking is None else None
        if self.variant == "reference" or self._due(epoch):
            return self._ids
        return None

    def _due(self, epoch: int) -> bool:
        every = 1 if self.variant == "reference" else self.interval
        return self._rescored is None or epoch // every != self._rescored // every

    def _take(self, epoch: int) -> None:
        if self.scheduler == "heuristic":
            if self._ranking is None:
                s = self.scores()
                key = -s if self.variant == "paper" else s
                self._ranking = self._ids[np.lexsort((self._ids, key))]
            return
        if not self._due(epoch):
            return
        snapshot = self.ledger.snapshot()
        if self.variant == "reference":
            w = self._learned_weights(snapshot)
            self._p = w / w.sum()
        else:
            s_cur = self.scores(snapshot)
            prev = self._s_upd
            if prev is None:
                self._s_upd = s_cur
            else:  # EMA where both are finite; an unpaired id (-inf) takes the current score
                both = np.isfinite(prev) & np.isfinite(s_cur)
                ema = (1 - self.beta) * np.where(both, prev, 0) + self.beta * np.where(
                    both, s_cur, 0
                )
                self._s_upd = np.where(both, ema, s_cur)
            top = self._s_upd.max()
            if not np.isfinite(top):  # no paired id at all: uniform
                self._p = np.full(len(s_cur), 1.0 / len(s_cur))
            else:
                e = np.exp(self._s_upd - top)  # an unpaired id (-inf): probability 0
                self._p = e / e.sum()
        self._rescored = epoch

    def _plan(self, epoch: int) -> ArrayPlan:
        n = len(self._ids)
        rng = rng_for(self.seed, epoch, _TAG_ORDER)
        if self.scheduler == "heuristic":
            assert self._ranking is not None
            kept = self.kept(epoch)
            if kept == 0:
                warnings.warn(
                    f"BSS keeps floor(N * lambda({epoch})) = floor({len(self._ids)} * "
                    f"{self.pacing(epoch):.4g}) = 0 ids: epoch {epoch} is empty. Raise lambda0 "
                    "(or use more samples) so the first epochs train on something.",
                    EmptyEpochWarning,
                    stacklevel=3,
                )
            top = self._ranking[:kept]
            order = top[rng.permutation(len(top))]
            counts = np.zeros(self.ledger.num_samples, dtype=np.int64)
            counts[top] = 1
            return ArrayPlan(counts, np.full(len(top), self.full, dtype=np.int64), order)
        assert self._p is not None
        draw = rng_for(self.seed, epoch, _TAG_DRAW)
        replace = self.variant == "paper"
        picks = draw.choice(n, size=n, replace=replace, p=self._p)
        order = self._ids[picks]
        counts = np.bincount(order, minlength=self.ledger.num_samples).astype(np.int64)
        return ArrayPlan(counts, np.full(n, self.full, dtype=np.int64), order)

    def probabilities(self, epoch: int) -> np.ndarray:
        """float64 `[N]`: the learned scheduler's draw probabilities of `ids` at `epoch`."""
        if self.scheduler != "learned":
            raise ValueError("BSS.probabilities: only the learned scheduler draws by p.")
        self.set_epoch(epoch)
        assert self._p is not None
        return self._p.copy()

    def _stats(self, epoch: int) -> dict[str, Any]:
        plan = self.plan(epoch)
        distinct = int((plan.counts(self._ids) > 0).sum())
        pace = self.pacing(epoch) if self.scheduler == "heuristic" else distinct / len(self._ids)
        return {"pacing": float(pace), "distinct_ids": float(distinct)}
