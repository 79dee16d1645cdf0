"""The consolidated offset index of a remote dataset: every shard's index in one file, so that
opening the dataset costs two requests (manifest.json and this file), not one per shard.

Place in the data flow: written beside manifest.json when shards are published to a URL
(`mmsample shard --out s3://...`, `mmsample index s3://...`), named with its SHA-256 in the
manifest (`extra["index_bundle"]`); read by `ShardTable` when it opens a remote dataset. The
per-shard `.idx.npy` files stay the reference: a bundle whose digest does not match the
manifest is not used (the per-shard indexes are read, with a warning naming the fix). Like the
per-shard files it is a plain `.npy` structured array (never unpickled): columns `shard`
(int32, position in the manifest), `id`, `start`, `end` (int64), `key` (ASCII) and, when any
shard has splits, `split` (unicode).
"""

from __future__ import annotations

import hashlib
import io
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import ManifestError, MmsampleWarning
from .offsets import INDEX_COLUMNS, OffsetIndex

__all__ = [
    "BUNDLE",
    "BUNDLE_KEY",
    "BundleWarning",
    "bundle_entry",
    "digest_matches",
    "pack",
    "unpack",
    "warn_fallback",
]

BUNDLE = "index-bundle.npy"
BUNDLE_KEY = "index_bundle"  # manifest.extra[BUNDLE_KEY] = {"name": ..., "sha256": ...}


class BundleWarning(MmsampleWarning):
    """A remote dataset's consolidated index is missing or stale: each shard's index is read
    instead (one request per shard when the dataset opens)."""


def pack(indexes: Sequence[OffsetIndex]) -> bytes | None:
    """The bundle of `indexes` (in manifest order) as .npy bytes; None when an index has no
    key column (an index written before keys were stored: rebuild it with `mmsample index`)."""
    if any(i.keys is None for i in indexes):
        return None
    keys = [i.keys for i in indexes if i.keys is not None]
    width = max((k.dtype.itemsize for k in keys), default=1) or 1
    columns: list[tuple[str, str]] = [("shard", "<i4"), *((c, "<i8") for c in INDEX_COLUMNS)]
    columns.append(("key", f"S{width}"))
    split = any(i.splits is not None for i in indexes)
    if split:
        wide = max(
            (i.splits.dtype.itemsize // 4 for i in indexes if i.splits is not None), default=1
        )
        columns.append(("split", f"<U{max(1, wide)}"))
    data = np.zeros(sum(len(i) for i in indexes), dtype=np.dtype(columns))
    at = 0
    for number, index in enumerate(indexes):
        part = data[at : at + len(index)]
        part["shard"] = number
        for j, c in enumerate(INDEX_COLUMNS):
            part[c] = index.rows[:, j]
        part["key"] = index.keys
        if split:
            part["split"] = index.splits if index.splits is not None else ""
        at += len(index)
    out = io.BytesIO()
    np.save(out, data, allow_pickle=False)
    return out.getvalue()


def bundle_entry(raw: bytes) -> dict[str, Any]:
    """What the manifest records of bundle bytes `raw`: its name and SHA-256."""
    return {"name": BUNDLE, "sha256": hashlib.sha256(raw).hexdigest()}


def unpack(raw: bytes, counts: Sequence[int], where: str) -> list[OffsetIndex]:
    """The per-shard indexes in bundle bytes `raw`, split by the manifest's shard `counts`.
    ManifestError naming `where` for a file that is not a bundle of these shards."""
    try:
        data = np.load(io.BytesIO(raw), allow_pickle=False)
    except (OSError, ValueError) as err:
        raise ManifestError(f"{where}: unreadable consolidated index ({err})") from err
    fields = data.dtype.fields or {}
    wanted = {"shard", *INDEX_COLUMNS, "key"}
    if data.ndim != 1 or not wanted <= set(fields) or set(fields) - wanted - {"split"}:
        raise ManifestError(f"{where}: not a consolidated offset index ({data.dtype})")
    shard = np.asarray(data["shard"], dtype=np.int64)
    expected = np.repeat(np.arange(len(counts), dtype=np.int64), np.asarray(counts, dtype=np.int64))
    if len(shard) != len(expected) or not np.array_equal(shard, expected):
        raise ManifestError(
            f"{where}: its rows do not follow the manifest's shards and counts; republish it "
            "with `mmsample index URL`"
        )
    rows = np.stack([data[c] for c in INDEX_COLUMNS], axis=1).astype(np.int64)
    splits = np.asarray(data["split"]) if "split" in fields else None
    out, at = [], 0
    for n in counts:
        sl = slice(at, at + n)
        out.append(
            OffsetIndex(
                rows[sl], np.asarray(data["key"][sl]), None if splits is None else splits[sl]
            )
        )
        at += n
    return out


def digest_matches(raw: bytes, entry: Any) -> bool:
    """True if `raw` is the bundle the manifest's `entry` names."""
    return isinstance(entry, dict) and entry.get("sha256") == hashlib.sha256(raw).hexdigest()


def warn_fallback(where: str, why: str) -> None:
    warnings.warn(
        f"{where}: {why}; reading each shard's offset index instead (one request per shard); "
        "`mmsample index URL` publishes a consolidated index",
        BundleWarning,
        stacklevel=4,
    )
