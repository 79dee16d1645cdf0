"""The `mmsample` command: shard a table, rebuild indexes, inspect a dataset, query and subset
an active-learning pool, report on training runs, and say which decoder runs (`doctor`).

Place in the data flow: the user's entry point to the sharding tool (`cli_shard`), the dataset
report (`mmsample.inspect`), active learning (`mmsample.active.command`) and the run report
(`cli_report`). Each subcommand parses its arguments, calls one library function and prints the
result; errors print one clear message (naming the command-line flag, not the library's
parameter) and give a non-zero exit status. Building the parser imports no torch: the library
is imported when a command runs, so `mmsample --help` is quick.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from .cli_report import add_report_command, run_report
from .cli_shard import (
    add_shard_commands,
    describe_dataset,
    local_path,
    positive_int,
    run_index,
    run_shard,
)
from .errors import ManifestError, SampleError

__all__ = ["COMMANDS", "DESCRIPTION", "STRATEGY_NAMES", "build_parser", "main"]

DESCRIPTION = (
    "Data-side balancing for multimodal learning: shard a table into WebDataset tars, inspect "
    "a dataset, pick the samples to label next, and report on training runs. "
    "`mmsample COMMAND --help` describes each command."
)
# `mmsample.active.STRATEGIES`, named here so the help needs no torch import (tests/test_cli.py
# checks they are the registry's names; an unknown name is refused from the registry itself).
STRATEGY_NAMES = ("badge", "bald", "bmmal", "coreset", "entropy", "margin", "random")


def _cmd_inspect(args: argparse.Namespace) -> int:
    import json

    from .inspect import format_report, inspect_dataset

    report = inspect_dataset(args.dir, sample_id=args.id, tokenizer=args.tokenizer)
    print(json.dumps(report, indent=1) if args.json else format_report(report))
    return 0


def _cmd_doctor(args: argparse.Namespace) -> int:
    import json

    from .decoding.backends.diagnosis import doctor_facts, doctor_report

    print(json.dumps(doctor_facts(), indent=1) if args.json else doctor_report())
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
        parts=args.parts,
        seed=args.seed,
        batch_size=args.batch_size,
        device=args.device,
        progress=not args.quiet,
    )
    print(text)
    print(
        f"wrote {args.out}: round {len(state.rounds) - 1}, {len(state.labeled())} labeled ids "
        f"in all ({state.strategy}, budget {state.budget}, {state.split} pool part(s))"
    )
    return 0


def _cmd_subset(args: argparse.Namespace) -> int:
    from .active.rounds import read_ids
    from .active.subset import write_subset

    manifest = write_subset(
        args.shards, read_ids(args.ids), args.out, samples_per_shard=args.samples_per_shard
    )
    print(f"subset {describe_dataset(manifest, Path(args.out))}")
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "shard": run_shard,
    "index": run_index,
    "inspect": _cmd_inspect,
    "query": _cmd_query,
    "subset": _cmd_subset,
    "report": run_report,
    "doctor": _cmd_doctor,
}


def _add_inspect_command(sub: argparse._SubParsersAction) -> None:
    inspect = sub.add_parser(
        "inspect",
        help="summary, class counts and decoded shapes of one sample",
        description="Print the number of samples, shards and bytes, the fields, the class "
        "counts and the shape and dtype of every decoded modality of one sample.",
    )
    inspect.add_argument(
        "dir", help="the shard folder (manifest.json), or a URL: s3://bucket/prefix, https://..."
    )
    inspect.add_argument(
        "--id", type=int, default=None, metavar="N", help="sample id (default: the first)"
    )
    inspect.add_argument(
        "--tokenizer", type=local_path, metavar="PATH", help="tokenizer directory for text fields"
    )
    inspect.add_argument("--json", action="store_true", help="print the report as JSON")


def _add_query_command(sub: argparse._SubParsersAction) -> None:
    query = sub.add_parser(
        "query",
        help="active learning: pick the pool samples to label next",
        description="One pass of the model over the pool (the shards' --split), then a query "
        "strategy picks BUDGET unlabeled ids; prints per-class counts and the mean modality "
        "contribution of the picks and writes a state file (every round's labeled ids) to "
        "--out. A budget over the pool's unlabeled samples is refused before the pass.",
    )
    query.add_argument("shards", help="the pool's shard folder, or a URL (s3://...)")
    query.add_argument(
        "--model",
        required=True,
        metavar="MODULE:FUNCTION",
        help="a function returning the model (features(batch), head(x), .modalities) or a "
        "pair (model, modalities)",
    )
    query.add_argument(
        "--strategy",
        default="bmmal",
        metavar="NAME",
        help=f"the query strategy, one of {', '.join(STRATEGY_NAMES)} (default bmmal)",
    )
    query.add_argument(
        "--budget", type=positive_int, required=True, metavar="B", help="ids to pick this round"
    )
    query.add_argument(
        "--labeled", type=local_path, metavar="FILE", help="a state file or id list of labeled ids"
    )
    query.add_argument(
        "--out", type=local_path, required=True, metavar="FILE", help="the state file to write"
    )
    query.add_argument(
        "--split",
        default=None,
        metavar="NAME",
        help="the dataset split to pool from (default: 'train' when the shards have splits, "
        "else every sample)",
    )
    query.add_argument(
        "--parts",
        type=positive_int,
        default=1,
        metavar="S",
        help="the paper's pool splitting: S random parts, budget/S picks each (default 1: exact)",
    )
    query.add_argument(
        "--seed", type=int, default=0, help="a new run's seed (a continued run keeps its own)"
    )
    query.add_argument(
        "--batch-size",
        type=positive_int,
        default=64,
        metavar="N",
        help="samples per batch of the pool pass (default 64)",
    )
    query.add_argument(
        "--device", default="cpu", help="where the pool pass runs: cpu, cuda, cuda:1, ..."
    )
    query.add_argument("--quiet", action="store_true", help="no progress bar")


def _add_subset_command(sub: argparse._SubParsersAction) -> None:
    subset = sub.add_parser(
        "subset",
        help="write the samples of an id set (a state file's labeled ids) as a new shard set",
        description="Copy the samples whose ids IDS lists (a `query` state file: every labeled "
        "id; a JSON list; or one id a line) from SHARDS into OUT, keys and ids kept.",
    )
    subset.add_argument("shards", help="the source shard folder, or a URL (s3://...)")
    subset.add_argument(
        "ids", type=local_path, help="a state file, a JSON id list or one id a line"
    )
    subset.add_argument("out", type=local_path, help="output directory (created)")
    subset.add_argument(
        "--samples-per-shard",
        type=positive_int,
        default=None,
        metavar="S",
        help="samples per tar shard (default: as the source)",
    )


def _add_doctor_command(sub: argparse._SubParsersAction) -> None:
    doctor = sub.add_parser(
        "doctor",
        help="which decoder runs here: backends, versions, FFmpeg libraries, torch threads",
        description="Print the decoder backends (torchcodec, PyAV, decord, the built-in wave "
        "reader) with their versions, the one each modality uses by default, the system FFmpeg "
        "libraries found, torch's version and threads, and the fix for each missing piece. "
        "Always exits 0: it is a report.",
    )
    doctor.add_argument("--json", action="store_true", help="print the report as JSON")


def _parsers() -> tuple[argparse.ArgumentParser, argparse._SubParsersAction]:
    parser = argparse.ArgumentParser(prog="mmsample", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_shard_commands(sub)
    _add_inspect_command(sub)
    _add_query_command(sub)
    _add_subset_command(sub)
    add_report_command(sub)
    _add_doctor_command(sub)
    return parser, sub


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the `mmsample` command and its subcommands."""
    return _parsers()[0]


_PARAMETER = re.compile(r"The '(\w+)' (?:parameter|argument)")


def name_the_flags(message: str, usage: str) -> str:
    """`message` led by the command-line flags of the library parameters it names: "The
    'samples_per_shard' parameter ..." -> "--samples-per-shard: The 'samples_per_shard' ...",
    for each flag that appears in the subcommand's `usage`."""
    flags = []
    for name in _PARAMETER.findall(message):
        flag = "--" + name.replace("_", "-")
        if re.search(rf"{re.escape(flag)}(?![\w-])", usage) and flag not in flags:
            flags.append(flag)
    return f"{', '.join(flags)}: {message}" if flags else message


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `mmsample` command with `argv` (default: sys.argv[1:]); return the exit status.
    A library error that names a parameter is printed with the flag that sets it."""
    parser, sub = _parsers()
    args = parser.parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (ManifestError, SampleError, ValueError, OSError) as err:
        text = name_the_flags(str(err), sub.choices[args.command].format_usage())
        print(f"mmsample {args.command}: error: {text}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"mmsample {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
