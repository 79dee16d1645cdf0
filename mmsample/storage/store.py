"""The files of a remote dataset folder: whole reads, byte ranges, sequential chunks, atomic
writes, each request under the retry policy and every error naming the URL without secrets.

Place in the data flow: under the readers' remote shards (`mmsample.storage.remote`), the
manifest and index reads of `ShardTable`, and the sharding tool's uploads. Two stores, by
protocol (`STORES`): `FsspecStore` (s3://, gs://, http(s)://, any fsspec protocol; http(s) is
read-only) and `PipeStore` (`pipe:CMD`, read-only and streamed-only, as in WebDataset); s3://
by the client chosen by name (`S3_CLIENTS`: "fsspec", or "obstore": `ObstoreStore`, byte
ranges through Rust's object_store). Local paths never come here: the readers keep `os.pread`.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import warnings
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar

from ..errors import StorageError
from .filesystem import CREDENTIALS_HINT, ProcessFilesystem
from .location import Location, parse_location, scrub
from .retry import RetryPolicy, ShortReadError, TransientFailure, describe, with_retries

__all__ = [
    "S3_CLIENTS",
    "STORES",
    "ClientNotice",
    "FsspecStore",
    "PipeStore",
    "Store",
    "open_store",
    "register_s3_client",
]

T = TypeVar("T")
CHUNK_BYTES = 8 << 20  # one sequential request of the streamed reader


DENIED_STATUS = (401, 403)  # HTTP statuses of refused access (fsspec's HTTP errors carry one)


def denied(err: BaseException) -> bool:
    """True if `err` says the request was refused (PermissionError, or HTTP 401/403)."""
    return isinstance(err, PermissionError) or getattr(err, "status", None) in DENIED_STATUS


def denied_error(
    display: str, protocol: str, err: BaseException, other: str = "storage_options"
) -> StorageError:
    """The error for refused access to `display` (a printable URL): the backend's credential
    settings (`CREDENTIALS_HINT`), or `other`."""
    hint = CREDENTIALS_HINT.get(protocol)
    return StorageError(
        f"access to {display} was denied ({scrub(describe(err))}): check the credentials "
        f"({hint + ', or ' if hint else ''}{other})"
    )


def missing_hint(name: str) -> str:
    """What to do when file `name` of a dataset folder is missing ("" for other files)."""
    if name == "manifest.json":
        return (
            ": check the bucket and prefix; a dataset folder holds manifest.json (write one "
            "with `mmsample shard TABLE URL`, or `mmsample index URL` for tars already there)"
        )
    if name.endswith((".tar", ".idx.npy")):
        return (
            ": manifest.json names it, so the folder is incomplete or was changed after it was "
            "published; publish it again (`mmsample shard TABLE URL`, or `mmsample index URL`)"
        )
    return ""


class Store:
    """A dataset folder on some storage. `location.display` names it in every message."""

    location: Location
    policy: RetryPolicy
    ranged = True  # byte-range reads (indexed mode) supported
    listable = True  # `sizes` and `tree` supported

    def url(self, name: str) -> str:
        """File `name` of the folder as it may be printed."""
        return self.location.child(name).display

    def check_access(self, access: str) -> None:
        """StorageError if this store cannot be read the way `access` says ("sequential",
        "random"), before anything is read."""

    def read(self, name: str) -> bytes:
        """The whole file `name` (manifest, offset index)."""
        raise NotImplementedError

    def read_range(self, name: str, start: int, end: int) -> bytes:
        """Bytes [start, end) of `name`; ShortReadError (transient) if fewer came back."""
        raise NotImplementedError

    def chunks(self, name: str, start: int, size: int, chunk: int = CHUNK_BYTES) -> Iterator[bytes]:
        """`name` from byte `start` to `size`, in sequential pieces of about `chunk` bytes."""
        raise NotImplementedError

    def sizes(self) -> dict[str, int]:
        """{file name: bytes} of the folder (one listing)."""
        raise NotImplementedError

    def tree(self) -> dict[str, int]:
        """{path relative to the folder, `/`-separated: bytes} of every file under the folder,
        subfolders included (one recursive listing, paged by the backend)."""
        raise NotImplementedError

    def exists(self, name: str) -> bool:
        raise NotImplementedError

    def put_file(self, name: str, local: str) -> None:
        """Upload local file `local` as `name`, atomically (a temporary key, then a rename)."""
        raise StorageError(self._read_only())

    def write_bytes(self, name: str, data: bytes) -> None:
        """Write `data` as `name`, atomically (a temporary key, then a rename)."""
        raise StorageError(self._read_only())

    def remove(self, name: str) -> None:
        raise StorageError(self._read_only())

    def _read_only(self) -> str:
        return (
            f"{self.location.display} is read-only ({self.location.protocol}: cannot be written); "
            "write shards to s3://, gs://, file:// or a local folder"
        )


class FsspecStore(Store):
    """A folder of an fsspec filesystem, one client per process (`ProcessFilesystem`)."""

    def __init__(
        self, location: Location, policy: RetryPolicy, options: Mapping[str, Any] | None
    ) -> None:
        self.location = location
        self.policy = policy
        self.fs = ProcessFilesystem(location.protocol, policy, options)
        # a web server's folders are HTML pages, if anything: never listed (the manifest names
        # every file a reader needs)
        self.listable = not location.protocol.startswith("http")

    def _path(self, name: str) -> str:
        return self.location.child(name).path

    def call(self, name: str, what: str, fn: Callable[[Any], T]) -> T:
        """`fn(filesystem)` under the retry policy (see `retried`)."""
        return self.retried(name, what, lambda: fn(self.fs.get()))

    def retried(self, name: str, what: str, thunk: Callable[[], T]) -> T:
        """`thunk()` under the retry policy. Permanent faults become StorageError naming the
        URL; TransientFailure (every attempt failed) passes through for the caller to name (a
        sample's read: SampleError; anything else: StorageError)."""
        url = self.url(name)
        try:
            return with_retries(thunk, self.policy, f"{what} {url}")
        except TransientFailure:
            raise
        except FileNotFoundError as err:
            raise StorageError(
                f"{url} does not exist ({scrub(describe(err))}){missing_hint(name)}"
            ) from err
        except StorageError:
            raise
        except Exception as err:
            if denied(err):
                raise denied_error(url, self.location.protocol, err) from err
            raise StorageError(f"{what} {url} failed: {scrub(describe(err))}") from err

    def read(self, name: str) -> bytes:
        try:
            # start=0: one GET (a plain cat_file may first ask the size, a second request)
            read = lambda fs: fs.cat_file(self._path(name), start=0)  # noqa: E731
            return bytes(self.call(name, "reading", read))
        except TransientFailure as err:
            raise StorageError(scrub(str(err))) from err

    def read_range(self, name: str, start: int, end: int) -> bytes:
        def get(fs: Any) -> bytes:
            data = bytes(fs.cat_file(self._path(name), start=start, end=end))
            if len(data) < end - start:
                raise ShortReadError(f"got {len(data)} of {end - start} bytes")
            return data

        return self.call(name, f"reading bytes {start}..{end} of", get)

    def chunks(self, name: str, start: int, size: int, chunk: int = CHUNK_BYTES) -> Iterator[bytes]:
        pos = start
        while pos < size:
            end = min(size, pos + chunk)
            yield self.read_range(name, pos, end)
            pos = end

    def sizes(self) -> dict[str, int]:
        try:
            found = self.call("", "listing", lambda fs: fs.ls(self.location.path, detail=True))
        except TransientFailure as err:
            raise StorageError(scrub(str(err))) from err
        return {
            str(e["name"]).rstrip("/").rsplit("/", 1)[-1]: int(e.get("size") or 0) for e in found
        }

    def tree(self) -> dict[str, int]:
        root = self.location.path.rstrip("/")
        try:
            found = self.call("", "listing", lambda fs: fs.find(root, detail=True, withdirs=False))
        except TransientFailure as err:
            raise StorageError(scrub(str(err))) from err
        out = {}
        for full, entry in found.items():
            name = str(full).rstrip("/")
            if name.startswith(root + "/") and entry.get("type", "file") == "file":
                out[name[len(root) + 1 :]] = int(entry.get("size") or 0)
        return out

    def exists(self, name: str) -> bool:
        return bool(self.call(name, "checking", lambda fs: fs.exists(self._path(name))))

    def _atomic(self, name: str, upload: Callable[[Any, str], None]) -> None:
        if not self.location.writable:
            raise StorageError(self._read_only())
        tmp = f".{name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        try:
            self.call(name, "writing", lambda fs: upload(fs, self._path(tmp)))
            self.call(name, "renaming into", lambda fs: fs.mv(self._path(tmp), self._path(name)))
        except TransientFailure as err:
            raise StorageError(scrub(str(err))) from err
        finally:
            with contextlib.suppress(Exception):  # gone after the rename: nothing to clean
                self.fs.get().rm_file(self._path(tmp))

    def put_file(self, name: str, local: str) -> None:
        self._atomic(name, lambda fs, tmp: fs.put_file(local, tmp))

    def write_bytes(self, name: str, data: bytes) -> None:
        self._atomic(name, lambda fs, tmp: fs.pipe_file(tmp, data))

    def remove(self, name: str) -> None:
        if not self.location.writable:
            raise StorageError(self._read_only())
        self.call(name, "removing", lambda fs: fs.rm_file(self._path(name)))


class PipeStore(Store):
    """`pipe:CMD`: each file is the stdout of CMD with `{name}` replaced by the file's name (as
    in WebDataset). Read-only and streamed-only: no byte ranges, no listing."""

    ranged = False
    listable = False

    def __init__(self, location: Location, policy: RetryPolicy) -> None:
        self.location = location
        self.policy = policy

    def _command(self, name: str) -> str:
        return self.location.child(name).path

    def _failed(self, name: str, code: int, stderr: bytes) -> StorageError:
        tail = stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or ["no stderr"]
        return StorageError(
            f"pipe command for {name} ({scrub(self._command(name))}) exited with {code}: "
            f"{scrub(tail[0])}"
        )

    def read(self, name: str) -> bytes:
        run = subprocess.run(
            self._command(name), shell=True, capture_output=True, timeout=self.policy.timeout
        )
        if run.returncode != 0:
            raise self._failed(name, run.returncode, run.stderr)
        return run.stdout

    def read_range(self, name: str, start: int, end: int) -> bytes:
        raise StorageError(
            f"{self.location.display} is a pipe: source, streamed-only: reading one sample by "
            "its byte range (IndexedDataset, mode='indexed') needs a URL (s3://, gs://, "
            "https://) or a path; use StreamedDataset / mode='streamed' with pipe:"
        )

    def check_access(self, access: str) -> None:
        if access != "sequential":
            self.read_range("", 0, 0)

    def chunks(self, name: str, start: int, size: int, chunk: int = CHUNK_BYTES) -> Iterator[bytes]:
        proc = subprocess.Popen(
            self._command(name), shell=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        assert proc.stdout is not None and proc.stderr is not None
        try:
            pos = 0
            while pos < size:
                data = proc.stdout.read(min(chunk, size - pos))
                if not data:
                    break
                keep = data[max(0, start - pos) :]
                pos += len(data)
                if keep:
                    yield keep
        finally:
            proc.stdout.close()
            proc.kill() if proc.poll() is None else None
            code = proc.wait()
            err = proc.stderr.read()
            proc.stderr.close()
        if pos < size and code != 0:
            raise self._failed(name, code, err)

    def sizes(self) -> dict[str, int]:
        raise StorageError(f"{self.location.display}: a pipe: source cannot be listed")

    def exists(self, name: str) -> bool:
        raise StorageError(f"{self.location.display}: a pipe: source cannot be listed")

    def tree(self) -> dict[str, int]:
        raise StorageError(f"{self.location.display}: a pipe: source cannot be listed")


def _fsspec(location: Location, policy: RetryPolicy, options: Mapping[str, Any] | None) -> Store:
    return FsspecStore(location, policy, options)


def _pipe(location: Location, policy: RetryPolicy, options: Mapping[str, Any] | None) -> Store:
    if options:
        raise ValueError("storage_options do not apply to a pipe: source (its command has them)")
    return PipeStore(location, policy)


# protocol -> store; any protocol not named here goes through fsspec
STORES: dict[str, Callable[[Location, RetryPolicy, Mapping[str, Any] | None], Store]] = {
    "pipe": _pipe,
}
# an s3:// client: (location, policy, storage options without "client", whether the user chose
# this client) -> its store
S3Client = Callable[[Location, RetryPolicy, dict[str, Any], bool], Store]
# the clients of s3:// by name: storage_options={"client": NAME} or MMSAMPLE_S3_CLIENT=NAME;
# "obstore" is registered by `mmsample.storage.obstore_client` (imported with the package)
S3_CLIENTS: dict[str, S3Client] = {
    "fsspec": lambda location, policy, options, chosen: FsspecStore(location, policy, options)
}
S3_PROTOCOLS = frozenset({"s3", "s3a"})
CLIENT_OPTION = "client"
CLIENT_ENV = "MMSAMPLE_S3_CLIENT"
_default = ["fsspec"]  # the client of s3:// when none is chosen
_said: set[str] = set()


class ClientNotice(UserWarning):
    """Which client reads s3:// when none was chosen (said once per process)."""


def say_once(topic: str, text: str) -> None:
    """Warn `text` (ClientNotice) the first time `topic` comes up in this process."""
    if topic not in _said:
        _said.add(topic)
        warnings.warn(text, ClientNotice, stacklevel=5)


def register_s3_client(name: str, client: S3Client, default: bool = False) -> None:
    """Add `client` to S3_CLIENTS as `name`; `default`: the client when none is chosen."""
    S3_CLIENTS[name] = client
    if default:
        _default[0] = name


def _s3_client(options: dict[str, Any]) -> tuple[str, bool]:
    """(the client's name, whether the user chose it) for an s3:// dataset; removes the
    `client` storage option from `options`. ValueError for a name not in S3_CLIENTS."""
    chosen = options.pop(CLIENT_OPTION, None)
    source = f"The {CLIENT_OPTION!r} storage option"
    if chosen is None and os.environ.get(CLIENT_ENV):
        chosen, source = os.environ[CLIENT_ENV], f"The {CLIENT_ENV} environment variable"
    if chosen is None:
        return _default[0], False
    if chosen not in S3_CLIENTS:
        raise ValueError(
            f"{source} must be one of {sorted(S3_CLIENTS)} (the client that reads s3://); got "
            f"{chosen!r}."
        )
    return str(chosen), True


def open_store(
    location: str | os.PathLike[str] | Location,
    storage_options: Mapping[str, Any] | None = None,
    retry: RetryPolicy | None = None,
) -> Store:
    """The store of a remote folder (ValueError for a local path: read it with the OS).

    s3:// is read by the client `storage_options["client"]` names (else the environment
    variable MMSAMPLE_S3_CLIENT; else the default: "obstore" when installed, said once, else
    "fsspec"): one of S3_CLIENTS. ValueError for another name or a `client` option on another
    protocol; ImportError for "obstore" when it is not installed."""
    loc = parse_location(location)
    if loc.is_local:
        raise ValueError(f"{loc.display} is a local path, not a remote store")
    if storage_options is not None and not isinstance(storage_options, Mapping):
        raise ValueError(
            f"The 'storage_options' parameter must be a dict of fsspec options; got "
            f"{type(storage_options).__name__}."
        )
    policy = retry or RetryPolicy()
    options = dict(storage_options or {})
    if loc.protocol not in S3_PROTOCOLS:
        if CLIENT_OPTION in options:
            raise ValueError(
                f"The {CLIENT_OPTION!r} storage option chooses the client of s3:// URLs; "
                f"{loc.display} is {loc.protocol}:, read through "
                f"{'its command' if loc.protocol == 'pipe' else 'fsspec'}: leave it out."
            )
        return STORES.get(loc.protocol, _fsspec)(loc, policy, storage_options)
    name, chosen = _s3_client(options)
    return S3_CLIENTS[name](loc, policy, options, chosen)
