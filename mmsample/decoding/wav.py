"""RIFF/WAVE files: the header parser, the completeness check and a reader to a float tensor.

Place in the data flow: `Audio(backend="wave")` reads wav bytes here without FFmpeg; with any
other backend, `Audio` first checks here that a wav file is not cut short (FFmpeg would decode it
silently up to the cut); the sharding probe reaches these checks through `Audio`. Nothing here
decodes compressed audio.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import NamedTuple

import numpy as np
import torch

__all__ = ["WavInfo", "check_wav_complete", "parse_wav", "read_wav"]

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


_WAV_DTYPES: dict[tuple[int, bool], np.dtype] = {
    (8, False): np.dtype(np.uint8),
    (16, False): np.dtype("<i2"),
    (32, False): np.dtype("<i4"),
    (32, True): np.dtype("<f4"),
    (64, True): np.dtype("<f8"),
}


def read_wav(data: bytes) -> tuple[torch.Tensor, int]:
    """PCM (8/16/24/32-bit) or float wav bytes -> (float32 [C, S] in [-1, 1], sample rate)."""
    info = parse_wav(data)
    raw = data[info.data_offset : info.data_offset + info.data_size]
    if info.bits == 24 and not info.is_float:
        b = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        ints = (b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)) << 8 >> 8  # sign-extend 24 bits
        samples = ints.astype(np.float32) / float(1 << 23)
    else:
        dtype = _WAV_DTYPES.get((info.bits, info.is_float))
        if dtype is None:
            raise ValueError(
                f"wav with {info.bits}-bit {'float' if info.is_float else 'PCM'} samples is not supported"
            )
        values = np.frombuffer(raw, dtype=dtype)
        if info.is_float:
            samples = values.astype(np.float32)
        elif info.bits == 8:
            samples = (values.astype(np.float32) - 128.0) / 128.0
        else:
            samples = values.astype(np.float32) / float(1 << (info.bits - 1))
    wave = torch.from_numpy(samples.reshape(-1, info.channels).T.copy())
    return wave, info.sample_rate
