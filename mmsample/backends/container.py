"""Container checks that need no decoder: does an mp4/mov file hold all the bytes it declares?

Place in the data flow: every backend runs `check_boxes` on a video's bytes before decoding,
and the sharding tool's probe runs it through the backend. An ISO base media file (mp4, mov,
m4a) is a sequence of top-level boxes, each starting with its size; a file cut short leaves the
last box (usually 'mdat', the media data) longer than the bytes that remain. With the index
('moov') at the front (`-movflags +faststart`) such a file still opens and decodes the frames
that remain, so without this check a cut inside the last frame's bytes decodes silently. Other
containers (Matroska/WebM, AVI) are left to the timeline check of `presentation_window`.
"""

from __future__ import annotations

import struct

__all__ = ["check_boxes"]

# Box types that can open an ISO base media file; anything else is not one and is not checked.
_FIRST_BOXES = frozenset({b"ftyp", b"styp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot"})


def check_boxes(data: bytes) -> None:
    """Walk the top-level boxes of an ISO base media file; raise ValueError if one runs past the
    end of `data` (the file is truncated) or a box size is impossible (the file is corrupt).
    Bytes that are not an ISO base media file are accepted unchecked."""
    if len(data) < 8 or data[4:8] not in _FIRST_BOXES:
        return
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
                f"{len(data) - pos} are present ({pos + size - len(data)} missing). The file was "
                "cut short (interrupted download or copy): fetch or encode it again."
            )
        pos += size
    if pos != len(data):
        raise ValueError(
            f"mp4 is truncated: {len(data) - pos} bytes at its end are not a whole box header"
        )
