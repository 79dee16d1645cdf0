"""`mmsample subset SHARDS IDS OUT`: write the samples of an id set as a new shard set.

Place in the data flow: an active-learning state file (or any id list) -> **subset** -> a labeled
shard set that reads like any other (manifest, offset indexes). Samples are copied byte for byte
through the shard writer (`mmsample.sharding.ShardWriter`): same keys, global ids, labels,
fields, metadata and split, so every id decodes to the same tensors as in the source. Usually
the readers' `ids=` filter does the same job without a copy.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable

import numpy as np

from ..sharding import ShardWriter
from ..sharding.finalise import save_manifest
from ..shards.format import META_FIELD, Manifest, shard_name
from ..shards.shard_table import ShardTable
from ..storage.location import require_local


def write_subset(
    source: str | os.PathLike[str],
    ids: Iterable[int] | np.ndarray,
    out: str | os.PathLike[str],
    *,
    samples_per_shard: int | None = None,
) -> Manifest:
    """Copy the samples with the given global `ids` from the shard set `source` into `out`
    (created; shards in source order, `samples_per_shard` each, default the source's), keeping
    keys, ids, labels, fields, metadata and splits; the manifest keeps the classes and the id
    space. Returns the saved manifest. Raises ValueError for ids the source does not have
    (listing some), an `out` that already holds a manifest, or `samples_per_shard < 1`."""
    # a local folder; copied as is to object storage it opens like a published one (it
    # carries its manifest and consolidated index)
    root = require_local(
        out, "The 'out' parameter of write_subset (write the subset here, then copy it as is)"
    )
    table = ShardTable(os.fspath(source), ids=ids, owner="write_subset")  # a path or a URL
    manifest = table.manifest
    per = manifest.samples_per_shard if samples_per_shard is None else samples_per_shard
    if isinstance(per, bool) or not isinstance(per, int) or per < 1:
        raise ValueError(
            f"The 'samples_per_shard' parameter of write_subset must be an int >= 1; got {per!r}."
        )
    if (root / "manifest.json").exists():
        raise ValueError(
            f"The 'out' parameter of write_subset names {root}, which already holds a dataset; "
            "choose an empty folder."
        )
    root.mkdir(parents=True, exist_ok=True)
    splits: dict[int, str] = {}
    if table.splits is not None:
        splits.update(zip(table.ids.tolist(), table.splits.tolist()))
    infos = []
    writer: ShardWriter | None = None
    try:
        for row in range(len(table)):
            if row % per == 0:
                if writer is not None:
                    infos.append(writer.close())
                writer = ShardWriter(root / shard_name(row // per), manifest.classes)
            raw = table.read(row)
            fields = dict(raw["fields"])
            meta_bytes = fields.pop(META_FIELD, None)
            meta = None if meta_bytes is None else json.loads(meta_bytes.decode("utf-8"))
            assert writer is not None  # set at row 0
            writer.write(
                raw["key"],
                raw["id"],
                raw["label"],
                fields,
                meta=meta,
                split=splits.get(int(raw["id"]), ""),
            )
        if writer is not None:
            infos.append(writer.close())
            writer = None
    finally:
        if writer is not None:
            writer.abort()
        table.close()
    subset = Manifest(
        classes=list(manifest.classes),
        fields=list(manifest.fields),
        shards=infos,
        num_rows=manifest.num_rows,
        samples_per_shard=per,
        extra={
            **manifest.extra,
            "subset_of": table.where if table.root is None else str(table.root.resolve()),
        },
    )
    save_manifest(subset, root)  # with its own consolidated index (the source's is not its)
    return subset
