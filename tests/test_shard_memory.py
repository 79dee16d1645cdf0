"""The sharding tool's memory on big tables: its first pass keeps about 9 bytes a row (no row
objects), its second makes the rows of one shard at a time, and duplicate keys are still found
across the whole table and reported naming both rows, whatever `--part` writes. Memory in bytes
is measured by `tools/bench_shard.py`; these tests check the data kept, not the RSS."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from mmsample.sharding import BadRowsError, duplicates, shard_dataset
from mmsample.sharding.duplicates import KeyHashes, first_rows
from mmsample.sharding.table import order_labels, read_input

ROWS = 50_000


def write_table(path: Path, rows: int, duplicates: dict[int, int] | None = None) -> Path:
    """A CSV of `rows` rows (key, label of 10 classes, inline text); row r of `duplicates`
    takes the key of row duplicates[r]."""
    duplicates = duplicates or {}
    with open(path, "w", encoding="utf-8") as f:
        f.write("key,label,txt\n")
        for i in range(rows):
            f.write(f"k{duplicates.get(i, i):07d},class{i % 10},caption {i} of the table\n")
    return path


def test_the_first_pass_keeps_no_row_objects(tmp_path: Path) -> None:
    path = write_table(tmp_path / "in.csv", ROWS)
    read_input(path)  # warm: imports and caches
    tracemalloc.start()
    table = read_input(path)
    kept, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert table.num_rows == ROWS and not table.duplicates
    assert table.labels == {f"class{i}" for i in range(10)}
    assert not hasattr(table, "rows")
    assert kept < 12 * ROWS + 100_000  # the key hashes: 9 bytes a row
    assert peak < 30 * ROWS + 500_000  # and their sort, once


def test_rows_are_made_one_shard_at_a_time(tmp_path: Path) -> None:
    path = write_table(tmp_path / "in.csv", ROWS)
    table = read_input(path)
    order = order_labels(table, None)
    seen = []
    tracemalloc.start()
    for number, rows in table.shard_rows(range(0, 40, 3), 500, order):
        seen.append((number, rows[0].row, rows[-1].row, len(rows)))
        del rows
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert seen == [(n, n * 500, n * 500 + 499, 500) for n in range(0, 40, 3)]
    assert peak < 2 * 500 * 2_000 + 200_000  # two shards' rows at most, never the table's


@pytest.mark.parametrize("part", [(0, 1), (1, 4), (2, 4)])
def test_duplicate_keys_across_parts_name_both_rows(tmp_path: Path, part: tuple[int, int]) -> None:
    """Row 3,600 repeats row 5's key and row 3,999 row 1,240's: each is reported, naming the
    first row, by the part that writes it, though the first row lies in another part's shard."""
    path = write_table(tmp_path / "in.csv", 4_000, {3_600: 5, 3_999: 1_240})
    out = tmp_path / "out"
    index, count = part
    workers = 2 if count == 1 else 1
    if (9 - index) % count:  # shard 9 (rows 3,600-3,999) is not in this part: nothing to report
        report = shard_dataset(path, out, samples_per_shard=400, workers=workers, part=part)
        assert report.written == list(range(index, 10, count))
        return
    with pytest.raises(BadRowsError) as err:
        shard_dataset(path, out, samples_per_shard=400, workers=workers, part=part)
    assert [(b.row, b.key, b.reasons) for b in err.value.rows] == [
        (3_600, "k0000005", [("key", "duplicate key 'k0000005' (first in row 5)")]),
        (3_999, "k0001240", [("key", "duplicate key 'k0001240' (first in row 1240)")]),
    ]
    lines = err.value.report.read_text().splitlines()
    assert [json.loads(line)["row"] for line in lines] == [3_600, 3_999]


def test_a_hash_collision_is_no_duplicate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_table(tmp_path / "in.csv", 50, {30: 7})
    monkeypatch.setattr(duplicates, "hash", lambda key: 1, raising=False)  # every key collides
    assert read_input(path).duplicates == {30: 7}
    monkeypatch.undo()
    hashes = KeyHashes()
    for key in ("a", None, "b", "a", "c", None):
        hashes.add(key)
    assert hashes.candidates().tolist() == [0, 3]
    assert KeyHashes().candidates().tolist() == []
    # rows whose hashes met: only equal keys count, the first row is named
    assert first_rows({7: "x", 2: "y", 4: "x", 9: "x"}) == {7: 4, 9: 4}
    assert first_rows({1: "p", 5: "q"}) == {}
    assert np.asarray(hashes.candidates()).dtype == np.int64
