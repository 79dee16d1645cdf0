"""Retries of transient storage faults: exponential backoff with full jitter, and the line
between a transient fault (retry) and a permanent one (stop, naming the URL).

Place in the data flow: around every request the storage layer makes (`mmsample.storage.store`).
Transient: HTTP 5xx and 429, S3 `SlowDown` / `ServiceUnavailable` / `InternalError`, connection
resets and refusals, read timeouts, a body shorter than asked for. Permanent: missing objects,
403 / bad credentials, other 4xx, anything unknown. The backoff is "full jitter" (Brooker,
"Exponential Backoff And Jitter", AWS Architecture Blog 2015): attempt k waits a uniform draw in
[0, min(max_delay, base_delay * 2**k)].
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

__all__ = ["RetryPolicy", "ShortReadError", "TransientFailure", "is_transient", "with_retries"]

T = TypeVar("T")

# status codes and S3 error codes that a later attempt may not meet
TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})
TRANSIENT_CODES = frozenset(
    {"SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout", "Throttling"}
)
# class names of the connection and timeout errors of aiohttp, botocore, urllib3, requests
TRANSIENT_CLASSES = frozenset(
    {
        "ClientPayloadError",
        "ClientConnectionError",
        "ClientConnectorError",
        "ClientOSError",
        "ServerDisconnectedError",
        "ServerTimeoutError",
        "EndpointConnectionError",
        "ConnectionClosedError",
        "ReadTimeoutError",
        "ConnectTimeoutError",
        "IncompleteRead",
        "ResponseStreamingError",
        "ProtocolError",
        "FSTimeoutError",
        "ChunkedEncodingError",
    }
)
_STATUS_IN_TEXT = re.compile(
    r"\b(5\d\d|429|408)\b|SlowDown|Service ?Unavailable|reduce your request rate", re.IGNORECASE
)


class ShortReadError(ConnectionError):
    """A response body shorter than the byte range asked for (a cut connection)."""


class TransientFailure(Exception):
    """Every attempt met a transient fault; `last` is the last one, `attempts` how many ran."""

    def __init__(self, what: str, attempts: int, last: BaseException) -> None:
        self.what, self.attempts, self.last = what, attempts, last
        super().__init__(f"{what}: {attempts} attempts failed; the last with {describe(last)}")


def describe(err: BaseException) -> str:
    """`Type: message [code, HTTP status]` of an error, first line only (messages of cloud
    clients can be long); the service's error code and status come from the error or its
    causes (s3fs turns a botocore ClientError into an OSError that drops them)."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    out = f"{type(err).__name__}: {text}" if text else type(err).__name__
    for e in _chain(err):
        response = getattr(e, "response", None)
        if isinstance(response, dict):
            code = response.get("Error", {}).get("Code")
            status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            return out + f" [{code}, HTTP {status}]"
        status = getattr(e, "status", None)
        if isinstance(status, int):
            return out + f" [HTTP {status}]"
    return out


def _status(err: BaseException) -> int | None:
    status = getattr(err, "status", None) or getattr(err, "code", None)
    response = getattr(err, "response", None)
    if isinstance(response, dict):
        meta = response.get("ResponseMetadata", {})
        status = meta.get("HTTPStatusCode", status)
        code = response.get("Error", {}).get("Code")
        if code in TRANSIENT_CODES:
            return 503
    return status if isinstance(status, int) else None


def is_transient(err: BaseException) -> bool:
    """True if a later attempt may succeed (see the module docstring); False for missing
    objects, denied access and every error it does not know."""
    if isinstance(err, FileNotFoundError | PermissionError | IsADirectoryError):
        return False
    for e in _chain(err):
        if isinstance(e, TimeoutError | ConnectionError | ShortReadError):
            return True
        if type(e).__name__ in TRANSIENT_CLASSES:
            return True
        status = _status(e)
        if status is not None:
            return status in TRANSIENT_STATUS
        if isinstance(e, OSError) and _STATUS_IN_TEXT.search(str(e)):
            return True  # s3fs turns a 503 SlowDown into an OSError that names it
    return False


def _chain(err: BaseException) -> list[BaseException]:
    """`err` and its causes (at most 8 deep)."""
    out: list[BaseException] = []
    e: BaseException | None = err
    while e is not None and len(out) < 8:
        out.append(e)
        e = e.__cause__ or e.__context__
    return out


@dataclass(frozen=True)
class RetryPolicy:
    """How requests are retried and timed out.

    attempts: tries of one request in all (>= 1; 1 = no retry). base_delay, max_delay: seconds
    of the full-jitter backoff (attempt k waits uniform [0, min(max_delay, base_delay * 2**k)]).
    timeout: seconds a connection may stay silent (connect and each read) before the attempt
    counts as a transient fault: a stalled server never hangs a rank. ValueError naming the
    parameter otherwise."""

    attempts: int = 5
    base_delay: float = 0.2
    max_delay: float = 10.0
    timeout: float = 60.0

    def __post_init__(self) -> None:
        if not isinstance(self.attempts, int) or isinstance(self.attempts, bool):
            raise ValueError(f"RetryPolicy: 'attempts' must be an int >= 1; got {self.attempts!r}")
        if self.attempts < 1:
            raise ValueError(f"RetryPolicy: 'attempts' must be an int >= 1; got {self.attempts!r}")
        for name in ("base_delay", "max_delay", "timeout"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
                raise ValueError(f"RetryPolicy: {name!r} must be seconds >= 0; got {value!r}")
        if self.timeout == 0:
            raise ValueError("RetryPolicy: 'timeout' must be > 0 seconds (a read must end)")

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Seconds to wait after failed attempt `attempt` (0-based): full jitter."""
        return rng.uniform(0.0, min(self.max_delay, self.base_delay * 2.0**attempt))


def with_retries(
    call: Callable[[], T],
    policy: RetryPolicy,
    what: str,
    sleep: Callable[[float], None] = time.sleep,
    rng: random.Random | None = None,
) -> T:
    """`call()`, retried under `policy` while it raises a transient fault (`is_transient`).
    A permanent fault is raised at once, unchanged; TransientFailure (naming `what`, the
    attempts and the last fault) when every attempt failed."""
    rng = rng or random.Random()
    for attempt in range(policy.attempts):
        try:
            return call()
        except Exception as err:
            if not is_transient(err):
                raise
            if attempt + 1 == policy.attempts:
                raise TransientFailure(what, policy.attempts, err) from err
            sleep(policy.delay(attempt, rng))
    raise AssertionError("unreachable")  # the loop returns or raises
