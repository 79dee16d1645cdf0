"""The training data: the balancing method of `--method` and the loader that applies it.

Place in the data flow: shards -> `balanced_loader` (streamed or indexed reader) or `wrap`
around an ordinary DataLoader (`--loader wrap`) -> MultimodalBatch, with the Ledger the method
reads and, for BSS, the scoring pass it ranks from.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from mmsample.batch import MultimodalBatch
from mmsample.ledger import Ledger
from mmsample.loader import BalancedLoader, balanced_loader, wrap
from mmsample.methods import BSS, DUS, SMV
from mmsample.position_scoring import PositionScorer
from mmsample.scoring import Scorer
from mmsample.shards.format import Manifest
from mmsample.shards.indexed import IndexedDataset
from mmsample.shards.streamed import StreamedDataset

from ..models import LateFusion
from .device import autocast

UNPLANNED = ("plain", "ogmge")
"""`--method` values with no data-side method (the loader serves the plain plan, no Ledger)."""


def build_method(args: argparse.Namespace, ledger: Ledger) -> Any:
    """The data-side method of `--method` on `ledger` (None for plain and OGM-GE alone)."""
    name = args.method
    t_grow = args.bss_t_grow if args.bss_t_grow is not None else max(1, args.epochs - 1)
    if name in ("dus", "dus-rl", "ogmge+dus"):
        policy = "rl" if name == "dus-rl" else "heuristic"
        return DUS(ledger, args.batch_size, args.epochs, args.dus_beta, policy, args.seed)
    if name in ("bss", "bss-learned"):
        scheduler = "learned" if name == "bss-learned" else "heuristic"
        return BSS(
            ledger,
            scheduler,
            lambda0=args.bss_lambda0,
            t_grow=t_grow,
            interval=args.bss_interval,
            seed=args.seed,
        )
    if name in ("smv", "smv-modality"):
        level = "modality" if name == "smv-modality" else "sample"
        return SMV(ledger, level, args.smv_warmup, seed=args.seed, fraction=args.smv_fraction)
    return None


class TupleView(Dataset[tuple[Any, ...]]):
    """An ordinary map-style dataset (what a user already has): index k -> (one tensor per
    modality..., label) of the k-th sample of `reader`."""

    def __init__(self, reader: IndexedDataset, names: Sequence[str]) -> None:
        self.reader, self.names = reader, tuple(names)
        self.ids = np.unique(np.asarray(reader.table.ids, dtype=np.int64))

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, k: int) -> tuple[Any, ...]:
        sample = self.reader.get(int(self.ids[k]))
        return (*(sample[n] for n in self.names), int(sample["label"]))


class ModelForward:
    """`forward(batch)` of the scoring pass for `wrap`: the model's subset and unimodal logits
    on `device`, under autocast there."""

    def __init__(self, model: LateFusion, device: torch.device) -> None:
        self.model, self.device = model, device

    def __call__(self, batch: MultimodalBatch) -> tuple[torch.Tensor, list[torch.Tensor]]:
        with autocast(self.device):
            logits, uni = self.model(batch)
        return logits.float(), [u.float() for u in uni]


def build_loader(
    args: argparse.Namespace,
    modalities: dict[str, Any],
    num_classes: int,
    device: torch.device,
    model: LateFusion,
) -> BalancedLoader:
    """`balanced_loader` over the train split's shards (streamed or indexed), or `wrap` around
    an ordinary DataLoader (`--loader wrap`). The Ledger is sized by the id space (wrap: the
    dataset's length); BSS gets its scoring pass through `scorer=`."""
    names = list(modalities)
    split = args.train_split or None
    log = args.out / "stats.jsonl"
    indexed = IndexedDataset(args.data, modalities, split=split, seed=args.seed)
    if args.loader == "wrap":
        view = TupleView(indexed, names)
        plain = DataLoader(
            view,
            batch_size=args.batch_size,
            shuffle=True,
            num_workers=args.workers,
            pin_memory=device.type == "cuda",
        )
        fields: dict[str, int | str] = {n: j for j, n in enumerate(names)}
        fields["label"] = len(names)
        method = None
        if args.method not in UNPLANNED:
            ledger = Ledger(len(view), len(names), num_classes, names=names)
            method = build_method(args, ledger)
        by_position = (
            PositionScorer(
                ModelForward(model, device),
                view,
                ledger,
                fields=fields,
                output="multimodal",
                device=device,
            )
            if isinstance(method, BSS)
            else None
        )
        return wrap(
            plain,
            method,
            fields=fields,
            seed=args.seed,
            log=log,
            scorer=by_position,
            output="multimodal",
        )
    method = None
    if args.method not in UNPLANNED:
        ledger = Ledger(Manifest.load(args.data).id_space, len(names), num_classes, names=names)
        method = build_method(args, ledger)
    scorer = None
    if isinstance(method, BSS):  # BSS ranks every id once before training: a scoring pass
        scorer = Scorer(model, indexed, ledger, device=device, progress=not args.no_progress)
    source: StreamedDataset | IndexedDataset = indexed
    if args.mode == "streamed":
        source = StreamedDataset(args.data, modalities, shuffle=1000, seed=args.seed, split=split)
    return balanced_loader(
        source,
        method,
        batch_size=args.batch_size,
        num_workers=args.workers,
        pin_memory=device.type == "cuda",
        log=log,
        scorer=scorer,
    )
