"""Kinetics-Sounds recipe: the Kinetics-400 CSVs and a folder of downloaded clips -> shards.

Place in the data flow: the first step for Kinetics-Sounds. The Kinetics CSVs (header
`label,youtube_id,time_start,time_end,split`, one file per split or one for all) are filtered to
the 31 Kinetics-Sounds classes below; each clip file is `<youtube_id>_<start>_<end>.mp4` with the
times zero-padded to 6 digits (the ActivityNet Kinetics downloader's `%06d` names; unpadded names
accepted too), looked for in the clip folder, in `<folder>/<label>/` (spaces kept or replaced by
`_`) and in `<folder>/<split>/<label>/` -> `manifest.csv` (key `<id>_<start:06d>_<end:06d>`) ->
`mmsample shard` -> shards with one `mp4` field (read with
`pipelines.presets.preset("kinetics_sounds", split)`).

The classes: Kinetics-Sounds was defined by Arandjelovic and Zisserman ("Look, Listen and
Learn", ICCV 2017) as 34 Kinetics classes that can be heard; OGM-GE, BMMAL and SMV use the 31 of
them that are Kinetics-400 class names (BMMAL paper: "31 action classes selected from
Kinetics-400"). The list below is that 31-class list as public audio-visual code spells it
(Kinetics-400 names); class ids follow its sorted order. Splits are kept as the CSVs name them
(Kinetics-400: train, val, test); OGM-GE trains on train and tests on val, as the Kinetics-400
test labels were not public when Kinetics-Sounds was made.

    python -m pipelines.kinetics_sounds --csv train.csv validate.csv --clips DIR \
        --out shards/ks [--part I/N] [--skip-bad] [--workers W] [--samples-per-shard S]
"""

from __future__ import annotations

import argparse
import csv
from collections.abc import Sequence
from pathlib import Path

from mmsample.errors import ManifestError
from mmsample.storage.location import local_path

from .recipe import Clip, Outcome, add_shard_arguments, find_file, run

__all__ = ["CLASSES", "clip_names", "main", "read_csvs", "shard"]

CLASSES = sorted(
    [
        "blowing nose",
        "blowing out candles",
        "bowling",
        "chopping wood",
        "dribbling basketball",
        "laughing",
        "mowing lawn",
        "playing accordion",
        "playing bagpipes",
        "playing bass guitar",
        "playing clarinet",
        "playing drums",
        "playing guitar",
        "playing harmonica",
        "playing keyboard",
        "playing organ",
        "playing piano",
        "playing saxophone",
        "playing trombone",
        "playing trumpet",
        "playing violin",
        "playing xylophone",
        "ripping paper",
        "shoveling snow",
        "shuffling cards",
        "singing",
        "stomping grapes",
        "tap dancing",
        "tapping guitar",
        "tapping pen",
        "tickling",
    ]
)
HEADER = ("label", "youtube_id", "time_start", "time_end", "split")


def clip_names(youtube_id: str, start: int, end: int) -> list[str]:
    """The file names a downloader gives the clip: `%06d` times first, then unpadded."""
    return [f"{youtube_id}_{start:06d}_{end:06d}.mp4", f"{youtube_id}_{start}_{end}.mp4"]


def _second(path: Path, line: int, name: str, value: str) -> int:
    try:
        number = float(value)
    except ValueError:
        number = float("nan")
    if not number.is_integer() or number < 0:
        raise ManifestError(
            f"{path}, line {line}: {name} must be a whole number of seconds >= 0; got {value!r}"
        )
    return int(number)


def read_csvs(paths: Sequence[Path]) -> list[tuple[str, str, int, int, str]]:
    """The Kinetics-Sounds rows of the Kinetics CSVs -> [(label, youtube_id, start, end,
    split)]; other classes are dropped. ManifestError naming the file and line for a header
    without the five columns or a bad time."""
    rows = []
    for path in paths:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            missing = [c for c in HEADER if c not in (reader.fieldnames or [])]
            if missing:
                raise ManifestError(
                    f"{path}: a Kinetics CSV has the header {','.join(HEADER)}; "
                    f"{missing} missing (got {reader.fieldnames})"
                )
            for record in reader:
                label = (record["label"] or "").strip()
                if label not in CLASSES:
                    continue
                line = reader.line_num
                start = _second(path, line, "time_start", record["time_start"])
                end = _second(path, line, "time_end", record["time_end"])
                split = (record["split"] or "").strip()
                rows.append((label, record["youtube_id"].strip(), start, end, split))
    if not rows:
        raise ManifestError(f"{[str(p) for p in paths]}: no row of a Kinetics-Sounds class")
    return rows


def clips(paths: Sequence[Path], folder: Path) -> list[Clip]:
    """The Kinetics-Sounds clips with their files (missing ones under the padded name)."""
    out = []
    for label, yid, start, end, split in read_csvs(paths):
        labels = dict.fromkeys([label, label.replace(" ", "_")])
        folders = [folder, *(folder / x for x in labels), *(folder / split / x for x in labels)]
        path = find_file(folders, clip_names(yid, start, end))
        out.append(Clip(f"{yid}_{start:06d}_{end:06d}", label, split, {"mp4": path}))
    return out


def shard(paths: Sequence[Path], folder: Path, args: argparse.Namespace) -> Outcome:
    """Shard Kinetics-Sounds as `main` does (args: out, samples_per_shard, workers, part,
    skip_bad, quiet)."""
    return run(clips(paths, folder), args, columns=["mp4"], classes=CLASSES)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.kinetics_sounds", description=__doc__
    )
    parser.add_argument(
        "--csv", type=local_path, nargs="+", required=True, help="Kinetics-400 CSV file(s)"
    )
    parser.add_argument(
        "--clips", type=local_path, required=True, help="folder of downloaded clips"
    )
    add_shard_arguments(parser)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the recipe; print the summary; exit 1 if bad clips stopped it."""
    args = parse_args(argv)
    return shard(args.csv, args.clips, args).exit_code()


if __name__ == "__main__":
    raise SystemExit(main())
