"""Cheap checks that a shard member's bytes are a decodable file of the kind its extension says.

Place in the data flow: the sharding tool calls `probe(data, ext)` on every file of every row
before writing shards, to report unreadable media up front instead of failing mid-training.
Each check is cheap: parse a header, open the container, decode at most one frame. It never
unpickles anything. The wav and npy header parsers here are also used by `mmsample.spec`.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

__all__ = [
    "AUDIO_EXTENSIONS",
    "IMAGE_EXTENSIONS",
    "PROBES",
    "VIDEO_EXTENSIONS",
    "WavInfo",
    "npy_header",
    "parse_wav",
    "probe",
]

VIDEO_EXTENSIONS = ("mp4", "avi", "mkv", "webm", "mov")
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


def parse_wav(data: bytes) -> WavInfo:
    """Parse a RIFF/WAVE header (PCM or IEEE float); raise ValueError naming what is wrong."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise ValueError("not a RIFF/WAVE file (missing the 'RIFF'...'WAVE' header)")
    pos, fmt = 12, None
    while pos + 8 <= len(data):
        chunk_id, size = data[pos : pos + 4], struct.unpack_from("<I", data, pos + 4)[0]
        body = pos + 8
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
            available = len(data) - body
            if size > available:
                raise ValueError(
                    f"wav is truncated: the data chunk declares {size} bytes, {available} present"
                )
            if size % (channels * bits // 8):
                raise ValueError("wav data size is not a whole number of sample frames")
            return WavInfo(channels, rate, bits, is_float, body, size)
        pos = body + size + (size & 1)
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


def _probe_with_backend(kind: str) -> Callable[[bytes], None]:
    def check(data: bytes) -> None:
        from mmsample.backends import get_backend

        get_backend().probe(data, kind)  # type: ignore[arg-type]

    return check


def _probe_wav(data: bytes) -> None:
    parse_wav(data)


def _probe_npy(data: bytes) -> None:
    npy_header(data)


def _probe_png(data: bytes) -> None:
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        raise ValueError("not a PNG file (bad signature)")
    if b"IEND" not in data[-12:]:
        raise ValueError("PNG is truncated (no IEND chunk at the end)")
    _probe_with_backend("image")(data)


def _probe_jpeg(data: bytes) -> None:
    if not data.startswith(b"\xff\xd8"):
        raise ValueError("not a JPEG file (no start-of-image marker)")
    if not data.rstrip(b"\x00").endswith(b"\xff\xd9"):
        raise ValueError("JPEG is truncated (no end-of-image marker)")
    _probe_with_backend("image")(data)


def _probe_text(data: bytes) -> None:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"text is not valid UTF-8 ({err})") from None


# extension -> check. Extensions not listed are not media and are accepted as they are.
PROBES: dict[str, Callable[[bytes], None]] = {
    **{ext: _probe_with_backend("video") for ext in VIDEO_EXTENSIONS},
    **{ext: _probe_with_backend("audio") for ext in AUDIO_EXTENSIONS if ext != "wav"},
    "wav": _probe_wav,
    "npy": _probe_npy,
    "png": _probe_png,
    "jpg": _probe_jpeg,
    "jpeg": _probe_jpeg,
    "txt": _probe_text,
}


def probe(data: bytes, ext: str) -> None:
    """Raise ValueError(reason) if `data` is not a decodable file of extension `ext`.

    `ext` may be a field like "left.mp4": its last dot-separated part is used. Extensions without
    a probe in `PROBES` (metadata, labels) are accepted without a check.
    """
    kind = ext.rsplit(".", 1)[-1].lower()
    check = PROBES.get(kind)
    if check is None:
        return
    if not data:
        raise ValueError(f"empty .{kind} file")
    check(data)
