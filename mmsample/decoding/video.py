"""The `Video` spec: T RGB frames of a clip at uniform timestamps, the same on every backend.

Place in the data flow: the reader hands `Video.decode` the bytes of the sample's video field;
the timestamps come from `frame_times`, the frames from the decoder backend
(`mmsample.decoding.backends`), the resize from `mmsample.decoding.frames`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch

from .backends import DecodedVideo, get_backend
from .base import DTYPES, bad_parameter, check_backend, check_size, check_spec_field
from .frames import finish_frames

__all__ = ["Video", "frame_times", "uniform_subset"]


def frame_times(duration: float, frames: int, fps: float | None) -> list[float]:
    """The T timestamps (seconds from the first frame) that "T frames uniformly" means.

    With fps: `(i + 0.5) / fps` for i < T, the centres of T slots of 1/fps seconds over the first
    T/fps seconds; if the clip is shorter than T/fps (or fps is None): `(i + 0.5) * duration / T`,
    the centres of T equal segments of the clip. Every time lies strictly inside [0, duration).
    """
    if duration <= 0:
        raise ValueError(f"The clip has no duration ({duration} s); it holds no playable frame.")
    if fps is not None and frames / fps <= duration:
        return [(i + 0.5) / fps for i in range(frames)]
    return [(i + 0.5) * duration / frames for i in range(frames)]


def uniform_subset(total: int, k: int, generator: torch.Generator | None) -> list[int]:
    """k sorted distinct indices of range(total): random with a generator (OGM-GE's random k of T
    frames), else `floor((j + 0.5) * total / k)`, the centres of k equal parts."""
    if generator is not None:
        return sorted(torch.randperm(total, generator=generator)[:k].tolist())
    return [math.floor((j + 0.5) * total / k) for j in range(k)]


@dataclass
class Video:
    """T RGB frames of a clip, `[T, 3, H, W]` (T = random_frames if set), uint8 or float in [0, 1].

    The frames are what a player shows, identical on every backend. Timeline: t = 0 is the first
    frame the container presents (packets an mp4 edit list hides, as in clips cut by stream
    copy, are never returned; see `mmsample.decoding.backends.presentation_window`).
    Orientation: the display rotation (mp4 `rotate` tag / display matrix) is applied, so H and W
    are the displayed ones (a 64x32 clip rotated by 90 degrees gives `[T, 3, 64, 32]`); mirror
    flips are not.
    Timestamps: see `frame_times` (with fps=1.0, frames=10: 0.5 s, 1.5 s, ... 9.5 s; on a clip
    shorter than 10 s, the centres of 10 equal segments of the whole clip, frames repeating if it
    holds fewer than 10). With `random_frames=k`, k of those T are decoded: random with a
    generator, evenly spaced without.
    `size`: an int means a square (size, size), as OGM-GE's Resize((224, 224)); resized with
    `resize_frames` after decoding, so every backend gives the same pixels (torchcodec's own
    decoder Resize measured no faster and differs by up to 10 grey levels).
    A clip whose resolution changes mid-stream (concatenated segments, screen recordings) gives
    every frame at its first frame's size, as the ffmpeg CLI shows it (scaled with
    `resize_frames`: `mmsample.decoding.frames.stack_frames`), then at `size` if given.
    Frames on the "torchcodec-cuda" backend stay on the GPU.

    `decode` raises ValueError (the readers wrap it in a `SampleError` naming shard and key) for
    a truncated file (an mp4/Matroska file missing bytes it declares, or a video stream ending
    at least 0.75 frames before its header says), a clip without a video stream, or bytes no
    backend can decode.
    """

    field: str = "mp4"
    frames: int = 10
    fps: float | None = 1.0
    random_frames: int | None = None
    size: int | tuple[int, int] | None = None
    dtype: Literal["uint8", "float32"] = "uint8"
    backend: str | None = None

    def __post_init__(self) -> None:
        check_spec_field("Video", self.field)
        if not isinstance(self.frames, int) or isinstance(self.frames, bool) or self.frames < 1:
            raise bad_parameter("Video", "frames", "an int >= 1", self.frames)
        if self.fps is not None and not (isinstance(self.fps, int | float) and self.fps > 0):
            raise bad_parameter("Video", "fps", "None or a number > 0", self.fps)
        k = self.random_frames
        if k is not None and not (isinstance(k, int) and 1 <= k <= self.frames):
            raise bad_parameter(
                "Video", "random_frames", f"None or an int in [1, frames={self.frames}]", k
            )
        self.size = check_size("Video", self.size)
        if self.dtype not in DTYPES:
            raise bad_parameter("Video", "dtype", f"one of {list(DTYPES)}", self.dtype)
        check_backend("Video", self.backend)

    def decode(self, data: bytes, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """Decode the chosen frames -> uint8 (or float32) `[T, 3, H, W]`, in one open of the
        container (torchcodec opens a clip with discarded packets twice)."""
        decoded = get_backend(self.backend).video_frames(data, self.timestamps(generator))
        return self.finish(decoded)

    def timestamps(self, generator: torch.Generator | None) -> Callable[[float], list[float]]:
        """clip duration (seconds) -> the timestamps to decode: `frame_times`, or the
        `random_frames` of them drawn from `generator` (drawn now, once)."""
        picks = (
            uniform_subset(self.frames, self.random_frames, generator)
            if self.random_frames is not None
            else list(range(self.frames))
        )

        def times(duration: float) -> list[float]:
            all_times = frame_times(duration, self.frames, self.fps)
            return [all_times[i] for i in picks]

        return times

    def finish(self, decoded: DecodedVideo) -> torch.Tensor:
        """A backend's decoded frames -> resized to `size`, in `dtype`: what `decode` returns."""
        size = self.size if isinstance(self.size, tuple) else None
        return finish_frames(decoded.frames, size, self.dtype)
