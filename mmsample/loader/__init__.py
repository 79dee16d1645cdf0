"""Loaders that apply a balancing method's plans: `balanced_loader` over shards, `wrap` around
an existing map-style DataLoader. Both return a `BalancedLoader` (a torchdata
`StatefulDataLoader`; `balanced_loader` yields `MultimodalBatch`, `wrap` the dataset's own
structure by default); `loader.set_epoch(e)` reaches the ledger, the method, the reader and
persistent workers in one call.
"""

from .balanced import balanced_loader
from .dataset import BalancedDataset
from .loader import BalancedLoader
from .log import StatsLog
from .no_batch import NoBatchWarning
from .wrap import wrap

__all__ = [
    "BalancedDataset",
    "BalancedLoader",
    "NoBatchWarning",
    "StatsLog",
    "balanced_loader",
    "wrap",
]
