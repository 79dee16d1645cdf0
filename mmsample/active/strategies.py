"""Query strategies: which unlabeled pool samples to label next, from a `Pool`'s cached tensors.

Every strategy is an object with `select(pool, budget, *, labeled=None, generator=None)` ->
LongTensor `[budget]` of pool ids, in pick order: never a labeled id, never an id twice.
`STRATEGIES` maps names to classes; `query(..., strategy="bmmal")` and `mmsample query
--strategy` read the same registry (`make_strategy`).

- `Random`: a uniform draw without replacement.
- `Entropy`, `Margin`: the largest predictive entropy / the smallest gap between the two most
  probable classes of the fused softmax (ties: the lower position).
- `BALD`: the largest mutual information between the prediction and the MC-dropout draws
  (`Pool.mc_probs`: `H(mean_t p_t) - mean_t H(p_t)`).
- `CoreSet`: k-center greedy on the fused features, starting from the labeled samples (the first
  pick drawn at random when none are labeled); distances in chunks of rows, never N x N.
- `BADGE`: k-means++ seeding over gradient embeddings `(p - onehot(argmax p)) (x) z` in rank-one
  form (`mmsample.signals.kmeans_pp`), never a `[N, K*D]` matrix.
- `BMMAL`: BADGE with each modality's features scaled by its weight
  `1 - (max_k Phi_k - Phi_j)` (`mmsample.signals.bmmal_weights`); all weights 1 is BADGE.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor

from ..signals import gradient_embedding_factors, kmeans_pp
from .pool import Pool

Labeled = Tensor | Iterable[int] | None


class Strategy:
    """Base: validates the call and maps the picks back to pool ids. Subclasses implement
    `_pick(pool, rows, budget, generator)` -> positions into `rows` (the unlabeled rows)."""

    name = "strategy"

    def select(
        self,
        pool: Pool,
        budget: int,
        *,
        labeled: Labeled = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Pool ids (long `[budget]`, CPU) of the samples to label next, in pick order.

        `labeled`: pool ids already labeled (never picked; ids outside the pool are ignored).
        `generator`: the randomness of random draws (on the pool's device for BADGE / BMMAL).
        Raises ValueError when `budget` is not an int in [0, unlabeled samples], or (BADGE /
        BMMAL) when `generator` is on another device than the pool.
        """
        if not isinstance(pool, Pool):
            raise ValueError(
                f"The 'pool' argument of {type(self).__name__}.select must be a "
                f"mmsample.active.Pool; got {type(pool).__name__}."
            )
        rows = pool.unlabeled(labeled)
        if isinstance(budget, bool) or not isinstance(budget, int) or budget < 0:
            raise ValueError(
                f"The 'budget' argument of {type(self).__name__}.select must be an int >= 0; "
                f"got {budget!r}."
            )
        if budget > len(rows):
            raise ValueError(
                f"The 'budget' argument of {type(self).__name__}.select is {budget} but only "
                f"{len(rows)} of the pool's {len(pool)} samples are unlabeled; lower the budget "
                "or add samples to the pool."
            )
        if budget == 0:
            return torch.zeros(0, dtype=torch.long)
        picked = self._pick(pool, rows, budget, generator).cpu()
        return pool.ids[rows[picked]]

    def _pick(
        self, pool: Pool, rows: Tensor, budget: int, generator: torch.Generator | None
    ) -> Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def _subset(t: Tensor, rows: Tensor, total: int) -> Tensor:
    """t restricted to `rows` (no copy when rows are all of the pool)."""
    return t if len(rows) == total else t[rows.to(t.device)]


def _top(score: Tensor, budget: int) -> Tensor:
    """Positions of the `budget` largest scores; ties go to the lower position."""
    order = torch.sort(score.cpu(), descending=True, stable=True).indices
    return order[:budget]


def randperm(n: int, generator: torch.Generator | None) -> Tensor:
    """A random permutation of 0..n-1 (long, CPU) drawn with `generator` on its own device."""
    device = "cpu" if generator is None else generator.device
    return torch.randperm(n, generator=generator, device=device).cpu()


class Random(Strategy):
    """A uniform random draw of `budget` unlabeled samples (the generator's randperm)."""

    name = "random"

    def _pick(
        self, pool: Pool, rows: Tensor, budget: int, generator: torch.Generator | None
    ) -> Tensor:
        return randperm(len(rows), generator)[:budget]


class Entropy(Strategy):
    """The largest entropy `-sum_k p_k log p_k` of the fused softmax."""

    name = "entropy"

    def _pick(
        self, pool: Pool, rows: Tensor, budget: int, generator: torch.Generator | None
    ) -> Tensor:
        p = _subset(pool.probs, rows, len(pool)).double()
        return _top(-torch.special.xlogy(p, p).sum(dim=1), budget)


class Margin(Strategy):
    """The smallest margin `p_(1) - p_(2)` between the two most probable classes."""

    name = "margin"

    def _pick(
        self, pool: Pool, rows: Tensor, budget: int, generator: torch.Generator | None
    ) -> Tensor:
        two = _subset(pool.probs, rows, len(pool)).topk(2, dim=1).values.double()
        return _top(-(two[:, 0] - two[:, 1]), budget)


class BALD(Strategy):
    """The largest mutual information `H(mean_t p_t) - mean_t H(p_t)` over the Pool's T
    MC-dropout softmaxes `mc_probs [N, T, K]` (ValueError if the Pool has none)."""

    name = "bald"
    needs_mc = True

    def _pick(
        self, pool: Pool, rows: Tensor, budget: int, generator: torch.Generator | None
    ) -> Tensor:
        if pool.mc_probs is None:
            raise ValueError(
                "BALD needs MC-dropout softmaxes (Pool mc_probs [N, T, K]): query them with a "
                "model that has dropout (query(..., mc_passes=5)), or pick another strategy."
            )
        p = _subset(pool.mc_probs, rows, len(pool)).double()
        mean = p.mean(dim=1)
        total = -torch.special.xlogy(mean, mean).sum(dim=1)
        expected = -torch.special.xlogy(p, p).sum(dim=2).mean(dim=1)
        return _top(total - expected, budget)


class CoreSet(Strategy):
    """k-center greedy on the fused features `[f_0, ..., f_{M-1}]`: each pick is the unlabeled
    sample farthest (Euclidean) from every labeled sample and earlier pick.

    `chunk`: rows x centres per distance block (memory `chunk` floats); never an N x N matrix.
    """

    name = "coreset"

    def __init__(self, chunk: int = 1 << 22) -> None:
        if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
            raise ValueError(
                f"The 'chunk' parameter of CoreSet must be an int >= 1; got {chunk!r}."
            )
        self.chunk = chunk

    def _pick(
        self, pool: Pool, rows: Tensor, budget: int, generator: torch.Generator | None
    ) -> Tensor:
        dev = pool.probs.device
        x = pool.fused_features(rows.to(dev) if len(rows) < len(pool) else None)
        sq = torch.linalg.vector_norm(x, dim=1).square()
        nearest = torch.full((len(rows),), float("inf"), dtype=x.dtype, device=dev)
        is_row = torch.zeros(len(pool), dtype=torch.bool)
        is_row[rows] = True
        labeled = torch.nonzero(~is_row).flatten()
        if len(labeled):
            step = max(1, self.chunk // max(1, len(rows)))
            for i in range(0, len(labeled), step):
                c = pool.fused_features(labeled[i : i + step].to(dev))
                d = sq[:, None] + torch.linalg.vector_norm(c, dim=1).square()[None] - 2 * x @ c.T
                torch.minimum(nearest, d.amin(dim=1), out=nearest)
            first = int(nearest.argmax())
        else:
            first = int(randperm(len(rows), generator)[0])
        picks = [first]
        chosen = torch.zeros(len(rows), dtype=torch.bool, device=dev)
        for _ in range(1, budget):
            last = picks[-1]
            chosen[last] = True
            d = sq + sq[last] - 2 * (x @ x[last])
            torch.minimum(nearest, d, out=nearest)
            nearest.masked_fill_(chosen, -1.0)  # chosen never again (distances are >= 0)
            picks.append(int(nearest.argmax()))
        return torch.tensor(picks, dtype=torch.long)


class BADGE(Strategy):
    """k-means++ seeding over the gradient embeddings `(p - onehot(y_hat)) (x) [f_0, ...]` of
    the unlabeled samples (Ash et al.), rank-one: memory `[U, K] + [U, sum D]`, plus on CPU the
    screen's float16 unit rows `[U, min(K, sum D)]`.

    `screen`: `kmeans_pp`'s exact screening of distance updates (None: on for CPU pools; the
    picks are the same either way, `mmsample.signals.screen`). After each `select`, `stats` holds
    that call's `kmeans_pp` counts (`screened_picks`, `full_passes`, `recomputed_rows`,
    `screen_misses`; under `select_split`, the last part's).
    """

    name = "badge"

    def __init__(self, screen: bool | None = None) -> None:
        if screen is not None and not isinstance(screen, bool):
            raise ValueError(
                f"The 'screen' parameter of {type(self).__name__} must be a bool or None; "
                f"got {screen!r}."
            )
        self.screen = screen
        self.stats: dict[str, int] = {}

    def weights(self, pool: Pool, rows: Tensor) -> Tensor | None:
        """Per-modality feature weights `[U, M]` (None: all 1)."""
        return None

    def _pick(
        self, pool: Pool, rows: Tensor, budget: int, generator: torch.Generator | None
    ) -> Tensor:
        dev = pool.probs.device
        if generator is not None and generator.device.type != dev.type:
            raise ValueError(
                f"The 'generator' argument of {type(self).__name__}.select must be on the "
                f"pool's device ({dev}) for the k-means++ draws; got a generator on "
                f"{generator.device}: make it with torch.Generator(device={str(dev)!r})."
            )
        probs = _subset(pool.probs, rows, len(pool))
        feats = [_subset(f, rows, len(pool)) for f in pool.features]
        w = self.weights(pool, rows)
        a, z = gradient_embedding_factors(probs, feats, None if w is None else w.to(probs.dtype))
        del probs, feats
        self.stats = {}
        return kmeans_pp(a, z, budget, generator=generator, screen=self.screen, stats=self.stats)

    def __repr__(self) -> str:
        args = "" if self.screen is None else f"screen={self.screen}"
        return f"{type(self).__name__}({args})"


class BMMAL(BADGE):
    """BADGE with each modality's features scaled by BMMAL's weight `1 - (max_k Phi_k - Phi_j)`
    (`Pool.subset_probs` required): samples that one modality dominates weigh less, so the
    labeled set does not favour the dominant modality (BMMAL paper)."""

    name = "bmmal"

    def weights(self, pool: Pool, rows: Tensor) -> Tensor | None:
        return pool.contribution_and_weights(rows)[1]


STRATEGIES: dict[str, type[Strategy]] = {
    cls.name: cls for cls in (Random, Entropy, Margin, BALD, CoreSet, BADGE, BMMAL)
}


def make_strategy(strategy: str | Strategy, owner: str = "query") -> Strategy:
    """A strategy object from a registry name (or the object itself); ValueError listing the
    registry for an unknown name."""
    if isinstance(strategy, Strategy):
        return strategy
    if not isinstance(strategy, str) or strategy.lower() not in STRATEGIES:
        raise ValueError(
            f"The 'strategy' parameter of {owner} must be one of {sorted(STRATEGIES)} or a "
            f"Strategy object; got {strategy!r}."
        )
    return STRATEGIES[strategy.lower()]()
