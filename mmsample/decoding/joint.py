"""The video and the audio of one clip from one open of its container.

Place in the data flow: `Decoder` (`mmsample.decoding.decoder`) decodes the modalities an item
carries. When a `Video` and an `Audio` spec read the same field (an mp4's frames and its sound
track) and the item needs both, it asks `decode_clip` first: if both specs resolve to one
backend that decodes both streams of a container in one pass (`video_and_audio`, PyAV's: one
open, one demux), the clip is opened once instead of twice; otherwise (torchcodec, whose
decoders each open the bytes they share; decord; the "wave" reader) each spec decodes on its
own. Either way the tensors are equal: the same packets go through the same decoders, and each
spec draws from its own generator.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import torch

from .audio import WAVE_READER, Audio
from .backends import DecodedVideo, Timestamps, get_backend
from .video import Video

if TYPE_CHECKING:
    from .base import Spec

__all__ = ["ClipBackend", "clip_backend", "clip_pairs", "decode_clip"]


@runtime_checkable
class ClipBackend(Protocol):
    """A backend that decodes a clip's frames and its audio from one open of the container."""

    def video_and_audio(
        self, data: bytes, times: Timestamps, sample_rate: int
    ) -> tuple[DecodedVideo, torch.Tensor]:
        """(`video_frames(data, times)`, `audio(data, sample_rate, mono=False)`)."""
        ...


def clip_pairs(specs: Mapping[str, Spec]) -> tuple[tuple[str, str], ...]:
    """(video name, audio name) for each field that a `Video` and an `Audio` spec both read: the
    first of each kind in `specs` order. An `Audio(backend="wave")` never pairs (no container)."""
    videos: dict[str, str] = {}
    audios: dict[str, str] = {}
    for name, spec in specs.items():
        if isinstance(spec, Video):
            videos.setdefault(spec.field, name)
        elif isinstance(spec, Audio) and spec.backend != WAVE_READER:
            audios.setdefault(spec.field, name)
    return tuple((videos[f], audios[f]) for f in videos if f in audios)


def clip_backend(video: Video, audio: Audio) -> ClipBackend | None:
    """The backend both specs decode with, if it offers `video_and_audio`; else None. The
    default backend is resolved as each spec resolves it (`get_backend`, cached per process)."""
    backend = get_backend(video.backend)
    if backend is not get_backend(audio.backend):
        return None
    return backend if isinstance(backend, ClipBackend) else None


def decode_clip(
    video: Video,
    audio: Audio,
    data: bytes,
    *,
    video_generator: torch.Generator | None = None,
    audio_generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(`video.decode(data)`, `audio.decode(data)`) from one open of the container, or None when
    their backend cannot (`clip_backend`): the caller then decodes each on its own. Raises the
    ValueErrors the two `decode` calls raise."""
    backend = clip_backend(video, audio)
    if backend is None:
        return None
    times = video.timestamps(video_generator)
    frames, wave = backend.video_and_audio(data, times, audio.sample_rate)
    sound = audio.transform(audio.mix(wave), generator=audio_generator)
    return video.finish(frames), sound
