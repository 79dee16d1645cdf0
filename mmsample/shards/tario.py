"""Tar I/O: raw samples out of shard files, sequentially from a stream or by offset-index range.

The first stage of both readers. A raw sample is a dict `{"key", "shard", "id", "label",
"fields": {ext: bytes}}`; nothing here decodes a payload (so nothing is ever unpickled). Headers
are parsed by hand (ustar, pax and GNU long names): unlike `tarfile`'s stream mode, which ends an
archive silently at a bad header, every corrupt or truncated member raises `SampleError`
naming the shard and the key.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from ..errors import ManifestError, SampleError
from .format import ID_FIELD, LABEL_FIELD, Manifest, ShardInfo
from .offsets import (
    REBUILD,
    OffsetIndex,
    check_index,
    check_unique_ids,
    key_at,
    load_index,
)

BLOCK = 512
_ZERO_BLOCK = bytes(BLOCK)
_FILE_TYPES = frozenset({b"0", b"\0", b"7"})
_NAME_PATTERN = re.compile(r"^((?:.*/)?[^./]+)\.([^/]+)$")

RawSample = dict[str, Any]


def split_name(name: str) -> tuple[str, str] | None:
    """Split a member name into (key, extension) the way WebDataset groups members, or None."""
    found = _NAME_PATTERN.match(name)
    return (found.group(1), found.group(2)) if found else None


def _octal(field: bytes) -> int:
    if field and field[0] & 0x80:  # GNU base-256 for sizes over 8 GiB
        return int.from_bytes(field[1:], "big")
    text = field.split(b"\0", 1)[0].strip(b" \0")
    return int(text, 8) if text else 0


def _checksum_ok(block: bytes | memoryview) -> bool:
    try:
        stored = _octal(bytes(block[148:156]))
    except ValueError:
        return False
    unsigned = sum(block[:148]) + 256 + sum(block[156:])
    if stored == unsigned:
        return True
    signed = sum(b - 256 if b > 127 else b for b in bytes(block[:148]) + bytes(block[156:]))
    return stored == signed + 256


def _name_hint(block: bytes | memoryview) -> str | None:
    """Best-effort key of a (possibly corrupt) header, for error messages."""
    raw = bytes(block[:100]).split(b"\0", 1)[0]
    try:
        parts = split_name(raw.decode("ascii"))
    except UnicodeDecodeError:
        return None
    return parts[0] if parts else None


def _pax_records(data: bytes) -> dict[str, str]:
    records: dict[str, str] = {}
    pos = 0
    while pos < len(data) and data[pos] != 0:
        space = data.index(b" ", pos)
        length = int(data[pos:space])
        key, _, value = data[space + 1 : pos + length - 1].partition(b"=")
        records[key.decode("utf-8")] = value.decode("utf-8", "surrogateescape")
        pos += length
    return records


def _extend(
    pending: dict[str, str], head: _Header, payload: bytes, shard: str, key: str | None, at: int
) -> None:
    """Record what a pax ('x') or GNU long-name ('L') header says about the next member."""
    if head.type == b"L":
        pending["path"] = payload.rstrip(b"\0").decode("utf-8", "surrogateescape")
        return
    try:
        records = _pax_records(payload)
        if "size" in records:
            int(records["size"])
    except (ValueError, IndexError, UnicodeDecodeError) as err:
        raise SampleError(
            f"corrupt pax header at byte {at} ({err}): the shard is damaged",
            shard=shard,
            key=key,
        ) from err
    pending.update(records)


def _apply(pending: dict[str, str], head: _Header) -> None:
    """Let a preceding pax / long-name header override the member's size and name."""
    if "size" in pending:
        head.size = int(pending["size"])
    if "path" in pending:
        head.name = pending["path"]
    pending.clear()


_EXTENDED = (b"x", b"L")


class _Header:
    """One parsed member header: name, payload size, type flag."""

    __slots__ = ("name", "size", "type")

    def __init__(self, name: str, size: int, type_: bytes) -> None:
        self.name, self.size, self.type = name, size, type_


def _parse_header(block: bytes | memoryview, shard: str, key: str | None, at: int) -> _Header:
    if not _checksum_ok(block):
        hint = key or _name_hint(block)
        raise SampleError(
            f"corrupt tar header at byte {at} (checksum mismatch): the shard is damaged; "
            "re-create it from the source data",
            shard=shard,
            key=hint,
        )
    try:
        size = _octal(bytes(block[124:136]))
        name = bytes(block[:100]).split(b"\0", 1)[0]
        if bytes(block[257:263]) == b"ustar\0":  # POSIX: name prefix (GNU keeps times there)
            prefix = bytes(block[345:500]).split(b"\0", 1)[0]
            if prefix:
                name = prefix + b"/" + name
        text = name.decode("utf-8", "surrogateescape")
    except ValueError as err:
        raise SampleError(
            f"corrupt tar header at byte {at} ({err})", shard=shard, key=key or _name_hint(block)
        ) from err
    return _Header(text, size, bytes(block[156:157]))


def _padded(size: int) -> int:
    return (size + BLOCK - 1) // BLOCK * BLOCK


def _integer(payload: bytes, what: str, shard: str, key: str) -> int:
    text = payload.strip()
    if not text.isdigit():
        raise SampleError(
            f"member {key}.{what} must hold a non-negative ASCII integer; got {payload[:40]!r}",
            shard=shard,
            key=key,
        )
    return int(text)


def make_sample(key: str, shard: str, fields: dict[str, bytes]) -> RawSample:
    """Check a grouped sample's `.id` and `.cls` members and build the raw sample dict."""
    for reserved in (ID_FIELD, LABEL_FIELD):
        if reserved not in fields:
            raise SampleError(
                f"sample has no '{key}.{reserved}' member (has {sorted(fields)}): not an "
                "mmsample shard, or written without ids; re-shard with `mmsample shard`",
                shard=shard,
                key=key,
            )
    sample_id = _integer(fields.pop(ID_FIELD), ID_FIELD, shard, key)
    label = _integer(fields.pop(LABEL_FIELD), LABEL_FIELD, shard, key)
    return {"key": key, "shard": shard, "id": sample_id, "label": label, "fields": fields}


def _add_field(fields: dict[str, bytes], ext: str, payload: bytes, shard: str, key: str) -> None:
    if ext in fields:
        raise SampleError(f"member {key}.{ext} appears twice in one sample", shard=shard, key=key)
    fields[ext] = payload


def parse_sample(
    data: bytes | memoryview,
    shard: str,
    *,
    expect_id: int | None = None,
    expect_key: str | None = None,
    at: int = 0,
) -> RawSample:
    """Parse the byte range of ONE sample (from the offset index) into a raw sample.

    `at` is the range's offset in the shard (for messages); `expect_id` checks the `.id` member,
    `expect_key` the members' key (and names the sample in errors before its key is read).
    """
    try:
        sample = _parse_range(data, shard, at)
    except SampleError as err:
        if err.key is not None or expect_key is None:
            raise
        raise SampleError(err.reason, shard=shard, key=expect_key) from err
    if expect_key is not None and sample["key"] != expect_key:
        raise SampleError(
            f"bytes {at}.. hold sample {sample['key']!r} but the offset index says "
            f"{expect_key!r}: {REBUILD}",
            shard=shard,
            key=expect_key,
        )
    if expect_id is not None and sample["id"] != expect_id:
        raise SampleError(
            f"holds id {sample['id']} but the offset index says {expect_id}: the index does not "
            "match the tar; rebuild it with `mmsample index`",
            shard=shard,
            key=sample["key"],
        )
    return sample


def _parse_range(data: bytes | memoryview, shard: str, at: int) -> RawSample:
    view = memoryview(data)
    pos = 0
    key: str | None = None
    fields: dict[str, bytes] = {}
    pending: dict[str, str] = {}
    while pos < len(view):
        if len(view) - pos < BLOCK:
            raise SampleError(
                f"truncated tar header at byte {at + pos}: the shard ends inside this sample; "
                "re-create the shard",
                shard=shard,
                key=key or _name_hint(view[pos:]),
            )
        block = view[pos : pos + BLOCK]
        if block == _ZERO_BLOCK:
            raise SampleError(
                f"end-of-archive marker at byte {at + pos} inside the sample's indexed range: "
                "the offset index does not match the tar; rebuild it with `mmsample index`",
                shard=shard,
                key=key,
            )
        head = _parse_header(block, shard, key, at + pos)
        if head.type not in _EXTENDED:
            _apply(pending, head)
        begin = pos + BLOCK
        stop = begin + head.size
        if stop > len(view):
            raise SampleError(
                f"member {head.name!r} needs {head.size} bytes but the shard ends after "
                f"{len(view) - begin}: the shard is truncated; re-create it",
                shard=shard,
                key=key or (split_name(head.name) or (None,))[0],
            )
        pos = begin + _padded(head.size)
        if head.type in _EXTENDED:
            _extend(pending, head, bytes(view[begin:stop]), shard, key, at + begin - BLOCK)
            continue
        name = head.name
        if head.type not in _FILE_TYPES:
            continue
        parts = split_name(name)
        if parts is None:
            raise SampleError(f"member name {name!r} has no extension", shard=shard, key=key)
        if key is None:
            key = parts[0]
        elif parts[0] != key:
            raise SampleError(
                f"member {name!r} belongs to key {parts[0]!r} but lies in the indexed range of "
                f"{key!r}: the offset index does not match the tar; rebuild it",
                shard=shard,
                key=key,
            )
        _add_field(fields, parts[1], bytes(view[begin:stop]), shard, key)
    if key is None:
        raise SampleError(f"empty sample range at byte {at}", shard=shard)
    return make_sample(key, shard, fields)


def _read_exact(stream: BinaryIO, size: int) -> bytes:
    data = stream.read(size)
    if len(data) == size:
        return data
    chunks = [data]
    got = len(data)
    while got < size:
        more = stream.read(size - got)
        if not more:
            break
        chunks.append(more)
        got += len(more)
    return b"".join(chunks)


def iter_samples(stream: BinaryIO, shard: str) -> Iterator[RawSample]:
    """Parse a whole tar from a binary stream, grouping consecutive members by key.

    Each raw sample also carries `start` / `end`: its byte range (what the offset index stores).
    """
    pos = 0
    key: str | None = None
    start = 0
    end = 0
    fields: dict[str, bytes] = {}
    pending: dict[str, str] = {}
    member_at = 0  # where the current member's headers (extended ones included) begin
    extended_at: int | None = None
    while True:
        block = _read_exact(stream, BLOCK)
        if len(block) < BLOCK:
            raise SampleError(
                f"the shard ends at byte {pos + len(block)} without an end-of-archive marker: "
                "it is truncated; re-create it",
                shard=shard,
                key=key,
            )
        if block == _ZERO_BLOCK:
            break
        head = _parse_header(block, shard, key, pos)
        if head.type not in _EXTENDED:
            _apply(pending, head)
        payload = _read_exact(stream, head.size)
        if len(payload) < head.size:
            raise SampleError(
                f"member {head.name!r} needs {head.size} bytes but the shard ends after "
                f"{len(payload)}: the shard is truncated; re-create it",
                shard=shard,
                key=(split_name(head.name) or (key,))[0],
            )
        pad = _padded(head.size) - head.size
        if pad and len(_read_exact(stream, pad)) < pad:
            raise SampleError("the shard ends inside member padding", shard=shard, key=key)
        if head.type in _EXTENDED:
            extended_at = pos if extended_at is None else extended_at
            _extend(pending, head, payload, shard, key, pos)
            pos += BLOCK + head.size + pad
            continue
        member_at = pos if extended_at is None else extended_at
        extended_at = None
        pos += BLOCK + head.size + pad
        name = head.name
        if head.type not in _FILE_TYPES:
            continue
        parts = split_name(name)
        if parts is None:
            continue  # a file without extension belongs to no sample (as in WebDataset)
        if parts[0] != key:
            if key is not None:
                yield {**make_sample(key, shard, fields), "start": start, "end": member_at}
            key, start, fields = parts[0], member_at, {}
        _add_field(fields, parts[1], payload, shard, parts[0])
        end = pos
    if key is not None:
        yield {**make_sample(key, shard, fields), "start": start, "end": end}


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
    ) -> None:
        self.root = Path(root)
        self.manifest = Manifest.load(self.root)
        self.split = check_split(self.manifest, split, owner)
        self.names = [s.name for s in self.manifest.shards]
        indexes = [self._load(info) for info in self.manifest.shards]
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
                    f"shard{where} of {self.root}, e.g. {missing[:8].tolist()}; pass ids of this "
                    "dataset (a labeled set written for another dataset?)."
                )
        rows = [i.rows for i in indexes]
        table = np.concatenate(rows) if rows else np.zeros((0, 3), dtype=np.int64)
        self.ids = np.ascontiguousarray(table[:, 0])
        self.starts = np.ascontiguousarray(table[:, 1])
        self.ends = np.ascontiguousarray(table[:, 2])
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

    def __len__(self) -> int:
        return len(self.ids)

    def _fd(self, shard: int) -> int:
        if self._pid != os.getpid():  # forked: the parent's descriptors are not ours to use
            self._fds = OrderedDict()
            self._pid = os.getpid()
        fd = self._fds.get(shard)
        if fd is None:
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
        """The raw sample at `row`, parsed from its indexed byte range."""
        shard = int(self.shard_of_row[row])
        name = self.names[shard]
        start, end = int(self.starts[row]), int(self.ends[row])
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
                key = self.key(r) or _name_hint(os.pread(fd, 100, int(self.starts[r])))
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
        """Close this process's open shard files."""
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
