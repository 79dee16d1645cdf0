"""The media files an input table names, as local paths or URLs (`s3://`, `gs://`, `https://`,
`file://`, any fsspec protocol): resolved, stat'ed and read.

Place in the data flow: under the sharding tool's table (`mmsample.sharding.table`: a cell
becomes a path or a URL, relative ones resolved against the table's folder, itself a path or a
URL) and its tasks (`mmsample.sharding.tasks`). While a shard is planned, the main process
stats its URL files concurrently (`stat_rows`: size and version, so that a rerun sees a changed
object); while it is written, a worker process reads them whole, a bounded window of rows ahead
in threads (`read_rows`). Requests go through `mmsample.storage`: retried with backoff, under
the policy's timeouts, one fsspec client per protocol per process (re-made after a fork), and
every message names the URL without its query string or credentials. A missing object is the
row's problem (`file not found: URL`, skipped under `--skip-bad` like a missing local file);
any other failure (403, bad credentials, a server that keeps failing) is not the row's fault:
it stops the run with a StorageError naming the row, key, column and URL.
"""

from __future__ import annotations

import hashlib
import os
import stat
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from ..errors import StorageError
from ..storage.filesystem import ProcessFilesystem
from ..storage.location import parse_location, redact, scrub
from ..storage.retry import RetryPolicy, TransientFailure, describe, with_retries
from ..storage.store import denied, denied_error

if TYPE_CHECKING:
    from .table import Row

__all__ = [
    "MEDIA_THREADS",
    "MediaFiles",
    "is_url",
    "media_files",
    "read_row",
    "read_rows",
    "resolve_cell",
    "stat_rows",
]

T = TypeVar("T")
MEDIA_THREADS = 16  # concurrent requests for one shard's URL files (stats, then reads)
_MISSING = (404, 410)  # HTTP statuses of a missing object
_VERSION_KEYS = ("ETag", "etag", "LastModified", "Last-Modified", "mtime", "generation")


def is_url(cell: str) -> bool:
    """True if a file cell names a remote object (`scheme://`, not `file://`)."""
    return "://" in cell and not parse_location(cell).is_local


def resolve_cell(cell: str, base: str | Path) -> str:
    """A file cell as the tool reads it: a URL as given (`file://` -> its path), an absolute
    path as given, a relative path joined to `base`, the table's folder (a path as the table
    was given, so cells stay relative; or a URL, whose query string is not carried over)."""
    cell = cell.strip()
    if "://" in cell:
        loc = parse_location(cell)
        return loc.path if loc.is_local else cell
    if os.path.isabs(cell):
        return str(Path(cell))
    if isinstance(base, Path):
        return str(base / cell)
    parts = urlsplit(base)
    joined = parts.path.rstrip("/") + "/" + cell
    return urlunsplit((parts.scheme, parts.netloc, joined, "", ""))


class MediaFiles:
    """Stat and read whole files named by URL, under `policy`, with one fsspec client per
    protocol for the calling process (never pickled with it: each process makes its own)."""

    def __init__(self, policy: RetryPolicy | None = None) -> None:
        self.policy = policy or RetryPolicy()
        self._clients: dict[str, ProcessFilesystem] = {}
        self._lock = threading.Lock()

    def _client(self, protocol: str) -> ProcessFilesystem:
        with self._lock:
            if protocol not in self._clients:
                self._clients[protocol] = ProcessFilesystem(protocol, self.policy, None)
            return self._clients[protocol]

    def _call(self, url: str, what: str, fn: Callable[[Any, str], T]) -> T:
        """`fn(filesystem, path)` for `url` under the retry policy. FileNotFoundError (naming
        the URL) if the object does not exist; StorageError naming the URL for anything else."""
        loc = parse_location(url)
        client = self._client(loc.protocol)
        try:
            return with_retries(
                lambda: fn(client.get(), loc.path), self.policy, f"{what} {loc.display}"
            )
        except FileNotFoundError as err:
            raise FileNotFoundError(f"{loc.display} does not exist") from err
        except TransientFailure as err:
            raise StorageError(scrub(str(err))) from err
        except StorageError:
            raise
        except Exception as err:
            if denied(err):
                other = "the URL's signature, or remove the row"
                raise denied_error(loc.display, loc.protocol, err, other) from err
            raise StorageError(f"{what} {loc.display} failed: {scrub(describe(err))}") from err

    def stat(self, url: str) -> tuple[int, int]:
        """(size in bytes, a version number from the object's ETag / modification time, 0 if
        the server gives neither) of the object at `url`: what a rerun compares."""
        http = parse_location(url).protocol in ("http", "https")
        info = self._call(url, "checking", _http_info if http else _info)
        size = info.get("size")
        if size is None:
            raise StorageError(f"{redact(url)}: the server gives no size for it")
        marks = [f"{k}={info[k]}" for k in _VERSION_KEYS if info.get(k) is not None]
        version = int(hashlib.sha256("|".join(marks).encode()).hexdigest()[:15], 16) if marks else 0
        return int(size), version

    def read(self, url: str) -> bytes:
        """The whole object at `url` (one GET)."""
        return bytes(self._call(url, "reading", lambda fs, path: fs.cat_file(path, start=0)))


def _info(fs: Any, path: str) -> dict[str, Any]:
    """`fs.info(path)` (s3fs, gcsfs and the others raise FileNotFoundError only when the
    object is missing)."""
    return dict(fs.info(path))


def _http_info(fs: Any, path: str) -> dict[str, Any]:
    """`fs.info(path)` over http(s). fsspec's HTTP backend turns every failure of its HEAD and
    GET into FileNotFoundError; its cause says what it was (HTTP 404/410: missing; a 403, a
    503, a reset connection: raised as itself, for the retry loop to judge)."""
    try:
        return dict(fs.info(path))
    except FileNotFoundError as err:
        cause = err.__cause__
        missing = isinstance(cause, FileNotFoundError)
        if cause is not None and not missing and getattr(cause, "status", None) not in _MISSING:
            raise cause from err
        raise


_SHARED: MediaFiles | None = None


def media_files() -> MediaFiles:
    """This process's `MediaFiles` (default retry policy; made on first use)."""
    global _SHARED
    if _SHARED is None:
        _SHARED = MediaFiles()
    return _SHARED


def _with_row(row: Row, name: str, err: StorageError) -> StorageError:
    where = f"row {row.row} (line {row.line}, key {row.key!r}), column {row.column(name)}"
    return StorageError(f"{where}: {err}")


def _stat_local(row: Row, name: str, path: str) -> None:
    """Stat one local file cell: a missing, unreadable or non-regular file is a row problem; a
    good one records (size, mtime) so that a rerun sees a changed file."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        row.problems.append((row.column(name), f"file not found: {path}"))
    except OSError as err:
        row.problems.append((row.column(name), f"cannot access {path}: {err.strerror or err}"))
    else:
        if stat.S_ISREG(st.st_mode):
            row.stats[name] = (st.st_size, st.st_mtime_ns)
        else:
            row.problems.append((row.column(name), f"not a regular file: {path}"))


def stat_rows(
    rows: Sequence[Row],
    text: Sequence[str],
    media: MediaFiles | None = None,
    threads: int = MEDIA_THREADS,
) -> None:
    """Stat every file cell of `rows` (not the `text` fields): local files with the operating
    system, URL files concurrently (`threads` at a time), in the main process. A missing
    file or object is the row's problem (`file not found: ...`), a good one records (size,
    mtime or version) so that a rerun sees a change; any other failure of a URL raises
    StorageError naming the row, key, column and URL."""
    wanted = sorted({v for r in rows for n, v in r.cells.items() if n not in text and is_url(v)})
    futures: dict[str, Future[tuple[int, int] | None]] = {}
    if wanted:
        files = media or media_files()

        def one(url: str) -> tuple[int, int] | None:
            try:
                return files.stat(url)
            except FileNotFoundError:
                return None

        with ThreadPoolExecutor(max(1, min(threads, len(wanted)))) as pool:
            futures = {url: pool.submit(one, url) for url in wanted}
    for row in rows:
        for name, value in row.cells.items():
            if name in text:
                continue
            if value not in futures:
                _stat_local(row, name, value)
                continue
            try:
                found = futures[value].result()
            except StorageError as err:
                raise _with_row(row, name, err) from err
            if found is None:
                row.problems.append((row.column(name), f"file not found: {redact(value)}"))
            else:
                row.stats[name] = found


def read_row(
    row: Row, text: Sequence[str], media: MediaFiles | None = None
) -> dict[str, bytes | OSError]:
    """Each file cell of `row` read whole (but those of a column that already has a problem):
    its bytes, or the OSError of a local file that cannot be read or the FileNotFoundError of
    a missing object. StorageError naming the row, key, column and URL for any other failure
    of a URL."""
    media = media or media_files()
    failed = {col for col, _ in row.problems}
    out: dict[str, bytes | OSError] = {}
    for name, value in row.cells.items():
        if name in text or row.column(name) in failed:
            continue
        try:
            if is_url(value):
                out[name] = media.read(value)
            else:
                with open(value, "rb") as f:
                    out[name] = f.read()
        except StorageError as err:
            raise _with_row(row, name, err) from err
        except OSError as err:
            out[name] = err
    return out


def read_rows(
    rows: Sequence[Row],
    text: Sequence[str],
    media: MediaFiles | None = None,
    threads: int = MEDIA_THREADS,
) -> Iterator[tuple[Row, dict[str, bytes | OSError]]]:
    """Each row with its files read (`read_row`), in order. When the rows name URL files, up
    to `threads` rows ahead are read concurrently in threads (so that many small objects
    do not wait on one another's latency); local-only rows are read one by one, as they come."""
    media = media or media_files()
    remote = any(n not in text and is_url(v) for r in rows for n, v in r.cells.items())
    if not remote or threads <= 1:
        for row in rows:
            yield row, read_row(row, text, media)
        return
    with ThreadPoolExecutor(threads) as pool:
        ahead: deque[tuple[Row, Future[dict[str, bytes | OSError]]]] = deque()
        pending = iter(rows)
        try:
            for row in pending:
                ahead.append((row, pool.submit(read_row, row, text, media)))
                if len(ahead) >= threads:
                    done, future = ahead.popleft()
                    yield done, future.result()
            while ahead:
                done, future = ahead.popleft()
                yield done, future.result()
        finally:
            for _, future in ahead:
                future.cancel()
