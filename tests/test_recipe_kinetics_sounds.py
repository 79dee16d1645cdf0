"""Kinetics-Sounds recipe on a tiny stand-in in the public layout: Kinetics-400 CSVs (header
`label,youtube_id,time_start,time_end,split`, other classes mixed in) and clips named
`<id>_<start:06d>_<end:06d>.mp4`, flat or in label / split-label folders."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from mmsample.errors import ManifestError
from mmsample.methods import SMV
from mmsample.shards.format import Manifest
from pipelines import kinetics_sounds as ks
from pipelines.presets import preset

from .recipe_helpers import (
    clip_bytes,
    corrupt_bytes,
    read_back,
    reference_loop_one_epoch,
    shard_args,
    train_one_epoch,
)

# (label, youtube id, start, end, split, how the file is stored)
ROWS = [
    ("playing bagpipes", "--07WQ2iBlw", 1, 11, "train", "flat"),
    ("playing bagpipes", "-0ZK7dc6e0Y", 30, 40, "train", "label-folder"),
    ("playing bagpipes", "0aBcDeFgHiJ", 5, 15, "val", "split-label-folder"),
    ("tap dancing", "tap_dance01", 0, 10, "train", "unpadded"),
    ("tap dancing", "tap-dance02", 100, 110, "train", "underscore-folder"),
    ("tap dancing", "tap-dance03", 12, 22, "val", "flat"),
    ("abseiling", "notKS000001", 0, 10, "train", "flat"),  # not a Kinetics-Sounds class
    ("tickling", "tickle00001", 3, 13, "train", "flat"),
    ("tickling", "tickle00002", 4, 14, "val", "flat"),
    ("tickling", "goneFromYT1", 4, 14, "train", "missing"),
    ("tap dancing", "brokenClip1", 9, 19, "train", "corrupt"),
]


def stand_in(tmp_path: Path) -> tuple[list[Path], Path]:
    clips = tmp_path / "kinetics"
    paths = []
    for split in ("train", "val"):
        path = tmp_path / f"{'validate' if split == 'val' else split}.csv"
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["label", "youtube_id", "time_start", "time_end", "split"])
            for label, yid, start, end, sp, _ in ROWS:
                if sp == split:
                    w.writerow([label, yid, start, end, sp])
        paths.append(path)
    for seed, (label, yid, start, end, split, how) in enumerate(ROWS):
        name = f"{yid}_{start:06d}_{end:06d}.mp4"
        folder = {
            "label-folder": clips / label,
            "underscore-folder": clips / label.replace(" ", "_"),
            "split-label-folder": clips / split / label,
        }.get(how, clips)
        if how == "unpadded":
            name = f"{yid}_{start}_{end}.mp4"
        folder.mkdir(parents=True, exist_ok=True)
        if how == "corrupt":
            (folder / name).write_bytes(corrupt_bytes(seed))
        elif how != "missing":
            (folder / name).write_bytes(clip_bytes(seed))
    return paths, clips


def test_class_list() -> None:
    assert len(ks.CLASSES) == 31 and len(set(ks.CLASSES)) == 31


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("label,youtube_id,time_start,split\n", r"\['time_end'\] missing"),
        ("label,youtube_id,time_start,time_end,split\nbowling,x,abc,10,train\n", "line 2"),
        ("label,youtube_id,time_start,time_end,split\nbowling,x,1,-10,train\n", "time_end"),
        ("label,youtube_id,time_start,time_end,split\nabseiling,x,1,10,train\n", "no row"),
    ],
)
def test_bad_csvs_are_named(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "train.csv"
    path.write_text(text)
    with pytest.raises(ManifestError, match=match):
        ks.read_csvs([path])


def test_recipe_reads_back_and_trains(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    paths, clips = stand_in(tmp_path)
    out = tmp_path / "out"
    stopped = ks.shard(paths, clips, shard_args(out, skip_bad=False))
    assert not stopped.ok
    assert [b.key for b in stopped.missing] == ["goneFromYT1_000004_000014"]
    assert [b.key for b in stopped.corrupt] == ["brokenClip1_000009_000019"]

    argv = ["--csv", *map(str, paths), "--clips", str(clips), "--out", str(out)]
    assert (
        ks.main([*argv, "--skip-bad", "--samples-per-shard", "4", "--workers", "1", "--quiet"]) == 0
    )
    printed = capsys.readouterr().out
    assert "clips listed   10" in printed  # the abseiling row is not Kinetics-Sounds
    manifest = Manifest.load(out)
    assert manifest.classes == ks.CLASSES and len(manifest.classes) == 31
    assert manifest.num_samples == 8

    good = [r for r in ROWS if r[5] not in ("missing", "corrupt") and r[0] in ks.CLASSES]
    for split, mode in (("train", "train"), ("val", "test")):
        got = read_back(out, preset("kinetics_sounds", mode, size=32, audio_seconds=0.5), split)
        want = {f"{y}_{s:06d}_{e:06d}": ks.CLASSES.index(lab) for lab, y, s, e, sp, _ in good}
        want = {
            k: v
            for k, v in want.items()
            if k in {f"{r[1]}_{r[2]:06d}_{r[3]:06d}" for r in good if r[4] == split}
        }
        assert {k: v["label"] for k, v in got.items()} == want
        sample = next(iter(got.values()))
        assert sample["visual"].shape[0] == (3 if mode == "train" else 10)
        assert tuple(sample["audio"].shape) == (257, 1 + 8000 // 159)

    specs = preset("kinetics_sounds", "train", size=32, audio_seconds=0.5)
    run = train_one_epoch(out, specs, lambda led: SMV(led, warmup=0, seed=1))
    assert set(run["ids"]) == set(run["train"])  # SMV at epoch 0: every train sample
    assert all(torch.isfinite(torch.tensor(run["losses"])))
    assert run["moved"] == {"audio_net": True, "visual_net": True, "fc_out": True}

    # and pipelines/train.py with the paper model, evaluating on the CSVs' "val" split
    extra = ("--audio-seconds", "0.5", "--test-split", "val")
    metrics, stats = reference_loop_one_epoch(
        out, tmp_path / "run", "kinetics_sounds", "smv", *extra
    )
    n_val = sum(1 for r in good if r[4] == "val")
    assert [m["test/n"] for m in metrics] == [n_val]  # every val clip once
    assert stats[0]["method"] == "SMV" and stats[0]["ids"] == len(good) - n_val
