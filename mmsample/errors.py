"""Errors that name what went wrong (the sample, shard and key, or the argument), and the
warning categories of runs that would otherwise go wrong silently.

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


# ---- warnings: real categories, so users can filter them or turn them into errors ----------
# (`warnings.simplefilter("error", mmsample.errors.MmsampleWarning)` makes every one fatal)


class MmsampleWarning(UserWarning):
    """Base of every warning mmsample gives about a run that would otherwise go wrong silently."""


class EpochWarning(MmsampleWarning):
    """The loader served an epoch other than the caller may expect: a new pass after an
    incomplete one (a `break`) starts the next epoch; `set_epoch` of an epoch already served
    serves it again."""


class UnobservedWarning(MmsampleWarning):
    """A method is about to plan from a Ledger that received no observation for the ids it plans
    over (`observe` never called, or called with other ids): its plan would change nothing."""


class ShortRunWarning(MmsampleWarning):
    """A method cannot act (fully) within the epochs of the run: SMV's warm-up lasts the whole
    run, a DUS schedule spans more epochs than run or changes no batch size within them."""


class StorageError(OSError):
    """A dataset's storage failed in a way that is not one sample's fault: a missing shard or
    manifest, denied access, bad credentials, an unreachable endpoint after every retry, or an
    operation the backend cannot do (writing to https://, ranges from pipe:). Never skipped by
    `on_error="skip"`: it stops the run, naming the URL (without its query string)."""
