"""The sharding tool on real files: CSV/JSONL input, bad rows, skip report, resume, --part,
refusing a different input, never writing outside the output directory, verify and index."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mmsample.cli import main
from mmsample.errors import ManifestError
from mmsample.sharding import BadRowsError, shard_dataset, verify_dataset
from mmsample.shards.format import Manifest, read_index, write_index
from mmsample.testing import encode_npy, encode_wav, moving_square_clip

LABELS = ["owl", "cat", "dog"]  # row i has LABELS[i % 3]; sorted classes: cat, dog, owl
N = 10
S = 3  # samples per shard: rows 0-2, 3-5, 6-8, 9 -> 4 shards
NO_WAV = {2, 7}  # unpaired rows: no audio
NO_TXT = {4}


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Real encoded files: one mp4 (h264), wav and npy per row, in `media/` under a source dir."""
    src = tmp_path_factory.mktemp("src")
    (src / "media").mkdir()
    for i in range(N + 2):
        clip = moving_square_clip(i, frames=4, size=16, seconds_audio=None)
        (src / "media" / f"v{i}.mp4").write_bytes(clip)
        tone = 0.3 * np.sin(2 * np.pi * (200 + 30 * i) * np.arange(4000) / 16000)
        (src / "media" / f"a{i}.wav").write_bytes(encode_wav(tone))
        feats = np.random.default_rng(i).standard_normal(8).astype(np.float32)
        (src / "media" / f"f{i}.npy").write_bytes(encode_npy(feats))
    return src


def table(src: Path, n: int = N) -> list[dict[str, Any]]:
    """Input rows: relative mp4/wav paths, absolute npy paths, inline txt, some cells empty."""
    return [
        {
            "key": f"clip{i}",
            "label": LABELS[i % 3],
            "mp4": f"media/v{i}.mp4",
            "wav": None if i in NO_WAV else f"media/a{i}.wav",
            "txt": None if i in NO_TXT else f"caption {i}, with a comma",
            "npy": str(src / "media" / f"f{i}.npy"),
        }
        for i in range(n)
    ]


def write_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows([{k: ("" if v is None else v) for k, v in r.items()} for r in rows])
    return path


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def read_shards(out: Path) -> dict[int, tuple[str, str, dict[str, bytes]]]:
    """Every sample in out/*.tar read with plain tarfile: id -> (shard, key, {ext: payload})."""
    found: dict[int, tuple[str, str, dict[str, bytes]]] = {}
    for tar_path in sorted(out.glob("*.tar")):
        with tarfile.open(tar_path) as tar:
            groups: dict[str, dict[str, bytes]] = {}
            for m in tar.getmembers():
                key, _, ext = m.name.partition(".")
                f = tar.extractfile(m)
                assert f is not None
                groups.setdefault(key, {})[ext] = f.read()
        for key, members in groups.items():
            sample_id = int(members["id"])
            assert sample_id not in found
            found[sample_id] = (tar_path.name, key, members)
    return found


def snapshot(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def expected_members(
    src: Path, row: dict[str, Any], i: int, classes: list[str]
) -> dict[str, bytes]:
    out = {"id": str(i).encode(), "cls": str(classes.index(row["label"])).encode()}
    for name in ("mp4", "wav", "npy"):
        if row[name]:
            path = Path(row[name])
            out[name] = (path if path.is_absolute() else src / path).read_bytes()
    if row["txt"]:
        out["txt"] = row["txt"].encode()
    return out


def test_csv_shards_hold_every_row_and_jsonl_gives_the_same_tars(
    media: Path, tmp_path: Path
) -> None:
    rows = table(media)
    src_csv = write_csv(media / "in.csv", rows)
    src_jsonl = write_jsonl(media / "in.jsonl", rows)
    assert main(["shard", str(src_csv), str(tmp_path / "a"), "--samples-per-shard", str(S),
                 "--workers", "1", "--quiet"]) == 0  # fmt: skip
    report = shard_dataset(src_jsonl, tmp_path / "b", samples_per_shard=S, workers=1)
    classes = sorted(set(LABELS))
    found = read_shards(tmp_path / "a")
    assert sorted(found) == list(range(N))
    for i, row in enumerate(rows):
        shard, key, members = found[i]
        assert shard == f"shard-{i // S:06d}.tar"
        assert key == row["key"]
        assert members == expected_members(media, row, i, classes)
    for name in [f"shard-{s:06d}.tar" for s in range(4)]:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    manifest = Manifest.load(tmp_path / "a")
    assert manifest.classes == classes
    assert manifest.fields == ["mp4", "npy", "txt", "wav"]
    assert manifest.num_rows == N and manifest.num_samples == N and manifest.skipped == 0
    assert manifest.class_counts() == {c: sum(r["label"] == c for r in rows) for c in classes}
    assert manifest.extra["input_sha256"] == hashlib.sha256(src_csv.read_bytes()).hexdigest()
    assert (
        report.manifest is not None
        and report.manifest.shards == Manifest.load(tmp_path / "b").shards
    )
    with tarfile.open(tmp_path / "a" / "shard-000000.tar") as tar:
        assert {(m.mtime, m.uid, m.gid, m.uname, m.gname) for m in tar} == {(0, 0, 0, "", "")}
    assert verify_dataset(tmp_path / "a") == []


def bad_table(src: Path) -> list[dict[str, Any]]:
    """12 rows, 5 of them bad: a missing file, a truncated mp4, an unknown label, a key with a
    path in it, a duplicate key."""
    rows = table(src, 12)
    clip = (src / "media" / "v4.mp4").read_bytes()
    (src / "media" / "truncated.mp4").write_bytes(clip[: len(clip) // 3])
    rows[1]["mp4"] = "media/gone.mp4"
    rows[4]["mp4"] = "media/truncated.mp4"
    rows[2]["label"] = "emu"
    rows[9]["key"] = "../evil"
    rows[10]["key"] = "clip0"
    return rows


BAD = {1: "mp4", 2: "label", 4: "mp4", 9: "key", 10: "key"}


def test_bad_rows_are_all_listed_and_their_shards_not_written(
    media: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = write_csv(media / "bad.csv", bad_table(media))
    classes = media / "classes.txt"
    classes.write_text("owl\ncat\ndog\n")
    out = tmp_path / "out"
    argv = ["shard", str(src), str(out), "--samples-per-shard", "3", "--workers", "1",
            "--classes", str(classes), "--quiet"]  # fmt: skip
    assert main(argv) == 1
    err = capsys.readouterr().err
    listed = {int(m) for m in re.findall(r"^  row (\d+) \(line", err, re.M)}
    assert listed == set(BAD)
    for row, column in BAD.items():
        assert re.search(rf"^  row {row} \(line {row + 2}, key .*\): .*{column}: ", err, re.M)
    assert "gone.mp4" in err and "truncated.mp4" in err and "'emu'" in err and "../evil" in err
    assert "duplicate key 'clip0' (first in row 0)" in err
    # rows 0-2, 3-5 and 9-11 hold bad rows; only shard 2 (rows 6-8) is clean and written. In
    # shard 1 only the probe finds the bad row (4), after row 3 was already read.
    assert sorted(p.name for p in out.glob("*.tar")) == ["shard-000002.tar"]
    assert not (out / "manifest.json").exists()
    report = [json.loads(line) for line in (out / "bad_rows.jsonl").read_text().splitlines()]
    assert {r["row"]: [c["column"] for c in r["reasons"]] for r in report} == {
        row: [col] for row, col in BAD.items()
    }
    with pytest.raises(BadRowsError) as caught:
        shard_dataset(src, out, samples_per_shard=3, workers=1, classes=["owl", "cat", "dog"])
    assert [b.row for b in caught.value.rows] == sorted(BAD)


def test_skip_bad_accounts_for_every_row(
    media: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = bad_table(media)
    src = write_csv(media / "bad.csv", rows)
    (media / "classes.txt").write_text("owl\ncat\ndog\n")
    out = tmp_path / "out"
    argv = ["shard", str(src), str(out), "--samples-per-shard", "3", "--workers", "1",
            "--classes", str(media / "classes.txt"), "--skip-bad", "--verify", "--quiet"]  # fmt: skip
    assert main(argv) == 0
    stdout = capsys.readouterr().out
    assert f"skipped 5 of 12 rows (see {out / 'skipped.jsonl'})" in stdout
    assert "verify: OK" in stdout
    found = read_shards(out)
    skipped = [json.loads(line) for line in (out / "skipped.jsonl").read_text().splitlines()]
    skipped_rows = {s["row"] for s in skipped}
    assert skipped_rows == set(BAD)
    assert not skipped_rows & set(found)
    assert skipped_rows | set(found) == set(range(12))  # no silent loss
    manifest = Manifest.load(out)
    assert manifest.skipped == 5 and manifest.num_rows == 12 and manifest.num_samples == 7
    for i in found:
        assert found[i][2] == expected_members(media, rows[i], i, ["owl", "cat", "dog"])


def test_resume_rewrites_only_the_missing_or_changed_shard(media: Path, tmp_path: Path) -> None:
    src_dir = tmp_path / "src"
    (src_dir / "media").mkdir(parents=True)
    for p in (media / "media").glob("*"):
        (src_dir / "media" / p.name).write_bytes(p.read_bytes())
    rows = table(src_dir)
    src = write_csv(src_dir / "in.csv", rows)
    out = tmp_path / "out"
    shard_dataset(src, out, samples_per_shard=S, workers=1)
    first = snapshot(out)
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    for name in ("shard-000001.tar", "shard-000001.idx.npy", "shard-000001.json"):
        (out / name).unlink()
    (out / "shard-000001.tar.tmp").write_bytes(b"half a shard from a killed run")
    (out / "shard-000002.idx.npy.tmp").write_bytes(b"stale")
    report = shard_dataset(src, out, samples_per_shard=S, workers=1)
    assert report.written == [1] and report.kept == [0, 2, 3]
    assert snapshot(out) == first  # byte for byte, stale .tmp files gone
    for name, mtime in mtimes.items():
        if name.startswith(("shard-000000", "shard-000002", "shard-000003")):
            assert (out / name).stat().st_mtime_ns == mtime, name
    # a changed source file changes only its own shard
    (src_dir / "media" / "v7.mp4").write_bytes((media / "media" / "v11.mp4").read_bytes())
    report = shard_dataset(src, out, samples_per_shard=S, workers=1)
    assert report.written == [2] and report.kept == [0, 1, 3]
    assert read_shards(out)[7][2]["mp4"] == (media / "media" / "v11.mp4").read_bytes()


def test_parts_and_index_equal_one_parallel_run(
    media: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = write_csv(media / "in.csv", table(media))
    one, parts = tmp_path / "one", tmp_path / "parts"
    shard_dataset(src, one, samples_per_shard=S, workers=2)
    first = shard_dataset(src, parts, samples_per_shard=S, workers=1, part=(0, 2))
    assert first.written == [0, 2] and first.manifest is None and first.missing == 2
    assert not (parts / "manifest.json").exists()
    last = shard_dataset(src, parts, samples_per_shard=S, workers=1, part=(1, 2))
    assert last.written == [1, 3] and last.manifest is not None
    assert snapshot(parts) == snapshot(one)
    # `mmsample index` rebuilds the indexes and manifest.json from the tars and sidecars
    (parts / "manifest.json").unlink()
    for idx in parts.glob("*.idx.npy"):
        idx.unlink()
    assert main(["index", str(parts), "--verify"]) == 0
    assert "verify: OK" in capsys.readouterr().out
    assert snapshot(parts) == snapshot(one)


def test_refuses_a_different_input_unless_overwrite(media: Path, tmp_path: Path) -> None:
    src_a = write_csv(media / "a.csv", table(media))
    src_b = write_csv(media / "b.csv", table(media, 5))
    out = tmp_path / "out"
    shard_dataset(src_a, out, samples_per_shard=S, workers=1)
    before = snapshot(out)
    with pytest.raises(ManifestError, match="--overwrite"):
        shard_dataset(src_b, out, samples_per_shard=S, workers=1)
    with pytest.raises(ManifestError, match="different input or different settings"):
        shard_dataset(src_a, out, samples_per_shard=4, workers=1)
    assert snapshot(out) == before
    report = shard_dataset(src_b, out, samples_per_shard=S, workers=1, overwrite=True)
    assert report.manifest is not None
    assert report.manifest.extra["input_sha256"] == hashlib.sha256(src_b.read_bytes()).hexdigest()
    assert sorted(p.name for p in out.glob("*.tar")) == ["shard-000000.tar", "shard-000001.tar"]
    assert not list(out.glob("shard-00000[23]*"))
    assert sorted(read_shards(out)) == list(range(5))
    assert verify_dataset(out) == []


def test_never_writes_outside_the_output_directory(media: Path, tmp_path: Path) -> None:
    src = write_csv(media / "in.csv", table(media))
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    out = tmp_path / "out"
    out.mkdir()
    for planted in ("shard-000000.tar.tmp", "shard-000001.json.tmp", "manifest.json.tmp",
                    "shard-000003.idx.npy.tmp"):  # fmt: skip
        (out / planted).symlink_to(victim)
    outside = {p: p.read_bytes() for p in media.rglob("*") if p.is_file()}
    report = shard_dataset(src, out, samples_per_shard=S, workers=1)
    assert report.manifest is not None
    assert victim.read_text() == "precious"
    assert {p: p.read_bytes() for p in media.rglob("*") if p.is_file()} == outside
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "victim.txt"]
    allowed = re.compile(r"^(manifest\.json|index-bundle\.npy|shard-\d{6}\.(tar|idx\.npy|json))$")
    assert all(allowed.match(p.name) and not p.is_symlink() for p in out.iterdir())


def test_verify_names_the_shard_and_key_of_a_problem(media: Path, tmp_path: Path) -> None:
    src = write_csv(media / "in.csv", table(media))
    out = tmp_path / "out"
    shard_dataset(src, out, samples_per_shard=S, workers=1)
    index = out / "shard-000001.idx.npy"
    rows = read_index(index)
    rows[1, 1] += 512  # the second sample of shard 1 (row 4) now starts inside its own member
    write_index(index, rows)
    (out / "extra.tar").write_bytes((out / "shard-000000.tar").read_bytes())
    problems = verify_dataset(out, webdataset=False)
    assert {(p.shard, p.key) for p in problems} == {
        ("shard-000001.tar", "clip4"),
        ("extra.tar", None),
    }


def test_index_rebuilds_tars_written_by_another_tool(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import webdataset as wds

    root = tmp_path / "foreign"
    root.mkdir()
    samples = {"a.tar": [(0, 1), (1, 0)], "b.tar": [(3, 1), (4, 1)]}  # id 2 is a hole
    for name, members in samples.items():
        with wds.TarWriter(str(root / name), encoder=False) as sink:
            for sample_id, label in members:
                sink.write({
                    "__key__": f"x{sample_id}",
                    "id": str(sample_id).encode(),
                    "cls": str(label).encode(),
                    "npy": encode_npy(np.full(3, sample_id, dtype=np.float32)),
                    "txt": f"text {sample_id}".encode(),
                })  # fmt: skip
    assert main(["index", str(root)]) == 1
    assert "--classes" in capsys.readouterr().err
    (tmp_path / "classes.txt").write_text("no\nyes\n")
    assert main(["index", str(root), "--classes", str(tmp_path / "classes.txt"), "--verify"]) == 0
    manifest = Manifest.load(root)
    assert [s.name for s in manifest.shards] == ["a.tar", "b.tar"]
    assert manifest.num_rows == 5 and manifest.num_samples == 4 and manifest.skipped == 1
    assert manifest.class_counts() == {"no": 1, "yes": 3}
    assert manifest.fields == ["npy", "txt"]
    data = (root / "b.tar").read_bytes()
    for sample_id, start, end in read_index(root / "b.idx.npy").tolist():
        chunk = io.BytesIO(data[start:end] + bytes(1024))
        with tarfile.open(fileobj=chunk) as tar:
            assert tar.getnames() == [f"x{sample_id}.{e}" for e in ("cls", "id", "npy", "txt")]


def test_jsonl_nulls_text_fields_and_malformed_lines(media: Path, tmp_path: Path) -> None:
    lines = [
        json.dumps({"key": "a", "label": 2, "npy": "media/f0.npy", "caption": "two", "txt": None}),
        "",
        "{not json",
        json.dumps(["a", "list"]),
        json.dumps({"key": "d", "label": 1, "caption": "one"}),
        json.dumps({"key": "e", "label": 1, "npy": None, "caption": None}),
    ]
    src = media / "odd.jsonl"
    src.write_text("\n".join(lines) + "\n")
    with pytest.raises(BadRowsError) as caught:
        shard_dataset(src, tmp_path / "x", samples_per_shard=2, workers=1, text_fields=["caption"])
    described = {b.row: (b.line, b.reasons) for b in caught.value.rows}
    assert sorted(described) == [1, 2, 4]  # blank lines are no rows: ids are record numbers
    assert described[1][0] == 3 and "not valid JSON" in described[1][1][0][1]
    assert described[2][0] == 4 and "not a JSON object" in described[2][1][0][1]
    assert described[4][1] == [("row", "carries no modality: every field column is empty")]
    report = shard_dataset(
        src, tmp_path / "y", samples_per_shard=2, workers=1, text_fields=["caption"], skip_bad=True
    )
    # integer labels are their own class index (issue 7 item 11): class 0 is kept, empty
    assert report.manifest is not None and report.manifest.classes == ["0", "1", "2"]
    found = read_shards(tmp_path / "y")
    assert found[0][2] == {
        "id": b"0",
        "cls": b"2",
        "npy": (media / "media" / "f0.npy").read_bytes(),
        "caption.txt": b"two",  # a text column NAME is field NAME.txt,
    }
    assert found[3][2] == {"id": b"3", "cls": b"1", "caption.txt": b"one"}
    assert sorted(found) == [0, 3]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"samples_per_shard": 0}, "'samples_per_shard' parameter must be >= 1"),
        ({"workers": 0}, "'workers' parameter"),
        ({"part": (2, 2)}, "'part' parameter"),
        ({"text_fields": ["caption"]}, "'text_fields' parameter names"),
    ],
)
def test_bad_parameters_are_named(
    media: Path, tmp_path: Path, kwargs: dict[str, Any], message: str
) -> None:
    src = write_csv(media / "in.csv", table(media))
    with pytest.raises(ValueError, match=re.escape(message)):
        shard_dataset(src, tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists()


def test_malformed_tables_are_refused(media: Path, tmp_path: Path) -> None:
    (media / "nolabel.csv").write_text("key,mp4\na,media/v0.mp4\n")
    (media / "badcol.csv").write_text("key,label,Video File\na,x,media/v0.mp4\n")
    (media / "empty.csv").write_text("key,label,mp4\n")
    (media / "rows.txt").write_text("key,label,mp4\n")
    for name, message in [
        ("nolabel.csv", "must name 'key', 'label'"),
        ("badcol.csv", "column 'Video File' cannot be a field"),
        ("empty.csv", "has no rows"),
        ("rows.txt", "must end in .csv or .jsonl"),
        ("missing.csv", "'input' parameter must be an existing file"),
    ]:
        with pytest.raises(ManifestError, match=re.escape(message)):
            shard_dataset(media / name, tmp_path / "out", workers=1)


def test_short_rows_are_bad_rows(media: Path, tmp_path: Path) -> None:
    src = media / "short.csv"
    src.write_text(f"key,label,npy\na,x,{media / 'media' / 'f0.npy'}\nb,y\n")
    with pytest.raises(BadRowsError) as caught:
        shard_dataset(src, tmp_path / "out", workers=1)
    assert [(b.row, b.line, b.reasons[0]) for b in caught.value.rows] == [
        (1, 3, ("row", "has 2 cells; the header has 3"))
    ]
    assert os.listdir(tmp_path / "out") == ["bad_rows.jsonl"]


def test_many_bad_rows_show_twenty_and_report_all(tmp_path: Path) -> None:
    src = tmp_path / "many.csv"
    src.write_text("key,label,txt\n" + "".join(f"bad key {i},x,hello\n" for i in range(25)))
    with pytest.raises(BadRowsError) as caught:
        shard_dataset(src, tmp_path / "out", workers=1)
    message = str(caught.value)
    assert len(re.findall(r"^  row \d+ ", message, re.M)) == 20
    assert "  ... and 5 more" in message
    report = (tmp_path / "out" / "bad_rows.jsonl").read_text().splitlines()
    assert [json.loads(line)["row"] for line in report] == list(range(25))
