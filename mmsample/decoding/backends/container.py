"""Container checks that need no decoder: does a video file hold all the bytes it declares?

Place in the data flow: every backend runs `check_complete` on a video's bytes before decoding,
and the sharding tool's probe runs it through the backend. Both container families that carry
most clips start with elements that declare their own size: an ISO base media file (mp4, mov,
m4a) is a sequence of top-level boxes, a Matroska/WebM file an EBML header and a Segment, an FLV
file (CREMA-D's VideoFlash) a header and tags that each declare their data size and are followed
by a 4-byte back pointer. A file cut short leaves the last of them longer than the bytes that
remain. With its index at the front
(an mp4 written with `-movflags +faststart`, any Matroska file) such a file still opens and
decodes the frames that remain, so without this check a cut inside the media data, even inside
the last frame's bytes, decodes silently. A live-written WebM whose Segment size is "unknown",
and other containers (AVI, MPEG-TS), are left to the timeline check of `presentation_window`.
"""

from __future__ import annotations

import struct

__all__ = ["check_complete"]

# Box types that can open an ISO base media file.
_FIRST_BOXES = frozenset({b"ftyp", b"styp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot"})
_EBML_MAGIC = b"\x1a\x45\xdf\xa3"
_FLV_MAGIC = b"FLV\x01"
_REFETCH = "The file was cut short (interrupted download or copy): fetch or encode it again."


def check_complete(data: bytes) -> None:
    """Raise ValueError if the top-level boxes (mp4/mov) or elements (Matroska/WebM) of `data`
    run past its end (the file is truncated) or declare impossible sizes (it is corrupt).
    Bytes of other formats are accepted unchecked."""
    if data.startswith(_EBML_MAGIC):
        _check_ebml(data)
    elif data.startswith(_FLV_MAGIC):
        _check_flv(data)
    elif len(data) >= 8 and data[4:8] in _FIRST_BOXES:
        _check_boxes(data)


def _check_boxes(data: bytes) -> None:
    pos = 0
    while pos + 8 <= len(data):
        size, kind = struct.unpack_from(">I4s", data, pos)
        header = 8
        if size == 1:  # 64-bit size follows the type
            if pos + 16 > len(data):
                break
            size = struct.unpack_from(">Q", data, pos + 8)[0]
            header = 16
        elif size == 0:  # the box extends to the end of the file
            return
        name = kind.decode("latin-1")
        if size < header:
            raise ValueError(
                f"mp4 is corrupt: its top-level {name!r} box at byte {pos} declares {size} bytes"
            )
        if pos + size > len(data):
            raise ValueError(
                f"mp4 is truncated: its {name!r} box at byte {pos} declares {size} bytes, "
                f"{len(data) - pos} are present ({pos + size - len(data)} missing). {_REFETCH}"
            )
        pos += size
    if pos != len(data):
        raise ValueError(
            f"mp4 is truncated: {len(data) - pos} bytes at its end are not a whole box header"
        )


def _vint(data: bytes, pos: int, *, keep_marker: bool) -> tuple[int | None, int]:
    """An EBML variable-length integer at `pos` -> (value or None if all ones = unknown, end)."""
    first = data[pos]
    length = 9 - first.bit_length() if first else 9
    if length > 8 or pos + length > len(data):
        raise ValueError(f"Matroska is corrupt or truncated: bad element header at byte {pos}")
    value = int.from_bytes(data[pos : pos + length], "big")
    if keep_marker:
        return value, pos + length
    value &= (1 << (7 * length)) - 1
    return (None if value == (1 << (7 * length)) - 1 else value), pos + length


def _check_ebml(data: bytes) -> None:
    pos = 0
    while pos < len(data):
        element, after_id = _vint(data, pos, keep_marker=True)
        size, body = _vint(data, after_id, keep_marker=False)
        if size is None:  # unknown size (live recording): the end cannot be checked
            return
        if body + size > len(data):
            raise ValueError(
                f"Matroska/WebM is truncated: its top-level element 0x{element:X} at byte {pos} "
                f"declares {size} bytes, {len(data) - body} are present "
                f"({body + size - len(data)} missing). {_REFETCH}"
            )
        pos = body + size


def _check_flv(data: bytes) -> None:
    """FLV: a header (its size at byte 5), then `PreviousTagSize0`, then tags of an 11-byte
    header (data size in bytes 1-3) + data + a 4-byte PreviousTagSize; a cut inside any of
    them is caught. A cut exactly between two tags leaves a well-formed file: the `filesize`
    that FFmpeg-written files declare in their onMetaData tag catches it where present."""
    if len(data) < 9:
        raise ValueError(f"FLV is truncated: {len(data)} bytes, shorter than its 9-byte header")
    pos = struct.unpack_from(">I", data, 5)[0] + 4
    if pos > len(data):
        raise ValueError(f"FLV is truncated: its header declares {pos - 4} bytes. {_REFETCH}")
    first = True
    while pos < len(data):
        if pos + 11 > len(data):
            raise ValueError(
                f"FLV is truncated: the tag at byte {pos} has {len(data) - pos} of its 11 header "
                f"bytes. {_REFETCH}"
            )
        size = int.from_bytes(data[pos + 1 : pos + 4], "big")
        end = pos + 11 + size + 4
        if end > len(data):
            raise ValueError(
                f"FLV is truncated: its tag at byte {pos} declares {size} data bytes and a "
                f"4-byte back pointer, {len(data) - pos - 11} bytes follow its header. {_REFETCH}"
            )
        if first and data[pos] & 0x1F == 18:  # script data: onMetaData
            _check_flv_filesize(data, data[pos + 11 : pos + 11 + size])
        first = False
        pos = end
    if first:
        raise ValueError(f"FLV is truncated: no tag follows its header. {_REFETCH}")


_FLV_FILESIZE = b"\x00\x08filesize\x00"  # AMF0 key "filesize", then a number marker (0)


def _check_flv_filesize(data: bytes, script: bytes) -> None:
    at = script.find(_FLV_FILESIZE)
    if at < 0 or at + len(_FLV_FILESIZE) + 8 > len(script):
        return
    declared = struct.unpack_from(">d", script, at + len(_FLV_FILESIZE))[0]
    if declared > len(data):
        raise ValueError(
            f"FLV is truncated: its metadata declares {declared:.0f} bytes, {len(data)} are "
            f"present ({declared - len(data):.0f} missing). {_REFETCH}"
        )
