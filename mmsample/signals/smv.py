"""SMV (Wei et al. 2024): sample-level modality valuation and the two re-sampling rules built on it.

Each epoch after warm-up the SMV method valuates training samples: `subset_correct` of the head's
subset logits gives, per sample, whether each modality subset alone predicts the label; the
contributions here turn that into Shapley values, then into extra single-modality copies
(sample level) or one re-sampling probability for the weakest modality (modality level).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .checks import describe
from .shapley import shapley
from .subsets import modalities_from_subsets, subset_sizes

__all__ = [
    "SMV_PROBABILITY",
    "smv_contributions",
    "smv_copies",
    "smv_max_gap",
    "smv_modality_probability",
]


def smv_contributions(correct: Tensor, dtype: torch.dtype | None = None) -> Tensor:
    """Shapley contributions `[B, M]` under SMV's benefit `v(C) = |C| * correct[C]`, v(empty) = 0.

    `correct` is bool `[B, 2**M]` indexed by subset mask (entry 0 is ignored); the result has
    `dtype` (default: torch's default float dtype).
    """
    if not isinstance(correct, Tensor) or correct.dtype != torch.bool or correct.ndim != 2:
        got = describe(correct)
        raise ValueError(
            f"The 'correct' argument of smv_contributions must be a bool tensor [B, 2**M]; got {got}."
        )
    m = modalities_from_subsets(correct.shape[1], "correct", "smv_contributions")
    dtype = torch.get_default_dtype() if dtype is None else dtype
    sizes = subset_sizes(m, correct.device).to(dtype)  # |C|, 0 for the empty set
    return shapley(correct.to(dtype) * sizes)


def smv_copies(phi: Tensor) -> Tensor:
    """Extra single-modality items per sample and modality, long `[B, M]` (authors' f_s).

    1 if 0.4 < phi < 1, 2 if -0.1 < phi <= 0.4, 3 if phi <= -0.1, else 0 (phi >= 1: the modality
    already contributes its full share, no copy).
    """
    if not isinstance(phi, Tensor) or not phi.is_floating_point():
        raise TypeError("The 'phi' argument of smv_copies must be a floating tensor [B, M].")
    one = torch.ones((), dtype=torch.long, device=phi.device)
    zero = torch.zeros((), dtype=torch.long, device=phi.device)
    copies = torch.where((phi > 0.4) & (phi < 1.0), one, zero)
    copies = torch.where((phi > -0.1) & (phi <= 0.4), 2 * one, copies)
    return torch.where(phi <= -0.1, 3 * one, copies)


def smv_max_gap(num_modalities: int) -> float:
    """Largest possible d = mean_{j != i}(Phi_j - Phi_i), i = argmin, under v(C) = |C| correct[C].

    It is M / 2. d = (sum_j Phi_j - M min_j Phi_j) / (M - 1) is convex in the mean contributions,
    so its maximum is reached by a single sample. For a fixed i, `v(all) - M phi_i` does not depend
    on v(all) (the term of S = all \\ i is `(v(all) - v(all \\ i)) / M`) and is largest when every
    subset holding i is wrong and every other subset right: `(M - 1) + sum_{s=1}^{M-2} s`
    = M (M - 1) / 2; dividing by M - 1 gives M / 2 (1 for two modalities, 1.5 for three).
    """
    if isinstance(num_modalities, bool) or not isinstance(num_modalities, int):
        raise TypeError("The 'num_modalities' parameter of smv_max_gap must be an int.")
    if num_modalities < 2:
        raise ValueError(
            f"The 'num_modalities' parameter of smv_max_gap must be >= 2; got {num_modalities}."
        )
    return num_modalities / 2


def _linear(x: Tensor, scale: float) -> Tensor:
    return x * scale


def _tanh(x: Tensor, scale: float) -> Tensor:
    return torch.tanh(x * scale)


def _power(x: Tensor, scale: float) -> Tensor:
    return x.pow(1.5) * scale


# f_m of the authors' code: `linear` d * alpha, `tanh` tanh(d * alpha), `square` d ** 1.5 * alpha
SMV_PROBABILITY: dict[str, Callable[[Tensor, float], Tensor]] = {
    "linear": _linear,
    "tanh": _tanh,
    "power": _power,
}


def smv_modality_probability(
    phi: Tensor, f_m: str = "linear", scale: float = 1.0, gap: float | None = None
) -> tuple[Tensor, Tensor]:
    """SMV modality level: the low-contributing modality i and its re-sampling probability p(i).

    From `phi [Z, M]` (contributions of the valuated subset Z): `Phi = mean over Z`,
    `i = argmin Phi` (ties: lowest index; d is the same for any tied i),
    `d = mean_{j != i}(Phi_j - Phi_i)`, `p = clamp(f_m(d / gap, scale), 0, 1)`.
    `gap` defaults to `smv_max_gap(M)` = M / 2, which makes `d / gap` a true 0-1 normalisation;
    the authors' two-modality code multiplies d by 2/3 (it assumes a largest gap of 1.5):
    pass `gap=1.5` to reproduce it. Returns 0-dim tensors (long index, probability in phi's dtype).
    """
    if not isinstance(phi, Tensor) or not phi.is_floating_point() or phi.ndim != 2:
        got = describe(phi)
        raise ValueError(
            f"The 'phi' argument of smv_modality_probability must be a floating tensor [Z, M]; "
            f"got {got}."
        )
    z, m = phi.shape
    if z < 1 or m < 2:
        raise ValueError(
            f"The 'phi' argument of smv_modality_probability needs Z >= 1 samples and M >= 2 "
            f"modalities; got [Z, M] = [{z}, {m}]."
        )
    if f_m not in SMV_PROBABILITY:
        raise ValueError(
            f"The 'f_m' parameter of smv_modality_probability must be one of "
            f"{sorted(SMV_PROBABILITY)}; got {f_m!r}."
        )
    if not scale > 0:
        raise ValueError(
            f"The 'scale' parameter of smv_modality_probability must be > 0; got {scale}."
        )
    if gap is not None and not gap > 0:
        raise ValueError(f"The 'gap' parameter of smv_modality_probability must be > 0; got {gap}.")
    mean = phi.mean(dim=0)
    weak = mean.argmin()
    d = (mean.sum() - m * mean.min()) / (m - 1)  # = mean_{j != i} (Phi_j - Phi_i)
    norm = (d / (smv_max_gap(m) if gap is None else gap)).clamp(min=0.0)
    return weak, SMV_PROBABILITY[f_m](norm, scale).clamp(0.0, 1.0)
