"""The library side of `mmsample query` and `mmsample subset`: load the user's model from
`module:function`, run a query round on disk, and summarise the picks.

`mmsample query SHARDS --model pkg.mod:build --strategy bmmal --budget 500 [--labeled
round.json] [--split train] [--parts S] --out next.json`: `build()` returns the model (an object
with `features(batch)` -> M tensors `[B, D_j]` and `head(x)` -> fused logits, as `query` calls
it) carrying a `modalities` attribute (ordered `{name: Spec}`: what to decode), or a pair
`(model, modalities)`. The pool is the samples of the dataset split `--split` (default: "train"
when the shards have splits, else every sample); a budget over its unlabeled samples is refused
before the pool pass. The state file written to `--out` holds every earlier round (from
`--labeled`, a state file or an id list) and this query's picks as its last round; its `split`
field is the number of pool parts (`--parts`).
"""

from __future__ import annotations

import importlib
import os
import sys
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..shards.format import read_manifest
from ..shards.indexed import IndexedDataset
from .pool import Pool
from .query import MC_PASSES, pool_pass, select_split
from .rounds import RoundState, read_ids
from .strategies import make_strategy


def load_model(spec: str) -> tuple[Any, Mapping[str, Any]]:
    """(model, modalities) from `module:function` (the function called with no arguments).
    The current directory is importable, as under `python -m mmsample` (the `mmsample` console
    script's sys.path lacks it): it is put first on sys.path when absent, and stays there for
    the modules the model imports later.
    ValueError naming `--model` and the fix when it cannot be imported or returns neither."""
    module, colon, name = spec.partition(":")
    if not colon or not module or not name:
        raise ValueError(f"--model must be module:function (e.g. mypkg.models:build); got {spec!r}")
    here = os.getcwd()
    if not any(p in ("", ".") or os.path.abspath(p) == here for p in sys.path):
        sys.path.insert(0, here)
    try:
        fn = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as err:
        raise ValueError(
            f"--model {spec!r}: cannot import {name!r} from {module!r} ({err}); is the module "
            "on PYTHONPATH?"
        ) from err
    built = fn()
    if isinstance(built, tuple) and len(built) == 2:
        model, modalities = built
    else:
        model, modalities = built, getattr(built, "modalities", None)
    if not isinstance(modalities, Mapping) or not callable(getattr(model, "features", None)):
        raise ValueError(
            f"--model {spec!r} must return a model with features(batch) and head(x) and a "
            "`modalities` attribute ({name: Spec}), or a pair (model, modalities); got "
            f"{type(built).__name__}."
        )
    return model, modalities


def summary(pool: Pool, ids: torch.Tensor, classes: list[str], names: list[str]) -> str:
    """Per-class counts (by the model's predicted class) and the mean modality contribution of
    the picks, as printed by `mmsample query`."""
    pos = pool.positions(ids)
    pred = pool.probs[pos.to(pool.probs.device)].argmax(1).cpu().tolist()
    counts = Counter(pred)
    lines = [f"picked {len(ids)} of {len(pool)} pool samples"]
    lines.append(
        "per predicted class: "
        + ", ".join(
            f"{classes[c] if c < len(classes) else c}: {n}" for c, n in sorted(counts.items())
        )
    )
    if pool.subset_probs is not None and len(ids):
        phi = pool.contribution(pos).mean(0).tolist()
        pool_phi = pool.contribution().mean(0).tolist()
        lines.append(
            "mean modality contribution of the picks: "
            + ", ".join(f"{n} {p:.3f} (pool {q:.3f})" for n, p, q in zip(names, phi, pool_phi))
        )
        lines.append(f"mean dominance degree of the picks: {float(pool.dominance(pos).mean()):.3f}")
    return "\n".join(lines)


def pool_reader(
    shards: str | os.PathLike[str], modalities: Mapping[str, Any], split: str | None
) -> IndexedDataset:
    """The pool: the shards' samples of dataset split `split`; None: "train" when the shards
    have splits (a test split is never pooled unasked), every sample when they have none.
    ValueError naming `--split` for a split the shards do not have, or for shards whose
    splits include no "train" when `--split` is not given."""
    known = read_manifest(shards).split_counts()
    if split is None and known:
        if "train" not in known:
            raise ValueError(
                f"--split: the shards have the splits {sorted(known)} and none is 'train'; "
                "name the split to pool from with --split."
            )
        split = "train"
    if split is not None and split not in known:
        have = f"the splits {sorted(known)}" if known else "no split column"
        raise ValueError(f"--split {split!r}: the shards have {have}.")
    return IndexedDataset(os.fspath(shards), modalities, split=split)


def check_budget(budget: int, reader: IndexedDataset, labeled: np.ndarray) -> None:
    """ValueError naming `--budget` when it exceeds the pool's unlabeled samples."""
    unlabeled = int(np.count_nonzero(~np.isin(reader.ids, labeled)))
    if budget > unlabeled:
        split = reader.table.split
        where = f" (split {split!r})" if split is not None else ""
        raise ValueError(
            f"--budget is {budget} but only {unlabeled} of the pool's {len(reader)} samples"
            f"{where} are unlabeled; lower --budget or add samples to the pool."
        )


def run_query(
    shards: str | os.PathLike[str],
    model_spec: str,
    strategy: str,
    budget: int,
    out: str | os.PathLike[str],
    *,
    labeled: str | os.PathLike[str] | None = None,
    split: str | None = None,
    parts: int = 1,
    seed: int = 0,
    batch_size: int = 64,
    device: str = "cpu",
    progress: bool = True,
) -> tuple[RoundState, str]:
    """One query round over the pool of dataset split `split` (see `pool_reader`): the budget
    checked, the pool pass, selection in `parts` pool parts, the state file saved atomically at
    `out`. Returns (the state, the summary text)."""
    chosen = make_strategy(strategy, "mmsample query --strategy")
    model, modalities = load_model(model_spec)
    if labeled is not None and Path(labeled).read_text().lstrip().startswith("{"):
        state = RoundState.load(labeled)
        state.strategy, state.budget, state.split = chosen.name, budget, parts
    else:
        state = RoundState(chosen.name, seed=seed, budget=budget, split=parts)
        if labeled is not None:
            state.add_round(read_ids(labeled).tolist())
    reader = pool_reader(shards, modalities, split)
    check_budget(budget, reader, state.labeled())  # before the pass, which may take minutes
    pool = pool_pass(
        model,
        reader,
        batch_size=batch_size,
        device=device,
        mc_passes=MC_PASSES if getattr(chosen, "needs_mc", False) else 0,
        seed=state.seed,
        progress=progress,
    )
    gen = torch.Generator(device=pool.probs.device).manual_seed(state.seed + len(state.rounds))
    ids = select_split(chosen, pool, budget, parts, labeled=state.labeled(), generator=gen)
    state.add_round(ids.tolist())
    state.save(out)
    classes = read_manifest(shards).classes
    return state, summary(pool, ids, classes, list(modalities))
