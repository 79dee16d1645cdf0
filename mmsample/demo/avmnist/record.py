"""The build record (`build.json`): what a demo build made, and whether it can be reused.

Place in the data flow: the end of `build_avmnist` (written last, so its presence means a
finished build) and its start (a build with equal parameters is reused; a different one is
cleared, never anything else).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

BUILD_FORMAT = "mmsample-avmnist/1"


@dataclass
class BuildInfo:
    """What `build_avmnist` made (saved as `build.json`); equal parameters mean a reusable build."""

    n: int
    seed: int
    samples_per_shard: int
    seconds: float
    fps: float
    sharded_by: str = ""
    cropped: int = 0
    format: str = BUILD_FORMAT
    skipped: bool = False
    image_components: int | None = None
    audio_snr_db: float | None = None
    test_fraction: float = 0.0

    def params(self) -> tuple[object, ...]:
        return (
            self.format,
            self.n,
            self.seed,
            self.samples_per_shard,
            self.seconds,
            self.fps,
            self.image_components,
            self.audio_snr_db,
            self.test_fraction,
        )


def _read_build_info(out: Path) -> BuildInfo | None:
    path = out / "build.json"
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
        data.pop("skipped", None)
        return BuildInfo(**data)
    except (json.JSONDecodeError, TypeError) as err:
        raise ValueError(f"{path}: not a build record of this demo ({err}); remove it") from err


def prepare_output(out: Path, info: BuildInfo) -> BuildInfo | None:
    """Return the existing build if it has the same parameters; otherwise clear what a previous
    build of this demo wrote (never anything else) and return None."""
    previous = _read_build_info(out)
    if previous is not None:
        if previous.params() == info.params() and (out / "shards" / "manifest.json").exists():
            previous.skipped = True
            return previous
        (out / "build.json").unlink()
        for sub in ("raw", "shards"):
            shutil.rmtree(out / sub, ignore_errors=True)
    elif out.exists() and any(out.iterdir()):
        raise ValueError(
            f"The 'out_dir' parameter of build_avmnist points at {out}, which is not empty and "
            "holds no build.json of this demo; choose an empty or new directory."
        )
    return None
