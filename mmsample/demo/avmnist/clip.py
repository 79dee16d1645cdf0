"""The demo clip's tracks before encoding: the moving digit's frames and the centred speech.

Place in the data flow: between the (possibly degraded) sources and `encode.encode_clip`. The
digit, nearest-upsampled x4 to 32x32, moves in a straight line over a black 64x64 canvas (2.0 s
at 10 fps = 20 frames by default); the speech is centred in the clip's length (centre-cropped
when longer).
"""

from __future__ import annotations

import numpy as np


def digit_trajectory(frames: int, canvas: int, sprite: int, seed: int) -> np.ndarray:
    """Top-left corner `(row, col)` of the sprite per frame, int64 `[frames, 2]`: a straight line
    between two positions drawn uniformly (seeded) from those that keep it on the canvas."""
    if frames < 1:
        raise ValueError(f"The 'frames' parameter of digit_trajectory must be >= 1; got {frames}.")
    if not 1 <= sprite <= canvas:
        raise ValueError(
            f"The 'sprite' parameter of digit_trajectory must be in 1..canvas = {canvas}; "
            f"got {sprite}."
        )
    rng = np.random.default_rng(seed)
    start, end = rng.integers(0, canvas - sprite + 1, size=(2, 2))
    t = np.linspace(0.0, 1.0, frames)[:, None]
    return np.rint(start + (end - start) * t).astype(np.int64)


def digit_clip(
    image: np.ndarray,
    seconds: float = 2.0,
    fps: float = 10.0,
    size: int = 64,
    scale: int = 4,
    seed: int = 0,
) -> np.ndarray:
    """uint8 RGB frames `[round(seconds * fps), size, size, 3]`: the 8x8 digit (grey levels
    0..16) upsampled `scale` times (nearest) and moved along `digit_trajectory(seed)`."""
    img = np.asarray(image, dtype=np.float64)
    if img.ndim != 2 or img.min() < 0 or img.max() > 16:
        raise ValueError(
            f"The 'image' parameter of digit_clip must be 2-D in 0..16; got {img.shape}"
        )
    frames = round(seconds * fps)
    if frames < 1:
        raise ValueError(f"digit_clip needs seconds * fps >= 1 frame; got {seconds} * {fps}.")
    if size % 2 or not 1 <= scale * img.shape[0] <= size or scale * img.shape[1] > size:
        raise ValueError(
            f"The 'size' parameter of digit_clip must be even (yuv420p) and hold the upsampled "
            f"digit ({scale} x {img.shape}); got {size}."
        )
    sprite = np.rint(np.kron(img, np.ones((scale, scale))) * 255.0 / 16.0).astype(np.uint8)
    path = digit_trajectory(frames, size, sprite.shape[0], seed)
    video = np.zeros((frames, size, size, 3), dtype=np.uint8)
    h, w = sprite.shape
    for t, (r, c) in enumerate(path):
        video[t, r : r + h, c : c + w] = sprite[:, :, None]
    return video


def place_audio(wave: np.ndarray, length: int) -> tuple[np.ndarray, bool]:
    """Centre `wave` in `length` zeros (centre-crop if longer); say whether it was cropped."""
    out = np.zeros(length, dtype=np.float32)
    if len(wave) > length:
        start = (len(wave) - length) // 2
        return wave[start : start + length].astype(np.float32), True
    start = (length - len(wave)) // 2
    out[start : start + len(wave)] = wave
    return out, False
