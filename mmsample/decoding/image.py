"""The `Image` spec: one still image as RGB (or RGBA), oriented as a viewer shows it.

Place in the data flow: the reader hands `Image.decode` the bytes of the sample's image field;
the header (`mmsample.decoding.image_header`) is checked before any pixel is decoded, then the
backend decodes, EXIF orientation is applied and transparency composited or kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from .backends import get_backend
from .base import DTYPES, bad_parameter, check_backend, check_size, check_spec_field
from .frames import finish_frames
from .image_header import (
    DEFAULT_MAX_PIXELS,
    check_max_pixels,
    check_pixels,
    ffmpeg_decodes_size,
    image_header,
    orient,
)

__all__ = ["Image", "composite"]


def _check_background(value: object) -> tuple[int, int, int]:
    triple = (value, value, value) if isinstance(value, int) else value
    if (
        not isinstance(triple, tuple | list)
        or len(triple) != 3
        or not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in triple)
    ):
        raise bad_parameter(
            "Image", "background", "an int or an (R, G, B) triple of ints in [0, 255]", value
        )
    return int(triple[0]), int(triple[1]), int(triple[2])


def composite(image: torch.Tensor, background: tuple[int, int, int]) -> torch.Tensor:
    """uint8 RGBA `[4, H, W]` (straight alpha) over an opaque `background` colour -> uint8 RGB
    `[3, H, W]`: `round((rgb * a + bg * (255 - a)) / 255)` per channel, in integers."""
    rgb, a = image[:3].to(torch.int32), image[3:4].to(torch.int32)
    bg = torch.tensor(background, dtype=torch.int32).view(3, 1, 1)
    return torch.div(rgb * a + bg * (255 - a) + 127, 255, rounding_mode="floor").to(torch.uint8)


@dataclass
class Image:
    """One still image (png, jpeg, ...) as RGB `[3, H, W]` (RGBA `[4, H, W]` with alpha=True),
    uint8 or float in [0, 1], in the orientation a viewer shows.

    Orientation: the EXIF Orientation tag (JPEG APP1, PNG eXIf) is applied after decoding, so the
    tensor is what a viewer displays (the policy `Video` follows for rotated clips).
    Transparency (RGBA, grey + alpha, palette or colour key with tRNS): composited over
    `background` (default white, what a page shows behind clip art), or with `alpha=True` kept
    as a fourth channel (straight, not premultiplied; 255 for opaque files). Same pixels on every
    backend.
    `max_pixels`: the header's width x height is checked BEFORE decoding (PNG, JPEG, GIF, BMP,
    WebP; other formats after decoding); larger images raise ValueError naming the size and this
    parameter (default 89,478,485, Pillow's MAX_IMAGE_PIXELS; None: no limit). The FFmpeg
    decoders themselves refuse images with (W + 128) * (H + 128) >= 2**31 / 8 pixels.
    Raises ValueError on undecodable bytes; the reader wraps it in a SampleError naming the sample.
    """

    field: str = "png"
    size: int | tuple[int, int] | None = None
    dtype: Literal["uint8", "float32"] = "uint8"
    backend: str | None = None
    background: int | tuple[int, int, int] = (255, 255, 255)
    alpha: bool = False
    max_pixels: int | None = DEFAULT_MAX_PIXELS

    def __post_init__(self) -> None:
        check_spec_field("Image", self.field)
        self.size = check_size("Image", self.size)
        if self.dtype not in DTYPES:
            raise bad_parameter("Image", "dtype", f"one of {list(DTYPES)}", self.dtype)
        check_backend("Image", self.backend)
        self.background = _check_background(self.background)
        if not isinstance(self.alpha, bool):
            raise bad_parameter("Image", "alpha", "a bool", self.alpha)
        check_max_pixels(self.max_pixels, "Image")

    def decode(self, data: bytes, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """Check the declared size, decode the first frame, orient, composite or keep alpha,
        resize (deterministic; generator unused)."""
        how = "Image(max_pixels=...)"
        header = image_header(data)
        if header is not None:
            check_pixels(header.width, header.height, self.max_pixels, how=how)
        try:
            image = get_backend(self.backend).image(data)
        except ValueError as err:
            if header is not None and not ffmpeg_decodes_size(header.width, header.height):
                raise ValueError(
                    f"the image declares {header.width}x{header.height} pixels, beyond what the "
                    "FFmpeg decoders accept ((W + 128) * (H + 128) < 2**31 / 8); downscale the "
                    f"file before sharding ({err})"
                ) from err
            raise
        if header is None:
            check_pixels(image.shape[-1], image.shape[-2], self.max_pixels, how=how)
            orientation = 1
        else:
            orientation = header.orientation
        image = orient(image, orientation)
        if self.alpha:
            if image.shape[0] == 3:
                image = torch.cat([image, image.new_full((1, *image.shape[1:]), 255)])
        elif image.shape[0] == 4:
            image = composite(image, self.background)  # type: ignore[arg-type]
        size = self.size if isinstance(self.size, tuple) else None
        return finish_frames(image[None], size, self.dtype)[0]
