"""`write_report(run_dir)`: `report.md` and PNG plots from the logs of the runs under a folder.

Every number is read from the runs' logs (`mmsample.report.runs`) and computed in
`mmsample.report.balance`: per method, fused accuracy and macro-F1, each modality alone in the
fused model, its unimodal ceiling and chance-corrected utilisation, the test Shapley
contribution, the items trained on and the wall time, each with its 95% interval (one seed: a
bootstrap over test clips; several: a t interval over seeds). The sentences comparing a method
with the plain loader are generated from the intervals of the paired differences
(`intervals.compare`), and the report says in which epochs each method acted
(`mmsample.report.activity`). A `notes.md` in the folder is appended verbatim.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .balance import BASELINE, Group, MethodSummary, summarize
from .intervals import LEVEL, RESAMPLES, SEED, Interval, compare, resolution
from .plots import PLOTS
from .runs import Run, group_runs, load_runs

__all__ = [
    "BASELINE",
    "METRICS",
    "ORDER",
    "STATS_NAMES",
    "comparisons",
    "headline",
    "method_stats",
    "write_report",
]

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
    "remix",
)
SCHEDULE_KEYS = (
    "epochs",
    "batch_size",
    "lr",
    "model",
    "mode",
    "num_classes",
    "dus_beta",
    "bss_lambda0",
    "bss_t_grow",
    "bss_interval",
    "smv_warmup",
    "smv_fraction",
    "ogm_alpha",
    "remix_warmup",
    "remix_gamma",
    "world_size",
    "workers",
)
METRICS = {
    "fused acc": "the share of test clips the fused model classifies right.",
    "macro-F1": "the mean over classes of the per-class F1 of the fused predictions (classes "
    "absent from both labels and predictions left out; BalanceBenchmark reports it beside "
    "accuracy).",
    "m alone": "the fused model's accuracy with only modality m's features (the others zeroed): "
    "how well the fused head can use m on its own.",
    "m ceiling": "the accuracy of the same model trained on m alone (the `only-m` run, same "
    "seed and settings): what m can reach by itself.",
    "m utilisation": "(m alone - chance) / (m ceiling - chance), chance = 1/K: the share of "
    "m's own above-chance accuracy the fused model keeps; 1 means m is used as well as a "
    "model trained on m alone, 0 means not above chance (the raw ratio alone / ceiling is "
    "shown beside it).",
    "Shapley m (test)": "modality m's Shapley contribution to the fused test accuracy, with "
    "v(C) = accuracy of the head on subset C (others zeroed); the contributions add up to "
    "fused accuracy minus the accuracy with every modality zeroed.",
    "items trained": "training items over all epochs (SMV adds items, BSS leaves some out).",
    "wall s": "seconds of the whole run: each epoch's set_epoch (scoring and rescoring "
    "passes), training, evaluation and checkpoint.",
    "items/s": "training items per second of the training loop (decode + step), mean over epochs.",
}
"""One sentence per metric of the report (the README repeats them)."""

STATS_NAMES = {"contribution/": "SMV train valuation/"}
"""Stats keys the report shows under another name: SMV's `contribution/<m>` (its training-time
Shapley valuation) is not the test Shapley contribution."""


def _cell(value: Interval | None, digits: int = 3) -> str:
    return "n/a" if value is None else value.text(digits)


def _util_cell(s: MethodSummary, m: str) -> str:
    util, ratio = s.values.get(f"util/{m}"), s.values.get(f"ratio/{m}")
    ceiling = s.values.get(f"ceiling/{m}")
    if ceiling is None or math.isnan(ceiling.point):
        return "n/a"
    if util is None or math.isnan(util.point):
        return "undefined (ceiling not above chance)"
    notes = [] if ratio is None or math.isnan(ratio.point) else [f"raw {ratio.point:.2f}"]
    if util.note:
        notes.append("no interval: " + util.note)
    return util.text(2) + (f" ({'; '.join(notes)})" if notes else "")


def _acted(s: MethodSummary) -> str:
    lines = []
    for run, act in zip(s.runs, s.activity):
        if act is None:
            continue
        tag = f"seed {run.seed}: " if s.seeds > 1 else ""
        lines.append(tag + act.text())
    return "; ".join(lines)


def headline(group: Group) -> list[str]:
    """The headline table (markdown lines): accuracy, macro-F1, each modality alone with its
    utilisation, and when each method acted."""
    if not group.summaries:
        return []
    mods = group.modalities
    cols = ["method", "seeds", "fused acc", "macro-F1"]
    for m in mods:
        cols += [f"{m} alone", f"{m} utilisation"]
    cols.append("acted")
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for s in group.summaries:
        cells = [s.method, str(s.seeds), _cell(s.values["acc"]), _cell(s.values["macro_f1"])]
        for m in mods:
            cells += [_cell(s.values.get(f"alone/{m}")), _util_cell(s, m)]
        cells.append(_acted(s) if s.method != BASELINE else "")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def cost_table(group: Group) -> list[str]:
    """Shapley contributions on the test set, items trained, wall time and items/s."""
    mods = group.modalities
    cols = ["method", *(f"Shapley {m} (test)" for m in mods), "items trained", "wall s", "items/s"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for s in group.summaries:
        cells = [s.method, *(_cell(s.values.get(f"shapley/{m}")) for m in mods)]
        cells += [_cell(s.values["items"], 0), _cell(s.values["wall_s"], 1)]
        cells.append(_cell(s.values["items_per_s"], 1))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def ceiling_table(group: Group) -> list[str]:
    """The unimodal ceiling runs (accuracy of the model trained on m alone, per seed)."""
    if not group.ceilings:
        return []
    lines = ["| modality | seed | ceiling acc |", "|---|---|---|"]
    for (m, seed), run in sorted(group.ceilings.items(), key=lambda kv: (kv[0][0], str(kv[0][1]))):
        lines.append(f"| {m} | {seed} | {run.final('test/acc'):.3f} |")
    return lines


def comparisons(group: Group) -> list[str]:
    """One line per method: fused accuracy, each modality alone and its utilisation against
    plain, in words read off the intervals of the paired differences."""
    if not any(s.method == BASELINE for s in group.summaries):
        return [f"No `{BASELINE}` run: nothing to compare the methods with."]
    out = []
    for s in group.summaries:
        if s.method == BASELINE:
            continue
        parts = []
        for key, label in [("acc", "fused accuracy")] + [
            (f"{k}/{m}", f"{m} {'alone' if k == 'alone' else 'utilisation'}")
            for m in group.modalities
            for k in ("alone", "util")
        ]:
            if key in s.versus:
                said = compare(s.versus[key])
                if said == "not measured" and key.startswith("util/"):
                    said = "undefined (the ceiling is not above chance)"
                parts.append(f"{label}: {said}")
        if not parts:
            parts = ["no paired plain run (same seed) with per-clip outcomes: no comparison"]
        out.append(f"- {s.method}: " + "; ".join(parts) + ".")
    return out


def _interval_note(group: Group) -> str:
    seeds = max(s.seeds for s in group.summaries)
    n = group.clips
    clip = f"{n} test clips, so one clip = {resolution(n):.2g} points" if n else "test clips"
    boot = (
        f"{LEVEL:.0%} percentile bootstrap over the {clip} ({RESAMPLES} resamples, seed "
        f"{SEED}); differences to plain resample both runs' clips with the same indices "
        "(paired), utilisation the ceiling's clips too"
    )
    t = f"mean over seeds with a {LEVEL:.0%} t interval (n - 1 degrees of freedom); differences to plain paired by seed"
    if seeds == 1:
        return f"Intervals in brackets: {boot}."
    if all(s.seeds > 1 for s in group.summaries):
        return f"Intervals in brackets: {t} ({clip})."
    return f"Intervals in brackets: methods with several seeds, {t}; with one seed, {boot}."


def _utilisation_note(group: Group) -> str:
    if group.num_classes is None:
        return (
            "Utilisation is unavailable: the runs record no `num_classes` (K, for chance "
            "1/K) in config.json; `pipelines.train` records it, a `RunLog` takes it as a setting."
        )
    missing = [m for m in group.modalities if not any(k[0] == m for k in group.ceilings)]
    if not missing:
        return f"Chance is 1/K = 1/{group.num_classes} = {group.chance:.3f}."
    return (
        f"Utilisation is unavailable for {', '.join(missing)}: no unimodal ceiling run (config "
        "`method` plain, `only` [m], the same other settings and seed) is among these runs. "
        "Train one per modality and seed beside them, e.g. `python -m pipelines.train --method "
        f"plain --only {missing[0]} --out RUN_DIR/seed0/only-{missing[0]} ...` with the other "
        "options unchanged, then report again."
    )


def method_stats(runs: Sequence[Run]) -> list[str]:
    """Markdown lines: each run's last-epoch `method.stats` (the keys `items/<m>`,
    `batch_size/<m>`, `pacing`, `contribution/<m>` shown as `SMV train valuation/<m>`,
    `reward` that it logged; blank where a method has no such key or logged null)."""
    prefixes = ("items/", "batch_size/", "pacing", "contribution/", "reward")
    keys: list[str] = []
    for run in runs:
        for key in run.stats[-1] if run.stats else {}:
            if key.startswith(prefixes) and key not in keys:
                keys.append(key)
    if not keys:
        return []
    shown = [_shown(k) for k in keys]
    lines = [
        "| method | seed | epoch | " + " | ".join(shown) + " |",
        "|" + "---|" * (3 + len(keys)),
    ]
    for run in sorted(runs, key=lambda r: (_rank(r.method), str(r.seed))):
        if not run.stats or run.ceiling is not None:
            continue
        last = run.stats[-1]
        cells = [run.method, str(run.config.get("seed", "")), str(last.get("epoch", ""))]
        for key in keys:
            value = last.get(key)
            cells.append("" if value is None else f"{float(value):.3f}")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _shown(key: str) -> str:
    for old, new in STATS_NAMES.items():
        if key.startswith(old):
            return new + key[len(old) :]
    return key


def _rank(method: str) -> int:
    return ORDER.index(method) if method in ORDER else len(ORDER)


def _schedule(runs: Sequence[Run]) -> list[str]:
    config: dict[str, Any] = next((r for r in runs if r.ceiling is None), runs[0]).config
    seeds = sorted({r.config.get("seed") for r in runs}, key=str)
    lines = [f"- seeds: {', '.join(str(s) for s in seeds)}"]
    for key in SCHEDULE_KEYS:
        if key in config:
            lines.append(f"- {key}: {config[key]}")
    if "data" in config:
        lines.append(f"- data: `{config['data']}`")
    lines += _decoded(runs)
    decoders = sorted({str(r.config["decoder"]) for r in runs if "decoder" in r.config})
    if len(decoders) == 1:
        lines.append(f"- {decoders[0]}")
    elif decoders:  # runs decoded by different backends: say which used which
        for line in decoders:
            methods = sorted({r.method for r in runs if r.config.get("decoder") == line})
            lines.append(f"- {line} ({', '.join(methods)})")
    return lines


def _decoded(runs: Sequence[Run]) -> list[str]:
    """A line on how often the test set was decoded (`eval/decoded`), when the runs log it."""
    logged = [r for r in runs if any("eval/decoded" in m for m in r.metrics)]
    if not logged:
        return []
    clips = sum(int(m.get("eval/decoded") or 0) for r in logged for m in r.metrics)
    evaluations = sum(len(r.metrics) for r in logged)
    return [
        f"- test set decoding: {clips} clips decoded over {evaluations} evaluations of "
        f"{len(logged)} runs; the decoded test set is kept per process and reused by later "
        "epochs and runs of that process (`eval/decoded` is 0 then)"
    ]


def write_report(run_dir: str | Path, out: str | Path | None = None) -> tuple[Path, list[str]]:
    """Write `report.md` and the PNG plots for the runs under `run_dir` into `out` (default
    `run_dir`). Returns the report's path and its headline table (markdown lines). Runs whose
    settings differ (`group_runs`: epochs, batch size, world size, model, data, ...) are never
    pooled: each group gets its own report in `out/<setting=value,...>/` and `report.md` names
    the differing settings and each group's table; unimodal ceiling runs join the group they
    bound. Raises ValueError when `run_dir` holds no run or a run of an unknown `run_format`."""
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
    group = summarize(runs, ORDER)
    table = headline(group)
    seeds = max(s.seeds for s in group.summaries)
    k = f"K = {group.num_classes} classes" if group.num_classes else "K unknown"
    lines = [
        "# Modality balance report",
        "",
        f"{len(runs)} runs under `{root}`: {len(group.summaries)} methods, up to {seeds} "
        f"seed(s) each, {len(group.ceilings)} unimodal ceiling run(s); {k}. Numbers are the "
        "last epoch's, read from each run's `metrics.jsonl`, `stats.jsonl` and "
        f"`outcomes.jsonl`. {_interval_note(group)} {_utilisation_note(group)}",
        "",
        *table,
        "",
        *cost_table(group),
        "",
        "## What each number means",
        "",
        *(f"- {name}: {text}" for name, text in METRICS.items()),
        "",
        "## Against the plain loader",
        "",
        *comparisons(group),
        "",
        "## Unimodal ceilings",
        "",
        *(ceiling_table(group) or ["No ceiling run among these runs."]),
        "",
        "## What each method did (last epoch, from `stats.jsonl`)",
        "",
        "items/x: items carrying modality x this epoch; batch_size/x: DUS rows of x per batch; "
        "pacing: BSS share of the ids trained on; SMV train valuation/x: SMV's mean Shapley "
        "valuation of x on the training batches (its `contribution/x` stat; not the test "
        "Shapley contribution above).",
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
        path = plot(group, dest)
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
