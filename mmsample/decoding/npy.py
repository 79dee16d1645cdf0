""".npy files: read the header (shape, dtype, payload offset) without loading or unpickling.

Place in the data flow: `Array.decode` checks the header here before numpy loads the payload, and
the sharding probe checks every .npy file here; an object array (which only loads by unpickling)
and a payload shorter than its header says are refused.
"""

from __future__ import annotations

import io
import struct

import numpy as np

__all__ = ["npy_header"]


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
