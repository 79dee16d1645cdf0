"""Field payloads of one demo sample: the mp4 clip, the 8-bit grey PNG digit and the caption.

Place in the data flow: after the clip's tracks are made (`clip`), before the raw files are
written (`write_shards`). Encoders are PyAV's (h264 + AAC in mp4, PNG); the bytes are a function
of the inputs alone.
"""

from __future__ import annotations

import io
from fractions import Fraction

import numpy as np

from .sources import CLASSES


def encode_clip(
    frames: np.ndarray,
    audio: np.ndarray,
    audio_rate: int,
    fps: float = 10.0,
    out_rate: int = 16000,
    crf: int = 23,
    audio_bitrate: int = 32000,
) -> bytes:
    """mp4 bytes: h264 video of uint8 `[T, H, W, 3]` and AAC mono `out_rate` audio of float
    `[S]` at `audio_rate` (resampled by FFmpeg's swresample; AAC "fast" coder for build speed)."""
    import av

    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(
            f"The 'frames' parameter of encode_clip must be uint8 [T, H, W, 3]; "
            f"got {frames.dtype} {frames.shape}."
        )
    if frames.shape[1] % 2 or frames.shape[2] % 2:
        raise ValueError(f"encode_clip needs an even frame height and width; got {frames.shape}.")
    if np.ndim(audio) != 1:
        raise ValueError(
            f"The 'audio' parameter of encode_clip must be 1-D; got {np.shape(audio)}."
        )
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        video = out.add_stream("libx264", rate=Fraction(fps).limit_denominator(1000))
        video.width, video.height = int(frames.shape[2]), int(frames.shape[1])
        video.pix_fmt = "yuv420p"
        video.options = {"crf": str(crf), "preset": "veryfast", "tune": "zerolatency"}
        video.codec_context.thread_count = 1
        sound = out.add_stream("aac", rate=out_rate)
        sound.layout = "mono"
        sound.bit_rate = audio_bitrate
        sound.options = {"aac_coder": "fast"}
        for frame in frames:
            for packet in video.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                out.mux(packet)
        for packet in video.encode():
            out.mux(packet)
        resampler = av.AudioResampler(format="fltp", layout="mono", rate=out_rate)
        wave = np.clip(np.asarray(audio, dtype=np.float32), -1.0, 1.0)
        chunks: list[av.AudioFrame | None] = []  # None flushes the resampler
        for start in range(0, len(wave), 1024):
            chunk = av.AudioFrame.from_ndarray(
                wave[None, start : start + 1024].copy(), format="fltp", layout="mono"
            )
            chunk.sample_rate, chunk.pts = audio_rate, start
            chunks.append(chunk)
        chunks.append(None)  # flush the resampler
        for pending in chunks:
            for resampled in resampler.resample(pending):
                for packet in sound.encode(resampled):
                    out.mux(packet)
        for packet in sound.encode():
            out.mux(packet)
    return buf.getvalue()


def encode_png(image: np.ndarray) -> bytes:
    """Lossless 8-bit grey PNG of a 0..16 image (level v -> round(v * 255 / 16))."""
    import av

    grey = np.rint(np.asarray(image, dtype=np.float64) * 255.0 / 16.0).astype(np.uint8)
    codec = av.CodecContext.create("png", "w")
    codec.width, codec.height, codec.pix_fmt = grey.shape[1], grey.shape[0], "gray"
    packets = codec.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(grey), format="gray"))
    packets += codec.encode(None)
    return b"".join(bytes(p) for p in packets)


def caption(label: int) -> str:
    """The `txt` field of a sample: "the digit seven"."""
    return f"the digit {CLASSES[label]}"
