"""The sharding tool behind `mmsample shard` and `mmsample index`.

Place in the data flow: the first step. A CSV or JSONL table (one row per sample: `key`, `label`,
one column per modality field) becomes WebDataset tar shards, an offset index and a sidecar per
shard, and `manifest.json`, which every mmsample reader starts from. Row r gets global id r and
lands in shard r // samples_per_shard. Shards are written in parallel processes, a finished shard
(tar + index + sidecar) is kept on a rerun, and `part=(i, n)` writes only the shards s with
s % n == i, so a job array can share one output directory.
"""

from __future__ import annotations

import csv
import glob
import hashlib
import itertools
import json
import math
import multiprocessing
import os
import re
import secrets
import stat
import sys
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ManifestError
from ..media_probe import probe
from .format import (
    ID_FIELD,
    LABEL_FIELD,
    MANIFEST,
    Manifest,
    ShardInfo,
    check_field,
    check_key,
    index_name,
    shard_name,
    write_index,
)
from .verify import TarSample, scan_tar
from .writer import ShardWriter

SIDECAR_FORMAT = "mmsample-sidecar/1"
SKIPPED_REPORT = "skipped.jsonl"
DEFAULT_TEXT_FIELDS = ("txt",)
MAX_ERRORS_SHOWN = 20
_OWN_FILE = re.compile(r"^shard-(\d{6})\.(tar|idx\.npy|json)(\.tmp)?$")
_PROGRESS: Callable[[int], Any] | None = None


@dataclass
class BadRow:
    """One input row that cannot become a sample, with every reason found (column, reason)."""

    row: int
    line: int
    key: str | None
    reasons: list[tuple[str, str]]

    def describe(self) -> str:
        """One line: `row 3 (line 5, key 'a'): mp4: file not found: ...`."""
        why = "; ".join(f"{col}: {reason}" for col, reason in self.reasons)
        return f"row {self.row} (line {self.line}, key {self.key!r}): {why}"

    def to_json(self) -> dict[str, Any]:
        reasons = [{"column": c, "reason": r} for c, r in self.reasons]
        return {"row": self.row, "line": self.line, "key": self.key, "reasons": reasons}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BadRow:
        reasons = [(r["column"], r["reason"]) for r in data["reasons"]]
        return cls(data["row"], data["line"], data["key"], reasons)


class BadRowsError(ManifestError):
    """Rows of the input that cannot be sharded; the shards holding them were not written."""

    def __init__(self, rows: list[BadRow], source: Path, report: Path) -> None:
        self.rows = rows
        self.report = report
        shown = "\n".join("  " + r.describe() for r in rows[:MAX_ERRORS_SHOWN])
        more = len(rows) - MAX_ERRORS_SHOWN
        tail = f"\n  ... and {more} more" if more > 0 else ""
        super().__init__(
            f"{len(rows)} bad row(s) in {source}; the shards holding them were not written "
            "(the other shards were, and a rerun keeps them). Fix these rows and run again, "
            f"or pass --skip-bad to leave them out:\n{shown}{tail}\nevery bad row: {report}"
        )


@dataclass
class Row:
    """One input row after parsing: field cells hold inline text or a resolved file path."""

    row: int
    line: int
    key: str | None
    label: str
    cells: dict[str, str]
    problems: list[tuple[str, str]] = field(default_factory=list)
    stats: dict[str, tuple[int, int]] = field(default_factory=dict)
    key_ok: bool = False

    def bad(self, reasons: list[tuple[str, str]]) -> BadRow:
        return BadRow(self.row, self.line, self.key, reasons)


@dataclass
class InputTable:
    """The parsed input manifest: its rows, field columns and content hash."""

    path: Path
    sha256: str
    fields: list[str]
    text_fields: list[str]
    rows: list[Row]


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


# ---------------------------------------------------------------- reading the input table


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_columns(names: Iterable[str], where: str) -> list[str]:
    fields = []
    for name in names:
        if name in ("key", "label"):
            continue
        try:
            fields.append(check_field(name))
        except ManifestError as err:
            raise ManifestError(f"{where}: column {name!r} cannot be a field: {err}") from None
    return fields


def _make_row(
    n: int, line: int, record: dict[str, Any], fields: list[str], text: set[str], base: Path
) -> Row:
    problems: list[tuple[str, str]] = []
    key, label = record.get("key"), record.get("label")
    key_ok = False
    if not isinstance(key, str) or not key.strip():
        problems.append(("key", "missing or empty key" if not key else f"not a string: {key!r}"))
        key = None if not isinstance(key, str) else key
    else:
        key = key.strip()
        try:
            check_key(key)
            key_ok = True
        except ManifestError:
            problems.append(("key", f"{key!r} is not allowed: only letters, digits, '_', '-'"))
    if isinstance(label, int) and not isinstance(label, bool):
        label = str(label)
    if not isinstance(label, str) or not label.strip():
        problems.append(("label", "missing or empty label"))
        label = ""
    cells: dict[str, str] = {}
    for name in fields:
        value = record.get(name)
        if value is None or value == "":
            continue
        if not isinstance(value, str):
            problems.append(
                (name, f"must be a string (text or a file path) or empty; got {value!r}")
            )
        elif name in text:
            cells[name] = value
        else:
            path = Path(value.strip())
            cells[name] = str(path if path.is_absolute() else base / path)
    if not cells and not any(col in fields for col, _ in problems):
        problems.append(("row", "carries no modality: every field column is empty"))
    return Row(n, line, key, label.strip(), cells, problems, key_ok=key_ok)


def read_input(path: str | Path, text_fields: Sequence[str] = ()) -> InputTable:
    """Parse a CSV (header row) or JSONL (one object a line) input table into rows; bad cells
    become row problems, a malformed table raises ManifestError."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"The 'input' parameter must be an existing file; got {path}")
    kind = path.suffix.lower()
    if kind not in (".csv", ".jsonl", ".ndjson"):
        raise ManifestError(f"The 'input' file must end in .csv or .jsonl; got {path.name}")
    text = set(DEFAULT_TEXT_FIELDS) | set(text_fields)
    base = path.parent
    records: list[tuple[int, dict[str, Any] | None, str]] = []
    with open(path, newline="", encoding="utf-8-sig") as f:
        if kind == ".csv":
            reader = csv.reader(f)
            header = [h.strip() for h in next(reader, [])]
            if "key" not in header or "label" not in header or len(set(header)) != len(header):
                raise ManifestError(
                    f"{path}: the header row must name 'key', 'label' and one column per field "
                    f"(each once); got {header}"
                )
            fields = _check_columns(header, str(path))
            last = reader.line_num
            for cells in reader:
                line, last = last + 1, reader.line_num
                if not cells:
                    continue
                if len(cells) != len(header):
                    why = f"has {len(cells)} cells; the header has {len(header)}"
                    records.append((line, dict(zip(header, cells)), why))
                else:
                    records.append((line, dict(zip(header, cells)), ""))
        else:
            seen: dict[str, None] = {}
            for line, raw in enumerate(f, 1):
                if not raw.strip():
                    continue
                try:
                    obj = json.loads(raw)
                except json.JSONDecodeError as err:
                    records.append((line, None, f"not valid JSON ({err.msg}, column {err.colno})"))
                    continue
                if not isinstance(obj, dict):
                    records.append((line, None, "not a JSON object"))
                    continue
                seen.update(dict.fromkeys(obj))
                records.append((line, obj, ""))
            fields = _check_columns(seen, str(path))
    if not records:
        raise ManifestError(f"{path}: the input has no rows")
    fields = sorted(fields)
    unknown = sorted(set(text_fields) - set(fields))
    if unknown:
        raise ManifestError(
            f"The 'text_fields' parameter names {unknown}, which are not columns of {path} "
            f"(fields: {fields})"
        )
    rows = []
    for n, (line, record, why) in enumerate(records):
        row = _make_row(n, line, record or {}, fields, text, base)
        if why:
            row.problems.insert(0, ("row", why))
        rows.append(row)
    return InputTable(path.resolve(), _sha256(path), fields, sorted(text & set(fields)), rows)


def read_classes(path: str | Path) -> list[str]:
    """Class names from a text file, one per line (blank lines ignored, no duplicates)."""
    names = [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines()]
    names = [n for n in names if n]
    dup = sorted(n for n, k in Counter(names).items() if k > 1)
    if not names or dup:
        raise ManifestError(f"{path}: a classes file needs one unique name a line; got {dup or 0}")
    return names


def _check_rows(table: InputTable, classes: Sequence[str] | None) -> list[str]:
    """The cheap pass over every row: duplicate keys and unknown labels; returns the classes."""
    first: dict[str, int] = {}
    for r in table.rows:
        if r.key_ok and r.key is not None:
            if r.key in first:
                r.problems.append(("key", f"duplicate key {r.key!r} (first in row {first[r.key]})"))
            else:
                first[r.key] = r.row
    names = list(classes) if classes is not None else sorted({r.label for r in table.rows} - {""})
    known = set(names)
    for r in table.rows:
        if r.label and r.label not in known:
            shown = ", ".join(repr(n) for n in names[:5]) + (", ..." if len(names) > 5 else "")
            r.problems.append(
                ("label", f"{r.label!r} is not one of the {len(names)} classes ({shown})")
            )
    return names


def _stat_files(row: Row, text: Sequence[str]) -> None:
    for name, value in row.cells.items():
        if name in text:
            continue
        try:
            st = os.stat(value)
        except FileNotFoundError:
            row.problems.append((name, f"file not found: {value}"))
        except OSError as err:
            row.problems.append((name, f"cannot access {value}: {err.strerror or err}"))
        else:
            if stat.S_ISREG(st.st_mode):
                row.stats[name] = (st.st_size, st.st_mtime_ns)
            else:
                row.problems.append((name, f"not a regular file: {value}"))


# ---------------------------------------------------------------- one shard (runs in a worker


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


def _remove_stale(out: Path, name: str) -> None:
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


def _load_row(row: Row, text: Sequence[str]) -> tuple[dict[str, bytes], list[tuple[str, str]]]:
    problems = list(row.problems)
    failed = {col for col, _ in problems}
    payloads: dict[str, bytes] = {}
    for name, value in row.cells.items():
        if name in failed:
            continue
        if name in text:
            try:
                payloads[name] = value.encode("utf-8")
            except UnicodeEncodeError as err:
                problems.append((name, f"text is not valid unicode ({err.reason})"))
            continue
        try:
            with open(value, "rb") as f:
                data = f.read()
        except OSError as err:
            problems.append((name, f"cannot read {value}: {err.strerror or err}"))
            continue
        try:
            probe(data, name)
        except ImportError:
            raise
        except Exception as err:
            problems.append((name, f"unreadable .{name} file {value}: {err}"))
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
        _remove_stale(out, path.name)
    labels = {name: i for i, name in enumerate(task.classes)}
    writing = task.skip_bad or not any(r.problems for r in task.rows)
    writer: ShardWriter | None = None
    bad: list[BadRow] = []
    try:
        for row in task.rows:
            payloads, problems = _load_row(row, task.text_fields)
            if _PROGRESS is not None:
                _PROGRESS(1)
            if problems:
                bad.append(row.bad(problems))
                if not task.skip_bad and writer is not None:
                    writer.abort()
                    writer, writing = None, False
                continue
            if writing:
                writer = writer or ShardWriter(tar, task.classes)
                writer.write(str(row.key), row.row, labels[row.label], payloads)
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


def _load_sidecar(out: Path, number: int) -> dict[str, Any] | None:
    try:
        data = json.loads((out / sidecar_name(number)).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("format") == SIDECAR_FORMAT else None


def _read_sidecar(out: Path, number: int) -> dict[str, Any] | None:
    """Shard `number`'s sidecar if the shard is complete (its tar and index are in place)."""
    data = _load_sidecar(out, number)
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


def _write_manifest(out: Path, sidecars: list[dict[str, Any]]) -> Manifest:
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
        _write_atomic(report, "".join(json.dumps(b.to_json()) + "\n" for b in skipped))
    else:
        report.unlink(missing_ok=True)
    _save_manifest(manifest, out)
    return manifest


def _save_manifest(manifest: Manifest, out: Path) -> None:
    """`Manifest.save` into a private new directory, then an atomic rename into `out`: never
    through a planted link, and safe when two `--part` jobs finish at the same time."""
    _remove_stale(out, MANIFEST)
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
    return _write_manifest(out, sidecars)


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
    overwrite: bool = False,
    progress: bool = False,
) -> ShardReport:
    """Shard the rows of a CSV/JSONL table into `out`; raise BadRowsError listing every bad row
    (unless `skip_bad`), keep shards finished by an earlier run, write manifest.json when done."""
    _check_parameters(samples_per_shard, workers, part)
    workers = workers if workers is not None else min(4, os.cpu_count() or 1)
    table = read_input(input, text_fields)
    names = _check_rows(table, classes)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ManifestError(f"The 'out' parameter must be a directory; {out} is a file")
    out.mkdir(parents=True, exist_ok=True)
    extra: dict[str, Any] = {"input_sha256": table.sha256, "text_fields": table.text_fields}
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
            _stat_files(row, table.text_fields)
        for name in (shard_name(number), index_name(shard_name(number)), sidecar_name(number)):
            _remove_stale(out, name)
        rows_doc = [[r.row, r.key, r.label, r.cells, r.stats, r.problems] for r in rows]
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
        tasks.append(_Task(str(out), number, rows, names, table.text_fields, skip_bad, sidecar))
    if tasks:
        manifest_path.unlink(missing_ok=True)
    bad_report = out / (
        "bad_rows.jsonl" if count == 1 else f"bad_rows.part-{index}-of-{count}.jsonl"
    )
    bad_report.unlink(missing_ok=True)
    total = sum(len(t.rows) for t in tasks)
    results = _run_tasks(tasks, workers, progress, total)
    bad = sorted(
        (b for _, rows, written in results if not written for b in rows), key=lambda b: b.row
    )
    if bad:
        _write_atomic(bad_report, "".join(json.dumps(b.to_json()) + "\n" for b in bad))
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
    )


# ---------------------------------------------------------------- `mmsample index`


def _index_shard(tar: Path, samples: list[TarSample], classes: Sequence[str]) -> ShardInfo:
    """Write the offset index of one scanned tar and describe it (every id and label known)."""
    rows = np.array([(s.sample_id, s.start, s.end) for s in samples], dtype=np.int64)
    _remove_stale(tar.parent, index_name(tar.name))
    write_index(tar.parent / index_name(tar.name), rows.reshape(-1, 3))
    counts = Counter(int(s.label or 0) for s in samples)
    return ShardInfo(
        name=tar.name,
        count=len(samples),
        first_id=int(rows[:, 0].min()) if len(rows) else -1,
        last_id=int(rows[:, 0].max()) if len(rows) else -1,
        bytes=tar.stat().st_size,
        index=index_name(tar.name),
        class_counts={classes[k]: n for k, n in sorted(counts.items())},
    )


def rebuild(root: str | Path, classes: Sequence[str] | None = None) -> Manifest:
    """Rebuild every tar's offset index and manifest.json from the tars in `root` (ids and labels
    from the `.id` / `.cls` members); class names from `classes`, the sidecars or the old
    manifest."""
    root = Path(root)
    tars = sorted(p for p in root.glob("*.tar") if p.is_file())
    if not tars:
        raise ManifestError(f"no .tar shards in {root}: nothing to index")
    scans, problems = [], []
    for tar in tars:
        samples, found = scan_tar(tar)
        problems += [str(p) for p in found]
        for s in samples:
            for member, value in ((ID_FIELD, s.sample_id), (LABEL_FIELD, s.label)):
                if value is None:
                    problems.append(f"{tar.name}:{s.key}: no valid {s.key}.{member} member")
        scans.append(samples)
    if not problems:
        owner: dict[int, str] = {}
        for tar, samples in zip(tars, scans):
            for s in samples:
                if s.sample_id in owner:
                    problems.append(
                        f"{tar.name}:{s.key}: id {s.sample_id} also in {owner[s.sample_id]}"
                    )
                owner[s.sample_id or 0] = tar.name
    if problems:
        raise ManifestError(
            f"cannot index {root}: {len(problems)} problem(s):\n  " + "\n  ".join(problems[:50])
        )
    old = Manifest.load(root) if (root / MANIFEST).exists() else None
    matches = (_OWN_FILE.match(p.name) for p in root.glob("shard-*.json"))
    numbers = sorted(
        int(m.group(1)) for m in matches if m and m.group(2) == "json" and not m.group(3)
    )
    sidecars = [d for d in (_load_sidecar(root, n) for n in numbers) if d is not None]
    ds = sidecars[0]["dataset"] if sidecars else None
    names = list(classes) if classes else ds["classes"] if ds else old.classes if old else None
    if names is None:
        raise ManifestError(
            f"{root} has no {MANIFEST} or shard sidecars to take class names from: pass "
            "--classes FILE (one class name a line, in class-index order)"
        )
    top = max((s.label or 0) for samples in scans for s in samples)
    if top >= len(names):
        raise ManifestError(f"{root}: a .cls member holds class {top}, but only {len(names)} names")
    infos = [_index_shard(tar, samples, names) for tar, samples in zip(tars, scans)]
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
        return _write_manifest(root, sidecars)
    infos = sorted((i for i in infos if i.count), key=lambda i: i.first_id)
    for a, b in itertools.pairwise(infos):
        if b.first_id <= a.last_id:
            raise ManifestError(
                f"{root}: shards {a.name} and {b.name} have overlapping id ranges; readers need "
                "each shard to hold its own id range (shard with `mmsample shard`)"
            )
    num_rows = max(max((i.last_id for i in infos), default=-1) + 1, old.num_rows if old else 0)
    stored = sum(i.count for i in infos)
    extra = {k: v for k, v in (old.extra if old else {}).items() if k != "job"}
    manifest = Manifest(
        classes=list(names),
        fields=sorted({f for samples in scans for s in samples for f in s.fields}),
        shards=infos,
        num_rows=num_rows,
        samples_per_shard=old.samples_per_shard
        if old
        else max((i.count for i in infos), default=1),
        skipped=num_rows - stored,
        extra=dict(extra, indexed_by="mmsample index"),
    )
    _save_manifest(manifest, root)
    return manifest
