"""The on-disk format every shard writer and reader agrees on: names, manifest, offset index.

A dataset directory holds `shard-NNNNNN.tar` files (plain WebDataset tars: members `KEY.EXT`),
one `shard-NNNNNN.idx.npy` offset index per shard, and `manifest.json`. Each sample's members are
`KEY.id` (its global integer id, ASCII), `KEY.cls` (its class index, ASCII), one member per
modality field it carries (`KEY.mp4`, `KEY.wav`, `KEY.txt`, `KEY.npy`, or `KEY.NAME.EXT` such as
`KEY.image.png` for a field named after its column) and, when the input table had metadata
columns, `KEY.json` (a JSON object of them, the split among them).
"""

from __future__ import annotations

import json
import os
import re
from bisect import bisect_right
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ManifestError
from ..storage.location import parse_location
from ..storage.retry import RetryPolicy
from ..storage.store import open_store
from .offsets import INDEX_COLUMNS as INDEX_COLUMNS
from .offsets import read_index as read_index
from .offsets import write_index as write_index

FORMAT = "mmsample-shards/1"
MANIFEST = "manifest.json"
ID_FIELD = "id"
LABEL_FIELD = "cls"
META_FIELD = "json"  # per-sample metadata columns (and the split) as one JSON object
RESERVED_FIELDS = frozenset({ID_FIELD, LABEL_FIELD, META_FIELD})
KEY_PATTERN = re.compile(r"^[A-Za-z0-9_\-]+$")
FIELD_PATTERN = re.compile(r"^[a-z0-9_]+(\.[a-z0-9_]+)?$")  # `mp4`, or `NAME.EXT`: `image.png`


def read_manifest(
    root: str | os.PathLike[str],
    storage_options: dict[str, Any] | None = None,
    retry: RetryPolicy | None = None,
) -> Manifest:
    """The manifest of the dataset at `root`: a local folder (`Manifest.load`) or a URL
    (`s3://`, `gs://`, `https://`, `pipe:`; one read through `mmsample.storage`)."""
    location = parse_location(root)
    if location.is_local:
        return Manifest.load(location.local_path())
    store = open_store(location, storage_options, retry)
    return Manifest.parse(store.read(MANIFEST), store.url(MANIFEST))


def shard_name(number: int) -> str:
    """File name of shard `number` (`shard-000012.tar`)."""
    return f"shard-{number:06d}.tar"


def index_name(shard: str) -> str:
    """File name of the offset index that belongs to tar file `shard`."""
    return shard[: -len(".tar")] + ".idx.npy" if shard.endswith(".tar") else shard + ".idx.npy"


def check_key(key: str) -> str:
    """Return `key` if it is a safe sample key (letters, digits, `_`, `-`), else raise."""
    if not KEY_PATTERN.match(key):
        raise ManifestError(
            f"sample key {key!r} is not allowed: keys may hold only letters, digits, '_' and '-' "
            "(no dots, slashes or spaces), so that WebDataset groups members correctly and no "
            "member name can point outside its tar"
        )
    return key


def check_field(name: str) -> str:
    """Return field `name` if valid (`EXT` or `NAME.EXT` of lower-case letters, digits, `_`),
    else raise ManifestError."""
    if not FIELD_PATTERN.match(name) or name in RESERVED_FIELDS:
        raise ManifestError(
            f"field name {name!r} is not allowed: use lower-case letters, digits and '_' "
            "(a file extension such as 'mp4', or NAME.EXT such as 'image.png'), not one of the "
            f"reserved {sorted(RESERVED_FIELDS)}"
        )
    return name


@dataclass
class ShardInfo:
    """One shard as the manifest records it: name, sample count and the id range it covers."""

    name: str
    count: int
    first_id: int
    last_id: int
    bytes: int
    index: str
    class_counts: dict[str, int] = field(default_factory=dict)
    split_counts: dict[str, int] = field(default_factory=dict)


@dataclass
class Manifest:
    """What a reader needs to know about a sharded dataset, stored as `manifest.json`."""

    classes: list[str]
    fields: list[str]
    shards: list[ShardInfo]
    num_rows: int
    samples_per_shard: int
    skipped: int = 0
    format: str = FORMAT
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def num_samples(self) -> int:
        """Samples actually stored (rows minus skipped ones)."""
        return sum(s.count for s in self.shards)

    @property
    def id_space(self) -> int:
        """One past the largest possible global id (ids are input row numbers)."""
        return self.num_rows

    def class_counts(self) -> dict[str, int]:
        """Samples per class over all shards."""
        total = dict.fromkeys(self.classes, 0)
        for s in self.shards:
            for name, n in s.class_counts.items():
                total[name] = total.get(name, 0) + n
        return total

    def split_counts(self) -> dict[str, int]:
        """Samples per split (the split column's values) over all shards; {} without splits."""
        total: dict[str, int] = {}
        for s in self.shards:
            for name, n in s.split_counts.items():
                total[name] = total.get(name, 0) + n
        return dict(sorted(total.items()))

    def shard_of(self, sample_id: int) -> int:
        """Position in `shards` of the shard whose id range holds `sample_id`."""
        firsts = [s.first_id for s in self.shards]
        pos = bisect_right(firsts, sample_id) - 1
        if pos < 0 or sample_id > self.shards[pos].last_id:
            raise KeyError(f"sample id {sample_id} is in no shard of this dataset")
        return pos

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any], where: str = MANIFEST) -> Manifest:
        if data.get("format") != FORMAT:
            raise ManifestError(f"{where}: format is {data.get('format')!r}, expected {FORMAT!r}")
        try:
            shards = [ShardInfo(**s) for s in data["shards"]]
            rest = {k: v for k, v in data.items() if k != "shards"}
            return cls(shards=shards, **rest)
        except (KeyError, TypeError) as err:
            raise ManifestError(f"{where}: malformed manifest ({err})") from err

    def save(self, root: str | Path) -> Path:
        """Write `manifest.json` into `root` atomically."""
        path = Path(root) / MANIFEST
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=1, sort_keys=True))
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, root: str | Path) -> Manifest:
        """Read `manifest.json` from a dataset directory (or the file itself)."""
        path = Path(root)
        if not path.exists():
            raise ManifestError(
                f"{path} does not exist: give the dataset directory (the one holding {MANIFEST} "
                "and the shard-*.tar files)"
            )
        if path.is_dir():
            path = path / MANIFEST
            if not path.exists():
                raise ManifestError(
                    f"no {MANIFEST} in {path.parent}: shard the data with `mmsample shard` or "
                    "rebuild the manifest of existing shards with `mmsample index "
                    f"{path.parent}`"
                )
        elif path.suffix == ".tar":
            raise ManifestError(
                f"{path} is a shard, not a dataset: give the directory that holds it and its "
                f"{MANIFEST} ({path.parent})"
            )
        return cls.parse(path.read_bytes(), str(path))

    @classmethod
    def parse(cls, raw: bytes, where: str) -> Manifest:
        """The manifest in the bytes `raw` of file `where` (named in errors)."""
        try:
            data = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ManifestError(
                f"{where} is not a {MANIFEST}: not valid JSON in UTF-8 ({err}); give the dataset "
                "directory"
            ) from err
        if not isinstance(data, dict):
            raise ManifestError(f"{where} is not a {MANIFEST} (not a JSON object)")
        return cls.from_json(data, where)
