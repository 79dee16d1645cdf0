"""What each column of the sharding tool's input table is: a file field, inline text, the split,
or per-sample metadata.

Place in the data flow: `mmsample shard` reads the table (`mmsample.sharding.table`), then asks this
module what every column other than `key` and `label` holds, before any file is opened. The rule,
first match wins, also printed by `mmsample shard`:

1. `--field NAME=EXT` (`fields={"image": "png"}`): column NAME holds paths of .EXT files.
2. `--text-field NAME` (`text_fields=`), and a column named `txt`: inline text.
3. The split column (`--split-column`, default a column named `split`): each row's split.
4. `--meta NAME` (`meta=`): metadata.
5. A column named after a media extension (`mp4`, `wav`, `png`, `npy`, ...): paths of such files.
6. Otherwise the cells decide: every non-empty cell a path ending in one media extension EXT ->
   paths of .EXT files; no cell ending in one -> metadata; anything between is an error naming
   the column and the fix.

A file or text column NAME becomes the field `NAME.EXT` (`image.png`, `text.txt`; a column named
EXT stays `EXT`), the WebDataset member `KEY.NAME.EXT`, read with e.g. `Image(field="image.png")`.
Metadata and the split become one `KEY.json` member per sample; the split is also kept in the
offset index so that the readers' `split=` selects samples without reading the tars.

Rules 1-5 look at the name alone; for rule 6 the table's first pass hands every record to a
`CellSuffixes`, which keeps, per such column, only how many cells are filled and how many end in
each media extension.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any
from urllib.parse import urlsplit

from ..decoding.extensions import AUDIO_EXTENSIONS, IMAGE_EXTENSIONS, VIDEO_EXTENSIONS
from ..errors import ManifestError
from ..shards.format import FIELD_PATTERN, check_field

MEDIA_EXTENSIONS = frozenset({*VIDEO_EXTENSIONS, *AUDIO_EXTENSIONS, *IMAGE_EXTENSIONS, "npy"})
TEXT_EXTENSION = "txt"
DEFAULT_SPLIT_COLUMN = "split"


@dataclass(frozen=True)
class Column:
    """One input column: its `kind` (file, text, split, meta), the field it fills (file and text
    columns) and why it was taken so (for the summary)."""

    name: str
    kind: str
    field: str | None
    why: str

    def describe(self) -> str:
        """`image -> field image.png (paths of .png files: cells)`-style text."""
        if self.kind == "file":
            ext = (self.field or "").rsplit(".", 1)[-1]
            return f"{self.name} -> field {self.field} (.{ext} files; {self.why})"
        if self.kind == "text":
            return f"{self.name} -> field {self.field} (inline text; {self.why})"
        if self.kind == "split":
            return f"{self.name} -> the split ({self.why})"
        return f"{self.name} -> metadata ({self.why})"


def field_name(column: str, ext: str) -> str:
    """The field of a column of .EXT files or text: the column's name if it is `EXT` or ends in
    `.EXT`, else `column.EXT`."""
    return column if column == ext or column.endswith(f".{ext}") else f"{column}.{ext}"


def _suffix(value: Any) -> str | None:
    if not isinstance(value, str) or not value.strip():
        return None
    value = value.strip()
    if "://" in value:  # a URL: the suffix of its path, not of its query string
        value = urlsplit(value).path
    suffix = PurePath(value).suffix.lower()
    return suffix[1:] if suffix else ""


def _split_name(
    fields: Mapping[str, str], text_fields: Sequence[str], meta: Sequence[str], split: str | None
) -> str | None:
    """The split column: `split_column` if given, else one named `split` with no other role."""
    if split is None and DEFAULT_SPLIT_COLUMN not in {*fields, *text_fields, *meta}:
        return DEFAULT_SPLIT_COLUMN
    return split


def _by_name(
    name: str,
    fields: Mapping[str, str],
    text_fields: Sequence[str],
    meta: Sequence[str],
    split: str | None,
    given_split: bool,
) -> Column | None:
    """The column as rules 1-5 take it from its name and the options; None: the cells decide."""
    if name in fields:
        return Column(name, "file", field_name(name, fields[name]), "given by --field")
    if name in text_fields or name == TEXT_EXTENSION:
        why = "given by --text-field" if name in text_fields else "a txt column"
        return Column(name, "text", field_name(name, TEXT_EXTENSION), why)
    if name == split:
        return Column(
            name, "split", None, "given by --split-column" if given_split else "named split"
        )
    if name in meta:
        return Column(name, "meta", None, "given by --meta")
    if name in MEDIA_EXTENSIONS:
        return Column(name, "file", name, "named after the extension")
    return None


class CellSuffixes:
    """What rule 6 needs of the columns the options and names leave open, gathered one record
    at a time: per column, the filled cells and the count of each media extension they end in."""

    def __init__(
        self,
        *,
        fields: Mapping[str, str] | None = None,
        text_fields: Sequence[str] = (),
        meta: Sequence[str] = (),
        split_column: str | None = None,
    ) -> None:
        self._options = (dict(fields or {}), list(text_fields), list(meta))
        self._split = _split_name(*self._options, split_column)
        self._open: dict[str, bool] = {"key": False, "label": False}
        self.filled: Counter[str] = Counter()
        self.media: defaultdict[str, Counter[str]] = defaultdict(Counter)

    def add(self, record: Mapping[str, Any]) -> None:
        """Count the cells of one record (column -> cell) in the columns the cells decide."""
        for name, value in record.items():
            open_ = self._open.get(name)
            if open_ is None:
                open_ = self._open[name] = (
                    _by_name(name, *self._options, self._split, False) is None
                )
            if not open_:
                continue
            suffix = _suffix(value)
            if suffix is None:
                continue
            self.filled[name] += 1
            if suffix in MEDIA_EXTENSIONS or suffix == TEXT_EXTENSION:
                self.media[name][suffix] += 1


def check_column_options(
    columns: Sequence[str],
    *,
    fields: Mapping[str, str],
    text_fields: Sequence[str],
    meta: Sequence[str],
    split_column: str | None,
    where: str,
) -> None:
    """Refuse options naming a column the table lacks, `key`/`label`, an invalid extension, or
    one column in two roles; ManifestError (a ValueError) names the parameter."""
    present = set(columns)
    named = {
        "fields": list(fields),
        "text_fields": list(text_fields),
        "meta": list(meta),
        "split_column": [split_column] if split_column is not None else [],
    }
    for parameter, names in named.items():
        unknown = sorted(set(names) - present)
        if unknown:
            raise ManifestError(
                f"The '{parameter}' parameter names {unknown}, which are not columns of {where} "
                f"(columns: {sorted(present - {'key', 'label'})})"
            )
        special = sorted(set(names) & {"key", "label"})
        if special:
            raise ManifestError(
                f"The '{parameter}' parameter names {special}: key and label are not fields"
            )
    for column, ext in fields.items():
        if not isinstance(ext, str) or "." in ext or not FIELD_PATTERN.match(ext):
            raise ManifestError(
                f"The 'fields' parameter maps column {column!r} to {ext!r}: give a file "
                "extension of lower-case letters and digits, e.g. fields={'image': 'png'} "
                "(--field image=png)"
            )
    roles = Counter(n for names in named.values() for n in set(names))
    twice = sorted(n for n, k in roles.items() if k > 1)
    if twice:
        raise ManifestError(
            f"columns {twice} are given two roles among fields, text_fields, meta and "
            "split_column; give each column one"
        )


def classify_columns(
    columns: Sequence[str],
    cells: CellSuffixes,
    *,
    fields: Mapping[str, str] | None = None,
    text_fields: Sequence[str] = (),
    meta: Sequence[str] = (),
    split_column: str | None = None,
    where: str = "the input",
) -> list[Column]:
    """What each column other than key and label holds (rule in the module docstring; `cells`
    the counts of every record's cells, made with the same options); raise ManifestError naming
    the column and the fix where the cells do not decide it."""
    fields = dict(fields or {})
    check_column_options(
        columns,
        fields=fields,
        text_fields=text_fields,
        meta=meta,
        split_column=split_column,
        where=where,
    )
    split = _split_name(fields, text_fields, meta, split_column)
    out: list[Column] = []
    for name in columns:
        if name in ("key", "label"):
            continue
        column = _by_name(name, fields, text_fields, meta, split, split_column is not None)
        if column is None:
            column = _from_cells(name, cells.filled[name], cells.media[name], where)
        if column.field is not None:
            try:
                check_field(column.field)
            except ManifestError as err:
                raise ManifestError(f"{where}: column {name!r} cannot be a field: {err}") from None
        out.append(column)
    if any(c.kind == "meta" and c.name == DEFAULT_SPLIT_COLUMN for c in out):
        raise ManifestError(
            f"{where}: column {DEFAULT_SPLIT_COLUMN!r} would be metadata, but metadata keeps the "
            f"split under that name: let it be the split (drop --split-column / --meta "
            f"{DEFAULT_SPLIT_COLUMN}) or rename the column"
        )
    taken = Counter(c.field for c in out if c.field is not None)
    clash = sorted(f for f, k in taken.items() if k > 1)
    if clash:
        raise ManifestError(f"{where}: two columns would fill the same field {clash}")
    return out


def _from_cells(name: str, filled: int, media: Counter[str], where: str) -> Column:
    """Rule 6 from a column's `filled` cells and how many of them end in each media extension."""
    if not media:
        why = f"no cell names a media file; --text-field {name} to make it a text field"
        return Column(name, "meta", None, why)
    if len(media) == 1 and sum(media.values()) == filled:
        ext = next(iter(media))
        return Column(name, "file", field_name(name, ext), f"every cell ends in .{ext}")
    found = ", ".join(f".{e}: {n}" for e, n in sorted(media.items()))
    other = filled - sum(media.values())
    rest = f", {other} other cells" if other else ""
    raise ManifestError(
        f"{where}: column {name!r} holds {found}{rest}: a field holds files of one kind. Give "
        f"--field {name}=EXT (fields={{{name!r}: 'EXT'}}) for one kind of file, --meta {name} "
        "for metadata, or split the column in two"
    )
