"""`RunLog`: write a run folder (docs/run_format.md) from your own training loop.

Place in the data flow: inside a user's loop, after each epoch; `mmsample report` reads what it
writes back (`mmsample.report.runs`), as it reads `pipelines/train.py`'s folders.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from numpy.typing import ArrayLike

from ..shards.format import MANIFEST
from ..storage.location import parse_location
from ..storage.store import open_store
from .outcomes import check_outcomes, write_outcomes
from .runs import RUN_FORMAT

__all__ = ["RunLog", "data_fingerprint"]


METADATA = (".json", ".jsonl", ".idx", ".csv")  # files whose content enters the fingerprint
METADATA_MAX = 1 << 20  # bytes: larger metadata files enter by name and size only


def data_fingerprint(
    folder: str | os.PathLike[str], storage_options: Mapping[str, Any] | None = None
) -> str:
    """A short hex digest (16 chars) of the data under `folder` (a shard folder or any data
    folder, a path or a URL), for a run's `data_fingerprint` setting: every file's relative path
    and size, plus the content of its small metadata files (`.json`, `.jsonl`, `.idx`, `.csv`,
    up to 1 MiB each); tar payloads are not read. A folder and its copy on object storage
    (`s3://`, `gs://`: one recursive listing and one read per metadata file, 16 at a time) have
    the same fingerprint. A URL that cannot be listed (`https://`, `pipe:`) is fingerprinted by
    its `manifest.json` alone (which names every shard, its size and sample count): a
    different digest from its local copy's. `storage_options` go to the fsspec backend.

    Raises ValueError when `folder` is not a folder (or a URL with no files under it),
    `mmsample.errors.StorageError` when a remote folder cannot be read."""
    location = parse_location(folder)
    digest = hashlib.sha256()
    if location.is_local:
        base = location.local_path()
        if not base.is_dir():
            raise ValueError(f"data_fingerprint: {base} is not a folder")
        files = {
            p.relative_to(base).as_posix(): p.stat().st_size for p in base.rglob("*") if p.is_file()
        }
        read: Callable[[str], bytes] = lambda name: (base / name).read_bytes()  # noqa: E731
    else:
        store = open_store(location, storage_options)
        if not store.listable:
            digest.update(b"manifest.json only\0" + store.read(MANIFEST))
            return digest.hexdigest()[:16]
        files = store.tree()
        if not files:
            raise ValueError(f"data_fingerprint: no files under {location.display}")
        read = store.read
    # the order of sorted(Path): part by part (`a/x` before `a-b/x`)
    names = sorted(files, key=lambda name: name.split("/"))
    small = [n for n in names if Path(n).suffix in METADATA and files[n] <= METADATA_MAX]
    with ThreadPoolExecutor(16 if not location.is_local else 1) as pool:
        content = dict(zip(small, pool.map(read, small)))
    for name in names:
        digest.update(f"{name}\0{files[name]}\0".encode())
        if name in content:
            digest.update(content[name])
    return digest.hexdigest()[:16]


class RunLog:
    """The logs of one run in `folder`: `config.json` now, a `metrics.jsonl` (and optionally
    `stats.jsonl`) line per `epoch(...)` call, an `outcomes.jsonl` line per `outcomes(...)`
    call, `done.json` on `done()`.

    `method` and `seed` name the run among its comparisons; `settings` (epochs, batch_size,
    world_size, model, data, method knobs, ...: JSON values) decide which runs the report may
    pool: runs whose settings differ are reported apart. Pass `num_classes` (K) for the
    report's chance level and utilisation; a unimodal ceiling run is `method="plain"` with
    `only=["<m>"]` and otherwise the same settings. Raises ValueError when `folder`
    already holds a run (a `metrics.jsonl`): one folder, one run.
    """

    def __init__(self, folder: str | Path, *, method: str, seed: int = 0, **settings: Any) -> None:
        self.folder = Path(folder)
        if (self.folder / "metrics.jsonl").exists():
            raise ValueError(
                f"{self.folder} already holds a run (metrics.jsonl): give each run its own folder"
            )
        self.folder.mkdir(parents=True, exist_ok=True)
        config = {"run_format": RUN_FORMAT, "method": method, "seed": seed, **settings}
        (self.folder / "config.json").write_text(json.dumps(config, indent=1, sort_keys=True))

    def epoch(
        self,
        epoch: int,
        metrics: Mapping[str, float],
        stats: Mapping[str, float] | None = None,
    ) -> None:
        """Append epoch `epoch` (from 0): `metrics` keyed as docs/run_format.md names them
        (`test/acc`, `test/acc/<m>`, `test/contribution/<m>`, `time/epoch_s`, ...; floats,
        accuracies as fractions, times in seconds) and, if given, the method's `stats(epoch)`.
        NaN (not measured yet, e.g. SMV's contribution before its warmup) is written as null,
        which the report shows as empty. Raises ValueError on a value that is not a number."""
        self._append("metrics.jsonl", {"epoch": epoch, **_numbers(metrics)})
        if stats is not None:
            self._append("stats.jsonl", {"epoch": epoch, **_numbers(stats)})

    def outcomes(
        self,
        epoch: int,
        modalities: Sequence[str],
        ids: ArrayLike,
        labels: ArrayLike,
        predictions: Mapping[str, ArrayLike],
        probes: Mapping[str, ArrayLike] | None = None,
    ) -> None:
        """Append epoch `epoch`'s per-clip test outcomes to `outcomes.jsonl`, which gives the
        report its intervals: `ids` (each test clip once, any order), `labels` and, for every
        non-empty subset C of `modalities`, `predictions[C]` = the argmax class of your fusion
        head with the features outside C zeroed (C named by its modalities joined with "+" in
        `modalities` order: `"audio+video"` is the fused prediction; `"none"`, all zeroed, is
        optional), optionally `probes[m]` (a unimodal head's). Integer arrays `[N]`. Raises
        ValueError naming what is wrong (a repeated id, a missing subset, unequal lengths)."""
        record = check_outcomes(epoch, modalities, ids, labels, predictions, probes)
        write_outcomes(self.folder, record)

    def done(self, epochs: int) -> None:
        """Mark the run finished after `epochs` epochs (`done.json`)."""
        (self.folder / "done.json").write_text(json.dumps({"epochs": epochs}))

    def _append(self, name: str, record: dict[str, Any]) -> None:
        with (self.folder / name).open("a") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")


def _numbers(values: Mapping[str, float]) -> dict[str, float | None]:
    """`values` as JSON numbers (NaN -> null); ValueError naming a key whose value is not one."""
    out: dict[str, float | None] = {}
    for key, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"RunLog.epoch: {key}={value!r} is not a number")
        out[key] = None if math.isnan(value) else float(value)
    return out
