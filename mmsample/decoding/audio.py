"""The `Audio` spec: a spectrogram (or the waveform) of an audio file or a video's own track.

Place in the data flow: the reader hands `Audio.decode` the bytes of the sample's audio field; a
backend (or the "wave" reader, `mmsample.decoding.wav`) decodes them to a float waveform, and
the audio mathematics (`mmsample.decoding.audio_ops`) crops, pads and transforms it. The
sharding probe calls `Audio.waveform` too, so it accepts exactly what readers decode.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Literal

import torch

from . import audio_ops
from .backends import get_backend
from .base import bad_parameter, check_backend, check_spec_field
from .wav import check_wav_complete, read_wav

__all__ = ["SPECTROGRAMS", "WAVE_READER", "Audio"]

WAVE_READER = "wave"  # Audio(backend="wave"): PCM/float wav parsed here, resampled by scipy
SPECTROGRAMS = ("log", "mel", "logmel")


@dataclass
class Audio:
    """Audio of a wav/flac/... file or a video's own track: float32 spectrogram `[F, frames]`
    (`[C, F, frames]` if mono=False), or the waveform `[S]` / `[C, S]` if spectrogram=None.

    "log": log(|STFT| + 1e-7), F = n_fft // 2 + 1 (window 512, hop 159 = overlap 353, as BMMAL and
    OGM-GE state; see `mmsample.decoding.audio_ops` for where the authors' code differs). "mel":
    mel filterbank of the power spectrogram, F = n_mels; "logmel": its log(+1e-7). `seconds`: a
    random crop with a generator, the centre crop without; zeros appended if the audio is
    shorter.
    backend="wave" reads PCM/float wav without FFmpeg and resamples with scipy's `resample_poly`
    (`audio_ops.resample`), whose pass band matches the FFmpeg backends' resampler.
    """

    field: str = "wav"
    sample_rate: int = 16000
    mono: bool = True
    seconds: float | None = None
    spectrogram: Literal["log", "mel", "logmel"] | None = "log"
    n_fft: int = 512
    win_length: int = 512
    hop_length: int = 159
    n_mels: int = 128
    backend: str | None = None
    mel_scale: Literal["htk", "slaney"] = "htk"

    def __post_init__(self) -> None:
        check_spec_field("Audio", self.field)
        for name in ("sample_rate", "n_fft", "win_length", "hop_length", "n_mels"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise bad_parameter("Audio", name, "an int >= 1", value)
        if self.win_length > self.n_fft:
            raise bad_parameter("Audio", "win_length", f"<= n_fft={self.n_fft}", self.win_length)
        if self.seconds is not None and not (
            isinstance(self.seconds, int | float) and self.seconds > 0
        ):
            raise bad_parameter("Audio", "seconds", "None or a number > 0", self.seconds)
        if self.spectrogram is not None and self.spectrogram not in SPECTROGRAMS:
            raise bad_parameter(
                "Audio", "spectrogram", f"None or one of {list(SPECTROGRAMS)}", self.spectrogram
            )
        if self.mel_scale not in audio_ops.MEL_SCALES:
            raise bad_parameter(
                "Audio", "mel_scale", f"one of {list(audio_ops.MEL_SCALES)}", self.mel_scale
            )
        check_backend("Audio", self.backend, extra=(WAVE_READER,))

    def waveform(self, data: bytes) -> torch.Tensor:
        """The whole decoded track at `sample_rate`, float32 [C, S] (C = 1 if mono), channels in
        stream order for any layout FFmpeg reads (1..64 channels; the "wave" reader: any).

        Raises ValueError if the stream decodes to no samples or a wav's data chunk is cut
        short (the sharding probe calls this same method, so it accepts what readers decode).
        """
        if self.backend == WAVE_READER:
            wave, rate = read_wav(data)
            wave = audio_ops.resample(wave, rate, self.sample_rate)
        else:
            if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
                check_wav_complete(data)
            wave = get_backend(self.backend).audio(data, self.sample_rate, mono=False)
        return self.mix(wave)

    def mix(self, wave: torch.Tensor) -> torch.Tensor:
        """A decoded track float32 [C, S] -> [1, S] (their mean) if mono, else as is; raises
        ValueError when it holds no samples."""
        if wave.shape[-1] == 0:
            raise ValueError("the audio stream decodes to no samples (empty or undecodable)")
        return audio_ops.mixdown(wave) if self.mono else wave

    def decode(self, data: bytes, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """Decode, crop/pad to `seconds`, then compute the spectrogram if one is asked for."""
        return self.transform(self.waveform(data), generator=generator)

    def transform(
        self, wave: torch.Tensor, *, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """`waveform`'s output [C, S] -> what `decode` returns: cropped or padded to `seconds`
        (a random crop drawn from `generator`), then the spectrogram if one is asked for."""
        if self.seconds is not None:
            wave = audio_ops.crop_or_pad(
                wave, round(self.seconds * self.sample_rate), generator=generator
            )
        if self.spectrogram is None:
            return wave[0] if self.mono else wave
        power = 1.0 if self.spectrogram == "log" else 2.0
        spec = audio_ops.spectrogram(
            wave,
            n_fft=self.n_fft,
            win_length=self.win_length,
            hop_length=self.hop_length,
            power=power,
        )
        if self.spectrogram in ("mel", "logmel"):
            fb = _mel_filterbank(self.n_fft // 2 + 1, self.sample_rate, self.n_mels, self.mel_scale)
            spec = torch.matmul(spec.transpose(-1, -2), fb.to(spec.device)).transpose(-1, -2)
        if self.spectrogram in ("log", "logmel"):
            spec = audio_ops.log_compress(spec)
        return spec[0] if self.mono else spec


@functools.cache
def _mel_filterbank(n_freqs: int, sample_rate: int, n_mels: int, scale: str) -> torch.Tensor:
    return audio_ops.mel_filterbank(n_freqs, sample_rate, n_mels, scale=scale)  # type: ignore[arg-type]
