"""The manifest of a sharding job: written from the sidecars once every shard is done.

Place in the data flow: the last step of `mmsample shard` (`mmsample.sharding.tool`), run by
whichever `--part` job finishes last, and of `mmsample index` (`mmsample.sharding.rebuild`):
manifest.json (what every reader starts from), index-bundle.npy (every shard's offset index in
one file, for a copy on object storage) and skipped.jsonl (the rows left out).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from ..shards.format import MANIFEST, Manifest, ShardInfo
from ..shards.index_bundle import BUNDLE, BUNDLE_KEY, bundle_entry, pack
from ..shards.offsets import load_index
from .output_files import remove_stale, unlink_all, write_atomic
from .sidecars import job_sidecar, shard_file_number
from .table import SKIPPED_REPORT, BadRow, bad_rows_jsonl

__all__ = ["finalise", "save_manifest", "write_bundle", "write_manifest"]


def write_manifest(out: Path, sidecars: list[dict[str, Any]]) -> Manifest:
    """Write manifest.json (and skipped.jsonl) from the sidecars of every shard, in order."""
    ds = sidecars[0]["dataset"]
    skipped = sorted(
        (BadRow.from_json(b) for d in sidecars for b in d["skipped"]), key=lambda b: b.row
    )
    manifest = Manifest(
        classes=list(ds["classes"]),
        fields=list(ds["fields"]),
        shards=[ShardInfo(**d["info"]) for d in sidecars if d["info"] is not None],
        num_rows=int(ds["num_rows"]),
        samples_per_shard=int(ds["samples_per_shard"]),
        skipped=len(skipped),
        extra=dict(ds["extra"]),
    )
    report = out / SKIPPED_REPORT
    if skipped:
        write_atomic(report, bad_rows_jsonl(skipped))
    else:
        report.unlink(missing_ok=True)
    save_manifest(manifest, out)
    return manifest


def write_bundle(manifest: Manifest, out: Path) -> None:
    """Write the consolidated offset index of `manifest`'s shards (`index-bundle.npy`, from
    their index files in `out`) and name it with its SHA-256 in `manifest.extra`, so that a
    copy of the folder on object storage (`aws s3 sync`, `gsutil rsync`) opens in two requests.
    When a shard's index is not in `out` (a remote job's staging folder) or has no key column
    (written before keys were stored), no bundle: an older entry is dropped with its file."""
    manifest.extra.pop(BUNDLE_KEY, None)
    paths = [out / s.index for s in manifest.shards]
    raw = pack([load_index(p) for p in paths]) if all(p.is_file() for p in paths) else None
    if raw is None:
        unlink_all(out / BUNDLE)
        return
    remove_stale(out, BUNDLE)
    write_atomic(out / BUNDLE, raw)
    manifest.extra[BUNDLE_KEY] = bundle_entry(raw)


def save_manifest(manifest: Manifest, out: Path) -> None:
    """The consolidated index (`write_bundle`), then `Manifest.save` into a private new
    directory and an atomic rename into `out`: never through a planted link, and safe when
    two `--part` jobs finish at the same time."""
    write_bundle(manifest, out)
    remove_stale(out, MANIFEST)
    private = Path(tempfile.mkdtemp(dir=out, prefix=".manifest-"))
    try:
        os.replace(manifest.save(private), out / MANIFEST)
    finally:
        unlink_all(*private.iterdir())
        private.rmdir()


def finalise(out: Path, num_shards: int, job: str) -> Manifest | None:
    """manifest.json once every shard of the job is done (by any part), else None. Files of
    shards numbered `num_shards` or above (an earlier, longer input) are removed."""
    sidecars = []
    for number in range(num_shards):
        data = job_sidecar(out, number, job)
        if data is None:
            return None
        sidecars.append(data)
    for path in out.iterdir():
        owner = shard_file_number(path.name)
        if owner is not None and owner >= num_shards:
            path.unlink()  # a shard of an earlier, longer input
    return write_manifest(out, sidecars)
