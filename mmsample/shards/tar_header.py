"""Tar headers: one 512-byte member header parsed by hand (ustar, pax and GNU long names).

Place in the data flow: the lowest layer of tar I/O, under `tar_samples` (members grouped into
raw samples) and `shard_table` (samples read by offset-index range). Unlike `tarfile`'s stream
mode, which ends an archive silently at a bad header, a corrupt header raises `SampleError`
naming the shard and the key.

A sparse member (GNU tar `--sparse`: an old-GNU type 'S' header, or pax `GNU.sparse.*` records
of formats 0.0, 0.1 and 1.0) stores a map and the non-zero blocks of a file, not its bytes. It is
refused, naming the member (`check_not_sparse`); `mmsample index` refuses it with the same
message (`sparse_refusal`), so no offset index of such a tar is ever written.
"""

from __future__ import annotations

import re

from ..errors import SampleError

BLOCK = 512
ZERO_BLOCK = bytes(BLOCK)
FILE_TYPES = frozenset({b"0", b"\0", b"7"})
_NAME_PATTERN = re.compile(r"^((?:.*/)?[^./]+)\.([^/]+)$")
EXTENDED = (b"x", b"L")
SPARSE = b"S"  # an old-GNU sparse member
SPARSE_RECORDS = "GNU.sparse."  # the pax records of a GNU sparse member


class Header:
    """One parsed member header: name, payload size, type flag."""

    __slots__ = ("name", "size", "type")

    def __init__(self, name: str, size: int, type_: bytes) -> None:
        self.name, self.size, self.type = name, size, type_


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


def name_hint(block: bytes | memoryview) -> str | None:
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


def record_extended(
    pending: dict[str, str], head: Header, payload: bytes, shard: str, key: str | None, at: int
) -> None:
    """Record in `pending` what a pax ('x') or GNU long-name ('L') header says about the next
    member; `at` is the header's byte offset (for messages). Raises `SampleError` on a corrupt
    pax record."""
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


def sparse_refusal(name: str) -> str:
    """Why a sparse member `name` is refused and how to fix it (one message for the readers and
    `mmsample index`)."""
    return (
        f"member {name!r} is a sparse file (written by GNU tar --sparse / -S): mmsample reads a "
        "member's bytes as stored and does not expand sparse files; re-create the tar without "
        "--sparse (GNU tar then stores the whole file), or shard the source files with "
        "`mmsample shard`"
    )


def check_not_sparse(
    pending: dict[str, str], head: Header, shard: str, key: str | None, at: int
) -> None:
    """Raise `SampleError` (naming the member, `key` or else the member's own key, and byte
    `at` of its header) if the member `head`, with the pax / long-name records `pending` before
    it, is stored sparse; call before `apply_extended`."""
    if head.type != SPARSE and not any(k.startswith(SPARSE_RECORDS) for k in pending):
        return
    name = pending.get("GNU.sparse.name") or pending.get("path") or head.name
    raise SampleError(
        f"{sparse_refusal(name)} (header at byte {at})",
        shard=shard,
        key=key or (split_name(name) or (None,))[0],
    )


def apply_extended(pending: dict[str, str], head: Header) -> None:
    """Let a preceding pax / long-name header override the member's size and name."""
    if "size" in pending:
        head.size = int(pending["size"])
    if "path" in pending:
        head.name = pending["path"]
    pending.clear()


def parse_header(block: bytes | memoryview, shard: str, key: str | None, at: int) -> Header:
    """Parse one 512-byte header `block` found at byte `at` of `shard`.

    Raises `SampleError` (naming `key`, else the header's own key) on a checksum mismatch or an
    unreadable size. A pax / long-name override is applied later (`apply_extended`).
    """
    if not _checksum_ok(block):
        hint = key or name_hint(block)
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
            f"corrupt tar header at byte {at} ({err})", shard=shard, key=key or name_hint(block)
        ) from err
    return Header(text, size, bytes(block[156:157]))


def padded(size: int) -> int:
    """`size` bytes rounded up to whole 512-byte blocks (a member's payload on disk)."""
    return (size + BLOCK - 1) // BLOCK * BLOCK
