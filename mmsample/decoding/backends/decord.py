"""decord decoder backend: optional and legacy (last release 2021); registered only if importable.

Place in the data flow: an alternative to torchcodec and PyAV for users who already have decord.
The frame played at t is the last frame whose start time <= t, from decord's own per-frame
timestamps, the same rule as the other backends. One decoder thread per call. Not exercised by
this project's tests (decord is not installed here); PyAV/torchcodec are the supported paths.
Truncated mp4/Matroska files are refused as on the other backends (`check_complete`), but decord
reads neither an mp4 edit list nor the display rotation: on clips cut by stream copy, or with
rotation metadata, it does not give the frames a player shows (the other backends do). Clips
whose resolution changes mid-stream are untested on decord; the other backends scale every frame
to the first frame's size (`mmsample.decoding.frames.stack_frames`).
"""

from __future__ import annotations

import bisect
import io
from typing import Any

import torch

from ..audio_ops import mixdown
from . import (
    DecodedVideo,
    MediaKind,
    Timestamps,
    pyav_image,
    resolve_times,
)
from .container import check_complete

try:
    import decord
except (ImportError, RuntimeError, OSError) as err:
    IMPORT_ERROR: BaseException | None = err
else:
    IMPORT_ERROR = None


def _reader(data: bytes, what: str) -> Any:
    if what == "video":
        check_complete(data)
    try:
        return decord.VideoReader(io.BytesIO(data), ctx=decord.cpu(0), num_threads=1)
    except Exception as err:
        raise ValueError(f"decord could not open the {what}: {err}") from err


class DecordBackend:
    """Decode with decord (video, audio through its AudioReader); legacy, optional."""

    name = "decord"

    def video_frames(self, data: bytes, times: Timestamps) -> DecodedVideo:
        """Frames played at `times` seconds after the first frame, uint8 [T, 3, H, W]."""
        reader = _reader(data, "video")
        n = len(reader)
        if n == 0:
            raise ValueError("the video stream holds no frames")
        stamps = reader.get_frame_timestamp(list(range(n)))  # [n, 2]: start, end seconds
        starts = sorted(float(s) for s in stamps[:, 0])
        begin, end = starts[0], float(stamps[:, 1].max())
        duration = end - begin
        ts = resolve_times(times, duration)
        if not ts:
            h, w = reader[0].shape[:2]
            return DecodedVideo(torch.empty(0, 3, h, w, dtype=torch.uint8), duration, ts)
        indices = [max(0, bisect.bisect_right(starts, begin + t) - 1) for t in ts]
        try:
            batch = reader.get_batch(indices).asnumpy()
        except Exception as err:
            raise ValueError(f"decord could not decode the video frames: {err}") from err
        return DecodedVideo(torch.from_numpy(batch).permute(0, 3, 1, 2).contiguous(), duration, ts)

    def audio(self, data: bytes, sample_rate: int, mono: bool) -> torch.Tensor:
        """All samples of the audio stream at `sample_rate`, float32 [C, S]."""
        try:
            reader = decord.AudioReader(
                io.BytesIO(data), ctx=decord.cpu(0), sample_rate=sample_rate, mono=False
            )
            wave = torch.from_numpy(reader[:].asnumpy()).to(torch.float32)
        except Exception as err:
            raise ValueError(f"decord could not decode the audio: {err}") from err
        if wave.dim() == 1:
            wave = wave[None]
        return mixdown(wave) if mono else wave

    def image(self, data: bytes) -> torch.Tensor:
        """The first frame of an image file as uint8 [3, H, W]; files that may carry
        transparency or hold > 8 bits per sample are decoded by PyAV (`pyav_image`)."""
        decoded = pyav_image(data, self.name)
        if decoded is not None:
            return decoded
        reader = _reader(data, "image")
        try:
            return torch.from_numpy(reader[0].asnumpy()).permute(2, 0, 1).contiguous()
        except Exception as err:
            raise ValueError(f"decord could not decode the image: {err}") from err

    def probe(self, data: bytes, kind: MediaKind) -> None:
        """Open the file and decode its first frame (decord reads no frame-count header)."""
        if kind == "audio":
            self.audio(data, 16000, mono=True)
            return
        reader = _reader(data, kind)
        try:
            reader[0]
        except Exception as err:
            raise ValueError(f"decord could not decode the first {kind} frame: {err}") from err


BACKENDS: dict[str, type] = {"decord": DecordBackend} if IMPORT_ERROR is None else {}
