"""Read the sharding tool's input table and check its rows, before any file is opened.

Place in the data flow: the first step of `mmsample shard` (`mmsample.sharding.tool`). A CSV or
JSONL table (one row per sample: `key`, `label`, one column per modality field) becomes a list of
`Row`s; every key, label, duplicate key, unknown class and missing file becomes a row problem, and
a row with problems a `BadRow`, listed in `bad_rows.jsonl` / `skipped.jsonl` and `BadRowsError`.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import stat
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ManifestError
from ..shards.format import check_key
from .classes import ClassOrder, canonical_label, order_classes
from .columns import DEFAULT_SPLIT_COLUMN, Column, classify_columns

SKIPPED_REPORT = "skipped.jsonl"
DEFAULT_TEXT_FIELDS = ("txt",)
MAX_ERRORS_SHOWN = 20


@dataclass
class BadRow:
    """One input row that cannot become a sample, with every reason found (column, reason)."""

    row: int
    line: int
    key: str | None
    reasons: list[tuple[str, str]]

    def describe(self) -> str:
        """One line: `row 3 (line 5, key 'a'): mp4: file not found: ...`."""
        why = "; ".join(f"{col}: {reason}" for col, reason in self.reasons)
        return f"row {self.row} (line {self.line}, key {self.key!r}): {why}"

    def to_json(self) -> dict[str, Any]:
        """The row as one JSON object (a line of `bad_rows.jsonl`, an entry of a sidecar)."""
        reasons = [{"column": c, "reason": r} for c, r in self.reasons]
        return {"row": self.row, "line": self.line, "key": self.key, "reasons": reasons}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BadRow:
        """The inverse of `to_json`."""
        reasons = [(r["column"], r["reason"]) for r in data["reasons"]]
        return cls(data["row"], data["line"], data["key"], reasons)


class BadRowsError(ManifestError):
    """Rows of the input that cannot be sharded; the shards holding them were not written."""

    def __init__(self, rows: list[BadRow], source: Path, report: Path) -> None:
        self.rows = rows
        self.report = report
        shown = "\n".join("  " + r.describe() for r in rows[:MAX_ERRORS_SHOWN])
        more = len(rows) - MAX_ERRORS_SHOWN
        tail = f"\n  ... and {more} more" if more > 0 else ""
        super().__init__(
            f"{len(rows)} bad row(s) in {source}; the shards holding them were not written "
            "(the other shards were, and a rerun keeps them). Fix these rows and run again, "
            f"or pass --skip-bad to leave them out:\n{shown}{tail}\nevery bad row: {report}"
        )


@dataclass
class Row:
    """One input row after parsing: field cells (by field name) hold inline text or a resolved
    file path; `meta` the metadata cells (and the split, under "split"); `split` the split."""

    row: int
    line: int
    key: str | None
    label: str
    cells: dict[str, str]
    problems: list[tuple[str, str]] = field(default_factory=list)
    stats: dict[str, tuple[int, int]] = field(default_factory=dict)
    key_ok: bool = False
    meta: dict[str, Any] = field(default_factory=dict)
    split: str = ""
    columns: dict[str, str] = field(default_factory=dict)

    def column(self, field_name: str) -> str:
        """The input column that filled field `field_name` (what problems are reported by)."""
        return self.columns.get(field_name, field_name)

    def bad(self, reasons: list[tuple[str, str]]) -> BadRow:
        """This row as a BadRow with `reasons`."""
        return BadRow(self.row, self.line, self.key, reasons)


@dataclass
class InputTable:
    """The parsed input manifest: its rows, what each column is, the fields and content hash."""

    path: Path
    sha256: str
    fields: list[str]
    text_fields: list[str]
    rows: list[Row]
    columns: list[Column] = field(default_factory=list)


def bad_rows_jsonl(rows: Iterable[BadRow]) -> str:
    """The JSON-lines text of `rows` (one `BadRow.to_json` object a line), as `bad_rows.jsonl`
    and `skipped.jsonl` hold them."""
    return "".join(json.dumps(b.to_json()) + "\n" for b in rows)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _make_row(n: int, line: int, record: dict[str, Any], columns: list[Column], base: Path) -> Row:
    problems: list[tuple[str, str]] = []
    key, label = record.get("key"), record.get("label")
    key_ok = False
    if not isinstance(key, str) or not key.strip():
        problems.append(("key", "missing or empty key" if not key else f"not a string: {key!r}"))
        key = None if not isinstance(key, str) else key
    else:
        key = key.strip()
        try:
            check_key(key)
            key_ok = True
        except ManifestError:
            problems.append(("key", f"{key!r} is not allowed: only letters, digits, '_', '-'"))
    if isinstance(label, int) and not isinstance(label, bool):
        label = str(label)
    if not isinstance(label, str) or not label.strip():
        problems.append(("label", "missing or empty label"))
        label = ""
    cells: dict[str, str] = {}
    meta: dict[str, Any] = {}
    split = ""
    filled: dict[str, str] = {}
    for column in columns:
        name, value = column.name, record.get(column.name)
        if value is None or value == "":
            continue
        if column.kind == "meta":
            meta[name] = value
        elif not isinstance(value, str):
            kind = "the split name" if column.kind == "split" else "text or a file path"
            problems.append((name, f"must be a string ({kind}) or empty; got {value!r}"))
        elif column.kind == "split":
            split = meta[DEFAULT_SPLIT_COLUMN] = value.strip()
        elif column.kind == "text":
            cells[str(column.field)] = value
        else:
            path = Path(value.strip())
            cells[str(column.field)] = str(path if path.is_absolute() else base / path)
        if column.field is not None and column.field != name:
            filled[column.field] = name
    modal = {c.name for c in columns if c.field is not None}
    if not cells and not any(col in modal for col, _ in problems):
        problems.append(("row", "carries no modality: every field column is empty"))
    return Row(
        n,
        line,
        key,
        label.strip(),
        cells,
        problems,
        key_ok=key_ok,
        meta=meta,
        split=split,
        columns=filled,
    )


def read_input(
    path: str | Path,
    text_fields: Sequence[str] = (),
    *,
    fields: Mapping[str, str] | None = None,
    meta: Sequence[str] = (),
    split_column: str | None = None,
) -> InputTable:
    """Parse a CSV (header row) or JSONL (one object a line) input table into rows, each column
    taken as `mmsample.sharding.columns.classify_columns` says; bad cells become row problems, a
    malformed table raises ManifestError."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"The 'input' parameter must be an existing file; got {path}")
    kind = path.suffix.lower()
    if kind not in (".csv", ".jsonl", ".ndjson"):
        raise ManifestError(f"The 'input' file must end in .csv or .jsonl; got {path.name}")
    base = path.parent
    records: list[tuple[int, dict[str, Any] | None, str]] = []
    with open(path, newline="", encoding="utf-8-sig") as f:
        if kind == ".csv":
            reader = csv.reader(f)
            header = [h.strip() for h in next(reader, [])]
            if "key" not in header or "label" not in header or len(set(header)) != len(header):
                raise ManifestError(
                    f"{path}: the header row must name 'key', 'label' and one column per field "
                    f"(each once); got {header}"
                )
            names = header
            last = reader.line_num
            for cells in reader:
                line, last = last + 1, reader.line_num
                if not cells:
                    continue
                if len(cells) != len(header):
                    why = f"has {len(cells)} cells; the header has {len(header)}"
                    records.append((line, dict(zip(header, cells)), why))
                else:
                    records.append((line, dict(zip(header, cells)), ""))
        else:
            seen: dict[str, None] = {}
            for line, raw in enumerate(f, 1):
                if not raw.strip():
                    continue
                try:
                    obj = json.loads(raw)
                except json.JSONDecodeError as err:
                    records.append((line, None, f"not valid JSON ({err.msg}, column {err.colno})"))
                    continue
                if not isinstance(obj, dict):
                    records.append((line, None, "not a JSON object"))
                    continue
                seen.update(dict.fromkeys(obj))
                records.append((line, obj, ""))
            names = list(seen)
    if not records:
        raise ManifestError(f"{path}: the input has no rows")
    columns = classify_columns(
        names,
        [r for _, r, _ in records if r is not None],
        fields=fields,
        text_fields=text_fields,
        meta=meta,
        split_column=split_column,
        where=str(path),
    )
    rows = []
    for n, (line, record, why) in enumerate(records):
        row = _make_row(n, line, record or {}, columns, base)
        if why:
            row.problems.insert(0, ("row", why))
        rows.append(row)
    field_names = sorted(str(c.field) for c in columns if c.field is not None)
    text = sorted(str(c.field) for c in columns if c.kind == "text")
    return InputTable(path.resolve(), _sha256(path), field_names, text, rows, columns)


def read_classes(path: str | Path) -> list[str]:
    """Class names from a text file, one per line (blank lines ignored, no duplicates)."""
    names = [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines()]
    names = [n for n in names if n]
    dup = sorted(n for n, k in Counter(names).items() if k > 1)
    if not names or dup:
        raise ManifestError(f"{path}: a classes file needs one unique name a line; got {dup or 0}")
    return names


def check_rows(table: InputTable, classes: Sequence[str] | None) -> ClassOrder:
    """The cheap pass over every row: duplicate keys and unknown labels; returns the class order
    (`mmsample.sharding.classes`), each row's label set to its class name."""
    first: dict[str, int] = {}
    for r in table.rows:
        if r.key_ok and r.key is not None:
            if r.key in first:
                r.problems.append(("key", f"duplicate key {r.key!r} (first in row {first[r.key]})"))
            else:
                first[r.key] = r.row
    order = order_classes((r.label for r in table.rows), classes)
    for r in table.rows:
        r.label = canonical_label(r.label, order) if r.label else r.label
    names = order.names
    known = set(names)
    for r in table.rows:
        if r.label and r.label not in known:
            shown = ", ".join(repr(n) for n in names[:5]) + (", ..." if len(names) > 5 else "")
            r.problems.append(
                ("label", f"{r.label!r} is not one of the {len(names)} classes ({shown})")
            )
    return order


def stat_files(row: Row, text: Sequence[str]) -> None:
    """Stat every file cell of `row`: a missing, unreadable or non-regular file is a row problem;
    a good one records (size, mtime) so that a rerun sees a changed file."""
    for name, value in row.cells.items():
        if name in text:
            continue
        try:
            st = os.stat(value)
        except FileNotFoundError:
            row.problems.append((row.column(name), f"file not found: {value}"))
        except OSError as err:
            row.problems.append((row.column(name), f"cannot access {value}: {err.strerror or err}"))
        else:
            if stat.S_ISREG(st.st_mode):
                row.stats[name] = (st.st_size, st.st_mtime_ns)
            else:
                row.problems.append((row.column(name), f"not a regular file: {value}"))
