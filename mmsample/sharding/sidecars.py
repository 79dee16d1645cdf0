"""Shard sidecars: the small JSON file beside each finished shard that makes sharding resumable.

Place in the data flow: a shard task (`mmsample.sharding.tasks`) writes shard-NNNNNN.json last,
after its tar and offset index; it records the shard's `ShardInfo`, its skipped rows and the
hash of the job (input and settings). A rerun keeps a shard whose sidecar matches the job, the
manifest is written from the sidecars of every shard (`mmsample.sharding.finalise`), and
`mmsample index` reuses them (`mmsample.sharding.rebuild`).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from ..shards.format import shard_name

__all__ = [
    "SIDECAR_FORMAT",
    "complete_sidecar",
    "job_sidecar",
    "load_sidecar",
    "shard_file_number",
    "sidecar_name",
    "sidecar_numbers",
]

SIDECAR_FORMAT = "mmsample-sidecar/1"
# the files the tool writes for shard NNNNNN: tar, offset index, sidecar (and their temporaries)
_OWN_FILE = re.compile(r"^shard-(\d{6})\.(tar|idx\.npy|json)(\.tmp)?$")


def sidecar_name(number: int) -> str:
    """File name of shard `number`'s sidecar (its ShardInfo, skipped rows and job hash)."""
    return shard_name(number)[: -len(".tar")] + ".json"


def shard_file_number(name: str) -> int | None:
    """The shard number of a file the tool writes (tar, index, sidecar, or a leftover `.tmp`
    of one), None for any other file name."""
    match = _OWN_FILE.match(name)
    return int(match.group(1)) if match else None


def load_sidecar(out: Path, number: int) -> dict[str, Any] | None:
    """Shard `number`'s sidecar as written (None if absent or not a sidecar), complete or not."""
    try:
        data = json.loads((out / sidecar_name(number)).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("format") == SIDECAR_FORMAT else None


def complete_sidecar(out: Path, number: int) -> dict[str, Any] | None:
    """Shard `number`'s sidecar if the shard is complete (its tar and index are in place)."""
    data = load_sidecar(out, number)
    if data is None:
        return None
    info = data.get("info")
    if info is not None:
        tar = out / info["name"]
        if not tar.is_file() or tar.stat().st_size != info["bytes"]:
            return None
        if not (out / info["index"]).is_file():
            return None
    return data


def job_sidecar(out: Path, number: int, job: str) -> dict[str, Any] | None:
    """Shard `number`'s complete sidecar if job `job` wrote it (the shard is done), else None."""
    data = complete_sidecar(out, number)
    return data if data is not None and data.get("job") == job else None


def sidecar_numbers(out: Path) -> list[int]:
    """The numbers of the shards that have a sidecar file in `out`, ascending."""
    matches = (_OWN_FILE.match(p.name) for p in out.glob("shard-*.json"))
    return sorted(int(m.group(1)) for m in matches if m and m.group(2) == "json" and not m.group(3))
