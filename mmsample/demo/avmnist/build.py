"""`build_avmnist`: the demo's sources -> encoded samples -> raw files -> shards, reusably.

Place in the data flow: the *raw clips + labels* end of it, driving the other modules of this
package in order (sources, degradation, jobs, raw files and shards, the build record).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict
from pathlib import Path

from ...shards.format import Manifest
from .degrade import principal_images
from .jobs import SampleJob, run_jobs
from .record import BuildInfo, prepare_output
from .sources import load_sources, pair_by_label, split_rows
from .write_shards import shard_raw, write_raw

DEFAULT_N = 1000


def _check_build_params(
    n: int,
    samples_per_shard: int,
    workers: int | None,
    seconds: float,
    fps: float,
    image_components: int | None = None,
    audio_snr_db: float | None = None,
    test_fraction: float = 0.0,
) -> None:
    name = "build_avmnist"
    if image_components is not None and not 1 <= image_components <= 64:
        raise ValueError(
            f"The 'image_components' parameter of {name} must be None or in 1..64 (an 8x8 "
            f"digit); got {image_components}."
        )
    if audio_snr_db is not None and not math.isfinite(audio_snr_db):
        raise ValueError(
            f"The 'audio_snr_db' parameter of {name} must be None or finite; got {audio_snr_db}."
        )
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(
            f"The 'test_fraction' parameter of {name} must be in [0, 1); got {test_fraction}."
        )
    if n < 1:
        raise ValueError(f"The 'n' parameter of {name} must be >= 1; got {n}.")
    if samples_per_shard < 1:
        raise ValueError(
            f"The 'samples_per_shard' parameter of {name} must be >= 1; got {samples_per_shard}."
        )
    if workers is not None and workers < 0:
        raise ValueError(f"The 'workers' parameter of {name} must be >= 0; got {workers}.")
    if not seconds > 0 or not fps > 0:
        raise ValueError(f"The 'seconds' and 'fps' parameters of {name} must be > 0.")


def build_avmnist(
    out_dir: str | Path,
    n: int = DEFAULT_N,
    seed: int = 0,
    samples_per_shard: int = 100,
    workers: int | None = None,
    seconds: float = 2.0,
    fps: float = 10.0,
    *,
    image_components: int | None = None,
    audio_snr_db: float | None = None,
    test_fraction: float = 0.0,
) -> BuildInfo:
    """Build the demo into `out_dir`: `raw/` (one file per field + `input.jsonl`, the sharding
    tool's input), `shards/` (the dataset: tars, offset indexes, manifest.json) and `build.json`.
    Deterministic in (n, seed, seconds, fps); `workers` processes encode (0 = in this process).
    Skips the work when `out_dir` already holds a build with the same parameters.
    `image_components`, `audio_snr_db` and `test_fraction`: see `mmsample.demo.avmnist`."""
    _check_build_params(
        n, samples_per_shard, workers, seconds, fps, image_components, audio_snr_db, test_fraction
    )
    out = Path(out_dir)
    info = BuildInfo(n, seed, samples_per_shard, float(seconds), float(fps))
    info.image_components = image_components
    info.audio_snr_db = None if audio_snr_db is None else float(audio_snr_db)
    info.test_fraction = float(test_fraction)
    existing = prepare_output(out, info)
    if existing is not None:
        return existing
    sources = load_sources()
    pairs = pair_by_label(sources.recording_labels, sources.image_labels, n, seed)
    shown = (
        sources.images
        if image_components is None
        else principal_images(sources.images, image_components)
    )
    labels = sources.recording_labels[pairs[:, 0]]
    splits = split_rows(labels, test_fraction, seed) if test_fraction > 0 else [""] * n
    jobs = [
        SampleJob(
            key=f"r{rec:04d}-i{img:04d}",
            label=int(sources.recording_labels[rec]),
            recording=int(rec),
            image_index=int(img),
            mfcc=sources.mfccs[rec],
            image=sources.images[img],
            shown=shown[img],
            seed=seed,
            seconds=float(seconds),
            fps=float(fps),
            audio_snr_db=info.audio_snr_db,
            split=split,
        )
        for (rec, img), split in zip(pairs, splits)
    ]
    workers = min(os.cpu_count() or 1, 8) if workers is None else workers
    results = run_jobs(jobs, workers)
    info.cropped = sum(cropped for _, cropped in results)
    jsonl = write_raw(out / "raw", jobs, [fields for fields, _ in results])
    info.sharded_by = shard_raw(jsonl, out / "shards", samples_per_shard, workers, len(jobs))
    tmp = out / "build.json.tmp"
    tmp.write_text(json.dumps(asdict(info), indent=1, sort_keys=True))
    os.replace(tmp, out / "build.json")
    return info


def load_manifest(out_dir: str | Path) -> Manifest:
    """The manifest of a built demo (`out_dir/shards/manifest.json`)."""
    return Manifest.load(Path(out_dir) / "shards")
