"""The offset index of one shard: its file format and its check against the manifest and the tar.

Place in the data flow: written beside each tar by `ShardWriter` and `mmsample index`, read by
`ShardTable` when a dataset opens. Row r describes the r-th sample of the tar: its global id, the
byte range [start, end) of its members, its key and its split ("" for none). Two file layouts:

- `mmsample-shards/1` without keys: an int64 `[n, 3]` array (id, start, end), still read;
- with keys: a structured array, fields `id`, `start`, `end` (int64), `key` (fixed-width ASCII
  bytes: keys are letters, digits, `_`, `-`) and optionally `split` (fixed-width unicode). Both
  are plain `.npy` files, loaded without unpickling.

Index files may come from strangers: `check_index` refuses one whose ids are outside the
manifest's id space or the shard's id range, or whose byte ranges are not block-aligned, not
ordered, overlapping, or past the end of the tar, before any memory is sized by what it says.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ManifestError, SampleError

INDEX_COLUMNS = ("id", "start", "end")
BLOCK = 512
REBUILD = "this index does not match its tar; rebuild it with `mmsample index`"


@dataclass
class OffsetIndex:
    """One shard's index: `rows` int64 `[n, 3]` (id, start, end in bytes); `keys` (ASCII bytes
    `[n]`, 1 byte a character) and `splits` (str `[n]`, "" = no split) are None for an index
    written without them."""

    rows: np.ndarray
    keys: np.ndarray | None = None
    splits: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.rows)

    def key(self, row: int) -> str | None:
        """The key of row `row`, or None for an index without keys."""
        return key_at(self.keys, row)

    def key_texts(self) -> list[str] | None:
        """Every key as text, or None for an index without keys."""
        return None if self.keys is None else [k.decode("ascii") for k in self.keys.tolist()]


def key_at(keys: np.ndarray | None, row: int) -> str | None:
    """Row `row` of a key column (ASCII bytes) as text; None for no key column."""
    return None if keys is None else bytes(keys[row]).decode("ascii", "replace")


def write_index(
    path: str | Path,
    rows: np.ndarray,
    keys: list[str] | None = None,
    splits: list[str] | None = None,
) -> None:
    """Write an offset index atomically: `rows` `[n, 3]` (global id, byte start, byte end), with
    each sample's key (and split, "" for none) when given."""
    rows = np.asarray(rows, dtype=np.int64).reshape(-1, len(INDEX_COLUMNS))
    data: np.ndarray = rows
    if keys is not None:
        if len(keys) != len(rows) or (splits is not None and len(splits) != len(rows)):
            raise ValueError(f"write_index: {len(rows)} rows need as many keys and splits")
        columns = [(c, "<i8") for c in INDEX_COLUMNS]
        encoded = [k.encode("ascii") for k in keys]
        columns.append(("key", f"S{max((len(k) for k in encoded), default=1) or 1}"))
        if splits is not None:
            columns.append(("split", f"<U{max((len(s) for s in splits), default=1) or 1}"))
        data = np.zeros(len(rows), dtype=np.dtype(columns))
        for j, c in enumerate(INDEX_COLUMNS):
            data[c] = rows[:, j]
        data["key"] = encoded
        if splits is not None:
            data["split"] = splits
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.save(f, data, allow_pickle=False)
    os.replace(tmp, path)


def load_index(path: str | Path, raw: bytes | None = None) -> OffsetIndex:
    """Read an offset index in either layout (never unpickles); raise ManifestError if it is
    neither. `raw`: the file's bytes, already read (a remote index; `path` then only names
    it in messages)."""
    try:
        data = np.load(path if raw is None else io.BytesIO(raw), allow_pickle=False)
    except (OSError, ValueError) as err:
        raise ManifestError(f"{path}: unreadable offset index ({err})") from err
    names = data.dtype.names
    if names is None:
        if data.dtype != np.int64 or data.ndim != 2 or data.shape[1] != len(INDEX_COLUMNS):
            raise ManifestError(
                f"{path}: offset index must be int64 [n, 3]; got {data.dtype} {data.shape}"
            )
        return OffsetIndex(data)
    fields = data.dtype.fields or {}
    ok = data.ndim == 1 and all(c in fields and fields[c][0] == np.int64 for c in INDEX_COLUMNS)
    ok = ok and "key" in fields and fields["key"][0].kind == "S"
    ok = ok and ("split" not in fields or fields["split"][0].kind == "U")
    if not ok or set(names) - {*INDEX_COLUMNS, "key", "split"}:
        raise ManifestError(
            f"{path}: offset index must hold int64 id, start, end, an ASCII key (and a unicode "
            f"split) column and no others; got {data.dtype} {data.shape}"
        )
    rows = np.stack([data[c] for c in INDEX_COLUMNS], axis=1).astype(np.int64)
    splits = np.asarray(data["split"]) if "split" in names else None
    return OffsetIndex(rows, np.asarray(data["key"]), splits)


def read_index(path: str | Path) -> np.ndarray:
    """The int64 `[n, 3]` rows (id, start, end) of an offset index in either layout."""
    return load_index(path).rows


def check_index(
    index: OffsetIndex,
    *,
    shard: str,
    name: str,
    count: int,
    first_id: int,
    last_id: int,
    tar_bytes: int,
    id_space: int,
) -> None:
    """Check one shard's index against what the manifest says of the shard (`count` samples,
    ids in [first_id, last_id], a tar of `tar_bytes` bytes) and of the dataset (ids in
    [0, id_space)). Raise SampleError naming the shard, the row's key and the rebuild."""
    rows = index.rows
    if len(rows) != count:
        raise SampleError(
            f"offset index {name} has {len(rows)} rows but the manifest counts {count} samples; "
            f"{REBUILD}",
            shard=shard,
        )
    if not len(rows):
        return
    ids, starts, ends = rows[:, 0], rows[:, 1], rows[:, 2]
    previous_end = np.concatenate([[0], ends[:-1]])
    rules = [
        (
            (ids < 0) | (ids >= id_space),
            lambda r: f"id {ids[r]} is outside the dataset's id space [0, {id_space})",
        ),
        (
            (ids < first_id) | (ids > last_id),
            lambda r: f"id {ids[r]} is outside the shard's id range [{first_id}, {last_id}]",
        ),
        (
            (starts < 0) | (starts % BLOCK != 0) | (ends % BLOCK != 0),
            lambda r: f"bytes {starts[r]}..{ends[r]} are not {BLOCK}-byte tar blocks",
        ),
        (ends <= starts, lambda r: f"bytes {starts[r]}..{ends[r]} are an empty range"),
        (
            ends > tar_bytes,
            lambda r: f"bytes {starts[r]}..{ends[r]} end past the tar's {tar_bytes} bytes",
        ),
        (
            starts < previous_end,
            lambda r: (
                f"bytes {starts[r]}..{ends[r]} overlap or precede the previous sample's "
                f"(which ends at byte {previous_end[r]}): rows must follow the tar's order"
            ),
        ),
    ]
    for broken, describe in rules:
        hits = np.flatnonzero(broken)
        if len(hits):
            r = int(hits[0])
            key = index.key(r)
            more = f" (and {len(hits) - 1} more rows)" if len(hits) > 1 else ""
            raise SampleError(
                f"offset index {name}, row {r}: {describe(r)}{more}; {REBUILD}",
                shard=shard,
                key=key,
            )


def check_unique_ids(indexes: Sequence[OffsetIndex], shards: Sequence[str]) -> None:
    """Refuse an id that two index rows give (in one shard or in two): SampleError naming both
    rows, their shards and keys. Memory and time O(n log n) in the number of samples."""
    if not indexes:
        return
    ids = np.concatenate([i.rows[:, 0] for i in indexes])
    order = np.argsort(ids, kind="stable")
    twice = np.flatnonzero(ids[order][1:] == ids[order][:-1])
    if not len(twice):
        return
    first_row = np.concatenate([[0], np.cumsum([len(i) for i in indexes])])
    where = []
    for flat in (int(order[twice[0]]), int(order[twice[0] + 1])):
        shard = int(np.searchsorted(first_row, flat, side="right")) - 1
        row = flat - int(first_row[shard])
        where.append((shards[shard], row, indexes[shard].key(row)))
    (shard_a, row_a, key_a), (shard_b, row_b, key_b) = where
    raise SampleError(
        f"id {int(ids[order[twice[0]]])} is given twice: by {shard_a} row {row_a} (key "
        f"{key_a!r}) and by row {row_b} here; ids are unique in a dataset, so {REBUILD}",
        shard=shard_b,
        key=key_b,
    )
