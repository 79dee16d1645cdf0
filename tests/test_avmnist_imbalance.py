"""The demo's imbalance knobs (AV-MNIST's recipe) and its held-out split, checked against values
worked out by hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mmsample.demo.avmnist import add_noise, build_avmnist, principal_images, split_rows


def test_principal_images_keep_the_leading_directions() -> None:
    # 2x2 images: mean 8, a strong direction e1 (+-3) and a weak one e2 (+-1), uncorrelated
    t = np.array([1.0, -1.0, 1.0, -1.0])
    s = np.array([1.0, 1.0, -1.0, -1.0])
    e1, e2 = np.array([1.0, 0, 0, 0]), np.array([0, 1.0, 0, 0])
    flat = 8 + 3 * t[:, None] * e1 + s[:, None] * e2
    images = flat.reshape(4, 2, 2)
    np.testing.assert_allclose(principal_images(images, 4), images, atol=1e-9)
    np.testing.assert_allclose(principal_images(images, 2), images, atol=1e-9)
    one = (8 + 3 * t[:, None] * e1).reshape(4, 2, 2)  # the weak direction is gone
    np.testing.assert_allclose(principal_images(images, 1), one, atol=1e-9)


def test_principal_images_clip_and_validate() -> None:
    images = np.zeros((3, 2, 2))
    images[0, 0, 0], images[1, 0, 0] = 16.0, 16.0  # mean 32/3 at (0, 0): fine; rebuilt in range
    out = principal_images(images, 1)
    assert out.min() >= 0.0 and out.max() <= 16.0
    for bad in (0, 5):
        with pytest.raises(ValueError, match="'image_components'"):
            principal_images(images, bad)


def test_add_noise_mixes_at_the_asked_snr() -> None:
    n, span, amp = 160_000, 80_000, 0.1
    audio = np.zeros(n, dtype=np.float32)
    lo = (n - span) // 2
    audio[lo : lo + span] = amp * np.sin(np.arange(span) * 0.3)
    speech_power = float(np.mean(audio[lo : lo + span].astype(np.float64) ** 2))  # ~amp^2 / 2
    for snr in (0.0, 10.0):
        mixed = add_noise(audio, span, snr, seed=5)
        noise = mixed.astype(np.float64) - audio
        assert np.mean(noise**2) == pytest.approx(speech_power / 10 ** (snr / 10), rel=0.02)
        assert np.array_equal(mixed, add_noise(audio, span, snr, seed=5))
        assert not np.array_equal(mixed, add_noise(audio, span, snr, seed=6))
    loud = add_noise(audio * 9, span, -20.0, seed=1)  # would clip: rescaled to peak 0.99
    assert np.abs(loud).max() == pytest.approx(0.99, abs=1e-6)


def test_split_rows_holds_out_a_share_of_every_class() -> None:
    labels = np.array([0] * 2 + [1] * 5 + [2] * 10 + [3])
    rows = split_rows(labels, 0.2, seed=0)
    tests = {c: sum(r == "test" for r, lab in zip(rows, labels) if lab == c) for c in range(4)}
    # round(0.4) = 0 -> at least 1; round(1.0) = 1; round(2.0) = 2; a single row stays train
    assert tests == {0: 1, 1: 1, 2: 2, 3: 0}
    assert rows == split_rows(labels, 0.2, seed=0)
    assert any(split_rows(labels, 0.2, seed=s) != rows for s in range(1, 6))


def test_build_refuses_bad_imbalance_settings(tmp_path: Path) -> None:
    for kwargs, name in (
        ({"image_components": 0}, "image_components"),
        ({"image_components": 65}, "image_components"),
        ({"audio_snr_db": float("nan")}, "audio_snr_db"),
        ({"test_fraction": 1.0}, "test_fraction"),
        ({"test_fraction": -0.1}, "test_fraction"),
    ):
        with pytest.raises(ValueError, match=f"'{name}'"):
            build_avmnist(tmp_path / "x", n=2, workers=0, **kwargs)  # type: ignore[arg-type]
    assert not (tmp_path / "x").exists()
