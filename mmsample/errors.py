"""Errors that name what went wrong: the sample (shard and key) or the argument.

Every reader, decoder and the sharding tool raise these, so a user can find the bad clip.
"""

from __future__ import annotations


class SampleError(ValueError):
    """A sample could not be read or decoded; carries the shard and key that name it."""

    def __init__(self, message: str, *, shard: str | None = None, key: str | None = None) -> None:
        self.shard = shard
        self.key = key
        self.reason = message
        where = ":".join(p for p in (shard, key) if p)
        super().__init__(f"{where}: {message}" if where else message)


class ManifestError(ValueError):
    """A dataset manifest, shard list or sharding-tool input is malformed."""
