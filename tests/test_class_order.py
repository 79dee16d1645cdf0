"""Issue 7 item 11: integer labels are their own class index (0..max, empty classes kept and
listed); any other order is said in the summary with how to give one."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest

from mmsample.cli import main
from mmsample.decoding import Text
from mmsample.sharding import shard_dataset
from mmsample.shards import IndexedDataset
from mmsample.shards.format import Manifest

# rows' labels, in a shuffled order so that row order cannot give the class order
TWELVE = [7, 0, 11, 3, 10, 1, 2, 9, 4, 8, 6, 5, 10, 2]


def stored_classes(out: Path) -> dict[str, int]:
    """key -> the class index stored in its .cls member, read with plain tarfile."""
    found = {}
    for path in sorted(out.glob("*.tar")):
        with tarfile.open(path) as tar:
            for m in tar:
                if m.name.endswith(".cls"):
                    f = tar.extractfile(m)
                    assert f is not None
                    found[m.name.split(".")[0]] = int(f.read())
    return found


def write_table(path: Path, labels: list[object]) -> Path:
    if path.suffix == ".csv":
        lines = ["key,label,txt"] + [f"r{i},{label},row {i}" for i, label in enumerate(labels)]
        path.write_text("\n".join(lines) + "\n")
    else:
        rows = [{"key": f"r{i}", "label": x, "txt": f"row {i}"} for i, x in enumerate(labels)]
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_labels_0_to_11_are_classes_0_to_11(
    tmp_path: Path, suffix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    src = write_table(tmp_path / f"in{suffix}", list(TWELVE))
    out = tmp_path / "out"
    assert main(["shard", str(src), str(out), "--workers", "1", "--samples-per-shard", "5"]) == 0
    said = capsys.readouterr().out
    assert "classes: 12 classes: every label is an integer, so class i is label i (0..11)" in said
    assert "empty" not in said
    manifest = Manifest.load(out)
    assert manifest.classes == [str(i) for i in range(12)]
    assert manifest.extra["class_order"] == "integer"
    assert stored_classes(out) == {f"r{i}": label for i, label in enumerate(TWELVE)}
    ds = IndexedDataset(out, {"text": Text(byte_ids=True, max_length=4)})
    assert [ds.get(i)["label"] for i in range(len(TWELVE))] == TWELVE
    assert manifest.class_counts() == {str(c): TWELVE.count(c) for c in range(12)}


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_gaps_keep_the_empty_classes_and_list_them(tmp_path: Path, suffix: str) -> None:
    labels: list[object] = [5, 0, 2, 5, 9]
    if suffix == ".csv":
        labels[3] = "005"  # the integer 5 written with leading zeros is class 5
    report = shard_dataset(write_table(tmp_path / f"in{suffix}", labels), tmp_path / "o", workers=1)
    assert report.classes.names == [str(i) for i in range(10)]
    assert report.classes.empty == ["1", "3", "4", "6", "7", "8"]
    assert report.classes.describe().endswith("empty (no row has the label): 1, 3, 4, 6, 7, 8")
    assert stored_classes(tmp_path / "o") == {"r0": 5, "r1": 0, "r2": 2, "r3": 5, "r4": 9}
    assert Manifest.load(tmp_path / "o").class_counts() == {
        **{str(i): 0 for i in range(10)},
        "0": 1,
        "2": 1,
        "5": 2,
        "9": 1,
    }


@pytest.mark.parametrize(
    ("labels", "names", "rule", "says"),
    [
        ([3, -1, 0, -20], ["-20", "-1", "0", "3"], "numeric", "numeric order (-20, -1, 0, 3)"),
        ([3, 200_000, 1], ["1", "3", "200000"], "numeric", "numeric order"),
        (["2", "10", "cat"], ["10", "2", "cat"], "text", "sorted order of the label text"),
        (["b", "B", "a"], ["B", "a", "b"], "text", "sorted order of the label text (B, a, b)"),
        (["1.5", "2"], ["1.5", "2"], "text", "sorted order of the label text"),
    ],
)
def test_other_labels_say_the_order_used_and_how_to_choose(
    tmp_path: Path, labels: list[object], names: list[str], rule: str, says: str
) -> None:
    src = write_table(tmp_path / "in.csv", labels)
    report = shard_dataset(src, tmp_path / "o", workers=1)
    assert report.classes.names == names and report.classes.rule == rule
    assert says in report.classes.describe()
    assert "give --classes FILE" in report.classes.describe()
    assert stored_classes(tmp_path / "o") == {
        f"r{i}": names.index(str(label)) for i, label in enumerate(labels)
    }


def test_given_classes_are_used_as_given(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = write_table(tmp_path / "in.csv", [1, 0, 1])
    (tmp_path / "classes.txt").write_text("1\n0\nunused\n")
    argv = ["shard", str(src), str(tmp_path / "o"), "--workers", "1",
            "--classes", str(tmp_path / "classes.txt")]  # fmt: skip
    assert main(argv) == 0
    assert "3 classes in the order given (1, 0, unused); empty (no row has the label): unused" in (
        capsys.readouterr().out
    )
    assert stored_classes(tmp_path / "o") == {"r0": 0, "r1": 1, "r2": 0}


def test_integer_labels_from_100000_on_are_ordered_numerically() -> None:
    """The cap the README and module docstring now state: 0..99,999 are class indices (99,999
    gives 100,000 classes), a label of 100,000 (an id used as a label) makes the order numeric."""
    from mmsample.sharding.classes import order_classes

    wide = order_classes(["3", "99999"])
    assert (wide.rule, len(wide.names), wide.names[99999]) == ("integer", 100_000, "99999")
    ids = order_classes(["100000", "5", "-0", "100000"])
    assert (ids.rule, ids.names) == ("numeric", ["0", "5", "100000"])
