"""The library side of `mmsample query` and `mmsample subset`: load the user's model from
`module:function`, run a query round on disk, and summarise the picks.

`mmsample query SHARDS --model pkg.mod:build --strategy bmmal --budget 500 [--labeled
round.json] --out next.json`: `build()` returns the model (an object with `features(batch)` ->
M tensors `[B, D_j]` and `head(x)` -> fused logits, as `query` calls it) carrying a
`modalities` attribute (ordered `{name: Spec}`: what to decode), or a pair `(model,
modalities)`. The state file written to `--out` holds every earlier round (from `--labeled`, a
state file or an id list) and this query's picks as its last round.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..shards.format import Manifest
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


def run_query(
    shards: str | os.PathLike[str],
    model_spec: str,
    strategy: str,
    budget: int,
    out: str | os.PathLike[str],
    *,
    labeled: str | os.PathLike[str] | None = None,
    split: int = 1,
    seed: int = 0,
    batch_size: int = 64,
    device: str = "cpu",
    progress: bool = True,
) -> tuple[RoundState, str]:
    """One query round: pool pass, selection, the state file saved atomically at `out`.
    Returns (the state, the summary text)."""
    chosen = make_strategy(strategy, "mmsample query --strategy")
    model, modalities = load_model(model_spec)
    if labeled is not None and Path(labeled).read_text().lstrip().startswith("{"):
        state = RoundState.load(labeled)
        state.strategy, state.budget, state.split = chosen.name, budget, split
    else:
        state = RoundState(chosen.name, seed=seed, budget=budget, split=split)
        if labeled is not None:
            state.add_round(read_ids(labeled).tolist())
    pool = pool_pass(
        model,
        shards,
        modalities=modalities,
        batch_size=batch_size,
        device=device,
        mc_passes=MC_PASSES if getattr(chosen, "needs_mc", False) else 0,
        seed=state.seed,
        progress=progress,
    )
    gen = torch.Generator(device=pool.probs.device).manual_seed(state.seed + len(state.rounds))
    ids = select_split(chosen, pool, budget, split, labeled=state.labeled(), generator=gen)
    state.add_round(ids.tolist())
    state.save(out)
    classes = Manifest.load(Path(shards)).classes
    return state, summary(pool, ids, classes, list(modalities))
