"""Pure tensor functions every balancing method reads.

Model outputs of the training (or scoring) pass come in here: subset values and Shapley
contributions (SMV, BMMAL), the discrepancy score and its running mean (OGM-GE, DUS), the
balance score and pacing (BSS), the KL to uniform and the assignment (Remix), k-means++ over
rank-one gradient embeddings (BMMAL, BADGE).
Every function takes and returns tensors on any device, keeps the input dtype, and works for any
number of modalities M >= 2; a subset of modalities is an integer bitmask (bit j = modality j).
"""

from .balance import (
    BALANCE_SCORES,
    balance_loss,
    balance_score,
    balance_similarity,
    min_max,
    root_pacing,
)
from .bmmal import bmmal_weights, gradient_embedding_factors
from .discrepancy import CumulativeMean, discrepancy, ogm_coefficients
from .kmeans import kmeans_pp, rank_one_sq_distances
from .remix import assign_lowest, remix_assignment, uniform_kl
from .shapley import shapley, shapley_matrix
from .smv import (
    SMV_PROBABILITY,
    smv_contributions,
    smv_copies,
    smv_max_gap,
    smv_modality_probability,
)
from .subsets import (
    SUBSET_VALUES,
    NonFiniteSubsetWarning,
    finite_subsets,
    masks_with,
    masks_without,
    membership,
    subset_correct,
    subset_logits,
    subset_sizes,
    subset_values,
)

__all__ = [
    "BALANCE_SCORES",
    "SMV_PROBABILITY",
    "SUBSET_VALUES",
    "CumulativeMean",
    "NonFiniteSubsetWarning",
    "assign_lowest",
    "balance_loss",
    "balance_score",
    "balance_similarity",
    "bmmal_weights",
    "discrepancy",
    "finite_subsets",
    "gradient_embedding_factors",
    "kmeans_pp",
    "masks_with",
    "masks_without",
    "membership",
    "min_max",
    "ogm_coefficients",
    "rank_one_sq_distances",
    "remix_assignment",
    "root_pacing",
    "shapley",
    "shapley_matrix",
    "smv_contributions",
    "smv_copies",
    "smv_max_gap",
    "smv_modality_probability",
    "subset_correct",
    "subset_logits",
    "subset_sizes",
    "subset_values",
    "uniform_kl",
]
