"""VGGSound recipe on a tiny stand-in in the public layout: vggsound.csv (no header, quoted
labels with commas) and clips named `<id>_<start:06d>.mp4` (or unpadded, or in a split folder)."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import pytest
import torch

from mmsample.errors import ManifestError
from mmsample.methods import DUS
from mmsample.shards.format import Manifest
from pipelines import vggsound
from pipelines.presets import preset

from .recipe_helpers import clip_bytes, corrupt_bytes, read_back, shard_args, train_one_epoch

# (youtube id, start, label, split, how the file is stored)
ROWS = [
    ("---g-f_I2yQ", 1, "dog barking", "train", "padded"),
    ("a1B2c3D4e5F", 30, "dog barking", "train", "unpadded"),
    ("Zz9_-x00001", 0, "dog barking", "test", "padded"),
    ("q-Q_q-Q_q-Q", 120, "alligators, crocodiles hissing", "train", "split-folder"),
    ("abcdefghijk", 7, "alligators, crocodiles hissing", "train", "padded"),
    ("mnopqrstuvw", 15, "alligators, crocodiles hissing", "test", "unpadded"),
    ("bagpipe0001", 40, "playing bagpipes", "train", "padded"),
    ("bagpipe0002", 50, "playing bagpipes", "test", "padded"),
    ("GONEfromYT1", 10, "playing bagpipes", "train", "missing"),
    ("brokenClip1", 20, "dog barking", "train", "corrupt"),
]
CLASSES = sorted({r[2] for r in ROWS})  # the recipe's rule: every CSV label, sorted


def stand_in(tmp_path: Path) -> tuple[Path, Path]:
    clips = tmp_path / "clips"
    (clips / "train").mkdir(parents=True)
    with open(tmp_path / "vggsound.csv", "w", newline="") as f:
        w = csv.writer(f)
        for yid, start, label, split, _ in ROWS:
            w.writerow([yid, start, label, split])
    for seed, (yid, start, _, split, how) in enumerate(ROWS):
        name = f"{yid}_{start:06d}.mp4" if how != "unpadded" else f"{yid}_{start}.mp4"
        folder = clips / split if how == "split-folder" else clips
        if how == "corrupt":
            (folder / name).write_bytes(corrupt_bytes(seed))
        elif how != "missing":
            (folder / name).write_bytes(clip_bytes(seed))
    return tmp_path / "vggsound.csv", clips


def test_csv_line_format() -> None:
    assert vggsound.clip_names("-x", 5) == ["-x_000005.mp4", "-x_5.mp4"]


@pytest.mark.parametrize(
    ("line", "match"),
    [
        ("abc,1,dog barking", "line 2: expected 4 cells"),
        ("abc,1.5,dog barking,train", "line 2: the start second must be an integer"),
        ("abc,1,dog barking,val", "line 2: the split must be one of"),
    ],
)
def test_bad_csv_lines_are_named(tmp_path: Path, line: str, match: str) -> None:
    path = tmp_path / "vggsound.csv"
    path.write_text(f"good0000001,0,dog barking,train\n{line}\n")
    with pytest.raises(ManifestError, match=match):
        vggsound.read_csv(path)


def test_bad_clips_stop_the_run_and_are_listed(tmp_path: Path) -> None:
    csv_path, clips = stand_in(tmp_path)
    outcome = vggsound.shard(csv_path, clips, shard_args(tmp_path / "out", skip_bad=False))
    assert not outcome.ok
    assert [b.key for b in outcome.missing] == ["GONEfromYT1_000010"]
    assert [b.key for b in outcome.corrupt] == ["brokenClip1_000020"]
    assert "GONEfromYT1_000010.mp4" in outcome.missing[0].describe()  # the name it should have
    assert not (tmp_path / "out" / "manifest.json").exists()
    text = "\n".join(outcome.lines())
    assert "missing        1" in text and "undecodable    1" in text


def test_recipe_reads_back_and_trains(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    csv_path, clips = stand_in(tmp_path)
    out = tmp_path / "out"
    argv = ["--csv", str(csv_path), "--clips", str(clips), "--out", str(out)]
    argv += ["--skip-bad", "--samples-per-shard", "3", "--workers", "1", "--quiet"]
    assert vggsound.main(argv) == 0
    printed = capsys.readouterr().out
    assert "missing        1" in printed and "GONEfromYT1_000010" in printed
    manifest = Manifest.load(out)
    assert manifest.classes == CLASSES
    skipped = [json.loads(x)["key"] for x in (out / "skipped.jsonl").read_text().splitlines()]
    assert sorted(skipped) == ["GONEfromYT1_000010", "brokenClip1_000020"]

    good = [r for r in ROWS if r[4] not in ("missing", "corrupt")]
    for split in ("train", "test"):
        got = read_back(out, preset("vggsound", split, size=32, audio_seconds=1.0), split)
        want = {f"{y}_{s:06d}": CLASSES.index(lab) for y, s, lab, sp, _ in good if sp == split}
        assert {k: v["label"] for k, v in got.items()} == want
        sample = next(iter(got.values()))
        frames = 3 if split == "train" else 10
        assert tuple(sample["visual"].shape) == (frames, 3, 32, 32)
        assert sample["visual"].dtype == torch.uint8
        assert tuple(sample["audio"].shape) == (257, 1 + 16000 // 159)

    specs = preset("vggsound", "train", size=32, audio_seconds=1.0)
    run = train_one_epoch(out, specs, lambda led: DUS(led, batch_size=4, epochs=1))
    assert set(run["ids"]) <= set(run["train"])
    assert all(torch.isfinite(torch.tensor(run["losses"])))
    assert run["moved"] == {"audio_net": True, "visual_net": True, "fc_out": True}
    seen = run["ledger"].snapshot()["seen"]
    assert bool(seen[run["ids"]].all())


def test_job_array_parts_then_resume(tmp_path: Path) -> None:
    """Two parts of a job array share one output; the manifest appears when both are done; a
    rerun keeps every finished shard."""
    csv_path, clips = stand_in(tmp_path)
    out = tmp_path / "out"
    first = vggsound.shard(csv_path, clips, shard_args(out, skip_bad=True, part=(0, 2)))
    assert first.ok and first.report is not None and first.report.manifest is None
    assert first.report.written == [0, 2]  # 10 rows, 3 per shard: shards 0..3, part 0 has 0, 2
    assert any("waits for 2 shard(s)" in line for line in first.lines())
    second = vggsound.shard(csv_path, clips, shard_args(out, skip_bad=True, part=(1, 2)))
    assert second.report is not None and second.report.written == [1, 3]
    manifest = second.report.manifest
    assert manifest is not None and manifest.num_samples == 8 and manifest.skipped == 2
    again = vggsound.shard(csv_path, clips, shard_args(out, skip_bad=True))
    assert again.report is not None
    assert again.report.written == [] and again.report.kept == [0, 1, 2, 3]
    assert len(again.missing) == 1 and len(again.corrupt) == 1  # still reported on a rerun


def test_the_reference_loop_trains_the_paper_model_one_epoch(tmp_path: Path) -> None:
    """`pipelines/train.py --model resnet18 --preset vggsound` on the recipe's shards, tiny
    input: one epoch with DUS completes, logs its stats and counts each test clip once."""
    from pipelines import training

    csv_path, clips = stand_in(tmp_path)
    out = tmp_path / "out"
    argv = ["--csv", str(csv_path), "--clips", str(clips), "--out", str(out)]
    assert vggsound.main([*argv, "--skip-bad", "--workers", "1", "--quiet"]) == 0
    run = tmp_path / "run"
    args = ["--data", str(out), "--out", str(run), "--model", "resnet18", "--preset", "vggsound"]
    args += ["--size", "32", "--audio-seconds", "1", "--epochs", "1", "--batch-size", "2"]
    assert training.main([*args, "--method", "dus", "--mode", "indexed", "--no-progress"]) == 0
    stats = [json.loads(x) for x in (run / "stats.jsonl").read_text().splitlines()]
    assert stats[0]["method"] == "DUS" and stats[0]["batch_size/audio"] >= 1
    metrics = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    n_test = sum(1 for r in ROWS if r[3] == "test" and r[4] not in ("missing", "corrupt"))
    assert metrics[-1]["test/n"] == n_test
    # the papers' setting in that loop: 3 random frames of 10 per training step, all 10 at
    # test time (issue 10, item 2), and OGM-GE's crop and flip on the training frames only
    loop = training.Run(
        training.parse_args([*args, "--out", str(tmp_path / "again"), "--no-progress"])
    )
    assert loop.test is not None
    assert tuple(loop.test[0]["visual"].shape) == (10, 3, 32, 32)
    batch = next(iter(loop.loader))
    assert tuple(batch["visual"].shape[1:]) == (3, 3, 32, 32)
    plain = batch["visual"].clone()  # type: ignore[union-attr]
    twice = []
    for step in (0, 0, 1):
        copy = dataclasses.replace(batch, modalities=dict(batch.modalities))
        copy.modalities["visual"] = dataclasses.replace(batch.modalities["visual"], data=plain)
        loop.step = step
        loop.augment_batch(copy)
        twice.append(copy["visual"])
    assert not torch.equal(twice[0], plain)  # cropped or flipped
    assert torch.equal(twice[0], twice[1])  # seeded by (seed, epoch, step, rank): resumable
    assert not torch.equal(twice[0], twice[2])
    assert torch.equal(batch["visual"], plain)  # the batch given was not touched
