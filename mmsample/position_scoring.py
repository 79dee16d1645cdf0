"""The scoring pass over a user's map-style Dataset: BSS's ranking, BSS-learned's rescoring and
SMV-reference's re-valuation for a loop built on `wrap` (whose sample ids are dataset indices).

Place in the data flow: the user's `Dataset[index]` -> the same fetch and collate as `wrap`
(every modality carried, the user's collate_fn) -> **`forward(batch)`** (no gradients) ->
subset logits -> `ledger.observe` under those indices. `mmsample.scoring.score` is the same pass
over shards; `wrap(..., scorer=PositionScorer(...))` runs it when the method asks
(`method.scoring_ids(epoch)`), and `mmsample.Balancer` builds one from the user's model.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data._utils.collate import default_collate

from .eval_mode import eval_mode
from .ledger import Ledger
from .loader.wrap import LABEL, OUTPUTS, DatasetFetch
from .schedule import resolve_world
from .scoring import VALUES

# batch -> subset logits [B, 2**M, K] (row 2**M - 1 fused, row 1 << j modality j alone), or
# (subset logits, M unimodal logits [B, K])
Forward = Callable[[Any], "Tensor | tuple[Tensor, Sequence[Tensor]]"]


class PositionScorer:
    """`scorer(positions)`: run `forward` over those indices of `dataset` and record them in
    `ledger` under the same indices (the ids `wrap` gives the dataset's samples).

    Args:
        forward: batch -> subset logits `[B, 2**M, K]` (or `(subset logits, unimodal logits)`,
            M tensors `[B, K]`; default unimodal: row `1 << j`), called under `torch.no_grad`
            with `model`'s modules in eval mode.
        dataset: the map-style Dataset `wrap` reads. fields: as in `wrap`.
        collate_fn: the user's collate (default: torch's default_collate).
        output: the batch `forward` gets, as in `wrap`: "dataset" (the user's structure,
            `TupleBatch` / `DictBatch`) or "multimodal" (`MultimodalBatch`).
        batch_size: items per forward. device: where batches go (None: where they are).
        values: the subset values recorded (`mmsample.scoring.VALUES`: "smv", "bmmal"; None).
        model: what the pass puts in eval mode (dropout off, BatchNorm's running statistics
            used, not updated; each module's mode restored after; `mmsample.eval_mode`): an
            nn.Module or an object holding them. Default: `forward` itself when it is an
            nn.Module or a bound method of one; give it when `forward` is a plain function.

    Under torch.distributed each rank scores a contiguous share of the positions, then the
    ledgers sync (every rank calls the scorer, as the loader does at `set_epoch`). Raises
    ValueError naming the parameter for an unknown output or values kind, batch_size < 1.
    """

    def __init__(
        self,
        forward: Forward,
        dataset: Any,
        ledger: Ledger,
        *,
        fields: Mapping[str, int | str],
        collate_fn: Callable[[list[Any]], Any] | None = None,
        output: str = "dataset",
        batch_size: int = 64,
        device: torch.device | str | None = None,
        values: str | None = "smv",
        model: Any = None,
    ) -> None:
        if output not in OUTPUTS:
            raise ValueError(
                f"The 'output' parameter of PositionScorer must be one of {list(OUTPUTS)}; "
                f"got {output!r}."
            )
        if values is not None and values not in VALUES:
            raise ValueError(
                f"The 'values' parameter of PositionScorer must be None or one of "
                f"{sorted(VALUES)}; got {values!r}."
            )
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(
                f"The 'batch_size' parameter of PositionScorer must be an int >= 1; "
                f"got {batch_size!r}."
            )
        self.forward, self.dataset, self.ledger = forward, dataset, ledger
        self.names = tuple(k for k in fields if k != LABEL)
        self.fetch = DatasetFetch(dataset, fields, self.names, output)
        self.collate = OUTPUTS[output](self.names, collate_fn or default_collate)
        self.batch_size = batch_size
        self.device = None if device is None else torch.device(device)
        self.values = None if values is None else VALUES[values]
        self.model = forward if model is None else model

    def __call__(self, positions: np.ndarray) -> None:
        positions = np.asarray(positions, dtype=np.int64)
        rank, world = resolve_world(None, None, "PositionScorer")
        n = len(positions)
        mine = positions[rank * n // world : (rank + 1) * n // world]
        full = (1 << len(self.names)) - 1
        for start in range(0, len(mine), self.batch_size):
            chunk = [int(p) for p in mine[start : start + self.batch_size]]
            samples = [self.fetch(p, full, 0, 0) for p in chunk]
            batch = self.collate(samples)
            if self.device is not None:
                batch = batch.to(self.device, non_blocking=True)
            with torch.no_grad(), eval_mode(self.model):
                out = self.forward(batch)
            subsets, unimodal = out if isinstance(out, tuple) else (out, None)
            subsets = subsets.float()
            labels = torch.tensor([s["label"] for s in samples], device=subsets.device)
            uni = (
                [subsets[:, 1 << j] for j in range(len(self.names))]
                if unimodal is None
                else [u.float() for u in unimodal]
            )
            ids = torch.tensor(chunk, device=subsets.device)
            self.ledger.observe(
                ids,
                labels,
                uni,
                subsets[:, full],
                values=None if self.values is None else self.values(subsets, labels, ids),
            )
        self.ledger.flush()
        if world > 1:
            self.ledger.sync()
