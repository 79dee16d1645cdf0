"""Shard tasks: read, probe and write the rows of one shard, in parallel worker processes.

Place in the data flow: the middle of `mmsample shard` (`mmsample.sharding.tool` plans one
`ShardTask` per shard to write). A task reads each row's files (local paths or URLs, several
rows ahead in threads when they are URLs: `mmsample.sharding.media`), probes them the way the readers
decode them (`mmsample.decoding.media_probe`), writes the tar and offset index
(`mmsample.sharding.writer`) and, last, the shard's sidecar (`mmsample.sharding.sidecars`), so
a shard counts as done only when all three are in place. Rows are counted on one progress bar
across processes. The tool makes each task as the pool takes it, so only the shards in flight
hold their rows.
"""

from __future__ import annotations

import json
import multiprocessing
import pickle
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..decoding.image_header import DEFAULT_MAX_PIXELS
from ..decoding.media_probe import probe
from ..shards.format import ShardInfo, index_name, shard_name
from ..storage.location import redact
from .media import MEDIA_THREADS, is_url, read_row, read_rows
from .output_files import remove_stale, unlink_all, write_atomic
from .sidecars import sidecar_name
from .table import BadRow, Row
from .writer import ShardWriter

__all__ = ["ShardTask", "TaskResult", "load_row", "run_task", "run_tasks"]

# rows done -> progress bar; set in the main process (a tqdm bar) or in a worker (a shared counter)
_PROGRESS: Callable[[int], Any] | None = None

TaskResult = tuple[ShardInfo | None, list[BadRow], bool]  # (info, bad rows, written)


@dataclass
class ShardTask:
    """Everything one worker needs to write shard `number` into directory `out` (picklable)."""

    out: str
    number: int
    rows: list[Row]
    classes: list[str]
    text_fields: list[str]
    skip_bad: bool
    sidecar: dict[str, Any]
    max_pixels: int | None = DEFAULT_MAX_PIXELS
    media_threads: int = MEDIA_THREADS


def load_row(
    row: Row,
    text: Sequence[str],
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    files: Mapping[str, bytes | OSError] | None = None,
) -> tuple[dict[str, bytes], list[tuple[str, str]]]:
    """(field -> payload bytes, problems as (column, reason)) of one row: inline text encoded,
    files (read by `mmsample.sharding.media.read_row` unless `files` holds them) probed; a
    cell that fails becomes a problem, never an exception (except ImportError: a missing
    decoder is the installation's fault, not the row's; and StorageError: a URL that cannot be
    read for any reason but a missing object)."""
    problems = list(row.problems)
    failed = {col for col, _ in problems}
    files = read_row(row, text) if files is None else files
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
        data = files[name]
        shown = redact(value)
        if isinstance(data, FileNotFoundError) and is_url(value):
            problems.append((column, f"file not found: {shown}"))
            continue
        if isinstance(data, OSError):
            problems.append((column, f"cannot read {shown}: {data.strerror or data}"))
            continue
        try:
            probe(data, name, max_pixels=max_pixels)
        except ImportError:
            raise
        except Exception as err:
            ext = name.rsplit(".", 1)[-1]
            problems.append((column, f"unreadable .{ext} file {shown}: {err}"))
            continue
        payloads[name] = data
    return payloads, problems


def run_task(task: ShardTask) -> TaskResult:
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
        for row, files in read_rows(task.rows, task.text_fields, threads=task.media_threads):
            payloads, problems = load_row(row, task.text_fields, task.max_pixels, files)
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
        unlink_all(tar, idx)
        return None, bad, False
    if info is None:
        unlink_all(tar, idx)  # every row skipped: the sidecar alone records the shard
    doc = dict(task.sidecar, info=asdict(info) if info else None)
    doc["skipped"] = [b.to_json() for b in bad]
    write_atomic(side, json.dumps(doc, indent=1, sort_keys=True))
    return info, bad, True


def _run_pickled(task: bytes) -> TaskResult:
    """`run_task` of a task the tool pickled (in a worker process)."""
    return run_task(pickle.loads(task))


def _init_worker(counter: Any) -> None:
    global _PROGRESS

    def tick(n: int) -> None:
        with counter.get_lock():
            counter.value += n

    _PROGRESS = tick


def run_tasks(
    tasks: Iterable[ShardTask], workers: int, advance: Callable[[int], object]
) -> dict[int, TaskResult]:
    """Run every task (in `workers` spawned processes if several, at most two a worker in
    flight, so that `tasks` may make each one as it is taken), calling `advance(n)` as n more
    rows are done -> shard number -> result. The first task that raises cancels the rest and
    its exception propagates."""
    global _PROGRESS
    results: dict[int, TaskResult] = {}
    if workers <= 1:
        _PROGRESS = advance
        try:
            for task in tasks:
                results[task.number] = run_task(task)
                del task  # its rows go before the next task's are made
        finally:
            _PROGRESS = None
        return results
    ctx = multiprocessing.get_context("spawn")
    counter = ctx.Value("q", 0)
    shown = 0
    with ProcessPoolExecutor(workers, ctx, initializer=_init_worker, initargs=(counter,)) as pool:
        pending: dict[Future[TaskResult], int] = {}

        def collect() -> None:
            nonlocal shown
            done, _ = wait(pending, timeout=0.25, return_when=FIRST_COMPLETED)
            now = counter.value
            advance(now - shown)
            shown = now
            for future in done:
                number = pending.pop(future)
                if future.exception() is not None:
                    pool.shutdown(wait=True, cancel_futures=True)
                results[number] = future.result()

        taken = iter(tasks)
        while True:
            while len(pending) >= 2 * workers:
                collect()
            made = next(taken, None)  # made only once a worker has room for it
            if made is None:
                break
            # Pickled now: a task waiting for a worker holds ~100 bytes a row, not its Rows.
            number, data = made.number, pickle.dumps(made, pickle.HIGHEST_PROTOCOL)
            del made
            pending[pool.submit(_run_pickled, data)] = number
        while pending:
            collect()
    return results
