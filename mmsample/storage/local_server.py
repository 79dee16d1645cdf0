"""A local HTTP server for tests and benchmarks: files of a folder with Range support, or a
proxy in front of another server (a local S3 server), with injected latency and faults.

Place in the data flow: none in training. `tests/` and `tools/bench_remote.py` read shards
through it as through a cloud store: `LocalServer(folder=...)` serves `GET`/`HEAD` with single
byte ranges (206, `Content-Range`) over keep-alive HTTP/1.1; `LocalServer(upstream=...)` forwards
every request (S3 API calls included) and its answer. `latency` (seconds) delays each request
like a distant region; `faults` (a `Faults`) makes chosen requests fail the ways networks fail:
"503" (an S3 `SlowDown` answer), "403" (`AccessDenied`), "reset" (the connection dropped before an answer), "truncate"
(the full Content-Length announced, half the body sent, the connection closed), "stall" (no
answer for `stall` seconds: the client's read timeout must fire).
"""

from __future__ import annotations

import http.client
import os
import re
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

__all__ = ["FAULT_KINDS", "Fault", "Faults", "LocalServer"]

FAULT_KINDS = ("503", "403", "reset", "truncate", "stall")
_RANGE = re.compile(r"bytes=(\d+)-(\d*)$")
ACCESS_DENIED = (
    b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>AccessDenied</Code>'
    b"<Message>Access Denied</Message></Error>"
)
SLOW_DOWN = (
    b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message></Error>"
)


@dataclass
class Fault:
    """Fail the next `count` requests of `method` whose path contains `match` with `kind`."""

    kind: str
    match: str = ""
    count: int = 1
    method: str = "GET"

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"Fault: kind must be one of {FAULT_KINDS}; got {self.kind!r}")


@dataclass
class Faults:
    """The faults still to inject, and a log of every request (method, path, Range header)."""

    pending: list[Fault] = field(default_factory=list)
    log: list[tuple[str, str, str]] = field(default_factory=list)
    injected: list[tuple[str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, kind: str, match: str = "", count: int = 1, method: str = "GET") -> None:
        with self.lock:
            self.pending.append(Fault(kind, match, count, method))

    def take(self, method: str, path: str, range_: str) -> str | None:
        """Log the request; the kind of fault to inject into it, or None."""
        with self.lock:
            self.log.append((method, path, range_))
            for f in self.pending:
                if f.count > 0 and f.method == method and f.match in path:
                    f.count -= 1
                    self.injected.append((f.kind, path))
                    return f.kind
        return None

    def requests(self, method: str = "GET", match: str = "") -> int:
        """Requests logged so far of `method` whose path contains `match`."""
        with self.lock:
            return sum(1 for m, p, _ in self.log if m == method and match in p)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # TCP_NODELAY: the headers and the body go out in two writes; with Nagle's algorithm the
    # second waits for the client's delayed ACK (40 ms on Linux) on every small GET
    disable_nagle_algorithm = True
    server: _Server
    _body: bytes | None = None

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _fault(self) -> str | None:
        time.sleep(self.server.latency)
        kind = self.server.faults.take(self.command, self.path, self.headers.get("Range", ""))
        if kind == "503":
            self._send(503, {"Content-Type": "application/xml"}, SLOW_DOWN)
        elif kind == "403":
            self._send(403, {"Content-Type": "application/xml"}, ACCESS_DENIED)
        elif kind == "reset":
            self._reset()
        elif kind == "stall":
            time.sleep(self.server.stall)
            self.close_connection = True
        return kind

    def _reset(self) -> None:
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True

    def _send(self, status: int, headers: dict[str, str], body: bytes, cut: bool = False) -> None:
        self.send_response(status)
        for k, v in headers.items():
            if k.lower() not in ("content-length", "transfer-encoding", "connection"):
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body[: len(body) // 2] if cut else body)
        if cut:
            self.wfile.flush()
            self._reset()

    def _handle(self) -> None:
        # the request's body is read before any fault is answered: left unread on a keep-alive
        # connection, it would be parsed as the next request
        length = int(self.headers.get("Content-Length") or 0)
        self._body = self.rfile.read(length) if length else None
        kind = self._fault()
        if kind in ("503", "403", "reset", "stall"):
            return
        if self.server.upstream is not None:
            status, headers, body = self._forward()
        else:
            status, headers, body = self._file()
        self._send(status, headers, body, cut=kind == "truncate")

    def _file(self) -> tuple[int, dict[str, str], bytes]:
        assert self.server.folder is not None
        rel = self.path.split("?", 1)[0].lstrip("/")
        path = (self.server.folder / rel).resolve()
        if self.server.folder not in path.parents or not path.is_file():
            return 404, {"Content-Type": "text/plain"}, b"not found"
        size = path.stat().st_size
        ranged = _RANGE.match(self.headers.get("Range", "").strip())
        start, end = 0, size
        if ranged:
            start = int(ranged.group(1))
            end = min(size, int(ranged.group(2)) + 1) if ranged.group(2) else size
            if start >= size:
                return 416, {"Content-Range": f"bytes */{size}"}, b""
        with open(path, "rb") as f:
            body = os.pread(f.fileno(), end - start, start)
        headers = {"Content-Type": "application/octet-stream", "Accept-Ranges": "bytes"}
        if ranged:
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
            return 206, headers, body
        return 200, headers, body

    def _forward(self) -> tuple[int, dict[str, str], bytes]:
        host, port = self.server.upstream or ("", 0)
        data = self._body
        conn = http.client.HTTPConnection(host, port, timeout=60)
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() != "connection"}
            conn.request(self.command, self.path, body=data, headers=headers)
            resp = conn.getresponse()
            return resp.status, dict(resp.getheaders()), resp.read()
        finally:
            conn.close()

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _handle


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    folder: Path | None
    upstream: tuple[str, int] | None
    latency: float
    stall: float
    faults: Faults


class LocalServer:
    """A started server on 127.0.0.1 (a free port): `url` is its root; `stop()` ends it.

    folder: serve this folder's files (Range-capable); upstream: (host, port) to forward to
    instead. latency: seconds added to every request. stall: seconds a "stall" fault waits."""

    def __init__(
        self,
        folder: str | os.PathLike[str] | None = None,
        upstream: tuple[str, int] | None = None,
        latency: float = 0.0,
        stall: float = 5.0,
    ) -> None:
        if (folder is None) == (upstream is None):
            raise ValueError("LocalServer: give exactly one of 'folder' and 'upstream'")
        self.faults = Faults()
        self.server = _Server(("127.0.0.1", 0), _Handler)
        self.server.folder = Path(folder).resolve() if folder is not None else None
        self.server.upstream = upstream
        self.server.latency = latency
        self.server.stall = stall
        self.server.faults = self.faults
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def set_latency(self, seconds: float) -> None:
        self.server.latency = seconds

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> LocalServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
