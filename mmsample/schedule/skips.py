"""Which positions of an epoch stand in for a bad item (`on_error="skip"`).

Place in the data flow: schedule -> read -> decode fails -> **replacement positions** -> read
again. The candidates are a function of (seed, epoch, the bad item's position, the epoch's
length) alone, so the replacement is the same whichever rank, worker or worker count meets the
bad item, and a run of bad items (a corrupt shard) is replaced by items spread over the epoch.
"""

from __future__ import annotations

from collections.abc import Iterator

from .seeds import TAG_SKIP, mix_seed


def replacement_positions(position: int, total: int, start: int) -> Iterator[int]:
    """Every position of an epoch of `total` items but `position`, in the order tried as its
    replacement: from `(position + 1 + start % (total - 1)) % total` on, wrapping around.
    `start` is a seeded draw (`skip_start(seed, epoch, position)`)."""
    if total < 2:
        return
    first = position + 1 + start % (total - 1)
    for k in range(total):
        q = (first + k) % total
        if q != position:
            yield q


def skip_start(seed: int, epoch: int, position: int) -> int:
    """The seeded draw where the replacements of the item at `position` start."""
    return mix_seed(seed, epoch, position, TAG_SKIP)
