"""What the three dataset recipes share: a manifest table -> `mmsample shard` -> one report.

Place in the data flow: a recipe (`pipelines.vggsound`, `.kinetics_sounds`, `.cremad`) turns a
dataset's public layout into `Clip`s; `write_table` writes them as the sharding tool's input CSV
(`key,label,split,<file columns>`), and `run` shards it with `mmsample.sharding.shard_dataset`
(what `mmsample shard` runs: parallel, resumable, `--part i/n`), with the dataset's full class
list so that label ids do not depend on which clips were downloaded. A clip whose file is absent
is listed with the path it should have, so the tool reports it as "file not found"; an
undecodable one as "unreadable". Both end in ONE list (`Outcome.missing`, `Outcome.corrupt`),
an error without `--skip-bad`, counted and skipped with it.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mmsample.sharding import BadRow, BadRowsError, ShardReport, shard_dataset
from mmsample.storage.location import local_path

__all__ = [
    "Clip",
    "Outcome",
    "add_shard_arguments",
    "find_file",
    "parse_part",
    "run",
    "write_table",
]

TABLE = "manifest.csv"
NOT_FOUND = "file not found"


@dataclass(frozen=True)
class Clip:
    """One sample of a dataset: its key, class name, split and a path per file column."""

    key: str
    label: str
    split: str
    files: dict[str, Path] = field(default_factory=dict)


@dataclass
class Outcome:
    """What a recipe run did: the tool's report (None when bad clips stopped it), the clips
    listed, and the bad ones split by reason ("file not found" -> missing, else corrupt)."""

    table: Path
    listed: int
    missing: list[BadRow]
    corrupt: list[BadRow]
    report: ShardReport | None

    @property
    def ok(self) -> bool:
        """True when shards were written (every clip good, or bad ones skipped on request)."""
        return self.report is not None

    def exit_code(self) -> int:
        """Print the summary; 0 when the run finished, 1 when bad clips stopped it (a
        recipe's `main` returns this)."""
        for line in self.lines():
            print(line)
        return 0 if self.ok else 1

    def lines(self) -> list[str]:
        """The summary a recipe prints: counts, then every bad clip, one per line."""
        out = [
            f"clips listed   {self.listed}",
            f"missing        {len(self.missing)} (not downloaded: no file under either name)",
            f"undecodable    {len(self.corrupt)}",
        ]
        for bad in sorted(self.missing + self.corrupt, key=lambda b: b.row):
            out.append("  " + bad.describe())
        if self.report is None:
            out.append(
                "no shard holding a bad clip was written: fix or remove those clips, or pass "
                "--skip-bad to leave them out (counted in skipped.jsonl)"
            )
        else:
            r = self.report
            where = f" (part {r.part[0]}/{r.part[1]})" if r.part[1] > 1 else ""
            out.append(
                f"shards         wrote {len(r.written)}, kept {len(r.kept)}{where}; "
                f"{r.rows - len(r.skipped)} samples, {len(r.skipped)} skipped"
            )
            if r.manifest is None:
                out.append(f"manifest.json  waits for {r.missing} shard(s) of other parts")
        return out


def find_file(folders: Sequence[Path], names: Sequence[str]) -> Path:
    """The first existing `folder / name` (folders outer, names inner); if none exists, the
    first candidate (so a missing clip is reported with the name it should have)."""
    for folder in folders:
        for name in names:
            path = folder / name
            if path.is_file():
                return path
    return folders[0] / names[0]


def write_table(clips: Iterable[Clip], path: Path, columns: Sequence[str]) -> int:
    """Write the sharding tool's input CSV (`key,label,split,*columns`, absolute paths);
    return the number of rows. Written to a private file and renamed, so the parts of a job
    array writing the same table at once never read a half-written one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["key", "label", "split", *columns])
    n = 0
    for clip in clips:
        writer.writerow([clip.key, clip.label, clip.split, *(str(clip.files[c]) for c in columns)])
        n += 1
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    tmp.write_text(buf.getvalue(), encoding="utf-8")
    os.replace(tmp, path)
    return n


def _split_bad(rows: Sequence[BadRow]) -> tuple[list[BadRow], list[BadRow]]:
    missing = [b for b in rows if any(r.startswith(NOT_FOUND) for _, r in b.reasons)]
    corrupt = [b for b in rows if b not in missing]
    return missing, corrupt


def parse_part(text: str) -> tuple[int, int]:
    """`"i/n"` -> (i, n) with 0 <= i < n (argparse type)."""
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--part must be I/N such as 0/4; got {text!r}") from None
    if not 0 <= i < n:
        raise argparse.ArgumentTypeError(f"--part I/N needs 0 <= I < N; got {text!r}")
    return i, n


def add_shard_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every recipe passes on to the sharding tool."""
    parser.add_argument("--out", type=local_path, required=True, help="shard directory (created)")
    parser.add_argument("--samples-per-shard", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=None, help="sharding processes")
    parser.add_argument(
        "--part", type=parse_part, default=(0, 1), metavar="I/N", help="job array part"
    )
    parser.add_argument(
        "--skip-bad", action="store_true", help="leave missing/undecodable clips out, counted"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(
    clips: Sequence[Clip],
    args: argparse.Namespace,
    *,
    columns: Sequence[str],
    classes: Sequence[str],
    fields: dict[str, str] | None = None,
) -> Outcome:
    """Write `<out>/manifest.csv` and shard it; bad clips end in the Outcome, never raised."""
    out = Path(args.out)
    table = out / TABLE
    write_table(clips, table, columns)
    try:
        report = shard_dataset(
            table,
            out,
            samples_per_shard=args.samples_per_shard,
            workers=args.workers,
            part=args.part,
            skip_bad=args.skip_bad,
            classes=list(classes),
            fields=fields,
            progress=not args.quiet,
        )
    except BadRowsError as err:
        missing, corrupt = _split_bad(err.rows)
        return Outcome(table, len(clips), missing, corrupt, None)
    missing, corrupt = _split_bad(report.skipped)
    return Outcome(table, len(clips), missing, corrupt, report)
