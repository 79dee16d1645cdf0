"""The `mmsample report RUN_DIR` subcommand: the report and plots of any run's logs.

Kept apart from `mmsample.cli` so subcommands can be added there independently; `cli` calls
`add_report_command(subparsers)` and dispatches `report` to `run_report`.
"""

from __future__ import annotations

import argparse
from typing import Any

from .cli_shard import local_path

__all__ = ["add_report_command", "run_report"]


def add_report_command(sub: Any) -> None:
    """Add `report` to the `mmsample` subparsers."""
    report = sub.add_parser(
        "report",
        help="report.md and PNG plots from the logs of the training runs under RUN_DIR",
        description="Read every run folder under RUN_DIR (config.json, metrics.jsonl, "
        "stats.jsonl, outcomes.jsonl, as pipelines/train.py writes them; docs/run_format.md) "
        "and write report.md and PNG plots: per method, fused accuracy and macro-F1, each "
        "modality alone and its utilisation against the unimodal ceiling runs (plain, --only "
        "m), test Shapley contributions, items trained and wall time, with 95% intervals "
        "(bootstrap over test clips for one seed, t over seeds), the paired difference to "
        "plain in words read off the intervals, and the epochs each method acted in "
        "(docs/report_metrics.md). Prints the headline table. Runs whose settings differ "
        "(epochs, batch size, world size, data, ...) are never pooled: each group of equal "
        "settings gets its own report, and report.md names the differing settings.",
    )
    report.add_argument(
        "run_dir", type=local_path, help="a run folder, or a folder of run folders (searched below)"
    )
    report.add_argument(
        "--out", type=local_path, default=None, help="output folder (default RUN_DIR)"
    )


def run_report(args: argparse.Namespace) -> int:
    """Write the report; print its headline table and where it is."""
    from .report import write_report

    path, table = write_report(args.run_dir, args.out)
    print("\n".join(table))
    print(f"report: {path}")
    return 0
