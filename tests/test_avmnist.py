"""The AV-MNIST demo: MFCC maths against hand-computed values, the inversion by round trip, and a
real small build read back with the standard library, numpy and PyAV."""

from __future__ import annotations

import io
import math
import tarfile
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from mmsample.demo.avmnist import (
    CLASSES,
    Sources,
    build_avmnist,
    digit_clip,
    digit_trajectory,
    encode_clip,
    load_sources,
    pair_by_label,
)
from mmsample.demo.mfcc import (
    dct_matrix,
    hz_to_mel,
    log_mel_spectrogram,
    mfcc,
    mfcc_to_waveform,
)
from mmsample.shards.format import Manifest

SR = 8000


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> Iterator[None]:
    """The Griffin-Lim loop runs many tiny ops: on a busy 2-core machine, intra-op threads make
    it several times slower (the builder runs it on one thread too)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def sources() -> Sources:
    return load_sources()


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("avmnist") / "demo"
    build_avmnist(out, n=20, seed=3, samples_per_shard=8, workers=0)
    return out


def read_shards(root: Path) -> dict[str, dict[str, bytes]]:
    """key -> {extension: bytes} for every sample of every shard, with the standard library."""
    samples: dict[str, dict[str, bytes]] = {}
    for shard in sorted(root.glob("shard-*.tar")):
        with tarfile.open(shard) as tar:
            for member in tar.getmembers():
                key, ext = member.name.split(".", 1)
                handle = tar.extractfile(member)
                assert handle is not None
                samples.setdefault(key, {})[ext] = handle.read()
    return samples


def decode_mp4(data: bytes) -> tuple[np.ndarray, np.ndarray, int]:
    """(video frames [T, H, W, 3], mono audio [S], audio rate) with plain PyAV."""
    with av.open(io.BytesIO(data), "r") as c:
        frames = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])
    with av.open(io.BytesIO(data), "r") as c:
        rate = c.streams.audio[0].rate
        audio = np.concatenate([f.to_ndarray()[0] for f in c.decode(audio=0)])
    return frames, audio, rate


# ---- MFCC maths, checked against hand-computed values -------------------------------------------


def test_htk_mel_scale_by_hand() -> None:
    # 2595 * log10(1 + 700/700) = 2595 * log10(2) = 781.17; 1000 Hz is ~1000 mel by design.
    assert float(hz_to_mel(700.0)) == pytest.approx(2595 * math.log10(2), abs=1e-9)
    assert float(hz_to_mel(1000.0)) == pytest.approx(999.99, abs=0.01)


@pytest.mark.parametrize("freq", [1000.0, 3000.0])
def test_pure_tone_peaks_at_the_hand_computed_mel_band(freq: float) -> None:
    # 128 HTK bands over 0..4000 Hz: band k peaks at mel (k + 1) * mel(4000) / 129.
    spacing = 2595 * math.log10(1 + 4000 / 700) / 129
    position = 2595 * math.log10(1 + freq / 700) / spacing  # 1000 Hz: 60.11; 3000 Hz: 112.79
    assert abs(position - round(position)) < 0.25  # the nearest band centre is unambiguous
    expected = round(position) - 1
    t = torch.arange(4000, dtype=torch.float64) / SR
    db = log_mel_spectrogram(0.5 * torch.sin(2 * math.pi * freq * t))
    assert db.shape == (1 + 4000 // 200, 128)
    assert (db[1:-1].argmax(dim=1) == expected).all()


def test_dct_is_orthonormal_and_c0_is_the_scaled_mean() -> None:
    d = dct_matrix(13, 128, torch.float64)
    torch.testing.assert_close(d.T @ d, torch.eye(13, dtype=torch.float64))
    assert float(d[0, 1]) == pytest.approx(math.sqrt(2 / 128) * math.cos(math.pi * 0.5 / 128))
    assert float(d[5, 0]) == pytest.approx(1 / math.sqrt(128))
    # A flat log-mel of c dB: c0 = c * 128 / sqrt(128) = c * sqrt(128); the others vanish.
    coeffs = torch.full((1, 128), -30.0, dtype=torch.float64) @ d
    assert float(coeffs[0, 0]) == pytest.approx(-30.0 * math.sqrt(128))
    assert coeffs[0, 1:].abs().max() < 1e-9


def test_log_mel_is_clipped_80_db_below_its_peak() -> None:
    t = torch.arange(4000, dtype=torch.float64) / SR
    x = torch.sin(2 * math.pi * 440 * t)
    x[2000:] = 0.0  # silence: -100 dB before clipping
    db = log_mel_spectrogram(x)
    assert float(db.min()) == pytest.approx(float(db.max()) - 80.0)


# ---- the inversion, by round trip ----------------------------------------------------------------


def pooled_correlation(pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> np.ndarray:
    a = torch.cat([p for p, _ in pairs]).double().numpy()
    b = torch.cat([q for _, q in pairs]).double().numpy()
    return np.array([np.corrcoef(a[:, j], b[:, j])[0, 1] for j in range(a.shape[1])])


def synthetic_voice(seed: int, seconds: float = 0.8) -> torch.Tensor:
    """A vowel-like sound: harmonics of a wobbling pitch shaped by three random formants."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    f0 = 120 + 60 * rng.random() + 40 * np.sin(2 * np.pi * 1.5 * t)
    phase = 2 * np.pi * np.cumsum(f0) / SR
    formants = rng.uniform([300, 900, 2200], [800, 1800, 3200])
    x = np.zeros_like(t)
    for h in range(1, 30):
        gain = sum(np.exp(-((((h * f0) - f) / 150) ** 2)) for f in formants) + 0.02
        x += gain * np.sin(h * phase) * (h * f0 < 3900)
    x *= np.sin(np.pi * t / seconds) ** 2
    return torch.tensor(0.1 * x / np.abs(x).max(), dtype=torch.float32)


# Tolerances. The inversion cannot be exact: Griffin-Lim recovers a signal whose STFT magnitude
# only approximates the target (which came from a smoothed log-mel, not from any real STFT),
# and at low frequencies several mel bands share one FFT bin, so the NNLS fit of the mel power
# leaves ~0.2 dB residuals. Measured: pooled correlation >= 0.99 per coefficient and relative
# error 1-8% (FSDD) / 1-2% (synthetic). A wrong filterbank, DCT, framing or dB scale breaks the
# per-coefficient correlation far below the thresholds, which keep a margin for other seeds.


def test_round_trip_of_a_synthetic_voice() -> None:
    pairs = []
    for seed in range(4):
        x = synthetic_voice(seed)
        m1 = mfcc(x)
        y = mfcc_to_waveform(m1, seed=seed)
        assert y.shape == (200 * (m1.shape[0] - 1),) and y.dtype == torch.float32
        m2 = mfcc(y)
        assert m2.shape == m1.shape
        assert float((m2 - m1).norm() / m1.norm()) < 0.05
        pairs.append((m1, m2))
    assert (pooled_correlation(pairs) > 0.98).all()


def test_round_trip_of_real_fsdd_mfccs(sources: Sources) -> None:
    pairs, errors = [], []
    for rec in range(5, 3000, 300):  # one recording of every digit
        m1 = torch.from_numpy(sources.mfccs[rec])
        m2 = mfcc(mfcc_to_waveform(m1, seed=rec))
        errors.append(float((m2 - m1).norm() / m1.norm()))
        pairs.append((m1, m2))
    assert max(errors) < 0.12 and float(np.mean(errors)) < 0.06
    assert (pooled_correlation(pairs) > 0.97).all()


def test_mfcc_to_waveform_is_seeded_and_validates() -> None:
    m = mfcc(synthetic_voice(0, seconds=0.3))
    a, b = mfcc_to_waveform(m, seed=1), mfcc_to_waveform(m, seed=1)
    assert torch.equal(a, b)
    assert not torch.equal(a, mfcc_to_waveform(m, seed=2))
    with pytest.raises(ValueError, match="'coefficients'"):
        mfcc_to_waveform(torch.zeros(10))
    with pytest.raises(ValueError, match=r"'coefficients'.*T = 2"):
        mfcc_to_waveform(torch.zeros(2, 13))
    with pytest.raises(ValueError, match="NaN"):
        mfcc_to_waveform(torch.full((5, 13), float("nan")))
    with pytest.raises(ValueError, match="'momentum'"):
        mfcc_to_waveform(m, momentum=1.0)
    with pytest.raises(ValueError, match="'waveform'"):
        mfcc(torch.zeros(100))


# ---- the video clip ------------------------------------------------------------------------------


def centroid(frame: np.ndarray, floor: float = 0.0) -> np.ndarray:
    """Brightness-weighted centre (row, col); pixels darker than `floor` count as black."""
    grey = frame.astype(np.float64).mean(axis=-1)
    grey[grey < floor] = 0.0
    rows, cols = np.indices(grey.shape)
    return np.array([(rows * grey).sum(), (cols * grey).sum()]) / grey.sum()


def test_the_digit_moves_along_its_trajectory(sources: Sources) -> None:
    image = sources.images[7]
    frames = digit_clip(image, seconds=2.0, fps=10.0, size=64, scale=4, seed=11)
    assert frames.shape == (20, 64, 64, 3) and frames.dtype == np.uint8
    path = digit_trajectory(20, 64, 32, seed=11)
    assert np.abs(path[-1] - path[0]).sum() > 0  # it moves
    # Nearest x4 upsampling of the 8x8 levels (v -> round(v * 255 / 16)) puts their centroid c
    # at 4c + 1.5 inside the sprite (each cell becomes a 4x4 block centred 1.5 px in).
    levels = np.rint(image * 255 / 16)
    rows, cols = np.indices(image.shape)
    inner = 4 * np.array([(rows * levels).sum(), (cols * levels).sum()]) / levels.sum() + 1.5
    for t in range(20):
        np.testing.assert_allclose(centroid(frames[t]), path[t] + inner, atol=1e-9)
        # all of the digit is on the canvas: its grey mass is the image's, 16 pixels per cell
        assert frames[t].astype(np.int64).sum() == 3 * 16 * levels.sum()
    decoded, _, _ = decode_mp4(encode_clip(frames, np.zeros(16000, np.float32), SR))
    assert decoded.shape == frames.shape
    for t in range(20):  # after h264 (ignoring codec noise on the black canvas): within a pixel
        np.testing.assert_allclose(centroid(decoded[t], floor=40), path[t] + inner, atol=1.0)


def test_clip_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="'image'"):
        digit_clip(np.full((8, 8), 17.0))
    with pytest.raises(ValueError, match="'size'"):
        digit_clip(np.zeros((8, 8)), size=63)
    with pytest.raises(ValueError, match="'size'"):
        digit_clip(np.zeros((8, 8)), size=30, scale=4)
    with pytest.raises(ValueError, match="'frames'"):
        encode_clip(np.zeros((2, 8, 8), np.uint8), np.zeros(10, np.float32), SR)
    with pytest.raises(ValueError, match="'audio'"):
        encode_clip(np.zeros((2, 8, 8, 3), np.uint8), np.zeros((1, 10), np.float32), SR)


def test_trajectories_differ_by_seed_and_stay_on_the_canvas() -> None:
    paths = [digit_trajectory(20, 64, 32, seed) for seed in range(50)]
    assert all(p.min() >= 0 and p.max() <= 32 for p in paths)
    assert len({p.tobytes() for p in paths}) == 50


# ---- pairing -------------------------------------------------------------------------------------


def test_pairing_by_label_is_balanced_and_seeded(sources: Sources) -> None:
    rec_labels, img_labels = sources.recording_labels, sources.image_labels
    rows = pair_by_label(rec_labels, img_labels, 3000, seed=0)
    assert (rec_labels[rows[:, 0]] == img_labels[rows[:, 1]]).all()
    assert sorted(rows[:, 0].tolist()) == list(range(3000))  # every recording exactly once
    uses = np.bincount(rows[:, 1], minlength=len(img_labels))
    assert uses.max() == math.ceil(300 / np.bincount(img_labels).min())
    small = pair_by_label(rec_labels, img_labels, 25, seed=0)
    assert sorted(np.bincount(rec_labels[small[:, 0]], minlength=10)) == [2] * 5 + [3] * 5
    assert np.array_equal(small, pair_by_label(rec_labels, img_labels, 25, seed=0))
    assert not np.array_equal(small, pair_by_label(rec_labels, img_labels, 25, seed=1))
    with pytest.raises(ValueError, match="'n'"):
        pair_by_label(rec_labels, img_labels, 3001, seed=0)


# ---- a real build --------------------------------------------------------------------------------


def decode_png(data: bytes) -> np.ndarray:
    with av.open(io.BytesIO(data), "r") as c:
        return next(c.decode(video=0)).to_ndarray(format="gray")


def test_build_pairs_by_label_and_stores_real_media(built: Path, sources: Sources) -> None:
    manifest = Manifest.load(built / "shards")
    assert manifest.num_samples == 20 and [s.count for s in manifest.shards] == [8, 8, 4]
    assert manifest.classes == CLASSES and manifest.fields == ["mp4", "npy", "png", "txt"]
    assert sorted(manifest.class_counts().values()) == [2] * 10
    samples = read_shards(built / "shards")
    assert sorted(int(s["id"]) for s in samples.values()) == list(range(20))
    heard: list[tuple[torch.Tensor, torch.Tensor]] = []
    for key, s in samples.items():
        label = int(s["cls"])
        rec, img = (int(part[1:]) for part in key.split("-"))  # r<recording>-i<image>
        assert sources.recording_labels[rec] == label == sources.image_labels[img]
        assert s["txt"].decode() == f"the digit {CLASSES[label]}"
        stored = np.load(io.BytesIO(s["npy"]), allow_pickle=False)
        assert stored.dtype == np.float32 and np.array_equal(stored, sources.mfccs[rec])
        grey = decode_png(s["png"])
        assert np.array_equal(np.rint(grey.astype(np.float64) * 16 / 255), sources.images[img])
        frames, audio, rate = decode_mp4(s["mp4"])
        assert frames.shape == (20, 64, 64, 3)
        digit_mass = 3 * 16 * (sources.images[img] * 255 / 16).sum()
        assert frames.astype(np.float64).sum(axis=(1, 2, 3)) == pytest.approx(
            np.full(20, digit_mass), rel=0.06
        )
        assert rate == 16000 and abs(len(audio) / rate - 2.0) < 0.1
        # the speech is centred: loud inside its span, near-silent outside
        speech = 200 * (len(stored) - 1) * 2  # samples at 16 kHz
        lo, hi = (32000 - speech) // 2, (32000 + speech) // 2
        inside = np.sqrt(np.mean(audio[lo:hi] ** 2))
        outside = np.sqrt(
            np.mean(np.concatenate([audio[: lo - 400], audio[hi + 400 : 32000]]) ** 2)
        )
        assert inside > 10 * outside
        # and it is this recording: the MFCCs of the decoded track (16 kHz -> 8 kHz by taking
        # every other sample: the content is below 4 kHz) follow the stored ones
        heard.append((torch.from_numpy(stored), mfcc(torch.from_numpy(audio[lo:hi:2].copy()))))
        assert np.corrcoef(heard[-1][0][:, 0], heard[-1][1][:, 0])[0, 1] > 0.95
    # AAC at 32 kbit/s and two resamplings on top of the inversion: measured >= 0.97 (c0..c3)
    assert (pooled_correlation(heard)[:4] > 0.95).all()


def test_build_is_deterministic_and_reused(built: Path, tmp_path: Path) -> None:
    tars = sorted((built / "shards").glob("*.tar"))
    again = build_avmnist(built, n=20, seed=3, samples_per_shard=8, workers=0)
    assert again.skipped and sorted((built / "shards").glob("*.tar")) == tars
    other = tmp_path / "other"
    info = build_avmnist(other, n=20, seed=3, samples_per_shard=8, workers=2)  # processes
    assert not info.skipped and info.sharded_by == "mmsample shard"
    for tar in tars:
        assert (other / "shards" / tar.name).read_bytes() == tar.read_bytes()
    raw = sorted(p.name for p in (built / "raw").iterdir())
    assert raw == sorted(p.name for p in (other / "raw").iterdir())
    assert all((built / "raw" / n).read_bytes() == (other / "raw" / n).read_bytes() for n in raw)
    # new parameters replace the old build, stale shards included
    build_avmnist(other, n=12, seed=4, samples_per_shard=8, workers=0)
    assert Manifest.load(other / "shards").num_samples == 12
    assert sorted(p.name for p in (other / "shards").glob("*.tar")) == [
        "shard-000000.tar",
        "shard-000001.tar",
    ]
    assert len(list((other / "raw").glob("*.mp4"))) == 12
    assert (other / "shards" / tars[0].name).read_bytes() != tars[0].read_bytes()


def test_build_refuses_a_foreign_directory_and_bad_parameters(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="'out_dir'"):
        build_avmnist(tmp_path, n=2, workers=0)
    with pytest.raises(ValueError, match="'n'"):
        build_avmnist(tmp_path / "new", n=0)
    with pytest.raises(ValueError, match="'samples_per_shard'"):
        build_avmnist(tmp_path / "new", n=2, samples_per_shard=0)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_make_demo_prints_a_summary(built: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pipelines.avmnist import main

    argv = ["--out", str(built), "--n", "20", "--seed", "3", "--samples-per-shard", "8"]
    # `built` has no split column: the command's default test split would be another build
    assert main([*argv, "--workers", "0", "--test-fraction", "0"]) == 0
    out = capsys.readouterr().out
    assert "already built" in out
    assert "samples      20" in out and "shards       3" in out
    assert "zero 2, one 2" in out
    assert "video      [10, 3, 64, 64] uint8" in out
    assert "mfcc       [" in out and ", 13] float32" in out
