"""Re-read shards and check them against their manifest and offset index (`--verify`).

Place in the data flow: after the sharding tool (`mmsample shard --verify`, `mmsample index
--verify`). Each tar is scanned (`mmsample.sharding.tar_scan`), its samples checked against the
manifest's `ShardInfo`, every offset index row's byte range parsed on its own, and the shards
read once more with plain `webdataset`. Reads tars with the standard library `tarfile` only:
nothing is extracted to disk and nothing is ever unpickled.
"""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Sequence
from pathlib import Path

from ..errors import ManifestError, SampleError
from ..shards.format import ID_FIELD, LABEL_FIELD, META_FIELD, Manifest, ShardInfo
from ..shards.offsets import OffsetIndex, load_index
from .table import SKIPPED_REPORT
from .tar_scan import BLOCK, TarSample, count_classes, record_ids, scan_tar, small_int

__all__ = ["verify_dataset", "verify_shard", "verify_shards"]


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
                value = small_int(tar, m)
    return names, value


def _check_samples(
    samples: list[TarSample],
    info: ShardInfo,
    classes: Sequence[str],
    fields: Sequence[str],
    num_rows: int,
) -> list[SampleError]:
    """Each sample's members, id and label against the manifest, then the shard's counts."""
    name, problems = info.name, []
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
    return problems


def _check_index_rows(index: OffsetIndex, samples: list[TarSample], name: str) -> list[SampleError]:
    """The index's keys and splits against the tar's samples, and its row count."""
    problems: list[SampleError] = []
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
    return problems


def _check_byte_ranges(
    path: Path, index: OffsetIndex, samples: list[TarSample]
) -> list[SampleError]:
    """Every index row's (id, start, end) against its sample, and its bytes parsed on their own
    to exactly that sample's members and id."""
    name, problems = path.name, []
    with open(path, "rb") as f:
        for (sid, start, end), s in zip(index.rows.tolist(), samples):
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
    return problems


def verify_shard(
    root: str | Path,
    info: ShardInfo,
    *,
    classes: Sequence[str],
    fields: Sequence[str],
    num_rows: int,
) -> tuple[list[TarSample], list[SampleError]]:
    """Check one shard: members, ids, labels, counts against `info`, and that every index row's
    byte range parses to exactly that sample -> (its samples, every problem found, each a
    SampleError naming the shard and, where one is at fault, the key)."""
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
    problems += _check_samples(samples, info, classes, fields, num_rows)
    try:
        index = load_index(root / info.index)
    except ManifestError as err:
        return samples, [*problems, SampleError(str(err), shard=name)]
    problems += _check_index_rows(index, samples, name)
    problems += _check_byte_ranges(path, index, samples)
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
