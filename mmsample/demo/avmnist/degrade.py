"""AV-MNIST's imbalance: the digit image and the speech degraded before a clip is made.

Place in the data flow: between the sources and the clip (`build_avmnist` with
`image_components=k` or `audio_snr_db=s`). Only the mp4 clip is degraded; the `npy` and `png`
fields keep the clean sources.
"""

from __future__ import annotations

import math

import numpy as np


def add_noise(audio: np.ndarray, span: int, snr_db: float, seed: int) -> np.ndarray:
    """`audio` float32 `[S]` plus seeded white Gaussian noise at `snr_db` dB below the mean
    power of the centred speech span (`span` samples long), rescaled to peak <= 0.99."""
    n = len(audio)
    lo = max(0, (n - span) // 2)
    speech = audio[lo : lo + min(span, n)].astype(np.float64)
    power = float(np.mean(speech**2)) if len(speech) else 0.0
    noise = np.random.default_rng(seed).normal(size=n) * math.sqrt(power / 10 ** (snr_db / 10))
    mixed = audio.astype(np.float64) + noise
    peak = float(np.abs(mixed).max())
    if peak > 0.99:
        mixed *= 0.99 / peak
    return mixed.astype(np.float32)


def principal_images(images: np.ndarray, components: int) -> np.ndarray:
    """Each image of `images` (float `[N, H, W]`, levels 0..16) rebuilt from its projection on
    the first `components` principal components of the set (plus the mean), clipped to 0..16:
    AV-MNIST's energy reduction. `components` in 1..H*W; float64 `[N, H, W]`."""
    x = np.asarray(images, dtype=np.float64)
    flat = x.reshape(len(x), -1)
    if not 1 <= components <= flat.shape[1]:
        raise ValueError(
            f"The 'image_components' parameter must be in 1..{flat.shape[1]}; got {components}."
        )
    mean = flat.mean(0)
    _, _, vt = np.linalg.svd(flat - mean, full_matrices=False)
    basis = vt[:components]
    rebuilt = (flat - mean) @ basis.T @ basis + mean
    return np.clip(rebuilt, 0.0, 16.0).reshape(x.shape)
