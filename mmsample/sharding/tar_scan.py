"""Scan a tar shard with the standard library: its samples (key, members, byte range, id,
label, split) and every structural problem.

Place in the data flow: after the sharding tool, `--verify` (`mmsample.sharding.verify`) checks
the scan against the manifest and the offset index, and `mmsample index`
(`mmsample.sharding.rebuild`) builds the index from it. Only member names and the small
`.id` / `.cls` / `.json` payloads are read; nothing is extracted to disk and nothing is ever
unpickled.
"""

from __future__ import annotations

import json
import re
import tarfile
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from ..errors import SampleError
from ..shards.format import (
    FIELD_PATTERN,
    ID_FIELD,
    KEY_PATTERN,
    LABEL_FIELD,
    META_FIELD,
    RESERVED_FIELDS,
)
from ..shards.tar_header import sparse_refusal, split_name

__all__ = ["BLOCK", "TarSample", "count_classes", "record_ids", "scan_tar", "small_int"]

BLOCK = 512
_MAX_SMALL = 64  # bytes: an .id or .cls member is a short ASCII integer
_MAX_META = 1 << 20  # bytes: a .json member holds a row's metadata cells
_DOTTED = re.compile(r"^[a-z0-9_]+(\.[a-z0-9_]+)+$")  # what follows a key's first dot


@dataclass
class TarSample:
    """One sample as found in a tar: its key, members in order, byte range, id and label."""

    key: str
    members: list[str] = field(default_factory=list)
    start: int = 0
    end: int = 0
    sample_id: int | None = None
    label: int | None = None
    split: str = ""

    @property
    def fields(self) -> list[str]:
        """The modality fields (member extensions other than `id`, `cls` and `json`)."""
        return [m for m in self.members if m not in (ID_FIELD, LABEL_FIELD, META_FIELD)]


def small_int(tar: tarfile.TarFile, member: tarfile.TarInfo) -> int | None:
    """The integer an `.id` / `.cls` member holds (short ASCII digits), None if it holds
    anything else."""
    if member.size > _MAX_SMALL:
        return None
    f = tar.extractfile(member)
    text = f.read().decode("ascii", "replace").strip() if f is not None else ""
    return int(text) if text.isdigit() else None


def _scan(tar: tarfile.TarFile, shard: str) -> tuple[list[TarSample], list[SampleError]]:
    samples: list[TarSample] = []
    problems: list[SampleError] = []
    seen: set[str] = set()
    members = tar.getmembers()  # tarfile keeps them all anyway; names first, for dotted keys
    known = _dotted_keys(m.name for m in members if m.isfile())
    dotted: dict[str, list[str]] = {}  # dotted key -> its members' names, in tar order
    for m in members:
        key, dot, ext = m.name.partition(".")
        if not m.isfile():
            problems.append(SampleError(f"member {m.name!r} is not a regular file", shard=shard))
            continue
        owner = _dotted_owner(m.name, known)
        if owner is not None:
            dotted.setdefault(owner, []).append(m.name)
            continue
        if not (dot and KEY_PATTERN.match(key) and FIELD_PATTERN.match(ext)):
            problems.append(
                SampleError(
                    f"member name {m.name!r} is not KEY.EXT (key: letters, digits, '_', '-'; "
                    "ext: lower-case letters, digits, '_')",
                    shard=shard,
                )
            )
            continue
        if not samples or samples[-1].key != key:
            if key in seen:
                problems.append(
                    SampleError("members of this key are not contiguous", shard=shard, key=key)
                )
            seen.add(key)
            samples.append(TarSample(key, start=m.offset))
        sample = samples[-1]
        if ext in sample.members:
            problems.append(SampleError(f"member .{ext} appears twice", shard=shard, key=key))
        sample.members.append(ext)
        sample.end = m.offset_data + -(-m.size // BLOCK) * BLOCK
        if ext in (ID_FIELD, LABEL_FIELD):
            value = small_int(tar, m)
            if value is None:
                problems.append(
                    SampleError(f"{key}.{ext} does not hold an integer", shard=shard, key=key)
                )
            elif ext == ID_FIELD:
                sample.sample_id = value
            else:
                sample.label = value
        elif ext == META_FIELD:
            try:
                sample.split = _split_of(tar, m)
            except ValueError as err:
                problems.append(
                    SampleError(f"{key}.{ext} is not UTF-8 JSON ({err})", shard=shard, key=key)
                )
    problems += [_dotted_problem(shard, key, names) for key, names in dotted.items()]
    return samples, problems


def _dotted_keys(names: Iterable[str]) -> set[str]:
    """The dotted keys that members ending in a reserved field show: `.id`, `.cls` and
    `.json` are never the EXT of a `NAME.EXT` field, so `song.v2.id` is the id of `song.v2`."""
    out = set()
    for name in names:
        key, _, field = name.partition(".")
        if KEY_PATTERN.match(key) and _DOTTED.match(field):
            stem, ext = name.rsplit(".", 1)
            if ext in RESERVED_FIELDS:
                out.add(stem)
    return out


def _dotted_owner(name: str, known: set[str]) -> str | None:
    """The dotted key member `name` belongs to, or None for a plain `KEY.EXT` / `KEY.NAME.EXT`
    member: the longest key of `known` it starts with, else (more dots than `KEY.NAME.EXT`
    has) all before its last extension."""
    key, _, field = name.partition(".")
    if not (KEY_PATTERN.match(key) and _DOTTED.match(field)):
        return None
    owners = [k for k in known if name.startswith(k + ".")]
    if owners:
        return max(owners, key=len)
    return name.rsplit(".", 1)[0] if field.count(".") > 1 else None


def _dotted_problem(shard: str, key: str, names: list[str]) -> SampleError:
    """The refusal of one dotted key, naming its members and the fix."""
    first, _, field = names[0].partition(".")
    what = f"member {names[0]!r} has" if len(names) == 1 else f"members {names} have"
    return SampleError(
        f"{what} the dotted key {key!r}: a key holds no '.' (letters, digits, '_', '-'); a "
        f"field may be NAME.EXT, so {names[0]!r} reads as key {first!r} with field {field!r}. "
        f"Rename the key, e.g. {key.replace('.', '_')!r}, and shard again",
        shard=shard,
        key=key,
    )


def _split_of(tar: tarfile.TarFile, member: tarfile.TarInfo) -> str:
    """The `split` entry of a sample's metadata member: "" if it has none, or if the member
    follows another convention (a tar from another tool: not an object, a non-text split, or
    larger than the metadata of one row); ValueError if it is not JSON at all."""
    if member.size > _MAX_META:
        return ""
    f = tar.extractfile(member)
    meta = json.loads(f.read().decode("utf-8")) if f is not None else {}
    split = meta.get("split", "") if isinstance(meta, dict) else ""
    return split if isinstance(split, str) else ""


def _sparse_members(tar: tarfile.TarFile, shard: str) -> list[SampleError]:
    """A problem for every sparse member of a scanned tar (GNU `--sparse`, old-GNU or pax
    formats): the readers refuse them (`mmsample.shards.tar_header.check_not_sparse`), so no
    index of such a tar is written."""
    return [
        SampleError(sparse_refusal(m.name), shard=shard, key=(split_name(m.name) or (None,))[0])
        for m in tar.getmembers()
        if m.issparse()
    ]


def _trailing_data(f: BinaryIO, tar: tarfile.TarFile, shard: str) -> list[SampleError]:
    """A problem if anything but zeros follows the last member: `tarfile` ends an archive
    silently at a header whose checksum is wrong, so a corrupt header would otherwise drop
    every member after it without a word."""
    members = tar.getmembers()
    end = max((m.offset_data + -(-m.size // BLOCK) * BLOCK for m in members), default=0)
    f.seek(end)
    pos = end
    for block in iter(lambda: f.read(1 << 16), b""):
        if block.strip(b"\0"):
            at = pos + len(block) - len(block.lstrip(b"\0"))
            return [
                SampleError(
                    f"byte {at} (after the last member read, which ends at byte {end}) is not "
                    "the end of the archive: the tar header there is corrupt, and every "
                    "member from there on is unreadable; shard the data again",
                    shard=shard,
                )
            ]
        pos += len(block)
    return []


def scan_tar(path: str | Path) -> tuple[list[TarSample], list[SampleError]]:
    """List the samples of one tar (grouped by key, with byte ranges, ids and labels) and every
    structural problem found (a sparse member among them), each naming the shard and key."""
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            return [], []  # a 0-byte file is an empty archive, as for GNU tar
        with open(path, "rb") as f, tarfile.open(fileobj=f, mode="r:") as tar:
            samples, problems = _scan(tar, path.name)
            problems += _trailing_data(f, tar, path.name)
            return samples, _sparse_members(tar, path.name) + problems
    except (tarfile.TarError, OSError, EOFError) as err:
        return [], [SampleError(f"not a readable tar file ({err})", shard=path.name)]


def count_classes(samples: Iterable[TarSample], classes: Sequence[str]) -> dict[str, int]:
    """Samples per class name, in class-index order; a sample without a valid label is left
    out (what a manifest's `class_counts` records for one shard)."""
    counts = Counter(
        s.label for s in samples if s.label is not None and 0 <= s.label < len(classes)
    )
    return {classes[k]: n for k, n in sorted(counts.items())}


def record_ids(
    owner: dict[int, str], shard: str, samples: Iterable[TarSample]
) -> list[SampleError]:
    """Record in `owner` (id -> shard name) that `shard` holds each sample's id; an id that is
    already recorded is a problem, since ids are unique across a dataset."""
    problems: list[SampleError] = []
    for s in samples:
        if s.sample_id is not None:
            if s.sample_id in owner:
                problems.append(
                    SampleError(
                        f"id {s.sample_id} also in {owner[s.sample_id]}", shard=shard, key=s.key
                    )
                )
            owner[s.sample_id] = shard
    return problems
