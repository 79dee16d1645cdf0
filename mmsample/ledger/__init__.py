"""The Ledger: the stateful bridge from the training step back to the balancing methods.

Place in the data flow: shards -> batch -> (model) -> **ledger** -> methods -> plan -> shards.
The training pass (or the scoring pass, `mmsample.scoring`) calls `Ledger.observe` with each
batch's logits; the methods read `Ledger.snapshot()` and `Ledger.cumulative_discrepancy` at the
next epoch. Per-sample tables live in shared memory (loader workers read them) and are merged
across ranks by `Ledger.sync()`.
"""

from .ledger import Ledger, mean_pairwise_cosine, per_sample_statistics

__all__ = ["Ledger", "mean_pairwise_cosine", "per_sample_statistics"]
