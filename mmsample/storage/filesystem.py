"""One fsspec filesystem per process, with the retry policy's timeouts and no retries of its own.

Place in the data flow: under `FsspecStore` (`mmsample.storage.store`). A filesystem is created
lazily in the process that uses it and re-created after a fork (the pid changes): fsspec's
async clients (s3fs, gcsfs, HTTP) run on an event loop in an I/O thread, and one created before a
fork hangs in the child (HF datasets #5123, gcsfs #379, s3fs #369). fsspec's own instance cache
is skipped for the same reason. Credentials and endpoints come from each backend's standard
configuration (for S3: `AWS_ENDPOINT_URL` / `AWS_ENDPOINT_URL_S3`, `AWS_PROFILE`, the credential
chain) plus the user's `storage_options`; this module adds only timeouts (`BACKEND_OPTIONS`).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping
from typing import Any

from .retry import RetryPolicy

__all__ = ["BACKEND_OPTIONS", "ProcessFilesystem", "merged_options"]


def _s3(policy: RetryPolicy) -> dict[str, Any]:
    # botocore's own retries off (max_attempts 1): RetryPolicy is the one retry loop
    return {
        "config_kwargs": {
            "connect_timeout": policy.timeout,
            "read_timeout": policy.timeout,
            "retries": {"max_attempts": 1, "mode": "standard"},
            "max_pool_connections": 64,  # concurrent range prefetches share one client
        }
    }


def _http(policy: RetryPolicy) -> dict[str, Any]:
    import aiohttp

    timeout = aiohttp.ClientTimeout(
        total=None, sock_connect=policy.timeout, sock_read=policy.timeout
    )
    return {"client_kwargs": {"timeout": timeout}}


# protocol -> the options that give its client the policy's timeouts
BACKEND_OPTIONS: dict[str, Callable[[RetryPolicy], dict[str, Any]]] = {
    "s3": _s3,
    "s3a": _s3,
    "http": _http,
    "https": _http,
}
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
        try:
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
