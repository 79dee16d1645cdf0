"""Where a dataset lives: a plain path, a `file://`, `s3://`, `gs://`, `http(s)://` URL, or a
`pipe:` command, parsed once into a `Location`.

Place in the data flow: the first thing a reader, `mmsample index/inspect/verify` or the sharding
tool does with the folder it is given; a `Location` names the folder's files (`child`) and says
how to print them (`display`: no query string, no user or password, so a presigned URL or a
token never reaches a log, a state or an error message).
"""

from __future__ import annotations

import argparse
import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

__all__ = ["PIPE", "Location", "local_path", "parse_location", "redact", "require_local", "scrub"]

PIPE = "pipe"
NAME_SLOT = "{name}"  # where a pipe: command takes the file name (manifest.json, shard-*.tar)
LOCAL = frozenset({"file", "local"})
READ_ONLY = frozenset({"http", "https", PIPE})


def redact(url: str) -> str:
    """`url` without its query string, fragment, user and password (what may be printed).
    Plain paths are returned as given; a `pipe:` command with every URL in it redacted."""
    if url.startswith(f"{PIPE}:"):
        return scrub(url)
    if "://" not in url:
        return url
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


# `s3:/bucket/x`: a URL that lost a slash (through pathlib.Path, or a typo); a drive letter
# (`C:/...`) has a one-letter scheme and stays a path
_MANGLED_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+):/(?!/)(.*)$", re.S)
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")
# a query string (`?k=v...`) right after a path without a scheme, as HTTP clients print them
# ("Max retries exceeded with url: /tokeninfo?access_token=...")
_QUERY_IN_TEXT = re.compile(r"(?<=[\w/.%-])\?[^\s'\"<>()]*=[^\s'\"<>()]*")


def scrub(text: str) -> str:
    """`text` (an error message, a command) with every URL in it redacted (`redact`) and
    every query string after a relative path removed."""
    return _QUERY_IN_TEXT.sub("", _URL_IN_TEXT.sub(lambda m: redact(m.group(0)), text))


@dataclass(frozen=True)
class Location:
    """A parsed dataset folder (or file): `protocol` ("file" for local paths, "s3", "gs",
    "http", "https", "memory", ... as fsspec names them, or "pipe"), `path` (what the backend
    is given: a local path, the URL itself for http(s), `bucket/prefix` for object stores, the
    command for pipe:) and `url` (the whole, as given, secrets included: never print it; print
    `display`)."""

    protocol: str
    path: str
    url: str

    @property
    def is_local(self) -> bool:
        """True for a plain path or `file://` URL: read with the operating system's calls."""
        return self.protocol in LOCAL

    @property
    def writable(self) -> bool:
        """False for http(s):// and pipe: (read-only backends)."""
        return self.protocol not in READ_ONLY

    @property
    def display(self) -> str:
        """The location as it may be printed (`redact`)."""
        return redact(self.url)

    @property
    def name(self) -> str:
        """The last component of the path (`shard-000003.tar`, `manifest.json`)."""
        path = self.path if self.protocol != "http" and self.protocol != "https" else self.url
        return urlsplit(path).path.rstrip("/").rsplit("/", 1)[-1] if path else ""

    def child(self, name: str) -> Location:
        """The file `name` inside this folder (for pipe:, the command with `{name}` filled)."""
        if self.protocol == PIPE:
            command = self.path.replace(NAME_SLOT, name)
            return Location(PIPE, command, f"{PIPE}:{command}")
        if self.is_local:
            path = os.path.join(self.path, name)
            return Location(self.protocol, path, path)
        parts = urlsplit(self.url)
        joined = parts.path.rstrip("/") + "/" + name
        url = urlunsplit((parts.scheme, parts.netloc, joined, parts.query, parts.fragment))
        if self.protocol in ("http", "https"):
            return Location(self.protocol, url, url)
        return Location(self.protocol, self.path.rstrip("/") + "/" + name, url)

    def local_path(self) -> Path:
        """This location as a local `Path` (only for `is_local`)."""
        if not self.is_local:
            raise ValueError(f"{self.display} is not a local path")
        return Path(self.path)

    def __str__(self) -> str:
        return self.display


def parse_location(value: str | os.PathLike[str] | Location) -> Location:
    """Parse a folder or file given by a user. Plain paths and `file://` URLs are local;
    `pipe:CMD` runs CMD with `{name}` replaced by each file's name and reads its stdout
    (read-only, streamed-only); anything else with `scheme://` goes to fsspec. ValueError for a
    pipe: command without `{name}` or an empty one."""
    if isinstance(value, Location):
        return value
    if isinstance(value, os.PathLike):
        text = os.fspath(value)
        _refuse_mangled(text)
        return Location("file", text, text)
    if not isinstance(value, str):
        raise TypeError(f"a dataset location must be a path or a URL string; got {value!r}")
    if value.startswith(f"{PIPE}:"):
        command = value[len(PIPE) + 1 :].strip()
        if NAME_SLOT not in command:
            raise ValueError(
                f"pipe: command {command!r} has no {NAME_SLOT}: write where the file name goes, "
                "e.g. 'pipe:curl -sf https://host/data/{name}' (the reader runs it for "
                "manifest.json, the offset indexes and each shard-NNNNNN.tar)"
            )
        return Location(PIPE, command, value)
    if "://" not in value:
        _refuse_mangled(value)
        return Location("file", value, value)
    parts = urlsplit(value)
    scheme = parts.scheme.lower()
    if scheme in LOCAL:
        path = parts.path if not parts.netloc else f"/{parts.netloc}{parts.path}"
        return Location("file", path, path)
    if scheme in ("http", "https"):
        return Location(scheme, value, value)
    path = parts.netloc + parts.path
    return Location(scheme, path.rstrip("/") if path != "/" else path, value)


def _refuse_mangled(text: str) -> None:
    """ValueError for `s3:/bucket/x`: taken as a path it would become a local folder `s3:`."""
    found = _MANGLED_URL.match(text)
    if found:
        scheme, rest = found.groups()
        raise ValueError(
            f"{redact(text)!r} looks like a URL that lost a slash ({scheme}:/ instead of "
            f"{scheme}://, e.g. passed through pathlib.Path): give it as a string, "
            f"{redact(f'{scheme}://{rest}')}"
        )


def require_local(value: str | os.PathLike[str], what: str) -> Path:
    """`value` as a local `Path`, for what must be on this machine (an output folder, a cache,
    a staging folder). ValueError naming `what` when `value` is a URL (or one that lost a
    slash): never a local folder named `s3:`."""
    location = parse_location(value)
    if not location.is_local:
        raise ValueError(
            f"{what} must be a local path; {location.display} is a URL "
            f"({location.protocol}): give a folder on this machine"
        )
    return location.local_path()


def local_path(text: str) -> Path:
    """argparse `type=` for an option that takes a local path: a URL is refused with
    `argparse.ArgumentTypeError` (shown after the option's name)."""
    try:
        location = parse_location(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    if not location.is_local:
        raise argparse.ArgumentTypeError(
            f"must be a local path (a folder or file on this machine); {location.display} is a "
            f"URL ({location.protocol})"
        )
    return location.local_path()
