"""The sharding tool: raw files + a table of rows -> tar shards, offset indexes, manifest.json.

Data flow: the first step, before any reader (`mmsample.shards`). `shard_dataset` (the
`mmsample shard` command) reads a CSV/JSONL table (`table`, `columns`, `classes`), probes every
file the way the readers decode it, writes the shards in parallel (`tasks`, `writer`) and the
manifest (`finalise`); `write_samples` / `ShardWriter` write samples a program already holds;
`verify_dataset` re-reads shards against their manifest; `rebuild` (`mmsample index`) rebuilds
indexes and the manifest from the tars alone. Nothing here is needed to read shards.
"""

from .rebuild import rebuild
from .table import BadRow, BadRowsError
from .tool import ShardReport, shard_dataset
from .verify import verify_dataset, verify_shards
from .writer import ShardWriter, write_samples

__all__ = [
    "BadRow",
    "BadRowsError",
    "ShardReport",
    "ShardWriter",
    "rebuild",
    "shard_dataset",
    "verify_dataset",
    "verify_shards",
    "write_samples",
]
