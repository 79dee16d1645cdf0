"""Write samples into WebDataset tar shards with their offset index (used by `mmsample shard`).

Members are written in the POSIX pax format: a member name (`KEY.FIELD`) that fits the 100 bytes
of a ustar header is written as plain ustar (byte for byte what the ustar format writes), a longer
one gets a pax `path` record before its header, which both readers (`mmsample.shards.tar_header`),
`tarfile`, GNU tar and WebDataset read. Keys are ASCII (`mmsample.shards.format.check_key`), so a
name's length in characters is its length in bytes.

Writes are atomic: a shard and its index appear under their final names only once complete,
so an interrupted job leaves no half-written shard that a resume would keep.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from ..shards.format import (
    ID_FIELD,
    LABEL_FIELD,
    META_FIELD,
    Manifest,
    ShardInfo,
    check_field,
    check_key,
    index_name,
    shard_name,
    write_index,
)
from .finalise import save_manifest


class ShardWriter:
    """Append samples to one tar shard, recording each sample's byte range for random access."""

    def __init__(self, path: str | Path, classes: list[str] | None = None) -> None:
        self.path = Path(path)
        if self.path.suffix != ".tar":
            raise ValueError(f"The 'path' parameter of ShardWriter must end in .tar; got {path}")
        self.classes = classes
        self._tmp = self.path.with_name(self.path.name + ".tmp")
        self._file = open(self._tmp, "wb")  # noqa: SIM115 (closed in close/abort)
        self._tar = tarfile.open(  # noqa: SIM115
            fileobj=self._file, mode="w", format=tarfile.PAX_FORMAT
        )
        self._rows: list[tuple[int, int, int]] = []
        self._labels: Counter[int] = Counter()
        self._keys: dict[str, None] = {}
        self._splits: list[str] = []

    def _add(self, name: str, payload: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size = len(payload)
        info.mode = 0o444
        info.mtime = 0
        self._tar.addfile(info, io.BytesIO(payload))

    def write(
        self,
        key: str,
        sample_id: int,
        label: int,
        fields: Mapping[str, bytes],
        *,
        meta: Mapping[str, str] | None = None,
        split: str = "",
    ) -> None:
        """Append one sample: its global id, class index, one payload per field, its metadata
        (a `KEY.json` member) and its split ("" for none; kept in the offset index)."""
        check_key(key)
        if key in self._keys:
            raise ValueError(f"{self.path.name}: sample key {key!r} written twice")
        if sample_id < 0 or label < 0:
            raise ValueError(f"{self.path.name}:{key}: id and label must be >= 0")
        start = self._tar.offset
        self._add(f"{key}.{ID_FIELD}", str(int(sample_id)).encode())
        self._add(f"{key}.{LABEL_FIELD}", str(int(label)).encode())
        for name in sorted(fields):
            self._add(f"{key}.{check_field(name)}", bytes(fields[name]))
        if meta:
            text = json.dumps(dict(meta), sort_keys=True, ensure_ascii=False)
            self._add(f"{key}.{META_FIELD}", text.encode("utf-8"))
        self._rows.append((int(sample_id), start, self._tar.offset))
        self._labels[int(label)] += 1
        self._keys[key] = None
        self._splits.append(str(split))

    def close(self) -> ShardInfo:
        """Finish the tar, move it and its index into place, and describe the shard."""
        self._tar.close()
        self._file.close()
        os.replace(self._tmp, self.path)
        index = index_name(self.path.name)
        rows = np.array(self._rows, dtype=np.int64).reshape(-1, 3)
        splits = self._splits if any(self._splits) else None
        write_index(self.path.with_name(index), rows, list(self._keys), splits)
        ids = rows[:, 0]
        names = self.classes
        return ShardInfo(
            name=self.path.name,
            count=len(self._rows),
            first_id=int(ids.min()) if len(ids) else -1,
            last_id=int(ids.max()) if len(ids) else -1,
            bytes=self.path.stat().st_size,
            index=index,
            class_counts={
                (names[k] if names is not None else str(k)): n
                for k, n in sorted(self._labels.items())
            },
            split_counts=dict(sorted(Counter(s for s in self._splits if s).items())),
        )

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, kind: object, value: object, tb: object) -> None:
        if kind is None:
            self.close()
        else:
            self.abort()

    def abort(self) -> None:
        """Drop a partly written shard."""
        self._tar.close()
        self._file.close()
        self._tmp.unlink(missing_ok=True)


def write_samples(
    root: str | Path,
    samples: Iterable[tuple[str, int, Mapping[str, bytes]]],
    classes: list[str],
    samples_per_shard: int = 100,
) -> Manifest:
    """Write (key, label, fields) samples into shards under `root`, ids = position in the stream;
    return the saved manifest. The in-process path for tests and small datasets."""
    if samples_per_shard < 1:
        raise ValueError(f"samples_per_shard must be >= 1; got {samples_per_shard}")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    infos: list[ShardInfo] = []
    fields: set[str] = set()
    writer: ShardWriter | None = None
    n = 0
    for n, (key, label, payloads) in enumerate(samples):
        if n % samples_per_shard == 0:
            if writer is not None:
                infos.append(writer.close())
            writer = ShardWriter(root / shard_name(n // samples_per_shard), classes)
        if not 0 <= label < len(classes):
            raise ValueError(f"sample {key!r}: label {label} outside the {len(classes)} classes")
        assert writer is not None
        writer.write(key, n, label, payloads)
        fields.update(payloads)
    rows = 0
    if writer is not None:
        infos.append(writer.close())
        rows = n + 1
    manifest = Manifest(
        classes=list(classes),
        fields=sorted(fields),
        shards=infos,
        num_rows=rows,
        samples_per_shard=samples_per_shard,
    )
    save_manifest(manifest, Path(root))  # with the consolidated index, as `mmsample shard`
    return manifest
