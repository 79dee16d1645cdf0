"""Audio mathematics (mmsample.decoding.audio_ops) against hand computations and independent
numpy code."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mmsample.decoding import audio_ops as audio


def _sine(freq: float, sr: int, n: int, amp: float = 0.5) -> torch.Tensor:
    return torch.tensor(amp * np.sin(2 * np.pi * freq * np.arange(n) / sr), dtype=torch.float64)


def _numpy_stft_magnitude(x: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    """Hand-framed STFT: reflect-pad n_fft//2, periodic Hann by its formula, rfft per frame."""
    padded = np.pad(x, n_fft // 2, mode="reflect")
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)
    count = 1 + (len(padded) - n_fft) // hop
    frames = np.stack([padded[i * hop : i * hop + n_fft] * window for i in range(count)])
    return np.abs(np.fft.rfft(frames, axis=1)).T  # [F, frames]


def test_spectrogram_matches_hand_framed_numpy_fft() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal(4000)
    got = audio.spectrogram(torch.tensor(x), n_fft=512, win_length=512, hop_length=159)
    want = _numpy_stft_magnitude(x, 512, 159)
    assert got.shape == (257, 1 + 4000 // 159) == want.shape
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-9, atol=1e-9)
    power = audio.spectrogram(torch.tensor(x), power=2.0)
    np.testing.assert_allclose(power.numpy(), want**2, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize(("freq", "sr"), [(1000.0, 16000), (3000.0, 16000), (2205.0, 22050)])
def test_sine_peaks_at_its_bin(freq: float, sr: int) -> None:
    spec = audio.spectrogram(_sine(freq, sr, sr).float())
    expected_bin = round(freq * 512 / sr)
    interior = spec[:, 3:-3]  # frames away from the reflect-padded edges
    assert (interior.argmax(dim=0) == expected_bin).all()
    # The magnitude of a windowed sine at an exact bin is amp * sum(window) / 2 = 0.5 * 256 / 2.
    if freq * 512 / sr == expected_bin:
        np.testing.assert_allclose(interior[expected_bin].numpy(), 0.5 * 256 / 2, rtol=1e-3)


def test_spectrogram_batches_over_leading_dims_and_rejects_short_audio() -> None:
    x = torch.stack([_sine(500, 16000, 2000), _sine(2000, 16000, 2000)]).float()
    spec = audio.spectrogram(x)
    assert spec.shape == (2, 257, 1 + 2000 // 159)
    assert spec[0, :, 5].argmax() == 16 and spec[1, :, 5].argmax() == 64
    with pytest.raises(ValueError, match="too short"):
        audio.spectrogram(torch.zeros(200))
    with pytest.raises(ValueError, match="win_length"):
        audio.spectrogram(torch.zeros(2000), n_fft=256, win_length=512)


def test_log_compress_is_natural_log_with_epsilon() -> None:
    got = audio.log_compress(torch.tensor([0.0, 1.0, math.e - 1e-7], dtype=torch.float64))
    np.testing.assert_allclose(got.numpy(), [math.log(1e-7), math.log(1 + 1e-7), 1.0], rtol=1e-6)


def test_mel_scales_hand_values_and_round_trip() -> None:
    assert float(audio.hz_to_mel(torch.tensor(700.0), "htk")) == pytest.approx(2595 * math.log10(2))
    assert float(audio.hz_to_mel(torch.tensor(500.0), "slaney")) == pytest.approx(7.5)
    assert float(audio.hz_to_mel(torch.tensor(1000.0), "slaney")) == pytest.approx(15.0)
    # Slaney: 27 mels per factor 6.4 above 1 kHz.
    assert float(audio.hz_to_mel(torch.tensor(6400.0), "slaney")) == pytest.approx(15.0 + 27.0)
    freqs = torch.tensor([0.0, 100.0, 999.0, 1000.0, 4321.0, 8000.0], dtype=torch.float64)
    for scale in ("htk", "slaney"):
        back = audio.mel_to_hz(audio.hz_to_mel(freqs, scale), scale)
        np.testing.assert_allclose(back.numpy(), freqs.numpy(), atol=1e-6)
    with pytest.raises(ValueError, match="'scale' parameter must be one of"):
        audio.hz_to_mel(freqs, "bark")  # type: ignore[arg-type]


def test_htk_filterbank_triangles_peak_at_centres_and_partition_unity() -> None:
    sr, n_fft, n_mels = 16000, 512, 40
    fb = audio.mel_filterbank(n_fft // 2 + 1, sr, n_mels, scale="htk")
    assert fb.shape == (257, 40) and (fb >= 0).all() and (fb <= 1 + 1e-6).all()
    top = 2595 * math.log10(1 + 8000 / 700)
    edges_mel = np.linspace(0.0, top, n_mels + 2)
    centres_hz = 700 * (10 ** (edges_mel / 2595) - 1)[1:-1]
    bin_hz = np.linspace(0, sr / 2, 257)
    for m in range(10, n_mels):  # filters wide enough to span several bins
        assert abs(bin_hz[int(fb[:, m].argmax())] - centres_hz[m]) <= sr / n_fft
    # Between the first and last centre, neighbouring triangles sum to 1 at every bin.
    inside = (bin_hz > centres_hz[0]) & (bin_hz < centres_hz[-1])
    np.testing.assert_allclose(fb[inside].sum(dim=1).numpy(), 1.0, atol=1e-5)


def test_slaney_filterbank_has_area_normalisation() -> None:
    fb = audio.mel_filterbank(257, 16000, 20, scale="slaney")
    top = float(audio.hz_to_mel(torch.tensor(8000.0), "slaney"))
    edges = audio.mel_to_hz(torch.linspace(0.0, top, 22, dtype=torch.float64), "slaney").numpy()
    bin_hz = np.linspace(0, 8000, 257)
    for m in range(5, 20):
        lo, c, hi = edges[m], edges[m + 1], edges[m + 2]
        tri = np.clip(np.minimum((bin_hz - lo) / (c - lo), (hi - bin_hz) / (hi - c)), 0, None)
        np.testing.assert_allclose(fb[:, m].numpy(), tri * 2 / (hi - lo), rtol=1e-5, atol=1e-9)


def test_mixdown_is_the_channel_mean() -> None:
    wave = torch.tensor([[1.0, 2.0, 3.0], [3.0, 0.0, -3.0]])
    assert audio.mixdown(wave).tolist() == [[2.0, 1.0, 0.0]]
    with pytest.raises(ValueError, match=r"\[C, S\]"):
        audio.mixdown(torch.zeros(5))


def test_crop_or_pad_centre_pad_and_random_window() -> None:
    x = torch.arange(10.0)
    assert audio.crop_or_pad(x, 4).tolist() == [3.0, 4.0, 5.0, 6.0]
    assert audio.crop_or_pad(x[None], 12)[0].tolist() == [*range(10), 0, 0]
    starts = []
    for seed in range(600):
        out = audio.crop_or_pad(x, 4, generator=torch.Generator().manual_seed(seed))
        start = int(out[0])
        assert out.tolist() == [float(start + i) for i in range(4)]
        starts.append(start)
    again = audio.crop_or_pad(x, 4, generator=torch.Generator().manual_seed(7))
    assert int(again[0]) == starts[7]
    # Uniform over the 7 possible starts: chi-square with 6 dof, 99.9% quantile 22.46.
    counts = np.bincount(starts, minlength=7)
    assert len(counts) == 7
    chi2 = ((counts - 600 / 7) ** 2 / (600 / 7)).sum()
    assert chi2 < 22.46, counts


@pytest.mark.parametrize(
    ("orig", "new", "freq"), [(16000, 8000, 440.0), (44100, 16000, 1000.0), (8000, 16000, 300.0)]
)
def test_resample_preserves_a_band_limited_sine(orig: int, new: int, freq: float) -> None:
    n = orig // 2
    out = audio.resample(_sine(freq, orig, n), orig, new)
    assert out.shape == (math.ceil(n * new / orig),)
    want = 0.5 * np.sin(2 * np.pi * freq * np.arange(out.shape[0]) / new)
    interior = slice(100, out.shape[0] - 100)
    np.testing.assert_allclose(out[interior].numpy(), want[interior], atol=5e-3)
    assert audio.resample(out, new, new) is out
