"""The round loop on disk: a small JSON state file per active-learning run.

Place in the data flow: `query` -> **state file** (labeled ids per round, strategy, seed, budget,
split) -> readers with `ids=state.labeled()` train on the labeled samples only (no shard
rewrite), or `mmsample subset` writes them out. Saved atomically (a temporary file, then
`os.replace`), so a run interrupted at any point leaves the previous state or the new one, and
continues from there.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

STATE_FORMAT = "mmsample-active/1"


@dataclass
class RoundState:
    """One active-learning run: `rounds[r]` the pool ids labeled in round r (round 0 may be the
    initial labeled set), and the settings that produced them."""

    strategy: str
    seed: int = 0
    budget: int = 0
    split: int = 1
    rounds: list[list[int]] = field(default_factory=list)

    def labeled(self) -> np.ndarray:
        """All labeled ids so far, sorted (int64)."""
        every = [i for r in self.rounds for i in r]
        return np.unique(np.asarray(every, dtype=np.int64))

    def add_round(self, ids: Iterable[int]) -> None:
        """Append a round of newly labeled ids; ValueError if one repeats or is labeled."""
        new = [int(i) for i in ids]
        seen = set(self.labeled().tolist())
        counts = Counter(new)
        again = sorted({i for i in new if i in seen or counts[i] > 1})
        if again:
            raise ValueError(
                f"RoundState.add_round: ids {again[:8]} are already labeled or repeated; a round "
                "adds new ids only."
            )
        self.rounds.append(new)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": STATE_FORMAT,
            "strategy": self.strategy,
            "seed": self.seed,
            "budget": self.budget,
            "split": self.split,
            "rounds": self.rounds,
            "num_labeled": len(self.labeled()),
        }

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the state atomically (tmp file in the same folder + os.replace)."""
        out = Path(path)
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=1))
        os.replace(tmp, out)
        return out

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> RoundState:
        """Read a state file; ValueError naming the file when it is not one."""
        data = _read_json(path)
        if not isinstance(data, dict) or data.get("format") != STATE_FORMAT:
            raise ValueError(
                f"{path} is not an mmsample active-learning state file (format "
                f"{STATE_FORMAT!r}); write one with `mmsample query --out`."
            )
        return cls(
            strategy=str(data["strategy"]),
            seed=int(data["seed"]),
            budget=int(data["budget"]),
            split=int(data.get("split", 1)),
            rounds=[[int(i) for i in r] for r in data["rounds"]],
        )


def _read_json(path: str | os.PathLike[str]) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err})") from err


def read_ids(path: str | os.PathLike[str]) -> np.ndarray:
    """Sorted unique int64 ids from a state file (all labeled ids), a JSON list of ids, or a
    text file with one id a line. ValueError naming the file otherwise."""
    p = Path(path)
    text = p.read_text()
    stripped = text.lstrip()
    if stripped.startswith("{"):
        return RoundState.load(p).labeled()
    if stripped.startswith("["):
        data = _read_json(p)
        if not all(isinstance(i, int) and not isinstance(i, bool) for i in data):
            raise ValueError(f"{p}: a JSON id list must hold integers only.")
        return np.unique(np.asarray(data, dtype=np.int64))
    try:
        values = [int(line) for line in text.split()]
    except ValueError as err:
        raise ValueError(
            f"{p}: not a state file, a JSON list of ids or one integer id a line ({err})."
        ) from err
    return np.unique(np.asarray(values, dtype=np.int64))
