"""CREMA-D recipe on a tiny stand-in in the public layout: `VideoFlash/<name>.flv` (or .mp4) and
`AudioWAV/<name>.wav`, names `ActorID_Sentence_Emotion_Level`, OGM-GE's split files."""

from __future__ import annotations

import io
import itertools
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from mmsample.errors import ManifestError
from mmsample.methods import DUS
from mmsample.scoring import score
from mmsample.shards.format import Manifest
from mmsample.shards.indexed import IndexedDataset
from mmsample.testing import encode_wav
from pipelines import cremad
from pipelines.presets import preset

from .recipe_helpers import (
    clip_bytes,
    read_back,
    reference_loop_one_epoch,
    shard_args,
    train_one_epoch,
)

# (name, split, what is on disk)
CLIPS = [
    ("1001_DFA_ANG_XX", "train", "both"),
    ("1001_IEO_HAP_HI", "train", "both"),
    ("1002_TIE_NEU_XX", "train", "both"),
    ("1003_MTI_SAD_LO", "train", "both"),
    ("1004_ITS_ANG_MD", "test", "both"),
    ("1005_WSI_HAP_XX", "test", "both"),
    ("1076_MTI_NEU_XX", "train", "audio-only"),  # its video is missing
    ("1006_IWW_SAD_XX", "train", "corrupt-video"),
]


def flv_bytes(seed: int, frames: int = 25, size: int = 32) -> bytes:
    """A real FLV (Sorenson H.263 video, the codec of CREMA-D's VideoFlash) at 10 fps."""
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    with av.open(buf, "w", format="flv") as out:
        stream = out.add_stream("flv", rate=10)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for t in range(frames):
            img = np.full((size, size, 3), 8 * t, np.uint8)
            img[: size // 2] = rng.integers(0, 255, 3, dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return buf.getvalue()


def wav_bytes(seed: int) -> bytes:
    t = np.arange(int(2.5 * 16000)) / 16000
    return encode_wav(0.3 * np.sin(2 * np.pi * (200 + 30 * seed) * t), 16000)


def stand_in(root: Path, ext: str = "flv") -> tuple[Path, Path]:
    (root / "VideoFlash").mkdir(parents=True)
    (root / "AudioWAV").mkdir()
    for seed, (name, _, how) in enumerate(CLIPS):
        (root / "AudioWAV" / f"{name}.wav").write_bytes(wav_bytes(seed))
        video = flv_bytes(seed) if ext == "flv" else clip_bytes(seed)
        if how == "corrupt-video":
            video = video[: len(video) // 3]
        if how != "audio-only":
            (root / "VideoFlash" / f"{name}.{ext}").write_bytes(video)
    train, test = root / "train.csv", root / "test.csv"
    for path, split in ((train, "train"), (test, "test")):
        path.write_text("".join(f"{n},{n.split('_')[2]}\n" for n, s, _ in CLIPS if s == split))
    return train, test


def test_name_convention() -> None:
    assert cremad.emotion("1091_WSI_SAD_XX") == "SAD"
    for bad in ("1001_DFA_XXX_XX", "1001-DFA-ANG-XX", "101_DFA_ANG_XX"):
        with pytest.raises(ManifestError, match="ActorID_Sentence_Emotion_Level"):
            cremad.emotion(bad)


def test_hash_split_is_stable_and_near_the_fraction() -> None:
    names = [
        f"{a}_{s}_{e}_XX"
        for a, s, e in itertools.product(range(1001, 1092), ["DFA", "IEO", "TIE"], cremad.CLASSES)
    ]
    share = np.mean([cremad.in_test_split(n, 0.1) for n in names])
    assert 0.08 < share < 0.12  # 1,638 names: a binomial(0.1) share is 0.1 +- 0.0074 (1 sd)
    assert [cremad.in_test_split(n, 0.1) for n in names[:50]] == [
        cremad.in_test_split(n, 0.1) for n in names[:50]
    ]
    assert not any(cremad.in_test_split(n, 0.0) for n in names)


def test_recipe_reads_back_and_trains(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    train, test = stand_in(tmp_path / "CREMA-D")
    out = tmp_path / "out"
    stopped = cremad.shard(tmp_path / "CREMA-D", shard_args(out, skip_bad=False))
    assert not stopped.ok
    assert [b.key for b in stopped.missing] == ["1076_MTI_NEU_XX"]
    assert [b.key for b in stopped.corrupt] == ["1006_IWW_SAD_XX"]

    argv = ["--root", str(tmp_path / "CREMA-D"), "--out", str(out), "--skip-bad"]
    argv += ["--split-files", str(train), str(test), "--workers", "1", "--quiet"]
    assert cremad.main([*argv, "--samples-per-shard", "3"]) == 0
    assert "missing        1" in capsys.readouterr().out
    manifest = Manifest.load(out)
    assert manifest.classes == ["NEU", "HAP", "SAD", "FEA", "DIS", "ANG"]
    assert sorted(manifest.fields) == ["audio.wav", "video.flv"]

    label = {"NEU": 0, "HAP": 1, "SAD": 2, "FEA": 3, "DIS": 4, "ANG": 5}
    for split in ("train", "test"):
        got = read_back(out, preset("cremad", split, size=32), split)
        want = {n: label[n.split("_")[2]] for n, s, how in CLIPS if s == split and how == "both"}
        assert {k: v["label"] for k, v in got.items()} == want
        sample = got["1001_DFA_ANG_XX" if split == "train" else "1004_ITS_ANG_MD"]
        assert tuple(sample["visual"].shape) == ((1 if split == "train" else 3), 3, 32, 32)
        assert tuple(sample["audio"].shape) == (257, 1 + 3 * 22050 // 353)  # 3 s at 22.05 kHz
    two = read_back(out, preset("cremad", "train", size=32, train_frames=2), "train")
    assert two["1001_DFA_ANG_XX"]["visual"].shape[0] == 2

    specs = preset("cremad", "train", size=32)
    run = train_one_epoch(out, specs, lambda led: DUS(led, batch_size=4, epochs=1))
    assert set(run["ids"]) <= set(run["train"])
    assert all(torch.isfinite(torch.tensor(run["losses"])))
    assert run["moved"] == {"audio_net": True, "visual_net": True, "fc_out": True}
    # the scoring pass (mmsample.scoring.score) drives the same model over the test split
    test_reader = IndexedDataset(out, preset("cremad", "test", size=32), split="test")
    scored = score(run["model"], test_reader, run["ledger"], values="smv", progress=False)
    assert scored == 2
    ids = torch.as_tensor(sorted(int(i) for i in test_reader.table.ids))
    assert bool(run["ledger"].snapshot()["values_seen"][ids].all())

    # and pipelines/train.py with the paper model on the recipe's shards (flv + wav fields)
    metrics, stats = reference_loop_one_epoch(out, tmp_path / "run", "cremad", "dus")
    n = {s: sum(1 for _, sp, how in CLIPS if sp == s and how == "both") for s in ("train", "test")}
    assert [m["test/n"] for m in metrics] == [n["test"]]
    assert stats[0]["method"] == "DUS" and stats[0]["ids"] == n["train"]


def test_layout_errors_are_named(tmp_path: Path) -> None:
    train, test = stand_in(tmp_path / "CREMA-D")
    (tmp_path / "CREMA-D" / "VideoFlash" / "1001_DFA_ANG_XX.mp4").write_bytes(b"x")
    with pytest.raises(ManifestError, match=r"both \.flv and \.mp4"):
        cremad.clips(tmp_path / "CREMA-D")
    assert cremad.clips(tmp_path / "CREMA-D", video_ext="flv")[1] == "flv"
    test.write_text("1001_DFA_ANG_XX,SAD\n")
    with pytest.raises(ManifestError, match="labelled 'SAD' but its name says 'ANG'"):
        cremad.read_split_files(train, test)
    test.write_text("1001_DFA_ANG_XX,ANG\n")
    with pytest.raises(ManifestError, match="in both split files"):
        cremad.read_split_files(train, test)
    with pytest.raises(ManifestError, match="neither VideoFlash"):
        cremad.clips(tmp_path)


def test_mp4_videos_and_hash_split(tmp_path: Path) -> None:
    stand_in(tmp_path / "CREMA-D", ext="mp4")
    out = tmp_path / "out"
    outcome = cremad.shard(tmp_path / "CREMA-D", shard_args(out, skip_bad=True))
    assert outcome.ok and len(outcome.missing) == 1 and len(outcome.corrupt) == 1
    assert sorted(Manifest.load(out).fields) == ["audio.wav", "video.mp4"]
    names = [n for n, _, how in CLIPS if how == "both"]
    for split in ("train", "test"):
        specs = preset("cremad", "test", size=32, video_field="video.mp4")
        want = {n for n in names if cremad.in_test_split(n, 0.1) == (split == "test")}
        if want:
            assert set(read_back(out, specs, split)) == want
