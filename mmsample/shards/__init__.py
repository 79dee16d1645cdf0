"""Shards: the on-disk format, the writer, and the two readers (streamed and indexed).

Data flow: `ShardWriter` / `write_samples` (or `mmsample shard`) write tar shards, offset
indices and `manifest.json`; `StreamedDataset` (iterable) and `IndexedDataset` (map-style) read
them back into decoded sample dicts, identical for the same item in both.
"""

from .format import Manifest, ShardInfo
from .indexed import IdSubset, IndexedDataset
from .streamed import StreamedDataset
from .writer import ShardWriter, write_samples

__all__ = [
    "IdSubset",
    "IndexedDataset",
    "Manifest",
    "ShardInfo",
    "ShardWriter",
    "StreamedDataset",
    "write_samples",
]
