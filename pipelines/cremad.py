"""CREMA-D recipe: `VideoFlash/*.flv` (or `.mp4`) and `AudioWAV/*.wav` -> shards.

Place in the data flow: the first step for CREMA-D. The public release holds one video file
and one wav per clip, both named `ActorID_Sentence_Emotion_Level` (`1001_DFA_ANG_XX`: actor
1001-1091, one of 12 sentences, emotion ANG / DIS / FEA / HAP / NEU / SAD, level LO / MD / HI /
XX) -> `manifest.csv` (key = the name, label = the emotion, split, `video` and `audio` paths)
-> `mmsample shard` -> shards with fields `video.flv` (or `video.mp4`) and `audio.wav` (read
with `pipelines.presets.preset("cremad", split)`; `video_field="video.mp4"` for .mp4 files).

Classes, in OGM-GE's order (its `CramedDataset.py` class_dict): NEU, HAP, SAD, FEA, DIS, ANG.
A clip is every name found in either folder (or listed in the split files): a name with only
one of its two files is reported missing, an undecodable file undecodable, in one list.

The split. OGM-GE and DUS use 6,698 training and 744 test clips: a random clip-level split (not
speaker-independent) that OGM-GE ships as `train.csv` / `test.csv` (one `name,EMOTION` line per
clip). Pass those files with `--split-files TRAIN TEST` to reproduce it exactly. Without them,
a clip is "test" when the first 8 hex digits of sha256(name) / 16**8 < `--test-fraction`
(default 0.1, about 744 of 7,442), the same on every machine and independent of which files
are present.

    python -m pipelines.cremad --root CREMA-D --out shards/cremad [--split-files T.csv V.csv] \
        [--test-fraction 0.1] [--part I/N] [--skip-bad] [--workers W]
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import re
from collections.abc import Sequence
from pathlib import Path

from mmsample.errors import ManifestError
from mmsample.storage.location import local_path

from .recipe import Clip, Outcome, add_shard_arguments, run

__all__ = ["CLASSES", "NAME", "clips", "in_test_split", "main", "shard"]

CLASSES = ["NEU", "HAP", "SAD", "FEA", "DIS", "ANG"]
NAME = re.compile(r"^(\d{4})_([A-Z]{3})_(ANG|DIS|FEA|HAP|NEU|SAD)_([A-Z]{1,2})$")
VIDEO_DIR, AUDIO_DIR = "VideoFlash", "AudioWAV"
VIDEO_EXTS = ("flv", "mp4")


def emotion(name: str) -> str:
    """The emotion code of a clip name; ManifestError naming the name if it is not
    `ActorID_Sentence_Emotion_Level`."""
    match = NAME.match(name)
    if match is None:
        raise ManifestError(
            f"CREMA-D clip name {name!r} is not ActorID_Sentence_Emotion_Level "
            "(e.g. 1001_DFA_ANG_XX; emotion one of ANG, DIS, FEA, HAP, NEU, SAD)"
        )
    return match.group(3)


def in_test_split(name: str, fraction: float) -> bool:
    """True if clip `name` falls in the test split (see the module docstring)."""
    return int(hashlib.sha256(name.encode()).hexdigest()[:8], 16) / 16**8 < fraction


def _stems(folder: Path, ext: str) -> set[str]:
    return {p.stem for p in folder.glob(f"*.{ext}") if not p.name.startswith(".")}


def read_split_files(train: Path, test: Path) -> dict[str, str]:
    """OGM-GE's split files (`name,EMOTION` a line) -> {name: "train" | "test"}; ManifestError
    for a name in both or an emotion that disagrees with the name."""
    out: dict[str, str] = {}
    for split, path in (("train", train), ("test", test)):
        with open(path, newline="", encoding="utf-8") as f:
            for line, cells in enumerate(csv.reader(f), 1):
                if not cells or not cells[0].strip():
                    continue
                name = cells[0].strip()
                code = emotion(name)
                if len(cells) > 1 and cells[1].strip() and cells[1].strip() != code:
                    raise ManifestError(
                        f"{path}, line {line}: {name} is labelled {cells[1].strip()!r} but its "
                        f"name says {code!r}"
                    )
                if out.setdefault(name, split) != split:
                    raise ManifestError(f"{path}, line {line}: {name} is in both split files")
    return out


def clips(
    root: Path,
    *,
    split_files: tuple[Path, Path] | None = None,
    test_fraction: float = 0.1,
    video_ext: str | None = None,
) -> tuple[list[Clip], str]:
    """The clips under `root` (sorted by name) and the video extension used. ManifestError
    if neither folder exists, both video kinds are present without `video_ext`, or a name
    does not follow the convention."""
    vdir, adir = root / VIDEO_DIR, root / AUDIO_DIR
    if not vdir.is_dir() and not adir.is_dir():
        raise ManifestError(f"{root} holds neither {VIDEO_DIR}/ nor {AUDIO_DIR}/")
    if video_ext is None:
        found = [e for e in VIDEO_EXTS if _stems(vdir, e)]
        if len(found) > 1:
            raise ManifestError(
                f"{vdir} holds both .flv and .mp4 files: pass --video-ext flv or mp4"
            )
        video_ext = found[0] if found else VIDEO_EXTS[0]
    if split_files is not None:
        splits = read_split_files(*split_files)
        names = sorted(splits)
    else:
        names = sorted(_stems(vdir, video_ext) | _stems(adir, "wav"))
        splits = {n: "test" if in_test_split(n, test_fraction) else "train" for n in names}
    out = []
    for name in names:
        files = {"video": vdir / f"{name}.{video_ext}", "audio": adir / f"{name}.wav"}
        out.append(Clip(name, emotion(name), splits[name], files))
    return out, video_ext


def shard(
    root: Path,
    args: argparse.Namespace,
    *,
    split_files: tuple[Path, Path] | None = None,
    test_fraction: float = 0.1,
    video_ext: str | None = None,
) -> Outcome:
    """Shard CREMA-D as `main` does (args: out, samples_per_shard, workers, part, skip_bad,
    quiet)."""
    listed, ext = clips(
        root, split_files=split_files, test_fraction=test_fraction, video_ext=video_ext
    )
    fields = {"video": ext, "audio": "wav"}
    return run(listed, args, columns=["video", "audio"], classes=CLASSES, fields=fields)


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"--test-fraction must be in (0, 1); got {text}")
    return value


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m pipelines.cremad", description=__doc__)
    parser.add_argument(
        "--root", type=local_path, required=True, help="holds VideoFlash/, AudioWAV/"
    )
    parser.add_argument(
        "--split-files", type=local_path, nargs=2, metavar=("TRAIN", "TEST"), default=None
    )
    parser.add_argument("--test-fraction", type=_fraction, default=0.1)
    parser.add_argument("--video-ext", choices=VIDEO_EXTS, default=None)
    add_shard_arguments(parser)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the recipe; print the summary; exit 1 if bad clips stopped it."""
    args = parse_args(argv)
    outcome = shard(
        args.root,
        args,
        split_files=tuple(args.split_files) if args.split_files else None,
        test_fraction=args.test_fraction,
        video_ext=args.video_ext,
    )
    return outcome.exit_code()


if __name__ == "__main__":
    raise SystemExit(main())
