"""Reports from training logs: `write_report(run_dir)` writes `report.md` and PNG plots (fused
and per-modality accuracy, modality contribution over epochs, DUS batch sizes, BSS pacing, SMV
extra items, throughput) from the runs' JSONL logs; `mmsample report RUN_DIR` on the command
line. Plots need matplotlib."""

from .markdown import headline, verdicts, write_report
from .runs import Run, Summary, load_run, load_runs, summarize

__all__ = [
    "Run",
    "Summary",
    "headline",
    "load_run",
    "load_runs",
    "summarize",
    "verdicts",
    "write_report",
]
