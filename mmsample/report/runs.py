"""Reading training runs back from their logs: the numbers every report shows.

Place in the data flow: after training. A run folder (written by `pipelines/train.py`, or any
loop that writes the same files) holds `config.json` (at least `method` and `seed`),
`metrics.jsonl` (one JSON object per epoch: `test/acc`, `test/acc/<m>`,
`test/contribution/<m>`, `time/epoch_s`, `throughput/items_per_s`, ...), `stats.jsonl`
(the loader's `method.stats(e)` per epoch: `items/<m>`, `batch_size/<m>`, `pacing`, ...) and
`outcomes.jsonl` (per-clip test predictions, `mmsample.report.outcomes`).
`load_runs(root)` finds every such folder under `root` (root itself included);
`group_runs(runs)` splits them by their settings so that runs which differ are never pooled,
except that a unimodal ceiling run (`Run.ceiling`) joins the runs it bounds.
The format, with its `run_format` version in `config.json`, is docs/run_format.md.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .outcomes import Outcomes, load_outcomes

__all__ = [
    "NOT_SETTINGS",
    "RUN_FORMAT",
    "Run",
    "group_runs",
    "load_run",
    "load_runs",
    "settings",
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
        "no_progress",
        "cache_dir",
        "cache_gb",
        "stop_after",
        "num_classes",
    }
)
"""`config.json` keys that do not make runs unlike: what is compared across (method, seed),
only says where and how a run was executed (progress bars, a simulated preemption), or is a
property of the data that `data_fingerprint` already tells apart (`num_classes`), not what it
trained."""


@dataclass
class Run:
    """One run's logs: `config`, `metrics[e]` and `stats[e]` (dicts keyed as logged) and the
    per-clip `outcomes[e]` (`outcomes.jsonl`; empty when the run wrote none)."""

    path: Path
    config: dict[str, Any]
    metrics: list[dict[str, Any]]
    stats: list[dict[str, Any]]
    outcomes: dict[int, Outcomes] = field(default_factory=dict)

    @property
    def method(self) -> str:
        return str(self.config.get("method", self.path.name))

    @property
    def ceiling(self) -> str | None:
        """The modality m when this run is a unimodal ceiling (config `method` "plain" and
        `only` [m]: the same model trained on m alone), else None."""
        only = self.config.get("only")
        if self.method == "plain" and isinstance(only, list) and len(only) == 1:
            return str(only[0])
        return None

    @property
    def seed(self) -> Any:
        return self.config.get("seed")

    @property
    def last_outcomes(self) -> Outcomes | None:
        """The outcomes of the last logged epoch (None when not written)."""
        if not self.metrics:
            return None
        return self.outcomes.get(int(self.metrics[-1].get("epoch", -1)))

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
    return Run(
        folder, config, _jsonl(metrics), _jsonl(folder / "stats.jsonl"), load_outcomes(folder)
    )


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


def _comparable(run: Run) -> dict[str, Any]:
    """`settings(run)` less `only` for a ceiling run and for a run of every modality (None), so
    a ceiling meets the runs it bounds."""
    out = settings(run)
    if run.ceiling is not None or out.get("only") is None:
        out.pop("only", None)
    return out


def _key(values: dict[str, Any]) -> str:
    return json.dumps(values, sort_keys=True, default=str)


def group_runs(runs: Sequence[Run]) -> list[tuple[dict[str, Any], list[Run]]]:
    """Split `runs` into groups of equal `settings`, in first-seen order. Each group comes with
    the settings that tell it apart from the other groups (`{}` when there is one group);
    a setting a run does not record counts as its own value (None). A unimodal ceiling run
    (`Run.ceiling`) joins the group whose other settings equal its own; with no such group it
    stays in a group of its own settings (`only` included)."""
    mains = {_key(_comparable(r)) for r in runs if r.ceiling is None}
    groups: dict[str, list[Run]] = {}
    for run in runs:
        key = _key(_comparable(run))
        if run.ceiling is not None and key not in mains:
            key = _key(settings(run))
        groups.setdefault(key, []).append(run)
    members = list(groups.values())
    firsts = [next((r for r in g if r.ceiling is None), g[0]) for g in members]
    keys = sorted({k for r in firsts for k in settings(r)})
    differ = [
        k for k in keys if len({json.dumps(settings(r).get(k), default=str) for r in firsts}) > 1
    ]
    return [({k: settings(r).get(k) for k in differ}, g) for r, g in zip(firsts, members)]
