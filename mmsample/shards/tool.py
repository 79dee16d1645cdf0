"""The sharding tool behind `mmsample shard`: write the shards of an input table, resumably.

Place in the data flow: the first step. The rows of a CSV or JSONL table (read and checked by
`mmsample.shards.table`) become WebDataset tar shards, an offset index and a sidecar per shard,
and `manifest.json`, which every mmsample reader starts from. Row r gets global id r and lands in
shard r // samples_per_shard. Shards are written in parallel processes, a finished shard (tar +
index + sidecar) is kept on a rerun, and `part=(i, n)` writes only the shards s with s % n == i,
so a job array can share one output directory. `mmsample index` (`mmsample.shards.rebuild`)
reuses the sidecars and the manifest finalising here.
"""

from __future__ import annotations

import glob
import hashlib
import json
import math
import multiprocessing
import os
import re
import secrets
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..errors import ManifestError
from ..image_header import DEFAULT_MAX_PIXELS, check_max_pixels
from ..media_probe import probe
from .classes import ClassOrder
from .columns import Column
from .format import MANIFEST, Manifest, ShardInfo, index_name, shard_name
from .table import (
    DEFAULT_TEXT_FIELDS,
    MAX_ERRORS_SHOWN,
    SKIPPED_REPORT,
    BadRow,
    BadRowsError,
    InputTable,
    Row,
    bad_rows_jsonl,
    check_rows,
    read_classes,
    read_input,
    stat_files,
)
from .writer import ShardWriter

__all__ = [
    "DEFAULT_TEXT_FIELDS",
    "MAX_ERRORS_SHOWN",
    "SIDECAR_FORMAT",
    "SKIPPED_REPORT",
    "BadRow",
    "BadRowsError",
    "InputTable",
    "Row",
    "ShardReport",
    "load_sidecar",
    "read_classes",
    "read_input",
    "remove_stale",
    "save_manifest",
    "shard_dataset",
    "sidecar_name",
    "sidecar_numbers",
    "write_manifest",
]

SIDECAR_FORMAT = "mmsample-sidecar/1"
_OWN_FILE = re.compile(r"^shard-(\d{6})\.(tar|idx\.npy|json)(\.tmp)?$")
_PROGRESS: Callable[[int], Any] | None = None


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


# ---------------------------------------------------------------- one shard (runs in a worker)


def sidecar_name(number: int) -> str:
    """File name of shard `number`'s sidecar (its ShardInfo, skipped rows and job hash)."""
    return shard_name(number)[: -len(".tar")] + ".json"


def _unlink(*paths: Path) -> None:
    for p in paths:
        p.unlink(missing_ok=True)


def _write_atomic(path: Path, text: str) -> None:
    """Write through a new, uniquely named temporary file and an atomic rename: O_EXCL never
    follows a planted link, and concurrent `--part` jobs never share a temporary file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def remove_stale(out: Path, name: str) -> None:
    """Remove the temporary files a killed run left for file `name`."""
    _unlink(out / (name + ".tmp"), *out.glob(f".{glob.escape(name)}.*.tmp"))


@dataclass
class _Task:
    out: str
    number: int
    rows: list[Row]
    classes: list[str]
    text_fields: list[str]
    skip_bad: bool
    sidecar: dict[str, Any]
    max_pixels: int | None = DEFAULT_MAX_PIXELS


def _load_row(
    row: Row, text: Sequence[str], max_pixels: int | None = DEFAULT_MAX_PIXELS
) -> tuple[dict[str, bytes], list[tuple[str, str]]]:
    problems = list(row.problems)
    failed = {col for col, _ in problems}
    payloads: dict[str, bytes] = {}
    for name, value in row.cells.items():
        column = row.column(name)
        if column in failed:
            continue
        if name in text:
            try:
                payloads[name] = value.encode("utf-8")
            except UnicodeEncodeError as err:
                problems.append((column, f"text is not valid unicode ({err.reason})"))
            continue
        try:
            with open(value, "rb") as f:
                data = f.read()
        except OSError as err:
            problems.append((column, f"cannot read {value}: {err.strerror or err}"))
            continue
        try:
            probe(data, name, max_pixels=max_pixels)
        except ImportError:
            raise
        except Exception as err:
            ext = name.rsplit(".", 1)[-1]
            problems.append((column, f"unreadable .{ext} file {value}: {err}"))
            continue
        payloads[name] = data
    return payloads, problems


def _run_task(task: _Task) -> tuple[ShardInfo | None, list[BadRow], bool]:
    """Read, check and write one shard -> (info, bad rows, written). Without skip_bad a shard
    with a bad row is only checked, not written, so that every bad row is still reported."""
    out = Path(task.out)
    tar = out / shard_name(task.number)
    idx, side = out / index_name(tar.name), out / sidecar_name(task.number)
    side.unlink(missing_ok=True)  # first: a half-rewritten shard is never "done"
    for path in (tar, idx, side):
        remove_stale(out, path.name)
    labels = {name: i for i, name in enumerate(task.classes)}
    writing = task.skip_bad or not any(r.problems for r in task.rows)
    writer: ShardWriter | None = None
    bad: list[BadRow] = []
    try:
        for row in task.rows:
            payloads, problems = _load_row(row, task.text_fields, task.max_pixels)
            if _PROGRESS is not None:
                _PROGRESS(1)
            if problems:
                bad.append(row.bad(problems))
                if not task.skip_bad:  # one bad row: the shard is only checked from here on
                    if writer is not None:
                        writer.abort()
                    writer, writing = None, False
                continue
            if writing:
                writer = writer or ShardWriter(tar, task.classes)
                writer.write(
                    str(row.key),
                    row.row,
                    labels[row.label],
                    payloads,
                    meta=row.meta,
                    split=row.split,
                )
        info = writer.close() if writer is not None else None
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    if not writing:
        _unlink(tar, idx)
        return None, bad, False
    if info is None:
        _unlink(tar, idx)  # every row skipped: the sidecar alone records the shard
    doc = dict(task.sidecar, info=asdict(info) if info else None)
    doc["skipped"] = [b.to_json() for b in bad]
    _write_atomic(side, json.dumps(doc, indent=1, sort_keys=True))
    return info, bad, True


def _init_worker(counter: Any) -> None:
    global _PROGRESS

    def tick(n: int) -> None:
        with counter.get_lock():
            counter.value += n

    _PROGRESS = tick


def _run_tasks(tasks: list[_Task], workers: int, progress: bool, total: int) -> list[Any]:
    global _PROGRESS
    from tqdm import tqdm

    bar = tqdm(
        total=total, unit="row", disable=not progress or not total, file=sys.stderr, desc="sharding"
    )
    try:
        if workers <= 1 or len(tasks) <= 1:
            _PROGRESS = bar.update
            try:
                return [_run_task(t) for t in tasks]
            finally:
                _PROGRESS = None
        ctx = multiprocessing.get_context("spawn")
        counter = ctx.Value("q", 0)
        results: dict[int, Any] = {}
        with ProcessPoolExecutor(
            min(workers, len(tasks)), ctx, initializer=_init_worker, initargs=(counter,)
        ) as pool:
            pending = {pool.submit(_run_task, t): i for i, t in enumerate(tasks)}
            waiting = set(pending)
            while waiting:
                done, waiting = wait(waiting, timeout=0.25, return_when=FIRST_COMPLETED)
                bar.update(counter.value - bar.n)
                for future in done:
                    if future.exception() is not None:
                        pool.shutdown(wait=True, cancel_futures=True)
                    results[pending[future]] = future.result()
        return [results[i] for i in range(len(tasks))]
    finally:
        bar.close()


# ---------------------------------------------------------------- the job


def load_sidecar(out: Path, number: int) -> dict[str, Any] | None:
    """Shard `number`'s sidecar as written (None if absent or not a sidecar), complete or not."""
    try:
        data = json.loads((out / sidecar_name(number)).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("format") == SIDECAR_FORMAT else None


def _read_sidecar(out: Path, number: int) -> dict[str, Any] | None:
    """Shard `number`'s sidecar if the shard is complete (its tar and index are in place)."""
    data = load_sidecar(out, number)
    if data is None:
        return None
    info = data.get("info")
    if info is not None:
        tar = out / info["name"]
        if not tar.is_file() or tar.stat().st_size != info["bytes"]:
            return None
        if not (out / info["index"]).is_file():
            return None
    return data


def _done(out: Path, number: int, job: str) -> dict[str, Any] | None:
    data = _read_sidecar(out, number)
    return data if data is not None and data.get("job") == job else None


def sidecar_numbers(out: Path) -> list[int]:
    """The numbers of the shards that have a sidecar file in `out`, ascending."""
    matches = (_OWN_FILE.match(p.name) for p in out.glob("shard-*.json"))
    return sorted(int(m.group(1)) for m in matches if m and m.group(2) == "json" and not m.group(3))


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
        _write_atomic(report, bad_rows_jsonl(skipped))
    else:
        report.unlink(missing_ok=True)
    save_manifest(manifest, out)
    return manifest


def save_manifest(manifest: Manifest, out: Path) -> None:
    """`Manifest.save` into a private new directory, then an atomic rename into `out`: never
    through a planted link, and safe when two `--part` jobs finish at the same time."""
    remove_stale(out, MANIFEST)
    private = Path(tempfile.mkdtemp(dir=out, prefix=".manifest-"))
    try:
        os.replace(manifest.save(private), out / MANIFEST)
    finally:
        _unlink(*private.iterdir())
        private.rmdir()


def _finalise(out: Path, num_shards: int, job: str) -> Manifest | None:
    """manifest.json once every shard of the job is done (by any part), else None."""
    sidecars = []
    for number in range(num_shards):
        data = _done(out, number, job)
        if data is None:
            return None
        sidecars.append(data)
    for path in out.iterdir():
        match = _OWN_FILE.match(path.name)
        if match and int(match.group(1)) >= num_shards:
            path.unlink()  # a shard of an earlier, longer input
    return write_manifest(out, sidecars)


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
) -> ShardReport:
    """Shard the rows of a CSV/JSONL table into `out`; raise BadRowsError listing every bad row
    (unless `skip_bad`), keep shards finished by an earlier run, write manifest.json when done.

    What each column holds (`mmsample.shards.columns`): `fields` maps a column to the extension
    of the files it names (`{"image": "png"}`), `text_fields` lists inline-text columns, `meta`
    metadata columns, `split_column` the split column (default: one named `split`); other
    columns are typed by their cells. Images over `max_pixels` pixels (from the header; None: no
    limit) are bad rows: shards come from strangers, and the readers refuse them too. Raises ManifestError (a ValueError) for a malformed table
    or a parameter naming no column, BadRowsError for bad rows."""
    _check_parameters(samples_per_shard, workers, part)
    check_max_pixels(max_pixels, "shard_dataset (--max-pixels: 0 for no limit)")
    workers = workers if workers is not None else min(4, os.cpu_count() or 1)
    table = read_input(input, text_fields, fields=fields, meta=meta, split_column=split_column)
    order = check_rows(table, classes)
    names = order.names
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ManifestError(f"The 'out' parameter must be a directory; {out} is a file")
    out.mkdir(parents=True, exist_ok=True)
    extra: dict[str, Any] = {
        "input_sha256": table.sha256,
        "text_fields": table.text_fields,
        "class_order": order.rule,
        "columns": {c.name: c.field or c.kind for c in table.columns},
    }
    job = _digest([extra, names, table.fields, samples_per_shard])
    dataset = {
        "classes": names,
        "fields": table.fields,
        "num_rows": len(table.rows),
        "samples_per_shard": samples_per_shard,
        "extra": dict(extra, input=str(table.path), job=job),
    }
    manifest_path = out / MANIFEST
    if manifest_path.exists():
        try:
            old_job = Manifest.load(out).extra.get("job")
        except ManifestError:
            old_job = None
        if old_job != job and not overwrite:
            raise ManifestError(
                f"{out} already holds {MANIFEST} of a different input or different settings "
                f"(this job: {table.path}, {samples_per_shard} samples per shard); pass "
                "--overwrite (overwrite=True) to replace that dataset, or choose another output "
                "directory"
            )
    index, count = part
    num_shards = math.ceil(len(table.rows) / samples_per_shard)
    tasks: list[_Task] = []
    kept: list[tuple[int, dict[str, Any]]] = []
    for number in range(index, num_shards, count):
        rows = table.rows[number * samples_per_shard : (number + 1) * samples_per_shard]
        for row in rows:
            stat_files(row, table.text_fields)
        for name in (shard_name(number), index_name(shard_name(number)), sidecar_name(number)):
            remove_stale(out, name)
        rows_doc = [
            [r.row, r.key, r.label, r.cells, r.stats, r.problems, r.meta, r.split, r.columns]
            for r in rows
        ]
        fingerprint = _digest([job, rows_doc])
        old = _read_sidecar(out, number)
        if (
            old is not None
            and old.get("job") == job
            and old.get("fingerprint") == fingerprint
            and (skip_bad or not old["skipped"])
        ):
            kept.append((number, old))
            continue
        sidecar: dict[str, Any] = {"format": SIDECAR_FORMAT, "job": job, "shard": number}
        sidecar.update(fingerprint=fingerprint, dataset=dataset)
        tasks.append(
            _Task(str(out), number, rows, names, table.text_fields, skip_bad, sidecar, max_pixels)
        )
    if tasks:
        manifest_path.unlink(missing_ok=True)
    bad_report = out / (
        "bad_rows.jsonl" if count == 1 else f"bad_rows.part-{index}-of-{count}.jsonl"
    )
    bad_report.unlink(missing_ok=True)
    total = sum(len(t.rows) for t in tasks)
    results = _run_tasks(tasks, workers, progress, total)
    # Without skip_bad every bad row is an error, whether or not its shard was written: no row
    # is ever left out silently.
    bad = sorted(
        (b for _, rows, written in results if not (written and skip_bad) for b in rows),
        key=lambda b: b.row,
    )
    if bad:
        _write_atomic(bad_report, bad_rows_jsonl(bad))
        raise BadRowsError(bad, table.path, bad_report)
    done = {t.number: (info, rows) for t, (info, rows, _) in zip(tasks, results)}
    for number, old in kept:
        info = ShardInfo(**old["info"]) if old["info"] else None
        done[number] = (info, [BadRow.from_json(b) for b in old["skipped"]])
    manifest = _finalise(out, num_shards, job)
    missing = 0 if manifest else sum(_done(out, s, job) is None for s in range(num_shards))
    return ShardReport(
        out=out,
        part=part,
        written=sorted(t.number for t in tasks),
        kept=sorted(n for n, _ in kept),
        rows=sum(min(samples_per_shard, len(table.rows) - n * samples_per_shard) for n in done),
        skipped=sorted((b for n in sorted(done) for b in done[n][1]), key=lambda b: b.row),
        infos=[done[n][0] for n in sorted(done) if done[n][0] is not None],
        dataset=dataset,
        manifest=manifest,
        missing=missing,
        classes=order,
        columns=table.columns,
    )
