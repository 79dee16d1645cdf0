"""The pool pass and `query`: one streaming pass of the model over the pool shards, then selection.

Place in the data flow: pool shards -> reader -> model (the scoring pass's loop,
`mmsample.scoring.model_pass`: batched, `inference_mode`, autocast on CUDA, a progress bar) ->
`Pool` (features, fused softmax, softmax on every modality subset via `subset_logits`) ->
strategy -> ids to label. Under torchrun every rank scores its contiguous share of the pool's
ids, then the cached tensors are all-gathered (variable-size parts) so that every rank holds the
whole Pool and selects the same ids a single process would.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

from ..batch import MultimodalBatch
from ..eval_mode import modules_of
from ..scoring import ScoringModel, model_pass, open_reader, pass_ids
from ..shards.indexed import IndexedDataset
from ..signals import subset_logits
from .pool import Pool
from .strategies import Strategy, make_strategy, randperm

MC_PASSES = 5  # BALD's MC-dropout passes (the MMAL papers' setting)


def dropout_modules(model: Any) -> list[nn.Module]:
    """The dropout layers of `model` (an nn.Module, or an object whose attributes are)."""
    return [m for m in modules_of(model) if isinstance(m, nn.modules.dropout._DropoutNd)]


@contextlib.contextmanager
def _dropout_on(layers: list[nn.Module]) -> Any:
    modes = [layer.training for layer in layers]
    for layer in layers:
        layer.train(True)
    try:
        yield
    finally:
        for layer, mode in zip(layers, modes):
            layer.train(mode)


class _Collector:
    """Writes each batch's outputs into preallocated tensors (allocated at the first batch)."""

    def __init__(
        self,
        model: ScoringModel,
        rows: int,
        mc: list[nn.Module],
        passes: int,
        seed: int,
        device: torch.device,
    ) -> None:
        self.model, self.rows, self.mc, self.passes = model, rows, mc, passes
        self.seed, self.device = seed, device
        self.at = 0
        self.features: list[Tensor] = []
        self.probs: Tensor | None = None
        self.subset: Tensor | None = None
        self.mc_probs: Tensor | None = None
        self.labels: Tensor | None = None
        self.ids: Tensor | None = None

    def allocate(self, dims: Sequence[int], k: int) -> None:
        n, dev = self.rows, self.device
        self.features = [torch.zeros(n, d, device=dev) for d in dims]
        self.probs = torch.zeros(n, k, device=dev)
        self.subset = torch.zeros(n, 1 << len(dims), k, device=dev)
        self.mc_probs = torch.zeros(n, self.passes, k, device=dev) if self.passes else None
        self.labels = torch.zeros(n, dtype=torch.long)
        self.ids = torch.zeros(n, dtype=torch.long)

    def __call__(self, batch: MultimodalBatch, feats: list[Tensor]) -> None:
        sub = torch.softmax(subset_logits(feats, self.model.head).float(), dim=-1)
        if self.probs is None:
            self.allocate([f.shape[1] for f in feats], sub.shape[2])
        lo, hi = self.at, self.at + len(batch)
        for j, f in enumerate(feats):
            self.features[j][lo:hi] = f.float()
        self.subset[lo:hi] = sub  # type: ignore[index]
        self.probs[lo:hi] = sub[:, -1]  # type: ignore[index]
        self.labels[lo:hi] = batch.labels.cpu()  # type: ignore[index]
        self.ids[lo:hi] = batch.ids.cpu()  # type: ignore[index]
        if self.passes:
            x = torch.cat(feats, dim=1)
            devices = [self.device] if self.device.type == "cuda" else []
            with torch.random.fork_rng(devices=devices), _dropout_on(self.mc):
                torch.manual_seed(self.seed * 1_000_003 + int(batch.ids[0]))
                draws = [torch.softmax(self.model.head(x).float(), -1) for _ in range(self.passes)]
            self.mc_probs[lo:hi] = torch.stack(draws, 1)  # type: ignore[index]
        self.at = hi


def _world() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _gather_rows(t: Tensor) -> Tensor:
    """Concatenate every rank's `t` (rows may differ per rank) in rank order, on every rank."""
    world = dist.get_world_size()
    n = torch.tensor([t.shape[0]], dtype=torch.long, device=t.device)
    sizes = [torch.zeros_like(n) for _ in range(world)]
    dist.all_gather(sizes, n)
    counts = [int(s) for s in sizes]
    padded = t.new_zeros((max(counts), *t.shape[1:]))
    padded[: t.shape[0]] = t
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded)
    return torch.cat([p[:c] for p, c in zip(parts, counts)])


def _agree_dims(collector: _Collector, m: int, device: torch.device) -> None:
    """Ranks that scored no sample learn the feature widths and K from the others."""
    mine = [f.shape[1] for f in collector.features]
    mine += [collector.probs.shape[1]] if collector.probs is not None else [0]
    dims = torch.tensor(mine if len(mine) == m + 1 else [0] * (m + 1), device=device)
    dist.all_reduce(dims, op=dist.ReduceOp.MAX)
    if collector.probs is None:
        collector.allocate([int(d) for d in dims[:m]], int(dims[m]))


def pool_pass(
    model: ScoringModel,
    source: str | os.PathLike[str] | IndexedDataset,
    *,
    ids: np.ndarray | Sequence[int] | None = None,
    modalities: Mapping[str, Any] | None = None,
    batch_size: int = 64,
    num_workers: int = 0,
    device: torch.device | str = "cpu",
    mc_passes: int = 0,
    seed: int = 0,
    progress: bool = True,
    autocast: bool = True,
) -> Pool:
    """Run `model` once over the pool (`ids` of `source`, default all) and return the `Pool`
    (float32 tensors on `device`, rows in ascending id order; the stored labels kept).

    `model.features(batch)` -> M tensors `[B, D_j]`; `model.head(x)` -> fused logits `[B', K]`
    from the concatenation `x [B', sum D_j]`: it runs once on the 2**M masked feature sets of a
    batch (`mmsample.signals.subset_logits`). `mc_passes` > 0 adds T MC-dropout softmaxes of
    the head (its dropout layers switched to training mode; seeded per batch by `seed`) for BALD.
    Modules of the model run in eval mode during the pass (restored afterwards). Under
    torch.distributed every rank scores its share and all ranks receive the whole Pool.
    A shard path is read with `modalities` (default: the model's `modalities` attribute).
    Raises ValueError for a path without `modalities`, ids outside the dataset, `batch_size <
    1`, `mc_passes < 0`, or `mc_passes > 0` for a model without dropout layers.
    """
    if isinstance(mc_passes, bool) or not isinstance(mc_passes, int) or mc_passes < 0:
        raise ValueError(
            f"The 'mc_passes' parameter of pool_pass must be an int >= 0; got {mc_passes!r}."
        )
    layers = dropout_modules(model) if mc_passes else []
    if mc_passes and not layers:
        raise ValueError(
            f"pool_pass: mc_passes={mc_passes} needs a model with dropout layers (nn.Dropout in "
            "the model or its head) for MC-dropout draws; BALD cannot run on this model."
        )
    if modalities is None and not isinstance(source, IndexedDataset):
        modalities = getattr(model, "modalities", None)  # as `mmsample query --model` gives it
    reader = open_reader(source, modalities, "pool_pass")
    m = len(reader.decoder.names)
    _, mine = pass_ids(reader, ids, "pool_pass")
    dev = torch.device(device)
    collect = _Collector(model, len(mine), layers, mc_passes, seed, dev)
    model_pass(  # in eval mode (MC-dropout's passes turn dropout back on for their draws)
        model,
        reader,
        mine,
        collect,
        batch_size=batch_size,
        num_workers=num_workers,
        device=dev,
        progress=progress,
        autocast=autocast,
        desc="pool pass",
    )
    if _world() > 1:
        _agree_dims(collect, m, dev)
    elif collect.probs is None:
        raise ValueError("pool_pass: the pool is empty (no ids to score).")
    parts: list[Any] = [*collect.features, collect.probs, collect.subset, collect.ids]
    parts += [collect.labels, collect.mc_probs]
    if _world() > 1:
        parts = [None if t is None else _gather_rows(t.to(dev)) for t in parts]
        parts[m + 2], parts[m + 3] = parts[m + 2].cpu(), parts[m + 3].cpu()
    return Pool(
        parts[:m],
        parts[m],
        parts[m + 1],
        parts[m + 2],
        labels=parts[m + 3],
        mc_probs=parts[m + 4],
    )


def _check_request(budget: object, split: object) -> None:
    """The types and lower bounds of `budget` and `split` (checked before a pool pass)."""
    if isinstance(split, bool) or not isinstance(split, int) or split < 1:
        raise ValueError(f"The 'split' parameter of query must be an int >= 1; got {split!r}.")
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 0:
        raise ValueError(f"The 'budget' parameter of query must be an int >= 0; got {budget!r}.")


def select_split(
    strategy: Strategy,
    pool: Pool,
    budget: int,
    split: int = 1,
    *,
    labeled: Tensor | Iterable[int] | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """`strategy.select` over the whole pool (`split=1`, exact), or the paper's pool splitting:
    the unlabeled samples permuted (`generator`) into `split` parts of equal size +-1 (the
    first parts the larger), `budget // split` picks from each and one more from the first
    `budget % split` parts; exactly `budget` distinct ids in all. Each part is selected with the
    pool's labeled samples beside it (never picked; CoreSet's distances start from them). ValueError for `split < 1` or
    a budget over the unlabeled count."""
    _check_request(budget, split)
    if split == 1:
        return strategy.select(pool, budget, labeled=labeled, generator=generator)
    rows = pool.unlabeled(labeled)
    if budget > len(rows):
        raise ValueError(
            f"The 'budget' parameter of query must be an int in [0, {len(rows)}] (the unlabeled "
            f"samples of the pool's {len(pool)}); got {budget!r}."
        )
    perm = rows[randperm(len(rows), generator)]
    # every part keeps the labeled samples (never picked): CoreSet measures from them
    taken = torch.ones(len(pool), dtype=torch.bool)
    taken[rows] = False
    known = torch.nonzero(taken).flatten()
    picks = []
    for i, part in enumerate(torch.tensor_split(perm, split)):
        share = budget // split + (1 if i < budget % split else 0)
        if share:
            sub = pool.take(torch.cat([part, known]).sort().values)
            picks.append(strategy.select(sub, share, labeled=pool.ids[known], generator=generator))
    return torch.cat(picks) if picks else torch.zeros(0, dtype=torch.long)


def query(
    pool_source: str | os.PathLike[str] | IndexedDataset | Pool,
    model: ScoringModel | None,
    strategy: str | Strategy,
    budget: int,
    *,
    labeled: Tensor | Iterable[int] | None = None,
    split: int = 1,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
    modalities: Mapping[str, Any] | None = None,
    seed: int = 0,
    mc_passes: int | None = None,
    num_workers: int = 0,
    progress: bool = True,
) -> Tensor:
    """The ids (long `[budget]`, CPU, pick order) of the pool samples to label next.

    One pass of `model` over `pool_source` (a shard folder with `modalities`, a reader, or an
    already built `Pool`, then `model` may be None) -> `Pool` -> `strategy` (a `STRATEGIES` name
    or object) picks `budget` ids not in `labeled` (pool ids), exactly over the whole pool
    (`split=1`) or over `split` parts (`select_split`). Randomness: a generator on `device`
    seeded with `seed`. BALD runs `mc_passes` (default 5) MC-dropout passes of the head.
    Memory: the Pool, `4 * (sum D_j + K * (2**M + 1)) + 16` bytes per pool sample (id and
    label included), plus the selection's factors (`4 * (K + sum D_j)` bytes per unlabeled
    sample) and, for BADGE / BMMAL on CPU, the k-means++ screen's `2 * min(K, sum D_j)`.
    Raises ValueError naming the argument (unknown strategy, budget over the unlabeled count,
    split < 1, ...).
    """
    chosen = make_strategy(strategy, "query")
    _check_request(budget, split)  # before the pass, which may take minutes
    if isinstance(pool_source, Pool):
        pool = pool_source
    else:
        if model is None:
            raise ValueError("The 'model' parameter of query is required unless a Pool is given.")
        passes = (
            (MC_PASSES if getattr(chosen, "needs_mc", False) else 0)
            if mc_passes is None
            else mc_passes
        )
        pool = pool_pass(
            model,
            pool_source,
            modalities=modalities,
            batch_size=batch_size,
            num_workers=num_workers,
            device=device,
            mc_passes=passes,
            seed=seed,
            progress=progress,
        )
    gen = torch.Generator(device=pool.probs.device).manual_seed(seed)
    return select_split(chosen, pool, budget, split, labeled=labeled, generator=gen)
