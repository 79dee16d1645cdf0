"""A local HTTP server for tests and benchmarks: files of a folder with Range support (as plain
HTTP or as a read-only S3 endpoint), or a proxy in front of another server (a local S3 server),
with injected latency and faults.

Place in the data flow: none in training. `tests/` and `tools/bench_remote.py` read shards
through it as through a cloud store: `LocalServer(folder=...)` serves `GET`/`HEAD` with single
byte ranges (206, `Content-Range`) over keep-alive HTTP/1.1; `LocalServer(folder=..., s3=True)`
answers the S3 API's path-style reads (`/bucket/key`: bucket = a subfolder of `folder`):
GetObject with or without `Range` (206 + `Content-Range`), HeadObject, each with the `ETag`
(the MD5 of the file, quoted), `Last-Modified` and `Content-Length` S3 sends, `NoSuchKey` /
`NoSuchBucket` / `InvalidRange` errors as S3 words them, and ListObjectsV2 (prefix and `/`
delimiter, one page); every other S3 call (writes, multipart, ...) answers 501
`NotImplemented` naming it. Unlike moto's server, each ranged GET reads only its bytes from
disk, like an object store. `LocalServer(upstream=...)` forwards every request (S3 API calls
included) and its answer. `latency` (seconds) delays each request
like a distant region; `faults` (a `Faults`) makes chosen requests fail the ways networks fail:
"503" (an S3 `SlowDown` answer), "403" (`AccessDenied`), "reset" (the connection dropped before an answer), "truncate"
(the full Content-Length announced, half the body sent, the connection closed), "stall" (no
answer for `stall` seconds: the client's read timeout must fire).
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit
from xml.sax.saxutils import escape

__all__ = ["FAULT_KINDS", "Fault", "Faults", "LocalServer"]

FAULT_KINDS = ("503", "403", "reset", "truncate", "stall")
_RANGE = re.compile(r"bytes=(\d*)-(\d*)$")
ACCESS_DENIED = (
    b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>AccessDenied</Code>'
    b"<Message>Access Denied</Message></Error>"
)
SLOW_DOWN = (
    b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message></Error>"
)
XML = {"Content-Type": "application/xml"}


def s3_error(code: str, message: str, resource: str) -> bytes:
    """An S3 error document (`<Error><Code>...`) as S3 sends it."""
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
        f"<Message>{escape(message)}</Message><Resource>{escape(resource)}</Resource>"
        "<RequestId>0</RequestId></Error>"
    ).encode()


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
    """The faults still to inject, a log of every request (method, path, Range header) and the
    User-Agent of each (`agents`, in the same order: which client sent it)."""

    pending: list[Fault] = field(default_factory=list)
    log: list[tuple[str, str, str]] = field(default_factory=list)
    agents: list[str] = field(default_factory=list)
    injected: list[tuple[str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, kind: str, match: str = "", count: int = 1, method: str = "GET") -> None:
        with self.lock:
            self.pending.append(Fault(kind, match, count, method))

    def take(self, method: str, path: str, range_: str, agent: str = "") -> str | None:
        """Log the request; the kind of fault to inject into it, or None."""
        with self.lock:
            self.log.append((method, path, range_))
            self.agents.append(agent)
            for f in self.pending:
                if f.count > 0 and f.method == method and f.match in path:
                    f.count -= 1
                    self.injected.append((f.kind, path))
                    return f.kind
        return None

    def cancel(self) -> None:
        """Drop the faults still pending (the log is kept)."""
        with self.lock:
            self.pending.clear()

    def clear(self) -> None:
        """No pending fault, an empty log (requests, agents, faults injected)."""
        with self.lock:
            self.pending.clear()
            self.log.clear()
            self.agents.clear()
            self.injected.clear()

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
        kind = self.server.faults.take(
            self.command,
            self.path,
            self.headers.get("Range", ""),
            self.headers.get("User-Agent", ""),
        )
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
        # a HEAD announces the length a GET would send (its body is empty)
        length = headers.get("Content-Length") if self.command == "HEAD" else None
        self.send_header("Content-Length", length or str(len(body)))
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
        elif self.server.s3:
            status, headers, body = self._s3()
        else:
            status, headers, body = self._file()
        self._send(status, headers, body, cut=kind == "truncate")

    def _file(self) -> tuple[int, dict[str, str], bytes]:
        assert self.server.folder is not None
        rel = unquote(urlsplit(self.path).path).lstrip("/")
        path = (self.server.folder / rel).resolve()
        if self.server.folder not in path.parents or not path.is_file():
            return 404, {"Content-Type": "text/plain"}, b"not found"
        return self._file_answer(path, {})

    def _file_answer(
        self, path: Path, headers: dict[str, str]
    ) -> tuple[int, dict[str, str], bytes]:
        """The file at `path` whole (200) or the single byte range the request asks (206,
        `Content-Range`; 416 past the end), with `headers` added."""
        size = path.stat().st_size
        ranged = _RANGE.match(self.headers.get("Range", "").strip())
        start, end = 0, size
        if ranged and (ranged.group(1) or ranged.group(2)):
            first, last = ranged.group(1), ranged.group(2)
            if not first:  # bytes=-n: the last n bytes
                start = max(0, size - int(last))
            else:
                start = int(first)
                end = min(size, int(last) + 1) if last else size
            if start >= size or start >= end:
                resource = self.path.split("?", 1)[0]
                body = s3_error("InvalidRange", "The requested range is not satisfiable", resource)
                return 416, {**XML, "Content-Range": f"bytes */{size}"}, body
        else:
            ranged = None
        with open(path, "rb") as f:
            body = b"" if self.command == "HEAD" else os.pread(f.fileno(), end - start, start)
        out = {"Content-Type": "application/octet-stream", "Accept-Ranges": "bytes", **headers}
        if ranged:
            out["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
            return 206, out, body
        out["Content-Length"] = str(size)
        return 200, out, body

    def _s3(self) -> tuple[int, dict[str, str], bytes]:
        """A path-style S3 request on the folder: bucket = first path component."""
        assert self.server.folder is not None
        parts = urlsplit(self.path)
        query = parse_qs(parts.query, keep_blank_values=True)
        bucket, _, key = unquote(parts.path).lstrip("/").partition("/")
        root = (self.server.folder / bucket).resolve() if bucket else None
        if root is None or self.server.folder not in root.parents or not root.is_dir():
            return 404, XML, s3_error("NoSuchBucket", "The bucket does not exist", f"/{bucket}")
        if self.command in ("GET", "HEAD") and not key and "uploads" not in query:
            if self.command == "GET" and query.get("list-type") == ["2"]:
                return self._list(bucket, root, query)
        elif self.command in ("GET", "HEAD") and not query.keys() - {"x-id", "partNumber"}:
            path = (root / key).resolve()
            if root not in path.parents or not path.is_file():
                body = s3_error(
                    "NoSuchKey", "The specified key does not exist.", f"/{bucket}/{key}"
                )
                return 404, XML, body if self.command == "GET" else b""
            stat = path.stat()
            headers = {
                "ETag": f'"{self.server.etag(path, stat)}"',
                "Last-Modified": formatdate(stat.st_mtime, usegmt=True),
                "x-amz-request-id": "0",
            }
            return self._file_answer(path, headers)
        what = f"{self.command} {parts.path}" + (f"?{'&'.join(sorted(query))}" if query else "")
        message = (
            f"LocalServer(s3=True) is a read-only S3 endpoint (GetObject, HeadObject, "
            f"ListObjectsV2); {what} is not implemented: write through moto's server instead"
        )
        return 501, XML, s3_error("NotImplemented", message, parts.path)

    def _list(
        self, bucket: str, root: Path, query: dict[str, list[str]]
    ) -> tuple[int, dict[str, str], bytes]:
        """ListObjectsV2 of `root` (one page: every key under the prefix)."""
        prefix = query.get("prefix", [""])[0]
        delimiter = query.get("delimiter", [""])[0]
        keys = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
        contents, prefixes = [], set()
        for key in keys:
            if not key.startswith(prefix):
                continue
            rest = key[len(prefix) :]
            if delimiter and delimiter in rest:
                prefixes.add(prefix + rest.split(delimiter, 1)[0] + delimiter)
                continue
            stat = (root / key).stat()
            contents.append(
                f"<Contents><Key>{escape(key)}</Key><LastModified>"
                f"{time.strftime('%Y-%m-%dT%H:%M:%S.000Z', time.gmtime(stat.st_mtime))}"
                f"</LastModified><ETag>&quot;{self.server.etag(root / key, stat)}&quot;</ETag>"
                f"<Size>{stat.st_size}</Size><StorageClass>STANDARD</StorageClass></Contents>"
            )
        common = "".join(
            f"<CommonPrefixes><Prefix>{escape(p)}</Prefix></CommonPrefixes>"
            for p in sorted(prefixes)
        )
        body = (
            '<?xml version="1.0" encoding="UTF-8"?><ListBucketResult '
            'xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
            f"<Name>{escape(bucket)}</Name><Prefix>{escape(prefix)}</Prefix>"
            f"<KeyCount>{len(contents) + len(prefixes)}</KeyCount><MaxKeys>1000</MaxKeys>"
            f"<Delimiter>{escape(delimiter)}</Delimiter><IsTruncated>false</IsTruncated>"
            f"{''.join(contents)}{common}</ListBucketResult>"
        )
        return 200, XML, body.encode()

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
    s3: bool
    latency: float
    stall: float
    faults: Faults
    _etags: dict[tuple[str, int, int], str]

    def etag(self, path: Path, stat: os.stat_result) -> str:
        """The MD5 (hex) of the file, as S3 gives a single-part upload; computed once per
        (path, size, modification time)."""
        key = (str(path), stat.st_size, stat.st_mtime_ns)
        found = self._etags.get(key)
        if found is None:
            digest = hashlib.md5()
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
            found = digest.hexdigest()
            self._etags[key] = found
        return found


class LocalServer:
    """A started server on 127.0.0.1 (a free port): `url` is its root; `stop()` ends it.

    folder: serve this folder's files (Range-capable); s3: as a read-only S3 endpoint
    (path-style, each subfolder of `folder` a bucket: `s3://sub/key` with `endpoint_url=url`;
    any credentials are accepted, signatures are not checked); upstream: (host, port) to
    forward to instead. latency: seconds added to every request. stall: seconds a "stall"
    fault waits. ValueError for both or neither of folder and upstream, or s3 with upstream."""

    def __init__(
        self,
        folder: str | os.PathLike[str] | None = None,
        upstream: tuple[str, int] | None = None,
        latency: float = 0.0,
        stall: float = 5.0,
        s3: bool = False,
    ) -> None:
        if (folder is None) == (upstream is None):
            raise ValueError("LocalServer: give exactly one of 'folder' and 'upstream'")
        if s3 and folder is None:
            raise ValueError("LocalServer: s3=True serves a 'folder' (its subfolders are buckets)")
        self.faults = Faults()
        self.server = _Server(("127.0.0.1", 0), _Handler)
        self.server.folder = Path(folder).resolve() if folder is not None else None
        self.server.upstream = upstream
        self.server.s3 = s3
        self.server._etags = {}
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

    def reset(self) -> None:
        """No pending fault, an empty request log, no added latency (between tests)."""
        self.faults.clear()
        self.set_latency(0.0)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> LocalServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
