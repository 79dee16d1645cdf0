"""Classification scores of one set of predictions: accuracy and macro-F1.

Place in the data flow: after evaluation. `pipelines.training.evaluate` logs them per epoch
(`test/acc`, `test/macro_f1`) from the per-clip outcomes it gathers, and the report recomputes
them from `outcomes.jsonl` (`mmsample.report.outcomes`) when it resamples test clips.
Pure numpy functions of integer label and prediction arrays.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["accuracy", "macro_f1"]


def _pair(labels: ArrayLike, predictions: ArrayLike, owner: str) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels)
    p = np.asarray(predictions)
    if y.ndim != 1 or p.shape != y.shape:
        raise ValueError(
            f"{owner}: 'labels' and 'predictions' must be 1-D arrays of one class index per "
            f"clip, of equal length; got shapes {y.shape} and {p.shape}."
        )
    if not (np.issubdtype(y.dtype, np.integer) and np.issubdtype(p.dtype, np.integer)):
        raise ValueError(
            f"{owner}: 'labels' and 'predictions' must hold class indices (integers); got "
            f"{y.dtype} and {p.dtype}. Pass logits.argmax(-1), not the logits."
        )
    return y.astype(np.int64), p.astype(np.int64)


def accuracy(labels: ArrayLike, predictions: ArrayLike) -> float:
    """Share of clips whose prediction equals the label (a fraction in [0, 1]; NaN for no
    clip). `labels`, `predictions`: int `[N]`. ValueError for other shapes or dtypes."""
    y, p = _pair(labels, predictions, "accuracy")
    return float((y == p).mean()) if len(y) else float("nan")


def macro_f1(labels: ArrayLike, predictions: ArrayLike) -> float:
    """Macro-F1: the mean over classes of the per-class F1 = 2 TP / (2 TP + FP + FN).

    The classes averaged are those present in `labels` or `predictions` (a class absent from
    both has F1 = 0/0 and is excluded, as in scikit-learn's `f1_score(average="macro")`); a
    class that is predicted but never right, or present but never predicted, counts 0.
    BalanceBenchmark (`balancemm/evaluation/precisions.py`) computes the same per-class F1 from
    its confusion matrix but averages over all K classes, counting an absent class as 0: the two
    agree whenever every class occurs among the labels (a stratified test split).
    `labels`, `predictions`: int `[N]`. Returns a fraction in [0, 1]; NaN for no clip.
    """
    y, p = _pair(labels, predictions, "macro_f1")
    if not len(y):
        return float("nan")
    classes = np.union1d(y, p)
    tp = np.array([np.sum((y == c) & (p == c)) for c in classes], dtype=np.float64)
    fp = np.array([np.sum((y != c) & (p == c)) for c in classes], dtype=np.float64)
    fn = np.array([np.sum((y == c) & (p != c)) for c in classes], dtype=np.float64)
    return float(np.mean(2 * tp / (2 * tp + fp + fn)))
