"""Byte ranges: adjacent requests coalesced into one, and a coalesced read cut back apart.

Place in the data flow: between the indexed reader's next K samples (`mmsample.storage.remote`)
and the range requests sent for them. Pure numpy; no I/O.
"""

from __future__ import annotations

import numpy as np

__all__ = ["coalesce", "split_read"]


def coalesce(starts: np.ndarray, ends: np.ndarray, gap: int, max_bytes: int) -> list[np.ndarray]:
    """Group byte ranges `[starts[i], ends[i])` (int64 `[n]`, any order) into requests: ranges
    sorted by start join the current group while the hole before them is at most `gap` bytes
    and the group stays within `max_bytes` (a single larger range is its own group). Returns
    the groups as arrays of positions into `starts`, each sorted by start; every position is in
    exactly one group. `gap` 0 joins only touching ranges (a tar's consecutive samples)."""
    starts = np.asarray(starts, dtype=np.int64)
    ends = np.asarray(ends, dtype=np.int64)
    if len(starts) != len(ends):
        raise ValueError(f"coalesce: {len(starts)} starts but {len(ends)} ends")
    if gap < 0 or max_bytes < 1:
        raise ValueError(f"coalesce: gap must be >= 0 and max_bytes >= 1; got {gap}, {max_bytes}")
    order = np.argsort(starts, kind="stable")
    groups: list[list[int]] = []
    lo = hi = 0
    for pos in order.tolist():
        s, e = int(starts[pos]), int(ends[pos])
        if groups and s - hi <= gap and max(hi, e) - lo <= max_bytes:
            groups[-1].append(pos)
            hi = max(hi, e)
        else:
            groups.append([pos])
            lo, hi = s, e
    return [np.asarray(g, dtype=np.int64) for g in groups]


def split_read(data: bytes, base: int, starts: np.ndarray, ends: np.ndarray) -> list[bytes]:
    """Cut `data`, the bytes read from offset `base`, into the ranges `[starts[i], ends[i])`
    (absolute offsets inside `[base, base + len(data)]`); a range past the end of `data` comes
    back short (the caller names the truncation)."""
    view = memoryview(data)
    return [bytes(view[int(s) - base : int(e) - base]) for s, e in zip(starts, ends)]
