"""Resize and convert decoded frames: the last step of `Video` and `Image` decoding.

Place in the data flow: a backend returns uint8 frames at their stored size; these functions
resize them with torch (so every backend gives the same pixels) and give the spec's dtype.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["finish_frames", "resize_frames"]


def resize_frames(frames: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize with antialiasing of uint8 `[T, 3, H, W]` to `[T, 3, *size]`, rounded back
    to uint8 (torch.nn.functional.interpolate, so every backend gives the same pixels)."""
    if tuple(frames.shape[-2:]) == tuple(size) or frames.shape[0] == 0:
        return frames if frames.shape[0] else frames.new_zeros(0, 3, *size)
    out = F.interpolate(
        frames.float(), size=size, mode="bilinear", align_corners=False, antialias=True
    )
    return out.round_().clamp_(0, 255).to(torch.uint8)


def finish_frames(frames: torch.Tensor, size: tuple[int, int] | None, dtype: str) -> torch.Tensor:
    """uint8 `[T, 3, H, W]` -> resized to `size` (None: as is), uint8 or float32 in [0, 1]."""
    if size is not None:
        frames = resize_frames(frames, size)
    return frames.float().div_(255.0) if dtype == "float32" else frames
