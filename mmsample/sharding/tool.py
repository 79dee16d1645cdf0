"""The sharding tool behind `mmsample shard`: write the shards of an input table, resumably.

Place in the data flow: the first step. The rows of a CSV or JSONL table (read and checked by
`mmsample.sharding.table`) become WebDataset tar shards, an offset index and a sidecar per shard
(`mmsample.sharding.tasks`, in parallel processes), and `manifest.json`
(`mmsample.sharding.finalise`), which every mmsample reader starts from. Row r gets global id r
and lands in shard r // samples_per_shard. A finished shard (tar + index + sidecar) is kept on a
rerun, and `part=(i, n)` writes only the shards s with s % n == i, so a job array can share one
output directory. `mmsample index` (`mmsample.sharding.rebuild`) reuses the sidecars and the
manifest finalising.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..decoding.image_header import DEFAULT_MAX_PIXELS, check_max_pixels
from ..errors import ManifestError
from ..shards.format import MANIFEST, Manifest, ShardInfo, index_name, shard_name
from .classes import ClassOrder
from .columns import Column
from .finalise import finalise
from .media import MEDIA_THREADS, stat_rows
from .output_files import remove_stale, write_atomic
from .remote_output import is_remote, shard_remote
from .sidecars import SIDECAR_FORMAT, complete_sidecar, job_sidecar, sidecar_name
from .table import (
    BadRow,
    BadRowsError,
    InputTable,
    Row,
    bad_rows_jsonl,
    order_labels,
    read_input,
)
from .tasks import ShardTask, TaskResult, run_tasks

__all__ = ["ShardReport", "shard_dataset"]


@dataclass
class ShardReport:
    """What one `shard_dataset` run did: shards written and kept, rows skipped, the manifest."""

    out: Path
    part: tuple[int, int]
    written: list[int]
    kept: list[int]
    rows: int
    skipped: list[BadRow]
    infos: list[ShardInfo]
    dataset: dict[str, Any]
    manifest: Manifest | None
    missing: int
    classes: ClassOrder
    columns: list[Column]


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def _check_parameters(samples_per_shard: int, workers: int | None, part: tuple[int, int]) -> None:
    if isinstance(samples_per_shard, bool) or not isinstance(samples_per_shard, int):
        raise ValueError(
            f"The 'samples_per_shard' parameter must be an int; got {samples_per_shard!r}"
        )
    if samples_per_shard < 1:
        raise ValueError(
            f"The 'samples_per_shard' parameter must be >= 1; got {samples_per_shard}."
        )
    if workers is not None and (not isinstance(workers, int) or workers < 1):
        raise ValueError(f"The 'workers' parameter must be an int >= 1 or None; got {workers!r}.")
    if len(part) != 2 or not 0 <= part[0] < part[1]:
        raise ValueError(f"The 'part' parameter must be (i, n) with 0 <= i < n; got {part!r}.")


def _output_dir(out: str | Path) -> Path:
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ManifestError(f"The 'out' parameter must be a directory; {out} is a file")
    out.mkdir(parents=True, exist_ok=True)
    return out


def _dataset(table: InputTable, order: ClassOrder, samples_per_shard: int) -> dict[str, Any]:
    """What every sidecar of the job records about the dataset; `extra["job"]` hashes the input
    and the settings (a shard of another job is never kept)."""
    extra: dict[str, Any] = {
        "input_sha256": table.sha256,
        "text_fields": table.text_fields,
        "class_order": order.rule,
        "columns": {c.name: c.field or c.kind for c in table.columns},
    }
    job = _digest([extra, order.names, table.fields, samples_per_shard])
    return {
        "classes": order.names,
        "fields": table.fields,
        "num_rows": table.num_rows,
        "samples_per_shard": samples_per_shard,
        "extra": dict(extra, input=str(table.path), job=job),
    }


def _check_other_job(
    out: Path, job: str, table: InputTable, per_shard: int, overwrite: bool
) -> None:
    """Refuse to write into a directory whose manifest.json is another job's (unless
    `overwrite`)."""
    if not (out / MANIFEST).exists():
        return
    try:
        old_job = Manifest.load(out).extra.get("job")
    except ManifestError:
        old_job = None
    if old_job != job and not overwrite:
        raise ManifestError(
            f"{out} already holds {MANIFEST} of a different input or different settings "
            f"(this job: {table.path}, {per_shard} samples per shard); pass "
            "--overwrite (overwrite=True) to replace that dataset, or choose another output "
            "directory"
        )


def _plan_shard(
    out: Path,
    number: int,
    rows: list[Row],
    table: InputTable,
    dataset: dict[str, Any],
    options: tuple[bool, int | None, int],
) -> ShardTask | dict[str, Any]:
    """The task that writes shard `number` of `rows` (`options`: skip_bad, max_pixels,
    media_threads), or its sidecar if an earlier run of the same job on the same rows finished
    it (the shard is kept)."""
    job = dataset["extra"]["job"]
    skip_bad, max_pixels, threads = options
    stat_rows(rows, table.text_fields, threads=threads)
    for name in (shard_name(number), index_name(shard_name(number)), sidecar_name(number)):
        remove_stale(out, name)
    rows_doc = [
        [r.row, r.key, r.label, r.cells, r.stats, r.problems, r.meta, r.split, r.columns]
        for r in rows
    ]
    fingerprint = _digest([job, rows_doc])
    old = complete_sidecar(out, number)
    if (
        old is not None
        and old.get("job") == job
        and old.get("fingerprint") == fingerprint
        and (skip_bad or not old["skipped"])
    ):
        return old
    sidecar: dict[str, Any] = {"format": SIDECAR_FORMAT, "job": job, "shard": number}
    sidecar.update(fingerprint=fingerprint, dataset=dataset)
    names = dataset["classes"]
    return ShardTask(
        str(out), number, rows, names, table.text_fields, skip_bad, sidecar, max_pixels, threads
    )


def _shard_tasks(
    out: Path,
    table: InputTable,
    order: ClassOrder,
    dataset: dict[str, Any],
    numbers: range,
    options: tuple[bool, int | None, int],
    kept: dict[int, dict[str, Any]],
    advance: Callable[[int], object],
) -> Iterator[ShardTask]:
    """The tasks of the shards `numbers` to write, each made when it is taken (so only the
    shards in flight hold rows); a kept shard goes into `kept` (number -> sidecar), its rows
    counted done by `advance`. The first task to write removes manifest.json."""
    first = True
    per_shard = dataset["samples_per_shard"]
    for number, rows in table.shard_rows(numbers, per_shard, order):
        planned = _plan_shard(out, number, rows, table, dataset, options)
        if isinstance(planned, ShardTask):
            if first:
                (out / MANIFEST).unlink(missing_ok=True)
                first = False
            yield planned
        else:
            kept[number] = planned
            advance(len(rows))
        del planned, rows  # before the next shard's rows are made


def _run_part(
    out: Path,
    table: InputTable,
    order: ClassOrder,
    dataset: dict[str, Any],
    numbers: range,
    workers: int,
    progress: bool,
    options: tuple[bool, int | None, int],
) -> tuple[dict[int, TaskResult], dict[int, dict[str, Any]]]:
    """Write or keep the shards `numbers` (`options`: skip_bad, max_pixels, media_threads),
    with a progress bar over their rows on stderr if `progress` -> (number -> result of each
    shard written, number -> sidecar of each kept)."""
    from tqdm import tqdm

    per_shard = dataset["samples_per_shard"]
    total = sum(min(per_shard, table.num_rows - n * per_shard) for n in numbers)
    bar = tqdm(
        total=total, unit="row", disable=not progress or not total, file=sys.stderr, desc="sharding"
    )
    kept: dict[int, dict[str, Any]] = {}
    try:
        tasks = _shard_tasks(out, table, order, dataset, numbers, options, kept, bar.update)
        results = run_tasks(tasks, min(workers, len(numbers)), bar.update)
    finally:
        bar.close()
    return results, kept


def _report(
    out: Path,
    part: tuple[int, int],
    table: InputTable,
    order: ClassOrder,
    dataset: dict[str, Any],
    ran: dict[int, TaskResult],
    kept: dict[int, dict[str, Any]],
) -> ShardReport:
    """Finalise the manifest if every shard is done and describe the run."""
    per_shard, job = dataset["samples_per_shard"], dataset["extra"]["job"]
    num_shards = math.ceil(table.num_rows / per_shard)
    done = {number: (info, rows) for number, (info, rows, _) in ran.items()}
    for number, old in kept.items():
        info = ShardInfo(**old["info"]) if old["info"] else None
        done[number] = (info, [BadRow.from_json(b) for b in old["skipped"]])
    manifest = finalise(out, num_shards, job)
    missing = 0 if manifest else sum(job_sidecar(out, s, job) is None for s in range(num_shards))
    return ShardReport(
        out=out,
        part=part,
        written=sorted(ran),
        kept=sorted(kept),
        rows=sum(min(per_shard, table.num_rows - n * per_shard) for n in done),
        skipped=sorted((b for n in sorted(done) for b in done[n][1]), key=lambda b: b.row),
        infos=[info for n in sorted(done) if (info := done[n][0]) is not None],
        dataset=dataset,
        manifest=manifest,
        missing=missing,
        classes=order,
        columns=table.columns,
    )


def shard_dataset(
    input: str | Path,
    out: str | Path,
    *,
    samples_per_shard: int = 1000,
    workers: int | None = None,
    part: tuple[int, int] = (0, 1),
    skip_bad: bool = False,
    classes: Sequence[str] | None = None,
    text_fields: Sequence[str] = (),
    fields: Mapping[str, str] | None = None,
    meta: Sequence[str] = (),
    split_column: str | None = None,
    overwrite: bool = False,
    progress: bool = False,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    staging: str | Path | None = None,
    media_threads: int = MEDIA_THREADS,
) -> ShardReport:
    """Shard the rows of a CSV/JSONL table into `out`; raise BadRowsError listing every bad row
    (unless `skip_bad`), keep shards finished by an earlier run, write manifest.json when done.

    What each column holds (`mmsample.sharding.columns`): `fields` maps a column to the
    extension of the files it names (`{"image": "png"}`), `text_fields` lists inline-text
    columns, `meta` metadata columns, `split_column` the split column (default: one named
    `split`); other columns are typed by their cells. Images over `max_pixels` pixels (from the
    header; None: no limit) are bad rows: shards come from strangers, and the readers refuse
    them too. Raises ManifestError (a ValueError) for a malformed table or a parameter naming no
    column, BadRowsError for bad rows.

    `out` may be a writable URL (`s3://bucket/prefix`, `gs://...`): the shards are written in
    `staging` (default: a temporary folder, removed after) and published one shard at a time,
    atomically, manifest.json last (`mmsample.sharding.remote_output`); the report's `out` is
    then the staging folder and its `manifest` the published one (None until every part is).

    File cells (and `input` itself) may be URLs (`s3://`, `gs://`, `http(s)://`, `file://`, any
    fsspec URL; relative cells resolve against the table's folder or URL), read through
    `mmsample.storage` (`mmsample.sharding.media`): `media_threads` requests at a time per
    process (stats while planning a shard, whole reads a window of rows ahead while writing
    it). A missing object is a bad row like a missing file; any other failure (403, bad
    credentials, a server that keeps failing) raises StorageError naming the row, key and URL,
    even under `skip_bad`."""
    if is_remote(out):
        remote: dict[str, Any] = dict(
            samples_per_shard=samples_per_shard,
            workers=workers,
            part=part,
            skip_bad=skip_bad,
            classes=classes,
            text_fields=text_fields,
            fields=fields,
            meta=meta,
            split_column=split_column,
            overwrite=overwrite,
            progress=progress,
            max_pixels=max_pixels,
            media_threads=media_threads,
        )
        report: ShardReport = shard_remote(shard_dataset, input, str(out), staging, **remote)[0]
        return report
    _check_parameters(samples_per_shard, workers, part)
    if isinstance(media_threads, bool) or not isinstance(media_threads, int) or media_threads < 1:
        raise ValueError(
            f"The 'media_threads' parameter must be an int >= 1; got {media_threads!r}."
        )
    check_max_pixels(max_pixels, "shard_dataset (--max-pixels: 0 for no limit)")
    workers = workers if workers is not None else min(4, os.cpu_count() or 1)
    table = read_input(input, text_fields, fields=fields, meta=meta, split_column=split_column)
    order = order_labels(table, classes)
    out = _output_dir(out)
    dataset = _dataset(table, order, samples_per_shard)
    _check_other_job(out, dataset["extra"]["job"], table, samples_per_shard, overwrite)
    index, count = part
    bad_report = out / (
        "bad_rows.jsonl" if count == 1 else f"bad_rows.part-{index}-of-{count}.jsonl"
    )
    bad_report.unlink(missing_ok=True)
    numbers = range(index, math.ceil(table.num_rows / samples_per_shard), count)
    options = (skip_bad, max_pixels, media_threads)
    results, kept = _run_part(out, table, order, dataset, numbers, workers, progress, options)
    # Without skip_bad every bad row is an error, whether or not its shard was written: no row
    # is ever left out silently.
    bad = sorted(
        (b for _, rows, written in results.values() if not (written and skip_bad) for b in rows),
        key=lambda b: b.row,
    )
    if bad:
        write_atomic(bad_report, bad_rows_jsonl(bad))
        raise BadRowsError(bad, table.path, bad_report)
    return _report(out, part, table, order, dataset, results, kept)
