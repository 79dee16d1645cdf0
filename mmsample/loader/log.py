"""StatsLog: each epoch's `method.stats(epoch)` appended to a JSONL file (the report reads it).

Place in the data flow: method -> **log** (main process of rank 0, once per epoch, at the
loader's `set_epoch`). An epoch already in the file is not written again (a resumed run).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any


class StatsLog:
    """Append one JSON object per epoch to `path` (created with its folder if absent)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._logged: set[int] = set()
        if self.path.exists():
            for line in self.path.read_text().splitlines():
                if line.strip():
                    epoch = json.loads(line).get("epoch")
                    if isinstance(epoch, int):
                        self._logged.add(epoch)

    def write(self, epoch: int, record: dict[str, Any]) -> bool:
        """Append `{"epoch": epoch, **record}` unless epoch is already logged; True if written.
        NaN and infinities are written as null (strict JSON)."""
        if epoch in self._logged:
            return False
        clean = {
            k: (None if isinstance(v, float) and not math.isfinite(v) else v)
            for k, v in record.items()
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as f:
            f.write(json.dumps({"epoch": epoch, **clean}, sort_keys=True) + "\n")
        self._logged.add(epoch)
        return True
