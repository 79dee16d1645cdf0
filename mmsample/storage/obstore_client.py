"""s3:// byte ranges through obstore (Rust `object_store`), the rest through s3fs.

Place in the data flow: under `RemoteShards` (`mmsample.storage.remote`) for an `s3://` dataset
when the client is "obstore" (`mmsample.storage.store.S3_CLIENTS`). `ObstoreStore` is an
`FsspecStore` whose `read_range` (each indexed sample, each coalesced prefetch, each streamed
chunk) is one obstore `get_range`; the manifest and index reads, listing and writes stay on
s3fs. The split is deliberate: obstore is not fork-safe (its Tokio runtime's threads do not
survive `fork`; a child that uses obstore after its parent did hangs, obstore PR #441), and a
reader opens its dataset in the main process before DataLoader workers are forked, so the main
process must not start obstore's runtime just to open the dataset.

Contracts kept: obstore's own retries are off (`max_retries` 0: `RetryPolicy` is the one retry
loop); connect and read timeouts are the policy's; its errors are translated into the storage
layer's (`translate`: 404 -> FileNotFoundError, 403 -> PermissionError, 5xx / 429 / 408 with
the S3 error code, resets, cut bodies and timeouts -> transient), so a failure is named exactly
as on s3fs. One obstore client per process, made lazily and again after a fork; a process forked
after its parent used obstore reads through s3fs instead (said once: `ForkFallbackWarning`).
Credentials: the standard AWS environment (keys, `AWS_ENDPOINT_URL_S3` / `AWS_ENDPOINT_URL`,
region) and, for profiles and the shared credential files, botocore's credential chain, plus
the s3fs-style `storage_options` that `obstore_config` translates.
"""

from __future__ import annotations

import os
import re
import threading
import warnings
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from typing import Any

from ..errors import MmsampleWarning
from .location import Location
from .retry import RetryPolicy, ShortReadError
from .store import CLIENT_ENV, FsspecStore, Store, register_s3_client, say_once

__all__ = [
    "ForkFallbackWarning",
    "ObstoreError",
    "ObstoreStore",
    "obstore_config",
    "obstore_installed",
    "open_obstore",
    "translate",
]

# s3fs option -> obstore S3Config key (values as given)
RENAMED = {
    "key": "access_key_id",
    "secret": "secret_access_key",
    "token": "session_token",
    "endpoint_url": "endpoint",
    "anon": "skip_signature",
}
# s3fs's client_kwargs entries that obstore takes
CLIENT_KWARGS = {"endpoint_url": "endpoint", "region_name": "region"}
# s3fs options with no bearing on reading ranges (accepted, used by s3fs only)
S3FS_ONLY = frozenset({"config_kwargs", "use_listings_cache", "listings_expiry_time"})

REFRESH = timedelta(minutes=15)  # how long obstore keeps credentials from botocore's chain
_STATUS = re.compile(r"status code: (\d{3})")
_CODE = re.compile(r"<Code>([A-Za-z]+)</Code>")
_KIND = re.compile(r"kind: (Connect|Request|Timeout|Interrupted)\b")

_runtime_pid: int | None = None  # the process that started obstore's runtime (None: none yet)
_inherited = False  # this process was forked after obstore's runtime started: never use it
_warned = False


def _forked() -> None:
    global _inherited, _warned
    _inherited = _runtime_pid is not None
    _warned = False


os.register_at_fork(after_in_child=_forked)


class ForkFallbackWarning(MmsampleWarning):
    """A process forked after its parent used obstore reads through s3fs."""


class ObstoreError(Exception):
    """An obstore error translated: `response` holds the S3 error code and HTTP status in the
    shape botocore gives them (so `retry.describe` and `retry.is_transient` read them)."""

    def __init__(self, message: str, status: int | None, code: str | None) -> None:
        super().__init__(message)
        if status is not None:
            self.response = {
                "Error": {"Code": code},
                "ResponseMetadata": {"HTTPStatusCode": status},
            }


class ObstoreConnectionError(ConnectionError):
    """A connection of obstore's reset, refused or cut mid-body (transient)."""


def translate(err: BaseException) -> BaseException:
    """The storage layer's error for an obstore error `err`: FileNotFoundError and
    PermissionError (permanent), TimeoutError and ObstoreConnectionError (transient),
    ObstoreError with the HTTP status and S3 code (transient for 5xx, 429, 408); `err`
    itself when it is no obstore error. The message is obstore's first line without the
    response body."""
    from obstore import exceptions

    if not isinstance(err, FileNotFoundError | exceptions.BaseError):
        return err
    text = str(err)
    first = text.strip().splitlines()[0] if text.strip() else type(err).__name__
    message = first.split(": <?xml", 1)[0]
    if isinstance(err, FileNotFoundError):
        return FileNotFoundError(message)
    if isinstance(err, exceptions.PermissionDeniedError | exceptions.UnauthenticatedError):
        return PermissionError(message)
    status = _STATUS.search(text)
    if status is not None:
        code = _CODE.search(text)
        return ObstoreError(message, int(status.group(1)), code.group(1) if code else None)
    kind = _KIND.search(text)
    if kind is not None:
        if kind.group(1) == "Timeout":
            return TimeoutError(message)
        return ObstoreConnectionError(message)
    return ObstoreError(message, None, None)


def _endpoint(options: Mapping[str, Any]) -> str | None:
    found = options.get("endpoint_url") or dict(options.get("client_kwargs") or {}).get(
        "endpoint_url"
    )
    if found:
        return str(found)
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")


def obstore_config(options: Mapping[str, Any] | None) -> tuple[dict[str, Any], list[str]]:
    """(obstore S3Config, the option names it cannot take) for s3fs-style `storage_options`:
    key, secret, token, endpoint_url, anon, profile, client_kwargs' endpoint_url and
    region_name; `config_kwargs` and the listing cache are s3fs's own (used for listing and
    writes). The endpoint comes from the options, else AWS_ENDPOINT_URL_S3, else
    AWS_ENDPOINT_URL (the environment's other AWS settings obstore reads itself)."""
    config: dict[str, Any] = {}
    unknown: list[str] = []
    for name, value in (options or {}).items():
        if name in RENAMED:
            config[RENAMED[name]] = value
        elif name == "client_kwargs" and isinstance(value, Mapping):
            for sub, subvalue in value.items():
                if sub in CLIENT_KWARGS:
                    config[CLIENT_KWARGS[sub]] = subvalue
                else:
                    unknown.append(f"client_kwargs.{sub}")
        elif name not in S3FS_ONLY and name != "profile":
            unknown.append(name)
    endpoint = _endpoint(options or {})
    if endpoint:
        # both keys: obstore's AWS_ENDPOINT_URL_S3 from the environment beats `endpoint`
        config["endpoint"] = config["aws_endpoint_url_s3"] = endpoint
    return config, unknown


def _credentials(options: Mapping[str, Any], config: Mapping[str, Any]) -> Any:
    """A credential provider from botocore's chain (profiles, the shared credential and config
    files, SSO) when no keys are given and signing is on; None otherwise (obstore then uses the
    environment's keys, web identity, the container and instance metadata)."""
    if config.get("skip_signature") or "access_key_id" in config:
        return None
    if os.environ.get("AWS_ACCESS_KEY_ID") or os.environ.get("AWS_SKIP_SIGNATURE"):
        return None
    try:
        import botocore.session
    except ImportError:
        return None
    profile = options.get("profile") or os.environ.get("AWS_PROFILE")
    session = botocore.session.Session(profile=profile)
    if session.get_credentials() is None:
        return None

    def provide() -> dict[str, Any]:
        found = session.get_credentials().get_frozen_credentials()
        out: dict[str, Any] = {
            "access_key_id": found.access_key,
            "secret_access_key": found.secret_key,
            # asked again after REFRESH (botocore renews expiring ones: roles, SSO)
            "expires_at": datetime.now(timezone.utc) + REFRESH,
        }
        if found.token:
            out["token"] = found.token
        return out

    return provide


class ObstoreStore(FsspecStore):
    """An s3:// folder whose byte ranges are read by obstore (see the module docstring);
    ValueError for `storage_options` obstore cannot take, ImportError without obstore."""

    def __init__(
        self, location: Location, policy: RetryPolicy, options: Mapping[str, Any] | None
    ) -> None:
        import obstore  # noqa: F401  (ImportError here, in the reader's constructor)

        super().__init__(location, policy, options)
        self.options = dict(options or {})
        unknown = obstore_config(self.options)[1]
        if unknown:
            raise ValueError(
                f"storage_options {unknown} have no obstore equivalent; obstore takes key, "
                "secret, token, endpoint_url, anon, profile, client_kwargs.endpoint_url / "
                "region_name: pass storage_options={'client': 'fsspec', ...} to read through "
                "s3fs with them"
            )
        self.bucket, _, self.prefix = location.path.partition("/")
        self._client: Any = None
        self._pid = -1
        self._lock = threading.Lock()

    def _make(self) -> Any:
        from obstore.store import S3Store

        config, _ = obstore_config(self.options)
        endpoint = str(config.get("endpoint", ""))
        timeout = timedelta(seconds=self.policy.timeout)
        client = {
            "connect_timeout": timeout,
            "read_timeout": timeout,  # silent this long: a transient fault
            "timeout": timedelta(days=1),  # no limit on a whole request, as s3fs
            "allow_http": endpoint.startswith("http://"),
            "pool_max_idle_per_host": "64",
        }
        return S3Store(
            self.bucket,
            config=config,  # type: ignore[arg-type]
            client_options=client,  # type: ignore[arg-type]
            retry_config={"max_retries": 0},  # RetryPolicy is the one retry loop
            credential_provider=_credentials(self.options, config),
        )

    def client(self) -> Any:
        """This process's obstore S3Store (made on first use and after a fork)."""
        global _runtime_pid
        if _runtime_pid is None:  # from here on, a fork's children must not use obstore
            _runtime_pid = os.getpid()
        if self._client is None or self._pid != os.getpid():
            with self._lock:
                if self._client is None or self._pid != os.getpid():
                    self._client = self._make()
                    self._pid = os.getpid()
        return self._client

    def _key(self, name: str) -> str:
        return f"{self.prefix.rstrip('/')}/{name}" if self.prefix else name

    def read_range(self, name: str, start: int, end: int) -> bytes:
        if _inherited:
            self._fork_fallback()
            return super().read_range(name, start, end)
        if end <= start:
            return b""
        import obstore

        def get() -> bytes:
            try:
                data = obstore.get_range(self.client(), self._key(name), start=start, end=end)
            except Exception as err:
                raise translate(err) from err
            if len(data) < end - start:
                raise ShortReadError(f"got {len(data)} of {end - start} bytes")
            return bytes(data)

        return self.retried(name, f"reading bytes {start}..{end} of", get)

    def _fork_fallback(self) -> None:
        global _warned
        if not _warned:
            _warned = True
            warnings.warn(
                f"process {os.getpid()} was forked after its parent had used obstore, which is "
                "not fork-safe (its Tokio threads do not survive a fork): it reads "
                f"{self.location.display} through s3fs; to keep obstore in DataLoader workers, "
                "pass multiprocessing_context='spawn' or 'forkserver', or read nothing in the "
                "main process before the workers start",
                ForkFallbackWarning,
                stacklevel=3,
            )

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_client"], state["_pid"], state["_lock"] = None, -1, None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()


def obstore_installed() -> bool:
    """True if obstore imports."""
    try:
        import obstore  # noqa: F401
    except ImportError:
        return False
    return True


def open_obstore(
    location: Location, policy: RetryPolicy, options: dict[str, Any], chosen: bool
) -> Store:
    """The "obstore" entry of `S3_CLIENTS`. Chosen: an ObstoreStore (ImportError naming the
    extra without obstore; ValueError for options it cannot take). The default (installed):
    an ObstoreStore, said once, or an s3fs store for options obstore cannot take, said once."""
    if chosen and not obstore_installed():
        raise ImportError(
            "the s3:// client 'obstore' was chosen but obstore is not installed: pip install "
            "'mmsample[s3]' (or pip install obstore), or choose 'fsspec' (s3fs)"
        )
    if not chosen:
        unknown = obstore_config(options)[1]
        if unknown:
            say_once(
                "options",
                f"{location.display} is read through s3fs: obstore (the default client when "
                f"installed) takes no storage_options {unknown}",
            )
            return FsspecStore(location, policy, options or None)
        say_once(
            "default",
            "s3:// byte ranges are read through obstore (installed: the default client); "
            f"storage_options={{'client': 'fsspec'}} or {CLIENT_ENV}=fsspec reads through s3fs",
        )
    return ObstoreStore(location, policy, options or None)


register_s3_client("obstore", open_obstore, default=obstore_installed())
