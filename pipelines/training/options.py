"""The reference training loop's command line: `python -m pipelines.train --help`.

Place in the data flow: before all of it; the parsed options choose the method, the model, the
reader and the schedules every other module of `pipelines.training` reads.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from mmsample.storage import parse_location
from mmsample.storage.location import local_path

from ..models import MODELS

METHODS = ("plain", "dus", "dus-rl", "bss", "bss-learned", "smv", "smv-modality", "ogmge", "remix")
METHOD_CHOICES = (*METHODS, "ogmge+dus")
LOADERS = ("shards", "wrap")
SCORED = ("bss", "bss-learned", "remix")  # methods that run a scoring pass (by id)


def _number(kind: type, low: float, high: float | None = None, low_open: bool = False) -> Any:
    """An argparse type: a `kind` number in [low, high] (low excluded when `low_open`), refused
    with the rule and the value (argparse names the flag)."""
    rule = f"{'>' if low_open else '>='} {low:g}" + (
        f" and <= {high:g}" if high is not None else ""
    )

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number {rule}; got {text!r}") from None
        if value < low or (low_open and value == low) or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"must be {rule}; got {text!r}")
        return value

    parse.__name__ = kind.__name__  # argparse's "invalid int value" wording
    return parse


POSITIVE, COUNT = _number(int, 1), _number(int, 0)
SHARE = _number(float, 0, 1, low_open=True)  # in (0, 1]
RATE = _number(float, 0, low_open=True)  # > 0


def build_parser() -> argparse.ArgumentParser:
    """The command line (see `pipelines.training`); every option has help text."""
    from .. import training  # the package's docstring is the command's help

    p = argparse.ArgumentParser(prog="python -m pipelines.train", description=training.__doc__)
    p.add_argument(
        "--data",
        required=True,
        help="shard folder (manifest.json): a path or a URL (s3://, gs://, https://; the "
        "backend's own credentials and endpoint, e.g. AWS_PROFILE, AWS_ENDPOINT_URL_S3)",
    )
    p.add_argument("--out", type=local_path, required=True, help="run folder (logs, checkpoints)")
    p.add_argument("--method", choices=METHOD_CHOICES, default="plain", help="the balancing method")
    p.add_argument(
        "--model", choices=sorted(MODELS), default="small", help="the model (pipelines.models)"
    )
    p.add_argument(
        "--preset",
        default=None,
        help="--model resnet18: the papers' input settings (vggsound, kinetics_sounds, cremad)",
    )
    p.add_argument("--size", type=POSITIVE, default=None, help="--model resnet18: frame size (224)")
    p.add_argument(
        "--audio-seconds", type=RATE, default=None, help="--model resnet18: the audio crop"
    )
    p.add_argument("--only", nargs="+", default=None, help="train on these modalities alone")
    p.add_argument("--loader", choices=LOADERS, default="shards", help="balanced_loader or wrap")
    p.add_argument(
        "--mode",
        choices=("streamed", "indexed"),
        default="streamed",
        help="the shard reader: streamed (sequential) or indexed (the plan's exact order)",
    )
    p.add_argument("--epochs", type=POSITIVE, default=5, help="epochs to train (default 5)")
    p.add_argument("--batch-size", type=POSITIVE, default=32, help="rows per batch (default 32)")
    p.add_argument("--lr", type=RATE, default=3e-3, help="Adam's learning rate (default 3e-3)")
    p.add_argument("--seed", type=int, default=0, help="seeds the model, plans and draws")
    p.add_argument("--workers", type=COUNT, default=0, help="DataLoader workers per rank")
    p.add_argument(
        "--threads",
        type=POSITIVE,
        default=None,
        help="torch intra-op threads of the training process (default: torch's, one per core)",
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument(
        "--cache-dir",
        type=local_path,
        default=None,
        help="--data URL: keep whole shards in this local folder (shared by the node's ranks "
        "and workers; mmsample.storage.ShardCache)",
    )
    p.add_argument(
        "--cache-gb",
        type=RATE,
        default=None,
        help="--cache-dir: its size limit in GB (1e9 bytes); least recently used shards go",
    )
    p.add_argument(
        "--train-split", default="train", help="the split to train on ('' for every sample)"
    )
    p.add_argument(
        "--test-split", default="test", help="the split to evaluate on ('' to skip evaluation)"
    )
    p.add_argument("--checkpoint-every", type=COUNT, default=0, help="steps (0: epoch ends only)")
    p.add_argument(
        "--stop-after",
        type=COUNT,
        default=0,
        help="checkpoint and end after N steps of this run (a preemption); rerun to resume",
    )
    p.add_argument("--trace", action="store_true", help="write each batch's ids to trace-r.jsonl")
    p.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bars (each epoch's metrics line still prints)",
    )
    # schedules, shortened to the epochs a demo runs (stated in its report)
    p.add_argument(
        "--dus-beta", type=SHARE, default=0.5, help="DUS: the dominant modality's first share"
    )
    p.add_argument(
        "--bss-lambda0", type=SHARE, default=0.25, help="BSS: the share of epoch 0 (lambda0)"
    )
    p.add_argument(
        "--bss-t-grow",
        type=RATE,
        default=None,
        help="BSS: epochs to reach every sample (default: epochs - 1)",
    )
    p.add_argument(
        "--bss-interval", type=POSITIVE, default=1, help="BSS learned: epochs between rescorings"
    )
    p.add_argument("--smv-warmup", type=COUNT, default=1, help="SMV: epochs of plain training")
    p.add_argument(
        "--smv-fraction", type=SHARE, default=0.2, help="SMV modality level: valuated share"
    )
    p.add_argument("--ogm-alpha", type=RATE, default=0.5, help="OGM-GE: modulation strength")
    p.add_argument(
        "--remix-warmup",
        type=COUNT,
        default=1,
        help="Remix: epochs of joint training before remixing (the authors' 10 of 60)",
    )
    p.add_argument(
        "--remix-gamma",
        type=_number(float, 0),
        default=1.0,
        help="Remix: weight of the assigned modality's head loss (gamma, default 1)",
    )
    return p


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The parsed command line; argparse reports misuse, naming the flag."""
    parser = build_parser()
    return check_args(parser, parser.parse_args(argv))


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.Namespace:
    """`args` if the options agree with each other, else `parser.error` naming the flags."""
    if parse_location(args.data).protocol == "pipe":  # stdout of a command: one pass, in order
        needs = [
            flag
            for flag, on in (
                ("--mode indexed", args.mode == "indexed"),
                ("--loader wrap", args.loader == "wrap"),
                (f"--method {args.method} (its scoring pass)", args.method in SCORED),
                (f"--test-split {args.test_split!r} (evaluation reads by id)", args.test_split),
            )
            if on
        ]
        if needs:
            parser.error(
                f"--data pipe:... is read sequentially only; {', '.join(needs)} need reads "
                "by byte range: give the shards as a URL (s3://, gs://, https://) or a path, "
                "or train with --mode streamed --loader shards --test-split ''"
            )
    if (args.cache_dir is None) != (args.cache_gb is None):
        parser.error("--cache-dir and --cache-gb go together: the folder and its size limit")
    if args.cache_dir is not None and parse_location(args.data).is_local:
        parser.error(
            f"--cache-dir keeps shards read from a URL; --data {args.data} is a local path "
            "(read in place): leave --cache-dir out"
        )
    return args
