"""What both readers stand on: the shard table, the decode stage and the skip policy.

Place in the data flow: schedule -> **read** (`read_row`: one sample's bytes) -> **decode**
(`decode`: the modalities of one item) -> replace (`replace`: a bad item's stand-in). A reader
holds configuration only (the dataset, the modalities, the seed of the decoders' draws, the
error policy); which item comes when, and in which epoch, is the caller's argument.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..decoding.decoder import Decoder, check_modalities, check_on_error, report_skip
from ..errors import SampleError
from ..skips import SkipCounter
from ..storage.cache import ShardCache
from ..storage.location import parse_location
from ..storage.remote import ReadSettings
from ..storage.retry import RetryPolicy
from .shard_table import ShardTable
from .tar_samples import RawSample

if TYPE_CHECKING:
    from ..decoding import Spec


def remote_settings(
    root: str | Path,
    owner: str,
    access: str,
    storage_options: Mapping[str, Any] | None,
    retry: RetryPolicy | None,
    cache: ShardCache | None,
    prefetch: int = 0,
) -> ReadSettings | None:
    """The remote-reading settings of a reader opened on `root` (None for a local path, where
    they are refused: ValueError naming the parameter, since they would do nothing)."""
    if parse_location(root).is_local:
        given = [
            n
            for n, v in (("storage_options", storage_options), ("retry", retry), ("cache", cache))
            if v is not None
        ]
        if given:
            raise ValueError(
                f"The {given[0]!r} parameter of {owner} applies to a dataset given as a URL "
                f"(s3://, gs://, https://, pipe:); {root} is a local path: leave it out."
            )
        return None
    return ReadSettings(
        access=access,
        prefetch=prefetch,
        cache=cache,
        retry=RetryPolicy() if retry is None else retry,
        storage_options=storage_options,
    )


class ShardSource:
    """Base of the readers: `table`, `decoder`, `seed`, `on_error` and the skip count."""

    table: ShardTable
    decoder: Decoder

    def _open(
        self,
        root: str | Path,
        modalities: Mapping[str, Spec],
        seed: int,
        on_error: str,
        split: str | None = None,
        ids: Iterable[int] | np.ndarray | None = None,
        remote: ReadSettings | None = None,
    ) -> None:
        owner = type(self).__name__
        if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
            raise ValueError(f"The 'seed' parameter of {owner} must be an int >= 0; got {seed!r}.")
        self.on_error = check_on_error(on_error, owner)
        self.table = ShardTable(root, split=split, owner=owner, ids=ids, remote=remote)
        specs = check_modalities(modalities, owner, self.table.manifest.fields)
        self.decoder = Decoder(specs, seed)
        self.seed = seed
        self._skips = SkipCounter()

    @property
    def names(self) -> tuple[str, ...]:
        """The modality names; bit j of every mask is `names[j]`."""
        return self.decoder.names

    @property
    def skipped(self) -> int:
        """Items replaced so far with `on_error="skip"`, by this process and its DataLoader
        workers together (counted in shared memory)."""
        return self._skips.total()

    def read_row(self, row: int) -> RawSample | SampleError:
        """The raw sample of table row `row`, or the SampleError that reading it raised (so a
        read-ahead stage can carry it to the item that needs it)."""
        try:
            return self.table.read(row)
        except SampleError as err:
            return err

    def decode(
        self,
        raw: RawSample | SampleError,
        mask: int,
        *,
        epoch: int,
        item: int,
        fallback: int | None = None,
    ) -> dict[str, Any]:
        """Decode one item of `raw` (see `Decoder.__call__`); raises the SampleError of a raw
        sample that could not be read, or of a modality that does not decode."""
        if isinstance(raw, SampleError):
            raise raw
        return self.decoder(raw, mask, epoch=epoch, item=item, fallback=fallback)

    def replace(
        self, bad: SampleError, candidates: Iterable[tuple[str, Callable[[], dict[str, Any]]]]
    ) -> dict[str, Any]:
        """Count and report a skipped item; return the first candidate that decodes. Each
        candidate is (how the report names it, e.g. "item 3", a decode thunk); candidates come
        from the schedule's `replacement_positions`, the same in every process."""
        for where, attempt in candidates:
            try:
                out = attempt()
            except SampleError:
                continue
            self._skips.add()
            found = f"{out['shard']}:{out['key']}"
            report_skip(type(self).__name__, bad, f"{where} ({found})" if where else found)
            return out
        raise SampleError(
            f"no item of this epoch decodes (on_error='skip' found no replacement); the first "
            f"failure: {bad.reason}",
            shard=bad.shard,
            key=bad.key,
        )
