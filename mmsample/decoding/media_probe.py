"""Cheap checks that a shard member's bytes are a decodable file of the kind its extension says.

Place in the data flow: the sharding tool calls `probe(data, ext)` on every file of every row
before writing shards, to report unreadable media up front instead of failing mid-training.
Video: the backend's truncation and presentation-timeline checks
(`mmsample.decoding.backends.container`, `presentation_window`), then the first presented frame,
as the readers decode it (a clip cut by stream copy is accepted, a truncated one refused). Audio
and images: decode them the way the readers (`mmsample.decoding.Audio`, `Image`) do, so the probe
accepts exactly what they decode (an audio file whose first packet starts late, any channel
layout) and refuses what they cannot; image sizes are checked from the header before decoding.
It never unpickles anything (.npy headers: `mmsample.decoding.npy`).
"""

from __future__ import annotations

from collections.abc import Callable

from .audio import Audio
from .backends import get_backend
from .extensions import AUDIO_EXTENSIONS, IMAGE_EXTENSIONS, VIDEO_EXTENSIONS
from .image import Image
from .image_header import DEFAULT_MAX_PIXELS, check_max_pixels, check_pixels, image_header
from .npy import npy_header

__all__ = ["PROBES", "probe"]


def _probe_video(data: bytes) -> None:
    get_backend().probe(data, "video")


def _probe_audio(data: bytes, ext: str) -> None:
    """Decode the whole stream the way `Audio(field=ext)` does with the default backend."""
    Audio(field=ext, mono=False, spectrogram=None).waveform(data)


def _probe_image(data: bytes, ext: str, max_pixels: int | None) -> None:
    """Signature and end-marker checks, then the reader's own path: `Image(field=ext)`."""
    if ext == "png":
        if not data.startswith(b"\x89PNG\r\n\x1a\n"):
            raise ValueError("not a PNG file (bad signature)")
        if b"IEND" not in data[-12:]:
            raise ValueError("PNG is truncated (no IEND chunk at the end)")
    elif ext in ("jpg", "jpeg"):
        if not data.startswith(b"\xff\xd8"):
            raise ValueError("not a JPEG file (no start-of-image marker)")
        if not data.rstrip(b"\x00").endswith(b"\xff\xd9"):
            raise ValueError("JPEG is truncated (no end-of-image marker)")
    image = Image(field=ext, max_pixels=None)
    header = image_header(data)
    size = None if header is None else (header.width, header.height)
    if size is not None:
        check_pixels(*size, max_pixels, how=_PROBE_LIMIT)
    decoded = image.decode(data)
    if size is None:
        check_pixels(decoded.shape[-1], decoded.shape[-2], max_pixels, how=_PROBE_LIMIT)


_PROBE_LIMIT = (
    "max_pixels= (Image(max_pixels=...) to read; `mmsample shard --max-pixels N` or "
    "probe(..., max_pixels=...) to shard)"
)


def _probe_npy(data: bytes) -> None:
    npy_header(data)


def _probe_text(data: bytes) -> None:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"text is not valid UTF-8 ({err})") from None


def _by_extension(check: Callable[[bytes, str], None], ext: str) -> Callable[[bytes], None]:
    return lambda data: check(data, ext)


# extension -> check of the bytes. Audio and images are checked by decoding them the way the
# readers do (`Audio`, `Image` with the default backend; images with the default pixel limit
# here, `probe(..., max_pixels=...)` to change it). Extensions not listed are not media and are
# accepted as they are.
PROBES: dict[str, Callable[[bytes], None]] = {
    **{ext: _probe_video for ext in VIDEO_EXTENSIONS},
    **{ext: _by_extension(_probe_audio, ext) for ext in AUDIO_EXTENSIONS},
    **{
        ext: _by_extension(lambda d, e: _probe_image(d, e, DEFAULT_MAX_PIXELS), ext)
        for ext in IMAGE_EXTENSIONS
    },
    "npy": _probe_npy,
    "txt": _probe_text,
}


def probe(data: bytes, ext: str, *, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> None:
    """Raise ValueError(reason) if `data` is not a decodable file of extension `ext`.

    `ext` may be a field like "left.mp4": its last dot-separated part is used. Audio is decoded
    in full and images decoded the way `Audio(field=ext)` / `Image(field=ext)` read them, so the
    probe accepts exactly what those readers (default backend) decode. Images with more than
    `max_pixels` pixels (from the header, before decoding; None: no limit) are refused.
    Extensions without a check (metadata, labels) are accepted.
    """
    check_max_pixels(max_pixels, "probe")
    kind = ext.rsplit(".", 1)[-1].lower()
    check = PROBES.get(kind)
    if check is None:
        return
    if not data:
        raise ValueError(f"empty .{kind} file")
    if kind in IMAGE_EXTENSIONS:
        _probe_image(data, kind, max_pixels)
    else:
        check(data)
