"""The epoch's schedule: who gets which (sample id, modality mask, item) at which position.

Pure functions, no I/O, no state, no DataLoader: seeds (`mix_seed`), the reading context
(`Consumer`, `resolve_world`), orders (shards, shuffle buffer, indexed sequence), the split over
ranks and workers with the padding that gives every rank equal batches, DUS row masks and the
positions that replace a bad item. The loader and the readers call them with explicit
arguments; the same arguments always give the same answer.
"""

from .items import (
    StreamedSlice,
    dus_row_masks,
    item_masks,
    item_sequence,
    locate,
    streamed_slice,
)
from .order import buffer_order, occurrence_index, permuted, rows_in_order, shard_order
from .seeds import mix_seed, rng_for
from .skips import replacement_positions, skip_start
from .split import (
    batch_count,
    consumer_range,
    interleave,
    next_worker,
    rank_batches,
    rank_range,
    worker_batches,
    worker_starts,
)
from .world import Consumer, resolve_world

__all__ = [
    "Consumer",
    "StreamedSlice",
    "batch_count",
    "buffer_order",
    "consumer_range",
    "dus_row_masks",
    "interleave",
    "item_masks",
    "item_sequence",
    "locate",
    "mix_seed",
    "next_worker",
    "occurrence_index",
    "permuted",
    "rank_batches",
    "rank_range",
    "replacement_positions",
    "resolve_world",
    "rng_for",
    "rows_in_order",
    "shard_order",
    "skip_start",
    "streamed_slice",
    "worker_batches",
    "worker_starts",
]
