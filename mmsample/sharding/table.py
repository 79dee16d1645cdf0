"""Read the sharding tool's input table and check its rows, before any file is opened.

Place in the data flow: the first step of `mmsample shard` (`mmsample.sharding.tool`). A CSV or
JSONL table (one row per sample: `key`, `label`, one column per modality field) is read in two
streaming passes (`mmsample.sharding.records`). The first (`read_input`) learns what each column
holds, the labels (hence the class order) and the duplicate keys, keeping about 9 bytes a row
(`mmsample.sharding.duplicates`); the second (`InputTable.shard_rows`) makes the `Row`s of the
shards to write, one shard at a time. Every key, label, duplicate key, unknown class and missing
file becomes a row problem, and a row with problems a `BadRow`, listed in `bad_rows.jsonl` /
`skipped.jsonl` and `BadRowsError`.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ManifestError
from ..shards.format import check_key
from .classes import ClassOrder, canonical_label, order_classes
from .columns import DEFAULT_SPLIT_COLUMN, CellSuffixes, Column, classify_columns
from .duplicates import KeyHashes, first_rows
from .media import resolve_cell
from .records import TableFile

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

    def __init__(self, rows: list[BadRow], source: str | Path, report: Path) -> None:
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
    file path or URL (`mmsample.sharding.media.resolve_cell`); `meta` the metadata cells (and the split, under "split"); `split` the split."""

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
    """The input table after its first pass: what each column is, the fields, the content hash,
    the row count, the distinct labels and the rows whose key an earlier row has (row -> that
    row); its rows are made by `shard_rows`, a second pass over the file."""

    path: str | Path
    sha256: str
    fields: list[str]
    text_fields: list[str]
    columns: list[Column]
    num_rows: int
    labels: set[str]
    duplicates: dict[int, int]
    source: TableFile

    def shard_rows(
        self, numbers: Iterable[int], per_shard: int, order: ClassOrder
    ) -> Iterator[tuple[int, list[Row]]]:
        """(shard number, its rows) for each of `numbers` (ascending), shard s holding rows
        s * per_shard onwards, one shard at a time; each row carries every problem of its cells,
        key and label, labels named as `order` names them (`order_labels`)."""
        wanted = iter(sorted(numbers))
        number = next(wanted, None)
        rows: list[Row] = []
        base, names = self.source.base, set(order.names)  # as given: cells stay relative
        for n, (line, record, why) in enumerate(self.source.records()):
            if number is None:
                return
            if n < number * per_shard:
                continue
            row = _make_row(n, line, record or {}, self.columns, base)
            if why:
                row.problems.insert(0, ("row", why))
            _check_row(row, self.duplicates.get(n), order, names)
            rows.append(row)
            if n + 1 == min((number + 1) * per_shard, self.num_rows):
                yield number, rows
                rows, number = [], next(wanted, None)


def bad_rows_jsonl(rows: Iterable[BadRow]) -> str:
    """The JSON-lines text of `rows` (one `BadRow.to_json` object a line), as `bad_rows.jsonl`
    and `skipped.jsonl` hold them."""
    return "".join(json.dumps(b.to_json()) + "\n" for b in rows)


def _key_of(value: Any) -> tuple[str | None, tuple[str, str] | None]:
    """(the key of a row's key cell, stripped; the problem with it, None if it is valid)."""
    if not isinstance(value, str) or not value.strip():
        why = "missing or empty key" if not value else f"not a string: {value!r}"
        return (value if isinstance(value, str) else None), ("key", why)
    key = value.strip()
    try:
        check_key(key)
    except ManifestError:
        return key, ("key", f"{key!r} is not allowed: only letters, digits, '_', '-'")
    return key, None


def _label_of(value: Any) -> str:
    """A row's label cell as text, stripped ("" if missing)."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    return value.strip() if isinstance(value, str) else ""


def _make_row(
    n: int, line: int, record: dict[str, Any], columns: list[Column], base: str | Path
) -> Row:
    problems: list[tuple[str, str]] = []
    key, key_problem = _key_of(record.get("key"))
    if key_problem is not None:
        problems.append(key_problem)
    label = _label_of(record.get("label"))
    if not label:
        problems.append(("label", "missing or empty label"))
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
            cells[str(column.field)] = resolve_cell(value, base)
        if column.field is not None and column.field != name:
            filled[column.field] = name
    modal = {c.name for c in columns if c.field is not None}
    if not cells and not any(col in modal for col, _ in problems):
        problems.append(("row", "carries no modality: every field column is empty"))
    return Row(
        n,
        line,
        key,
        label,
        cells,
        problems,
        key_ok=key_problem is None,
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
    """The first pass over a CSV (header row) or JSONL (one object a line) input table: each
    column taken as `mmsample.sharding.columns.classify_columns` says, the labels, the duplicate
    keys; a malformed table raises ManifestError. Keeps about 9 bytes a row (and each distinct
    label); the rows themselves come from `InputTable.shard_rows`."""
    source = TableFile(path)
    cells = CellSuffixes(
        fields=fields, text_fields=text_fields, meta=meta, split_column=split_column
    )
    hashes, labels = KeyHashes(), set()
    seen: dict[str, None] = dict.fromkeys(source.header or ())
    for _, record, _ in source.records():
        if record is None:
            hashes.add(None)
            continue
        key, problem = _key_of(record.get("key"))
        hashes.add(key if problem is None else None)
        labels.add(_label_of(record.get("label")))
        cells.add(record)
        if source.header is None:
            seen.update(dict.fromkeys(record))
    if not len(hashes):
        raise ManifestError(f"{source.shown}: the input has no rows")
    columns = classify_columns(
        list(seen),
        cells,
        fields=fields,
        text_fields=text_fields,
        meta=meta,
        split_column=split_column,
        where=source.shown,
    )
    field_names = sorted(str(c.field) for c in columns if c.field is not None)
    text = sorted(str(c.field) for c in columns if c.kind == "text")
    return InputTable(
        path=source.where,
        sha256=source.sha256(),
        fields=field_names,
        text_fields=text,
        columns=columns,
        num_rows=len(hashes),
        labels=labels - {""},
        duplicates=_duplicates(source, hashes),
        source=source,
    )


def _duplicates(source: TableFile, hashes: KeyHashes) -> dict[int, int]:
    """Row -> the first row with its key, for each later row of a duplicated key: the rows whose
    key hashes meet are read once more, and only equal keys count."""
    candidates = hashes.candidates()
    if not len(candidates):
        return {}
    wanted, last = set(candidates.tolist()), int(candidates[-1])
    keys: dict[int, str] = {}
    for n, (_, record, _) in enumerate(source.records()):
        if n in wanted and record is not None:
            key, problem = _key_of(record.get("key"))
            if problem is None and key is not None:
                keys[n] = key
        if n >= last:
            break
    return first_rows(keys)


def read_classes(path: str | Path) -> list[str]:
    """Class names from a text file, one per line (blank lines ignored, no duplicates)."""
    names = [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines()]
    names = [n for n in names if n]
    dup = sorted(n for n, k in Counter(names).items() if k > 1)
    if not names or dup:
        raise ManifestError(f"{path}: a classes file needs one unique name a line; got {dup or 0}")
    return names


def order_labels(table: InputTable, classes: Sequence[str] | None) -> ClassOrder:
    """The class order of the table's labels (`mmsample.sharding.classes`), or of `classes`;
    `InputTable.shard_rows` names each row's label by it."""
    return order_classes(table.labels, classes)


def _check_row(row: Row, first: int | None, order: ClassOrder, names: set[str]) -> None:
    """Add the problems the whole table shows: a key an earlier row (`first`) has, a label that
    is not one of the classes; name the label as `order` does (`07` is class `7`)."""
    if first is not None:
        row.problems.append(("key", f"duplicate key {row.key!r} (first in row {first})"))
    row.label = canonical_label(row.label, order) if row.label else row.label
    if row.label and row.label not in names:
        shown = ", ".join(repr(n) for n in order.names[:5])
        more = ", ..." if len(order.names) > 5 else ""
        count = len(order.names)
        why = f"{row.label!r} is not one of the {count} classes ({shown}{more})"
        row.problems.append(("label", why))
