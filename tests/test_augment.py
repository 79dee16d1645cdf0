"""OGM-GE's frame augmentation on a batch: random resized crop and horizontal flip."""

from __future__ import annotations

import pytest
import torch

from pipelines.augment import random_resized_crop_flip as augment


def frames(n: int = 6, size: int = 16) -> torch.Tensor:
    return torch.randint(
        0, 256, (n, 2, 3, size, size), generator=torch.Generator().manual_seed(1)
    ).to(torch.uint8)


def test_whole_frame_without_flip_is_the_identity_and_flip_mirrors() -> None:
    x = frames()
    assert torch.equal(augment(x, scale=(1.0, 1.0), ratio=(1.0, 1.0), flip=0.0), x)
    assert torch.equal(augment(x, scale=(1.0, 1.0), ratio=(1.0, 1.0), flip=1.0), x.flip(-1))


def test_crop_of_a_quarter_of_the_area_spans_half_the_ramp() -> None:
    """On a horizontal ramp (value = x), a square crop of 1/4 of a 64x64 frame is 32 px wide,
    starting at a whole pixel `left` in [0, 32]; resized back to 64 px, output pixel k samples
    x = left + (k + 0.5) / 2 - 0.5, so neighbours differ by 0.5 and pixel 1 is left + 0.25
    (pixels 0 and 63 may sample a quarter-pixel outside the frame and are clamped to its edge)."""
    ramp = torch.arange(64.0).expand(20, 3, 64, 64).contiguous()
    gen = torch.Generator().manual_seed(0)
    out = augment(ramp, gen, scale=(0.25, 0.25), ratio=(1.0, 1.0), flip=0.0)
    row = out[:, 0, 0]
    torch.testing.assert_close(row[:, 2:63] - row[:, 1:62], torch.full((20, 61), 0.5))
    left = row[:, 1] - 0.25
    assert torch.equal(left, left.round()) and left.min() >= 0 and left.max() <= 32
    assert len(set(left.tolist())) > 1  # the position is random
    # every row of a frame is the same ramp (the crop is square and rows are equal)
    assert torch.equal(out[:, 0], out[:, 0, :1].expand_as(out[:, 0]))


def test_seeded_dtype_and_flip_rate() -> None:
    x = frames(n=200, size=8)
    a = augment(x, torch.Generator().manual_seed(3))
    b = augment(x, torch.Generator().manual_seed(3))
    c = augment(x, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.dtype == torch.uint8 and a.shape == x.shape
    ramp = torch.arange(8.0).expand(400, 3, 8, 8).contiguous()
    out = augment(ramp, torch.Generator().manual_seed(5), scale=(1.0, 1.0), ratio=(1.0, 1.0))
    flipped = (out[:, 0, 0, 0] > out[:, 0, 0, -1]).float().mean()
    assert 0.42 < float(flipped) < 0.58  # 400 frames, p = 0.5: 1 sd = 0.025


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"scale": (0.0, 1.0)}, "'scale'"),
        ({"scale": (0.5, 1.5)}, "'scale'"),
        ({"ratio": (2.0, 1.0)}, "'ratio'"),
        ({"flip": 1.5}, "'flip'"),
    ],
)
def test_bad_parameters(kwargs: dict, match: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(ValueError, match=match):
        augment(frames(), **kwargs)
