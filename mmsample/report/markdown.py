"""`write_report(run_dir)`: `report.md` and PNG plots from the logs of the runs under a folder.

Every number in the report is read from the runs' logs (`mmsample.report.runs`): the headline
table shows the last epoch's test metrics (mean ± standard deviation over seeds when a method
has several), the contribution gap (largest minus smallest Shapley contribution), the time
(train + evaluation seconds) and the train loop's items per second. The report states, for
every method, whether it beat the plain loader and how far that can be trusted (one seed: within
unknown noise; several: against the spread). A `notes.md` in the folder is appended verbatim.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .plots import PLOTS
from .runs import Run, Summary, group_runs, load_runs, summarize

__all__ = ["BASELINE", "ORDER", "fmt", "headline", "method_stats", "verdicts", "write_report"]

BASELINE = "plain"
ORDER = (
    "plain",
    "dus",
    "dus-rl",
    "bss",
    "bss-learned",
    "smv",
    "smv-modality",
    "ogmge",
    "ogmge+dus",
)
SCHEDULE_KEYS = (
    "epochs",
    "batch_size",
    "lr",
    "model",
    "dus_beta",
    "bss_lambda0",
    "bss_t_grow",
    "bss_interval",
    "smv_warmup",
    "smv_fraction",
    "ogm_alpha",
    "world_size",
    "workers",
)


def fmt(value: tuple[float, float], digits: int = 3) -> str:
    """`mean` or `mean ± std` with `digits` decimals; "n/a" for NaN."""
    mean, std = value
    if math.isnan(mean):
        return "n/a"
    text = f"{mean:.{digits}f}"
    return text if math.isnan(std) else f"{text} ± {std:.{digits}f}"


def headline(summaries: Sequence[Summary]) -> list[str]:
    """The headline table as markdown lines."""
    if not summaries:
        return []
    modalities = summaries[0].runs[0].modalities
    base = next((s for s in summaries if s.method == BASELINE), None)
    cols = ["method", "seeds", "fused acc"]
    cols += [f"{m} alone" for m in modalities]
    cols += [f"contribution {m}" for m in modalities]
    cols += ["gap", "vs plain", "time s", "items/s"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for s in summaries:
        cells = [s.method, str(s.seeds), fmt(s.values["test/acc"])]
        cells += [fmt(s.values[f"test/acc/{m}"]) for m in modalities]
        cells += [fmt(s.values[f"test/contribution/{m}"]) for m in modalities]
        cells.append(fmt(s.values["gap"]))
        if base is None or s is base:
            cells.append("")
        else:
            cells.append(f"{s.values['test/acc'][0] - base.values['test/acc'][0]:+.3f}")
        cells += [fmt(s.values["time_s"], 1), fmt(s.values["items_per_s"], 1)]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def verdicts(summaries: Sequence[Summary]) -> list[str]:
    """One plain sentence per method about the plain loader."""
    base = next((s for s in summaries if s.method == BASELINE), None)
    if base is None:
        return [f"No `{BASELINE}` run: nothing to compare the methods with."]
    b_mean, b_std = base.values["test/acc"]
    out = []
    for s in summaries:
        if s is base:
            continue
        mean, std = s.values["test/acc"]
        diff = mean - b_mean
        what = f"fused test accuracy {mean:.3f} vs {b_mean:.3f} for plain ({diff:+.3f})"
        if s.seeds < 2 or base.seeds < 2:
            noise = "one seed, so the difference is within unknown noise"
            if diff <= 0:
                out.append(f"- **{s.method} did not beat the plain loader**: {what}; {noise}.")
            else:
                out.append(f"- {s.method}: {what}; {noise}.")
            continue
        spread = max(std, b_std)
        if diff <= 0:
            out.append(f"- **{s.method} did not beat the plain loader**: {what}.")
        elif diff <= spread:
            out.append(
                f"- **{s.method} did not beat the plain loader beyond the spread**: {what}, "
                f"within one standard deviation ({spread:.3f})."
            )
        else:
            out.append(f"- {s.method} beat the plain loader: {what}, more than the spread.")
    return out


STATS_PREFIXES = ("items/", "batch_size/", "pacing", "contribution/", "reward")


def method_stats(runs: Sequence[Run]) -> list[str]:
    """Markdown lines: each run's last-epoch `method.stats` (the keys `items/<m>`,
    `batch_size/<m>`, `pacing`, `contribution/<m>`, `reward` that it logged; blank where a
    method has no such key or logged null)."""
    keys: list[str] = []
    for run in runs:
        for key in run.stats[-1] if run.stats else {}:
            if key.startswith(STATS_PREFIXES) and key not in keys:
                keys.append(key)
    if not keys:
        return []
    lines = [
        "| method | seed | epoch | " + " | ".join(keys) + " |",
        "|" + "---|" * (3 + len(keys)),
    ]
    for run in sorted(runs, key=lambda r: (_rank(r.method), str(r.config.get("seed")))):
        if not run.stats:
            continue
        last = run.stats[-1]
        cells = [run.method, str(run.config.get("seed", "")), str(last.get("epoch", ""))]
        for key in keys:
            value = last.get(key)
            cells.append("" if value is None else f"{float(value):.3f}")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _rank(method: str) -> int:
    return ORDER.index(method) if method in ORDER else len(ORDER)


def _schedule(runs: Sequence[Run]) -> list[str]:
    config: dict[str, Any] = runs[0].config
    seeds = sorted({r.config.get("seed") for r in runs}, key=str)
    lines = [f"- seeds: {', '.join(str(s) for s in seeds)}"]
    for key in SCHEDULE_KEYS:
        if key in config:
            lines.append(f"- {key}: {config[key]}")
    if "data" in config:
        lines.append(f"- data: `{config['data']}`")
    decoders = sorted({str(r.config["decoder"]) for r in runs if "decoder" in r.config})
    if len(decoders) == 1:
        lines.append(f"- {decoders[0]}")
    elif decoders:  # runs decoded by different backends: say which used which
        for line in decoders:
            methods = sorted({r.method for r in runs if r.config.get("decoder") == line})
            lines.append(f"- {line} ({', '.join(methods)})")
    return lines


def write_report(run_dir: str | Path, out: str | Path | None = None) -> tuple[Path, list[str]]:
    """Write `report.md` and the PNG plots for the runs under `run_dir` into `out` (default
    `run_dir`). Returns the report's path and its headline table (markdown lines). Runs whose
    settings differ (`group_runs`: epochs, batch size, world size, model, data, ...) are never
    pooled: each group gets its own report in `out/<setting=value,...>/` and `report.md` names
    the differing settings and each group's table. Raises ValueError when `run_dir` holds no
    run or a run of an unknown `run_format`."""
    root = Path(run_dir)
    runs = load_runs(root)
    dest = Path(out) if out is not None else root
    dest.mkdir(parents=True, exist_ok=True)
    groups = group_runs(runs)
    if len(groups) == 1:
        return _write_group(runs, root, dest)
    differ = sorted(groups[0][0])
    lines = [
        "# Modality balance report",
        "",
        f"{len(runs)} runs under `{root}` differ in {', '.join(differ)}: they are not pooled. "
        f"Each of the {len(groups)} groups below is reported on its own.",
        "",
    ]
    table: list[str] = []
    for values, members in groups:
        name = ", ".join(f"{k}={values[k]}" for k in differ)
        folder = "_".join(f"{k}={values[k]}" for k in differ).replace("/", "-")
        report, group_table = _write_group(members, root, dest / folder)
        lines += [f"## {name}", "", *group_table, "", f"[report]({folder}/{report.name})", ""]
        table += [f"{name}:", *group_table]
    notes = root / "notes.md"
    if notes.exists():
        lines += ["", notes.read_text().rstrip()]
    report = dest / "report.md"
    report.write_text("\n".join(lines).rstrip() + "\n")
    return report, table


def _write_group(runs: Sequence[Run], root: Path, dest: Path) -> tuple[Path, list[str]]:
    """`report.md` and plots in `dest` for runs of equal settings; its path and headline."""
    dest.mkdir(parents=True, exist_ok=True)
    summaries = summarize(runs, ORDER)
    table = headline(summaries)
    seeds = max(s.seeds for s in summaries)
    lines = [
        "# Modality balance report",
        "",
        f"{len(runs)} runs under `{root}`: {len(summaries)} methods, up to {seeds} seed(s) "
        "each. Numbers are the last epoch's, read from each run's `metrics.jsonl` and "
        "`stats.jsonl`; `x alone` is the fused head on modality x with the other features "
        "zeroed; contribution is the Shapley value of each modality with v(C) = test accuracy "
        "of the head on subset C; gap = largest minus smallest contribution; time = train + "
        "evaluation seconds; items/s = training items per second (decode + step).",
        "",
        *table,
        "",
        "## Against the plain loader",
        "",
        *verdicts(summaries),
        "",
        "## What each method did (last epoch, from `stats.jsonl`)",
        "",
        "items/x: items carrying modality x this epoch; batch_size/x: DUS rows of x per batch; "
        "pacing: BSS share of the ids trained on; contribution/x: SMV mean Shapley value.",
        "",
        *method_stats(runs),
        "",
        "## Settings (as run)",
        "",
        *_schedule(runs),
        "",
        "## Plots",
        "",
    ]
    for title, plot in PLOTS.items():
        path = plot(summaries, runs, dest)
        if path is None:
            lines.append(f"- {title}: no run logged it.")
        else:
            lines += [f"### {title}", "", f"![{title}]({path.name})", ""]
    notes = root / "notes.md"
    if notes.exists():
        lines += ["", notes.read_text().rstrip()]
    report = dest / "report.md"
    report.write_text("\n".join(lines).rstrip() + "\n")
    return report, table
