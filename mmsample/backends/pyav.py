"""PyAV decoder backend: the fallback that bundles its own FFmpeg (no system libraries needed).

Place in the data flow: like the torchcodec backend, called by `mmsample.spec` on shard member
bytes in DataLoader workers, one decoder thread per call (`thread_count=1`). It reproduces
torchcodec's "exact" semantics so both give the same frames: the packets are scanned first (no
decoding) to find the stream's first pts, its end (max pts + duration) and its keyframes; the
frame played at t is the last frame whose pts <= round(t / time_base); the decoder seeks only when
a keyframe lies between the current position and the next wanted frame.
"""

from __future__ import annotations

import bisect
import io
from typing import Any

import numpy as np
import torch

from mmsample.audio import mixdown
from mmsample.backends import (
    DecodedVideo,
    MediaKind,
    Timestamps,
    channel_limit_hint,
    resolve_times,
)

try:
    import av
except (ImportError, RuntimeError, OSError) as err:
    IMPORT_ERROR: BaseException | None = err
else:
    IMPORT_ERROR = None


def _open(data: bytes, what: str) -> Any:
    try:
        return av.open(io.BytesIO(data), mode="r")
    except Exception as err:
        raise ValueError(f"PyAV could not open the {what}: {err}") from err


def _stream(container: Any, kind: str) -> Any:
    streams = container.streams.video if kind == "video" else container.streams.audio
    if not streams:
        raise ValueError(f"the file has no {kind} stream")
    stream = container.streams.best(kind)
    stream.codec_context.thread_count = 1
    return stream


def _scan(container: Any, stream: Any) -> tuple[list[int], list[int], int]:
    """Demux without decoding -> (sorted frame pts, sorted keyframe pts, end pts)."""
    pts: list[int] = []
    keys: list[int] = []
    end: int | None = None
    try:
        for packet in container.demux(stream):
            p = packet.pts if packet.pts is not None else packet.dts
            if p is None or packet.size == 0:
                continue
            pts.append(p)
            if packet.is_keyframe:
                keys.append(p)
            stop = p + (packet.duration or 0)
            end = stop if end is None else max(end, stop)
    except Exception as err:
        raise ValueError(f"PyAV could not read the video packets: {err}") from err
    if not pts or end is None:
        raise ValueError("the video stream holds no frames")
    pts.sort()
    keys.sort()
    return pts, keys or pts[:1], end


def _packed(frame: Any, channels: int) -> np.ndarray:
    """A packed float audio frame -> [C, n] (its single plane holds n interleaved C-tuples)."""
    return frame.to_ndarray().reshape(-1, channels).T


def _rgb(frame: Any) -> np.ndarray:
    return frame.to_ndarray(format="rgb24")


class PyAVBackend:
    """Decode with PyAV's bundled FFmpeg, from bytes, one decoder thread per call."""

    name = "pyav"

    def video_frames(self, data: bytes, times: Timestamps) -> DecodedVideo:
        """Frames played at `times` seconds after the first frame, uint8 [T, 3, H, W]."""
        with _open(data, "video") as container:
            stream = _stream(container, "video")
            tb = float(stream.time_base)
            pts, keys, end = _scan(container, stream)
            begin = pts[0]
            duration = (end - begin) * tb
            ts = resolve_times(times, duration)
            if not ts:
                w, h = stream.codec_context.width, stream.codec_context.height
                return DecodedVideo(torch.empty(0, 3, h, w, dtype=torch.uint8), duration, ts)
            # The frame played at t: last pts <= the pts closest to t (torchcodec's rule).
            wanted = []
            for t in ts:
                target = round((begin * tb + t) / tb)
                wanted.append(pts[max(0, bisect.bisect_right(pts, target) - 1)])
            try:
                decoded = self._decode_at(container, stream, sorted(set(wanted)), keys)
            except Exception as err:
                raise ValueError(f"PyAV could not decode the video frames: {err}") from err
        frames = np.stack([decoded[p] for p in wanted])
        return DecodedVideo(torch.from_numpy(frames).permute(0, 3, 1, 2).contiguous(), duration, ts)

    @staticmethod
    def _decode_at(
        container: Any, stream: Any, wanted: list[int], keys: list[int]
    ) -> dict[int, np.ndarray]:
        out: dict[int, np.ndarray] = {}
        frames = None
        position: int | None = None  # pts of the last decoded frame
        for want in wanted:
            key = keys[max(0, bisect.bisect_right(keys, want) - 1)]
            if frames is None or position is None or key > position:
                container.seek(key, stream=stream, backward=True, any_frame=False)
                frames = container.decode(stream)
            previous = None
            for frame in frames:
                p = frame.pts if frame.pts is not None else frame.dts
                position = p
                if p == want:
                    out[want] = _rgb(frame)
                    break
                if p is not None and p > want:  # the wanted pts never came out: take the one before
                    out[want] = _rgb(previous if previous is not None else frame)
                    break
                previous = frame
            else:
                if previous is None:
                    raise ValueError(f"no frame decoded at or after pts {want}")
                out[want] = _rgb(previous)
        return out

    def audio(self, data: bytes, sample_rate: int, mono: bool) -> torch.Tensor:
        """All samples of the best audio stream at `sample_rate`, float32 [C, S], channels in
        stream order (any layout, 1..64 channels: FFmpeg's resampler takes at most 64)."""
        with _open(data, "audio") as container:
            stream = _stream(container, "audio")
            channels = stream.codec_context.channels
            # Packed float output, reshaped here: PyAV (<= 18) miscounts the planes of planar
            # frames with >= 8 channels and reads past them (a segfault), so never ask for fltp.
            try:
                resampler = av.AudioResampler(format="flt", layout=stream.layout, rate=sample_rate)
                chunks = [
                    _packed(out, channels)
                    for frame in container.decode(stream)
                    for out in resampler.resample(frame)
                ]
                chunks += [_packed(out, channels) for out in resampler.resample(None)]
            except Exception as err:
                raise ValueError(
                    f"PyAV could not decode the audio ({channels} channels, "
                    f"{stream.codec_context.name}): {err}{channel_limit_hint(channels)}"
                ) from err
        wave = (
            torch.from_numpy(np.concatenate(chunks, axis=1)) if chunks else torch.zeros(channels, 0)
        ).to(torch.float32)
        return mixdown(wave) if mono else wave

    def image(self, data: bytes) -> torch.Tensor:
        """The first frame of an image file as uint8 [3, H, W] RGB, or [4, H, W] RGBA (straight
        alpha) when its pixel format carries transparency (RGBA, grey + alpha, a palette or
        colour key with tRNS). Stored orientation: `mmsample.spec.Image` applies EXIF's."""
        with _open(data, "image") as container:
            stream = _stream(container, "video")
            try:
                frame = next(iter(container.decode(stream)), None)
                if frame is None:
                    raise ValueError("PyAV found no frame in the image")
                fmt = frame.format
                alpha = fmt.has_palette or any(c.is_alpha for c in fmt.components)
                if max(c.bits for c in fmt.components) > 8:
                    # 16-bit: convert at 16 bits, round to 8 here (FFmpeg's direct 16-bit grey
                    # to 8-bit RGB conversion is off by one: 200 * 257 became 201).
                    deep = frame.to_ndarray(format="rgba64le" if alpha else "rgb48le")
                    pixels = ((deep.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
                else:
                    pixels = frame.to_ndarray(format="rgba" if alpha else "rgb24")
            except Exception as err:
                raise ValueError(f"PyAV could not decode the image: {err}") from err
        image = torch.from_numpy(pixels).permute(2, 0, 1).contiguous()
        if alpha and fmt.has_palette and bool((image[3] == 255).all()):
            image = image[:3].contiguous()  # a palette without transparent entries
        return image

    def probe(self, data: bytes, kind: MediaKind) -> None:
        """Video: open the container, compare frame counts (header vs packets), decode one
        frame. Audio: decode all of it, as `audio` does. Image: decode it, as `image` does."""
        if kind == "audio":
            if self.audio(data, 16000, mono=False).shape[-1] == 0:
                raise ValueError("the audio stream decodes to no samples")
            return
        if kind == "image":
            self.image(data)
            return
        stream_kind = "video"
        if kind == "video":
            with _open(data, kind) as container:
                stream = _stream(container, stream_kind)
                declared = stream.frames
                found = len(_scan(container, stream)[0])
            if declared and found < declared:
                raise ValueError(
                    f"video is truncated: its header declares {declared} frames, {found} are present"
                )
        with _open(data, kind) as container:
            stream = _stream(container, stream_kind)
            try:
                frame = next(iter(container.decode(stream)), None)
            except Exception as err:
                raise ValueError(f"PyAV could not decode the first {kind} frame: {err}") from err
        if frame is None:
            raise ValueError(f"the {kind} stream holds no decodable frame")


BACKENDS: dict[str, type] = {"pyav": PyAVBackend} if IMPORT_ERROR is None else {}
