"""torchcodec decoder backend: the default, fastest on this project's machines for audio and dense
frame decoding (on sparse 1 fps sampling it and PyAV measured within ~15% of each other).

Place in the data flow: `mmsample.decoding` calls it (through
`mmsample.decoding.backends.get_backend`) on shard member bytes inside DataLoader workers. Each
call opens the bytes with one FFmpeg thread (`num_ffmpeg_threads=1`: one decoder thread per
worker was fastest here) in seek mode "exact": the open scans the packets (demuxing only, no
decoding) for the presentation timeline and the truncation check
(`mmsample.decoding.backends.presentation_window`). The same decoder then serves the frames,
one time query per frame:
- one at a time, because torchcodec's batch calls size their output from the stream header, so
  a clip whose resolution changes mid-stream fails or comes back grey (torchcodec#433); single
  frames come at their own size (then `mmsample.decoding.frames.stack_frames`). An exact-mode
  decoder serves forward queries inside one GOP without seeking again (torchcodec 0.13,
  `canWeAvoidSeeking`); measured on 120-frame 64x64 clips, one exact-mode open served 32
  consecutive frames, 4 sparse ones and all 120 as fast as or faster than a second,
  approximate-mode open, and the demo's 4 frames of a 2 s clip in 1.15 ms instead of 1.9 ms;
- a clip whose packets an mp4 edit list discards (fewer presented frames than the header
  declares) gets a second, "approximate" open for its frames, seeking through FFmpeg's own
  index: the exact-mode index leaves out the discarded packets, so on a clip cut by stream
  copy (`ffmpeg -ss 1.3 -i src.mp4 -c copy`) it seeks to the first *presented* keyframe and
  returns frame 50 where a player shows frame 33 (torchcodec 0.13); FFmpeg's seek starts from
  the discarded keyframe and the decoder drops the discarded frames, as players do.
Time queries are frame-accurate in both modes ("approximate" only concerns index-based access),
so the frames equal PyAV's. torchcodec (>= 0.11) applies the display rotation
itself: frames come back in display orientation, as from PyAV. Importing torchcodec without the
FFmpeg libraries raises RuntimeError or OSError, not ImportError, so all three are caught and
the backend is then not registered. "torchcodec-cuda" decodes video on the GPU (`device="cuda"`,
NVDEC) and returns CUDA tensors; audio and images stay on the CPU; it is never picked
automatically.
"""

from __future__ import annotations

import re
from typing import Any, Literal

import torch

from ..audio_ops import mixdown
from ..frames import stack_frames
from . import (
    DecodedVideo,
    MediaKind,
    Timestamps,
    channel_limit_hint,
    presentation_window,
    pyav_image,
    resolve_times,
)
from .container import check_complete

SEEK_MODE: Literal["exact", "approximate"] = "exact"  # the packet scan (and images)
VIDEO_SEEK_MODE: Literal["exact", "approximate"] = "approximate"  # frames of edit-list clips
PROBE_RATE = 16000  # the rate `probe` decodes audio at (the `Audio` spec's default)

try:
    from torchcodec.decoders import AudioDecoder, VideoDecoder
except (ImportError, RuntimeError, OSError) as err:  # no FFmpeg libraries -> RuntimeError/OSError
    IMPORT_ERROR: BaseException | None = err
else:
    IMPORT_ERROR = None


def _fail(what: str, err: BaseException) -> ValueError:
    # torchcodec's C++ errors read "Function, /path/File.cpp:123, message": keep the message.
    reason = re.sub(r"^\w+, \S+:\d+, ", "", str(err).strip())
    return ValueError(f"torchcodec could not decode the {what}: {reason}")


class TorchcodecBackend:
    """Decode with torchcodec on the CPU, from bytes, one FFmpeg thread per call."""

    name = "torchcodec"
    device = "cpu"

    def _video_decoder(
        self,
        data: bytes,
        *,
        mode: Literal["exact", "approximate"] = VIDEO_SEEK_MODE,
        device: str = "cpu",
    ) -> Any:
        try:
            return VideoDecoder(data, num_ffmpeg_threads=1, seek_mode=mode, device=device)
        except Exception as err:
            raise _fail("video (no decodable video stream?)", err) from err

    def _open_video(
        self, data: bytes, *, device: str = "cpu"
    ) -> tuple[Any, float, float, tuple[int, int]]:
        """-> (decoder for frames, begin, duration, header (H, W) in display orientation).

        An exact-mode open scans the packets (timeline, truncation check). Its decoder serves
        the frames unless packets were discarded (fewer presented frames than the header
        declares, truncation being refused already): then an approximate-mode decoder does
        (see the module docstring).
        """
        check_complete(data)
        decoder = self._video_decoder(data, mode=SEEK_MODE, device=device)
        meta = decoder.metadata
        if (
            meta.begin_stream_seconds_from_content is None
            or meta.end_stream_seconds_from_content is None
        ):
            raise ValueError("torchcodec found no presented frame in the video stream")
        presented = int(meta.num_frames_from_content or 0)
        begin, duration = presentation_window(
            header_begin=meta.begin_stream_seconds_from_header,
            header_duration=meta.duration_seconds_from_header,
            content_begin=float(meta.begin_stream_seconds_from_content),
            content_end=float(meta.end_stream_seconds_from_content),
            content_frames=presented,
        )
        header = (int(meta.height or 0), int(meta.width or 0))
        if round(float(meta.rotation or 0) / 90.0) % 2:  # torchcodec applies the rotation
            header = header[::-1]
        if presented < int(meta.num_frames_from_header or 0):
            decoder = self._video_decoder(data, mode=VIDEO_SEEK_MODE, device=device)
        return decoder, begin, duration, header

    def video_frames(self, data: bytes, times: Timestamps) -> DecodedVideo:
        """Frames a player shows at `times` seconds after the first presented frame, uint8
        [T, 3, H, W] in display orientation; ValueError if truncated or undecodable.

        Decoded one at a time: torchcodec's batch calls size their output from the stream
        header and fail, or return grey frames, when the resolution changes mid-stream
        (meta-pytorch/torchcodec#433); single frames come at their own size, and
        `mmsample.decoding.frames.stack_frames` scales them to the first frame's size.
        """
        decoder, begin, duration, header = self._open_video(data, device=self.device)
        ts = resolve_times(times, duration)

        def first_size() -> tuple[int, int]:
            height, width = decoder.get_frame_played_at(begin).data.shape[-2:]
            return int(height), int(width)

        try:
            if not ts:
                return DecodedVideo(
                    torch.empty(0, 3, *first_size(), dtype=torch.uint8, device=self.device),
                    duration,
                    ts,
                )
            decoded = {t: decoder.get_frame_played_at(begin + t).data for t in sorted(set(ts))}
            frames = stack_frames([decoded[t] for t in ts], header, first_size)
        except Exception as err:
            raise _fail("video frames", err) from err
        return DecodedVideo(frames, duration, ts)

    def audio(self, data: bytes, sample_rate: int, mono: bool) -> torch.Tensor:
        """All samples of the best audio stream at `sample_rate`, float32 [C, S]."""
        try:
            decoder = AudioDecoder(data, sample_rate=sample_rate)
        except Exception as err:
            raise _fail("audio (no decodable audio stream?)", err) from err
        channels = int(decoder.metadata.num_channels or 0)
        try:
            samples = decoder.get_all_samples().data
        except Exception as err:
            if "No audio frames were decoded" in str(err):  # an empty stream: [C, 0], as PyAV
                return torch.zeros(1 if mono else max(channels, 1), 0)
            raise ValueError(
                f"{_fail(f'audio ({channels} channels)', err)}{channel_limit_hint(channels)}"
            ) from err
        samples = samples.to(torch.float32)
        return mixdown(samples) if mono else samples

    def image(self, data: bytes) -> torch.Tensor:
        """The first frame of an image file as uint8 [3, H, W] RGB, or [4, H, W] RGBA.

        torchcodec returns 8-bit RGB only, so files that may carry transparency or hold more
        than 8 bits per sample are decoded by PyAV (installed with the same `video` extra; see
        `mmsample.decoding.backends.pyav_image`): the same pixels as the PyAV backend.
        """
        decoded = pyav_image(data, self.name)
        if decoded is not None:
            return decoded
        try:
            return (
                VideoDecoder(data, num_ffmpeg_threads=1, seek_mode=SEEK_MODE).get_frame_at(0).data
            )
        except Exception as err:
            raise _fail("image", err) from err

    def probe(self, data: bytes, kind: MediaKind) -> None:
        """Video: scan the packets (timeline and truncation check), decode the first presented
        frame, as `video_frames` does. Audio: decode all of it, as `audio` does (the first packet
        may start late). Image: decode it, as `image` does."""
        if kind == "audio":
            if self.audio(data, PROBE_RATE, mono=False).shape[-1] == 0:
                raise ValueError("the audio stream decodes to no samples")
            return
        if kind == "image":
            self.image(data)
            return
        decoder, begin, _duration, _header = self._open_video(data)  # raises if truncated
        try:
            decoder.get_frame_played_at(begin)
        except Exception as err:
            raise _fail("first video frame", err) from err


class TorchcodecCudaBackend(TorchcodecBackend):
    """torchcodec decoding video on the GPU (NVDEC); frames come back as CUDA tensors."""

    name = "torchcodec-cuda"
    device = "cuda"


BACKENDS: dict[str, type] = (
    {"torchcodec": TorchcodecBackend, "torchcodec-cuda": TorchcodecCudaBackend}
    if IMPORT_ERROR is None
    else {}
)
