"""Shards: the on-disk format and the two readers (streamed and indexed).

Data flow: the sharding tool (`mmsample.sharding`) writes tar shards, offset indices and
`manifest.json`; `StreamedDataset` (iterable) and `IndexedDataset` (map-style) read them back
into decoded sample dicts (`mmsample.decoding`), identical for the same item in both.
"""

from .format import Manifest, ShardInfo
from .indexed import IdSubset, IndexedDataset
from .streamed import StreamedDataset

__all__ = [
    "IdSubset",
    "IndexedDataset",
    "Manifest",
    "ShardInfo",
    "StreamedDataset",
]
