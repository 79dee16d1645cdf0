"""The OGM-GE / DUS discrepancy score, its cumulative mean, and OGM-GE's gradient coefficients.

Per training step each modality's unimodal logits give a score `s = sum_i p_{i, y_i}` (OGM-GE);
OGM-GE turns the batch's scores into per-encoder gradient coefficients (`ogm_coefficients`, used
by `mmsample.methods.OGMGE`), and DUS keeps their running mean over steps
(`CumulativeMean`) to size each modality's next batch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from .checks import check_labels, describe

__all__ = ["CumulativeMean", "discrepancy", "ogm_coefficients"]


def discrepancy(logits: Tensor, labels: Tensor) -> Tensor:
    """0-dim `sum_i softmax(logits_i)[y_i]` over the batch (a SUM, so it grows with batch size)."""
    if not isinstance(logits, Tensor) or not logits.is_floating_point() or logits.ndim != 2:
        got = describe(logits)
        raise ValueError(
            f"The 'logits' argument of discrepancy must be a floating tensor [B, K]; got {got}."
        )
    labels = check_labels(labels, logits.shape[0], "discrepancy")
    probs = torch.softmax(logits, dim=1)
    return probs.gather(1, labels.long()[:, None]).sum()


def ogm_coefficients(scores: Tensor, alpha: float, tie_modulates: int | None = None) -> Tensor:
    """OGM-GE gradient coefficients `[M]` from the batch's discrepancy scores `[M]`.

    `rho_u = s_u / mean_{j != u} s_j` (for M = 2: `s_a / s_v` and its inverse);
    `k_u = 1 - tanh(alpha * rho_u)` if `rho_u > 1`, else 1, so an exact tie leaves every k at 1.
    `tie_modulates=j` modulates modality j also at `rho_j == 1` (`>=` instead of `>`): the
    authors' two-modality code does this for audio (j = 0 with audio first). A zero mean of the
    others gives rho = inf (k = 0) or, with s_u = 0 too, NaN (k = 1).
    """
    if not isinstance(scores, Tensor) or not scores.is_floating_point() or scores.ndim != 1:
        got = describe(scores)
        raise ValueError(
            f"The 'scores' argument of ogm_coefficients must be a floating tensor [M]; got {got}."
        )
    m = scores.shape[0]
    if m < 2:
        raise ValueError(
            f"The 'scores' argument of ogm_coefficients needs M >= 2 modalities; got {m}."
        )
    if not alpha > 0:
        raise ValueError(f"The 'alpha' parameter of ogm_coefficients must be > 0; got {alpha}.")
    if tie_modulates is not None and not (
        isinstance(tie_modulates, int) and 0 <= tie_modulates < m
    ):
        raise ValueError(
            f"The 'tie_modulates' parameter of ogm_coefficients must be None or a modality index "
            f"in [0, {m}); got {tie_modulates!r}."
        )
    others = (scores.sum() - scores) / (m - 1)
    rho = scores / others
    modulated = rho > 1
    if tie_modulates is not None:
        modulated[tie_modulates] = rho[tie_modulates] >= 1
    return torch.where(modulated, 1.0 - torch.tanh(alpha * rho), torch.ones_like(rho))


class CumulativeMean:
    """Running mean of a tensor-valued score: `S_1 = s_1`, `S_t = (t-1)/t S_{t-1} + s_t / t`.

    DUS keeps one over its per-modality discrepancy scores; the state saves the count and value.
    """

    def __init__(self, shape: Sequence[int] | int = ()) -> None:
        dims = (shape,) if isinstance(shape, int) else tuple(shape)
        if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in dims):
            raise ValueError(
                f"The 'shape' parameter of CumulativeMean must be non-negative ints; got {shape!r}."
            )
        self.shape = dims
        self.count = 0
        self._value: Tensor | None = None

    @property
    def value(self) -> Tensor:
        """The current mean S_t (raises before the first update)."""
        if self._value is None:
            raise RuntimeError("CumulativeMean has no value before its first update().")
        return self._value

    def update(self, score: Tensor) -> Tensor:
        """Fold in the step's score `s_t` (shape `shape`) and return the new mean S_t."""
        if not isinstance(score, Tensor) or not score.is_floating_point():
            raise TypeError(
                f"The 'score' argument of CumulativeMean.update must be a floating tensor; "
                f"got {type(score).__name__}."
            )
        if tuple(score.shape) != self.shape:
            raise ValueError(
                f"The 'score' argument of CumulativeMean.update must have shape {self.shape}; "
                f"got {tuple(score.shape)}."
            )
        t = self.count + 1
        if self._value is None:
            self._value = score.detach().clone()
        else:
            self._value = (t - 1) / t * self._value + score.detach() / t
        self.count = t
        return self._value

    def reset(self) -> None:
        """Forget every update."""
        self.count = 0
        self._value = None

    def state_dict(self) -> dict[str, Any]:
        """Count and value (a copy), plus the kind and shape a loader checks against."""
        return {
            "kind": "CumulativeMean",
            "shape": list(self.shape),
            "count": self.count,
            "value": None if self._value is None else self._value.clone(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore from `state_dict()`; refuses another kind or shape; `state` is not modified."""
        if state.get("kind") != "CumulativeMean":
            raise ValueError(
                f"This state is not a CumulativeMean state; its kind is {state.get('kind')!r}."
            )
        if tuple(state.get("shape", ())) != self.shape:
            raise ValueError(
                f"This CumulativeMean has shape {self.shape}; the state was saved with shape "
                f"{tuple(state.get('shape', ()))}."
            )
        count, value = int(state["count"]), state["value"]
        if (count == 0) != (value is None):
            raise ValueError(
                f"CumulativeMean state is inconsistent: count {count} with "
                f"{'no value' if value is None else 'a value'}."
            )
        self.count = count
        self._value = None if value is None else value.clone()
