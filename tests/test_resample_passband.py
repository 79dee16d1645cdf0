"""One resampler: `Audio(backend="wave")` resamples with the pass band of the FFmpeg backends.

Pure tones of RMS 0.354 (amplitude 0.5) are written as 16-bit wav at the source rate and read at
the target rate by every installed FFmpeg backend and by the "wave" reader (scipy's
`resample_poly`, `mmsample.decoding.audio_ops.resample`). The hand-written windowed sinc this
replaced gave 0.288 at 7 kHz, 44.1 -> 16 kHz, where FFmpeg gives 0.338.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmsample.decoding import Audio
from mmsample.decoding.audio_ops import resample
from mmsample.decoding.backends import available_backends
from mmsample.testing import encode_wav

FFMPEG_BACKENDS = [b for b in available_backends() if b in ("torchcodec", "pyav")]
AMPLITUDE = 0.5
SOURCE_RMS = AMPLITUDE / np.sqrt(2.0)
EDGE_TOLERANCE = 0.03  # near the new Nyquist: relative to the FFmpeg backends' RMS
FLAT_TOLERANCE = 0.01  # well inside the pass band: relative to the source RMS

# (source rate, target rate, tones in Hz well inside both pass bands, the tone near the edge)
CASES = [
    (44100, 16000, (1000.0, 4000.0), 7000.0),
    (22050, 16000, (1000.0, 4000.0), 7000.0),
    (48000, 16000, (1000.0, 4000.0), 7000.0),
    (8000, 16000, (1000.0, 3000.0), 3500.0),  # upsampling: the source's Nyquist is the edge
    (16000, 44100, (1000.0, 4000.0), 7000.0),
    (44100, 8000, (500.0, 2000.0), 3500.0),
]


def _tone_wav(freq: float, rate: int) -> bytes:
    t = np.arange(rate) / rate  # one second
    return encode_wav(AMPLITUDE * np.sin(2 * np.pi * freq * t), sample_rate=rate)


def _rms(wave: torch.Tensor) -> float:
    """RMS of the middle 80% (the ends hold the filters' edge effects)."""
    x = wave.double().numpy()
    n = x.shape[-1]
    return float(np.sqrt(np.mean(x[n // 10 : n - n // 10] ** 2)))


def _read(data: bytes, backend: str, rate: int) -> torch.Tensor:
    return Audio(backend=backend, sample_rate=rate, spectrogram=None).decode(data)


@pytest.mark.skipif(not FFMPEG_BACKENDS, reason="needs torchcodec or PyAV")
@pytest.mark.parametrize(("source", "target", "flat", "edge"), CASES)
def test_wave_reader_pass_band_matches_ffmpeg_backends(
    source: int, target: int, flat: tuple[float, ...], edge: float
) -> None:
    for freq in flat:
        data = _tone_wav(freq, source)
        ours = _rms(_read(data, "wave", target))
        assert abs(ours - SOURCE_RMS) <= FLAT_TOLERANCE * SOURCE_RMS, (freq, ours)
        for backend in FFMPEG_BACKENDS:
            theirs = _rms(_read(data, backend, target))
            assert abs(theirs - SOURCE_RMS) <= FLAT_TOLERANCE * SOURCE_RMS, (backend, theirs)
    data = _tone_wav(edge, source)
    ours = _rms(_read(data, "wave", target))
    for backend in FFMPEG_BACKENDS:
        theirs = _rms(_read(data, backend, target))
        assert abs(ours - theirs) <= EDGE_TOLERANCE * theirs, (edge, backend, ours, theirs)


@pytest.mark.skipif(not FFMPEG_BACKENDS, reason="needs torchcodec or PyAV")
def test_wave_reader_at_7khz_no_longer_loses_a_fifth() -> None:
    """The reported case: 44.1 -> 16 kHz, 7 kHz. Before: wave 0.288, FFmpeg 0.338, source 0.354."""
    data = _tone_wav(7000.0, 44100)
    ours = _rms(_read(data, "wave", 16000))
    assert 0.33 < ours < 0.35, ours
    for backend in FFMPEG_BACKENDS:
        theirs = _rms(_read(data, backend, 16000))
        assert abs(ours - theirs) <= EDGE_TOLERANCE * theirs, (backend, ours, theirs)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.int16, torch.bfloat16])
def test_resample_shapes_and_dtypes(dtype: torch.dtype) -> None:
    wave = torch.ones(2, 3, 441, dtype=dtype)
    out = resample(wave, 44100, 16000)
    assert out.shape == (2, 3, 160)
    assert out.dtype == (dtype if dtype.is_floating_point else torch.float32)
    # A constant stays constant away from the zero-padded ends.
    assert torch.allclose(out[..., 40:120].float(), torch.ones(2, 3, 80), atol=2e-2)
    assert resample(wave, 16000, 16000) is wave
    with pytest.raises(ValueError, match="Sample rates must be > 0"):
        resample(wave, 0, 16000)
