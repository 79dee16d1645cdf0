"""`mmsample index`: rebuild the offset indexes and manifest.json of a directory of tars.

Place in the data flow: beside the sharding tool (`mmsample.sharding.tool`), for shards whose
manifest or indexes are lost, or tars written by another tool. Ids and labels come from the `.id`
/ `.cls` members (`mmsample.sharding.tar_scan.scan_tar`); where the shard sidecars of a finished
`mmsample shard` job match the tars, the manifest is written from them exactly as that job would.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..errors import ManifestError, SampleError
from ..shards.format import (
    ID_FIELD,
    LABEL_FIELD,
    MANIFEST,
    Manifest,
    ShardInfo,
    index_name,
    write_index,
)
from .finalise import save_manifest, write_manifest
from .output_files import remove_stale
from .sidecars import load_sidecar, sidecar_numbers
from .tar_scan import TarSample, count_classes, record_ids, scan_tar

__all__ = ["ScannedTar", "rebuild", "rebuild_scanned", "scan_shard"]


def _index_shard(root: Path, scan: ScannedTar, classes: Sequence[str]) -> ShardInfo:
    """Write the offset index of one scanned tar into `root` and describe it (every id and
    label known); the tar itself need not be there any more."""
    samples = scan.samples
    rows = np.array([(s.sample_id, s.start, s.end) for s in samples], dtype=np.int64)
    remove_stale(root, index_name(scan.name))
    splits = [s.split for s in samples]
    keys = [s.key for s in samples]
    write_index(
        root / index_name(scan.name),
        rows.reshape(-1, 3),
        keys,
        splits if any(splits) else None,
    )
    return ShardInfo(
        name=scan.name,
        count=len(samples),
        first_id=int(rows[:, 0].min()) if len(rows) else -1,
        last_id=int(rows[:, 0].max()) if len(rows) else -1,
        bytes=scan.bytes,
        index=index_name(scan.name),
        class_counts=count_classes(samples, classes),
        split_counts=dict(sorted(Counter(s.split for s in samples if s.split).items())),
    )


def _names(tars: Sequence[ScannedTar], shown: int = 5) -> str:
    names = ", ".join(t.name for t in tars[:shown])
    return names + (f", ... ({len(tars) - shown} more)" if len(tars) > shown else "")


@dataclass
class ScannedTar:
    """One tar as `scan_shard` found it: its name, size in bytes, samples and structural
    problems (each naming the shard and key)."""

    name: str
    bytes: int
    samples: list[TarSample]
    problems: list[SampleError]


def scan_shard(tar: Path) -> ScannedTar:
    """Scan one tar (`mmsample.sharding.tar_scan.scan_tar`): the only read of its bytes that
    indexing needs."""
    samples, problems = scan_tar(tar)
    size = tar.stat().st_size if tar.is_file() else 0
    return ScannedTar(tar.name, size, samples, problems)


def _check_scans(root: str, tars: list[ScannedTar]) -> list[ScannedTar]:
    """The scanned tars holding samples. ManifestError listing every problem (structure, a
    missing id or label, an id in two places) or when no tar holds a sample."""
    problems = []
    for tar in tars:
        problems += [str(p) for p in tar.problems]
        for s in tar.samples:
            for member, value in ((ID_FIELD, s.sample_id), (LABEL_FIELD, s.label)):
                if value is None:
                    problems.append(f"{tar.name}:{s.key}: no valid {s.key}.{member} member")
    kept = tars
    if not problems:  # an empty tar (no members, or 0 bytes) holds nothing to index: left out
        kept = [t for t in tars if t.samples]
        owner: dict[int, str] = {}
        for tar in kept:
            problems += [str(p) for p in record_ids(owner, tar.name, tar.samples)]
    if problems:
        raise ManifestError(
            f"cannot index {root}: {len(problems)} problem(s):\n  " + "\n  ".join(problems[:50])
        )
    if not kept:
        raise ManifestError(
            f"no samples in {root}: its {len(tars)} .tar file(s) ({_names(tars)}) hold no "
            "samples; shard the data with `mmsample shard` (or copy in the shards that hold "
            "samples) and index again"
        )
    return kept


def rebuild(root: str | Path, classes: Sequence[str] | None = None) -> Manifest:
    """Rebuild every tar's offset index and manifest.json from the tars in `root` (ids and labels
    from the `.id` / `.cls` members); class names from `classes`, the sidecars or the old
    manifest. ManifestError for a problem in any tar, listing every one."""
    root = Path(root)
    tars = sorted(p for p in root.glob("*.tar") if p.is_file())
    if not tars:
        raise ManifestError(f"no .tar shards in {root}: nothing to index")
    return rebuild_scanned(root, [scan_shard(t) for t in tars], classes)


def rebuild_scanned(
    root: Path,
    scanned: list[ScannedTar],
    classes: Sequence[str] | None = None,
    where: str | None = None,
) -> Manifest:
    """`rebuild` from tars already scanned (`scan_shard`, in name order): the indexes,
    manifest.json and skipped.jsonl are written in `root` (with the sidecars and old manifest
    it holds), the tars themselves need not be there (`mmsample index URL` deletes each once
    scanned). `where` names the folder in errors (default: `root`)."""
    place = where or str(root)
    scans = _check_scans(place, scanned)
    old = Manifest.load(root) if (root / MANIFEST).exists() else None
    numbers = sidecar_numbers(root)
    sidecars = [d for d in (load_sidecar(root, n) for n in numbers) if d is not None]
    ds = sidecars[0]["dataset"] if sidecars else None
    names = list(classes) if classes else ds["classes"] if ds else old.classes if old else None
    if names is None:
        raise ManifestError(
            f"{place} has no {MANIFEST} or shard sidecars to take class names from: pass "
            "--classes FILE (one class name a line, in class-index order)"
        )
    top = max((s.label or 0) for scan in scans for s in scan.samples)
    if top >= len(names):
        raise ManifestError(
            f"{place}: a .cls member holds class {top}, but only {len(names)} names"
        )
    infos = [_index_shard(root, scan, names) for scan in scans]
    by_name = {d["info"]["name"]: d["info"] for d in sidecars if d["info"]}
    if (
        ds is not None
        and numbers == list(range(math.ceil(ds["num_rows"] / ds["samples_per_shard"])))
        and len(sidecars) == len(numbers)
        and all(d["job"] == ds["extra"]["job"] for d in sidecars)
        and names == ds["classes"]
        and sorted(by_name) == [i.name for i in infos]
        and all(by_name[i.name] == asdict(i) for i in infos)
    ):
        return write_manifest(root, sidecars)
    infos = sorted((i for i in infos if i.count), key=lambda i: i.first_id)
    for a, b in itertools.pairwise(infos):
        if b.first_id <= a.last_id:
            raise ManifestError(
                f"{place}: shards {a.name} and {b.name} have overlapping id ranges; readers need "
                "each shard to hold its own id range (shard with `mmsample shard`)"
            )
    num_rows = max(max((i.last_id for i in infos), default=-1) + 1, old.num_rows if old else 0)
    stored = sum(i.count for i in infos)
    extra = {k: v for k, v in (old.extra if old else {}).items() if k != "job"}
    manifest = Manifest(
        classes=list(names),
        fields=sorted({f for scan in scans for s in scan.samples for f in s.fields}),
        shards=infos,
        num_rows=num_rows,
        samples_per_shard=old.samples_per_shard
        if old
        else max((i.count for i in infos), default=1),
        skipped=num_rows - stored,
        extra=dict(extra, indexed_by="mmsample index"),
    )
    save_manifest(manifest, root)
    return manifest
