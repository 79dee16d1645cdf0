"""Tar samples: consecutive tar members grouped by key into raw samples.

Place in the data flow: the first stage of both readers, above `tar_header`. A raw sample is a
dict `{"key", "shard", "id", "label", "fields": {ext: bytes}}`; nothing here decodes a payload (so
nothing is ever unpickled). `parse_sample` parses the byte range of one sample that the offset
index gives (what `shard_table` reads for both readers); `iter_samples` reads a whole tar
sequentially from a stream, with each sample's byte range. Every corrupt or truncated member,
and every sparse one (`tar_header.check_not_sparse`), raises `SampleError` naming the shard and
the key.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, BinaryIO

from ..errors import SampleError
from .format import ID_FIELD, LABEL_FIELD
from .offsets import REBUILD
from .tar_header import (
    BLOCK,
    EXTENDED,
    FILE_TYPES,
    ZERO_BLOCK,
    apply_extended,
    check_not_sparse,
    name_hint,
    padded,
    parse_header,
    record_extended,
    split_name,
)

RawSample = dict[str, Any]


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
                key=key or name_hint(view[pos:]),
            )
        block = view[pos : pos + BLOCK]
        if block == ZERO_BLOCK:
            raise SampleError(
                f"end-of-archive marker at byte {at + pos} inside the sample's indexed range: "
                "the offset index does not match the tar; rebuild it with `mmsample index`",
                shard=shard,
                key=key,
            )
        head = parse_header(block, shard, key, at + pos)
        if head.type not in EXTENDED:
            check_not_sparse(pending, head, shard, key, at + pos)
            apply_extended(pending, head)
        begin = pos + BLOCK
        stop = begin + head.size
        if stop > len(view):
            raise SampleError(
                f"member {head.name!r} needs {head.size} bytes but the shard ends after "
                f"{len(view) - begin}: the shard is truncated; re-create it",
                shard=shard,
                key=key or (split_name(head.name) or (None,))[0],
            )
        pos = begin + padded(head.size)
        if head.type in EXTENDED:
            record_extended(pending, head, bytes(view[begin:stop]), shard, key, at + begin - BLOCK)
            continue
        name = head.name
        if head.type not in FILE_TYPES:
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
        if block == ZERO_BLOCK:
            break
        head = parse_header(block, shard, key, pos)
        if head.type not in EXTENDED:
            check_not_sparse(pending, head, shard, key, pos)
            apply_extended(pending, head)
        payload = _read_exact(stream, head.size)
        if len(payload) < head.size:
            raise SampleError(
                f"member {head.name!r} needs {head.size} bytes but the shard ends after "
                f"{len(payload)}: the shard is truncated; re-create it",
                shard=shard,
                key=(split_name(head.name) or (key,))[0],
            )
        pad = padded(head.size) - head.size
        if pad and len(_read_exact(stream, pad)) < pad:
            raise SampleError("the shard ends inside member padding", shard=shard, key=key)
        if head.type in EXTENDED:
            extended_at = pos if extended_at is None else extended_at
            record_extended(pending, head, payload, shard, key, pos)
            pos += BLOCK + head.size + pad
            continue
        member_at = pos if extended_at is None else extended_at
        extended_at = None
        pos += BLOCK + head.size + pad
        name = head.name
        if head.type not in FILE_TYPES:
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
