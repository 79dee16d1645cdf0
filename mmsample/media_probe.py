"""Cheap checks that a shard member's bytes are a decodable file of the kind its extension says.

Place in the data flow: the sharding tool calls `probe(data, ext)` on every file of every row
before writing shards, to report unreadable media up front instead of failing mid-training.
Video: the backend's truncation and presentation-timeline checks (`mmsample.backends.container`,
`presentation_window`), then the first presented frame, as the readers decode it (a clip cut by
stream copy is accepted, a truncated one refused). Audio and images: decode them the way the readers
(`mmsample.spec.Audio`, `Image`) do, so the probe accepts exactly what they decode (an audio file
whose first packet starts late, any channel layout) and refuses what they cannot; image sizes are
checked from the header before decoding. It never unpickles anything. The wav and npy header
parsers here are also used by `mmsample.spec`.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Callable, Iterator
from typing import NamedTuple

import numpy as np

from mmsample.image_header import (
    DEFAULT_MAX_PIXELS,
    check_max_pixels,
    check_pixels,
    image_header,
)

__all__ = [
    "AUDIO_EXTENSIONS",
    "IMAGE_EXTENSIONS",
    "PROBES",
    "VIDEO_EXTENSIONS",
    "WavInfo",
    "check_wav_complete",
    "npy_header",
    "parse_wav",
    "probe",
]

VIDEO_EXTENSIONS = ("mp4", "avi", "mkv", "webm", "mov", "flv")
AUDIO_EXTENSIONS = ("wav", "flac", "mp3", "ogg", "m4a")
IMAGE_EXTENSIONS = ("png", "jpg", "jpeg")

_WAVE_FORMAT_PCM, _WAVE_FORMAT_FLOAT, _WAVE_FORMAT_EXTENSIBLE = 1, 3, 0xFFFE


class WavInfo(NamedTuple):
    """What a RIFF/WAVE header says: sample format and where the sample data lie."""

    channels: int
    sample_rate: int
    bits: int
    is_float: bool
    data_offset: int
    data_size: int


# Data-chunk sizes that streaming writers leave when they cannot seek back to fill in the
# length: the data then runs to the end of the file (FFmpeg reads such files that way).
_UNKNOWN_SIZES = (0, 0xFFFFFFFF)


def _wav_chunks(data: bytes) -> Iterator[tuple[bytes, int, int]]:
    """(chunk id, body offset, declared size) of each RIFF chunk after the 'WAVE' tag."""
    pos = 12
    while pos + 8 <= len(data):
        chunk_id, size = data[pos : pos + 4], struct.unpack_from("<I", data, pos + 4)[0]
        yield chunk_id, pos + 8, size
        pos += 8 + size + (size & 1)


def _data_size(size: int, body: int, data: bytes) -> int:
    """The data chunk's byte count: as declared, or to the end of the file for a streaming
    writer's unknown size; ValueError when the file ends before the declared size."""
    available = len(data) - body
    if size in _UNKNOWN_SIZES:
        return available
    if size > available:
        raise ValueError(
            f"wav is truncated: the data chunk declares {size} bytes, {available} present"
        )
    return size


def parse_wav(data: bytes) -> WavInfo:
    """Parse a RIFF/WAVE header (PCM or IEEE float); raise ValueError naming what is wrong.
    A data size of 0 or 0xFFFFFFFF (a streaming writer's unknown length) means the samples run
    to the end of the file (whole sample frames), as FFmpeg reads it."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise ValueError("not a RIFF/WAVE file (missing the 'RIFF'...'WAVE' header)")
    fmt = None
    for chunk_id, body, size in _wav_chunks(data):
        if chunk_id == b"fmt ":
            if size < 16 or body + 16 > len(data):
                raise ValueError("wav 'fmt ' chunk is truncated")
            tag, channels, rate, _, _, bits = struct.unpack_from("<HHIIHH", data, body)
            if tag == _WAVE_FORMAT_EXTENSIBLE and size >= 40 and body + 26 <= len(data):
                tag = struct.unpack_from("<H", data, body + 24)[0]
            if tag not in (_WAVE_FORMAT_PCM, _WAVE_FORMAT_FLOAT):
                raise ValueError(f"wav sample format tag {tag} is not PCM (1) or IEEE float (3)")
            if channels < 1 or rate < 1 or bits not in (8, 16, 24, 32, 64):
                raise ValueError(
                    f"wav header is invalid: {channels} channels, {rate} Hz, {bits} bits"
                )
            fmt = (channels, rate, bits, tag == _WAVE_FORMAT_FLOAT)
        elif chunk_id == b"data":
            if fmt is None:
                raise ValueError("wav 'data' chunk comes before the 'fmt ' chunk")
            channels, rate, bits, is_float = fmt
            frame = channels * bits // 8
            if size in _UNKNOWN_SIZES:
                size = _data_size(size, body, data) // frame * frame
            elif _data_size(size, body, data) % frame:
                raise ValueError("wav data size is not a whole number of sample frames")
            return WavInfo(channels, rate, bits, is_float, body, size)
    raise ValueError("wav has no 'fmt ' and 'data' chunks (truncated or not a wav)")


def npy_header(data: bytes) -> tuple[tuple[int, ...], np.dtype, int]:
    """Read a .npy header without touching the payload -> (shape, dtype, payload offset).

    Refuses object dtypes (they need pickle) and payloads shorter than the header declares.
    """
    buf = io.BytesIO(data)
    try:
        major, _minor = np.lib.format.read_magic(buf)
        if major == 1:
            shape, _fortran, dtype = np.lib.format.read_array_header_1_0(buf)
        else:
            shape, _fortran, dtype = np.lib.format.read_array_header_2_0(buf)
    except (ValueError, SyntaxError, struct.error, EOFError) as err:
        raise ValueError(f"not a valid .npy file ({err})") from None
    if dtype.hasobject:
        raise ValueError(
            f"the .npy array has dtype {dtype} holding Python objects, which only loads by "
            "unpickling; shard members are never unpickled. Store a numeric array instead."
        )
    offset = buf.tell()
    need = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) - offset < need:
        raise ValueError(
            f".npy is truncated: shape {shape} {dtype} needs {need} bytes, {len(data) - offset} present"
        )
    return tuple(shape), dtype, offset


def check_wav_complete(data: bytes) -> None:
    """Raise ValueError if RIFF/WAVE bytes end before their data chunk does (a cut-off file,
    which FFmpeg would decode silently up to the cut). Any sample format; a data size of 0 or
    0xFFFFFFFF (written by streaming encoders that did not know the length) is accepted."""
    fmt = False
    for chunk_id, body, size in _wav_chunks(data):
        fmt = fmt or chunk_id == b"fmt "
        if chunk_id == b"data":
            _data_size(size, body, data)
            return
    missing = "'data' chunk" if fmt else "'fmt ' and 'data' chunks"
    raise ValueError(f"wav has no {missing} (truncated or not a wav)")


def _probe_video(data: bytes) -> None:
    from mmsample.backends import get_backend

    get_backend().probe(data, "video")


def _probe_audio(data: bytes, ext: str) -> None:
    """Decode the whole stream the way `Audio(field=ext)` does with the default backend."""
    from mmsample.spec import Audio

    Audio(field=ext, mono=False, spectrogram=None).waveform(data)


def _probe_image(data: bytes, ext: str, max_pixels: int | None) -> None:
    """Signature and end-marker checks, then the reader's own path: `Image(field=ext)`."""
    from mmsample.spec import Image

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
