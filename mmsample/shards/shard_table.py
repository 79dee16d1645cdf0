"""The shard table: a dataset's shards and offset indices, read one sample (row) at a time.

Place in the data flow: under `ShardSource` (both readers' raw-sample source). Opening a
dataset loads every shard's offset index, checks it against the manifest and the tar sizes, and
keeps the rows of the requested split and ids; `ShardTable.read(row)` then reads that sample's
byte range with `os.pread` and parses it (`tar_samples.parse_sample`). A dataset given as a URL
(`s3://`, `gs://`, `https://`, `pipe:`) is read through `mmsample.storage`: the manifest and
the consolidated index (`index_bundle`) once at opening (no per-shard stat: the manifest gives
the tar sizes), each sample's bytes by `RemoteShards` (sequential chunks for the streamed
reader, prefetched ranges for the indexed one, or the local cache).
"""

from __future__ import annotations

import contextlib
import os
from collections import OrderedDict
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ManifestError, SampleError, StorageError
from ..storage.location import parse_location
from ..storage.remote import ReadSettings, RemoteShards
from ..storage.retry import TransientFailure, describe
from ..storage.store import Store, open_store
from .format import MANIFEST, Manifest, ShardInfo
from .index_bundle import BUNDLE, BUNDLE_KEY, digest_matches, unpack, warn_fallback
from .offsets import OffsetIndex, check_index, check_unique_ids, key_at, load_index
from .tar_header import name_hint
from .tar_samples import RawSample, parse_sample


def _size(path: Path) -> int:
    """The file's size in bytes, 0 if it cannot be read (reading it then names the problem)."""
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _keep(index: OffsetIndex, keep: np.ndarray) -> OffsetIndex:
    """The rows of `index` where the bool mask `keep` is set."""
    keys = None if index.keys is None else index.keys[keep]
    splits = None if index.splits is None else index.splits[keep]
    return OffsetIndex(index.rows[keep], keys, splits)


def check_ids(ids: Iterable[int] | np.ndarray | None, owner: str) -> np.ndarray | None:
    """A reader's `ids` parameter as a sorted unique int64 array (None: no filter)."""
    if ids is None:
        return None
    try:
        out = np.unique(np.asarray(list(ids) if not isinstance(ids, np.ndarray) else ids))
    except TypeError as err:
        raise ValueError(
            f"The 'ids' parameter of {owner} must be an iterable of sample ids (ints); {err}."
        ) from err
    if out.size and (out.dtype.kind not in "iu" or int(out.min()) < 0):
        raise ValueError(
            f"The 'ids' parameter of {owner} must hold sample ids (ints >= 0); got dtype "
            f"{out.dtype}, e.g. {out[:5].tolist()}."
        )
    return out.astype(np.int64)


def _select(index: OffsetIndex, info: ShardInfo, split: str) -> OffsetIndex:
    """The rows of `index` whose split is `split`."""
    if index.splits is None and info.split_counts:
        raise ManifestError(
            f"offset index {info.index} has no split column but the manifest counts splits "
            f"{info.split_counts}; rebuild it with `mmsample index`"
        )
    return _keep(
        index, np.zeros(len(index), bool) if index.splits is None else index.splits == split
    )


def check_split(manifest: Manifest, split: str | None, owner: str) -> str | None:
    """Validate a reader's `split` parameter against the splits the manifest counts."""
    if split is None:
        return None
    known = manifest.split_counts()
    if not isinstance(split, str) or split not in known:
        have = (
            f"its splits are {sorted(known)}"
            if known
            else "it has no split column (shard a table with a 'split' column, or pass split=None)"
        )
        raise ValueError(
            f"The 'split' parameter of {owner} must name a split of this dataset; {have}. "
            f"Got {split!r}."
        )
    return split


class ShardTable:
    """A dataset's shards and offset indices, read by row with `os.pread` (fork-safe handles).

    Row r is the r-th sample (of `split` and in `ids`, when given) in manifest shard order; `ids`,
    `shard_of_row`, `starts`, `ends` are int64 arrays over rows, `keys` ASCII bytes (None for
    indexes written without keys). Every index is checked against the manifest and the tar
    sizes on opening (`mmsample.shards.offsets.check_index`); memory grows with the number of
    samples, never with an id value. Handles open lazily per process and are never pickled.
    """

    def __init__(
        self,
        root: str | Path,
        max_open: int = 128,
        split: str | None = None,
        owner: str = "ShardTable",
        ids: Iterable[int] | np.ndarray | None = None,
        remote: ReadSettings | None = None,
    ) -> None:
        location = parse_location(root)
        self.where = location.display
        self.remote: RemoteShards | None = None
        self.root: Path | None = None  # a local dataset's folder
        if location.is_local:
            self.root = location.local_path()
            self.manifest = Manifest.load(self.root)
            self.split = check_split(self.manifest, split, owner)
            self.names = [s.name for s in self.manifest.shards]
            indexes = [self._load(info) for info in self.manifest.shards]
        else:
            settings = remote or ReadSettings()
            store = open_store(location, settings.storage_options, settings.retry)
            store.check_access(settings.access)
            self.manifest = Manifest.parse(store.read(MANIFEST), store.url(MANIFEST))
            self.split = check_split(self.manifest, split, owner)
            self.names = [s.name for s in self.manifest.shards]
            indexes = self._load_remote(store)
            sizes = [s.bytes for s in self.manifest.shards]
            self.remote = RemoteShards(store, self.names, sizes, settings)
        check_unique_ids(indexes, self.names)
        if split is not None:
            indexes = [
                _select(index, info, split) for index, info in zip(indexes, self.manifest.shards)
            ]
        wanted = check_ids(ids, owner)
        if wanted is not None:
            indexes = [_keep(i, np.isin(i.rows[:, 0], wanted)) for i in indexes]
            found = sum(len(i) for i in indexes)
            if found != len(wanted):
                have = np.concatenate([i.rows[:, 0] for i in indexes] or [wanted[:0]])
                missing = np.setdiff1d(wanted, have)
                where = f" of split {split!r}" if split is not None else ""
                raise ValueError(
                    f"The 'ids' parameter of {owner} holds {len(missing)} ids that are in no "
                    f"shard{where} of {self.where}, e.g. {missing[:8].tolist()}; pass ids of this "
                    "dataset (a labeled set written for another dataset?)."
                )
        rows = [i.rows for i in indexes]
        table = np.concatenate(rows) if rows else np.zeros((0, 3), dtype=np.int64)
        self.ids = np.ascontiguousarray(table[:, 0])
        self.starts = np.ascontiguousarray(table[:, 1])
        self.ends = np.ascontiguousarray(table[:, 2])
        # each row's split ("" for none); None when no index has a split column
        split_cols = [i.splits if i.splits is not None else np.full(len(i), "") for i in indexes]
        has_splits = any(i.splits is not None for i in indexes)
        self.splits = np.concatenate(split_cols) if has_splits and indexes else None
        keyed = all(i.keys is not None for i in indexes)
        self.keys = np.concatenate([i.keys for i in indexes]) if keyed and indexes else None
        counts = np.array([len(r) for r in rows], dtype=np.int64)
        self.shard_of_row = np.repeat(np.arange(len(rows), dtype=np.int64), counts)
        self.first_row = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self.max_open = max_open
        self._fds: OrderedDict[int, int] = OrderedDict()
        self._pid = os.getpid()

    def _load(self, info: ShardInfo) -> OffsetIndex:
        """One shard's offset index, checked against the manifest and the tar's size."""
        assert self.root is not None  # a local dataset
        index = load_index(self.root / info.index)
        check_index(
            index,
            shard=info.name,
            name=info.index,
            count=info.count,
            first_id=info.first_id,
            last_id=info.last_id,
            tar_bytes=max(info.bytes, _size(self.root / info.name)),
            id_space=self.manifest.id_space,
        )
        return index

    def _load_remote(self, store: Store) -> list[OffsetIndex]:
        """Every shard's offset index from `store`: the consolidated index the manifest names
        (one request), else each shard's (16 requests at a time, `BundleWarning`); each checked
        against the manifest (the tar sizes are the manifest's)."""
        infos = self.manifest.shards
        indexes = self._bundled(store)
        if indexes is None:
            with ThreadPoolExecutor(16) as pool:
                raws = list(pool.map(lambda info: store.read(info.index), infos))
            indexes = [load_index(store.url(i.index), raw) for i, raw in zip(infos, raws)]
        for info, index in zip(infos, indexes):
            check_index(
                index,
                shard=info.name,
                name=info.index,
                count=info.count,
                first_id=info.first_id,
                last_id=info.last_id,
                tar_bytes=info.bytes,
                id_space=self.manifest.id_space,
            )
        return indexes

    def _bundled(self, store: Store) -> list[OffsetIndex] | None:
        """The indexes of the consolidated index the manifest names, if it matches its digest."""
        entry = self.manifest.extra.get(BUNDLE_KEY)
        if not isinstance(entry, dict) or entry.get("name") != BUNDLE:
            warn_fallback(self.where, f"{MANIFEST} names no consolidated offset index")
            return None
        try:
            raw = store.read(BUNDLE)
        except StorageError as err:  # copied without it: the per-shard indexes still serve
            if not isinstance(err.__cause__, FileNotFoundError):
                raise
            warn_fallback(store.url(BUNDLE), f"is named in {MANIFEST} but missing")
            return None
        if not digest_matches(raw, entry):
            warn_fallback(store.url(BUNDLE), f"does not match the SHA-256 in {MANIFEST} (stale)")
            return None
        return unpack(raw, [s.count for s in self.manifest.shards], store.url(BUNDLE))

    def __len__(self) -> int:
        return len(self.ids)

    def _fd(self, shard: int) -> int:
        if self._pid != os.getpid():  # forked: the parent's descriptors are not ours to use
            self._fds = OrderedDict()
            self._pid = os.getpid()
        fd = self._fds.get(shard)
        if fd is None:
            assert self.root is not None  # a local dataset
            fd = os.open(self.root / self.names[shard], os.O_RDONLY)
            self._fds[shard] = fd
            if len(self._fds) > self.max_open:
                os.close(self._fds.popitem(last=False)[1])
        else:
            self._fds.move_to_end(shard)
        return fd

    def key(self, row: int) -> str | None:
        """The key the offset index gives row `row` (None for an index without keys)."""
        return key_at(self.keys, row)

    def read(self, row: int) -> RawSample:
        """The raw sample at `row`, parsed from its indexed byte range. SampleError for a
        sample that does not read (for a remote shard: after every retry, naming the URL and
        the last error); StorageError (never skipped) for a missing shard or denied access."""
        shard = int(self.shard_of_row[row])
        name = self.names[shard]
        start, end = int(self.starts[row]), int(self.ends[row])
        if self.remote is not None:
            return self._read_remote(row, shard, start, end)
        try:
            data = os.pread(self._fd(shard), end - start, start)
        except OSError as err:
            raise SampleError(
                f"cannot read bytes {start}..{end} ({err})", shard=name, key=self.key(row)
            ) from err
        if len(data) < end - start:
            self._truncated(row, start + len(data))
        return parse_sample(
            data, name, expect_id=int(self.ids[row]), expect_key=self.key(row), at=start
        )

    def _read_remote(self, row: int, shard: int, start: int, end: int) -> RawSample:
        assert self.remote is not None
        name = self.names[shard]
        url = self.remote.store.url(name)
        try:
            data = self.remote.read(shard, start, end)
        except TransientFailure as err:
            raise SampleError(
                f"cannot read {url} bytes {start}..{end}: {err.attempts} attempts failed, the "
                f"last with {describe(err.last)}",
                shard=name,
                key=self.key(row),
            ) from err
        if len(data) < end - start:
            raise SampleError(
                f"{url} is truncated: the sample needs bytes {start}..{end}, the object ends at "
                f"byte {start + len(data)}; re-create or re-upload the shard",
                shard=name,
                key=self.key(row),
            )
        return parse_sample(
            data, name, expect_id=int(self.ids[row]), expect_key=self.key(row), at=start
        )

    def prefetch(self, rows: np.ndarray) -> None:
        """Start reading these rows' bytes ahead (a remote dataset read by random access:
        concurrent, coalesced range requests); nothing to do for a local dataset."""
        if self.remote is not None and len(rows):
            rows = np.asarray(rows, dtype=np.int64)
            self.remote.prefetch(self.shard_of_row[rows], self.starts[rows], self.ends[rows])

    def expect(self, rows: np.ndarray) -> None:
        """The rows about to be read, in order (the streamed reader's walk): a remote dataset
        fetches the next shard's first chunks while one shard streams; a local one ignores it."""
        if self.remote is not None and len(rows):
            rows = np.asarray(rows, dtype=np.int64)
            self.remote.expect(self.shard_of_row[rows], self.starts[rows])

    def _truncated(self, row: int, size: int) -> None:
        """Raise for a row whose range passes the end of its (truncated) file, naming the key of
        the sample where the file is cut: a row wholly past the end has no readable key."""
        shard = int(self.shard_of_row[row])
        fd = self._fd(shard)
        lo, hi = int(self.first_row[shard]), int(self.first_row[shard + 1])
        cut = lo + int(np.searchsorted(self.ends[lo:hi], size, side="right"))
        key, where = None, f"at byte {size}"
        for r, how in ((cut, "inside"), (cut - 1, "right after")):
            if lo <= r < hi and (self.keys is not None or int(self.starts[r]) + 100 <= size):
                key = self.key(r) or name_hint(os.pread(fd, 100, int(self.starts[r])))
                where = f"at byte {size}, {how} sample {key!r} (id {int(self.ids[r])})"
                break
        this = "this sample" if row == cut else f"sample id {int(self.ids[row])}, past the cut,"
        raise SampleError(
            f"the shard is truncated {where}: {this} needs bytes {int(self.starts[row])}.."
            f"{int(self.ends[row])}; re-create the shard",
            shard=self.names[shard],
            key=self.key(row) or key,
        )

    def close(self) -> None:
        """Close this process's open shard files (and a remote dataset's streams)."""
        if self.remote is not None:
            self.remote.close()
        if self._pid == os.getpid():
            for fd in self._fds.values():
                os.close(fd)
        self._fds = OrderedDict()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_fds"] = OrderedDict()
        return state

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # interpreter shutdown: nothing left to do
            self.close()
