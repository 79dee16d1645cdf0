"""Seed mixing: every random draw of the schedule, the decoders and the methods starts here.

Place in the data flow: a pure function under everything random. A draw is seeded by the tuple of
integers that identifies it (seed, epoch, purpose tag, rank, position, ...), so the same draw is
made on every rank, worker and process, and two purposes never share a stream.
"""

from __future__ import annotations

import numpy as np

_MASK64 = (1 << 64) - 1

# Purpose tags of the schedule's own draws (methods and decoders keep theirs beside their code).
TAG_SHARDS = 0x5EED  # streamed: the epoch's shard order
TAG_SHUFFLE = 0x10AD  # indexed: the permutation of a plan without an order
TAG_ROWS = 0x2035  # DUS: which rows of a batch carry each modality
TAG_SKIP = 0x5C1B  # on_error="skip": where an item's replacements start


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def mix_seed(*parts: int) -> int:
    """A 63-bit seed that depends on every part and their order (a splitmix64 chain; parts are
    taken modulo 2**64)."""
    state = 0
    for part in parts:
        state = _splitmix64(state ^ (int(part) & _MASK64))
    return state >> 1


def rng_for(seed: int, epoch: int, tag: int) -> np.random.Generator:
    """The numpy generator of one (seed, epoch, purpose): the same on every rank and process."""
    return np.random.default_rng(mix_seed(seed, epoch, tag))
