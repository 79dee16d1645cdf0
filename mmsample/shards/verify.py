"""Re-read shards and check them against their manifest and offset index (`--verify`).

Place in the data flow: after the sharding tool (and by `mmsample index`, which rebuilds the
index from `scan_tar`, `count_classes` and `record_ids`). Reads tars with the standard library
`tarfile` only: member names and the small `.id` / `.cls` payloads; nothing is extracted to disk
and nothing is ever unpickled.
"""

from __future__ import annotations

import io
import json
import tarfile
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ManifestError, SampleError
from .format import (
    FIELD_PATTERN,
    ID_FIELD,
    KEY_PATTERN,
    LABEL_FIELD,
    META_FIELD,
    Manifest,
    ShardInfo,
)
from .offsets import load_index
from .table import SKIPPED_REPORT

BLOCK = 512
_MAX_SMALL = 64  # bytes: an .id or .cls member is a short ASCII integer
_MAX_META = 1 << 20  # bytes: a .json member holds a row's metadata cells


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


def _small_int(tar: tarfile.TarFile, member: tarfile.TarInfo) -> int | None:
    if member.size > _MAX_SMALL:
        return None
    f = tar.extractfile(member)
    text = f.read().decode("ascii", "replace").strip() if f is not None else ""
    return int(text) if text.isdigit() else None


def _scan(tar: tarfile.TarFile, shard: str) -> tuple[list[TarSample], list[SampleError]]:
    samples: list[TarSample] = []
    problems: list[SampleError] = []
    seen: set[str] = set()
    for m in tar:
        key, dot, ext = m.name.partition(".")
        if not m.isfile():
            problems.append(SampleError(f"member {m.name!r} is not a regular file", shard=shard))
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
            value = _small_int(tar, m)
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
    return samples, problems


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


def scan_tar(path: str | Path) -> tuple[list[TarSample], list[SampleError]]:
    """List the samples of one tar (grouped by key, with byte ranges, ids and labels) and every
    structural problem found, each naming the shard and key."""
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            return [], []  # a 0-byte file is an empty archive, as for GNU tar
        with open(path, "rb") as f, tarfile.open(fileobj=f, mode="r:") as tar:
            return _scan(tar, path.name)
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


def _parse_range(f: io.BufferedReader, start: int, end: int) -> tuple[list[str], int | None]:
    """Member names (and the `.id` value) of the tar bytes [start, end) parsed on their own."""
    f.seek(start)
    chunk = f.read(end - start)
    if len(chunk) != end - start:
        raise tarfile.ReadError(f"the file ends before byte {end}")
    with tarfile.open(fileobj=io.BytesIO(chunk + bytes(2 * BLOCK)), mode="r:") as tar:
        names, value = [], None
        for m in tar:
            names.append(m.name)
            if m.name.endswith("." + ID_FIELD):
                value = _small_int(tar, m)
    return names, value


def verify_shard(
    root: str | Path,
    info: ShardInfo,
    *,
    classes: Sequence[str],
    fields: Sequence[str],
    num_rows: int,
) -> tuple[list[TarSample], list[SampleError]]:
    """Check one shard: members, ids, labels, counts against `info`, and that every index row's
    byte range parses to exactly that sample."""
    root, name = Path(root), info.name
    path = root / name
    if not path.is_file():
        return [], [SampleError("tar file is missing", shard=name)]
    problems: list[SampleError] = []
    if path.stat().st_size != info.bytes:
        problems.append(
            SampleError(f"size {path.stat().st_size} bytes, manifest says {info.bytes}", shard=name)
        )
    samples, found = scan_tar(path)
    problems += found
    allowed = {ID_FIELD, LABEL_FIELD, META_FIELD, *fields}
    for s in samples:
        odd = [m for m in s.members if m not in allowed]
        if odd:
            problems.append(
                SampleError(f"members {odd} are not manifest fields", shard=name, key=s.key)
            )
        if not s.fields:
            problems.append(
                SampleError("the sample carries no modality field", shard=name, key=s.key)
            )
        if s.sample_id is None or not 0 <= s.sample_id < num_rows:
            problems.append(
                SampleError(
                    f"id {s.sample_id} outside the id space [0, {num_rows})", shard=name, key=s.key
                )
            )
        elif not info.first_id <= s.sample_id <= info.last_id:
            problems.append(
                SampleError(
                    f"id {s.sample_id} outside the shard's range [{info.first_id}, {info.last_id}]",
                    shard=name,
                    key=s.key,
                )
            )
        if s.label is None or not 0 <= s.label < len(classes):
            problems.append(
                SampleError(f"label {s.label} is not a class index", shard=name, key=s.key)
            )
    if len(samples) != info.count:
        problems.append(
            SampleError(f"{len(samples)} samples, manifest says {info.count}", shard=name)
        )
    counts = count_classes(samples, classes)
    if counts != info.class_counts:
        problems.append(
            SampleError(f"class counts {counts}, manifest says {info.class_counts}", shard=name)
        )
    try:
        index = load_index(root / info.index)
    except ManifestError as err:
        return samples, [*problems, SampleError(str(err), shard=name)]
    rows = index.rows
    for r, s in enumerate(samples[: len(rows)]):
        said: list[tuple[str, str | None, str]] = [("key", index.key(r), s.key)]
        if index.splits is not None:
            said.append(("split", str(index.splits[r]), s.split))
        noted = [(what, got, want) for what, got, want in said if got is not None and got != want]
        problems += [
            SampleError(
                f"index row {r} gives {what} {got!r}, the tar {want!r}", shard=name, key=s.key
            )
            for what, got, want in noted
        ]
    if len(rows) != len(samples):
        problems.append(
            SampleError(f"index has {len(rows)} rows, tar {len(samples)} samples", shard=name)
        )
    with open(path, "rb") as f:
        for (sid, start, end), s in zip(rows.tolist(), samples):
            if (sid, start, end) != (s.sample_id, s.start, s.end):
                problems.append(
                    SampleError(
                        f"index row ({sid}, {start}, {end}) != sample ({s.sample_id}, {s.start}, "
                        f"{s.end})",
                        shard=name,
                        key=s.key,
                    )
                )
                continue
            try:
                names, value = _parse_range(f, start, end)
            except (tarfile.TarError, OSError) as err:
                problems.append(
                    SampleError(f"bytes [{start}, {end}) unreadable ({err})", shard=name, key=s.key)
                )
                continue
            expected = [f"{s.key}.{m}" for m in s.members]
            if names != expected or value != sid:
                problems.append(
                    SampleError(
                        f"bytes [{start}, {end}) hold {names} with id {value}, expected {expected} "
                        f"with id {sid}",
                        shard=name,
                        key=s.key,
                    )
                )
    return samples, problems


def _read_webdataset(paths: list[Path]) -> list[tuple[str, int]]:
    import webdataset as wds

    data = wds.WebDataset([str(p) for p in paths], shardshuffle=False, empty_check=False)
    return [(s["__key__"], int(s[ID_FIELD])) for s in data]


def verify_shards(
    root: str | Path,
    infos: Sequence[ShardInfo],
    *,
    classes: Sequence[str],
    fields: Sequence[str],
    num_rows: int,
    webdataset: bool = True,
) -> tuple[list[int], list[SampleError]]:
    """Verify several shards (ids unique, id ranges ordered) and read them once with plain
    `webdataset.WebDataset`; return (every id found, problems)."""
    ids: dict[int, str] = {}
    problems: list[SampleError] = []
    expected: list[tuple[str, int]] = []
    last = -1
    for info in infos:
        samples, found = verify_shard(root, info, classes=classes, fields=fields, num_rows=num_rows)
        problems += found
        if info.first_id <= last:
            problems.append(SampleError("id range overlaps the previous shard's", shard=info.name))
        last = info.last_id
        problems += record_ids(ids, info.name, samples)
        expected += [(s.key, s.sample_id) for s in samples if s.sample_id is not None]
    if webdataset and not problems and infos:
        try:
            got = _read_webdataset([Path(root) / i.name for i in infos])
        except Exception as err:  # any failure of the third-party reader is a finding
            return sorted(ids), [SampleError(f"plain webdataset cannot read the shards ({err})")]
        if got != expected:
            diff = next((i for i, (a, b) in enumerate(zip(got, expected)) if a != b), None)
            problems.append(
                SampleError(
                    f"plain webdataset reads {len(got)} samples, tarfile {len(expected)}; first "
                    f"difference at position {diff}"
                )
            )
    return sorted(ids), problems


def verify_dataset(root: str | Path, *, webdataset: bool = True) -> list[SampleError]:
    """Check a dataset directory: every shard against manifest.json and its index, ids + skipped
    rows cover every input row exactly once, and no tar is left out of the manifest."""
    root = Path(root)
    manifest = Manifest.load(root)
    ids, problems = verify_shards(
        root,
        manifest.shards,
        classes=manifest.classes,
        fields=manifest.fields,
        num_rows=manifest.num_rows,
        webdataset=webdataset,
    )
    listed = {s.name for s in manifest.shards}
    problems += [
        SampleError("tar file is not listed in manifest.json", shard=p.name)
        for p in sorted(root.glob("*.tar"))
        if p.name not in listed and scan_tar(p) != ([], [])  # an empty tar loses nothing
    ]
    if len(ids) + manifest.skipped != manifest.num_rows:
        problems.append(
            SampleError(
                f"{len(ids)} stored + {manifest.skipped} skipped != {manifest.num_rows} input rows"
            )
        )
    report = root / SKIPPED_REPORT
    if report.exists():
        rows = [json.loads(line)["row"] for line in report.read_text().splitlines() if line]
        both = sorted(set(rows) & set(ids))
        if both or len(rows) != manifest.skipped or len(set(rows)) != len(rows):
            problems.append(
                SampleError(
                    f"skipped.jsonl lists {len(rows)} rows (manifest: {manifest.skipped}); rows "
                    f"both skipped and stored: {both[:10]}"
                )
            )
    elif manifest.skipped and manifest.extra.get("job"):
        problems.append(SampleError(f"manifest says {manifest.skipped} skipped, no skipped.jsonl"))
    return problems
