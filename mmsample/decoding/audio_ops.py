"""Audio mathematics as pure tensor functions: mixdown, crop/pad, resampling, spectrograms, mel.

Place in the data flow: a backend decodes a shard member to a float waveform `[C, S]`;
`mmsample.decoding.Audio` then calls these functions to produce the model's input. Nothing here
reads bytes or holds state, so every function is tested against hand computations.

The spectrogram, and where the papers' code differs from the paper text
-----------------------------------------------------------------------
BMMAL (its paper, section 4) and OGM-GE state "a spectrogram with a window length of 512 and an
overlap length of 353", i.e. `n_fft = win_length = 512`, hop `512 - 353 = 159`. mmsample's
default is exactly that: `torch.stft` with a periodic Hann window of 512 samples, hop 159,
centred frames (reflect padding of n_fft // 2 on both sides, as `librosa.stft` before librosa
0.10 and `torch.stft` by default), giving `n_fft // 2 + 1 = 257` frequency bins and
`1 + S // 159` frames, then `log(|X| + 1e-7)` of the MAGNITUDE (not the power), which is the
log-compression in the authors' data loaders. The result equals a hand-framed numpy FFT with
those settings (tests/test_audio.py), which is what librosa.stft computes.

The authors' public code (GeWu-Lab/OGM-GE_CVPR2022) differs from that text in three places:
- `dataset/CramedDataset.py`: `librosa.stft(x, n_fft=512, hop_length=353)` at 22050 Hz on 3 s,
  then `log(abs + 1e-7)`: the "overlap" 353 is passed as the HOP. Reproduce with
  `Audio(sample_rate=22050, hop_length=353)`.
- `dataset/VGGSoundDataset.py`: `n_fft=256, hop_length=128` at 16 kHz on a random 5 s crop, short
  clips tiled (`np.tile`) to 10 s first; mmsample pads short audio with zeros instead.
- `pre-processing/obtain_audio_spectrogram.py`: `scipy.signal.spectrogram(nperseg=512,
  noverlap=353)` (hop 159, as the paper says) but that is a power spectral DENSITY with a Tukey
  window, mean detrending and no centre padding, followed by `log(psd + 1e-7)` and per-clip
  standardisation. mmsample does not reproduce this variant.
The loaders also clip samples to [-1, 1]; mmsample leaves decoded samples as they are. librosa
>= 0.10 pads with zeros (`pad_mode="constant"`); pass `pad_mode="constant"` to match it.

Mel filterbank: triangular filters on the HTK mel scale without area normalisation by default
(torchaudio's `MelSpectrogram` default), or the Slaney scale with Slaney area normalisation
(librosa's default); applied to the POWER spectrogram (|X|^2), as both libraries do.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "LOG_EPS",
    "MEL_SCALES",
    "crop_or_pad",
    "hz_to_mel",
    "log_compress",
    "mel_filterbank",
    "mel_to_hz",
    "mixdown",
    "resample",
    "spectrogram",
]

LOG_EPS = 1e-7  # the authors' log(|X| + 1e-7)
MEL_SCALES = ("htk", "slaney")
MelScale = Literal["htk", "slaney"]


def mixdown(wave: torch.Tensor) -> torch.Tensor:
    """Average the channels of `[C, S]` to `[1, S]` (librosa's mono=True; FFmpeg's own stereo
    downmix weights each channel 1/sqrt(2) instead, so backends decode all channels)."""
    if wave.dim() != 2:
        raise ValueError(f"mixdown expects a waveform [C, S]; got shape {tuple(wave.shape)}.")
    return wave.mean(dim=0, keepdim=True)


def crop_or_pad(
    wave: torch.Tensor, length: int, *, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Cut `[..., S]` to `[..., length]`: a uniformly random window drawn with `generator`, the
    centre window without one (start `(S - length) // 2`); zeros appended if S < length."""
    if length < 0:
        raise ValueError(f"The 'length' parameter of crop_or_pad must be >= 0; got {length}.")
    n = wave.shape[-1]
    if n < length:
        return F.pad(wave, (0, length - n))
    if generator is None:
        start = (n - length) // 2
    else:
        start = int(torch.randint(0, n - length + 1, (1,), generator=generator).item())
    return wave[..., start : start + length]


def resample(wave: torch.Tensor, orig_freq: int, new_freq: int) -> torch.Tensor:
    """Band-limited resampling of `[..., S]` from `orig_freq` to `new_freq` Hz (ints) ->
    `[..., ceil(S * new_freq / orig_freq)]`, float dtype kept (integers give float32), on the
    input's device; the input itself when the rates are equal. For readers that cannot resample
    themselves (`Audio(backend="wave")`).

    scipy's `resample_poly` (polyphase FIR over the reduced ratio, Kaiser window, zero padding at
    the ends, no delay): its pass band matches FFmpeg's resampler, which the other backends use.
    At 44.1 kHz -> 16 kHz a 0.354 RMS tone keeps 0.354 at 1 and 4 kHz (FFmpeg: 0.354) and 0.343
    at 7 kHz (FFmpeg: 0.338); samples agree with FFmpeg's to ~6e-4. Raises ValueError for a rate
    that is not > 0.
    """
    if orig_freq <= 0 or new_freq <= 0:
        raise ValueError(f"Sample rates must be > 0; got orig_freq={orig_freq}, new={new_freq}.")
    if orig_freq == new_freq:
        return wave
    from scipy.signal import resample_poly  # imported on first use: scipy loads in ~0.3 s

    g = math.gcd(orig_freq, new_freq)
    dtype = wave.dtype if wave.dtype.is_floating_point else torch.float32
    work = torch.float64 if dtype == torch.float64 else torch.float32  # numpy has no bfloat16
    samples = wave.detach().to("cpu", work).numpy()
    out = resample_poly(samples, new_freq // g, orig_freq // g, axis=-1)
    return torch.from_numpy(np.ascontiguousarray(out)).to(wave.device, dtype)


def spectrogram(
    wave: torch.Tensor,
    *,
    n_fft: int = 512,
    win_length: int = 512,
    hop_length: int = 159,
    power: float = 1.0,
    center: bool = True,
    pad_mode: str = "reflect",
) -> torch.Tensor:
    """|STFT|**power of `[..., S]` with a periodic Hann window -> `[..., n_fft // 2 + 1, frames]`
    (power 1: magnitude, the authors' setting; 2: power, for mel)."""
    if not 1 <= win_length <= n_fft:
        raise ValueError(
            f"Need 1 <= win_length <= n_fft; got win_length={win_length}, n_fft={n_fft}."
        )
    if hop_length < 1:
        raise ValueError(f"The 'hop_length' must be >= 1; got {hop_length}.")
    n = wave.shape[-1]
    if center and pad_mode == "reflect" and n <= n_fft // 2:
        raise ValueError(
            f"Audio of {n} samples is too short for a centred STFT with n_fft={n_fft} "
            f"(reflect padding needs more than {n_fft // 2}); crop/pad it to a fixed length first."
        )
    if not center and n < n_fft:
        raise ValueError(f"Audio of {n} samples is shorter than one window (n_fft={n_fft}).")
    dtype = wave.dtype if wave.dtype.is_floating_point else torch.float32
    window = torch.hann_window(win_length, periodic=True, dtype=dtype, device=wave.device)
    flat = wave.reshape(-1, n).to(dtype)
    spec = torch.stft(
        flat,
        n_fft=n_fft,
        hop_length=hop_length,
        win_length=win_length,
        window=window,
        center=center,
        pad_mode=pad_mode,
        return_complex=True,
    ).abs()
    if power != 1.0:
        spec = spec.pow(power)
    return spec.reshape(*wave.shape[:-1], *spec.shape[-2:])


def log_compress(spec: torch.Tensor, eps: float = LOG_EPS) -> torch.Tensor:
    """Natural log of `spec + eps` (the authors' `np.log(np.abs(stft) + 1e-7)`)."""
    return torch.log(spec + eps)


def hz_to_mel(freq: torch.Tensor, scale: MelScale = "htk") -> torch.Tensor:
    """Hz to mel: HTK `2595 log10(1 + f/700)`; Slaney: `3f/200` below 1 kHz, log-spaced above."""
    freq = torch.as_tensor(freq, dtype=torch.float64)
    if scale == "htk":
        return 2595.0 * torch.log10(1.0 + freq / 700.0)
    if scale == "slaney":
        logstep = math.log(6.4) / 27.0
        linear = 3.0 * freq / 200.0
        log_part = 15.0 + torch.log(torch.clamp(freq, min=1e-10) / 1000.0) / logstep
        return torch.where(freq >= 1000.0, log_part, linear)
    raise ValueError(f"The 'scale' parameter must be one of {list(MEL_SCALES)}; got {scale!r}.")


def mel_to_hz(mel: torch.Tensor, scale: MelScale = "htk") -> torch.Tensor:
    """Inverse of `hz_to_mel`."""
    mel = torch.as_tensor(mel, dtype=torch.float64)
    if scale == "htk":
        return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)
    if scale == "slaney":
        logstep = math.log(6.4) / 27.0
        return torch.where(
            mel >= 15.0, 1000.0 * torch.exp(logstep * (mel - 15.0)), 200.0 * mel / 3.0
        )
    raise ValueError(f"The 'scale' parameter must be one of {list(MEL_SCALES)}; got {scale!r}.")


def mel_filterbank(
    n_freqs: int,
    sample_rate: int,
    n_mels: int,
    *,
    f_min: float = 0.0,
    f_max: float | None = None,
    scale: MelScale = "htk",
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Triangular mel filters `[n_freqs, n_mels]` over the bins of an rfft (0..sample_rate/2);
    Slaney scale also gets Slaney area normalisation (2 / bandwidth in Hz)."""
    f_max = sample_rate / 2.0 if f_max is None else f_max
    if not 0.0 <= f_min < f_max <= sample_rate / 2.0:
        raise ValueError(f"Need 0 <= f_min < f_max <= sample_rate/2; got {f_min}, {f_max}.")
    if n_mels < 1 or n_freqs < 2:
        raise ValueError(f"Need n_mels >= 1 and n_freqs >= 2; got {n_mels}, {n_freqs}.")
    bins = torch.linspace(0.0, sample_rate / 2.0, n_freqs, dtype=torch.float64)
    m_lo, m_hi = hz_to_mel(torch.tensor(f_min), scale), hz_to_mel(torch.tensor(f_max), scale)
    edges = mel_to_hz(
        torch.linspace(float(m_lo), float(m_hi), n_mels + 2, dtype=torch.float64), scale
    )
    lower, centre, upper = edges[:-2], edges[1:-1], edges[2:]
    rising = (bins[:, None] - lower[None, :]) / (centre - lower)[None, :]
    falling = (upper[None, :] - bins[:, None]) / (upper - centre)[None, :]
    fb = torch.clamp(torch.minimum(rising, falling), min=0.0)
    if scale == "slaney":
        fb = fb * (2.0 / (upper - lower))[None, :]
    return fb.to(dtype)
