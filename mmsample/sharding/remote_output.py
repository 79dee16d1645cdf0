"""The sharding tool and `mmsample index` on a remote folder (`s3://`, `gs://`, any writable
fsspec URL): work in a local staging folder, then publish, one shard at a time, atomically.

Place in the data flow: around `shard_dataset` (`mmsample.sharding.tool`) and `rebuild`
(`mmsample.sharding.rebuild`) when their folder is a URL; `mmsample index URL` needs local room
for one tar at a time (each is downloaded, scanned, checked and deleted before the next). Publishing uploads each file to a
temporary key and renames it (`Store.put_file`); a shard's tar and index go first and its
sidecar last, and manifest.json only once every shard of the job is published (by whichever
`--part` job finishes last), so an interrupted job leaves no shard that a reader would accept:
readers start from manifest.json. A rerun uploads only the shards the remote folder lacks (the
same sidecar and tar size there). `https://` and `pipe:` are read-only: refused, naming the fix.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..errors import ManifestError, SampleError, StorageError
from ..shards.format import MANIFEST, Manifest, index_name, shard_name
from ..shards.index_bundle import BUNDLE, BUNDLE_KEY, bundle_entry, pack
from ..shards.offsets import OffsetIndex, load_index
from ..storage.location import parse_location, redact, require_local
from ..storage.store import Store, open_store
from .finalise import write_manifest
from .rebuild import rebuild_scanned, scan_shard
from .sidecars import SIDECAR_FORMAT, shard_file_number, sidecar_name
from .table import SKIPPED_REPORT, BadRowsError
from .verify import check_tar_bytes, verify_scanned

__all__ = ["index_remote", "is_remote", "publish_shards", "shard_remote", "staging_folder"]


def is_remote(out: str | Path) -> bool:
    """True if `out` is a URL of a remote store (not a path, not file://)."""
    return not parse_location(str(out)).is_local


def writable_store(out: str, what: str) -> Store:
    """The store of `out`, refused (StorageError) when read-only."""
    location = parse_location(out)
    if not location.writable:
        raise StorageError(
            f"{what}: {location.display} is read-only ({location.protocol}: cannot be written); "
            "write shards to s3://, gs://, file:// or a local folder, then serve them over "
            "https:// if you like"
        )
    return open_store(location)


@contextmanager
def staging_folder(
    staging: str | Path | None,
    parent: Path | None = None,
    keep_on: tuple[type[BaseException], ...] = (),
) -> Iterator[Path]:
    """The local folder to work in: `staging` (kept) or a new temporary one (removed after,
    unless the block raises one of `keep_on`: then its work is kept for a rerun), in `parent`
    if given (else the system's temporary folder)."""
    if staging is not None:
        path = require_local(staging, "The staging folder (--staging)")
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    path = Path(tempfile.mkdtemp(prefix="mmsample-staging-", dir=parent))
    keep = False
    try:
        yield path
    except keep_on:
        keep = True
        raise
    finally:
        if not keep:
            shutil.rmtree(path, ignore_errors=True)


def _published(store: Store, local: Path, name: str, sizes: dict[str, int]) -> bool:
    """True if `name` is in the remote folder with the local copy's size (and, for a sidecar,
    the same content)."""
    if sizes.get(name) != local.stat().st_size:
        return False
    return not name.endswith(".json") or store.read(name) == local.read_bytes()


def publish_shards(store: Store, staging: Path, numbers: list[int]) -> list[int]:
    """Upload shards `numbers` of `staging` (tar, index, then sidecar), each file atomically,
    skipping those the remote folder already holds; the numbers uploaded."""
    sizes = _sizes(store)
    done = []
    for number in numbers:
        tar = shard_name(number)
        names = [tar, index_name(tar), sidecar_name(number)]
        if not (staging / names[2]).exists():
            continue
        if all((staging / n).exists() and _published(store, staging / n, n, sizes) for n in names):
            continue
        for name in names:
            if (staging / name).exists():
                store.put_file(name, str(staging / name))
        done.append(number)
    return done


def _sizes(store: Store) -> dict[str, int]:
    """The remote folder's {name: bytes}; {} for a folder not created yet."""
    try:
        return store.sizes()
    except StorageError as err:
        if "does not exist" in str(err):
            return {}
        raise


def _remote_sidecars(store: Store, num_shards: int, job: str) -> list[dict[str, Any]] | None:
    """The remote sidecars of shards 0..num_shards-1 if every one is published by job `job`
    (its tar in place with the recorded size), else None."""
    sizes = store.sizes()
    out = []
    for number in range(num_shards):
        name = sidecar_name(number)
        if name not in sizes:
            return None
        data = json.loads(store.read(name))
        if data.get("format") != SIDECAR_FORMAT or data.get("job") != job:
            return None
        info = data.get("info")
        if info is not None and sizes.get(info["name"]) != info["bytes"]:
            return None
        out.append(data)
    return out


def finalise_remote(store: Store, num_shards: int, job: str) -> Manifest | None:
    """Publish manifest.json (and skipped.jsonl) once every shard of the job is published;
    remove the remote files of shards numbered `num_shards` or above. None if not yet."""
    sidecars = _remote_sidecars(store, num_shards, job)
    if sidecars is None:
        return None
    for name in store.sizes():
        owner = shard_file_number(name)
        if owner is not None and owner >= num_shards:
            store.remove(name)  # a shard of an earlier, longer input
    with staging_folder(None) as tmp:
        manifest = write_manifest(tmp, sidecars)
        with ThreadPoolExecutor(16) as pool:
            raws = list(pool.map(lambda s: store.read(s.index), manifest.shards))
        indexes = [load_index(store.url(s.index), raw) for s, raw in zip(manifest.shards, raws)]
        publish_bundle(store, manifest, indexes, tmp)
        if (tmp / SKIPPED_REPORT).exists():
            store.put_file(SKIPPED_REPORT, str(tmp / SKIPPED_REPORT))
        store.put_file(MANIFEST, str(tmp / MANIFEST))
    return manifest


def publish_bundle(
    store: Store, manifest: Manifest, indexes: list[OffsetIndex], folder: Path
) -> None:
    """Upload the consolidated index of `indexes` and name it (with its digest) in
    `manifest`, re-saved in `folder` for upload; nothing for indexes without keys."""
    raw = pack(indexes)
    if raw is None:
        return
    store.write_bytes(BUNDLE, raw)
    manifest.extra[BUNDLE_KEY] = bundle_entry(raw)
    manifest.save(folder)


def shard_remote(
    shard: Callable[..., Any],
    input: str | Path,
    out: str,
    staging: str | Path | None,
    check: Callable[[Any], Any] | None = None,
    **kw: Any,
) -> tuple[Any, Any]:
    """`shard(input, folder, **kw)` (the sharding tool) into a staging folder, `check(report)`
    there (the `--verify` of what is about to be uploaded), then publish the part's shards to
    `out` and manifest.json when every shard of the job is published. Returns (the report,
    with the remote manifest or None and the shards still missing; the check's result)."""
    store = writable_store(out, "mmsample shard --out")
    with staging_folder(staging, keep_on=(BadRowsError,)) as folder:
        if MANIFEST in _sizes(store) and not (folder / MANIFEST).exists():
            (folder / MANIFEST).write_bytes(store.read(MANIFEST))  # the other-job check
        try:
            report = shard(input, folder, **kw)
        except BadRowsError as err:  # nothing published; the rows' report is in staging
            named = BadRowsError(err.rows, redact(str(input)), err.report)
            named.args = (
                f"{named}\nNothing was published to {store.location.display}; the shards "
                f"written so far and the report are in the staging folder {folder}: rerun with "
                f"the same arguments and --staging {folder} to keep them.",
            )
            raise named from err
        except ManifestError as err:  # about the dataset: name its URL, not the staging folder
            raise ManifestError(str(err).replace(str(folder), store.location.display)) from err
        result = check(report) if check is not None else None
        publish_shards(store, folder, sorted(report.written + report.kept))
        per, job = report.dataset["samples_per_shard"], report.dataset["extra"]["job"]
        num_shards = math.ceil(report.dataset["num_rows"] / per)
        manifest = finalise_remote(store, num_shards, job)
        missing = 0 if manifest is not None else max(report.missing, 1)
        return replace(report, manifest=manifest, missing=missing), result


def index_remote(
    root: str,
    staging: str | Path | None,
    *,
    verify: bool = False,
    classes: Sequence[str] | None = None,
) -> tuple[Manifest, list[SampleError]]:
    """`mmsample index` on a remote folder, needing local room for one tar at a time: the
    sidecars and old manifest are downloaded into a staging folder, then each tar in name order
    is downloaded into a private subfolder of it, scanned (and, with `verify`, its byte ranges
    and a plain webdataset read checked), and deleted before the next; the indexes and manifest are rebuilt from the
    scans (`rebuild_scanned`), checked against them (`verify_scanned`) and published, every
    index, the consolidated index, then manifest.json last. Each tar is read once.
    -> (the manifest, the problems `verify` found; [] without it). ManifestError (naming the
    URL) for a tar that cannot be indexed, StorageError for a failed request."""
    store = writable_store(root, "mmsample index")
    with staging_folder(staging) as folder:
        sizes = store.sizes()
        tars = sorted(n for n in sizes if n.endswith(".tar") and not n.startswith("."))
        if not tars:
            raise ManifestError(f"no .tar shards in {store.location.display}: nothing to index")
        for name in sorted(sizes):
            if name.endswith(".json") and not name.startswith("."):
                (folder / name).write_bytes(store.read(name))
        scans, tar_problems = [], []
        # a private subfolder: tars the staging folder already holds (a shard job's) are kept
        with staging_folder(None, parent=folder) as room:
            for name in tars:
                path = room / name
                try:
                    _download(store, name, sizes[name], path)
                    scan = scan_shard(path)
                    if verify:
                        tar_problems += check_tar_bytes(path, scan)
                finally:
                    path.unlink(missing_ok=True)
                scans.append(scan)
        where = store.location.display
        manifest = rebuild_scanned(folder, scans, classes, where=where)
        problems = verify_scanned(folder, manifest, scans, tar_problems) if verify else []
        for info in manifest.shards:
            store.put_file(info.index, str(folder / info.index))
        indexes = [load_index(folder / s.index) for s in manifest.shards]
        publish_bundle(store, manifest, indexes, folder)
        if (folder / SKIPPED_REPORT).exists():
            store.put_file(SKIPPED_REPORT, str(folder / SKIPPED_REPORT))
        store.put_file(MANIFEST, str(folder / MANIFEST))
        return manifest, problems


def _download(store: Store, name: str, size: int, path: Path) -> None:
    """File `name` of `store` (`size` bytes) into `path`, in sequential chunks."""
    with open(path, "wb") as f:
        for data in store.chunks(name, 0, size):
            f.write(data)
