"""Per-clip test outcomes of a run: `outcomes.jsonl` in the run folder (docs/run_format.md).

Place in the data flow: written after each evaluation (by `pipelines.training.evaluate`'s
loop, or `RunLog.outcomes` from a user's loop), read by the report, which resamples test clips
for its intervals (`mmsample.report.intervals`). One JSON line per epoch:

    {"epoch": 0, "modalities": ["audio", "video"], "ids": [...], "labels": [...],
     "predictions": {"audio": [...], "video": [...], "audio+video": [...], "none": [...]},
     "probes": {"audio": [...], "video": [...]}}

`ids` ascending, each test clip once; `predictions[C]` is the argmax class of the fusion head
on modality subset C (the other modalities' features zeroed), C named by its modalities joined
with "+" in `modalities` order: the full set is the fused prediction; "none" (optional) is the
head on all-zero features, v(empty) of the Shapley value; `probes[m]` (optional) the unimodal
probe of m.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["FILE", "NONE", "Outcomes", "load_outcomes", "subset_name", "write_outcomes"]

FILE = "outcomes.jsonl"
NONE = "none"


def subset_name(mask: int, modalities: Sequence[str]) -> str:
    """The name of subset `mask` (bit j = modality j): its modalities joined with "+", or
    "none" for the empty set."""
    names = [m for j, m in enumerate(modalities) if (mask >> j) & 1]
    return "+".join(names) if names else NONE


@dataclass
class Outcomes:
    """One epoch's per-clip outcomes (see the module docstring): int64 arrays `[N]`."""

    epoch: int
    modalities: list[str]
    ids: np.ndarray
    labels: np.ndarray
    predictions: dict[str, np.ndarray]
    probes: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def fused(self) -> str:
        """The name of the full subset (the fused prediction)."""
        return "+".join(self.modalities)

    def correct(self, subset: str) -> np.ndarray:
        """bool `[N]`: whether the head on `subset` predicts each clip's label."""
        return self.predictions[subset] == self.labels

    def record(self) -> dict[str, Any]:
        """The JSON line."""
        return {
            "epoch": self.epoch,
            "modalities": list(self.modalities),
            "ids": self.ids.tolist(),
            "labels": self.labels.tolist(),
            "predictions": {k: v.tolist() for k, v in self.predictions.items()},
            "probes": {k: v.tolist() for k, v in self.probes.items()},
        }


def _ints(values: ArrayLike, what: str, n: int | None) -> np.ndarray:
    x = np.asarray(values)
    if x.ndim != 1 or not (np.issubdtype(x.dtype, np.integer) or x.size == 0):
        raise ValueError(
            f"outcomes: {what} must be a 1-D array of integers; got {x.dtype} {x.shape}"
        )
    if n is not None and len(x) != n:
        raise ValueError(f"outcomes: {what} has {len(x)} entries; the ids have {n}")
    return x.astype(np.int64)


def check_outcomes(
    epoch: int,
    modalities: Sequence[str],
    ids: ArrayLike,
    labels: ArrayLike,
    predictions: Mapping[str, ArrayLike],
    probes: Mapping[str, ArrayLike] | None = None,
) -> Outcomes:
    """`Outcomes` sorted by id, checked: ValueError naming what is wrong (repeated ids, arrays
    of another length, a missing or unknown subset name, a modality name with "+")."""
    names = list(modalities)
    if len(names) < 2 or any("+" in m or m == NONE or not m for m in names):
        raise ValueError(
            f"outcomes: 'modalities' must name M >= 2 modalities, none empty, 'none' or with "
            f"'+'; got {names}"
        )
    key = _ints(ids, "'ids'", None)
    if len(np.unique(key)) != len(key):
        raise ValueError("outcomes: 'ids' repeats a clip; give each test clip once")
    order = np.argsort(key, kind="stable")
    wanted = {subset_name(c, names) for c in range(1, 1 << len(names))}
    missing, unknown = wanted - set(predictions), set(predictions) - wanted - {NONE}
    if missing or unknown:
        raise ValueError(
            f"outcomes: 'predictions' must hold every non-empty subset of {names} (names "
            f"joined with '+', e.g. {'+'.join(names)!r} for the fused head; 'none' optional); "
            f"missing {sorted(missing)}, unknown {sorted(unknown)}"
        )
    unknown_probes = set(probes or {}) - set(names)
    if unknown_probes:
        raise ValueError(f"outcomes: 'probes' names {sorted(unknown_probes)}, not in {names}")
    n = len(key)
    return Outcomes(
        int(epoch),
        names,
        key[order],
        _ints(labels, "'labels'", n)[order],
        {k: _ints(v, f"predictions[{k!r}]", n)[order] for k, v in predictions.items()},
        {k: _ints(v, f"probes[{k!r}]", n)[order] for k, v in (probes or {}).items()},
    )


def write_outcomes(folder: str | Path, outcomes: Outcomes) -> bool:
    """Append `outcomes` to `folder/outcomes.jsonl` unless that epoch is already there (a
    resumed run repeats none); True if written."""
    path = Path(folder) / FILE
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip() and json.loads(line).get("epoch") == outcomes.epoch:
                return False
    with path.open("a") as f:
        f.write(json.dumps(outcomes.record(), separators=(",", ":")) + "\n")
    return True


def load_outcomes(folder: str | Path) -> dict[int, Outcomes]:
    """`{epoch: Outcomes}` of `folder/outcomes.jsonl` (empty when the run wrote none).
    ValueError naming the file and line of a line that is not a valid record."""
    path = Path(folder) / FILE
    out: dict[int, Outcomes] = {}
    if not path.exists():
        return out
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            r = json.loads(line)
            rec = check_outcomes(
                r["epoch"],
                r["modalities"],
                r["ids"],
                r["labels"],
                r["predictions"],
                r.get("probes"),
            )
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
            raise ValueError(
                f"{path}:{n}: not an outcomes record ({err}); fix or remove it"
            ) from err
        out[rec.epoch] = rec
    return out
