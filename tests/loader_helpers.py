"""Shared pieces of the loader tests: a tiny real dataset, a fed ledger, each method by name."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmsample.decoding import Array, Audio
from mmsample.ledger import Ledger
from mmsample.loader import balanced_loader
from mmsample.methods import BSS, DUS, SMV, Remix
from mmsample.testing import write_tiny_dataset

N, K = 22, 3
NAMES = ("audio", "feat")
METHODS = ("none", "dus", "dus-rl", "bss", "bss-learned", "smv", "smv-modality", "remix")


def write_dataset(root: Path) -> None:
    """22 samples (wav + npy) in 5 shards; label = index % 3."""
    write_tiny_dataset(root, n=N, num_classes=K, fields=("wav", "npy"), samples_per_shard=5)


def modalities() -> dict[str, Any]:
    return {"audio": Audio(field="wav", seconds=0.25), "feat": Array(field="npy")}


def fed_ledger(seed: int = 0) -> Ledger:
    """Every id observed with logits where audio dominates (higher label probability), fused
    logits and SMV subset values (|C| if the subset's argmax is right)."""
    rng = np.random.default_rng(seed)
    led = Ledger(N, 2, K, names=list(NAMES))
    labels = torch.arange(N) % K
    onehot = torch.nn.functional.one_hot(labels, K).double()
    audio = torch.from_numpy(rng.normal(size=(N, K))) + 3 * onehot
    feat = torch.from_numpy(rng.normal(size=(N, K))) + 0.5 * onehot
    fused = audio + feat
    subsets = torch.stack([torch.zeros(N, K), audio, feat, fused], 1)
    right = subsets.argmax(-1) == labels[:, None]
    values = right.double() * torch.tensor([0.0, 1.0, 1.0, 2.0])
    values[:, 0] = 0
    led.observe(torch.arange(N), labels, [audio, feat], fused, values=values)
    return led


def make_method(name: str, ledger: Ledger) -> Any:
    return {
        "none": lambda: None,
        "dus": lambda: DUS(ledger, batch_size=6, epochs=3),
        "dus-rl": lambda: DUS(ledger, batch_size=6, epochs=3, policy="rl", seed=1),
        "bss": lambda: BSS(ledger, lambda0=0.5, t_grow=4, seed=2),
        "bss-learned": lambda: BSS(ledger, scheduler="learned", seed=3),
        "smv": lambda: SMV(ledger, warmup=0, seed=4),
        "smv-modality": lambda: SMV(ledger, level="modality", warmup=0, seed=5, fraction=1.0),
        # groups of 2 (audio) and 20 (feat) ids: a short group and a long one
        "remix": lambda: Remix(ledger, warmup=0, source="ledger", seed=6),
    }[name]()


def make_loader(
    root: Path,
    name: str,
    *,
    mode: str = "streamed",
    workers: int = 0,
    epoch: int = 0,
    specs: dict[str, Any] | None = None,
    **kwargs: Any,
) -> Any:
    """A loader over the tiny dataset with method `name`, started at `epoch` after the same
    history (set_epoch 0..epoch, no training in between)."""
    method = make_method(name, fed_ledger())
    loader = balanced_loader(
        root,
        method,
        modalities=specs or modalities(),
        batch_size=None if name.startswith("dus") else 4,  # DUS sets its own rows
        mode=mode,
        num_workers=workers,
        seed=7,
        shuffle_buffer=3,
        **kwargs,
    )
    for e in range(epoch + 1):
        loader.set_epoch(e)
    return loader


def items(batch: Any) -> list[tuple[int, int]]:
    """(id, mask) per row."""
    return list(zip(batch.ids.tolist(), batch.mask.tolist()))
