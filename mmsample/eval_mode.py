"""Inference passes run the model in eval mode: dropout off, batch-norm running statistics used
and left unchanged, every module's own mode restored afterwards.

Place in the data flow: around every pass of mmsample that runs a user's model without training
it: the scoring pass (`mmsample.scoring.model_pass`, hence `score`, `Scorer` and the
active-learning pool pass) and `mmsample.position_scoring.PositionScorer`. A scoring pass in
train mode would update BatchNorm's running statistics with the scored batches and rank the
samples with dropout on.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from torch import nn

__all__ = ["eval_mode", "modules_of"]


def modules_of(model: Any) -> list[nn.Module]:
    """Every `nn.Module` of `model`: an nn.Module (itself and its submodules), a bound method of
    one (`model.forward`), or an object whose attributes are nn.Modules (a wrapper holding
    `encoders` and `head`); each module once. Anything else has none."""
    owner = getattr(model, "__self__", None)  # a bound method: its object
    if owner is not None and not isinstance(model, nn.Module):
        model = owner
    roots = (
        [model] if isinstance(model, nn.Module) else list(getattr(model, "__dict__", {}).values())
    )
    found: dict[int, nn.Module] = {}
    for root in roots:
        if isinstance(root, nn.Module):
            for mod in root.modules():
                found[id(mod)] = mod
    return list(found.values())


@contextlib.contextmanager
def eval_mode(model: Any) -> Iterator[None]:
    """`model`'s modules (`modules_of`) in eval mode inside the block; each module's own
    `training` flag restored after it, also when the block raises (a module the user keeps in
    eval mode during training stays so)."""
    mods = modules_of(model)
    modes = [m.training for m in mods]
    for m in mods:
        m.training = False
    try:
        yield
    finally:
        for m, mode in zip(mods, modes):
            m.training = mode
