"""What a still image's header says before any pixel is decoded: size, transparency, orientation.

Place in the data flow: `mmsample.decoding.Image` (at read time) and
`mmsample.decoding.media_probe` (at shard time) read the header of every image first, to refuse
decompression bombs by their declared pixel count before a decoder allocates them, and to learn
the EXIF orientation a viewer applies (decoders return the stored pixels; `orient` turns them to
the display orientation). Parsed
here: PNG (IHDR, tRNS, eXIf), JPEG (SOFn, APP1 Exif), GIF, BMP and WebP (VP8, VP8L, VP8X).
Other formats give None and are checked after decoding. Nothing here decodes pixels.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

import torch

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "ImageHeader",
    "check_max_pixels",
    "check_pixels",
    "ffmpeg_decodes_size",
    "image_header",
    "orient",
]

# Pillow's Image.MAX_IMAGE_PIXELS: 1024 * 1024 * 1024 // 4 // 3, about a 0.25 GiB RGB image.
DEFAULT_MAX_PIXELS = 89_478_485

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_EXIF_ORIENTATION_TAG = 0x0112


class ImageHeader(NamedTuple):
    """Declared width and height (pixels, stored orientation), EXIF orientation (1..8, 1 = as
    stored), whether the file may carry transparency (None: the header does not say) and the
    bits per sample (8 unless the header says more)."""

    format: str
    width: int
    height: int
    orientation: int
    alpha: bool | None
    bits: int = 8


def _exif_orientation(tiff: bytes) -> int:
    """The Orientation tag (0x0112) of IFD0 in TIFF-structured EXIF bytes; 1 if absent/invalid."""
    if len(tiff) < 8 or tiff[:2] not in (b"II", b"MM"):
        return 1
    end = "<" if tiff[:2] == b"II" else ">"
    try:
        (ifd,) = struct.unpack_from(end + "I", tiff, 4)
        (count,) = struct.unpack_from(end + "H", tiff, ifd)
        for i in range(count):
            tag, kind, _n = struct.unpack_from(end + "HHI", tiff, ifd + 2 + 12 * i)
            if tag == _EXIF_ORIENTATION_TAG and kind == 3:  # SHORT
                (value,) = struct.unpack_from(end + "H", tiff, ifd + 2 + 12 * i + 8)
                return value if 1 <= value <= 8 else 1
    except struct.error:
        return 1
    return 1


def _png(data: bytes) -> ImageHeader:
    if len(data) < 33 or data[12:16] != b"IHDR":
        raise ValueError("PNG image header is truncated or has no IHDR chunk")
    width, height, depth, colour = struct.unpack_from(">IIBB", data, 16)
    alpha = colour in (4, 6)  # grey + alpha, RGBA
    orientation, pos = 1, 8
    while pos + 8 <= len(data):
        size, kind = struct.unpack_from(">I4s", data, pos)
        if kind in (b"IDAT", b"IEND"):
            break
        if kind == b"tRNS":
            alpha = True  # a transparent colour (grey/RGB) or palette alpha values
        elif kind == b"eXIf":
            orientation = _exif_orientation(data[pos + 8 : pos + 8 + size])
        pos += 12 + size
    return ImageHeader("png", width, height, orientation, alpha, max(depth, 8))


# SOF markers that carry frame dimensions (C4 = DHT, C8 = JPG extension, CC = DAC are not SOFs).
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _jpeg(data: bytes) -> ImageHeader:
    pos, orientation = 2, 1
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:  # extraneous bytes before a marker: decoders skip them too
            pos = data.find(b"\xff", pos)
            if pos < 0:
                break
            continue
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):  # markers without a length
            pos += 2
            continue
        (length,) = struct.unpack_from(">H", data, pos + 2)
        body = data[pos + 4 : pos + 2 + length]
        if marker == 0xE1 and body[:6] == b"Exif\x00\x00" and orientation == 1:
            orientation = _exif_orientation(body[6:])
        elif marker in _JPEG_SOF:
            if len(body) < 5:
                break
            precision, height, width = struct.unpack_from(">BHH", body, 0)
            return ImageHeader("jpeg", width, height, orientation, False, precision)
        elif marker == 0xDA:  # start of scan before any frame header
            break
        pos += 2 + length
    raise ValueError("JPEG image header is truncated or has no frame (SOF) marker")


def _webp(data: bytes) -> ImageHeader:
    kind = data[12:16]
    if kind == b"VP8X" and len(data) >= 30:
        flags = data[20]
        width = 1 + int.from_bytes(data[24:27], "little")
        height = 1 + int.from_bytes(data[27:30], "little")
        return ImageHeader("webp", width, height, 1, bool(flags & 0x10))
    if kind == b"VP8L" and len(data) >= 25 and data[20] == 0x2F:
        bits = int.from_bytes(data[21:25], "little")
        return ImageHeader(
            "webp", 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF), 1, bool(bits >> 28 & 1)
        )
    if kind == b"VP8 " and len(data) >= 30 and data[23:26] == b"\x9d\x01\x2a":
        width, height = struct.unpack_from("<HH", data, 26)
        return ImageHeader("webp", width & 0x3FFF, height & 0x3FFF, 1, False)
    raise ValueError("WebP image header is truncated or unknown")


def image_header(data: bytes) -> ImageHeader | None:
    """Parse the header of PNG, JPEG, GIF, BMP or WebP bytes; None for other formats.

    Raises ValueError when the bytes start like one of these formats but the header is cut off
    or malformed.
    """
    if data.startswith(_PNG_SIGNATURE):
        return _png(data)
    if data.startswith(b"\xff\xd8"):
        return _jpeg(data)
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        width, height = struct.unpack_from("<HH", data, 6)
        return ImageHeader("gif", width, height, 1, None)
    if data[:2] == b"BM" and len(data) >= 26:
        (dib,) = struct.unpack_from("<I", data, 14)
        if dib == 12:
            width, height = struct.unpack_from("<HH", data, 18)
        else:
            width, height = struct.unpack_from("<ii", data, 18)
        return ImageHeader("bmp", abs(width), abs(height), 1, None)
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return _webp(data)
    return None


def check_max_pixels(value: object, owner: str) -> int | None:
    """Validate a `max_pixels` parameter of `owner`: None (no limit) or an int >= 1."""
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
        raise ValueError(
            f"The 'max_pixels' parameter of {owner} must be None (no limit) or an int >= 1; "
            f"got {value!r}."
        )
    return value


def check_pixels(width: int, height: int, max_pixels: int | None, *, how: str) -> None:
    """Raise ValueError if a width x height image is empty or has more than `max_pixels`.

    `how` names the parameter that raises the limit, for the message (e.g. "Image(max_pixels=...)").
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"the image declares an empty size {width}x{height} pixels")
    pixels = width * height
    if max_pixels is not None and pixels > max_pixels:
        raise ValueError(
            f"the image declares {width}x{height} = {pixels:,} pixels, more than the limit of "
            f"{max_pixels:,} (a guard against decompression bombs; decoding it would take about "
            f"{pixels * 4 / 2**30:.1f} GiB). If the image is genuine, raise the limit with "
            f"{how} (None: no limit), or downscale the file before sharding."
        )


def ffmpeg_decodes_size(width: int, height: int) -> bool:
    """Whether FFmpeg's decoders accept a width x height frame (its av_image_check_size rule:
    `(W + 128) * (H + 128) < INT_MAX / 8`); larger frames fail to decode with a terse error."""
    return (width + 128) * (height + 128) < (2**31 - 1) // 8


def orient(image: torch.Tensor, orientation: int) -> torch.Tensor:
    """Turn stored pixels `[C, H, W]` to the display orientation of EXIF `orientation` (1..8):
    2 mirror left-right, 3 rotate 180, 4 mirror top-bottom, 5 transpose, 6 rotate 90 clockwise,
    7 transverse, 8 rotate 90 counter-clockwise (what viewers and Pillow's exif_transpose do)."""
    h, w = -2, -1
    if orientation == 2:
        return image.flip(w)
    if orientation == 3:
        return image.flip(h, w)
    if orientation == 4:
        return image.flip(h)
    if orientation == 5:
        return image.transpose(h, w)
    if orientation == 6:
        return image.transpose(h, w).flip(w)
    if orientation == 7:
        return image.transpose(h, w).flip(h, w)
    if orientation == 8:
        return image.transpose(h, w).flip(h)
    return image
