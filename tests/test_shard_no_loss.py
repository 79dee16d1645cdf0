"""Issue 7 item 1: without --skip-bad the sharding tool never drops a row, wherever the bad row
lies (first row of a shard, last, the only row, every row of a part), with any number of worker
processes, under --part and on a rerun that resumes an earlier output."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import numpy as np
import pytest

from mmsample.cli import main
from mmsample.sharding import BadRowsError, shard_dataset
from mmsample.shards.format import Manifest
from mmsample.testing import encode_npy, moving_square_clip

NOT_MEDIA = b"hello\n"  # a 6-byte text file given a media extension


def stored_ids(out: Path) -> list[int]:
    ids = []
    for path in sorted(out.glob("*.tar")):
        with tarfile.open(path) as tar:
            for member in tar:
                if member.name.endswith(".id"):
                    f = tar.extractfile(member)
                    assert f is not None
                    ids.append(int(f.read()))
    return sorted(ids)


def npy_table(tmp: Path, n: int, bad: set[int]) -> Path:
    """CSV `key,label,npy` of n rows; the rows in `bad` point at a text file named .npy."""
    (tmp / "m").mkdir(exist_ok=True)
    lines = ["key,label,npy"]
    for i in range(n):
        path = tmp / "m" / f"{i}.npy"
        path.write_bytes(NOT_MEDIA if i in bad else encode_npy(np.full(2, i, np.float32)))
        lines.append(f"k{i},c{i % 2},m/{i}.npy")
    (tmp / "in.csv").write_text("\n".join(lines) + "\n")
    return tmp / "in.csv"


def test_issue_input_first_row_unreadable_mp4_stops_the_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "bad.mp4").write_bytes(NOT_MEDIA)
    (tmp_path / "good.mp4").write_bytes(moving_square_clip(1, frames=4, size=16))
    src = tmp_path / "in.csv"
    src.write_text("key,label,mp4\nfirst,a,bad.mp4\nsecond,b,good.mp4\n")
    out = tmp_path / "out"
    assert main(["shard", str(src), str(out), "--workers", "1", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "1 bad row(s)" in err and "row 0 (line 2, key 'first'): mp4: unreadable" in err
    assert not list(out.glob("*.tar")) and not (out / "manifest.json").exists()
    assert [json.loads(x)["row"] for x in (out / "bad_rows.jsonl").read_text().splitlines()] == [0]
    # as the second row the same file stops the run the same way
    src.write_text("key,label,mp4\nsecond,b,good.mp4\nfirst,a,bad.mp4\n")
    with pytest.raises(BadRowsError) as caught:
        shard_dataset(src, out, workers=1)
    assert [(b.row, b.key) for b in caught.value.rows] == [(1, "first")]
    # asked for, the skip is counted and listed: 1 stored + 1 skipped = 2 rows
    report = shard_dataset(src, out, workers=1, skip_bad=True)
    assert report.manifest is not None and report.manifest.skipped == 1
    assert stored_ids(out) == [0]


# (rows, bad rows, samples per shard, workers, part): 3 rows a shard, shard s = rows 3s..3s+2
POSITIONS = {
    "first row of the first shard": (7, {0}, 3, 1, (0, 1)),
    "first row of a later shard": (7, {3}, 3, 1, (0, 1)),
    "last row of a shard": (7, {5}, 3, 1, (0, 1)),
    "last row of the table": (7, {6}, 3, 1, (0, 1)),
    "the only row of a one-row shard": (3, {1}, 1, 1, (0, 1)),
    "the only row of the table": (1, {0}, 3, 1, (0, 1)),
    "every row of a shard": (7, {3, 4, 5}, 3, 1, (0, 1)),
    "first rows of two shards, 2 workers": (9, {0, 3}, 3, 2, (0, 1)),
    "first row of a shard of part 1/2": (9, {3}, 3, 1, (1, 2)),
    "every row of part 1/2": (6, {3, 4, 5}, 3, 1, (1, 2)),
}


@pytest.mark.parametrize("case", sorted(POSITIONS))
def test_a_bad_row_is_never_dropped_whatever_its_position(tmp_path: Path, case: str) -> None:
    n, bad, per_shard, workers, part = POSITIONS[case]
    src = npy_table(tmp_path, n, bad)
    out = tmp_path / "out"
    mine = [s for s in range(-(-n // per_shard)) if s % part[1] == part[0]]
    rows_of = {s: set(range(s * per_shard, min(n, (s + 1) * per_shard))) for s in mine}
    with pytest.raises(BadRowsError) as caught:
        shard_dataset(src, out, samples_per_shard=per_shard, workers=workers, part=part)
    expected_bad = sorted(bad & set().union(*rows_of.values()))
    assert [b.row for b in caught.value.rows] == expected_bad
    clean = [s for s in mine if not rows_of[s] & bad]
    assert sorted(p.name for p in out.glob("*.tar")) == [f"shard-{s:06d}.tar" for s in clean]
    assert stored_ids(out) == sorted(r for s in clean for r in rows_of[s])
    assert not (out / "manifest.json").exists()
    # with --skip-bad every row of the part is either stored or listed as skipped, never both
    report = shard_dataset(
        src, out, samples_per_shard=per_shard, workers=workers, part=part, skip_bad=True
    )
    assert [b.row for b in report.skipped] == expected_bad
    mine_rows = set().union(*rows_of.values())
    assert stored_ids(out) == sorted(mine_rows - bad)


def test_a_rerun_never_keeps_a_shard_that_lost_a_row(tmp_path: Path) -> None:
    src = npy_table(tmp_path, 6, set())
    out = tmp_path / "out"
    shard_dataset(src, out, samples_per_shard=3, workers=1)
    assert stored_ids(out) == list(range(6))
    # row 3 (first of shard 1) becomes unreadable: the rerun stops, shard 1 is gone, shard 0 kept
    (tmp_path / "m" / "3.npy").write_bytes(NOT_MEDIA)
    with pytest.raises(BadRowsError) as caught:
        shard_dataset(src, out, samples_per_shard=3, workers=1)
    assert [b.row for b in caught.value.rows] == [3]
    assert stored_ids(out) == [0, 1, 2] and not (out / "manifest.json").exists()
    # an output written with --skip-bad is not taken as done by a run without it
    shard_dataset(src, out, samples_per_shard=3, workers=1, skip_bad=True)
    assert Manifest.load(out).skipped == 1
    with pytest.raises(BadRowsError) as caught:
        shard_dataset(src, out, samples_per_shard=3, workers=1)
    assert [b.row for b in caught.value.rows] == [3]
    assert not (out / "manifest.json").exists()
