"""VGGSound recipe: the public `vggsound.csv` and a folder of downloaded clips -> shards.

Place in the data flow: the first step for VGGSound. `vggsound.csv` (no header; one line per clip:
YouTube id, start second, label, split "train" / "test"; labels holding a comma are quoted) and
a folder of clips named as the common downloaders do, `<id>_<start>.mp4` with the start
zero-padded to 6 digits (`---g-f_I2yQ_000001.mp4`; the unpadded `---g-f_I2yQ_1.mp4` is accepted
too, in the folder itself or in a `train/` / `test/` subfolder) -> `manifest.csv` (key
`<id>_<start:06d>`, label, split, the clip's path) -> `mmsample shard` -> shards with one `mp4`
field (video and its audio track; read with `pipelines.presets.preset("vggsound", split)`).

Classes are every label of the CSV, sorted (309 in the public file), so label ids do not depend
on which clips were downloaded. Many VGGSound videos have disappeared from YouTube (BMMAL
downloaded 180,911 of the train and 14,843 of the test clips): the run prints how many clips are
missing and lists them with the undecodable ones; without `--skip-bad` no shard holding one is
written, with it they are left out and counted in `skipped.jsonl`.

    python -m pipelines.vggsound --csv vggsound.csv --clips DIR --out shards/vggsound \
        [--part I/N] [--skip-bad] [--workers W] [--samples-per-shard S]
"""

from __future__ import annotations

import argparse
import csv
from collections.abc import Sequence
from pathlib import Path

from mmsample.errors import ManifestError
from mmsample.storage.location import local_path

from .recipe import Clip, Outcome, add_shard_arguments, find_file, run

__all__ = ["clip_names", "main", "read_csv", "shard"]

SPLITS = ("train", "test")


def clip_names(youtube_id: str, start: int) -> list[str]:
    """The file names a downloader gives the clip: zero-padded start first, then unpadded."""
    return [f"{youtube_id}_{start:06d}.mp4", f"{youtube_id}_{start}.mp4"]


def read_csv(path: Path) -> list[tuple[str, int, str, str]]:
    """`vggsound.csv` -> [(youtube_id, start, label, split)]; ManifestError naming the line
    for a line without 4 cells, a start that is not a whole number of seconds, or a split
    other than train / test."""
    rows = []
    with open(path, newline="", encoding="utf-8") as f:
        for line, cells in enumerate(csv.reader(f), 1):
            if not cells:
                continue
            if len(cells) != 4:
                raise ManifestError(
                    f"{path}, line {line}: expected 4 cells (youtube id, start second, label, "
                    f"split); got {cells}"
                )
            yid, start, label, split = (c.strip() for c in cells)
            try:
                second = int(start)
            except ValueError:
                raise ManifestError(
                    f"{path}, line {line}: the start second must be an integer; got {start!r}"
                ) from None
            if split not in SPLITS:
                raise ManifestError(
                    f"{path}, line {line}: the split must be one of {list(SPLITS)}; got {split!r}"
                )
            rows.append((yid, second, label, split))
    if not rows:
        raise ManifestError(f"{path}: no clips listed")
    return rows


def clips(csv_path: Path, folder: Path) -> tuple[list[Clip], list[str]]:
    """The clips of the CSV with their files (missing ones under the padded name), and the
    sorted class list."""
    rows = read_csv(csv_path)
    out = []
    for yid, start, label, split in rows:
        path = find_file([folder, folder / split], clip_names(yid, start))
        out.append(Clip(f"{yid}_{start:06d}", label, split, {"mp4": path}))
    return out, sorted({label for _, _, label, _ in rows})


def shard(csv_path: Path, folder: Path, args: argparse.Namespace) -> Outcome:
    """Shard VGGSound as `main` does (args: out, samples_per_shard, workers, part, skip_bad,
    quiet)."""
    listed, classes = clips(csv_path, folder)
    return run(listed, args, columns=["mp4"], classes=classes)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m pipelines.vggsound", description=__doc__)
    parser.add_argument("--csv", type=local_path, required=True, help="the public vggsound.csv")
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
