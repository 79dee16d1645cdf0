"""Active learning on shards (BMMAL, Shen et al. 2023, and the baselines users compare it with).

Place in the data flow: pool shards -> reader -> model (one pass: `pool_pass`) -> `Pool` ->
a strategy (`STRATEGIES`: random, entropy, margin, bald, coreset, badge, bmmal) -> the ids to
label next -> a `RoundState` file -> readers with `ids=` (or `write_subset`) for training.
"""

from .pool import Pool
from .query import MC_PASSES, dropout_modules, pool_pass, query, select_split
from .rounds import RoundState, read_ids
from .strategies import (
    BADGE,
    BALD,
    BMMAL,
    STRATEGIES,
    CoreSet,
    Entropy,
    Margin,
    Random,
    Strategy,
    make_strategy,
)
from .subset import write_subset

__all__ = [
    "BADGE",
    "BALD",
    "BMMAL",
    "MC_PASSES",
    "STRATEGIES",
    "CoreSet",
    "Entropy",
    "Margin",
    "Pool",
    "Random",
    "RoundState",
    "Strategy",
    "dropout_modules",
    "make_strategy",
    "pool_pass",
    "query",
    "read_ids",
    "select_split",
    "write_subset",
]
