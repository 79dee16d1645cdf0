"""The `mmsample` command: `shard`, `index`, `inspect`, `query`, `subset` and `report` (in
`cli_report`).

Place in the data flow: the user's entry point to the sharding tool (`mmsample.sharding.tool`),
the shard check (`mmsample.sharding.verify`) and the dataset report (`mmsample.inspect`). Each
subcommand parses its arguments, calls one library function and prints the result; errors print
one clear message and give a non-zero exit status.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from .cli_report import add_report_command, run_report
from .decoding.image_header import DEFAULT_MAX_PIXELS
from .errors import ManifestError, SampleError
from .sharding.rebuild import rebuild
from .sharding.table import SKIPPED_REPORT, read_classes
from .sharding.tool import shard_dataset
from .sharding.verify import verify_dataset, verify_shards
from .shards.format import MANIFEST, Manifest


def _part(text: str) -> tuple[int, int]:
    i, slash, n = text.partition("/")
    if slash and i.isdigit() and n.isdigit() and 0 <= int(i) < int(n):
        return int(i), int(n)
    raise argparse.ArgumentTypeError(f"must be i/n with 0 <= i < n (e.g. 0/4); got {text!r}")


def _field(text: str) -> tuple[str, str]:
    name, eq, ext = text.partition("=")
    if eq and name and ext:
        return name, ext.lstrip(".").lower()
    raise argparse.ArgumentTypeError(f"must be NAME=EXT (e.g. image=png); got {text!r}")


def _positive(text: str) -> int:
    if text.isdigit() and int(text) >= 1:
        return int(text)
    raise argparse.ArgumentTypeError(f"must be an integer >= 1; got {text!r}")


def _report_problems(problems: Sequence[SampleError], what: str) -> int:
    if not problems:
        print(f"verify: OK ({what}; tarfile and plain webdataset read every sample)")
        return 0
    print(f"verify: {len(problems)} problem(s) in {what}:", file=sys.stderr)
    for p in problems:
        print(f"  {p}", file=sys.stderr)
    return 1


def _describe(manifest: Manifest, root: Path) -> str:
    return (
        f"{root / MANIFEST}: {manifest.num_samples} samples in {len(manifest.shards)} shards, "
        f"{len(manifest.classes)} classes, fields {', '.join(manifest.fields)}"
    )


def _cmd_shard(args: argparse.Namespace) -> int:
    report = shard_dataset(
        args.input,
        args.out,
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
    )
    i, n = report.part
    where = f" (part {i}/{n})" if n > 1 else ""
    print(
        f"wrote {len(report.written)} shard(s), kept {len(report.kept)} from an earlier run{where}"
    )
    print(f"classes: {report.classes.describe()}")
    print("columns:" + "".join(f"\n  {c.describe()}" for c in report.columns))
    if args.skip_bad:
        skipped = len(report.skipped)
        line = f"skipped {skipped} of {report.rows} rows"
        if skipped and report.manifest is not None:
            line += f" (see {report.out / SKIPPED_REPORT})"
        elif skipped:
            line += f" (in the shard sidecars; {SKIPPED_REPORT} comes with {MANIFEST})"
        print(line)
    if report.manifest is None:
        print(
            f"{MANIFEST} not written yet: {report.missing} shard(s) of other parts are not done; "
            f"the last part to finish writes it (or run `mmsample index {report.out}`)"
        )
    else:
        print(_describe(report.manifest, report.out))
    if not args.verify:
        return 0
    if report.manifest is not None:
        return _report_problems(verify_dataset(report.out), f"{len(report.manifest.shards)} shards")
    ds = report.dataset
    _, problems = verify_shards(
        report.out,
        report.infos,
        classes=ds["classes"],
        fields=ds["fields"],
        num_rows=ds["num_rows"],
    )
    return _report_problems(problems, f"the {len(report.infos)} shards of part {i}/{n}")


def _cmd_index(args: argparse.Namespace) -> int:
    manifest = rebuild(args.dir, read_classes(args.classes) if args.classes else None)
    print(f"indexed {_describe(manifest, Path(args.dir))}")
    if args.verify:
        return _report_problems(verify_dataset(args.dir), f"{len(manifest.shards)} shards")
    return 0


def _cmd_inspect(args: argparse.Namespace) -> int:
    from .inspect import format_report, inspect_dataset

    report = inspect_dataset(args.dir, sample_id=args.id, tokenizer=args.tokenizer)
    print(json.dumps(report, indent=1) if args.json else format_report(report))
    return 0


def _cmd_query(args: argparse.Namespace) -> int:
    from .active.command import run_query

    state, text = run_query(
        args.shards,
        args.model,
        args.strategy,
        args.budget,
        args.out,
        labeled=args.labeled,
        split=args.split,
        seed=args.seed,
        batch_size=args.batch_size,
        device=args.device,
        progress=not args.quiet,
    )
    print(text)
    print(
        f"wrote {args.out}: round {len(state.rounds) - 1}, {len(state.labeled())} labeled ids "
        f"in all ({state.strategy}, budget {state.budget}, split {state.split})"
    )
    return 0


def _cmd_subset(args: argparse.Namespace) -> int:
    from .active.rounds import read_ids
    from .active.subset import write_subset

    manifest = write_subset(
        args.shards, read_ids(args.ids), args.out, samples_per_shard=args.samples_per_shard
    )
    print(f"subset {_describe(manifest, Path(args.out))}")
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "shard": _cmd_shard,
    "index": _cmd_index,
    "inspect": _cmd_inspect,
    "query": _cmd_query,
    "subset": _cmd_subset,
    "report": run_report,
}


def _add_shard_command(sub: argparse._SubParsersAction) -> None:
    shard = sub.add_parser(
        "shard",
        help="CSV/JSONL table -> WebDataset tar shards, offset indexes and manifest.json",
        description="Shard a table (columns key, label, then file paths, inline text, a split "
        "and metadata) into OUT. A column of paths ending in one extension EXT becomes field "
        "NAME.EXT (--field NAME=EXT to say so), txt and --text-field columns inline text, a "
        "split column each sample's split, other columns per-sample metadata. Row r gets global "
        "id r. Finished shards are kept when the command is run again.",
    )
    shard.add_argument("input", type=Path, help="the .csv or .jsonl input table")
    shard.add_argument("out", type=Path, help="output directory (created)")
    shard.add_argument(
        "--samples-per-shard", type=_positive, default=1000, metavar="S", help="default 1000"
    )
    shard.add_argument(
        "--workers",
        type=_positive,
        default=None,
        metavar="N",
        help="processes (default min(4, cpus))",
    )
    shard.add_argument(
        "--part",
        type=_part,
        default=(0, 1),
        metavar="I/N",
        help="write only the shards s with s %% N == I",
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
        type=int,
        default=DEFAULT_MAX_PIXELS,
        metavar="N",
        help=f"refuse images over N pixels, read from the header (default {DEFAULT_MAX_PIXELS:,}, "
        "Pillow's; 0: no limit; readers take Image(max_pixels=N))",
    )
    shard.add_argument("--quiet", action="store_true", help="no progress bar")


def _add_column_options(shard: argparse.ArgumentParser) -> None:
    """`mmsample shard`'s options saying what the input table's columns hold."""
    shard.add_argument(
        "--classes",
        type=Path,
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
        type=_field,
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


def _add_index_command(sub: argparse._SubParsersAction) -> None:
    index = sub.add_parser(
        "index",
        help="rebuild offset indexes and manifest.json from the tars in DIR",
        description="Rebuild each tar's offset index and manifest.json from the tars in DIR "
        "(ids and labels from the .id / .cls members), e.g. after `shard --part` jobs.",
    )
    index.add_argument("dir", type=Path)
    index.add_argument("--classes", type=Path, metavar="FILE", help="class names, one a line")
    index.add_argument("--verify", action="store_true", help="re-read every shard afterwards")


def _add_inspect_command(sub: argparse._SubParsersAction) -> None:
    inspect = sub.add_parser(
        "inspect",
        help="summary, class counts and decoded shapes of one sample",
        description="Print the number of samples, shards and bytes, the fields, the class "
        "counts and the shape and dtype of every decoded modality of one sample.",
    )
    inspect.add_argument("dir", type=Path)
    inspect.add_argument(
        "--id", type=int, default=None, metavar="N", help="sample id (default: the first)"
    )
    inspect.add_argument(
        "--tokenizer", type=Path, metavar="PATH", help="tokenizer directory for text fields"
    )
    inspect.add_argument("--json", action="store_true", help="print the report as JSON")


def _add_query_command(sub: argparse._SubParsersAction) -> None:
    from .active.strategies import STRATEGIES

    query = sub.add_parser(
        "query",
        help="active learning: pick the pool samples to label next",
        description="One pass of the model over the pool shards, then a query strategy picks "
        "BUDGET unlabeled ids; prints per-class counts and the mean modality contribution of "
        "the picks and writes a state file (every round's labeled ids) to --out.",
    )
    query.add_argument("shards", type=Path, help="the pool's shard folder")
    query.add_argument(
        "--model",
        required=True,
        metavar="MODULE:FUNCTION",
        help="a function returning the model (features(batch), head(x), .modalities) or a "
        "pair (model, modalities)",
    )
    query.add_argument(
        "--strategy", default="bmmal", metavar="NAME", help=f"one of {sorted(STRATEGIES)}"
    )
    query.add_argument("--budget", type=_positive, required=True, metavar="B")
    query.add_argument(
        "--labeled", type=Path, metavar="FILE", help="a state file or id list of labeled ids"
    )
    query.add_argument("--out", type=Path, required=True, metavar="FILE", help="state file")
    query.add_argument(
        "--split", type=_positive, default=1, metavar="S", help="pool parts (default 1: exact)"
    )
    query.add_argument(
        "--seed", type=int, default=0, help="a new run's seed (a continued run keeps its own)"
    )
    query.add_argument("--batch-size", type=_positive, default=64, metavar="N")
    query.add_argument("--device", default="cpu")
    query.add_argument("--quiet", action="store_true", help="no progress bar")


def _add_subset_command(sub: argparse._SubParsersAction) -> None:
    subset = sub.add_parser(
        "subset",
        help="write the samples of an id set (a state file's labeled ids) as a new shard set",
        description="Copy the samples whose ids IDS lists (a `query` state file: every labeled "
        "id; a JSON list; or one id a line) from SHARDS into OUT, keys and ids kept.",
    )
    subset.add_argument("shards", type=Path)
    subset.add_argument("ids", type=Path)
    subset.add_argument("out", type=Path)
    subset.add_argument("--samples-per-shard", type=_positive, default=None, metavar="S")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the `mmsample` command and its subcommands."""
    parser = argparse.ArgumentParser(prog="mmsample", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_shard_command(sub)
    _add_index_command(sub)
    _add_inspect_command(sub)
    _add_query_command(sub)
    _add_subset_command(sub)
    add_report_command(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `mmsample` command with `argv` (default: sys.argv[1:]); return the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (ManifestError, SampleError, ValueError, OSError) as err:
        print(f"mmsample {args.command}: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"mmsample {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
