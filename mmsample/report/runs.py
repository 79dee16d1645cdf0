"""Reading training runs back from their logs: the numbers every report shows.

Place in the data flow: after training. A run folder (written by `pipelines/train.py`, or any
loop that writes the same files) holds `config.json` (at least `method` and `seed`),
`metrics.jsonl` (one JSON object per epoch: `test/acc`, `test/acc/<m>`,
`test/contribution/<m>`, `time/epoch_s`, `throughput/items_per_s`, ...) and `stats.jsonl`
(the loader's `method.stats(e)` per epoch: `items/<m>`, `batch_size/<m>`, `pacing`, ...).
`load_runs(root)` finds every such folder under `root` (root itself included);
`group_runs(runs)` splits them by their settings so that runs which differ are never pooled.
The format, with its `run_format` version in `config.json`, is docs/run_format.md.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "NOT_SETTINGS",
    "RUN_FORMAT",
    "Run",
    "Summary",
    "group_runs",
    "load_run",
    "load_runs",
    "mean_std",
    "settings",
    "summarize",
]

RUN_FORMAT = 1
"""The run folder format version this reader knows (`config.json`'s `run_format`; a folder
without the field is read as version 1)."""

NOT_SETTINGS = frozenset(
    {
        "method",
        "seed",
        "out",
        "workers",
        "device",
        "checkpoint_every",
        "trace",
        "run_format",
        "decoder",
    }
)
"""`config.json` keys that do not make runs unlike: what is compared across (method, seed) or
only says where and how a run was executed, not what it trained."""


@dataclass
class Run:
    """One run's logs: `config`, `metrics[e]` and `stats[e]` (dicts keyed as logged)."""

    path: Path
    config: dict[str, Any]
    metrics: list[dict[str, Any]]
    stats: list[dict[str, Any]]

    @property
    def method(self) -> str:
        return str(self.config.get("method", self.path.name))

    @property
    def modalities(self) -> list[str]:
        """Modality names, in log order (from the `test/acc/<m>` keys)."""
        last = self.metrics[-1] if self.metrics else {}
        return [k.split("/", 2)[2] for k in last if k.startswith("test/acc/")]

    def final(self, key: str) -> float:
        """`key` of the last logged epoch (NaN if absent or null)."""
        value = self.metrics[-1].get(key) if self.metrics else None
        return math.nan if value is None else float(value)

    def total(self, key: str) -> float:
        """Sum of `key` over the logged epochs (NaN if absent)."""
        values = [m.get(key) for m in self.metrics]
        if not values or any(v is None for v in values):
            return math.nan
        return float(sum(values))  # type: ignore[arg-type]

    def series(self, key: str, source: str = "metrics") -> list[tuple[int, float]]:
        """`(epoch, value)` of `key` over the epochs that logged it, from metrics or stats."""
        rows = self.metrics if source == "metrics" else self.stats
        return [
            (int(r["epoch"]), float(r[key]))
            for r in rows
            if r.get(key) is not None and "epoch" in r
        ]


def _jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as err:
            raise ValueError(
                f"{path}:{n}: not a JSON line ({err}); fix or remove the line"
            ) from err
    return sorted(rows, key=lambda r: int(r.get("epoch", 0)))


def load_run(path: str | Path) -> Run:
    """The run in folder `path`. Raises ValueError when it holds no `metrics.jsonl` or its
    `config.json` names a `run_format` other than `RUN_FORMAT`."""
    folder = Path(path)
    metrics = folder / "metrics.jsonl"
    if not metrics.exists():
        raise ValueError(f"{folder} is not a run folder: it has no metrics.jsonl")
    config_path = folder / "config.json"
    config = json.loads(config_path.read_text()) if config_path.exists() else {}
    version = config.get("run_format", RUN_FORMAT)
    if version != RUN_FORMAT:
        raise ValueError(
            f"{config_path} has run_format {version!r}; this mmsample reads run_format "
            f"{RUN_FORMAT} only (docs/run_format.md): update mmsample or rewrite the run"
        )
    return Run(folder, config, _jsonl(metrics), _jsonl(folder / "stats.jsonl"))


def load_runs(root: str | Path) -> list[Run]:
    """Every run folder under `root` (root included), sorted by path. Raises ValueError when
    there is none."""
    base = Path(root)
    if not base.is_dir():
        raise ValueError(f"The 'run_dir' argument {base} is not a folder.")
    folders = sorted({p.parent for p in base.rglob("metrics.jsonl")})
    runs = [load_run(f) for f in folders]
    runs = [r for r in runs if r.metrics]
    if not runs:
        raise ValueError(
            f"{base} holds no training run (no non-empty metrics.jsonl below it); train one "
            "with `python -m pipelines.train --out DIR ...` first."
        )
    return runs


def settings(run: Run) -> dict[str, Any]:
    """What the run trained with: its `config.json` less `NOT_SETTINGS` (epochs, batch size,
    world size, model, data, method knobs: whatever the writer recorded)."""
    return {k: v for k, v in run.config.items() if k not in NOT_SETTINGS}


def group_runs(runs: Sequence[Run]) -> list[tuple[dict[str, Any], list[Run]]]:
    """Split `runs` into groups of equal `settings`, in first-seen order. Each group comes with
    the settings that tell it apart from the other groups (`{}` when there is one group);
    a setting a run does not record counts as its own value (None)."""
    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(json.dumps(settings(run), sort_keys=True, default=str), []).append(run)
    members = list(groups.values())
    keys = sorted({k for g in members for k in settings(g[0])})
    differ = [
        k
        for k in keys
        if len({json.dumps(settings(g[0]).get(k), default=str) for g in members}) > 1
    ]
    return [({k: settings(g[0]).get(k) for k in differ}, g) for g in members]


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (NaN std for fewer than two values)."""
    vals = [v for v in values if not math.isnan(v)]
    if not vals:
        return math.nan, math.nan
    mean = sum(vals) / len(vals)
    if len(vals) < 2:
        return mean, math.nan
    return mean, math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1))


@dataclass
class Summary:
    """One method over its seeds: `values[key] = (mean, std)` of the final-epoch metrics plus
    `gap` (largest minus smallest contribution), `time_s` (train + eval seconds) and
    `items_per_s` (mean over epochs and seeds)."""

    method: str
    seeds: int
    runs: list[Run]
    values: dict[str, tuple[float, float]] = field(default_factory=dict)


def _gap(run: Run) -> float:
    c = [run.final(f"test/contribution/{m}") for m in run.modalities]
    return max(c) - min(c) if c else math.nan


def summarize(runs: Sequence[Run], order: Sequence[str] = ()) -> list[Summary]:
    """Group runs by method (in `order` first, then by name) and summarise each group."""
    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(run.method, []).append(run)
    names = [m for m in order if m in groups] + sorted(m for m in groups if m not in order)
    out = []
    for name in names:
        group = groups[name]
        s = Summary(name, len(group), group)
        keys = ["test/acc"]
        for m in group[0].modalities:
            keys += [f"test/acc/{m}", f"test/contribution/{m}"]
        for key in keys:
            s.values[key] = mean_std([r.final(key) for r in group])
        s.values["gap"] = mean_std([_gap(r) for r in group])
        s.values["time_s"] = mean_std(
            [r.total("time/epoch_s") + r.total("time/eval_s") for r in group]
        )
        rates = [v for r in group for _, v in r.series("throughput/items_per_s")]
        s.values["items_per_s"] = mean_std(rates)
        out.append(s)
    return out
