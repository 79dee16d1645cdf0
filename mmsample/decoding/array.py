"""The `Array` spec: a precomputed feature array stored as .npy -> tensor, never unpickled.

Place in the data flow: the reader hands `Array.decode` the bytes of the sample's .npy field; the
header is checked first (`mmsample.decoding.npy`), then numpy loads it with allow_pickle=False.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import torch

from .base import bad_parameter, check_spec_field
from .npy import npy_header

__all__ = ["Array"]


@dataclass
class Array:
    """A precomputed feature array stored as .npy -> tensor (cast to `dtype` if given).

    Loaded with allow_pickle=False: an object array is refused with a clear error.
    """

    field: str = "npy"
    dtype: str | None = None

    def __post_init__(self) -> None:
        check_spec_field("Array", self.field)
        if self.dtype is not None and not isinstance(
            getattr(torch, str(self.dtype), None), torch.dtype
        ):
            raise bad_parameter(
                "Array", "dtype", "None or a torch dtype name such as 'float32'", self.dtype
            )

    def decode(self, data: bytes, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """Parse the .npy (header checked first, never unpickled) into a tensor."""
        _shape, dtype, _offset = npy_header(data)
        array = np.load(io.BytesIO(data), allow_pickle=False)
        if not array.dtype.isnative:
            array = array.astype(array.dtype.newbyteorder("="))
        try:
            tensor = torch.from_numpy(np.ascontiguousarray(array))
        except TypeError as err:
            raise ValueError(f".npy dtype {dtype} has no torch equivalent ({err})") from None
        return tensor.to(getattr(torch, self.dtype)) if self.dtype is not None else tensor
