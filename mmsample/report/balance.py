"""The report's numbers per method: accuracy, macro-F1, each modality alone, its unimodal
ceiling and utilisation, test Shapley contribution, items trained, wall time; with intervals
and the paired difference to the plain loader.

Place in the data flow: after training, inside the report, between the run logs
(`mmsample.report.runs`, `outcomes`) and the text and plots (`markdown`, `plots`).

Definitions (docs/report_metrics.md): `alone_m` is the fused head on modality m with the other
features zeroed; `ceiling_m` the fused test accuracy of the unimodal ceiling run of m (config
`method` "plain", `only` [m], same other settings and seed: `Run.ceiling`); utilisation
`u_m = (alone_m - 1/K) / (ceiling_m - 1/K)` (`intervals.utilisation`, K = config
`num_classes`), with the raw ratio `alone_m / ceiling_m` beside it. Intervals: a method with
one seed gets a percentile bootstrap over the test clips of its last epoch (`outcomes.jsonl`;
the ceiling's and plain's clips resampled with the same indices); a method with several seeds
gets the mean and a t interval over seeds, and its differences to plain are paired by seed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .activity import Activity, activity
from .intervals import (
    Interval,
    bootstrap,
    bootstrap_indices,
    paired_difference,
    t_interval,
    utilisation,
)
from .outcomes import Outcomes
from .runs import Run

__all__ = ["BASELINE", "Group", "MethodSummary", "chance_of", "summarize", "utilisation_series"]

BASELINE = "plain"


@dataclass
class MethodSummary:
    """One method over its seeds. `values[key]` (Interval) for "acc", "macro_f1", "alone/<m>",
    "ceiling/<m>", "util/<m>", "ratio/<m>", "shapley/<m>", "items", "wall_s", "items_per_s";
    `versus[key]` the difference to plain for "acc", "alone/<m>", "util/<m>"; `activity` per
    run (None for plain)."""

    method: str
    runs: list[Run]
    values: dict[str, Interval] = field(default_factory=dict)
    versus: dict[str, Interval] = field(default_factory=dict)
    activity: list[Activity | None] = field(default_factory=list)

    @property
    def seeds(self) -> int:
        return len(self.runs)


@dataclass
class Group:
    """A report group's runs split into methods and ceilings, with what the numbers need."""

    summaries: list[MethodSummary]
    ceilings: dict[tuple[str, Any], Run]
    modalities: list[str]
    num_classes: int | None
    clips: int | None
    notes: list[str] = field(default_factory=list)

    @property
    def chance(self) -> float:
        return 1.0 / self.num_classes if self.num_classes else math.nan


def chance_of(runs: Sequence[Run]) -> int | None:
    """K from the runs' config `num_classes` (None when no run records it)."""
    found = {int(r.config["num_classes"]) for r in runs if r.config.get("num_classes")}
    return found.pop() if len(found) == 1 else None


def _point(run: Run, key: str) -> float:
    return run.final(key)


def _run_values(run: Run, ceiling: dict[str, Run | None], chance: float) -> dict[str, float]:
    """The final numbers of one run (no interval)."""
    out = {
        "acc": _point(run, "test/acc"),
        "macro_f1": _point(run, "test/macro_f1"),
        "items": run.total("train/items"),
        "wall_s": _wall(run),
        "items_per_s": float(np.mean([v for _, v in run.series("throughput/items_per_s")]))
        if run.series("throughput/items_per_s")
        else math.nan,
    }
    for m in run.modalities:
        alone = _point(run, f"test/acc/{m}")
        top = ceiling.get(m)
        ceil = _point(top, "test/acc") if top is not None else math.nan
        out[f"alone/{m}"] = alone
        out[f"ceiling/{m}"] = ceil
        out[f"util/{m}"] = float(utilisation(alone, ceil, chance)) if top is not None else math.nan
        out[f"ratio/{m}"] = alone / ceil if top is not None and ceil > 0 else math.nan
        out[f"shapley/{m}"] = _point(run, f"test/contribution/{m}")
    return out


def _wall(run: Run) -> float:
    """Seconds of the whole run: the sum of `time/wall_s` (set_epoch, training, evaluation,
    checkpoint); for logs without it, of `time/set_epoch_s`, `time/epoch_s`, `time/eval_s`."""
    wall = run.total("time/wall_s")
    if not math.isnan(wall):
        return wall
    parts = [run.total(k) for k in ("time/set_epoch_s", "time/epoch_s", "time/eval_s")]
    known = [p for p in parts if not math.isnan(p)]
    return float(sum(known)) if known else math.nan


def _clip_columns(
    out: Outcomes, ceilings: dict[str, Outcomes | None], chance: float
) -> dict[str, tuple[Any, list[np.ndarray]]]:
    """Per statistic: (function of the column means, the per-clip columns)."""
    cols: dict[str, tuple[Any, list[np.ndarray]]] = {
        "acc": (lambda a: a, [out.correct(out.fused)]),
    }
    for m in out.modalities:
        alone = out.correct(m)
        cols[f"alone/{m}"] = (lambda a: a, [alone])
        top = ceilings.get(m)
        if top is not None:
            ceiling = top.correct(top.fused)
            cols[f"ceiling/{m}"] = (lambda c: c, [ceiling])
            cols[f"util/{m}"] = (lambda a, c: utilisation(a, c, chance), [alone, ceiling])
    return cols


def _same_clips(*outs: Outcomes | None) -> bool:
    known = [o for o in outs if o is not None]
    return all(np.array_equal(o.ids, known[0].ids) for o in known)


def _bootstrap_one(
    summary: MethodSummary, base: Run | None, ceilings: dict[str, Run | None], group: Group
) -> None:
    """Intervals of a one-seed method from its last epoch's outcomes (none: points only)."""
    run = summary.runs[0]
    out = run.last_outcomes
    tops = {m: (r.last_outcomes if r is not None else None) for m, r in ceilings.items()}
    if out is None or not _same_clips(out, *tops.values()):
        return
    index = bootstrap_indices(len(out.ids))
    for key, (fn, cols) in _clip_columns(out, tops, group.chance).items():
        summary.values[key] = bootstrap(fn, cols, index)
    plain = base.last_outcomes if base is not None else None
    if plain is None or base is run or not _same_clips(out, plain):
        return
    summary.versus["acc"] = bootstrap(
        lambda a, b: a - b, [out.correct(out.fused), plain.correct(plain.fused)], index
    )
    for m in out.modalities:
        pair = [out.correct(m), plain.correct(m)]
        summary.versus[f"alone/{m}"] = bootstrap(lambda a, b: a - b, pair, index)
        top = tops.get(m)
        if top is not None:
            summary.versus[f"util/{m}"] = bootstrap(
                lambda a, b, c: utilisation(a, c, group.chance) - utilisation(b, c, group.chance),
                [*pair, top.correct(top.fused)],
                index,
            )


def _summarize_method(
    method: str, runs: list[Run], base: dict[Any, Run], group: Group
) -> MethodSummary:
    summary = MethodSummary(method, sorted(runs, key=lambda r: str(r.seed)))
    per_run = []
    for run in summary.runs:
        tops = {m: group.ceilings.get((m, run.seed)) for m in run.modalities}
        per_run.append(_run_values(run, tops, group.chance))
    keys = list(per_run[0])
    for key in keys:
        summary.values[key] = t_interval([v[key] for v in per_run])
    summary.activity = [activity(r) for r in summary.runs]
    if len(summary.runs) == 1:
        run = summary.runs[0]
        tops = {m: group.ceilings.get((m, run.seed)) for m in run.modalities}
        _bootstrap_one(summary, base.get(run.seed), tops, group)
        return summary
    paired = [(v, base[r.seed]) for v, r in zip(per_run, summary.runs) if r.seed in base]
    if method != BASELINE and paired:
        plain_values = []
        for _, b in paired:
            tops = {m: group.ceilings.get((m, b.seed)) for m in b.modalities}
            plain_values.append(_run_values(b, tops, group.chance))
        for key in ("acc", *(k for k in keys if k.startswith(("alone/", "util/")))):
            summary.versus[key] = paired_difference(
                [v[key] for v, _ in paired], [p[key] for p in plain_values]
            )
    return summary


def summarize(runs: Sequence[Run], order: Sequence[str] = ()) -> Group:
    """The group's method summaries (methods in `order` first, then by name), its ceilings
    by (modality, seed), its modalities, K and the number of test clips."""
    ceilings = {(str(r.ceiling), r.seed): r for r in runs if r.ceiling is not None}
    mains = [r for r in runs if r.ceiling is None] or list(runs)
    by_method: dict[str, list[Run]] = {}
    for run in mains:
        by_method.setdefault(run.method, []).append(run)
    names = [m for m in order if m in by_method] + sorted(m for m in by_method if m not in order)
    clips = {int(r.final("test/n")) for r in mains if not math.isnan(r.final("test/n"))}
    group = Group(
        [],
        ceilings,
        mains[0].modalities,
        chance_of(runs),
        clips.pop() if len(clips) == 1 else None,
    )
    base = {r.seed: r for r in by_method.get(BASELINE, [])}
    group.summaries = [_summarize_method(m, by_method[m], base, group) for m in names]
    return group


def utilisation_series(
    run: Run, ceiling: Run | None, modality: str, chance: float
) -> list[tuple[int, float]]:
    """`(epoch, u_m)` over the epochs both runs logged: the fused head on m alone at epoch e
    against the ceiling run's accuracy at the same epoch (same training so far)."""
    if ceiling is None:
        return []
    top = dict(ceiling.series("test/acc"))
    return [
        (e, float(utilisation(a, top[e], chance)))
        for e, a in run.series(f"test/acc/{modality}")
        if e in top
    ]
