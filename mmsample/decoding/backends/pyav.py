"""PyAV decoder backend: the fallback that bundles its own FFmpeg (no system libraries needed).

Place in the data flow: like the torchcodec backend, called by `mmsample.decoding` on shard
member bytes in DataLoader workers, one decoder thread per call (`thread_count=1`). Both backends
give the same frames: the packets are scanned first (no decoding) for the presentation timeline
(`mmsample.decoding.backends.presentation_window`: packets an mp4 edit list discards are not
presented, t = 0 is the first presented frame, negative timestamps included) and the keyframes, the
discarded ones included, since a cut by stream copy starts in the middle of a GOP whose
keyframe it discards; the frame played at t is the last presented frame whose
pts <= round(t / time_base); the decoder seeks only when a keyframe lies between the current
position and the next wanted frame, and FFmpeg's decoder drops the discarded frames as a player
does. Frames are turned to display orientation from the frame's display matrix (as torchcodec
and players do).
"""

from __future__ import annotations

import bisect
import io
from collections.abc import Callable, Iterable, Iterator
from typing import Any, NamedTuple

import numpy as np
import torch

from ..audio_ops import mixdown
from ..frames import stack_frames
from . import (
    DecodedVideo,
    MediaKind,
    Timestamps,
    channel_limit_hint,
    display_orientation,
    presentation_window,
    resolve_times,
)
from .container import check_complete

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


# pts of a keyframe -> the decoded frames from it on (after a seek, or replayed from packets)
Restart = Callable[[int], Iterator[Any]]


class _Scan(NamedTuple):
    pts: list[int]  # sorted pts of the presented frames
    keys: list[int]  # sorted pts of every keyframe, discarded ones included (seek targets)
    begin: float  # presentation timeline on the stream clock, seconds
    duration: float


def _scan(container: Any, stream: Any) -> _Scan:
    """Demux without decoding -> the presented frames, the keyframes and the timeline."""
    return _timeline(container.demux(stream), stream)


def _timeline(packets: Iterable[Any], stream: Any) -> _Scan:
    """The presented frames, the keyframes and the timeline of the video `packets` (demuxed
    now, or kept from a demux of several streams)."""
    tb = float(stream.time_base)
    pts: list[int] = []
    keys: list[int] = []
    end: int | None = None
    try:
        for packet in packets:
            p = packet.pts if packet.pts is not None else packet.dts
            if p is None or packet.size == 0:
                continue
            if packet.is_keyframe:
                keys.append(p)
            if packet.is_discard:  # before an edit list's start: decoded, never shown
                continue
            pts.append(p)
            stop = p + (packet.duration or 0)
            end = stop if end is None else max(end, stop)
    except Exception as err:
        raise ValueError(f"PyAV could not read the video packets: {err}") from err
    if not pts or end is None:
        raise ValueError("the video stream holds no presented frame")
    pts.sort()
    keys.sort()
    begin, duration = presentation_window(
        header_begin=None if stream.start_time is None else stream.start_time * tb,
        header_duration=None if stream.duration is None else stream.duration * tb,
        content_begin=pts[0] * tb,
        content_end=end * tb,
        content_frames=len(pts),
    )
    return _Scan(pts, keys or pts[:1], begin, duration)


def _seeker(container: Any, stream: Any) -> Restart:
    """Frames from the keyframe at pts `key` on, read by seeking the container there."""

    def restart(key: int) -> Iterator[Any]:
        container.seek(key, stream=stream, backward=True, any_frame=False)
        return iter(container.decode(stream))

    return restart


def _replayer(packets: list[Any], stream: Any) -> Restart:
    """Frames from the keyframe at pts `key` on, decoded from `packets` (the stream's packets
    in demux order, kept by one demux of every stream, the end-of-stream one included): the
    decoder is flushed, as after a seek, and fed the packets from that keyframe on, so the
    frames are those `_seeker` gives."""
    first: dict[int, int] = {}
    for i, packet in enumerate(packets):
        p = packet.pts if packet.pts is not None else packet.dts
        if packet.is_keyframe and p is not None:
            first.setdefault(p, i)
    codec = stream.codec_context

    def restart(key: int) -> Iterator[Any]:
        codec.flush_buffers()
        for packet in packets[first.get(key, 0) :]:
            yield from codec.decode(packet if packet.size else None)

    return restart


def _packed(frame: Any, channels: int) -> np.ndarray:
    """A packed float audio frame -> [C, n] (its single plane holds n interleaved C-tuples)."""
    return frame.to_ndarray().reshape(-1, channels).T


def _rgb(frame: Any) -> np.ndarray:
    return frame.to_ndarray(format="rgb24")


def _frames_at(stream: Any, scan: _Scan, times: Timestamps, restart: Restart) -> DecodedVideo:
    """The frames a player shows at `times` (seconds after the first presented frame), decoded
    through `restart` -> uint8 [T, 3, H, W] in display orientation."""
    header = (stream.codec_context.height, stream.codec_context.width)
    tb = float(stream.time_base)
    ts = resolve_times(times, scan.duration)
    # The frame played at t: last presented pts <= the pts closest to t (torchcodec's rule).
    wanted = []
    for t in ts:
        target = round((scan.begin + t) / tb)
        wanted.append(scan.pts[max(0, bisect.bisect_right(scan.pts, target) - 1)])
    first = scan.pts[0]

    def first_size() -> tuple[int, int]:
        if first not in decoded:  # the clip changes size and frame 0 was not asked for
            decoded.update(_decode_at(restart, [first], scan.keys)[0])
        return decoded[first].shape[0], decoded[first].shape[1]

    try:
        decoded, rotation = _decode_at(restart, sorted(set(wanted or [first])), scan.keys)
        pictures = [torch.from_numpy(decoded[p]).permute(2, 0, 1) for p in wanted]
        frames = (
            stack_frames(pictures, header, first_size)
            if pictures
            else torch.empty(0, 3, *first_size(), dtype=torch.uint8)
        )
    except Exception as err:
        raise ValueError(f"PyAV could not decode the video frames: {err}") from err
    return DecodedVideo(display_orientation(frames, rotation).contiguous(), scan.duration, ts)


def _decode_at(
    restart: Restart, wanted: list[int], keys: list[int]
) -> tuple[dict[int, np.ndarray], int]:
    """Decode the frames at the `wanted` pts -> (pts -> RGB [H, W, 3] as stored, the display
    rotation in degrees counter-clockwise). Restarts from a keyframe only when one lies between
    the last decoded frame and the next wanted one."""
    out: dict[int, np.ndarray] = {}
    rotation = 0
    frames: Iterator[Any] | None = None
    position: int | None = None  # pts of the last decoded frame
    for want in wanted:
        key = keys[max(0, bisect.bisect_right(keys, want) - 1)]
        if frames is None or position is None or key > position:
            frames = restart(key)
        previous = None
        chosen = None
        for frame in frames:
            p = frame.pts if frame.pts is not None else frame.dts
            position = p
            if p == want:
                chosen = frame
                break
            if p is not None and p > want:  # the wanted pts never came out: take the one before
                chosen = previous if previous is not None else frame
                break
            previous = frame
        else:
            if previous is None:
                raise ValueError(f"no frame decoded at or after pts {want}")
            chosen = previous
        out[want] = _rgb(chosen)
        rotation = int(chosen.rotation or 0)
    return out, rotation


def _audio_chunks(stream: Any, sample_rate: int) -> Callable[[Any], list[np.ndarray]]:
    """packet (None: the end of the stream) -> the packed float32 [C, n] chunks it decodes to
    at `sample_rate`, through one decoder and one resampler for the stream."""
    channels = stream.codec_context.channels
    # Packed float output, reshaped here: PyAV (<= 18) miscounts the planes of planar frames
    # with >= 8 channels and reads past them (a segfault), so never ask for fltp.
    resampler = av.AudioResampler(format="flt", layout=stream.layout, rate=sample_rate)

    def decode(packet: Any) -> list[np.ndarray]:
        if packet is None:
            return [_packed(out, channels) for out in resampler.resample(None)]
        return [
            _packed(out, channels)
            for frame in stream.codec_context.decode(packet if packet.size else None)
            for out in resampler.resample(frame)
        ]

    return decode


def _audio_failure(stream: Any, err: Exception) -> ValueError:
    channels = stream.codec_context.channels
    return ValueError(
        f"PyAV could not decode the audio ({channels} channels, {stream.codec_context.name}): "
        f"{err}{channel_limit_hint(channels)}"
    )


def _wave(chunks: list[np.ndarray], channels: int) -> torch.Tensor:
    """Decoded chunks -> float32 [C, S] (C = channels, S = 0 when nothing decoded)."""
    return (
        torch.from_numpy(np.concatenate(chunks, axis=1)) if chunks else torch.zeros(channels, 0)
    ).to(torch.float32)


class PyAVBackend:
    """Decode with PyAV's bundled FFmpeg, from bytes, one decoder thread per call."""

    name = "pyav"

    def video_frames(self, data: bytes, times: Timestamps) -> DecodedVideo:
        """Frames a player shows at `times` seconds after the first presented frame, uint8
        [T, 3, H, W] in display orientation; ValueError if truncated or undecodable. Frames of
        a clip whose resolution changes mid-stream are scaled to its first frame's size
        (`mmsample.decoding.frames.stack_frames`)."""
        check_complete(data)
        with _open(data, "video") as container:
            stream = _stream(container, "video")
            scan = _scan(container, stream)
            return _frames_at(stream, scan, times, _seeker(container, stream))

    def video_and_audio(
        self, data: bytes, times: Timestamps, sample_rate: int
    ) -> tuple[DecodedVideo, torch.Tensor]:
        """`video_frames(data, times)` and `audio(data, sample_rate, mono=False)` of one clip
        from one open of its container and one demux of both streams: the packets are kept,
        the audio decoded from them and the wanted frames too (`_replayer`) instead of seeking.
        Equal tensors to the two calls (the same packets through the same decoders); the same
        ValueErrors, a demux failure naming the clip's packets."""
        check_complete(data)
        with _open(data, "clip") as container:
            video = _stream(container, "video")
            audio = _stream(container, "audio")
            kept: list[Any] = []
            heard: list[Any] = []
            try:
                for packet in container.demux(video, audio):
                    (kept if packet.stream.index == video.index else heard).append(packet)
            except Exception as err:
                raise ValueError(f"PyAV could not read the clip's packets: {err}") from err
            try:
                decode = _audio_chunks(audio, sample_rate)
                chunks = [c for packet in heard for c in decode(packet)] + decode(None)
            except Exception as err:
                raise _audio_failure(audio, err) from err
            scan = _timeline(kept, video)
            frames = _frames_at(video, scan, times, _replayer(kept, video))
        return frames, _wave(chunks, audio.codec_context.channels)

    def audio(self, data: bytes, sample_rate: int, mono: bool) -> torch.Tensor:
        """All samples of the best audio stream at `sample_rate`, float32 [C, S], channels in
        stream order (any layout, 1..64 channels: FFmpeg's resampler takes at most 64)."""
        with _open(data, "audio") as container:
            stream = _stream(container, "audio")
            try:
                decode = _audio_chunks(stream, sample_rate)
                chunks = [c for packet in container.demux(stream) for c in decode(packet)]
                chunks += decode(None)
            except Exception as err:
                raise _audio_failure(stream, err) from err
            wave = _wave(chunks, stream.codec_context.channels)
        return mixdown(wave) if mono else wave

    def image(self, data: bytes) -> torch.Tensor:
        """The first frame of an image file as uint8 [3, H, W] RGB, or [4, H, W] RGBA (straight
        alpha) when its pixel format carries transparency (RGBA, grey + alpha, a palette or
        colour key with tRNS). Stored orientation: `mmsample.decoding.Image` applies EXIF's."""
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
        """Video: scan the packets (timeline and truncation check), decode the first presented
        frame, as `video_frames` does. Audio: decode all of it, as `audio` does. Image: decode
        it, as `image` does."""
        if kind == "audio":
            if self.audio(data, 16000, mono=False).shape[-1] == 0:
                raise ValueError("the audio stream decodes to no samples")
            return
        if kind == "image":
            self.image(data)
            return
        self.video_frames(data, [0.0])


BACKENDS: dict[str, type] = {"pyav": PyAVBackend} if IMPORT_ERROR is None else {}
