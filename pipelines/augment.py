"""OGM-GE's training-time frame augmentation, on a batch, on the batch's device.

Place in the data flow: reader (`pipelines.presets`, frames resized to 224 and kept uint8) ->
`MultimodalBatch.to(device)` -> **`random_resized_crop_flip(batch["visual"], generator)`** ->
`pipelines.paper_models.AVResNet`. OGM-GE's loaders apply torchvision's
`RandomResizedCrop(224)` and `RandomHorizontalFlip()` to every frame independently; doing it
here, after the copy to the GPU, keeps the readers deterministic per (seed, epoch, id) and costs
one `grid_sample` per batch.

The crop follows torchvision's `RandomResizedCrop.get_params`: area fraction uniform in `scale`,
aspect ratio log-uniform in `ratio`, up to 10 draws, the first that fits kept, else the whole
frame (torchvision's last fallback centre-crops to the ratio bounds, a case only frames with an
aspect ratio outside `ratio` reach). The crop is resized back to the frame's size by bilinear
sampling (`grid_sample`, no antialiasing, unlike torchvision's PIL resize); the flip has
probability `flip`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["random_resized_crop_flip"]


def _check(name: str, pair: tuple[float, float], low: float, high: float) -> None:
    a, b = pair
    if not (low < a <= b <= high):
        raise ValueError(
            f"The '{name}' parameter of random_resized_crop_flip must be (a, b) with "
            f"{low} < a <= b <= {high}; got {pair!r}."
        )


def random_resized_crop_flip(
    frames: torch.Tensor,
    generator: torch.Generator | None = None,
    *,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    flip: float = 0.5,
) -> torch.Tensor:
    """Frames `[..., 3, H, W]` (uint8 or float) -> the same shape and dtype, each frame cropped
    at random, resized back to (H, W) and flipped left-right with probability `flip`.

    Randomness comes only from `generator` (on the frames' device, or the CPU default).
    Raises ValueError for a scale outside (0, 1], a ratio outside (0, inf) or a flip
    probability outside [0, 1]."""
    _check("scale", scale, 0.0, 1.0)
    _check("ratio", ratio, 0.0, math.inf)
    if not 0.0 <= flip <= 1.0:
        raise ValueError(
            f"The 'flip' parameter of random_resized_crop_flip must be in [0, 1]; got {flip!r}."
        )
    shape = frames.shape
    x = frames.reshape(-1, *shape[-3:])
    n, _, h, w = x.shape
    dev = x.device

    def uniform(*size: int) -> torch.Tensor:
        return torch.rand(*size, generator=generator, device=dev, dtype=torch.float64)

    tries = 10
    area = h * w * (scale[0] + (scale[1] - scale[0]) * uniform(n, tries))
    logr = math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * uniform(n, tries)
    aspect = torch.exp(logr)
    cw = torch.sqrt(area * aspect).round()
    ch = torch.sqrt(area / aspect).round()
    fits = (cw > 0) & (cw <= w) & (ch > 0) & (ch <= h)
    first = torch.where(
        fits.any(1), fits.double().argmax(1), torch.full_like(fits[:, 0], -1, dtype=torch.long)
    )
    pick = first.clamp(min=0).unsqueeze(1)
    cw = torch.where(
        first >= 0, cw.gather(1, pick).squeeze(1), torch.full_like(first, w, dtype=torch.float64)
    )
    ch = torch.where(
        first >= 0, ch.gather(1, pick).squeeze(1), torch.full_like(first, h, dtype=torch.float64)
    )
    # top-left corner uniform over the integer positions where the crop fits
    left = torch.floor(uniform(n) * (w - cw + 1))
    top = torch.floor(uniform(n) * (h - ch + 1))
    mirror = torch.where(uniform(n) < flip, -1.0, 1.0).to(torch.float64)
    theta = torch.zeros(n, 2, 3, dtype=torch.float64, device=dev)
    theta[:, 0, 0] = cw / w * mirror
    theta[:, 0, 2] = (2 * left + cw) / w - 1
    theta[:, 1, 1] = ch / h
    theta[:, 1, 2] = (2 * top + ch) / h - 1
    src = x.float()
    grid = F.affine_grid(theta.float(), [n, x.shape[1], h, w], align_corners=False)
    out = F.grid_sample(src, grid, mode="bilinear", padding_mode="border", align_corners=False)
    if frames.dtype == torch.uint8:
        out = out.round_().clamp_(0, 255).to(torch.uint8)
    else:
        out = out.to(frames.dtype)
    return out.reshape(shape)
