"""A dataset's remote shards read by byte range: sequential chunks with bounded read-ahead for
the streamed reader, coalesced concurrent range requests for the indexed reader's next samples,
or whole shards through the local cache.

Place in the data flow: under `ShardTable.read` (`mmsample.shards.shard_table`) when the dataset
is not on a local disk. Everything network-bound (the filesystem client, the thread pool, the
open streams) is created lazily in the process that reads and re-created after a fork; pickling
(a DataLoader worker with spawn or forkserver) carries only the settings.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .cache import ShardCache
from .ranges import coalesce, split_read
from .retry import RetryPolicy
from .store import CHUNK_BYTES, Store

__all__ = ["ACCESS", "ReadSettings", "RemoteShards", "SequentialWindow"]

ACCESS = ("sequential", "random")
COALESCE_MAX = 8 << 20  # the largest coalesced range request


class SequentialWindow:
    """One shard streamed forward: a producer thread pulls `store.chunks` (each chunk one
    request, retried) into a queue holding at most `readahead` chunks; `read(start, end)` takes
    bytes from the window, reading forward past bytes nobody needs. A read behind the window or
    far ahead of it restarts the stream at its start (`restart_gap`)."""

    def __init__(
        self, store: Store, name: str, size: int, start: int, chunk: int, readahead: int
    ) -> None:
        import queue

        self.store, self.name, self.size = store, name, size
        self.pos = start  # shard offset of buf[off]
        self.buf = b""
        self.off = 0
        self.chunk = chunk
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max(1, readahead))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._produce, args=(start,), daemon=True)
        self._thread.start()

    def _produce(self, start: int) -> None:
        try:
            for data in self.store.chunks(self.name, start, self.size, self.chunk):
                while not self._stop.is_set():
                    try:
                        self._queue.put(data, timeout=0.1)
                        break
                    except Exception:  # queue.Full: the reader is behind; wait
                        continue
                if self._stop.is_set():
                    return
            self._queue.put(None)
        except BaseException as err:  # carried to the reader, raised there
            self._queue.put(err)

    def covers(self, start: int, restart_gap: int) -> bool:
        """True if `start` lies in or not far ahead of the window."""
        return self.pos <= start <= self.pos + len(self.buf) - self.off + restart_gap

    def read(self, start: int, end: int) -> bytes:
        """Bytes [start, end) (fewer if the stream ends first); the window drops what precedes
        `end`. Each chunk is copied once into the window, each sample once out of it."""
        while self.pos + len(self.buf) - self.off < end:
            item = self._queue.get()
            if item is None:
                self._queue.put(None)
                break
            if isinstance(item, BaseException):
                self._queue.put(item)
                raise item
            held = len(self.buf) - self.off
            if self.pos + held < start:  # all held bytes precede the range: drop them
                self.pos += held
                self.buf, self.off = item, 0
            else:
                self.buf, self.off = self.buf[self.off :] + item, 0
        lo = self.off + max(0, start - self.pos)
        hi = self.off + max(0, end - self.pos)
        out = self.buf[lo:hi]
        cut = min(len(self.buf), hi) - self.off
        self.off += cut
        self.pos += cut
        return out

    def close(self) -> None:
        self._stop.set()


@dataclass(frozen=True)
class ReadSettings:
    """How remote shards are read: `access` "sequential" (streamed reader) or "random"
    (indexed); `chunk` bytes a sequential request; `readahead` chunks held ahead per stream;
    `prefetch` samples fetched ahead concurrently in random access; `cache` (or None);
    `retry` the retry policy and timeouts; `storage_options` the fsspec backend's options
    (endpoint, profile, ...; never printed)."""

    access: str = "random"
    chunk: int = CHUNK_BYTES
    readahead: int = 2
    prefetch: int = 32
    cache: ShardCache | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    storage_options: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.access not in ACCESS:
            raise ValueError(f"ReadSettings: access must be one of {ACCESS}; got {self.access!r}")
        for name in ("chunk", "readahead", "prefetch"):
            value = getattr(self, name)
            low = 1 if name != "prefetch" else 0
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"The {name!r} setting must be an int >= {low}; got {value!r}.")
        if self.cache is not None and not isinstance(self.cache, ShardCache):
            raise ValueError(
                f"The 'cache' parameter must be a mmsample.storage.ShardCache(directory, "
                f"max_bytes) or None; got {type(self.cache).__name__}."
            )
        if not isinstance(self.retry, RetryPolicy):
            raise ValueError(
                f"The 'retry' parameter must be a mmsample.storage.RetryPolicy; got "
                f"{type(self.retry).__name__}."
            )


class RemoteShards:
    """Byte reads of the shards `names` (sizes `sizes`, from the manifest) of `store`."""

    def __init__(
        self, store: Store, names: Sequence[str], sizes: Sequence[int], settings: ReadSettings
    ) -> None:
        self.store, self.names, self.sizes = store, list(names), [int(s) for s in sizes]
        self.settings = settings
        self._reset()

    def _reset(self) -> None:
        self._pid = os.getpid()
        self._pool: ThreadPoolExecutor | None = None
        self._pending: OrderedDict[tuple[int, int, int], Future[bytes]] = OrderedDict()
        self._window: tuple[int, SequentialWindow] | None = None
        self._next: tuple[int, SequentialWindow] | None = None  # the next shard's stream
        self._visits: list[tuple[int, int]] = []  # (shard, first offset) in reading order
        self._visit = 0
        self._cached: OrderedDict[int, int] = OrderedDict()  # shard -> fd of its cached file

    def _mine(self) -> None:
        if self._pid != os.getpid():  # forked: nothing of the parent's is ours
            self._reset()

    def read(self, shard: int, start: int, end: int) -> bytes:
        """Bytes [start, end) of shard `shard` (fewer when the object is shorter). Raises the
        store's StorageError, or TransientFailure when every attempt failed."""
        self._mine()
        cache = self.settings.cache
        if cache is not None:
            fd = self._cache_fd(shard, cache)
            if fd is not None:
                return os.pread(fd, end - start, start)
        future = self._pending.pop((shard, start, end), None)
        if future is not None:
            return future.result()
        if self.settings.access == "sequential" or not self.store.ranged:
            return self._sequential(shard, start, end)
        return self.store.read_range(self.names[shard], start, min(end, self.sizes[shard]))

    def expect(self, shards: np.ndarray, starts: np.ndarray) -> None:
        """The reads to come (sequential access): shard `shards[i]` from byte `starts[i]`, in
        this order; while a shard streams, the next one's first chunks are fetched."""
        self._mine()
        visits: list[tuple[int, int]] = []
        for shard, start in zip(shards.tolist(), starts.tolist()):
            if not visits or visits[-1][0] != shard:
                visits.append((shard, start))
        self._visits, self._visit = visits, 0

    def _open(self, shard: int, start: int) -> SequentialWindow:
        s = self.settings
        return SequentialWindow(
            self.store, self.names[shard], self.sizes[shard], start, s.chunk, s.readahead
        )

    def _sequential(self, shard: int, start: int, end: int) -> bytes:
        chunk = self.settings.chunk
        window = self._window
        if window is None or window[0] != shard or not window[1].covers(start, chunk):
            if window is not None:
                window[1].close()
            ahead = self._next
            if ahead is not None and ahead[0] == shard and ahead[1].covers(start, chunk):
                self._window, self._next = ahead, None
            else:
                self._window = (shard, self._open(shard, start))
            self._read_next_ahead(shard)
        assert self._window is not None
        return self._window[1].read(start, end)

    def _read_next_ahead(self, shard: int) -> None:
        """Start the stream of the shard visited after `shard` (from `expect`)."""
        visits = self._visits
        while self._visit < len(visits) and visits[self._visit][0] != shard:
            self._visit += 1
        if self._visit + 1 >= len(visits):
            return
        following, start = visits[self._visit + 1]
        self._visit += 1
        if self._next is not None:
            self._next[1].close()
        self._next = (following, self._open(following, start))

    def _cache_fd(self, shard: int, cache: ShardCache) -> int | None:
        fd = self._cached.get(shard)
        if fd is not None:
            self._cached.move_to_end(shard)
            return fd
        path = cache.fetch(self.store, self.names[shard], self.sizes[shard])
        if path is None:
            return None
        fd = os.open(path, os.O_RDONLY)
        self._cached[shard] = fd
        if len(self._cached) > 64:
            os.close(self._cached.popitem(last=False)[1])
        return fd

    def prefetch(self, shards: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> None:
        """Start reading these ranges (random access, no cache) concurrently, at most
        `prefetch` requests at a time, adjacent ranges of a shard coalesced into one request;
        `read` of one of them then waits for its result."""
        self._mine()
        s = self.settings
        if s.access != "random" or s.cache is not None or not self.store.ranged or s.prefetch < 1:
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(s.prefetch, thread_name_prefix="mmsample-prefetch")
        keys = [(int(a), int(b), int(c)) for a, b, c in zip(shards, starts, ends)]
        todo = [k for k in dict.fromkeys(keys) if k not in self._pending]
        for shard in sorted({k[0] for k in todo}):
            mine = [k for k in todo if k[0] == shard]
            st = np.array([k[1] for k in mine], dtype=np.int64)
            en = np.array([k[2] for k in mine], dtype=np.int64)
            for group in coalesce(st, en, 0, COALESCE_MAX):
                self._submit(shard, st[group], en[group])
        while len(self._pending) > 4 * max(1, s.prefetch) + len(todo):
            self._pending.popitem(last=False)[1].cancel()  # never read: let it go

    def _submit(self, shard: int, starts: np.ndarray, ends: np.ndarray) -> None:
        assert self._pool is not None
        lo, hi = int(starts.min()), min(int(ends.max()), self.sizes[shard])
        whole = self._pool.submit(self.store.read_range, self.names[shard], lo, hi)
        for a, b in zip(starts.tolist(), ends.tolist()):
            part: Future[bytes] = Future()
            self._pending[(shard, a, b)] = part
            whole.add_done_callback(_cut(part, lo, a, b))

    def close(self) -> None:
        """Stop streams and prefetches, close cached files (this process's only)."""
        if self._pid != os.getpid():
            return
        for stream in (self._window, self._next):
            if stream is not None:
                stream[1].close()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        for fd in self._cached.values():
            os.close(fd)
        self._reset()

    def __getstate__(self) -> dict[str, Any]:
        return {
            "store": self.store,
            "names": self.names,
            "sizes": self.sizes,
            "settings": self.settings,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._reset()


def _cut(part: Future[bytes], base: int, start: int, end: int) -> Any:
    def done(whole: Future[bytes]) -> None:
        if whole.cancelled():
            part.cancel()
        elif whole.exception() is not None:
            part.set_exception(whole.exception())
        else:
            part.set_result(split_read(whole.result(), base, np.array([start]), np.array([end]))[0])

    return done
