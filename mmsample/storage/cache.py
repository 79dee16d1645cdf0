"""The optional local cache of remote shards: a directory and a size limit, least recently used
out, shared safely by every worker and rank of a node.

Place in the data flow: between a remote store (`mmsample.storage.store`) and the readers' byte
reads (`mmsample.storage.remote`): a shard is downloaded whole on first use (sequential chunks,
each retried), then read with `os.pread` like a local one. A download goes to a temporary file
and appears under its final name only once complete (an atomic rename), so a partial file is
never read as a shard; a lock file per shard (`fcntl.flock`) makes workers that need the same
shard wait for one download rather than each fetching it. Before a download, files are evicted
(oldest access first, under a directory lock) until the new shard fits. A process that still
reads an evicted file keeps reading it (POSIX unlink).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import secrets
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import MmsampleWarning
from .location import require_local

if TYPE_CHECKING:
    from .store import Store

__all__ = ["CacheWarning", "ShardCache"]


class CacheWarning(MmsampleWarning):
    """A shard is larger than the whole cache: it is read from the store without caching."""


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


class ShardCache:
    """A directory of whole shards, at most `max_bytes` bytes in all (> 0).

    Files are named by a hash of the shard's URL (query string excluded) and its name, so two
    datasets never share an entry. ValueError for a bad directory or size."""

    def __init__(self, directory: str | os.PathLike[str], max_bytes: int) -> None:
        if not isinstance(max_bytes, int) or isinstance(max_bytes, bool) or max_bytes <= 0:
            raise ValueError(f"ShardCache: 'max_bytes' must be an int > 0; got {max_bytes!r}")
        self.directory = require_local(directory, "ShardCache's 'directory'")
        if self.directory.exists() and not self.directory.is_dir():
            raise ValueError(f"ShardCache: 'directory' {self.directory} is a file, not a folder")
        self.max_bytes = max_bytes
        self._warned = False  # the oversized-shard warning, once per process

    def _dirs(self) -> tuple[Path, Path, Path]:
        objects, tmp, locks = (self.directory / d for d in ("objects", "tmp", "locks"))
        for d in (objects, tmp, locks):
            d.mkdir(parents=True, exist_ok=True)
        return objects, tmp, locks

    def entry(self, url: str) -> str:
        """The file name of the shard at `url` (printable, no query string)."""
        digest = hashlib.sha256(url.encode()).hexdigest()[:24]
        return f"{digest}-{url.rstrip('/').rsplit('/', 1)[-1]}"

    def fetch(self, store: Store, name: str, size: int) -> Path | None:
        """The local path of shard `name` (`size` bytes) of `store`, downloaded if absent;
        None when it is larger than the cache (a CacheWarning, once per process for every such
        shard)."""
        url = store.url(name)
        if size > self.max_bytes:
            if not self._warned:
                self._warned = True
                warnings.warn(
                    f"ShardCache: {url} ({size} bytes) is larger than the cache "
                    f"({self.max_bytes} bytes): read without caching, as is every shard larger "
                    "than max_bytes (said once per process)",
                    CacheWarning,
                    stacklevel=3,
                )
            return None
        objects, tmp, locks = self._dirs()
        path = objects / self.entry(url)
        with _locked(locks / (path.name + ".lock")):
            if path.exists() and path.stat().st_size == size:
                os.utime(path)  # most recently used
                return path
            self._evict(objects, size)
            part = tmp / f"{path.name}.{os.getpid()}.{secrets.token_hex(4)}"
            try:
                with open(part, "wb") as f:
                    for data in store.chunks(name, 0, size):
                        f.write(data)
                os.replace(part, path)
            finally:
                part.unlink(missing_ok=True)
        return path

    def _evict(self, objects: Path, incoming: int) -> None:
        """Remove the least recently used files until `incoming` more bytes fit."""
        with _locked(self.directory / "evict.lock"):
            files = []
            for p in objects.iterdir():
                with contextlib.suppress(FileNotFoundError):
                    st = p.stat()
                    files.append((st.st_mtime, st.st_size, p))
            total = sum(size for _, size, _ in files)
            for _, size, p in sorted(files, key=lambda f: f[0]):
                if total + incoming <= self.max_bytes:
                    break
                p.unlink(missing_ok=True)
                total -= size

    def used(self) -> int:
        """Bytes held by complete entries now."""
        objects = self.directory / "objects"
        return sum(p.stat().st_size for p in objects.iterdir()) if objects.is_dir() else 0
