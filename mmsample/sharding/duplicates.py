"""Duplicate sample keys of the sharding tool's input table, found with 9 bytes a row.

Place in the data flow: the first pass of `mmsample.sharding.table.read_input` over the table
hands `KeyHashes` each row's key; it keeps a 64-bit hash of each valid key and a flag, nothing
else. Rows whose hashes meet another's are the only candidates; their actual keys, read once
more by the table, decide (`first_rows`), so a duplicate is always reported naming both rows and
a hash collision never is.
"""

from __future__ import annotations

from array import array
from collections.abc import Mapping

import numpy as np

__all__ = ["KeyHashes", "first_rows"]


class KeyHashes:
    """The key hashes of a table's rows, row by row: 8 bytes of hash and 1 of flag a row."""

    def __init__(self) -> None:
        self._hashes = array("q")
        self._valid = bytearray()

    def add(self, key: str | None) -> None:
        """Record the next row's key (None: the row has no valid key, so it duplicates none)."""
        self._hashes.append(hash(key) if key is not None else 0)
        self._valid.append(key is not None)

    def __len__(self) -> int:
        return len(self._valid)

    def candidates(self) -> np.ndarray:
        """The rows (int64 `[k]`, ascending) whose valid key hashes like another valid row's:
        every row of a duplicated key is among them (and, rarely, rows of a hash collision)."""
        if not self._valid:
            return np.zeros(0, dtype=np.int64)
        hashes = np.frombuffer(self._hashes, dtype=np.int64)
        valid = np.frombuffer(self._valid, dtype=np.uint8).astype(bool)
        ordered = hashes[valid]
        ordered.sort()
        twice = ordered[1:][ordered[1:] == ordered[:-1]]
        del ordered
        if not len(twice):
            return np.zeros(0, dtype=np.int64)
        return np.flatnonzero(valid & np.isin(hashes, np.unique(twice)))


def first_rows(keys: Mapping[int, str]) -> dict[int, int]:
    """Given the keys of the candidate rows (row -> key), every row whose key an earlier row
    already has -> that first row."""
    first: dict[str, int] = {}
    later: dict[int, int] = {}
    for row in sorted(keys):
        key = keys[row]
        if key in first:
            later[row] = first[key]
        else:
            first[key] = row
    return later
