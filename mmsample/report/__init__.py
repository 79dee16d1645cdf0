"""Reports from training logs: `write_report(run_dir)` writes `report.md` and PNG plots from the
runs' logs (docs/run_format.md): per method, fused accuracy and macro-F1, each modality alone in
the fused model, its unimodal ceiling and chance-corrected utilisation, the test Shapley
contribution, items trained and wall time, with 95% intervals (`intervals`: a bootstrap over
test clips for one seed, a t interval over seeds), the paired difference to the plain loader
in words read off those intervals, and the epochs in which each method acted (`activity`).
`mmsample report RUN_DIR` on the command line; `RunLog` writes a run folder from your own loop.
Runs of unlike settings are reported apart, never pooled (`group_runs`); unimodal ceiling runs
join the runs they bound. Plots need matplotlib."""

from .activity import ACTIVITY, Activity, activity
from .balance import Group, MethodSummary, summarize
from .intervals import Interval, bootstrap, compare, paired_difference, t_interval, utilisation
from .markdown import comparisons, headline, write_report
from .outcomes import Outcomes, load_outcomes
from .runlog import RunLog, data_fingerprint
from .runs import RUN_FORMAT, Run, group_runs, load_run, load_runs, settings
from .scores import macro_f1

__all__ = [
    "ACTIVITY",
    "RUN_FORMAT",
    "Activity",
    "Group",
    "Interval",
    "MethodSummary",
    "Outcomes",
    "Run",
    "RunLog",
    "activity",
    "bootstrap",
    "compare",
    "comparisons",
    "data_fingerprint",
    "group_runs",
    "headline",
    "load_outcomes",
    "load_run",
    "load_runs",
    "macro_f1",
    "paired_difference",
    "settings",
    "summarize",
    "t_interval",
    "utilisation",
    "write_report",
]
