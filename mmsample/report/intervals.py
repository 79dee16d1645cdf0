"""95% intervals for the report's numbers, and the words the report derives from them.

Place in the data flow: after training, inside the report. One seed: a percentile bootstrap
over test clips (Efron & Tibshirani, *An Introduction to the Bootstrap*, 1993, ch. 13): the
clips are resampled with replacement `RESAMPLES` times from a fixed seed, the statistic is
recomputed on each resample and the 2.5th and 97.5th percentiles bound it. Statistics that
compare two runs on the same clips (a method against plain, the fused head against the
unimodal ceiling) resample the clip indices *jointly* (a paired bootstrap). Several seeds: the
mean with a Student t interval, `mean ± t(0.975, n - 1) * s / sqrt(n)`, and the same on the
per-seed paired differences. Pure numpy (and scipy's t quantile); every draw is seeded.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats

__all__ = [
    "LEVEL",
    "RESAMPLES",
    "SEED",
    "Interval",
    "bootstrap",
    "bootstrap_indices",
    "compare",
    "paired_difference",
    "resolution",
    "t_interval",
    "utilisation",
]

LEVEL = 0.95
RESAMPLES = 2000
SEED = 0


@dataclass(frozen=True)
class Interval:
    """A point value with its `level` interval `[low, high]` (NaN bounds: no interval), how it
    was made (`kind`: "bootstrap" over `n` clips, "t" over `n` seeds, "" none) and a `note`
    when part of it is undefined."""

    point: float
    low: float = math.nan
    high: float = math.nan
    kind: str = ""
    n: int = 0
    note: str = ""

    @property
    def known(self) -> bool:
        """Whether the interval has finite bounds."""
        return math.isfinite(self.low) and math.isfinite(self.high)

    def text(self, digits: int = 3) -> str:
        """`point [low, high]`, or `point` without an interval, or "n/a"."""
        if math.isnan(self.point):
            return "n/a"
        head = f"{self.point:.{digits}f}"
        return f"{head} [{self.low:.{digits}f}, {self.high:.{digits}f}]" if self.known else head


def resolution(n: int) -> float:
    """Points (percent) one clip moves an accuracy measured on `n` clips: 100 / n."""
    return 100.0 / n if n > 0 else math.nan


def utilisation(alone: ArrayLike, ceiling: ArrayLike, chance: float) -> np.ndarray:
    """Chance-corrected utilisation `u = (alone - chance) / (ceiling - chance)`: the share of
    what modality m achieves alone (its unimodal model: the ceiling) that the fused model's
    head achieves on m alone, above chance (1/K for K balanced classes). 1: the fused model
    uses m as well as a model trained on m alone; 0: at chance. NaN where the ceiling is not
    above chance (the ratio is undefined). Accuracies as fractions, broadcast elementwise."""
    a = np.asarray(alone, dtype=np.float64)
    c = np.asarray(ceiling, dtype=np.float64)
    denominator = c - chance
    safe = np.where(denominator > 0, denominator, 1.0)
    return np.where(denominator > 0, (a - chance) / safe, np.nan)


def bootstrap_indices(n: int, resamples: int = RESAMPLES, seed: int = SEED) -> np.ndarray:
    """int64 `[resamples, n]`: clip indices drawn with replacement, from `seed` (the same
    draws for every statistic of a report, so paired statistics share them)."""
    if n < 1 or resamples < 1:
        raise ValueError(f"bootstrap_indices: n ({n}) and resamples ({resamples}) must be >= 1")
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def bootstrap(
    statistic: Callable[..., np.ndarray],
    columns: Sequence[ArrayLike],
    indices: np.ndarray,
    level: float = LEVEL,
) -> Interval:
    """Percentile bootstrap interval of `statistic(*means)`, where `means[j]` is the mean of
    `columns[j]` (per-clip values `[N]`, e.g. 1.0 where a prediction is right) over each
    resample of `indices` (`[R, N]`, one row per resample; `bootstrap_indices`), all columns
    resampled with the same rows (paired). `statistic` maps arrays of means to an array and
    may give NaN (undefined); when more than (1 - level) / 2 of the resamples are undefined the
    interval is not given (NaN bounds, `note` says why)."""
    cols = [np.asarray(c, dtype=np.float64) for c in columns]
    n = indices.shape[1]
    if any(c.shape != (n,) for c in cols):
        raise ValueError(
            f"bootstrap: every column must hold one value per clip ({n}); got "
            f"{[c.shape for c in cols]}"
        )
    point = float(statistic(*[np.asarray(c.mean()) for c in cols]))
    draws = np.asarray(statistic(*[c[indices].mean(1) for c in cols]), dtype=np.float64)
    finite = draws[np.isfinite(draws)]
    undefined = 1.0 - len(finite) / len(draws)
    if undefined > (1.0 - level) / 2:
        note = f"undefined in {undefined:.0%} of the resamples (ceiling not above chance)"
        return Interval(point, kind="bootstrap", n=n, note=note)
    tail = 100 * (1.0 - level) / 2
    low, high = np.percentile(finite, [tail, 100 - tail])
    return Interval(point, float(low), float(high), "bootstrap", n)


def t_interval(values: ArrayLike, level: float = LEVEL) -> Interval:
    """Mean of `values` (one per seed; NaN ones dropped) with its Student t interval, n - 1
    degrees of freedom: `mean ± t_{(1+level)/2, n-1} * s / sqrt(n)`, s the sample standard
    deviation. One value: the value, no interval."""
    x = np.asarray(values, dtype=np.float64)
    x = x[np.isfinite(x)]
    if len(x) == 0:
        return Interval(math.nan)
    mean = float(x.mean())
    if len(x) < 2:
        return Interval(mean, kind="t", n=1)
    half = (
        float(stats.t.ppf((1 + level) / 2, len(x) - 1)) * float(x.std(ddof=1)) / math.sqrt(len(x))
    )
    return Interval(mean, mean - half, mean + half, "t", len(x))


def paired_difference(a: ArrayLike, b: ArrayLike, level: float = LEVEL) -> Interval:
    """t interval of the per-seed differences `a[i] - b[i]` (pairs with a NaN dropped)."""
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return t_interval(x - y, level)


def compare(difference: Interval, baseline: str = "plain") -> str:
    """The report's words for a difference to `baseline`, read off its interval: "above" or
    "below" when the interval excludes 0, "no detectable difference at this size" when it
    includes 0, and "no interval" when there is none."""
    if math.isnan(difference.point):
        return "not measured"
    if not difference.known:
        why = f": {difference.note}" if difference.note else ""
        return f"{difference.point:+.3f} vs {baseline}, no interval{why}"
    bounds = f"[{difference.low:+.3f}, {difference.high:+.3f}]"
    if difference.low > 0:
        return (
            f"above {baseline} (the {LEVEL:.0%} interval of the difference, {bounds}, excludes 0)"
        )
    if difference.high < 0:
        return (
            f"below {baseline} (the {LEVEL:.0%} interval of the difference, {bounds}, excludes 0)"
        )
    return f"no detectable difference at this size ({bounds} includes 0)"
