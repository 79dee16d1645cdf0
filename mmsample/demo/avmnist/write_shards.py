"""The demo's raw files and shards: encoded samples -> `raw/` -> `mmsample shard` -> `shards/`.

Place in the data flow: the end of `build_avmnist`. The payloads are written as the sharding
tool's input (one file per field plus `input.jsonl` and `classes.txt`), then sharded through the
tool's command line, as a user would.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

from .jobs import SampleJob
from .sources import CLASSES


def write_raw(raw: Path, jobs: Sequence[SampleJob], payloads: Sequence[dict[str, bytes]]) -> Path:
    """One file per non-text field, `input.jsonl` (key, label, one column per field: a path
    relative to `raw/`, or the text itself for `txt`) and `classes.txt`."""
    raw.mkdir(parents=True, exist_ok=True)
    lines = []
    for job, fields in zip(jobs, payloads):
        row: dict[str, str] = {"key": job.key, "label": CLASSES[job.label]}
        if job.split:
            row["split"] = job.split
        for name, data in sorted(fields.items()):
            if name == "txt":
                row[name] = data.decode()
                continue
            (raw / f"{job.key}.{name}").write_bytes(data)
            row[name] = f"{job.key}.{name}"
        lines.append(json.dumps(row, sort_keys=True))
    (raw / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    path = raw / "input.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def shard_raw(jsonl: Path, root: Path, samples_per_shard: int, workers: int, rows: int) -> str:
    """Shard `raw/input.jsonl` into `root` with the sharding tool, through its command line
    (`mmsample shard`); its output is kept quiet unless it fails. The tool only reads and probes
    files (a few ms a row), so it gets one process per 1,000 rows: starting a process costs more."""
    from ...cli import main as mmsample_main

    workers = max(1, min(workers, rows // 1000))

    argv = [
        "shard",
        str(jsonl),
        str(root),
        "--samples-per-shard",
        str(samples_per_shard),
        "--workers",
        str(workers),
        "--classes",
        str(jsonl.parent / "classes.txt"),
        "--quiet",
    ]
    said = io.StringIO()
    with redirect_stdout(said), redirect_stderr(said):
        status = mmsample_main(argv)
    if status != 0:
        raise RuntimeError(f"`mmsample {' '.join(argv)}` failed ({status}):\n{said.getvalue()}")
    return "mmsample shard"
