"""The reference training loop's command line: `python -m pipelines.train --help`.

Place in the data flow: before all of it; the parsed options choose the method, the model, the
reader and the schedules every other module of `pipelines.training` reads.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from ..models import MODELS

METHODS = ("plain", "dus", "dus-rl", "bss", "bss-learned", "smv", "smv-modality", "ogmge")
METHOD_CHOICES = (*METHODS, "ogmge+dus")
LOADERS = ("shards", "wrap")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line (see `pipelines.training`); ValueError-free: argparse reports misuse."""
    from .. import training  # the package's docstring is the command's help

    p = argparse.ArgumentParser(prog="python -m pipelines.train", description=training.__doc__)
    p.add_argument("--data", type=Path, required=True, help="shard folder (manifest.json)")
    p.add_argument("--out", type=Path, required=True, help="run folder (logs, checkpoints)")
    p.add_argument("--method", choices=METHOD_CHOICES, default="plain")
    p.add_argument("--model", choices=sorted(MODELS), default="small")
    p.add_argument(
        "--preset",
        default=None,
        help="--model resnet18: the papers' input settings (vggsound, kinetics_sounds, cremad)",
    )
    p.add_argument("--size", type=int, default=None, help="--model resnet18: frame size (224)")
    p.add_argument(
        "--audio-seconds", type=float, default=None, help="--model resnet18: the audio crop"
    )
    p.add_argument("--only", nargs="+", default=None, help="train on these modalities alone")
    p.add_argument("--loader", choices=LOADERS, default="shards", help="balanced_loader or wrap")
    p.add_argument("--mode", choices=("streamed", "indexed"), default="streamed")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers per rank")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument("--train-split", default="train")
    p.add_argument("--test-split", default="test", help="'' to skip evaluation")
    p.add_argument("--checkpoint-every", type=int, default=0, help="steps (0: epoch ends only)")
    p.add_argument(
        "--stop-after",
        type=int,
        default=0,
        help="checkpoint and end after N steps of this run (a preemption); rerun to resume",
    )
    p.add_argument("--trace", action="store_true", help="write each batch's ids to trace-r.jsonl")
    p.add_argument("--no-progress", action="store_true")
    # schedules, shortened to the epochs a demo runs (stated in its report)
    p.add_argument("--dus-beta", type=float, default=0.5)
    p.add_argument("--bss-lambda0", type=float, default=0.25)
    p.add_argument("--bss-t-grow", type=float, default=None, help="default: epochs - 1")
    p.add_argument("--bss-interval", type=int, default=1)
    p.add_argument("--smv-warmup", type=int, default=1)
    p.add_argument("--smv-fraction", type=float, default=0.2)
    p.add_argument("--ogm-alpha", type=float, default=0.5)
    args = p.parse_args(argv)
    for name in ("epochs", "batch_size"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1; got {getattr(args, name)}")
    return args
