"""Reports from training logs: `write_report(run_dir)` writes `report.md` and PNG plots (fused
and per-modality accuracy, modality contribution over epochs, DUS batch sizes, BSS pacing, SMV
extra items, throughput) from the runs' JSONL logs; `mmsample report RUN_DIR` on the command
line; `RunLog` writes a run folder from your own loop (docs/run_format.md). Runs of unlike
settings are reported apart, never pooled (`group_runs`). Plots need matplotlib."""

from .markdown import headline, verdicts, write_report
from .runlog import RunLog, data_fingerprint
from .runs import RUN_FORMAT, Run, Summary, group_runs, load_run, load_runs, settings, summarize

__all__ = [
    "RUN_FORMAT",
    "Run",
    "RunLog",
    "Summary",
    "data_fingerprint",
    "group_runs",
    "headline",
    "load_run",
    "load_runs",
    "settings",
    "summarize",
    "verdicts",
    "write_report",
]
