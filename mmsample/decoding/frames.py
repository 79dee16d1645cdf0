"""Stack, resize and convert decoded frames: the last steps of `Video` and `Image` decoding.

Place in the data flow: a backend decodes frames at their stored size and stacks them with
`stack_frames` (which brings a clip whose resolution changes mid-stream to one size); the spec
then resizes them with torch (so every backend gives the same pixels) and gives its dtype.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

__all__ = ["finish_frames", "resize_frames", "stack_frames"]


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


def stack_frames(
    frames: Sequence[torch.Tensor],
    header_size: tuple[int, int],
    first_size: Callable[[], tuple[int, int]],
) -> torch.Tensor:
    """Stack one clip's decoded uint8 `[3, H, W]` frames (at least one) -> `[T, 3, H, W]`.

    A clip whose resolution changes mid-stream (concatenated segments, screen recordings)
    decodes to frames of several sizes; as the ffmpeg CLI does, every frame is then scaled to the
    size of the clip's first presented frame, here with `resize_frames`, so every backend gives
    the same pixels. When every frame has `header_size` (the stream header's (H, W), which is the
    first frame's for clips made by concatenation) they are stacked as they are; otherwise
    `first_size()` gives the first presented frame's (H, W) (a backend may decode it for that).
    The result is a `[T, 3, H, W]` view of channel-last memory, as torchcodec's batches are.
    """
    sizes = {tuple(f.shape[-2:]) for f in frames}
    if sizes != {tuple(header_size)}:
        height, width = first_size()
        target = (int(height), int(width))
        frames = [
            f if tuple(f.shape[-2:]) == target else resize_frames(f[None], target)[0]
            for f in frames
        ]
    # Stacked channel-last: decoders give [3, H, W] views of [H, W, 3] pictures, which stack
    # 25x faster this way (torchcodec's batch calls return this same layout).
    return torch.stack([f.permute(1, 2, 0) for f in frames]).permute(0, 3, 1, 2)
