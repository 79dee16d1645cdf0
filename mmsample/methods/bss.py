"""BSS: the balance-aware curriculum (Guan et al. 2025): which samples, in what order.

Place in the data flow: ledger (per-sample similarity and losses) -> **BSS** -> the epoch's
ordered plan -> the indexed loader yields exactly that order (streamed: see `mmsample.loader`).

Measurer (docs/methods.md): `s = Norm(sim) - Norm(L_total)` over the N ids the reader yields,
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
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..errors import MmsampleWarning, ShortRunWarning
from ..ledger import Ledger
from ..plan import ArrayPlan
from ..schedule import rng_for
from ..signals import BALANCE_SCORES, root_pacing
from .base import Method, check_choice, check_number

_TAG_ORDER, _TAG_DRAW = 0xB55, 0xB56
SHOWN = 8


class EmptyEpochWarning(MmsampleWarning):
    """A method's plan yields no item this epoch (e.g. BSS keeping floor(N * lambda) = 0)."""


# ---- variants: what the paper and the authors' code do differently ------------------------


@dataclass(frozen=True)
class Variant:
    """One BSS variant. `score`: `mmsample.signals.BALANCE_SCORES[name]`, (similarity `[n]`,
    loss `[n]`) -> score `[n]`; `loss`: (bss, summed unimodal CE `[n]`, fused CE `[n]`) -> loss
    `[n]`; `higher_is_balanced`: rank descending (else ascending); `pacing_shift`: lambda is
    taken at epoch + shift; `every_epoch`: the learned scheduler rescores every epoch (else
    every `interval`); `probabilities`: the learned scheduler's draw probabilities over ids
    (bss, snapshot) -> float64 `[N]`; `replace`: it draws with replacement."""

    score: Callable[[Tensor, Tensor], Tensor]
    loss: Callable[[BSS, Tensor, Tensor], Tensor]
    higher_is_balanced: bool
    pacing_shift: int
    every_epoch: bool
    probabilities: Callable[[BSS, dict[str, Tensor]], np.ndarray]
    replace: bool

    @property
    def worst(self) -> float:
        """The score of an unpaired id: the least balanced, ranked last."""
        return -math.inf if self.higher_is_balanced else math.inf


def _paper_loss(bss: BSS, unimodal: Tensor, fused: Tensor) -> Tensor:
    return (1 - bss.alpha) * fused + bss.alpha * unimodal


def _reference_loss(bss: BSS, unimodal: Tensor, fused: Tensor) -> Tensor:
    w_u, w_f = bss.reference_weights
    return w_u * unimodal + w_f * fused


def _ema_softmax(bss: BSS, snapshot: dict[str, Tensor]) -> np.ndarray:
    """Paper: `s_upd` = the current score at the first rescoring, else the EMA
    `(1 - beta) s_upd + beta s_cur` where both are finite (an unpaired id, -inf, takes the
    current score); `p = softmax(s_upd)` (uniform if no id is paired)."""
    s_cur = bss.scores(snapshot)
    prev = bss._s_upd
    if prev is None:
        s_upd = s_cur
    else:
        both = np.isfinite(prev) & np.isfinite(s_cur)
        ema = (1 - bss.beta) * np.where(both, prev, 0) + bss.beta * np.where(both, s_cur, 0)
        s_upd = np.where(both, ema, s_cur)
    bss._s_upd = s_upd
    top = s_upd.max()
    if not np.isfinite(top):  # no paired id at all: uniform
        return np.full(len(s_cur), 1.0 / len(s_cur))
    e = np.exp(s_upd - top)  # an unpaired id (-inf): probability 0
    return e / e.sum()


def _reference_weights(bss: BSS, snapshot: dict[str, Tensor]) -> np.ndarray:
    """Reference learned weights `1 - (Norm(loss) - Norm(sim)) + 0.01` = 2.01 - score (an
    unpaired id: 0.01, the smallest weight a paired id can get), normalised to sum 1."""
    w = 2.01 - bss.scores(snapshot)
    w[~np.isfinite(w)] = 0.01
    return w / w.sum()


VARIANTS: dict[str, Variant] = {
    "paper": Variant(BALANCE_SCORES["paper"], _paper_loss, True, 0, False, _ema_softmax, True),
    "reference": Variant(
        BALANCE_SCORES["reference"], _reference_loss, False, 1, True, _reference_weights, False
    ),
}


# ---- schedulers: which ids each epoch, in what order ----------------------------------------


class Heuristic:
    """Rank once (frozen at the first take), keep the top `floor(N * lambda(e))` in a seeded
    random order."""

    draws = False
    paced = True  # trains on the fraction lambda(e) of the ids: a short run may never reach 1

    def scoring_ids(self, bss: BSS, epoch: int) -> np.ndarray | None:
        return bss.ids if bss._ranking is None else None

    def take(self, bss: BSS, epoch: int) -> None:
        if bss._ranking is None:
            s = bss.scores()
            key = -s if bss._rules.higher_is_balanced else s
            bss._ranking = bss.ids[np.lexsort((bss.ids, key))]

    def plan(self, bss: BSS, epoch: int) -> ArrayPlan:
        assert bss._ranking is not None
        kept = bss.kept(epoch)
        if kept == 0:
            warnings.warn(
                f"BSS keeps floor(N * lambda({epoch})) = floor({len(bss.ids)} * "
                f"{bss.pacing(epoch):.4g}) = 0 ids: epoch {epoch} is empty. Raise lambda0 "
                "(or use more samples) so the first epochs train on something.",
                EmptyEpochWarning,
                stacklevel=4,
            )
        top = bss._ranking[:kept]
        order = top[rng_for(bss.seed, epoch, _TAG_ORDER).permutation(len(top))]
        counts = np.zeros(bss.ledger.num_samples, dtype=np.int64)
        counts[top] = 1
        return ArrayPlan(counts, np.full(len(top), bss.full, dtype=np.int64), order)

    def pace(self, bss: BSS, epoch: int, distinct: int) -> float:
        return bss.pacing(epoch)


class Learned:
    """Rescore every `interval` epochs (the variant may say every epoch) and draw N ids by
    the variant's probabilities."""

    draws = True
    paced = False  # draws N ids every epoch: no pacing to fall short of

    def due(self, bss: BSS, epoch: int) -> bool:
        every = 1 if bss._rules.every_epoch else bss.interval
        return bss._rescored is None or epoch // every != bss._rescored // every

    def scoring_ids(self, bss: BSS, epoch: int) -> np.ndarray | None:
        return bss.ids if bss._rules.every_epoch or self.due(bss, epoch) else None

    def take(self, bss: BSS, epoch: int) -> None:
        if self.due(bss, epoch):
            bss._p = bss._rules.probabilities(bss, bss.ledger.snapshot())
            bss._rescored = epoch

    def plan(self, bss: BSS, epoch: int) -> ArrayPlan:
        assert bss._p is not None
        n = len(bss.ids)
        draw = rng_for(bss.seed, epoch, _TAG_DRAW)
        order = bss.ids[draw.choice(n, size=n, replace=bss._rules.replace, p=bss._p)]
        counts = np.bincount(order, minlength=bss.ledger.num_samples).astype(np.int64)
        return ArrayPlan(counts, np.full(n, bss.full, dtype=np.int64), order)

    def pace(self, bss: BSS, epoch: int, distinct: int) -> float:
        return distinct / len(bss.ids)


SCHEDULERS: dict[str, Heuristic | Learned] = {"heuristic": Heuristic(), "learned": Learned()}


class BSS(Method):
    """Balance-aware sequence sampling (BSS paper); see the module docstring for the formulas.

    Args:
        ledger: the Ledger with per-sample statistics (a scoring pass before the first plan,
            `mmsample.scoring.score`, gives the first ranking; later rescorings read the
            training pass); None: bound later (`bind`, done by `mmsample.Balancer` and `wrap`).
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
        ledger: Ledger | None = None,
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
        self._rules: Variant = VARIANTS[variant]
        self._schedule: Heuristic | Learned = SCHEDULERS[scheduler]
        self._reset()
        if ledger is not None:
            self.bind(ledger)

    def _reads_observations(self, epoch: int) -> bool:
        # the heuristic ranks once from the scoring pass; the learned scheduler rescores from
        # the training pass (or a scoring pass) at its due epochs after the first
        schedule = self._schedule
        return epoch > 0 and isinstance(schedule, Learned) and schedule.due(self, epoch)

    def _reset(self) -> None:
        self._ranking: np.ndarray | None = None  # heuristic: ids, best first (frozen)
        self._s_upd: np.ndarray | None = None  # learned (paper): s_upd
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
        out = np.full(len(ids), self._rules.worst, dtype=np.float64)
        if len(rows) == 0:
            return out
        sel = ids[rows]
        sim = snap["similarity"][sel].double()
        uni = snap["unimodal_loss"][sel].double().sum(1)
        fused = snap["fused_loss"][sel].double()
        loss = self._rules.loss(self, uni, fused)
        out[rows.numpy()] = self._rules.score(sim, loss).numpy()
        return out

    # ---- the scheduler -------------------------------------------------------------------
    def _set_run(self, epochs: int | None, batch_size: int | None) -> None:
        if epochs is None or not self._schedule.paced:
            return
        last = self.pacing(epochs - 1)
        if last < 1:
            warnings.warn(
                f"BSS(lambda0={self.lambda0}, t_grow={self.t_grow}) trains on {last:.0%} of the "
                f"ids at the last epoch of a {epochs}-epoch run ({self.pacing(0):.0%} at the "
                f"first): its curriculum reaches the whole training set only after t_grow "
                f"epochs. Give t_grow <= {max(1, epochs - 1)} to pace over this run, or run "
                f"more epochs.",
                ShortRunWarning,
                stacklevel=3,
            )

    def pacing(self, epoch: int) -> float:
        """lambda(epoch): the fraction of ids the heuristic keeps (reference: lambda(e + 1))."""
        return root_pacing(epoch + self._rules.pacing_shift, self.lambda0, self.t_grow)

    def kept(self, epoch: int) -> int:
        """`floor(N * lambda(epoch))`, in float64."""
        return math.floor(float(np.float64(len(self._ids)) * np.float64(self.pacing(epoch))))

    def scoring_ids(self, epoch: int) -> np.ndarray | None:
        return self._schedule.scoring_ids(self, epoch)

    def _take(self, epoch: int) -> None:
        self._schedule.take(self, epoch)

    def _plan(self, epoch: int) -> ArrayPlan:
        return self._schedule.plan(self, epoch)

    def probabilities(self, epoch: int) -> np.ndarray:
        """float64 `[N]`: the learned scheduler's draw probabilities of `ids` at `epoch`."""
        if not self._schedule.draws:
            raise ValueError("BSS.probabilities: only the learned scheduler draws by p.")
        self.set_epoch(epoch)
        assert self._p is not None
        return self._p.copy()

    def _stats(self, epoch: int) -> dict[str, Any]:
        plan = self.plan(epoch)
        distinct = int((plan.counts(self._ids) > 0).sum())
        pace = self._schedule.pace(self, epoch, distinct)
        return {"pacing": float(pace), "distinct_ids": float(distinct)}
