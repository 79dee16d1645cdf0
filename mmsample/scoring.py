"""The scoring pass: one loop that runs a user's model over the ids of a reader and records into
a Ledger what the methods need, with no method and no training.

Place in the data flow: shards -> reader -> **scoring pass** (model in inference mode) ->
ledger. BSS's first ranking needs it (the paper scores "once before training"), SMV's reference
variant re-valuates with it each epoch, and the active-learning pool pass
(`mmsample.active.query`) is the same loop: `model_pass` (reader + ids -> model, batched, in
inference mode) with a per-batch callback, here one that writes into the Ledger.
Everything else comes from the training pass (`ledger.observe`), with no second pass.

The model is an object with `features(batch) -> [z_0, ..., z_{M-1}]` (`[B, D_j]` each, for a
`MultimodalBatch`) and `head(x) -> [B', K]` logits of the fusion head on the concatenated
features; `unimodal(features) -> M logits [B, K]` is optional (default: the head on each
modality alone, the other features zeroed: `subset_logits` row `1 << j`). The head runs once on
all 2**M masked feature sets (`mmsample.signals.subset_logits`), which gives the fused logits and
the subset values: "smv" `v[C] = |C|` if the head on C alone predicts the label, else 0;
"bmmal" the probability of the full model's prediction. A subset whose logits give no
prediction (NaN, +inf, -inf for every class: a cosine head on zeroed features) counts as wrong,
value 0, with one `mmsample.signals.NonFiniteSubsetWarning` per batch naming the ids.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from .batch import Collate, MultimodalBatch
from .eval_mode import eval_mode
from .ledger import Ledger
from .schedule import resolve_world
from .shards.indexed import IdSubset, IndexedDataset
from .signals import finite_subsets, subset_correct, subset_logits, subset_sizes


class ScoringModel(Protocol):
    """What the scoring pass calls (see the module docstring)."""

    def features(self, batch: MultimodalBatch) -> Sequence[Tensor]: ...

    def head(self, x: Tensor) -> Tensor: ...


def _smv_values(logits: Tensor, labels: Tensor, ids: Tensor) -> Tensor:
    m = logits.shape[1].bit_length() - 1
    sizes = subset_sizes(m, logits.device).to(logits.dtype)
    return subset_correct(logits, labels, ids).to(logits.dtype) * sizes


def _bmmal_values(logits: Tensor, labels: Tensor, ids: Tensor) -> Tensor:
    probs = torch.softmax(logits.float(), -1)
    pred = probs[:, -1].argmax(-1)
    chosen = probs.gather(-1, pred.view(-1, 1, 1).expand(-1, probs.shape[1], 1)).squeeze(-1)
    return torch.where(finite_subsets(logits, ids, "score"), chosen, 0.0)


# (subset logits [B, 2**M, K], labels [B], ids [B]) -> values [B, 2**M]; a subset whose
# logits give no prediction (NaN, +inf, -inf for every class) counts as wrong (value 0), with
# one NonFiniteSubsetWarning naming the ids
VALUES: dict[str, Callable[[Tensor, Tensor, Tensor], Tensor]] = {
    "smv": _smv_values,
    "bmmal": _bmmal_values,
}


def open_reader(
    source: str | os.PathLike[str] | IndexedDataset,
    modalities: Mapping[str, Any] | None,
    owner: str,
) -> IndexedDataset:
    """`source` itself, or an `IndexedDataset` over the shard folder `source` (then
    `modalities` is required: ValueError naming the parameter)."""
    if isinstance(source, IndexedDataset):
        return source
    if modalities is None:
        raise ValueError(
            f"The 'modalities' parameter of {owner} is required when the source is a path."
        )
    return IndexedDataset(os.fspath(source), modalities)  # a path or a URL


def pass_ids(
    reader: IndexedDataset, ids: np.ndarray | Sequence[int] | None, owner: str
) -> tuple[np.ndarray, np.ndarray]:
    """(all ids of the pass, sorted and unique; this rank's contiguous share of them). Under
    torch.distributed (or RANK / WORLD_SIZE) rank r takes `chosen[r*n//W : (r+1)*n//W]`.
    ValueError for ids the dataset does not have."""
    known = np.unique(np.asarray(reader.table.ids, dtype=np.int64))
    chosen = known if ids is None else np.unique(np.asarray(ids, dtype=np.int64))
    missing = np.setdiff1d(chosen, known)
    if len(missing):
        raise ValueError(
            f"The 'ids' argument of {owner} holds {len(missing)} ids the dataset does not have, "
            f"e.g. {missing[:8].tolist()}."
        )
    rank, world = resolve_world(None, None, owner)
    return chosen, chosen[rank * len(chosen) // world : (rank + 1) * len(chosen) // world]


def checked_features(out: Any, rows: int, names: Sequence[str]) -> list[Tensor]:
    """`model.features(batch)`'s output as a list, checked: one 2-D tensor `[B, D_j]` per
    modality, B the batch's sample count. ValueError naming `model.features(batch)`, what it
    returned and the fix (a single fused tensor or `[B, T, D]` tensors are the usual slips)."""
    if isinstance(out, Tensor) or not isinstance(out, Sequence):
        got = f"a tensor {tuple(out.shape)}" if isinstance(out, Tensor) else type(out).__name__
    else:
        shapes = [tuple(f.shape) if isinstance(f, Tensor) else type(f).__name__ for f in out]
        good = all(isinstance(f, Tensor) and f.ndim == 2 and f.shape[0] == rows for f in out)
        if good and len(out) == len(names):
            return list(out)
        got = f"{len(out)} items {shapes}"
    raise ValueError(
        f"model.features(batch) must return a list of one 2-D tensor [B, D_j] per modality "
        f"({len(names)}: {', '.join(names)}), B = {rows} samples in this batch; got {got}. "
        "Return the per-modality features unfused, each flattened to [B, D_j] (the pool and "
        "scoring passes concatenate them for model.head)."
    )


def model_pass(
    model: ScoringModel,
    reader: IndexedDataset,
    ids: np.ndarray,
    on_batch: Callable[[MultimodalBatch, list[Tensor]], None],
    *,
    batch_size: int = 64,
    num_workers: int = 0,
    device: torch.device | str = "cpu",
    progress: bool = True,
    autocast: bool = True,
    desc: str = "scoring",
) -> int:
    """The one loop of the scoring and pool passes: `ids` of `reader` (in the order given) in
    batches of `batch_size` -> `model.features(batch)` -> `on_batch(batch, features)`, all in
    `torch.inference_mode` with the model's modules in eval mode (`mmsample.eval_mode`: dropout
    off, BatchNorm's running statistics used, not updated; each module's mode restored after),
    batches moved to `device` (non-blocking, pinned on CUDA), autocast on CUDA when `autocast`,
    a progress bar when `progress` (rank 0 only). Returns len(ids).
    Raises ValueError for `batch_size < 1`."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(
            f"The 'batch_size' parameter of {desc} must be an int >= 1; got {batch_size!r}."
        )
    names = tuple(reader.decoder.names)
    dev = torch.device(device)
    loader = DataLoader(
        IdSubset(reader, ids),
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=Collate(names),
        pin_memory=dev.type == "cuda",
    )
    rank, _ = resolve_world(None, None, desc)
    amp = torch.autocast(dev.type) if autocast and dev.type == "cuda" else contextlib.nullcontext()
    bar = tqdm(total=len(ids), desc=desc, unit="sample", disable=not progress or rank != 0)
    with torch.inference_mode(), amp, eval_mode(model):
        for batch in loader:
            batch = batch.to(dev, non_blocking=True)
            on_batch(batch, checked_features(model.features(batch), len(batch), names))
            bar.update(len(batch))
    bar.close()
    return len(ids)


def score(
    model: ScoringModel,
    source: str | os.PathLike[str] | IndexedDataset,
    ledger: Ledger,
    *,
    ids: np.ndarray | Sequence[int] | None = None,
    modalities: dict[str, Any] | None = None,
    batch_size: int = 64,
    num_workers: int = 0,
    device: torch.device | str = "cpu",
    values: str | None = "smv",
    progress: bool = True,
    autocast: bool = True,
) -> int:
    """Run `model` over `ids` of `source` (default: all) and record every batch in `ledger`.

    Under torch.distributed each rank scores a contiguous share of the ids, then the ledger is
    synced (every rank must call `score`). Runs in `torch.inference_mode` with the model in eval
    mode (its modules' modes restored after), with autocast on CUDA
    (`autocast=True`) and non-blocking copies; a progress bar on rank 0 (`progress`). Returns the
    number of samples this rank scored. Raises ValueError naming the argument for an unknown
    `values` kind, `batch_size < 1`, a path without `modalities`, or ids outside the dataset.
    """
    if values is not None and values not in VALUES:
        raise ValueError(
            f"The 'values' parameter of score must be None or one of {sorted(VALUES)}; "
            f"got {values!r}."
        )
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(
            f"The 'batch_size' parameter of score must be an int >= 1; got {batch_size!r}."
        )
    reader = open_reader(source, modalities, "score")
    names = tuple(reader.decoder.names)
    _, mine = pass_ids(reader, ids, "score")
    full = (1 << len(names)) - 1
    value_fn = None if values is None else VALUES[values]
    unimodal = getattr(model, "unimodal", None)

    def record(batch: MultimodalBatch, feats: list[Tensor]) -> None:
        logits = subset_logits(feats, model.head).float()
        uni = (
            [u.float() for u in unimodal(feats)]
            if callable(unimodal)
            else [logits[:, 1 << j] for j in range(len(names))]
        )
        present = torch.stack([batch.present(n) for n in names], 1)
        v = None if value_fn is None else value_fn(logits, batch.labels, batch.ids)
        ledger.observe(batch.ids, batch.labels, uni, logits[:, full], values=v, present=present)

    model_pass(
        model,
        reader,
        mine,
        record,
        batch_size=batch_size,
        num_workers=num_workers,
        device=device,
        progress=progress,
        autocast=autocast,
        desc="score",
    )
    ledger.flush()
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        ledger.sync()
    return len(mine)


class Scorer:
    """`scorer(ids)`: `score(model, source, ledger, ids=ids, **options)`; give one to
    `balanced_loader(..., scorer=...)` so methods that ask for a scoring pass get it."""

    def __init__(
        self,
        model: ScoringModel,
        source: str | os.PathLike[str] | IndexedDataset,
        ledger: Ledger,
        **options: Any,
    ) -> None:
        self.model, self.source, self.ledger, self.options = model, source, ledger, options

    def __call__(self, ids: np.ndarray) -> None:
        score(self.model, self.source, self.ledger, ids=ids, **self.options)
