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
from collections.abc import Callable, Sequence
from pathlib import Path

from ..errors import ManifestError, SampleError
from ..shards.format import ID_FIELD, LABEL_FIELD, META_FIELD, Manifest, ShardInfo
from ..shards.offsets import OffsetIndex, load_index
from .rebuild import ScannedTar, scan_shard
from .table import SKIPPED_REPORT
from .tar_scan import BLOCK, TarSample, count_classes, record_ids, scan_tar, small_int

__all__ = [
    "check_tar_bytes",
    "verify_dataset",
    "verify_scanned",
    "verify_shard",
    "verify_shards",
]


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


def _index_row_problems(
    index: OffsetIndex, samples: list[TarSample], name: str
) -> tuple[list[TarSample], list[SampleError]]:
    """Every index row's (id, start, end) against its sample -> (the samples whose row agrees,
    a problem for each that does not)."""
    good, problems = [], []
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
        else:
            good.append(s)
    return good, problems


def check_sample_bytes(path: Path, samples: list[TarSample]) -> list[SampleError]:
    """Each sample's byte range [start, end) of the tar at `path` parsed on its own: it must
    hold exactly that sample's members and id (what an indexed read of it gets)."""
    name, problems = path.name, []
    with open(path, "rb") as f:
        for s in samples:
            start, end = s.start, s.end
            try:
                names, value = _parse_range(f, start, end)
            except (tarfile.TarError, OSError) as err:
                problems.append(
                    SampleError(f"bytes [{start}, {end}) unreadable ({err})", shard=name, key=s.key)
                )
                continue
            expected = [f"{s.key}.{m}" for m in s.members]
            if names != expected or value != s.sample_id:
                problems.append(
                    SampleError(
                        f"bytes [{start}, {end}) hold {names} with id {value}, expected {expected} "
                        f"with id {s.sample_id}",
                        shard=name,
                        key=s.key,
                    )
                )
    return problems


def _check_byte_ranges(
    path: Path, index: OffsetIndex, samples: list[TarSample]
) -> list[SampleError]:
    """Every index row's (id, start, end) against its sample, and its bytes parsed on their own
    to exactly that sample's members and id."""
    good, problems = _index_row_problems(index, samples, path.name)
    return problems + check_sample_bytes(path, good)


def _verify_scan(
    root: Path,
    info: ShardInfo,
    scan: ScannedTar,
    tar: Path | None,
    *,
    classes: Sequence[str],
    fields: Sequence[str],
    num_rows: int,
) -> list[SampleError]:
    """Check one scanned shard against `info` and its offset index in `root`; the byte ranges
    are parsed from `tar` (None: already done by `check_tar_bytes` while the tar was here)."""
    name, problems = info.name, []
    if scan.bytes != info.bytes:
        problems.append(
            SampleError(f"size {scan.bytes} bytes, manifest says {info.bytes}", shard=name)
        )
    samples = scan.samples
    problems += scan.problems
    problems += _check_samples(samples, info, classes, fields, num_rows)
    try:
        index = load_index(root / info.index)
    except ManifestError as err:
        return [*problems, SampleError(str(err), shard=name)]
    problems += _check_index_rows(index, samples, name)
    good, wrong = _index_row_problems(index, samples, name)
    problems += wrong
    if tar is not None:
        problems += check_sample_bytes(tar, good)
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
    scan = scan_shard(path)
    problems = _verify_scan(
        root, info, scan, path, classes=classes, fields=fields, num_rows=num_rows
    )
    return scan.samples, problems


def _read_webdataset(paths: list[Path]) -> list[tuple[str, int]]:
    import webdataset as wds

    data = wds.WebDataset([str(p) for p in paths], shardshuffle=False, empty_check=False)
    return [(s["__key__"], int(s[ID_FIELD])) for s in data]


def _webdataset_problems(
    paths: list[Path], expected: list[tuple[str, int]], shard: str | None = None
) -> list[SampleError]:
    """The tars at `paths` read with plain `webdataset.WebDataset`: a problem unless it yields
    exactly the (key, id) pairs `expected`, in order."""
    try:
        got = _read_webdataset(paths)
    except Exception as err:  # any failure of the third-party reader is a finding
        return [SampleError(f"plain webdataset cannot read the shards ({err})", shard=shard)]
    if got == expected:
        return []
    diff = next((i for i, (a, b) in enumerate(zip(got, expected)) if a != b), None)
    return [
        SampleError(
            f"plain webdataset reads {len(got)} samples, tarfile {len(expected)}; first "
            f"difference at position {diff}",
            shard=shard,
        )
    ]


def check_tar_bytes(path: Path, scan: ScannedTar) -> list[SampleError]:
    """The checks of `--verify` that need a shard's bytes, run while the tar at `path` is at
    hand (`mmsample index URL` deletes it next): every sample's byte range parsed on its own,
    and the tar read with plain webdataset (when its scan found no problem)."""
    problems = check_sample_bytes(path, scan.samples)
    if not problems and not scan.problems:
        expected = [(s.key, s.sample_id) for s in scan.samples if s.sample_id is not None]
        problems += _webdataset_problems([path], expected, shard=path.name)
    return problems


def _verify_all(
    root: Path,
    infos: Sequence[ShardInfo],
    check: Callable[[ShardInfo], tuple[list[TarSample], list[SampleError]]],
) -> tuple[list[int], list[SampleError], list[tuple[str, int]]]:
    """`check` each shard; ids unique, id ranges ordered -> (every id found, problems, the
    (key, id) of every sample in order)."""
    ids: dict[int, str] = {}
    problems: list[SampleError] = []
    expected: list[tuple[str, int]] = []
    last = -1
    for info in infos:
        samples, found = check(info)
        problems += found
        if info.first_id <= last:
            problems.append(SampleError("id range overlaps the previous shard's", shard=info.name))
        last = info.last_id
        problems += record_ids(ids, info.name, samples)
        expected += [(s.key, s.sample_id) for s in samples if s.sample_id is not None]
    return sorted(ids), problems, expected


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

    def check(info: ShardInfo) -> tuple[list[TarSample], list[SampleError]]:
        return verify_shard(root, info, classes=classes, fields=fields, num_rows=num_rows)

    ids, problems, expected = _verify_all(Path(root), infos, check)
    if webdataset and not problems and infos:
        problems += _webdataset_problems([Path(root) / i.name for i in infos], expected)
    return ids, problems


def _dataset_problems(
    root: Path, manifest: Manifest, ids: list[int], unlisted: list[str]
) -> list[SampleError]:
    """What only the whole dataset shows: non-empty tars (`unlisted`) missing from the
    manifest, ids + skipped rows covering every input row once, skipped.jsonl agreeing."""
    problems = [
        SampleError("tar file is not listed in manifest.json", shard=name) for name in unlisted
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
    unlisted = [
        p.name
        for p in sorted(root.glob("*.tar"))
        if p.name not in listed and scan_tar(p) != ([], [])  # an empty tar loses nothing
    ]
    return problems + _dataset_problems(root, manifest, ids, unlisted)


def verify_scanned(
    root: Path, manifest: Manifest, scans: Sequence[ScannedTar], tar_problems: list[SampleError]
) -> list[SampleError]:
    """`verify_dataset` for `mmsample index URL`, whose tars were each scanned once and checked
    by `check_tar_bytes` (`tar_problems`) before being deleted: each scan against manifest.json
    (in `root`) and its offset index, then the whole dataset's checks."""
    by_name = {s.name: s for s in scans}

    def check(info: ShardInfo) -> tuple[list[TarSample], list[SampleError]]:
        scan = by_name.get(info.name)
        if scan is None:
            return [], [SampleError("tar file is missing", shard=info.name)]
        found = _verify_scan(
            root,
            info,
            scan,
            None,
            classes=manifest.classes,
            fields=manifest.fields,
            num_rows=manifest.num_rows,
        )
        return scan.samples, found

    ids, problems, _ = _verify_all(root, manifest.shards, check)
    listed = {s.name for s in manifest.shards}
    unlisted = [s.name for s in scans if s.name not in listed and (s.samples or s.problems)]
    return tar_problems + problems + _dataset_problems(root, manifest, ids, unlisted)
