"""One fsspec filesystem per process, with the retry policy's timeouts and no retries of its own.

Place in the data flow: under `FsspecStore` (`mmsample.storage.store`). A filesystem is created
lazily in the process that uses it and re-created after a fork (the pid changes): fsspec's
async clients (s3fs, gcsfs, HTTP) run on an event loop in an I/O thread, and one created before a
fork hangs in the child (HF datasets #5123, gcsfs #379, s3fs #369). fsspec's own instance cache
is skipped for the same reason. Credentials and endpoints come from each backend's standard
configuration (for S3: `AWS_ENDPOINT_URL` / `AWS_ENDPOINT_URL_S3`, `AWS_PROFILE`, the credential
chain; for GCS: application default credentials, `STORAGE_EMULATOR_HOST`) plus the user's
`storage_options`; this module adds only timeouts (`BACKEND_OPTIONS`) and, where a backend's
retries cannot be turned off by an option, the class that has them off (`BACKEND_CLASSES`).
"""

from __future__ import annotations

import functools
import os
import threading
import warnings
from collections.abc import Callable, Mapping
from typing import Any

from .retry import RetryPolicy

__all__ = [
    "BACKEND_CLASSES",
    "BACKEND_OPTIONS",
    "CREDENTIALS_HINT",
    "ProcessFilesystem",
    "merged_options",
]


def _s3(policy: RetryPolicy) -> dict[str, Any]:
    # botocore's own retries off (total_max_attempts 1: the first attempt only; its
    # max_attempts counts retries, so 1 there was a second request): RetryPolicy is the one loop
    return {
        "config_kwargs": {
            "connect_timeout": policy.timeout,
            "read_timeout": policy.timeout,
            "retries": {"total_max_attempts": 1, "mode": "standard"},
            "max_pool_connections": 64,  # concurrent range prefetches share one client
        }
    }


def _http(policy: RetryPolicy) -> dict[str, Any]:
    import aiohttp

    timeout = aiohttp.ClientTimeout(
        total=None, sock_connect=policy.timeout, sock_read=policy.timeout
    )
    return {"client_kwargs": {"timeout": timeout}}


def _gcs(policy: RetryPolicy) -> dict[str, Any]:
    import aiohttp

    # gcsfs passes `requests_timeout` to every aiohttp request it makes; without it a request has
    # no timeout at all (aiohttp's ClientTimeout(total=None)) and a stalled server hangs a rank
    timeout = aiohttp.ClientTimeout(
        total=None, sock_connect=policy.timeout, sock_read=policy.timeout
    )
    return {"requests_timeout": timeout}


# protocol -> the options that give its client the policy's timeouts
BACKEND_OPTIONS: dict[str, Callable[[RetryPolicy], dict[str, Any]]] = {
    "s3": _s3,
    "s3a": _s3,
    "http": _http,
    "https": _http,
    "gs": _gcs,
    "gcs": _gcs,
}

# gcsfs methods wrapped by its `retry_request` decorator (6 tries, waits of 1 to 17 s, bound when
# the class is defined: the instance's `retries` attribute does not change it)
GCS_RETRIED = ("_request", "_get_file_request", "_get_file_concurrent")


@functools.cache
def _gcs_class() -> type:
    """gcsfs's `GCSFileSystem` with its own retries removed: one call = one HTTP request.

    The class is gcsfs's JSON-API filesystem (`gcsfs.core.GCSFileSystem`), not the experimental
    `ExtendedGcsFileSystem` that fsspec's `gs` maps to by default: that one first asks each
    bucket's layout over gRPC (the storage-control API) under google-api-core's own retry (a
    60 s deadline), a second retry loop; where that API cannot be reached (an emulator, an HTTP
    proxy) every call waits out the deadline (33 to 93 s a call against the emulator), as an
    unknown layout is not kept. A zonal bucket is therefore not read over gRPC either.

    A 403 (which gcsfs raises as a plain `OSError("Forbidden: ...")`) is raised as
    `PermissionError`, so it is named as denied access. ImportError without gcsfs. Warns once if
    this gcsfs no longer has the decorator to remove (then gcsfs may retry inside an attempt)."""
    from gcsfs.core import GCSFileSystem

    plain: dict[str, Any] = {}
    for name in GCS_RETRIED:
        inner = getattr(getattr(GCSFileSystem, name, None), "__wrapped__", None)
        if inner is not None:
            plain[name] = inner
    missing = [name for name in GCS_RETRIED if name not in plain]
    if missing:
        warnings.warn(
            f"gcsfs: no retry_request decorator found on GCSFileSystem.{', .'.join(missing)} "
            "(this gcsfs changed where it retries); mmsample could not turn those retries off, "
            "so gcsfs may retry requests inside each of mmsample's attempts",
            RuntimeWarning,
            stacklevel=2,
        )
    request = plain.get("_request")

    class SingleAttemptGCSFileSystem(GCSFileSystem):
        if "_get_file_request" in plain:
            _get_file_request = plain["_get_file_request"]
        if "_get_file_concurrent" in plain:
            _get_file_concurrent = plain["_get_file_concurrent"]

        async def _request(self, *args: Any, **kwargs: Any) -> Any:
            try:
                if request is None:
                    return await super()._request(*args, **kwargs)
                return await request(self, *args, **kwargs)
            except OSError as err:
                if type(err) is OSError and str(err).startswith("Forbidden"):
                    raise PermissionError(str(err)) from err
                raise

    return SingleAttemptGCSFileSystem


# protocol -> the filesystem class to use instead of the one fsspec registers for it
BACKEND_CLASSES: dict[str, Callable[[], type]] = {"gs": _gcs_class, "gcs": _gcs_class}

# protocol -> where its credentials come from (said when access is denied)
CREDENTIALS_HINT: dict[str, str] = {
    "s3": "AWS_PROFILE / AWS_ACCESS_KEY_ID, the endpoint AWS_ENDPOINT_URL_S3",
    "gs": "GOOGLE_APPLICATION_CREDENTIALS or `gcloud auth application-default login`, the "
    "endpoint STORAGE_EMULATOR_HOST",
}
CREDENTIALS_HINT["s3a"] = CREDENTIALS_HINT["s3"]
CREDENTIALS_HINT["gcs"] = CREDENTIALS_HINT["gs"]
# attribute of a filesystem class that sets its own retry count (set to 1: ours retry)
OWN_RETRIES = "retries"


def merged_options(
    protocol: str, policy: RetryPolicy, user: Mapping[str, Any] | None
) -> dict[str, Any]:
    """The backend's timeout options under the user's `storage_options` (the user's win; nested
    dicts such as `config_kwargs` and `client_kwargs` are merged one level deep)."""
    make = BACKEND_OPTIONS.get(protocol)
    out = make(policy) if make is not None else {}
    for key, value in (user or {}).items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = {**out[key], **value}
        else:
            out[key] = value
    return out


class ProcessFilesystem:
    """The fsspec filesystem of `protocol` for the calling process (created on first use and
    after a fork; never pickled: a DataLoader worker makes its own)."""

    def __init__(
        self, protocol: str, policy: RetryPolicy, storage_options: Mapping[str, Any] | None
    ) -> None:
        self.protocol = protocol
        self.policy = policy
        self.storage_options = dict(storage_options or {})
        self._fs: Any = None
        self._pid = -1
        self._lock = threading.Lock()

    def get(self) -> Any:
        """This process's filesystem."""
        if self._fs is None or self._pid != os.getpid():
            with self._lock:
                if self._fs is None or self._pid != os.getpid():
                    self._fs = self._create()
                    self._pid = os.getpid()
        return self._fs

    def _create(self) -> Any:
        import fsspec

        options = merged_options(self.protocol, self.policy, self.storage_options)
        make_class = BACKEND_CLASSES.get(self.protocol)
        try:
            if make_class is not None:
                fs = make_class()(skip_instance_cache=True, **options)
            else:
                fs = fsspec.filesystem(self.protocol, skip_instance_cache=True, **options)
        except ImportError as err:
            extra = {"s3": "s3", "gs": "gcs", "gcs": "gcs"}.get(self.protocol)
            fix = (
                f"pip install 'mmsample[{extra}]'"
                if extra
                else f"install fsspec's {self.protocol} backend"
            )
            raise ImportError(
                f"reading {self.protocol}:// needs its fsspec backend: {fix} ({err})"
            ) from err
        if hasattr(fs, OWN_RETRIES):
            setattr(fs, OWN_RETRIES, 1)
        return fs

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_fs"], state["_pid"], state["_lock"] = None, -1, None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()
