"""The records of the sharding tool's input table, read one at a time from the file.

Place in the data flow: under `mmsample.sharding.table`, which reads the table twice through this
module (once to learn its columns, classes and keys, once for the rows of the shards it writes),
so that no pass holds the whole table in memory. A CSV table has a header row naming `key`,
`label` and one column per field; a JSONL table holds one JSON object a line. A record that
cannot be a row (a short CSV line, a line that is not a JSON object) comes with the reason, so
that it becomes a bad row rather than an exception. A table given as a URL is downloaded once
into a temporary file (`mmsample.sharding.media`), and its relative file cells resolve against
the URL's folder.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import tempfile
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import ManifestError
from ..storage.location import parse_location
from .media import media_files

__all__ = ["Record", "TableFile"]

# (line number, the record: column -> cell, or None; why it cannot be a row, "" if it can)
Record = tuple[int, dict[str, Any] | None, str]
TABLE_SUFFIXES = (".csv", ".jsonl", ".ndjson")


class TableFile:
    """An input table file: its kind, its CSV header (checked on opening), its records.

    `path` is the file read; a table given as a URL (`s3://`, `https://`, any fsspec URL) is
    downloaded once into a temporary file (removed with this object). `shown` names the table
    in messages (a URL without its query string), `where` is what the manifest records (the
    absolute path, or that URL), `base` the folder relative file cells resolve against (the
    path as given, or the URL's folder).

    Raises ManifestError if the file is missing, is neither .csv nor .jsonl, or (CSV) its header
    does not name `key` and `label` once each; StorageError if a URL cannot be read."""

    def __init__(self, path: str | Path) -> None:
        location = parse_location(str(path))
        if location.is_local:
            self.path = Path(location.path) if isinstance(path, str) else Path(path)
            self.shown = str(self.path)
            self.base: str | Path = self.path.parent
            self.where: str | Path = self.path.resolve()
        else:
            self.shown = self.where = location.display
            self.base = location.display.rsplit("/", 1)[0]
            self.path = _download(str(path), location.name)
            weakref.finalize(self, self.path.unlink, missing_ok=True)
        if not self.path.is_file():
            raise ManifestError(f"The 'input' parameter must be an existing file; got {self.shown}")
        self.kind = self.path.suffix.lower()
        if self.kind not in TABLE_SUFFIXES:
            raise ManifestError(
                f"The 'input' file must end in .csv or .jsonl; got {self.shown.rsplit('/', 1)[-1]}"
            )
        self.header: list[str] | None = None
        if self.kind == ".csv":
            with open(self.path, newline="", encoding="utf-8-sig") as f:
                header = [h.strip() for h in next(csv.reader(f), [])]
            if "key" not in header or "label" not in header or len(set(header)) != len(header):
                raise ManifestError(
                    f"{self.shown}: the header row must name 'key', 'label' and one column per "
                    f"field (each once); got {header}"
                )
            self.header = header

    def records(self) -> Iterator[Record]:
        """Every record of the file in order (blank lines skipped), one at a time."""
        with open(self.path, newline="", encoding="utf-8-sig") as f:
            if self.header is None:
                yield from _jsonl_records(f)
            else:
                yield from _csv_records(f, self.header)

    def sha256(self) -> str:
        """The hex SHA-256 of the file's bytes (what a rerun compares)."""
        digest = hashlib.sha256()
        with open(self.path, "rb") as f:
            for block in iter(lambda: f.read(1 << 16), b""):
                digest.update(block)
        return digest.hexdigest()


def _download(url: str, name: str) -> Path:
    """The table at `url` in a new temporary file (keeping its suffix, .csv or .jsonl)."""
    data = media_files().read(url)  # a missing table: FileNotFoundError naming the URL
    fd, tmp = tempfile.mkstemp(prefix="mmsample-table-", suffix=Path(name).suffix)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return Path(tmp)


def _csv_records(f: Any, header: list[str]) -> Iterator[Record]:
    reader = csv.reader(f)
    next(reader, None)
    last = reader.line_num
    for cells in reader:
        line, last = last + 1, reader.line_num
        if not cells:
            continue
        why = ""
        if len(cells) != len(header):
            why = f"has {len(cells)} cells; the header has {len(header)}"
        yield line, dict(zip(header, cells)), why


def _jsonl_records(f: Any) -> Iterator[Record]:
    for line, raw in enumerate(f, 1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as err:
            yield line, None, f"not valid JSON ({err.msg}, column {err.colno})"
            continue
        if not isinstance(obj, dict):
            yield line, None, "not a JSON object"
            continue
        yield line, obj, ""
