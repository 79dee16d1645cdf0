"""The `mmsample shard` and `mmsample index` subcommands: a table -> shards, tars -> indexes.

Place in the data flow: the user's entry point to the sharding tool (`mmsample.sharding.tool`)
and the shard check (`mmsample.sharding.verify`). `mmsample.cli` adds the parsers with
`add_shard_commands(subparsers)` and dispatches to `run_shard` / `run_index`. The library is
imported when a command runs, not when the parser is built, so `mmsample --help` starts
without torch.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "SKIPPED_REPORT",
    "add_shard_commands",
    "describe_dataset",
    "positive_int",
    "run_index",
    "run_shard",
]

# The library's values, named here so the help texts need no torch import; tests/test_cli.py
# checks they equal `mmsample.decoding.image_header.DEFAULT_MAX_PIXELS` and
# `mmsample.sharding.table.SKIPPED_REPORT`.
DEFAULT_MAX_PIXELS = 89_478_485
SKIPPED_REPORT = "skipped.jsonl"


def part(text: str) -> tuple[int, int]:
    """`I/N` -> (I, N) with 0 <= I < N (argparse type of `--part`)."""
    i, slash, n = text.partition("/")
    if slash and i.isdigit() and n.isdigit() and 0 <= int(i) < int(n):
        return int(i), int(n)
    raise argparse.ArgumentTypeError(f"must be i/n with 0 <= i < n (e.g. 0/4); got {text!r}")


def field(text: str) -> tuple[str, str]:
    """`NAME=EXT` -> (NAME, ext) (argparse type of `--field`)."""
    name, eq, ext = text.partition("=")
    if eq and name and ext:
        return name, ext.lstrip(".").lower()
    raise argparse.ArgumentTypeError(f"must be NAME=EXT (e.g. image=png); got {text!r}")


def positive_int(text: str) -> int:
    """An integer >= 1 (argparse type)."""
    if text.isdigit() and int(text) >= 1:
        return int(text)
    raise argparse.ArgumentTypeError(f"must be an integer >= 1; got {text!r}")


def local_path(text: str) -> Path:
    """A local path (argparse type): a URL, where the option needs a folder or file on this
    machine, is refused naming it (`mmsample.storage.location.local_path`, imported when the
    arguments are parsed, not when the parser is built)."""
    from .storage.location import local_path as checked

    return checked(text)


def describe_dataset(manifest: Any, root: str | Path) -> str:
    """One line: where the manifest is (a URL without its query string), samples, shards,
    classes and fields."""
    from .shards.format import MANIFEST
    from .storage.location import redact

    where = (
        f"{redact(str(root)).rstrip('/')}/{MANIFEST}" if isinstance(root, str) else root / MANIFEST
    )
    return (
        f"{where}: {manifest.num_samples} samples in {len(manifest.shards)} shards, "
        f"{len(manifest.classes)} classes, fields {', '.join(manifest.fields)}"
    )


def _report_problems(problems: Sequence[Any], what: str) -> int:
    if not problems:
        print(f"verify: OK ({what}; tarfile and plain webdataset read every sample)")
        return 0
    print(f"verify: {len(problems)} problem(s) in {what}:", file=sys.stderr)
    for p in problems:
        print(f"  {p}", file=sys.stderr)
    return 1


def run_shard(args: argparse.Namespace) -> int:
    """`mmsample shard`: write the shards, print what each column became, verify on request.
    A URL `out` is written in a staging folder (`--staging`, default a temporary one) and
    published one shard at a time once all are written (`mmsample.sharding.remote_output`)."""
    from .sharding.remote_output import is_remote, staging_folder
    from .sharding.table import BadRowsError

    if not is_remote(str(args.out)):
        return _shard(args, Path(args.out), None)
    # bad rows: the temporary folder is kept (its shards and report serve the rerun)
    with staging_folder(args.staging, keep_on=(BadRowsError,)) as folder:
        return _shard(args, folder, str(args.out))


def _shard(args: argparse.Namespace, out: Path, url: str | None) -> int:
    from .sharding.table import read_classes
    from .sharding.tool import shard_dataset
    from .sharding.verify import verify_dataset, verify_shards
    from .shards.format import MANIFEST
    from .storage.location import redact

    report = shard_dataset(
        args.input,
        url if url is not None else out,
        samples_per_shard=args.samples_per_shard,
        workers=args.workers,
        part=args.part,
        skip_bad=args.skip_bad,
        classes=read_classes(args.classes) if args.classes else None,
        text_fields=args.text_field,
        fields=dict(args.field),
        meta=args.meta,
        split_column=args.split_column,
        overwrite=args.overwrite,
        max_pixels=args.max_pixels or None,
        progress=not args.quiet and sys.stderr.isatty(),
        staging=out if url is not None else None,
    )
    where_out: str | Path = url if url is not None else report.out
    i, n = report.part
    where = f" (part {i}/{n})" if n > 1 else ""
    published = f" and published them to {redact(url)}" if url is not None else ""
    print(
        f"wrote {len(report.written)} shard(s), kept {len(report.kept)} from an earlier "
        f"run{where}{published}"
    )
    print(f"classes: {report.classes.describe()}")
    print("columns:" + "".join(f"\n  {c.describe()}" for c in report.columns))
    if args.skip_bad:
        skipped = len(report.skipped)
        line = f"skipped {skipped} of {report.rows} rows"
        if skipped and report.manifest is not None:
            line += f" (see {describe_where(where_out, SKIPPED_REPORT)})"
        elif skipped:
            line += f" (in the shard sidecars; {SKIPPED_REPORT} comes with {MANIFEST})"
        print(line)
    if report.manifest is None:
        print(
            f"{MANIFEST} not written yet: {report.missing} shard(s) of other parts are not done; "
            f"the last part to finish writes it (or run `mmsample index "
            f"{redact(str(where_out))}`)"
        )
    else:
        print(describe_dataset(report.manifest, where_out))
    if not args.verify:
        return 0
    if report.manifest is not None and url is None:
        return _report_problems(verify_dataset(report.out), f"{len(report.manifest.shards)} shards")
    ds = report.dataset
    _, problems = verify_shards(
        report.out,
        report.infos,
        classes=ds["classes"],
        fields=ds["fields"],
        num_rows=ds["num_rows"],
    )
    what = "uploaded " if url is not None else ""
    return _report_problems(problems, f"the {len(report.infos)} {what}shards of part {i}/{n}")


def describe_where(root: str | Path, name: str) -> str:
    """File `name` of folder `root` as printed (a URL without its query string)."""
    from .storage.location import redact

    return f"{redact(root).rstrip('/')}/{name}" if isinstance(root, str) else str(root / name)


def run_index(args: argparse.Namespace) -> int:
    """`mmsample index`: rebuild indexes and manifest from the tars; verify on request. The
    tars of a URL folder are downloaded one at a time into a staging folder, each scanned (and
    checked) once and deleted, and the indexes and manifest published
    (`mmsample.sharding.remote_output.index_remote`)."""
    from .sharding.rebuild import rebuild
    from .sharding.remote_output import index_remote, is_remote
    from .sharding.table import read_classes
    from .sharding.verify import verify_dataset

    classes = read_classes(args.classes) if args.classes else None
    if is_remote(str(args.dir)):
        manifest, problems = index_remote(
            str(args.dir), args.staging, verify=args.verify, classes=classes
        )
        print(f"indexed {describe_dataset(manifest, str(args.dir))}")
        if args.verify:
            return _report_problems(problems, f"{len(manifest.shards)} shards")
        return 0
    manifest = rebuild(args.dir, classes)
    print(f"indexed {describe_dataset(manifest, Path(args.dir))}")
    if args.verify:
        return _report_problems(verify_dataset(args.dir), f"{len(manifest.shards)} shards")
    return 0


def add_shard_commands(sub: Any) -> None:
    """Add `shard` and `index` to the `mmsample` subparsers."""
    shard = sub.add_parser(
        "shard",
        help="CSV/JSONL table -> WebDataset tar shards, offset indexes and manifest.json",
        description="Shard a table (columns key, label, then file paths, inline text, a split "
        "and metadata) into OUT. A column of paths ending in one extension EXT becomes field "
        "NAME.EXT (--field NAME=EXT to say so), txt and --text-field columns inline text, a "
        "split column each sample's split, other columns per-sample metadata. Row r gets global "
        "id r. Finished shards are kept when the command is run again. Media cells may be URLs "
        "(s3://, gs://, http(s)://, file://): a missing object is a bad row (--skip-bad skips "
        "it), any other failure (403, bad credentials) stops the run naming the row and URL; "
        "credentials and endpoints come from each backend's own configuration.",
    )
    shard.add_argument(
        "input",
        help="the .csv or .jsonl input table: a path or a URL (s3://, gs://, https://, any "
        "fsspec URL); its file cells may be paths (relative ones against the table's folder) "
        "or URLs, read whole with retries",
    )
    shard.add_argument(
        "out", help="output directory (created), or a URL: s3://bucket/prefix, gs://..."
    )
    shard.add_argument(
        "--samples-per-shard",
        type=positive_int,
        default=1000,
        metavar="S",
        help="samples per tar shard (default 1000)",
    )
    shard.add_argument(
        "--workers",
        type=positive_int,
        default=None,
        metavar="N",
        help="processes (default min(4, cpus))",
    )
    shard.add_argument(
        "--part",
        type=part,
        default=(0, 1),
        metavar="I/N",
        help="write only the shards s with s %% N == I (one job of a job array)",
    )
    shard.add_argument(
        "--skip-bad", action="store_true", help=f"leave bad rows out, listed in {SKIPPED_REPORT}"
    )
    _add_column_options(shard)
    shard.add_argument("--verify", action="store_true", help="re-read every shard afterwards")
    shard.add_argument(
        "--overwrite", action="store_true", help="replace a dataset of a different input in OUT"
    )
    shard.add_argument(
        "--max-pixels",
        type=int,  # a negative limit is refused by shard_dataset, named by its flag
        default=DEFAULT_MAX_PIXELS,
        metavar="N",
        help=f"refuse images over N pixels, read from the header (default {DEFAULT_MAX_PIXELS:,}, "
        "Pillow's; 0: no limit; readers take Image(max_pixels=N))",
    )
    shard.add_argument("--quiet", action="store_true", help="no progress bar")
    shard.add_argument(
        "--staging",
        metavar="DIR",
        help="with a URL --out: the local folder the shards are written in before upload "
        "(default: a temporary one; keep it to resume without re-sharding)",
    )
    index = sub.add_parser(
        "index",
        help="rebuild offset indexes and manifest.json from the tars in DIR",
        description="Rebuild each tar's offset index and manifest.json from the tars in DIR "
        "(ids and labels from the .id / .cls members), e.g. after `shard --part` jobs. DIR may "
        "be a URL (s3://, gs://, any writable fsspec URL): each tar is read once, one at a "
        "time, and the indexes and manifest.json (last) are uploaded beside the tars.",
    )
    index.add_argument(
        "dir", help="the folder of shard-NNNNNN.tar files, or a URL (s3://bucket/prefix)"
    )
    index.add_argument(
        "--staging",
        metavar="DIR",
        help="with a URL: the local folder each tar is downloaded to, one at a time (scanned, "
        "checked, then deleted: room for the largest tar is enough), and the indexes and "
        "manifest.json are written in before upload (default: a temporary one)",
    )
    index.add_argument("--classes", type=local_path, metavar="FILE", help="class names, one a line")
    index.add_argument("--verify", action="store_true", help="re-read every shard afterwards")


def _add_column_options(shard: argparse.ArgumentParser) -> None:
    """`mmsample shard`'s options saying what the input table's columns hold."""
    shard.add_argument(
        "--classes",
        type=local_path,
        metavar="FILE",
        help="class names, one a line: class i is line i+1 (default: integer labels are "
        "their own class index, 0..max; other labels in sorted order)",
    )
    shard.add_argument(
        "--text-field",
        action="append",
        default=[],
        metavar="NAME",
        help="a column holding inline text (txt always does): field NAME.txt; repeatable",
    )
    shard.add_argument(
        "--field",
        action="append",
        type=field,
        default=[],
        metavar="NAME=EXT",
        help="column NAME holds paths of .EXT files: field NAME.EXT (default: the extension of "
        "the cells); repeatable",
    )
    shard.add_argument(
        "--meta",
        action="append",
        default=[],
        metavar="NAME",
        help="column NAME is per-sample metadata (KEY.json); default for columns whose cells "
        "name no media file; repeatable",
    )
    shard.add_argument(
        "--split-column",
        metavar="NAME",
        help="column holding each row's split (default: a column named split); readers take "
        "split='train'",
    )
