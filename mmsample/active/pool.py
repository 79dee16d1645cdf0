"""The pool: what one pass of the model over the unlabeled shards leaves for the query strategies.

Place in the data flow: pool shards -> reader -> model (`mmsample.active.query`'s pool pass) ->
**Pool** -> a strategy's `select` -> ids to label. A Pool is plain tensors, so strategies are
tested (and used) without shards.

Memory: a Pool holds, per sample, `4 * (sum_j D_j + K + 2**M * K)` bytes in float32 (features,
fused softmax, subset softmaxes) plus 8 for its id (and 8 for its label when the pool pass keeps
labels); VGGSound scale (M = 2, D_j = 512, K = 309): 10,284 bytes a sample with its id, 1.85 GB
for 180,000 samples. BADGE / BMMAL add the factors `a [U, K]`
and `z [U, sum D]` (U unlabeled) during selection and, on CPU, k-means++'s screen (float16
`[U, min(K, sum D)]`): at most 1.5x the Pool again.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import Tensor

from ..signals import bmmal_weights


def _describe(t: object) -> str:
    if isinstance(t, Tensor):
        return f"a {t.dtype} tensor of shape {tuple(t.shape)}"
    return f"{type(t).__name__}"


class Pool:
    """Cached outputs of the model on an unlabeled pool of N samples.

    Args:
        features: M tensors `[N, D_j]` (floating, on probs' device; stored in probs' dtype),
            the per-modality encoder features in modality order.
        probs: `[N, K]` the fused head's softmax on all modalities.
        subset_probs: `[N, 2**M, K]` the fused head's softmax on every modality subset (bitmask
            order, row 2**M - 1 = all modalities), as `mmsample.signals.subset_values` gives;
            needed by BMMAL and `contribution()` only (None otherwise).
        ids: `[N]` distinct pool ids (int); default 0..N-1.
        mc_probs: `[N, T, K]` softmax of T MC-dropout passes; needed by BALD only.
        labels: `[N]` labels stored with the samples (for reports; strategies never read them).

    Raises ValueError naming the argument for wrong shapes, dtypes, devices or repeated ids.
    """

    def __init__(
        self,
        features: Sequence[Tensor],
        probs: Tensor,
        subset_probs: Tensor | None = None,
        ids: Tensor | Sequence[int] | None = None,
        *,
        mc_probs: Tensor | None = None,
        labels: Tensor | None = None,
    ) -> None:
        if isinstance(features, Tensor) or len(features) < 1:
            raise ValueError(
                "The 'features' parameter of Pool must be a list of M tensors [N, D_j], one per "
                f"modality; got {_describe(features)}."
            )
        if not isinstance(probs, Tensor) or not probs.is_floating_point() or probs.ndim != 2:
            raise ValueError(
                f"The 'probs' parameter of Pool must be a floating tensor [N, K]; "
                f"got {_describe(probs)}."
            )
        n, k = probs.shape
        for j, f in enumerate(features):
            if (
                not isinstance(f, Tensor)
                or not f.is_floating_point()
                or f.ndim != 2
                or f.shape[0] != n
                or f.device != probs.device
            ):
                raise ValueError(
                    f"features[{j}] of Pool must be a floating [N, D_j] with N = {n} on "
                    f"{probs.device} (as probs); got {_describe(f)}."
                )
        m = len(features)
        if subset_probs is not None and (
            not isinstance(subset_probs, Tensor)
            or not subset_probs.is_floating_point()
            or subset_probs.shape != (n, 1 << m, k)
        ):
            raise ValueError(
                f"The 'subset_probs' parameter of Pool must be a floating [N, 2**M, K] = [{n}, "
                f"{1 << m}, {k}]; got {_describe(subset_probs)}."
            )
        if mc_probs is not None and (
            not isinstance(mc_probs, Tensor)
            or mc_probs.ndim != 3
            or mc_probs.shape[0] != n
            or mc_probs.shape[2] != k
        ):
            raise ValueError(
                f"The 'mc_probs' parameter of Pool must be [N, T, K] with N = {n}, K = {k}; "
                f"got {_describe(mc_probs)}."
            )
        if ids is None:
            id_tensor = torch.arange(n, dtype=torch.long)
        else:
            id_tensor = torch.as_tensor(ids).cpu()
            if id_tensor.shape != (n,) or id_tensor.is_floating_point():
                raise ValueError(
                    f"The 'ids' parameter of Pool must be N = {n} integer ids; "
                    f"got {_describe(id_tensor)}."
                )
            id_tensor = id_tensor.long()
            if len(torch.unique(id_tensor)) != n:
                raise ValueError(
                    "The 'ids' parameter of Pool must hold distinct ids; some id appears twice."
                )
        # one dtype for all (probs'): the selection mathematics combines them
        self.features = [f.to(probs.dtype) for f in features]
        self.probs = probs
        self.subset_probs = None if subset_probs is None else subset_probs.to(probs.dtype)
        self.ids = id_tensor
        self.mc_probs = mc_probs
        self.labels = labels

    def __len__(self) -> int:
        return self.probs.shape[0]

    @property
    def num_modalities(self) -> int:
        return len(self.features)

    @property
    def num_classes(self) -> int:
        return self.probs.shape[1]

    @property
    def nbytes(self) -> int:
        """Bytes of the Pool's tensors (features, probs, subset_probs, mc_probs, ids, labels)."""
        parts = [*self.features, self.probs, self.ids, self.subset_probs, self.mc_probs]
        parts.append(self.labels)
        return sum(t.numel() * t.element_size() for t in parts if t is not None)

    def fused_features(self, positions: Tensor | None = None) -> Tensor:
        """`[n, sum D_j]` the concatenated features (of `positions`, default all)."""
        feats = self.features if positions is None else [f[positions] for f in self.features]
        return torch.cat(feats, dim=1)

    def positions(self, ids: Tensor | Iterable[int]) -> Tensor:
        """Positions (long `[n]`, on CPU) of the given pool ids that are in the pool."""
        wanted = torch.as_tensor(list(ids) if not isinstance(ids, Tensor) else ids).long().cpu()
        return torch.nonzero(torch.isin(self.ids, wanted)).flatten()

    def unlabeled(self, labeled: Tensor | Iterable[int] | None) -> Tensor:
        """Positions (long, CPU, ascending) of the samples whose id is not in `labeled` (ids
        outside the pool are ignored)."""
        if labeled is None:
            return torch.arange(len(self))
        wanted = torch.as_tensor(
            list(labeled) if not isinstance(labeled, Tensor) else labeled, dtype=torch.long
        ).cpu()
        return torch.nonzero(~torch.isin(self.ids, wanted)).flatten()

    def contribution(self, positions: Tensor | None = None, chunk: int = 8192) -> Tensor:
        """BMMAL's modality contribution Phi `[n, M]` (rows sum to 1), computed in chunks of
        `chunk` rows from `subset_probs` (ValueError if the Pool has none)."""
        return self.contribution_and_weights(positions, chunk)[0]

    def contribution_and_weights(
        self, positions: Tensor | None = None, chunk: int = 8192
    ) -> tuple[Tensor, Tensor]:
        """(Phi `[n, M]`, BMMAL weights `[n, M]`) from `bmmal_weights`, chunked over rows."""
        if self.subset_probs is None:
            raise ValueError(
                "This Pool has no subset_probs [N, 2**M, K]: BMMAL's contributions need the "
                "fused head's softmax on every modality subset (query() collects it; build the "
                "Pool with subset_probs=mmsample.signals.subset_values(features, head))."
            )
        sub = self.subset_probs
        if positions is None:  # slices: no copy of subset_probs
            out = [bmmal_weights(sub[i : i + chunk]) for i in range(0, len(self), chunk)]
        else:
            rows = positions.to(sub.device)
            out = [bmmal_weights(sub[rows[i : i + chunk]]) for i in range(0, len(rows), chunk)]
        if not out:
            empty = self.probs.new_zeros((0, self.num_modalities))
            return empty, empty
        return torch.cat([c for c, _ in out]), torch.cat([w for _, w in out])

    def dominance(self, positions: Tensor | None = None) -> Tensor:
        """The dominance degree `max_j Phi_j - min_j Phi_j` `[n]` of each sample."""
        phi = self.contribution(positions)
        return phi.amax(dim=1) - phi.amin(dim=1)

    def take(self, positions: Tensor) -> Pool:
        """A Pool of the rows at `positions` (ids kept)."""
        dev = self.probs.device
        rows = positions.to(dev)
        return Pool(
            [f[rows] for f in self.features],
            self.probs[rows],
            None if self.subset_probs is None else self.subset_probs[rows],
            self.ids[positions.cpu()],
            mc_probs=None if self.mc_probs is None else self.mc_probs[rows],
            labels=None if self.labels is None else self.labels[positions.to(self.labels.device)],
        )
